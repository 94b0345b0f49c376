//! Retries, the circuit breaker and the missed-run detector, through the
//! real daemon and the `faulty` fixture plugin.

use crate::support::*;

const TOKEN: &str = "resilience-test-token";

/// A faulty source; `schedule` once a year (1 January, 03:00) keeps
/// scheduled runs out of the way and leaves room for retries.
fn source(id: &str, schedule: &str, keys: &str, settings: &str) -> String {
    format!(
        "\n[[sources]]\nid = \"{id}\"\nplugin = \"faulty\"\nunit = \"county\"\nschedule = \"{schedule}\"\n\
         timeout = \"5s\"\n{keys}\n[sources.settings]\nindicator = \"x\"\n{settings}\n"
    )
}

fn config(root: &std::path::Path, port: u16, sources: &str) -> std::path::PathBuf {
    let plugins = plugin_dir_with(
        &root.join("plugins"),
        &[fixture_plugin("tally_fixture_faulty")],
    );
    TestConfig::new(root, &plugins)
        .with_port(port)
        .daemon(&format!(r#"api_token = "{TOKEN}""#))
        .county()
        .indicator("x", "计数", "count", "次")
        .toml(sources)
        .write()
}

fn run_now(d: &TestDaemon, id: &str) -> serde_json::Value {
    let url = format!("{}/api/v1/sources/{id}/run", d.base);
    let (status, body) = post(&url, &[("Authorization", &format!("Bearer {TOKEN}"))]).unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

const YEARLY: &str = "0 0 3 1 1 *";

#[test]
fn transient_failures_are_retried_permanent_ones_are_not_and_failing_sources_back_off() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut sources = String::new();
    // Fails twice as the platform would, then succeeds: one run, third attempt.
    sources.push_str(&source(
        "flaky",
        YEARLY,
        "retries = 2\nretry_backoff = \"100ms\"",
        "mode = \"flaky\"\nfail_times = 2",
    ));
    // A wrong setting fails the same way every time: no retry.
    sources.push_str(&source(
        "misconfigured",
        YEARLY,
        "retries = 2\nretry_backoff = \"100ms\"",
        "mode = \"bad_settings\"",
    ));
    // Always down, no retries: three failed runs open the breaker.
    sources.push_str(&source("down", YEARLY, "retries = 0", "mode = \"error\""));
    // Down on a per-second schedule: its scheduled runs get skipped.
    sources.push_str(&source(
        "down-often",
        "* * * * * *",
        "retries = 0\nbreaker_after = 2",
        "mode = \"error\"",
    ));
    let config = config(tmp.path(), port, &sources);
    let d = TestDaemon::start(&config, port);

    d.wait_for("the start-up runs", 30, |d| {
        d.runs("flaky", "success") == 1
            && d.runs("misconfigured", "error") == 1
            && d.runs("down", "error") == 1
    });

    // One run record, the final result, the attempts in its warnings.
    let flaky = d.source("flaky");
    assert_eq!(flaky["runs"]["error"], 0, "{flaky:#}");
    let last = &flaky["last_run"];
    assert_eq!(last["result"], "success", "{flaky:#}");
    assert_eq!(last["trigger"], "start", "{flaky:#}");
    let warning = last["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.starts_with("succeeded on attempt 3 of 3"),
        "{flaky:#}"
    );
    assert!(warning.contains("call 2 of 2 failing"), "{flaky:#}");
    assert_eq!(last["observations"], 1, "{flaky:#}");
    assert_eq!(flaky["consecutive_failures"], 0, "{flaky:#}");

    // The operator reads what to fix, as the plugin said it; one attempt.
    let bad = d.source("misconfigured");
    assert_eq!(bad["last_run"]["result"], "error", "{bad:#}");
    assert_eq!(
        bad["last_run"]["error"], "mode: \"bad_settings\" always fails; set mode = \"ok\"",
        "{bad:#}"
    );
    assert_eq!(
        bad["last_run"]["warnings"],
        serde_json::json!([]),
        "{bad:#}"
    );
    assert_eq!(bad["consecutive_failures"], 1, "{bad:#}");
    assert!(bad["backoff_until"].is_null(), "{bad:#}");
    let log = d.log();
    assert!(
        !log.lines()
            .any(|l| l.contains("retrying") && l.contains("misconfigured")),
        "{log}"
    );

    // Two more failed runs of `down` (manual runs count too) open its breaker.
    let down = d.source("down");
    assert!(down["backoff_until"].is_null(), "{down:#}");
    run_now(&d, "down");
    let report = run_now(&d, "down");
    assert_eq!(report["result"], "error", "{report:#}");
    let down = d.source("down");
    assert_eq!(down["consecutive_failures"], 3, "{down:#}");
    let until = down["backoff_until"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!until.is_empty(), "{down:#}");
    // RFC 3339 in the daemon's time zone (Asia/Shanghai by default).
    assert!(until.ends_with("+08:00"), "{down:#}");
    let next = down["next_run"].as_str().unwrap_or_default();
    assert!(
        chrono::DateTime::parse_from_rfc3339(next).unwrap()
            >= chrono::DateTime::parse_from_rfc3339(&until).unwrap(),
        "{down:#}"
    );
    // A manual run ignores the breaker.
    let report = run_now(&d, "down");
    assert_eq!(report["result"], "error", "{report:#}");
    assert_eq!(d.source("down")["consecutive_failures"], 4);
    assert_eq!(d.runs("down", "error"), 4);

    // Scheduled runs of a backing-off source are skipped and counted.
    d.wait_for(
        "a scheduled run of down-often skipped by its backoff",
        30,
        |d| {
            d.sample(
                "tally_source_backoff_skips_total",
                &[("source", "down-often")],
            )
            .is_some_and(|n| n >= 1.0)
        },
    );
    let often = d.source("down-often");
    assert!(
        often["backoff_until"].is_string() || often["consecutive_failures"].as_u64() >= Some(2),
        "{often:#}"
    );
    assert_eq!(
        d.sample("tally_source_backoff_skips_total", &[("source", "flaky")]),
        Some(0.0)
    );
}

#[test]
fn a_run_missed_while_the_daemon_was_down_is_caught_up_once() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut sources = String::new();
    sources.push_str(&source("daily", "0 3 * * *", "", "mode = \"ok\""));
    sources.push_str(&source("yearly", YEARLY, "", "mode = \"ok\""));
    let config = config(tmp.path(), port, &sources);

    // First start: both never succeeded, so both run at start.
    let mut d = TestDaemon::start(&config, port);
    d.wait_for("the start-up runs", 30, |d| {
        d.runs("daily", "success") == 1 && d.runs("yearly", "success") == 1
    });
    assert_eq!(
        d.sample("tally_source_missed_runs_total", &[("source", "daily")]),
        Some(0.0)
    );
    d.terminate();
    drop(d);

    // The daemon was "down" for three days: `daily` fired at 03:00 at least
    // twice meanwhile. Moving its run back is the same as waiting.
    let db = rusqlite::Connection::open(tmp.path().join("data").join("tally.db")).unwrap();
    let moved = db
        .execute(
            "UPDATE runs SET started_at = started_at - 259200000, finished_at = finished_at - 259200000 WHERE source = 'daily'",
            [],
        )
        .unwrap();
    assert_eq!(moved, 1);
    drop(db);

    let d = TestDaemon::start(&config, port);
    d.wait_for("the catch-up run of daily", 30, |d| {
        d.runs("daily", "success") == 2
    });
    let daily = d.source("daily");
    assert_eq!(daily["last_run"]["trigger"], "start", "{daily:#}");
    // Caught up once, counted once, however many times it fired (and
    // `/metrics` shows it within about a second).
    d.wait_for("/metrics to count the missed run", 30, |d| {
        d.sample("tally_source_missed_runs_total", &[("source", "daily")]) == Some(1.0)
    });
    // `yearly` ran seconds ago and its schedule has not fired since: nothing
    // to catch up (unless this runs across 1 January, 03:00).
    assert_eq!(
        d.sample("tally_source_missed_runs_total", &[("source", "yearly")]),
        Some(0.0)
    );
    assert_eq!(d.runs("yearly", "success"), 1);
    assert!(d.log().contains("catching up once"), "{}", d.log());
}
