//! copy, export, bundle verify, import and inventory against the lab: a fresh, empty
//! destination registry with TLS and htpasswd auth (`Lab::start_registry`), skopeo as the judge.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{lab, read_report, sha256_hex, skopeo, Env};
use prewarm_lab::ExtraRegistry;

/// An auth file with the lab user for the upstream and for `dest`.
fn auth_with(env: &Env, dest: &ExtraRegistry) -> PathBuf {
    env.auth_with(dest)
}

fn ca(env: &Env) -> String {
    env.ca()
}

/// `skopeo inspect --raw` of `docker://REF` at the destination: the sha256 of the bytes.
fn dest_digest(env: &Env, reference: &str) -> Option<String> {
    let certs = env.dir.join("certs").display().to_string();
    let out = skopeo(&[
        "inspect",
        "--raw",
        "--cert-dir",
        &certs,
        "--authfile",
        &env.auth.display().to_string(),
        &format!("docker://{reference}"),
    ]);
    out.status
        .success()
        .then(|| format!("sha256:{}", sha256_hex(&out.stdout)))
}

/// Every seeded image, by digest and (when tagged) by tag, is at `prefix` with the source digest.
fn assert_all_at(env: &Env, dest: &ExtraRegistry, repo_of: impl Fn(&str) -> String) {
    for image in &env.seed.images {
        let repo = repo_of(&image.repository_host());
        let by_digest = format!("{}/{}@{}", dest.address, repo, image.digest);
        assert_eq!(
            dest_digest(env, &by_digest).as_deref(),
            Some(image.digest.as_str()),
            "{by_digest}"
        );
        if let Some(tag) = image.tag() {
            let by_tag = format!("{}/{}:{}", dest.address, repo, tag);
            assert_eq!(
                dest_digest(env, &by_tag).as_deref(),
                Some(image.digest.as_str()),
                "{by_tag}"
            );
        }
    }
}

trait SeededExt {
    fn repository_host(&self) -> String;
    fn tag(&self) -> Option<String>;
}

impl SeededExt for prewarm_lab::seed::SeededImage {
    /// `host/repository` of the source.
    fn repository_host(&self) -> String {
        let r: prewarm::reference::Reference = self.reference.parse().unwrap();
        r.repo_path()
    }
    fn tag(&self) -> Option<String> {
        let r: prewarm::reference::Reference = self.reference.parse().unwrap();
        r.tag().map(str::to_string)
    }
}

/// `mirror/<source repository>` for `--to ADDR/mirror`.
fn mirror_repo(repo_path: &str) -> String {
    format!("mirror/{}", repo_path.split_once('/').unwrap().1)
}

fn writes(env: &Env, dest: &ExtraRegistry) -> usize {
    env.lab
        .registry_requests(dest)
        .unwrap()
        .iter()
        .filter(|(m, _, _)| m == "PUT" || m == "POST" || m == "PATCH")
        .count()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "zst"))
        .collect();
    v.sort();
    v
}

fn bundle_json(dir: &Path) -> serde_json::Value {
    read_report(&dir.join("bundle.json"))
}

#[test]
fn export_verify_import_into_a_fresh_tls_registry_keeps_every_digest() {
    let mut env = lab("bundle-roundtrip");
    let dest = env.lab.start_registry("dest").unwrap();
    auth_with(&env, &dest);
    let job = env.job.to_str().unwrap().to_string();
    let bundle = env.dir.join("bundle");
    let report = env.path("export.json");
    let out = env.prewarm(&[
        "export",
        &job,
        "-o",
        bundle.to_str().unwrap(),
        "--segment-size",
        "3M",
        "--report",
        &report,
    ]);
    assert!(out.status.success());
    let r = read_report(Path::new(&report));
    assert_eq!(r["summary"]["exported"], env.seed.images.len(), "{r:#}");
    // Plan, progress, summary and report count the same things: one transfer per unique blob,
    // and the bytes moved are the bytes planned.
    let s = &r["summary"];
    assert_eq!(s["transfers"], s["blobs"], "{s}");
    assert_eq!(s["bytes_moved"], s["bytes_planned"], "{s}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let phase = format!(
        "export: {} to do, {} to move",
        s["blobs"],
        prewarm::progress::human_bytes(s["bytes_planned"].as_u64().unwrap())
    );
    assert!(stderr.contains(&phase), "{phase} in\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} blob transfers moved {}",
            s["transfers"],
            prewarm::progress::human_bytes(s["bytes_moved"].as_u64().unwrap())
        )),
        "{stderr}"
    );
    let b = bundle_json(&bundle);
    let segs = segments(&bundle);
    assert!(segs.len() >= 3, "{segs:?}");
    assert_eq!(segs.len(), b["segments"].as_array().unwrap().len());
    assert!(segs
        .iter()
        .all(|s| std::fs::metadata(s).unwrap().len() <= 3 << 20));
    // Every blob of every image (all platforms: an index is kept byte for byte) is inside.
    let inside: BTreeSet<String> = b["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(inside, env.seed.unique_blobs().keys().cloned().collect());
    let unique_bytes: u64 = env.seed.unique_blobs().values().sum();
    let compressed: u64 = segs
        .iter()
        .map(|s| std::fs::metadata(s).unwrap().len())
        .sum();
    eprintln!("bundle {compressed} bytes for {unique_bytes} unique blob bytes");
    assert!((compressed as f64) <= unique_bytes as f64 * 1.02);

    // The segments, joined, decompressed and unpacked, are an OCI layout skopeo reads.
    let layout = env.dir.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    let script = format!(
        "cat {} | zstd -dc | tar -x -C {}",
        segs.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
        layout.display()
    );
    assert!(Command::new("sh")
        .args(["-c", &script])
        .status()
        .unwrap()
        .success());
    for image in &env.seed.images {
        let out = skopeo(&[
            "inspect",
            "--raw",
            &format!("oci:{}:{}", layout.display(), image.reference),
        ]);
        assert!(out.status.success(), "oci layout: {}", image.reference);
        assert_eq!(format!("sha256:{}", sha256_hex(&out.stdout)), image.digest);
    }

    let out = env.prewarm(&["bundle", "verify", bundle.to_str().unwrap()]);
    assert!(out.status.success());

    // A corrupted and a truncated segment: verify names both, import pushes nothing.
    let broken = env.dir.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    for e in std::fs::read_dir(&bundle).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, broken.join(p.file_name().unwrap())).unwrap();
    }
    let bsegs = segments(&broken);
    let mut bytes = std::fs::read(&bsegs[1]).unwrap();
    bytes[1000] ^= 0x40;
    std::fs::write(&bsegs[1], bytes).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&bsegs[2])
        .unwrap();
    f.set_len(1234).unwrap();
    let out = env.prewarm(&["bundle", "verify", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let name = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        err.contains(&format!("{}: corrupted", name(&bsegs[1]))),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}: truncated", name(&bsegs[2]))),
        "{err}"
    );
    let to = format!("{}/mirror", dest.address);
    let out = env.prewarm(&[
        "import",
        broken.to_str().unwrap(),
        "--to",
        &to,
        "--to-ca",
        &ca(&env),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&name(&bsegs[1])) && err.contains(&name(&bsegs[2])),
        "{err}"
    );
    assert_eq!(
        writes(&env, &dest),
        0,
        "a push happened before the bundle was verified"
    );

    // The good bundle imports; every image at the destination has its source digest.
    let report = env.path("import.json");
    let out = env.prewarm(&[
        "import",
        bundle.to_str().unwrap(),
        "--to",
        &to,
        "--to-ca",
        &ca(&env),
        "--report",
        &report,
    ]);
    assert!(out.status.success());
    let r = read_report(Path::new(&report));
    assert_eq!(r["summary"]["copied"], env.seed.images.len(), "{r:#}");
    env.lab.stop_upstreams();
    assert_all_at(&env, &dest, mirror_repo);
    // Each blob was uploaded once; the other repositories got it by a mount.
    let puts = env.blob_puts(&dest);
    assert!(puts.values().all(|&n| n == 1), "{puts:?}");
    assert_eq!(puts.len(), env.seed.unique_blobs().len());

    // Imported again: nothing is pushed.
    let before = env.blob_puts(&dest);
    let out = env.prewarm(&[
        "import",
        bundle.to_str().unwrap(),
        "--to",
        &to,
        "--to-ca",
        &ca(&env),
    ]);
    assert!(out.status.success());
    assert_eq!(env.blob_puts(&dest), before);
}

#[test]
fn copy_into_a_fresh_tls_registry_by_cache_orgs_keeps_every_digest() {
    let mut env = lab("bundle-copy");
    let dest = env.lab.start_registry("copydest").unwrap();
    auth_with(&env, &dest);
    let job = env.job.to_str().unwrap().to_string();
    let report = env.path("copy.json");
    let out = env.prewarm(&[
        "copy",
        &job,
        "--to",
        &dest.address,
        "--to-ca",
        &ca(&env),
        "--report",
        &report,
    ]);
    assert!(out.status.success());
    let r = read_report(Path::new(&report));
    assert_eq!(r["summary"]["copied"], env.seed.images.len(), "{r:#}");
    env.lab.stop_upstreams();
    // No prefix: the cache-org mapping, `cache_quay_io/…`, `cache_registry_redhat_io/…`.
    assert_all_at(&env, &dest, |repo_path| {
        let (host, rest) = repo_path.split_once('/').unwrap();
        format!("{}/{rest}", prewarm::job::default_org(host))
    });
    let puts = env.blob_puts(&dest);
    assert!(puts.values().all(|&n| n == 1), "{puts:?}");
    assert_eq!(puts.len(), env.seed.unique_blobs().len());
    // Blobs shared between repositories were mounted, not uploaded again.
    let mounts = env
        .lab
        .registry_requests(&dest)
        .unwrap()
        .iter()
        .filter(|(m, t, s)| m == "POST" && t.contains("mount=") && *s == 201)
        .count();
    assert!(mounts > 0);

    // A second copy moves nothing.
    env.lab.start_upstreams().unwrap();
    let out = env.prewarm(&["copy", &job, "--to", &dest.address, "--to-ca", &ca(&env)]);
    assert!(out.status.success());
    assert_eq!(env.blob_puts(&dest), puts);
}

#[test]
fn incremental_export_carries_exactly_the_changed_image() {
    let mut env = lab("bundle-incremental");
    let dest = env.lab.start_registry("far").unwrap();
    auth_with(&env, &dest);
    let job = env.job.to_str().unwrap().to_string();
    let to = format!("{}/mirror", dest.address);
    let first = env.dir.join("first");
    assert!(env
        .prewarm(&["export", &job, "-o", first.to_str().unwrap()])
        .status
        .success());
    assert!(env
        .prewarm(&[
            "import",
            first.to_str().unwrap(),
            "--to",
            &to,
            "--to-ca",
            &ca(&env)
        ])
        .status
        .success());

    // The far site's inventory.
    let inventory = env.path("inventory.json");
    let out = env.prewarm(&[
        "inventory",
        "--registry",
        &to,
        "--job",
        &job,
        "--ca",
        &ca(&env),
        "-o",
        &inventory,
    ]);
    assert!(out.status.success());

    // One tagged image changes upstream: a new layer and config under the same tag.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let changed = rt.block_on(async {
        use prewarm_lab::seed::{tar_layer, Compression, Format, ImageSpec, Pusher};
        let pusher = Pusher::new(&env.lab.quay_target()).await.unwrap();
        let layer = tar_layer(
            &[("etc/changed", prewarm_lab::seed::random_bytes(42, 200_000))],
            Compression::Gzip,
        );
        let labels = [("changed".to_string(), "yes".to_string())]
            .into_iter()
            .collect();
        let spec = ImageSpec::linux(Format::Oci, "amd64", labels, vec![layer]);
        pusher
            .push_image("openshift/origin-cli", Some("4.20"), &spec)
            .await
            .unwrap()
    });

    let second = env.dir.join("second");
    let out = env.prewarm(&[
        "export",
        &job,
        "-o",
        second.to_str().unwrap(),
        "--have",
        &inventory,
    ]);
    assert!(out.status.success());
    let b = bundle_json(&second);
    let blobs: BTreeMap<String, u64> = b["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["digest"].as_str().unwrap().to_string(),
                x["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let manifests: BTreeMap<String, u64> = b["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["digest"].as_str().unwrap().to_string(),
                x["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let want_blobs: BTreeMap<String, u64> = changed.blobs.iter().cloned().collect();
    let want_manifests: BTreeMap<String, u64> = changed
        .manifests
        .iter()
        .map(|(d, _, s)| (d.clone(), *s))
        .collect();
    assert_eq!(blobs.len(), 2, "a new layer and a new config");
    assert_eq!(blobs, want_blobs);
    assert_eq!(manifests, want_manifests);
    assert_eq!(
        b["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["size"].as_u64().unwrap())
            .sum::<u64>()
            + b["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["size"].as_u64().unwrap())
                .sum::<u64>(),
        want_blobs.values().sum::<u64>() + want_manifests.values().sum::<u64>()
    );
    // Everything else is left out as present at the far site.
    assert!(b["present_manifests"].as_array().unwrap().len() > 40);

    // Imported, the far site serves the new content under the tag; the rest is unchanged.
    let out = env.prewarm(&[
        "import",
        second.to_str().unwrap(),
        "--to",
        &to,
        "--to-ca",
        &ca(&env),
    ]);
    assert!(out.status.success());
    let tag = format!("{}/mirror/openshift/origin-cli:4.20", dest.address);
    assert_eq!(
        dest_digest(&env, &tag).as_deref(),
        Some(changed.digest.as_str())
    );
    for image in env
        .seed
        .images
        .iter()
        .filter(|i| !i.reference.contains("origin-cli"))
    {
        let by_digest = format!(
            "{}/{}@{}",
            dest.address,
            mirror_repo(&image.repository_host()),
            image.digest
        );
        assert_eq!(
            dest_digest(&env, &by_digest).as_deref(),
            Some(image.digest.as_str())
        );
    }
}

#[test]
fn an_import_killed_halfway_resumes_without_pushing_finished_blobs_again() {
    let mut env = lab("bundle-resume");
    let dest = env.lab.start_registry("resume").unwrap();
    let auth = auth_with(&env, &dest);
    let job = env.job.to_str().unwrap().to_string();
    let bundle = env.dir.join("bundle");
    assert!(env
        .prewarm(&["export", &job, "-o", bundle.to_str().unwrap()])
        .status
        .success());
    let to = format!("{}/mirror", dest.address);
    let total = env.seed.unique_blobs().len();

    let mut child = Command::new(env!("CARGO_BIN_EXE_prewarm"))
        .args([
            "import",
            bundle.to_str().unwrap(),
            "--to",
            &to,
            "--to-ca",
            &ca(&env),
            "-q",
        ])
        .arg("--authfile")
        .arg(&auth)
        .env_remove("REGISTRY_AUTH_FILE")
        .spawn()
        .unwrap();
    // Kill it once a few blobs have been uploaded.
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.blob_puts(&dest).len() < 5 {
        assert!(Instant::now() < deadline, "no uploads seen");
        assert!(
            child.try_wait().unwrap().is_none(),
            "import ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before = env.blob_puts(&dest);
    eprintln!("killed after {} of {total} blob uploads", before.len());
    assert!(before.len() < total, "the import finished before the kill");

    let report = env.path("resume.json");
    let out = env.prewarm(&[
        "import",
        bundle.to_str().unwrap(),
        "--to",
        &to,
        "--to-ca",
        &ca(&env),
        "--report",
        &report,
    ]);
    assert!(out.status.success());
    let after = env.blob_puts(&dest);
    // Every blob uploaded exactly once over both runs: the finished ones were not pushed again.
    assert_eq!(after.len(), total);
    for (digest, n) in &after {
        assert_eq!(*n, 1, "{digest} uploaded {n} times");
    }
    for digest in before.keys() {
        assert_eq!(after[digest], 1);
    }
    assert_all_at(&env, &dest, mirror_repo);
}

#[test]
fn bad_input_is_one_line_naming_the_file_or_flag() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_prewarm"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let dir = std::env::temp_dir().join(format!("prewarm-bad-bundle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let (code, err) = run(&["import", d, "--to", "127.0.0.1:1/x"]);
    assert_eq!(code, Some(2));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not a bundle") && err.contains(d), "{err}");
    std::fs::write(
        dir.join("bundle.json"),
        r#"{"format":"prewarm-bundle/1","segmnts":[]}"#,
    )
    .unwrap();
    let (code, err) = run(&["bundle", "verify", d]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("bundle.json") && err.contains("segmnts"),
        "{err}"
    );
    let (code, err) = run(&["export", "job.yaml", "-o", d, "--segment-size", "12Q"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("12Q"), "{err}");
    let (code, err) = run(&["import", d, "--to", "/nohost"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--to"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_bundle_subcommand_help_has_an_example() {
    for sub in [
        &["copy"][..],
        &["export"],
        &["import"],
        &["inventory"],
        &["bundle", "verify"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_prewarm"))
            .args(sub)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Example:") && text.contains(&format!("prewarm {}", sub.join(" "))),
            "{sub:?}: {text}"
        );
    }
}

#[test]
fn a_blob_missing_upstream_fails_its_image_and_the_rest_is_exported_and_imported() {
    let mut env = lab("bundle-missing-blob");
    let dest = env.lab.start_registry("partial").unwrap();
    auth_with(&env, &dest);
    // A layer only one quay image has: delete its data from the upstream's storage.
    let counts: BTreeMap<String, usize> = env
        .seed
        .images
        .iter()
        .flat_map(|i| i.blobs.iter().map(|(d, _)| d.clone()))
        .fold(BTreeMap::new(), |mut m, d| {
            *m.entry(d).or_default() += 1;
            m
        });
    let (victim, digest) = env
        .seed
        .images
        .iter()
        .filter(|i| i.reference.starts_with("quay.io/"))
        .find_map(|i| {
            let d = i.blobs.iter().rev().find(|(d, _)| counts[d] == 1)?;
            Some((i.clone(), d.0.clone()))
        })
        .expect("an unshared quay blob");
    let data = prewarm_lab::blob_data_path(&env.lab.quay_storage, &digest);
    std::fs::remove_file(&data).unwrap();

    let job = env.job.to_str().unwrap().to_string();
    let bundle = env.dir.join("bundle");
    let report = env.path("export.json");
    let out = env.prewarm(&[
        "--retries",
        "2",
        "export",
        &job,
        "-o",
        bundle.to_str().unwrap(),
        "--report",
        &report,
    ]);
    assert_eq!(out.status.code(), Some(1), "one image failed");
    let r = read_report(Path::new(&report));
    let failed: Vec<&serde_json::Value> = r["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{r:#}");
    assert_eq!(failed[0]["reference"], victim.reference);
    assert!(
        failed[0]["error"].as_str().unwrap().contains(&digest),
        "{r:#}"
    );
    let b = bundle_json(&bundle);
    assert_eq!(
        b["images"].as_array().unwrap().len(),
        env.seed.images.len() - 1
    );
    assert!(!b["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["digest"] == digest));
    assert!(env
        .prewarm(&["bundle", "verify", bundle.to_str().unwrap()])
        .status
        .success());

    // Nothing of the failed image is in the layout, and the rest imports whole.
    let to = format!("{}/mirror", dest.address);
    let out = env.prewarm(&[
        "import",
        bundle.to_str().unwrap(),
        "--to",
        &to,
        "--to-ca",
        &ca(&env),
    ]);
    assert!(out.status.success());
    for image in env
        .seed
        .images
        .iter()
        .filter(|i| i.reference != victim.reference)
    {
        let by_digest = format!(
            "{}/{}@{}",
            dest.address,
            mirror_repo(&image.repository_host()),
            image.digest
        );
        assert_eq!(
            dest_digest(&env, &by_digest).as_deref(),
            Some(image.digest.as_str())
        );
    }
    let missing = format!(
        "{}/{}@{}",
        dest.address,
        mirror_repo(&victim.repository_host()),
        victim.digest
    );
    assert_eq!(dest_digest(&env, &missing), None);
}

#[test]
fn export_as_an_oci_layout_is_read_by_skopeo_and_a_rerun_moves_nothing_again() {
    let env = lab("oci-dir");
    let job = env.job.to_str().unwrap().to_string();
    let layout = env.dir.join("oci");
    let report = env.path("oci.json");
    let out = env.prewarm(&[
        "export",
        &job,
        "--format",
        "oci-dir",
        "-o",
        layout.to_str().unwrap(),
        "--report",
        &report,
    ]);
    assert!(out.status.success());
    let r = read_report(Path::new(&report));
    assert_eq!(r["summary"]["exported"], env.seed.images.len(), "{r:#}");
    // Every file under blobs/ hashes to its name; no temp file is left.
    let blobs = layout.join("blobs/sha256");
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(&blobs).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        assert!(!name.starts_with('.'), "temp file {name} left");
        assert_eq!(sha256_hex(&std::fs::read(&path).unwrap()), name);
        names.insert(format!("sha256:{name}"));
    }
    for digest in env.seed.unique_blobs().keys() {
        assert!(
            names.contains(digest),
            "blob {digest} missing from the layout"
        );
    }
    for image in &env.seed.images {
        let reference = format!("oci:{}:{}", layout.display(), image.reference);
        let out = skopeo(&["inspect", "--raw", &reference]);
        assert!(out.status.success(), "{reference}");
        assert_eq!(format!("sha256:{}", sha256_hex(&out.stdout)), image.digest);
    }
    // skopeo copies images out of it whole (it checks every blob's digest on the way).
    for image in env.seed.images.iter().take(3) {
        let out = skopeo(&[
            "copy",
            "--all",
            &format!("oci:{}:{}", layout.display(), image.reference),
            &format!("oci:{}:copy", env.dir.join("copied").display()),
        ]);
        assert!(out.status.success(), "skopeo copy of {}", image.reference);
    }

    // A rerun into the same layout finds every blob there: no blob bytes move again.
    let out = env.prewarm(&[
        "export",
        &job,
        "--format",
        "oci-dir",
        "-o",
        layout.to_str().unwrap(),
        "--report",
        &report,
    ]);
    assert!(out.status.success());
    let r = read_report(Path::new(&report));
    for image in r["images"].as_array().unwrap() {
        assert_eq!(image["bytes"], 0, "{image}");
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"].as_array().unwrap().len(),
        env.seed.images.len(),
        "one index entry per image, not one per run"
    );
}
