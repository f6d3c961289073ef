//! `prewarm prune JOB --to REGISTRY[/PREFIX]`: what the destination holds under the job's
//! mapping that the current job no longer plans — older releases, dropped bundles — listed by
//! default, deleted by digest with `--yes`.
//!
//! What is needed: every manifest of every planned image (each child of an index) in the
//! repository the mapping places it in, every planned tag, and the filtered catalogs the job's
//! catalogs with package filters are pushed as (their tag and children). What is looked at: the
//! tags of every repository the plan places images in. A tag that names a manifest not needed
//! is a candidate, with what hangs below it: an index's children, and — for a release image
//! (config label `io.openshift.release`) — the components its `image-references` names, each in
//! the repository the mapping places it. Nothing needed is ever a candidate. The registry API
//! lists tags, not untagged manifests: what no dropped tag leads to is not found. Deleting a
//! manifest by digest removes its tags with it (distribution has no tag-only delete); parents
//! are deleted before their children. `--quay HOST` prunes the job's cache orgs on a Quay
//! instead, by tag through Quay's REST API: [`crate::quay::prune`], with the same [`Needed`];
//! both report through [`super::prune_report`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use anyhow::{bail, Context, Result};

use super::prune_report::{self, Entry};

use crate::args::DestinationArgs;
use crate::job::Job;
use crate::plan::Plan;
use crate::reference::{Digest, Reference};
use crate::registry::manifest::Manifest;
use crate::registry::RegistryClient;
use crate::sources::release::{parse_image_references, IMAGE_REFERENCES};

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// The job file (YAML): what is still needed.
    pub job: std::path::PathBuf,
    /// The registry to prune: `REGISTRY` (repositories by the cache-org mapping, `cache_<host>/…`
    /// or the job's `cache.orgs`) or `REGISTRY/PREFIX` (repositories `PREFIX/<source path>`).
    #[arg(
        long,
        value_name = "REGISTRY[/PREFIX]",
        required_unless_present = "quay"
    )]
    pub to: Option<String>,
    /// Prune the job's cache orgs on this Quay instead, through Quay's REST API (tags).
    #[arg(long, value_name = "HOST[:PORT]", conflicts_with = "to")]
    pub quay: Option<String>,
    /// With --quay: a file holding the Quay OAuth token (scopes: read and write repositories).
    /// Default: $PREWARM_QUAY_TOKEN.
    #[arg(long, value_name = "FILE", requires = "quay", conflicts_with = "to")]
    pub token_file: Option<std::path::PathBuf>,
    /// A CA certificate (PEM) the registry's (or Quay's) TLS certificate is signed by.
    #[arg(long, value_name = "FILE")]
    pub to_ca: Option<std::path::PathBuf>,
    /// Talk to the registry (or Quay) over plain HTTP, or HTTPS without verification.
    #[arg(long)]
    pub to_insecure: bool,
    /// Write the JSON report (every entry listed and what happened to it) here.
    #[arg(long, value_name = "FILE")]
    pub report: Option<std::path::PathBuf>,
    /// Delete what is listed (default: only list it).
    #[arg(long)]
    pub yes: bool,
    /// Only list (the default; says so explicitly in scripts).
    #[arg(long, conflicts_with = "yes")]
    pub dry_run: bool,
}

impl PruneArgs {
    /// The registry of `--to` as the transfer commands take it; `None` with `--quay`.
    pub fn registry(&self) -> Option<DestinationArgs> {
        self.to.as_ref().map(|to| DestinationArgs {
            to: to.clone(),
            to_ca: self.to_ca.clone(),
            to_insecure: self.to_insecure,
        })
    }

    /// Sum up and write `--report`; true when a delete failed (see [`prune_report::finish`]).
    pub fn finish(&self, target: &str, what: &str, entries: &[Entry]) -> Result<bool> {
        prune_report::finish(
            &self.job,
            target,
            what,
            self.yes,
            entries,
            self.report.as_deref(),
        )
    }
}

/// One manifest the destination holds and the job no longer needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Candidate {
    /// How deep below a dropped tag (0: the tag's manifest): deletion goes shallowest first.
    pub depth: usize,
    pub repository: String,
    pub digest: Digest,
    pub tags: Vec<String>,
    pub why: String,
}

/// What the current plan needs at the destination.
pub struct Needed {
    pub manifests: BTreeSet<(String, Digest)>,
    pub tags: BTreeSet<(String, String)>,
    pub repositories: BTreeSet<String>,
}

impl Needed {
    /// From a complete plan (a plan with failures does not say what is needed: refused).
    pub fn of(plan: &Plan, repository_of: &dyn Fn(&Reference) -> String) -> Result<Needed> {
        if !plan.failures.is_empty() {
            bail!(
                "the plan has {} unresolved source(s) (first: {}): prune needs a complete plan to know what is still needed",
                plan.failures.len(),
                plan.failures[0].reference
            );
        }
        let mut n = Needed {
            manifests: BTreeSet::new(),
            tags: BTreeSet::new(),
            repositories: BTreeSet::new(),
        };
        for image in &plan.images {
            let repo = repository_of(&image.source);
            for d in &image.manifests {
                n.manifests.insert((repo.clone(), d.clone()));
            }
            if let Some(t) = image.source.tag() {
                n.tags.insert((repo.clone(), t.to_string()));
            }
            n.repositories.insert(repo);
        }
        Ok(n)
    }

    /// Keep `repository:tag` and everything below it (a filtered catalog pushed by copy).
    pub async fn keep_tag(
        &mut self,
        client: &RegistryClient,
        repository: &str,
        tag: &str,
    ) -> Result<()> {
        let Some((digest, _, _)) = client.head_manifest(repository, tag).await? else {
            return Ok(());
        };
        self.tags.insert((repository.to_string(), tag.to_string()));
        self.manifests
            .insert((repository.to_string(), digest.clone()));
        let m = client.get_manifest(repository, digest.as_str()).await?;
        if let Manifest::Index { manifests, .. } = Manifest::parse(&m.bytes, Some(&m.media_type))? {
            for c in manifests {
                self.manifests.insert((repository.to_string(), c.digest));
            }
        }
        Ok(())
    }
}

/// Every candidate under the needed repositories.
pub async fn find(
    client: &RegistryClient,
    needed: &Needed,
    repository_of: &dyn Fn(&Reference) -> String,
) -> Result<Vec<Candidate>> {
    let mut found: BTreeMap<(String, Digest), Candidate> = BTreeMap::new();
    let mut work: Vec<(String, Digest, usize, String)> = Vec::new();
    for repo in &needed.repositories {
        for tag in client.list_tags(repo).await? {
            if needed.tags.contains(&(repo.clone(), tag.clone())) {
                continue;
            }
            let Some((digest, _, _)) = client.head_manifest(repo, &tag).await? else {
                continue;
            };
            if needed.manifests.contains(&(repo.clone(), digest.clone())) {
                continue;
            }
            let key = (repo.clone(), digest.clone());
            match found.get_mut(&key) {
                Some(c) => c.tags.push(tag),
                None => {
                    found.insert(
                        key,
                        Candidate {
                            depth: 0,
                            repository: repo.clone(),
                            digest: digest.clone(),
                            tags: vec![tag.clone()],
                            why: format!("tag `{tag}` is no longer planned"),
                        },
                    );
                    work.push((repo.clone(), digest, 0, format!("below `{repo}:{tag}`")));
                }
            }
        }
    }
    while let Some((repo, digest, depth, why)) = work.pop() {
        for (child_repo, child) in below(client, &repo, &digest, repository_of).await? {
            let key = (child_repo.clone(), child.clone());
            if needed.manifests.contains(&key) || found.contains_key(&key) {
                continue;
            }
            found.insert(
                key,
                Candidate {
                    depth: depth + 1,
                    repository: child_repo.clone(),
                    digest: child.clone(),
                    tags: Vec::new(),
                    why: why.clone(),
                },
            );
            work.push((child_repo, child, depth + 1, why.clone()));
        }
    }
    let mut out: Vec<Candidate> = found.into_values().collect();
    out.sort();
    Ok(out)
}

/// What hangs below a manifest: an index's children; a release image's components.
async fn below(
    client: &RegistryClient,
    repo: &str,
    digest: &Digest,
    repository_of: &dyn Fn(&Reference) -> String,
) -> Result<Vec<(String, Digest)>> {
    let Some(m) = fetch(client, repo, digest).await? else {
        return Ok(Vec::new());
    };
    match Manifest::parse(&m.bytes, Some(&m.media_type))? {
        Manifest::Index { manifests, .. } => Ok(manifests
            .into_iter()
            .map(|c| (repo.to_string(), c.digest))
            .collect()),
        Manifest::Image { config, layers, .. } => {
            let mut sink = crate::sources::layers::MemorySink::default();
            client
                .fetch_blob(repo, &config.digest, &mut sink, &|_| {})
                .await?;
            let cfg: serde_json::Value = serde_json::from_slice(&sink.0).unwrap_or_default();
            if cfg.pointer("/config/Labels/io.openshift.release").is_none() {
                return Ok(Vec::new());
            }
            // Top layer first, as `oc adm release info` reads it.
            for layer in layers.iter().rev() {
                let refs =
                    crate::sources::layers::with_layer(client, repo, &layer.digest, |archive| {
                        for entry in archive.entries()? {
                            let mut entry = entry?;
                            if crate::sources::layers::entry_path(&entry)? == IMAGE_REFERENCES {
                                let mut bytes = Vec::new();
                                entry.read_to_end(&mut bytes)?;
                                return Ok(Some(bytes));
                            }
                        }
                        Ok(None)
                    })
                    .await?;
                if let Some(bytes) = refs {
                    let what = format!("{repo}@{digest}: {IMAGE_REFERENCES}");
                    return Ok(parse_image_references(&bytes, &what)?
                        .into_iter()
                        .filter_map(|(_, r)| {
                            let d = r.digest()?.clone();
                            Some((repository_of(&r), d))
                        })
                        .collect());
                }
            }
            Ok(Vec::new())
        }
    }
}

async fn fetch(
    client: &RegistryClient,
    repo: &str,
    digest: &Digest,
) -> Result<Option<crate::registry::FetchedManifest>> {
    match client.get_manifest(repo, digest.as_str()).await {
        Ok(m) => Ok(Some(m)),
        Err(crate::registry::RegistryError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// List (and with `yes`, delete) the candidates, in order; one line each on stdout.
pub async fn apply(
    client: &RegistryClient,
    host: &str,
    candidates: &[Candidate],
    yes: bool,
) -> Vec<Entry> {
    let entries = candidates
        .iter()
        .map(|c| {
            let repository = format!("{host}/{}", c.repository);
            Entry::new(
                repository,
                c.digest.clone(),
                c.tags.clone(),
                None,
                c.why.clone(),
            )
        })
        .collect();
    prune_report::settle_all(entries, yes, |i| async move {
        let c = &candidates[i];
        client
            .delete_manifest(&c.repository, &c.digest)
            .await
            .with_context(|| format!("delete {}@{}", c.repository, c.digest))
    })
    .await
}

/// Keep what `copy` pushes beside the plan: each filtered catalog's tag.
pub async fn keep_built(
    job: &Job,
    client: &RegistryClient,
    needed: &mut Needed,
    repository_of: &dyn Fn(&Reference) -> String,
) -> Result<()> {
    for op in job.operators.iter().filter(|o| !o.packages.is_empty()) {
        let source: Reference = op.catalog.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        let tag = super::catalog_image::filtered_tag(op, &source);
        needed
            .keep_tag(client, &repository_of(&source), &tag)
            .await?;
    }
    Ok(())
}
