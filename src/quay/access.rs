//! `prewarm quay pull-access` and `prewarm quay quota`.
//!
//! Pulling through a Quay cache org needs an authenticated org member; robots belong to one
//! org, so each cache org gets its own team (role `member`) and robot, and the pull secret
//! carries one namespace-scoped entry per org (`quay:8443/cache_quay_io`). A job that builds
//! images adds its built org (`cache.built_org`, a regular org): there the team has role
//! `creator`, so its robot can push what `warm` builds. A rerun changes nothing: the team's
//! members are read first, existing robots' tokens are read back, and the output is rewritten
//! only when its bytes would change, atomically, and never after an error. Quota is one
//! `limit_bytes` per org plus optional Warning / Reject limits.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use base64::Engine as _;

use super::client::{QuayClient, Robot, TeamRole};
use super::ConnArgs;
use crate::args::Global;

#[derive(Debug, clap::Args)]
pub struct PullAccessArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Robot short name (the robot is `<org>+<name>`).
    #[arg(long, default_value = "puller", value_name = "NAME")]
    pub robot: String,
    /// Team that holds the robot (role member).
    #[arg(long, default_value = "pullers", value_name = "NAME")]
    pub team: String,
    /// Where to write the robots' credentials (pull-secret format, mode 0600).
    #[arg(long, short, value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct QuotaArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Storage quota per cache org, in bytes.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit_bytes: u64,
    /// Warn at this percentage of the quota.
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u64).range(1..=100))]
    pub warning: Option<u64>,
    /// Reject pushes (and caching) at this percentage of the quota.
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u64).range(1..=100))]
    pub reject: Option<u64>,
}

fn valid_short(s: &str) -> bool {
    (2..=255).contains(&s.len())
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

pub async fn pull_access(args: &PullAccessArgs, global: &Global) -> Result<bool> {
    if !valid_short(&args.robot) {
        bail!(
            "--robot: `{}` is not a Quay robot name (lowercase letter, then [a-z0-9_])",
            args.robot
        );
    }
    if !valid_short(&args.team) {
        bail!(
            "--team: `{}` is not a Quay team name (lowercase letter, then [a-z0-9_])",
            args.team
        );
    }
    let (mapping, orgs, client) = super::open(&args.conn, global).await?;
    let mut auths = BTreeMap::new();
    let mut failed = 0;
    let mut targets: Vec<(&str, TeamRole)> = orgs
        .iter()
        .map(|o| (o.org.as_str(), TeamRole::Member))
        .collect();
    if let Some(built) = &mapping.built_org {
        targets.push((built, TeamRole::Creator));
    }
    for &(org, role) in &targets {
        match grant(&client, org, &args.team, &args.robot, role).await {
            Ok((robot, did)) => {
                println!(
                    "{:<40} robot {} in team {}: {}",
                    org,
                    robot.name,
                    args.team,
                    if did.is_empty() {
                        "unchanged".to_string()
                    } else {
                        did.join(", ")
                    }
                );
                let auth = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", robot.name, robot.token));
                auths.insert(
                    format!("{}/{org}", mapping.cache.host),
                    serde_json::json!({ "auth": auth }),
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {org}: {e:#}");
            }
        }
    }
    let out = args.output.display();
    if failed > 0 {
        // A pull secret missing orgs would break pulls that work today: keep what is there.
        eprintln!(
            "{out} not written: {failed} of {} orgs failed; an existing file is left as it was",
            targets.len()
        );
        return Ok(true);
    }
    let text = serde_json::to_string_pretty(&serde_json::json!({ "auths": auths }))? + "\n";
    if std::fs::read(&args.output).ok().as_deref() == Some(text.as_bytes()) {
        println!("{} robots' credentials in {out}: unchanged", auths.len());
    } else {
        crate::fsutil::write_private(&args.output, text.as_bytes())?;
        println!("{} robots' credentials written to {out}", auths.len());
    }
    Ok(false)
}

/// Team `team` holding robot `org+short`, each made only when missing; the robot with its
/// token (read back through the API) and what was done. A cache org's team has role `member`
/// (members pull through it); the built org's has role `creator` (its robot pushes into it,
/// creating repositories, and Quay makes it admin of each it creates): a team of that name
/// with a lesser role is raised to it.
async fn grant(
    client: &QuayClient,
    org: &str,
    team: &str,
    short: &str,
    role: TeamRole,
) -> Result<(Robot, Vec<String>)> {
    let mut did = Vec::new();
    if role == TeamRole::Creator {
        if !client.org_exists(org).await? {
            bail!("the built org (cache.built_org) does not exist: `prewarm quay orgs create --job JOB` creates it");
        }
        match client.team_role(org, team).await?.as_deref() {
            None => {
                client.team(org, team, role).await?;
                did.push("team created (role creator)".to_string());
            }
            Some("creator" | "admin") => {}
            Some(other) => {
                client.team(org, team, role).await?;
                did.push(format!("team role {other} → creator"));
            }
        }
    }
    let members = match client.team_members(org, team).await? {
        Some(m) => m,
        None => {
            client.team(org, team, role).await?;
            did.push("team created".to_string());
            Vec::new()
        }
    };
    let (robot, created) = client.robot(org, short).await?;
    if created {
        did.push("robot created".to_string());
    }
    if !members.contains(&robot.name) {
        client.add_team_member(org, team, &robot.name).await?;
        did.push("robot added to the team".to_string());
    }
    Ok((robot, did))
}

pub async fn quota(args: &QuotaArgs, global: &Global) -> Result<bool> {
    let (mapping, orgs, client) = super::open(&args.conn, global).await?;
    let mut failed = 0;
    for o in &orgs {
        let r = async {
            let mut did = Vec::new();
            let quotas = client.quotas(&o.org).await?;
            let q = match quotas.first() {
                None => {
                    client.create_quota(&o.org, args.limit_bytes).await?;
                    did.push(format!("quota {} bytes set", args.limit_bytes));
                    client
                        .quotas(&o.org)
                        .await?
                        .into_iter()
                        .next()
                        .context("Quay lists no quota after creating one")?
                }
                Some(q) if q.limit_bytes != args.limit_bytes => {
                    client.update_quota(&o.org, q.id, args.limit_bytes).await?;
                    did.push(format!(
                        "quota {} → {} bytes",
                        q.limit_bytes, args.limit_bytes
                    ));
                    q.clone()
                }
                Some(q) => q.clone(),
            };
            for (kind, pct) in [("Warning", args.warning), ("Reject", args.reject)] {
                let Some(pct) = pct else { continue };
                match q.limits.iter().find(|l| l.kind == kind) {
                    None => {
                        client.create_quota_limit(&o.org, q.id, kind, pct).await?;
                        did.push(format!("{kind} at {pct}% set"));
                    }
                    Some(l) if l.limit_percent != pct => {
                        client
                            .update_quota_limit(&o.org, q.id, l.id, kind, pct)
                            .await?;
                        did.push(format!("{kind} {}% → {pct}%", l.limit_percent));
                    }
                    Some(_) => {}
                }
            }
            anyhow::Ok(if did.is_empty() {
                "unchanged".to_string()
            } else {
                did.join(", ")
            })
        }
        .await;
        match r {
            Ok(line) => println!("{:<40} {line}", o.org),
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: {e:#}", o.org);
            }
        }
    }
    println!(
        "{} cache orgs on {}: {failed} failed",
        orgs.len(),
        mapping.cache.host
    );
    Ok(failed > 0)
}
