//! The registry as a source and as a sink: the only module of the engine that calls the
//! registry client, so a change of the transport's API is adapted here, once.
//!
//! - [`RegistrySource`]: manifests and blobs of the plan's images, read from their source
//!   registry (or through the cache when the job resolves through it); blob bodies verified
//!   while streaming and resumed with Range requests after a broken connection.
//! - [`RegistrySink`]: a destination registry — HEAD, cross-repository mount, streamed upload,
//!   manifest PUT byte for byte, tag.
//! - [`CacheSink`]: a pull-through cache — manifests and blobs read through it, verified and
//!   discarded; HEAD for what an earlier run warmed.

use std::sync::Arc;

use futures::StreamExt;

use super::destination::source_reader;
use super::TransferError;
use crate::job::Job;
use crate::reference::{Digest, Reference};
pub use crate::registry::Presence;
use crate::registry::{
    verified_body, BlobSink, ChunkStream, Discard, FetchedManifest, Pushed, Registries,
    RegistryClient, RegistryError,
};

/// Where the plan's images are read from.
pub struct RegistrySource<'a> {
    pub job: &'a Job,
    pub registries: &'a Registries,
}

impl RegistrySource<'_> {
    fn reader(&self, image: &Reference) -> Result<(Arc<RegistryClient>, String), TransferError> {
        Ok(source_reader(self.job, self.registries, image)?)
    }

    /// A manifest's exact bytes, checked against `digest`.
    pub async fn manifest(
        &self,
        image: &Reference,
        digest: &Digest,
    ) -> Result<FetchedManifest, TransferError> {
        let (client, repository) = self.reader(image)?;
        Ok(client.get_manifest(&repository, digest.as_str()).await?)
    }

    /// A blob into `sink`, verified (resumed with Range, fetched again on a bad hash); the
    /// bytes read, which must be `size`.
    pub async fn read_blob(
        &self,
        image: &Reference,
        digest: &Digest,
        size: u64,
        sink: &mut dyn BlobSink,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64, TransferError> {
        let (client, repository) = self.reader(image)?;
        let n = client
            .fetch_blob(&repository, digest, sink, progress)
            .await?;
        if n != size {
            return Err(TransferError::Size {
                digest: digest.clone(),
                from: image.repo_path(),
                expected: size,
                got: n,
            });
        }
        Ok(n)
    }

    /// A blob's body as a stream for an upload: resumed from where it broke off (Range), and
    /// ending in an error unless the bytes are `size` long and hash to `digest`.
    pub fn body(
        &self,
        image: &Reference,
        digest: &Digest,
        size: u64,
    ) -> Result<ChunkStream, RegistryError> {
        let (client, repository) =
            source_reader(self.job, self.registries, image).map_err(|e| {
                RegistryError::NoClient {
                    what: format!("blob `{digest}` of `{}`", image.repo_path()),
                    detail: format!("{e:#}"),
                }
            })?;
        Ok(resumable_body(client, repository, digest.clone(), size))
    }
}

/// The body of a blob read from `client`, reopened from its offset with a Range request when
/// it breaks off, verified against `digest` and `size`.
pub fn resumable_body(
    client: Arc<RegistryClient>,
    repository: String,
    digest: Digest,
    size: u64,
) -> ChunkStream {
    struct Reading {
        client: Arc<RegistryClient>,
        repository: String,
        digest: Digest,
        size: u64,
        offset: u64,
        attempt: u32,
        attempts: u32,
        stream: Option<ChunkStream>,
        done: bool,
    }
    // A broken body is resumed as often as `--retries` allows any request to be retried.
    let attempts = client.policy().attempts.max(1);
    let state = Reading {
        client,
        repository,
        digest: digest.clone(),
        size,
        offset: 0,
        attempt: 0,
        attempts,
        stream: None,
        done: false,
    };
    let raw = futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            if s.stream.is_none() {
                match s
                    .client
                    .blob_stream_from(&s.repository, &s.digest, s.offset)
                    .await
                {
                    Ok(stream) => s.stream = Some(stream),
                    Err(e) => {
                        let permanent = matches!(
                            e,
                            RegistryError::NotFound { .. } | RegistryError::Unauthorized { .. }
                        );
                        s.attempt += 1;
                        if permanent || s.attempt >= s.attempts {
                            s.done = true;
                            return Some((Err(std::io::Error::other(e.to_string())), s));
                        }
                        tokio::time::sleep(backoff(s.attempt)).await;
                        continue;
                    }
                }
            }
            let stream = s.stream.as_mut().expect("an open body");
            match stream.next().await {
                Some(Ok(chunk)) => {
                    s.offset += chunk.len() as u64;
                    return Some((Ok(chunk), s));
                }
                None if s.offset >= s.size => return None,
                broke => {
                    let why = match broke {
                        Some(Err(e)) => e.to_string(),
                        _ => format!("the body ended after {} of {} bytes", s.offset, s.size),
                    };
                    s.stream = None;
                    s.attempt += 1;
                    if s.attempt >= s.attempts {
                        s.done = true;
                        return Some((Err(std::io::Error::other(why)), s));
                    }
                    tracing::debug!("blob {}: {why}; resuming at {}", s.digest, s.offset);
                    tokio::time::sleep(backoff(s.attempt)).await;
                }
            }
        }
    });
    verified_body(digest, size, Box::pin(raw), None).0
}

fn backoff(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis(250u64 << attempt.min(5))
}

/// A destination registry.
pub struct RegistrySink<'a> {
    pub client: &'a RegistryClient,
}

impl RegistrySink<'_> {
    /// Push one blob: nothing when `repository` holds it, a mount from `mount_from` when that
    /// works, else a streamed upload of `body()`.
    pub async fn push_blob<F>(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        mount_from: Option<&str>,
        body: impl Fn() -> F,
    ) -> Result<Pushed, RegistryError>
    where
        F: std::future::Future<Output = Result<ChunkStream, RegistryError>>,
    {
        self.client
            .push_blob(repository, digest, size, mount_from, body)
            .await
    }

    /// Whether `repository` holds the blob (proven: its digest or its size, see
    /// [`Presence`]).
    pub async fn has_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<bool, TransferError> {
        Ok(self
            .client
            .head_blob(repository, digest, Some(size))
            .await
            .map(Presence::is_present)?)
    }

    /// Upload `body` (already verified by its producer) into `repository`.
    pub async fn upload(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        body: ChunkStream,
    ) -> Result<u64, RegistryError> {
        let location = self.client.start_upload(repository).await?;
        self.client
            .finish_upload(repository, &location, digest, size, body)
            .await
    }

    /// A blob of this registry as a verified body (a mount answered 202: copy it within).
    pub async fn body_within(
        &self,
        from: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<ChunkStream, RegistryError> {
        let stream = self.client.blob_stream(from, digest).await?;
        Ok(verified_body(digest.clone(), size, stream, None).0)
    }

    /// PUT manifest bytes under `key` (their digest, or a tag).
    pub async fn put_manifest(
        &self,
        repository: &str,
        key: &str,
        media_type: &str,
        bytes: bytes::Bytes,
    ) -> Result<(), TransferError> {
        self.client
            .put_manifest(repository, key, media_type, bytes)
            .await?;
        Ok(())
    }

    /// Whether `repository` holds the manifest `digest` (proven, see [`Presence`]): an error
    /// saying why not.
    pub async fn has_manifest(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<(), TransferError> {
        match self
            .client
            .manifest_presence(repository, digest, None)
            .await?
        {
            Presence::Present => Ok(()),
            Presence::Absent => Err(TransferError::Missing {
                digest: digest.clone(),
                place: format!("{}/{repository}", self.client.host()),
            }),
        }
    }
}

/// A pull-through cache.
pub struct CacheSink<'a> {
    pub client: &'a RegistryClient,
}

impl CacheSink<'_> {
    /// GET a manifest through the cache (by tag or digest); its digest.
    pub async fn manifest(&self, repository: &str, key: &str) -> Result<Digest, TransferError> {
        Ok(self.client.get_manifest(repository, key).await?.digest)
    }

    /// Read a blob through the cache fully, verify it, keep nothing: the bytes read.
    pub async fn read_through(
        &self,
        repository: &str,
        digest: &Digest,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64, TransferError> {
        Ok(self
            .client
            .fetch_blob(repository, digest, &mut Discard, progress)
            .await?)
    }

    /// HEAD a blob; present only with proof (its digest, or `size`).
    pub async fn blob_presence(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<Presence, TransferError> {
        Ok(self
            .client
            .head_blob(repository, digest, Some(size))
            .await?)
    }

    /// HEAD a manifest by digest; present only with proof (a matching
    /// `Docker-Content-Digest`, else `size` or the bytes' hash).
    pub async fn manifest_presence(
        &self,
        repository: &str,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<Presence, TransferError> {
        match self
            .client
            .manifest_presence(repository, digest, size)
            .await
        {
            Err(RegistryError::NotFound { .. }) => Ok(Presence::Absent),
            other => Ok(other?),
        }
    }
}

/// Pushed as the scheduler counts it.
pub fn done_of(pushed: Pushed) -> super::scheduler::Done {
    use super::scheduler::Done;
    match pushed {
        Pushed::Present => Done::Present,
        Pushed::Mounted => Done::Mounted,
        Pushed::Uploaded(n) => Done::Moved(n),
    }
}
