//! Namespace-scoped auth file keys (containers-auth.json(5)): `host`, `host/namespace` and
//! `host/namespace/repo`, the most specific match for the repository winning — for pulls
//! (`plan` reading the lab's TLS+htpasswd registry.redhat.io stand-in) and for pushes (`copy`
//! into a TLS+htpasswd destination). Each wrong entry carries its own user name, so a refusal
//! shows which key was used.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use common::{lab, Env};

/// Write an auth file with `entries` (key, user, password) and return its path.
fn auth_file(env: &Env, name: &str, entries: &[(&str, &str, &str)]) -> PathBuf {
    let auths: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(key, user, password)| {
            let auth =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            (key.to_string(), serde_json::json!({ "auth": auth }))
        })
        .collect();
    let path = env.dir.join(name);
    std::fs::write(&path, serde_json::json!({ "auths": auths }).to_string()).unwrap();
    path
}

/// The lab job with only `image` as its source.
fn job_of(env: &Env, image: &str) -> PathBuf {
    let text = std::fs::read_to_string(&env.job).unwrap();
    let text = text.replace(
        "image_lists: [images.txt]",
        &format!("images: [\"{image}\"]"),
    );
    assert!(text.contains(image));
    let path = env
        .dir
        .join(format!("job-{}.yaml", image.replace(['/', ':'], "_")));
    std::fs::write(&path, text).unwrap();
    path
}

/// Run prewarm with `auth` as the auth file.
fn run(auth: &Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_prewarm"))
        .args(args)
        .arg("--authfile")
        .arg(auth)
        .env_remove("REGISTRY_AUTH_FILE")
        // Keep the default state database beside the auth file (the lab), not in $HOME.
        .env("XDG_STATE_HOME", auth.parent().unwrap().join("xdg-state"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    eprintln!("prewarm {}: {}\n{stderr}", args.join(" "), out.status);
    (out.status.success(), stderr)
}

/// `image` resolves (pull) with the auth file, or is refused naming `user`.
fn assert_pull(env: &Env, auth: &Path, image: &str, refused_for: Option<&str>) {
    let job = job_of(env, image);
    let (ok, stderr) = run(auth, &["plan", job.to_str().unwrap(), "-q"]);
    match refused_for {
        None => assert!(ok, "{image} should resolve: {stderr}"),
        Some(user) => {
            assert!(!ok, "{image} should be refused: {stderr}");
            assert!(
                stderr.contains(&format!("refused the credentials for user `{user}`")),
                "{image}: the `{user}` entry was used: {stderr}"
            );
        }
    }
}

/// `image` copies (push) to `to` with the auth file, or is refused naming `user`.
fn assert_push(env: &Env, auth: &Path, image: &str, to: &str, refused_for: Option<&str>) {
    let job = job_of(env, image);
    let ca = env.lab.ca_cert.to_str().unwrap();
    let (ok, stderr) = run(
        auth,
        &[
            "copy",
            job.to_str().unwrap(),
            "--to",
            to,
            "--to-ca",
            ca,
            "-q",
        ],
    );
    match refused_for {
        None => assert!(ok, "{image} → {to} should be pushed: {stderr}"),
        Some(user) => {
            assert!(!ok, "{image} → {to} should be refused: {stderr}");
            assert!(
                stderr.contains(&format!("refused the credentials for user `{user}`")),
                "{image} → {to}: the `{user}` entry was used: {stderr}"
            );
        }
    }
}

#[test]
fn the_most_specific_auth_key_wins_for_pulls_and_pushes() {
    let mut env = lab("auth-scopes");
    let (user, password) = (env.lab.user.clone(), env.lab.password.clone());
    let good = |key: &'static str| (key, user.as_str(), password.as_str());

    // Pulls from registry.redhat.io (htpasswd): ubi9/ubi, ubi9/ubi-minimal, rhel9/support-tools.
    let h = "registry.redhat.io";
    let ubi = "registry.redhat.io/ubi9/ubi:latest";
    let minimal = "registry.redhat.io/ubi9/ubi-minimal:latest";
    let tools = "registry.redhat.io/rhel9/support-tools:latest";

    let auth = auth_file(&env, "host.json", &[good(h)]);
    assert_pull(&env, &auth, ubi, None);

    let auth = auth_file(
        &env,
        "ns.json",
        &[(h, "wrong-host", "x"), good("registry.redhat.io/ubi9")],
    );
    assert_pull(&env, &auth, ubi, None);
    assert_pull(&env, &auth, tools, Some("wrong-host"));

    let auth = auth_file(
        &env,
        "repo.json",
        &[
            (h, "wrong-host", "x"),
            ("registry.redhat.io/ubi9", "wrong-ns", "x"),
            good("registry.redhat.io/ubi9/ubi"),
        ],
    );
    assert_pull(&env, &auth, ubi, None);
    assert_pull(&env, &auth, minimal, Some("wrong-ns"));
    assert_pull(&env, &auth, tools, Some("wrong-host"));

    // The most specific key wins even where a less specific one would work.
    let auth = auth_file(
        &env,
        "specific-wrong.json",
        &[good(h), ("registry.redhat.io/ubi9/ubi", "wrong-repo", "x")],
    );
    assert_pull(&env, &auth, ubi, Some("wrong-repo"));
    assert_pull(&env, &auth, minimal, None);

    // Pushes into a TLS+htpasswd destination: `--to D/pfx` puts quay.io/openshift/origin-cli
    // at `pfx/openshift/origin-cli`.
    let dest = env.lab.start_registry("auth-dest").unwrap();
    let d = dest.address.clone();
    let image = "quay.io/openshift/origin-cli:4.20";
    let key = |suffix: &str| format!("{d}{suffix}");
    let (k_host, k_ns, k_repo) = (key(""), key("/pfx"), key("/pfx/openshift/origin-cli"));
    let to_pfx = format!("{d}/pfx");
    let to_other = format!("{d}/other");

    let auth = auth_file(&env, "push-host.json", &[(&k_host, &user, &password)]);
    assert_push(&env, &auth, image, &to_pfx, None);

    let auth = auth_file(
        &env,
        "push-ns.json",
        &[(&k_host, "wrong-host", "x"), (&k_ns, &user, &password)],
    );
    assert_push(&env, &auth, image, &to_pfx, None);
    assert_push(&env, &auth, image, &to_other, Some("wrong-host"));

    let auth = auth_file(
        &env,
        "push-repo.json",
        &[
            (&k_host, "wrong-host", "x"),
            (&k_ns, "wrong-ns", "x"),
            (&k_repo, &user, &password),
        ],
    );
    assert_push(&env, &auth, image, &to_pfx, None);
    assert_push(
        &env,
        &auth,
        "quay.io/openshift-release-dev/ocp-release:4.20.0-multi",
        &to_pfx,
        Some("wrong-ns"),
    );

    let auth = auth_file(
        &env,
        "push-specific-wrong.json",
        &[(&k_host, &user, &password), (&k_repo, "wrong-repo", "x")],
    );
    assert_push(&env, &auth, image, &to_pfx, Some("wrong-repo"));
}
