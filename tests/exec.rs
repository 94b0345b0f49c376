//! The `exec` plugin in the real daemon, running the demo's bundled script
//! `config/demo-scripts/meetings.sh` directly (through its `#!/bin/sh` line).

use std::path::Path;

use serde_json::Value;

use crate::support::*;

#[test]
fn a_script_source_fills_the_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_exec")]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/demo-scripts/meetings.sh");
    assert!(script.is_file(), "{} is missing", script.display());
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

[[units]]
id = "county"
name = "某县"
[[units]]
id = "county/natres"
name = "自然资源局"

[[indicators]]
id = "meetings"
name = "会议次数"
kind = "count"
unit = "次"

[[sources]]
id = "natres-meetings"
plugin = "exec"
unit = "county/natres"
schedule = "0 0 3 * * *"
backfill_from = "2026-11-01"
lookback_days = 400
[sources.settings]
command = {script}
timeout = "20s"
indicators = ["meetings"]
"#,
            data = toml_path(&dir.join("data")),
            plugins = toml_path(&plugins),
            script = toml_path(&script),
        ),
    );
    let d = TestDaemon::start(&config, port);
    d.wait_for("the start-up run of the exec source", 60, |d| {
        d.runs("natres-meetings", "success") >= 1
    });

    // meetings.sh prints (2026 + 11 * 31 + day) % 4 for each day: 0, 1, 2, 3,
    // 0, ... from November 1st, so 5 rounds of 0+1+2+3 up to the 20th.
    let summary = d.get_json("/api/v1/summary?period=2026-11-01..2026-11-20");
    let natres = summary["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == "county/natres")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(natres["values"]["meetings"]["value"], 30.0, "{summary:#}");
    assert_eq!(summary["units"][0]["values"]["meetings"]["value"], 30.0);
    // The script's stderr line reached the daemon's log.
    d.wait_for("the script's stderr in the log", 10, |d| {
        d.log().contains("meetings.sh: ") && d.log().contains(" days from 2026-11-01 to ")
    });
}
