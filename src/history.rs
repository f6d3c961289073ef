//! What the state remembers between refreshes (schema 2 of [`crate::state`]): per source
//! reference every digest it resolved to, with when it was first and last seen and last
//! warmed; per destination (a site registry, a bundle) the blobs shipped to it; and the last
//! successful run of a command, for the metrics.
//!
//! Each write is its own statement (WAL), made as the item completes, so a killed run leaves
//! every finished item recorded and nothing half-written.
//!
//! `plan --state` and `warm` record what they resolved ([`record_plan`]): each image's digest
//! under its [`state_key`] (and, after a warm, that it is warm), each tracked release and
//! catalog tag's digest, and what each catalog and channel selected. So the first refresh
//! after a warm finds nothing new.

use std::collections::{BTreeMap, HashSet};

use anyhow::{Context, Result};
use rusqlite::{params, OptionalExtension};

use crate::plan::Plan;
use crate::reference::{Digest, Reference};
use crate::report::{ImageReport, ImageStatus};
use crate::sources::Tracked;
use crate::state::{now, State};

/// The key an image's digest is kept under: its tag reference when it has a tag (what a
/// refresh HEADs), else its digest reference.
pub fn state_key(r: &Reference) -> String {
    match r.tag() {
        Some(tag) => Reference::new(r.registry(), r.repository(), Some(tag), None).to_string(),
        None => r.to_string(),
    }
}

/// Record a plan's digests and selections; with `reports` (one per plan image, as the warm
/// executor returns them) also which images are warm, and which tracked sources have every
/// image warm.
pub fn record_plan(state: &State, plan: &Plan, reports: Option<&[ImageReport]>) -> Result<()> {
    let mut warm = HashSet::new();
    for (i, image) in plan.images.iter().enumerate() {
        if crate::shard::is_carrier(image) {
            continue;
        }
        let key = state_key(&image.source);
        let ok = reports
            .and_then(|r| r.get(i))
            .is_some_and(|r| matches!(r.status, ImageStatus::Warmed | ImageStatus::Cached));
        if ok {
            state.warmed_digest(&key, &image.digest)?;
            warm.insert(image.source.clone());
        } else {
            state.saw_digest(&key, &image.digest)?;
        }
    }
    for t in &plan.tracked {
        let all_warm = reports.is_some() && t.images.iter().all(|r| warm.contains(r));
        state.record_tracked(t, all_warm)?;
    }
    Ok(())
}

impl State {
    /// Record a tracked source as seen (its digest, its selection) and, when `warm`, that
    /// every image of it is warm now.
    pub fn record_tracked(&self, t: &Tracked, warm: bool) -> Result<()> {
        if let Some(d) = &t.digest {
            if warm {
                self.warmed_digest(&t.key, d)?;
            } else {
                self.saw_digest(&t.key, d)?;
            }
        }
        if !t.selection.is_empty() || t.digest.is_none() {
            self.record_selection(&t.key, t.digest.as_ref(), &t.selection)?;
        }
        Ok(())
    }

    /// What tracked source `source` selected when last seen.
    pub fn selection(&self, source: &str) -> Result<Option<BTreeMap<String, String>>> {
        self.with_conn(|conn| {
            let detail: Option<String> = conn
                .query_row(
                    "SELECT detail FROM selections WHERE source = ?1",
                    params![source],
                    |r| r.get(0),
                )
                .optional()?;
            detail
                .map(|d| {
                    serde_json::from_str(&d)
                        .with_context(|| format!("state: selection of `{source}` is not JSON"))
                })
                .transpose()
        })
    }

    pub fn record_selection(
        &self,
        source: &str,
        digest: Option<&Digest>,
        detail: &BTreeMap<String, String>,
    ) -> Result<()> {
        let text = serde_json::to_string(detail)?;
        self.with_conn(|conn| {
            conn.execute(
                "INSERT INTO selections (source, digest, detail, at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (source) DO UPDATE SET digest = excluded.digest,
                   detail = excluded.detail, at = excluded.at",
                params![source, digest.map(Digest::as_str), text, now()],
            )?;
            Ok(())
        })
    }

    /// Whether `key` resolves to `digest` and a warm of it completed at or after `since`.
    pub fn warm_since(&self, key: &str, digest: &Digest, since: i64) -> Result<bool> {
        Ok(self
            .current_digest(key)?
            .is_some_and(|k| k.digest == *digest && k.last_warmed.is_some_and(|at| at >= since)))
    }
}

/// What the state knows about one reference: the digest it resolved to most recently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub digest: Digest,
    pub first_seen: i64,
    pub last_seen: i64,
    /// When a warm of this digest last completed; `None` when it never did.
    pub last_warmed: Option<i64>,
}

impl State {
    /// The digest `reference` resolved to most recently, if it was ever resolved.
    pub fn current_digest(&self, reference: &str) -> Result<Option<Known>> {
        self.with_conn(|conn| {
            let row = conn
                .query_row(
                    "SELECT digest, first_seen, last_seen, last_warmed FROM digests
                     WHERE reference = ?1 ORDER BY last_seen DESC, rowid DESC LIMIT 1",
                    params![reference],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Option<i64>>(3)?,
                        ))
                    },
                )
                .optional()?;
            row.map(|(d, first_seen, last_seen, last_warmed)| {
                Ok(Known {
                    digest: d.parse().with_context(|| {
                        format!("state: reference `{reference}` has a bad digest `{d}`")
                    })?,
                    first_seen,
                    last_seen,
                    last_warmed,
                })
            })
            .transpose()
        })
    }

    /// Record that `reference` resolves to `digest` now (first or again).
    pub fn saw_digest(&self, reference: &str, digest: &Digest) -> Result<()> {
        let at = now();
        self.with_conn(|conn| {
            conn.execute(
                "INSERT INTO digests (reference, digest, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (reference, digest) DO UPDATE SET last_seen = excluded.last_seen",
                params![reference, digest.as_str(), at],
            )?;
            Ok(())
        })
    }

    /// Record that a warm of `reference` at `digest` completed now.
    pub fn warmed_digest(&self, reference: &str, digest: &Digest) -> Result<()> {
        let at = now();
        self.with_conn(|conn| {
            conn.execute(
                "INSERT INTO digests (reference, digest, first_seen, last_seen, last_warmed)
                 VALUES (?1, ?2, ?3, ?3, ?3)
                 ON CONFLICT (reference, digest) DO UPDATE SET last_warmed = excluded.last_warmed",
                params![reference, digest.as_str(), at],
            )?;
            Ok(())
        })
    }

    /// Every digest `reference` resolved to, oldest first: (digest, first_seen, last_seen).
    pub fn digest_history(&self, reference: &str) -> Result<Vec<(String, i64, i64)>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare(
                "SELECT digest, first_seen, last_seen FROM digests WHERE reference = ?1
                 ORDER BY first_seen, rowid",
            )?;
            let rows = stmt
                .query_map(params![reference], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Record a blob shipped to `destination` (a site registry `host[:port]`, a bundle name).
    pub fn record_shipped(
        &self,
        destination: &str,
        repository: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        self.with_conn(|conn| {
            conn.execute(
                "INSERT INTO shipped (destination, repository, digest, size, at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (destination, repository, digest) DO UPDATE SET size = excluded.size, at = excluded.at",
                params![destination, repository, digest.as_str(), size as i64, now()],
            )?;
            Ok(())
        })
    }

    pub fn is_shipped(&self, destination: &str, repository: &str, digest: &Digest) -> Result<bool> {
        self.with_conn(|conn| {
            Ok(conn
                .query_row(
                    "SELECT 1 FROM shipped WHERE destination = ?1 AND repository = ?2 AND digest = ?3",
                    params![destination, repository, digest.as_str()],
                    |_| Ok(()),
                )
                .optional()?
                .is_some())
        })
    }

    /// When the last run of `command` with no failed image finished.
    pub fn last_success(&self, command: &str) -> Result<Option<i64>> {
        self.with_conn(|conn| {
            Ok(conn
                .query_row(
                    "SELECT MAX(finished) FROM runs WHERE command = ?1
                     AND COALESCE(json_extract(summary, '$.failed'), 0) = 0",
                    params![command],
                    |r| r.get::<_, Option<i64>>(0),
                )
                .optional()?
                .flatten())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_every_digest_and_the_latest_wins() {
        let dir = std::env::temp_dir().join(format!("prewarm-history-{}", std::process::id()));
        let path = dir.join("s.db");
        let (a, b) = (Digest::sha256_of(b"a"), Digest::sha256_of(b"b"));
        {
            let s = State::open(&path).unwrap();
            assert_eq!(s.current_digest("quay.io/x:1").unwrap(), None);
            s.saw_digest("quay.io/x:1", &a).unwrap();
            assert_eq!(s.current_digest("quay.io/x:1").unwrap().unwrap().digest, a);
            assert_eq!(
                s.current_digest("quay.io/x:1")
                    .unwrap()
                    .unwrap()
                    .last_warmed,
                None
            );
            s.warmed_digest("quay.io/x:1", &a).unwrap();
            s.saw_digest("quay.io/x:1", &b).unwrap();
            s.record_shipped("site", "r", &a, 3).unwrap();
            s.record_run("refresh", 0, &serde_json::json!({"failed": 1}))
                .unwrap();
            assert_eq!(s.last_success("refresh").unwrap(), None);
            s.record_run("refresh", 0, &serde_json::json!({"failed": 0}))
                .unwrap();
        }
        let s = State::open(&path).unwrap();
        let known = s.current_digest("quay.io/x:1").unwrap().unwrap();
        assert_eq!(known.digest, b);
        assert_eq!(known.last_warmed, None);
        assert_eq!(s.digest_history("quay.io/x:1").unwrap().len(), 2);
        assert!(s.is_shipped("site", "r", &a).unwrap());
        assert!(!s.is_shipped("site", "r", &b).unwrap());
        assert!(s.last_success("refresh").unwrap().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tracked_sources_keep_their_selection_and_are_warm_only_when_said() {
        let dir = std::env::temp_dir().join(format!("prewarm-tracked-{}", std::process::id()));
        let s = State::open(&dir.join("s.db")).unwrap();
        let d = Digest::sha256_of(b"index");
        let selection: BTreeMap<String, String> = [("p".to_string(), "p.v1".to_string())]
            .into_iter()
            .collect();
        let t = Tracked {
            kind: crate::sources::TrackedKind::Catalog,
            key: "catalog r.io/idx:v1".into(),
            digest: Some(d.clone()),
            selection: selection.clone(),
            images: Vec::new(),
        };
        assert_eq!(s.selection(&t.key).unwrap(), None);
        s.record_tracked(&t, false).unwrap();
        assert_eq!(s.selection(&t.key).unwrap(), Some(selection));
        assert!(!s.warm_since(&t.key, &d, 0).unwrap());
        s.record_tracked(&t, true).unwrap();
        assert!(s.warm_since(&t.key, &d, 0).unwrap());
        assert!(!s
            .warm_since(&t.key, &Digest::sha256_of(b"other"), 0)
            .unwrap());
        assert!(!s.warm_since(&t.key, &d, now() + 60).unwrap());
        // A tag and its pinned form share a key; a digest reference is its own.
        let tag: Reference = format!("quay.io/a/b:1@{d}").parse().unwrap();
        assert_eq!(state_key(&tag), "quay.io/a/b:1");
        let pinned: Reference = format!("quay.io/a/b@{d}").parse().unwrap();
        assert_eq!(state_key(&pinned), format!("quay.io/a/b@{d}"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
