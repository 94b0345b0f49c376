//! The bundled `weibo` plugin in the real daemon, against the Weibo simulator:
//! collection, the summary's totals, and an expired token as operators see it.

use chrono::{Duration, NaiveDate, NaiveTime, Utc};
use serde_json::Value;
use tally_simulators::weibo::{Account, Endpoint, WeiboSim, followers_on, post_times, posts_on};

use crate::support::*;

const UID: u64 = 5_678_901_234;
const TOKEN: &str = "2.00WeiboItestSecretToken";

fn value(summary: &Value, unit: &str, indicator: &str) -> Value {
    let units = summary["units"].as_array().expect("units array");
    let u = units
        .iter()
        .find(|u| u["id"] == unit)
        .unwrap_or_else(|| panic!("unit {unit} not in summary: {summary:#}"));
    u["values"][indicator]["value"].clone()
}

#[test]
fn weibo_source_collects_and_reports_an_expired_token() {
    // The simulated platform's clock is frozen at the test's start, so that
    // no post appears between the collection and the expectations.
    let now = Utc::now();
    let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
    let local = now.with_timezone(&tz);
    let today = local.date_naive();
    let sim = WeiboSim::start_blocking(vec![Account::new(UID, TOKEN)]).unwrap();
    sim.set_now(now);

    // About 130 posts: the timeline needs two pages.
    let from = today - Duration::days(70);
    let visible = |d: NaiveDate| -> u32 {
        if d == today {
            let t: NaiveTime = local.time();
            post_times(UID, d).iter().filter(|p| **p <= t).count() as u32
        } else {
            posts_on(UID, d)
        }
    };
    let posts: u32 = from
        .iter_days()
        .take_while(|d| *d <= today)
        .map(visible)
        .sum();

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_weibo")]);
    let port = free_port();
    let config = write_config(
        dir,
        "tally.toml",
        &format!(
            r#"
[daemon]
listen = "127.0.0.1:{port}"
timezone = "Asia/Shanghai"
data_dir = {data}
plugin_dirs = [{plugins}]
api_token = "test-token"

[[units]]
id = "county"
name = "某县"

[[indicators]]
id = "weibo_posts"
name = "微博发博数"
kind = "count"
unit = "条"
[[indicators]]
id = "weibo_followers"
name = "微博粉丝数"
kind = "level"
unit = "人"
[[indicators]]
id = "weibo_total_posts"
name = "微博累计发博数"
kind = "level"
unit = "条"

[[sources]]
id = "county-weibo"
plugin = "weibo"
unit = "county"
schedule = "0 0 3 * * *"
backfill_from = "{from}"
timeout = "2s"
retries = 0
[sources.settings]
uid = "{UID}"
access_token = "${{env:TALLY_TEST_WEIBO_TOKEN}}"
api_base = "{api}"
"#,
            data = toml_path(&dir.join("data")),
            plugins = toml_path(&plugins),
            api = sim.base_url(),
        ),
    );
    let d = TestDaemon::start_with_env(&config, port, &[("TALLY_TEST_WEIBO_TOKEN", TOKEN)]);
    d.wait_for("the start-up run to succeed", 60, |d| {
        d.source("county-weibo")["last_success"].is_string()
    });
    assert!(sim.calls(Endpoint::UserTimeline) >= 2, "paged");
    // `/metrics` shows a scheduled run within about a second.
    d.wait_for("/metrics to show the start-up run", 30, |d| {
        d.sample("tally_source_up", &[("source", "county-weibo")]) == Some(1.0)
    });

    // To tomorrow, in case the daemon's day turned over since the clock was read.
    let period = format!("{from}..{}", today + Duration::days(1));
    let summary = d.get_json(&format!("/api/v1/summary?period={period}"));
    assert_eq!(
        value(&summary, "county", "weibo_posts"),
        f64::from(posts),
        "{summary:#}"
    );
    assert_eq!(
        value(&summary, "county", "weibo_followers"),
        followers_on(UID, today) as f64
    );
    assert_eq!(
        value(&summary, "county", "weibo_total_posts"),
        sim.statuses_count(UID) as f64
    );

    // The token expires: the next run fails with an error that says what to do.
    sim.faults().set_expired_token(true);
    let (status, report) = post(
        &format!("{}/api/v1/sources/county-weibo/run", d.base),
        &[("Authorization", "Bearer test-token")],
    )
    .unwrap();
    assert_eq!(status, 200, "{report}");
    d.wait_for("the failed run to show", 60, |d| {
        d.source("county-weibo")["last_error"]["error"].is_string()
    });
    let source = d.source("county-weibo");
    let error = source["last_error"]["error"].as_str().unwrap();
    assert!(error.contains("21327"), "{source:#}");
    assert!(
        error.contains("the access token expired: re-authorize the account and update the secret"),
        "{source:#}"
    );
    assert_eq!(
        d.sample(
            "tally_source_up",
            &[("source", "county-weibo"), ("plugin", "weibo")]
        ),
        Some(0.0)
    );
    for (what, text) in [
        ("/api/v1/sources", d.get("/api/v1/sources").1),
        ("/metrics", d.get("/metrics").1),
        ("run report", report),
        ("daemon log", d.log()),
    ] {
        assert!(
            !text.contains(TOKEN),
            "the token shows in the {what}:\n{text}"
        );
    }

    // The platform answers, but slower than the source's timeout allows: the
    // run is a timeout, said so, and the daemon goes on.
    sim.faults().clear();
    sim.faults().set_delay(std::time::Duration::from_secs(5));
    let (status, report) = post(
        &format!("{}/api/v1/sources/county-weibo/run", d.base),
        &[("Authorization", "Bearer test-token")],
    )
    .unwrap();
    assert_eq!(status, 200, "{report}");
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["result"], "timeout", "{report}");
    assert_eq!(report["error"], "timed out after 2s", "{report}");
    assert_eq!(d.get("/healthz").0, 200);
}
