//! Filtered catalog images: for a catalog the job selects packages from, the catalog image
//! rebuilt to hold only what was selected, pushed beside the original at the destination.
//!
//! The image is the original catalog (every layer, for every platform of its index; attestation
//! manifests dropped) plus a layer whiting out its configs directory and one layer holding the
//! filtered configs ([`catalog_filter`](super::catalog_filter)); labels stay (the
//! `operators.operatorframework.io.index.configs.v1` label still names the directory), the
//! command becomes `serve /configs` (no `--cache-dir`: the original's pre-built cache describes
//! the unfiltered catalog). It is pushed into the original's destination repository under the
//! ISC's `targetTag`, else `<tag>-filtered` — the same content gives the same digest, so a
//! rerun pushes nothing new.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde_json::Value;

use super::catalog_filter;
use super::image::{self, Layer};
use super::resources::PlacedCatalog;
use crate::job::Job;
use crate::reference::{Digest, Reference};
use crate::registry::manifest::Manifest;
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
    /// Source reference → destination repository (no host).
    pub repository_of: &'a dyn Fn(&Reference) -> String,
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

/// Rebuild the catalog of `op` filtered to its selection and push it; returns where it is and
/// the notes of the filter (a re-pointed defaultChannel).
pub async fn rebuild(
    job: &Job,
    registries: &Registries,
    op: &OperatorSpec,
    what: &str,
    target: &Target<'_>,
) -> Result<(PlacedCatalog, Vec<String>)> {
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
    let repository = (target.repository_of)(&source);
    let (client, from) = (&resolved.client, &resolved.repository);
    let top = client.get_manifest(from, resolved.top.as_str()).await?;
    let tag = filtered_tag(op, &source);
    let pushed = match Manifest::parse(&top.bytes, Some(&top.media_type))? {
        Manifest::Image { .. } => {
            let (bytes, media_type) =
                child(client, from, &top.bytes, &added, target, &repository).await?;
            put(target, &repository, &tag, &media_type, bytes).await?
        }
        Manifest::Index { media_type, .. } => {
            let mut index: Value = serde_json::from_slice(&top.bytes)?;
            let mut kept = Vec::new();
            for d in index["manifests"].as_array().cloned().unwrap_or_default() {
                // Attestations describe the original image's digests: they do not carry over.
                if d.pointer("/platform/os").and_then(Value::as_str) == Some("unknown") {
                    continue;
                }
                let digest = d["digest"].as_str().unwrap_or("");
                let fetched = client.get_manifest(from, digest).await?;
                let (bytes, child_type) =
                    child(client, from, &fetched.bytes, &added, target, &repository).await?;
                let new = put(target, &repository, "", &child_type, bytes.clone()).await?;
                let mut d = d.clone();
                d["digest"] = Value::from(new.as_str());
                d["size"] = Value::from(bytes.len());
                kept.push(d);
            }
            index["manifests"] = Value::Array(kept);
            let bytes = Bytes::from(serde_json::to_vec_pretty(&index)?);
            put(target, &repository, &tag, &media_type, bytes).await?
        }
    };
    let image = format!("{}/{repository}@{pushed}", target.host)
        .parse()
        .context("filtered catalog reference")?;
    Ok((
        PlacedCatalog {
            source,
            image,
            filtered: true,
        },
        filtered.notes,
    ))
}

/// One platform's image rebuilt with `added` on top; its new blobs pushed. Returns the new
/// manifest's bytes and media type.
async fn child(
    client: &RegistryClient,
    from: &str,
    manifest: &[u8],
    added: &[Layer; 2],
    target: &Target<'_>,
    repository: &str,
) -> Result<(Bytes, String)> {
    let Manifest::Image { config, .. } = Manifest::parse(manifest, None)? else {
        bail!("nested index in a catalog image");
    };
    let mut sink = layers::MemorySink::default();
    client
        .fetch_blob(from, &config.digest, &mut sink, &|_| {})
        .await?;
    let (config, bytes, media_type) = image::extend(
        manifest,
        &sink.0,
        &[&added[0], &added[1]],
        Some(&COMMAND),
        "prewarm: filtered catalog configs",
    )?;
    for l in added {
        image::push_bytes(&target.client, repository, &l.bytes).await?;
    }
    image::push_bytes(&target.client, repository, &config).await?;
    Ok((bytes, media_type))
}

/// PUT a manifest by digest, and under `tag` unless it is empty; returns its digest.
async fn put(
    target: &Target<'_>,
    repository: &str,
    tag: &str,
    media_type: &str,
    bytes: Bytes,
) -> Result<Digest> {
    let digest = Digest::sha256_of(&bytes);
    target
        .client
        .put_manifest(repository, digest.as_str(), media_type, bytes.clone())
        .await?;
    if !tag.is_empty() {
        target
            .client
            .put_manifest(repository, tag, media_type, bytes)
            .await?;
    }
    Ok(digest)
}
