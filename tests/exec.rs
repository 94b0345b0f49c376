//! The `exec` plugin in the real daemon, running the demo's bundled script
//! `config/demo-scripts/meetings.sh` directly (through its `#!/bin/sh` line).

use std::path::Path;

use crate::support::*;

#[test]
fn a_script_source_fills_the_summary() {
    let t = TestDir::new(&[bundled_plugin("tally_exec")]);
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/demo-scripts/meetings.sh");
    assert!(script.is_file(), "{} is missing", script.display());
    let d = t
        .config()
        .county()
        .unit("county/natres", "自然资源局")
        .meetings()
        .toml(&format!(
            r#"
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
            script = toml_path(&script),
        ))
        .start();
    d.wait_for("the start-up run of the exec source", 60, |d| {
        d.runs("natres-meetings", "success") >= 1
    });

    // meetings.sh prints (2026 + 11 * 31 + day) % 4 for each day: 0, 1, 2, 3,
    // 0, ... from November 1st, so 5 rounds of 0+1+2+3 up to the 20th.
    let summary = d.get_json("/api/v1/summary?period=2026-11-01..2026-11-20");
    assert_eq!(
        value(&summary, "county/natres", "meetings"),
        30.0,
        "{summary:#}"
    );
    assert_eq!(summary["units"][0]["values"]["meetings"]["value"], 30.0);
    // The script's stderr line reached the daemon's log.
    d.wait_for("the script's stderr in the log", 10, |d| {
        d.log().contains("meetings.sh: ") && d.log().contains(" days from 2026-11-01 to ")
    });
}

/// A fake posts API on 127.0.0.1: `GET /api/posts?day=2026-11-DD` answers
/// `{"posts": DD}`.
fn posts_api() -> String {
    daily_api("/api/posts", |dd| format!("{{\"posts\": {dd}}}"))
}

fn python_example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/exec/examples/daily_posts.py")
}

/// The guide's worked example in another language conforms to the exec
/// protocol as `tallyd plugins --check-exec` checks it; a program that does
/// not is refused with its lines named.
#[test]
fn the_python_example_passes_the_conformance_check() {
    let api = posts_api();
    let script = python_example();
    let out = run_tallyd_env(
        &[
            "plugins",
            "--check-exec",
            "python3",
            script.to_str().unwrap(),
        ],
        &[("POSTS_API", &api)],
    );
    assert_eq!(exit_code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(" 4 stdout lines, 3 observations, resume state set"),
        "{text}"
    );
    assert!(text.contains("conforms to exec protocol 1"), "{text}");

    // Without its API the example exits non-zero, which the check reports.
    let out = run_tallyd(&[
        "plugins",
        "--check-exec",
        "python3",
        script.to_str().unwrap(),
    ]);
    assert_eq!(exit_code(&out), 1, "{}", stdout(&out));
    assert!(stdout(&out).contains("exit status: 2: a non-zero exit fails the run"));

    let out = run_tallyd(&["plugins", "--check-exec", "sh", "-c", "echo '{\"day\": 1}'"]);
    assert_eq!(exit_code(&out), 1);
    assert!(
        stdout(&out).contains("stdout line 1: missing field `indicator`; day 1 is not a string"),
        "{}",
        stdout(&out)
    );
}

/// The Python example as an `exec` source of the real daemon: backfilled,
/// stored and summed in a report.
#[test]
fn the_python_example_collects_in_the_daemon() {
    let api = posts_api();
    let t = TestDir::new(&[bundled_plugin("tally_exec")]);
    let config = t
        .config()
        .without_listen()
        .county()
        .indicator("posts", "发文数", "count", "篇")
        .toml(&format!(
            r#"
[[sources]]
id = "county-posts"
plugin = "exec"
unit = "county"
schedule = "0 0 3 * * *"
[sources.settings]
command = "python3"
args = [{script}]
env = {{ POSTS_API = "{api}" }}
indicators = ["posts"]
"#,
            script = toml_path(&python_example()),
        ))
        .write();
    let log = collect(&config, "county-posts", "2026-11-01", "2026-11-05");
    assert!(log.contains("success, 5 observations"), "{log}");
    let report = report_json(&config, "2026-11-01..2026-11-05");
    // 1 + 2 + 3 + 4 + 5 posts.
    assert_eq!(
        report["units"][0]["values"]["posts"]["value"], 15.0,
        "{report:#}"
    );
}
