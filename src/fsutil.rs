//! Files that readers must see whole or not at all: reports, metrics, signatures, pull
//! secrets. Below every other module so sources, commands and Quay setup can share it.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Write to a temporary file beside `path`, then rename: readers see the old file or the new
/// one, never a part. A failure leaves `path` as it was and no temporary file behind.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with_mode(path, bytes, 0o666)
}

/// [`write_atomically`] for secrets (pull secrets): the file is created readable by its owner
/// only, so it is never world-readable even for the instant before a rename.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with_mode(path, bytes, 0o600)
}

fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}
