//! The write path: a run's row, its observations (one upsert over arrays),
//! its resume state and the store version, in one transaction.
//!
//! Invariant: on any error nothing of the runs of a transaction is written;
//! a row observed again replaces the stored value and run id, never adds.
//! Every month a transaction writes observations of is summed again from
//! the observations in that transaction (`observation_months`), after the
//! month's row is locked: whichever writer locks it last sums after the
//! others committed, so the sums stay exact with several writers.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{Datelike, NaiveDate};

use postgres::{Client, Transaction};

use super::session::{Prepared, Session};
use super::{Checked, PostgresStore, RunRecord, RunToRecord, StoreError, check_run, lock, pg};

/// Rows of a run that go in one statement: a big backfill is sent in parts
/// so that no single message grows without bound.
const UPSERT_CHUNK: usize = 10_000;

impl PostgresStore {
    /// Writes `runs` in one transaction and returns their run ids.
    pub(super) fn write(&self, runs: &[&Checked<'_>]) -> Result<Vec<i64>, StoreError> {
        let doing = "recording a run";
        let mut versions = lock(&self.writes);
        let mut conn = self.conn(doing)?;
        let Session { client, prepared } = &mut *conn;
        let written = write_together(client, prepared, runs);
        match written {
            Ok((ids, version)) => {
                versions.mine.insert(version);
                Ok(ids)
            }
            Err(err) => {
                prepared.forget();
                Err(err)
            }
        }
    }

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
        let written: Vec<Result<i64, StoreError>> = match self.write(&valid) {
            Ok(ids) => ids.into_iter().map(Ok).collect(),
            Err(err) if valid.len() > 1 => {
                tracing::warn!(
                    runs = valid.len(),
                    error = %tally_domain::ErrorChain(&err),
                    "cannot commit runs together: recording them one by one"
                );
                valid
                    .iter()
                    .map(|&c| self.write(&[c]).map(|ids| ids[0]))
                    .collect()
            }
            Err(err) => vec![Err(err)],
        };
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

/// Writes `runs` in one transaction on `client`: their run ids and the
/// store version the transaction took.
fn write_together(
    client: &mut Client,
    prepared: &mut Prepared,
    runs: &[&Checked<'_>],
) -> Result<(Vec<i64>, i64), StoreError> {
    let doing = "recording a run";
    let mut tx = client.transaction().map_err(pg(doing))?;
    let mut ids = Vec::with_capacity(runs.len());
    let mut months = Months::new();
    for run in runs {
        ids.push(write_run(&mut tx, prepared, run)?);
        for o in run.observations {
            months.insert((
                &o.indicator,
                &o.unit,
                &run.run.source,
                &o.entity,
                month_of(o.day),
            ));
        }
    }
    // After every run's observations: a transaction takes count and month
    // locks only once it holds all its row locks, each kind in key order,
    // so two writers never wait on each other in a circle.
    count_runs(&mut tx, prepared, runs.iter().map(|c| c.run))?;
    let version = refresh_months(&mut tx, &months)?;
    tx.commit().map_err(pg(doing))?;
    Ok((ids, version))
}

/// Writes one checked run into `tx` and returns its id.
fn write_run(
    tx: &mut Transaction<'_>,
    prepared: &mut Prepared,
    c: &Checked<'_>,
) -> Result<i64, StoreError> {
    let e = pg("recording a run");
    let run = c.run;
    let insert = prepared
        .get(
            tx,
            "INSERT INTO runs (source, trigger, started_at, finished_at, result, error, \
             window_from, window_to, observations, warnings, http_requests, uncovered, \
             error_kind, retry_after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
        )
        .map_err(&e)?;
    let run_id: i64 = tx
        .query_one(
            &insert,
            &[
                &run.source,
                &run.trigger,
                &run.started_at.timestamp_millis(),
                &run.finished_at.timestamp_millis(),
                &run.result.as_str(),
                &run.error,
                &run.window_from,
                &run.window_to,
                &(c.observations.len() as i64),
                &c.warnings,
                &run.http_requests.and_then(|n| i64::try_from(n).ok()),
                &c.uncovered,
                &run.error_kind,
                &run.retry_after.map(|t| t.timestamp_millis()),
            ],
        )
        .and_then(|r| r.try_get(0))
        .map_err(&e)?;

    // One statement may not change a row twice: of two observations of the
    // same key and day the later wins, as two upserts in turn would.
    let mut last: HashMap<(&str, &str, &str, chrono::NaiveDate), usize> =
        HashMap::with_capacity(c.observations.len());
    for (i, o) in c.observations.iter().enumerate() {
        last.insert((&o.indicator, &o.unit, &o.entity, o.day), i);
    }
    let mut rows: Vec<usize> = last.into_values().collect();
    // Key order, so that concurrent writers lock rows in the same order.
    rows.sort_unstable_by(|&a, &b| {
        let (a, b) = (&c.observations[a], &c.observations[b]);
        (&a.indicator, &a.unit, &a.entity, a.day).cmp(&(&b.indicator, &b.unit, &b.entity, b.day))
    });
    let upsert = prepared
        .get(
            tx,
            "INSERT INTO observations (indicator, unit, source, entity, day, value, run) \
             SELECT i, u, $1, e, d, v, $2 \
             FROM unnest($3::text[], $4::text[], $5::text[], $6::date[], $7::float8[]) \
                  AS t (i, u, e, d, v) \
             ON CONFLICT (indicator, unit, source, entity, day) \
             DO UPDATE SET value = excluded.value, run = excluded.run",
        )
        .map_err(&e)?;
    for chunk in rows.chunks(UPSERT_CHUNK) {
        let of = |f: fn(&tally_domain::Observation) -> &str| -> Vec<&str> {
            chunk.iter().map(|&i| f(&c.observations[i])).collect()
        };
        let days: Vec<chrono::NaiveDate> = chunk.iter().map(|&i| c.observations[i].day).collect();
        let values: Vec<f64> = chunk.iter().map(|&i| c.observations[i].value).collect();
        tx.execute(
            &upsert,
            &[
                &run.source,
                &run_id,
                &of(|o| &o.indicator),
                &of(|o| &o.unit),
                &of(|o| &o.entity),
                &days,
                &values,
            ],
        )
        .map_err(&e)?;
    }

    if let Some(state) = &c.state {
        let replace = prepared
            .get(
                tx,
                "INSERT INTO source_state (source, state, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (source) DO UPDATE SET state = excluded.state, \
                 updated_at = excluded.updated_at",
            )
            .map_err(&e)?;
        tx.execute(
            &replace,
            &[&run.source, state, &run.finished_at.timestamp_millis()],
        )
        .map_err(&e)?;
    }
    Ok(run_id)
}

/// Adds `runs` to their sources' counts by result (`run_counts`), in key
/// order.
pub(super) fn count_runs<'a>(
    tx: &mut Transaction<'_>,
    prepared: &mut Prepared,
    runs: impl Iterator<Item = &'a RunRecord>,
) -> Result<(), StoreError> {
    let e = pg("counting runs");
    let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for run in runs {
        *counts
            .entry((&run.source, run.result.as_str()))
            .or_default() += 1;
    }
    let add = prepared
        .get(
            tx,
            "INSERT INTO run_counts (source, result, runs) \
             SELECT s, r, n FROM unnest($1::text[], $2::text[], $3::int8[]) AS t (s, r, n) \
             ON CONFLICT (source, result) DO UPDATE SET runs = run_counts.runs + excluded.runs",
        )
        .map_err(&e)?;
    let sources: Vec<&str> = counts.keys().map(|k| k.0).collect();
    let results: Vec<&str> = counts.keys().map(|k| k.1).collect();
    let n: Vec<i64> = counts.into_values().collect();
    tx.execute(&add, &[&sources, &results, &n]).map_err(&e)?;
    Ok(())
}

/// (indicator, unit, source, entity, first day of the month) of the months a
/// transaction wrote observations of, in key order.
pub(super) type Months<'a> = BTreeSet<(&'a str, &'a str, &'a str, &'a str, NaiveDate)>;

pub(super) fn month_of(day: NaiveDate) -> NaiveDate {
    day.with_day(1).expect("every month has a first day")
}

/// Sums `months` again from `observations`, in `tx`, and bumps the store
/// version: the months' rows are stamped with the new version, which this
/// returns, so that other processes' month caches fetch them.
pub(super) fn refresh_months(
    tx: &mut Transaction<'_>,
    months: &Months<'_>,
) -> Result<i64, StoreError> {
    let e = pg("summing months");
    let bump = |tx: &mut Transaction<'_>| -> Result<i64, StoreError> {
        tx.query_one(
            "UPDATE store_version SET version = version + 1 RETURNING version",
            &[],
        )
        .and_then(|r| r.try_get(0))
        .map_err(pg("summing months"))
    };
    if months.is_empty() {
        return bump(tx);
    }
    // Two statements: the first locks every month's row (creating the
    // missing ones) in key order, waiting for writers that hold one; the
    // second sees, in a new snapshot, what they committed meanwhile.
    let lock = tx
        .prepare(
            "INSERT INTO observation_months AS m \
                    (month, indicator, unit, source, entity, total, last_day, last_value, \
                     version) \
             SELECT m, i, u, s, e, 0, m, 0, 0 \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::date[]) \
                  AS t (i, u, s, e, m) \
             ON CONFLICT (month, indicator, unit, source, entity) \
             DO UPDATE SET total = m.total",
        )
        .map_err(&e)?;
    // One month at a time (LATERAL): its few rows come in day order from
    // the primary key, where one aggregate over all would sort them all.
    let sum = tx
        .prepare(
            "UPDATE observation_months m \
             SET total = a.total, last_day = a.last_day, last_value = a.last_value, \
                 version = $6 \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::date[]) \
                  AS t (i, u, s, e, m) \
             CROSS JOIN LATERAL ( \
                 SELECT SUM(o.value ORDER BY o.day) AS total, MAX(o.day) AS last_day, \
                        (ARRAY_AGG(o.value ORDER BY o.day DESC))[1] AS last_value \
                 FROM observations o \
                 WHERE o.indicator = t.i AND o.unit = t.u AND o.source = t.s \
                   AND o.entity = t.e AND o.day >= t.m \
                   AND o.day < (t.m + interval '1 month')::date) a \
             WHERE m.month = t.m AND m.indicator = t.i AND m.unit = t.u \
               AND m.source = t.s AND m.entity = t.e",
        )
        .map_err(&e)?;
    let months: Vec<_> = months.iter().collect();
    for chunk in months.chunks(UPSERT_CHUNK) {
        let (i, u, s, en, m) = columns(chunk);
        tx.execute(&lock, &[&i, &u, &s, &en, &m]).map_err(&e)?;
    }
    // The version is taken once every month row is locked, and its row
    // stays locked to the commit: versions then commit in order, so a
    // reader's snapshot holds every row stamped up to its `store_version`
    // and none after (what the month caches rely on). Holding month locks
    // while waiting for it cannot deadlock: its holder waits on none.
    let version = bump(tx)?;
    for chunk in months.chunks(UPSERT_CHUNK) {
        let (i, u, s, en, m) = columns(chunk);
        tx.execute(&sum, &[&i, &u, &s, &en, &m, &version])
            .map_err(&e)?;
    }
    Ok(version)
}

/// The columns of a chunk of months, as the statements take them.
#[allow(clippy::type_complexity)]
fn columns<'a>(
    chunk: &[&(&'a str, &'a str, &'a str, &'a str, NaiveDate)],
) -> (
    Vec<&'a str>,
    Vec<&'a str>,
    Vec<&'a str>,
    Vec<&'a str>,
    Vec<NaiveDate>,
) {
    (
        chunk.iter().map(|k| k.0).collect(),
        chunk.iter().map(|k| k.1).collect(),
        chunk.iter().map(|k| k.2).collect(),
        chunk.iter().map(|k| k.3).collect(),
        chunk.iter().map(|k| k.4).collect(),
    )
}
