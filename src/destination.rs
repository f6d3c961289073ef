//! Where `copy` and `import` push: a registry named `REGISTRY[/PREFIX]` on the command line and
//! the repository each source image lands in there. Below the transfer engine so the bundle
//! chain and inventory (which ask the destination by digest) share the one mapping.
//!
//! Repositories: with a prefix, `PREFIX/<source repository>`; without one, the cache-org
//! mapping (`<org>/<source repository>`, the job's `cache.orgs` when a job says so, else
//! `cache_<host>`), so a registry filled by copy or import serves the same paths as a cache.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::job::{default_org, CacheConfig, Endpoint, Job};
use crate::reference::Reference;

/// `REGISTRY[/PREFIX]` as given to `--to`, with how to reach the registry.
#[derive(Debug, Clone)]
pub struct Destination {
    pub host: String,
    pub prefix: Option<String>,
    /// The job's cache-org mapping, used when there is no prefix.
    pub orgs: Option<CacheConfig>,
}

impl Destination {
    /// Parse `REGISTRY[/PREFIX]`.
    pub fn parse(to: &str) -> Result<Destination> {
        let (host, prefix) = match to.split_once('/') {
            Some((h, p)) => (h, Some(p.trim_end_matches('/'))),
            None => (to, None),
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
        {
            bail!("--to: `{to}` is not `REGISTRY[/PREFIX]` (a host[:port], then an optional path)");
        }
        if let Some(p) = prefix {
            // The prefix must itself be a repository path.
            format!("{host}/{p}:x")
                .parse::<Reference>()
                .map_err(|e| anyhow::anyhow!("--to: prefix `{p}`: {}", e.reason))?;
        }
        Ok(Destination {
            host: host.to_string(),
            prefix: prefix.filter(|p| !p.is_empty()).map(str::to_string),
            orgs: None,
        })
    }

    /// The destination repository of `source`.
    pub fn repository(&self, source: &Reference) -> String {
        match (&self.prefix, &self.orgs) {
            (Some(p), _) => format!("{p}/{}", source.repository()),
            (None, Some(cache)) => cache.cache_reference(source).repository().to_string(),
            (None, None) => format!("{}/{}", default_org(source.registry()), source.repository()),
        }
    }

    /// How the destination is reached: its address and TLS from the job when the job names
    /// the host, else `--to-ca` / `--to-insecure` (credentials come from the auth file, by
    /// the transport).
    pub fn endpoint(&self, job: Option<&Job>, ca: Option<PathBuf>, insecure: bool) -> Endpoint {
        let mut endpoint = match job {
            Some(j) => j.endpoint(&self.host),
            None => Endpoint {
                address: self.host.clone(),
                insecure: false,
                ca: None,
            },
        };
        if ca.is_some() {
            endpoint.ca = ca;
        }
        endpoint.insecure |= insecure;
        endpoint
    }
}
