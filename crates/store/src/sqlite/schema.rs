//! The schema: connection settings and the migration steps.
//!
//! Invariant: released steps in [`MIGRATIONS`] are never edited, only appended
//! to, and each step commits with its `user_version` bump, so a database is
//! always at exactly one step and a crash mid-migration repeats the step whole.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Schema steps; step `i` takes the database from `user_version` `i` to `i + 1`.
/// Released steps are never edited, only appended to.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    source        TEXT    NOT NULL,
    trigger       TEXT    NOT NULL,
    started_at    INTEGER NOT NULL, -- unix milliseconds
    finished_at   INTEGER NOT NULL,
    result        TEXT    NOT NULL CHECK (result IN ('success', 'error', 'timeout', 'panic', 'crash')),
    error         TEXT,
    window_from   INTEGER NOT NULL, -- days since 1970-01-01
    window_to     INTEGER NOT NULL,
    observations  INTEGER NOT NULL,
    warnings      TEXT    NOT NULL, -- JSON array of strings
    http_requests INTEGER           -- made through the daemon; NULL when not counted
);
CREATE INDEX runs_by_source ON runs (source, id);

CREATE TABLE keys (
    id        INTEGER PRIMARY KEY,
    source    TEXT NOT NULL,
    unit      TEXT NOT NULL,
    indicator TEXT NOT NULL,
    entity    TEXT NOT NULL,
    UNIQUE (source, unit, indicator, entity)
);
CREATE INDEX keys_by_indicator ON keys (indicator, unit);

CREATE TABLE observations (
    key   INTEGER NOT NULL REFERENCES keys (id),
    day   INTEGER NOT NULL,
    value REAL    NOT NULL,
    run   INTEGER NOT NULL REFERENCES runs (id),
    PRIMARY KEY (key, day)
) WITHOUT ROWID;
-- Covering, for the partial months at the edges of a period.
CREATE INDEX observations_by_day ON observations (day, key, value);

CREATE TABLE monthly (
    month      INTEGER NOT NULL, -- year * 12 + month - 1
    key        INTEGER NOT NULL REFERENCES keys (id),
    sum        REAL    NOT NULL,
    last_day   INTEGER NOT NULL,
    last_value REAL    NOT NULL,
    PRIMARY KEY (month, key)
) WITHOUT ROWID;

CREATE TABLE source_state (
    source     TEXT PRIMARY KEY,
    state      TEXT    NOT NULL, -- JSON
    updated_at INTEGER NOT NULL
);
"#,
    r#"
-- Bumped inside the transaction of every write that changes a month of
-- `monthly`, so that a reader caching months in memory finds out, within its
-- own snapshot, which of them changed, whichever process wrote. No row: 0.
CREATE TABLE monthly_versions (
    month   INTEGER PRIMARY KEY, -- as in `monthly`
    version INTEGER NOT NULL
);
"#,
    r#"
-- The days of its window a successful run did not cover, as a JSON array of
-- [from, to] day numbers (inclusive, sorted, disjoint); NULL when it covered
-- the whole window, so a run without gaps writes and reads nothing more.
ALTER TABLE runs ADD COLUMN uncovered TEXT;
"#,
    r#"
-- Why a failed run failed (the plugin's error kind), and when the platform
-- said to try again. NULL for the runs recorded before.
ALTER TABLE runs ADD COLUMN error_kind TEXT;
ALTER TABLE runs ADD COLUMN retry_after INTEGER; -- unix milliseconds
"#,
];

pub(super) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // Another process (`tallyd collect` beside the daemon) may hold the write
    // lock for the length of a run's commit; wait rather than fail.
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))?;
    // Numbers end in official reports and a run commits rarely, so the extra
    // fsync per commit is cheap insurance against losing a committed run.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    if found > known {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let version = i as i64 + 1;
        let err = |source| StoreError::Migrate {
            path: path.to_path_buf(),
            version,
            source,
        };
        // The version bump commits with the step, so a crash mid-migration
        // leaves the previous version, and the step runs again in full.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(err)?;
        tx.execute_batch(step).map_err(err)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}
