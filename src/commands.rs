//! One function per subcommand: turn arguments and the job into settings, run the stages
//! (plan, then an executor), print and write the report, and choose the exit status.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::args::{Global, Output, PlanArgs, RunArgs};
use crate::plan::{self, Plan};
use crate::progress::{self, human_bytes, Reporter};
use crate::report::{Header, RunReport};
use crate::state::{self, State};
use crate::transfer::{self as engine, Work};

pub mod transfer;

pub(crate) use crate::load::{load, policy};
pub use crate::report::EXIT_INCOMPLETE;

pub async fn plan(args: &PlanArgs, global: &Global) -> Result<i32> {
    let (job, registries) = load(&args.job, global, args.resolve, args.isc.as_deref())?;
    let mut job = (*job).clone();
    if let Some(j) = args.jobs {
        job.concurrency = j.max(1);
    }
    let reporter = progress::for_run(global.quiet);
    let plan = plan::build(&job, &registries, reporter.as_ref()).await?;
    if let Some(path) = &args.state {
        crate::history::record_plan(&State::open(path)?, &plan, None)?;
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        Output::Text => print_plan(&plan),
    }
    for f in &plan.failures {
        eprintln!("error: {} ({}): {}", f.reference, f.origin, f.error);
    }
    for n in &plan.notes {
        eprintln!("note: {n}");
    }
    Ok(if plan.failures.is_empty() {
        0
    } else {
        EXIT_INCOMPLETE
    })
}

fn print_plan(plan: &Plan) {
    for image in &plan.images {
        println!(
            "{}  {}  {} manifests, {} blobs, {}  [{}]  from {}",
            image.source,
            image.digest,
            image.manifests.len(),
            image.blobs.len(),
            human_bytes(image.bytes),
            if image.platforms.is_empty() {
                "single platform".to_string()
            } else {
                image.platforms.join(",")
            },
            image.origin
        );
    }
    let s = plan.summary();
    println!(
        "plan: {} images, {} manifests, {} unique blobs, {}{}",
        s.images,
        s.manifests,
        s.blobs,
        human_bytes(s.bytes),
        if s.failures > 0 {
            format!(", {} failed to resolve", s.failures)
        } else {
            String::new()
        }
    );
}

#[derive(Clone, Copy)]
pub enum Executor {
    Warm,
    Verify,
}

pub async fn run(executor: Executor, args: &RunArgs, global: &Global) -> Result<i32> {
    let started = Instant::now();
    let started_at = state::now();
    let (job, registries) = load(&args.job, global, args.resolve, args.isc.as_deref())?;
    let cache_host = job.cache()?.host.clone();
    // One run per state at a time (see `lock`); held until this function returns.
    let _lock = match (&args.state, args.no_state) {
        (_, true) => None,
        (p, false) => Some(crate::lock::acquire(
            &p.clone().unwrap_or_else(State::default_path),
            match executor {
                Executor::Warm => "warm",
                Executor::Verify => "verify",
            },
        )?),
    };
    let state = match (&args.state, args.no_state) {
        (_, true) => None,
        (Some(p), false) => Some(State::open(p)?),
        (None, false) => Some(State::open(&State::default_path())?),
    };
    let reporter: Box<dyn Reporter> = progress::for_run(global.quiet);
    let plan = match &args.plan {
        Some(path) => load_plan(path)?,
        None => plan::build(&job, &registries, reporter.as_ref()).await?,
    };
    let plan = match args.shard {
        Some(shard) => crate::shard::shard_plan(&plan, shard),
        None => plan,
    };
    for n in &plan.notes {
        eprintln!("note: {n}");
    }
    let totals = engine::Totals::default();
    let work = Work {
        job: &job,
        registries: &registries,
        state: state.as_ref(),
        reporter: reporter.as_ref(),
        jobs: args.jobs.unwrap_or(job.concurrency).max(1),
        totals: &totals,
    };
    let (command, images) = match executor {
        Executor::Warm => ("warm", engine::warm::warm(&work, &plan).await?),
        Executor::Verify => ("verify", engine::verify::verify(&work, &plan).await?),
    };
    if let (Executor::Warm, Some(state)) = (executor, &state) {
        crate::history::record_plan(state, &plan, Some(&images))?;
    }
    let images = match args.shard {
        Some(_) => crate::shard::drop_carriers(&plan, images),
        None => images,
    };
    if let Some(dir) =
        crate::cluster::after_run::dir(args.cluster_resources.as_deref(), args.report.as_deref())
    {
        let build = matches!(executor, Executor::Warm);
        crate::cluster::after_run::write_for_cache(&job, &registries, &plan, &images, &dir, build)
            .await
            .context("--cluster-resources")?;
    }
    let report = RunReport::new(
        Header {
            command: command.to_string(),
            job: args.job.display().to_string(),
            cache: Some(cache_host),
            started_at,
            duration_seconds: started.elapsed().as_secs_f64(),
        },
        &plan.summary(),
        &registries.stats,
        images,
    )
    .with_moved(totals.get());
    if let Some(state) = &state {
        if let Err(e) =
            state.record_run(command, started_at, &serde_json::to_value(&report.summary)?)
        {
            tracing::warn!("cannot record the run in the state: {e:#}");
        }
    }
    if let Some(path) = &args.report {
        report.write_json(path).with_context(|| "--report")?;
    }
    if let Some(path) = &args.metrics {
        let ok = report.failed().next().is_none();
        let last_success = match &state {
            Some(s) => s.last_success(command)?,
            None => ok.then(state::now),
        };
        crate::metrics::write(
            path,
            &crate::metrics::RunMetrics {
                report: &report,
                last_success,
                finished_at: state::now(),
                budgets_spent: registries
                    .budgets_spent()
                    .into_iter()
                    .map(|(h, _)| h)
                    .collect(),
                refresh: None,
            },
        )
        .context("--metrics")?;
    }
    report.print_summary(&mut std::io::stderr())?;
    Ok(if report.failed().next().is_some() {
        EXIT_INCOMPLETE
    } else {
        0
    })
}

fn load_plan(path: &Path) -> Result<Plan> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read plan {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a plan written by `prewarm plan -o json`",
            path.display()
        )
    })
}

pub async fn refresh(args: &crate::args::RefreshArgs, global: &Global) -> Result<i32> {
    let opts = crate::refresh::Options {
        job: args.job.clone(),
        stale_after: args.stale_after,
        dry_run: args.dry_run,
        report: args.report.clone(),
        metrics: args.metrics.clone(),
        state: args.state.clone(),
        jobs: args.jobs,
        resolve: args.resolve,
        shard: args.shard,
    };
    crate::refresh::refresh(&opts, global).await
}
