//! The `wechat` plugin against the WeChat simulator (real HTTP on 127.0.0.1),
//! with the test kit's fixed clock: 2026-11-27 02:00 UTC, 10:00 in Beijing, so
//! the latest final day is 2026-11-26 (final from 08:00).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
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

/// indicator -> day -> value, of the observations without entity.
fn table(out: &CollectResponse) -> BTreeMap<String, BTreeMap<NaiveDate, f64>> {
    let mut t: BTreeMap<String, BTreeMap<NaiveDate, f64>> = BTreeMap::new();
    for o in out.observations.iter().filter(|o| o.entity.is_empty()) {
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

    // Hand-checked against the spans: 92 days one by one, 14 weeks three times.
    assert_eq!(s.calls("getarticletotaldetail"), 92);
    assert_eq!(s.calls("getbizsummary"), 14);
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
    assert_eq!(out.state.as_ref().unwrap()["calls"], 135);
    assert!(
        p.host()
            .logs()
            .iter()
            .any(|(_, l)| l == "wechat: 135 API calls"),
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
    assert_eq!(again.state.unwrap()["calls"], 134);
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
    // Two 7-day calls got through: July 1 to 14.
    let readers: BTreeMap<_, _> = want["wechat_readers"]
        .iter()
        .filter(|(d, _)| **d <= day(2026, 7, 14))
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
          6131e82a-745e9ad5-0f2d17ff): collected up to 2026-07-14, 2026-07-15..2026-09-30 left for the next run"
        ]
    );
    assert_eq!(
        out.uncovered,
        [Window::new(day(2026, 7, 15), day(2026, 9, 30))]
    );
    let state = out.state.unwrap();
    assert_eq!(
        state["incomplete"],
        json!({"getbizsummary": {"from": "2026-07-15", "to": "2026-09-30"}})
    );

    // The next scheduled run (window from yesterday) cannot deliver those
    // days, so it says how to fetch them.
    s.faults().clear_quotas();
    let later = p
        .collect(&request(day(2026, 11, 26), day(2026, 11, 27), Some(state)))
        .unwrap();
    assert!(
        later.warnings.iter().any(|w| w.contains(
            "getbizsummary: 2026-07-15..2026-09-30 are missing since the quota ran out on an earlier run: \
             read them with `tallyd collect --source wechat-county --from 2026-07-15 --to 2026-09-30`"
        )),
        "{:?}",
        later.warnings
    );
    // A backfill of those days clears it.
    let backfill = p
        .collect(&request(day(2026, 7, 15), day(2026, 9, 30), later.state))
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
    // The test clock reads 2026-11-27 10:00 CST: not before midnight.
    let midnight = "2026-11-27T16:00:00Z"
        .parse::<chrono::DateTime<chrono::Utc>>()
        .unwrap();
    assert_eq!(e.retry_after, Some(midnight));
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
    // And today, not final either.
    assert_eq!(out.uncovered_days(), [latest, to]);
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
    assert_eq!(out.uncovered_days(), [to]);
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
    // The days before data_start are the account's (it did not exist), today
    // is not final.
    assert_eq!(out.uncovered_days(), [day(2026, 11, 27)]);

    // Today alone: nothing is final, nothing is asked.
    let before = s.total_calls();
    let out = p
        .collect(&request(day(2026, 11, 27), day(2026, 11, 27), None))
        .unwrap();
    assert!(out.observations.is_empty());
    assert_eq!(out.uncovered_days(), [day(2026, 11, 27)]);
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
    // Readers are asked for, and the platform has none before its data start.
    assert_eq!(out.uncovered, [Window::new(from, day(2025, 10, 31))]);
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

fn beijing(d: NaiveDate, h: u32, m: u32) -> DateTime<Utc> {
    chrono_tz::Asia::Shanghai
        .from_local_datetime(&d.and_hms_opt(h, m, 0).unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn a_run_at_two_thirty_leaves_yesterday_out_and_a_run_after_eight_fills_it() {
    let s = start();
    let mut p = plugin(&s, json!({}));
    let today = day(2026, 11, 27);
    let yesterday = day(2026, 11, 26);
    // The platform and the daemon both at 02:30 in Beijing.
    let early = beijing(today, 2, 30);
    s.faults().set_now(early);
    p.host().clone().at(early);
    let (out, uncovered) = p
        .collect_uncovered(&request(day(2026, 11, 20), today, None))
        .unwrap();
    assert_eq!(out.warnings, Vec::<String>::new());
    let t = table(&out);
    // Yesterday is neither 0 nor anything else: not there at all, and the
    // answer says the run did not cover it, nor today.
    assert!(
        out.observations.iter().all(|o| o.day < yesterday),
        "{:?}",
        out.observations
    );
    assert_eq!(t, expected(day(2026, 11, 20), day(2026, 11, 25)));
    assert_eq!(uncovered, [yesterday, today]);
    let state = out.state.unwrap();
    assert!(state.get("pending").is_none(), "{state}");
    assert!(
        p.host().logs().iter().any(|(_, l)| l
            == "wechat: 2026-11-26..2026-11-27 not final before 08:00 the next day (China Standard Time); \
                left uncovered for a later run"),
        "{:?}",
        p.host().logs()
    );

    // 09:30: the daemon's next window starts no later than the uncovered
    // day (with lookback_days = 0 too), and the day is final now.
    let later = beijing(today, 9, 30);
    s.faults().set_now(later);
    p.host().clone().at(later);
    let (out, uncovered) = p
        .collect_uncovered(&request(yesterday, today, Some(state.clone())))
        .unwrap();
    assert_eq!(out.warnings, Vec::<String>::new());
    assert_eq!(table(&out), expected(yesterday, yesterday));
    assert_eq!(uncovered, [today]);

    // A window of today alone (a manual `tallyd collect --from --to`) has
    // nothing to say about yesterday: no warning, no carried-over list.
    let out = p.collect(&request(today, today, Some(state))).unwrap();
    assert_eq!(out.warnings, Vec::<String>::new());
    assert_eq!(out.uncovered_days(), [today]);
}

#[test]
fn a_day_over_in_the_daemons_zone_but_not_in_china_is_uncovered_like_today() {
    let s = start();
    let mut p = plugin(&s, json!({}));
    // 03:00 on the 27th at UTC+12 is 23:00 on the 26th in Beijing: the
    // daemon's yesterday is the platform's today.
    let at = chrono::FixedOffset::east_opt(12 * 3600)
        .unwrap()
        .with_ymd_and_hms(2026, 11, 27, 3, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    s.faults().set_now(at);
    p.host().clone().at(at);
    let mut req = request(day(2026, 11, 22), day(2026, 11, 27), None);
    req.timezone = "Etc/GMT-12".to_owned();
    let (out, uncovered) = p.collect_uncovered(&req).unwrap();
    assert_eq!(uncovered, [day(2026, 11, 26), day(2026, 11, 27)]);
    assert!(
        out.observations.iter().all(|o| o.day <= day(2026, 11, 25)),
        "{:?}",
        out.observations
    );
}

#[test]
fn a_refused_thirty_day_span_is_halved_until_the_platform_accepts_it() {
    let s = start();
    // The platform takes 4 days at most; the source was told 30.
    s.faults().set_max_span("getbizsummary", 4);
    let mut p = plugin(
        &s,
        json!({"indicators": ["wechat_readers", "wechat_shares"], "spans": {"getbizsummary": 30}}),
    );
    let (from, to) = (day(2026, 10, 27), day(2026, 11, 25));
    let out = p.collect(&request(from, to, None)).unwrap();
    let t = table(&out);
    assert_eq!(t["wechat_readers"], expected(from, to)["wechat_readers"]);
    let shares: BTreeMap<NaiveDate, f64> = days(from, to)
        .into_iter()
        .map(|d| (d, f64::from(sim::engagement_on(APPID, d).share_user)))
        .collect();
    assert_eq!(t["wechat_shares"], shares);
    // 30, 15 and 8 days refused; then 4 days at a time: 8 calls for 30 days.
    assert_eq!(s.calls("getbizsummary"), 3 + 8);
    assert_eq!(s.max_span_seen("getbizsummary"), 30);
    assert_eq!(
        out.warnings,
        [
            "getbizsummary: the platform refused 30-day spans (errcode 61501, date range error rid: \
          6131e82a-745e9ad5-0f2d17ff); asked 4 days at a time instead: set spans.getbizsummary = 4 \
          in the source's settings to save the refused calls"
        ]
    );

    // The default span (7) refused too: 7, then 4 days.
    let s = start();
    s.faults().set_max_span("getbizsummary", 5);
    let mut p = plugin(&s, json!({"indicators": ["wechat_readers"]}));
    let out = p.collect(&request(from, to, None)).unwrap();
    assert_eq!(
        table(&out)["wechat_readers"],
        expected(from, to)["wechat_readers"]
    );
    assert_eq!(s.calls("getbizsummary"), 1 + 8);
    assert!(out.warnings[0].starts_with("getbizsummary: the platform refused 7-day spans"));
}

#[test]
fn a_day_refused_even_alone_is_a_warning_not_a_failed_source() {
    let s = start();
    s.faults().set_max_span("getbizsummary", 0);
    let mut p = plugin(
        &s,
        json!({"indicators": ["wechat_readers", "wechat_followers"]}),
    );
    let (from, to) = (day(2026, 11, 20), day(2026, 11, 22));
    let out = p.collect(&request(from, to, None)).unwrap();
    let t = table(&out);
    assert!(!t.contains_key("wechat_readers"), "{t:?}");
    assert_eq!(
        t["wechat_followers"],
        expected(from, to)["wechat_followers"]
    );
    assert_eq!(out.uncovered_days(), days(from, to));
    for d in days(from, to) {
        assert!(
            out.warnings.iter().any(|w| w
                == &format!(
                    "getbizsummary: {d} refused even alone (errcode 61501, date range error rid: \
                     6131e82a-745e9ad5-0f2d17ff): not collected"
                )),
            "{:?}",
            out.warnings
        );
    }
}

#[test]
fn posts_are_split_by_publish_type() {
    let s = start();
    let mut p = plugin(
        &s,
        json!({"indicators": ["wechat_posts", "wechat_posts_mass", "wechat_posts_published"]}),
    );
    let (from, to) = (day(2026, 10, 1), day(2026, 10, 31));
    let out = p.collect(&request(from, to, None)).unwrap();
    assert_eq!(out.warnings, Vec::<String>::new());
    let t = table(&out);
    let (mut mass, mut published) = (0.0, 0.0);
    for d in days(from, to) {
        let n = f64::from(sim::posts_on(APPID, d));
        let (m, pb) = if sim::publish_type_on(APPID, d) == 0 {
            (n, 0.0)
        } else {
            (0.0, n)
        };
        assert_eq!(t["wechat_posts_mass"][&d], m, "{d}");
        assert_eq!(t["wechat_posts_published"][&d], pb, "{d}");
        assert_eq!(t["wechat_posts"][&d], m + pb, "{d}");
        mass += m;
        published += pb;
    }
    // The month has both kinds, so the split is seen.
    assert!(mass > 0.0 && published > 0.0, "{mass} {published}");

    // Before the article statistics, the publication list gives the
    // published ones exactly and nothing of the 群发 ones.
    let (from, to) = (day(2025, 10, 1), day(2025, 10, 31));
    let out = p.collect(&request(from, to, None)).unwrap();
    let t = table(&out);
    assert!(!t.contains_key("wechat_posts_mass"));
    for d in days(from, to) {
        let pb = if sim::publish_type_on(APPID, d) == 1 {
            f64::from(sim::posts_on(APPID, d))
        } else {
            0.0
        };
        assert_eq!(t["wechat_posts_published"][&d], pb, "{d}");
    }
    assert!(
        out.warnings.iter().any(|w| w
            == "getarticletotaldetail: the platform keeps no data before 2025-11-01: \
                wechat_posts_mass not collected for 2025-10-01..2025-10-31"),
        "{:?}",
        out.warnings
    );
}

#[test]
fn engagement_per_day_and_totals_per_article() {
    let s = start();
    let all = [
        "wechat_shares",
        "wechat_likes",
        "wechat_zaikan",
        "wechat_comments",
        "wechat_favourites",
        "wechat_article_readers",
        "wechat_article_shares",
        "wechat_article_likes",
        "wechat_article_zaikan",
        "wechat_article_comments",
        "wechat_article_favourites",
        "wechat_articles_100k",
    ];
    let mut p = plugin(&s, json!({ "indicators": all }));
    let (from, to) = (day(2026, 7, 1), day(2026, 9, 30));
    let yesterday = day(2026, 11, 26);
    let out = p.collect(&request(from, to, None)).unwrap();
    assert_eq!(out.warnings, Vec::<String>::new());

    // Daily figures: getbizsummary's, day by day.
    let t = table(&out);
    for d in days(from, to) {
        let e = sim::engagement_on(APPID, d);
        assert_eq!(t["wechat_shares"][&d], f64::from(e.share_user), "{d}");
        assert_eq!(t["wechat_likes"][&d], f64::from(e.like_user), "{d}");
        assert_eq!(t["wechat_zaikan"][&d], f64::from(e.zaikan_user), "{d}");
        assert_eq!(t["wechat_comments"][&d], f64::from(e.comment_count), "{d}");
        assert_eq!(
            t["wechat_favourites"][&d],
            f64::from(e.collection_user),
            "{d}"
        );
    }

    // Per article, on its publish day: its totals as of the last day the
    // platform follows it (30 days), here all over by yesterday.
    let mut got: BTreeMap<(String, String), (NaiveDate, f64)> = BTreeMap::new();
    for o in out.observations.iter().filter(|o| !o.entity.is_empty()) {
        let old = got.insert((o.indicator.clone(), o.entity.clone()), (o.day, o.value));
        assert!(old.is_none(), "{} {} twice", o.indicator, o.entity);
    }
    let mut articles = 0;
    let mut viral = 0;
    for d in days(from, to) {
        for msgid in sim::msgids_on(APPID, d) {
            articles += 1;
            let last = (d + chrono::Days::new(29)).min(yesterday);
            let total = sim::article_totals_on(APPID, d, &msgid, last);
            let entity = format!("{APPID}:{msgid}");
            let at = |i: &str| got[&(i.to_owned(), entity.clone())];
            assert_eq!(at("wechat_article_readers"), (d, total.read_user as f64));
            assert_eq!(at("wechat_article_shares"), (d, total.share_user as f64));
            assert_eq!(at("wechat_article_likes"), (d, total.like_user as f64));
            assert_eq!(at("wechat_article_zaikan"), (d, total.zaikan_user as f64));
            assert_eq!(
                at("wechat_article_comments"),
                (d, total.comment_count as f64)
            );
            assert_eq!(
                at("wechat_article_favourites"),
                (d, total.collection_user as f64)
            );
            let is_viral = total.read_user >= sim::READS_100K;
            viral += usize::from(is_viral);
            assert_eq!(
                at("wechat_articles_100k"),
                (d, if is_viral { 1.0 } else { 0.0 })
            );
        }
    }
    assert_eq!(got.len(), articles * 7);
    // The quarter has a 10万+ article and ordinary ones.
    assert!(viral > 0 && viral < articles, "{viral} of {articles}");

    // A recent article's totals are those of yesterday, not final yet.
    let recent = day(2026, 11, 20);
    let out = p.collect(&request(recent, recent, None)).unwrap();
    for msgid in sim::msgids_on(APPID, recent) {
        let o = out
            .observations
            .iter()
            .find(|o| o.indicator == "wechat_article_readers" && o.entity.ends_with(&msgid))
            .unwrap();
        assert_eq!(
            o.value,
            sim::article_totals_on(APPID, recent, &msgid, yesterday).read_user as f64
        );
    }
}

#[test]
fn the_new_indicators_are_opt_in_and_spans_are_checked() {
    let s = start();
    let p = plugin(&s, json!({}));
    assert_eq!(
        p.emits(),
        [
            "wechat_posts",
            "wechat_readers",
            "wechat_followers",
            "wechat_new_followers",
            "wechat_cancelled_followers"
        ]
    );
    let e = Harness::<Wechat>::create(
        json!({"appid": APPID, "secret": SECRET, "spans": {"getuserread": 3}}),
        TestHost::new(),
    )
    .err()
    .unwrap();
    assert_eq!(e.kind, ErrorKind::Settings);
    assert!(
        e.message.starts_with("spans.getuserread: unknown endpoint"),
        "{e}"
    );
    let e = Harness::<Wechat>::create(
        json!({"appid": APPID, "secret": SECRET, "spans": {"getbizsummary": 0}}),
        TestHost::new(),
    )
    .err()
    .unwrap();
    assert_eq!(e.message, "spans.getbizsummary: 0 days; must be 1 to 366");
}
