//! Segment files: one byte stream (the zstd-compressed tar) cut into files of at most
//! `segment_size` bytes, for media with a file size limit (FAT32, DVD).
//!
//! A segment is written to `.bundle.NNNN.tar.zst.part` while hashed, then synced and renamed
//! to `bundle.NNNN.tar.zst` only when complete: a name without `.part` is always a whole,
//! checksummed segment. Reading chains the segments back into one stream, checking each
//! segment's size and sha256 as it goes; [`verify`] checks them all up front.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest as _, Sha256};

use super::Segment;

pub fn segment_name(n: usize) -> String {
    format!("bundle.{n:04}.tar.zst")
}

fn part_name(n: usize) -> String {
    format!(".{}.part", segment_name(n))
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
            file.sync_all()?;
            drop(file);
            let n = self.done.len();
            let name = segment_name(n);
            std::fs::rename(self.dir.join(part_name(n)), self.dir.join(&name))?;
            self.done.push(Segment {
                name,
                size,
                sha256: hex::encode(hasher.finalize()),
            });
        }
        Ok(())
    }

    /// Close the last segment; the list of segments written.
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
            self.current = Some((File::create(&path)?, Sha256::new(), 0));
        }
        let (file, hasher, size) = self.current.as_mut().expect("current segment");
        let room = (self.limit - *size).min(buf.len() as u64) as usize;
        let n = file.write(&buf[..room])?;
        hasher.update(&buf[..n]);
        *size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.current {
            Some((f, _, _)) => f.flush(),
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
                if let Some(p) = check(dir, s) {
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

fn check(dir: &Path, s: &Segment) -> Option<SegmentProblem> {
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
    match sha256_file(&path) {
        Ok(h) if h == s.sha256 => None,
        Ok(h) => Some(SegmentProblem::Corrupted { sha256: h }),
        Err(_) => Some(SegmentProblem::Missing),
    }
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
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
