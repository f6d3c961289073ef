//! The write half of the registry transport: blob existence, cross-repository mounts,
//! streamed uploads, manifest PUTs byte for byte, and the listings an inventory needs.
//!
//! A child of `client` so every request here goes through the same path (budget, auth,
//! timeout, retries); bearer registries are asked for `repository:<repo>:pull,push` tokens. Upload bodies are
//! streams and are never held whole in memory; they pass through [`verified_body`], which
//! holds back the last chunk until the bytes hash to the expected digest, so a registry that
//! does not check digests still never stores wrong bytes under a right name.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode};
use sha2::{Digest as _, Sha256};

use super::{Body, Call, Failure, RegistryClient, RegistryError, Scope};
use crate::reference::Digest;

/// What a blob push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The repository already held it (HEAD).
    Present,
    /// Mounted from another repository of the same registry: no bytes moved.
    Mounted,
    /// Uploaded: this many bytes.
    Uploaded(u64),
}

/// The result of a mount request.
#[derive(Debug)]
pub enum Mount {
    Mounted,
    /// 202: not mounted, an upload session was opened at this URL instead.
    Opened(String),
}

/// A stream of body chunks as an upload takes it.
pub type ChunkStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

impl RegistryClient {
    /// A push-scoped call of `method` on `url` (a path under this registry or a Location).
    async fn push_call<'a>(
        &self,
        method: Method,
        repository: &'a str,
        from: Option<&'a str>,
        url: &str,
        headers: HeaderMap,
        body: Body,
    ) -> Result<Call<'a>, RegistryError> {
        Ok(Call {
            method,
            url: self.url(url).await?,
            scope: Scope::Push { repository, from },
            headers,
            body,
        })
    }

    fn location(&self, resp: &Response, what: &str) -> Result<String, RegistryError> {
        resp.headers()
            .get(LOCATION)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| RegistryError::Status {
                host: self.host.clone(),
                what: what.to_string(),
                status: resp.status().as_u16(),
                detail: "no Location header in the answer".into(),
            })
    }

    /// `POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<from>`: 201 mounted; 202 means
    /// the registry did not mount and opened an upload instead (the caller uploads into it).
    pub async fn mount_blob(
        &self,
        repository: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<Mount, RegistryError> {
        let what = format!(
            "mount of blob `{digest}` from `{from}` into `{}/{repository}`",
            self.host
        );
        let call = self
            .push_call(
                Method::POST,
                repository,
                Some(from),
                &format!("/v2/{repository}/blobs/uploads/?mount={digest}&from={from}"),
                empty_length(),
                Body::Empty,
            )
            .await?;
        let resp = self.request(&what, call).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(Mount::Mounted),
            StatusCode::ACCEPTED => Ok(Mount::Opened(self.location(&resp, &what)?)),
            status => {
                let resp = self.check(resp, &what).await?;
                Err(RegistryError::Status {
                    host: self.host.clone(),
                    what,
                    status: status.as_u16(),
                    detail: format!(
                        "unexpected answer ({} bytes)",
                        resp.content_length().unwrap_or(0)
                    ),
                })
            }
        }
    }

    /// A blob's body from byte `offset` on (a Range request when `offset > 0`; the registry
    /// must answer 206 from exactly there).
    pub async fn blob_stream_from(
        &self,
        repository: &str,
        digest: &Digest,
        offset: u64,
    ) -> Result<ChunkStream, RegistryError> {
        let what = format!("blob `{digest}` of `{}/{repository}`", self.host);
        let mut headers = HeaderMap::new();
        if offset > 0 {
            headers.insert(
                reqwest::header::RANGE,
                HeaderValue::from_str(&format!("bytes={offset}-")).expect("range header"),
            );
        }
        let call = Call {
            method: Method::GET,
            url: self
                .url(&format!("/v2/{repository}/blobs/{digest}"))
                .await?,
            scope: Scope::Pull(repository),
            headers,
            body: Body::Empty,
        };
        let resp = self.request(&what, call).await?;
        let resp = self.check(resp, &what).await?;
        if offset > 0 {
            if resp.status() != StatusCode::PARTIAL_CONTENT
                || super::content_range_start(resp.headers()) != Some(offset)
            {
                return Err(RegistryError::Status {
                    host: self.host.clone(),
                    what,
                    status: resp.status().as_u16(),
                    detail: format!(
                        "cannot resume from byte {offset}: the registry ignored the Range"
                    ),
                });
            }
            self.stats
                .resumed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(self.watched(resp))
    }

    /// A blob's body as a stream, for piping into an upload (which verifies it with
    /// [`verified_body`]); not resumed: a broken copy is pushed again by [`Self::push_blob`].
    pub async fn blob_stream(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<ChunkStream, RegistryError> {
        self.blob_stream_from(repository, digest, 0).await
    }

    /// A response body that fails when no bytes arrive for the policy's timeout. Bytes are
    /// counted once, by the upload they feed.
    fn watched(&self, resp: Response) -> ChunkStream {
        let timeout = self.policy.timeout;
        let stream = resp.bytes_stream();
        Box::pin(futures::stream::unfold(
            Some(stream),
            move |state| async move {
                let mut stream = state?;
                match tokio::time::timeout(timeout, futures::StreamExt::next(&mut stream)).await {
                    Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(stream))),
                    Ok(Some(Err(e))) => {
                        Some((Err(std::io::Error::other(super::root_cause(&e))), None))
                    }
                    Ok(None) => None,
                    Err(_) => Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no data for {}s (--timeout)", timeout.as_secs()),
                        )),
                        None,
                    )),
                }
            },
        ))
    }

    /// One attempt of `POST /v2/<repo>/blobs/uploads/`: the upload URL.
    async fn open_upload(&self, repository: &str, what: &str) -> Result<String, Failure> {
        let call = self
            .push_call(
                Method::POST,
                repository,
                None,
                &format!("/v2/{repository}/blobs/uploads/"),
                empty_length(),
                Body::Empty,
            )
            .await?;
        let resp = self.attempt(&call).await?;
        let resp = self.check(resp, what).await?;
        Ok(self.location(&resp, what)?)
    }

    /// `POST /v2/<repo>/blobs/uploads/` under the policy: the upload URL.
    pub async fn start_upload(&self, repository: &str) -> Result<String, RegistryError> {
        let what = format!("upload into `{}/{repository}`", self.host);
        self.retrying(&what, || self.open_upload(repository, &what))
            .await
    }

    /// One attempt of `PUT <location>?digest=<digest>` with the whole blob as one streamed
    /// body (a monolithic upload: one request, no chunk bookkeeping).
    async fn put_blob(
        &self,
        repository: &str,
        location: &str,
        digest: &Digest,
        size: u64,
        body: ChunkStream,
    ) -> Result<u64, Failure> {
        let what = format!(
            "upload of blob `{digest}` into `{}/{repository}`",
            self.host
        );
        let url = self.url(location).await?;
        let sep = if url.contains('?') { '&' } else { '?' };
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
        let call = self
            .push_call(
                Method::PUT,
                repository,
                None,
                &format!("{url}{sep}digest={digest}"),
                headers,
                Body::Stream(Mutex::new(Some(body))),
            )
            .await?;
        let resp = self.attempt(&call).await?;
        self.check(resp, &what).await?;
        Ok(size)
    }

    /// Complete an upload opened with [`Self::start_upload`] (or a declined mount) with `body`,
    /// under the policy's budget, auth and timeout. One attempt: a stream cannot be replayed,
    /// so a transient failure is returned for the caller to push the blob again (as
    /// [`Self::push_blob`] does).
    pub async fn finish_upload(
        &self,
        repository: &str,
        location: &str,
        digest: &Digest,
        size: u64,
        body: ChunkStream,
    ) -> Result<u64, RegistryError> {
        self.put_blob(repository, location, digest, size, body)
            .await
            .map_err(|f| f.error)
    }

    /// Push one blob into `repository`: nothing when it is there already (proven: see
    /// [`Self::head_blob`]), a mount when `mount_from` holds it, else a streamed upload of
    /// `body()`. A failed upload is retried under the policy in a new upload session, with a
    /// new `body()`.
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
        if self
            .head_blob(repository, digest, Some(size))
            .await?
            .is_present()
        {
            return Ok(Pushed::Present);
        }
        let opened = match mount_from.filter(|f| *f != repository) {
            Some(from) => match self.mount_blob(repository, digest, from).await? {
                Mount::Mounted => return Ok(Pushed::Mounted),
                Mount::Opened(location) => Some(location),
            },
            None => None,
        };
        let what = format!(
            "upload of blob `{digest}` into `{}/{repository}`",
            self.host
        );
        let opened = Mutex::new(opened);
        self.retrying(&what, || async {
            let first = opened.lock().expect("location lock").take();
            let location = match first {
                Some(l) => l,
                None => self.open_upload(repository, &what).await?,
            };
            let body = body().await?;
            self.put_blob(repository, &location, digest, size, body)
                .await
        })
        .await
        .map(Pushed::Uploaded)
    }

    /// PUT manifest bytes exactly as given under `key` (a tag or their digest), with their
    /// media type; the registry must answer with the digest of those bytes.
    pub async fn put_manifest(
        &self,
        repository: &str,
        key: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest, RegistryError> {
        let what = self.what_manifest(repository, key);
        let digest = Digest::sha256_of(&bytes);
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(media_type).map_err(|_| RegistryError::BadMediaType {
                what: what.clone(),
                media_type: media_type.to_string(),
            })?,
        );
        let call = self
            .push_call(
                Method::PUT,
                repository,
                None,
                &format!("/v2/{repository}/manifests/{key}"),
                headers,
                Body::Bytes(bytes),
            )
            .await?;
        let resp = self.request(&what, call).await?;
        let resp = self.check(resp, &what).await?;
        if let Some(stored) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|h| h.to_str().ok())
        {
            if stored != digest.as_str() {
                return Err(RegistryError::DigestMismatch {
                    what: format!("{what} as stored"),
                    expected: digest,
                    actual: stored.to_string(),
                });
            }
        }
        Ok(digest)
    }

    /// A JSON listing page (tags, catalog): a page or a body that is not the JSON expected is
    /// an error naming the URL and what came back.
    async fn listing<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        resp: Response,
    ) -> Result<(T, Option<String>), RegistryError> {
        let next = next_link(resp.headers());
        let url = resp.url().to_string();
        let status = resp.status().as_u16();
        let content_type = super::content_type(resp.headers());
        let body = self.read_body(resp, what).await.map_err(|f| f.error)?;
        match serde_json::from_slice::<T>(&body) {
            Ok(v) => Ok((v, next)),
            Err(e) => Err(RegistryError::NotRegistry {
                what: what.to_string(),
                url,
                why: format!("the body is not the JSON listing expected ({e})"),
                status,
                content_type,
                body: format!("body starts {:?}", super::first_bytes(&body)),
            }),
        }
    }

    /// Every tag of `repository` (following `Link` pages); none for an unknown repository.
    pub async fn list_tags(&self, repository: &str) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Tags {
            tags: Option<Vec<String>>,
        }
        let what = format!("tag list of `{}/{repository}`", self.host);
        let mut out = Vec::new();
        let mut next = Some(format!("/v2/{repository}/tags/list?n=1000"));
        while let Some(path) = next.take() {
            let call = Call {
                method: Method::GET,
                url: self.url(&path).await?,
                scope: Scope::Pull(repository),
                headers: HeaderMap::new(),
                body: Body::Empty,
            };
            let resp = self.request(&what, call).await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(out);
            }
            let resp = self.check(resp, &what).await?;
            let (tags, link): (Tags, _) = self.listing(&what, resp).await?;
            next = link;
            out.extend(tags.tags.unwrap_or_default());
        }
        Ok(out)
    }

    /// Every repository the registry lists in `/v2/_catalog` (following `Link` pages).
    pub async fn catalog(&self) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Catalog {
            repositories: Option<Vec<String>>,
        }
        let what = format!("catalog of `{}`", self.host);
        let mut out = Vec::new();
        let mut next = Some("/v2/_catalog?n=1000".to_string());
        while let Some(path) = next.take() {
            let call = Call {
                method: Method::GET,
                url: self.url(&path).await?,
                scope: Scope::Catalog,
                headers: HeaderMap::new(),
                body: Body::Empty,
            };
            let resp = self.request(&what, call).await?;
            let resp = self.check(resp, &what).await?;
            let (c, link): (Catalog, _) = self.listing(&what, resp).await?;
            next = link;
            out.extend(c.repositories.unwrap_or_default());
        }
        Ok(out)
    }
}

fn empty_length() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    headers
}

/// `Link: </v2/…?last=x&n=100>; rel="next"` → the path.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    let start = v.find('<')? + 1;
    let end = v[start..].find('>')? + start;
    v.contains("rel=\"next\"")
        .then(|| v[start..end].to_string())
}

/// Why a verified body stopped, readable after the request failed.
pub type BodyFailure = Arc<Mutex<Option<String>>>;

/// Wrap `inner` so the stream ends in an error (and the registry never completes the upload)
/// unless its bytes are exactly `size` long and hash to `digest`. The last chunk is held back
/// until the check passes. What went wrong is left in the returned [`BodyFailure`].
pub fn verified_body(
    digest: Digest,
    size: u64,
    inner: ChunkStream,
    on_chunk: Option<Arc<dyn Fn(u64) + Send + Sync>>,
) -> (ChunkStream, BodyFailure) {
    let failure: BodyFailure = Arc::new(Mutex::new(None));
    let stream = Verified {
        inner,
        digest,
        size,
        hasher: Sha256::new(),
        seen: 0,
        held: None,
        done: false,
        failure: failure.clone(),
        on_chunk,
    };
    (Box::pin(stream), failure)
}

struct Verified {
    inner: ChunkStream,
    digest: Digest,
    size: u64,
    hasher: Sha256,
    seen: u64,
    held: Option<Bytes>,
    done: bool,
    failure: BodyFailure,
    on_chunk: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

impl Verified {
    fn fail(&mut self, why: String) -> Poll<Option<std::io::Result<Bytes>>> {
        self.done = true;
        *self.failure.lock().expect("failure lock") = Some(why.clone());
        Poll::Ready(Some(Err(std::io::Error::other(why))))
    }
}

impl Stream for Verified {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            match self.inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    let why = format!("reading blob `{}`: {e}", self.digest);
                    return self.fail(why);
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    self.hasher.update(&chunk);
                    self.seen += chunk.len() as u64;
                    if let Some(f) = &self.on_chunk {
                        f(chunk.len() as u64);
                    }
                    if self.seen > self.size {
                        let why =
                            format!("blob `{}`: more than its {} bytes", self.digest, self.size);
                        return self.fail(why);
                    }
                    if let Some(prev) = self.held.replace(chunk) {
                        return Poll::Ready(Some(Ok(prev)));
                    }
                }
                Poll::Ready(None) => {
                    let actual = format!("sha256:{}", hex::encode(self.hasher.finalize_reset()));
                    if self.seen != self.size {
                        let why = format!(
                            "blob `{}`: {} bytes instead of {}",
                            self.digest, self.seen, self.size
                        );
                        return self.fail(why);
                    }
                    if actual != self.digest.as_str() {
                        let why = format!(
                            "blob `{}`: digest mismatch, the bytes hash to {actual}",
                            self.digest
                        );
                        return self.fail(why);
                    }
                    self.done = true;
                    return Poll::Ready(self.held.take().map(Ok));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn chunks(parts: &[&'static [u8]]) -> ChunkStream {
        let v: Vec<std::io::Result<Bytes>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures::stream::iter(v))
    }

    #[tokio::test]
    async fn verified_body_passes_right_bytes_and_stops_wrong_ones() {
        let d = Digest::sha256_of(b"hello world");
        let (s, f) = verified_body(d.clone(), 11, chunks(&[b"hello", b" ", b"world"]), None);
        let got: Vec<_> = s.collect().await;
        assert!(got.iter().all(|c| c.is_ok()));
        assert_eq!(got.len(), 3);
        assert!(f.lock().unwrap().is_none());

        let (s, f) = verified_body(d.clone(), 11, chunks(&[b"hello", b" ", b"wOrld"]), None);
        let got: Vec<_> = s.collect().await;
        // The last chunk is never released: the upload cannot complete.
        assert_eq!(got.iter().filter(|c| c.is_ok()).count(), 2);
        assert!(got.last().unwrap().is_err());
        assert!(f.lock().unwrap().as_ref().unwrap().contains("mismatch"));

        let (s, _) = verified_body(d, 11, chunks(&[b"hello"]), None);
        let got: Vec<_> = s.collect().await;
        assert!(got.last().unwrap().is_err());
    }

    #[test]
    fn link_header() {
        let mut h = HeaderMap::new();
        h.insert(
            reqwest::header::LINK,
            HeaderValue::from_static("</v2/_catalog?last=b&n=2>; rel=\"next\""),
        );
        assert_eq!(next_link(&h).as_deref(), Some("/v2/_catalog?last=b&n=2"));
    }
}
