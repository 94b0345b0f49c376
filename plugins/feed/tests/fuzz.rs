//! Property-based fuzzing of `feed`: whatever a portal serves as its RSS or
//! Atom feed, sitemap or list page, a run answers (an error naming the page,
//! or observations), never panics, and every observation is one article on a
//! day of the window.
//!
//! 256 cases per property unless `PROPTEST_CASES` says otherwise.

use chrono::NaiveDate;
use proptest::prelude::*;
use serde_json::{Value, json};
use tally_feed::Feed;
use tally_plugin::testkit::{Fixture, Harness, TestHost};
use tally_plugin::{CollectRequest, Window};

const RSS: &str = include_str!("fixtures/zwdt-rss.xml");
const ATOM: &str = include_str!("fixtures/tzgg-atom.xml");
const SITEMAP: &str = include_str!("fixtures/sitemap.xml");
const LIST: &str = include_str!("fixtures/list-index.html");

const ZWDT: &str = "http://www.mouxian.gov.cn/xxgk/zwdt";

fn settings(format: &str) -> Value {
    let url = format!("{ZWDT}/index.html");
    match format {
        "list" => json!({
            "url": url,
            "format": "list",
            "item_selector": "ul.list li a",
            "date_selector": "span",
            "next_pages": "index_{n}.html",
            "url_date_pattern": r"t(\d{8})_\d+\.html",
        }),
        other => json!({"url": url, "format": other}),
    }
}

/// Serves `body` as the page of a source of `format`, and checks the answer.
fn check(format: &str, body: &str) -> Result<(), TestCaseError> {
    let host = TestHost::new()
        .fixture(Fixture::get(&format!("{ZWDT}/index.html")).respond(200, body))
        .fixture(Fixture::get(&format!("{ZWDT}/index_1.html")).respond(404, "not found"));
    let day = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
    let req = CollectRequest::new("portal", Window::new(day(10, 1), day(10, 31)));
    let mut plugin = Harness::<Feed>::create(settings(format), host).unwrap();
    match plugin.collect(&req) {
        Ok(out) => {
            for o in &out.observations {
                prop_assert!(req.window.contains(o.day), "{o:?}");
                prop_assert_eq!(o.value, 1.0);
                prop_assert!(!o.entity.is_empty(), "{o:?}");
            }
        }
        Err(e) => prop_assert!(!e.message.is_empty(), "{e:?}"),
    }
    Ok(())
}

fn format() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["auto", "rss", "atom", "sitemap", "list"])
}

/// A real page of the format, to mutate.
fn page(format: &str) -> &'static str {
    match format {
        "rss" | "auto" => RSS,
        "atom" => ATOM,
        "sitemap" => SITEMAP,
        _ => LIST,
    }
}

/// Characters that matter to XML and HTML, plus any character.
fn markup_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => prop::sample::select(vec![
            '<', '>', '/', '"', '\'', '=', '&', ';', '!', '?', '[', ']', '-', ' ', '\n', '0',
            '9', 'a', 'T', ':', '.', '#', '日', '\u{0}',
        ]),
        1 => any::<char>(),
    ]
}

/// Character edits: (operation, position, character); also cuts the text.
fn mutate(text: &str, edits: &[(u8, usize, char)]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for &(op, at, c) in edits {
        let n = chars.len();
        match op % 4 {
            0 if n > 0 => chars[at % n] = c,
            1 => chars.insert(at % (n + 1), c),
            2 if n > 0 => {
                chars.remove(at % n);
            }
            3 => chars.truncate(at % (n + 1)),
            _ => {}
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn arbitrary_bytes_as_a_page(format in format(), bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        // Bodies reach plugins as text: invalid UTF-8 arrives replaced.
        check(format, &String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn markup_like_text_as_a_page(format in format(), text in "[<>/=\"' a-z0-9:!?&;#\\[\\]-]{0,300}") {
        check(format, &text)?;
    }

    #[test]
    fn mutated_real_pages(
        format in format(),
        edits in prop::collection::vec((any::<u8>(), any::<usize>(), markup_char()), 1..6),
    ) {
        check(format, &mutate(page(format), &edits))?;
    }
}

/// The pages the properties mutate are read as they are: the mutations start
/// from pages that count articles, not from pages already refused.
#[test]
fn the_unmutated_pages_count_articles() {
    for format in ["auto", "rss", "atom", "sitemap", "list"] {
        let host = TestHost::new()
            .fixture(Fixture::get(&format!("{ZWDT}/index.html")).respond(200, page(format)))
            .fixture(Fixture::get(&format!("{ZWDT}/index_1.html")).respond(404, "not found"));
        let day = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
        let req = CollectRequest::new("portal", Window::new(day(1, 1), day(12, 31)));
        let out = Harness::<Feed>::create(settings(format), host)
            .unwrap()
            .collect(&req)
            .unwrap_or_else(|e| panic!("{format}: {e:?}"));
        assert!(!out.observations.is_empty(), "{format}: {out:?}");
    }
}
