//! `--metrics FILE`: the run in Prometheus text exposition format, written atomically (a
//! temporary file renamed into place) for node_exporter's textfile collector. Every metric is a
//! gauge describing the last run of a command, labelled with the command (`warm`, `verify`,
//! `refresh`, `copy`, `export`, `import`); the names are documented in the README
//! ("Metrics").

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::fsutil::write_atomically;
use crate::report::RunReport;

/// What a refresh adds to the run's metrics.
#[derive(Debug, Clone, Default)]
pub struct RefreshFigures {
    pub checked: u64,
    pub changed: u64,
    pub skipped: u64,
    pub deferred: u64,
}

/// Everything the metrics file says about one run.
#[derive(Debug, Clone)]
pub struct RunMetrics<'a> {
    pub report: &'a RunReport,
    /// End of the last run of this command that had no failed image (this one if it had none).
    pub last_success: Option<i64>,
    pub finished_at: i64,
    /// Registries whose request budget ran out.
    pub budgets_spent: Vec<String>,
    pub refresh: Option<RefreshFigures>,
}

/// The metric names, in order, as documented.
pub const NAMES: &[&str] = &[
    "prewarm_images",
    "prewarm_images_warmed",
    "prewarm_bytes_transferred",
    "prewarm_cache_hits",
    "prewarm_cache_misses",
    "prewarm_failures",
    "prewarm_requests",
    "prewarm_duration_seconds",
    "prewarm_last_run_timestamp_seconds",
    "prewarm_last_success_timestamp_seconds",
    "prewarm_budget_spent",
    "prewarm_refresh_references",
];

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} gauge");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(self.0, "{name}{{{}}} {value}", labels.join(","));
    }
}

pub fn render(m: &RunMetrics<'_>) -> String {
    let s = &m.report.summary;
    let c = m.report.command.as_str();
    let cmd = [("command", c)];
    let mut o = Out(String::new());
    o.family("prewarm_images", "Images of the last run by outcome.");
    for (status, n) in [
        ("warmed", s.warmed),
        ("cached", s.cached),
        ("present", s.present),
        ("missing", s.missing),
        ("failed", s.failed),
        ("copied", s.copied),
        ("exported", s.exported),
    ] {
        o.sample(
            "prewarm_images",
            &[("command", c), ("status", status)],
            n as f64,
        );
    }
    o.family(
        "prewarm_images_warmed",
        "Images the last run fetched something of through the cache.",
    );
    o.sample("prewarm_images_warmed", &cmd, s.warmed as f64);
    o.family(
        "prewarm_bytes_transferred",
        "Bytes the last run read from registries.",
    );
    o.sample(
        "prewarm_bytes_transferred",
        &cmd,
        s.bytes_transferred as f64,
    );
    o.family(
        "prewarm_cache_hits",
        "Images of the last run the cache already held (cached or present).",
    );
    o.sample("prewarm_cache_hits", &cmd, (s.cached + s.present) as f64);
    o.family(
        "prewarm_cache_misses",
        "Images of the last run the cache lacked something of (warmed or missing).",
    );
    o.sample("prewarm_cache_misses", &cmd, (s.warmed + s.missing) as f64);
    o.family("prewarm_failures", "Images of the last run that failed.");
    o.sample("prewarm_failures", &cmd, s.failed as f64);
    o.family("prewarm_requests", "HTTP requests the last run sent.");
    o.sample("prewarm_requests", &cmd, s.requests as f64);
    o.family("prewarm_duration_seconds", "Wall time of the last run.");
    o.sample("prewarm_duration_seconds", &cmd, m.report.duration_seconds);
    o.family(
        "prewarm_last_run_timestamp_seconds",
        "When the last run finished (Unix time).",
    );
    o.sample(
        "prewarm_last_run_timestamp_seconds",
        &cmd,
        m.finished_at as f64,
    );
    o.family(
        "prewarm_last_success_timestamp_seconds",
        "When the last run with no failed image finished (Unix time); 0 if none yet.",
    );
    o.sample(
        "prewarm_last_success_timestamp_seconds",
        &cmd,
        m.last_success.unwrap_or(0) as f64,
    );
    o.family(
        "prewarm_budget_spent",
        "1 for each registry whose request budget ran out in the last run.",
    );
    for host in &m.budgets_spent {
        o.sample(
            "prewarm_budget_spent",
            &[("command", c), ("registry", host)],
            1.0,
        );
    }
    if let Some(r) = &m.refresh {
        o.family(
            "prewarm_refresh_references",
            "References of the last refresh: checked upstream, changed, skipped (pinned or immutable), deferred (budget).",
        );
        for (what, n) in [
            ("checked", r.checked),
            ("changed", r.changed),
            ("skipped", r.skipped),
            ("deferred", r.deferred),
        ] {
            o.sample(
                "prewarm_refresh_references",
                &[("command", c), ("kind", what)],
                n as f64,
            );
        }
    }
    o.0
}

pub fn write(path: &Path, m: &RunMetrics<'_>) -> Result<()> {
    write_atomically(path, render(m).as_bytes())
}
