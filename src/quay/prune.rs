//! `prewarm prune JOB --quay HOST`: the tags the job's cache orgs on a Quay hold that the
//! current plan no longer needs, listed by default and deleted with `--yes` through Quay's
//! REST API.
//!
//! The orgs are those the job's mapping places its planned images in, plus those of its
//! `cache.orgs` overrides ([`Mapping::cache_orgs`], so each org also says which upstream it
//! proxies and a repository maps back to its upstream reference). Each org's repositories come
//! from `GET /api/v1/repository?namespace=ORG` (all pages), each repository's tags from
//! `GET …/tag/?onlyActiveTags=true` (all pages). A tag is listed when the plan pulls no image
//! by that name into that repository and does not need the manifest it names there — needed
//! are every manifest of every planned image, each child of a planned index included, in the
//! repository the mapping places it. `--yes` deletes each listed tag
//! (`DELETE /api/v1/repository/{repo}/tag/{tag}`, 204; 404 when already gone). Quay keeps
//! what the deleted tags named until its own garbage collection (after the org's time-machine
//! window); digest pulls leave only hidden tags, which Quay never lists and expires itself.

use std::collections::BTreeSet;

use anyhow::{Context, Result};

use super::client::{Connection, QuayClient, QuayTag};
use crate::cluster::prune::{Needed, PruneArgs};
use crate::cluster::prune_report::{settle_all, Entry};
use crate::job::{CacheConfig, Job};
use crate::plan::Plan;
use crate::reference::{Digest, Reference};
use crate::upstreams::{CacheOrg, Mapping, SiteArgs};

/// One tag a cache org holds that the plan no longer needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Candidate {
    /// `org/name`, as Quay names the repository.
    pub repository: String,
    pub tag: String,
    /// The manifest the tag names.
    pub digest: Digest,
    /// What the org holds it for: `<upstream>/<name>:<tag>`.
    pub upstream: String,
    pub why: String,
}

/// The cache orgs to look at: every org the mapping places a planned image in, and those of
/// the job's `cache.orgs` overrides.
pub fn orgs(cache: &CacheConfig, plan: &Plan) -> Result<Vec<CacheOrg>> {
    let mut hosts: Vec<String> = Vec::new();
    for i in &plan.images {
        let host = i.source.registry().to_string();
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    Mapping::new(cache.clone(), &hosts).cache_orgs()
}

/// The tags of `org`'s repository `name` that the plan no longer needs: not pulled by that
/// name into the repository, and naming a manifest not needed there.
pub fn select(org: &CacheOrg, name: &str, tags: &[QuayTag], needed: &Needed) -> Vec<Candidate> {
    let repository = format!("{}/{name}", org.org);
    let planned = needed.repositories.contains(&repository);
    tags.iter()
        .filter(|t| !needed.tags.contains(&(repository.clone(), t.name.clone())))
        .filter(|t| {
            !needed
                .manifests
                .contains(&(repository.clone(), t.manifest_digest.clone()))
        })
        .map(|t| Candidate {
            repository: repository.clone(),
            tag: t.name.clone(),
            digest: t.manifest_digest.clone(),
            upstream: format!("{}/{name}:{}", org.source, t.name),
            why: if planned {
                format!(
                    "tag `{}` is no longer planned and the plan does not need its manifest",
                    t.name
                )
            } else {
                format!(
                    "the plan places nothing in this repository (upstream {}/{name})",
                    org.source
                )
            },
        })
        .collect()
}

/// Every candidate of `orgs`, sorted by repository and tag. An org Quay does not have, or one
/// without a proxy-cache config, is said so on stderr and left alone: what a regular org holds
/// was pushed there and cannot be fetched again, so it is `--to`'s to prune, not this.
pub async fn find(
    client: &QuayClient,
    orgs: &[CacheOrg],
    needed: &Needed,
) -> Result<Vec<Candidate>> {
    let mut found = BTreeSet::new();
    for org in orgs {
        if !client.org_exists(&org.org).await? {
            eprintln!("note: {}: no such org on Quay, nothing to prune", org.org);
            continue;
        }
        if client.proxycache(&org.org).await?.is_none() {
            eprintln!(
                "note: {}: not a proxy-cache org (no proxy-cache config): left alone; what was pushed there cannot be fetched again (`prune --to` prunes a registry's orgs by digest)",
                org.org
            );
            continue;
        }
        for name in client.repositories(&org.org).await? {
            // A repository gone between the two calls holds nothing to prune.
            let Some(tags) = client.active_tags(&format!("{}/{name}", org.org)).await? else {
                continue;
            };
            found.extend(select(org, &name, &tags, needed));
        }
    }
    Ok(found.into_iter().collect())
}

/// List (and with `yes`, delete) each candidate tag; one line each on stdout.
pub async fn apply(
    client: &QuayClient,
    host: &str,
    candidates: &[Candidate],
    yes: bool,
) -> Vec<Entry> {
    let entries = candidates
        .iter()
        .map(|c| {
            let repository = format!("{host}/{}", c.repository);
            let tags = vec![c.tag.clone()];
            Entry::new(
                repository,
                c.digest.clone(),
                tags,
                Some(c.upstream.clone()),
                c.why.clone(),
            )
        })
        .collect();
    settle_all(entries, yes, |i| {
        client.delete_tag(&candidates[i].repository, &candidates[i].tag)
    })
    .await
}

/// `prewarm prune JOB --quay HOST`: the cache and a client whose token Quay accepted, made
/// before the (long) planning so bad input and a refused token fail first.
pub struct QuayPrune {
    cache: CacheConfig,
    client: QuayClient,
}

impl QuayPrune {
    pub async fn connect(args: &PruneArgs, job: &Job) -> Result<QuayPrune> {
        let site = SiteArgs {
            quay: args.quay.clone(),
            job: None,
            domain_list: None,
        };
        let cache = site.cache_config(Some(job))?;
        let token = super::token_from(args.token_file.as_deref())?;
        let conn = Connection {
            host: cache.host.clone(),
            ca: args.to_ca.clone().or_else(|| cache.ca.clone()),
            insecure: args.to_insecure || cache.insecure,
        };
        let (client, _) = QuayClient::connect(&conn, token)
            .await
            .with_context(|| format!("Quay {}", conn.host))?;
        Ok(QuayPrune { cache, client })
    }

    /// Find, list or delete, report — with the job's complete plan.
    pub async fn run(&self, args: &PruneArgs, plan: &Plan) -> Result<bool> {
        let cache = &self.cache;
        let repository_of = |r: &Reference| cache.cache_reference(r).repository().to_string();
        let needed = Needed::of(plan, &repository_of)?;
        let orgs = orgs(cache, plan)?;
        let candidates = find(&self.client, &orgs, &needed).await?;
        let entries = apply(&self.client, &cache.host, &candidates, args.yes).await;
        args.finish(
            &format!("the cache orgs on {}", cache.host),
            "tag(s)",
            &entries,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    #[test]
    fn a_tag_is_kept_when_its_name_or_its_manifest_is_needed() {
        let org = CacheOrg {
            org: "cache_quay_io".into(),
            source: "quay.io".into(),
            upstream: "quay.io".into(),
            insecure: false,
            endpoint: None,
        };
        let repo = "cache_quay_io/ns/app".to_string();
        let needed = Needed {
            manifests: [(repo.clone(), digest('a')), (repo.clone(), digest('c'))].into(),
            tags: [(repo.clone(), "v1".to_string())].into(),
            repositories: [repo.clone()].into(),
        };
        let tag = |name: &str, d: char| QuayTag {
            name: name.into(),
            manifest_digest: digest(d),
        };
        let tags = [
            tag("v1", 'b'),     // pulled by this name: kept though its manifest changed
            tag("latest", 'a'), // names a needed manifest: kept
            tag("child", 'c'),  // names a needed child of an index: kept
            tag("v0", 'd'),     // neither: listed
        ];
        let got = select(&org, "ns/app", &tags, &needed);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].tag, "v0");
        assert_eq!(got[0].upstream, "quay.io/ns/app:v0");
        let other = select(&org, "ns/gone", &tags, &needed);
        assert_eq!(other.len(), 4);
        assert!(other[0].why.contains("places nothing"), "{}", other[0].why);
    }
}
