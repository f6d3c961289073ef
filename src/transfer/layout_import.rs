//! Import from an OCI image layout directory: the layout source ([`LayoutSource`]) into the
//! registry sink on the one scheduler, as copy and bundle import do.
//!
//! Each unique blob is pushed once per destination repository, biggest first, `--jobs` at
//! once: a HEAD first (present only with proof: its digest or its size), then one upload into
//! the first repository that needs it, streamed from its file through a verifying body and
//! retried under `--retries` with the file read again, then cross-repository mounts into the
//! others. As soon as an image's blobs are there, its manifests are pushed byte for byte,
//! children before their index, then its tag. A missing or corrupt file fails the images that
//! need it, naming the file; a rerun finds what is there with HEADs and moves no blob again.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};

use super::copy::{push_image, push_plan};
use super::destination::Destination;
use super::layout_source::{is_layout, LayoutSource, OCI_LAYOUT_FILE};
use super::remote::{done_of, RegistrySink};
use super::scheduler::{Arrangement, Done, Task};
use super::Work;
use crate::bundle::{BundleManifest, MANIFEST_FILE};
use crate::plan::Plan;
use crate::registry::{RegistryClient, RegistryError};
use crate::report::ImageReport;

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
            "{}: neither a bundle (no {MANIFEST_FILE}) nor an OCI image layout (no {OCI_LAYOUT_FILE})",
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
    sink: RegistrySink<'a>,
}

impl Arrangement for LayoutImport<'_> {
    fn stages(&self) -> (bool, bool) {
        (false, true)
    }

    async fn blob(&self, task: &Task, head: Option<&Task>) -> Result<Done, String> {
        let failure = Arc::new(Mutex::new(None));
        let pushed = self
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
                    opened.map_err(|detail| RegistryError::Status {
                        host: self.sink.client.host().to_string(),
                        what: format!("blob `{}`", task.digest),
                        status: 0,
                        detail,
                    })
                },
            )
            .await;
        // The file's fault, naming it, before what the upload made of it.
        if let Some(why) = failure.lock().expect("failure lock").clone() {
            return Err(why);
        }
        let done = done_of(pushed.map_err(|e| e.to_string())?);
        if let Done::Moved(n) = done {
            self.work.reporter.bytes(n);
        }
        Ok(done)
    }

    async fn after(&self, i: usize) -> Result<(), String> {
        let image = &self.plan.images[i];
        push_image(
            &self.sink,
            &self.dest.repository(&image.source),
            image,
            |digest| async move {
                let held = self.source.manifest(&digest).ok_or_else(|| {
                    format!(
                        "{}: not read from the layout",
                        self.source.path(&digest).display()
                    )
                })?;
                Ok(Some((held.bytes.clone(), held.media_type.clone())))
            },
        )
        .await
    }
}

/// Push the layout's planned images into `dest`.
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
        sink: RegistrySink { client: target },
    };
    push_plan(work, "import", plan, dest, &arrangement).await
}
