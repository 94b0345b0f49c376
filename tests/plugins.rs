//! Plugins as operators meet them: what `tallyd plugins` finds, what it
//! refuses and why, and a misbehaving plugin (panic, error, hang) that stays
//! the problem of its own run while the daemon and the other sources go on.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::*;

/// One unit, `org`, and the count indicators given (named by their ids).
fn org(config: TestConfig, indicators: &[&str]) -> TestConfig {
    indicators
        .iter()
        .fold(config.unit("org", "机关"), |config, id| {
            config.indicator(id, id, "count", "次")
        })
}

/// A `faulty` source on unit `org` emitting `x`.
fn faulty_source(id: &str, schedule: &str, settings: &str, extra: &str) -> String {
    format!(
        "[[sources]]\nid = \"{id}\"\nplugin = \"faulty\"\nunit = \"org\"\nschedule = \"{schedule}\"\n{extra}\n[sources.settings]\n{settings}\n\n"
    )
}

/// The names of the loaded plugins in `tallyd plugins` output, with their lines.
fn loaded_plugins(text: &str) -> Vec<(String, String)> {
    text.lines()
        .skip(1) // the header
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| {
            !l.starts_with(' ') && !l.starts_with("refused") && !l.starts_with("no plugins")
        })
        .map(|l| {
            let name = l.split_whitespace().next().unwrap_or_default().to_owned();
            (name, l.to_owned())
        })
        .collect()
}

/// The one output line about `path` (as `PATH: ...`), with the whole output on failure.
#[track_caller]
fn line_about<'a>(text: &'a str, path: &Path) -> &'a str {
    let needle = format!("{}: ", path.display());
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(&needle)).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line about {needle:?} in:\n{text}"
    );
    lines[0]
}

/// A library's path once loaded (the daemon canonicalizes it).
fn loaded_path(dir: &Path, lib_name: &str) -> PathBuf {
    dir.join(lib_file(lib_name)).canonicalize().unwrap()
}

#[test]
fn plugins_lists_the_bundled_libraries_with_name_version_abi_and_path() {
    let t = TestDir::new(&[
        bundled_plugin("tally_http_json"),
        bundled_plugin("tally_csv_form"),
        bundled_plugin("tally_example"),
    ]);
    let dir = &t.plugins;
    let config = t.config().write();
    let out = run_tallyd(&["plugins", "--config", config.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(exit_code(&out), 0, "{text}{}", stderr(&out));

    let loaded = loaded_plugins(&text);
    let names: Vec<&str> = loaded.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["csv_form", "example", "http_json"], "{text}");
    for (name, lib) in [
        ("http_json", "tally_http_json"),
        ("csv_form", "tally_csv_form"),
        ("example", "tally_example"),
    ] {
        let (_, line) = loaded.iter().find(|(n, _)| n == name).unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        // NAME VERSION ABI SDK PATH: the bundled plugins share the workspace version.
        assert_eq!(fields[1], env!("CARGO_PKG_VERSION"), "{line}");
        assert_eq!(fields[2], "v1", "{line}");
        assert_eq!(
            fields.last().copied(),
            Some(loaded_path(dir, lib).to_str().unwrap()),
            "{line}"
        );
    }
    assert!(!text.contains("refused"), "{text}");
}

/// Every kind of refusal at once, next to good plugins that still load.
struct Refusals {
    t: TestDir,
    good: PathBuf,
    dup: PathBuf,
    open: PathBuf,
}

impl Refusals {
    /// A configuration loading from the good, the duplicate and the open
    /// directories, in this order.
    fn config(&self) -> TestConfig {
        self.t
            .config()
            .plugin_dirs(&[&self.good, &self.dup, &self.open])
    }
}

fn refusals_setup() -> Refusals {
    // The good plugins, beside a library that is not a plugin, one of ABI v2,
    // and a plugin file that anyone may overwrite.
    let t = TestDir::new(&[
        bundled_plugin("tally_http_json"),
        bundled_plugin("tally_csv_form"),
        bundled_plugin("tally_example"),
        fixture_plugin("tally_fixture_not_a_plugin"),
        fixture_plugin("tally_fixture_abi_v2"),
        fixture_plugin("tally_fixture_faulty"),
    ]);
    let good = t.plugins.clone();
    set_mode(&good.join(lib_file("tally_fixture_faulty")), 0o777);
    // The same http_json library under another file name in a second directory.
    let dup = plugin_dir_with(&t.dir.join("dup"), &[]);
    let copy = dup.join(lib_file("tally_http_json_copy"));
    std::fs::copy(bundled_plugin("tally_http_json"), &copy).unwrap();
    set_mode(&copy, 0o755);
    // A directory anyone may write to: nothing in it loads, not even a plugin
    // that is safe on its own and loaded nowhere else.
    let open = plugin_dir_with(
        &t.dir.join("open"),
        &[fixture_plugin("tally_fixture_faulty")],
    );
    set_mode(&open, 0o777);
    Refusals { t, good, dup, open }
}

/// Asserts the refusal lines of `tallyd plugins` or `tallyd check` output.
#[track_caller]
fn assert_refusals(r: &Refusals, text: &str) {
    let line = line_about(text, &loaded_path(&r.good, "tally_fixture_not_a_plugin"));
    assert!(line.contains("not a tally plugin"), "{line}");

    let line = line_about(text, &loaded_path(&r.good, "tally_fixture_abi_v2"));
    assert!(line.contains("ABI version mismatch"), "{line}");
    assert!(line.contains("v2") && line.contains("v1"), "{line}");

    let first = loaded_path(&r.good, "tally_http_json");
    let line = line_about(text, &loaded_path(&r.dup, "tally_http_json_copy"));
    assert!(
        line.contains("duplicate plugin name \"http_json\""),
        "{line}"
    );
    assert!(line.contains(first.to_str().unwrap()), "{line}");

    let line = line_about(text, &loaded_path(&r.good, "tally_fixture_faulty"));
    assert!(line.contains("writable by group or others"), "{line}");

    let line = line_about(text, &r.open);
    assert!(line.contains("writable by group or others"), "{line}");
}

#[test]
fn plugins_refuses_bad_libraries_with_one_line_each_and_loads_the_others() {
    let r = refusals_setup();
    let config = r.config().write();
    let out = run_tallyd(&["plugins", "--config", config.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(exit_code(&out), 0, "{text}{}", stderr(&out));

    let loaded = loaded_plugins(&text);
    let names: Vec<&str> = loaded.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["csv_form", "example", "http_json"], "{text}");
    // The first http_json found is the one loaded.
    let (_, http_json) = loaded.iter().find(|(n, _)| n == "http_json").unwrap();
    assert!(
        http_json.ends_with(loaded_path(&r.good, "tally_http_json").to_str().unwrap()),
        "{http_json}"
    );
    assert_refusals(&r, &text);
}

#[test]
fn check_shows_sources_on_good_plugins_and_fails_on_refused_libraries() {
    let r = refusals_setup();
    let forms = r.t.dir.join("forms");
    std::fs::create_dir_all(&forms).unwrap();
    let config = org(r.config(), &["meetings", "portal_articles", "trainings"])
        .toml(&format!(
            "[[sources]]\nid = \"ex\"\nplugin = \"example\"\nunit = \"org\"\nschedule = \"0 2 * * *\"\n\
             [sources.settings]\nindicator = \"meetings\"\nper_day = 2.0\n\n\
             [[sources]]\nid = \"portal\"\nplugin = \"http_json\"\nunit = \"org\"\nschedule = \"0 3 * * *\"\n\
             [sources.settings]\nurl = \"http://127.0.0.1:9/stats\"\n\
             [[sources.settings.values]]\nindicator = \"portal_articles\"\npath = \"$.data.articles\"\n\n\
             [[sources]]\nid = \"forms\"\nplugin = \"csv_form\"\nunit = \"org\"\nschedule = \"0 4 * * *\"\n\
             [sources.settings]\ndir = {}\nindicators = [\"trainings\"]\n",
            toml_path(&forms),
        ))
        .write();
    let out = run_tallyd(&["check", "--config", config.to_str().unwrap()]);
    let text = stdout(&out);
    // The sources on good plugins are all checked and shown, but a refused
    // library is an error for `check`: exit 1.
    assert_eq!(exit_code(&out), 1, "{text}{}", stderr(&out));
    assert!(
        stderr(&out).contains("5 plugin libraries refused"),
        "{}",
        stderr(&out)
    );
    for expected in [
        "source ex (plugin example",
        "source portal (plugin http_json",
        "source forms (plugin csv_form",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    // `check` shows the operator what was refused too.
    assert_refusals(&r, &text);
}

/// A daemon on the faulty fixture (and the example plugin) with `sources`
/// emitting `x`, and its directory.
fn faulty_daemon(sources: &str, daemon_extra: &str) -> (TestDir, TestDaemon) {
    let t = TestDir::new(&[
        fixture_plugin("tally_fixture_faulty"),
        bundled_plugin("tally_example"),
    ]);
    let d = org(t.config().daemon(daemon_extra), &["x"])
        .toml(sources)
        .start();
    (t, d)
}

#[test]
fn a_panicking_plugin_fails_its_own_run_and_nothing_else() {
    let sources = format!(
        "{}{}",
        faulty_source("ok", "* * * * * *", "mode = \"ok\"", ""),
        faulty_source("boom", "* * * * * *", "mode = \"panic\"", ""),
    );
    let (_t, d) = faulty_daemon(&sources, "");

    d.wait_for("a panic run of boom", 30, |d| d.runs("boom", "panic") >= 1);
    let boom = d.source("boom");
    let last = &boom["last_run"];
    assert_eq!(last["result"], "panic", "{boom:#}");
    let error = last["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("faulty plugin panicked on purpose"),
        "{boom:#}"
    );
    assert_eq!(boom["last_error"]["result"], "panic", "{boom:#}");
    assert_eq!(boom["runs"]["success"], 0, "{boom:#}");

    // The daemon is alive and the other source goes on succeeding on its
    // per-second schedule after the panic.
    assert_eq!(d.get("/healthz").0, 200);
    let panics = d.runs("boom", "panic");
    let successes = d.runs("ok", "success");
    d.wait_for("another success of ok", 30, |d| {
        d.runs("ok", "success") > successes
    });
    d.wait_for("another panic run of boom", 30, |d| {
        d.runs("boom", "panic") > panics
    });
    assert_eq!(d.get("/healthz").0, 200);

    let ok = d.source("ok");
    assert_eq!(ok["last_run"]["result"], "success", "{ok:#}");
    assert!(ok["last_error"].is_null(), "{ok:#}");
    for result in ["error", "timeout", "panic"] {
        assert_eq!(ok["runs"][result], 0, "{ok:#}");
    }

    // `/metrics` shows a scheduled run within about a second.
    d.wait_for("/metrics to show the runs", 30, |d| {
        let samples = d.samples();
        let runs = |s: &str, result: &str| {
            sum_runs(
                &samples,
                &[("source", s), ("plugin", "faulty"), ("result", result)],
            )
        };
        runs("ok", "success") >= 1.0 && runs("boom", "panic") >= 2.0
    });
    let samples = d.samples();
    let up = |s: &str| {
        find_sample(
            &samples,
            "tally_source_up",
            &[("source", s), ("plugin", "faulty")],
        )
    };
    assert_eq!(up("ok"), Some(1.0));
    assert_eq!(up("boom"), Some(0.0));
    let panic_runs = find_sample(
        &samples,
        "tally_source_runs_total",
        &[
            ("source", "boom"),
            ("plugin", "faulty"),
            ("result", "panic"),
        ],
    );
    assert!(panic_runs.is_some_and(|n| n >= 2.0), "{panic_runs:?}");
}

#[test]
fn failing_and_timing_out_sources_are_recorded_beside_a_healthy_one() {
    let sources = format!(
        // Errors by kind on /metrics are opt-in (the series budget).
        "[metrics]\nsource_error_kinds = true\n{}{}{}",
        faulty_source("ok", "* * * * * *", "mode = \"ok\"", ""),
        faulty_source("fail", "*/2 * * * * *", "mode = \"error\"", ""),
        faulty_source(
            "slow",
            "*/3 * * * * *",
            "mode = \"sleep\"\nsleep_ms = 5000",
            "timeout = \"1s\""
        ),
    );
    let (_t, d) = faulty_daemon(&sources, "");

    d.wait_for("an error run of fail", 30, |d| d.runs("fail", "error") >= 1);
    d.wait_for("a timeout run of slow", 30, |d| {
        d.runs("slow", "timeout") >= 1
    });
    d.wait_for("a success run of ok", 30, |d| d.runs("ok", "success") >= 1);

    let fail = d.source("fail");
    assert_eq!(fail["last_error"]["result"], "error", "{fail:#}");
    let text = fail["last_error"]["error"].as_str().unwrap_or_default();
    assert!(text.contains("faulty plugin failed on purpose"), "{fail:#}");
    assert!(fail["last_success"].is_null(), "{fail:#}");

    let slow = d.source("slow");
    assert_eq!(slow["last_error"]["result"], "timeout", "{slow:#}");
    let text = slow["last_error"]["error"].as_str().unwrap_or_default();
    assert!(text.contains("timed out after 1s"), "{slow:#}");
    assert!(slow["last_success"].is_null(), "{slow:#}");
    assert_eq!(slow["runs"]["success"], 0, "{slow:#}");

    let ok = d.source("ok");
    assert!(ok["last_error"].is_null(), "{ok:#}");
    assert!(ok["last_success"].is_string(), "{ok:#}");

    // `/metrics` shows a scheduled run within about a second.
    d.wait_for("/metrics to show the runs", 30, |d| {
        let samples = d.samples();
        let runs = |s: &str, result: &str| {
            sum_runs(
                &samples,
                &[("source", s), ("plugin", "faulty"), ("result", result)],
            )
        };
        runs("fail", "error") >= 1.0
            && runs("slow", "timeout") >= 1.0
            && runs("ok", "success") >= 1.0
    });
    let samples = d.samples();
    let get = |name: &str, labels: &[(&str, &str)]| {
        find_sample(&samples, name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in /metrics"))
    };
    let up = |s: &str| get("tally_source_up", &[("source", s), ("plugin", "faulty")]);
    assert_eq!(up("fail"), 0.0);
    assert_eq!(up("slow"), 0.0);
    assert_eq!(up("ok"), 1.0);
    let runs = |s: &str, result: &str| {
        get(
            "tally_source_runs_total",
            &[("source", s), ("plugin", "faulty"), ("result", result)],
        );
        sum_runs(
            &samples,
            &[("source", s), ("plugin", "faulty"), ("result", result)],
        )
    };
    assert!(runs("fail", "error") >= 1.0);
    // The faulty plugin reports its failure as `upstream`.
    assert_eq!(
        get(
            "tally_source_runs_total",
            &[
                ("source", "fail"),
                ("result", "error"),
                ("kind", "upstream")
            ],
        ),
        runs("fail", "error")
    );
    assert!(runs("slow", "timeout") >= 1.0);
    assert!(runs("ok", "success") >= 1.0);
    assert_eq!(runs("ok", "error"), 0.0);
    assert_eq!(runs("fail", "success"), 0.0);
}

/// `tally_source_runs_total` summed over the series matching `labels`:
/// runs with result `error` are counted by kind.
fn sum_runs(samples: &[Sample], labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == "tally_source_runs_total")
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
        .map(|s| s.value)
        .sum()
}

/// The `example` source of the author guide, on unit `org`.
const EXAMPLE_SOURCE: &str = "[[sources]]\nid = \"ex\"\nplugin = \"example\"\nunit = \"org\"\n\
    schedule = \"0 0 3 1 1 *\"\n[sources.settings]\nindicator = \"meetings\"\nper_day = 2.0\n\n";

#[test]
fn the_author_guide_example_collects() {
    let t = TestDir::new(&[bundled_plugin("tally_example")]);
    let config = org(t.config(), &["meetings"]).toml(EXAMPLE_SOURCE).write();
    let out = run_tallyd(&[
        "collect",
        "--config",
        config.to_str().unwrap(),
        "--source",
        "ex",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-03",
        "--dry-run",
    ]);
    let text = stdout(&out);
    assert_eq!(exit_code(&out), 0, "{text}{}", stderr(&out));
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    let days: Vec<&str> = lines.iter().map(|o| o["day"].as_str().unwrap()).collect();
    assert_eq!(days, ["2026-01-01", "2026-01-02", "2026-01-03"], "{text}");
    for o in &lines {
        assert_eq!(o["source"], "ex", "{o}");
        assert_eq!(o["unit"], "org", "{o}");
        assert_eq!(o["indicator"], "meetings", "{o}");
        assert_eq!(o["value"], 2.0, "{o}");
    }

    // Without a range: one run now, still a dry run.
    let out = run_tallyd(&[
        "collect",
        "--config",
        config.to_str().unwrap(),
        "--source",
        "ex",
        "--dry-run",
    ]);
    let text = stdout(&out);
    assert_eq!(exit_code(&out), 0, "{text}{}", stderr(&out));
    assert!(!text.trim().is_empty(), "no observations printed");
    for l in text.lines() {
        let o: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
        assert_eq!(o["indicator"], "meetings", "{o}");
    }
}

#[test]
fn running_a_source_now_needs_the_api_token() {
    let t = TestDir::new(&[bundled_plugin("tally_example")]);
    let token = "itest-token-4e1f0c9a";
    let d = org(
        t.config().daemon(&format!("api_token = \"{token}\"")),
        &["meetings"],
    )
    .toml(EXAMPLE_SOURCE)
    .start();
    // The run at start (the source never succeeded) is over before we ask for
    // another, so that the answer is not 409 "already running".
    d.wait_for("the start run of ex", 30, |d| {
        let s = d.source("ex");
        !s["last_run"].is_null() && s["running"] == false
    });
    let url = format!("{}/api/v1/sources/ex/run", d.base);
    let json = |body: &str| -> Value {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{body:?} is not JSON: {e}"))
    };

    let (status, body) = post(&url, &[]).unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(json(&body)["error"].is_string(), "{body}");

    let (status, body) = post(&url, &[("Authorization", "Bearer wrong-token")]).unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(json(&body)["error"].is_string(), "{body}");

    let bearer = format!("Bearer {token}");
    let (status, body) = post(&url, &[("Authorization", &bearer)]).unwrap();
    assert_eq!(status, 200, "{body}");
    let report = json(&body);
    assert_eq!(report["source"], "ex", "{report:#}");
    assert_eq!(report["result"], "success", "{report:#}");
    assert!(
        report["observations"].as_u64().is_some_and(|n| n >= 1),
        "{report:#}"
    );
    assert!(report["error"].is_null(), "{report:#}");
    assert_eq!(d.source("ex")["last_run"]["trigger"], "manual");

    let url = format!("{}/api/v1/sources/nope/run", d.base);
    let (status, body) = post(&url, &[("Authorization", &bearer)]).unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap_or_default()
            .contains("nope"),
        "{body}"
    );

    // The token never shows in the log.
    assert!(!d.log().contains(token), "{}", d.log());
}

#[test]
fn an_unreachable_json_api_is_named_once_in_the_error() {
    let t = TestDir::new(&[bundled_plugin("tally_http_json")]);
    let closed = free_port();
    let daemon = org(t.config(), &["x"])
        .toml(&format!(
            "[[sources]]\nid = \"api\"\nplugin = \"http_json\"\nunit = \"org\"\nschedule = \"0 0 3 * * *\"\nretries = 0\n\
             [sources.settings]\nurl = \"http://127.0.0.1:{closed}/stats?token=s3cret\"\n\
             values = [{{ indicator = \"x\", path = \"$.x\" }}]\n",
        ))
        .start();
    daemon.wait_for("the start-up run of api", 30, |d| {
        !d.source("api")["last_run"].is_null()
    });
    let error = daemon.source("api")["last_run"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let request = format!("GET http://127.0.0.1:{closed}/stats");
    assert_eq!(
        error,
        format!("{request}: connection failed"),
        "the request is named once, without its query"
    );
}

#[test]
fn a_shutdown_waits_for_the_plugin_calls_under_way_not_for_queued_runs() {
    // One permit: at start the four never-run sources queue behind one another.
    let sources: String = (0..4)
        .map(|i| {
            faulty_source(
                &format!("slow{i}"),
                "0 0 3 * * *",
                "mode = \"sleep\"\nsleep_ms = 1500",
                "",
            )
        })
        .collect();
    let (t, mut d) = faulty_daemon(&sources, "max_concurrent_runs = 1");
    d.wait_for("one source's start-up run to be under way", 30, |d| {
        (0..4).any(|i| d.source(&format!("slow{i}"))["running"] == true)
    });
    let status = d.terminate();
    assert!(status.success(), "{status:?}\n{}", d.log());

    // The run under way finished and was recorded; the runs still waiting
    // for the permit were dropped, not started after the signal.
    let store = tally_store::SqliteStore::open(&t.dir.join("data")).unwrap();
    let recorded: u64 = (0..4)
        .map(|i| {
            use tally_store::Store;
            let runs = store.source_status(&format!("slow{i}")).unwrap().runs;
            runs.success + runs.error + runs.timeout + runs.panic + runs.crash
        })
        .sum();
    assert_eq!(recorded, 1, "{}", d.log());
}
