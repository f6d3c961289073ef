//! `copy`, `export`, `import`, `inventory`, `prune` and `bundle verify`: arguments → settings
//! → plan → executor inside a [`Run`], as the other commands do.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::{load, policy};
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
use crate::registry::{Registries, TransportConfig};
use crate::report::{ImageReport, RunReport};
use crate::run::{Finish, Keep, Run, Summary};
use crate::state::{ShippedBundle, ShippedItem, State};
use crate::transfer::destination::{complete_indexes, source_reader, Destination};
use crate::transfer::layout_import::ImportSource;
use crate::transfer::{self, Work};

/// The state copy and import record what they shipped in: `--state` (or the default one),
/// which must work when `--site` or `--state` was given; otherwise a state that cannot be used
/// is a warning — the content is at the destination whatever the state says.
fn shipped_state(args: &ShippedArgs) -> Keep {
    match (&args.site, &args.state) {
        (None, None) => Keep::DefaultIfUsable,
        (_, state) => Keep::State(state.clone()),
    }
}

/// The run's state, which a command that records what it shipped keeps.
fn state_of(run: &Run) -> Result<&State> {
    run.state()
        .with_context(|| format!("{}: no state to record what was shipped", run.command()))
}

/// Record what a run shipped to `site`; a line saying how much.
fn record_shipped(
    state: &State,
    site: &str,
    bundle: Option<&str>,
    items: &[ShippedItem],
) -> Result<()> {
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
/// named its site or state, which then must hold the record. Without a state (it could not be
/// opened, and the run said so when it started) nothing is recorded.
fn record_or_warn(
    run: &Run,
    args: &ShippedArgs,
    site: &str,
    bundle: Option<&str>,
    items: &[ShippedItem],
) -> Result<()> {
    let Some(state) = run.state() else {
        return Ok(());
    };
    match record_shipped(state, site, bundle, items) {
        Err(e) if matches!(shipped_state(args), Keep::DefaultIfUsable) => {
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

/// The report of a copy, export or import: the plan's figures, with every manifest counted
/// per image (each is pushed or written per image), the transport's counters and what the
/// engine moved.
fn transfer_report(
    run: &Run,
    (source, target): (String, String),
    plan: &Plan,
    registries: &Registries,
    totals: &transfer::Totals,
    images: Vec<ImageReport>,
) -> RunReport {
    let mut planned = plan.summary();
    planned.manifests = plan.images.iter().map(|i| i.manifests.len()).sum();
    RunReport::new(
        run.header(source, Some(target)),
        &planned,
        &registries.stats,
        images,
    )
    .with_moved(totals.get())
}

pub async fn copy(args: &CopyArgs, global: &Global) -> Result<i32> {
    let run = Run::start("copy");
    let (job, registries) = load(&args.job, global, args.resolve, None)?;
    let mut dest = Destination::parse(&args.destination.to)?;
    dest.orgs = job.cache.clone();
    let (registries, target) = with_destination(registries, &dest, &job, &args.destination)?;
    let run = run
        .keep(shipped_state(&args.shipped))?
        .report_to(args.report.as_deref())
        .metrics_to(args.metrics.as_deref());
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
        bundle: None,
    };
    let dir = args.cluster_resources.as_deref();
    after_push(
        &run,
        Some((&job, &registries)),
        placed,
        dir,
        &args.shipped,
        None,
    )
    .await?;
    let names = (args.job.display().to_string(), args.destination.to.clone());
    let report = transfer_report(&run, names, &plan, &registries, &totals, images);
    run.finish(Finish::new(report, Summary::Pushed))
}

pub async fn export(args: &ExportArgs, global: &Global) -> Result<i32> {
    let run = Run::start("export");
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
    // export keeps a state only for a site: what earlier bundles carried there, and this one.
    let keep = match site {
        Some(_) => Keep::State(args.shipped.state.clone()),
        None => Keep::Nothing,
    };
    let run = run
        .keep(keep)?
        .report_to(args.report.as_deref())
        .metrics_to(args.metrics.as_deref());
    // `--since-last SITE`: what earlier bundles carried to SITE is left out, and the last
    // of them is this bundle's base.
    let (have, base) = match (&args.have, &args.since_last) {
        (Some(p), _) => (Some(Inventory::load(p)?), None),
        (None, Some(site)) => {
            let state = state_of(&run)?;
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
    let mut plan = plan_for_transfer(&job, &registries, reporter.as_ref()).await?;
    // Filtered catalogs, the graph image, signatures: what import needs for the cluster.
    let extras = match oci_dir {
        true => Default::default(),
        false => crate::cluster::carry::extras(&job, &registries, &mut plan).await?,
    };
    let totals = transfer::Totals::default();
    let work = Work {
        job: &job,
        registries: &registries,
        state: None,
        reporter: reporter.as_ref(),
        jobs: args.jobs.unwrap_or(job.concurrency).max(1),
        totals: &totals,
    };
    let (images, detail) = if oci_dir {
        let images = transfer::export::export_layout(&work, &plan, &args.output).await?;
        let detail = format!("OCI image layout {}", args.output.display());
        (images, detail)
    } else {
        let options = transfer::export::ExportOptions {
            dir: &args.output,
            segment_size: args.segment_size.unwrap_or(u64::MAX),
            have: have.as_ref(),
            base: base.clone(),
            extras: &extras,
        };
        let (images, bundle) = transfer::export::export(&work, &plan, &options).await?;
        if let Some(site) = site {
            let (_, digest) = BundleManifest::load_with_digest(&args.output)?;
            let state = state_of(&run)?;
            state.record_bundle(
                site,
                &ShippedBundle {
                    id: bundle.id.clone(),
                    digest,
                    dir: args.output.display().to_string(),
                    at: bundle.created_at,
                },
            )?;
            let items = chain::shipped_by_bundle(&bundle);
            record_shipped(state, site, Some(&bundle.id), &items)?;
        }
        (images, bundle_detail(&args.output, &bundle))
    };
    let names = (
        args.job.display().to_string(),
        args.output.display().to_string(),
    );
    let report = transfer_report(&run, names, &plan, &registries, &totals, images);
    let mut finish = Finish::new(report, Summary::Exported);
    finish.detail.push(detail);
    run.finish(finish)
}

/// What a bundle written to `dir` holds, for the summary.
fn bundle_detail(dir: &Path, bundle: &BundleManifest) -> String {
    let compressed: u64 = bundle.segments.iter().map(|s| s.size).sum();
    format!(
        "bundle {} ({}): {} segment(s), {} compressed ({} tar) for {} blobs and {} manifests inside ({}); {} blobs and {} manifests left out as present at the far site{}",
        dir.display(),
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
    )
}

/// What a copy or import hands to the cluster side: where it pushed, and with what.
#[derive(Clone, Copy)]
struct Placed<'a> {
    plan: &'a Plan,
    images: &'a [ImageReport],
    dest: &'a Destination,
    to: &'a str,
    target: &'a Arc<crate::registry::RegistryClient>,
    /// The bundle an import pushed.
    bundle: Option<&'a BundleManifest>,
}

/// What copy and import do once their images are pushed: the cluster resources for what was
/// placed (into `--cluster-resources`, else beside `--report`), then the record of what was
/// shipped to the site (`--site`, default the `--to` value).
async fn after_push(
    run: &Run,
    job: Option<(&Job, &Registries)>,
    placed: Placed<'_>,
    cluster_resources: Option<&Path>,
    shipped: &ShippedArgs,
    bundle: Option<&str>,
) -> Result<()> {
    if let Some(dir) = crate::cluster::after_run::dir(cluster_resources, run.report_path()) {
        write_cluster_resources(job, placed, &dir).await?;
    }
    let site = shipped.site.as_deref().unwrap_or(placed.to);
    let items = chain::shipped_by_plan(placed.plan, placed.images, placed.dest);
    record_or_warn(run, shipped, site, bundle, &items)
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
                    placed_at: &repository_of,
                },
            )
        }),
        bundle: placed.bundle,
    })
    .await
    .context("--cluster-resources")?;
    Ok(())
}

/// `prewarm prune`: plan the job, list what the destination holds under its mapping that the
/// plan no longer needs, delete it with `--yes`; with `--quay`, the job's cache orgs on Quay.
pub async fn prune(args: &crate::cluster::prune::PruneArgs, global: &Global) -> Result<i32> {
    use crate::cluster::prune;
    let run = Run::start("prune");
    let (job, registries) = load(&args.job, global, None, None)?;
    let reporter = progress::for_run(global.quiet);
    let Some(destination) = args.registry() else {
        let quay = crate::quay::prune::QuayPrune::connect(args, &job).await?;
        let plan = plan_for_transfer(&job, &registries, reporter.as_ref()).await?;
        return Ok(run.exit(quay.run(args, &plan).await?));
    };
    let mut dest = Destination::parse(&destination.to)?;
    dest.orgs = job.cache.clone();
    let (registries, target) = with_destination(registries, &dest, &job, &destination)?;
    let plan = plan_for_transfer(&job, &registries, reporter.as_ref()).await?;
    let repository_of = |r: &crate::reference::Reference| dest.repository(r);
    let mut needed = prune::Needed::of(&plan, &repository_of)?;
    prune::keep_built(&job, &target, &mut needed, &repository_of).await?;
    let candidates = prune::find(&target, &needed, &repository_of).await?;
    let entries = prune::apply(&target, &dest.host, &candidates, args.yes).await;
    Ok(run.exit(args.finish(&destination.to, "manifest(s)", &entries)?))
}

/// A job with nothing in it, for commands that read no job file.
fn empty_job() -> Result<Job> {
    Job::parse("{}", Path::new("(no job)"))
}

pub async fn import(args: &ImportArgs, global: &Global) -> Result<i32> {
    let run = Run::start("import");
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
    let run = run
        .keep(shipped_state(&args.shipped))?
        .report_to(args.report.as_deref())
        .metrics_to(args.metrics.as_deref());
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
    // A layout carries no built images, no roles and no signatures: only a bundle does.
    let bundle = match &source {
        ImportSource::Bundle(bundle) => Some(bundle),
        ImportSource::Layout(..) => None,
    };
    let placed = Placed {
        plan: &plan,
        images: &images,
        dest: &dest,
        to: &args.destination.to,
        target: &target,
        bundle,
    };
    let dir = args.cluster_resources.as_deref();
    let id = bundle.map(|b| b.id.as_str());
    after_push(&run, None, placed, dir, &args.shipped, id).await?;
    let names = (args.dir.display().to_string(), args.destination.to.clone());
    let report = transfer_report(&run, names, &plan, &registries, &totals, images);
    run.finish(Finish::new(report, Summary::Pushed))
}

pub async fn inventory(args: &InventoryArgs, global: &Global) -> Result<i32> {
    let run = Run::start("inventory");
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
    Ok(run.exit(false))
}

pub async fn bundle(command: &BundleCommand, _global: &Global) -> Result<i32> {
    match command {
        BundleCommand::Verify { dir } => {
            let run = Run::start("bundle verify");
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
            } else {
                eprintln!(
                    "bundle {}: {} of {} segment(s) bad: re-send those files",
                    dir.display(),
                    problems.len(),
                    bundle.segments.len()
                );
            }
            Ok(run.exit(!problems.is_empty()))
        }
    }
}
