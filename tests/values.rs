//! What a run may store, and what counts as a run (issue 15): values within
//! their indicator's range, exec output past its limit, a run the store could
//! not record, and days after today.

use std::path::{Path, PathBuf};

use chrono::{Days, NaiveDate, Utc};
use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "values-test-token";

/// A daemon configuration: a county of two bureaus, a `meetings` count, and
/// `sources` as given (TOML, with `{plugins}`-relative paths already filled).
fn config(dir: &Path, port: u16, plugins: &Path, sources: &str) -> PathBuf {
    TestConfig::new(dir, plugins)
        .with_port(port)
        .daemon(&format!("timezone = \"UTC\"\napi_token = \"{TOKEN}\""))
        .county()
        .unit("county/a", "县甲")
        .unit("county/b", "县乙")
        .meetings()
        .toml(sources)
        .write()
}

/// An `exec` source running `script` (written into `dir`) for `county/a`.
fn exec_source(dir: &Path, script: &str, keys: &str) -> String {
    let path = dir.join("script.sh");
    std::fs::write(&path, script).unwrap();
    set_mode(&path, 0o755);
    format!(
        r#"
[[sources]]
id = "script"
plugin = "exec"
unit = "county/a"
schedule = "0 0 3 1 1 *"
{keys}
[sources.settings]
command = {command}
timeout = "60s"
indicators = ["meetings"]
"#,
        command = toml_path(&path),
    )
}

fn run_now(d: &TestDaemon, id: &str) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = post(
        &format!("{}/api/v1/sources/{id}/run", d.base),
        &[("Authorization", auth.as_str())],
    )
    .unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn huge_and_negative_values_are_refused_and_the_county_total_stays_a_number() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_csv_form")]);
    let forms = dir.join("forms");
    std::fs::create_dir_all(&forms).unwrap();
    // Two values of 1e308 sum to infinity; one form row each, on two days.
    std::fs::write(
        forms.join("november.csv"),
        "单位,日期,会议次数\n\
         county/a,2026-11-02,1e308\n\
         county/b,2026-11-03,1e308\n\
         county/a,2026-11-04,3\n\
         county/b,2026-11-05,-2\n\
         county/b,2026-11-06,4\n",
    )
    .unwrap();
    let port = free_port();
    let sources = format!(
        r#"
[[sources]]
id = "forms"
plugin = "csv_form"
units = ["county"]
schedule = "0 0 3 1 1 *"
backfill_from = "2026-11-01"
lookback_days = 4000
[sources.settings]
dir = {forms}
indicators = ["meetings"]
"#,
        forms = toml_path(&forms)
    );
    let d = TestDaemon::start(&config(dir, port, &plugins, &sources), port);
    d.wait_for("the start-up run of the forms", 60, |d| {
        !d.source("forms")["last_run"].is_null()
    });
    let last = d.source("forms")["last_run"].clone();
    assert_eq!(last["result"], "success", "{last:#}");
    assert_eq!(last["observations"], 2, "{last:#}");
    let warnings = last["warnings"].to_string();
    for refused in [
        r#"refused meetings = 1e308 for unit \"county/a\" on 2026-11-02 from source \"forms\": outside the range 0..1e15 of the indicator"#,
        r#"refused meetings = 1e308 for unit \"county/b\" on 2026-11-03 from source \"forms\": outside the range 0..1e15 of the indicator"#,
        r#"refused meetings = -2 for unit \"county/b\" on 2026-11-05 from source \"forms\": outside the range 0..1e15 of the indicator"#,
    ] {
        assert!(warnings.contains(refused), "{refused} in {warnings}");
    }
    // The totals are the accepted rows, numbers in every period.
    for period in ["2026-11", "2026-Q4", "2026"] {
        let summary = d.get_json(&format!("/api/v1/summary?period={period}"));
        assert_eq!(
            cell(&summary, "county", "meetings")["value"],
            7,
            "{period}: {summary:#}"
        );
        assert_eq!(
            cell(&summary, "county/a", "meetings")["value"],
            3,
            "{period}"
        );
        assert_eq!(
            cell(&summary, "county/b", "meetings")["value"],
            4,
            "{period}"
        );
    }
}

#[test]
fn exec_output_past_its_limit_fails_the_run_and_leaves_the_window_uncovered() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_exec")]);
    // One observation, 70 MB of padding on one line, another observation:
    // reading only the first 64 MiB would keep the first and drop the last.
    let script = r#"#!/bin/sh
echo '{"indicator": "meetings", "day": "'"$TALLY_FROM"'", "value": 1}'
head -c 70000000 /dev/zero | tr '\0' ' '
echo
echo '{"indicator": "meetings", "day": "'"$TALLY_TO"'", "value": 2}'
"#;
    let port = free_port();
    let sources = exec_source(dir, script, "backfill_from = \"2026-11-01\"\nretries = 0");
    let d = TestDaemon::start(&config(dir, port, &plugins, &sources), port);
    d.wait_for("the start-up run of the script", 120, |d| {
        !d.source("script")["last_run"].is_null()
    });
    let s = d.source("script");
    let last = &s["last_run"];
    assert_eq!(last["result"], "error", "{s:#}");
    let error = last["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("printed more than 64 MiB on stdout; stopped it and stored nothing"),
        "{error}"
    );
    assert_eq!(last["observations"], 0, "{s:#}");
    assert!(s["last_success"].is_null(), "{s:#}");
    // Nothing stored, and the days count as not collected.
    let summary = d.get_json("/api/v1/summary?period=2026-11-01..2026-11-02");
    let a = cell(&summary, "county/a", "meetings");
    assert!(a["value"].is_null(), "{summary:#}");
    assert_eq!(summary["period"]["sources_complete"], false, "{summary:#}");
}

#[test]
fn a_run_the_store_could_not_record_is_an_error_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_exec")]);
    let script = r#"#!/bin/sh
echo '{"indicator": "meetings", "day": "'"$TALLY_TO"'", "value": 1}'
"#;
    let port = free_port();
    let sources = exec_source(dir, script, "retries = 0\nbreaker_after = 1");
    let d = TestDaemon::start(&config(dir, port, &plugins, &sources), port);
    d.wait_for("the start-up run of the script", 60, |d| {
        d.source("script")["last_run"]["result"] == "success"
    });
    let labels = [("plugin", "exec"), ("source", "script")];
    let metric = |d: &TestDaemon, name: &str, result: Option<&str>| {
        let mut labels = labels.to_vec();
        if let Some(r) = result {
            labels.push(("result", r));
        }
        // `result="error"` is split by a `kind` label: sum the kinds.
        let samples: Vec<f64> = parse_metrics(&d.get("/metrics").1)
            .into_iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
            })
            .map(|s| s.value)
            .collect();
        (!samples.is_empty()).then(|| samples.iter().sum::<f64>())
    };

    // Another process holds the store's write lock past the daemon's busy
    // timeout: the run's commit fails, as on a full disk.
    let (status, report) = {
        let db = rusqlite::Connection::open(dir.join("data/tally.db")).unwrap();
        db.execute_batch("BEGIN IMMEDIATE").unwrap();
        let answer = run_now(&d, "script");
        db.execute_batch("ROLLBACK").unwrap();
        answer
    };
    assert_eq!(status, 200, "{report:#}\n{}", d.log());
    assert_eq!(report["result"], "error", "{report:#}");
    assert!(report["run_id"].is_null(), "{report:#}");
    let error = report["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.starts_with("the run could not be recorded: "),
        "{error}"
    );

    d.wait_for("the failure in /metrics", 10, |d| {
        metric(d, "tally_source_runs_total", Some("error")) == Some(1.0)
    });
    assert_eq!(metric(&d, "tally_source_up", None), Some(0.0));
    let s = d.source("script");
    assert_eq!(s["last_run"]["result"], "error", "{s:#}");
    assert_eq!(s["last_run"]["recorded"], false, "{s:#}");
    assert_eq!(s["last_error"]["error"], error.as_str(), "{s:#}");
    assert_eq!(s["runs"]["error"], 1, "{s:#}");
    assert_eq!(s["consecutive_failures"], 1, "{s:#}");
    assert!(!s["backoff_until"].is_null(), "the breaker opened: {s:#}");
    let (code, body) = d.get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains(r#"source \"script\": its last run could not be recorded: the run could not be recorded: "#),
        "{body}"
    );
    assert!(d.log().contains("run could not be recorded"));

    // The store takes writes again: the next run is stored and all is well.
    let (status, report) = run_now(&d, "script");
    assert_eq!(
        (status, report["result"].as_str()),
        (200, Some("success")),
        "{report:#}"
    );
    let (code, body) = d.get("/readyz");
    assert_eq!(code, 200, "{body}");
    let s = d.source("script");
    assert_eq!(s["last_run"]["recorded"], true, "{s:#}");
    assert_eq!(s["consecutive_failures"], 0, "{s:#}");
    assert_eq!(metric(&d, "tally_source_up", None), Some(1.0));
}

fn day_text(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

#[test]
fn a_window_asked_past_today_keeps_the_lookback_and_stores_no_future_day() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_exec")]);
    let today = Utc::now().date_naive();
    let day = |n: i64| {
        let d = if n < 0 {
            today.checked_sub_days(Days::new(n.unsigned_abs()))
        } else {
            today.checked_add_days(Days::new(n as u64))
        };
        d.unwrap()
    };
    // A program that prints the days it was asked for, and two days ahead.
    let lines: String = (-3..=2)
        .map(|n| {
            format!(
                "echo '{{\"indicator\": \"meetings\", \"day\": \"{}\", \"value\": 1}}'\n",
                day_text(day(n))
            )
        })
        .collect();
    let script = format!("#!/bin/sh\n{lines}");
    let port = free_port();
    let sources = exec_source(dir, &script, "lookback_days = 3");
    let config = config(dir, port, &plugins, &sources);
    let config = config.to_str().unwrap();

    let backfill = run_tallyd(&[
        "collect",
        "--config",
        config,
        "--source",
        "script",
        "--from",
        &day_text(day(-3)),
        "--to",
        &day_text(day(2)),
    ]);
    assert_eq!(exit_code(&backfill), 0, "{}", stderr(&backfill));
    let err = stderr(&backfill);
    assert!(
        err.contains(&format!(
            "{} {}..{}: success, 4 observations",
            "script",
            day_text(day(-3)),
            day_text(today)
        )),
        "{err}"
    );
    // The next run still looks back from today, not from the future day.
    let next = run_tallyd(&["collect", "--config", config, "--source", "script"]);
    assert_eq!(exit_code(&next), 0, "{}", stderr(&next));
    let err = stderr(&next);
    assert!(
        err.contains(&format!(
            "script {}..{}: success",
            day_text(day(-3)),
            day_text(today)
        )),
        "{err}"
    );
    // No day after today was stored.
    let period = format!("{}..{}", day_text(day(-3)), day_text(day(2)));
    let report = run_tallyd(&[
        "report", "--config", config, "--period", &period, "--format", "json",
    ]);
    assert_eq!(exit_code(&report), 0, "{}", stderr(&report));
    let summary: Value = serde_json::from_str(&stdout(&report)).unwrap();
    assert_eq!(
        cell(&summary, "county", "meetings")["value"],
        4,
        "{summary:#}"
    );

    // A backfill that starts after today is refused.
    let ahead = run_tallyd(&[
        "collect",
        "--config",
        config,
        "--source",
        "script",
        "--from",
        &day_text(day(1)),
        "--to",
        &day_text(day(2)),
    ]);
    assert_eq!(exit_code(&ahead), 1, "{}", stderr(&ahead));
    assert!(
        stderr(&ahead).contains(&format!(
            "--from {} is after today ({} in UTC): there is nothing to collect yet",
            day_text(day(1)),
            day_text(today)
        )),
        "{}",
        stderr(&ahead)
    );
}
