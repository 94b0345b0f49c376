//! `wechat`: a WeChat official account's (微信公众号) daily posts, reads,
//! engagement and followers, from the official API (datacube statistics).
//!
//! ```toml
//! [sources.settings]
//! appid = "wx1a2b3c4d5e6f7a8b"
//! secret = "${env:WECHAT_SECRET}"
//! # api_base = "https://api.weixin.qq.com"
//! # token_endpoint = "stable"        # or "classic" (/cgi-bin/token)
//! # data_start = 2025-11-01          # no day before it is asked
//! # indicators = ["wechat_posts", "wechat_readers"]
//! # spans = { getbizsummary = 30 }   # days asked at once, above the defaults
//! # timeout_ms = 30000
//! ```
//!
//! # Indicators
//!
//! Without `indicators`, the plugin emits the first five (`wechat_posts`,
//! `wechat_readers`, `wechat_followers`, `wechat_new_followers`,
//! `wechat_cancelled_followers`); the others are emitted only when listed.
//!
//! | id | kind, unit | from |
//! |---|---|---|
//! | `wechat_posts` | count, 篇 | distinct `msgid` of `datacube/getarticletotaldetail` per publish day, both publish types; before 2025-11-01 `freepublish/batchget`, which lists only articles published without notification |
//! | `wechat_readers` | count, 人次 | Σ per day of `datacube/getbizsummary` `read_user`: each day's distinct readers, added up over days (person-days, not unique readers, not page views) |
//! | `wechat_followers` | level, 人 | `datacube/getusercumulate` `cumulate_user` |
//! | `wechat_new_followers` | count, 人 | Σ `new_user` of `datacube/getusersummary` |
//! | `wechat_cancelled_followers` | count, 人 | Σ `cancel_user` of `datacube/getusersummary` |
//! | `wechat_posts_mass` | count, 篇 | articles of `getarticletotaldetail` with `publish_type` 0: 群发, sent with notification |
//! | `wechat_posts_published` | count, 篇 | `publish_type` 1: 发布 without notification; before 2025-11-01 from `freepublish/batchget` |
//! | `wechat_shares` | count, 人次 | Σ per day of `getbizsummary` `share_user` |
//! | `wechat_likes` | count, 人次 | Σ per day of `getbizsummary` `like_user` (赞) |
//! | `wechat_zaikan` | count, 人次 | Σ per day of `getbizsummary` `zaikan_user` (在看) |
//! | `wechat_comments` | count, 条 | Σ per day of `getbizsummary` `comment_count` |
//! | `wechat_favourites` | count, 人次 | Σ per day of `getbizsummary` `collection_user` (收藏) |
//! | `wechat_article_readers` | level, 人 | per article (entity `appid:msgid`, on its publish day): `read_user` of the last `detail_list` entry of `getarticletotaldetail`, the article's readers since publication |
//! | `wechat_article_shares` | level, 人 | the same for `share_user` |
//! | `wechat_article_likes` | level, 人 | the same for `like_user` |
//! | `wechat_article_zaikan` | level, 人 | the same for `zaikan_user` |
//! | `wechat_article_comments` | level, 条 | the same for `comment_count` |
//! | `wechat_article_favourites` | level, 人 | the same for `collection_user` |
//! | `wechat_articles_100k` | level, 篇 | per article, 1 when its `read_user` reached 100000 ("10万+" by readers: the API gives no page views), else 0 |
//!
//! The per-article figures are levels of one entity on its publish day: a
//! period's value adds up the articles published in it, each with its total
//! as of the last run whose window covered its publish day. The platform
//! follows an article for 30 days; a `lookback_days` of up to 30 brings the
//! stored totals closer to the final ones.
//!
//! # Behaviour
//!
//! - The access token comes from `/cgi-bin/stable_token` (normal mode) or
//!   `/cgi-bin/token`, is kept until 5 minutes before it expires, and is
//!   fetched again once when a call answers 40001, 40014 or 42001 (the call is
//!   then retried once). It is never logged.
//! - A day is asked only once it is final: from 08:00 the next day in China
//!   Standard Time (the platform's guide: "请于每天上午8点后查询公众号前一天的数据"),
//!   and in the daemon's time zone when that is later. A run before 08:00
//!   leaves yesterday out (not 0, not stored), logs it and names it
//!   *uncovered* in its answer: the daemon counts it as a gap (the summary
//!   marks the period incomplete) and starts the next run's window early
//!   enough to read it, whatever `lookback_days` says.
//!   Today, not final either, is uncovered too, so a running period's
//!   figures from this plugin stay marked incomplete until its last day is
//!   final.
//! - Every other day of the window the run could not read is named
//!   uncovered too: days answered `is_delay`, days left when the quota ran
//!   out, days the platform refused even alone, days of an answer without a
//!   list or with a malformed row, and days before the platform's data start
//!   for an indicator asked for.
//! - Windows are split into spans of at most [`SPANS`] days per endpoint
//!   (raised or lowered with `spans`), and clipped to `data_start`, to the
//!   platform's data start (2014-12-01 for the user endpoints, 2025-11-01 for
//!   the article endpoints) and to the last final day. A span the platform
//!   refuses (61501 `date range error`, or an answer saying the span is too
//!   large) is halved and the same days asked again, down to one day; a day
//!   refused alone is a warning, never a failed source.
//! - Days answered with `"is_delay": true` are not emitted: a warning names
//!   them and the resume state (`delayed`) lists them, so that they are read
//!   again by the next run whose window covers them.
//! - When an endpoint's daily quota is used up (45009), what was collected so
//!   far is kept: the run succeeds with a warning naming the endpoint and the
//!   last day collected, and the resume state (`incomplete`) says from which
//!   day that endpoint has to be read again. Only a run that collected nothing
//!   fails (`rate_limited`, to retry after the quota resets at 00:00 China
//!   Standard Time: the daemon does not try before).
//! - The number of API calls of the run is in the resume state (`calls`) and
//!   in the log.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Days, FixedOffset, NaiveDate, NaiveDateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tally_plugin::schemars::{self, JsonSchema};
use tally_plugin::{
    CollectRequest, CollectResponse, Description, Error, Host, HttpRequest, IndicatorDecl, Kind,
    Observation, Plugin, Window, export_plugin,
};

pub const POSTS: &str = "wechat_posts";
pub const READERS: &str = "wechat_readers";
pub const FOLLOWERS: &str = "wechat_followers";
pub const NEW_FOLLOWERS: &str = "wechat_new_followers";
pub const CANCELLED_FOLLOWERS: &str = "wechat_cancelled_followers";
pub const POSTS_MASS: &str = "wechat_posts_mass";
pub const POSTS_PUBLISHED: &str = "wechat_posts_published";
pub const SHARES: &str = "wechat_shares";
pub const LIKES: &str = "wechat_likes";
pub const ZAIKAN: &str = "wechat_zaikan";
pub const COMMENTS: &str = "wechat_comments";
pub const FAVOURITES: &str = "wechat_favourites";
pub const ARTICLE_READERS: &str = "wechat_article_readers";
pub const ARTICLE_SHARES: &str = "wechat_article_shares";
pub const ARTICLE_LIKES: &str = "wechat_article_likes";
pub const ARTICLE_ZAIKAN: &str = "wechat_article_zaikan";
pub const ARTICLE_COMMENTS: &str = "wechat_article_comments";
pub const ARTICLE_FAVOURITES: &str = "wechat_article_favourites";
pub const ARTICLES_100K: &str = "wechat_articles_100k";

/// What the plugin can emit: id, display name, kind, unit. The first five are
/// emitted when the settings list no `indicators`, so that configurations
/// written before the others existed keep declaring everything they get.
const INDICATORS: [(&str, &str, Kind, &str); 19] = [
    (POSTS, "微信公众号发文篇数（群发与发布）", Kind::Count, "篇"),
    (
        READERS,
        "微信公众号图文阅读人次（每日阅读人数按日累加）",
        Kind::Count,
        "人次",
    ),
    (FOLLOWERS, "微信公众号粉丝数", Kind::Level, "人"),
    (NEW_FOLLOWERS, "微信公众号新增粉丝数", Kind::Count, "人"),
    (
        CANCELLED_FOLLOWERS,
        "微信公众号取消关注人数",
        Kind::Count,
        "人",
    ),
    (
        POSTS_MASS,
        "微信公众号群发篇数（已通知）",
        Kind::Count,
        "篇",
    ),
    (
        POSTS_PUBLISHED,
        "微信公众号发布篇数（未通知）",
        Kind::Count,
        "篇",
    ),
    (
        SHARES,
        "微信公众号分享人次（按日累加）",
        Kind::Count,
        "人次",
    ),
    (LIKES, "微信公众号点赞人次（按日累加）", Kind::Count, "人次"),
    (
        ZAIKAN,
        "微信公众号在看人次（按日累加）",
        Kind::Count,
        "人次",
    ),
    (COMMENTS, "微信公众号留言条数", Kind::Count, "条"),
    (
        FAVOURITES,
        "微信公众号收藏人次（按日累加）",
        Kind::Count,
        "人次",
    ),
    (
        ARTICLE_READERS,
        "微信公众号文章累计阅读人数（按发文日）",
        Kind::Level,
        "人",
    ),
    (
        ARTICLE_SHARES,
        "微信公众号文章累计分享人数（按发文日）",
        Kind::Level,
        "人",
    ),
    (
        ARTICLE_LIKES,
        "微信公众号文章累计点赞人数（按发文日）",
        Kind::Level,
        "人",
    ),
    (
        ARTICLE_ZAIKAN,
        "微信公众号文章累计在看人数（按发文日）",
        Kind::Level,
        "人",
    ),
    (
        ARTICLE_COMMENTS,
        "微信公众号文章累计留言条数（按发文日）",
        Kind::Level,
        "条",
    ),
    (
        ARTICLE_FAVOURITES,
        "微信公众号文章累计收藏人数（按发文日）",
        Kind::Level,
        "人",
    ),
    (
        ARTICLES_100K,
        "微信公众号阅读10万+文章篇数（按阅读人数）",
        Kind::Level,
        "篇",
    ),
];
/// How many of [`INDICATORS`] are emitted by default.
const DEFAULT_COUNT: usize = 5;

/// The largest span (days, both ends inclusive) the plugin asks of each
/// endpoint at once, and where the number comes from. A refused span is
/// halved at run time, so a guess too high costs calls, never data.
pub const SPANS: [(&str, u64, &str); 4] = [
    (
        "getusersummary",
        7,
        "official documentation (User_Analysis_Data_Interface): 7 days",
    ),
    (
        "getusercumulate",
        7,
        "official documentation (User_Analysis_Data_Interface): 7 days",
    ),
    (
        "getbizsummary",
        7,
        "no limit stated in the documentation; a public client asks 7 days \
         (a third-party SDK's comment says 30, unconfirmed)",
    ),
    (
        "getarticletotaldetail",
        1,
        "one publish day per call, like its documented siblings getarticleread and \
         getarticleshare (\"日期范围仅支持查询1天\")",
    ),
];

/// The first day the user-analytics endpoints hold data.
const LEGACY_DATA_START: NaiveDate = ymd(2014, 12, 1);
/// The first day the new 发表内容 endpoints hold data.
const NEW_DATA_START: NaiveDate = ymd(2025, 11, 1);
/// Fetch a new token this long before the old one expires.
const TOKEN_MARGIN_SECS: i64 = 300;
/// A day's statistics are final from this hour of the next day: "请于每天上午8点后
/// 查询公众号前一天的数据" (the official data-analysis guide).
pub const FINAL_HOUR: u32 = 8;
/// Reads from which an article counts as "10万+".
const READS_100K: f64 = 100_000.0;

const fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    match NaiveDate::from_ymd_opt(y, m, d) {
        Some(d) => d,
        None => panic!("invalid constant date"),
    }
}

fn cst() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset")
}

/// `[sources.settings]` of a `wechat` source. No `Debug`: it holds the secret.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The official account's AppID (设置与开发 → 基本配置).
    #[schemars(extend("examples" = ["wx1a2b3c4d5e6f7a8b"]))]
    pub appid: String,
    /// The AppSecret: put it in a secret.
    #[schemars(extend("examples" = ["${env:WECHAT_SECRET}"]))]
    pub secret: String,
    /// The API's base URL.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// Which token endpoint to use.
    #[serde(default)]
    pub token_endpoint: TokenEndpoint,
    /// No day before it is asked (`2025-11-01`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub data_start: Option<NaiveDate>,
    /// The indicators to collect; default the first five of the plugin's table.
    #[serde(default)]
    pub indicators: Option<Vec<String>>,
    /// Per endpoint name, the days asked at once instead of the defaults (`{ getbizsummary = 30 }`).
    #[serde(default)]
    pub spans: BTreeMap<String, u64>,
    /// The timeout of each API request in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

fn default_api_base() -> String {
    "https://api.weixin.qq.com".to_owned()
}

/// Which token endpoint to use.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
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
        INDICATORS.iter().fold(
            Description::new(
                "WeChat official account (微信公众号): posts, reads, engagement, followers",
            )
            .settings_schema::<Settings>(),
            |d, (id, name, kind, unit)| d.indicator(IndicatorDecl::new(id, name, *kind, unit)),
        )
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
                "api_base: `{}` must start with http:// or https://",
                s.api_base
            )));
        }
        if s.timeout_ms == Some(0) {
            return Err(Error::settings("timeout_ms: must be above 0"));
        }
        for (endpoint, days) in &s.spans {
            if !SPANS.iter().any(|(n, _, _)| n == endpoint) {
                return Err(Error::settings(format!(
                    "spans.{endpoint}: unknown endpoint; the plugin reads {}",
                    SPANS.map(|(n, _, _)| n).join(", ")
                )));
            }
            if !(1..=366).contains(days) {
                return Err(Error::settings(format!(
                    "spans.{endpoint}: {days} days; must be 1 to 366"
                )));
            }
        }
        let ids = INDICATORS.map(|(id, _, _, _)| id);
        let emits = match &s.indicators {
            None => ids[..DEFAULT_COUNT]
                .iter()
                .map(|i| (*i).to_owned())
                .collect(),
            Some(list) => {
                if list.is_empty() {
                    return Err(Error::settings(format!(
                        "indicators: empty; name some of {}",
                        ids.join(", ")
                    )));
                }
                for (i, id) in list.iter().enumerate() {
                    if !ids.contains(&id.as_str()) {
                        return Err(Error::settings(format!(
                            "indicators[{i}]: unknown indicator {id:?}; this plugin emits {}",
                            ids.join(", ")
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
            // The quota resets at midnight in Beijing: asking before is useless.
            let tomorrow = host.now().with_timezone(&cst()).date_naive() + chrono::Days::new(1);
            let reset = tomorrow
                .and_hms_opt(0, 0, 0)
                .and_then(|t| t.and_local_timezone(cst()).single())
                .map(|t| t.with_timezone(&Utc));
            let limited = Error::rate_limited(format!(
                "daily API quota used up (45009, reach max api daily quota limit) on {}: \
                 nothing collected, it resets at 00:00 CST",
                quota_hit.join(", ")
            ));
            return Err(match reset {
                Some(at) => limited.retry_after(at),
                None => limited,
            });
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

    fn data_start(self) -> NaiveDate {
        match self {
            Endpoint::ArticleTotalDetail | Endpoint::BizSummary => NEW_DATA_START,
            Endpoint::UserCumulate | Endpoint::UserSummary => LEGACY_DATA_START,
        }
    }

    /// Per indicator of a daily endpoint, the path of its field in a row.
    fn fields(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Endpoint::ArticleTotalDetail => &[],
            Endpoint::BizSummary => &[
                (READERS, "detail.read_user"),
                (SHARES, "detail.share_user"),
                (LIKES, "detail.like_user"),
                (ZAIKAN, "detail.zaikan_user"),
                (COMMENTS, "detail.comment_count"),
                (FAVOURITES, "detail.collection_user"),
            ],
            Endpoint::UserCumulate => &[(FOLLOWERS, "cumulate_user")],
            Endpoint::UserSummary => &[
                (NEW_FOLLOWERS, "new_user"),
                (CANCELLED_FOLLOWERS, "cancel_user"),
            ],
        }
    }

    fn indicators(self) -> Vec<&'static str> {
        match self {
            Endpoint::ArticleTotalDetail => {
                let mut ids = vec![POSTS, POSTS_MASS, POSTS_PUBLISHED, ARTICLES_100K];
                ids.extend(ARTICLE_FIELDS.iter().map(|(i, _)| *i));
                ids
            }
            _ => self.fields().iter().map(|(i, _)| *i).collect(),
        }
    }

    /// New endpoints answer `is_delay`; the latest day gets its own call so
    /// that a delayed answer holds back only that day.
    fn has_delay(self) -> bool {
        matches!(self, Endpoint::ArticleTotalDetail | Endpoint::BizSummary)
    }
}

/// Per-article indicators and their field in a `detail_list` entry.
const ARTICLE_FIELDS: [(&str, &str); 6] = [
    (ARTICLE_READERS, "read_user"),
    (ARTICLE_SHARES, "share_user"),
    (ARTICLE_LIKES, "like_user"),
    (ARTICLE_ZAIKAN, "zaikan_user"),
    (ARTICLE_COMMENTS, "comment_count"),
    (ARTICLE_FAVOURITES, "collection_user"),
];

/// The last day whose statistics are final at `now`: the day before
/// yesterday until 08:00, yesterday from then on, in China Standard Time
/// and, when it is later there, in the daemon's zone.
pub fn last_final_day(now: DateTime<Utc>, zone: Option<chrono_tz::Tz>) -> NaiveDate {
    let in_zone = |local: NaiveDateTime| {
        let back = if local.hour() >= FINAL_HOUR { 1 } else { 2 };
        local
            .date()
            .checked_sub_days(Days::new(back))
            .unwrap_or(NaiveDate::MIN)
    };
    let platform = in_zone(now.with_timezone(&cst()).naive_local());
    match zone {
        Some(tz) => platform.min(in_zone(now.with_timezone(&tz).naive_local())),
        None => platform,
    }
}

/// One run's progress.
struct Run<'a> {
    req: &'a CollectRequest,
    out: CollectResponse,
    /// The last day the platform has final data for.
    latest: NaiveDate,
    /// Per endpoint, the span this run asks (lowered when refused).
    spans: BTreeMap<&'static str, u64>,
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
        let zone = req.timezone.parse::<chrono_tz::Tz>().ok();
        let mut run = Run {
            req,
            out: CollectResponse::default(),
            latest: last_final_day(now, zone),
            spans: BTreeMap::new(),
            delayed: BTreeMap::new(),
            incomplete: BTreeMap::new(),
            quota_hit: Vec::new(),
        };
        if zone.is_none() {
            run.out.warn(format!(
                "timezone {:?} is unknown; days end at midnight China Standard Time",
                req.timezone
            ));
        }
        run.carry_over_state();
        run
    }

    /// The span to ask of `endpoint` now.
    fn span(&self, endpoint: Endpoint, settings: &Settings) -> u64 {
        let name = endpoint.name();
        self.spans.get(name).copied().unwrap_or_else(|| {
            settings.spans.get(name).copied().unwrap_or_else(|| {
                SPANS
                    .iter()
                    .find(|(n, _, _)| *n == name)
                    .map_or(1, |(_, s, _)| *s)
            })
        })
    }

    /// Keeps what the previous run left to do outside this window (this run
    /// cannot deliver it: the daemon stores only the window's days) and says how
    /// to fetch it. The daemon's window reaches back to the days a run named
    /// uncovered for 31 days, so this only speaks up for older ones (or
    /// beside a backfill of other days).
    fn carry_over_state(&mut self) {
        let Some(state) = &self.req.state else { return };
        let window = self.req.window;
        let outside = |days: &Value| -> Vec<NaiveDate> {
            days.as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str()?.parse().ok())
                .filter(|d| !window.contains(*d))
                .collect()
        };
        if let Some(delayed) = state.get("delayed").and_then(Value::as_object) {
            for (endpoint, days) in delayed {
                let days = outside(days);
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
        // Days held back as not final yet need nothing here: the run named
        // them uncovered, so the daemon's next window reaches back to them.
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
    /// 61501 or a span said to be too large: ask fewer days.
    Span(String),
    Fatal(Error),
}

impl From<Error> for CallError {
    fn from(e: Error) -> Self {
        CallError::Fatal(e)
    }
}

/// The last day of a call starting at `begin` for an endpoint asked `span`
/// days at once; for endpoints answering `is_delay`, the latest day is asked
/// alone.
fn chunk_end(
    begin: NaiveDate,
    to: NaiveDate,
    span: u64,
    endpoint: Endpoint,
    latest: NaiveDate,
) -> NaiveDate {
    let mut end = begin
        .checked_add_days(Days::new(span.max(1) - 1))
        .unwrap_or(to)
        .min(to);
    if endpoint.has_delay() && end == latest && begin < latest {
        end = latest.pred_opt().unwrap_or(latest);
    }
    end
}

impl Wechat {
    fn wants(&self, indicator: &str) -> bool {
        self.emits.iter().any(|e| e == indicator)
    }

    fn collect_all(&mut self, run: &mut Run, host: &Host) -> Result<(), Error> {
        let window = run.req.window;
        let mut from = window.from;
        if let Some(start) = self.s.data_start {
            from = from.max(start);
        }
        let to = window.to.min(run.latest);
        // Days not final (today included): left out now, named uncovered,
        // so that the daemon counts them as gaps and asks them again.
        let waiting: Vec<NaiveDate> = from
            .max(run.latest.succ_opt().unwrap_or(run.latest))
            .iter_days()
            .take_while(|d| *d <= window.to)
            .collect();
        if let (Some(&first), Some(&last)) = (waiting.first(), waiting.last()) {
            let days = if first == last {
                first.to_string()
            } else {
                format!("{first}..{last}")
            };
            host.info(&format!(
                "wechat: {days} not final before {FINAL_HOUR:02}:00 the next day (China Standard Time); \
                 left uncovered for a later run"
            ));
            run.out.uncover_range(Window::new(first, last));
        }
        if from > to {
            return Ok(());
        }
        for endpoint in [
            Endpoint::ArticleTotalDetail,
            Endpoint::BizSummary,
            Endpoint::UserCumulate,
            Endpoint::UserSummary,
        ] {
            let wanted: Vec<&str> = endpoint
                .indicators()
                .into_iter()
                .filter(|i| self.wants(i))
                .collect();
            if wanted.is_empty() {
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
                let mut lost = wanted.clone();
                if endpoint == Endpoint::ArticleTotalDetail {
                    self.posts_from_freepublish(run, host, from.max(LEGACY_DATA_START), before)?;
                    lost.retain(|i| ![POSTS, POSTS_PUBLISHED].contains(i));
                }
                if !lost.is_empty() {
                    run.out.warn(format!(
                        "{}: the platform keeps no data before {}: {} not collected for {from}..{before}",
                        endpoint.name(),
                        endpoint.data_start(),
                        lost.join(", ")
                    ));
                    run.out.uncover_range(Window::new(from, before));
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
        let name = endpoint.name();
        let first_span = run.span(endpoint, &self.s);
        let mut refusal = None;
        let mut begin = from;
        while begin <= to {
            if host.cancelled() {
                return Err(Error::upstream(format!(
                    "{name}: run cancelled by the daemon at {begin}"
                )));
            }
            let end = chunk_end(begin, to, run.span(endpoint, &self.s), endpoint, run.latest);
            let body = json!({"begin_date": begin.to_string(), "end_date": end.to_string()});
            let answer = match self.business(host, &format!("datacube/{name}"), body) {
                Ok(a) => a,
                Err(CallError::Fatal(e)) => return Err(e),
                Err(CallError::Span(what)) => {
                    let days = (end - begin).num_days().unsigned_abs() + 1;
                    if days > 1 {
                        // Ask the same days again, half as many at a time.
                        run.spans.insert(name, days.div_ceil(2));
                        refusal.get_or_insert(what);
                        continue;
                    }
                    run.out.warn(format!(
                        "{name}: {begin} refused even alone ({what}): not collected"
                    ));
                    run.out.uncover_range(Window::new(begin, end));
                    match end.succ_opt() {
                        Some(d) => begin = d,
                        None => break,
                    }
                    continue;
                }
                Err(CallError::Quota(what)) => {
                    let done = begin.pred_opt().filter(|d| *d >= from);
                    let collected = match done {
                        Some(d) => format!("collected up to {d}"),
                        None => "nothing collected".to_owned(),
                    };
                    run.out.warn(format!(
                        "quota exceeded on {name} ({what}): {collected}, {begin}..{to} left for the next run"
                    ));
                    run.incomplete.insert(
                        name.to_owned(),
                        json!({"from": begin.to_string(), "to": to.to_string()}),
                    );
                    run.out.uncover_range(Window::new(begin, to));
                    run.quota_hit.push(name.to_owned());
                    return Ok(());
                }
            };
            if answer.get("is_delay").and_then(Value::as_bool) == Some(true) {
                let days: Vec<NaiveDate> = begin.iter_days().take_while(|d| *d <= end).collect();
                run.out.warn(format!(
                    "{name}: {} not final yet (is_delay); not stored, read again by the next run",
                    if begin == end {
                        begin.to_string()
                    } else {
                        format!("{begin}..{end}")
                    }
                ));
                run.delayed.entry(name.to_owned()).or_default().extend(days);
                run.out.uncover_range(Window::new(begin, end));
            } else if endpoint == Endpoint::ArticleTotalDetail {
                self.parse_articles(run, begin, end, &answer);
            } else {
                self.parse_daily(run, endpoint, begin, end, &answer);
            }
            begin = match end.succ_opt() {
                Some(d) => d,
                None => break,
            };
        }
        if let Some(what) = refusal {
            let now = run.span(endpoint, &self.s);
            run.out.warn(format!(
                "{name}: the platform refused {first_span}-day spans ({what}); asked {now} days at a time \
                 instead: set spans.{name} = {now} in the source's settings to save the refused calls"
            ));
        }
        Ok(())
    }

    /// The rows of `answer` as `(index, day, row)` for the days of
    /// `[begin, end]`; a row of another day is a warning naming it.
    fn rows<'v>(
        run: &mut Run,
        name: &str,
        begin: NaiveDate,
        end: NaiveDate,
        answer: &'v Value,
    ) -> Option<Vec<(usize, NaiveDate, &'v Value)>> {
        let Some(rows) = answer.get("list").and_then(Value::as_array) else {
            run.out.warn(format!(
                "{name}: answer for {begin}..{end} has no list; days skipped"
            ));
            run.out.uncover_range(Window::new(begin, end));
            return None;
        };
        let mut out = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let day = row
                .get("ref_date")
                .and_then(Value::as_str)
                .and_then(|d| d.parse::<NaiveDate>().ok());
            match day.filter(|d| begin <= *d && *d <= end) {
                Some(day) => out.push((i, day, row)),
                None => run.out.warn(format!(
                    "{name}: list[{i}]: ref_date {} is not a day of {begin}..{end}; row skipped",
                    row.get("ref_date").unwrap_or(&Value::Null)
                )),
            }
        }
        Some(out)
    }

    /// Turns a daily endpoint's `list` into observations for `[begin, end]`. A
    /// day without rows had nothing (0, except for the follower level); a bad
    /// field is a warning naming it, and its indicator is not stored that day.
    fn parse_daily(
        &self,
        run: &mut Run,
        endpoint: Endpoint,
        begin: NaiveDate,
        end: NaiveDate,
        answer: &Value,
    ) {
        let name = endpoint.name();
        let fields: Vec<(&str, &str)> = endpoint
            .fields()
            .iter()
            .copied()
            .filter(|(i, _)| self.wants(i))
            .collect();
        let level = endpoint == Endpoint::UserCumulate;
        let mut values: BTreeMap<(&str, NaiveDate), f64> = BTreeMap::new();
        if !level {
            for d in begin.iter_days().take_while(|d| *d <= end) {
                for (indicator, _) in &fields {
                    values.insert((indicator, d), 0.0);
                }
            }
        }
        let mut bad: BTreeSet<(&str, NaiveDate)> = BTreeSet::new();
        let Some(rows) = Self::rows(run, name, begin, end, answer) else {
            return;
        };
        for (i, day, row) in rows {
            for (indicator, path) in &fields {
                let v = path.split('.').try_fold(row, |v, key| v.get(key));
                match v.and_then(number) {
                    Some(n) if level => {
                        values.insert((indicator, day), n);
                    }
                    Some(n) => *values.entry((indicator, day)).or_insert(0.0) += n,
                    None => {
                        run.out.warn(format!(
                            "{name}: list[{i}]: {path}: not a number; {indicator} of {day} not stored"
                        ));
                        bad.insert((indicator, day));
                        run.out.uncover(day);
                    }
                }
            }
        }
        for ((indicator, day), v) in values {
            if !bad.contains(&(indicator, day)) {
                self.emit(run, indicator, day, v);
            }
        }
    }

    /// `getarticletotaldetail`: the articles published in `[begin, end]`,
    /// counted per day and publish type, and their totals so far.
    fn parse_articles(&self, run: &mut Run, begin: NaiveDate, end: NaiveDate, answer: &Value) {
        let name = Endpoint::ArticleTotalDetail.name();
        let days: Vec<NaiveDate> = begin.iter_days().take_while(|d| *d <= end).collect();
        // Per day: all msgids, those sent by 群发 (0), those published (1).
        let mut posts: BTreeMap<NaiveDate, [BTreeSet<String>; 3]> =
            days.iter().map(|d| (*d, Default::default())).collect();
        let mut bad_days: BTreeSet<NaiveDate> = BTreeSet::new();
        let mut bad_split: BTreeSet<NaiveDate> = BTreeSet::new();
        let Some(rows) = Self::rows(run, name, begin, end, answer) else {
            return;
        };
        for (i, day, row) in rows {
            let Some(msgid) = row.get("msgid").and_then(Value::as_str) else {
                run.out.warn(format!(
                    "{name}: list[{i}]: no msgid; posts of {day} not stored"
                ));
                bad_days.insert(day);
                run.out.uncover(day);
                continue;
            };
            let slot = posts.entry(day).or_default();
            slot[0].insert(msgid.to_owned());
            match row.get("publish_type").and_then(Value::as_i64) {
                Some(0) => {
                    slot[1].insert(msgid.to_owned());
                }
                Some(1) => {
                    slot[2].insert(msgid.to_owned());
                }
                other => {
                    if self.wants(POSTS_MASS) || self.wants(POSTS_PUBLISHED) {
                        run.out.warn(format!(
                            "{name}: list[{i}]: publish_type {}: neither 0 (群发) nor 1 (发布); \
                             {POSTS_MASS} and {POSTS_PUBLISHED} of {day} not stored",
                            other.map_or("missing".to_owned(), |t| t.to_string())
                        ));
                    }
                    bad_split.insert(day);
                }
            }
            self.article_totals(run, i, day, msgid, row);
        }
        for (day, [all, mass, published]) in posts {
            if bad_days.contains(&day) {
                continue;
            }
            self.emit(run, POSTS, day, all.len() as f64);
            if !bad_split.contains(&day) {
                self.emit(run, POSTS_MASS, day, mass.len() as f64);
                self.emit(run, POSTS_PUBLISHED, day, published.len() as f64);
            }
        }
    }

    /// One article's totals from the last entry of its `detail_list`.
    fn article_totals(&self, run: &mut Run, i: usize, day: NaiveDate, msgid: &str, row: &Value) {
        let wanted: Vec<(&str, &str)> = ARTICLE_FIELDS
            .iter()
            .copied()
            .filter(|(ind, _)| self.wants(ind))
            .collect();
        let want_100k = self.wants(ARTICLES_100K);
        if wanted.is_empty() && !want_100k {
            return;
        }
        let name = Endpoint::ArticleTotalDetail.name();
        let last = row
            .get("detail_list")
            .and_then(Value::as_array)
            .and_then(|list| {
                list.iter()
                    .filter_map(|e| Some((e.get("stat_date")?.as_str()?, e)))
                    .max_by(|a, b| a.0.cmp(b.0))
            })
            .map(|(_, e)| e);
        let Some(last) = last else {
            run.out.warn(format!(
                "{name}: list[{i}]: article {msgid} has no dated detail_list entry; its totals not stored"
            ));
            return;
        };
        let entity = format!("{}:{msgid}", self.s.appid);
        for (indicator, field) in wanted {
            match last.get(field).and_then(number) {
                Some(v) => self.emit_entity(run, indicator, day, &entity, v),
                None => run.out.warn(format!(
                    "{name}: list[{i}]: article {msgid}: {field}: not a number; {indicator} not stored"
                )),
            }
        }
        if want_100k {
            match last.get("read_user").and_then(number) {
                Some(reads) => {
                    let v = if reads >= READS_100K { 1.0 } else { 0.0 };
                    self.emit_entity(run, ARTICLES_100K, day, &entity, v);
                }
                None if self.wants(ARTICLE_READERS) => {}
                None => run.out.warn(format!(
                    "{name}: list[{i}]: article {msgid}: read_user: not a number; {ARTICLES_100K} not stored"
                )),
            }
        }
    }

    fn emit(&self, run: &mut Run, indicator: &str, day: NaiveDate, value: f64) {
        if self.wants(indicator) {
            run.out
                .observations
                .push(Observation::new(indicator, day, value));
        }
    }

    fn emit_entity(&self, run: &mut Run, indicator: &str, day: NaiveDate, entity: &str, v: f64) {
        if self.wants(indicator) {
            run.out
                .observations
                .push(Observation::new(indicator, day, v).entity(entity));
        }
    }

    /// Posts of days before the article endpoints' data start, from the list of
    /// publications, which misses content sent by 群发 with notification: exact
    /// for `wechat_posts_published`, a lower bound for `wechat_posts`.
    fn posts_from_freepublish(
        &mut self,
        run: &mut Run,
        host: &Host,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<(), Error> {
        if from > to || !(self.wants(POSTS) || self.wants(POSTS_PUBLISHED)) {
            return Ok(());
        }
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
                Err(CallError::Span(what)) => {
                    return Err(Error::upstream(format!("batchget: {what}")));
                }
                Err(CallError::Quota(what)) => {
                    run.out.warn(format!(
                        "quota exceeded on batchget ({what}): {POSTS} for {from}..{to} left for the next run"
                    ));
                    run.incomplete.insert(
                        "batchget".to_owned(),
                        json!({"from": from.to_string(), "to": to.to_string()}),
                    );
                    run.out.uncover_range(Window::new(from, to));
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
                    .map(|t| t.with_timezone(&cst()).date_naive())
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
        if self.wants(POSTS) {
            run.out.warn(format!(
                "{POSTS} for {from}..{to} come from freepublish/batchget (the article statistics start on \
                 {NEW_DATA_START}); it lists only articles published without 群发 notification, so these counts may be low"
            ));
        }
        for (day, n) in per_day {
            self.emit(run, POSTS, day, n);
            self.emit(run, POSTS_PUBLISHED, day, n);
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
                _ if is_span_error(code, &self.errmsg(&answer)) => {
                    return Err(CallError::Span(format!(
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

/// Whether an error answer refuses the span of dates asked: 61501 `date range
/// error`, or a message saying the span is too large (seen with other codes).
fn is_span_error(code: i64, errmsg: &str) -> bool {
    code == 61501 || errmsg.contains("span too large")
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

export_plugin!(Wechat);

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn d(m: u32, day: u32) -> NaiveDate {
        ymd(2026, m, day)
    }

    /// Splits `[from, to]` as `read_endpoint` does when nothing is refused.
    fn chunks(
        from: NaiveDate,
        to: NaiveDate,
        e: Endpoint,
        latest: NaiveDate,
    ) -> Vec<(NaiveDate, NaiveDate)> {
        let span = SPANS.iter().find(|(n, _, _)| *n == e.name()).unwrap().1;
        let mut out = Vec::new();
        let mut begin = from;
        while begin <= to {
            let end = chunk_end(begin, to, span, e, latest);
            out.push((begin, end));
            begin = end.succ_opt().unwrap();
        }
        out
    }

    #[test]
    fn chunks_respect_the_span_and_isolate_the_latest_day() {
        let c = chunks(d(11, 1), d(11, 26), Endpoint::UserSummary, d(11, 26));
        assert_eq!(c.first(), Some(&(d(11, 1), d(11, 7))));
        assert_eq!(c.last(), Some(&(d(11, 22), d(11, 26))));
        assert_eq!(c.len(), 4);
        let c = chunks(d(11, 12), d(11, 26), Endpoint::BizSummary, d(11, 26));
        assert_eq!(
            c,
            [
                (d(11, 12), d(11, 18)),
                (d(11, 19), d(11, 25)),
                (d(11, 26), d(11, 26))
            ]
        );
        let c = chunks(d(11, 20), d(11, 26), Endpoint::BizSummary, d(11, 26));
        assert_eq!(c, [(d(11, 20), d(11, 25)), (d(11, 26), d(11, 26))]);
    }

    #[test]
    fn a_day_is_final_from_eight_the_next_morning() {
        let shanghai = |day: u32, h: u32, m: u32| {
            chrono_tz::Asia::Shanghai
                .with_ymd_and_hms(2026, 11, day, h, m, 0)
                .unwrap()
                .with_timezone(&Utc)
        };
        let tz = Some(chrono_tz::Asia::Shanghai);
        assert_eq!(last_final_day(shanghai(27, 0, 0), tz), d(11, 25));
        assert_eq!(last_final_day(shanghai(27, 2, 30), tz), d(11, 25));
        assert_eq!(last_final_day(shanghai(27, 7, 59), tz), d(11, 25));
        assert_eq!(last_final_day(shanghai(27, 8, 0), tz), d(11, 26));
        assert_eq!(last_final_day(shanghai(27, 23, 59), tz), d(11, 26));
        assert_eq!(last_final_day(shanghai(27, 9, 0), None), d(11, 26));
        // In a zone west of China the later of the two 08:00s counts:
        // 09:00 in Beijing is 01:00 in London, before 08:00 there.
        assert_eq!(
            last_final_day(shanghai(27, 9, 0), Some(chrono_tz::Europe::London)),
            d(11, 25)
        );
        // East of China, Beijing's 08:00 comes later.
        let tokyo_8 = chrono_tz::Asia::Tokyo
            .with_ymd_and_hms(2026, 11, 27, 8, 30, 0)
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            last_final_day(tokyo_8, Some(chrono_tz::Asia::Tokyo)),
            d(11, 25)
        );
    }

    #[test]
    fn every_endpoint_has_a_span_with_its_source() {
        for e in [
            Endpoint::ArticleTotalDetail,
            Endpoint::BizSummary,
            Endpoint::UserCumulate,
            Endpoint::UserSummary,
        ] {
            let (_, span, source) = SPANS.iter().find(|(n, _, _)| *n == e.name()).unwrap();
            assert!(*span >= 1 && !source.is_empty(), "{}", e.name());
        }
        let described = Wechat::describe();
        assert_eq!(described.indicators.len(), INDICATORS.len());
    }

    #[test]
    fn snippets_are_short() {
        let s = snippet(&"x".repeat(500));
        assert!(s.len() < 130, "{s}");
    }
}
