//! One configured source's plugin instance, and the host services it gets.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounterVec, Opts};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use tally_plugin::abi::{self, Bytes, HostVTable, Instance, OwnedBytes, Status};
use tally_plugin::{CollectRequest, CollectResponse, Created, Error, HttpRequest, HttpResponse};

use super::PluginLibrary;
use tally_domain::clock::Clock;

/// Replaces secret values in text that leaves the daemon (logs, errors).
pub type Redact = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// What the daemon lends a plugin: its HTTP client, its clock, its runtime.
#[derive(Clone)]
pub struct HostServices {
    /// The blocking client of plugins' requests ([`http_agent`]).
    pub http: ureq::Agent,
    /// Plugin calls run on blocking-pool threads; their HTTP requests wait
    /// for the host's gate on this runtime. `None` (e.g. `tallyd check`)
    /// refuses HTTP.
    pub runtime: Option<tokio::runtime::Handle>,
    pub clock: Arc<dyn Clock>,
    pub redact: Redact,
    pub http_timeout: Duration,
    /// The per-host limits and the request counter of plugins' HTTP: one gate
    /// for every in-daemon source, kept by the daemon across reloads.
    pub gate: Arc<HttpGate>,
}

/// Why a plugin call did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin reported an error.
    #[error("{0}")]
    Plugin(Error),
    /// The plugin panicked; the message and location are in the text.
    #[error("plugin panicked: {0}")]
    Panic(String),
    /// The plugin broke the protocol (undecodable answer, unknown status).
    #[error("plugin protocol error: {0}")]
    Protocol(String),
    /// The isolated plugin process died (segfault, abort, out of memory, killed).
    #[error("{0}")]
    Crash(String),
}

struct HostCtx {
    source: String,
    services: HostServices,
    cancelled: AtomicBool,
    /// HTTP requests made since the count was last taken.
    http_requests: AtomicU64,
}

struct InstancePtr(*mut Instance);

/// A created plugin instance for one source. Calls are serialized by a mutex:
/// the ABI promises plugins that one instance is never called concurrently.
pub struct SourceInstance {
    lib: Arc<PluginLibrary>,
    ptr: Mutex<InstancePtr>,
    // Boxed so their addresses stay put: the plugin keeps pointers to both.
    _host_vt: Box<HostVTable>,
    ctx: Box<HostCtx>,
    pub created: Created,
}

// SAFETY: the instance pointer is only used under `ptr`'s mutex (one call at a
// time, as the ABI requires); the host vtable and context are immutable except
// for the atomic cancellation flag, and their functions are thread-safe.
unsafe impl Send for SourceInstance {}
// SAFETY: as above.
unsafe impl Sync for SourceInstance {}

impl SourceInstance {
    /// Creates an instance from the source's settings; the plugin validates them.
    pub fn create(
        lib: Arc<PluginLibrary>,
        source: &str,
        settings: &tally_config::Settings,
        services: HostServices,
    ) -> Result<SourceInstance, CallError> {
        let ctx = Box::new(HostCtx {
            source: source.to_owned(),
            services,
            cancelled: AtomicBool::new(false),
            http_requests: AtomicU64::new(0),
        });
        let host_vt = Box::new(HostVTable {
            size: std::mem::size_of::<HostVTable>(),
            abi_minor: abi::ABI_MINOR,
            ctx: (&*ctx as *const HostCtx).cast::<c_void>(),
            log: host_log,
            now_unix_ms: host_now,
            cancelled: host_cancelled,
            call: host_call,
        });
        // Already the JSON text the plugin reads.
        let settings = settings.json().as_bytes();
        let mut instance: *mut Instance = std::ptr::null_mut();
        let mut out = OwnedBytes::empty();
        // SAFETY: `host_vt` and `ctx` are boxed and owned by the returned
        // value, which destroys the instance before dropping them; the other
        // arguments are valid for the call.
        let status = unsafe {
            (lib.vtable.create)(
                &*host_vt,
                Bytes::from_slice(settings),
                &mut instance,
                &mut out,
            )
        };
        // SAFETY: the plugin filled `out` during the call.
        let body = unsafe { out.into_vec() };
        let created: Created = decode(status, &body)?;
        if instance.is_null() {
            return Err(CallError::Protocol(
                "create succeeded without an instance".to_owned(),
            ));
        }
        Ok(SourceInstance {
            lib,
            ptr: Mutex::new(InstancePtr(instance)),
            _host_vt: host_vt,
            ctx,
            created,
        })
    }

    /// One collection run. Blocks: call it from a blocking-pool thread.
    pub fn collect_blocking(&self, request: &CollectRequest) -> Result<CollectResponse, CallError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| CallError::Protocol(format!("cannot encode request: {e}")))?;
        // A poisoned mutex only means an earlier caller panicked on our side
        // after the call; the instance itself is as the plugin left it.
        let guard = self.ptr.lock().unwrap_or_else(|p| p.into_inner());
        self.ctx.cancelled.store(false, Ordering::SeqCst);
        let mut out = OwnedBytes::empty();
        // SAFETY: the instance is alive (destroyed only in Drop) and used by
        // this thread alone while the mutex is held.
        let status =
            unsafe { (self.lib.vtable.collect)(guard.0, Bytes::from_slice(&body), &mut out) };
        // SAFETY: the plugin filled `out` during the call.
        let answer = unsafe { out.into_vec() };
        drop(guard);
        decode(status, &answer)
    }

    /// The HTTP requests the plugin made since the last call, and resets the count.
    pub fn take_http_requests(&self) -> u64 {
        self.ctx.http_requests.swap(0, Ordering::SeqCst)
    }

    /// Asks the plugin to stop the current run early (it polls `host.cancelled()`).
    pub fn cancel(&self) {
        self.ctx.cancelled.store(true, Ordering::SeqCst);
    }

    pub fn plugin(&self) -> &Arc<PluginLibrary> {
        &self.lib
    }
}

impl Drop for SourceInstance {
    fn drop(&mut self) {
        let ptr = self.ptr.get_mut().unwrap_or_else(|p| p.into_inner()).0;
        if !ptr.is_null() {
            // SAFETY: created by this library's `create`, destroyed once, and
            // before `_host_vt`/`ctx` (fields drop after this body) go away.
            unsafe { (self.lib.vtable.destroy)(ptr) };
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(status: Status, body: &[u8]) -> Result<T, CallError> {
    match status {
        Status::OK => serde_json::from_slice(body)
            .map_err(|e| CallError::Protocol(format!("undecodable answer: {e}"))),
        Status::ERROR => Err(CallError::Plugin(
            serde_json::from_slice(body)
                .unwrap_or_else(|_| Error::internal(String::from_utf8_lossy(body).into_owned())),
        )),
        Status::PANICKED => Err(CallError::Panic(String::from_utf8_lossy(body).into_owned())),
        other => Err(CallError::Protocol(format!(
            "status {}: {}",
            other.0,
            String::from_utf8_lossy(body)
        ))),
    }
}

/// # Safety
/// `ctx` must be the `HostCtx` pointer this daemon put into the host vtable.
unsafe fn ctx<'a>(ctx: *const c_void) -> &'a HostCtx {
    // SAFETY: guaranteed by the caller; the context lives as long as the instance.
    unsafe { &*ctx.cast::<HostCtx>() }
}

unsafe extern "C" fn host_log(ctx_ptr: *const c_void, level: u32, message: Bytes) {
    // A panic must not unwind into the plugin's frames.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the plugin passes back our own context and a message valid for the call.
        let (ctx, message) = unsafe { (ctx(ctx_ptr), message.as_slice()) };
        let text = (ctx.services.redact)(&String::from_utf8_lossy(message));
        let source = ctx.source.as_str();
        match tally_plugin::Level::from_u32(level) {
            tally_plugin::Level::Error => {
                tracing::error!(target: "tally::plugin", source, "{text}")
            }
            tally_plugin::Level::Warn => tracing::warn!(target: "tally::plugin", source, "{text}"),
            tally_plugin::Level::Info => tracing::info!(target: "tally::plugin", source, "{text}"),
            tally_plugin::Level::Debug => {
                tracing::debug!(target: "tally::plugin", source, "{text}")
            }
            tally_plugin::Level::Trace => {
                tracing::trace!(target: "tally::plugin", source, "{text}")
            }
        }
    }));
}

unsafe extern "C" fn host_now(ctx_ptr: *const c_void) -> i64 {
    // SAFETY: the plugin passes back our own context.
    catch_unwind(AssertUnwindSafe(|| {
        unsafe { ctx(ctx_ptr) }
            .services
            .clock
            .now()
            .timestamp_millis()
    }))
    .unwrap_or(0)
}

unsafe extern "C" fn host_cancelled(ctx_ptr: *const c_void) -> bool {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the plugin passes back our own context.
        unsafe { ctx(ctx_ptr) }.cancelled.load(Ordering::SeqCst)
    }))
    .unwrap_or(true)
}

unsafe extern "C" fn host_call(
    ctx_ptr: *const c_void,
    method: Bytes,
    payload: Bytes,
    out: *mut OwnedBytes,
) -> Status {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the plugin passes back our own context and inputs valid for the call.
        let (ctx, method, payload) =
            unsafe { (ctx(ctx_ptr), method.as_slice(), payload.as_slice()) };
        match method {
            b"http" => match serde_json::from_slice::<HttpRequest>(payload) {
                Ok(req) => match http(ctx, &req) {
                    Ok(resp) => (Status::OK, serde_json::to_vec(&resp).unwrap_or_default()),
                    Err(e) => (Status::ERROR, serde_json::to_vec(&e).unwrap_or_default()),
                },
                Err(e) => (
                    Status::BAD_REQUEST,
                    format!("undecodable http request: {e}").into_bytes(),
                ),
            },
            other => (
                Status::UNSUPPORTED,
                format!(
                    "tallyd offers no service {:?}",
                    String::from_utf8_lossy(other)
                )
                .into_bytes(),
            ),
        }
    }));
    let (status, body) = result.unwrap_or_else(|_| {
        (
            Status::ERROR,
            br#"{"kind":"internal","message":"tallyd failed serving the call"}"#.to_vec(),
        )
    });
    if !out.is_null() {
        // SAFETY: the plugin passes a writable out-slot; the buffer carries our release.
        unsafe { out.write(OwnedBytes::from_vec(body)) };
    }
    status
}

/// The HTTP client of plugins' requests: a blocking one, so that an
/// in-process plugin's request runs on the plugin's own (blocking-pool)
/// thread instead of hopping to the async workers and back (issue 16: that
/// hop cost about a dozen futex calls per fetch). Its behaviour is the one
/// the daemon had with its async client: any status is an answer, not an
/// error; up to 10 redirects, then an error; credentials follow a redirect to
/// the same host only; the proxy of the environment (`HTTPS_PROXY`, ...);
/// connections kept for reuse up to `idle` unused.
///
/// ```
/// use std::time::Duration;
///
/// let agent = tally_host::http_agent(Duration::from_secs(10), Duration::from_secs(90));
/// # drop(agent);
/// ```
pub fn http_agent(connect_timeout: Duration, idle: Duration) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .user_agent(concat!("tallyd/", env!("CARGO_PKG_VERSION")))
        .http_status_as_error(false)
        .max_redirects(10)
        .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
        .allow_non_standard_methods(true)
        .timeout_connect(Some(connect_timeout))
        .max_idle_age(idle)
        // A thousand sources on one platform share a few hosts: keep their
        // connections (per host, at most as many as requests in flight).
        .max_idle_connections(256)
        .max_idle_connections_per_host(32)
        // ureq's 128 KiB buffers are allocated and zeroed for every new
        // connection, and a platform that closes each connection (as most
        // answer a poll every few seconds) makes one per fetch: 256 KiB,
        // at glibc's mmap threshold, was ~5% of a fetch's CPU (issue 16).
        // The input buffer must hold a whole response head and a little
        // more, so that a head past the limit is refused as too large
        // rather than as a connection that stopped; a request head
        // (cookies, tokens) of up to 32 KiB still goes out.
        .max_response_header_size(RESPONSE_HEAD_MAX)
        .input_buffer_size(RESPONSE_HEAD_MAX + 4096)
        .output_buffer_size(REQUEST_HEAD_MAX)
        .build();
    ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        LiteralFirst::default(),
    )
}

/// The largest response head (status line and headers) a plugin's request
/// accepts: ureq's default.
const RESPONSE_HEAD_MAX: usize = 64 * 1024;

/// The largest request head a plugin's request can send.
const REQUEST_HEAD_MAX: usize = 32 * 1024;

/// Resolves an IP address in the URL (`http://127.0.0.1:8080/`) as itself,
/// and a name as ureq does: its resolver starts a thread per lookup so that
/// the request's timeout holds, which for a literal address is a thread per
/// request for nothing (4 of a fetch's ~40 system calls in the benchmark).
#[derive(Debug, Default)]
struct LiteralFirst(ureq::unversioned::resolver::DefaultResolver);

impl ureq::unversioned::resolver::Resolver for LiteralFirst {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        if let Some(authority) = uri.authority() {
            let host = authority.host();
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            let port = authority.port_u16().or(match uri.scheme_str() {
                Some("http") => Some(80),
                Some("https") => Some(443),
                _ => None,
            });
            if let (Ok(ip), Some(port)) = (host.parse::<std::net::IpAddr>(), port) {
                let mut addrs = self.empty();
                addrs.push(std::net::SocketAddr::new(ip, port));
                return Ok(addrs);
            }
        }
        self.0.resolve(uri, config, timeout)
    }
}

/// Performs a plugin's HTTP request with the daemon's client, on the calling
/// (blocking-pool) thread; the daemon's runtime only serves the host's gate.
fn http(ctx: &HostCtx, req: &HttpRequest) -> Result<HttpResponse, Error> {
    ctx.http_requests.fetch_add(1, Ordering::SeqCst);
    let Some(runtime) = &ctx.services.runtime else {
        return Err(Error::internal("HTTP is not available in this command"));
    };
    // Query strings may carry tokens: name the endpoint without them.
    let shown = req.url.split('?').next().unwrap_or_default().to_owned();
    let method = ureq::http::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| Error::settings(format!("unknown HTTP method {:?}", req.method)))?;
    let timeout = req
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(ctx.services.http_timeout);
    let fail = |e: ureq::Error| {
        Error::upstream(format!("{} {shown}: {}", req.method, describe(&e, timeout)))
    };
    let host = host_key(&req.url);
    let gate = ctx.services.gate.host(&host);
    let label = ctx.services.gate.label(&host);
    let count = |class: &str| {
        ctx.services
            .gate
            .requests
            .with_label_values(&[label.as_str(), class])
            .inc();
    };
    // Waiting for a free slot counts against the request's timeout, so a
    // crowded host cannot hold a run past its deadline. A free slot is taken
    // at once, on this thread. The timer is made inside the future: an
    // isolated plugin's thread (`tallyd plugin-host`) is outside the
    // runtime's context until `block_on` enters it.
    let permit = runtime
        .block_on(async { tokio::time::timeout(timeout, gate.acquire()).await })
        .map_err(|_| {
            count("error");
            Error::upstream(format!(
                "{} {shown}: no free connection to {label} within {} ms (daemon.http_per_host_concurrency / http_per_host_rate)",
                req.method,
                timeout.as_millis()
            ))
        })?;
    let answer = send(&ctx.services.http, req, method, timeout).and_then(|mut resp| {
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect::<Vec<_>>();
        // No size limit, as before: the plugin's timeout bounds the read.
        let body = resp
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()?;
        Ok((status, headers, body))
    });
    drop(permit);
    let (status, headers, body) = answer.map_err(|e| {
        count("error");
        fail(e)
    })?;
    count(&status_class(status));
    let resp = HttpResponse::from_body(status, headers, body, req.body_as_bytes);
    // A wrong or unknown charset garbles dates without failing the run:
    // say so where the operator looks, under the source.
    for warning in &resp.warnings {
        let text = (ctx.services.redact)(&format!("{} {shown}: {warning}", req.method));
        tracing::warn!(target: "tally::plugin", source = ctx.source.as_str(), "{text}");
    }
    Ok(resp)
}

/// Sends a plugin's request and reads the answer's head; the body is read by
/// the caller. The whole exchange, redirects and body included, is bounded by
/// `timeout`.
fn send(
    agent: &ureq::Agent,
    req: &HttpRequest,
    method: ureq::http::Method,
    timeout: Duration,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    let url = with_query(&req.url, &req.query).ok_or(ureq::Error::BadUri(String::new()))?;
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in &req.headers {
        builder = builder.header(k, v);
    }
    // Without a body, no `Content-Length: 0` on a GET.
    match &req.body {
        Some(body) => run(agent, builder.body(body.as_bytes())?, timeout),
        None => run(agent, builder.body(())?, timeout),
    }
}

fn run<B: ureq::AsSendBody>(
    agent: &ureq::Agent,
    request: ureq::http::Request<B>,
    timeout: Duration,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    let request = agent
        .configure_request(request)
        .timeout_global(Some(timeout))
        .build();
    agent.run(request)
}

/// `url` with `query` appended, form-encoded (`a=1&b=x+y`); `None` when the
/// URL does not parse.
fn with_query(url: &str, query: &[(String, String)]) -> Option<String> {
    let mut url = url::Url::parse(url).ok()?;
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Some(url.into())
}

/// What went wrong with a request, without its URL (its query may carry a
/// token): the client's own texts name it.
fn describe(e: &ureq::Error, timeout: Duration) -> String {
    use std::io::ErrorKind as Io;
    match e {
        ureq::Error::Timeout(_) => format!("timed out after {} ms", timeout.as_millis()),
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => "connection failed".to_owned(),
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                Io::ConnectionRefused
                    | Io::AddrNotAvailable
                    | Io::HostUnreachable
                    | Io::NetworkUnreachable
                    | Io::NotConnected
            ) =>
        {
            "connection failed".to_owned()
        }
        ureq::Error::BadUri(_) => "invalid URL".to_owned(),
        ureq::Error::RequireHttpsOnly(_) => "refused: not https".to_owned(),
        ureq::Error::ConnectProxyFailed(_) => "the proxy refused the connection".to_owned(),
        other => other.to_string(),
    }
}

/// Hosts get their own `host` label up to this many; later ones count as
/// `other`, so a plugin that follows arbitrary links cannot blow up the series.
const MAX_HOST_LABELS: usize = 64;

/// The limits of plugins' HTTP requests per `host:port` (`daemon.http_per_host_concurrency`
/// and `daemon.http_per_host_rate`): per host slots (a semaphore) and spacing
/// (a token bucket of one token), across sources; and the count of requests,
/// `tally_http_requests_total{host, status_class}`, which the daemon's metrics
/// export. A value the daemon owns, not a process global: the daemon keeps one
/// across reloads, a test makes its own. An isolated source
/// (`isolation = "process"`) performs its HTTP in its child, under the child's gate.
///
/// ```
/// use tally_host::HttpGate;
///
/// let gate = HttpGate::new(2, Some(5.0));
/// assert_eq!(gate.label("api.weibo.com:443"), "api.weibo.com:443");
/// gate.configure(4, None); // from the next request on
/// ```
pub struct HttpGate {
    limits: Mutex<(usize, Option<f64>)>,
    hosts: Mutex<HashMap<String, Arc<HostGate>>>,
    labels: Mutex<Vec<String>>,
    /// `tally_http_requests_total{host, status_class}`: 2xx, 4xx, 5xx, ... or
    /// `error` when no answer came.
    pub requests: IntCounterVec,
}

impl HttpGate {
    pub fn new(concurrency: usize, rate: Option<f64>) -> HttpGate {
        HttpGate {
            limits: Mutex::new((concurrency.max(1), rate)),
            hosts: Mutex::new(HashMap::new()),
            labels: Mutex::new(Vec::new()),
            requests: IntCounterVec::new(
                Opts::new(
                    "tally_http_requests_total",
                    "HTTP requests made for plugins (in the daemon's process), by host and status class (2xx, 4xx, 5xx, ... or error when no answer came).",
                ),
                &["host", "status_class"],
            )
            .expect("valid metric definition"),
        }
    }

    /// Sets the limits for requests from now on; requests in flight keep their slots.
    pub fn configure(&self, concurrency: usize, rate: Option<f64>) {
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        if *limits != (concurrency.max(1), rate) {
            *limits = (concurrency.max(1), rate);
            // New limits take effect through new per-host gates.
            self.hosts.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    /// The gate of one host (`host:port`), created on first use.
    pub fn host(&self, host: &str) -> Arc<HostGate> {
        let (concurrency, rate) = *self.limits.lock().unwrap_or_else(|p| p.into_inner());
        self.hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(host.to_owned())
            .or_insert_with(|| Arc::new(HostGate::new(concurrency, rate)))
            .clone()
    }

    /// The `host` label of a host: itself, or `other` past [`MAX_HOST_LABELS`].
    pub fn label(&self, host: &str) -> String {
        let mut labels = self.labels.lock().unwrap_or_else(|p| p.into_inner());
        if labels.iter().any(|l| l == host) {
            return host.to_owned();
        }
        if labels.len() < MAX_HOST_LABELS {
            labels.push(host.to_owned());
            return host.to_owned();
        }
        "other".to_owned()
    }
}

/// One host's limits.
pub struct HostGate {
    slots: Arc<Semaphore>,
    /// Requests are spaced `1 / rate` apart: the earliest start of the next one.
    spacing: Option<(Duration, tokio::sync::Mutex<Option<Instant>>)>,
}

impl HostGate {
    pub fn new(concurrency: usize, rate: Option<f64>) -> HostGate {
        HostGate {
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            spacing: rate.filter(|r| r.is_finite() && *r > 0.0).map(|r| {
                (
                    Duration::from_secs_f64(1.0 / r),
                    tokio::sync::Mutex::new(None),
                )
            }),
        }
    }

    /// Waits for a free slot, then for the request's turn under the rate;
    /// the slot is held until the permit drops.
    pub async fn acquire(&self) -> tokio::sync::OwnedSemaphorePermit {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        if let Some((gap, next)) = &self.spacing {
            let at = {
                let mut next = next.lock().await;
                let at = turn(*next, Instant::now());
                *next = Some(at + *gap);
                at
            };
            tokio::time::sleep_until(at).await;
        }
        permit
    }
}

/// When a request may start under the rate: at once, or when its turn comes.
fn turn(next: Option<Instant>, now: Instant) -> Instant {
    next.map_or(now, |n| n.max(now))
}

/// `host:port` of a URL (the port only when given), for limits and labels;
/// `invalid` when it does not parse (the request then fails).
pub fn host_key(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => "invalid".to_owned(),
        },
        Err(_) => "invalid".to_owned(),
    }
}

/// `2xx`, `4xx`, `5xx`, ... for `tally_http_requests_total`.
pub fn status_class(status: u16) -> String {
    format!("{}xx", status / 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_appended_form_encoded_and_an_empty_one_changes_nothing() {
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            with_query("http://h/p?a=1", &q(&[("b", "x y"), ("c", "&=")])).unwrap(),
            "http://h/p?a=1&b=x+y&c=%26%3D"
        );
        assert_eq!(
            with_query("http://h:8080/p", &[]).unwrap(),
            "http://h:8080/p"
        );
        assert_eq!(with_query("not a url", &q(&[("a", "1")])), None);
    }

    #[test]
    fn a_literal_address_is_its_own_resolution_and_a_name_is_looked_up() {
        use ureq::unversioned::resolver::Resolver;
        let resolver = LiteralFirst::default();
        let config = ureq::config::Config::default();
        let next = || ureq::unversioned::transport::NextTimeout {
            after: Duration::from_secs(5).into(),
            reason: ureq::Timeout::Global,
            per_read: None,
            per_write: None,
        };
        for (url, want) in [
            ("http://127.0.0.1:18080/src/1.json", "127.0.0.1:18080"),
            ("http://127.0.0.1/", "127.0.0.1:80"),
            ("https://[::1]/x", "[::1]:443"),
        ] {
            let uri: ureq::http::Uri = url.parse().unwrap();
            let addrs = resolver.resolve(&uri, &config, next()).unwrap();
            assert_eq!(addrs.len(), 1, "{url}");
            assert_eq!(addrs[0].to_string(), want, "{url}");
        }
        let uri: ureq::http::Uri = "http://localhost:9/".parse().unwrap();
        let addrs = resolver.resolve(&uri, &config, next()).unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 9));
    }

    #[test]
    fn a_failed_request_is_described_without_its_url() {
        let t = Duration::from_millis(1500);
        for (e, want) in [
            (
                ureq::Error::Timeout(ureq::Timeout::Global),
                "timed out after 1500 ms",
            ),
            (ureq::Error::ConnectionFailed, "connection failed"),
            (
                ureq::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
                "connection failed",
            ),
            (
                ureq::Error::BadUri("http://h/?token=s3cret".into()),
                "invalid URL",
            ),
        ] {
            assert_eq!(describe(&e, t), want);
        }
    }

    #[test]
    fn host_keys_keep_explicit_ports_and_drop_credentials_and_paths() {
        assert_eq!(
            host_key("http://127.0.0.1:8080/a?token=x"),
            "127.0.0.1:8080"
        );
        assert_eq!(
            host_key("https://user:pw@api.weixin.qq.com/cgi-bin"),
            "api.weixin.qq.com"
        );
        assert_eq!(host_key("not a url"), "invalid");
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(503), "5xx");
    }

    #[test]
    fn labels_are_bounded() {
        let gate = HttpGate::new(1, None);
        for i in 0..MAX_HOST_LABELS {
            assert_eq!(gate.label(&format!("h{i}")), format!("h{i}"));
        }
        assert_eq!(gate.label("one-too-many"), "other");
        assert_eq!(gate.label("h0"), "h0");
    }

    /// A server on 127.0.0.1 answering each connection with a response head
    /// of `head_len` bytes and the body `ok`, then closing it (HTTP/1.0
    /// style); each request head it read comes back on the channel.
    fn big_head_server(head_len: usize) -> (u16, std::sync::mpsc::Receiver<Vec<u8>>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming().take(4) {
                let Ok(mut conn) = conn else { continue };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(head);
                let start = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\nX-Pad: ";
                let pad = head_len - start.len() - "\r\n\r\n".len();
                let _ = write!(conn, "{start}{}\r\n\r\nok", "a".repeat(pad));
            }
        });
        (port, rx)
    }

    #[test]
    fn the_smaller_buffers_still_carry_big_heads_both_ways() {
        let agent = http_agent(Duration::from_secs(5), Duration::from_secs(5));
        let get = |port: u16, header: &str| {
            let req = HttpRequest::new("GET", format!("http://127.0.0.1:{port}/x"))
                .header("X-Cookie", header);
            send(
                &agent,
                &req,
                ureq::http::Method::GET,
                Duration::from_secs(5),
            )
            .and_then(|mut r| {
                let status = r.status().as_u16();
                Ok((status, r.body_mut().read_to_string()?))
            })
        };
        // A response head just under the limit and a 20 KiB request head.
        let (port, heads) = big_head_server(RESPONSE_HEAD_MAX - 100);
        let cookie = "c".repeat(20 * 1024);
        assert_eq!(get(port, &cookie).unwrap(), (200, "ok".to_owned()));
        let seen = String::from_utf8(heads.recv().unwrap()).unwrap();
        assert!(seen.contains(&cookie), "the whole request head arrived");
        // Past the limit, an error that says so (not a hang, not a cut head).
        for len in [RESPONSE_HEAD_MAX + 100, 2 * RESPONSE_HEAD_MAX] {
            let (port, _heads) = big_head_server(len);
            match get(port, "x") {
                Err(ureq::Error::LargeResponseHeader(..)) => {}
                other => panic!("head of {len} bytes: want a too-large head, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_host_gate_limits_requests_in_flight() {
        let gate = HostGate::new(2, None);
        let a = gate.acquire().await;
        let _b = gate.acquire().await;
        // The third cannot get a slot while the first two hold theirs.
        let third = tokio::time::timeout(Duration::from_millis(50), gate.acquire()).await;
        assert!(third.is_err());
        drop(a);
        let third = tokio::time::timeout(Duration::from_secs(10), gate.acquire()).await;
        assert!(third.is_ok());
    }

    #[test]
    fn requests_take_turns_under_the_rate() {
        let now = Instant::now();
        let gap = Duration::from_millis(250);
        // Nobody waiting: at once.
        assert_eq!(turn(None, now), now);
        // The next turn is later: wait for it.
        assert_eq!(turn(Some(now + gap), now), now + gap);
        // The next turn has passed: at once, no saved-up burst.
        assert_eq!(turn(Some(now), now + gap * 4), now + gap * 4);
    }
}
