//! The transport against a scripted HTTP peer on loopback: the behaviours a real registry shows
//! only under faults — a body that breaks off (resumed with Range), a bearer token that stops
//! being accepted mid-run (renewed), 503/429 with Retry-After (retried). The full fault matrix
//! against the lab lives with the fault-injecting proxy; this pins the client's half.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prewarm::auth::AuthStore;
use prewarm::job::Endpoint;
use prewarm::reference::Digest;
use prewarm::registry::{BlobSink, Policy, RegistryClient, Stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct Collect(Vec<u8>);

impl BlobSink for Collect {
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.0.extend_from_slice(chunk);
        Ok(())
    }
    fn restart(&mut self) -> std::io::Result<()> {
        self.0.clear();
        Ok(())
    }
}

/// A registry that speaks just enough HTTP/1.1: bearer auth whose first token is refused after
/// two uses, a blob whose first GET breaks off halfway, one 503 with Retry-After.
struct Peer {
    blob: Vec<u8>,
    requests: Mutex<Vec<String>>,
    token_uses: AtomicUsize,
    tokens_issued: AtomicUsize,
    blob_gets: AtomicUsize,
}

async fn serve(peer: Arc<Peer>, listener: TcpListener) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let peer = peer.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut have = 0;
            loop {
                let n = match sock.read(&mut buf[have..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                have += n;
                if buf[0] == 0x16 {
                    return; // a TLS ClientHello: this peer speaks plain HTTP only
                }
                let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                buf.copy_within(end + 4..have, 0);
                have -= end + 4;
                let line = head.lines().next().unwrap_or("").to_string();
                let header = |name: &str| {
                    head.lines()
                        .find(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
                        .map(|l| l.split_once(':').unwrap().1.trim().to_string())
                };
                peer.requests
                    .lock()
                    .unwrap()
                    .push(format!("{line} range={:?}", header("range")));
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let auth = header("authorization").unwrap_or_default();
                let addr = sock.local_addr().unwrap();
                let challenge = format!("Bearer realm=\"http://{addr}/token\",service=\"peer\"");
                let reply: Vec<u8> = if path.starts_with("/token") {
                    let n = peer.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
                    let body = format!("{{\"token\":\"t{n}\",\"expires_in\":300}}");
                    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
                } else if path == "/v2/"
                    || !auth.starts_with("Bearer t")
                    || (auth == "Bearer t1" && peer.token_uses.fetch_add(1, Ordering::SeqCst) >= 2)
                {
                    // The first token "expires" after two uses.
                    format!("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {challenge}\r\nContent-Length: 0\r\n\r\n").into_bytes()
                } else {
                    let n = peer.blob_gets.fetch_add(1, Ordering::SeqCst);
                    let len = peer.blob.len();
                    match (n, header("range")) {
                        (0, _) => b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n".to_vec(),
                        (1, _) => {
                            // Promise the whole body, send half, hang up.
                            let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
                            r.extend_from_slice(&peer.blob[..len / 2]);
                            let _ = sock.write_all(&r).await;
                            return;
                        }
                        (_, Some(range)) => {
                            let start: usize = range.trim_start_matches("bytes=").trim_end_matches('-').parse().unwrap();
                            let mut r = format!(
                                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{len}\r\nContent-Length: {}\r\n\r\n",
                                len - 1,
                                len - start
                            )
                            .into_bytes();
                            r.extend_from_slice(&peer.blob[start..]);
                            r
                        }
                        (_, None) => {
                            let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
                            r.extend_from_slice(&peer.blob);
                            r
                        }
                    }
                };
                if sock.write_all(&reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[tokio::test]
async fn broken_body_resumes_with_range_and_expired_token_is_renewed() {
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let digest = Digest::sha256_of(&blob);
    let peer = Arc::new(Peer {
        blob: blob.clone(),
        requests: Mutex::new(Vec::new()),
        token_uses: AtomicUsize::new(0),
        tokens_issued: AtomicUsize::new(0),
        blob_gets: AtomicUsize::new(0),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(serve(peer.clone(), listener));

    let stats = Arc::new(Stats::default());
    let endpoint = Endpoint {
        address: addr,
        insecure: true,
        ca: None,
    };
    let retry = Policy {
        attempts: 5,
        base_delay: std::time::Duration::from_millis(10),
        ..Policy::default()
    };
    let client = RegistryClient::new(
        "peer.example",
        endpoint,
        AuthStore::default(),
        retry,
        stats.clone(),
    )
    .unwrap();
    let mut sink = Collect(Vec::new());
    let n = client
        .fetch_blob("team/app", &digest, &mut sink, &|_| {})
        .await
        .unwrap();

    assert_eq!(n as usize, blob.len());
    assert_eq!(sink.0, blob);
    assert_eq!(stats.resumed.load(Ordering::SeqCst), 1);
    let requests = peer.requests.lock().unwrap().clone();
    let range = format!("range=Some(\"bytes={}-\")", blob.len() / 2);
    assert!(requests.iter().any(|r| r.contains(&range)), "{requests:#?}");
    assert!(
        peer.tokens_issued.load(Ordering::SeqCst) >= 2,
        "the refused token was renewed: {requests:#?}"
    );
    assert!(
        stats.retries.load(Ordering::SeqCst) >= 2,
        "the 503 and the broken body were retried"
    );
}
