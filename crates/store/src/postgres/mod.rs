//! The PostgreSQL store (`[store] url = "postgresql://..."`).
//!
//! Layout, and why:
//! - `observations` is keyed by (indicator, unit, source, entity, day): a
//!   run's rows go in with one `INSERT ... ON CONFLICT DO UPDATE` over
//!   arrays, so re-collection replaces and never adds, and traceability
//!   reads a unit's rows in key order. Text columns collate as bytes, the
//!   order the SQLite store lists them in.
//! - Sums over a period are computed by the server: the months it covers
//!   whole from `observation_months` (per key and month: the sum, the last
//!   observed day and its value), which every write transaction sums again
//!   for the months it touched, the days of the months it cuts from the raw
//!   rows. The whole months are kept in this process (`month_cache.rs`):
//!   every write stamps the month rows it sums with its `store_version`,
//!   and each read first fetches the rows stamped since the version its
//!   cache is at, so a read never serves what another process (replica,
//!   `tallyd collect`) has since replaced.
//! - Coverage and resume points fold a source's runs with the same code as
//!   the SQLite store ([`SourceRuns`]), reading only the runs that matter:
//!   those overlapping the period, and for the uncovered days those from
//!   the first run that named any.
//! - `store_version` is bumped in every write transaction; the version each
//!   commit of this process produced is remembered, so `written_elsewhere`
//!   tells another process's commit from its own.
//!
//! The client is the synchronous `postgres` crate with an r2d2 pool: the
//! [`Store`] trait is synchronous and called on blocking threads.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::NaiveDate;
use postgres::{Config, GenericClient, NoTls, Row};
use r2d2_postgres::r2d2::{Pool, PooledConnection};

use super::sqlite::{Checked, SourceRuns, check_run, day_num, num_day, parse_uncovered};
use super::{
    Coverage, EntityValue, LastSuccess, LatestRun, ObservationCursor, OwnData, OwnValue,
    ResumePoint, RunCounts, RunRecord, RunResult, RunToRecord, SourceStatus, Store, StoreError,
    StoredObservation, StoredRun,
};
use tally_domain::{Kind, Observation};

mod coordination;
mod import;
mod month_cache;
mod reads;
mod schema;
mod session;
#[cfg(any(test, feature = "test-cluster"))]
pub mod test_cluster;
mod writer;

use session::Manager;

/// Connections a store keeps: a writer, and readers for the API and
/// summaries beside it.
const POOL_SIZE: u32 = 4;

/// How long a call waits for a connection (the server down, or every
/// connection busy) before it fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PostgresStore {
    /// `Some` until dropped (see the `Drop` impl).
    pool: Option<Pool<Manager>>,
    /// Where, for messages: never the password.
    database: String,
    /// Held while this process writes, so that its commits and the versions
    /// they produced are recorded together (`written_elsewhere`).
    writes: Mutex<Versions>,
    /// Whole-month sums, exact at the `store_version` they were brought to.
    months: Mutex<month_cache::MonthCache>,
}

/// The `store_version` this process last looked at, and the versions its
/// own commits produced since.
struct Versions {
    seen: i64,
    mine: BTreeSet<i64>,
}

/// Where a configuration points, without its password: what every message
/// about the database names.
pub fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
            #[cfg(unix)]
            postgres::config::Host::Unix(path) => format!("{}:{port}", path.display()),
        })
        .collect();
    format!(
        "PostgreSQL database \"{}\" on {} as user \"{}\"",
        config.get_dbname().unwrap_or("(the user's)"),
        if hosts.is_empty() {
            "the default host".to_owned()
        } else {
            hosts.join(", ")
        },
        config.get_user().unwrap_or("(the login user)")
    )
}

impl PostgresStore {
    /// Connects to the database `url` names (a `postgresql://` URL or a
    /// `key=value` connection string) and brings its schema up to date.
    pub fn open(url: &str) -> Result<PostgresStore, StoreError> {
        off_async(|| PostgresStore::open_here(url))
    }

    fn open_here(url: &str) -> Result<PostgresStore, StoreError> {
        let mut config: Config = url.parse().map_err(|source| StoreError::Connect {
            // Not even the text: it may hold the password.
            database: "the PostgreSQL database of [store] url".to_owned(),
            source,
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("tallyd");
        let database = describe(&config);
        let mut client = config
            .connect(NoTls)
            .map_err(|source| StoreError::Connect {
                database: database.clone(),
                source,
            })?;
        schema::migrate(&mut client, &database)?;
        let seen = current_version(&mut client)?;
        drop(client);
        let pool = Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CONNECT_TIMEOUT)
            .build_unchecked(Manager { config });
        Ok(PostgresStore {
            pool: Some(pool),
            database,
            writes: Mutex::new(Versions {
                seen,
                mine: BTreeSet::new(),
            }),
            months: Mutex::new(month_cache::MonthCache::new(month_cache::MONTH_CACHE_ROWS)),
        })
    }

    /// Where the store is, without the password.
    pub fn database(&self) -> &str {
        &self.database
    }

    fn conn(&self, doing: &'static str) -> Result<PooledConnection<Manager>, StoreError> {
        self.pool
            .as_ref()
            .expect("the pool lives until the store is dropped")
            .get()
            .map_err(|source| StoreError::Pool { doing, source })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        let pool = self.pool.take();
        // Closing a connection blocks on its runtime (see `off_async`).
        off_async(move || drop(pool));
    }
}

/// Runs `f` on a thread of its own. The `postgres` client blocks on a tokio
/// runtime of its own, which tokio refuses (panics) on a thread that drives
/// async tasks, and the daemon does call its store there (reading resume
/// points while it builds its engine, for one); tokio offers no way to ask
/// which kind of thread this is, so every call runs apart. A thread costs
/// tens of microseconds, small beside a round trip to the server; a pool of
/// worker threads is the next step should it show in the figures.
fn off_async<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn current_version(client: &mut impl GenericClient) -> Result<i64, StoreError> {
    client
        .query_one("SELECT version FROM store_version", &[])
        .and_then(|r| r.try_get(0))
        .map_err(|source| StoreError::Postgres {
            doing: "reading the store's version",
            source,
        })
}

/// A panic while the lock was held dropped its transaction, which rolls
/// back, so what the lock guards is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn pg(doing: &'static str) -> impl Fn(postgres::Error) -> StoreError {
    move |source| StoreError::Postgres { doing, source }
}

fn from_millis(ms: i64) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    chrono::DateTime::from_timestamp_millis(ms).ok_or_else(|| StoreError::Corrupt {
        what: "timestamp",
        detail: format!("{ms} is out of range"),
    })
}

impl Store for PostgresStore {
    fn record_run(
        &self,
        run: &RunRecord,
        observations: &[Observation],
        state: Option<&serde_json::Value>,
    ) -> Result<i64, StoreError> {
        off_async(|| {
            let checked = check_run(run, observations, state)?;
            Ok(self.write(&[&checked])?[0])
        })
    }

    fn record_runs(&self, runs: &[RunToRecord]) -> Vec<Result<i64, StoreError>> {
        off_async(|| self.record_runs_together(runs))
    }

    fn source_status(&self, source: &str) -> Result<SourceStatus, StoreError> {
        off_async(|| self.read_source_status(source))
    }

    fn resume_point(&self, source: &str) -> Result<ResumePoint, StoreError> {
        off_async(|| self.read_resume_point(source))
    }

    fn recent_runs(&self, source: &str, limit: usize) -> Result<Vec<StoredRun>, StoreError> {
        off_async(|| self.read_recent_runs(source, limit))
    }

    fn source_statuses(
        &self,
        sources: &[&str],
        reach: usize,
    ) -> Result<Vec<(SourceStatus, Option<StoredRun>)>, StoreError> {
        off_async(|| self.read_source_statuses(sources, reach))
    }

    fn latest_runs(&self, sources: &[&str]) -> Result<Vec<LatestRun>, StoreError> {
        off_async(|| self.read_latest_runs(sources))
    }

    fn runs(&self, ids: &[i64]) -> Result<Vec<StoredRun>, StoreError> {
        off_async(|| self.read_runs(ids))
    }

    fn own_values(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        indicators: &[(String, Kind)],
    ) -> Result<Vec<OwnValue>, StoreError> {
        off_async(|| self.read_own_values(start, end, indicators))
    }

    fn own_values_indexed(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        indicators: &[(String, Kind)],
        unit_index: &dyn Fn(&str) -> Option<usize>,
    ) -> Result<Vec<(usize, usize, OwnData)>, StoreError> {
        self.read_own_values_indexed(start, end, indicators, unit_index)
    }

    fn entity_values(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        indicators: &[(String, Kind)],
    ) -> Result<Vec<EntityValue>, StoreError> {
        off_async(|| self.read_entity_values(start, end, indicators))
    }

    fn coverage(
        &self,
        source: &str,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<Coverage, StoreError> {
        Ok(off_async(|| self.read_coverages(&[source], start, end))?.remove(0))
    }

    fn coverages(
        &self,
        sources: &[&str],
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<Vec<Coverage>, StoreError> {
        off_async(|| self.read_coverages(sources, start, end))
    }

    fn observations(
        &self,
        units: &[&str],
        indicator: &str,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<Vec<StoredObservation>, StoreError> {
        off_async(|| self.read_observations_page(units, indicator, start, end, None, usize::MAX))
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
        off_async(|| self.read_observations_page(units, indicator, start, end, after, limit))
    }

    fn first_day(&self) -> Result<Option<NaiveDate>, StoreError> {
        off_async(|| self.read_first_day())
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        off_async(|| self.try_writing())
    }

    fn written_elsewhere(&self) -> Result<bool, StoreError> {
        off_async(|| self.read_written_elsewhere())
    }
}

impl PostgresStore {
    fn read_first_day(&self) -> Result<Option<NaiveDate>, StoreError> {
        let doing = "reading the first observed day";
        self.conn(doing)?
            .query_one("SELECT MIN(day) FROM observations", &[])
            .and_then(|r| r.try_get(0))
            .map_err(pg(doing))
    }

    fn try_writing(&self) -> Result<(), StoreError> {
        let doing = "checking that the database is writable";
        let mut conn = self.conn(doing)?;
        // The row every write transaction updates: locking it is what a
        // run's commit needs, and fails on a read-only server (a standby,
        // `default_transaction_read_only`); rolling back writes nothing.
        let mut tx = conn.transaction().map_err(pg(doing))?;
        tx.batch_execute("SET LOCAL lock_timeout = '10s'")
            .map_err(pg(doing))?;
        tx.execute("SELECT version FROM store_version FOR UPDATE", &[])
            .map_err(pg(doing))?;
        tx.rollback().map_err(pg(doing))
    }

    fn read_written_elsewhere(&self) -> Result<bool, StoreError> {
        let mut versions = match self.writes.try_lock() {
            Ok(versions) => versions,
            // This process is committing a run, after which /metrics is
            // rebuilt anyway; another process's commit shows at the next
            // call, since `seen` stays where it was.
            Err(std::sync::TryLockError::WouldBlock) => return Ok(false),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        let now =
            current_version(&mut self.conn("checking whether another process wrote")?.client)?;
        let Versions { seen, mine } = &mut *versions;
        // Versions only grow, one a commit: every version in (seen, now]
        // that this process did not produce is another's commit.
        let own = mine.range(*seen + 1..=now).count() as i64;
        let changed = now - *seen > own;
        *mine = mine.split_off(&(now + 1));
        *seen = now.max(*seen);
        Ok(changed)
    }
}

/// The columns of a run row, in the order [`stored_run`] reads them.
const RUN_COLUMNS: &str = "id, source, trigger, started_at, finished_at, result, error, \
     window_from, window_to, warnings, observations, http_requests, uncovered, error_kind, \
     retry_after";
/// How many columns [`RUN_COLUMNS`] names.
const RUN_COLUMN_COUNT: usize = 15;

fn stored_run(r: &Row) -> Result<StoredRun, StoreError> {
    stored_run_at(r, 0)
}

/// A run from [`RUN_COLUMNS`] starting at column `at` of `r`.
fn stored_run_at(r: &Row, at: usize) -> Result<StoredRun, StoreError> {
    let e = pg("reading a run");
    let id: i64 = r.try_get(at).map_err(e)?;
    let result: String = r.try_get(at + 5).map_err(pg("reading a run"))?;
    let result = RunResult::parse(&result).ok_or_else(|| StoreError::Corrupt {
        what: "run result",
        detail: format!("run {id} has result \"{result}\""),
    })?;
    let e = pg("reading a run");
    let warnings: String = r.try_get(at + 9).map_err(&e)?;
    let warnings = serde_json::from_str(&warnings).map_err(|err| StoreError::Corrupt {
        what: "run warnings",
        detail: format!("run {id}: {err}"),
    })?;
    let gaps: Option<String> = r.try_get(at + 12).map_err(&e)?;
    let n: i64 = r.try_get(at + 10).map_err(&e)?;
    let http: Option<i64> = r.try_get(at + 11).map_err(&e)?;
    let after: Option<i64> = r.try_get(at + 14).map_err(&e)?;
    Ok(StoredRun {
        id,
        run: RunRecord {
            source: r.try_get(at + 1).map_err(&e)?,
            trigger: r.try_get(at + 2).map_err(&e)?,
            started_at: from_millis(r.try_get(at + 3).map_err(&e)?)?,
            finished_at: from_millis(r.try_get(at + 4).map_err(&e)?)?,
            result,
            error: r.try_get(at + 6).map_err(&e)?,
            window_from: r.try_get(at + 7).map_err(&e)?,
            window_to: r.try_get(at + 8).map_err(&e)?,
            warnings,
            http_requests: http.and_then(|n| u64::try_from(n).ok()),
            uncovered: match gaps {
                Some(text) => parse_uncovered(id, &text)?
                    .into_iter()
                    .map(|(a, b)| Ok((num_day(a)?, num_day(b)?)))
                    .collect::<Result<_, StoreError>>()?,
                None => Vec::new(),
            },
            error_kind: r.try_get(at + 13).map_err(&e)?,
            retry_after: after.map(from_millis).transpose()?,
        },
        observations_written: u64::try_from(n).unwrap_or(0),
    })
}

/// Folds runs (`id, result, window_from, window_to, finished_at, uncovered`
/// in the first columns of each row, in id order) as the SQLite store's run
/// index does.
fn fold_runs<'r>(rows: impl IntoIterator<Item = &'r Row>) -> Result<SourceRuns, StoreError> {
    let e = pg("reading runs");
    let mut folded = SourceRuns::default();
    for r in rows {
        let id: i64 = r.try_get(0).map_err(&e)?;
        let result: &str = r.try_get(1).map_err(&e)?;
        let result = RunResult::parse(result).ok_or_else(|| StoreError::Corrupt {
            what: "run result",
            detail: format!("run {id} has result \"{result}\""),
        })?;
        let from: NaiveDate = r.try_get(2).map_err(&e)?;
        let to: NaiveDate = r.try_get(3).map_err(&e)?;
        let finished: i64 = r.try_get(4).map_err(&e)?;
        let gaps = match r.try_get::<_, Option<&str>>(5).map_err(&e)? {
            Some(text) => parse_uncovered(id, text)?,
            None => Vec::new(),
        };
        folded.add(id, result, (day_num(from), day_num(to)), &gaps, finished);
    }
    Ok(folded)
}

/// A source's last success (`id, finished_at, window_to`): the latest by
/// finish time, as the SQLite store's run index keeps it. `$1` is the source.
const LAST_SUCCESS: &str = "SELECT id, finished_at, window_to FROM runs \
     WHERE source = $1 AND result = 'success' ORDER BY finished_at DESC, id DESC LIMIT 1";

/// [`LAST_SUCCESS`]'s three columns, from column `at` of `row` (all NULL:
/// none).
fn last_success(row: &Row, at: usize) -> Result<Option<LastSuccess>, StoreError> {
    let e = pg("reading a source's last success");
    let Some(run_id) = row.try_get::<_, Option<i64>>(at).map_err(&e)? else {
        return Ok(None);
    };
    Ok(Some(LastSuccess {
        run_id,
        finished_at: from_millis(row.try_get(at + 1).map_err(&e)?)?,
        window_to: row.try_get(at + 2).map_err(&e)?,
    }))
}

/// A source's resume state (JSON text) from column `at` of `row`.
fn resume_state(
    row: &Row,
    at: usize,
    source: &str,
) -> Result<Option<serde_json::Value>, StoreError> {
    let e = pg("reading a source's resume state");
    row.try_get::<_, Option<&str>>(at)
        .map_err(&e)?
        .map(|text| {
            serde_json::from_str(text).map_err(|err| StoreError::Corrupt {
                what: "resume state",
                detail: format!("source \"{source}\": {err}"),
            })
        })
        .transpose()
}

/// A source's runs counted by result, from `{"result": count, ...}` (NULL:
/// no run).
fn counts(by_result: Option<&str>, source: &str) -> Result<RunCounts, StoreError> {
    let mut counts = RunCounts::default();
    let Some(text) = by_result else {
        return Ok(counts);
    };
    let by_result: HashMap<&str, u64> =
        serde_json::from_str(text).map_err(|err| StoreError::Corrupt {
            what: "run counts",
            detail: format!("source \"{source}\": {err}"),
        })?;
    for (result, n) in by_result {
        match RunResult::parse(result) {
            Some(RunResult::Success) => counts.success = n,
            Some(RunResult::Error) => counts.error = n,
            Some(RunResult::Timeout) => counts.timeout = n,
            Some(RunResult::Panic) => counts.panic = n,
            Some(RunResult::Crash) => counts.crash = n,
            None => {
                return Err(StoreError::Corrupt {
                    what: "run result",
                    detail: format!("source \"{source}\" has runs with result \"{result}\""),
                });
            }
        }
    }
    Ok(counts)
}

/// One key's (source, unit, indicator, entity) values over a period:
/// `(unit, indicator, entity, sum, value on the last day)`.
type KeyFold = (String, String, String, f64, f64);

/// Own values of the kinds asked for, from per-key folds.
fn own_from_keys(
    keys: impl Iterator<Item = KeyFold>,
    indicators: &[(String, Kind)],
) -> Vec<OwnValue> {
    use std::collections::BTreeMap;
    let kind = |ind: &str| indicators.iter().find(|(i, _)| i == ind).map(|(_, k)| *k);
    let mut numbers: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut sets: BTreeMap<(String, String), BTreeMap<String, f64>> = BTreeMap::new();
    for (unit, indicator, entity, sum, last) in keys {
        match kind(&indicator) {
            None => {}
            Some(Kind::Count) => *numbers.entry((unit, indicator)).or_insert(0.0) += sum,
            Some(Kind::Level) => *numbers.entry((unit, indicator)).or_insert(0.0) += last,
            Some(Kind::Distinct) => {
                *sets
                    .entry((unit, indicator))
                    .or_default()
                    .entry(entity)
                    .or_insert(0.0) += sum;
            }
        }
    }
    numbers
        .into_iter()
        .map(|((unit, indicator), n)| OwnValue {
            unit,
            indicator,
            data: OwnData::Number(n),
        })
        .chain(sets.into_iter().map(|((unit, indicator), m)| {
            OwnValue {
                unit,
                indicator,
                data: OwnData::Entities(
                    m.into_iter()
                        .filter(|&(_, v)| v != 0.0)
                        .map(|(k, _)| k)
                        .collect(),
                ),
            }
        }))
        .collect()
}

#[cfg(test)]
mod tests;
