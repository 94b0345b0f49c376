//! The edges of the HTTP API: requests hyper refuses before any handler
//! (414, 431, 400) answer the same JSON error as every other, and a loopback
//! daemon answers only requests for a loopback `Host` (DNS rebinding).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn started(tmp: &std::path::Path) -> TestDaemon {
    let plugins = plugin_dir_with(&tmp.join("plugins"), &[bundled_plugin("tally_example")]);
    let cfg = TestConfig::new(tmp, &plugins).county().meetings().toml(
        r#"
[[sources]]
id = "steady"
plugin = "example"
unit = "county"
schedule = "0 3 * * *"
[sources.settings]
indicator = "meetings"
per_day = 1
"#,
    );
    let port = cfg.port();
    let config = cfg.write();
    TestDaemon::start(&config, port)
}

/// Sends `head` as is (it ends with the blank line) and returns the status
/// and the body (the answer is read to the connection's end).
fn raw(d: &TestDaemon, head: &[u8]) -> (u16, String) {
    let addr = d.base.strip_prefix("http://").unwrap();
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The daemon may answer and close before it has read everything.
    let _ = conn.write_all(head);
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

fn error_of(status: u16, body: &str) -> String {
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{status} answered no JSON ({e}): {body:?}"));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{status}: no error field: {body}"))
        .to_owned()
}

#[test]
fn requests_hyper_refuses_answer_a_json_error() {
    let tmp = tempfile::tempdir().unwrap();
    let d = started(tmp.path());
    let host = d.base.strip_prefix("http://").unwrap().to_owned();

    let long_uri = format!(
        "GET /api/v1/summary?x={} HTTP/1.1\r\nHost: {host}\r\n\r\n",
        "a".repeat(70_000)
    );
    let (status, body) = raw(&d, long_uri.as_bytes());
    assert_eq!(status, 414, "{body}");
    assert!(error_of(status, &body).contains("URI too long"));

    let mut many = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n");
    for i in 0..150 {
        many.push_str(&format!("x-h{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    let (status, body) = raw(&d, many.as_bytes());
    assert_eq!(status, 431, "{body}");
    assert!(error_of(status, &body).contains("too large"));

    let (status, body) = raw(
        &d,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n",
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_of(status, &body).contains("malformed"));

    // A handler's own error is untouched, and so is a good answer.
    let (status, body) = raw(
        &d,
        format!("GET /nope HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 404, "{body}");
    assert!(error_of(status, &body).contains("no such endpoint"));
}

#[test]
fn a_loopback_daemon_answers_only_a_loopback_host() {
    let tmp = tempfile::tempdir().unwrap();
    let d = started(tmp.path());
    let port = d.base.rsplit(':').next().unwrap().to_owned();
    let ask = |host: &str| {
        raw(
            &d,
            format!("GET /api/v1/units HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
    };
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "tally.localhost".to_owned(),
    ] {
        let (status, body) = ask(&host);
        assert_eq!(status, 200, "Host: {host}: {body}");
    }
    for host in [
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("192.168.1.10:{port}"),
    ] {
        let (status, body) = ask(&host);
        assert_eq!(status, 421, "Host: {host}: {body}");
        assert!(error_of(status, &body).contains("loopback"), "{body}");
    }
    // HTTP/1.0 without a Host (a script) is served.
    let (status, body) = raw(&d, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200, "{body}");
}
