//! The PostgreSQL schema: versioned migrations, each in one transaction,
//! recorded in `tally_migrations`.
//!
//! Invariant: released steps in [`MIGRATIONS`] are never edited, only
//! appended to; a step and its row in `tally_migrations` commit together,
//! under a transaction-level advisory lock, so replicas starting at once
//! apply each step exactly once and a crash mid-step repeats it whole.
//!
//! Room for the replicas to come (issue 13): run ids come from an identity
//! column (several writers), every text key collates as bytes (`"C"`, the
//! order SQLite gives), and claims will add a schedule table and a tick
//! column unique per source in a later step without touching these.

use postgres::Client;

use super::StoreError;

/// Schema steps; step `i` takes the database from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE runs (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source        TEXT COLLATE "C" NOT NULL,
    trigger       TEXT   NOT NULL,
    started_at    BIGINT NOT NULL, -- unix milliseconds, as the SQLite store keeps them
    finished_at   BIGINT NOT NULL,
    result        TEXT   NOT NULL CHECK (result IN ('success', 'error', 'timeout', 'panic', 'crash')),
    error         TEXT,
    window_from   DATE   NOT NULL,
    window_to     DATE   NOT NULL,
    observations  BIGINT NOT NULL,
    warnings      TEXT   NOT NULL, -- JSON array of strings
    http_requests BIGINT,          -- made through the daemon; NULL when not counted
    uncovered     TEXT,            -- JSON [[from, to], ...] day numbers; NULL: none
    error_kind    TEXT,
    retry_after   BIGINT           -- unix milliseconds
);
CREATE INDEX runs_by_source ON runs (source, id);
-- The latest success of a source, and its runs by window for coverage.
CREATE INDEX runs_successes ON runs (source, finished_at, id) WHERE result = 'success';
CREATE INDEX runs_by_window ON runs (source, window_to, window_from);
-- Only runs that named days uncovered: where a resume point's fold starts.
CREATE INDEX runs_uncovered ON runs (source, id) WHERE uncovered IS NOT NULL;

CREATE TABLE observations (
    indicator TEXT COLLATE "C" NOT NULL,
    unit      TEXT COLLATE "C" NOT NULL,
    source    TEXT COLLATE "C" NOT NULL,
    entity    TEXT COLLATE "C" NOT NULL,
    day       DATE NOT NULL,
    value     DOUBLE PRECISION NOT NULL,
    run       BIGINT NOT NULL REFERENCES runs (id),
    -- Leads with indicator and unit: the order traceability lists them in.
    PRIMARY KEY (indicator, unit, source, entity, day)
);
CREATE INDEX observations_by_day ON observations (day, indicator);

CREATE TABLE source_state (
    source     TEXT COLLATE "C" PRIMARY KEY,
    state      TEXT   NOT NULL, -- JSON
    updated_at BIGINT NOT NULL  -- unix milliseconds
);

-- One row, bumped in the transaction of every write, so that a process can
-- tell its own commits from another's (`written_elsewhere`).
CREATE TABLE store_version (
    one     BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    version BIGINT NOT NULL
);
INSERT INTO store_version (version) VALUES (0);
"#];

/// Any fixed number: the advisory lock migrations take.
const MIGRATION_LOCK: i64 = 0x7461_6c6c_7931;

/// Brings the schema up to date, one step a transaction.
pub(super) fn migrate(client: &mut Client, database: &str) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    loop {
        let mut tx = client
            .transaction()
            .map_err(|source| StoreError::Postgres {
                doing: "starting a migration",
                source,
            })?;
        let found: i64 = (|| {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            // Under the lock: no other process creates it meanwhile (and
            // IF NOT EXISTS would log a notice at every start).
            let exists: bool = tx
                .query_one("SELECT to_regclass('tally_migrations') IS NOT NULL", &[])?
                .try_get(0)?;
            if !exists {
                tx.batch_execute(
                    "CREATE TABLE tally_migrations (
                         version    BIGINT PRIMARY KEY,
                         applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                     )",
                )?;
            }
            tx.query_one(
                "SELECT COALESCE(MAX(version), 0) FROM tally_migrations",
                &[],
            )?
            .try_get(0)
        })()
        .map_err(|source| StoreError::Postgres {
            doing: "reading the schema version",
            source,
        })?;
        if found > known {
            return Err(StoreError::TooNewDatabase {
                database: database.to_owned(),
                found,
                known,
            });
        }
        if found == known {
            return tx.commit().map_err(|source| StoreError::Postgres {
                doing: "reading the schema version",
                source,
            });
        }
        let version = found + 1;
        let step = MIGRATIONS[found as usize];
        (|| {
            tx.batch_execute(step)?;
            tx.execute(
                "INSERT INTO tally_migrations (version) VALUES ($1)",
                &[&version],
            )?;
            tx.commit()
        })()
        .map_err(|source| StoreError::MigrateDatabase {
            database: database.to_owned(),
            version,
            source,
        })?;
    }
}
