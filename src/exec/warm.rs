//! Warm: pull everything in the plan *through* the cache so the cache holds it.
//!
//! Manifests first (each image by tag, so the cache records the tag, then by digest, then each
//! wanted child by digest), then one scheduler for every (cache repository, blob) pair of the
//! whole plan: biggest first, `--jobs` at once, each pair once per run, every body read fully
//! and sha256-verified, then discarded. A pair an earlier run verified (state) is confirmed
//! with a HEAD instead of moving its bytes again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;

use super::{cache_repository, ImageOutcomes, Work};
use crate::plan::Plan;
use crate::reference::Digest;
use crate::registry::{Discard, Presence};
use crate::report::{ImageReport, ImageStatus};

/// How long a digest rests between its pairs (see `blob_rounds`).
const ROUND_PAUSE: Duration = Duration::from_millis(300);

/// Hold the `round`-th pair of `digest` until the previous ones finished and the cache had
/// a moment to keep them: a blob asked for through a second repository while the cache is
/// still storing it through the first is served without being kept (distribution's proxy
/// does that). Other digests keep every transfer slot busy meanwhile.
async fn wait_turn(
    finished: &Mutex<HashMap<Digest, (usize, Instant)>>,
    digest: &Digest,
    round: usize,
) {
    if round == 0 {
        return;
    }
    loop {
        let last = finished.lock().expect("finished lock").get(digest).copied();
        match last {
            Some((done, at)) if done >= round => {
                tokio::time::sleep(ROUND_PAUSE.saturating_sub(at.elapsed())).await;
                return;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

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
    work.reporter
        .phase("manifests", plan.images.len() as u64, 0);
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
    let rounds = blob_rounds(work, plan)?;
    let total: u64 = rounds.iter().flatten().map(|i| i.size).sum();
    let count = rounds.iter().map(Vec::len).sum::<usize>();
    work.reporter.phase("blobs", count as u64, total);
    let cache_host = cache.host.as_str();
    // Blob items left per image: an image is warm when its last one finishes.
    let left: Vec<std::sync::atomic::AtomicUsize> = (0..plan.images.len())
        .map(|_| std::sync::atomic::AtomicUsize::new(0))
        .collect();
    for item in rounds.iter().flatten() {
        for &i in &item.images {
            left[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    work.reporter.images(plan.images.len() as u64);
    for (i, n) in left.iter().enumerate() {
        if n.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            work.reporter.image_done(!outcomes.has_failed(i));
        }
    }
    let left = &left;
    let finished: Mutex<HashMap<Digest, (usize, Instant)>> = Mutex::new(HashMap::new());
    let queue = rounds
        .into_iter()
        .enumerate()
        .flat_map(|(n, round)| round.into_iter().map(move |item| (n, item)));
    futures::stream::iter(queue)
        .for_each_concurrent(work.jobs, |(round, item)| {
            let client = &client;
            let outcomes = &outcomes;
            let finished = &finished;
            async move {
                wait_turn(finished, &item.digest, round).await;
                let result = warm_blob(
                    work,
                    client,
                    cache_host,
                    &item.repository,
                    &item.digest,
                    item.size,
                )
                .await;
                {
                    let mut f = finished.lock().expect("finished lock");
                    let entry = f.entry(item.digest.clone()).or_insert((0, Instant::now()));
                    *entry = (entry.0 + 1, Instant::now());
                }
                let ok = !matches!(result, BlobResult::Failed(_));
                for &i in &item.images {
                    match &result {
                        BlobResult::Fetched(n) => outcomes.fetched(i, *n),
                        BlobResult::AlreadyCached => {}
                        BlobResult::Failed(e) => outcomes.fail(i, e.clone()),
                    }
                }
                work.reporter.item_done(&item.digest.short(), ok);
                for &i in &item.images {
                    if left[i].fetch_sub(1, std::sync::atomic::Ordering::Relaxed) == 1 {
                        work.reporter.image_done(!outcomes.has_failed(i));
                    }
                }
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
    size: u64,
) -> BlobResult {
    if let Some(state) = work.state {
        if state
            .is_warm(cache_host, repository, digest)
            .unwrap_or(false)
        {
            match client.head_blob(repository, digest, Some(size)).await {
                Ok(Presence::Present) => return BlobResult::AlreadyCached,
                Ok(Presence::Absent) => {
                    let _ = state.forget_warm(cache_host, repository, digest);
                }
                Err(e) => return BlobResult::Failed(e.to_string()),
            }
        }
    }
    let reporter = work.reporter;
    match client
        .fetch_blob(repository, digest, &mut Discard, &|n| reporter.bytes(n))
        .await
    {
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

/// Every (cache repository, blob) pair of the plan with the images needing it, in rounds:
/// round N holds each digest's N-th repository, so within a round every digest is distinct,
/// and each round is biggest first.
pub(super) fn blob_rounds(work: &Work<'_>, plan: &Plan) -> Result<Vec<Vec<BlobItem>>> {
    let cache = work.job.cache()?;
    let sizes: BTreeMap<&Digest, u64> = plan.blobs.iter().map(|b| (&b.digest, b.size)).collect();
    let mut items: BTreeMap<(String, Digest), BlobItem> = BTreeMap::new();
    for (i, image) in plan.images.iter().enumerate() {
        let repository = cache_repository(cache, &image.source);
        for digest in &image.blobs {
            let item = items
                .entry((repository.clone(), digest.clone()))
                .or_insert_with(|| BlobItem {
                    repository: repository.clone(),
                    digest: digest.clone(),
                    size: sizes.get(digest).copied().unwrap_or(0),
                    images: Vec::new(),
                });
            item.images.push(i);
        }
    }
    // One digest is never in flight through two repositories at once: a cache may serve the
    // second straight from upstream without keeping it, and the upstream is spared fetching
    // one blob twice at the same time.
    let mut rounds: Vec<Vec<BlobItem>> = Vec::new();
    let mut seen: BTreeMap<Digest, usize> = BTreeMap::new();
    for item in items.into_values() {
        let n = seen.entry(item.digest.clone()).or_default();
        if rounds.len() <= *n {
            rounds.push(Vec::new());
        }
        rounds[*n].push(item);
        *n += 1;
    }
    for round in &mut rounds {
        round.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.digest.cmp(&b.digest)));
    }
    Ok(rounds)
}
