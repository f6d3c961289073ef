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
//! [`segments`] writes and reads the segment files (temp name, checksummed, renamed when
//! complete) and verifies them; [`layout`] makes the OCI layout's small files; [`inventory`]
//! is what a far site says it already holds, so that an export carries only the rest.

pub mod inventory;
pub mod layout;
pub mod segments;

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::reference::Digest;

/// `bundle.json`'s `format`.
pub const FORMAT: &str = "prewarm-bundle/1";
pub const MANIFEST_FILE: &str = "bundle.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    pub format: String,
    pub created_at: i64,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresentBlob {
    pub digest: Digest,
    pub size: u64,
    /// A repository of the far site's registry that holds it (to mount from).
    pub repository: String,
}

impl BundleManifest {
    pub fn load(dir: &Path) -> Result<BundleManifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: not a bundle (cannot read {MANIFEST_FILE})",
                dir.display()
            )
        })?;
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
        Ok(m)
    }

    pub fn bytes_inside(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum::<u64>()
            + self.manifests.iter().map(|m| m.size).sum::<u64>()
    }
}
