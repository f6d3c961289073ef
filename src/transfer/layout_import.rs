//! Import from an OCI image layout directory: the layout source ([`LayoutSource`]) into the
//! registry sink on the one scheduler, as copy and bundle import do.
//!
//! Each unique blob is pushed once per destination repository, biggest first, `--jobs` at
//! once: a HEAD first (present only with proof: its digest or its size), then one upload into
//! the first repository that needs it, streamed from its file through a verifying body and
//! retried under `--retries` with the file read again, then cross-repository mounts into the
//! others. As soon as an image's blobs are there, its manifests are pushed byte for byte by
//! digest, children before their index, each once per repository in a run; the tags of the
//! images that arrived whole come last (see [`super::manifest_push`]). A missing or corrupt file fails the
//! images that need it, naming the file; a rerun finds what is there with HEADs and moves no
//! blob again.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};

use super::copy::{push_plan, pushed_status};
use super::destination::Destination;
use super::layout_source::{is_layout, LayoutSource, OCI_LAYOUT_FILE};
use super::manifest_push::ManifestPush;
use super::remote::{done_of, RegistrySink};
use super::scheduler::{Arrangement, Done, Task};
use super::Work;
use crate::bundle::{BundleManifest, MANIFEST_FILE};
use crate::plan::Plan;
use crate::registry::{RegistryClient, RegistryError};
use crate::report::ImageReport;
use crate::transfer::TransferError;

/// What `import DIR` reads.
pub enum ImportSource {
    /// A prewarm bundle (`bundle.json` and its segments).
    Bundle(BundleManifest),
    /// An OCI image layout (an `oci-layout` file) and its images as a plan.
    Layout(LayoutSource, Plan),
}

/// Open DIR as an OCI image layout when it has an `oci-layout` file, else as a bundle when it
/// has `bundle.json`; an error when it is neither. `repository` is `--repository`.
pub fn open(dir: &Path, repository: Option<&str>) -> Result<ImportSource> {
    if is_layout(dir) {
        let (source, plan) = LayoutSource::open(dir, repository)?;
        return Ok(ImportSource::Layout(source, plan));
    }
    if !dir.join(MANIFEST_FILE).is_file() {
        bail!(
            "{}: not a bundle (no {MANIFEST_FILE}) and not an OCI image layout (no {OCI_LAYOUT_FILE})",
            dir.display(),
        );
    }
    if repository.is_some() {
        bail!(
            "--repository names the images of an OCI image layout; {} is a bundle",
            dir.display()
        );
    }
    Ok(ImportSource::Bundle(BundleManifest::load(dir)?))
}

struct LayoutImport<'a> {
    work: &'a Work<'a>,
    plan: &'a Plan,
    dest: &'a Destination,
    source: &'a LayoutSource,
    push: ManifestPush<'a>,
}

impl Arrangement for LayoutImport<'_> {
    fn stages(&self) -> (bool, bool) {
        (false, true)
    }

    async fn blob(&self, task: &Task, head: Option<&Task>) -> Result<Done, TransferError> {
        let failure = Arc::new(Mutex::new(None));
        let pushed = self
            .push
            .sink
            .push_blob(
                &task.repository,
                &task.digest,
                task.size,
                head.map(|h| h.repository.as_str()),
                || async {
                    // A file found wrong once is wrong again: stop instead of retrying it.
                    let known = failure.lock().expect("failure lock").clone();
                    let opened = match known {
                        Some(why) => Err(why),
                        None => self.source.blob(&task.digest, task.size, &failure),
                    };
                    opened.map_err(|e| RegistryError::Source {
                        what: format!("blob `{}`", task.digest),
                        detail: e.to_string(),
                    })
                },
            )
            .await;
        // The file's fault, naming it, before what the upload made of it.
        if let Some(why) = failure.lock().expect("failure lock").clone() {
            return Err(why);
        }
        let done = done_of(pushed?);
        if let Done::Moved(n) = done {
            self.work.reporter.bytes(n);
        }
        Ok(done)
    }

    /// The image's manifests by digest, children before their index, each pushed once per
    /// repository in a run (its tag comes after every image's manifests).
    async fn after(&self, i: usize) -> Result<(), TransferError> {
        let image = &self.plan.images[i];
        let repository = self.dest.repository(&image.source);
        self.push
            .image(&repository, &image.manifests, |digest| async move {
                let held = self
                    .source
                    .manifest(&digest)
                    .ok_or_else(|| TransferError::Layout {
                        path: self.source.path(&digest),
                        why: "not read from the layout".into(),
                    })?;
                Ok(Some((held.bytes.clone(), held.media_type.clone())))
            })
            .await
    }
}

/// Push the layout's planned images into `dest`: blobs and manifests by digest on the
/// scheduler, then the tags of the images that arrived whole (see [`super::manifest_push`]).
pub async fn import(
    work: &Work<'_>,
    source: &LayoutSource,
    plan: &Plan,
    dest: &Destination,
    target: &RegistryClient,
) -> Vec<ImageReport> {
    let arrangement = LayoutImport {
        work,
        plan,
        dest,
        source,
        push: ManifestPush::new(RegistrySink { client: target }),
    };
    let outcomes = push_plan(work, "import", plan, dest, &arrangement).await;
    let push = &arrangement.push;
    push.tags(plan, dest, &outcomes, work.jobs).await;
    outcomes.into_reports(plan, pushed_status)
}
