//! `isolation = "process"`: a plugin that aborts, hangs or eats memory in its
//! own `tallyd plugin-host` child fails its run and nothing else.

use crate::support::*;

fn source(id: &str, mode: &str, extra: &str) -> String {
    format!(
        r#"
[[sources]]
id = "{id}"
plugin = "faulty"
unit = "county"
schedule = "* * * * * *"
timeout = "2s"
{extra}
[sources.settings]
mode = "{mode}"
indicator = "x"
"#
    )
}

#[test]
fn an_isolated_plugin_that_aborts_hangs_or_blows_up_fails_only_its_run() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = plugin_dir_with(
        &tmp.path().join("plugins"),
        &[fixture_plugin("tally_fixture_faulty")],
    );
    let cfg = TestConfig::new(tmp.path(), &plugins)
        .county()
        .indicator("x", "计数", "count", "次");
    let port = cfg.port();
    let mut text = cfg.text();
    text.push_str(&source("aborts", "abort", r#"isolation = "process""#));
    text.push_str(&source("hangs", "hang", r#"isolation = "process""#));
    text.push_str(&source(
        "hog",
        "oom",
        "isolation = \"process\"\nmemory_limit_mb = 256",
    ));
    text.push_str(&source("isolated-ok", "ok", r#"isolation = "process""#));
    text.push_str(&source("in-daemon-ok", "ok", ""));
    let config = write_config(tmp.path(), "tally.toml", &text);
    let d = TestDaemon::start(&config, port);

    d.wait_for("crashes, timeouts and successes to pile up", 40, |d| {
        d.runs("aborts", "crash") >= 2
            && d.runs("hangs", "timeout") >= 2
            && d.runs("hog", "crash") >= 1
            && d.runs("isolated-ok", "success") >= 2
            && d.runs("in-daemon-ok", "success") >= 2
    });
    // The child is restarted for every run, and the daemon itself is untouched.
    assert_eq!(d.get("/healthz").0, 200);
    let aborts = d.source("aborts");
    let err = aborts["last_error"]["error"].as_str().unwrap_or_default();
    assert!(err.contains("SIGABRT"), "{aborts:#}");
    assert_eq!(aborts["last_error"]["result"], "crash");
    let hangs = d.source("hangs");
    assert!(
        hangs["last_error"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out after 2s"),
        "{hangs:#}"
    );
    // A hung isolated run is killed, so the next tick is not skipped forever
    // (`/metrics` shows a scheduled run within about a second).
    d.wait_for("/metrics to show the runs", 30, |d| {
        d.metric("tally_source_runs_total{plugin=\"faulty\",result=\"crash\",source=\"aborts\"}")
            .is_some_and(|v| v >= 2.0)
            && d.metric("tally_source_up{plugin=\"faulty\",source=\"isolated-ok\"}") == Some(1.0)
            && d.metric("tally_source_up{plugin=\"faulty\",source=\"hog\"}") == Some(0.0)
    });
}
