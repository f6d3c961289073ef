//! Progress reporting. Stages call the [`Reporter`] trait and never draw: on a terminal the
//! [`Bars`] reporter shows indicatif bars (bytes, items), elsewhere [`LogLines`] prints a plain
//! line every few seconds (even while one long blob is in flight) so cron logs and CI show a
//! run is alive without a flood.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub trait Reporter: Send + Sync {
    /// A stage starts: `items` things to do, `bytes` to move (0 when unknown).
    fn phase(&self, name: &str, items: u64, bytes: u64);
    fn item_done(&self, label: &str, ok: bool);
    fn bytes(&self, n: u64);
    /// A line worth showing even on a terminal (a failure, a warning).
    fn message(&self, line: &str);
    fn finish_phase(&self);
    /// Images the current phase completes as their last item finishes (warm's blobs).
    fn images(&self, _total: u64) {}
    fn image_done(&self, _ok: bool) {}
}

/// Says nothing.
pub struct Quiet;

impl Reporter for Quiet {
    fn phase(&self, _: &str, _: u64, _: u64) {}
    fn item_done(&self, _: &str, _: bool) {}
    fn bytes(&self, _: u64) {}
    fn message(&self, _: &str) {}
    fn finish_phase(&self) {}
}

/// Plain log lines on stderr: the phase, then a line every [`LOG_EVERY`] while it runs — also
/// while one long blob is in flight and nothing completes — and one at its end.
pub struct LogLines {
    shared: std::sync::Arc<LogShared>,
    ticker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// How often a plain log line says a phase is alive.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

struct LogShared {
    state: Mutex<LogState>,
    /// Wakes the ticker early when the reporter goes away.
    stop: std::sync::Condvar,
    images: AtomicU64,
    images_done: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    moved: AtomicU64,
}

struct LogState {
    name: String,
    items: u64,
    bytes: u64,
    started: Instant,
    last: Instant,
    active: bool,
    stopped: bool,
}

impl Default for LogLines {
    fn default() -> Self {
        let now = Instant::now();
        let shared = std::sync::Arc::new(LogShared {
            state: Mutex::new(LogState {
                name: String::new(),
                items: 0,
                bytes: 0,
                started: now,
                last: now,
                active: false,
                stopped: false,
            }),
            stop: std::sync::Condvar::new(),
            images: AtomicU64::new(0),
            images_done: AtomicU64::new(0),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            moved: AtomicU64::new(0),
        });
        let ticker = {
            let shared = shared.clone();
            std::thread::spawn(move || shared.tick())
        };
        LogLines {
            shared,
            ticker: Mutex::new(Some(ticker)),
        }
    }
}

impl Drop for LogLines {
    fn drop(&mut self) {
        self.shared.state.lock().expect("log state").stopped = true;
        self.shared.stop.notify_all();
        if let Some(t) = self.ticker.lock().expect("ticker").take() {
            let _ = t.join();
        }
    }
}

impl LogShared {
    /// The ticker thread: a line whenever a running phase has been quiet for `LOG_EVERY`.
    fn tick(&self) {
        let mut s = self.state.lock().expect("log state");
        while !s.stopped {
            let wait = LOG_EVERY.saturating_sub(s.last.elapsed());
            if s.active && wait.is_zero() {
                s.last = Instant::now();
                eprintln!("{}", self.line(&s));
                continue;
            }
            s = self
                .stop
                .wait_timeout(s, wait.max(Duration::from_millis(100)))
                .expect("log state")
                .0;
        }
    }

    fn line(&self, s: &LogState) -> String {
        let mut line = format!(
            "{}: {}/{} done",
            s.name,
            self.done.load(Ordering::Relaxed),
            s.items
        );
        let failed = self.failed.load(Ordering::Relaxed);
        if failed > 0 {
            line.push_str(&format!(", {failed} failed"));
        }
        let moved = self.moved.load(Ordering::Relaxed);
        if s.bytes > 0 || moved > 0 {
            line.push_str(&format!(
                ", {} of {} moved",
                human_bytes(moved),
                human_bytes(s.bytes)
            ));
        }
        let images = self.images.load(Ordering::Relaxed);
        if images > 0 {
            line.push_str(&format!(
                ", images {}/{images}",
                self.images_done.load(Ordering::Relaxed)
            ));
        }
        line.push_str(&format!(", {:.1}s", s.started.elapsed().as_secs_f64()));
        line
    }
}

impl Reporter for LogLines {
    fn phase(&self, name: &str, items: u64, bytes: u64) {
        let sh = &self.shared;
        let mut s = sh.state.lock().expect("log state");
        s.name = name.to_string();
        s.items = items;
        s.bytes = bytes;
        s.started = Instant::now();
        s.last = Instant::now();
        s.active = true;
        sh.done.store(0, Ordering::Relaxed);
        sh.failed.store(0, Ordering::Relaxed);
        sh.moved.store(0, Ordering::Relaxed);
        sh.images.store(0, Ordering::Relaxed);
        sh.images_done.store(0, Ordering::Relaxed);
        eprintln!(
            "{name}: {items} to do{}",
            if bytes > 0 {
                format!(", {} to move", human_bytes(bytes))
            } else {
                String::new()
            }
        );
    }
    fn item_done(&self, _: &str, ok: bool) {
        self.shared.done.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.shared.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn bytes(&self, n: u64) {
        self.shared.moved.fetch_add(n, Ordering::Relaxed);
    }
    fn message(&self, line: &str) {
        eprintln!("{line}");
    }
    fn finish_phase(&self) {
        let mut s = self.shared.state.lock().expect("log state");
        s.active = false;
        eprintln!("{}", self.shared.line(&s));
    }
    fn images(&self, total: u64) {
        self.shared.images.store(total, Ordering::Relaxed);
    }
    fn image_done(&self, _ok: bool) {
        self.shared.images_done.fetch_add(1, Ordering::Relaxed);
    }
}

/// indicatif bars on a terminal: one for items, one for bytes, and one for images where a
/// phase completes images.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<Option<(ProgressBar, ProgressBar)>>,
    image_bar: Mutex<Option<ProgressBar>>,
}

impl Default for Bars {
    fn default() -> Self {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(None),
            image_bar: Mutex::new(None),
        }
    }
}

impl Reporter for Bars {
    fn phase(&self, name: &str, items: u64, bytes: u64) {
        let item_bar = self.multi.add(ProgressBar::new(items));
        item_bar.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg}")
                .expect("template")
                .progress_chars("=> "),
        );
        item_bar.set_prefix(name.to_string());
        let byte_bar = self.multi.add(ProgressBar::new(bytes));
        byte_bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        byte_bar.set_prefix("bytes");
        if bytes == 0 {
            byte_bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        item_bar.enable_steady_tick(Duration::from_millis(200));
        *self.bars.lock().expect("bars") = Some((item_bar, byte_bar));
    }
    fn item_done(&self, label: &str, _ok: bool) {
        if let Some((items, _)) = &*self.bars.lock().expect("bars") {
            items.inc(1);
            items.set_message(label.to_string());
        }
    }
    fn bytes(&self, n: u64) {
        if let Some((_, bytes)) = &*self.bars.lock().expect("bars") {
            bytes.inc(n);
        }
    }
    fn message(&self, line: &str) {
        let _ = self.multi.println(line);
    }
    fn finish_phase(&self) {
        if let Some((items, bytes)) = self.bars.lock().expect("bars").take() {
            items.finish_and_clear();
            bytes.finish_and_clear();
        }
        if let Some(images) = self.image_bar.lock().expect("bars").take() {
            images.finish_and_clear();
        }
    }
    fn images(&self, total: u64) {
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len}")
                .expect("template")
                .progress_chars("=> "),
        );
        bar.set_prefix("images");
        *self.image_bar.lock().expect("bars") = Some(bar);
    }
    fn image_done(&self, _ok: bool) {
        if let Some(bar) = &*self.image_bar.lock().expect("bars") {
            bar.inc(1);
        }
    }
}

/// Bars on a terminal, log lines elsewhere, nothing when quiet.
pub fn for_run(quiet: bool) -> Box<dyn Reporter> {
    use std::io::IsTerminal;
    if quiet {
        Box::new(Quiet)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bars::default())
    } else {
        Box::new(LogLines::default())
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
