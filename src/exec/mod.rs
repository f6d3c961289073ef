//! Executors: each takes a [`Plan`] and does one thing with it — `warm` pulls through the
//! cache, `verify` asks the cache what it holds. They share the per-image bookkeeping here so
//! every report has one shape, and one image's failure never stops the others.

pub mod copy;
pub mod destination;
pub mod export;
pub mod import;
pub mod verify;
pub mod warm;

use std::sync::Mutex;

use crate::job::{CacheConfig, Job};
use crate::plan::Plan;
use crate::progress::Reporter;
use crate::reference::Reference;
use crate::registry::Registries;
use crate::report::{ImageReport, ImageStatus};
use crate::state::State;

/// What every executor needs for a run.
pub struct Work<'a> {
    pub job: &'a Job,
    pub registries: &'a Registries,
    pub state: Option<&'a State>,
    pub reporter: &'a dyn Reporter,
    pub jobs: usize,
}

/// The repository on the cache that serves `source`'s repository.
pub fn cache_repository(cache: &CacheConfig, source: &Reference) -> String {
    cache.cache_reference(source).repository().to_string()
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub bytes: u64,
    pub fetched_any: bool,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub missing: Vec<String>,
}

/// Per-image outcomes, filled concurrently by the items of an executor.
pub struct ImageOutcomes(Mutex<Vec<Outcome>>);

/// An image's error names at most this many failed parts; the count says the rest.
const ERRORS_SHOWN: usize = 3;

impl ImageOutcomes {
    pub fn new(plan: &Plan) -> Self {
        ImageOutcomes(Mutex::new(
            (0..plan.images.len()).map(|_| Outcome::default()).collect(),
        ))
    }
    fn with(&self, i: usize, f: impl FnOnce(&mut Outcome)) {
        f(&mut self.0.lock().expect("outcomes lock")[i]);
    }
    pub fn fail(&self, i: usize, error: String) {
        self.with(i, |o| {
            if !o.errors.contains(&error) {
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
                let error = failed.then(|| {
                    let mut e = o.errors[..o.errors.len().min(ERRORS_SHOWN)].join("; ");
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
        }));
        reports
    }
}
