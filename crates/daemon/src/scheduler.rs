//! The scheduler: one closed event loop that fires sources on their cron
//! schedules, runs sources on request, and shuts down gracefully.
//!
//! Every run is spawned from here and nowhere else, so the order of events
//! and what happens at shutdown can be read in one function.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::engine::{Engine, RunError, RunReport, Trigger};
use crate::reports;
use tally_config::SourceConfig;
use tally_domain::ErrorChain;
use tally_domain::period::Period;
use tally_plugin::Window;

/// Requests from the HTTP API or other tasks.
pub enum Command {
    RunNow {
        source: String,
        reply: oneshot::Sender<Result<RunReport, RunError>>,
    },
    /// Collects one given window again (a backfill), as `tallyd collect
    /// --from --to` does, but inside the daemon.
    Collect {
        source: String,
        window: Window,
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

    /// Collects `window` of a source again (trigger `backfill`) and waits
    /// for the run to finish.
    pub async fn collect(&self, source: &str, window: Window) -> Result<RunReport, RunError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Collect {
                source: source.to_owned(),
                window,
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
    // So does one whose schedule fired while the daemon was down (the
    // missed-run detector): once, however many times it fired.
    let tz = engine.config.daemon.timezone;
    for source in engine.sources() {
        let point = engine.store.resume_point(source.id()).ok();
        let never = point.as_ref().is_none_or(|s| s.last_success.is_none());
        let missed = point
            .as_ref()
            .and_then(|s| s.last_run_started)
            .and_then(|started| missed_fire(&source.config, tz, started, now));
        if let Some(at) = missed {
            missed_run(
                &engine,
                source.id(),
                at,
                "the schedule fired while the daemon was down: catching up once",
            );
        }
        if never || missed.is_some() {
            spawn_run(
                &mut running,
                &engine,
                source.id().to_owned(),
                Trigger::Start,
                None,
                None,
            );
        }
    }

    // Reports: `due` decides from the last check and the clock, so a tick
    // that comes late (a suspended machine) still writes the report once.
    let report_config = &engine.config.reports;
    let mut report_checked = now;
    let mut next_report = report_config
        .enabled
        .then(|| reports::next_fire(&report_config.schedule, tz, now))
        .flatten();
    // The start report, and the reports of quarters the schedule fired for
    // while the daemon was down, wait for the collections run at start, so
    // that they hold what those brought in.
    let mut start_report = report_config.write_on_start;
    let mut catch_up = report_config.enabled;

    tokio::pin!(shutdown);
    loop {
        if (start_report || catch_up) && running.is_empty() {
            let period = reports::report_period(engine.clock.now(), tz);
            if catch_up {
                // `write_on_start` writes its quarter in any case.
                let skip = start_report.then(|| period.clone());
                spawn_catch_up(&mut running, &engine, skip);
            }
            if start_report {
                spawn_report(&mut running, &engine, period);
            }
            start_report = false;
            catch_up = false;
        }
        let now = engine.clock.now();
        let wait = next
            .iter()
            .flatten()
            .chain(next_report.iter())
            .min()
            .map(|t| (*t - now).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_secs(3600))
            // Sleeping follows the monotonic clock: wake at least every
            // minute to notice a wall-clock jump or a resumed suspend.
            .min(MAX_SLEEP);
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
                    let Some(due) = next[i].filter(|t| *t <= now) else {
                        continue;
                    };
                    if engine.backing_off(source, now) {
                        engine.metrics.backoff_skipped(source.id());
                        tracing::info!(
                            source = %source.id(),
                            failures = source.breaker().consecutive_failures,
                            "scheduled run skipped: the source is backing off after failed runs"
                        );
                    } else if source.is_running() {
                        engine.metrics.run_skipped(source.id());
                        tracing::warn!(
                            source = %source.id(),
                            "scheduled run skipped: the previous run is still going"
                        );
                    } else {
                        if is_late(due, now, source.interval()) {
                            missed_run(
                                &engine,
                                source.id(),
                                due,
                                "the schedule fired long ago (clock jump or suspend): running once",
                            );
                        }
                        spawn_run(
                            &mut running,
                            &engine,
                            source.id().to_owned(),
                            Trigger::Schedule,
                            None,
                            None,
                        );
                    }
                    next[i] = engine.next_fire(source, now);
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
                spawn_run(
                    &mut running,
                    &engine,
                    source,
                    Trigger::Manual,
                    None,
                    Some(reply),
                );
            }
            Event::Command(Command::Collect {
                source,
                window,
                reply,
            }) => {
                spawn_run(
                    &mut running,
                    &engine,
                    source,
                    Trigger::Backfill,
                    Some(window),
                    Some(reply),
                );
            }
            Event::Finished => {}
            Event::Shutdown => break,
        }
    }

    engine.close();
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

/// The longest the loop sleeps without looking at the wall clock.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The first scheduled time of `source` after its last run started, if it
/// has passed by `now`: a run the daemon missed (it was down, or the clock
/// jumped).
pub fn missed_fire(
    source: &SourceConfig,
    tz: Tz,
    last_start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    source
        .next_runs(last_start, tz, 1)
        .into_iter()
        .next()
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| *t <= now)
}

/// True when a scheduled time is found due more than one schedule interval
/// (at least a minute, so a busy machine is not taken for a clock jump)
/// after it should have fired.
pub fn is_late(due: DateTime<Utc>, now: DateTime<Utc>, interval: Option<Duration>) -> bool {
    let allowed = interval.unwrap_or(MAX_SLEEP).max(MAX_SLEEP);
    (now - due).to_std().is_ok_and(|late| late > allowed)
}

/// Writes the report of `period` off the event loop; a failure is logged
/// and the next tick tries its own period again.
pub(crate) fn spawn_report(running: &mut JoinSet<()>, engine: &Arc<Engine>, period: Period) {
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
            Ok(Err(e)) => {
                tracing::error!(period = %label, error = %ErrorChain(&e), "report not written")
            }
            Err(e) => tracing::error!(period = %label, error = %e, "report not written"),
        }
    });
}

/// Writes the reports missed while the daemon was down
/// ([`reports::catch_up`]) off the event loop, logging each.
pub(crate) fn spawn_catch_up(
    running: &mut JoinSet<()>,
    engine: &Arc<Engine>,
    skip: Option<Period>,
) {
    let engine = engine.clone();
    running.spawn(async move {
        let writer = engine.clone();
        let written =
            tokio::task::spawn_blocking(move || reports::catch_up(&writer, skip.as_ref())).await;
        match written {
            Ok(Ok(periods)) => {
                let (mut written, mut failed) = (0, 0);
                for (period, outcome) in periods {
                    let label = period.label();
                    match outcome {
                        Ok(paths) => {
                            let files: Vec<String> =
                                paths.iter().map(|p| p.display().to_string()).collect();
                            tracing::info!(
                                period = %label,
                                files = %files.join(", "),
                                "missed report written (the schedule fired while the daemon was down)"
                            );
                            written += 1;
                        }
                        Err(e) => {
                            tracing::error!(period = %label, error = %ErrorChain(&e), "missed report not written");
                            failed += 1;
                        }
                    }
                }
                tracing::info!(written, failed, "reports caught up");
            }
            Ok(Err(e)) => tracing::error!(error = %ErrorChain(&e), "missed reports not caught up"),
            Err(e) => tracing::error!(error = %e, "missed reports not caught up"),
        }
    });
}

/// A run the schedule asked for and did not get: counted and logged in one place.
pub(crate) fn missed_run(engine: &Engine, source: &str, due: DateTime<Utc>, what: &'static str) {
    engine.metrics.run_missed(source);
    let tz = engine.config.daemon.timezone;
    tracing::warn!(source, due = %due.with_timezone(&tz).to_rfc3339(), "{what}");
}

pub(crate) fn spawn_run(
    running: &mut JoinSet<()>,
    engine: &Arc<Engine>,
    source: String,
    trigger: Trigger,
    window: Option<Window>,
    reply: Option<oneshot::Sender<Result<RunReport, RunError>>>,
) {
    let engine = engine.clone();
    running.spawn(async move {
        let result = engine.run(&source, trigger, window).await;
        match (&result, reply) {
            (_, Some(reply)) => {
                let _ = reply.send(result);
            }
            (Err(RunError::ShuttingDown(_)), None) => {
                tracing::debug!(source = %source, "run dropped at shutdown before it started")
            }
            (Err(RunError::AlreadyRunning(_)), None) => {
                engine.metrics.run_skipped(&source);
            }
            (Err(e), None) => {
                tracing::error!(source = %source, error = %ErrorChain(e), "run could not start")
            }
            (Ok(_), None) => {}
        }
    });
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chrono::TimeZone;

    use super::*;
    use tally_config::Config;

    fn daily_at_three() -> SourceConfig {
        let text = "[[units]]\nid = \"county\"\nname = \"某县\"\n\
                    [[sources]]\nid = \"s\"\nplugin = \"p\"\nunit = \"county\"\nschedule = \"0 3 * * *\"\n";
        Config::parse(text, Path::new("t.toml"), &|_| None)
            .unwrap()
            .sources
            .remove(0)
    }

    fn utc(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap()
    }

    #[test]
    fn a_run_is_missed_when_the_schedule_fired_since_the_last_one_started() {
        let source = daily_at_three();
        let tz = chrono_tz::Asia::Shanghai;
        // 03:00 in Shanghai is 19:00 UTC the day before.
        let last = utc(26, 4, 0);
        assert_eq!(missed_fire(&source, tz, last, utc(26, 18, 59)), None);
        assert_eq!(
            missed_fire(&source, tz, last, utc(26, 19, 0)),
            Some(utc(26, 19, 0))
        );
        // Down for three days: still the first missed time, caught up once.
        assert_eq!(
            missed_fire(&source, tz, last, utc(29, 12, 0)),
            Some(utc(26, 19, 0))
        );
        // The last run was the scheduled one itself: nothing missed.
        assert_eq!(
            missed_fire(&source, tz, utc(26, 19, 0), utc(27, 18, 0)),
            None
        );
    }

    #[test]
    fn a_fire_found_more_than_an_interval_late_is_a_clock_jump() {
        let day = Some(Duration::from_secs(86_400));
        let due = utc(26, 19, 0);
        assert!(!is_late(due, due, day));
        assert!(!is_late(due, utc(27, 18, 59), day));
        assert!(is_late(due, utc(27, 19, 1), day));
        // Per-second schedules: a busy minute is not a jump.
        let second = Some(Duration::from_secs(1));
        assert!(!is_late(due, due + chrono::Duration::seconds(30), second));
        assert!(is_late(due, due + chrono::Duration::seconds(61), second));
    }
}
