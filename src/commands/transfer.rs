//! `copy`, `export`, `import`, `inventory` and `bundle verify`: arguments → settings → plan →
//! executor → report, as the other commands do.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use super::{load, policy, EXIT_INCOMPLETE};
use crate::args::{
    BundleCommand, CopyArgs, ExportArgs, ExportFormat, Global, ImportArgs, InventoryArgs,
    ShippedArgs,
};
use crate::auth::AuthStore;
use crate::bundle::chain;
use crate::bundle::inventory::Inventory;
use crate::bundle::{segments, BundleManifest};
use crate::job::Job;
use crate::plan::{self, Plan};
use crate::progress::{self, human_bytes, Reporter};
use crate::registry::{Registries, Stats, TransportConfig};
use crate::report::{Header, ImageReport, RunReport};
use crate::state::{self, ShippedBundle, ShippedItem, State};
use crate::transfer::destination::{complete_indexes, source_reader, Destination};
use crate::transfer::layout_import::ImportSource;
use crate::transfer::{self, Work};

/// The state database of `--state` (or the default one).
fn open_state(args: &ShippedArgs) -> Result<State> {
    let path = args.state.clone().unwrap_or_else(State::default_path);
    State::open(&path)
}

/// Record what a run shipped to `site`; a line saying how much.
fn record_shipped(
    args: &ShippedArgs,
    site: &str,
    bundle: Option<&str>,
    items: &[ShippedItem],
) -> Result<()> {
    let state = open_state(args)?;
    state
        .record_shipped_items(site, bundle, items)
        .with_context(|| format!("state {}: recording what was shipped", state.path.display()))?;
    tracing::info!("recorded {} digests shipped to {site}", items.len());
    Ok(())
}

/// The job's transport with the destination of `--to` added (its TLS and address from the job
/// when the job names the host, else `--to-ca`/`--to-insecure`), and the destination's client:
/// one policy, budget and stats for source and destination alike.
fn with_destination(
    registries: Registries,
    dest: &Destination,
    job: &Job,
    args: &crate::args::DestinationArgs,
) -> Result<(Registries, std::sync::Arc<crate::registry::RegistryClient>)> {
    let registries = registries.with_endpoint(
        &dest.host,
        dest.endpoint(Some(job), args.to_ca.clone(), args.to_insecure),
    );
    let target = registries.client(&dest.host)?;
    Ok((registries, target))
}

/// copy and import: the content is at the destination whatever the state says, so a state
/// that cannot be written (in use by a newer prewarm, read-only) is a warning — unless the run
/// named its site or state, which then must hold the record.
fn record_or_warn(
    args: &ShippedArgs,
    site: &str,
    bundle: Option<&str>,
    items: &[ShippedItem],
) -> Result<()> {
    match record_shipped(args, site, bundle, items) {
        Err(e) if args.site.is_none() && args.state.is_none() => {
            eprintln!("warning: what was shipped to {site} is not recorded: {e:#}");
            Ok(())
        }
        other => other,
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
    totals: &'a transfer::Totals,
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
    )
    .with_moved(f.totals.get());
    if let Some(path) = f.report {
        report.write_json(path).with_context(|| "--report")?;
    }
    let s = &report.summary;
    let done = match f.command {
        "export" => format!("{} exported", s.exported),
        _ => format!("{} copied, {} already there", s.copied, s.present),
    };
    eprintln!(
        "{}: {} images ({done}, {} failed); {} unique blobs ({} planned), {} blob transfers moved {}, {} transferred in all; {} requests, {} retries; {:.1}s{}",
        f.command,
        s.images,
        s.failed,
        s.blobs,
        human_bytes(s.bytes_planned),
        s.transfers,
        human_bytes(s.bytes_moved),
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
    let (registries, target) = with_destination(registries, &dest, &job, &args.destination)?;
    let reporter = progress::for_run(global.quiet);
    let plan = plan_for_transfer(&job, &registries, reporter.as_ref()).await?;
    let totals = transfer::Totals::default();
    let work = Work {
        job: &job,
        registries: &registries,
        state: None,
        reporter: reporter.as_ref(),
        jobs: args.jobs.unwrap_or(job.concurrency).max(1),
        totals: &totals,
    };
    let images = transfer::copy::copy(&work, &plan, &dest, &target).await?;
    let placed = Placed {
        plan: &plan,
        images: &images,
        dest: &dest,
        to: &args.destination.to,
        target: &target,
    };
    let outputs = (args.cluster_resources.as_deref(), args.report.as_deref());
    after_push(
        Some((&job, &registries)),
        placed,
        outputs,
        &args.shipped,
        None,
    )
    .await?;
    finish(Finish {
        command: "copy",
        job: args.job.display().to_string(),
        target: Some(args.destination.to.clone()),
        started,
        started_at,
        plan: &plan,
        stats: &registries.stats,
        totals: &totals,
        images,
        report: args.report.as_deref(),
        extra: None,
    })
}

pub async fn export(args: &ExportArgs, global: &Global) -> Result<i32> {
    let (started, started_at) = (Instant::now(), state::now());
    let oci_dir = args.format == ExportFormat::OciDir;
    if oci_dir
        && (args.segment_size.is_some()
            || args.have.is_some()
            || args.since_last.is_some()
            || args.shipped.site.is_some())
    {
        anyhow::bail!(
            "--segment-size, --have, --since-last and --site apply to bundles, not to --format oci-dir"
        );
    }
    let (job, registries) = load(&args.job, global, args.resolve, None)?;
    let site = args.since_last.as_deref().or(args.shipped.site.as_deref());
    // `--since-last SITE`: what earlier bundles carried to SITE is left out, and the last
    // of them is this bundle's base.
    let (have, base) = match (&args.have, &args.since_last) {
        (Some(p), _) => (Some(Inventory::load(p)?), None),
        (None, Some(site)) => {
            let state = open_state(&args.shipped)?;
            match state.last_bundle(site)? {
                Some(last) => {
                    let items = state.shipped_to(site)?;
                    (
                        Some(Inventory::from_shipped(site, &items)),
                        Some(crate::bundle::BaseBundle {
                            id: last.id,
                            digest: last.digest,
                        }),
                    )
                }
                None => {
                    eprintln!(
                        "export: no earlier bundle for site `{site}` in {}: writing a full bundle",
                        state.path.display()
                    );
                    (None, None)
                }
            }
        }
        (None, None) => (None, None),
    };
    let reporter = progress::for_run(global.quiet);
    let plan = plan_for_transfer(&job, &registries, reporter.as_ref()).await?;
    let totals = transfer::Totals::default();
    let work = Work {
        job: &job,
        registries: &registries,
        state: None,
        reporter: reporter.as_ref(),
        jobs: args.jobs.unwrap_or(job.concurrency).max(1),
        totals: &totals,
    };
    let (images, extra) = if oci_dir {
        let images = transfer::export::export_layout(&work, &plan, &args.output).await?;
        let extra = format!("OCI image layout {}", args.output.display());
        (images, extra)
    } else {
        let options = transfer::export::ExportOptions {
            dir: &args.output,
            segment_size: args.segment_size.unwrap_or(u64::MAX),
            have: have.as_ref(),
            base: base.clone(),
        };
        let (images, bundle) = transfer::export::export(&work, &plan, &options).await?;
        if let Some(site) = site {
            let (_, digest) = BundleManifest::load_with_digest(&args.output)?;
            let state = open_state(&args.shipped)?;
            state.record_bundle(
                site,
                &ShippedBundle {
                    id: bundle.id.clone(),
                    digest,
                    dir: args.output.display().to_string(),
                    at: bundle.created_at,
                },
            )?;
            record_shipped(
                &args.shipped,
                site,
                Some(&bundle.id),
                &chain::shipped_by_bundle(&bundle),
            )?;
        }
        let compressed: u64 = bundle.segments.iter().map(|s| s.size).sum();
        let extra = format!(
            "bundle {} ({}): {} segment(s), {} compressed ({} tar) for {} blobs and {} manifests inside ({}); {} blobs and {} manifests left out as present at the far site{}",
            args.output.display(),
            bundle.id,
            bundle.segments.len(),
            human_bytes(compressed),
            human_bytes(bundle.tar_bytes),
            bundle.blobs.len(),
            bundle.manifests.len(),
            human_bytes(bundle.bytes_inside()),
            bundle.present.len(),
            bundle.present_manifests.len(),
            bundle
                .base
                .as_ref()
                .map(|b| format!("; builds on bundle {} ({})", b.id, b.digest))
                .unwrap_or_default(),
        );
        (images, extra)
    };
    finish(Finish {
        command: "export",
        job: args.job.display().to_string(),
        target: Some(args.output.display().to_string()),
        started,
        started_at,
        plan: &plan,
        stats: &registries.stats,
        totals: &totals,
        images,
        report: args.report.as_deref(),
        extra: Some(extra),
    })
}

/// What a copy or import hands to the cluster side: where it pushed, and with what.
#[derive(Clone, Copy)]
struct Placed<'a> {
    plan: &'a Plan,
    images: &'a [ImageReport],
    dest: &'a Destination,
    to: &'a str,
    target: &'a Arc<crate::registry::RegistryClient>,
}

/// What copy and import do once their images are pushed: the cluster resources for what was
/// placed (into `--cluster-resources`, else beside `--report`), then the record of what was
/// shipped to the site (`--site`, default the `--to` value).
async fn after_push(
    job: Option<(&Job, &Registries)>,
    placed: Placed<'_>,
    (cluster_resources, report): (Option<&Path>, Option<&Path>),
    shipped: &ShippedArgs,
    bundle: Option<&str>,
) -> Result<()> {
    if let Some(dir) = crate::cluster::after_run::dir(cluster_resources, report) {
        write_cluster_resources(job, placed, &dir).await?;
    }
    let site = shipped.site.as_deref().unwrap_or(placed.to);
    record_or_warn(
        shipped,
        site,
        bundle,
        &chain::shipped_by_plan(placed.plan, placed.images, placed.dest),
    )
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
    let (registries, target) = with_destination(registries, &dest, &job, &args.destination)?;
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
    let source = transfer::layout_import::open(&args.dir, args.repository.as_deref())?;
    let auth = AuthStore::discover(global.authfile.as_deref())?;
    let endpoint = dest.endpoint(
        None,
        args.destination.to_ca.clone(),
        args.destination.to_insecure,
    );
    let registries = Registries::new(
        TransportConfig::new(auth, policy(global)).with_endpoint(&dest.host, endpoint),
    );
    let target = registries.client(&dest.host)?;
    // The executors take a job; an import has none.
    let job = Arc::new(empty_job()?);
    let reporter = progress::for_run(global.quiet);
    let totals = transfer::Totals::default();
    let work = Work {
        job: &job,
        registries: &registries,
        state: None,
        reporter: reporter.as_ref(),
        jobs: args.jobs.max(1),
        totals: &totals,
    };
    let (plan, images) = match &source {
        ImportSource::Layout(source, plan) => {
            let images = transfer::layout_import::import(&work, source, plan, &dest, &target);
            (plan.clone(), images.await)
        }
        ImportSource::Bundle(bundle) => {
            let plan = transfer::import::plan_of(bundle, &args.dir)?;
            let ticker = crate::bundle::progress::start("import", global.quiet);
            let images = transfer::import::import(&work, bundle, &args.dir, &dest, &target);
            let images = images.await?;
            drop(ticker);
            (plan, images)
        }
    };
    let placed = Placed {
        plan: &plan,
        images: &images,
        dest: &dest,
        to: &args.destination.to,
        target: &target,
    };
    let outputs = (args.cluster_resources.as_deref(), args.report.as_deref());
    let id = match &source {
        ImportSource::Bundle(bundle) => Some(bundle.id.as_str()),
        ImportSource::Layout(..) => None,
    };
    after_push(None, placed, outputs, &args.shipped, id).await?;
    finish(Finish {
        command: "import",
        job: args.dir.display().to_string(),
        target: Some(args.destination.to.clone()),
        started,
        started_at,
        plan: &plan,
        stats: &registries.stats,
        totals: &totals,
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
    let config = match &job {
        Some(j) => j.transport(auth, policy(global)),
        None => TransportConfig::new(auth, policy(global)),
    };
    let endpoint = dest.endpoint(job.as_ref(), args.ca.clone(), args.insecure);
    let registries = Registries::new(config.with_endpoint(&dest.host, endpoint));
    let client = registries.client(&dest.host)?;
    let mut d = dest.clone();
    d.orgs = job.as_ref().and_then(|j| j.cache.clone());
    let inv = if let Some(job) = &job {
        // The job's plan, asked for by digest where `import --to` puts each image.
        let reporter = progress::for_run(global.quiet);
        let plan = plan_for_transfer(job, &registries, reporter.as_ref()).await?;
        Inventory::of_plan(&client, &d, &plan, args.jobs).await?
    } else if let Some(dir) = &args.bundle {
        let bundle = BundleManifest::load(dir)?;
        let plan = transfer::import::plan_of(&bundle, dir)?;
        Inventory::of_plan(&client, &d, &plan, args.jobs).await?
    } else {
        let mut repos = args.repos.clone();
        if repos.is_empty() {
            repos = client.catalog().await?;
            if let Some(p) = &dest.prefix {
                repos.retain(|r| r.starts_with(&format!("{p}/")));
            }
        }
        Inventory::take(&client, &repos, &[]).await?
    };
    let text = serde_json::to_vec_pretty(&inv)?;
    match &args.output {
        Some(p) => crate::fsutil::write_atomically(p, &text)?,
        None => println!("{}", String::from_utf8_lossy(&text)),
    }
    let blobs: std::collections::BTreeSet<_> = inv
        .repositories
        .values()
        .flat_map(|r| r.blobs.keys())
        .collect();
    let images = if inv.images.is_empty() {
        String::new()
    } else {
        format!(
            "; {} of {} planned images whole",
            inv.images.values().filter(|i| i.whole).count(),
            inv.images.len()
        )
    };
    eprintln!(
        "inventory of {}: {} repositories, {} manifests, {} blobs{images}",
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
