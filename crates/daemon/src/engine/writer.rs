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

/// The store writer of an engine: takes the first queued run, then whatever
/// else is already queued without waiting for more, records them in one
/// transaction on a blocking thread ([`Store::record_runs`]), and answers
/// each run after the commit. With a thousand sources polled every few
/// seconds, runs that finish while a commit is going share the next one,
/// so they cost one fsync instead of one each; a lone run is written at once.
pub(super) async fn write_runs(
    store: Arc<dyn Store>,
    mut queue: mpsc::UnboundedReceiver<PendingWrite>,
    max_observations: usize,
) {
    while let Some(first) = queue.recv().await {
        let mut observations = first.run.observations.len();
        let mut batch = vec![first];
        while observations < max_observations {
            let Ok(next) = queue.try_recv() else { break };
            observations += next.run.observations.len();
            batch.push(next);
        }
        let (runs, replies): (Vec<RunToRecord>, Vec<_>) =
            batch.into_iter().map(|w| (w.run, w.reply)).unzip();
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.record_runs(&runs)).await {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // A run whose caller went away is stored all the same.
                    let _ = reply.send(answer);
                }
            }
            // The replies drop with the batch: each run reports an internal error.
            Err(e) => {
                tracing::error!(error = %ErrorChain(&e), "the store writer failed to record runs")
            }
        }
    }
}
