//! Exact air-gap deltas against the lab's real registries: inventory by digest over a whole
//! release, `--since-last` bundle chains recorded in the state's `shipped` table, an import
//! that refuses a registry lacking the base, clean export failures (ENOSPC on a real tmpfs,
//! SIGTERM), bundles that point outside themselves, and the `--jobs`/`--segment-size` minimums.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::faultproxy::{Fault, FaultProxy, Rule};
use common::{lab, read_report, sha256_hex, skopeo, Env};
use prewarm_lab::ocp_content::{OcpContent, RELEASE_REPOSITORY};
use prewarm_lab::seed::SeededImage;
use prewarm_lab::ExtraRegistry;

/// An auth file with the lab user for the upstream and for `dest`.
fn auth_with(env: &Env, dest: &ExtraRegistry) {
    env.auth_with(dest);
}

fn ca(env: &Env) -> String {
    env.ca()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The sha256 of the manifest bytes the destination serves for `reference`.
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

fn writes(env: &Env, dest: &ExtraRegistry) -> usize {
    env.lab
        .registry_requests(dest)
        .unwrap()
        .iter()
        .filter(|(m, _, _)| m == "PUT" || m == "POST" || m == "PATCH")
        .count()
}

/// digest → size of a `bundle.json` list (`blobs` or `manifests`).
fn listed(bundle: &Path, field: &str) -> BTreeMap<String, u64> {
    read_report(&bundle.join("bundle.json"))[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["digest"].as_str().unwrap().to_string(),
                x["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Names in a directory (sorted).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Nothing of a bundle is left: no bundle.json, no segment, no temp segment.
fn assert_no_bundle_files(dir: &Path) {
    let left: Vec<String> = names(dir)
        .into_iter()
        .filter(|n| n.contains("bundle."))
        .collect();
    assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
}

/// The lab job's cache and registries, without its image list, plus `extra`.
fn job_with(env: &Env, name: &str, extra: &str) -> String {
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

/// Every blob and manifest (digest → size) of the images of a release as the plan has them:
/// the payload, its components and, for 4.20.3, its cosign signature.
fn release_content(
    c: &OcpContent,
    version: &str,
) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let by_digest: BTreeMap<&str, &SeededImage> =
        c.images.iter().map(|i| (i.digest.as_str(), i)).collect();
    let mut images: Vec<&SeededImage> = vec![&c.releases[version]];
    for (_, r) in &c.components[version] {
        let digest = r.split_once('@').unwrap().1;
        images.push(by_digest[digest]);
    }
    if version == "4.20.3" {
        images.push(&c.cosign);
    }
    let mut blobs = BTreeMap::new();
    let mut manifests = BTreeMap::new();
    for i in images {
        blobs.extend(i.blobs.iter().cloned());
        manifests.extend(i.manifests.iter().map(|(d, _, s)| (d.clone(), *s)));
    }
    (blobs, manifests)
}

fn minus(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    a.iter()
        .filter(|(d, _)| !b.contains_key(*d))
        .map(|(d, s)| (d.clone(), *s))
        .collect()
}

#[test]
fn a_whole_release_imported_is_inventoried_by_digest_and_the_delta_is_exactly_the_change() {
    let mut env = lab("delta-release");
    let c = rt().block_on(env.lab.seed_ocp()).expect("seed OCP content");
    let dest = env.lab.start_registry("far").unwrap();
    auth_with(&env, &dest);
    let job = job_with(
        &env,
        "release.yaml",
        "releases:\n- quay.io/openshift-release-dev/ocp-release:4.20.1-x86_64\n",
    );
    let to = format!("{}/mirror", dest.address);
    let state = env.path("state.db");
    let full = env.dir.join("full");
    let out = env.prewarm(&[
        "export",
        &job,
        "-o",
        full.to_str().unwrap(),
        "--state",
        &state,
    ]);
    assert!(out.status.success());
    let (want_blobs, want_manifests) = release_content(&c, "4.20.1");
    assert_eq!(listed(&full, "blobs"), want_blobs);
    assert_eq!(listed(&full, "manifests"), want_manifests);
    let out = env.prewarm(&[
        "import",
        full.to_str().unwrap(),
        "--to",
        &to,
        "--to-ca",
        &ca(&env),
        "--state",
        &state,
    ]);
    assert!(out.status.success());

    // Components live by digest only: no tag to list, yet every image is found whole.
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
    let inv = read_report(Path::new(&inventory));
    let images = inv["images"].as_object().unwrap();
    assert_eq!(images.len(), 1 + c.components["4.20.1"].len(), "{inv:#}");
    assert!(images.values().all(|i| i["whole"] == true), "{inv:#}");
    let component_repo = "mirror/openshift-release-dev/ocp-v4.0-art-dev";
    assert_eq!(
        inv["repositories"][component_repo]["manifests"]
            .as_array()
            .unwrap()
            .len(),
        c.components["4.20.1"].len()
    );
    // The release's tag is listed where it exists.
    assert_eq!(
        inv["repositories"][format!("mirror/{RELEASE_REPOSITORY}")]["tags"]["4.20.1-x86_64"],
        c.releases["4.20.1"].digest.as_str()
    );

    // Against it, an export carries nothing.
    let nothing = env.dir.join("nothing");
    let out = env.prewarm(&[
        "export",
        &job,
        "-o",
        nothing.to_str().unwrap(),
        "--have",
        &inventory,
    ]);
    assert!(out.status.success());
    assert!(listed(&nothing, "blobs").is_empty());
    assert!(listed(&nothing, "manifests").is_empty());
    let b = read_report(&nothing.join("bundle.json"));
    assert_eq!(b["present"].as_array().unwrap().len(), want_blobs.len());
    assert_eq!(
        b["present_manifests"].as_array().unwrap().len(),
        want_manifests.len()
    );

    // Upstream, the release tag moves to a payload where one component (console) changed.
    let quay = env.lab.quay_addr();
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{quay}/{RELEASE_REPOSITORY}:4.20.3-x86_64"),
    ]);
    assert!(raw.status.success());
    rt().block_on(async {
        use prewarm_lab::seed::{Manifest, Pusher};
        let pusher = Pusher::new(&env.lab.quay_target()).await.unwrap();
        let manifest = Manifest {
            digest: format!("sha256:{}", sha256_hex(&raw.stdout)),
            media_type: c.releases["4.20.3"].media_type.clone(),
            bytes: raw.stdout.clone().into(),
        };
        pusher
            .push_manifest(RELEASE_REPOSITORY, Some("4.20.1-x86_64"), &manifest)
            .await
            .unwrap();
    });
    let (new_blobs, new_manifests) = release_content(&c, "4.20.3");
    let delta_blobs = minus(&new_blobs, &want_blobs);
    let delta_manifests = minus(&new_manifests, &want_manifests);
    // The new payload, the new console and the payload's signature; nothing else.
    assert_eq!(delta_manifests.len(), 3, "{delta_manifests:?}");

    let delta = env.dir.join("delta");
    let out = env.prewarm(&[
        "export",
        &job,
        "-o",
        delta.to_str().unwrap(),
        "--have",
        &inventory,
    ]);
    assert!(out.status.success());
    let (got_blobs, got_manifests) = (listed(&delta, "blobs"), listed(&delta, "manifests"));
    assert_eq!(got_blobs, delta_blobs);
    assert_eq!(got_manifests, delta_manifests);
    let bytes = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    assert_eq!(
        bytes(&got_blobs) + bytes(&got_manifests),
        bytes(&delta_blobs) + bytes(&delta_manifests)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!(
        "{} blobs and {} manifests inside",
        delta_blobs.len(),
        delta_manifests.len()
    )));

    // Imported, the far site serves the new payload under the old tag.
    let out = env.prewarm(&[
        "import",
        delta.to_str().unwrap(),
        "--to",
        &to,
        "--to-ca",
        &ca(&env),
        "--state",
        &state,
    ]);
    assert!(out.status.success());
    env.lab.stop_upstreams();
    assert_eq!(
        dest_digest(
            &env,
            &format!("{}/mirror/{RELEASE_REPOSITORY}:4.20.1-x86_64", dest.address)
        )
        .as_deref(),
        Some(c.releases["4.20.3"].digest.as_str())
    );
    for (_, r) in &c.components["4.20.3"] {
        let digest = r.split_once('@').unwrap().1;
        let at = format!("{}/{component_repo}@{digest}", dest.address);
        assert_eq!(dest_digest(&env, &at).as_deref(), Some(digest), "{at}");
    }
    // Both imports recorded what they put at the site, under its `--to`.
    let s = prewarm::state::State::open(Path::new(&state)).unwrap();
    let shipped: BTreeSet<String> = s
        .shipped_to(&to)
        .unwrap()
        .into_iter()
        .map(|i| i.digest.to_string())
        .collect();
    assert!(new_blobs.keys().all(|d| shipped.contains(d)));
    assert!(want_manifests.keys().all(|d| shipped.contains(d)));
}

#[test]
fn a_since_last_chain_carries_exactly_the_change_and_needs_its_base_at_the_destination() {
    let mut env = lab("delta-chain");
    let far = env.lab.start_registry("chainfar").unwrap();
    let empty = env.lab.start_registry("chainempty").unwrap();
    auth_with(&env, &far);
    auth_with(&env, &empty);
    let job = env.job.to_str().unwrap().to_string();
    let state = env.path("near-state.db");
    let to = format!("{}/mirror", far.address);

    // Night 1: a full bundle, recorded for site `far`, imported there.
    let first = env.dir.join("night-1");
    let out = env.prewarm(&[
        "export",
        &job,
        "-o",
        first.to_str().unwrap(),
        "--site",
        "far",
        "--state",
        &state,
    ]);
    assert!(out.status.success());
    let b1 = read_report(&first.join("bundle.json"));
    assert!(b1.get("base").is_none());
    let inside_first = listed(&first, "blobs");
    let out = env.prewarm(&[
        "import",
        first.to_str().unwrap(),
        "--to",
        &to,
        "--to-ca",
        &ca(&env),
        "--state",
        &env.path("far-state.db"),
    ]);
    assert!(out.status.success());
    // The far site, offline, inventories itself against the bundle's own image list.
    for (registry, whole) in [
        (to.clone(), true),
        (format!("{}/mirror", empty.address), false),
    ] {
        let inventory = env.path("bundle-inventory.json");
        let out = env.prewarm(&[
            "inventory",
            "--registry",
            &registry,
            "--bundle",
            first.to_str().unwrap(),
            "--ca",
            &ca(&env),
            "-o",
            &inventory,
        ]);
        assert!(out.status.success());
        let inv = read_report(Path::new(&inventory));
        let images = inv["images"].as_object().unwrap();
        assert_eq!(images.len(), b1["images"].as_array().unwrap().len());
        assert!(images.values().all(|i| i["whole"] == whole), "{inv:#}");
    }
    let s = prewarm::state::State::open(Path::new(&state)).unwrap();
    let shipped = s.shipped_to("far").unwrap();
    let shipped_blobs: BTreeSet<String> = shipped
        .iter()
        .filter(|i| i.kind == prewarm::state::ShippedKind::Blob)
        .map(|i| i.digest.to_string())
        .collect();
    assert_eq!(
        shipped_blobs,
        inside_first.keys().cloned().collect::<BTreeSet<_>>()
    );
    drop(s);

    // Upstream, one tagged image changes: a new layer and config under the same tag.
    let changed = rt().block_on(async {
        use prewarm_lab::seed::{tar_layer, Compression, Format, ImageSpec, Pusher};
        let pusher = Pusher::new(&env.lab.quay_target()).await.unwrap();
        let layer = tar_layer(
            &[("etc/nightly", prewarm_lab::seed::random_bytes(7, 300_000))],
            Compression::Gzip,
        );
        let labels = [("night".to_string(), "2".to_string())]
            .into_iter()
            .collect();
        let spec = ImageSpec::linux(Format::Oci, "amd64", labels, vec![layer]);
        pusher
            .push_image("openshift/origin-cli", Some("4.20"), &spec)
            .await
            .unwrap()
    });

    // Night 2: only what no earlier bundle carried to `far`, no inventory round trip.
    let second = env.dir.join("night-2");
    let out = env.prewarm(&[
        "export",
        &job,
        "-o",
        second.to_str().unwrap(),
        "--since-last",
        "far",
        "--state",
        &state,
    ]);
    assert!(out.status.success());
    let b2 = read_report(&second.join("bundle.json"));
    assert_eq!(b2["base"]["id"], b1["id"]);
    assert_eq!(
        b2["base"]["digest"].as_str().unwrap(),
        format!(
            "sha256:{}",
            sha256_hex(&std::fs::read(first.join("bundle.json")).unwrap())
        )
    );
    assert_ne!(b2["id"], b1["id"]);
    let want_blobs: BTreeMap<String, u64> = changed.blobs.iter().cloned().collect();
    let want_manifests: BTreeMap<String, u64> = changed
        .manifests
        .iter()
        .map(|(d, _, s)| (d.clone(), *s))
        .collect();
    assert_eq!(listed(&second, "blobs"), want_blobs);
    assert_eq!(listed(&second, "manifests"), want_manifests);
    assert!(b2["present"].as_array().unwrap().len() > 10);

    // Into a registry that never got night 1: refused before any push, naming what is missing.
    let out = env.prewarm(&[
        "import",
        second.to_str().unwrap(),
        "--to",
        &format!("{}/mirror", empty.address),
        "--to-ca",
        &ca(&env),
        "--state",
        &env.path("other-state.db"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    // One error line (the others are progress lines: stderr is not a terminal here).
    let errors: Vec<&str> = err.lines().filter(|l| !l.starts_with("import: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].starts_with("error: "), "{err}");
    // It counts and names what the bundle leaves out (night 1's content).
    assert!(
        errors[0].contains(&format!(
            "{} blob(s) and {} manifest(s) the bundle leaves out are not at",
            b2["present"].as_array().unwrap().len(),
            b2["present_manifests"].as_array().unwrap().len()
        )),
        "{err}"
    );
    let left_out: BTreeSet<&str> = b2["present"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["digest"].as_str().unwrap())
        .chain(
            b2["present_manifests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_str().unwrap()),
        )
        .collect();
    let named: Vec<&str> = errors[0]
        .split([' ', ','])
        .filter(|w| w.starts_with("sha256:") && w.len() == 71)
        .collect();
    assert!(named.len() >= 20, "{err}");
    assert!(named[..20].iter().all(|d| left_out.contains(d)), "{err}");
    assert!(
        err.contains(b1["id"].as_str().unwrap()) && err.contains("import that one first"),
        "{err}"
    );
    assert_eq!(writes(&env, &empty), 0, "a push happened before the check");

    // Into the far site: the new image under its tag, everything else unchanged.
    let out = env.prewarm(&[
        "import",
        second.to_str().unwrap(),
        "--to",
        &to,
        "--to-ca",
        &ca(&env),
        "--state",
        &env.path("far-state.db"),
    ]);
    assert!(out.status.success());
    env.lab.stop_upstreams();
    let tag = format!("{}/mirror/openshift/origin-cli:4.20", far.address);
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
        let r: prewarm::reference::Reference = image.reference.parse().unwrap();
        let at = format!("{}/mirror/{}@{}", far.address, r.repository(), image.digest);
        assert_eq!(
            dest_digest(&env, &at).as_deref(),
            Some(image.digest.as_str()),
            "{at}"
        );
    }
}

/// A tmpfs of `size` mounted at `at` (unmounted on drop).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: u64) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount (the tests run as root)");
        assert!(ok.success(), "mount -t tmpfs at {}", at.display());
        Tmpfs(at.to_path_buf())
    }
    fn resize(&self, size: u64) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn an_export_out_of_space_leaves_nothing_says_the_os_error_and_a_rerun_completes() {
    let env = lab("delta-enospc");
    let job = env.job.to_str().unwrap().to_string();

    // At segment time: a 1 MiB filesystem for a bundle of several.
    let small = Tmpfs::mount(&env.dir.join("small"), 1 << 20);
    let bundle = small.0.join("bundle");
    let out = env.prewarm(&[
        "export",
        &job,
        "-o",
        bundle.to_str().unwrap(),
        "--segment-size",
        "1M",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("No space left on device") && err.contains("os error 28"),
        "{err}"
    );
    assert!(!err.contains("the bundle writer stopped"), "{err}");
    assert_no_bundle_files(&bundle);
    // With room, the rerun completes.
    small.resize(256 << 20);
    let out = env.prewarm(&[
        "export",
        &job,
        "-o",
        bundle.to_str().unwrap(),
        "--segment-size",
        "1M",
    ]);
    assert!(out.status.success());
    assert!(env
        .prewarm(&["bundle", "verify", bundle.to_str().unwrap()])
        .status
        .success());

    // At bundle.json time: room for exactly the segments (the same bytes again) and less
    // than bundle.json.
    let segments: u64 = read_report(&bundle.join("bundle.json"))["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["size"].as_u64().unwrap().div_ceil(4096) * 4096)
        .sum();
    let manifest_len = std::fs::metadata(bundle.join("bundle.json")).unwrap().len();
    assert!(manifest_len > 16384, "bundle.json is {manifest_len} bytes");
    let tight = Tmpfs::mount(&env.dir.join("tight"), segments + 8192);
    let bundle = tight.0.join("bundle");
    let out = env.prewarm(&[
        "export",
        &job,
        "-o",
        bundle.to_str().unwrap(),
        "--segment-size",
        "1M",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bundle.json") && err.contains("No space left on device (os error 28)"),
        "{err}"
    );
    assert_no_bundle_files(&bundle);
    tight.resize(segments + (1 << 20));
    let out = env.prewarm(&[
        "export",
        &job,
        "-o",
        bundle.to_str().unwrap(),
        "--segment-size",
        "1M",
    ]);
    assert!(out.status.success());
    assert!(env
        .prewarm(&["bundle", "verify", bundle.to_str().unwrap()])
        .status
        .success());
}

#[test]
fn an_export_on_a_read_only_filesystem_says_so() {
    let env = lab("delta-erofs");
    let job = env.job.to_str().unwrap().to_string();
    let ro = env.dir.join("ro");
    std::fs::create_dir_all(ro.join("bundle")).unwrap();
    let fs = Tmpfs::mount(&ro.join("bundle"), 64 << 20);
    let ok = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&fs.0)
        .status()
        .unwrap();
    assert!(ok.success());
    let out = env.prewarm(&["export", &job, "-o", fs.0.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Read-only file system") && err.contains("os error 30"),
        "{err}"
    );
    assert_no_bundle_files(&fs.0);
}

#[test]
fn sigterm_mid_export_leaves_nothing_and_a_rerun_completes() {
    let env = lab("delta-sigterm");
    let rt = rt();
    let job_through = |addr: &str, name: &str| {
        let text = std::fs::read_to_string(&env.job).unwrap().replace(
            &format!("endpoint: {}", env.lab.quay_addr()),
            &format!("endpoint: {addr}"),
        );
        let path = env.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    // The blobs planning reads (configs, and layers of what it looks inside), seen through a
    // proxy with no fault.
    let watch = rt.block_on(FaultProxy::start(&env.lab.quay_addr(), Vec::new()));
    let plan_job = job_through(&watch.addr, "job-watch.yaml");
    assert!(env
        .prewarm(&["plan", plan_job.to_str().unwrap()])
        .status
        .success());
    let planning: BTreeSet<String> = watch
        .seen()
        .into_iter()
        .filter(|r| r.path.contains("/blobs/"))
        .map(|r| r.path.rsplit('/').next().unwrap().to_string())
        .collect();
    drop(watch);
    // The smallest quay blob planning does not read: the export fetches blobs biggest first,
    // so by then most of the bundle is in its temp segments. Stall it there.
    let (layer, _) = env
        .seed
        .images
        .iter()
        .filter(|i| i.reference.starts_with("quay.io/"))
        .flat_map(|i| i.blobs.iter())
        .filter(|(d, _)| !planning.contains(d))
        .min_by_key(|(_, size)| *size)
        .expect("a quay blob planning does not read")
        .clone();
    let rules = vec![Rule::new(
        &format!("/blobs/{layer}"),
        1,
        Fault::Stall(Duration::from_secs(300)),
    )];
    let proxy = rt.block_on(FaultProxy::start(&env.lab.quay_addr(), rules));
    let slow_job = job_through(&proxy.addr, "job-slow.yaml");
    let bundle = env.dir.join("bundle");
    let child = Command::new(env!("CARGO_BIN_EXE_prewarm"))
        .args(["--timeout", "300", "export"])
        .arg(&slow_job)
        .args(["-o", bundle.to_str().unwrap(), "--segment-size", "1M"])
        .arg("--authfile")
        .arg(&env.auth)
        .env_remove("REGISTRY_AUTH_FILE")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let parts = names(&bundle).iter().any(|n| n.ends_with(".part"));
        if proxy.fired()[0] > 0 && parts {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the export never reached the stall (fired {:?}, files {:?}): {}",
                proxy.fired(),
                names(&bundle),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the export ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("stopped by SIGTERM"), "{err}");
    assert_no_bundle_files(&bundle);

    let job = env.job.to_str().unwrap().to_string();
    let out = env.prewarm(&["export", &job, "-o", bundle.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(env
        .prewarm(&["bundle", "verify", bundle.to_str().unwrap()])
        .status
        .success());
}

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_prewarm"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bundle_cannot_name_a_segment_outside_its_directory() {
    let root = std::env::temp_dir().join(format!("prewarm-escape-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("bundle");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    // A file outside the bundle that a `../` name would reach: it must never be read.
    std::fs::write(root.join("x"), b"x").unwrap();
    for bad in ["../x", "/etc/hostname", "sub/../../x"] {
        let manifest = serde_json::json!({
            "format": "prewarm-bundle/1",
            "created_at": 0,
            "compression": "zstd",
            "segments": [
                {"name": "bundle.0000.tar.zst", "size": 1, "sha256": "00"},
                {"name": bad, "size": 1, "sha256": sha256_hex(b"x")},
            ],
            "images": [], "blobs": [], "manifests": [], "tar_bytes": 0,
        });
        std::fs::write(dir.join("bundle.json"), manifest.to_string()).unwrap();
        for args in [
            vec!["bundle", "verify", d],
            vec!["import", d, "--to", "127.0.0.1:1/x"],
        ] {
            let (code, err) = run(&args);
            assert_eq!(code, Some(2), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(
                err.contains("segments[1].name") && err.contains(&format!("`{bad}`")),
                "{err}"
            );
        }
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn jobs_zero_and_tiny_segments_are_refused_everywhere() {
    let job = "/nonexistent/job.yaml";
    for args in [
        vec!["warm", job, "--jobs", "0"],
        vec!["verify", job, "-j", "0"],
        vec!["plan", job, "--jobs", "0"],
        vec!["refresh", job, "--jobs", "0"],
        vec!["copy", job, "--to", "127.0.0.1:1", "--jobs", "0"],
        vec![
            "import",
            "/nonexistent",
            "--to",
            "127.0.0.1:1",
            "--jobs",
            "0",
        ],
        vec!["inventory", "--registry", "127.0.0.1:1", "--jobs", "0"],
    ] {
        let (code, err) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.contains("--jobs") && err.contains("at least 1"),
            "{args:?}: {err}"
        );
    }
    for size in ["1", "1000K", "0"] {
        let (code, err) = run(&["export", job, "-o", "/tmp/x", "--segment-size", size]);
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains("--segment-size") && err.contains(size),
            "{err}"
        );
    }
}

#[test]
fn import_logs_what_it_is_doing_when_stderr_is_not_a_terminal() {
    let mut env = lab("delta-progress");
    let dest = env.lab.start_registry("progress").unwrap();
    auth_with(&env, &dest);
    let job = env.job.to_str().unwrap().to_string();
    let bundle = env.dir.join("bundle");
    assert!(env
        .prewarm(&["export", &job, "-o", bundle.to_str().unwrap()])
        .status
        .success());
    let out = env.prewarm(&[
        "import",
        bundle.to_str().unwrap(),
        "--to",
        &format!("{}/mirror", dest.address),
        "--to-ca",
        &ca(&env),
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // Manifests and tags are pushed per image as its blobs arrive (the engine pipelines
    // them), so the steps are: verify, then read and push; each is printed as it begins
    // (the blob being read is named on the periodic lines of a longer import).
    for step in [
        "import: verifying 1 segment(s)",
        "import: reading the bundle and pushing its blobs",
    ] {
        assert!(err.lines().any(|l| l.starts_with(step)), "{step}: {err}");
    }
}

#[test]
fn over_plain_http_left_out_blobs_are_proven_by_their_content_length() {
    let env = lab("delta-plain");
    // Over HTTP/1.1 a HEAD's size can only come from its `Content-Length` header.
    let plain = common::plain_registry(&env.dir, "plain");
    let job = env.job.to_str().unwrap().to_string();
    let state = env.path("state.db");
    let to = format!("{}/mirror", plain.addr);
    let first = env.dir.join("first");
    assert!(env
        .prewarm(&[
            "export",
            &job,
            "-o",
            first.to_str().unwrap(),
            "--site",
            "p",
            "--state",
            &state
        ])
        .status
        .success());
    let import = |dir: &Path| {
        env.prewarm(&[
            "import",
            dir.to_str().unwrap(),
            "--to",
            &to,
            "--to-insecure",
            "--state",
            &env.path("far-state.db"),
        ])
    };
    assert!(import(&first).status.success());
    // Nothing changed: the next bundle carries nothing, and its import proves every left-out
    // blob by size and every manifest by digest over HTTP/1.1.
    let second = env.dir.join("second");
    assert!(env
        .prewarm(&[
            "export",
            &job,
            "-o",
            second.to_str().unwrap(),
            "--since-last",
            "p",
            "--state",
            &state
        ])
        .status
        .success());
    assert!(listed(&second, "blobs").is_empty());
    assert!(listed(&second, "manifests").is_empty());
    assert!(import(&second).status.success());
    let inventory = env.path("inventory.json");
    let out = env.prewarm(&[
        "inventory",
        "--registry",
        &to,
        "--bundle",
        first.to_str().unwrap(),
        "--insecure",
        "-o",
        &inventory,
    ]);
    assert!(out.status.success());
    let inv = read_report(Path::new(&inventory));
    let images = inv["images"].as_object().unwrap();
    assert_eq!(images.len(), env.seed.images.len());
    assert!(images.values().all(|i| i["whole"] == true), "{inv:#}");
}
