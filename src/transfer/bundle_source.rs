//! A bundle as a source: segments → zstd → tar, read once in stream order by a reading
//! thread, nothing unpacked to disk.
//!
//! The stream cannot be read out of order, so the consumer says, per blob, whether it wants
//! the bytes ([`BundleSource::take`]) or not ([`BundleSource::skip`]); the reader waits at each
//! wanted blob for that word. The scheduler starts blobs in stream order, so the word for the
//! next entry always comes. Bodies pass through a verifying stream (size and sha256). A body
//! whose upload broke after the stream moved on is read again by a second, private pass over
//! the bundle up to that entry ([`BundleSource::reread`]). Manifests (small, digests checked)
//! are kept in memory and handed out by [`BundleSource::manifest`] once read.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use crate::bundle::layout;
use crate::bundle::segments::SegmentReader;
use crate::bundle::BundleManifest;
use crate::reference::Digest;
use crate::registry::{verified_body, BodyFailure, ChunkStream};

/// Largest manifest accepted from a bundle (distribution's own limit is 4 MiB).
const MAX_MANIFEST: u64 = 16 << 20;
const CHUNK: usize = 256 << 10;

enum Decision {
    Take(mpsc::Sender<std::io::Result<Bytes>>),
    Skip,
}

/// What the reader found besides blobs.
#[derive(Default)]
struct Found {
    manifests: Mutex<BTreeMap<Digest, Bytes>>,
    done: AtomicBool,
    arrived: Notify,
}

pub struct BundleSource {
    dir: PathBuf,
    bundle: Arc<BundleManifest>,
    decisions: Option<mpsc::UnboundedSender<(Digest, Decision)>>,
    found: Arc<Found>,
    reader: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl BundleSource {
    /// Start reading `dir`; the reader waits for a word on each blob in `wanted`.
    pub fn open(dir: &Path, bundle: &BundleManifest, wanted: BTreeSet<Digest>) -> BundleSource {
        let (tx, rx) = mpsc::unbounded_channel();
        let found = Arc::new(Found::default());
        let bundle = Arc::new(bundle.clone());
        let reader = {
            let (dir, bundle, found) = (dir.to_path_buf(), bundle.clone(), found.clone());
            tokio::task::spawn_blocking(move || {
                let result = read_stream(&dir, &bundle, &wanted, rx, &found);
                found.done.store(true, Ordering::SeqCst);
                found.arrived.notify_waiters();
                result
            })
        };
        BundleSource {
            dir: dir.to_path_buf(),
            bundle,
            decisions: Some(tx),
            found,
            reader: Some(reader),
        }
    }

    /// The blob's bytes as a verified body, when the stream gets there.
    pub fn take(&self, digest: &Digest, size: u64) -> (ChunkStream, BodyFailure) {
        let (tx, rx) = mpsc::channel(8);
        if let Some(d) = &self.decisions {
            let _ = d.send((digest.clone(), Decision::Take(tx)));
        }
        verified_body(digest.clone(), size, receiver_stream(rx), None)
    }

    /// The stream may pass this blob.
    pub fn skip(&self, digest: &Digest) {
        if let Some(d) = &self.decisions {
            let _ = d.send((digest.clone(), Decision::Skip));
        }
    }

    /// The blob's bytes once more, from a pass of its own over the bundle.
    pub fn reread(&self, digest: &Digest, size: u64) -> (ChunkStream, BodyFailure) {
        let (tx, rx) = mpsc::channel(8);
        let (dir, bundle, digest_owned) = (self.dir.clone(), self.bundle.clone(), digest.clone());
        tokio::task::spawn_blocking(move || {
            let (dtx, drx) = mpsc::unbounded_channel();
            let _ = dtx.send((digest_owned.clone(), Decision::Take(tx)));
            drop(dtx);
            let wanted = BTreeSet::from([digest_owned]);
            let _ = read_stream(&dir, &bundle, &wanted, drx, &Found::default());
        });
        verified_body(digest.clone(), size, receiver_stream(rx), None)
    }

    /// A manifest of the bundle, once the stream got to it; `None` when it is not inside.
    pub async fn manifest(&self, digest: &Digest) -> Option<Bytes> {
        loop {
            let arrived = self.found.arrived.notified();
            if let Some(b) = self.found.manifests.lock().expect("manifests").get(digest) {
                return Some(b.clone());
            }
            if self.found.done.load(Ordering::SeqCst) {
                return None;
            }
            arrived.await;
        }
    }

    /// Let the reader run to the end (passing every blob no one asked for); its result.
    pub async fn finish(mut self) -> Result<()> {
        self.decisions = None;
        match self.reader.take() {
            Some(r) => r.await.context("the bundle reading thread")?,
            None => Ok(()),
        }
    }
}

fn receiver_stream(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> ChunkStream {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Walk the tar: blobs in `wanted` go where their decision says, manifests into `found`.
fn read_stream(
    dir: &Path,
    bundle: &BundleManifest,
    wanted: &BTreeSet<Digest>,
    mut decisions: mpsc::UnboundedReceiver<(Digest, Decision)>,
    found: &Found,
) -> Result<()> {
    let blobs: BTreeMap<&Digest, u64> = bundle.blobs.iter().map(|b| (&b.digest, b.size)).collect();
    let manifests: BTreeSet<&Digest> = bundle.manifests.iter().map(|m| &m.digest).collect();
    let mut decided: BTreeMap<Digest, Decision> = BTreeMap::new();
    let reader = SegmentReader::new(dir, &bundle.segments);
    let decoder = zstd::Decoder::new(reader).context("bundle: zstd stream")?;
    let mut archive = tar::Archive::new(decoder);
    for entry in archive.entries().context("bundle: tar stream")? {
        let mut entry = entry.context("bundle: tar stream")?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let Some(digest) = layout::digest_of_path(&path) else {
            continue;
        };
        let size = entry.size();
        if let Some(&expected) = blobs.get(&digest) {
            crate::bundle::progress::blob(format!(
                "blob {digest} ({})",
                crate::progress::human_bytes(size)
            ));
            if size != expected {
                bail!("bundle: {path} is {size} bytes, bundle.json says {expected}");
            }
            if !wanted.contains(&digest) {
                continue;
            }
            // Wait for the word on this blob; no more words (the consumer is done): pass it.
            let decision = loop {
                if let Some(d) = decided.remove(&digest) {
                    break d;
                }
                match decisions.blocking_recv() {
                    Some((d, decision)) => {
                        decided.insert(d, decision);
                    }
                    None => break Decision::Skip,
                }
            };
            let Decision::Take(sink) = decision else {
                continue;
            };
            let mut sink = Some(sink);
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = entry
                    .read(&mut buf)
                    .with_context(|| format!("bundle: reading {path}"))?;
                if n == 0 {
                    break;
                }
                crate::bundle::progress::bytes(n as u64);
                if let Some(s) = &sink {
                    // The upload gave up: read on to the next entry.
                    if s.blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        sink = None;
                    }
                }
            }
        } else if manifests.contains(&digest) {
            if size > MAX_MANIFEST {
                bail!("bundle: manifest {path} is {size} bytes, more than a manifest can be");
            }
            let mut bytes = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut bytes)
                .with_context(|| format!("bundle: reading {path}"))?;
            let actual = Digest::sha256_of(&bytes);
            if actual != digest {
                bail!("bundle: manifest {digest}: its bytes hash to {actual}");
            }
            found
                .manifests
                .lock()
                .expect("manifests")
                .insert(digest, Bytes::from(bytes));
            found.arrived.notify_waiters();
        }
    }
    Ok(())
}
