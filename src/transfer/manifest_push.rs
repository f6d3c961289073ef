//! Manifests and tags into a destination registry, one rule for copy, bundle import and
//! layout import: each manifest is PUT by digest once per (repository, digest) in a run,
//! children before their index, and every tag comes after every image's manifests, the tags
//! of single manifests before those of indexes.
//!
//! Why: distribution's filesystem storage (docker-registry 2.8) rewrites a manifest's link in
//! place on every PUT of it, a tag's included, and a PUT of an index verifying that manifest
//! as its child at the same instant reads an empty link and is refused (DIGEST_INVALID,
//! MANIFEST_BLOB_UNKNOWN). One image named twice in a repository (two tags, a tag and its
//! digest, an index and one of its children) would otherwise PUT the same manifest while an
//! index PUT checks it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::OnceCell;

use super::destination::Destination;
use super::remote::RegistrySink;
use super::{ImageOutcomes, TransferError};
use crate::plan::Plan;
use crate::reference::Digest;
use crate::registry::manifest::is_index;

/// A manifest's exact bytes and media type, or `None` for one the destination holds already
/// (left out of a bundle because the far site has it).
pub(super) type Fetched = Option<(Bytes, String)>;

/// One manifest PUT, awaited by every image that needs it.
type Once = OnceCell<Result<Fetched, TransferError>>;

/// The manifest PUTs of one run into one registry.
pub(super) struct ManifestPush<'a> {
    pub sink: RegistrySink<'a>,
    /// Per (repository, digest): the one PUT of it and what it put.
    pushed: Mutex<BTreeMap<(String, Digest), Arc<Once>>>,
}

impl<'a> ManifestPush<'a> {
    pub fn new(sink: RegistrySink<'a>) -> Self {
        ManifestPush {
            sink,
            pushed: Mutex::new(BTreeMap::new()),
        }
    }

    fn cell(&self, repository: &str, digest: &Digest) -> Arc<Once> {
        self.pushed
            .lock()
            .expect("pushed lock")
            .entry((repository.to_string(), digest.clone()))
            .or_default()
            .clone()
    }

    /// Push image `manifests` (top first, as a plan lists them) into `repository` by digest:
    /// children, then the top, each once per repository in a run; images sharing one wait for
    /// its one PUT. `fetch(digest)` gives a manifest's bytes and media type (see [`Fetched`]).
    /// The tag comes later, from [`ManifestPush::tags`].
    pub async fn image<F, Fut>(
        &self,
        repository: &str,
        manifests: &[Digest],
        fetch: F,
    ) -> Result<(), TransferError>
    where
        F: Fn(Digest) -> Fut,
        Fut: Future<Output = Result<Fetched, TransferError>>,
    {
        for digest in manifests.iter().skip(1).chain(manifests.first()) {
            let cell = self.cell(repository, digest);
            cell.get_or_init(|| async {
                let fetched = fetch(digest.clone()).await?;
                if let Some((bytes, media_type)) = &fetched {
                    self.sink
                        .put_manifest(repository, digest.as_str(), media_type, bytes.clone())
                        .await?;
                }
                Ok(fetched)
            })
            .await
            .clone()?;
        }
        Ok(())
    }

    /// PUT the tag of every planned image that arrived whole (`outcomes` says none of its
    /// parts failed) and whose top manifest this run pushed, `jobs` at once: first the tags of
    /// single manifests, then those of indexes. A tag whose top manifest the destination held
    /// already is left as it is.
    pub async fn tags(
        &self,
        plan: &Plan,
        dest: &Destination,
        outcomes: &ImageOutcomes,
        jobs: usize,
    ) {
        let mut tagged = Vec::new();
        for (i, image) in plan.images.iter().enumerate() {
            let Some(tag) = image.source.tag() else {
                continue;
            };
            if outcomes.has_failed(i) {
                continue;
            }
            let repository = dest.repository(&image.source);
            let cell = self.cell(&repository, &image.digest);
            if let Some(Ok(Some((bytes, media_type)))) = cell.get() {
                tagged.push((i, repository, tag, bytes.clone(), media_type.clone()));
            }
        }
        for indexes in [false, true] {
            let wave = tagged.iter().filter(|t| is_index(&t.4) == indexes).map(
                |(i, repository, tag, bytes, media_type)| async move {
                    let put = self
                        .sink
                        .put_manifest(repository, tag, media_type, bytes.clone())
                        .await;
                    (*i, put)
                },
            );
            let mut running = futures::stream::iter(wave).buffer_unordered(jobs.max(1));
            while let Some(result) = running.next().await {
                if let (i, Err(e)) = result {
                    outcomes.fail(i, e);
                }
            }
        }
    }
}
