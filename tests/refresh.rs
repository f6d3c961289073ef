//! `prewarm refresh` against the lab: HEAD-only no-op refreshes (counted in the upstreams'
//! access logs), a re-tag upstream warmed alone, immutable-tag rules, the state lock, a run
//! killed mid-way, the rate budget, and the metrics file.

mod common;
#[path = "support/prom.rs"]
mod prom;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{lab, read_report, Env};
use prewarm_lab::seed::{tar_layer, Compression, Format, ImageSpec, Pusher};

/// (method, path, user agent) of every request in a server's access log so far.
fn access(log: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(log).unwrap();
    text.lines()
        .filter(|l| !l.starts_with("time="))
        .filter_map(|l| {
            let (_, rest) = l.split_once("] \"")?;
            let (request, rest) = rest.split_once('"')?;
            let mut parts = request.split(' ');
            let (method, path) = (parts.next()?, parts.next()?);
            let agent = rest.trim_end().strip_suffix('"')?.rsplit_once('"')?.1;
            Some((method.to_string(), path.to_string(), agent.to_string()))
        })
        .collect()
}

/// Requests to both upstreams since `from` (per-server line counts).
fn upstream_since(env: &Env, from: &[usize; 2]) -> Vec<(String, String, String)> {
    [&env.lab.quay.log, &env.lab.redhat.log]
        .iter()
        .zip(from)
        .flat_map(|(log, &n)| access(log).into_iter().skip(n))
        .collect()
}

fn upstream_marks(env: &Env) -> [usize; 2] {
    [
        access(&env.lab.quay.log).len(),
        access(&env.lab.redhat.log).len(),
    ]
}

fn tags(env: &Env) -> Vec<String> {
    env.seed
        .references()
        .into_iter()
        .filter(|r| !r.contains('@'))
        .collect()
}

fn append_job(env: &Env, yaml: &str) {
    let mut text = std::fs::read_to_string(&env.job).unwrap();
    text.push_str(yaml);
    std::fs::write(&env.job, text).unwrap();
}

/// Wait until the proxies finished their background fetches (their logs stop growing).
fn settle(env: &Env) {
    env.settled_upstream_blob_gets();
}

#[test]
fn unchanged_refresh_only_heads_tags_and_a_retag_warms_exactly_that_image() {
    let env = lab("refresh-retag");
    let job = env.job.to_str().unwrap();
    let state = env.path("state.db");
    let first = env.path("first.json");
    let out = env.prewarm(&["refresh", job, "--state", &state, "--report", &first]);
    assert!(out.status.success());
    let r = read_report(Path::new(&first));
    let n = env.seed.images.len();
    assert_eq!(r["refresh"]["references"], n);
    assert_eq!(
        r["refresh"]["changes"].as_array().unwrap().len(),
        n,
        "all new"
    );
    assert_eq!(r["summary"]["warmed"], n, "{r:#}");
    assert_eq!(r["summary"]["failed"], 0);
    // Only tags were checked upstream; the digests were pinned.
    assert_eq!(r["refresh"]["checked"], tags(&env).len());
    settle(&env);

    // Nothing changed: one HEAD per tag upstream from prewarm, nothing through the cache.
    let marks = upstream_marks(&env);
    let front = access(&env.lab.front.log).len();
    let second = env.path("second.json");
    let out = env.prewarm(&[
        "refresh",
        job,
        "--state",
        &state,
        "--report",
        &second,
        "--stale-after",
        "1h",
    ]);
    assert!(out.status.success());
    let r = read_report(Path::new(&second));
    assert_eq!(
        r["refresh"]["changes"].as_array().unwrap().len(),
        0,
        "{r:#}"
    );
    assert_eq!(r["refresh"]["to_warm"], 0);
    assert_eq!(r["summary"]["images"], 0);
    assert_eq!(r["summary"]["warmed"], 0);
    let new = upstream_since(&env, &marks);
    let manifests: Vec<_> = new
        .iter()
        .filter(|(_, p, _)| p.contains("/manifests/"))
        .collect();
    assert!(
        manifests
            .iter()
            .all(|(m, _, ua)| m == "HEAD" && ua.starts_with("prewarm/")),
        "only prewarm's HEADs reach the upstreams for manifests: {manifests:?}"
    );
    assert_eq!(manifests.len(), tags(&env).len(), "{manifests:?}");
    let heads: Vec<String> = manifests
        .iter()
        .map(|(_, p, _)| p.rsplit_once('/').unwrap().1.to_string())
        .collect();
    assert!(
        heads.iter().all(|k| !k.starts_with("sha256:")),
        "no digest re-checked: {heads:?}"
    );
    assert!(
        new.iter().all(|(m, p, _)| m == "HEAD" || p == "/v2/"),
        "nothing but HEADs (and the /v2/ probe): {new:?}"
    );
    assert_eq!(
        access(&env.lab.front.log).len(),
        front,
        "the cache was not asked"
    );

    // Re-tag one image upstream: the next refresh warms exactly it and says old → new.
    let retagged = "quay.io/openshift/origin-cli:4.20";
    let old = env
        .seed
        .images
        .iter()
        .find(|i| i.reference == retagged)
        .unwrap()
        .digest
        .clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let layer = tar_layer(&[("usr/bin/oc", b"a newer oc".to_vec())], Compression::Gzip);
    let pushed = rt
        .block_on(async {
            let pusher = Pusher::new(&env.lab.quay_target()).await?;
            let spec = ImageSpec::linux(
                Format::Oci,
                "amd64",
                BTreeMap::from([("build".to_string(), "retagged".to_string())]),
                vec![layer.clone()],
            );
            pusher
                .push_image("openshift/origin-cli", Some("4.20"), &spec)
                .await
        })
        .unwrap();
    assert_ne!(pushed.digest, old);
    // --dry-run says what changed, asks the cache nothing and records nothing.
    let front = access(&env.lab.front.log).len();
    let out = env.prewarm(&[
        "refresh",
        job,
        "--state",
        &state,
        "--dry-run",
        "--stale-after",
        "1h",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{old} → {}", pushed.digest)));
    assert_eq!(
        access(&env.lab.front.log).len(),
        front,
        "a dry run warms nothing"
    );
    let third = env.path("third.json");
    let marks = upstream_marks(&env);
    let out = env.prewarm(&[
        "refresh",
        job,
        "--state",
        &state,
        "--report",
        &third,
        "--stale-after",
        "1h",
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("changed  {retagged}  {old} → {}", pushed.digest)),
        "{stdout}"
    );
    let r = read_report(Path::new(&third));
    let changes = r["refresh"]["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{r:#}");
    assert_eq!(changes[0]["reference"], retagged);
    assert_eq!(changes[0]["old"], old.as_str());
    assert_eq!(changes[0]["new"], pushed.digest.as_str());
    assert_eq!(r["summary"]["images"], 1);
    assert_eq!(r["summary"]["warmed"], 1);
    assert_eq!(r["images"][0]["digest"], pushed.digest.as_str());
    settle(&env);
    // Upstream, prewarm itself sent one HEAD per tag and fetched only the new manifest (by
    // digest, to plan it); the rest came from the proxy, warming through the cache (it HEADs
    // the tag upstream itself when a tag is pulled through it).
    let new = upstream_since(&env, &marks);
    let ours: Vec<_> = new
        .iter()
        .filter(|(_, p, ua)| ua.starts_with("prewarm/") && p.contains("/manifests/"))
        .collect();
    assert_eq!(
        ours.iter().filter(|(m, _, _)| m == "HEAD").count(),
        tags(&env).len()
    );
    let gets: Vec<_> = ours.iter().filter(|(m, _, _)| m == "GET").collect();
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert!(gets[0].1.ends_with(&format!(
        "/openshift/origin-cli/manifests/{}",
        pushed.digest
    )));
    assert!(
        new.iter()
            .any(|(_, p, ua)| !ua.starts_with("prewarm/") && p.contains("/openshift/origin-cli/")),
        "the warm went through the cache: {new:?}"
    );
    let cache_repo = env
        .cache_path(retagged)
        .split_once('/')
        .unwrap()
        .1
        .to_string();
    assert!(
        env.proxy_holds(&cache_repo, &layer.digest),
        "the new layer is in the cache"
    );
}

#[test]
fn immutable_rule_suppresses_its_head_and_metrics_parse() {
    let env = lab("refresh-immutable");
    append_job(
        &env,
        "refresh:\n  immutable: [semver, 'registry.redhat.io/ubi9/*:latest']\n",
    );
    let job = env.job.to_str().unwrap();
    let state = env.path("state.db");
    assert!(env
        .prewarm(&["refresh", job, "--state", &state])
        .status
        .success());
    settle(&env);
    let marks = upstream_marks(&env);
    let metrics = env.path("metrics/prewarm.prom");
    let report = env.path("again.json");
    let out = env.prewarm(&[
        "refresh",
        job,
        "--state",
        &state,
        "--stale-after",
        "1h",
        "--metrics",
        &metrics,
        "--report",
        &report,
    ]);
    assert!(out.status.success());
    let heads: Vec<String> = upstream_since(&env, &marks)
        .into_iter()
        .filter(|(m, p, _)| m == "HEAD" && p.contains("/manifests/"))
        .map(|(_, p, _)| p)
        .collect();
    // semver covers ocp-release:4.20.0-multi, the glob both ubi9 `latest` tags.
    for immutable in [
        "/v2/openshift-release-dev/ocp-release/manifests/4.20.0-multi",
        "/v2/ubi9/ubi/manifests/latest",
        "/v2/ubi9/ubi-minimal/manifests/latest",
    ] {
        assert!(
            !heads.iter().any(|h| h == immutable),
            "{immutable} was HEADed: {heads:?}"
        );
    }
    for mutable in [
        "/v2/openshift/origin-cli/manifests/4.20",
        "/v2/openshift4/ose-cli/manifests/v4.20",
    ] {
        assert!(
            heads.iter().any(|h| h == mutable),
            "{mutable} not HEADed: {heads:?}"
        );
    }
    assert_eq!(heads.len(), tags(&env).len() - 3, "{heads:?}");
    let r = read_report(Path::new(&report));
    assert_eq!(r["refresh"]["skipped"], env.seed.images.len() - heads.len());

    let text = std::fs::read_to_string(&metrics).unwrap();
    let samples = prom::parse_prometheus(&text);
    for name in prewarm::metrics::NAMES {
        if *name == "prewarm_budget_spent" {
            continue; // only present when a budget ran out
        }
        assert!(
            samples.iter().any(|(n, _, _)| n == name),
            "{name} missing:\n{text}"
        );
    }
    let value = |name: &str, label: (&str, &str)| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l.get(label.0).map(String::as_str) == Some(label.1))
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("{name} {label:?}"))
    };
    assert_eq!(value("prewarm_images_warmed", ("command", "refresh")), 0.0);
    assert_eq!(value("prewarm_failures", ("command", "refresh")), 0.0);
    assert_eq!(
        value("prewarm_refresh_references", ("kind", "checked")),
        heads.len() as f64
    );
    let last = value(
        "prewarm_last_success_timestamp_seconds",
        ("command", "refresh"),
    );
    assert!(
        (last - prewarm::state::now() as f64).abs() < 120.0,
        "{last}"
    );
}

#[test]
fn overlapping_run_is_refused_and_a_killed_run_leaves_a_correct_state() {
    let env = lab("refresh-kill");
    let job = env.job.to_str().unwrap();
    // A slow job: the cache answers at most 15 requests a second, so the warm takes a while.
    let slow = env.path("slow.yaml");
    let text = std::fs::read_to_string(&env.job).unwrap()
        + &format!(
            "rate_limits:\n  '{}':\n    requests_per_second: 15\n",
            env.lab.front_addr()
        );
    std::fs::write(&slow, text).unwrap();
    let state = env.path("state.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_prewarm"))
        .args(["refresh", &slow, "--state", &state, "--quiet", "--authfile"])
        .arg(&env.auth)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until some image was recorded as warmed, proving the run is mid-way.
    let deadline = Instant::now() + Duration::from_secs(60);
    let warmed_rows = |db: &str| -> i64 {
        let Ok(conn) = rusqlite::Connection::open(db) else {
            return 0;
        };
        conn.query_row("SELECT COUNT(*) FROM warmed", [], |r| r.get(0))
            .unwrap_or(0)
    };
    while warmed_rows(&state) < 5 {
        assert!(Instant::now() < deadline, "the slow run never got going");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the slow run ended too soon"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A second run on the same state is refused at once, saying why.
    let started = Instant::now();
    let out = env.prewarm(&["refresh", job, "--state", &state]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is in use by another prewarm run"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("pid {}", child.id())), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        child.try_wait().unwrap().is_none(),
        "still mid-way when killed"
    );

    child.kill().unwrap(); // SIGKILL: no cleanup at all
    child.wait().unwrap();

    // The state is readable and consistent.
    {
        let conn = rusqlite::Connection::open(&state).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let seen: i64 = conn
            .query_row("SELECT COUNT(DISTINCT reference) FROM digests", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(
            seen as usize,
            env.seed.images.len(),
            "every reference resolved was recorded"
        );
        let warmed: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM digests WHERE last_warmed IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            (warmed as usize) < env.seed.images.len(),
            "the kill came before the end"
        );
    }

    // The next run (no lock left behind) finishes the work: nothing changed, the unwarmed
    // images are stale and warmed; then the cache holds everything.
    let report = env.path("after.json");
    let out = env.prewarm(&["refresh", job, "--state", &state, "--report", &report]);
    assert!(out.status.success());
    let r = read_report(Path::new(&report));
    assert_eq!(
        r["refresh"]["changes"].as_array().unwrap().len(),
        0,
        "{r:#}"
    );
    assert!(r["refresh"]["to_warm"].as_u64().unwrap() > 0);
    assert_eq!(r["summary"]["failed"], 0);
    let out = env.prewarm(&["refresh", job, "--state", &state, "--report", &report]);
    assert!(out.status.success());
    let r = read_report(Path::new(&report));
    assert_eq!(r["refresh"]["to_warm"], 0, "all warm now: {r:#}");
    settle(&env);
    assert!(env.prewarm(&["verify", job, "--no-state"]).status.success());
}

#[test]
fn a_spent_budget_stops_cleanly_and_the_next_run_does_the_rest() {
    let env = lab("refresh-budget");
    let job = env.job.to_str().unwrap();
    let tight = env.path("tight.yaml");
    let text = std::fs::read_to_string(&env.job).unwrap()
        + "rate_limits:\n  quay.io:\n    max_requests: 4\n";
    std::fs::write(&tight, text).unwrap();
    let state = env.path("state.db");
    let report = env.path("tight.json");
    let metrics = env.path("tight.prom");
    let out = env.prewarm(&[
        "refresh",
        &tight,
        "--state",
        &state,
        "--report",
        &report,
        "--metrics",
        &metrics,
    ]);
    assert!(out.status.success(), "a spent budget is a clean stop");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("left for the next run"), "{stderr}");
    let r = read_report(Path::new(&report));
    let deferred = r["refresh"]["deferred"].as_array().unwrap();
    assert!(!deferred.is_empty(), "{r:#}");
    assert!(deferred
        .iter()
        .all(|d| d["reference"].as_str().unwrap().starts_with("quay.io/")));
    assert_eq!(r["refresh"]["budgets_spent"][0]["registry"], "quay.io");
    assert_eq!(r["summary"]["failed"], 0);
    let redhat = env
        .seed
        .images
        .iter()
        .filter(|i| i.reference.starts_with("registry.redhat.io/"))
        .count();
    assert_eq!(
        r["summary"]["warmed"], redhat,
        "the other registry was warmed: {r:#}"
    );
    let m = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        m.contains("prewarm_budget_spent{command=\"refresh\",registry=\"quay.io\"} 1"),
        "{m}"
    );

    let out = env.prewarm(&["refresh", job, "--state", &state, "--report", &report]);
    assert!(out.status.success());
    let r = read_report(Path::new(&report));
    assert_eq!(
        r["summary"]["warmed"],
        env.seed.images.len() - redhat,
        "{r:#}"
    );
    assert!(r["refresh"]["deferred"].as_array().unwrap().is_empty());
}

/// The lab job's cache and registries without its image list, for amd64, plus `extra`.
fn ocp_job(env: &Env, name: &str, extra: &str) -> String {
    let base = std::fs::read_to_string(&env.job).unwrap();
    let mut text: String = base
        .lines()
        .filter(|l| !l.starts_with("image_lists:") && !l.starts_with("platforms:"))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!("platforms: [linux/amd64]\n{extra}"));
    let path = env.dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `(repository, digest)` of every image a report lists.
fn reported(r: &serde_json::Value) -> std::collections::BTreeSet<(String, String)> {
    r["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let reference: prewarm::reference::Reference =
                i["reference"].as_str().unwrap().parse().unwrap();
            (
                reference.repo_path(),
                i["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn by_digest(reference: &str) -> (String, String) {
    let r: prewarm::reference::Reference = reference.parse().unwrap();
    (r.repo_path(), r.digest().unwrap().to_string())
}

/// A release by tag, a channel over a local graph and a whole catalog: after `warm`, a refresh
/// of an unchanged upstream sends one HEAD per tag and nothing else; a catalog re-pushed under
/// its tag with a new head bundle warms exactly that bundle's images (and the new index) and
/// says `package P: old → new`; a graph gaining a release in the channel's range warms that
/// release's new images.
#[test]
fn releases_channels_and_catalogs_refresh_only_what_moved() {
    let env = lab("refresh-ocp");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c = rt.block_on(env.lab.seed_ocp()).expect("seed OCP content");
    let graphs = env.dir.join("graphs");
    std::fs::create_dir_all(&graphs).unwrap();
    let graph = graphs.join("graph-stable-4.20-amd64.json");
    let chain = [("4.20.1", "4.20.2"), ("4.20.2", "4.20.3")];
    std::fs::write(&graph, c.graph_json("quay.io", &chain, &[])).unwrap();
    let job = ocp_job(
        &env,
        "ocp.yaml",
        "graph:\n  dir: graphs\nchannels:\n- name: stable-4.20\n  minVersion: 4.20.2\nreleases:\n- quay.io/openshift-release-dev/ocp-release:4.20.1-x86_64\noperators:\n- catalog: registry.redhat.io/redhat/redhat-operator-index:v4.20\n",
    );
    let state = env.path("state.db");
    let out = env.prewarm(&["warm", &job, "--state", &state]);
    assert!(out.status.success());
    settle(&env);

    // Unchanged: one HEAD for the release tag, one for the catalog tag; nothing warmed.
    let marks = upstream_marks(&env);
    let front = access(&env.lab.front.log).len();
    let report = env.path("noop.json");
    let refresh = |report: &str, extra: &[&str]| {
        let mut args = vec![
            "refresh",
            job.as_str(),
            "--state",
            state.as_str(),
            "--stale-after",
            "1h",
            "--report",
            report,
        ];
        args.extend_from_slice(extra);
        env.prewarm(&args)
    };
    let out = refresh(&report, &[]);
    assert!(out.status.success());
    let r = read_report(Path::new(&report));
    assert_eq!(
        r["refresh"]["changes"].as_array().unwrap().len(),
        0,
        "{r:#}"
    );
    assert_eq!(r["refresh"]["diff"].as_array().unwrap().len(), 0, "{r:#}");
    assert_eq!(r["refresh"]["tracked_sources"], 3);
    assert_eq!(r["refresh"]["checked"], 2);
    assert_eq!(r["summary"]["images"], 0);
    assert_eq!(r["summary"]["bytes_transferred"], 0);
    let new = upstream_since(&env, &marks);
    let mut manifests: Vec<_> = new
        .iter()
        .filter(|(_, p, _)| p.contains("/manifests/"))
        .map(|(m, p, _)| (m.as_str(), p.as_str()))
        .collect();
    manifests.sort();
    assert_eq!(
        manifests,
        [
            (
                "HEAD",
                "/v2/openshift-release-dev/ocp-release/manifests/4.20.1-x86_64"
            ),
            ("HEAD", "/v2/redhat/redhat-operator-index/manifests/v4.20")
        ],
        "{new:?}"
    );
    assert!(
        new.iter().all(|(m, p, _)| m == "HEAD" || p == "/v2/"),
        "nothing but HEADs: {new:?}"
    );
    assert_eq!(
        access(&env.lab.front.log).len(),
        front,
        "the cache was not asked"
    );

    // The catalog gains a head bundle with a new related image, under the same tag.
    let (index, bundle_images) = rt
        .block_on(c.push_catalog_update(&env.lab.redhat_target().unwrap()))
        .unwrap();
    let line = "package node-observability-operator: node-observability-operator.v0.3.0 → node-observability-operator.v0.4.0";
    let front = access(&env.lab.front.log).len();
    let out = refresh(&env.path("dry.json"), &["--dry-run"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(line));
    assert_eq!(
        access(&env.lab.front.log).len(),
        front,
        "a dry run warms nothing"
    );
    let report = env.path("catalog.json");
    let out = refresh(&report, &[]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "catalog registry.redhat.io/redhat/redhat-operator-index:v4.20: {line}"
        )),
        "{stdout}"
    );
    let r = read_report(Path::new(&report));
    let mut want: std::collections::BTreeSet<_> =
        bundle_images.iter().map(|b| by_digest(b)).collect();
    want.insert((
        "registry.redhat.io/redhat/redhat-operator-index".to_string(),
        index.digest.clone(),
    ));
    assert_eq!(reported(&r), want, "{r:#}");
    assert_eq!(r["summary"]["failed"], 0);
    assert_eq!(r["summary"]["warmed"], want.len());
    settle(&env);

    // The graph gains 4.20.4, inside `minVersion: 4.20.2`: it is read and its new images warmed.
    let release = rt
        .block_on(c.push_release(&env.lab.quay_target(), "4.20.4"))
        .unwrap();
    let chain = [
        ("4.20.1", "4.20.2"),
        ("4.20.2", "4.20.3"),
        ("4.20.3", "4.20.4"),
    ];
    std::fs::write(&graph, c.graph_json("quay.io", &chain, &[])).unwrap();
    let report = env.path("graph.json");
    let out = refresh(&report, &[]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("channel stable-4.20 amd64: release 4.20.4 entered the range"),
        "{stdout}"
    );
    let r = read_report(Path::new(&report));
    let console = c.components["4.20.4"]
        .iter()
        .find(|(n, _)| n == "console")
        .map(|(_, r)| by_digest(r))
        .unwrap();
    let want: std::collections::BTreeSet<_> = [
        (
            "quay.io/openshift-release-dev/ocp-release".to_string(),
            release.digest.clone(),
        ),
        console,
    ]
    .into_iter()
    .collect();
    assert_eq!(reported(&r), want, "{r:#}");
    assert_eq!(r["summary"]["warmed"], 2);
    settle(&env);

    // 4.20.2 leaves the graph: reported, nothing warmed.
    let mut g: serde_json::Value =
        serde_json::from_str(&c.graph_json("quay.io", &[("4.20.3", "4.20.4")], &[])).unwrap();
    let nodes = g["nodes"].as_array().unwrap().clone();
    let keep: Vec<serde_json::Value> = nodes
        .iter()
        .filter(|n| n["version"] != "4.20.2")
        .cloned()
        .collect();
    let at = |v: &str| keep.iter().position(|n| n["version"] == v).unwrap();
    g["edges"] = serde_json::json!([[at("4.20.3"), at("4.20.4")]]);
    g["nodes"] = serde_json::Value::Array(keep.clone());
    std::fs::write(&graph, g.to_string()).unwrap();
    let report = env.path("left.json");
    let out = refresh(&report, &[]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("channel stable-4.20 amd64: release 4.20.2 left the range"),
        "{stdout}"
    );
    assert_eq!(read_report(Path::new(&report))["summary"]["images"], 0);

    // And now nothing is new.
    let report = env.path("after.json");
    let out = refresh(&report, &[]);
    assert!(out.status.success());
    let r = read_report(Path::new(&report));
    assert_eq!(
        r["refresh"]["changes"].as_array().unwrap().len(),
        0,
        "{r:#}"
    );
    assert_eq!(r["refresh"]["diff"].as_array().unwrap().len(), 0, "{r:#}");
    assert_eq!(r["summary"]["images"], 0);
}

/// `warm` records what it resolved: a refresh right after it on an unchanged upstream reports
/// nothing new and warms nothing.
#[test]
fn warm_then_refresh_reports_nothing_new() {
    let env = lab("refresh-after-warm");
    let job = env.job.to_str().unwrap();
    let state = env.path("state.db");
    assert!(env
        .prewarm(&["warm", job, "--state", &state])
        .status
        .success());
    settle(&env);
    let report = env.path("after.json");
    let out = env.prewarm(&[
        "refresh",
        job,
        "--state",
        &state,
        "--report",
        &report,
        "--stale-after",
        "1h",
    ]);
    assert!(out.status.success());
    let r = read_report(Path::new(&report));
    assert_eq!(
        r["refresh"]["changes"].as_array().unwrap().len(),
        0,
        "{r:#}"
    );
    assert_eq!(r["refresh"]["stale"].as_array().unwrap().len(), 0, "{r:#}");
    assert_eq!(r["refresh"]["to_warm"], 0);
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
}
