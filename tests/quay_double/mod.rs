//! A test double for Quay's REST API (`/api/v1`), because no real Quay can run here (it needs
//! PostgreSQL, Redis and its own images). It stands in for exactly the endpoints prewarm calls,
//! answering with the status codes and bodies recorded from a real Quay (quay/quay at
//! ffba0c70; see ../shared/QUAY.md, "Seen on a real Quay"):
//!
//! - bearer token checked on every call: none on a GET → 401 `invalid_token`, none on any other
//!   method → 403 `{"error": "CSRF token was invalid or missing."}`, a wrong one → 401;
//! - `POST /api/v1/organization/` → 201 `"Created"`, taken → 400 "A user or organization with
//!   this name already exists"; `GET`/`DELETE /api/v1/organization/{org}` → 200/204, else 404;
//! - `GET …/proxycache` → every field `""` when unset; `POST` → 201 `"Created"`, again → 400
//!   "Proxy Cache Configuration already exists"; `DELETE` → **201** `"Deleted"`, again → 404;
//! - `POST …/validateproxycache` → 202 `"Valid"` / `"Anonymous"`, 400 "Failed login to remote
//!   registry. Please verify entered details and try again.", 400 when a config exists;
//! - quota, quota limits, robots, teams and team members as Quay's API shapes them;
//! - error bodies `{"detail","error_message","error_type","title","type","status"}`.
//!
//! It is a real HTTP/1.1 server on 127.0.0.1 (std TcpListener, a thread per connection, one
//! request per connection). Tests set which upstream credentials "log in" (`logins`), make the
//! next proxy-cache POSTs fail (`fail_proxycache_posts`), and read every request (`log`).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

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

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: String,
}

#[derive(Debug, Default)]
pub struct State {
    pub orgs: BTreeMap<String, Org>,
    /// User names: org creation with one of these names is refused as taken.
    pub users: BTreeSet<String>,
    /// Upstream host → the (user, password) that logs in there. A host listed here refuses
    /// anonymous access; any other host accepts only anonymous access.
    pub logins: BTreeMap<String, (String, String)>,
    /// The next N `POST …/proxycache` calls fail with 500.
    pub fail_proxycache_posts: usize,
    pub log: Vec<Request>,
    next_id: u64,
}

pub struct QuayDouble {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl QuayDouble {
    pub fn start() -> QuayDouble {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            users: ["quayadmin".to_string()].into(),
            ..State::default()
        }));
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &s);
                });
            }
        });
        QuayDouble { addr, state }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Requests that change something (anything but GET), as `METHOD path`.
    pub fn writes(&self) -> Vec<String> {
        self.state()
            .log
            .iter()
            .filter(|r| r.method != "GET")
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
}

struct Reply {
    status: u16,
    body: Option<Value>,
}

fn reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        body: Some(body),
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
        _ => "INTERNAL SERVER ERROR",
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
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
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).to_string();
    let r = {
        let mut s = state.lock().unwrap();
        s.log.push(Request {
            method: method.clone(),
            path: target.clone(),
            body: body.clone(),
        });
        handle(
            &mut s,
            &method,
            &target,
            headers.get("authorization"),
            &body,
        )
    };
    let text = r.body.map(|b| b.to_string()).unwrap_or_default();
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        r.status,
        reason(r.status),
        text.len()
    )?;
    conn.flush()
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
    match auth {
        None if method == "GET" => {
            return reply(
                401,
                json!({"error": "invalid_token", "error_description": "The access token is missing"}),
            )
        }
        None => return reply(403, json!({"error": "CSRF token was invalid or missing."})),
        Some(a) if a.strip_prefix("Bearer ") != Some(TOKEN) => {
            return error(401, "invalid_token", "Invalid bearer token")
        }
        Some(_) => {}
    }
    let path = target.split('?').next().unwrap_or("");
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return not_found();
    };
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
            s.orgs.insert(name.to_string(), Org::default());
            reply(201, json!("Created"))
        }
        ("GET", ["organization", org]) => match s.orgs.get(*org) {
            Some(_) => reply(200, json!({"name": org, "email": "", "is_admin": true, "is_member": true})),
            None => not_found(),
        },
        ("DELETE", ["organization", org]) => match s.orgs.remove(*org) {
            Some(_) => Reply { status: 204, body: None },
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
            let host = config.upstream_registry.split('/').next().unwrap_or("");
            let failed = "Failed login to remote registry. Please verify entered details and try again.";
            match (s.logins.get(host), &config.username, &config.password) {
                (None, None, None) => reply(202, json!("Anonymous")),
                (Some((u, p)), Some(gu), Some(gp)) if u == gu && p == gp => reply(202, json!("Valid")),
                _ => bad_request(failed),
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
                Some(t) => {
                    t.1.insert(member.to_string());
                    reply(200, json!({"name": member, "kind": "user", "is_robot": true}))
                }
                None => not_found(),
            }
        }
        _ => error(405, "method_not_allowed", "The method is not allowed for the requested URL."),
    }
}
