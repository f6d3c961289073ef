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
}
