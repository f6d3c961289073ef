//! OCP content for the lab, beside (never inside) what [`seed`](super::seed) pushes: release
//! payloads built as `oc adm release new` builds them, and file-based operator catalogs.
//!
//! * Components in `openshift-release-dev/ocp-v4.0-art-dev`, pushed by digest only.
//! * Releases `ocp-release:4.20.{1,2,3}-x86_64`: the cluster-version-operator image's layers
//!   plus one appended gzip layer holding `release-manifests/` (directory entry first),
//!   `image-references` (an ImageStream naming every component by digest), `release-metadata`
//!   and a few `0000_*` manifests; config labels exactly `io.openshift.release` and
//!   `io.openshift.release.base-image-digest`. 4.20.1 carries one more layer on top (a later
//!   manifest only), so a reader must fall back from the last layer to the one below; 4.20.3
//!   ships a newer console. 4.20.3 also has a cosign `sha256-<hex>.sig` tag.
//! * `redhat/redhat-operator-index:v4.20` (a Docker manifest list, amd64 and arm64): label
//!   `operators.operatorframework.io.index.configs.v1=/configs`; layer 1 the opm binary and an
//!   IIB SQLite file, layer 2 the catalog (aws-load-balancer-operator and
//!   node-observability-operator as JSON streams, jaeger-product as YAML documents, a
//!   deprecated-operator, an `.indexignore` and a README it names), layer 3 a whiteout
//!   deleting deprecated-operator. Channels use replaces, skips and skipRange.
//! * `redhat/certified-operator-index:v4.20` (OCI, its catalog layer zstd): one package, two
//!   bundles (for `full: true`).
//!
//! node-observability-operator.v0.3.0 requires jaeger-product `>=1.47.0-1 <1.48.0`
//! (`olm.package.required`). Every bundle has its own bundle image and operator image; aws bundles share one
//! kube-rbac-proxy image (relatedImages repeat across bundles, and the bundle image is listed
//! among its own relatedImages, as in real catalogs).

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::json;

use super::seed::{
    name_seed, random_bytes, tar_layer, Blob, Compression, Format, ImageSpec, Pusher, SeededImage,
    Target, COMPONENT_REPOSITORY,
};
use super::Lab;

pub const RELEASE_REPOSITORY: &str = "openshift-release-dev/ocp-release";
pub const CATALOG_REPOSITORY: &str = "redhat/redhat-operator-index";
pub const CERTIFIED_REPOSITORY: &str = "redhat/certified-operator-index";
pub const RELEASES: [&str; 3] = ["4.20.1", "4.20.2", "4.20.3"];

/// What [`seed_ocp`] pushed, keyed the way tests ask.
#[derive(Debug, Clone)]
pub struct OcpContent {
    /// Version → the release image (tag reference `…:4.20.N-x86_64`).
    pub releases: BTreeMap<String, SeededImage>,
    /// Version → its components as `(tag name, quay.io/…@sha256:…)`.
    pub components: BTreeMap<String, Vec<(String, String)>>,
    /// `ocp-release:4.20.3-multi`: an OCI index (amd64, arm64) with 4.20.3's components.
    pub multi: SeededImage,
    /// The cosign signature image of the newest release (`…:sha256-<hex>.sig`).
    pub cosign: SeededImage,
    pub catalog: SeededImage,
    pub certified: SeededImage,
    /// Bundle name → (package, [bundle image, then each distinct related image], by digest).
    pub bundles: BTreeMap<String, (String, Vec<String>)>,
    /// Every image pushed, for checks on the cache.
    pub images: Vec<SeededImage>,
    /// Bundle name → its `relatedImages` as listed (for rebuilding the index).
    related: BTreeMap<String, Vec<(String, String)>>,
    /// Bundle name → its bundle image.
    bundle_images: BTreeMap<String, String>,
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn small(name: &str, path: &str, len: usize) -> Blob {
    tar_layer(
        &[(path, random_bytes(name_seed(name), len))],
        Compression::Gzip,
    )
}

fn by_digest(image: &SeededImage, host: &str) -> String {
    format!("{host}/{}@{}", image.repository, image.digest)
}

/// A bundle's entry in one channel: (channel, replaces, skips, skipRange).
type ChannelEntry = (
    &'static str,
    Option<&'static str>,
    Vec<&'static str>,
    Option<&'static str>,
);

/// One bundle of a package in the lab catalog.
struct BundleDef {
    package: &'static str,
    version: &'static str,
    channels: Vec<ChannelEntry>,
}

fn bundle_name(package: &str, version: &str) -> String {
    format!("{package}.v{version}")
}

fn bundle_defs() -> Vec<BundleDef> {
    let b = |package, version, channels| BundleDef {
        package,
        version,
        channels,
    };
    let aws = "aws-load-balancer-operator";
    let jaeger = "jaeger-product";
    let nobs = "node-observability-operator";
    vec![
        b(aws, "0.1.0", vec![("stable-v0", None, vec![], None)]),
        b(
            aws,
            "0.2.0",
            vec![(
                "stable-v0",
                Some("aws-load-balancer-operator.v0.1.0"),
                vec![],
                None,
            )],
        ),
        b(
            aws,
            "1.0.0",
            vec![("stable-v1", None, vec![], Some("<1.0.0"))],
        ),
        b(
            aws,
            "1.1.0",
            vec![(
                "stable-v1",
                Some("aws-load-balancer-operator.v1.0.0"),
                vec![],
                Some(">=1.0.0 <1.1.0"),
            )],
        ),
        b(
            aws,
            "1.1.1",
            vec![(
                "stable-v1",
                Some("aws-load-balancer-operator.v1.1.0"),
                vec![],
                None,
            )],
        ),
        b(
            aws,
            "1.2.0",
            vec![(
                "stable-v1",
                Some("aws-load-balancer-operator.v1.1.0"),
                vec!["aws-load-balancer-operator.v1.1.1"],
                Some(">=1.0.0 <1.2.0"),
            )],
        ),
        b(jaeger, "1.47.0-1", vec![("stable", None, vec![], None)]),
        b(
            jaeger,
            "1.47.1-5",
            vec![("stable", Some("jaeger-product.v1.47.0-1"), vec![], None)],
        ),
        b(
            jaeger,
            "1.51.0-1",
            vec![(
                "stable",
                Some("jaeger-product.v1.47.1-5"),
                vec![],
                Some(">=1.47.0-1 <1.51.0-1"),
            )],
        ),
        b(nobs, "0.1.0", vec![("alpha", None, vec![], None)]),
        b(
            nobs,
            "0.2.0",
            vec![(
                "alpha",
                Some("node-observability-operator.v0.1.0"),
                vec![],
                None,
            )],
        ),
        b(
            nobs,
            "0.3.0",
            vec![(
                "alpha",
                Some("node-observability-operator.v0.2.0"),
                vec![],
                None,
            )],
        ),
        b(
            "deprecated-operator",
            "1.0.0",
            vec![("stable", None, vec![], None)],
        ),
        b(
            "certified-thing",
            "2.0.0",
            vec![("stable", None, vec![], None)],
        ),
        b(
            "certified-thing",
            "2.1.0",
            vec![("stable", Some("certified-thing.v2.0.0"), vec![], None)],
        ),
    ]
}

const DEFAULT_CHANNELS: [(&str, &str); 5] = [
    ("aws-load-balancer-operator", "stable-v1"),
    ("jaeger-product", "stable"),
    ("node-observability-operator", "alpha"),
    ("deprecated-operator", "stable"),
    ("certified-thing", "stable"),
];

/// The FBC documents of one package, in `opm render` order: package, channels, bundles.
fn package_docs(
    package: &str,
    defs: &[BundleDef],
    related: &BTreeMap<String, Vec<(String, String)>>,
    images: &BTreeMap<String, String>,
) -> Vec<serde_json::Value> {
    let default = DEFAULT_CHANNELS
        .iter()
        .find(|(p, _)| *p == package)
        .map(|(_, c)| *c)
        .unwrap_or("stable");
    let mut docs =
        vec![json!({"schema": "olm.package", "name": package, "defaultChannel": default})];
    let mut channels: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    for d in defs.iter().filter(|d| d.package == package) {
        for (ch, replaces, skips, range) in &d.channels {
            let mut e = json!({"name": bundle_name(package, d.version)});
            if let Some(r) = replaces {
                e["replaces"] = json!(r);
            }
            if !skips.is_empty() {
                e["skips"] = json!(skips);
            }
            if let Some(r) = range {
                e["skipRange"] = json!(r);
            }
            channels.entry(ch).or_default().push(e);
        }
    }
    for (ch, entries) in channels {
        docs.push(
            json!({"schema": "olm.channel", "name": ch, "package": package, "entries": entries}),
        );
    }
    for d in defs.iter().filter(|d| d.package == package) {
        let name = bundle_name(package, d.version);
        let rel: Vec<serde_json::Value> = related[&name]
            .iter()
            .map(|(n, i)| json!({"name": n, "image": i}))
            .collect();
        let mut bundle = json!({
            "schema": "olm.bundle",
            "name": name,
            "package": package,
            "image": images[&name],
            "properties": [
                {"type": "olm.gvk", "value": {"group": "lab.prewarm.io", "kind": "Thing", "version": "v1"}},
                {"type": "olm.package", "value": {"packageName": package, "version": d.version}},
                {"type": "olm.bundle.object", "value": {"data": base64_of(&random_bytes(name_seed(&name), 512))}}
            ],
            "relatedImages": rel,
        });
        if name == "node-observability-operator.v0.3.0" {
            // A dependency, as OLM declares it: kept bundles pull in what they require.
            bundle["properties"]
                .as_array_mut()
                .expect("properties")
                .push(json!({
                    "type": "olm.package.required",
                    "value": {"packageName": "jaeger-product", "versionRange": ">=1.47.0-1 <1.48.0"}
                }));
        }
        docs.push(bundle);
    }
    docs
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn json_stream(docs: &[serde_json::Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in docs {
        out.extend(serde_json::to_vec_pretty(d).expect("json"));
        out.push(b'\n');
    }
    out
}

fn yaml_stream(docs: &[serde_json::Value]) -> Vec<u8> {
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(d).expect("yaml"));
    }
    out.into_bytes()
}

/// Push the release and catalog content to the lab's two upstreams.
pub async fn seed_ocp(quay: &Target, redhat: &Target) -> Result<OcpContent> {
    let quay_pusher = Pusher::new(quay).await?;
    let redhat_pusher = Pusher::new(redhat).await?;
    let mut images = Vec::new();
    let q = &quay.host;
    let r = &redhat.host;

    // Components: a shared base, one own layer each. The CVO's layers are the release base.
    let base = base_layer();
    let cvo_bin = small("ocp:cvo", "usr/bin/cluster-version-operator", 16 << 10);
    let mut component_refs: BTreeMap<String, String> = BTreeMap::new();
    let mut cvo_digest = String::new();
    let names = [
        "cli",
        "cluster-version-operator",
        "etcd",
        "hyperkube",
        "machine-config-operator",
        "console",
        "console@4.20.3",
    ];
    for (i, name) in names.iter().enumerate() {
        let layers = if *name == "cluster-version-operator" {
            vec![base.clone(), cvo_bin.clone()]
        } else {
            vec![
                base.clone(),
                small(
                    &format!("ocp:{name}"),
                    &format!("usr/bin/{}", name.replace('@', "-")),
                    8 << 10,
                ),
            ]
        };
        let format = if i % 2 == 0 {
            Format::Docker
        } else {
            Format::Oci
        };
        let spec = ImageSpec::linux(
            format,
            "amd64",
            labels(&[("io.openshift.build.component", name)]),
            layers,
        );
        let img = quay_pusher
            .push_image(COMPONENT_REPOSITORY, None, &spec)
            .await?;
        if *name == "cluster-version-operator" {
            cvo_digest = img.digest.clone();
        }
        component_refs.insert(name.to_string(), by_digest(&img, q));
        images.push(img);
    }

    let mut releases = BTreeMap::new();
    let mut components = BTreeMap::new();
    let mut multi_release = None;
    for (n, version) in RELEASES.iter().enumerate() {
        let tags: Vec<(String, String)> = names
            .iter()
            .filter(|c| !c.starts_with("console"))
            .map(|c| (c.to_string(), component_refs[*c].clone()))
            .chain(std::iter::once((
                "console".to_string(),
                component_refs[if *version == "4.20.3" {
                    "console@4.20.3"
                } else {
                    "console"
                }]
                .clone(),
            )))
            .collect();
        let previous: Vec<&str> = RELEASES[..n].to_vec();
        let (stream, metadata, release_layer) = release_manifests(version, &previous, n, &tags)?;
        let mut layers = vec![base.clone(), cvo_bin.clone(), release_layer];
        if *version == "4.20.1" {
            // Not what `oc adm release new` builds: forces the fall back to lower layers.
            layers.push(tar_layer(
                &[
                    ("release-manifests/", Vec::new()),
                    (
                        "release-manifests/0000_99_late_configmap.yaml",
                        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: late\n".to_vec(),
                    ),
                ],
                Compression::Gzip,
            ));
        }
        let spec = ImageSpec::linux(
            Format::Docker,
            "amd64",
            labels(&[
                ("io.openshift.release", version),
                ("io.openshift.release.base-image-digest", &cvo_digest),
            ]),
            layers,
        );
        let tag = format!("{version}-x86_64");
        let img = quay_pusher
            .push_image(RELEASE_REPOSITORY, Some(&tag), &spec)
            .await?;
        if *version == "4.20.3" {
            // The -multi payload: a manifest list whose every child carries the same
            // release-manifests (metadata marked multi) on its own architecture's CVO.
            let mut multi_meta = metadata.clone();
            multi_meta["metadata"]["release.openshift.io/architecture"] = json!("multi");
            let multi_layer = tar_layer(
                &[
                    ("release-manifests/", Vec::new()),
                    (
                        "release-manifests/image-references",
                        serde_json::to_vec_pretty(&stream)?,
                    ),
                    (
                        "release-manifests/release-metadata",
                        serde_json::to_vec_pretty(&multi_meta)?,
                    ),
                ],
                Compression::Gzip,
            );
            let children: Vec<ImageSpec> = ["amd64", "arm64"]
                .iter()
                .map(|arch| {
                    ImageSpec::linux(
                        Format::Oci,
                        arch,
                        labels(&[
                            ("io.openshift.release", version),
                            ("io.openshift.release.base-image-digest", &cvo_digest),
                        ]),
                        vec![
                            base.clone(),
                            small(
                                &format!("ocp:cvo:{arch}"),
                                "usr/bin/cluster-version-operator",
                                16 << 10,
                            ),
                            multi_layer.clone(),
                        ],
                    )
                })
                .collect();
            let multi = quay_pusher
                .push_index(
                    RELEASE_REPOSITORY,
                    Some("4.20.3-multi"),
                    Format::Oci,
                    &children,
                )
                .await?;
            images.push(multi.clone());
            multi_release = Some(multi);
        }
        components.insert(version.to_string(), tags);
        releases.insert(version.to_string(), img.clone());
        images.push(img);
    }

    // A cosign signature of 4.20.3, as `cosign sign` stores it.
    let newest = &releases["4.20.3"];
    let payload = serde_json::to_vec(&json!({
        "critical": {"identity": {"docker-reference": format!("{q}/{RELEASE_REPOSITORY}")},
                     "image": {"docker-manifest-digest": newest.digest},
                     "type": "cosign container image signature"},
        "optional": null
    }))?;
    let sig_layer = Blob::from_bytes(
        "application/vnd.dev.cosign.simplesigning.v1+json",
        payload,
        None,
    );
    let sig_layer = Blob {
        diff_id: Some(sig_layer.digest.clone()),
        ..sig_layer
    };
    let sig_tag = format!("sha256-{}.sig", newest.digest.trim_start_matches("sha256:"));
    let cosign = quay_pusher
        .push_image(
            RELEASE_REPOSITORY,
            Some(&sig_tag),
            &ImageSpec::linux(Format::Oci, "amd64", BTreeMap::new(), vec![sig_layer]),
        )
        .await?;
    images.push(cosign.clone());

    // Operators: bundle and operator images first (catalogs name them by digest).
    let defs = bundle_defs();
    let rbac = redhat_pusher
        .push_image(
            "openshift4/ose-kube-rbac-proxy-rhel9",
            None,
            &ImageSpec::linux(
                Format::Oci,
                "amd64",
                labels(&[("name", "ose-kube-rbac-proxy")]),
                vec![
                    base.clone(),
                    small("op:rbac", "usr/bin/kube-rbac-proxy", 4 << 10),
                ],
            ),
        )
        .await?;
    let rbac_ref = by_digest(&rbac, r);
    images.push(rbac);
    let mut bundle_images = BTreeMap::new();
    let mut related: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut bundles = BTreeMap::new();
    for d in &defs {
        let name = bundle_name(d.package, d.version);
        let (bundle, operator) = push_bundle(&redhat_pusher, d.package, &name, &base).await?;
        let (b, o) = (by_digest(&bundle, r), by_digest(&operator, r));
        let mut rel = vec![
            (String::new(), b.clone()),
            ("manager".to_string(), o.clone()),
        ];
        if d.package == "aws-load-balancer-operator" {
            rel.push(("kube-rbac-proxy".into(), rbac_ref.clone()));
            // Real catalogs repeat images: the same operator image under a second name.
            rel.push(("controller".into(), o.clone()));
        }
        let mut distinct: Vec<String> = Vec::new();
        for (_, i) in &rel {
            if !distinct.contains(i) {
                distinct.push(i.clone());
            }
        }
        bundles.insert(name.clone(), (d.package.to_string(), distinct));
        bundle_images.insert(name.clone(), b);
        related.insert(name, rel);
        images.push(bundle);
        images.push(operator);
    }

    let docs = |p: &str| package_docs(p, &defs, &related, &bundle_images);
    let opm = opm_layer();
    let index_labels = index_labels();
    let children = redhat_index_children(&defs, &related, &bundle_images);
    let catalog = redhat_pusher
        .push_index(CATALOG_REPOSITORY, Some("v4.20"), Format::Docker, &children)
        .await?;
    images.push(catalog.clone());
    let certified = redhat_pusher
        .push_image(
            CERTIFIED_REPOSITORY,
            Some("v4.20"),
            &ImageSpec::linux(
                Format::Oci,
                "amd64",
                index_labels,
                vec![
                    opm.clone(),
                    tar_layer(
                        &[
                            ("configs/", Vec::new()),
                            ("configs/certified-thing/", Vec::new()),
                            (
                                "configs/certified-thing/index.json",
                                json_stream(&docs("certified-thing")),
                            ),
                        ],
                        // OCI allows zstd: the catalog reader must recognise it.
                        Compression::Zstd,
                    ),
                ],
            ),
        )
        .await?;
    images.push(certified.clone());
    Ok(OcpContent {
        multi: multi_release.expect("4.20.3 is seeded"),
        releases,
        components,
        cosign,
        catalog,
        certified,
        bundles,
        images,
        related,
        bundle_images,
    })
}

/// A bundle's bundle image and operator image (`<package>/<package>-bundle`,
/// `<package>/<package>-rhel9-operator`), pushed by digest.
async fn push_bundle(
    pusher: &Pusher,
    package: &str,
    name: &str,
    base: &Blob,
) -> Result<(SeededImage, SeededImage)> {
    let bundle = pusher
        .push_image(
            &format!("{package}/{package}-bundle"),
            None,
            &ImageSpec::linux(
                Format::Oci,
                "amd64",
                labels(&[("operators.operatorframework.io.bundle.package.v1", package)]),
                vec![small(
                    &format!("bundle:{name}"),
                    "manifests/csv.yaml",
                    2 << 10,
                )],
            ),
        )
        .await?;
    let operator = pusher
        .push_image(
            &format!("{package}/{package}-rhel9-operator"),
            None,
            &ImageSpec::linux(
                Format::Docker,
                "amd64",
                labels(&[("name", package)]),
                vec![
                    base.clone(),
                    small(&format!("operator:{name}"), "usr/bin/manager", 4 << 10),
                ],
            ),
        )
        .await?;
    Ok((bundle, operator))
}

/// A release's `image-references` and `release-metadata`, and the layer `oc adm release new`
/// appends with them (plus a few `0000_*` manifests).
fn release_manifests(
    version: &str,
    previous: &[&str],
    n: usize,
    tags: &[(String, String)],
) -> Result<(serde_json::Value, serde_json::Value, Blob)> {
    let stream = json!({
        "kind": "ImageStream",
        "apiVersion": "image.openshift.io/v1",
        "metadata": {"name": version, "creationTimestamp": "2025-10-14T12:00:00Z"},
        "spec": {
            "lookupPolicy": {"local": false},
            "tags": tags.iter().map(|(name, pullspec)| json!({
                "name": name,
                "annotations": {"io.openshift.build.source-location": format!("https://github.com/openshift/{name}")},
                "from": {"kind": "DockerImage", "name": pullspec},
                "generation": null,
                "importPolicy": {},
                "referencePolicy": {"type": ""}
            })).collect::<Vec<_>>()
        },
        "status": {"dockerImageRepository": ""}
    });
    let metadata = json!({
        "kind": "cincinnati-metadata-v0",
        "version": version,
        "previous": previous,
        "metadata": {"url": format!("https://access.redhat.com/errata/RHSA-2025:{}", 1000 + n)}
    });
    let release_layer = tar_layer(
        &[
            ("release-manifests/", Vec::new()),
            ("release-manifests/image-references", serde_json::to_vec_pretty(&stream)?),
            ("release-manifests/release-metadata", serde_json::to_vec_pretty(&metadata)?),
            (
                "release-manifests/0000_00_cluster-version-operator_00_namespace.yaml",
                b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: openshift-cluster-version\n".to_vec(),
            ),
            (
                "release-manifests/0000_50_console-operator_07_deployment.yaml",
                b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: console-operator\n  namespace: openshift-console-operator\n".to_vec(),
            ),
            (
                "release-manifests/0000_90_etcd_servicemonitor.yaml",
                b"apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata:\n  name: etcd\n".to_vec(),
            ),
        ],
        Compression::Gzip,
    );
    Ok((stream, metadata, release_layer))
}

/// The layer every lab component shares.
fn base_layer() -> Blob {
    small("ocp:base", "usr/lib64/libocp-base.so", 48 << 10)
}

/// The opm binary and IIB database layer every lab index starts with.
fn opm_layer() -> Blob {
    tar_layer(
        &[
            ("usr/", Vec::new()),
            ("usr/bin/", Vec::new()),
            (
                "usr/bin/opm",
                random_bytes(name_seed("catalog:opm"), 32 << 10),
            ),
            ("var/", Vec::new()),
            ("var/lib/", Vec::new()),
            ("var/lib/iib/", Vec::new()),
            (
                "var/lib/iib/index.db",
                random_bytes(name_seed("catalog:iib"), 8 << 10),
            ),
        ],
        Compression::Gzip,
    )
}

fn index_labels() -> BTreeMap<String, String> {
    labels(&[
        (
            "operators.operatorframework.io.index.configs.v1",
            "/configs",
        ),
        ("io.openshift.build.component", "redhat-operator-index"),
    ])
}

/// The amd64 and arm64 images of `redhat-operator-index` over `defs` (see the module docs).
fn redhat_index_children(
    defs: &[BundleDef],
    related: &BTreeMap<String, Vec<(String, String)>>,
    bundle_images: &BTreeMap<String, String>,
) -> Vec<ImageSpec> {
    let docs = |p: &str| package_docs(p, defs, related, bundle_images);
    let opm = opm_layer();
    let configs = tar_layer(
        &[
            ("configs/", Vec::new()),
            (
                "configs/.indexignore",
                b"# not catalog content\n*.md\n".to_vec(),
            ),
            (
                "configs/README.md",
                b"This is not FBC and would not parse.\n{\n".to_vec(),
            ),
            ("configs/aws-load-balancer-operator/", Vec::new()),
            (
                "configs/aws-load-balancer-operator/catalog.json",
                json_stream(&docs("aws-load-balancer-operator")),
            ),
            ("configs/deprecated-operator/", Vec::new()),
            (
                "configs/deprecated-operator/catalog.json",
                json_stream(&docs("deprecated-operator")),
            ),
            ("configs/jaeger-product/", Vec::new()),
            (
                "configs/jaeger-product/catalog.yaml",
                yaml_stream(&docs("jaeger-product")),
            ),
            ("configs/node-observability-operator/", Vec::new()),
            (
                "configs/node-observability-operator/catalog.json",
                json_stream(&docs("node-observability-operator")),
            ),
        ],
        Compression::Gzip,
    );
    let whiteout = tar_layer(
        &[
            ("configs/", Vec::new()),
            ("configs/.wh.deprecated-operator", Vec::new()),
        ],
        Compression::Gzip,
    );
    let index_labels = index_labels();
    ["amd64", "arm64"]
        .iter()
        .map(|arch| {
            let mut spec = ImageSpec::linux(
                Format::Docker,
                arch,
                index_labels.clone(),
                vec![opm.clone(), configs.clone(), whiteout.clone()],
            );
            if *arch == "arm64" {
                spec.layers[0] = small("catalog:opm:arm64", "usr/bin/opm", 32 << 10);
            }
            spec
        })
        .collect()
}

impl Lab {
    /// Push the OCP release and catalog content (see the module docs).
    pub async fn seed_ocp(&self) -> Result<OcpContent> {
        seed_ocp(&self.quay_target(), &self.redhat_target()?).await
    }
}

/// A small graph-data tarball shaped as the update service's (`channels/`, `blocked-edges/`,
/// `raw/metadata.json`), gzip: the lab's stand-in for the public graph-data.
pub fn graph_data_tarball() -> Vec<u8> {
    let layer = tar_layer(
        &[
            ("channels/", Vec::new()),
            (
                "channels/stable-4.20.yaml",
                b"name: stable-4.20\nversions:\n- 4.20.1\n- 4.20.2\n- 4.20.3\n".to_vec(),
            ),
            ("blocked-edges/", Vec::new()),
            (
                "blocked-edges/4.20.2-LabRisk.yaml",
                b"to: 4.20.2\nfrom: 4\\.20\\.1\nurl: https://issues.redhat.com/browse/OCPBUGS-0\nname: LabRisk\nmessage: Lab risk.\nmatchingRules:\n- type: Always\n".to_vec(),
            ),
            ("raw/", Vec::new()),
            ("raw/metadata.json", b"{}\n".to_vec()),
        ],
        Compression::Gzip,
    );
    match layer.data {
        super::seed::BlobData::Memory(b) => b.to_vec(),
        super::seed::BlobData::File(_) => unreachable!("small layers are built in memory"),
    }
}

impl OcpContent {
    /// An update graph over the seeded releases (payloads by digest), as the update service
    /// serves it; `edges` are pairs of versions.
    pub fn graph_json(
        &self,
        quay_host: &str,
        edges: &[(&str, &str)],
        conditional: &[(&str, &str)],
    ) -> String {
        let versions: Vec<&String> = self.releases.keys().collect();
        let nodes: Vec<serde_json::Value> = versions
            .iter()
            .map(|v| {
                json!({
                    "version": v,
                    "payload": format!("{quay_host}/{RELEASE_REPOSITORY}@{}", self.releases[*v].digest),
                    "metadata": {"io.openshift.upgrades.graph.release.channels": "stable-4.20,eus-4.20"}
                })
            })
            .collect();
        let idx = |v: &str| {
            versions
                .iter()
                .position(|x| x.as_str() == v)
                .expect("seeded version")
        };
        let edges: Vec<[usize; 2]> = edges.iter().map(|(a, b)| [idx(a), idx(b)]).collect();
        let cond: Vec<serde_json::Value> = conditional
            .iter()
            .map(|(a, b)| {
                json!({"edges": [{"from": a, "to": b}], "risks": [{"url": "https://issues.redhat.com/browse/OCPBUGS-0", "name": "LabRisk", "message": "Lab risk.", "matchingRules": [{"type": "Always"}]}]})
            })
            .collect();
        json!({"version": 1, "nodes": nodes, "edges": edges, "conditionalEdges": cond}).to_string()
    }
}

impl OcpContent {
    /// Re-push `redhat-operator-index:v4.20` under the same tag with one more bundle:
    /// node-observability-operator v0.4.0, replacing v0.3.0 as the head of `alpha`, with its
    /// own bundle and operator images and a related image no bundle had (`agent`). Returns
    /// the new index and the new bundle's images (bundle, manager, agent), by digest.
    pub async fn push_catalog_update(
        &mut self,
        redhat: &Target,
    ) -> Result<(SeededImage, Vec<String>)> {
        let pusher = Pusher::new(redhat).await?;
        let r = &redhat.host;
        let package = "node-observability-operator";
        let name = bundle_name(package, "0.4.0");
        let (bundle, operator) = push_bundle(&pusher, package, &name, &base_layer()).await?;
        let agent = pusher
            .push_image(
                &format!("{package}/node-observability-agent-rhel9"),
                None,
                &ImageSpec::linux(
                    Format::Oci,
                    "amd64",
                    labels(&[("name", "node-observability-agent")]),
                    vec![
                        base_layer(),
                        small("operator:agent", "usr/bin/agent", 4 << 10),
                    ],
                ),
            )
            .await?;
        let refs = vec![
            by_digest(&bundle, r),
            by_digest(&operator, r),
            by_digest(&agent, r),
        ];
        let mut defs = bundle_defs();
        defs.push(BundleDef {
            package,
            version: "0.4.0",
            channels: vec![(
                "alpha",
                Some("node-observability-operator.v0.3.0"),
                vec![],
                None,
            )],
        });
        self.related.insert(
            name.clone(),
            vec![
                (String::new(), refs[0].clone()),
                ("manager".into(), refs[1].clone()),
                ("agent".into(), refs[2].clone()),
            ],
        );
        self.bundle_images.insert(name.clone(), refs[0].clone());
        self.bundles
            .insert(name, (package.to_string(), refs.clone()));
        let children = redhat_index_children(&defs, &self.related, &self.bundle_images);
        let index = pusher
            .push_index(CATALOG_REPOSITORY, Some("v4.20"), Format::Docker, &children)
            .await?;
        self.catalog = index.clone();
        self.images.extend([bundle, operator, agent, index.clone()]);
        Ok((index, refs))
    }

    /// Push release `version` (4.20.3's components with its own console) as
    /// `ocp-release:<version>-x86_64`; [`graph_json`](Self::graph_json) lists it from now on.
    pub async fn push_release(&mut self, quay: &Target, version: &str) -> Result<SeededImage> {
        let pusher = Pusher::new(quay).await?;
        let base = base_layer();
        let console = pusher
            .push_image(
                COMPONENT_REPOSITORY,
                None,
                &ImageSpec::linux(
                    Format::Oci,
                    "amd64",
                    labels(&[("io.openshift.build.component", "console")]),
                    vec![
                        base.clone(),
                        small(
                            &format!("ocp:console@{version}"),
                            "usr/bin/console",
                            8 << 10,
                        ),
                    ],
                ),
            )
            .await?;
        let tags: Vec<(String, String)> = self.components["4.20.3"]
            .iter()
            .map(|(n, r)| {
                let r = if n == "console" {
                    by_digest(&console, &quay.host)
                } else {
                    r.clone()
                };
                (n.clone(), r)
            })
            .collect();
        let cvo = tags
            .iter()
            .find(|(n, _)| n == "cluster-version-operator")
            .and_then(|(_, r)| r.split_once('@'))
            .map(|(_, d)| d.to_string())
            .expect("4.20.3 names its CVO");
        let previous: Vec<&str> = self.releases.keys().map(String::as_str).collect();
        let n = previous.len();
        let (_, _, layer) = release_manifests(version, &previous, n, &tags)?;
        let cvo_bin = small("ocp:cvo", "usr/bin/cluster-version-operator", 16 << 10);
        let spec = ImageSpec::linux(
            Format::Docker,
            "amd64",
            labels(&[
                ("io.openshift.release", version),
                ("io.openshift.release.base-image-digest", &cvo),
            ]),
            vec![base, cvo_bin, layer],
        );
        let img = pusher
            .push_image(
                RELEASE_REPOSITORY,
                Some(&format!("{version}-x86_64")),
                &spec,
            )
            .await?;
        self.components.insert(version.to_string(), tags);
        self.releases.insert(version.to_string(), img.clone());
        self.images.extend([console, img.clone()]);
        Ok(img)
    }
}

/// A catalog for selection rules, apart from the main lab catalog.
#[derive(Debug, Clone)]
pub struct SelectionCatalog {
    /// `redhat/selection-operator-index:v1`.
    pub index: SeededImage,
    /// Bundle name → its images (bundle image, operator image), by digest.
    pub bundles: BTreeMap<String, Vec<String>>,
}

pub const SELECTION_REPOSITORY: &str = "redhat/selection-operator-index";

/// Push `redhat/selection-operator-index:v1`: package `two-channel`, whose default channel
/// `stable` (1.0.0 → 1.1.0 → 1.2.0) ends elsewhere than `fast` (1.1.0 → 1.2.0 → 2.0.0), and
/// package `built`, whose channel holds `0.8.4-5`, `0.8.4-5+0.1687199951.p` (replacing it,
/// as Red Hat's rebuilt bundles do) and `0.8.5-1`.
pub async fn seed_selection_catalog(redhat: &Target) -> Result<SelectionCatalog> {
    let pusher = Pusher::new(redhat).await?;
    let b = |package, version, channels| BundleDef {
        package,
        version,
        channels,
    };
    let tc = "two-channel";
    let defs = vec![
        b(tc, "1.0.0", vec![("stable", None, vec![], None)]),
        b(
            tc,
            "1.1.0",
            vec![
                ("stable", Some("two-channel.v1.0.0"), vec![], None),
                ("fast", None, vec![], None),
            ],
        ),
        b(
            tc,
            "1.2.0",
            vec![
                ("stable", Some("two-channel.v1.1.0"), vec![], None),
                ("fast", Some("two-channel.v1.1.0"), vec![], None),
            ],
        ),
        b(
            tc,
            "2.0.0",
            vec![("fast", Some("two-channel.v1.2.0"), vec![], None)],
        ),
        b("built", "0.8.4-5", vec![("stable", None, vec![], None)]),
        b(
            "built",
            "0.8.4-5+0.1687199951.p",
            vec![("stable", Some("built.v0.8.4-5"), vec![], None)],
        ),
        b(
            "built",
            "0.8.5-1",
            vec![(
                "stable",
                Some("built.v0.8.4-5+0.1687199951.p"),
                vec![],
                None,
            )],
        ),
    ];
    let base = base_layer();
    let mut related = BTreeMap::new();
    let mut bundle_images = BTreeMap::new();
    let mut bundles = BTreeMap::new();
    for d in &defs {
        let name = bundle_name(d.package, d.version);
        let (bundle, operator) = push_bundle(&pusher, d.package, &name, &base).await?;
        let (bi, oi) = (
            by_digest(&bundle, &redhat.host),
            by_digest(&operator, &redhat.host),
        );
        related.insert(
            name.clone(),
            vec![
                (String::new(), bi.clone()),
                ("manager".to_string(), oi.clone()),
            ],
        );
        bundle_images.insert(name.clone(), bi.clone());
        bundles.insert(name, vec![bi, oi]);
    }
    let docs = |p: &str| json_stream(&package_docs(p, &defs, &related, &bundle_images));
    let configs = tar_layer(
        &[
            ("configs/", Vec::new()),
            ("configs/two-channel/", Vec::new()),
            ("configs/two-channel/catalog.json", docs(tc)),
            ("configs/built/", Vec::new()),
            ("configs/built/catalog.json", docs("built")),
        ],
        Compression::Gzip,
    );
    let index = pusher
        .push_image(
            SELECTION_REPOSITORY,
            Some("v1"),
            &ImageSpec::linux(
                Format::Oci,
                "amd64",
                index_labels(),
                vec![opm_layer(), configs],
            ),
        )
        .await?;
    Ok(SelectionCatalog { index, bundles })
}
