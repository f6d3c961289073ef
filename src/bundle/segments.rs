//! Segment files: one byte stream (the zstd-compressed tar) cut into files of at most
//! `segment_size` bytes, for media with a file size limit (FAT32, DVD).
//!
//! A segment is written to `.bundle.NNNN.tar.zst.part` while hashed, and synced when full; all
//! keep that name until the whole export has succeeded, when [`publish`] renames them to
//! `bundle.NNNN.tar.zst` just before `bundle.json` is written: an export that fails or is
//! stopped leaves nothing under a final name. Reading chains the segments back into one stream, checking each
//! segment's size and sha256 as it goes; [`verify`] checks them all up front.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest as _, Sha256};

use super::Segment;

/// The smallest `--segment-size` (smaller would mean thousands of files for a small bundle).
pub const MIN_SEGMENT_SIZE: u64 = 1 << 20;

pub fn segment_name(n: usize) -> String {
    format!("bundle.{n:04}.tar.zst")
}

fn part_of(name: &str) -> String {
    format!(".{name}.part")
}

fn part_name(n: usize) -> String {
    part_of(&segment_name(n))
}

/// An io error that names the file it happened on (the OS error kept).
fn on_file(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Rename every finished segment from its temp name to its final name. On failure, every
/// segment (temp or final) is removed and the error names the file and the OS error.
pub fn publish(dir: &Path, segments: &[Segment]) -> Result<()> {
    for s in segments {
        let (from, to) = (dir.join(part_of(&s.name)), dir.join(&s.name));
        if let Err(e) = std::fs::rename(&from, &to) {
            remove_partial(dir);
            bail!("cannot rename {} to {}: {e}", from.display(), to.display());
        }
    }
    Ok(())
}

/// Whether a writer error only says the stream it was fed stopped (not why).
pub fn is_abort(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::ConnectionAborted)
    })
}

/// An export into `dir` failed: remove its segments; the error says so.
pub fn failed(dir: &Path, e: anyhow::Error) -> anyhow::Error {
    remove_partial(dir);
    e.context(format!(
        "export into {} failed; its segments were removed",
        dir.display()
    ))
}

/// Remove the segment files (temp or final) of an export that did not complete.
pub fn remove_partial(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name.trim_start_matches('.').starts_with("bundle.")
                && (name.ends_with(".tar.zst") || name.ends_with(".tar.zst.part"));
            if ours {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Writes one stream into segment files.
pub struct SegmentWriter {
    dir: PathBuf,
    limit: u64,
    current: Option<(File, Sha256, u64)>,
    done: Vec<Segment>,
}

impl SegmentWriter {
    pub fn new(dir: &Path, limit: u64) -> Result<SegmentWriter> {
        if limit == 0 {
            bail!("--segment-size: must be at least 1 byte");
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(SegmentWriter {
            dir: dir.to_path_buf(),
            limit,
            current: None,
            done: Vec::new(),
        })
    }

    fn close_current(&mut self) -> io::Result<()> {
        if let Some((file, hasher, size)) = self.current.take() {
            let n = self.done.len();
            let path = self.dir.join(part_name(n));
            file.sync_all().map_err(|e| on_file(&path, e))?;
            drop(file);
            let name = segment_name(n);
            self.done.push(Segment {
                name,
                size,
                sha256: hex::encode(hasher.finalize()),
            });
        }
        Ok(())
    }

    /// Close the last segment; the list of segments written (still under their temp names:
    /// [`publish`] renames them).
    pub fn finish(mut self) -> io::Result<Vec<Segment>> {
        self.close_current()?;
        Ok(std::mem::take(&mut self.done))
    }
}

impl Write for SegmentWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self
            .current
            .as_ref()
            .is_some_and(|(_, _, size)| *size >= self.limit)
        {
            self.close_current()?;
        }
        if self.current.is_none() {
            let path = self.dir.join(part_name(self.done.len()));
            let file = File::create(&path).map_err(|e| on_file(&path, e))?;
            self.current = Some((file, Sha256::new(), 0));
        }
        let n_done = self.done.len();
        let (file, hasher, size) = self.current.as_mut().expect("current segment");
        let room = (self.limit - *size).min(buf.len() as u64) as usize;
        let n = file
            .write(&buf[..room])
            .map_err(|e| on_file(&self.dir.join(part_name(n_done)), e))?;
        hasher.update(&buf[..n]);
        *size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.current {
            Some((f, _, _)) => f
                .flush()
                .map_err(|e| on_file(&self.dir.join(part_name(self.done.len())), e)),
            None => Ok(()),
        }
    }
}

/// A problem with one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentProblem {
    Missing,
    Truncated { size: u64, expected: u64 },
    TooLong { size: u64, expected: u64 },
    Corrupted { sha256: String },
}

impl std::fmt::Display for SegmentProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SegmentProblem::Missing => write!(f, "missing"),
            SegmentProblem::Truncated { size, expected } => {
                write!(f, "truncated: {size} bytes of {expected}")
            }
            SegmentProblem::TooLong { size, expected } => {
                write!(f, "too long: {size} bytes instead of {expected}")
            }
            SegmentProblem::Corrupted { sha256 } => {
                write!(
                    f,
                    "corrupted: its sha256 is {sha256}, not the one in bundle.json"
                )
            }
        }
    }
}

/// Check every segment's size, then its sha256: every problem, by segment name, in order.
/// Segments are hashed on as many threads as there are cores (a DVD set has dozens).
pub fn verify(dir: &Path, segments: &[Segment]) -> Vec<(String, SegmentProblem)> {
    verify_with(dir, segments, &|_, _| {})
}

/// [`verify`], calling `hashed(segment name, bytes)` as bytes are hashed (for progress lines).
pub fn verify_with(
    dir: &Path,
    segments: &[Segment],
    hashed: &(dyn Fn(&str, u64) + Sync),
) -> Vec<(String, SegmentProblem)> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(segments.len())
        .max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let found = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(s) = segments.get(i) else { return };
                if let Some(p) = check(dir, s, hashed) {
                    found
                        .lock()
                        .expect("problems lock")
                        .push((i, s.name.clone(), p));
                }
            });
        }
    });
    let mut found = found.into_inner().expect("problems lock");
    found.sort_by_key(|(i, _, _)| *i);
    found.into_iter().map(|(_, n, p)| (n, p)).collect()
}

fn check(dir: &Path, s: &Segment, hashed: &(dyn Fn(&str, u64) + Sync)) -> Option<SegmentProblem> {
    let path = dir.join(&s.name);
    let size = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(_) => return Some(SegmentProblem::Missing),
    };
    if size < s.size {
        return Some(SegmentProblem::Truncated {
            size,
            expected: s.size,
        });
    }
    if size > s.size {
        return Some(SegmentProblem::TooLong {
            size,
            expected: s.size,
        });
    }
    match sha256_file(&path, &|n| hashed(&s.name, n)) {
        Ok(h) if h == s.sha256 => None,
        Ok(h) => Some(SegmentProblem::Corrupted { sha256: h }),
        Err(_) => Some(SegmentProblem::Missing),
    }
}

fn sha256_file(path: &Path, hashed: &dyn Fn(u64)) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        hashed(n as u64);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The segments read back as one stream; each segment's size is checked when its end is
/// reached. Its sha256 is not computed again: [`verify`] did that just before, and every blob
/// and manifest read from the stream is checked against its own digest, so bytes changed in
/// between still stop the import (and hashing every byte twice more costs the CPU the upload
/// needs).
pub struct SegmentReader {
    dir: PathBuf,
    segments: Vec<Segment>,
    next: usize,
    current: Option<(File, u64, usize)>,
}

impl SegmentReader {
    pub fn new(dir: &Path, segments: &[Segment]) -> SegmentReader {
        SegmentReader {
            dir: dir.to_path_buf(),
            segments: segments.to_vec(),
            next: 0,
            current: None,
        }
    }
}

impl Read for SegmentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.current.is_none() {
                let Some(s) = self.segments.get(self.next) else {
                    return Ok(0);
                };
                let file = File::open(self.dir.join(&s.name))
                    .map_err(|e| io::Error::new(e.kind(), format!("segment {}: {e}", s.name)))?;
                self.current = Some((file, 0, self.next));
                self.next += 1;
            }
            let (file, read, index) = self.current.as_mut().expect("current segment");
            let n = file.read(buf)?;
            if n > 0 {
                *read += n as u64;
                return Ok(n);
            }
            let s = &self.segments[*index];
            if *read != s.size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "segment {} changed since it was verified: {read} bytes, not {}",
                        s.name, s.size
                    ),
                ));
            }
            self.current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_split_verify_and_read_back() {
        let dir = std::env::temp_dir().join(format!("prewarm-seg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = SegmentWriter::new(&dir, 3000).unwrap();
        for chunk in data.chunks(777) {
            w.write_all(chunk).unwrap();
        }
        let segs = w.finish().unwrap();
        // Nothing under a final name until published.
        assert!(!dir.join(&segs[0].name).exists());
        publish(&dir, &segs).unwrap();
        assert_eq!(segs.len(), 4);
        assert!(segs.iter().all(|s| s.size <= 3000));
        assert_eq!(segs.iter().map(|s| s.size).sum::<u64>(), 10_000);
        assert!(verify(&dir, &segs).is_empty());
        let mut back = Vec::new();
        SegmentReader::new(&dir, &segs)
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);

        // Flip a byte in segment 1, truncate segment 2, remove segment 3.
        let p1 = dir.join(&segs[1].name);
        let mut b = std::fs::read(&p1).unwrap();
        b[5] ^= 1;
        std::fs::write(&p1, b).unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(&segs[2].name))
            .unwrap();
        f.set_len(10).unwrap();
        std::fs::remove_file(dir.join(&segs[3].name)).unwrap();
        let problems = verify(&dir, &segs);
        assert_eq!(problems.len(), 3);
        assert!(matches!(problems[0].1, SegmentProblem::Corrupted { .. }));
        assert_eq!(
            problems[1].1,
            SegmentProblem::Truncated {
                size: 10,
                expected: 3000
            }
        );
        assert_eq!(problems[2], (segs[3].name.clone(), SegmentProblem::Missing));
        assert!(SegmentReader::new(&dir, &segs)
            .read_to_end(&mut Vec::new())
            .is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
