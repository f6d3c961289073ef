//! File-based catalogs (operator-registry's declcfg): load the documents a selection needs and
//! select bundles as oc-mirror does.
//!
//! Every non-directory file under the catalog root is a stream of JSON objects or YAML
//! documents whatever its extension; `.indexignore` files name files to skip (glob patterns
//! relative to their directory). Documents are read one at a time and only what selection needs
//! is kept (names, upgrade edges, versions, images): the CSVs, icons and descriptions a real
//! catalog carries in every bundle are dropped as they are read.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::version::{Constraint, Version};
use super::{OperatorSpec, PackageSpec};

#[derive(Debug, Default)]
pub struct Catalog {
    pub packages: BTreeMap<String, Package>,
}

#[derive(Debug, Default)]
pub struct Package {
    pub name: String,
    pub default_channel: Option<String>,
    pub channels: BTreeMap<String, Vec<Entry>>,
    pub bundles: BTreeMap<String, Bundle>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub name: String,
    #[serde(default)]
    pub replaces: Option<String>,
    #[serde(default)]
    pub skips: Vec<String>,
    #[serde(default)]
    pub skip_range: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Bundle {
    pub name: String,
    pub image: String,
    pub version: Option<Version>,
    /// `(name, image)`, as listed (the bundle image itself usually among them).
    pub related: Vec<(String, String)>,
    /// `olm.package.required`: `(package, versionRange)`.
    pub requires: Vec<(String, String)>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PackageDoc {
    name: String,
    #[serde(default)]
    default_channel: Option<String>,
}

#[derive(Deserialize)]
struct ChannelDoc {
    name: String,
    package: String,
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BundleDoc {
    name: String,
    package: String,
    image: String,
    #[serde(default)]
    properties: Vec<Property>,
    #[serde(default)]
    related_images: Vec<RelatedImage>,
}

#[derive(Deserialize)]
struct Property {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    value: serde_json::Value,
}

#[derive(Deserialize)]
struct RelatedImage {
    #[serde(default)]
    name: String,
    image: String,
}

impl Catalog {
    /// Load every FBC file under `root`; `only` restricts to these packages (others' documents
    /// are read and dropped). `shown` is how files are named in errors (image, path).
    pub fn load(root: &Path, only: Option<&HashSet<String>>, shown: &str) -> Result<Catalog> {
        let mut cat = Catalog::default();
        let mut files = Vec::new();
        walk(root, root, &mut Vec::new(), &mut files)?;
        for (path, rel) in files {
            cat.load_file(&path, &format!("{shown}/{rel}"), only)?;
        }
        Ok(cat)
    }

    fn load_file(
        &mut self,
        path: &Path,
        shown: &str,
        only: Option<&HashSet<String>>,
    ) -> Result<()> {
        let file = std::fs::File::open(path).with_context(|| format!("cannot read {shown}"))?;
        let mut r = BufReader::with_capacity(256 << 10, file);
        let first = loop {
            let buf = r
                .fill_buf()
                .with_context(|| format!("cannot read {shown}"))?;
            if buf.is_empty() {
                return Ok(());
            }
            match buf.iter().position(|b| !b.is_ascii_whitespace()) {
                Some(p) => {
                    let c = buf[p];
                    r.consume(p);
                    break c;
                }
                None => {
                    let n = buf.len();
                    r.consume(n);
                }
            }
        };
        if first == b'{' {
            let stream = serde_json::Deserializer::from_reader(r).into_iter::<serde_json::Value>();
            for (i, doc) in stream.enumerate() {
                let doc = doc.map_err(|e| anyhow::anyhow!("{shown}: document {}: {e}", i + 1))?;
                self.add(doc, &format!("{shown}: document {}", i + 1), only)?;
            }
        } else {
            let mut text = String::new();
            r.read_to_string(&mut text)
                .with_context(|| format!("{shown}: not UTF-8 text"))?;
            for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
                let what = format!("{shown}: document {}", i + 1);
                let value = serde_json::Value::deserialize(doc)
                    .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
                if value.is_null() {
                    continue;
                }
                self.add(value, &what, only)?;
            }
        }
        Ok(())
    }

    fn add(
        &mut self,
        doc: serde_json::Value,
        what: &str,
        only: Option<&HashSet<String>>,
    ) -> Result<()> {
        let Some(schema) = doc
            .get("schema")
            .and_then(|s| s.as_str())
            .map(str::to_string)
        else {
            bail!("{what}: schema: missing (every catalog document names its schema)");
        };
        let owner = match schema.as_str() {
            "olm.package" => doc.get("name"),
            _ => doc.get("package"),
        }
        .and_then(|v| v.as_str());
        if let (Some(only), Some(owner)) = (only, owner) {
            if !only.contains(owner) {
                return Ok(());
            }
        }
        let what = format!("{what} ({schema})");
        match schema.as_str() {
            "olm.package" => {
                let p: PackageDoc = typed(doc, &what)?;
                let pkg = self.package(&p.name);
                pkg.default_channel = p.default_channel;
            }
            "olm.channel" => {
                let c: ChannelDoc = typed(doc, &what)?;
                self.package(&c.package).channels.insert(c.name, c.entries);
            }
            "olm.bundle" => {
                let b: BundleDoc = typed(doc, &what)?;
                let version = b
                    .properties
                    .iter()
                    .find(|p| p.kind == "olm.package")
                    .and_then(|p| p.value.get("version"))
                    .and_then(|v| v.as_str())
                    .and_then(Version::parse);
                let requires = b
                    .properties
                    .iter()
                    .filter(|p| p.kind == "olm.package.required")
                    .filter_map(|p| {
                        let name = p.value.get("packageName")?.as_str()?;
                        let range = p.value.get("versionRange")?.as_str().unwrap_or("");
                        Some((name.to_string(), range.to_string()))
                    })
                    .collect();
                let bundle = Bundle {
                    requires,
                    name: b.name.clone(),
                    image: b.image,
                    version,
                    related: b
                        .related_images
                        .into_iter()
                        .map(|r| (r.name, r.image))
                        .collect(),
                };
                self.package(&b.package).bundles.insert(b.name, bundle);
            }
            // olm.deprecations, olm.csv.metadata and schemas of other tools: not selection.
            _ => {}
        }
        Ok(())
    }

    fn package(&mut self, name: &str) -> &mut Package {
        self.packages
            .entry(name.to_string())
            .or_insert_with(|| Package {
                name: name.to_string(),
                ..Package::default()
            })
    }
}

fn typed<T: serde::de::DeserializeOwned>(doc: serde_json::Value, what: &str) -> Result<T> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            anyhow::anyhow!("{what}: {}", e.into_inner())
        } else {
            anyhow::anyhow!("{what}: {path}: {}", e.into_inner())
        }
    })
}

/// Files under `dir`, sorted, skipping what `.indexignore` files (inherited downwards) name.
pub(crate) fn walk(
    root: &Path,
    dir: &Path,
    ignores: &mut Vec<(String, Vec<String>)>,
    out: &mut Vec<(PathBuf, String)>,
) -> Result<()> {
    let rel_dir = dir
        .strip_prefix(root)
        .unwrap_or(Path::new(""))
        .to_string_lossy()
        .to_string();
    let pushed = match std::fs::read_to_string(dir.join(".indexignore")) {
        Ok(text) => {
            let patterns = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| l.trim_start_matches('/').to_string())
                .collect();
            ignores.push((rel_dir.clone(), patterns));
            true
        }
        Err(_) => false,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        let rel = if rel_dir.is_empty() {
            name.clone()
        } else {
            format!("{rel_dir}/{name}")
        };
        if name == ".indexignore" || ignored(ignores, &rel) {
            continue;
        }
        let ft = e.file_type()?;
        if ft.is_dir() {
            walk(root, &path, ignores, out)?;
        } else if ft.is_file() {
            out.push((path, rel));
        }
    }
    if pushed {
        ignores.pop();
    }
    Ok(())
}

fn ignored(ignores: &[(String, Vec<String>)], rel: &str) -> bool {
    ignores.iter().any(|(base, patterns)| {
        let local = if base.is_empty() {
            rel
        } else {
            match rel.strip_prefix(&format!("{base}/")) {
                Some(l) => l,
                None => return false,
            }
        };
        let name = local.rsplit('/').next().unwrap_or(local);
        patterns
            .iter()
            .any(|p| glob(p.trim_end_matches('/'), local) || glob(p, name))
    })
}

/// `*` (any run without `/`), `?` (one char): enough for .indexignore files in the field.
fn glob(pattern: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], s) || (!s.is_empty() && s[0] != b'/' && go(p, &s[1..])),
            (Some(b'?'), Some(c)) if *c != b'/' => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), s.as_bytes())
}

/// A kept bundle: package, bundle name.
pub type Kept = (String, String);

/// Select bundles for one catalog entry (FORMATS.md), then (unless `skipDependencies`) add
/// what the kept bundles require.
pub fn select(cat: &Catalog, op: &OperatorSpec, what: &str) -> Result<BTreeSet<Kept>> {
    let mut kept = select_direct(cat, op, what)?;
    if !op.skip_dependencies {
        add_dependencies(cat, &mut kept)?;
    }
    Ok(kept)
}

/// oc-mirror keeps the operators a kept bundle depends on (`olm.package.required`): for each,
/// the highest bundle of the required package whose version is in `versionRange`, from its
/// default channel (any channel if the default has none), and so on for what that requires.
/// A requirement no bundle meets is an error naming both.
pub fn add_dependencies(cat: &Catalog, kept: &mut BTreeSet<Kept>) -> Result<()> {
    let mut work: Vec<Kept> = kept.iter().cloned().collect();
    while let Some((pkg, bundle)) = work.pop() {
        let Some(b) = cat.packages.get(&pkg).and_then(|p| p.bundles.get(&bundle)) else {
            continue;
        };
        for (req, range) in &b.requires {
            let Some(dep) = cat.packages.get(req) else {
                bail!("bundle `{bundle}` requires package `{req}`, which is not in the catalog");
            };
            let want = parse_range(range).ok_or_else(|| {
                anyhow::anyhow!("bundle `{bundle}`: olm.package.required versionRange `{range}` is not a semver range")
            })?;
            let in_channel = |entries: &Vec<Entry>| {
                entries
                    .iter()
                    .filter_map(|e| {
                        let v = version_of(dep, &e.name)?;
                        range_matches(&want, v).then(|| (v.clone(), e.name.clone()))
                    })
                    .max()
            };
            let default = dep
                .default_channel
                .as_ref()
                .and_then(|c| dep.channels.get(c))
                .and_then(in_channel);
            let chosen = default.or_else(|| dep.channels.values().filter_map(in_channel).max());
            let Some((_, name)) = chosen else {
                bail!("bundle `{bundle}` requires `{req}` {range}, and no bundle of it is in that range");
            };
            let k = (req.clone(), name);
            if kept.insert(k.clone()) {
                work.push(k);
            }
        }
    }
    Ok(())
}

/// One comparator of a blang/semver range (`>=1.0.0`).
#[derive(Debug, Clone)]
pub struct Comparator {
    op: String,
    version: Version,
}

impl Comparator {
    fn matches(&self, v: &Version) -> bool {
        match self.op.as_str() {
            ">=" => v >= &self.version,
            "<=" => v <= &self.version,
            ">" => v > &self.version,
            "<" => v < &self.version,
            "!=" | "!" => v != &self.version,
            _ => v == &self.version,
        }
    }
}

/// A blang/semver range (`>=1.0.0 <2.0.0 || =3.1.0`) as alternatives of comparator sets.
/// Compared by semver order as blang does (pre-releases are not special-cased).
pub fn parse_range(range: &str) -> Option<Vec<Vec<Comparator>>> {
    if range.trim().is_empty() {
        return Some(vec![Vec::new()]);
    }
    range
        .split("||")
        .map(|alt| {
            let mut parts: Vec<String> = Vec::new();
            for tok in alt.split_whitespace() {
                match parts.last_mut() {
                    Some(last) if last.chars().all(|c| "<>=!".contains(c)) => last.push_str(tok),
                    _ => parts.push(tok.to_string()),
                }
            }
            parts
                .iter()
                .map(|p| {
                    let split = p.find(|c: char| !"<>=!".contains(c))?;
                    let (op, v) = p.split_at(split);
                    Some(Comparator {
                        op: op.to_string(),
                        version: Version::parse(v)?,
                    })
                })
                .collect()
        })
        .collect()
}

pub fn range_matches(range: &[Vec<Comparator>], v: &Version) -> bool {
    range.iter().any(|all| all.iter().all(|c| c.matches(v)))
}

/// Reject what oc-mirror v2 rejects in a catalog entry before any catalog is read: a bound that
/// is not a version, package-level `minVersion`/`maxVersion` together with a channel's, and
/// `full: true` together with any bound. `what` names the entry (`isc.yaml:
/// mirror.operators[0]`); each error is one line naming the package.
pub fn validate(op: &OperatorSpec, what: &str) -> Result<()> {
    for (i, p) in op.packages.iter().enumerate() {
        let at = format!("{what}.packages[{i}]");
        let pkg = Constraint::parse(p.min_version.as_deref(), p.max_version.as_deref(), &at)
            .map_err(|e| anyhow::anyhow!("{e} (package `{}`)", p.name))?;
        let mut any = pkg.is_some();
        for (j, c) in p.channels.iter().enumerate() {
            let cw = format!("{at}.channels[{j}]");
            let ch = Constraint::parse(c.min_version.as_deref(), c.max_version.as_deref(), &cw)
                .map_err(|e| anyhow::anyhow!("{e} (package `{}`)", p.name))?;
            if pkg.is_some() && ch.is_some() {
                bail!(
                    "{at}: package `{}`: its minVersion/maxVersion and channel `{}`'s are exclusive (oc-mirror: package.VersionRange and channel.VersionRange are exclusive); set the range on one of them",
                    p.name,
                    c.name
                );
            }
            any |= ch.is_some();
        }
        if op.full && any {
            bail!(
                "{at}: package `{}`: `full: true` cannot be mixed with minVersion/maxVersion (as in oc-mirror); drop one of them",
                p.name
            );
        }
    }
    Ok(())
}

/// How one channel is filtered.
enum Filter {
    /// Its head only.
    Head,
    /// Every entry (`full: true`).
    All,
    /// The bundles a version range keeps ([`ChannelGraph::in_range`]).
    Range(Constraint),
}

fn select_direct(cat: &Catalog, op: &OperatorSpec, what: &str) -> Result<BTreeSet<Kept>> {
    validate(op, what)?;
    let mut kept = BTreeSet::new();
    if op.packages.is_empty() {
        let filter = if op.full { Filter::All } else { Filter::Head };
        for pkg in cat.packages.values() {
            for ch in pkg.channels.keys() {
                for name in filter_channel(pkg, ch, &filter, what)? {
                    kept.insert((pkg.name.clone(), name));
                }
            }
        }
        return Ok(kept);
    }
    for (i, spec) in op.packages.iter().enumerate() {
        let what = format!("{what}.packages[{i}]");
        let pkg = cat.packages.get(&spec.name).ok_or_else(|| {
            anyhow::anyhow!("{what}.name: package `{}` is not in the catalog", spec.name)
        })?;
        for name in select_package(pkg, spec, op.full, &what)? {
            kept.insert((pkg.name.clone(), name));
        }
    }
    Ok(kept)
}

/// oc-mirror v2 (its catalog filter): no channels named and no range → the head of every
/// channel; no channels named with a package range → the default channel only, filtered by the
/// range (oc-mirror drops a package's other channels when none is named); a named channel
/// without its own range takes the package's; a range that leaves a named channel empty drops
/// it, and one that leaves the default channel empty is an error.
fn select_package(
    pkg: &Package,
    spec: &PackageSpec,
    full: bool,
    what: &str,
) -> Result<Vec<String>> {
    let range = |min: &Option<String>, max: &Option<String>, at: &str| {
        Constraint::parse(min.as_deref(), max.as_deref(), at)
    };
    let pkg_range = range(&spec.min_version, &spec.max_version, what)?;
    let mut chosen: Vec<(String, Option<Constraint>, String)> = Vec::new();
    if spec.channels.is_empty() && pkg_range.is_some() {
        // A package-level range selects within the default channel only, as oc-mirror's
        // catalog filter does: a package listed without channels keeps its default channel
        // and drops the others before the range is applied.
        let Some(default) = pkg
            .default_channel
            .as_ref()
            .filter(|c| pkg.channels.contains_key(*c))
        else {
            bail!(
                "{what}: package `{}` has no default channel to apply minVersion/maxVersion to; name its channels",
                pkg.name
            );
        };
        chosen.push((default.clone(), pkg_range.clone(), what.to_string()));
    } else if spec.channels.is_empty() {
        for ch in pkg.channels.keys() {
            chosen.push((ch.clone(), None, what.to_string()));
        }
    } else {
        for (j, c) in spec.channels.iter().enumerate() {
            let cw = format!("{what}.channels[{j}]");
            if !pkg.channels.contains_key(&c.name) {
                bail!(
                    "{cw}.name: package `{}` has no channel `{}` (it has {})",
                    pkg.name,
                    c.name,
                    pkg.channels.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            let r = range(&c.min_version, &c.max_version, &cw)?.or_else(|| pkg_range.clone());
            chosen.push((c.name.clone(), r, cw));
        }
    }
    let mut out = Vec::new();
    for (ch, range, cw) in chosen {
        let filter = match range {
            Some(r) => Filter::Range(r),
            None if full => Filter::All,
            None => Filter::Head,
        };
        let names = filter_channel(pkg, &ch, &filter, &cw)?;
        if names.is_empty() && pkg.default_channel.as_deref() == Some(ch.as_str()) {
            let Filter::Range(r) = &filter else {
                unreachable!("only a range empties a channel")
            };
            bail!(
                "{cw}: package `{}`: its default channel `{ch}` keeps no bundle in `{}` (oc-mirror refuses a range that empties the default channel)",
                pkg.name,
                r.text
            );
        }
        out.extend(names);
    }
    if out.is_empty() {
        bail!(
            "{what}: no bundle of package `{}` is in range in any channel",
            pkg.name
        );
    }
    Ok(out)
}

/// The entries `filter` keeps from channel `ch` of `pkg`.
fn filter_channel(pkg: &Package, ch: &str, filter: &Filter, what: &str) -> Result<Vec<String>> {
    let entries = &pkg.channels[ch];
    if let Filter::All = filter {
        return Ok(entries.iter().map(|e| e.name.clone()).collect());
    }
    let graph = ChannelGraph::build(entries)
        .map_err(|e| anyhow::anyhow!("{what}: package `{}` channel `{ch}`: {e}", pkg.name))?;
    Ok(match filter {
        Filter::Head => vec![graph.names[graph.head].to_string()],
        Filter::Range(r) => {
            let in_channel: HashSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
            graph
                .in_range(|n| version_of(pkg, n), r)
                .into_iter()
                // A `replaces` naming something outside the channel counts only when the
                // package has that bundle.
                .filter(|n| in_channel.contains(n) || pkg.bundles.contains_key(*n))
                .map(str::to_string)
                .collect()
        }
        Filter::All => unreachable!(),
    })
}

fn version_of<'a>(pkg: &'a Package, entry: &str) -> Option<&'a Version> {
    pkg.bundles.get(entry).and_then(|b| b.version.as_ref())
}

/// The head of a channel: the one entry no other entry replaces or skips.
/// The head of `entries` (a channel's entries, or a subset of them such as what a filtered
/// catalog keeps): the one no other entry replaces or skips, the highest version if several.
pub fn head_of_entries(
    pkg: &Package,
    channel: &str,
    entries: &[Entry],
    what: &str,
) -> Result<String> {
    let mut referenced = HashSet::new();
    for e in entries {
        if let Some(r) = &e.replaces {
            referenced.insert(r.as_str());
        }
        referenced.extend(e.skips.iter().map(String::as_str));
    }
    entries
        .iter()
        .filter(|e| !referenced.contains(e.name.as_str()))
        .max_by(|a, b| version_of(pkg, &a.name).cmp(&version_of(pkg, &b.name)))
        .map(|e| e.name.clone())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{what}: channel `{channel}` of package `{}` has no head (every entry is replaced or skipped)",
                pkg.name
            )
        })
}

pub fn head(pkg: &Package, channel: &str, what: &str) -> Result<String> {
    filter_channel(pkg, channel, &Filter::Head, what).map(|mut v| v.remove(0))
}

/// A channel's upgrade graph as OLM reads it: each entry's `replaces` and `skips` edges
/// (`skipRange` is not an edge). Names a `replaces`/`skips` mentions that are not entries
/// become nodes too. Built only when there is exactly one head and no cycle.
pub struct ChannelGraph<'a> {
    names: Vec<&'a str>,
    replaces: Vec<Option<usize>>,
    skips: Vec<Vec<usize>>,
    head: usize,
}

impl<'a> ChannelGraph<'a> {
    pub fn build(entries: &'a [Entry]) -> std::result::Result<Self, String> {
        if entries.is_empty() {
            return Err("channel has no entries".into());
        }
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        let mut g = ChannelGraph {
            names: Vec::new(),
            replaces: Vec::new(),
            skips: Vec::new(),
            head: 0,
        };
        let mut node = |g: &mut ChannelGraph<'a>, name: &'a str| -> usize {
            *index.entry(name).or_insert_with(|| {
                g.names.push(name);
                g.replaces.push(None);
                g.skips.push(Vec::new());
                g.names.len() - 1
            })
        };
        let mut problems = Vec::new();
        let mut seen = HashSet::new();
        for e in entries {
            if !seen.insert(e.name.as_str()) {
                problems.push(format!("duplicate channel entry `{}`", e.name));
                continue;
            }
            let me = node(&mut g, &e.name);
            if let Some(r) = &e.replaces {
                if *r == e.name {
                    problems.push(format!("entry `{}` replaces itself", e.name));
                }
                g.replaces[me] = Some(node(&mut g, r));
            }
            for s in &e.skips {
                if *s == e.name {
                    problems.push(format!("entry `{}` skips itself", e.name));
                }
                let t = node(&mut g, s);
                g.skips[me].push(t);
            }
        }
        // Who points at each node (a set: replacing and skipping the same one is one edge).
        let mut incoming: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); g.names.len()];
        for n in 0..g.names.len() {
            for t in g.replaces[n].iter().chain(&g.skips[n]) {
                incoming[*t].insert(n);
            }
        }
        let heads: Vec<usize> = entries
            .iter()
            .map(|e| index[e.name.as_str()])
            .filter(|n| incoming[*n].is_empty())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        match heads.len() {
            0 => problems.push("no channel head (every entry is replaced or skipped)".into()),
            1 => g.head = heads[0],
            _ => {
                let mut names: Vec<&str> = heads.iter().map(|h| g.names[*h]).collect();
                names.sort();
                problems.push(format!("multiple channel heads: {}", names.join(", ")));
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        // Walk from the head, releasing each edge once; what keeps an edge is on a cycle.
        let mut queue = vec![g.head];
        while let Some(cur) = queue.pop() {
            let targets: BTreeSet<usize> = g.replaces[cur]
                .iter()
                .chain(&g.skips[cur])
                .copied()
                .collect();
            for t in targets {
                if incoming[t].remove(&cur) && incoming[t].is_empty() {
                    queue.push(t);
                }
            }
        }
        if incoming.iter().any(|i| !i.is_empty()) {
            return Err("the upgrade graph of the channel has a cycle".into());
        }
        Ok(g)
    }

    /// The entries a version range keeps, as oc-mirror v2 keeps them: along the `replaces`
    /// chain from the head, count for each node the in-range bundles at or below it (itself,
    /// what it skips, what its `replaces` chain reaches; each bundle counted once, at the
    /// lowest node that reaches it). The new head is the lowest node with the highest count,
    /// so the channel head is left out when it is out of range and adds nothing; the tail is
    /// the first node counting nothing. Kept: every chain node from the new head down to the
    /// tail (exclusive), in range or not, and what each skips that is in range.
    pub fn in_range<'v>(
        &self,
        version: impl Fn(&str) -> Option<&'v Version>,
        range: &Constraint,
    ) -> Vec<&'a str> {
        let chain: Vec<usize> = {
            let mut c = vec![self.head];
            while let Some(next) = self.replaces[*c.last().expect("non-empty")] {
                c.push(next);
            }
            c
        };
        let hit = |n: usize| version(self.names[n]).is_some_and(|v| range.matches(v));
        let mut counted = HashSet::new();
        let mut counts = vec![0usize; chain.len()];
        for (pos, &n) in chain.iter().enumerate().rev() {
            let mut count = counts.get(pos + 1).copied().unwrap_or(0);
            for t in std::iter::once(n).chain(self.skips[n].iter().copied()) {
                if hit(t) && counted.insert(t) {
                    count += 1;
                }
            }
            counts[pos] = count;
        }
        let (mut top, mut best) = (0, None);
        let mut tail = chain.len();
        for (pos, &count) in counts.iter().enumerate() {
            if best.is_none_or(|b| count >= b) {
                top = pos;
                best = Some(count);
            }
            if count == 0 {
                tail = pos;
                break;
            }
        }
        let mut kept = Vec::new();
        let mut seen = HashSet::new();
        for &n in &chain[top..tail.max(top)] {
            if seen.insert(n) {
                kept.push(self.names[n]);
            }
            for &s in &self.skips[n] {
                if hit(s) && seen.insert(s) {
                    kept.push(self.names[s]);
                }
            }
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::PackageChannelSpec;

    fn fixture_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fbc-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("example-operator")).unwrap();
        std::fs::create_dir_all(dir.join("aws-load-balancer-operator")).unwrap();
        let fx = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        std::fs::copy(
            format!("{fx}/catalog.json"),
            dir.join("example-operator/catalog.json"),
        )
        .unwrap();
        std::fs::copy(
            format!("{fx}/catalog-aws-load-balancer-operator.json"),
            dir.join("aws-load-balancer-operator/catalog.json"),
        )
        .unwrap();
        std::fs::write(dir.join("README.md"), "# not a catalog\n").unwrap();
        std::fs::write(dir.join(".indexignore"), "*.md\n").unwrap();
        dir
    }

    #[test]
    fn fixture_catalogs_load_and_heads_are_selected() {
        let dir = fixture_dir();
        let cat = Catalog::load(&dir, None, "configs").unwrap();
        assert_eq!(cat.packages.len(), 2);
        let ex = &cat.packages["example-operator"];
        assert_eq!(ex.default_channel.as_deref(), Some("stable"));
        assert_eq!(head(ex, "stable", "t").unwrap(), "example-operator.v1.2.0");
        let op = OperatorSpec {
            catalog: "c".into(),
            ..OperatorSpec::default()
        };
        let kept = select(&cat, &op, "op").unwrap();
        assert!(kept.contains(&("example-operator".into(), "example-operator.v1.2.0".into())));
        // The head of every channel: alpha and stable-v0.1 both end at v0.0.1.
        assert_eq!(cat.packages["aws-load-balancer-operator"].channels.len(), 2);
        let want: BTreeSet<Kept> = [
            (
                "aws-load-balancer-operator",
                "aws-load-balancer-operator.v0.0.1",
            ),
            ("example-operator", "example-operator.v1.2.0"),
        ]
        .iter()
        .map(|(p, b)| (p.to_string(), b.to_string()))
        .collect();
        assert_eq!(kept, want);
        // Ranges on the olm.package version keep the chain.
        let op = OperatorSpec {
            catalog: "c".into(),
            packages: vec![PackageSpec {
                name: "example-operator".into(),
                channels: vec![PackageChannelSpec {
                    name: "stable".into(),
                    min_version: Some("1.1.0".into()),
                    max_version: None,
                }],
                ..PackageSpec::default()
            }],
            ..OperatorSpec::default()
        };
        let names: Vec<String> = select(&cat, &op, "op")
            .unwrap()
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        assert_eq!(
            names,
            ["example-operator.v1.1.0", "example-operator.v1.2.0"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_catalog_names_file_document_and_field() {
        let dir = std::env::temp_dir().join(format!("fbc-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("p")).unwrap();
        std::fs::write(
            dir.join("p/catalog.json"),
            r#"{"schema":"olm.package","name":"p"} {"schema":"olm.bundle","name":"p.v1","package":"p","properties":[]}"#,
        )
        .unwrap();
        let err = Catalog::load(&dir, None, "img:/configs")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "img:/configs/p/catalog.json: document 2 (olm.bundle): missing field `image`"
        );
        std::fs::write(
            dir.join("p/catalog.json"),
            "schema: olm.channel\nname: s\npackage: p\nentries: [{replaces: x}]\n",
        )
        .unwrap();
        let err = Catalog::load(&dir, None, "img:/configs")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "img:/configs/p/catalog.json: document 1 (olm.channel): entries[0]: missing field `name`"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dependencies_are_added_unless_skipped() {
        let mut cat = Catalog::default();
        let bundle = |pkg: &str, v: &str, requires: Vec<(String, String)>| Bundle {
            name: format!("{pkg}.v{v}"),
            image: format!("r.io/{pkg}@sha256:{}", "a".repeat(64)),
            version: Version::parse(v),
            related: Vec::new(),
            requires,
        };
        let entry = |pkg: &str, v: &str, replaces: Option<&str>| Entry {
            name: format!("{pkg}.v{v}"),
            replaces: replaces.map(|r| format!("{pkg}.v{r}")),
            skips: Vec::new(),
            skip_range: None,
        };
        let mut a = Package {
            name: "a".into(),
            ..Package::default()
        };
        a.channels
            .insert("s".into(), vec![entry("a", "1.0.0", None)]);
        let req = vec![("b".to_string(), ">=2.0.0 <3.0.0".to_string())];
        a.bundles
            .insert("a.v1.0.0".into(), bundle("a", "1.0.0", req));
        let mut b = Package {
            name: "b".into(),
            default_channel: Some("s".into()),
            ..Package::default()
        };
        b.channels.insert(
            "s".into(),
            vec![
                entry("b", "2.0.0", None),
                entry("b", "2.5.0", Some("2.0.0")),
                entry("b", "3.0.0", Some("2.5.0")),
            ],
        );
        for v in ["2.0.0", "2.5.0", "3.0.0"] {
            b.bundles
                .insert(format!("b.v{v}"), bundle("b", v, Vec::new()));
        }
        cat.packages.insert("a".into(), a);
        cat.packages.insert("b".into(), b);
        let mut op = OperatorSpec {
            catalog: "c".into(),
            packages: vec![PackageSpec {
                name: "a".into(),
                ..PackageSpec::default()
            }],
            ..OperatorSpec::default()
        };
        let names = |k: BTreeSet<Kept>| k.into_iter().map(|(_, b)| b).collect::<Vec<_>>();
        assert_eq!(
            names(select(&cat, &op, "op").unwrap()),
            ["a.v1.0.0", "b.v2.5.0"]
        );
        op.skip_dependencies = true;
        assert_eq!(names(select(&cat, &op, "op").unwrap()), ["a.v1.0.0"]);
    }

    /// `p`: default channel `stable` (1.0.0 → 1.1.0 → 1.2.0) and `fast` (1.1.0 → 1.2.0 →
    /// 2.0.0), so the default channel's head (1.2.0) is not the other's (2.0.0). `m`: one
    /// channel where `0.8.4-5+0.1687199951.p` replaces `0.8.4-5`, then `0.8.5-1`.
    fn two_channel_catalog() -> Catalog {
        let mut cat = Catalog::default();
        let mut add = |pkg: &str, default: &str, channels: &[(&str, &[&str])]| {
            let mut p = Package {
                name: pkg.into(),
                default_channel: Some(default.into()),
                ..Package::default()
            };
            for (ch, versions) in channels {
                let mut entries = Vec::new();
                for (i, v) in versions.iter().enumerate() {
                    let name = format!("{pkg}.v{v}");
                    entries.push(Entry {
                        name: name.clone(),
                        replaces: (i > 0).then(|| format!("{pkg}.v{}", versions[i - 1])),
                        skips: Vec::new(),
                        skip_range: None,
                    });
                    p.bundles.insert(
                        name.clone(),
                        Bundle {
                            name,
                            image: format!("r.io/{pkg}@sha256:{}", "b".repeat(64)),
                            version: Version::parse(v),
                            related: Vec::new(),
                            requires: Vec::new(),
                        },
                    );
                }
                p.channels.insert(ch.to_string(), entries);
            }
            cat.packages.insert(pkg.into(), p);
        };
        add(
            "p",
            "stable",
            &[
                ("stable", &["1.0.0", "1.1.0", "1.2.0"]),
                ("fast", &["1.1.0", "1.2.0", "2.0.0"]),
            ],
        );
        add(
            "m",
            "stable",
            &[("stable", &["0.8.4-5", "0.8.4-5+0.1687199951.p", "0.8.5-1"])],
        );
        cat
    }

    fn pick(
        cat: &Catalog,
        pkg: &str,
        range: (Option<&str>, Option<&str>),
        channels: &[(&str, Option<&str>, Option<&str>)],
    ) -> Result<Vec<String>> {
        let op = OperatorSpec {
            catalog: "c".into(),
            skip_dependencies: true,
            packages: vec![PackageSpec {
                name: pkg.into(),
                min_version: range.0.map(Into::into),
                max_version: range.1.map(Into::into),
                channels: channels
                    .iter()
                    .map(|(n, min, max)| PackageChannelSpec {
                        name: n.to_string(),
                        min_version: min.map(Into::into),
                        max_version: max.map(Into::into),
                    })
                    .collect(),
                ..PackageSpec::default()
            }],
            ..OperatorSpec::default()
        };
        Ok(select(cat, &op, "isc.yaml: mirror.operators[0]")?
            .into_iter()
            .map(|(_, b)| b.rsplit_once(".v").unwrap().1.to_string())
            .collect())
    }

    #[test]
    fn package_ranges_select_within_the_default_channel_only() {
        let cat = two_channel_catalog();
        // No range: the head of each channel.
        assert_eq!(
            pick(&cat, "p", (None, None), &[]).unwrap(),
            ["1.2.0", "2.0.0"]
        );
        // minVersion: from it up to the head of the default channel (`stable`); `fast` and
        // its head 2.0.0 are not considered, as in oc-mirror's catalog filter.
        assert_eq!(
            pick(&cat, "p", (Some("1.1.0"), None), &[]).unwrap(),
            ["1.1.0", "1.2.0"]
        );
        // maxVersion: the default channel's head 1.2.0 is above it and left out.
        assert_eq!(
            pick(&cat, "p", (None, Some("1.1.0")), &[]).unwrap(),
            ["1.0.0", "1.1.0"]
        );
        // min = max: only that bundle of the default channel.
        assert_eq!(
            pick(&cat, "p", (Some("1.1.0"), Some("1.1.0")), &[]).unwrap(),
            ["1.1.0"]
        );
        // A range that empties the default channel is refused (`fast` is never looked at).
        assert_eq!(
            pick(&cat, "p", (None, Some("1.0.0")), &[]).unwrap(),
            ["1.0.0"]
        );
        let err = pick(&cat, "p", (Some("2.0.0"), None), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("isc.yaml: mirror.operators[0].packages[0]: package `p`: its default channel `stable` keeps no bundle in `>=2.0.0`"),
            "{err}"
        );
        // A named channel without its own range takes the package's.
        assert_eq!(
            pick(&cat, "p", (Some("2.0.0"), None), &[("fast", None, None)]).unwrap(),
            ["2.0.0"]
        );
        assert_eq!(
            pick(&cat, "p", (None, None), &[("fast", None, Some("1.2.0"))]).unwrap(),
            ["1.1.0", "1.2.0"]
        );
    }

    #[test]
    fn build_metadata_keeps_both_bundles_in_every_case() {
        let cat = two_channel_catalog();
        let both = ["0.8.4-5", "0.8.4-5+0.1687199951.p"];
        for range in [
            (Some("0.8.4-5"), Some("0.8.4-5")),
            (None, Some("0.8.4-5")),
            (None, Some("0.8.4-5+0.1687199951.p")),
        ] {
            assert_eq!(pick(&cat, "m", range, &[]).unwrap(), both, "{range:?}");
        }
        assert_eq!(
            pick(&cat, "m", (Some("0.8.4-5"), None), &[]).unwrap(),
            ["0.8.4-5", "0.8.4-5+0.1687199951.p", "0.8.5-1"]
        );
        // The head is the newest entry, whatever the build metadata says.
        assert_eq!(pick(&cat, "m", (None, None), &[]).unwrap(), ["0.8.5-1"]);
    }

    #[test]
    fn exclusive_ranges_and_full_with_a_range_are_refused_naming_the_package() {
        let cat = two_channel_catalog();
        let err = pick(
            &cat,
            "p",
            (Some("1.0.0"), None),
            &[("fast", Some("1.1.0"), None)],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err.lines().count(), 1);
        assert!(
            err.starts_with("isc.yaml: mirror.operators[0].packages[0]: package `p`: its minVersion/maxVersion and channel `fast`'s are exclusive"),
            "{err}"
        );
        let op = OperatorSpec {
            catalog: "c".into(),
            full: true,
            packages: vec![PackageSpec {
                name: "p".into(),
                max_version: Some("1.1.0".into()),
                ..PackageSpec::default()
            }],
            ..OperatorSpec::default()
        };
        let err = validate(&op, "job.yaml: operators[1]")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("job.yaml: operators[1].packages[0]: package `p`: `full: true` cannot be mixed with minVersion/maxVersion"),
            "{err}"
        );
        let op = OperatorSpec {
            catalog: "c".into(),
            packages: vec![PackageSpec {
                name: "p".into(),
                min_version: Some("notaversion".into()),
                ..PackageSpec::default()
            }],
            ..OperatorSpec::default()
        };
        let err = validate(&op, "isc.yaml: mirror.operators[0]")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "isc.yaml: mirror.operators[0].packages[0].minVersion: `notaversion` is not a semantic version (package `p`)");
    }

    #[test]
    fn skipped_entries_keep_their_skipper_and_bad_channels_are_named() {
        let e = |n: &str, r: Option<&str>, s: &[&str]| Entry {
            name: n.into(),
            replaces: r.map(Into::into),
            skips: s.iter().map(|x| x.to_string()).collect(),
            skip_range: None,
        };
        // 1.2.0 replaces 1.1.0 and skips 1.1.1: a range holding 1.1.0 and 1.1.1 keeps 1.2.0,
        // the only way to 1.1.1 on the replaces chain.
        let entries = vec![
            e("a.1.0.0", None, &[]),
            e("a.1.1.0", Some("a.1.0.0"), &[]),
            e("a.1.1.1", Some("a.1.1.0"), &[]),
            e("a.1.2.0", Some("a.1.1.0"), &["a.1.1.1"]),
        ];
        let g = ChannelGraph::build(&entries).unwrap();
        let versions: BTreeMap<String, Version> = entries
            .iter()
            .map(|x| (x.name.clone(), Version::parse(&x.name[2..]).unwrap()))
            .collect();
        let r = Constraint::parse(Some("1.1.0"), Some("1.1.1"), "t")
            .unwrap()
            .unwrap();
        let mut kept = g.in_range(|n| versions.get(n), &r);
        kept.sort();
        assert_eq!(kept, ["a.1.1.0", "a.1.1.1", "a.1.2.0"]);
        let two = vec![e("a", None, &[]), e("b", None, &[])];
        assert_eq!(
            ChannelGraph::build(&two).err().unwrap(),
            "multiple channel heads: a, b"
        );
        let cycle = vec![
            e("h", Some("a"), &[]),
            e("a", Some("b"), &[]),
            e("b", Some("a"), &[]),
        ];
        assert!(ChannelGraph::build(&cycle).err().unwrap().contains("cycle"));
    }

    #[test]
    fn blang_ranges() {
        let r = parse_range(">=1.47.0-1 <1.48.0").unwrap();
        let v = |s| Version::parse(s).unwrap();
        assert!(range_matches(&r, &v("1.47.1-5")));
        assert!(!range_matches(&r, &v("1.51.0-1")));
        let r = parse_range("< 1.0.0 || >= 2.0.0").unwrap();
        assert!(range_matches(&r, &v("0.9.0")) && range_matches(&r, &v("2.1.0")));
        assert!(!range_matches(&r, &v("1.5.0")));
        assert!(parse_range(">=banana").is_none());
    }

    #[test]
    fn globs() {
        assert!(glob("*.md", "README.md"));
        assert!(!glob("*.md", "a/README.md"));
        assert!(glob("a/*.json", "a/x.json"));
        assert!(glob("x?z", "xyz"));
    }
}
