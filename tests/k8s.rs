//! examples/k8s/: every manifest parses as YAML, has the fields Kubernetes needs for its kind,
//! runs prewarm with arguments prewarm itself accepts, mounts what those arguments name (the
//! job from the ConfigMap, the auth file from a Secret), and the embedded job file is valid.

use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;
use serde_yaml_ng::Value;

fn docs(name: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/k8s")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    get(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string"))
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| match k.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[k],
    })
}

/// The pod spec's one container: its args parse as a prewarm command line, and every path
/// they name lies on a mounted volume of the right source. Returns the args.
fn check_pod(pod: &Value) -> Vec<String> {
    assert_eq!(s(pod, "restartPolicy"), "Never");
    let containers = get(pod, "containers").as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let args: Vec<String> = get(c, "args")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let cli = prewarm::cli::Cli::try_parse_from(
        std::iter::once("prewarm".to_string()).chain(args.clone()),
    )
    .unwrap_or_else(|e| panic!("prewarm rejects {args:?}: {e}"));
    let authfile = cli.global.authfile.expect("--authfile");
    let volumes = get(pod, "volumes").as_sequence().unwrap();
    let mounted = |file: &Path| -> &Value {
        let mount = get(c, "volumeMounts")
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| file.starts_with(s(m, "mountPath")))
            .unwrap_or_else(|| panic!("{} is on no mounted volume", file.display()));
        volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("no volume {:?}", mount["name"]))
    };
    assert_eq!(
        s(mounted(&authfile), "secret.secretName"),
        "prewarm-auth",
        "auth from a Secret"
    );
    let job_file = PathBuf::from(&args[1]);
    assert_eq!(s(mounted(&job_file), "configMap.name"), "prewarm-job");
    if let Some(i) = args.iter().position(|a| a == "--state") {
        let v = mounted(Path::new(&args[i + 1]));
        assert_eq!(s(v, "persistentVolumeClaim.claimName"), "prewarm-state");
    }
    args
}

#[test]
fn refresh_cronjob() {
    let d = docs("refresh-cronjob.yaml");
    assert_eq!(d.len(), 2);
    assert_eq!(s(&d[0], "kind"), "PersistentVolumeClaim");
    assert_eq!(s(&d[0], "metadata.name"), "prewarm-state");
    let cron = &d[1];
    assert_eq!(s(cron, "apiVersion"), "batch/v1");
    assert_eq!(s(cron, "kind"), "CronJob");
    assert_eq!(s(cron, "spec.schedule").split_whitespace().count(), 5);
    assert_eq!(s(cron, "spec.concurrencyPolicy"), "Forbid");
    let args = check_pod(get(cron, "spec.jobTemplate.spec.template.spec"));
    assert_eq!(args[0], "refresh");
    for flag in ["--state", "--metrics", "--report", "--stale-after"] {
        assert!(args.iter().any(|a| a == flag), "{flag}");
    }
}

#[test]
fn sharded_warm_indexed_job() {
    let d = docs("warm-indexed-job.yaml");
    assert_eq!(d.len(), 1);
    let job = &d[0];
    assert_eq!(s(job, "apiVersion"), "batch/v1");
    assert_eq!(s(job, "kind"), "Job");
    assert_eq!(s(job, "spec.completionMode"), "Indexed");
    let completions = get(job, "spec.completions").as_u64().unwrap();
    assert_eq!(get(job, "spec.parallelism").as_u64(), Some(completions));
    // What Kubernetes sets on the pod of the last index (only this test reads it).
    std::env::set_var("JOB_COMPLETION_INDEX", (completions - 1).to_string());
    let args = check_pod(get(job, "spec.template.spec"));
    assert_eq!(args[0], "warm");
    let shard = &args[args.iter().position(|a| a == "--shard").unwrap() + 1];
    assert_eq!(
        shard,
        &format!("auto/{completions}"),
        "one shard per completion index"
    );
}

#[test]
fn job_configmap_holds_a_valid_job() {
    let d = docs("job-configmap.yaml");
    assert_eq!(s(&d[0], "kind"), "ConfigMap");
    assert_eq!(s(&d[0], "metadata.name"), "prewarm-job");
    let text = d[0]["data"]["job.yaml"].as_str().expect("data.job.yaml");
    let job = prewarm::job::Job::parse(text, Path::new("job.yaml")).unwrap();
    assert!(!job.refresh.immutable.is_empty());
    assert!(job.rate_limits.contains_key("registry.redhat.io"));
    assert!(
        !text.contains("password") && !text.contains("auth:"),
        "no secrets in the ConfigMap"
    );
}
