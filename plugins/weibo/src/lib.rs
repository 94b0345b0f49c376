//! `weibo`: the posts and followers of a government Weibo account (政务微博)
//! through the Weibo open API, authorized by the account itself (OAuth2).
//!
//! ```toml
//! [[sources]]
//! id = "county-weibo"
//! plugin = "weibo"
//! unit = "county"
//! schedule = "0 30 6 * * *"
//! [sources.settings]
//! uid = "5678901234"
//! access_token = "${env:WEIBO_COUNTY_TOKEN}"
//! # api_base = "https://api.weibo.com"
//! # indicators = ["weibo_posts", "weibo_followers", "weibo_total_posts"]
//! # max_pages = 50
//! ```
//!
//! # Settings
//!
//! - `uid` (required): the account's numeric uid, as a string or a number.
//! - `access_token` (required): the token the account granted the app; put it
//!   in a secret (`${env:...}` or `${file:...}`). Weibo gives ordinary web apps
//!   no refresh token, so when it expires a person must authorize again.
//! - `api_base` (default `https://api.weibo.com`).
//! - `indicators` (default all three below): the ones to collect. Without
//!   `weibo_posts` the timeline is not read; without the two levels
//!   `users/show` is not called.
//! - `max_pages` (default 50): at most this many timeline pages of 100 posts
//!   per run.
//!
//! # Indicators
//!
//! - `weibo_posts` (count, 条): posts per day, from
//!   `GET /2/statuses/user_timeline.json`. A post belongs to the day of its
//!   `created_at` in the request's time zone: `Wed Sep 30 23:30:00 +0800 2026`
//!   is 2026-09-30 and `Wed Sep 30 16:30:00 +0000 2026` is 2026-10-01 in
//!   Asia/Shanghai. The timeline is read newest first, with `max_id` (the
//!   notes advise against `page`), until a post older than the window's first
//!   day. If `max_pages` is reached first, the days not reached completely are
//!   left out and a warning says so. Days after today are never recorded.
//!   The timeline only holds the authorizing account's posts, so the token
//!   must belong to `uid`.
//! - `weibo_followers` (level, 人) and `weibo_total_posts` (level, 条):
//!   `followers_count` and `statuses_count` of `GET /2/users/show.json`. The
//!   API only knows the current level, so it is recorded on today, and only
//!   when the window reaches today; a backfill of past days records no level
//!   (a debug line says so) instead of dating today's level in the past.
//!
//! Counts may arrive as numbers or numeric strings, `error_code` too.
//!
//! # Errors
//!
//! Errors name the endpoint (without its query string) and the Weibo error
//! code. 21327 (expired token) and 21332 (invalid token), 21314 to 21317
//! (token used, expired, revoked, rejected) are `auth` errors; 10022, 10023
//! and 10024 (rate limits) are `rate_limited`; 20003 (no such user) is a
//! `settings` error; HTTP 5xx, other codes and bodies that are not the
//! expected JSON are `upstream` errors with a snippet of the body. The access
//! token never appears in a message or a log line.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDate};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::Value;
use tally_plugin::{
    CollectRequest, CollectResponse, Description, Error, Host, HttpRequest, IndicatorDecl, Kind,
    Observation, Plugin, body_snippet, export_plugin,
};

/// Posts per day.
pub const POSTS: &str = "weibo_posts";
/// Followers, a level.
pub const FOLLOWERS: &str = "weibo_followers";
/// All posts the account ever published, a level.
pub const TOTAL_POSTS: &str = "weibo_total_posts";

const ALL: [&str; 3] = [POSTS, FOLLOWERS, TOTAL_POSTS];

const USERS_SHOW: &str = "/2/users/show.json";
const USER_TIMELINE: &str = "/2/statuses/user_timeline.json";

/// The largest page the timeline serves \[V\].
const PAGE_SIZE: u32 = 100;

/// The `created_at` format of the Weibo API \[V\].
const CREATED_AT: &str = "%a %b %d %H:%M:%S %z %Y";

/// `[sources.settings]` of a `weibo` source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub uid: Uid,
    pub access_token: String,
    #[serde(default = "default_api_base")]
    pub api_base: String,
    #[serde(default)]
    pub indicators: Option<Vec<String>>,
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
}

/// A uid written as a number or a string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Uid {
    Number(u64),
    Text(String),
}

fn default_api_base() -> String {
    "https://api.weibo.com".to_owned()
}

fn default_max_pages() -> u32 {
    50
}

/// A configured `weibo` source.
pub struct Weibo {
    uid: String,
    token: String,
    api_base: String,
    indicators: Vec<String>,
    max_pages: u32,
}

impl Plugin for Weibo {
    const NAME: &'static str = "weibo";
    type Settings = Settings;

    fn describe() -> Description {
        Description::new("政务微博: posts per day, followers and total posts of a Weibo account")
            .indicator(IndicatorDecl::new(POSTS, "微博发博数", Kind::Count, "条"))
            .indicator(IndicatorDecl::new(
                FOLLOWERS,
                "微博粉丝数",
                Kind::Level,
                "人",
            ))
            .indicator(IndicatorDecl::new(
                TOTAL_POSTS,
                "微博累计发博数",
                Kind::Level,
                "条",
            ))
    }

    fn new(s: Settings, _host: &Host) -> Result<Self, Error> {
        let uid = match s.uid {
            Uid::Number(n) => n.to_string(),
            Uid::Text(t) => t.trim().to_owned(),
        };
        if uid.is_empty() || !uid.chars().all(|c| c.is_ascii_digit()) {
            return Err(Error::settings(format!(
                "uid: {uid:?} is not a Weibo uid (digits, e.g. \"5678901234\")"
            )));
        }
        if s.access_token.trim().is_empty() {
            return Err(Error::settings(
                "access_token: empty; set it from a secret, e.g. access_token = \"${env:WEIBO_TOKEN}\"",
            ));
        }
        let api_base = s.api_base.trim_end_matches('/').to_owned();
        if !(api_base.starts_with("http://") || api_base.starts_with("https://")) {
            return Err(Error::settings(format!(
                "api_base: {:?} must start with http:// or https://",
                s.api_base
            )));
        }
        let indicators = match s.indicators {
            None => ALL.iter().map(|s| (*s).to_owned()).collect(),
            Some(list) => {
                if list.is_empty() {
                    return Err(Error::settings(format!(
                        "indicators: name at least one of {}",
                        ALL.join(", ")
                    )));
                }
                let mut ids: Vec<String> = Vec::new();
                for (i, id) in list.iter().enumerate() {
                    if !ALL.contains(&id.as_str()) {
                        return Err(Error::settings(format!(
                            "indicators[{i}]: {id:?} is not one of {}",
                            ALL.join(", ")
                        )));
                    }
                    if !ids.contains(id) {
                        ids.push(id.clone());
                    }
                }
                ids
            }
        };
        if s.max_pages == 0 {
            return Err(Error::settings(
                "max_pages: must be at least 1 (pages of 100 posts per run)",
            ));
        }
        Ok(Weibo {
            uid,
            token: s.access_token,
            api_base,
            indicators,
            max_pages: s.max_pages,
        })
    }

    fn emits(&self) -> Vec<String> {
        self.indicators.clone()
    }

    fn collect(&mut self, req: &CollectRequest, host: &Host) -> Result<CollectResponse, Error> {
        let tz: Tz = req.timezone.parse().map_err(|_| {
            Error::settings(format!(
                "timezone {:?} is not an IANA time zone name",
                req.timezone
            ))
        })?;
        let today = host.now().with_timezone(&tz).date_naive();
        let mut out = CollectResponse::default();
        if self.wants(POSTS) {
            self.collect_posts(req, tz, today, host, &mut out)?;
        }
        if self.wants(FOLLOWERS) || self.wants(TOTAL_POSTS) {
            if req.window.contains(today) {
                self.collect_levels(today, host, &mut out)?;
            } else {
                host.debug(&format!(
                    "window {}..{} does not reach today ({today}): users/show only knows the current levels, none recorded",
                    req.window.from, req.window.to
                ));
            }
        }
        Ok(out)
    }
}

impl Weibo {
    fn wants(&self, id: &str) -> bool {
        self.indicators.iter().any(|i| i == id)
    }

    fn request(&self, endpoint: &str) -> HttpRequest {
        HttpRequest::get(format!("{}{endpoint}", self.api_base))
            .query("access_token", self.token.clone())
            .query("uid", self.uid.clone())
    }

    /// Keeps the token out of a message, whatever echoed it.
    fn redact(&self, message: String) -> String {
        // A token this short is a test value; replacing it would garble the message.
        if self.token.len() < 6 {
            message
        } else {
            message.replace(&self.token, "***")
        }
    }

    /// Performs one API call and returns its JSON, or the error the answer means.
    fn call(&self, host: &Host, endpoint: &str, request: &HttpRequest) -> Result<Value, Error> {
        let place = format!("GET {endpoint}");
        let resp = host
            .http(request)
            .map_err(|e| Error::new(e.kind, self.redact(format!("{place}: {}", e.message))))?;
        let parsed: Result<Value, _> = serde_json::from_str(&resp.body);
        if let Ok(json) = &parsed
            && let Some(code) = json.get("error_code").and_then(int)
        {
            let text = json.get("error").and_then(Value::as_str).unwrap_or("");
            return Err(self.api_error(&place, resp.status, code, text));
        }
        if !(200..300).contains(&resp.status) {
            return Err(Error::upstream(self.redact(format!(
                "{place}: HTTP {}: {}",
                resp.status,
                body_snippet(&resp.body)
            ))));
        }
        parsed.map_err(|e| {
            Error::upstream(self.redact(format!(
                "{place}: HTTP {}: the answer is not JSON ({e}): {}",
                resp.status,
                body_snippet(&resp.body)
            )))
        })
    }

    fn api_error(&self, place: &str, status: u16, code: u64, text: &str) -> Error {
        let what = format!("{place}: HTTP {status}: error {code} {text}");
        let message = |advice: &str| self.redact(format!("{what}: {advice}"));
        match code {
            21327 => Error::auth(message(
                "the access token expired: re-authorize the account and update the secret",
            )),
            21332 => Error::auth(message(
                "the access token is not valid: check the secret, or re-authorize the account and update it",
            )),
            21314..=21317 => Error::auth(message(
                "the access token was used up, expired, revoked or rejected: re-authorize the account and update the secret",
            )),
            10022..=10024 => Error::rate_limited(message(
                "the API's rate limit is reached; the next scheduled run tries again",
            )),
            20003 => Error::settings(message(&format!(
                "uid: no Weibo user {}; check the setting",
                self.uid
            ))),
            _ => Error::upstream(self.redact(what)),
        }
    }

    fn collect_levels(
        &self,
        today: NaiveDate,
        host: &Host,
        out: &mut CollectResponse,
    ) -> Result<(), Error> {
        let json = self.call(host, USERS_SHOW, &self.request(USERS_SHOW))?;
        for (id, field) in [
            (FOLLOWERS, "followers_count"),
            (TOTAL_POSTS, "statuses_count"),
        ] {
            if !self.wants(id) {
                continue;
            }
            let value = json.get(field).and_then(int).ok_or_else(|| {
                Error::upstream(format!(
                    "GET {USERS_SHOW}: {field} is missing or not a count: {}",
                    json.get(field)
                        .map(|v| body_snippet(&v.to_string()))
                        .unwrap_or_else(|| body_snippet(&json.to_string()))
                ))
            })?;
            out.observations
                .push(Observation::new(id, today, value as f64));
        }
        Ok(())
    }

    fn collect_posts(
        &self,
        req: &CollectRequest,
        tz: Tz,
        today: NaiveDate,
        host: &Host,
        out: &mut CollectResponse,
    ) -> Result<(), Error> {
        let window = req.window;
        let mut per_day: BTreeMap<NaiveDate, u32> = BTreeMap::new();
        let mut max_id: Option<u64> = None;
        // The oldest day the timeline reached; days after it are complete.
        let mut oldest: Option<NaiveDate> = None;
        let mut complete = false;
        let mut pages = 0;
        while pages < self.max_pages {
            if host.cancelled() {
                return Err(Error::upstream(format!(
                    "GET {USER_TIMELINE}: cancelled after {pages} pages"
                )));
            }
            let mut request = self
                .request(USER_TIMELINE)
                .query("count", PAGE_SIZE.to_string());
            if let Some(m) = max_id {
                request = request.query("max_id", m.to_string());
            }
            let json = self.call(host, USER_TIMELINE, &request)?;
            pages += 1;
            let statuses = json
                .get("statuses")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    Error::upstream(format!(
                        "GET {USER_TIMELINE}: the answer has no statuses list: {}",
                        body_snippet(&json.to_string())
                    ))
                })?;
            if statuses.is_empty() {
                complete = true;
                break;
            }
            let mut lowest: Option<u64> = None;
            for (i, status) in statuses.iter().enumerate() {
                let id = status
                    .get("id")
                    .and_then(int)
                    .or_else(|| status.get("idstr").and_then(int));
                let Some(id) = id else {
                    out.warn(format!(
                        "GET {USER_TIMELINE}: page {pages}, statuses[{i}]: no id; post skipped"
                    ));
                    continue;
                };
                lowest = Some(lowest.map_or(id, |l| l.min(id)));
                let created = status.get("created_at").and_then(Value::as_str);
                let Some(at) = created.and_then(parse_created_at) else {
                    out.warn(format!(
                        "GET {USER_TIMELINE}: post {id}: bad created_at {}; post skipped",
                        created.map(|c| format!("{c:?}")).unwrap_or("(none)".into())
                    ));
                    continue;
                };
                let day = at.with_timezone(&tz).date_naive();
                oldest = Some(oldest.map_or(day, |o| o.min(day)));
                if day < window.from {
                    complete = true;
                } else if window.contains(day) {
                    *per_day.entry(day).or_default() += 1;
                }
            }
            if complete {
                break;
            }
            let Some(lowest) = lowest else {
                return Err(Error::upstream(format!(
                    "GET {USER_TIMELINE}: page {pages} has posts without ids; cannot page further"
                )));
            };
            if lowest == 0 || max_id.is_some_and(|m| lowest > m) {
                return Err(Error::upstream(format!(
                    "GET {USER_TIMELINE}: page {pages} does not go back in time (max_id {} ignored?)",
                    max_id.unwrap_or(0)
                )));
            }
            max_id = Some(lowest - 1);
        }
        // Without reaching the window's start, the oldest day reached may miss
        // earlier posts of that day: only later days are known completely.
        let first_complete = match (complete, oldest) {
            (true, _) => window.from,
            (false, Some(o)) => {
                let next = o.succ_opt().unwrap_or(o);
                out.warn(format!(
                    "GET {USER_TIMELINE}: stopped after max_pages = {} pages ({} posts) at posts of {o}; the days {}..{o} are not recorded: raise max_pages",
                    self.max_pages,
                    self.max_pages * PAGE_SIZE,
                    window.from
                ));
                next
            }
            (false, None) => window.from,
        };
        for day in window.days() {
            if day < first_complete || day > today {
                continue;
            }
            let n = per_day.get(&day).copied().unwrap_or(0);
            out.observations
                .push(Observation::new(POSTS, day, f64::from(n)));
        }
        Ok(())
    }
}

/// A `created_at` such as `Tue May 31 17:46:55 +0800 2011`.
pub fn parse_created_at(text: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_str(text.trim(), CREATED_AT).ok()
}

/// A non-negative integer given as a JSON number or a numeric string.
fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

export_plugin!(Weibo);

#[cfg(test)]
mod tests {
    use super::*;

    fn day_in_shanghai(text: &str) -> NaiveDate {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        parse_created_at(text)
            .unwrap()
            .with_timezone(&tz)
            .date_naive()
    }

    #[test]
    fn created_at_is_dated_in_the_request_time_zone() {
        let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(
            day_in_shanghai("Wed Sep 30 23:30:00 +0800 2026"),
            d(2026, 9, 30)
        );
        assert_eq!(
            day_in_shanghai("Wed Sep 30 16:30:00 +0000 2026"),
            d(2026, 10, 1)
        );
        assert_eq!(
            day_in_shanghai("Thu Oct 01 00:10:00 +0800 2026"),
            d(2026, 10, 1)
        );
        assert!(parse_created_at("2026-09-30 23:30:00").is_none());
    }

    #[test]
    fn counts_may_be_strings() {
        assert_eq!(int(&serde_json::json!(128734)), Some(128734));
        assert_eq!(int(&serde_json::json!("128734")), Some(128734));
        assert_eq!(int(&serde_json::json!("12万")), None);
        assert_eq!(int(&serde_json::json!(-1)), None);
    }
}
