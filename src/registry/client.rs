//! One registry endpoint spoken to over the distribution HTTP API: the transport every
//! command uses, for source and destination registries alike.
//!
//! Every request — manifest and blob reads, HEADs, upload start and PUT, mounts, manifest
//! PUTs, tag lists, the catalog, token requests — goes through one path, [`RegistryClient::attempt`]
//! run by [`RegistryClient::retrying`]:
//!
//! - the rate budget of the registry is acquired (and its `RateLimit-Remaining` read back);
//! - the Authorization the request's [`Scope`] needs is added: Basic, or a Bearer token for
//!   that repository and action, fetched with the credentials the auth file has for that
//!   repository (most specific key wins, see `crate::auth`), cached until shortly before it
//!   expires, renewed once when the registry answers 401;
//! - the request is abandoned when it makes no progress for the policy's timeout (no headers
//!   while no body bytes are being sent; no body bytes while reading);
//! - connection errors, stalls, 5xx and 429 are retried with exponential backoff (the
//!   `backon` crate), honouring Retry-After up to the policy's cap.
//!
//! A streamed upload body cannot be replayed, so a failed blob PUT is retried by
//! [`RegistryClient::push_blob`], which opens a new upload session and asks its caller for the
//! body again — under the same policy and the same backoff.
//!
//! Why not oci-client's `Client`: prewarm needs Retry-After, Range resume of a partly read
//! blob, token renewal on a 401 mid-run, per-repository credentials, request budgets, streamed
//! uploads verified while they stream and per-request accounting, none of which oci-client
//! exposes; the protocol itself is small. What it would bring that prewarm needs is taken from
//! the same source: oci-client parses `WWW-Authenticate` with the `http-auth` crate, as this
//! module does. oci-client is used where it serves: the lab's seeder (`seed` in the lab) pushes
//! test content with it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::Retryable as _;
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT as ACCEPT_HEADER, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE,
    RANGE,
};
use reqwest::{Method, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::sync::OnceCell;

use super::budget::Budget;
use super::config::Endpoint;
use super::config::Policy;
use super::manifest::ACCEPT;
use super::presence::{self, Answer, NotRegistry, Presence};
use crate::auth::{AuthStore, Credentials};
use crate::reference::Digest;

mod delete;
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

/// What went wrong talking to a registry, in words that name the object.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// An answer that is not a registry's: an HTML page, a wrong digest, no digest and a
    /// wrong size, a tag list that is not JSON.
    #[error("{what}: `{url}` did not answer as a registry: {why} (HTTP {status}, Content-Type `{content_type}`, {body})")]
    NotRegistry {
        what: String,
        url: String,
        why: String,
        status: u16,
        content_type: String,
        /// `body starts "…"` or `no body` (a HEAD).
        body: String,
    },
    #[error("rate budget for registry `{host}` spent: {reason}")]
    BudgetSpent { host: String, reason: String },
    /// Where a blob's bytes go failed (a full disk, a reader that gave up): the OS error.
    #[error("{what}: cannot write: {source}")]
    Write {
        what: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A streamed upload body asked for a second time (it is consumed by the first send).
    #[error("{what}: an upload body is sent once; it cannot be sent again")]
    BodySpent { what: String },
    /// A media type that cannot be sent as a `Content-Type` header.
    #[error("{what}: media type `{media_type}` is not a valid header")]
    BadMediaType { what: String, media_type: String },
    /// The bytes to upload could not be read from where they come from (a file of an OCI
    /// layout, a bundle); the caller knows which file and says so.
    #[error("{what}: the bytes to upload cannot be read: {detail}")]
    Source { what: String, detail: String },
    /// No client for the registry a blob is read from (its endpoint, CA, the cache mapping).
    #[error("{what}: {detail}")]
    NoClient { what: String, detail: String },
}

impl RegistryError {
    /// The spent rate budget in `e`'s chain, if a spent budget is why it failed.
    pub fn budget_spent_in(e: &anyhow::Error) -> Option<&RegistryError> {
        e.chain()
            .find_map(|c| match c.downcast_ref::<RegistryError>() {
                Some(err @ RegistryError::BudgetSpent { .. }) => Some(err),
                _ => None,
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// What a request may do, for its token scope and the credentials it is sent with.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope<'a> {
    Pull(&'a str),
    /// Push into `repository`, plus pull on `from` (a mount's source repository).
    Push {
        repository: &'a str,
        from: Option<&'a str>,
    },
    Catalog,
    /// Delete in `repository` (`prewarm prune`).
    Delete(&'a str),
}

impl Scope<'_> {
    fn repository(&self) -> Option<&str> {
        match self {
            Scope::Pull(r) | Scope::Push { repository: r, .. } | Scope::Delete(r) => Some(r),
            Scope::Catalog => None,
        }
    }

    /// Bearer scopes, space-separated (each becomes one `scope` parameter).
    fn token_scope(&self) -> String {
        match self {
            Scope::Pull(r) => format!("repository:{r}:pull"),
            Scope::Push { repository, from } => {
                let mut s = format!("repository:{repository}:pull,push");
                if let Some(from) = from.filter(|f| f != repository) {
                    s.push_str(&format!(" repository:{from}:pull"));
                }
                s
            }
            Scope::Catalog => "registry:catalog:*".to_string(),
            Scope::Delete(r) => format!("repository:{r}:delete"),
        }
    }
}

/// A request body: re-sendable, or a stream that can be sent once.
pub(crate) enum Body {
    Empty,
    Bytes(Bytes),
    Stream(Mutex<Option<ChunkStream>>),
}

/// One request as the transport sends it.
pub(crate) struct Call<'a> {
    pub method: Method,
    /// Absolute URL.
    pub url: String,
    pub scope: Scope<'a>,
    pub headers: HeaderMap,
    pub body: Body,
}

/// Why one attempt failed, and whether another may succeed.
pub(crate) struct Failure {
    pub error: RegistryError,
    pub retry: bool,
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn fatal(error: RegistryError) -> Failure {
        Failure {
            error,
            retry: false,
            retry_after: None,
        }
    }
    pub fn transient(error: RegistryError) -> Failure {
        Failure {
            error,
            retry: true,
            retry_after: None,
        }
    }
}

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Failure {
        Failure::fatal(e)
    }
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
    auth: AuthStore,
    base: OnceCell<(String, Challenge)>,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    policy: Policy,
    stats: Arc<Stats>,
    /// Requests per second / per run and the registry's own remaining count (see `budget`).
    budget: Budget,
}

impl RegistryClient {
    pub fn new(
        host: &str,
        endpoint: Endpoint,
        auth: AuthStore,
        policy: Policy,
        stats: Arc<Stats>,
    ) -> anyhow::Result<RegistryClient> {
        // No reqwest timeouts: its read timeout runs from the start of a request, which would
        // cut a long upload that is progressing; stalls are detected here (see `transmit`).
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(policy.timeout))
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
            auth,
            base: OnceCell::new(),
            tokens: Mutex::new(HashMap::new()),
            policy,
            stats,
            budget: Budget::default(),
        })
    }

    /// This client with a request budget (the job's `rate_limits.<host>`).
    pub fn with_budget(mut self, budget: Budget) -> RegistryClient {
        self.budget = budget;
        self
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// The policy every request of this client runs under (`--retries`, `--timeout`, …).
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The auth file entry for `repository` (or the host alone): the logical host's keys
    /// first, then the address's (a lab or mirror may only be known by its address).
    fn credentials(&self, repository: Option<&str>) -> Option<&Credentials> {
        self.auth
            .get(&self.host, repository)
            .or_else(|| self.auth.get(&self.endpoint.address, repository))
    }

    fn unauthorized(&self, repository: Option<&str>, status: u16, detail: String) -> RegistryError {
        let which = match self.credentials(repository) {
            Some(c) => format!(" for user `{}`", c.username),
            None => " (no credentials found for it in the auth file)".to_string(),
        };
        RegistryError::Unauthorized {
            host: self.host.clone(),
            which,
            status,
            detail,
        }
    }

    fn unreachable(&self, detail: String) -> RegistryError {
        RegistryError::Unreachable {
            host: self.host.clone(),
            address: self.endpoint.address.clone(),
            detail,
        }
    }

    /// Run `attempt` under the policy: retried while it fails transiently, with exponential
    /// backoff or the registry's Retry-After, at most `attempts` times in all.
    pub(crate) async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        attempt: F,
    ) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let policy = self.policy;
        attempt
            .retry(policy.backoff())
            .sleep(tokio::time::sleep)
            .when(|f: &Failure| f.retry)
            .adjust(|f: &Failure, next: Option<Duration>| {
                next.map(|d| policy.wait(&self.host, f.retry_after, d))
            })
            .notify(|f: &Failure, wait: Duration| {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("{what}: {}; retrying in {wait:?}", f.error);
            })
            .await
            .map_err(|f| f.error)
    }

    /// Send one request: budget, stats, and the progress watchdog. `progress` is bumped by
    /// an upload body as the server takes its bytes. Connection errors, stalls, 5xx and 429
    /// are transient failures (with the Retry-After the registry sent).
    async fn transmit(
        &self,
        request: reqwest::RequestBuilder,
        progress: Option<Arc<Progress>>,
    ) -> Result<Response, Failure> {
        self.budget.acquire().await.map_err(|reason| {
            Failure::fatal(RegistryError::BudgetSpent {
                host: self.host.clone(),
                reason,
            })
        })?;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let progress = progress.unwrap_or_default();
        let send = request.send();
        tokio::pin!(send);
        let timeout = self.policy.timeout;
        let result = loop {
            let idle = progress.idle();
            if idle >= timeout {
                return Err(Failure::transient(self.unreachable(format!(
                    "no response within {}s (--timeout)",
                    timeout.as_secs()
                ))));
            }
            tokio::select! {
                r = &mut send => break r,
                _ = tokio::time::sleep(timeout - idle) => continue,
            }
        };
        let resp = match result {
            Ok(resp) => resp,
            Err(e) if e.is_builder() => {
                return Err(Failure::fatal(self.unreachable(root_cause(&e))))
            }
            Err(e) => return Err(Failure::transient(self.unreachable(root_cause(&e)))),
        };
        self.budget.observe(resp.headers());
        let status = resp.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let retry_after = retry_after(resp.headers());
            let url = resp.url().to_string();
            return Err(Failure {
                error: RegistryError::Status {
                    host: self.host.clone(),
                    what: url,
                    status: status.as_u16(),
                    detail: body_detail(resp).await,
                },
                retry: true,
                retry_after,
            });
        }
        Ok(resp)
    }

    /// `GET /v2/` once: learn the scheme and the auth challenge.
    async fn base(&self) -> Result<&(String, Challenge), RegistryError> {
        self.base
            .get_or_try_init(|| async {
                if self.endpoint.insecure {
                    // An `insecure` endpoint may speak plain HTTP: one try of HTTPS, then HTTP,
                    // rather than backing off on a handshake that cannot work.
                    let url = format!("https://{}/v2/", self.endpoint.address);
                    if let Ok(resp) = self.transmit(self.http.get(&url), None).await {
                        return self.read_challenge("https", resp).await;
                    }
                }
                let scheme = if self.endpoint.insecure {
                    "http"
                } else {
                    "https"
                };
                let url = format!("{scheme}://{}/v2/", self.endpoint.address);
                let resp = self
                    .retrying(&url, || self.transmit(self.http.get(&url), None))
                    .await?;
                self.read_challenge(scheme, resp).await
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
        let content_type = content_type(resp.headers());
        if status.is_success() && presence::is_page(&content_type) {
            return Err(self
                .not_registry(
                    "registry API check `/v2/`",
                    resp,
                    "a page, not the registry API".into(),
                )
                .await);
        }
        if status.is_success() {
            return Ok((base, Challenge::None));
        }
        if status == StatusCode::UNAUTHORIZED {
            let header = resp
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            return Ok((base, parse_challenge(header)));
        }
        Err(RegistryError::Status {
            host: self.host.clone(),
            what: "registry API check `/v2/`".into(),
            status: status.as_u16(),
            detail: body_detail(resp).await,
        })
    }

    /// A URL of this registry: `path` starting with `/`, or an absolute Location.
    pub(crate) async fn url(&self, path: &str) -> Result<String, RegistryError> {
        if path.starts_with("http://") || path.starts_with("https://") {
            return Ok(path.to_string());
        }
        let (base, _) = self.base().await?;
        Ok(format!("{base}{path}"))
    }

    /// One attempt of `call`, authorised for its scope; a bearer token the registry refuses
    /// (401) is renewed and the request sent again once, when its body can be re-sent.
    pub(crate) async fn attempt(&self, call: &Call<'_>) -> Result<Response, Failure> {
        let resp = self.attempt_with(call, false).await?;
        let replayable = !matches!(call.body, Body::Stream(_));
        if resp.status() == StatusCode::UNAUTHORIZED {
            if let (_, Challenge::Bearer { .. }) = self.base().await? {
                if replayable {
                    let resp = self.attempt_with(call, true).await?;
                    return self.refused(resp, call.scope).await;
                }
                // The stream is spent: forget the refused token, so the push that sends the
                // blob again (a transient failure) asks for a new one.
                self.tokens
                    .lock()
                    .expect("token lock")
                    .remove(&call.scope.token_scope());
                let error = self.refused(resp, call.scope).await.err();
                return Err(Failure::transient(error.expect("a 401 is refused").error));
            }
        }
        self.refused(resp, call.scope).await
    }

    async fn attempt_with(&self, call: &Call<'_>, renew: bool) -> Result<Response, Failure> {
        let auth = self.authorization(call.scope, renew).await?;
        let mut request = self
            .http
            .request(call.method.clone(), &call.url)
            .headers(call.headers.clone());
        if let Some(a) = auth {
            request = request.header(AUTHORIZATION, a);
        }
        let mut progress = None;
        match &call.body {
            Body::Empty => {}
            Body::Bytes(b) => request = request.body(b.clone()),
            Body::Stream(stream) => {
                let Some(stream) = stream.lock().expect("body lock").take() else {
                    return Err(Failure::fatal(RegistryError::BodySpent {
                        what: call.url.clone(),
                    }));
                };
                let p = Arc::new(Progress::default());
                let (seen, stats) = (p.clone(), self.stats.clone());
                let stream = stream.inspect(move |chunk| {
                    if let Ok(c) = chunk {
                        seen.touch();
                        stats.bytes.fetch_add(c.len() as u64, Ordering::Relaxed);
                    }
                });
                request = request.body(reqwest::Body::wrap_stream(stream));
                progress = Some(p);
            }
        }
        self.transmit(request, progress).await
    }

    /// `call` under the policy.
    pub(crate) async fn request(
        &self,
        what: &str,
        call: Call<'_>,
    ) -> Result<Response, RegistryError> {
        self.retrying(what, || self.attempt(&call)).await
    }

    /// A read of `path` (under `/v2/<repository>/`) with pull scope.
    async fn read<'a>(
        &self,
        method: Method,
        repository: &'a str,
        path: &str,
        headers: HeaderMap,
    ) -> Result<Call<'a>, RegistryError> {
        let url = self.url(&format!("/v2/{repository}/{path}")).await?;
        Ok(Call {
            method,
            url,
            scope: Scope::Pull(repository),
            headers,
            body: Body::Empty,
        })
    }

    /// 401/403 as [`RegistryError::Unauthorized`] naming the user; anything else passes.
    async fn refused(&self, resp: Response, scope: Scope<'_>) -> Result<Response, Failure> {
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let detail = body_detail(resp).await;
            return Err(Failure::fatal(self.unauthorized(
                scope.repository(),
                status.as_u16(),
                detail,
            )));
        }
        Ok(resp)
    }

    async fn authorization(
        &self,
        scope: Scope<'_>,
        force_new: bool,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        let (_, challenge) = self.base().await?;
        match challenge {
            Challenge::None => Ok(None),
            Challenge::Basic => Ok(self.credentials(scope.repository()).map(basic_header)),
            Challenge::Bearer { realm, service } => {
                let key = scope.token_scope();
                if !force_new {
                    if let Some((token, until)) = self.tokens.lock().expect("token lock").get(&key)
                    {
                        if Instant::now() < *until {
                            return Ok(Some(bearer_header(token)));
                        }
                    }
                }
                let token = self.fetch_token(realm, service.as_deref(), scope).await?;
                Ok(Some(bearer_header(&token)))
            }
        }
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Scope<'_>,
    ) -> Result<String, RegistryError> {
        let key = scope.token_scope();
        // Several scopes (a mount needs push on one repository and pull on another) are
        // separate `scope` parameters.
        let mut query: Vec<_> = key.split(' ').map(|s| ("scope", s.to_string())).collect();
        if let Some(s) = service {
            query.push(("service", s.to_string()));
        }
        let credentials = self.credentials(scope.repository());
        let resp = self
            .retrying("token request", || {
                let mut req = self.http.get(realm).query(&query);
                if let Some(c) = credentials {
                    req = req.header(AUTHORIZATION, basic_header(c));
                }
                self.transmit(req, None)
            })
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let detail = body_detail(resp).await;
            return Err(self.unauthorized(scope.repository(), status.as_u16(), detail));
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
            .insert(key, (token.clone(), until));
        Ok(token)
    }

    fn what_manifest(&self, repository: &str, key: &str) -> String {
        let sep = if key.contains(':') { "@" } else { ":" };
        format!("manifest `{}/{repository}{sep}{key}`", self.host)
    }

    fn manifest_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT_HEADER, HeaderValue::from_static(ACCEPT));
        headers
    }

    /// HEAD a manifest by tag (or digest): its digest, media type and size, or `None` where the
    /// registry sends no `Docker-Content-Digest` (then a GET is needed). Asked by digest, a
    /// different `Docker-Content-Digest` is an error; a page is never a manifest.
    pub async fn head_manifest(
        &self,
        repository: &str,
        key: &str,
    ) -> Result<Option<(Digest, String, u64)>, RegistryError> {
        let what = self.what_manifest(repository, key);
        let call = self
            .read(
                Method::HEAD,
                repository,
                &format!("manifests/{key}"),
                Self::manifest_headers(),
            )
            .await?;
        let resp = self.request(&what, call).await?;
        let resp = self.check(resp, &what).await?;
        let media_type = content_type(resp.headers());
        let digest = header_digest(resp.headers());
        if let (Some(d), Ok(asked)) = (&digest, key.parse::<Digest>()) {
            if *d != asked {
                let why = format!("Docker-Content-Digest is `{d}`, not the digest asked for");
                return Err(self.not_registry(&what, resp, why).await);
            }
        }
        let size = header_length(resp.headers()).unwrap_or(0);
        Ok(digest.map(|d| (d, media_type, size)))
    }

    /// Whether `repository` holds manifest `digest`, proven: `Docker-Content-Digest` equal to
    /// it, or (without that header) `Content-Length` equal to `expected_size`, or — where
    /// the size is not known — the manifest's bytes fetched and hashed.
    pub async fn manifest_presence(
        &self,
        repository: &str,
        digest: &Digest,
        expected_size: Option<u64>,
    ) -> Result<Presence, RegistryError> {
        let what = self.what_manifest(repository, digest.as_str());
        let call = self
            .read(
                Method::HEAD,
                repository,
                &format!("manifests/{digest}"),
                Self::manifest_headers(),
            )
            .await?;
        let resp = self.request(&what, call).await?;
        let undecided = resp.status().is_success()
            && expected_size.is_none()
            && header_digest(resp.headers()).is_none()
            && !presence::is_page(&content_type(resp.headers()));
        if !undecided {
            return self.presence(resp, &what, digest, expected_size).await;
        }
        match self.get_manifest(repository, digest.as_str()).await {
            Ok(_) => Ok(Presence::Present),
            Err(RegistryError::NotFound { .. }) => Ok(Presence::Absent),
            Err(e) => Err(e),
        }
    }

    /// Decide presence from a HEAD or GET answer (see [`presence::decide`]).
    async fn presence(
        &self,
        resp: Response,
        what: &str,
        digest: &Digest,
        expected_size: Option<u64>,
    ) -> Result<Presence, RegistryError> {
        let status = resp.status();
        if status != StatusCode::NOT_FOUND && !status.is_success() {
            return Err(self.check(resp, what).await.expect_err("not a success"));
        }
        let content_type = content_type(resp.headers());
        let header = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        let answer = Answer {
            status: status.as_u16(),
            content_type: &content_type,
            docker_content_digest: header.as_deref(),
            content_length: header_length(resp.headers()),
        };
        match presence::decide(&answer, digest, expected_size) {
            Ok(p) => Ok(p),
            Err(NotRegistry(why)) => Err(self.not_registry(what, resp, why).await),
        }
    }

    /// An answer that is not a registry's, naming the URL and what came back.
    async fn not_registry(&self, what: &str, resp: Response, why: String) -> RegistryError {
        let url = resp.url().to_string();
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = resp.bytes().await.unwrap_or_default();
        let body = if bytes.is_empty() {
            "no body".to_string()
        } else {
            format!("body starts {:?}", first_bytes(&bytes))
        };
        RegistryError::NotRegistry {
            what: what.to_string(),
            url,
            why,
            status,
            content_type,
            body,
        }
    }

    /// GET a manifest's exact bytes; when asked by digest, the bytes must hash to it. An
    /// answer that is a page or not JSON is an error naming the URL.
    pub async fn get_manifest(
        &self,
        repository: &str,
        key: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let what = self.what_manifest(repository, key);
        let call = self
            .read(
                Method::GET,
                repository,
                &format!("manifests/{key}"),
                Self::manifest_headers(),
            )
            .await?;
        let expected = key.parse::<Digest>().ok();
        self.retrying(&what, || async {
            let resp = self.attempt(&call).await?;
            let resp = self.check(resp, &what).await?;
            let media_type = content_type(resp.headers());
            let url = resp.url().to_string();
            let status = resp.status().as_u16();
            let body = self.read_body(resp, &what).await?;
            self.stats
                .bytes
                .fetch_add(body.len() as u64, Ordering::Relaxed);
            if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
                return Err(Failure::fatal(RegistryError::NotRegistry {
                    what: what.clone(),
                    url,
                    why: "the body is not a JSON manifest".into(),
                    status,
                    content_type: media_type,
                    body: format!("body starts {:?}", first_bytes(&body)),
                }));
            }
            let digest = Digest::sha256_of(&body);
            if let Some(expected) = &expected {
                if *expected != digest {
                    // A flipped byte in transit deserves another try.
                    return Err(Failure::transient(RegistryError::DigestMismatch {
                        what: what.clone(),
                        expected: expected.clone(),
                        actual: digest.to_string(),
                    }));
                }
            }
            Ok(FetchedManifest {
                bytes: body,
                media_type,
                digest,
            })
        })
        .await
    }

    /// A whole (small) body, each read bounded by the timeout.
    async fn read_body(&self, resp: Response, what: &str) -> Result<Bytes, Failure> {
        let mut stream = resp.bytes_stream();
        let mut out = Vec::new();
        loop {
            match tokio::time::timeout(self.policy.timeout, stream.next()).await {
                Ok(Some(Ok(chunk))) => out.extend_from_slice(&chunk),
                Ok(None) => return Ok(Bytes::from(out)),
                Ok(Some(Err(e))) => {
                    return Err(Failure::transient(
                        self.unreachable(format!("{what}: {}", root_cause(&e))),
                    ))
                }
                Err(_) => {
                    return Err(Failure::transient(self.unreachable(format!(
                        "{what}: no data for {}s (--timeout)",
                        self.policy.timeout.as_secs()
                    ))))
                }
            }
        }
    }

    /// HEAD a blob: present only when the answer proves it (see [`presence`]); give the size
    /// the caller expects where it knows it.
    pub async fn head_blob(
        &self,
        repository: &str,
        digest: &Digest,
        expected_size: Option<u64>,
    ) -> Result<Presence, RegistryError> {
        let what = format!("blob `{digest}` in `{}/{repository}`", self.host);
        let call = self
            .read(
                Method::HEAD,
                repository,
                &format!("blobs/{digest}"),
                HeaderMap::new(),
            )
            .await?;
        let resp = self.request(&what, call).await?;
        self.presence(resp, &what, digest, expected_size).await
    }

    /// Stream a blob into `sink`, verifying its digest. A body that breaks off or stalls is
    /// resumed from where it stopped with a Range request (or restarted where the server
    /// ignores Range); a body whose hash is wrong is fetched again, then reported.
    pub async fn fetch_blob(
        &self,
        repository: &str,
        digest: &Digest,
        sink: &mut dyn BlobSink,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64, RegistryError> {
        let what = format!("blob `{digest}` of `{}/{repository}`", self.host);
        let call = self
            .read(
                Method::GET,
                repository,
                &format!("blobs/{digest}"),
                HeaderMap::new(),
            )
            .await?;
        let state = futures::lock::Mutex::new((Sha256::new(), 0u64, sink));
        let io_error = |e: std::io::Error| RegistryError::Write {
            what: what.clone(),
            source: Arc::new(e),
        };
        self.retrying(&what, || async {
            let mut guard = state.lock().await;
            let (hasher, received, sink) = &mut *guard;
            let mut headers = call.headers.clone();
            if *received > 0 {
                headers.insert(
                    RANGE,
                    HeaderValue::from_str(&format!("bytes={received}-")).expect("range header"),
                );
            }
            let ranged = Call {
                method: Method::GET,
                url: call.url.clone(),
                scope: call.scope,
                headers,
                body: Body::Empty,
            };
            let resp = self.attempt(&ranged).await?;
            let resp = self.check(resp, &what).await?;
            if *received > 0 {
                if resp.status() == StatusCode::PARTIAL_CONTENT
                    && content_range_start(resp.headers()) == Some(*received)
                {
                    self.stats.resumed.fetch_add(1, Ordering::Relaxed);
                } else {
                    *hasher = Sha256::new();
                    *received = 0;
                    sink.restart().map_err(io_error)?;
                }
            }
            let mut stream = resp.bytes_stream();
            loop {
                let chunk = match tokio::time::timeout(self.policy.timeout, stream.next()).await {
                    Ok(Some(Ok(chunk))) => chunk,
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        return Err(Failure::transient(self.unreachable(format!(
                            "{what}: body broke off after {received} bytes: {}",
                            root_cause(&e)
                        ))))
                    }
                    Err(_) => {
                        return Err(Failure::transient(self.unreachable(format!(
                            "{what}: no data for {}s (--timeout) after {received} bytes",
                            self.policy.timeout.as_secs()
                        ))))
                    }
                };
                hasher.update(&chunk);
                sink.write(&chunk).map_err(io_error)?;
                *received += chunk.len() as u64;
                self.stats
                    .bytes
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                progress(chunk.len() as u64);
            }
            let actual = format!("sha256:{}", hex::encode(hasher.finalize_reset()));
            if digest.algorithm() != "sha256" || actual == digest.as_str() {
                return Ok(*received);
            }
            // A flipped byte in transit deserves another try; a corrupt stored blob will
            // hash wrong every time and is reported.
            *received = 0;
            sink.restart().map_err(io_error)?;
            Err(Failure::transient(RegistryError::DigestMismatch {
                what: what.clone(),
                expected: digest.clone(),
                actual,
            }))
        })
        .await
    }

    /// Turn an unsuccessful answer, or a success that is an HTML page, into an error naming
    /// `what`.
    async fn check(&self, resp: Response, what: &str) -> Result<Response, RegistryError> {
        let status = resp.status();
        if status.is_success() && presence::is_page(&content_type(resp.headers())) {
            let why = "a page, not a registry answer".to_string();
            return Err(self.not_registry(what, resp, why).await);
        }
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

/// When a request last made progress (an upload body handed bytes over).
#[derive(Debug)]
pub(crate) struct Progress {
    start: Instant,
    last_ms: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Progress {
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

fn header_digest(headers: &HeaderMap) -> Option<Digest> {
    headers
        .get("docker-content-digest")
        .and_then(|h| h.to_str().ok())
        .and_then(|s| s.trim().parse::<Digest>().ok())
}

/// The Content-Length header itself (reqwest reports 0 for every HEAD answer's body).
fn header_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|h| h.to_str().ok())
        .and_then(|s| s.trim().parse().ok())
}

/// Up to 60 bytes of a body, as text, for an error message.
fn first_bytes(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(60)];
    let text: String = String::from_utf8_lossy(cut)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if bytes.len() > 60 {
        format!("{text}…")
    } else {
        text
    }
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

/// The challenge of a `WWW-Authenticate` header, parsed by the `http-auth` crate (RFC 7235
/// quoting and escapes, several challenges in one header): Bearer with its realm preferred,
/// then Basic.
fn parse_challenge(header: &str) -> Challenge {
    let Ok(challenges) = http_auth::parse_challenges(header) else {
        return Challenge::None;
    };
    let param = |c: &http_auth::ChallengeRef<'_>, name: &str| {
        c.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_unescaped())
    };
    for c in &challenges {
        if c.scheme.eq_ignore_ascii_case("bearer") {
            if let Some(realm) = param(c, "realm") {
                return Challenge::Bearer {
                    realm,
                    service: param(c, "service"),
                };
            }
        }
    }
    if challenges
        .iter()
        .any(|c| c.scheme.eq_ignore_ascii_case("basic"))
    {
        return Challenge::Basic;
    }
    Challenge::None
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
    let mut cur: &(dyn std::error::Error + 'static) = e;
    let mut timed_out = false;
    loop {
        // A timeout is told by its type (reqwest's, or the OS's `TimedOut`), not its words.
        timed_out |= cur
            .downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout)
            || cur
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        match cur.source() {
            Some(next) => cur = next,
            None => break,
        }
    }
    if timed_out {
        return "timed out".to_string();
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="quay.io",scope="repository:a/b:pull,push""#,
            ),
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("quay.io".into()),
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Challenge::Basic
        );
        assert_eq!(parse_challenge(""), Challenge::None);
    }

    #[test]
    fn challenge_with_escaped_quotes_and_two_schemes() {
        // An escaped quote inside a quoted value ends neither the value nor the parameter list
        // (the hand parser before http-auth split here and lost `service`).
        assert_eq!(
            parse_challenge(
                r#"Basic realm="say \"hi\", then", Bearer realm="https://auth.example/t?a=\"b\"",service="reg \"one\"""#
            ),
            Challenge::Bearer {
                realm: r#"https://auth.example/t?a="b""#.into(),
                service: Some(r#"reg "one""#.into()),
            }
        );
    }

    #[test]
    fn retry_after_ranges_and_policy_waits() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            reqwest::header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 100-199/200"),
        );
        assert_eq!(content_range_start(&h), Some(100));
        let p = Policy {
            retry_after_cap: Duration::from_secs(10),
            ..Policy::default()
        };
        let backoff = Duration::from_millis(500);
        assert_eq!(p.wait("r", None, backoff), backoff);
        assert_eq!(
            p.wait("r", Some(Duration::from_secs(4)), backoff),
            Duration::from_secs(4)
        );
        assert_eq!(
            p.wait("r", Some(Duration::from_secs(3600)), backoff),
            Duration::from_secs(10)
        );
    }
}
