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

/// One enabled source, ready to run.
pub struct SourceRuntime {
    pub config: SourceConfig,
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
    catalogue: Vec<IndicatorRef>,
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

/// The catalogue handed to a source's plugin in each request: a configured
/// indicator that the source's `[sources.indicators]` maps an emitted id to
/// is listed under that emitted id (first, so that a column named by the
/// indicator's display name resolves to the id the plugin knows), and not
/// under its own; the others as configured.
fn plugin_catalogue(source: &SourceConfig, catalogue: &[IndicatorRef]) -> Vec<IndicatorRef> {
    let mut out: Vec<IndicatorRef> = source
        .indicators
        .iter()
        .filter_map(|(emitted, mapped)| {
            let target = catalogue.iter().find(|i| Some(&i.id) == mapped.as_ref())?;
            Some(IndicatorRef {
                id: emitted.clone(),
                ..target.clone()
            })
        })
        .collect();
    out.extend(
        catalogue
            .iter()
            .filter(|i| {
                !source
                    .indicators
                    .values()
                    .any(|m| m.as_ref() == Some(&i.id))
            })
            .cloned(),
    );
    out
}

/// Whether a failed attempt may pass on its own, so that trying again soon
/// is worth it: timeouts, crashed plugin processes, and what plugins report as
/// `upstream` (platform errors, HTTP 5xx, refused connections) or
/// `rate_limited`. Bad settings, refused credentials, unusable data, plugin
/// bugs (panics, `internal`, protocol errors) fail the same way every time.
pub fn is_transient(result: RunResult, kind: Option<ErrorKind>) -> bool {
    match result {
        RunResult::Success | RunResult::Panic => false,
        RunResult::Timeout | RunResult::Crash => true,
        RunResult::Error => matches!(kind, Some(ErrorKind::Upstream | ErrorKind::RateLimited)),
    }
}

/// A seed for a source's retry jitter: FNV-1a of its id, so that sources
/// failing together do not retry in step, and a test knows the delays.
pub fn jitter_seed(source: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    h.write(source.as_bytes());
    h.finish()
}

/// The wait before retry number `retry` (1 for the first): `base`, doubled
/// for each further retry, times a jitter factor in [0.8, 1.2) drawn from
/// `seed` and `retry`.
pub fn retry_delay(base: Duration, retry: u32, seed: u64) -> Duration {
    let doubled = base.saturating_mul(1u32 << retry.saturating_sub(1).min(20));
    let unit =
        fastrand::Rng::with_seed(seed ^ u64::from(retry).wrapping_mul(0x9e37_79b9_7f4a_7c15)).f64();
    doubled.mul_f64(0.8 + 0.4 * unit)
}

/// The longest a failing source backs off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);

/// How long scheduled runs are skipped after the breaker opened `k` times in
/// a row: the schedule's interval doubled `k` times, at most [`MAX_BACKOFF`]
/// (collectd's doubling read interval).
pub fn backoff_delay(interval: Duration, k: u32) -> Duration {
    interval.saturating_mul(1u32 << k.min(20)).min(MAX_BACKOFF)
}

/// A source's circuit breaker: after `breaker_after` consecutive failed runs
/// its scheduled runs are skipped until `backoff_until`; every further
/// failure doubles the backoff; a success closes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Breaker {
    pub consecutive_failures: u32,
    pub backoff_until: Option<DateTime<Utc>>,
}

impl Breaker {
    /// Records a finished run. Returns the backoff when this failure opened
    /// (or extended) it.
    pub fn record(
        &mut self,
        success: bool,
        now: DateTime<Utc>,
        interval: Duration,
        breaker_after: u32,
    ) -> Option<Duration> {
        if success {
            *self = Breaker::default();
            return None;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if breaker_after == 0 || self.consecutive_failures < breaker_after {
            return None;
        }
        let delay = backoff_delay(interval, self.consecutive_failures - breaker_after + 1);
        self.backoff_until =
            Some(now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::days(1)));
        Some(delay)
    }

    /// Skips scheduled runs until `at` at least (a platform's retry-after),
    /// whether or not the consecutive failures opened the breaker. True
    /// when that moved the end of the backoff.
    pub fn hold_until(&mut self, at: DateTime<Utc>) -> bool {
        if self.backoff_until.is_some_and(|until| until >= at) {
            return false;
        }
        self.backoff_until = Some(at);
        true
    }

    /// True while scheduled runs are to be skipped.
    pub fn holds(&self, now: DateTime<Utc>) -> bool {
        self.backoff_until.is_some_and(|t| t > now)
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

/// How far back a run's window reaches for days earlier runs left uncovered:
/// a day named uncovered is asked again by every later run until one covers
/// it, as long as it is at most this many days before today. Older ones stay
/// uncovered (and show as gaps) until a backfill (`tallyd collect`) covers them.
pub const RESUME_REACH_DAYS: u64 = 31;

/// The window a run asks for when none was given, `today` in the configured
/// time zone: from the last success's last day minus `lookback_days` (late
/// corrections), or `backfill_from` (else today) for a source that never
/// succeeded, to today. It also starts no later than the first day earlier
/// runs left uncovered and no later run covered, if that day is at most
/// [`RESUME_REACH_DAYS`] before today (or the part of a range within reach),
/// so that a day a plugin could not cover yet (not final, not measured) is
/// asked again whatever `lookback_days` says.
///
/// ```
/// use chrono::NaiveDate;
/// use tally_daemon::engine::resume_window;
/// use tally_store::{LastSuccess, ResumePoint};
/// let d = |day| NaiveDate::from_ymd_opt(2026, 11, day).unwrap();
/// let point = ResumePoint {
///     last_success: Some(LastSuccess {
///         run_id: 7,
///         finished_at: "2026-11-27T18:30:00Z".parse().unwrap(),
///         window_to: d(27),
///     }),
///     uncovered: vec![(d(26), d(26))],
///     ..ResumePoint::default()
/// };
/// let w = resume_window(d(28), 0, None, &point);
/// assert_eq!((w.from, w.to), (d(26), d(28)));
/// ```
pub fn resume_window(
    today: NaiveDate,
    lookback_days: u32,
    backfill_from: Option<NaiveDate>,
    point: &ResumePoint,
) -> Window {
    let mut from = match &point.last_success {
        // A last success ending after today (a clock that ran ahead, a
        // backfill asked past today by an older tallyd) counts as ending
        // today, so the lookback still reaches back.
        Some(last) => {
            let end = last.window_to.min(today);
            end.checked_sub_days(chrono::Days::new(u64::from(lookback_days)))
                .unwrap_or(end)
        }
        None => backfill_from.unwrap_or(today),
    };
    let reach = today
        .checked_sub_days(chrono::Days::new(RESUME_REACH_DAYS))
        .unwrap_or(today);
    if let Some(&(first, _)) = point.uncovered.iter().find(|(_, to)| *to >= reach) {
        from = from.min(first.max(reach));
    }
    Window::new(from.min(today), today)
}

/// Day ranges as text: `2026-11-26` for one day, `2026-11-01..2026-11-03`
/// for more (the summary's period syntax, so a range can be pasted into
/// `?period=`).
pub fn day_ranges(ranges: &[(NaiveDate, NaiveDate)]) -> Vec<String> {
    ranges
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}..{b}")
            }
        })
        .collect()
}

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
}

/// A finished run waiting for the store writer, and where its answer goes.
struct PendingWrite {
    run: RunToRecord,
    reply: oneshot::Sender<Result<i64, StoreError>>,
}

/// The runs one commit takes from the writer's queue stop at this many
/// observations (the first run always goes), so that a burst of backfills
/// does not become one transaction that holds every answer back.
const GROUP_COMMIT_MAX_OBSERVATIONS: usize = 100_000;

/// The store writer of an engine: takes the first queued run, then whatever
/// else is already queued without waiting for more, records them in one
/// transaction on a blocking thread ([`Store::record_runs`]), and answers
/// each run after the commit. With a thousand sources polled every few
/// seconds, runs that finish while a commit is going share the next one,
/// so they cost one fsync instead of one each; a lone run is written at once.
async fn write_runs(
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

/// Creates a plugin instance for every enabled source, through which each
/// plugin validates its settings, adds the indicators their plugins declare
/// and the file does not ([`Config::adopt_plugin_indicators`]), then checks
/// which indicators they emit against the catalogue. Reports every problem,
/// each at its place in the file.
pub fn create_sources(
    config: &mut Config,
    registry: &PluginRegistry,
    services: &HostServices,
) -> Result<Vec<(usize, Arc<SourceRunner>)>, ConfigError> {
    create_sources_reusing(config, registry, services, None)
}

/// [`create_sources`] for a reload: a source of `previous` whose plugin
/// instance can be kept ([`SourceConfig::same_instance`], and the registry still maps its
/// plugin name to the same library) keeps it, with its in-memory caches;
/// every other enabled source gets a new instance, through which its plugin
/// validates its settings. Reports every problem, each at its place in the file.
pub fn create_sources_reusing(
    config: &mut Config,
    registry: &PluginRegistry,
    services: &HostServices,
    previous: Option<&Engine>,
) -> Result<Vec<(usize, Arc<SourceRunner>)>, ConfigError> {
    services.gate.configure(
        config.daemon.http_per_host_concurrency,
        config.daemon.http_per_host_rate,
    );
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
        let kept = previous.and_then(|p| p.source(&source.id)).filter(|old| {
            old.config.same_instance(source) && Arc::ptr_eq(&old.instance.plugin, lib)
        });
        if let Some(old) = kept {
            emits.insert(source.id.clone(), old.instance.created.emits.clone());
            created.push((idx, old.instance.clone()));
            continue;
        }
        // The schema names every wrong key at its line, where the plugin's
        // own check would stop at the first; the plugin then is not called.
        if let Some(schema) = &lib.description.settings_schema {
            let found = tally_host::settings::check_source(config, idx, schema);
            if !found.is_empty() {
                // A message may quote a value, and a value may be a secret.
                problems.extend(found.into_iter().map(|mut p| {
                    p.message = (services.redact)(&p.message);
                    p
                }));
                continue;
            }
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
        let described = config
            .sources
            .iter()
            .filter_map(|s| registry.get(&s.plugin))
            .map(|lib| (lib.name.clone(), lib.description.indicators.clone()))
            .collect();
        config.adopt_plugin_indicators(&emits, &described);
        config.check_emits(&emits)?;
        return Ok(created);
    }
    problems.sort_by_key(|p| (p.location.line, p.location.column));
    Err(ConfigError::Several { problems })
}

/// Creates a source's plugin instance where its `isolation` says: inside the
/// daemon, or in a `tallyd plugin-host` child of the running executable.
fn create_runner(
    lib: &Arc<tally_host::PluginLibrary>,
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
    if let CallError::Plugin(e) = err
        && let Some((path, rest)) = e.message.split_once(": ")
        && !path.is_empty()
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
        let now = clock.now();
        let mut gaps: HashMap<&str, Option<Duration>> = HashMap::new();
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
                    catalogue: plugin_catalogue(&config_source, &indicators),
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
        let (window, state) = self.window_and_state(&source, window).await?;
        let started = Instant::now();
        let started_at = self.clock.now();
        // Count this run's API calls only (not a dry run's, nor a timed-out
        // call's that returned since).
        let _ = source.instance.take_http_requests();
        let collected = self
            .collect_with_retries(&source, call, window, state, started_at)
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

    /// The run's window (`window` cut at today, or the one it resumes from)
    /// and the source's resume state. One read for both: a run's cost must
    /// not grow with the store.
    async fn window_and_state(
        self: &Arc<Self>,
        source: &Arc<SourceRuntime>,
        window: Option<Window>,
    ) -> Result<(Window, Option<serde_json::Value>), RunError> {
        let engine = self.clone();
        let s = source.clone();
        tokio::task::spawn_blocking(move || {
            let point = engine.store.resume_point(&s.config.id)?;
            let window = match window {
                Some(w) => engine.up_to_today(w),
                None => engine.window_after(&s, &point),
            };
            Ok::<_, StoreError>((window, point.state))
        })
        .await
        .map_err(|e| RunError::Internal(e.to_string()))?
        .map_err(RunError::from)
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
        &self,
        source: &Arc<SourceRuntime>,
        call: OwnedMutexGuard<()>,
        window: Window,
        state: Option<serde_json::Value>,
        started_at: DateTime<Utc>,
    ) -> Result<Collected, RunError> {
        let attempts = source.config.retries.saturating_add(1);
        let seed = jitter_seed(&source.config.id);
        let next_scheduled = self.next_fire(source, started_at);
        let mut collected = self.collect(source, call, window, state.clone()).await?;
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
        Ok(collected)
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
        let request = CollectRequest {
            protocol: PROTOCOL_VERSION,
            source: source.config.id.clone(),
            window,
            timezone: self.config.daemon.timezone.name().to_owned(),
            units: source.units.clone(),
            default_unit: (source.config.units.len() == 1).then(|| source.config.units[0].clone()),
            indicators: source.catalogue.clone(),
            state,
            today: Some(self.today()),
        };
        let instance = source.instance.clone();
        // The guard moves into the blocking task: if we stop waiting at the
        // timeout, the source stays busy until the plugin really returns.
        let call = tokio::task::spawn_blocking(move || {
            let answer = instance.collect_blocking(&request);
            drop(call);
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
            error_kind: None,
            uncovered: Vec::new(),
            retry_after: None,
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
                if let CallError::Plugin(plugin) = &e {
                    collected.error_kind = Some(plugin.kind);
                    collected.retry_after = plugin.retry_after.filter(|t| *t > self.clock.now());
                }
                collected.error = Some(redact(&e.to_string()));
            }
            Ok(Ok(Ok(resp))) => {
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
        Ok(collected)
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
mod tests {
    use chrono::TimeZone;

    use super::*;
    use tally_store::SqliteStore;

    /// The SQLite store, counting the runs of each `record_runs` call.
    struct Counting {
        inner: SqliteStore,
        batches: std::sync::Mutex<Vec<usize>>,
    }

    impl Store for Counting {
        fn record_run(
            &self,
            run: &RunRecord,
            observations: &[Observation],
            state: Option<&serde_json::Value>,
        ) -> Result<i64, StoreError> {
            self.batches.lock().unwrap().push(1);
            self.inner.record_run(run, observations, state)
        }
        fn record_runs(&self, runs: &[RunToRecord]) -> Vec<Result<i64, StoreError>> {
            self.batches.lock().unwrap().push(runs.len());
            self.inner.record_runs(runs)
        }
        fn source_status(&self, source: &str) -> Result<tally_store::SourceStatus, StoreError> {
            self.inner.source_status(source)
        }
        fn resume_point(&self, source: &str) -> Result<tally_store::ResumePoint, StoreError> {
            self.inner.resume_point(source)
        }
        fn recent_runs(
            &self,
            source: &str,
            limit: usize,
        ) -> Result<Vec<tally_store::StoredRun>, StoreError> {
            self.inner.recent_runs(source, limit)
        }
        fn runs(&self, ids: &[i64]) -> Result<Vec<tally_store::StoredRun>, StoreError> {
            self.inner.runs(ids)
        }
        fn own_values(
            &self,
            start: NaiveDate,
            end: NaiveDate,
            indicators: &[(String, Kind)],
        ) -> Result<Vec<tally_store::OwnValue>, StoreError> {
            self.inner.own_values(start, end, indicators)
        }
        fn entity_values(
            &self,
            start: NaiveDate,
            end: NaiveDate,
            indicators: &[(String, Kind)],
        ) -> Result<Vec<tally_store::EntityValue>, StoreError> {
            self.inner.entity_values(start, end, indicators)
        }
        fn coverage(
            &self,
            source: &str,
            start: NaiveDate,
            end: NaiveDate,
        ) -> Result<tally_store::Coverage, StoreError> {
            self.inner.coverage(source, start, end)
        }
        fn observations(
            &self,
            units: &[&str],
            indicator: &str,
            start: NaiveDate,
            end: NaiveDate,
        ) -> Result<Vec<tally_store::StoredObservation>, StoreError> {
            self.inner.observations(units, indicator, start, end)
        }
        fn first_day(&self) -> Result<Option<NaiveDate>, StoreError> {
            self.inner.first_day()
        }
        fn check_writable(&self) -> Result<(), StoreError> {
            self.inner.check_writable()
        }
    }

    fn pending_run(source: &str, days: u32) -> RunToRecord {
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let at = Utc.with_ymd_and_hms(2026, 11, 27, 4, 0, 0).unwrap();
        RunToRecord {
            run: RunRecord {
                source: source.into(),
                trigger: "schedule".into(),
                started_at: at,
                finished_at: at,
                result: RunResult::Success,
                error: None,
                window_from: day(1),
                window_to: day(days),
                warnings: vec![],
                http_requests: None,
                uncovered: Vec::new(),
                error_kind: None,
                retry_after: None,
            },
            observations: (1..=days)
                .map(|d| Observation {
                    source: source.into(),
                    unit: "county".into(),
                    indicator: "posts".into(),
                    entity: String::new(),
                    day: day(d),
                    value: 1.0,
                })
                .collect(),
            state: None,
        }
    }

    #[tokio::test]
    async fn queued_runs_share_commits_of_bounded_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Counting {
            inner: SqliteStore::open(dir.path()).unwrap(),
            batches: Default::default(),
        });
        let (queue, pending) = mpsc::unbounded_channel();
        let mut answers = Vec::new();
        // Four runs of 3 observations queued before the writer looks, then
        // one that the cap of 8 observations leaves for the next commit,
        // and an invalid one that fails alone.
        let mut runs: Vec<RunToRecord> = (0..5).map(|i| pending_run(&format!("s{i}"), 3)).collect();
        runs[4].observations[0].value = f64::NAN;
        for run in runs {
            let (reply, answer) = oneshot::channel();
            queue.send(PendingWrite { run, reply }).unwrap();
            answers.push(answer);
        }
        drop(queue);
        write_runs(store.clone(), pending, 8).await;

        let mut ids = Vec::new();
        for answer in answers {
            ids.push(answer.await.unwrap());
        }
        assert_eq!(*store.batches.lock().unwrap(), [3, 2]);
        let stored: Vec<i64> = ids[..4].iter().map(|r| *r.as_ref().unwrap()).collect();
        assert!(stored.windows(2).all(|w| w[0] < w[1]), "{stored:?}");
        assert!(
            matches!(ids[4], Err(StoreError::Invalid { .. })),
            "{:?}",
            ids[4]
        );
        for (i, id) in stored.iter().enumerate() {
            let last = store
                .source_status(&format!("s{i}"))
                .unwrap()
                .last_run
                .unwrap();
            assert_eq!((last.id, last.observations_written), (*id, 3));
        }
    }

    #[test]
    fn the_resume_window_reaches_back_to_the_earliest_day_left_uncovered() {
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let record = |from, to, uncovered: Vec<(NaiveDate, NaiveDate)>| {
            let mut run = pending_run("wechat", 1).run;
            (run.window_from, run.window_to, run.uncovered) = (from, to, uncovered);
            store.record_run(&run, &[], None).unwrap();
        };
        // A run at 02:30 on the 20th: the 19th is not final yet.
        record(day(18), day(20), vec![(day(19), day(19))]);
        let point = store.resume_point("wechat").unwrap();
        // lookback_days = 0 would start on the 20th; the 19th is asked again.
        assert_eq!(
            resume_window(day(21), 0, None, &point),
            Window::new(day(19), day(21))
        );
        // A lookback reaching further back wins.
        assert_eq!(
            resume_window(day(21), 3, None, &point),
            Window::new(day(17), day(21))
        );
        // Once a later run covered it, the lookback alone decides.
        record(day(19), day(21), vec![]);
        let point = store.resume_point("wechat").unwrap();
        assert_eq!(point.uncovered, []);
        assert_eq!(
            resume_window(day(21), 0, None, &point),
            Window::new(day(21), day(21))
        );
        // A stretch left uncovered is reached back to, but never more than
        // RESUME_REACH_DAYS before today.
        record(
            NaiveDate::from_ymd_opt(2026, 9, 1).unwrap(),
            day(21),
            vec![(NaiveDate::from_ymd_opt(2026, 9, 1).unwrap(), day(2))],
        );
        let point = store.resume_point("wechat").unwrap();
        let today = day(22);
        let reach = today - chrono::Days::new(RESUME_REACH_DAYS);
        assert_eq!(
            resume_window(today, 0, None, &point),
            Window::new(reach, today)
        );
        // Further on, the range is out of reach: only the lookback counts.
        let later = NaiveDate::from_ymd_opt(2026, 12, 10).unwrap();
        assert_eq!(
            resume_window(later, 1, None, &point),
            Window::new(day(20), later)
        );
        // A source that never succeeded starts at backfill_from.
        let fresh = store.resume_point("nobody").unwrap();
        assert_eq!(
            resume_window(today, 0, Some(day(1)), &fresh),
            Window::new(day(1), today)
        );
    }

    #[test]
    fn uncovered_days_outside_the_window_are_ignored_with_a_warning() {
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let window = Window::new(day(10), day(20));
        let mut warnings = Vec::new();
        let kept = Engine::accept_uncovered(
            window,
            &[
                Window::new(day(15), day(16)),
                Window::new(day(8), day(10)),
                Window::new(day(17), day(17)),
                Window::new(day(19), day(25)),
                Window::new(day(1), day(2)),
                Window::new(day(14), day(12)),
            ],
            &mut warnings,
        );
        // Clipped to the window, sorted, touching ranges merged.
        assert_eq!(
            kept,
            [(day(10), day(10)), (day(15), day(17)), (day(19), day(20))]
        );
        assert_eq!(warnings.len(), 4, "{warnings:#?}");
        assert!(
            warnings[0].contains("2026-11-08..2026-11-10")
                && warnings[0].contains("outside the requested window 2026-11-10..2026-11-20"),
            "{warnings:#?}"
        );
        assert!(
            warnings[3].contains("ends before it starts"),
            "{warnings:#?}"
        );
        // Nothing said, nothing to do.
        assert_eq!(Engine::accept_uncovered(window, &[], &mut warnings), []);
        assert_eq!(
            day_ranges(&kept),
            [
                "2026-11-10",
                "2026-11-15..2026-11-17",
                "2026-11-19..2026-11-20"
            ]
        );
    }

    #[test]
    fn transient_and_permanent_failures() {
        use ErrorKind::*;
        let transient = [
            (RunResult::Timeout, None),
            (RunResult::Crash, None),
            (RunResult::Error, Some(Upstream)),
            (RunResult::Error, Some(RateLimited)),
        ];
        for (result, kind) in transient {
            assert!(is_transient(result, kind), "{result:?} {kind:?}");
        }
        let permanent = [
            (RunResult::Success, None),
            (RunResult::Panic, None),
            // A protocol error: the plugin reported no kind.
            (RunResult::Error, None),
            (RunResult::Error, Some(Settings)),
            (RunResult::Error, Some(Auth)),
            (RunResult::Error, Some(Data)),
            (RunResult::Error, Some(Internal)),
            (RunResult::Error, Some(Unknown)),
        ];
        for (result, kind) in permanent {
            assert!(!is_transient(result, kind), "{result:?} {kind:?}");
        }
    }

    #[test]
    fn retry_delays_double_with_bounded_jitter() {
        let base = Duration::from_secs(5);
        let seed = jitter_seed("portal");
        for retry in 1..=6u32 {
            let nominal = 5.0 * f64::from(1u32 << (retry - 1));
            let d = retry_delay(base, retry, seed).as_secs_f64();
            assert!(
                d >= nominal * 0.8 && d < nominal * 1.2,
                "retry {retry}: {d} s"
            );
            // The same source waits the same on every run.
            assert_eq!(
                retry_delay(base, retry, seed),
                retry_delay(base, retry, seed)
            );
        }
        // Two sources failing together do not retry in step.
        let other = jitter_seed("wechat");
        assert_ne!(seed, other);
        assert_ne!(retry_delay(base, 1, seed), retry_delay(base, 1, other));
        // The jitter spreads: over many seeds, both halves of the band are used.
        let delays: Vec<f64> = (0..200)
            .map(|i| retry_delay(base, 1, jitter_seed(&format!("s{i}"))).as_secs_f64())
            .collect();
        assert!(delays.iter().any(|d| *d < 4.6), "{delays:?}");
        assert!(delays.iter().any(|d| *d > 5.4), "{delays:?}");
        // FNV-1a of the empty string is its offset basis.
        assert_eq!(jitter_seed(""), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn backoff_doubles_up_to_a_day() {
        let hour = Duration::from_secs(3600);
        assert_eq!(backoff_delay(hour, 1), 2 * hour);
        assert_eq!(backoff_delay(hour, 4), 16 * hour);
        assert_eq!(backoff_delay(hour, 5), MAX_BACKOFF);
        assert_eq!(backoff_delay(hour, 1000), MAX_BACKOFF);
        assert_eq!(
            backoff_delay(Duration::from_secs(60), 3),
            Duration::from_secs(480)
        );
    }

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_closes_on_success() {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 27, 4, 0, 0).unwrap();
        let hour = Duration::from_secs(3600);
        let at = |h: i64| t0 + chrono::Duration::hours(h);
        let mut b = Breaker::default();
        assert_eq!(b.record(false, at(0), hour, 3), None);
        assert_eq!(b.record(false, at(1), hour, 3), None);
        assert_eq!(b.backoff_until, None);
        assert!(!b.holds(at(1)));
        // The third failure opens it: two intervals.
        assert_eq!(b.record(false, at(2), hour, 3), Some(2 * hour));
        assert_eq!(b.backoff_until, Some(at(4)));
        assert!(b.holds(at(3)));
        assert!(!b.holds(at(4)));
        // Each further failure doubles it.
        assert_eq!(b.record(false, at(4), hour, 3), Some(4 * hour));
        assert_eq!(b.backoff_until, Some(at(8)));
        assert_eq!(b.consecutive_failures, 4);
        // A success (a manual run, say) closes it.
        assert_eq!(b.record(true, at(5), hour, 3), None);
        assert_eq!(b, Breaker::default());
        // breaker_after = 0: never opens.
        let mut never = Breaker::default();
        for h in 0..10 {
            assert_eq!(never.record(false, at(h), hour, 0), None);
        }
        assert_eq!(never.consecutive_failures, 10);
        assert!(!never.holds(at(10)));
    }
}
