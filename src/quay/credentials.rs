//! `prewarm quay credentials`: upstream credentials from a pull secret onto the cache orgs.
//!
//! Per registry: `auths[host].auth` decoded and split on the FIRST colon; the new config is
//! validated by Quay before the current one is touched — and only Quay's `"Valid"` counts: its
//! `"Anonymous"` means it could not log in with them — then DELETE and POST, putting the old
//! upstream settings back when the POST fails. Quay refuses to validate an org that already
//! has a config, so validation of a configured org runs on a scratch org named for the run
//! (deleted names stay reserved in Quay for a while), deleted after.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::client::{ProxyCacheSpec, QuayClient, Validation};
use super::orgs::{replace, DEFAULT_EXPIRATION_S};
use super::ConnArgs;
use crate::args::Global;
use crate::auth::{AuthStore, Credentials};
use crate::upstreams::CacheOrg;

/// The scratch org for validation is `prewarm_validate_<pid>_<seconds>`: a name of its own
/// per run, because Quay keeps a deleted org's name reserved until its namespace garbage
/// collection runs, and cannot clash with a `cache_` org.
pub const SCRATCH_PREFIX: &str = "prewarm_validate";

#[derive(Debug, clap::Args)]
pub struct CredentialsArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The pull secret (`{"auths": {host: {"auth": base64(user:password)}}}`).
    #[arg(long, value_name = "FILE")]
    pub pull_secret: PathBuf,
    /// Registries to set credentials for (repeatable); each must be in the pull secret.
    /// Default: every upstream host of the domain list / job that the pull secret has.
    #[arg(long = "registry", value_name = "HOST")]
    pub registries: Vec<String>,
}

/// A scratch org for validations, made on first need and removed at the end.
struct Scratch {
    name: String,
    made: bool,
}

pub async fn run(args: &CredentialsArgs, global: &Global) -> Result<bool> {
    let secrets = AuthStore::load(&args.pull_secret)?;
    let ps = args.pull_secret.display();
    let (mapping, orgs) = super::cache_orgs(&args.conn, global).await?;
    // Every credential is read before anything on Quay changes: a missing one is bad input.
    let mut hosts: Vec<String> = Vec::new();
    for o in &orgs {
        if !hosts.iter().any(|h| h == o.source_host()) {
            hosts.push(o.source_host().to_string());
        }
    }
    let wanted: Vec<String> = if args.registries.is_empty() {
        let (have, lack): (Vec<String>, Vec<String>) = hosts.iter().cloned().partition(|h| {
            orgs.iter()
                .any(|o| o.source_host() == h && creds(&secrets, o).is_some())
        });
        if have.is_empty() {
            bail!(
                "{ps}: no credentials for any upstream of the cache orgs ({})",
                hosts.join(", ")
            );
        }
        if !lack.is_empty() {
            eprintln!(
                "note: {ps} has no credentials for {}: their orgs are left as they are",
                lack.join(", ")
            );
        }
        have
    } else {
        for host in &args.registries {
            if secrets.get(host, None).is_none()
                && !orgs
                    .iter()
                    .any(|o| o.source_host() == host && creds(&secrets, o).is_some())
            {
                bail!("{ps}: auths.{host}: no credentials for {host}");
            }
        }
        args.registries.clone()
    };
    let client = super::connect(&args.conn, &mapping).await?;
    let mut failed = 0;
    let mut scratch = Scratch {
        name: format!(
            "{SCRATCH_PREFIX}_{}_{}",
            std::process::id(),
            crate::state::now()
        ),
        made: false,
    };
    for host in &wanted {
        let targets: Vec<_> = orgs.iter().filter(|o| o.source_host() == host).collect();
        if targets.is_empty() {
            failed += 1;
            eprintln!(
                "error: {host}: no cache org on {} proxies it (not in the domain list or job)",
                mapping.cache.host
            );
            continue;
        }
        for o in targets {
            let Some(c) = creds(&secrets, o) else {
                eprintln!(
                    "note: {ps} has no credentials for {}: {} is left as it is",
                    o.source, o.org
                );
                continue;
            };
            match set_one(&client, o, c, &mut scratch).await {
                Ok(line) => println!("{:<40} {:<40} {line}", o.org, o.upstream),
                Err(e) => {
                    failed += 1;
                    eprintln!("error: {} ({}): {e:#}", o.org, o.upstream);
                }
            }
        }
    }
    if scratch.made {
        if let Err(e) = client.delete_org(&scratch.name).await {
            failed += 1;
            eprintln!("error: deleting the scratch org {}: {e:#}", scratch.name);
        }
    }
    println!(
        "credentials from {ps} for {}: {}",
        wanted.join(", "),
        if failed == 0 {
            "all set".to_string()
        } else {
            format!("{failed} failed")
        }
    );
    Ok(failed > 0)
}

/// The pull secret's credentials for an org's source: the most specific key
/// (`host/namespace`, then `host`) as containers-auth.json(5) picks them.
fn creds<'a>(secrets: &'a AuthStore, o: &CacheOrg) -> Option<&'a Credentials> {
    let (host, ns) = o.source.split_once('/').unwrap_or((&o.source, ""));
    secrets.get(host, (!ns.is_empty()).then_some(ns))
}

async fn set_one(
    client: &QuayClient,
    o: &CacheOrg,
    creds: &Credentials,
    scratch: &mut Scratch,
) -> Result<String> {
    let org = o.org.as_str();
    if !client.org_exists(org).await? {
        bail!("the org does not exist: run `prewarm quay orgs create` first");
    }
    let current = client.proxycache(org).await?;
    let new = ProxyCacheSpec {
        upstream_registry: current
            .as_ref()
            .map(|c| c.upstream_registry.clone())
            .unwrap_or_else(|| o.upstream.clone()),
        expiration_s: current
            .as_ref()
            .map(|c| c.expiration_s)
            .filter(|e| *e > 0)
            .unwrap_or(DEFAULT_EXPIRATION_S),
        insecure: current.as_ref().map(|c| c.insecure).unwrap_or(o.insecure),
        credentials: Some(creds.clone()),
    };
    // Validate where Quay allows it: the org itself when it has no config yet, else a scratch org.
    let validate_on = if current.is_some() {
        if !scratch.made {
            client
                .create_org(&scratch.name)
                .await
                .context("creating the scratch org for validation")?;
            scratch.made = true;
        }
        scratch.name.as_str()
    } else {
        org
    };
    let untouched = if current.is_some() {
        "the current config is untouched"
    } else {
        "nothing was set"
    };
    let verdict = client
        .validate_proxycache(validate_on, &new)
        .await
        .with_context(|| {
            format!("Quay could not log in to the upstream with these credentials; {untouched}")
        })?;
    match verdict {
        Validation::Valid => {}
        // Quay's 202 "Anonymous" with credentials given: it could not log in and fell back to
        // anonymous access. Setting them would make every later pull fail with 401.
        Validation::Anonymous => bail!(
            "Quay could not log in to {} as {} and fell back to anonymous access (validateproxycache: \"Anonymous\"; a wrong password on a Basic-auth registry answers so); {untouched}",
            new.upstream_registry,
            creds.username
        ),
        Validation::Other(v) => bail!(
            "Quay's validation answered {v:?}, neither \"Valid\" nor \"Anonymous\"; {untouched}"
        ),
    }
    match current {
        None => {
            client.create_proxycache(org, &new).await?;
            Ok("credentials validated (Valid) and set (no config before)".to_string())
        }
        Some(old) => {
            replace(client, org, &old, &new).await?;
            Ok("credentials validated (Valid) and set".to_string())
        }
    }
}
