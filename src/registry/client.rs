//! One registry endpoint spoken to over the distribution HTTP API: the transport every
//! executor uses.
//!
//! It owns what is particular to a registry: the scheme (TLS verified unless the job says
//! `insecure`), the auth challenge (anonymous, Basic, or Bearer tokens fetched per repository
//! scope and renewed when they expire or the registry answers 401 mid-run), and retries
//! (connection errors, 5xx and 429 with Retry-After, exponential backoff). Blob reads are
//! streamed, sha256-verified and resumed with Range requests after a broken connection.
//!
//! Why not oci-client's `Client` directly: prewarm needs Retry-After, Range resume of a
//! partly read blob, token renewal on a 401 and per-request accounting, none of which it
//! exposes; the protocol itself is small.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::StreamExt;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT as ACCEPT_HEADER, AUTHORIZATION, CONTENT_TYPE, RANGE,
};
use reqwest::{Method, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::sync::OnceCell;

use super::manifest::ACCEPT;
use crate::auth::Credentials;
use crate::job::Endpoint;
use crate::reference::Digest;

mod push;
pub use push::{verified_body, BodyFailure, ChunkStream, Mount, Pushed};

/// Counters shared by every client of a run, for reports and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub resumed: AtomicU64,
    pub bytes: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A response that sends nothing for this long is abandoned and retried (a stalled link).
    pub read_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32) -> Duration {
        let d = self.base_delay.saturating_mul(1u32 << attempt.min(16));
        d.min(self.max_delay)
    }
}

/// What went wrong talking to a registry, in words that name the object.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach registry `{host}` at {address}: {detail}")]
    Unreachable {
        host: String,
        address: String,
        detail: String,
    },
    #[error("registry `{host}` refused the credentials{which} ({status}): {detail}")]
    Unauthorized {
        host: String,
        which: String,
        status: u16,
        detail: String,
    },
    #[error("{what} not found on `{host}`")]
    NotFound { host: String, what: String },
    #[error("{what}: digest mismatch: expected {expected}, received bytes hash to {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: String,
    },
    #[error("{what}: registry `{host}` answered {status}: {detail}")]
    Status {
        host: String,
        what: String,
        status: u16,
        detail: String,
    },
    #[error("rate budget for registry `{host}` spent: {reason}")]
    BudgetSpent { host: String, reason: String },
}

#[derive(Debug, Clone)]
enum Challenge {
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Where a streamed blob's bytes go; `restart` is called when a resume was not possible
/// and the body starts over from byte 0.
pub trait BlobSink: Send {
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()>;
    fn restart(&mut self) -> std::io::Result<()>;
}

/// Read and verify, keep nothing: what a warm does with the bytes.
pub struct Discard;

impl BlobSink for Discard {
    fn write(&mut self, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
    fn restart(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A manifest as served, with its digest computed from the bytes.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: bytes::Bytes,
    pub media_type: String,
    pub digest: Digest,
}

pub struct RegistryClient {
    /// The logical host (`quay.io`), as users and pull secrets name it.
    host: String,
    endpoint: Endpoint,
    http: reqwest::Client,
    credentials: Option<Credentials>,
    base: OnceCell<(String, Challenge)>,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    retry: RetryPolicy,
    stats: Arc<Stats>,
    /// Requests per second / per run and the registry's own remaining count (see `budget`).
    budget: super::budget::Budget,
}

impl RegistryClient {
    pub fn new(
        host: &str,
        endpoint: Endpoint,
        credentials: Option<Credentials>,
        retry: RetryPolicy,
        stats: Arc<Stats>,
    ) -> anyhow::Result<RegistryClient> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(retry.read_timeout)
            .pool_max_idle_per_host(64)
            .user_agent(concat!("prewarm/", env!("CARGO_PKG_VERSION")));
        if endpoint.insecure {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        if let Some(ca) = &endpoint.ca {
            let pem = std::fs::read(ca).map_err(|e| {
                anyhow::anyhow!(
                    "registry `{host}`: cannot read CA file {}: {e}",
                    ca.display()
                )
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                anyhow::anyhow!(
                    "registry `{host}`: CA file {} is not a PEM certificate: {e}",
                    ca.display()
                )
            })?;
            builder = builder.add_root_certificate(cert);
        }
        Ok(RegistryClient {
            host: host.to_string(),
            endpoint,
            http: builder.build()?,
            credentials,
            base: OnceCell::new(),
            tokens: Mutex::new(HashMap::new()),
            retry,
            stats,
            budget: super::budget::Budget::default(),
        })
    }

    /// This client with a request budget (the job's `rate_limits.<host>`).
    pub fn with_budget(mut self, budget: super::budget::Budget) -> RegistryClient {
        self.budget = budget;
        self
    }

    pub fn budget(&self) -> &super::budget::Budget {
        &self.budget
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn unreachable(&self, e: &reqwest::Error) -> RegistryError {
        RegistryError::Unreachable {
            host: self.host.clone(),
            address: self.endpoint.address.clone(),
            detail: root_cause(e),
        }
    }

    /// `GET /v2/` once: learn the scheme and the auth challenge.
    async fn base(&self) -> Result<&(String, Challenge), RegistryError> {
        self.base
            .get_or_try_init(|| async {
                let schemes: &[&str] = if self.endpoint.insecure {
                    &["https", "http"]
                } else {
                    &["https"]
                };
                let mut last = None;
                for (i, scheme) in schemes.iter().enumerate() {
                    let url = format!("{scheme}://{}/v2/", self.endpoint.address);
                    // Probing HTTPS on an `insecure` endpoint that may speak plain HTTP: one
                    // try, then fall back, rather than backing off on a handshake that cannot work.
                    let attempts = if i + 1 < schemes.len() {
                        1
                    } else {
                        self.retry.attempts
                    };
                    match self.send_raw(attempts, || self.http.get(&url)).await {
                        Ok(resp) => return self.read_challenge(scheme, resp).await,
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.expect("at least one scheme"))
            })
            .await
    }

    async fn read_challenge(
        &self,
        scheme: &str,
        resp: Response,
    ) -> Result<(String, Challenge), RegistryError> {
        let base = format!("{scheme}://{}", self.endpoint.address);
        let status = resp.status();
        if status.is_success() {
            return Ok((base, Challenge::None));
        }
        if status == StatusCode::UNAUTHORIZED {
            let header = resp
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_string();
            let challenge = parse_challenge(&header);
            return Ok((base, challenge));
        }
        Err(RegistryError::Status {
            host: self.host.clone(),
            what: "registry API check `/v2/`".into(),
            status: status.as_u16(),
            detail: body_detail(resp).await,
        })
    }

    /// Send with retries on connection errors, 5xx and 429. No auth here.
    async fn send_raw(
        &self,
        attempts: u32,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let mut attempt = 0;
        loop {
            self.budget
                .acquire()
                .await
                .map_err(|reason| RegistryError::BudgetSpent {
                    host: self.host.clone(),
                    reason,
                })?;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            // A server that sends no response headers within the read timeout is stalled.
            let result = match tokio::time::timeout(self.retry.read_timeout, build().send()).await {
                Ok(result) => result,
                Err(_) if attempt + 1 < attempts => {
                    tracing::debug!(host = %self.host, attempt, "no response headers within the read timeout; retrying");
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                    continue;
                }
                Err(_) => {
                    return Err(RegistryError::Unreachable {
                        host: self.host.clone(),
                        address: self.endpoint.address.clone(),
                        detail: format!(
                            "no response within {}s",
                            self.retry.read_timeout.as_secs()
                        ),
                    })
                }
            };
            if let Ok(resp) = &result {
                self.budget.observe(resp.headers());
            }
            let wait = match &result {
                Ok(resp) if is_retryable_status(resp.status()) => retry_after(resp.headers()),
                Ok(_) => return Ok(result.expect("matched Ok")),
                Err(e) if e.is_builder() => return Err(self.unreachable(e)),
                Err(_) => None,
            };
            if attempt + 1 >= attempts {
                return match result {
                    Ok(resp) => Ok(resp),
                    Err(e) => Err(self.unreachable(&e)),
                };
            }
            let delay = wait
                .unwrap_or_else(|| self.retry.delay(attempt))
                .min(self.retry.max_delay);
            tracing::debug!(host = %self.host, attempt, ?delay, "retrying");
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// Send an authenticated request for `repository`, renewing a bearer token once when
    /// the registry answers 401 (an expired or revoked token).
    async fn send(
        &self,
        method: Method,
        repository: &str,
        path: &str,
        headers: HeaderMap,
    ) -> Result<Response, RegistryError> {
        let (base, challenge) = self.base().await?;
        let url = format!("{base}/v2/{repository}/{path}");
        let mut renewed = false;
        loop {
            let auth = self.authorization(challenge, repository, renewed).await?;
            let resp = self
                .send_raw(self.retry.attempts, || {
                    let mut req = self
                        .http
                        .request(method.clone(), &url)
                        .headers(headers.clone());
                    if let Some(a) = &auth {
                        req = req.header(AUTHORIZATION, a.clone());
                    }
                    req
                })
                .await?;
            if resp.status() == StatusCode::UNAUTHORIZED
                && matches!(challenge, Challenge::Bearer { .. })
                && !renewed
            {
                renewed = true;
                continue;
            }
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
            return Ok(resp);
        }
    }

    async fn authorization(
        &self,
        challenge: &Challenge,
        repository: &str,
        force_new: bool,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        match challenge {
            Challenge::None => Ok(None),
            Challenge::Basic => Ok(self.credentials.as_ref().map(basic_header)),
            Challenge::Bearer { realm, service } => {
                let scope = format!("repository:{repository}:pull");
                self.bearer(realm, service.as_deref(), &scope, force_new)
                    .await
            }
        }
    }

    /// A bearer token for `scope`: the cached one while it lasts (unless `force_new`), else
    /// a fresh one from the realm.
    async fn bearer(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        force_new: bool,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        if !force_new {
            if let Some((token, until)) = self.tokens.lock().expect("token lock").get(scope) {
                if Instant::now() < *until {
                    return Ok(Some(bearer_header(token)));
                }
            }
        }
        let token = self.fetch_token(realm, service, scope).await?;
        Ok(Some(bearer_header(&token)))
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, RegistryError> {
        // Several scopes (a mount needs push on one repository and pull on another) are
        // separate `scope` parameters.
        let mut query: Vec<_> = scope.split(' ').map(|s| ("scope", s.to_string())).collect();
        if let Some(s) = service {
            query.push(("service", s.to_string()));
        }
        let resp = self
            .send_raw(self.retry.attempts, || {
                let mut req = self.http.get(realm).query(&query);
                if let Some(c) = &self.credentials {
                    req = req.header(AUTHORIZATION, basic_header(c));
                }
                req
            })
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let which = match &self.credentials {
                Some(c) => format!(" for user `{}`", c.username),
                None => " (no credentials found for it in the auth file)".to_string(),
            };
            return Err(RegistryError::Unauthorized {
                host: self.host.clone(),
                which,
                status: status.as_u16(),
                detail: body_detail(resp).await,
            });
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let body: TokenResponse = resp.json().await.map_err(|e| RegistryError::Status {
            host: self.host.clone(),
            what: "token response".into(),
            status: status.as_u16(),
            detail: root_cause(&e),
        })?;
        let token = body.token.or(body.access_token).unwrap_or_default();
        // Renew a little early so a token does not expire between check and use.
        let lifetime = Duration::from_secs(body.expires_in.unwrap_or(60).max(1));
        let until = Instant::now() + lifetime - (lifetime / 5).min(Duration::from_secs(10));
        self.tokens
            .lock()
            .expect("token lock")
            .insert(scope.to_string(), (token.clone(), until));
        Ok(token)
    }

    fn what_manifest(&self, repository: &str, key: &str) -> String {
        let sep = if key.contains(':') { "@" } else { ":" };
        format!("manifest `{}/{repository}{sep}{key}`", self.host)
    }

    /// HEAD a manifest: its digest, media type and size, or `None` where the registry sends
    /// no `Docker-Content-Digest` (then a GET is needed).
    pub async fn head_manifest(
        &self,
        repository: &str,
        key: &str,
    ) -> Result<Option<(Digest, String, u64)>, RegistryError> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT_HEADER, HeaderValue::from_static(ACCEPT));
        let resp = self
            .send(
                Method::HEAD,
                repository,
                &format!("manifests/{key}"),
                headers,
            )
            .await?;
        let what = self.what_manifest(repository, key);
        let resp = self.check(resp, &what).await?;
        let digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|h| h.to_str().ok())
            .and_then(|s| s.parse::<Digest>().ok());
        let media_type = content_type(resp.headers());
        let size = header_length(&resp).unwrap_or(0);
        Ok(digest.map(|d| (d, media_type, size)))
    }

    /// GET a manifest's exact bytes; when asked by digest, the bytes must hash to it.
    pub async fn get_manifest(
        &self,
        repository: &str,
        key: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT_HEADER, HeaderValue::from_static(ACCEPT));
        let what = self.what_manifest(repository, key);
        let mut attempt = 0;
        loop {
            let resp = self
                .send(
                    Method::GET,
                    repository,
                    &format!("manifests/{key}"),
                    headers.clone(),
                )
                .await?;
            let resp = self.check(resp, &what).await?;
            let media_type = content_type(resp.headers());
            let body = match resp.bytes().await {
                Ok(b) => b,
                Err(e) if attempt + 1 < self.retry.attempts => {
                    tracing::debug!("{what}: body broke off ({}), retrying", root_cause(&e));
                    self.backoff(attempt).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(self.unreachable(&e)),
            };
            self.stats
                .bytes
                .fetch_add(body.len() as u64, Ordering::Relaxed);
            let digest = Digest::sha256_of(&body);
            if let Ok(expected) = key.parse::<Digest>() {
                if expected != digest {
                    if attempt + 1 < self.retry.attempts {
                        self.backoff(attempt).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(RegistryError::DigestMismatch {
                        what,
                        expected,
                        actual: digest.to_string(),
                    });
                }
            }
            return Ok(FetchedManifest {
                bytes: body,
                media_type,
                digest,
            });
        }
    }

    /// HEAD a blob: its size (the `Content-Length` header) if the registry holds it.
    pub async fn head_blob(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let resp = self
            .send(
                Method::HEAD,
                repository,
                &format!("blobs/{digest}"),
                HeaderMap::new(),
            )
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            // The header itself: over HTTP/1.1 a HEAD response's body is empty, and reqwest's
            // `content_length()` (the body's size) says 0.
            s if s.is_success() => Ok(Some(header_length(&resp).unwrap_or(0))),
            _ => {
                let what = format!("blob `{digest}` in `{}/{repository}`", self.host);
                self.check(resp, &what).await.map(|_| None)
            }
        }
    }

    /// Stream a blob into `sink`, verifying its digest. A body that breaks off is resumed
    /// from where it stopped with a Range request (or restarted where the server ignores
    /// Range); a body whose hash is wrong is fetched again, then reported.
    pub async fn fetch_blob(
        &self,
        repository: &str,
        digest: &Digest,
        sink: &mut dyn BlobSink,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64, RegistryError> {
        let what = format!("blob `{digest}` of `{}/{repository}`", self.host);
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        let mut attempt = 0;
        let io_error = |e: std::io::Error| RegistryError::Status {
            host: self.host.clone(),
            what: what.clone(),
            status: 0,
            detail: format!("cannot write: {e}"),
        };
        loop {
            let mut headers = HeaderMap::new();
            if received > 0 {
                headers.insert(
                    RANGE,
                    HeaderValue::from_str(&format!("bytes={received}-")).expect("range header"),
                );
            }
            let resp = self
                .send(Method::GET, repository, &format!("blobs/{digest}"), headers)
                .await?;
            let resp = self.check(resp, &what).await?;
            let resumed = resp.status() == StatusCode::PARTIAL_CONTENT
                && content_range_start(resp.headers()) == Some(received);
            if received > 0 {
                if resumed {
                    self.stats.resumed.fetch_add(1, Ordering::Relaxed);
                } else {
                    hasher = Sha256::new();
                    received = 0;
                    sink.restart().map_err(io_error)?;
                }
            }
            let mut stream = resp.bytes_stream();
            let mut broke = None;
            loop {
                // An idle body is a stalled link: give up on this response and resume.
                let chunk = match tokio::time::timeout(self.retry.read_timeout, stream.next()).await
                {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => break,
                    Err(_) => {
                        broke = Some(format!(
                            "no data for {}s",
                            self.retry.read_timeout.as_secs()
                        ));
                        break;
                    }
                };
                match chunk {
                    Ok(chunk) => {
                        hasher.update(&chunk);
                        sink.write(&chunk).map_err(io_error)?;
                        received += chunk.len() as u64;
                        self.stats
                            .bytes
                            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        progress(chunk.len() as u64);
                    }
                    Err(e) => {
                        broke = Some(root_cause(&e));
                        break;
                    }
                }
            }
            if let Some(detail) = broke {
                if attempt + 1 >= self.retry.attempts {
                    return Err(RegistryError::Unreachable {
                        host: self.host.clone(),
                        address: self.endpoint.address.clone(),
                        detail: format!("{what}: {detail}"),
                    });
                }
                tracing::debug!(
                    "{what}: body broke off after {received} bytes ({detail}); resuming"
                );
                self.backoff(attempt).await;
                attempt += 1;
                continue;
            }
            let actual = format!("sha256:{}", hex::encode(hasher.finalize_reset()));
            if digest.algorithm() != "sha256" || actual == digest.as_str() {
                return Ok(received);
            }
            // A flipped byte in transit deserves another try; a corrupt stored blob will
            // hash wrong every time and is reported.
            if attempt + 1 >= self.retry.attempts {
                return Err(RegistryError::DigestMismatch {
                    what,
                    expected: digest.clone(),
                    actual,
                });
            }
            tracing::debug!("{what}: digest mismatch ({actual}); fetching again");
            received = 0;
            sink.restart().map_err(io_error)?;
            self.backoff(attempt).await;
            attempt += 1;
        }
    }

    async fn backoff(&self, attempt: u32) {
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.retry.delay(attempt)).await;
    }

    /// Turn an unsuccessful answer into an error naming `what`.
    async fn check(&self, resp: Response, what: &str) -> Result<Response, RegistryError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                host: self.host.clone(),
                what: what.to_string(),
            });
        }
        Err(RegistryError::Status {
            host: self.host.clone(),
            what: what.to_string(),
            status: status.as_u16(),
            detail: body_detail(resp).await,
        })
    }
}

fn is_retryable_status(s: StatusCode) -> bool {
    s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error()
}

/// Retry-After as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

fn content_range_start(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(reqwest::header::CONTENT_RANGE)?.to_str().ok()?;
    let range = v.strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or(s).trim().to_string())
        .unwrap_or_default()
}

fn basic_header(c: &Credentials) -> HeaderValue {
    let raw =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
    let mut v = HeaderValue::from_str(&format!("Basic {raw}")).expect("base64 is a valid header");
    v.set_sensitive(true);
    v
}

fn bearer_header(token: &str) -> HeaderValue {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"));
    v.set_sensitive(true);
    v
}

/// Parse `Bearer realm="…",service="…"` or `Basic realm="…"`.
fn parse_challenge(header: &str) -> Challenge {
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Challenge::Basic;
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Challenge::None;
    }
    let mut realm = None;
    let mut service = None;
    for part in split_params(rest) {
        if let Some((k, v)) = part.split_once('=') {
            let v = v.trim().trim_matches('"').to_string();
            match k.trim() {
                "realm" => realm = Some(v),
                "service" => service = Some(v),
                _ => {}
            }
        }
    }
    match realm {
        Some(realm) => Challenge::Bearer { realm, service },
        None => Challenge::None,
    }
}

/// Split auth-params on commas outside quotes (scopes contain commas).
fn split_params(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

/// The registry's own error message, on one line, short.
async fn body_detail(resp: Response) -> String {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(e) = serde_json::from_str::<Errors>(&text) {
        let parts: Vec<String> = e
            .errors
            .iter()
            .map(|i| {
                format!(
                    "{} {}",
                    i.code.clone().unwrap_or_default(),
                    i.message.clone().unwrap_or_default()
                )
                .trim()
                .to_string()
            })
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        line.chars().take(200).collect()
    }
}

/// The innermost cause of a reqwest error ("connection refused"), which is what a user can act on.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let text = cur.to_string();
    if e.to_string().contains("operation timed out") || text.contains("timed out") {
        return "timed out".to_string();
    }
    text
}

/// The `Content-Length` header of a response (for HEAD, where the body is empty).
fn header_length(resp: &Response) -> Option<u64> {
    resp.headers()
        .get(reqwest::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        match parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="quay.io",scope="repository:a/b:pull,push""#,
        ) {
            Challenge::Bearer { realm, service } => {
                assert_eq!(realm, "https://auth.example/token");
                assert_eq!(service.as_deref(), Some("quay.io"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Challenge::Basic
        ));
    }

    #[test]
    fn retry_after_and_ranges() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            reqwest::header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 100-199/200"),
        );
        assert_eq!(content_range_start(&h), Some(100));
        let p = RetryPolicy::default();
        assert!(p.delay(1) > p.delay(0));
        assert_eq!(p.delay(30), p.max_delay);
    }
}
