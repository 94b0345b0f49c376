//! Putting the daemon together: configuration, plugins, store, engine, HTTP.
//! Shared by `tallyd run`, `tallyd demo`, `tallyd collect` and the tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigError};
use crate::domain::ErrorChain;
use crate::engine::{self, Engine};
use crate::http::{AppState, Live, LiveHandle, router};
use crate::metrics::Metrics;
use crate::plugin_host::{HostServices, PluginRegistry};
use crate::scheduler;
use crate::store::{DataDirLock, LockError, SqliteStore, StoreError};

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
) -> Result<HostServices, StartError> {
    let http = reqwest::Client::builder()
        .user_agent(concat!("tallyd/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| StartError::Http(e.to_string()))?;
    let secrets = config.secrets().clone();
    Ok(HostServices {
        http,
        runtime,
        clock,
        redact: Arc::new(move |s: &str| secrets.redact(s)),
        http_timeout: Duration::from_secs(30),
    })
}

/// Builds the engine for a loaded configuration: plugins, sources, store.
pub fn build_engine(mut config: Config, clock: Arc<dyn Clock>) -> Result<Arc<Engine>, StartError> {
    let tree = engine::unit_tree(&config)?;
    let registry = scan_plugins(&config);
    let services = host_services(
        &config,
        clock.clone(),
        tokio::runtime::Handle::try_current().ok(),
    )?;
    let created = engine::create_sources(&mut config, &registry, &services)?;
    let store = SqliteStore::open(&config.daemon.data_dir)?;
    Ok(Arc::new(Engine::new(
        Arc::new(config),
        Arc::new(tree),
        Arc::new(registry),
        created,
        Arc::new(store),
        clock,
        Arc::new(Metrics::new()),
    )))
}

/// A started daemon: the listener is bound, so the address is known.
pub struct Daemon {
    pub engine: Arc<Engine>,
    pub addr: SocketAddr,
    listener: tokio::net::TcpListener,
    /// Held until [`Daemon::serve`] returns: one daemon per store.
    lock: DataDirLock,
}

/// What a reload changed, by source id, each list sorted. `changed` sources
/// kept their id but some field of their configuration differs (any field:
/// `SourceConfig`'s `PartialEq` compares them all); `unchanged` ones kept
/// everything, their plugin instance included.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
}

/// A request to re-read the configuration file (SIGHUP or `POST /api/v1/reload`).
pub struct ReloadRequest {
    /// Where to say how it went; `None` when nobody waits (a signal).
    pub reply: Option<oneshot::Sender<Result<ReloadChanges, String>>>,
}

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
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Daemon {
    /// Locks `data_dir` (see [`DataDirLock`]), then starts on it.
    pub async fn start(config: Config) -> Result<Daemon, StartError> {
        let lock = DataDirLock::acquire(&config.daemon.data_dir)?;
        Daemon::start_locked(config, lock).await
    }

    /// Starts with the lock of `config`'s `data_dir` already taken (by
    /// `tallyd demo`, before it writes its forms there).
    pub async fn start_locked(config: Config, lock: DataDirLock) -> Result<Daemon, StartError> {
        let listen = config.daemon.listen;
        // Before anything writes a report: with the lock held, no other
        // daemon of this store is writing one now.
        for path in crate::reports::remove_stale_temp_files(&config.reports_dir()) {
            tracing::info!(path = %path.display(), "removed a report temporary file left by an interrupted write");
        }
        let engine = build_engine(config, Arc::new(SystemClock))?;
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

    /// Serves HTTP and runs the scheduler until SIGTERM/SIGINT (or `stop`).
    /// SIGHUP and `POST /api/v1/reload` re-read the configuration file: see
    /// [`reload`]. After a good reload the scheduler is restarted on the new
    /// engine at once, while the previous scheduler lets its running
    /// collections finish on the engine they started on.
    pub async fn serve(self, stop: impl std::future::Future<Output = ()> + Send + 'static) {
        let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(8);
        let mut engine = self.engine.clone();
        let mut scheduler = SchedulerTask::start(engine.clone());
        let live = LiveHandle::new(scheduler.live(&engine));
        let state = AppState::new(live.clone(), Some(reload_tx.clone()));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            stop.await;
            let _ = stop_tx.send(true);
        });
        tokio::spawn(forward_sighup(reload_tx));
        let refresher = tokio::spawn(keep_metrics_fresh(live.clone(), stop_rx.clone()));
        let mut http_stop = stop_rx.clone();
        let server = axum::serve(
            crate::http_guard::JsonParseErrors(self.listener),
            router(state),
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
        let mut main_stop = stop_rx;
        loop {
            tokio::select! {
                _ = main_stop.wait_for(|s| *s) => break,
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
        let _ = http.await;
        let _ = refresher.await;
        drop(self.lock);
        tracing::info!("tallyd stopped");
    }
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
/// [`Store::written_elsewhere`]: crate::store::Store::written_elsewhere
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
            scheduler::run(engine, commands, async move {
                let _ = stopped.await;
            })
            .await;
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
/// [`SourceConfig::same_instance`](crate::config::SourceConfig::same_instance)
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
    if config.daemon.listen != old.listen {
        return Err(ReloadError::NeedsRestart {
            file,
            key: "listen",
            old: old.listen.to_string(),
            new: config.daemon.listen.to_string(),
        });
    }
    let tree = engine::unit_tree(&config)?;
    let registry = current.plugins.rescan(&config.daemon.plugin_dirs);
    for refused in registry.refused() {
        tracing::warn!("plugin refused: {refused}");
    }
    let services = host_services(&config, current.clock.clone(), Some(runtime))?;
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
    .adopt_busy(current);
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

/// The directory of the running executable: where `tallyd demo` finds the
/// bundled plugins built beside it.
pub fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
}
