//! The `cluster-resources/` directory: what a cluster applies (`oc apply -f DIR`) to pull
//! what one run placed from where it was placed.
//!
//! * `idms.yaml`: an ImageDigestMirrorSet with one entry per source repository the run placed,
//!   mirrored at the repository it was placed in (every placed image can be pulled by digest).
//! * `itms.yaml`: an ImageTagMirrorSet for the repositories of images the job names by tag.
//! * `catalogsource-<name>.yaml` (`operators.coreos.com/v1alpha1`, namespace
//!   `openshift-marketplace`, `sourceType: grpc`, the image by digest at the mirror) and
//!   `clustercatalog-<name>.yaml` (`olm.operatorframework.io/v1`) per catalog.
//! * `signature-<digest>.yaml`: the release-signature ConfigMaps of the placed releases.
//! * `updateservice.yaml` (`updateservice.operator.openshift.io/v1`, namespace
//!   `openshift-update-service`) when a graph-data image was placed.
//!
//! Every name is a DNS-1123 label derived from the destination or the source reference, and
//! every file is rendered from sorted data, so a rerun writes the same bytes. A run that
//! placed nothing writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::kube::{mirror_set, yaml, Metadata, MirrorEntry, MirrorSet, Resource};
use super::names::label;
use crate::plan::Plan;
use crate::reference::{Digest, Reference};
use crate::report::{ImageReport, ImageStatus};

/// How often OLM polls a CatalogSource's image. The image is pinned by digest, so a poll only
/// re-checks it; a day keeps the mirror quiet.
pub const POLL_INTERVAL: &str = "24h";

/// The default directory name, created beside the report (or in the working directory).
pub const DEFAULT_DIR: &str = "cluster-resources";

/// One image the run placed: its source reference and where it now lives.
#[derive(Debug, Clone)]
pub struct Placed {
    pub source: Reference,
    pub digest: Digest,
    /// `host[:port]/repository` it was placed in.
    pub mirror: String,
    /// Where the plan says it came from (`release 4.20.1 (…)`, `catalog …`).
    pub origin: String,
}

/// A catalog at the mirror: the source the job named and the image clusters pull.
#[derive(Debug, Clone)]
pub struct PlacedCatalog {
    pub source: Reference,
    /// `mirror-repository@sha256:…`.
    pub image: Reference,
    /// Rebuilt to hold only the selected packages.
    pub filtered: bool,
}

/// A graph-data image at the mirror, and the mirror repository of the release images.
#[derive(Debug, Clone)]
pub struct PlacedGraph {
    pub image: Reference,
    pub releases: String,
}

/// Everything one run placed that a cluster needs to know about.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    /// `REGISTRY[/PREFIX]` (or the cache host): names the mirror sets.
    pub destination: String,
    pub images: Vec<Placed>,
    pub catalogs: Vec<PlacedCatalog>,
    pub graph: Option<PlacedGraph>,
    /// Release digest → its signatures, in order.
    pub signatures: BTreeMap<Digest, Vec<Vec<u8>>>,
}

/// The images of `plan` that the executor placed (warmed, already cached, copied, present),
/// each with its mirror as `mirror_of` maps its source.
pub fn placed(
    plan: &Plan,
    reports: &[ImageReport],
    mirror_of: &dyn Fn(&Reference) -> String,
) -> Vec<Placed> {
    let ok: BTreeSet<&str> = reports
        .iter()
        .filter(|r| {
            matches!(
                r.status,
                ImageStatus::Warmed
                    | ImageStatus::Cached
                    | ImageStatus::Copied
                    | ImageStatus::Present
            )
        })
        .map(|r| r.reference.as_str())
        .collect();
    plan.images
        .iter()
        .filter(|i| ok.contains(i.source.to_string().as_str()))
        .map(|i| Placed {
            source: i.source.clone(),
            digest: i.digest.clone(),
            mirror: mirror_of(&i.source),
            origin: i.origin.clone(),
        })
        .collect()
}

/// The image of `images` that is the catalog `source` names: same repository, and the digest
/// it names or the tag (`latest` when it names none).
pub fn find_catalog<'p>(images: &'p [Placed], source: &Reference) -> Option<&'p Placed> {
    images.iter().find(|p| {
        p.source.repo_path() == source.repo_path()
            && match (source.digest(), source.tag()) {
                (Some(d), _) => &p.digest == d,
                (None, t) => p.source.tag() == Some(t.unwrap_or("latest")),
            }
    })
}

/// Whether a plan origin names a release image (`release 4.20.1 (job.yaml: releases[0])`),
/// not one of its components.
pub fn is_release_origin(origin: &str) -> bool {
    origin.starts_with("release ") && !origin.contains(" component ")
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.images.is_empty() && self.catalogs.is_empty() && self.graph.is_none()
    }

    /// File name → contents.
    pub fn render(&self) -> BTreeMap<String, String> {
        let mut files = BTreeMap::new();
        if self.is_empty() {
            return files;
        }
        let name = label(&["prewarm", &self.destination]);
        let mut digest: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut tag: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for p in &self.images {
            let source = p.source.repo_path();
            digest
                .entry(source.clone())
                .or_default()
                .insert(p.mirror.clone());
            if p.source.tag().is_some() {
                tag.entry(source).or_default().insert(p.mirror.clone());
            }
        }
        let entries = |m: BTreeMap<String, BTreeSet<String>>| -> Vec<MirrorEntry> {
            m.into_iter()
                .map(|(source, mirrors)| MirrorEntry {
                    source,
                    mirrors: mirrors.into_iter().collect(),
                    mirror_source_policy: None,
                })
                .collect()
        };
        if !digest.is_empty() {
            files.insert(
                "idms.yaml".into(),
                mirror_set(MirrorSet::Digest, &name, entries(digest)),
            );
        }
        if !tag.is_empty() {
            files.insert(
                "itms.yaml".into(),
                mirror_set(MirrorSet::Tag, &name, entries(tag)),
            );
        }
        for c in &self.catalogs {
            let (cs_name, cc_name) = catalog_names(&c.source);
            files.insert(
                format!("catalogsource-{cs_name}.yaml"),
                catalog_source(&cs_name, c),
            );
            files.insert(
                format!("clustercatalog-{cc_name}.yaml"),
                cluster_catalog(&cc_name, c),
            );
        }
        for (d, sigs) in &self.signatures {
            if self.images.iter().any(|p| &p.digest == d) {
                files.insert(
                    format!("signature-{}-{}.yaml", d.algorithm(), d.hex()),
                    crate::sources::signatures::configmap(d, sigs),
                );
            }
        }
        if let Some(g) = &self.graph {
            files.insert("updateservice.yaml".into(), update_service(g));
        }
        files
    }
}

/// `cs-<repository>-<tag>` and `cc-<repository>-<tag>` (the first 12 hex digits of the digest
/// for a catalog named by digest), as oc-mirror names them.
pub fn catalog_names(source: &Reference) -> (String, String) {
    let repo = source
        .repository()
        .rsplit('/')
        .next()
        .unwrap_or(source.repository());
    let suffix = match (source.tag(), source.digest()) {
        (Some(t), _) => t.to_string(),
        (None, Some(d)) => d.hex()[..12].to_string(),
        (None, None) => "latest".into(),
    };
    (label(&["cs", repo, &suffix]), label(&["cc", repo, &suffix]))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CatalogSourceSpec {
    source_type: &'static str,
    image: String,
    display_name: String,
    publisher: &'static str,
    update_strategy: UpdateStrategy,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UpdateStrategy {
    registry_poll: RegistryPoll,
}

#[derive(Serialize)]
struct RegistryPoll {
    interval: &'static str,
}

fn display_name(c: &PlacedCatalog) -> String {
    let repo = c
        .source
        .repository()
        .rsplit('/')
        .next()
        .unwrap_or("catalog");
    let version = c.source.tag().map(|t| format!(" {t}")).unwrap_or_default();
    let how = if c.filtered {
        "filtered mirror"
    } else {
        "mirror"
    };
    format!("{repo}{version} ({how})")
}

fn catalog_source(name: &str, c: &PlacedCatalog) -> String {
    yaml(&Resource {
        api_version: "operators.coreos.com/v1alpha1",
        kind: "CatalogSource",
        metadata: Metadata::in_namespace(name, "openshift-marketplace"),
        spec: CatalogSourceSpec {
            source_type: "grpc",
            image: c.image.to_string(),
            display_name: display_name(c),
            publisher: "prewarm",
            update_strategy: UpdateStrategy {
                registry_poll: RegistryPoll {
                    interval: POLL_INTERVAL,
                },
            },
        },
    })
}

#[derive(Serialize)]
struct ClusterCatalogSpec {
    source: CatalogSourceRef,
}

#[derive(Serialize)]
struct CatalogSourceRef {
    #[serde(rename = "type")]
    kind: &'static str,
    image: ImageSource,
}

/// No `pollIntervalMinutes`: OLM v1 refuses it for an image pinned by digest.
#[derive(Serialize)]
struct ImageSource {
    #[serde(rename = "ref")]
    reference: String,
}

fn cluster_catalog(name: &str, c: &PlacedCatalog) -> String {
    yaml(&Resource {
        api_version: "olm.operatorframework.io/v1",
        kind: "ClusterCatalog",
        metadata: Metadata::named(name),
        spec: ClusterCatalogSpec {
            source: CatalogSourceRef {
                kind: "Image",
                image: ImageSource {
                    reference: c.image.to_string(),
                },
            },
        },
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UpdateServiceSpec {
    replicas: u32,
    releases: String,
    graph_data_image: String,
}

/// The UpdateService's name.
pub const UPDATE_SERVICE_NAME: &str = "prewarm-update-service";

fn update_service(g: &PlacedGraph) -> String {
    yaml(&Resource {
        api_version: "updateservice.operator.openshift.io/v1",
        kind: "UpdateService",
        metadata: Metadata::in_namespace(UPDATE_SERVICE_NAME, "openshift-update-service"),
        spec: UpdateServiceSpec {
            // Two pods, so a node drain never leaves the cluster without its update graph.
            replicas: 2,
            releases: g.releases.clone(),
            graph_data_image: g.image.to_string(),
        },
    })
}

/// Write `files` into `dir` (each atomically; created only when there is something to write).
/// A file whose bytes are already there is left alone. Returns the paths written or kept.
pub fn write(dir: &Path, files: &BTreeMap<String, String>) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        if std::fs::read(&path).ok().as_deref() != Some(text.as_bytes()) {
            crate::fsutil::write_atomically(&path, text.as_bytes())?;
        }
        out.push(path);
    }
    Ok(out)
}

/// The release signatures kept in the job's `signatures.output` for the placed releases:
/// `<output>/<algorithm>-<hex>-<N>`, N from 1 while files exist.
pub fn signatures_of(output: &Path, placed: &[Placed]) -> Result<BTreeMap<Digest, Vec<Vec<u8>>>> {
    let mut out = BTreeMap::new();
    for p in placed.iter().filter(|p| is_release_origin(&p.origin)) {
        let mut sigs = Vec::new();
        for n in 1.. {
            let path = output.join(format!("{}-{}-{n}", p.digest.algorithm(), p.digest.hex()));
            match std::fs::read(&path) {
                Ok(b) => sigs.push(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => anyhow::bail!("cannot read signature {}: {e}", path.display()),
            }
        }
        if !sigs.is_empty() {
            out.insert(p.digest.clone(), sigs);
        }
    }
    Ok(out)
}
