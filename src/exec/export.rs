//! Export: write a plan into a bundle (see [`crate::bundle`]) while downloading it.
//!
//! Each blob is streamed from the source registry straight into one tar stream, compressed
//! with zstd and cut into segments, in a writer thread: no staging copy, no separate tar
//! phase. A tar entry's header is written only once the blob's first bytes arrive, so a blob
//! that cannot be fetched at all fails its images and leaves nothing behind. A body that
//! breaks off is resumed with a Range request; one that cannot be completed, or whose bytes
//! hash wrong, aborts the whole export (its bytes are already in the stream) and removes
//! what was written: `bundle.json` appears last, only for a complete bundle.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::destination::source_reader;
use super::{ImageOutcomes, Work};
use crate::bundle::interrupt::Interrupt;
use crate::bundle::inventory::Inventory;
use crate::bundle::layout::{self, IndexEntry};
use crate::bundle::segments::{self, remove_partial, SegmentWriter};
use crate::bundle::{
    BaseBundle, BundleBlob, BundleImage, BundleManifest, BundleManifestEntry, Segment, FORMAT,
    MANIFEST_FILE,
};
use crate::plan::Plan;
use crate::reference::Digest;
use crate::report::{ImageReport, ImageStatus};

/// zstd level: fast; layers are already compressed, the rest is small.
const ZSTD_LEVEL: i32 = 1;
/// Chunks in flight between the downloads and the writer thread.
const CHANNEL_CHUNKS: usize = 16;

pub struct ExportOptions<'a> {
    pub dir: &'a Path,
    pub segment_size: u64,
    pub have: Option<&'a Inventory>,
    /// The bundle this one builds on (`--since-last`), named in `bundle.json`.
    pub base: Option<BaseBundle>,
}

enum ToTar {
    /// A tar entry of `size` bytes; its bytes follow as `Chunk`s.
    Begin {
        path: String,
        size: u64,
    },
    Chunk(Bytes),
    /// A small file, whole.
    File {
        path: String,
        bytes: Vec<u8>,
    },
}

/// Reads the `Chunk`s of one entry from the channel.
struct EntryReader<'a> {
    rx: &'a mut mpsc::Receiver<ToTar>,
    left: u64,
    pending: Bytes,
}

impl Read for EntryReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        if self.pending.is_empty() {
            match self.rx.blocking_recv() {
                Some(ToTar::Chunk(c)) => self.pending = c,
                _ => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "export aborted in the middle of a blob",
                    ))
                }
            }
        }
        let n = buf.len().min(self.pending.len()).min(self.left as usize);
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending = self.pending.slice(n..);
        self.left -= n as u64;
        Ok(n)
    }
}

/// Counts the uncompressed tar bytes.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

/// The writer thread: tar → zstd → segments. Returns the segments and the tar size.
fn write_tar(
    dir: PathBuf,
    segment_size: u64,
    mut rx: mpsc::Receiver<ToTar>,
) -> Result<(Vec<Segment>, u64)> {
    let segments = SegmentWriter::new(&dir, segment_size)?;
    let encoder = zstd::Encoder::new(segments, ZSTD_LEVEL)?;
    let mut tar = tar::Builder::new(Counting {
        inner: encoder,
        count: 0,
    });
    for d in ["blobs/", "blobs/sha256/"] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(0);
        h.set_size(0);
        tar.append_data(&mut h, d, std::io::empty())?;
    }
    tar.append_data(
        &mut header(layout::OCI_LAYOUT.len() as u64),
        "oci-layout",
        layout::OCI_LAYOUT,
    )?;
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            ToTar::Begin { path, size } => {
                let reader = EntryReader {
                    rx: &mut rx,
                    left: size,
                    pending: Bytes::new(),
                };
                tar.append_data(&mut header(size), &path, reader)
                    .with_context(|| format!("writing {path} into the bundle"))?;
            }
            ToTar::File { path, bytes } => {
                tar.append_data(&mut header(bytes.len() as u64), &path, bytes.as_slice())
                    .with_context(|| format!("writing {path} into the bundle"))?;
            }
            ToTar::Chunk(_) => bail!("internal: a chunk outside a tar entry"),
        }
    }
    let counting = tar.into_inner()?;
    let tar_bytes = counting.count;
    let segments = counting.inner.finish()?.finish()?;
    Ok((segments, tar_bytes))
}

/// What one blob did.
enum BlobResult {
    Written(u64),
    /// Could not be fetched at all: nothing of it is in the bundle.
    Unavailable(String),
}

pub async fn export(
    work: &Work<'_>,
    plan: &Plan,
    options: &ExportOptions<'_>,
) -> Result<(Vec<ImageReport>, BundleManifest)> {
    let dir = options.dir;
    if dir.join(MANIFEST_FILE).exists() {
        bail!(
            "{}: already holds a bundle (bundle.json): choose another -o DIR",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    remove_partial(dir);
    let mut interrupt = Interrupt::listen()?;
    let outcomes = ImageOutcomes::new(plan);

    // What goes inside, and what the far site already holds.
    let mut present = Vec::new();
    let mut inside = Vec::new();
    for b in &plan.blobs {
        match options.have.and_then(|h| h.present_blob(&b.digest, b.size)) {
            Some(p) => present.push(p),
            None => inside.push(b),
        }
    }
    let have_manifest = |d: &Digest| options.have.is_some_and(|h| h.has_manifest(d));

    let (tx, rx) = mpsc::channel::<ToTar>(CHANNEL_CHUNKS);
    let writer = {
        let dir = dir.to_path_buf();
        let size = options.segment_size;
        tokio::task::spawn_blocking(move || write_tar(dir, size, rx))
    };

    let blob_images: BTreeMap<&Digest, Vec<usize>> = {
        let mut m: BTreeMap<&Digest, Vec<usize>> = BTreeMap::new();
        for (i, image) in plan.images.iter().enumerate() {
            for d in &image.blobs {
                m.entry(d).or_default().push(i);
            }
        }
        m
    };
    let body = async {
        work.reporter.phase(
            "blobs",
            inside.len() as u64,
            inside.iter().map(|b| b.size).sum(),
        );
        let mut written = Vec::new();
        for blob in &inside {
            let images = &blob_images[&blob.digest];
            let source = &plan.images[images[0]].source;
            let result = export_blob(work, source, &blob.digest, blob.size, &tx).await?;
            let ok = matches!(result, BlobResult::Written(_));
            match result {
                BlobResult::Written(n) => {
                    for &i in images {
                        outcomes.fetched(i, n);
                    }
                    written.push(BundleBlob {
                        digest: blob.digest.clone(),
                        size: blob.size,
                        media_type: blob.media_type.clone(),
                    });
                }
                BlobResult::Unavailable(e) => {
                    for &i in images {
                        outcomes.fail(i, e.clone());
                    }
                }
            }
            work.reporter.item_done(&blob.digest.short(), ok);
        }
        work.reporter.finish_phase();

        // Manifests: children of every image first, then the tops; each digest once.
        work.reporter
            .phase("manifests", plan.images.len() as u64, 0);
        let mut manifests = Vec::new();
        let mut done: BTreeSet<Digest> = BTreeSet::new();
        let mut index = Vec::new();
        let order = plan
            .images
            .iter()
            .enumerate()
            .flat_map(|(i, im)| im.manifests.iter().skip(1).map(move |d| (i, d, false)))
            .chain(
                plan.images
                    .iter()
                    .enumerate()
                    .map(|(i, im)| (i, &im.digest, true)),
            );
        for (i, digest, top) in order {
            let image = &plan.images[i];
            if outcomes.has_failed(i) || have_manifest(digest) || !done.insert(digest.clone()) {
                if top {
                    work.reporter
                        .item_done(&image.source.to_string(), !outcomes.has_failed(i));
                }
                continue;
            }
            let fetched = async {
                let (client, repository) = source_reader(work.job, work.registries, &image.source)?;
                anyhow::Ok(client.get_manifest(&repository, digest.as_str()).await?)
            }
            .await;
            match fetched {
                Ok(m) => {
                    let media_type = if m.media_type.is_empty() {
                        image.media_type.clone()
                    } else {
                        m.media_type.clone()
                    };
                    let size = m.bytes.len() as u64;
                    tx.send(ToTar::File {
                        path: layout::blob_path(digest),
                        bytes: m.bytes.to_vec(),
                    })
                    .await
                    .map_err(|_| anyhow::anyhow!("the bundle writer stopped"))?;
                    manifests.push(BundleManifestEntry {
                        digest: digest.clone(),
                        size,
                        media_type: media_type.clone(),
                    });
                    if top {
                        index.push(IndexEntryOwned {
                            media_type,
                            digest: digest.clone(),
                            size,
                            reference: image.source.to_string(),
                        });
                    }
                }
                Err(e) => outcomes.fail(i, format!("{e:#}")),
            }
            if top {
                work.reporter
                    .item_done(&image.source.to_string(), !outcomes.has_failed(i));
            }
        }
        work.reporter.finish_phase();
        let entries: Vec<IndexEntry<'_>> = index
            .iter()
            .map(|e| IndexEntry {
                media_type: &e.media_type,
                digest: &e.digest,
                size: e.size,
                reference: &e.reference,
            })
            .collect();
        tx.send(ToTar::File {
            path: "index.json".into(),
            bytes: layout::index_json(&entries),
        })
        .await
        .map_err(|_| anyhow::anyhow!("the bundle writer stopped"))?;
        anyhow::Ok((written, manifests, index))
    };
    // A signal stops the downloads; the writer thread is still joined and the temp segments
    // removed below, before the process exits.
    let result = tokio::select! {
        r = body => r,
        sig = interrupt.received() => Err(anyhow::anyhow!("stopped by {sig}")),
    };
    drop(tx);
    let written = writer.await.context("the bundle writer thread")?;
    let ((blobs, manifests, _index), (segments, tar_bytes)) = match (result, written) {
        (Ok(r), Ok(w)) => (r, w),
        (Err(e), Err(w)) => {
            // The writer's own error (ENOSPC, EROFS: the OS error) says why the downloads
            // could not hand it more, unless it only saw the downloads stop.
            return Err(segments::failed(
                dir,
                if segments::is_abort(&w) { e } else { w },
            ));
        }
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => return Err(segments::failed(dir, e)),
    };
    if let Err(e) = segments::publish(dir, &segments) {
        return Err(e.context(format!("export into {} failed", dir.display())));
    }
    let created_at = crate::state::now();
    let manifest = BundleManifest {
        format: FORMAT.into(),
        id: crate::bundle::new_id(created_at),
        created_at,
        base: options.base.clone(),
        compression: "zstd".into(),
        segments,
        images: plan
            .images
            .iter()
            .enumerate()
            .filter(|(i, _)| !outcomes.has_failed(*i))
            .map(|(_, im)| BundleImage {
                reference: im.source.to_string(),
                digest: im.digest.clone(),
                media_type: im.media_type.clone(),
                manifests: im.manifests.clone(),
                blobs: im.blobs.clone(),
            })
            .collect(),
        blobs,
        manifests,
        present,
        present_manifests: plan
            .manifests
            .iter()
            .filter(|m| have_manifest(&m.digest))
            .map(|m| m.digest.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        tar_bytes,
    };
    manifest.write(dir)?;
    let reports = outcomes.into_reports(plan, |_| ImageStatus::Exported);
    Ok((reports, manifest))
}

struct IndexEntryOwned {
    media_type: String,
    digest: Digest,
    size: u64,
    reference: String,
}

/// Blobs up to this size are fetched and verified whole before they enter the tar; larger
/// ones stream straight through (a digest mismatch there aborts the export, leaving nothing).
const BUFFERED_BLOB: u64 = 16 * 1024 * 1024;

/// Holds one small blob while it is verified.
struct Buffer(Vec<u8>);

impl crate::registry::BlobSink for Buffer {
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.0.extend_from_slice(chunk);
        Ok(())
    }
    fn restart(&mut self) -> std::io::Result<()> {
        self.0.clear();
        Ok(())
    }
}

/// Put one blob into the tar. `Err` aborts the export; `Unavailable` skips the blob.
async fn export_blob(
    work: &Work<'_>,
    source: &crate::reference::Reference,
    digest: &Digest,
    size: u64,
    tx: &mpsc::Sender<ToTar>,
) -> Result<BlobResult> {
    let (client, repository) = source_reader(work.job, work.registries, source)?;
    let what = format!("blob `{digest}` of `{}`", source.repo_path());
    let stopped = || anyhow::anyhow!("the bundle writer stopped");
    if size <= BUFFERED_BLOB {
        // Small enough to hold: fetch and verify it whole (a flipped byte or a cut body is
        // fetched again) before a byte of it enters the tar, and a blob that stays bad fails
        // only its images instead of the bundle.
        let mut buffer = Buffer(Vec::with_capacity(size as usize));
        let reporter = work.reporter;
        return match client
            .fetch_blob(&repository, digest, &mut buffer, &|n| reporter.bytes(n))
            .await
        {
            Ok(n) if n == size => {
                tx.send(ToTar::Begin {
                    path: layout::blob_path(digest),
                    size,
                })
                .await
                .map_err(|_| stopped())?;
                if n > 0 {
                    tx.send(ToTar::Chunk(Bytes::from(buffer.0)))
                        .await
                        .map_err(|_| stopped())?;
                }
                Ok(BlobResult::Written(n))
            }
            Ok(n) => Ok(BlobResult::Unavailable(format!(
                "{what}: {n} bytes instead of {size}"
            ))),
            Err(e) => Ok(BlobResult::Unavailable(e.to_string())),
        };
    }
    let attempts = work.registries.config().policy.attempts.max(1);
    let mut hasher = Sha256::new();
    let mut sent: u64 = 0;
    let mut begun = false;
    let mut attempt = 0;
    loop {
        let mut stream = match client.blob_stream_from(&repository, digest, sent).await {
            Ok(s) => s,
            Err(e)
                if !begun
                    && (attempt + 1 >= attempts
                        || matches!(
                            e,
                            crate::registry::RegistryError::NotFound { .. }
                                | crate::registry::RegistryError::Unauthorized { .. }
                        )) =>
            {
                return Ok(BlobResult::Unavailable(e.to_string()));
            }
            Err(e) if attempt + 1 >= attempts => bail!("{what}: {e}"),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(250 << attempt.min(5))).await;
                continue;
            }
        };
        let mut broke = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) if c.is_empty() => {}
                Ok(c) => {
                    if !begun {
                        tx.send(ToTar::Begin {
                            path: layout::blob_path(digest),
                            size,
                        })
                        .await
                        .map_err(|_| stopped())?;
                        begun = true;
                    }
                    sent += c.len() as u64;
                    if sent > size {
                        bail!("{what}: the registry sent more than its {size} bytes");
                    }
                    hasher.update(&c);
                    work.reporter.bytes(c.len() as u64);
                    work.registries
                        .stats
                        .bytes
                        .fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    tx.send(ToTar::Chunk(c)).await.map_err(|_| stopped())?;
                }
                Err(e) => {
                    broke = Some(e);
                    break;
                }
            }
        }
        match broke {
            Some(e) if attempt + 1 < attempts => {
                tracing::debug!("{what}: broke off after {sent} bytes ({e}); resuming");
                attempt += 1;
                continue;
            }
            Some(e) if !begun => return Ok(BlobResult::Unavailable(format!("{what}: {e}"))),
            Some(e) => bail!("{what}: {e}"),
            None => break,
        }
    }
    if !begun {
        // An empty blob: the entry still has to exist.
        tx.send(ToTar::Begin {
            path: layout::blob_path(digest),
            size,
        })
        .await
        .map_err(|_| stopped())?;
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if sent != size {
        bail!("{what}: {sent} bytes instead of {size}");
    }
    if actual != digest.as_str() {
        bail!("{what}: digest mismatch, the bytes hash to {actual}");
    }
    Ok(BlobResult::Written(sent))
}
