//! copy, export and import through the fault proxy (tests/common/faultproxy.rs): a flaky,
//! token-protected link in front of the quay.io upstream (copy, export) or in front of the
//! destination registry (import). Transient faults end in complete, verified results; nothing
//! corrupt is left in a bundle directory or a registry's storage.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::faultproxy::{Fault, FaultProxy, Rule, Shape};
use common::{assert_storage_intact, lab, plain_registry, read_report, sha256_hex, skopeo, Env};

/// The job with quay.io served through `proxy` (the fault proxy speaks plain HTTP).
fn job_with_quay_at(env: &Env, proxy: &str) -> PathBuf {
    let text = std::fs::read_to_string(&env.job).unwrap();
    let text = text.replace(
        &format!("endpoint: {}", env.lab.quay_addr()),
        &format!("endpoint: {proxy}"),
    );
    assert!(text.contains(proxy));
    let path = env.dir.join("job-flaky-source.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Blobs of quay images, largest first, with the image owning each.
fn quay_blobs(env: &Env) -> Vec<(String, u64)> {
    let mut all: BTreeMap<String, u64> = BTreeMap::new();
    for image in env
        .seed
        .images
        .iter()
        .filter(|i| i.reference.starts_with("quay.io/"))
    {
        for (d, s) in &image.blobs {
            all.insert(d.clone(), *s);
        }
    }
    let mut v: Vec<(String, u64)> = all.into_iter().filter(|(_, s)| *s > 4096).collect();
    v.sort_by_key(|(_, s)| std::cmp::Reverse(*s));
    v
}

/// Every seeded image is at `dest` under `repo_of(source repository)` with its source digest.
fn assert_all_at(env: &Env, dest: &str, repo_of: impl Fn(&str) -> String) {
    for image in &env.seed.images {
        let r: prewarm::reference::Reference = image.reference.parse().unwrap();
        let reference = format!(
            "docker://{dest}/{}@{}",
            repo_of(&r.repo_path()),
            image.digest
        );
        let out = skopeo(&["inspect", "--raw", "--tls-verify=false", &reference]);
        assert!(out.status.success(), "{reference}");
        assert_eq!(
            format!("sha256:{}", sha256_hex(&out.stdout)),
            image.digest,
            "{reference}"
        );
    }
}

fn hex(digest: &str) -> String {
    digest.trim_start_matches("sha256:").to_string()
}

fn mirror(repo_path: &str) -> String {
    format!("mirror/{}", repo_path.split_once('/').unwrap().1)
}

fn transient_rules(env: &Env) -> Vec<Rule> {
    let blobs = quay_blobs(env);
    vec![
        Rule::new(
            &blobs[0].0,
            1,
            Fault::ResetMidBody {
                after: blobs[0].1 / 2,
            },
        ),
        Rule::new("/manifests/", 2, Fault::Status(503)),
        Rule::new(&blobs[1].0, 1, Fault::FlipByte { at: 5 }),
        Rule::new(&blobs[2].0, 1, Fault::TooMany { retry_after: 1 }),
        Rule::new(&blobs[3].0, 1, Fault::ExpireToken),
        Rule::new(&blobs[4].0, 2, Fault::Status(502)),
    ]
}

#[test]
fn export_and_copy_from_a_flaky_source_end_complete_and_verified() {
    let env = lab("faults-export");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = rt.block_on(FaultProxy::start(
        &env.lab.quay_addr(),
        transient_rules(&env),
    ));
    let job = job_with_quay_at(&env, &proxy.addr);

    let bundle = env.dir.join("bundle");
    let report = env.path("export.json");
    let out = env.prewarm(&[
        "export",
        job.to_str().unwrap(),
        "-o",
        bundle.to_str().unwrap(),
        "--segment-size",
        "2M",
        "--report",
        &report,
    ]);
    assert!(out.status.success());
    let r = read_report(Path::new(&report));
    assert_eq!(r["summary"]["exported"], env.seed.images.len(), "{r:#}");
    assert!(
        r["summary"]["retries"].as_u64().unwrap() >= 6,
        "{}",
        r["summary"]
    );
    assert!(
        proxy.fired().iter().all(|n| *n > 0),
        "every fault was injected: {:?}",
        proxy.fired()
    );
    // Only finished segments and the bundle manifest under their final names.
    for entry in std::fs::read_dir(&bundle).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            name == "bundle.json" || name.ends_with(".zst"),
            "stray file {name} in the bundle"
        );
    }
    assert!(env
        .prewarm(&["bundle", "verify", bundle.to_str().unwrap()])
        .status
        .success());

    // The bundle imports whole: every digest at a fresh registry.
    let dest = plain_registry(&env.dir, "dest-import");
    let out = env.prewarm(&[
        "import",
        bundle.to_str().unwrap(),
        "--to",
        &format!("{}/mirror", dest.addr),
        "--to-insecure",
    ]);
    assert!(out.status.success());
    assert_all_at(&env, &dest.addr, mirror);
    assert_storage_intact(&dest.storage);

    // copy through the same flaky link (fresh faults) into another registry.
    let proxy = rt.block_on(FaultProxy::start(
        &env.lab.quay_addr(),
        transient_rules(&env),
    ));
    let job = job_with_quay_at(&env, &proxy.addr);
    let dest = plain_registry(&env.dir, "dest-copy");
    let report = env.path("copy.json");
    let out = env.prewarm(&[
        "copy",
        job.to_str().unwrap(),
        "--to",
        &format!("{}/mirror", dest.addr),
        "--to-insecure",
        "--report",
        &report,
    ]);
    assert!(out.status.success());
    let r = read_report(Path::new(&report));
    assert_eq!(r["summary"]["copied"], env.seed.images.len(), "{r:#}");
    assert!(
        proxy.fired().iter().all(|n| *n > 0),
        "every fault was injected: {:?}",
        proxy.fired()
    );
    assert_all_at(&env, &dest.addr, mirror);
    assert_storage_intact(&dest.storage);
}

#[test]
fn import_through_a_flaky_destination_completes_and_leaves_nothing_corrupt() {
    let env = lab("faults-import");
    let bundle = env.dir.join("bundle");
    assert!(env
        .prewarm(&[
            "export",
            env.job.to_str().unwrap(),
            "-o",
            bundle.to_str().unwrap()
        ])
        .status
        .success());

    let dest = plain_registry(&env.dir, "dest");
    let blobs = quay_blobs(&env);
    let rules = vec![
        Rule {
            method: Some("POST"),
            path_contains: "/blobs/uploads/".into(),
            times: 2,
            fault: Fault::Status(503),
        },
        // Upload PUTs carry the digest URL-encoded (`sha256%3A<hex>`): match the hex.
        Rule {
            method: Some("PUT"),
            path_contains: hex(&blobs[0].0),
            times: 1,
            fault: Fault::Status(502),
        },
        Rule {
            method: Some("HEAD"),
            path_contains: "/blobs/".into(),
            times: 2,
            fault: Fault::TooMany { retry_after: 1 },
        },
        Rule {
            method: Some("PUT"),
            path_contains: "/manifests/".into(),
            times: 1,
            fault: Fault::Status(504),
        },
        Rule {
            method: Some("PUT"),
            path_contains: hex(&blobs[1].0),
            times: 1,
            fault: Fault::ExpireToken,
        },
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = rt.block_on(FaultProxy::start(&dest.addr, rules));
    let to = format!("{}/mirror", proxy.addr);
    let report = env.path("import.json");
    let first = env.prewarm(&[
        "import",
        bundle.to_str().unwrap(),
        "--to",
        &to,
        "--to-insecure",
        "--report",
        &report,
    ]);
    // An upload the link broke is streamed again in a second pass over the bundle: one run.
    assert!(first.status.success());
    let r = read_report(Path::new(&report));
    assert_eq!(r["summary"]["copied"], env.seed.images.len(), "{r:#}");
    assert!(
        r["summary"]["retries"].as_u64().unwrap() >= 4,
        "{}",
        r["summary"]
    );
    assert!(
        proxy.fired().iter().all(|n| *n > 0),
        "every fault was injected: {:?}",
        proxy.fired()
    );
    drop(proxy);
    assert_all_at(&env, &dest.addr, mirror);
    assert_storage_intact(&dest.storage);
}

/// Progress lines of a phase (`export: 3/40 done, …`) in a non-terminal stderr.
fn progress_lines(stderr: &str, phase: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.starts_with(&format!("{phase}: ")) && l.contains(" done"))
        .count()
}

#[test]
fn export_through_a_capped_source_takes_at_most_1_3_times_copy_and_logs_while_a_blob_moves() {
    let env = lab("capped");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let shape = Shape {
        bandwidth: Some(80 * 1024),
        latency: std::time::Duration::ZERO,
    };
    let proxy = rt.block_on(FaultProxy::start_shaped(
        &env.lab.quay_addr(),
        vec![],
        shape,
    ));
    let job = job_with_quay_at(&env, &proxy.addr);
    let jobs = "8";

    let dest = plain_registry(&env.dir, "dest-capped");
    let started = std::time::Instant::now();
    let out = env.prewarm(&[
        "copy",
        job.to_str().unwrap(),
        "--to",
        &format!("{}/mirror", dest.addr),
        "--to-insecure",
        "--jobs",
        jobs,
    ]);
    let copy_time = started.elapsed().as_secs_f64();
    assert!(out.status.success());

    let bundle = env.dir.join("bundle-capped");
    let started = std::time::Instant::now();
    let out = env.prewarm(&[
        "export",
        job.to_str().unwrap(),
        "-o",
        bundle.to_str().unwrap(),
        "--jobs",
        jobs,
    ]);
    let export_time = started.elapsed().as_secs_f64();
    assert!(out.status.success());
    eprintln!("copy {copy_time:.1}s, export {export_time:.1}s");
    assert!(
        export_time <= 1.3 * copy_time,
        "export took {export_time:.1}s, copy {copy_time:.1}s: more than 1.3×"
    );

    // The largest blob alone takes longer than a log interval at this bandwidth, and the
    // plain log shows the run alive meanwhile: a line at least every few seconds.
    let largest = quay_blobs(&env)[0].1 as f64 / (80.0 * 1024.0);
    assert!(
        largest > 2.0 * prewarm::progress::LOG_EVERY.as_secs_f64(),
        "the largest blob moves in {largest:.1}s: too short for this check"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = (export_time / prewarm::progress::LOG_EVERY.as_secs_f64()) as usize - 1;
    assert!(
        progress_lines(&stderr, "export") >= expected.max(2),
        "expected {expected} progress lines in {export_time:.1}s:\n{stderr}"
    );
    assert!(env
        .prewarm(&["bundle", "verify", bundle.to_str().unwrap()])
        .status
        .success());
}
