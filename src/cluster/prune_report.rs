//! What `prewarm prune` found and did, one [`Entry`] per thing it lists — a manifest of a
//! registry (`--to`) or a tag of a Quay cache org (`--quay`) — printed one line each on stdout
//! as it happens, summed up on stderr, and written as JSON with `--report FILE`.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::reference::Digest;

/// What happened to an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A dry run: listed, nothing deleted.
    WouldDelete,
    Deleted,
    /// Already gone when the delete came (the registry or Quay answered 404).
    Absent,
    /// The delete failed; `error` says how.
    Failed,
}

impl Outcome {
    /// The verb opening the entry's line on stdout.
    pub fn verb(self) -> &'static str {
        match self {
            Outcome::WouldDelete => "would delete",
            Outcome::Deleted => "deleted",
            Outcome::Absent => "gone already",
            Outcome::Failed => "failed to delete",
        }
    }
}

/// One thing prune lists: a manifest by digest (with the tags it drops) or one tag.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// `HOST/REPOSITORY` where it is.
    pub repository: String,
    /// The manifest: deleted by digest (registry), or the one the tag names (Quay).
    pub digest: Digest,
    /// The tags that go: with the manifest (registry), or the one tag deleted (Quay).
    pub tags: Vec<String>,
    /// The upstream reference the cache org holds it for (Quay only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Why it is no longer needed.
    pub why: String,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Entry {
    /// `HOST/REPO@DIGEST (tags …): why` or, for one Quay tag, `HOST/REPO:TAG (manifest …,
    /// upstream …): why`.
    pub fn line(&self) -> String {
        match (&self.upstream, self.tags.as_slice()) {
            (Some(up), [tag]) => format!(
                "{}:{tag} (manifest {}, upstream {up}): {}",
                self.repository, self.digest, self.why
            ),
            _ => {
                let tags = if self.tags.is_empty() {
                    String::new()
                } else {
                    format!(" (tags {})", self.tags.join(", "))
                };
                format!("{}@{}{tags}: {}", self.repository, self.digest, self.why)
            }
        }
    }

    /// Settle by what deleting answered (`Some`; `None` in a dry run): deleted, already gone,
    /// or failed with the error.
    pub fn settle_delete(&mut self, answer: Option<Result<bool>>) {
        match answer {
            None => self.settle(Outcome::WouldDelete, None),
            Some(Ok(true)) => self.settle(Outcome::Deleted, None),
            Some(Ok(false)) => self.settle(Outcome::Absent, None),
            Some(Err(e)) => self.settle(Outcome::Failed, Some(format!("{e:#}"))),
        }
    }

    /// Record `outcome` and print the entry's line (stdout; a failure's error on stderr too).
    pub fn settle(&mut self, outcome: Outcome, error: Option<String>) {
        self.outcome = outcome;
        if let Some(e) = &error {
            eprintln!("error: {}: {e}", self.repository);
        }
        self.error = error;
        println!("{} {}", outcome.verb(), self.line());
    }
}

impl Entry {
    /// An entry not yet handled.
    pub fn new(
        repository: String,
        digest: Digest,
        tags: Vec<String>,
        upstream: Option<String>,
        why: String,
    ) -> Entry {
        Entry {
            repository,
            digest,
            tags,
            upstream,
            why,
            outcome: Outcome::WouldDelete,
            error: None,
        }
    }
}

/// Each entry in order: listed, or with `yes` deleted by `delete(index)` — a failure fails
/// that entry only, the rest are still done.
pub async fn settle_all<F, Fut>(mut entries: Vec<Entry>, yes: bool, delete: F) -> Vec<Entry>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    for (i, entry) in entries.iter_mut().enumerate() {
        let answer = match yes {
            false => None,
            true => Some(delete(i).await),
        };
        entry.settle_delete(answer);
    }
    entries
}

#[derive(Serialize)]
struct Report<'a> {
    command: &'static str,
    job: String,
    /// `--to REGISTRY[/PREFIX]` or `--quay HOST`, as given.
    target: String,
    dry_run: bool,
    would_delete: usize,
    deleted: usize,
    absent: usize,
    failed: usize,
    entries: &'a [Entry],
}

/// Sum up on stderr and write the report when asked; true when any delete failed (the run
/// wrapper turns that into the exit status).
pub fn finish(
    job: &Path,
    target: &str,
    what: &str,
    yes: bool,
    entries: &[Entry],
    report: Option<&Path>,
) -> Result<bool> {
    let count = |o: Outcome| entries.iter().filter(|e| e.outcome == o).count();
    let r = Report {
        command: "prune",
        job: job.display().to_string(),
        target: target.to_string(),
        dry_run: !yes,
        would_delete: count(Outcome::WouldDelete),
        deleted: count(Outcome::Deleted),
        absent: count(Outcome::Absent),
        failed: count(Outcome::Failed),
        entries,
    };
    eprintln!(
        "prune: {} {what} under {target} no longer planned{}",
        entries.len(),
        if yes {
            format!(
                ", {} deleted, {} gone already, {} failed",
                r.deleted, r.absent, r.failed
            )
        } else {
            " (dry run: --yes deletes them)".to_string()
        }
    );
    if let Some(path) = report {
        let mut bytes = serde_json::to_vec_pretty(&r)?;
        bytes.push(b'\n');
        crate::fsutil::write_atomically(path, &bytes)
            .with_context(|| format!("--report {}", path.display()))?;
    }
    Ok(r.failed > 0)
}
