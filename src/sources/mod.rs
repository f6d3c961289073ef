//! OpenShift content sources beyond plain image lists: release payloads, update-graph
//! channels, operator catalogs (file-based catalogs), oc-mirror ImageSetConfigurations and
//! release signatures.
//!
//! Each source turns into `(Reference, origin)` pairs that the plan builder walks
//! like any listed image; the origin says where the image came from (release version and
//! component, catalog/package/bundle) so `prewarm plan` can show it. [`collect`] is the one
//! entry point the plan builder calls.

pub mod catalog;
pub mod fbc;
pub mod graph;
pub mod isc;
pub mod layers;
pub mod release;
pub mod signatures;
pub mod version;

use std::collections::{BTreeMap, HashSet};

use anyhow::Result;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::job::Job;
use crate::reference::{Digest, Reference};
use crate::registry::{Registries, RegistryError};

/// A reference that could not be read or resolved; the rest of the plan goes on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanFailure {
    pub reference: String,
    pub origin: String,
    pub error: String,
    /// Failed because a registry's rate budget ran out (the budget's message): refresh
    /// leaves it for its next run. Not in a saved plan.
    #[serde(skip)]
    pub budget_spent: Option<String>,
}

impl PlanFailure {
    /// `reference` (from `origin`) could not be resolved: `error`, kept as one line, and
    /// whether a spent rate budget is why.
    pub fn new(reference: String, origin: String, error: &anyhow::Error) -> PlanFailure {
        PlanFailure {
            reference,
            origin,
            error: format!("{error:#}"),
            budget_spent: RegistryError::budget_spent_in(error).map(|e| e.to_string()),
        }
    }
}

pub use crate::specs::{
    ChannelSpec, GraphConfig, GraphImageConfig, OperatorSpec, PackageChannelSpec, PackageSpec,
    SignatureConfig,
};

/// What a tracked source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackedKind {
    Release,
    Channel,
    Catalog,
}

/// A source a refresh re-checks as a whole — a release payload, an update-graph channel (per
/// architecture), an operator catalog — with what it resolved to and selected when planned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tracked {
    pub kind: TrackedKind,
    /// The state's name for it: `release <ref>`, `channel <name> <arch>`, `catalog <ref>`.
    pub key: String,
    /// What its tag resolved to (a release or catalog image); none for a channel.
    pub digest: Option<Digest>,
    /// A catalog: package → its newest kept bundle. A channel: version → payload.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selection: BTreeMap<String, String>,
    /// Every image it contributes (after `blocked_images`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Reference>,
}

impl Tracked {
    pub fn release_key(r: &Reference) -> String {
        format!("release {r}")
    }
    pub fn catalog_key(r: &Reference) -> String {
        format!("catalog {r}")
    }
    pub fn channel_key(name: &str, arch: &str) -> String {
        format!("channel {name} {arch}")
    }
}

/// What the sources contributed to a plan.
#[derive(Debug, Default)]
pub struct Collected {
    pub references: Vec<(Reference, String)>,
    /// The releases, channels and catalogs behind them, for the state.
    pub tracked: Vec<Tracked>,
    /// Sources that could not be read; the plan reports them beside unresolved images.
    pub failures: Vec<PlanFailure>,
    /// Things the user must see: conditional-edge risks, unsupported ISC sections, blocked
    /// images left out.
    pub notes: Vec<String>,
}

impl Collected {
    /// Add `reference` unless it is already there (blocked images are removed at the end).
    fn push(&mut self, seen: &mut HashSet<String>, reference: Reference, origin: String) {
        if seen.insert(reference.to_string()) {
            self.references.push((reference, origin));
        }
    }
}

/// The job's `releases` (and an ISC's `release`), with where each is written.
pub fn named_releases(job: &Job) -> Result<Vec<(Reference, String)>> {
    let file = job.path.display().to_string();
    job.releases
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let r: Reference = s
                .parse()
                .map_err(|e| anyhow::anyhow!("{file}: releases[{i}]: {e}"))?;
            Ok((r, format!("{file}: releases[{i}]")))
        })
        .collect()
}

/// Every reference of the job: its images and image lists, then releases (named and from
/// channels, each with its components), then operator catalogs; blocked images removed.
pub async fn collect(job: &Job, registries: &Registries) -> Result<Collected> {
    let mut out = Collected {
        notes: job.notes.clone(),
        ..Collected::default()
    };
    let mut seen = HashSet::new();
    for (r, origin) in job.references()? {
        out.push(&mut seen, r, origin);
    }
    let file = job.path.display().to_string();
    if let Some(g) = job.graph.as_ref().and_then(|g| g.image.as_ref()) {
        let base: Reference = g
            .base
            .parse()
            .map_err(|e| anyhow::anyhow!("{file}: graph.image.base: {e}"))?;
        out.push(&mut seen, base, format!("{file}: graph.image.base"));
    }
    let mut releases = named_releases(job)?;
    if !job.channels.is_empty() {
        let selected = graph::select_for_job(job).await?;
        out.notes.extend(selected.notes);
        releases.extend(selected.releases);
        out.tracked.extend(selected.channels);
    }
    let mut release_digests = Vec::new();
    // A few at once: a channel can select a dozen releases, each a layer read away.
    let read: Vec<_> = futures::stream::iter(&releases)
        .map(|(r, _)| release::read(job, registries, r))
        .buffered(4)
        .collect()
        .await;
    for ((r, origin), result) in releases.iter().zip(read) {
        match result {
            Ok(payload) => {
                release_digests.push((r.clone(), payload.digest.clone()));
                let refs = payload.references(origin);
                out.tracked.push(Tracked {
                    kind: TrackedKind::Release,
                    key: Tracked::release_key(r),
                    digest: Some(payload.digest.clone()),
                    selection: BTreeMap::new(),
                    images: refs.iter().map(|(r, _)| r.clone()).collect(),
                });
                for (reference, o) in refs {
                    out.push(&mut seen, reference, o);
                }
            }
            Err(e) => out
                .failures
                .push(PlanFailure::new(r.to_string(), origin.clone(), &e)),
        }
    }
    for (i, op) in job.operators.iter().enumerate() {
        let origin = op
            .origin
            .clone()
            .unwrap_or_else(|| format!("{}: operators[{i}]", job.path.display()));
        match catalog::select(job, registries, op, &origin).await {
            Ok(selected) => {
                let source: Reference = op.catalog.parse()?;
                out.tracked.push(selected.tracked(&source));
                out.notes.extend(selected.notes);
                for (reference, o) in selected.references {
                    out.push(&mut seen, reference, o);
                }
            }
            Err(e) => out
                .failures
                .push(PlanFailure::new(op.catalog.clone(), origin, &e)),
        }
    }
    if !release_digests.is_empty() {
        let cosign = signatures::cosign_tags(job, registries, &release_digests).await;
        for (reference, o) in cosign {
            out.push(&mut seen, reference, o);
        }
        if let Some(cfg) = &job.signatures {
            let written = signatures::fetch_all(job, cfg, &release_digests).await?;
            out.notes.extend(written);
        }
    }
    blocked::apply(job, &mut out)?;
    let kept: HashSet<&Reference> = out.references.iter().map(|(r, _)| r).collect();
    for t in &mut out.tracked {
        t.images.retain(|r| kept.contains(r));
    }
    Ok(out)
}

pub(crate) mod blocked {
    //! `blocked_images`: references (or repositories, without tag/digest) never planned.
    use super::*;

    pub fn apply(job: &Job, out: &mut Collected) -> Result<()> {
        if job.blocked_images.is_empty() {
            return Ok(());
        }
        let file = job.path.display().to_string();
        let blocked: Vec<(Reference, bool)> = job
            .blocked_images
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let r: Reference = s
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{file}: blocked_images[{i}]: {e}"))?;
                // No tag and no digest written: the whole repository is blocked.
                let last = s.rsplit('/').next().unwrap_or(s);
                Ok((r, !s.contains('@') && !last.contains(':')))
            })
            .collect::<Result<_>>()?;
        let before = out.references.len();
        out.references.retain(|(r, origin)| {
            let hit = blocked.iter().find(|(b, whole)| matches(b, *whole, r));
            if let Some((b, _)) = hit {
                out.notes
                    .push(format!("blocked: {r} (from {origin}) is left out by {b}"));
            }
            hit.is_none()
        });
        tracing::info!(
            "blocked_images removed {} references",
            before - out.references.len()
        );
        Ok(())
    }

    /// A blocked entry without tag or digest blocks the whole repository.
    fn matches(blocked: &Reference, whole_repo: bool, r: &Reference) -> bool {
        if blocked.repo_path() != r.repo_path() {
            return false;
        }
        whole_repo
            || blocked.digest().is_some_and(|d| r.digest() == Some(d))
            || (blocked.digest().is_none() && blocked.tag().is_some() && blocked.tag() == r.tag())
    }
}
