//! `wechat`: a WeChat official account's (微信公众号) daily posts, readers and
//! followers, from the official API (datacube statistics).
//!
//! ```toml
//! [sources.settings]
//! appid = "wx1a2b3c4d5e6f7a8b"
//! secret = "${env:WECHAT_SECRET}"
//! # api_base = "https://api.weixin.qq.com"
//! # token_endpoint = "stable"        # or "classic" (/cgi-bin/token)
//! # data_start = 2025-11-01          # no day before it is asked
//! # indicators = ["wechat_posts", "wechat_readers"]
//! # timeout_ms = 30000
//! ```
//!
//! # Indicators
//!
//! | id | kind | from |
//! |---|---|---|
//! | `wechat_posts` | count, 篇 | distinct `msgid` of `datacube/getarticletotaldetail` per publish day (both 群发 and 发布); before 2025-11-01 `freepublish/batchget`, which lists only articles published without notification |
//! | `wechat_readers` | count, 人 | `datacube/getbizsummary` `read_user` (阅读人数, not 阅读次数) |
//! | `wechat_followers` | level, 人 | `datacube/getusercumulate` `cumulate_user` |
//! | `wechat_new_followers` | count, 人 | Σ `new_user` of `datacube/getusersummary` |
//! | `wechat_cancelled_followers` | count, 人 | Σ `cancel_user` of `datacube/getusersummary` |
//!
//! # Behaviour
//!
//! - The access token comes from `/cgi-bin/stable_token` (normal mode) or
//!   `/cgi-bin/token`, is kept until 5 minutes before it expires, and is
//!   fetched again once when a call answers 40001, 40014 or 42001 (the call is
//!   then retried once). It is never logged.
//! - Windows are split to each endpoint's maximum span (7 days for the user
//!   endpoints, 30 for `getbizsummary`, 1 for `getarticletotaldetail`) and
//!   clipped to `data_start`, to the platform's data start (2014-12-01 for the
//!   user endpoints, 2025-11-01 for the article endpoints) and to yesterday:
//!   today's numbers are not final and the platform refuses them.
//! - Days answered with `"is_delay": true` are not emitted: a warning names
//!   them and the resume state (`delayed`) lists them, so that they are read
//!   again by the next run whose window covers them.
//! - When an endpoint's daily quota is used up (45009), what was collected so
//!   far is kept: the run succeeds with a warning naming the endpoint and the
//!   last day collected, and the resume state (`incomplete`) says from which
//!   day that endpoint has to be read again. Only a run that collected nothing
//!   fails (`rate_limited`).
//! - The number of API calls of the run is in the resume state (`calls`) and
//!   in the log.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Days, FixedOffset, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tally_plugin::{
    CollectRequest, CollectResponse, Description, Error, Host, HttpRequest, IndicatorDecl, Kind,
    Observation, Plugin, export_plugin,
};

pub const POSTS: &str = "wechat_posts";
pub const READERS: &str = "wechat_readers";
pub const FOLLOWERS: &str = "wechat_followers";
pub const NEW_FOLLOWERS: &str = "wechat_new_followers";
pub const CANCELLED_FOLLOWERS: &str = "wechat_cancelled_followers";
const ALL: [&str; 5] = [
    POSTS,
    READERS,
    FOLLOWERS,
    NEW_FOLLOWERS,
    CANCELLED_FOLLOWERS,
];

/// The first day the user-analytics endpoints hold data.
const LEGACY_DATA_START: NaiveDate = ymd(2014, 12, 1);
/// The first day the new 发表内容 endpoints hold data.
const NEW_DATA_START: NaiveDate = ymd(2025, 11, 1);
/// Fetch a new token this long before the old one expires.
const TOKEN_MARGIN_SECS: i64 = 300;

const fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    match NaiveDate::from_ymd_opt(y, m, d) {
        Some(d) => d,
        None => panic!("invalid constant date"),
    }
}

/// `[sources.settings]` of a `wechat` source. No `Debug`: it holds the secret.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub appid: String,
    pub secret: String,
    #[serde(default = "default_api_base")]
    pub api_base: String,
    #[serde(default)]
    pub token_endpoint: TokenEndpoint,
    #[serde(default)]
    pub data_start: Option<NaiveDate>,
    #[serde(default)]
    pub indicators: Option<Vec<String>>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

fn default_api_base() -> String {
    "https://api.weixin.qq.com".to_owned()
}

/// Which token endpoint to use.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpoint {
    /// `POST /cgi-bin/stable_token`: repeat calls return the same token, so
    /// two systems sharing the account do not log each other out.
    #[default]
    Stable,
    /// `GET /cgi-bin/token`: every call invalidates the previous token.
    Classic,
}

/// A configured `wechat` source.
pub struct Wechat {
    s: Settings,
    emits: Vec<String>,
    token: Option<(String, DateTime<Utc>)>,
    calls: u64,
}

impl Plugin for Wechat {
    const NAME: &'static str = "wechat";
    type Settings = Settings;

    fn describe() -> Description {
        Description::new("WeChat official account (微信公众号): posts, readers, followers")
            .indicator(IndicatorDecl::new(
                POSTS,
                "微信公众号发文篇数",
                Kind::Count,
                "篇",
            ))
            .indicator(IndicatorDecl::new(
                READERS,
                "微信公众号阅读人数",
                Kind::Count,
                "人",
            ))
            .indicator(IndicatorDecl::new(
                FOLLOWERS,
                "微信公众号粉丝数",
                Kind::Level,
                "人",
            ))
            .indicator(IndicatorDecl::new(
                NEW_FOLLOWERS,
                "微信公众号新增粉丝数",
                Kind::Count,
                "人",
            ))
            .indicator(IndicatorDecl::new(
                CANCELLED_FOLLOWERS,
                "微信公众号取消关注人数",
                Kind::Count,
                "人",
            ))
    }

    fn new(s: Settings, _host: &Host) -> Result<Self, Error> {
        if s.appid.trim().is_empty() {
            return Err(Error::settings(
                "appid: empty; set the official account's AppID (设置与开发 → 基本配置)",
            ));
        }
        if s.secret.trim().is_empty() {
            return Err(Error::settings(
                "secret: empty; set the AppSecret, e.g. secret = \"${env:WECHAT_SECRET}\"",
            ));
        }
        if !(s.api_base.starts_with("http://") || s.api_base.starts_with("https://")) {
            return Err(Error::settings(format!(
                "api_base: {:?} must start with http:// or https://",
                s.api_base
            )));
        }
        if s.timeout_ms == Some(0) {
            return Err(Error::settings("timeout_ms: must be above 0"));
        }
        let emits = match &s.indicators {
            None => ALL.iter().map(|i| (*i).to_owned()).collect(),
            Some(list) => {
                if list.is_empty() {
                    return Err(Error::settings(format!(
                        "indicators: empty; name some of {}",
                        ALL.join(", ")
                    )));
                }
                for (i, id) in list.iter().enumerate() {
                    if !ALL.contains(&id.as_str()) {
                        return Err(Error::settings(format!(
                            "indicators[{i}]: unknown indicator {id:?}; this plugin emits {}",
                            ALL.join(", ")
                        )));
                    }
                }
                list.clone()
            }
        };
        Ok(Wechat {
            s,
            emits,
            token: None,
            calls: 0,
        })
    }

    fn emits(&self) -> Vec<String> {
        self.emits.clone()
    }

    fn collect(&mut self, req: &CollectRequest, host: &Host) -> Result<CollectResponse, Error> {
        self.calls = 0;
        let mut run = Run::new(req, host);
        let result = self.collect_all(&mut run, host);
        host.info(&format!("wechat: {} API calls", self.calls));
        result?;
        let Run {
            out,
            delayed,
            incomplete,
            quota_hit,
            ..
        } = run;
        let mut out = out;
        if !quota_hit.is_empty() && out.observations.is_empty() {
            return Err(Error::rate_limited(format!(
                "daily API quota used up (45009, reach max api daily quota limit) on {}: \
                 nothing collected, it resets at 00:00 CST",
                quota_hit.join(", ")
            )));
        }
        out.state = Some(json!({
            "calls": self.calls,
            "delayed": delayed,
            "incomplete": incomplete,
        }));
        Ok(out)
    }
}

/// An endpoint the plugin reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    ArticleTotalDetail,
    BizSummary,
    UserCumulate,
    UserSummary,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::ArticleTotalDetail => "getarticletotaldetail",
            Endpoint::BizSummary => "getbizsummary",
            Endpoint::UserCumulate => "getusercumulate",
            Endpoint::UserSummary => "getusersummary",
        }
    }

    fn max_span(self) -> u64 {
        match self {
            Endpoint::ArticleTotalDetail => 1,
            Endpoint::BizSummary => 30,
            Endpoint::UserCumulate | Endpoint::UserSummary => 7,
        }
    }

    fn data_start(self) -> NaiveDate {
        match self {
            Endpoint::ArticleTotalDetail | Endpoint::BizSummary => NEW_DATA_START,
            Endpoint::UserCumulate | Endpoint::UserSummary => LEGACY_DATA_START,
        }
    }

    fn indicators(self) -> &'static [&'static str] {
        match self {
            Endpoint::ArticleTotalDetail => &[POSTS],
            Endpoint::BizSummary => &[READERS],
            Endpoint::UserCumulate => &[FOLLOWERS],
            Endpoint::UserSummary => &[NEW_FOLLOWERS, CANCELLED_FOLLOWERS],
        }
    }

    /// New endpoints answer `is_delay`; the latest day gets its own call so
    /// that a delayed answer holds back only that day.
    fn has_delay(self) -> bool {
        matches!(self, Endpoint::ArticleTotalDetail | Endpoint::BizSummary)
    }
}

/// One run's progress.
struct Run<'a> {
    req: &'a CollectRequest,
    out: CollectResponse,
    /// The last day the platform has final data for.
    latest: NaiveDate,
    /// Days answered `is_delay`, per endpoint, to read again.
    delayed: BTreeMap<String, BTreeSet<NaiveDate>>,
    /// Per endpoint, the first day not collected because the quota ran out.
    incomplete: BTreeMap<String, Value>,
    /// Endpoints whose daily quota ran out.
    quota_hit: Vec<String>,
}

impl<'a> Run<'a> {
    fn new(req: &'a CollectRequest, host: &Host) -> Run<'a> {
        let now = host.now();
        let cst = FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset");
        let today_cst = now.with_timezone(&cst).date_naive();
        // A day is final once it is over both for the platform (CST) and in
        // the daemon's time zone.
        let today_local = match req.timezone.parse::<chrono_tz::Tz>() {
            Ok(tz) => now.with_timezone(&tz).date_naive(),
            Err(_) => today_cst,
        };
        let latest = today_cst
            .min(today_local)
            .pred_opt()
            .unwrap_or(NaiveDate::MIN);
        let mut run = Run {
            req,
            out: CollectResponse::default(),
            latest,
            delayed: BTreeMap::new(),
            incomplete: BTreeMap::new(),
            quota_hit: Vec::new(),
        };
        if req.timezone.parse::<chrono_tz::Tz>().is_err() {
            run.out.warn(format!(
                "timezone {:?} is unknown; days end at midnight China Standard Time",
                req.timezone
            ));
        }
        run.carry_over_state();
        run
    }

    /// Keeps what the previous run left to do outside this window (this run
    /// cannot deliver it: the daemon stores only the window's days) and says how
    /// to fetch it.
    fn carry_over_state(&mut self) {
        let Some(state) = &self.req.state else { return };
        let window = self.req.window;
        if let Some(delayed) = state.get("delayed").and_then(Value::as_object) {
            for (endpoint, days) in delayed {
                let days: Vec<NaiveDate> = days
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.as_str()?.parse().ok())
                    .filter(|d| !window.contains(*d))
                    .collect();
                if let (Some(first), Some(last)) = (days.first(), days.last()) {
                    self.out.warn(format!(
                        "{endpoint}: {first}..{last} were not final on an earlier run (is_delay) and lie \
                         outside this window: read them with `tallyd collect --source {} --from {first} --to {last}`",
                        self.req.source
                    ));
                    self.delayed
                        .entry(endpoint.clone())
                        .or_default()
                        .extend(days);
                }
            }
        }
        if let Some(incomplete) = state.get("incomplete").and_then(Value::as_object) {
            for (endpoint, range) in incomplete {
                let from = range
                    .get("from")
                    .and_then(|d| d.as_str()?.parse::<NaiveDate>().ok());
                let to = range
                    .get("to")
                    .and_then(|d| d.as_str()?.parse::<NaiveDate>().ok());
                let (Some(from), Some(to)) = (from, to) else {
                    continue;
                };
                if from >= window.from {
                    // This run reads those days again.
                    continue;
                }
                let to = to.min(window.from.pred_opt().unwrap_or(to));
                self.out.warn(format!(
                    "{endpoint}: {from}..{to} are missing since the quota ran out on an earlier run: \
                     read them with `tallyd collect --source {} --from {from} --to {to}`",
                    self.req.source
                ));
                self.incomplete.insert(
                    endpoint.clone(),
                    json!({"from": from.to_string(), "to": to.to_string()}),
                );
            }
        }
    }
}

/// Why a business call failed.
enum CallError {
    /// 45009 / 45011: stop this endpoint, keep what was collected.
    Quota(String),
    Fatal(Error),
}

impl From<Error> for CallError {
    fn from(e: Error) -> Self {
        CallError::Fatal(e)
    }
}

impl Wechat {
    fn collect_all(&mut self, run: &mut Run, host: &Host) -> Result<(), Error> {
        let window = run.req.window;
        let mut from = window.from;
        if let Some(start) = self.s.data_start {
            from = from.max(start);
        }
        let to = window.to.min(run.latest);
        if from > to {
            return Ok(());
        }
        for endpoint in [
            Endpoint::ArticleTotalDetail,
            Endpoint::BizSummary,
            Endpoint::UserCumulate,
            Endpoint::UserSummary,
        ] {
            if !endpoint
                .indicators()
                .iter()
                .any(|i| self.emits.iter().any(|e| e == i))
            {
                continue;
            }
            if host.cancelled() {
                return Err(Error::upstream(
                    "wechat: run cancelled by the daemon before all endpoints were read",
                ));
            }
            let start = from.max(endpoint.data_start());
            if start > from {
                let before = start.pred_opt().unwrap_or(start).min(to);
                if endpoint == Endpoint::ArticleTotalDetail {
                    self.posts_from_freepublish(run, host, from.max(LEGACY_DATA_START), before)?;
                } else {
                    run.out.warn(format!(
                        "{}: the platform keeps no data before {}: {} not collected for {from}..{before}",
                        endpoint.name(),
                        endpoint.data_start(),
                        endpoint.indicators().join(", ")
                    ));
                }
            }
            if start > to {
                continue;
            }
            self.read_endpoint(run, host, endpoint, start, to)?;
        }
        Ok(())
    }

    fn read_endpoint(
        &mut self,
        run: &mut Run,
        host: &Host,
        endpoint: Endpoint,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<(), Error> {
        for (begin, end) in chunks(from, to, endpoint, run.latest) {
            if host.cancelled() {
                return Err(Error::upstream(format!(
                    "{}: run cancelled by the daemon at {begin}",
                    endpoint.name()
                )));
            }
            let body = json!({"begin_date": begin.to_string(), "end_date": end.to_string()});
            let answer = match self.business(host, &format!("datacube/{}", endpoint.name()), body) {
                Ok(a) => a,
                Err(CallError::Fatal(e)) => return Err(e),
                Err(CallError::Quota(what)) => {
                    let done = begin.pred_opt().filter(|d| *d >= from);
                    let collected = match done {
                        Some(d) => format!("collected up to {d}"),
                        None => "nothing collected".to_owned(),
                    };
                    run.out.warn(format!(
                        "quota exceeded on {} ({what}): {collected}, {begin}..{to} left for the next run",
                        endpoint.name()
                    ));
                    run.incomplete.insert(
                        endpoint.name().to_owned(),
                        json!({"from": begin.to_string(), "to": to.to_string()}),
                    );
                    run.quota_hit.push(endpoint.name().to_owned());
                    return Ok(());
                }
            };
            if answer.get("is_delay").and_then(Value::as_bool) == Some(true) {
                let days: Vec<NaiveDate> = begin.iter_days().take_while(|d| *d <= end).collect();
                run.out.warn(format!(
                    "{}: {} not final yet (is_delay); not stored, read again by the next run",
                    endpoint.name(),
                    if begin == end {
                        begin.to_string()
                    } else {
                        format!("{begin}..{end}")
                    }
                ));
                run.delayed
                    .entry(endpoint.name().to_owned())
                    .or_default()
                    .extend(days);
                continue;
            }
            self.parse_rows(run, endpoint, begin, end, &answer);
        }
        Ok(())
    }

    /// Turns an answer's `list` into observations for `[begin, end]`; a bad
    /// row is a warning naming it.
    fn parse_rows(
        &self,
        run: &mut Run,
        endpoint: Endpoint,
        begin: NaiveDate,
        end: NaiveDate,
        answer: &Value,
    ) {
        let name = endpoint.name();
        let mut per_day: BTreeMap<NaiveDate, [f64; 2]> = BTreeMap::new();
        let mut msgids: BTreeMap<NaiveDate, BTreeSet<String>> = BTreeMap::new();
        if endpoint != Endpoint::UserCumulate {
            // Days answered without rows had nothing: zero, not missing.
            for d in begin.iter_days().take_while(|d| *d <= end) {
                per_day.insert(d, [0.0, 0.0]);
                msgids.insert(d, BTreeSet::new());
            }
        }
        let rows = answer.get("list").and_then(Value::as_array);
        let Some(rows) = rows else {
            run.out.warn(format!(
                "{name}: answer for {begin}..{end} has no list; days skipped"
            ));
            return;
        };
        for (i, row) in rows.iter().enumerate() {
            let day = row
                .get("ref_date")
                .and_then(Value::as_str)
                .and_then(|d| d.parse::<NaiveDate>().ok());
            let Some(day) = day.filter(|d| begin <= *d && *d <= end) else {
                run.out.warn(format!(
                    "{name}: list[{i}]: ref_date {} is not a day of {begin}..{end}; row skipped",
                    row.get("ref_date").unwrap_or(&Value::Null)
                ));
                continue;
            };
            let fields: &[&str] = match endpoint {
                Endpoint::ArticleTotalDetail => {
                    match row.get("msgid").and_then(Value::as_str) {
                        Some(m) => {
                            msgids.entry(day).or_default().insert(m.to_owned());
                        }
                        None => run
                            .out
                            .warn(format!("{name}: list[{i}]: no msgid; row skipped")),
                    }
                    continue;
                }
                Endpoint::BizSummary => &["detail.read_user"],
                Endpoint::UserCumulate => &["cumulate_user"],
                Endpoint::UserSummary => &["new_user", "cancel_user"],
            };
            let mut values = [0.0; 2];
            let mut ok = true;
            for (k, field) in fields.iter().enumerate() {
                let v = field.split('.').try_fold(row, |v, key| v.get(key));
                match v.and_then(number) {
                    Some(n) => values[k] = n,
                    None => {
                        run.out.warn(format!(
                            "{name}: list[{i}]: {field}: not a number; row skipped"
                        ));
                        ok = false;
                    }
                }
            }
            if ok {
                let slot = per_day.entry(day).or_insert([0.0, 0.0]);
                if endpoint == Endpoint::UserCumulate {
                    *slot = values;
                } else {
                    slot[0] += values[0];
                    slot[1] += values[1];
                }
            }
        }
        if endpoint == Endpoint::ArticleTotalDetail {
            for (day, ids) in msgids {
                self.emit(run, POSTS, day, ids.len() as f64);
            }
            return;
        }
        for (day, [a, b]) in per_day {
            let ids = endpoint.indicators();
            self.emit(run, ids[0], day, a);
            if let Some(second) = ids.get(1) {
                self.emit(run, second, day, b);
            }
        }
    }

    fn emit(&self, run: &mut Run, indicator: &str, day: NaiveDate, value: f64) {
        if self.emits.iter().any(|e| e == indicator) {
            run.out
                .observations
                .push(Observation::new(indicator, day, value));
        }
    }

    /// Posts of days before the article endpoints' data start, from the list of
    /// publications, which misses content sent by 群发 with notification.
    fn posts_from_freepublish(
        &mut self,
        run: &mut Run,
        host: &Host,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<(), Error> {
        if from > to || !self.emits.iter().any(|e| e == POSTS) {
            return Ok(());
        }
        let cst = FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset");
        let mut per_day: BTreeMap<NaiveDate, f64> = from
            .iter_days()
            .take_while(|d| *d <= to)
            .map(|d| (d, 0.0))
            .collect();
        let mut offset = 0u64;
        'pages: loop {
            let body = json!({"offset": offset, "count": 20, "no_content": 1});
            let answer = match self.business(host, "cgi-bin/freepublish/batchget", body) {
                Ok(a) => a,
                Err(CallError::Fatal(e)) => return Err(e),
                Err(CallError::Quota(what)) => {
                    run.out.warn(format!(
                        "quota exceeded on batchget ({what}): {POSTS} for {from}..{to} left for the next run"
                    ));
                    run.incomplete.insert(
                        "batchget".to_owned(),
                        json!({"from": from.to_string(), "to": to.to_string()}),
                    );
                    run.quota_hit.push("batchget".to_owned());
                    return Ok(());
                }
            };
            let items = answer
                .get("item")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if items.is_empty() {
                break;
            }
            for item in &items {
                let Some(day) = item
                    .get("update_time")
                    .and_then(Value::as_i64)
                    .and_then(|t| DateTime::from_timestamp(t, 0))
                    .map(|t| t.with_timezone(&cst).date_naive())
                else {
                    continue;
                };
                if day < from {
                    // Newest first: everything further is older.
                    break 'pages;
                }
                if let Some(n) = per_day.get_mut(&day) {
                    let news = item
                        .pointer("/content/news_item")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter(|n| n.get("is_deleted") != Some(&Value::Bool(true)))
                                .count()
                        })
                        .unwrap_or(0);
                    *n += news as f64;
                }
            }
            offset += items.len() as u64;
            let total = answer
                .get("total_count")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if offset >= total {
                break;
            }
        }
        run.out.warn(format!(
            "{POSTS} for {from}..{to} come from freepublish/batchget (the article statistics start on \
             {NEW_DATA_START}); it lists only articles published without 群发 notification, so these counts may be low"
        ));
        for (day, n) in per_day {
            self.emit(run, POSTS, day, n);
        }
        Ok(())
    }

    // -----------------------------------------------------------------------
    // HTTP

    /// A business call with the cached token; on 40001/40014/42001 the token
    /// is fetched again and the call retried once.
    fn business(&mut self, host: &Host, path: &str, body: Value) -> Result<Value, CallError> {
        let name = path.rsplit('/').next().unwrap_or(path).to_owned();
        let mut retried = false;
        loop {
            let token = self.token(host)?;
            let url = format!("{}/{path}", self.s.api_base.trim_end_matches('/'));
            let req = HttpRequest::post(url, body.to_string())
                .query("access_token", token)
                .header("Content-Type", "application/json");
            let answer = self.send(host, &name, req)?;
            let code = errcode(&answer);
            match code {
                0 => return Ok(answer),
                40001 | 40014 | 42001 if !retried => {
                    host.debug(&format!(
                        "wechat: {name}: access token refused (errcode {code}); fetching a new one"
                    ));
                    self.token = None;
                    retried = true;
                }
                45009 | 45011 => {
                    return Err(CallError::Quota(format!(
                        "errcode {code}, {}",
                        self.errmsg(&answer)
                    )));
                }
                _ => return Err(CallError::Fatal(self.api_error(&name, &answer))),
            }
        }
    }

    /// The cached access token, or a new one.
    fn token(&mut self, host: &Host) -> Result<String, Error> {
        let now = host.now();
        if let Some((token, expires)) = &self.token
            && now < *expires
        {
            return Ok(token.clone());
        }
        let base = self.s.api_base.trim_end_matches('/');
        let (name, req) = match self.s.token_endpoint {
            TokenEndpoint::Stable => (
                "stable_token",
                HttpRequest::post(
                    format!("{base}/cgi-bin/stable_token"),
                    json!({"grant_type": "client_credential", "appid": self.s.appid,
                           "secret": self.s.secret, "force_refresh": false})
                    .to_string(),
                )
                .header("Content-Type", "application/json"),
            ),
            TokenEndpoint::Classic => (
                "token",
                HttpRequest::get(format!("{base}/cgi-bin/token"))
                    .query("grant_type", "client_credential")
                    .query("appid", self.s.appid.clone())
                    .query("secret", self.s.secret.clone()),
            ),
        };
        let answer = self.send(host, name, req)?;
        if errcode(&answer) != 0 {
            return Err(self.api_error(name, &answer));
        }
        let token = answer
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::upstream(format!("{name}: answer has no access_token")))?
            .to_owned();
        let ttl = answer
            .get("expires_in")
            .and_then(Value::as_i64)
            .unwrap_or(7200);
        let expires = now + chrono::Duration::seconds((ttl - TOKEN_MARGIN_SECS).max(0));
        self.token = Some((token.clone(), expires));
        Ok(token)
    }

    /// Sends a request and parses its JSON answer; errors name the endpoint,
    /// never the token or the secret.
    fn send(&mut self, host: &Host, name: &str, mut req: HttpRequest) -> Result<Value, Error> {
        req.timeout_ms = self.s.timeout_ms;
        self.calls += 1;
        let resp = host.http(&req).map_err(|e| {
            Error::new(
                e.kind,
                self.redact(&format!("{name}: no answer: {}", e.message)),
            )
        })?;
        if resp.status != 200 {
            return Err(Error::upstream(self.redact(&format!(
                "{name}: HTTP {}: {}",
                resp.status,
                snippet(&resp.body)
            ))));
        }
        serde_json::from_str(&resp.body).map_err(|e| {
            Error::upstream(self.redact(&format!(
                "{name}: the answer is not valid JSON ({}): {}",
                strip_position(&e.to_string()),
                snippet(&resp.body)
            )))
        })
    }

    fn errmsg(&self, answer: &Value) -> String {
        self.redact(answer.get("errmsg").and_then(Value::as_str).unwrap_or(""))
    }

    /// The error for an `errcode` answer, saying what to do.
    fn api_error(&self, name: &str, answer: &Value) -> Error {
        let code = errcode(answer);
        let msg = self.errmsg(answer);
        let appid = &self.s.appid;
        match code {
            40013 | 40125 => Error::auth(format!(
                "{name}: errcode {code} ({msg}): the platform refuses appid {appid:?} or its secret; \
                 check appid and secret in the source's settings (设置与开发 → 基本配置)"
            )),
            40001 | 40014 | 42001 => Error::auth(format!(
                "{name}: errcode {code} ({msg}) even with a new access token: check the secret, and that \
                 no other system forces new tokens for appid {appid:?}"
            )),
            40164 => {
                let ip = msg
                    .strip_prefix("invalid ip ")
                    .and_then(|r| r.split([' ', ',']).next())
                    .unwrap_or("(unknown)");
                Error::auth(format!(
                    "{name}: errcode 40164: this server's IP {ip} is not in the account's IP whitelist; \
                     add {ip} to the IP白名单 (设置与开发 → 基本配置), changes take 5-10 minutes"
                ))
            }
            48001 => Error::auth(format!(
                "{name}: errcode 48001 ({msg}): the account may not use this API; the statistics \
                 need a verified (认证) account"
            )),
            -1 => Error::upstream(format!(
                "{name}: errcode -1 (system error): the platform is busy, try later"
            )),
            _ => Error::upstream(format!("{name}: errcode {code}: {msg}")),
        }
    }

    /// Removes the secret and the current token from a message.
    fn redact(&self, text: &str) -> String {
        let mut text = text.replace(&self.s.secret, "***");
        if let Some((token, _)) = &self.token {
            text = text.replace(token.as_str(), "***");
        }
        text
    }
}

/// `errcode`, where absent means success (datacube answers carry none).
fn errcode(answer: &Value) -> i64 {
    answer.get("errcode").and_then(Value::as_i64).unwrap_or(0)
}

/// A JSON number, or a numeric string.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().replace(',', "").parse().ok(),
        _ => None,
    }
}

/// The start of a body, for error messages.
fn snippet(body: &str) -> String {
    let flat: String = body
        .chars()
        .take(120)
        .collect::<String>()
        .replace('\n', " ");
    if body.chars().count() > 120 {
        format!("{flat:?}...")
    } else {
        format!("{flat:?}")
    }
}

fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

/// Splits `[from, to]` into the endpoint's spans; for endpoints answering
/// `is_delay`, the latest day is asked alone.
fn chunks(
    from: NaiveDate,
    to: NaiveDate,
    endpoint: Endpoint,
    latest: NaiveDate,
) -> Vec<(NaiveDate, NaiveDate)> {
    let span = endpoint.max_span();
    let mut out = Vec::new();
    let mut begin = from;
    while begin <= to {
        let mut end = begin
            .checked_add_days(Days::new(span - 1))
            .unwrap_or(to)
            .min(to);
        if endpoint.has_delay() && end == latest && begin < latest {
            end = latest.pred_opt().unwrap_or(latest);
        }
        out.push((begin, end));
        begin = match end.succ_opt() {
            Some(d) => d,
            None => break,
        };
    }
    out
}

export_plugin!(Wechat);

#[cfg(test)]
mod tests {
    use super::*;

    fn d(m: u32, day: u32) -> NaiveDate {
        ymd(2026, m, day)
    }

    #[test]
    fn chunks_respect_the_span_and_isolate_the_latest_day() {
        let c = chunks(d(11, 1), d(11, 26), Endpoint::UserSummary, d(11, 26));
        assert_eq!(c.first(), Some(&(d(11, 1), d(11, 7))));
        assert_eq!(c.last(), Some(&(d(11, 22), d(11, 26))));
        assert_eq!(c.len(), 4);
        let c = chunks(d(11, 1), d(11, 26), Endpoint::BizSummary, d(11, 26));
        assert_eq!(c, [(d(11, 1), d(11, 25)), (d(11, 26), d(11, 26))]);
        let c = chunks(d(10, 1), d(11, 26), Endpoint::BizSummary, d(11, 26));
        assert_eq!(
            c,
            [
                (d(10, 1), d(10, 30)),
                (d(10, 31), d(11, 25)),
                (d(11, 26), d(11, 26))
            ]
        );
    }

    #[test]
    fn snippets_are_short() {
        let s = snippet(&"x".repeat(500));
        assert!(s.len() < 130, "{s}");
    }
}
