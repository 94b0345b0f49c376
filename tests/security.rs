//! Security: write endpoints need the token, the listener stays on loopback
//! unless a token is set, request bodies are bounded, query parameters and
//! report names cannot reach outside `data_dir`, and secrets never leave.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "security-token-0001";

/// One unit, `meetings`, a steady `example` source, and the reports of the
/// missed quarters and the start written into `<dir>/reports`.
fn config(t: &TestDir) -> TestConfig {
    t.config().county().meetings().toml(&format!(
        r#"
[[sources]]
id = "steady"
plugin = "example"
unit = "county"
schedule = "0 3 * * *"
[sources.settings]
indicator = "meetings"
per_day = 1

[reports]
write_on_start = true
formats = ["csv", "md"]
dir = {reports}
"#,
        reports = toml_path(&t.dir.join("reports")),
    ))
}

/// A daemon on [`config`] with the API token, and its directory.
fn started() -> (TestDir, TestDaemon) {
    let t = TestDir::new(&[bundled_plugin("tally_example")]);
    let d = config(&t)
        .daemon(&format!("api_token = \"{TOKEN}\""))
        .start();
    (t, d)
}

fn error_of(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field: {body}"))
        .to_owned()
}

#[test]
fn listening_beyond_loopback_without_a_token_refuses_to_start() {
    let t = TestDir::new(&[bundled_plugin("tally_example")]);
    let config = config(&t)
        .listen(&format!("0.0.0.0:{}", free_port()))
        .write();
    let out = run_tallyd(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(exit_code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("daemon.listen"),
        "the message names the key: {}",
        stderr(&out)
    );
}

#[test]
fn write_endpoints_need_the_token_and_bodies_are_bounded() {
    let (_t, d) = started();
    for path in ["/api/v1/sources/steady/run", "/api/v1/reload"] {
        let url = format!("{}{path}", d.base);
        let (status, body) = post(&url, &[]).unwrap();
        assert_eq!(status, 401, "{path} without a token: {body}");
        assert!(error_of(&body).contains("Authorization"), "{body}");
        let (status, body) =
            post(&url, &[("Authorization", "Bearer security-token-0002")]).unwrap();
        assert_eq!(status, 401, "{path} with a wrong token: {body}");
        assert_eq!(error_of(&body), "wrong api token");
        // A body over 64 KiB is refused before anything reads it.
        let big = "x".repeat(64 * 1024 + 1);
        let (status, body) = request(
            "POST",
            &url,
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            &big,
        )
        .unwrap();
        assert_eq!(status, 413, "{path} with an oversize body: {body}");
        assert!(error_of(&body).contains("65536"), "{body}");
    }
    // With the token the run goes through, once the start-up run is over.
    d.wait_for("the start-up run of steady", 30, |d| {
        !d.source("steady")["last_run"].is_null() && d.source("steady")["running"] == false
    });
    let (status, body) = post(
        &format!("{}/api/v1/sources/steady/run", d.base),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    // Every error is JSON, also axum's own (wrong method).
    let (status, body) = get(&format!("{}/api/v1/reload", d.base)).unwrap();
    assert_eq!(status, 405, "{body}");
    assert!(error_of(&body).contains("POST"), "{body}");
    let ready = d.get_json("/readyz");
    assert_eq!(ready["ready"], true, "{ready}");
}

#[test]
fn query_parameters_and_report_names_stay_inside_data_dir() {
    let (t, d) = started();
    for query in [
        "period=2026-Q4&unit=../../etc/passwd",
        "period=2026-Q4&unit=/etc/passwd",
        "period=../x",
        "period=2026-Q4/../../x",
        "period=..%2F..%2Fetc%2Fpasswd",
    ] {
        let (status, body) = d.get(&format!("/api/v1/summary?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        error_of(&body);
    }
    let (_, body) = d.get("/api/v1/summary?period=2026-Q4&unit=../../etc/passwd");
    assert!(error_of(&body).contains("unknown unit"), "{body}");

    // The reports the daemon writes are named by period label only. Both
    // writers at start (the missed quarters, the start report) are done
    // when both have logged, so no temporary file is left half-way.
    d.wait_for("the start report and the catch-up", 60, |d| {
        let log = d.log();
        let start_report = log
            .lines()
            .any(|l| l.contains("report written") && !l.contains("missed report written"));
        start_report && log.contains("reports caught up")
    });
    for entry in std::fs::read_dir(t.dir.join("reports")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let (stem, ext) = name.rsplit_once('.').unwrap();
        assert!(matches!(ext, "csv" | "md"), "{name}");
        let bytes = stem.as_bytes();
        assert!(
            bytes.len() == 7
                && bytes[..4].iter().all(u8::is_ascii_digit)
                && &bytes[4..6] == b"-Q"
                && (b'1'..=b'4').contains(&bytes[6]),
            "a report is named by its quarter: {name}"
        );
    }

    // `tallyd report` refuses a period that is a path, and writes only
    // where --out says.
    let config = t.dir.join("tally.toml");
    let config = config.to_str().unwrap();
    let out = run_tallyd(&[
        "report", "--config", config, "--period", "../../x", "--format", "csv",
    ]);
    assert_eq!(exit_code(&out), 1, "{}", stderr(&out));
    let target = t.dir.join("elsewhere.csv");
    let out = run_tallyd(&[
        "report",
        "--config",
        config,
        "--period",
        "2026-Q4",
        "--format",
        "csv",
        "--out",
        target.to_str().unwrap(),
    ]);
    assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
    assert!(target.is_file());
}

/// The demo's secrets, and the shape of the access tokens its WeChat
/// simulator issues (`91_Stab1e0000SIMxZ3`, see `tally_simulators::wechat`).
const SECRETS: &[&str] = &[
    "demo-wechat-appsecret-0001",
    "demo-weibo-access-token-0001",
    "SIMxZ",
];

#[test]
fn no_secret_leaves_a_full_demo_run() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(tally_demo())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(tmp.path().join("demo"))
        .env_remove("TALLY_CONFIG")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());

    // Wait until every source has run at least once.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut answers = Vec::new();
    loop {
        if let Ok((200, body)) = get(&format!("{base}/api/v1/sources")) {
            let v: Value = serde_json::from_str(&body).unwrap();
            let sources = v["sources"].as_array().cloned().unwrap_or_default();
            if !sources.is_empty() && sources.iter().all(|s| !s["last_run"].is_null()) {
                answers.push(body);
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the demo's sources did not all run"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for path in [
        "/metrics",
        "/api/v1/indicators",
        "/api/v1/units",
        "/api/v1/summary?period=2026",
        "/api/v1/reports",
        "/readyz",
    ] {
        let (_, body) = get(&format!("{base}{path}")).unwrap();
        answers.push(body);
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let out = out.join().unwrap();
    let err = err.join().unwrap();
    assert!(
        err.contains("collection"),
        "the demo ran collections:\n{err}"
    );
    for secret in SECRETS {
        for (what, text) in [("stdout", &out), ("stderr", &err)] {
            assert!(
                !text.contains(secret),
                "{secret} in the demo's {what}:\n{text}"
            );
        }
        for answer in &answers {
            assert!(
                !answer.contains(secret),
                "{secret} in an API answer:\n{answer}"
            );
        }
    }
}
