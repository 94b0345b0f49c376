//! The `feed` plugin on portals that serve GB2312 / GBK, as many county sites
//! still do, and the column freshness indicator.

use chrono::NaiveDate;
use serde_json::{Value, json};
use tally_feed::Feed;
use tally_plugin::testkit::{Fixture, Harness, TestHost};
use tally_plugin::{CollectRequest, CollectResponse, Error, IndicatorRef, Kind, Window};

const LIST_0: &str = include_str!("fixtures/list-index.html");
const LIST_1: &str = include_str!("fixtures/list-index_1.html");

const ZWDT: &str = "http://www.mouxian.gov.cn/xxgk/zwdt";

fn day(m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, m, d).unwrap()
}

fn october() -> CollectRequest {
    CollectRequest::new("portal", Window::new(day(10, 1), day(10, 31)))
}

fn run(settings: Value, host: TestHost, req: &CollectRequest) -> Result<CollectResponse, Error> {
    Harness::<Feed>::create(settings, host)?.collect(req)
}

/// `indicator day entity value` lines, sorted.
fn lines(out: &CollectResponse) -> Vec<String> {
    let mut v: Vec<String> = out
        .observations
        .iter()
        .map(|o| format!("{} {} {} {}", o.indicator, o.day, o.entity, o.value))
        .collect();
    v.sort();
    v
}

/// The text in GB2312 bytes (encoding_rs writes GBK, of which GB2312 is a subset).
fn gb2312(text: &str) -> Vec<u8> {
    let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
    assert!(!unmappable, "not encodable in GBK: {text}");
    bytes.into_owned()
}

/// A TRS list page as a GB2312 site serves it: its dates in Chinese
/// (`2026年10月15日`), no date in the article URLs, and the charset declared
/// by `meta` (a full `<meta ...>` tag) or by nothing in the document.
fn trs_page(meta: &str, items: &[(&str, &str, &str)]) -> String {
    let mut lis = String::new();
    for (href, title, date) in items {
        lis.push_str(&format!(
            "          <li><a href=\"{href}\" target=\"_blank\" title=\"{title}\">{title}</a><span>{date}</span></li>\n"
        ));
    }
    format!(
        r#"<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml">
<head>
{meta}
<title>政务动态_某县人民政府门户网站</title>
</head>
<body>
  <div class="main">
      <ul class="list">
{lis}      </ul>
  </div>
  <div class="footer">主办：某县人民政府办公室</div>
</body>
</html>
"#
    )
}

const TRS_ITEMS: &[(&str, &str, &str)] = &[
    (
        "./202610/content_12360.html",
        "县委理论学习中心组召开专题学习会",
        "2026年10月20日",
    ),
    (
        "./202610/content_12345.html",
        "我县召开2026年第四季度安全生产工作会议",
        "2026年10月15日",
    ),
    (
        "./202609/content_12280.html",
        "我县举行中国农民丰收节庆祝活动",
        "2026年09月28日",
    ),
];

fn trs_settings() -> Value {
    json!({
        "url": format!("{ZWDT}/index.html"),
        "format": "list",
        "item_selector": "ul.list li a",
        "date_selector": "span",
    })
}

fn trs_expected() -> Vec<String> {
    vec![
        format!("portal_articles 2026-10-15 {ZWDT}/202610/content_12345.html 1"),
        format!("portal_articles 2026-10-20 {ZWDT}/202610/content_12360.html 1"),
    ]
}

#[test]
fn a_gb2312_list_page_declared_by_its_meta_is_counted() {
    let page = trs_page(
        r#"<meta http-equiv="Content-Type" content="text/html; charset=gb2312" />"#,
        TRS_ITEMS,
    );
    let host = TestHost::new().fixture(
        Fixture::get(&format!("{ZWDT}/index.html"))
            // TRS servers often send no charset in the header.
            .header("Content-Type", "text/html")
            .respond_bytes(200, gb2312(&page)),
    );
    let out = run(trs_settings(), host, &october()).unwrap();
    assert_eq!(lines(&out), trs_expected());
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[test]
fn a_gb2312_list_page_declared_by_the_header_is_counted() {
    let page = trs_page("", TRS_ITEMS);
    let host = TestHost::new().fixture(
        Fixture::get(&format!("{ZWDT}/index.html"))
            .header("Content-Type", "text/html; charset=GB2312")
            .respond_bytes(200, gb2312(&page)),
    );
    let out = run(trs_settings(), host, &october()).unwrap();
    assert_eq!(lines(&out), trs_expected());
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[test]
fn an_undeclared_gbk_page_is_read_as_gbk_with_a_warning() {
    let page = trs_page("", TRS_ITEMS);
    let host = TestHost::new().fixture(
        Fixture::get(&format!("{ZWDT}/index.html"))
            .header("Content-Type", "text/html")
            .respond_bytes(200, gb2312(&page)),
    );
    let out = run(trs_settings(), host, &october()).unwrap();
    assert_eq!(lines(&out), trs_expected());
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(
        out.warnings[0].starts_with(&format!("{ZWDT}/index.html: "))
            && out.warnings[0].contains("GBK"),
        "{}",
        out.warnings[0]
    );
}

#[test]
fn an_unknown_charset_label_is_a_warning_not_a_failure() {
    let page = trs_page("", TRS_ITEMS);
    let host = TestHost::new().fixture(
        Fixture::get(&format!("{ZWDT}/index.html"))
            .header("Content-Type", "text/html; charset=x-mac-klingon")
            .respond(200, page),
    );
    let out = run(trs_settings(), host, &october()).unwrap();
    assert_eq!(lines(&out), trs_expected());
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(
        out.warnings[0].contains("x-mac-klingon") && out.warnings[0].contains("index.html"),
        "{}",
        out.warnings[0]
    );
}

/// An RSS 2.0 feed as a GB2312 CMS writes it: the declaration names the
/// encoding, one `pubDate` is in Chinese (which the time-zone-aware parser
/// reads), titles and categories are Chinese.
fn gb2312_rss() -> Vec<u8> {
    gb2312(&format!(
        r#"<?xml version="1.0" encoding="gb2312"?>
<rss version="2.0">
<channel>
<title>某县人民政府 - 政务动态</title>
<link>{ZWDT}/</link>
<description>政务动态</description>
<item>
  <title>我县召开2026年第四季度安全生产工作会议</title>
  <link>{ZWDT}/202610/content_12345.html</link>
  <category>政务动态</category>
  <pubDate>2026年10月15日 09:30</pubDate>
</item>
<item>
  <title>图片新闻：金秋时节稻谷飘香</title>
  <link>{ZWDT}/202610/content_12340.html</link>
  <pubDate>Mon, 12 Oct 2026 08:00:00 +0800</pubDate>
</item>
</channel>
</rss>
"#
    ))
}

#[test]
fn a_gb2312_rss_feed_declared_by_its_xml_declaration_parses_and_counts() {
    let host = TestHost::new().fixture(
        Fixture::get(&format!("{ZWDT}/rss.xml"))
            .header("Content-Type", "application/rss+xml")
            .respond_bytes(200, gb2312_rss()),
    );
    let out = run(
        json!({"url": format!("{ZWDT}/rss.xml"), "format": "rss"}),
        host,
        &october(),
    )
    .unwrap();
    assert_eq!(
        lines(&out),
        [
            format!("portal_articles 2026-10-12 {ZWDT}/202610/content_12340.html 1"),
            format!("portal_articles 2026-10-15 {ZWDT}/202610/content_12345.html 1"),
        ]
    );
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

/// Why the daemon rewrites the declaration of the text it decoded: feed-rs
/// honours `encoding="gb2312"` and would read the (UTF-8) text as GBK again,
/// losing the Chinese date. If feed-rs ever stops doing so, this test says
/// the rewrite is no longer needed, not that feeds broke.
#[test]
fn feed_rs_rereads_the_declaration_of_text_it_is_given() {
    let decoded = encoding_rs::GBK.decode(&gb2312_rss()).0.into_owned();
    assert!(decoded.starts_with(r#"<?xml version="1.0" encoding="gb2312"?>"#));
    let parsed = feed_rs::parser::parse(decoded.as_bytes());
    let first_title = parsed
        .ok()
        .and_then(|f| f.entries.into_iter().next())
        .and_then(|e| e.title)
        .map(|t| t.content);
    assert_ne!(
        first_title.as_deref(),
        Some("我县召开2026年第四季度安全生产工作会议"),
        "feed-rs read UTF-8 text right despite a gb2312 declaration"
    );
}

/// A server on 127.0.0.1 answering every request with this head and body bytes.
fn serve(content_type: &'static str, body: Vec<u8>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let mut reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            reply.extend_from_slice(&body);
            let _ = conn.write_all(&reply);
        }
    });
    format!("http://{addr}")
}

#[test]
fn gb2312_pages_served_on_loopback_are_counted() {
    let page = trs_page(r#"<meta charset="gb2312">"#, TRS_ITEMS);
    let site = serve("text/html", gb2312(&page));
    let mut settings = trs_settings();
    settings["url"] = json!(format!("{site}/xxgk/zwdt/index.html"));
    let out = run(settings, TestHost::live(), &october()).unwrap();
    assert_eq!(
        lines(&out),
        [
            format!("portal_articles 2026-10-15 {site}/xxgk/zwdt/202610/content_12345.html 1"),
            format!("portal_articles 2026-10-20 {site}/xxgk/zwdt/202610/content_12360.html 1"),
        ]
    );
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);

    let feed = serve("application/rss+xml", gb2312_rss());
    let out = run(
        json!({"url": format!("{feed}/rss.xml")}),
        TestHost::live(),
        &october(),
    )
    .unwrap();
    assert_eq!(out.observations.len(), 2, "{:?}", lines(&out));
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

// --- Column freshness -------------------------------------------------------

fn list_host() -> TestHost {
    TestHost::new()
        .fixture(Fixture::get(&format!("{ZWDT}/index.html")).respond(200, LIST_0))
        .fixture(Fixture::get(&format!("{ZWDT}/index_1.html")).respond(200, LIST_1))
        .fixture(Fixture::get(&format!("{ZWDT}/index_2.html")).respond(404, ""))
}

fn fresh_settings() -> Value {
    json!({
        "url": format!("{ZWDT}/index.html"),
        "format": "list",
        "item_selector": "ul.list li a",
        "date_selector": "span",
        "next_pages": "index_{n}.html",
        "freshness_indicator": "portal_days_since_update",
    })
}

/// The freshness values by day.
fn freshness(out: &CollectResponse) -> Vec<(NaiveDate, f64)> {
    let mut v: Vec<_> = out
        .observations
        .iter()
        .filter(|o| o.indicator == "portal_days_since_update")
        .map(|o| {
            assert_eq!((o.unit.as_deref(), o.entity.as_str()), (None, ""));
            (o.day, o.value)
        })
        .collect();
    v.sort_by_key(|(d, _)| *d);
    v
}

#[test]
fn freshness_is_off_unless_asked_for() {
    let out = run(
        {
            let mut s = fresh_settings();
            s.as_object_mut().unwrap().remove("freshness_indicator");
            s
        },
        list_host(),
        &october(),
    )
    .unwrap();
    assert!(freshness(&out).is_empty());
    let p = Harness::<Feed>::create(fresh_settings(), list_host()).unwrap();
    assert_eq!(p.emits(), ["portal_articles", "portal_days_since_update"]);
}

#[test]
fn freshness_counts_the_days_since_the_newest_article_of_each_day() {
    // The column published on 09-28, 10-01, 10-08, 10-12, 10-15 and 10-20.
    let mut req = october();
    req.indicators.push(IndicatorRef {
        id: "portal_days_since_update".into(),
        name: "门户栏目未更新天数".into(),
        kind: Kind::Level,
        unit: "天".into(),
    });
    let out = run(fresh_settings(), list_host(), &req).unwrap();
    let f = freshness(&out);
    assert_eq!(f.len(), 31, "{f:?}");
    let at = |d: u32| f.iter().find(|(x, _)| *x == day(10, d)).unwrap().1;
    assert_eq!(at(1), 0.0);
    assert_eq!(at(7), 6.0);
    assert_eq!(at(8), 0.0);
    assert_eq!(at(14), 2.0);
    assert_eq!(at(20), 0.0);
    // Eleven days without an article by the end of the month: stale.
    assert_eq!(at(31), 11.0);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    // The articles are still counted as before.
    assert_eq!(
        out.observations
            .iter()
            .filter(|o| o.indicator == "portal_articles")
            .count(),
        5
    );
}

#[test]
fn freshness_before_the_oldest_article_read_is_unknown_with_a_warning() {
    let req = CollectRequest::new("portal", Window::new(day(9, 25), day(9, 30)));
    let out = run(fresh_settings(), list_host(), &req).unwrap();
    // 09-28 is the oldest article the column lists: 09-25 to 09-27 have no value.
    assert_eq!(
        freshness(&out),
        [(day(9, 28), 0.0), (day(9, 29), 1.0), (day(9, 30), 2.0)]
    );
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(
        out.warnings[0].contains("2026-09-25 to 2026-09-27 (3 days)")
            && out.warnings[0].contains("oldest article read is of 2026-09-28"),
        "{}",
        out.warnings[0]
    );
}

#[test]
fn freshness_counts_only_included_articles() {
    // Only the October articles of the column: on 10-05 the newest is 10-01,
    // but before it none is admitted.
    let mut settings = fresh_settings();
    settings["include"] = json!(format!("{ZWDT}/202610/"));
    let req = CollectRequest::new("portal", Window::new(day(9, 30), day(10, 5)));
    let out = run(settings, list_host(), &req).unwrap();
    assert_eq!(
        freshness(&out),
        [
            (day(10, 1), 0.0),
            (day(10, 2), 1.0),
            (day(10, 3), 2.0),
            (day(10, 4), 3.0),
            (day(10, 5), 4.0)
        ]
    );
}

#[test]
fn a_freshness_indicator_of_another_kind_or_id_is_refused_or_warned() {
    let mut same = fresh_settings();
    same["freshness_indicator"] = json!("portal_articles");
    let e = Harness::<Feed>::create(same, list_host()).err().unwrap();
    assert!(
        e.message.starts_with("freshness_indicator: "),
        "{}",
        e.message
    );
    let mut bad = fresh_settings();
    bad["freshness_indicator"] = json!("Days");
    let e = Harness::<Feed>::create(bad, list_host()).err().unwrap();
    assert!(
        e.message.starts_with("freshness_indicator: "),
        "{}",
        e.message
    );

    let mut req = october();
    req.indicators.push(IndicatorRef {
        id: "portal_days_since_update".into(),
        name: "未更新天数".into(),
        kind: Kind::Count,
        unit: "天".into(),
    });
    let out = run(fresh_settings(), list_host(), &req).unwrap();
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("not declared kind = \"level\"")),
        "{:?}",
        out.warnings
    );
}
