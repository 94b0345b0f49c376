//! The PostgreSQL schema: versioned migrations, each in one transaction,
//! recorded in `tally_migrations`.
//!
//! Invariant: released steps in [`MIGRATIONS`] are never edited, only
//! appended to; a step and its row in `tally_migrations` commit together,
//! under a transaction-level advisory lock, so replicas starting at once
//! apply each step exactly once and a crash mid-step repeats it whole.
//!
//! Replicas (issue 13): run ids come from an identity column (several
//! writers), every text key collates as bytes (`"C"`, the order SQLite
//! gives), and step 2 adds the claims of ticks (`source_schedule`,
//! `source_run`) and the lease rows of singleton work (`lease`), used by
//! [`super::coordination`]. Step 3 adds the per-month sums that keep a
//! quarter's summary fast without a cache in the process.

use postgres::Client;

use super::StoreError;

/// Schema steps; step `i` takes the database from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    r#"
-- Replicas (issue 13): each (source, tick) is claimed once through these.
-- A source's next tick; NULL when its schedule never fires again. The
-- fingerprint is that of the configuration that registered it: only a
-- replica with the same one claims the source.
CREATE TABLE source_schedule (
    source_id   TEXT COLLATE "C" PRIMARY KEY,
    next_run_at TIMESTAMPTZ,
    fingerprint TEXT NOT NULL
);
CREATE INDEX source_schedule_due ON source_schedule (next_run_at);

-- One row per claimed tick, unique per (source, tick): two claims of one
-- tick cannot both insert. Running while finished_at is NULL; the owner
-- renews lease_until, and once it passes another replica takes the run
-- over (owner changed, rerun set, reclaimed_at the time it did).
CREATE TABLE source_run (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_id    TEXT COLLATE "C" NOT NULL,
    tick_at      TIMESTAMPTZ NOT NULL,
    owner        TEXT NOT NULL,
    lease_until  TIMESTAMPTZ NOT NULL,
    rerun        BOOLEAN NOT NULL DEFAULT FALSE,
    claimed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    reclaimed_at TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ,
    UNIQUE (source_id, tick_at)
);
CREATE INDEX source_run_unfinished ON source_run (source_id, lease_until)
    WHERE finished_at IS NULL;

-- Singleton work (quarterly reports): held by `owner` until `expires_at`;
-- `term` grows with every change of hands, and renewals name it.
CREATE TABLE lease (
    name       TEXT COLLATE "C" PRIMARY KEY,
    owner      TEXT NOT NULL,
    term       BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
"#,
    r#"
-- Sums per key and calendar month, kept exact in the transaction of every
-- write of observations (see writer.rs): a period's values read its whole
-- months here and only the days of the months it cuts from observations.
CREATE TABLE observation_months (
    month      DATE NOT NULL,             -- its first day
    indicator  TEXT COLLATE "C" NOT NULL,
    unit       TEXT COLLATE "C" NOT NULL,
    source     TEXT COLLATE "C" NOT NULL,
    entity     TEXT COLLATE "C" NOT NULL,
    total      DOUBLE PRECISION NOT NULL, -- summed in day order
    last_day   DATE NOT NULL,             -- the month's last observed day
    last_value DOUBLE PRECISION NOT NULL, -- and its value
    -- The store_version of the transaction that last summed the row: the
    -- month caches of every process fetch the rows stamped since theirs.
    version    BIGINT NOT NULL,
    -- Leads with the month: a period reads a range of months.
    PRIMARY KEY (month, indicator, unit, source, entity)
);
CREATE INDEX observation_months_version ON observation_months (version);
INSERT INTO observation_months
SELECT date_trunc('month', day)::date, indicator, unit, source, entity,
       SUM(value ORDER BY day), MAX(day), (ARRAY_AGG(value ORDER BY day DESC))[1],
       (SELECT version FROM store_version)
FROM observations GROUP BY 1, 2, 3, 4, 5;
-- The run an observation cites is inserted by the same transaction just
-- before it: the check cost a lookup per row, a third of a big run's upsert.
ALTER TABLE observations DROP CONSTRAINT observations_run_fkey;
"#,
    r#"
-- Each source's runs counted by result, kept in the transaction that adds
-- the runs (writer.rs, import.rs): a source's status read them with a scan
-- of all its runs, the sources page for every source.
CREATE TABLE run_counts (
    source TEXT COLLATE "C" NOT NULL,
    result TEXT NOT NULL,
    runs   BIGINT NOT NULL,
    PRIMARY KEY (source, result)
);
INSERT INTO run_counts SELECT source, result, COUNT(*) FROM runs GROUP BY 1, 2;
"#,
];

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
