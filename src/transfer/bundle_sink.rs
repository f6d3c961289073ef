//! The bundle writer as a sink: blobs fetched in parallel go into ONE tar stream (→ zstd →
//! segments, see [`crate::bundle`]) in a deterministic order, through a bounded reorder
//! buffer.
//!
//! Each blob is staged while it is fetched and verified — in memory when it is small and the
//! memory budget allows, else in a temp file under `.prewarm-staging/` of the bundle
//! directory — and enters the tar only once its bytes hash right, in its place in the order.
//! So a blob that cannot be fetched fails only its images, the tar never holds a wrong byte,
//! and memory stays bounded whatever the layer sizes (a 1 GiB layer streams through a temp
//! file). A fetch may run at most [`WINDOW_PER_JOB`]×jobs places ahead of the next blob to
//! write, which bounds the staged bytes on disk.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio::sync::{mpsc, Notify};

use super::TransferError;
use crate::bundle::layout;
use crate::bundle::segments::SegmentWriter;
use crate::bundle::Segment;
use crate::reference::Digest;
use crate::registry::BlobSink;

/// zstd level: fast; layers are already compressed, the rest is small.
const ZSTD_LEVEL: i32 = 1;
/// Blobs staged in memory at most this big each…
const MEMORY_BLOB: u64 = 4 << 20;
/// …and together at most this much; the rest go through temp files.
const MEMORY_BUDGET: u64 = 24 << 20;
/// How far ahead of the writer fetches may run, per transfer slot.
pub const WINDOW_PER_JOB: usize = 4;
/// The staging directory inside the bundle directory.
pub const STAGING: &str = ".prewarm-staging";

/// A blob's bytes while fetched and verified: memory or a temp file.
pub enum Staged {
    Memory(Vec<u8>),
    File(PathBuf, File),
}

/// Where a fetch writes: a [`Staged`] that can start over.
pub struct Staging {
    pub staged: Staged,
    memory: Arc<AtomicU64>,
    reserved: u64,
}

impl Staging {
    /// Memory when `size` fits the budget, else a temp file in `dir`.
    pub fn new(
        dir: &Path,
        digest: &Digest,
        size: u64,
        memory: &Arc<AtomicU64>,
    ) -> Result<Staging, TransferError> {
        if size <= MEMORY_BLOB {
            let used = memory.fetch_add(size, Ordering::SeqCst);
            if used + size <= MEMORY_BUDGET {
                return Ok(Staging {
                    staged: Staged::Memory(Vec::with_capacity(size as usize)),
                    memory: memory.clone(),
                    reserved: size,
                });
            }
            memory.fetch_sub(size, Ordering::SeqCst);
        }
        std::fs::create_dir_all(dir).map_err(|e| TransferError::file("create", dir, e))?;
        Staging::file(dir.join(format!("{}.part", digest.hex())))
    }

    /// Always a temp file, at `path`.
    pub fn file(path: PathBuf) -> Result<Staging, TransferError> {
        let file = match File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) => return Err(TransferError::file("create", path, e)),
        };
        Ok(Staging {
            staged: Staged::File(path, file),
            memory: Arc::new(AtomicU64::new(0)),
            reserved: 0,
        })
    }

    /// Stage bytes already in memory (a built image's blob), naming the temp file on failure.
    pub fn put(&mut self, bytes: &[u8]) -> Result<(), TransferError> {
        use crate::registry::BlobSink;
        self.write(bytes).map_err(|e| match &self.staged {
            Staged::File(path, _) => TransferError::file("write", path.clone(), e),
            Staged::Memory(_) => TransferError::file("write", PathBuf::from("(memory)"), e),
        })
    }

    /// Sync the temp file and rename it to `to`.
    pub fn persist(self, to: &Path) -> std::io::Result<()> {
        match &self.staged {
            Staged::File(path, file) => {
                file.sync_all()?;
                std::fs::rename(path, to)
            }
            Staged::Memory(bytes) => std::fs::write(to, bytes),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        self.memory.fetch_sub(self.reserved, Ordering::SeqCst);
        if let Staged::File(path, _) = &self.staged {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl BlobSink for Staging {
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        match &mut self.staged {
            Staged::Memory(v) => {
                v.extend_from_slice(chunk);
                Ok(())
            }
            Staged::File(_, f) => f.write_all(chunk),
        }
    }
    fn restart(&mut self) -> std::io::Result<()> {
        match &mut self.staged {
            Staged::Memory(v) => {
                v.clear();
                Ok(())
            }
            Staged::File(_, f) => {
                f.set_len(0)?;
                f.rewind()
            }
        }
    }
}

enum ToTar {
    Blob {
        path: String,
        size: u64,
        staging: Staging,
    },
    File {
        path: String,
        bytes: Vec<u8>,
    },
}

/// The writer thread, held apart from the sink: dropping the sink (a finished or cancelled
/// export) ends the stream, and the thread is then joined through this before anything is
/// removed or published, so no segment is written after the export gave up.
pub struct Writer {
    dir: PathBuf,
    handle: tokio::task::JoinHandle<Result<(Vec<Segment>, u64)>>,
}

impl Writer {
    /// Wait for the writer thread: the segments (still under their temp names, see
    /// [`crate::bundle::segments::publish`]) and the tar's size, or the writer's own error
    /// (naming the file and the OS error). The staging area is removed either way.
    pub async fn finish(self) -> Result<(Vec<Segment>, u64)> {
        let result = self.handle.await.context("the bundle writer thread");
        let _ = std::fs::remove_dir_all(self.dir.join(STAGING));
        result?
    }
}

struct Reorder {
    next: usize,
    waiting: BTreeMap<usize, Option<ToTar>>,
}

/// The writing side of an export: the order of its blobs, the writer thread, the buffer.
pub struct BundleSink {
    dir: PathBuf,
    order: BTreeMap<Digest, usize>,
    window: usize,
    reorder: Mutex<Reorder>,
    moved: Notify,
    tx: mpsc::UnboundedSender<ToTar>,
    memory: Arc<AtomicU64>,
}

impl BundleSink {
    /// Start the writer thread into `dir`; blobs will be written in `order`. The stream ends
    /// when the sink is dropped; [`Writer::finish`] then says how it ended.
    pub fn start(
        dir: &Path,
        segment_size: u64,
        order: &[Digest],
        jobs: usize,
    ) -> Result<(BundleSink, Writer)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let segments = SegmentWriter::new(dir, segment_size)?;
        let memory = Arc::new(AtomicU64::new(0));
        let handle = tokio::task::spawn_blocking(move || write_tar(segments, rx));
        let writer = Writer {
            dir: dir.to_path_buf(),
            handle,
        };
        let sink = BundleSink {
            dir: dir.to_path_buf(),
            order: order
                .iter()
                .enumerate()
                .map(|(i, d)| (d.clone(), i))
                .collect(),
            window: jobs.max(1) * WINDOW_PER_JOB,
            reorder: Mutex::new(Reorder {
                next: 0,
                waiting: BTreeMap::new(),
            }),
            moved: Notify::new(),
            tx,
            memory,
        };
        Ok((sink, writer))
    }

    fn place(&self, digest: &Digest) -> usize {
        self.order[digest]
    }

    /// Wait until `digest` may be fetched (within the window of the writer's place), then a
    /// staging area for it.
    pub async fn stage(&self, digest: &Digest, size: u64) -> Result<Staging, TransferError> {
        let place = self.place(digest);
        loop {
            let notified = self.moved.notified();
            if place < self.reorder.lock().expect("reorder lock").next + self.window {
                break;
            }
            notified.await;
        }
        Staging::new(&self.dir.join(STAGING), digest, size, &self.memory)
    }

    /// Hand a blob over (`None`: it failed and stays out); it is written in its place.
    pub fn deliver(
        &self,
        digest: &Digest,
        size: u64,
        staging: Option<Staging>,
    ) -> Result<(), TransferError> {
        let place = self.place(digest);
        let mut r = self.reorder.lock().expect("reorder lock");
        r.waiting.insert(
            place,
            staging.map(|staging| ToTar::Blob {
                path: layout::blob_path(digest),
                size,
                staging,
            }),
        );
        let mut result = Ok(());
        loop {
            let next = r.next;
            let Some(entry) = r.waiting.remove(&next) else {
                break;
            };
            r.next += 1;
            if let Some(msg) = entry {
                if self.tx.send(msg).is_err() {
                    result = Err(TransferError::WriterStopped);
                }
            }
        }
        drop(r);
        self.moved.notify_waiters();
        result
    }

    /// A small file (a manifest, `index.json`) after everything handed over so far.
    pub fn file(&self, path: String, bytes: Vec<u8>) -> Result<()> {
        self.tx
            .send(ToTar::File { path, bytes })
            .map_err(|_| anyhow::anyhow!("the bundle writer stopped"))
    }
}

/// Counts what passes, to learn the tar's size.
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

/// The writer thread: tar → zstd → segments. The segments and the tar size.
fn write_tar(
    segments: SegmentWriter,
    mut rx: mpsc::UnboundedReceiver<ToTar>,
) -> Result<(Vec<Segment>, u64)> {
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
            ToTar::Blob {
                path,
                size,
                mut staging,
            } => {
                let written = match &mut staging.staged {
                    Staged::Memory(v) => tar.append_data(&mut header(size), &path, v.as_slice()),
                    Staged::File(_, f) => f
                        .rewind()
                        .and_then(|_| tar.append_data(&mut header(size), &path, f.take(size))),
                };
                written.with_context(|| format!("writing {path} into the bundle"))?;
            }
            ToTar::File { path, bytes } => {
                tar.append_data(&mut header(bytes.len() as u64), &path, bytes.as_slice())
                    .with_context(|| format!("writing {path} into the bundle"))?;
            }
        }
    }
    let counting = tar.into_inner()?;
    let tar_bytes = counting.count;
    let segments = counting.inner.finish()?.finish()?;
    Ok((segments, tar_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blobs_delivered_out_of_order_are_written_in_order() {
        let dir = std::env::temp_dir().join(format!("prewarm-bundle-sink-{}", std::process::id()));
        let blobs: Vec<(Digest, Vec<u8>)> = (0..5u8)
            .map(|i| {
                let bytes = vec![i; 10 + i as usize];
                (Digest::sha256_of(&bytes), bytes)
            })
            .collect();
        let order: Vec<Digest> = blobs.iter().map(|(d, _)| d.clone()).collect();
        let (sink, writer) = BundleSink::start(&dir, u64::MAX, &order, 2).unwrap();
        // Delivered backwards; the third one failed.
        for (n, (d, bytes)) in blobs.iter().enumerate().rev() {
            let mut staging = sink.stage(d, bytes.len() as u64).await.unwrap();
            staging.write(bytes).unwrap();
            let staging = (n != 2).then_some(staging);
            sink.deliver(d, bytes.len() as u64, staging).unwrap();
        }
        drop(sink);
        let (segments, _) = writer.finish().await.unwrap();
        crate::bundle::segments::publish(&dir, &segments).unwrap();
        let reader = crate::bundle::segments::SegmentReader::new(&dir, &segments);
        let mut archive = tar::Archive::new(zstd::Decoder::new(reader).unwrap());
        let paths: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .filter(|p| p.len() > 20)
            .collect();
        let expected: Vec<String> = [0, 1, 3, 4]
            .iter()
            .map(|&i| layout::blob_path(&blobs[i].0))
            .collect();
        assert_eq!(paths, expected);
        assert!(!dir.join(STAGING).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
