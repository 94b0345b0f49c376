//! What a source says about its data: `[sources.indicators]` renames or
//! drops what its plugin emits, and `coverage` says which of its units are
//! expected to report. Through the real daemon and bundled plugins.

use crate::support::*;

/// Two sources on the `example` plugin: `renamed` emits `meetings_raw`
/// stored as `meetings`, `dropped` emits `meetings` and drops it. `extra`
/// goes into the `[sources.indicators]` table of `renamed` (line 26 on; the
/// sources start at line 16, after `[daemon]`, the unit and the indicator).
fn mapping_config(base: &TestConfig, extra: &str) -> std::path::PathBuf {
    base.clone()
        .unit("org", "机关")
        .meetings()
        .toml(&format!(
            r#"
[[sources]]
id = "renamed"
plugin = "example"
unit = "org"
schedule = "0 3 * * *"
[sources.settings]
indicator = "meetings_raw"
per_day = 2.0
[sources.indicators]
meetings_raw = "meetings"
{extra}
[[sources]]
id = "dropped"
plugin = "example"
unit = "org"
schedule = "0 3 * * *"
[sources.settings]
indicator = "meetings"
per_day = 5.0
[sources.indicators]
meetings = false
"#
        ))
        .write()
}

#[test]
fn an_indicator_mapping_renames_and_drops_what_a_plugin_emits() {
    let t = TestDir::new(&[bundled_plugin("tally_example")]);
    let base = t.config();
    let config = mapping_config(&base, "");
    let path = config.to_str().unwrap();

    let out = run_tallyd(&["check", "--config", path]);
    assert_eq!(exit_code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("source renamed (plugin example, units org (listed)"),
        "{text}"
    );
    assert!(text.contains("emits meetings\n"), "{text}");

    let d = TestDaemon::start(&config, base.port());
    d.wait_for("the first run of both sources", 60, |d| {
        d.runs("renamed", "success") >= 1 && d.runs("dropped", "success") >= 1
    });
    // Stored under the configured id; the dropped source stored nothing.
    assert_eq!(d.source("renamed")["last_run"]["observations"], 1);
    assert_eq!(d.source("dropped")["last_run"]["observations"], 0);
    assert_eq!(
        d.source("renamed")["emits"],
        serde_json::json!(["meetings"])
    );
    assert_eq!(d.source("dropped")["emits"], serde_json::json!([]));
    let catalogue = d.get_json("/api/v1/indicators");
    assert_eq!(
        catalogue["indicators"][0]["sources"],
        serde_json::json!(["renamed"]),
        "{catalogue}"
    );
    let day = d.source("renamed")["last_run"]["window"]["to"]
        .as_str()
        .unwrap()
        .to_owned();
    let summary = d.get_json(&format!("/api/v1/summary?period={day}"));
    let cell = &summary["units"][0]["values"]["meetings"];
    assert_eq!(cell["value"], 2.0, "{summary}");
    let explained = d.get_json(&format!(
        "/api/v1/observations?period={day}&unit=org&indicator=meetings"
    ));
    let sources: Vec<&str> = explained["observations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["renamed"], "{explained}");
    drop(d);

    // The left side must be something the plugin emits: the error is at the
    // key and names what the plugin emits.
    mapping_config(&base, "meetings_done = \"meetings\"\n");
    let out = run_tallyd(&["check", "--config", path]);
    assert_eq!(exit_code(&out), 1, "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{path}:26:17: sources[0].indicators.meetings_done: plugin \"example\" of source \"renamed\" does not emit indicator \"meetings_done\"; it emits meetings_raw"
        )),
        "{err}"
    );
    // The right side must be declared.
    mapping_config(&base, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("meetings_raw = \"meetings\"", "meetings_raw = \"meeting\"");
    std::fs::write(&config, text).unwrap();
    let out = run_tallyd(&["check", "--config", path]);
    assert_eq!(exit_code(&out), 1, "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{path}:25:16: sources[0].indicators.meetings_raw: unknown indicator \"meeting\": map \"meetings_raw\" to an id declared in [[indicators]] (meetings), or to false to drop it"
        )),
        "{err}"
    );
}

/// A form that three bureaus could fill in, read by a source that lists
/// the two expected to report: 县乙's row is refused with a warning, and
/// 县乙 is neither 未报送 nor makes the county incomplete.
#[test]
fn a_listed_source_expects_its_units_only() {
    let t = TestDir::new(&[bundled_plugin("tally_csv_form")]);
    let forms = t.dir.join("forms");
    std::fs::create_dir_all(&forms).unwrap();
    std::fs::write(
        forms.join("meetings.csv"),
        "单位,日期,会议次数\n县甲,2026-07-15,3\n县乙,2026-07-20,9\n县丙,2026-08-01,4\n",
    )
    .unwrap();
    let d = t
        .config()
        .county()
        .unit("county/a", "县甲")
        .unit("county/b", "县乙")
        .unit("county/c", "县丙")
        .meetings()
        .toml(&format!(
            r#"
[[sources]]
id = "forms"
plugin = "csv_form"
units = ["county/a", "county/c"]
coverage = "listed"
schedule = "0 3 * * *"
backfill_from = "2026-07-01"
[sources.settings]
dir = {forms}
indicators = ["meetings"]
"#,
            forms = toml_path(&forms),
        ))
        .start();
    d.wait_for("the start-up run", 60, |d| d.runs("forms", "success") >= 1);
    let source = d.source("forms");
    assert_eq!(source["coverage"], "listed");
    let warnings = source["last_run"]["warnings"].to_string();
    assert!(warnings.contains("县乙"), "{warnings}");

    let q3 = d.get_json("/api/v1/summary?period=2026-Q3");
    // (value, missing, incomplete); the flags are left out when false.
    let flags = |id: &str| {
        let c = cell(&q3, id, "meetings");
        (
            c["value"].as_f64(),
            c["missing"] == true,
            c["incomplete"] == true,
        )
    };
    assert_eq!(flags("county"), (Some(7.0), false, false), "{q3}");
    assert_eq!(flags("county/a"), (Some(3.0), false, false), "{q3}");
    assert_eq!(flags("county/b"), (None, false, false), "{q3}");
    assert_eq!(flags("county/c"), (Some(4.0), false, false), "{q3}");
}
