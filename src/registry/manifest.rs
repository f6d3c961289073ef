//! The four manifest media types prewarm accepts, and the few fields it reads from them.
//!
//! Manifests are kept as the exact bytes served (their digest is the sha256 of those bytes);
//! this module only looks inside to find children, configs and layers.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::reference::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The Accept header for every manifest request: a cache such as Quay answers
/// MANIFEST_UNKNOWN for a type the client did not list.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformSpec {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl std::fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// What a manifest points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Index {
        media_type: String,
        manifests: Vec<Descriptor>,
    },
    Image {
        media_type: String,
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

impl Manifest {
    /// Parse `bytes`, using the served Content-Type when the body does not say.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest> {
        let raw: Raw = serde_json::from_slice(bytes).context("manifest is not valid JSON")?;
        if raw.schema_version == Some(1) {
            bail!(
                "Docker schema 1 manifests are not supported (the registry should serve schema 2)"
            );
        }
        let media_type = raw
            .media_type
            .or_else(|| content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_string()))
            .unwrap_or_default();
        if let Some(manifests) = raw.manifests {
            return Ok(Manifest::Index {
                media_type: if media_type.is_empty() {
                    OCI_INDEX.into()
                } else {
                    media_type
                },
                manifests,
            });
        }
        match raw.config {
            Some(config) => Ok(Manifest::Image {
                media_type: if media_type.is_empty() {
                    OCI_MANIFEST.into()
                } else {
                    media_type
                },
                config,
                layers: raw.layers.unwrap_or_default(),
            }),
            None => bail!("manifest has neither `manifests` nor `config`"),
        }
    }

    pub fn media_type(&self) -> &str {
        match self {
            Manifest::Index { media_type, .. } | Manifest::Image { media_type, .. } => media_type,
        }
    }
}

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn parses_index_and_image() {
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","digest":"{D1}","size":10,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#
        );
        match Manifest::parse(idx.as_bytes(), None).unwrap() {
            Manifest::Index {
                media_type,
                manifests,
            } => {
                assert_eq!(media_type, DOCKER_LIST);
                assert_eq!(
                    manifests[0].platform.as_ref().unwrap().to_string(),
                    "linux/arm64/v8"
                );
            }
            other => panic!("{other:?}"),
        }
        let img = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{D1}","size":3}},"layers":[{{"mediaType":"y","digest":"{D2}","size":5}}]}}"#
        );
        let m = Manifest::parse(
            img.as_bytes(),
            Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
        )
        .unwrap();
        assert_eq!(m.media_type(), OCI_MANIFEST);
        assert!(Manifest::parse(br#"{"schemaVersion":1}"#, None).is_err());
        assert!(Manifest::parse(b"{", None).is_err());
    }
}
