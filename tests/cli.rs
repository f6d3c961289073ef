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
