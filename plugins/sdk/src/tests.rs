use chrono::NaiveDate;
use serde::Deserialize;

use crate::testkit::{Fixture, Harness, TestHost};
use crate::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    url: String,
    #[serde(default)]
    #[allow(dead_code)]
    rows: Vec<Row>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Row {
    path: String,
    indicator: String,
}

struct Probe {
    url: String,
}

impl Plugin for Probe {
    const NAME: &'static str = "probe";
    type Settings = Settings;

    fn describe() -> Description {
        Description::new("reads one number").indicator(IndicatorDecl::new(
            "n",
            "数",
            Kind::Count,
            "个",
        ))
    }

    fn new(settings: Settings, host: &Host) -> Result<Self, Error> {
        host.debug("created");
        Ok(Probe { url: settings.url })
    }

    fn collect(&mut self, req: &CollectRequest, host: &Host) -> Result<CollectResponse, Error> {
        let resp =
            host.http(&HttpRequest::get(&self.url).query("day", req.window.to.to_string()))?;
        if resp.status != 200 {
            return Err(Error::upstream(format!(
                "{}: HTTP {}",
                self.url, resp.status
            )));
        }
        let n: f64 =
            resp.body.trim().parse().map_err(|_| {
                Error::upstream(format!("{}: not a number: {:?}", self.url, resp.body))
            })?;
        let mut out = CollectResponse::default();
        out.observations
            .push(Observation::new("n", req.window.to, n).unit("u"));
        Ok(out)
    }
}

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

#[test]
fn settings_errors_name_the_field_path() {
    let err = Harness::<Probe>::create(
        serde_json::json!({"url": "http://x.test", "rows": [{"path": "$.a", "indicator": "n"}, {"path": "$.b"}]}),
        TestHost::new(),
    )
    .err()
    .unwrap();
    assert_eq!(err.kind, ErrorKind::Settings);
    assert_eq!(err.message, "rows[1]: missing field `indicator`");

    let err = Harness::<Probe>::create(serde_json::json!({"url": "u", "urk": 1}), TestHost::new())
        .err()
        .unwrap();
    assert!(
        err.message.starts_with("urk: unknown field `urk`"),
        "{}",
        err.message
    );
    assert!(!err.message.contains("line 1"), "{}", err.message);
}

#[test]
fn testkit_answers_from_fixtures_and_records_requests() {
    let host = TestHost::new()
        .fixture(
            Fixture::get("http://x.test/n")
                .query("day", "2026-11-27")
                .respond(200, "7"),
        )
        .fixture(Fixture::get("http://x.test/n").respond(503, "busy"));
    let mut p =
        Harness::<Probe>::create(serde_json::json!({"url": "http://x.test/n"}), host).unwrap();
    assert_eq!(p.emits(), ["n"]);
    let out = p
        .collect(&CollectRequest::new(
            "s",
            Window::new(day("2026-11-27"), day("2026-11-27")),
        ))
        .unwrap();
    assert_eq!(out.observations[0].value, 7.0);
    let err = p
        .collect(&CollectRequest::new(
            "s",
            Window::new(day("2026-11-26"), day("2026-11-26")),
        ))
        .unwrap_err();
    assert_eq!(err.message, "http://x.test/n: HTTP 503");
    assert_eq!(p.host().requests().len(), 2);
    assert_eq!(p.host().logs(), vec![(Level::Debug, "created".to_owned())]);
}

#[test]
fn testkit_reports_unmatched_requests() {
    let mut p = Harness::<Probe>::create(
        serde_json::json!({"url": "http://x.test/n"}),
        TestHost::new(),
    )
    .unwrap();
    let err = p
        .collect(&CollectRequest::new(
            "s",
            Window::new(day("2026-11-27"), day("2026-11-27")),
        ))
        .unwrap_err();
    assert!(
        err.message.contains("no fixture for GET http://x.test/n"),
        "{}",
        err.message
    );
}

#[test]
fn testkit_live_mode_reaches_a_local_server() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 2048];
        let n = conn.read(&mut buf).unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n12")
            .unwrap();
        head
    });
    let url = format!("http://{addr}/n");
    let mut p =
        Harness::<Probe>::create(serde_json::json!({ "url": url }), TestHost::live()).unwrap();
    let out = p
        .collect(&CollectRequest::new(
            "s",
            Window::new(day("2026-11-27"), day("2026-11-27")),
        ))
        .unwrap();
    assert_eq!(out.observations[0].value, 12.0);
    let head = server.join().unwrap();
    assert!(head.starts_with("GET /n?day=2026-11-27 "), "{head}");
}

#[test]
fn settings_followed_by_garbage_are_refused() {
    let err = crate::parse_settings::<Probe>(br#"{"url": "http://x.test"} garbage"#)
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::Settings);
    assert_eq!(err.message, "trailing characters");
}

#[test]
fn an_answer_without_uncovered_days_covers_the_whole_window() {
    // What a plugin built before the field existed sends.
    let older: CollectResponse =
        serde_json::from_str(r#"{"observations": [], "state": null, "warnings": []}"#).unwrap();
    assert!(older.uncovered.is_empty());
    // And a plugin that covered everything sends nothing new.
    let text = serde_json::to_string(&CollectResponse::default()).unwrap();
    assert!(!text.contains("uncovered"), "{text}");

    let mut out = CollectResponse::default();
    out.uncover_range(Window::new(day("2026-11-03"), day("2026-11-01")));
    assert!(out.uncovered.is_empty(), "a reversed range is no day");
    out.uncover_range(Window::new(day("2026-11-01"), day("2026-11-03")));
    out.uncover_range(Window::new(day("2026-11-02"), day("2026-11-05")));
    out.uncover(day("2026-11-09"));
    let text = serde_json::to_string(&out).unwrap();
    assert!(
        text.contains(
            r#""uncovered":[{"from":"2026-11-01","to":"2026-11-05"},{"from":"2026-11-09","to":"2026-11-09"}]"#
        ),
        "{text}"
    );
    let back: CollectResponse = serde_json::from_str(&text).unwrap();
    assert_eq!(back.uncovered_days().len(), 6);
}
