//! The arguments of each command (clap derive; doc comments are the `--help` text), apart from
//! the command tree in [`crate::cli`]: the commands and refresh read their settings from here,
//! so nothing below the command line depends on the command line's module.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

pub use crate::job::ResolveVia;

mod transfer;
pub use transfer::{
    parse_jobs, parse_segment_size, parse_size, BundleCommand, CopyArgs, DestinationArgs,
    ExportArgs, ExportFormat, ImportArgs, InventoryArgs, ShippedArgs,
};

#[derive(Debug, Args)]
pub struct Global {
    /// Registry credentials (pull-secret.json, auth.json or docker config.json).
    /// Default: $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json.
    #[arg(long, global = true, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// No progress output; errors and the summary only.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// More detail in the log (repeat for more).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Attempts per request before an error is final (connection errors, 5xx, 429).
    #[arg(long, global = true, default_value_t = 5, value_name = "N")]
    pub retries: u32,
    /// Seconds a request may make no progress (no response headers while no upload bytes
    /// are taken; no body bytes while reading) before it is abandoned and retried.
    #[arg(long, global = true, default_value_t = 60, value_name = "SECS")]
    pub timeout: u64,
    /// Longest Retry-After (seconds) waited before a retry; a registry asking for longer is
    /// waited this long, and the log says so.
    #[arg(long, global = true, default_value_t = 300, value_name = "SECS")]
    pub retry_after_cap: u64,
}

#[derive(Debug, Args)]
pub struct RefreshArgs {
    /// The job file (YAML).
    pub job: PathBuf,
    /// Re-warm an unchanged image whose last warm is older than this (90s, 30m, 12h, 7d, 1d12h);
    /// keep it below the cache's tag expiration (Quay's `expiration_s`) minus the cron interval.
    #[arg(long, value_name = "DURATION", default_value = "12h", value_parser = crate::duration::parse_duration)]
    pub stale_after: std::time::Duration,
    /// Check and print what changed; warm nothing and record nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the JSON report here (see the README for its schema).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write Prometheus text metrics here, atomically (node_exporter's textfile collector).
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// The state database. Default: $XDG_STATE_HOME/prewarm/state.db.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Transfers at once (default: the job's `concurrency`).
    #[arg(long, short, value_name = "N", value_parser = parse_jobs)]
    pub jobs: Option<usize>,
    /// Resolve tags against the source registries or through the cache (default: the job's
    /// `resolve`).
    #[arg(long, value_enum, value_name = "VIA")]
    pub resolve: Option<ResolveVia>,
    /// Warm only shard I of N of the plan (`auto/N`: I from $JOB_COMPLETION_INDEX).
    #[arg(long, value_name = "I/N", value_parser = clap::value_parser!(crate::shard::Shard))]
    pub shard: Option<crate::shard::Shard>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The job file (YAML).
    pub job: PathBuf,
    /// Output format on stdout.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Transfers at once (default: the job's `concurrency`).
    #[arg(long, short, value_name = "N", value_parser = parse_jobs)]
    pub jobs: Option<usize>,
    /// Resolve tags against the source registries or through the cache (default: the job's
    /// `resolve`, itself `source` by default).
    #[arg(long, value_enum, value_name = "VIA")]
    pub resolve: Option<ResolveVia>,
    /// An oc-mirror ImageSetConfiguration (v2alpha1) whose content is added to the job's.
    #[arg(long, value_name = "FILE")]
    pub isc: Option<PathBuf>,
    /// Record the digests and selections resolved in this state database (as `warm` does), so
    /// `refresh` compares against them. Without it, `plan` writes nothing.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job file (YAML).
    pub job: PathBuf,
    /// Transfers at once (default: the job's `concurrency`).
    #[arg(long, short, value_name = "N", value_parser = parse_jobs)]
    pub jobs: Option<usize>,
    /// Write the JSON report here (see the README for its schema).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// The state database. Default: $XDG_STATE_HOME/prewarm/state.db.
    #[arg(long, value_name = "FILE", conflicts_with = "no_state")]
    pub state: Option<PathBuf>,
    /// Keep no state: every blob is fetched in full and nothing is recorded.
    #[arg(long)]
    pub no_state: bool,
    /// Resolve tags against the source registries or through the cache (default: the job's
    /// `resolve`, itself `source` by default).
    #[arg(long, value_enum, value_name = "VIA", conflicts_with = "plan")]
    pub resolve: Option<ResolveVia>,
    /// Execute a plan saved by `prewarm plan -o json` instead of resolving the sources again.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Write Prometheus text metrics here, atomically (node_exporter's textfile collector).
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// Do only shard I of N of the plan (`auto/N`: I from $JOB_COMPLETION_INDEX, as on the
    /// pods of a Kubernetes Indexed Job); N processes together cover the plan exactly once.
    #[arg(long, value_name = "I/N", value_parser = clap::value_parser!(crate::shard::Shard))]
    pub shard: Option<crate::shard::Shard>,
    /// An oc-mirror ImageSetConfiguration (v2alpha1) whose content is added to the job's.
    #[arg(long, value_name = "FILE", conflicts_with = "plan")]
    pub isc: Option<PathBuf>,
    /// Write the cluster resources (IDMS, ITMS, CatalogSource, ClusterCatalog, signature
    /// ConfigMaps, UpdateService) for what this run placed (warm) or found (verify) into DIR. Default:
    /// `cluster-resources/` beside `--report`; with neither, none are written.
    #[arg(long, value_name = "DIR")]
    pub cluster_resources: Option<PathBuf>,
}
