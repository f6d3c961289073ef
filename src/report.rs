//! What a run did, for people (a short summary on stderr) and for machines (the JSON report of
//! `--report FILE`, written atomically so a monitor never reads half a file).
//!
//! The JSON schema is documented in the README ("Report").

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomically;
use crate::progress::human_bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageStatus {
    /// Something was fetched through the cache this run.
    Warmed,
    /// Every blob was warmed by an earlier run (the state says so) and the cache answered a
    /// HEAD for it again. Not "it was there before": a real Quay fetches a blob it lacks from
    /// upstream to answer a HEAD.
    Cached,
    /// `verify`: the cache holds every manifest and blob.
    Present,
    /// `verify`: something is missing (see `missing`).
    Missing,
    Failed,
    /// `copy`/`import`: something was pushed to the destination this run.
    Copied,
    /// `export`: written into the bundle (or assumed present at the far site).
    Exported,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageReport {
    pub reference: String,
    pub digest: Option<String>,
    pub status: ImageStatus,
    /// Bytes moved for this image's blobs in this run.
    pub bytes: u64,
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// `verify`: what the cache does not hold, as `manifest sha256:…` / `blob sha256:…`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// Failed because a registry's rate budget ran out (the budget's message): `refresh`
    /// leaves such an image for its next run. Not in the JSON: `error` says it there.
    #[serde(skip)]
    pub budget_spent: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunSummary {
    pub images: usize,
    pub warmed: usize,
    pub cached: usize,
    pub present: usize,
    pub missing: usize,
    pub failed: usize,
    pub manifests: usize,
    pub blobs: usize,
    pub bytes_planned: u64,
    pub bytes_transferred: u64,
    pub requests: u64,
    pub retries: u64,
    pub resumed: u64,
    /// Blob transfers run: one per (destination repository, blob); one per blob for export.
    #[serde(default)]
    pub transfers: u64,
    /// Blob bytes moved by those transfers (what progress counts as moved).
    #[serde(default)]
    pub bytes_moved: u64,
    #[serde(default)]
    pub copied: usize,
    #[serde(default)]
    pub exported: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub prewarm_version: String,
    pub command: String,
    pub job: String,
    pub cache: Option<String>,
    pub started_at: i64,
    pub duration_seconds: f64,
    pub summary: RunSummary,
    pub images: Vec<ImageReport>,
}

/// How a summary line counts images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    /// warm, verify, refresh: warmed, cached, present, missing.
    Cache,
    /// copy, import: copied and already there.
    Pushed,
    /// export: exported.
    Exported,
}

/// Exit status when some images failed or are missing; bad input is 2 (see `main`).
pub const EXIT_INCOMPLETE: i32 = 1;

/// Who ran, on what, when: the head of a report.
pub struct Header {
    pub command: String,
    pub job: String,
    pub cache: Option<String>,
    pub started_at: i64,
    pub duration_seconds: f64,
}

impl RunReport {
    /// A report from the plan's totals, the run's transport counters and the per-image
    /// outcomes, tallied.
    pub fn new(
        header: Header,
        planned: &crate::plan::Summary,
        stats: &crate::registry::Stats,
        images: Vec<ImageReport>,
    ) -> RunReport {
        use std::sync::atomic::Ordering::Relaxed;
        let mut report = RunReport {
            prewarm_version: env!("CARGO_PKG_VERSION").to_string(),
            command: header.command,
            job: header.job,
            cache: header.cache,
            started_at: header.started_at,
            duration_seconds: header.duration_seconds,
            summary: RunSummary {
                manifests: planned.manifests,
                blobs: planned.blobs,
                bytes_planned: planned.bytes,
                bytes_transferred: stats.bytes.load(Relaxed),
                requests: stats.requests.load(Relaxed),
                retries: stats.retries.load(Relaxed),
                resumed: stats.resumed.load(Relaxed),
                ..RunSummary::default()
            },
            images,
        };
        report.tally();
        report
    }

    /// The transfers the engine ran and the blob bytes they moved.
    pub fn with_moved(mut self, (transfers, bytes_moved): (u64, u64)) -> RunReport {
        self.summary.transfers = transfers;
        self.summary.bytes_moved = bytes_moved;
        self
    }

    pub fn failed(&self) -> impl Iterator<Item = &ImageReport> {
        self.images
            .iter()
            .filter(|i| matches!(i.status, ImageStatus::Failed | ImageStatus::Missing))
    }

    /// Count the statuses into the summary.
    pub fn tally(&mut self) {
        let s = &mut self.summary;
        s.images = self.images.len();
        s.warmed = self
            .images
            .iter()
            .filter(|i| i.status == ImageStatus::Warmed)
            .count();
        s.cached = self
            .images
            .iter()
            .filter(|i| i.status == ImageStatus::Cached)
            .count();
        s.present = self
            .images
            .iter()
            .filter(|i| i.status == ImageStatus::Present)
            .count();
        s.missing = self
            .images
            .iter()
            .filter(|i| i.status == ImageStatus::Missing)
            .count();
        s.copied = self
            .images
            .iter()
            .filter(|i| i.status == ImageStatus::Copied)
            .count();
        s.exported = self
            .images
            .iter()
            .filter(|i| i.status == ImageStatus::Exported)
            .count();
        s.failed = self
            .images
            .iter()
            .filter(|i| i.status == ImageStatus::Failed)
            .count();
    }

    /// The human summary: a line of counts as `kind` reads them, `detail`, then one line per
    /// failed or incomplete image.
    pub fn print_summary(
        &self,
        out: &mut dyn Write,
        kind: Summary,
        detail: &[String],
    ) -> std::io::Result<()> {
        let s = &self.summary;
        let (outcomes, manifests, resumed) = match kind {
            Summary::Cache => (
                format!(
                    "{} warmed, {} confirmed by the cache (warmed before), {} present, {} missing, {} failed",
                    s.warmed, s.cached, s.present, s.missing, s.failed
                ),
                format!("{} manifests, ", s.manifests),
                format!(", {} resumed", s.resumed),
            ),
            Summary::Pushed => (
                format!(
                    "{} copied, {} already there, {} failed",
                    s.copied, s.present, s.failed
                ),
                String::new(),
                String::new(),
            ),
            Summary::Exported => (
                format!("{} exported, {} failed", s.exported, s.failed),
                String::new(),
                String::new(),
            ),
        };
        writeln!(
            out,
            "{}: {} images ({outcomes}); {manifests}{} unique blobs ({} planned), {} blob transfers moved {}, {} transferred in all; {} requests, {} retries{resumed}; {:.1}s",
            self.command,
            s.images,
            s.blobs,
            human_bytes(s.bytes_planned),
            s.transfers,
            human_bytes(s.bytes_moved),
            human_bytes(s.bytes_transferred),
            s.requests,
            s.retries,
            self.duration_seconds
        )?;
        for line in detail {
            writeln!(out, "{line}")?;
        }
        for image in self.failed() {
            match (&image.error, image.missing.is_empty()) {
                (Some(e), _) => writeln!(out, "error: {}: {e}", image.reference)?,
                (None, false) => writeln!(
                    out,
                    "missing: {}: {}",
                    image.reference,
                    image.missing.join(", ")
                )?,
                (None, true) => writeln!(out, "error: {}", image.reference)?,
            }
        }
        Ok(())
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        write_atomically(path, &serde_json::to_vec_pretty(self)?)
    }
}
