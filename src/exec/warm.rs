//! Warm: pull everything in the plan *through* the cache so the cache holds it.
//!
//! Manifests first (each image by tag, so the cache records the tag, then by digest, then each
//! wanted child by digest), then one scheduler for every (cache repository, blob) pair of the
//! whole plan: biggest first, `--jobs` at once, each pair once per run, every body read fully
//! and sha256-verified, then discarded. A pair an earlier run verified (state) is confirmed
//! with a HEAD instead of moving its bytes again.

use std::collections::BTreeMap;

use anyhow::Result;
use futures::StreamExt;

use super::{cache_repository, ImageOutcomes, Work};
use crate::plan::Plan;
use crate::reference::Digest;
use crate::registry::Discard;
use crate::report::{ImageReport, ImageStatus};

enum BlobResult {
    Fetched(u64),
    AlreadyCached,
    Failed(String),
}

pub async fn warm(work: &Work<'_>, plan: &Plan) -> Result<Vec<ImageReport>> {
    let cache = work.job.cache()?;
    let client = work.registries.client(&cache.host)?;
    let outcomes = ImageOutcomes::new(plan);

    // Manifests: per image in order, images in parallel.
    work.reporter.phase("manifests", plan.images.len() as u64, 0);
    futures::stream::iter(plan.images.iter().enumerate())
        .for_each_concurrent(work.jobs, |(i, image)| {
            let client = &client;
            let outcomes = &outcomes;
            async move {
                let target = cache.cache_reference(&image.source);
                let repo = target.repository();
                let mut ok = true;
                if let Some(tag) = image.source.tag() {
                    match client.get_manifest(repo, tag).await {
                        Ok(m) if m.digest != image.digest => outcomes.warn(
                            i,
                            format!("tag `{tag}` now resolves to {} through the cache (the plan has {})", m.digest, image.digest),
                        ),
                        Ok(_) => {}
                        Err(e) => {
                            ok = false;
                            outcomes.fail(i, format!("{e}"));
                        }
                    }
                }
                for digest in &image.manifests {
                    if let Err(e) = client.get_manifest(repo, digest.as_str()).await {
                        ok = false;
                        outcomes.fail(i, format!("{e}"));
                    }
                }
                work.reporter.item_done(&image.source.to_string(), ok);
            }
        })
        .await;
    work.reporter.finish_phase();

    // Blobs: every (cache repository, blob) pair once, biggest first.
    let items = blob_items(work, plan)?;
    let total: u64 = items.iter().map(|i| i.size).sum();
    work.reporter.phase("blobs", items.len() as u64, total);
    let cache_host = cache.host.as_str();
    futures::stream::iter(items)
        .for_each_concurrent(work.jobs, |item| {
            let client = &client;
            let outcomes = &outcomes;
            async move {
                let result = warm_blob(work, client, cache_host, &item.repository, &item.digest).await;
                let ok = !matches!(result, BlobResult::Failed(_));
                for &i in &item.images {
                    match &result {
                        BlobResult::Fetched(n) => outcomes.fetched(i, *n),
                        BlobResult::AlreadyCached => {}
                        BlobResult::Failed(e) => outcomes.fail(i, e.clone()),
                    }
                }
                work.reporter.item_done(&item.digest.short(), ok);
            }
        })
        .await;
    work.reporter.finish_phase();

    Ok(outcomes.into_reports(plan, |o| {
        if o.fetched_any {
            ImageStatus::Warmed
        } else {
            ImageStatus::Cached
        }
    }))
}

async fn warm_blob(
    work: &Work<'_>,
    client: &crate::registry::RegistryClient,
    cache_host: &str,
    repository: &str,
    digest: &Digest,
) -> BlobResult {
    if let Some(state) = work.state {
        if state.is_warm(cache_host, repository, digest).unwrap_or(false) {
            match client.head_blob(repository, digest).await {
                Ok(Some(_)) => return BlobResult::AlreadyCached,
                Ok(None) => {
                    let _ = state.forget_warm(cache_host, repository, digest);
                }
                Err(e) => return BlobResult::Failed(e.to_string()),
            }
        }
    }
    let reporter = work.reporter;
    match client.fetch_blob(repository, digest, &mut Discard, &|n| reporter.bytes(n)).await {
        Ok(n) => {
            if let Some(state) = work.state {
                if let Err(e) = state.record_warm(cache_host, repository, digest, n) {
                    tracing::warn!("cannot record {digest} in the state: {e:#}");
                }
            }
            BlobResult::Fetched(n)
        }
        Err(e) => BlobResult::Failed(e.to_string()),
    }
}

pub(super) struct BlobItem {
    /// The repository on the cache (`cache_quay_io/a/b`).
    pub repository: String,
    pub digest: Digest,
    pub size: u64,
    /// Indexes into `plan.images` of the images that need it.
    pub images: Vec<usize>,
}

/// Every (cache repository, blob) pair of the plan with the images needing it, biggest first.
pub(super) fn blob_items(work: &Work<'_>, plan: &Plan) -> Result<Vec<BlobItem>> {
    let cache = work.job.cache()?;
    let sizes: BTreeMap<&Digest, u64> = plan.blobs.iter().map(|b| (&b.digest, b.size)).collect();
    let mut items: BTreeMap<(String, Digest), BlobItem> = BTreeMap::new();
    for (i, image) in plan.images.iter().enumerate() {
        let repository = cache_repository(cache, &image.source);
        for digest in &image.blobs {
            let item = items.entry((repository.clone(), digest.clone())).or_insert_with(|| BlobItem {
                repository: repository.clone(),
                digest: digest.clone(),
                size: sizes.get(digest).copied().unwrap_or(0),
                images: Vec::new(),
            });
            item.images.push(i);
        }
    }
    let mut items: Vec<BlobItem> = items.into_values().collect();
    items.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.digest.cmp(&b.digest)));
    Ok(items)
}
