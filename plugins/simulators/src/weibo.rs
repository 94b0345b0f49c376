//! A faithful local Weibo open API (`https://api.weibo.com/2/`), for the
//! `weibo` plugin's tests, the daemon's integration tests and `tally-demo`.
//!
//! What it answers, as the real service's documentation and its public clients
//! describe it (marks: \[V\] verified there, \[I\] inferred):
//!
//! - `GET /2/users/show.json?uid=&access_token=`: the profile with
//!   `followers_count` and `statuses_count` \[V\]. For accounts where
//!   [`counts_as_strings`] is true the counts arrive as JSON strings, as
//!   `2/users/counts.json` documents them \[V\]; a parser must take both.
//! - `GET /2/statuses/user_timeline.json?uid=&access_token=&count=&page=&since_id=&max_id=`:
//!   the authorizing account's own posts, newest first \[V\], and only the
//!   newest [`TIMELINE_LIMIT`] (5) of them: the API's notes say "此接口最多只返回最新的5条数据",
//!   so `page`, `count` and `max_id` select within those five and never
//!   reach older posts (switch: [`Faults::set_five_posts`], on by default;
//!   off serves the whole history, as the commercial API does). `count`
//!   defaults to 20 and is capped at [`MAX_COUNT`] (100) \[V\]; `max_id` is
//!   inclusive \[V\]; the envelope carries `total_number` \[I\]. Another uid
//!   than the token's gets no statuses: the API only returns posts of users
//!   who authorized the app \[V\]. Each status has `reposts_count`,
//!   `comments_count` and `attitudes_count` (转评赞, growing for two days
//!   after publication, see [`engagement`]) and, for a repost,
//!   `retweeted_status` \[V\].
//! - `POST /oauth2/get_token_info` with `access_token` (form or query): the
//!   token's `uid`, `appkey`, `scope`, `create_at` and `expire_in` (seconds
//!   left) \[V\]. A token expires [`Account::token_lifetime`] after it was
//!   issued (about five years by default, as for a reviewed app; a day for an
//!   unreviewed one); from then on every endpoint answers 21327
//!   `expired_token`.
//! - Errors as `{"error": "...", "error_code": 21327, "request": "/2/..."}` \[V\]
//!   with HTTP 400 or 403 \[I\]; `error_code` is a string for the accounts whose
//!   counts are strings (the documented examples use strings \[V\]), a number
//!   otherwise.
//!
//! Data is deterministic: [`posts_on`] and [`post_times`] say how many posts an
//! account published on a day (China Standard Time) and when, some of them
//! close to midnight so that tests can check the day a post belongs to;
//! [`day_posts`] gives the posts themselves (id, time, repost or not);
//! [`followers_on`] is a level that grows. History starts at [`HISTORY_FROM`].
//! Posts later than the simulator's clock ([`WeiboSim::set_now`]) are not
//! published yet, so `statuses_count` grows as the clock moves; a post
//! removed with [`WeiboSim::delete_post`] leaves the timeline and the count.
//!
//! Failures are switched on through [`Faults`], shared with the running server.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Duration as Days, FixedOffset, NaiveDate, NaiveTime, TimeZone, Utc};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// The first day with posts; earlier days have none.
pub const HISTORY_FROM: NaiveDate = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();

/// The largest `count` the timeline accepts \[V\]; larger values are capped.
pub const MAX_COUNT: usize = 100;

/// The timeline's `count` when none is given \[V\].
pub const DEFAULT_COUNT: usize = 20;

/// How many of the newest posts the timeline serves at most \[V\].
pub const TIMELINE_LIMIT: usize = 5;

/// The lifetime of a token by default: the `expires_in` of the notes' example
/// token exchange, about five years.
pub const DEFAULT_TOKEN_LIFETIME: i64 = 157_679_999;

/// The app key every simulated token belongs to.
pub const APPKEY: u64 = 1_352_222_456;

const USERS_SHOW: &str = "/2/users/show.json";
const USER_TIMELINE: &str = "/2/statuses/user_timeline.json";
const TOKEN_INFO: &str = "/oauth2/get_token_info";

/// China Standard Time, the offset of every `created_at` the real API writes.
fn cst() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset")
}

/// An account that authorized the app: its uid and the token it was given.
#[derive(Debug, Clone)]
pub struct Account {
    pub uid: u64,
    pub access_token: String,
    pub screen_name: String,
    /// When the token was issued (`create_at`).
    pub issued_at: DateTime<Utc>,
    /// Seconds from `issued_at` until the token expires.
    pub lifetime: i64,
}

impl Account {
    /// An account whose token was issued at [`HISTORY_FROM`] and lives
    /// [`DEFAULT_TOKEN_LIFETIME`] seconds.
    pub fn new(uid: u64, access_token: &str) -> Account {
        let issued_at = cst()
            .from_local_datetime(&HISTORY_FROM.and_time(NaiveTime::MIN))
            .single()
            .expect("a fixed offset has no gaps")
            .with_timezone(&Utc);
        Account {
            uid,
            access_token: access_token.to_owned(),
            screen_name: format!("政务微博{uid}"),
            issued_at,
            lifetime: DEFAULT_TOKEN_LIFETIME,
        }
    }

    /// The token was issued at `issued_at` and expires `seconds` later (an
    /// unreviewed app's token lives about a day).
    pub fn token_lifetime(mut self, issued_at: DateTime<Utc>, seconds: i64) -> Account {
        self.issued_at = issued_at;
        self.lifetime = seconds;
        self
    }

    /// When the token stops working.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.issued_at + Days::seconds(self.lifetime)
    }

    pub fn screen_name(mut self, name: &str) -> Account {
        self.screen_name = name.to_owned();
        self
    }
}

/// A 64-bit mix: the first draw of the seeded PRNG, so that the data looks
/// irregular but is the same on every run and machine.
fn mix(x: u64) -> u64 {
    fastrand::Rng::with_seed(x).u64(..)
}

fn day_hash(uid: u64, day: NaiveDate) -> u64 {
    let d = day.signed_duration_since(HISTORY_FROM).num_days() as u64;
    mix(mix(uid) ^ d.wrapping_mul(0x100_0000_01B3))
}

/// How many posts account `uid` published on `day` (a day in China Standard
/// Time): 0 to 5, about two a day, none before [`HISTORY_FROM`].
pub fn posts_on(uid: u64, day: NaiveDate) -> u32 {
    if day < HISTORY_FROM {
        return 0;
    }
    match day_hash(uid, day) % 10 {
        0 | 1 => 0,
        2..=4 => 1,
        5 | 6 => 2,
        7 | 8 => 3,
        _ => 5,
    }
}

/// The times of day (China Standard Time) of the posts of `uid` on `day`,
/// ascending; as many as [`posts_on`]. On about a quarter of the days with
/// posts the last one is after 23:30, and on about a quarter of the days with
/// two or more the first one is before 00:30.
pub fn post_times(uid: u64, day: NaiveDate) -> Vec<NaiveTime> {
    let n = posts_on(uid, day);
    let h = day_hash(uid, day);
    let mut secs: Vec<u32> = (0..n)
        .map(|i| {
            let r = mix(h ^ u64::from(i + 1));
            // Office hours, 08:00 to 21:59.
            8 * 3600 + (r % (14 * 3600)) as u32
        })
        .collect();
    secs.sort_unstable();
    if n >= 1 && (h >> 16).is_multiple_of(4) {
        let last = secs.len() - 1;
        secs[last] = 23 * 3600 + 30 * 60 + ((h >> 20) % 1790) as u32;
    }
    if n >= 2 && (h >> 24).is_multiple_of(4) {
        secs[0] = ((h >> 28) % 1790) as u32 + 5;
    }
    secs.sort_unstable();
    // Distinct seconds keep post ids distinct.
    for i in 1..secs.len() {
        if secs[i] <= secs[i - 1] {
            secs[i] = secs[i - 1] + 1;
        }
    }
    secs.iter()
        .map(|s| NaiveTime::from_num_seconds_from_midnight_opt(*s, 0).expect("a time of day"))
        .collect()
}

/// The follower count of `uid` at the end of `day`: it grows by a few a day.
pub fn followers_on(uid: u64, day: NaiveDate) -> u64 {
    let days = day.signed_duration_since(HISTORY_FROM).num_days().max(0) as u64;
    10_000 + (uid % 97) * 1_000 + days * (3 + uid % 5) + day_hash(uid, day) % 3
}

/// Whether the counts of `uid` (and its error codes) arrive as JSON strings:
/// for odd uids.
pub fn counts_as_strings(uid: u64) -> bool {
    uid % 2 == 1
}

/// One post of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Post {
    pub id: u64,
    pub at: DateTime<FixedOffset>,
    /// A repost (转发) of another account's post: it carries `retweeted_status`.
    pub repost: bool,
}

/// The posts of `uid` on `day` (China Standard Time), oldest first, whether
/// published yet or not. About a quarter of them are reposts.
pub fn day_posts(uid: u64, day: NaiveDate) -> Vec<Post> {
    let h = day_hash(uid, day);
    post_times(uid, day)
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let at = cst()
                .from_local_datetime(&day.and_time(*t))
                .single()
                .expect("a fixed offset has no gaps");
            // Real ids grow with time and have 16 digits; these fit in an f64 exactly.
            let id = at.timestamp() as u64 * 1_000_000 + (uid % 1000) * 1000 + i as u64;
            let repost = mix(h ^ (0x5EED + i as u64)).is_multiple_of(4);
            Post { id, at, repost }
        })
        .collect()
}

/// How many posts of `uid` on `day` are original (not reposts).
pub fn originals_on(uid: u64, day: NaiveDate) -> u32 {
    day_posts(uid, day).iter().filter(|p| !p.repost).count() as u32
}

/// 转评赞 of a post as of `now`: (`reposts_count`, `comments_count`,
/// `attitudes_count`). Each grows linearly over the two days after
/// publication to a level fixed by the post id, then stays.
pub fn engagement(post: &Post, now: DateTime<Utc>) -> (u64, u64, u64) {
    let age = now
        .signed_duration_since(post.at)
        .num_minutes()
        .clamp(0, 2 * 24 * 60) as u64;
    let r = mix(post.id);
    let grown = |top: u64| top * age / (2 * 24 * 60);
    (grown(r % 20), grown((r >> 8) % 40), grown((r >> 16) % 200))
}

/// The posts of `uid` published up to `now` and not deleted, newest first.
fn published(uid: u64, now: DateTime<Utc>, deleted: &HashSet<u64>) -> Vec<Post> {
    let now = now.with_timezone(&cst());
    let mut posts = Vec::new();
    let mut day = now.date_naive();
    while day >= HISTORY_FROM {
        for p in day_posts(uid, day).into_iter().rev() {
            if p.at <= now && !deleted.contains(&p.id) {
                posts.push(p);
            }
        }
        day -= Days::days(1);
    }
    posts
}

/// Failures to inject, shared between the test and the running server.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    inner: Arc<Mutex<FaultState>>,
}

#[derive(Debug, Default)]
struct FaultState {
    expired_token: bool,
    invalid_token: bool,
    rate_limited: bool,
    server_errors: u32,
    malformed: bool,
    delay: Duration,
    /// The timeline serves the whole history (`false`, the default, is the
    /// real API's five newest posts).
    full_timeline: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Faults {
    /// Every token is expired: 21327 `expired_token`.
    pub fn set_expired_token(&self, on: bool) {
        lock(&self.inner).expired_token = on;
    }

    /// Every token is invalid: 21332 `invalid_access_token`.
    pub fn set_invalid_token(&self, on: bool) {
        lock(&self.inner).invalid_token = on;
    }

    /// The account is over its hourly limit: 10023 `User requests out of rate limit!`.
    pub fn set_rate_limited(&self, on: bool) {
        lock(&self.inner).rate_limited = on;
    }

    /// The next `n` calls answer HTTP 502 with the gateway's HTML page.
    pub fn fail_next(&self, n: u32) {
        lock(&self.inner).server_errors = n;
    }

    /// Answers are HTTP 200 with a truncated JSON body.
    pub fn set_malformed(&self, on: bool) {
        lock(&self.inner).malformed = on;
    }

    /// Every answer waits this long first.
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.inner).delay = delay;
    }

    /// The timeline serves only the newest [`TIMELINE_LIMIT`] posts, as the
    /// real API does (on by default). Off, it pages through the whole
    /// history, as the commercial API for reviewed apps does.
    pub fn set_five_posts(&self, on: bool) {
        lock(&self.inner).full_timeline = !on;
    }

    /// Switches every fault off and the five-post timeline on.
    pub fn clear(&self) {
        *lock(&self.inner) = FaultState::default();
    }
}

/// Which API an operation counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    UsersShow,
    UserTimeline,
    TokenInfo,
}

struct Shared {
    accounts: Vec<Account>,
    faults: Faults,
    now: Mutex<Option<DateTime<Utc>>>,
    calls: Mutex<HashMap<Endpoint, usize>>,
    deleted: Mutex<HashSet<u64>>,
}

impl Shared {
    fn now(&self) -> DateTime<Utc> {
        match *lock(&self.now) {
            Some(t) => t,
            None => real_now(),
        }
    }

    fn published(&self, uid: u64) -> Vec<Post> {
        published(uid, self.now(), &lock(&self.deleted))
    }
}

/// The simulator stands in for the outside world, which runs on the real
/// clock; tests pin it with [`WeiboSim::set_now`].
#[allow(clippy::disallowed_methods)]
fn real_now() -> DateTime<Utc> {
    Utc::now()
}

/// A running simulator on 127.0.0.1. Stops when dropped.
pub struct WeiboSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WeiboSim {
    /// Starts the simulator on a free port of 127.0.0.1, on the current tokio runtime.
    pub async fn start(accounts: Vec<Account>) -> std::io::Result<WeiboSim> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            accounts,
            faults: Faults::default(),
            now: Mutex::new(None),
            calls: Mutex::new(HashMap::new()),
            deleted: Mutex::new(HashSet::new()),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(WeiboSim {
            addr,
            shared,
            stop: Some(stop),
            thread: None,
        })
    }

    /// Starts the simulator on a thread of its own with its own runtime, for
    /// tests without tokio (plugin tests, daemon integration tests).
    pub fn start_blocking(accounts: Vec<Account>) -> std::io::Result<WeiboSim> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("weibo-sim".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match WeiboSim::start(accounts).await {
                        Ok(mut sim) => {
                            let stop = sim.stop.take();
                            let (stop_tx, stop_rx) = oneshot::channel::<()>();
                            sim.stop = Some(stop_tx);
                            let _ = tx.send(Ok(sim));
                            let _ = stop_rx.await;
                            if let Some(s) = stop {
                                let _ = s.send(());
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            })?;
        let mut sim = rx
            .recv()
            .map_err(|_| std::io::Error::other("the simulator thread died"))??;
        sim.thread = Some(thread);
        Ok(sim)
    }

    /// `http://127.0.0.1:PORT`, the value for the plugin's `api_base`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The failure switches.
    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    /// Fixes the simulator's clock (the real clock otherwise).
    pub fn set_now(&self, now: DateTime<Utc>) {
        *lock(&self.shared.now) = Some(now);
    }

    /// Lets the simulator's clock follow the real one again after [`WeiboSim::set_now`].
    pub fn follow_real_clock(&self) {
        *lock(&self.shared.now) = None;
    }

    /// How many calls an endpoint received, failed ones included.
    pub fn calls(&self, endpoint: Endpoint) -> usize {
        lock(&self.shared.calls)
            .get(&endpoint)
            .copied()
            .unwrap_or(0)
    }

    /// The number of posts of `uid` published up to the simulator's clock,
    /// which users/show reports as `statuses_count`.
    pub fn statuses_count(&self, uid: u64) -> usize {
        self.shared.published(uid).len()
    }

    /// The account deletes a post: it leaves the timeline and
    /// `statuses_count` drops by one, as on the real platform.
    pub fn delete_post(&self, id: u64) {
        lock(&self.shared.deleted).insert(id);
    }
}

impl Drop for WeiboSim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(USERS_SHOW, get(users_show))
        .route(USER_TIMELINE, get(user_timeline))
        .route(TOKEN_INFO, post(token_info))
        .with_state(shared)
}

type Params = Query<HashMap<String, String>>;

/// An error answer as the real API writes it.
fn api_error(
    status: StatusCode,
    request: &str,
    code: u32,
    error: &str,
    as_string: bool,
) -> Response {
    let code = if as_string {
        json!(code.to_string())
    } else {
        json!(code)
    };
    let body = json!({"request": request, "error_code": code, "error": error});
    (
        status,
        [("content-type", "application/json;charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

fn ok_json(body: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json;charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

/// The checks common to every endpoint: faults, then the token (known, not
/// expired). Returns the authorizing account.
async fn gate<'a>(
    shared: &'a Shared,
    endpoint: Endpoint,
    path: &str,
    params: &HashMap<String, String>,
) -> Result<&'a Account, Response> {
    *lock(&shared.calls).entry(endpoint).or_default() += 1;
    let strings = params
        .get("uid")
        .and_then(|u| u.parse::<u64>().ok())
        .is_some_and(counts_as_strings);
    let (delay, server_error, expired, invalid, limited) = {
        let mut f = lock(&shared.faults.inner);
        let server_error = f.server_errors > 0;
        if server_error {
            f.server_errors -= 1;
        }
        (
            f.delay,
            server_error,
            f.expired_token,
            f.invalid_token,
            f.rate_limited,
        )
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if server_error {
        let page = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
        return Err((
            StatusCode::BAD_GATEWAY,
            [("content-type", "text/html")],
            page,
        )
            .into_response());
    }
    let Some(token) = params.get("access_token") else {
        return Err(api_error(
            StatusCode::BAD_REQUEST,
            path,
            10006,
            "source paramter (appkey) is missing",
            strings,
        ));
    };
    if expired {
        return Err(api_error(
            StatusCode::FORBIDDEN,
            path,
            21327,
            "expired_token",
            strings,
        ));
    }
    let account = shared.accounts.iter().find(|a| &a.access_token == token);
    let Some(account) = account.filter(|_| !invalid) else {
        return Err(api_error(
            StatusCode::FORBIDDEN,
            path,
            21332,
            "invalid_access_token",
            strings,
        ));
    };
    if shared.now() >= account.expires_at() {
        return Err(api_error(
            StatusCode::FORBIDDEN,
            path,
            21327,
            "expired_token",
            strings || counts_as_strings(account.uid),
        ));
    }
    if limited {
        return Err(api_error(
            StatusCode::FORBIDDEN,
            path,
            10023,
            "User requests out of rate limit!",
            strings,
        ));
    }
    Ok(account)
}

fn malformed(shared: &Shared) -> bool {
    lock(&shared.faults.inner).malformed
}

/// A count, as a number or (for some accounts) a string.
fn count(n: u64, as_string: bool) -> Value {
    if as_string {
        json!(n.to_string())
    } else {
        json!(n)
    }
}

fn created_at(at: DateTime<FixedOffset>) -> String {
    at.format("%a %b %d %H:%M:%S %z %Y").to_string()
}

async fn users_show(State(shared): State<Arc<Shared>>, Query(params): Params) -> Response {
    let _authorizing = match gate(&shared, Endpoint::UsersShow, USERS_SHOW, &params).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let uid = params.get("uid").and_then(|u| u.parse::<u64>().ok());
    let Some(user) = uid.and_then(|uid| shared.accounts.iter().find(|a| a.uid == uid)) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            USERS_SHOW,
            20003,
            "User does not exists!",
            uid.is_some_and(counts_as_strings),
        );
    };
    if malformed(&shared) {
        return ok_json_text(r#"{"id":"#);
    }
    let now = shared.now();
    let posts = shared.published(user.uid);
    let strings = counts_as_strings(user.uid);
    let today = now.with_timezone(&cst()).date_naive();
    let mut body = user_json(user, today, posts.len() as u64);
    let extra = json!({
        "province": "44", "city": "1", "location": "广东 广州",
        "description": format!("{}官方微博", user.screen_name),
        "url": "", "profile_image_url": "https://tvax1.sinaimg.cn/crop.0.0.180.180.50/abc.jpg",
        "domain": "", "gender": "m",
        "friends_count": count(312, strings),
        "favourites_count": count(0, strings),
        "created_at": "Fri Aug 28 00:00:00 +0800 2009",
        "following": false, "allow_all_act_msg": false, "geo_enabled": true,
        "verified": true, "verified_type": 1,
        "verified_reason": format!("{}官方微博", user.screen_name),
        "allow_all_comment": true,
        "avatar_large": "https://tvax1.sinaimg.cn/crop.0.0.180.180.180/abc.jpg",
        "follow_me": false, "online_status": 0, "bi_followers_count": 215,
    });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    if let (Value::Object(b), Some(latest)) = (&mut body, posts.first()) {
        let mut status = status_json(latest, now);
        if let Value::Object(s) = &mut status {
            s.remove("user");
        }
        b.insert("status".into(), status);
    }
    if strings {
        body["followers_count"] = count(followers_on(user.uid, today), true);
        body["statuses_count"] = count(posts.len() as u64, true);
    }
    ok_json(body)
}

fn ok_json_text(text: &'static str) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json;charset=UTF-8")],
        text,
    )
        .into_response()
}

/// The short user object embedded in statuses (and the start of users/show).
fn user_json(user: &Account, today: NaiveDate, statuses: u64) -> Value {
    json!({
        "id": user.uid,
        "idstr": user.uid.to_string(),
        "screen_name": user.screen_name,
        "name": user.screen_name,
        "followers_count": followers_on(user.uid, today),
        "statuses_count": statuses,
    })
}

fn status_json(post: &Post, now: DateTime<Utc>) -> Value {
    let (reposts, comments, attitudes) = engagement(post, now);
    let mut status = json!({
        "created_at": created_at(post.at),
        "id": post.id,
        "idstr": post.id.to_string(),
        "mid": post.id.to_string(),
        "text": "【权威发布】……",
        "source": "<a href=\"https://weibo.com\" rel=\"nofollow\">微博 weibo.com</a>",
        "favorited": false,
        "truncated": false,
        "in_reply_to_status_id": "",
        "in_reply_to_user_id": "",
        "in_reply_to_screen_name": "",
        "geo": null,
        "reposts_count": reposts,
        "comments_count": comments,
        "attitudes_count": attitudes,
    });
    if post.repost {
        // The reposted post of another account, abridged as the real API
        // embeds it.
        status["text"] = json!("转发微博");
        status["retweeted_status"] = json!({
            "created_at": created_at(post.at - Days::hours(3)),
            "id": post.id - 7_000_000_000,
            "idstr": (post.id - 7_000_000_000).to_string(),
            "text": "【省级发布】……",
            "reposts_count": 1024, "comments_count": 88, "attitudes_count": 512,
            "user": {"id": 1_404_376_560u64, "idstr": "1404376560", "screen_name": "省级发布"},
        });
    }
    status
}

async fn user_timeline(State(shared): State<Arc<Shared>>, Query(params): Params) -> Response {
    let account = match gate(&shared, Endpoint::UserTimeline, USER_TIMELINE, &params).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut numbers = [None; 5];
    for (slot, name) in numbers
        .iter_mut()
        .zip(["uid", "count", "page", "since_id", "max_id"])
    {
        if let Some(v) = params.get(name) {
            let Ok(n) = v.parse::<u64>() else {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    USER_TIMELINE,
                    10008,
                    &format!("param error, see doc for more info: {name}"),
                    counts_as_strings(account.uid),
                );
            };
            *slot = Some(n);
        }
    }
    let [uid, count_param, page, since_id, max_id] = numbers;
    if malformed(&shared) {
        return ok_json_text(
            r#"{"statuses":[{"created_at":"Wed Nov 12 09:30:00 +0800 2025","id":52"#,
        );
    }
    let per_page = (count_param.unwrap_or(DEFAULT_COUNT as u64) as usize).clamp(1, MAX_COUNT);
    let page = page.unwrap_or(1).max(1) as usize;
    let now = shared.now();
    let today = now.with_timezone(&cst()).date_naive();
    // Only the authorizing account's own posts are returned [V].
    let own = uid.is_none_or(|u| u == account.uid);
    let mut all = if own {
        shared.published(account.uid)
    } else {
        Vec::new()
    };
    let total = all.len();
    if !lock(&shared.faults.inner).full_timeline {
        // "此接口最多只返回最新的5条数据": paging never reaches older posts.
        all.truncate(TIMELINE_LIMIT);
    }
    let selected: Vec<&Post> = all
        .iter()
        .filter(|p| since_id.is_none_or(|s| p.id > s))
        .filter(|p| max_id.is_none_or(|m| p.id <= m))
        .collect();
    let start = (page - 1).saturating_mul(per_page);
    let shown: Vec<&Post> = selected
        .iter()
        .skip(start)
        .take(per_page)
        .copied()
        .collect();
    let more = selected.len() > start + shown.len();
    let user = user_json(account, today, total as u64);
    let statuses: Vec<Value> = shown
        .iter()
        .map(|p| {
            let mut s = status_json(p, now);
            s["user"] = user.clone();
            s
        })
        .collect();
    let next_cursor = match (more, shown.last()) {
        (true, Some(p)) => p.id - 1,
        _ => 0,
    };
    ok_json(json!({
        "statuses": statuses,
        "marks": [],
        "hasvisible": false,
        "previous_cursor": 0,
        "next_cursor": next_cursor,
        "total_number": total,
    }))
}

/// `POST /oauth2/get_token_info`: the token is read from the form body or,
/// as some clients send it, the query.
async fn token_info(
    State(shared): State<Arc<Shared>>,
    Query(mut params): Params,
    body: String,
) -> Response {
    params.extend(form_urlencoded::parse(body.as_bytes()).into_owned());
    let account = match gate(&shared, Endpoint::TokenInfo, TOKEN_INFO, &params).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let left = account
        .expires_at()
        .signed_duration_since(shared.now())
        .num_seconds();
    let uid = if counts_as_strings(account.uid) {
        json!(account.uid.to_string())
    } else {
        json!(account.uid)
    };
    ok_json(json!({
        "uid": uid,
        "appkey": APPKEY,
        "scope": null,
        "create_at": account.issued_at.timestamp(),
        "expire_in": left,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn post_times_match_posts_on_and_are_ascending() {
        let mut near_midnight = 0;
        let mut after_midnight = 0;
        for offset in 0..200 {
            let d = day(2026, 1, 1) + Days::days(offset);
            let times = post_times(42, d);
            assert_eq!(times.len() as u32, posts_on(42, d));
            assert!(times.windows(2).all(|w| w[0] < w[1]), "{d}: {times:?}");
            near_midnight += times
                .iter()
                .filter(|t| **t >= NaiveTime::from_hms_opt(23, 30, 0).unwrap())
                .count();
            after_midnight += times
                .iter()
                .filter(|t| **t < NaiveTime::from_hms_opt(0, 30, 0).unwrap())
                .count();
        }
        assert!(near_midnight > 10, "{near_midnight}");
        assert!(after_midnight > 5, "{after_midnight}");
    }

    #[test]
    fn nothing_before_history_and_followers_grow() {
        assert_eq!(posts_on(7, day(2024, 12, 31)), 0);
        assert!(followers_on(7, day(2026, 6, 1)) > followers_on(7, day(2026, 1, 1)));
    }

    #[test]
    fn published_is_newest_first_and_stops_at_now() {
        let now = Utc.with_ymd_and_hms(2025, 1, 20, 2, 0, 0).unwrap();
        let posts = published(42, now, &HashSet::new());
        assert!(
            posts
                .windows(2)
                .all(|w| w[0].id > w[1].id && w[0].at > w[1].at)
        );
        assert!(posts.iter().all(|p| p.at <= now));
        let expected: u32 = (1..=19).map(|d| posts_on(42, day(2025, 1, d))).sum::<u32>()
            + post_times(42, day(2025, 1, 20))
                .iter()
                .filter(|t| **t <= NaiveTime::from_hms_opt(10, 0, 0).unwrap())
                .count() as u32;
        assert_eq!(posts.len() as u32, expected);
    }

    /// A GET over a fresh connection; the simulator's answers are not chunked.
    fn http_get(url: &str) -> (u16, Value) {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_once('/').unwrap();
        let mut conn = std::net::TcpStream::connect(host).unwrap();
        write!(
            conn,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        conn.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    #[test]
    fn timeline_pages_caps_count_and_serves_only_the_token_owner_when_the_whole_history_is_on() {
        let sim =
            WeiboSim::start_blocking(vec![Account::new(42, "tok42"), Account::new(43, "tok43")])
                .unwrap();
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 4, 0, 0).unwrap();
        sim.set_now(now);
        sim.faults().set_five_posts(false);
        let all = published(42, now, &HashSet::new());
        let url = |q: &str| format!("{}{USER_TIMELINE}?access_token=tok42&{q}", sim.base_url());
        let ids = |v: &Value| -> Vec<u64> {
            v["statuses"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_u64().unwrap())
                .collect()
        };

        let (status, page2) = http_get(&url("uid=42&count=2&page=2"));
        assert_eq!(status, 200);
        assert_eq!(ids(&page2), [all[2].id, all[3].id]);
        assert_eq!(page2["total_number"], all.len());

        let (_, capped) = http_get(&url("uid=42&count=500"));
        assert_eq!(ids(&capped).len(), MAX_COUNT);
        let (_, default) = http_get(&url("uid=42"));
        assert_eq!(ids(&default).len(), DEFAULT_COUNT);
        let (_, below) = http_get(&url(&format!("uid=42&count=3&max_id={}", all[5].id)));
        assert_eq!(ids(&below), [all[5].id, all[6].id, all[7].id]);

        let (_, other) = http_get(&url("uid=43"));
        assert_eq!(ids(&other), Vec::<u64>::new());
        assert_eq!(other["total_number"], 0);
        assert_eq!(sim.calls(Endpoint::UserTimeline), 5);
    }

    #[test]
    fn errors_have_the_weibo_shape() {
        let sim =
            WeiboSim::start_blocking(vec![Account::new(42, "tok42"), Account::new(43, "tok43")])
                .unwrap();
        sim.faults().set_expired_token(true);
        let (status, body) = http_get(&format!(
            "{}{USERS_SHOW}?uid=43&access_token=tok43",
            sim.base_url()
        ));
        assert_eq!(status, 403);
        assert_eq!(
            body,
            json!({"request": USERS_SHOW, "error_code": "21327", "error": "expired_token"})
        );
        sim.faults().clear();
        let (status, body) = http_get(&format!(
            "{}{USERS_SHOW}?uid=42&access_token=nope",
            sim.base_url()
        ));
        assert_eq!(status, 403);
        assert_eq!(body["error_code"], 21332);
        let (status, body) = http_get(&format!(
            "{}{USERS_SHOW}?uid=42&access_token=tok42",
            sim.base_url()
        ));
        assert_eq!(status, 200);
        assert!(
            body["followers_count"].is_u64() && body["statuses_count"].is_u64(),
            "{body}"
        );
        let (_, body) = http_get(&format!(
            "{}{USERS_SHOW}?uid=43&access_token=tok42",
            sim.base_url()
        ));
        assert!(body["followers_count"].is_string(), "{body}");
    }

    fn ids(v: &Value) -> Vec<u64> {
        v["statuses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn the_timeline_serves_the_five_newest_posts_only_by_default() {
        let sim = WeiboSim::start_blocking(vec![Account::new(42, "tok42")]).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 4, 0, 0).unwrap();
        sim.set_now(now);
        let all = published(42, now, &HashSet::new());
        let newest: Vec<u64> = all.iter().take(TIMELINE_LIMIT).map(|p| p.id).collect();
        let url = |q: &str| {
            format!(
                "{}{USER_TIMELINE}?access_token=tok42&uid=42&{q}",
                sim.base_url()
            )
        };

        let (status, first) = http_get(&url("count=100"));
        assert_eq!(status, 200);
        assert_eq!(ids(&first), newest);
        // The count is the whole history; the list is not.
        assert_eq!(first["total_number"], all.len());
        // Neither pages nor max_id reach older posts.
        let (_, page2) = http_get(&url("count=100&page=2"));
        assert_eq!(ids(&page2), Vec::<u64>::new());
        let (_, older) = http_get(&url(&format!("count=100&max_id={}", newest[4] - 1)));
        assert_eq!(ids(&older), Vec::<u64>::new());
        let (_, within) = http_get(&url(&format!("count=2&max_id={}", newest[1])));
        assert_eq!(ids(&within), newest[1..3]);

        // Switched off, the same request pages through the history.
        sim.faults().set_five_posts(false);
        let (_, older) = http_get(&url(&format!("count=100&max_id={}", newest[4] - 1)));
        assert_eq!(ids(&older).len(), MAX_COUNT);
        sim.faults().clear();
        let (_, again) = http_get(&url("count=100"));
        assert_eq!(
            ids(&again).len(),
            TIMELINE_LIMIT,
            "clear() restores the real limit"
        );
    }

    #[test]
    fn statuses_count_follows_the_clock_and_deletions() {
        let sim = WeiboSim::start_blocking(vec![Account::new(42, "tok42")]).unwrap();
        let d = (0..60)
            .map(|i| day(2026, 3, 1) + Days::days(i))
            .find(|d| posts_on(42, *d) >= 2)
            .unwrap();
        let posts = day_posts(42, d);
        sim.set_now(posts[0].at.with_timezone(&Utc) - Days::seconds(1));
        let before = sim.statuses_count(42);
        sim.set_now(posts[1].at.with_timezone(&Utc));
        assert_eq!(sim.statuses_count(42), before + 2);
        let show = |sim: &WeiboSim| {
            http_get(&format!(
                "{}{USERS_SHOW}?uid=42&access_token=tok42",
                sim.base_url()
            ))
            .1
        };
        assert_eq!(show(&sim)["statuses_count"], before + 2);
        assert_eq!(show(&sim)["status"]["id"], posts[1].id);

        sim.delete_post(posts[1].id);
        assert_eq!(show(&sim)["statuses_count"], before + 1);
        assert_eq!(show(&sim)["status"]["id"], posts[0].id);
        let (_, timeline) = http_get(&format!(
            "{}{USER_TIMELINE}?uid=42&access_token=tok42",
            sim.base_url()
        ));
        assert_eq!(ids(&timeline)[0], posts[0].id);
    }

    #[test]
    fn statuses_carry_growing_engagement_and_reposts_their_original() {
        let sim = WeiboSim::start_blocking(vec![Account::new(42, "tok42")]).unwrap();
        let d = (0..60)
            .map(|i| day(2026, 3, 1) + Days::days(i))
            .find(|d| day_posts(42, *d).iter().any(|p| p.repost))
            .unwrap();
        let post = *day_posts(42, d).iter().find(|p| p.repost).unwrap();
        let at = post.at.with_timezone(&Utc);
        let read = |sim: &WeiboSim| {
            let (_, v) = http_get(&format!(
                "{}{USER_TIMELINE}?uid=42&access_token=tok42&max_id={}",
                sim.base_url(),
                post.id
            ));
            v["statuses"][0].clone()
        };
        sim.set_now(at + Days::hours(1));
        let early = read(&sim);
        assert_eq!(early["id"], post.id);
        assert!(early["retweeted_status"]["id"].is_u64(), "{early}");
        sim.set_now(at + Days::days(3));
        let late = read(&sim);
        let (r, c, a) = engagement(&post, at + Days::days(3));
        assert_eq!(
            (
                late["reposts_count"].clone(),
                late["comments_count"].clone(),
                late["attitudes_count"].clone()
            ),
            (json!(r), json!(c), json!(a))
        );
        assert!(late["attitudes_count"].as_u64() >= early["attitudes_count"].as_u64());
        assert!(
            a > early["attitudes_count"].as_u64().unwrap(),
            "likes grow: {early} {late}"
        );
        assert_eq!(
            originals_on(42, d),
            posts_on(42, d) - day_posts(42, d).iter().filter(|p| p.repost).count() as u32
        );
    }

    /// A POST with a form body over a fresh connection.
    fn http_post_form(url: &str, form: &str) -> (u16, Value) {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_once('/').unwrap();
        let mut conn = std::net::TcpStream::connect(host).unwrap();
        write!(
            conn,
            "POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        )
        .unwrap();
        let mut raw = String::new();
        conn.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    #[test]
    fn token_info_names_the_account_and_tokens_expire() {
        let issued = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let sim = WeiboSim::start_blocking(vec![
            Account::new(42, "tok42"),
            Account::new(43, "tok43").token_lifetime(issued, 86_400),
        ])
        .unwrap();
        sim.set_now(issued + Days::hours(20));
        let info = |token: &str| {
            http_post_form(
                &format!("{}{TOKEN_INFO}", sim.base_url()),
                &format!("access_token={token}"),
            )
        };
        let (status, body) = info("tok42");
        assert_eq!(status, 200);
        assert_eq!(body["uid"], 42);
        assert_eq!(body["appkey"], APPKEY);
        let left = Account::new(42, "tok42").expires_at() - (issued + Days::hours(20));
        assert_eq!(body["expire_in"], left.num_seconds());
        let (_, body) = info("tok43");
        assert_eq!(body["uid"], "43", "uids of odd accounts are strings");
        assert_eq!(body["expire_in"], 4 * 3600);
        assert_eq!(body["create_at"], issued.timestamp());
        assert_eq!(info("nope").1["error_code"], 21332);

        // A day after issue the short-lived token is refused everywhere.
        sim.set_now(issued + Days::hours(24));
        let (status, body) = info("tok43");
        assert_eq!(
            (status, body["error"].clone()),
            (403, json!("expired_token"))
        );
        let (_, body) = http_get(&format!(
            "{}{USER_TIMELINE}?uid=43&access_token=tok43",
            sim.base_url()
        ));
        assert_eq!(body["error_code"], "21327");
        assert_eq!(info("tok42").0, 200);
        assert_eq!(sim.calls(Endpoint::TokenInfo), 5);
    }

    #[test]
    fn created_at_is_the_weibo_format() {
        let at = cst().with_ymd_and_hms(2025, 11, 12, 9, 30, 0).unwrap();
        assert_eq!(created_at(at), "Wed Nov 12 09:30:00 +0800 2025");
    }
}
