//! The `weibo` plugin against the Weibo simulator on 127.0.0.1, in process.
//! Expectations come from the simulator's public data functions
//! (`posts_on`, `post_times`, `day_posts`, `engagement`, `followers_on`),
//! not from the plugin.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use serde_json::{Value, json};
use tally_plugin::testkit::{Fixture, Harness, TestHost};
use tally_plugin::{CollectRequest, CollectResponse, ErrorKind, Window};
use tally_simulators::weibo::{
    Account, Endpoint, HISTORY_FROM, WeiboSim, counts_as_strings, day_posts, engagement,
    followers_on, originals_on, post_times, posts_on,
};
use tally_weibo::Weibo;

/// Even: counts arrive as numbers. Odd: as strings.
const UID: u64 = 5_678_901_234;
const ODD_UID: u64 = 1_404_376_561;
const TOKEN: &str = "2.00SecretTokenAbCdEf";
const ODD_TOKEN: &str = "2.00OtherSecretToken";

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// The test host's clock: 2026-11-27 02:00 UTC, 10:00 in Asia/Shanghai.
fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 2, 0, 0).unwrap()
}

fn today() -> NaiveDate {
    day(2026, 11, 27)
}

fn sim() -> WeiboSim {
    let sim = WeiboSim::start_blocking(vec![
        Account::new(UID, TOKEN),
        Account::new(ODD_UID, ODD_TOKEN),
    ])
    .unwrap();
    sim.set_now(now());
    sim
}

/// A simulator whose timeline serves the whole history, as the commercial
/// API does for reviewed apps.
fn full_sim() -> WeiboSim {
    let sim = sim();
    sim.faults().set_five_posts(false);
    sim
}

fn plugin(sim: &WeiboSim, extra: Value) -> Harness<Weibo> {
    let mut settings =
        json!({"uid": UID.to_string(), "access_token": TOKEN, "api_base": sim.base_url()});
    if let (Value::Object(s), Value::Object(e)) = (&mut settings, extra) {
        s.extend(e);
    }
    Harness::<Weibo>::create(settings, TestHost::live()).unwrap()
}

fn collect(p: &mut Harness<Weibo>, from: NaiveDate, to: NaiveDate) -> CollectResponse {
    p.collect(&CollectRequest::new("weibo", Window::new(from, to)))
        .unwrap()
}

fn values(out: &CollectResponse, indicator: &str) -> Vec<(NaiveDate, f64)> {
    out.observations
        .iter()
        .filter(|o| o.indicator == indicator)
        .map(|o| (o.day, o.value))
        .collect()
}

/// Posts of `uid` on `d` published by 10:00 CST (the clock) when `d` is today.
fn visible_posts(uid: u64, d: NaiveDate) -> u32 {
    if d == today() {
        let ten = NaiveTime::from_hms_opt(10, 0, 0).unwrap();
        post_times(uid, d).iter().filter(|t| **t <= ten).count() as u32
    } else {
        posts_on(uid, d)
    }
}

#[test]
fn with_the_whole_history_every_past_day_is_counted_and_levels_today() {
    let sim = full_sim();
    let mut p = plugin(&sim, json!({}));
    let from = day(2026, 9, 1);
    let out = collect(&mut p, from, today());
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(
        out.warnings[0].starts_with(&format!("access token of uid {UID}: valid until 2029-12-")),
        "{:?}",
        out.warnings
    );

    // Today is counted once it is over.
    let expected: Vec<(NaiveDate, f64)> = Window::new(from, today() - Duration::days(1))
        .days()
        .map(|d| (d, f64::from(posts_on(UID, d))))
        .collect();
    assert_eq!(values(&out, "weibo_posts"), expected);
    let in_window: u32 = expected.iter().map(|(_, n)| *n as u32).sum();
    assert!(
        in_window > 100,
        "the window must need several pages: {in_window}"
    );
    // Newest first, 100 a page, until the page holding the first older post.
    let with_today = in_window + visible_posts(UID, today());
    assert_eq!(
        sim.calls(Endpoint::UserTimeline),
        with_today as usize / 100 + 1
    );
    assert_eq!(sim.calls(Endpoint::TokenInfo), 1);

    let total: u32 = Window::new(HISTORY_FROM, today())
        .days()
        .map(|d| visible_posts(UID, d))
        .sum();
    assert_eq!(
        values(&out, "weibo_followers"),
        [(today(), followers_on(UID, today()) as f64)]
    );
    assert_eq!(
        values(&out, "weibo_total_posts"),
        [(today(), f64::from(total))]
    );
    assert_eq!(sim.calls(Endpoint::UsersShow), 1);
    // The token travels as a query parameter, never inside the URL text.
    for r in p.host().requests() {
        assert!(!r.url.contains(TOKEN), "{}", r.url);
    }
}

#[test]
fn posts_near_midnight_belong_to_their_day_in_the_request_time_zone() {
    let sim = full_sim();
    // A day whose last post is after 23:30 CST followed by a day whose first is before 00:30.
    let late = NaiveTime::from_hms_opt(23, 30, 0).unwrap();
    let early = NaiveTime::from_hms_opt(0, 30, 0).unwrap();
    let d = Window::new(day(2026, 1, 1), day(2026, 11, 1))
        .days()
        .find(|d| {
            post_times(UID, *d).last().is_some_and(|t| *t >= late)
                && post_times(UID, *d + Duration::days(1))
                    .first()
                    .is_some_and(|t| *t < early)
        })
        .expect("the simulator has posts on both sides of a midnight");
    let next = d + Duration::days(1);

    let mut p = plugin(&sim, json!({"indicators": ["weibo_posts"]}));
    let out = collect(&mut p, d, next);
    assert_eq!(
        values(&out, "weibo_posts"),
        [
            (d, f64::from(posts_on(UID, d))),
            (next, f64::from(posts_on(UID, next)))
        ]
    );

    // In UTC the late post stays on `d` (15:3x UTC) and the early one moves to `d` (16:xx UTC the day before).
    // The midnights measured in Shanghai do not apply in UTC: they are dropped, said so.
    let mut req = CollectRequest::new("weibo", Window::new(d, d));
    req.state = out.state.clone();
    req.timezone = "UTC".into();
    let out = p.collect(&req).unwrap();
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("in Asia/Shanghai, now uid")),
        "{:?}",
        out.warnings
    );
    let eight = NaiveTime::from_hms_opt(8, 0, 0).unwrap();
    let utc_count = post_times(UID, d).iter().filter(|t| **t >= eight).count()
        + post_times(UID, next).iter().filter(|t| **t < eight).count();
    assert_eq!(values(&out, "weibo_posts"), [(d, utc_count as f64)]);
}

#[test]
fn created_at_with_another_offset_is_converted() {
    let timeline = r#"{"statuses":[
      {"created_at":"Wed Sep 30 16:30:00 +0000 2026","id":5300000000000003,"idstr":"5300000000000003"},
      {"created_at":"Wed Sep 30 23:30:00 +0800 2026","id":5300000000000002,"idstr":"5300000000000002"},
      {"created_at":"Tue Sep 29 10:00:00 +0800 2026","id":5300000000000001,"idstr":"5300000000000001"}
    ],"marks":[],"hasvisible":false,"previous_cursor":0,"next_cursor":0,"total_number":3}"#;
    // No expire_in: the expiry is unknown, and said so only in the debug log.
    let host = TestHost::new()
        .fixture(
            Fixture::post("http://weibo.test/oauth2/get_token_info")
                .respond(200, r#"{"uid":"5678901234","appkey":1352222456,"scope":null,"create_at":1352267591}"#),
        )
        .fixture(Fixture::get("http://weibo.test/2/users/show.json").respond(
            200,
            r#"{"id":5678901234,"statuses_count":3,"followers_count":10,"status":{"id":5300000000000003}}"#,
        ))
        .fixture(
            Fixture::get("http://weibo.test/2/statuses/user_timeline.json").respond(200, timeline),
        );
    let settings = json!({"uid": 5678901234u64, "access_token": TOKEN, "api_base": "http://weibo.test/",
                          "indicators": ["weibo_posts"]});
    let mut p = Harness::<Weibo>::create(settings, host).unwrap();
    let out = collect(&mut p, day(2026, 9, 30), day(2026, 10, 1));
    assert_eq!(
        values(&out, "weibo_posts"),
        [(day(2026, 9, 30), 1.0), (day(2026, 10, 1), 1.0)]
    );
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let requests = p.host().requests();
    let form = requests[0].body.as_deref().unwrap();
    assert_eq!(form, format!("access_token={TOKEN}"));
    let q = &requests[2].query;
    assert!(q.contains(&("count".into(), "100".into())), "{q:?}");
    assert!(q.contains(&("uid".into(), "5678901234".into())), "{q:?}");
}

#[test]
fn counts_as_strings_are_read() {
    assert!(counts_as_strings(ODD_UID) && !counts_as_strings(UID));
    let sim = sim();
    let settings = json!({"uid": ODD_UID, "access_token": ODD_TOKEN, "api_base": sim.base_url(),
                          "indicators": ["weibo_followers", "weibo_total_posts"]});
    let mut p = Harness::<Weibo>::create(settings, TestHost::live()).unwrap();
    let out = collect(&mut p, today(), today());
    let total: u32 = Window::new(HISTORY_FROM, today())
        .days()
        .map(|d| visible_posts(ODD_UID, d))
        .sum();
    assert_eq!(
        values(&out, "weibo_followers"),
        [(today(), followers_on(ODD_UID, today()) as f64)]
    );
    assert_eq!(
        values(&out, "weibo_total_posts"),
        [(today(), f64::from(total))]
    );
    assert_eq!(sim.calls(Endpoint::UserTimeline), 0, "posts not asked for");
}

#[test]
fn a_backfill_before_today_records_no_levels() {
    let sim = full_sim();
    let mut p = plugin(&sim, json!({}));
    let out = collect(&mut p, day(2026, 11, 1), day(2026, 11, 2));
    assert!(values(&out, "weibo_followers").is_empty());
    assert!(values(&out, "weibo_total_posts").is_empty());
    assert_eq!(values(&out, "weibo_posts").len(), 2);
    // users/show is still the day's snapshot.
    assert_eq!(sim.calls(Endpoint::UsersShow), 1);
}

#[test]
fn max_pages_bounds_the_timeline_and_the_days_before_stay_uncovered() {
    let sim = full_sim();
    let mut p = plugin(&sim, json!({"max_pages": 1, "indicators": ["weibo_posts"]}));
    let from = day(2026, 6, 1);
    let out = collect(&mut p, from, today());
    assert_eq!(sim.calls(Endpoint::UserTimeline), 1);

    // The 100 newest posts reach back into some day; that day may be partial,
    // so only the later days are recorded, each complete.
    let mut seen = 0;
    let mut oldest = today();
    while seen < 100 {
        seen += visible_posts(UID, oldest);
        oldest -= Duration::days(1);
    }
    let oldest = oldest + Duration::days(1);
    let expected: Vec<(NaiveDate, f64)> =
        Window::new(oldest + Duration::days(1), today() - Duration::days(1))
            .days()
            .map(|d| (d, f64::from(posts_on(UID, d))))
            .collect();
    assert_eq!(values(&out, "weibo_posts"), expected);
    let w = out
        .warnings
        .iter()
        .find(|w| w.starts_with("weibo_posts: "))
        .unwrap();
    assert!(
        w.contains(&format!("({from}..{oldest})")) && w.contains("left out, not 0"),
        "{w}"
    );
    // The answer names them uncovered, so the daemon counts them as a gap,
    // and today, counted once it is over.
    assert_eq!(
        out.uncovered,
        [Window::new(from, oldest), Window::new(today(), today())]
    );
}

fn failing(sim: &WeiboSim, arm: impl Fn(&WeiboSim)) -> tally_plugin::Error {
    arm(sim);
    let mut p = plugin(sim, json!({}));
    let err = p
        .collect(&CollectRequest::new(
            "weibo",
            Window::new(day(2026, 11, 20), today()),
        ))
        .unwrap_err();
    assert!(
        !err.message.contains(TOKEN),
        "token leaked: {}",
        err.message
    );
    assert!(
        err.message.contains("POST /oauth2/get_token_info")
            || err.message.contains("GET /2/users/show.json"),
        "{}",
        err.message
    );
    sim.faults().clear();
    err
}

#[test]
fn faults_map_to_error_kinds_without_the_token() {
    let sim = sim();

    let e = failing(&sim, |s| s.faults().set_expired_token(true));
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(e.message.contains("21327"), "{}", e.message);
    assert!(
        e.message
            .contains("the access token expired: re-authorize the account and update the secret"),
        "{}",
        e.message
    );

    let e = failing(&sim, |s| s.faults().set_invalid_token(true));
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(e.message.contains("21332"), "{}", e.message);

    let e = failing(&sim, |s| s.faults().set_rate_limited(true));
    assert_eq!(e.kind, ErrorKind::RateLimited);
    assert!(e.message.contains("10023"), "{}", e.message);

    let e = failing(&sim, |s| s.faults().fail_next(1));
    assert_eq!(e.kind, ErrorKind::Upstream);
    assert!(
        e.message.contains("HTTP 502") && e.message.contains("Bad Gateway"),
        "{}",
        e.message
    );

    let e = failing(&sim, |s| s.faults().set_malformed(true));
    assert_eq!(e.kind, ErrorKind::Upstream);
    assert!(e.message.contains("not JSON"), "{}", e.message);

    // After the faults, the same source collects again.
    let mut p = plugin(&sim, json!({}));
    collect(&mut p, day(2026, 11, 20), today());
}

#[test]
fn an_unknown_token_is_an_auth_error_and_error_codes_may_be_strings() {
    let sim = sim();
    for uid in [UID, ODD_UID] {
        let settings =
            json!({"uid": uid, "access_token": "2.00NotAToken", "api_base": sim.base_url()});
        let mut p = Harness::<Weibo>::create(settings, TestHost::live()).unwrap();
        let e = p
            .collect(&CollectRequest::new("w", Window::new(today(), today())))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Auth, "{}", e.message);
        assert!(e.message.contains("21332"), "{}", e.message);
        assert!(!e.message.contains("2.00NotAToken"), "{}", e.message);
    }
}

#[test]
fn settings_are_checked() {
    let err = |s: Value| {
        Harness::<Weibo>::create(s, TestHost::new())
            .err()
            .expect("refused")
            .message
    };
    assert!(err(json!({"uid": "xx", "access_token": "t"})).starts_with("uid: "));
    assert!(err(json!({"uid": 1, "access_token": " "})).starts_with("access_token: "));
    assert!(
        err(json!({"uid": 1, "access_token": "t", "api_base": "api.weibo.com"}))
            .starts_with("api_base: ")
    );
    assert!(
        err(json!({"uid": 1, "access_token": "t", "indicators": ["weibo_fans"]}))
            .starts_with("indicators[0]: ")
    );
    assert!(err(json!({"uid": 1, "access_token": "t", "max_pages": 0})).starts_with("max_pages: "));
    assert!(err(json!({"uid": 1, "access_token": "t", "token": "x"})).contains("unknown field"));
    assert!(
        err(json!({"uid": 1, "access_token": "t", "expiry_warning_days": -1}))
            .contains("expiry_warning_days")
    );
    let p =
        Harness::<Weibo>::create(json!({"uid": 1, "access_token": "t"}), TestHost::new()).unwrap();
    assert_eq!(
        p.emits(),
        ["weibo_posts", "weibo_followers", "weibo_total_posts"]
    );
}

/// `at` o'clock in China Standard Time on `d`, as UTC.
fn cst(d: NaiveDate, hour: u32, minute: u32) -> DateTime<Utc> {
    chrono_tz::Asia::Shanghai
        .from_local_datetime(&d.and_hms_opt(hour, minute, 0).unwrap())
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

/// A source run as the daemon runs it: the simulator and the host share a
/// clock that the test moves; each run's window starts `lookback` days before
/// the last one's end and gets the last state; `store` keeps the newest value
/// per (indicator, entity, day), as the daemon's store does.
struct Deployment {
    sim: WeiboSim,
    plugin: Harness<Weibo>,
    host: TestHost,
    state: Option<Value>,
    last_to: Option<NaiveDate>,
    store: BTreeMap<(String, String, NaiveDate), f64>,
    /// Per day, whether the latest run asking for it covered it, as the
    /// daemon's run index keeps it.
    covered: BTreeMap<NaiveDate, bool>,
    warnings: Vec<String>,
}

impl Deployment {
    fn new(sim: WeiboSim, settings: Value) -> Deployment {
        let host = TestHost::live();
        let mut s = json!({"uid": UID, "access_token": TOKEN, "api_base": sim.base_url()});
        if let (Value::Object(a), Value::Object(b)) = (&mut s, settings) {
            a.extend(b);
        }
        let plugin = Harness::<Weibo>::create(s, host.clone()).unwrap();
        Deployment {
            sim,
            plugin,
            host,
            state: None,
            last_to: None,
            store: BTreeMap::new(),
            covered: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    fn run_at(&mut self, at: DateTime<Utc>, first_from: NaiveDate) -> CollectResponse {
        self.sim.set_now(at);
        let _ = self.host.clone().at(at);
        let today = at.with_timezone(&chrono_tz::Asia::Shanghai).date_naive();
        let from = self.last_to.map_or(first_from, |t| t - Duration::days(3));
        let mut req = CollectRequest::new("weibo", Window::new(from, today));
        req.state = self.state.clone();
        let (out, uncovered) = self.plugin.collect_uncovered(&req).unwrap();
        for d in req.window.days() {
            self.covered.insert(d, !uncovered.contains(&d));
        }
        for o in &out.observations {
            self.store
                .insert((o.indicator.clone(), o.entity.clone(), o.day), o.value);
        }
        self.state = out.state.clone();
        self.last_to = Some(today);
        self.warnings.extend(out.warnings.iter().cloned());
        out
    }

    fn day_value(&self, indicator: &str, d: NaiveDate) -> Option<f64> {
        self.store
            .get(&(indicator.to_owned(), String::new(), d))
            .copied()
    }
}

#[test]
fn five_post_timeline_daily_runs_count_a_quarter_exactly() {
    let mut dep = Deployment::new(
        sim(),
        json!({"indicators": ["weibo_posts", "weibo_original_posts"]}),
    );
    let (q_from, q_to) = (day(2026, 7, 1), day(2026, 9, 30));
    // Runs every morning at 06:30 from a week before the quarter to the day after it.
    let mut d = q_from - Duration::days(7);
    while d <= q_to + Duration::days(1) {
        dep.run_at(cst(d, 6, 30), d);
        d += Duration::days(1);
    }
    let mut total = 0.0;
    let mut original_days = 0;
    for d in Window::new(q_from, q_to).days() {
        let v = dep.day_value("weibo_posts", d);
        assert_eq!(v, Some(f64::from(posts_on(UID, d))), "{d}");
        total += v.unwrap();
        // Original posts only where every post was seen, and then right.
        if let Some(o) = dep.day_value("weibo_original_posts", d) {
            assert_eq!(o, f64::from(originals_on(UID, d)), "{d}");
            original_days += 1;
        }
    }
    let expected: u32 = Window::new(q_from, q_to)
        .days()
        .map(|d| posts_on(UID, d))
        .sum();
    assert_eq!(total, f64::from(expected));
    assert!(
        original_days > 45,
        "most days are seen whole: {original_days}"
    );
    // A day is uncovered exactly when its original posts were left out:
    // never a day without a number counted as covered.
    for d in Window::new(q_from, q_to).days() {
        assert_eq!(
            dep.covered.get(&d).copied(),
            Some(dep.day_value("weibo_original_posts", d).is_some()),
            "{d}"
        );
    }
    // Each run reads 5 posts: one timeline call, never paging.
    assert_eq!(dep.sim.calls(Endpoint::UserTimeline), 100);
}

#[test]
fn runs_every_hour_see_every_post_so_original_posts_are_complete() {
    let mut dep = Deployment::new(sim(), json!({"indicators": ["weibo_original_posts"]}));
    let (from, to) = (day(2026, 8, 1), day(2026, 8, 14));
    let mut at = cst(from, 0, 15);
    while at < cst(to + Duration::days(1), 1, 0) {
        dep.run_at(at, from);
        at += Duration::hours(1);
    }
    for d in Window::new(from, to).days() {
        assert_eq!(
            dep.day_value("weibo_original_posts", d),
            Some(f64::from(originals_on(UID, d))),
            "{d}"
        );
        assert_eq!(dep.day_value("weibo_posts", d), None, "not asked for");
    }
}

/// The day (CST) of the 5th newest post at `at`: a run then measures the
/// midnights after it.
fn fifth_newest_day(at: DateTime<Utc>) -> NaiveDate {
    let mut newest = Vec::new();
    let mut d = at.with_timezone(&chrono_tz::Asia::Shanghai).date_naive();
    while newest.len() < 5 {
        let mut posts = day_posts(UID, d);
        posts.retain(|p| p.at <= at);
        newest.extend(posts.into_iter().rev());
        d -= Duration::days(1);
    }
    newest[4].at.date_naive()
}

#[test]
fn days_no_run_measured_stay_uncovered_never_zero_and_lookback_keeps_counted_days() {
    let mut dep = Deployment::new(sim(), json!({"indicators": ["weibo_posts"]}));
    // A new source backfilling a month: only what the five newest posts show.
    let first = day(2026, 10, 1);
    let out = dep.run_at(cst(first, 6, 30), first - Duration::days(30));
    // The days after the 5th newest post are measured, a day without posts
    // as a true 0; the days before are left out.
    let fifth = fifth_newest_day(cst(first, 6, 30));
    let measured: Vec<(NaiveDate, f64)> =
        Window::new(fifth + Duration::days(1), first - Duration::days(1))
            .days()
            .map(|d| (d, f64::from(posts_on(UID, d))))
            .collect();
    assert!(!measured.is_empty());
    assert_eq!(values(&out, "weibo_posts"), measured);
    let w = out
        .warnings
        .iter()
        .find(|w| w.starts_with("weibo_posts: "))
        .unwrap();
    let left_out = (fifth - day(2026, 9, 1)).num_days() + 1;
    assert!(
        w.contains(&format!("{left_out} days (2026-09-01..{fifth})")) && w.contains("not 0"),
        "{w}"
    );
    assert_eq!(
        out.uncovered,
        [
            Window::new(day(2026, 9, 1), fifth),
            Window::new(first, first)
        ]
    );

    // Daily runs for a week count each day.
    for i in 1..=6 {
        dep.run_at(cst(first + Duration::days(i), 6, 30), first);
    }
    for d in Window::new(first, first + Duration::days(4)).days() {
        assert_eq!(
            dep.day_value("weibo_posts", d),
            Some(f64::from(posts_on(UID, d))),
            "{d}"
        );
    }
    // Then no run for five days (more than 5 posts in between), and a run
    // whose lookback reaches back over counted days.
    let gap_end = first + Duration::days(12);
    let posts_in_gap: u32 = Window::new(first + Duration::days(6), gap_end - Duration::days(1))
        .days()
        .map(|d| posts_on(UID, d))
        .sum();
    assert!(posts_in_gap > 5, "{posts_in_gap}");
    let before = dep.store.clone();
    let out = dep.run_at(cst(gap_end, 6, 30), first);
    let window_from = first + Duration::days(6) - Duration::days(3);
    assert_eq!(out.observations.first().map(|o| o.day), Some(window_from));
    for o in &out.observations {
        // Days counted before come back with the same number.
        if let Some(v) = before.get(&(o.indicator.clone(), String::new(), o.day)) {
            assert_eq!(*v, o.value, "{}", o.day);
        }
    }
    // The days between the last morning run and the 5th newest post now are
    // not guessed; those after it are measured.
    let fifth = fifth_newest_day(cst(gap_end, 6, 30));
    let gap = Window::new(first + Duration::days(6), fifth);
    assert!(gap.days().count() >= 2, "{gap:?}");
    for d in Window::new(first + Duration::days(6), gap_end - Duration::days(1)).days() {
        let expected = (d > fifth).then(|| f64::from(posts_on(UID, d)));
        assert_eq!(dep.day_value("weibo_posts", d), expected, "{d}");
    }
    let w = out
        .warnings
        .iter()
        .find(|w| w.starts_with("weibo_posts: "))
        .unwrap();
    assert!(w.contains(&format!("{}..{}", gap.from, gap.to)), "{w}");
    // Exactly those days are uncovered; the counted days the lookback
    // reached back over stay covered.
    assert_eq!(out.uncovered, [gap, Window::new(gap_end, gap_end)]);
    for d in Window::new(first, gap_end - Duration::days(1)).days() {
        assert_eq!(dep.covered[&d], !gap.contains(d), "{d}");
    }
    // The next morning resumes counting.
    dep.run_at(cst(gap_end + Duration::days(1), 6, 30), first);
    assert_eq!(
        dep.day_value("weibo_posts", gap_end),
        Some(f64::from(posts_on(UID, gap_end)))
    );
}

#[test]
fn a_token_of_another_account_is_refused_naming_both_uids() {
    let sim = sim();
    let settings = json!({"uid": UID, "access_token": ODD_TOKEN, "api_base": sim.base_url()});
    let mut p = Harness::<Weibo>::create(settings, TestHost::live()).unwrap();
    let e = p
        .collect(&CollectRequest::new(
            "w",
            Window::new(day(2026, 11, 1), today()),
        ))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(
        e.message.contains(&format!(
            "belongs to Weibo uid {ODD_UID}, not to the configured uid {UID}"
        )),
        "{}",
        e.message
    );
    assert!(!e.message.contains(ODD_TOKEN), "{}", e.message);
    assert_eq!(sim.calls(Endpoint::UserTimeline), 0, "nothing read with it");
    assert_eq!(sim.calls(Endpoint::UsersShow), 0);
}

#[test]
fn the_expiry_is_reported_and_warned_about_within_seven_days() {
    let issued = now() - Duration::days(3);
    let sim = WeiboSim::start_blocking(vec![
        Account::new(UID, TOKEN).token_lifetime(issued, 8 * 86_400 + 3600),
    ])
    .unwrap();
    sim.set_now(now());
    let mut p = plugin(&sim, json!({"indicators": ["weibo_followers"]}));
    let out = collect(&mut p, today(), today());
    // Five days and an hour left: within the default 7.
    assert_eq!(
        out.warnings,
        [format!(
            "access token of uid {UID}: expires 2026-12-02 11:00 CST (in 5 days): have the account authorize the app again and update the secret before then (Weibo gives no refresh token)"
        )]
    );
    let expires = out.state.as_ref().unwrap()["token_expires_at"].clone();
    assert_eq!(expires, json!("2026-12-02T03:00:00Z"));

    let mut p = plugin(
        &sim,
        json!({"indicators": ["weibo_followers"], "expiry_warning_days": 3}),
    );
    let out = collect(&mut p, today(), today());
    assert_eq!(
        out.warnings,
        [format!(
            "access token of uid {UID}: valid until 2026-12-02 11:00 CST (5 days left)"
        )]
    );

    // Once expired, the run fails at the first call, saying what to do.
    sim.set_now(now() + Duration::days(6));
    let _ = p.host().clone().at(now() + Duration::days(6));
    let e = p
        .collect(&CollectRequest::new("w", Window::new(today(), today())))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(
        e.message
            .contains("POST /oauth2/get_token_info: HTTP 403: error 21327"),
        "{}",
        e.message
    );
}

#[test]
fn engagement_is_per_post_as_of_the_last_run_that_saw_it() {
    let mut dep = Deployment::new(
        sim(),
        json!({"indicators": ["weibo_reposts", "weibo_comments", "weibo_likes"]}),
    );
    let (from, to) = (day(2026, 8, 1), day(2026, 8, 10));
    let mut at = cst(from, 0, 30);
    let mut last_seen: BTreeMap<u64, DateTime<Utc>> = BTreeMap::new();
    while at < cst(to + Duration::days(3), 0, 0) {
        let out = dep.run_at(at, from);
        for o in out
            .observations
            .iter()
            .filter(|o| o.indicator == "weibo_likes")
        {
            last_seen.insert(o.entity.parse().unwrap(), at);
        }
        at += Duration::hours(6);
    }
    let mut checked = 0;
    for d in Window::new(from, to).days() {
        for post in day_posts(UID, d) {
            let Some(seen_at) = last_seen.get(&post.id) else {
                continue;
            };
            let (r, c, l) = engagement(&post, *seen_at);
            let key = |i: &str| (i.to_owned(), post.id.to_string(), d);
            assert_eq!(dep.store.get(&key("weibo_reposts")), Some(&(r as f64)));
            assert_eq!(dep.store.get(&key("weibo_comments")), Some(&(c as f64)));
            assert_eq!(dep.store.get(&key("weibo_likes")), Some(&(l as f64)));
            checked += 1;
        }
    }
    let all: u32 = Window::new(from, to).days().map(|d| posts_on(UID, d)).sum();
    assert!(
        checked * 10 >= all * 8,
        "most posts seen: {checked} of {all}"
    );
    // Values as of collection grow: a post seen in several runs holds its latest.
    assert!(dep.store.values().any(|v| *v > 0.0));
}

#[test]
fn a_deleted_post_is_detected_and_counted_days_stay() {
    let mut dep = Deployment::new(sim(), json!({"indicators": ["weibo_posts"]}));
    let d0 = day(2026, 5, 10);
    for i in 0..4 {
        dep.run_at(cst(d0 + Duration::days(i), 6, 30), d0);
    }
    let counted = d0 + Duration::days(1);
    assert_eq!(
        dep.day_value("weibo_posts", counted),
        Some(f64::from(posts_on(UID, counted)))
    );
    // A post of a counted day is deleted: the day keeps its number, and the
    // next run says posts went.
    let victim = day_posts(UID, counted)[0].id;
    assert!(posts_on(UID, counted) > 0);
    dep.sim.delete_post(victim);
    dep.run_at(cst(d0 + Duration::days(4), 6, 30), d0);
    assert_eq!(
        dep.day_value("weibo_posts", counted),
        Some(f64::from(posts_on(UID, counted)))
    );
    let w = dep
        .warnings
        .iter()
        .find(|w| w.starts_with("users/show: "))
        .cloned();
    assert!(
        w.as_deref().is_some_and(|w| w.contains("deleted")),
        "{:?}",
        dep.warnings
    );
}
