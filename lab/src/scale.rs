//! The scale benchmark's seed: many small images in many repositories of the quay.io stand-in,
//! so that per-image and per-request costs (planning, manifest round trips, scheduling)
//! dominate rather than bytes.
//!
//! Each repository `scale/repo-NNNN` has one 64 KiB base layer shared by its images; each image
//! adds one unique 1–4 KiB layer and its own config, and is tagged `image-NN`. Deterministic
//! (same counts, same digests), so runs are comparable. Repositories are pushed concurrently,
//! each one's images in order, so a repository's base layer is built once and the seed of
//! 20,000 images takes minutes rather than an hour; [`write_scale`] writes the same set straight
//! into a stopped registry's storage in seconds.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{ensure, Result};
use futures::StreamExt;

use super::seed::{
    build_image, name_seed, random_bytes, seeded_image, tar_layer, Compression, Format, ImageSpec,
    Pusher, Seed, SeededImage, Target,
};
use super::storage::Storage;

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

fn check(options: &ScaleOptions) -> Result<()> {
    ensure!(
        options.images >= options.repositories && options.repositories > 0,
        "the scale seed needs at least one image per repository ({} images, {} repositories)",
        options.images,
        options.repositories
    );
    Ok(())
}

/// Push the scale set; returns what was pushed, repository by repository, in order.
pub async fn seed_scale(quay: &Target, options: &ScaleOptions) -> Result<Seed> {
    check(options)?;
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
    let mut images = Vec::with_capacity(count);
    for (tag, spec) in repository_images(r, count) {
        images.push(pusher.push_image(&repo, Some(&tag), &spec).await?);
    }
    Ok(images)
}

/// Writes the scale set straight into the storage of a stopped distribution registry at
/// `root` (see [`crate::storage`]) instead of pushing it: the same images, digests and tags as
/// [`seed_scale`], in seconds rather than the better part of an hour. `host` is the logical
/// registry the references name (`quay.io`). Repositories are spread over the machine's cores.
pub fn write_scale(root: &Path, host: &str, options: &ScaleOptions) -> Result<Seed> {
    check(options)?;
    let storage = Storage::new(root);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_worker = std::thread::scope(|scope| {
        let handles = (0..workers)
            .map(|w| {
                let storage = &storage;
                scope.spawn(move || {
                    (w..options.repositories)
                        .step_by(workers)
                        .map(|r| write_repository(storage, host, r, images_in(options, r)))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect::<Vec<_>>();
        handles
            .into_iter()
            .map(|h| h.join().expect("a storage writer panicked"))
            .collect::<Result<Vec<_>>>()
    })?;
    // Back into repository order: worker w wrote repositories w, w + workers, ….
    let mut repositories: Vec<Option<Vec<SeededImage>>> = vec![None; options.repositories];
    for (w, written) in per_worker.into_iter().enumerate() {
        for (k, images) in written.into_iter().enumerate() {
            repositories[w + k * workers] = Some(images);
        }
    }
    Ok(Seed {
        images: repositories.into_iter().flatten().flatten().collect(),
    })
}

fn write_repository(
    storage: &Storage,
    host: &str,
    r: usize,
    count: usize,
) -> Result<Vec<SeededImage>> {
    let repo = repository(r);
    repository_images(r, count)
        .into_iter()
        .map(|(tag, spec)| {
            let built = build_image(&spec)?;
            storage.write_image(&repo, &tag, &built)?;
            Ok(seeded_image(
                host,
                &repo,
                Some(&tag),
                &built.manifest,
                std::slice::from_ref(&built),
            ))
        })
        .collect()
}

/// Repository `r`'s images (`count` of them), each with its tag: the base layer they share,
/// then each one's own layer and labels.
fn repository_images(r: usize, count: usize) -> Vec<(String, ImageSpec)> {
    let repo = repository(r);
    let base_name = format!("{repo}/base");
    let base = tar_layer(
        &[(
            "usr/share/scale/base",
            random_bytes(name_seed(&base_name), BASE_LAYER_DATA),
        )],
        Compression::None,
    );
    (0..count)
        .map(|k| {
            let tag = format!("image-{k:02}");
            let name = format!("{repo}:{tag}");
            let seed = name_seed(&name);
            // Gzip of random bytes is a little larger than they are, and the tar padding
            // (zeros) nearly vanishes: 900–3,899 random bytes make a 1–4 KiB blob.
            let own = tar_layer(
                &[(
                    "usr/share/scale/own",
                    random_bytes(seed, 900 + (seed % 3000) as usize),
                )],
                Compression::Gzip,
            );
            let labels = BTreeMap::from([("io.prewarm.scale.image".to_string(), name)]);
            let spec = ImageSpec::linux(Format::Oci, "amd64", labels, vec![base.clone(), own]);
            (tag, spec)
        })
        .collect()
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

    /// Every file under `root`, as paths relative to it.
    fn files(root: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    out.push(path.strip_prefix(root).unwrap().to_path_buf());
                }
            }
        }
        out.sort();
        out
    }

    /// The written storage is the pushed one: the same seed, and every file written (blob
    /// data, layer, revision and tag links) is in the storage distribution itself wrote when
    /// the same set was pushed over HTTP, byte for byte.
    #[tokio::test]
    async fn written_storage_holds_what_a_push_stores() {
        let dir = crate::scratch_dir("scale-storage").unwrap();
        let lab = crate::Lab::start(&dir, false).unwrap();
        let options = ScaleOptions {
            images: 7,
            repositories: 3,
            concurrency: 2,
        };
        let pushed = seed_scale(&lab.quay_target(), &options).await.unwrap();
        let written_root = dir.join("written");
        let written = write_scale(&written_root, "quay.io", &options).unwrap();
        assert_eq!(written, pushed, "writing and pushing made different images");
        let written_files = files(&written_root);
        assert!(
            written_files.len() > 7 * 5,
            "only {} files written",
            written_files.len()
        );
        for file in written_files {
            let ours = std::fs::read(written_root.join(&file)).unwrap();
            let theirs = std::fs::read(lab.quay_storage.join(&file))
                .unwrap_or_else(|e| panic!("{}: not in the pushed storage: {e}", file.display()));
            assert!(
                ours == theirs,
                "{} differs from the pushed one",
                file.display()
            );
        }
        drop(lab);
        std::fs::remove_dir_all(&dir).ok();
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
