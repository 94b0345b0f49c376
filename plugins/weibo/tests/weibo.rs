//! The `weibo` plugin against the Weibo simulator on 127.0.0.1, in process.
//! Expectations come from the simulator's public data functions
//! (`posts_on`, `post_times`, `followers_on`), not from the plugin.

use chrono::{Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use serde_json::{Value, json};
use tally_plugin::testkit::{Fixture, Harness, TestHost};
use tally_plugin::{CollectRequest, CollectResponse, ErrorKind, Window};
use tally_simulators::weibo::{
    Account, Endpoint, HISTORY_FROM, WeiboSim, counts_as_strings, followers_on, post_times,
    posts_on,
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
fn posts_per_day_over_a_window_with_paging_and_levels_today() {
    let sim = sim();
    let mut p = plugin(&sim, json!({}));
    let from = day(2026, 9, 1);
    let out = collect(&mut p, from, today());
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);

    let expected: Vec<(NaiveDate, f64)> = Window::new(from, today())
        .days()
        .map(|d| (d, f64::from(visible_posts(UID, d))))
        .collect();
    assert_eq!(values(&out, "weibo_posts"), expected);
    let in_window: u32 = expected.iter().map(|(_, n)| *n as u32).sum();
    assert!(
        in_window > 100,
        "the window must need several pages: {in_window}"
    );
    // Newest first, 100 a page, until the page holding the first older post.
    assert_eq!(
        sim.calls(Endpoint::UserTimeline),
        in_window as usize / 100 + 1
    );

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
    let sim = sim();
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
    let mut req = CollectRequest::new("weibo", Window::new(d, d));
    req.timezone = "UTC".into();
    let out = p.collect(&req).unwrap();
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
    let host = TestHost::new().fixture(
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
    let q = &p.host().requests()[0].query;
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
    let sim = sim();
    let mut p = plugin(&sim, json!({}));
    let out = collect(&mut p, day(2026, 11, 1), day(2026, 11, 2));
    assert!(values(&out, "weibo_followers").is_empty());
    assert!(values(&out, "weibo_total_posts").is_empty());
    assert_eq!(values(&out, "weibo_posts").len(), 2);
    assert_eq!(sim.calls(Endpoint::UsersShow), 0);
}

#[test]
fn max_pages_bounds_the_timeline_with_a_warning() {
    let sim = sim();
    let mut p = plugin(&sim, json!({"max_pages": 1, "indicators": ["weibo_posts"]}));
    let from = day(2026, 6, 1);
    let out = collect(&mut p, from, today());
    assert_eq!(sim.calls(Endpoint::UserTimeline), 1);
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    let w = &out.warnings[0];
    assert!(
        w.contains("max_pages = 1") && w.contains("raise max_pages"),
        "{w}"
    );

    // The 100 newest posts reach back into some day; that day may be partial,
    // so only the later days are recorded, each complete.
    let mut seen = 0;
    let mut oldest = today();
    while seen < 100 {
        seen += visible_posts(UID, oldest);
        oldest -= Duration::days(1);
    }
    let oldest = oldest + Duration::days(1);
    let expected: Vec<(NaiveDate, f64)> = Window::new(oldest + Duration::days(1), today())
        .days()
        .map(|d| (d, f64::from(visible_posts(UID, d))))
        .collect();
    assert_eq!(values(&out, "weibo_posts"), expected);
    assert!(w.contains(&format!("{from}..{oldest}")), "{w}");
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
        err.message.contains("/2/statuses/user_timeline.json"),
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
    let p =
        Harness::<Weibo>::create(json!({"uid": 1, "access_token": "t"}), TestHost::new()).unwrap();
    assert_eq!(
        p.emits(),
        ["weibo_posts", "weibo_followers", "weibo_total_posts"]
    );
}
