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
fn raw_bytes_cross_the_json_protocol_as_base64() {
    // Every byte value, as a workbook or an archive may hold them.
    let all: Vec<u8> = (0..=255).collect();
    let resp = HttpResponse::from_body(200, Vec::new(), all.clone(), true);
    let wire = serde_json::to_value(&resp).unwrap();
    assert!(wire["body_base64"].is_string(), "{wire}");
    assert_eq!(wire.get("charset"), None, "{wire}");
    let back: HttpResponse = serde_json::from_value(wire).unwrap();
    assert_eq!(back.bytes(), Ok(&all[..]));
    assert_eq!(back.body, "");

    // A protocol 1 answer (an older tallyd) reads with no bytes and no charset.
    let old: HttpResponse =
        serde_json::from_str(r#"{"status": 200, "headers": [], "body": "text"}"#).unwrap();
    assert_eq!((old.bytes.as_deref(), old.charset.as_deref()), (None, None));
    assert!(old.bytes().is_err());
    assert!(
        serde_json::from_str::<HttpResponse>(r#"{"status": 200, "body_base64": "not base64!"}"#)
            .is_err()
    );

    // A request that does not ask for bytes is what protocol 1 sent.
    let req = serde_json::to_value(HttpRequest::get("http://x.test/a")).unwrap();
    assert_eq!(req.get("body_as_bytes"), None, "{req}");
    let req = serde_json::to_value(HttpRequest::get("http://x.test/a").body_as_bytes()).unwrap();
    assert_eq!(req["body_as_bytes"], true);
}

/// Serves one request on 127.0.0.1 with the given head and body bytes.
fn serve_once(head: &'static str, body: Vec<u8>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 2048];
        let _ = conn.read(&mut buf).unwrap();
        let mut reply = format!(
            "HTTP/1.1 200 OK\r\n{head}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        reply.extend_from_slice(&body);
        conn.write_all(&reply).unwrap();
    });
    format!("http://{addr}/page")
}

/// "2026年11月27日" in GBK.
const DATE_GBK: &[u8] = &[
    b'2', b'0', b'2', b'6', 0xc4, 0xea, b'1', b'1', 0xd4, 0xc2, b'2', b'7', 0xc8, 0xd5,
];

#[test]
fn testkit_decodes_bodies_by_their_charset_in_fixtures_and_live() {
    let host = TestHost::live().fixture(
        Fixture::get("http://x.test/gbk")
            .header("Content-Type", "text/plain; charset=GB2312")
            .respond_bytes(200, DATE_GBK),
    );
    let h = Host::local(std::sync::Arc::new(host));
    let r = h.http(&HttpRequest::get("http://x.test/gbk")).unwrap();
    assert_eq!(
        (r.body.as_str(), r.charset.as_deref()),
        ("2026年11月27日", Some("GBK"))
    );
    let r = h
        .http(&HttpRequest::get("http://x.test/gbk").body_as_bytes())
        .unwrap();
    assert_eq!((r.bytes(), r.body.as_str()), (Ok(DATE_GBK), ""));

    let url = serve_once(
        "Content-Type: text/html; charset=gbk\r\n",
        DATE_GBK.to_vec(),
    );
    let r = h.http(&HttpRequest::get(&url)).unwrap();
    assert_eq!(r.body, "2026年11月27日");
    let url = serve_once(
        "Content-Type: application/octet-stream\r\n",
        vec![0, 0xff, 7],
    );
    let r = h.http(&HttpRequest::get(&url).body_as_bytes()).unwrap();
    assert_eq!(r.bytes(), Ok(&[0, 0xff, 7][..]));
}

/// A host that answers like a tallyd of protocol 1: text only, whatever was asked.
struct OldDaemon;

impl LocalHost for OldDaemon {
    fn log(&self, _level: Level, _message: &str) {}
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::default()
    }
    fn http(&self, _request: &HttpRequest) -> Result<HttpResponse, Error> {
        Ok(
            serde_json::from_str(r#"{"status": 200, "headers": [], "body": "PK\u0003\u0004"}"#)
                .unwrap(),
        )
    }
}

#[test]
fn bytes_asked_of_a_daemon_that_ignores_the_request_are_an_error() {
    let h = Host::local(std::sync::Arc::new(OldDaemon));
    let e = h
        .http(&HttpRequest::get("http://x.test/export.xlsx?token=secret").body_as_bytes())
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal);
    assert!(
        e.message.starts_with("GET http://x.test/export.xlsx: "),
        "{}",
        e.message
    );
    assert!(e.message.contains("protocol 2"), "{}", e.message);
    assert!(!e.message.contains("secret"));
    // Text requests still work against it.
    assert!(h.http(&HttpRequest::get("http://x.test/a")).is_ok());
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

/// Reads one page per day of the window, the token in a header, stopping
/// when the daemon gives up; a 429 is `rate_limited` until its Retry-After.
struct Pager {
    url: String,
}

impl Plugin for Pager {
    const NAME: &'static str = "pager";
    type Settings = Settings;

    fn describe() -> Description {
        Description::new("one page per day")
    }

    fn new(settings: Settings, _host: &Host) -> Result<Self, Error> {
        Ok(Pager { url: settings.url })
    }

    fn emits(&self) -> Vec<String> {
        vec!["n".to_owned()]
    }

    fn collect(&mut self, req: &CollectRequest, host: &Host) -> Result<CollectResponse, Error> {
        let mut out = CollectResponse::default();
        for day in req.window.days().filter(|d| *d <= req.last_complete_day()) {
            if host.cancelled() {
                return Err(Error::upstream(format!("cancelled before {day}")));
            }
            let resp = host.http(
                &HttpRequest::get(&self.url)
                    .query("day", day.to_string())
                    .header("X-Token", "t0k"),
            )?;
            match resp.status {
                200 => {}
                401 => return Err(Error::auth(format!("{}: HTTP 401", self.url))),
                429 => {
                    let mut e = Error::rate_limited(format!("{}: HTTP 429", self.url));
                    if let Some(at) = resp.retry_after(host.now()) {
                        e = e.retry_after(at);
                    }
                    return Err(e);
                }
                s => return Err(Error::upstream(format!("{}: HTTP {s}", self.url))),
            }
            out.observations.push(Observation::new("n", day, 1.0));
        }
        Ok(out)
    }
}

fn pager(host: TestHost) -> Harness<Pager> {
    Harness::<Pager>::create(serde_json::json!({"url": "http://x.test/p"}), host).unwrap()
}

fn days(from: &str, to: &str) -> CollectRequest {
    CollectRequest::new("s", Window::new(day(from), day(to)))
}

#[test]
fn the_harness_fills_in_today_from_its_clock_in_the_request_time_zone() {
    let host = TestHost::new().fixture(Fixture::get("http://x.test/p").respond(200, "{}"));
    // 2026-11-27 02:00 UTC is 10:00 in Shanghai: the 26th is the last complete day.
    let out = pager(host.clone())
        .collect(&days("2026-11-24", "2026-11-27"))
        .unwrap();
    let seen: Vec<NaiveDate> = out.observations.iter().map(|o| o.day).collect();
    assert_eq!(
        seen,
        [day("2026-11-24"), day("2026-11-25"), day("2026-11-26")]
    );
    // In Los Angeles it is still the 26th (18:00): the 25th is the last complete day.
    let mut req = days("2026-11-24", "2026-11-27");
    req.timezone = "America/Los_Angeles".into();
    let out = pager(host).collect(&req).unwrap();
    assert_eq!(out.observations.len(), 2);
    // A day the test sets is kept.
    let out = pager(TestHost::new().fixture(Fixture::get("http://x.test/p").respond(200, "{}")))
        .collect(&days("2026-11-24", "2026-11-27").with_today(day("2026-11-25")))
        .unwrap();
    assert_eq!(out.observations.len(), 1);
}

#[test]
fn cancellation_after_checks_requests_or_at_a_time_stops_the_run() {
    let fixture = || Fixture::get("http://x.test/p").respond(200, "{}");
    let req = days("2026-11-20", "2026-11-26");
    let e = pager(TestHost::new().fixture(fixture()).cancel_after_checks(3)).collect_err(&req);
    assert_eq!(e.message, "cancelled before 2026-11-23");
    let mut p = pager(TestHost::new().fixture(fixture()).cancel_after_requests(2));
    assert_eq!(p.collect_err(&req).message, "cancelled before 2026-11-22");
    assert_eq!(p.host().requests().len(), 2);
    let start = TestHost::new().now();
    let host = TestHost::new()
        .fixture(fixture())
        .advance_per_request(chrono::Duration::seconds(25))
        .cancel_at(start + chrono::Duration::seconds(60));
    assert_eq!(
        pager(host).collect_err(&req).message,
        "cancelled before 2026-11-23"
    );
    // Without a cancellation every day is read.
    let out = pager(TestHost::new().fixture(fixture()))
        .collect(&req)
        .unwrap();
    assert_eq!(out.observations.len(), 7);
}

#[test]
fn fixtures_match_request_headers_and_errors_are_classified() {
    let host = TestHost::new()
        .fixture(
            Fixture::get("http://x.test/p")
                .query("day", "2026-11-25")
                .request_header("x-token", "t0k")
                .header("Retry-After", "3600")
                .respond(429, "slow down"),
        )
        .fixture(
            Fixture::get("http://x.test/p")
                .request_header("X-Token", "t0k")
                .respond(200, "{}"),
        );
    let mut p = pager(host);
    let e = testkit::assert_kind(
        p.collect(&days("2026-11-24", "2026-11-26")),
        ErrorKind::RateLimited,
    );
    let now = p.host().now();
    assert_eq!(e.retry_after, Some(now + chrono::Duration::hours(1)));
    // The retry-after crosses the protocol; an older plugin's error lacks it.
    let wire: Error = serde_json::from_slice(&serde_json::to_vec(&e).unwrap()).unwrap();
    assert_eq!(wire, e);
    let old: Error =
        serde_json::from_str(r#"{"kind": "rate_limited", "message": "quota"}"#).unwrap();
    assert_eq!(old.retry_after, None);
    // A fixture that wants another token does not match: no answer at all.
    let host = TestHost::new().fixture(
        Fixture::get("http://x.test/p")
            .request_header("X-Token", "other")
            .respond(200, "{}"),
    );
    let e = testkit::assert_kind(
        pager(host).collect(&days("2026-11-25", "2026-11-25")),
        ErrorKind::Upstream,
    );
    assert!(e.message.contains("no fixture"), "{}", e.message);
    let host = TestHost::new().fixture(Fixture::get("http://x.test/p").respond(401, ""));
    testkit::assert_kind(
        pager(host).collect(&days("2026-11-25", "2026-11-25")),
        ErrorKind::Auth,
    );
}

#[test]
#[should_panic(
    expected = "expected an error of kind auth, got kind upstream: http://x.test/p: HTTP 500"
)]
fn assert_kind_names_both_kinds() {
    let host = TestHost::new().fixture(Fixture::get("http://x.test/p").respond(500, ""));
    testkit::assert_kind(
        pager(host).collect(&days("2026-11-25", "2026-11-25")),
        ErrorKind::Auth,
    );
}
