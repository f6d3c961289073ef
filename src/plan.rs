//! The plan: every image a run needs, resolved to digests and walked down to its manifests and
//! unique blobs. Pure data (serialisable), so `prewarm plan -o json` shows exactly what every
//! executor will do, and every executor is "plan, then execute".

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::job::{Job, Platforms, ResolveVia};
use crate::progress::Reporter;
use crate::reference::{Digest, Reference};
use crate::registry::manifest::{is_index, Manifest};
use crate::registry::{Registries, RegistryClient};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Plan {
    pub images: Vec<PlannedImage>,
    /// Unique by (repository, digest).
    pub manifests: Vec<PlannedManifest>,
    /// Unique by digest, biggest first.
    pub blobs: Vec<PlannedBlob>,
    /// Sources that could not be resolved, with the reason; the rest of the plan stands.
    pub failures: Vec<PlanFailure>,
    /// What the user must know about the selection (update-graph risks, blocked images,
    /// unsupported sections of an ImageSetConfiguration, signatures written).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The releases, channels and catalogs behind the images, for the state (refresh).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracked: Vec<crate::sources::Tracked>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedImage {
    /// The reference as the source names it (tag and/or digest).
    pub source: Reference,
    pub digest: Digest,
    pub media_type: String,
    /// Where the reference came from: a job entry, a list file and line.
    pub origin: String,
    /// The platforms kept (empty for a single-platform image whose platform was not asked).
    pub platforms: Vec<String>,
    /// The top manifest first, then each wanted child.
    pub manifests: Vec<Digest>,
    /// Config and layer blobs of every kept platform.
    pub blobs: Vec<Digest>,
    /// Sum of the sizes of this image's unique blobs.
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedManifest {
    /// `registry/repository` of the source.
    pub repository: String,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedBlob {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    /// Source repositories (`registry/repository`) whose images need this blob.
    pub repositories: BTreeSet<String>,
}

pub use crate::sources::PlanFailure;

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Summary {
    pub images: usize,
    pub manifests: usize,
    pub blobs: usize,
    pub bytes: u64,
    pub failures: usize,
}

impl Plan {
    pub fn summary(&self) -> Summary {
        Summary {
            images: self.images.len(),
            manifests: self.manifests.len(),
            blobs: self.blobs.len(),
            bytes: self.blobs.iter().map(|b| b.size).sum(),
            failures: self.failures.len(),
        }
    }
}

/// One resolved image before it is merged into the plan.
struct Walked {
    image: PlannedImage,
    manifests: Vec<PlannedManifest>,
    blobs: Vec<(Digest, u64, String)>,
}

/// Resolve every source of `job` and walk it into a [`Plan`].
pub async fn build(job: &Job, registries: &Registries, reporter: &dyn Reporter) -> Result<Plan> {
    let collected = crate::sources::collect(job, registries).await?;
    let mut plan = build_from(job, registries, collected.references, reporter).await?;
    plan.failures.extend(collected.failures);
    plan.notes.extend(collected.notes);
    plan.tracked = collected.tracked;
    Ok(plan)
}

pub async fn build_from(
    job: &Job,
    registries: &Registries,
    sources: Vec<(Reference, String)>,
    reporter: &dyn Reporter,
) -> Result<Plan> {
    reporter.phase("resolve", sources.len() as u64, 0);
    let results: Vec<(Reference, String, Result<Walked>)> = futures::stream::iter(sources)
        .map(|(source, origin)| async move {
            let walked = resolve(job, registries, &source, &origin).await;
            reporter.item_done(&source.to_string(), walked.is_ok());
            (source, origin, walked)
        })
        .buffered(job.concurrency.max(1))
        .collect()
        .await;

    let mut plan = Plan::default();
    let mut manifests = BTreeMap::new();
    let mut blobs: BTreeMap<Digest, PlannedBlob> = BTreeMap::new();
    for (source, origin, walked) in results {
        match walked {
            Ok(w) => {
                let repo = w.image.source.repo_path();
                for m in w.manifests {
                    manifests
                        .entry((m.repository.clone(), m.digest.clone()))
                        .or_insert(m);
                }
                for (digest, size, media_type) in w.blobs {
                    let entry = blobs.entry(digest.clone()).or_insert_with(|| PlannedBlob {
                        digest,
                        size,
                        media_type,
                        repositories: BTreeSet::new(),
                    });
                    entry.repositories.insert(repo.clone());
                }
                plan.images.push(w.image);
            }
            Err(e) => plan
                .failures
                .push(PlanFailure::new(source.to_string(), origin, &e)),
        }
    }
    plan.manifests = manifests.into_values().collect();
    plan.blobs = blobs.into_values().collect();
    plan.blobs
        .sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.digest.cmp(&b.digest)));
    reporter.finish_phase();
    Ok(plan)
}

/// The client and repository to read `source` from: the source registry, or the cache.
fn reader(
    job: &Job,
    registries: &Registries,
    source: &Reference,
) -> Result<(Arc<RegistryClient>, String)> {
    match job.resolve {
        ResolveVia::Source => Ok((
            registries.client(source.registry())?,
            source.repository().to_string(),
        )),
        ResolveVia::Cache => {
            let cached = job.cache()?.cache_reference(source);
            Ok((
                registries.client(cached.registry())?,
                cached.repository().to_string(),
            ))
        }
    }
}

async fn resolve(
    job: &Job,
    registries: &Registries,
    source: &Reference,
    origin: &str,
) -> Result<Walked> {
    let (client, repository) = reader(job, registries, source)?;
    // A tag is resolved by one GET of its manifest: the digest is the hash of the bytes that
    // came back, so what is walked is exactly what was resolved, in one round trip instead of
    // a HEAD and a GET by digest (at 20,000 tags that halves planning's requests).
    let top = match source.digest() {
        Some(d) => client.get_manifest(&repository, d.as_str()).await?,
        None => {
            let tag = source.tag().unwrap_or("latest");
            client.get_manifest(&repository, tag).await?
        }
    };
    let digest = top.digest.clone();
    let parsed = Manifest::parse(&top.bytes, Some(&top.media_type))
        .with_context(|| format!("manifest `{}@{}`", source.repo_path(), digest))?;
    let repo_path = source.repo_path();
    let mut walked = Walked {
        image: PlannedImage {
            source: source.clone(),
            digest: digest.clone(),
            media_type: parsed.media_type().to_string(),
            origin: origin.to_string(),
            platforms: Vec::new(),
            manifests: vec![digest.clone()],
            blobs: Vec::new(),
            bytes: 0,
        },
        manifests: vec![PlannedManifest {
            repository: repo_path.clone(),
            digest: digest.clone(),
            media_type: parsed.media_type().to_string(),
            size: top.bytes.len() as u64,
        }],
        blobs: Vec::new(),
    };
    match parsed {
        Manifest::Image { config, layers, .. } => {
            for d in std::iter::once(config).chain(layers) {
                walked.blobs.push((d.digest, d.size, d.media_type));
            }
        }
        Manifest::Index { manifests, .. } => {
            let wanted: Vec<_> = manifests
                .iter()
                .filter(|m| wants(&job.platforms, m))
                .collect();
            if wanted.is_empty() {
                let offered: Vec<String> = manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref().map(|p| p.to_string()))
                    .collect();
                bail!(
                    "`{source}`: no manifest for the wanted platforms (the index offers {})",
                    offered.join(", ")
                );
            }
            for child in wanted {
                if is_index(&child.media_type) {
                    bail!("`{source}`: nested index {} is not supported", child.digest);
                }
                let fetched = client
                    .get_manifest(&repository, child.digest.as_str())
                    .await?;
                let Manifest::Image {
                    config,
                    layers,
                    media_type,
                } = Manifest::parse(&fetched.bytes, Some(&fetched.media_type))
                    .with_context(|| format!("manifest `{repo_path}@{}`", child.digest))?
                else {
                    bail!(
                        "`{source}`: child {} is not an image manifest",
                        child.digest
                    );
                };
                if let Some(p) = &child.platform {
                    walked.image.platforms.push(p.to_string());
                }
                walked.image.manifests.push(child.digest.clone());
                walked.manifests.push(PlannedManifest {
                    repository: repo_path.clone(),
                    digest: child.digest.clone(),
                    media_type,
                    size: fetched.bytes.len() as u64,
                });
                for d in std::iter::once(config).chain(layers) {
                    walked.blobs.push((d.digest, d.size, d.media_type));
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    walked.blobs.retain(|(d, _, _)| seen.insert(d.clone()));
    walked.image.blobs = walked.blobs.iter().map(|(d, _, _)| d.clone()).collect();
    walked.image.bytes = walked.blobs.iter().map(|(_, s, _)| *s).sum();
    Ok(walked)
}

/// Attestation manifests (`unknown/unknown`) are never wanted: no node runs them.
fn wants(platforms: &Platforms, m: &crate::registry::manifest::Descriptor) -> bool {
    match &m.platform {
        Some(p) if p.os == "unknown" => false,
        Some(p) => platforms.wants(&p.os, &p.architecture, p.variant.as_deref()),
        None => matches!(platforms, Platforms::All),
    }
}
