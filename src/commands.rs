//! One function per subcommand: turn arguments and the job into settings, run the stages
//! (plan, then an executor) inside a [`Run`], which takes the lock and state, writes the
//! report and metrics, prints the summary and chooses the exit status.

use std::path::Path;

use anyhow::{Context, Result};

use crate::args::{Global, Output, PlanArgs, RunArgs};
use crate::plan::{self, Plan};
use crate::progress::{self, human_bytes, Reporter};
use crate::report::RunReport;
use crate::run::{Finish, Keep, Run, Summary};
use crate::transfer::{self as engine, Work};

pub mod transfer;

pub(crate) use crate::load::{load, policy};
pub use crate::report::EXIT_INCOMPLETE;

pub async fn plan(args: &PlanArgs, global: &Global) -> Result<i32> {
    let run = Run::start("plan");
    let (job, registries) = load(&args.job, global, args.resolve, args.isc.as_deref())?;
    let mut job = (*job).clone();
    if let Some(j) = args.jobs {
        job.concurrency = j.max(1);
    }
    let reporter = progress::for_run(global.quiet);
    let plan = plan::build(&job, &registries, reporter.as_ref()).await?;
    // `plan` keeps a state only when told to: it records what each reference resolved to.
    let run = match &args.state {
        Some(path) => run.keep(Keep::State(Some(path.clone())))?,
        None => run,
    };
    run.record_plan(&plan, None)?;
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
    Ok(run.exit(!plan.failures.is_empty()))
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
    let command = match executor {
        Executor::Warm => "warm",
        Executor::Verify => "verify",
    };
    let run = Run::start(command);
    let (job, registries) = load(&args.job, global, args.resolve, args.isc.as_deref())?;
    let cache_host = job.cache()?.host.clone();
    let run = run
        .keep(Keep::from_flags(args.state.as_deref(), args.no_state))?
        .report_to(args.report.as_deref())
        .metrics_to(args.metrics.as_deref());
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
        state: run.state(),
        reporter: reporter.as_ref(),
        jobs: args.jobs.unwrap_or(job.concurrency).max(1),
        totals: &totals,
    };
    let images = match executor {
        Executor::Warm => {
            let images = engine::warm::warm(&work, &plan).await?;
            run.record_plan(&plan, Some(&images))?;
            images
        }
        Executor::Verify => engine::verify::verify(&work, &plan).await?,
    };
    let images = match args.shard {
        Some(_) => crate::shard::drop_carriers(&plan, images),
        None => images,
    };
    if let Some(dir) =
        crate::cluster::after_run::dir(args.cluster_resources.as_deref(), run.report_path())
    {
        let build = matches!(executor, Executor::Warm);
        crate::cluster::after_run::write_for_cache(&job, &registries, &plan, &images, &dir, build)
            .await
            .context("--cluster-resources")?;
    }
    let header = run.header(args.job.display().to_string(), Some(cache_host));
    let report =
        RunReport::new(header, &plan.summary(), &registries.stats, images).with_moved(totals.get());
    let mut finish = Finish::new(report, Summary::Cache);
    finish.budgets_spent = budgets_spent(&registries);
    run.finish(finish)
}

/// The registries whose rate budget ran out, for the metrics.
pub(crate) fn budgets_spent(registries: &crate::registry::Registries) -> Vec<String> {
    registries
        .budgets_spent()
        .into_iter()
        .map(|(host, _)| host)
        .collect()
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
    let run = Run::start("refresh");
    let (job, registries) = load(&args.job, global, args.resolve, None)?;
    let run = run
        .keep(Keep::State(args.state.clone()))?
        .report_to(args.report.as_deref())
        .metrics_to(args.metrics.as_deref());
    let opts = crate::refresh::Options {
        job: args.job.clone(),
        stale_after: args.stale_after,
        dry_run: args.dry_run,
        jobs: args.jobs,
        shard: args.shard,
    };
    let finish = crate::refresh::refresh(&opts, &job, &registries, &run, global).await?;
    run.finish(finish)
}
