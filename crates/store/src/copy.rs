//! Moving up: a SQLite store copied into an empty PostgreSQL one
//! (`tallyd store copy`), run by run with their ids, observations and
//! resume states.
//!
//! Invariant: the target is refused unless it holds no run, so a copy never
//! mixes two histories; every batch is one transaction.

use chrono::{DateTime, Utc};

use crate::{PostgresStore, SqliteStore, StoreError, StoredRun};
use tally_domain::Observation;

/// Runs read and written per transaction.
const BATCH: usize = 500;

/// A run as the store keeps it, with the observations it last wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedRun {
    pub run: StoredRun,
    pub observations: Vec<Observation>,
}

/// A source's resume state.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedState {
    pub source: String,
    pub state: serde_json::Value,
    pub updated_at: DateTime<Utc>,
}

/// What a copy moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    pub runs: u64,
    pub observations: u64,
    pub states: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(
        "{database} already holds {runs} runs: copy into an empty database (a copy never merges two stores)"
    )]
    NotEmpty { database: String, runs: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Copies everything `from` holds into `to`, which must hold no run;
/// `progress` hears the running totals after each batch.
pub fn sqlite_to_postgres(
    from: &SqliteStore,
    to: &PostgresStore,
    progress: &mut dyn FnMut(&Copied),
) -> Result<Copied, CopyError> {
    let runs = to.run_count()?;
    if runs > 0 {
        return Err(CopyError::NotEmpty {
            database: to.database().to_owned(),
            runs,
        });
    }
    let mut copied = Copied::default();
    let states = from.export(BATCH, &mut |batch| {
        to.import_runs(&batch)?;
        copied.runs += batch.len() as u64;
        copied.observations += batch
            .iter()
            .map(|r| r.observations.len() as u64)
            .sum::<u64>();
        progress(&copied);
        Ok(())
    })?;
    to.import_states(&states)?;
    copied.states = states.len() as u64;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract_tests::{d, obs, run};
    use crate::{RunResult, Store};
    use tally_domain::Kind;

    fn other(unit: &str, entity: &str, day: &str, value: f64) -> Observation {
        Observation {
            source: "other".into(),
            ..obs(unit, "reads", entity, day, value)
        }
    }

    /// A store with replaced rows, a failed run, gaps, warnings, entities
    /// and resume states: what a year of collection leaves behind.
    fn history(store: &dyn Store) {
        let ok = RunResult::Success;
        let first = run(
            "src",
            ok,
            "2026-01-01",
            "2026-01-31",
            "2026-02-01T02:00:00Z",
        );
        store
            .record_run(
                &first,
                &[
                    obs("county", "posts", "", "2026-01-02", 3.0),
                    obs("town", "posts", "", "2026-01-02", 5.0),
                    obs("town", "posts", "", "2026-01-03", 7.0),
                ],
                Some(&serde_json::json!({"cursor": "a"})),
            )
            .unwrap();
        let failed = run(
            "src",
            RunResult::Error,
            "2026-02-01",
            "2026-02-28",
            "2026-03-01T02:00:00Z",
        );
        store.record_run(&failed, &[], None).unwrap();
        // Collected again: the town's 2 January is replaced, its run is this one.
        let mut again = run(
            "src",
            ok,
            "2026-01-02",
            "2026-03-31",
            "2026-04-01T02:00:00Z",
        );
        again.warnings = vec!["row 7: unknown unit \"县外\"; row skipped".into()];
        again.uncovered = vec![(d("2026-03-10"), d("2026-03-12"))];
        store
            .record_run(
                &again,
                &[
                    obs("town", "posts", "", "2026-01-02", 6.0),
                    obs("town", "posts", "", "2026-03-01", 2.0),
                ],
                Some(&serde_json::json!({"cursor": "b", "seen": [1, 2]})),
            )
            .unwrap();
        let reads = run(
            "other",
            ok,
            "2026-01-01",
            "2026-06-30",
            "2026-07-01T02:00:00Z",
        );
        store
            .record_run(
                &reads,
                &[
                    other("county", "张三", "2026-05-04", 1200.0),
                    other("county", "李四", "2026-05-04", 800.5),
                    other("town", "", "2026-06-30", 10.0),
                ],
                None,
            )
            .unwrap();
    }

    fn same(a: &dyn Store, b: &dyn Store) {
        let (start, end) = (d("2025-01-01"), d("2027-12-31"));
        let units = ["county", "town"];
        for source in ["src", "other"] {
            assert_eq!(
                a.recent_runs(source, 100).unwrap(),
                b.recent_runs(source, 100).unwrap()
            );
            assert_eq!(
                a.resume_point(source).unwrap(),
                b.resume_point(source).unwrap()
            );
            assert_eq!(
                a.source_status(source).unwrap(),
                b.source_status(source).unwrap()
            );
            assert_eq!(
                a.coverage(source, start, end).unwrap(),
                b.coverage(source, start, end).unwrap()
            );
        }
        for indicator in ["posts", "reads"] {
            assert_eq!(
                a.observations(&units, indicator, start, end).unwrap(),
                b.observations(&units, indicator, start, end).unwrap()
            );
        }
        let kinds = [
            ("posts".to_owned(), Kind::Count),
            ("reads".to_owned(), Kind::Level),
        ];
        for (from, to) in [
            ("2026-01-01", "2026-03-31"),
            ("2026-04-01", "2026-06-30"),
            ("2026-01-01", "2026-12-31"),
        ] {
            let (from, to) = (d(from), d(to));
            let mut x = a.own_values(from, to, &kinds).unwrap();
            let mut y = b.own_values(from, to, &kinds).unwrap();
            x.sort_by(|p, q| format!("{p:?}").cmp(&format!("{q:?}")));
            y.sort_by(|p, q| format!("{p:?}").cmp(&format!("{q:?}")));
            assert_eq!(x, y);
        }
        assert_eq!(a.first_day().unwrap(), b.first_day().unwrap());
    }

    #[test]
    fn a_copy_answers_every_question_as_the_original_and_keeps_run_ids() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(dir.path()).unwrap();
        history(&sqlite);
        let postgres = PostgresStore::open(&crate::pg_test_cluster::database()).unwrap();
        let mut heard = Vec::new();
        let copied = sqlite_to_postgres(&sqlite, &postgres, &mut |c| heard.push(*c)).unwrap();
        assert_eq!(
            copied,
            Copied {
                runs: 4,
                // What the store kept: the town's first 2 January was replaced.
                observations: 7,
                states: 1,
            }
        );
        assert_eq!(heard.last().map(|c| c.runs), Some(4));
        same(&sqlite, &postgres);

        // The next run gets a new id, past the copied ones.
        let next = run(
            "src",
            RunResult::Success,
            "2026-04-01",
            "2026-04-30",
            "2026-05-01T02:00:00Z",
        );
        let id = postgres.record_run(&next, &[], None).unwrap();
        assert_eq!(id, 5);

        // A second copy would mix two histories.
        let err = sqlite_to_postgres(&sqlite, &postgres, &mut |_| {}).unwrap_err();
        assert!(matches!(err, CopyError::NotEmpty { runs: 5, .. }), "{err}");
        assert!(
            err.to_string().contains("copy into an empty database"),
            "{err}"
        );
    }

    #[test]
    fn batches_of_one_copy_the_same_as_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(dir.path()).unwrap();
        history(&sqlite);
        let postgres = PostgresStore::open(&crate::pg_test_cluster::database()).unwrap();
        let mut batches = 0;
        let states = sqlite
            .export(1, &mut |batch| {
                assert_eq!(batch.len(), 1);
                batches += 1;
                postgres.import_runs(&batch)
            })
            .unwrap();
        postgres.import_states(&states).unwrap();
        assert_eq!(batches, 4);
        same(&sqlite, &postgres);
    }
}
