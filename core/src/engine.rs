//! Runs sources: builds each run's window and request, calls the plugin off
//! the async workers with a timeout, checks what it answered, and commits the
//! observations, the run record and the resume state in one transaction.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tally_plugin::{CollectRequest, IndicatorRef, PROTOCOL_VERSION, UnitRef, Window};
use tokio::sync::{OwnedMutexGuard, Semaphore};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::Isolation;
use crate::config::{Config, ConfigError, Location, Problem, SourceConfig};
use crate::domain::period::local_day;
use crate::domain::units::{UnitDef, UnitTree};
use crate::domain::{Kind, Observation};
use crate::metrics::Metrics;
use crate::plugin_host::{
    CallError, HostServices, PluginRegistry, ProcessInstance, SourceInstance, SourceRunner,
};
use crate::store::{RunRecord, RunResult, Store, StoreError};
use crate::summary::{self, Summary, SummaryError, SummaryRequest};

/// One enabled source, ready to run.
pub struct SourceRuntime {
    pub config: SourceConfig,
    pub index: usize,
    pub instance: Arc<SourceRunner>,
    /// Held for the whole run, and past a timeout until the plugin call
    /// really returns: a source never runs twice at once.
    busy: Arc<tokio::sync::Mutex<()>>,
    units: Vec<UnitRef>,
    allowed_units: HashSet<String>,
    emits: HashSet<String>,
}

impl SourceRuntime {
    pub fn id(&self) -> &str {
        &self.config.id
    }

    pub fn plugin(&self) -> &str {
        &self.config.plugin
    }

    pub fn is_running(&self) -> bool {
        self.busy.try_lock().is_err()
    }
}

/// Why a run was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Schedule,
    Manual,
    Start,
    Backfill,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Start => "start",
            Trigger::Backfill => "backfill",
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
    pub warnings: Vec<String>,
    pub error: Option<String>,
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
}

/// Why a run did not happen at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("unknown source \"{0}\"")]
    UnknownSource(String),
    #[error("source \"{0}\" is already running")]
    AlreadyRunning(String),
    #[error("store: {0}")]
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
    sources: Vec<Arc<SourceRuntime>>,
    limit: Arc<Semaphore>,
    indicators: Vec<IndicatorRef>,
}

/// Builds the unit tree of a configuration. The config module already
/// checked ids and parents, so an error here is reported at the units list.
pub fn unit_tree(config: &Config) -> Result<UnitTree, ConfigError> {
    let defs = config
        .units
        .iter()
        .map(|u| UnitDef {
            id: u.id.clone(),
            name: u.name.clone(),
            headcount: u.headcount,
            aliases: u.aliases.clone(),
        })
        .collect();
    UnitTree::new(defs).map_err(|e| ConfigError::Invalid {
        location: config.location("units"),
        message: e.to_string(),
    })
}

/// Creates a plugin instance for every enabled source, through which each
/// plugin validates its settings, then checks which indicators they emit
/// against the catalogue. Reports every problem, each at its place in the file.
pub fn create_sources(
    config: &Config,
    registry: &PluginRegistry,
    services: &HostServices,
) -> Result<Vec<(usize, SourceRunner)>, ConfigError> {
    let mut problems = Vec::new();
    let mut created = Vec::new();
    let mut emits = HashMap::new();
    for (idx, source) in config.sources.iter().enumerate() {
        if !source.enabled {
            continue;
        }
        let Some(lib) = registry.get(&source.plugin) else {
            let known: Vec<&str> = registry.plugins().map(|p| p.name.as_str()).collect();
            problems.push(Problem {
                location: config.location(&format!("sources[{idx}].plugin")),
                message: format!(
                    "unknown plugin \"{}\" (loaded plugins: {}; see `tallyd plugins`)",
                    source.plugin,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            });
            continue;
        };
        match create_runner(lib, source, services) {
            Ok(runner) => {
                emits.insert(source.id.clone(), runner.created.emits.clone());
                created.push((idx, runner));
            }
            Err(e) => problems.push(settings_problem(config, idx, &e, services)),
        }
    }
    if problems.is_empty() {
        config.check_emits(&emits)?;
        return Ok(created);
    }
    problems.sort_by_key(|p| (p.location.line, p.location.column));
    Err(ConfigError::Several { problems })
}

/// Whether a source's plugin instance can be kept across a reload: what the
/// plugin was created with (its library, settings, isolation and units) is
/// unchanged. Schedule, timeout and lookback are read per run, not by the plugin.
pub fn same_instance(old: &SourceConfig, new: &SourceConfig) -> bool {
    old.plugin == new.plugin
        && old.settings == new.settings
        && old.isolation == new.isolation
        && old.memory_limit_mb == new.memory_limit_mb
        && old.units == new.units
}

/// [`create_sources`] for a reload: a source of `previous` whose plugin
/// instance can be kept ([`same_instance`], and the registry still maps its
/// plugin name to the same library) keeps it, with its in-memory caches;
/// every other enabled source gets a new instance, through which its plugin
/// validates its settings. Reports every problem, each at its place in the file.
pub fn create_sources_reusing(
    config: &Config,
    registry: &PluginRegistry,
    services: &HostServices,
    previous: &Engine,
) -> Result<Vec<(usize, Arc<SourceRunner>)>, ConfigError> {
    let mut problems = Vec::new();
    let mut created = Vec::new();
    let mut emits = HashMap::new();
    for (idx, source) in config.sources.iter().enumerate() {
        if !source.enabled {
            continue;
        }
        let Some(lib) = registry.get(&source.plugin) else {
            let known: Vec<&str> = registry.plugins().map(|p| p.name.as_str()).collect();
            problems.push(Problem {
                location: config.location(&format!("sources[{idx}].plugin")),
                message: format!(
                    "unknown plugin \"{}\" (loaded plugins: {}; see `tallyd plugins`)",
                    source.plugin,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            });
            continue;
        };
        let kept = previous.source(&source.id).filter(|old| {
            same_instance(&old.config, source) && Arc::ptr_eq(&old.instance.plugin, lib)
        });
        if let Some(old) = kept {
            emits.insert(source.id.clone(), old.instance.created.emits.clone());
            created.push((idx, old.instance.clone()));
            continue;
        }
        match create_runner(lib, source, services) {
            Ok(runner) => {
                emits.insert(source.id.clone(), runner.created.emits.clone());
                created.push((idx, Arc::new(runner)));
            }
            Err(e) => problems.push(settings_problem(config, idx, &e, services)),
        }
    }
    if problems.is_empty() {
        config.check_emits(&emits)?;
        return Ok(created);
    }
    problems.sort_by_key(|p| (p.location.line, p.location.column));
    Err(ConfigError::Several { problems })
}

/// Creates a source's plugin instance where its `isolation` says: inside the
/// daemon, or in a `tallyd plugin-host` child of the running executable.
fn create_runner(
    lib: &Arc<crate::plugin_host::PluginLibrary>,
    source: &SourceConfig,
    services: &HostServices,
) -> Result<SourceRunner, CallError> {
    match source.isolation {
        Isolation::None => {
            SourceInstance::create(lib.clone(), &source.id, &source.settings, services.clone())
                .map(SourceRunner::in_process)
        }
        Isolation::Process => {
            let exe = std::env::current_exe()
                .map_err(|e| CallError::Crash(format!("cannot find the tallyd executable: {e}")))?;
            ProcessInstance::create(
                exe,
                lib.path.clone(),
                &source.id,
                &source.settings,
                source.memory_limit_mb,
                services.redact.clone(),
            )
            .map(|p| SourceRunner::process(lib.clone(), p))
        }
    }
}

/// Places a plugin's settings error at the setting it names, when its message
/// starts with a settings path such as `rows[1].path: ...`.
fn settings_problem(
    config: &Config,
    idx: usize,
    err: &CallError,
    services: &HostServices,
) -> Problem {
    let text = (services.redact)(&err.to_string());
    if let CallError::Plugin(e) = err {
        if let Some((path, rest)) = e.message.split_once(": ") {
            if !path.is_empty()
                && path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']'))
            {
                let pointer: String = path
                    .replace('[', ".")
                    .replace(']', "")
                    .split('.')
                    .filter(|s| !s.is_empty())
                    .map(|s| format!("/{s}"))
                    .collect();
                return Problem {
                    location: config.settings_location(idx, &pointer),
                    message: (services.redact)(rest),
                };
            }
        }
    }
    Problem {
        location: config.location(&format!("sources[{idx}].settings")),
        message: text,
    }
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
        let sources = created
            .into_iter()
            .map(|(index, instance)| {
                let config_source = config.sources[index].clone();
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
                if let Some(gap) = config_source.longest_gap(clock.now(), config.daemon.timezone) {
                    metrics
                        .schedule_interval
                        .with_label_values(&[config_source.id.as_str()])
                        .set(gap.as_secs_f64());
                }
                // After a restart, staleness counts from the last success the
                // store remembers, not from the next one.
                if let Ok(Some(last)) = store
                    .source_status(&config_source.id)
                    .map(|s| s.last_success)
                {
                    metrics
                        .last_success
                        .with_label_values(&[config_source.id.as_str()])
                        .set(last.finished_at.timestamp() as f64);
                }
                let instance: Arc<SourceRunner> = instance.into();
                Arc::new(SourceRuntime {
                    emits: instance.created.emits.iter().cloned().collect(),
                    config: config_source,
                    index,
                    instance,
                    busy: Arc::new(tokio::sync::Mutex::new(())),
                    allowed_units: seen,
                    units,
                })
            })
            .collect();
        for lib in plugins.plugins() {
            metrics
                .plugin_info
                .with_label_values(&[
                    lib.name.as_str(),
                    lib.version.as_str(),
                    &lib.abi_major.to_string(),
                ])
                .set(1.0);
        }
        for idx in tree.preorder() {
            let unit = tree.unit(*idx);
            let parent = unit
                .parent()
                .map(|p| tree.unit(p).id.as_str())
                .unwrap_or("");
            metrics
                .unit_info
                .with_label_values(&[unit.id.as_str(), unit.name.as_str(), parent])
                .set(1.0);
        }
        for ind in &config.indicators {
            metrics
                .indicator_info
                .with_label_values(&[ind.id.as_str(), ind.name.as_str(), ind.kind.as_str()])
                .set(1.0);
        }
        let indicators = config
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
        Engine {
            limit: Arc::new(Semaphore::new(config.daemon.max_concurrent_runs.max(1))),
            config,
            tree,
            store,
            clock,
            metrics,
            plugins,
            sources,
            indicators,
        }
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

    /// The window a scheduled run asks for: from the last successful day minus
    /// the lookback (to pick up late corrections) to today; a source that never
    /// succeeded starts at `backfill_from`, else today.
    pub fn next_window(&self, source: &SourceRuntime) -> Result<Window, StoreError> {
        let today = self.today();
        let status = self.store.source_status(&source.config.id)?;
        let from = match status.last_success {
            Some(last) => last
                .window_to
                .checked_sub_days(chrono::Days::new(u64::from(source.config.lookback_days)))
                .unwrap_or(last.window_to),
            None => source.config.backfill_from.unwrap_or(today),
        };
        Ok(Window::new(from.min(today), today))
    }

    /// Runs a source now (or reports that it is already running) and records
    /// the run. `window` overrides the computed one (backfills).
    pub async fn run(
        self: &Arc<Self>,
        source_id: &str,
        trigger: Trigger,
        window: Option<Window>,
    ) -> Result<RunReport, RunError> {
        let (source, busy) = self.claim(source_id)?;
        let _permit = self.limit.clone().acquire_owned().await;
        let window = match window {
            Some(w) => w,
            None => {
                let engine = self.clone();
                let s = source.clone();
                tokio::task::spawn_blocking(move || engine.next_window(&s))
                    .await
                    .map_err(|e| RunError::Internal(e.to_string()))??
            }
        };
        let started = Instant::now();
        let started_at = self.clock.now();
        let collected = self.collect(&source, busy, window).await?;
        let record = RunRecord {
            source: source.config.id.clone(),
            trigger: trigger.as_str().to_owned(),
            started_at,
            finished_at: self.clock.now(),
            result: collected.result,
            error: collected.error.clone(),
            window_from: window.from,
            window_to: window.to,
            warnings: collected.warnings.clone(),
        };
        let written = collected.observations.len();
        let store = self.store.clone();
        let rec = record.clone();
        let Collected {
            observations,
            state,
            ..
        } = collected;
        let run_id = tokio::task::spawn_blocking(move || {
            store.record_run(&rec, &observations, state.as_ref())
        })
        .await
        .map_err(|e| RunError::Internal(e.to_string()))??;
        let seconds = started.elapsed().as_secs_f64();
        self.metrics.run_finished(
            &source.config.id,
            &source.config.plugin,
            record.result,
            seconds,
            written,
            record.finished_at.timestamp() as f64,
        );
        match &record.error {
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
                error = %err,
                "collection failed"
            ),
        }
        for w in record.warnings.iter().take(20) {
            tracing::warn!(source = %source.config.id, "{w}");
        }
        if written > 0 {
            self.refresh_metrics().await;
        }
        Ok(RunReport {
            source: source.config.id.clone(),
            run_id: Some(run_id),
            result: record.result.as_str(),
            window,
            observations: written,
            warnings: record.warnings,
            error: record.error,
            duration_ms: (seconds * 1000.0) as u64,
        })
    }

    /// Calls the plugin for a window and checks its answer, storing nothing:
    /// `tallyd collect --dry-run`.
    pub async fn dry_run(
        self: &Arc<Self>,
        source_id: &str,
        window: Window,
    ) -> Result<Collected, RunError> {
        let (source, busy) = self.claim(source_id)?;
        self.collect(&source, busy, window).await
    }

    fn claim(
        &self,
        source_id: &str,
    ) -> Result<(Arc<SourceRuntime>, OwnedMutexGuard<()>), RunError> {
        let source = self
            .source(source_id)
            .cloned()
            .ok_or_else(|| RunError::UnknownSource(source_id.to_owned()))?;
        let busy = source
            .busy
            .clone()
            .try_lock_owned()
            .map_err(|_| RunError::AlreadyRunning(source_id.to_owned()))?;
        Ok((source, busy))
    }

    /// One plugin call, off the async workers, bounded by the source's timeout.
    async fn collect(
        &self,
        source: &Arc<SourceRuntime>,
        busy: OwnedMutexGuard<()>,
        window: Window,
    ) -> Result<Collected, RunError> {
        let state = {
            let store = self.store.clone();
            let id = source.config.id.clone();
            tokio::task::spawn_blocking(move || store.source_status(&id))
                .await
                .map_err(|e| RunError::Internal(e.to_string()))??
                .state
        };
        let request = CollectRequest {
            protocol: PROTOCOL_VERSION,
            source: source.config.id.clone(),
            window,
            timezone: self.config.daemon.timezone.name().to_owned(),
            units: source.units.clone(),
            default_unit: (source.config.units.len() == 1).then(|| source.config.units[0].clone()),
            indicators: self.indicators.clone(),
            state,
        };
        let instance = source.instance.clone();
        // The guard moves into the blocking task: if we stop waiting at the
        // timeout, the source stays busy until the plugin really returns.
        let call = tokio::task::spawn_blocking(move || {
            let answer = instance.collect_blocking(&request);
            drop(busy);
            answer
        });
        let outcome = tokio::time::timeout(source.config.timeout, call).await;
        let redact = |s: &str| self.config.secrets().redact(s);
        let mut collected = Collected {
            result: RunResult::Success,
            error: None,
            observations: Vec::new(),
            warnings: Vec::new(),
            state: None,
        };
        match outcome {
            Err(_) => {
                source.instance.cancel();
                collected.result = RunResult::Timeout;
                collected.error = Some(format!(
                    "timed out after {}",
                    humanize(source.config.timeout)
                ));
            }
            Ok(Err(join)) => {
                collected.result = RunResult::Panic;
                collected.error = Some(redact(&format!("plugin call aborted: {join}")));
            }
            Ok(Ok(Err(CallError::Crash(msg)))) => {
                collected.result = RunResult::Crash;
                collected.error = Some(redact(&msg));
            }
            Ok(Ok(Err(CallError::Panic(msg)))) => {
                collected.result = RunResult::Panic;
                collected.error = Some(redact(&format!("plugin panicked: {msg}")));
            }
            Ok(Ok(Err(e))) => {
                collected.result = RunResult::Error;
                collected.error = Some(redact(&e.to_string()));
            }
            Ok(Ok(Ok(resp))) => {
                collected
                    .warnings
                    .extend(resp.warnings.iter().map(|w| redact(w)));
                collected.observations =
                    self.accept(source, window, resp.observations, &mut collected.warnings);
                collected.state = resp.state;
            }
        }
        Ok(collected)
    }

    /// Keeps what a plugin may report: known units of this source, indicators
    /// it declared, days of the window it was asked for, finite values.
    /// Everything else is a warning, never a silently stored number.
    fn accept(
        &self,
        source: &SourceRuntime,
        window: Window,
        raw: Vec<tally_plugin::Observation>,
        warnings: &mut Vec<String>,
    ) -> Vec<Observation> {
        let default_unit =
            (source.config.units.len() == 1).then(|| source.config.units[0].as_str());
        let mut kept = Vec::with_capacity(raw.len());
        let mut rejected = 0usize;
        for o in raw {
            let unit = match o.unit.as_deref().or(default_unit) {
                Some(u) if source.allowed_units.contains(u) => u.to_owned(),
                Some(u) => {
                    rejected += 1;
                    if rejected <= 10 {
                        warnings.push(format!(
                            "dropped an observation for unit \"{u}\": not a unit of this source"
                        ));
                    }
                    continue;
                }
                None => {
                    rejected += 1;
                    if rejected <= 10 {
                        warnings.push(
                            "dropped an observation without a unit: the source covers several units".to_owned(),
                        );
                    }
                    continue;
                }
            };
            if !source.emits.contains(&o.indicator) {
                rejected += 1;
                if rejected <= 10 {
                    warnings.push(format!(
                        "dropped an observation of indicator \"{}\": the plugin did not declare it",
                        o.indicator
                    ));
                }
                continue;
            }
            if !window.contains(o.day) {
                rejected += 1;
                if rejected <= 10 {
                    warnings.push(format!(
                        "dropped an observation for {} on {}: outside the requested window {}..{}",
                        o.indicator, o.day, window.from, window.to
                    ));
                }
                continue;
            }
            if !o.value.is_finite() {
                rejected += 1;
                if rejected <= 10 {
                    warnings.push(format!(
                        "dropped a non-finite value for {} {} on {}",
                        unit, o.indicator, o.day
                    ));
                }
                continue;
            }
            kept.push(Observation {
                source: source.config.id.clone(),
                unit,
                indicator: o.indicator,
                entity: o.entity,
                day: o.day,
                value: o.value,
            });
        }
        if rejected > 10 {
            warnings.push(format!("{} more observations dropped", rejected - 10));
        }
        kept
    }

    /// Which indicators each enabled source emits, as its plugin said.
    pub fn emits(&self) -> HashMap<String, Vec<String>> {
        self.sources
            .iter()
            .map(|s| (s.config.id.clone(), s.instance.created.emits.clone()))
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

    /// Recomputes `tally_indicator_value` from the store, so that scrapes
    /// only encode what is already there.
    pub async fn refresh_metrics(self: &Arc<Self>) {
        let engine = self.clone();
        let done = tokio::task::spawn_blocking(move || {
            summary::refresh_metrics(
                &engine.metrics,
                &engine.config,
                &engine.tree,
                &*engine.store,
                engine.today(),
            )
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot refresh indicator metrics"),
            Err(e) => tracing::error!(error = %e, "cannot refresh indicator metrics"),
        }
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
    if ms % 1000 != 0 {
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
