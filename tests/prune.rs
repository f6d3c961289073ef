//! `prewarm prune` against the lab: after a job drops a release, prune lists exactly that
//! release's manifests not shared with the kept one, `--yes` deletes them from a registry with
//! deletes enabled, and every image of the current job still pulls by digest with skopeo.

mod common;

use std::collections::BTreeSet;

use common::{lab, skopeo, Env};
use prewarm::reference::Reference;
use prewarm_lab::ocp_content::RELEASE_REPOSITORY;

fn job(env: &Env, name: &str, releases: &[&str]) -> String {
    let base = std::fs::read_to_string(&env.job).unwrap();
    let mut text: String = base
        .lines()
        .filter(|l| !l.starts_with("image_lists:") && !l.starts_with("platforms:"))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str("platforms: [linux/amd64]\nreleases:\n");
    for r in releases {
        text.push_str(&format!("- quay.io/{RELEASE_REPOSITORY}:{r}-x86_64\n"));
    }
    let path = env.dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `(destination repository, manifest digest)` of every planned manifest, under `site/`.
fn planned(env: &Env, job: &str) -> BTreeSet<(String, String)> {
    let out = env.prewarm(&["plan", job, "-o", "json"]);
    assert!(out.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    plan["images"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| {
            let r: Reference = i["source"].as_str().unwrap().parse().unwrap();
            i["manifests"].as_array().unwrap().iter().map(move |d| {
                (
                    format!("site/{}", r.repository()),
                    d.as_str().unwrap().to_string(),
                )
            })
        })
        .collect()
}

/// The `(repository, digest)` of each `<verb> HOST/REPO@DIGEST…` line.
fn listed(stdout: &[u8], verb: &str, host: &str) -> BTreeSet<(String, String)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{verb} {host}/")))
        .map(|l| {
            let (repo, rest) = l.split_once('@').unwrap();
            (repo.to_string(), rest[..71].to_string())
        })
        .collect()
}

#[test]
fn prune_lists_then_deletes_exactly_the_dropped_release_and_keeps_the_rest_pullable() {
    let mut env = lab("prune");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(env.lab.seed_ocp()).expect("seed OCP content");
    let dest = env.lab.start_registry("prunedest").unwrap();
    let mut auth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&env.auth).unwrap()).unwrap();
    auth["auths"][&dest.address] = auth["auths"]["registry.redhat.io"].clone();
    std::fs::write(&env.auth, serde_json::to_vec(&auth).unwrap()).unwrap();
    let ca = env.lab.ca_cert.display().to_string();
    let to = format!("{}/site", dest.address);

    let both = job(&env, "both.yaml", &["4.20.2", "4.20.3"]);
    let kept = job(&env, "kept.yaml", &["4.20.2"]);
    let out = env.prewarm(&["copy", &both, "--to", &to, "--to-ca", &ca]);
    assert!(out.status.success());
    let all = planned(&env, &both);
    let needed = planned(&env, &kept);
    // 4.20.3's own: its release image, the console it ships, its cosign signature.
    let dropped: BTreeSet<_> = all.difference(&needed).cloned().collect();
    assert_eq!(dropped.len(), 3, "{dropped:?}");

    let out = env.prewarm(&["prune", &kept, "--to", &to, "--to-ca", &ca]);
    assert!(out.status.success());
    assert_eq!(listed(&out.stdout, "would delete", &dest.address), dropped);
    let out = env.prewarm(&["prune", &kept, "--to", &to, "--to-ca", &ca, "--dry-run"]);
    assert_eq!(listed(&out.stdout, "would delete", &dest.address), dropped);

    let out = env.prewarm(&["prune", &kept, "--to", &to, "--to-ca", &ca, "--yes"]);
    assert!(out.status.success());
    assert_eq!(listed(&out.stdout, "deleted", &dest.address), dropped);
    let out = env.prewarm(&["prune", &kept, "--to", &to, "--to-ca", &ca]);
    assert!(out.status.success());
    assert!(listed(&out.stdout, "would delete", &dest.address).is_empty());

    let certs = env.path("certs");
    let authfile = env.auth.display().to_string();
    std::fs::create_dir_all(env.dir.join("pulled")).unwrap();
    for (repo, digest) in &needed {
        let src = format!("docker://{}/{repo}@{digest}", dest.address);
        let target = format!(
            "dir:{}",
            env.dir.join("pulled").join(&digest[7..]).display()
        );
        let copy = skopeo(&[
            "copy",
            "--quiet",
            "--src-cert-dir",
            &certs,
            "--src-authfile",
            &authfile,
            &src,
            &target,
        ]);
        assert!(copy.status.success(), "{src} must still pull");
    }
    for (repo, digest) in &dropped {
        let src = format!("docker://{}/{repo}@{digest}", dest.address);
        let raw = skopeo(&[
            "inspect",
            "--raw",
            "--cert-dir",
            &certs,
            "--authfile",
            &authfile,
            &src,
        ]);
        assert!(!raw.status.success(), "{src} was deleted");
    }
}
