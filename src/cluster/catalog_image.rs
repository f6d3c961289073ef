//! Filtered catalog images: for a catalog the job selects packages from, the catalog image
//! rebuilt to hold only what was selected, pushed beside the original at the destination.
//!
//! The image is the original catalog (every layer, for every platform of its index; attestation
//! manifests dropped) plus a layer whiting out its configs directory and one layer holding the
//! filtered configs ([`catalog_filter`](super::catalog_filter)); labels stay (the
//! `operators.operatorframework.io.index.configs.v1` label still names the directory), the
//! command becomes `serve /configs` (no `--cache-dir`: the original's pre-built cache describes
//! the unfiltered catalog). `copy` pushes it into the original's destination repository under
//! the ISC's `targetTag`, else `<tag>-filtered` — the same content gives the same digest, so a
//! rerun pushes nothing new; `warm` into the cache host's regular org (`cache.built_org`), the
//! original's layers mounted or copied from its cache org; export carries it in the bundle.

use std::sync::Arc;

use anyhow::{Context, Result};

use super::catalog_filter;
use super::image;
use super::resources::PlacedCatalog;
use crate::job::Job;
use crate::reference::Reference;
use crate::registry::{Registries, RegistryClient};
use crate::sources::catalog::{configs_dir, rebuild_configs, work_dir};
use crate::sources::fbc::{self, Catalog};
use crate::sources::{layers, OperatorSpec};

/// The command of a filtered catalog image (after the image's entrypoint, `opm`).
pub const COMMAND: [&str; 2] = ["serve", "/configs"];

/// Where rebuilt catalogs go.
pub struct Target<'a> {
    pub client: Arc<RegistryClient>,
    /// `host[:port]` as clusters name it.
    pub host: &'a str,
    /// Source reference → the repository (no host) a built image goes to.
    pub repository_of: &'a dyn Fn(&Reference) -> String,
    /// Source reference → the repository (no host) where the run placed it: where a built
    /// image's base is (the same as `repository_of` for `copy`; the cache org for `warm`).
    pub placed_at: &'a dyn Fn(&Reference) -> String,
}

/// The tag a filtered catalog is pushed under.
pub fn filtered_tag(op: &OperatorSpec, source: &Reference) -> String {
    match (&op.target_tag, source.tag(), source.digest()) {
        (Some(t), _, _) => t.clone(),
        (None, Some(t), _) => format!("{t}-filtered"),
        (None, None, Some(d)) => format!("filtered-{}", &d.hex()[..12]),
        (None, None, None) => "latest-filtered".into(),
    }
}

/// A filtered catalog built in memory: the catalog it filters, the tag it goes under, the
/// image, and the notes of the filter (a re-pointed defaultChannel).
pub struct Filtered {
    pub source: Reference,
    pub tag: String,
    pub built: image::Built,
    pub notes: Vec<String>,
}

/// Build the catalog of `op` filtered to its selection, reading the original at the source.
pub async fn build(
    job: &Job,
    registries: &Registries,
    op: &OperatorSpec,
    what: &str,
) -> Result<Filtered> {
    let source: Reference = op
        .catalog
        .parse()
        .map_err(|e| anyhow::anyhow!("{what}.catalog: {e}"))?;
    let resolved = layers::resolve(job, registries, &source)
        .await
        .with_context(|| format!("catalog `{source}`"))?;
    let configs = configs_dir(&resolved, &source)?;
    let work = work_dir(&source)?;
    let shown = format!("catalog `{source}` /{configs}");
    let filtered = async {
        let root = rebuild_configs(&resolved, &configs, &work, &source).await?;
        let cat = Catalog::load(&root, None, &shown)?;
        let kept = fbc::select(&cat, op, what)?;
        catalog_filter::filter(&root, &cat, &kept, &op.packages, &shown)
    }
    .await;
    let _ = std::fs::remove_dir_all(&work);
    let filtered = filtered?;
    let added = [
        image::whiteout(&configs)?,
        image::layer(&image::tree(&configs, &filtered.files))?,
    ];
    let built = image::build_on_top(&image::OnTop {
        source: &resolved.client,
        from: &resolved.repository,
        top: &resolved.top,
        added: &added,
        cmd: &COMMAND,
        created_by: "prewarm: filtered catalog configs",
    })
    .await?;
    Ok(Filtered {
        tag: filtered_tag(op, &source),
        source,
        built,
        notes: filtered.notes,
    })
}

/// Rebuild the catalog of `op` filtered to its selection and push it beside the original;
/// returns where it is and the notes of the filter.
pub async fn rebuild(
    job: &Job,
    registries: &Registries,
    op: &OperatorSpec,
    what: &str,
    target: &Target<'_>,
) -> Result<(PlacedCatalog, Vec<String>)> {
    let f = build(job, registries, op, what).await?;
    let repository = (target.repository_of)(&f.source);
    let base_at = (target.placed_at)(&f.source);
    let pushed = image::push(&f.built, &target.client, &repository, &f.tag, &base_at).await?;
    let image = format!("{}/{repository}@{pushed}", target.host)
        .parse()
        .context("filtered catalog reference")?;
    Ok((
        PlacedCatalog {
            source: f.source,
            image,
            filtered: true,
        },
        f.notes,
    ))
}
