//! `prewarm quay credentials`: upstream credentials from a pull secret onto the cache orgs.
//!
//! Per registry: `auths[host].auth` decoded and split on the FIRST colon; the new config is
//! validated by Quay before the current one is touched; then DELETE and POST, putting the old
//! upstream settings back when the POST fails. Quay refuses to validate an org that already
//! has a config, so validation of a configured org runs on a scratch org that is deleted after.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::client::{ProxyCacheSpec, QuayClient};
use super::orgs::{replace, DEFAULT_EXPIRATION_S};
use super::ConnArgs;
use crate::auth::AuthStore;

/// The registries the seed procedure gives credentials to.
pub const DEFAULT_REGISTRIES: &[&str] = &[
    "quay.io",
    "registry.redhat.io",
    "registry.connect.redhat.com",
];

/// The scratch org for validation; its name cannot clash with a `cache_` org.
pub const SCRATCH_ORG: &str = "prewarm_validate";

#[derive(Debug, clap::Args)]
pub struct CredentialsArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The pull secret (`{"auths": {host: {"auth": base64(user:password)}}}`).
    #[arg(long, value_name = "FILE")]
    pub pull_secret: PathBuf,
    /// Registries to set credentials for (repeatable). Default: quay.io, registry.redhat.io,
    /// registry.connect.redhat.com.
    #[arg(long = "registry", value_name = "HOST")]
    pub registries: Vec<String>,
}

pub async fn run(args: &CredentialsArgs) -> Result<i32> {
    let secrets = AuthStore::load(&args.pull_secret)?;
    let registries: Vec<String> = if args.registries.is_empty() {
        DEFAULT_REGISTRIES.iter().map(|s| s.to_string()).collect()
    } else {
        args.registries.clone()
    };
    // Every credential is read before anything on Quay changes: a missing one is bad input.
    let mut creds = Vec::new();
    for host in &registries {
        let c = secrets.get(host, None).cloned().with_context(|| {
            format!(
                "{}: auths.{host}: no credentials for {host}",
                args.pull_secret.display()
            )
        })?;
        creds.push((host.clone(), c));
    }
    let (mapping, orgs, client) = super::open(&args.conn).await?;
    let mut failed = 0;
    let mut scratch_made = false;
    for (host, c) in &creds {
        let targets: Vec<_> = orgs
            .iter()
            .filter(|o| o.upstream.split('/').next() == Some(host.as_str()))
            .collect();
        if targets.is_empty() {
            failed += 1;
            eprintln!(
                "error: {host}: no cache org on {} proxies it (not in the domain list or job)",
                mapping.cache.host
            );
            continue;
        }
        for o in targets {
            let r = set_one(&client, &o.org, &o.upstream, c, &mut scratch_made).await;
            match r {
                Ok(line) => println!("{:<40} {:<40} {line}", o.org, o.upstream),
                Err(e) => {
                    failed += 1;
                    eprintln!("error: {} ({}): {e:#}", o.org, o.upstream);
                }
            }
        }
    }
    if scratch_made {
        if let Err(e) = client.delete_org(SCRATCH_ORG).await {
            failed += 1;
            eprintln!("error: deleting the scratch org {SCRATCH_ORG}: {e:#}");
        }
    }
    println!(
        "credentials from {} for {}: {}",
        args.pull_secret.display(),
        registries.join(", "),
        if failed == 0 {
            "all set".to_string()
        } else {
            format!("{failed} failed")
        }
    );
    Ok(if failed == 0 { 0 } else { 1 })
}

async fn set_one(
    client: &QuayClient,
    org: &str,
    upstream: &str,
    creds: &crate::auth::Credentials,
    scratch_made: &mut bool,
) -> Result<String> {
    if !client.org_exists(org).await? {
        bail!("the org does not exist: run `prewarm quay orgs create` first");
    }
    let current = client.proxycache(org).await?;
    let new = ProxyCacheSpec {
        upstream_registry: current
            .as_ref()
            .map(|c| c.upstream_registry.clone())
            .unwrap_or_else(|| upstream.to_string()),
        expiration_s: current
            .as_ref()
            .map(|c| c.expiration_s)
            .filter(|e| *e > 0)
            .unwrap_or(DEFAULT_EXPIRATION_S),
        insecure: current.as_ref().map(|c| c.insecure).unwrap_or(false),
        credentials: Some(creds.clone()),
    };
    // Validate where Quay allows it: the org itself when it has no config yet, else a scratch org.
    let validate_on = if current.is_some() {
        if !*scratch_made {
            if !client.org_exists(SCRATCH_ORG).await? {
                client
                    .create_org(SCRATCH_ORG)
                    .await
                    .context("creating the scratch org for validation")?;
            }
            *scratch_made = true;
        }
        SCRATCH_ORG
    } else {
        org
    };
    let verdict = client
        .validate_proxycache(validate_on, &new)
        .await
        .context("Quay could not log in to the upstream with these credentials; the current config is untouched")?;
    match current {
        None => {
            client.create_proxycache(org, &new).await?;
            Ok(format!(
                "credentials validated ({verdict}) and set (no config before)"
            ))
        }
        Some(old) => {
            replace(client, org, &old, &new).await?;
            Ok(format!("credentials validated ({verdict}) and set"))
        }
    }
}
