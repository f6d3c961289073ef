//! Import: the bundle source into the registry sink on the one scheduler, streaming
//! segments → zstd → tar → registry with nothing unpacked to disk.
//!
//! Every segment's size and sha256 is checked before anything is pushed. Blobs are started in
//! the bundle's stream order; each one's first destination repository is asked first (HEAD):
//! a blob already there is passed over (this is what makes a rerun after an interruption
//! resume without pushing finished blobs again), any other takes its bytes from the stream as
//! the body of a streamed upload, verified against its digest. An upload the link broke after
//! the stream moved on is fed again from a pass of its own over the bundle. The other
//! repositories that need a blob get cross-repository mounts; blobs the far site was said to
//! hold (its inventory) are mounted from where it holds them. As soon as an image's blobs are
//! there, its manifests (read from the bundle, digests checked) are pushed, children before
//! their index, each once per repository in a run; the tags of the images that arrived whole
//! come after every image's manifests (see [`super::manifest_push`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::bundle_source::BundleSource;
use super::copy::{first_bytes, pushed_status};
use super::destination::Destination;
use super::manifest_push::ManifestPush;
use super::remote::{done_of, RegistrySink};
use super::scheduler::{Arrangement, Chain, Done, Task};
use super::{ImageOutcomes, TransferError, Work};
use crate::bundle::segments;
use crate::bundle::BundleManifest;
use crate::plan::{Plan, PlannedBlob, PlannedImage};
use crate::reference::{Digest, Reference};
use crate::registry::RegistryClient;
use crate::report::ImageReport;

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

struct Import<'a> {
    plan: &'a Plan,
    dest: &'a Destination,
    push: ManifestPush<'a>,
    source: BundleSource,
    /// Blobs left out of the bundle: the far site's repository that holds each.
    present: BTreeMap<&'a Digest, String>,
    /// Manifests' media types, from bundle.json.
    media_types: BTreeMap<&'a Digest, &'a str>,
    work: &'a Work<'a>,
}

impl Import<'_> {
    /// The first repository of a blob inside the bundle: pass it when there, else upload it
    /// from the stream (and again from a re-read when the upload broke).
    async fn upload_from_stream(&self, task: &Task) -> Result<Done, TransferError> {
        match self
            .push
            .sink
            .has_blob(&task.repository, &task.digest, task.size)
            .await
        {
            Ok(true) => {
                self.source.skip(&task.digest);
                return Ok(Done::Present);
            }
            Ok(false) => {}
            Err(e) => {
                self.source.skip(&task.digest);
                return Err(e);
            }
        }
        let mut attempt = 0;
        loop {
            let (body, failure) = if attempt == 0 {
                self.source.take(&task.digest, task.size)
            } else {
                self.source.reread(&task.digest, task.size)
            };
            let result = self
                .push
                .sink
                .upload(&task.repository, &task.digest, task.size, body)
                .await;
            match result {
                Ok(n) => {
                    self.work.reporter.bytes(n);
                    return Ok(Done::Moved(n));
                }
                Err(e) => {
                    if let Some(why) = failure.lock().expect("failure lock").clone() {
                        return Err(TransferError::Bundle(why));
                    }
                    attempt += 1;
                    // Streams of one blob (the first pass and re-reads of the bundle), as many
                    // as `--retries` allows any request: the flag means the same here.
                    if attempt >= self.push.sink.client.policy().attempts.max(1) {
                        return Err(e.into());
                    }
                    tracing::debug!("blob {}: {e}; streaming it again", task.digest);
                }
            }
        }
    }
}

impl Arrangement for Import<'_> {
    fn stages(&self) -> (bool, bool) {
        (false, true)
    }

    async fn blob(&self, task: &Task, head: Option<&Task>) -> Result<Done, TransferError> {
        let from = match (self.present.get(&task.digest), head) {
            (Some(from), _) => from.as_str(),
            (None, Some(head)) => head.repository.as_str(),
            (None, None) => return self.upload_from_stream(task).await,
        };
        self.push
            .sink
            .push_blob(
                &task.repository,
                &task.digest,
                task.size,
                Some(from),
                || self.push.sink.body_within(from, &task.digest, task.size),
            )
            .await
            .map(done_of)
            .map_err(|e| match self.present.get(&task.digest) {
                Some(from) => TransferError::LeftOut {
                    error: Box::new(e.into()),
                    from: from.clone(),
                },
                None => e.into(),
            })
    }

    async fn after(&self, i: usize) -> Result<(), TransferError> {
        let image = &self.plan.images[i];
        let repository = self.dest.repository(&image.source);
        self.push
            .image(&repository, &image.manifests, |digest| {
                let repository = &repository;
                async move {
                    if let (Some(bytes), Some(mt)) = (
                        self.source.manifest(&digest).await,
                        self.media_types.get(&digest),
                    ) {
                        return Ok(Some((bytes, mt.to_string())));
                    }
                    // Left out because the far site holds it: it must be there.
                    match self.push.sink.has_manifest(repository, &digest).await {
                        Ok(()) => Ok(None),
                        Err(e) => Err(TransferError::LeftOutManifest {
                            digest,
                            error: Box::new(e),
                        }),
                    }
                }
            })
            .await
    }
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
    // What the bundle leaves out must be at the destination before anything is pushed.
    crate::bundle::chain::check_left_out(bundle, &plan, dest, target, work.jobs).await?;
    let outcomes = ImageOutcomes::new(&plan);
    // Stream order: the bundle's blobs as bundle.json lists them (the order they were
    // written), then those left out; each digest's repositories together.
    let place: BTreeMap<&Digest, usize> = bundle
        .blobs
        .iter()
        .map(|b| &b.digest)
        .chain(bundle.present.iter().map(|b| &b.digest))
        .enumerate()
        .map(|(n, d)| (d, n))
        .collect();
    let mut tasks = super::pair_tasks(&plan, |i| dest.repository(&plan.images[i].source));
    tasks.sort_by(|a, b| {
        place
            .get(&a.digest)
            .cmp(&place.get(&b.digest))
            .then_with(|| a.repository.cmp(&b.repository))
    });
    let present: BTreeMap<&Digest, String> = bundle
        .present
        .iter()
        .map(|p| (&p.digest, crate::bundle::chain::home(p, dest)))
        .collect();
    crate::bundle::progress::step(
        "reading the bundle and pushing its blobs",
        bundle.blobs.iter().map(|b| b.size).sum(),
    );
    let inside: BTreeSet<Digest> = bundle.blobs.iter().map(|b| b.digest.clone()).collect();
    let arrangement = Import {
        plan: &plan,
        dest,
        push: ManifestPush::new(RegistrySink { client: target }),
        source: BundleSource::open(dir, bundle, inside),
        present,
        media_types: bundle
            .manifests
            .iter()
            .map(|m| (&m.digest, m.media_type.as_str()))
            .collect(),
        work,
    };
    work.schedule(
        "import",
        first_bytes(&tasks),
        &arrangement,
        plan.images.len(),
        tasks,
        Chain::FirstThenRest,
        &outcomes,
    )
    .await;
    arrangement
        .source
        .finish()
        .await
        .with_context(|| format!("bundle {}", dir.display()))?;
    let push = &arrangement.push;
    push.tags(&plan, dest, &outcomes, work.jobs).await;
    Ok(outcomes.into_reports(&plan, pushed_status))
}
