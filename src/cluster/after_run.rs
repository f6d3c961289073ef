//! The one call `copy`, `import`, `warm` and `verify` make after their executor returns: from
//! the plan, the executor's image reports and the destination mapping, rebuild the filtered
//! catalogs and the graph image (`copy`), or take them from the bundle (`import`), and write
//! the cluster-resources directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::resources::{self, PlacedCatalog, Resources};
use super::{carry, catalog_image, graph_image};
use crate::bundle::BundleManifest;
use crate::job::Job;
use crate::plan::Plan;
use crate::reference::Reference;
use crate::registry::Registries;
use crate::report::ImageReport;

/// Where the cluster resources go: `--cluster-resources DIR`, else `cluster-resources/`
/// beside the `--report` file; with neither, nowhere.
pub fn dir(flag: Option<&Path>, report: Option<&Path>) -> Option<PathBuf> {
    match (flag, report) {
        (Some(d), _) => Some(d.to_path_buf()),
        (None, Some(r)) => Some(
            r.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join(resources::DEFAULT_DIR),
        ),
        (None, None) => None,
    }
}

/// What one run hands over.
pub struct AfterRun<'a> {
    /// The job (none for `import`, which knows only the bundle).
    pub job: Option<&'a Job>,
    pub plan: &'a Plan,
    pub reports: &'a [ImageReport],
    /// `REGISTRY[/PREFIX]`, or the cache host for `warm`.
    pub destination: &'a str,
    /// Source reference → `host/repository` where the run placed it.
    pub mirror_of: &'a dyn Fn(&Reference) -> String,
    pub dir: &'a Path,
    /// Where to push filtered catalogs, and the registries to read the originals from; none
    /// where the run has no writable destination (a cache org is a read-only proxy).
    pub rebuild: Option<(&'a Registries, catalog_image::Target<'a>)>,
    /// The bundle an `import` pushed: the roles of its images and its release signatures.
    pub bundle: Option<&'a BundleManifest>,
}

/// Collect what was placed, write the directory and say so; returns the files written.
pub async fn write(a: &AfterRun<'_>) -> Result<Vec<PathBuf>> {
    let written = collect_and_write(a).await?;
    if !written.is_empty() {
        eprintln!(
            "cluster resources: {} file(s) in {}",
            written.len(),
            a.dir.display()
        );
    }
    Ok(written)
}

/// `warm` and `verify`: what they placed in the cache orgs, on the cache host. With `build`
/// (`warm`), the filtered catalogs and the graph image are built and pushed into the job's
/// regular org there (`cache.built_org`, as `<org>/<source repository>`), their bases read from
/// the cache orgs; `verify` names the catalogs as published.
pub async fn write_for_cache(
    job: &Job,
    registries: &Registries,
    plan: &Plan,
    reports: &[ImageReport],
    dir: &Path,
    build: bool,
) -> Result<Vec<PathBuf>> {
    let cache = job.cache()?;
    let mirror_of = |r: &Reference| {
        let c = cache.cache_reference(r);
        format!("{}/{}", c.registry(), c.repository())
    };
    let repository_of = |r: &Reference| format!("{}/{}", cache.built_org, r.repository());
    let placed_at = |r: &Reference| cache.cache_reference(r).repository().to_string();
    let rebuild = match build {
        true => Some((
            registries,
            catalog_image::Target {
                client: registries.client(&cache.host)?,
                host: &cache.host,
                repository_of: &repository_of,
                placed_at: &placed_at,
            },
        )),
        false => None,
    };
    write(&AfterRun {
        job: Some(job),
        plan,
        reports,
        destination: &cache.host,
        mirror_of: &mirror_of,
        dir,
        rebuild,
        bundle: None,
    })
    .await
}

async fn collect_and_write(a: &AfterRun<'_>) -> Result<Vec<PathBuf>> {
    let mut images = resources::placed(a.plan, a.reports, a.mirror_of);
    let mut out = Resources {
        destination: a.destination.to_string(),
        ..Resources::default()
    };
    if let Some(bundle) = a.bundle {
        let carried = carry::from_bundle(bundle, &mut images, a.mirror_of)?;
        out.catalogs = carried.catalogs;
        out.graph = carried.graph;
        out.signatures = carried.signatures;
    }
    if let Some(job) = a.job {
        out.catalogs = catalogs(job, &images, a.rebuild.as_ref()).await?;
        if let Some(g) = job.graph.as_ref().and_then(|g| g.image.as_ref()) {
            match &a.rebuild {
                Some((_, target)) => {
                    out.graph = graph_image::build(job, g, &images, target).await?
                }
                None => eprintln!(
                    "note: graph.image: the graph-data image is built by copy, export and warm, not verify"
                ),
            }
        }
        if let Some(cfg) = &job.signatures {
            out.signatures = resources::signatures_of(&job.relative(&cfg.output), &images)?;
        }
    }
    out.images = images;
    resources::write(a.dir, &out.render())
}

/// The job's catalogs that the run placed, each at its mirror by the digest placed — or, for
/// a catalog with package filters and a destination to push to, its filtered rebuild.
async fn catalogs(
    job: &Job,
    images: &[resources::Placed],
    rebuild: Option<&(&Registries, catalog_image::Target<'_>)>,
) -> Result<Vec<PlacedCatalog>> {
    let mut out = Vec::new();
    for (i, op) in job.operators.iter().enumerate() {
        let what = format!("{}: operators[{i}]", job.path.display());
        let source: Reference = op
            .catalog
            .parse()
            .map_err(|e| anyhow::anyhow!("{what}.catalog: {e}"))?;
        let Some(p) = resources::find_catalog(images, &source) else {
            continue;
        };
        match (op.packages.is_empty(), rebuild) {
            (false, Some((registries, target))) => {
                let (placed, notes) = catalog_image::rebuild(job, registries, op, &what, target)
                    .await
                    .with_context(|| format!("filtered catalog of `{source}`"))?;
                for n in notes {
                    eprintln!("note: {n}");
                }
                eprintln!("filtered catalog: {}", placed.image);
                out.push(placed);
            }
            (filters, _) => {
                if !filters {
                    eprintln!("note: catalog {source}: the CatalogSource names the catalog as published (all its packages): filtered catalogs are built by copy, export and warm, not verify");
                }
                out.push(PlacedCatalog {
                    source,
                    image: format!("{}@{}", p.mirror, p.digest).parse()?,
                    filtered: false,
                });
            }
        }
    }
    Ok(out)
}
