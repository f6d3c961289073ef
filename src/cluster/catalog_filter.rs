//! A file-based catalog cut down to the selected bundles, still a valid upgrade graph.
//!
//! Packages without a kept bundle are dropped. In each kept package: `olm.bundle` documents of
//! dropped bundles go; each channel lists only kept bundles (a channel left empty goes);
//! `replaces` and `skips` that point at a dropped bundle are removed (`skipRange` stays: it is
//! a range, not a pointer); should that leave a channel with several heads (entries nothing
//! replaces or skips), the head — the highest version, as selection picks it — skips the
//! others, so every kept channel has exactly one head and the others still upgrade to it.
//! `defaultChannel` is the ISC's `defaultChannel` when given, else kept when its channel is,
//! else re-pointed to the kept channel whose head has the highest version (a note says so).
//! `olm.deprecations` entries naming dropped channels or bundles go. Each package is written
//! as one JSON stream, `<package>/catalog.json`, documents sorted, so a rerun writes the same
//! bytes.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::sources::fbc::{self, Catalog, Entry, Kept};
use crate::sources::PackageSpec;

/// The filtered catalog: files relative to the configs directory, and what the user must know.
#[derive(Debug, Default)]
pub struct Filtered {
    pub files: BTreeMap<String, Vec<u8>>,
    pub notes: Vec<String>,
}

/// The documents of one FBC file: a JSON stream or YAML documents, whatever its extension.
fn documents(path: &Path, shown: &str) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {shown}"))?;
    if text.trim_start().starts_with('{') {
        serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .enumerate()
            .map(|(i, d)| d.map_err(|e| anyhow::anyhow!("{shown}: document {}: {e}", i + 1)))
            .collect()
    } else {
        let mut out = Vec::new();
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let v = Value::deserialize(doc)
                .map_err(|e| anyhow::anyhow!("{shown}: document {}: {e}", i + 1))?;
            if !v.is_null() {
                out.push(v);
            }
        }
        Ok(out)
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

#[derive(Default)]
struct PackageDocs {
    package: Option<Value>,
    channels: BTreeMap<String, Value>,
    bundles: BTreeMap<String, Value>,
    others: Vec<Value>,
}

/// Filter the catalog under `root` (as loaded into `cat`) to `kept`. `specs` are the job's
/// package entries (their `defaultChannel`); `shown` names the catalog in errors and notes.
pub fn filter(
    root: &Path,
    cat: &Catalog,
    kept: &BTreeSet<Kept>,
    specs: &[PackageSpec],
    shown: &str,
) -> Result<Filtered> {
    let kept_packages: BTreeSet<&str> = kept.iter().map(|(p, _)| p.as_str()).collect();
    let mut files = Vec::new();
    fbc::walk(root, root, &mut Vec::new(), &mut files)?;
    let mut packages: BTreeMap<String, PackageDocs> = BTreeMap::new();
    for (path, rel) in files {
        for doc in documents(&path, &format!("{shown}/{rel}"))? {
            let schema = str_of(&doc, "schema");
            let owner = match schema {
                "olm.package" => str_of(&doc, "name"),
                _ => str_of(&doc, "package"),
            };
            if !kept_packages.contains(owner) {
                continue;
            }
            let docs = packages.entry(owner.to_string()).or_default();
            match schema {
                "olm.package" => docs.package = Some(doc),
                "olm.channel" => {
                    docs.channels.insert(str_of(&doc, "name").to_string(), doc);
                }
                "olm.bundle" => {
                    let name = str_of(&doc, "name").to_string();
                    if kept.contains(&(owner.to_string(), name.clone())) {
                        docs.bundles.insert(name, doc);
                    }
                }
                _ => docs.others.push(doc),
            }
        }
    }
    let mut out = Filtered::default();
    for (name, docs) in packages {
        let pkg = &cat.packages[&name];
        let keep: HashSet<&str> = kept
            .iter()
            .filter(|(p, _)| *p == name)
            .map(|(_, b)| b.as_str())
            .collect();
        let what = format!("{shown}: package `{name}`");
        let mut stream: Vec<Value> = Vec::new();
        let mut channels: Vec<(String, Vec<Entry>, String)> = Vec::new();
        for (ch, doc) in &docs.channels {
            let entries: Vec<Entry> = serde_json::from_value(doc["entries"].clone())
                .with_context(|| format!("{what}: channel `{ch}`: entries"))?;
            let Some((entries, head)) = rewrite_channel(pkg, ch, &entries, &keep, &what)? else {
                continue;
            };
            channels.push((ch.clone(), entries, head));
        }
        if channels.is_empty() {
            bail!("{what}: no channel lists a kept bundle");
        }
        let kept_channels: BTreeSet<&str> = channels.iter().map(|(c, _, _)| c.as_str()).collect();
        let mut package = docs
            .package
            .clone()
            .unwrap_or_else(|| json!({"schema": "olm.package", "name": name}));
        let asked = specs
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.default_channel.clone());
        let original = package
            .get("defaultChannel")
            .and_then(Value::as_str)
            .map(str::to_string);
        let default = match (&asked, &original) {
            (Some(a), _) if kept_channels.contains(a.as_str()) => a.clone(),
            (Some(a), _) => bail!(
                "{what}: defaultChannel `{a}` is not a kept channel (kept: {})",
                kept_channels.iter().copied().collect::<Vec<_>>().join(", ")
            ),
            (None, Some(o)) if kept_channels.contains(o.as_str()) => o.clone(),
            (None, _) => {
                let (ch, _, head) = channels
                    .iter()
                    .max_by(|a, b| {
                        let v = |h: &str| pkg.bundles.get(h).and_then(|b| b.version.clone());
                        v(&a.2).cmp(&v(&b.2)).then_with(|| b.0.cmp(&a.0))
                    })
                    .expect("channels is not empty");
                out.notes.push(format!(
                    "{what}: defaultChannel `{}` was dropped; the filtered catalog's default is `{ch}` (head {head})",
                    original.as_deref().unwrap_or("(none)")
                ));
                ch.clone()
            }
        };
        package["defaultChannel"] = json!(default);
        stream.push(package);
        for (ch, entries, _) in &channels {
            let mut doc = docs.channels[ch].clone();
            doc["entries"] = Value::Array(entries.iter().map(entry_json).collect());
            stream.push(doc);
        }
        stream.extend(docs.bundles.into_values());
        for mut doc in docs.others {
            if str_of(&doc, "schema") == "olm.deprecations" {
                let Some(list) = doc.get_mut("entries").and_then(Value::as_array_mut) else {
                    continue;
                };
                list.retain(|e| {
                    let r = &e["reference"];
                    match str_of(r, "schema") {
                        "olm.channel" => kept_channels.contains(str_of(r, "name")),
                        "olm.bundle" => keep.contains(str_of(r, "name")),
                        _ => true,
                    }
                });
                if list.is_empty() {
                    continue;
                }
            }
            stream.push(doc);
        }
        let mut bytes = Vec::new();
        for doc in &stream {
            bytes.extend(serde_json::to_vec_pretty(doc)?);
            bytes.push(b'\n');
        }
        out.files.insert(format!("{name}/catalog.json"), bytes);
    }
    Ok(out)
}

/// A channel's kept entries with edges to dropped bundles removed and exactly one head; `None`
/// when no entry is kept.
fn rewrite_channel(
    pkg: &fbc::Package,
    channel: &str,
    entries: &[Entry],
    keep: &HashSet<&str>,
    what: &str,
) -> Result<Option<(Vec<Entry>, String)>> {
    let mut kept: Vec<Entry> = entries
        .iter()
        .filter(|e| keep.contains(e.name.as_str()))
        .cloned()
        .collect();
    if kept.is_empty() {
        return Ok(None);
    }
    let names: HashSet<String> = kept.iter().map(|e| e.name.clone()).collect();
    for e in &mut kept {
        e.replaces = e.replaces.take().filter(|r| names.contains(r));
        e.skips.retain(|s| names.contains(s));
    }
    let head = fbc::head_of_entries(pkg, channel, &kept, what)?;
    let referenced: HashSet<String> = kept
        .iter()
        .flat_map(|e| e.replaces.iter().chain(e.skips.iter()).cloned())
        .collect();
    let orphans: Vec<String> = kept
        .iter()
        .map(|e| e.name.clone())
        .filter(|n| *n != head && !referenced.contains(n))
        .collect();
    let h = kept
        .iter_mut()
        .find(|e| e.name == head)
        .expect("the head is an entry");
    h.skips.extend(orphans);
    h.skips.sort();
    kept.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Some((kept, head)))
}

fn entry_json(e: &Entry) -> Value {
    let mut v = json!({ "name": e.name });
    if let Some(r) = &e.replaces {
        v["replaces"] = json!(r);
    }
    if !e.skips.is_empty() {
        v["skips"] = json!(e.skips);
    }
    if let Some(r) = &e.skip_range {
        v["skipRange"] = json!(r);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{OperatorSpec, PackageChannelSpec};

    fn fixture_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("filter-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("aws")).unwrap();
        let fx = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        std::fs::copy(
            format!("{fx}/catalog-aws-load-balancer-operator.json"),
            dir.join("aws/catalog.json"),
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("example")).unwrap();
        std::fs::copy(
            format!("{fx}/catalog.json"),
            dir.join("example/catalog.json"),
        )
        .unwrap();
        dir
    }

    /// Load what was written as prewarm's loader does; every channel has one head and no edge
    /// names a bundle that is not there.
    fn reload(f: &Filtered) -> Catalog {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("filtered-out-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (rel, bytes) in &f.files {
            std::fs::create_dir_all(dir.join(rel).parent().unwrap()).unwrap();
            std::fs::write(dir.join(rel), bytes).unwrap();
        }
        let cat = Catalog::load(&dir, None, "filtered").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        for pkg in cat.packages.values() {
            for (ch, entries) in &pkg.channels {
                let names: HashSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
                let referenced: HashSet<&str> = entries
                    .iter()
                    .flat_map(|e| e.replaces.iter().chain(e.skips.iter()))
                    .map(String::as_str)
                    .collect();
                assert!(referenced.is_subset(&names), "{ch}: dangling edge");
                assert_eq!(
                    names.difference(&referenced).count(),
                    1,
                    "{ch}: exactly one head"
                );
                assert!(entries.iter().all(|e| pkg.bundles.contains_key(&e.name)));
            }
        }
        cat
    }

    #[test]
    fn a_range_keeps_its_chain_and_other_packages_go() {
        let dir = fixture_dir("range");
        let cat = Catalog::load(&dir, None, "c").unwrap();
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
        let kept = fbc::select(&cat, &op, "op").unwrap();
        let f = filter(&dir, &cat, &kept, &op.packages, "c").unwrap();
        assert_eq!(
            f.files.keys().collect::<Vec<_>>(),
            ["example-operator/catalog.json"]
        );
        let back = reload(&f);
        let pkg = &back.packages["example-operator"];
        assert_eq!(
            pkg.bundles.keys().collect::<Vec<_>>(),
            ["example-operator.v1.1.0", "example-operator.v1.2.0"]
        );
        assert_eq!(pkg.default_channel.as_deref(), Some("stable"));
        // The same input, the same bytes.
        let again = filter(&dir, &cat, &kept, &op.packages, "c").unwrap();
        assert_eq!(again.files, f.files);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn orphans_are_skipped_by_the_head_and_a_dropped_default_channel_is_re_pointed() {
        let dir = std::env::temp_dir().join(format!("filter-synth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("p")).unwrap();
        let bundle = |v: &str| {
            format!(
                r#"{{"schema":"olm.bundle","name":"p.v{v}","package":"p","image":"r.io/p@sha256:{}","properties":[{{"type":"olm.package","value":{{"packageName":"p","version":"{v}"}}}}]}}"#,
                "a".repeat(64)
            )
        };
        let docs = [
            r#"{"schema":"olm.package","name":"p","defaultChannel":"b"}"#.to_string(),
            r#"{"schema":"olm.channel","name":"a","package":"p","entries":[{"name":"p.v1.0.0"}]}"#.into(),
            r#"{"schema":"olm.channel","name":"b","package":"p","entries":[{"name":"p.v1.0.0"},{"name":"p.v2.0.0","replaces":"p.v1.0.0"},{"name":"p.v3.0.0","replaces":"p.v2.0.0","skipRange":"<3.0.0"}]}"#.into(),
            r#"{"schema":"olm.deprecations","package":"p","entries":[{"reference":{"schema":"olm.bundle","name":"p.v2.0.0"},"message":"old"},{"reference":{"schema":"olm.channel","name":"a"},"message":"a is old"}]}"#.into(),
            bundle("1.0.0"),
            bundle("2.0.0"),
            bundle("3.0.0"),
        ];
        std::fs::write(dir.join("p/catalog.json"), docs.join("\n")).unwrap();
        let cat = Catalog::load(&dir, None, "c").unwrap();
        let keep = |names: &[&str]| -> BTreeSet<Kept> {
            names
                .iter()
                .map(|n| ("p".to_string(), n.to_string()))
                .collect()
        };

        // v1 and v3 kept, v2 (what v3 replaces) dropped: v3 is the head and skips v1.
        let f = filter(&dir, &cat, &keep(&["p.v1.0.0", "p.v3.0.0"]), &[], "c").unwrap();
        let back = reload(&f);
        let b = &back.packages["p"].channels["b"];
        let v3 = b.iter().find(|e| e.name == "p.v3.0.0").unwrap();
        assert_eq!(
            (v3.replaces.as_deref(), v3.skips.as_slice()),
            (None, &["p.v1.0.0".to_string()][..])
        );
        assert_eq!(v3.skip_range.as_deref(), Some("<3.0.0"));
        assert_eq!(back.packages["p"].default_channel.as_deref(), Some("b"));
        assert!(f.notes.is_empty());
        let text = String::from_utf8(f.files["p/catalog.json"].clone()).unwrap();
        assert!(
            !text.contains("\"p.v2.0.0\""),
            "the dropped bundle's deprecation goes too"
        );
        assert!(text.contains("a is old"));

        // v1 alone: it is in b too, so b (the default) stays.
        let f = filter(&dir, &cat, &keep(&["p.v1.0.0"]), &[], "c").unwrap();
        let back = reload(&f);
        assert_eq!(back.packages["p"].default_channel.as_deref(), Some("b"));
        assert!(back.packages["p"].channels.contains_key("a"));
        let f = filter(&dir, &cat, &keep(&["p.v2.0.0"]), &[], "c").unwrap();
        assert_eq!(
            reload(&f).packages["p"].default_channel.as_deref(),
            Some("b")
        );
        // Channel b without v1: keeping only v1 drops b, the default follows a, a note says so.
        std::fs::write(
            dir.join("p/catalog.json"),
            docs.join("\n").replace(
                r#"{"name":"p.v1.0.0"},{"name":"p.v2.0.0","replaces":"p.v1.0.0"}"#,
                r#"{"name":"p.v2.0.0"}"#,
            ),
        )
        .unwrap();
        let cat = Catalog::load(&dir, None, "c").unwrap();
        let f = filter(&dir, &cat, &keep(&["p.v1.0.0"]), &[], "c").unwrap();
        assert_eq!(
            reload(&f).packages["p"].default_channel.as_deref(),
            Some("a")
        );
        assert_eq!(f.notes.len(), 1, "{:?}", f.notes);
        assert!(
            f.notes[0].contains("defaultChannel `b` was dropped") && f.notes[0].contains("`a`"),
            "{:?}",
            f.notes
        );
        // An ISC defaultChannel that is not kept is an error naming it.
        let spec = PackageSpec {
            name: "p".into(),
            default_channel: Some("b".into()),
            ..PackageSpec::default()
        };
        let err = filter(&dir, &cat, &keep(&["p.v1.0.0"]), &[spec], "c").unwrap_err();
        assert!(
            err.to_string()
                .contains("defaultChannel `b` is not a kept channel"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
