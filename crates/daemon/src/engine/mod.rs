//! Runs sources: builds each run's window and request, calls the plugin off
//! the async workers with a timeout, checks what it answered, and commits the
//! observations, the run record and the resume state in one transaction.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tally_plugin::{CollectRequest, ErrorKind, IndicatorRef, PROTOCOL_VERSION, UnitRef, Window};
use tokio::sync::{OwnedMutexGuard, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::metrics::{Metrics, error_kind_label};
use crate::summary::{self, Summary, SummaryError, SummaryRequest};
use tally_config::Isolation;
use tally_config::{Config, ConfigError, Location, Problem, SourceConfig};
use tally_domain::clock::Clock;
use tally_domain::period::local_day;
use tally_domain::units::UnitTree;
use tally_domain::{ErrorChain, Kind, MAX_VALUE, Observation, show_value};
use tally_host::{
    CallError, HostServices, HttpGate, PluginRegistry, ProcessInstance, SourceInstance,
    SourceRunner,
};
use tally_store::{ResumePoint, RunRecord, RunResult, RunToRecord, Store, StoreError};

mod create;
mod fingerprint;
mod replica;
mod retry;
mod source_config;
mod stage;
mod status;
mod window;
mod writer;

use create::plugin_catalogue;
pub use create::{create_sources, create_sources_reusing};
pub use fingerprint::Fingerprints;
pub use replica::{Replica, owner_id};
pub use retry::{Breaker, MAX_BACKOFF, backoff_delay, is_transient, jitter_seed, retry_delay};
pub use source_config::SourceConfigRef;
pub use status::SourceState;
pub use window::{
    BACKFILL_CHUNK_DAYS, RESUME_REACH_DAYS, backfill_windows, day_ranges, resume_window,
};
use writer::{GROUP_COMMIT_MAX_OBSERVATIONS, PendingWrite, write_runs};

/// One enabled source, ready to run.
pub struct SourceRuntime {
    pub config: SourceConfigRef,
    pub index: usize,
    pub instance: Arc<SourceRunner>,
    /// Held for the whole run, retries and their waits included: a source
    /// never runs twice at once.
    busy: Arc<tokio::sync::Mutex<()>>,
    /// Held while a plugin call is in flight, past a timeout until the call
    /// really returns: a retry (or the next run) waits for it.
    calling: Arc<tokio::sync::Mutex<()>>,
    /// Consecutive failures and the backoff they caused. In memory only: a
    /// restart starts every source with a closed breaker.
    breaker: std::sync::Mutex<Breaker>,
    /// Runs that ended but could not be stored. Like the breaker, in memory.
    unrecorded: std::sync::Mutex<Unrecorded>,
    /// The schedule's longest gap (see [`SourceConfig::longest_gap`]).
    interval: Option<Duration>,
    units: Vec<UnitRef>,
    allowed_units: HashSet<String>,
    /// What the plugin emits, in its own ids.
    emits: HashSet<String>,
    /// The indicator catalogue as the plugin sees it: an indicator the
    /// source maps is listed under the plugin's id (see [`plugin_catalogue`]).
    /// Shared by the sources that map nothing, whose catalogue is the
    /// configuration's (a copy each was 4.7 MB at 10,000 sources).
    catalogue: Arc<[IndicatorRef]>,
}

impl SourceRuntime {
    pub fn id(&self) -> &str {
        &self.config.id
    }

    pub fn plugin(&self) -> &str {
        &self.config.plugin
    }

    pub fn is_running(&self) -> bool {
        self.busy.try_lock().is_err() || self.calling.try_lock().is_err()
    }

    /// The breaker's state now.
    pub fn breaker(&self) -> Breaker {
        *self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The runs of this source that could not be stored, which the store
    /// therefore cannot tell about.
    pub fn unrecorded(&self) -> Unrecorded {
        self.unrecorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The longest gap between two scheduled runs, if the schedule has two
    /// runs in five weeks.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// The configured indicator ids this source stores: what its plugin
    /// emits, through the source's indicator mapping.
    pub fn emitted_ids(&self) -> Vec<String> {
        self.config.mapped_emits(&self.instance.created.emits)
    }
}

/// A source's runs that ended but could not be stored (a full disk, an
/// unwritable store): the store knows nothing of them, so the API and
/// `/readyz` read them from here. Each is a run with `result = error`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unrecorded {
    /// The latest run, while no later run has been stored.
    pub last: Option<RunRecord>,
    /// How many since the daemon started (or the configuration was reloaded).
    pub count: u64,
}

/// Why a run was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Schedule,
    Manual,
    Start,
    Backfill,
    /// A tick claimed by a replica that died mid-run, run again by another
    /// once its lease ran out.
    Rerun,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Start => "start",
            Trigger::Backfill => "backfill",
            Trigger::Rerun => "rerun",
        }
    }
}

/// What one run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub source: String,
    pub run_id: Option<i64>,
    pub result: &'static str,
    pub window: Window,
    pub observations: usize,
    /// The plugin's API calls through the daemon (`None`: not counted).
    pub http_requests: Option<u64>,
    /// The days of the window the run did not cover, as `YYYY-MM-DD` or
    /// `YYYY-MM-DD..YYYY-MM-DD` (see [`day_ranges`]).
    pub uncovered: Vec<String>,
    pub warnings: Vec<String>,
    pub error: Option<String>,
    /// The kind of a failed run ([`crate::metrics::error_kind_label`]).
    pub error_kind: Option<&'static str>,
    /// The plugin's retry-after: no attempt of the source starts before it.
    pub retry_after: Option<DateTime<Utc>>,
    pub duration_ms: u64,
}

/// What a plugin call gave, checked but not yet stored.
#[derive(Debug)]
pub struct Collected {
    pub result: RunResult,
    pub error: Option<String>,
    pub observations: Vec<Observation>,
    pub warnings: Vec<String>,
    pub state: Option<serde_json::Value>,
    /// What the plugin said went wrong, when it reported an error itself.
    pub error_kind: Option<ErrorKind>,
    /// When the plugin said to try again, if later than the run's end.
    pub retry_after: Option<DateTime<Utc>>,
    /// The days of the window the plugin said it did not cover (sorted,
    /// disjoint, inside the window; see [`Engine::accept_uncovered`]).
    pub uncovered: Vec<(NaiveDate, NaiveDate)>,
}

/// How a plugin call on the blocking pool ended: `None` when it outlived
/// the source's timeout.
type CallOutcome =
    Option<Result<Result<tally_plugin::CollectResponse, CallError>, tokio::task::JoinError>>;

/// Why a run did not happen at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("unknown source \"{0}\"")]
    UnknownSource(String),
    #[error("source \"{0}\" is already running")]
    AlreadyRunning(String),
    #[error(
        "source \"{0}\" was not run: its scheduler stopped (tallyd is shutting down or reloading)"
    )]
    ShuttingDown(String),
    #[error("store")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Everything a run needs, shared by the scheduler, the HTTP API and the CLI.
pub struct Engine {
    pub config: Arc<Config>,
    pub tree: Arc<UnitTree>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub plugins: Arc<PluginRegistry>,
    /// The per-host limits and counter of plugins' HTTP, which a reload hands
    /// on to the next engine ([`Engine::with_http_gate`]).
    pub http_gate: Arc<HttpGate>,
    sources: Vec<Arc<SourceRuntime>>,
    /// Each indicator's accepted values, `min..=max`, looked up for every
    /// observation a run returns: built once here, not once per run.
    value_ranges: HashMap<String, (f64, f64)>,
    limit: Arc<Semaphore>,
    /// The queue of the store writer ([`write_runs`]), started by the first run.
    writer: std::sync::OnceLock<mpsc::UnboundedSender<PendingWrite>>,
    /// Set by [`Engine::close`]: runs still waiting for a permit give up.
    closing: tokio::sync::watch::Sender<bool>,
    /// This daemon as one of several replicas sharing a PostgreSQL store
    /// ([`Engine::with_replica`]); `None`: it schedules on its own.
    pub replica: Option<Arc<Replica>>,
    /// The sources' configuration fingerprints, computed on first use.
    fingerprints: std::sync::OnceLock<Arc<Fingerprints>>,
}

impl Engine {
    pub fn new<R: Into<Arc<SourceRunner>>>(
        config: Arc<Config>,
        tree: Arc<UnitTree>,
        plugins: Arc<PluginRegistry>,
        created: Vec<(usize, R)>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Engine {
        // Sources share a handful of schedules, and walking a schedule's next
        // runs is the bulk of start-up with a thousand sources.
        let indicators: Vec<IndicatorRef> = config
            .indicators
            .iter()
            .map(|i| IndicatorRef {
                id: i.id.clone(),
                name: i.name.clone(),
                kind: match i.kind {
                    Kind::Count => tally_plugin::Kind::Count,
                    Kind::Level => tally_plugin::Kind::Level,
                    Kind::Distinct => tally_plugin::Kind::Distinct,
                },
                unit: i.unit.clone(),
            })
            .collect();
        let shared_catalogue: Arc<[IndicatorRef]> = indicators.as_slice().into();
        metrics.configure(&config.metrics);
        let now = clock.now();
        let mut gaps: HashMap<&str, Option<Duration>> = HashMap::new();
        let sources = created
            .into_iter()
            .map(|(index, instance)| {
                let config_source = SourceConfigRef::shared(config.clone(), index);
                let mut seen = HashSet::new();
                let mut units = Vec::new();
                for root in &config_source.units {
                    let Some(root) = tree.index(root) else {
                        continue;
                    };
                    for idx in tree.subtree(root, None) {
                        let unit = tree.unit(idx);
                        if seen.insert(unit.id.clone()) {
                            units.push(UnitRef {
                                id: unit.id.clone(),
                                name: unit.name.clone(),
                                aliases: unit.aliases.clone(),
                            });
                        }
                    }
                }
                metrics.register_source(&config_source.id, &config_source.plugin);
                let interval = *gaps
                    .entry(config.sources[index].schedule_text.as_str())
                    .or_insert_with(|| config_source.longest_gap(now, config.daemon.timezone));
                if let Some(gap) = interval {
                    metrics.set_schedule_interval(&config_source.id, gap.as_secs_f64());
                }
                // After a restart, staleness counts from the last success the
                // store remembers, not from the next one.
                if let Ok(Some(last)) = store
                    .resume_point(&config_source.id)
                    .map(|s| s.last_success)
                {
                    metrics
                        .set_last_success(&config_source.id, last.finished_at.timestamp() as f64);
                }
                let instance: Arc<SourceRunner> = instance.into();
                Arc::new(SourceRuntime {
                    emits: instance.created.emits.iter().cloned().collect(),
                    catalogue: if config_source.indicators.is_empty() {
                        shared_catalogue.clone()
                    } else {
                        plugin_catalogue(&config_source, &indicators).into()
                    },
                    config: config_source,
                    index,
                    instance,
                    busy: Arc::new(tokio::sync::Mutex::new(())),
                    calling: Arc::new(tokio::sync::Mutex::new(())),
                    breaker: std::sync::Mutex::new(Breaker::default()),
                    unrecorded: Default::default(),
                    interval,
                    allowed_units: seen,
                    units,
                })
            })
            .collect();
        for lib in plugins.plugins() {
            metrics.plugin_loaded(&lib.name, &lib.version, &lib.abi_major.to_string());
        }
        Engine {
            limit: Arc::new(Semaphore::new(config.daemon.max_concurrent_runs.max(1))),
            value_ranges: config
                .indicators
                .iter()
                .map(|i| (i.id.clone(), (i.min, i.max)))
                .collect(),
            config,
            tree,
            store,
            clock,
            metrics,
            plugins,
            sources,
            writer: std::sync::OnceLock::new(),
            closing: tokio::sync::watch::Sender::new(false),
            replica: None,
            fingerprints: std::sync::OnceLock::new(),
            http_gate: Arc::new(HttpGate::new(
                Config::DEFAULT_HTTP_PER_HOST_CONCURRENCY,
                None,
            )),
        }
    }

    /// The engine with `gate`, the one its sources' [`HostServices`] were
    /// created with, whose requests `/metrics` counts.
    pub fn with_http_gate(mut self, gate: Arc<HttpGate>) -> Engine {
        self.metrics.count_http(gate.clone());
        self.http_gate = gate;
        self
    }

    /// The engine as a replica: its scheduler claims ticks through
    /// `replica`'s database instead of firing them itself.
    pub fn with_replica(mut self, replica: Option<Arc<Replica>>) -> Engine {
        self.replica = replica;
        self
    }

    /// The configuration fingerprint of each source and of them all.
    pub fn fingerprints(&self) -> Arc<Fingerprints> {
        self.fingerprints
            .get_or_init(|| Arc::new(Fingerprints::of(self)))
            .clone()
    }

    /// Stops runs that have not started yet: those waiting for a
    /// `max_concurrent_runs` permit end with [`RunError::ShuttingDown`], so
    /// that a shutdown waits for the plugin calls under way, not for a queue
    /// of runs that would only start after the signal.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// After a reload: a source that kept its plugin instance also keeps its
    /// busy guard, so a run still going on the previous engine and one on
    /// this engine never overlap. Call before sharing the engine.
    pub fn adopt_busy(mut self, previous: &Engine) -> Engine {
        for source in &mut self.sources {
            let Some(old) = previous.source(source.id()) else {
                continue;
            };
            if !Arc::ptr_eq(&old.instance, &source.instance) {
                continue;
            }
            if let Some(source) = Arc::get_mut(source) {
                source.busy = old.busy.clone();
            }
        }
        self
    }

    pub fn sources(&self) -> &[Arc<SourceRuntime>] {
        &self.sources
    }

    pub fn source(&self, id: &str) -> Option<&Arc<SourceRuntime>> {
        self.sources.iter().find(|s| s.config.id == id)
    }

    /// Today in the configured time zone.
    pub fn today(&self) -> NaiveDate {
        local_day(self.clock.now(), self.config.daemon.timezone)
    }

    /// The window a scheduled run asks for ([`resume_window`]): from the last
    /// successful day minus the lookback (to pick up late corrections), or
    /// from an earlier day left uncovered, to today; a source that never
    /// succeeded starts at `backfill_from`, else today.
    pub fn next_window(&self, source: &SourceRuntime) -> Result<Window, StoreError> {
        let point = self.store.resume_point(&source.config.id)?;
        Ok(self.window_after(source, &point))
    }

    fn window_after(&self, source: &SourceRuntime, point: &ResumePoint) -> Window {
        resume_window(
            self.today(),
            source.config.lookback_days,
            source.config.backfill_from,
            point,
        )
    }

    /// `window` cut at today: days that have not begun have nothing to
    /// collect, and a run recorded as covering them would mark them covered
    /// before they happen. A window entirely after today becomes today.
    pub fn up_to_today(&self, window: Window) -> Window {
        let today = self.today();
        let to = window.to.min(today);
        Window::new(window.from.min(to), to)
    }

    /// Runs a source now (or reports that it is already running) and records
    /// the run. `window` overrides the computed one (backfills).
    ///
    /// A run is eight steps, each below: claim the source and wait for a
    /// `max_concurrent_runs` permit, read its window and resume state, call
    /// the plugin (with retries), describe the run, store it, feed the
    /// metrics and the breaker, log it, and publish the new values.
    pub async fn run(
        self: &Arc<Self>,
        source_id: &str,
        trigger: Trigger,
        window: Option<Window>,
    ) -> Result<RunReport, RunError> {
        let (source, _busy, call) = self.claim(source_id)?;
        let permit = self.wait_for_permit(source_id).await?;
        // Boxed: every source due at one tick has its run task waiting here
        // for a permit, and without the box each task would hold room for
        // the whole run's state (at 10,000 sources, 20 MB of waiting tasks).
        Box::pin(self.run_with_permit(source, call, permit, trigger, window)).await
    }

    /// [`Engine::run`] once the source is claimed and a permit held.
    async fn run_with_permit(
        self: &Arc<Self>,
        source: Arc<SourceRuntime>,
        call: OwnedMutexGuard<()>,
        permit: tokio::sync::OwnedSemaphorePermit,
        trigger: Trigger,
        window: Option<Window>,
    ) -> Result<RunReport, RunError> {
        let started = Instant::now();
        let started_at = self.clock.now();
        // Count this run's API calls only (not a dry run's, nor a timed-out
        // call's that returned since).
        let _ = source.instance.take_http_requests();
        let (window, collected) = self
            .collect_with_retries(&source, call, window, started_at)
            .await?;
        let mut record = self.run_record(&source, trigger, started_at, window, &collected);
        // The permit bounds plugin calls: while this run waits for its
        // commit, another may call its plugin and then share that commit.
        drop(permit);
        let stored = RunToRecord {
            run: record.clone(),
            observations: collected.observations,
            state: collected.state,
        };
        let (run_id, written) = self.store_run(&source, stored, &mut record).await;
        let seconds = started.elapsed().as_secs_f64();
        self.metrics.run_finished(
            &source.config.id,
            &source.config.plugin,
            record.result,
            collected.error_kind,
            seconds,
            written,
            record.finished_at.timestamp() as f64,
        );
        self.update_breaker(&source, &record);
        self.log_run(&source, trigger, window, written, &record);
        self.publish_values(trigger, written).await;
        Ok(RunReport {
            source: source.config.id.clone(),
            run_id,
            result: record.result.as_str(),
            window,
            observations: written,
            http_requests: record.http_requests,
            uncovered: day_ranges(&record.uncovered),
            error_kind: error_kind_label(record.result, collected.error_kind),
            retry_after: record.retry_after,
            warnings: record.warnings,
            error: record.error,
            duration_ms: (seconds * 1000.0) as u64,
        })
    }

    /// Waits for a `max_concurrent_runs` permit, unless the engine closes first.
    async fn wait_for_permit(
        &self,
        source_id: &str,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, RunError> {
        let mut closing = self.closing.subscribe();
        tokio::select! {
            biased;
            _ = closing.wait_for(|c| *c) => {
                Err(RunError::ShuttingDown(source_id.to_owned()))
            }
            // The semaphore is never closed, so this error cannot happen.
            permit = self.limit.clone().acquire_owned() => {
                permit.map_err(|e| RunError::Internal(e.to_string()))
            }
        }
    }

    /// The record of a finished run, as it is to be stored.
    fn run_record(
        &self,
        source: &SourceRuntime,
        trigger: Trigger,
        started_at: DateTime<Utc>,
        window: Window,
        collected: &Collected,
    ) -> RunRecord {
        RunRecord {
            source: source.config.id.clone(),
            trigger: trigger.as_str().to_owned(),
            started_at,
            finished_at: self.clock.now(),
            result: collected.result,
            error: collected.error.clone(),
            window_from: window.from,
            window_to: window.to,
            warnings: collected.warnings.clone(),
            http_requests: source.instance.take_http_requests(),
            uncovered: if collected.result == RunResult::Success {
                collected.uncovered.clone()
            } else {
                Vec::new()
            },
            error_kind: error_kind_label(collected.result, collected.error_kind).map(str::to_owned),
            retry_after: collected.retry_after,
        }
    }

    /// Stores a run and returns its id and how many observations it wrote.
    /// A run that cannot be stored becomes, in `record`, a failed run that
    /// says why, and the source keeps it as unrecorded.
    async fn store_run(
        &self,
        source: &SourceRuntime,
        run: RunToRecord,
        record: &mut RunRecord,
    ) -> (Option<i64>, usize) {
        let written = run.observations.len();
        // A run that left no trace is a failed run everywhere the store
        // cannot say so itself: metrics, the breaker, the API, `/readyz`.
        match self.record(run).await {
            Ok(id) => {
                let mut unrecorded = source.unrecorded.lock().unwrap_or_else(|p| p.into_inner());
                unrecorded.last = None;
                (Some(id), written)
            }
            Err(e) => {
                let why = self.config.secrets().redact(&format!(
                    "the run could not be recorded: {}",
                    ErrorChain(&e)
                ));
                tracing::error!(source = %source.config.id, error = %why, "run could not be recorded");
                record.error = Some(match record.error.take() {
                    Some(failed) => format!(
                        "{why} (the run itself: {}: {failed})",
                        record.result.as_str()
                    ),
                    None => why,
                });
                record.result = RunResult::Error;
                let mut unrecorded = source.unrecorded.lock().unwrap_or_else(|p| p.into_inner());
                unrecorded.last = Some(record.clone());
                unrecorded.count += 1;
                (None, 0)
            }
        }
    }

    /// Logs how a run ended, and its first warnings.
    fn log_run(
        &self,
        source: &SourceRuntime,
        trigger: Trigger,
        window: Window,
        written: usize,
        record: &RunRecord,
    ) {
        match &record.error {
            // A thousand sources every 10 s would write a line per run, a
            // hundred a second, and bury the failures: like collectd and
            // Telegraf, scheduled successes are quiet unless asked for.
            None if trigger == Trigger::Schedule => tracing::debug!(
                source = %source.config.id,
                from = %window.from,
                to = %window.to,
                observations = written,
                warnings = record.warnings.len(),
                "collection finished"
            ),
            None => tracing::info!(
                source = %source.config.id,
                trigger = trigger.as_str(),
                from = %window.from,
                to = %window.to,
                observations = written,
                warnings = record.warnings.len(),
                "collection finished"
            ),
            Some(err) => tracing::warn!(
                source = %source.config.id,
                trigger = trigger.as_str(),
                result = record.result.as_str(),
                kind = %record.error_kind.as_deref().unwrap_or(""),
                retry_after = %record
                    .retry_after
                    .map(|t| t.with_timezone(&self.config.daemon.timezone).to_rfc3339())
                    .unwrap_or_default(),
                error = %err,
                "collection failed"
            ),
        }
        for w in record.warnings.iter().take(20) {
            tracing::warn!(source = %source.config.id, "{w}");
        }
    }

    /// `/metrics` is rebuilt in the background (at most once a second); a
    /// manual run waits for it, so a scrape after it sees the run.
    async fn publish_values(self: &Arc<Self>, trigger: Trigger, written: usize) {
        if written > 0 {
            self.metrics.values_changed();
        }
        if trigger == Trigger::Manual {
            self.refresh_metrics_if_changed().await;
        }
    }

    /// Records a run through the engine's store writer ([`write_runs`]) and
    /// returns its id once it is durable.
    async fn record(&self, run: RunToRecord) -> Result<i64, RunError> {
        let queue = self.writer.get_or_init(|| {
            let (queue, pending) = mpsc::unbounded_channel();
            tokio::spawn(write_runs(
                self.store.clone(),
                pending,
                GROUP_COMMIT_MAX_OBSERVATIONS,
            ));
            queue
        });
        // Unbounded, yet small: a source has at most one run going, and
        // each waits here for its answer.
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(pending)) = queue.send(PendingWrite { run, reply }) {
            // The writer stopped with the runtime that started it (a CLI
            // command that built its own): record the run directly.
            let store = self.store.clone();
            let run = pending.run;
            return tokio::task::spawn_blocking(move || {
                store.record_run(&run.run, &run.observations, run.state.as_ref())
            })
            .await
            .map_err(|e| RunError::Internal(e.to_string()))?
            .map_err(RunError::from);
        }
        answer
            .await
            .map_err(|_| {
                RunError::Internal("the store writer stopped before the run was recorded".into())
            })?
            .map_err(RunError::from)
    }

    /// Calls the plugin for a window and checks its answer, storing nothing:
    /// `tallyd collect --dry-run`.
    pub async fn dry_run(
        self: &Arc<Self>,
        source_id: &str,
        window: Window,
    ) -> Result<Collected, RunError> {
        let (source, _busy, call) = self.claim(source_id)?;
        let state = {
            let store = self.store.clone();
            let id = source.config.id.clone();
            tokio::task::spawn_blocking(move || store.resume_point(&id))
                .await
                .map_err(|e| RunError::Internal(e.to_string()))??
                .state
        };
        self.collect(&source, call, window, state).await
    }

    /// The source, its run guard and its call guard; refused while a run or
    /// a plugin call (one that outlived its timeout) is going.
    #[allow(clippy::type_complexity)]
    fn claim(
        &self,
        source_id: &str,
    ) -> Result<(Arc<SourceRuntime>, OwnedMutexGuard<()>, OwnedMutexGuard<()>), RunError> {
        let source = self
            .source(source_id)
            .cloned()
            .ok_or_else(|| RunError::UnknownSource(source_id.to_owned()))?;
        let busy = source
            .busy
            .clone()
            .try_lock_owned()
            .map_err(|_| RunError::AlreadyRunning(source_id.to_owned()))?;
        let call = source
            .calling
            .clone()
            .try_lock_owned()
            .map_err(|_| RunError::AlreadyRunning(source_id.to_owned()))?;
        Ok((source, busy, call))
    }

    /// Calls the plugin, and again after a transient failure: up to
    /// `retries` more attempts, each after a doubling, jittered wait, as long
    /// as the retry starts before the source's next scheduled run (so a
    /// per-minute source does not pile retries onto its own schedule).
    async fn collect_with_retries(
        self: &Arc<Self>,
        source: &Arc<SourceRuntime>,
        call: OwnedMutexGuard<()>,
        window: Option<Window>,
        started_at: DateTime<Utc>,
    ) -> Result<(Window, Collected), RunError> {
        let attempts = source.config.retries.saturating_add(1);
        let seed = jitter_seed(&source.config.id);
        let next_scheduled = self.next_fire(source, started_at);
        let (window, state, mut collected) = self.collect_resuming(source, call, window).await?;
        let mut attempt = 1;
        let mut earlier = Vec::new();
        while attempt < attempts && is_transient(collected.result, collected.error_kind) {
            let delay = retry_delay(source.config.retry_backoff, attempt, seed);
            let retry_at = self.clock.now()
                + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
            if next_scheduled.is_some_and(|next| retry_at >= next) {
                break;
            }
            // A platform that said when it accepts requests again is not
            // asked before then; the breaker holds the schedule until then.
            if collected.retry_after.is_some_and(|after| after > retry_at) {
                break;
            }
            let error = collected.error.clone().unwrap_or_default();
            tracing::info!(
                source = %source.config.id,
                attempt,
                attempts,
                result = collected.result.as_str(),
                error = %error,
                retry_in = %humanize(delay),
                "transient failure: retrying"
            );
            earlier.push(format!("attempt {attempt}: {error}"));
            tokio::time::sleep(delay).await;
            // A timed-out plugin may still be returning; give it one timeout.
            let Ok(call) =
                tokio::time::timeout(source.config.timeout, source.calling.clone().lock_owned())
                    .await
            else {
                break;
            };
            attempt += 1;
            collected = self.collect(source, call, window, state.clone()).await?;
        }
        if attempt > 1 {
            let outcome = if collected.result == RunResult::Success {
                "succeeded"
            } else {
                "failed"
            };
            let text = format!(
                "{outcome} on attempt {attempt} of {attempts} (earlier: {})",
                earlier.join("; ")
            );
            tracing::info!(source = %source.config.id, "{text}");
            collected.warnings.insert(0, text);
        }
        Ok((window, collected))
    }

    /// Feeds a finished run to the source's breaker; a retry-after holds
    /// the schedule until then, whatever the count of failures.
    fn update_breaker(&self, source: &SourceRuntime, record: &RunRecord) {
        let interval = source.interval.unwrap_or(MAX_BACKOFF);
        let mut breaker = source.breaker.lock().unwrap_or_else(|p| p.into_inner());
        let was_open = breaker.backoff_until.is_some();
        let opened = breaker.record(
            record.result == RunResult::Success,
            record.finished_at,
            interval,
            source.config.breaker_after,
        );
        let held = record
            .retry_after
            .filter(|at| *at > record.finished_at)
            .is_some_and(|at| breaker.hold_until(at));
        if held {
            let until = breaker.backoff_until.unwrap_or(record.finished_at);
            tracing::warn!(
                source = %source.config.id,
                consecutive_failures = breaker.consecutive_failures,
                until = %until.with_timezone(&self.config.daemon.timezone).to_rfc3339(),
                "the platform said when to try again: scheduled runs are skipped until then (a manual run still runs)"
            );
        } else if let (Some(delay), Some(until)) = (opened, breaker.backoff_until) {
            tracing::warn!(
                source = %source.config.id,
                consecutive_failures = breaker.consecutive_failures,
                backoff = %humanize(delay),
                until = %until.with_timezone(&self.config.daemon.timezone).to_rfc3339(),
                "source backs off: scheduled runs are skipped until then (a manual run still runs)"
            );
        } else if was_open && breaker.backoff_until.is_none() {
            tracing::info!(source = %source.config.id, "source recovered: back on its schedule");
        }
    }

    /// True while the source's breaker skips its scheduled runs.
    pub fn backing_off(&self, source: &SourceRuntime, now: DateTime<Utc>) -> bool {
        source.breaker().holds(now)
    }

    /// When the scheduler will really run the source next: its next
    /// scheduled time, or the first one at or after the end of its backoff.
    pub fn next_run(&self, source: &SourceRuntime, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let after = match source.breaker().backoff_until {
            // Fire times are whole seconds; one at exactly the end runs.
            Some(until) if until > now => until - chrono::Duration::milliseconds(1),
            _ => now,
        };
        self.next_fire(source, after)
    }

    /// One plugin call, off the async workers, bounded by the source's timeout.
    async fn collect(
        &self,
        source: &Arc<SourceRuntime>,
        call: OwnedMutexGuard<()>,
        window: Window,
        state: Option<serde_json::Value>,
    ) -> Result<Collected, RunError> {
        let request = self.request(source, window, state);
        let instance = source.instance.clone();
        // The guard moves into the blocking task: if we stop waiting at the
        // timeout, the source stays busy until the plugin really returns.
        let call = tokio::task::spawn_blocking(move || {
            let answer = instance.collect_blocking(&request);
            drop(call);
            answer
        });
        let outcome = tokio::time::timeout(source.config.timeout, call).await.ok();
        Ok(self.collected(source, window, outcome))
    }

    /// The plugin's request for `window`.
    fn request(
        &self,
        source: &SourceRuntime,
        window: Window,
        state: Option<serde_json::Value>,
    ) -> CollectRequest {
        CollectRequest {
            protocol: PROTOCOL_VERSION,
            source: source.config.id.clone(),
            window,
            timezone: self.config.daemon.timezone.name().to_owned(),
            units: source.units.clone(),
            default_unit: (source.config.units.len() == 1).then(|| source.config.units[0].clone()),
            indicators: source.catalogue.to_vec(),
            state,
            today: Some(self.today()),
        }
    }

    /// A run's first plugin call, with the read of its window and resume
    /// state (`window` cut at today, or the one it resumes from) in the same
    /// blocking task: one trip to the blocking pool per fetch instead of two
    /// (issue 16). One read for both: a run's cost must not grow with the
    /// store. As before, the source's timeout counts from the end of the
    /// read, and a failed read is a run that did not happen.
    async fn collect_resuming(
        self: &Arc<Self>,
        source: &Arc<SourceRuntime>,
        call: OwnedMutexGuard<()>,
        window: Option<Window>,
    ) -> Result<(Window, Option<serde_json::Value>, Collected), RunError> {
        let engine = self.clone();
        let s = source.clone();
        let (read_tx, mut read_rx) = oneshot::channel();
        let mut task = tokio::task::spawn_blocking(move || {
            let point = engine.store.resume_point(&s.config.id)?;
            let window = match window {
                Some(w) => engine.up_to_today(w),
                None => engine.window_after(&s, &point),
            };
            let request = engine.request(&s, window, point.state.clone());
            let _ = read_tx.send((window, point.state, Instant::now()));
            let answer = s.instance.collect_blocking(&request);
            drop(call);
            Ok::<_, StoreError>(answer)
        });
        let timeout = source.config.timeout;
        // Nearly always the call ends within the timeout from the start; only
        // past it does the end of the read matter.
        let mut read = None;
        let outcome = tokio::select! {
            joined = &mut task => Some(joined),
            _ = tokio::time::sleep(timeout) => {
                read = match read_rx.try_recv() {
                    Ok(read) => Some(read),
                    Err(oneshot::error::TryRecvError::Empty) => (&mut read_rx).await.ok(),
                    Err(oneshot::error::TryRecvError::Closed) => None,
                };
                match &read {
                    Some((_, _, read_at)) => tokio::time::timeout_at(*read_at + timeout, &mut task)
                        .await
                        .ok(),
                    // The task ended before its call: a failed read.
                    None => Some((&mut task).await),
                }
            }
        };
        let (window, state) = match read.or_else(|| read_rx.try_recv().ok()) {
            Some((window, state, _)) => (window, state),
            None => {
                return Err(match outcome {
                    Some(Ok(Err(e))) => RunError::Store(e),
                    Some(Err(join)) => RunError::Internal(join.to_string()),
                    _ => RunError::Internal("the resume point was not read".to_owned()),
                });
            }
        };
        let outcome = match outcome {
            Some(Ok(Ok(answer))) => Some(Ok(answer)),
            Some(Err(join)) => Some(Err(join)),
            // Read before the call, so it succeeded.
            Some(Ok(Err(e))) => return Err(RunError::Store(e)),
            None => None,
        };
        let collected = self.collected(source, window, outcome);
        Ok((window, state, collected))
    }

    /// What a plugin call gave (`None`: it timed out), checked.
    fn collected(&self, source: &SourceRuntime, window: Window, outcome: CallOutcome) -> Collected {
        let redact = |s: &str| self.config.secrets().redact(s);
        let mut collected = Collected {
            result: RunResult::Success,
            error: None,
            observations: Vec::new(),
            warnings: Vec::new(),
            state: None,
            error_kind: None,
            uncovered: Vec::new(),
            retry_after: None,
        };
        match outcome {
            None => {
                source.instance.cancel();
                collected.result = RunResult::Timeout;
                collected.error = Some(format!(
                    "timed out after {}",
                    humanize(source.config.timeout)
                ));
            }
            Some(Err(join)) => {
                collected.result = RunResult::Panic;
                collected.error = Some(redact(&format!("plugin call aborted: {join}")));
            }
            Some(Ok(Err(CallError::Crash(msg)))) => {
                collected.result = RunResult::Crash;
                collected.error = Some(redact(&msg));
            }
            Some(Ok(Err(CallError::Panic(msg)))) => {
                collected.result = RunResult::Panic;
                collected.error = Some(redact(&format!("plugin panicked: {msg}")));
            }
            Some(Ok(Err(e))) => {
                collected.result = RunResult::Error;
                if let CallError::Plugin(plugin) = &e {
                    collected.error_kind = Some(plugin.kind);
                    collected.retry_after = plugin.retry_after.filter(|t| *t > self.clock.now());
                }
                collected.error = Some(redact(&e.to_string()));
            }
            Some(Ok(Ok(resp))) => {
                collected
                    .warnings
                    .extend(resp.warnings.iter().map(|w| redact(w)));
                collected.observations =
                    self.accept(source, window, resp.observations, &mut collected.warnings);
                collected.uncovered =
                    Self::accept_uncovered(window, &resp.uncovered, &mut collected.warnings);
                collected.state = resp.state;
            }
        }
        collected
    }

    /// The days of `window` a plugin said it did not cover, merged into
    /// sorted, disjoint ranges. Days outside the window are ignored with a
    /// warning (the run can only speak for its window; a day before it keeps
    /// whatever coverage earlier runs gave it), and so is a range whose
    /// `from` is after its `to`.
    pub fn accept_uncovered(
        window: Window,
        raw: &[Window],
        warnings: &mut Vec<String>,
    ) -> Vec<(NaiveDate, NaiveDate)> {
        if raw.is_empty() {
            return Vec::new();
        }
        let mut kept: Vec<(NaiveDate, NaiveDate)> = Vec::new();
        for r in raw {
            if r.from > r.to {
                warnings.push(format!(
                    "ignored uncovered days {}..{}: the range ends before it starts",
                    r.from, r.to
                ));
                continue;
            }
            if r.from < window.from || r.to > window.to {
                warnings.push(format!(
                    "uncovered days {}..{}: the days outside the requested window {}..{} are ignored",
                    r.from, r.to, window.from, window.to
                ));
            }
            let (from, to) = (r.from.max(window.from), r.to.min(window.to));
            if from <= to {
                kept.push((from, to));
            }
        }
        kept.sort();
        let mut merged: Vec<(NaiveDate, NaiveDate)> = Vec::with_capacity(kept.len());
        for (from, to) in kept {
            match merged.last_mut() {
                Some((_, last)) if from <= last.succ_opt().unwrap_or(*last) => {
                    *last = (*last).max(to);
                }
                _ => merged.push((from, to)),
            }
        }
        merged
    }

    /// Keeps what a plugin may report: units in the source's scope (its
    /// units and every unit below them, whatever its coverage), indicators
    /// it declared, days of the window it was asked for and none after
    /// today, finite values within the declared indicator's range (`min`,
    /// `max`: a count is never negative, and no value passes
    /// [`tally_domain::MAX_VALUE`], so roll-ups never overflow). Everything
    /// else is a warning, never a silently stored number. Kept observations
    /// are renamed, or dropped without a warning, as the source's indicator
    /// mapping says.
    fn accept(
        &self,
        source: &SourceRuntime,
        window: Window,
        raw: Vec<tally_plugin::Observation>,
        warnings: &mut Vec<String>,
    ) -> Vec<Observation> {
        let today = self.today();
        let mut kept = Vec::with_capacity(raw.len());
        let mut rejected = 0usize;
        for o in raw {
            match self.accept_one(source, window, today, o) {
                Ok(Some(o)) => kept.push(o),
                Ok(None) => {}
                Err(why) => {
                    rejected += 1;
                    if rejected <= 10 {
                        warnings.push(why);
                    }
                }
            }
        }
        if rejected > 10 {
            warnings.push(format!("{} more observations dropped", rejected - 10));
        }
        kept
    }

    /// One observation as [`Engine::accept`] keeps it: `Ok(None)` when the
    /// source's indicator mapping drops it, `Err` with the warning that
    /// says why it is refused.
    fn accept_one(
        &self,
        source: &SourceRuntime,
        window: Window,
        today: NaiveDate,
        o: tally_plugin::Observation,
    ) -> Result<Option<Observation>, String> {
        let id = &source.config.id;
        let default_unit =
            (source.config.units.len() == 1).then(|| source.config.units[0].as_str());
        let unit = match o.unit.as_deref().or(default_unit) {
            Some(u) if source.allowed_units.contains(u) => u.to_owned(),
            Some(u) => {
                return Err(format!(
                    "dropped an observation of {} for unit \"{u}\" on {}: the unit is outside source \"{id}\" (units {}, and the units below them)",
                    o.indicator,
                    o.day,
                    source.config.units.join(", ")
                ));
            }
            None => {
                return Err(
                    "dropped an observation without a unit: the source covers several units"
                        .to_owned(),
                );
            }
        };
        if !source.emits.contains(&o.indicator) {
            return Err(format!(
                "dropped an observation of indicator \"{}\": the plugin did not declare it",
                o.indicator
            ));
        }
        // A day that has not begun cannot have been counted: a skewed
        // clock upstream, or a window asked past today.
        if o.day > today {
            return Err(format!(
                "refused {} = {} for unit \"{unit}\" on {} from source \"{id}\": the day is after today ({today})",
                o.indicator,
                show_value(o.value),
                o.day
            ));
        }
        if !window.contains(o.day) {
            return Err(format!(
                "dropped an observation for {} on {}: outside the requested window {}..{}",
                o.indicator, o.day, window.from, window.to
            ));
        }
        let indicator = match source.config.map_indicator(&o.indicator) {
            Some(mapped) if mapped == o.indicator => o.indicator,
            Some(mapped) => mapped.to_owned(),
            None => return Ok(None),
        };
        let (min, max) = self
            .value_ranges
            .get(indicator.as_str())
            .copied()
            .unwrap_or((-MAX_VALUE, MAX_VALUE));
        // `contains` is false for NaN too.
        if !(min..=max).contains(&o.value) {
            let why = if o.value.is_finite() {
                format!(
                    "outside the range {}..{} of the indicator",
                    show_value(min),
                    show_value(max)
                )
            } else {
                "not a finite number".to_owned()
            };
            return Err(format!(
                "refused {indicator} = {} for unit \"{unit}\" on {} from source \"{id}\": {why}",
                show_value(o.value),
                o.day
            ));
        }
        Ok(Some(Observation {
            source: source.config.id.clone(),
            unit,
            indicator,
            entity: o.entity,
            day: o.day,
            value: o.value,
        }))
    }

    /// Which configured indicators each enabled source stores: what its
    /// plugin said it emits, through the source's indicator mapping.
    pub fn emits(&self) -> HashMap<String, Vec<String>> {
        self.sources
            .iter()
            .map(|s| (s.config.id.clone(), s.emitted_ids()))
            .collect()
    }

    /// The statistics table for a period, rolled up (blocking: reads the store).
    pub fn summary(&self, req: &SummaryRequest) -> Result<Summary, SummaryError> {
        summary::build(
            &self.config,
            &self.tree,
            &*self.store,
            &self.emits(),
            req,
            self.clock.now(),
        )
    }

    /// Recomputes the indicator families from the store and rebuilds the
    /// `/metrics` body now: at start and after a reload (a new tree, new
    /// sources), so that the first scrape after them sees them.
    pub async fn refresh_metrics(self: &Arc<Self>) {
        self.refresh_metrics_on_pool(true).await;
    }

    /// Rebuilds the `/metrics` body if anything changed since the last
    /// rebuild, reading the store only if observations were written: the
    /// daemon's background task, and a manual run before it answers.
    pub async fn refresh_metrics_if_changed(self: &Arc<Self>) {
        self.refresh_metrics_on_pool(false).await;
    }

    async fn refresh_metrics_on_pool(self: &Arc<Self>, force: bool) {
        let engine = self.clone();
        let done =
            tokio::task::spawn_blocking(move || engine.refresh_metrics_blocking(force)).await;
        if let Err(e) = done {
            tracing::error!(error = %e, "cannot rebuild /metrics");
        }
    }

    /// [`Engine::refresh_metrics`] on this thread (it reads the store).
    pub fn refresh_metrics_blocking(&self, force: bool) {
        self.metrics.refresh(force, || {
            if let Err(e) = crate::metrics::refresh_indicators(
                &self.metrics,
                &self.config,
                &self.tree,
                &*self.store,
                self.today(),
            ) {
                tracing::error!(error = %ErrorChain(&e), "cannot refresh indicator metrics");
            }
            // A replica's source states are the shared store's, not its own runs'.
            if self.replica.is_some() {
                let ids: Vec<&str> = self.sources().iter().map(|s| s.id()).collect();
                if let Err(e) =
                    crate::metrics::refresh_source_states(&self.metrics, &ids, &*self.store)
                {
                    tracing::error!(error = %ErrorChain(&e), "cannot refresh source metrics");
                }
            }
        });
    }

    /// The next scheduled fire time of a source after `after`.
    pub fn next_fire(&self, source: &SourceRuntime, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        source
            .config
            .next_runs(after, self.config.daemon.timezone, 1)
            .into_iter()
            .next()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Where a source is configured, for messages.
    pub fn source_location(&self, source: &SourceRuntime) -> Location {
        self.config.source_location(source.index)
    }
}

/// `60s`, `5m`, `1h30m`: durations as operators write them in the config.
pub fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests;
