//! Which upstreams a site mirrors through its cache, and where each lives on the cache.
//!
//! The upstreams come from a domain list (one host per line, as the site's
//! `mirror.domain.list`) or from a job: the registries of everything its plan would fetch
//! (images, release payloads and their components, catalogs and their bundles, an ISC's
//! content — expanded by [`crate::sources::collect`], the code `prewarm plan` uses) plus its
//! `cache.orgs` prefixes. A job's `registries:` endpoint for a host is what a Quay proxy-cache
//! org must reach, so it becomes that org's `upstream_registry`. Where an upstream prefix lives on the cache is never computed here: it is read
//! off [`CacheConfig::cache_reference`], the one mapping every command shares, by mapping a
//! probe repository under the prefix and taking the probe back off. Both `prewarm quay` (which
//! org proxies which upstream) and `prewarm mirror-config` (which prefix mirrors to where)
//! are built from [`Mapping`].

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::job::{CacheConfig, Endpoint, Job};
use crate::reference::Reference;

/// The default domain list, relative to the working directory.
pub const DEFAULT_DOMAIN_LIST: &str = "image-lists/mirror.domain.list";

/// A repository name no real upstream path ends in; mapped and then cut off again.
const PROBE: &str = "prewarm-mapping-probe";

/// One upstream prefix (`quay.io`, `quay.io/openshift-release-dev`) and its place on the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The source prefix, as registries.conf spells it (`docker.io`, never `index.docker.io`).
    pub source: String,
    /// `cache-host[:port][/org[/path]]`: what replaces `source` in a pulled reference.
    pub location: String,
}

/// A Quay cache org and the upstream it proxies (`upstream_registry` in Quay's API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOrg {
    pub org: String,
    /// The source prefix as images name it (`quay.io`, `quay.io/openshift-release-dev`); its
    /// host is the pull-secret key for the org's upstream credentials.
    pub source: String,
    /// What Quay reaches: `source`, or `source` on the job's endpoint for its host.
    pub upstream: String,
    /// The job says the upstream's endpoint is plain HTTP / unverified TLS.
    pub insecure: bool,
    /// The job's `registries:` endpoint and CA for the source's host, when it has one.
    pub endpoint: Option<Endpoint>,
}

impl CacheOrg {
    /// The source's host (`quay.io`).
    pub fn source_host(&self) -> &str {
        self.source.split('/').next().unwrap_or(&self.source)
    }

    /// What to tell the user when the job moves the upstream to another endpoint.
    pub fn endpoint_note(&self) -> Option<String> {
        let ep = self.endpoint.as_ref()?;
        let host = self.source_host();
        let mut note = format!(
            "{}: the job serves {host} from {} (registries.{host}.endpoint), so that endpoint is what Quay must reach: the org's upstream is {}{}",
            self.org,
            ep.address,
            self.upstream,
            if self.insecure { " (insecure: plain HTTP)" } else { "" }
        );
        if let Some(ca) = &ep.ca {
            note.push_str(&format!(
                "; its TLS is signed by {}: Quay must trust that CA (Quay's extra_ca_certs)",
                ca.display()
            ));
        }
        Some(note)
    }
}

/// The upstream prefixes of a site, each with its mirror location, sorted by source.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub cache: CacheConfig,
    pub mirrors: Vec<Mirror>,
    /// Per upstream host, where the job says it is served from (its `registries:` entries).
    pub endpoints: BTreeMap<String, Endpoint>,
    /// The regular org `warm` pushes what it builds into (`cache.built_org`): only for a job
    /// that builds something (see [`Job::builds_images`]).
    pub built_org: Option<String>,
}

/// A host line from a domain list, normalised as image references normalise registries
/// (`index.docker.io` → `docker.io`). A line may carry a namespace (`quay.io/openshift-release-dev`).
fn normalise_prefix(line: &str, origin: &str) -> Result<String> {
    // Host names are case-insensitive; Quay org names are lowercase.
    let line = &match line.split_once('/') {
        Some((h, rest)) => format!("{}/{rest}", h.to_ascii_lowercase()),
        None => line.to_ascii_lowercase(),
    };
    let r: Reference = format!("{line}/{PROBE}")
        .parse()
        .with_context(|| format!("{origin}: `{line}` is not a registry host[:port][/namespace]"))?;
    let host = line.split('/').next().unwrap_or(line);
    if line.contains("://") || !(r.registry() == host || is_hub(host)) {
        bail!("{origin}: `{line}` is not a registry host[:port][/namespace]");
    }
    let repo = r.repository();
    let ns = repo
        .strip_suffix(PROBE)
        .map(|s| s.trim_end_matches('/'))
        .unwrap_or("");
    // `docker.io/x` parses as `docker.io/library/x`: a bare Hub host keeps no namespace.
    let ns = if r.registry() == crate::reference::DOCKER_HUB && !line.contains('/') {
        ""
    } else {
        ns
    };
    Ok(if ns.is_empty() {
        r.registry().to_string()
    } else {
        format!("{}/{ns}", r.registry())
    })
}

fn is_hub(host: &str) -> bool {
    matches!(host, "index.docker.io" | "registry-1.docker.io")
}

/// Read a domain list: one upstream per line, blank lines and `#` comments ignored, duplicates
/// (including `docker.io` / `index.docker.io`, the same registry) dropped.
pub fn read_domain_list(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read domain list {}", path.display()))?;
    let mut out: Vec<String> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let origin = format!("{}:{}", path.display(), n + 1);
        let prefix = normalise_prefix(line, &origin)?;
        if !out.contains(&prefix) {
            out.push(prefix);
        }
    }
    if out.is_empty() {
        bail!("{}: the domain list names no host", path.display());
    }
    Ok(out)
}

/// Where `prefix` lives on the cache, as `cache_reference` maps it.
pub fn mirror_location(cache: &CacheConfig, prefix: &str) -> String {
    let (host, ns) = prefix.split_once('/').unwrap_or((prefix, ""));
    let repo = if ns.is_empty() {
        PROBE.to_string()
    } else {
        format!("{ns}/{PROBE}")
    };
    let mapped = cache.cache_reference(&Reference::new(host, &repo, Some("latest"), None));
    let path = mapped.repository();
    let path = path
        .strip_suffix(PROBE)
        .unwrap_or(path)
        .trim_end_matches('/');
    if path.is_empty() {
        mapped.registry().to_string()
    } else {
        format!("{}/{path}", mapped.registry())
    }
}

impl Mapping {
    /// The mirrors of `upstreams` (and of the cache's `orgs` prefixes) on `cache`.
    pub fn new(cache: CacheConfig, upstreams: &[String]) -> Mapping {
        let mut by_source = BTreeMap::new();
        let prefixes = upstreams.iter().chain(cache.orgs.keys());
        for prefix in prefixes {
            by_source.insert(prefix.clone(), mirror_location(&cache, prefix));
        }
        let mirrors = by_source
            .into_iter()
            .map(|(source, location)| Mirror { source, location })
            .collect();
        Mapping {
            cache,
            mirrors,
            endpoints: BTreeMap::new(),
            built_org: None,
        }
    }

    /// The job's `registries:` entries (endpoint, insecure, CA) for the upstream hosts, and its
    /// built org when it builds images.
    pub fn with_endpoints(mut self, job: Option<&Job>) -> Mapping {
        if let Some(job) = job {
            for host in job.registries.keys() {
                self.endpoints.insert(host.clone(), job.endpoint(host));
            }
            if job.builds_images() {
                self.built_org = Some(self.cache.built_org.clone());
            }
        }
        self
    }

    /// The Quay cache orgs this mapping needs, each with its `upstream_registry`.
    ///
    /// Quay serves `org/R` from `upstream_registry/R`, so a prefix `P` mapped to `org/sub`
    /// needs `P` to end in `/sub` (the upstream is then `P` without it). Anything else, or two
    /// prefixes wanting one org with different upstreams, cannot be a Quay proxy-cache org.
    pub fn cache_orgs(&self) -> Result<Vec<CacheOrg>> {
        if !self.cache.default_orgs && self.cache.orgs.is_empty() {
            bail!("cache.default_orgs is false: the cache serves paths 1:1 (a distribution proxy), there are no Quay cache orgs to manage");
        }
        let mut orgs: BTreeMap<String, String> = BTreeMap::new();
        for m in &self.mirrors {
            let path = m
                .location
                .strip_prefix(&self.cache.host)
                .unwrap_or("")
                .trim_start_matches('/');
            let (org, sub) = path.split_once('/').unwrap_or((path, ""));
            if org.is_empty() {
                bail!(
                    "`{}` maps to the cache's root ({}), not to a cache org",
                    m.source,
                    m.location
                );
            }
            let upstream = if sub.is_empty() {
                m.source.clone()
            } else {
                match m.source.strip_suffix(&format!("/{sub}")) {
                    Some(u) => u.to_string(),
                    None => bail!(
                        "`{}` maps to `{}`: a Quay proxy-cache org serves `{org}/R` from `<upstream>/R`, so `{}` needs its own org",
                        m.source,
                        m.location,
                        m.source
                    ),
                }
            };
            if !valid_quay_org(org) {
                bail!("`{org}` (for `{}`) is not a valid Quay org name: lowercase [a-z0-9] with ._- separators, 2 to 255 characters", m.source);
            }
            match orgs.get(org) {
                Some(u) if *u != upstream => bail!(
                    "org `{org}` would proxy both `{u}` and `{upstream}`; map one of them to another org in cache.orgs"
                ),
                _ => {
                    orgs.insert(org.to_string(), upstream);
                }
            }
        }
        Ok(orgs
            .into_iter()
            .map(|(org, source)| self.cache_org(org, source))
            .collect())
    }

    /// The org for `source`, its upstream moved to the job's endpoint for its host if any.
    fn cache_org(&self, org: String, source: String) -> CacheOrg {
        let (host, ns) = source.split_once('/').unwrap_or((&source, ""));
        let Some(ep) = self.endpoints.get(host) else {
            return CacheOrg {
                org,
                upstream: source.clone(),
                source,
                insecure: false,
                endpoint: None,
            };
        };
        let upstream = if ns.is_empty() {
            ep.address.clone()
        } else {
            format!("{}/{ns}", ep.address)
        };
        let moved = ep.address != host || ep.ca.is_some();
        CacheOrg {
            org,
            upstream,
            insecure: ep.insecure,
            endpoint: moved.then(|| ep.clone()),
            source,
        }
    }
}

/// Quay's org name rule: `^([a-z0-9]+(?:[._-][a-z0-9]+)*)$`, 2–255 characters.
pub fn valid_quay_org(s: &str) -> bool {
    (2..=255).contains(&s.len())
        && s.split(['.', '_', '-']).all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// Where the site's upstreams and cache come from, shared by `prewarm quay` and
/// `prewarm mirror-config`.
#[derive(Debug, Clone, clap::Args)]
pub struct SiteArgs {
    /// The cache (Quay) host, `host[:port]`. Default: the job's `cache.host`.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub quay: Option<String>,
    /// A job file: its `cache` section (host, `orgs` overrides) is the mapping, its
    /// `registries:` endpoints are what Quay reaches, and the registries of everything its plan
    /// would fetch (images, releases and their components, channels, catalogs, ISC) are the
    /// upstreams unless `--domain-list` is given.
    #[arg(long, value_name = "FILE")]
    pub job: Option<std::path::PathBuf>,
    /// Upstream hosts, one per line. Default: image-lists/mirror.domain.list, unless `--job`
    /// is given.
    #[arg(long, value_name = "FILE")]
    pub domain_list: Option<std::path::PathBuf>,
}

impl SiteArgs {
    /// The mapping these arguments describe; every error names the flag or file at fault. A
    /// job is read as `prewarm plan` reads it (its ISC merged) and its upstreams are those of
    /// everything its plan would fetch, expanded by [`crate::sources::collect`] (which reads
    /// release payloads and catalogs), plus its `cache.orgs` prefixes.
    pub async fn mapping(&self, global: &crate::args::Global) -> Result<Mapping> {
        let Some(path) = self.job.as_deref() else {
            let cache = self.cache_config(None)?;
            let list = self.domain_list.as_deref();
            let upstreams = read_domain_list(list.unwrap_or(Path::new(DEFAULT_DOMAIN_LIST)))?;
            return Ok(Mapping::new(cache, &upstreams));
        };
        let (job, registries) = crate::load::load(path, global, None, None)?;
        let cache = self.cache_config(Some(&job))?;
        if let Some(list) = &self.domain_list {
            let upstreams = read_domain_list(list)?;
            return Ok(Mapping::new(cache, &upstreams).with_endpoints(Some(&job)));
        }
        let collected = crate::sources::collect(&job, &registries).await?;
        if let Some(f) = collected.failures.first() {
            bail!(
                "{}: cannot tell which upstreams the plan needs: {} ({}): {}{}",
                path.display(),
                f.reference,
                f.origin,
                f.error,
                match collected.failures.len() {
                    1 => String::new(),
                    n => format!(" (and {} more sources that could not be read)", n - 1),
                }
            );
        }
        let mut upstreams: Vec<String> = Vec::new();
        for (r, _) in &collected.references {
            let host = r.registry().to_string();
            if !upstreams.contains(&host) {
                upstreams.push(host);
            }
        }
        if upstreams.is_empty() && cache.orgs.is_empty() {
            bail!(
                "{}: the job's plan fetches nothing and it has no cache.orgs prefix: no upstream to mirror",
                path.display()
            );
        }
        Ok(Mapping::new(cache, &upstreams).with_endpoints(Some(&job)))
    }

    /// The cache: the job's `cache` section, its host replaced by `--quay`.
    pub fn cache_config(&self, job: Option<&Job>) -> Result<CacheConfig> {
        let mut cache = match job.and_then(|j| j.cache.clone().map(|c| (j, c))) {
            Some((j, mut c)) => {
                c.ca = c.ca.map(|p| j.relative(&p));
                c
            }
            None => CacheConfig {
                host: String::new(),
                insecure: false,
                ca: None,
                default_orgs: true,
                orgs: BTreeMap::new(),
                built_org: crate::job::BUILT_ORG.into(),
            },
        };
        if let Some(q) = &self.quay {
            if q.is_empty() || q.contains('/') || q.contains("://") {
                bail!("--quay: `{q}` is not a `host[:port]`");
            }
            cache.host = q.clone();
        }
        if cache.host.is_empty() {
            bail!("no cache host: give --quay HOST[:PORT] or a --job with cache.host");
        }
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(host: &str, orgs: &[(&str, &str)]) -> CacheConfig {
        CacheConfig {
            host: host.into(),
            insecure: false,
            ca: None,
            default_orgs: true,
            orgs: orgs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            built_org: crate::job::BUILT_ORG.into(),
        }
    }

    #[test]
    fn prefixes_normalise_and_reject_junk() {
        assert_eq!(
            normalise_prefix("index.docker.io", "l:1").unwrap(),
            "docker.io"
        );
        assert_eq!(normalise_prefix("docker.io", "l:1").unwrap(), "docker.io");
        assert_eq!(
            normalise_prefix("registry.local:5000", "l:1").unwrap(),
            "registry.local:5000"
        );
        assert_eq!(
            normalise_prefix("quay.io/openshift-release-dev", "l:1").unwrap(),
            "quay.io/openshift-release-dev"
        );
        assert_eq!(normalise_prefix("Quay.IO", "l:1").unwrap(), "quay.io");
        for bad in ["https://quay.io", "quay", "a b", "foo/bar", "quay.io/UPPER"] {
            let err = normalise_prefix(bad, "list:3").unwrap_err().to_string();
            assert!(err.starts_with("list:3: "), "{bad}: {err}");
        }
    }

    #[test]
    fn locations_come_from_the_job_mapping() {
        let c = cache(
            "q:8443",
            &[
                ("quay.io/openshift-release-dev", "cache_ocp"),
                ("r.example/a", ""),
            ],
        );
        assert_eq!(mirror_location(&c, "quay.io"), "q:8443/cache_quay_io");
        assert_eq!(mirror_location(&c, "docker.io"), "q:8443/cache_docker_io");
        assert_eq!(
            mirror_location(&c, "quay.io/openshift-release-dev"),
            "q:8443/cache_ocp"
        );
        assert_eq!(mirror_location(&c, "r.example/a"), "q:8443");
        let m = Mapping::new(c, &["quay.io".into(), "docker.io".into()]);
        let err = m.cache_orgs().unwrap_err().to_string();
        assert!(err.contains("r.example/a") && err.contains("root"), "{err}");
    }

    #[test]
    fn a_job_endpoint_becomes_the_orgs_upstream() {
        let job = Job::parse(
            "cache:\n  host: q:8443\n  orgs:\n    quay.io/openshift-release-dev: cache_ocp\nregistries:\n  quay.io:\n    endpoint: 127.0.0.1:5000\n    insecure: true\n  registry.redhat.io:\n    insecure: true\n",
            Path::new("/site/job.yaml"),
        )
        .unwrap();
        let m = Mapping::new(
            job.cache.clone().unwrap(),
            &[
                "quay.io".into(),
                "registry.redhat.io".into(),
                "docker.io".into(),
            ],
        )
        .with_endpoints(Some(&job));
        let orgs = m.cache_orgs().unwrap();
        let got: Vec<(&str, &str, &str, bool, bool)> = orgs
            .iter()
            .map(|o| {
                (
                    o.org.as_str(),
                    o.source.as_str(),
                    o.upstream.as_str(),
                    o.insecure,
                    o.endpoint.is_some(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("cache_docker_io", "docker.io", "docker.io", false, false),
                (
                    "cache_ocp",
                    "quay.io/openshift-release-dev",
                    "127.0.0.1:5000/openshift-release-dev",
                    true,
                    true
                ),
                ("cache_quay_io", "quay.io", "127.0.0.1:5000", true, true),
                // Same host, only plain HTTP: no move to tell, but Quay must be told `insecure`.
                (
                    "cache_registry_redhat_io",
                    "registry.redhat.io",
                    "registry.redhat.io",
                    true,
                    false
                ),
            ]
        );
        let note = orgs[2].endpoint_note().unwrap();
        assert!(
            note.contains("the job serves quay.io from 127.0.0.1:5000")
                && note.contains("(insecure: plain HTTP)"),
            "{note}"
        );
        assert_eq!(orgs[0].endpoint_note(), None);
    }

    #[test]
    fn cache_orgs_with_namespaces() {
        let c = cache("q:8443", &[("quay.io/openshift-release-dev", "cache_ocp")]);
        let m = Mapping::new(
            c,
            &[
                "quay.io".into(),
                "quay.io/openshift-release-dev/ocp-release".into(),
                "registry.local:5000".into(),
            ],
        );
        let orgs = m.cache_orgs().unwrap();
        let pairs: Vec<(&str, &str)> = orgs
            .iter()
            .map(|o| (o.org.as_str(), o.upstream.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("cache_ocp", "quay.io/openshift-release-dev"),
                ("cache_quay_io", "quay.io"),
                ("cache_registry_local_5000", "registry.local:5000"),
            ]
        );
        let c = cache("q:8443", &[("quay.io/a/b", "mirrors/c")]);
        let err = Mapping::new(c, &[]).cache_orgs().unwrap_err().to_string();
        assert!(
            err.contains("quay.io/a/b") && err.contains("own org"),
            "{err}"
        );
        assert!(!valid_quay_org("Cache"));
        assert!(!valid_quay_org("a"));
        assert!(!valid_quay_org("cache__x"));
        assert!(valid_quay_org("cache_registry_local_5000"));
    }
}
