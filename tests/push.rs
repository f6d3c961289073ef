//! The push half of the transport against a scripted HTTP peer on loopback — a faithful test
//! double for what the lab's distribution registries do not show: a bearer token server (to
//! see the scopes asked for), a mount answered 202 ("not mounted, upload here"), and an upload
//! whose bytes do not match their digest. The lab tests (tests/bundle.rs) push into real
//! registries.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use prewarm::auth::{AuthStore, Credentials};
use prewarm::job::Endpoint;
use prewarm::reference::Digest;
use prewarm::registry::{verified_body, ChunkStream, Policy, Pushed, RegistryClient, Stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Default)]
struct Peer {
    /// Request lines, in order.
    requests: Mutex<Vec<String>>,
    /// `scope` parameters of each token request.
    scopes: Mutex<Vec<Vec<String>>>,
    /// The user each token request authenticated as (Basic), with its scopes.
    token_users: Mutex<Vec<(Vec<String>, String)>>,
    /// Bodies of completed blob PUTs.
    uploaded: Mutex<Vec<Vec<u8>>>,
    /// Manifest PUTs: (path, content type, body).
    manifests: Mutex<Vec<(String, String, Vec<u8>)>>,
}

fn query_values(path: &str, key: &str) -> Vec<String> {
    path.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| {
            v.replace("%3A", ":")
                .replace("%2C", ",")
                .replace("%2F", "/")
                .replace('+', " ")
        })
        .collect()
}

async fn serve(peer: Arc<Peer>, listener: TcpListener) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let peer = peer.clone();
        tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::new();
            let mut tmp = vec![0u8; 65536];
            loop {
                let end = loop {
                    if buf.first() == Some(&0x16) {
                        return; // a TLS ClientHello: this peer speaks plain HTTP only
                    }
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break end;
                    }
                    match sock.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                buf.drain(..end + 4);
                let header = |name: &str| {
                    head.lines()
                        .find(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
                        .map(|l| l.split_once(':').unwrap().1.trim().to_string())
                };
                let length: usize = header("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                while buf.len() < length {
                    match sock.read(&mut tmp).await {
                        // A body cut short: the client gave up; nothing is stored.
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let body: Vec<u8> = buf.drain(..length).collect();
                let line = head.lines().next().unwrap_or("").to_string();
                peer.requests.lock().unwrap().push(line.clone());
                let mut parts = line.split_whitespace();
                let (method, path) = (
                    parts.next().unwrap_or(""),
                    parts.next().unwrap_or("").to_string(),
                );
                let addr = sock.local_addr().unwrap();
                let auth = header("authorization").unwrap_or_default();
                let ok = |status: &str, extra: String| {
                    format!("HTTP/1.1 {status}\r\n{extra}Content-Length: 0\r\n\r\n").into_bytes()
                };
                let reply = if path.starts_with("/token") {
                    peer.scopes
                        .lock()
                        .unwrap()
                        .push(query_values(&path, "scope"));
                    let user = auth
                        .strip_prefix("Basic ")
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                        .map(|b| {
                            String::from_utf8_lossy(&b)
                                .split(':')
                                .next()
                                .unwrap_or("")
                                .to_string()
                        })
                        .unwrap_or_default();
                    peer.token_users
                        .lock()
                        .unwrap()
                        .push((query_values(&path, "scope"), user));
                    let body = r#"{"token":"tok","expires_in":300}"#;
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .into_bytes()
                } else if path == "/v2/" || auth != "Bearer tok" {
                    ok("401 Unauthorized", format!("WWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"peer\"\r\n"))
                } else if method == "HEAD" {
                    ok("404 Not Found", String::new())
                } else if method == "POST" && path.contains("mount=") {
                    ok(
                        "202 Accepted",
                        "Location: /v2/dst/app/blobs/uploads/u1?_state=x\r\n".into(),
                    )
                } else if method == "POST" {
                    ok(
                        "202 Accepted",
                        format!("Location: http://{addr}/v2/dst/app/blobs/uploads/u2\r\n"),
                    )
                } else if method == "PUT" && path.contains("/blobs/uploads/") {
                    let digest = query_values(&path, "digest").pop().unwrap_or_default();
                    if Digest::sha256_of(&body).as_str() != digest {
                        ok("400 Bad Request", String::new())
                    } else {
                        peer.uploaded.lock().unwrap().push(body);
                        ok(
                            "201 Created",
                            format!("Docker-Content-Digest: {digest}\r\n"),
                        )
                    }
                } else if method == "PUT" && path.contains("/manifests/") {
                    let digest = Digest::sha256_of(&body);
                    peer.manifests.lock().unwrap().push((
                        path.clone(),
                        header("content-type").unwrap_or_default(),
                        body,
                    ));
                    ok(
                        "201 Created",
                        format!("Docker-Content-Digest: {digest}\r\n"),
                    )
                } else {
                    ok("404 Not Found", String::new())
                };
                if sock.write_all(&reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn stream_of(bytes: &[u8]) -> ChunkStream {
    let chunks: Vec<std::io::Result<Bytes>> = bytes
        .chunks(10_000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

#[tokio::test]
async fn push_asks_push_scopes_uploads_after_a_202_mount_and_never_completes_wrong_bytes() {
    let peer = Arc::new(Peer::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(serve(peer.clone(), listener));
    let endpoint = Endpoint {
        address: addr,
        insecure: true,
        ca: None,
    };
    let retry = Policy {
        attempts: 2,
        base_delay: std::time::Duration::from_millis(5),
        ..Policy::default()
    };
    // Per-repository credentials: `peer.example/dst` for dst/…, the host's for the rest.
    let mut auth = AuthStore::default();
    let user = |name: &str| Credentials {
        username: name.into(),
        password: "pw".into(),
    };
    auth.insert("peer.example", user("host-user"));
    auth.insert("peer.example/dst", user("dst-user"));
    let client = RegistryClient::new(
        "peer.example",
        endpoint,
        auth,
        retry,
        Arc::new(Stats::default()),
    )
    .unwrap();

    let blob: Vec<u8> = (0..100_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let digest = Digest::sha256_of(&blob);
    // A mount the registry declines (202): the blob is uploaded into the session it opened.
    let pushed = client
        .push_blob(
            "dst/app",
            &digest,
            blob.len() as u64,
            Some("src/app"),
            || async {
                Ok(verified_body(digest.clone(), blob.len() as u64, stream_of(&blob), None).0)
            },
        )
        .await
        .unwrap();
    assert_eq!(pushed, Pushed::Uploaded(blob.len() as u64));
    assert_eq!(
        peer.uploaded.lock().unwrap().as_slice(),
        std::slice::from_ref(&blob)
    );
    let scopes = peer.scopes.lock().unwrap().clone();
    assert!(
        scopes
            .iter()
            .any(|s| s.contains(&"repository:dst/app:pull,push".to_string())
                && s.contains(&"repository:src/app:pull".to_string())),
        "the mount asks push on dst and pull on src: {scopes:?}"
    );
    // Tokens are asked with the credentials of the repository they are for.
    assert!(!client
        .head_blob("other/x", &digest, Some(blob.len() as u64))
        .await
        .unwrap()
        .is_present());
    let users = peer.token_users.lock().unwrap().clone();
    let user_for = |scope: &str| {
        users
            .iter()
            .find(|(s, _)| s.contains(&scope.to_string()))
            .map(|(_, u)| u.clone())
    };
    assert_eq!(
        user_for("repository:dst/app:pull,push").as_deref(),
        Some("dst-user"),
        "{users:?}"
    );
    assert_eq!(
        user_for("repository:other/x:pull").as_deref(),
        Some("host-user"),
        "{users:?}"
    );
    let requests = peer.requests.lock().unwrap().clone();
    assert!(
        requests.iter().any(
            |r| r.starts_with("POST /v2/dst/app/blobs/uploads/?mount=sha256:")
                && r.contains("from=src/app")
        ),
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("PUT /v2/dst/app/blobs/uploads/u1?_state=x&digest=sha256:")),
        "{requests:#?}"
    );

    // Bytes that do not hash to the digest: the last chunk is held back, the upload fails,
    // and the registry never receives a complete body.
    let mut wrong = blob.clone();
    wrong[99_999] ^= 1;
    let failure = Arc::new(Mutex::new(None));
    let result = client
        .push_blob("dst/app", &digest, blob.len() as u64, None, || {
            let (body, f) =
                verified_body(digest.clone(), blob.len() as u64, stream_of(&wrong), None);
            *failure.lock().unwrap() = Some(f);
            async move { Ok(body) }
        })
        .await;
    assert!(result.is_err());
    let why = failure
        .lock()
        .unwrap()
        .as_ref()
        .unwrap()
        .lock()
        .unwrap()
        .clone()
        .unwrap();
    assert!(why.contains("digest mismatch"), "{why}");
    assert_eq!(
        peer.uploaded.lock().unwrap().len(),
        1,
        "the wrong bytes were not stored"
    );

    // A manifest goes byte for byte with its media type; the registry's digest must match.
    let manifest = Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#);
    let d = client
        .put_manifest(
            "dst/app",
            "v1",
            "application/vnd.oci.image.manifest.v1+json",
            manifest.clone(),
        )
        .await
        .unwrap();
    assert_eq!(d, Digest::sha256_of(&manifest));
    let m = peer.manifests.lock().unwrap().clone();
    assert_eq!(
        m,
        vec![(
            "/v2/dst/app/manifests/v1".to_string(),
            "application/vnd.oci.image.manifest.v1+json".to_string(),
            manifest.to_vec()
        )]
    );
}
