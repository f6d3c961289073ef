//! Import: push a bundle into a registry, streaming segments → zstd → tar → registry with
//! nothing unpacked to disk.
//!
//! Every segment's size and sha256 is checked before anything is pushed. Then one pass over
//! the tar stream, in a reading thread: for each config or layer blob the pushing side HEADs
//! its first destination repository and either skips it (already there: this is what makes a
//! rerun after an interruption resume without pushing finished blobs again) or takes its bytes
//! as the body of a streamed upload, verified against its digest; an upload the link broke
//! (its bytes gone with the stream) is streamed again in a second pass. Manifests are small and
//! kept in memory (their digests checked). After the stream: cross-repository mounts into
//! the other repositories that need each blob, blobs the far site was assumed to hold (mounted
//! from the repository its inventory named), then manifests, children before their index,
//! then tags.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::copy::{push_items, push_manifests, record, PushItem};
use super::destination::Destination;
use super::{ImageOutcomes, Work};
use crate::bundle::layout;
use crate::bundle::segments::{self, SegmentReader};
use crate::bundle::BundleManifest;
use crate::plan::{Plan, PlannedBlob, PlannedImage};
use crate::reference::{Digest, Reference};
use crate::registry::{
    verified_body, ChunkStream, Presence, Pushed, RegistryClient, RegistryError,
};
use crate::report::{ImageReport, ImageStatus};

/// Largest manifest accepted from a bundle (distribution's own limit is 4 MiB).
const MAX_MANIFEST: u64 = 16 << 20;
const CHUNK: usize = 256 << 10;

enum FromTar {
    Blob {
        digest: Digest,
        size: u64,
        /// `Some(sender)`: send the bytes there; `None`: skip them.
        reply: oneshot::Sender<Option<mpsc::Sender<std::io::Result<Bytes>>>>,
    },
    Manifest {
        digest: Digest,
        bytes: Vec<u8>,
    },
}

/// Check every segment; an error naming each bad one.
pub fn verify_segments(dir: &Path, bundle: &BundleManifest) -> Result<()> {
    crate::bundle::progress::step(
        format!(
            "verifying {} segment(s) (size, sha256)",
            bundle.segments.len()
        ),
        bundle.segments.iter().map(|s| s.size).sum(),
    );
    let problems = segments::verify_with(dir, &bundle.segments, &|_, n| {
        crate::bundle::progress::bytes(n)
    });
    if problems.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = problems.iter().map(|(n, p)| format!("{n}: {p}")).collect();
    bail!(
        "bundle {}: {} bad segment(s): {}",
        dir.display(),
        problems.len(),
        list.join("; ")
    )
}

/// The bundle's images as a plan, so import reports like every other executor.
pub fn plan_of(bundle: &BundleManifest, dir: &Path) -> Result<Plan> {
    let sizes: BTreeMap<&Digest, u64> = bundle
        .blobs
        .iter()
        .map(|b| (&b.digest, b.size))
        .chain(bundle.present.iter().map(|b| (&b.digest, b.size)))
        .collect();
    let mut plan = Plan::default();
    for (n, image) in bundle.images.iter().enumerate() {
        let source: Reference = image.reference.parse().with_context(|| {
            format!(
                "{}: images[{n}].reference",
                dir.join("bundle.json").display()
            )
        })?;
        plan.images.push(PlannedImage {
            source,
            digest: image.digest.clone(),
            media_type: image.media_type.clone(),
            origin: format!("{}: images[{n}]", dir.join("bundle.json").display()),
            platforms: Vec::new(),
            manifests: image.manifests.clone(),
            blobs: image.blobs.clone(),
            bytes: image.blobs.iter().filter_map(|d| sizes.get(d)).sum(),
        });
    }
    plan.blobs = bundle
        .blobs
        .iter()
        .map(|b| PlannedBlob {
            digest: b.digest.clone(),
            size: b.size,
            media_type: b.media_type.clone(),
            repositories: BTreeSet::new(),
        })
        .chain(bundle.present.iter().map(|b| PlannedBlob {
            digest: b.digest.clone(),
            size: b.size,
            media_type: String::new(),
            repositories: BTreeSet::new(),
        }))
        .collect();
    Ok(plan)
}

/// The reading thread: walk the tar, hand each blob to the pushing side.
fn read_tar(dir: PathBuf, bundle: &BundleManifest, tx: mpsc::Sender<FromTar>) -> Result<()> {
    let blobs: BTreeMap<Digest, u64> = bundle
        .blobs
        .iter()
        .map(|b| (b.digest.clone(), b.size))
        .collect();
    let manifests: BTreeSet<&Digest> = bundle.manifests.iter().map(|m| &m.digest).collect();
    let reader = SegmentReader::new(&dir, &bundle.segments);
    let decoder = zstd::Decoder::new(reader).context("bundle: zstd stream")?;
    let mut archive = tar::Archive::new(decoder);
    let stopped = || anyhow::anyhow!("the import stopped");
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
            let (reply, answer) = oneshot::channel();
            tx.blocking_send(FromTar::Blob {
                digest,
                size,
                reply,
            })
            .map_err(|_| stopped())?;
            let sink = answer.blocking_recv().map_err(|_| stopped())?;
            let mut buf = vec![0u8; CHUNK];
            let mut sink = sink;
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
            tx.blocking_send(FromTar::Manifest { digest, bytes })
                .map_err(|_| stopped())?;
        }
    }
    Ok(())
}

fn receiver_stream(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> ChunkStream {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

pub async fn import(
    work: &Work<'_>,
    bundle: &BundleManifest,
    dir: &Path,
    dest: &Destination,
    target: &RegistryClient,
) -> Result<Vec<ImageReport>> {
    verify_segments(dir, bundle)?;
    let plan = plan_of(bundle, dir)?;
    crate::bundle::chain::check_left_out(bundle, &plan, dest, target, work.jobs).await?;
    let outcomes = ImageOutcomes::new(&plan);
    let (first, rest) = push_items(&plan, dest);
    let present: BTreeMap<&Digest, String> = bundle
        .present
        .iter()
        .map(|p| (&p.digest, crate::bundle::chain::home(p, dest)))
        .collect();
    let (streamed, assumed): (Vec<PushItem>, Vec<PushItem>) = first
        .into_iter()
        .partition(|i| !present.contains_key(&i.digest));
    let mut by_digest: BTreeMap<Digest, PushItem> = streamed
        .into_iter()
        .map(|i| (i.digest.clone(), i))
        .collect();
    let failed_digests: Mutex<BTreeMap<Digest, String>> = Mutex::new(BTreeMap::new());

    // Blobs the far site was said to hold: there already, or mounted from where they are.
    work.reporter.phase("present", assumed.len() as u64, 0);
    futures::stream::iter(assumed)
        .for_each_concurrent(work.jobs, |item| {
            let (outcomes, failed_digests, present) = (&outcomes, &failed_digests, &present);
            async move {
                let from = present
                    .get(&item.digest)
                    .map(String::as_str)
                    .unwrap_or_default();
                let result = target
                    .push_blob(
                        &item.repository,
                        &item.digest,
                        item.size,
                        Some(from),
                        || copy_within(target, from, &item),
                    )
                    .await
                    .map_err(|e| {
                        format!(
                            "{e} (left out of the bundle: the inventory said `{from}` holds it)"
                        )
                    });
                if let Err(e) = &result {
                    failed_digests
                        .lock()
                        .expect("lock")
                        .insert(item.digest.clone(), e.clone());
                }
                record(work, outcomes, &item, &result);
                work.reporter
                    .item_done(&item.digest.short(), result.is_ok());
            }
        })
        .await;
    work.reporter.finish_phase();

    // One pass over the stream, and a second one for uploads the link broke.
    let retry_later: Mutex<Vec<PushItem>> = Mutex::new(Vec::new());
    let mut manifests: BTreeMap<Digest, Bytes> = BTreeMap::new();
    let mut pass = 0;
    loop {
        crate::bundle::progress::step(
            format!("reading the bundle (pass {})", pass + 1),
            by_digest.values().map(|i| i.size).sum(),
        );
        work.reporter.phase(
            "blobs",
            by_digest.len() as u64,
            by_digest.values().map(|i| i.size).sum(),
        );
        let (tx, mut rx) = mpsc::channel::<FromTar>(4);
        let reader = {
            let dir = dir.to_path_buf();
            let bundle = bundle.clone();
            tokio::task::spawn_blocking(move || read_tar(dir, &bundle, tx))
        };
        // What the destination holds already, asked up front and concurrently: a rerun after an
        // interruption skips its finished blobs here.
        let held: BTreeSet<Digest> = futures::stream::iter(by_digest.values())
            .map(|item| async move {
                let there = target
                    .head_blob(&item.repository, &item.digest, Some(item.size))
                    .await;
                (item.digest.clone(), matches!(there, Ok(Presence::Present)))
            })
            .buffer_unordered(work.jobs)
            .filter_map(|(d, there)| async move { there.then_some(d) })
            .collect()
            .await;
        // Uploads in flight: the stream moves on to the next blob once a blob's bytes are all
        // handed over, so small blobs upload side by side; `jobs` bounds them (and the memory).
        let mut uploads = futures::stream::FuturesUnordered::new();
        let finished = |item: PushItem, result: Result<Pushed, String>| {
            // A streamed upload the link broke cannot be replayed from the stream that moved
            // on: keep it for one more pass over the bundle instead of failing its images.
            if let Err(e) = &result {
                if pass == 0 && !e.starts_with("bundle:") {
                    tracing::debug!("blob {}: {e}; retrying in a second pass", item.digest);
                    retry_later.lock().expect("lock").push(item);
                    return;
                }
            }
            if let Err(e) = &result {
                failed_digests
                    .lock()
                    .expect("lock")
                    .insert(item.digest.clone(), e.clone());
            }
            record(work, &outcomes, &item, &result);
            work.reporter
                .item_done(&item.digest.short(), result.is_ok());
        };
        loop {
            let msg = tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => m,
                    None => break,
                },
                Some((item, result)) = uploads.next(), if !uploads.is_empty() => {
                    finished(item, result);
                    continue;
                }
            };
            match msg {
                FromTar::Manifest { digest, bytes } => {
                    let actual = Digest::sha256_of(&bytes);
                    if actual != digest {
                        bail!("bundle: manifest {digest}: its bytes hash to {actual}");
                    }
                    manifests.insert(digest, Bytes::from(bytes));
                }
                FromTar::Blob {
                    digest,
                    size,
                    reply,
                } => {
                    let Some(item) = by_digest.remove(&digest) else {
                        let _ = reply.send(None);
                        continue;
                    };
                    if held.contains(&digest) {
                        let _ = reply.send(None);
                        finished(item, Ok(Pushed::Present));
                        continue;
                    }
                    while uploads.len() >= work.jobs {
                        if let Some((item, result)) = uploads.next().await {
                            finished(item, result);
                        }
                    }
                    match target.start_upload(&item.repository).await {
                        Ok(location) => {
                            let (bytes_tx, bytes_rx) = mpsc::channel(8);
                            let _ = reply.send(Some(bytes_tx));
                            uploads.push(upload(target, item, location, size, bytes_rx));
                        }
                        Err(e) => {
                            let _ = reply.send(None);
                            finished(item, Err(e.to_string()));
                        }
                    }
                }
            }
        }
        while let Some((item, result)) = uploads.next().await {
            finished(item, result);
        }
        let read = reader.await.context("the bundle reading thread")?;
        read.with_context(|| format!("bundle {}", dir.display()))?;
        for item in by_digest.into_values() {
            let e = format!(
                "blob `{}` is listed in bundle.json but not in the bundle",
                item.digest
            );
            failed_digests
                .lock()
                .expect("lock")
                .insert(item.digest.clone(), e.clone());
            record(work, &outcomes, &item, &Err(e));
        }
        work.reporter.finish_phase();

        let again = std::mem::take(&mut *retry_later.lock().expect("lock"));
        if again.is_empty() {
            break;
        }
        pass += 1;
        by_digest = again.into_iter().map(|i| (i.digest.clone(), i)).collect();
    }

    // Mounts into every other repository.
    crate::bundle::progress::set(format!(
        "mounting {} blob(s) into the other repositories that need them",
        rest.len()
    ));
    work.reporter.phase("mounts", rest.len() as u64, 0);
    futures::stream::iter(rest)
        .for_each_concurrent(work.jobs, |(item, from)| {
            let (outcomes, failed_digests, present) = (&outcomes, &failed_digests, &present);
            async move {
                let earlier = failed_digests
                    .lock()
                    .expect("lock")
                    .get(&item.digest)
                    .cloned();
                let from = present.get(&item.digest).cloned().unwrap_or(from);
                let result = match earlier {
                    Some(e) => Err(e),
                    None => target
                        .push_blob(
                            &item.repository,
                            &item.digest,
                            item.size,
                            Some(&from),
                            || copy_within(target, &from, &item),
                        )
                        .await
                        .map_err(|e| e.to_string()),
                };
                record(work, outcomes, &item, &result);
                work.reporter
                    .item_done(&item.digest.short(), result.is_ok());
            }
        })
        .await;
    work.reporter.finish_phase();

    let failed: Vec<bool> = (0..plan.images.len())
        .map(|i| outcomes.has_failed(i))
        .collect();
    let media_types: BTreeMap<&Digest, &str> = bundle
        .manifests
        .iter()
        .map(|m| (&m.digest, m.media_type.as_str()))
        .collect();
    let manifests = &manifests;
    let (plan_ref, media_types) = (&plan, &media_types);
    crate::bundle::progress::set(format!(
        "pushing the manifests and tags of {} image(s)",
        plan.images.len()
    ));
    push_manifests(
        work,
        &plan,
        dest,
        target,
        &outcomes,
        &failed,
        |i, digest| async move {
            if let (Some(bytes), Some(mt)) = (manifests.get(&digest), media_types.get(&digest)) {
                return Ok(Some((bytes.clone(), mt.to_string())));
            }
            // Left out because the far site holds it: it must be there.
            let repository = dest.repository(&plan_ref.images[i].source);
            match target.manifest_presence(&repository, &digest, None).await {
                Ok(Presence::Present) => Ok(None),
                Ok(Presence::Absent) => Err(format!(
                    "manifest `{digest}` left out of the bundle is not at the destination"
                )),
                Err(e) => Err(format!(
                    "manifest `{digest}` left out of the bundle is not at the destination: {e}"
                )),
            }
        },
    )
    .await;

    Ok(outcomes.into_reports(&plan, |o| {
        if o.fetched_any {
            ImageStatus::Copied
        } else {
            ImageStatus::Present
        }
    }))
}

/// Where a registry answers a mount with 202 (not mounted), the bytes are read back from the
/// repository of the same registry that holds them and uploaded, verified.
async fn copy_within(
    target: &RegistryClient,
    from: &str,
    item: &PushItem,
) -> Result<ChunkStream, RegistryError> {
    let stream = target.blob_stream(from, &item.digest).await?;
    Ok(verified_body(item.digest.clone(), item.size, stream, None).0)
}

/// One streamed upload into an opened session, fed by the reading thread.
async fn upload(
    target: &RegistryClient,
    item: PushItem,
    location: String,
    size: u64,
    bytes: mpsc::Receiver<std::io::Result<Bytes>>,
) -> (PushItem, Result<Pushed, String>) {
    let (body, failure) = verified_body(item.digest.clone(), size, receiver_stream(bytes), None);
    let result = match target
        .finish_upload(&item.repository, &location, &item.digest, size, body)
        .await
    {
        Ok(n) => Ok(Pushed::Uploaded(n)),
        Err(e) => Err(match failure.lock().expect("failure lock").clone() {
            Some(why) => format!("bundle: {why}"),
            None => e.to_string(),
        }),
    };
    (item, result)
}
