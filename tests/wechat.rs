//! The real daemon with the real `wechat` plugin against the WeChat simulator:
//! a quarter collected from `backfill_from`, summed in `/api/v1/summary` to the
//! totals of the simulator's data functions, days stored only once final
//! (08:00 the next day), and platform failures shown in `/api/v1/sources`
//! without the secret.
//!
//! The daemon has no fake clock, so the finality check reads the real one:
//! before 08:00 in Beijing yesterday must be absent, from then on present.

use chrono::{Datelike, NaiveDate, Timelike};
use tally_simulators::wechat::{self as sim, Account, WechatSim};

use crate::support::*;

const APPID: &str = "wx5e6f7a8b1a2b3c4d";
const SECRET: &str = "fedcba9876543210fedcba9876543210";
const API_TOKEN: &str = "wechat-test-api-token";

/// The last quarter that is over (in China Standard Time), as (label, first, last day).
fn last_complete_quarter() -> (String, NaiveDate, NaiveDate) {
    let today = sim::today_cst(chrono::Utc::now());
    let this_start =
        NaiveDate::from_ymd_opt(today.year(), (today.month0() / 3) * 3 + 1, 1).unwrap();
    let last = this_start.pred_opt().unwrap();
    let first = NaiveDate::from_ymd_opt(last.year(), (last.month0() / 3) * 3 + 1, 1).unwrap();
    assert!(
        first >= sim::NEW_DATA_START,
        "this test needs a clock after 2026-04-01 (the article statistics start on 2025-11-01)"
    );
    let label = format!("{}-Q{}", last.year(), last.month0() / 3 + 1);
    (label, first, last)
}

/// The last day whose WeChat statistics are final now (08:00 the next day, CST).
fn last_final_day() -> NaiveDate {
    let now = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Shanghai);
    let back = if now.hour() >= 8 { 1 } else { 2 };
    now.date_naive() - chrono::Days::new(back)
}

/// The days with observations of `indicator` for `unit` in `period`.
fn days_stored(d: &TestDaemon, unit: &str, indicator: &str, period: &str) -> Vec<String> {
    let e = d.get_json(&format!(
        "/api/v1/observations?unit={unit}&indicator={indicator}&period={period}"
    ));
    let mut days: Vec<String> = e["observations"]
        .as_array()
        .unwrap_or_else(|| panic!("{e}"))
        .iter()
        .map(|o| o["day"].as_str().unwrap().to_owned())
        .collect();
    days.sort();
    days.dedup();
    days
}

fn run_now(d: &TestDaemon, source: &str) -> String {
    let url = format!("{}/api/v1/sources/{source}/run", d.base);
    let (status, report) = post(&url, &[("Authorization", &format!("Bearer {API_TOKEN}"))])
        .unwrap_or_else(|e| panic!("POST {url}: {e}\n{}", d.log()));
    assert_eq!(status, 200, "{report}");
    report
}

#[test]
fn a_quarter_from_the_wechat_api_adds_up_and_failures_keep_the_secret() {
    let wechat = WechatSim::start_blocking(vec![Account::new(APPID, SECRET)]);
    let (label, first, last) = last_complete_quarter();

    let t = TestDir::new(&[bundled_plugin("tally_wechat")]);
    let dir = t.dir.as_path();
    let plugins = &t.plugins;
    let cfg = TestConfig::new(dir, plugins)
        .daemon(r#"api_token = "${env:TALLY_TEST_API_TOKEN}""#)
        .county()
        .indicator("wechat_posts", "微信公众号发文篇数", "count", "篇")
        .indicator("wechat_readers", "微信公众号阅读人数", "count", "人")
        .indicator("wechat_followers", "微信公众号粉丝数", "level", "人")
        .indicator(
            "wechat_new_followers",
            "微信公众号新增粉丝数",
            "count",
            "人",
        )
        .indicator(
            "wechat_cancelled_followers",
            "微信公众号取消关注人数",
            "count",
            "人",
        )
        .indicator(
            "wechat_posts_mass",
            "微信公众号群发篇数（已通知）",
            "count",
            "篇",
        )
        .indicator(
            "wechat_posts_published",
            "微信公众号发布篇数（未通知）",
            "count",
            "篇",
        )
        .indicator(
            "wechat_shares",
            "微信公众号分享人次（按日累加）",
            "count",
            "人次",
        )
        .indicator(
            "wechat_article_readers",
            "微信公众号文章累计阅读人数（按发文日）",
            "level",
            "人",
        )
        .indicator(
            "wechat_articles_100k",
            "微信公众号阅读10万+文章篇数（按阅读人数）",
            "level",
            "篇",
        )
        .toml(&format!(
            r#"
[[sources]]
id = "wechat-county"
plugin = "wechat"
unit = "county"
schedule = "0 0 3 1 1 *"
timeout = "60s"
backfill_from = "{first}"
[sources.settings]
appid = "{APPID}"
secret = "${{env:TALLY_TEST_WECHAT_SECRET}}"
api_base = "{api}"
indicators = ["wechat_posts", "wechat_readers", "wechat_followers", "wechat_new_followers",
              "wechat_cancelled_followers", "wechat_posts_mass", "wechat_posts_published",
              "wechat_shares", "wechat_article_readers", "wechat_articles_100k"]
"#,
            api = wechat.base_url(),
        ));
    let port = cfg.port();
    let config = cfg.write();
    let d = TestDaemon::start_with_env(
        &config,
        port,
        &[
            ("TALLY_TEST_WECHAT_SECRET", SECRET),
            ("TALLY_TEST_API_TOKEN", API_TOKEN),
        ],
    );
    // Never succeeded, so it runs at start over backfill_from..today.
    let final_before = last_final_day();
    d.wait_for("the start-up run of wechat-county", 90, |d| {
        d.runs("wechat-county", "success") >= 1
    });
    let final_after = last_final_day();

    // The totals, from the simulator's data functions.
    let days: Vec<NaiveDate> = first.iter_days().take_while(|d| *d <= last).collect();
    let sum = |f: fn(&str, NaiveDate) -> u32| -> f64 {
        days.iter().map(|d| f64::from(f(APPID, *d))).sum()
    };
    let summary = d.get_json(&format!("/api/v1/summary?period={label}"));
    assert_eq!(
        value(&summary, "county", "wechat_posts"),
        sum(sim::posts_on)
    );
    assert_eq!(
        value(&summary, "county", "wechat_readers"),
        sum(sim::readers_on)
    );
    assert_eq!(
        value(&summary, "county", "wechat_new_followers"),
        sum(sim::new_followers_on)
    );
    assert_eq!(
        value(&summary, "county", "wechat_cancelled_followers"),
        sum(sim::cancelled_followers_on)
    );
    assert_eq!(
        value(&summary, "county", "wechat_followers"),
        sim::followers_on(APPID, last) as f64
    );
    // The 群发/发布 split adds up to the posts; the daily shares are the
    // platform's; each article counts with its total as of the last final day
    // (the platform follows it 30 days), on its publish day.
    assert_eq!(
        value(&summary, "county", "wechat_posts_mass")
            .as_f64()
            .unwrap()
            + value(&summary, "county", "wechat_posts_published")
                .as_f64()
                .unwrap(),
        sum(sim::posts_on)
    );
    let mass: f64 = days
        .iter()
        .filter(|d| sim::publish_type_on(APPID, **d) == 0)
        .map(|d| f64::from(sim::posts_on(APPID, *d)))
        .sum();
    assert_eq!(value(&summary, "county", "wechat_posts_mass"), mass);
    let shares: f64 = days
        .iter()
        .map(|d| f64::from(sim::engagement_on(APPID, *d).share_user))
        .sum();
    assert_eq!(value(&summary, "county", "wechat_shares"), shares);
    if final_before == final_after {
        let (mut reads, mut viral) = (0.0, 0.0);
        for d in &days {
            let last = (*d + chrono::Days::new(29)).min(final_after);
            for msgid in sim::msgids_on(APPID, *d) {
                let r = sim::article_totals_on(APPID, *d, &msgid, last).read_user;
                reads += r as f64;
                viral += if r >= sim::READS_100K { 1.0 } else { 0.0 };
            }
        }
        assert_eq!(value(&summary, "county", "wechat_article_readers"), reads);
        assert_eq!(value(&summary, "county", "wechat_articles_100k"), viral);

        // Yesterday is stored only once final, and then like any other day;
        // the day before always is.
        let yesterday = sim::today_cst(chrono::Utc::now()) - chrono::Days::new(1);
        let before = yesterday - chrono::Days::new(1);
        for indicator in ["wechat_readers", "wechat_new_followers", "wechat_posts"] {
            let stored = days_stored(&d, "county", indicator, &format!("{before}..{yesterday}"));
            let want: Vec<String> = before
                .iter_days()
                .take_while(|x| *x <= final_after)
                .map(|x| x.to_string())
                .collect();
            assert_eq!(stored, want, "{indicator}, last final day {final_after}");
        }
    }

    // No call asked more days than the platform allows.
    for endpoint in [
        "getarticletotaldetail",
        "getbizsummary",
        "getusercumulate",
        "getusersummary",
    ] {
        assert!(
            wechat.max_span_seen(endpoint) <= sim::max_span(endpoint).unwrap(),
            "{endpoint}: {}",
            wechat.max_span_seen(endpoint)
        );
    }
    assert_eq!(wechat.calls("stable_token"), 1);
    // The run record counts the API calls the run made: every call the
    // simulator answered so far came from that one run.
    let calls = d.source("wechat-county")["last_run"]["http_requests"].clone();
    assert_eq!(calls.as_u64(), Some(wechat.total_calls()), "{calls}");

    // An expired token is fetched again without failing the run.
    wechat.faults().expire_tokens();
    let report = run_now(&d, "wechat-county");
    assert_eq!(d.runs("wechat-county", "error"), 0, "{report}");
    assert_eq!(wechat.calls("stable_token"), 2);

    // The daily quota is used up everywhere: the run fails, saying so.
    for endpoint in [
        "getarticletotaldetail",
        "getbizsummary",
        "getusercumulate",
        "getusersummary",
    ] {
        wechat.faults().set_quota(endpoint, 0);
    }
    run_now(&d, "wechat-county");
    let source = d.source("wechat-county");
    let error = source["last_error"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(
            "daily API quota used up (45009, reach max api daily quota limit) on \
             getarticletotaldetail, getbizsummary, getusercumulate, getusersummary"
        ),
        "{source:#}"
    );
    wechat.faults().clear_quotas();

    // The server's IP is not whitelisted: the error names it.
    wechat.faults().set_blocked_ip(Some("61.172.68.219"));
    run_now(&d, "wechat-county");
    let source = d.source("wechat-county");
    let error = source["last_error"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("IP 61.172.68.219 is not in the account's IP whitelist"),
        "{source:#}"
    );

    // Neither the secret nor an access token anywhere.
    let sources = d.get("/api/v1/sources").1;
    for text in [sources, d.log()] {
        assert!(!text.contains(SECRET), "secret leaked:\n{text}");
        assert!(!text.contains("91_"), "access token leaked:\n{text}");
    }
}

/// A zone where it is now between 03:00 and 03:59, as `Etc/GMT∓N`.
fn zone_at_three_in_the_morning() -> chrono_tz::Tz {
    zone_at(3)
}

/// A zone where it is now between `hour`:00 and `hour`:59, as `Etc/GMT∓N`.
fn zone_at(hour: i64) -> chrono_tz::Tz {
    let utc_hour = i64::from(chrono::Utc::now().hour());
    let mut offset = (hour - utc_hour).rem_euclid(24);
    if offset > 11 {
        offset -= 24;
    }
    // Etc/GMT signs are POSIX's, the other way round: Etc/GMT-3 is UTC+3.
    let name = match offset {
        0 => "Etc/UTC".to_owned(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    };
    name.parse().unwrap()
}

#[test]
fn a_daemon_run_before_eight_in_its_zone_leaves_yesterday_out() {
    // The daemon has no fake clock: its zone is chosen so that its run is at
    // about 03:00 local time, when yesterday is not final there.
    let zone = zone_at_three_in_the_morning();
    let wechat = WechatSim::start_blocking(vec![Account::new(APPID, SECRET)]);
    let now = chrono::Utc::now().with_timezone(&zone);
    assert!(now.hour() < 8, "{now}");
    let yesterday = now.date_naive() - chrono::Days::new(1);
    let before = yesterday - chrono::Days::new(1);
    let from = yesterday - chrono::Days::new(6);

    let t = TestDir::new(&[bundled_plugin("tally_wechat")]);
    let dir = t.dir.as_path();
    let plugins = &t.plugins;
    let cfg = TestConfig::new(dir, plugins)
        .daemon(&format!(r#"timezone = "{}""#, zone.name()))
        .county()
        .indicator(
            "wechat_readers",
            "微信公众号图文阅读人次（每日阅读人数按日累加）",
            "count",
            "人次",
        )
        .indicator(
            "wechat_new_followers",
            "微信公众号新增粉丝数",
            "count",
            "人",
        )
        .toml(&format!(
            r#"
[[sources]]
id = "wechat-county"
plugin = "wechat"
unit = "county"
schedule = "0 0 3 1 1 *"
backfill_from = "{from}"
lookback_days = 0
[sources.settings]
appid = "{APPID}"
secret = "${{env:TALLY_TEST_WECHAT_SECRET}}"
api_base = "{api}"
indicators = ["wechat_readers", "wechat_new_followers"]
"#,
            api = wechat.base_url(),
        ));
    let port = cfg.port();
    let config = cfg.write();
    let d = TestDaemon::start_with_env(&config, port, &[("TALLY_TEST_WECHAT_SECRET", SECRET)]);
    d.wait_for("the start-up run of wechat-county", 90, |d| {
        d.runs("wechat-county", "success") >= 1
    });
    // The platform's own rule (China Standard Time) may hold back the day
    // before yesterday as well.
    let platform_final = last_final_day();
    for indicator in ["wechat_readers", "wechat_new_followers"] {
        let stored = days_stored(&d, "county", indicator, &format!("{before}..{yesterday}"));
        let want: Vec<String> = [before]
            .into_iter()
            .filter(|x| *x <= platform_final)
            .map(|x| x.to_string())
            .collect();
        assert_eq!(stored, want, "{indicator} in {zone}\n{}", d.log());
    }
    // The days it stored are the platform's numbers.
    let stored = days_stored(
        &d,
        "county",
        "wechat_readers",
        &format!("{from}..{yesterday}"),
    );
    assert!(!stored.is_empty());
    let summary = d.get_json(&format!(
        "/api/v1/summary?period={from}..{}",
        stored.last().unwrap()
    ));
    let last: NaiveDate = stored.last().unwrap().parse().unwrap();
    let readers: f64 = from
        .iter_days()
        .take_while(|x| *x <= last)
        .map(|x| f64::from(sim::readers_on(APPID, x)))
        .sum();
    assert_eq!(value(&summary, "county", "wechat_readers"), readers);

    // The run named the days it held back: today, yesterday, and the day
    // before when the platform's own rule holds it back too.
    // /api/v1/sources shows them, and the summary does not call them complete.
    let today = now.date_naive();
    let held: Vec<NaiveDate> = before
        .iter_days()
        .take_while(|x| *x <= today)
        .filter(|x| *x > platform_final.min(before))
        .collect();
    assert!(held.contains(&yesterday));
    let source = d.source("wechat-county");
    assert_eq!(last_run_uncovered(&source), held, "{source:#}");
    let summary = d.get_json(&format!("/api/v1/summary?period={yesterday}..{yesterday}"));
    assert_eq!(summary["period"]["sources_complete"], false, "{summary:#}");
    assert_eq!(summary["sources"][0]["complete"], false, "{summary:#}");
    let cell = &summary["units"][0]["values"]["wechat_readers"];
    assert_eq!(cell["incomplete"], true, "{summary:#}");
    assert!(cell["value"].is_null(), "never 0: {summary:#}");

    // Later, with lookback_days = 0: `tallyd collect` from a zone where it
    // is about 09:00 starts its window at the first held-back day, and reads
    // every one of them that is final now; the others stay uncovered.
    let later_zone = zone_at(9);
    let later_config = write_config(
        dir,
        "later.toml",
        &std::fs::read_to_string(&config).unwrap().replace(
            &format!("timezone = \"{}\"", zone.name()),
            &format!("timezone = \"{}\"", later_zone.name()),
        ),
    );
    let out = run_tallyd_env(
        &[
            "collect",
            "--config",
            later_config.to_str().unwrap(),
            "--source",
            "wechat-county",
        ],
        &[("TALLY_TEST_WECHAT_SECRET", SECRET)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(" wechat-county {}..", held[0])),
        "the window starts at the first held-back day:\n{}",
        stderr(&out)
    );
    let later_today = chrono::Utc::now().with_timezone(&later_zone).date_naive();
    let final_now = last_final_day().min(later_today - chrono::Days::new(1));
    let still: Vec<NaiveDate> = held.iter().copied().filter(|x| *x > final_now).collect();
    let source = d.source("wechat-county");
    assert_eq!(
        last_run_uncovered(&source)
            .into_iter()
            .filter(|x| held.contains(x))
            .collect::<Vec<_>>(),
        still
            .iter()
            .copied()
            .filter(|x| *x <= later_today)
            .collect::<Vec<_>>(),
        "{source:#}"
    );
    for x in &held {
        let summary = d.get_json(&format!("/api/v1/summary?period={x}..{x}"));
        let cell = &summary["units"][0]["values"]["wechat_readers"];
        if still.contains(x) {
            assert_eq!(cell["incomplete"], true, "{x}: {summary:#}");
        } else {
            assert_eq!(summary["sources"][0]["complete"], true, "{x}: {summary:#}");
            assert!(cell.get("incomplete").is_none(), "{x}: {summary:#}");
            assert_eq!(cell["value"], f64::from(sim::readers_on(APPID, *x)), "{x}");
        }
    }
}
