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
