//! The `feed` plugin on what county portals serve: an RSS 2.0 column feed, an
//! Atom feed, a TRS sitemap, TRS list pages, and the ways they go wrong.

use chrono::NaiveDate;
use serde_json::{Value, json};
use tally_feed::Feed;
use tally_plugin::testkit::{Fixture, Harness, TestHost};
use tally_plugin::{CollectRequest, CollectResponse, Error, ErrorKind, Level, Window};

const RSS: &str = include_str!("fixtures/zwdt-rss.xml");
const ATOM: &str = include_str!("fixtures/tzgg-atom.xml");
const SITEMAP: &str = include_str!("fixtures/sitemap.xml");
const LIST_0: &str = include_str!("fixtures/list-index.html");
const LIST_1: &str = include_str!("fixtures/list-index_1.html");

const SITE: &str = "http://www.mouxian.gov.cn";
const ZWDT: &str = "http://www.mouxian.gov.cn/xxgk/zwdt";
const TRS: &str = r"t(\d{8})_\d+\.html";

fn day(m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, m, d).unwrap()
}

/// October 2026 in Asia/Shanghai, unless the test says otherwise.
fn october() -> CollectRequest {
    CollectRequest::new("portal", Window::new(day(10, 1), day(10, 31)))
}

fn run(settings: Value, host: TestHost, req: &CollectRequest) -> Result<CollectResponse, Error> {
    Harness::<Feed>::create(settings, host)?.collect(req)
}

/// Observations as sorted `day entity value` lines (all must be `portal_articles` of the default unit).
fn lines(out: &CollectResponse) -> Vec<String> {
    let mut v: Vec<String> = out
        .observations
        .iter()
        .map(|o| {
            assert_eq!(o.unit, None);
            format!("{} {} {} {}", o.indicator, o.day, o.entity, o.value)
        })
        .collect();
    v.sort();
    v
}

fn list_host() -> TestHost {
    TestHost::new()
        .fixture(Fixture::get(&format!("{ZWDT}/index.html")).respond(200, LIST_0))
        .fixture(Fixture::get(&format!("{ZWDT}/index_1.html")).respond(200, LIST_1))
        .fixture(
            Fixture::get(&format!("{ZWDT}/index_2.html"))
                .respond(404, "<html><body><h1>404 Not Found</h1></body></html>"),
        )
}

fn list_settings() -> Value {
    json!({
        "url": format!("{ZWDT}/index.html"),
        "format": "list",
        "item_selector": "ul.list li a",
        "date_selector": "span",
        "next_pages": "index_{n}.html",
    })
}

fn requested(host: &TestHost) -> Vec<String> {
    host.requests().into_iter().map(|r| r.url).collect()
}

#[test]
fn rss_counts_articles_per_day_in_shanghai() {
    let host = TestHost::new().fixture(Fixture::get(&format!("{ZWDT}/rss.xml")).respond(200, RSS));
    let out = run(
        json!({"url": format!("{ZWDT}/rss.xml"), "format": "rss"}),
        host,
        &october(),
    )
    .unwrap();
    assert_eq!(
        lines(&out),
        [
            // Wed, 30 Sep 2026 16:30:00 GMT is 00:30 on 1 October in Shanghai.
            format!("portal_articles 2026-10-01 {ZWDT}/202610/t20261001_12301.html 1"),
            // The #pic fragment is not part of the article's identity.
            format!("portal_articles 2026-10-12 {ZWDT}/202610/t20261012_12340.html 1"),
            format!("portal_articles 2026-10-15 {ZWDT}/202610/t20261015_12345.html 1"),
            format!("portal_articles 2026-10-15 {ZWDT}/202610/t20261015_12351.html 1"),
        ]
    );
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[test]
fn the_day_follows_the_request_time_zone() {
    let host = TestHost::new().fixture(Fixture::get(&format!("{ZWDT}/rss.xml")).respond(200, RSS));
    let mut req = CollectRequest::new("portal", Window::new(day(9, 30), day(10, 1)));
    req.timezone = "UTC".into();
    let out = run(
        json!({"url": format!("{ZWDT}/rss.xml")}),
        host.clone(),
        &req,
    )
    .unwrap();
    // In UTC both 30 September items fall on the 30th; nothing is on 1 October.
    assert_eq!(
        lines(&out),
        [
            format!("portal_articles 2026-09-30 {ZWDT}/202609/t20260930_12299.html 1"),
            format!("portal_articles 2026-09-30 {ZWDT}/202610/t20261001_12301.html 1"),
        ]
    );
    req.timezone = "Asia/Shanghai".into();
    let out = run(json!({"url": format!("{ZWDT}/rss.xml")}), host, &req).unwrap();
    assert_eq!(
        lines(&out),
        [
            format!("portal_articles 2026-09-30 {ZWDT}/202609/t20260930_12299.html 1"),
            format!("portal_articles 2026-10-01 {ZWDT}/202610/t20261001_12301.html 1"),
        ]
    );
}

#[test]
fn atom_prefers_published_and_the_alternate_link() {
    let url = "https://jyj.mouxian.gov.cn/tzgg/atom.xml";
    let host = TestHost::new().fixture(Fixture::get(url).respond(200, ATOM));
    let out = run(
        json!({"url": url, "indicator": "edu_notices"}),
        host,
        &october(),
    )
    .unwrap();
    assert_eq!(
        lines(&out),
        [
            "edu_notices 2026-10-08 https://jyj.mouxian.gov.cn/tzgg/2026/1088.html 1",
            // A relative link resolves against the feed's URL.
            "edu_notices 2026-10-12 https://jyj.mouxian.gov.cn/tzgg/2026/1090.html 1",
        ]
    );
}

#[test]
fn a_format_that_does_not_match_the_body_is_a_warning() {
    let url = "https://jyj.mouxian.gov.cn/tzgg/atom.xml";
    let host = TestHost::new().fixture(Fixture::get(url).respond(200, ATOM));
    let out = run(json!({"url": url, "format": "rss"}), host, &october()).unwrap();
    assert_eq!(out.observations.len(), 2);
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(
        out.warnings[0].contains("the body is atom"),
        "{:?}",
        out.warnings
    );
}

fn sitemap_host() -> TestHost {
    TestHost::new().fixture(Fixture::get(&format!("{SITE}/sitemap.xml")).respond(200, SITEMAP))
}

#[test]
fn sitemap_counts_lastmod_days() {
    let out = run(
        json!({"url": format!("{SITE}/sitemap.xml"), "format": "sitemap"}),
        sitemap_host(),
        &october(),
    )
    .unwrap();
    assert_eq!(
        lines(&out),
        [
            format!("portal_articles 2026-10-01 {ZWDT}/zcjd/index.html 1"),
            format!("portal_articles 2026-10-02 {ZWDT}/202609/t20260928_12280.html 1"),
            format!("portal_articles 2026-10-09 {SITE}/xxgk/tzgg/202610/t20261009_12320.html 1"),
            format!("portal_articles 2026-10-11 {SITE}/gkmlpt/content/0/508/post_508890.html 1"),
            format!("portal_articles 2026-10-15 {ZWDT}/202610/t20261015_12351.html 1"),
            format!("portal_articles 2026-10-20 {SITE}/ 1"),
            format!("portal_articles 2026-10-20 {ZWDT}/202610/t20261015_12345.html 1"),
        ]
    );
}

#[test]
fn the_url_date_wins_over_lastmod() {
    // `auto` reads a <urlset> body as a sitemap.
    let out = run(
        json!({"url": format!("{SITE}/sitemap.xml"), "url_date_pattern": TRS}),
        sitemap_host(),
        &october(),
    )
    .unwrap();
    assert_eq!(
        lines(&out),
        [
            format!("portal_articles 2026-10-01 {ZWDT}/zcjd/index.html 1"),
            format!("portal_articles 2026-10-09 {SITE}/xxgk/tzgg/202610/t20261009_12320.html 1"),
            // No date in a gkmlpt URL: lastmod it is.
            format!("portal_articles 2026-10-11 {SITE}/gkmlpt/content/0/508/post_508890.html 1"),
            // Modified on the 20th, published on the 15th.
            format!("portal_articles 2026-10-15 {ZWDT}/202610/t20261015_12345.html 1"),
            format!("portal_articles 2026-10-15 {ZWDT}/202610/t20261015_12351.html 1"),
            format!("portal_articles 2026-10-20 {SITE}/ 1"),
            // t20260928_12280, modified on 2 October, was published in September: not counted.
        ]
    );
}

#[test]
fn include_keeps_one_column_of_a_sitemap() {
    let by_regex = run(
        json!({"url": format!("{SITE}/sitemap.xml"), "url_date_pattern": TRS, "include": "/xxgk/zwdt/"}),
        sitemap_host(),
        &october(),
    )
    .unwrap();
    assert_eq!(
        lines(&by_regex),
        [
            format!("portal_articles 2026-10-01 {ZWDT}/zcjd/index.html 1"),
            format!("portal_articles 2026-10-15 {ZWDT}/202610/t20261015_12345.html 1"),
            format!("portal_articles 2026-10-15 {ZWDT}/202610/t20261015_12351.html 1"),
        ]
    );
    let by_prefix = run(
        json!({"url": format!("{SITE}/sitemap.xml"), "url_date_pattern": TRS, "include": format!("{ZWDT}/2026")}),
        sitemap_host(),
        &october(),
    )
    .unwrap();
    assert_eq!(lines(&by_prefix).len(), 2, "{:?}", lines(&by_prefix));
}

#[test]
fn a_sitemap_index_is_followed() {
    let index = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <sitemap><loc>{SITE}/sitemap_zwdt.xml</loc><lastmod>2026-10-20</lastmod></sitemap>
  <sitemap><loc>{SITE}/sitemap_tzgg.xml</loc></sitemap>
</sitemapindex>"#
    );
    let tzgg = format!(
        r#"<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>{SITE}/xxgk/tzgg/202610/t20261016_12399.html?a=1&amp;b=2</loc></url></urlset>"#
    );
    let host = TestHost::new()
        .fixture(Fixture::get(&format!("{SITE}/sitemap_index.xml")).respond(200, index))
        .fixture(Fixture::get(&format!("{SITE}/sitemap_zwdt.xml")).respond(200, SITEMAP))
        .fixture(Fixture::get(&format!("{SITE}/sitemap_tzgg.xml")).respond(200, tzgg));
    let settings = json!({"url": format!("{SITE}/sitemap_index.xml"), "format": "sitemap", "url_date_pattern": TRS});
    let out = run(settings.clone(), host.clone(), &october()).unwrap();
    assert_eq!(out.observations.len(), 7, "{:?}", lines(&out));
    assert!(
        lines(&out).contains(&format!(
            "portal_articles 2026-10-16 {SITE}/xxgk/tzgg/202610/t20261016_12399.html?a=1&b=2 1"
        )),
        "{:?}",
        lines(&out)
    );

    // max_pages bounds the sitemap files read, with a warning.
    let mut bounded = settings;
    bounded["max_pages"] = json!(2);
    let out = run(bounded, host, &october()).unwrap();
    assert_eq!(out.observations.len(), 6, "{:?}", lines(&out));
    assert!(
        out.warnings.iter().any(|w| w.contains("max_pages = 2")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn list_pages_are_read_until_a_404() {
    let host = list_host();
    let out = run(list_settings(), host.clone(), &october()).unwrap();
    assert_eq!(
        lines(&out),
        [
            format!("portal_articles 2026-10-01 {ZWDT}/202610/t20261001_12301.html 1"),
            format!("portal_articles 2026-10-08 {ZWDT}/202610/t20261008_12330.html 1"),
            format!("portal_articles 2026-10-12 {ZWDT}/202610/t20261012_12340.html 1"),
            format!("portal_articles 2026-10-15 {ZWDT}/202610/t20261015_12345.html 1"),
            format!("portal_articles 2026-10-20 {ZWDT}/202610/t20261020_12360.html 1"),
        ]
    );
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert_eq!(
        requested(&host),
        [
            format!("{ZWDT}/index.html"),
            format!("{ZWDT}/index_1.html"),
            format!("{ZWDT}/index_2.html"),
        ]
    );
}

#[test]
fn list_paging_stops_at_a_page_older_than_the_window() {
    let host = list_host();
    let req = CollectRequest::new("portal", Window::new(day(10, 10), day(10, 31)));
    let out = run(list_settings(), host.clone(), &req).unwrap();
    assert_eq!(out.observations.len(), 3, "{:?}", lines(&out));
    // index_1.html holds 10-08, 10-01 and 09-28 only: index_2.html is not asked for.
    assert_eq!(
        requested(&host),
        [format!("{ZWDT}/index.html"), format!("{ZWDT}/index_1.html")]
    );
}

#[test]
fn list_paging_is_bounded_by_max_pages_with_a_warning() {
    let host = list_host();
    let mut settings = list_settings();
    settings["max_pages"] = json!(2);
    let req = CollectRequest::new("portal", Window::new(day(9, 1), day(10, 31)));
    let out = run(settings, host.clone(), &req).unwrap();
    assert_eq!(out.observations.len(), 6, "{:?}", lines(&out));
    assert_eq!(requested(&host).len(), 2);
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(
        out.warnings[0].contains("max_pages = 2") && out.warnings[0].contains("index.html"),
        "{}",
        out.warnings[0]
    );
}

#[test]
fn without_date_selector_the_text_beside_the_link_is_read() {
    let host = list_host();
    let mut settings = list_settings();
    settings.as_object_mut().unwrap().remove("date_selector");
    settings.as_object_mut().unwrap().remove("next_pages");
    let out = run(settings, host, &october()).unwrap();
    assert_eq!(
        lines(&out),
        [
            format!("portal_articles 2026-10-12 {ZWDT}/202610/t20261012_12340.html 1"),
            // The title mentions 2026年第四季度, the date beside it is 10-15.
            format!("portal_articles 2026-10-15 {ZWDT}/202610/t20261015_12345.html 1"),
            format!("portal_articles 2026-10-20 {ZWDT}/202610/t20261020_12360.html 1"),
        ]
    );
}

#[test]
fn a_pinned_article_on_every_page_counts_once() {
    let pinned = r#"<li class="top"><a href="./202610/t20261015_12345.html">【置顶】我县召开2026年第四季度安全生产工作会议</a><span>2026-10-15</span></li>"#;
    let page1 = LIST_1.replace(
        "<ul class=\"list\">",
        &format!("<ul class=\"list\">{pinned}"),
    );
    let host = TestHost::new()
        .fixture(Fixture::get(&format!("{ZWDT}/index.html")).respond(200, LIST_0))
        .fixture(Fixture::get(&format!("{ZWDT}/index_1.html")).respond(200, page1))
        .fixture(Fixture::get(&format!("{ZWDT}/index_2.html")).respond(404, ""));
    let out = run(list_settings(), host, &october()).unwrap();
    assert_eq!(out.observations.len(), 5, "{:?}", lines(&out));
}

#[test]
fn undated_articles_are_a_warning_not_a_number() {
    let page = LIST_0.replace("<span>2026-10-12</span>", "<span>昨天</span>");
    let host =
        TestHost::new().fixture(Fixture::get(&format!("{ZWDT}/index.html")).respond(200, page));
    let mut settings = list_settings();
    settings.as_object_mut().unwrap().remove("next_pages");
    let out = run(settings, host, &october()).unwrap();
    assert_eq!(out.observations.len(), 2);
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(
        out.warnings[0].contains("1 articles have no date")
            && out.warnings[0].contains("t20261012_12340.html"),
        "{}",
        out.warnings[0]
    );
}

#[test]
fn a_selector_that_matches_nothing_names_itself_and_the_page() {
    let mut settings = list_settings();
    settings["item_selector"] = json!("div.news-list li a");
    let err = run(settings, list_host(), &october()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Settings);
    assert_eq!(
        err.message,
        format!(
            "item_selector \"div.news-list li a\" matched nothing on {ZWDT}/index.html; check the selector against the page's HTML"
        )
    );
}

#[test]
fn malformed_xml_is_an_upstream_error_naming_the_url() {
    // A CMS template that does not escape `&` in links, and a body cut short.
    let unescaped = RSS.replace("t20261012_12340.html#pic", "content.jsp?id=12340&type=pic");
    let truncated = &RSS[..RSS.find("<pubDate>Mon, 12 Oct").unwrap() + 20];
    for broken in [unescaped.as_str(), truncated] {
        let url = format!("{ZWDT}/rss.xml");
        let host = TestHost::new().fixture(Fixture::get(&url).respond(200, broken));
        let err = run(json!({"url": url}), host, &october()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Upstream);
        assert!(
            err.message.starts_with(&format!(
                "{url}: not a readable RSS or Atom feed: unable to parse XML"
            )),
            "{}",
            err.message
        );
    }

    let broken_map = "<urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\"><url><loc>http://x/a.html</loc></urlset>";
    let url = format!("{SITE}/sitemap.xml");
    let host = TestHost::new().fixture(Fixture::get(&url).respond(200, broken_map));
    let err = run(json!({"url": url, "format": "sitemap"}), host, &october()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Upstream);
    assert!(
        err.message
            .starts_with(&format!("{url}: not a readable sitemap: ")),
        "{}",
        err.message
    );

    // A WAF or login page served instead of the feed.
    let url = format!("{ZWDT}/rss.xml");
    let host = TestHost::new().fixture(
        Fixture::get(&url).respond(200, "<html><body>访问过于频繁，请稍后再试</body></html>"),
    );
    let err = run(json!({"url": url}), host, &october()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Upstream, "{}", err.message);
}

#[test]
fn http_errors_name_the_page_and_status() {
    let url = format!("{ZWDT}/rss.xml");
    let host = TestHost::new().fixture(Fixture::get(&url).respond(502, "Bad Gateway"));
    let err = run(json!({"url": url}), host, &october()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Upstream);
    assert_eq!(err.message, format!("GET {url}: HTTP 502"));

    // A later list page failing other than with 404 fails the run, naming that page.
    let host = TestHost::new()
        .fixture(Fixture::get(&format!("{ZWDT}/index.html")).respond(200, LIST_0))
        .fixture(Fixture::get(&format!("{ZWDT}/index_1.html")).respond(403, "Forbidden"));
    let err = run(list_settings(), host, &october()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth);
    assert_eq!(err.message, format!("GET {ZWDT}/index_1.html: HTTP 403"));

    // The first list page answering 404 is an error, not an empty column.
    let host = TestHost::new()
        .fixture(Fixture::get(&format!("{ZWDT}/index.html")).respond(404, "Not Found"));
    let err = run(list_settings(), host, &october()).unwrap_err();
    assert_eq!(err.message, format!("GET {ZWDT}/index.html: HTTP 404"));
}

#[test]
fn bad_settings_are_refused_at_creation_naming_the_setting() {
    let check = |extra: Value, starts: &str| {
        let mut settings = list_settings();
        for (k, v) in extra.as_object().unwrap() {
            settings[k] = v.clone();
        }
        let err = Harness::<Feed>::create(settings, TestHost::new())
            .err()
            .unwrap_or_else(|| panic!("accepted {extra}"));
        assert_eq!(err.kind, ErrorKind::Settings, "{}", err.message);
        assert!(err.message.starts_with(starts), "{extra}: {}", err.message);
    };
    check(
        json!({"url_date_pattern": r"t(\d{8}_"}),
        "url_date_pattern: invalid regex",
    );
    check(
        json!({"url_date_pattern": r"t\d{8}_\d+"}),
        "url_date_pattern: ",
    );
    check(json!({"include": "(zwdt"}), "include: invalid regex");
    check(
        json!({"item_selector": "ul..list"}),
        "item_selector: invalid CSS selector",
    );
    check(
        json!({"date_selector": "span["}),
        "date_selector: invalid CSS selector",
    );
    check(json!({"next_pages": "index_1.html"}), "next_pages: ");
    check(json!({"max_pages": 0}), "max_pages: ");
    check(json!({"url": "ftp://www.mouxian.gov.cn/"}), "url: ");
    check(json!({"indicator": "Portal"}), "indicator: ");
    check(json!({"format": "html"}), "format: ");
    check(json!({"item_selector": null}), "item_selector: ");
    check(json!({"typo": 1}), "typo: unknown field `typo`");

    let err = Harness::<Feed>::create(
        json!({"url": format!("{ZWDT}/rss.xml"), "item_selector": "a"}),
        TestHost::new(),
    )
    .err()
    .unwrap();
    assert!(
        err.message
            .starts_with("item_selector: only used with format = \"list\""),
        "{}",
        err.message
    );

    let plugin = Harness::<Feed>::create(list_settings(), TestHost::new()).unwrap();
    assert_eq!(plugin.emits(), ["portal_articles"]);
}

#[test]
fn the_run_logs_what_it_read() {
    let host = list_host();
    run(list_settings(), host.clone(), &october()).unwrap();
    let logs = host.logs();
    assert!(
        logs.iter()
            .any(|(l, m)| *l == Level::Debug && m.contains("5 articles in the window")),
        "{logs:?}"
    );
}
