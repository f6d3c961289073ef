//! `prewarm quay orgs create|delete|status`: one `cache_<host>` org per upstream, each with a
//! proxy-cache config, and for a job that builds images (filtered catalogs, the graph image)
//! its built org (`cache.built_org`), a regular org with no proxy-cache config, never given
//! one. Create is idempotent: what matches is left alone and said so; what differs is reported
//! and replaced only when asked (`--force`; never for the built org), and a failed replacement
//! puts the old settings back.

use std::io::{BufRead, Write};

use anyhow::{bail, Result};

use super::client::{ProxyCache, ProxyCacheSpec, QuayClient};
use super::ConnArgs;
use crate::args::Global;
use crate::upstreams::CacheOrg;

/// Quay's default staleness period; 0 breaks digest pulls in Quay, so it is refused.
pub const DEFAULT_EXPIRATION_S: u64 = 86400;

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Seconds a cached tag stays fresh before Quay re-checks the upstream (`expiration_s`).
    #[arg(long, default_value_t = DEFAULT_EXPIRATION_S, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub expiration: u64,
    /// Let Quay talk to the upstreams over plain HTTP / without TLS verification (`insecure`).
    #[arg(long)]
    pub insecure_upstream: bool,
    /// Replace proxy-cache configs that differ from the wanted one (drops credentials set on
    /// them: run `prewarm quay credentials` again).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Do not ask for confirmation.
    #[arg(long, short)]
    pub yes: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Do not probe the upstreams (`GET /v2/` from this machine).
    #[arg(long)]
    pub no_probe: bool,
}

fn describe(p: &ProxyCache) -> String {
    format!(
        "upstream {} expiration {}s insecure {}",
        p.upstream_registry, p.expiration_s, p.insecure
    )
}

/// What differs between Quay's config and the wanted one, or `None` when they match.
fn difference(have: &ProxyCache, want: &ProxyCache) -> Option<String> {
    let mut d = Vec::new();
    if have.upstream_registry != want.upstream_registry {
        d.push(format!(
            "upstream {} (wanted {})",
            have.upstream_registry, want.upstream_registry
        ));
    }
    if have.expiration_s != want.expiration_s {
        d.push(format!(
            "expiration {}s (wanted {}s)",
            have.expiration_s, want.expiration_s
        ));
    }
    if have.insecure != want.insecure {
        d.push(format!(
            "insecure {} (wanted {})",
            have.insecure, want.insecure
        ));
    }
    (!d.is_empty()).then(|| d.join(", "))
}

/// Replace `org`'s config by `new` (DELETE then POST: Quay has no PUT). If the POST fails,
/// POST `old` again and say so in the error.
pub async fn replace(
    client: &QuayClient,
    org: &str,
    old: &ProxyCache,
    new: &ProxyCacheSpec,
) -> Result<()> {
    client.delete_proxycache(org).await?;
    if let Err(e) = client.create_proxycache(org, new).await {
        let restore = ProxyCacheSpec {
            upstream_registry: old.upstream_registry.clone(),
            expiration_s: old.expiration_s,
            insecure: old.insecure,
            credentials: None,
        };
        match client.create_proxycache(org, &restore).await {
            Ok(()) => bail!(
                "{e:#}; the old config ({}) was restored, without credentials (Quay never returns them)",
                describe(old)
            ),
            Err(r) => bail!(
                "{e:#}; restoring the old config ({}) failed too: {r:#}; the org has NO proxy-cache config now",
                describe(old)
            ),
        }
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    created: usize,
    unchanged: usize,
    differs: usize,
    replaced: usize,
    failed: usize,
}

pub async fn create(args: &CreateArgs, global: &Global) -> Result<bool> {
    let (mapping, orgs, client) = super::open(&args.conn, global).await?;
    let mut t = Tally::default();
    for o in &orgs {
        let (org, upstream) = (&o.org, &o.upstream);
        let want = ProxyCacheSpec {
            upstream_registry: upstream.clone(),
            expiration_s: args.expiration,
            insecure: args.insecure_upstream || o.insecure,
            credentials: None,
        };
        match create_one(&client, org, &want, args.force).await {
            Ok((outcome, line)) => {
                match outcome {
                    Outcome::Created => t.created += 1,
                    Outcome::Unchanged => t.unchanged += 1,
                    Outcome::Differs => t.differs += 1,
                    Outcome::Replaced => t.replaced += 1,
                }
                println!("{org:<40} {upstream:<40} {line}");
            }
            Err(e) => {
                t.failed += 1;
                eprintln!("error: {org} ({upstream}): {e:#}");
            }
        }
    }
    let mut built_ok = true;
    if let Some(built) = &mapping.built_org {
        match create_built(&client, built).await {
            Ok((ok, line)) => {
                built_ok = ok;
                println!("{built:<40} {BUILT_ROLE:<40} {line}");
            }
            Err(e) => {
                built_ok = false;
                eprintln!("error: {built} (built org): {e:#}");
            }
        }
    }
    println!(
        "{} cache orgs on {}: {} created, {} unchanged, {} replaced, {} differ (left alone), {} failed",
        orgs.len(),
        mapping.cache.host,
        t.created,
        t.unchanged,
        t.replaced,
        t.differs,
        t.failed
    );
    Ok(t.failed + t.differs > 0 || !built_ok)
}

/// What the built org is for, in the UPSTREAM column.
const BUILT_ROLE: &str = "(built org: regular, no proxy cache)";

/// The built org as a regular org: created when missing (`POST /api/v1/organization/` and
/// nothing else: it never gets a proxy-cache config). `Ok((false, why))` when it exists with a
/// proxy-cache config: pushes into such an org go through Quay's proxy model (QUAY.md records
/// only a superuser pushing there), so it is reported and left alone.
async fn create_built(client: &QuayClient, org: &str) -> Result<(bool, String)> {
    if !client.org_exists(org).await? {
        client.create_org(org).await?;
        return Ok((true, "org created".into()));
    }
    Ok(match client.proxycache(org).await? {
        None => (true, "unchanged".into()),
        Some(p) => (false, misconfigured(&p)),
    })
}

fn misconfigured(p: &ProxyCache) -> String {
    format!(
        "MISCONFIGURED: has a proxy-cache config ({}); the built org must be a regular org (warm pushes into it); left alone",
        describe(p)
    )
}

enum Outcome {
    Created,
    Unchanged,
    Differs,
    Replaced,
}

async fn create_one(
    client: &QuayClient,
    org: &str,
    want: &ProxyCacheSpec,
    force: bool,
) -> Result<(Outcome, String)> {
    let mut made = Vec::new();
    if !client.org_exists(org).await? {
        client.create_org(org).await?;
        made.push("org created");
    }
    match client.proxycache(org).await? {
        None => {
            if let Err(e) = client.create_proxycache(org, want).await {
                if made.is_empty() {
                    return Err(e);
                }
                // An org without its proxy-cache config is no cache: remove what this run made.
                return Err(match client.delete_org(org).await {
                    Ok(_) => e.context(
                        "creating its proxy-cache config failed, so the org this run had just created was deleted again (Quay keeps its name reserved until its namespace garbage collection runs)",
                    ),
                    Err(d) => e.context(format!(
                        "creating its proxy-cache config failed, and deleting the org this run had just created failed too ({d:#}): the org exists without a config"
                    )),
                });
            }
            made.push("proxy cache created");
            Ok((
                Outcome::Created,
                format!("{} ({})", made.join(", "), describe(&want.settings())),
            ))
        }
        Some(have) => match difference(&have, &want.settings()) {
            None => Ok((Outcome::Unchanged, "unchanged".to_string())),
            Some(diff) if force => {
                replace(client, org, &have, want).await?;
                Ok((
                    Outcome::Replaced,
                    format!("replaced: was {diff}; credentials set on the old config are gone"),
                ))
            }
            Some(diff) => Ok((
                Outcome::Differs,
                format!("DIFFERS: {diff}; left alone (--force replaces it)"),
            )),
        },
    }
}

pub async fn delete(args: &DeleteArgs, global: &Global) -> Result<bool> {
    let (mapping, orgs, client) = super::open(&args.conn, global).await?;
    if !args.yes {
        eprint!(
            "Delete {} cache orgs on {} and everything cached in them ({} … {}){}? [y/N] ",
            orgs.len(),
            mapping.cache.host,
            orgs.first().map(|o| o.org.as_str()).unwrap_or(""),
            orgs.last().map(|o| o.org.as_str()).unwrap_or(""),
            match &mapping.built_org {
                Some(b) => format!(", and the built org {b} with the images warm built in it"),
                None => String::new(),
            }
        );
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).ok();
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
            eprintln!("nothing deleted");
            return Ok(true);
        }
    }
    let (mut deleted, mut absent, mut failed) = (0, 0, 0);
    let names = orgs
        .iter()
        .map(|o| o.org.as_str())
        .chain(mapping.built_org.as_deref());
    for org in names {
        match client.delete_org(org).await {
            Ok(true) => {
                deleted += 1;
                println!("{org:<40} deleted");
            }
            Ok(false) => {
                absent += 1;
                println!("{org:<40} absent already");
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {org}: {e:#}");
            }
        }
    }
    println!(
        "{} cache orgs{} on {}: {deleted} deleted, {absent} absent already, {failed} failed",
        orgs.len(),
        if mapping.built_org.is_some() {
            " and the built org"
        } else {
            ""
        },
        mapping.cache.host
    );
    if deleted > 0 {
        println!("Quay deletes orgs in the background and keeps their names reserved until its namespace garbage collection purges them (about a minute with its worker running): `orgs create` of these names fails with \"Username is not available\" until then.");
    }
    Ok(failed > 0)
}

/// Whether the upstream answers `GET /v2/` from here, reached as Quay's config for the org says:
/// `insecure` is plain HTTP (Quay refuses an http upstream without it), else HTTPS, trusting
/// the job's CA for that endpoint. Any HTTP status counts: 401 is normal.
async fn probe(o: &CacheOrg, config: Option<&ProxyCache>) -> String {
    let (upstream, insecure) = match config {
        Some(p) => (p.upstream_registry.as_str(), p.insecure),
        None => (o.upstream.as_str(), o.insecure),
    };
    let host = upstream.split('/').next().unwrap_or(upstream);
    let host = if host == crate::reference::DOCKER_HUB {
        "registry-1.docker.io"
    } else {
        host
    };
    let scheme = if insecure { "http" } else { "https" };
    let mut b = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5));
    let ca = o
        .endpoint
        .as_ref()
        .filter(|ep| ep.address == host)
        .and_then(|ep| ep.ca.as_ref());
    if let Some(pem) = ca.and_then(|c| std::fs::read(c).ok()) {
        if let Ok(cert) = reqwest::Certificate::from_pem(&pem) {
            b = b.add_root_certificate(cert);
        }
    }
    let Ok(http) = b.build() else {
        return "no (client)".into();
    };
    match http.get(format!("{scheme}://{host}/v2/")).send().await {
        Ok(r) => format!(
            "yes (HTTP {}{})",
            r.status().as_u16(),
            if insecure { ", plain HTTP" } else { "" }
        ),
        Err(e) if e.is_timeout() => "no (timeout)".into(),
        Err(e) if e.is_connect() => format!(
            "no (cannot connect{})",
            if insecure { ", plain HTTP" } else { "" }
        ),
        Err(_) => "no".into(),
    }
}

pub async fn status(args: &StatusArgs, global: &Global) -> Result<bool> {
    let (mapping, orgs, client) = super::open(&args.conn, global).await?;
    println!(
        "{:<40} {:<40} {:<12} {:<12} REACHABLE",
        "ORG", "UPSTREAM", "EXPIRATION", "CREDENTIALS"
    );
    let mut failed = 0;
    for o in &orgs {
        let mut config = None;
        let (upstream, expiration) = match client.org_exists(&o.org).await {
            Ok(false) => ("(no org)".to_string(), "-".to_string()),
            Ok(true) => match client.proxycache(&o.org).await {
                Ok(Some(p)) => {
                    let u = if p.upstream_registry == o.upstream {
                        p.upstream_registry.clone()
                    } else {
                        format!("{} (wanted {})", p.upstream_registry, o.upstream)
                    };
                    let e = format!("{}s", p.expiration_s);
                    config = Some(p);
                    (u, e)
                }
                Ok(None) => ("(no proxy cache)".to_string(), "-".to_string()),
                Err(e) => {
                    failed += 1;
                    eprintln!("error: {}: {e:#}", o.org);
                    continue;
                }
            },
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: {e:#}", o.org);
                continue;
            }
        };
        let reachable = if args.no_probe {
            "-".to_string()
        } else {
            probe(o, config.as_ref()).await
        };
        // Quay's API never returns upstream credentials, so whether some are set is unknowable
        // from outside; say so instead of guessing.
        println!(
            "{:<40} {:<40} {:<12} {:<12} {reachable}",
            o.org, upstream, expiration, "not shown"
        );
    }
    if let Some(built) = &mapping.built_org {
        let state = match client.org_exists(built).await {
            Ok(false) => Ok("(no org)".to_string()),
            Ok(true) => client.proxycache(built).await.map(|p| match p {
                None => "regular org (no proxy cache)".to_string(),
                Some(p) => {
                    failed += 1;
                    misconfigured(&p)
                }
            }),
            Err(e) => Err(e),
        };
        match state {
            Ok(state) => println!("{built:<40} built org: {state}"),
            Err(e) => {
                failed += 1;
                eprintln!("error: {built} (built org): {e:#}");
            }
        }
    }
    println!("CREDENTIALS: Quay's API never returns upstream credentials; `prewarm quay credentials` reports what it sets.");
    Ok(failed > 0)
}
