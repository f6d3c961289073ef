//! Embedded state (SQLite) kept between runs: which (cache repository, blob) pairs a warm has
//! verified, and a summary of each run. It lets a rerun tell "already cached" from "warmed now"
//! and confirm the former with a HEAD instead of moving the bytes again.
//!
//! The schema is versioned with `PRAGMA user_version` and migrated forward on open; writes
//! happen as each item completes (WAL), so a killed run leaves a readable database that
//! records what was finished.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};

use crate::reference::Digest;

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE warmed (
        cache TEXT NOT NULL,
        repository TEXT NOT NULL,
        digest TEXT NOT NULL,
        size INTEGER NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (cache, repository, digest)
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        command TEXT NOT NULL,
        started INTEGER NOT NULL,
        finished INTEGER NOT NULL,
        summary TEXT NOT NULL
    );",
    // 2: per source reference the digests it resolved to (refresh), and per destination the
    // blobs shipped to it (executors other than warm: copy, export).
    "CREATE TABLE digests (
        reference TEXT NOT NULL,
        digest TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        last_warmed INTEGER,
        PRIMARY KEY (reference, digest)
    );
    CREATE INDEX digests_by_last_seen ON digests (reference, last_seen);
    CREATE TABLE shipped (
        destination TEXT NOT NULL,
        repository TEXT NOT NULL,
        digest TEXT NOT NULL,
        size INTEGER NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (destination, repository, digest)
    );",
    // 3: per tracked OCP source (`catalog <ref>`, `channel <name> <arch>`) what it selected when
    // last seen, so a refresh can say what changed (`package P: old → new`).
    "CREATE TABLE selections (
        source TEXT PRIMARY KEY,
        digest TEXT,
        detail TEXT NOT NULL,
        at INTEGER NOT NULL
    );",
    // 4: what kind each shipped digest is (a manifest or a blob) and which bundle carried it,
    // and the bundles exported per site, so `export --since-last SITE` builds on the last one.
    "ALTER TABLE shipped ADD COLUMN kind TEXT NOT NULL DEFAULT 'blob';
    ALTER TABLE shipped ADD COLUMN bundle TEXT;
    CREATE TABLE bundles (
        id TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        digest TEXT NOT NULL,
        dir TEXT NOT NULL,
        at INTEGER NOT NULL
    );
    CREATE INDEX bundles_by_site ON bundles (site, at);",
];

pub struct State {
    conn: Mutex<Connection>,
    pub path: PathBuf,
}

impl State {
    /// `$XDG_STATE_HOME/prewarm/state.db`, else `~/.local/state/prewarm/state.db`.
    pub fn default_path() -> PathBuf {
        let base = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("."));
        base.join("prewarm/state.db")
    }

    pub fn open(path: &Path) -> Result<State> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create state directory {}", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open state {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let version = version.max(0) as usize;
        if version > MIGRATIONS.len() {
            anyhow::bail!(
                "state {} was written by a newer prewarm (schema {version}, this one knows {})",
                path.display(),
                MIGRATIONS.len()
            );
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(sql)
                .with_context(|| format!("state {}: migration {}", path.display(), i + 1))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(State {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    pub fn is_warm(&self, cache: &str, repository: &str, digest: &Digest) -> Result<bool> {
        let conn = self.conn.lock().expect("state lock");
        let found = conn
            .query_row(
                "SELECT 1 FROM warmed WHERE cache = ?1 AND repository = ?2 AND digest = ?3",
                params![cache, repository, digest.as_str()],
                |_| Ok(()),
            )
            .optional()?;
        Ok(found.is_some())
    }

    pub fn record_warm(
        &self,
        cache: &str,
        repository: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        let conn = self.conn.lock().expect("state lock");
        conn.execute(
            "INSERT INTO warmed (cache, repository, digest, size, at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (cache, repository, digest) DO UPDATE SET size = excluded.size, at = excluded.at",
            params![cache, repository, digest.as_str(), size as i64, now()],
        )?;
        Ok(())
    }

    pub fn forget_warm(&self, cache: &str, repository: &str, digest: &Digest) -> Result<()> {
        let conn = self.conn.lock().expect("state lock");
        conn.execute(
            "DELETE FROM warmed WHERE cache = ?1 AND repository = ?2 AND digest = ?3",
            params![cache, repository, digest.as_str()],
        )?;
        Ok(())
    }

    pub fn record_run(
        &self,
        command: &str,
        started: i64,
        summary: &serde_json::Value,
    ) -> Result<()> {
        let conn = self.conn.lock().expect("state lock");
        conn.execute(
            "INSERT INTO runs (command, started, finished, summary) VALUES (?1, ?2, ?3, ?4)",
            params![command, started, now(), summary.to_string()],
        )?;
        Ok(())
    }
}

/// What a digest shipped to a site is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShippedKind {
    Blob,
    Manifest,
}

impl ShippedKind {
    fn as_str(self) -> &'static str {
        match self {
            ShippedKind::Blob => "blob",
            ShippedKind::Manifest => "manifest",
        }
    }
}

/// One digest shipped to a site: where it went (a repository of the site's registry, or for
/// a bundle the source repository `host/path` its image came from) and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippedItem {
    pub repository: String,
    pub digest: Digest,
    pub size: u64,
    pub kind: ShippedKind,
}

/// A bundle exported for a site: its id and the sha256 of its `bundle.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippedBundle {
    pub id: String,
    pub digest: Digest,
    pub dir: String,
    pub at: i64,
}

impl State {
    /// Record what one run shipped to `site`, in one transaction (`bundle`: the bundle that
    /// carried it, for export).
    pub fn record_shipped_items(
        &self,
        site: &str,
        bundle: Option<&str>,
        items: &[ShippedItem],
    ) -> Result<()> {
        let mut conn = self.conn.lock().expect("state lock");
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO shipped (destination, repository, digest, size, at, kind, bundle)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (destination, repository, digest) DO UPDATE SET
                   size = excluded.size, at = excluded.at, kind = excluded.kind,
                   bundle = excluded.bundle",
            )?;
            let at = now();
            for i in items {
                stmt.execute(params![
                    site,
                    i.repository,
                    i.digest.as_str(),
                    i.size as i64,
                    at,
                    i.kind.as_str(),
                    bundle
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Everything ever shipped to `site`.
    pub fn shipped_to(&self, site: &str) -> Result<Vec<ShippedItem>> {
        let conn = self.conn.lock().expect("state lock");
        let mut stmt = conn.prepare(
            "SELECT repository, digest, size, kind FROM shipped WHERE destination = ?1
             ORDER BY repository, digest",
        )?;
        let rows = stmt
            .query_map(params![site], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(repository, digest, size, kind)| {
                Ok(ShippedItem {
                    repository,
                    digest: digest
                        .parse()
                        .map_err(|e| anyhow::anyhow!("state: shipped digest `{digest}`: {e:?}"))?,
                    size: size.max(0) as u64,
                    kind: if kind == "manifest" {
                        ShippedKind::Manifest
                    } else {
                        ShippedKind::Blob
                    },
                })
            })
            .collect()
    }

    /// Record a bundle exported for `site`.
    pub fn record_bundle(&self, site: &str, bundle: &ShippedBundle) -> Result<()> {
        let conn = self.conn.lock().expect("state lock");
        conn.execute(
            "INSERT INTO bundles (id, site, digest, dir, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                bundle.id,
                site,
                bundle.digest.as_str(),
                bundle.dir,
                bundle.at
            ],
        )?;
        Ok(())
    }

    /// The last bundle exported for `site`.
    pub fn last_bundle(&self, site: &str) -> Result<Option<ShippedBundle>> {
        let conn = self.conn.lock().expect("state lock");
        let row = conn
            .query_row(
                "SELECT id, digest, dir, at FROM bundles WHERE site = ?1
                 ORDER BY at DESC, rowid DESC LIMIT 1",
                params![site],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(id, digest, dir, at)| {
            Ok(ShippedBundle {
                id,
                digest: digest
                    .parse()
                    .map_err(|e| anyhow::anyhow!("state: bundle digest `{digest}`: {e:?}"))?,
                dir,
                at,
            })
        })
        .transpose()
    }
}

impl State {
    /// Run a closure on the connection (the history module's queries live beside it).
    pub(crate) fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.conn.lock().expect("state lock");
        f(&conn)
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_reopens() {
        let dir = std::env::temp_dir().join(format!("prewarm-state-{}", std::process::id()));
        let path = dir.join("s.db");
        let d = Digest::sha256_of(b"x");
        {
            let s = State::open(&path).unwrap();
            assert!(!s.is_warm("c", "r", &d).unwrap());
            s.record_warm("c", "r", &d, 1).unwrap();
            s.record_run("warm", 0, &serde_json::json!({"images": 1}))
                .unwrap();
        }
        let s = State::open(&path).unwrap();
        assert!(s.is_warm("c", "r", &d).unwrap());
        s.forget_warm("c", "r", &d).unwrap();
        assert!(!s.is_warm("c", "r", &d).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shipped_items_and_bundles_per_site() {
        let dir = std::env::temp_dir().join(format!("prewarm-shipped-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = State::open(&dir.join("s.db")).unwrap();
        let (a, b) = (Digest::sha256_of(b"a"), Digest::sha256_of(b"b"));
        let items = [
            ShippedItem {
                repository: "quay.io/x".into(),
                digest: a.clone(),
                size: 1,
                kind: ShippedKind::Blob,
            },
            ShippedItem {
                repository: "quay.io/x".into(),
                digest: b.clone(),
                size: 2,
                kind: ShippedKind::Manifest,
            },
        ];
        s.record_shipped_items("far", Some("b1"), &items).unwrap();
        let mut got = s.shipped_to("far").unwrap();
        got.sort_by_key(|i| i.size);
        assert_eq!(got, items.to_vec());
        assert!(s.shipped_to("near").unwrap().is_empty());
        assert_eq!(s.last_bundle("far").unwrap(), None);
        for (id, at) in [("b1", 10), ("b2", 20)] {
            let bundle = ShippedBundle {
                id: id.into(),
                digest: a.clone(),
                dir: "/x".into(),
                at,
            };
            s.record_bundle("far", &bundle).unwrap();
        }
        assert_eq!(s.last_bundle("far").unwrap().unwrap().id, "b2");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
