//! The embedded SQLite store (`data_dir/tally.db`).
//!
//! Layout, and why:
//! - `keys` interns (source, unit, indicator, entity) as a small integer, so the
//!   big tables hold four numbers a row and the reader can keep every key in
//!   memory (keys are only ever added, so the cache is refreshed by id).
//! - `observations` holds the raw values by (key, day); days are days since
//!   1970-01-01, so range scans compare integers.
//! - `monthly` holds per (key, month) the sum, the last observed day and its
//!   value. It is recomputed from the raw rows of every (key, month) a run
//!   touches, inside the run's transaction, so re-collection stays exact, and
//!   a quarter summary reads three rows a key instead of ninety.
//! - `monthly_versions` holds a version per month, bumped in the transaction
//!   of every write of `monthly`. The reader keeps whole months of `monthly`
//!   in memory ([`MonthCache`](month_cache::MonthCache)) and uses a cached month only while its
//!   version, read in the same snapshot as everything else, is unchanged: a
//!   summary over past months folds memory, never stale rows, whichever
//!   process wrote.
//! - `runs` and `source_state` are small: a few rows a source a day.
//!
//! The writer reads, per key, what is stored over the months a run touches,
//! which both tells the run's rows apart (new, changed, the same again) and
//! completes each touched month; it then writes in primary-key order, new
//! rows many to a statement, and rows stored again with the same value only
//! get the run id (see [`writer::write_run`]). Several runs may share a transaction
//! (`record_runs`), so that many small runs share one fsync.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rusqlite::{Connection, TransactionBehavior};

use super::{
    Coverage, EntityValue, LastSuccess, ObservationCursor, OwnData, OwnValue, ResumePoint,
    RunCounts, RunRecord, RunResult, RunToRecord, SourceStatus, Store, StoreError,
    StoredObservation, StoredRun,
};
use fold::{entities_from_folds, indexed_own_values, named_own_values};
use keys::KeyCache;
use month_cache::{MONTH_CACHE_ROWS, MonthCache};
use run_index::RunIndex;
use schema::{configure, migrate};
use tally_domain::{Kind, Observation};
use writer::Writer;

mod export;
mod fold;
mod keys;
mod month_cache;
mod observations;
mod run_index;
mod schema;
mod writer;

// The PostgreSQL store checks runs and folds coverage exactly as this one.
pub(crate) use run_index::{SourceRuns, parse_uncovered, uncovered_json};
pub(crate) use writer::{Checked, check_run};

pub struct SqliteStore {
    path: PathBuf,
    // Two connections so that summaries read a WAL snapshot while a run
    // commits, instead of queueing behind it.
    writer: Mutex<Writer>,
    reader: Mutex<Reader>,
}

/// The read connection and what it keeps between reads: every key, whole
/// months of `monthly`, and the runs folded per source.
struct Reader {
    conn: Connection,
    keys: KeyCache,
    months: MonthCache,
    runs: RunIndex,
}

impl SqliteStore {
    /// Opens (or creates) `dir/tally.db` and brings its schema up to date.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("tally.db");
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let mut writer = Connection::open(&path).map_err(open_err)?;
        configure(&writer).map_err(open_err)?;
        // The writer is the only code that inserts rows that refer to others,
        // and it takes every id from a row it read or inserted in the same
        // transaction; enforcing the references would look up the key and
        // the run again for each observation, which cost more than half the
        // upsert itself. `writes_keep_every_reference_intact` checks them.
        writer
            .pragma_update(None, "foreign_keys", false)
            .map_err(open_err)?;
        migrate(&mut writer, &path)?;
        let data_version = data_version(&writer).map_err(open_err)?;
        let reader = Connection::open(&path).map_err(open_err)?;
        configure(&reader).map_err(open_err)?;
        reader
            .pragma_update(None, "query_only", true)
            .map_err(open_err)?;
        Ok(SqliteStore {
            path,
            writer: Mutex::new(Writer::new(writer, data_version)),
            reader: Mutex::new(Reader {
                conn: reader,
                keys: KeyCache::default(),
                months: MonthCache::new(MONTH_CACHE_ROWS),
                runs: RunIndex::default(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "data_version", |r| r.get(0))
}

/// A panic while a connection was locked dropped its transaction, which rolls
/// back, so the connection behind a poisoned lock is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

const UNIX_EPOCH_FROM_CE: i32 = 719_163;

pub(crate) fn day_num(d: NaiveDate) -> i64 {
    i64::from(d.num_days_from_ce() - UNIX_EPOCH_FROM_CE)
}

pub(crate) fn num_day(n: i64) -> Result<NaiveDate, StoreError> {
    n.checked_add(i64::from(UNIX_EPOCH_FROM_CE))
        .and_then(|ce| i32::try_from(ce).ok())
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .ok_or_else(|| StoreError::Corrupt {
            what: "day",
            detail: format!("{n} is not a day number"),
        })
}

fn month_num(d: NaiveDate) -> i64 {
    i64::from(d.year()) * 12 + i64::from(d.month0())
}

/// First and last day numbers of a month number.
fn month_days(month: i64) -> Option<(i64, i64)> {
    let first = |m: i64| {
        let year = i32::try_from(m.div_euclid(12)).ok()?;
        NaiveDate::from_ymd_opt(year, m.rem_euclid(12) as u32 + 1, 1)
    };
    Some((day_num(first(month)?), day_num(first(month + 1)?) - 1))
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_millis(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| StoreError::Corrupt {
        what: "timestamp",
        detail: format!("{ms} is out of range"),
    })
}

impl Store for SqliteStore {
    fn first_day(&self) -> Result<Option<NaiveDate>, StoreError> {
        let e = |source| StoreError::Sqlite {
            doing: "reading the first observed day",
            source,
        };
        let r = lock(&self.reader);
        // `observations_by_day` leads with the day: one index seek.
        let first: Option<i64> = r
            .conn
            .prepare_cached("SELECT MIN(day) FROM observations")
            .map_err(e)?
            .query_row([], |row| row.get(0))
            .map_err(e)?;
        first.map(num_day).transpose()
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        let e = |source| StoreError::Sqlite {
            doing: "checking that the database is writable",
            source,
        };
        let mut writer = lock(&self.writer);
        // BEGIN IMMEDIATE takes the same RESERVED lock a run's commit needs,
        // and fails on a read-only file; rolling back writes nothing.
        let tx = writer
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)?;
        tx.rollback().map_err(e)
    }

    fn observations_page(
        &self,
        units: &[&str],
        indicator: &str,
        start: NaiveDate,
        end: NaiveDate,
        after: Option<&ObservationCursor>,
        limit: usize,
    ) -> Result<Vec<StoredObservation>, StoreError> {
        self.observations_page_seek(units, indicator, start, end, after, limit)
    }

    fn written_elsewhere(&self) -> Result<bool, StoreError> {
        let mut writer = match self.writer.try_lock() {
            Ok(writer) => writer,
            // This process is committing a run, after which /metrics is
            // rebuilt anyway; another process's commit shows at the next
            // call, since this connection's own commits leave the version.
            Err(std::sync::TryLockError::WouldBlock) => return Ok(false),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        let now = data_version(&writer.conn).map_err(|source| StoreError::Sqlite {
            doing: "checking whether another process wrote",
            source,
        })?;
        let changed = now != writer.data_version;
        writer.data_version = now;
        Ok(changed)
    }

    fn record_run(
        &self,
        run: &RunRecord,
        observations: &[Observation],
        state: Option<&serde_json::Value>,
    ) -> Result<i64, StoreError> {
        let checked = check_run(run, observations, state)?;
        let ids = lock(&self.writer).write(&[&checked])?;
        Ok(ids[0])
    }

    fn record_runs(&self, runs: &[RunToRecord]) -> Vec<Result<i64, StoreError>> {
        self.record_runs_together(runs)
    }

    fn resume_point(&self, source: &str) -> Result<ResumePoint, StoreError> {
        self.read_resume_point(source)
    }

    fn source_status(&self, source: &str) -> Result<SourceStatus, StoreError> {
        self.read_source_status(source)
    }

    fn recent_runs(&self, source: &str, limit: usize) -> Result<Vec<StoredRun>, StoreError> {
        self.read_recent_runs(source, limit)
    }

    fn runs(&self, ids: &[i64]) -> Result<Vec<StoredRun>, StoreError> {
        self.read_runs(ids)
    }

    fn own_values(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        indicators: &[(String, Kind)],
    ) -> Result<Vec<OwnValue>, StoreError> {
        if end < start || indicators.is_empty() {
            return Ok(Vec::new());
        }
        self.fold_keys(start, end, |keys, accs| {
            named_own_values(keys, accs, indicators)
        })
    }

    fn own_values_indexed(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        indicators: &[(String, Kind)],
        unit_index: &dyn Fn(&str) -> Option<usize>,
    ) -> Result<Vec<(usize, usize, OwnData)>, StoreError> {
        if end < start || indicators.is_empty() {
            return Ok(Vec::new());
        }
        self.fold_keys(start, end, |keys, accs| {
            indexed_own_values(keys, accs, indicators, unit_index)
        })
    }

    fn entity_values(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        indicators: &[(String, Kind)],
    ) -> Result<Vec<EntityValue>, StoreError> {
        if end < start || indicators.is_empty() {
            return Ok(Vec::new());
        }
        self.fold_keys(start, end, |keys, accs| {
            entities_from_folds(keys, accs, indicators)
        })
    }

    fn coverage(
        &self,
        source: &str,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<Coverage, StoreError> {
        Ok(self.coverages(&[source], start, end)?.remove(0))
    }

    fn coverages(
        &self,
        sources: &[&str],
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<Vec<Coverage>, StoreError> {
        self.read_coverages(sources, start, end)
    }

    fn observations(
        &self,
        units: &[&str],
        indicator: &str,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<Vec<StoredObservation>, StoreError> {
        self.read_observations(units, indicator, start, end)
    }
}

#[cfg(test)]
mod write_tests;

#[cfg(test)]
mod tests;
