//! Registry credentials from the files users already have: an OpenShift pull-secret.json, a
//! Docker `config.json` or a containers `auth.json` (all the same `{"auths": {host: {auth}}}`
//! shape).
//!
//! Lookup order matches podman/skopeo: `--authfile`, `REGISTRY_AUTH_FILE`,
//! `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.docker/config.json`. Keys are `host`,
//! `host/namespace` or `host/namespace/repo` (containers-auth.json(5)); the transport asks per
//! repository and the most specific matching key wins, so one pull secret can hold different
//! robots for different orgs of one registry. Secrets never leave this module in printable
//! form: [`Credentials`] redacts itself in `Debug`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine as _;
use serde::Deserialize;

/// A username and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    /// Decode the base64 `user:password` of an `auths` entry, splitting on the FIRST colon:
    /// passwords and tokens may contain colons, usernames may not.
    pub fn from_auth_field(auth: &str) -> Result<Credentials, String> {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| "`auth` is not valid base64".to_string())?;
        let text = String::from_utf8(decoded)
            .map_err(|_| "`auth` does not decode to UTF-8".to_string())?;
        let (username, password) = text
            .split_once(':')
            .ok_or_else(|| "`auth` does not decode to `user:password`".to_string())?;
        Ok(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        })
    }
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Credentials by registry host, as read from one auth file.
#[derive(Clone, Debug, Default)]
pub struct AuthStore {
    by_host: BTreeMap<String, Credentials>,
    pub source: Option<PathBuf>,
}

impl AuthStore {
    /// Find and load the auth file: the explicit one must exist; the implicit ones are used
    /// only when present.
    pub fn discover(explicit: Option<&Path>) -> Result<AuthStore> {
        if let Some(path) = explicit {
            return AuthStore::load(path);
        }
        let mut candidates = Vec::new();
        if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
            // Named by the user: a missing file is their mistake, not a fallback.
            return AuthStore::load(Path::new(&p)).context("REGISTRY_AUTH_FILE");
        }
        if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
            candidates.push(PathBuf::from(dir).join("containers/auth.json"));
        }
        if let Some(home) = std::env::var_os("HOME") {
            candidates.push(PathBuf::from(home).join(".docker/config.json"));
        }
        for path in candidates {
            if path.is_file() {
                return AuthStore::load(&path);
            }
        }
        Ok(AuthStore::default())
    }

    pub fn load(path: &Path) -> Result<AuthStore> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read auth file {}", path.display()))?;
        AuthStore::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<AuthStore> {
        let file: AuthFile = serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("{}: not a valid auth file: {e}", path.display()))?;
        let mut by_host = BTreeMap::new();
        for (key, entry) in file.auths {
            let creds = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => Credentials::from_auth_field(&auth)
                    .map_err(|e| anyhow::anyhow!("{}: auths.{key}: {e}", path.display()))?,
                (_, Some(username), Some(password)) => Credentials { username, password },
                _ => continue,
            };
            by_host.insert(normalise_key(&key), creds);
        }
        Ok(AuthStore {
            by_host,
            source: Some(path.to_path_buf()),
        })
    }

    /// Credentials for `repository` of `host` (a `host[:port]`): the most specific key of
    /// `host/namespace/…/repo`, …, `host/namespace`, `host` that the file has.
    pub fn get(&self, host: &str, repository: Option<&str>) -> Option<&Credentials> {
        if let Some(repo) = repository {
            let mut path = format!("{host}/{repo}");
            loop {
                if let Some(c) = self.by_host.get(&path) {
                    return Some(c);
                }
                match path.rfind('/') {
                    Some(i) if i > host.len() => path.truncate(i),
                    _ => break,
                }
            }
        }
        self.by_host.get(host)
    }

    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.by_host.keys().map(String::as_str)
    }

    pub fn insert(&mut self, host: &str, creds: Credentials) {
        self.by_host.insert(normalise_key(host), creds);
    }
}

/// Docker's config keys may be URLs (`https://index.docker.io/v1/`); reduce them to hosts.
fn normalise_key(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let k = k
        .strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn splits_on_first_colon() {
        let c = Credentials::from_auth_field(&b64("user:pa:ss:word")).unwrap();
        assert_eq!(c.username, "user");
        assert_eq!(c.password, "pa:ss:word");
        assert!(!format!("{c:?}").contains("pa:ss"));
    }

    #[test]
    fn parses_pull_secret_and_docker_keys() {
        let text = format!(
            r#"{{"auths":{{"quay.io":{{"auth":"{}","email":"x@y"}},"https://index.docker.io/v1/":{{"auth":"{}"}},"quay.io/openshift-release-dev":{{"auth":"{}"}}}}}}"#,
            b64("a:1"),
            b64("b:2"),
            b64("c:3")
        );
        let store = AuthStore::parse(&text, Path::new("ps.json")).unwrap();
        assert_eq!(store.get("quay.io", None).unwrap().username, "a");
        assert_eq!(store.get("docker.io", None).unwrap().username, "b");
        assert_eq!(
            store
                .get("quay.io", Some("openshift-release-dev/ocp-release"))
                .unwrap()
                .username,
            "c"
        );
        assert_eq!(store.get("quay.io", Some("other/x")).unwrap().username, "a");
        // A repository key beats its namespace's, which beats the host's; a key only matches
        // whole path segments.
        let mut store = store;
        store.insert(
            "quay.io/openshift-release-dev/ocp-release",
            Credentials::from_auth_field(&b64("d:4")).unwrap(),
        );
        let user = |repo: &str| store.get("quay.io", Some(repo)).unwrap().username.clone();
        assert_eq!(user("openshift-release-dev/ocp-release"), "d");
        assert_eq!(user("openshift-release-dev/ocp-v4.0-art-dev"), "c");
        assert_eq!(user("openshift-release-dev-x/y"), "a");
    }

    #[test]
    fn bad_auth_names_file_and_host_without_secret() {
        let text = r#"{"auths":{"quay.io":{"auth":"!!!notbase64"}}}"#;
        let err = AuthStore::parse(text, Path::new("ps.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ps.json") && err.contains("auths.quay.io"),
            "{err}"
        );
        assert!(!err.contains("notbase64"));
        let err = AuthStore::parse("{", Path::new("ps.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ps.json"), "{err}");
    }
}
