//! `weibo`: the posts, followers and 转评赞 of a government Weibo account
//! (政务微博) through the Weibo open API, authorized by the account itself
//! (OAuth2).
//!
//! ```toml
//! [[sources]]
//! id = "county-weibo"
//! plugin = "weibo"
//! unit = "county"
//! schedule = "0 30 */4 * * *"     # every 4 hours: see "Daily posts" below
//! lookback_days = 3
//! [sources.settings]
//! uid = "5678901234"
//! access_token = "${env:WEIBO_COUNTY_TOKEN}"
//! # api_base = "https://api.weibo.com"
//! # indicators = ["weibo_posts", "weibo_followers", "weibo_total_posts"]
//! # max_pages = 50
//! # expiry_warning_days = 7
//! ```
//!
//! # Settings
//!
//! - `uid` (required): the account's numeric uid, as a string or a number.
//! - `access_token` (required): the token the account granted the app; put it
//!   in a secret (`${env:...}` or `${file:...}`). Weibo gives ordinary web apps
//!   no refresh token, so when it expires a person must authorize again.
//! - `api_base` (default `https://api.weibo.com`).
//! - `indicators` (default `weibo_posts`, `weibo_followers`,
//!   `weibo_total_posts`): the ones to collect, any of the seven below.
//! - `max_pages` (default 50): at most this many timeline pages of 100 posts
//!   per run (the public API serves one short page; see below).
//! - `expiry_warning_days` (default 7): a run warns that the token expires
//!   once it has fewer days left than this.
//!
//! # The token's account and expiry
//!
//! Every run first asks `POST /oauth2/get_token_info` whom the token belongs
//! to. The timeline only shows the authorizing account's own posts, so a
//! token of another account would read as an account that never posts: the
//! run fails with an `auth` error naming both uids (never the token). The
//! answer's `expire_in` (seconds left; `expires_in` is read too) becomes a
//! line of the run's warnings, which `/api/v1/sources` shows under
//! `last_run.warnings` (the protocol has no other per-source text): "access
//! token of uid ... valid until ..." while more than `expiry_warning_days`
//! are left, "... expires ... in N days: have the account authorize the app
//! again" when fewer are. The expiry is kept in the resume state as well.
//!
//! # Daily posts (`weibo_posts`) without reading history
//!
//! `GET /2/statuses/user_timeline.json` returns at most the newest 5 posts
//! ("此接口最多只返回最新的5条数据"), whatever `page`, `count` or `max_id` say, so
//! past days cannot be counted from it. `GET /2/users/show.json` gives
//! `statuses_count`, the number of posts the account has. Each run takes one
//! snapshot of both and turns it into *boundaries*: for a midnight `m` of the
//! request's time zone, `before(m)` = posts published before `m` =
//! `statuses_count` − the timeline's posts published at or after `m`. That
//! subtraction is exact only when the timeline shows every post after `m`,
//! so a run measures exactly the midnights after its oldest timeline post
//! (every midnight when the timeline held the whole history) and up to the
//! snapshot. The boundaries live in the resume state, the first measurement
//! of a midnight kept (400 days of them).
//!
//! **Rule.** Day D is recorded as `before(D+1 00:00)` − `before(D 00:00)` once
//! both midnights have been measured, by one run or by two. A day with a
//! midnight no run measured is *uncovered*: nothing is recorded for it (never
//! 0) and the run's warnings name it; a day's delta is never split across
//! days by guess. Today is recorded once it is over. A run measures every
//! midnight after its 5th newest post, so a run each morning before the
//! day's 5th post (a daily run at 06:30 usually is) measures every midnight,
//! and runs a few hours apart (`schedule = "0 30 */4 * * *"`, fewer than 5
//! posts between two runs) also see every post, which
//! `weibo_original_posts` needs. A new source's backfill days before its
//! first runs stay uncovered. With `lookback_days` a day already counted is counted again
//! from the same boundaries, so it never turns into 0; the engine keeps
//! what was stored for the days a run leaves out.
//!
//! To make the snapshot consistent, timeline posts newer than the latest post
//! `users/show` reported (`status.id`, or the clock when it gives none) are
//! not counted: they were published between the two calls.
//!
//! **Deleted posts** lower `statuses_count`. A post deleted after its day was
//! recorded leaves that day as it was (the count is of posts that existed
//! when the day's midnights were measured). A post published before a
//! measured midnight and deleted before the next measurement lowers the day
//! between by one: `statuses_count` cannot tell which post went. Where a later
//! run measures a midnight again and finds fewer posts before it, the run
//! warns that posts were deleted; a day that would come out negative is left
//! uncovered with a warning.
//!
//! **Summaries.** The run names the days it left out in its answer
//! (`uncovered`): the days of `weibo_posts` it could not count and, when
//! `weibo_original_posts` is collected, the days whose posts it did not all
//! see. The daemon stores nothing for them, counts them as gaps of the
//! source's coverage (the summary marks the period incomplete), and starts
//! later windows early enough to ask them again for 31 days, so a day whose
//! midnight a later run measures after all is counted then. Today, not over
//! yet, is named too: a running period's daily posts stay marked incomplete
//! until its last day is over and counted.
//!
//! # Indicators
//!
//! - `weibo_posts` (count, 条): posts per day, as above. A post belongs to the
//!   day of its `created_at` in the request's time zone:
//!   `Wed Sep 30 23:30:00 +0800 2026` is 2026-09-30 and
//!   `Wed Sep 30 16:30:00 +0000 2026` is 2026-10-01 in Asia/Shanghai.
//! - `weibo_original_posts` (count, 条, opt-in): posts per day that are not
//!   reposts (no `retweeted_status`). The timeline posts of each run are
//!   remembered (id, time, original or not); a day is recorded once its
//!   `weibo_posts` is and the posts remembered for it are exactly that many,
//!   i.e. every post of the day was seen on the timeline. Otherwise it is
//!   uncovered and warned about.
//! - `weibo_reposts`, `weibo_comments`, `weibo_likes` (count, 次, opt-in):
//!   `reposts_count`, `comments_count` and `attitudes_count` (转评赞) of each
//!   post the timeline shows, one entity per post (its id) on the post's day,
//!   so a period's figure is the 转评赞 received by the posts published in it.
//!   These counts grow after publication: each value is as of the last run
//!   that saw the post, and every run (within its window, `lookback_days`
//!   included) re-reads the posts it sees. A post is only seen while it is
//!   among the newest 5, so its value freezes after that, and posts never
//!   seen have none: a run warns about the days whose posts were not all seen.
//! - `weibo_followers` (level, 人) and `weibo_total_posts` (level, 条):
//!   `followers_count` and `statuses_count` of `users/show`. The API only
//!   knows the current level, so it is recorded on today, and only when the
//!   window reaches today; a backfill of past days records no level (a debug
//!   line says so) instead of dating today's level in the past.
//!
//! Counts may arrive as numbers or numeric strings, `error_code` and the
//! token's `uid` too.
//!
//! # Errors
//!
//! Errors name the endpoint (without its query string) and the Weibo error
//! code. 21327 (expired token) and 21332 (invalid token), 21314 to 21317
//! (token used, expired, revoked, rejected) are `auth` errors, as is a token
//! of another account; 10022, 10023 and 10024 (rate limits) are
//! `rate_limited`; 20003 (no such user) is a `settings` error; HTTP 5xx,
//! other codes and bodies that are not the expected JSON are `upstream`
//! errors with a snippet of the body. The access token never appears in a
//! message or a log line.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tally_plugin::schemars::{self, JsonSchema};
use tally_plugin::{
    CollectRequest, CollectResponse, Description, Error, Host, HttpRequest, IndicatorDecl, Kind,
    Observation, Plugin, Window, body_snippet, export_plugin,
};

/// Posts per day.
pub const POSTS: &str = "weibo_posts";
/// Followers, a level.
pub const FOLLOWERS: &str = "weibo_followers";
/// All posts the account ever published, a level.
pub const TOTAL_POSTS: &str = "weibo_total_posts";
/// Posts per day that are not reposts.
pub const ORIGINAL_POSTS: &str = "weibo_original_posts";
/// 转发: reposts of the account's posts, per post.
pub const REPOSTS: &str = "weibo_reposts";
/// 评论: comments on the account's posts, per post.
pub const COMMENTS: &str = "weibo_comments";
/// 赞: likes of the account's posts, per post.
pub const LIKES: &str = "weibo_likes";

const ALL: [&str; 7] = [
    POSTS,
    FOLLOWERS,
    TOTAL_POSTS,
    ORIGINAL_POSTS,
    REPOSTS,
    COMMENTS,
    LIKES,
];

/// What a source collects when its settings name no indicators, as before
/// the opt-in ones existed.
const DEFAULT: [&str; 3] = [POSTS, FOLLOWERS, TOTAL_POSTS];

/// 转评赞 and the status field each is read from.
const ENGAGEMENT: [(&str, &str); 3] = [
    (REPOSTS, "reposts_count"),
    (COMMENTS, "comments_count"),
    (LIKES, "attitudes_count"),
];

const USERS_SHOW: &str = "/2/users/show.json";
const USER_TIMELINE: &str = "/2/statuses/user_timeline.json";
const TOKEN_INFO: &str = "/oauth2/get_token_info";

/// The largest page the timeline serves \[V\].
const PAGE_SIZE: u32 = 100;

/// The `created_at` format of the Weibo API \[V\].
const CREATED_AT: &str = "%a %b %d %H:%M:%S %z %Y";

/// How far back boundaries and seen posts are kept in the resume state.
const RETAIN_DAYS: i64 = 400;

/// `[sources.settings]` of a `weibo` source.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The account's numeric uid, as a string or a number.
    #[schemars(extend("examples" = ["1234567890"]))]
    pub uid: Uid,
    /// The token the account granted the app: put it in a secret.
    #[schemars(extend("examples" = ["${env:WEIBO_TOKEN}"]))]
    pub access_token: String,
    /// The API's base URL.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// The indicators to collect; default `weibo_posts`, `weibo_followers`, `weibo_total_posts`.
    #[serde(default)]
    pub indicators: Option<Vec<String>>,
    /// Timeline pages of 100 posts read at most per run.
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
    /// A run warns that the token expires once it has fewer days left than this.
    #[serde(default = "default_expiry_warning_days")]
    pub expiry_warning_days: u32,
}

/// A uid written as a number or a string.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
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

fn default_expiry_warning_days() -> u32 {
    7
}

/// A configured `weibo` source.
pub struct Weibo {
    uid: String,
    token: String,
    api_base: String,
    indicators: Vec<String>,
    max_pages: u32,
    expiry_warning_days: u32,
}

/// What the plugin keeps between runs (the resume state).
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    #[serde(default)]
    uid: String,
    /// The time zone the midnights below are in.
    #[serde(default)]
    timezone: String,
    /// Posts published before each day began, as first measured.
    #[serde(default)]
    before: BTreeMap<NaiveDate, u64>,
    /// Posts the timeline showed, by id.
    #[serde(default)]
    seen: BTreeMap<u64, Seen>,
    #[serde(default)]
    token_expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Seen {
    /// Unix seconds of `created_at`.
    at: i64,
    original: bool,
}

/// A post as the timeline showed it.
#[derive(Debug)]
struct Post {
    id: u64,
    at: DateTime<Utc>,
    original: bool,
    status: Value,
}

/// What `users/show` said.
struct Show {
    statuses_count: u64,
    json: Value,
    /// The id of the newest post (`status.id`), if the answer has one.
    latest: Option<u64>,
}

impl Plugin for Weibo {
    const NAME: &'static str = "weibo";
    type Settings = Settings;

    fn describe() -> Description {
        Description::new(
            "政务微博: posts per day, original posts, 转评赞, followers and total posts of a Weibo account",
        )
        .settings_schema::<Settings>()
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
        .indicator(IndicatorDecl::new(
            ORIGINAL_POSTS,
            "微博原创发博数",
            Kind::Count,
            "条",
        ))
        .indicator(IndicatorDecl::new(REPOSTS, "微博转发数", Kind::Count, "次"))
        .indicator(IndicatorDecl::new(COMMENTS, "微博评论数", Kind::Count, "次"))
        .indicator(IndicatorDecl::new(LIKES, "微博点赞数", Kind::Count, "次"))
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
                "api_base: `{}` must start with http:// or https://",
                s.api_base
            )));
        }
        let indicators = match s.indicators {
            None => DEFAULT.iter().map(|s| (*s).to_owned()).collect(),
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
            expiry_warning_days: s.expiry_warning_days,
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
        let now = host.now();
        let today = now.with_timezone(&tz).date_naive();
        let mut out = CollectResponse::default();
        let mut state = self.load_state(req, &mut out);

        let expires = self.check_token(host, now, tz, &mut out)?;
        state.token_expires_at = expires;

        let timeline_wanted = [POSTS, ORIGINAL_POSTS, REPOSTS, COMMENTS, LIKES]
            .iter()
            .any(|i| self.wants(i));
        let show = self.users_show(host)?;
        if self.wants(FOLLOWERS) || self.wants(TOTAL_POSTS) {
            if req.window.contains(today) {
                self.levels(&show, today, &mut out)?;
            } else {
                host.debug(&format!(
                    "window {}..{} does not reach today ({today}): users/show only knows the current levels, none recorded",
                    req.window.from, req.window.to
                ));
            }
        }
        if timeline_wanted {
            let posts = self.timeline(req.window, tz, &show, now, host, &mut out)?;
            self.measure(&show, &posts, now, tz, today, &mut state, &mut out);
            self.engagement(&posts, req.window, tz, &mut out);
            self.daily(req.window, tz, today, &state, &mut out);
        }
        let oldest = today - Duration::days(RETAIN_DAYS);
        state.before.retain(|d, _| *d >= oldest);
        let cut = midnight(oldest, tz).timestamp();
        state.seen.retain(|_, s| s.at >= cut);
        out.state = Some(
            serde_json::to_value(&state)
                .map_err(|e| Error::internal(format!("cannot encode the resume state: {e}")))?,
        );
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

    /// The resume state of the last run, or a fresh one when there is none,
    /// it cannot be read, or it belongs to another uid or time zone.
    fn load_state(&self, req: &CollectRequest, out: &mut CollectResponse) -> State {
        let fresh = || State {
            uid: self.uid.clone(),
            timezone: req.timezone.clone(),
            ..State::default()
        };
        let Some(raw) = &req.state else {
            return fresh();
        };
        match serde_json::from_value::<State>(raw.clone()) {
            Ok(s) if s.uid == self.uid && s.timezone == req.timezone => s,
            Ok(s) => {
                out.warn(format!(
                    "resume state: measured for uid {} in {}, now uid {} in {}: the {} measured midnights are dropped",
                    s.uid,
                    s.timezone,
                    self.uid,
                    req.timezone,
                    s.before.len()
                ));
                fresh()
            }
            Err(e) => {
                out.warn(format!(
                    "resume state: unreadable ({e}); starting over, earlier days stay as stored"
                ));
                fresh()
            }
        }
    }

    /// Performs one API call and returns its JSON, or the error the answer means.
    fn call(&self, host: &Host, endpoint: &str, request: &HttpRequest) -> Result<Value, Error> {
        let place = format!("{} {endpoint}", request.method);
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

    /// Checks that the token belongs to `uid` and reports when it expires.
    fn check_token(
        &self,
        host: &Host,
        now: DateTime<Utc>,
        tz: Tz,
        out: &mut CollectResponse,
    ) -> Result<Option<DateTime<Utc>>, Error> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("access_token", &self.token)
            .finish();
        let request = HttpRequest::post(format!("{}{TOKEN_INFO}", self.api_base), body)
            .header("Content-Type", "application/x-www-form-urlencoded");
        let json = self.call(host, TOKEN_INFO, &request)?;
        let owner = json.get("uid").and_then(int).ok_or_else(|| {
            Error::upstream(format!(
                "POST {TOKEN_INFO}: the answer names no uid: {}",
                body_snippet(&self.redact(json.to_string()))
            ))
        })?;
        if owner.to_string() != self.uid {
            return Err(Error::auth(format!(
                "POST {TOKEN_INFO}: the access token belongs to Weibo uid {owner}, not to the configured uid {uid}: the timeline only shows the authorizing account's own posts, so nothing was collected; have account {uid} authorize the app and put its token in the secret",
                uid = self.uid
            )));
        }
        // The wiki renamed `expires_in` to `expire_in` [V]; either may come.
        let left = json
            .get("expire_in")
            .or_else(|| json.get("expires_in"))
            .and_then(signed);
        let Some(left) = left else {
            host.debug(&format!(
                "POST {TOKEN_INFO}: no expire_in in the answer; the token's expiry is unknown"
            ));
            return Ok(None);
        };
        let at = now + Duration::seconds(left);
        let local = at.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z");
        let days = left / 86_400;
        if left < i64::from(self.expiry_warning_days) * 86_400 {
            let hours = left / 3600;
            let within = if days >= 1 {
                format!("{days} days")
            } else {
                format!("{hours} hours")
            };
            out.warn(format!(
                "access token of uid {}: expires {local} (in {within}): have the account authorize the app again and update the secret before then (Weibo gives no refresh token)",
                self.uid
            ));
        } else {
            out.warn(format!(
                "access token of uid {}: valid until {local} ({days} days left)",
                self.uid
            ));
        }
        Ok(Some(at))
    }

    fn users_show(&self, host: &Host) -> Result<Show, Error> {
        let json = self.call(host, USERS_SHOW, &self.request(USERS_SHOW))?;
        let statuses_count = count_field(&json, "statuses_count")?;
        let latest = json.get("status").and_then(|s| {
            s.get("id")
                .and_then(int)
                .or_else(|| s.get("idstr").and_then(int))
        });
        Ok(Show {
            statuses_count,
            json,
            latest,
        })
    }

    fn levels(
        &self,
        show: &Show,
        today: NaiveDate,
        out: &mut CollectResponse,
    ) -> Result<(), Error> {
        for (id, field) in [
            (FOLLOWERS, "followers_count"),
            (TOTAL_POSTS, "statuses_count"),
        ] {
            if self.wants(id) {
                let value = count_field(&show.json, field)?;
                out.observations
                    .push(Observation::new(id, today, value as f64));
            }
        }
        Ok(())
    }

    /// The timeline's posts up to the `users/show` snapshot, newest first,
    /// paged back with `max_id` until the window's first midnight, a short
    /// page (the public API serves one page of 5) or `max_pages`. A post
    /// without a usable id or time ends the list there: the posts after it
    /// are still all there, which is what the boundaries need.
    fn timeline(
        &self,
        window: Window,
        tz: Tz,
        show: &Show,
        now: DateTime<Utc>,
        host: &Host,
        out: &mut CollectResponse,
    ) -> Result<Vec<Post>, Error> {
        let start = midnight(window.from, tz);
        let mut posts: Vec<Post> = Vec::new();
        let mut max_id: Option<u64> = None;
        for page in 1..=self.max_pages {
            if host.cancelled() {
                return Err(Error::upstream(format!(
                    "GET {USER_TIMELINE}: cancelled after {} pages",
                    page - 1
                )));
            }
            let mut request = self
                .request(USER_TIMELINE)
                .query("count", PAGE_SIZE.to_string());
            if let Some(m) = max_id {
                request = request.query("max_id", m.to_string());
            }
            let json = self.call(host, USER_TIMELINE, &request)?;
            let statuses = json
                .get("statuses")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    Error::upstream(format!(
                        "GET {USER_TIMELINE}: the answer has no statuses list: {}",
                        body_snippet(&json.to_string())
                    ))
                })?;
            for status in statuses {
                let id = status
                    .get("id")
                    .and_then(int)
                    .or_else(|| status.get("idstr").and_then(int));
                let created = status.get("created_at").and_then(Value::as_str);
                let at = created.and_then(parse_created_at);
                let (Some(id), Some(at)) = (id, at) else {
                    out.warn(format!(
                        "GET {USER_TIMELINE}: page {page}: a post with id {} and created_at {}: unusable, the timeline is read only down to the post before it",
                        id.map_or("(none)".to_owned(), |i| i.to_string()),
                        created.map_or("(none)".to_owned(), |c| format!("{c:?}"))
                    ));
                    return Ok(cut_at_snapshot(posts, show, now));
                };
                if max_id.is_some_and(|m| id > m) || posts.last().is_some_and(|p| id >= p.id) {
                    return Err(Error::upstream(format!(
                        "GET {USER_TIMELINE}: page {page} does not go back in time (post {id} after {})",
                        posts.last().map_or(0, |p| p.id)
                    )));
                }
                posts.push(Post {
                    id,
                    at: at.with_timezone(&Utc),
                    original: status.get("retweeted_status").is_none_or(Value::is_null),
                    status: status.clone(),
                });
            }
            let reached_start = posts.last().is_some_and(|p| p.at < start);
            if reached_start || statuses.len() < PAGE_SIZE as usize {
                break;
            }
            let lowest = posts.last().map_or(0, |p| p.id);
            if lowest == 0 {
                break;
            }
            max_id = Some(lowest - 1);
        }
        Ok(cut_at_snapshot(posts, show, now))
    }

    /// Measures the midnights this run's snapshot determines, and remembers
    /// the posts seen.
    #[allow(clippy::too_many_arguments)]
    fn measure(
        &self,
        show: &Show,
        posts: &[Post],
        now: DateTime<Utc>,
        tz: Tz,
        today: NaiveDate,
        state: &mut State,
        out: &mut CollectResponse,
    ) {
        let count = show.statuses_count;
        if posts.len() as u64 > count {
            out.warn(format!(
                "GET {USER_TIMELINE}: {} posts shown but statuses_count is {count}: no midnight measured in this run",
                posts.len()
            ));
            return;
        }
        // Every post after `oldest` is in `posts`; with the whole history,
        // every post is.
        let oldest: Option<DateTime<Utc>> = if posts.len() as u64 == count {
            None
        } else {
            Some(posts.last().map_or(now, |p| p.at))
        };
        if posts.is_empty() && count > 0 {
            out.warn(format!(
                "GET {USER_TIMELINE}: no posts shown though statuses_count is {count}: no midnight measured in this run"
            ));
        }
        let first = match oldest {
            None => today - Duration::days(RETAIN_DAYS),
            Some(o) => o.with_timezone(&tz).date_naive(),
        };
        let mut changed: Vec<(NaiveDate, u64, u64)> = Vec::new();
        for day in first.iter_days().take_while(|d| *d <= today) {
            let m = midnight(day, tz);
            if oldest.is_some_and(|o| m <= o) || m > now {
                continue;
            }
            let after = posts.iter().filter(|p| p.at >= m).count() as u64;
            let before = count - after;
            match state.before.get(&day) {
                None => {
                    state.before.insert(day, before);
                }
                Some(&old) if old != before => changed.push((day, old, before)),
                Some(_) => {}
            }
        }
        if let Some((day, old, new)) = changed.first() {
            out.warn(format!(
                "users/show: {} posts were published before {day} when first measured, {new} now (and {} more midnights changed): posts were deleted or hidden; days already counted keep their numbers",
                old,
                changed.len() - 1
            ));
        }
        // A post remembered from an earlier run, within the span this run
        // sees completely, but not shown now was deleted.
        let ids: BTreeSet<u64> = posts.iter().map(|p| p.id).collect();
        let newest = posts.first().map(|p| p.at);
        state.seen.retain(|id, s| {
            let inside = oldest.is_none_or(|o| s.at > o.timestamp())
                && newest.is_some_and(|n| s.at <= n.timestamp());
            ids.contains(id) || !inside
        });
        for p in posts {
            state.seen.insert(
                p.id,
                Seen {
                    at: p.at.timestamp(),
                    original: p.original,
                },
            );
        }
    }

    /// 转评赞 of the posts seen, one entity per post on its day.
    fn engagement(&self, posts: &[Post], window: Window, tz: Tz, out: &mut CollectResponse) {
        for (indicator, field) in ENGAGEMENT {
            if !self.wants(indicator) {
                continue;
            }
            for p in posts {
                let day = p.at.with_timezone(&tz).date_naive();
                if !window.contains(day) {
                    continue;
                }
                match p.status.get(field).and_then(int) {
                    Some(v) => out.observations.push(
                        Observation::new(indicator, day, v as f64).entity(p.id.to_string()),
                    ),
                    None => out.warn(format!(
                        "GET {USER_TIMELINE}: post {}: {field} is missing or not a count; its {indicator} is not recorded",
                        p.id
                    )),
                }
            }
        }
    }

    /// Records the days the boundaries determine and names those they do not.
    fn daily(
        &self,
        window: Window,
        tz: Tz,
        today: NaiveDate,
        state: &State,
        out: &mut CollectResponse,
    ) {
        let mut seen_per_day: BTreeMap<NaiveDate, (u64, u64)> = BTreeMap::new();
        for s in state.seen.values() {
            if let Some(at) = DateTime::from_timestamp(s.at, 0) {
                let e = seen_per_day
                    .entry(at.with_timezone(&tz).date_naive())
                    .or_default();
                e.0 += 1;
                e.1 += u64::from(s.original);
            }
        }
        let mut uncovered = Vec::new();
        let mut negative = Vec::new();
        let mut unseen = Vec::new();
        for day in window.days().filter(|d| *d < today) {
            let (Some(&a), Some(&b)) = (
                state.before.get(&day),
                state.before.get(&(day + Duration::days(1))),
            ) else {
                uncovered.push(day);
                unseen.push(day);
                continue;
            };
            if b < a {
                negative.push(day);
                unseen.push(day);
                continue;
            }
            let n = b - a;
            if self.wants(POSTS) {
                out.observations
                    .push(Observation::new(POSTS, day, n as f64));
            }
            let (seen, originals) = seen_per_day.get(&day).copied().unwrap_or((0, 0));
            if seen == n {
                if self.wants(ORIGINAL_POSTS) {
                    out.observations
                        .push(Observation::new(ORIGINAL_POSTS, day, originals as f64));
                }
            } else {
                unseen.push(day);
            }
        }
        // The days a wanted daily count was left out: the daemon counts
        // them as uncovered. (转评赞 are kept for the posts seen, partial by
        // nature, and do not uncover a day.)
        if self.wants(POSTS) {
            for day in uncovered.iter().chain(&negative) {
                out.uncover(*day);
            }
        }
        if self.wants(ORIGINAL_POSTS) {
            for day in &unseen {
                out.uncover(*day);
            }
        }
        // Today is counted once it is over, by a later run.
        if (self.wants(POSTS) || self.wants(ORIGINAL_POSTS)) && window.contains(today) {
            out.uncover(today);
        }
        let counted = if self.wants(POSTS) {
            Some(POSTS)
        } else if self.wants(ORIGINAL_POSTS) {
            Some(ORIGINAL_POSTS)
        } else {
            None
        };
        if let (Some(counted), false) = (counted, uncovered.is_empty()) {
            out.warn(format!(
                "{counted}: {} not recorded (left out, not 0): no run measured statuses_count at both of their midnights, and the timeline shows only the newest posts; runs each morning before the 5th post of the day measure every day",
                ranges(&uncovered)
            ));
        }
        if counted.is_some() && !negative.is_empty() {
            out.warn(format!(
                "{POSTS}: {} not recorded: fewer posts before the day's end than before its start (posts deleted between two runs)",
                ranges(&negative)
            ));
        }
        let engagement: Vec<&str> = ENGAGEMENT
            .iter()
            .map(|(i, _)| *i)
            .filter(|i| self.wants(i))
            .collect();
        if !unseen.is_empty() && (self.wants(ORIGINAL_POSTS) || !engagement.is_empty()) {
            let mut what: Vec<&str> = Vec::new();
            if self.wants(ORIGINAL_POSTS) {
                what.push(ORIGINAL_POSTS);
            }
            what.extend(engagement.iter());
            out.warn(format!(
                "{}: not every post of {} was seen on the timeline (it shows the newest 5): {} left out there, 转评赞 only of the posts seen; runs with fewer than 5 posts between them see every post",
                what.join(", "),
                ranges(&unseen),
                if self.wants(ORIGINAL_POSTS) {
                    "original posts"
                } else {
                    "nothing"
                },
            ));
        }
    }
}

/// Drops the timeline's posts newer than the `users/show` snapshot: they came
/// between the two calls and `statuses_count` does not hold them.
fn cut_at_snapshot(mut posts: Vec<Post>, show: &Show, now: DateTime<Utc>) -> Vec<Post> {
    match show.latest {
        Some(latest) => posts.retain(|p| p.id <= latest),
        None => posts.retain(|p| p.at <= now),
    }
    posts
}

/// When `day` begins in `tz` (the first instant of it where midnight is skipped).
fn midnight(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    (0..24)
        .find_map(|h| {
            tz.from_local_datetime(&day.and_time(NaiveTime::from_hms_opt(h, 0, 0)?))
                .earliest()
        })
        .map_or_else(
            || Utc.from_utc_datetime(&day.and_time(NaiveTime::MIN)),
            |t| t.with_timezone(&Utc),
        )
}

/// Days as ranges: `2026-09-01..2026-09-03, 2026-09-07`.
fn ranges(days: &[NaiveDate]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < days.len() {
        let mut j = i;
        while j + 1 < days.len() && days[j + 1] == days[j] + Duration::days(1) {
            j += 1;
        }
        parts.push(if i == j {
            days[i].to_string()
        } else {
            format!("{}..{}", days[i], days[j])
        });
        i = j + 1;
    }
    format!(
        "{} day{} ({})",
        days.len(),
        if days.len() == 1 { "" } else { "s" },
        parts.join(", ")
    )
}

fn count_field(json: &Value, field: &str) -> Result<u64, Error> {
    json.get(field).and_then(int).ok_or_else(|| {
        Error::upstream(format!(
            "GET {USERS_SHOW}: {field} is missing or not a count: {}",
            json.get(field)
                .map(|v| body_snippet(&v.to_string()))
                .unwrap_or_else(|| body_snippet(&json.to_string()))
        ))
    })
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

/// An integer that may be negative (seconds left), as a number or a string.
fn signed(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
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
