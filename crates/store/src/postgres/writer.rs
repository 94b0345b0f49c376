//! The write path: a run's row, its observations (one upsert over arrays),
//! its resume state and the store version, in one transaction.
//!
//! Invariant: on any error nothing of the runs of a transaction is written;
//! a row observed again replaces the stored value and run id, never adds.

use std::collections::HashMap;

use postgres::Transaction;

use super::{Checked, PostgresStore, RunToRecord, StoreError, check_run, lock, pg};

/// Rows of a run that go in one statement: a big backfill is sent in parts
/// so that no single message grows without bound.
const UPSERT_CHUNK: usize = 10_000;

impl PostgresStore {
    /// Writes `runs` in one transaction and returns their run ids.
    pub(super) fn write(&self, runs: &[&Checked<'_>]) -> Result<Vec<i64>, StoreError> {
        let doing = "recording a run";
        let mut versions = lock(&self.writes);
        let mut conn = self.conn(doing)?;
        let mut tx = conn.transaction().map_err(pg(doing))?;
        let mut ids = Vec::with_capacity(runs.len());
        for run in runs {
            ids.push(write_run(&mut tx, run)?);
        }
        let version: i64 = tx
            .query_one(
                "UPDATE store_version SET version = version + 1 RETURNING version",
                &[],
            )
            .and_then(|r| r.try_get(0))
            .map_err(pg(doing))?;
        tx.commit().map_err(pg(doing))?;
        versions.mine.insert(version);
        Ok(ids)
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

/// Writes one checked run into `tx` and returns its id.
fn write_run(tx: &mut Transaction<'_>, c: &Checked<'_>) -> Result<i64, StoreError> {
    let e = pg("recording a run");
    let run = c.run;
    let run_id: i64 = tx
        .query_one(
            "INSERT INTO runs (source, trigger, started_at, finished_at, result, error, \
             window_from, window_to, observations, warnings, http_requests, uncovered, \
             error_kind, retry_after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
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
    let upsert = tx
        .prepare(
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
        tx.execute(
            "INSERT INTO source_state (source, state, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (source) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            &[&run.source, state, &run.finished_at.timestamp_millis()],
        )
        .map_err(&e)?;
    }
    Ok(run_id)
}
