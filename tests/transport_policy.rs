//! The transport policy holds for destination clients and uploads as for sources: `copy` into
//! a registry behind the fault proxy (tests/common/faultproxy.rs) honours `--timeout` (an
//! upload PUT that stalls is abandoned and pushed again), `--retries` (an upload PUT answered
//! 503 is retried exactly that often), `--retry-after-cap` (a long Retry-After is cut to the
//! cap and the log says so) and the job's `rate_limits` for the destination host (the run
//! stops asking once its budget is spent).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::faultproxy::{Fault, FaultProxy, Rule};
use common::{assert_storage_intact, lab, plain_registry, read_report, Env};

/// The largest quay blob of the seed (an upload of it is a PUT carrying its hex).
fn largest_quay_blob(env: &Env) -> String {
    env.seed
        .images
        .iter()
        .filter(|i| i.reference.starts_with("quay.io/"))
        .flat_map(|i| i.blobs.iter().cloned())
        .max_by_key(|(_, s)| *s)
        .map(|(d, _)| d.trim_start_matches("sha256:").to_string())
        .unwrap()
}

fn put_rule(path_contains: &str, times: u64, fault: Fault) -> Rule {
    Rule {
        method: Some("PUT"),
        path_contains: path_contains.to_string(),
        times,
        fault,
    }
}

/// Upload PUTs the proxy saw for the blob with this hex.
fn puts_of(proxy: &FaultProxy, hex: &str) -> usize {
    proxy
        .seen()
        .iter()
        .filter(|s| s.method == "PUT" && s.path.contains("/blobs/uploads/") && s.path.contains(hex))
        .count()
}

fn copy(env: &Env, job: &Path, to: &str, extra: &[&str], report: &str) -> std::process::Output {
    let mut args = vec![
        "copy",
        job.to_str().unwrap(),
        "--to",
        to,
        "--to-insecure",
        "--report",
        report,
    ];
    args.extend_from_slice(extra);
    env.prewarm(&args)
}

/// The lab job with `rate_limits` for `host`.
fn job_with_budget(env: &Env, host: &str, max_requests: u64) -> PathBuf {
    let mut text = std::fs::read_to_string(&env.job).unwrap();
    text.push_str(&format!(
        "rate_limits:\n  \"{host}\":\n    max_requests: {max_requests}\n"
    ));
    let path = env.dir.join("job-budget.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn destination_uploads_honour_timeout_retries_retry_after_cap_and_budget() {
    let env = lab("transport-policy");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let big = largest_quay_blob(&env);

    // --timeout: the first upload PUT hangs (no headers, its body not taken) far longer than
    // the timeout; it is abandoned and the blob pushed again in a new session.
    let dest = plain_registry(&env.dir, "dest-timeout");
    let hang = put_rule(&big, 1, Fault::Hang(Duration::from_secs(600)));
    let proxy = rt.block_on(FaultProxy::start(&dest.addr, vec![hang]));
    let report = env.path("copy-timeout.json");
    let to = format!("{}/mirror", proxy.addr);
    let out = copy(&env, &env.job, &to, &["--timeout", "3"], &report);
    assert!(out.status.success());
    assert_eq!(proxy.fired(), vec![1]);
    assert_eq!(puts_of(&proxy, &big), 2, "the stalled PUT was sent again");
    let r = read_report(Path::new(&report));
    assert_eq!(r["summary"]["copied"], env.seed.images.len(), "{r:#}");
    assert!(r["summary"]["retries"].as_u64().unwrap() >= 1);
    drop(proxy);
    assert_storage_intact(&dest.storage);

    // --retries: two 503s on the PUT of one blob; with --retries 2 the blob fails after
    // exactly two PUTs, and its images with it.
    let dest = plain_registry(&env.dir, "dest-retries");
    let busy = put_rule(&big, 2, Fault::Status(503));
    let proxy = rt.block_on(FaultProxy::start(&dest.addr, vec![busy.clone()]));
    let to = format!("{}/mirror", proxy.addr);
    let report = env.path("copy-retries-2.json");
    let out = copy(&env, &env.job, &to, &["--retries", "2"], &report);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("503"), "{stderr}");
    assert_eq!(puts_of(&proxy, &big), 2);
    let r = read_report(Path::new(&report));
    assert!(r["summary"]["failed"].as_u64().unwrap() >= 1, "{r:#}");

    // --retries 3 gets through the same two 503s; a Retry-After of an hour on a blob HEAD is
    // cut to --retry-after-cap, and the log says so.
    let long_wait = Rule {
        method: Some("HEAD"),
        path_contains: "/blobs/".into(),
        times: 1,
        fault: Fault::TooMany { retry_after: 3600 },
    };
    let proxy = rt.block_on(FaultProxy::start(&dest.addr, vec![busy, long_wait]));
    let to = format!("{}/mirror", proxy.addr);
    let report = env.path("copy-retries-3.json");
    let out = copy(
        &env,
        &env.job,
        &to,
        &["--retries", "3", "--retry-after-cap", "1"],
        &report,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(proxy.fired(), vec![2, 1]);
    assert_eq!(puts_of(&proxy, &big), 3);
    assert!(
        stderr.contains("asked to wait 3600s (Retry-After); waiting the cap of 1s"),
        "{stderr}"
    );
    drop(proxy);
    assert_storage_intact(&dest.storage);

    // A rate budget for the destination host: the run stops asking it once the job's
    // max_requests are spent — uploads included — and says so per image.
    let dest = plain_registry(&env.dir, "dest-budget");
    let proxy = rt.block_on(FaultProxy::start(&dest.addr, vec![]));
    let job = job_with_budget(&env, &proxy.addr, 60);
    let to = format!("{}/mirror", proxy.addr);
    let report = env.path("copy-budget.json");
    let out = copy(&env, &job, &to, &[], &report);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "rate budget for registry `{}` spent: the job allows 60 requests per run",
            proxy.addr
        )),
        "{stderr}"
    );
    let seen = proxy.seen();
    assert!(
        seen.len() <= 60,
        "{} requests reached the destination",
        seen.len()
    );
    assert!(
        seen.iter()
            .any(|s| s.method == "PUT" && s.path.contains("/blobs/uploads/")),
        "the budget was spent while uploading"
    );
}
