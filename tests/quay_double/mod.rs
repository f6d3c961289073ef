//! A TEST DOUBLE of Quay, not Quay: no real Quay can run here (it needs PostgreSQL, Redis and
//! its own images). It follows, call for call, what ../shared/QUAY.md records a real Quay
//! (quay/quay at ffba0c70) answering in its two "Seen on a real Quay" sections (2026-08 and
//! 2026-11-30); where that file is silent it follows Quay's API documentation. It stands in for
//! exactly the endpoints prewarm calls:
//!
//! - `/api/v1` takes `Authorization: Bearer <OAuth token>` only: none on a GET → 401
//!   `invalid_token`, none on any other method → 403 `{"error": "CSRF token was invalid or
//!   missing."}`, a wrong one → 401; the token expires 9000 s after the double starts (as a
//!   token from `POST /api/v1/user/initialize` does) and then gets 401 like a wrong one
//!   ([`QuayDouble::expire_token`] jumps there, `token_requests_left` after some requests);
//! - `POST /api/v1/organization/` → 201 `"Created"`, taken → 400 "A user or organization with
//!   this name already exists", a DELETED name → 400 "Username is not available" until the
//!   namespace garbage collection runs ([`QuayDouble::gc_namespaces`]; a real Quay's worker
//!   takes ~60 s, and never runs without that worker); `GET`/`DELETE …/{org}` → 200/204, else 404
//!   (the GET lists the org's `teams` with their roles, as endpoints/api/organization.py
//!   `org_view` does for an admin; QUAY.md is silent on it);
//! - `GET …/proxycache` → `{"upstream_registry": "", "expiration_s": "", "insecure": ""}` when
//!   unset; `POST` resolves the upstream's host name first (400 "Cannot resolve hostname
//!   '<host>'" for a name in [`State::unresolvable`]; the double's DNS knows every other name),
//!   a host outside [`State::ssrf_allowed`] → 400 "Error while creating Proxy cache
//!   configuration", then 201 `"Created"`, again → 400 "Proxy Cache Configuration already
//!   exists"; `DELETE` → **201** `"Deleted"`, again → 404 — creating never contacts the upstream;
//! - `POST …/validateproxycache` → 202 `"Valid"` when Quay logs in with the credentials given;
//!   202 `"Anonymous"` when it falls back to anonymous access — a WRONG password on a Basic-auth
//!   (htpasswd) upstream answers so, not an error; 400 "Failed login to remote registry. Please
//!   verify entered details and try again." for a wrong password on a Bearer-token upstream, a
//!   dead upstream, or a plain-HTTP one without `insecure: true`; 400 "The provided registry URL
//!   is not allowed" outside SSRF_ALLOWED_HOSTS; 400 when a config exists;
//! - robots (`PUT` creates, 400 when it exists; `GET …/robots/{short}` reads the token back),
//!   teams, team members (`PUT` of a member already in the team → 400 "User … is already a
//!   member of team …"; `GET …/members` lists them), quota and quota limits;
//! - error bodies `{"detail","error_message","error_type","title","type","status"}`;
//! - repositories and tags of the orgs — QUAY.md records only the two URLs, so the shapes and
//!   answers follow quay/quay at ffba0c70 (endpoints/api/repository.py `RepositoryList.get`,
//!   endpoints/api/__init__.py `page_support`, endpoints/api/tag.py `ListRepositoryTags.get`,
//!   `RepositoryTag.delete` and `_tag_dict`, data/model/oci/tag.py `delete_tag` and
//!   `filter_to_alive_tags`): `GET /api/v1/repository?namespace=ORG` →
//!   `{"repositories": [{namespace, name, description, is_public, kind, state}], "next_page"}`,
//!   [`State::repos_per_page`] a page (Quay: 100), `next_page` an opaque token (Quay: a Fernet
//!   token) present only when more follow, no namespace → 400 "namespace, starred or public
//!   are required for this API call", an unknown namespace → an empty list;
//!   `GET /api/v1/repository/{repo}/tag/?onlyActiveTags=true&limit=N&page=P` →
//!   `{"tags": [{name, reversion, immutable, start_ts, end_ts, manifest_digest,
//!   is_manifest_list, size, last_modified, expiration}], "page", "has_additional"}`, newest
//!   first, `limit` clamped to 1..=100 (default 50), an unknown repository → 404; without
//!   `onlyActiveTags` deleted and expired tags are listed too; HIDDEN tags (the temporary tags
//!   a digest pull through a cache org creates, QUAY.md) are never listed;
//!   `DELETE /api/v1/repository/{repo}/tag/{tag}` → 204 with an empty body, the tag's life
//!   ended (listed again only without `onlyActiveTags`); no such repository or live visible
//!   tag → 404 "Not Found"; an immutable tag (FEATURE_IMMUTABLE_TAGS) → 409 "Cannot delete
//!   immutable tag '<tag>'". Quay's tag API has no proxy-cache check: a cache org's tags delete
//!   like any others (only a repository in read-only or mirror state answers 503);
//! - with [`QuayDouble::serve_registry`], the registry side of a cache org at `/v2/`: Quay's
//!   bearer-token flow (`/v2/auth` takes `robot:token` or `$oauthtoken:<token>`; anonymous
//!   pulls through a cache org are refused) granting pull and push as quay/quay's
//!   endpoints/v2/v2auth.py does (see [`may`]: a cache org's teams pull through it; in a
//!   regular org a `creator` team's robot pushes, creating repositories it then administers),
//!   every authorised request (GET/HEAD needing pull, the rest push) relayed byte for byte to a real registry standing in
//!   for Quay's storage (the lab's cache front) — a HEAD on a blob after a whole GET of it, since
//!   a HEAD on a blob a cache org lacks makes Quay fetch the whole blob from upstream first.
//!
//! It is a real HTTP/1.1 server on 127.0.0.1 (std TcpListener, a thread per connection, one
//! request per connection). Tests set which upstream credentials log in and how ([`Login`]),
//! make the next proxy-cache POSTs fail (`fail_proxycache_posts`), and read every request (`log`).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde_json::{json, Value};

pub const TOKEN: &str = "qdouble-oauth-TOKEN-7f3a9c";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    pub upstream_registry: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub expiration_s: u64,
    pub insecure: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Quota {
    pub id: u64,
    pub limit_bytes: u64,
    /// (id, type, percent)
    pub limits: Vec<(u64, String, u64)>,
}

#[derive(Debug, Clone, Default)]
pub struct Org {
    pub proxycache: Option<ProxyConfig>,
    pub quota: Option<Quota>,
    /// short name → token
    pub robots: BTreeMap<String, String>,
    /// team → (role, members)
    pub teams: BTreeMap<String, (String, BTreeSet<String>)>,
}

/// A tag of a repository, as Quay's `Tag` table holds it.
#[derive(Debug, Clone)]
pub struct Tag {
    pub name: String,
    pub manifest_digest: String,
    pub is_manifest_list: bool,
    pub size: u64,
    /// Seconds since the epoch the tag started / ends (a cache org's tags end when their
    /// `expiration_s` runs out; a deleted tag ended when it was deleted).
    pub start_ts: i64,
    pub end_ts: Option<i64>,
    /// A digest pull's temporary tag: never listed, never deletable through the API.
    pub hidden: bool,
    pub immutable: bool,
}

impl Tag {
    fn alive(&self, now: i64) -> bool {
        self.end_ts.is_none_or(|e| e > now)
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: String,
}

/// How an upstream registry takes logins, which decides what Quay's validation answers for a
/// wrong password (QUAY.md, 2026-11-30).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginKind {
    /// htpasswd: a wrong password makes Quay fall back to anonymous access, 202 "Anonymous".
    Basic,
    /// A token service: a wrong password is 400 "Failed login …".
    Bearer,
}

#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub password: String,
    pub kind: LoginKind,
}

#[derive(Debug)]
pub struct State {
    pub orgs: BTreeMap<String, Org>,
    /// User names: org creation with one of these names is refused as taken.
    pub users: BTreeSet<String>,
    /// Names of deleted orgs, reserved until the namespace garbage collection purges them.
    pub reserved: BTreeSet<String>,
    /// Upstream host → the login it takes. A host listed here refuses anonymous access; any
    /// other host is open (anonymous "Anonymous", any credentials "Valid").
    pub logins: BTreeMap<String, Login>,
    /// Upstream hosts that do not answer (validation fails).
    pub dead: BTreeSet<String>,
    /// Upstream hosts that speak plain HTTP only (validation without `insecure` fails).
    pub plain_http: BTreeSet<String>,
    /// Host names Quay's resolver cannot resolve (a site without DNS for them).
    pub unresolvable: BTreeSet<String>,
    /// SSRF_ALLOWED_HOSTS; `None` allows every host.
    pub ssrf_allowed: Option<BTreeSet<String>>,
    /// The next N `POST …/proxycache` calls fail with 500.
    pub fail_proxycache_posts: usize,
    /// When the OAuth token stops working.
    pub token_expires: SystemTime,
    /// The token expires after this many more `/api/v1` requests (an expiry mid-run).
    pub token_requests_left: Option<usize>,
    /// Registry bearer tokens handed out by `/v2/auth` → what they may do, as
    /// `<repository>#pull` / `<repository>#push`.
    pub registry_tokens: BTreeMap<String, BTreeSet<String>>,
    /// Repository permissions (`org/name` → user or robot → `read`/`write`/`admin`); a push
    /// that creates a repository makes its pusher admin of it.
    pub repo_perms: BTreeMap<String, BTreeMap<String, String>>,
    /// Repositories (`org/name`) and their tags, newest last.
    pub repos: BTreeMap<String, Vec<Tag>>,
    /// Repositories a page of `GET /api/v1/repository` (Quay: 100).
    pub repos_per_page: usize,
    pub log: Vec<Request>,
    next_id: u64,
}

/// How long a token from `POST /api/v1/user/initialize` lasts.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(9000);

pub struct QuayDouble {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Where `/v2/` is relayed to (the registry behind the cache orgs), once set.
    registry: Arc<Mutex<Option<SocketAddr>>>,
}

impl QuayDouble {
    pub fn start() -> QuayDouble {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            orgs: BTreeMap::new(),
            users: ["quayadmin".to_string()].into(),
            reserved: BTreeSet::new(),
            logins: BTreeMap::new(),
            dead: BTreeSet::new(),
            plain_http: BTreeSet::new(),
            unresolvable: BTreeSet::new(),
            ssrf_allowed: None,
            fail_proxycache_posts: 0,
            token_expires: SystemTime::now() + TOKEN_LIFETIME,
            token_requests_left: None,
            registry_tokens: BTreeMap::new(),
            repo_perms: BTreeMap::new(),
            repos: BTreeMap::new(),
            repos_per_page: 100,
            log: Vec::new(),
            next_id: 0,
        }));
        let registry = Arc::new(Mutex::new(None));
        let (s, r) = (state.clone(), registry.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (s, r) = (s.clone(), r.clone());
                std::thread::spawn(move || {
                    let backend = *r.lock().unwrap();
                    let _ = serve(conn, &s, addr, backend);
                });
            }
        });
        QuayDouble {
            addr,
            state,
            registry,
        }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Serve the cache orgs' registry side at `/v2/`, relaying to `backend` (plain HTTP).
    pub fn serve_registry(&self, backend: SocketAddr) {
        *self.registry.lock().unwrap() = Some(backend);
    }

    /// Requests that change something (anything but GET), as `METHOD path`.
    pub fn writes(&self) -> Vec<String> {
        self.state()
            .log
            .iter()
            .filter(|r| r.method != "GET" && !r.path.starts_with("/v2/"))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    pub fn clear_log(&self) {
        self.state().log.clear();
    }

    pub fn add_org(&self, name: &str, proxycache: Option<ProxyConfig>) {
        self.state().orgs.insert(
            name.to_string(),
            Org {
                proxycache,
                ..Org::default()
            },
        );
    }

    pub fn config(&self, org: &str) -> Option<ProxyConfig> {
        self.state()
            .orgs
            .get(org)
            .and_then(|o| o.proxycache.clone())
    }

    /// `host` takes `user`/`password`, the `kind` way.
    pub fn login(&self, host: &str, user: &str, password: &str, kind: LoginKind) {
        self.state().logins.insert(
            host.to_string(),
            Login {
                user: user.into(),
                password: password.into(),
                kind,
            },
        );
    }

    /// Quay's namespace garbage-collection worker runs: deleted names become free again.
    pub fn gc_namespaces(&self) {
        self.state().reserved.clear();
    }

    /// A pull through the cache org left `repository:tag` naming `digest`, expiring after the
    /// org's `expiration_s` (a day); `hidden` for a digest pull's temporary tag.
    pub fn add_tag(&self, repository: &str, tag: &str, digest: &str, is_list: bool, hidden: bool) {
        let now = unix_now();
        let mut s = self.state();
        s.next_id += 1;
        let start_ts = now - 3600 + s.next_id as i64;
        let size = 1000 + s.next_id;
        s.repos
            .entry(repository.to_string())
            .or_default()
            .push(Tag {
                name: tag.to_string(),
                manifest_digest: digest.to_string(),
                is_manifest_list: is_list,
                size,
                start_ts,
                end_ts: Some(now + 86400),
                hidden,
                immutable: false,
            });
    }

    /// `(repository, tag, digest)` of every live tag, hidden ones included, sorted.
    pub fn live_tags(&self) -> Vec<(String, String, String)> {
        let now = unix_now();
        let mut out: Vec<_> = self
            .state()
            .repos
            .iter()
            .flat_map(|(r, tags)| {
                tags.iter()
                    .filter(|t| t.alive(now))
                    .map(|t| (r.clone(), t.name.clone(), t.manifest_digest.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort();
        out
    }

    /// Make `repository:tag` immutable (Quay's FEATURE_IMMUTABLE_TAGS): deleting it is a 409.
    pub fn set_immutable(&self, repository: &str, tag: &str) {
        for t in self.state().repos.get_mut(repository).into_iter().flatten() {
            if t.name == tag {
                t.immutable = true;
            }
        }
    }

    /// The OAuth token's 9000 s are over.
    pub fn expire_token(&self) {
        self.state().token_expires = SystemTime::now() - Duration::from_secs(1);
    }
}

struct Reply {
    status: u16,
    body: Option<Value>,
    headers: Vec<(String, String)>,
}

fn reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        body: Some(body),
        headers: Vec::new(),
    }
}

/// Quay's error body.
fn error(status: u16, kind: &str, message: &str) -> Reply {
    reply(
        status,
        json!({
            "detail": message,
            "error_message": message,
            "error_type": kind,
            "title": kind,
            "type": format!("http://localhost/api/v1/error/{kind}"),
            "status": status,
        }),
    )
}

fn bad_request(message: &str) -> Reply {
    error(400, "invalid_request", message)
}

fn not_found() -> Reply {
    error(404, "not_found", "Not Found")
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "CREATED",
        202 => "ACCEPTED",
        204 => "NO CONTENT",
        400 => "BAD REQUEST",
        401 => "UNAUTHORIZED",
        403 => "FORBIDDEN",
        404 => "NOT FOUND",
        405 => "METHOD NOT ALLOWED",
        409 => "CONFLICT",
        _ => "INTERNAL SERVER ERROR",
    }
}

fn serve(
    conn: TcpStream,
    state: &Mutex<State>,
    addr: SocketAddr,
    registry: Option<SocketAddr>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    // A TLS ClientHello (prewarm's one HTTPS attempt on an insecure Quay): not HTTP, hang up.
    if reader.fill_buf()?.first() == Some(&0x16) {
        return Ok(());
    }
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = BTreeMap::new();
    let mut raw_headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            raw_headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let text_body = String::from_utf8_lossy(&body).to_string();
    let authorization = headers.get("authorization");
    let r = {
        let mut s = state.lock().unwrap();
        s.log.push(Request {
            method: method.clone(),
            path: target.clone(),
            body: text_body.clone(),
        });
        match (target.starts_with("/v2/"), registry) {
            (true, Some(_)) => registry_auth(&mut s, addr, &method, &target, authorization),
            _ => Some(handle(&mut s, &method, &target, authorization, &text_body)),
        }
    };
    let mut conn = conn;
    let Some(r) = r else {
        // Authorised registry request: relayed to the registry behind the orgs.
        let backend = registry.expect("checked above");
        return relay(conn, backend, &method, &target, &raw_headers, &body);
    };
    let text = r.body.map(|b| b.to_string()).unwrap_or_default();
    let extra: String = r
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        conn,
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{text}",
        r.status,
        reason(r.status),
        text.len()
    )?;
    conn.flush()
}

/// Quay's registry auth for `/v2/…`: `None` when the request may go on to the registry.
fn registry_auth(
    s: &mut State,
    addr: SocketAddr,
    method: &str,
    target: &str,
    authorization: Option<&String>,
) -> Option<Reply> {
    let unauthorized = |message: &str| Reply {
        status: 401,
        body: Some(json!({"errors": [{"code": "UNAUTHORIZED", "message": message, "detail": []}]})),
        headers: vec![(
            "WWW-Authenticate".into(),
            format!("Bearer realm=\"http://{addr}/v2/auth\",service=\"{addr}\""),
        )],
    };
    let path = target.split('?').next().unwrap_or("");
    if path == "/v2/auth" {
        // Who asks: a robot with its token, or `$oauthtoken` with the OAuth token.
        let basic = authorization
            .and_then(|a| a.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let who: Option<String> = match basic.as_deref().and_then(|b| b.split_once(':')) {
            None => None,
            Some(("$oauthtoken", t)) if t == TOKEN && SystemTime::now() < s.token_expires => {
                Some("quayadmin".into())
            }
            Some((user, token)) => {
                let Some((org, short)) = user.split_once('+') else {
                    return Some(unauthorized("Invalid Username or Password"));
                };
                match s.orgs.get(org).and_then(|o| o.robots.get(short)) {
                    Some(t) if t == token => Some(user.to_string()),
                    _ => return Some(unauthorized("Invalid Username or Password")),
                }
            }
        };
        let query = target.split_once('?').map(|q| q.1).unwrap_or("");
        let mut granted = BTreeSet::new();
        for scope in query
            .split('&')
            .filter_map(|kv| kv.strip_prefix("scope="))
            .map(|v| v.replace("%3A", ":").replace("%2F", "/"))
        {
            let Some((repo, actions)) = scope
                .strip_prefix("repository:")
                .and_then(|r| r.rsplit_once(':'))
                .map(|(r, a)| (r.to_string(), a.to_string()))
            else {
                continue;
            };
            let org = repo.split('/').next().unwrap_or("");
            for action in actions.split(',') {
                if may(s, who.as_deref(), &repo, org, action) {
                    granted.insert(format!("{repo}#{action}"));
                }
            }
        }
        s.next_id += 1;
        let token = format!("qdouble-registry-{:020}", s.next_id);
        s.registry_tokens.insert(token.clone(), granted);
        return Some(reply(200, json!({"token": token, "access_token": token})));
    }
    let granted = authorization
        .and_then(|a| a.strip_prefix("Bearer "))
        .and_then(|t| s.registry_tokens.get(t));
    let Some(granted) = granted else {
        return Some(unauthorized(
            "access to the requested resource is not authorized",
        ));
    };
    if path == "/v2/" {
        return None;
    }
    // `/v2/<name>/(manifests|blobs|tags)/…`: the name must be granted.
    let rest = &path["/v2/".len()..];
    let name = ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .find_map(|k| rest.find(k).map(|i| &rest[..i]))
        .unwrap_or(rest);
    let action = if matches!(method, "GET" | "HEAD") {
        "pull"
    } else {
        "push"
    };
    if granted.contains(&format!("{name}#{action}")) {
        None
    } else {
        Some(unauthorized(
            "access to the requested resource is not authorized",
        ))
    }
}

/// Whether `who` (`quayadmin` for the OAuth token's superuser, else a robot) gets `action` on
/// `repo` in `org`, as quay/quay's endpoints/v2/v2auth.py `_authorize_or_downscope_request`
/// decides (at ffba0c70; roles from auth/permissions.py): `push` on an existing repository
/// needs write on it (a repository permission of write or admin, an org-wide admin team) or a
/// superuser; on a missing one, the org's `creator` or `admin` team role (CreateRepositoryPermission)
/// — the push creates it and its creator becomes its admin (data/model/repository.py
/// `create_repository`). `pull` needs read on it, or, in a proxy-cache org, org membership
/// (OrganizationMemberPermission: any team). A team's `member` and `creator` roles give no
/// org-wide repository role (TEAM_ORGWIDE_REPO_ROLES).
fn may(s: &mut State, who: Option<&str>, repo: &str, org: &str, action: &str) -> bool {
    let Some(who) = who else { return false };
    let superuser = who == "quayadmin";
    // The superuser reads anything (the OAuth token's account; the double has no other user).
    if superuser && action == "pull" {
        return true;
    }
    let Some(o) = s.orgs.get(org) else {
        return false;
    };
    let team_roles: BTreeSet<&str> = o
        .teams
        .values()
        .filter(|t| t.1.contains(who))
        .map(|t| t.0.as_str())
        .collect();
    let repo_role = s.repo_perms.get(repo).and_then(|p| p.get(who)).cloned();
    let team_admin = team_roles.contains("admin");
    match action {
        "push" => {
            let exists = s.repos.contains_key(repo) || s.repo_perms.contains_key(repo);
            if exists {
                superuser || team_admin || matches!(repo_role.as_deref(), Some("write" | "admin"))
            } else if superuser || team_admin || team_roles.contains("creator") {
                s.repo_perms
                    .entry(repo.to_string())
                    .or_default()
                    .insert(who.to_string(), "admin".into());
                true
            } else {
                false
            }
        }
        "pull" => {
            superuser
                || team_admin
                || repo_role.is_some()
                || (o.proxycache.is_some() && !team_roles.is_empty())
        }
        _ => false,
    }
}

/// Send the request on to `backend` and its answer back, byte for byte. A HEAD on a blob is
/// preceded by a whole GET of it, as a real Quay's cache org fetches a blob it lacks from
/// upstream before it answers a HEAD (so a HEAD's success says nothing about what the cache
/// held before).
fn relay(
    mut conn: TcpStream,
    backend: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<()> {
    if method == "HEAD" && target.contains("/blobs/") {
        send(backend, "GET", target, headers, &[], &mut std::io::sink())?;
    }
    send(backend, method, target, headers, body, &mut conn)?;
    conn.flush()
}

/// One request to `backend`, its whole answer copied to `to`.
fn send(
    backend: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
    to: &mut impl Write,
) -> std::io::Result<u64> {
    let mut up = TcpStream::connect(backend)?;
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nHost: {backend}\r\nConnection: close\r\n");
    for (k, v) in headers {
        let lk = k.to_ascii_lowercase();
        if !["host", "connection", "authorization"].contains(&lk.as_str()) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    up.write_all(head.as_bytes())?;
    up.write_all(body)?;
    std::io::copy(&mut up, to)
}

/// The host name of an `upstream_registry` (`host[:port][/namespace]`), without the port.
fn upstream_hostname(upstream: &str) -> &str {
    let host = upstream.split('/').next().unwrap_or("");
    host.rsplit_once(':').map(|h| h.0).unwrap_or(host)
}

fn ssrf_allowed(s: &State, upstream: &str) -> bool {
    let host = upstream.split('/').next().unwrap_or("");
    s.ssrf_allowed
        .as_ref()
        .is_none_or(|a| a.contains(host) || a.contains(upstream_hostname(host)))
}

fn valid_org_name(s: &str) -> bool {
    (2..=255).contains(&s.len())
        && s.split(['.', '_', '-']).all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// The proxy-cache body as Quay's JSON schema checks it: `upstream_registry` required, the
/// typed fields typed, other keys ignored.
fn proxy_body(body: &str) -> Result<ProxyConfig, Reply> {
    let v: Value = serde_json::from_str(body).map_err(|_| bad_request("Invalid JSON"))?;
    let upstream = match v.get("upstream_registry") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(bad_request("'upstream_registry' is a required property")),
    };
    let text = |k: &str| -> Result<Option<String>, Reply> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad_request(&format!("'{k}' is not of type 'string'"))),
        }
    };
    let expiration_s = match v.get("expiration_s") {
        None => 86400,
        Some(e) => e
            .as_u64()
            .ok_or_else(|| bad_request("'expiration_s' is not of type 'integer'"))?,
    };
    let insecure = match v.get("insecure") {
        None => false,
        Some(b) => b
            .as_bool()
            .ok_or_else(|| bad_request("'insecure' is not of type 'boolean'"))?,
    };
    Ok(ProxyConfig {
        upstream_registry: upstream,
        username: text("upstream_registry_username")?,
        password: text("upstream_registry_password")?,
        expiration_s,
        insecure,
    })
}

fn handle(s: &mut State, method: &str, target: &str, auth: Option<&String>, body: &str) -> Reply {
    match s.token_requests_left {
        Some(0) => s.token_expires = SystemTime::now() - Duration::from_secs(1),
        Some(n) => s.token_requests_left = Some(n - 1),
        None => {}
    }
    match auth {
        None if method == "GET" => {
            return reply(
                401,
                json!({"error": "invalid_token", "error_description": "The access token is missing"}),
            )
        }
        None => return reply(403, json!({"error": "CSRF token was invalid or missing."})),
        // Quay drops why a token failed (unknown or expired) and answers 401 the same way.
        Some(a)
            if a.strip_prefix("Bearer ") != Some(TOKEN) || SystemTime::now() >= s.token_expires =>
        {
            return error(401, "invalid_token", "Invalid bearer token")
        }
        Some(_) => {}
    }
    let path = target.split('?').next().unwrap_or("");
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return not_found();
    };
    let query = target.split_once('?').map(|q| q.1).unwrap_or("");
    if rest == "repository" || rest == "repository/" {
        if method != "GET" {
            return error(
                405,
                "method_not_allowed",
                "The method is not allowed for the requested URL.",
            );
        }
        return list_repositories(s, query);
    }
    if let Some((repo, tag)) = rest
        .strip_prefix("repository/")
        .and_then(|r| r.rsplit_once("/tag/"))
    {
        return match (method, tag) {
            ("GET", "") => list_tags(s, repo, query),
            ("DELETE", t) if !t.is_empty() => delete_tag(s, repo, t),
            _ => error(
                405,
                "method_not_allowed",
                "The method is not allowed for the requested URL.",
            ),
        };
    }
    let seg: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match (method, seg.as_slice()) {
        ("GET", ["user"]) => reply(200, json!({"username": "quayadmin", "anonymous": false, "super_user": true})),
        ("POST", ["organization"]) => {
            let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            let Some(name) = v.get("name").and_then(Value::as_str) else {
                return bad_request("'name' is a required property");
            };
            if !valid_org_name(name) {
                return bad_request("Invalid organization name");
            }
            if s.orgs.contains_key(name) || s.users.contains(name) {
                return bad_request("A user or organization with this name already exists");
            }
            if s.reserved.contains(name) {
                return bad_request("Username is not available");
            }
            s.orgs.insert(name.to_string(), Org::default());
            reply(201, json!("Created"))
        }
        // endpoints/api/organization.py `org_view` / `team_view`: an admin (the superuser here)
        // sees every team with its role.
        ("GET", ["organization", org]) => match s.orgs.get(*org) {
            Some(o) => reply(
                200,
                json!({
                    "name": org, "email": "", "is_admin": true, "is_member": true,
                    "teams": o.teams.iter().map(|(name, (role, members))| (name.clone(), json!({
                        "name": name, "description": "", "role": role, "can_view": true,
                        "repo_count": 0, "member_count": members.len(), "is_synced": false,
                    }))).collect::<serde_json::Map<String, Value>>(),
                    "ordered_teams": o.teams.keys().collect::<Vec<_>>(),
                }),
            ),
            None => not_found(),
        },
        ("DELETE", ["organization", org]) => match s.orgs.remove(*org) {
            Some(_) => {
                // Deletion is asynchronous: the name stays taken until the namespace GC.
                s.reserved.insert(org.to_string());
                Reply { status: 204, body: None, headers: Vec::new() }
            }
            None => not_found(),
        },
        ("GET", ["organization", org, "proxycache"]) => {
            // As a superuser, Quay answers the empty config even for an org that does not exist.
            match s.orgs.get(*org).and_then(|o| o.proxycache.as_ref()) {
                Some(c) => reply(
                    200,
                    json!({"upstream_registry": c.upstream_registry, "expiration_s": c.expiration_s, "insecure": c.insecure}),
                ),
                None => reply(200, json!({"upstream_registry": "", "expiration_s": "", "insecure": ""})),
            }
        }
        ("POST", ["organization", org, "proxycache"]) => {
            let config = match proxy_body(body) {
                Ok(c) => c,
                Err(r) => return r,
            };
            if s.fail_proxycache_posts > 0 {
                s.fail_proxycache_posts -= 1;
                return error(500, "internal_error", "Internal Server Error");
            }
            if !s.orgs.contains_key(*org) {
                return not_found();
            }
            let hostname = upstream_hostname(&config.upstream_registry);
            if !ssrf_allowed(s, &config.upstream_registry) {
                return bad_request("Error while creating Proxy cache configuration");
            }
            if s.unresolvable.contains(hostname) {
                return bad_request(&format!("Cannot resolve hostname '{hostname}'"));
            }
            let Some(o) = s.orgs.get_mut(*org) else {
                return not_found();
            };
            if o.proxycache.is_some() {
                return bad_request("Proxy Cache Configuration already exists");
            }
            o.proxycache = Some(config);
            reply(201, json!("Created"))
        }
        ("DELETE", ["organization", org, "proxycache"]) => {
            match s.orgs.get_mut(*org).and_then(|o| o.proxycache.take()) {
                Some(_) => reply(201, json!("Deleted")),
                None => not_found(),
            }
        }
        ("POST", ["organization", org, "validateproxycache"]) => {
            let config = match proxy_body(body) {
                Ok(c) => c,
                Err(r) => return r,
            };
            let Some(o) = s.orgs.get(*org) else {
                return not_found();
            };
            if o.proxycache.is_some() {
                return bad_request("Proxy Cache Configuration already exists");
            }
            if !ssrf_allowed(s, &config.upstream_registry) {
                return bad_request("The provided registry URL is not allowed");
            }
            let host = config.upstream_registry.split('/').next().unwrap_or("");
            let failed = "Failed login to remote registry. Please verify entered details and try again.";
            if s.dead.contains(host)
                || s.unresolvable.contains(upstream_hostname(host))
                || (s.plain_http.contains(host) && !config.insecure)
            {
                return bad_request(failed);
            }
            let given = config.username.as_ref().zip(config.password.as_ref());
            match (s.logins.get(host), given) {
                // An open upstream: anonymous access works; any login is accepted.
                (None, None) => reply(202, json!("Anonymous")),
                (None, Some(_)) => reply(202, json!("Valid")),
                (Some(l), Some((u, p))) if l.user == *u && l.password == *p => {
                    reply(202, json!("Valid"))
                }
                // A refused Basic login falls back to anonymous access: 202, not an error.
                (Some(l), _) if l.kind == LoginKind::Basic => reply(202, json!("Anonymous")),
                (Some(_), _) => bad_request(failed),
            }
        }
        ("GET", ["organization", org, "quota"]) => match s.orgs.get(*org) {
            Some(o) => reply(
                200,
                json!(o.quota.iter().map(|q| json!({
                    "id": q.id,
                    "limit_bytes": q.limit_bytes,
                    "limits": q.limits.iter().map(|(id, t, p)| json!({"id": id, "type": t, "limit_percent": p})).collect::<Vec<_>>(),
                })).collect::<Vec<_>>()),
            ),
            None => not_found(),
        },
        ("POST", ["organization", org, "quota"]) => {
            let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            let Some(limit) = v.get("limit_bytes").and_then(Value::as_u64) else {
                return bad_request("'limit_bytes' is a required property");
            };
            s.next_id += 1;
            let id = s.next_id;
            let Some(o) = s.orgs.get_mut(*org) else {
                return not_found();
            };
            if o.quota.is_some() {
                return bad_request("Organization quota for 'org' already exists");
            }
            o.quota = Some(Quota { id, limit_bytes: limit, limits: vec![] });
            reply(201, json!("Created"))
        }
        ("PUT", ["organization", org, "quota", id]) => {
            let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            match s.orgs.get_mut(*org).and_then(|o| o.quota.as_mut()) {
                Some(q) if q.id.to_string() == *id => {
                    q.limit_bytes = v.get("limit_bytes").and_then(Value::as_u64).unwrap_or(q.limit_bytes);
                    reply(200, json!({"id": q.id, "limit_bytes": q.limit_bytes}))
                }
                _ => not_found(),
            }
        }
        ("POST", ["organization", org, "quota", id, "limit"]) => {
            let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            let (Some(t), Some(p)) = (v.get("type").and_then(Value::as_str), v.get("threshold_percent").and_then(Value::as_u64)) else {
                return bad_request("'type' and 'threshold_percent' are required properties");
            };
            if t != "Warning" && t != "Reject" {
                return bad_request("Invalid quota limit type");
            }
            s.next_id += 1;
            let lid = s.next_id;
            match s.orgs.get_mut(*org).and_then(|o| o.quota.as_mut()) {
                Some(q) if q.id.to_string() == *id => {
                    q.limits.push((lid, t.to_string(), p));
                    reply(201, json!("Created"))
                }
                _ => not_found(),
            }
        }
        ("PUT", ["organization", org, "quota", id, "limit", lid]) => {
            let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            match s.orgs.get_mut(*org).and_then(|o| o.quota.as_mut()) {
                Some(q) if q.id.to_string() == *id => match q.limits.iter_mut().find(|l| l.0.to_string() == *lid) {
                    Some(l) => {
                        l.2 = v.get("threshold_percent").and_then(Value::as_u64).unwrap_or(l.2);
                        reply(200, json!({"id": l.0, "type": l.1, "limit_percent": l.2}))
                    }
                    None => not_found(),
                },
                _ => not_found(),
            }
        }
        ("GET", ["organization", org, "robots", short]) => {
            match s.orgs.get(*org).and_then(|o| o.robots.get(*short)) {
                Some(token) => reply(200, json!({"name": format!("{org}+{short}"), "token": token, "description": ""})),
                None if s.orgs.contains_key(*org) => bad_request(&format!("Could not find robot with specified username: {org}+{short}")),
                None => not_found(),
            }
        }
        ("PUT", ["organization", org, "robots", short]) => {
            s.next_id += 1;
            let token = format!("ROBOTTOKEN{:030}", s.next_id);
            let Some(o) = s.orgs.get_mut(*org) else {
                return not_found();
            };
            if o.robots.contains_key(*short) {
                return bad_request(&format!("Existing robot with name: {org}+{short}"));
            }
            o.robots.insert(short.to_string(), token.clone());
            reply(201, json!({"name": format!("{org}+{short}"), "token": token, "description": ""}))
        }
        ("PUT", ["organization", org, "team", team]) => {
            let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            let role = v.get("role").and_then(Value::as_str).unwrap_or("").to_string();
            if !["member", "creator", "admin"].contains(&role.as_str()) {
                return bad_request("'role' is not one of ['member', 'creator', 'admin']");
            }
            let Some(o) = s.orgs.get_mut(*org) else {
                return not_found();
            };
            o.teams.entry(team.to_string()).or_default().0 = role.clone();
            reply(200, json!({"name": team, "role": role}))
        }
        ("PUT", ["organization", org, "team", team, "members", member]) => {
            let Some(o) = s.orgs.get_mut(*org) else {
                return not_found();
            };
            let robot_ok = member
                .split_once('+')
                .is_some_and(|(ns, short)| ns == *org && o.robots.contains_key(short));
            if !robot_ok {
                return bad_request("Unknown user");
            }
            match o.teams.get_mut(*team) {
                Some(t) if t.1.contains(*member) => bad_request(&format!(
                    "User {member} is already a member of team {team}"
                )),
                Some(t) => {
                    t.1.insert(member.to_string());
                    reply(200, json!({"name": member, "kind": "user", "is_robot": true}))
                }
                None => not_found(),
            }
        }
        ("GET", ["organization", org, "team", team, "members"]) => {
            match s.orgs.get(*org).and_then(|o| o.teams.get(*team)) {
                Some((_, members)) => reply(
                    200,
                    json!({
                        "name": team,
                        "members": members.iter().map(|m| json!({"name": m, "kind": "user", "is_robot": m.contains('+')})).collect::<Vec<_>>(),
                        "can_edit": true,
                    }),
                ),
                None => not_found(),
            }
        }
        _ => error(405, "method_not_allowed", "The method is not allowed for the requested URL."),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A query string's parameters, percent-decoded.
fn params(query: &str) -> BTreeMap<String, String> {
    let decode = |v: &str| {
        let b = v.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'%' if i + 2 < b.len() => {
                    let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(x) => {
                            out.push(x);
                            i += 3;
                            continue;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b'+' => out.push(b' '),
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).to_string()
    };
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// util/parsing.py `truthy_bool`.
fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|v| !["false", "False", "0", "FALSE", "", "null"].contains(&v.as_str()))
}

/// RFC 2822, as endpoints/api `format_date` (Python's `formatdate`) writes it.
fn rfc2822(ts: i64) -> String {
    let days = ts.div_euclid(86400);
    let secs = ts.rem_euclid(86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} -0000",
        months[(month - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Quay's page token is a Fernet token (URL-safe base64 of an encrypted `{"start_index": N}`);
/// the double's is as opaque to the client, and decodes to the index. A token it cannot read
/// gives the first page, as Quay's `decrypt_page_token` returning None does.
fn page_token(index: usize) -> String {
    format!(
        "gAAAAA{}",
        base64::engine::general_purpose::URL_SAFE.encode(format!("{{\"start_index\": {index}}}"))
    )
}

fn page_index(token: Option<&String>) -> usize {
    token
        .and_then(|t| t.strip_prefix("gAAAAA"))
        .and_then(|b| base64::engine::general_purpose::URL_SAFE.decode(b).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["start_index"].as_u64())
        .map(|i| i as usize)
        .unwrap_or(1)
        .max(1)
}

fn list_repositories(s: &State, query: &str) -> Reply {
    let p = params(query);
    let Some(namespace) = p.get("namespace").filter(|n| !n.is_empty()) else {
        if truthy(p.get("starred")) || truthy(p.get("public")) {
            return reply(200, json!({"repositories": []}));
        }
        return bad_request("namespace, starred or public are required for this API call");
    };
    let names: Vec<&str> = s
        .repos
        .keys()
        .filter_map(|r| r.strip_prefix(&format!("{namespace}/")))
        .collect();
    let index = page_index(p.get("next_page"));
    let per = s.repos_per_page.max(1);
    let page: Vec<Value> = names
        .iter()
        .skip((index - 1) * per)
        .take(per)
        .map(|n| {
            json!({
                "namespace": namespace,
                "name": n,
                "description": null,
                "is_public": false,
                "kind": "image",
                "state": "NORMAL",
            })
        })
        .collect();
    let mut body = json!({ "repositories": page });
    if names.len() > index * per {
        body["next_page"] = json!(page_token(index + 1));
    }
    reply(200, body)
}

fn tag_dict(t: &Tag) -> Value {
    let mut v = json!({
        "name": t.name,
        "reversion": false,
        "immutable": t.immutable,
        "start_ts": t.start_ts,
        "manifest_digest": t.manifest_digest,
        "is_manifest_list": t.is_manifest_list,
        "size": t.size,
        "last_modified": rfc2822(t.start_ts),
    });
    if let Some(e) = t.end_ts {
        v["end_ts"] = json!(e);
        v["expiration"] = json!(rfc2822(e));
    }
    v
}

fn list_tags(s: &State, repo: &str, query: &str) -> Reply {
    let Some(tags) = s.repos.get(repo) else {
        return not_found();
    };
    let p = params(query);
    let page = p
        .get("page")
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(1)
        .max(1) as usize;
    let limit = p
        .get("limit")
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(50)
        .clamp(1, 100) as usize;
    let now = unix_now();
    let only_active = truthy(p.get("onlyActiveTags"));
    let mut listed: Vec<&Tag> = tags
        .iter()
        .filter(|t| !t.hidden && (!only_active || t.alive(now)))
        .collect();
    listed.sort_by(|a, b| b.start_ts.cmp(&a.start_ts).then(a.name.cmp(&b.name)));
    let rest: Vec<&Tag> = listed.into_iter().skip((page - 1) * limit).collect();
    reply(
        200,
        json!({
            "tags": rest.iter().take(limit).map(|t| tag_dict(t)).collect::<Vec<_>>(),
            "page": page,
            "has_additional": rest.len() > limit,
        }),
    )
}

fn delete_tag(s: &mut State, repo: &str, tag: &str) -> Reply {
    let now = unix_now();
    let Some(t) = s.repos.get_mut(repo).and_then(|tags| {
        tags.iter_mut()
            .find(|t| t.name == tag && !t.hidden && t.alive(now))
    }) else {
        return not_found();
    };
    if t.immutable {
        return error(
            409,
            "tag_immutable",
            &format!("Cannot delete immutable tag '{tag}'"),
        );
    }
    t.end_ts = Some(now);
    Reply {
        status: 204,
        body: None,
        headers: Vec::new(),
    }
}
