//! Run a plugin in `cargo test`, without the daemon.
//!
//! [`TestHost`] stands in for `tallyd`: a fixed clock, a log you can read back,
//! and HTTP answered from recorded fixtures, or passed to a real server you
//! started on 127.0.0.1. [`Harness`] creates your plugin from JSON settings
//! exactly as the daemon does (same settings errors) and runs `collect`.
//!
//! ```
//! use chrono::NaiveDate;
//! use tally_plugin::testkit::{Fixture, Harness, TestHost};
//! use tally_plugin::*;
//! # #[derive(serde::Deserialize)] pub struct S { url: String }
//! # pub struct P { url: String }
//! # impl Plugin for P {
//! #     const NAME: &'static str = "p";
//! #     type Settings = S;
//! #     fn describe() -> Description { Description::new("") }
//! #     fn new(s: S, _: &Host) -> Result<Self, Error> { Ok(P { url: s.url }) }
//! #     fn collect(&mut self, req: &CollectRequest, host: &Host) -> Result<CollectResponse, Error> {
//! #         let r = host.http(&HttpRequest::get(&self.url))?;
//! #         let n: f64 = r.body.trim().parse().map_err(|_| Error::upstream("not a number"))?;
//! #         let mut out = CollectResponse::default();
//! #         out.observations.push(Observation::new("n", req.window.to, n));
//! #         Ok(out)
//! #     }
//! # }
//! let host = TestHost::new().fixture(Fixture::get("http://stats.test/n").respond(200, "42"));
//! let mut plugin = Harness::<P>::create(serde_json::json!({"url": "http://stats.test/n"}), host).unwrap();
//! let day = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
//! let out = plugin.collect(&CollectRequest::new("test", Window::new(day, day))).unwrap();
//! assert_eq!(out.observations[0].value, 42.0);
//! assert_eq!(plugin.host().requests().len(), 1);
//! ```

use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

use crate::protocol::{
    CollectRequest, CollectResponse, Created, Error, ErrorKind, HttpRequest, HttpResponse, Level,
};
use crate::{Host, LocalHost, Plugin};

/// A recorded HTTP answer, matched by method, URL (without query), the
/// query parameters it names and the request headers it names (others in
/// the request are ignored; header names compare case-insensitively).
///
/// The body is bytes, answered as the daemon would: decoded by the charset
/// it declares (a `Content-Type` header added with [`Fixture::header`], an
/// XML declaration, a `<meta>`), or as bytes to a request that asked for them.
///
/// ```
/// use tally_plugin::testkit::Fixture;
/// let f = Fixture::get("http://api.test/datacube").query("day", "2026-11-27").respond(200, "{}");
/// assert_eq!(f.status, 200);
/// // A GB2312 page, as its server sends it.
/// let f = Fixture::get("http://www.x.gov.cn/zwdt/index.html")
///     .header("Content-Type", "text/html; charset=gb2312")
///     .respond_bytes(200, vec![0xc4, 0xea]);
/// assert_eq!(f.body, [0xc4, 0xea]);
/// ```
#[derive(Debug, Clone)]
pub struct Fixture {
    pub method: String,
    pub url: String,
    pub query: Vec<(String, String)>,
    /// Request headers a request must carry to match.
    pub request_headers: Vec<(String, String)>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Fixture {
    pub fn new(method: &str, url: &str) -> Fixture {
        Fixture {
            method: method.to_owned(),
            url: url.to_owned(),
            query: Vec::new(),
            request_headers: Vec::new(),
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(url: &str) -> Fixture {
        Fixture::new("GET", url)
    }

    pub fn post(url: &str) -> Fixture {
        Fixture::new("POST", url)
    }

    /// Only requests carrying this query parameter match.
    pub fn query(mut self, name: &str, value: &str) -> Fixture {
        self.query.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Only requests carrying this header with this value match: a token
    /// sent as a header, an `Accept` a platform insists on.
    ///
    /// ```
    /// use tally_plugin::testkit::{Fixture, TestHost};
    /// use tally_plugin::{HttpRequest, LocalHost};
    /// let host = TestHost::new()
    ///     .fixture(Fixture::get("http://api.test/stats").request_header("Authorization", "Bearer t0k").respond(200, "{}"))
    ///     .fixture(Fixture::get("http://api.test/stats").respond(401, "no token"));
    /// let with = HttpRequest::get("http://api.test/stats").header("authorization", "Bearer t0k");
    /// assert_eq!(host.http(&with).unwrap().status, 200);
    /// assert_eq!(host.http(&HttpRequest::get("http://api.test/stats")).unwrap().status, 401);
    /// ```
    pub fn request_header(mut self, name: &str, value: &str) -> Fixture {
        self.request_headers
            .push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds a header to the answer.
    pub fn header(mut self, name: &str, value: &str) -> Fixture {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The status and body (text, sent as UTF-8) to answer with.
    pub fn respond(mut self, status: u16, body: impl Into<String>) -> Fixture {
        self.status = status;
        self.body = body.into().into_bytes();
        self
    }

    /// The status and body bytes to answer with: a page in GBK, a workbook.
    pub fn respond_bytes(mut self, status: u16, body: impl Into<Vec<u8>>) -> Fixture {
        self.status = status;
        self.body = body.into();
        self
    }

    fn matches(&self, req: &HttpRequest) -> bool {
        let (path, inline_query) = split_url(&req.url);
        let mut query: Vec<(String, String)> = inline_query;
        query.extend(req.query.iter().cloned());
        self.method.eq_ignore_ascii_case(&req.method)
            && self.url == path
            && self.query.iter().all(|q| query.contains(q))
            && self.request_headers.iter().all(|(name, value)| {
                req.headers
                    .iter()
                    .any(|(n, v)| n.eq_ignore_ascii_case(name) && v == value)
            })
    }
}

fn split_url(url: &str) -> (&str, Vec<(String, String)>) {
    match url.split_once('?') {
        None => (url, Vec::new()),
        Some((path, q)) => {
            let pairs = q
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (p.to_owned(), String::new()),
                })
                .collect();
            (path, pairs)
        }
    }
}

/// The daemon's services, for tests. Cheap to clone; clones share the log,
/// the recorded requests and the clock.
#[derive(Clone)]
pub struct TestHost {
    inner: Arc<Inner>,
}

struct Inner {
    now: Mutex<DateTime<Utc>>,
    fixtures: Mutex<Vec<Fixture>>,
    live: bool,
    log: Mutex<Vec<(Level, String)>>,
    requests: Mutex<Vec<HttpRequest>>,
    cancel: Mutex<Cancel>,
    /// How far the clock moves with each HTTP request.
    step: Mutex<chrono::Duration>,
}

/// When [`TestHost`]'s `cancelled()` turns true.
#[derive(Default)]
struct Cancel {
    /// After this many calls of `cancelled()` answered false.
    after_checks: Option<u64>,
    /// Once the clock reads this (see [`TestHost::advance_per_request`]).
    at: Option<DateTime<Utc>>,
    /// After this many HTTP requests.
    after_requests: Option<usize>,
    checks: u64,
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost::new()
    }
}

impl TestHost {
    /// A host whose clock reads 2026-11-27 02:00 UTC and which answers HTTP
    /// only from fixtures (an unmatched request is an error naming it).
    pub fn new() -> TestHost {
        Self::build(false)
    }

    /// A host that sends requests no fixture matches to the real address: for
    /// a test server you started on 127.0.0.1.
    pub fn live() -> TestHost {
        Self::build(true)
    }

    fn build(live: bool) -> TestHost {
        let now = Utc
            .with_ymd_and_hms(2026, 11, 27, 2, 0, 0)
            .single()
            .unwrap_or_default();
        TestHost {
            inner: Arc::new(Inner {
                now: Mutex::new(now),
                fixtures: Mutex::new(Vec::new()),
                live,
                log: Mutex::new(Vec::new()),
                requests: Mutex::new(Vec::new()),
                cancel: Mutex::new(Cancel::default()),
                step: Mutex::new(chrono::Duration::zero()),
            }),
        }
    }

    /// Adds a recorded answer; the first matching fixture answers.
    pub fn fixture(self, fixture: Fixture) -> TestHost {
        lock(&self.inner.fixtures).push(fixture);
        self
    }

    /// Sets the clock.
    pub fn at(self, now: DateTime<Utc>) -> TestHost {
        *lock(&self.inner.now) = now;
        self
    }

    /// `host.cancelled()` answers false `checks` times, then true: the
    /// daemon giving up (timeout, shutdown) between two steps of a run.
    ///
    /// ```
    /// use tally_plugin::LocalHost;
    /// use tally_plugin::testkit::TestHost;
    /// let host = TestHost::new().cancel_after_checks(2);
    /// assert_eq!([host.cancelled(), host.cancelled(), host.cancelled()], [false, false, true]);
    /// ```
    pub fn cancel_after_checks(self, checks: u64) -> TestHost {
        lock(&self.inner.cancel).after_checks = Some(checks);
        self
    }

    /// `host.cancelled()` answers true once the plugin has made `requests`
    /// HTTP requests: cancelled in the middle of paging through an API.
    ///
    /// ```
    /// use tally_plugin::{HttpRequest, LocalHost};
    /// use tally_plugin::testkit::{Fixture, TestHost};
    /// let host = TestHost::new().fixture(Fixture::get("http://api.test/p").respond(200, "[]")).cancel_after_requests(1);
    /// assert!(!host.cancelled());
    /// host.http(&HttpRequest::get("http://api.test/p")).unwrap();
    /// assert!(host.cancelled());
    /// ```
    pub fn cancel_after_requests(self, requests: usize) -> TestHost {
        lock(&self.inner.cancel).after_requests = Some(requests);
        self
    }

    /// `host.cancelled()` answers true once the clock reads `at` or later:
    /// a run's timeout. Make the clock move with
    /// [`TestHost::advance_per_request`].
    ///
    /// ```
    /// use tally_plugin::{HttpRequest, LocalHost};
    /// use tally_plugin::chrono::Duration;
    /// use tally_plugin::testkit::{Fixture, TestHost};
    /// let host = TestHost::new().fixture(Fixture::get("http://api.test/p").respond(200, "[]"));
    /// let start = host.now();
    /// let host = host.advance_per_request(Duration::seconds(20)).cancel_at(start + Duration::seconds(60));
    /// for _ in 0..2 {
    ///     host.http(&HttpRequest::get("http://api.test/p")).unwrap();
    /// }
    /// assert!(!host.cancelled());
    /// host.http(&HttpRequest::get("http://api.test/p")).unwrap();
    /// assert!(host.cancelled());
    /// ```
    pub fn cancel_at(self, at: DateTime<Utc>) -> TestHost {
        lock(&self.inner.cancel).at = Some(at);
        self
    }

    /// Moves the clock forward by `step` with every HTTP request, so that
    /// time passes during a run as it does against a real platform.
    pub fn advance_per_request(self, step: chrono::Duration) -> TestHost {
        *lock(&self.inner.step) = step;
        self
    }

    /// What the clock reads now (it moves with
    /// [`TestHost::advance_per_request`]).
    ///
    /// ```
    /// use tally_plugin::testkit::TestHost;
    /// assert_eq!(TestHost::new().now().to_rfc3339(), "2026-11-27T02:00:00+00:00");
    /// ```
    pub fn now(&self) -> DateTime<Utc> {
        *lock(&self.inner.now)
    }

    /// Every line the plugin logged.
    pub fn logs(&self) -> Vec<(Level, String)> {
        lock(&self.inner.log).clone()
    }

    /// Every HTTP request the plugin made, in order.
    pub fn requests(&self) -> Vec<HttpRequest> {
        lock(&self.inner.requests).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking test thread must not hide the next assertion behind a poison error.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LocalHost for TestHost {
    fn log(&self, level: Level, message: &str) {
        lock(&self.inner.log).push((level, message.to_owned()));
    }

    fn now(&self) -> DateTime<Utc> {
        *lock(&self.inner.now)
    }

    fn cancelled(&self) -> bool {
        let now = self.now();
        let requests = lock(&self.inner.requests).len();
        let mut cancel = lock(&self.inner.cancel);
        let by_time = cancel.at.is_some_and(|at| now >= at);
        let by_requests = cancel.after_requests.is_some_and(|n| requests >= n);
        let by_checks = cancel.after_checks.is_some_and(|n| cancel.checks >= n);
        let cancelled = by_time || by_requests || by_checks;
        if !cancelled {
            cancel.checks += 1;
        }
        cancelled
    }

    fn http(&self, request: &HttpRequest) -> Result<HttpResponse, Error> {
        lock(&self.inner.requests).push(request.clone());
        let step = *lock(&self.inner.step);
        *lock(&self.inner.now) += step;
        let found = lock(&self.inner.fixtures)
            .iter()
            .find(|f| f.matches(request))
            .cloned();
        if let Some(f) = found {
            return Ok(HttpResponse::from_body(
                f.status,
                f.headers,
                f.body,
                request.body_as_bytes,
            ));
        }
        if self.inner.live {
            return live_request(request);
        }
        Err(Error::upstream(format!(
            "testkit: no fixture for {} {} (query {:?})",
            request.method, request.url, request.query
        )))
    }
}

fn live_request(request: &HttpRequest) -> Result<HttpResponse, Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_millis(
            request.timeout_ms.unwrap_or(30_000),
        )))
        .build()
        .into();
    let fail = |e: ureq::Error| Error::upstream(format!("{} {}: {e}", request.method, request.url));
    let result = match request.method.to_ascii_uppercase().as_str() {
        "GET" => {
            let mut b = agent.get(&request.url);
            for (k, v) in &request.query {
                b = b.query(k, v);
            }
            for (k, v) in &request.headers {
                b = b.header(k, v);
            }
            b.call()
        }
        "POST" => {
            let mut b = agent.post(&request.url);
            for (k, v) in &request.query {
                b = b.query(k, v);
            }
            for (k, v) in &request.headers {
                b = b.header(k, v);
            }
            b.send(request.body.clone().unwrap_or_default())
        }
        other => {
            return Err(Error::internal(format!(
                "testkit: method {other} is not supported in live mode"
            )));
        }
    };
    let mut resp = result.map_err(fail)?;
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
        .collect();
    let bytes = resp.body_mut().read_to_vec().map_err(fail)?;
    Ok(HttpResponse::from_body(
        status,
        headers,
        bytes,
        request.body_as_bytes,
    ))
}

/// A plugin created from settings the way the daemon does it, ready to collect.
pub struct Harness<P: Plugin> {
    plugin: P,
    host: Host,
    test_host: TestHost,
    created: Created,
}

impl<P: Plugin> Harness<P> {
    /// Creates the plugin from JSON settings (as `[sources.settings]` would
    /// become). Settings errors are exactly those the daemon would report.
    pub fn create(settings: serde_json::Value, test_host: TestHost) -> Result<Self, Error> {
        let bytes = serde_json::to_vec(&settings)
            .map_err(|e| Error::internal(format!("testkit: cannot encode settings: {e}")))?;
        // The daemon checks the settings against the plugin's schema first.
        if let Some(schema) = P::describe().settings_schema
            && let Some(problem) = crate::schema::validate(&schema, &settings).first()
        {
            return Err(Error::settings(problem.to_string()));
        }
        let parsed = crate::parse_settings::<P>(&bytes)?;
        let host = Host::local(Arc::new(test_host.clone()));
        let plugin = P::new(parsed, &host)?;
        let created = Created {
            emits: plugin.emits(),
        };
        Ok(Harness {
            plugin,
            host,
            test_host,
            created,
        })
    }

    /// Runs one collection. The request goes through JSON and back first, so
    /// what the plugin sees is what the daemon would send; a request without
    /// `today` gets the test host's clock's day in the request's time zone,
    /// as the daemon fills it in.
    pub fn collect(&mut self, request: &CollectRequest) -> Result<CollectResponse, Error> {
        let mut wire = serde_json::to_vec(request)
            .and_then(|b| serde_json::from_slice::<CollectRequest>(&b))
            .map_err(|e| Error::internal(format!("testkit: request does not round-trip: {e}")))?;
        if wire.today.is_none() {
            let tz: chrono_tz::Tz = wire.timezone.parse().map_err(|_| {
                Error::internal(format!(
                    "testkit: unknown time zone {:?} in the request",
                    wire.timezone
                ))
            })?;
            wire.today = Some(self.test_host.now().with_timezone(&tz).date_naive());
        }
        let response = self.plugin.collect(&wire, &self.host)?;
        let response: CollectResponse = serde_json::to_vec(&response)
            .and_then(|b| serde_json::from_slice(&b))
            .map_err(|e| Error::internal(format!("testkit: response does not round-trip: {e}")))?;
        // The daemon ignores uncovered days outside the window (with a
        // warning); in a test that is a plugin bug worth failing on.
        let window = request.window;
        if let Some(w) = response
            .uncovered
            .iter()
            .find(|w| w.from > w.to || !window.contains(w.from) || !window.contains(w.to))
        {
            return Err(Error::internal(format!(
                "testkit: uncovered {}..{} is not a range of the window {}..{}; the daemon would ignore it",
                w.from, w.to, window.from, window.to
            )));
        }
        Ok(response)
    }

    /// Runs one collection like [`Harness::collect`] and returns, besides the
    /// response, the days it said it did not cover.
    ///
    /// ```
    /// use chrono::NaiveDate;
    /// use tally_plugin::testkit::{Harness, TestHost};
    /// use tally_plugin::*;
    /// # #[derive(serde::Deserialize)] pub struct S {}
    /// # pub struct P;
    /// # impl Plugin for P {
    /// #     const NAME: &'static str = "p";
    /// #     type Settings = S;
    /// #     fn describe() -> Description { Description::new("") }
    /// #     fn new(_: S, _: &Host) -> Result<Self, Error> { Ok(P) }
    /// #     fn collect(&mut self, req: &CollectRequest, _: &Host) -> Result<CollectResponse, Error> {
    /// #         let mut out = CollectResponse::default();
    /// #         out.uncover(req.window.to); // not final yet
    /// #         Ok(out)
    /// #     }
    /// # }
    /// let mut plugin = Harness::<P>::create(serde_json::json!({}), TestHost::new()).unwrap();
    /// let d = |day| NaiveDate::from_ymd_opt(2026, 11, day).unwrap();
    /// let (_, uncovered) = plugin
    ///     .collect_uncovered(&CollectRequest::new("test", Window::new(d(25), d(27))))
    ///     .unwrap();
    /// assert_eq!(uncovered, [d(27)]);
    /// ```
    pub fn collect_uncovered(
        &mut self,
        request: &CollectRequest,
    ) -> Result<(CollectResponse, Vec<NaiveDate>), Error> {
        let response = self.collect(request)?;
        let days = response.uncovered_days();
        Ok((response, days))
    }

    /// Runs one collection that must fail, and returns its error: with
    /// [`assert_kind`], how a platform's answer is classified.
    ///
    /// # Panics
    ///
    /// When the collection succeeds, naming what it returned.
    pub fn collect_err(&mut self, request: &CollectRequest) -> Error {
        match self.collect(request) {
            Ok(out) => panic!(
                "expected the collection to fail, it returned {} observations and warnings {:?}",
                out.observations.len(),
                out.warnings
            ),
            Err(e) => e,
        }
    }

    /// The indicators the created source says it emits.
    pub fn emits(&self) -> &[String] {
        &self.created.emits
    }

    /// The test host, to read logs and requests back.
    pub fn host(&self) -> &TestHost {
        &self.test_host
    }
}

/// Asserts that a plugin call failed with an error of `kind` and returns the
/// error, to check its message and `retry_after` next. The kind decides what
/// the daemon retries (see the error table of the author guide), so test how
/// each answer of your platform is classified.
///
/// ```
/// use tally_plugin::testkit::assert_kind;
/// use tally_plugin::{Error, ErrorKind};
/// let answer: Result<(), Error> = Err(Error::rate_limited("HTTP 429"));
/// let e = assert_kind(answer, ErrorKind::RateLimited);
/// assert_eq!(e.message, "HTTP 429");
/// ```
///
/// # Panics
///
/// When the call succeeded, or failed with another kind; the message names
/// both kinds and the error's message.
#[track_caller]
pub fn assert_kind<T: std::fmt::Debug>(result: Result<T, Error>, kind: ErrorKind) -> Error {
    match result {
        Ok(value) => panic!(
            "expected an error of kind {}, the call succeeded: {value:?}",
            kind.as_str()
        ),
        Err(e) if e.kind == kind => e,
        Err(e) => panic!(
            "expected an error of kind {}, got kind {}: {}",
            kind.as_str(),
            e.kind.as_str(),
            e.message
        ),
    }
}

/// A run's observations as `unit indicator entity day value` lines (`-` for
/// no unit or no entity), for short assertions on what a plugin answered.
///
/// ```
/// use tally_plugin::testkit::observation_lines;
/// use tally_plugin::{CollectResponse, Observation};
/// let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
/// let mut out = CollectResponse::default();
/// out.observations.push(Observation::new("posts", day, 3.0).unit("county"));
/// assert_eq!(observation_lines(&out), ["county posts - 2026-11-02 3"]);
/// ```
pub fn observation_lines(out: &CollectResponse) -> Vec<String> {
    out.observations
        .iter()
        .map(|o| {
            format!(
                "{} {} {} {} {}",
                o.unit.as_deref().unwrap_or("-"),
                o.indicator,
                if o.entity.is_empty() { "-" } else { &o.entity },
                o.day,
                o.value
            )
        })
        .collect()
}
