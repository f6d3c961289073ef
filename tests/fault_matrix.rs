//! warm through a flaky, token-protected link to the cache (the fault proxy of
//! tests/common/faultproxy.rs in front of the lab's nginx front): transient faults end in a
//! complete, verified cache with the retries counted; a broken body resumes with Range;
//! permanent faults end in a clear error naming image and blob after the others completed;
//! nothing corrupt is left in the cache's storage.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::faultproxy::{Fault, FaultProxy, Rule};
use common::{assert_storage_intact, lab, read_report, Env};

/// The lab's job with the cache reached through `proxy` instead of the nginx front.
fn job_through(env: &Env, proxy: &str) -> PathBuf {
    let text = std::fs::read_to_string(&env.job).unwrap();
    let text = text.replace(
        &format!("host: {}", env.lab.front_addr()),
        &format!("host: {proxy}"),
    );
    let path = env.dir.join("job-faults.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Blobs by size (largest first) that belong to exactly one single-platform quay image.
fn lone_blobs(env: &Env) -> Vec<(String, u64, String)> {
    let mut owners = BTreeMap::<&str, Vec<&str>>::new();
    for image in &env.seed.images {
        for (d, _) in &image.blobs {
            owners
                .entry(d.as_str())
                .or_default()
                .push(image.reference.as_str());
        }
    }
    let mut out: Vec<(String, u64, String)> = env
        .seed
        .images
        .iter()
        .filter(|i| i.reference.starts_with("quay.io/") && i.platforms.len() == 1)
        .flat_map(|i| {
            i.blobs
                .iter()
                .map(move |(d, s)| (d.clone(), *s, i.reference.clone()))
        })
        .filter(|(d, s, _)| owners[d.as_str()].len() == 1 && *s > 4096)
        .collect();
    out.sort_by_key(|b| std::cmp::Reverse(b.1));
    out
}

#[test]
fn transient_faults_end_complete_and_a_broken_blob_resumes_with_range() {
    let env = lab("faults-transient");
    let state = env.path("state.db");
    // A first warm fills the cache, so the flaky link below is the only trouble left and the
    // cache can answer Range requests from its own storage.
    assert!(env
        .prewarm(&["warm", env.job.to_str().unwrap(), "--state", &state])
        .status
        .success());
    env.settled_upstream_blob_gets();

    let blobs = lone_blobs(&env);
    let (big, big_size, _) = blobs[0].clone();
    let rules = vec![
        Rule::new(
            &big,
            1,
            Fault::ResetMidBody {
                after: big_size / 2,
            },
        ),
        Rule::new("/manifests/", 3, Fault::Status(503)),
        Rule::new(&blobs[1].0, 1, Fault::TooMany { retry_after: 1 }),
        Rule::new(&blobs[2].0, 1, Fault::Truncate { keep: 100 }),
        Rule::new(&blobs[3].0, 1, Fault::FlipByte { at: 10 }),
        Rule::new(&blobs[4].0, 1, Fault::ExpireToken),
        Rule::new(&blobs[5].0, 2, Fault::Status(502)),
        Rule::new(&blobs[6].0, 1, Fault::Status(504)),
        Rule::new(&blobs[7].0, 1, Fault::Stall(Duration::from_secs(4))),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = rt.block_on(FaultProxy::start(&env.lab.front_addr(), rules));
    let job = job_through(&env, &proxy.addr);
    let report = env.path("faults.json");
    let out = env.prewarm(&[
        "warm",
        job.to_str().unwrap(),
        "--no-state",
        "--timeout",
        "1",
        "--report",
        &report,
    ]);
    assert!(out.status.success());
    let r = read_report(Path::new(&report));
    eprintln!("fired {:?}", proxy.fired());
    for s in proxy
        .seen()
        .iter()
        .filter(|s| s.fault.is_some() || s.range.is_some())
    {
        eprintln!("seen {s:?}");
    }
    assert_eq!(r["summary"]["warmed"], env.seed.images.len(), "{r:#}");
    // 3×503 + 429 + truncated + flipped + 2×502 + 504 + reset + stall (the token is renewed,
    // not retried).
    assert!(
        r["summary"]["retries"].as_u64().unwrap() >= 11,
        "retries counted: {}",
        r["summary"]
    );
    let big_gets: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.path.contains(&big))
        .collect();
    assert!(
        r["summary"]["resumed"].as_u64().unwrap() >= 2,
        "the reset and the stall resume: {} {big_gets:#?}",
        r["summary"]
    );
    assert_eq!(
        proxy.fired(),
        vec![1, 3, 1, 1, 1, 1, 2, 1, 1],
        "every fault was injected"
    );
    // The broken blob was resumed from where it broke, not fetched again from byte 0.
    let gets: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.path.contains(&big) && s.method == "GET")
        .collect();
    assert!(
        gets.iter().any(|s| s
            .range
            .as_deref()
            .is_some_and(|r| r != "bytes=0-" && r.starts_with("bytes="))),
        "no Range request after the reset: {gets:#?}"
    );
    drop(proxy);
    assert_storage_intact(&env.lab.proxy_quay_storage);
    assert_storage_intact(&env.lab.proxy_redhat_storage);
}

#[test]
fn permanent_faults_name_image_and_blob_after_the_others_complete() {
    let env = lab("faults-permanent");
    let blobs = lone_blobs(&env);
    let (dead, _, dead_image) = blobs[0].clone();
    // A blob of another image that is always corrupted in transit.
    let (flipped, _, flipped_image) = blobs.iter().find(|b| b.2 != dead_image).cloned().unwrap();
    let rules = vec![
        Rule::new(&dead, u64::MAX, Fault::Status(500)),
        Rule::new(&flipped, u64::MAX, Fault::FlipByte { at: 0 }),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = rt.block_on(FaultProxy::start(&env.lab.front_addr(), rules));
    let job = job_through(&env, &proxy.addr);
    let report = env.path("faults.json");
    let out = env.prewarm(&[
        "warm",
        job.to_str().unwrap(),
        "--no-state",
        "--retries",
        "3",
        "--report",
        &report,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let r = read_report(Path::new(&report));
    let images = r["images"].as_array().unwrap();
    let status = |reference: &str| {
        images
            .iter()
            .find(|i| i["reference"] == reference)
            .unwrap()
            .clone()
    };
    let d = status(&dead_image);
    assert_eq!(d["status"], "failed");
    assert!(
        d["error"].as_str().unwrap().contains(&dead)
            && d["error"].as_str().unwrap().contains("500"),
        "{d}"
    );
    let f = status(&flipped_image);
    assert_eq!(f["status"], "failed");
    assert!(
        f["error"].as_str().unwrap().contains(&flipped)
            && f["error"].as_str().unwrap().contains("digest mismatch"),
        "{f}"
    );
    assert_eq!(r["summary"]["failed"], 2);
    assert_eq!(r["summary"]["warmed"], env.seed.images.len() - 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("error: {dead_image}: "))
            && stderr.contains(&format!("error: {flipped_image}: ")),
        "{stderr}"
    );
    drop(proxy);
    env.settled_upstream_blob_gets();
    assert_storage_intact(&env.lab.proxy_quay_storage);
}
