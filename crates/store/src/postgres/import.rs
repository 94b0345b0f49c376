//! Writing a store read out of SQLite, for `tallyd store copy`.
//!
//! Invariant: run ids, observation counts and resume states arrive as they
//! were, so that a run an XLSX report or a clerk's note cites keeps its id;
//! each batch is one transaction, so an interrupted copy leaves whole runs.

use super::{PostgresStore, StoreError, lock, off_async, pg};
use crate::copy::{ExportedRun, ExportedState};

impl PostgresStore {
    /// Runs recorded in the database: a copy goes only into an empty one.
    pub fn run_count(&self) -> Result<u64, StoreError> {
        off_async(|| {
            let doing = "counting the runs";
            let mut conn = self.conn(doing)?;
            let n: i64 = conn
                .query_one("SELECT count(*) FROM runs", &[])
                .and_then(|r| r.try_get(0))
                .map_err(pg(doing))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    /// Writes `runs` with their own ids and counts, in one transaction.
    pub fn import_runs(&self, runs: &[ExportedRun]) -> Result<(), StoreError> {
        off_async(|| self.import_runs_here(runs))
    }

    fn import_runs_here(&self, runs: &[ExportedRun]) -> Result<(), StoreError> {
        let doing = "copying runs";
        let e = pg(doing);
        let _versions = lock(&self.writes);
        let mut conn = self.conn(doing)?;
        let mut tx = conn.transaction().map_err(&e)?;
        let insert_run = tx
            .prepare(
                "INSERT INTO runs (id, source, trigger, started_at, finished_at, result, error, \
                 window_from, window_to, observations, warnings, http_requests, uncovered, \
                 error_kind, retry_after) OVERRIDING SYSTEM VALUE \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .map_err(&e)?;
        let insert_observations = tx
            .prepare(
                "INSERT INTO observations (indicator, unit, source, entity, day, value, run) \
                 SELECT i, u, s, e, d, v, $1 \
                 FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::date[], \
                             $7::float8[]) AS t (i, u, s, e, d, v)",
            )
            .map_err(&e)?;
        for exported in runs {
            let (id, run) = (exported.run.id, &exported.run.run);
            let warnings =
                serde_json::to_string(&run.warnings).map_err(|err| StoreError::Corrupt {
                    what: "run warnings",
                    detail: format!("run {id}: {err}"),
                })?;
            let uncovered = crate::sqlite::uncovered_json(&run.uncovered);
            tx.execute(
                &insert_run,
                &[
                    &id,
                    &run.source,
                    &run.trigger,
                    &run.started_at.timestamp_millis(),
                    &run.finished_at.timestamp_millis(),
                    &run.result.as_str(),
                    &run.error,
                    &run.window_from,
                    &run.window_to,
                    &i64::try_from(exported.run.observations_written).unwrap_or(i64::MAX),
                    &warnings,
                    &run.http_requests.and_then(|n| i64::try_from(n).ok()),
                    &uncovered,
                    &run.error_kind,
                    &run.retry_after.map(|t| t.timestamp_millis()),
                ],
            )
            .map_err(&e)?;
            let obs = &exported.observations;
            if obs.is_empty() {
                continue;
            }
            let column = |f: fn(&tally_domain::Observation) -> &str| -> Vec<&str> {
                obs.iter().map(f).collect()
            };
            let days: Vec<chrono::NaiveDate> = obs.iter().map(|o| o.day).collect();
            let values: Vec<f64> = obs.iter().map(|o| o.value).collect();
            tx.execute(
                &insert_observations,
                &[
                    &id,
                    &column(|o| &o.indicator),
                    &column(|o| &o.unit),
                    &column(|o| &o.source),
                    &column(|o| &o.entity),
                    &days,
                    &values,
                ],
            )
            .map_err(&e)?;
        }
        let months: super::writer::Months<'_> = runs
            .iter()
            .flat_map(|r| &r.observations)
            .map(|o| {
                let month = super::writer::month_of(o.day);
                (&*o.indicator, &*o.unit, &*o.source, &*o.entity, month)
            })
            .collect();
        // Prepared for this one transaction: copies are rare.
        let mut prepared = super::session::Prepared::default();
        super::writer::count_runs(&mut tx, &mut prepared, runs.iter().map(|r| &r.run.run))?;
        super::writer::refresh_months(&mut tx, &months)?;
        tx.commit().map_err(&e)
    }

    /// Writes the resume states and moves the run ids past the copied ones,
    /// so that the next run recorded gets a new id.
    pub fn import_states(&self, states: &[ExportedState]) -> Result<(), StoreError> {
        off_async(|| {
            let doing = "copying resume states";
            let e = pg(doing);
            let _versions = lock(&self.writes);
            let mut conn = self.conn(doing)?;
            let mut tx = conn.transaction().map_err(&e)?;
            for s in states {
                let state = serde_json::to_string(&s.state).map_err(|err| StoreError::Corrupt {
                    what: "resume state",
                    detail: format!("source \"{}\": {err}", s.source),
                })?;
                tx.execute(
                    "INSERT INTO source_state (source, state, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (source) DO UPDATE \
                     SET state = excluded.state, updated_at = excluded.updated_at",
                    &[&s.source, &state, &s.updated_at.timestamp_millis()],
                )
                .map_err(&e)?;
            }
            tx.execute(
                "SELECT setval(pg_get_serial_sequence('runs', 'id'), \
                 (SELECT COALESCE(max(id), 0) + 1 FROM runs), false)",
                &[],
            )
            .map_err(&e)?;
            tx.execute("UPDATE store_version SET version = version + 1", &[])
                .map_err(&e)?;
            tx.commit().map_err(&e)
        })
    }
}
