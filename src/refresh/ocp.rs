//! Refresh of what a cluster tracks beyond plain images: releases by tag, update-graph
//! channels and operator catalogs.
//!
//! A release or catalog tag is re-resolved with one HEAD (none for a digest, or a tag an
//! immutability rule covers). Unchanged and warm within `--stale-after`: nothing more is
//! asked. A new digest (or a stale one): the payload's image-references are read again, the
//! catalog is re-selected with the same filters, and only the images not warm since then are
//! planned. A channel's graph is read again: a release that entered the range is read and
//! planned the same way, one that left it is reported. Every difference is a line for the
//! cron log (`catalog C: package P: old → new`).

use std::collections::{BTreeMap, HashSet};

use anyhow::Result;

use crate::history::state_key;
use crate::job::Job;
use crate::reference::{Digest, Reference};
use crate::registry::Registries;
use crate::report::{ImageReport, ImageStatus};
use crate::sources::{self, catalog, graph, release, Collected, Tracked};
use crate::state::State;

use super::{budget_reason, head, Change, Deferred};

/// What the OCP sources of a job need this run.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Images to plan and warm (by digest where the source names one).
    pub sources: Vec<(Reference, String)>,
    /// Release and catalog tags that moved (or were seen for the first time).
    pub changes: Vec<Change>,
    /// What changed inside them: packages' newest bundles, releases entering or leaving a
    /// channel's range.
    pub lines: Vec<String>,
    /// Tags re-resolved upstream.
    pub checked: usize,
    /// Not re-resolved: by digest, or covered by an immutability rule.
    pub skipped: usize,
    /// Releases, channels and catalogs in the job.
    pub tracked_sources: usize,
    pub failures: Vec<ImageReport>,
    pub deferred: Vec<Deferred>,
    /// The sources read again this run, with their images, to record once warmed.
    pub tracked: Vec<Tracked>,
}

pub struct Ctx<'a> {
    pub job: &'a Job,
    pub registries: &'a Registries,
    pub state: &'a State,
    /// An image warmed before this (seconds since the epoch) is stale.
    pub stale_before: i64,
}

fn failure(reference: &str, origin: &str, error: String) -> ImageReport {
    ImageReport {
        reference: reference.to_string(),
        digest: None,
        status: ImageStatus::Failed,
        bytes: 0,
        origin: origin.to_string(),
        error: Some(error),
        warnings: Vec::new(),
        missing: Vec::new(),
        budget_spent: None,
    }
}

impl Ctx<'_> {
    pub async fn check(&self) -> Result<Outcome> {
        let mut out = Outcome::default();
        let mut seen = HashSet::new();
        for (r, origin) in sources::named_releases(self.job)? {
            out.tracked_sources += 1;
            let key = Tracked::release_key(&r);
            let Some(current) = self.current(&r, &key, &origin, &mut out).await? else {
                continue;
            };
            if !self.state.warm_since(&key, &current, self.stale_before)? {
                self.expand_release(&r.with_digest(current), key, &origin, &mut out, &mut seen)
                    .await?;
            }
        }
        if !self.job.channels.is_empty() {
            self.channels(&mut out, &mut seen).await?;
        }
        for (i, op) in self.job.operators.iter().enumerate() {
            out.tracked_sources += 1;
            let what = op
                .origin
                .clone()
                .unwrap_or_else(|| format!("{}: operators[{i}]", self.job.path.display()));
            let source: Reference = op
                .catalog
                .parse()
                .map_err(|e| anyhow::anyhow!("{what}.catalog: {e}"))?;
            let key = Tracked::catalog_key(&source);
            let Some(current) = self.current(&source, &key, &what, &mut out).await? else {
                continue;
            };
            if self.state.warm_since(&key, &current, self.stale_before)? {
                continue;
            }
            let mut pinned = op.clone();
            pinned.catalog = source.with_digest(current).to_string();
            match catalog::select(self.job, self.registries, &pinned, &what).await {
                Ok(sel) => {
                    let t = sel.tracked(&source);
                    if let Some(before) = self.state.selection(&key)? {
                        out.lines
                            .extend(package_lines(&source.to_string(), &before, &t.selection));
                    }
                    self.plan_images(sel.references, &mut out, &mut seen)?;
                    out.tracked.push(t);
                }
                Err(e) => out
                    .failures
                    .push(failure(&source.to_string(), &what, format!("{e:#}"))),
            }
        }
        // What the job blocks stays out here as in a plan.
        let mut collected = Collected {
            references: std::mem::take(&mut out.sources),
            ..Collected::default()
        };
        sources::blocked::apply(self.job, &mut collected)?;
        out.sources = collected.references;
        let kept: HashSet<&Reference> = out.sources.iter().map(|(r, _)| r).collect();
        for t in &mut out.tracked {
            // An image left out of the plan is either warm already or blocked: not waited on.
            t.images.retain(|r| kept.contains(r));
        }
        Ok(out)
    }

    /// What `r` resolves to now (one HEAD unless pinned or immutable); a move is a change.
    /// `None` when it could not be checked (a failure, or deferred by a spent budget).
    async fn current(
        &self,
        r: &Reference,
        key: &str,
        origin: &str,
        out: &mut Outcome,
    ) -> Result<Option<Digest>> {
        let previous = self.state.current_digest(key)?;
        let digest = match (r.digest(), &previous) {
            (Some(d), _) => {
                out.skipped += 1;
                d.clone()
            }
            (None, Some(p)) if self.job.refresh.immutable(r).is_some() => {
                out.skipped += 1;
                p.digest.clone()
            }
            _ => {
                out.checked += 1;
                match head(self.job, self.registries, r).await {
                    Ok(d) => d,
                    Err(e) => {
                        match budget_reason(&e) {
                            Some(reason) => out.deferred.push(Deferred {
                                reference: key.to_string(),
                                reason,
                            }),
                            None => {
                                out.failures
                                    .push(failure(&r.to_string(), origin, format!("{e:#}")))
                            }
                        }
                        return Ok(None);
                    }
                }
            }
        };
        if previous.as_ref().map(|p| &p.digest) != Some(&digest) {
            out.changes.push(Change {
                reference: key.to_string(),
                old: previous.map(|p| p.digest.to_string()),
                new: digest.to_string(),
            });
        }
        Ok(Some(digest))
    }

    /// Read release `pinned` again and plan what of it is not warm.
    async fn expand_release(
        &self,
        pinned: &Reference,
        key: String,
        origin: &str,
        out: &mut Outcome,
        seen: &mut HashSet<Reference>,
    ) -> Result<()> {
        match release::read(self.job, self.registries, pinned).await {
            Ok(payload) => {
                let mut refs = payload.references(origin);
                refs.extend(
                    sources::signatures::cosign_tags(
                        self.job,
                        self.registries,
                        &[(pinned.clone(), payload.digest.clone())],
                    )
                    .await,
                );
                out.tracked.push(Tracked {
                    kind: sources::TrackedKind::Release,
                    key,
                    digest: Some(payload.digest.clone()),
                    selection: BTreeMap::new(),
                    images: refs.iter().map(|(r, _)| r.clone()).collect(),
                });
                self.plan_images(refs, out, seen)
            }
            Err(e) => {
                out.failures
                    .push(failure(&pinned.to_string(), origin, format!("{e:#}")));
                Ok(())
            }
        }
    }

    /// Re-read every channel's graph; report releases entering and leaving its range; plan
    /// the releases in range that are not warm.
    async fn channels(&self, out: &mut Outcome, seen: &mut HashSet<Reference>) -> Result<()> {
        out.tracked_sources += self.job.channels.len();
        let selected = match graph::select_for_job(self.job).await {
            Ok(s) => s,
            Err(e) => {
                let file = self.job.path.display().to_string();
                out.failures.push(failure(
                    "channels",
                    &format!("{file}: channels"),
                    format!("{e:#}"),
                ));
                return Ok(());
            }
        };
        for t in selected.channels {
            if let Some(before) = self.state.selection(&t.key)? {
                out.lines
                    .extend(release_lines(&t.key, &before, &t.selection));
            }
            out.tracked.push(t);
        }
        for (r, origin) in selected.releases {
            let key = Tracked::release_key(&r);
            let digest = r.digest().cloned().expect("graph payloads are by digest");
            if !self.state.warm_since(&key, &digest, self.stale_before)? {
                self.expand_release(&r, key, &origin, out, seen).await?;
            }
        }
        Ok(())
    }

    /// Add the images not warm since `stale_before` (each once) to the plan's sources.
    fn plan_images(
        &self,
        refs: Vec<(Reference, String)>,
        out: &mut Outcome,
        seen: &mut HashSet<Reference>,
    ) -> Result<()> {
        for (r, origin) in refs {
            let warm = match r.digest() {
                Some(d) => self
                    .state
                    .warm_since(&state_key(&r), d, self.stale_before)?,
                None => false,
            };
            if !warm && seen.insert(r.clone()) {
                out.sources.push((r, origin));
            }
        }
        Ok(())
    }
}

/// `catalog C: package P: old → new`, and packages that appeared or went.
fn package_lines(
    catalog: &str,
    before: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (p, new) in now {
        match before.get(p) {
            Some(old) if old != new => {
                out.push(format!("catalog {catalog}: package {p}: {old} → {new}"))
            }
            Some(_) => {}
            None => out.push(format!("catalog {catalog}: package {p}: new ({new})")),
        }
    }
    for (p, old) in before {
        if !now.contains_key(p) {
            out.push(format!(
                "catalog {catalog}: package {p}: removed (was {old})"
            ));
        }
    }
    out
}

/// `channel C A: release V entered the range` / `left the range`.
fn release_lines(
    key: &str,
    before: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (v, payload) in now {
        if !before.contains_key(v) {
            out.push(format!("{key}: release {v} entered the range ({payload})"));
        }
    }
    for (v, payload) in before {
        if !now.contains_key(v) {
            out.push(format!(
                "{key}: release {v} left the range ({payload}; its images stay in the cache)"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn diff_lines_name_old_and_new() {
        let before = map(&[("a", "a.v1"), ("b", "b.v1"), ("gone", "gone.v3")]);
        let now = map(&[("a", "a.v2"), ("b", "b.v1"), ("fresh", "fresh.v1")]);
        assert_eq!(
            package_lines("r.io/idx:v1", &before, &now),
            [
                "catalog r.io/idx:v1: package a: a.v1 → a.v2",
                "catalog r.io/idx:v1: package fresh: new (fresh.v1)",
                "catalog r.io/idx:v1: package gone: removed (was gone.v3)",
            ]
        );
        let lines = release_lines(
            "channel stable-4.20 amd64",
            &map(&[("4.20.1", "p1"), ("4.20.2", "p2")]),
            &map(&[("4.20.2", "p2"), ("4.20.3", "p3")]),
        );
        assert_eq!(
            lines,
            [
                "channel stable-4.20 amd64: release 4.20.3 entered the range (p3)",
                "channel stable-4.20 amd64: release 4.20.1 left the range (p1; its images stay in the cache)",
            ]
        );
    }
}
