//! Where `copy` and `import` push: a registry named `REGISTRY[/PREFIX]` on the command line,
//! the repository each source image lands in there, and the plan completed for pushing.
//!
//! Repositories: with a prefix, `PREFIX/<source repository>`; without one, the cache-org
//! mapping (`<org>/<source repository>`, the job's `cache.orgs` when a job says so, else
//! `cache_<host>`), so a registry filled by copy or import serves the same paths as a cache.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::job::Job;
use crate::plan::{Plan, PlannedBlob, PlannedManifest};
use crate::reference::{Digest, Reference};
use crate::registry::manifest::{is_index, Manifest};
use crate::registry::RegistryClient;

pub use crate::destination::Destination;

/// Add every child of every index in the plan, whatever the job's platforms: an index is
/// pushed byte for byte (clusters pull it by digest) and registries refuse an index whose
/// children they do not hold, so a copy or a bundle carries all of them.
pub async fn complete_indexes(
    plan: &mut Plan,
    source: impl Fn(&Reference) -> Result<(Arc<RegistryClient>, String)>,
) -> Result<()> {
    let mut manifests: BTreeMap<(String, Digest), PlannedManifest> = plan
        .manifests
        .drain(..)
        .map(|m| ((m.repository.clone(), m.digest.clone()), m))
        .collect();
    let mut blobs: BTreeMap<Digest, PlannedBlob> = plan
        .blobs
        .drain(..)
        .map(|b| (b.digest.clone(), b))
        .collect();
    for image in &mut plan.images {
        if !is_index(&image.media_type) {
            continue;
        }
        let (client, repository) = source(&image.source)?;
        let what = || format!("manifest `{}@{}`", image.source.repo_path(), image.digest);
        let top = client
            .get_manifest(&repository, image.digest.as_str())
            .await
            .with_context(what)?;
        let Manifest::Index {
            manifests: children,
            ..
        } = Manifest::parse(&top.bytes, Some(&top.media_type)).with_context(what)?
        else {
            continue;
        };
        let repo_path = image.source.repo_path();
        let mut have: BTreeSet<Digest> = image.manifests.iter().cloned().collect();
        let mut image_blobs: BTreeSet<Digest> = image.blobs.iter().cloned().collect();
        for child in children {
            if !have.insert(child.digest.clone()) {
                continue;
            }
            let what = || format!("manifest `{repo_path}@{}`", child.digest);
            let fetched = client
                .get_manifest(&repository, child.digest.as_str())
                .await
                .with_context(what)?;
            let parsed =
                Manifest::parse(&fetched.bytes, Some(&fetched.media_type)).with_context(what)?;
            let Manifest::Image {
                config,
                layers,
                media_type,
            } = parsed
            else {
                bail!("{}: nested index is not supported", what());
            };
            image.manifests.push(child.digest.clone());
            manifests
                .entry((repo_path.clone(), child.digest.clone()))
                .or_insert(PlannedManifest {
                    repository: repo_path.clone(),
                    digest: child.digest.clone(),
                    media_type,
                    size: fetched.bytes.len() as u64,
                });
            for d in std::iter::once(config).chain(layers) {
                if image_blobs.insert(d.digest.clone()) {
                    image.blobs.push(d.digest.clone());
                    image.bytes += d.size;
                }
                blobs
                    .entry(d.digest.clone())
                    .or_insert_with(|| PlannedBlob {
                        digest: d.digest.clone(),
                        size: d.size,
                        media_type: d.media_type.clone(),
                        repositories: BTreeSet::new(),
                    })
                    .repositories
                    .insert(repo_path.clone());
            }
        }
    }
    plan.manifests = manifests.into_values().collect();
    plan.blobs = blobs.into_values().collect();
    plan.blobs
        .sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.digest.cmp(&b.digest)));
    Ok(())
}

/// The source registry and repository of an image (never the cache: copies and bundles read
/// the source, or the cache when the job resolves through it).
pub fn source_reader(
    job: &Job,
    registries: &crate::registry::Registries,
    source: &Reference,
) -> Result<(Arc<RegistryClient>, String)> {
    match job.resolve {
        crate::job::ResolveVia::Source => Ok((
            registries.client(source.registry())?,
            source.repository().to_string(),
        )),
        crate::job::ResolveVia::Cache => {
            let cached = job.cache()?.cache_reference(source);
            Ok((
                registries.client(cached.registry())?,
                cached.repository().to_string(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_map_repositories() {
        let r: Reference = "quay.io/openshift/release:4.20".parse().unwrap();
        let d = Destination::parse("mirror.example:8443").unwrap();
        assert_eq!(d.repository(&r), "cache_quay_io/openshift/release");
        let d = Destination::parse("mirror.example/ocp/").unwrap();
        assert_eq!(d.repository(&r), "ocp/openshift/release");
        assert!(Destination::parse("/x").is_err());
        assert!(Destination::parse("host/Bad Prefix").is_err());
    }
}
