//! The `feed` plugin in the real daemon: two units' portal columns share one
//! article; a `distinct` indicator counts it once at their parent, a `count`
//! indicator twice. And GB2312 portals (a TRS list page, an RSS feed) counted
//! right, in the daemon's process and in a `plugin-host` child.

use std::path::Path;

use serde_json::Value;

use crate::support::*;

/// An HTTP server on 127.0.0.1 answering each path with its body (and 404
/// for any other path), for the lifetime of the test process.
fn serve_paths(routes: Vec<(&'static str, String)>) -> String {
    serve_bytes(
        routes
            .into_iter()
            .map(|(p, body)| (p, "application/rss+xml; charset=utf-8", body.into_bytes()))
            .collect(),
    )
}

/// As [`serve_paths`], each path with its `Content-Type` and body bytes.
fn serve_bytes(routes: Vec<(&'static str, &'static str, Vec<u8>)>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 8192];
            let n = conn.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]);
            // "GET /a/rss.xml HTTP/1.1": the path without its query.
            let path = head
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .split('?')
                .next()
                .unwrap_or("/")
                .to_owned();
            let reply = match routes.iter().find(|(p, _, _)| *p == path) {
                Some((_, content_type, body)) => {
                    let mut reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    reply.extend_from_slice(body);
                    reply
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = conn.write_all(&reply);
        }
    });
    format!("http://{addr}")
}

/// One RSS 2.0 item of the county portal.
fn item(title: &str, link: &str, pub_date: &str) -> String {
    format!("<item><title>{title}</title><link>{link}</link><pubDate>{pub_date}</pubDate></item>")
}

fn rss(column: &str, items: &[String]) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>{column}</title><link>http://www.mouxian.gov.cn/</link>
<description>{column}</description><language>zh-cn</language>
{}
</channel></rss>"#,
        items.join("\n")
    )
}

/// The article both units claim: county/a's column links it plainly, county/b's with a fragment.
const SHARED: &str = "http://www.mouxian.gov.cn/xxgk/zwdt/202610/t20261015_12345.html";

fn setup(dir: &Path) -> (std::path::PathBuf, u16) {
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_feed")]);
    let a = rss(
        "某县甲局 - 工作动态",
        &[
            item(
                "全县安全生产工作会议召开",
                SHARED,
                "Thu, 15 Oct 2026 09:30:00 +0800",
            ),
            item(
                "甲局开展秋季防火宣传",
                "http://jj.mouxian.gov.cn/gzdt/202610/t20261012_301.html",
                "Mon, 12 Oct 2026 10:00:00 +0800",
            ),
            // 16:30 GMT on 30 September is 1 October in Shanghai.
            item(
                "甲局国庆值班安排",
                "http://jj.mouxian.gov.cn/gzdt/202610/t20261001_300.html",
                "Wed, 30 Sep 2026 16:30:00 GMT",
            ),
        ],
    );
    let b = rss(
        "某县乙局 - 工作动态",
        &[
            item(
                "全县安全生产工作会议召开",
                &format!("{SHARED}#zhuanti"),
                "Thu, 15 Oct 2026 09:30:00 +0800",
            ),
            item(
                "乙局召开节后收心会",
                "http://yj.mouxian.gov.cn/gzdt/202610/t20261008_501.html",
                "Thu, 08 Oct 2026 11:00:00 +0800",
            ),
        ],
    );
    let site = serve_paths(vec![("/a/rss.xml", a), ("/b/rss.xml", b)]);
    let mut sources = String::new();
    for (unit, path) in [("a", "/a/rss.xml"), ("b", "/b/rss.xml")] {
        for (suffix, indicator) in [("", "portal_articles"), ("-count", "portal_posts")] {
            sources.push_str(&format!(
                r#"
[[sources]]
id = "{unit}-portal{suffix}"
plugin = "feed"
unit = "county/{unit}"
schedule = "0 0 3 * * *"
backfill_from = "2026-09-01"
[sources.settings]
url = "{site}{path}"
indicator = "{indicator}"
"#
            ));
        }
    }
    let cfg = TestConfig::new(dir, &plugins)
        .county()
        .unit("county/a", "甲局")
        .unit("county/b", "乙局")
        .indicator("portal_articles", "门户网站信息发布数", "distinct", "篇")
        .indicator("portal_posts", "门户网站发稿次数", "count", "篇")
        .toml(&sources);
    let port = cfg.port();
    let config = cfg.write();
    (config, port)
}

#[test]
fn a_shared_article_counts_once_at_the_parent_of_a_distinct_indicator() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, port) = setup(tmp.path());
    let d = TestDaemon::start(&config, port);
    d.wait_for("the start-up runs of the four feed sources", 60, |d| {
        ["a-portal", "b-portal", "a-portal-count", "b-portal-count"]
            .iter()
            .all(|s| {
                d.metric(&format!(
                    "tally_source_up{{plugin=\"feed\",source=\"{s}\"}}"
                )) == Some(1.0)
            })
    });

    let oct = d.get_json("/api/v1/summary?period=2026-10");
    // a: the shared article, 10-12 and 10-01; b: the shared article and 10-08.
    assert_eq!(value(&oct, "county/a", "portal_articles"), 3.0, "{oct:#}");
    assert_eq!(value(&oct, "county/b", "portal_articles"), 2.0, "{oct:#}");
    assert_eq!(
        value(&oct, "county", "portal_articles"),
        4.0,
        "the shared article (one URL once its #fragment is dropped) counts once: {oct:#}"
    );
    // The same articles as a `count` indicator add up over units.
    assert_eq!(value(&oct, "county/a", "portal_posts"), 3.0);
    assert_eq!(value(&oct, "county/b", "portal_posts"), 2.0);
    assert_eq!(value(&oct, "county", "portal_posts"), 5.0);

    // On the shared article's day alone: one distinct article at the county.
    let day = d.get_json("/api/v1/summary?period=2026-10-15");
    assert_eq!(value(&day, "county", "portal_articles"), 1.0, "{day:#}");
    assert_eq!(value(&day, "county", "portal_posts"), 2.0, "{day:#}");

    // The quarter holds October's articles, and the September days, read by
    // the back-fill, hold none (the 30 September GMT item is 1 October here).
    let q4 = d.get_json("/api/v1/summary?period=2026-Q4");
    assert_eq!(value(&q4, "county", "portal_articles"), 4.0, "{q4:#}");
    let sep = d.get_json("/api/v1/summary?period=2026-09");
    assert_eq!(
        value(&sep, "county", "portal_articles"),
        Value::Null,
        "{sep:#}"
    );
    let sources = q4["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 4, "{q4:#}");
    assert!(sources.iter().all(|s| s["failed_runs"] == 0), "{sources:?}");
    let ind = q4["indicators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "portal_articles")
        .cloned()
        .unwrap();
    assert_eq!(ind["kind"], "distinct");
    assert_eq!(ind["unit"], "篇");
}

/// The text in GB2312 bytes (encoding_rs writes GBK, of which GB2312 is a subset).
fn gb2312(text: &str) -> Vec<u8> {
    let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
    assert!(!unmappable, "not encodable in GBK: {text}");
    bytes.into_owned()
}

/// A TRS list page declared GB2312 by its `<meta>` only: Chinese dates, no
/// date in the URLs, so only a right decoding counts the articles.
fn trs_list_page() -> Vec<u8> {
    let items = [
        (
            "./202610/content_401.html",
            "全县秋冬季森林防火工作部署会召开",
            "2026年10月20日",
        ),
        (
            "./202610/content_399.html",
            "我局开展国土空间规划宣传活动",
            "2026年10月15日",
        ),
        (
            "./202610/content_398.html",
            "耕地保护专项督查反馈会召开",
            "2026年10月15日",
        ),
        (
            "./202609/content_377.html",
            "我局举行中秋节前廉政教育",
            "2026年09月28日",
        ),
    ];
    let lis: String = items
        .iter()
        .map(|(href, title, date)| {
            format!("<li><a href=\"{href}\" target=\"_blank\">{title}</a><span class=\"date\">{date}</span></li>\n")
        })
        .collect();
    gb2312(&format!(
        "<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=gb2312\">\n<title>工作动态</title></head>\n<body><ul class=\"list\">\n{lis}</ul></body></html>\n"
    ))
}

/// An RSS feed declaring `encoding="gb2312"`, with Chinese `pubDate`s.
fn gb2312_rss() -> Vec<u8> {
    gb2312(
        r#"<?xml version="1.0" encoding="gb2312"?>
<rss version="2.0"><channel><title>某县自然资源局 通知公告</title><link>http://zrzyj.mouxian.gov.cn/tzgg/</link><description>通知公告</description>
<item><title>关于开展2026年度土地变更调查的通知</title><link>http://zrzyj.mouxian.gov.cn/tzgg/202610/content_88.html</link><pubDate>2026年10月12日 10:00</pubDate></item>
<item><title>关于征求规划意见的公告</title><link>http://zrzyj.mouxian.gov.cn/tzgg/202610/content_87.html</link><pubDate>2026年10月09日 16:20</pubDate></item>
</channel></rss>
"#,
    )
}

#[test]
fn gb2312_portals_are_counted_in_the_daemon_and_in_an_isolated_plugin() {
    let t = TestDir::new(&[bundled_plugin("tally_feed")]);
    let dir = t.dir.as_path();
    let plugins = &t.plugins;
    // The list page's server names no charset (its <meta> does); the feed's
    // names none either (its XML declaration does).
    let site = serve_bytes(vec![
        ("/gzdt/index.html", "text/html", trs_list_page()),
        ("/tzgg/rss.xml", "application/rss+xml", gb2312_rss()),
    ]);
    let mut sources = String::new();
    for (unit, isolation) in [("a", ""), ("b", "isolation = \"process\"")] {
        sources.push_str(&format!(
            r#"
[[sources]]
id = "{unit}-list"
plugin = "feed"
unit = "county/{unit}"
schedule = "0 0 3 * * *"
backfill_from = "2026-09-01"
{isolation}
[sources.settings]
url = "{site}/gzdt/index.html"
format = "list"
item_selector = "ul.list li a"
date_selector = "span.date"
freshness_indicator = "portal_days_since_update"

[[sources]]
id = "{unit}-rss"
plugin = "feed"
unit = "county/{unit}"
schedule = "0 0 3 * * *"
backfill_from = "2026-09-01"
{isolation}
[sources.settings]
url = "{site}/tzgg/rss.xml"
"#
        ));
    }
    let cfg = TestConfig::new(dir, plugins)
        .county()
        .unit("county/a", "甲局")
        .unit("county/b", "乙局")
        .indicator("portal_articles", "门户网站信息发布数", "count", "篇")
        .indicator(
            "portal_days_since_update",
            "门户栏目未更新天数",
            "level",
            "天",
        )
        .toml(&sources);
    let d = cfg.start();
    let ids = ["a-list", "a-rss", "b-list", "b-rss"];
    d.wait_for("the start-up runs of the four feed sources", 60, |d| {
        ids.iter().all(|s| {
            d.metric(&format!(
                "tally_source_up{{plugin=\"feed\",source=\"{s}\"}}"
            )) == Some(1.0)
        })
    });
    for id in ids {
        let source = d.source(id);
        let warnings: Vec<&str> = source["last_run"]["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        // No decoding warning; the list's only one says its freshness is
        // unknown before its oldest article (the back-fill starts 1 September).
        let expected: &[&str] = if id.ends_with("-list") {
            &[
                "portal_days_since_update unknown for 2026-09-01 to 2026-09-27 (27 days): the oldest article read is of 2026-09-28",
            ]
        } else {
            &[]
        };
        assert_eq!(warnings.len(), expected.len(), "{id}: {source:#}");
        for (w, e) in warnings.iter().zip(expected) {
            assert!(w.ends_with(e), "{id}: {w}");
        }
    }

    let oct = d.get_json("/api/v1/summary?period=2026-10");
    // Three list articles (20th, 15th twice) and two notices (12th, 9th), per unit:
    // in the daemon's process (a) as in a plugin-host child (b).
    for unit in ["county/a", "county/b"] {
        assert_eq!(value(&oct, unit, "portal_articles"), 5.0, "{unit}: {oct:#}");
        // Freshness on 31 October: eleven days since the 20th.
        assert_eq!(
            value(&oct, unit, "portal_days_since_update"),
            11.0,
            "{unit}: {oct:#}"
        );
    }
    let day = d.get_json("/api/v1/summary?period=2026-10-15");
    assert_eq!(value(&day, "county/a", "portal_articles"), 2.0, "{day:#}");
    assert_eq!(value(&day, "county/b", "portal_articles"), 2.0, "{day:#}");
    let day = d.get_json("/api/v1/summary?period=2026-10-14");
    // The 14th: 16 days after the list's 28 September article.
    assert_eq!(
        value(&day, "county/b", "portal_days_since_update"),
        16.0,
        "{day:#}"
    );
    // The September list article is September's.
    let sep = d.get_json("/api/v1/summary?period=2026-09");
    assert_eq!(value(&sep, "county/a", "portal_articles"), 1.0, "{sep:#}");
}
