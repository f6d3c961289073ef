//! Verify: ask the cache, by digest, for every manifest and blob of the plan (HEAD requests)
//! and report what it does not hold, per image.
//!
//! A pull-through cache that can still reach its upstream fetches what it lacks when asked,
//! so a pass means "the cluster can pull all of this now"; run it with the upstream
//! unreachable to prove the cache alone holds everything.

use anyhow::Result;
use futures::StreamExt;

use super::warm::blob_rounds;
use super::{ImageOutcomes, Work};
use crate::plan::Plan;
use crate::registry::{Presence, RegistryError};
use crate::report::{ImageReport, ImageStatus};

pub async fn verify(work: &Work<'_>, plan: &Plan) -> Result<Vec<ImageReport>> {
    let cache = work.job.cache()?;
    let client = work.registries.client(&cache.host)?;
    let outcomes = ImageOutcomes::new(plan);
    // The size each manifest must have where the cache sends no Docker-Content-Digest.
    let sizes: std::collections::HashMap<&crate::reference::Digest, u64> =
        plan.manifests.iter().map(|m| (&m.digest, m.size)).collect();

    work.reporter
        .phase("manifests", plan.images.len() as u64, 0);
    futures::stream::iter(plan.images.iter().enumerate())
        .for_each_concurrent(work.jobs, |(i, image)| {
            let client = &client;
            let (outcomes, sizes) = (&outcomes, &sizes);
            async move {
                let repo = super::cache_repository(cache, &image.source);
                for digest in &image.manifests {
                    let size = sizes.get(digest).copied();
                    match client.manifest_presence(&repo, digest, size).await {
                        Ok(Presence::Present) => {}
                        Ok(Presence::Absent) | Err(RegistryError::NotFound { .. }) => {
                            outcomes.missing(i, format!("manifest {digest}"))
                        }
                        Err(e) => outcomes.fail(i, e.to_string()),
                    }
                }
                work.reporter.item_done(&image.source.to_string(), true);
            }
        })
        .await;
    work.reporter.finish_phase();

    let items: Vec<_> = blob_rounds(work, plan)?.into_iter().flatten().collect();
    work.reporter.phase("blobs", items.len() as u64, 0);
    futures::stream::iter(items)
        .for_each_concurrent(work.jobs, |item| {
            let client = &client;
            let outcomes = &outcomes;
            async move {
                let result = client
                    .head_blob(&item.repository, &item.digest, Some(item.size))
                    .await;
                for &i in &item.images {
                    match &result {
                        Ok(Presence::Present) => {}
                        Ok(Presence::Absent) => {
                            outcomes.missing(i, format!("blob {}", item.digest))
                        }
                        Err(e) => outcomes.fail(i, e.to_string()),
                    }
                }
                work.reporter.item_done(
                    &item.digest.short(),
                    matches!(result, Ok(Presence::Present)),
                );
            }
        })
        .await;
    work.reporter.finish_phase();

    Ok(outcomes.into_reports(plan, |o| {
        if o.missing.is_empty() {
            ImageStatus::Present
        } else {
            ImageStatus::Missing
        }
    }))
}
