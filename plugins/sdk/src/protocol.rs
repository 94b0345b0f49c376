//! The messages that cross the plugin boundary, as JSON.
//!
//! These are the only serializable types shared by the daemon and plugins.
//! Compatibility rules (they are what lets a plugin built against an older SDK
//! keep working with a newer daemon, and the other way round):
//!
//! - never `deny_unknown_fields` here: either side may be newer;
//! - every field added after protocol 1 carries `#[serde(default)]`;
//! - a field is never renamed or removed within ABI major 1.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// Version of the JSON messages below. It can grow without changing the ABI.
///
/// - 1: the first.
/// - 2: [`HttpRequest::body_as_bytes`] and [`HttpResponse`]'s `bytes`,
///   `charset` and `warnings`; text bodies decoded by their declared charset;
///   [`CollectResponse`]'s `uncovered` days.
/// - 3: [`Description`]'s `settings_schema`.
/// - 4: [`CollectRequest`]'s `today`, [`Error`]'s `retry_after`.
pub const PROTOCOL_VERSION: u32 = 4;

/// How an indicator combines over time and over units.
///
/// ```
/// use tally_plugin::Kind;
/// assert_eq!(serde_json::to_string(&Kind::Level).unwrap(), "\"level\"");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Additive over time: a period's value is the sum of its days.
    Count,
    /// A level at a point in time (followers, cumulative points).
    Level,
    /// Distinct entities with a non-zero value (an article claimed by two units counts once).
    Distinct,
}

/// What a plugin says about itself, independent of any configuration.
///
/// ```
/// use tally_plugin::{Description, IndicatorDecl, Kind};
/// let d = Description::new("Counts posts")
///     .indicator(IndicatorDecl::new("wechat_posts", "微信公众号发文数", Kind::Count, "篇"));
/// assert_eq!(d.indicators.len(), 1);
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Description {
    /// The plugin's name as configured in `plugin = "..."`; filled in by the SDK.
    #[serde(default)]
    pub name: String,
    /// The plugin's version; filled in by the SDK from the crate version.
    #[serde(default)]
    pub version: String,
    /// One line for `tallyd plugins`.
    #[serde(default)]
    pub summary: String,
    /// Indicators the plugin can emit whatever its settings (empty for generic
    /// plugins such as `http_json`, whose indicators come from their settings).
    #[serde(default)]
    pub indicators: Vec<IndicatorDecl>,
    /// The JSON Schema of the plugin's `[sources.settings]` (protocol 3), set
    /// by [`Description::settings_schema`]. The daemon checks every source's
    /// settings against it before calling the plugin, and prints it with
    /// `tallyd plugins --settings NAME`. `None` for plugins that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings_schema: Option<serde_json::Value>,
}

impl Description {
    /// A description with a one-line summary and no indicators yet.
    pub fn new(summary: impl Into<String>) -> Self {
        Description {
            summary: summary.into(),
            ..Description::default()
        }
    }

    /// Adds an indicator the plugin always can emit.
    pub fn indicator(mut self, decl: IndicatorDecl) -> Self {
        self.indicators.push(decl);
        self
    }

    /// Declares the settings type, whose JSON Schema (derived with
    /// [`schemars`]) the daemon validates `[sources.settings]` against, so an
    /// unknown key or a wrong type is reported at its line before the plugin
    /// runs. Doc comments become the descriptions of `tallyd plugins
    /// --settings`; `#[schemars(extend("examples" = [...]))]` gives the value its
    /// example shows.
    ///
    /// ```
    /// use serde::Deserialize;
    /// use tally_plugin::Description;
    /// use tally_plugin::schemars::{self, JsonSchema};
    ///
    /// #[derive(Deserialize, JsonSchema)]
    /// #[serde(deny_unknown_fields)]
    /// struct Settings {
    ///     /// The endpoint.
    ///     #[schemars(extend("examples" = ["https://api.example/stats"]))]
    ///     url: String,
    /// }
    ///
    /// let d = Description::new("reads stats").settings_schema::<Settings>();
    /// let schema = d.settings_schema.unwrap();
    /// assert_eq!(schema["required"], serde_json::json!(["url"]));
    /// assert_eq!(schema["additionalProperties"], false);
    /// ```
    pub fn settings_schema<S: schemars::JsonSchema>(mut self) -> Self {
        self.settings_schema = Some(schemars::schema_for!(S).to_value());
        self
    }
}

/// An indicator a plugin can emit, with the display name and unit it suggests.
///
/// ```
/// use tally_plugin::{IndicatorDecl, Kind};
/// let i = IndicatorDecl::new("weibo_followers", "微博粉丝数", Kind::Level, "人");
/// assert_eq!(i.kind, Kind::Level);
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndicatorDecl {
    pub id: String,
    pub name: String,
    pub kind: Kind,
    pub unit: String,
}

impl IndicatorDecl {
    pub fn new(id: &str, name: &str, kind: Kind, unit: &str) -> Self {
        IndicatorDecl {
            id: id.to_owned(),
            name: name.to_owned(),
            kind,
            unit: unit.to_owned(),
        }
    }
}

/// The answer to creating a source: which indicators this configured source emits.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Created {
    #[serde(default)]
    pub emits: Vec<String>,
}

/// A unit the source may report for, with the names other systems use for it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UnitRef {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// An indicator of the daemon's catalogue, as configured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndicatorRef {
    pub id: String,
    pub name: String,
    pub kind: Kind,
    #[serde(default)]
    pub unit: String,
}

/// The days a run should cover, both ends inclusive, in the daemon's time zone.
///
/// ```
/// use chrono::NaiveDate;
/// use tally_plugin::Window;
/// let w = Window::new(NaiveDate::from_ymd_opt(2026, 9, 29).unwrap(), NaiveDate::from_ymd_opt(2026, 10, 1).unwrap());
/// assert_eq!(w.days().count(), 3);
/// ```
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Window {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Window {
    pub fn new(from: NaiveDate, to: NaiveDate) -> Self {
        Window { from, to }
    }

    /// Every day of the window, in order.
    pub fn days(&self) -> impl Iterator<Item = NaiveDate> + use<> {
        let to = self.to;
        self.from.iter_days().take_while(move |d| *d <= to)
    }

    pub fn contains(&self, day: NaiveDate) -> bool {
        self.from <= day && day <= self.to
    }
}

/// One collection run's input.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CollectRequest {
    pub protocol: u32,
    /// The configured source id, for messages.
    pub source: String,
    pub window: Window,
    /// IANA name of the daemon's time zone (e.g. `Asia/Shanghai`); days are in it.
    pub timezone: String,
    /// The units this source may report for: its configured units and their descendants.
    #[serde(default)]
    pub units: Vec<UnitRef>,
    /// The unit an observation without `unit` belongs to (set when the source has exactly one).
    #[serde(default)]
    pub default_unit: Option<String>,
    /// The daemon's indicator catalogue, so that forms can name columns by display name.
    #[serde(default)]
    pub indicators: Vec<IndicatorRef>,
    /// The resume state the plugin returned from its last successful run, if any.
    #[serde(default)]
    pub state: Option<serde_json::Value>,
    /// The day the run started on, in `timezone` (protocol 4); read it with
    /// [`CollectRequest::today`]. `None` from an older daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub today: Option<NaiveDate>,
}

impl CollectRequest {
    /// A request for a window, with no units, indicators or state; tests fill in the rest.
    ///
    /// ```
    /// use chrono::NaiveDate;
    /// use tally_plugin::{CollectRequest, Window};
    /// let d = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
    /// let req = CollectRequest::new("demo", Window::new(d, d));
    /// assert_eq!(req.timezone, "Asia/Shanghai");
    /// ```
    pub fn new(source: &str, window: Window) -> Self {
        CollectRequest {
            protocol: PROTOCOL_VERSION,
            source: source.to_owned(),
            window,
            timezone: "Asia/Shanghai".to_owned(),
            units: Vec::new(),
            default_unit: None,
            indicators: Vec::new(),
            state: None,
            today: None,
        }
    }

    /// The day the run started on, in the daemon's time zone (`timezone`):
    /// usually a partial day, whose figures a platform has not finished
    /// counting. A daemon older than protocol 4 does not say; then it is the
    /// window's last day, which is today for a scheduled run. The test kit's
    /// [`Harness`](crate::testkit::Harness) fills it in from its clock.
    ///
    /// ```
    /// use tally_plugin::{CollectRequest, Window};
    /// use tally_plugin::chrono::NaiveDate;
    /// let day = |d| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
    /// let req = CollectRequest::new("demo", Window::new(day(20), day(27))).with_today(day(27));
    /// assert_eq!(req.today(), day(27));
    /// ```
    pub fn today(&self) -> NaiveDate {
        self.today.unwrap_or(self.window.to)
    }

    /// The day before [`CollectRequest::today`]: the last day a platform
    /// that publishes daily figures the morning after can have finished.
    /// Clip the window to it to avoid emitting today's partial day.
    ///
    /// ```
    /// use tally_plugin::{CollectRequest, Window};
    /// use tally_plugin::chrono::NaiveDate;
    /// let day = |d| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
    /// let req = CollectRequest::new("demo", Window::new(day(20), day(27))).with_today(day(27));
    /// assert_eq!(req.last_complete_day(), day(26));
    /// let to = req.window.to.min(req.last_complete_day());
    /// assert_eq!(req.window.days().filter(|d| *d <= to).count(), 7);
    /// ```
    pub fn last_complete_day(&self) -> NaiveDate {
        let today = self.today();
        today.pred_opt().unwrap_or(today)
    }

    /// Sets the day the run started on (tests; the daemon sets it).
    ///
    /// ```
    /// use tally_plugin::{CollectRequest, Window};
    /// use tally_plugin::chrono::NaiveDate;
    /// let d = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
    /// assert_eq!(CollectRequest::new("demo", Window::new(d, d)).with_today(d).today, Some(d));
    /// ```
    pub fn with_today(mut self, today: NaiveDate) -> Self {
        self.today = Some(today);
        self
    }

    /// Maps the text another system uses for a unit (its id, display name or one
    /// of its aliases, surrounding blanks ignored) to the unit's id.
    ///
    /// ```
    /// use chrono::NaiveDate;
    /// use tally_plugin::{CollectRequest, UnitRef, Window};
    /// let d = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
    /// let mut req = CollectRequest::new("demo", Window::new(d, d));
    /// req.units.push(UnitRef { id: "county/natres".into(), name: "自然资源局".into(),
    ///                          aliases: vec!["某县自然资源局党支部".into()] });
    /// assert_eq!(req.resolve_unit(" 某县自然资源局党支部 "), Some("county/natres"));
    /// assert_eq!(req.resolve_unit("教育局"), None);
    /// ```
    pub fn resolve_unit(&self, text: &str) -> Option<&str> {
        let text = text.trim();
        let found = self
            .units
            .iter()
            .find(|u| u.id == text)
            .or_else(|| self.units.iter().find(|u| u.name == text))
            .or_else(|| {
                self.units
                    .iter()
                    .find(|u| u.aliases.iter().any(|a| a == text))
            });
        found.map(|u| u.id.as_str())
    }

    /// Maps a column header or key (an indicator id or display name, with or
    /// without its display unit in brackets) to the indicator's id.
    ///
    /// ```
    /// use chrono::NaiveDate;
    /// use tally_plugin::{CollectRequest, IndicatorRef, Kind, Window};
    /// let d = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
    /// let mut req = CollectRequest::new("demo", Window::new(d, d));
    /// req.indicators.push(IndicatorRef { id: "meetings".into(), name: "会议次数".into(),
    ///                                    kind: Kind::Count, unit: "次".into() });
    /// assert_eq!(req.resolve_indicator("会议次数（次）"), Some("meetings"));
    /// assert_eq!(req.resolve_indicator("meetings"), Some("meetings"));
    /// assert_eq!(req.indicator_kind("meetings"), Some(Kind::Count));
    /// ```
    pub fn resolve_indicator(&self, text: &str) -> Option<&str> {
        let text = text.trim();
        let bare = strip_unit_suffix(text);
        self.indicators
            .iter()
            .find(|i| i.id == text)
            .or_else(|| self.indicators.iter().find(|i| i.name == text))
            .or_else(|| self.indicators.iter().find(|i| i.name == bare))
            .map(|i| i.id.as_str())
    }

    /// The configured kind of an indicator of the catalogue.
    pub fn indicator_kind(&self, id: &str) -> Option<Kind> {
        self.indicators.iter().find(|i| i.id == id).map(|i| i.kind)
    }
}

/// Drops a display unit in brackets from a header: forms often write
/// `会议次数(次)` or `会议次数（次）` for the indicator `会议次数`.
///
/// ```
/// assert_eq!(tally_plugin::strip_unit_suffix(" 会议次数（次） "), "会议次数");
/// assert_eq!(tally_plugin::strip_unit_suffix("(次)"), "(次)");
/// ```
pub fn strip_unit_suffix(text: &str) -> &str {
    let text = text.trim();
    for (open, close) in [('(', ')'), ('（', '）')] {
        if let Some(rest) = text.strip_suffix(close)
            && let Some(i) = rest.rfind(open)
            && i > 0
        {
            return rest[..i].trim_end();
        }
    }
    text
}

/// One number for one unit, indicator, entity and day.
///
/// ```
/// use chrono::NaiveDate;
/// use tally_plugin::Observation;
/// let day = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
/// let o = Observation::new("wechat_posts", day, 3.0).unit("county/natres");
/// assert_eq!(o.unit.as_deref(), Some("county/natres"));
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Observation {
    /// A unit id from the request's `units`; `None` means the request's `default_unit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    pub indicator: String,
    /// A finer key below the unit (a staff member, an account, an article URL); empty if none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub entity: String,
    pub day: NaiveDate,
    pub value: f64,
}

impl Observation {
    pub fn new(indicator: &str, day: NaiveDate, value: f64) -> Self {
        Observation {
            unit: None,
            indicator: indicator.to_owned(),
            entity: String::new(),
            day,
            value,
        }
    }

    /// Sets the unit (an id from the request).
    pub fn unit(mut self, unit: impl Into<String>) -> Self {
        self.unit = Some(unit.into());
        self
    }

    /// Sets the entity (a staff member, an account, an article URL).
    pub fn entity(mut self, entity: impl Into<String>) -> Self {
        self.entity = entity.into();
        self
    }
}

/// One collection run's output.
///
/// ```
/// use tally_plugin::CollectResponse;
/// let mut out = CollectResponse::default();
/// out.warn("forms/natres.csv:4:3: bad number \"三\"");
/// assert_eq!(out.warnings.len(), 1);
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CollectResponse {
    #[serde(default)]
    pub observations: Vec<Observation>,
    /// New resume state; the daemon stores it in the same transaction as the
    /// observations, so it only advances when the data is durable. `None` keeps the old one.
    #[serde(default)]
    pub state: Option<serde_json::Value>,
    /// Problems that did not stop the run (a malformed row), each naming its place.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Days of the request's window this run could not cover (data not final
    /// yet, not measurable, refused by the platform): the daemon stores nothing
    /// for them, counts them as gaps of the source's coverage, and starts a
    /// later run's window early enough to ask them again. Empty (and absent in
    /// older plugins' answers): the whole window was covered. Added after
    /// protocol 1; set it with [`CollectResponse::uncover`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uncovered: Vec<Window>,
}

impl CollectResponse {
    pub fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }

    /// Says that the run did not cover `day`: nothing was (or could be)
    /// collected for it, so it must not count as collected. Consecutive days
    /// become one range; repeating a day changes nothing.
    ///
    /// ```
    /// use chrono::NaiveDate;
    /// use tally_plugin::{CollectResponse, Window};
    /// let d = |day| NaiveDate::from_ymd_opt(2026, 11, day).unwrap();
    /// let mut out = CollectResponse::default();
    /// out.uncover(d(26));
    /// out.uncover(d(27));
    /// out.uncover(d(27));
    /// out.uncover(d(20));
    /// assert_eq!(out.uncovered, [Window::new(d(20), d(20)), Window::new(d(26), d(27))]);
    /// assert_eq!(out.uncovered_days(), [d(20), d(26), d(27)]);
    /// ```
    pub fn uncover(&mut self, day: NaiveDate) {
        self.uncover_range(Window::new(day, day));
    }

    /// [`CollectResponse::uncover`] for every day of `days` (both ends
    /// inclusive); a range whose `from` is after its `to` changes nothing.
    pub fn uncover_range(&mut self, days: Window) {
        if days.from > days.to {
            return;
        }
        self.uncovered.push(days);
        self.uncovered.sort_by_key(|w| w.from);
        let mut merged: Vec<Window> = Vec::with_capacity(self.uncovered.len());
        for w in self.uncovered.drain(..) {
            match merged.last_mut() {
                Some(last) if w.from <= last.to.succ_opt().unwrap_or(last.to) => {
                    last.to = last.to.max(w.to);
                }
                _ => merged.push(w),
            }
        }
        self.uncovered = merged;
    }

    /// Every day of [`CollectResponse::uncovered`], in order, each once.
    pub fn uncovered_days(&self) -> Vec<NaiveDate> {
        let mut days: Vec<NaiveDate> = self.uncovered.iter().flat_map(Window::days).collect();
        days.sort();
        days.dedup();
        days
    }
}

/// Why a plugin call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The settings are wrong: fix the configuration.
    Settings,
    /// Credentials were refused: fix the secret or the account.
    Auth,
    /// The platform failed or answered garbage; likely to pass on a later run.
    Upstream,
    /// The platform's quota or rate limit is reached. Retried within the run
    /// like `upstream`, unless the error says when to try again
    /// ([`Error::retry_after`]): then no attempt, scheduled or retried, starts
    /// before that time.
    RateLimited,
    /// Input data (a file, a form) is unusable.
    Data,
    /// A bug in the plugin.
    Internal,
    /// A kind this SDK does not know (sent by a newer plugin).
    #[serde(other)]
    Unknown,
}

impl ErrorKind {
    /// The kind as it is written on the wire, in run records and in metrics.
    ///
    /// ```
    /// use tally_plugin::ErrorKind;
    /// assert_eq!(ErrorKind::RateLimited.as_str(), "rate_limited");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Settings => "settings",
            ErrorKind::Auth => "auth",
            ErrorKind::Upstream => "upstream",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Data => "data",
            ErrorKind::Internal => "internal",
            ErrorKind::Unknown => "unknown",
        }
    }
}

/// An HTTP request the daemon performs for the plugin.
///
/// ```
/// use tally_plugin::HttpRequest;
/// let req = HttpRequest::get("http://127.0.0.1:8080/api/stats")
///     .query("date", "2026-11-27")
///     .header("Accept", "application/json");
/// assert_eq!(req.method, "GET");
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub query: Vec<(String, String)>,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub body: Option<String>,
    /// Overrides the daemon's default request timeout.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Answer the body as bytes ([`HttpResponse::bytes`]) instead of text
    /// (protocol 2). Skipped when false, so older daemons see the request
    /// they know.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body_as_bytes: bool,
}

impl HttpRequest {
    pub fn new(method: &str, url: impl Into<String>) -> Self {
        HttpRequest {
            method: method.to_owned(),
            url: url.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            timeout_ms: None,
            body_as_bytes: false,
        }
    }

    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    pub fn post(url: impl Into<String>, body: impl Into<String>) -> Self {
        let mut req = Self::new("POST", url);
        req.body = Some(body.into());
        req
    }

    pub fn query(mut self, name: &str, value: impl Into<String>) -> Self {
        self.query.push((name.to_owned(), value.into()));
        self
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Asks for the body as bytes, untouched: a workbook, an archive, a file
    /// in an encoding the plugin decodes itself. The answer's `body` is then
    /// empty and [`HttpResponse::bytes`] holds the body.
    ///
    /// ```
    /// use tally_plugin::HttpRequest;
    /// let req = HttpRequest::get("http://127.0.0.1:8080/export.xlsx").body_as_bytes();
    /// assert!(req.body_as_bytes);
    /// ```
    pub fn body_as_bytes(mut self) -> Self {
        self.body_as_bytes = true;
        self
    }
}

/// The daemon's answer to an [`HttpRequest`]. Any status arrives here; only a
/// failure to get an answer at all (refused, timed out) is an error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The body as text, decoded by the charset it declares (the
    /// `Content-Type` header, an XML declaration, a `<meta>`; see
    /// [`crate::charset`]), UTF-8 by default. Empty when the request asked for
    /// [`HttpRequest::body_as_bytes`].
    #[serde(default)]
    pub body: String,
    /// The body's bytes, when the request asked for them (protocol 2). JSON
    /// strings cannot carry arbitrary bytes, so on the wire this is the
    /// field `body_base64`.
    #[serde(
        default,
        rename = "body_base64",
        with = "base64_bytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub bytes: Option<Vec<u8>>,
    /// The encoding `body` was decoded from (`UTF-8`, `GBK`, `gb18030`, ...;
    /// protocol 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charset: Option<String>,
    /// Problems decoding `body` that did not stop it: an unknown charset
    /// label, invalid bytes replaced by U+FFFD (protocol 2). The daemon logs
    /// them too; a plugin may add them to its run's warnings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl HttpResponse {
    /// The answer to a request, from the status, headers and body bytes
    /// received: the body decoded by its declared charset, or kept as bytes
    /// when `as_bytes`. The daemon and the test kit build every answer here.
    ///
    /// ```
    /// use tally_plugin::HttpResponse;
    /// let headers = vec![("Content-Type".to_owned(), "text/html; charset=gbk".to_owned())];
    /// let r = HttpResponse::from_body(200, headers.clone(), vec![0xc4, 0xea], false);
    /// assert_eq!((r.body.as_str(), r.charset.as_deref()), ("年", Some("GBK")));
    /// let r = HttpResponse::from_body(200, headers, vec![0xc4, 0xea], true);
    /// assert_eq!(r.bytes(), Ok(&[0xc4, 0xea][..]));
    /// assert_eq!(r.body, "");
    /// ```
    pub fn from_body(
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        as_bytes: bool,
    ) -> HttpResponse {
        let mut response = HttpResponse {
            status,
            headers,
            body: String::new(),
            bytes: None,
            charset: None,
            warnings: Vec::new(),
        };
        if as_bytes {
            response.bytes = Some(body);
        } else {
            let decoded = crate::charset::decode_body(response.header("content-type"), &body);
            response.body = decoded.text;
            response.charset = Some(decoded.encoding.to_owned());
            response.warnings = decoded.warnings;
        }
        response
    }

    /// The body's bytes, present when the request asked for
    /// [`HttpRequest::body_as_bytes`]. An error otherwise, which with such a
    /// request means a `tallyd` older than protocol 2, which ignored it.
    pub fn bytes(&self) -> Result<&[u8], Error> {
        self.bytes.as_deref().ok_or_else(|| {
            Error::internal(
                "the HTTP body did not come as bytes: ask with HttpRequest::body_as_bytes, and run a tallyd of protocol 2 or later",
            )
        })
    }

    /// When the `Retry-After` header (seconds, or an HTTP date) says to try
    /// again, counted from `now` (use [`crate::Host::now`]); `None` without a
    /// readable header.
    ///
    /// ```
    /// use tally_plugin::{Error, HttpResponse};
    /// use tally_plugin::chrono::{TimeZone, Utc};
    /// let now = Utc.with_ymd_and_hms(2026, 11, 27, 2, 0, 0).unwrap();
    /// let r = HttpResponse::from_body(429, vec![("Retry-After".into(), "120".into())], vec![], false);
    /// assert_eq!(r.retry_after(now), Some(now + tally_plugin::chrono::Duration::seconds(120)));
    /// let r = HttpResponse::from_body(429, vec![("retry-after".into(), "Fri, 27 Nov 2026 16:00:00 GMT".into())], vec![], false);
    /// assert_eq!(r.retry_after(now), Some(Utc.with_ymd_and_hms(2026, 11, 27, 16, 0, 0).unwrap()));
    /// let mut e = Error::rate_limited("HTTP 429");
    /// if let Some(at) = r.retry_after(now) {
    ///     e = e.retry_after(at);
    /// }
    /// ```
    pub fn retry_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let value = self.header("retry-after")?.trim();
        if let Ok(seconds) = value.parse::<u32>() {
            return Some(now + chrono::Duration::seconds(i64::from(seconds)));
        }
        DateTime::parse_from_rfc2822(value)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The first header of that name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Log levels a plugin can write at; they map onto the daemon's `tracing` levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl Level {
    /// The level for a raw number from the ABI; unknown numbers read as `Info`.
    pub fn from_u32(n: u32) -> Level {
        match n {
            1 => Level::Error,
            2 => Level::Warn,
            4 => Level::Debug,
            5 => Level::Trace,
            _ => Level::Info,
        }
    }
}

/// A failed plugin call: what kind of failure, and a message for the operator
/// that names the place (setting, file and row, endpoint and error code).
///
/// ```
/// use tally_plugin::{Error, ErrorKind};
/// let e = Error::settings("url: must start with http:// or https://");
/// assert_eq!(e.kind, ErrorKind::Settings);
/// assert_eq!(e.to_string(), "url: must start with http:// or https://");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// Not before this time (protocol 4): the daemon starts no attempt of
    /// the source, neither a retry within the run nor a scheduled run,
    /// before it. Set it with [`Error::retry_after`] on a `rate_limited`
    /// error whose platform says when its quota resets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<DateTime<Utc>>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Says when the platform accepts requests again (its quota resets, its
    /// `Retry-After` header): no attempt of the source starts before then.
    ///
    /// ```
    /// use tally_plugin::Error;
    /// use tally_plugin::chrono::{TimeZone, Utc};
    /// let midnight = Utc.with_ymd_and_hms(2026, 11, 27, 16, 0, 0).unwrap(); // 00:00 CST
    /// let e = Error::rate_limited("daily quota used up (45009)").retry_after(midnight);
    /// assert_eq!(e.retry_after, Some(midnight));
    /// ```
    pub fn retry_after(mut self, at: DateTime<Utc>) -> Self {
        self.retry_after = Some(at);
        self
    }

    /// The settings are wrong; the message says which one and what is accepted.
    pub fn settings(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Settings, message)
    }

    /// Credentials were refused.
    pub fn auth(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Auth, message)
    }

    /// The platform failed or answered something unusable.
    pub fn upstream(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Upstream, message)
    }

    /// The platform's quota or rate limit is reached; add
    /// [`Error::retry_after`] when it says until when.
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::RateLimited, message)
    }

    /// Input data is unusable.
    pub fn data(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Data, message)
    }

    /// A bug in the plugin.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

/// `Option<Vec<u8>>` as an optional base64 string (standard alphabet, padded).
mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_str(&STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => STANDARD
                .decode(text.as_bytes())
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}
