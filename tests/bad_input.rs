//! Bad input an operator or a client can give: broken configurations, bad
//! periods, bad API parameters; and secrets that must not show anywhere.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// A temporary directory (canonical path) with a private plugin directory
/// holding the `example` and `http_json` plugins.
fn env() -> TestDir {
    TestDir::new(&[
        bundled_plugin("tally_example"),
        bundled_plugin("tally_http_json"),
    ])
}

/// Writes the configuration `name`: lines 1 to 3 are `[daemon]` with
/// `data_dir` and `plugin_dirs`, and `body` follows from line 4, so the line
/// numbers in the cases can be read off. The key lines `body` starts with
/// belong to `[daemon]`; the rest, from its first blank line or table on,
/// is written as it is.
fn case_config(env: &TestDir, name: &str, body: &str) -> PathBuf {
    let rest = body
        .find("\n\n")
        .filter(|at| !body[..*at].lines().any(|l| l.starts_with('[')))
        .map_or(0, |at| at + 1);
    env.config()
        .without_listen()
        .daemon(&body[..rest])
        .toml(&body[rest..])
        .write_as(name)
}

/// A valid body (lines 4..=22): one unit, one indicator, one `example` source.
const OK_BODY: &str = r#"
[[units]]
id = "org"
name = "机关"

[[indicators]]
id = "meetings"
name = "会议次数"
kind = "count"
unit = "次"

[[sources]]
id = "ex"
plugin = "example"
unit = "org"
schedule = "0 2 * * *"
[sources.settings]
indicator = "meetings"
per_day = 2.0
"#;

/// Runs `tallyd check` on `body` and asserts exit code 1 and that stderr
/// holds `FILE:LINE:COL: KEY: MESSAGE` (the message as a prefix).
#[track_caller]
fn check_fails(env: &TestDir, name: &str, body: &str, place: &str, message: &str) -> String {
    check_fails_env(env, name, body, place, message, &[])
}

#[track_caller]
fn check_fails_env(
    env: &TestDir,
    name: &str,
    body: &str,
    place: &str,
    message: &str,
    vars: &[(&str, &str)],
) -> String {
    let config = case_config(env, &format!("{name}.toml"), body);
    let out = run_tallyd_env(&["check", "--config", config.to_str().unwrap()], vars);
    let err = stderr(&out);
    assert_eq!(
        exit_code(&out),
        1,
        "{name}: stdout:\n{}stderr:\n{err}",
        stdout(&out)
    );
    let expected = format!("{}:{place}: {message}", config.display());
    assert!(
        err.contains(&expected),
        "{name}: expected {expected:?} in stderr:\n{err}"
    );
    err
}

#[test]
fn the_ok_body_is_ok() {
    // The cases below each break this configuration in one place.
    let env = env();
    let config = case_config(&env, "ok.toml", OK_BODY);
    let out = run_tallyd(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(exit_code(&out), 0, "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn check_names_the_place_of_an_unknown_key() {
    let env = env();
    let body = OK_BODY.replace(
        "schedule = \"0 2 * * *\"\n",
        "schedule = \"0 2 * * *\"\nretry = 3\n",
    );
    check_fails(
        &env,
        "unknown-key",
        &body,
        "20:1: sources[0].retry",
        "unknown field `retry`",
    );
}

#[test]
fn check_names_an_unknown_parent_unit() {
    // Unit ids are paths from the root, so the parent of `a/b` is `a` by
    // construction and a cycle cannot be written at all; what can go wrong is
    // a parent that does not exist.
    let env = env();
    let body = OK_BODY.replace(
        "name = \"机关\"\n",
        "name = \"机关\"\n[[units]]\nid = \"a/b\"\nname = \"乙\"\n",
    );
    check_fails(
        &env,
        "unknown-parent",
        &body,
        "9:6: units[1].id",
        "unknown parent unit \"a\" of unit \"a/b\"",
    );
}

#[test]
fn check_names_a_duplicate_unit_id() {
    let env = env();
    let body = OK_BODY.replace(
        "name = \"机关\"\n",
        "name = \"机关\"\n[[units]]\nid = \"org\"\nname = \"另一个机关\"\n",
    );
    check_fails(
        &env,
        "duplicate-unit",
        &body,
        "9:6: units[1].id",
        "duplicate unit id \"org\", first defined at units[0].id (line 6)",
    );
}

#[test]
fn check_names_a_bad_cron_expression() {
    let env = env();
    let body = OK_BODY.replace("\"0 2 * * *\"", "\"61 2 * * *\"");
    check_fails(
        &env,
        "bad-cron",
        &body,
        "19:12: sources[0].schedule",
        "invalid cron expression \"61 2 * * *\"",
    );
}

#[test]
fn check_names_an_unknown_plugin() {
    let env = env();
    let body = OK_BODY.replace("plugin = \"example\"", "plugin = \"nope\"");
    let err = check_fails(
        &env,
        "unknown-plugin",
        &body,
        "17:10: sources[0].plugin",
        "unknown plugin \"nope\"",
    );
    // It says what is there instead.
    assert!(
        err.contains("example") && err.contains("http_json"),
        "{err}"
    );
}

#[test]
fn check_names_a_missing_env_secret_and_shows_no_value() {
    let env = env();
    // A second source, on http_json, whose header joins a secret that is set
    // and one that is not.
    let body = format!(
        "{OK_BODY}
[[sources]]
id = \"portal\"
plugin = \"http_json\"
unit = \"org\"
schedule = \"0 3 * * *\"
[sources.settings]
url = \"http://127.0.0.1:9/stats\"
headers = {{ Authorization = \"Bearer ${{env:TALLY_TEST_SET_SECRET}}${{env:TALLY_TEST_MISSING_SECRET}}\" }}
[[sources.settings.values]]
indicator = \"meetings\"
path = \"$.data.meetings\"
"
    );
    let set_secret = "set-secret-0d4c2b9e7f";
    let err = check_fails_env(
        &env,
        "missing-secret",
        &body,
        "31:29: sources[1].settings.headers.Authorization",
        "environment variable \"TALLY_TEST_MISSING_SECRET\" is not set",
        &[("TALLY_TEST_SET_SECRET", set_secret)],
    );
    assert!(!err.contains(set_secret), "{err}");

    // The same on the API token, in `[daemon]` (line 4 of this file).
    let body = format!("api_token = \"${{env:TALLY_TEST_MISSING_SECRET}}\"\n{OK_BODY}");
    check_fails(
        &env,
        "missing-token",
        &body,
        "4:13: daemon.api_token",
        "environment variable \"TALLY_TEST_MISSING_SECRET\" is not set",
    );
}

#[test]
fn check_names_an_indicator_no_source_emits() {
    let env = env();
    let body = OK_BODY.replace(
        "unit = \"次\"\n",
        "unit = \"次\"\n\n[[indicators]]\nid = \"trainings\"\nname = \"培训次数\"\nkind = \"count\"\nunit = \"次\"\n",
    );
    check_fails(
        &env,
        "unemitted-indicator",
        &body,
        "16:6: indicators[1].id",
        "no source emits indicator \"trainings\"",
    );
}

#[test]
fn check_places_bad_plugin_settings_at_the_setting() {
    let env = env();
    // sources[1] is an http_json source whose rows.path (line 32) is not a JSONPath.
    let body = format!(
        "{OK_BODY}
[[sources]]
id = \"portal\"
plugin = \"http_json\"
unit = \"org\"
schedule = \"0 3 * * *\"
[sources.settings]
url = \"http://127.0.0.1:9/stats\"
[sources.settings.rows]
path = \"$.data[\"
date = \"date\"
[sources.settings.rows.fields]
meetings = \"n\"
"
    );
    check_fails(
        &env,
        "bad-settings",
        &body,
        "32:8: sources[1].settings.rows.path",
        "invalid JSONPath \"$.data[\"",
    );
}

#[test]
fn check_fails_on_a_missing_config_file() {
    let env = env();
    let missing = env.dir.join("nowhere.toml");
    let out = run_tallyd(&["check", "--config", missing.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(exit_code(&out), 1, "{err}");
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
}

const FORMS: [&str; 6] = [
    "2026-11-27",
    "2026-W48",
    "2026-11",
    "2026-Q4",
    "2026",
    "2026-10-01..2026-11-15",
];

#[track_caller]
fn assert_lists_forms(text: &str) {
    for form in FORMS {
        assert!(text.contains(form), "{form} missing in {text:?}");
    }
}

#[test]
fn report_refuses_a_bad_period_listing_the_accepted_forms() {
    let env = env();
    let config = case_config(&env, "ok.toml", OK_BODY);
    let out = run_tallyd(&[
        "report",
        "--config",
        config.to_str().unwrap(),
        "--period",
        "2026-Q5",
    ]);
    let err = stderr(&out);
    assert_eq!(exit_code(&out), 1, "{err}");
    assert!(err.contains("2026-Q5"), "{err}");
    assert_lists_forms(&err);
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
}

/// The JSON `{"error": "..."}` of a 4xx answer.
#[track_caller]
fn error_of(d: &TestDaemon, path: &str, status: u16) -> String {
    let (got, body) = d.get(path);
    assert_eq!(got, status, "GET {path}: {body}");
    let json: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"));
    json["error"]
        .as_str()
        .unwrap_or_else(|| panic!("GET {path}: no error string: {body}"))
        .to_owned()
}

#[test]
fn the_api_answers_bad_parameters_with_400_and_what_is_accepted() {
    let env = env();
    let d = env.config().toml(OK_BODY).start();

    let e = error_of(&d, "/api/v1/summary?period=2026-Q5", 400);
    assert!(e.contains("2026-Q5"), "{e}");
    assert_lists_forms(&e);

    let e = error_of(&d, "/api/v1/summary?period=2026-Q4&unit=nope", 400);
    assert!(e.contains("nope"), "{e}");

    let e = error_of(&d, "/api/v1/summary", 400);
    assert!(e.contains("period"), "{e}");
    assert_lists_forms(&e);

    let e = error_of(&d, "/api/v1/summary?period=2026-Q4&format=pdf", 400);
    assert!(
        e.contains("pdf") && e.contains("json") && e.contains("csv"),
        "{e}"
    );

    let e = error_of(&d, "/api/v1/summary?period=2026-Q4&colour=red", 400);
    assert!(e.contains("colour") && e.contains("period"), "{e}");

    let e = error_of(&d, "/api/v1/summary?period=2026-Q4&depth=-1", 400);
    assert!(e.contains("depth"), "{e}");

    let e = error_of(&d, "/api/v1/nothing-here", 404);
    assert!(e.contains("/api/v1/summary"), "{e}");

    // A good request still works after all that.
    let (status, body) = d.get("/api/v1/summary?period=2026-Q4");
    assert_eq!(status, 200, "{body}");
}

/// A local HTTP server that answers every request with a 500 whose body
/// echoes the request's headers, Authorization first: a careless upstream
/// that puts the caller's secret into its error page.
struct EchoServer {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

fn echo_server() -> EchoServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let mut lines: Vec<&str> = head.lines().skip(1).filter(|l| !l.is_empty()).collect();
            lines.sort_by_key(|l| !l.to_ascii_lowercase().starts_with("authorization"));
            let body = format!("internal error; you sent {}", lines.join("; "));
            let answer = format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(answer.as_bytes());
            sink.lock().unwrap().push(head);
        }
    });
    EchoServer { port, seen }
}

#[test]
fn secrets_never_show_in_logs_metrics_or_api_answers() {
    const TOKEN: &str = "tok-5b8e2d71c9a4";
    const SECRET: &str = "sec-a93f17e6b2d0";
    let vars = [
        ("TALLY_TEST_TOKEN", TOKEN),
        ("TALLY_TEST_SECRET", SECRET),
        // Debug logs too: a request logged with its headers would be a leak.
        ("RUST_LOG", "debug"),
    ];
    let env = env();
    let echo = echo_server();
    let body = format!(
        "
[[units]]
id = \"org\"
name = \"机关\"

[[indicators]]
id = \"portal_articles\"
name = \"门户网站上稿数\"
kind = \"count\"
unit = \"篇\"

[[sources]]
id = \"portal\"
plugin = \"http_json\"
unit = \"org\"
schedule = \"0 0 3 1 1 *\"
timeout = \"10s\"
[sources.settings]
url = \"http://127.0.0.1:{}/stats\"
headers = {{ Authorization = \"Bearer ${{env:TALLY_TEST_SECRET}}\" }}
[[sources.settings.values]]
indicator = \"portal_articles\"
path = \"$.data.articles\"
",
        echo.port
    );
    let cfg = env
        .config()
        .daemon("api_token = \"${env:TALLY_TEST_TOKEN}\"")
        .toml(&body);
    let config = cfg.write_as("secret.toml");

    // `check` and a dry run on the command line.
    let out = run_tallyd_env(&["check", "--config", config.to_str().unwrap()], &vars);
    assert_eq!(exit_code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let check_output = format!("{}{}", stdout(&out), stderr(&out));
    let out = run_tallyd_env(
        &[
            "collect",
            "--config",
            config.to_str().unwrap(),
            "--source",
            "portal",
            "--dry-run",
        ],
        &vars,
    );
    let dry_run_output = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(exit_code(&out), 1, "{dry_run_output}");
    assert!(dry_run_output.contains("HTTP 500"), "{dry_run_output}");

    // The source never succeeded, so it runs at start; its schedule (once a
    // year) keeps scheduled runs from colliding with the manual one below.
    let d = TestDaemon::start_with_env(&config, cfg.port(), &vars);
    d.wait_for("a failed run of portal", 30, |d| {
        d.runs("portal", "error") >= 1
    });

    // The secret really went out, and came back in the error page: the
    // test would see a leak.
    let seen = echo.seen.lock().unwrap().join("\n");
    assert!(
        seen.contains(SECRET),
        "the echo server never got the secret:\n{seen}"
    );
    let portal = d.source("portal");
    let error = portal["last_error"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("HTTP 500"), "{portal:#}");
    assert!(
        error.to_ascii_lowercase().contains("authorization"),
        "{portal:#}"
    );

    // A manual run with the token: its report carries the error too.
    let url = format!("{}/api/v1/sources/portal/run", d.base);
    let (status, report) = post(&url, &[("Authorization", &format!("Bearer {TOKEN}"))]).unwrap();
    assert_eq!(status, 200, "{report}");
    assert!(report.contains("HTTP 500"), "{report}");

    let answers = [
        ("check output", check_output),
        ("dry run output", dry_run_output),
        ("run report", report),
        ("/metrics", d.get("/metrics").1),
        ("/api/v1/sources", d.get("/api/v1/sources").1),
        ("/api/v1/indicators", d.get("/api/v1/indicators").1),
        ("/api/v1/units", d.get("/api/v1/units").1),
        ("daemon log", d.log()),
    ];
    for (what, text) in &answers {
        for secret in [TOKEN, SECRET] {
            assert!(
                !text.contains(secret),
                "{secret} shows in the {what}:\n{text}"
            );
        }
    }
}

#[test]
fn bad_command_line_arguments_are_user_errors() {
    for args in [
        &[
            "report", "--config", "x.toml", "--period", "2026-Q4", "--format", "pdf",
        ][..],
        &[
            "collect",
            "--config",
            "x.toml",
            "--source",
            "s",
            "--from",
            "2026-13-01",
            "--to",
            "2026-12-01",
        ][..],
        &["frobnicate"][..],
    ] {
        let out = run_tallyd(args);
        assert_eq!(exit_code(&out), 1, "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).is_empty());
    }
    let out = run_tallyd(&["--help"]);
    assert_eq!(exit_code(&out), 0);
    assert!(stdout(&out).contains("tallyd"));
}

/// `check` names every unset secret, each at its key, and still loads the
/// plugins and lets them validate their settings; `plugins --config` lists
/// plugins whatever the secrets; `run` refuses to start.
#[test]
fn check_reports_every_unset_secret_and_checks_everything_else() {
    let env = env();
    // Line 4: the token; the example source (17..22) has a bad setting; the
    // http_json source (24 on) two unset secrets.
    let body = format!(
        "api_token = \"${{env:TALLY_TEST_UNSET_TOKEN}}\"\n{}
[[sources]]
id = \"portal\"
plugin = \"http_json\"
unit = \"org\"
schedule = \"0 3 * * *\"
[sources.settings]
url = \"http://127.0.0.1:9/stats\"
headers = {{ Authorization = \"Bearer ${{env:TALLY_TEST_UNSET_SECRET}}\", X-Key = \"${{file:no-such-key}}\" }}
[[sources.settings.values]]
indicator = \"meetings\"
path = \"$.data.meetings\"
",
        OK_BODY.replace("per_day = 2.0", "per_day = -1.0")
    );
    let config = case_config(&env, "unset.toml", &body);
    let path = config.display().to_string();
    let out = run_tallyd(&["check", "--config", &path]);
    let err = stderr(&out);
    assert_eq!(exit_code(&out), 1, "{}{err}", stdout(&out));
    for expected in [
        format!(
            "{path}:4:13: daemon.api_token: environment variable \"TALLY_TEST_UNSET_TOKEN\" is not set"
        ),
        format!(
            "{path}:32:29: sources[1].settings.headers.Authorization: environment variable \"TALLY_TEST_UNSET_SECRET\" is not set"
        ),
        format!("{path}:32:78: sources[1].settings.headers.X-Key: cannot read secret file"),
        // The plugin was loaded and validated its settings all the same.
        format!("{path}:23:11: sources[0].settings.per_day:"),
    ] {
        assert!(err.contains(&expected), "expected {expected:?} in:\n{err}");
    }

    // Only the secrets wrong: everything else is checked and shown.
    let config = case_config(
        &env,
        "unset.toml",
        &body.replace("per_day = -1.0", "per_day = 2.0"),
    );
    let out = run_tallyd(&["check", "--config", &path]);
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(exit_code(&out), 1, "{text}{err}");
    assert_eq!(err.matches("error: ").count(), 3, "{err}");
    assert!(text.contains("3 secrets not set"), "{text}");
    assert!(text.contains("source portal (plugin http_json"), "{text}");
    assert!(text.contains("next runs:"), "{text}");

    // Listing plugins needs no secret.
    let out = run_tallyd(&["plugins", "--config", config.to_str().unwrap()]);
    assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("http_json"), "{}", stdout(&out));

    // The daemon does not start without them.
    let out = run_tallyd(&["run", "--config", &path]);
    assert_eq!(exit_code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("\"TALLY_TEST_UNSET_TOKEN\" is not set"),
        "{}",
        stderr(&out)
    );
}
