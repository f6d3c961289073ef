//! OCP content against the lab: release payloads, update-graph channels, file-based catalogs
//! and oc-mirror ImageSetConfigurations turn into exactly the images FORMATS.md's rules
//! select, and a warm leaves every one of them pullable from the cache alone.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{lab, read_report, sha256_hex, skopeo, Env};
use prewarm_lab::ocp_content::{
    OcpContent, CATALOG_REPOSITORY, CERTIFIED_REPOSITORY, RELEASE_REPOSITORY,
};

fn seed_ocp(env: &Env) -> OcpContent {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(env.lab.seed_ocp()).expect("seed OCP content")
}

/// The lab job's cache and registries, without its image list, plus `extra`.
fn job(env: &Env, name: &str, platforms: &str, extra: &str) -> String {
    let base = std::fs::read_to_string(&env.job).unwrap();
    let mut text: String = base
        .lines()
        .filter(|l| !l.starts_with("image_lists:") && !l.starts_with("platforms:"))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!("platforms: {platforms}\n{extra}"));
    let path = env.dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `(repository, digest)` of every planned image, and the plan itself.
fn plan(env: &Env, job: &str, extra: &[&str]) -> (BTreeSet<(String, String)>, serde_json::Value) {
    let mut args = vec!["plan", job, "-o", "json"];
    args.extend_from_slice(extra);
    let out = env.prewarm(&args);
    assert!(out.status.success(), "plan failed");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let set = plan["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let r: prewarm::reference::Reference = i["source"].as_str().unwrap().parse().unwrap();
            (r.repo_path(), i["digest"].as_str().unwrap().to_string())
        })
        .collect();
    (set, plan)
}

fn key(reference: &str) -> (String, String) {
    let r: prewarm::reference::Reference = reference.parse().unwrap();
    (r.repo_path(), r.digest().unwrap().to_string())
}

fn release_set(c: &OcpContent, versions: &[&str]) -> BTreeSet<(String, String)> {
    let mut want = BTreeSet::new();
    for v in versions {
        want.insert((
            format!("quay.io/{RELEASE_REPOSITORY}"),
            c.releases[*v].digest.clone(),
        ));
        for (_, r) in &c.components[*v] {
            want.insert(key(r));
        }
        if *v == "4.20.3" {
            want.insert((
                format!("quay.io/{RELEASE_REPOSITORY}"),
                c.cosign.digest.clone(),
            ));
        }
    }
    want
}

fn catalog_set(c: &OcpContent, bundles: &[&str]) -> BTreeSet<(String, String)> {
    let mut want = BTreeSet::new();
    for b in bundles {
        for r in &c.bundles[*b].1 {
            want.insert(key(r));
        }
    }
    want
}

/// After a warm, with the upstreams stopped: every planned image's manifest (exact bytes by
/// digest) and a full copy come from the cache.
fn every_image_pulls_from_the_cache(env: &mut Env, images: &BTreeSet<(String, String)>) {
    env.settled_upstream_blob_gets();
    env.lab.stop_upstreams();
    let certs = env.path("no-certs");
    std::fs::create_dir_all(env.dir.join("pulled")).unwrap();
    for (repo, digest) in images {
        let by_digest = format!(
            "docker://{}@{digest}",
            env.cache_path(&format!("{repo}@{digest}"))
        );
        let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &by_digest]);
        assert!(raw.status.success(), "{by_digest}");
        assert_eq!(format!("sha256:{}", sha256_hex(&raw.stdout)), *digest);
        let dest = format!(
            "dir:{}",
            env.dir
                .join("pulled")
                .join(digest.replace(':', "-"))
                .display()
        );
        let copy = skopeo(&[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--src-cert-dir",
            &certs,
            &by_digest,
            &dest,
        ]);
        assert!(copy.status.success(), "skopeo copy {by_digest}");
    }
}

#[test]
fn releases_plan_every_component_then_warm_serves_them_offline() {
    let mut env = lab("ocp-release");
    let c = seed_ocp(&env);
    // Signatures from a local directory laid out like the signature store.
    let newest = &c.releases["4.20.3"].digest;
    let hex = newest.trim_start_matches("sha256:");
    let store = env.dir.join("sigstore").join(format!("sha256={hex}"));
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(store.join("signature-1"), b"\x89binary-openpgp-1").unwrap();
    std::fs::write(store.join("signature-2"), b"\x89binary-openpgp-2").unwrap();
    let job = job(
        &env,
        "release.yaml",
        "[linux/amd64]",
        "releases:\n- quay.io/openshift-release-dev/ocp-release:4.20.1-x86_64\n- quay.io/openshift-release-dev/ocp-release:4.20.3-x86_64\nsignatures:\n  source: sigstore\n  output: sigs\n",
    );
    let (got, plan) = plan(&env, &job, &[]);
    // 4.20.1 has its release-manifests one layer below the top: found by the fall back.
    assert_eq!(got, release_set(&c, &["4.20.1", "4.20.3"]));
    let origins: Vec<&str> = plan["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["origin"].as_str().unwrap())
        .collect();
    assert!(
        origins.contains(&"release 4.20.3 component console"),
        "{origins:?}"
    );
    assert!(origins
        .iter()
        .any(|o| o.starts_with("release 4.20.1 (") && o.contains("releases[0]")));
    assert!(origins.iter().any(|o| o.starts_with("cosign signature of")));
    // Signatures kept, with the ConfigMap.
    let sigs = env.dir.join("sigs");
    assert_eq!(
        std::fs::read(sigs.join(format!("sha256-{hex}-2"))).unwrap(),
        b"\x89binary-openpgp-2"
    );
    let cm: serde_json::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(sigs.join(format!("sha256-{hex}.yaml"))).unwrap(),
    )
    .unwrap();
    assert_eq!(cm["metadata"]["namespace"], "openshift-config-managed");
    assert_eq!(cm["binaryData"].as_object().unwrap().len(), 2);

    // A -multi payload: the list and each wanted platform, and the same components.
    let multi = self::job(
        &env,
        "multi.yaml",
        "[linux/amd64, linux/arm64]",
        "releases:\n- quay.io/openshift-release-dev/ocp-release:4.20.3-multi\n",
    );
    let (multi_set, multi_plan) = self::plan(&env, &multi, &[]);
    let mut want = release_set(&c, &["4.20.3"]);
    want.remove(&(
        format!("quay.io/{RELEASE_REPOSITORY}"),
        c.releases["4.20.3"].digest.clone(),
    ));
    want.remove(&(
        format!("quay.io/{RELEASE_REPOSITORY}"),
        c.cosign.digest.clone(),
    ));
    want.insert((
        format!("quay.io/{RELEASE_REPOSITORY}"),
        c.multi.digest.clone(),
    ));
    assert_eq!(multi_set, want);
    let top = multi_plan["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["digest"] == c.multi.digest.as_str())
        .unwrap();
    assert_eq!(
        top["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64"])
    );
    assert_eq!(top["manifests"].as_array().unwrap().len(), 3);

    let report = env.path("warm.json");
    let out = env.prewarm(&["warm", &job, "--no-state", "--report", &report]);
    assert!(out.status.success());
    let r = read_report(Path::new(&report));
    assert_eq!(r["summary"]["failed"], 0, "{r:#}");
    every_image_pulls_from_the_cache(&mut env, &got);
    // And the release content itself is read through the cache once the upstreams are gone.
    let out = env.prewarm(&["verify", &job, "--resolve", "cache", "--no-state"]);
    assert!(out.status.success());
}

#[test]
fn catalog_heads_then_warm_serves_them_offline() {
    let mut env = lab("ocp-catalog");
    let c = seed_ocp(&env);
    let job = job(
        &env,
        "catalog.yaml",
        "[linux/amd64]",
        &format!("operators:\n- catalog: registry.redhat.io/{CATALOG_REPOSITORY}:v4.20\n"),
    );
    let (got, plan) = plan(&env, &job, &[]);
    // The head of every channel of every package; deprecated-operator is whited out, and the
    // README that .indexignore names is never parsed. aws stable-v1's head is v1.2.0 because
    // v1.2.0 skips v1.1.1.
    let mut want = catalog_set(
        &c,
        &[
            "aws-load-balancer-operator.v0.2.0",
            "aws-load-balancer-operator.v1.2.0",
            "jaeger-product.v1.51.0-1",
            "node-observability-operator.v0.3.0",
            // What node-observability-operator.v0.3.0 requires (olm.package.required).
            "jaeger-product.v1.47.1-5",
        ],
    );
    want.insert((
        format!("registry.redhat.io/{CATALOG_REPOSITORY}"),
        c.catalog.digest.clone(),
    ));
    assert_eq!(got, want);
    let origins: Vec<&str> = plan["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["origin"].as_str().unwrap())
        .collect();
    assert!(origins.iter().any(|o| o.ends_with(
        "package aws-load-balancer-operator bundle aws-load-balancer-operator.v0.2.0 relatedImage kube-rbac-proxy"
    )), "{origins:?}");

    let out = env.prewarm(&["warm", &job, "--no-state"]);
    assert!(out.status.success());
    every_image_pulls_from_the_cache(&mut env, &got);
    let out = env.prewarm(&["verify", &job, "--resolve", "cache", "--no-state"]);
    assert!(out.status.success());
}

#[test]
fn named_channels_ranges_full_and_blocked_images() {
    let env = lab("ocp-ranges");
    let c = seed_ocp(&env);
    let job = job(
        &env,
        "ranges.yaml",
        "[linux/amd64]",
        &format!(
            "operators:\n\
             - catalog: registry.redhat.io/{CATALOG_REPOSITORY}:v4.20\n  packages:\n\
             \x20 - name: aws-load-balancer-operator\n    channels:\n    - name: stable-v1\n      minVersion: 1.1.0\n      maxVersion: 1.1.1\n\
             \x20 - name: jaeger-product\n    channels:\n    - name: stable\n\
             \x20 - name: node-observability-operator\n    minVersion: 0.2.0\n\
             - catalog: registry.redhat.io/{CERTIFIED_REPOSITORY}:v4.20\n  full: true\n\
             blocked_images:\n- registry.redhat.io/openshift4/ose-kube-rbac-proxy-rhel9\n"
        ),
    );
    let (got, plan) = plan(&env, &job, &[]);
    // 1.2.0 is out of range but kept, as oc-mirror keeps it: 1.1.1 is reachable only
    // through 1.2.0's `skips`.
    let mut want = catalog_set(
        &c,
        &[
            "aws-load-balancer-operator.v1.1.0",
            "aws-load-balancer-operator.v1.1.1",
            "aws-load-balancer-operator.v1.2.0",
            "jaeger-product.v1.51.0-1",
            "node-observability-operator.v0.2.0",
            "node-observability-operator.v0.3.0",
            "jaeger-product.v1.47.1-5",
            "certified-thing.v2.0.0",
            "certified-thing.v2.1.0",
        ],
    );
    want.retain(|(repo, _)| !repo.ends_with("ose-kube-rbac-proxy-rhel9"));
    want.insert((
        format!("registry.redhat.io/{CATALOG_REPOSITORY}"),
        c.catalog.digest.clone(),
    ));
    want.insert((
        format!("registry.redhat.io/{CERTIFIED_REPOSITORY}"),
        c.certified.digest.clone(),
    ));
    assert_eq!(got, want);
    let notes = plan["notes"].as_array().unwrap();
    assert!(notes.iter().any(|n| n
        .as_str()
        .unwrap()
        .starts_with("blocked: registry.redhat.io/openshift4/ose-kube-rbac-proxy-rhel9@")));

    // A channel the package does not have: named in a one-line failure.
    let bad = job_with(&env, "bad-channel.yaml", &format!(
        "operators:\n- catalog: registry.redhat.io/{CATALOG_REPOSITORY}:v4.20\n  packages:\n  - name: jaeger-product\n    channels:\n    - name: fast\n"
    ));
    let out = env.prewarm(&["plan", &bad]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad-channel.yaml: operators[0].packages[0].channels[0].name: package `jaeger-product` has no channel `fast` (it has stable)"), "{err}");
}

fn job_with(env: &Env, name: &str, extra: &str) -> String {
    job(env, name, "[linux/amd64]", extra)
}

#[test]
fn fixture_isc_with_local_graphs_plans_releases_and_operators() {
    let env = lab("ocp-isc");
    let c = seed_ocp(&env);
    let graphs = env.dir.join("graphs");
    std::fs::create_dir_all(&graphs).unwrap();
    std::fs::write(
        graphs.join("graph-stable-4.20-amd64.json"),
        c.graph_json(
            "quay.io",
            &[("4.20.1", "4.20.2"), ("4.20.2", "4.20.3")],
            &[("4.20.1", "4.20.3")],
        ),
    )
    .unwrap();
    std::fs::write(
        graphs.join("graph-eus-4.20-amd64.json"),
        c.graph_json(
            "quay.io",
            &[
                ("4.20.1", "4.20.2"),
                ("4.20.2", "4.20.3"),
                ("4.20.1", "4.20.3"),
            ],
            &[],
        ),
    )
    .unwrap();
    let isc = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/isc.yaml");
    // The ISC says what; the job says where (endpoints) and adds an image the ISC blocks.
    let job = job(
        &env,
        "isc-job.yaml",
        "[linux/amd64]",
        "graph:\n  dir: graphs\nimages:\n- registry.redhat.io/ubi9/ubi-minimal:latest\n",
    );
    let (got, plan) = plan(&env, &job, &["--isc", isc]);
    let mut want = release_set(&c, &["4.20.1", "4.20.2", "4.20.3"]);
    want.extend(catalog_set(
        &c,
        &[
            "aws-load-balancer-operator.v0.2.0",
            "aws-load-balancer-operator.v1.2.0",
            "jaeger-product.v1.47.1-5",
            "jaeger-product.v1.51.0-1",
            "node-observability-operator.v0.2.0",
            "certified-thing.v2.0.0",
            "certified-thing.v2.1.0",
        ],
    ));
    want.insert((
        format!("registry.redhat.io/{CATALOG_REPOSITORY}"),
        c.catalog.digest.clone(),
    ));
    want.insert((
        format!("registry.redhat.io/{CERTIFIED_REPOSITORY}"),
        c.certified.digest.clone(),
    ));
    let ubi = env
        .seed
        .images
        .iter()
        .find(|i| i.reference == "registry.redhat.io/ubi9/ubi:latest")
        .unwrap();
    want.insert(("registry.redhat.io/ubi9/ubi".into(), ubi.digest.clone()));
    assert_eq!(got, want);
    let notes: Vec<&str> = plan["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    // graph: true builds the graph-data image (on UBI, planned above): nothing unsupported.
    assert!(
        !notes.iter().any(|n| n.contains("mirror.platform.graph")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("conditional update 4.20.1 -> 4.20.3 carries risk LabRisk")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("blocked: registry.redhat.io/ubi9/ubi-minimal:latest")),
        "{notes:?}"
    );
    let origins: Vec<&str> = plan["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["origin"].as_str().unwrap())
        .collect();
    assert!(
        origins
            .iter()
            .any(|o| o.starts_with("release 4.20.3 (channel stable-4.20 amd64 4.20.3")),
        "{origins:?}"
    );
}

#[test]
fn malformed_isc_and_graph_are_one_line_errors_naming_file_and_field() {
    let env = lab("ocp-bad");
    let isc = env.dir.join("bad-isc.yaml");
    std::fs::write(&isc, "kind: ImageSetConfiguration\napiVersion: mirror.openshift.io/v2alpha1\nmirror:\n  platform:\n    channels:\n    - name: stable-4.20\n      minVerison: 4.20.1\n").unwrap();
    // The ISC alone, as the job file (detected by its kind).
    let out = env.prewarm(&["plan", isc.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "{}: mirror.platform.channels[0].minVerison: unknown field `minVerison`",
            isc.display()
        )),
        "{err}"
    );

    let graphs = env.dir.join("graphs");
    std::fs::create_dir_all(&graphs).unwrap();
    std::fs::write(
        graphs.join("graph-stable-4.20-amd64.json"),
        r#"{"nodes":[{"version":"4.20.1","payload":"quay.io/x/y@sha256:bad"}],"edges":[]}"#,
    )
    .unwrap();
    let job = job_with(
        &env,
        "graph-job.yaml",
        "graph:\n  dir: graphs\nchannels:\n- name: stable-4.20\n",
    );
    let out = env.prewarm(&["plan", &job]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("graph-stable-4.20-amd64.json: nodes[0].payload: invalid image reference"),
        "{err}"
    );
}

#[test]
fn malformed_image_references_and_catalog_fail_naming_file_and_field() {
    use prewarm_lab::seed::{tar_layer, Compression, Format, ImageSpec, Pusher};
    let env = lab("ocp-bad-content");
    let labels = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let quay = Pusher::new(&env.lab.quay_target()).await?;
        let refs = br#"{"kind":"ImageStream","apiVersion":"image.openshift.io/v1","metadata":{"name":"9.9.9"},"spec":{"tags":[{"name":"cli","from":{"kind":"DockerImage"}}]}}"#;
        let layer = tar_layer(
            &[
                ("release-manifests/", Vec::new()),
                ("release-manifests/image-references", refs.to_vec()),
            ],
            Compression::Gzip,
        );
        quay.push_image(
            RELEASE_REPOSITORY,
            Some("9.9.9-x86_64"),
            &ImageSpec::linux(
                Format::Docker,
                "amd64",
                labels(&[
                    ("io.openshift.release", "9.9.9"),
                    ("io.openshift.release.base-image-digest", "sha256:00"),
                ]),
                vec![layer],
            ),
        )
        .await?;
        let redhat = Pusher::new(&env.lab.redhat_target()?).await?;
        let fbc = b"{\"schema\":\"olm.package\",\"name\":\"p\"}\n{\"schema\":\"olm.bundle\",\"name\":\"p.v1\",\"package\":\"p\"}\n";
        let layer = tar_layer(
            &[
                ("configs/", Vec::new()),
                ("configs/p/", Vec::new()),
                ("configs/p/catalog.json", fbc.to_vec()),
            ],
            Compression::None,
        );
        redhat
            .push_image(
                "redhat/bad-index",
                Some("v1"),
                &ImageSpec::linux(
                    Format::Oci,
                    "amd64",
                    labels(&[("operators.operatorframework.io.index.configs.v1", "/configs")]),
                    vec![layer],
                ),
            )
            .await?;
        anyhow::Ok(())
    })
    .expect("push malformed content");
    let job = job_with(
        &env,
        "bad-content.yaml",
        "releases:\n- quay.io/openshift-release-dev/ocp-release:9.9.9-x86_64\noperators:\n- catalog: registry.redhat.io/redhat/bad-index:v1\n",
    );
    let out = env.prewarm(&["plan", &job]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 2, "{err}");
    assert!(
        errors[0].contains("release-manifests/image-references (layer ")
            && errors[0].contains("spec.tags[0].from: missing field `name`"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].ends_with(
            "catalog `registry.redhat.io/redhat/bad-index:v1` /configs/p/catalog.json: document 2 (olm.bundle): missing field `image`"
        ),
        "{}",
        errors[1]
    );
}

/// A plain HTTP server on loopback standing in for the update service and the signature
/// store (both are static files over HTTP): answers `routes` by path, 404 otherwise, and
/// records each request line with its Accept header.
fn serve(
    routes: Vec<(String, Vec<u8>)>,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            reader.read_line(&mut first).unwrap_or(0);
            let mut accept = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if line.to_ascii_lowercase().starts_with("accept:") {
                    accept = line[7..].trim().to_string();
                }
            }
            let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
            log.lock().unwrap().push(format!("{path} accept={accept}"));
            let hit = routes.iter().find(|(p, _)| *p == path);
            let (status, body) = match hit {
                Some((_, b)) => ("200 OK", b.clone()),
                None => ("404 Not Found", b"not found".to_vec()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    (addr, seen)
}

#[test]
fn graph_and_signatures_from_an_update_service_url() {
    let env = lab("ocp-url");
    let c = seed_ocp(&env);
    let graph = c.graph_json(
        "quay.io",
        &[("4.20.1", "4.20.2"), ("4.20.2", "4.20.3")],
        &[],
    );
    let hex = c.releases["4.20.3"]
        .digest
        .trim_start_matches("sha256:")
        .to_string();
    let (addr, seen) = serve(vec![
        (
            "/api/upgrades_info/v1/graph?channel=stable-4.20&arch=amd64".into(),
            graph.into_bytes(),
        ),
        (
            format!("/sigs/sha256={hex}/signature-1"),
            b"\x89sig-one".to_vec(),
        ),
    ]);
    let job = job_with(
        &env,
        "url.yaml",
        &format!(
            "graph:\n  url: http://{addr}/api/upgrades_info/v1/graph\nchannels:\n- name: stable-4.20\nsignatures:\n  source: http://{addr}/sigs\n  output: sigs\n"
        ),
    );
    let (got, _) = plan(&env, &job, &[]);
    // No bounds: the newest release of the channel only.
    assert_eq!(got, release_set(&c, &["4.20.3"]));
    let requests = seen.lock().unwrap().clone();
    assert!(
        requests.contains(
            &"/api/upgrades_info/v1/graph?channel=stable-4.20&arch=amd64 accept=application/json"
                .to_string()
        ),
        "{requests:?}"
    );
    // signature-2 answered 404: the store holds one.
    assert!(requests
        .iter()
        .any(|r| r.starts_with(&format!("/sigs/sha256={hex}/signature-2"))));
    assert_eq!(
        std::fs::read(env.dir.join("sigs").join(format!("sha256-{hex}-1"))).unwrap(),
        b"\x89sig-one"
    );
    assert!(!env
        .dir
        .join("sigs")
        .join(format!("sha256-{hex}-2"))
        .exists());
}

/// oc-mirror v2's catalog rules on a catalog of their own: a package range filters every
/// channel (the default channel `stable` ends at 1.2.0, `fast` at 2.0.0) and leaves an
/// out-of-range head out; build metadata never separates `0.8.4-5` from
/// `0.8.4-5+0.1687199951.p`; mixing package and channel ranges, or `full` with a range, is
/// refused before anything is read, naming the file and the package.
#[test]
fn selection_rules_match_oc_mirror() {
    use prewarm_lab::ocp_content::{seed_selection_catalog, SELECTION_REPOSITORY};
    let env = lab("ocp-selection");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let sc = rt
        .block_on(seed_selection_catalog(&env.lab.redhat_target().unwrap()))
        .expect("seed the selection catalog");
    let catalog = format!("registry.redhat.io/{SELECTION_REPOSITORY}:v1");
    let want = |bundles: &[&str]| {
        let mut w: BTreeSet<(String, String)> = bundles
            .iter()
            .flat_map(|b| sc.bundles[*b].iter().map(|r| key(r)))
            .collect();
        w.insert((
            format!("registry.redhat.io/{SELECTION_REPOSITORY}"),
            sc.index.digest.clone(),
        ));
        w
    };
    let heads = job_with(
        &env,
        "heads.yaml",
        &format!("operators:\n- catalog: {catalog}\n  packages:\n  - name: two-channel\n"),
    );
    assert_eq!(
        plan(&env, &heads, &[]).0,
        want(&["two-channel.v1.2.0", "two-channel.v2.0.0"])
    );
    let ranged = job_with(
        &env,
        "ranged.yaml",
        &format!(
            "operators:\n- catalog: {catalog}\n  packages:\n  - name: two-channel\n    maxVersion: 1.1.0\n  - name: built\n    minVersion: 0.8.4-5\n    maxVersion: 0.8.4-5\n"
        ),
    );
    assert_eq!(
        plan(&env, &ranged, &[]).0,
        want(&[
            "two-channel.v1.0.0",
            "two-channel.v1.1.0",
            "built.v0.8.4-5",
            "built.v0.8.4-5+0.1687199951.p",
        ])
    );
    let from = job_with(
        &env,
        "from.yaml",
        &format!("operators:\n- catalog: {catalog}\n  packages:\n  - name: two-channel\n    minVersion: 1.2.0\n"),
    );
    // A package range selects within the default channel (`stable`) only: `fast`'s head
    // 2.0.0 is above minVersion but not in the default channel, so it is not kept.
    assert_eq!(plan(&env, &from, &[]).0, want(&["two-channel.v1.2.0"]));

    // Refused at load, exit 2, one line naming the file and the package.
    let refused = |out: std::process::Output, file: &str, package: &str, says: &str| {
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains(file)
                && err.contains(&format!("package `{package}`"))
                && err.contains(says),
            "{err}"
        );
    };
    let mixed = job_with(
        &env,
        "mixed.yaml",
        &format!("operators:\n- catalog: {catalog}\n  packages:\n  - name: two-channel\n    minVersion: 1.0.0\n    channels:\n    - name: fast\n      maxVersion: 2.0.0\n"),
    );
    refused(
        env.prewarm(&["plan", &mixed]),
        "mixed.yaml: operators[0].packages[0]",
        "two-channel",
        "are exclusive",
    );
    let isc = env.dir.join("full-range-isc.yaml");
    std::fs::write(
        &isc,
        format!("kind: ImageSetConfiguration\napiVersion: mirror.openshift.io/v2alpha1\nmirror:\n  operators:\n  - catalog: {catalog}\n    full: true\n    packages:\n    - name: built\n      maxVersion: 0.8.5-1\n"),
    )
    .unwrap();
    let plain = job_with(&env, "plain.yaml", "");
    refused(
        env.prewarm(&["plan", &plain, "--isc", isc.to_str().unwrap()]),
        "full-range-isc.yaml: mirror.operators[0].packages[0]",
        "built",
        "`full: true` cannot be mixed",
    );
    let bad = env.dir.join("bad-version-isc.yaml");
    std::fs::write(
        &bad,
        format!("kind: ImageSetConfiguration\napiVersion: mirror.openshift.io/v2alpha1\nmirror:\n  operators:\n  - catalog: {catalog}\n    packages:\n    - name: built\n      minVersion: notaversion\n"),
    )
    .unwrap();
    let out = env.prewarm(&["plan", &plain, "--isc", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("plain.yaml"), "{err}");
    refused(
        out,
        "bad-version-isc.yaml: mirror.operators[0].packages[0].minVersion: `notaversion` is not a semantic version",
        "built",
        "",
    );
}
