//! Durable storage of observations, run records and plugin resume state.
//!
//! [`Store`] is deliberately narrow: the embedded SQLite store
//! ([`SqliteStore`]) and the PostgreSQL one ([`PostgresStore`]) answer alike,
//! which one contract suite checks (`contract_tests`), and the rest of the
//! daemon does not notice which it has.
//!
//! Architecture invariant: a run's observations, its run record and the
//! plugin's resume state commit in one transaction ([`Store::record_run`]),
//! so a crash never leaves numbers without the run that explains them, nor a
//! resume state that skips data that was never stored.

#![forbid(unsafe_code)]

mod coordination;
pub mod copy;
mod lock;
mod month_lru;
mod postgres;
mod sqlite;

use std::collections::HashMap;
use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use thiserror::Error;

pub use coordination::{
    Claim, Coordination, Due, Foreign, PlanTicks, Planned, Schedule, ScheduleStatus, Share,
};
pub use lock::{DataDirLock, Holder, LOCK_FILE, LockError};
pub use postgres::PostgresStore;
#[cfg(any(test, feature = "test-cluster"))]
pub use postgres::test_cluster as pg_test_cluster;
pub use sqlite::SqliteStore;
pub use tally_domain::OwnData;
use tally_domain::{Kind, Observation};

pub trait Store: Send + Sync + 'static {
    /// One transaction: upsert every observation by (source, unit, indicator,
    /// entity, day), so re-collection replaces and never adds; insert the run
    /// record; and, only when `state` is `Some`, replace the source's resume
    /// state. Returns the run id. Either all of it is durable or none.
    fn record_run(
        &self,
        run: &RunRecord,
        observations: &[Observation],
        state: Option<&serde_json::Value>,
    ) -> Result<i64, StoreError>;

    /// Records several runs at once, each exactly as [`Store::record_run`]
    /// would (same checks, same upserts, its own run id), and answers for
    /// each in order. A store may commit them together, so that many small
    /// runs share one commit; then, if that shared transaction fails, it
    /// records them again one transaction each, so that one run that cannot
    /// be stored never costs another its place. Either way a run is durable
    /// only when its answer is `Ok`.
    fn record_runs(&self, runs: &[RunToRecord]) -> Vec<Result<i64, StoreError>> {
        runs.iter()
            .map(|r| self.record_run(&r.run, &r.observations, r.state.as_ref()))
            .collect()
    }

    fn source_status(&self, source: &str) -> Result<SourceStatus, StoreError>;

    /// What a run needs of its source's past (when the latest run started,
    /// the last success, the resume state), read without counting or
    /// scanning the source's runs, so that a run costs the same after a
    /// million runs as after one.
    fn resume_point(&self, source: &str) -> Result<ResumePoint, StoreError>;

    /// The latest runs of `source`, newest first.
    fn recent_runs(&self, source: &str, limit: usize) -> Result<Vec<StoredRun>, StoreError>;

    /// The latest run of `source` that failed with an error, looked for
    /// among its latest `reach` runs only (so that a source that never
    /// fails costs `reach` rows, not all its runs). The default reads them;
    /// PostgreSQL filters on the server in [`Store::source_statuses`], which
    /// is what the sources pages call.
    fn latest_error(&self, source: &str, reach: usize) -> Result<Option<StoredRun>, StoreError> {
        Ok(self
            .recent_runs(source, reach)?
            .into_iter()
            .find(|r| r.run.error.is_some()))
    }

    /// What the sources page shows of each of `sources`, in their order:
    /// its [`Store::source_status`] and its [`Store::latest_error`] among its
    /// latest `reach` runs. The default asks source by source; a backend that
    /// can read them together does so.
    fn source_statuses(
        &self,
        sources: &[&str],
        reach: usize,
    ) -> Result<Vec<(SourceStatus, Option<StoredRun>)>, StoreError> {
        sources
            .iter()
            .map(|s| Ok((self.source_status(s)?, self.latest_error(s, reach)?)))
            .collect()
    }

    /// The runs with these ids, in the order of `ids`; ids that do not
    /// exist are left out. For traceability: the run behind an observation.
    fn runs(&self, ids: &[i64]) -> Result<Vec<StoredRun>, StoreError>;

    /// Own (not rolled-up) values per (unit, indicator) over `[start, end]`:
    /// `count` sums over days, entities and sources; `level` takes, for each
    /// (source, entity), the value on its last observed day in the period and
    /// sums those; `distinct` is the set of entities whose summed value is not
    /// zero. Indicators not listed are left out; units and indicators with no
    /// observation in the period are absent. The order is unspecified.
    fn own_values(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        indicators: &[(String, Kind)],
    ) -> Result<Vec<OwnValue>, StoreError>;

    /// [`Store::own_values`] named by the caller's dense indices, for
    /// summaries that fold thousands of values: `(unit_index(unit), position
    /// of the indicator in indicators, data)`; units for which `unit_index`
    /// is `None` are left out. The default maps [`Store::own_values`]; a
    /// backend that interns ids maps each distinct id once instead.
    fn own_values_indexed(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        indicators: &[(String, Kind)],
        unit_index: &dyn Fn(&str) -> Option<usize>,
    ) -> Result<Vec<(usize, usize, OwnData)>, StoreError> {
        let position: HashMap<&str, usize> = indicators
            .iter()
            .enumerate()
            .map(|(n, (id, _))| (id.as_str(), n))
            .collect();
        Ok(self
            .own_values(start, end, indicators)?
            .into_iter()
            .filter_map(|o| {
                let unit = unit_index(&o.unit)?;
                Some((unit, *position.get(o.indicator.as_str())?, o.data))
            })
            .collect())
    }

    /// Values per (unit, indicator, entity) over `[start, end]`, for
    /// per-entity targets: `count` and `distinct` sum over days and sources;
    /// `level` takes, for each source, the value on the entity's last
    /// observed day in the period and sums those over sources, so that a
    /// unit's entity values add up to its [`Store::own_values`] number.
    /// Indicators not listed are left out; the order is unspecified.
    fn entity_values(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        indicators: &[(String, Kind)],
    ) -> Result<Vec<EntityValue>, StoreError>;

    /// How completely `source` covered `[start, end]`.
    fn coverage(
        &self,
        source: &str,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<Coverage, StoreError>;

    /// [`Store::coverage`] of each of `sources`, in the same order, read
    /// together (a summary asks for every source behind the table).
    fn coverages(
        &self,
        sources: &[&str],
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<Vec<Coverage>, StoreError> {
        sources
            .iter()
            .map(|source| self.coverage(source, start, end))
            .collect()
    }

    /// The stored observations behind one figure, for traceability, ordered
    /// by unit, source, entity and day.
    fn observations(
        &self,
        units: &[&str],
        indicator: &str,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<Vec<StoredObservation>, StoreError>;

    /// [`Store::observations`] a page at a time: at most `limit`
    /// observations in the same order, starting just after `after` (from the
    /// first when `None`), so that an answer never holds more than a page
    /// however many observations a figure has. A cursor whose unit is not
    /// among `units` gives an empty page. The default filters the whole
    /// list; a backend that can seek does so instead.
    fn observations_page(
        &self,
        units: &[&str],
        indicator: &str,
        start: NaiveDate,
        end: NaiveDate,
        after: Option<&ObservationCursor>,
        limit: usize,
    ) -> Result<Vec<StoredObservation>, StoreError> {
        let rank = |unit: &str| units.iter().position(|u| *u == unit);
        let resume = match after {
            None => None,
            Some(cursor) => match rank(&cursor.unit) {
                Some(position) => Some((position, cursor)),
                None => return Ok(Vec::new()),
            },
        };
        Ok(self
            .observations(units, indicator, start, end)?
            .into_iter()
            .filter(|stored| {
                let Some((position, cursor)) = resume else {
                    return true;
                };
                let o = &stored.observation;
                let key = (rank(&o.unit), o.source.as_str(), o.entity.as_str(), o.day);
                key > (
                    Some(position),
                    cursor.source.as_str(),
                    cursor.entity.as_str(),
                    cursor.day,
                )
            })
            .take(limit)
            .collect())
    }

    /// The earliest day of any stored observation; `None` for an empty
    /// store. Where catching up missed quarterly reports starts.
    fn first_day(&self) -> Result<Option<NaiveDate>, StoreError>;

    /// Whether a run could commit now: takes the write lock and lets it go
    /// without writing (`/readyz`). Fails when the database is read-only,
    /// locked beyond the busy timeout, or gone.
    fn check_writable(&self) -> Result<(), StoreError>;

    /// Whether another process (`tallyd collect` beside the daemon) committed
    /// to the store since the last call (the first call: since the store was
    /// opened). Cheap: the daemon asks every few seconds, to rebuild
    /// `/metrics` when someone else wrote. A store that cannot tell answers
    /// `false`.
    fn written_elsewhere(&self) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// The latest run of each of `sources` (its result and when it finished)
    /// and its last success, in the order of `sources`; sources without a
    /// run are left out. What the state gauges of `/metrics` show, so that
    /// every replica on one database shows the same whoever ran the source.
    /// The default asks source by source; a backend that can read them
    /// together does so.
    fn latest_runs(&self, sources: &[&str]) -> Result<Vec<LatestRun>, StoreError> {
        let mut out = Vec::new();
        for source in sources {
            let Some(last) = self.recent_runs(source, 1)?.into_iter().next() else {
                continue;
            };
            out.push(LatestRun {
                source: (*source).to_owned(),
                result: last.run.result,
                finished_at: last.run.finished_at,
                last_success: self
                    .resume_point(source)?
                    .last_success
                    .map(|s| s.finished_at),
            });
        }
        Ok(out)
    }
}

/// A source's latest run and last success ([`Store::latest_runs`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LatestRun {
    pub source: String,
    /// The result of the latest run (the highest run id).
    pub result: RunResult,
    pub finished_at: DateTime<Utc>,
    /// When the last successful run finished (the latest by finish time, as
    /// [`ResumePoint::last_success`]).
    pub last_success: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunResult {
    Success,
    Error,
    Timeout,
    Panic,
    /// An isolated plugin process died (segfault, abort, out of memory).
    Crash,
}

impl RunResult {
    pub const ALL: [RunResult; 5] = [
        RunResult::Success,
        RunResult::Error,
        RunResult::Timeout,
        RunResult::Panic,
        RunResult::Crash,
    ];

    /// The `result` label of `tally_source_runs_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Success => "success",
            RunResult::Error => "error",
            RunResult::Timeout => "timeout",
            RunResult::Panic => "panic",
            RunResult::Crash => "crash",
        }
    }

    pub fn parse(s: &str) -> Option<RunResult> {
        RunResult::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub source: String,
    /// `schedule`, `manual`, `start` or `backfill`.
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub result: RunResult,
    pub error: Option<String>,
    /// The days the run was asked to collect, inclusive.
    pub window_from: NaiveDate,
    pub window_to: NaiveDate,
    pub warnings: Vec<String>,
    /// HTTP requests the plugin made through the daemon during the run (its
    /// API calls); `None` when not counted (an isolated plugin does its own).
    pub http_requests: Option<u64>,
    /// Days of the window a successful run said it did not cover, as sorted,
    /// disjoint, inclusive ranges inside the window; empty when it covered
    /// all of it (and for a failed run, which covers nothing).
    pub uncovered: Vec<(NaiveDate, NaiveDate)>,
    /// Why a run with result `error` failed: the plugin's error kind
    /// (`upstream`, `rate_limited`, ...) or `protocol`; `None` otherwise.
    pub error_kind: Option<String>,
    /// The plugin's retry-after: when the platform accepts requests again.
    pub retry_after: Option<DateTime<Utc>>,
}

/// One run for [`Store::record_runs`]: what [`Store::record_run`] takes, owned,
/// so that it can wait in a queue for the next commit.
#[derive(Debug, Clone, PartialEq)]
pub struct RunToRecord {
    pub run: RunRecord,
    pub observations: Vec<Observation>,
    /// Replaces the source's resume state when `Some`.
    pub state: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredRun {
    pub id: i64,
    pub run: RunRecord,
    pub observations_written: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LastSuccess {
    pub run_id: i64,
    pub finished_at: DateTime<Utc>,
    pub window_to: NaiveDate,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCounts {
    pub success: u64,
    pub error: u64,
    pub timeout: u64,
    pub panic: u64,
    pub crash: u64,
}

impl RunCounts {
    pub fn get(&self, result: RunResult) -> u64 {
        match result {
            RunResult::Success => self.success,
            RunResult::Error => self.error,
            RunResult::Timeout => self.timeout,
            RunResult::Panic => self.panic,
            RunResult::Crash => self.crash,
        }
    }
}

/// See [`Store::resume_point`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResumePoint {
    /// When the latest run, whatever its result, started.
    pub last_run_started: Option<DateTime<Utc>>,
    pub last_success: Option<LastSuccess>,
    pub state: Option<serde_json::Value>,
    /// The days successful runs named uncovered and no later successful run
    /// covered, as sorted, disjoint, inclusive ranges: where the next run's
    /// window may have to reach back to. Empty for most sources.
    pub uncovered: Vec<(NaiveDate, NaiveDate)>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SourceStatus {
    /// The latest run, whatever its result.
    pub last_run: Option<StoredRun>,
    pub last_success: Option<LastSuccess>,
    pub state: Option<serde_json::Value>,
    pub runs: RunCounts,
}

/// The own value of one unit for one indicator.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnValue {
    pub unit: String,
    pub indicator: String,
    pub data: OwnData,
}

/// The value of one entity of one unit for one indicator over a period.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityValue {
    pub unit: String,
    pub indicator: String,
    /// May be empty: observations a source made for the unit as a whole.
    pub entity: String,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Coverage {
    pub start: NaiveDate,
    pub end: NaiveDate,
    /// Days of `[start, end]` covered: inside the window of a successful run
    /// that did not name them uncovered, and not named uncovered by a later
    /// successful run.
    pub covered_days: i64,
    /// The stretches of `[start, end]` not covered, inclusive: no successful
    /// run asked for them, or the latest one that did named them uncovered.
    pub gaps: Vec<(NaiveDate, NaiveDate)>,
    /// Runs that did not succeed and whose window overlaps `[start, end]`.
    pub failed_runs: u64,
    /// The latest success of the source, whatever its window.
    pub last_success: Option<DateTime<Utc>>,
}

impl Coverage {
    pub fn is_complete(&self) -> bool {
        self.gaps.is_empty() && self.failed_runs == 0
    }
}

/// A position in the order of [`Store::observations`]: the last
/// observation of a page, after which the next page starts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObservationCursor {
    pub unit: String,
    pub source: String,
    pub entity: String,
    pub day: NaiveDate,
}

impl ObservationCursor {
    /// The position of `o`.
    pub fn of(o: &Observation) -> ObservationCursor {
        ObservationCursor {
            unit: o.unit.clone(),
            source: o.source.clone(),
            entity: o.entity.clone(),
            day: o.day,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredObservation {
    pub observation: Observation,
    pub run_id: i64,
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open database {path}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "database {path} has schema version {found}, this tallyd knows versions up to {known}: run a newer tallyd or point data_dir elsewhere"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("migrating database {path} to schema version {version}")]
    Migrate {
        path: PathBuf,
        version: i64,
        source: rusqlite::Error,
    },
    #[error("database error while {doing}")]
    Sqlite {
        doing: &'static str,
        source: rusqlite::Error,
    },
    #[error("stored {what} is invalid: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("run of source \"{source_id}\" cannot be stored: {detail}")]
    Invalid { source_id: String, detail: String },
    #[error("cannot connect to {database}")]
    Connect {
        /// Where, without the password: host, port, database and user.
        database: String,
        source: ::postgres::Error,
    },
    #[error(
        "{database} has schema version {found}, this tallyd knows versions up to {known}: run a newer tallyd or point [store] url elsewhere"
    )]
    TooNewDatabase {
        database: String,
        found: i64,
        known: i64,
    },
    #[error("migrating {database} to schema version {version}")]
    MigrateDatabase {
        database: String,
        version: i64,
        source: ::postgres::Error,
    },
    #[error("database error while {doing}")]
    Postgres {
        doing: &'static str,
        source: ::postgres::Error,
    },
    #[error("no database connection while {doing}")]
    Pool {
        doing: &'static str,
        source: r2d2_postgres::r2d2::Error,
    },
    #[error("resume state of source \"{source_id}\" cannot be stored")]
    State {
        source_id: String,
        source: serde_json::Error,
    },
}

#[cfg(test)]
mod contract_tests;
