//! Reading a whole store out, for `tallyd store copy`: every run in id
//! order with the observations that still name it, and every resume state.
//!
//! Invariant: one read transaction, so the copy is one snapshot even if a
//! `tallyd collect` commits meanwhile; memory holds one batch of runs.

use rusqlite::params;

use super::run_index::{RUN_COLUMNS, run_row, stored_run};
use super::{SqliteStore, StoreError, from_millis, lock, num_day};
use crate::copy::{ExportedRun, ExportedState};
use tally_domain::Observation;

impl SqliteStore {
    /// Calls `visit` with the runs in id order, `batch` at a time, each with
    /// the observations whose latest writer it is (what a store keeps of a
    /// run once later runs replaced some of its rows), then once with every
    /// source's resume state.
    pub fn export(
        &self,
        batch: usize,
        visit_runs: &mut dyn FnMut(Vec<ExportedRun>) -> Result<(), StoreError>,
    ) -> Result<Vec<ExportedState>, StoreError> {
        let e = |source| StoreError::Sqlite {
            doing: "reading the store out",
            source,
        };
        let batch = batch.max(1);
        let mut r = lock(&self.reader);
        let tx = r.conn.transaction().map_err(e)?;
        {
            let mut runs = tx
                .prepare(&format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY id"))
                .map_err(e)?;
            // No index leads with the run: SQLite sorts once (spilling to
            // temporary files), which beats a scan per run.
            let mut observations = tx
                .prepare(
                    "SELECT o.run, k.source, k.unit, k.indicator, k.entity, o.day, o.value \
                     FROM observations o JOIN keys k ON k.id = o.key ORDER BY o.run",
                )
                .map_err(e)?;
            let mut run_rows = runs.query([]).map_err(e)?;
            let mut obs_rows = observations.query([]).map_err(e)?;
            let mut pending: Option<(i64, Observation)> = None;
            let mut next_observation = |pending: &mut Option<(i64, Observation)>| {
                *pending = match obs_rows.next().map_err(e)? {
                    None => None,
                    Some(row) => Some((
                        row.get(0).map_err(e)?,
                        Observation {
                            source: row.get(1).map_err(e)?,
                            unit: row.get(2).map_err(e)?,
                            indicator: row.get(3).map_err(e)?,
                            entity: row.get(4).map_err(e)?,
                            day: num_day(row.get(5).map_err(e)?)?,
                            value: row.get(6).map_err(e)?,
                        },
                    )),
                };
                Ok::<(), StoreError>(())
            };
            next_observation(&mut pending)?;
            let mut out = Vec::with_capacity(batch);
            while let Some(row) = run_rows.next().map_err(e)? {
                let run = stored_run(run_row(row).map_err(e)?)?;
                let mut observations = Vec::new();
                while let Some((id, _)) = &pending {
                    if *id > run.id {
                        break;
                    }
                    if *id < run.id {
                        return Err(StoreError::Corrupt {
                            what: "observation",
                            detail: format!("an observation names run {id}, which does not exist"),
                        });
                    }
                    let (_, o) = pending.take().expect("matched Some above");
                    observations.push(o);
                    next_observation(&mut pending)?;
                }
                out.push(ExportedRun { run, observations });
                if out.len() == batch {
                    visit_runs(std::mem::take(&mut out))?;
                }
            }
            if let Some((id, _)) = pending {
                return Err(StoreError::Corrupt {
                    what: "observation",
                    detail: format!("an observation names run {id}, which does not exist"),
                });
            }
            if !out.is_empty() {
                visit_runs(out)?;
            }
        }
        let states = {
            let mut stmt = tx
                .prepare("SELECT source, state, updated_at FROM source_state ORDER BY source")
                .map_err(e)?;
            let rows = stmt
                .query_map(params![], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })
                .map_err(e)?;
            let mut states = Vec::new();
            for row in rows {
                let (source, state, updated) = row.map_err(e)?;
                let state = serde_json::from_str(&state).map_err(|err| StoreError::Corrupt {
                    what: "resume state",
                    detail: format!("source \"{source}\": {err}"),
                })?;
                states.push(ExportedState {
                    source,
                    state,
                    updated_at: from_millis(updated)?,
                });
            }
            states
        };
        tx.commit().map_err(e)?;
        Ok(states)
    }
}
