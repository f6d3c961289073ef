//! Export: the registry source into a bundle ([`BundleSink`]) or an OCI image layout directory
//! ([`LayoutSink`]) on the one scheduler — blobs fetched `--jobs` at once, biggest first,
//! each verified before it is written.
//!
//! A bundle takes blobs in the plan's order (biggest first) through the sink's reorder buffer,
//! then child manifests, top manifests and `index.json`; `bundle.json` appears last, only for
//! a complete bundle. A blob that cannot be fetched fails the images that need it and leaves
//! nothing of itself behind; a writer that fails (a full disk) aborts the export and removes
//! what it wrote.
//!
//! Images prewarm built (filtered catalogs, the graph image; see `cluster::carry`) are plan
//! images like the others, except that their new blobs and manifests come from memory
//! ([`Extras`]); `bundle.json` also takes the images' roles and the release signatures.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use bytes::Bytes;

use super::bundle_sink::{BundleSink, STAGING};
use super::layout_sink::LayoutSink;
use super::remote::RegistrySource;
use super::scheduler::{Arrangement, Chain, Done, Task};
use super::{ImageOutcomes, TransferError, Work};
use crate::bundle::interrupt::Interrupt;
use crate::bundle::inventory::Inventory;
use crate::bundle::layout::{self, IndexEntry};
use crate::bundle::segments;
use crate::bundle::{
    BaseBundle, BundleBlob, BundleImage, BundleManifest, BundleManifestEntry, Extras, FORMAT,
    MANIFEST_FILE,
};
use crate::plan::Plan;
use crate::reference::Digest;
use crate::report::{ImageReport, ImageStatus};

pub struct ExportOptions<'a> {
    pub dir: &'a Path,
    pub segment_size: u64,
    pub have: Option<&'a Inventory>,
    /// The bundle this one builds on (`--since-last`), named in `bundle.json`.
    pub base: Option<BaseBundle>,
    /// What prewarm built for the bundle (images in the plan whose new blobs and manifests
    /// are in memory), the images' roles and the release signatures.
    pub extras: &'a Extras,
}

/// Where an export writes.
enum Sink {
    Bundle(BundleSink),
    Layout(LayoutSink),
}

/// A fetched manifest: its bytes and media type.
type Fetched = (Bytes, String);

struct Export<'a> {
    work: &'a Work<'a>,
    plan: &'a Plan,
    source: RegistrySource<'a>,
    sink: Sink,
    /// Manifests the far site holds (left out).
    have: Option<&'a Inventory>,
    /// Blobs prewarm built: written from memory.
    built: &'a BTreeMap<Digest, Bytes>,
    manifests: Mutex<BTreeMap<Digest, Fetched>>,
}

impl Arrangement for Export<'_> {
    fn stages(&self) -> (bool, bool) {
        (false, true)
    }

    async fn blob(&self, task: &Task, _head: Option<&Task>) -> Result<Done, TransferError> {
        let image = &self.plan.images[task.images[0]].source;
        let reporter = self.work.reporter;
        let progress = |n| reporter.bytes(n);
        match &self.sink {
            Sink::Bundle(sink) => {
                let mut staging = match sink.stage(&task.digest, task.size).await {
                    Ok(s) => s,
                    Err(e) => {
                        sink.deliver(&task.digest, task.size, None)?;
                        return Err(e);
                    }
                };
                let read = match self.built.get(&task.digest) {
                    Some(bytes) => staging.put(bytes).map(|()| {
                        progress(bytes.len() as u64);
                        bytes.len() as u64
                    }),
                    None => {
                        self.source
                            .read_blob(image, &task.digest, task.size, &mut staging, &progress)
                            .await
                    }
                };
                match read {
                    Ok(n) => {
                        sink.deliver(&task.digest, task.size, Some(staging))?;
                        Ok(Done::Moved(n))
                    }
                    Err(e) => {
                        sink.deliver(&task.digest, task.size, None)?;
                        Err(e)
                    }
                }
            }
            Sink::Layout(sink) => {
                if sink.holds(&task.digest, task.size) {
                    return Ok(Done::Present);
                }
                let mut staging = sink.stage(&task.digest)?;
                let n = self
                    .source
                    .read_blob(image, &task.digest, task.size, &mut staging, &progress)
                    .await?;
                sink.commit(&task.digest, staging)?;
                Ok(Done::Moved(n))
            }
        }
    }

    /// Fetch the image's manifests (verified by digest), to be written once every blob is.
    async fn after(&self, i: usize) -> Result<(), TransferError> {
        let image = &self.plan.images[i];
        for digest in &image.manifests {
            let held = self.have.is_some_and(|h| h.has_manifest(digest))
                || self
                    .manifests
                    .lock()
                    .expect("manifests lock")
                    .contains_key(digest);
            if held {
                continue;
            }
            let m = self.source.manifest(&image.source, digest).await?;
            let media_type = if m.media_type.is_empty() {
                image.media_type.clone()
            } else {
                m.media_type
            };
            if let Sink::Layout(sink) = &self.sink {
                sink.put(digest, &m.bytes)?;
            }
            self.manifests
                .lock()
                .expect("manifests lock")
                .insert(digest.clone(), (m.bytes, media_type));
        }
        Ok(())
    }
}

/// One task per unique blob to write (none for what `have` says the far site holds), in the
/// plan's order: biggest first.
fn export_tasks(plan: &Plan, have: Option<&Inventory>) -> Vec<Task> {
    let mut images: BTreeMap<&Digest, Vec<usize>> = BTreeMap::new();
    for (i, image) in plan.images.iter().enumerate() {
        for d in &image.blobs {
            images.entry(d).or_default().push(i);
        }
    }
    plan.blobs
        .iter()
        .filter(|b| have.and_then(|h| h.blob_home(&b.digest)).is_none())
        .filter_map(|b| {
            Some(Task {
                repository: String::new(),
                digest: b.digest.clone(),
                size: b.size,
                images: images.get(&b.digest)?.clone(),
            })
        })
        .collect()
}

/// Run the scheduler over `tasks` into `sink`.
async fn run<'a>(
    work: &'a Work<'a>,
    plan: &'a Plan,
    sink: Sink,
    have: Option<&'a Inventory>,
    extras: &'a Extras,
    tasks: Vec<Task>,
    outcomes: &ImageOutcomes,
) -> Export<'a> {
    let bytes = tasks.iter().map(|t| t.size).sum();
    let arrangement = Export {
        work,
        plan,
        source: RegistrySource {
            job: work.job,
            registries: work.registries,
        },
        sink,
        have,
        built: &extras.blobs,
        manifests: Mutex::new(extras.manifests.clone()),
    };
    work.schedule(
        "export",
        bytes,
        &arrangement,
        plan.images.len(),
        tasks,
        Chain::Independent,
        outcomes,
    )
    .await;
    arrangement
}

/// The manifests to write, in the bundle's order: every image's children, then the tops;
/// each digest once, only for images that did not fail.
fn manifest_order<'p>(plan: &'p Plan, outcomes: &ImageOutcomes) -> Vec<(usize, &'p Digest, bool)> {
    let mut seen = BTreeSet::new();
    let kept = |i: &usize| !outcomes.has_failed(*i);
    let children = plan
        .images
        .iter()
        .enumerate()
        .filter(|(i, _)| kept(i))
        .flat_map(|(i, im)| im.manifests.iter().skip(1).map(move |d| (i, d, false)));
    let tops = plan
        .images
        .iter()
        .enumerate()
        .filter(|(i, _)| kept(i))
        .map(|(i, im)| (i, &im.digest, true));
    children
        .chain(tops)
        .filter(|(_, d, top)| *top || seen.insert(*d))
        .collect()
}

/// The source reference of each exported top manifest, with the manifest's bytes and media
/// type: what `index.json` lists.
fn index_of<'p>(
    plan: &'p Plan,
    order: &[(usize, &'p Digest, bool)],
    manifests: &'p BTreeMap<Digest, Fetched>,
) -> Vec<(String, &'p Digest, &'p Fetched)> {
    order
        .iter()
        .filter(|(_, _, top)| *top)
        .filter_map(|(i, d, _)| Some((plan.images[*i].source.to_string(), *d, manifests.get(*d)?)))
        .collect()
}

fn entries<'e>(index: &'e [(String, &'e Digest, &'e Fetched)]) -> Vec<IndexEntry<'e>> {
    index
        .iter()
        .map(|(reference, digest, (bytes, media_type))| IndexEntry {
            media_type,
            digest,
            size: bytes.len() as u64,
            reference,
        })
        .collect()
}

/// Remove the segment files (temp or final) and staging of an export that did not complete.
fn remove_partial(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir.join(STAGING));
    segments::remove_partial(dir);
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
    let have = options.have;
    let tasks = export_tasks(plan, have);
    let order: Vec<Digest> = tasks.iter().map(|t| t.digest.clone()).collect();
    let (sink, writer) = BundleSink::start(dir, options.segment_size, &order, work.jobs)?;
    let body = async {
        let export = run(
            work,
            plan,
            Sink::Bundle(sink),
            have,
            options.extras,
            tasks,
            &outcomes,
        )
        .await;
        let Sink::Bundle(sink) = export.sink else {
            unreachable!("a bundle export writes a bundle")
        };
        let manifests = export.manifests.into_inner().expect("manifests lock");
        let order = manifest_order(plan, &outcomes);
        for (_, digest, _) in &order {
            if let Some((bytes, _)) = manifests.get(*digest) {
                sink.file(layout::blob_path(digest), bytes.to_vec())?;
            }
        }
        let index = index_of(plan, &order, &manifests);
        sink.file("index.json".into(), layout::index_json(&entries(&index)))?;
        anyhow::Ok(manifests)
    };
    // A signal stops the downloads: the body (and the sink with it) is dropped, which ends the
    // tar stream; the writer thread is joined below and the temp segments removed before the
    // process exits.
    let result = tokio::select! {
        r = body => r,
        sig = interrupt.received() => Err(anyhow::anyhow!("stopped by {sig}")),
    };
    let finished = writer.finish().await;
    let (manifests, (segments, tar_bytes)) = match (result, finished) {
        (Ok(m), Ok(w)) => (m, w),
        // The writer's own error (ENOSPC, EROFS: the file and the OS error) says why nothing
        // more could be handed to it; prefer it to "the bundle writer stopped".
        (_, Err(e)) | (Err(e), Ok(_)) => {
            remove_partial(dir);
            return Err(segments::failed(dir, e));
        }
    };
    if let Err(e) = segments::publish(dir, &segments) {
        remove_partial(dir);
        return Err(e.context(format!("export into {} failed", dir.display())));
    }
    let order = manifest_order(plan, &outcomes);
    let kept: BTreeSet<&Digest> = plan
        .images
        .iter()
        .enumerate()
        .filter(|(i, _)| !outcomes.has_failed(*i))
        .flat_map(|(_, im)| im.blobs.iter())
        .collect();
    let have_manifest = |d: &Digest| have.is_some_and(|h| h.has_manifest(d));
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
                role: options.extras.roles.get(&im.source.to_string()).cloned(),
            })
            .collect(),
        blobs: plan
            .blobs
            .iter()
            .filter(|b| {
                kept.contains(&b.digest) && have.and_then(|h| h.blob_home(&b.digest)).is_none()
            })
            .map(|b| BundleBlob {
                digest: b.digest.clone(),
                size: b.size,
                media_type: b.media_type.clone(),
            })
            .collect(),
        manifests: order
            .iter()
            .filter_map(|(_, d, _)| {
                let (bytes, media_type) = manifests.get(*d)?;
                Some(BundleManifestEntry {
                    digest: (*d).clone(),
                    size: bytes.len() as u64,
                    media_type: media_type.clone(),
                })
            })
            .collect(),
        present: plan
            .blobs
            .iter()
            .filter_map(|b| have?.present_blob(&b.digest, b.size))
            .collect(),
        present_manifests: plan
            .manifests
            .iter()
            .filter(|m| have_manifest(&m.digest))
            .map(|m| m.digest.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        tar_bytes,
        signatures: crate::bundle::encode_signatures(&options.extras.signatures),
    };
    // A bundle.json that cannot be written removes the segments (no bundle without it).
    manifest.write(dir)?;
    let reports = outcomes.into_reports(plan, |_| ImageStatus::Exported);
    Ok((reports, manifest))
}

/// Export into an OCI image layout directory (`export --format oci-dir`).
pub async fn export_layout(work: &Work<'_>, plan: &Plan, dir: &Path) -> Result<Vec<ImageReport>> {
    let sink = LayoutSink::open(dir)?;
    let outcomes = ImageOutcomes::new(plan);
    let tasks = export_tasks(plan, None);
    let none = Extras::default();
    let export = run(
        work,
        plan,
        Sink::Layout(sink),
        None,
        &none,
        tasks,
        &outcomes,
    )
    .await;
    let Sink::Layout(sink) = export.sink else {
        unreachable!("a layout export writes a layout")
    };
    let manifests = export.manifests.into_inner().expect("manifests lock");
    let order = manifest_order(plan, &outcomes);
    let index = index_of(plan, &order, &manifests);
    sink.finish(&entries(&index))?;
    Ok(outcomes.into_reports(plan, |_| ImageStatus::Exported))
}
