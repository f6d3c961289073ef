//! The transfer engine: sources, sinks and one scheduler, with warm, verify, copy, export and
//! import as thin arrangements of them (in the spirit of go-containerregistry's `remote`,
//! `layout` and `tarball` under `crane`).
//!
//! - Sources: a registry ([`remote`]: manifests and blobs by digest, Range-resumed, verified
//!   while streaming), a bundle ([`bundle_source`]: segments → zstd → tar in stream order), an
//!   OCI image layout directory ([`layout_source`]: `index.json` entries named by their
//!   `ref.name` or `--repository`, nested indexes followed, every manifest and blob file
//!   verified by size and sha256, blobs while streaming).
//! - Sinks: a pull-through cache (read fully, verify, discard: [`warm`]), a registry
//!   ([`remote`]: HEAD, mount, upload, manifest PUT, tag; [`manifest_push`]: each manifest
//!   once per repository in a run, tags after every image's manifests), a bundle writer ([`bundle_sink`]:
//!   tar → zstd → segments through a bounded reorder buffer), an OCI image layout directory
//!   ([`layout_sink`]), and presence checks ([`verify`]).
//! - [`scheduler`]: each unique blob once per destination, biggest first, `--jobs` at once for
//!   every executor, per-digest chains, failures to the images that need them, manifests and
//!   blobs pipelined per image.
//!
//! - Import reads a bundle ([`import`]) or an OCI image layout ([`layout_import`]) into the
//!   registry sink.
//!
//! Every executor reports through [`ImageOutcomes`], so every report has one shape, and one
//! image's failure never stops the others.

pub mod bundle_sink;
pub mod bundle_source;
pub mod copy;
pub mod destination;
pub mod error;
pub mod export;
pub mod import;
pub mod layout_import;
pub mod layout_sink;
pub mod layout_source;
pub mod manifest_push;
pub mod remote;
pub mod scheduler;
pub mod verify;
pub mod warm;

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::job::{CacheConfig, Job};
use crate::plan::Plan;
use crate::progress::Reporter;
use crate::reference::{Digest, Reference};
use crate::registry::Registries;
use crate::report::{ImageReport, ImageStatus};
use crate::state::State;
pub use error::TransferError;
use scheduler::{Done, Task};

/// What every executor needs for a run.
pub struct Work<'a> {
    pub job: &'a Job,
    pub registries: &'a Registries,
    pub state: Option<&'a State>,
    pub reporter: &'a dyn Reporter,
    pub jobs: usize,
    /// What the scheduler ran, for the report.
    pub totals: &'a Totals,
}

/// Blob transfers run and blob bytes moved by a run (the report's `transfers` and
/// `bytes_moved`; the same numbers progress counts).
#[derive(Debug, Default)]
pub struct Totals {
    pub transfers: std::sync::atomic::AtomicU64,
    pub bytes_moved: std::sync::atomic::AtomicU64,
}

impl Totals {
    /// (transfers, bytes moved).
    pub fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.transfers.load(Relaxed), self.bytes_moved.load(Relaxed))
    }
}

impl Work<'_> {
    /// Run `tasks` for `images` images on the scheduler, as one progress phase moving at most
    /// `bytes`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn schedule<A: scheduler::Arrangement>(
        &self,
        phase: &str,
        bytes: u64,
        arrangement: &A,
        images: usize,
        tasks: Vec<Task>,
        chain: scheduler::Chain,
        outcomes: &ImageOutcomes,
    ) {
        self.reporter.phase(phase, tasks.len() as u64, bytes);
        let moved = scheduler::run(
            arrangement,
            images,
            tasks,
            chain,
            self.jobs,
            outcomes,
            self.reporter,
        )
        .await;
        use std::sync::atomic::Ordering::Relaxed;
        self.totals.transfers.fetch_add(moved.0, Relaxed);
        self.totals.bytes_moved.fetch_add(moved.1, Relaxed);
        self.reporter.finish_phase();
    }
}

/// The repository on the cache that serves `source`'s repository.
pub fn cache_repository(cache: &CacheConfig, source: &Reference) -> String {
    cache.cache_reference(source).repository().to_string()
}

/// Every (destination repository, blob) pair of the plan, with the images needing it,
/// biggest first; `repository_of(i)` is image `i`'s destination repository.
pub(crate) fn pair_tasks(plan: &Plan, repository_of: impl Fn(usize) -> String) -> Vec<Task> {
    let sizes: BTreeMap<&Digest, u64> = plan.blobs.iter().map(|b| (&b.digest, b.size)).collect();
    let mut tasks: BTreeMap<(String, Digest), Task> = BTreeMap::new();
    for (i, image) in plan.images.iter().enumerate() {
        let repository = repository_of(i);
        for digest in &image.blobs {
            tasks
                .entry((repository.clone(), digest.clone()))
                .or_insert_with(|| Task {
                    repository: repository.clone(),
                    digest: digest.clone(),
                    size: sizes.get(digest).copied().unwrap_or(0),
                    images: Vec::new(),
                })
                .images
                .push(i);
        }
    }
    let mut tasks: Vec<Task> = tasks.into_values().collect();
    scheduler::biggest_first(&mut tasks);
    tasks
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub bytes: u64,
    pub fetched_any: bool,
    pub errors: Vec<TransferError>,
    pub warnings: Vec<String>,
    pub missing: Vec<String>,
}

/// Per-image outcomes, filled concurrently by the items of an executor.
pub struct ImageOutcomes(Mutex<Vec<Outcome>>);

/// An image's error names at most this many failed parts; the count says the rest.
const ERRORS_SHOWN: usize = 3;

impl ImageOutcomes {
    pub fn new(plan: &Plan) -> Self {
        Self::with_images(plan.images.len())
    }
    pub fn with_images(n: usize) -> Self {
        ImageOutcomes(Mutex::new((0..n).map(|_| Outcome::default()).collect()))
    }
    /// One task's result, for every image that needs its blob.
    pub fn record(&self, images: &[usize], digest: &Digest, result: &Result<Done, TransferError>) {
        for &i in images {
            match result {
                Ok(Done::Moved(n)) => self.fetched(i, *n),
                Ok(Done::Mounted) => self.fetched(i, 0),
                Ok(Done::Present | Done::Confirmed) => {}
                Ok(Done::Missing) => self.missing(i, format!("blob {digest}")),
                Err(e) => self.fail(i, e.clone()),
            }
        }
    }
    fn with(&self, i: usize, f: impl FnOnce(&mut Outcome)) {
        f(&mut self.0.lock().expect("outcomes lock")[i]);
    }
    pub fn fail(&self, i: usize, error: TransferError) {
        self.with(i, |o| {
            // The same failure reached through two tasks is told once.
            let text = error.to_string();
            if !o.errors.iter().any(|e| e.to_string() == text) {
                o.errors.push(error)
            }
        });
    }
    pub fn warn(&self, i: usize, warning: String) {
        self.with(i, |o| o.warnings.push(warning));
    }
    pub fn fetched(&self, i: usize, bytes: u64) {
        self.with(i, |o| {
            o.bytes += bytes;
            o.fetched_any = true;
        });
    }
    pub fn has_failed(&self, i: usize) -> bool {
        !self.0.lock().expect("outcomes lock")[i].errors.is_empty()
    }
    pub fn missing(&self, i: usize, what: String) {
        self.with(i, |o| o.missing.push(what));
    }

    /// One report per planned image (status from `status` unless it failed), then one per
    /// source the plan could not resolve.
    pub fn into_reports(
        self,
        plan: &Plan,
        status: impl Fn(&Outcome) -> ImageStatus,
    ) -> Vec<ImageReport> {
        let outcomes = self.0.into_inner().expect("outcomes lock");
        let mut reports: Vec<ImageReport> = plan
            .images
            .iter()
            .zip(outcomes)
            .map(|(image, o)| {
                let failed = !o.errors.is_empty();
                // Where the typed errors become the report's text.
                let budget_spent = o
                    .errors
                    .iter()
                    .find_map(TransferError::budget_spent)
                    .map(|e| e.to_string());
                let error = failed.then(|| {
                    let shown: Vec<String> = o.errors[..o.errors.len().min(ERRORS_SHOWN)]
                        .iter()
                        .map(TransferError::to_string)
                        .collect();
                    let mut e = shown.join("; ");
                    if o.errors.len() > ERRORS_SHOWN {
                        e.push_str(&format!("; and {} more", o.errors.len() - ERRORS_SHOWN));
                    }
                    e
                });
                ImageReport {
                    reference: image.source.to_string(),
                    digest: Some(image.digest.to_string()),
                    status: if failed {
                        ImageStatus::Failed
                    } else {
                        status(&o)
                    },
                    bytes: o.bytes,
                    origin: image.origin.clone(),
                    error,
                    warnings: o.warnings,
                    missing: o.missing,
                    budget_spent,
                }
            })
            .collect();
        reports.extend(plan.failures.iter().map(|f| ImageReport {
            reference: f.reference.clone(),
            digest: None,
            status: ImageStatus::Failed,
            bytes: 0,
            origin: f.origin.clone(),
            error: Some(f.error.clone()),
            warnings: Vec::new(),
            missing: Vec::new(),
            budget_spent: f.budget_spent.clone(),
        }));
        reports
    }
}
