//! What the reader knows of the `runs` table: the run index folded per
//! source (coverage, counts, the latest success), and run rows as read.
//!
//! Invariant: runs are only ever inserted, and a run's id is above every id
//! committed before it, so the index catches up, inside the read's snapshot,
//! by folding the runs with ids above the highest one folded; covered and
//! uncovered days stay merged ranges (sorted, disjoint, not adjacent).

use std::collections::HashMap;

use chrono::NaiveDate;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{
    Coverage, LastSuccess, Reader, ResumePoint, RunCounts, RunRecord, RunResult, SourceStatus,
    SqliteStore, StoreError, StoredRun,
};
use super::{day_num, from_millis, lock, num_day};

/// Every run the reader has seen, folded per source into what coverage
/// needs, so that a summary over a thousand sources with years of runs does
/// not read them all again. Runs are only ever inserted, never updated or
/// deleted, and a run's id is above every id committed before it (one
/// writer at a time), so the index is brought up to date, inside the read's
/// snapshot, by folding the runs with ids above the highest one folded.
#[derive(Default)]
pub(super) struct RunIndex {
    /// The lowest id not folded yet.
    next_id: i64,
    pub(super) sources: HashMap<String, SourceRuns>,
}

#[derive(Default)]
pub(crate) struct SourceRuns {
    /// The covered days, merged: sorted, disjoint and not adjacent (day
    /// numbers, inclusive). A successful run covers its window minus the days
    /// it named uncovered, and uncovers those days: the latest successful run
    /// asking for a day decides (in id order, which is commit order).
    covered: Vec<(i64, i64)>,
    /// The days successful runs named uncovered and no later one covered,
    /// in the same form: where the next run may have to reach back to.
    pub(crate) uncovered: Vec<(i64, i64)>,
    /// The windows of the other runs, each with how many runs had it (runs
    /// in a row mostly share a window, so this stays short).
    failed: Vec<((i64, i64), u64)>,
    /// The latest successful run by (`finished_at`, id): its `finished_at`,
    /// id and `window_to`.
    last_success: Option<(i64, i64, i64)>,
    /// The id of the source's latest run, whatever its result.
    pub(super) last_run: i64,
    pub(super) counts: RunCounts,
}

impl SourceRuns {
    /// Folds run `id`; ids come in increasing order. `gaps` are the days of
    /// the window a successful run named uncovered (sorted, inside it).
    pub(crate) fn add(
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
    pub(crate) fn coverage(&self, s: i64, e: i64) -> (Vec<(i64, i64)>, u64) {
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
pub(crate) fn uncovered_json(ranges: &[(NaiveDate, NaiveDate)]) -> Option<String> {
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
pub(crate) fn parse_uncovered(id: i64, text: &str) -> Result<Vec<(i64, i64)>, StoreError> {
    serde_json::from_str::<Vec<(i64, i64)>>(text).map_err(|e| StoreError::Corrupt {
        what: "run's uncovered days",
        detail: format!("run {id}: {e}"),
    })
}

impl RunIndex {
    /// Folds the runs committed since the last call, as `tx` sees them.
    pub(super) fn refresh(&mut self, tx: &Connection) -> Result<(), StoreError> {
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

    pub(super) fn coverage(
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

pub(super) const RUN_COLUMNS: &str = "id, source, trigger, started_at, finished_at, result, error, \
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

pub(super) fn run_row(r: &Row<'_>) -> rusqlite::Result<RunRow> {
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

pub(super) fn stored_run(row: RunRow) -> Result<StoredRun, StoreError> {
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

/// The source's last success (from the run index) and resume state (one row).
pub(super) fn last_success_and_state(
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

impl SqliteStore {
    pub(super) fn read_resume_point(&self, source: &str) -> Result<ResumePoint, StoreError> {
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

    pub(super) fn read_source_status(&self, source: &str) -> Result<SourceStatus, StoreError> {
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

    pub(super) fn read_recent_runs(
        &self,
        source: &str,
        limit: usize,
    ) -> Result<Vec<StoredRun>, StoreError> {
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

    pub(super) fn read_runs(&self, ids: &[i64]) -> Result<Vec<StoredRun>, StoreError> {
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

    pub(super) fn read_coverages(
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
