//! The per-source state gauges of a replica, from the shared store.
//!
//! Several replicas on one database share the sources: the tick of a source
//! runs on whichever replica claimed it. A replica's own outcomes would make
//! `tally_source_up` and `tally_source_last_success_timestamp_seconds` say
//! what *this* replica last saw, different on each. Read from the store's
//! latest run of each source instead, they are the same on every replica, so
//! a dashboard can take any one of them (`max without (instance)`). The
//! counters stay per replica: each counts the runs it did, and expressions sum
//! them over instances.

use tally_store::{LatestRun, RunResult, Store, StoreError};

use super::{Metrics, lock};

/// Sets the state gauges of `sources` from the store's latest runs
/// ([`Metrics::set_source_states`]): a replica's refresh of `/metrics`
/// whenever the store was written, by itself or another replica.
pub fn refresh_source_states(
    metrics: &Metrics,
    sources: &[&str],
    store: &dyn Store,
) -> Result<(), StoreError> {
    metrics.set_source_states(&store.latest_runs(sources)?);
    Ok(())
}

impl Metrics {
    /// `tally_source_up` from each source's latest stored run, whichever
    /// replica ran it, and `tally_source_last_success_timestamp_seconds` from
    /// its last stored success. A store answer older than a run this process
    /// has already counted (read while that run committed) does not take its
    /// state back; sources not registered here are left out.
    pub fn set_source_states(&self, latest: &[LatestRun]) {
        let mut sources = lock(&self.shared.sources);
        let mut changed = false;
        for run in latest {
            let Some(entry) = sources.get_mut(&run.source) else {
                continue;
            };
            let s = &mut entry.stats;
            let before = (s.up, s.last_success);
            let finished = run.finished_at.timestamp_millis();
            if s.latest_run_ms.is_none_or(|seen| finished >= seen) {
                s.up = Some(run.result == RunResult::Success);
                s.latest_run_ms = Some(finished);
            }
            if let Some(at) = run.last_success {
                let at = at.timestamp() as f64;
                if s.last_success.is_none_or(|seen| at > seen) {
                    s.last_success = Some(at);
                }
            }
            if (s.up, s.last_success) != before {
                entry.version += 1;
                changed = true;
            }
        }
        drop(sources);
        if changed {
            self.shared.touch();
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn latest(result: RunResult, finished: &str, success: Option<&str>) -> LatestRun {
        LatestRun {
            source: "s".into(),
            result,
            finished_at: at(finished),
            last_success: success.map(at),
        }
    }

    fn lines(metrics: &Metrics) -> Vec<String> {
        metrics
            .encode()
            .lines()
            .filter(|l| {
                l.starts_with("tally_source_up{")
                    || l.starts_with("tally_source_last_success_timestamp_seconds{")
            })
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_stores_latest_run_sets_the_state_of_a_source_another_replica_ran() {
        let metrics = Metrics::new();
        metrics.register_source("s", "exec");
        metrics.register_source("other", "exec");
        assert!(lines(&metrics).is_empty(), "no run yet, no state");

        // Another replica's failed run, after a success at 01:00.
        metrics.set_source_states(&[latest(
            RunResult::Error,
            "2026-12-01T02:00:00Z",
            Some("2026-12-01T01:00:00Z"),
        )]);
        assert_eq!(
            lines(&metrics),
            [
                "tally_source_up{plugin=\"exec\",source=\"s\"} 0",
                "tally_source_last_success_timestamp_seconds{source=\"s\"} 1796086800",
            ]
        );

        // This replica's own later success counts at once ...
        let own = at("2026-12-01T03:00:00Z").timestamp() as f64;
        metrics.run_finished("s", "exec", RunResult::Success, None, 0.1, 1, own);
        // ... and a store answer read before it committed does not undo it.
        metrics.set_source_states(&[latest(
            RunResult::Error,
            "2026-12-01T02:00:00Z",
            Some("2026-12-01T01:00:00Z"),
        )]);
        assert_eq!(
            lines(&metrics),
            [
                "tally_source_up{plugin=\"exec\",source=\"s\"} 1",
                "tally_source_last_success_timestamp_seconds{source=\"s\"} 1796094000",
            ]
        );

        // A newer run of another replica does, and unknown sources are ignored.
        metrics.set_source_states(&[
            latest(
                RunResult::Timeout,
                "2026-12-01T04:00:00Z",
                Some("2026-12-01T03:00:00Z"),
            ),
            LatestRun {
                source: "unknown".into(),
                ..latest(RunResult::Success, "2026-12-01T04:00:00Z", None)
            },
        ]);
        assert_eq!(
            lines(&metrics),
            [
                "tally_source_up{plugin=\"exec\",source=\"s\"} 0",
                "tally_source_last_success_timestamp_seconds{source=\"s\"} 1796094000",
            ]
        );
    }
}
