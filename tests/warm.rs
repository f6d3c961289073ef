//! Warm and verify against the lab: real registries, real proxies, nginx orgs, skopeo checks.

mod common;

use std::collections::BTreeMap;

use common::{lab, read_report, sha256_hex, skopeo};

#[test]
fn warm_then_every_image_pulls_from_the_cache_with_upstreams_stopped() {
    let mut env = lab("warm-offline");
    let report = env.path("warm.json");
    let state = env.path("state.db");
    let out = env.prewarm(&[
        "warm",
        env.job.to_str().unwrap(),
        "--state",
        &state,
        "--report",
        &report,
    ]);
    assert!(out.status.success());
    let r = read_report(std::path::Path::new(&report));
    assert_eq!(r["summary"]["images"], env.seed.images.len());
    assert_eq!(r["summary"]["warmed"], env.seed.images.len(), "{r:#}");
    assert_eq!(r["summary"]["failed"], 0);

    // The cache holds every planned (repository, blob) pair, by its own storage, once its
    // background fetches have finished.
    env.settled_upstream_blob_gets();
    for image in &env.seed.images {
        let cache_repo = env
            .cache_path(&image.reference)
            .split_once('/')
            .unwrap()
            .1
            .to_string();
        for digest in image.blobs_for(&["linux/amd64", "linux/arm64"]).keys() {
            assert!(
                env.proxy_holds(&cache_repo, digest),
                "{cache_repo} lacks {digest}"
            );
        }
    }
    env.lab.stop_upstreams();
    let certs = env.path("no-certs");
    std::fs::create_dir_all(env.dir.join("pulled")).unwrap();
    for image in &env.seed.images {
        let by_digest = format!(
            "docker://{}@{}",
            env.cache_path(&image.reference),
            image.digest
        );
        // The exact manifest bytes, by digest, from the cache alone.
        let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &by_digest]);
        assert!(raw.status.success(), "{by_digest}");
        assert_eq!(
            format!("sha256:{}", sha256_hex(&raw.stdout)),
            image.digest,
            "{by_digest}"
        );
        // And every blob of it (the amd64 one of an index): a full pull.
        let dest = format!(
            "dir:{}",
            env.dir
                .join("pulled")
                .join(image.digest.replace(':', "-"))
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

    // verify, resolving through the cache since the upstreams are gone.
    let out = env.prewarm(&[
        "verify",
        env.job.to_str().unwrap(),
        "--resolve",
        "cache",
        "--no-state",
    ]);
    assert!(out.status.success());
}

#[test]
fn second_warm_fetches_no_blob_upstream_and_reports_cached() {
    let env = lab("warm-twice");
    let state = env.path("state.db");
    let job = env.job.to_str().unwrap();
    assert!(env
        .prewarm(&["warm", job, "--state", &state])
        .status
        .success());
    let first = env.settled_upstream_blob_gets();
    let before = env.upstream_blob_requests();
    let unique = env.seed.unique_blobs();
    assert!(
        first >= unique.len(),
        "the cold warm fetched {first} blobs upstream, expected at least {}",
        unique.len()
    );

    let report = env.path("again.json");
    let again = env.prewarm(&["warm", job, "--state", &state, "--report", &report]);
    assert!(again.status.success());
    // Honest words: the state shows prewarm warmed it before and the cache answered for it
    // now; a HEAD cannot show the cache held it before (a real Quay fetches to answer it).
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains(&format!(
            "{} confirmed by the cache (warmed before)",
            env.seed.images.len()
        )) && !stderr.contains("already cached"),
        "{stderr}"
    );
    let after = env.settled_upstream_blob_gets();
    let new: Vec<&String> = env
        .upstream_blob_requests()
        .iter()
        .skip(before.len())
        .cloned()
        .collect::<Vec<_>>()
        .leak()
        .iter()
        .collect();
    assert_eq!(
        after, first,
        "the second warm fetched blobs from an upstream: {new:?}"
    );
    let r = read_report(std::path::Path::new(&report));
    assert_eq!(r["summary"]["cached"], env.seed.images.len(), "{r:#}");
    assert_eq!(r["summary"]["warmed"], 0);
    for image in r["images"].as_array().unwrap() {
        assert_eq!(image["status"], "cached", "{image}");
        assert_eq!(image["bytes"], 0);
    }
}

#[test]
fn plan_lists_every_image_manifest_and_unique_blob() {
    let env = lab("plan");
    let out = env.prewarm(&["plan", env.job.to_str().unwrap(), "-o", "json"]);
    assert!(out.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let images = plan["images"].as_array().unwrap();
    assert_eq!(images.len(), env.seed.images.len());
    let by_ref: BTreeMap<String, String> = images
        .iter()
        .map(|i| {
            (
                i["source"].as_str().unwrap().to_string(),
                i["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for image in &env.seed.images {
        assert_eq!(
            by_ref.get(&image.reference),
            Some(&image.digest),
            "{}",
            image.reference
        );
    }
    // The job keeps linux/amd64 and linux/arm64: every blob of those platforms, nothing else.
    let mut expected = BTreeMap::new();
    for image in &env.seed.images {
        for (digest, size) in &image.blobs_for(&["linux/amd64", "linux/arm64"]) {
            expected.insert(digest.clone(), *size);
        }
    }
    let planned: BTreeMap<String, u64> = plan["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["digest"].as_str().unwrap().to_string(),
                b["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(planned, expected);
    let sizes: Vec<u64> = plan["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["size"].as_u64().unwrap())
        .collect();
    assert!(
        sizes.windows(2).all(|w| w[0] >= w[1]),
        "blobs are biggest first"
    );

    let text = env.prewarm(&["plan", env.job.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains(&format!("plan: {} images", env.seed.images.len())),
        "{stdout}"
    );
}
