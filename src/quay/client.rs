//! A small client for Quay's REST API (`/api/v1`): orgs, proxy-cache configs, quota, robots
//! and teams — the calls the seed procedure makes, with every HTTP error turned into a
//! [`QuayError`] carrying Quay's own message.
//!
//! The OAuth token is held in [`Token`], which never prints itself; request bodies (which may
//! hold upstream passwords) are never put in errors or logs.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Credentials;
use crate::reference::Digest;

/// How long an OAuth token from `POST /api/v1/user/initialize` lasts (seen on a real Quay).
pub const INITIALIZE_TOKEN_LIFETIME: Duration = Duration::from_secs(9000);

/// A Quay OAuth token; `Debug` and `Display` redact it.
#[derive(Clone)]
pub struct Token {
    secret: String,
    /// How old the token's file is, when it came from one: Quay's 401 does not say a token
    /// expired, the file's age can.
    age: Option<Duration>,
}

impl Token {
    pub fn new(s: &str) -> Result<Token> {
        let t = s.trim();
        if t.is_empty() || t.contains(char::is_whitespace) {
            anyhow::bail!("the Quay token is empty or contains whitespace");
        }
        Ok(Token {
            secret: t.to_string(),
            age: None,
        })
    }

    /// The token was read from a file last written `age` ago.
    pub fn with_age(mut self, age: Option<Duration>) -> Token {
        self.age = age;
        self
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// An HTTP error from Quay: the call, the status and Quay's own message, and what that
/// answer means where Quay's words alone mislead (`hint`).
#[derive(Debug, thiserror::Error)]
#[error("{method} {path}: HTTP {status}: {message}{}", hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
pub struct QuayError {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub message: String,
    pub hint: Option<String>,
}

impl QuayError {
    /// A POST of an org name Quay still holds for a deleted org.
    pub fn name_reserved(&self) -> bool {
        self.status == 400 && self.message == "Username is not available"
    }

    /// Quay's 400 for a team member added twice.
    pub fn already_member(&self) -> bool {
        self.status == 400 && self.message.contains("is already a member of team")
    }
}

/// `2h 31m`, `45m`: a token file's age.
fn hours_minutes(d: Duration) -> String {
    let m = d.as_secs() / 60;
    if m >= 60 {
        format!("{}h {}m", m / 60, m % 60)
    } else {
        format!("{m}m")
    }
}

/// What Quay's answer means, for the answers seen to mislead on a real Quay.
fn hint(status: u16, message: &str, token: &Token, checked: bool) -> Option<String> {
    let lifetime = INITIALIZE_TOKEN_LIFETIME.as_secs();
    match status {
        401 if checked => Some(format!(
            "the Quay token has expired during this run: Quay accepted it at the start; a token from /api/v1/user/initialize lasts {lifetime} s; give a new one and run again"
        )),
        401 => Some(match token.age {
            Some(age) if age >= INITIALIZE_TOKEN_LIFETIME => format!(
                "the Quay token has expired: its file was written {} ago and a token from /api/v1/user/initialize lasts {lifetime} s; give a new one",
                hours_minutes(age)
            ),
            _ => format!(
                "Quay refused the token: it is wrong or has expired (a token from /api/v1/user/initialize lasts {lifetime} s)"
            ),
        }),
        400 if message == "Username is not available" => Some(
            "Quay's answer for the name of a recently deleted org: the name stays reserved until Quay's namespace garbage collection purges the old org (about a minute with its worker running, never without it); run again then".into(),
        ),
        400 if message.starts_with("Cannot resolve hostname") => Some(
            "Quay's own answer: Quay resolves the upstream's host name when the proxy-cache config is created, and Quay's host cannot; give it DNS for that name, or point the upstream at an endpoint Quay can reach with the job's `registries:`".into(),
        ),
        400 if message == "Error while creating Proxy cache configuration" => Some(
            "Quay's whole answer; a real Quay gives it for an upstream outside its SSRF_ALLOWED_HOSTS".into(),
        ),
        400 if message == "The provided registry URL is not allowed" => Some(
            "the upstream is outside Quay's SSRF_ALLOWED_HOSTS".into(),
        ),
        _ => None,
    }
}

/// Quay's message from an error body: `error_message`, else `detail`, else `error` (the CSRF
/// answer), else a JSON string body, else the text itself (cut short).
fn quay_message(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(o)) => ["error_message", "detail", "error", "message", "title"]
            .iter()
            .find_map(|k| o.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
            .map(str::to_string)
            .unwrap_or_else(|| body.chars().take(200).collect()),
        Ok(Value::String(s)) => s,
        _ if body.trim().is_empty() => "(empty body)".to_string(),
        _ => body.trim().chars().take(200).collect(),
    }
}

/// A proxy-cache config as Quay returns it (credentials are never returned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyCache {
    pub upstream_registry: String,
    pub expiration_s: u64,
    pub insecure: bool,
}

/// A proxy-cache config to POST (or validate), possibly with upstream credentials.
#[derive(Clone)]
pub struct ProxyCacheSpec {
    pub upstream_registry: String,
    pub expiration_s: u64,
    pub insecure: bool,
    pub credentials: Option<Credentials>,
}

impl ProxyCacheSpec {
    fn body(&self, org: &str) -> Value {
        let mut v = json!({
            "org_name": org,
            "upstream_registry": self.upstream_registry,
            "expiration_s": self.expiration_s,
            "insecure": self.insecure,
        });
        if let Some(c) = &self.credentials {
            v["upstream_registry_username"] = json!(c.username);
            v["upstream_registry_password"] = json!(c.password);
        }
        v
    }

    pub fn settings(&self) -> ProxyCache {
        ProxyCache {
            upstream_registry: self.upstream_registry.clone(),
            expiration_s: self.expiration_s,
            insecure: self.insecure,
        }
    }
}

/// What a team prewarm makes lets its robot do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeamRole {
    /// Pulls through a cache org.
    Member,
    /// Pushes into a regular org, creating repositories.
    Creator,
}

impl TeamRole {
    pub fn name(self) -> &'static str {
        match self {
            TeamRole::Member => "member",
            TeamRole::Creator => "creator",
        }
    }

    fn description(self) -> &'static str {
        match self {
            TeamRole::Member => "prewarm: pulls through the cache",
            TeamRole::Creator => "prewarm: pushes what warm builds",
        }
    }
}

/// A robot account with its token (a secret: only ever written to the pull-secret file).
#[derive(Clone, Deserialize)]
pub struct Robot {
    pub name: String,
    pub token: String,
}

impl fmt::Debug for Robot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Robot({}, <redacted>)", self.name)
    }
}

/// An org's storage quota and its limits, as `GET …/quota` lists them.
#[derive(Debug, Clone, Deserialize)]
pub struct Quota {
    pub id: u64,
    pub limit_bytes: u64,
    #[serde(default)]
    pub limits: Vec<QuotaLimit>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct QuotaLimit {
    pub id: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub limit_percent: u64,
}

/// How to reach a Quay: `host[:port]`, TLS (verified by default).
#[derive(Debug, Clone)]
pub struct Connection {
    pub host: String,
    pub ca: Option<std::path::PathBuf>,
    /// No TLS verification, and plain HTTP when HTTPS does not answer.
    pub insecure: bool,
}

pub struct QuayClient {
    http: reqwest::Client,
    base: String,
    token: Token,
    /// Quay accepted the token once: a later 401 means it expired during the run.
    checked: bool,
}

/// What `validateproxycache` said of a config (202).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validation {
    /// Quay logged in to the upstream with the credentials given.
    Valid,
    /// Quay could not log in and fell back to anonymous access: with credentials given, they
    /// were refused (a wrong password on a Basic-auth upstream answers so).
    Anonymous,
    /// Any other 2xx answer, as Quay said it.
    Other(String),
}

impl fmt::Display for Validation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Validation::Valid => f.write_str("Valid"),
            Validation::Anonymous => f.write_str("Anonymous"),
            Validation::Other(s) => f.write_str(s),
        }
    }
}

impl QuayClient {
    /// Connect and check the token with `GET /api/v1/user/`; returns the client and the
    /// token's user name.
    pub async fn connect(conn: &Connection, token: Token) -> Result<(QuayClient, String)> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("prewarm/", env!("CARGO_PKG_VERSION")));
        if conn.insecure {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        if let Some(ca) = &conn.ca {
            builder = builder.add_root_certificate(read_ca(ca)?);
        }
        let http = builder.build()?;
        let mut client = QuayClient {
            http,
            base: format!("https://{}", conn.host),
            token,
            checked: false,
        };
        let user = match client.user().await {
            Ok(u) => u,
            Err(e) if conn.insecure && e.downcast_ref::<QuayError>().is_none() => {
                // An insecure Quay may speak plain HTTP only: one HTTPS attempt, then HTTP.
                client.base = format!("http://{}", conn.host);
                client.user().await?
            }
            Err(e) => return Err(e),
        };
        client.checked = true;
        Ok((client, user))
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token.secret);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{method} {url}: {}", without_url(&e)))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .with_context(|| format!("{method} {url}: reading the answer"))?;
        Ok((status, text))
    }

    /// A call that must answer one of `ok`; anything else is a [`QuayError`].
    async fn expect(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        ok: &[u16],
    ) -> Result<(u16, String)> {
        let (status, text) = self.call(method.clone(), path, body).await?;
        if ok.contains(&status) {
            Ok((status, text))
        } else {
            let message = quay_message(&text);
            Err(QuayError {
                method: method.to_string(),
                path: path.to_string(),
                status,
                hint: hint(status, &message, &self.token, self.checked),
                message,
            }
            .into())
        }
    }

    pub async fn user(&self) -> Result<String> {
        let (_, text) = self
            .expect(reqwest::Method::GET, "/api/v1/user/", None, &[200])
            .await?;
        let v: Value = serde_json::from_str(&text).context("GET /api/v1/user/: not JSON")?;
        Ok(v["username"].as_str().unwrap_or("").to_string())
    }

    pub async fn org_exists(&self, org: &str) -> Result<bool> {
        let (s, _) = self
            .expect(
                reqwest::Method::GET,
                &format!("/api/v1/organization/{org}"),
                None,
                &[200, 404],
            )
            .await?;
        Ok(s == 200)
    }

    pub async fn create_org(&self, org: &str) -> Result<()> {
        self.expect(
            reqwest::Method::POST,
            "/api/v1/organization/",
            Some(&json!({ "name": org })),
            &[201],
        )
        .await?;
        Ok(())
    }

    /// `true` when deleted, `false` when there was no such org.
    pub async fn delete_org(&self, org: &str) -> Result<bool> {
        let (s, _) = self
            .expect(
                reqwest::Method::DELETE,
                &format!("/api/v1/organization/{org}"),
                None,
                &[204, 404],
            )
            .await?;
        Ok(s == 204)
    }

    /// The org's proxy-cache config; `None` when unset (Quay answers every field `""`).
    pub async fn proxycache(&self, org: &str) -> Result<Option<ProxyCache>> {
        let path = format!("/api/v1/organization/{org}/proxycache");
        let (_, text) = self
            .expect(reqwest::Method::GET, &path, None, &[200])
            .await?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("GET {path}: not JSON"))?;
        let upstream = v["upstream_registry"].as_str().unwrap_or("");
        if upstream.is_empty() {
            return Ok(None);
        }
        Ok(Some(ProxyCache {
            upstream_registry: upstream.to_string(),
            expiration_s: v["expiration_s"].as_u64().unwrap_or(0),
            insecure: v["insecure"].as_bool().unwrap_or(false),
        }))
    }

    pub async fn create_proxycache(&self, org: &str, spec: &ProxyCacheSpec) -> Result<()> {
        self.expect(
            reqwest::Method::POST,
            &format!("/api/v1/organization/{org}/proxycache"),
            Some(&spec.body(org)),
            &[201],
        )
        .await?;
        Ok(())
    }

    /// `true` when deleted, `false` when there was none. Quay answers 201 "Deleted".
    pub async fn delete_proxycache(&self, org: &str) -> Result<bool> {
        let (s, _) = self
            .expect(
                reqwest::Method::DELETE,
                &format!("/api/v1/organization/{org}/proxycache"),
                None,
                &[201, 204, 404],
            )
            .await?;
        Ok(s != 404)
    }

    /// Ask Quay to log in to the upstream with `spec`: `Valid` or `Anonymous`, else the error.
    /// Quay refuses (400) on an org that already has a config.
    pub async fn validate_proxycache(
        &self,
        org: &str,
        spec: &ProxyCacheSpec,
    ) -> Result<Validation> {
        let (_, text) = self
            .expect(
                reqwest::Method::POST,
                &format!("/api/v1/organization/{org}/validateproxycache"),
                Some(&spec.body(org)),
                &[200, 202],
            )
            .await?;
        Ok(match quay_message(&text).as_str() {
            "Valid" => Validation::Valid,
            "Anonymous" => Validation::Anonymous,
            other => Validation::Other(other.to_string()),
        })
    }

    pub async fn quotas(&self, org: &str) -> Result<Vec<Quota>> {
        let path = format!("/api/v1/organization/{org}/quota");
        let (_, text) = self
            .expect(reqwest::Method::GET, &path, None, &[200])
            .await?;
        serde_json::from_str(&text).with_context(|| format!("GET {path}: not a quota list"))
    }

    pub async fn create_quota(&self, org: &str, limit_bytes: u64) -> Result<()> {
        self.expect(
            reqwest::Method::POST,
            &format!("/api/v1/organization/{org}/quota"),
            Some(&json!({ "limit_bytes": limit_bytes })),
            &[200, 201],
        )
        .await?;
        Ok(())
    }

    pub async fn update_quota(&self, org: &str, id: u64, limit_bytes: u64) -> Result<()> {
        self.expect(
            reqwest::Method::PUT,
            &format!("/api/v1/organization/{org}/quota/{id}"),
            Some(&json!({ "limit_bytes": limit_bytes })),
            &[200],
        )
        .await?;
        Ok(())
    }

    pub async fn create_quota_limit(
        &self,
        org: &str,
        id: u64,
        kind: &str,
        percent: u64,
    ) -> Result<()> {
        self.expect(
            reqwest::Method::POST,
            &format!("/api/v1/organization/{org}/quota/{id}/limit"),
            Some(&json!({ "type": kind, "threshold_percent": percent })),
            &[200, 201],
        )
        .await?;
        Ok(())
    }

    pub async fn update_quota_limit(
        &self,
        org: &str,
        id: u64,
        limit: u64,
        kind: &str,
        percent: u64,
    ) -> Result<()> {
        self.expect(
            reqwest::Method::PUT,
            &format!("/api/v1/organization/{org}/quota/{id}/limit/{limit}"),
            Some(&json!({ "type": kind, "threshold_percent": percent })),
            &[200],
        )
        .await?;
        Ok(())
    }

    /// Robot `org+short` with its token read back (`GET …/robots/{short}`), or created when
    /// Quay has none (`true`: created now).
    pub async fn robot(&self, org: &str, short: &str) -> Result<(Robot, bool)> {
        let path = format!("/api/v1/organization/{org}/robots/{short}");
        let (s, text) = self
            .expect(reqwest::Method::GET, &path, None, &[200, 400, 404])
            .await?;
        let (text, created) = if s == 200 {
            (text, false)
        } else {
            let (_, text) = self
                .expect(
                    reqwest::Method::PUT,
                    &path,
                    Some(&json!({ "description": "prewarm: pulls through the cache" })),
                    &[200, 201],
                )
                .await?;
            (text, true)
        };
        let robot: Robot =
            serde_json::from_str(&text).with_context(|| format!("{path}: not a robot"))?;
        if robot.token.is_empty() {
            anyhow::bail!("{path}: Quay returned the robot without its token");
        }
        Ok((robot, created))
    }

    /// The members of team `team`, or `None` when the org has no such team.
    pub async fn team_members(&self, org: &str, team: &str) -> Result<Option<Vec<String>>> {
        let path = format!("/api/v1/organization/{org}/team/{team}/members");
        let (s, text) = self
            .expect(reqwest::Method::GET, &path, None, &[200, 404])
            .await?;
        if s == 404 {
            return Ok(None);
        }
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("GET {path}: not JSON"))?;
        Ok(Some(
            v["members"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter_map(|x| x["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        ))
    }

    /// The role of team `team` (`member`, `creator`, `admin`), or `None` when the org has no
    /// such team: Quay lists an org's teams with their roles in `GET …/organization/{org}`
    /// (endpoints/api/organization.py `org_view`, `teams`), its team endpoint has no GET.
    pub async fn team_role(&self, org: &str, team: &str) -> Result<Option<String>> {
        let path = format!("/api/v1/organization/{org}");
        let (_, text) = self
            .expect(reqwest::Method::GET, &path, None, &[200])
            .await?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("GET {path}: not JSON"))?;
        Ok(v["teams"][team]["role"].as_str().map(str::to_string))
    }

    /// Create team `team` with `role`, or set the role of the team of that name (Quay's PUT
    /// creates or updates). `member` lets a robot pull through a cache org; `creator` lets it
    /// create repositories in a regular org by pushing to them, and Quay makes it the admin of
    /// each one it creates (data/model/repository.py `create_repository`).
    pub async fn team(&self, org: &str, team: &str, role: TeamRole) -> Result<()> {
        self.expect(
            reqwest::Method::PUT,
            &format!("/api/v1/organization/{org}/team/{team}"),
            Some(&json!({ "role": role.name(), "description": role.description() })),
            &[200],
        )
        .await?;
        Ok(())
    }

    /// Add `member` to `team`; one already in it (Quay's 400 "already a member") is fine.
    pub async fn add_team_member(&self, org: &str, team: &str, member: &str) -> Result<()> {
        let r = self
            .expect(
                reqwest::Method::PUT,
                &format!("/api/v1/organization/{org}/team/{team}/members/{member}"),
                Some(&json!({})),
                &[200],
            )
            .await;
        match r {
            Err(e)
                if e.downcast_ref::<QuayError>()
                    .is_some_and(QuayError::already_member) =>
            {
                Ok(())
            }
            r => r.map(|_| ()),
        }
    }
}

/// A tag of a repository as `GET …/tag/?onlyActiveTags=true` lists it (endpoints/api/tag.py
/// `_tag_dict`): its name and the digest of the manifest it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuayTag {
    pub name: String,
    pub manifest_digest: Digest,
}

/// Tags per page when listing: Quay's maximum (`limit` is clamped to 1..=100).
pub const TAGS_PER_PAGE: usize = 100;

impl QuayClient {
    /// The repositories of `namespace` (`GET /api/v1/repository?namespace=…`), following
    /// `next_page` until Quay gives none; names without the namespace.
    pub async fn repositories(&self, namespace: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/repository?namespace={}", query(namespace));
            if let Some(token) = &next {
                path.push_str(&format!("&next_page={}", query(token)));
            }
            let (_, text) = self
                .expect(reqwest::Method::GET, &path, None, &[200])
                .await?;
            let v: Value =
                serde_json::from_str(&text).with_context(|| format!("GET {path}: not JSON"))?;
            let Some(repos) = v["repositories"].as_array() else {
                anyhow::bail!("GET {path}: no `repositories` list in Quay's answer");
            };
            for r in repos {
                let name = r["name"]
                    .as_str()
                    .with_context(|| format!("GET {path}: a repository without a name"))?;
                names.push(name.to_string());
            }
            match v["next_page"].as_str() {
                Some(t) if !t.is_empty() && next.as_deref() != Some(t) => {
                    next = Some(t.to_string())
                }
                _ => break,
            }
        }
        Ok(names)
    }

    /// The active (unexpired, visible) tags of `repository` (`namespace/name`), page by page
    /// while Quay says `has_additional`; `None` when Quay has no such repository. Hidden tags
    /// (Quay's temporary tags for digest pulls) are never listed.
    pub async fn active_tags(&self, repository: &str) -> Result<Option<Vec<QuayTag>>> {
        let mut tags = Vec::new();
        for page in 1.. {
            let path = format!(
                "/api/v1/repository/{repository}/tag/?onlyActiveTags=true&limit={TAGS_PER_PAGE}&page={page}"
            );
            let (status, text) = self
                .expect(reqwest::Method::GET, &path, None, &[200, 404])
                .await?;
            if status == 404 {
                return Ok(None);
            }
            let v: Value =
                serde_json::from_str(&text).with_context(|| format!("GET {path}: not JSON"))?;
            let Some(list) = v["tags"].as_array() else {
                anyhow::bail!("GET {path}: no `tags` list in Quay's answer");
            };
            for t in list {
                let (Some(name), Some(digest)) =
                    (t["name"].as_str(), t["manifest_digest"].as_str())
                else {
                    anyhow::bail!("GET {path}: a tag without `name` or `manifest_digest`");
                };
                let manifest_digest = digest.parse().map_err(|e| {
                    anyhow::anyhow!("GET {path}: tag `{name}`: manifest_digest {digest}: {e}")
                })?;
                tags.push(QuayTag {
                    name: name.to_string(),
                    manifest_digest,
                });
            }
            if !v["has_additional"].as_bool().unwrap_or(false) || list.is_empty() {
                break;
            }
        }
        Ok(Some(tags))
    }

    /// Delete tag `tag` of `repository` (`DELETE /api/v1/repository/{repo}/tag/{tag}`, 204):
    /// `true` when deleted, `false` when Quay has no such live tag (404). Quay ends the tag's
    /// life; the manifest and its blobs go with Quay's garbage collection once no tag names
    /// them and the org's time-machine window has passed.
    pub async fn delete_tag(&self, repository: &str, tag: &str) -> Result<bool> {
        let (s, _) = self
            .expect(
                reqwest::Method::DELETE,
                &format!("/api/v1/repository/{repository}/tag/{tag}"),
                None,
                &[204, 404],
            )
            .await?;
        Ok(s == 204)
    }
}

/// A query-string value, percent-encoded (page tokens are opaque and may hold `=`, `+`, `/`).
fn query(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn read_ca(ca: &Path) -> Result<reqwest::Certificate> {
    let pem = std::fs::read(ca).with_context(|| format!("cannot read CA file {}", ca.display()))?;
    reqwest::Certificate::from_pem(&pem)
        .with_context(|| format!("CA file {} is not a PEM certificate", ca.display()))
}

/// reqwest's error as its cause chain: the top line only repeats the URL, the causes tell a
/// refused connection from a TLS failure.
fn without_url(e: &reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_from_quay_bodies() {
        assert_eq!(
            quay_message(
                r#"{"detail":"d","error_message":"Proxy Cache Configuration already exists","error_type":"invalid_request","title":"invalid_request","type":"x","status":400}"#
            ),
            "Proxy Cache Configuration already exists"
        );
        assert_eq!(
            quay_message(r#"{"error": "CSRF token was invalid or missing."}"#),
            "CSRF token was invalid or missing."
        );
        assert_eq!(quay_message(r#""Not Found""#), "Not Found");
        assert_eq!(quay_message(""), "(empty body)");
        assert!(!format!("{:?}", Token::new("s3cret").unwrap()).contains("s3cret"));
    }
}
