//! `prewarm prune` against the lab: after a job drops a release, prune lists exactly that
//! release's manifests not shared with the kept one, `--yes` deletes them from a registry with
//! deletes enabled, and every image of the current job still pulls by digest with skopeo.
//!
//! `prewarm prune --quay` against the Quay test double (tests/quay_double), whose cache orgs
//! hold what warming a job of two lab releases through them would leave — the tags of what was
//! pulled by tag, hidden temporary tags for what was pulled by digest, with the digests of the
//! lab's real plan, so the mapping back to the upstream is real. The job then drops one
//! release: the dry run lists exactly that release's tags not shared with the kept one and
//! changes nothing, `--yes` deletes exactly those (a refused DELETE fails its entry and exit
//! 1, the rest still go), listing again proves it, and the JSON report says what happened to
//! each.

mod common;
mod quay_double;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use common::{lab, skopeo, Env};
use prewarm::reference::Reference;
use prewarm_lab::ocp_content::RELEASE_REPOSITORY;
use quay_double::{ProxyConfig, QuayDouble, TOKEN};

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
    plan(env, job)
        .into_iter()
        .flat_map(|p| {
            let repo = format!("site/{}", p.source_repository);
            p.manifests.into_iter().map(move |d| (repo.clone(), d))
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

    let rep = env.path("prune-report.json");
    let out = env.prewarm(&[
        "prune", &kept, "--to", &to, "--to-ca", &ca, "--yes", "--report", &rep,
    ]);
    assert!(out.status.success());
    assert_eq!(listed(&out.stdout, "deleted", &dest.address), dropped);
    // The report names each manifest deleted, as the lines do.
    let r = common::read_report(Path::new(&rep));
    let reported: BTreeSet<(String, String)> = r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["outcome"], "deleted", "{e}");
            let repo = e["repository"].as_str().unwrap();
            let repo = repo.strip_prefix(&format!("{}/", dest.address)).unwrap();
            (repo.to_string(), e["digest"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(reported, dropped);
    assert_eq!(
        (r["dry_run"].as_bool(), r["failed"].as_u64()),
        (Some(false), Some(0))
    );
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

/// One planned image: its cache-org repository, its tag if pulled by tag, its manifests.
struct Planned {
    /// The repository as the source names it.
    source_repository: String,
    repository: String,
    tag: Option<String>,
    digest: String,
    is_list: bool,
    manifests: Vec<String>,
}

fn plan(env: &Env, job: &str) -> Vec<Planned> {
    let out = env.prewarm(&["plan", job, "-o", "json"]);
    assert!(out.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    plan["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let r: Reference = i["source"].as_str().unwrap().parse().unwrap();
            let media = i["media_type"].as_str().unwrap();
            Planned {
                source_repository: r.repository().to_string(),
                repository: format!(
                    "{}/{}",
                    prewarm::job::default_org(r.registry()),
                    r.repository()
                ),
                tag: r.tag().map(str::to_string),
                digest: i["digest"].as_str().unwrap().to_string(),
                is_list: media.contains("index") || media.contains("list"),
                manifests: i["manifests"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_str().unwrap().to_string())
                    .collect(),
            }
        })
        .collect()
}

fn prune_quay(env: &Env, quay: &QuayDouble, job: &str, extra: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_prewarm"))
        .args(["prune", job, "--quay", &quay.host(), "--to-insecure"])
        .args(extra)
        .arg("--authfile")
        .arg(&env.auth)
        .env_remove("REGISTRY_AUTH_FILE")
        .env("PREWARM_QUAY_TOKEN", TOKEN)
        .env("XDG_STATE_HOME", env.dir.join("xdg-state"))
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("prune {}: {}\n{all}", extra.join(" "), out.status);
    assert!(!all.contains(TOKEN), "the token leaked into the output");
    out
}

/// The `(repository, tag)` of each `<verb> HOST/REPO:TAG (…` line.
fn listed_tags(out: &Output, verb: &str, host: &str) -> BTreeSet<(String, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{verb} {host}/")))
        .map(|l| {
            let (at, _) = l.split_once(" (").unwrap();
            let (repo, tag) = at.rsplit_once(':').unwrap();
            (repo.to_string(), tag.to_string())
        })
        .collect()
}

fn report_entries(path: &Path) -> Vec<(String, String, String)> {
    let r = common::read_report(path);
    r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let repo = e["repository"].as_str().unwrap();
            let (_, repo) = repo.split_once('/').unwrap();
            assert_eq!(e["tags"].as_array().unwrap().len(), 1);
            (
                repo.to_string(),
                e["tags"][0].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn prune_through_quays_api_lists_then_deletes_exactly_the_dropped_releases_tags() {
    let env = lab("prune-quay");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(env.lab.seed_ocp()).expect("seed OCP content");
    let both = job(&env, "both.yaml", &["4.20.2", "4.20.3"]);
    let kept = job(&env, "kept.yaml", &["4.20.2"]);
    let all = plan(&env, &both);
    let needed = plan(&env, &kept);

    // What warming `both` through the cache orgs leaves on Quay: a tag per image pulled by
    // tag, a hidden temporary tag per manifest pulled by digest.
    let quay = QuayDouble::start();
    quay.state().repos_per_page = 1;
    quay.add_org("cache_quay_io", None);
    for (n, p) in all.iter().enumerate() {
        match &p.tag {
            Some(t) => quay.add_tag(&p.repository, t, &p.digest, p.is_list, false),
            None => quay.add_tag(
                &p.repository,
                &format!("$temp-{n}"),
                &p.digest,
                p.is_list,
                true,
            ),
        }
        for (k, child) in p.manifests.iter().skip(1).enumerate() {
            quay.add_tag(&p.repository, &format!("$temp-{n}-{k}"), child, false, true);
        }
    }
    // Other names for what the kept release needs — more than one page of tags (Quay lists at
    // most 100 a page) — are kept: their manifest is needed.
    let release = needed
        .iter()
        .find(|p| p.repository.ends_with(RELEASE_REPOSITORY))
        .unwrap();
    for i in 0..105 {
        quay.add_tag(
            &release.repository,
            &format!("kept-{i}"),
            &release.digest,
            release.is_list,
            false,
        );
    }
    // Tags the kept release no longer pulls but whose manifests it does need.
    let child = needed.iter().find(|p| p.manifests.len() > 1);
    if let Some(c) = child {
        quay.add_tag(&c.repository, "a-child", &c.manifests[1], false, false);
    }

    // Expected: the visible tags of `both` whose name `kept` does not pull into that
    // repository and whose manifest `kept` does not need there.
    let kept_tags: BTreeSet<(String, String)> = needed
        .iter()
        .filter_map(|p| p.tag.clone().map(|t| (p.repository.clone(), t)))
        .collect();
    let kept_manifests: BTreeSet<(String, String)> = needed
        .iter()
        .flat_map(|p| {
            p.manifests
                .iter()
                .map(|d| (p.repository.clone(), d.clone()))
        })
        .collect();
    let dropped: BTreeSet<(String, String)> = all
        .iter()
        .filter_map(|p| {
            p.tag
                .clone()
                .map(|t| (p.repository.clone(), t, p.digest.clone()))
        })
        .filter(|(r, t, d)| {
            !kept_tags.contains(&(r.clone(), t.clone()))
                && !kept_manifests.contains(&(r.clone(), d.clone()))
        })
        .map(|(r, t, _)| (r, t))
        .collect();
    // 4.20.3's own tags: its release image and its cosign signature.
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    assert!(
        dropped.iter().any(|(_, t)| t == "4.20.3-x86_64"),
        "{dropped:?}"
    );

    let host = quay.host();
    let before = quay.live_tags();
    // No token: one line, before the plan is made or Quay asked.
    let out = Command::new(env!("CARGO_BIN_EXE_prewarm"))
        .args(["prune", &kept, "--quay", &quay.host(), "--to-insecure"])
        .arg("--authfile")
        .arg(&env.auth)
        .env_remove("PREWARM_QUAY_TOKEN")
        .env("XDG_STATE_HOME", env.dir.join("xdg-state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no Quay token") && !err.contains("resolve"),
        "{err}"
    );
    assert!(quay.state().log.is_empty());
    // An org without a proxy-cache config holds what was pushed, not cached: left alone.
    let out = prune_quay(&env, &quay, &kept, &["--yes"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cache_quay_io: not a proxy-cache org"));
    assert_eq!(quay.live_tags(), before);
    assert!(quay.writes().is_empty(), "{:?}", quay.writes());
    quay.state()
        .orgs
        .get_mut("cache_quay_io")
        .unwrap()
        .proxycache = Some(ProxyConfig {
        upstream_registry: "quay.io".into(),
        username: None,
        password: None,
        expiration_s: 86400,
        insecure: false,
    });
    quay.clear_log();
    let rep = env.dir.join("prune-report.json");
    let rep_s = rep.display().to_string();
    let out = prune_quay(&env, &quay, &kept, &["--report", &rep_s]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(listed_tags(&out, "would delete", &host), dropped);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains(&format!(
            "upstream quay.io/{RELEASE_REPOSITORY}:4.20.3-x86_64"
        )),
        "each entry names its upstream reference:\n{text}"
    );
    assert_eq!(quay.live_tags(), before, "a dry run deletes nothing");
    assert!(quay.writes().is_empty(), "{:?}", quay.writes());
    let entries = report_entries(&rep);
    assert_eq!(entries.len(), dropped.len());
    assert!(entries.iter().all(|e| e.2 == "would_delete"), "{entries:?}");
    assert_eq!(common::read_report(&rep)["dry_run"], true);
    // Every repository page and every tag page was read.
    let log: Vec<String> = quay.state().log.iter().map(|r| r.path.clone()).collect();
    assert!(log.iter().any(|p| p.contains("next_page=")), "{log:?}");
    assert!(
        log.iter()
            .any(|p| p.contains("/tag/?onlyActiveTags=true&limit=100&page=2")),
        "{log:?}"
    );

    // --yes: one tag refused (an immutable tag answers 409), the others deleted.
    let (stuck_repo, stuck_tag) = dropped
        .iter()
        .find(|(_, t)| t != "4.20.3-x86_64")
        .unwrap()
        .clone();
    quay.set_immutable(&stuck_repo, &stuck_tag);
    quay.clear_log();
    let out = prune_quay(&env, &quay, &kept, &["--yes", "--report", &rep_s]);
    assert_eq!(out.status.code(), Some(1), "a failed delete is exit 1");
    let mut gone = dropped.clone();
    gone.remove(&(stuck_repo.clone(), stuck_tag.clone()));
    assert_eq!(listed_tags(&out, "deleted", &host), gone);
    assert_eq!(
        listed_tags(&out, "failed to delete", &host),
        [(stuck_repo.clone(), stuck_tag.clone())].into()
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("Cannot delete immutable tag '{stuck_tag}'")),
        "Quay's own words for the failure"
    );
    let deletes: BTreeSet<String> = quay.writes().into_iter().collect();
    let want: BTreeSet<String> = dropped
        .iter()
        .map(|(r, t)| format!("DELETE /api/v1/repository/{r}/tag/{t}"))
        .collect();
    assert_eq!(deletes, want, "one DELETE per listed tag, nothing else");
    let after: Vec<_> = quay.live_tags();
    let expect: Vec<_> = before
        .iter()
        .filter(|(r, t, _)| !gone.contains(&(r.clone(), t.clone())))
        .cloned()
        .collect();
    assert_eq!(after, expect, "exactly the listed tags are gone");
    let mut entries = report_entries(&rep);
    entries.sort();
    let mut want: Vec<_> = dropped
        .iter()
        .map(|(r, t)| {
            let outcome = if *r == stuck_repo && *t == stuck_tag {
                "failed"
            } else {
                "deleted"
            };
            (r.clone(), t.clone(), outcome.to_string())
        })
        .collect();
    want.sort();
    assert_eq!(entries, want);
    let r = common::read_report(&rep);
    let failed = r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["outcome"] == "failed")
        .unwrap();
    assert!(
        failed["error"].as_str().unwrap().contains("HTTP 409"),
        "{failed}"
    );
    assert_eq!(
        (r["deleted"].as_u64(), r["failed"].as_u64()),
        (Some(gone.len() as u64), Some(1))
    );

    // Listing again: only the refused tag is left. Once it may go, a rerun finishes the job.
    let out = prune_quay(&env, &quay, &kept, &[]);
    assert_eq!(
        listed_tags(&out, "would delete", &host),
        [(stuck_repo.clone(), stuck_tag.clone())].into()
    );
    quay.state()
        .repos
        .get_mut(&stuck_repo)
        .unwrap()
        .iter_mut()
        .for_each(|t| t.immutable = false);
    let out = prune_quay(&env, &quay, &kept, &["--yes"]);
    assert_eq!(out.status.code(), Some(0));
    let out = prune_quay(&env, &quay, &kept, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(listed_tags(&out, "would delete", &host).is_empty());
    // What the kept release needs is all still there.
    let live = quay.live_tags();
    for p in &needed {
        if let Some(t) = &p.tag {
            assert!(
                live.iter()
                    .any(|(r, n, d)| *r == p.repository && n == t && *d == p.digest),
                "{}:{t} must stay",
                p.repository
            );
        }
    }
    assert_eq!(
        live.iter()
            .filter(|(_, n, _)| n.starts_with("kept-"))
            .count(),
        105
    );
}
