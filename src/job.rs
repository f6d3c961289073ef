//! The job file: the one description of a run (YAML).
//!
//! It names the cache and how upstreams map to its orgs, how to reach each registry
//! (endpoint overrides, TLS), which platforms to keep, how much to do at once, and the
//! sources. Unknown keys are errors naming their path, because a misspelt key silently
//! ignored is a cache that is silently cold.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::reference::Reference;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// The pull-through cache (a Quay host, or a distribution proxy).
    #[serde(default)]
    pub cache: Option<CacheConfig>,
    /// Per logical host: where it is served from and how to talk to it.
    #[serde(default)]
    pub registries: BTreeMap<String, RegistryConfig>,
    /// Resolve tags against the source registries (default) or through the cache, for sites
    /// where only the cache is reachable.
    #[serde(default)]
    pub resolve: ResolveVia,
    #[serde(default)]
    pub platforms: Platforms,
    /// How many transfers run at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Image references.
    #[serde(default)]
    pub images: Vec<String>,
    /// Files of image references, one per line, `#` comments; relative to the job file.
    #[serde(default)]
    pub image_lists: Vec<PathBuf>,
    /// `prewarm refresh`: which tags are never re-checked upstream (see the README, "Refresh").
    #[serde(default)]
    pub refresh: crate::immutable::RefreshRules,
    /// Per logical host: requests per second and per run at most (see the README, "Refresh").
    #[serde(default)]
    pub rate_limits: BTreeMap<String, crate::registry::budget::RateLimit>,
    /// OCP release payloads by pullspec (tag or digest): the release image and every component.
    #[serde(default)]
    pub releases: Vec<String>,
    /// Update-graph channels whose selected releases are added as `releases`.
    #[serde(default)]
    pub channels: Vec<crate::specs::ChannelSpec>,
    /// Where the update graph is read from (default: the public update service).
    #[serde(default)]
    pub graph: Option<crate::specs::GraphConfig>,
    /// Operator catalogs (file-based catalogs) and the packages to take from them.
    #[serde(default)]
    pub operators: Vec<crate::specs::OperatorSpec>,
    /// References (or whole repositories, without tag/digest) never planned.
    #[serde(default)]
    pub blocked_images: Vec<String>,
    /// An oc-mirror ImageSetConfiguration (v2alpha1) whose content is added to this job;
    /// relative to the job file.
    #[serde(default)]
    pub isc: Option<PathBuf>,
    /// Release signatures to fetch and keep for every selected release.
    #[serde(default)]
    pub signatures: Option<crate::specs::SignatureConfig>,
    /// Messages for the user from reading the job (unsupported ISC sections).
    #[serde(skip)]
    pub notes: Vec<String>,
    /// Where this job was read from, for relative paths and error messages.
    #[serde(skip)]
    pub path: PathBuf,
}

fn default_concurrency() -> usize {
    8
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// `host[:port]` of the cache.
    pub host: String,
    /// Plain HTTP / no TLS verification for the cache.
    #[serde(default)]
    pub insecure: bool,
    /// A CA certificate (PEM) to trust for the cache, besides the system roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Map each upstream host to its own `cache_<host>` org (default true). False suits a
    /// plain distribution proxy, which serves paths 1:1.
    #[serde(default = "yes")]
    pub default_orgs: bool,
    /// Overrides: source prefix (`quay.io/openshift-release-dev`) → org path on the cache
    /// (`""` for none). The longest prefix wins, as in registries.conf.
    #[serde(default)]
    pub orgs: BTreeMap<String, String>,
    /// A regular (writable) org on the cache host where `warm` pushes what it builds —
    /// filtered catalogs, the graph-data image — as `<org>/<source repository>`: a cache org
    /// is a read-only proxy.
    #[serde(default = "built_org")]
    pub built_org: String,
}

fn yes() -> bool {
    true
}

/// The default of `cache.built_org`.
pub const BUILT_ORG: &str = "prewarm";

fn built_org() -> String {
    BUILT_ORG.to_string()
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Serve this logical host from another `host[:port]` (a loopback lab, a corporate mirror).
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ResolveVia {
    #[default]
    Source,
    Cache,
}

/// An `os/arch[/variant]` to keep from multi-platform images.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(format!("platform `{s}` is not `os/arch[/variant]`")),
        }
    }
}

impl TryFrom<String> for Platform {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Platform> for String {
    fn from(p: Platform) -> String {
        p.to_string()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// `all`, or a list of platforms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Platforms {
    All,
    List(Vec<Platform>),
}

impl Default for Platforms {
    fn default() -> Self {
        Platforms::List(vec![Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }])
    }
}

impl Platforms {
    /// Whether a manifest-list entry's platform is wanted. A wanted platform without a variant
    /// matches every variant of its architecture.
    pub fn wants(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        match self {
            Platforms::All => true,
            Platforms::List(list) => list.iter().any(|p| {
                p.os == os
                    && p.architecture == architecture
                    && (p.variant.is_none() || p.variant.as_deref() == variant)
            }),
        }
    }
}

impl<'de> Deserialize<'de> for Platforms {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let list = match Raw::deserialize(d)? {
            Raw::One(s) if s == "all" => return Ok(Platforms::All),
            Raw::One(s) => vec![s],
            Raw::Many(v) => v,
        };
        let parsed = list
            .iter()
            .map(|s| s.parse())
            .collect::<Result<Vec<Platform>, _>>();
        parsed
            .map(Platforms::List)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for Platforms {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Platforms::All => s.serialize_str("all"),
            Platforms::List(l) => l.serialize(s),
        }
    }
}

/// How a registry is reached (defined with the transport, which is built from it).
pub use crate::registry::config::Endpoint;

impl Job {
    pub fn load(path: &Path) -> Result<Job> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read job file {}", path.display()))?;
        Job::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Job> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let mut job: Job = serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            // serde_yaml_ng prefixes its own, shorter path ("cache: unknown field …"): drop it.
            let inner = e.into_inner().to_string();
            let inner = match inner.split_once(": ") {
                Some((prefix, rest)) if !prefix.contains(' ') => rest.to_string(),
                _ => inner,
            };
            if at == "." || at.is_empty() {
                anyhow::anyhow!("{}: {inner}", path.display())
            } else {
                anyhow::anyhow!("{}: {at}: {inner}", path.display())
            }
        })?;
        job.path = path.to_path_buf();
        job.validate()?;
        Ok(job)
    }

    fn validate(&self) -> Result<()> {
        let file = self.path.display();
        if self.concurrency == 0 {
            bail!("{file}: concurrency: must be at least 1");
        }
        if let Some(cache) = &self.cache {
            if cache.host.is_empty() || cache.host.contains('/') {
                bail!(
                    "{file}: cache.host: `{}` is not a `host[:port]`",
                    cache.host
                );
            }
            for (prefix, org) in &cache.orgs {
                if prefix.is_empty() || prefix.ends_with('/') {
                    bail!("{file}: cache.orgs: `{prefix}` is not a `host[/namespace]` prefix");
                }
                if !org.is_empty() && !org.split('/').all(valid_org) {
                    bail!("{file}: cache.orgs.{prefix}: `{org}` is not a valid org name ([a-z0-9] with ._- separators)");
                }
            }
            let built = &cache.built_org;
            if built.is_empty() || !valid_org(built) {
                bail!("{file}: cache.built_org: `{built}` is not a valid org name ([a-z0-9] with ._- separators)");
            }
        }
        for (host, limit) in &self.rate_limits {
            if let Some(problem) = limit.problem() {
                bail!("{file}: rate_limits.{host}.{problem}");
            }
        }
        for (host, reg) in &self.registries {
            if let Some(ep) = &reg.endpoint {
                if ep.is_empty() || ep.contains('/') {
                    bail!("{file}: registries.{host}.endpoint: `{ep}` is not a `host[:port]`");
                }
            }
        }
        Ok(())
    }

    /// Every source reference of the job, in order, deduplicated; each bad one is an error
    /// naming where it came from.
    pub fn references(&self) -> Result<Vec<(Reference, String)>> {
        let mut out: Vec<(Reference, String)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let file = self.path.display().to_string();
        for (i, s) in self.images.iter().enumerate() {
            let r: Reference = s.parse().with_context(|| format!("{file}: images[{i}]"))?;
            if seen.insert(r.clone()) {
                out.push((r, format!("{file}: images[{i}]")));
            }
        }
        for list in &self.image_lists {
            let path = self.relative(list);
            for (r, origin) in read_image_list(&path)? {
                if seen.insert(r.clone()) {
                    out.push((r, origin));
                }
            }
        }
        Ok(out)
    }

    /// A path from the job file, taken relative to the job file's directory.
    pub fn relative(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    /// How to reach logical host `host`.
    pub fn endpoint(&self, host: &str) -> Endpoint {
        if let Some(cache) = &self.cache {
            if cache.host == host {
                return Endpoint {
                    address: host.to_string(),
                    insecure: cache.insecure,
                    ca: cache.ca.clone().map(|c| self.relative(&c)),
                };
            }
        }
        match self.registries.get(host) {
            Some(r) => Endpoint {
                address: r.endpoint.clone().unwrap_or_else(|| host.to_string()),
                insecure: r.insecure,
                ca: r.ca.as_ref().map(|c| self.relative(c)),
            },
            None => Endpoint {
                address: host.to_string(),
                insecure: false,
                ca: None,
            },
        }
    }

    /// What the transport is built from: this job's endpoints (its cache and `registries:`
    /// overrides) and rate limits, with `auth` and `policy`.
    pub fn transport(
        &self,
        auth: crate::auth::AuthStore,
        policy: crate::registry::Policy,
    ) -> crate::registry::TransportConfig {
        let hosts = self
            .cache
            .iter()
            .map(|c| c.host.clone())
            .chain(self.registries.keys().cloned());
        crate::registry::TransportConfig {
            endpoints: hosts.map(|h| (h.clone(), self.endpoint(&h))).collect(),
            auth,
            policy,
            rate_limits: self.rate_limits.clone(),
        }
    }

    /// Whether `warm` builds images into `cache.built_org`: a catalog with package filters (a
    /// filtered catalog) or a graph-data image.
    pub fn builds_images(&self) -> bool {
        self.operators.iter().any(|o| !o.packages.is_empty())
            || self.graph.as_ref().is_some_and(|g| g.image.is_some())
    }

    pub fn cache(&self) -> Result<&CacheConfig> {
        self.cache.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "{}: cache: this command needs a `cache` section with a `host`",
                self.path.display()
            )
        })
    }
}

fn valid_org(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

/// Read an image list: one reference per line, blank lines and `#` comments ignored.
pub fn read_image_list(path: &Path) -> Result<Vec<(Reference, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read image list {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let origin = format!("{}:{}", path.display(), n + 1);
        let r: Reference = line.parse().with_context(|| origin.clone())?;
        out.push((r, origin));
    }
    Ok(out)
}

/// `cache_` + host, lowercased, with `.` and `:` mapped to `_` (Quay org names allow neither).
pub fn default_org(host: &str) -> String {
    format!(
        "cache_{}",
        host.to_ascii_lowercase().replace(['.', ':'], "_")
    )
}

impl CacheConfig {
    /// Where `source` is pulled through the cache: `<cache>/<org>/<rest>`, keeping tag and digest.
    pub fn cache_reference(&self, source: &Reference) -> Reference {
        let full = source.repo_path();
        let best = self
            .orgs
            .iter()
            .filter(|(prefix, _)| full == **prefix || full.starts_with(&format!("{prefix}/")))
            .max_by_key(|(prefix, _)| prefix.len());
        let repository = match best {
            Some((prefix, org)) => {
                let rest = full[prefix.len()..].trim_start_matches('/');
                // As registries.conf does: the matched prefix is replaced by the org path.
                match (org.is_empty(), rest.is_empty()) {
                    (true, true) => source.repository().to_string(),
                    _ => join_path(org, rest),
                }
            }
            None if self.default_orgs => {
                join_path(&default_org(source.registry()), source.repository())
            }
            None => source.repository().to_string(),
        };
        Reference::new(
            &self.host,
            &repository,
            source.tag(),
            source.digest().cloned(),
        )
    }
}

fn join_path(a: &str, b: &str) -> String {
    if a.is_empty() || b.is_empty() {
        format!("{a}{b}")
    } else {
        format!("{a}/{b}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(text: &str) -> Result<Job> {
        Job::parse(text, Path::new("job.yaml"))
    }

    #[test]
    fn unknown_keys_name_their_path() {
        let err = job("cache:\n  host: q:8443\n  hots: x\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("job.yaml: cache.hots: unknown field `hots`"),
            "{err}"
        );
        let err = job("registries:\n  quay.io:\n    endpont: x\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("registries.quay.io.endpont"), "{err}");
        let err = job("imagez: []\n").unwrap_err().to_string();
        assert!(err.contains("job.yaml") && err.contains("imagez"), "{err}");
        let err = job("images: [\n").unwrap_err().to_string();
        assert!(err.starts_with("job.yaml: "), "{err}");
        let err = job("images: ['UPPER/x']\n")
            .unwrap()
            .references()
            .unwrap_err();
        assert!(format!("{err:#}").contains("images[0]"), "{err:#}");
    }

    #[test]
    fn platforms_parse() {
        assert_eq!(job("platforms: all").unwrap().platforms, Platforms::All);
        let j = job("platforms: [linux/arm64/v8, linux/amd64]").unwrap();
        assert!(j.platforms.wants("linux", "arm64", Some("v8")));
        assert!(j.platforms.wants("linux", "amd64", None));
        assert!(!j.platforms.wants("linux", "s390x", None));
        assert!(Platforms::default().wants("linux", "amd64", None));
        assert!(job("platforms: [linux]")
            .unwrap_err()
            .to_string()
            .contains("platforms"));
    }

    #[test]
    fn org_mapping_longest_prefix_wins() {
        let j = job(
            "cache:\n  host: mirror.example:8443\n  orgs:\n    quay.io/openshift-release-dev: cache_ocp\n    quay.io/openshift-release-dev/ocp-release: mirrors/ocp-release\n",
        )
        .unwrap();
        let c = j.cache().unwrap();
        let map = |s: &str| c.cache_reference(&s.parse().unwrap()).to_string();
        assert_eq!(
            map("quay.io/a/b:t"),
            "mirror.example:8443/cache_quay_io/a/b:t"
        );
        assert_eq!(
            map("quay.io/openshift-release-dev/ocp-v4.0-art-dev:x"),
            "mirror.example:8443/cache_ocp/ocp-v4.0-art-dev:x"
        );
        assert_eq!(
            map("quay.io/openshift-release-dev/ocp-release:4.20.0"),
            "mirror.example:8443/mirrors/ocp-release:4.20.0"
        );
        assert_eq!(
            map("nginx"),
            "mirror.example:8443/cache_docker_io/library/nginx:latest"
        );
        assert_eq!(
            map("registry.local:5000/x/y:1"),
            "mirror.example:8443/cache_registry_local_5000/x/y:1"
        );
        let j = job("cache:\n  host: proxy:5000\n").unwrap();
        assert_eq!(j.cache().unwrap().built_org, "prewarm", "the default");
        let bad = job("cache:\n  host: proxy:5000\n  built_org: Mirror/x\n").unwrap_err();
        assert!(
            format!("{bad:#}").contains("cache.built_org: `Mirror/x` is not a valid org name"),
            "{bad:#}"
        );
        let j = job("cache:\n  host: proxy:5000\n  default_orgs: false\n").unwrap();
        assert_eq!(
            j.cache()
                .unwrap()
                .cache_reference(&"quay.io/a/b:t".parse().unwrap())
                .to_string(),
            "proxy:5000/a/b:t"
        );
    }

    #[test]
    fn endpoints_and_lists() {
        let dir = std::env::temp_dir().join(format!("prewarm-job-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("l.txt"),
            "# comment\nquay.io/a/b:1\n\n  quay.io/a/c:2  # trailing\nquay.io/a/b:1\n",
        )
        .unwrap();
        let j = Job::parse(
            "registries:\n  quay.io:\n    endpoint: 127.0.0.1:5000\n    insecure: true\nimages: [quay.io/a/b:1]\nimage_lists: [l.txt]\n",
            &dir.join("job.yaml"),
        )
        .unwrap();
        let refs = j.references().unwrap();
        assert_eq!(refs.len(), 2);
        assert!(refs[1].1.ends_with("l.txt:4"));
        assert_eq!(j.endpoint("quay.io").address, "127.0.0.1:5000");
        assert!(j.endpoint("quay.io").insecure);
        assert!(!j.endpoint("registry.redhat.io").insecure);
        std::fs::write(dir.join("l.txt"), "quay.io/a/b:bad tag\n").unwrap();
        let err = format!("{:#}", j.references().unwrap_err());
        assert!(err.contains("l.txt:1") && err.contains("bad tag"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
