//! Every command runs inside one wrapper (src/run.rs): `--state` is locked the same way by
//! every command that takes it, `--report` writes a report of one shape whatever the command,
//! with the exit status it implies, and `--metrics` the same metrics from that report.

mod common;
#[path = "support/prom.rs"]
mod prom;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{lab, read_report};

/// A job whose registries are a closed loopback port: nothing resolves.
fn unreachable_job(dir: &Path) -> String {
    let job = dir.join("job.yaml");
    std::fs::write(
        &job,
        "cache: {host: '127.0.0.1:9', insecure: true}\nimages: ['quay.io/a/b:1']\nregistries:\n  quay.io: {endpoint: '127.0.0.1:9', insecure: true}\n",
    )
    .unwrap();
    job.display().to_string()
}

fn prewarm(dir: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_prewarm"))
        .args(args)
        .args(["--retries", "1"])
        .env("XDG_STATE_HOME", dir.join("xdg"))
        .env_remove("REGISTRY_AUTH_FILE")
        .output()
        .unwrap();
    eprintln!(
        "prewarm {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn every_command_with_state_takes_its_lock() {
    let dir = std::env::temp_dir().join(format!("prewarm-run-lock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let job = unreachable_job(&dir);
    let state = dir.join("state.db");
    let state = state.to_str().unwrap();
    // Another run holds the state.
    let held = std::fs::File::create(dir.join("state.db.lock")).unwrap();
    held.lock().unwrap();
    let out_dir = dir.join("bundle");
    let out_dir = out_dir.to_str().unwrap();
    for args in [
        vec!["warm", &job],
        vec!["verify", &job],
        vec!["refresh", &job],
        vec!["plan", &job],
        vec!["copy", &job, "--to", "127.0.0.1:9"],
        vec!["export", &job, "-o", out_dir, "--site", "far"],
    ] {
        let mut args = args.clone();
        args.extend(["--state", state]);
        let out = prewarm(&dir, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("is in use by another prewarm run"),
            "{args:?}: {err}"
        );
    }
    // copy without --state or --site: the default state is a convenience; held elsewhere, the
    // run says so and goes on (here to fail resolving: exit 1, not 2).
    let default_lock = dir.join("xdg/prewarm/state.db.lock");
    std::fs::create_dir_all(default_lock.parent().unwrap()).unwrap();
    let held_default = std::fs::File::create(&default_lock).unwrap();
    held_default.lock().unwrap();
    let out = prewarm(&dir, &["copy", &job, "--to", "127.0.0.1:9"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("warning: copy: the state cannot be used"),
        "{err}"
    );
    drop((held, held_default));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The keys of a JSON object.
fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn every_command_with_a_report_writes_the_same_shape() {
    let mut env = lab("run-wrapper-reports");
    let dest = env.lab.start_registry("dest").unwrap();
    env.auth_with(&dest);
    let ca = env.ca();
    let job = env.job.to_str().unwrap().to_string();
    let state = env.path("state.db");
    let bundle = env.path("bundle");
    let to = format!("{}/mirror", dest.address);
    let runs: Vec<(&str, Vec<&str>)> = vec![
        ("warm", vec!["warm", &job, "--state", &state]),
        ("verify", vec!["verify", &job, "--state", &state]),
        ("refresh", vec!["refresh", &job, "--state", &state]),
        ("copy", vec!["copy", &job, "--to", &to, "--to-ca", &ca]),
        ("export", vec!["export", &job, "-o", &bundle]),
        (
            "import",
            vec!["import", &bundle, "--to", &to, "--to-ca", &ca],
        ),
    ];
    let mut shape: Option<(BTreeSet<String>, BTreeSet<String>)> = None;
    for (command, args) in runs {
        let report = env.path(&format!("{command}.json"));
        let metrics = env.path(&format!("{command}.prom"));
        let mut args = args.clone();
        args.extend(["--report", &report, "--metrics", &metrics]);
        let out = env.prewarm(&args);
        assert_eq!(out.status.code(), Some(0), "{command}");
        let r = read_report(Path::new(&report));
        assert_eq!(r["command"], command);
        let mut top = keys(&r);
        // refresh adds its own section beside the run's fields, and nothing else.
        if command == "refresh" {
            assert!(top.remove("refresh"), "{r:#}");
        }
        let summary = keys(&r["summary"]);
        match &shape {
            None => shape = Some((top, summary)),
            Some((t, s)) => {
                assert_eq!(&top, t, "{command}: top-level keys");
                assert_eq!(&summary, s, "{command}: summary keys");
            }
        }
        let images = r["images"].as_array().unwrap();
        assert_eq!(r["summary"]["images"], images.len(), "{command}");
        assert_eq!(r["summary"]["failed"], 0, "{command}");
        for image in images {
            for key in ["reference", "digest", "status", "bytes", "origin"] {
                assert!(image.get(key).is_some(), "{command}: {key} in {image}");
            }
        }
        assert_metrics_of(command, &metrics, &r);
    }
    let (top, summary) = shape.unwrap();
    for key in [
        "prewarm_version",
        "job",
        "cache",
        "started_at",
        "duration_seconds",
    ] {
        assert!(top.contains(key), "{key} in {top:?}");
    }
    for key in [
        "transfers",
        "bytes_moved",
        "bytes_planned",
        "requests",
        "copied",
    ] {
        assert!(summary.contains(key), "{key} in {summary:?}");
    }
}

/// The `--metrics` file of `command`'s run says what its report says.
fn assert_metrics_of(command: &str, path: &str, report: &serde_json::Value) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{command}: {path}: {e}"));
    let samples = prom::parse_prometheus(&text);
    let value = |name: &str, status: Option<&str>| {
        let found: Vec<f64> = samples
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && labels.get("command").map(String::as_str) == Some(command)
                    && labels.get("status").map(String::as_str) == status
            })
            .map(|s| s.2)
            .collect();
        assert_eq!(found.len(), 1, "{command}: {name} {status:?} in\n{text}");
        found[0]
    };
    let summary = &report["summary"];
    let count = |key: &str| summary[key].as_f64().unwrap();
    // Every image under one status, copy's, export's and import's too.
    let mut images = 0.0;
    for status in [
        "warmed", "cached", "present", "missing", "failed", "copied", "exported",
    ] {
        let n = value("prewarm_images", Some(status));
        assert_eq!(n, count(status), "{command}: {status}");
        images += n;
    }
    assert_eq!(images, count("images"), "{command}");
    assert_eq!(value("prewarm_failures", None), 0.0, "{command}");
    assert_eq!(
        value("prewarm_requests", None),
        count("requests"),
        "{command}"
    );
    assert_eq!(
        value("prewarm_bytes_transferred", None),
        count("bytes_transferred"),
        "{command}"
    );
    let finished = value("prewarm_last_run_timestamp_seconds", None);
    assert!(finished > 1.7e9, "{command}: {finished}");
    // No image failed: this run is the last success (as recorded a moment before).
    let success = value("prewarm_last_success_timestamp_seconds", None);
    assert!(
        success <= finished && success >= finished - 5.0,
        "{command}: {success} {finished}"
    );
}
