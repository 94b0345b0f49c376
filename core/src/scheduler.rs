//! The scheduler: one closed event loop that fires sources on their cron
//! schedules, runs sources on request, and shuts down gracefully.
//!
//! Every run is spawned from here and nowhere else, so the order of events
//! and what happens at shutdown can be read in one function.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::domain::period::Period;
use crate::engine::{Engine, RunError, RunReport, Trigger};
use crate::reports;

/// Requests from the HTTP API or other tasks.
pub enum Command {
    RunNow {
        source: String,
        reply: oneshot::Sender<Result<RunReport, RunError>>,
    },
}

/// A handle to ask the scheduler for things.
#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::Sender<Command>,
}

impl SchedulerHandle {
    /// Runs a source now and waits for the run to finish.
    pub async fn run_now(&self, source: &str) -> Result<RunReport, RunError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::RunNow {
                source: source.to_owned(),
                reply,
            })
            .await
            .map_err(|_| RunError::Internal("the scheduler has stopped".to_owned()))?;
        rx.await
            .map_err(|_| RunError::Internal("the scheduler dropped the run".to_owned()))?
    }
}

enum Event {
    Tick,
    Command(Command),
    Finished,
    Shutdown,
}

pub fn channel() -> (SchedulerHandle, mpsc::Receiver<Command>) {
    let (tx, rx) = mpsc::channel(64);
    (SchedulerHandle { tx }, rx)
}

/// Runs until `shutdown` resolves, then lets running collections finish or
/// time out (each has its own timeout) before returning.
pub async fn run(
    engine: Arc<Engine>,
    mut commands: mpsc::Receiver<Command>,
    shutdown: impl Future<Output = ()>,
) {
    let mut running: JoinSet<()> = JoinSet::new();
    let now = engine.clock.now();
    let mut next: Vec<Option<DateTime<Utc>>> = engine
        .sources()
        .iter()
        .map(|s| engine.next_fire(s, now))
        .collect();

    // A source that never succeeded (new, or failing since its start) runs at
    // once rather than waiting for its first scheduled time, maybe a day away.
    for source in engine.sources() {
        let never = engine
            .store
            .source_status(source.id())
            .map(|s| s.last_success.is_none())
            .unwrap_or(true);
        if never {
            spawn_run(
                &mut running,
                &engine,
                source.id().to_owned(),
                Trigger::Start,
                None,
            );
        }
    }

    // Reports: `due` decides from the last check and the clock, so a tick
    // that comes late (a suspended machine) still writes the report once.
    let report_config = &engine.config.reports;
    let tz = engine.config.daemon.timezone;
    let mut report_checked = now;
    let mut next_report = report_config
        .enabled
        .then(|| reports::next_fire(&report_config.schedule, tz, now))
        .flatten();
    // The start report waits for the collections run at start, so that it
    // holds what they brought in.
    let mut start_report = report_config.write_on_start;

    tokio::pin!(shutdown);
    loop {
        if start_report && running.is_empty() {
            start_report = false;
            let period = reports::report_period(engine.clock.now(), tz);
            spawn_report(&mut running, &engine, period);
        }
        let now = engine.clock.now();
        let wait = next
            .iter()
            .flatten()
            .chain(next_report.iter())
            .min()
            .map(|t| (*t - now).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_secs(3600));
        let event = tokio::select! {
            _ = &mut shutdown => Event::Shutdown,
            Some(cmd) = commands.recv() => Event::Command(cmd),
            Some(_) = running.join_next(), if !running.is_empty() => Event::Finished,
            _ = tokio::time::sleep(wait) => Event::Tick,
        };
        match event {
            Event::Tick => {
                let now = engine.clock.now();
                for (i, source) in engine.sources().iter().enumerate() {
                    if next[i].is_some_and(|t| t <= now) {
                        if source.is_running() {
                            engine
                                .metrics
                                .skipped_runs
                                .with_label_values(&[source.id()])
                                .inc();
                            tracing::warn!(
                                source = %source.id(),
                                "scheduled run skipped: the previous run is still going"
                            );
                        } else {
                            spawn_run(
                                &mut running,
                                &engine,
                                source.id().to_owned(),
                                Trigger::Schedule,
                                None,
                            );
                        }
                        next[i] = engine.next_fire(source, now);
                    }
                }
                if report_config.enabled {
                    if let Some(fired) =
                        reports::due(&report_config.schedule, tz, report_checked, now)
                    {
                        spawn_report(&mut running, &engine, reports::report_period(fired, tz));
                    }
                    report_checked = now;
                    next_report = reports::next_fire(&report_config.schedule, tz, now);
                }
            }
            Event::Command(Command::RunNow { source, reply }) => {
                spawn_run(&mut running, &engine, source, Trigger::Manual, Some(reply));
            }
            Event::Finished => {}
            Event::Shutdown => break,
        }
    }

    if !running.is_empty() {
        tracing::info!(
            runs = running.len(),
            "waiting for running collections to finish"
        );
        let longest = engine
            .sources()
            .iter()
            .map(|s| s.config.timeout)
            .max()
            .unwrap_or_default();
        let drained = tokio::time::timeout(longest + Duration::from_secs(5), async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("collections still running at shutdown were abandoned");
        }
    }
}

/// Writes the report of `period` off the event loop; a failure is logged
/// and the next tick tries its own period again.
fn spawn_report(running: &mut JoinSet<()>, engine: &Arc<Engine>, period: Period) {
    let engine = engine.clone();
    running.spawn(async move {
        let label = period.label().to_owned();
        let writer = engine.clone();
        let written =
            tokio::task::spawn_blocking(move || reports::write_period(&writer, period)).await;
        match written {
            Ok(Ok(paths)) => {
                let files: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                tracing::info!(period = %label, files = %files.join(", "), "report written");
            }
            Ok(Err(e)) => tracing::error!(period = %label, error = %e, "report not written"),
            Err(e) => tracing::error!(period = %label, error = %e, "report not written"),
        }
    });
}

fn spawn_run(
    running: &mut JoinSet<()>,
    engine: &Arc<Engine>,
    source: String,
    trigger: Trigger,
    reply: Option<oneshot::Sender<Result<RunReport, RunError>>>,
) {
    let engine = engine.clone();
    running.spawn(async move {
        let result = engine.run(&source, trigger, None).await;
        match (&result, reply) {
            (_, Some(reply)) => {
                let _ = reply.send(result);
            }
            (Err(RunError::AlreadyRunning(_)), None) => {
                engine
                    .metrics
                    .skipped_runs
                    .with_label_values(&[&source])
                    .inc();
            }
            (Err(e), None) => {
                tracing::error!(source = %source, error = %e, "run could not be recorded")
            }
            (Ok(_), None) => {}
        }
    });
}
