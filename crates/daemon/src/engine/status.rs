//! What is known of a source now: the one reading both `/api/v1/sources`
//! and the 数据来源 page show, each in its own form.

use super::*;

/// A source's state as of `now`: its stored status, and what only this
/// process knows (a run the store could not record, the breaker, whether it
/// runs).
#[derive(Debug, Clone)]
pub struct SourceState {
    /// The store's counts, last run and last success.
    pub status: tally_store::SourceStatus,
    pub unrecorded: Unrecorded,
    /// The latest run: one the store could not record (no id) is newer than
    /// anything it holds; else the last stored one, with the observations it
    /// wrote.
    pub last_run: Option<(Option<i64>, RunRecord, u64)>,
    /// The latest run that failed, among the latest 50 stored (or the
    /// unrecorded one).
    pub last_error: Option<RunRecord>,
    pub breaker: Breaker,
    pub running: bool,
    /// When the scheduler runs it next (none if its schedule never fires
    /// again).
    pub next_run: Option<DateTime<Utc>>,
}

impl SourceState {
    /// Whether the source is backing off after failed runs at `now`.
    pub fn backing_off(&self, now: DateTime<Utc>) -> bool {
        self.breaker.backoff_until.is_some_and(|t| t > now)
    }
}

/// How many stored runs are searched for the last failed one.
const LAST_ERROR_REACH: usize = 50;

impl Engine {
    /// The state of each of `sources` at `now`, read from the store together
    /// (one statement on PostgreSQL for the whole sources page). Reads the
    /// store: call it off the async workers.
    pub fn source_states(
        &self,
        sources: &[Arc<SourceRuntime>],
        now: DateTime<Utc>,
    ) -> Result<Vec<SourceState>, StoreError> {
        let ids: Vec<&str> = sources.iter().map(|s| s.id()).collect();
        let stored = self.store.source_statuses(&ids, LAST_ERROR_REACH)?;
        Ok(sources
            .iter()
            .zip(stored)
            .map(|(source, (status, stored_error))| {
                let unrecorded = source.unrecorded();
                let (last_run, last_error) = match &unrecorded.last {
                    Some(run) => (Some((None, run.clone(), 0)), Some(run.clone())),
                    None => (
                        status
                            .last_run
                            .as_ref()
                            .map(|r| (Some(r.id), r.run.clone(), r.observations_written)),
                        stored_error.map(|r| r.run),
                    ),
                };
                SourceState {
                    status,
                    unrecorded,
                    last_run,
                    last_error,
                    breaker: source.breaker(),
                    running: source.is_running(),
                    next_run: self.next_run(source, now),
                }
            })
            .collect())
    }
}
