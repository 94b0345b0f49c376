//! The store writer: runs that finish together share one commit.

use super::*;

/// A finished run waiting for the store writer, and where its answer goes.
pub(super) struct PendingWrite {
    pub(super) run: RunToRecord,
    pub(super) reply: oneshot::Sender<Result<i64, StoreError>>,
}

/// The runs one commit takes from the writer's queue stop at this many
/// observations (the first run always goes), so that a burst of backfills
/// does not become one transaction that holds every answer back.
pub(super) const GROUP_COMMIT_MAX_OBSERVATIONS: usize = 100_000;

/// Starts the store writer of an engine on a thread of its own, which ends
/// when the returned queue is dropped with the engine. `None` if the thread
/// cannot be started: runs are then recorded one by one.
///
/// A thread rather than a task that hands each batch to the blocking pool:
/// the writer blocks on its queue, commits and answers without waking an
/// async worker twice per commit (issue 16: thread hand-offs are a large
/// part of a fetch's CPU).
pub(super) fn start_writer(
    store: Arc<dyn Store>,
    max_observations: usize,
) -> Option<std::sync::mpsc::Sender<PendingWrite>> {
    let (queue, pending) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("tally-store-writer".into())
        .spawn(move || write_runs(store, pending, max_observations))
        .map_err(|e| tracing::error!(error = %e, "cannot start the store writer thread"))
        .ok()?;
    Some(queue)
}

/// The store writer (blocking): takes the first queued run, then whatever
/// else is already queued without waiting for more, records them in one
/// transaction ([`Store::record_runs`]), and answers each run after the
/// commit. With a thousand sources polled every few seconds, runs that
/// finish while a commit is going share the next one, so they cost one
/// fsync instead of one each; a lone run is written at once. Returns when
/// every sender is gone.
pub(super) fn write_runs(
    store: Arc<dyn Store>,
    queue: std::sync::mpsc::Receiver<PendingWrite>,
    max_observations: usize,
) {
    while let Ok(first) = queue.recv() {
        let mut observations = first.run.observations.len();
        let mut batch = vec![first];
        while observations < max_observations {
            let Ok(next) = queue.try_recv() else { break };
            observations += next.run.observations.len();
            batch.push(next);
        }
        let (runs, replies): (Vec<RunToRecord>, Vec<_>) =
            batch.into_iter().map(|w| (w.run, w.reply)).unzip();
        let recorded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store.record_runs(&runs)
        }));
        match recorded {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // A run whose caller went away is stored all the same.
                    let _ = reply.send(answer);
                }
            }
            // The replies drop with the batch: each run reports an internal
            // error, and the writer goes on with the next batch.
            Err(_) => tracing::error!("the store writer failed to record runs (it panicked)"),
        }
    }
}
