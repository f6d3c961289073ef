//! What every command does first: read the job (with an ISC and `--resolve` applied) and
//! build the one transport from it and the shared flags. Below the commands, so refresh and
//! the Quay setup use it too without reaching up into `commands`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;

use crate::args::Global;
use crate::auth::AuthStore;
use crate::job::{Job, ResolveVia};
use crate::registry::{Policy, Registries};

pub fn load(
    job_path: &Path,
    global: &Global,
    resolve: Option<ResolveVia>,
    isc: Option<&Path>,
) -> Result<(Arc<Job>, Registries)> {
    let mut job = crate::sources::isc::load_job(job_path, isc)?;
    if let Some(via) = resolve {
        job.resolve = via;
    }
    let job = Arc::new(job);
    let auth = AuthStore::discover(global.authfile.as_deref())?;
    let registries = Registries::new(job.transport(auth, policy(global)));
    Ok((job, registries))
}

/// The transport policy of `--retries`, `--timeout` and `--retry-after-cap`, for every
/// client of every command.
pub fn policy(global: &Global) -> Policy {
    Policy {
        attempts: global.retries.max(1),
        timeout: std::time::Duration::from_secs(global.timeout.max(1)),
        retry_after_cap: std::time::Duration::from_secs(global.retry_after_cap),
        ..Policy::default()
    }
}
