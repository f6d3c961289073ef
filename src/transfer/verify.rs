//! Verify: ask the cache, by digest, for every manifest and blob of the plan (HEAD requests)
//! and report what it does not hold, per image — the presence-only sink on the one scheduler.
//!
//! A pull-through cache that can still reach its upstream fetches what it lacks when asked,
//! so a pass means "the cluster can pull all of this now"; run it with the upstream
//! unreachable to prove the cache alone holds everything.

use anyhow::Result;

use super::remote::{CacheSink, Presence};
use super::scheduler::{Arrangement, Chain, Done, Task};
use super::{ImageOutcomes, TransferError, Work};
use crate::job::CacheConfig;
use crate::plan::Plan;
use crate::report::{ImageReport, ImageStatus};

struct Verify<'a> {
    plan: &'a Plan,
    cache: &'a CacheConfig,
    sink: CacheSink<'a>,
    outcomes: &'a ImageOutcomes,
    /// Each manifest's planned size.
    sizes: std::collections::HashMap<&'a crate::reference::Digest, u64>,
}

impl Arrangement for Verify<'_> {
    fn stages(&self) -> (bool, bool) {
        (true, false)
    }

    async fn before(&self, i: usize) -> Result<(), TransferError> {
        let image = &self.plan.images[i];
        let repo = super::cache_repository(self.cache, &image.source);
        for digest in &image.manifests {
            // The size proves presence where the cache sends no Docker-Content-Digest.
            let size = self.sizes.get(digest).copied();
            match self.sink.manifest_presence(&repo, digest, size).await {
                Ok(Presence::Present) => {}
                Ok(Presence::Absent) => self.outcomes.missing(i, format!("manifest {digest}")),
                Err(e) => self.outcomes.fail(i, e),
            }
        }
        Ok(())
    }

    async fn blob(&self, task: &Task, _head: Option<&Task>) -> Result<Done, TransferError> {
        match self
            .sink
            .blob_presence(&task.repository, &task.digest, task.size)
            .await?
        {
            Presence::Present => Ok(Done::Present),
            Presence::Absent => Ok(Done::Missing),
        }
    }
}

pub async fn verify(work: &Work<'_>, plan: &Plan) -> Result<Vec<ImageReport>> {
    let cache = work.job.cache()?;
    let client = work.registries.client(&cache.host)?;
    let outcomes = ImageOutcomes::new(plan);
    let tasks = super::warm::cache_tasks(cache, plan);
    let arrangement = Verify {
        sizes: plan.manifests.iter().map(|m| (&m.digest, m.size)).collect(),
        plan,
        cache,
        sink: CacheSink { client: &client },
        outcomes: &outcomes,
    };
    work.schedule(
        "verify",
        0,
        &arrangement,
        plan.images.len(),
        tasks,
        Chain::Independent,
        &outcomes,
    )
    .await;
    Ok(outcomes.into_reports(plan, |o| {
        if o.missing.is_empty() {
            ImageStatus::Present
        } else {
            ImageStatus::Missing
        }
    }))
}
