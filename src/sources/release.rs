//! Release payloads: the release image and every component image it names.
//!
//! As FORMATS.md says: the release image is the CVO image plus one appended layer holding
//! `release-manifests/image-references` (an ImageStream naming each component by digest) and
//! `release-manifests/release-metadata`. `oc adm release info` reads the last layer only; we
//! read it first and fall back to walking every layer top down, first occurrence winning.

use std::io::Read;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::job::Job;
use crate::reference::{Digest, Reference};
use crate::registry::Registries;

use super::layers;

pub const IMAGE_REFERENCES: &str = "release-manifests/image-references";
pub const RELEASE_METADATA: &str = "release-manifests/release-metadata";
/// Bigger than any real image-references (~200 tags, ~150 KiB) by far.
const MAX_FILE: u64 = 16 << 20;

/// A release payload as read from its image.
#[derive(Debug, Clone)]
pub struct Payload {
    pub source: Reference,
    /// The digest of the release image's top manifest (the list for a -multi payload).
    pub digest: Digest,
    pub version: String,
    /// Component tag name → pullspec, in the order of image-references.
    pub components: Vec<(String, Reference)>,
    pub metadata: Option<ReleaseMetadata>,
}

impl Payload {
    /// The release image, then each component, with its origin.
    pub fn references(&self, origin: &str) -> Vec<(Reference, String)> {
        let mut out = vec![(
            self.source.with_digest(self.digest.clone()),
            format!("release {} ({origin})", self.version),
        )];
        for (name, r) in &self.components {
            out.push((
                r.clone(),
                format!("release {} component {name}", self.version),
            ));
        }
        out
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageStream {
    pub kind: String,
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub metadata: ObjectMeta,
    pub spec: ImageStreamSpec,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ObjectMeta {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageStreamSpec {
    #[serde(default)]
    pub tags: Vec<TagReference>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TagReference {
    pub name: String,
    pub from: ObjectReference,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ObjectReference {
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReleaseMetadata {
    pub kind: String,
    pub version: String,
    #[serde(default)]
    pub previous: Vec<String>,
    #[serde(default)]
    pub next: Vec<String>,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// Parse `image-references`; `what` names the file for errors (image and path).
pub fn parse_image_references(bytes: &[u8], what: &str) -> Result<Vec<(String, Reference)>> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let stream: ImageStream = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        anyhow::anyhow!("{what}: {path}: {}", e.into_inner())
    })?;
    if stream.kind != "ImageStream" {
        bail!("{what}: kind: `{}` is not `ImageStream`", stream.kind);
    }
    if stream.api_version != "image.openshift.io/v1" {
        bail!(
            "{what}: apiVersion: `{}` is not `image.openshift.io/v1`",
            stream.api_version
        );
    }
    if stream.spec.tags.is_empty() {
        bail!("{what}: spec.tags: empty");
    }
    let mut out = Vec::new();
    for (i, tag) in stream.spec.tags.iter().enumerate() {
        if tag.from.kind != "DockerImage" {
            bail!(
                "{what}: spec.tags[{i}].from.kind: `{}` is not `DockerImage`",
                tag.from.kind
            );
        }
        let r: Reference = tag
            .from
            .name
            .parse()
            .map_err(|e| anyhow::anyhow!("{what}: spec.tags[{i}].from.name: {e}"))?;
        out.push((tag.name.clone(), r));
    }
    Ok(out)
}

pub fn parse_release_metadata(bytes: &[u8], what: &str) -> Result<ReleaseMetadata> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let m: ReleaseMetadata = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        anyhow::anyhow!("{what}: {path}: {}", e.into_inner())
    })?;
    if m.kind != "cincinnati-metadata-v0" {
        bail!("{what}: kind: `{}` is not `cincinnati-metadata-v0`", m.kind);
    }
    Ok(m)
}

/// The two files, as found in one layer.
#[derive(Default)]
struct Found {
    references: Option<Vec<u8>>,
    metadata: Option<Vec<u8>>,
}

fn scan(archive: &mut tar::Archive<Box<dyn Read + Send>>) -> Result<Found> {
    let mut found = Found::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = layers::entry_path(&entry)?;
        let slot = match path.as_str() {
            IMAGE_REFERENCES => &mut found.references,
            RELEASE_METADATA => &mut found.metadata,
            _ => continue,
        };
        if entry.header().entry_type().is_file() && slot.is_none() {
            if entry.size() > MAX_FILE {
                bail!("{path}: {} bytes is too big", entry.size());
            }
            let mut data = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut data)?;
            *slot = Some(data);
        }
        if found.references.is_some() && found.metadata.is_some() {
            break;
        }
    }
    Ok(found)
}

/// Read release payload `source`: resolve it, read image-references and release-metadata.
pub async fn read(job: &Job, registries: &Registries, source: &Reference) -> Result<Payload> {
    let image = layers::resolve(job, registries, source)
        .await
        .with_context(|| format!("release `{source}`"))?;
    let version = image.labels.get("io.openshift.release").cloned();
    let Some(version) = version else {
        bail!("release `{source}`: not a release image (its config has no `io.openshift.release` label)");
    };
    if image.layers.is_empty() {
        bail!("release `{source}`: the image has no layers");
    }
    let mut references = None;
    let mut metadata = None;
    // The last layer first (where `oc adm release new` appends), then the rest top down.
    let n = image.layers.len();
    let order = std::iter::once(n - 1).chain((0..n - 1).rev());
    for i in order {
        let digest = image.layers[i].digest.clone();
        let found = layers::with_layer(&image.client, &image.repository, &digest, scan)
            .await
            .with_context(|| format!("release `{source}`"))?;
        if references.is_none() {
            references = found.references.map(|b| (b, digest.clone()));
        }
        if metadata.is_none() {
            metadata = found.metadata.map(|b| (b, digest.clone()));
        }
        if references.is_some() && metadata.is_some() {
            break;
        }
    }
    let Some((bytes, layer)) = references else {
        bail!("release `{source}`: no {IMAGE_REFERENCES} in any layer");
    };
    let what = format!(
        "release `{source}` {IMAGE_REFERENCES} (layer {})",
        layer.short()
    );
    let components = parse_image_references(&bytes, &what)?;
    let metadata = match metadata {
        Some((bytes, layer)) => Some(parse_release_metadata(
            &bytes,
            &format!(
                "release `{source}` {RELEASE_METADATA} (layer {})",
                layer.short()
            ),
        )?),
        None => None,
    };
    Ok(Payload {
        source: source.clone(),
        digest: image.top,
        version,
        components,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_image_references_and_metadata_parse() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/image-references"
        ))
        .unwrap();
        let tags = parse_image_references(&bytes, "image-references").unwrap();
        let names: Vec<&str> = tags.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["cli", "cluster-version-operator", "hyperkube"]);
        assert!(tags[0].1.digest().is_some());
        let m = parse_release_metadata(
            br#"{"kind":"cincinnati-metadata-v0","version":"4.20.0","previous":["4.19.10"],"metadata":{"url":"u"}}"#,
            "release-metadata",
        )
        .unwrap();
        assert_eq!(m.version, "4.20.0");
    }

    #[test]
    fn malformed_image_references_name_the_field() {
        let err = parse_image_references(
            br#"{"kind":"ImageStream","apiVersion":"image.openshift.io/v1","metadata":{"name":"x"},"spec":{"tags":[{"name":"a","from":{"kind":"DockerImage"}}]}}"#,
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("f: spec.tags[0].from: missing field `name`"),
            "{err}"
        );
        let err = parse_image_references(
            br#"{"kind":"ImageStreamX","apiVersion":"image.openshift.io/v1","metadata":{"name":"x"},"spec":{"tags":[]}}"#,
            "f",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "f: kind: `ImageStreamX` is not `ImageStream`");
        let err = parse_image_references(
            br#"{"kind":"ImageStream","apiVersion":"image.openshift.io/v1","metadata":{"name":"x"},"spec":{"tags":[{"name":"a","from":{"kind":"DockerImage","name":"Bad Ref"}}]}}"#,
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("f: spec.tags[0].from.name: "), "{err}");
    }
}
