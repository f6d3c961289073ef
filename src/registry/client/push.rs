//! The write half of the registry transport: blob existence, cross-repository mounts,
//! streamed uploads, manifest PUTs byte for byte, and the listings an inventory needs.
//!
//! A child of `client` so it shares the connection, auth challenge and retry policy; bearer
//! registries are asked for `repository:<repo>:pull,push` tokens here. Upload bodies are
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

use super::{bearer_header, body_detail, Challenge, RegistryClient, RegistryError};
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
    /// The Authorization header for pushing into `repository`.
    async fn push_authorization(
        &self,
        repository: &str,
        force_new: bool,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        self.push_authorization_from(repository, None, force_new)
            .await
    }

    /// As [`Self::push_authorization`], plus pull on `from` (a mount's source repository).
    async fn push_authorization_from(
        &self,
        repository: &str,
        from: Option<&str>,
        force_new: bool,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        let (_, challenge) = self.base().await?;
        match challenge {
            Challenge::Bearer { realm, service } => {
                let mut scope = format!("repository:{repository}:pull,push");
                if let Some(from) = from.filter(|f| *f != repository) {
                    scope.push_str(&format!(" repository:{from}:pull"));
                }
                self.bearer(realm, service.as_deref(), &scope, force_new)
                    .await
            }
            other => self.authorization(other, repository, force_new).await,
        }
    }

    /// A URL of this registry: `path` starting with `/`, or an absolute Location.
    async fn url(&self, path: &str) -> Result<String, RegistryError> {
        if path.starts_with("http://") || path.starts_with("https://") {
            return Ok(path.to_string());
        }
        let (base, _) = self.base().await?;
        Ok(format!("{base}{path}"))
    }

    /// An authenticated request with push scope and a re-sendable body, retried like reads;
    /// a bearer token is renewed once on 401.
    async fn send_push(
        &self,
        method: Method,
        repository: &str,
        url: &str,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<Response, RegistryError> {
        self.send_push_from(method, repository, None, url, headers, body)
            .await
    }

    async fn send_push_from(
        &self,
        method: Method,
        repository: &str,
        from: Option<&str>,
        url: &str,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<Response, RegistryError> {
        let mut renewed = false;
        loop {
            let auth = self
                .push_authorization_from(repository, from, renewed)
                .await?;
            let resp = self
                .send_raw(self.retry.attempts, || {
                    let mut req = self
                        .http
                        .request(method.clone(), url)
                        .headers(headers.clone());
                    if let Some(a) = &auth {
                        req = req.header(reqwest::header::AUTHORIZATION, a.clone());
                    }
                    if let Some(b) = &body {
                        req = req.body(b.clone());
                    }
                    req
                })
                .await?;
            if resp.status() == StatusCode::UNAUTHORIZED && !renewed {
                if let (_, Challenge::Bearer { .. }) = self.base().await? {
                    renewed = true;
                    continue;
                }
            }
            return self.refused(resp).await;
        }
    }

    /// 401/403 as [`RegistryError::Unauthorized`] naming the user; anything else passes.
    async fn refused(&self, resp: Response) -> Result<Response, RegistryError> {
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            let which = match &self.credentials {
                Some(c) => format!(" for user `{}`", c.username),
                None => " (no credentials found for it in the auth file)".to_string(),
            };
            return Err(RegistryError::Unauthorized {
                host: self.host.clone(),
                which,
                status: resp.status().as_u16(),
                detail: body_detail(resp).await,
            });
        }
        Ok(resp)
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
        let url = self
            .url(&format!(
                "/v2/{repository}/blobs/uploads/?mount={digest}&from={from}"
            ))
            .await?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let resp = self
            .send_push_from(Method::POST, repository, Some(from), &url, headers, None)
            .await?;
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
        if offset == 0 {
            return self.blob_stream(repository, digest).await;
        }
        let what = format!("blob `{digest}` of `{}/{repository}`", self.host);
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::RANGE,
            HeaderValue::from_str(&format!("bytes={offset}-")).expect("range header"),
        );
        let resp = self
            .send(Method::GET, repository, &format!("blobs/{digest}"), headers)
            .await?;
        let resp = self.check(resp, &what).await?;
        if resp.status() != StatusCode::PARTIAL_CONTENT
            || super::content_range_start(resp.headers()) != Some(offset)
        {
            return Err(RegistryError::Status {
                host: self.host.clone(),
                what,
                status: resp.status().as_u16(),
                detail: format!("cannot resume from byte {offset}: the registry ignored the Range"),
            });
        }
        self.stats
            .resumed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Box::pin(futures::StreamExt::map(
            resp.bytes_stream(),
            |c| c.map_err(|e| std::io::Error::other(super::root_cause(&e))),
        )))
    }

    /// A blob's body as a stream, for piping into an upload (which verifies it with
    /// [`verified_body`]); not resumed: a broken copy is retried whole by the caller.
    pub async fn blob_stream(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<ChunkStream, RegistryError> {
        let what = format!("blob `{digest}` of `{}/{repository}`", self.host);
        let resp = self
            .send(
                Method::GET,
                repository,
                &format!("blobs/{digest}"),
                HeaderMap::new(),
            )
            .await?;
        let resp = self.check(resp, &what).await?;
        // Bytes are counted once, by the upload they feed.
        Ok(Box::pin(futures::StreamExt::map(
            resp.bytes_stream(),
            |c| c.map_err(|e| std::io::Error::other(super::root_cause(&e))),
        )))
    }

    /// `POST /v2/<repo>/blobs/uploads/`: the upload URL.
    pub async fn start_upload(&self, repository: &str) -> Result<String, RegistryError> {
        let what = format!("upload into `{}/{repository}`", self.host);
        let url = self
            .url(&format!("/v2/{repository}/blobs/uploads/"))
            .await?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let resp = self
            .send_push(Method::POST, repository, &url, headers, None)
            .await?;
        let resp = self.check(resp, &what).await?;
        self.location(&resp, &what)
    }

    /// `PUT <location>?digest=<digest>` with the whole blob as one streamed body (a
    /// monolithic upload: one request, no chunk bookkeeping). Not retried here: a body
    /// stream cannot be replayed, the caller pushes the blob again.
    pub async fn finish_upload(
        &self,
        repository: &str,
        location: &str,
        digest: &Digest,
        size: u64,
        body: ChunkStream,
    ) -> Result<u64, RegistryError> {
        let what = format!(
            "upload of blob `{digest}` into `{}/{repository}`",
            self.host
        );
        let url = self.url(location).await?;
        let sep = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{sep}digest={digest}");
        let auth = self.push_authorization(repository, false).await?;
        let counted = self.stats.clone();
        let body = futures::StreamExt::inspect(body, move |chunk| {
            if let Ok(c) = chunk {
                counted
                    .bytes
                    .fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let mut req = self
            .http
            .put(&url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(body));
        if let Some(a) = auth {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        self.stats
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let resp = req.send().await.map_err(|e| RegistryError::Status {
            host: self.host.clone(),
            what: what.clone(),
            status: 0,
            detail: super::root_cause(&e),
        })?;
        let resp = self.refused(resp).await?;
        self.check(resp, &what).await?;
        Ok(size)
    }

    /// Push one blob into `repository`: nothing when it is there already, a mount when
    /// `mount_from` holds it, else a streamed upload of `body()` (called only then).
    pub async fn push_blob<F>(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        mount_from: Option<&str>,
        body: impl FnOnce() -> F,
    ) -> Result<Pushed, RegistryError>
    where
        F: std::future::Future<Output = Result<ChunkStream, RegistryError>>,
    {
        if self.head_blob(repository, digest).await?.is_some() {
            return Ok(Pushed::Present);
        }
        let location = match mount_from.filter(|f| *f != repository) {
            Some(from) => match self.mount_blob(repository, digest, from).await? {
                Mount::Mounted => return Ok(Pushed::Mounted),
                Mount::Opened(location) => location,
            },
            None => self.start_upload(repository).await?,
        };
        let body = body().await?;
        self.finish_upload(repository, &location, digest, size, body)
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
        let url = self
            .url(&format!("/v2/{repository}/manifests/{key}"))
            .await?;
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(media_type).map_err(|_| RegistryError::Status {
                host: self.host.clone(),
                what: what.clone(),
                status: 0,
                detail: format!("media type `{media_type}` is not a valid header"),
            })?,
        );
        let resp = self
            .send_push(Method::PUT, repository, &url, headers, Some(bytes))
            .await?;
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
            let url = self.url(&path).await?;
            let resp = self
                .send_push(Method::GET, repository, &url, HeaderMap::new(), None)
                .await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(out);
            }
            let resp = self.check(resp, &what).await?;
            next = next_link(resp.headers());
            let tags: Tags = resp.json().await.map_err(|e| RegistryError::Status {
                host: self.host.clone(),
                what: what.clone(),
                status: 200,
                detail: super::root_cause(&e),
            })?;
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
            let url = self.url(&path).await?;
            let (_, challenge) = self.base().await?;
            let auth = match challenge {
                Challenge::Bearer { realm, service } => {
                    let t = self
                        .fetch_token(realm, service.as_deref(), "registry:catalog:*")
                        .await?;
                    Some(bearer_header(&t))
                }
                other => self.authorization(other, "", false).await?,
            };
            let resp = self
                .send_raw(self.retry.attempts, || {
                    let mut req = self.http.get(&url);
                    if let Some(a) = &auth {
                        req = req.header(reqwest::header::AUTHORIZATION, a.clone());
                    }
                    req
                })
                .await?;
            let resp = self.refused(resp).await?;
            let resp = self.check(resp, &what).await?;
            next = next_link(resp.headers());
            let c: Catalog = resp.json().await.map_err(|e| RegistryError::Status {
                host: self.host.clone(),
                what: what.clone(),
                status: 200,
                detail: super::root_cause(&e),
            })?;
            out.extend(c.repositories.unwrap_or_default());
        }
        Ok(out)
    }
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
