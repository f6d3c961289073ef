//! An OCI image layout directory as a sink (`export --format oci-dir DIR`), readable by
//! skopeo's `oci:DIR:REFERENCE` transport.
//!
//! As ocidir-rs does it: a blob is written to a temp file (`blobs/sha256/.<hex>.part`) while
//! it is fetched and hashed, and renamed to `blobs/sha256/<hex>` only once its bytes hash to
//! its digest — never a wrong file under a right name. A blob already there is kept when its
//! bytes still hash right, so a rerun continues. `index.json` (each top manifest named by its
//! source reference) is written last, atomically, keeping the entries of other references.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest as _, Sha256};

use super::bundle_sink::Staging;
use super::TransferError;
use crate::bundle::layout::{self, IndexEntry};
use crate::fsutil::write_atomically;
use crate::reference::Digest;

pub struct LayoutSink {
    dir: PathBuf,
}

impl LayoutSink {
    /// Create (or reopen) the layout at `dir`.
    pub fn open(dir: &Path) -> Result<LayoutSink> {
        let blobs = dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs)
            .with_context(|| format!("cannot create {}", blobs.display()))?;
        write_atomically(&dir.join("oci-layout"), layout::OCI_LAYOUT)?;
        Ok(LayoutSink {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(layout::blob_path(digest))
    }

    /// Whether the blob is there already with the right bytes.
    pub fn holds(&self, digest: &Digest, size: u64) -> bool {
        let path = self.path(digest);
        match std::fs::metadata(&path) {
            Ok(m) if m.len() == size => hash_file(&path).is_ok_and(|h| &h == digest),
            _ => false,
        }
    }

    /// A temp file beside the blob's final name.
    pub fn stage(&self, digest: &Digest) -> Result<Staging, TransferError> {
        let path = self
            .dir
            .join("blobs")
            .join(digest.algorithm())
            .join(format!(".{}.part", digest.hex()));
        Staging::file(path)
    }

    /// Put a verified blob under its name.
    pub fn commit(&self, digest: &Digest, staging: Staging) -> Result<(), TransferError> {
        let path = self.path(digest);
        staging
            .persist(&path)
            .map_err(|e| TransferError::file("write", path, e))
    }

    /// A manifest's bytes (they must hash to `digest`).
    pub fn put(&self, digest: &Digest, bytes: &[u8]) -> Result<(), TransferError> {
        let actual = Digest::sha256_of(bytes);
        if &actual != digest {
            return Err(TransferError::Digest {
                expected: digest.clone(),
                got: actual,
            });
        }
        Ok(write_atomically(&self.path(digest), bytes)?)
    }

    /// Write `index.json`: `entries`, plus the existing entries of other references.
    pub fn finish(&self, entries: &[IndexEntry<'_>]) -> Result<()> {
        let path = self.dir.join("index.json");
        let ours: std::collections::BTreeSet<&str> = entries.iter().map(|e| e.reference).collect();
        let mut kept: Vec<serde_json::Value> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("manifests").and_then(|m| m.as_array()).cloned())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        kept.retain(|m| {
            m.pointer(&format!(
                "/annotations/{}",
                layout::REF_NAME.replace('/', "~1")
            ))
            .and_then(|r| r.as_str())
            .is_none_or(|r| !ours.contains(r))
        });
        let mut index: serde_json::Value = serde_json::from_slice(&layout::index_json(entries))?;
        if let Some(list) = index.get_mut("manifests").and_then(|m| m.as_array_mut()) {
            kept.append(list);
            *list = kept;
        }
        write_atomically(&path, &serde_json::to_vec(&index)?)
    }
}

fn hash_file(path: &Path) -> std::io::Result<Digest> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize()))
        .parse()
        .expect("a sha256 digest"))
}
