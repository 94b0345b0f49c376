//! The daemon in this process, on tokio's paused clock: built with
//! [`Daemon::builder`], a [`TokioClock`] and the `scripted` plugin linked
//! into the test binary; driven through its router without a socket.
//! Virtual time passes only when every task waits (a plugin call or a store
//! write holds it), so what a test sees at a time is what the daemon did up
//! to then, and minutes of schedule take milliseconds.

mod narrative_page;
mod pages;
mod pages_actions;
mod pages_downloads;
mod plugin;
mod reload;
mod router;
mod scheduling;
mod upload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use tower::ServiceExt;

use crate::clock::TokioClock;
use crate::daemon::{Daemon, InProcessDaemon};
use tally_config::Config;

pub const TOKEN: &str = "inproc-token";

/// 08:00:00 UTC: schedules of whole seconds fire on it.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap()
}

/// A `scripted` source; `keys` are more lines of its table.
pub fn source(id: &str, schedule: &str, keys: &str, script: &str) -> String {
    format!(
        "\n[[sources]]\nid = \"{id}\"\nplugin = \"scripted\"\nunit = \"county\"\n\
         schedule = \"{schedule}\"\n{keys}\n[sources.settings]\nscript = \"{script}\"\n"
    )
}

/// A configuration file in a temporary directory, with its data directory.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub fn new(sources: &str) -> Setup {
        let setup = Setup {
            dir: tempfile::tempdir().unwrap(),
        };
        setup.write(sources);
        setup
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("tally.toml")
    }

    /// Rewrites the configuration file with these sources.
    pub fn write(&self, sources: &str) {
        self.write_text(&config_text(self.dir.path(), Some(TOKEN), sources));
    }

    pub fn write_text(&self, text: &str) {
        std::fs::write(self.path(), text).unwrap();
    }

    /// Starts a daemon on the file, its clock reading `at` now.
    pub async fn start_at(&self, at: DateTime<Utc>) -> InProcessDaemon {
        let config = Config::load(&self.path()).unwrap();
        Daemon::builder(config)
            .clock(Arc::new(TokioClock::new(at)))
            .plugins(plugin::registry())
            .in_process()
            .await
            .unwrap()
    }

    pub async fn start(&self) -> InProcessDaemon {
        self.start_at(t0()).await
    }
}

pub fn config_text(dir: &Path, token: Option<&str>, sources: &str) -> String {
    let token = token
        .map(|t| format!("api_token = \"{t}\"\n"))
        .unwrap_or_default();
    format!(
        r#"
[daemon]
listen = "127.0.0.1:9"
timezone = "UTC"
data_dir = "{data}"
plugin_dirs = []
{token}
[[units]]
id = "county"
name = "某县"

[[indicators]]
id = "x"
name = "计数"
kind = "count"
unit = "次"
{sources}"#,
        data = dir.join("data").display(),
    )
}

/// Virtual time since the daemon's clock read `t0()`: make it just before
/// starting the daemon (no time passes until the test waits).
pub struct Timeline(tokio::time::Instant);

impl Timeline {
    pub fn new() -> Timeline {
        Timeline(tokio::time::Instant::now())
    }

    /// Lets virtual time reach `t0() + secs`: every timer before then fires,
    /// and what it started finishes, before this returns.
    pub async fn at(&self, secs: f64) {
        tokio::time::sleep_until(self.0 + Duration::from_secs_f64(secs)).await;
    }
}

/// A request through the router; the answer's status and body (JSON when it
/// parses, else a string).
pub async fn call(
    d: &InProcessDaemon,
    method: &str,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(d, request.body(Body::empty()).unwrap()).await
}

pub async fn send(d: &InProcessDaemon, request: Request<Body>) -> (StatusCode, Value) {
    let response = d.router().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// `/api/v1/sources`, by id.
pub async fn sources(d: &InProcessDaemon) -> Vec<Value> {
    let (status, body) = call(d, "GET", "/api/v1/sources", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["sources"].as_array().unwrap().clone()
}

pub async fn source_json(d: &InProcessDaemon, id: &str) -> Value {
    sources(d)
        .await
        .into_iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no source {id}"))
}

/// Seconds since `t0()` of each time.
pub fn offsets(times: &[DateTime<Utc>]) -> Vec<f64> {
    times
        .iter()
        .map(|t| (*t - t0()).to_std().unwrap_or(Duration::ZERO).as_secs_f64())
        .collect()
}
