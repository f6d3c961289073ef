//! An inventory: the digests a registry already holds, per repository, written by
//! `prewarm inventory` at the far site and read by `export --have` so a bundle carries only
//! what is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::reference::Digest;
use crate::registry::manifest::Manifest;
use crate::registry::RegistryClient;

pub const FORMAT: &str = "prewarm-inventory/1";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    pub format: String,
    pub registry: String,
    pub created_at: i64,
    pub repositories: BTreeMap<String, RepositoryInventory>,
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
            repositories: BTreeMap::new(),
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
