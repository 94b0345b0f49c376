//! The write path: checking a run, then writing its run row, keys,
//! observations, touched months and state in one transaction.
//!
//! Invariant: every (key, month) a run touches has its `monthly` row
//! recomputed from the raw rows inside the run's transaction (and its month
//! version bumped), so re-collection replaces and never adds; on any error
//! nothing of the runs of a transaction is written.

use std::collections::HashSet;
use std::sync::OnceLock;

use rusqlite::{Connection, Transaction, TransactionBehavior, params};

use super::keys::WriterKeys;
use super::month_cache::bump_month_versions;
use super::run_index::uncovered_json;
use super::{RunRecord, RunResult, RunToRecord, SqliteStore, StoreError};
use super::{day_num, lock, millis, month_days, month_num, num_day};
use tally_domain::{MAX_VALUE, Observation};

/// The write connection and what it keeps between runs.
pub(super) struct Writer {
    pub(super) conn: Connection,
    keys: WriterKeys,
    scratch: Scratch,
    /// `PRAGMA data_version` when last asked: it moves only when another
    /// connection (another process) commits, never for this one's commits.
    pub(super) data_version: i64,
}

/// Whether two short texts are equal: a plain loop, cheaper for ids of a
/// few bytes than a call to `memcmp` for each, which this is on every row.
pub(super) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

/// Buffers reused by every run, so that a big run does not allocate per row.
#[derive(Default)]
pub(super) struct Scratch {
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
pub(crate) struct Checked<'a> {
    pub(crate) run: &'a RunRecord,
    pub(crate) observations: &'a [Observation],
    pub(crate) state: Option<String>,
    pub(crate) warnings: String,
    /// The `uncovered` column.
    pub(crate) uncovered: Option<String>,
}

/// Checks a run before anything is written: its observations must belong to
/// its source and be finite and within [`MAX_VALUE`] (the engine refused
/// the others; this keeps any other writer from making a sum overflow), its
/// state must serialize.
pub(crate) fn check_run<'a>(
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
    pub(super) fn new(conn: Connection, data_version: i64) -> Writer {
        Writer {
            conn,
            keys: WriterKeys::default(),
            scratch: Scratch::default(),
            data_version,
        }
    }

    /// Writes `runs` in one transaction and returns their run ids; on any
    /// error nothing of them is written.
    pub(super) fn write(&mut self, runs: &[&Checked<'_>]) -> Result<Vec<i64>, StoreError> {
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

impl SqliteStore {
    pub(super) fn record_runs_together(
        &self,
        runs: &[RunToRecord],
    ) -> Vec<Result<i64, StoreError>> {
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
                    error = %tally_domain::ErrorChain(&err),
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
}
