//! Operator catalogs: fetch the index image, rebuild its configs directory on disk from the
//! layers (in order, honouring whiteouts), load the file-based catalog and select bundles.
//!
//! Only entries under the configs directory are written (the opm binary, the IIB SQLite file
//! and the rest of the filesystem are read past), each streamed to its file, so memory stays
//! at a few chunks plus what [`fbc`](super::fbc) keeps for selection.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::job::Job;
use crate::reference::{Digest, Reference};
use crate::registry::Registries;

use super::fbc::{self, Catalog};
use super::{layers, OperatorSpec, Tracked, TrackedKind};

pub const CONFIGS_LABEL: &str = "operators.operatorframework.io.index.configs.v1";

/// What one catalog entry contributes.
#[derive(Debug, Default)]
pub struct Selection {
    pub references: Vec<(Reference, String)>,
    pub notes: Vec<String>,
    /// What the catalog tag resolved to (the index's top manifest).
    pub digest: Option<Digest>,
    /// Package → its newest kept bundle (by version, then name).
    pub heads: BTreeMap<String, String>,
}

impl Selection {
    /// The catalog as a tracked source, named by `source` as the job writes it.
    pub fn tracked(&self, source: &Reference) -> Tracked {
        Tracked {
            kind: TrackedKind::Catalog,
            key: Tracked::catalog_key(source),
            digest: self.digest.clone(),
            selection: self.heads.clone(),
            images: self.references.iter().map(|(r, _)| r.clone()).collect(),
        }
    }
}

/// A whiteout found in a layer: `name: None` for an opaque directory.
struct Whiteout {
    dir: String,
    name: Option<String>,
}

/// Fetch, rebuild, load and select for `op`.
/// `what` names the entry in errors (`job.yaml: operators[0]`).
pub async fn select(
    job: &Job,
    registries: &Registries,
    op: &OperatorSpec,
    what: &str,
) -> Result<Selection> {
    let source: Reference = op
        .catalog
        .parse()
        .map_err(|e| anyhow::anyhow!("{what}.catalog: {e}"))?;
    let image = layers::resolve(job, registries, &source)
        .await
        .with_context(|| format!("catalog `{source}`"))?;
    let configs = configs_dir(&image, &source)?;
    let work = work_dir(&source)?;
    let result = async {
        let root = rebuild_configs(&image, &configs, &work, &source).await?;
        // Dependencies can be in any package: only a selection that skips them can drop the
        // other packages' documents while loading.
        let only: Option<HashSet<String>> = (!op.packages.is_empty() && op.skip_dependencies)
            .then(|| op.packages.iter().map(|p| p.name.clone()).collect());
        let shown = format!("catalog `{source}` /{configs}");
        let root2 = root.clone();
        let cat = tokio::task::spawn_blocking(move || Catalog::load(&root2, only.as_ref(), &shown))
            .await
            .context("catalog loader panicked")??;
        Ok::<_, anyhow::Error>(cat)
    }
    .await;
    let _ = std::fs::remove_dir_all(&work);
    let cat = result?;
    let kept = fbc::select(&cat, op, what)?;
    let mut out = Selection {
        digest: Some(image.top.clone()),
        ..Selection::default()
    };
    for (pkg, bundle) in &kept {
        let p = &cat.packages[pkg];
        let version = |b: &str| p.bundles.get(b).and_then(|b| b.version.clone());
        let newer = out
            .heads
            .get(pkg)
            .is_none_or(|cur| (version(bundle), bundle) > (version(cur), cur));
        if newer {
            out.heads.insert(pkg.clone(), bundle.clone());
        }
    }
    let cat_ref = source.with_digest(image.top.clone());
    out.references.push((cat_ref, format!("catalog {source}")));
    for (pkg, bundle) in &kept {
        let b = cat.packages[pkg].bundles.get(bundle).ok_or_else(|| {
            anyhow::anyhow!(
                "catalog `{source}`: package `{pkg}`: channel entry `{bundle}` has no olm.bundle"
            )
        })?;
        let origin = format!("catalog {source} package {pkg} bundle {bundle}");
        let parse = |s: &str, field: &str| -> Result<Reference> {
            s.parse()
                .map_err(|e| anyhow::anyhow!("catalog `{source}`: bundle `{bundle}`: {field}: {e}"))
        };
        out.references
            .push((parse(&b.image, "image")?, origin.clone()));
        for (name, image) in &b.related {
            let r = parse(image, "relatedImages")?;
            let o = if name.is_empty() {
                origin.clone()
            } else {
                format!("{origin} relatedImage {name}")
            };
            out.references.push((r, o));
        }
    }
    let mut seen = HashSet::new();
    out.references.retain(|(r, _)| seen.insert(r.clone()));
    for (i, p) in op.packages.iter().enumerate() {
        if p.default_channel.is_some() {
            out.notes.push(format!(
                "catalog {source}: packages[{i}].defaultChannel applies to the filtered catalog `copy` builds; warm keeps the catalog as published"
            ));
        }
    }
    if op.target_catalog.is_some() || op.target_tag.is_some() {
        out.notes.push(format!(
            "catalog {source}: targetTag names the filtered catalog `copy` builds; targetCatalog is not used (the catalog keeps its source repository)"
        ));
    }
    Ok(out)
}

/// The configs directory a catalog image's label names, without leading or trailing `/`.
pub(crate) fn configs_dir(image: &layers::ResolvedImage, source: &Reference) -> Result<String> {
    let Some(label) = image.labels.get(CONFIGS_LABEL) else {
        bail!("catalog `{source}`: its config has no `{CONFIGS_LABEL}` label (not a file-based catalog)");
    };
    let configs = label
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string();
    if configs.is_empty() || configs.split('/').any(|c| c == ".." || c.is_empty()) {
        bail!("catalog `{source}`: label {CONFIGS_LABEL}=`{label}` is not a directory");
    }
    Ok(configs)
}

/// Rebuild the configs directory of `image` under `work` from its layers, in order, honouring
/// whiteouts; returns the directory.
pub(crate) async fn rebuild_configs(
    image: &layers::ResolvedImage,
    configs: &str,
    work: &Path,
    source: &Reference,
) -> Result<PathBuf> {
    let merged = work.join("root");
    std::fs::create_dir_all(&merged)?;
    for (i, layer) in image.layers.iter().enumerate() {
        let staging = work.join(format!("layer-{i}"));
        std::fs::create_dir_all(&staging)?;
        let (prefix, dir) = (configs.to_string(), staging.clone());
        let whiteouts = layers::with_layer(
            &image.client,
            &image.repository,
            &layer.digest,
            move |archive| extract(archive, &prefix, &dir),
        )
        .await
        .with_context(|| format!("catalog `{source}`"))?;
        apply(&merged, &staging, configs, &whiteouts)?;
        std::fs::remove_dir_all(&staging)?;
    }
    let root = merged.join(configs);
    if !root.is_dir() {
        bail!("catalog `{source}`: no /{configs} directory in its layers");
    }
    Ok(root)
}

pub(crate) fn work_dir(source: &Reference) -> Result<PathBuf> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "prewarm-catalog-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        source.repository().replace('/', "_")
    ));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// `a` is `b` or an ancestor of it (paths without leading `/`).
fn covers(a: &str, b: &str) -> bool {
    a.is_empty() || a == b || b.starts_with(&format!("{a}/"))
}

fn safe(path: &str) -> bool {
    Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
}

/// Write this layer's files under the configs dir to `staging`; return its whiteouts.
fn extract(
    archive: &mut tar::Archive<Box<dyn Read + Send>>,
    configs: &str,
    staging: &Path,
) -> Result<Vec<Whiteout>> {
    let mut whiteouts = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = layers::entry_path(&entry)?;
        let path = path.trim_end_matches('/').to_string();
        if path.is_empty() || !safe(&path) {
            continue;
        }
        let (dir, base) = match path.rsplit_once('/') {
            Some((d, b)) => (d.to_string(), b.to_string()),
            None => (String::new(), path.clone()),
        };
        if base == ".wh..wh..opq" {
            whiteouts.push(Whiteout { dir, name: None });
            continue;
        }
        if let Some(name) = base.strip_prefix(".wh.") {
            whiteouts.push(Whiteout {
                dir,
                name: Some(name.to_string()),
            });
            continue;
        }
        if !covers(configs, &path) {
            continue;
        }
        let target = staging.join(&path);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&target)?;
        } else if kind.is_file() {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut f = std::fs::File::create(&target)
                .with_context(|| format!("cannot write {}", target.display()))?;
            std::io::copy(&mut entry, &mut f)?;
        }
        // Links and devices carry no catalog content.
    }
    Ok(whiteouts)
}

/// Apply one extracted layer onto `merged`: its whiteouts hide lower layers' files, then its
/// own files land on top.
fn apply(merged: &Path, staging: &Path, configs: &str, whiteouts: &[Whiteout]) -> Result<()> {
    for w in whiteouts {
        let target = match &w.name {
            Some(n) if w.dir.is_empty() => n.clone(),
            Some(n) => format!("{}/{n}", w.dir),
            None => w.dir.clone(),
        };
        // A whiteout of the configs dir or an ancestor removes all of it; one inside it
        // removes that path.
        let victim = if covers(&target, configs) {
            configs.to_string()
        } else if covers(configs, &target) {
            target.clone()
        } else {
            continue;
        };
        let path = merged.join(&victim);
        match (&w.name, path.is_dir()) {
            (None, true) if victim == target => {
                for e in std::fs::read_dir(&path)? {
                    remove(&e?.path())?;
                }
            }
            _ => remove(&path)?,
        }
    }
    overlay(staging, merged)
}

fn remove(p: &Path) -> Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p)?,
        Ok(_) => std::fs::remove_file(p)?,
        Err(_) => {}
    }
    Ok(())
}

fn overlay(from: &Path, to: &Path) -> Result<()> {
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            if dst.exists() && !dst.is_dir() {
                remove(&dst)?;
            }
            std::fs::create_dir_all(&dst)?;
            overlay(&e.path(), &dst)?;
        } else {
            if dst.is_dir() {
                remove(&dst)?;
            }
            std::fs::rename(e.path(), &dst)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteouts_and_opaque_dirs_hide_lower_layers() {
        let dir = std::env::temp_dir().join(format!("wh-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let merged = dir.join("root");
        for p in [
            "configs/a/catalog.json",
            "configs/b/catalog.json",
            "configs/c/x.json",
        ] {
            std::fs::create_dir_all(merged.join(p).parent().unwrap()).unwrap();
            std::fs::write(merged.join(p), "{}").unwrap();
        }
        let staging = dir.join("s");
        std::fs::create_dir_all(staging.join("configs/c")).unwrap();
        std::fs::write(staging.join("configs/c/y.json"), "{}").unwrap();
        let wh = vec![
            Whiteout {
                dir: "configs".into(),
                name: Some("a".into()),
            },
            Whiteout {
                dir: "configs/c".into(),
                name: None,
            },
            Whiteout {
                dir: "usr/bin".into(),
                name: Some("opm".into()),
            },
        ];
        apply(&merged, &staging, "configs", &wh).unwrap();
        assert!(!merged.join("configs/a").exists());
        assert!(merged.join("configs/b/catalog.json").exists());
        assert!(!merged.join("configs/c/x.json").exists());
        assert!(merged.join("configs/c/y.json").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
