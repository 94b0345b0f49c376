//! Reading article links and their dates out of one fetched page: an RSS or
//! Atom feed, a sitemap (or sitemap index), or an HTML list page.

use chrono_tz::Tz;
use quick_xml::events::Event;
use scraper::{ElementRef, Html, Selector};
use url::Url;

use crate::dates::{self, When};

/// An article link found on a page, resolved against the page's URL.
#[derive(Debug, Clone, PartialEq)]
pub struct Article {
    /// Absolute, without fragment.
    pub url: String,
    /// The date the page gave for it (`pubDate`, `lastmod`, the list's date text).
    pub when: Option<When>,
}

/// What an RSS or Atom feed held.
pub struct FeedItems {
    pub kind: &'static str,
    pub articles: Vec<Article>,
    /// Entries with no usable link.
    pub without_link: usize,
}

/// Parses an RSS (0.9x, 1.0, 2.0) or Atom feed. The error is the parser's message.
pub fn feed(body: &str, base: &Url, tz: Tz) -> Result<FeedItems, String> {
    let parser = feed_rs::parser::Builder::new()
        .base_uri(Some(base.as_str()))
        .timestamp_parser(move |text| {
            dates::parse_when(text, tz).and_then(|w| dates::as_instant(w, tz))
        })
        .build();
    let parsed = parser.parse(body.as_bytes()).map_err(|e| e.to_string())?;
    let kind = match parsed.feed_type {
        feed_rs::model::FeedType::Atom => "atom",
        feed_rs::model::FeedType::JSON => "json",
        _ => "rss",
    };
    let mut articles = Vec::new();
    let mut without_link = 0;
    for entry in parsed.entries {
        // Atom may list several links; the article is the `alternate` one (the default rel).
        let link = entry
            .links
            .iter()
            .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
            .or_else(|| entry.links.first())
            .map(|l| l.href.clone())
            // An RSS guid or Atom id is often the article's URL too.
            .or_else(|| Some(entry.id.clone()).filter(|id| id.starts_with("http")));
        match link.and_then(|l| absolute(base, &l)) {
            Some(url) => articles.push(Article {
                url,
                when: entry.published.or(entry.updated).map(When::Instant),
            }),
            None => without_link += 1,
        }
    }
    Ok(FeedItems {
        kind,
        articles,
        without_link,
    })
}

/// What a sitemap file held: articles (`<urlset>`) or further sitemaps (`<sitemapindex>`).
#[derive(Debug, Default)]
pub struct Sitemap {
    pub articles: Vec<Article>,
    pub sitemaps: Vec<String>,
    /// `<lastmod>` values that are no W3C date, with their `<loc>`.
    pub bad_dates: Vec<(String, String)>,
}

/// Parses a sitemap (sitemaps.org 0.9). The error is the XML parser's message.
pub fn sitemap(body: &str, base: &Url, tz: Tz) -> Result<Sitemap, String> {
    let mut reader = quick_xml::Reader::from_str(body);
    reader.config_mut().trim_text(true);
    let mut out = Sitemap::default();
    let mut root: Option<String> = None;
    // The element whose text we are in (`loc`, `lastmod`) and the entry being read.
    let mut field: Option<String> = None;
    let mut text = String::new();
    let mut loc: Option<String> = None;
    let mut lastmod: Option<String> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("{e} (at byte {})", reader.error_position()))?;
        match event {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if root.is_none() {
                    if name != "urlset" && name != "sitemapindex" {
                        return Err(format!(
                            "the root element is <{name}>, not <urlset> or <sitemapindex>"
                        ));
                    }
                    root = Some(name);
                } else if name == "url" || name == "sitemap" {
                    loc = None;
                    lastmod = None;
                } else if name == "loc" || name == "lastmod" {
                    field = Some(name);
                    text.clear();
                }
            }
            Event::Text(t) if field.is_some() => {
                text.push_str(&t.xml10_content().map_err(|e| e.to_string())?);
            }
            Event::CData(t) if field.is_some() => {
                text.push_str(&t.decode().map_err(|e| e.to_string())?);
            }
            Event::GeneralRef(r) if field.is_some() => {
                let name = r.decode().map_err(|e| e.to_string())?;
                match r.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => text.push(c),
                    None => match quick_xml::escape::resolve_xml_entity(&name) {
                        Some(s) => text.push_str(s),
                        None => return Err(format!("unknown entity &{name};")),
                    },
                }
            }
            Event::End(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                match name.as_str() {
                    "loc" => loc = Some(text.trim().to_owned()),
                    "lastmod" => lastmod = Some(text.trim().to_owned()),
                    "url" => {
                        if let Some(url) = loc.take().and_then(|l| absolute(base, &l)) {
                            let when = lastmod.take().and_then(|m| {
                                let w = dates::parse_when(&m, tz);
                                if w.is_none() {
                                    out.bad_dates.push((url.clone(), m));
                                }
                                w
                            });
                            out.articles.push(Article { url, when });
                        }
                    }
                    "sitemap" => {
                        if let Some(url) = loc.take().and_then(|l| absolute(base, &l)) {
                            out.sitemaps.push(url);
                        }
                    }
                    _ => {}
                }
                if field.as_deref() == Some(name.as_str()) {
                    field = None;
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if root.is_none() {
        return Err("no <urlset> or <sitemapindex> element".to_owned());
    }
    Ok(out)
}

/// What the `item_selector` found on a list page.
pub struct ListPage {
    pub articles: Vec<Article>,
    /// Matched elements that carried no usable `href`.
    pub without_link: usize,
}

/// Reads an HTML list page: every element `item` matches is an article link
/// (an `<a href>`, or an element holding one); its date is the text of the
/// first `date` match inside the link's parent, else the parent's text beside
/// the link (not the title, which may itself mention a date).
pub fn list_page(
    body: &str,
    base: &Url,
    item: &Selector,
    date: Option<&Selector>,
    tz: Tz,
) -> ListPage {
    let html = Html::parse_document(body);
    let link = Selector::parse("a[href]").expect("valid selector");
    let mut articles = Vec::new();
    let mut without_link = 0;
    for el in html.select(item) {
        let href = el
            .value()
            .attr("href")
            .or_else(|| el.select(&link).next().and_then(|a| a.value().attr("href")));
        let Some(url) = href.and_then(|h| absolute(base, h)) else {
            without_link += 1;
            continue;
        };
        let parent = el.parent().and_then(ElementRef::wrap);
        let date_text = match (date, parent) {
            (Some(sel), Some(p)) => p.select(sel).next().map(text_of),
            (None, Some(p)) => Some(text_beside(p, el)),
            (_, None) => None,
        };
        let when = date_text.and_then(|t| {
            dates::parse_when(&t, tz).or_else(|| dates::date_in_text(&t).map(When::Day))
        });
        articles.push(Article { url, when });
    }
    ListPage {
        articles,
        without_link,
    }
}

fn text_of(el: ElementRef<'_>) -> String {
    el.text().collect::<String>()
}

/// The text of `parent` outside its child `item`.
fn text_beside(parent: ElementRef<'_>, item: ElementRef<'_>) -> String {
    let mut out = String::new();
    for child in parent.children().filter(|c| c.id() != item.id()) {
        if let Some(e) = ElementRef::wrap(child) {
            out.push_str(&text_of(e));
        } else if let Some(t) = child.value().as_text() {
            out.push_str(t);
        }
        out.push(' ');
    }
    out
}

/// `href` resolved against the page it was on, without fragment; `None` for
/// anything that is not an http(s) page (`javascript:`, `mailto:`, `#`).
pub fn absolute(base: &Url, href: &str) -> Option<String> {
    let href = href.trim();
    if href.is_empty() || href.starts_with('#') {
        return None;
    }
    let mut url = base.join(href).ok()?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return None;
    }
    url.set_fragment(None);
    Some(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_absolute_without_fragment() {
        let base = Url::parse("http://www.x.gov.cn/xxgk/zwdt/index_1.html").unwrap();
        assert_eq!(
            absolute(&base, "./202610/t20261015_12345.html#top").as_deref(),
            Some("http://www.x.gov.cn/xxgk/zwdt/202610/t20261015_12345.html")
        );
        assert_eq!(
            absolute(&base, "../../art/2026/10/5/art_1_2.html").as_deref(),
            Some("http://www.x.gov.cn/art/2026/10/5/art_1_2.html")
        );
        assert_eq!(absolute(&base, "javascript:void(0)"), None);
        assert_eq!(absolute(&base, "#"), None);
        assert_eq!(absolute(&base, "mailto:a@x.gov.cn"), None);
    }
}
