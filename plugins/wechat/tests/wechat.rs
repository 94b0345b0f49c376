//! The `wechat` plugin against the WeChat simulator (real HTTP on 127.0.0.1),
//! with the test kit's fixed clock: 2026-11-27 02:00 UTC, 10:00 in Beijing, so
//! the latest final day is 2026-11-26.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde_json::{Value, json};
use tally_plugin::testkit::{Harness, TestHost};
use tally_plugin::{CollectRequest, CollectResponse, ErrorKind, Window};
use tally_simulators::wechat::{self as sim, Account, WechatSim};
use tally_wechat::Wechat;

const APPID: &str = "wx1a2b3c4d5e6f7a8b";
const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn start() -> WechatSim {
    let s = WechatSim::start_blocking(vec![Account::new(APPID, SECRET)]);
    s.faults().set_today(day(2026, 11, 27));
    s
}

fn plugin(s: &WechatSim, extra: Value) -> Harness<Wechat> {
    let mut settings = json!({"appid": APPID, "secret": SECRET, "api_base": s.base_url()});
    for (k, v) in extra.as_object().unwrap() {
        settings[k] = v.clone();
    }
    Harness::<Wechat>::create(settings, TestHost::live()).unwrap()
}

fn request(from: NaiveDate, to: NaiveDate, state: Option<Value>) -> CollectRequest {
    let mut r = CollectRequest::new("wechat-county", Window::new(from, to));
    r.state = state;
    r
}

/// indicator -> day -> value
fn table(out: &CollectResponse) -> BTreeMap<String, BTreeMap<NaiveDate, f64>> {
    let mut t: BTreeMap<String, BTreeMap<NaiveDate, f64>> = BTreeMap::new();
    for o in &out.observations {
        let old = t
            .entry(o.indicator.clone())
            .or_default()
            .insert(o.day, o.value);
        assert!(old.is_none(), "{} {} emitted twice", o.indicator, o.day);
    }
    t
}

fn days(from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
    from.iter_days().take_while(|d| *d <= to).collect()
}

/// What the simulator's data says for every indicator and day.
fn expected(from: NaiveDate, to: NaiveDate) -> BTreeMap<String, BTreeMap<NaiveDate, f64>> {
    let mut t: BTreeMap<String, BTreeMap<NaiveDate, f64>> = BTreeMap::new();
    for d in days(from, to) {
        let mut put = |i: &str, v: f64| {
            t.entry(i.to_owned()).or_default().insert(d, v);
        };
        put("wechat_posts", f64::from(sim::posts_on(APPID, d)));
        put("wechat_readers", f64::from(sim::readers_on(APPID, d)));
        put("wechat_followers", sim::followers_on(APPID, d) as f64);
        put(
            "wechat_new_followers",
            f64::from(sim::new_followers_on(APPID, d)),
        );
        put(
            "wechat_cancelled_followers",
            f64::from(sim::cancelled_followers_on(APPID, d)),
        );
    }
    t
}

fn no_secret(text: &str) {
    assert!(!text.contains(SECRET), "secret leaked: {text}");
    assert!(!text.contains("91_"), "access token leaked: {text}");
}

#[test]
fn a_quarter_in_spans_the_platform_accepts() {
    let s = start();
    let mut p = plugin(&s, json!({}));
    let (from, to) = (day(2026, 7, 1), day(2026, 9, 30));
    let out = p.collect(&request(from, to, None)).unwrap();
    assert_eq!(out.warnings, Vec::<String>::new());
    assert_eq!(table(&out), expected(from, to));

    // Hand-checked against the spans: 92 days one by one, 30+30+30+2, 14 weeks twice.
    assert_eq!(s.calls("getarticletotaldetail"), 92);
    assert_eq!(s.calls("getbizsummary"), 4);
    assert_eq!(s.calls("getusercumulate"), 14);
    assert_eq!(s.calls("getusersummary"), 14);
    assert_eq!(s.calls("stable_token"), 1);
    for endpoint in [
        "getarticletotaldetail",
        "getbizsummary",
        "getusercumulate",
        "getusersummary",
    ] {
        assert!(
            s.max_span_seen(endpoint) <= sim::max_span(endpoint).unwrap(),
            "{endpoint}"
        );
    }
    assert_eq!(out.state.as_ref().unwrap()["calls"], 125);
    assert!(
        p.host()
            .logs()
            .iter()
            .any(|(_, l)| l == "wechat: 125 API calls"),
        "{:?}",
        p.host().logs()
    );
    for (_, line) in p.host().logs() {
        no_secret(&line);
    }

    // The same window again: the same numbers, and the token is reused.
    let again = p.collect(&request(from, to, out.state.clone())).unwrap();
    assert_eq!(table(&again), table(&out));
    assert_eq!(s.calls("stable_token"), 1);
    assert_eq!(again.state.unwrap()["calls"], 124);
}

#[test]
fn the_quarter_sums_add_up() {
    // A hand-checkable shape of the numbers: a day's followers are the day
    // before plus the new minus the cancelled.
    let s = start();
    let mut p = plugin(&s, json!({}));
    let out = p
        .collect(&request(day(2026, 10, 1), day(2026, 10, 31), None))
        .unwrap();
    let t = table(&out);
    let f = &t["wechat_followers"];
    let d = day(2026, 10, 15);
    let prev = d.pred_opt().unwrap();
    assert_eq!(
        f[&d] - f[&prev],
        t["wechat_new_followers"][&d] - t["wechat_cancelled_followers"][&d]
    );
}

#[test]
fn a_classic_token_works_too() {
    let s = start();
    let mut p = plugin(
        &s,
        json!({"token_endpoint": "classic", "indicators": ["wechat_readers"]}),
    );
    assert_eq!(p.emits(), ["wechat_readers"]);
    let (from, to) = (day(2026, 11, 1), day(2026, 11, 10));
    let out = p.collect(&request(from, to, None)).unwrap();
    assert_eq!(
        table(&out)["wechat_readers"],
        expected(from, to)["wechat_readers"]
    );
    assert_eq!(table(&out).len(), 1);
    assert_eq!(s.calls("token"), 1);
    assert_eq!(s.calls("stable_token"), 0);
    assert_eq!(s.calls("getusersummary"), 0);
}

#[test]
fn an_expired_or_unknown_token_is_fetched_again_once() {
    let s = start();
    let mut p = plugin(&s, json!({"indicators": ["wechat_followers"]}));
    let (from, to) = (day(2026, 11, 1), day(2026, 11, 14));
    let first = p.collect(&request(from, to, None)).unwrap();
    assert_eq!(s.calls("stable_token"), 1);

    s.faults().expire_tokens();
    let out = p.collect(&request(from, to, None)).unwrap();
    assert_eq!(table(&out), table(&first));
    assert_eq!(s.calls("stable_token"), 2);
    // 2 weeks, plus the call refused with 42001.
    assert_eq!(s.calls("getusercumulate"), 2 + 3);

    s.faults().forget_tokens();
    let out = p.collect(&request(from, to, None)).unwrap();
    assert_eq!(table(&out), table(&first));
    assert_eq!(s.calls("stable_token"), 3);
    assert_eq!(out.state.unwrap()["calls"], 4);
}

#[test]
fn quota_exceeded_keeps_what_was_collected() {
    let s = start();
    s.faults().set_quota("getbizsummary", 2);
    let mut p = plugin(&s, json!({}));
    let (from, to) = (day(2026, 7, 1), day(2026, 9, 30));
    let out = p.collect(&request(from, to, None)).unwrap();
    let t = table(&out);
    let want = expected(from, to);
    // Two 30-day calls got through: July 1 to August 29.
    let readers: BTreeMap<_, _> = want["wechat_readers"]
        .iter()
        .filter(|(d, _)| **d <= day(2026, 8, 29))
        .map(|(d, v)| (*d, *v))
        .collect();
    assert_eq!(t["wechat_readers"], readers);
    // The other endpoints have quotas of their own.
    assert_eq!(t["wechat_posts"], want["wechat_posts"]);
    assert_eq!(t["wechat_followers"], want["wechat_followers"]);
    assert_eq!(
        out.warnings,
        [
            "quota exceeded on getbizsummary (errcode 45009, reach max api daily quota limit rid: \
          6131e82a-745e9ad5-0f2d17ff): collected up to 2026-08-29, 2026-08-30..2026-09-30 left for the next run"
        ]
    );
    let state = out.state.unwrap();
    assert_eq!(
        state["incomplete"],
        json!({"getbizsummary": {"from": "2026-08-30", "to": "2026-09-30"}})
    );

    // The next scheduled run (window from yesterday) cannot deliver those
    // days, so it says how to fetch them.
    s.faults().clear_quotas();
    let later = p
        .collect(&request(day(2026, 11, 26), day(2026, 11, 27), Some(state)))
        .unwrap();
    assert!(
        later.warnings.iter().any(|w| w.contains(
            "getbizsummary: 2026-08-30..2026-09-30 are missing since the quota ran out on an earlier run: \
             read them with `tallyd collect --source wechat-county --from 2026-08-30 --to 2026-09-30`"
        )),
        "{:?}",
        later.warnings
    );
    // A backfill of those days clears it.
    let backfill = p
        .collect(&request(day(2026, 8, 30), day(2026, 9, 30), later.state))
        .unwrap();
    assert_eq!(backfill.warnings, Vec::<String>::new());
    assert_eq!(backfill.state.unwrap()["incomplete"], json!({}));
}

#[test]
fn quota_exceeded_before_anything_is_collected_fails_the_run() {
    let s = start();
    s.faults().set_quota("getusersummary", 0);
    let mut p = plugin(&s, json!({"indicators": ["wechat_new_followers"]}));
    let e = p
        .collect(&request(day(2026, 11, 1), day(2026, 11, 10), None))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::RateLimited);
    assert_eq!(
        e.message,
        "daily API quota used up (45009, reach max api daily quota limit) on getusersummary: \
         nothing collected, it resets at 00:00 CST"
    );
}

#[test]
fn delayed_days_are_not_stored_and_read_again() {
    let s = start();
    s.faults().set_delay_latest(true);
    let mut p = plugin(&s, json!({}));
    let (from, to) = (day(2026, 11, 20), day(2026, 11, 27));
    let out = p.collect(&request(from, to, None)).unwrap();
    let t = table(&out);
    let latest = day(2026, 11, 26);
    assert!(!t["wechat_readers"].contains_key(&latest));
    assert!(!t["wechat_posts"].contains_key(&latest));
    assert_eq!(t["wechat_readers"].len(), 6);
    // User analytics have no is_delay.
    assert!(t["wechat_followers"].contains_key(&latest));
    assert_eq!(
        out.warnings,
        [
            "getarticletotaldetail: 2026-11-26 not final yet (is_delay); not stored, read again by the next run",
            "getbizsummary: 2026-11-26 not final yet (is_delay); not stored, read again by the next run",
        ]
    );
    let state = out.state.unwrap();
    assert_eq!(
        state["delayed"],
        json!({"getarticletotaldetail": ["2026-11-26"], "getbizsummary": ["2026-11-26"]})
    );

    // The next day, the day is final and the next window (lookback) covers it.
    s.faults().set_delay_latest(false);
    let out = p
        .collect(&request(
            day(2026, 11, 25),
            day(2026, 11, 27),
            Some(state.clone()),
        ))
        .unwrap();
    assert_eq!(out.warnings, Vec::<String>::new());
    assert_eq!(
        table(&out)["wechat_readers"][&latest],
        f64::from(sim::readers_on(APPID, latest))
    );
    assert_eq!(out.state.unwrap()["delayed"], json!({}));

    // A window that does not cover it keeps it and says how to read it.
    let out = p
        .collect(&request(day(2026, 11, 27), day(2026, 11, 27), Some(state)))
        .unwrap();
    assert!(out.warnings[0].starts_with(
        "getarticletotaldetail: 2026-11-26..2026-11-26 were not final on an earlier run (is_delay)"
    ));
    assert_eq!(
        out.state.unwrap()["delayed"]["getbizsummary"],
        json!(["2026-11-26"])
    );
}

#[test]
fn the_window_is_clipped_to_yesterday_and_data_start() {
    let s = start();
    let mut p = plugin(&s, json!({"data_start": "2026-11-20"}));
    let out = p
        .collect(&request(day(2026, 11, 1), day(2026, 11, 27), None))
        .unwrap();
    assert_eq!(out.warnings, Vec::<String>::new());
    assert_eq!(table(&out), expected(day(2026, 11, 20), day(2026, 11, 26)));

    // Today alone: nothing is final, nothing is asked.
    let before = s.total_calls();
    let out = p
        .collect(&request(day(2026, 11, 27), day(2026, 11, 27), None))
        .unwrap();
    assert!(out.observations.is_empty());
    assert_eq!(s.total_calls(), before);
}

#[test]
fn before_the_article_statistics_posts_come_from_the_publication_list() {
    let s = start();
    let mut p = plugin(&s, json!({}));
    let (from, to) = (day(2025, 10, 25), day(2025, 11, 3));
    let out = p.collect(&request(from, to, None)).unwrap();
    let t = table(&out);
    let want = expected(from, to);
    // freepublish lists only what was published without 群发 notification.
    for d in days(from, day(2025, 10, 31)) {
        let listed = if sim::publish_type_on(APPID, d) == 1 {
            sim::posts_on(APPID, d)
        } else {
            0
        };
        assert_eq!(t["wechat_posts"][&d], f64::from(listed), "{d}");
    }
    for d in days(day(2025, 11, 1), to) {
        assert_eq!(t["wechat_posts"][&d], want["wechat_posts"][&d], "{d}");
    }
    assert_eq!(t["wechat_readers"].len(), 3);
    assert_eq!(t["wechat_followers"], want["wechat_followers"]);
    assert_eq!(
        out.warnings,
        [
            "wechat_posts for 2025-10-25..2025-10-31 come from freepublish/batchget (the article statistics start on \
             2025-11-01); it lists only articles published without 群发 notification, so these counts may be low",
            "getbizsummary: the platform keeps no data before 2025-11-01: wechat_readers not collected for 2025-10-25..2025-10-31",
        ]
    );
    assert!(s.calls("batchget") >= 1);
}

#[test]
fn platform_failures_name_the_endpoint_and_no_secret() {
    let s = start();
    let mut p = plugin(
        &s,
        json!({"indicators": ["wechat_readers"], "timeout_ms": 300}),
    );
    let w = (day(2026, 11, 1), day(2026, 11, 5));

    s.faults().fail_next(1);
    let e = p.collect(&request(w.0, w.1, None)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Upstream);
    assert!(
        e.message.starts_with("stable_token: HTTP 502: \"<html>"),
        "{e}"
    );
    no_secret(&e.message);

    p.collect(&request(w.0, w.1, None)).unwrap();
    s.faults().malformed_next(1);
    let e = p.collect(&request(w.0, w.1, None)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Upstream);
    assert!(
        e.message
            .starts_with("getbizsummary: the answer is not valid JSON (EOF while parsing"),
        "{e}"
    );
    no_secret(&e.message);

    s.faults().set_slow_ms(2_000);
    let e = p.collect(&request(w.0, w.1, None)).unwrap_err();
    s.faults().set_slow_ms(0);
    assert_eq!(e.kind, ErrorKind::Upstream);
    assert!(e.message.starts_with("getbizsummary: no answer: "), "{e}");
    no_secret(&e.message);
}

#[test]
fn refused_credentials_say_what_to_check() {
    let s = start();
    let mut p = Harness::<Wechat>::create(
        json!({"appid": APPID, "secret": "wrong-secret-value-0000", "api_base": s.base_url()}),
        TestHost::live(),
    )
    .unwrap();
    let e = p
        .collect(&request(day(2026, 11, 1), day(2026, 11, 5), None))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(e.message.contains("errcode 40125"), "{e}");
    assert!(e.message.contains("check appid and secret"), "{e}");
    assert!(!e.message.contains("wrong-secret-value-0000"), "{e}");

    let mut p = Harness::<Wechat>::create(
        json!({"appid": "wx0000000000000000", "secret": SECRET, "api_base": s.base_url()}),
        TestHost::live(),
    )
    .unwrap();
    let e = p
        .collect(&request(day(2026, 11, 1), day(2026, 11, 5), None))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(e.message.contains("errcode 40013"), "{e}");
    no_secret(&e.message);

    s.faults().set_blocked_ip(Some("61.172.68.219"));
    let mut p = plugin(&s, json!({}));
    let e = p
        .collect(&request(day(2026, 11, 1), day(2026, 11, 5), None))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert_eq!(
        e.message,
        "stable_token: errcode 40164: this server's IP 61.172.68.219 is not in the account's IP whitelist; \
         add 61.172.68.219 to the IP白名单 (设置与开发 → 基本配置), changes take 5-10 minutes"
    );
}

#[test]
fn settings_are_checked() {
    let e = Harness::<Wechat>::create(
        json!({"appid": APPID, "secret": SECRET, "indicators": ["wechat_views"]}),
        TestHost::new(),
    )
    .err()
    .unwrap();
    assert_eq!(e.kind, ErrorKind::Settings);
    assert!(
        e.message
            .starts_with("indicators[0]: unknown indicator \"wechat_views\""),
        "{e}"
    );
    let e = Harness::<Wechat>::create(
        json!({"appid": APPID, "secret": SECRET, "token_endpoint": "fast"}),
        TestHost::new(),
    )
    .err()
    .unwrap();
    assert!(
        e.message
            .starts_with("token_endpoint: unknown variant `fast`"),
        "{e}"
    );
    let e = Harness::<Wechat>::create(json!({"appid": APPID, "secret": ""}), TestHost::new())
        .err()
        .unwrap();
    assert!(e.message.starts_with("secret: empty"), "{e}");
}
