//! A WeChat official-account (公众号) API simulator, faithful to the notes in
//! `platforms.md` §1: the token endpoints, the datacube endpoints the
//! `wechat` plugin reads, and `freepublish/batchget`.
//!
//! - Errors are HTTP 200 with `{"errcode":N,"errmsg":"..."}`; successful
//!   datacube answers carry no `errcode` at all, as the real service does.
//! - Every business call needs `?access_token=`: missing is 41001, unknown
//!   40001, expired 42001.
//! - Datacube dates must be `YYYY-MM-DD` (61500); `end_date` must be before
//!   today in China Standard Time, the span (days, both ends inclusive) must
//!   not exceed the endpoint's maximum ([`DATACUBE`], changed with
//!   [`Faults::set_max_span`]), and `begin_date` must not precede the
//!   endpoint's data start (all 61501).
//! - Yesterday's statistics are final only from 08:00 China Standard Time
//!   (the official guide: "请于每天上午8点后查询公众号前一天的数据"). Before that
//!   hour no endpoint has rows for yesterday yet, and the new endpoints say
//!   `"is_delay": true` ([`Faults::set_final_hour`]; what exactly the real
//!   service answers that early is not documented: an empty day is the
//!   simulator's choice).
//! - The numbers are deterministic per account and day ([`posts_on`],
//!   [`readers_on`], [`new_followers_on`], [`cancelled_followers_on`],
//!   [`followers_on`]), so tests compute their expectations from the same
//!   functions.
//!
//! Failures are switched on through [`Faults`] (see [`WechatSim::faults`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeZone, Timelike, Utc};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// The first day the legacy datacube endpoints (user analytics) hold data.
pub const LEGACY_DATA_START: NaiveDate = date(2014, 12, 1);
/// The first day the new 发表内容 endpoints (`getbizsummary`,
/// `getarticletotaldetail`) hold data.
pub const NEW_DATA_START: NaiveDate = date(2025, 11, 1);

/// The hour (China Standard Time) from which yesterday's statistics are final.
pub const DEFAULT_FINAL_HOUR: u32 = 8;

const fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    match NaiveDate::from_ymd_opt(y, m, d) {
        Some(d) => d,
        None => panic!("invalid constant date"),
    }
}

/// The datacube endpoints served, with their maximum span in days and data start.
///
/// `getarticletotaldetail` is asked one publish day at a time, like its
/// documented siblings `getarticleread`/`getarticleshare` ("日期范围仅支持查询1天");
/// `getbizsummary`'s 30 days comes from a third-party SDK (\[I\] in the notes):
/// no documented limit was found, so tests lower it with
/// [`Faults::set_max_span`] to see a client recover from a 61501.
pub const DATACUBE: &[(&str, i64, NaiveDate)] = &[
    ("getusersummary", 7, LEGACY_DATA_START),
    ("getusercumulate", 7, LEGACY_DATA_START),
    ("getbizsummary", 30, NEW_DATA_START),
    ("getarticletotaldetail", 1, NEW_DATA_START),
];

/// The maximum span (days, both ends inclusive) of a datacube endpoint.
pub fn max_span(endpoint: &str) -> Option<i64> {
    DATACUBE
        .iter()
        .find(|(n, _, _)| *n == endpoint)
        .map(|(_, s, _)| *s)
}

// ---------------------------------------------------------------------------
// Deterministic data

/// FNV-1a: stable across platforms and Rust versions, unlike `DefaultHasher`.
fn hash(appid: &str, day: NaiveDate, what: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    h.write(format!("{appid}|{day}|{what}").as_bytes());
    h.finish()
}

/// Articles published on `day` (0 to 3, in one publication).
pub fn posts_on(appid: &str, day: NaiveDate) -> u32 {
    match hash(appid, day, "posts") % 10 {
        0..=3 => 0,
        4..=6 => 1,
        7 | 8 => 2,
        _ => 3,
    }
}

/// Whether `day`'s publication was sent by 群发 (`publish_type` 0) or published
/// without notification (1, the only kind `freepublish/batchget` lists).
pub fn publish_type_on(appid: &str, day: NaiveDate) -> u8 {
    if hash(appid, day, "publish_type").is_multiple_of(4) {
        1
    } else {
        0
    }
}

/// Distinct readers of the account's articles on `day` (`getbizsummary` `read_user`).
pub fn readers_on(appid: &str, day: NaiveDate) -> u32 {
    200 + (hash(appid, day, "readers") % 3000) as u32
}

/// New followers on `day` (Σ `new_user` of `getusersummary`).
pub fn new_followers_on(appid: &str, day: NaiveDate) -> u32 {
    (hash(appid, day, "new") % 40) as u32
}

/// Followers lost on `day` (Σ `cancel_user` of `getusersummary`).
pub fn cancelled_followers_on(appid: &str, day: NaiveDate) -> u32 {
    (hash(appid, day, "cancel") % 12) as u32
}

const FOLLOWERS_EPOCH: NaiveDate = date(2025, 1, 1);
const FOLLOWERS_AT_EPOCH: i64 = 100_000;

/// Followers at the end of `day` (`getusercumulate` `cumulate_user`): consistent
/// with the daily gains, `followers_on(d) - followers_on(d-1) = new - cancelled`.
pub fn followers_on(appid: &str, day: NaiveDate) -> u64 {
    let net = |d: NaiveDate| {
        i64::from(new_followers_on(appid, d)) - i64::from(cancelled_followers_on(appid, d))
    };
    let mut n = FOLLOWERS_AT_EPOCH;
    if day >= FOLLOWERS_EPOCH {
        for d in FOLLOWERS_EPOCH
            .succ_opt()
            .into_iter()
            .flat_map(|s| s.iter_days())
        {
            if d > day {
                break;
            }
            n += net(d);
        }
    } else {
        for d in day.succ_opt().into_iter().flat_map(|s| s.iter_days()) {
            if d > FOLLOWERS_EPOCH {
                break;
            }
            n -= net(d);
        }
    }
    n.max(0) as u64
}

/// A day's figures of `getbizsummary`: each a count of distinct people that
/// day (`comment_count`: comments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Engagement {
    pub read_user: u32,
    pub share_user: u32,
    pub zaikan_user: u32,
    pub like_user: u32,
    pub comment_count: u32,
    pub collection_user: u32,
}

/// The account's `getbizsummary` figures of `day`.
pub fn engagement_on(appid: &str, day: NaiveDate) -> Engagement {
    let r = readers_on(appid, day);
    Engagement {
        read_user: r,
        share_user: r / 13,
        zaikan_user: r / 27,
        like_user: r / 14,
        comment_count: r / 160,
        collection_user: r / 22,
    }
}

/// An article's cumulative figures from its publication on `published` to
/// the end of `stat` (`getarticletotaldetail`'s `detail_list` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArticleTotals {
    pub read_user: u64,
    pub share_user: u64,
    pub zaikan_user: u64,
    pub like_user: u64,
    pub comment_count: u64,
    pub collection_user: u64,
}

/// Readers from which an article is "10万+".
pub const READS_100K: u64 = 100_000;

/// The totals of article `msgid`, published on `published`, as of `stat`
/// (growing for 30 days, then frozen as the platform stops following it).
/// About one article in forty goes viral and passes [`READS_100K`].
pub fn article_totals_on(
    appid: &str,
    published: NaiveDate,
    msgid: &str,
    stat: NaiveDate,
) -> ArticleTotals {
    let h = hash(appid, published, msgid);
    let base = 100 + h % 2000 + if h % 40 == 7 { 40_000 } else { 0 };
    let days = (stat - published).num_days().clamp(-1, 29);
    let read: u64 = (0..=days).map(|i| base / (i as u64 + 1)).sum();
    ArticleTotals {
        read_user: read,
        share_user: read / 19,
        zaikan_user: read / 45,
        like_user: read / 27,
        comment_count: read / 150,
        collection_user: read / 70,
    }
}

/// The `msgid`s of the articles published on `day` (`<msg_data_id>_<index>`).
pub fn msgids_on(appid: &str, day: NaiveDate) -> Vec<String> {
    let msg_data_id = 2_247_400_000 + (day - LEGACY_DATA_START).num_days();
    (1..=posts_on(appid, day))
        .map(|i| format!("{msg_data_id}_{i}"))
        .collect()
}

fn cst() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset")
}

/// Today in China Standard Time, the platform's day boundary.
pub fn today_cst(now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&cst()).date_naive()
}

// ---------------------------------------------------------------------------
// Accounts, faults, counters

/// An official account the simulator knows: its AppID and AppSecret.
#[derive(Debug, Clone)]
pub struct Account {
    pub appid: String,
    pub secret: String,
}

impl Account {
    pub fn new(appid: &str, secret: &str) -> Account {
        Account {
            appid: appid.to_owned(),
            secret: secret.to_owned(),
        }
    }
}

/// Failure switches, flipped from tests while the simulator runs. Every
/// setter takes `&self`.
#[derive(Default)]
pub struct Faults {
    /// The next business call answers 42001 (the tokens issued so far expire).
    expire_tokens: AtomicBool,
    /// The next business call answers 40001 (the tokens issued so far are forgotten).
    forget_tokens: AtomicBool,
    /// Per endpoint: calls allowed before 45009.
    quotas: Mutex<HashMap<String, u64>>,
    /// Off: spans are not checked (to see a plugin that ignores them).
    span_check_off: AtomicBool,
    /// `is_delay: true` on answers covering the latest day (yesterday).
    delay_latest: AtomicBool,
    /// The next N calls answer HTTP 502.
    http_errors: AtomicU32,
    /// The next N calls answer truncated JSON.
    malformed: AtomicU32,
    /// Every answer waits this long first.
    slow_ms: AtomicU64,
    /// Calls from "this IP" are refused with 40164.
    blocked_ip: Mutex<Option<String>>,
    /// Overrides the simulator's clock.
    now: Mutex<Option<DateTime<Utc>>>,
    /// Per endpoint: a maximum span replacing the one of [`DATACUBE`].
    max_spans: Mutex<HashMap<String, i64>>,
    /// Off: yesterday's data are there at any hour.
    final_hour_off: AtomicBool,
    /// One more than the hour (CST) from which yesterday's data are final;
    /// 0 (unset) means [`DEFAULT_FINAL_HOUR`].
    final_hour: AtomicU32,
}

impl Faults {
    /// The tokens issued so far expire: the next business call using one
    /// answers 42001; a token call then issues a new one.
    pub fn expire_tokens(&self) {
        self.expire_tokens.store(true, Ordering::SeqCst);
    }

    /// The tokens issued so far become unknown: the next business call using
    /// one answers 40001 (as after another client forced a refresh).
    pub fn forget_tokens(&self) {
        self.forget_tokens.store(true, Ordering::SeqCst);
    }

    /// After `calls` successful calls of `endpoint` (e.g. `"getbizsummary"`),
    /// it answers 45009 (daily quota used up).
    pub fn set_quota(&self, endpoint: &str, calls: u64) {
        lock(&self.quotas).insert(endpoint.to_owned(), calls);
    }

    /// Lifts every quota set by [`Faults::set_quota`].
    pub fn clear_quotas(&self) {
        lock(&self.quotas).clear();
    }

    /// Whether spans above an endpoint's maximum are refused (the default).
    pub fn set_span_check(&self, on: bool) {
        self.span_check_off.store(!on, Ordering::SeqCst);
    }

    /// Answers covering yesterday (the latest day) say `"is_delay": true`.
    pub fn set_delay_latest(&self, on: bool) {
        self.delay_latest.store(on, Ordering::SeqCst);
    }

    /// The next `n` calls answer HTTP 502 with an HTML page.
    pub fn fail_next(&self, n: u32) {
        self.http_errors.store(n, Ordering::SeqCst);
    }

    /// The next `n` calls answer a truncated JSON body.
    pub fn malformed_next(&self, n: u32) {
        self.malformed.store(n, Ordering::SeqCst);
    }

    /// Every answer is delayed by `ms` milliseconds (0: none).
    pub fn set_slow_ms(&self, ms: u64) {
        self.slow_ms.store(ms, Ordering::SeqCst);
    }

    /// Every call is refused with 40164 naming `ip` (None: whitelisted again).
    pub fn set_blocked_ip(&self, ip: Option<&str>) {
        *lock(&self.blocked_ip) = ip.map(str::to_owned);
    }

    /// Fixes the simulator's clock at noon (CST) of `day`, when yesterday's
    /// data are final; by default it is the real time.
    pub fn set_today(&self, day: NaiveDate) {
        let noon = cst()
            .from_local_datetime(&day.and_hms_opt(12, 0, 0).unwrap_or_default())
            .single()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        self.set_now(noon);
    }

    /// Fixes the simulator's clock; by default it is the real time.
    pub fn set_now(&self, now: DateTime<Utc>) {
        *lock(&self.now) = Some(now);
    }

    /// The largest span (days, both ends inclusive) `endpoint` accepts before
    /// it answers 61501, instead of the one in [`DATACUBE`].
    pub fn set_max_span(&self, endpoint: &str, days: i64) {
        lock(&self.max_spans).insert(endpoint.to_owned(), days);
    }

    /// From which hour (China Standard Time) yesterday's statistics are final:
    /// `Some(8)` is the platform's rule and the default; `None` makes them
    /// final at midnight. Before it, no endpoint has rows for yesterday and the
    /// new ones answer `"is_delay": true`.
    pub fn set_final_hour(&self, hour: Option<u32>) {
        match hour {
            Some(h) => {
                self.final_hour.store(h.min(23) + 1, Ordering::SeqCst);
                self.final_hour_off.store(false, Ordering::SeqCst);
            }
            None => self.final_hour_off.store(true, Ordering::SeqCst),
        }
    }

    /// The hour from which yesterday is final, or None when it is at once.
    fn final_hour(&self) -> Option<u32> {
        if self.final_hour_off.load(Ordering::SeqCst) {
            return None;
        }
        match self.final_hour.load(Ordering::SeqCst) {
            0 => Some(DEFAULT_FINAL_HOUR),
            h => Some(h - 1),
        }
    }

    fn take(flag: &AtomicU32) -> bool {
        flag.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide the next assertion behind a poison error.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Token {
    appid: String,
    stable: bool,
    expired: bool,
}

#[derive(Default)]
struct Stats {
    calls: HashMap<String, u64>,
    max_span: HashMap<String, i64>,
}

struct Shared {
    accounts: Vec<Account>,
    faults: Faults,
    tokens: Mutex<HashMap<String, Token>>,
    next_token: AtomicU64,
    stats: Mutex<Stats>,
}

impl Shared {
    fn now(&self) -> DateTime<Utc> {
        if let Some(t) = *lock(&self.faults.now) {
            return t;
        }
        // The simulator stands in for the platform, which has its own clock.
        #[allow(clippy::disallowed_methods)]
        Utc::now()
    }

    fn today(&self) -> NaiveDate {
        today_cst(self.now())
    }

    /// Whether yesterday's statistics are still being computed.
    fn yesterday_pending(&self) -> bool {
        let hour = self.now().with_timezone(&cst()).hour();
        self.faults.final_hour().is_some_and(|h| hour < h)
    }

    fn max_span(&self, endpoint: &str) -> Option<i64> {
        lock(&self.faults.max_spans)
            .get(endpoint)
            .copied()
            .or_else(|| max_span(endpoint))
    }
}

// ---------------------------------------------------------------------------
// The server

/// A running simulator. Dropping it stops the server.
pub struct WechatSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl WechatSim {
    /// Starts the simulator on 127.0.0.1 (a free port) on the current tokio runtime.
    pub async fn start(accounts: Vec<Account>) -> WechatSim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let (shared, stop, serve) = Self::prepare(accounts, listener);
        let addr = shared.1;
        tokio::spawn(serve);
        WechatSim {
            addr,
            shared: shared.0,
            stop: Some(stop),
        }
    }

    /// Starts the simulator on its own thread and runtime, for synchronous
    /// tests (plugin tests, the daemon's integration tests).
    pub fn start_blocking(accounts: Vec<Account>) -> WechatSim {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind 127.0.0.1:0");
                let (shared, stop, serve) = Self::prepare(accounts, listener);
                let _ = tx.send((shared, stop));
                serve.await;
            });
        });
        let ((shared, addr), stop) = rx.recv().expect("simulator thread started");
        WechatSim {
            addr,
            shared,
            stop: Some(stop),
        }
    }

    #[allow(clippy::type_complexity)]
    fn prepare(
        accounts: Vec<Account>,
        listener: tokio::net::TcpListener,
    ) -> (
        (Arc<Shared>, SocketAddr),
        oneshot::Sender<()>,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            accounts,
            faults: Faults::default(),
            tokens: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            stats: Mutex::new(Stats::default()),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(shared.clone());
        let serve = async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        };
        ((shared, addr), stop, serve)
    }

    /// `http://127.0.0.1:PORT`, to use as the plugin's `api_base`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The failure switches.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Calls received by an endpoint, named by its last path segment
    /// (`"stable_token"`, `"token"`, `"getbizsummary"`, `"batchget"`, ...).
    pub fn calls(&self, endpoint: &str) -> u64 {
        lock(&self.shared.stats)
            .calls
            .get(endpoint)
            .copied()
            .unwrap_or(0)
    }

    /// Calls received by all endpoints.
    pub fn total_calls(&self) -> u64 {
        lock(&self.shared.stats).calls.values().sum()
    }

    /// The longest span (days, both ends inclusive) asked of a datacube endpoint.
    pub fn max_span_seen(&self, endpoint: &str) -> i64 {
        lock(&self.shared.stats)
            .max_span
            .get(endpoint)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for WechatSim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/cgi-bin/token", get(classic_token))
        .route("/cgi-bin/stable_token", post(stable_token))
        .route("/cgi-bin/freepublish/batchget", post(batchget))
        .route("/datacube/{name}", post(datacube))
        .with_state(shared)
}

fn rid() -> String {
    "6131e82a-745e9ad5-0f2d17ff".to_owned()
}

fn err(code: i64, msg: &str) -> Value {
    json!({"errcode": code, "errmsg": msg})
}

/// Applies the transport faults (slow, 502, truncated) to an answer.
async fn deliver(shared: &Shared, body: Value) -> Response {
    let slow = shared.faults.slow_ms.load(Ordering::SeqCst);
    if slow > 0 {
        tokio::time::sleep(Duration::from_millis(slow)).await;
    }
    if Faults::take(&shared.faults.http_errors) {
        return (
            StatusCode::BAD_GATEWAY,
            [("content-type", "text/html")],
            "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>",
        )
            .into_response();
    }
    let text = body.to_string();
    if Faults::take(&shared.faults.malformed) {
        let mut cut = text.len() / 2;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        return (
            [("content-type", "application/json")],
            text[..cut].to_owned(),
        )
            .into_response();
    }
    ([("content-type", "application/json; charset=UTF-8")], text).into_response()
}

fn count(shared: &Shared, endpoint: &str) -> u64 {
    let mut stats = lock(&shared.stats);
    let n = stats.calls.entry(endpoint.to_owned()).or_insert(0);
    *n += 1;
    *n
}

fn blocked(shared: &Shared) -> Option<Value> {
    lock(&shared.faults.blocked_ip).as_ref().map(|ip| {
        err(
            40164,
            &format!(
                "invalid ip {ip} ipv6 ::ffff:{ip}, not in whitelist rid: {}",
                rid()
            ),
        )
    })
}

fn issue_token(shared: &Shared, appid: &str, stable: bool, force: bool) -> Value {
    let mut tokens = lock(&shared.tokens);
    if stable && !force {
        // Normal mode: the same token while it is valid.
        if let Some((t, _)) = tokens
            .iter()
            .find(|(_, t)| t.stable && !t.expired && t.appid == appid)
        {
            return json!({"access_token": t, "expires_in": 7200});
        }
    }
    // A new token invalidates the previous ones of its kind.
    tokens.retain(|_, t| t.appid != appid || t.stable != stable);
    let n = shared.next_token.fetch_add(1, Ordering::SeqCst);
    let token = format!(
        "91_{}{n:04}SIMxZ{}",
        if stable { "Stab1e" } else { "Cla55ic" },
        appid.len()
    );
    tokens.insert(
        token.clone(),
        Token {
            appid: appid.to_owned(),
            stable,
            expired: false,
        },
    );
    json!({"access_token": token, "expires_in": 7200})
}

fn credentials(shared: &Shared, appid: &str, secret: &str) -> Result<(), Value> {
    match shared.accounts.iter().find(|a| a.appid == appid) {
        None => Err(err(40013, &format!("invalid appid rid: {}", rid()))),
        Some(a) if a.secret != secret => Err(err(
            40125,
            &format!(
                "invalid appsecret, view more at http://t.cn/RAEkdVq rid: {}",
                rid()
            ),
        )),
        Some(_) => Ok(()),
    }
}

async fn classic_token(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    count(&shared, "token");
    let body = if let Some(e) = blocked(&shared) {
        e
    } else if q.get("grant_type").map(String::as_str) != Some("client_credential") {
        err(40002, "invalid grant_type")
    } else {
        let appid = q.get("appid").cloned().unwrap_or_default();
        let secret = q.get("secret").cloned().unwrap_or_default();
        match credentials(&shared, &appid, &secret) {
            Err(e) => e,
            Ok(()) => issue_token(&shared, &appid, false, true),
        }
    };
    deliver(&shared, body).await
}

async fn stable_token(State(shared): State<Arc<Shared>>, body: String) -> Response {
    count(&shared, "stable_token");
    let answer = (|| {
        if let Some(e) = blocked(&shared) {
            return e;
        }
        let Ok(req) = serde_json::from_str::<Value>(&body) else {
            return err(47001, "data format error");
        };
        if req["grant_type"] != "client_credential" {
            return err(40002, "invalid grant_type");
        }
        let appid = req["appid"].as_str().unwrap_or_default();
        let secret = req["secret"].as_str().unwrap_or_default();
        if let Err(e) = credentials(&shared, appid, secret) {
            return e;
        }
        let force = req["force_refresh"].as_bool().unwrap_or(false);
        issue_token(&shared, appid, true, force)
    })();
    deliver(&shared, answer).await
}

/// Checks `access_token` and the token faults; the account's appid on success.
fn authorize(shared: &Shared, q: &HashMap<String, String>) -> Result<String, Value> {
    if let Some(e) = blocked(shared) {
        return Err(e);
    }
    let Some(token) = q.get("access_token").filter(|t| !t.is_empty()) else {
        return Err(err(41001, &format!("access_token missing rid: {}", rid())));
    };
    let mut tokens = lock(&shared.tokens);
    if shared.faults.expire_tokens.swap(false, Ordering::SeqCst) {
        tokens.values_mut().for_each(|t| t.expired = true);
    }
    if shared.faults.forget_tokens.swap(false, Ordering::SeqCst) {
        tokens.clear();
    }
    match tokens.get(token) {
        None => Err(err(
            40001,
            &format!(
                "invalid credential, access_token is invalid or not latest rid: {}",
                rid()
            ),
        )),
        Some(t) if t.expired => Err(err(42001, "access_token expired hint: [AnOVOA0460vr31!]")),
        Some(t) => Ok(t.appid.clone()),
    }
}

/// Counts the call against the endpoint's quota; 45009 once it is used up.
fn quota(shared: &Shared, endpoint: &str, n: u64) -> Result<(), Value> {
    match lock(&shared.faults.quotas).get(endpoint) {
        Some(limit) if n > *limit => Err(err(
            45009,
            &format!("reach max api daily quota limit rid: {}", rid()),
        )),
        _ => Ok(()),
    }
}

fn parse_day(v: &Value) -> Option<NaiveDate> {
    let s = v.as_str()?;
    // Only the documented YYYY-MM-DD: `20180611` is a 61500.
    if s.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

async fn datacube(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let n = count(&shared, &name);
    let answer = datacube_answer(&shared, &name, n, &q, &body);
    deliver(&shared, answer.unwrap_or_else(|e| e)).await
}

fn datacube_answer(
    shared: &Shared,
    name: &str,
    n: u64,
    q: &HashMap<String, String>,
    body: &str,
) -> Result<Value, Value> {
    let appid = authorize(shared, q)?;
    let Some(&(_, _, start)) = DATACUBE.iter().find(|(e, _, _)| *e == name) else {
        return Err(err(47009, "this api is offline, please use the new api"));
    };
    let max = shared.max_span(name).unwrap_or(1);
    quota(shared, name, n)?;
    let req: Value = serde_json::from_str(body).map_err(|_| err(47001, "data format error"))?;
    let date_error = || err(61500, "date format error hint: [FKxBtA05101556]");
    let begin = parse_day(&req["begin_date"]).ok_or_else(date_error)?;
    let end = parse_day(&req["end_date"]).ok_or_else(date_error)?;
    let range_error = || err(61501, &format!("date range error rid: {}", rid()));
    let span = (end - begin).num_days() + 1;
    {
        let mut stats = lock(&shared.stats);
        let seen = stats.max_span.entry(name.to_owned()).or_insert(0);
        *seen = (*seen).max(span);
    }
    let today = shared.today();
    if end >= today || begin > end || begin < start {
        return Err(range_error());
    }
    if span > max && !shared.faults.span_check_off.load(Ordering::SeqCst) {
        return Err(range_error());
    }
    let yesterday = today.pred_opt().unwrap_or(today);
    // Before the final hour yesterday is still being computed: no rows yet.
    let pending = shared.yesterday_pending() && end >= yesterday;
    let last_ready = if pending {
        yesterday.pred_opt().unwrap_or(yesterday)
    } else {
        yesterday
    };
    let days = begin.iter_days().take_while(|d| *d <= end.min(last_ready));
    let mut list = Vec::new();
    match name {
        "getusersummary" => {
            for d in days {
                list.extend(user_summary_rows(&appid, d));
            }
        }
        "getusercumulate" => {
            for d in days {
                list.push(json!({
                    "ref_date": d.to_string(),
                    "user_source": 0,
                    "cumulate_user": followers_on(&appid, d),
                }));
            }
        }
        "getbizsummary" => {
            for d in days {
                let e = engagement_on(&appid, d);
                let r = e.read_user;
                let msg = r * 58 / 100;
                list.push(json!({
                    "ref_date": d.to_string(),
                    "detail": {
                        "read_user": r,
                        "read_user_source": [
                            {"user_count": r, "scene_desc": "全部"},
                            {"user_count": msg, "scene_desc": "公众号消息"},
                        ],
                        "share_user": e.share_user,
                        "zaikan_user": e.zaikan_user,
                        "like_user": e.like_user,
                        "comment_count": e.comment_count,
                        "collection_user": e.collection_user,
                        "redirect_ori_page_user": r / 400,
                        "send_page_count": posts_on(&appid, d),
                    }
                }));
            }
        }
        _ => {
            // getarticletotaldetail: the articles published in [begin, end],
            // each with its cumulative curve up to yesterday, at most 30 days.
            for d in days {
                for msgid in msgids_on(&appid, d) {
                    list.push(article_detail(&appid, d, &msgid, last_ready));
                }
            }
        }
    }
    let mut answer = json!({ "list": list });
    if name == "getbizsummary" || name == "getarticletotaldetail" {
        let delay =
            pending || (shared.faults.delay_latest.load(Ordering::SeqCst) && end >= yesterday);
        answer["is_delay"] = json!(delay);
    }
    Ok(answer)
}

/// `getusersummary` rows of a day: one per `user_source` with activity, none
/// on a day without any.
fn user_summary_rows(appid: &str, d: NaiveDate) -> Vec<Value> {
    let new = new_followers_on(appid, d);
    let cancel = cancelled_followers_on(appid, d);
    if new == 0 && cancel == 0 {
        return Vec::new();
    }
    // Split the new followers over three sources; cancellations are reported
    // under source 0, as real answers do.
    let search = new / 3;
    let qr = new / 4;
    let mut rows = vec![json!({"ref_date": d.to_string(), "user_source": 0,
                               "new_user": new - search - qr, "cancel_user": cancel})];
    if search > 0 {
        rows.push(json!({"ref_date": d.to_string(), "user_source": 1,
                         "new_user": search, "cancel_user": 0}));
    }
    if qr > 0 {
        rows.push(json!({"ref_date": d.to_string(), "user_source": 30,
                         "new_user": qr, "cancel_user": 0}));
    }
    rows
}

fn article_detail(appid: &str, d: NaiveDate, msgid: &str, yesterday: NaiveDate) -> Value {
    let last = (d + chrono::Days::new(29)).min(yesterday);
    let mut details = Vec::new();
    for stat in d.iter_days().take_while(|s| *s <= last) {
        let t = article_totals_on(appid, d, msgid, stat);
        let read = t.read_user;
        details.push(json!({
            "stat_date": stat.to_string(),
            "read_user": read,
            "read_user_source": [{"user_count": read, "scene_desc": "全部"}],
            "share_user": t.share_user, "zaikan_user": t.zaikan_user, "like_user": t.like_user,
            "comment_count": t.comment_count, "collection_user": t.collection_user, "praise_money": 0,
            "read_subscribe_user": read / 260, "read_delivery_rate": 0.0971,
            "read_finish_rate": 0.6304, "read_avg_activetime": 1.0588,
            "read_jump_position": [],
        }));
    }
    let (mid, idx) = msgid.split_once('_').unwrap_or((msgid, "1"));
    json!({
        "ref_date": d.to_string(),
        "msgid": msgid,
        "publish_type": publish_type_on(appid, d),
        "title": format!("{}月{}日工作动态（{}）", d.month(), d.day(), idx),
        "content_url": format!("https://mp.weixin.qq.com/s?__biz=MzA4NjEyMzQ1Ng==&mid={mid}&idx={idx}&sn=3f9c2e"),
        "detail_list": details,
    })
}

/// `freepublish/batchget`: publications made *without* 群发 notification
/// (`publish_type` 1), newest first; `count` must be 1..20.
async fn batchget(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let n = count(&shared, "batchget");
    let answer = (|| {
        let appid = authorize(&shared, &q)?;
        quota(&shared, "batchget", n)?;
        let req: Value =
            serde_json::from_str(&body).map_err(|_| err(47001, "data format error"))?;
        let offset = req["offset"].as_u64().unwrap_or(0) as usize;
        let count = req["count"].as_u64().unwrap_or(0);
        if !(1..=20).contains(&count) {
            return Err(err(40097, "invalid args"));
        }
        let today = shared.today();
        let mut all = Vec::new();
        let mut d = today.pred_opt().unwrap_or(today);
        while d >= LEGACY_DATA_START {
            if posts_on(&appid, d) > 0 && publish_type_on(&appid, d) == 1 {
                all.push(d);
            }
            d = match d.pred_opt() {
                Some(p) => p,
                None => break,
            };
        }
        let items: Vec<Value> = all
            .iter()
            .skip(offset)
            .take(count as usize)
            .map(|d| {
                let noon = cst()
                    .from_local_datetime(&d.and_hms_opt(12, 0, 0).unwrap_or_default())
                    .single()
                    .map(|t| t.timestamp())
                    .unwrap_or_default();
                let news: Vec<Value> = msgids_on(&appid, *d)
                    .iter()
                    .map(|m| {
                        json!({
                            "title": format!("{}月{}日工作动态", d.month(), d.day()),
                            "author": "", "digest": "", "content_source_url": "",
                            "thumb_media_id": format!("thumb-{m}"), "show_cover_pic": 0,
                            "need_open_comment": 0, "only_fans_can_comment": 0,
                            "url": format!("https://mp.weixin.qq.com/s/{m}"),
                            "is_deleted": false,
                        })
                    })
                    .collect();
                json!({"article_id": format!("art-{appid}-{d}"), "update_time": noon,
                       "content": {"news_item": news}})
            })
            .collect();
        Ok(json!({"total_count": all.len(), "item_count": items.len(), "item": items}))
    })();
    deliver(&shared, answer.unwrap_or_else(|e: Value| e)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(m: u32, d: u32) -> NaiveDate {
        date(2026, m, d)
    }

    fn shared() -> (Shared, HashMap<String, String>) {
        let shared = Shared {
            accounts: vec![Account::new("wx1", "s1")],
            faults: Faults::default(),
            tokens: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            stats: Mutex::new(Stats::default()),
        };
        shared.faults.set_today(day(11, 27));
        let token = issue_token(&shared, "wx1", true, false)["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        (shared, HashMap::from([("access_token".to_owned(), token)]))
    }

    fn ask(shared: &Shared, q: &HashMap<String, String>, name: &str, b: &str, e: &str) -> Value {
        let body = json!({"begin_date": b, "end_date": e}).to_string();
        datacube_answer(shared, name, 1, q, &body).unwrap_or_else(|e| e)
    }

    #[test]
    fn datacube_enforces_the_platform_rules() {
        let (s, q) = shared();
        let ok = ask(&s, &q, "getusersummary", "2026-11-20", "2026-11-26");
        assert!(ok.get("errcode").is_none(), "{ok}");
        assert!(ok.get("is_delay").is_none(), "{ok}");
        let code = |v: Value| v["errcode"].as_i64();
        // 8 days, today, before the data start, a bad date format.
        assert_eq!(
            code(ask(&s, &q, "getusersummary", "2026-11-19", "2026-11-26")),
            Some(61501)
        );
        assert_eq!(
            code(ask(&s, &q, "getusersummary", "2026-11-27", "2026-11-27")),
            Some(61501)
        );
        assert_eq!(
            code(ask(&s, &q, "getbizsummary", "2025-10-31", "2025-10-31")),
            Some(61501)
        );
        assert_eq!(
            code(ask(&s, &q, "getbizsummary", "20261101", "2026-11-01")),
            Some(61500)
        );
        assert_eq!(
            code(ask(&s, &q, "getarticlesummary", "2026-11-01", "2026-11-01")),
            Some(47009)
        );
        assert_eq!(s.stats.lock().unwrap().max_span["getusersummary"], 8);
        s.faults.set_span_check(false);
        let ok = ask(&s, &q, "getusersummary", "2026-11-19", "2026-11-26");
        assert!(ok.get("errcode").is_none(), "{ok}");
        let ok = ask(&s, &q, "getbizsummary", "2026-11-26", "2026-11-26");
        assert_eq!(ok["is_delay"], false);
        s.faults.set_delay_latest(true);
        let delayed = ask(&s, &q, "getbizsummary", "2026-11-26", "2026-11-26");
        assert_eq!(delayed["is_delay"], true);
        assert_eq!(
            delayed["list"][0]["detail"]["read_user"],
            readers_on("wx1", day(11, 26))
        );
    }

    fn cst_time(d: NaiveDate, h: u32, m: u32) -> DateTime<Utc> {
        cst()
            .from_local_datetime(&d.and_hms_opt(h, m, 0).unwrap())
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn yesterday_is_there_only_from_eight_o_clock() {
        let (s, q) = shared();
        // On by default: at 07:59 the day before is still being computed.
        s.faults.set_now(cst_time(day(11, 27), 7, 59));
        for name in ["getusersummary", "getusercumulate"] {
            let a = ask(&s, &q, name, "2026-11-25", "2026-11-26");
            let days: Vec<&str> = a["list"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["ref_date"].as_str().unwrap())
                .collect();
            assert!(days.contains(&"2026-11-25"), "{name}: {a}");
            assert!(!days.contains(&"2026-11-26"), "{name}: {a}");
            assert!(a.get("is_delay").is_none(), "{name}: {a}");
        }
        let a = ask(&s, &q, "getbizsummary", "2026-11-26", "2026-11-26");
        assert_eq!(a, json!({"list": [], "is_delay": true}));
        // Days before yesterday are final and not delayed.
        let a = ask(&s, &q, "getbizsummary", "2026-11-24", "2026-11-25");
        assert_eq!(a["is_delay"], false);
        assert_eq!(a["list"].as_array().unwrap().len(), 2);

        s.faults.set_now(cst_time(day(11, 27), 8, 0));
        let a = ask(&s, &q, "getbizsummary", "2026-11-26", "2026-11-26");
        assert_eq!(a["is_delay"], false);
        assert_eq!(
            a["list"][0]["detail"]["read_user"],
            readers_on("wx1", day(11, 26))
        );

        // Switched off: final at midnight.
        s.faults.set_now(cst_time(day(11, 27), 2, 30));
        s.faults.set_final_hour(None);
        let a = ask(&s, &q, "getbizsummary", "2026-11-26", "2026-11-26");
        assert_eq!(a["is_delay"], false);
        assert_eq!(a["list"].as_array().unwrap().len(), 1);
        // Another hour.
        s.faults.set_final_hour(Some(3));
        let a = ask(&s, &q, "getbizsummary", "2026-11-26", "2026-11-26");
        assert_eq!(a["is_delay"], true);
    }

    #[test]
    fn a_lowered_span_is_refused_beyond_it() {
        let (s, q) = shared();
        let code = |v: Value| v["errcode"].as_i64();
        // 30 days pass by default.
        let a = ask(&s, &q, "getbizsummary", "2026-10-27", "2026-11-25");
        assert_eq!(a["list"].as_array().unwrap().len(), 30, "{a}");
        s.faults.set_max_span("getbizsummary", 4);
        assert_eq!(
            code(ask(&s, &q, "getbizsummary", "2026-10-27", "2026-11-25")),
            Some(61501)
        );
        assert_eq!(
            code(ask(&s, &q, "getbizsummary", "2026-11-01", "2026-11-05")),
            Some(61501)
        );
        let a = ask(&s, &q, "getbizsummary", "2026-11-01", "2026-11-04");
        assert_eq!(a["list"].as_array().unwrap().len(), 4, "{a}");
        // Other endpoints keep theirs.
        let a = ask(&s, &q, "getusersummary", "2026-11-01", "2026-11-07");
        assert!(a.get("errcode").is_none(), "{a}");
    }

    #[test]
    fn tokens_are_checked() {
        let (s, q) = shared();
        let none = HashMap::new();
        let code = |v: Value| v["errcode"].as_i64();
        assert_eq!(
            code(ask(&s, &none, "getusersummary", "2026-11-20", "2026-11-20")),
            Some(41001)
        );
        s.faults.expire_tokens();
        assert_eq!(
            code(ask(&s, &q, "getusersummary", "2026-11-20", "2026-11-20")),
            Some(42001)
        );
        // Normal mode hands out a new token once the old one expired.
        let again = issue_token(&s, "wx1", true, false);
        assert_ne!(
            again["access_token"].as_str(),
            q.get("access_token").map(String::as_str)
        );
        s.faults.forget_tokens();
        let q2 = HashMap::from([(
            "access_token".to_owned(),
            again["access_token"].as_str().unwrap().to_owned(),
        )]);
        assert_eq!(
            code(ask(&s, &q2, "getusersummary", "2026-11-20", "2026-11-20")),
            Some(40001)
        );
        s.faults.set_quota("getusersummary", 0);
        let q3 = HashMap::from([(
            "access_token".to_owned(),
            issue_token(&s, "wx1", true, false)["access_token"]
                .as_str()
                .unwrap()
                .to_owned(),
        )]);
        assert_eq!(
            code(ask(&s, &q3, "getusersummary", "2026-11-20", "2026-11-20")),
            Some(45009)
        );
        assert_eq!(credentials(&s, "wx2", "s1").unwrap_err()["errcode"], 40013);
        assert_eq!(credentials(&s, "wx1", "s2").unwrap_err()["errcode"], 40125);
    }

    #[test]
    fn followers_follow_the_daily_gains() {
        for d in [day(1, 1), day(6, 30), date(2024, 3, 1)] {
            let prev = d.pred_opt().unwrap();
            let net =
                i64::from(new_followers_on("wx1", d)) - i64::from(cancelled_followers_on("wx1", d));
            assert_eq!(
                followers_on("wx1", d) as i64 - followers_on("wx1", prev) as i64,
                net,
                "{d}"
            );
        }
    }

    #[test]
    fn data_differs_between_accounts_and_days() {
        let a: Vec<u32> = day(1, 1)
            .iter_days()
            .take(30)
            .map(|d| readers_on("wxa", d))
            .collect();
        let b: Vec<u32> = day(1, 1)
            .iter_days()
            .take(30)
            .map(|d| readers_on("wxb", d))
            .collect();
        assert_ne!(a, b);
        assert!(a.iter().any(|r| *r != a[0]));
        let posts: u32 = day(1, 1)
            .iter_days()
            .take(90)
            .map(|d| posts_on("wxa", d))
            .sum();
        assert!(posts > 30 && posts < 200, "{posts}");
    }
}
