//! `copy`, `export`, `import`, `inventory` and `bundle verify`: arguments → settings → plan →
//! executor → report, as the other commands do.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use super::{load, EXIT_INCOMPLETE};
use crate::auth::AuthStore;
use crate::bundle::inventory::Inventory;
use crate::bundle::{segments, BundleManifest};
use crate::cli::{BundleCommand, CopyArgs, ExportArgs, Global, ImportArgs, InventoryArgs};
use crate::exec::destination::{complete_indexes, source_reader, Destination};
use crate::exec::{self, Work};
use crate::job::Job;
use crate::plan::{self, Plan};
use crate::progress::{self, human_bytes, Reporter};
use crate::registry::{Registries, RetryPolicy, Stats};
use crate::report::{Header, ImageReport, RunReport};
use crate::state;

fn retry(global: &Global) -> RetryPolicy {
    RetryPolicy {
        attempts: global.retries.max(1),
        ..RetryPolicy::default()
    }
}

/// Plan a job for copying or exporting: every child of every index included.
async fn plan_for_transfer(
    job: &Job,
    registries: &Registries,
    reporter: &dyn Reporter,
) -> Result<Plan> {
    let mut plan = plan::build(job, registries, reporter).await?;
    complete_indexes(&mut plan, |r| source_reader(job, registries, r)).await?;
    Ok(plan)
}

struct Finish<'a> {
    command: &'a str,
    job: String,
    target: Option<String>,
    started: Instant,
    started_at: i64,
    plan: &'a Plan,
    stats: &'a Stats,
    images: Vec<ImageReport>,
    report: Option<&'a Path>,
    extra: Option<String>,
}

/// Write the report, print the summary, choose the exit status.
fn finish(f: Finish<'_>) -> Result<i32> {
    let summary = f.plan.summary();
    // A copy counts every manifest it pushes, per image.
    let mut planned = summary;
    planned.manifests = f.plan.images.iter().map(|i| i.manifests.len()).sum();
    let report = RunReport::new(
        Header {
            command: f.command.to_string(),
            job: f.job,
            cache: f.target,
            started_at: f.started_at,
            duration_seconds: f.started.elapsed().as_secs_f64(),
        },
        &planned,
        f.stats,
        f.images,
    );
    if let Some(path) = f.report {
        report.write_json(path).with_context(|| "--report")?;
    }
    let s = &report.summary;
    let done = match f.command {
        "export" => format!("{} exported", s.exported),
        _ => format!("{} copied, {} already there", s.copied, s.present),
    };
    eprintln!(
        "{}: {} images ({done}, {} failed); {} unique blobs, {} planned, {} transferred; {} requests, {} retries; {:.1}s{}",
        f.command,
        s.images,
        s.failed,
        s.blobs,
        human_bytes(s.bytes_planned),
        human_bytes(s.bytes_transferred),
        s.requests,
        s.retries,
        report.duration_seconds,
        f.extra.map(|e| format!("\n{e}")).unwrap_or_default(),
    );
    for image in report.failed() {
        eprintln!(
            "error: {}: {}",
            image.reference,
            image.error.as_deref().unwrap_or("failed")
        );
    }
    Ok(if report.failed().next().is_some() {
        EXIT_INCOMPLETE
    } else {
        0
    })
}

pub async fn copy(args: &CopyArgs, global: &Global) -> Result<i32> {
    let (started, started_at) = (Instant::now(), state::now());
    let (job, registries) = load(&args.job, global, args.resolve, None)?;
    let mut dest = Destination::parse(&args.destination.to)?;
    dest.orgs = job.cache.clone();
    let auth = AuthStore::discover(global.authfile.as_deref())?;
    let target = dest.client(
        Some(&job),
        &auth,
        args.destination.to_ca.clone(),
        args.destination.to_insecure,
        retry(global),
        registries.stats.clone(),
    )?;
    let reporter = progress::for_run(global.quiet);
    let plan = plan_for_transfer(&job, &registries, reporter.as_ref()).await?;
    let work = Work {
        job: &job,
        registries: &registries,
        state: None,
        reporter: reporter.as_ref(),
        jobs: args.jobs.unwrap_or(job.concurrency).max(1),
    };
    let images = exec::copy::copy(&work, &plan, &dest, &target).await?;
    let dir =
        crate::cluster::after_run::dir(args.cluster_resources.as_deref(), args.report.as_deref());
    if let Some(dir) = dir {
        let placed = Placed {
            plan: &plan,
            images: &images,
            dest: &dest,
            to: &args.destination.to,
            target: &target,
        };
        write_cluster_resources(Some((&job, &registries)), placed, &dir).await?;
    }
    finish(Finish {
        command: "copy",
        job: args.job.display().to_string(),
        target: Some(args.destination.to.clone()),
        started,
        started_at,
        plan: &plan,
        stats: &registries.stats,
        images,
        report: args.report.as_deref(),
        extra: None,
    })
}

pub async fn export(args: &ExportArgs, global: &Global) -> Result<i32> {
    let (started, started_at) = (Instant::now(), state::now());
    let (job, registries) = load(&args.job, global, args.resolve, None)?;
    let have = match &args.have {
        Some(p) => Some(Inventory::load(p)?),
        None => None,
    };
    let reporter = progress::for_run(global.quiet);
    let plan = plan_for_transfer(&job, &registries, reporter.as_ref()).await?;
    let work = Work {
        job: &job,
        registries: &registries,
        state: None,
        reporter: reporter.as_ref(),
        jobs: job.concurrency.max(1),
    };
    let options = exec::export::ExportOptions {
        dir: &args.output,
        segment_size: args.segment_size.unwrap_or(u64::MAX),
        have: have.as_ref(),
    };
    let (images, bundle) = exec::export::export(&work, &plan, &options).await?;
    let compressed: u64 = bundle.segments.iter().map(|s| s.size).sum();
    let extra = format!(
        "bundle {}: {} segment(s), {} compressed ({} tar) for {} blobs and {} manifests inside ({}); {} blobs left out as present at the far site",
        args.output.display(),
        bundle.segments.len(),
        human_bytes(compressed),
        human_bytes(bundle.tar_bytes),
        bundle.blobs.len(),
        bundle.manifests.len(),
        human_bytes(bundle.bytes_inside()),
        bundle.present.len(),
    );
    finish(Finish {
        command: "export",
        job: args.job.display().to_string(),
        target: Some(args.output.display().to_string()),
        started,
        started_at,
        plan: &plan,
        stats: &registries.stats,
        images,
        report: args.report.as_deref(),
        extra: Some(extra),
    })
}

/// What a copy or import hands to the cluster side: where it pushed, and with what.
struct Placed<'a> {
    plan: &'a Plan,
    images: &'a [ImageReport],
    dest: &'a Destination,
    to: &'a str,
    target: &'a Arc<crate::registry::RegistryClient>,
}

/// Filtered catalogs (a copy, which has the job) and the cluster resources for what a copy or
/// import placed at `dest`.
async fn write_cluster_resources(
    job: Option<(&Job, &Registries)>,
    placed: Placed<'_>,
    dir: &Path,
) -> Result<()> {
    let dest = placed.dest;
    let mirror_of =
        |r: &crate::reference::Reference| format!("{}/{}", dest.host, dest.repository(r));
    let repository_of = |r: &crate::reference::Reference| dest.repository(r);
    crate::cluster::after_run::write(&crate::cluster::after_run::AfterRun {
        job: job.map(|(j, _)| j),
        plan: placed.plan,
        reports: placed.images,
        destination: placed.to,
        mirror_of: &mirror_of,
        dir,
        rebuild: job.map(|(_, registries)| {
            (
                registries,
                crate::cluster::catalog_image::Target {
                    client: placed.target.clone(),
                    host: &dest.host,
                    repository_of: &repository_of,
                },
            )
        }),
    })
    .await
    .context("--cluster-resources")?;
    Ok(())
}

/// `prewarm prune`: plan the job, list what the destination holds under its mapping that the
/// plan no longer needs, delete it with `--yes`.
pub async fn prune(args: &crate::cluster::prune::PruneArgs, global: &Global) -> Result<i32> {
    use crate::cluster::prune;
    let (job, registries) = load(&args.job, global, None, None)?;
    let mut dest = Destination::parse(&args.destination.to)?;
    dest.orgs = job.cache.clone();
    let auth = AuthStore::discover(global.authfile.as_deref())?;
    let target = dest.client(
        Some(&job),
        &auth,
        args.destination.to_ca.clone(),
        args.destination.to_insecure,
        retry(global),
        registries.stats.clone(),
    )?;
    let reporter = progress::for_run(global.quiet);
    let plan = plan_for_transfer(&job, &registries, reporter.as_ref()).await?;
    let repository_of = |r: &crate::reference::Reference| dest.repository(r);
    let mut needed = prune::Needed::of(&plan, &repository_of)?;
    prune::keep_built(&job, &target, &mut needed, &repository_of).await?;
    let candidates = prune::find(&target, &needed, &repository_of).await?;
    let failed = prune::apply(&target, &dest.host, &candidates, args.yes).await?;
    eprintln!(
        "prune: {} manifest(s) under {} no longer planned{}",
        candidates.len(),
        args.destination.to,
        if args.yes {
            format!(", {} deleted", candidates.len() - failed)
        } else {
            " (dry run: --yes deletes them)".to_string()
        }
    );
    Ok(if failed > 0 { EXIT_INCOMPLETE } else { 0 })
}

/// A job with nothing in it, for commands that read no job file.
fn empty_job() -> Result<Job> {
    Job::parse("{}", Path::new("(no job)"))
}

pub async fn import(args: &ImportArgs, global: &Global) -> Result<i32> {
    let (started, started_at) = (Instant::now(), state::now());
    let dest = Destination::parse(&args.destination.to)?;
    let bundle = BundleManifest::load(&args.dir)?;
    let auth = AuthStore::discover(global.authfile.as_deref())?;
    let job = Arc::new(empty_job()?);
    let registries = Registries::new(job.clone(), auth.clone(), retry(global));
    let target = dest.client(
        None,
        &auth,
        args.destination.to_ca.clone(),
        args.destination.to_insecure,
        retry(global),
        registries.stats.clone(),
    )?;
    let reporter = progress::for_run(global.quiet);
    let work = Work {
        job: &job,
        registries: &registries,
        state: None,
        reporter: reporter.as_ref(),
        jobs: args.jobs.max(1),
    };
    let plan = exec::import::plan_of(&bundle, &args.dir)?;
    let images = exec::import::import(&work, &bundle, &args.dir, &dest, &target).await?;
    let dir =
        crate::cluster::after_run::dir(args.cluster_resources.as_deref(), args.report.as_deref());
    if let Some(dir) = dir {
        let placed = Placed {
            plan: &plan,
            images: &images,
            dest: &dest,
            to: &args.destination.to,
            target: &target,
        };
        write_cluster_resources(None, placed, &dir).await?;
    }
    finish(Finish {
        command: "import",
        job: args.dir.display().to_string(),
        target: Some(args.destination.to.clone()),
        started,
        started_at,
        plan: &plan,
        stats: &registries.stats,
        images,
        report: args.report.as_deref(),
        extra: None,
    })
}

pub async fn inventory(args: &InventoryArgs, global: &Global) -> Result<i32> {
    let dest = Destination::parse(&args.registry)
        .map_err(|e| anyhow::anyhow!("{}", format!("{e:#}").replace("--to", "--registry")))?;
    let auth = AuthStore::discover(global.authfile.as_deref())?;
    let job = match &args.job {
        Some(p) => Some(Job::load(p)?),
        None => None,
    };
    let client = dest.client(
        job.as_ref(),
        &auth,
        args.ca.clone(),
        args.insecure,
        retry(global),
        Arc::new(Stats::default()),
    )?;
    let mut repos = args.repos.clone();
    let mut roots = Vec::new();
    if let Some(job) = &job {
        let mut d = dest.clone();
        d.orgs = job.cache.clone();
        for (r, _) in job.references()? {
            let repo = d.repository(&r);
            if let Some(digest) = r.digest() {
                roots.push((repo.clone(), digest.clone()));
            }
            if args.repos.is_empty() && !repos.contains(&repo) {
                repos.push(repo);
            }
        }
    }
    if repos.is_empty() {
        {
            repos = client.catalog().await?;
            if let Some(p) = &dest.prefix {
                repos.retain(|r| r.starts_with(&format!("{p}/")));
            }
        }
    }
    let inv = Inventory::take(&client, &repos, &roots).await?;
    let text = serde_json::to_vec_pretty(&inv)?;
    match &args.output {
        Some(p) => crate::report::write_atomically(p, &text)?,
        None => println!("{}", String::from_utf8_lossy(&text)),
    }
    let blobs: std::collections::BTreeSet<_> = inv
        .repositories
        .values()
        .flat_map(|r| r.blobs.keys())
        .collect();
    eprintln!(
        "inventory of {}: {} repositories, {} manifests, {} blobs",
        args.registry,
        inv.repositories.len(),
        inv.repositories
            .values()
            .map(|r| r.manifests.len())
            .sum::<usize>(),
        blobs.len()
    );
    Ok(0)
}

pub async fn bundle(command: &BundleCommand, _global: &Global) -> Result<i32> {
    match command {
        BundleCommand::Verify { dir } => {
            let bundle = BundleManifest::load(dir)?;
            let problems = segments::verify(dir, &bundle.segments);
            for (name, problem) in &problems {
                eprintln!("error: {}: segment {name}: {problem}", dir.display());
            }
            let total: u64 = bundle.segments.iter().map(|s| s.size).sum();
            if problems.is_empty() {
                eprintln!(
                    "bundle {}: {} segment(s), {}, all whole; {} images, {} blobs, {} manifests",
                    dir.display(),
                    bundle.segments.len(),
                    human_bytes(total),
                    bundle.images.len(),
                    bundle.blobs.len(),
                    bundle.manifests.len()
                );
                Ok(0)
            } else {
                eprintln!(
                    "bundle {}: {} of {} segment(s) bad: re-send those files",
                    dir.display(),
                    problems.len(),
                    bundle.segments.len()
                );
                Ok(EXIT_INCOMPLETE)
            }
        }
    }
}
