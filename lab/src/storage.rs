//! Writes images straight into a distribution registry's filesystem storage, for seeds too
//! large to push over HTTP in reasonable time (the scale benchmark's 20,000 images are ~140,000
//! requests when pushed, a few hundred thousand small file writes here).
//!
//! The layout is distribution 2.8's (`registry/storage/paths.go`), under
//! `ROOT/docker/registry/v2/`:
//!
//! ```text
//! blobs/sha256/<hex[..2]>/<hex>/data                                  the bytes (layers, configs, manifests)
//! repositories/<name>/_layers/sha256/<hex>/link                       "sha256:<hex>": blob linked into <name>
//! repositories/<name>/_manifests/revisions/sha256/<hex>/link          manifest known to <name>
//! repositories/<name>/_manifests/tags/<tag>/current/link              what <tag> points at
//! repositories/<name>/_manifests/tags/<tag>/index/sha256/<hex>/link   every digest <tag> ever pointed at
//! ```
//!
//! distribution's filesystem driver reads these files on every request (the lab configures no
//! blob descriptor cache), but the lab still writes only while the upstream is stopped, as
//! `lab seed --scale N --direct` does. Every file is written under a temporary name and renamed,
//! so a killed seeder leaves no half-written blob under its final name. The registry serves
//! what is written here as if it had been pushed: the test below pulls it over HTTP and checks
//! every digest.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::seed::{BlobData, BuiltImage};

/// One registry's storage root.
#[derive(Debug, Clone)]
pub struct Storage {
    /// `ROOT/docker/registry/v2`.
    v2: PathBuf,
}

impl Storage {
    /// The storage under `root` (the registry's `storage.filesystem.rootdirectory`).
    pub fn new(root: &Path) -> Self {
        Storage {
            v2: root.join("docker/registry/v2"),
        }
    }

    /// Stores `image` in `repository`: its layers and config (linked into the repository),
    /// its manifest (a revision of the repository), and `tag` pointing at it.
    pub fn write_image(&self, repository: &str, tag: &str, image: &BuiltImage) -> Result<()> {
        for blob in image.layers.iter().chain([&image.config]) {
            let BlobData::Memory(bytes) = &blob.data else {
                anyhow::bail!(
                    "blob {} is in a file: only in-memory blobs are written to storage",
                    blob.digest
                )
            };
            self.write_blob(&blob.digest, bytes)?;
            self.link(repository, &["_layers"], &blob.digest)?;
        }
        let manifest = &image.manifest;
        self.write_blob(&manifest.digest, &manifest.bytes)?;
        self.link(repository, &["_manifests", "revisions"], &manifest.digest)?;
        self.link(
            repository,
            &["_manifests", "tags", tag, "index"],
            &manifest.digest,
        )?;
        let current = self
            .repository(repository)
            .join(format!("_manifests/tags/{tag}/current"));
        write_file(&current.join("link"), manifest.digest.as_bytes())
    }

    /// `blobs/sha256/xx/hex/data`, unless it is already there (content-addressed: same name,
    /// same bytes).
    fn write_blob(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        let hex = hex_of(digest)?;
        let path = self
            .v2
            .join(format!("blobs/sha256/{}/{hex}/data", &hex[..2]));
        if path.exists() {
            return Ok(());
        }
        write_file(&path, bytes)
    }

    /// `repositories/<name>/<under…>/sha256/<hex>/link` holding the digest.
    fn link(&self, repository: &str, under: &[&str], digest: &str) -> Result<()> {
        let hex = hex_of(digest)?;
        let mut path = self.repository(repository);
        path.extend(under);
        write_file(&path.join(format!("sha256/{hex}/link")), digest.as_bytes())
    }

    fn repository(&self, repository: &str) -> PathBuf {
        self.v2.join("repositories").join(repository)
    }
}

/// The hex part of a `sha256:<hex>` digest.
fn hex_of(digest: &str) -> Result<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|hex| hex.len() == 64)
        .with_context(|| format!("`{digest}` is not a sha256 digest"))
}

/// Writes `bytes` to a temporary name beside `path`, then renames it into place.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("storage paths have a parent");
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let temporary = path.with_extension("partial");
    fs::write(&temporary, bytes)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    fs::rename(&temporary, path).with_context(|| format!("cannot rename to {}", path.display()))
}
