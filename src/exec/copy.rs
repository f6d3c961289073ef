//! Copy: push every plan image into a destination registry's repositories, digests unchanged.
//!
//! Blobs first, one scheduler for the whole plan: each digest is uploaded once, into the first
//! destination repository that needs it (streamed from the source through a verifying body,
//! never whole in memory), then cross-repository mounted into the others; a blob the
//! destination repository already holds is skipped (HEAD). Then manifests byte for byte,
//! children before their index, by digest; tags last, so a tag never points at something
//! incomplete.

use std::collections::BTreeMap;
use std::sync::Mutex;

use anyhow::Result;
use futures::StreamExt;

use super::destination::{source_reader, Destination};
use super::{ImageOutcomes, Work};
use crate::plan::Plan;
use crate::reference::Digest;
use crate::registry::{verified_body, Pushed, RegistryClient, RegistryError};
use crate::report::{ImageReport, ImageStatus};

/// One (destination repository, blob) pair.
pub(super) struct PushItem {
    pub repository: String,
    pub digest: Digest,
    pub size: u64,
    /// Index into `plan.images` of the image whose source is read for the bytes.
    pub source_image: usize,
    pub images: Vec<usize>,
}

/// Every (destination repository, blob) pair, split into the first pair of each digest
/// (uploaded) and the rest (mounted from the first), each list biggest first.
pub(super) fn push_items(
    plan: &Plan,
    dest: &Destination,
) -> (Vec<PushItem>, Vec<(PushItem, String)>) {
    let sizes: BTreeMap<&Digest, u64> = plan.blobs.iter().map(|b| (&b.digest, b.size)).collect();
    let mut items: BTreeMap<(String, Digest), PushItem> = BTreeMap::new();
    for (i, image) in plan.images.iter().enumerate() {
        let repository = dest.repository(&image.source);
        for digest in &image.blobs {
            items
                .entry((repository.clone(), digest.clone()))
                .or_insert_with(|| PushItem {
                    repository: repository.clone(),
                    digest: digest.clone(),
                    size: sizes.get(digest).copied().unwrap_or(0),
                    source_image: i,
                    images: Vec::new(),
                })
                .images
                .push(i);
        }
    }
    let mut home: BTreeMap<Digest, String> = BTreeMap::new();
    let (mut first, mut rest) = (Vec::new(), Vec::new());
    for item in items.into_values() {
        match home.get(&item.digest) {
            Some(from) => {
                let from = from.clone();
                rest.push((item, from));
            }
            None => {
                home.insert(item.digest.clone(), item.repository.clone());
                first.push(item);
            }
        }
    }
    first.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.digest.cmp(&b.digest)));
    rest.sort_by(|a, b| {
        b.0.size
            .cmp(&a.0.size)
            .then_with(|| a.0.digest.cmp(&b.0.digest))
    });
    (first, rest)
}

/// Record a blob result against every image needing it.
pub(super) fn record(
    work: &Work<'_>,
    outcomes: &ImageOutcomes,
    item: &PushItem,
    result: &Result<Pushed, String>,
) {
    if let Ok(Pushed::Uploaded(n)) = result {
        work.reporter.bytes(*n);
    }
    for &i in &item.images {
        match result {
            Ok(Pushed::Uploaded(n)) => outcomes.fetched(i, *n),
            Ok(Pushed::Mounted) => outcomes.fetched(i, 0),
            Ok(Pushed::Present) => {}
            Err(e) => outcomes.fail(i, e.clone()),
        }
    }
}

pub async fn copy(
    work: &Work<'_>,
    plan: &Plan,
    dest: &Destination,
    target: &RegistryClient,
) -> Result<Vec<ImageReport>> {
    let outcomes = ImageOutcomes::new(plan);
    let (first, rest) = push_items(plan, dest);
    let count = first.len() + rest.len();
    let total: u64 = first.iter().map(|i| i.size).sum();
    work.reporter.phase("blobs", count as u64, total);
    let failed_digests: Mutex<BTreeMap<Digest, String>> = Mutex::new(BTreeMap::new());
    futures::stream::iter(first)
        .for_each_concurrent(work.jobs, |item| {
            let outcomes = &outcomes;
            let failed_digests = &failed_digests;
            async move {
                let result = copy_blob(work, plan, target, &item)
                    .await
                    .map_err(|e| e.to_string());
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
    futures::stream::iter(rest)
        .for_each_concurrent(work.jobs, |(item, from)| {
            let outcomes = &outcomes;
            let failed_digests = &failed_digests;
            async move {
                let earlier = failed_digests
                    .lock()
                    .expect("lock")
                    .get(&item.digest)
                    .cloned();
                let result = match earlier {
                    Some(e) => Err(e),
                    None => {
                        // Mount; a 202 opens an upload, fed from the source.
                        let source = &plan.images[item.source_image].source;
                        target
                            .push_blob(
                                &item.repository,
                                &item.digest,
                                item.size,
                                Some(&from),
                                || source_body(work, source, &item),
                            )
                            .await
                            .map_err(|e| e.to_string())
                    }
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
    push_manifests(work, plan, dest, target, &outcomes, &failed, |i, digest| {
        let image = &plan.images[i];
        async move {
            let (client, repository) = source_reader(work.job, work.registries, &image.source)
                .map_err(|e| format!("{e:#}"))?;
            let m = client
                .get_manifest(&repository, digest.as_str())
                .await
                .map_err(|e| e.to_string())?;
            Ok(Some((m.bytes, m.media_type)))
        }
    })
    .await;

    Ok(outcomes.into_reports(plan, |o| {
        if o.fetched_any {
            ImageStatus::Copied
        } else {
            ImageStatus::Present
        }
    }))
}

/// The source bytes of one blob, through a verifying body that reports progress.
async fn source_body(
    work: &Work<'_>,
    source: &crate::reference::Reference,
    item: &PushItem,
) -> Result<crate::registry::ChunkStream, RegistryError> {
    let (client, repository) =
        source_reader(work.job, work.registries, source).map_err(|e| RegistryError::Status {
            host: source.registry().to_string(),
            what: format!("blob `{}`", item.digest),
            status: 0,
            detail: format!("{e:#}"),
        })?;
    let stream = client.blob_stream(&repository, &item.digest).await?;
    Ok(verified_body(item.digest.clone(), item.size, stream, None).0)
}

/// Upload one blob into its first repository (a broken upload is pushed again by the
/// transport, under `--retries`).
async fn copy_blob(
    work: &Work<'_>,
    plan: &Plan,
    target: &RegistryClient,
    item: &PushItem,
) -> Result<Pushed, RegistryError> {
    let source = &plan.images[item.source_image].source;
    target
        .push_blob(&item.repository, &item.digest, item.size, None, || {
            source_body(work, source, item)
        })
        .await
}

/// Manifests of every image whose blobs all arrived: children then the top, by digest; then
/// every tag, last. `fetch(i, digest)` gives a manifest's exact bytes and media type, or
/// `None` for one the destination already holds (then its tag is left as it is).
pub(super) async fn push_manifests<F, Fut>(
    work: &Work<'_>,
    plan: &Plan,
    dest: &Destination,
    target: &RegistryClient,
    outcomes: &ImageOutcomes,
    failed: &[bool],
    fetch: F,
) where
    F: Fn(usize, Digest) -> Fut,
    Fut: std::future::Future<Output = Result<Option<(bytes::Bytes, String)>, String>>,
{
    work.reporter
        .phase("manifests", plan.images.len() as u64, 0);
    let tops: Mutex<BTreeMap<usize, (bytes::Bytes, String)>> = Mutex::new(BTreeMap::new());
    futures::stream::iter(plan.images.iter().enumerate())
        .for_each_concurrent(work.jobs, |(i, image)| {
            let fetch = &fetch;
            let tops = &tops;
            async move {
                if failed[i] {
                    work.reporter.item_done(&image.source.to_string(), false);
                    return;
                }
                let repository = dest.repository(&image.source);
                let mut ok = true;
                // Children first, the top (index or single image) last.
                for digest in image
                    .manifests
                    .iter()
                    .skip(1)
                    .chain(image.manifests.first())
                {
                    let result = match fetch(i, digest.clone()).await {
                        Ok(Some((bytes, media_type))) => target
                            .put_manifest(&repository, digest.as_str(), &media_type, bytes.clone())
                            .await
                            .map(|_| Some((bytes, media_type)))
                            .map_err(|e| e.to_string()),
                        Ok(None) => Ok(None),
                        Err(e) => Err(e),
                    };
                    match result {
                        Ok(Some(top)) if digest == &image.digest => {
                            tops.lock().expect("lock").insert(i, top);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            ok = false;
                            outcomes.fail(i, e);
                            break;
                        }
                    }
                }
                work.reporter.item_done(&image.source.to_string(), ok);
            }
        })
        .await;
    work.reporter.finish_phase();
    let tops = tops.into_inner().expect("lock");
    let tagged: Vec<_> = plan
        .images
        .iter()
        .enumerate()
        .filter_map(|(i, image)| Some((i, image, image.source.tag()?, tops.get(&i)?)))
        .collect();
    work.reporter.phase("tags", tagged.len() as u64, 0);
    futures::stream::iter(tagged)
        .for_each_concurrent(
            work.jobs,
            |(i, image, tag, (bytes, media_type))| async move {
                let repository = dest.repository(&image.source);
                let result = target
                    .put_manifest(&repository, tag, media_type, bytes.clone())
                    .await;
                if let Err(e) = &result {
                    outcomes.fail(i, e.to_string());
                }
                work.reporter
                    .item_done(&format!("{repository}:{tag}"), result.is_ok());
            },
        )
        .await;
    work.reporter.finish_phase();
}
