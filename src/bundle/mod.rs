//! The bundle format: how content travels to a site with no network.
//!
//! A bundle directory holds `bundle.json` (this module's [`BundleManifest`]) and segments
//! `bundle.NNNN.tar.zst`. Concatenated, the segments are ONE zstd stream of ONE tar stream;
//! unpacked, that tar is an OCI image layout (`oci-layout`, `index.json` whose entries carry
//! the source reference in `org.opencontainers.image.ref.name`, `blobs/sha256/<hex>`), which
//! skopeo's `oci:` transport reads. Inside the tar, config and layer blobs come first, then
//! child manifests, then top manifests, then `index.json`: an importer streaming it meets
//! every blob before the manifests that need it.
//!
//! `bundle.json` also says what an image is to a cluster ([`ImageRole`]: a catalog, filtered or
//! not, the graph-data image) and carries the release signatures, so that `import` writes the
//! cluster resources `copy` writes.
//!
//! [`segments`] writes and reads the segment files (temp name, checksummed, renamed when
//! complete) and verifies them; [`layout`] makes the OCI layout's small files; [`inventory`]
//! is what a far site says it already holds, so that an export carries only the rest.

pub mod chain;
pub mod interrupt;
pub mod inventory;
pub mod layout;
pub mod progress;
pub mod segments;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::reference::Digest;

/// `bundle.json`'s `format`.
pub const FORMAT: &str = "prewarm-bundle/1";
pub const MANIFEST_FILE: &str = "bundle.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    pub format: String,
    /// This bundle's id (unique per export), named by the next bundle of a chain.
    #[serde(default)]
    pub id: String,
    pub created_at: i64,
    /// The bundle this one builds on (`export --since-last SITE`): what that bundle and the
    /// ones before it carried to the site is left out of this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseBundle>,
    /// `zstd` over a `tar` of an OCI image layout.
    pub compression: String,
    pub segments: Vec<Segment>,
    pub images: Vec<BundleImage>,
    /// Config and layer blobs inside the bundle.
    pub blobs: Vec<BundleBlob>,
    /// Manifests inside the bundle (as blobs of the layout).
    pub manifests: Vec<BundleManifestEntry>,
    /// Blobs the images need that the far site's inventory says it holds: not inside.
    #[serde(default)]
    pub present: Vec<PresentBlob>,
    /// Manifests the inventory says the far site holds: not inside.
    #[serde(default)]
    pub present_manifests: Vec<Digest>,
    /// Uncompressed tar bytes.
    pub tar_bytes: u64,
    /// Release digest → its signatures (base64), for the signature ConfigMaps `import` writes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signatures: BTreeMap<Digest, Vec<String>>,
}

/// What export adds to a bundle beside what it reads from the registries: images prewarm built
/// (their new blobs and manifests in memory; the layers they reuse are planned blobs), each
/// image's role, the release signatures.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    pub blobs: BTreeMap<Digest, bytes::Bytes>,
    /// Digest → bytes and media type.
    pub manifests: BTreeMap<Digest, (bytes::Bytes, String)>,
    /// Source reference (as the bundle's images name it) → its role.
    pub roles: BTreeMap<String, ImageRole>,
    /// Release digest → its signatures.
    pub signatures: BTreeMap<Digest, Vec<Vec<u8>>>,
}

/// Signatures as `bundle.json` holds them (base64) and back.
pub fn encode_signatures(
    signatures: &BTreeMap<Digest, Vec<Vec<u8>>>,
) -> BTreeMap<Digest, Vec<String>> {
    use base64::Engine;
    signatures
        .iter()
        .map(|(d, sigs)| {
            let sigs = sigs
                .iter()
                .map(|s| base64::engine::general_purpose::STANDARD.encode(s))
                .collect();
            (d.clone(), sigs)
        })
        .collect()
}

impl BundleManifest {
    /// The release signatures the bundle carries, decoded.
    pub fn decoded_signatures(&self) -> Result<BTreeMap<Digest, Vec<Vec<u8>>>> {
        use base64::Engine;
        let mut out = BTreeMap::new();
        for (d, sigs) in &self.signatures {
            let mut decoded = Vec::new();
            for (n, s) in sigs.iter().enumerate() {
                decoded.push(
                    base64::engine::general_purpose::STANDARD
                        .decode(s)
                        .map_err(|e| anyhow::anyhow!("bundle.json: signatures.{d}[{n}]: {e}"))?,
                );
            }
            out.insert(d.clone(), decoded);
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleImage {
    /// The source reference (tag and/or digest), also the layout's ref name.
    pub reference: String,
    pub digest: Digest,
    pub media_type: String,
    /// Top manifest first, then every child.
    pub manifests: Vec<Digest>,
    /// Config and layer blobs of every child.
    pub blobs: Vec<Digest>,
    /// What the image is to a cluster, for the cluster resources `import` writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<ImageRole>,
}

/// What a bundle's image is to a cluster: an operator catalog (as published, or the filtered
/// rebuild export made of it) or the update service's graph-data image export built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ImageRole {
    Catalog {
        /// The catalog as the job names it.
        catalog: String,
        /// Rebuilt by prewarm to hold only the selected packages.
        filtered: bool,
    },
    GraphImage {
        /// A release image of the bundle (its source reference), whose repository at the
        /// mirror the UpdateService names; none when the bundle holds no release.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        releases: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleBlob {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleManifestEntry {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// The bundle a bundle builds on: its id and the sha256 of its `bundle.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseBundle {
    pub id: String,
    pub digest: Digest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresentBlob {
    pub digest: Digest,
    pub size: u64,
    /// A repository of the far site's registry that holds it (to mount from), as an
    /// inventory named it; empty when `source` says where it came from instead.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub repository: String,
    /// For a blob an earlier bundle carried: the source repository (`host/path`) of the image
    /// it came with; `import` maps it to a destination repository as it maps images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A segment name must be a plain file name: a bundle cannot point outside its directory.
pub fn check_segment_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name == "." || name == ".." {
        return Err("is not a file name");
    }
    if name.contains('/') || name.contains('\\') || name.contains('\0') {
        return Err("is not a plain file name (it has a path separator)");
    }
    if Path::new(name).is_absolute() {
        return Err("is an absolute path");
    }
    Ok(())
}

/// A new bundle id: the creation time and 12 hex digits of a hash of time, pid and address.
pub fn new_id(created_at: i64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = format!("{nanos}:{}:{n}", std::process::id());
    format!(
        "{created_at}-{}",
        &Digest::sha256_of(seed.as_bytes()).hex()[..12]
    )
}

impl BundleManifest {
    pub fn load(dir: &Path) -> Result<BundleManifest> {
        Ok(Self::load_with_digest(dir)?.0)
    }

    /// The bundle's manifest and the sha256 of its `bundle.json` bytes (what the next bundle
    /// of a chain names as its base).
    pub fn load_with_digest(dir: &Path) -> Result<(BundleManifest, Digest)> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "{}: not a bundle (cannot read {MANIFEST_FILE})",
                dir.display()
            )
        })?;
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("{}: not UTF-8 JSON", path.display()))?;
        let digest = Digest::sha256_of(text.as_bytes());
        let de = &mut serde_json::Deserializer::from_str(&text);
        let m: BundleManifest = serde_path_to_error::deserialize(de)
            .map_err(|e| anyhow::anyhow!("{}: {}: {}", path.display(), e.path(), e.inner()))?;
        if m.format != FORMAT {
            anyhow::bail!(
                "{}: format: `{}` is not `{FORMAT}` (written by another prewarm version?)",
                path.display(),
                m.format
            );
        }
        for (n, s) in m.segments.iter().enumerate() {
            if let Err(why) = check_segment_name(&s.name) {
                anyhow::bail!(
                    "{}: segments[{n}].name: `{}` {why}: a bundle's segments must be files in its own directory",
                    path.display(),
                    s.name
                );
            }
        }
        Ok((m, digest))
    }

    /// Write `bundle.json` (temp name, synced, renamed): the last step of an export. On
    /// failure the segments go too, so nothing is left under a final name.
    pub fn write(&self, dir: &Path) -> Result<Digest> {
        let bytes = serde_json::to_vec_pretty(self)?;
        let path = dir.join(MANIFEST_FILE);
        match crate::fsutil::write_atomically(&path, &bytes) {
            Ok(()) => Ok(Digest::sha256_of(&bytes)),
            Err(e) => {
                segments::remove_partial(dir);
                let _ = std::fs::remove_file(&path);
                Err(e.context(format!(
                    "writing {}; the bundle's segments were removed",
                    path.display()
                )))
            }
        }
    }

    pub fn bytes_inside(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum::<u64>()
            + self.manifests.iter().map(|m| m.size).sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_must_be_plain_file_names() {
        assert!(check_segment_name("bundle.0000.tar.zst").is_ok());
        for bad in ["../x", "/etc/passwd", "a/b", "..", ".", "", "a\\b"] {
            assert!(check_segment_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_differ() {
        assert_ne!(new_id(1), new_id(1));
    }
}
