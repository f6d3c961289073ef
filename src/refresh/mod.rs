//! `prewarm refresh`: keep a cache fresh and hot from cron.
//!
//! Each tag is re-resolved with one HEAD upstream (a GET only where the registry sends no
//! digest); references by digest and tags an immutability rule covers ([`rules`]) are never
//! re-checked. The state ([`crate::history`]) says what each reference resolved to last time
//! and when it was last warmed; only images whose digest changed, that are new, or whose last
//! warm is older than `--stale-after` are planned (pinned to the digest just seen, so the plan
//! does not resolve them again) and warmed with the warm executor. Releases, channels and
//! catalogs are re-checked as wholes ([`ocp`]): a HEAD per tag, the graph read again, and only
//! what moved read and planned. A spent rate budget stops the run cleanly: what was not
//! checked or warmed is listed as deferred and is picked up by the next run, because nothing
//! about it was recorded as done.

pub mod ocp;
pub use crate::immutable as rules;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::args::Global;
use crate::history::Known;
use crate::job::{Job, ResolveVia};
use crate::metrics::RefreshFigures;
use crate::plan;
use crate::progress;
use crate::reference::{Digest, Reference};
use crate::registry::{Registries, RegistryClient, RegistryError};
use crate::report::{ImageReport, ImageStatus, RunReport};
use crate::run::{Finish, Run, Summary};
use crate::shard::{self, Shard};
use crate::state;
use crate::transfer::{self, Work};

/// Arguments of `prewarm refresh` (built by the CLI; `--report`, `--metrics` and `--state`
/// are the [`Run`]'s).
#[derive(Debug, Clone)]
pub struct Options {
    pub job: PathBuf,
    pub stale_after: Duration,
    pub dry_run: bool,
    pub jobs: Option<usize>,
    pub shard: Option<Shard>,
}

/// A tag moved (or a reference was seen for the first time: `old` is null).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    pub reference: String,
    pub old: Option<String>,
    pub new: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deferred {
    pub reference: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpentBudget {
    pub registry: String,
    pub reason: String,
}

/// The `refresh` object of a refresh's JSON report, beside the run's own fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RefreshSection {
    pub dry_run: bool,
    pub stale_after_seconds: u64,
    pub shard: Option<String>,
    /// Source references in the job (`images`, `image_lists`).
    pub references: usize,
    /// Releases, channels and catalogs in the job (each re-checked as a whole).
    #[serde(default)]
    pub tracked_sources: usize,
    /// What changed inside them, as printed: `catalog C: package P: old → new`, releases
    /// entering or leaving a channel's range.
    #[serde(default)]
    pub diff: Vec<String>,
    /// Re-resolved upstream (HEAD) this run.
    pub checked: usize,
    /// Not re-checked: pinned by digest, or a tag an immutability rule covers.
    pub skipped: usize,
    /// Tags whose digest moved, and references seen for the first time.
    pub changes: Vec<Change>,
    /// Unchanged, but last warmed longer ago than `stale_after_seconds` (or never).
    pub stale: Vec<String>,
    /// Images planned for warming (changed, new or stale).
    pub to_warm: usize,
    /// Left for the next run because a rate budget ran out.
    pub deferred: Vec<Deferred>,
    pub budgets_spent: Vec<SpentBudget>,
}

pub use crate::duration::parse_duration;

/// How one reference is known to resolve this run.
enum Check {
    /// By digest, or an immutable tag whose digest the state knows: no request.
    Skip(Digest),
    /// HEAD upstream.
    Head,
}

struct Entry {
    key: String,
    reference: Reference,
    origin: String,
    previous: Option<Known>,
    current: Option<Digest>,
    checked: bool,
}

/// The client and repository a tag is re-resolved against (the job's `resolve`).
fn reader(
    job: &Job,
    registries: &Registries,
    r: &Reference,
) -> Result<(Arc<RegistryClient>, String)> {
    match job.resolve {
        ResolveVia::Source => Ok((registries.client(r.registry())?, r.repository().to_string())),
        ResolveVia::Cache => {
            let cached = job.cache()?.cache_reference(r);
            Ok((
                registries.client(cached.registry())?,
                cached.repository().to_string(),
            ))
        }
    }
}

/// HEAD the tag; GET only where the registry sends no digest.
async fn head(job: &Job, registries: &Registries, r: &Reference) -> Result<Digest> {
    let (client, repository) = reader(job, registries, r)?;
    let tag = r.tag().unwrap_or("latest");
    Ok(match client.head_manifest(&repository, tag).await? {
        Some((d, _, _)) => d,
        None => client.get_manifest(&repository, tag).await?.digest,
    })
}

fn budget_reason(e: &anyhow::Error) -> Option<String> {
    RegistryError::budget_spent_in(e).map(|e| e.to_string())
}

/// Refresh `job` within `run` (which holds the state): the report for [`Run::finish`].
pub async fn refresh(
    opts: &Options,
    job: &Job,
    registries: &Registries,
    run: &Run,
    global: &Global,
) -> Result<Finish> {
    let mut job_run = job.clone();
    if let Some(j) = opts.jobs {
        job_run.concurrency = j.max(1);
    }
    let job_run = job_run;
    let cache_host = job.cache()?.host.clone();
    let state = run.state().context("refresh keeps a state")?;
    let reporter = progress::for_run(global.quiet);
    let now = state::now();
    let stale_before = now - opts.stale_after.as_secs() as i64;

    // 1. What each reference resolves to: from the state, or one HEAD upstream.
    let mut entries = Vec::new();
    let mut checks = Vec::new();
    for (reference, origin) in job.references()? {
        let key = reference.to_string();
        let previous = state.current_digest(&key)?;
        let check = match (reference.digest(), &previous) {
            (Some(d), _) => Check::Skip(d.clone()),
            (None, Some(p)) if job.refresh.immutable(&reference).is_some() => {
                Check::Skip(p.digest.clone())
            }
            _ => Check::Head,
        };
        let current = match &check {
            Check::Skip(d) => Some(d.clone()),
            Check::Head => None,
        };
        checks.push(matches!(check, Check::Head));
        entries.push(Entry {
            key,
            reference,
            origin,
            previous,
            current,
            checked: false,
        });
    }
    let to_head: Vec<usize> = (0..entries.len()).filter(|&i| checks[i]).collect();
    reporter.phase("check", to_head.len() as u64, 0);
    let heads: Vec<(usize, Result<Digest>)> = futures::stream::iter(to_head)
        .map(|i| {
            let (job, registries, reporter, r) =
                (&job_run, registries, &reporter, &entries[i].reference);
            async move {
                let d = head(job, registries, r).await;
                reporter.item_done(&r.to_string(), d.is_ok());
                (i, d)
            }
        })
        .buffer_unordered(job_run.concurrency.max(1))
        .collect()
        .await;
    reporter.finish_phase();

    let mut section = RefreshSection {
        dry_run: opts.dry_run,
        stale_after_seconds: opts.stale_after.as_secs(),
        shard: opts.shard.map(|s| s.to_string()),
        references: entries.len(),
        ..RefreshSection::default()
    };
    let mut failed: Vec<ImageReport> = Vec::new();
    for (i, result) in heads {
        let e = &mut entries[i];
        e.checked = true;
        match result {
            Ok(d) => e.current = Some(d),
            Err(err) => match budget_reason(&err) {
                Some(reason) => section.deferred.push(Deferred {
                    reference: e.key.clone(),
                    reason,
                }),
                None => failed.push(ImageReport {
                    reference: e.key.clone(),
                    digest: None,
                    status: ImageStatus::Failed,
                    bytes: 0,
                    origin: e.origin.clone(),
                    error: Some(format!("{err:#}")),
                    warnings: Vec::new(),
                    missing: Vec::new(),
                    budget_spent: None,
                }),
            },
        }
    }
    section.checked = entries.iter().filter(|e| e.checked).count();
    section.skipped = entries.len() - section.checked;

    // 1b. Releases, channels and catalogs: a HEAD per tag; read again only what moved.
    let ocp = ocp::Ctx {
        job: &job_run,
        registries,
        state,
        stale_before,
    }
    .check()
    .await?;
    section.tracked_sources = ocp.tracked_sources;
    section.checked += ocp.checked;
    section.skipped += ocp.skipped;
    section.changes.extend(ocp.changes);
    section.diff = ocp.lines;
    section.deferred.extend(ocp.deferred);
    failed.extend(ocp.failures);
    if !opts.dry_run {
        for t in &ocp.tracked {
            state.record_tracked(t, false)?;
        }
    }

    // 2. What changed, what is stale: the plan's sources, pinned to the digest just seen.
    let mut sources = Vec::new();
    let mut key_of: HashMap<String, (String, Digest)> = HashMap::new();
    for e in &entries {
        let Some(current) = &e.current else { continue };
        let moved = e.previous.as_ref().map(|p| &p.digest) != Some(current);
        if moved {
            section.changes.push(Change {
                reference: e.key.clone(),
                old: e.previous.as_ref().map(|p| p.digest.to_string()),
                new: current.to_string(),
            });
        }
        let fresh = !moved
            && e.previous
                .as_ref()
                .and_then(|p| p.last_warmed)
                .is_some_and(|at| at >= stale_before);
        if !moved && !fresh {
            section.stale.push(e.key.clone());
        }
        if !opts.dry_run {
            state.saw_digest(&e.key, current)?;
        }
        if !fresh {
            let pinned = e.reference.with_digest(current.clone());
            key_of.insert(pinned.to_string(), (e.key.clone(), current.clone()));
            sources.push((pinned, e.origin.clone()));
        }
    }
    sources.extend(ocp.sources);
    section.to_warm = sources.len();
    for c in &section.changes {
        match &c.old {
            Some(old) => println!("changed  {}  {old} → {}", c.reference, c.new),
            None => println!("new      {}  {}", c.reference, c.new),
        }
    }
    for s in &section.stale {
        println!("stale    {s}");
    }
    for line in &section.diff {
        println!("{line}");
    }
    eprintln!(
        "refresh: {} references and {} releases/channels/catalogs, {} checked upstream, {} skipped (by digest or immutable), {} changed or new, {} stale; {} {}",
        section.references,
        section.tracked_sources,
        section.checked,
        section.skipped,
        section.changes.len(),
        section.stale.len(),
        section.to_warm,
        if opts.dry_run { "would be warmed (dry run)" } else { "to warm" }
    );

    // 3. Warm exactly those.
    let mut images = Vec::new();
    let mut warm = std::collections::HashSet::new();
    let mut plan_summary = plan::Plan::default().summary();
    let totals = transfer::Totals::default();
    if !opts.dry_run && !sources.is_empty() {
        let mut p = plan::build_from(&job_run, registries, sources, reporter.as_ref()).await?;
        if let Some(s) = opts.shard {
            p = shard::shard_plan(&p, s);
        }
        plan_summary = p.summary();
        let work = Work {
            job: &job_run,
            registries,
            state: Some(state),
            reporter: reporter.as_ref(),
            jobs: job_run.concurrency.max(1),
            totals: &totals,
        };
        let reports = transfer::warm::warm(&work, &p).await?;
        crate::history::record_plan(state, &p, Some(&reports))?;
        warm.extend(
            p.images
                .iter()
                .zip(&reports)
                .filter(|(_, r)| matches!(r.status, ImageStatus::Warmed | ImageStatus::Cached))
                .map(|(i, _)| i.source.clone()),
        );
        images = shard::drop_carriers(&p, reports);
    }
    // A release or catalog is warm when every image it needed this run is.
    if !opts.dry_run {
        for t in &ocp.tracked {
            if t.images.iter().all(|r| warm.contains(r)) {
                state.record_tracked(t, true)?;
            }
        }
    }
    // A request refused by a spent budget is left for next time, not a failure.
    let (deferred, kept): (Vec<ImageReport>, Vec<ImageReport>) =
        images.into_iter().partition(|r| r.budget_spent.is_some());
    for d in deferred {
        let reference = key_of
            .get(&d.reference)
            .map(|(k, _)| k.clone())
            .unwrap_or(d.reference);
        section.deferred.push(Deferred {
            reference,
            reason: d.error.unwrap_or_default(),
        });
    }
    let mut images = kept;
    images.extend(failed);
    section.budgets_spent = registries
        .budgets_spent()
        .into_iter()
        .map(|(registry, reason)| SpentBudget { registry, reason })
        .collect();

    let header = run.header(opts.job.display().to_string(), Some(cache_host));
    let report =
        RunReport::new(header, &plan_summary, &registries.stats, images).with_moved(totals.get());
    let mut finish = Finish::new(report, Summary::Cache);
    finish.dry_run = opts.dry_run;
    finish
        .recorded
        .insert("changed".into(), section.changes.len().into());
    finish
        .recorded
        .insert("deferred".into(), section.deferred.len().into());
    finish.budgets_spent = section
        .budgets_spent
        .iter()
        .map(|b| b.registry.clone())
        .collect();
    finish.refresh = Some(RefreshFigures {
        checked: section.checked as u64,
        changed: section.changes.len() as u64,
        skipped: section.skipped as u64,
        deferred: section.deferred.len() as u64,
    });
    if !section.deferred.is_empty() {
        for b in &section.budgets_spent {
            finish
                .after
                .push(format!("budget: registry `{}`: {}", b.registry, b.reason));
        }
        // The report lists every one; a cron log needs the count and a few names.
        const SHOWN: usize = 5;
        let deferred = &section.deferred;
        let mut names: Vec<&str> = deferred
            .iter()
            .take(SHOWN)
            .map(|d| d.reference.as_str())
            .collect();
        let more = deferred.len().saturating_sub(SHOWN).to_string() + " more (see the report)";
        if deferred.len() > SHOWN {
            names.push(&more);
        }
        finish.after.push(format!(
            "budget: stopped cleanly; {} references left for the next run: {}",
            deferred.len(),
            names.join(", ")
        ));
    }
    finish
        .sections
        .insert("refresh".into(), serde_json::to_value(&section)?);
    Ok(finish)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("1d12h").unwrap(),
            Duration::from_secs(129600)
        );
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert!(parse_duration("12").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("3x").is_err());
    }
}
