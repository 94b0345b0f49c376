//! The HTTP API of the README: metrics, summary, catalogue, sources, runs,
//! health and reload.
//!
//! Limits, so that a stranger on the network cannot tie the daemon up: a
//! request body may have at most [`MAX_BODY_BYTES`] (413 beyond), a read
//! endpoint answers within [`REQUEST_TIMEOUT`] (408 beyond), and hyper's own
//! defaults bound the request head (at most 100 headers, about 400 KiB of
//! head buffer; more closes the connection with 431). Every error, including
//! those of the layers, of axum's extractors and hyper's own 400, 414 and 431
//! (see `http_guard`), answers JSON `{"error": "..."}`. Only requests whose
//! `Host` the daemon serves (`daemon.hosts`, loopback names on a loopback
//! listen) are answered (421 otherwise), against DNS rebinding.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::engine::{Engine, RunError, humanize};
use crate::narrative::Narrative;
use crate::reports::{Format, ReportWriter};
use crate::scheduler::SchedulerHandle;
use crate::summary::{self, SummaryError, SummaryRequest};
use tally_domain::ErrorChain;
use tally_domain::period::Period;

/// The largest request body accepted. No endpoint reads a body today; the
/// limit is what a future one gets by default, and what stops a client from
/// streaming an endless body at a write endpoint.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a read endpoint may take. Write endpoints are exempt: a manual
/// run answers when the run is over, which its source's `timeout` bounds, and
/// a reload when every plugin has validated its settings.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the API serves from: the engine and the scheduler running it. Swapped
/// whole by a reload; a request works with the one it started with.
#[derive(Clone)]
pub struct Live {
    pub engine: Arc<Engine>,
    pub scheduler: SchedulerHandle,
    /// False once the scheduler's event loop has ended.
    pub scheduler_running: Arc<AtomicBool>,
}

/// The swappable [`Live`]: the daemon replaces it after a reload.
#[derive(Clone)]
pub struct LiveHandle(Arc<RwLock<Live>>);

impl LiveHandle {
    pub fn new(live: Live) -> LiveHandle {
        LiveHandle(Arc::new(RwLock::new(live)))
    }

    pub fn get(&self) -> Live {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn set(&self, live: Live) {
        *self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = live;
    }
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

/// A request to re-read the configuration file (SIGHUP or `POST /api/v1/reload`),
/// which the daemon's supervise loop answers: defined here, where the API
/// sends it, so that the API does not import the daemon that serves it.
pub struct ReloadRequest {
    /// Where to say how it went; `None` when nobody waits (a signal).
    pub reply: Option<oneshot::Sender<Result<ReloadChanges, String>>>,
}

#[derive(Clone)]
pub struct AppState {
    live: LiveHandle,
    /// Where `POST /api/v1/reload` sends its request; `None` where nothing
    /// can reload (then the endpoint answers 409).
    reload: Option<mpsc::Sender<ReloadRequest>>,
    /// The pages' login sessions: here, so that every router built on this
    /// state (a test builds one per request) shares them.
    sessions: Arc<crate::pages::session::Sessions>,
}

impl AppState {
    pub fn new(live: LiveHandle, reload: Option<mpsc::Sender<ReloadRequest>>) -> AppState {
        AppState {
            live,
            reload,
            sessions: Arc::default(),
        }
    }

    fn engine(&self) -> Arc<Engine> {
        self.live.get().engine
    }
}

pub fn router(state: AppState) -> Router {
    let reads = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/summary", get(summary))
        .route("/api/v1/observations", get(observations))
        .route("/api/v1/units", get(units))
        .route("/api/v1/indicators", get(indicators))
        .route("/api/v1/sources", get(sources))
        .route("/api/v1/reports", get(reports))
        .merge(crate::pages::router(pages_state(&state)))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ));
    let writes = Router::new()
        .route("/api/v1/sources/{id}/run", post(run_source))
        .route("/api/v1/reload", post(reload));
    let live = state.live.clone();
    reads
        .merge(writes)
        .fallback(not_found)
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        // Uploads have their own, larger limit and no read timeout.
        .merge(crate::pages::upload::router(pages_state(&state)))
        .layer(middleware::map_response(json_errors))
        .layer(middleware::from_fn(move |req, next| {
            // The configuration of the moment: a reload may change `hosts`.
            let daemon = &live.get().engine.config.daemon;
            crate::http_guard::served_host(
                daemon.listen.ip().is_loopback(),
                daemon.hosts.clone(),
                req,
                next,
            )
        }))
        .with_state(state)
}

/// The clerks' pages read the engine of the moment, as the API does.
fn pages_state(state: &AppState) -> crate::pages::PagesState {
    let live = state.live.clone();
    let scheduler = state.live.clone();
    crate::pages::PagesState {
        engine: Arc::new(move || live.get().engine),
        scheduler: Arc::new(move || scheduler.get().scheduler),
        sessions: state.sessions.clone(),
    }
}

/// Makes every error answer JSON (but the pages' own, which are pages), also those written by the layers (413,
/// 408) and by axum itself (405, extractor rejections as plain text).
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("request body too large: at most {MAX_BODY_BYTES} bytes")
        }
        StatusCode::REQUEST_TIMEOUT => format!(
            "request took longer than {}; try a smaller period or unit",
            humanize(REQUEST_TIMEOUT)
        ),
        StatusCode::METHOD_NOT_ALLOWED => {
            "method not allowed; write endpoints take POST, the others GET".to_owned()
        }
        _ => {
            let (_, body) = response.into_parts();
            let text = axum::body::to_bytes(body, 4096)
                .await
                .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
                .unwrap_or_default();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_lowercase()
            } else {
                text
            }
        }
    };
    (status, Json(json!({ "error": message }))).into_response()
}

/// Client mistakes answer 4xx with a message and are not logged as errors;
/// internal errors answer a generic 500 and are logged once.
#[derive(Debug)]
pub enum AppError {
    BadRequest(String),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    Unavailable(String),
    Internal(String),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            AppError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            AppError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m),
            AppError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            AppError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            AppError::Conflict(m) => (StatusCode::CONFLICT, m),
            AppError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
            AppError::Internal(m) => {
                tracing::error!(error = %m, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the tallyd log".to_owned(),
                )
            }
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

/// A browser's `GET` of a path outside the API (it accepts `text/html`)
/// gets the pages' 404 page; everything else the JSON error.
async fn not_found(
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let wants_page = matches!(method, axum::http::Method::GET | axum::http::Method::HEAD)
        && !uri.path().starts_with("/api/")
        && headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("text/html"));
    if wants_page {
        return crate::pages::not_found();
    }
    AppError::NotFound(
        "no such endpoint; see the pages /, /sources and /api/v1/summary, /api/v1/units, /api/v1/indicators, /api/v1/sources, /api/v1/reports, /metrics, /healthz, /readyz".to_owned(),
    )
    .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: the store takes a write now, the scheduler runs, every enabled
/// source has a next scheduled run, and no source's last run failed to be
/// stored. 503 with the reasons otherwise.
async fn readyz(State(state): State<AppState>) -> Response {
    let live = state.live.get();
    let engine = live.engine.clone();
    let mut reasons = Vec::new();
    if !live.scheduler_running.load(Ordering::SeqCst) {
        reasons.push("the scheduler is not running".to_owned());
    }
    let now = engine.clock.now();
    let mut scheduled = 0;
    for source in engine.sources() {
        if engine.next_fire(source, now).is_some() {
            scheduled += 1;
        } else {
            reasons.push(format!(
                "source \"{}\" has no next run: its schedule \"{}\" never fires again",
                source.id(),
                source.config.schedule_text
            ));
        }
    }
    // The write check takes the lock without writing, so a full disk
    // passes it; a run that could not be stored does not.
    for source in engine.sources() {
        if let Some(run) = source.unrecorded().last {
            reasons.push(format!(
                "source \"{}\": its last run could not be recorded: {}",
                source.id(),
                run.error.as_deref().unwrap_or("unknown error")
            ));
        }
    }
    let store = engine.store.clone();
    match tokio::task::spawn_blocking(move || store.check_writable()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => reasons.push(format!("the store is not writable: {}", ErrorChain(&e))),
        Err(e) => reasons.push(format!("the store check failed: {}", ErrorChain(&e))),
    }
    let ready = reasons.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "sources": engine.sources().len(),
        "scheduled": scheduled,
        "reasons": reasons,
    });
    (status, Json(body)).into_response()
}

/// Re-reads the configuration file, as SIGHUP does, and says what changed;
/// a configuration that does not validate answers 400 with the reason and
/// the running one stays.
async fn reload(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    authorize(&state, &headers)?;
    let Some(tx) = state.reload.as_ref() else {
        return Err(AppError::Conflict(
            "this process cannot reload its configuration".to_owned(),
        ));
    };
    let (reply, answer) = oneshot::channel();
    tx.send(ReloadRequest { reply: Some(reply) })
        .await
        .map_err(|_| AppError::Conflict("tallyd is shutting down".to_owned()))?;
    match answer.await {
        Ok(Ok(changes)) => Ok(Json(serde_json::to_value(changes).unwrap_or(Value::Null))),
        Ok(Err(reason)) => Err(AppError::BadRequest(format!(
            "configuration not reloaded, the running one stays: {reason}"
        ))),
        Err(_) => Err(AppError::Conflict("tallyd is shutting down".to_owned())),
    }
}

/// The latest pre-encoded body (see [`crate::metrics`]): a scrape copies a
/// pointer, whatever the number of series; a scrape that accepts gzip (as
/// Prometheus does) gets the body's compressed copy. The first scrape of a
/// body puts its text together (or compresses it) on the blocking pool;
/// later scrapes of the same body share that.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let engine = state.engine();
    let content_type = (
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    let vary = (header::VARY, HeaderValue::from_static("accept-encoding"));
    let gzip = crate::metrics::accepts_gzip(&headers);
    let ready = if gzip {
        engine.metrics.exposition_gzip_ready()
    } else {
        engine.metrics.exposition_ready()
    };
    let body = match ready {
        Some(body) => body,
        None => {
            let making = engine.clone();
            let done = tokio::task::spawn_blocking(move || {
                if gzip {
                    making.metrics.exposition_gzip()
                } else {
                    making.metrics.exposition()
                }
            });
            match done.await {
                Ok(body) => body,
                Err(_) => {
                    return AppError::Internal("the /metrics body could not be made".to_owned())
                        .into_response();
                }
            }
        }
    };
    if !gzip {
        return ([content_type, vary], body).into_response();
    }
    let encoding = (header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    ([content_type, vary, encoding], body).into_response()
}

fn reject_unknown(params: &HashMap<String, String>, accepted: &[&str]) -> Result<(), AppError> {
    let mut unknown: Vec<&str> = params
        .keys()
        .map(String::as_str)
        .filter(|k| !accepted.contains(k))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort_unstable();
    Err(AppError::BadRequest(format!(
        "unknown parameter {}; accepted: {}",
        unknown.join(", "),
        accepted.join(", ")
    )))
}

async fn summary(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    reject_unknown(&params, &["period", "unit", "depth", "format"])?;
    let period_text = params.get("period").ok_or_else(|| {
        AppError::BadRequest(
            "missing parameter period; accepted forms: 2026-11-27, 2026-W48, 2026-11, 2026-Q4, 2026, 2026-10-01..2026-11-15".to_owned(),
        )
    })?;
    let period = Period::parse(period_text).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let depth = match params.get("depth") {
        None => None,
        Some(d) => Some(d.parse::<usize>().map_err(|_| {
            AppError::BadRequest(format!("depth must be a non-negative integer, got {d:?}"))
        })?),
    };
    let format = match params.get("format") {
        None => Format::Json,
        Some(name) => Format::from_name(name).ok_or_else(|| {
            AppError::BadRequest(format!(
                "unknown format {name:?}; accepted: {}",
                Format::names()
            ))
        })?,
    };
    let request = SummaryRequest {
        period,
        unit: params.get("unit").cloned(),
        depth,
    };
    let engine = state.engine();
    // The 情况报告 is drafted with the template of the engine that built the summary.
    let narrative = Narrative::from_config(&engine.config);
    let built = tokio::task::spawn_blocking(move || engine.summary(&request))
        .await
        .map_err(|e| AppError::Internal(ErrorChain(&e).to_string()))?;
    let summary = built.map_err(|e| match e {
        SummaryError::UnknownUnit { .. } => AppError::BadRequest(e.to_string()),
        other => AppError::Internal(ErrorChain(&other).to_string()),
    })?;
    let label = summary.period.label.clone();
    Ok(match format {
        Format::Csv => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"tally-{label}.csv\""),
                ),
            ],
            summary::to_csv(&summary),
        )
            .into_response(),
        Format::Xlsx => {
            let bytes = summary::to_xlsx(&summary)
                .map_err(|e| AppError::Internal(ErrorChain(&e).to_string()))?;
            (
                [
                    (header::CONTENT_TYPE, Format::Xlsx.content_type().to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"tally-{label}.xlsx\""),
                    ),
                ],
                bytes,
            )
                .into_response()
        }
        Format::Md => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            summary::to_markdown(&summary),
        )
            .into_response(),
        Format::Docx | Format::NarrativeMd => {
            let bytes = crate::reports::render(format, &summary, &narrative)
                .map_err(|e| AppError::Internal(ErrorChain(&e).to_string()))?;
            (
                [
                    (header::CONTENT_TYPE, format.content_type().to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        crate::narrative::content_disposition(&summary, format),
                    ),
                ],
                bytes,
            )
                .into_response()
        }
        Format::Json => Json(summary).into_response(),
    })
}

/// The report files written so far (`[reports]`), oldest period first.
async fn reports(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let writer = ReportWriter::from_config(&state.engine().config);
    let files = tokio::task::spawn_blocking(move || writer.list())
        .await
        .map_err(|e| AppError::Internal(ErrorChain(&e).to_string()))?
        .map_err(|e| AppError::Internal(ErrorChain(&e).to_string()))?;
    Ok(Json(json!({ "reports": files })))
}

/// Traceability: the stored observations behind one figure of the summary,
/// a page at a time (`limit`, at most [`summary::MAX_PAGE`]; `after`, the
/// `next` of the previous page), so that an answer stays small whatever the
/// figure (a month of an exec source can be close to a million rows).
async fn observations(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<summary::Explanation>, AppError> {
    reject_unknown(&params, &["period", "unit", "indicator", "limit", "after"])?;
    let limit = match params.get("limit") {
        None => summary::DEFAULT_PAGE,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=summary::MAX_PAGE).contains(n))
            .ok_or_else(|| {
                AppError::BadRequest(format!(
                    "limit must be a whole number from 1 to {}, got {text:?}",
                    summary::MAX_PAGE
                ))
            })?,
    };
    let after = params.get("after").cloned();
    let required = |name: &str, what: &str| {
        params
            .get(name)
            .cloned()
            .ok_or_else(|| AppError::BadRequest(format!("missing parameter {name}; {what}")))
    };
    let period_text = required(
        "period",
        "accepted forms: 2026-11-27, 2026-W48, 2026-11, 2026-Q4, 2026, 2026-10-01..2026-11-15",
    )?;
    let request = summary::ExplainRequest {
        period: Period::parse(&period_text).map_err(|e| AppError::BadRequest(e.to_string()))?,
        unit: required("unit", "a unit id, see /api/v1/units")?,
        indicator: required("indicator", "an indicator id, see /api/v1/indicators")?,
    };
    let engine = state.engine();
    let explained = tokio::task::spawn_blocking(move || {
        summary::explain_page(
            &engine.config,
            &engine.tree,
            &*engine.store,
            &request,
            after.as_deref(),
            limit,
        )
    })
    .await
    .map_err(|e| AppError::Internal(ErrorChain(&e).to_string()))?;
    explained.map(Json).map_err(|e| {
        if e.is_user_error() {
            AppError::BadRequest(e.to_string())
        } else {
            AppError::Internal(ErrorChain(&e).to_string())
        }
    })
}

async fn units(State(state): State<AppState>) -> Json<Value> {
    let engine = state.engine();
    let tree = &engine.tree;
    let units: Vec<Value> = tree
        .preorder()
        .iter()
        .map(|&idx| {
            let u = tree.unit(idx);
            json!({
                "id": u.id,
                "name": u.name,
                "parent": u.parent().map(|p| tree.unit(p).id.clone()),
                "depth": u.depth(),
                "headcount": u.headcount,
                "aliases": u.aliases,
                "children": tree.children(idx).iter().map(|&c| tree.unit(c).id.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({ "units": units }))
}

async fn indicators(State(state): State<AppState>) -> Json<Value> {
    let engine = state.engine();
    let indicators: Vec<Value> = engine
        .config
        .indicators
        .iter()
        .map(|i| {
            let sources: Vec<&str> = engine
                .sources()
                .iter()
                .filter(|s| s.emitted_ids().contains(&i.id))
                .map(|s| s.id())
                .collect();
            let targets: Vec<Value> = engine
                .config
                .targets
                .iter()
                .filter(|t| t.indicator == i.id)
                .map(|t| {
                    json!({
                        "per": t.per.as_str(),
                        "period": t.period.as_str(),
                        "min": t.min,
                        "prorate": t.prorate,
                        "units": t.units,
                    })
                })
                .collect();
            json!({
                "id": i.id,
                "name": i.name,
                "kind": i.kind.as_str(),
                "unit": i.unit,
                "accumulates": i.accumulates.map(|a| a.as_str()),
                "per_capita": i.per_capita,
                "sources": sources,
                "targets": targets,
            })
        })
        .collect();
    Json(json!({ "indicators": indicators }))
}

async fn sources(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let engine = state.engine();
    tokio::task::spawn_blocking(move || sources_blocking(&engine))
        .await
        .map_err(|e| AppError::Internal(ErrorChain(&e).to_string()))?
        .map(Json)
}

fn sources_blocking(engine: &Engine) -> Result<Value, AppError> {
    let tz = engine.config.daemon.timezone;
    let now = engine.clock.now();
    let local = |t: DateTime<Utc>| t.with_timezone(&tz).to_rfc3339();
    // Replicas: who this replica is, and what the shared database says
    // of each source's schedule and latest claim.
    let prints = engine.replica.as_ref().map(|_| engine.fingerprints());
    let claims = match &engine.replica {
        Some(replica) => {
            let ids: Vec<&str> = engine.sources().iter().map(|s| s.id()).collect();
            replica
                .coordination
                .schedule_status(&ids)
                .map_err(|e| AppError::Internal(ErrorChain(&e).to_string()))?
        }
        None => Default::default(),
    };
    let states = engine
        .source_states(engine.sources(), now)
        .map_err(|e| AppError::Internal(ErrorChain(&e).to_string()))?;
    let mut out = Vec::new();
    for (source, state) in engine.sources().iter().zip(states) {
        let run_json = |id: Option<i64>, run: &tally_store::RunRecord, observations: u64| {
            json!({
                "id": id,
                "recorded": id.is_some(),
                "trigger": run.trigger,
                "started_at": local(run.started_at),
                "finished_at": local(run.finished_at),
                "result": run.result.as_str(),
                "error": run.error,
                "error_kind": run.error_kind,
                "retry_after": run.retry_after.map(local),
                "window": {"from": run.window_from, "to": run.window_to},
                "observations": observations,
                "http_requests": run.http_requests,
                "uncovered": crate::engine::day_ranges(&run.uncovered),
                "warnings": run.warnings,
            })
        };
        let error_json = |run: &tally_store::RunRecord| {
            json!({
                "at": local(run.finished_at),
                "result": run.result.as_str(),
                "error_kind": run.error_kind,
                "retry_after": run.retry_after.map(local),
                "error": run.error,
            })
        };
        let last_run = state
            .last_run
            .as_ref()
            .map(|(id, run, observations)| run_json(*id, run, *observations));
        let last_error = state.last_error.as_ref().map(error_json);
        let (status, unrecorded, breaker) = (&state.status, &state.unrecorded, &state.breaker);
        let mut entry = json!({
            "id": source.id(),
            "plugin": source.plugin(),
            "units": source.config.units,
            "coverage": source.config.coverage.as_str(),
            "schedule": source.config.schedule_text,
            "timeout": humanize(source.config.timeout),
            "lookback_days": source.config.lookback_days,
            "emits": source.emitted_ids(),
            "running": state.running,
            "last_run": last_run,
            "last_success": status.last_success.as_ref().map(|s| local(s.finished_at)),
            "last_error": last_error,
            "next_run": state.next_run.map(local),
            "consecutive_failures": breaker.consecutive_failures,
            "backoff_until": breaker.backoff_until.filter(|t| *t > now).map(local),
            "runs": {
                "success": status.runs.success,
                "error": status.runs.error + unrecorded.count,
                "timeout": status.runs.timeout,
                "panic": status.runs.panic,
                "crash": status.runs.crash,
            },
        });
        if let Some(prints) = &prints {
            let mine = prints.sources.get(source.id());
            let claim = claims.get(source.id());
            entry["fingerprint"] = json!(mine);
            entry["claim"] = json!(claim.map(|c| json!({
                "claimable": c.fingerprint.as_str() == mine.map_or("", String::as_str),
                "registered_fingerprint": c.fingerprint,
                "next_tick": c.next_tick.map(local),
                "last_tick": c.last_tick.map(local),
                "last_owner": c.last_owner,
                "last_rerun": c.last_rerun,
                "last_finished": c.last_finished,
            })));
        }
        out.push(entry);
    }
    match (&engine.replica, &prints) {
        (Some(replica), Some(prints)) => Ok(json!({
            "replica": {
                "owner": replica.owner,
                "fingerprint": prints.config,
                "lease": humanize(replica.lease),
            },
            "sources": out,
        })),
        _ => Ok(json!({ "sources": out })),
    }
}

async fn run_source(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    authorize(&state, &headers)?;
    let live = state.live.get();
    if live.engine.source(&id).is_none() {
        return Err(AppError::NotFound(format!(
            "unknown source \"{id}\"; see /api/v1/sources"
        )));
    }
    match live.scheduler.run_now(&id).await {
        Ok(report) => Ok(Json(serde_json::to_value(report).unwrap_or(Value::Null))),
        Err(RunError::AlreadyRunning(s)) => Err(AppError::Conflict(format!(
            "source \"{s}\" is already running; try again when it has finished"
        ))),
        Err(RunError::UnknownSource(s)) => {
            Err(AppError::NotFound(format!("unknown source \"{s}\"")))
        }
        Err(e @ RunError::ShuttingDown(_)) => Err(AppError::Unavailable(e.to_string())),
        Err(e) => Err(AppError::Internal(ErrorChain(&e).to_string())),
    }
}

/// Write endpoints need `Authorization: Bearer <daemon.api_token>`.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let engine = state.engine();
    let Some(token) = engine.config.daemon.api_token.as_ref() else {
        return Err(AppError::Forbidden(
            "write endpoints are disabled: set daemon.api_token in the configuration".to_owned(),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            AppError::Unauthorized("missing header Authorization: Bearer <api_token>".to_owned())
        })?;
    if !constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes()) {
        return Err(AppError::Unauthorized("wrong api token".to_owned()));
    }
    Ok(())
}

/// Compares without an early exit, so response time says nothing about how
/// much of a guessed token was right.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
