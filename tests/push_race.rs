//! One multi-platform image named several ways in one repository — two tags, its digest, one
//! of its children by digest — pushed with `--jobs 8` by copy and by bundle import into fresh
//! lab registries, several times in a row. docker-registry (distribution's filesystem
//! storage) rewrites a manifest's link in place on every PUT of it, so two images PUTting the
//! same manifest while a third PUTs the index verifying it would see the index refused
//! (DIGEST_INVALID, MANIFEST_BLOB_UNKNOWN). skopeo judges what arrived.

mod common;

use std::path::{Path, PathBuf};

use common::{lab, read_report, sha256_hex, skopeo, Env};
use prewarm_lab::ExtraRegistry;

const REPOSITORY: &str = "openshift-release-dev/ocp-release";
const TAG: &str = "4.20.0-multi";
const SECOND_TAG: &str = "4.20-stable";
/// How many fresh destinations each path pushes into.
const ROUNDS: usize = 4;

/// The seeded release index and the references naming it (and one child) in one repository.
fn names(env: &Env) -> (prewarm_lab::seed::SeededImage, Vec<String>) {
    let index = env
        .seed
        .images
        .iter()
        .find(|i| i.repository == REPOSITORY && i.reference.ends_with(TAG))
        .expect("the seeded multi-platform release")
        .clone();
    assert!(index.manifests.len() > 2, "{:?}", index.manifests);
    let child = &index.manifests[1].0;
    let at = |key: &str| format!("quay.io/{REPOSITORY}{key}");
    let refs = vec![
        at(&format!(":{TAG}")),
        at(&format!(":{SECOND_TAG}")),
        at(&format!("@{}", index.digest)),
        at(&format!("@{child}")),
    ];
    (index, refs)
}

/// The lab job with `images` as its only source, every platform kept.
fn job_of(env: &Env, images: &[String]) -> PathBuf {
    let text = std::fs::read_to_string(&env.job).unwrap();
    let mut text: String = text
        .lines()
        .filter(|l| !l.starts_with("image_lists:") && !l.starts_with("platforms:"))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str("images:\n");
    for image in images {
        text.push_str(&format!("- \"{image}\"\n"));
    }
    let path = env.dir.join("race-job.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The sha256 of the manifest bytes skopeo reads for `docker://REFERENCE`, if it reads any.
fn dest_digest(env: &Env, reference: &str) -> Option<String> {
    let certs = env.dir.join("certs").display().to_string();
    let auth = env.auth.display().to_string();
    let from = format!("docker://{reference}");
    let out = skopeo(&[
        "inspect",
        "--raw",
        "--cert-dir",
        &certs,
        "--authfile",
        &auth,
        &from,
    ]);
    out.status
        .success()
        .then(|| format!("sha256:{}", sha256_hex(&out.stdout)))
}

/// Every name arrived under `ADDR/mirror`, each with the right digest; no image failed.
fn assert_arrived(
    env: &Env,
    dest: &ExtraRegistry,
    index: &prewarm_lab::seed::SeededImage,
    report: &Path,
    round: usize,
) {
    let r = read_report(report);
    assert_eq!(r["summary"]["failed"], 0, "round {round}: {r:#}");
    assert_eq!(r["images"].as_array().unwrap().len(), 4, "{r:#}");
    let at = |key: &str| format!("{}/mirror/{REPOSITORY}{key}", dest.address);
    for tag in [TAG, SECOND_TAG] {
        assert_eq!(
            dest_digest(env, &at(&format!(":{tag}"))),
            Some(index.digest.clone()),
            "round {round}: tag {tag}"
        );
    }
    for (digest, _, _) in &index.manifests {
        assert_eq!(
            dest_digest(env, &at(&format!("@{digest}"))),
            Some(digest.clone()),
            "round {round}: {digest}"
        );
    }
}

#[test]
fn one_image_under_two_tags_and_its_digests_arrives_whole_by_copy_and_by_import() {
    let mut env = lab("push-race");
    let (index, refs) = names(&env);
    // The second tag upstream: the same index, byte for byte.
    let quay = env.lab.quay_addr();
    let from = format!("docker://{quay}/{REPOSITORY}@{}", index.digest);
    let to = format!("docker://{quay}/{REPOSITORY}:{SECOND_TAG}");
    let out = skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &from,
        &to,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = job_of(&env, &refs);
    let job = job.to_str().unwrap();

    push_rounds(&mut env, &index, "copy", job);
    let bundle = env.dir.join("bundle");
    let out = env.prewarm(&["export", job, "-o", bundle.to_str().unwrap()]);
    assert!(out.status.success());
    env.lab.stop_upstreams();
    push_rounds(&mut env, &index, "import", bundle.to_str().unwrap());
}

/// `prewarm COMMAND FROM --to ADDR/mirror --jobs 8` into a fresh registry, ROUNDS times, each
/// time checking everything arrived.
fn push_rounds(env: &mut Env, index: &prewarm_lab::seed::SeededImage, command: &str, from: &str) {
    let ca = env.ca();
    for round in 0..ROUNDS {
        let dest = env
            .lab
            .start_registry(&format!("{command}{round}"))
            .unwrap();
        env.auth_with(&dest);
        let report = env.dir.join(format!("{command}{round}.json"));
        let to = format!("{}/mirror", dest.address);
        let out = env.prewarm(&[
            command,
            from,
            "--to",
            &to,
            "--to-ca",
            &ca,
            "--jobs",
            "8",
            "--report",
            report.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{command}, round {round}");
        assert_arrived(env, &dest, index, &report, round);
    }
}
