//! Copy: push every plan image into a destination registry's repositories, digests unchanged
//! — the registry source and the registry sink on the one scheduler.
//!
//! Each digest is uploaded once, into the first destination repository that needs it
//! (streamed from the source through a verifying, Range-resumed body, never whole in memory),
//! then cross-repository mounted into the others; a blob a destination repository already
//! holds is skipped. As soon as an image's blobs are all there, its manifests are pushed byte
//! for byte, children before their index, by digest, each once per repository in a run; the
//! tags of the images that arrived whole come after every image's manifests (see
//! [`super::manifest_push`]), so a tag never points at something incomplete.

use anyhow::Result;

use super::destination::Destination;
use super::manifest_push::ManifestPush;
use super::remote::{done_of, RegistrySink, RegistrySource};
use super::scheduler::{Arrangement, Chain, Done, Task};
use super::{ImageOutcomes, TransferError, Work};
use crate::plan::Plan;
use crate::registry::RegistryClient;
use crate::report::{ImageReport, ImageStatus};

struct Copy<'a> {
    work: &'a Work<'a>,
    plan: &'a Plan,
    dest: &'a Destination,
    source: RegistrySource<'a>,
    push: ManifestPush<'a>,
}

impl Arrangement for Copy<'_> {
    fn stages(&self) -> (bool, bool) {
        (false, true)
    }

    async fn blob(&self, task: &Task, head: Option<&Task>) -> Result<Done, TransferError> {
        let image = &self.plan.images[task.images[0]].source;
        // One push: the transport retries it under --retries (a new upload session with a
        // freshly read body each time), so the flag means the same here as everywhere.
        let pushed = self
            .push
            .sink
            .push_blob(
                &task.repository,
                &task.digest,
                task.size,
                head.map(|h| h.repository.as_str()),
                || async { self.source.body(image, &task.digest, task.size) },
            )
            .await?;
        let done = done_of(pushed);
        if let Done::Moved(n) = done {
            self.work.reporter.bytes(n);
        }
        Ok(done)
    }

    async fn after(&self, i: usize) -> Result<(), TransferError> {
        let image = &self.plan.images[i];
        self.push
            .image(
                &self.dest.repository(&image.source),
                &image.manifests,
                |digest| async move {
                    let m = self.source.manifest(&image.source, &digest).await?;
                    Ok(Some((m.bytes, m.media_type)))
                },
            )
            .await
    }
}

pub async fn copy(
    work: &Work<'_>,
    plan: &Plan,
    dest: &Destination,
    target: &RegistryClient,
) -> Result<Vec<ImageReport>> {
    let arrangement = Copy {
        work,
        plan,
        dest,
        source: RegistrySource {
            job: work.job,
            registries: work.registries,
        },
        push: ManifestPush::new(RegistrySink { client: target }),
    };
    let outcomes = push_plan(work, "copy", plan, dest, &arrangement).await;
    let push = &arrangement.push;
    push.tags(plan, dest, &outcomes, work.jobs).await;
    Ok(outcomes.into_reports(plan, pushed_status))
}

/// Run an arrangement that pushes `plan` into `dest`: one task per (destination repository,
/// blob), biggest first, each digest uploaded once and then mounted; the images' outcomes.
pub(super) async fn push_plan<A: Arrangement>(
    work: &Work<'_>,
    phase: &str,
    plan: &Plan,
    dest: &Destination,
    arrangement: &A,
) -> ImageOutcomes {
    let outcomes = ImageOutcomes::new(plan);
    let tasks = super::pair_tasks(plan, |i| dest.repository(&plan.images[i].source));
    work.schedule(
        phase,
        first_bytes(&tasks),
        arrangement,
        plan.images.len(),
        tasks,
        Chain::FirstThenRest,
        &outcomes,
    )
    .await;
    outcomes
}

/// `copied` when anything was pushed for the image, else `present`.
pub(super) fn pushed_status(o: &super::Outcome) -> ImageStatus {
    if o.fetched_any {
        ImageStatus::Copied
    } else {
        ImageStatus::Present
    }
}

/// The bytes a chain-ordered set of registry tasks may upload: each digest once (the rest
/// are mounts).
pub(super) fn first_bytes(tasks: &[Task]) -> u64 {
    let mut seen = std::collections::BTreeSet::new();
    tasks
        .iter()
        .filter(|t| seen.insert(&t.digest))
        .map(|t| t.size)
        .sum()
}
