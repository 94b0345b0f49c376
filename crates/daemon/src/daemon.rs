//! Putting the daemon together: configuration, plugins, store, engine, HTTP.
//! Shared by `tallyd run`, `tallyd collect`, `tally-demo` and the tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::engine::{self, Engine, Replica};
use crate::http::{AppState, Live, LiveHandle, router};
use crate::metrics::Metrics;
use crate::scheduler;
use tally_config::{Config, ConfigError};
use tally_domain::ErrorChain;
use tally_domain::clock::{Clock, SystemClock};
use tally_host::{HostServices, HttpGate, PluginRegistry};
use tally_store::{DataDirLock, LockError, PostgresStore, SqliteStore, Store, StoreError};

/// Why the daemon could not start. User errors (exit 1) are told apart from
/// internal ones (exit 2) by the CLI.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Locked(#[from] LockError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

impl StartError {
    /// True when the operator can fix it in the configuration or environment.
    pub fn is_user_error(&self) -> bool {
        match self {
            StartError::Config(_) | StartError::Listen { .. } => true,
            StartError::Locked(e) => e.is_user_error(),
            _ => false,
        }
    }
}

/// The plugin registry for a configuration, with refused libraries logged.
pub fn scan_plugins(config: &Config) -> PluginRegistry {
    let registry = PluginRegistry::scan(&config.daemon.plugin_dirs);
    for refused in registry.refused() {
        tracing::warn!("plugin refused: {refused}");
    }
    registry
}

/// Host services for plugins, with the daemon's HTTP client.
pub fn host_services(
    config: &Config,
    clock: Arc<dyn Clock>,
    runtime: Option<tokio::runtime::Handle>,
    gate: Arc<HttpGate>,
) -> Result<HostServices, StartError> {
    let http = tally_host::http_agent(Duration::from_secs(10), Duration::from_secs(90));
    let secrets = config.secrets().clone();
    Ok(HostServices {
        http,
        runtime,
        clock,
        redact: Arc::new(move |s: &str| secrets.redact(s)),
        http_timeout: Duration::from_secs(30),
        gate,
    })
}

/// Builds the engine for a loaded configuration: plugins, sources, store.
pub fn build_engine(config: Config, clock: Arc<dyn Clock>) -> Result<Arc<Engine>, StartError> {
    assemble_engine(config, clock, None, None, None)
}

/// [`build_engine`] on a store already open: `tallyd store copy` compares
/// the summaries of two.
pub fn build_engine_on(
    config: Config,
    clock: Arc<dyn Clock>,
    store: Arc<dyn Store>,
) -> Result<Arc<Engine>, StartError> {
    assemble_engine(config, clock, None, Some(store), None)
}

/// [`build_engine`] with the plugin registry and the store given, or
/// scanned from `plugin_dirs` and opened in `data_dir` when `None`.
fn assemble_engine(
    mut config: Config,
    clock: Arc<dyn Clock>,
    registry: Option<PluginRegistry>,
    store: Option<Arc<dyn Store>>,
    replica: Option<Arc<Replica>>,
) -> Result<Arc<Engine>, StartError> {
    let tree = config.unit_tree()?;
    let registry = registry.unwrap_or_else(|| scan_plugins(&config));
    let gate = Arc::new(HttpGate::new(
        config.daemon.http_per_host_concurrency,
        config.daemon.http_per_host_rate,
    ));
    let services = host_services(
        &config,
        clock.clone(),
        tokio::runtime::Handle::try_current().ok(),
        gate.clone(),
    )?;
    let created = engine::create_sources(&mut config, &registry, &services)?;
    let store = match store {
        Some(store) => store,
        None => open_store(&config)?,
    };
    Ok(Arc::new(
        Engine::new(
            Arc::new(config),
            Arc::new(tree),
            Arc::new(registry),
            created,
            store,
            clock,
            Arc::new(Metrics::new()),
        )
        .with_http_gate(gate)
        .with_replica(replica),
    ))
}

/// The store the configuration names: the PostgreSQL database of `[store]
/// url`, else the SQLite store of `data_dir`.
pub fn open_store(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    Ok(open_daemon_store(config)?.0)
}

/// The store of `tallyd run` and, on PostgreSQL, the daemon as a replica.
pub type DaemonStore = (Arc<dyn Store>, Option<Arc<Replica>>);

/// [`open_store`] for `tallyd run`, and on PostgreSQL this daemon as one
/// of the replicas sharing the database ([`crate::claims`]); a SQLite
/// daemon schedules on its own (its `data_dir` lock keeps it alone).
pub fn open_daemon_store(config: &Config) -> Result<DaemonStore, StoreError> {
    Ok(match &config.store {
        Some(store) => {
            let postgres = Arc::new(PostgresStore::open(store.url.expose())?);
            let replica = Replica::new(
                postgres.clone() as Arc<dyn tally_store::Coordination>,
                store.lease,
            );
            (postgres as Arc<dyn Store>, Some(Arc::new(replica)))
        }
        None => (Arc::new(SqliteStore::open(&config.daemon.data_dir)?), None),
    })
}

/// Puts a daemon together from a configuration and the parts a caller may
/// want to choose: the clock, the store, the plugins, the data directory's
/// lock. What is not given is what `tallyd run` uses: the system clock, the
/// store the configuration names (see [`open_store`]), the libraries of `plugin_dirs`, a lock taken
/// on `data_dir`. [`DaemonBuilder::build`] binds the listener of
/// `daemon.listen`; [`DaemonBuilder::in_process`] binds nothing and hands
/// out the router instead, for tests that drive the daemon without a socket
/// (on tokio's paused clock with a [`TokioClock`](crate::clock::TokioClock)).
///
/// ```no_run
/// # async fn demo(config: tally_config::Config) -> Result<(), tally_daemon::daemon::StartError> {
/// use std::sync::Arc;
/// use tally_domain::clock::SystemClock;
/// use tally_daemon::daemon::Daemon;
///
/// let daemon = Daemon::builder(config).clock(Arc::new(SystemClock)).build().await?;
/// daemon.serve(tally_daemon::daemon::shutdown_signal()).await;
/// # Ok(()) }
/// ```
pub struct DaemonBuilder {
    config: Config,
    clock: Arc<dyn Clock>,
    plugins: Option<PluginRegistry>,
    store: Option<Arc<dyn Store>>,
    lock: Option<DataDirLock>,
}

impl DaemonBuilder {
    /// The clock of scheduling, windows and run records (and of the plugins'
    /// `host.now()`).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> DaemonBuilder {
        self.clock = clock;
        self
    }

    /// The store, instead of the one the configuration names.
    pub fn store(mut self, store: Arc<dyn Store>) -> DaemonBuilder {
        self.store = Some(store);
        self
    }

    /// The plugins, instead of a scan of `plugin_dirs`. A reload still scans
    /// `plugin_dirs` for libraries added since and keeps these.
    pub fn plugins(mut self, plugins: PluginRegistry) -> DaemonBuilder {
        self.plugins = Some(plugins);
        self
    }

    /// The lock of `data_dir`, already taken (by `tally-demo`, before it
    /// writes its forms there), instead of taking it.
    pub fn lock(mut self, lock: DataDirLock) -> DaemonBuilder {
        self.lock = Some(lock);
        self
    }

    /// Locks `data_dir` and builds the engine: everything but the listener.
    fn prepare(self) -> Result<(Arc<Engine>, DataDirLock), StartError> {
        let lock = match self.lock {
            Some(lock) => lock,
            None => DataDirLock::acquire(&self.config.daemon.data_dir)?,
        };
        // Before anything writes a report: with the lock held, no other
        // daemon of this store is writing one now.
        for path in crate::reports::remove_stale_temp_files(&self.config.reports_dir()) {
            tracing::info!(path = %path.display(), "removed a report temporary file left by an interrupted write");
        }
        let (store, replica) = match self.store {
            Some(store) => (store, None),
            None => open_daemon_store(&self.config)?,
        };
        let engine = assemble_engine(self.config, self.clock, self.plugins, Some(store), replica)?;
        Ok((engine, lock))
    }

    /// Builds the daemon and binds `daemon.listen`; [`Daemon::serve`] runs it.
    pub async fn build(self) -> Result<Daemon, StartError> {
        let listen = self.config.daemon.listen;
        let (engine, lock) = self.prepare()?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: listen,
            source,
        })?;
        engine.refresh_metrics().await;
        Ok(Daemon {
            engine,
            addr,
            listener,
            lock,
        })
    }

    /// Builds the daemon and starts it without a listener: the scheduler,
    /// the `/metrics` rebuilds and reloads run as under [`Daemon::serve`]
    /// (SIGHUP aside: signals are the process's), and
    /// [`InProcessDaemon::router`] answers the HTTP API.
    pub async fn in_process(self) -> Result<InProcessDaemon, StartError> {
        let (engine, lock) = self.prepare()?;
        engine.refresh_metrics().await;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let running = Running::start(engine);
        let state = running.state.clone();
        let live = running.live.clone();
        let task = tokio::spawn(async move {
            running.supervise(stopped).await;
            drop(lock);
        });
        Ok(InProcessDaemon {
            state,
            live,
            stop,
            task,
        })
    }
}

/// A daemon running in this process without a listener (see
/// [`DaemonBuilder::in_process`]); it stops when [`InProcessDaemon::stop`]
/// is awaited, and at the latest with its runtime.
pub struct InProcessDaemon {
    state: AppState,
    live: LiveHandle,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl InProcessDaemon {
    /// The HTTP API, the very router [`Daemon::serve`] serves; drive it with
    /// `tower::ServiceExt::oneshot`.
    pub fn router(&self) -> axum::Router {
        router(self.state.clone())
    }

    /// The engine being served now (a reload replaces it).
    pub fn engine(&self) -> Arc<Engine> {
        self.live.get().engine
    }

    /// Asks the scheduler to run a source now and waits for the run.
    pub async fn run_now(&self, source: &str) -> Result<engine::RunReport, engine::RunError> {
        let scheduler = self.live.get().scheduler;
        scheduler.run_now(source).await
    }

    /// Stops scheduling and waits for running collections, as a SIGTERM
    /// does to `tallyd run`.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// A started daemon: the listener is bound, so the address is known.
pub struct Daemon {
    pub engine: Arc<Engine>,
    pub addr: SocketAddr,
    listener: tokio::net::TcpListener,
    /// Held until [`Daemon::serve`] returns: one daemon per store.
    lock: DataDirLock,
}

pub use crate::http::{ReloadChanges, ReloadRequest};

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "{file}: daemon.{key} changed from {old} to {new}; this takes a restart of tallyd, not a reload"
    )]
    NeedsRestart {
        file: String,
        key: &'static str,
        old: String,
        new: String,
    },
    #[error("{file}: [store] changed; this takes a restart of tallyd, not a reload")]
    StoreChanged { file: String },
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Daemon {
    /// A [`DaemonBuilder`] for `config`, with what `tallyd run` uses unless
    /// told otherwise.
    pub fn builder(config: Config) -> DaemonBuilder {
        DaemonBuilder {
            config,
            clock: Arc::new(SystemClock),
            plugins: None,
            store: None,
            lock: None,
        }
    }

    /// Locks `data_dir` (see [`DataDirLock`]), then starts on it.
    pub async fn start(config: Config) -> Result<Daemon, StartError> {
        Daemon::builder(config).build().await
    }

    /// Starts with the lock of `config`'s `data_dir` already taken (by
    /// `tally-demo`, before it writes its forms there).
    pub async fn start_locked(config: Config, lock: DataDirLock) -> Result<Daemon, StartError> {
        Daemon::builder(config).lock(lock).build().await
    }

    /// Serves HTTP and runs the scheduler until SIGTERM/SIGINT (or `stop`).
    /// SIGHUP and `POST /api/v1/reload` re-read the configuration file: see
    /// [`reload`]. After a good reload the scheduler is restarted on the new
    /// engine at once, while the previous scheduler lets its running
    /// collections finish on the engine they started on.
    pub async fn serve(self, stop: impl std::future::Future<Output = ()> + Send + 'static) {
        let running = Running::start(self.engine.clone());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            stop.await;
            let _ = stop_tx.send(true);
        });
        tokio::spawn(forward_sighup(running.reload_tx.clone()));
        let mut http_stop = stop_rx.clone();
        let server = axum::serve(
            crate::http_guard::JsonParseErrors(self.listener),
            router(running.state.clone()),
        )
        .with_graceful_shutdown(async move {
            let _ = http_stop.wait_for(|s| *s).await;
        });
        let http = tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %ErrorChain(&e), "HTTP server failed");
            }
        });
        tracing::info!(
            listen = %self.addr,
            sources = self.engine.sources().len(),
            plugins = self.engine.plugins.plugins().count(),
            "tallyd started"
        );
        running.supervise(stop_rx).await;
        let _ = http.await;
        drop(self.lock);
        tracing::info!("tallyd stopped");
    }
}

/// What a daemon runs besides its listener: the scheduler, the `/metrics`
/// rebuilds, and the reloads that swap the engine under both.
struct Running {
    engine: Arc<Engine>,
    scheduler: SchedulerTask,
    live: LiveHandle,
    state: AppState,
    reload_tx: mpsc::Sender<ReloadRequest>,
    reload_rx: mpsc::Receiver<ReloadRequest>,
}

impl Running {
    fn start(engine: Arc<Engine>) -> Running {
        let (reload_tx, reload_rx) = mpsc::channel::<ReloadRequest>(8);
        let scheduler = SchedulerTask::start(engine.clone());
        let live = LiveHandle::new(scheduler.live(&engine));
        let state = AppState::new(live.clone(), Some(reload_tx.clone()));
        Running {
            engine,
            scheduler,
            live,
            state,
            reload_tx,
            reload_rx,
        }
    }

    /// Serves reload requests until `stop` turns true, then stops the
    /// scheduler (letting its running collections finish) and the rebuilds.
    async fn supervise(self, stop: tokio::sync::watch::Receiver<bool>) {
        let Running {
            mut engine,
            mut scheduler,
            live,
            state,
            reload_tx,
            mut reload_rx,
        } = self;
        // Requests come through the router's state and SIGHUP's sender.
        drop((state, reload_tx));
        let refresher = tokio::spawn(keep_metrics_fresh(live.clone(), stop.clone()));
        let mut main_stop = stop;
        loop {
            tokio::select! {
                _ = stopped(&mut main_stop) => break,
                Some(request) = reload_rx.recv() => {
                    let outcome = match reload(&engine).await {
                        Ok((next, changes)) => {
                            tracing::info!(
                                added = %changes.added.join(","),
                                removed = %changes.removed.join(","),
                                changed = %changes.changed.join(","),
                                unchanged = changes.unchanged.len(),
                                "configuration reloaded"
                            );
                            let previous = std::mem::replace(&mut scheduler, SchedulerTask::start(next.clone()));
                            live.set(scheduler.live(&next));
                            // The old scheduler stops scheduling now; its running
                            // collections finish in the background.
                            tokio::spawn(previous.stop());
                            engine = next;
                            engine.refresh_metrics().await;
                            Ok(changes)
                        }
                        Err(e) => {
                            let reason = engine.config.secrets().redact(&ErrorChain(&e).to_string());
                            tracing::error!(
                                error = %reason,
                                "configuration reload rejected; the running configuration stays"
                            );
                            Err(reason)
                        }
                    };
                    if let Some(reply) = request.reply {
                        let _ = reply.send(outcome);
                    }
                }
            }
        }
        scheduler.stop().await;
        let _ = refresher.await;
    }
}

/// Resolves once `stop` reads true (without holding its guard, so that the
/// future stays `Send`).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The shortest time between two background rebuilds of `/metrics`: with
/// thousands of sources finishing runs every second, a burst of changes
/// costs one rebuild a second, and a scheduled run shows in `/metrics` at
/// most about this long (plus one rebuild) after it finished.
pub const METRICS_REBUILD_GAP: Duration = Duration::from_secs(1);

/// Rebuilds take at most one part in this of a core: after a rebuild that
/// took longer than a tenth of [`METRICS_REBUILD_GAP`] (a store slow to
/// roll up, say), the next waits ten times as long as it took.
const METRICS_REBUILD_SHARE: u32 = 10;

/// How often the background rebuild looks, without being woken, at the
/// calendar (so that the `day`, `month`, ... windows move on at midnight
/// even when no run writes anything) and at the store (so that what a
/// `tallyd collect` beside the daemon wrote shows in `/metrics`: one
/// `PRAGMA data_version`, see [`Store::written_elsewhere`]).
///
/// [`Store::written_elsewhere`]: tally_store::Store::written_elsewhere
pub const METRICS_OUTSIDE_CHECK: Duration = Duration::from_secs(2);

/// Rebuilds `/metrics` in the background whenever something changed (see
/// [`crate::metrics`]), on the engine being served, until `stop`. A first
/// change after a quiet spell is rebuilt at once; further ones wait for
/// [`METRICS_REBUILD_GAP`] since the last rebuild began, so bursts coalesce.
pub async fn keep_metrics_fresh(live: LiveHandle, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut next_allowed: Option<tokio::time::Instant> = None;
    let mut day = live.get().engine.today();
    loop {
        let engine = live.get().engine;
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = engine.metrics.changed() => {}
            _ = tokio::time::sleep(METRICS_OUTSIDE_CHECK) => {}
        }
        if let Some(at) = next_allowed {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep_until(at) => {}
            }
        }
        // The engine may have been replaced by a reload meanwhile.
        let engine = live.get().engine;
        let today = engine.today();
        if today != day {
            day = today;
            engine.metrics.values_changed();
        }
        let store = engine.store.clone();
        match tokio::task::spawn_blocking(move || store.written_elsewhere()).await {
            Ok(Ok(true)) => {
                tracing::info!(
                    "the store was written by another process (tallyd collect?): rebuilding /metrics"
                );
                engine.metrics.values_changed();
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %ErrorChain(&e), "cannot tell whether another process wrote the store")
            }
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "cannot tell whether another process wrote the store")
            }
        }
        let started = tokio::time::Instant::now();
        engine.refresh_metrics_if_changed().await;
        let took = started.elapsed();
        next_allowed = Some(started + METRICS_REBUILD_GAP.max(took * METRICS_REBUILD_SHARE));
    }
}

/// One running scheduler and what `/readyz` needs to know about it.
struct SchedulerTask {
    handle: scheduler::SchedulerHandle,
    running: Arc<AtomicBool>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl SchedulerTask {
    fn start(engine: Arc<Engine>) -> SchedulerTask {
        let (handle, commands) = scheduler::channel();
        let running = Arc::new(AtomicBool::new(true));
        let (stop, stopped) = oneshot::channel::<()>();
        let flag = running.clone();
        let task = tokio::spawn(async move {
            let stopped = async move {
                let _ = stopped.await;
            };
            // Replicas claim their ticks through the shared database.
            match engine.replica.clone() {
                Some(replica) => crate::claims::run(engine, replica, commands, stopped).await,
                None => scheduler::run(engine, commands, stopped).await,
            }
            flag.store(false, Ordering::SeqCst);
        });
        SchedulerTask {
            handle,
            running,
            stop,
            task,
        }
    }

    fn live(&self, engine: &Arc<Engine>) -> Live {
        Live {
            engine: engine.clone(),
            scheduler: self.handle.clone(),
            scheduler_running: self.running.clone(),
        }
    }

    /// Stops scheduling and waits for running collections (each bounded by
    /// its timeout, see `scheduler::run`).
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Turns SIGHUP into reload requests.
async fn forward_sighup(tx: mpsc::Sender<ReloadRequest>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload with POST /api/v1/reload");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            if tx.send(ReloadRequest { reply: None }).await.is_err() {
                return;
            }
        }
    }
    #[cfg(not(unix))]
    drop(tx);
}

/// Re-reads the configuration file of `current` and builds the engine it
/// describes, or says why not; nothing of `current` changes either way.
///
/// Everything `tallyd check` validates is validated again (syntax, units,
/// plugins, settings through each plugin, emitted indicators). Plugin
/// libraries found since are loaded; libraries are never unloaded, and one
/// already loaded from the same file is reused. A source for which
/// [`SourceConfig::same_instance`](tally_config::SourceConfig::same_instance)
/// holds keeps its plugin instance (and the plugin's in-memory caches) and
/// its busy guard. The store, the clock
/// and the metrics registry carry over, so counters continue.
pub async fn reload(current: &Arc<Engine>) -> Result<(Arc<Engine>, ReloadChanges), ReloadError> {
    let current = current.clone();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || reload_blocking(&current, runtime))
        .await
        .map_err(|e| ReloadError::Internal(e.to_string()))?
}

fn reload_blocking(
    current: &Arc<Engine>,
    runtime: tokio::runtime::Handle,
) -> Result<(Arc<Engine>, ReloadChanges), ReloadError> {
    let path = current.config.path.clone();
    let mut config = Config::load(&path)?;
    let old = &current.config.daemon;
    let file = path.display().to_string();
    if config.daemon.data_dir != old.data_dir {
        return Err(ReloadError::NeedsRestart {
            file,
            key: "data_dir",
            old: old.data_dir.display().to_string(),
            new: config.daemon.data_dir.display().to_string(),
        });
    }
    if config.store != current.config.store {
        return Err(ReloadError::StoreChanged { file });
    }
    if config.daemon.listen != old.listen {
        return Err(ReloadError::NeedsRestart {
            file,
            key: "listen",
            old: old.listen.to_string(),
            new: config.daemon.listen.to_string(),
        });
    }
    let tree = config.unit_tree()?;
    let registry = current.plugins.rescan(&config.daemon.plugin_dirs);
    for refused in registry.refused() {
        tracing::warn!("plugin refused: {refused}");
    }
    let services = host_services(
        &config,
        current.clock.clone(),
        Some(runtime),
        current.http_gate.clone(),
    )?;
    let created = engine::create_sources_reusing(&mut config, &registry, &services, Some(current))?;
    let next = Engine::new(
        Arc::new(config),
        Arc::new(tree),
        Arc::new(registry),
        created,
        current.store.clone(),
        current.clock.clone(),
        current.metrics.clone(),
    )
    .with_http_gate(current.http_gate.clone())
    .with_replica(current.replica.clone())
    .adopt_busy(current);
    // Only now that the new configuration is accepted: a refused reload
    // leaves the running limits as they were.
    next.http_gate.configure(
        next.config.daemon.http_per_host_concurrency,
        next.config.daemon.http_per_host_rate,
    );
    let changes = changes(current, &next);
    for id in &changes.removed {
        if let Some(source) = current.source(id) {
            current.metrics.forget_source(id, source.plugin());
        }
    }
    Ok((Arc::new(next), changes))
}

/// Sorts the sources of two engines into added, removed, changed, unchanged.
fn changes(old: &Engine, new: &Engine) -> ReloadChanges {
    let mut out = ReloadChanges::default();
    for source in new.sources() {
        match old.source(source.id()) {
            None => out.added.push(source.id().to_owned()),
            Some(before) if before.config == source.config => {
                out.unchanged.push(source.id().to_owned())
            }
            Some(_) => out.changed.push(source.id().to_owned()),
        }
    }
    for source in old.sources() {
        if new.source(source.id()).is_none() {
            out.removed.push(source.id().to_owned());
        }
    }
    for list in [
        &mut out.added,
        &mut out.removed,
        &mut out.changed,
        &mut out.unchanged,
    ] {
        list.sort();
    }
    out
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: letting running collections finish");
}

/// The directory of the running executable: where `tally-demo` finds the
/// bundled plugins built beside it.
pub fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
}
