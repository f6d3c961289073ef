//! Bad input and bad servers: each gives a clear one-line error naming the image or file and
//! a non-zero exit, and the other images of the run still complete.

mod common;

use common::{lab, read_report};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn malformed_job_file_is_one_line_naming_the_file_and_key() {
    let env = lab("bad-job");
    let bad = env.dir.join("bad.yaml");
    std::fs::write(&bad, "cache:\n  host: 127.0.0.1:1\n  hots: typo\n").unwrap();
    let out = env.prewarm(&["warm", bad.to_str().unwrap(), "--no-state"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("bad.yaml: cache.hots: unknown field `hots`"),
        "{err}"
    );

    std::fs::write(&bad, "images: [quay.io/ok/image:1\n").unwrap();
    let out = env.prewarm(&["plan", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("error: ") && stderr(&out).contains("bad.yaml"),
        "{}",
        stderr(&out)
    );

    std::fs::write(&bad, "images: ['quay.io/Bad/Ref:1']\n").unwrap();
    let out = env.prewarm(&["plan", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("images[0]") && err.contains("`quay.io/Bad/Ref:1`"),
        "{err}"
    );
}

#[test]
fn unknown_tag_unreachable_registry_and_bad_credentials_fail_alone() {
    let env = lab("bad-sources");
    // The seeded list plus an unknown tag and an image on a registry nobody listens for.
    let list = env.dir.join("images.txt");
    let mut text = std::fs::read_to_string(&list).unwrap();
    text.push_str("quay.io/openshift/origin-cli:no-such-tag\nunreachable.example/team/app:1\n");
    std::fs::write(&list, text).unwrap();
    let mut job = std::fs::read_to_string(&env.job).unwrap();
    job = job.replace(
        "registries:\n",
        "registries:\n  unreachable.example:\n    endpoint: 127.0.0.1:9\n    insecure: true\n",
    );
    std::fs::write(&env.job, job).unwrap();
    // Wrong password for registry.redhat.io.
    env.lab.write_auth_file(&env.auth, "wrong").unwrap();

    let report = env.path("report.json");
    let out = env.prewarm(&[
        "warm",
        env.job.to_str().unwrap(),
        "--no-state",
        "--retries",
        "2",
        "--report",
        &report,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let r = read_report(std::path::Path::new(&report));
    let images = r["images"].as_array().unwrap();
    let failed: Vec<&serde_json::Value> =
        images.iter().filter(|i| i["status"] == "failed").collect();
    let redhat = env
        .seed
        .images
        .iter()
        .filter(|i| i.reference.starts_with("registry.redhat.io/"))
        .count();
    assert_eq!(failed.len(), redhat + 2, "{r:#}");
    for image in &env.seed.images {
        let entry = images
            .iter()
            .find(|i| i["reference"] == image.reference.as_str())
            .unwrap();
        if image.reference.starts_with("registry.redhat.io/") {
            let e = entry["error"].as_str().unwrap();
            assert!(
                e.contains(
                    "registry `registry.redhat.io` refused the credentials for user `labuser`"
                ),
                "{e}"
            );
            assert!(!e.contains("wrong"), "the password leaked: {e}");
        } else {
            assert_eq!(entry["status"], "warmed", "{entry}");
        }
    }
    let line = |needle: &str| {
        err.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line for {needle} in {err}"))
            .to_string()
    };
    assert!(
        line("origin-cli:no-such-tag").contains("not found"),
        "{err}"
    );
    assert!(
        line("unreachable.example/team/app:1")
            .contains("cannot reach registry `unreachable.example` at 127.0.0.1:9"),
        "{err}"
    );
    assert!(!err.contains("wrong"), "the password leaked: {err}");
}

#[test]
fn a_corrupted_upstream_blob_is_reported_by_digest_and_image_and_never_counted() {
    let env = lab("corrupt");
    // A layer only one image has: corrupt it in the upstream's storage, same length.
    let unique = env.seed.unique_blobs();
    let mut owners = std::collections::BTreeMap::<&str, Vec<&str>>::new();
    for image in &env.seed.images {
        for (d, _) in &image.blobs {
            owners
                .entry(d.as_str())
                .or_default()
                .push(image.reference.as_str());
        }
    }
    let (victim_blob, victim_image) = env
        .seed
        .images
        .iter()
        .filter(|i| i.reference.starts_with("quay.io/") && i.platforms.len() == 1)
        .flat_map(|i| i.blobs.iter().map(move |(d, s)| (d, s, i)))
        .find(|(d, s, _)| owners[d.as_str()].len() == 1 && **s > 1024)
        .map(|(d, _, i)| (d.clone(), i.reference.clone()))
        .expect("a blob of one image");
    let digest: prewarm::reference::Digest = victim_blob.parse().unwrap();
    let path = prewarm_lab::blob_data_path(&env.lab.quay_storage, digest);
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, unique[&victim_blob]);
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let report = env.path("report.json");
    let state = env.path("state.db");
    let out = env.prewarm(&[
        "warm",
        env.job.to_str().unwrap(),
        "--state",
        &state,
        "--retries",
        "2",
        "--report",
        &report,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let r = read_report(std::path::Path::new(&report));
    let images = r["images"].as_array().unwrap();
    let entry = images
        .iter()
        .find(|i| i["reference"] == victim_image.as_str())
        .unwrap();
    assert_eq!(entry["status"], "failed");
    let e = entry["error"].as_str().unwrap();
    assert!(
        e.contains(&victim_blob) && e.contains("digest mismatch"),
        "{e}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("error: {victim_image}: ")));
    assert_eq!(r["summary"]["failed"], 1);
    assert_eq!(r["summary"]["warmed"], env.seed.images.len() - 1);
    // Not recorded as warm: the next run fetches it again rather than trusting a HEAD.
    let conn = rusqlite::Connection::open(&state).unwrap();
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM warmed WHERE digest = ?1",
            [&victim_blob],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
}
