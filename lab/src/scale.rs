//! The scale benchmark's seed: many small images in many repositories of the quay.io stand-in,
//! so that per-image and per-request costs (planning, manifest round trips, scheduling)
//! dominate rather than bytes.
//!
//! Each repository `scale/repo-NNNN` has one 64 KiB base layer shared by its images; each image
//! adds one unique 1–4 KiB layer and its own config, and is tagged `image-NN`. Deterministic
//! (same counts, same digests), so runs are comparable. Repositories are pushed concurrently,
//! each one's images in order, so a repository's base layer is built once and the seed of
//! 20,000 images takes minutes rather than an hour.

use std::collections::BTreeMap;

use anyhow::{ensure, Result};
use futures::StreamExt;

use super::seed::{
    name_seed, random_bytes, tar_layer, Compression, Format, ImageSpec, Pusher, Seed, SeededImage,
    Target,
};

/// How many images, in how many repositories.
#[derive(Debug, Clone, Copy)]
pub struct ScaleOptions {
    pub images: usize,
    pub repositories: usize,
    /// Repositories pushed at once.
    pub concurrency: usize,
}

impl ScaleOptions {
    /// `images` images in `images / 10` repositories (at least one), as the benchmark asks.
    pub fn new(images: usize) -> Self {
        ScaleOptions {
            images,
            repositories: (images / 10).max(1),
            concurrency: 32,
        }
    }
}

/// A tar of one file holding exactly 64 KiB: the tar header (512 B) and end blocks (1024 B)
/// are counted, so the blob is 65,536 bytes.
const BASE_LAYER_DATA: usize = 64 * 1024 - 1536;

/// Repository `r` of the scale set.
pub fn repository(r: usize) -> String {
    format!("scale/repo-{r:04}")
}

/// How many images repository `r` holds: the images spread evenly, the first ones one more.
fn images_in(options: &ScaleOptions, r: usize) -> usize {
    options.images / options.repositories + usize::from(r < options.images % options.repositories)
}

/// Push the scale set; returns what was pushed, repository by repository, in order.
pub async fn seed_scale(quay: &Target, options: &ScaleOptions) -> Result<Seed> {
    ensure!(
        options.images >= options.repositories && options.repositories > 0,
        "the scale seed needs at least one image per repository ({} images, {} repositories)",
        options.images,
        options.repositories
    );
    let pusher = Pusher::new(quay).await?;
    let repositories = futures::stream::iter(0..options.repositories)
        .map(|r| {
            let pusher = &pusher;
            async move { push_repository(pusher, r, images_in(options, r)).await }
        })
        .buffered(options.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut images = Vec::with_capacity(options.images);
    for pushed in repositories {
        images.extend(pushed?);
    }
    Ok(Seed { images })
}

/// One repository: its base layer, then its images one after the other (they share that
/// layer, and the pusher uploads it with the first).
async fn push_repository(pusher: &Pusher, r: usize, count: usize) -> Result<Vec<SeededImage>> {
    let repo = repository(r);
    let base_name = format!("{repo}/base");
    let base = tar_layer(
        &[(
            "usr/share/scale/base",
            random_bytes(name_seed(&base_name), BASE_LAYER_DATA),
        )],
        Compression::None,
    );
    let mut images = Vec::with_capacity(count);
    for k in 0..count {
        let tag = format!("image-{k:02}");
        let name = format!("{repo}:{tag}");
        let seed = name_seed(&name);
        // Gzip of random bytes is a little larger than they are, and the tar padding (zeros)
        // nearly vanishes: 900–3,899 random bytes make a 1–4 KiB blob.
        let own = tar_layer(
            &[(
                "usr/share/scale/own",
                random_bytes(seed, 900 + (seed % 3000) as usize),
            )],
            Compression::Gzip,
        );
        let labels = BTreeMap::from([("io.prewarm.scale.image".to_string(), name)]);
        let spec = ImageSpec::linux(Format::Oci, "amd64", labels, vec![base.clone(), own]);
        images.push(pusher.push_image(&repo, Some(&tag), &spec).await?);
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_spread_over_repositories_add_up() {
        for (images, repositories) in [(20_000, 2_000), (505, 50), (7, 3), (1, 1)] {
            let options = ScaleOptions {
                images,
                repositories,
                concurrency: 1,
            };
            let total: usize = (0..repositories).map(|r| images_in(&options, r)).sum();
            assert_eq!(
                total, images,
                "{images} images in {repositories} repositories"
            );
        }
    }

    #[test]
    fn layers_have_the_promised_sizes() {
        let base = tar_layer(
            &[("usr/share/scale/base", random_bytes(1, BASE_LAYER_DATA))],
            Compression::None,
        );
        assert_eq!(base.size, 64 * 1024);
        for len in [900, 3899] {
            let own = tar_layer(
                &[("usr/share/scale/own", random_bytes(2, len))],
                Compression::Gzip,
            );
            assert!(
                (1024..=4096).contains(&own.size),
                "{len} random bytes made a {} byte layer",
                own.size
            );
        }
    }
}
