//! Putting the daemon together: configuration, plugins, store, engine, HTTP.
//! Shared by `tallyd run`, `tallyd demo`, `tallyd collect` and the tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigError};
use crate::engine::{self, Engine};
use crate::http::{AppState, router};
use crate::metrics::Metrics;
use crate::plugin_host::{HostServices, PluginRegistry};
use crate::scheduler;
use crate::store::{SqliteStore, StoreError};

/// Why the daemon could not start. User errors (exit 1) are told apart from
/// internal ones (exit 2) by the CLI.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
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
        matches!(self, StartError::Config(_) | StartError::Listen { .. })
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
pub fn build_engine(config: Config, clock: Arc<dyn Clock>) -> Result<Arc<Engine>, StartError> {
    let tree = engine::unit_tree(&config)?;
    let registry = scan_plugins(&config);
    let services = host_services(
        &config,
        clock.clone(),
        tokio::runtime::Handle::try_current().ok(),
    )?;
    let created = engine::create_sources(&config, &registry, &services)?;
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
}

impl Daemon {
    pub async fn start(config: Config) -> Result<Daemon, StartError> {
        let listen = config.daemon.listen;
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
        })
    }

    /// Serves HTTP and runs the scheduler until SIGTERM/SIGINT (or `stop`).
    pub async fn serve(self, stop: impl std::future::Future<Output = ()> + Send + 'static) {
        let (handle, commands) = scheduler::channel();
        let state = AppState {
            engine: self.engine.clone(),
            scheduler: handle,
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            stop.await;
            let _ = stop_tx.send(true);
        });
        let mut http_stop = stop_rx.clone();
        let server = axum::serve(self.listener, router(state)).with_graceful_shutdown(async move {
            let _ = http_stop.wait_for(|s| *s).await;
        });
        let http = tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        tracing::info!(
            listen = %self.addr,
            sources = self.engine.sources().len(),
            plugins = self.engine.plugins.plugins().count(),
            "tallyd started"
        );
        let mut sched_stop = stop_rx;
        scheduler::run(self.engine.clone(), commands, async move {
            let _ = sched_stop.wait_for(|s| *s).await;
        })
        .await;
        let _ = http.await;
        tracing::info!("tallyd stopped");
    }
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
