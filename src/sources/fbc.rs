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

use super::version::{Range, Version};
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

fn select_direct(cat: &Catalog, op: &OperatorSpec, what: &str) -> Result<BTreeSet<Kept>> {
    let mut kept = BTreeSet::new();
    if op.packages.is_empty() {
        for pkg in cat.packages.values() {
            for (ch, entries) in &pkg.channels {
                let names = if op.full {
                    entries.iter().map(|e| e.name.clone()).collect()
                } else {
                    vec![head(pkg, ch, entries, what)?]
                };
                kept.extend(names.into_iter().map(|n| (pkg.name.clone(), n)));
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

fn select_package(
    pkg: &Package,
    spec: &PackageSpec,
    full: bool,
    what: &str,
) -> Result<Vec<String>> {
    let pkg_range = Range::parse(
        spec.min_version.as_deref(),
        spec.max_version.as_deref(),
        what,
    )?;
    let mut chosen: Vec<(String, Range, String)> = Vec::new();
    if spec.channels.is_empty() {
        for ch in pkg.channels.keys() {
            chosen.push((ch.clone(), pkg_range.clone(), what.to_string()));
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
            let r = Range::parse(c.min_version.as_deref(), c.max_version.as_deref(), &cw)?;
            let r = if r.is_set() { r } else { pkg_range.clone() };
            chosen.push((c.name.clone(), r, cw));
        }
    }
    let mut out = Vec::new();
    for (ch, range, cw) in chosen {
        let entries = &pkg.channels[&ch];
        if full && !range.is_set() {
            out.extend(entries.iter().map(|e| e.name.clone()));
        } else if range.is_set() {
            out.extend(in_range(pkg, entries, &range));
        } else {
            out.push(head(pkg, &ch, entries, &cw)?);
        }
    }
    if out.is_empty() {
        bail!(
            "{what}: no bundle of package `{}` matches (minVersion/maxVersion out of every channel's range?)",
            pkg.name
        );
    }
    Ok(out)
}

fn version_of<'a>(pkg: &'a Package, entry: &str) -> Option<&'a Version> {
    pkg.bundles.get(entry).and_then(|b| b.version.as_ref())
}

/// The entry nothing in the channel replaces or skips (the highest, should there be several).
pub fn head(pkg: &Package, channel: &str, entries: &[Entry], what: &str) -> Result<String> {
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

/// Entries whose bundle version is in `range`, plus the replaces chain from the highest of them
/// down to the lowest, so the kept set stays one upgradeable line.
fn in_range(pkg: &Package, entries: &[Entry], range: &Range) -> Vec<String> {
    let mut kept: Vec<&Entry> = entries
        .iter()
        .filter(|e| version_of(pkg, &e.name).is_some_and(|v| range.contains(v)))
        .collect();
    let Some(top) = kept
        .iter()
        .max_by(|a, b| version_of(pkg, &a.name).cmp(&version_of(pkg, &b.name)))
        .copied()
    else {
        return Vec::new();
    };
    let lowest = kept
        .iter()
        .filter_map(|e| version_of(pkg, &e.name))
        .min()
        .cloned();
    let by_name: BTreeMap<&str, &Entry> = entries.iter().map(|e| (e.name.as_str(), e)).collect();
    let mut cur = top;
    let mut steps = 0;
    while let Some(next) = cur.replaces.as_deref().and_then(|r| by_name.get(r)) {
        steps += 1;
        let v = version_of(pkg, &next.name);
        if steps > entries.len() || lowest.as_ref().is_some_and(|l| v.is_some_and(|v| v < l)) {
            break;
        }
        kept.push(next);
        cur = next;
    }
    let mut seen = HashSet::new();
    kept.into_iter()
        .filter(|e| seen.insert(e.name.as_str()))
        .map(|e| e.name.clone())
        .collect()
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
        assert_eq!(
            head(ex, "stable", &ex.channels["stable"], "t").unwrap(),
            "example-operator.v1.2.0"
        );
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
