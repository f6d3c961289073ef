use std::process::ExitCode;

use clap::Parser;
use prewarm::cli::{Cli, Command};
use prewarm::commands::{self, Executor};

/// Bad input (a job, an auth file, a flag) or a failure before any image was tried.
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.global.verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Plan(args) => commands::plan(args, &cli.global).await,
            Command::Warm(args) => commands::run(Executor::Warm, args, &cli.global).await,
            Command::Verify(args) => commands::run(Executor::Verify, args, &cli.global).await,
            Command::Refresh(args) => commands::refresh(args, &cli.global).await,
            Command::Quay(args) => prewarm::quay::run(args, &cli.global).await,
            Command::MirrorConfig(args) => {
                prewarm::cluster::mirror_config::run(args, &cli.global).await
            }
            Command::Copy(args) => commands::transfer::copy(args, &cli.global).await,
            Command::Export(args) => commands::transfer::export(args, &cli.global).await,
            Command::Import(args) => commands::transfer::import(args, &cli.global).await,
            Command::Inventory(args) => commands::transfer::inventory(args, &cli.global).await,
            Command::Prune(args) => commands::transfer::prune(args, &cli.global).await,
            Command::Bundle(command) => commands::transfer::bundle(command, &cli.global).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            // One line: the chain joined, as `error: job.yaml: cache.hots: unknown field …`.
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
