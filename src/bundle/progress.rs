//! Import progress for logs: when stderr is not a terminal (a cron job, a pipe, `nohup`),
//! a plain line every [`EVERY`] saying what the import is doing — verifying which segment,
//! uploading which blob, how many bytes — so an import of hours is never silent.
//!
//! The import updates one process-wide activity record ([`set`], [`blob`], [`bytes`]); the
//! ticker started by [`start`] prints it.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::progress::human_bytes;

/// How often a line is printed.
pub const EVERY: Duration = Duration::from_secs(2);

struct Activity {
    /// What is being done, e.g. `verifying segments` or `blob sha256:… (12.0 MiB)`.
    doing: Mutex<String>,
    /// Bytes of the current step (hashed, or read from the bundle).
    bytes: AtomicU64,
    /// Bytes the current step will take, when known.
    total: AtomicU64,
    /// Bytes of the current blob.
    item: AtomicU64,
}

/// Whether a ticker prints (then a new step is printed at once too).
static ACTIVE: AtomicBool = AtomicBool::new(false);
static STARTED: Mutex<Option<(&'static str, Instant)>> = Mutex::new(None);

static ACTIVITY: Activity = Activity {
    doing: Mutex::new(String::new()),
    bytes: AtomicU64::new(0),
    total: AtomicU64::new(0),
    item: AtomicU64::new(0),
};

/// A new step of `total` bytes (0: none to count).
pub fn step(doing: impl Into<String>, total: u64) {
    *ACTIVITY.doing.lock().expect("activity") = doing.into();
    ACTIVITY.bytes.store(0, Ordering::Relaxed);
    ACTIVITY.total.store(total, Ordering::Relaxed);
    ACTIVITY.item.store(0, Ordering::Relaxed);
    if ACTIVE.load(Ordering::Relaxed) {
        if let Some((command, started)) = *STARTED.lock().expect("activity") {
            eprintln!("{}", line(command, started));
        }
    }
}

/// A new step with no bytes to count.
pub fn set(doing: impl Into<String>) {
    step(doing, 0);
}

/// The blob now read from the bundle.
pub fn blob(label: impl Into<String>) {
    *ACTIVITY.doing.lock().expect("activity") = label.into();
    ACTIVITY.item.store(0, Ordering::Relaxed);
}

/// `n` more bytes of the current step (and blob).
pub fn bytes(n: u64) {
    ACTIVITY.bytes.fetch_add(n, Ordering::Relaxed);
    ACTIVITY.item.fetch_add(n, Ordering::Relaxed);
}

fn line(command: &str, started: Instant) -> String {
    let doing = ACTIVITY.doing.lock().expect("activity").clone();
    let (done, total, item) = (
        ACTIVITY.bytes.load(Ordering::Relaxed),
        ACTIVITY.total.load(Ordering::Relaxed),
        ACTIVITY.item.load(Ordering::Relaxed),
    );
    let mut s = format!("{command}: {doing}");
    if item > 0 && item != done {
        s.push_str(&format!(", {} of it", human_bytes(item)));
    }
    if total > 0 {
        s.push_str(&format!(
            "; {} of {}",
            human_bytes(done),
            human_bytes(total)
        ));
    } else if done > 0 {
        s.push_str(&format!("; {}", human_bytes(done)));
    }
    s.push_str(&format!(", {:.0}s", started.elapsed().as_secs_f64()));
    s
}

/// Prints a line every [`EVERY`] while alive (only when stderr is not a terminal and the run
/// is not quiet: a terminal has the progress bars).
pub struct Ticker(Option<tokio::task::JoinHandle<()>>);

pub fn start(command: &'static str, quiet: bool) -> Ticker {
    if quiet || std::io::stderr().is_terminal() {
        return Ticker(None);
    }
    let started = Instant::now();
    *STARTED.lock().expect("activity") = Some((command, started));
    ACTIVE.store(true, Ordering::Relaxed);
    Ticker(Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            eprintln!("{}", line(command, started));
        }
    })))
}

impl Drop for Ticker {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            ACTIVE.store(false, Ordering::Relaxed);
            t.abort();
        }
    }
}
