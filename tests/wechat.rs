//! The real daemon with the real `wechat` plugin against the WeChat simulator:
//! a quarter collected from `backfill_from`, summed in `/api/v1/summary` to the
//! totals of the simulator's data functions, and platform failures shown in
//! `/api/v1/sources` without the secret.

use chrono::{Datelike, NaiveDate};
use serde_json::Value;
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

fn value(summary: &Value, unit: &str, indicator: &str) -> Value {
    let u = summary["units"]
        .as_array()
        .expect("units array")
        .iter()
        .find(|u| u["id"] == unit)
        .unwrap_or_else(|| panic!("unit {unit} not in summary: {summary:#}"));
    u["values"][indicator]["value"].clone()
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

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_wechat")]);
    let port = free_port();
    let config = write_config(
        dir,
        "tally.toml",
        &format!(
            r#"
[daemon]
listen = "127.0.0.1:{port}"
data_dir = {data}
plugin_dirs = [{plugins}]
api_token = "${{env:TALLY_TEST_API_TOKEN}}"

[[units]]
id = "county"
name = "某县"

[[indicators]]
id = "wechat_posts"
name = "微信公众号发文篇数"
kind = "count"
unit = "篇"
[[indicators]]
id = "wechat_readers"
name = "微信公众号阅读人数"
kind = "count"
unit = "人"
[[indicators]]
id = "wechat_followers"
name = "微信公众号粉丝数"
kind = "level"
unit = "人"
[[indicators]]
id = "wechat_new_followers"
name = "微信公众号新增粉丝数"
kind = "count"
unit = "人"
[[indicators]]
id = "wechat_cancelled_followers"
name = "微信公众号取消关注人数"
kind = "count"
unit = "人"

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
"#,
            data = toml_path(&dir.join("data")),
            plugins = toml_path(&plugins),
            api = wechat.base_url(),
        ),
    );
    let d = TestDaemon::start_with_env(
        &config,
        port,
        &[
            ("TALLY_TEST_WECHAT_SECRET", SECRET),
            ("TALLY_TEST_API_TOKEN", API_TOKEN),
        ],
    );
    // Never succeeded, so it runs at start over backfill_from..today.
    d.wait_for("the start-up run of wechat-county", 90, |d| {
        d.runs("wechat-county", "success") >= 1
    });

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
