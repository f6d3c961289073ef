//! An inventory: the digests a registry already holds, per repository, written by
//! `prewarm inventory` at the far site and read by `export --have` so a bundle carries only
//! what is missing.
//!
//! For a plan (a job's, or a bundle's own image list) [`Inventory::of_plan`] asks the registry
//! for every planned manifest and blob by digest, in the repository the image lands in: a
//! repository of images pushed by digest only (release components) has no tag to list, so
//! `tags/list` and `_catalog` cannot see it. A HEAD counts only with proof: the manifest's
//! `Docker-Content-Digest` equal to the digest asked (or its bytes hashing to it), the blob's
//! size equal to the planned size. [`Inventory::from_shipped`] is the same shape built from the
//! state's record of what earlier bundles carried to a site (`export --since-last`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::PresentBlob;
use crate::destination::Destination;
use crate::plan::Plan;
use crate::reference::Digest;
use crate::registry::manifest::Manifest;
use crate::registry::{Presence, RegistryClient, RegistryError};
use crate::state::{ShippedItem, ShippedKind};

pub const FORMAT: &str = "prewarm-inventory/1";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    pub format: String,
    pub registry: String,
    pub created_at: i64,
    pub repositories: BTreeMap<String, RepositoryInventory>,
    /// Per planned image (by source reference): where it lands and whether the registry
    /// holds all of it (every manifest and blob, proven by digest).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, ImageHeld>,
    /// The repositories are source repositories (`host/path`), not the far registry's: an
    /// inventory made from the state's shipped records, never written to a file.
    #[serde(skip)]
    pub by_source: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageHeld {
    pub repository: String,
    pub digest: Digest,
    pub whole: bool,
}

/// One question to the registry.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Ask {
    Manifest(Digest),
    Blob(Digest, u64),
    Tag(String),
}

/// What the registry proved it holds.
pub(crate) enum Held {
    Manifest(Digest),
    Blob(Digest, u64),
    Tag(String, Digest),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryInventory {
    pub tags: BTreeMap<String, Digest>,
    pub manifests: BTreeSet<Digest>,
    /// Config and layer blobs with their sizes, as the manifests state them.
    pub blobs: BTreeMap<Digest, u64>,
}

impl Inventory {
    pub fn load(path: &Path) -> Result<Inventory> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read inventory {}", path.display()))?;
        let de = &mut serde_json::Deserializer::from_str(&text);
        let inv: Inventory = serde_path_to_error::deserialize(de)
            .map_err(|e| anyhow::anyhow!("{}: {}: {}", path.display(), e.path(), e.inner()))?;
        if inv.format != FORMAT {
            anyhow::bail!(
                "{}: format: `{}` is not `{FORMAT}`",
                path.display(),
                inv.format
            );
        }
        Ok(inv)
    }

    /// A repository holding blob `digest`, if any.
    pub fn blob_home(&self, digest: &Digest) -> Option<(&str, u64)> {
        self.repositories
            .iter()
            .find_map(|(r, inv)| inv.blobs.get(digest).map(|s| (r.as_str(), *s)))
    }

    pub fn has_manifest(&self, digest: &Digest) -> bool {
        self.repositories
            .values()
            .any(|r| r.manifests.contains(digest))
    }

    /// Blob `digest` as a bundle leaves it out, if this inventory says the site holds it:
    /// with the far repository holding it, or (from shipped records) its source repository.
    pub fn present_blob(&self, digest: &Digest, size: u64) -> Option<PresentBlob> {
        let (repository, _) = self.blob_home(digest)?;
        Some(if self.by_source {
            PresentBlob {
                digest: digest.clone(),
                size,
                repository: String::new(),
                source: Some(repository.to_string()),
            }
        } else {
            PresentBlob {
                digest: digest.clone(),
                size,
                repository: repository.to_string(),
                source: None,
            }
        })
    }

    /// What earlier runs shipped to a site, as an inventory keyed by source repository.
    pub fn from_shipped(site: &str, items: &[ShippedItem]) -> Inventory {
        let mut inv = Inventory {
            format: FORMAT.into(),
            registry: site.to_string(),
            created_at: crate::state::now(),
            by_source: true,
            ..Inventory::default()
        };
        for i in items {
            let r = inv.repositories.entry(i.repository.clone()).or_default();
            match i.kind {
                ShippedKind::Blob => {
                    r.blobs.insert(i.digest.clone(), i.size);
                }
                ShippedKind::Manifest => {
                    r.manifests.insert(i.digest.clone());
                }
            }
        }
        inv
    }

    /// Ask `client` for every manifest and blob of `plan` by digest, in the repository each
    /// image lands in at `dest`, `jobs` requests at once; and for each tag the plan names.
    pub async fn of_plan(
        client: &RegistryClient,
        dest: &Destination,
        plan: &Plan,
        jobs: usize,
    ) -> Result<Inventory> {
        let sizes: BTreeMap<&Digest, u64> =
            plan.blobs.iter().map(|b| (&b.digest, b.size)).collect();
        let mut asks: BTreeSet<(String, Ask)> = BTreeSet::new();
        for image in &plan.images {
            let repo = dest.repository(&image.source);
            for d in &image.manifests {
                asks.insert((repo.clone(), Ask::Manifest(d.clone())));
            }
            for d in &image.blobs {
                let size = sizes.get(d).copied().unwrap_or(0);
                asks.insert((repo.clone(), Ask::Blob(d.clone(), size)));
            }
            if let Some(tag) = image.source.tag() {
                asks.insert((repo.clone(), Ask::Tag(tag.to_string())));
            }
        }
        let answers: Vec<(String, Option<Held>)> = futures::stream::iter(asks)
            .map(|(repo, ask)| async move {
                let held = ask_one(client, &repo, &ask).await?;
                anyhow::Ok((repo, held))
            })
            .buffer_unordered(jobs.max(1))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        let mut inv = Inventory {
            format: FORMAT.into(),
            registry: client.host().to_string(),
            created_at: crate::state::now(),
            ..Inventory::default()
        };
        for (repo, held) in answers {
            let Some(held) = held else { continue };
            let r = inv.repositories.entry(repo).or_default();
            match held {
                Held::Manifest(d) => {
                    r.manifests.insert(d);
                }
                Held::Blob(d, size) => {
                    r.blobs.insert(d, size);
                }
                Held::Tag(tag, d) => {
                    r.tags.insert(tag, d);
                }
            }
        }
        for image in &plan.images {
            let repository = dest.repository(&image.source);
            let whole = inv.repositories.get(&repository).is_some_and(|r| {
                image.manifests.iter().all(|d| r.manifests.contains(d))
                    && image.blobs.iter().all(|d| r.blobs.contains_key(d))
            });
            inv.images.insert(
                image.source.to_string(),
                ImageHeld {
                    repository,
                    digest: image.digest.clone(),
                    whole,
                },
            );
        }
        Ok(inv)
    }

    /// Walk every tag of every repository, and every `(repository, digest)` root (images
    /// pushed by digest only have no tag to list), children of indexes too.
    pub async fn take(
        client: &RegistryClient,
        repositories: &[String],
        roots: &[(String, Digest)],
    ) -> Result<Inventory> {
        let mut inv = Inventory {
            format: FORMAT.into(),
            registry: client.host().to_string(),
            created_at: crate::state::now(),
            ..Inventory::default()
        };
        for repo in repositories {
            let mut r = RepositoryInventory::default();
            let tags = client
                .list_tags(repo)
                .await
                .with_context(|| format!("repository `{repo}`"))?;
            for tag in tags {
                let top = client.get_manifest(repo, &tag).await?;
                r.tags.insert(tag, top.digest.clone());
                walk(client, repo, top, &mut r).await?;
            }
            if !r.manifests.is_empty() {
                inv.repositories.insert(repo.clone(), r);
            }
        }
        for (repo, digest) in roots {
            if inv
                .repositories
                .get(repo)
                .is_some_and(|r| r.manifests.contains(digest))
            {
                continue;
            }
            let top = match client.get_manifest(repo, digest.as_str()).await {
                Ok(m) => m,
                Err(crate::registry::RegistryError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let r = inv.repositories.entry(repo.clone()).or_default();
            walk(client, repo, top, r).await?;
        }
        Ok(inv)
    }
}

/// One HEAD (a GET where a manifest HEAD carries no digest), and its proof.
pub(crate) async fn ask_one(
    client: &RegistryClient,
    repo: &str,
    ask: &Ask,
) -> Result<Option<Held>> {
    let absent = |e: &RegistryError| matches!(e, RegistryError::NotFound { .. });
    Ok(match ask {
        Ask::Manifest(d) => match client.head_manifest(repo, d.as_str()).await {
            Ok(Some((got, _, _))) => (got == *d).then(|| Held::Manifest(d.clone())),
            // No digest header: only the bytes can prove it (get_manifest checks their hash).
            Ok(None) => match client.get_manifest(repo, d.as_str()).await {
                Ok(_) => Some(Held::Manifest(d.clone())),
                Err(e) if absent(&e) => None,
                Err(e) => return Err(e.into()),
            },
            Err(e) if absent(&e) => None,
            Err(e) => return Err(e.into()),
        },
        Ask::Blob(d, size) => match client.head_blob(repo, d, Some(*size)).await {
            Ok(Presence::Present) => Some(Held::Blob(d.clone(), *size)),
            Ok(Presence::Absent) => None,
            Err(e) if absent(&e) => None,
            Err(e) => return Err(e.into()),
        },
        Ask::Tag(tag) => match client.head_manifest(repo, tag).await {
            Ok(Some((got, _, _))) => Some(Held::Tag(tag.clone(), got)),
            Ok(None) => match client.get_manifest(repo, tag).await {
                Ok(m) => Some(Held::Tag(tag.clone(), m.digest)),
                Err(e) if absent(&e) => None,
                Err(e) => return Err(e.into()),
            },
            Err(e) if absent(&e) => None,
            Err(e) => return Err(e.into()),
        },
    })
}

/// Record a manifest and everything below it.
async fn walk(
    client: &RegistryClient,
    repo: &str,
    top: crate::registry::FetchedManifest,
    r: &mut RepositoryInventory,
) -> Result<()> {
    let mut queue = vec![top];
    while let Some(m) = queue.pop() {
        if !r.manifests.insert(m.digest.clone()) {
            continue;
        }
        match Manifest::parse(&m.bytes, Some(&m.media_type))
            .with_context(|| format!("manifest `{repo}@{}`", m.digest))?
        {
            Manifest::Index { manifests, .. } => {
                for child in manifests {
                    match client.get_manifest(repo, child.digest.as_str()).await {
                        Ok(c) => queue.push(c),
                        // A partial index (platforms left out): not held.
                        Err(crate::registry::RegistryError::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Manifest::Image { config, layers, .. } => {
                for d in std::iter::once(config).chain(layers) {
                    r.blobs.insert(d.digest, d.size);
                }
            }
        }
    }
    Ok(())
}
