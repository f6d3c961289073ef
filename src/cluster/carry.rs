//! What a bundle carries for the cluster side, so that `import` writes the cluster resources
//! `copy` writes.
//!
//! On export ([`extras`]): each filtered catalog and the graph-data image, built as `copy`
//! builds them (same bytes, same digests), go into the plan as images under the source
//! reference `import` maps to where `copy` pushes them (`<catalog>:<tag>-filtered`,
//! `<base registry>/openshift/graph-image:latest`); their new blobs and manifests come from
//! memory, the layers they reuse are the planned catalog's and base's. Each catalog image gets
//! its role in `bundle.json`, and the release signatures go there too.
//!
//! On import ([`from_bundle`]): the roles become CatalogSources and the UpdateService at the
//! destination, the signatures ConfigMaps; built images are left out of the mirror sets (no
//! cluster pulls them by a source name).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};

use super::image::Built;
use super::resources::{self, is_release_origin, Placed, PlacedCatalog, PlacedGraph};
use super::{catalog_image, graph_image};
use crate::bundle::{BundleManifest, Extras, ImageRole};
use crate::job::Job;
use crate::plan::{Plan, PlannedBlob, PlannedImage, PlannedManifest};
use crate::reference::{Digest, Reference};
use crate::registry::Registries;
use crate::sources::layers;

/// The plan's images as placed nowhere yet (for finding catalogs, bases and releases).
fn planned(plan: &Plan) -> Vec<Placed> {
    plan.images
        .iter()
        .map(|i| Placed {
            source: i.source.clone(),
            digest: i.digest.clone(),
            mirror: String::new(),
            origin: i.origin.clone(),
        })
        .collect()
}

/// Build what the bundle carries beside the plan, and add the built images to `plan`.
pub async fn extras(job: &Job, registries: &Registries, plan: &mut Plan) -> Result<Extras> {
    let planned = planned(plan);
    let mut extras = Extras::default();
    for (i, op) in job.operators.iter().enumerate() {
        let what = format!("{}: operators[{i}]", job.path.display());
        let source: Reference = op
            .catalog
            .parse()
            .map_err(|e| anyhow::anyhow!("{what}.catalog: {e}"))?;
        let Some(p) = resources::find_catalog(&planned, &source) else {
            continue;
        };
        if op.packages.is_empty() {
            let role = ImageRole::Catalog {
                catalog: source.to_string(),
                filtered: false,
            };
            extras.roles.insert(p.source.to_string(), role);
            continue;
        }
        let f = catalog_image::build(job, registries, op, &what)
            .await
            .with_context(|| format!("filtered catalog of `{source}`"))?;
        for n in &f.notes {
            eprintln!("note: {n}");
        }
        let reference: Reference =
            format!("{}/{}:{}", source.registry(), source.repository(), f.tag)
                .parse()
                .context("filtered catalog reference")?;
        add(
            plan,
            &mut extras,
            &reference,
            &f.built,
            "filtered catalog of",
            &source,
        )?;
        eprintln!("filtered catalog: {reference}@{}", f.built.top);
        let role = ImageRole::Catalog {
            catalog: source.to_string(),
            filtered: true,
        };
        extras.roles.insert(reference.to_string(), role);
    }
    if let Some(g) = job.graph.as_ref().and_then(|g| g.image.as_ref()) {
        let base = graph_image::base_of(job, g)?;
        match planned
            .iter()
            .find(|p| p.source.repo_path() == base.repo_path() && p.source.tag() == base.tag())
        {
            None => eprintln!(
                "note: graph image: its base {base} is not planned; no graph image is built"
            ),
            Some(p) => {
                let resolved = layers::resolve(job, registries, &base)
                    .await
                    .with_context(|| format!("graph image base `{base}`"))?;
                let built = graph_image::build_image(
                    job,
                    g,
                    (&resolved.client, &resolved.repository),
                    &p.digest,
                )
                .await?;
                let reference = graph_image::reference_for(&base);
                add(
                    plan,
                    &mut extras,
                    &reference,
                    &built,
                    "graph image on",
                    &base,
                )?;
                eprintln!("graph image: {reference}@{}", built.top);
                let releases = planned
                    .iter()
                    .find(|p| is_release_origin(&p.origin))
                    .map(|p| p.source.to_string());
                extras
                    .roles
                    .insert(reference.to_string(), ImageRole::GraphImage { releases });
            }
        }
    }
    if let Some(cfg) = &job.signatures {
        extras.signatures = resources::signatures_of(&job.relative(&cfg.output), &planned)?;
    }
    Ok(extras)
}

/// Add a built image to the plan (its new blobs and manifests to `extras`); every layer it
/// reuses must be a planned blob, which the bundle then holds once for both.
fn add(
    plan: &mut Plan,
    extras: &mut Extras,
    reference: &Reference,
    built: &Built,
    what: &str,
    on: &Reference,
) -> Result<()> {
    let origin = format!("{what} {on}");
    let sizes: BTreeMap<Digest, u64> = plan
        .blobs
        .iter()
        .map(|b| (b.digest.clone(), b.size))
        .collect();
    for (digest, _, _) in &built.base {
        if !sizes.contains_key(digest) {
            bail!("{origin}: layer {digest} of `{on}` is not in the plan");
        }
    }
    let repo = reference.repo_path();
    for (digest, media_type, bytes) in &built.blobs {
        if !sizes.contains_key(digest) {
            plan.blobs.push(PlannedBlob {
                digest: digest.clone(),
                size: bytes.len() as u64,
                media_type: media_type.clone(),
                repositories: BTreeSet::from([repo.clone()]),
            });
        }
        extras.blobs.insert(digest.clone(), bytes.clone());
    }
    plan.blobs.sort_by_key(|b| std::cmp::Reverse(b.size));
    for (digest, media_type, bytes) in &built.manifests {
        plan.manifests.push(PlannedManifest {
            repository: repo.clone(),
            digest: digest.clone(),
            media_type: media_type.clone(),
            size: bytes.len() as u64,
        });
        extras
            .manifests
            .insert(digest.clone(), (bytes.clone(), media_type.clone()));
    }
    let blobs: Vec<Digest> = built.blob_digests();
    let unique: BTreeSet<&Digest> = blobs.iter().collect();
    let sizes: BTreeMap<&Digest, u64> = plan.blobs.iter().map(|b| (&b.digest, b.size)).collect();
    let bytes = unique.iter().filter_map(|d| sizes.get(*d)).sum();
    // The top first, then each platform's manifest.
    let children = built.manifests.len().saturating_sub(1);
    let manifests = std::iter::once(built.top.clone())
        .chain(
            built.manifests[..children]
                .iter()
                .map(|(d, _, _)| d.clone()),
        )
        .collect();
    plan.images.push(PlannedImage {
        source: reference.clone(),
        digest: built.top.clone(),
        media_type: built.media_type.clone(),
        origin,
        platforms: Vec::new(),
        manifests,
        blobs,
        bytes,
    });
    Ok(())
}

/// What `import` writes for a bundle's images beyond the mirror sets.
pub struct FromBundle {
    pub catalogs: Vec<PlacedCatalog>,
    pub graph: Option<PlacedGraph>,
    pub signatures: BTreeMap<Digest, Vec<Vec<u8>>>,
}

/// The catalogs and graph image of a bundle where `images` (what the import placed) put them;
/// the images prewarm built are taken out of `images`.
pub fn from_bundle(
    bundle: &BundleManifest,
    images: &mut Vec<Placed>,
    mirror_of: &dyn Fn(&Reference) -> String,
) -> Result<FromBundle> {
    let mut roles: BTreeMap<String, &ImageRole> = BTreeMap::new();
    for (n, image) in bundle.images.iter().enumerate() {
        if let Some(role) = &image.role {
            let source: Reference = image
                .reference
                .parse()
                .with_context(|| format!("bundle.json: images[{n}].reference"))?;
            roles.insert(source.to_string(), role);
        }
    }
    let mut out = FromBundle {
        catalogs: Vec::new(),
        graph: None,
        signatures: bundle.decoded_signatures()?,
    };
    let mut built = BTreeSet::new();
    for p in images.iter() {
        let key = p.source.to_string();
        let at: Reference = format!("{}@{}", p.mirror, p.digest).parse()?;
        match roles.get(&key) {
            Some(ImageRole::Catalog { catalog, filtered }) => {
                out.catalogs.push(PlacedCatalog {
                    source: catalog
                        .parse()
                        .with_context(|| format!("bundle.json: role of `{key}`: catalog"))?,
                    image: at,
                    filtered: *filtered,
                });
                if *filtered {
                    built.insert(key);
                }
            }
            Some(ImageRole::GraphImage { releases }) => {
                let releases = match releases {
                    Some(r) => mirror_of(
                        &r.parse()
                            .with_context(|| format!("bundle.json: role of `{key}`: releases"))?,
                    ),
                    None => graph_image::releases_at(&[], mirror_of),
                };
                out.graph = Some(PlacedGraph {
                    image: at,
                    releases,
                });
                built.insert(key);
            }
            None => {}
        }
    }
    images.retain(|p| !built.contains(&p.source.to_string()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::BundleImage;

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    fn image(reference: &str, digest: Digest, role: Option<ImageRole>) -> BundleImage {
        BundleImage {
            reference: reference.into(),
            digest,
            media_type: String::new(),
            manifests: Vec::new(),
            blobs: Vec::new(),
            role,
        }
    }

    #[test]
    fn roles_become_catalogs_and_the_graph_and_built_images_leave_the_mirror_sets() {
        let mirror_of = |r: &Reference| format!("site:5000/{}", r.repository());
        let images = [
            ("q.io/ocp/release:4.20.2", d('a'), None),
            ("r.io/redhat/index:v4.20", d('b'), None),
            (
                "r.io/redhat/index:v4.20-filtered",
                d('c'),
                Some(ImageRole::Catalog {
                    catalog: "r.io/redhat/index:v4.20".into(),
                    filtered: true,
                }),
            ),
            (
                "r.io/certified/index:v4.20",
                d('e'),
                Some(ImageRole::Catalog {
                    catalog: "r.io/certified/index:v4.20".into(),
                    filtered: false,
                }),
            ),
            (
                "r.io/openshift/graph-image:latest",
                d('f'),
                Some(ImageRole::GraphImage {
                    releases: Some("q.io/ocp/release:4.20.2".into()),
                }),
            ),
        ];
        let mut bundle = BundleManifest::default();
        bundle.signatures =
            crate::bundle::encode_signatures(&[(d('a'), vec![b"sig".to_vec()])].into());
        let mut placed = Vec::new();
        for (reference, digest, role) in images {
            bundle.images.push(image(reference, digest.clone(), role));
            let source: Reference = reference.parse().unwrap();
            placed.push(Placed {
                mirror: mirror_of(&source),
                source,
                digest,
                origin: String::new(),
            });
        }
        let out = from_bundle(&bundle, &mut placed, &mirror_of).unwrap();
        let kept: Vec<String> = placed.iter().map(|p| p.source.to_string()).collect();
        assert_eq!(
            kept,
            [
                "q.io/ocp/release:4.20.2",
                "r.io/redhat/index:v4.20",
                "r.io/certified/index:v4.20"
            ]
        );
        let catalogs: Vec<(String, String, bool)> = out
            .catalogs
            .iter()
            .map(|c| (c.source.to_string(), c.image.to_string(), c.filtered))
            .collect();
        assert_eq!(
            catalogs,
            [
                (
                    "r.io/redhat/index:v4.20".to_string(),
                    format!("site:5000/redhat/index@{}", d('c')),
                    true
                ),
                (
                    "r.io/certified/index:v4.20".to_string(),
                    format!("site:5000/certified/index@{}", d('e')),
                    false
                ),
            ]
        );
        let graph = out.graph.unwrap();
        assert_eq!(
            graph.image.to_string(),
            format!("site:5000/openshift/graph-image@{}", d('f'))
        );
        assert_eq!(graph.releases, "site:5000/ocp/release");
        assert_eq!(out.signatures, [(d('a'), vec![b"sig".to_vec()])].into());
    }
}
