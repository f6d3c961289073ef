//! A release-scale seed for the benchmark: about 190 component images shaped like an OCP
//! release in miniature — shared RHEL base layers, a few large layers (hyperkube, installer,
//! must-gather), many small ones — 2 GiB or more of unique blobs, pushed by digest into the
//! quay.io stand-in's `openshift-release-dev/ocp-v4.0-art-dev`, as a real release names them.
//!
//! Deterministic (same options, same digests), so the benchmark's runs are comparable.

use std::collections::BTreeMap;

use anyhow::Result;
use futures::StreamExt;

use super::seed::{
    name_seed, random_bytes, tar_layer, Blob, Compression, Format, ImageSpec, Pusher, Seed, Target,
    COMPONENT_REPOSITORY,
};

pub struct ReleaseScaleOptions {
    /// How many component images (a 4.20 release has 194).
    pub components: usize,
    /// How many large (~120 MiB) layers, each in an image of its own.
    pub large_layers: usize,
}

impl Default for ReleaseScaleOptions {
    fn default() -> Self {
        ReleaseScaleOptions {
            components: 190,
            large_layers: 5,
        }
    }
}

const MIB: usize = 1024 * 1024;

/// One layer holding `len` pseudo-random bytes named after `name`.
fn layer(name: &str, len: usize, compression: Compression) -> Blob {
    tar_layer(
        &[(
            &format!("usr/share/{name}/data"),
            random_bytes(name_seed(name), len),
        )],
        compression,
    )
}

/// Push the release-scale component set; returns what was pushed.
pub async fn seed_release_scale(quay: &Target, options: &ReleaseScaleOptions) -> Result<Seed> {
    // Shared bases are gzip so Docker and OCI images can both carry them.
    let rhel = layer("rhel9-base", 80 * MIB, Compression::Gzip);
    let python = layer("rhel9-python", 24 * MIB, Compression::Gzip);
    let tools = layer("ocp-tools", 16 * MIB, Compression::Gzip);
    let pusher = Pusher::new(quay).await?;
    let specs: Vec<ImageSpec> = (0..options.components)
        .map(|i| {
            let name = format!("component-{i:03}");
            // Docker images for a third (gzip only), OCI with zstd for the rest, as real
            // releases mix both.
            let format = if i % 3 == 0 {
                Format::Docker
            } else {
                Format::Oci
            };
            let compression = if format == Format::Docker {
                Compression::Gzip
            } else {
                Compression::Zstd
            };
            let mut layers = vec![rhel.clone()];
            match i % 3 {
                0 => layers.push(python.clone()),
                1 => layers.push(tools.clone()),
                _ => {}
            }
            if i < options.large_layers {
                layers.push(layer(
                    &format!("{name}-large"),
                    120 * MIB,
                    Compression::None,
                ));
            } else {
                // 2–4 own layers, 64 KiB to ~10 MiB, about 8 MiB an image.
                let seed = name_seed(&name);
                for l in 0..(2 + seed % 3) {
                    let size = 64 * 1024
                        + ((seed >> (8 * l)) % (10 * MIB as u64)) as usize / (1 + l as usize % 2);
                    layers.push(layer(&format!("{name}-{l}"), size, compression));
                }
            }
            let labels = BTreeMap::from([("io.openshift.build.component".to_string(), name)]);
            ImageSpec::linux(format, "amd64", labels, layers)
        })
        .collect();
    let images = futures::stream::iter(specs)
        .map(|spec| {
            let pusher = &pusher;
            async move { pusher.push_image(COMPONENT_REPOSITORY, None, &spec).await }
        })
        .buffered(4)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    Ok(Seed { images })
}

/// The release-scale catalog's repository on the registry.redhat.io stand-in.
pub const SCALE_CATALOG_REPOSITORY: &str = "redhat/redhat-operator-index";
pub const SCALE_CATALOG_TAG: &str = "v4.20-scale";

/// Push a file-based catalog index image with `packages` × `bundles_per_package` bundles whose
/// bundle and related images are the seeded components (so a plan of it resolves), each
/// package one JSON stream with one channel chained by `replaces`, plus a `skipRange`.
/// Returns the catalog reference as a user writes it.
pub async fn seed_scale_catalog(
    redhat: &Target,
    components: &Seed,
    packages: usize,
    bundles_per_package: usize,
) -> Result<String> {
    let refs: Vec<String> = components
        .images
        .iter()
        .map(|i| i.reference.clone())
        .collect();
    anyhow::ensure!(
        !refs.is_empty(),
        "the scale catalog needs seeded components"
    );
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut n = 0usize;
    for p in 0..packages {
        let package = format!("scale-operator-{p:04}");
        let mut docs = vec![serde_json::json!({
            "schema": "olm.package", "name": package, "defaultChannel": "stable",
            "description": "a release-scale benchmark package"
        })];
        let mut entries = Vec::new();
        for b in 0..bundles_per_package {
            let name = format!("{package}.v1.{b}.0");
            let mut entry = serde_json::json!({"name": name});
            if b > 0 {
                entry["replaces"] = format!("{package}.v1.{}.0", b - 1).into();
                entry["skipRange"] = format!(">=1.0.0 <1.{b}.0").into();
            }
            entries.push(entry);
            let image = &refs[n % refs.len()];
            let related: Vec<serde_json::Value> = (0..3)
                .map(|k| serde_json::json!({"name": format!("operand-{k}"), "image": refs[(n + 7 * k + 1) % refs.len()]}))
                .chain(std::iter::once(serde_json::json!({"name": "", "image": image})))
                .collect();
            docs.push(serde_json::json!({
                "schema": "olm.bundle", "name": name, "package": package, "image": image,
                "properties": [
                    {"type": "olm.package", "value": {"packageName": package, "version": format!("1.{b}.0")}},
                    {"type": "olm.bundle.object", "value": {"data": "eyJraW5kIjoiQ2x1c3RlclNlcnZpY2VWZXJzaW9uIn0="}}
                ],
                "relatedImages": related
            }));
            n += 1;
        }
        docs.insert(1, serde_json::json!({"schema": "olm.channel", "name": "stable", "package": package, "entries": entries}));
        let mut stream = Vec::new();
        for d in &docs {
            serde_json::to_writer(&mut stream, d)?;
            stream.push(b'\n');
        }
        files.push((format!("configs/{package}/catalog.json"), stream));
    }
    let borrowed: Vec<(&str, Vec<u8>)> =
        files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    let configs = tar_layer(&borrowed, Compression::Gzip);
    let base = layer("opm-base", 4 * MIB, Compression::Gzip);
    let labels = BTreeMap::from([(
        "operators.operatorframework.io.index.configs.v1".to_string(),
        "/configs".to_string(),
    )]);
    let spec = ImageSpec::linux(Format::Oci, "amd64", labels, vec![base, configs]);
    let pusher = Pusher::new(redhat).await?;
    pusher
        .push_image(SCALE_CATALOG_REPOSITORY, Some(SCALE_CATALOG_TAG), &spec)
        .await?;
    Ok(format!(
        "{}/{SCALE_CATALOG_REPOSITORY}:{SCALE_CATALOG_TAG}",
        redhat.host
    ))
}
