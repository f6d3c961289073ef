//! `prewarm quay`: the Quay side of the seed procedure as safe, idempotent commands — cache
//! orgs and their proxy-cache configs ([`orgs`]), upstream credentials from a pull secret
//! ([`credentials`]), pull access for the cluster and storage quota ([`access`]); and
//! `prewarm prune --quay`, the cache orgs' tags the job no longer needs ([`prune`]).
//!
//! Which orgs exist and what each proxies comes from [`crate::upstreams::Mapping`], i.e. the
//! job's mapping; the REST calls are in [`client`].

pub mod access;
pub mod client;
pub mod credentials;
pub mod orgs;
pub mod prune;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::args::Global;
use crate::run::Run;
use crate::upstreams::{CacheOrg, Mapping, SiteArgs};
use client::{Connection, QuayClient, Token};

/// Environment variable holding the Quay OAuth token (never a command-line argument).
pub const TOKEN_ENV: &str = "PREWARM_QUAY_TOKEN";

/// How to reach and authenticate to Quay, and which orgs are meant.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnArgs {
    #[command(flatten)]
    pub site: SiteArgs,
    /// A file holding the Quay OAuth token (scopes: Administer Organization, and Administer
    /// User to create orgs). Default: $PREWARM_QUAY_TOKEN.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for Quay, besides the system roots.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Do not verify Quay's TLS certificate, and use plain HTTP when HTTPS does not answer.
    #[arg(long)]
    pub insecure: bool,
}

#[derive(Debug, clap::Args)]
pub struct QuayArgs {
    #[command(subcommand)]
    pub command: QuayCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum QuayCommand {
    /// Create, delete or list the cache orgs (`cache_<host>`) and their proxy-cache configs.
    #[command(subcommand)]
    Orgs(OrgsCommand),
    /// Set upstream credentials on the cache orgs from a pull secret, validated first.
    #[command(
        after_help = "Example:\n  PREWARM_QUAY_TOKEN=$(cat token) prewarm quay credentials --quay mirror.example:8443 --pull-secret pull-secret.json\n  prewarm quay credentials --job job.yaml --token-file token --pull-secret ps.json --registry quay.io\n\nWithout --registry: every upstream of the domain list / job that the pull secret has (the\nothers are listed). Each org's new config is validated by Quay (validateproxycache, on a\nscratch org named for the run since Quay refuses to validate an org that has a config) before\nthe current one is deleted; only \"Valid\" counts (\"Anonymous\" means Quay could not log in\nwith the credentials). If the POST fails the old upstream settings are put back. Quay never\nreturns credentials, so credentials set earlier cannot be restored."
    )]
    Credentials(credentials::CredentialsArgs),
    /// Give the cluster pull access: per cache org a team (role member) and a robot in it, and
    /// in the job's built org a team with role creator (push); writes the robots' credentials
    /// as a pull secret.
    #[command(
        after_help = "Example:\n  prewarm quay pull-access --quay mirror.example:8443 --token-file token --output cache-pull-secret.json\n\nThe file has one `auths` entry per cache org (`mirror.example:8443/cache_quay_io`), the form\ncontainers and OpenShift accept for namespace-scoped credentials. It is written with mode 0600,\natomically, and only when every org succeeded; a rerun makes nothing new and leaves it as it was."
    )]
    PullAccess(access::PullAccessArgs),
    /// Set a storage quota (and Warning/Reject limits) on every cache org; needs a superuser token.
    #[command(
        after_help = "Example:\n  prewarm quay quota --quay mirror.example:8443 --token-file token --limit-bytes 500000000000 --warning 80 --reject 100"
    )]
    Quota(access::QuotaArgs),
}

#[derive(Debug, clap::Subcommand)]
pub enum OrgsCommand {
    /// Create each cache org and its proxy-cache config, and the job's built org (a regular
    /// org); leave matching ones alone.
    #[command(
        after_help = "Example:\n  PREWARM_QUAY_TOKEN=$(cat token) prewarm quay orgs create --quay mirror.example:8443\n  prewarm quay orgs create --job job.yaml --token-file token --expiration 172800 --force\n\nAn org whose config differs is reported and left alone; --force replaces it (DELETE, POST;\nthe old settings are put back if the POST fails).\n\nExit status: 0 when every org is as wanted, 1 when any differs (without --force) or failed."
    )]
    Create(orgs::CreateArgs),
    /// Delete each cache org (and everything cached in it), and the job's built org; asks
    /// first unless --yes.
    #[command(
        after_help = "Example:\n  prewarm quay orgs delete --quay mirror.example:8443 --token-file token --yes"
    )]
    Delete(orgs::DeleteArgs),
    /// A table: org, upstream, expiration, credentials, upstream reachable from here; and
    /// whether the job's built org exists as a regular org.
    #[command(
        after_help = "Example:\n  prewarm quay orgs status --quay mirror.example:8443 --token-file token"
    )]
    Status(orgs::StatusArgs),
}

/// The token: from `--token-file`, else from the environment; never from argv.
pub fn token(args: &ConnArgs) -> Result<Token> {
    token_from(args.token_file.as_deref())
}

/// The token from `file` (`--token-file`), else from $PREWARM_QUAY_TOKEN.
pub fn token_from(file: Option<&std::path::Path>) -> Result<Token> {
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read token file {}", path.display()))?;
            // Quay's 401 never says "expired"; the file's age can (tokens last 9000 s).
            let age = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            Ok(Token::new(&text)
                .with_context(|| format!("token file {}", path.display()))?
                .with_age(age))
        }
        None => match std::env::var(TOKEN_ENV) {
            Ok(t) => Token::new(&t).with_context(|| format!("${TOKEN_ENV}")),
            Err(_) => bail!("no Quay token: give --token-file FILE or set ${TOKEN_ENV}"),
        },
    }
}

/// The mapping, the cache orgs it needs, and a client with a checked token.
pub async fn open(
    args: &ConnArgs,
    global: &Global,
) -> Result<(Mapping, Vec<CacheOrg>, QuayClient)> {
    let (mapping, orgs) = cache_orgs(args, global).await?;
    let client = connect(args, &mapping).await?;
    Ok((mapping, orgs, client))
}

/// The mapping and the cache orgs it needs, before anything talks to Quay. With a job, the
/// upstreams are those of everything its plan would fetch; an org whose upstream the job's
/// `registries:` moves to another endpoint is said so on stderr, and so is a job that needs no
/// built org (`mapping.built_org` is then `None`).
pub async fn cache_orgs(args: &ConnArgs, global: &Global) -> Result<(Mapping, Vec<CacheOrg>)> {
    let mapping = args.site.mapping(global).await?;
    let orgs = mapping.cache_orgs()?;
    for o in &orgs {
        if let Some(note) = o.endpoint_note() {
            eprintln!("note: {note}");
        }
    }
    match (&mapping.built_org, &args.site.job) {
        (Some(built), _) if orgs.iter().any(|o| &o.org == built) => bail!(
            "cache.built_org: `{built}` is also a cache org; the built org must be a regular org of its own"
        ),
        (None, Some(job)) => eprintln!(
            "note: {}: no catalog has package filters and no graph image is configured: warm builds nothing, so no built org (cache.built_org) is needed",
            job.display()
        ),
        _ => {}
    }
    Ok((mapping, orgs))
}

/// A client for the mapping's Quay, its token checked.
pub async fn connect(args: &ConnArgs, mapping: &Mapping) -> Result<QuayClient> {
    let token = token(args)?;
    let conn = Connection {
        host: mapping.cache.host.clone(),
        ca: args.ca.clone().or_else(|| mapping.cache.ca.clone()),
        insecure: args.insecure || mapping.cache.insecure,
    };
    let (client, _user) = QuayClient::connect(&conn, token)
        .await
        .with_context(|| format!("Quay {}", conn.host))?;
    Ok(client)
}

/// `prewarm quay …` as one run (see [`crate::run`]): each subcommand says whether anything
/// failed, and the run wrapper gives the exit status.
pub async fn run(args: &QuayArgs, global: &Global) -> Result<i32> {
    let run = Run::start(match &args.command {
        QuayCommand::Orgs(OrgsCommand::Create(_)) => "quay orgs create",
        QuayCommand::Orgs(OrgsCommand::Delete(_)) => "quay orgs delete",
        QuayCommand::Orgs(OrgsCommand::Status(_)) => "quay orgs status",
        QuayCommand::Credentials(_) => "quay credentials",
        QuayCommand::PullAccess(_) => "quay pull-access",
        QuayCommand::Quota(_) => "quay quota",
    });
    let incomplete = match &args.command {
        QuayCommand::Orgs(OrgsCommand::Create(a)) => orgs::create(a, global).await,
        QuayCommand::Orgs(OrgsCommand::Delete(a)) => orgs::delete(a, global).await,
        QuayCommand::Orgs(OrgsCommand::Status(a)) => orgs::status(a, global).await,
        QuayCommand::Credentials(a) => credentials::run(a, global).await,
        QuayCommand::PullAccess(a) => access::pull_access(a, global).await,
        QuayCommand::Quota(a) => access::quota(a, global).await,
    }?;
    Ok(run.exit(incomplete))
}
