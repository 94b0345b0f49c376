//! The bundled `weibo` plugin in the real daemon, against the Weibo simulator
//! whose timeline, like the real one, shows only the five newest posts:
//! the days a run can measure are counted, the others are left out (never
//! 0) and named; 转评赞 and original posts; the token's expiry in
//! `/api/v1/sources`; another account's token refused; an expired token and
//! a slow platform as operators see them.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::Value;
use tally_simulators::weibo::{
    Account, Endpoint, WeiboSim, day_posts, engagement, followers_on, originals_on, posts_on,
};

use crate::support::*;

const UID: u64 = 5_678_901_234;
const TOKEN: &str = "2.00WeiboItestSecretToken";
const OTHER_UID: u64 = 5_678_901_236;
const OTHER_TOKEN: &str = "2.00WeiboOtherAccountToken";

/// The posts the five-post timeline shows at `now`, newest first.
fn newest_five(now: DateTime<Utc>, today: NaiveDate) -> Vec<tally_simulators::weibo::Post> {
    let mut newest = Vec::new();
    let mut d = today;
    while newest.len() < 5 {
        let mut posts = day_posts(UID, d);
        posts.retain(|p| p.at <= now);
        newest.extend(posts.into_iter().rev());
        d -= Duration::days(1);
    }
    newest.truncate(5);
    newest
}

#[test]
fn weibo_source_counts_what_it_can_measure_and_reports_its_token() {
    // The simulated platform's clock is frozen at the test's start, so that
    // no post appears between the collection and the expectations.
    let now = Utc::now();
    let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
    let today = now.with_timezone(&tz).date_naive();
    let sim = WeiboSim::start_blocking(vec![
        Account::new(UID, TOKEN),
        Account::new(OTHER_UID, OTHER_TOKEN),
    ])
    .unwrap();
    sim.set_now(now);

    let from = today - Duration::days(70);
    // A first run measures the midnights after the 5th newest post: the
    // days after its day and before today are counted, whole.
    let newest = newest_five(now, today);
    let fifth = newest[4].at.with_timezone(&tz).date_naive();
    let counted: Vec<NaiveDate> = from
        .iter_days()
        .take_while(|d| *d < today)
        .filter(|d| *d > fifth)
        .collect();
    let posts: u32 = counted.iter().map(|d| posts_on(UID, *d)).sum();
    let originals: u32 = counted.iter().map(|d| originals_on(UID, *d)).sum();
    let likes: u64 = newest
        .iter()
        .filter(|p| p.at.with_timezone(&tz).date_naive() >= from)
        .map(|p| engagement(p, now).2)
        .sum();

    let t = TestDir::new(&[bundled_plugin("tally_weibo")]);
    let dir = t.dir.as_path();
    let plugins = &t.plugins;
    let mut indicators = String::new();
    for (id, name, kind, unit) in [
        ("weibo_posts", "微博发博数", "count", "条"),
        ("weibo_original_posts", "微博原创发博数", "count", "条"),
        ("weibo_reposts", "微博转发数", "count", "次"),
        ("weibo_comments", "微博评论数", "count", "次"),
        ("weibo_likes", "微博点赞数", "count", "次"),
        ("weibo_followers", "微博粉丝数", "level", "人"),
        ("weibo_total_posts", "微博累计发博数", "level", "条"),
    ] {
        indicators.push_str(&format!(
            "[[indicators]]\nid = \"{id}\"\nname = \"{name}\"\nkind = \"{kind}\"\nunit = \"{unit}\"\n"
        ));
    }
    let cfg = TestConfig::new(dir, plugins)
.daemon(r#"timezone = "Asia/Shanghai"
api_token = "test-token""#)
.county()
.unit("town", "某镇")
.toml(&indicators)
.toml(&format!(
r#"
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
indicators = ["weibo_posts", "weibo_original_posts", "weibo_reposts", "weibo_comments", "weibo_likes", "weibo_followers", "weibo_total_posts"]

# The town's uid, configured with the county's token by mistake.
[[sources]]
id = "town-weibo"
plugin = "weibo"
unit = "town"
schedule = "0 0 3 * * *"
backfill_from = "{from}"
retries = 0
[sources.settings]
uid = "{OTHER_UID}"
access_token = "${{env:TALLY_TEST_WEIBO_TOKEN}}"
api_base = "{api}"
"#,
api = sim.base_url(),
));
    let d = cfg.start_with_env(&[("TALLY_TEST_WEIBO_TOKEN", TOKEN)]);
    d.wait_for("the start-up run to succeed", 60, |d| {
        d.source("county-weibo")["last_success"].is_string()
    });
    assert_eq!(sim.calls(Endpoint::UserTimeline), 1, "five posts: one page");

    // To tomorrow, in case the daemon's day turned over since the clock was read.
    let period = format!("{from}..{}", today + Duration::days(1));
    let summary = d.get_json(&format!("/api/v1/summary?period={period}"));
    // When the five newest posts all fall after yesterday's midnight (the
    // simulator's feed at some hours of the day), no whole day is measured
    // and the counts have no value at all: never a 0 for unmeasured days.
    let counted_or_none = |n: u32| {
        if counted.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::json!(f64::from(n))
        }
    };
    assert_eq!(
        value(&summary, "county", "weibo_posts"),
        counted_or_none(posts),
        "{summary:#}"
    );
    assert_eq!(
        value(&summary, "county", "weibo_original_posts"),
        counted_or_none(originals)
    );
    assert_eq!(value(&summary, "county", "weibo_likes"), likes as f64);
    assert_eq!(
        value(&summary, "county", "weibo_followers"),
        followers_on(UID, today) as f64
    );
    assert_eq!(
        value(&summary, "county", "weibo_total_posts"),
        sim.statuses_count(UID) as f64
    );
    // Exactly the measured days are stored: none of the others as 0.
    let rows = d.get_json(&format!(
        "/api/v1/observations?period={period}&unit=county&indicator=weibo_posts"
    ));
    let days: Vec<String> = rows["observations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["day"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = counted.iter().map(|d| d.to_string()).collect();
    assert_eq!(days, expected, "{rows:#}");

    // The run's warnings, in /api/v1/sources: the token's expiry and the days left out.
    let source = d.source("county-weibo");
    let warnings: Vec<&str> = source["last_run"]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with(&format!("access token of uid {UID}: valid until 2029-12-"))),
        "{source:#}"
    );
    // Up to the fifth post's day, or yesterday when that is today: today is
    // counted once it is over.
    let left_to = fifth.min(today - Duration::days(1));
    let left_out = (left_to - from).num_days() + 1;
    assert!(
        warnings.iter().any(|w| w.starts_with(&format!(
            "weibo_posts: {left_out} days ({from}..{left_to}) not recorded (left out, not 0)"
        ))),
        "{source:#}"
    );

    // Those days are uncovered: the run says so in /api/v1/sources, and the
    // summary marks the period incomplete instead of calling nothing complete.
    let unmeasured_to = fifth.min(today - Duration::days(1));
    let mut unmeasured: Vec<NaiveDate> = from
        .iter_days()
        .take_while(|d| *d <= unmeasured_to)
        .collect();
    // And today, counted once it is over.
    unmeasured.push(today);
    assert_eq!(last_run_uncovered(&source), unmeasured, "{source:#}");
    let county_source = |summary: &Value| {
        summary["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "county-weibo")
            .cloned()
            .unwrap()
    };
    let whole = d.get_json(&format!(
        "/api/v1/summary?period={from}..{unmeasured_to}&unit=county"
    ));
    assert_eq!(county_source(&whole)["complete"], false, "{whole:#}");
    assert_eq!(
        cell(&whole, "county", "weibo_posts")["incomplete"],
        true,
        "{whole:#}"
    );
    // The measured days alone are complete.
    if let (Some(first), Some(last)) = (counted.first(), counted.last()) {
        let measured = d.get_json(&format!(
            "/api/v1/summary?period={first}..{last}&unit=county"
        ));
        assert_eq!(county_source(&measured)["complete"], true, "{measured:#}");
        let posts_cell = cell(&measured, "county", "weibo_posts");
        assert!(posts_cell.get("incomplete").is_none(), "{measured:#}");
        let want: u32 = counted.iter().map(|d| posts_on(UID, *d)).sum();
        assert_eq!(posts_cell["value"], f64::from(want), "{measured:#}");
    }

    // The town's source holds the county's token: refused, naming both uids.
    d.wait_for("the town's run to fail", 60, |d| {
        d.source("town-weibo")["last_error"]["error"].is_string()
    });
    let town = d.source("town-weibo");
    let error = town["last_error"]["error"].as_str().unwrap();
    assert!(
        error.contains(&format!(
            "the access token belongs to Weibo uid {UID}, not to the configured uid {OTHER_UID}"
        )),
        "{town:#}"
    );
    assert!(town["last_success"].is_null(), "{town:#}");
    let summary = d.get_json(&format!("/api/v1/summary?period={period}"));
    assert!(
        value(&summary, "town", "weibo_posts").is_null(),
        "{summary:#}"
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
    // The failed run leaves the counted days as they were.
    let summary = d.get_json(&format!("/api/v1/summary?period={period}"));
    assert_eq!(
        value(&summary, "county", "weibo_posts"),
        counted_or_none(posts)
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
