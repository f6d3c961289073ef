//! A TCP shaping proxy on loopback, for the WAN-shaped benchmark: each request reaches the
//! upstream `latency` later than it was sent, and the upstream's answers come back no faster
//! than a per-connection rate and (optionally) a rate shared by all connections.
//!
//! It works on bytes, not HTTP, so it shapes whatever runs over it (plain HTTP between a
//! distribution pull-through proxy and its upstream, in `bench/wan.sh`).
//!
//! - Latency: every client→server chunk is held in a delay line until `latency` after it was
//!   read. Requests are small, so each request/response round trip is `latency` longer, as on
//!   a WAN whose round trip is that much longer; the delay line keeps pipelined data flowing.
//! - Bandwidth: server→client chunks pass a token bucket per connection (a single TCP flow over
//!   a long round trip is window-limited) and, if set, one bucket shared by all connections
//!   (the link). The buckets allow a burst of 10 ms of traffic (at least one read's worth).
//!
//! Loopback only: the listen and upstream addresses must both be loopback addresses.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How much one read takes from a socket.
const CHUNK: usize = 16 * 1024;
/// Chunks in flight in the delay line of one connection: 4 MiB, enough for any request.
const DELAY_LINE: usize = 256;

/// How to shape.
#[derive(Debug, Clone, Copy)]
pub struct ShapeOptions {
    /// Where the traffic goes.
    pub upstream: SocketAddr,
    /// Added to every client→server chunk.
    pub latency: Duration,
    /// Server→client bytes per second of each connection (None: no cap).
    pub rate: Option<u64>,
    /// Server→client bytes per second of all connections together (None: no cap).
    pub total_rate: Option<u64>,
}

/// A token bucket kept as a "theoretical arrival time" (GCRA): sending `n` bytes moves it
/// `n / rate` on from now or from where it was; the bytes may go once it is no more than the
/// burst ahead of now.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: Duration,
    tat: Instant,
}

impl Bucket {
    fn new(rate: u64) -> Self {
        let rate = rate.max(1) as f64;
        Bucket {
            rate,
            burst: Duration::from_secs_f64((rate / 100.0).max(CHUNK as f64) / rate),
            tat: Instant::now(),
        }
    }

    /// Account for `n` bytes; returns when they may be sent.
    fn reserve(&mut self, n: usize, now: Instant) -> Instant {
        self.tat = self.tat.max(now) + Duration::from_secs_f64(n as f64 / self.rate);
        self.tat.checked_sub(self.burst).unwrap_or(now).max(now)
    }
}

/// Binds `listen` (loopback only; port 0 picks one) and checks that `upstream` is loopback.
pub async fn bind(listen: SocketAddr, options: &ShapeOptions) -> Result<TcpListener> {
    for (what, addr) in [("--listen", listen), ("--upstream", options.upstream)] {
        ensure!(
            addr.ip().is_loopback(),
            "{what} {addr}: the shaping proxy works on loopback addresses only"
        );
    }
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
}

/// Accepts and shapes connections until the process ends.
pub async fn serve(listener: TcpListener, options: ShapeOptions) -> Result<()> {
    let total = options
        .total_rate
        .map(|r| Arc::new(Mutex::new(Bucket::new(r))));
    loop {
        let (client, peer) = listener.accept().await.context("accept")?;
        let total = total.clone();
        tokio::spawn(async move {
            if let Err(e) = shape_connection(client, &options, total).await {
                tracing::debug!(%peer, "shaped connection ended: {e:#}");
            }
        });
    }
}

/// Exits the process once its parent is gone (it is then re-parented), so a shaper started
/// by a script never outlives it. SIGTERM ends it by the default action.
pub fn exit_when_orphaned() {
    let parent = std::os::unix::process::parent_id();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if std::os::unix::process::parent_id() != parent {
                std::process::exit(0);
            }
        }
    });
}

async fn shape_connection(
    client: TcpStream,
    options: &ShapeOptions,
    total: Option<Arc<Mutex<Bucket>>>,
) -> Result<()> {
    let server = TcpStream::connect(options.upstream)
        .await
        .with_context(|| format!("cannot connect to {}", options.upstream))?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::try_join!(
        delayed(client_read, server_write, options.latency),
        throttled(
            server_read,
            client_write,
            options.rate.map(Bucket::new),
            total
        ),
    )?;
    Ok(())
}

/// Client→server through a delay line: a reader stamps each chunk, a writer sends it when its
/// time has come; end of input is passed on as a half-close.
async fn delayed(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, latency: Duration) -> Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(DELAY_LINE);
    let reader = async move {
        loop {
            let mut chunk = vec![0u8; CHUNK];
            let n = from.read(&mut chunk).await.context("reading the client")?;
            if n == 0 {
                return Ok::<_, anyhow::Error>(());
            }
            chunk.truncate(n);
            if tx.send((Instant::now() + latency, chunk)).await.is_err() {
                return Ok(());
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            to.write_all(&chunk).await.context("writing the upstream")?;
        }
        to.shutdown().await.ok();
        Ok(())
    };
    tokio::try_join!(reader, writer)?;
    Ok(())
}

/// Server→client, each chunk waiting for both buckets.
async fn throttled(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut own: Option<Bucket>,
    total: Option<Arc<Mutex<Bucket>>>,
) -> Result<()> {
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = from
            .read(&mut chunk)
            .await
            .context("reading the upstream")?;
        if n == 0 {
            to.shutdown().await.ok();
            return Ok(());
        }
        let now = Instant::now();
        let mut due = now;
        if let Some(bucket) = own.as_mut() {
            due = due.max(bucket.reserve(n, now));
        }
        if let Some(total) = &total {
            let at = total.lock().expect("bucket lock poisoned").reserve(n, now);
            due = due.max(at);
        }
        tokio::time::sleep_until(due).await;
        to.write_all(&chunk[..n])
            .await
            .context("writing the client")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that answers each line it reads with `size` bytes of a pattern.
    async fn upstream(size: usize) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
                    let mut byte = [0u8; 1];
                    while socket.read_exact(&mut byte).await.is_ok() {
                        if byte[0] == b'\n' && socket.write_all(&body).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn shaper(options: ShapeOptions) -> SocketAddr {
        let listener = bind("127.0.0.1:0".parse().unwrap(), &options)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, options));
        addr
    }

    /// One request through the shaper: how long until all `size` bytes came back, unchanged.
    async fn request(stream: &mut TcpStream, size: usize) -> Duration {
        let start = Instant::now();
        stream.write_all(b"\n").await.unwrap();
        let mut got = vec![0u8; size];
        stream.read_exact(&mut got).await.unwrap();
        let expected: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        assert!(got == expected, "the shaper changed the bytes");
        start.elapsed()
    }

    #[tokio::test]
    async fn each_request_waits_the_latency() {
        let options = ShapeOptions {
            upstream: upstream(10).await,
            latency: Duration::from_millis(150),
            rate: None,
            total_rate: None,
        };
        let mut stream = TcpStream::connect(shaper(options).await).await.unwrap();
        for _ in 0..3 {
            let took = request(&mut stream, 10).await;
            assert!(
                took >= Duration::from_millis(150),
                "a request took {took:?}"
            );
        }
    }

    #[tokio::test]
    async fn answers_come_no_faster_than_the_rate() {
        // 256 KiB at 512 KiB/s: at least half a second less the burst (16 KiB, 31 ms).
        let size = 256 * 1024;
        let options = ShapeOptions {
            upstream: upstream(size).await,
            latency: Duration::ZERO,
            rate: Some(512 * 1024),
            total_rate: None,
        };
        let mut stream = TcpStream::connect(shaper(options).await).await.unwrap();
        let took = request(&mut stream, size).await;
        assert!(took >= Duration::from_millis(460), "256 KiB took {took:?}");
    }

    #[tokio::test]
    async fn the_total_rate_is_shared_by_connections() {
        // Two connections of 128 KiB each share 512 KiB/s: together at least half a second.
        let size = 128 * 1024;
        let options = ShapeOptions {
            upstream: upstream(size).await,
            latency: Duration::ZERO,
            rate: None,
            total_rate: Some(512 * 1024),
        };
        let addr = shaper(options).await;
        let start = Instant::now();
        let fetch = || async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            request(&mut s, size).await
        };
        tokio::join!(fetch(), fetch());
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(460),
            "2 × 128 KiB took {took:?}"
        );
    }

    #[tokio::test]
    async fn refuses_addresses_off_loopback() {
        let options = ShapeOptions {
            upstream: "10.0.0.1:5000".parse().unwrap(),
            latency: Duration::ZERO,
            rate: None,
            total_rate: None,
        };
        let err = bind("127.0.0.1:0".parse().unwrap(), &options)
            .await
            .unwrap_err();
        assert!(
            format!("{err}").contains("--upstream 10.0.0.1:5000"),
            "{err}"
        );
    }
}
