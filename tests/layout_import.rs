//! import from an OCI image layout directory against the lab: a fresh destination registry
//! (TLS, htpasswd: `Lab::start_registry`), layouts written by `export --format oci-dir` and by
//! skopeo itself, skopeo as the judge of what arrived.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::{lab, read_report, sha256_hex, skopeo, Env};
use prewarm_lab::ExtraRegistry;

/// The lab user for `dest` too, in the auth file every prewarm run and skopeo call uses.
fn trust(env: &Env, dest: &ExtraRegistry) {
    let mut auth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&env.auth).unwrap()).unwrap();
    auth["auths"][&dest.address] = auth["auths"]["registry.redhat.io"].clone();
    std::fs::write(&env.auth, serde_json::to_vec(&auth).unwrap()).unwrap();
}

/// `prewarm import DIR --to TO` with the lab CA, plus `extra`.
fn import(env: &Env, dir: &Path, to: &str, extra: &[&str]) -> std::process::Output {
    let ca = env.lab.ca_cert.display().to_string();
    let mut args = vec!["import", dir.to_str().unwrap(), "--to", to, "--to-ca", &ca];
    args.extend_from_slice(extra);
    env.prewarm(&args)
}

/// skopeo's view of `docker://REFERENCE` at the destination (TLS with the lab CA, auth).
fn dest_args(env: &Env) -> Vec<String> {
    vec![
        "--cert-dir".into(),
        env.dir.join("certs").display().to_string(),
        "--authfile".into(),
        env.auth.display().to_string(),
    ]
}

/// The sha256 of the manifest bytes skopeo reads for `docker://REFERENCE`, if it reads any.
fn dest_digest(env: &Env, reference: &str) -> Option<String> {
    let mut args = vec!["inspect".to_string(), "--raw".into()];
    args.extend(dest_args(env));
    args.push(format!("docker://{reference}"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = skopeo(&args);
    out.status
        .success()
        .then(|| format!("sha256:{}", sha256_hex(&out.stdout)))
}

/// Blob writes the destination answered (upload sessions opened, mounts, PUTs), per method.
fn blob_writes(env: &Env, dest: &ExtraRegistry) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (m, target, status) in env.lab.registry_requests(dest).unwrap() {
        if target.contains("/blobs/uploads/") && status < 300 && m != "GET" && m != "HEAD" {
            *out.entry(m).or_default() += 1;
        }
    }
    out
}

/// `mirror/<repository>` of a seeded image's reference.
fn repo_under(prefix: &str, reference: &str) -> String {
    let r: prewarm::reference::Reference = reference.parse().unwrap();
    format!("{prefix}/{}", r.repository())
}

#[test]
fn an_exported_oci_layout_imports_whole_and_a_corrupt_blob_fails_only_its_images() {
    let mut env = lab("layout-import");
    let dest = env.lab.start_registry("dest").unwrap();
    trust(&env, &dest);
    let job = env.job.to_str().unwrap().to_string();
    let layout = env.dir.join("oci");
    let out = env.prewarm(&[
        "export",
        &job,
        "--format",
        "oci-dir",
        "-o",
        layout.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    // Nothing but the layout from here on.
    env.lab.stop_upstreams();

    // Neither a bundle nor a layout: one line, exit 2.
    let empty = env.dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let to = format!("{}/mirror", dest.address);
    let out = import(&env, &empty, &to, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a bundle")
            && err.contains("not an OCI image layout")
            && err.contains("empty"),
        "{err}"
    );

    let report = env.path("import.json");
    let out = import(&env, &layout, &to, &["--report", &report, "--jobs", "4"]);
    assert!(out.status.success());
    let r = read_report(Path::new(&report));
    let s = &r["summary"];
    assert_eq!(s["copied"], env.seed.images.len(), "{r:#}");
    assert_eq!(s["failed"], 0, "{r:#}");
    // Each unique blob was uploaded once (the other repositories got mounts), and the bytes
    // moved are exactly the unique blobs' bytes.
    let unique = env.seed.unique_blobs();
    let puts = env.blob_puts(&dest);
    assert_eq!(
        puts.keys().cloned().collect::<BTreeSet<_>>(),
        unique.keys().cloned().collect::<BTreeSet<_>>()
    );
    assert!(puts.values().all(|&n| n == 1), "{puts:?}");
    assert_eq!(s["bytes_moved"], unique.values().sum::<u64>(), "{s}");

    // skopeo finds every image by digest (and by tag) with its source digest.
    for image in &env.seed.images {
        let repo = repo_under("mirror", &image.reference);
        let by_digest = format!("{}/{repo}@{}", dest.address, image.digest);
        assert_eq!(
            dest_digest(&env, &by_digest).as_deref(),
            Some(image.digest.as_str()),
            "{by_digest}"
        );
        let r: prewarm::reference::Reference = image.reference.parse().unwrap();
        if let Some(tag) = r.tag() {
            let by_tag = format!("{}/{repo}:{tag}", dest.address);
            assert_eq!(
                dest_digest(&env, &by_tag).as_deref(),
                Some(image.digest.as_str())
            );
        }
    }
    // skopeo copies a multi-platform image out whole; every file it writes has the bytes the
    // layout holds under that digest.
    let index = env
        .seed
        .images
        .iter()
        .find(|i| i.manifests.len() > 1)
        .expect("a multi-platform image in the seed");
    let copied = env.dir.join("copied");
    let mut args = vec!["copy".to_string(), "--all".into()];
    args.extend(dest_args(&env).iter().map(|a| a.replace("--", "--src-")));
    args.push(format!(
        "docker://{}/{}@{}",
        dest.address,
        repo_under("mirror", &index.reference),
        index.digest
    ));
    args.push(format!("dir:{}", copied.display()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(skopeo(&args).status.success());
    let top = std::fs::read(copied.join("manifest.json")).unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&top)), index.digest);
    let mut files = 0;
    for entry in std::fs::read_dir(&copied).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let hex = name.trim_end_matches(".manifest.json");
        if hex.len() != 64 {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(sha256_hex(&bytes), hex, "{name}");
        assert_eq!(
            bytes,
            std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap(),
            "{name}"
        );
        files += 1;
    }
    let expected = index.blobs.len() + index.manifests.len() - 1;
    assert_eq!(
        files, expected,
        "every blob and child manifest of the image"
    );

    // A rerun moves no blob byte: every blob is proven present by its HEAD.
    let writes = blob_writes(&env, &dest);
    let out = import(&env, &layout, &to, &["--report", &report]);
    assert!(out.status.success());
    let r = read_report(Path::new(&report));
    assert_eq!(r["summary"]["bytes_moved"], 0, "{r:#}");
    assert_eq!(r["summary"]["present"], env.seed.images.len(), "{r:#}");
    assert_eq!(blob_writes(&env, &dest), writes);

    // One corrupted blob file: exactly the images needing it fail, naming the file.
    let broken = env.dir.join("broken");
    copy_dir(&layout, &broken);
    let needed_by = |d: &str| -> Vec<&str> {
        env.seed
            .images
            .iter()
            .filter(|i| i.blobs.iter().any(|(b, _)| b == d))
            .map(|i| i.reference.as_str())
            .collect()
    };
    // The biggest of the blobs the fewest images need.
    let (victim, _) = unique
        .iter()
        .min_by_key(|(d, &size)| (needed_by(d).len(), std::cmp::Reverse(size)))
        .unwrap();
    let victim_file = broken
        .join("blobs/sha256")
        .join(victim.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&victim_file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&victim_file, bytes).unwrap();
    let to_broken = format!("{}/broken", dest.address);
    let report = env.path("broken.json");
    let out = import(&env, &broken, &to_broken, &["--report", &report]);
    assert_eq!(out.status.code(), Some(1));
    let r = read_report(Path::new(&report));
    let failing: BTreeSet<&str> = needed_by(victim).into_iter().collect();
    for image in r["images"].as_array().unwrap() {
        let reference = image["reference"].as_str().unwrap();
        if failing.contains(reference) {
            assert_eq!(image["status"], "failed", "{image}");
            let error = image["error"].as_str().unwrap();
            assert!(
                error.contains(&victim_file.display().to_string()),
                "{error}"
            );
        } else {
            assert_ne!(image["status"], "failed", "{image}");
        }
    }
    assert_eq!(
        r["summary"]["failed"],
        failing.len(),
        "only the images needing {victim}: {r:#}"
    );
    for reference in &failing {
        let image = env
            .seed
            .images
            .iter()
            .find(|i| &i.reference == reference)
            .unwrap();
        let at = format!(
            "{}/{}@{}",
            dest.address,
            repo_under("broken", reference),
            image.digest
        );
        assert_eq!(dest_digest(&env, &at), None, "{at} pushed without its blob");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_layout_written_by_skopeo_imports_under_repository_nested_index_included() {
    let mut env = lab("layout-skopeo");
    let dest = env.lab.start_registry("dest").unwrap();
    trust(&env, &dest);
    let quay = env.lab.quay_addr();
    let pick = |media_type: &str| {
        env.seed
            .images
            .iter()
            .find(|i| i.reference.starts_with("quay.io/") && i.media_type == media_type)
            .unwrap_or_else(|| panic!("a quay.io image of type {media_type} in the seed"))
    };
    let index = pick(prewarm_lab::seed::OCI_INDEX);
    let single = pick(prewarm_lab::seed::OCI_MANIFEST);
    // skopeo writes the layout (its own writer): entries named by tag only, one image under
    // two tags (as `1.0` and `latest` often are).
    let layout = env.dir.join("skopeo-oci");
    for (image, tag) in [(index, "multi"), (single, "one"), (index, "latest")] {
        let from = format!("docker://{quay}/{}@{}", image.repository, image.digest);
        let to = format!("oci:{}:{tag}", layout.display());
        let out = skopeo(&["copy", "--all", "--src-tls-verify=false", &from, &to]);
        assert!(out.status.success(), "skopeo copy {from} {to}");
    }
    let index_json = layout.join("index.json");
    let mut entries: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_json).unwrap()).unwrap();
    let names: BTreeMap<String, String> = entries["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let name = m["annotations"]["org.opencontainers.image.ref.name"].as_str();
            (
                name.unwrap().to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(names.get("multi"), Some(&index.digest));
    assert_eq!(names.get("one"), Some(&single.digest));
    assert_eq!(names.get("latest"), Some(&index.digest));

    // An index of that index (nested), written beside them, unnamed.
    let inner = entries["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["digest"] == index.digest.as_str())
        .unwrap()
        .clone();
    let mut inner_descriptor = inner.clone();
    inner_descriptor
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    let outer = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [inner_descriptor],
    }))
    .unwrap();
    let outer_digest = format!("sha256:{}", sha256_hex(&outer));
    std::fs::write(layout.join("blobs/sha256").join(sha256_hex(&outer)), &outer).unwrap();
    entries["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": outer_digest,
            "size": outer.len(),
        }));
    std::fs::write(&index_json, serde_json::to_vec(&entries).unwrap()).unwrap();
    env.lab.stop_upstreams();

    // Bare tags name no repository: one line saying what to give, exit 2, nothing pushed.
    let to = format!("{}/sk", dest.address);
    let out = import(&env, &layout, &to, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--repository") && err.contains("index.json: manifests["),
        "{err}"
    );
    assert_eq!(err.lines().filter(|l| l.starts_with("error")).count(), 1);
    assert!(env.blob_puts(&dest).is_empty());

    // `--jobs` as for any import: the images sharing manifests (two tags of one index, the
    // nested index of it) are pushed at once.
    let report = env.path("import.json");
    let out = import(
        &env,
        &layout,
        &to,
        &["--repository", "quay.io/acme/app", "--report", &report],
    );
    assert!(out.status.success());
    let r = read_report(Path::new(&report));
    assert_eq!(r["summary"]["copied"], 4, "{r:#}");
    let at = |key: &str| format!("{}/sk/acme/app{key}", dest.address);
    assert_eq!(dest_digest(&env, &at(":multi")), Some(index.digest.clone()));
    assert_eq!(
        dest_digest(&env, &at(":latest")),
        Some(index.digest.clone())
    );
    assert_eq!(dest_digest(&env, &at(":one")), Some(single.digest.clone()));
    let nested = at(&format!("@{outer_digest}"));
    assert_eq!(dest_digest(&env, &nested), Some(outer_digest.clone()));
    // Every manifest under it is there by digest (skopeo cannot copy a nested index out).
    for (child, _, _) in &index.manifests {
        assert_eq!(
            dest_digest(&env, &at(&format!("@{child}"))),
            Some(child.clone())
        );
    }
}
