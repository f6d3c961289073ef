//! Image references and digests: parsing, normalisation and the newtypes the rest of the
//! crate passes around instead of strings.
//!
//! A reference is `[registry[:port]/]path[:tag][@algorithm:hex]`. Normalisation follows the
//! Docker/containers rules users already know: no registry means `docker.io`, a single path
//! component on docker.io gets `library/`, and no tag and no digest means `:latest`. A
//! reference that carries both a tag and a digest keeps both, because clusters pull by digest
//! while caches record tags.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// A content digest, `algorithm:hex`, checked at construction so a malformed one can never
/// reach a URL or a comparison.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest `{0}` has no algorithm (expected `sha256:<64 hex>`)")]
    NoAlgorithm(String),
    #[error("digest `{0}` uses an unsupported algorithm (sha256 and sha512 are supported)")]
    Algorithm(String),
    #[error("digest `{0}` does not have the right length of lowercase hex")]
    Hex(String),
}

impl Digest {
    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(bytes))
        ))
    }

    pub fn from_sha256_hex(hex: &str) -> Result<Digest, DigestError> {
        format!("sha256:{hex}").parse()
    }

    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map(|(a, _)| a).unwrap_or_default()
    }

    pub fn hex(&self) -> &str {
        self.0.split_once(':').map(|(_, h)| h).unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short form for log lines: `sha256:0123456789ab`.
    pub fn short(&self) -> String {
        let hex = self.hex();
        format!("{}:{}", self.algorithm(), &hex[..hex.len().min(12)])
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(DigestError::NoAlgorithm(s.to_string()));
        };
        let len = match algorithm {
            "sha256" => 64,
            "sha512" => 128,
            _ => return Err(DigestError::Algorithm(s.to_string())),
        };
        if hex.len() != len
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::Hex(s.to_string()));
        }
        Ok(Digest(s.to_string()))
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A normalised image reference. `registry` is the logical host (what users and pull secrets
/// name, e.g. `quay.io`); where it is actually served from is the job's business.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference `{reference}`: {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: String,
}

pub const DOCKER_HUB: &str = "docker.io";

impl Reference {
    pub fn new(
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<Digest>,
    ) -> Self {
        Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest,
        }
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }
    pub fn repository(&self) -> &str {
        &self.repository
    }
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`, the unit that holds blobs and manifests.
    pub fn repo_path(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same image pinned to `digest`, keeping the tag for display and for tag pulls.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// What to put after `/manifests/`: the digest when known, else the tag.
    pub fn manifest_key(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    fn error(reference: &str, reason: impl Into<String>) -> ReferenceError {
        ReferenceError {
            reference: reference.to_string(),
            reason: reason.into(),
        }
    }
}

fn valid_repository_component(c: &str) -> bool {
    // distribution's grammar: lowercase alphanumerics separated by `.`, `_`, `__` or `-`s.
    !c.is_empty()
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && c.as_bytes()[0].is_ascii_alphanumeric()
        && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
}

fn valid_tag(t: &str) -> bool {
    (1..=128).contains(&t.len())
        && (t.as_bytes()[0].is_ascii_alphanumeric() || t.starts_with('_'))
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn valid_host(h: &str) -> bool {
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (h, None),
    };
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok())
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        if s.is_empty() {
            return Err(Reference::error(input, "empty"));
        }
        if s.contains("://") {
            return Err(Reference::error(
                input,
                "a reference has no scheme (drop `docker://` or `https://`)",
            ));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                let digest = d
                    .parse::<Digest>()
                    .map_err(|e| Reference::error(input, e.to_string()))?;
                (rest, Some(digest))
            }
            None => (s, None),
        };
        // The first component is a registry when it looks like a host: has a dot or a port,
        // or is `localhost`. Otherwise the whole thing is a Docker Hub path.
        let (registry, path) = match rest.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path)
            }
            _ => (DOCKER_HUB.to_string(), rest),
        };
        if !valid_host(&registry) {
            return Err(Reference::error(
                input,
                format!("`{registry}` is not a valid registry host"),
            ));
        }
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        // A tag is a `:` in the last path component (a `:` before a `/` is a port).
        let (path, tag) = match path.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, Some(t.to_string())),
            _ => (path, None),
        };
        if let Some(t) = &tag {
            if !valid_tag(t) {
                return Err(Reference::error(input, format!("`{t}` is not a valid tag")));
            }
        }
        if path.is_empty() || !path.split('/').all(valid_repository_component) {
            return Err(Reference::error(
                input,
                format!("repository `{path}` must be lowercase path components of [a-z0-9._-]"),
            ));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl TryFrom<String> for Reference {
    type Error = ReferenceError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Reference> for String {
    fn from(r: Reference) -> String {
        r.to_string()
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    #[test]
    fn normalises_docker_hub() {
        let r: Reference = "nginx".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/library/nginx:latest");
        let r: Reference = "bitnami/redis:7".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/bitnami/redis:7");
        let r: Reference = "index.docker.io/nginx".parse().unwrap();
        assert_eq!(r.repo_path(), "docker.io/library/nginx");
    }

    #[test]
    fn keeps_tag_and_digest() {
        let r: Reference = format!("quay.io/openshift/origin-cli:4.20@{D}")
            .parse()
            .unwrap();
        assert_eq!(r.tag(), Some("4.20"));
        assert_eq!(r.digest().unwrap().as_str(), D);
        assert_eq!(r.manifest_key(), D);
        assert_eq!(
            r.to_string(),
            format!("quay.io/openshift/origin-cli:4.20@{D}")
        );
        let r: Reference = format!("quay.io/a/b@{D}").parse().unwrap();
        assert_eq!(r.tag(), None);
    }

    #[test]
    fn ports_are_not_tags() {
        let r: Reference = "127.0.0.1:5000/ns/img".parse().unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "ns/img");
        assert_eq!(r.tag(), Some("latest"));
        let r: Reference = "localhost/img:v1".parse().unwrap();
        assert_eq!(r.registry(), "localhost");
    }

    #[test]
    fn rejects_bad_references_naming_them() {
        for bad in [
            "",
            "Quay.io/UPPER/x",
            "quay.io/a/b:bad tag",
            "quay.io/a@sha256:zz",
            "docker://quay.io/a",
            "quay.io/a/b:",
        ] {
            let err = bad.parse::<Reference>().unwrap_err();
            assert!(
                err.to_string().contains(&format!("`{}`", bad.trim())),
                "{err}"
            );
        }
    }

    #[test]
    fn digest_validation() {
        assert!(D.parse::<Digest>().is_ok());
        assert!(matches!(
            "md5:abc".parse::<Digest>(),
            Err(DigestError::Algorithm(_))
        ));
        assert!(matches!(
            "sha256:ABC".parse::<Digest>(),
            Err(DigestError::Hex(_))
        ));
        assert!(matches!(
            "1111".parse::<Digest>(),
            Err(DigestError::NoAlgorithm(_))
        ));
        let d = Digest::sha256_of(b"");
        assert_eq!(
            d.hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.short(), "sha256:e3b0c44298fc");
    }
}
