//! Reloading the configuration (SIGHUP, `POST /api/v1/reload`): a broken
//! file is refused and the running configuration stays; a good one changes
//! only what changed.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "reload-token";

/// A configuration with `example` sources, each `(id, per_day)`. The schedule
/// fires once a day at 03:00, so within a test a source runs at start (it
/// never succeeded) or when asked, never by the clock.
fn config_text(port: u16, dir: &Path, plugins: &Path, sources: &[(&str, &str)]) -> String {
    let mut text = TestConfig::new(dir, plugins)
        .with_port(port)
        .daemon(&format!(r#"api_token = "{TOKEN}""#))
        .county()
        .meetings()
        .text();
    for (id, per_day) in sources {
        text.push_str(&format!(
            r#"
[[sources]]
id = "{id}"
plugin = "example"
unit = "county"
schedule = "0 3 * * *"
[sources.settings]
indicator = "meetings"
per_day = {per_day}
"#
        ));
    }
    text
}

fn ids(d: &TestDaemon) -> Vec<String> {
    let all = d.get_json("/api/v1/sources");
    all["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

fn hup(d: &TestDaemon) {
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(d.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// SIGHUP reaches the reload of the real binary: a broken file is refused
/// with the reason in the log, a good one is applied. What a reload does
/// (refusals, added, changed and removed sources, the schedule after it) is
/// tested in-process on the paused clock (`crates/daemon/src/inproc_tests/reload.rs`).
#[test]
fn sighup_reloads_the_configuration_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_example")]);
    let port = free_port();
    let config = write_config(
        dir,
        "tally.toml",
        &config_text(port, dir, &plugins, &[("keep", "1")]),
    );
    let d = TestDaemon::start(&config, port);
    assert_eq!(ids(&d), ["keep"]);

    // A plugin refuses the new settings: SIGHUP leaves everything running.
    write_config(
        dir,
        "tally.toml",
        &config_text(port, dir, &plugins, &[("keep", "-1"), ("fresh", "1")]),
    );
    hup(&d);
    d.wait_for("the reload to be refused", 30, |d| {
        d.log().contains("configuration reload rejected")
    });
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("configuration reload rejected"))
        .unwrap();
    assert!(line.contains("per_day"), "the reason is named: {line}");
    assert_eq!(ids(&d), ["keep"]);

    write_config(
        dir,
        "tally.toml",
        &config_text(port, dir, &plugins, &[("keep", "1"), ("fresh", "1")]),
    );
    hup(&d);
    d.wait_for("the reload to be applied", 30, |d| {
        d.log().contains("configuration reloaded")
    });
    assert_eq!(ids(&d), ["keep", "fresh"]);
}

/// One `example` source per field whose change the reload must report:
/// `(id, lines before, lines after)`. The unit test of `SourceConfig`
/// covers every field; this checks the answer through the real daemon for
/// those an old hand-kept list forgot.
/// One source per key of `[[sources]]`: its lines before and after the
/// reload. Lines `settings.KEY = ...` go into its settings, lines after
/// `[sources.indicators]` into its mapping; a source without `schedule` gets
/// the default one.
const FIELD_CHANGES: &[(&str, &str, &str)] = &[
    ("keep", "unit = \"county\"\n", "unit = \"county\"\n"),
    ("shape", "units = [\"county\"]\n", "unit = \"county\"\n"),
    (
        "coverage",
        "units = [\"county\"]\n",
        "units = [\"county\"]\ncoverage = \"listed\"\n",
    ),
    ("units", "unit = \"county\"\n", "unit = \"county/a\"\n"),
    (
        "retries",
        "unit = \"county\"\nretries = 2\n",
        "unit = \"county\"\nretries = 3\n",
    ),
    (
        "backoff",
        "unit = \"county\"\nretry_backoff = \"5s\"\n",
        "unit = \"county\"\nretry_backoff = \"6s\"\n",
    ),
    (
        "breaker",
        "unit = \"county\"\nbreaker_after = 3\n",
        "unit = \"county\"\nbreaker_after = 4\n",
    ),
    (
        "mapping",
        "unit = \"county\"\n",
        "unit = \"county\"\n[sources.indicators]\nmeetings = false\n",
    ),
    (
        "schedule",
        "unit = \"county\"\nschedule = \"0 3 * * *\"\n",
        "unit = \"county\"\nschedule = \"0 4 * * *\"\n",
    ),
    (
        "lookback",
        "unit = \"county\"\nlookback_days = 3\n",
        "unit = \"county\"\nlookback_days = 4\n",
    ),
    (
        "timeout",
        "unit = \"county\"\ntimeout = \"60s\"\n",
        "unit = \"county\"\ntimeout = \"61s\"\n",
    ),
    (
        "backfill",
        "unit = \"county\"\nbackfill_from = \"2026-01-01\"\n",
        "unit = \"county\"\nbackfill_from = \"2026-02-01\"\n",
    ),
    (
        "isolation",
        "unit = \"county\"\n",
        "unit = \"county\"\nisolation = \"process\"\n",
    ),
    (
        "memory",
        "unit = \"county\"\nisolation = \"process\"\nmemory_limit_mb = 2048\n",
        "unit = \"county\"\nisolation = \"process\"\nmemory_limit_mb = 1024\n",
    ),
    (
        "settings",
        "unit = \"county\"\nsettings.per_day = 1\n",
        "unit = \"county\"\nsettings.per_day = 2\n",
    ),
    (
        "disabled",
        "unit = \"county\"\nenabled = true\n",
        "unit = \"county\"\nenabled = false\n",
    ),
];

fn fields_config(port: u16, dir: &Path, plugins: &Path, after: bool) -> String {
    let mut text = config_text(port, dir, plugins, &[]);
    text.push_str("[[units]]\nid = \"county/a\"\nname = \"县甲\"\n");
    for (id, before, changed) in FIELD_CHANGES {
        let lines = if after { changed } else { before };
        let (lines, mapping) = lines
            .split_once("[sources.indicators]")
            .unwrap_or((lines, ""));
        let mut keys = String::new();
        let mut per_day = "1";
        for line in lines.lines() {
            match line.strip_prefix("settings.per_day = ") {
                Some(value) => per_day = value,
                None => keys.push_str(&format!("{line}\n")),
            }
        }
        if !keys.contains("schedule =") {
            keys.push_str("schedule = \"0 3 * * *\"\n");
        }
        text.push_str(&format!(
            "\n[[sources]]\nid = \"{id}\"\nplugin = \"example\"\n{keys}\
             [sources.settings]\nindicator = \"meetings\"\nper_day = {per_day}\n"
        ));
        if !mapping.is_empty() {
            text.push_str(&format!("[sources.indicators]{mapping}"));
        }
    }
    text
}

#[test]
fn the_reload_answer_names_a_change_of_every_source_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_example")]);
    let port = free_port();
    let config = write_config(
        dir,
        "tally.toml",
        &fields_config(port, dir, &plugins, false),
    );
    let d = TestDaemon::start(&config, port);
    write_config(dir, "tally.toml", &fields_config(port, dir, &plugins, true));
    let (status, body) = post(
        &format!("{}/api/v1/reload", d.base),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    )
    .unwrap();
    assert_eq!(status, 200, "{body}\n{}", d.log());
    let changes: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        changes,
        serde_json::json!({
            "added": [],
            // A source disabled by the reload stops: it is removed from the running set.
            "removed": ["disabled"],
            "changed": [
                "backfill", "backoff", "breaker", "coverage", "isolation", "lookback", "mapping",
                "memory", "retries", "schedule", "settings", "shape", "timeout", "units",
            ],
            "unchanged": ["keep"],
        })
    );
    assert_eq!(d.source("coverage")["coverage"], "listed");
    assert_eq!(d.source("shape")["coverage"], "listed");
    assert_eq!(d.source("mapping")["emits"], serde_json::json!([]));
}
