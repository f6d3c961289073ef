//! The binary's surface: every subcommand explains itself with an example.

use std::process::Command;

#[test]
fn every_subcommand_help_has_an_example() {
    for sub in ["plan", "warm", "verify"] {
        let out = Command::new(env!("CARGO_BIN_EXE_prewarm"))
            .args([sub, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Example:") && text.contains(&format!("prewarm {sub} job.yaml")),
            "{sub}: {text}"
        );
    }
}

#[test]
fn a_missing_job_file_is_one_line_and_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_prewarm"))
        .args(["plan", "/nonexistent/job.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot read job file /nonexistent/job.yaml"),
        "{err}"
    );
}

#[test]
fn refresh_checks_releases_and_catalogs_and_names_each_it_cannot_reach() {
    let dir = std::env::temp_dir().join(format!("prewarm-cli-refresh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let job = dir.join("job.yaml");
    // Both upstreams on a closed loopback port: each tag's HEAD fails, and each is named.
    std::fs::write(
        &job,
        "cache: {host: '127.0.0.1:9', insecure: true}\nregistries:\n  quay.io: {endpoint: '127.0.0.1:9', insecure: true}\n  registry.redhat.io: {endpoint: '127.0.0.1:9', insecure: true}\nreleases: ['quay.io/openshift-release-dev/ocp-release:4.20.16-x86_64']\noperators:\n  - catalog: registry.redhat.io/redhat/redhat-operator-index:v4.20\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_prewarm"))
        .args([
            "refresh",
            job.to_str().unwrap(),
            "--retries",
            "1",
            "--state",
        ])
        .arg(dir.join("state.db"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("not refreshed"), "{err}");
    assert!(
        err.contains("error: quay.io/openshift-release-dev/ocp-release:4.20.16-x86_64: "),
        "{err}"
    );
    assert!(
        err.contains("error: registry.redhat.io/redhat/redhat-operator-index:v4.20: "),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
