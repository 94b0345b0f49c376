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
//!   in memory ([`MonthCache`]) and uses a cached month only while its
//!   version, read in the same snapshot as everything else, is unchanged: a
//!   summary over past months folds memory, never stale rows, whichever
//!   process wrote.
//! - `runs` and `source_state` are small: a few rows a source a day.
//!
//! The writer reads, per key, what is stored over the months a run touches,
//! which both tells the run's rows apart (new, changed, the same again) and
//! completes each touched month; it then writes in primary-key order, new
//! rows many to a statement, and rows stored again with the same value only
//! get the run id (see [`write_run`]). Several runs may share a transaction
//! (`record_runs`), so that many small runs share one fsync.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use super::{
    Coverage, EntityValue, LastSuccess, ObservationCursor, OwnData, OwnValue, ResumePoint,
    RunCounts, RunRecord, RunResult, RunToRecord, SourceStatus, Store, StoreError,
    StoredObservation, StoredRun,
};
use crate::domain::ErrorChain;
use crate::domain::{Kind, MAX_VALUE, Observation};

/// Schema steps; step `i` takes the database from `user_version` `i` to `i + 1`.
/// Released steps are never edited, only appended to.
const MIGRATIONS: &[&str] = &[
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

pub struct SqliteStore {
    path: PathBuf,
    // Two connections so that summaries read a WAL snapshot while a run
    // commits, instead of queueing behind it.
    writer: Mutex<Writer>,
    reader: Mutex<Reader>,
}

/// The write connection and what it keeps between runs.
struct Writer {
    conn: Connection,
    keys: WriterKeys,
    scratch: Scratch,
    /// `PRAGMA data_version` when last asked: it moves only when another
    /// connection (another process) commits, never for this one's commits.
    data_version: i64,
}

/// Key ids the writer has seen, so that a run finds its keys in memory
/// instead of querying `keys` once per key. Keys are never deleted nor
/// renumbered, so a committed id stays right for the life of the database;
/// ids inserted by a transaction that then fails are forgotten with it.
#[derive(Default)]
struct WriterKeys {
    /// By source, then by [`key_text`] of unit, indicator and entity. A
    /// source is loaded whole the first time it writes, so that a key this
    /// map lacks is new (or added since by another process).
    ids: HashMap<String, HashMap<String, i64>>,
    /// Keys inserted by the transaction in progress.
    added: Vec<(String, String)>,
    /// Reused for [`key_text`].
    text: String,
}

impl WriterKeys {
    /// The id of a key, inserting it when it is new; `new` gets the ids
    /// inserted now, whose rows therefore need no reading.
    fn id(
        &mut self,
        tx: &Transaction<'_>,
        source: &str,
        o: &Observation,
        new: &mut HashSet<i64>,
    ) -> Result<i64, StoreError> {
        let e = |source| StoreError::Sqlite {
            doing: "recording a run's keys",
            source,
        };
        let WriterKeys { ids, added, text } = self;
        key_text(text, &o.unit, &o.indicator, &o.entity);
        let known = match ids.get_mut(source) {
            Some(known) => known,
            None => {
                let mut known = HashMap::new();
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT id, unit, indicator, entity FROM keys WHERE source = ?1",
                    )
                    .map_err(e)?;
                let mut rows = stmt.query([source]).map_err(e)?;
                let mut buf = String::new();
                while let Some(r) = rows.next().map_err(e)? {
                    let part = |i| r.get_ref(i).and_then(|v| Ok(v.as_str()?));
                    key_text(
                        &mut buf,
                        part(1).map_err(e)?,
                        part(2).map_err(e)?,
                        part(3).map_err(e)?,
                    );
                    known.insert(buf.clone(), r.get(0).map_err(e)?);
                }
                ids.entry(source.to_owned()).or_insert(known)
            }
        };
        if let Some(&id) = known.get(text.as_str()) {
            return Ok(id);
        }
        let args = params![source, o.unit, o.indicator, o.entity];
        let inserted = tx
            .prepare_cached(
                "INSERT INTO keys (source, unit, indicator, entity) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT DO NOTHING RETURNING id",
            )
            .map_err(e)?
            .query_row(args, |r| r.get(0))
            .optional()
            .map_err(e)?;
        let id = match inserted {
            Some(id) => {
                added.push((source.to_owned(), text.clone()));
                new.insert(id);
                id
            }
            // Another process (`tallyd collect` beside the daemon) added it
            // since the source was loaded.
            None => tx
                .prepare_cached(
                    "SELECT id FROM keys WHERE source = ?1 AND unit = ?2 AND indicator = ?3 AND entity = ?4",
                )
                .map_err(e)?
                .query_row(args, |r| r.get(0))
                .map_err(e)?,
        };
        known.insert(text.clone(), id);
        Ok(id)
    }

    /// Drops the ids inserted by a transaction that did not commit.
    fn forget_added(&mut self) {
        for (source, text) in self.added.drain(..) {
            if let Some(m) = self.ids.get_mut(&source) {
                m.remove(&text);
            }
        }
    }
}

/// Unit, indicator and entity as one map key, each part prefixed with its
/// length so that no two keys give the same text.
fn key_text(buf: &mut String, unit: &str, indicator: &str, entity: &str) {
    use std::fmt::Write;
    buf.clear();
    for part in [unit, indicator, entity] {
        let _ = write!(buf, "{}:", part.len());
        buf.push_str(part);
    }
}

/// Whether two short texts are equal: a plain loop, cheaper for ids of a
/// few bytes than a call to `memcmp` for each, which this is on every row.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

/// Buffers reused by every run, so that a big run does not allocate per row.
#[derive(Default)]
struct Scratch {
    rows: Vec<PendingRow>,
    months: Vec<MonthWrite>,
    /// Stored rows of one key: day, value.
    stored: Vec<(i64, f64)>,
    touched: Vec<i64>,
    new_keys: HashSet<i64>,
}

/// An observation of the run being written, by key id and day number;
/// `idx` is its place in the run's observations.
#[derive(Clone, Copy)]
struct PendingRow {
    key: i64,
    day: i64,
    idx: usize,
    class: RowClass,
}

/// What a row of the run does to the stored row of its key and day.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RowClass {
    New,
    Changed,
    /// The value stored is the same: only the run that observed it changes.
    Same,
}

/// A `monthly` row being computed.
struct MonthWrite {
    month: i64,
    key: i64,
    sum: f64,
    last_day: i64,
    last_value: f64,
}

/// A run whose observations and state passed [`check_run`], serialized
/// and ready to write.
struct Checked<'a> {
    run: &'a RunRecord,
    observations: &'a [Observation],
    state: Option<String>,
    warnings: String,
    /// The `uncovered` column.
    uncovered: Option<String>,
}

struct Reader {
    conn: Connection,
    keys: KeyCache,
    months: MonthCache,
    runs: RunIndex,
}

/// Every key the reader has seen, with its unit, indicator and (unit,
/// indicator) group interned, so that folding tens of thousands of keys into
/// per-unit values is indexing rather than hashing strings. Keys are only
/// ever added, so the cache is brought up to date by reading ids above the
/// highest one known.
#[derive(Default)]
struct KeyCache {
    /// Indexed by key id: the key's group and entity.
    keys: Vec<Option<(usize, String)>>,
    /// Unit (an index into `units`) and indicator (into `indicators`) of
    /// each group.
    groups: Vec<(usize, usize)>,
    group_of: HashMap<(usize, usize), usize>,
    units: Vec<String>,
    unit_of: HashMap<String, usize>,
    indicators: Vec<String>,
    indicator_of: HashMap<String, usize>,
}

/// The index of `s` in `list`, added if new.
fn intern(list: &mut Vec<String>, index: &mut HashMap<String, usize>, s: String) -> usize {
    if let Some(&i) = index.get(&s) {
        return i;
    }
    list.push(s.clone());
    index.insert(s, list.len() - 1);
    list.len() - 1
}

impl KeyCache {
    fn add(&mut self, id: usize, unit: String, indicator: String, entity: String) {
        let unit = intern(&mut self.units, &mut self.unit_of, unit);
        let ind = intern(&mut self.indicators, &mut self.indicator_of, indicator);
        let group = *self.group_of.entry((unit, ind)).or_insert_with(|| {
            self.groups.push((unit, ind));
            self.groups.len() - 1
        });
        if self.keys.len() <= id {
            self.keys.resize_with(id + 1, || None);
        }
        self.keys[id] = Some((group, entity));
    }
}

/// Rows of `monthly` the month cache keeps at most: 24 bytes each, so 24 MiB,
/// two years of 1,000 units × 20 indicators (a year summary and the year
/// before it). Beyond it, least recently used months are read again.
const MONTH_CACHE_ROWS: usize = 1 << 20;

/// Whole months of `monthly` as last read, so that a summary over months it
/// already read folds memory instead of scanning SQLite again (the past
/// rarely changes; re-collection does change it).
///
/// Each month carries the `monthly_versions` version it was read at, and a
/// fold uses it only when the version read inside the fold's own snapshot is
/// the same. Every write of `monthly` bumps the versions of its months in the
/// same transaction, so a cached month is exactly what the snapshot would
/// read, whichever process wrote: there is no window in which stale rows are
/// served, nor cached and fresh months from two states of the database mixed.
struct MonthCache {
    months: HashMap<i64, CachedMonth>,
    /// Rows held over all months, at most `capacity`.
    rows: usize,
    capacity: usize,
    /// Bumped once per fold, to find the least recently used month.
    clock: u64,
}

struct CachedMonth {
    version: i64,
    used: u64,
    /// By key id, as `monthly` returns them.
    rows: Vec<MonthRow>,
}

/// One `monthly` row in 24 bytes.
#[derive(Clone, Copy)]
struct MonthRow {
    key: u32,
    last_day: i32,
    sum: f64,
    last_value: f64,
}

impl MonthCache {
    fn new(capacity: usize) -> MonthCache {
        MonthCache {
            months: HashMap::new(),
            rows: 0,
            capacity,
            clock: 0,
        }
    }

    /// The rows of `month` if they were read at `version`.
    fn get(&mut self, month: i64, version: i64) -> Option<&[MonthRow]> {
        let clock = self.clock;
        let cached = self
            .months
            .get_mut(&month)
            .filter(|c| c.version == version)?;
        cached.used = clock;
        Some(&cached.rows)
    }

    /// Keeps `rows` as `month` at `version`, replacing an older copy. Makes
    /// room by dropping the least recently used months, never one the
    /// current fold used; a month that still does not fit is not kept.
    fn put(&mut self, month: i64, version: i64, rows: Vec<MonthRow>) {
        if let Some(old) = self.months.remove(&month) {
            self.rows -= old.rows.len();
        }
        while self.rows + rows.len() > self.capacity {
            let oldest = self
                .months
                .iter()
                .filter(|(_, c)| c.used < self.clock)
                .min_by_key(|(_, c)| c.used)
                .map(|(&m, _)| m);
            let Some(oldest) = oldest else { return };
            if let Some(old) = self.months.remove(&oldest) {
                self.rows -= old.rows.len();
            }
        }
        self.rows += rows.len();
        self.months.insert(
            month,
            CachedMonth {
                version,
                used: self.clock,
                rows,
            },
        );
    }
}

/// Every run the reader has seen, folded per source into what coverage
/// needs, so that a summary over a thousand sources with years of runs does
/// not read them all again. Runs are only ever inserted, never updated or
/// deleted, and a run's id is above every id committed before it (one
/// writer at a time), so the index is brought up to date, inside the read's
/// snapshot, by folding the runs with ids above the highest one folded.
#[derive(Default)]
struct RunIndex {
    /// The lowest id not folded yet.
    next_id: i64,
    sources: HashMap<String, SourceRuns>,
}

#[derive(Default)]
struct SourceRuns {
    /// The covered days, merged: sorted, disjoint and not adjacent (day
    /// numbers, inclusive). A successful run covers its window minus the days
    /// it named uncovered, and uncovers those days: the latest successful run
    /// asking for a day decides (in id order, which is commit order).
    covered: Vec<(i64, i64)>,
    /// The days successful runs named uncovered and no later one covered,
    /// in the same form: where the next run may have to reach back to.
    uncovered: Vec<(i64, i64)>,
    /// The windows of the other runs, each with how many runs had it (runs
    /// in a row mostly share a window, so this stays short).
    failed: Vec<((i64, i64), u64)>,
    /// The latest successful run by (`finished_at`, id): its `finished_at`,
    /// id and `window_to`.
    last_success: Option<(i64, i64, i64)>,
    /// The id of the source's latest run, whatever its result.
    last_run: i64,
    counts: RunCounts,
}

impl SourceRuns {
    /// Folds run `id`; ids come in increasing order. `gaps` are the days of
    /// the window a successful run named uncovered (sorted, inside it).
    fn add(
        &mut self,
        id: i64,
        result: RunResult,
        (from, to): (i64, i64),
        gaps: &[(i64, i64)],
        finished_at: i64,
    ) {
        self.last_run = id;
        match result {
            RunResult::Success => self.counts.success += 1,
            RunResult::Error => self.counts.error += 1,
            RunResult::Timeout => self.counts.timeout += 1,
            RunResult::Panic => self.counts.panic += 1,
            RunResult::Crash => self.counts.crash += 1,
        }
        if result != RunResult::Success {
            match self.failed.last_mut() {
                Some((window, n)) if *window == (from, to) => *n += 1,
                _ => self.failed.push(((from, to), 1)),
            }
            return;
        }
        // A backfill may finish after a scheduled run while covering older
        // days; the latest success is the one that finished last (on a tie,
        // this one: its id is higher).
        if self.last_success.is_none_or(|(at, _, _)| finished_at >= at) {
            self.last_success = Some((finished_at, id, to));
        }
        if from > to {
            return; // covers no day (the engine never makes one)
        }
        insert_days(&mut self.covered, (from, to));
        if gaps.is_empty() && self.uncovered.is_empty() {
            return;
        }
        remove_days(&mut self.uncovered, (from, to));
        for &gap in gaps {
            remove_days(&mut self.covered, gap);
            insert_days(&mut self.uncovered, gap);
        }
    }

    /// Day numbers `[s, e]`: the stretches no successful run covered, and
    /// how many other runs overlap it.
    fn coverage(&self, s: i64, e: i64) -> (Vec<(i64, i64)>, u64) {
        let mut next = s;
        let mut gaps = Vec::new();
        let first = self.covered.partition_point(|&(_, t)| t < s);
        for &(from, to) in &self.covered[first..] {
            if from > e || next > e {
                break;
            }
            if from > next {
                gaps.push((next, from - 1));
            }
            next = next.max(to + 1);
        }
        if next <= e {
            gaps.push((next, e));
        }
        let failed = self
            .failed
            .iter()
            .filter(|((from, to), _)| *to >= s && *from <= e)
            .map(|(_, n)| n)
            .sum();
        (gaps, failed)
    }
}

/// Adds the days `[from, to]` to merged ranges (sorted, disjoint, not
/// adjacent), keeping them merged.
fn insert_days(ranges: &mut Vec<(i64, i64)>, (from, to): (i64, i64)) {
    // The first range that overlaps or touches [from, to], and every one
    // after it that does, become one.
    let first = ranges.partition_point(|&(_, t)| t < from.saturating_sub(1));
    let mut last = first;
    let (mut f, mut t) = (from, to);
    while let Some(&(a, b)) = ranges.get(last)
        && a <= to.saturating_add(1)
    {
        f = f.min(a);
        t = t.max(b);
        last += 1;
    }
    ranges.splice(first..last, [(f, t)]);
}

/// Takes the days `[from, to]` out of merged ranges, keeping them merged.
fn remove_days(ranges: &mut Vec<(i64, i64)>, (from, to): (i64, i64)) {
    let first = ranges.partition_point(|&(_, t)| t < from);
    let mut last = first;
    while ranges.get(last).is_some_and(|&(a, _)| a <= to) {
        last += 1;
    }
    if first == last {
        return;
    }
    let (a, _) = ranges[first];
    let (_, b) = ranges[last - 1];
    let left = (a < from).then(|| (a, from - 1));
    let right = (b > to).then(|| (to + 1, b));
    ranges.splice(first..last, left.into_iter().chain(right));
}

/// The `uncovered` column: `None` (NULL) for no range.
fn uncovered_json(ranges: &[(NaiveDate, NaiveDate)]) -> Option<String> {
    (!ranges.is_empty()).then(|| {
        serde_json::Value::from(
            ranges
                .iter()
                .map(|&(a, b)| serde_json::Value::from(vec![day_num(a), day_num(b)]))
                .collect::<Vec<_>>(),
        )
        .to_string()
    })
}

/// Reads the `uncovered` column of run `id`.
fn parse_uncovered(id: i64, text: &str) -> Result<Vec<(i64, i64)>, StoreError> {
    serde_json::from_str::<Vec<(i64, i64)>>(text).map_err(|e| StoreError::Corrupt {
        what: "run's uncovered days",
        detail: format!("run {id}: {e}"),
    })
}

impl RunIndex {
    /// Folds the runs committed since the last call, as `tx` sees them.
    fn refresh(&mut self, tx: &Connection) -> Result<(), StoreError> {
        let e = |source| StoreError::Sqlite {
            doing: "reading runs",
            source,
        };
        let mut stmt = tx
            .prepare_cached(
                "SELECT id, source, result, window_from, window_to, finished_at, uncovered \
                 FROM runs WHERE id >= ?1 ORDER BY id",
            )
            .map_err(e)?;
        let mut rows = stmt.query([self.next_id]).map_err(e)?;
        while let Some(r) = rows.next().map_err(e)? {
            let id: i64 = r.get(0).map_err(e)?;
            let source = r.get_ref(1).and_then(|v| Ok(v.as_str()?)).map_err(e)?;
            let result = r.get_ref(2).and_then(|v| Ok(v.as_str()?)).map_err(e)?;
            let result = RunResult::parse(result).ok_or_else(|| StoreError::Corrupt {
                what: "run result",
                detail: format!("run {id} has result \"{result}\""),
            })?;
            let window = (r.get(3).map_err(e)?, r.get(4).map_err(e)?);
            let finished_at = r.get(5).map_err(e)?;
            let gaps = match r
                .get_ref(6)
                .and_then(|v| Ok(v.as_str_or_null()?))
                .map_err(e)?
            {
                Some(text) => parse_uncovered(id, text)?,
                None => Vec::new(),
            };
            let runs = match self.sources.get_mut(source) {
                Some(runs) => runs,
                None => self.sources.entry(source.to_owned()).or_default(),
            };
            runs.add(id, result, window, &gaps, finished_at);
            self.next_id = id.saturating_add(1);
        }
        Ok(())
    }

    fn coverage(
        &self,
        source: &str,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<Coverage, StoreError> {
        let (s, e) = (day_num(start), day_num(end));
        let (gaps, failed_runs, last_success) = match self.sources.get(source) {
            Some(runs) => {
                let (gaps, failed) = runs.coverage(s, e);
                (gaps, failed, runs.last_success.map(|(at, _, _)| at))
            }
            None => (if s <= e { vec![(s, e)] } else { Vec::new() }, 0, None),
        };
        let uncovered: i64 = gaps.iter().map(|(a, b)| b - a + 1).sum();
        let gaps = gaps
            .into_iter()
            .map(|(a, b)| Ok((num_day(a)?, num_day(b)?)))
            .collect::<Result<_, StoreError>>()?;
        Ok(Coverage {
            start,
            end,
            covered_days: (e - s + 1).max(0) - uncovered,
            gaps,
            failed_runs,
            last_success: last_success.map(from_millis).transpose()?,
        })
    }
}

/// Records, inside the writer's transaction, that the `monthly` rows of
/// `months` changed, so that readers stop using their cached copies (see
/// [`MonthCache`]). Every write of `monthly` calls it before committing.
fn bump_month_versions(
    tx: &Connection,
    months: impl IntoIterator<Item = i64>,
) -> Result<(), StoreError> {
    let e = |source| StoreError::Sqlite {
        doing: "recording which months changed",
        source,
    };
    let months: BTreeSet<i64> = months.into_iter().collect();
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO monthly_versions (month, version) VALUES (?1, 1) \
             ON CONFLICT (month) DO UPDATE SET version = version + 1",
        )
        .map_err(e)?;
    for month in months {
        stmt.execute([month]).map_err(e)?;
    }
    Ok(())
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
            writer: Mutex::new(Writer {
                conn: writer,
                keys: WriterKeys::default(),
                scratch: Scratch::default(),
                data_version,
            }),
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

fn configure(conn: &Connection) -> rusqlite::Result<()> {
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

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
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

/// A panic while a connection was locked dropped its transaction, which rolls
/// back, so the connection behind a poisoned lock is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

const UNIX_EPOCH_FROM_CE: i32 = 719_163;

fn day_num(d: NaiveDate) -> i64 {
    i64::from(d.num_days_from_ce() - UNIX_EPOCH_FROM_CE)
}

fn num_day(n: i64) -> Result<NaiveDate, StoreError> {
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

const RUN_COLUMNS: &str = "id, source, trigger, started_at, finished_at, result, error, \
                           window_from, window_to, warnings, observations, http_requests, uncovered, \
                           error_kind, retry_after";

/// The raw columns of a run row; converted outside the rusqlite closure so
/// that a corrupt value becomes a `StoreError` that says what was wrong.
type RunRow = (
    i64,
    String,
    String,
    i64,
    i64,
    String,
    Option<String>,
    i64,
    i64,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

fn run_row(r: &Row<'_>) -> rusqlite::Result<RunRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
        r.get(13)?,
        r.get(14)?,
    ))
}

fn stored_run(row: RunRow) -> Result<StoredRun, StoreError> {
    let (
        id,
        source,
        trigger,
        started,
        finished,
        result,
        error,
        from,
        to,
        warnings,
        n,
        http,
        gaps,
        kind,
        after,
    ) = row;
    let result = RunResult::parse(&result).ok_or_else(|| StoreError::Corrupt {
        what: "run result",
        detail: format!("run {id} has result \"{result}\""),
    })?;
    let warnings = serde_json::from_str(&warnings).map_err(|e| StoreError::Corrupt {
        what: "run warnings",
        detail: format!("run {id}: {e}"),
    })?;
    Ok(StoredRun {
        id,
        run: RunRecord {
            source,
            trigger,
            started_at: from_millis(started)?,
            finished_at: from_millis(finished)?,
            result,
            error,
            window_from: num_day(from)?,
            window_to: num_day(to)?,
            warnings,
            http_requests: http.and_then(|n| u64::try_from(n).ok()),
            uncovered: match gaps {
                Some(text) => parse_uncovered(id, &text)?
                    .into_iter()
                    .map(|(a, b)| Ok((num_day(a)?, num_day(b)?)))
                    .collect::<Result<_, StoreError>>()?,
                None => Vec::new(),
            },
            error_kind: kind,
            retry_after: after.map(from_millis).transpose()?,
        },
        observations_written: u64::try_from(n).unwrap_or(0),
    })
}

/// The fold of one key's values over the period.
#[derive(Clone, Copy, Default)]
struct Acc {
    seen: bool,
    sum: f64,
    last_day: i64,
    last_value: f64,
}

impl Acc {
    fn add(&mut self, sum: f64, last_day: i64, last_value: f64) {
        self.sum += sum;
        if !self.seen || last_day > self.last_day {
            self.last_day = last_day;
            self.last_value = last_value;
        }
        self.seen = true;
    }
}

fn key_index(id: i64, accs: &[Acc]) -> Result<usize, StoreError> {
    usize::try_from(id)
        .ok()
        .filter(|&i| i < accs.len())
        .ok_or_else(|| StoreError::Corrupt {
            what: "observation",
            detail: format!("it refers to key {id}, which does not exist"),
        })
}

/// Folds the whole months `first..=last` of `monthly` into `accs`, in month
/// order (as one scan of `monthly` would, so sums are the same to the last
/// bit), taking each month from `cache` when its version in this snapshot is
/// the one it was read at, and reading it (and caching it) otherwise.
fn fold_months(
    tx: &Connection,
    cache: &mut MonthCache,
    first: i64,
    last: i64,
    accs: &mut [Acc],
) -> Result<(), StoreError> {
    let e = |source| StoreError::Sqlite {
        doing: "reading monthly values",
        source,
    };
    cache.clock += 1;
    let versions: HashMap<i64, i64> = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT month, version FROM monthly_versions WHERE month BETWEEN ?1 AND ?2",
            )
            .map_err(e)?;
        stmt.query_map([first, last], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(e)?
            .collect::<Result<_, _>>()
            .map_err(e)?
    };
    let mut read = tx
        .prepare_cached("SELECT key, sum, last_day, last_value FROM monthly WHERE month = ?1")
        .map_err(e)?;
    for month in first..=last {
        let version = versions.get(&month).copied().unwrap_or(0);
        if let Some(rows) = cache.get(month, version) {
            fold_month_rows(rows, accs)?;
            continue;
        }
        let mut rows = Vec::new();
        let mut q = read.query([month]).map_err(e)?;
        while let Some(r) = q.next().map_err(e)? {
            let (key, last_day): (i64, i64) = (r.get(0).map_err(e)?, r.get(2).map_err(e)?);
            let corrupt = || StoreError::Corrupt {
                what: "monthly value",
                detail: format!("month {month}, key {key}, last day {last_day}"),
            };
            rows.push(MonthRow {
                key: u32::try_from(key).map_err(|_| corrupt())?,
                last_day: i32::try_from(last_day).map_err(|_| corrupt())?,
                sum: r.get(1).map_err(e)?,
                last_value: r.get(3).map_err(e)?,
            });
        }
        fold_month_rows(&rows, accs)?;
        cache.put(month, version, rows);
    }
    Ok(())
}

fn fold_month_rows(rows: &[MonthRow], accs: &mut [Acc]) -> Result<(), StoreError> {
    for r in rows {
        let i = key_index(i64::from(r.key), accs)?;
        accs[i].add(r.sum, i64::from(r.last_day), r.last_value);
    }
    Ok(())
}

impl SqliteStore {
    /// Folds every key's values over `[start, end]` (one read transaction:
    /// whole months from `monthly`, the partial edges from raw rows) and
    /// hands the keys and their folds to `f`, indexed by key id.
    fn fold_keys<R>(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        f: impl FnOnce(&KeyCache, &[Acc]) -> R,
    ) -> Result<R, StoreError> {
        let e = |source| StoreError::Sqlite {
            doing: "reading values",
            source,
        };
        let mut guard = lock(&self.reader);
        let Reader {
            conn, keys, months, ..
        } = &mut *guard;
        // One read transaction, so the key refresh and both scans see the
        // same snapshot even while a run commits.
        let tx = conn.transaction().map_err(e)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT id, unit, indicator, entity FROM keys WHERE id >= ?1 ORDER BY id",
                )
                .map_err(e)?;
            let rows = stmt
                .query_map([keys.keys.len() as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(e)?;
            for row in rows {
                let (id, unit, indicator, entity) = row.map_err(e)?;
                let id = usize::try_from(id).map_err(|_| StoreError::Corrupt {
                    what: "key",
                    detail: format!("id {id}"),
                })?;
                keys.add(id, unit, indicator, entity);
            }
        }

        let mut accs = vec![Acc::default(); keys.keys.len()];
        let (s, e_day) = (day_num(start), day_num(end));
        // Whole months come from the aggregate; only the partial months at
        // either edge are read from raw rows.
        let first_full = month_num(start) + i64::from(start.day() != 1);
        let last_full = month_num(end) - i64::from(end.succ_opt().is_some_and(|n| n.day() != 1));
        let mut raw_ranges = Vec::with_capacity(2);
        let full = if first_full <= last_full {
            match (month_days(first_full), month_days(last_full)) {
                (Some((full_from, _)), Some((_, full_to))) => Some((full_from, full_to)),
                _ => None,
            }
        } else {
            None
        };
        match full {
            Some((full_from, full_to)) => {
                fold_months(&tx, months, first_full, last_full, &mut accs)?;
                if s < full_from {
                    raw_ranges.push((s, full_from - 1));
                }
                if full_to < e_day {
                    raw_ranges.push((full_to + 1, e_day));
                }
            }
            None => raw_ranges.push((s, e_day)),
        }
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT key, day, value FROM observations WHERE day BETWEEN ?1 AND ?2",
                )
                .map_err(e)?;
            for (from, to) in raw_ranges {
                let mut rows = stmt.query(params![from, to]).map_err(e)?;
                while let Some(r) = rows.next().map_err(e)? {
                    let i = key_index(r.get(0).map_err(e)?, &accs)?;
                    let value = r.get(2).map_err(e)?;
                    accs[i].add(value, r.get(1).map_err(e)?, value);
                }
            }
        }
        tx.commit().map_err(e)?;

        Ok(f(keys, &accs))
    }
}

/// The kind of each interned indicator, `None` for those not asked for.
fn kinds_of(keys: &KeyCache, indicators: &[(String, Kind)]) -> Vec<Option<Kind>> {
    keys.indicators
        .iter()
        .map(|id| indicators.iter().find(|(i, _)| i == id).map(|(_, k)| *k))
        .collect()
}

/// Hands `emit` the own value of each (unit, indicator) group with data, in
/// group order.
fn own_from_folds(
    keys: &KeyCache,
    accs: &[Acc],
    indicators: &[(String, Kind)],
    mut emit: impl FnMut(usize, OwnData),
) {
    let kind_of_indicator = kinds_of(keys, indicators);
    let mut numbers: Vec<Option<f64>> = vec![None; keys.groups.len()];
    let mut entities: BTreeMap<usize, HashMap<&str, f64>> = BTreeMap::new();
    for (acc, key) in accs.iter().zip(keys.keys.iter()) {
        let (true, Some((group, entity))) = (acc.seen, key) else {
            continue;
        };
        let (_, ind) = keys.groups[*group];
        match kind_of_indicator[ind] {
            None => {}
            Some(Kind::Count) => {
                numbers[*group] = Some(numbers[*group].unwrap_or(0.0) + acc.sum);
            }
            Some(Kind::Level) => {
                numbers[*group] = Some(numbers[*group].unwrap_or(0.0) + acc.last_value);
            }
            Some(Kind::Distinct) => {
                *entities
                    .entry(*group)
                    .or_default()
                    .entry(entity.as_str())
                    .or_insert(0.0) += acc.sum;
            }
        }
    }
    // A group's indicator has one kind, so a group is in `numbers` or in
    // `entities`, never both: walk both in group order.
    let mut sets = entities.into_iter().peekable();
    for (group, number) in numbers.into_iter().enumerate() {
        let data = match number {
            Some(n) => OwnData::Number(n),
            None => match sets.next_if(|(g, _)| *g == group) {
                Some((_, m)) => OwnData::Entities(
                    m.into_iter()
                        .filter(|&(_, v)| v != 0.0)
                        .map(|(k, _)| k.to_string())
                        .collect(),
                ),
                None => continue,
            },
        };
        emit(group, data);
    }
}

/// The own values of [`own_from_folds`] named by unit and indicator id.
fn named_own_values(keys: &KeyCache, accs: &[Acc], indicators: &[(String, Kind)]) -> Vec<OwnValue> {
    let mut out = Vec::new();
    own_from_folds(keys, accs, indicators, |group, data| {
        let (unit, ind) = keys.groups[group];
        out.push(OwnValue {
            unit: keys.units[unit].clone(),
            indicator: keys.indicators[ind].clone(),
            data,
        });
    });
    out
}

/// Per (unit, indicator, entity): `level` the last value per source, summed
/// over sources; `count` and `distinct` the sum.
fn entities_from_folds(
    keys: &KeyCache,
    accs: &[Acc],
    indicators: &[(String, Kind)],
) -> Vec<EntityValue> {
    let kind_of_indicator = kinds_of(keys, indicators);
    let mut values: HashMap<(usize, &str), f64> = HashMap::new();
    for (acc, key) in accs.iter().zip(keys.keys.iter()) {
        let (true, Some((group, entity))) = (acc.seen, key) else {
            continue;
        };
        let (_, ind) = keys.groups[*group];
        let v = match kind_of_indicator[ind] {
            None => continue,
            Some(Kind::Level) => acc.last_value,
            Some(Kind::Count | Kind::Distinct) => acc.sum,
        };
        *values.entry((*group, entity.as_str())).or_insert(0.0) += v;
    }
    values
        .into_iter()
        .map(|((group, entity), value)| {
            let (unit, ind) = keys.groups[group];
            EntityValue {
                unit: keys.units[unit].clone(),
                indicator: keys.indicators[ind].clone(),
                entity: entity.to_owned(),
                value,
            }
        })
        .collect()
}

/// The source's last success (from the run index) and resume state (one row).
fn last_success_and_state(
    tx: &rusqlite::Transaction<'_>,
    folded: Option<&SourceRuns>,
    source: &str,
) -> Result<(Option<LastSuccess>, Option<serde_json::Value>), StoreError> {
    let e = |source| StoreError::Sqlite {
        doing: "reading a source's resume state",
        source,
    };
    let last_success = folded
        .and_then(|f| f.last_success)
        .map(|(finished, run_id, to)| {
            Ok::<_, StoreError>(LastSuccess {
                run_id,
                finished_at: from_millis(finished)?,
                window_to: num_day(to)?,
            })
        })
        .transpose()?;
    let state = tx
        .prepare_cached("SELECT state FROM source_state WHERE source = ?1")
        .map_err(e)?
        .query_row([source], |r| r.get::<_, String>(0))
        .optional()
        .map_err(e)?
        .map(|s| {
            serde_json::from_str(&s).map_err(|err| StoreError::Corrupt {
                what: "resume state",
                detail: format!("source \"{source}\": {err}"),
            })
        })
        .transpose()?;
    Ok((last_success, state))
}

/// Checks a run before anything is written: its observations must belong to
/// its source and be finite and within [`MAX_VALUE`] (the engine refused
/// the others; this keeps any other writer from making a sum overflow), its
/// state must serialize.
fn check_run<'a>(
    run: &'a RunRecord,
    observations: &'a [Observation],
    state: Option<&serde_json::Value>,
) -> Result<Checked<'a>, StoreError> {
    if let Some(o) = observations
        .iter()
        .find(|o| o.source != run.source || !(-MAX_VALUE..=MAX_VALUE).contains(&o.value))
    {
        return Err(StoreError::Invalid {
            source_id: run.source.clone(),
            detail: format!(
                "observation (source \"{}\", unit \"{}\", indicator \"{}\", entity \"{}\", day {}) \
                 has value {}: observations must belong to the run's source and be finite, at most {MAX_VALUE:e} in magnitude",
                o.source, o.unit, o.indicator, o.entity, o.day, o.value
            ),
        });
    }
    let state = state
        .map(serde_json::to_string)
        .transpose()
        .map_err(|source| StoreError::State {
            source_id: run.source.clone(),
            source,
        })?;
    let warnings = serde_json::Value::from(run.warnings.clone()).to_string();
    let mut after = run.window_from;
    for (i, &(from, to)) in run.uncovered.iter().enumerate() {
        // Sorted and apart; the first may start on the window's first day.
        let in_order = if i == 0 { from >= after } else { from > after };
        if !in_order || from > to || to > run.window_to || run.result != RunResult::Success {
            return Err(StoreError::Invalid {
                source_id: run.source.clone(),
                detail: format!(
                    "uncovered days {from}..{to} (range {} of {}): a successful run's uncovered \
                     days must be sorted, disjoint ranges inside its window {}..{}",
                    i + 1,
                    run.uncovered.len(),
                    run.window_from,
                    run.window_to
                ),
            });
        }
        after = to;
    }
    Ok(Checked {
        run,
        observations,
        state,
        warnings,
        uncovered: uncovered_json(&run.uncovered),
    })
}

impl Writer {
    /// Writes `runs` in one transaction and returns their run ids; on any
    /// error nothing of them is written.
    fn write(&mut self, runs: &[&Checked<'_>]) -> Result<Vec<i64>, StoreError> {
        let Writer {
            conn,
            keys,
            scratch,
            ..
        } = self;
        let e = |source| StoreError::Sqlite {
            doing: "recording a run",
            source,
        };
        // Left over only if a write panicked: its transaction rolled back.
        keys.forget_added();
        let written = (|| {
            // Take the write lock up front: a deferred transaction that
            // upgrades later can fail with SQLITE_BUSY regardless of the
            // busy timeout.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(e)?;
            let mut ids = Vec::with_capacity(runs.len());
            for run in runs {
                ids.push(write_run(&tx, keys, scratch, run)?);
            }
            tx.commit().map_err(e)?;
            Ok(ids)
        })();
        match written {
            Ok(_) => keys.added.clear(),
            Err(_) => keys.forget_added(),
        }
        // A run far bigger than usual should not pin its buffers for good.
        if scratch.rows.capacity() > SCRATCH_KEEP {
            *scratch = Scratch::default();
        }
        written
    }
}

/// Rows of scratch kept between runs: enough for a big everyday run (2 MiB),
/// while a backfill's buffers go back to the allocator when it is done.
const SCRATCH_KEEP: usize = 1 << 16;

/// Writes one checked run into `tx`: its run row, its keys, its observations
/// (replacing what the same key held on the same day), the `monthly` row of
/// every (key, month) it touches, and its state.
///
/// Per key, the stored rows of the months the run touches are read once;
/// they tell each row of the run apart and, with the run's rows, give those
/// months in full, so the rows just written are never read back and a key
/// new in this run reads nothing. Then, in primary-key order, which keeps
/// the B-tree inserts local: new rows go in many to a statement, changed
/// rows are updated, and rows observed again with the same value only get
/// the new run id, which leaves `observations_by_day` alone. Month values
/// are summed in day order, as a scan of the month would.
fn write_run(
    tx: &Transaction<'_>,
    keys: &mut WriterKeys,
    scratch: &mut Scratch,
    c: &Checked<'_>,
) -> Result<i64, StoreError> {
    let e = |source| StoreError::Sqlite {
        doing: "recording a run",
        source,
    };
    let run = c.run;
    tx.prepare_cached(
        "INSERT INTO runs (source, trigger, started_at, finished_at, result, error, \
         window_from, window_to, observations, warnings, http_requests, uncovered, error_kind, \
         retry_after) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )
    .map_err(e)?
    .execute(params![
        run.source,
        run.trigger,
        millis(run.started_at),
        millis(run.finished_at),
        run.result.as_str(),
        run.error,
        day_num(run.window_from),
        day_num(run.window_to),
        c.observations.len() as i64,
        c.warnings,
        run.http_requests.and_then(|n| i64::try_from(n).ok()),
        c.uncovered,
        run.error_kind,
        run.retry_after.map(millis),
    ])
    .map_err(e)?;
    let run_id = tx.last_insert_rowid();

    let Scratch {
        rows,
        months,
        stored,
        touched,
        new_keys,
    } = scratch;
    rows.clear();
    rows.reserve(c.observations.len());
    new_keys.clear();
    // Plugins emit a key's days together, so most rows share the previous
    // row's key and need no lookup at all.
    let mut previous: Option<(&Observation, i64)> = None;
    for (idx, o) in c.observations.iter().enumerate() {
        let key = match previous {
            Some((p, id))
                if same(&p.unit, &o.unit)
                    && same(&p.indicator, &o.indicator)
                    && same(&p.entity, &o.entity) =>
            {
                id
            }
            _ => keys.id(tx, &run.source, o, new_keys)?,
        };
        previous = Some((o, key));
        rows.push(PendingRow {
            key,
            day: day_num(o.day),
            idx,
            class: RowClass::New,
        });
    }
    // Sorting an already ordered run costs one pass. Of two rows for the
    // same key and day the later one wins, as two upserts in turn would.
    rows.sort_unstable_by_key(|r| (r.key, r.day, r.idx));
    rows.dedup_by(|later, kept| {
        let same = later.key == kept.key && later.day == kept.day;
        if same {
            kept.idx = later.idx;
        }
        same
    });

    // Per key: read what is stored over the months the run touches, which
    // tells each row of the run apart (new, changed, the same value again)
    // and, with the run's rows, gives every touched month in full.
    months.clear();
    let mut read = tx
        .prepare_cached(
            "SELECT day, value FROM observations WHERE key = ?1 AND day BETWEEN ?2 AND ?3 ORDER BY day",
        )
        .map_err(e)?;
    for group in rows.chunk_by_mut(|a, b| a.key == b.key) {
        let key = group[0].key;
        touched.clear();
        touched.extend(group.iter().map(|r| month_num(c.observations[r.idx].day)));
        touched.dedup();
        let bad_month = |month| StoreError::Corrupt {
            what: "month",
            detail: format!("{month} is out of range"),
        };
        let (span_from, _) = month_days(touched[0]).ok_or_else(|| bad_month(touched[0]))?;
        let last_month = touched[touched.len() - 1];
        let (_, span_to) = month_days(last_month).ok_or_else(|| bad_month(last_month))?;
        stored.clear();
        if !new_keys.contains(&key) {
            let mut found = read.query(params![key, span_from, span_to]).map_err(e)?;
            while let Some(r) = found.next().map_err(e)? {
                stored.push((r.get(0).map_err(e)?, r.get(1).map_err(e)?));
            }
        }

        // Merge the two day-ordered lists, the run's value winning a day
        // both have, and fold them into the touched months.
        let (mut i, mut j) = (0, 0);
        loop {
            let stored_first = match (stored.get(i), group.get(j)) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(&(day, _)), Some(r)) => day < r.day,
            };
            let (day, value, month) = if stored_first {
                let (day, value) = stored[i];
                i += 1;
                // A month between two of the run's days, which it left alone.
                let month = month_num(num_day(day)?);
                if touched.binary_search(&month).is_err() {
                    continue;
                }
                (day, value, month)
            } else {
                let r = &mut group[j];
                j += 1;
                let o = &c.observations[r.idx];
                r.class = match stored.get(i) {
                    Some(&(day, old)) if day == r.day => {
                        i += 1;
                        if old.to_bits() == o.value.to_bits() {
                            RowClass::Same
                        } else {
                            RowClass::Changed
                        }
                    }
                    _ => RowClass::New,
                };
                (r.day, o.value, month_num(o.day))
            };
            match months.last_mut() {
                Some(m) if m.key == key && m.month == month => {
                    m.sum += value;
                    m.last_day = day;
                    m.last_value = value;
                }
                _ => months.push(MonthWrite {
                    month,
                    key,
                    sum: value,
                    last_day: day,
                    last_value: value,
                }),
            }
        }
    }
    drop(read);
    write_observations(tx, rows, c.observations, run_id)?;

    // In `monthly` order, again for local inserts.
    months.sort_unstable_by_key(|m| (m.month, m.key));
    let mut put_month = tx
        .prepare_cached(
            "INSERT OR REPLACE INTO monthly (month, key, sum, last_day, last_value) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(e)?;
    for m in months.iter() {
        put_month
            .execute(params![m.month, m.key, m.sum, m.last_day, m.last_value])
            .map_err(e)?;
    }
    bump_month_versions(tx, months.iter().map(|m| m.month))?;

    if let Some(state) = &c.state {
        tx.prepare_cached(
            "INSERT INTO source_state (source, state, updated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (source) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
        )
        .map_err(e)?
        .execute(params![run.source, state, millis(run.finished_at)])
        .map_err(e)?;
    }
    Ok(run_id)
}

/// New rows of a run go in this many to a statement.
const INSERT_CHUNK: usize = 128;

/// `INSERT OR FAIL INTO observations ... VALUES (?2, ?3, ?4, ?1), ...` for
/// `INSERT_CHUNK` rows, the run id (`?1`) shared by all of them.
fn chunk_insert_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let rows: Vec<String> = (0..INSERT_CHUNK)
            .map(|k| format!("(?{}, ?{}, ?{}, ?1)", 3 * k + 2, 3 * k + 3, 3 * k + 4))
            .collect();
        format!(
            "INSERT OR FAIL INTO observations (key, day, value, run) VALUES {}",
            rows.join(", ")
        )
    })
}

/// Writes the rows of a run as [`write_run`] classified them, in
/// primary-key order.
///
/// New rows go in `INSERT_CHUNK` to a statement, and `OR FAIL` matters
/// there: SQLite gives a statement that may write several rows and may
/// abort a statement journal, a copy of every page the statement is about
/// to change, which costs more than the inserts themselves. FAIL undoes
/// nothing inside the statement, which is safe: the rows were just read as
/// absent under the write lock, and any error rolls back the whole
/// transaction anyway. Likewise for the stretches of rows stored again
/// with the same value, which only get the run id, one statement a stretch.
fn write_observations(
    tx: &Transaction<'_>,
    rows: &[PendingRow],
    observations: &[Observation],
    run_id: i64,
) -> Result<(), StoreError> {
    let e = |source| StoreError::Sqlite {
        doing: "recording a run's observations",
        source,
    };
    // Each write must change exactly the rows that were read.
    let check = |r: &PendingRow, expected: usize, changed: usize| {
        if changed == expected {
            Ok(())
        } else {
            Err(StoreError::Corrupt {
                what: "observations",
                detail: format!(
                    "writing key {} from day {} changed {changed} rows instead of {expected}",
                    r.key, r.day
                ),
            })
        }
    };

    let mut many = tx.prepare_cached(chunk_insert_sql()).map_err(e)?;
    many.raw_bind_parameter(1, run_id).map_err(e)?;
    let mut one = tx
        .prepare_cached(
            "INSERT OR FAIL INTO observations (key, day, value, run) VALUES (?2, ?3, ?4, ?1)",
        )
        .map_err(e)?;
    one.raw_bind_parameter(1, run_id).map_err(e)?;
    let new_rows = rows.iter().filter(|r| r.class == RowClass::New);
    let new_count = new_rows.clone().count();
    let in_chunks = new_count - new_count % INSERT_CHUNK;
    let mut k = 0;
    for (n, r) in new_rows.enumerate() {
        let value = observations[r.idx].value;
        if n < in_chunks {
            many.raw_bind_parameter(3 * k + 2, r.key).map_err(e)?;
            many.raw_bind_parameter(3 * k + 3, r.day).map_err(e)?;
            many.raw_bind_parameter(3 * k + 4, value).map_err(e)?;
            k += 1;
            if k == INSERT_CHUNK {
                check(r, INSERT_CHUNK, many.raw_execute().map_err(e)?)?;
                k = 0;
            }
        } else {
            one.raw_bind_parameter(2, r.key).map_err(e)?;
            one.raw_bind_parameter(3, r.day).map_err(e)?;
            one.raw_bind_parameter(4, value).map_err(e)?;
            check(r, 1, one.raw_execute().map_err(e)?)?;
        }
    }

    let mut update = tx
        .prepare_cached("UPDATE observations SET value = ?3, run = ?4 WHERE key = ?1 AND day = ?2")
        .map_err(e)?;
    for r in rows.iter().filter(|r| r.class == RowClass::Changed) {
        let changed = update
            .execute(params![r.key, r.day, observations[r.idx].value, run_id])
            .map_err(e)?;
        check(r, 1, changed)?;
    }

    let mut observed_again = tx
        .prepare_cached(
            "UPDATE OR FAIL observations SET run = ?4 WHERE key = ?1 AND day BETWEEN ?2 AND ?3",
        )
        .map_err(e)?;
    // Stretches of consecutive days of one key, each stored with the same value.
    let same = rows.iter().filter(|r| r.class == RowClass::Same);
    let mut stretch: Option<(PendingRow, i64)> = None;
    for r in same.map(Some).chain([None]) {
        match (stretch, r) {
            (Some((first, last)), Some(r)) if r.key == first.key && r.day == last + 1 => {
                stretch = Some((first, r.day));
            }
            (open, next) => {
                if let Some((first, last)) = open {
                    let changed = observed_again
                        .execute(params![first.key, first.day, last, run_id])
                        .map_err(e)?;
                    check(&first, (last - first.day + 1) as usize, changed)?;
                }
                stretch = next.map(|r| (*r, r.day));
            }
        }
    }
    Ok(())
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
        let checked: Vec<Result<Checked<'_>, StoreError>> = runs
            .iter()
            .map(|r| check_run(&r.run, &r.observations, r.state.as_ref()))
            .collect();
        let valid: Vec<&Checked<'_>> = checked.iter().filter_map(|c| c.as_ref().ok()).collect();
        if valid.is_empty() {
            return checked.into_iter().map(|c| c.map(|_| 0)).collect();
        }
        let mut writer = lock(&self.writer);
        let written: Vec<Result<i64, StoreError>> = match writer.write(&valid) {
            Ok(ids) => ids.into_iter().map(Ok).collect(),
            Err(err) if valid.len() > 1 => {
                tracing::warn!(
                    runs = valid.len(),
                    error = %ErrorChain(&err),
                    "cannot commit runs together: recording them one by one"
                );
                valid
                    .iter()
                    .map(|&c| writer.write(&[c]).map(|ids| ids[0]))
                    .collect()
            }
            Err(err) => vec![Err(err)],
        };
        drop(writer);
        let mut written = written.into_iter();
        checked
            .into_iter()
            .map(|c| match c {
                Err(err) => Err(err),
                Ok(_) => written
                    .next()
                    .expect("the writer answers once for every valid run"),
            })
            .collect()
    }

    fn resume_point(&self, source: &str) -> Result<ResumePoint, StoreError> {
        let e = |source| StoreError::Sqlite {
            doing: "reading where a source resumes",
            source,
        };
        let mut guard = lock(&self.reader);
        let Reader { conn, runs, .. } = &mut *guard;
        let tx = conn.transaction().map_err(e)?;
        runs.refresh(&tx)?;
        let folded = runs.sources.get(source);
        let last_run_started = match folded {
            Some(folded) => tx
                .prepare_cached("SELECT started_at FROM runs WHERE id = ?1")
                .map_err(e)?
                .query_row([folded.last_run], |r| r.get::<_, i64>(0))
                .optional()
                .map_err(e)?
                .map(from_millis)
                .transpose()?,
            None => None,
        };
        let (last_success, state) = last_success_and_state(&tx, folded, source)?;
        let uncovered = folded
            .map(|f| {
                f.uncovered
                    .iter()
                    .map(|&(a, b)| Ok((num_day(a)?, num_day(b)?)))
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .transpose()?
            .unwrap_or_default();
        tx.commit().map_err(e)?;
        Ok(ResumePoint {
            last_run_started,
            last_success,
            state,
            uncovered,
        })
    }

    fn source_status(&self, source: &str) -> Result<SourceStatus, StoreError> {
        let e = |source| StoreError::Sqlite {
            doing: "reading a source's status",
            source,
        };
        let mut guard = lock(&self.reader);
        let Reader { conn, runs, .. } = &mut *guard;
        let tx = conn.transaction().map_err(e)?;
        // Counts and the latest success come from the run index, so that the
        // status (read before every run) costs the same after years of runs.
        runs.refresh(&tx)?;
        let folded = runs.sources.get(source);
        let last_run = match folded {
            Some(folded) => tx
                .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))
                .map_err(e)?
                .query_row([folded.last_run], run_row)
                .optional()
                .map_err(e)?
                .map(stored_run)
                .transpose()?,
            None => None,
        };
        let (last_success, state) = last_success_and_state(&tx, folded, source)?;
        let counts = folded.map(|f| f.counts).unwrap_or_default();
        tx.commit().map_err(e)?;
        Ok(SourceStatus {
            last_run,
            last_success,
            state,
            runs: counts,
        })
    }

    fn recent_runs(&self, source: &str, limit: usize) -> Result<Vec<StoredRun>, StoreError> {
        let e = |source| StoreError::Sqlite {
            doing: "listing recent runs",
            source,
        };
        let r = lock(&self.reader);
        let mut stmt = r
            .conn
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE source = ?1 ORDER BY id DESC LIMIT ?2"
            ))
            .map_err(e)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![source, limit], run_row).map_err(e)?;
        rows.map(|row| stored_run(row.map_err(e)?)).collect()
    }

    fn runs(&self, ids: &[i64]) -> Result<Vec<StoredRun>, StoreError> {
        let e = |source| StoreError::Sqlite {
            doing: "reading runs",
            source,
        };
        let r = lock(&self.reader);
        let mut stmt = r
            .conn
            .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))
            .map_err(e)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(row) = stmt.query_row([id], run_row).optional().map_err(e)? {
                out.push(stored_run(row)?);
            }
        }
        Ok(out)
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
            // Each interned unit and indicator is looked up once, not once
            // per value.
            let units: Vec<Option<usize>> = keys.units.iter().map(|u| unit_index(u)).collect();
            let positions: Vec<Option<usize>> = keys
                .indicators
                .iter()
                .map(|id| indicators.iter().position(|(i, _)| i == id))
                .collect();
            let mut out = Vec::with_capacity(keys.groups.len());
            own_from_folds(keys, accs, indicators, |group, data| {
                let (unit, ind) = keys.groups[group];
                if let (Some(unit), Some(ind)) = (units[unit], positions[ind]) {
                    out.push((unit, ind, data));
                }
            });
            out
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
        let e = |source| StoreError::Sqlite {
            doing: "computing sources' coverage",
            source,
        };
        let mut guard = lock(&self.reader);
        let Reader { conn, runs, .. } = &mut *guard;
        let tx = conn.transaction().map_err(e)?;
        runs.refresh(&tx)?;
        tx.commit().map_err(e)?;
        sources
            .iter()
            .map(|source| runs.coverage(source, start, end))
            .collect()
    }

    fn observations(
        &self,
        units: &[&str],
        indicator: &str,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<Vec<StoredObservation>, StoreError> {
        let e = |source| StoreError::Sqlite {
            doing: "reading observations",
            source,
        };
        let mut r = lock(&self.reader);
        let tx = r.conn.transaction().map_err(e)?;
        let mut out = Vec::new();
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT k.source, k.entity, o.day, o.value, o.run \
                     FROM keys k JOIN observations o ON o.key = k.id \
                     WHERE k.indicator = ?1 AND k.unit = ?2 AND o.day BETWEEN ?3 AND ?4 \
                     ORDER BY k.source, k.entity, o.day",
                )
                .map_err(e)?;
            for unit in units {
                let mut rows = stmt
                    .query(params![indicator, unit, day_num(start), day_num(end)])
                    .map_err(e)?;
                while let Some(row) = rows.next().map_err(e)? {
                    out.push(StoredObservation {
                        observation: Observation {
                            source: row.get(0).map_err(e)?,
                            unit: unit.to_string(),
                            indicator: indicator.to_string(),
                            entity: row.get(1).map_err(e)?,
                            day: num_day(row.get(2).map_err(e)?)?,
                            value: row.get(3).map_err(e)?,
                        },
                        run_id: row.get(4).map_err(e)?,
                    });
                }
            }
        }
        tx.commit().map_err(e)?;
        Ok(out)
    }
}

impl SqliteStore {
    /// [`Store::observations_page`]: for each unit from the cursor's on, its
    /// keys in (source, entity) order from the cursor's key on, and each
    /// key's days through the primary key, stopping at `limit`; nothing is
    /// read past the page but the keys of the unit it ends in.
    fn observations_page_seek(
        &self,
        units: &[&str],
        indicator: &str,
        start: NaiveDate,
        end: NaiveDate,
        after: Option<&ObservationCursor>,
        limit: usize,
    ) -> Result<Vec<StoredObservation>, StoreError> {
        let e = |source| StoreError::Sqlite {
            doing: "reading a page of observations",
            source,
        };
        let first = match after {
            None => 0,
            Some(cursor) => match units.iter().position(|u| *u == cursor.unit) {
                Some(position) => position,
                None => return Ok(Vec::new()),
            },
        };
        let mut out = Vec::with_capacity(limit.min(4096));
        if limit == 0 {
            return Ok(out);
        }
        let mut r = lock(&self.reader);
        let tx = r.conn.transaction().map_err(e)?;
        {
            let mut keys = tx
                .prepare_cached(
                    "SELECT id, source, entity FROM keys \
                     WHERE indicator = ?1 AND unit = ?2 AND (source, entity) >= (?3, ?4) \
                     ORDER BY source, entity",
                )
                .map_err(e)?;
            let mut days = tx
                .prepare_cached(
                    "SELECT day, value, run FROM observations \
                     WHERE key = ?1 AND day BETWEEN ?2 AND ?3 ORDER BY day LIMIT ?4",
                )
                .map_err(e)?;
            'units: for unit in &units[first..] {
                let resume = after.filter(|c| c.unit == *unit);
                let (from_source, from_entity) =
                    resume.map_or(("", ""), |c| (c.source.as_str(), c.entity.as_str()));
                let mut key_rows = keys
                    .query(params![indicator, unit, from_source, from_entity])
                    .map_err(e)?;
                while let Some(key) = key_rows.next().map_err(e)? {
                    let id: i64 = key.get(0).map_err(e)?;
                    let source: String = key.get(1).map_err(e)?;
                    let entity: String = key.get(2).map_err(e)?;
                    let mut from = day_num(start);
                    if let Some(c) = resume.filter(|c| c.source == source && c.entity == entity) {
                        from = from.max(day_num(c.day) + 1);
                    }
                    let room = (limit - out.len()) as i64;
                    let mut rows = days
                        .query(params![id, from, day_num(end), room])
                        .map_err(e)?;
                    while let Some(row) = rows.next().map_err(e)? {
                        out.push(StoredObservation {
                            observation: Observation {
                                source: source.clone(),
                                unit: unit.to_string(),
                                indicator: indicator.to_string(),
                                entity: entity.clone(),
                                day: num_day(row.get(0).map_err(e)?)?,
                                value: row.get(1).map_err(e)?,
                            },
                            run_id: row.get(2).map_err(e)?,
                        });
                    }
                    if out.len() >= limit {
                        break 'units;
                    }
                }
            }
        }
        tx.commit().map_err(e)?;
        Ok(out)
    }
}

#[cfg(test)]
mod write_tests;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn run(source: &str, result: RunResult, from: &str, to: &str, finished: &str) -> RunRecord {
        RunRecord {
            source: source.into(),
            trigger: "schedule".into(),
            started_at: at(finished) - chrono::Duration::seconds(5),
            finished_at: at(finished),
            result,
            error: (result != RunResult::Success).then(|| "upstream answered 503".into()),
            window_from: d(from),
            window_to: d(to),
            warnings: vec![],
            http_requests: Some(3),
            uncovered: Vec::new(),
            error_kind: (result == RunResult::Error).then(|| "rate_limited".into()),
            retry_after: (result == RunResult::Error)
                .then(|| at(finished) + chrono::Duration::hours(14)),
        }
    }

    fn ok_run(from: &str, to: &str) -> RunRecord {
        run("src", RunResult::Success, from, to, "2026-12-01T02:30:00Z")
    }

    fn obs(unit: &str, indicator: &str, entity: &str, day: &str, value: f64) -> Observation {
        Observation {
            source: "src".into(),
            unit: unit.into(),
            indicator: indicator.into(),
            entity: entity.into(),
            day: d(day),
            value,
        }
    }

    fn inds(list: &[(&str, Kind)]) -> Vec<(String, Kind)> {
        list.iter().map(|(i, k)| (i.to_string(), *k)).collect()
    }

    /// (unit, indicator) -> value, for numbers only.
    fn numbers(
        store: &SqliteStore,
        start: &str,
        end: &str,
        list: &[(&str, Kind)],
    ) -> BTreeMap<(String, String), f64> {
        store
            .own_values(d(start), d(end), &inds(list))
            .unwrap()
            .into_iter()
            .map(|v| match v.data {
                OwnData::Number(n) => ((v.unit, v.indicator), n),
                OwnData::Entities(e) => ((v.unit, v.indicator), e.len() as f64),
            })
            .collect()
    }

    fn one(store: &SqliteStore, start: &str, end: &str, ind: &str, kind: Kind) -> Option<f64> {
        let all = numbers(store, start, end, &[(ind, kind)]);
        assert!(all.len() <= 1, "{all:?}");
        all.into_values().next()
    }

    #[test]
    fn the_first_day_is_the_earliest_observation_of_any_source() {
        let (_dir, store) = open();
        assert_eq!(store.first_day().unwrap(), None);
        // A run without observations does not count.
        store
            .record_run(&ok_run("2026-01-01", "2026-01-31"), &[], None)
            .unwrap();
        assert_eq!(store.first_day().unwrap(), None);
        let later = vec![obs("county/a", "posts", "", "2026-08-03", 1.0)];
        store
            .record_run(&ok_run("2026-08-01", "2026-08-31"), &later, None)
            .unwrap();
        let earlier = vec![obs("county/b", "posts", "", "2026-05-20", 1.0)];
        store
            .record_run(&ok_run("2026-05-01", "2026-05-31"), &earlier, None)
            .unwrap();
        assert_eq!(store.first_day().unwrap(), Some(d("2026-05-20")));
    }

    #[test]
    fn recollecting_a_window_replaces_never_adds() {
        let (_dir, store) = open();
        let first = vec![
            obs("county/a", "posts", "", "2026-11-01", 2.0),
            obs("county/a", "posts", "", "2026-11-02", 3.0),
            obs("county/a", "posts", "", "2026-11-03", 4.0),
        ];
        let r1 = store
            .record_run(&ok_run("2026-11-01", "2026-11-03"), &first, None)
            .unwrap();
        let again = store
            .record_run(&ok_run("2026-11-01", "2026-11-03"), &first, None)
            .unwrap();
        // The month is whole, so this reads the aggregate; the range reads raw rows.
        assert_eq!(
            one(&store, "2026-11-01", "2026-11-30", "posts", Kind::Count),
            Some(9.0)
        );
        assert_eq!(
            one(&store, "2026-11-02", "2026-11-03", "posts", Kind::Count),
            Some(7.0)
        );
        // A late correction of one day replaces that day only.
        let fix = vec![obs("county/a", "posts", "", "2026-11-02", 5.0)];
        let r3 = store
            .record_run(&ok_run("2026-11-02", "2026-11-02"), &fix, None)
            .unwrap();
        assert_eq!(
            one(&store, "2026-11-01", "2026-11-30", "posts", Kind::Count),
            Some(11.0)
        );
        assert_eq!(
            one(&store, "2026-11-02", "2026-11-10", "posts", Kind::Count),
            Some(9.0)
        );
        assert!(r1 < again && again < r3);

        let trace = store
            .observations(&["county/a"], "posts", d("2026-11-01"), d("2026-11-30"))
            .unwrap();
        let got: Vec<(NaiveDate, f64, i64)> = trace
            .iter()
            .map(|o| (o.observation.day, o.observation.value, o.run_id))
            .collect();
        assert_eq!(
            got,
            [
                (d("2026-11-01"), 2.0, again),
                (d("2026-11-02"), 5.0, r3),
                (d("2026-11-03"), 4.0, again)
            ]
        );
        assert_eq!(trace[0].observation.source, "src");

        let by_id = store.runs(&[r3, 12345, r1]).unwrap();
        assert_eq!(
            by_id.iter().map(|r| r.id).collect::<Vec<_>>(),
            [r3, r1],
            "in the order asked, unknown ids left out"
        );
        assert_eq!(by_id[0].run, ok_run("2026-11-02", "2026-11-02"));

        let runs = store.recent_runs("src", 2).unwrap();
        assert_eq!(
            runs.iter()
                .map(|r| (r.id, r.observations_written))
                .collect::<Vec<_>>(),
            [(r3, 1), (again, 3)]
        );
        assert_eq!(runs[0].run, ok_run("2026-11-02", "2026-11-02"));
    }

    #[test]
    fn level_takes_the_last_observed_day_per_source_and_entity() {
        let (_dir, store) = open();
        let mut o = vec![
            // Deliberately out of day order.
            obs("u", "points", "alice", "2026-11-01", 100.0),
            obs("u", "points", "alice", "2026-11-20", 150.0),
            obs("u", "points", "alice", "2026-11-10", 130.0),
            obs("u", "points", "bob", "2026-10-30", 50.0),
        ];
        store
            .record_run(&ok_run("2026-10-01", "2026-11-30"), &o, None)
            .unwrap();
        // Another source reporting the same member adds: levels sum over (source, entity).
        o = vec![Observation {
            source: "other".into(),
            ..obs("u", "points", "alice", "2026-11-05", 7.0)
        }];
        store
            .record_run(
                &run(
                    "other",
                    RunResult::Success,
                    "2026-11-05",
                    "2026-11-05",
                    "2026-12-01T00:00:00Z",
                ),
                &o,
                None,
            )
            .unwrap();

        assert_eq!(
            one(&store, "2026-11-01", "2026-11-30", "points", Kind::Level),
            Some(150.0 + 7.0)
        );
        assert_eq!(
            one(&store, "2026-10-01", "2026-12-31", "points", Kind::Level),
            Some(150.0 + 50.0 + 7.0)
        );
        // Cut mid-month: alice's last day within the range is 11-10.
        assert_eq!(
            one(&store, "2026-10-15", "2026-11-15", "points", Kind::Level),
            Some(130.0 + 50.0 + 7.0)
        );
        assert_eq!(
            one(&store, "2026-11-02", "2026-11-04", "points", Kind::Level),
            None
        );
        // The same rows read as a count sum every day.
        assert_eq!(
            one(&store, "2026-11-01", "2026-11-30", "points", Kind::Count),
            Some(387.0)
        );
    }

    #[test]
    fn entity_values_fold_each_entity_like_its_kind() {
        let (_dir, store) = open();
        let mut other = obs("county/a", "points", "alice", "2026-10-20", 50.0);
        other.source = "other".into();
        let mut other_run = ok_run("2026-10-01", "2026-10-31");
        other_run.source = "other".into();
        store.record_run(&other_run, &[other], None).unwrap();
        let o = vec![
            // Levels: alice's last day per source (09-30 edge day and a whole
            // month, 10-31), summed over the two sources.
            obs("county/a", "points", "alice", "2026-09-30", 100.0),
            obs("county/a", "points", "alice", "2026-10-31", 300.0),
            obs("county/a", "points", "alice", "2026-11-01", 999.0),
            obs("county/a", "points", "bob", "2026-10-02", 70.0),
            // The same entity under another unit is another value.
            obs("county/b", "points", "alice", "2026-10-05", 20.0),
            // Counts sum over days.
            obs("county/a", "posts", "", "2026-09-30", 1.0),
            obs("county/a", "posts", "", "2026-10-01", 2.0),
            obs("county/a", "posts", "", "2026-10-31", 4.0),
        ];
        store
            .record_run(&ok_run("2026-09-01", "2026-11-30"), &o, None)
            .unwrap();
        let got: BTreeMap<(String, String, String), f64> = store
            .entity_values(
                d("2026-09-30"),
                d("2026-10-31"),
                &inds(&[("points", Kind::Level), ("posts", Kind::Count)]),
            )
            .unwrap()
            .into_iter()
            .map(|v| ((v.unit, v.indicator, v.entity), v.value))
            .collect();
        let key = |u: &str, i: &str, e: &str| (u.to_owned(), i.to_owned(), e.to_owned());
        assert_eq!(
            got,
            BTreeMap::from([
                (key("county/a", "points", "alice"), 350.0),
                (key("county/a", "points", "bob"), 70.0),
                (key("county/a", "posts", ""), 7.0),
                (key("county/b", "points", "alice"), 20.0),
            ])
        );
        // Only the indicators asked for.
        let only = store
            .entity_values(
                d("2026-09-30"),
                d("2026-10-31"),
                &inds(&[("posts", Kind::Count)]),
            )
            .unwrap();
        assert_eq!(only.len(), 1);
    }

    #[test]
    fn distinct_counts_entities_with_a_non_zero_sum() {
        let (_dir, store) = open();
        let o = vec![
            obs("u", "articles", "p1", "2026-11-01", 1.0),
            obs("u", "articles", "p1", "2026-11-02", 1.0),
            obs("u", "articles", "p2", "2026-11-03", 0.0),
            obs("u", "articles", "p3", "2026-12-03", 1.0),
            obs("v", "articles", "p9", "2026-11-03", 0.0),
        ];
        store
            .record_run(&ok_run("2026-11-01", "2026-12-31"), &o, None)
            .unwrap();
        let got = store
            .own_values(
                d("2026-11-01"),
                d("2026-11-30"),
                &inds(&[("articles", Kind::Distinct)]),
            )
            .unwrap();
        let set = |e: &[&str]| OwnData::Entities(e.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            got,
            [
                OwnValue {
                    unit: "u".into(),
                    indicator: "articles".into(),
                    data: set(&["p1"])
                },
                OwnValue {
                    unit: "v".into(),
                    indicator: "articles".into(),
                    data: set(&[])
                },
            ]
        );
        // Indicators not asked for are left out.
        assert!(
            store
                .own_values(
                    d("2026-11-01"),
                    d("2026-11-30"),
                    &inds(&[("posts", Kind::Count)])
                )
                .unwrap()
                .is_empty()
        );
    }

    /// A tiny deterministic generator, so the test needs no extra crate.
    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn any_cut_of_the_calendar_equals_the_raw_computation() {
        let (_dir, store) = open();
        let mut truth: BTreeMap<(String, String, NaiveDate), f64> = BTreeMap::new();
        let mut seed = 7;
        let first = d("2026-10-20");
        // Three passes over overlapping windows, like scheduled runs with lookback.
        for pass in 0..3 {
            let mut batch = Vec::new();
            for day_off in (pass * 20)..(pass * 20 + 60) {
                let day = first + chrono::Days::new(day_off);
                for unit in ["a", "b"] {
                    for entity in ["", "x"] {
                        if lcg(&mut seed).is_multiple_of(3) {
                            continue; // leave holes
                        }
                        let value = (lcg(&mut seed) % 10) as f64;
                        truth.insert((unit.to_string(), entity.to_string(), day), value);
                        batch.push(obs(unit, "n", entity, &day.to_string(), value));
                    }
                }
            }
            store
                .record_run(&ok_run("2026-10-20", "2027-02-01"), &batch, None)
                .unwrap();
        }
        let cuts = [
            ("2026-10-01", "2027-03-31"),
            ("2026-11-01", "2026-12-31"),
            ("2026-11-15", "2027-01-10"),
            ("2026-11-01", "2026-11-30"),
            ("2026-11-30", "2026-12-01"),
            ("2026-12-31", "2027-01-01"),
            ("2026-11-07", "2026-11-21"),
            ("2026-12-01", "2027-01-31"),
            ("2026-12-05", "2026-12-05"),
        ];
        for (s, e) in cuts {
            let (s_d, e_d) = (d(s), d(e));
            let mut count: BTreeMap<(String, String), f64> = BTreeMap::new();
            let mut last: BTreeMap<(String, String), (NaiveDate, f64)> = BTreeMap::new();
            for ((unit, entity, day), v) in &truth {
                if s_d <= *day && *day <= e_d {
                    *count.entry((unit.clone(), "n".into())).or_default() += v;
                    last.insert((unit.clone(), entity.clone()), (*day, *v)); // BTreeMap walks days in order
                }
            }
            let mut level: BTreeMap<(String, String), f64> = BTreeMap::new();
            for ((unit, _), (_, v)) in last {
                *level.entry((unit, "n".into())).or_default() += v;
            }
            assert_eq!(
                numbers(&store, s, e, &[("n", Kind::Count)]),
                count,
                "count {s}..{e}"
            );
            assert_eq!(
                numbers(&store, s, e, &[("n", Kind::Level)]),
                level,
                "level {s}..{e}"
            );
        }
    }

    #[test]
    fn a_failed_run_leaves_earlier_numbers_and_state_intact() {
        let (_dir, store) = open();
        let o = vec![obs("u", "posts", "", "2026-11-01", 4.0)];
        let state = serde_json::json!({"cursor": "abc"});
        let good = store
            .record_run(&ok_run("2026-11-01", "2026-11-01"), &o, Some(&state))
            .unwrap();
        let failed = run(
            "src",
            RunResult::Error,
            "2026-11-01",
            "2026-11-02",
            "2026-12-02T02:30:00Z",
        );
        let bad = store.record_run(&failed, &[], None).unwrap();

        assert_eq!(
            one(&store, "2026-11-01", "2026-11-30", "posts", Kind::Count),
            Some(4.0)
        );
        let status = store.source_status("src").unwrap();
        assert_eq!(
            status.last_run.as_ref().map(|r| (r.id, r.run.result)),
            Some((bad, RunResult::Error))
        );
        // The run record keeps the kind and the retry-after.
        assert_eq!(status.last_run.as_ref().map(|r| &r.run), Some(&failed));
        assert_eq!(
            status.last_run.map(|r| r.run.error),
            Some(Some("upstream answered 503".into()))
        );
        assert_eq!(
            status.last_success,
            Some(LastSuccess {
                run_id: good,
                finished_at: at("2026-12-01T02:30:00Z"),
                window_to: d("2026-11-01")
            })
        );
        assert_eq!(status.state, Some(state));
        assert_eq!(
            status.runs,
            RunCounts {
                success: 1,
                error: 1,
                timeout: 0,
                panic: 0,
                crash: 0,
            }
        );

        let cov = store
            .coverage("src", d("2026-11-01"), d("2026-11-03"))
            .unwrap();
        assert_eq!(
            cov,
            Coverage {
                start: d("2026-11-01"),
                end: d("2026-11-03"),
                covered_days: 1,
                gaps: vec![(d("2026-11-02"), d("2026-11-03"))],
                failed_runs: 1,
                last_success: Some(at("2026-12-01T02:30:00Z")),
            }
        );
        assert!(!cov.is_complete());
        assert_eq!(
            store.source_status("nobody").unwrap(),
            SourceStatus::default()
        );
    }

    #[test]
    fn state_is_replaced_only_when_given() {
        let (_dir, store) = open();
        let s1 = serde_json::json!({"page": 1});
        let s2 = serde_json::json!({"page": 2});
        store
            .record_run(&ok_run("2026-11-01", "2026-11-01"), &[], Some(&s1))
            .unwrap();
        store
            .record_run(&ok_run("2026-11-02", "2026-11-02"), &[], None)
            .unwrap();
        assert_eq!(store.source_status("src").unwrap().state, Some(s1));
        store
            .record_run(&ok_run("2026-11-03", "2026-11-03"), &[], Some(&s2))
            .unwrap();
        assert_eq!(store.source_status("src").unwrap().state, Some(s2));
    }

    #[test]
    fn the_resume_point_agrees_with_the_full_status() {
        let (_dir, store) = open();
        assert_eq!(store.resume_point("src").unwrap(), ResumePoint::default());
        let state = serde_json::json!({"cursor": "abc"});
        let scheduled = run(
            "src",
            RunResult::Success,
            "2026-11-20",
            "2026-11-21",
            "2026-11-21T02:00:00Z",
        );
        store.record_run(&scheduled, &[], Some(&state)).unwrap();
        // A backfill of older days that finishes later is the last success.
        let backfill = run(
            "src",
            RunResult::Success,
            "2026-10-01",
            "2026-10-31",
            "2026-11-21T03:00:00Z",
        );
        store.record_run(&backfill, &[], None).unwrap();
        let failed = run(
            "src",
            RunResult::Error,
            "2026-11-21",
            "2026-11-22",
            "2026-11-22T02:00:00Z",
        );
        store.record_run(&failed, &[], None).unwrap();

        let point = store.resume_point("src").unwrap();
        let status = store.source_status("src").unwrap();
        assert_eq!(point.last_run_started, Some(failed.started_at));
        assert_eq!(
            point.last_run_started,
            status.last_run.map(|r| r.run.started_at)
        );
        assert_eq!(
            point.last_success.as_ref().map(|s| s.window_to),
            Some(d("2026-10-31"))
        );
        assert_eq!(point.last_success, status.last_success);
        assert_eq!(point.state, Some(state));
        assert_eq!(point.state, status.state);
        assert_eq!(store.resume_point("other").unwrap(), ResumePoint::default());
    }

    #[test]
    fn coverage_merges_overlapping_windows() {
        let (_dir, store) = open();
        for (from, to) in [
            ("2026-10-25", "2026-11-03"),
            ("2026-11-02", "2026-11-05"),
            ("2026-11-10", "2026-11-12"),
            ("2026-11-28", "2026-12-03"),
        ] {
            store.record_run(&ok_run(from, to), &[], None).unwrap();
        }
        // A failure outside the range does not count against it.
        store
            .record_run(
                &run(
                    "src",
                    RunResult::Timeout,
                    "2026-12-05",
                    "2026-12-06",
                    "2026-12-07T00:00:00Z",
                ),
                &[],
                None,
            )
            .unwrap();
        let cov = store
            .coverage("src", d("2026-11-01"), d("2026-11-30"))
            .unwrap();
        // Covered: 11-01..11-05 (5), 11-10..11-12 (3), 11-28..11-30 (3).
        assert_eq!(cov.covered_days, 11);
        assert_eq!(
            cov.gaps,
            [
                (d("2026-11-06"), d("2026-11-09")),
                (d("2026-11-13"), d("2026-11-27"))
            ]
        );
        assert_eq!(cov.failed_runs, 0);
        let cov = store
            .coverage("src", d("2026-11-01"), d("2026-11-04"))
            .unwrap();
        assert!(cov.is_complete() && cov.covered_days == 4);
    }

    fn gappy_run(from: &str, to: &str, gaps: &[(&str, &str)]) -> RunRecord {
        RunRecord {
            uncovered: gaps.iter().map(|(a, b)| (d(a), d(b))).collect(),
            ..ok_run(from, to)
        }
    }

    fn gaps_of(store: &SqliteStore, from: &str, to: &str) -> Vec<(NaiveDate, NaiveDate)> {
        store.coverage("src", d(from), d(to)).unwrap().gaps
    }

    #[test]
    fn a_run_with_gaps_leaves_exactly_those_days_uncovered_until_a_later_run_covers_them() {
        let (_dir, store) = open();
        let gaps = [("2026-11-03", "2026-11-03"), ("2026-11-09", "2026-11-10")];
        store
            .record_run(&gappy_run("2026-11-01", "2026-11-10", &gaps), &[], None)
            .unwrap();
        let want = vec![
            (d("2026-11-03"), d("2026-11-03")),
            (d("2026-11-09"), d("2026-11-10")),
        ];
        let cov = store
            .coverage("src", d("2026-11-01"), d("2026-11-10"))
            .unwrap();
        assert_eq!((cov.gaps.clone(), cov.covered_days), (want.clone(), 7));
        assert!(!cov.is_complete());
        assert!(
            store
                .coverage("src", d("2026-11-04"), d("2026-11-08"))
                .unwrap()
                .is_complete()
        );
        // The run says so, and where the next run has to reach back to.
        let status = store.source_status("src").unwrap();
        assert_eq!(status.last_run.unwrap().run.uncovered, want);
        assert_eq!(store.resume_point("src").unwrap().uncovered, want);

        // A failed run over them changes nothing.
        store
            .record_run(
                &run(
                    "src",
                    RunResult::Error,
                    "2026-11-09",
                    "2026-11-11",
                    "2026-12-02T00:00:00Z",
                ),
                &[],
                None,
            )
            .unwrap();
        assert_eq!(store.resume_point("src").unwrap().uncovered, want);

        // A later run covering 11-09..11-11 closes that gap, leaves 11-03.
        store
            .record_run(&ok_run("2026-11-09", "2026-11-11"), &[], None)
            .unwrap();
        let left = vec![(d("2026-11-03"), d("2026-11-03"))];
        assert_eq!(gaps_of(&store, "2026-11-01", "2026-11-11"), left);
        assert_eq!(store.resume_point("src").unwrap().uncovered, left);
        assert_eq!(
            store
                .source_status("src")
                .unwrap()
                .last_run
                .unwrap()
                .run
                .uncovered,
            []
        );

        // The latest successful run asking for a day decides: one that names
        // a covered day uncovered (the platform says it is not final after
        // all) uncovers it, and its other days stay covered.
        store
            .record_run(
                &gappy_run("2026-11-05", "2026-11-06", &[("2026-11-06", "2026-11-06")]),
                &[],
                None,
            )
            .unwrap();
        let now = vec![
            (d("2026-11-03"), d("2026-11-03")),
            (d("2026-11-06"), d("2026-11-06")),
        ];
        assert_eq!(gaps_of(&store, "2026-11-01", "2026-11-11"), now);
        assert_eq!(store.resume_point("src").unwrap().uncovered, now);

        // A backfill of the whole stretch covers everything again.
        store
            .record_run(&ok_run("2026-11-01", "2026-11-11"), &[], None)
            .unwrap();
        assert_eq!(gaps_of(&store, "2026-11-01", "2026-11-11"), []);
        assert_eq!(store.resume_point("src").unwrap().uncovered, []);
        // Reopened, the index is rebuilt from the rows the same way.
        let reopened = SqliteStore::open(store.path().parent().unwrap()).unwrap();
        assert_eq!(gaps_of(&reopened, "2026-11-01", "2026-11-11"), []);
    }

    #[test]
    fn uncovered_days_must_be_sorted_ranges_inside_a_successful_runs_window() {
        let (_dir, store) = open();
        for (record, what) in [
            (
                gappy_run("2026-11-01", "2026-11-10", &[("2026-10-31", "2026-11-01")]),
                "before the window",
            ),
            (
                gappy_run("2026-11-01", "2026-11-10", &[("2026-11-10", "2026-11-11")]),
                "after the window",
            ),
            (
                gappy_run("2026-11-01", "2026-11-10", &[("2026-11-05", "2026-11-04")]),
                "reversed",
            ),
            (
                gappy_run(
                    "2026-11-01",
                    "2026-11-10",
                    &[("2026-11-05", "2026-11-06"), ("2026-11-02", "2026-11-03")],
                ),
                "unsorted",
            ),
            (
                RunRecord {
                    result: RunResult::Error,
                    ..gappy_run("2026-11-01", "2026-11-10", &[("2026-11-02", "2026-11-02")])
                },
                "failed run",
            ),
        ] {
            let err = store.record_run(&record, &[], None).unwrap_err();
            assert!(
                err.to_string()
                    .contains("must be sorted, disjoint ranges inside its window"),
                "{what}: {err}"
            );
        }
        assert!(store.source_status("src").unwrap().last_run.is_none());
    }

    /// The SQL text of every statement the connections given to
    /// [`count_statements`] run.
    static STATEMENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn count_statements(event: rusqlite::trace::TraceEvent<'_>) {
        if let rusqlite::trace::TraceEvent::Stmt(stmt, _) = event {
            // The text as prepared, without the values bound to it.
            lock(&STATEMENTS).push(stmt.sql().into_owned());
        }
    }

    fn statements_of(f: impl FnOnce()) -> Vec<String> {
        lock(&STATEMENTS).clear();
        f();
        std::mem::take(&mut *lock(&STATEMENTS))
    }

    #[test]
    fn uncovered_days_cost_no_statement_of_their_own() {
        let (_dir, store) = open();
        let stmt = rusqlite::trace::TraceEventCodes::SQLITE_TRACE_STMT;
        lock(&store.writer)
            .conn
            .trace_v2(stmt, Some(count_statements));
        lock(&store.reader)
            .conn
            .trace_v2(stmt, Some(count_statements));
        let data = |day| vec![obs("u", "posts", "", day, 1.0)];
        // Warm the statement caches and the key ids.
        store
            .record_run(
                &ok_run("2026-11-01", "2026-11-02"),
                &data("2026-11-01"),
                None,
            )
            .unwrap();
        store
            .coverage("src", d("2026-11-01"), d("2026-11-30"))
            .unwrap();

        let plain = statements_of(|| {
            store
                .record_run(
                    &ok_run("2026-11-02", "2026-11-04"),
                    &data("2026-11-02"),
                    None,
                )
                .unwrap();
        });
        let gappy = statements_of(|| {
            store
                .record_run(
                    &gappy_run("2026-11-03", "2026-11-05", &[("2026-11-04", "2026-11-05")]),
                    &data("2026-11-03"),
                    None,
                )
                .unwrap();
        });
        assert!(!plain.is_empty());
        assert_eq!(plain, gappy);
        // Reading coverage and the resume point folds both with the same
        // statements as a run without gaps.
        let read = || {
            store
                .coverage("src", d("2026-11-01"), d("2026-11-30"))
                .unwrap();
            store.resume_point("src").unwrap();
        };
        let after_gappy = statements_of(read);
        store
            .record_run(&ok_run("2026-11-04", "2026-11-05"), &[], None)
            .unwrap();
        let after_plain = statements_of(read);
        assert_eq!(after_plain, after_gappy);
        assert_eq!(gaps_of(&store, "2026-11-01", "2026-11-05"), []);
    }

    #[test]
    fn an_invalid_observation_stores_nothing() {
        let (_dir, store) = open();
        // Two values of 1e308 would sum to infinity in a roll-up.
        for bad in [f64::NAN, f64::INFINITY, 1e308, -1.5e15] {
            let o = vec![
                obs("u", "posts", "", "2026-11-01", 1.0),
                obs("u", "posts", "", "2026-11-02", bad),
            ];
            let err = store
                .record_run(&ok_run("2026-11-01", "2026-11-02"), &o, None)
                .unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("run of source \"src\" cannot be stored: observation"),
                "{err}"
            );
        }
        assert!(store.recent_runs("src", 10).unwrap().is_empty());
        assert_eq!(
            one(&store, "2026-11-01", "2026-11-30", "posts", Kind::Count),
            None
        );
    }

    #[test]
    fn reopening_keeps_data_and_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SqliteStore::open(dir.path()).unwrap();
            store
                .record_run(
                    &ok_run("2026-11-01", "2026-11-01"),
                    &[obs("u", "posts", "", "2026-11-01", 3.0)],
                    None,
                )
                .unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(
            one(&store, "2026-11-01", "2026-11-30", "posts", Kind::Count),
            Some(3.0)
        );
        let conn = Connection::open(store.path()).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(store);

        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = SqliteStore::open(dir.path()).err().unwrap();
        assert!(
            err.to_string().ends_with(&format!(
                "has schema version 99, this tallyd knows versions up to {}: run a newer tallyd or point data_dir elsewhere",
                MIGRATIONS.len()
            )),
            "{err}"
        );
    }

    /// Q4 2026 of `u`: posts (count) on three days, points (level) of alice.
    fn q4_data() -> Vec<Observation> {
        vec![
            obs("u", "posts", "", "2026-10-05", 1.0),
            obs("u", "posts", "", "2026-11-10", 2.0),
            obs("u", "posts", "", "2026-12-20", 4.0),
            obs("u", "points", "alice", "2026-11-10", 100.0),
            obs("u", "points", "alice", "2026-11-20", 150.0),
        ]
    }

    const Q4: &[(&str, Kind)] = &[("posts", Kind::Count), ("points", Kind::Level)];

    fn q4(store: &SqliteStore) -> BTreeMap<(String, String), f64> {
        numbers(store, "2026-10-01", "2026-12-31", Q4)
    }

    fn expect(posts: f64, points: f64) -> BTreeMap<(String, String), f64> {
        BTreeMap::from([
            (("u".to_owned(), "points".to_owned()), points),
            (("u".to_owned(), "posts".to_owned()), posts),
        ])
    }

    #[test]
    fn a_recollected_past_day_is_read_again_not_served_from_the_month_cache() {
        let (_dir, store) = open();
        store
            .record_run(&ok_run("2026-10-01", "2026-12-31"), &q4_data(), None)
            .unwrap();
        assert_eq!(q4(&store), expect(7.0, 150.0));
        assert!(
            lock(&store.reader).months.rows > 0,
            "the months were cached"
        );
        // November again: a corrected count, a later level, and a new key.
        let again = vec![
            obs("u", "posts", "", "2026-11-10", 5.0),
            obs("u", "points", "alice", "2026-11-25", 170.0),
            obs("u", "points", "bob", "2026-11-02", 30.0),
        ];
        store
            .record_run(&ok_run("2026-11-01", "2026-11-30"), &again, None)
            .unwrap();
        assert_eq!(q4(&store), expect(10.0, 200.0));
        // The months untouched by the run still come from the cache, and
        // the partial month at an edge mixes both.
        assert_eq!(
            numbers(&store, "2026-10-01", "2026-11-24", Q4),
            expect(6.0, 180.0)
        );
        // Entity values fold the same months.
        let alice: Vec<f64> = store
            .entity_values(
                d("2026-10-01"),
                d("2026-12-31"),
                &inds(&[("points", Kind::Level)]),
            )
            .unwrap()
            .into_iter()
            .filter(|v| v.entity == "alice")
            .map(|v| v.value)
            .collect();
        assert_eq!(alice, [170.0]);
    }

    #[test]
    fn a_write_by_another_process_is_seen_by_a_reader_that_cached_the_month() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = SqliteStore::open(dir.path()).unwrap();
        daemon
            .record_run(&ok_run("2026-10-01", "2026-12-31"), &q4_data(), None)
            .unwrap();
        assert_eq!(q4(&daemon), expect(7.0, 150.0));
        // `tallyd collect` in another process: its own connections and cache.
        let collect = SqliteStore::open(dir.path()).unwrap();
        collect
            .record_run(
                &ok_run("2026-12-01", "2026-12-31"),
                &[obs("u", "posts", "", "2026-12-20", 40.0)],
                None,
            )
            .unwrap();
        assert_eq!(q4(&daemon), expect(43.0, 150.0));
    }

    #[test]
    fn the_month_version_alone_decides_whether_a_cached_month_is_used() {
        let (_dir, store) = open();
        store
            .record_run(&ok_run("2026-10-01", "2026-12-31"), &q4_data(), None)
            .unwrap();
        assert_eq!(q4(&store), expect(7.0, 150.0));
        // Change `monthly` behind the store's back without a new version:
        // the cache answers, which shows it is used...
        let conn = Connection::open(store.path()).unwrap();
        let november = month_num(d("2026-11-01"));
        conn.execute(
            "UPDATE monthly SET sum = sum + 100 WHERE month = ?1",
            [november],
        )
        .unwrap();
        assert_eq!(q4(&store), expect(7.0, 150.0));
        // ...and once the version moves, the month is read again.
        bump_month_versions(&conn, [november, november]).unwrap();
        assert_eq!(q4(&store), expect(107.0, 150.0));
        let version: i64 = conn
            .query_row(
                "SELECT version FROM monthly_versions WHERE month = ?1",
                [november],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(version, 2, "one run, then one bump of the month");
    }

    #[test]
    fn reopening_reads_the_same_numbers_and_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SqliteStore::open(dir.path()).unwrap();
            store
                .record_run(&ok_run("2026-10-01", "2026-12-31"), &q4_data(), None)
                .unwrap();
            assert_eq!(q4(&store), expect(7.0, 150.0));
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(q4(&store), expect(7.0, 150.0));
        store
            .record_run(
                &ok_run("2026-10-05", "2026-10-05"),
                &[obs("u", "posts", "", "2026-10-05", 0.0)],
                None,
            )
            .unwrap();
        assert_eq!(q4(&store), expect(6.0, 150.0));
    }

    #[test]
    fn a_database_of_schema_1_is_migrated_and_keeps_its_numbers_exact() {
        let dir = tempfile::tempdir().unwrap();
        {
            // What a tallyd of schema 1 left: one November observation.
            let mut conn = Connection::open(dir.path().join("tally.db")).unwrap();
            let tx = conn.transaction().unwrap();
            tx.execute_batch(MIGRATIONS[0]).unwrap();
            tx.pragma_update(None, "user_version", 1).unwrap();
            let day = day_num(d("2026-11-10"));
            tx.execute_batch(&format!(
                "INSERT INTO runs VALUES (1, 'src', 'schedule', 0, 0, 'success', NULL, {day}, {day}, 1, '[]', NULL);
                 INSERT INTO keys VALUES (1, 'src', 'u', 'posts', '');
                 INSERT INTO observations VALUES (1, {day}, 2.0, 1);
                 INSERT INTO monthly VALUES ({}, 1, 2.0, {day}, 2.0);",
                month_num(d("2026-11-10"))
            ))
            .unwrap();
            tx.commit().unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        let version: i64 = lock(&store.writer)
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let posts =
            |store: &SqliteStore| one(store, "2026-10-01", "2026-12-31", "posts", Kind::Count);
        assert_eq!(posts(&store), Some(2.0));
        store
            .record_run(
                &ok_run("2026-11-10", "2026-11-11"),
                &[
                    obs("u", "posts", "", "2026-11-10", 3.0),
                    obs("u", "posts", "", "2026-11-11", 1.0),
                ],
                None,
            )
            .unwrap();
        assert_eq!(posts(&store), Some(4.0));
        // A run stored before runs could name uncovered days covered its window.
        let cov = store
            .coverage("src", d("2026-11-10"), d("2026-11-11"))
            .unwrap();
        assert!(cov.is_complete(), "{cov:?}");
        assert_eq!(store.runs(&[1]).unwrap()[0].run.uncovered, []);
        assert_eq!(store.resume_point("src").unwrap().uncovered, []);
    }

    #[test]
    fn a_month_cache_smaller_than_a_fold_gives_the_same_numbers() {
        let (_dir, store) = open();
        let mut o = Vec::new();
        for (n, day) in d("2026-01-01").iter_days().take(365).enumerate() {
            o.push(obs("u", "posts", "", &day.to_string(), (n % 5) as f64));
            o.push(obs("v", "posts", "", &day.to_string(), 1.0));
        }
        store
            .record_run(&ok_run("2026-01-01", "2026-12-31"), &o, None)
            .unwrap();
        let year = |store: &SqliteStore| {
            numbers(store, "2026-01-01", "2026-12-31", &[("posts", Kind::Count)])
        };
        let whole = year(&store);
        let sum_u: f64 = (0..365).map(|n| (n % 5) as f64).sum();
        assert_eq!(
            whole,
            BTreeMap::from([
                (("u".to_owned(), "posts".to_owned()), sum_u),
                (("v".to_owned(), "posts".to_owned()), 365.0),
            ])
        );
        // Room for three months of two keys: most months are read each time.
        let (_dir2, small) = open();
        small
            .record_run(&ok_run("2026-01-01", "2026-12-31"), &o, None)
            .unwrap();
        lock(&small.reader).months.capacity = 6;
        for _ in 0..3 {
            assert_eq!(year(&small), whole);
            let reader = lock(&small.reader);
            assert!(
                reader.months.rows <= 6,
                "{} rows cached",
                reader.months.rows
            );
            assert_eq!(
                reader.months.rows,
                reader
                    .months
                    .months
                    .values()
                    .map(|m| m.rows.len())
                    .sum::<usize>()
            );
        }
        // The quarter just read stays; the least recently used goes first.
        assert_eq!(
            numbers(
                &small,
                "2026-04-01",
                "2026-06-30",
                &[("posts", Kind::Count)]
            )[&("v".to_owned(), "posts".to_owned())],
            91.0
        );
        let reader = lock(&small.reader);
        let mut cached: Vec<i64> = reader.months.months.keys().copied().collect();
        cached.sort();
        let m = |s: &str| month_num(d(s));
        assert_eq!(cached, [m("2026-04-01"), m("2026-05-01"), m("2026-06-01")]);
    }

    #[test]
    fn interleaved_recollections_and_reads_equal_the_raw_computation() {
        let (_dir, store) = open();
        let mut truth: BTreeMap<(String, NaiveDate), f64> = BTreeMap::new();
        let mut seed = 11;
        let first = d("2026-09-01");
        let cuts = [
            ("2026-09-01", "2026-12-31"),
            ("2026-10-01", "2026-12-31"),
            ("2026-10-01", "2026-10-31"),
            ("2026-09-15", "2026-11-30"),
            ("2026-11-01", "2026-12-10"),
        ];
        for _pass in 0..12 {
            // A run re-collects a random window of up to 40 days.
            let from = first + chrono::Days::new(lcg(&mut seed) % 110);
            let to = from + chrono::Days::new(lcg(&mut seed) % 40);
            let mut batch = Vec::new();
            for day in from.iter_days().take_while(|d| *d <= to) {
                for unit in ["a", "b"] {
                    if lcg(&mut seed).is_multiple_of(4) {
                        continue;
                    }
                    let value = (lcg(&mut seed) % 10) as f64;
                    truth.insert((unit.to_owned(), day), value);
                    batch.push(obs(unit, "n", "", &day.to_string(), value));
                }
            }
            store
                .record_run(&ok_run(&from.to_string(), &to.to_string()), &batch, None)
                .unwrap();
            for (s, e) in cuts {
                let (s_d, e_d) = (d(s), d(e));
                let mut count: BTreeMap<(String, String), f64> = BTreeMap::new();
                let mut last: BTreeMap<(String, String), f64> = BTreeMap::new();
                for ((unit, day), v) in &truth {
                    if s_d <= *day && *day <= e_d {
                        *count.entry((unit.clone(), "n".into())).or_default() += v;
                        last.insert((unit.clone(), "n".into()), *v);
                    }
                }
                assert_eq!(
                    numbers(&store, s, e, &[("n", Kind::Count)]),
                    count,
                    "count {s}..{e}"
                );
                assert_eq!(
                    numbers(&store, s, e, &[("n", Kind::Level)]),
                    last,
                    "level {s}..{e}"
                );
            }
        }
    }

    /// Per day, whether the latest successful run asking for it covered it,
    /// from every run's row.
    fn days_by_sql(conn: &Connection, source: &str) -> BTreeMap<i64, bool> {
        let mut stmt = conn
            .prepare(
                "SELECT id, window_from, window_to, uncovered FROM runs \
                 WHERE source = ?1 AND result = 'success' ORDER BY id",
            )
            .unwrap();
        let runs: Vec<(i64, i64, i64, Option<String>)> = stmt
            .query_map(params![source], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut covered: BTreeMap<i64, bool> = BTreeMap::new();
        for (id, from, to, gaps) in runs {
            let gaps = gaps
                .map(|g| parse_uncovered(id, &g).unwrap())
                .unwrap_or_default();
            for day in from..=to {
                let out = gaps.iter().any(|&(a, b)| a <= day && day <= b);
                covered.insert(day, !out);
            }
        }
        covered
    }

    /// Days as merged inclusive ranges.
    fn day_ranges_of(days: impl Iterator<Item = i64>) -> Vec<(i64, i64)> {
        let mut ranges: Vec<(i64, i64)> = Vec::new();
        for day in days {
            match ranges.last_mut() {
                Some((_, b)) if *b + 1 == day => *b = day,
                _ => ranges.push((day, day)),
            }
        }
        ranges
    }

    /// Coverage computed day by day from every run's row.
    fn coverage_by_sql(
        conn: &Connection,
        source: &str,
        s: i64,
        e: i64,
    ) -> (Vec<(i64, i64)>, i64, Option<i64>) {
        let covered = days_by_sql(conn, source);
        let gaps = day_ranges_of((s..=e).filter(|day| covered.get(day) != Some(&true)));
        let failed = conn
            .query_row(
                "SELECT COUNT(*) FROM runs WHERE source = ?1 AND result != 'success' \
                 AND window_to >= ?2 AND window_from <= ?3",
                params![source, s, e],
                |r| r.get(0),
            )
            .unwrap();
        let last = conn
            .query_row(
                "SELECT MAX(finished_at) FROM runs WHERE source = ?1 AND result = 'success'",
                [source],
                |r| r.get(0),
            )
            .unwrap();
        (gaps, failed, last)
    }

    /// A source's status as the first store read it, in SQL over every run.
    fn status_by_sql(conn: &Connection, source: &str) -> SourceStatus {
        let last_run = conn
            .query_row(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE source = ?1 ORDER BY id DESC LIMIT 1"
                ),
                [source],
                run_row,
            )
            .optional()
            .unwrap()
            .map(|r| stored_run(r).unwrap());
        let last_success = conn
            .query_row(
                "SELECT id, finished_at, window_to FROM runs WHERE source = ?1 AND result = 'success' \
                 ORDER BY finished_at DESC, id DESC LIMIT 1",
                [source],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
            )
            .optional()
            .unwrap()
            .map(|(run_id, finished, to)| LastSuccess {
                run_id,
                finished_at: from_millis(finished).unwrap(),
                window_to: num_day(to).unwrap(),
            });
        let state = conn
            .query_row(
                "SELECT state FROM source_state WHERE source = ?1",
                [source],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .unwrap()
            .map(|s| serde_json::from_str(&s).unwrap());
        let mut runs = RunCounts::default();
        let mut stmt = conn
            .prepare("SELECT result, COUNT(*) FROM runs WHERE source = ?1 GROUP BY result")
            .unwrap();
        let rows = stmt
            .query_map([source], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .unwrap();
        for row in rows {
            let (result, n) = row.unwrap();
            let n = n as u64;
            match RunResult::parse(&result).unwrap() {
                RunResult::Success => runs.success = n,
                RunResult::Error => runs.error = n,
                RunResult::Timeout => runs.timeout = n,
                RunResult::Panic => runs.panic = n,
                RunResult::Crash => runs.crash = n,
            }
        }
        SourceStatus {
            last_run,
            last_success,
            state,
            runs,
        }
    }

    #[test]
    fn coverage_and_status_from_the_run_index_equal_the_sql_over_every_run() {
        let (_dir, store) = open();
        let conn = Connection::open(store.path()).unwrap();
        let mut seed = 3;
        let base = day_num(d("2026-10-01"));
        let results = [
            RunResult::Success,
            RunResult::Success,
            RunResult::Success,
            RunResult::Error,
            RunResult::Timeout,
            RunResult::Panic,
            RunResult::Crash,
        ];
        for round in 0..40 {
            let source = ["src", "other"][round % 2];
            let from = base + (lcg(&mut seed) % 80) as i64;
            let to = from + (lcg(&mut seed) % 6) as i64;
            let result = results[(lcg(&mut seed) % 7) as usize];
            // Few distinct finishing times: ties, and backfills finishing late.
            let finished = format!("2026-12-{:02}T00:00:00Z", 1 + lcg(&mut seed) % 5);
            let mut r = run(source, result, "2026-10-01", "2026-10-01", &finished);
            (r.window_from, r.window_to) = (num_day(from).unwrap(), num_day(to).unwrap());
            // Every other successful run leaves a stretch of its window uncovered.
            if result == RunResult::Success && lcg(&mut seed).is_multiple_of(2) {
                let a = from + (lcg(&mut seed) % (to - from + 1) as u64) as i64;
                let b = a + (lcg(&mut seed) % (to - a + 1) as u64) as i64;
                r.uncovered = vec![(num_day(a).unwrap(), num_day(b).unwrap())];
            }
            let state = serde_json::json!({ "round": round });
            let state = (result == RunResult::Success).then_some(&state);
            store.record_run(&r, &[], state).unwrap();
            for _ in 0..3 {
                let s = base + (lcg(&mut seed) % 90) as i64 - 5;
                let e = s + (lcg(&mut seed) % 40) as i64 - 2;
                for source in ["src", "other", "nobody"] {
                    assert_eq!(
                        store.source_status(source).unwrap(),
                        status_by_sql(&conn, source),
                        "{source} after {round} runs"
                    );
                    let named = days_by_sql(&conn, source)
                        .into_iter()
                        .filter(|(_, covered)| !covered)
                        .map(|(day, _)| day);
                    let named: Vec<(NaiveDate, NaiveDate)> = day_ranges_of(named)
                        .into_iter()
                        .map(|(a, b)| (num_day(a).unwrap(), num_day(b).unwrap()))
                        .collect();
                    assert_eq!(
                        store.resume_point(source).unwrap().uncovered,
                        named,
                        "{source} after {round} runs"
                    );
                    let (gaps, failed, last) = coverage_by_sql(&conn, source, s, e);
                    let got = store
                        .coverage(source, num_day(s).unwrap(), num_day(e).unwrap())
                        .unwrap();
                    let want_gaps: Vec<(NaiveDate, NaiveDate)> = gaps
                        .iter()
                        .map(|&(a, b)| (num_day(a).unwrap(), num_day(b).unwrap()))
                        .collect();
                    let uncovered: i64 = gaps.iter().map(|(a, b)| b - a + 1).sum();
                    assert_eq!(
                        got,
                        Coverage {
                            start: num_day(s).unwrap(),
                            end: num_day(e).unwrap(),
                            covered_days: (e - s + 1).max(0) - uncovered,
                            gaps: want_gaps,
                            failed_runs: failed as u64,
                            last_success: last.map(|ms| from_millis(ms).unwrap()),
                        },
                        "{source} {s}..{e} after {round} runs"
                    );
                }
            }
        }
        // Several at once, in the order asked.
        let both = store
            .coverages(&["other", "src"], d("2026-10-01"), d("2026-12-31"))
            .unwrap();
        assert_eq!(
            both[0],
            store
                .coverage("other", d("2026-10-01"), d("2026-12-31"))
                .unwrap()
        );
        assert_eq!(
            both[1],
            store
                .coverage("src", d("2026-10-01"), d("2026-12-31"))
                .unwrap()
        );
    }

    #[test]
    fn merged_windows_stay_sorted_disjoint_and_apart() {
        let mut runs = SourceRuns::default();
        for (from, to) in [
            (10, 12),
            (20, 25),
            (14, 15),
            (13, 13),
            (30, 30),
            (26, 29),
            (1, 40),
            (50, 49),
        ] {
            runs.add(0, RunResult::Success, (from, to), &[], 0);
            assert!(
                runs.covered.windows(2).all(|w| w[0].1 + 1 < w[1].0),
                "{:?}",
                runs.covered
            );
        }
        assert_eq!(runs.covered, [(1, 40)]);
        let mut runs = SourceRuns::default();
        for (from, to) in [(10, 12), (14, 15), (20, 25), (13, 13)] {
            runs.add(0, RunResult::Success, (from, to), &[], 0);
        }
        assert_eq!(runs.covered, [(10, 15), (20, 25)]);
        assert_eq!(runs.coverage(8, 22), (vec![(8, 9), (16, 19)], 0));
    }

    #[test]
    fn day_and_month_numbers() {
        assert_eq!(day_num(d("1970-01-01")), 0);
        assert_eq!(day_num(d("1970-01-02")), 1);
        assert_eq!(num_day(day_num(d("2026-11-27"))).unwrap(), d("2026-11-27"));
        assert_eq!(month_num(d("2026-01-15")), 2026 * 12);
        let (first, last) = month_days(month_num(d("2024-02-10"))).unwrap();
        assert_eq!(
            (num_day(first).unwrap(), num_day(last).unwrap()),
            (d("2024-02-01"), d("2024-02-29"))
        );
    }

    #[test]
    fn pages_of_observations_join_up_to_the_whole_list_in_its_order() {
        let (_dir, store) = open();
        let mut all = Vec::new();
        // Two units, two sources, entities and days interleaved, plus rows
        // that the figure does not cover (another indicator, unit, month).
        for (source, unit) in [("b", "county/a"), ("a", "county/a"), ("a", "county")] {
            let mut observations = Vec::new();
            for entity in ["", "x", "y"] {
                for day in ["2026-03-01", "2026-03-02", "2026-03-31"] {
                    let mut o = obs(unit, "posts", entity, day, 1.0);
                    o.source = source.into();
                    observations.push(o);
                }
            }
            let mut other = obs(unit, "likes", "x", "2026-03-02", 5.0);
            other.source = source.into();
            observations.push(other);
            let mut april = obs(unit, "posts", "x", "2026-04-01", 5.0);
            april.source = source.into();
            observations.push(april);
            let mut run = ok_run("2026-03-01", "2026-04-30");
            run.source = source.into();
            store.record_run(&run, &observations, None).unwrap();
        }
        let mut elsewhere = obs("county/b", "posts", "", "2026-03-05", 1.0);
        elsewhere.source = "a".into();
        let mut run = ok_run("2026-03-01", "2026-03-31");
        run.source = "a".into();
        store.record_run(&run, &[elsewhere], None).unwrap();

        let units = ["county", "county/a"];
        let (start, end) = (d("2026-03-01"), d("2026-03-31"));
        all.extend(store.observations(&units, "posts", start, end).unwrap());
        assert_eq!(all.len(), 27);
        for limit in [1, 2, 4, 9, 26, 27, 100] {
            let mut joined = Vec::new();
            let mut after: Option<ObservationCursor> = None;
            loop {
                let page = store
                    .observations_page(&units, "posts", start, end, after.as_ref(), limit)
                    .unwrap();
                assert!(page.len() <= limit);
                // The default of the trait (filtering the whole list) agrees.
                let fallback =
                    default_page(&store, &units, "posts", start, end, after.as_ref(), limit)
                        .unwrap();
                assert_eq!(page, fallback, "limit {limit} after {after:?}");
                let Some(last) = page.last() else { break };
                after = Some(ObservationCursor::of(&last.observation));
                joined.extend(page);
            }
            assert_eq!(joined, all, "limit {limit}");
        }
        // A cursor for a unit outside the list gives nothing.
        let stray = ObservationCursor {
            unit: "county/b".into(),
            source: "a".into(),
            entity: String::new(),
            day: d("2026-03-05"),
        };
        assert!(
            store
                .observations_page(&units, "posts", start, end, Some(&stray), 10)
                .unwrap()
                .is_empty()
        );
    }

    /// The trait's default `observations_page`, on a store that only
    /// forwards `observations`.
    fn default_page(
        store: &SqliteStore,
        units: &[&str],
        indicator: &str,
        start: NaiveDate,
        end: NaiveDate,
        after: Option<&ObservationCursor>,
        limit: usize,
    ) -> Result<Vec<StoredObservation>, StoreError> {
        struct Plain(SqliteStore);
        impl Store for Plain {
            fn record_run(
                &self,
                _: &RunRecord,
                _: &[Observation],
                _: Option<&serde_json::Value>,
            ) -> Result<i64, StoreError> {
                unreachable!()
            }
            fn source_status(&self, _: &str) -> Result<SourceStatus, StoreError> {
                unreachable!()
            }
            fn resume_point(&self, _: &str) -> Result<ResumePoint, StoreError> {
                unreachable!()
            }
            fn recent_runs(&self, _: &str, _: usize) -> Result<Vec<StoredRun>, StoreError> {
                unreachable!()
            }
            fn runs(&self, _: &[i64]) -> Result<Vec<StoredRun>, StoreError> {
                unreachable!()
            }
            fn own_values(
                &self,
                _: NaiveDate,
                _: NaiveDate,
                _: &[(String, Kind)],
            ) -> Result<Vec<OwnValue>, StoreError> {
                unreachable!()
            }
            fn entity_values(
                &self,
                _: NaiveDate,
                _: NaiveDate,
                _: &[(String, Kind)],
            ) -> Result<Vec<EntityValue>, StoreError> {
                unreachable!()
            }
            fn coverage(
                &self,
                _: &str,
                _: NaiveDate,
                _: NaiveDate,
            ) -> Result<Coverage, StoreError> {
                unreachable!()
            }
            fn observations(
                &self,
                units: &[&str],
                indicator: &str,
                start: NaiveDate,
                end: NaiveDate,
            ) -> Result<Vec<StoredObservation>, StoreError> {
                self.0.observations(units, indicator, start, end)
            }
            fn first_day(&self) -> Result<Option<NaiveDate>, StoreError> {
                unreachable!()
            }
            fn check_writable(&self) -> Result<(), StoreError> {
                unreachable!()
            }
        }
        let dir = store.path().parent().unwrap();
        Plain(SqliteStore::open(dir)?).observations_page(units, indicator, start, end, after, limit)
    }

    #[test]
    fn writes_of_another_connection_are_noticed_once_and_own_writes_never() {
        let (dir, store) = open();
        // A second store on the same file stands in for `tallyd collect`.
        let other = SqliteStore::open(dir.path()).unwrap();
        assert!(!store.written_elsewhere().unwrap());
        store
            .record_run(&ok_run("2026-01-01", "2026-01-31"), &[], None)
            .unwrap();
        assert!(!store.written_elsewhere().unwrap(), "its own write");
        other
            .record_run(&ok_run("2026-02-01", "2026-02-28"), &[], None)
            .unwrap();
        assert!(store.written_elsewhere().unwrap());
        assert!(!store.written_elsewhere().unwrap(), "told once");
        assert!(other.written_elsewhere().unwrap(), "the first store wrote");
    }
}
