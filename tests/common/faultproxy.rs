//! A fault-injecting HTTP proxy on loopback, in front of a lab server (the cache's nginx
//! front): it forwards every request and, by rule, breaks some of them the way slow and flaky
//! links do — a connection reset mid-body, a stall, 429 with Retry-After, bursts of
//! 502/503/504, a truncated body, one flipped byte, an expired bearer token.
//!
//! It can also shape the link ([`Shape`]): a bandwidth cap per connection on response bodies
//! and a latency added to every request, as a WAN would.
//!
//! It also stands as a token-auth registry: `/v2/` answers 401 with a Bearer challenge whose
//! realm is its own `/token`, and every other request must carry a token it issued, so token
//! expiry mid-run can be injected. It strips the token before forwarding.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

#[derive(Clone, Debug)]
pub enum Fault {
    /// Send the headers (full Content-Length) and `after` bytes, then reset the connection.
    ResetMidBody { after: u64 },
    /// Send part of the body, then nothing for this long (a stalled link), then the rest.
    Stall(Duration),
    /// 429 Too Many Requests with `Retry-After: secs`.
    TooMany { retry_after: u64 },
    /// Answer this status (502, 503, 504, 500, …) with an empty body.
    Status(u16),
    /// A complete-looking response whose body is cut to `keep` bytes (Content-Length matches).
    Truncate { keep: u64 },
    /// The body with the byte at `at` flipped.
    FlipByte { at: u64 },
    /// Invalidate every token issued so far, then answer 401 (the token "expired").
    ExpireToken,
    /// Read nothing more and answer nothing for this long, then forward (a stalled upload:
    /// no response headers, the request body not taken).
    Hang(Duration),
}

/// Apply `fault` to the first `times` requests whose method and path match.
#[derive(Clone, Debug)]
pub struct Rule {
    pub method: Option<&'static str>,
    pub path_contains: String,
    pub times: u64,
    pub fault: Fault,
}

impl Rule {
    pub fn new(path_contains: &str, times: u64, fault: Fault) -> Rule {
        Rule {
            method: Some("GET"),
            path_contains: path_contains.to_string(),
            times,
            fault,
        }
    }
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub fault: Option<String>,
}

/// How the link behaves besides faults.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shape {
    /// Response body bytes per second, per connection (`None`: as fast as loopback).
    pub bandwidth: Option<u64>,
    /// Added before every request is forwarded.
    pub latency: Duration,
}

/// Paces one connection's response bytes to the bandwidth cap.
struct Pacer {
    bandwidth: Option<u64>,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Pacer {
    /// Wait until `n` more bytes may go.
    async fn take(&self, n: usize) {
        let Some(bw) = self.bandwidth else {
            return;
        };
        let at = {
            let mut next = self.next.lock().await;
            let start = (*next).max(tokio::time::Instant::now());
            *next = start + Duration::from_secs_f64(n as f64 / bw as f64);
            *next
        };
        tokio::time::sleep_until(at).await;
    }
}

/// Bytes sent at once under a bandwidth cap.
const PACE_CHUNK: usize = 8 << 10;

struct State {
    backend: String,
    shape: Shape,
    rules: Mutex<Vec<(Rule, u64)>>,
    seen: Mutex<Vec<Seen>>,
    token_generation: AtomicU64,
    http: reqwest::Client,
}

pub struct FaultProxy {
    pub addr: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Listen on a free 127.0.0.1 port, forwarding to `backend` (`127.0.0.1:PORT`, plain HTTP).
    pub async fn start(backend: &str, rules: Vec<Rule>) -> FaultProxy {
        Self::start_shaped(backend, rules, Shape::default()).await
    }

    /// As [`FaultProxy::start`], over a link shaped as `shape` says.
    pub async fn start_shaped(backend: &str, rules: Vec<Rule>, shape: Shape) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(State {
            backend: backend.to_string(),
            shape,
            rules: Mutex::new(rules.into_iter().map(|r| (r, 0)).collect()),
            seen: Mutex::new(Vec::new()),
            token_generation: AtomicU64::new(1),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                let pacer = Arc::new(Pacer {
                    bandwidth: st.shape.bandwidth,
                    next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
                });
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(st.clone(), pacer.clone(), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FaultProxy { addr, state, task }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// How many times each rule fired, in rule order.
    pub fn fired(&self) -> Vec<u64> {
        self.state
            .rules
            .lock()
            .unwrap()
            .iter()
            .map(|(_, n)| *n)
            .collect()
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

fn challenge(host: &str) -> Response<Body> {
    let mut r = empty(StatusCode::UNAUTHORIZED);
    r.headers_mut().insert(
        "www-authenticate",
        format!("Bearer realm=\"http://{host}/token\",service=\"faultproxy\"")
            .parse()
            .unwrap(),
    );
    r
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

async fn handle(
    state: Arc<State>,
    pacer: Arc<Pacer>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if !state.shape.latency.is_zero() {
        tokio::time::sleep(state.shape.latency).await;
    }
    let method = req.method().as_str().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let host = req
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();

    // The token endpoint and the challenge are never faulted.
    if path.starts_with("/token") {
        let generation = state.token_generation.load(Ordering::SeqCst);
        let body = format!("{{\"token\":\"gen{generation}\",\"expires_in\":300}}");
        return Ok(Response::builder()
            .header("content-type", "application/json")
            .body(
                Full::new(Bytes::from(body))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .unwrap());
    }
    let token_ok = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v == format!(
                "Bearer gen{}",
                state.token_generation.load(Ordering::SeqCst)
            )
        });
    // Unauthorized requests are answered before any rule is consumed, so a fault always
    // lands on a request that would otherwise have succeeded.
    if path == "/v2/" || !token_ok {
        state.seen.lock().unwrap().push(Seen {
            method,
            path,
            range,
            fault: None,
        });
        return Ok(challenge(&host));
    }
    let fault = {
        let mut rules = state.rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|(r, n)| {
                *n < r.times
                    && r.method.is_none_or(|m| m == method)
                    && path.contains(&r.path_contains)
            })
            .map(|(r, n)| {
                *n += 1;
                r.fault.clone()
            })
    };
    state.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        range: range.clone(),
        fault: fault.as_ref().map(|f| format!("{f:?}")),
    });
    if let Some(Fault::Hang(d)) = &fault {
        tokio::time::sleep(*d).await;
    }
    if matches!(fault, Some(Fault::ExpireToken)) {
        state.token_generation.fetch_add(1, Ordering::SeqCst);
        return Ok(challenge(&host));
    }
    match &fault {
        Some(Fault::TooMany { retry_after }) => {
            let mut r = empty(StatusCode::TOO_MANY_REQUESTS);
            r.headers_mut()
                .insert("retry-after", retry_after.to_string().parse().unwrap());
            return Ok(r);
        }
        Some(Fault::Status(s)) => return Ok(empty(StatusCode::from_u16(*s).unwrap())),
        _ => {}
    }

    let (parts, body) = req.into_parts();
    let mut upstream = state.http.request(
        parts.method.clone(),
        format!("http://{}{}", state.backend, path),
    );
    for (name, value) in &parts.headers {
        // Host goes through so a registry's upload Location points back at this proxy.
        if !matches!(name.as_str(), "authorization" | "transfer-encoding") {
            upstream = upstream.header(name.as_str(), value.as_bytes());
        }
    }
    // Uploads: the request body streams through.
    let frames = http_body_util::BodyStream::new(body).filter_map(|frame| async move {
        match frame {
            Ok(frame) => frame.into_data().ok().map(Ok::<Bytes, hyper::Error>),
            Err(e) => Some(Err(e)),
        }
    });
    upstream = upstream.body(reqwest::Body::wrap_stream(frames));
    let resp = match upstream.send().await {
        Ok(r) => r,
        Err(_) => return Ok(empty(StatusCode::BAD_GATEWAY)),
    };
    let mut builder = Response::builder().status(resp.status().as_u16());
    for (name, value) in resp.headers() {
        if name.as_str() == "content-length" && matches!(fault, Some(Fault::Truncate { .. })) {
            continue;
        }
        builder = builder.header(name.as_str(), value.as_bytes());
    }
    if let Some(Fault::Truncate { keep }) = fault {
        builder = builder.header(
            "content-length",
            keep.min(resp.content_length().unwrap_or(keep)).to_string(),
        );
    }
    // The body is pumped by a task so a fault can cut a chunk, pause, or end in an error
    // after the bytes before it were sent.
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    tokio::spawn(async move {
        use futures::SinkExt;
        let mut upstream = resp.bytes_stream();
        let mut sent: u64 = 0;
        let mut stalled = false;
        while let Some(chunk) = upstream.next().await {
            let Ok(mut chunk) = chunk else {
                let _ = tx
                    .send(Err(std::io::Error::other("backend body failed")))
                    .await;
                return;
            };
            let start = sent;
            sent += chunk.len() as u64;
            match &fault {
                Some(Fault::ResetMidBody { after }) if sent > *after => {
                    let keep = (*after - start.min(*after)) as usize;
                    let _ = tx.send(Ok(Frame::data(chunk.slice(..keep)))).await;
                    // Let the connection flush what was sent before it is cut.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let _ = tx
                        .send(Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "fault: reset mid-body",
                        )))
                        .await;
                    return;
                }
                Some(Fault::Stall(d)) if !stalled => {
                    // Half of the first chunk, then silence: a stalled link mid-body.
                    stalled = true;
                    let half = chunk.len() / 2;
                    let _ = tx.send(Ok(Frame::data(chunk.slice(..half)))).await;
                    tokio::time::sleep(*d).await;
                    chunk = chunk.slice(half..);
                }
                Some(Fault::Truncate { keep }) if sent > *keep => {
                    let cut = keep.saturating_sub(start) as usize;
                    let _ = tx
                        .send(Ok(Frame::data(chunk.slice(..cut.min(chunk.len())))))
                        .await;
                    return;
                }
                Some(Fault::FlipByte { at }) if (start..sent).contains(at) => {
                    let mut v = chunk.to_vec();
                    v[(*at - start) as usize] ^= 0xff;
                    chunk = Bytes::from(v);
                }
                _ => {}
            }
            while !chunk.is_empty() {
                let piece = chunk.split_to(chunk.len().min(PACE_CHUNK));
                pacer.take(piece.len()).await;
                if tx.send(Ok(Frame::data(piece))).await.is_err() {
                    return;
                }
            }
        }
    });
    let body = rx;
    Ok(builder.body(BodyExt::boxed(StreamBody::new(body))).unwrap())
}
