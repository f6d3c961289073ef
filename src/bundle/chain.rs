//! Bundle chains and the shipped record: what a run shipped to a site (for the state's
//! `shipped` table), and, before an import pushes anything, the proof that what a bundle
//! leaves out (blobs and manifests an earlier bundle or an inventory said the site holds) is
//! at the destination by digest.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use futures::StreamExt;

use super::inventory::{ask_one, Ask};
use super::{BundleManifest, PresentBlob};
use crate::destination::Destination;
use crate::plan::Plan;
use crate::reference::{Digest, Reference};
use crate::registry::RegistryClient;
use crate::report::{ImageReport, ImageStatus};
use crate::state::{ShippedItem, ShippedKind};

/// How many missing digests an error names before it says "and N more".
const NAMED: usize = 20;

/// What a bundle carries, per source repository: every blob and manifest inside it.
pub fn shipped_by_bundle(bundle: &BundleManifest) -> Vec<ShippedItem> {
    let blobs: BTreeMap<&Digest, u64> = bundle.blobs.iter().map(|b| (&b.digest, b.size)).collect();
    let manifests: BTreeMap<&Digest, u64> = bundle
        .manifests
        .iter()
        .map(|m| (&m.digest, m.size))
        .collect();
    let mut out: BTreeMap<(String, Digest), ShippedItem> = BTreeMap::new();
    for image in &bundle.images {
        let Ok(source) = image.reference.parse::<Reference>() else {
            continue;
        };
        let repository = source.repo_path();
        let found = image
            .blobs
            .iter()
            .filter_map(|d| blobs.get(d).map(|s| (d, *s, ShippedKind::Blob)))
            .chain(
                image
                    .manifests
                    .iter()
                    .filter_map(|d| manifests.get(d).map(|s| (d, *s, ShippedKind::Manifest))),
            );
        for (digest, size, kind) in found {
            out.entry((repository.clone(), digest.clone()))
                .or_insert_with(|| ShippedItem {
                    repository: repository.clone(),
                    digest: digest.clone(),
                    size,
                    kind,
                });
        }
    }
    out.into_values().collect()
}

/// What a copy or an import put at `dest`: every blob and manifest of each image that did
/// not fail, in the repository it landed in.
pub fn shipped_by_plan(
    plan: &Plan,
    reports: &[ImageReport],
    dest: &Destination,
) -> Vec<ShippedItem> {
    let sizes: BTreeMap<&Digest, u64> = plan.blobs.iter().map(|b| (&b.digest, b.size)).collect();
    let ok: BTreeSet<&str> = reports
        .iter()
        .filter(|r| r.status != ImageStatus::Failed)
        .map(|r| r.reference.as_str())
        .collect();
    let mut out: BTreeMap<(String, Digest), ShippedItem> = BTreeMap::new();
    for image in plan
        .images
        .iter()
        .filter(|i| ok.contains(i.source.to_string().as_str()))
    {
        let repository = dest.repository(&image.source);
        for d in &image.blobs {
            out.entry((repository.clone(), d.clone()))
                .or_insert_with(|| ShippedItem {
                    repository: repository.clone(),
                    digest: d.clone(),
                    size: sizes.get(d).copied().unwrap_or(0),
                    kind: ShippedKind::Blob,
                });
        }
        for d in &image.manifests {
            out.entry((repository.clone(), d.clone()))
                .or_insert_with(|| ShippedItem {
                    repository: repository.clone(),
                    digest: d.clone(),
                    size: 0,
                    kind: ShippedKind::Manifest,
                });
        }
    }
    out.into_values().collect()
}

/// The destination repository holding a blob a bundle left out: the far repository an
/// inventory named, or the one its source repository maps to.
pub fn home(p: &PresentBlob, dest: &Destination) -> String {
    if !p.repository.is_empty() {
        return p.repository.clone();
    }
    p.source
        .as_deref()
        .and_then(|s| format!("{s}@{}", p.digest).parse::<Reference>().ok())
        .map(|r| dest.repository(&r))
        .unwrap_or_default()
}

/// Before anything is pushed: every blob and manifest `bundle` leaves out must be at the
/// destination, proven by digest (a blob in the repository an image needs it in or in its
/// home, a manifest in an image's repository). The error names what is missing.
pub async fn check_left_out(
    bundle: &BundleManifest,
    plan: &Plan,
    dest: &Destination,
    target: &RegistryClient,
    jobs: usize,
) -> Result<()> {
    let present: BTreeMap<&Digest, &PresentBlob> =
        bundle.present.iter().map(|p| (&p.digest, p)).collect();
    let left_manifests: BTreeSet<&Digest> = bundle.present_manifests.iter().collect();
    // Where each left-out digest may be: the repositories of the images that need it.
    let mut blob_places: BTreeMap<&Digest, Vec<String>> = BTreeMap::new();
    let mut manifest_places: BTreeMap<&Digest, Vec<String>> = BTreeMap::new();
    for image in &plan.images {
        let repo = dest.repository(&image.source);
        for d in image.blobs.iter().filter(|d| present.contains_key(d)) {
            blob_places.entry(d).or_default().push(repo.clone());
        }
        for d in image
            .manifests
            .iter()
            .filter(|d| left_manifests.contains(d))
        {
            manifest_places.entry(d).or_default().push(repo.clone());
        }
    }
    // (places, question, is a blob, digest)
    let mut asks: Vec<(Vec<String>, Ask, bool, Digest)> = Vec::new();
    for (d, p) in &present {
        let mut places = blob_places.remove(d).unwrap_or_default();
        places.push(home(p, dest));
        places.retain(|r| !r.is_empty());
        places.dedup();
        asks.push((places, Ask::Blob((*d).clone(), p.size), true, (*d).clone()));
    }
    for (d, places) in manifest_places {
        asks.push((places, Ask::Manifest(d.clone()), false, d.clone()));
    }
    if asks.is_empty() {
        return Ok(());
    }
    super::progress::set(format!(
        "checking {} blob(s) and {} manifest(s) the bundle leaves out at the destination",
        present.len(),
        left_manifests.len()
    ));
    let missing: Vec<(bool, Digest)> = futures::stream::iter(asks)
        .map(|(places, ask, is_blob, digest)| async move {
            for repo in &places {
                if ask_one(target, repo, &ask).await?.is_some() {
                    return anyhow::Ok(None);
                }
            }
            Ok(Some((is_blob, digest)))
        })
        .buffer_unordered(jobs.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .filter_map(|r| r.transpose())
        .collect::<Result<Vec<_>>>()?;
    if missing.is_empty() {
        return Ok(());
    }
    let mut missing = missing;
    missing.sort();
    let blobs = missing.iter().filter(|(b, _)| *b).count();
    let named: Vec<String> = missing
        .iter()
        .take(NAMED)
        .map(|(b, d)| format!("{} {d}", if *b { "blob" } else { "manifest" }))
        .collect();
    let more = missing.len().saturating_sub(NAMED);
    let base = match &bundle.base {
        Some(b) => format!(
            "it builds on bundle {} (bundle.json {}): import that one first",
            b.id, b.digest
        ),
        None => "the inventory it was exported against does not match this registry".into(),
    };
    anyhow::bail!(
        "{} blob(s) and {} manifest(s) the bundle leaves out are not at {}{}: {}{}; {base}; nothing was pushed",
        blobs,
        missing.len() - blobs,
        dest.host,
        dest.prefix.as_deref().map(|p| format!("/{p}")).unwrap_or_default(),
        named.join(", "),
        if more > 0 { format!(" and {more} more") } else { String::new() },
    )
}
