//! One run per state database at a time: an exclusive advisory lock (`flock`, through std's
//! `File::try_lock`) on `STATE.lock` beside the database. The kernel drops the lock when the
//! holding process dies, however it dies, so a killed run never leaves a stale lock behind;
//! the file keeps the holder's pid and start time only to say who holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Held for the whole run; dropping it (or the process ending) releases the lock.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    pub path: PathBuf,
}

/// The lock file of the state at `state`.
pub fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Take the lock of the state at `state`, or fail at once naming the run that holds it.
pub fn acquire(state: &Path, command: &str) -> Result<RunLock> {
    let path = lock_path(state);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create state directory {}", dir.display()))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            bail!(
                "state {} is in use by another prewarm run{}; not starting a second one (lock {})",
                state.display(),
                if holder.is_empty() {
                    String::new()
                } else {
                    format!(" ({holder})")
                },
                path.display()
            );
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
    // Who holds it, for the message a second run prints; never secrets.
    let who = format!(
        "pid {}, `{command}`, since {}",
        std::process::id(),
        httpdate::fmt_http_date(std::time::SystemTime::now())
    );
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(who.as_bytes()))
        .and_then(|()| file.flush())
        .with_context(|| format!("cannot write lock file {}", path.display()))?;
    Ok(RunLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let dir = std::env::temp_dir().join(format!("prewarm-lock-{}", std::process::id()));
        let state = dir.join("state.db");
        let first = acquire(&state, "refresh").unwrap();
        let err = acquire(&state, "warm").unwrap_err().to_string();
        assert!(err.contains("in use by another prewarm run"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        acquire(&state, "warm").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
