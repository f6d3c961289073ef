//! Warm: pull everything in the plan *through* the cache so the cache holds it — the
//! pull-through cache as a sink on the one [`scheduler`](super::scheduler).
//!
//! Per image, before its blobs: its manifests (by tag, so the cache records the tag, then by
//! digest unless the tag's answer already hashed to it, then each wanted child). Then every
//! (cache repository, blob) pair, biggest first, `--jobs` at once, each read fully,
//! sha256-verified and discarded. One digest is never in
//! flight through two repositories at once (a chain, one at a time): a distribution proxy
//! serves a blob asked for through a second repository while it still stores it through the
//! first without keeping it, and the upstream is spared fetching one blob twice at once.
//!
//! What an earlier run warmed (the state) is confirmed with a HEAD instead of moving its bytes
//! again. Such an image is reported `cached` — "warmed by an earlier run and confirmed by the
//! cache" — and never more: a real Quay answers a HEAD for a blob it lacks by fetching it from
//! upstream first, so the HEAD's success does not prove the cache held it before this run.

use std::time::Duration;

use anyhow::Result;

use super::remote::{CacheSink, Presence};
use super::scheduler::{Arrangement, Chain, Done, Task};
use super::{cache_repository, ImageOutcomes, TransferError, Work};
use crate::job::CacheConfig;
use crate::plan::Plan;
use crate::report::{ImageReport, ImageStatus};

/// How long a digest rests between its pairs (see the module doc).
const CHAIN_PAUSE: Duration = Duration::from_millis(300);

struct Warm<'a> {
    work: &'a Work<'a>,
    plan: &'a Plan,
    cache: &'a CacheConfig,
    sink: CacheSink<'a>,
    outcomes: &'a ImageOutcomes,
}

impl Arrangement for Warm<'_> {
    fn stages(&self) -> (bool, bool) {
        (true, false)
    }

    async fn before(&self, i: usize) -> Result<(), TransferError> {
        let image = &self.plan.images[i];
        let target = self.cache.cache_reference(&image.source);
        let repo = target.repository();
        let mut errors = Vec::new();
        // The tag's answer hashing to the image's digest is its top manifest through the
        // cache: asking again by digest would be one more round trip per image for bytes
        // already proven (a fifth of warm's requests at 20,000 small images).
        let mut top_through_tag = false;
        if let Some(tag) = image.source.tag() {
            match self.sink.manifest(repo, tag).await {
                Ok(d) if d == image.digest => top_through_tag = true,
                Ok(d) => self.outcomes.warn(
                    i,
                    format!(
                        "tag `{tag}` now resolves to {d} through the cache (the plan has {})",
                        image.digest
                    ),
                ),
                Err(e) => errors.push(e),
            }
        }
        let wanted = image.manifests.iter();
        for digest in wanted.filter(|d| !(top_through_tag && **d == image.digest)) {
            if let Err(e) = self.sink.manifest(repo, digest.as_str()).await {
                errors.push(e);
            }
        }
        for e in errors {
            self.outcomes.fail(i, e);
        }
        Ok(())
    }

    async fn blob(&self, task: &Task, _head: Option<&Task>) -> Result<Done, TransferError> {
        let host = self.cache.host.as_str();
        if let Some(state) = self.work.state {
            if state
                .is_warm(host, &task.repository, &task.digest)
                .unwrap_or(false)
            {
                match self
                    .sink
                    .blob_presence(&task.repository, &task.digest, task.size)
                    .await?
                {
                    Presence::Present => return Ok(Done::Confirmed),
                    Presence::Absent => {
                        let _ = state.forget_warm(host, &task.repository, &task.digest);
                    }
                }
            }
        }
        let reporter = self.work.reporter;
        let n = self
            .sink
            .read_through(&task.repository, &task.digest, &|n| reporter.bytes(n))
            .await?;
        if let Some(state) = self.work.state {
            if let Err(e) = state.record_warm(host, &task.repository, &task.digest, n) {
                tracing::warn!("cannot record {} in the state: {e:#}", task.digest);
            }
        }
        Ok(Done::Moved(n))
    }
}

pub async fn warm(work: &Work<'_>, plan: &Plan) -> Result<Vec<ImageReport>> {
    let cache = work.job.cache()?;
    let client = work.registries.client(&cache.host)?;
    let outcomes = ImageOutcomes::new(plan);
    let tasks = cache_tasks(cache, plan);
    let total: u64 = tasks.iter().map(|t| t.size).sum();
    let arrangement = Warm {
        work,
        plan,
        cache,
        sink: CacheSink { client: &client },
        outcomes: &outcomes,
    };
    work.schedule(
        "warm",
        total,
        &arrangement,
        plan.images.len(),
        tasks,
        Chain::OneAtATime { pause: CHAIN_PAUSE },
        &outcomes,
    )
    .await;
    Ok(outcomes.into_reports(plan, |o| {
        if o.fetched_any {
            ImageStatus::Warmed
        } else {
            ImageStatus::Cached
        }
    }))
}

/// Every (cache repository, blob) pair of the plan with the images needing it, biggest first.
pub(super) fn cache_tasks(cache: &CacheConfig, plan: &Plan) -> Vec<Task> {
    let repositories: Vec<String> = plan
        .images
        .iter()
        .map(|image| cache_repository(cache, &image.source))
        .collect();
    super::pair_tasks(plan, |i| repositories[i].clone())
}
