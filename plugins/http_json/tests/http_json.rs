//! The `http_json` plugin against recorded answers of realistic JSON APIs.

use chrono::NaiveDate;
use serde_json::{Value, json};
use tally_http_json::HttpJson;
use tally_plugin::testkit::{self, Fixture, Harness, TestHost};
use tally_plugin::{
    CollectRequest, CollectResponse, Error, ErrorKind, IndicatorRef, Kind, UnitRef, Window,
};

const API: &str = "http://127.0.0.1:9471/api/stats";

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
}

/// A request for 2026-11-25..27 from a source covering the county's natural
/// resources and education bureaus.
fn request() -> CollectRequest {
    let mut req = CollectRequest::new("county-portal", Window::new(day(25), day(27)));
    req.default_unit = Some("county".into());
    req.units = vec![
        UnitRef {
            id: "county".into(),
            name: "某县".into(),
            aliases: vec![],
        },
        UnitRef {
            id: "county/natres".into(),
            name: "自然资源局".into(),
            aliases: vec!["某县自然资源局".into()],
        },
        UnitRef {
            id: "county/edu".into(),
            name: "教育局".into(),
            aliases: vec!["某县教育局".into()],
        },
    ];
    req.indicators = vec![IndicatorRef {
        id: "wechat_followers".into(),
        name: "微信公众号关注人数".into(),
        kind: Kind::Level,
        unit: "人".into(),
    }];
    req
}

fn create(settings: Value, host: TestHost) -> Harness<HttpJson> {
    Harness::<HttpJson>::create(settings, host).unwrap()
}

fn run(settings: Value, host: TestHost) -> Result<CollectResponse, Error> {
    create(settings, host).collect(&request())
}

use tally_plugin::testkit::observation_lines as lines;

#[test]
fn values_mode_reads_single_values_for_the_last_day() {
    let body = json!({
        "code": 0, "msg": "ok",
        "data": {"account": "某县发布", "followers": "12,345", "posts": 17, "reads": 5021.0}
    });
    let host = TestHost::new().fixture(
        Fixture::get(API)
            .query("start", "2026-11-25")
            .query("end", "20261127")
            .respond(200, body.to_string()),
    );
    let mut plugin = create(
        json!({
            "url": API,
            "headers": {"Authorization": "Bearer s3cret"},
            "query": {"start": "{from}", "end": "{to:%Y%m%d}"},
            "values": [
                {"indicator": "wechat_followers", "path": "$.data.followers"},
                {"indicator": "wechat_posts", "path": "$.data.posts"}
            ]
        }),
        host,
    );
    assert_eq!(plugin.emits(), ["wechat_followers", "wechat_posts"]);
    let out = plugin.collect(&request()).unwrap();
    assert_eq!(
        lines(&out),
        [
            "- wechat_followers - 2026-11-27 12345",
            "- wechat_posts - 2026-11-27 17"
        ]
    );
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let sent = &plugin.host().requests()[0];
    assert_eq!(sent.method, "GET");
    assert!(
        sent.headers
            .contains(&("Authorization".into(), "Bearer s3cret".into()))
    );
}

#[test]
fn rows_mode_maps_units_by_alias_and_keeps_the_window() {
    let body = json!({"data": {"total": 5, "rows": [
        {"date": "20261124", "dept": "某县自然资源局", "articles": 9},
        {"date": "20261125", "dept": "某县自然资源局", "articles": 2, "media": "1"},
        {"date": "20261126", "dept": "某县教育局", "articles": "3", "media": 0},
        {"date": "20261126", "dept": "教育局", "articles": 1},
        {"date": "20261127", "dept": "county/natres", "articles": null, "media": ""}
    ]}});
    let out = run(
        json!({
            "url": API,
            "rows": {
                "path": "$.data.rows[*]",
                "date": "date",
                "date_format": "%Y%m%d",
                "unit": "dept",
                "fields": {"portal_articles": "articles", "media_articles": "media"}
            }
        }),
        TestHost::new().fixture(Fixture::get(API).respond(200, body.to_string())),
    )
    .unwrap();
    // The 24th is outside the window; the two rows of the education bureau on
    // the 26th (named by alias and by name) add up; null and "" are skipped.
    assert_eq!(
        lines(&out),
        [
            "county/natres media_articles - 2026-11-25 1",
            "county/natres portal_articles - 2026-11-25 2",
            "county/edu media_articles - 2026-11-26 0",
            "county/edu portal_articles - 2026-11-26 4",
        ]
    );
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[test]
fn rows_without_date_belong_to_the_last_day_and_carry_entities() {
    let body = json!({"result": {"list": [
        {"account": {"name": "某县发布"}, "unit": "某县", "fans": 30512},
        {"account": {"name": "自然资源之声"}, "unit": "自然资源局", "fans": 1204}
    ]}});
    let out = run(
        json!({
            "url": API,
            "rows": {
                "path": "$.result.list",
                "unit": "unit",
                "entity": "$.account.name",
                "fields": {"wechat_followers": "fans"}
            }
        }),
        TestHost::new().fixture(Fixture::get(API).respond(200, body.to_string())),
    )
    .unwrap();
    assert_eq!(
        lines(&out),
        [
            "county wechat_followers 某县发布 2026-11-27 30512",
            "county/natres wechat_followers 自然资源之声 2026-11-27 1204",
        ]
    );
}

#[test]
fn per_day_makes_one_request_per_day_with_placeholders() {
    let mut host = TestHost::new();
    for (d, reads) in [(25, 310), (26, 287), (27, 402)] {
        let body = json!({"errcode": 0, "list": [{"ref_date": format!("2026-11-{d}"), "int_page_read_count": reads}]});
        host = host.fixture(
            Fixture::get(&format!("http://api.test/datacube/2026/11/{d}"))
                .query("ref_date", &format!("202611{d}"))
                .respond(200, body.to_string()),
        );
    }
    let mut plugin = create(
        json!({
            "url": "http://api.test/datacube/{day:%Y/%m/%d}",
            "query": {"ref_date": "{day:%Y%m%d}", "since": "{from}"},
            "per_day": true,
            "values": [{"indicator": "wechat_reads", "path": "$.list[0].int_page_read_count"}]
        }),
        host,
    );
    let out = plugin.collect(&request()).unwrap();
    assert_eq!(
        lines(&out),
        [
            "- wechat_reads - 2026-11-25 310",
            "- wechat_reads - 2026-11-26 287",
            "- wechat_reads - 2026-11-27 402"
        ]
    );
    let requests = plugin.host().requests();
    assert_eq!(requests.len(), 3);
    assert!(
        requests[2]
            .query
            .contains(&("since".into(), "2026-11-25".into()))
    );
}

#[test]
fn post_sends_the_body_with_placeholders() {
    let url = "http://api.test/open/stat/query";
    let body = json!({"code": 200, "data": {"summary": {"articleCount": 42}}});
    let mut plugin = create(
        json!({
            "url": url,
            "method": "POST",
            "body": r#"{"beginDate":"{from}","endDate":"{to}","siteId":12}"#,
            "values": [{"indicator": "portal_articles", "path": "$.data.summary.articleCount"}]
        }),
        TestHost::new().fixture(Fixture::post(url).respond(200, body.to_string())),
    );
    let out = plugin.collect(&request()).unwrap();
    assert_eq!(lines(&out), ["- portal_articles - 2026-11-27 42"]);
    let sent = &plugin.host().requests()[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(
        sent.body.as_deref(),
        Some(r#"{"beginDate":"2026-11-25","endDate":"2026-11-27","siteId":12}"#)
    );
    assert!(
        sent.headers
            .contains(&("Content-Type".into(), "application/json".into()))
    );
}

#[test]
fn malformed_json_is_an_upstream_error_with_url_status_and_body() {
    let html = format!(
        "<html><head><title>502 Bad Gateway</title></head><body>{}</body></html>",
        "x".repeat(500)
    );
    let err = run(
        json!({"url": format!("{API}?token=s3cret"), "values": [{"indicator": "a", "path": "$.a"}]}),
        TestHost::new().fixture(Fixture::get(API).respond(200, html)),
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Upstream);
    let m = &err.message;
    assert!(
        m.starts_with(&format!("GET {API}: HTTP 200: the answer is not JSON")),
        "{m}"
    );
    assert!(m.contains("<html><head><title>502 Bad Gateway"), "{m}");
    assert!(!m.contains("s3cret"), "the query string must not leak: {m}");
    assert!(m.len() < 400, "the body is cut short: {m}");
}

#[test]
fn a_path_matching_nothing_names_the_path_and_url() {
    let err = run(
        json!({"url": API, "values": [{"indicator": "wechat_followers", "path": "$.data.fans"}]}),
        TestHost::new().fixture(Fixture::get(API).respond(200, r#"{"data":{"followers":3}}"#)),
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Upstream);
    assert_eq!(
        err.message,
        format!("GET {API}: values[0].path \"$.data.fans\" matched nothing in the answer")
    );
}

#[test]
fn zero_rows_is_fine() {
    let out = run(
        json!({"url": API, "rows": {"path": "$.data.rows[*]", "fields": {"a": "n"}}}),
        TestHost::new().fixture(Fixture::get(API).respond(200, r#"{"data":{"rows":[]}}"#)),
    )
    .unwrap();
    assert!(out.observations.is_empty() && out.warnings.is_empty());
}

#[test]
fn settings_errors_name_the_setting() {
    let check = |settings: Value, expected: &str| {
        let err = Harness::<HttpJson>::create(settings, TestHost::new())
            .err()
            .expect("settings should be refused");
        assert_eq!(err.kind, ErrorKind::Settings);
        assert!(
            err.message.starts_with(expected),
            "{:?} does not start with {expected:?}",
            err.message
        );
    };
    check(
        json!({"url": API, "rows": {"path": "$.data.rows[", "fields": {"a": "n"}}}),
        "rows.path: invalid JSONPath \"$.data.rows[\"",
    );
    check(
        json!({"url": API, "values": [{"indicator": "a", "path": "data.x"}]}),
        "values[0].path: invalid JSONPath",
    );
    check(
        json!({"url": API, "query": {"d": "{day}"}, "values": [{"indicator": "a", "path": "$.a"}]}),
        "query.d: {day} needs per_day = true",
    );
    check(
        json!({"url": API, "body": "{}", "values": [{"indicator": "a", "path": "$.a"}]}),
        "body: a body is only sent with method = \"POST\"",
    );
    check(json!({"url": "ftp://x"}), "url:");
    check(json!({"url": API}), "values, rows:");
    check(
        json!({"url": API, "values": [{"indicator": "a", "path": "$.a", "pth": 1}]}),
        "values[0].pth: unknown field `pth`",
    );
}

#[test]
fn an_unknown_unit_skips_only_its_row() {
    let body = json!({"rows": [
        {"day": "2026-11-26", "org": "某县自然资源局", "n": 3},
        {"day": "2026-11-26", "org": "某县水利局", "n": 5},
        {"day": "2026-11-27", "org": "教育局", "n": 1}
    ]});
    let out = run(
        json!({"url": API, "rows": {"path": "$.rows[*]", "date": "day", "unit": "org", "fields": {"meetings": "n"}}}),
        TestHost::new().fixture(Fixture::get(API).respond(200, body.to_string())),
    )
    .unwrap();
    assert_eq!(
        lines(&out),
        [
            "county/natres meetings - 2026-11-26 3",
            "county/edu meetings - 2026-11-27 1"
        ]
    );
    assert_eq!(out.warnings.len(), 1);
    let w = &out.warnings[0];
    assert!(
        w.starts_with(&format!(
            "GET {API}: rows[1]: field \"org\": unknown unit \"某县水利局\""
        )),
        "{w}"
    );
}

#[test]
fn bad_numbers_and_dates_are_warnings_naming_row_and_field() {
    let body = json!({"rows": [
        {"day": "2026/11/25", "posts": "三", "reads": "1,024"},
        {"day": "2026-11-26T09:30:00+08:00", "posts": "12x", "reads": 88},
        {"day": "yesterday", "posts": 1, "reads": 1},
        {"day": "2026-11-27", "posts": true, "reads": 7}
    ]});
    let out = run(
        json!({"url": API, "rows": {"path": "$.rows[*]", "date": "day", "fields": {"weibo_posts": "posts", "weibo_reads": "reads"}}}),
        TestHost::new().fixture(Fixture::get(API).respond(200, body.to_string())),
    )
    .unwrap();
    assert_eq!(
        lines(&out),
        [
            "- weibo_reads - 2026-11-25 1024",
            "- weibo_reads - 2026-11-26 88",
            "- weibo_reads - 2026-11-27 7"
        ]
    );
    let p = format!("GET {API}: ");
    assert_eq!(
        out.warnings,
        [
            format!("{p}rows[0]: field \"posts\" (weibo_posts): bad number \"三\"; value skipped"),
            format!("{p}rows[1]: field \"posts\" (weibo_posts): bad number \"12x\"; value skipped"),
            format!("{p}rows[2]: field \"day\": bad date \"yesterday\"; row skipped"),
            format!("{p}rows[3]: field \"posts\" (weibo_posts): bad number true; value skipped"),
        ]
    );
}

#[test]
fn http_errors_name_status_and_url() {
    let settings = json!({"url": API, "values": [{"indicator": "a", "path": "$.a"}]});
    let err = run(
        settings.clone(),
        TestHost::new().fixture(Fixture::get(API).respond(500, "Internal Server Error")),
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Upstream);
    assert_eq!(
        err.message,
        format!("GET {API}: HTTP 500: Internal Server Error")
    );

    let err = run(
        settings,
        TestHost::new().fixture(Fixture::get(API).respond(401, r#"{"msg":"token expired"}"#)),
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth);
    assert!(err.message.contains("HTTP 401"), "{}", err.message);
}

#[test]
fn a_429_is_rate_limited_until_its_retry_after() {
    let settings = json!({"url": API, "values": [{"indicator": "a", "path": "$.a"}]});
    let host = TestHost::new().fixture(
        Fixture::get(API)
            .header("Retry-After", "600")
            .respond(429, "slow down"),
    );
    let now = host.now();
    let err = testkit::assert_kind(run(settings.clone(), host), ErrorKind::RateLimited);
    assert_eq!(err.retry_after, Some(now + chrono::Duration::minutes(10)));
    // Without the header the daemon retries as for `upstream`.
    let host = TestHost::new().fixture(Fixture::get(API).respond(429, ""));
    let err = testkit::assert_kind(run(settings, host), ErrorKind::RateLimited);
    assert_eq!(err.retry_after, None);
}
