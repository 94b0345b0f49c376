//! Secrets never leave in any form: a secret full of `" \ + / = % &` planted
//! through every path a value takes out of the daemon (plugin logs in process
//! and isolated, text and JSON logs, run errors and warnings, API answers, the
//! store, `tallyd check`, `POST /api/v1/reload`, an upstream that echoes the
//! request) is found nowhere: not raw, JSON- or Debug-escaped, percent-encoded,
//! in base64, nor its first six characters in any of these forms.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use serde_json::Value;

use crate::support::*;

const SECRET: &str = "Tq\"7\\Lm+/=%&Vx9 Rb2+sK/w==";
const TOKEN: &str = "redaction-test-token";

/// Every way the secret's first six characters can be written: whatever
/// leaks of the secret, in whatever form, starts with one of these.
fn needles() -> Vec<String> {
    let head: String = SECRET.chars().take(6).collect();
    let json = serde_json::to_string(&head).unwrap();
    let json = json[1..json.len() - 1].to_owned();
    let debug = format!("{head:?}");
    let debug = debug[1..debug.len() - 1].to_owned();
    let json_of_debug = serde_json::to_string(&debug).unwrap();
    let percent = |upper: bool| -> String {
        head.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => char::from(b).to_string(),
                _ if upper => format!("%{b:02X}"),
                _ => format!("%{b:02x}"),
            })
            .collect()
    };
    let mut needles = vec![
        head.clone(),
        json,
        debug,
        json_of_debug[1..json_of_debug.len() - 1].to_owned(),
        percent(true),
        percent(false),
    ];
    // The secret inside base64 at each of the three alignments (`user:secret`
    // with any user): the characters only the secret's first bytes determine.
    for engine in [
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for lead in 0..3 {
            let mut bytes = vec![b'u'; lead];
            bytes.extend_from_slice(SECRET.as_bytes());
            let encoded = engine.encode(&bytes);
            let first = (8 * lead).div_ceil(6);
            needles.push(encoded[first..first + 7].to_owned());
        }
    }
    needles.sort();
    needles.dedup();
    needles
}

fn assert_clean(what: &str, text: &str) {
    for needle in needles() {
        assert!(
            !text.contains(&needle),
            "the secret's start, written as {needle}, is in {what}:\n{text}"
        );
    }
}

/// A fake upstream that answers every request 500 with the request echoed
/// back as JSON: its target (the secret percent-encoded in the query), its
/// headers (the secret JSON-escaped), and once more, padded so that a
/// message cutting the body at 200 characters cuts inside the secret.
fn echoing_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push(line.trim_end().to_owned());
            }
            let target = head
                .first()
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("")
                .to_owned();
            let key = head
                .iter()
                .find_map(|l| l.strip_prefix("x-api-key: "))
                .unwrap_or("")
                .to_owned();
            let start = format!(
                "{{\"url\":{},\"x-api-key\":{},\"cut\":\"",
                serde_json::to_string(&target).unwrap(),
                serde_json::to_string(&key).unwrap()
            );
            let pad = "x".repeat(190usize.saturating_sub(start.chars().count()));
            let key_json = serde_json::to_string(&key).unwrap();
            let body = format!("{start}{pad}{}\"}}", &key_json[1..key_json.len() - 1]);
            let answer = format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    port
}

/// A script that spells the secret out every way a program does: in its log,
/// as `curl -v -u client:SECRET` shows the header, in a stdout line cut in a
/// message at 60 characters, and, with `fail`, in its last words.
const SCRIPT: &str = r#"#!/bin/sh
echo "connecting with key $SECRET" >&2
printf 'warning: > Authorization: Basic %s\n' "$(printf 'client:%s' "$SECRET" | base64 | tr -d '\n')" >&2
printf '{"padding":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx%s"}\n' "$SECRET"
printf '{"indicator":"meetings","day":"%s","value":1,"key":"%s"}\n' "$TALLY_TO" "$SECRET"
if [ "$1" = fail ]; then
    echo "error: the key $SECRET was refused" >&2
    exit 3
fi
printf '{"indicator":"meetings","day":"%s","value":1}\n' "$TALLY_TO"
"#;

fn sources(script: &Path, upstream: u16) -> String {
    let mut text = String::new();
    for (isolation, suffix) in [("none", ""), ("process", "-isolated")] {
        for (id, args) in [("script", "[]"), ("script-fails", "[\"fail\"]")] {
            text.push_str(&format!(
                r#"
[[sources]]
id = "{id}{suffix}"
plugin = "exec"
unit = "county"
schedule = "0 0 3 * * *"
retries = 0
isolation = "{isolation}"
[sources.settings]
command = {script}
args = {args}
env = {{ SECRET = "${{env:TALLY_TEST_SECRET}}" }}
indicators = ["meetings"]
"#,
                script = toml_path(script),
            ));
        }
        text.push_str(&format!(
            r#"
[[sources]]
id = "upstream{suffix}"
plugin = "http_json"
unit = "county"
schedule = "0 0 3 * * *"
retries = 0
isolation = "{isolation}"
[sources.settings]
url = "http://127.0.0.1:{upstream}/stats"
query = {{ key = "${{env:TALLY_TEST_SECRET}}" }}
headers = {{ x-api-key = "${{env:TALLY_TEST_SECRET}}" }}
values = [{{ indicator = "meetings", path = "$.count" }}]
"#
        ));
    }
    text
}

/// Sources whose settings are refused with the secret in the message.
fn bad_sources() -> String {
    let mut text = String::new();
    for (isolation, suffix) in [("none", ""), ("process", "-isolated")] {
        text.push_str(&format!(
            r#"
[[sources]]
id = "bad-timeout{suffix}"
plugin = "exec"
unit = "county"
schedule = "0 0 3 * * *"
retries = 0
isolation = "{isolation}"
[sources.settings]
command = "/bin/true"
timeout = "${{env:TALLY_TEST_SECRET}}"
indicators = ["meetings"]
"#
        ));
    }
    text
}

/// Every file under `dir`, as text (the SQLite store and its journal hold
/// the run records, errors and warnings as plain UTF-8).
fn files_text(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap().map_while(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            text.push_str(&files_text(&path));
        } else if let Ok(mut f) = std::fs::File::open(&path) {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    text
}

#[test]
fn a_secret_full_of_quotes_backslashes_and_url_characters_leaves_in_no_form() {
    let t = TestDir::new(&[
        bundled_plugin("tally_exec"),
        bundled_plugin("tally_http_json"),
    ]);
    let dir = t.dir.as_path();
    let script = dir.join("leaky.sh");
    std::fs::write(&script, SCRIPT).unwrap();
    set_mode(&script, 0o755);
    let upstream = echoing_upstream();
    let env = [("TALLY_TEST_SECRET", SECRET)];
    let base = t
        .config()
        .daemon(&format!("api_token = \"{TOKEN}\""))
        .county()
        .meetings();
    let good = base.clone().toml(&sources(&script, upstream));
    let config = good.write();
    let d = good.start_with_env(&env);
    let auth = format!("Bearer {TOKEN}");

    let mut answers = Vec::new();
    for id in [
        "script",
        "script-fails",
        "upstream",
        "script-isolated",
        "script-fails-isolated",
        "upstream-isolated",
    ] {
        // The start-up run may still be going: 409 until it is over.
        let mut tries = 0;
        let (status, body) = loop {
            let (status, body) = post(
                &format!("{}/api/v1/sources/{id}/run", d.base),
                &[("Authorization", &auth)],
            )
            .unwrap();
            tries += 1;
            if status != 409 || tries > 300 {
                break (status, body);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        assert_eq!(status, 200, "{id}: {body}");
        let report: Value = serde_json::from_str(&body).unwrap();
        let expected = if id.starts_with("script-fails") || id.starts_with("upstream") {
            "error"
        } else {
            "success"
        };
        assert_eq!(report["result"], expected, "{id}: {body}\n{}", d.log());
        answers.push((format!("the run of {id}"), body));
    }
    // Each path really carried the secret, now redacted.
    let runs: String = answers.iter().map(|(_, body)| body.as_str()).collect();
    for place in ["last stderr lines: ", "HTTP 500: ", "padding", "***"] {
        assert!(runs.contains(place), "{place} in {runs}");
    }
    let log = d.log();
    assert!(log.contains("Authorization: Basic ***"), "{log}");

    // A reload whose settings are refused, quoting the secret.
    base.clone().toml(&bad_sources()).write();
    let (status, body) = post(
        &format!("{}/api/v1/reload", d.base),
        &[("Authorization", &auth)],
    )
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("is not a duration"), "{body}");
    answers.push(("the reload answer".to_owned(), body));
    for path in [
        "/api/v1/sources",
        "/metrics",
        "/readyz",
        "/api/v1/summary?period=2026",
    ] {
        answers.push((path.to_owned(), d.get(path).1));
    }

    // `tallyd check` of the same refused configuration.
    let check = run_tallyd_env(&["check", "--config", config.to_str().unwrap()], &env);
    assert_ne!(exit_code(&check), 0);
    assert!(
        stdout(&check).contains("is not a duration")
            || stderr(&check).contains("is not a duration")
    );
    answers.push((
        "tallyd check's output".to_owned(),
        stdout(&check) + &stderr(&check),
    ));

    // One-shot collections with JSON logs, in process and isolated.
    base.clone()
        .without_listen()
        .data_dir(&dir.join("collect"))
        .toml(&sources(&script, upstream))
        .write_as("collect.toml");
    for id in [
        "script",
        "script-isolated",
        "script-fails-isolated",
        "upstream-isolated",
    ] {
        let out = Command::new(tallyd())
            .args(["--log-format", "json", "collect", "--config"])
            .arg(dir.join("collect.toml"))
            .args(["--source", id])
            .env_remove("TALLY_CONFIG")
            .env("RUST_LOG", "debug")
            .envs(env)
            .output()
            .unwrap();
        let text = stdout(&out) + &stderr(&out);
        assert!(text.contains("\"level\""), "JSON logs: {text}");
        answers.push((format!("`tallyd collect --source {id}` (JSON logs)"), text));
    }

    for (what, text) in &answers {
        assert_clean(what, text);
    }
    assert_clean("the daemon's log", &d.log());
    assert_clean("the data directory", &files_text(&dir.join("data")));
    assert_clean(
        "the collect data directory",
        &files_text(&dir.join("collect")),
    );
}
