//! The cluster-resources directory written by `copy` and `warm`: every file parses back as
//! its openshift/api, OLM or OSUS type (unknown fields refused), names exactly the
//! repositories the run placed at the mapping's mirrors — cache orgs, `--to REGISTRY`,
//! `--to REGISTRY/PREFIX` — and a rerun writes the same bytes.

mod common;
mod shapes;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::{lab, Env};
use prewarm::reference::Reference;
use prewarm_lab::ocp_content::{OcpContent, CATALOG_REPOSITORY};
use serde::Deserialize;
use shapes::{IdmsSpec, ItmsSpec, Resource};

fn seed_ocp(env: &Env) -> OcpContent {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(env.lab.seed_ocp()).expect("seed OCP content")
}

/// The lab job's cache and registries, without its image list, plus `extra`.
fn job(env: &Env, name: &str, extra: &str) -> String {
    let base = std::fs::read_to_string(&env.job).unwrap();
    let mut text: String = base
        .lines()
        .filter(|l| !l.starts_with("image_lists:") && !l.starts_with("platforms:"))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!("platforms: [linux/amd64]\n{extra}"));
    let path = env.dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// operator-framework/api CatalogSourceSpec (the fields prewarm sets).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CatalogSourceSpec {
    source_type: String,
    image: String,
    display_name: String,
    publisher: String,
    update_strategy: UpdateStrategy,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UpdateStrategy {
    registry_poll: RegistryPoll,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryPoll {
    interval: String,
}

/// operator-framework/operator-controller ClusterCatalogSpec.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterCatalogSpec {
    source: ClusterCatalogSource,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterCatalogSource {
    #[serde(rename = "type")]
    kind: String,
    image: ImageSource,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageSource {
    #[serde(rename = "ref")]
    reference: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConfigMap {
    api_version: String,
    kind: String,
    metadata: serde_json::Value,
    binary_data: BTreeMap<String, String>,
}

fn files(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

/// Check one cluster-resources directory against the plan: `mirror_of` maps a source
/// repository path to where this mode places it.
fn check_dir(
    dir: &Path,
    plan: &serde_json::Value,
    mirror_of: &dyn Fn(&str) -> String,
    catalog_image: &str,
    release_digest: &str,
    graph: bool,
) -> BTreeMap<String, String> {
    let files = files(dir);
    let names: BTreeSet<&str> = files.keys().map(String::as_str).collect();
    let mut want_names: BTreeSet<String> = [
        "idms.yaml".to_string(),
        "itms.yaml".into(),
        "catalogsource-cs-redhat-operator-index-v4-20.yaml".into(),
        "clustercatalog-cc-redhat-operator-index-v4-20.yaml".into(),
        format!(
            "signature-sha256-{}.yaml",
            release_digest.trim_start_matches("sha256:")
        ),
    ]
    .into();
    if graph {
        want_names.insert("updateservice.yaml".into());
    }
    assert_eq!(
        names,
        want_names.iter().map(String::as_str).collect(),
        "{}",
        dir.display()
    );
    let sources: Vec<Reference> = plan["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["source"].as_str().unwrap().parse().unwrap())
        .collect();
    let repos: BTreeSet<String> = sources.iter().map(|r| r.repo_path()).collect();
    let tagged: BTreeSet<String> = sources
        .iter()
        .filter(|r| r.tag().is_some())
        .map(|r| r.repo_path())
        .collect();
    assert!(!tagged.is_empty() && tagged.len() < repos.len());

    let idms: Resource<IdmsSpec> = serde_yaml_ng::from_str(&files["idms.yaml"]).unwrap();
    assert_eq!(
        (idms.api_version.as_str(), idms.kind.as_str()),
        ("config.openshift.io/v1", "ImageDigestMirrorSet")
    );
    assert!(prewarm::cluster::names::is_label(&idms.metadata.name));
    let got: BTreeMap<String, Vec<String>> = idms
        .spec
        .image_digest_mirrors
        .into_iter()
        .map(|m| (m.source, m.mirrors))
        .collect();
    let want: BTreeMap<String, Vec<String>> = repos
        .iter()
        .map(|r| (r.clone(), vec![mirror_of(r)]))
        .collect();
    assert_eq!(got, want, "IDMS: every placed repository, nothing else");

    let itms: Resource<ItmsSpec> = serde_yaml_ng::from_str(&files["itms.yaml"]).unwrap();
    assert_eq!(itms.kind, "ImageTagMirrorSet");
    assert_eq!(itms.metadata.name, idms.metadata.name);
    let got: BTreeSet<String> = itms
        .spec
        .image_tag_mirrors
        .iter()
        .map(|m| m.source.clone())
        .collect();
    assert_eq!(got, tagged, "ITMS: the repositories of images named by tag");

    let cs: Resource<CatalogSourceSpec> =
        serde_yaml_ng::from_str(&files["catalogsource-cs-redhat-operator-index-v4-20.yaml"])
            .unwrap();
    assert_eq!(
        (cs.api_version.as_str(), cs.kind.as_str()),
        ("operators.coreos.com/v1alpha1", "CatalogSource")
    );
    assert_eq!(cs.metadata.name, "cs-redhat-operator-index-v4-20");
    assert_eq!(
        cs.metadata.namespace.as_deref(),
        Some("openshift-marketplace")
    );
    assert_eq!(cs.spec.source_type, "grpc");
    assert_eq!(cs.spec.image, catalog_image);
    assert!(cs.spec.display_name.contains("redhat-operator-index v4.20"));
    assert_eq!(cs.spec.publisher, "prewarm");
    assert_eq!(cs.spec.update_strategy.registry_poll.interval, "24h");

    let cc: Resource<ClusterCatalogSpec> =
        serde_yaml_ng::from_str(&files["clustercatalog-cc-redhat-operator-index-v4-20.yaml"])
            .unwrap();
    assert_eq!(
        (cc.api_version.as_str(), cc.kind.as_str()),
        ("olm.operatorframework.io/v1", "ClusterCatalog")
    );
    assert_eq!(cc.metadata.namespace, None, "cluster-scoped");
    assert_eq!(cc.spec.source.kind, "Image");
    assert_eq!(cc.spec.source.image.reference, cs.spec.image);

    let hex = release_digest.trim_start_matches("sha256:");
    let cm: ConfigMap =
        serde_yaml_ng::from_str(&files[&format!("signature-sha256-{hex}.yaml")]).unwrap();
    assert_eq!(
        (cm.api_version.as_str(), cm.kind.as_str()),
        ("v1", "ConfigMap")
    );
    assert_eq!(cm.metadata["namespace"], "openshift-config-managed");
    assert_eq!(
        cm.metadata["labels"]["release.openshift.io/verification-signatures"],
        ""
    );
    assert_eq!(
        cm.binary_data.keys().cloned().collect::<Vec<_>>(),
        [format!("sha256-{hex}-1"), format!("sha256-{hex}-2")]
    );
    files
}

/// A plain registry of the lab, the lab user allowed on it.
fn registry(env: &mut Env, name: &str) -> prewarm_lab::ExtraRegistry {
    let dest = env.lab.start_registry(name).unwrap();
    let mut auth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&env.auth).unwrap()).unwrap();
    auth["auths"][&dest.address] = auth["auths"]["registry.redhat.io"].clone();
    std::fs::write(&env.auth, serde_json::to_vec(&auth).unwrap()).unwrap();
    dest
}

/// The job of these tests: release 4.20.2 with two signatures kept locally as the mirror lays
/// them out, the graph image on UBI from the lab's graph-data tarball, two packages of the lab
/// catalog (aws-load-balancer-operator: two channels; jaeger-product from 1.47.1-5).
fn cluster_job(env: &Env, c: &OcpContent) -> String {
    let release = &c.releases["4.20.2"];
    let hex = release.digest.trim_start_matches("sha256:");
    std::fs::write(
        env.dir.join("graph-data.tar.gz"),
        prewarm_lab::ocp_content::graph_data_tarball(),
    )
    .unwrap();
    let sigs = env.dir.join("sig-source").join(format!("sha256={hex}"));
    std::fs::create_dir_all(&sigs).unwrap();
    std::fs::write(sigs.join("signature-1"), b"first").unwrap();
    std::fs::write(sigs.join("signature-2"), b"second").unwrap();
    job(
        env,
        "cluster.yaml",
        &format!(
            "releases:\n- quay.io/{}:4.20.2-x86_64\n\
             signatures:\n  source: {}\n  output: {}\n\
             graph:\n  image:\n    base: registry.redhat.io/ubi9/ubi:latest\n    data: graph-data.tar.gz\n\
             operators:\n- catalog: registry.redhat.io/{CATALOG_REPOSITORY}:v4.20\n  packages:\n  - name: aws-load-balancer-operator\n  - name: jaeger-product\n    minVersion: 1.47.1-5\n",
            prewarm_lab::ocp_content::RELEASE_REPOSITORY,
            env.dir.join("sig-source").display(),
            env.dir.join("sig-out").display(),
        ),
    )
}

/// `prewarm copy JOB` or `prewarm import BUNDLE` into the lab registry `to`, the cluster
/// resources into `dir`.
fn to_registry(env: &Env, command: &str, what: &str, to: &str, dir: &Path) -> std::process::Output {
    env.prewarm(&[
        command,
        what,
        "--to",
        to,
        "--to-ca",
        &env.lab.ca_cert.display().to_string(),
        "--cluster-resources",
        dir.to_str().unwrap(),
    ])
}

/// `prewarm plan JOB -o json`.
fn plan_json(env: &Env, job: &str) -> serde_json::Value {
    let out = env.prewarm(&["plan", job, "-o", "json"]);
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The cache-org path of a source repository path.
fn org(repo_path: &str) -> String {
    let (host, rest) = repo_path.split_once('/').unwrap();
    format!("{}/{rest}", prewarm::job::default_org(host))
}

#[test]
fn copy_and_warm_write_cluster_resources_for_every_mapping_mode() {
    let mut env = lab("cluster-resources");
    let c = seed_ocp(&env);
    let dest = registry(&mut env, "clusterdest");
    let ca = env.lab.ca_cert.display().to_string();
    let copy = |job: &str, to: &str, dir: &Path| to_registry(&env, "copy", job, to, dir);
    let release = &c.releases["4.20.2"];
    let job = cluster_job(&env, &c);
    let plan = plan_json(&env, &job);

    // --to REGISTRY: the cache-org mapping on the destination.
    let by_orgs = env.dir.join("orgs");
    let out = copy(&job, &dest.address, &by_orgs);
    assert!(out.status.success());
    let mirror = |r: &str| format!("{}/{}", dest.address, org(r));
    let filtered = format!(
        "{}/cache_registry_redhat_io/{CATALOG_REPOSITORY}",
        dest.address
    );
    let filtered = format!(
        "{filtered}@{}",
        dest_digest(&env, &format!("{filtered}:v4.20-filtered"))
    );
    assert_ne!(
        filtered,
        format!(
            "{}@{}",
            mirror(&format!("registry.redhat.io/{CATALOG_REPOSITORY}")),
            c.catalog.digest
        )
    );
    let written = check_dir(&by_orgs, &plan, &mirror, &filtered, &release.digest, true);
    check_graph(
        &env,
        &written,
        &mirror,
        &format!("{}/cache_registry_redhat_io", dest.address),
    );
    check_filtered_catalog(&env, &c, &filtered, &job);
    let first = files(&by_orgs);

    // --to REGISTRY/PREFIX, the directory beside --report by default.
    let report = env.dir.join("prefixed").join("copy.json");
    std::fs::create_dir_all(report.parent().unwrap()).unwrap();
    let to = format!("{}/site/mirror", dest.address);
    let out = env.prewarm(&[
        "copy",
        &job,
        "--to",
        &to,
        "--to-ca",
        &ca,
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let prefixed = env.dir.join("prefixed").join("cluster-resources");
    let mirror = |r: &str| {
        let r: Reference = format!("{r}:x").parse().unwrap();
        format!("{to}/{}", r.repository())
    };
    let filtered = format!("{to}/{CATALOG_REPOSITORY}");
    let filtered = format!(
        "{filtered}@{}",
        dest_digest(&env, &format!("{filtered}:v4.20-filtered"))
    );
    let written = check_dir(&prefixed, &plan, &mirror, &filtered, &release.digest, true);
    check_graph(&env, &written, &mirror, &to);

    // The cache orgs: warm through the front.
    let warmed = env.dir.join("warmed");
    let out = env.prewarm(&[
        "warm",
        &job,
        "--no-state",
        "--cluster-resources",
        warmed.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let front = env.lab.front_addr();
    let mirror = |r: &str| format!("{front}/{}", org(r));
    // A cache org is a read-only proxy: warm pushes what it builds into the regular org beside
    // (the lab's front routes it to a writable registry), the same bytes copy pushed.
    let built = format!("{front}/{}", prewarm_lab::BUILT_ORG);
    let filtered_at = format!("{built}/{CATALOG_REPOSITORY}");
    let digest = dest_digest(&env, &format!("{filtered_at}:v4.20-filtered"));
    assert_eq!(
        digest,
        dest_digest(
            &env,
            &format!(
                "{}/cache_registry_redhat_io/{CATALOG_REPOSITORY}:v4.20-filtered",
                dest.address
            )
        )
    );
    let filtered = format!("{filtered_at}@{digest}");
    let written = check_dir(&warmed, &plan, &mirror, &filtered, &release.digest, true);
    check_graph(&env, &written, &mirror, &built);
    check_filtered_catalog(&env, &c, &filtered, &job);

    // A rerun writes the same bytes.
    let out = copy(&job, &dest.address, &by_orgs);
    assert!(out.status.success());
    assert_eq!(files(&by_orgs), first);

    // A run that placed nothing writes nothing.
    let nothing = job_with_missing_image(&env);
    let empty = env.dir.join("empty");
    let out = copy(&nothing, &dest.address, &empty);
    assert_eq!(out.status.code(), Some(1));
    assert!(!empty.exists());
}

/// Export → import carries what copy builds: the filtered catalog and the graph image land at
/// the import's destination with the digests export recorded, which are the digests copy
/// pushes; the import's cluster-resources are copy's, at the other registry — the CatalogSource
/// names the filtered catalog by digest, the UpdateService the graph image, the signature
/// ConfigMaps are byte for byte copy's.
#[test]
fn export_import_carries_filtered_catalogs_graph_image_and_signatures() {
    let mut env = lab("cluster-airgap");
    let c = seed_ocp(&env);
    let dest = registry(&mut env, "copydest");
    let site = registry(&mut env, "airgapsite");
    let release = &c.releases["4.20.2"];
    let job = cluster_job(&env, &c);
    let plan = plan_json(&env, &job);

    let copied = env.dir.join("copied");
    let out = to_registry(&env, "copy", &job, &dest.address, &copied);
    assert!(out.status.success());
    // Prune keeps what copy built beside the plan: the filtered catalog and the graph image
    // the cluster resources name are needed, so the same job lists nothing.
    let ca = env.lab.ca_cert.display().to_string();
    let out = env.prewarm(&["prune", &job, "--to", &dest.address, "--to-ca", &ca]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !listed.contains("would delete"),
        "{listed}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bundle = env.dir.join("bundle");
    let out = env.prewarm(&["export", &job, "-o", bundle.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("bundle.json")).unwrap()).unwrap();
    let with_role = |kind: &str| -> Vec<serde_json::Value> {
        manifest["images"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["role"]["kind"] == kind)
            .cloned()
            .collect()
    };
    let catalogs = with_role("catalog");
    assert_eq!(catalogs.len(), 1, "{catalogs:?}");
    let catalog_repo = format!("registry.redhat.io/{CATALOG_REPOSITORY}");
    assert_eq!(
        catalogs[0]["reference"],
        format!("{catalog_repo}:v4.20-filtered")
    );
    assert_eq!(catalogs[0]["role"]["filtered"], true);
    assert_eq!(
        catalogs[0]["role"]["catalog"],
        format!("{catalog_repo}:v4.20")
    );
    let exported_catalog = catalogs[0]["digest"].as_str().unwrap().to_string();
    let graphs = with_role("graph-image");
    assert_eq!(graphs.len(), 1, "{graphs:?}");
    assert_eq!(
        graphs[0]["reference"],
        "registry.redhat.io/openshift/graph-image:latest"
    );
    let exported_graph = graphs[0]["digest"].as_str().unwrap().to_string();
    let hex = release.digest.trim_start_matches("sha256:");
    assert_eq!(
        manifest["signatures"][&release.digest],
        serde_json::json!(["Zmlyc3Q=", "c2Vjb25k"]),
        "both signatures, base64"
    );

    let imported = env.dir.join("imported");
    let out = to_registry(
        &env,
        "import",
        bundle.to_str().unwrap(),
        &site.address,
        &imported,
    );
    assert!(out.status.success());

    // The same digests: recorded at export, pushed by copy, placed by import.
    let filtered_at = |host: &str| format!("{host}/{}", org(&catalog_repo));
    let graph_at = |host: &str| format!("{host}/cache_registry_redhat_io/openshift/graph-image");
    for host in [&dest.address, &site.address] {
        assert_eq!(
            dest_digest(&env, &format!("{}:v4.20-filtered", filtered_at(host))),
            exported_catalog,
            "{host}"
        );
        assert_eq!(
            dest_digest(&env, &format!("{}:latest", graph_at(host))),
            exported_graph,
            "{host}"
        );
    }
    let filtered = format!("{}@{exported_catalog}", filtered_at(&site.address));
    check_filtered_catalog(&env, &c, &filtered, &job);
    let mirror = |r: &str| format!("{}/{}", site.address, org(r));
    let written = check_dir(&imported, &plan, &mirror, &filtered, &release.digest, true);
    check_graph(
        &env,
        &written,
        &mirror,
        &format!("{}/cache_registry_redhat_io", site.address),
    );
    // Copy's files at the other registry (its address, and the mirror sets' names made of
    // it), signature ConfigMaps byte for byte.
    let named = |a: &str| a.replace(['.', ':'], "-");
    let want: BTreeMap<String, String> = files(&copied)
        .into_iter()
        .map(|(name, text)| {
            let text = text
                .replace(&dest.address, &site.address)
                .replace(&named(&dest.address), &named(&site.address));
            (name, text)
        })
        .collect();
    assert_eq!(written, want);
    let signature = format!("signature-sha256-{hex}.yaml");
    assert_eq!(written[&signature], files(&copied)[&signature]);
}

/// OSUS's UpdateServiceSpec.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UpdateServiceSpec {
    replicas: u32,
    releases: String,
    graph_data_image: String,
}

/// The UpdateService names the graph image pushed beside the base (under `root`) by digest,
/// and the release repository at the mirror; the image's top layer is the lab's graph-data
/// tarball under /var/lib/cincinnati-graph-data, its command copies it for the service.
fn check_graph(
    env: &Env,
    files: &BTreeMap<String, String>,
    mirror_of: &dyn Fn(&str) -> String,
    root: &str,
) {
    let us: Resource<UpdateServiceSpec> =
        serde_yaml_ng::from_str(&files["updateservice.yaml"]).unwrap();
    assert_eq!(
        (us.api_version.as_str(), us.kind.as_str()),
        ("updateservice.operator.openshift.io/v1", "UpdateService")
    );
    assert_eq!(
        us.metadata.namespace.as_deref(),
        Some("openshift-update-service")
    );
    assert!(prewarm::cluster::names::is_label(&us.metadata.name));
    assert_eq!(us.spec.replicas, 2);
    assert_eq!(
        us.spec.releases,
        mirror_of(&format!(
            "quay.io/{}",
            prewarm_lab::ocp_content::RELEASE_REPOSITORY
        ))
    );
    let repo = format!("{root}/openshift/graph-image");
    let digest = dest_digest(env, &format!("{repo}:latest"));
    assert_eq!(us.spec.graph_data_image, format!("{repo}@{digest}"));

    let layers = pull_amd64(env, &us.spec.graph_data_image, "graph-layout");
    let read = |bytes: &[u8]| -> BTreeMap<String, Vec<u8>> {
        tar_entries(bytes)
            .into_iter()
            .filter(|(_, file, _)| *file)
            .map(|(p, _, d)| (p, d))
            .collect()
    };
    let got = read(layers.last().unwrap());
    let want: BTreeMap<String, Vec<u8>> = read(&prewarm_lab::ocp_content::graph_data_tarball())
        .into_iter()
        .map(|(p, d)| (format!("var/lib/cincinnati-graph-data/{p}"), d))
        .collect();
    assert_eq!(got, want);
    assert!(layers.len() > 1, "on top of the base's layers");
    let config = config_amd64(env, &us.spec.graph_data_image);
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(prewarm::cluster::graph_image::COMMAND)
    );
}

/// skopeo's flags (`--cert-dir`, `--authfile`, with `prefix`: `--src-…`) to read `image` from
/// the lab: the TLS registries by the lab CA, the front (the cache host) over plain HTTP.
fn access(env: &Env, image: &str, prefix: &str) -> Vec<String> {
    let tls = if image.starts_with(&format!("{}/", env.lab.front_addr())) {
        vec![format!("--{prefix}tls-verify=false")]
    } else {
        vec![format!("--{prefix}cert-dir"), env.path("certs")]
    };
    let auth = [
        format!("--{prefix}authfile"),
        env.auth.display().to_string(),
    ];
    tls.into_iter().chain(auth).collect()
}

/// `skopeo inspect ARGS docker://IMAGE` with the lab's access flags.
fn inspect(env: &Env, args: &[&str], image: &str) -> std::process::Output {
    let access = access(env, image, "");
    let reference = format!("docker://{image}");
    let all: Vec<&str> = std::iter::once("inspect")
        .chain(args.iter().copied())
        .chain(access.iter().map(String::as_str))
        .chain([reference.as_str()])
        .collect();
    common::skopeo(&all)
}

/// `skopeo inspect --config` of the amd64 image at the destination.
fn config_amd64(env: &Env, image: &str) -> serde_json::Value {
    let out = inspect(env, &["--config", "--override-arch", "amd64"], image);
    assert!(out.status.success(), "{image}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `skopeo copy` of the amd64 image at the destination into a directory; its layers' bytes.
fn pull_amd64(env: &Env, image: &str, name: &str) -> Vec<Vec<u8>> {
    let layout = env.dir.join(name);
    let _ = std::fs::remove_dir_all(&layout);
    let access = access(env, image, "src-");
    let (from, to) = (
        format!("docker://{image}"),
        format!("dir:{}", layout.display()),
    );
    let args: Vec<&str> = ["copy", "--quiet", "--override-arch", "amd64"]
        .into_iter()
        .chain(access.iter().map(String::as_str))
        .chain([from.as_str(), to.as_str()])
        .collect();
    let copy = common::skopeo(&args);
    assert!(copy.status.success(), "{image}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("manifest.json")).unwrap()).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let hex = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
            std::fs::read(layout.join(hex)).unwrap()
        })
        .collect()
}

/// A gzip tar layer's entries: path, whether a regular file, bytes.
fn tar_entries(layer: &[u8]) -> Vec<(String, bool, Vec<u8>)> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(layer));
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let file = e.header().entry_type().is_file();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (path, file, data)
        })
        .collect()
}

/// `skopeo inspect --raw` of a reference in the lab: the digest of the bytes.
fn dest_digest(env: &Env, reference: &str) -> String {
    let out = inspect(env, &["--raw"], reference);
    assert!(out.status.success(), "{reference}");
    format!("sha256:{}", common::sha256_hex(&out.stdout))
}

/// The filtered catalog at `image`, read back with skopeo and with prewarm's own loader:
/// exactly aws-load-balancer-operator's channel heads and jaeger-product from 1.47.1-5, one head
/// per channel, no edge to a dropped bundle, the configs label kept, `serve /configs`.
fn check_filtered_catalog(env: &Env, c: &OcpContent, image: &str, job: &str) {
    let config = config_amd64(env, image);
    assert_eq!(
        config["config"]["Labels"]["operators.operatorframework.io.index.configs.v1"],
        "/configs"
    );
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["serve", "/configs"])
    );
    let raw = inspect(env, &["--raw"], image);
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        index["manifests"].as_array().unwrap().len(),
        2,
        "amd64 and arm64"
    );

    // The layers: the original's, a whiteout of configs/, the filtered configs.
    let layers = pull_amd64(env, image, "filtered-layout");
    assert_eq!(layers.len(), 3 + 2, "the original's three layers, then two");
    let entries = |layer: &[u8]| -> Vec<(String, Vec<u8>)> {
        tar_entries(layer)
            .into_iter()
            .map(|(p, _, d)| (p, d))
            .collect()
    };
    let wh = entries(&layers[3]);
    assert_eq!(
        wh.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        [".wh.configs"]
    );
    let root = env.dir.join("filtered-configs");
    let _ = std::fs::remove_dir_all(&root);
    for (path, data) in entries(&layers[4]) {
        assert!(path.starts_with("configs/"), "{path}");
        let target = root.join(&path);
        if path.ends_with('/') {
            std::fs::create_dir_all(&target).unwrap();
        } else {
            std::fs::write(&target, data).unwrap();
        }
    }
    let cat =
        prewarm::sources::fbc::Catalog::load(&root.join("configs"), None, "filtered").unwrap();
    let bundles: BTreeSet<(String, String)> = cat
        .packages
        .values()
        .flat_map(|p| p.bundles.keys().map(|b| (p.name.clone(), b.clone())))
        .collect();
    let want: BTreeSet<(String, String)> = [
        (
            "aws-load-balancer-operator",
            "aws-load-balancer-operator.v0.2.0",
        ),
        (
            "aws-load-balancer-operator",
            "aws-load-balancer-operator.v1.2.0",
        ),
        ("jaeger-product", "jaeger-product.v1.47.1-5"),
        ("jaeger-product", "jaeger-product.v1.51.0-1"),
    ]
    .iter()
    .map(|(p, b)| (p.to_string(), b.to_string()))
    .collect();
    assert_eq!(bundles, want);
    for pkg in cat.packages.values() {
        assert!(pkg
            .channels
            .contains_key(pkg.default_channel.as_deref().unwrap()));
        for (ch, entries) in &pkg.channels {
            let names: BTreeSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
            let referenced: BTreeSet<&str> = entries
                .iter()
                .flat_map(|e| e.replaces.iter().chain(e.skips.iter()))
                .map(String::as_str)
                .collect();
            assert!(
                referenced.is_subset(&names),
                "{ch}: an edge to a dropped bundle"
            );
            assert_eq!(names.difference(&referenced).count(), 1, "{ch}: one head");
            assert!(names.iter().all(|n| pkg.bundles.contains_key(*n)));
        }
    }
    assert_eq!(
        cat.packages["aws-load-balancer-operator"]
            .channels
            .keys()
            .collect::<Vec<_>>(),
        ["stable-v0", "stable-v1"]
    );

    // prewarm's own catalog reader, through the registry: `full: true` of the filtered catalog
    // plans exactly the kept bundles' images.
    let (host, rest) = image.split_once('/').unwrap();
    let (repo, digest) = rest.split_once('@').unwrap();
    let base = std::fs::read_to_string(job).unwrap();
    let base: String = base
        .lines()
        .take_while(|l| !l.starts_with("releases:"))
        .map(|l| {
            format!(
                "{l}
"
            )
        })
        .collect();
    let reread = env.dir.join("reread.yaml");
    // The front is the job's cache host already (plain HTTP); a TLS registry needs the CA.
    let trust = match host == env.lab.front_addr() {
        true => "insecure: true".to_string(),
        false => format!("ca: {}", env.lab.ca_cert.display()),
    };
    let text = base.replacen(
        "registries:\n",
        &format!("registries:\n  {host}:\n    {trust}\n"),
        1,
    );
    std::fs::write(
        &reread,
        format!("{text}operators:\n- catalog: {host}/{repo}@{digest}\n  full: true\n"),
    )
    .unwrap();
    let out = env.prewarm(&["plan", reread.to_str().unwrap(), "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        std::fs::read_to_string(&reread).unwrap()
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: BTreeSet<String> = plan["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["source"].as_str().unwrap().to_string())
        .filter(|s| !s.starts_with(host))
        .collect();
    let want: BTreeSet<String> = want
        .iter()
        .flat_map(|(_, b)| c.bundles[b].1.clone())
        .collect();
    assert_eq!(got, want);
}

fn job_with_missing_image(env: &Env) -> String {
    job(
        env,
        "nothing.yaml",
        "images:\n- quay.io/openshift-release-dev/ocp-release:0.0.0-none\n",
    )
}

/// Hand-reviewed golden files for the three mapping modes, rendered from fixed data: a
/// release by tag and digest with a component and its signature, a catalog, a graph image.
/// Regenerate with PREWARM_UPDATE_GOLDEN=1, then review the diff.
#[test]
fn golden_cluster_resources_for_each_mapping_mode() {
    use prewarm::cluster::resources::{Placed, PlacedCatalog, PlacedGraph, Resources};
    let d = |c: char| -> prewarm::reference::Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    };
    let release: Reference = format!(
        "quay.io/openshift-release-dev/ocp-release:4.20.2-x86_64@{}",
        d('a')
    )
    .parse()
    .unwrap();
    let component: Reference = format!("quay.io/openshift-release-dev/ocp-v4.0-art-dev@{}", d('b'))
        .parse()
        .unwrap();
    let catalog: Reference = "registry.redhat.io/redhat/redhat-operator-index:v4.20"
        .parse()
        .unwrap();
    let update = std::env::var_os("PREWARM_UPDATE_GOLDEN").is_some();
    type MirrorOf<'a> = &'a dyn Fn(&Reference) -> String;
    let modes: [(&str, &str, MirrorOf); 3] = [
        ("cache-orgs", "mirror.example:8443", &|r: &Reference| {
            format!(
                "mirror.example:8443/{}/{}",
                prewarm::job::default_org(r.registry()),
                r.repository()
            )
        }),
        ("registry", "site.example:5000", &|r: &Reference| {
            format!(
                "site.example:5000/{}/{}",
                prewarm::job::default_org(r.registry()),
                r.repository()
            )
        }),
        (
            "registry-prefix",
            "site.example:5000/ocp",
            &|r: &Reference| format!("site.example:5000/ocp/{}", r.repository()),
        ),
    ];
    for (mode, destination, mirror_of) in modes {
        let placed = |r: &Reference, digest, origin: &str| Placed {
            source: r.clone(),
            digest,
            mirror: mirror_of(r),
            origin: origin.into(),
        };
        let resources = Resources {
            destination: destination.into(),
            images: vec![
                placed(&release, d('a'), "release 4.20.2 (job.yaml: releases[0])"),
                placed(&component, d('b'), "release 4.20.2 component cli"),
                placed(
                    &catalog,
                    d('c'),
                    "catalog registry.redhat.io/redhat/redhat-operator-index:v4.20",
                ),
            ],
            catalogs: vec![PlacedCatalog {
                source: catalog.clone(),
                image: format!("{}@{}", mirror_of(&catalog), d('c'))
                    .parse()
                    .unwrap(),
                filtered: true,
            }],
            graph: Some(PlacedGraph {
                image: format!(
                    "{}@{}",
                    mirror_of(&"quay.io/openshift/graph-data:prewarm".parse().unwrap()),
                    d('e')
                )
                .parse()
                .unwrap(),
                releases: mirror_of(&release),
            }),
            signatures: [(d('a'), vec![b"sig-1".to_vec()])].into(),
        };
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/cluster-resources")
            .join(mode);
        let rendered = resources.render();
        if update {
            let _ = std::fs::remove_dir_all(&dir);
            prewarm::cluster::resources::write(&dir, &rendered).unwrap();
            continue;
        }
        assert_eq!(
            rendered,
            files(&dir),
            "{} differs from the golden files",
            dir.display()
        );
    }
}
