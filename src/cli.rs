//! Command-line arguments (clap derive). Doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::job::ResolveVia;

mod transfer;
pub use transfer::{
    parse_size, BundleCommand, CopyArgs, DestinationArgs, ExportArgs, ImportArgs, InventoryArgs,
};

/// Warm a pull-through registry cache (Quay cache orgs) with everything an OpenShift cluster
/// will pull, and prove the cache holds it.
#[derive(Debug, Parser)]
#[command(name = "prewarm", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: Global,
}

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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Resolve every source to digests and print the plan: images, manifests, unique blobs.
    #[command(
        after_help = "Example:\n  prewarm plan job.yaml\n  prewarm plan job.yaml -o json > plan.json"
    )]
    Plan(PlanArgs),
    /// Pull every manifest and blob of the plan through the cache orgs so the cache holds them.
    #[command(
        after_help = "Example:\n  prewarm warm job.yaml --jobs 16 --report warm.json\n\nExit status: 0 when every image is warm, 1 when any image failed (each is named), 2 on bad input."
    )]
    Warm(RunArgs),
    /// Ask the cache for every manifest and blob of the plan; list what it does not hold.
    #[command(
        after_help = "Example:\n  prewarm verify job.yaml --resolve cache --report verify.json\n\nA pull-through cache that can reach its upstream fetches what it lacks when asked: run verify\nwith the upstream unreachable to prove the cache alone holds everything.\n\nExit status: 0 when everything is present, 1 when anything is missing or failed, 2 on bad input."
    )]
    Verify(RunArgs),
    /// Push every image of the plan into a registry's repositories, digests unchanged.
    #[command(
        after_help = "Example:\n  prewarm copy job.yaml --to mirror.example:8443/ocp --report copy.json\n\nExit status: 0 when every image is at the destination, 1 when any image failed, 2 on bad input."
    )]
    Copy(CopyArgs),
    /// Write every image of the plan into a bundle (an OCI layout as zstd-compressed tar
    /// segments) for a site with no network.
    #[command(
        after_help = "Example:\n  prewarm export job.yaml -o /media/usb/bundle --segment-size 4095M\n  prewarm export job.yaml -o bundle-2 --have far-site-inventory.json\n\nExit status: 0 when every image is in the bundle, 1 when any image failed, 2 on bad input."
    )]
    Export(ExportArgs),
    /// Verify a bundle, then stream it into a registry without unpacking it.
    #[command(
        after_help = "Example:\n  prewarm import /media/usb/bundle --to mirror.local:8443\n\nRerun after an interruption: finished blobs are found with a HEAD and not pushed again.\n\nExit status: 0 when every image is at the destination, 1 when any image failed, 2 on bad input (or a bad segment)."
    )]
    Import(ImportArgs),
    /// List the digests a registry already holds, for `export --have`.
    #[command(
        after_help = "Example:\n  prewarm inventory --registry mirror.local:8443 --job job.yaml -o inventory.json"
    )]
    Inventory(InventoryArgs),
    /// Bundle tools.
    #[command(subcommand)]
    Bundle(BundleCommand),
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
    #[arg(long, short, value_name = "N")]
    pub jobs: Option<usize>,
    /// Resolve tags against the source registries or through the cache (default: the job's
    /// `resolve`, itself `source` by default).
    #[arg(long, value_enum, value_name = "VIA")]
    pub resolve: Option<ResolveVia>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job file (YAML).
    pub job: PathBuf,
    /// Transfers at once (default: the job's `concurrency`).
    #[arg(long, short, value_name = "N")]
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
}
