//! The PostgreSQL store end to end (issue 13): `tallyd` on `[store] url`
//! answers as on the embedded SQLite store, and a second daemon on the same
//! database joins it as a replica.

use std::path::{Path, PathBuf};

use crate::support::*;

/// A configuration with one form source over `forms`, on SQLite in
/// `data`, or on PostgreSQL at `url` when given.
fn config(
    dir: &Path,
    plugins: &Path,
    forms: &Path,
    name: &str,
    url: Option<&str>,
    port: u16,
) -> PathBuf {
    let store = url
        .map(|url| format!("\n[store]\nurl = \"{url}\"\n"))
        .unwrap_or_default();
    TestConfig::new(dir, plugins)
        .with_port(port)
        .data_dir(&dir.join(format!("data-{name}")))
        .daemon(r#"timezone = "UTC""#)
        .county()
        .meetings()
        .toml(&format!(
            r#"
[[sources]]
id = "forms"
plugin = "csv_form"
units = ["county"]
schedule = "0 0 3 1 1 *"
backfill_from = "2026-01-01"
[sources.settings]
dir = {forms}
indicators = ["meetings"]
{store}"#,
            forms = toml_path(forms),
        ))
        .write_as(&format!("{name}.toml"))
}

fn collect_and_report(config: &Path) -> String {
    let config = config.to_str().unwrap();
    let out = run_tallyd(&[
        "collect",
        "--config",
        config,
        "--source",
        "forms",
        "--from",
        "2026-01-01",
        "--to",
        "2026-03-31",
    ]);
    assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
    // Collected twice: re-collection replaces, on both stores.
    let out = run_tallyd(&[
        "collect",
        "--config",
        config,
        "--source",
        "forms",
        "--from",
        "2026-02-01",
        "--to",
        "2026-02-28",
    ]);
    assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
    let out = run_tallyd(&[
        "report", "--config", config, "--period", "2026-Q1", "--format", "json",
    ]);
    assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
    stdout(&out)
}

/// A summary's JSON without the times it was made and its sources last
/// succeeded.
fn timeless(json: &str) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.retain(|k, _| k != "generated_at" && k != "last_success");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v: serde_json::Value = serde_json::from_str(json).expect("a summary as JSON");
    strip(&mut v);
    v
}

#[test]
fn collect_and_report_on_postgresql_equal_those_on_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_csv_form")]);
    let forms = dir.join("forms");
    std::fs::create_dir_all(&forms).unwrap();
    std::fs::write(
        forms.join("q1.csv"),
        "单位,日期,会议次数\ncounty,2026-01-05,3\ncounty,2026-02-10,4\ncounty,2026-03-31,5\n",
    )
    .unwrap();
    let url = tally_store::pg_test_cluster::database_url();
    let on_sqlite = collect_and_report(&config(dir, &plugins, &forms, "sqlite", None, free_port()));
    let on_postgres = collect_and_report(&config(
        dir,
        &plugins,
        &forms,
        "pg",
        Some(&url),
        free_port(),
    ));
    assert!(on_sqlite.contains("12"), "{on_sqlite}");
    // The two collections ran at different times: compare all but when.
    assert_eq!(timeless(&on_postgres), timeless(&on_sqlite));
}

#[test]
fn a_second_daemon_with_another_configuration_joins_and_does_not_claim_what_it_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_csv_form")]);
    let forms = dir.join("forms");
    std::fs::create_dir_all(&forms).unwrap();
    let url = tally_store::pg_test_cluster::database_url();
    let port = free_port();
    let first = config(dir, &plugins, &forms, "first", Some(&url), port);
    let first = TestDaemon::start(&first, port);
    // Its own data_dir: only the database is shared. No sources: the first
    // daemon's "forms" is unknown to it.
    let port = free_port();
    let second = TestConfig::new(dir, &plugins)
        .with_port(port)
        .data_dir(&dir.join("data-second"))
        .county()
        .toml(&format!("[store]\nurl = \"{url}\"\n"))
        .write_as("second.toml");
    let second = TestDaemon::start(&second, port);
    second.wait_for("the unknown source in the log", 20, |d| {
        d.log().contains("source unknown to this replica") && d.log().contains("forms")
    });
    // `/metrics` is rebuilt in the background, within about a second.
    second.wait_for("the unknown source in /metrics", 20, |d| {
        d.metric("tally_replica_sources_not_claimed") == Some(1.0)
    });
    assert_eq!(first.metric("tally_replica_sources_not_claimed"), Some(0.0));
    let (one, two) = (
        first.get_json("/api/v1/sources"),
        second.get_json("/api/v1/sources"),
    );
    assert_ne!(one["replica"]["owner"], two["replica"]["owner"]);
    assert_ne!(one["replica"]["fingerprint"], two["replica"]["fingerprint"]);
    let fingerprint = one["replica"]["fingerprint"].as_str().unwrap();
    assert_eq!(
        first.sample(
            "tally_config_fingerprint_info",
            &[("fingerprint", fingerprint)]
        ),
        Some(1.0)
    );
    let forms = &one["sources"][0];
    assert_eq!(forms["claim"]["claimable"], true, "{forms}");
    assert_eq!(
        forms["claim"]["registered_fingerprint"],
        forms["fingerprint"]
    );
    // One of them holds the reports lease, not both.
    first.wait_for("a holder of the reports lease", 20, |d| {
        d.metric("tally_replica_reports_lease_held") == Some(1.0)
            || second.metric("tally_replica_reports_lease_held") == Some(1.0)
    });
    let held = [&first, &second]
        .iter()
        .filter(|d| d.metric("tally_replica_reports_lease_held") == Some(1.0))
        .count();
    assert_eq!(held, 1);
}

fn report(config: &Path, period: &str) -> serde_json::Value {
    let out = run_tallyd(&[
        "report",
        "--config",
        config.to_str().unwrap(),
        "--period",
        period,
        "--format",
        "json",
    ]);
    assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
    let mut v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    v["generated_at"] = serde_json::Value::Null;
    v
}

#[test]
fn store_copy_moves_a_sqlite_store_into_postgresql_and_every_quarter_stays_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_csv_form")]);
    let forms = dir.join("forms");
    std::fs::create_dir_all(&forms).unwrap();
    // Two quarters, one corrected later: the copy keeps what replaced what.
    std::fs::write(
        forms.join("h1.csv"),
        "单位,日期,会议次数\ncounty,2026-01-05,3\ncounty,2026-02-10,4\ncounty,2026-05-31,5\n",
    )
    .unwrap();
    let sqlite = config(dir, &plugins, &forms, "sqlite", None, free_port());
    let collect = |config: &Path, from: &str, to: &str| {
        let out = run_tallyd(&[
            "collect",
            "--config",
            config.to_str().unwrap(),
            "--source",
            "forms",
            "--from",
            from,
            "--to",
            to,
        ]);
        assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
    };
    collect(&sqlite, "2026-01-01", "2026-06-30");
    std::fs::write(
        forms.join("h1.csv"),
        "单位,日期,会议次数\ncounty,2026-01-05,3\ncounty,2026-02-10,6\ncounty,2026-05-31,5\n",
    )
    .unwrap();
    collect(&sqlite, "2026-02-01", "2026-02-28");
    let before = [report(&sqlite, "2026-Q1"), report(&sqlite, "2026-Q2")];
    assert_eq!(
        value(&before[0], "county", "meetings"),
        9.0,
        "{}",
        before[0]
    );

    // The same data_dir, now with [store] url: what an operator moving up edits.
    let url = tally_store::pg_test_cluster::database_url();
    let postgres = TestConfig::new(dir, &plugins)
        .with_port(free_port())
        .data_dir(&dir.join("data-sqlite"))
        .daemon(r#"timezone = "UTC""#)
        .county()
        .meetings()
        .toml(&format!(
            r#"
[[sources]]
id = "forms"
plugin = "csv_form"
units = ["county"]
schedule = "0 0 3 1 1 *"
backfill_from = "2026-01-01"
[sources.settings]
dir = {forms}
indicators = ["meetings"]

[store]
url = "{url}"
"#,
            forms = toml_path(&forms),
        ))
        .write_as("pg.toml");
    let out = run_tallyd(&["store", "copy", "--config", postgres.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(exit_code(&out), 0, "{text}{}", stderr(&out));
    // A backfill runs month by month: six runs, and the correction's one.
    assert!(text.contains("copied 7 runs, 3 observations"), "{text}");
    // Every quarter from the first observed day's to today's.
    let quarters: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(": same summary"))
        .collect();
    assert!(quarters.len() >= 4, "{text}");
    assert!(quarters[0].starts_with("2026-Q1: "), "{text}");
    assert!(!text.contains("DIFFERS"), "{text}");
    assert!(!text.contains(&url) && !stderr(&out).contains(&url));
    let after = [report(&postgres, "2026-Q1"), report(&postgres, "2026-Q2")];
    assert_eq!(after, before);

    // Copied once: a second copy would mix two histories.
    let out = run_tallyd(&["store", "copy", "--config", postgres.to_str().unwrap()]);
    assert_eq!(exit_code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already holds 7 runs"),
        "{}",
        stderr(&out)
    );

    // Without [store] url there is nowhere to copy to.
    let out = run_tallyd(&["store", "copy", "--config", sqlite.to_str().unwrap()]);
    assert_eq!(exit_code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("set [store] url"), "{}", stderr(&out));
}
