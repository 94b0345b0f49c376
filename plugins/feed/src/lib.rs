//! `feed`: counts the articles a portal website (门户网站) publishes per day,
//! from an RSS or Atom feed, a sitemap, or a CMS column's list pages.
//!
//! ```toml
//! # A TRS (拓尔思) column: list pages index.html, index_1.html, ...
//! [sources.settings]
//! url = "http://www.example.gov.cn/xxgk/zwdt/index.html"
//! format = "list"
//! item_selector = "ul.list li a"
//! date_selector = "span"
//! next_pages = "index_{n}.html"
//! url_date_pattern = 't(\d{8})_\d+\.html'
//! ```
//!
//! # Settings
//!
//! - `url` (required, `http://` or `https://`): the feed, the sitemap or the
//!   first list page.
//! - `format`: `"auto"` (the default: RSS or Atom, told apart by feed-rs from
//!   the body; a body whose root is `<urlset>` or `<sitemapindex>` is read as
//!   a sitemap), `"rss"`, `"atom"`, `"sitemap"` or `"list"`.
//! - `indicator` (default `portal_articles`): the indicator id to emit. Its
//!   kind comes from the daemon's catalogue; declare it `kind = "distinct"` so
//!   that an article two units both claim counts once at their parent.
//! - `url_date_pattern`: a regex with one capture group of 8 digits
//!   (`YYYYMMDD`, TRS: `t(\d{8})_\d+\.html`) or three groups (year, month,
//!   day, Hanweb: `art/(\d{4})/(\d{1,2})/(\d{1,2})/`). When it matches an
//!   article's URL, that date wins over `pubDate`, `updated`, `lastmod` or the
//!   list's date text (a sitemap's `lastmod` is the last *modification*).
//! - `include`: only count article URLs that start with this text (when it
//!   starts with `http://` or `https://`) or that this regex matches anywhere
//!   (e.g. `/xxgk/zwdt/` for one column of a whole-site sitemap).
//! - `list` only: `item_selector` (required, a CSS selector of the article
//!   links, e.g. `ul.list li a`; a matched element that is not a link counts
//!   through the first `<a href>` inside it), `date_selector` (a CSS selector
//!   inside the link's parent element, e.g. `span.date`; without it the
//!   parent's text beside the link is searched for a date), `next_pages` (the
//!   further pages, relative to `url`, `{n}` counting from 1:
//!   `index_{n}.html`), `max_pages` (default 10, the first page included; a
//!   sitemap index reads at most this many sitemap files too).
//! - `freshness_indicator` (optional, off by default): an indicator id, e.g.
//!   `portal_days_since_update`, to also emit the column's freshness: for
//!   each day of the window, the days from the newest article published on or
//!   before it (0 when one was published that day). Declare it `kind =
//!   "level"` (a warning says so otherwise), unit `天`.
//!
//! # What is counted
//!
//! Each article is an entity (its absolute URL without `#fragment`) with value
//! 1 on its publication day in the daemon's time zone: a `pubDate` of `Wed, 30
//! Sep 2026 16:30:00 GMT` is 2026-10-01 in Asia/Shanghai; a date without a time
//! is that day. Only days of the requested window are emitted; an article
//! listed twice (a pinned item on every list page) counts once. Articles with
//! no date at all are a warning, not a number.
//!
//! List pages are read from `url`, then `next_pages` with n = 1, 2, ... until
//! a page answers 404, holds no item, or holds only articles older than the
//! window, and at most `max_pages` pages (a warning says when that bound cut
//! the reading short).
//!
//! # Column freshness
//!
//! A column left unupdated should fail a check, but targets only know a
//! minimum. With `freshness_indicator`, alert on the level in Prometheus
//! instead: `config/prometheus/tally-rules.yml` has `TallyPortalColumnStale`
//! on `tally_indicator_value{indicator="portal_days_since_update"}`. The
//! freshness counts the articles read (after `include`): a day before the
//! oldest of them has no value, with a warning (an RSS feed listing only its
//! latest items, say), never a made-up number. Levels add up over sources and
//! over units: give a unit one column with this indicator (or each column its
//! own indicator id), and read a parent's value as the sum of its columns'.
//!
//! # Errors
//!
//! An HTTP status other than 2xx names the page and the status (401/403 are
//! `auth`, 429 `rate_limited`); a body that is no feed or sitemap is
//! `upstream`, naming the URL and the parser's message; an `item_selector`
//! that matches nothing on the first page is a `settings` error naming the
//! selector and the page.
//!
//! # Encodings
//!
//! The daemon decodes every page by the charset it declares: the
//! `Content-Type` header, else an XML declaration (`<?xml version="1.0"
//! encoding="gb2312"?>`), else a `<meta charset>` or `<meta http-equiv>` of an
//! HTML page; GB2312, GBK and GB18030 included (see `tally_plugin::charset`).
//! A label it does not know, or bytes invalid in the declared encoding, are
//! warnings of the run naming the page.

use std::collections::HashSet;

use chrono::NaiveDate;
use chrono_tz::Tz;
use regex::Regex;
use scraper::Selector;
use serde::{Deserialize, Serialize};
use tally_plugin::schemars::{self, JsonSchema};
use tally_plugin::{
    CollectRequest, CollectResponse, Description, Error, Host, HttpRequest, Kind, Observation,
    Plugin, check_indicator_id, export_plugin,
};
use url::Url;

mod dates;
mod parse;

use parse::Article;

/// `[sources.settings]` of a `feed` source.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The feed, the sitemap or the first list page (`http://` or `https://`).
    #[schemars(extend("examples" = ["http://www.example.gov.cn/xxgk/zwdt/index.html"]))]
    pub url: String,
    /// What `url` serves; `auto` tells RSS, Atom and sitemaps apart.
    #[serde(default)]
    pub format: Format,
    /// The indicator id to emit (declare it `kind = "distinct"`).
    #[serde(default = "default_indicator")]
    pub indicator: String,
    /// A regex finding an article's date in its URL: one group of 8 digits, or three (year, month, day).
    #[serde(default)]
    pub url_date_pattern: Option<String>,
    /// Only count article URLs starting with this text (`http...`) or matching this regex.
    #[serde(default)]
    pub include: Option<String>,
    /// `list` only (required there): a CSS selector of the article links, e.g. `ul.list li a`.
    #[serde(default)]
    pub item_selector: Option<String>,
    /// `list` only: a CSS selector of the date inside the link's parent, e.g. `span.date`.
    #[serde(default)]
    pub date_selector: Option<String>,
    /// `list` only: the further pages relative to `url`, `{n}` counting from 1 (`index_{n}.html`).
    #[serde(default)]
    pub next_pages: Option<String>,
    /// Pages (or sitemap files) read at most, the first included; default 10.
    #[serde(default)]
    pub max_pages: Option<u32>,
    /// An indicator id (kind `level`) for the days since the newest article, e.g. `portal_days_since_update`.
    #[serde(default)]
    pub freshness_indicator: Option<String>,
}

fn default_indicator() -> String {
    "portal_articles".to_owned()
}

/// What `url` serves.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Auto,
    Rss,
    Atom,
    Sitemap,
    List,
}

const DEFAULT_MAX_PAGES: u32 = 10;

/// A configured `feed` source.
pub struct Feed {
    url: Url,
    format: Format,
    indicator: String,
    url_date: Option<Regex>,
    include: Option<Include>,
    list: Option<ListSpec>,
    max_pages: u32,
    freshness: Option<String>,
}

enum Include {
    Prefix(String),
    Pattern(Regex),
}

impl Include {
    fn admits(&self, url: &str) -> bool {
        match self {
            Include::Prefix(p) => url.starts_with(p.as_str()),
            Include::Pattern(r) => r.is_match(url),
        }
    }
}

struct ListSpec {
    item_text: String,
    item: Selector,
    date: Option<Selector>,
    next_pages: Option<String>,
}

fn regex(setting: &str, text: &str) -> Result<Regex, Error> {
    Regex::new(text).map_err(|e| Error::settings(format!("{setting}: invalid regex {text:?}: {e}")))
}

fn selector(setting: &str, text: &str) -> Result<Selector, Error> {
    Selector::parse(text)
        .map_err(|e| Error::settings(format!("{setting}: invalid CSS selector {text:?}: {e}")))
}

impl Plugin for Feed {
    const NAME: &'static str = "feed";
    type Settings = Settings;

    fn describe() -> Description {
        Description::new("articles of portal sites per day, from RSS/Atom, sitemaps or list pages")
            .settings_schema::<Settings>()
    }

    fn new(s: Settings, _host: &Host) -> Result<Self, Error> {
        let url = Url::parse(&s.url)
            .ok()
            .filter(|u| u.scheme() == "http" || u.scheme() == "https")
            .ok_or_else(|| {
                Error::settings(format!(
                    "url: `{}` is not an http:// or https:// URL",
                    s.url
                ))
            })?;
        check_indicator_id("indicator", &s.indicator)?;
        if let Some(id) = &s.freshness_indicator {
            check_indicator_id("freshness_indicator", id)?;
            if *id == s.indicator {
                return Err(Error::settings(format!(
                    "freshness_indicator: {id:?} is also the articles' indicator; give it its own id, e.g. \"portal_days_since_update\""
                )));
            }
        }
        let url_date = match &s.url_date_pattern {
            None => None,
            Some(p) => {
                let r = regex("url_date_pattern", p)?;
                let groups = r.captures_len() - 1;
                if groups != 1 && groups != 3 {
                    return Err(Error::settings(format!(
                        "url_date_pattern: {p:?} has {groups} capture groups; give one group of 8 digits (YYYYMMDD, e.g. 't(\\d{{8}})_\\d+\\.html') or three (year, month, day)"
                    )));
                }
                Some(r)
            }
        };
        let include = match s.include.as_deref() {
            None => None,
            Some(p) if p.starts_with("http://") || p.starts_with("https://") => {
                Some(Include::Prefix(p.to_owned()))
            }
            Some(p) => Some(Include::Pattern(regex("include", p)?)),
        };
        let max_pages = s.max_pages.unwrap_or(DEFAULT_MAX_PAGES);
        if max_pages == 0 {
            return Err(Error::settings(
                "max_pages: must be at least 1 (the first page)",
            ));
        }
        let list = if s.format == Format::List {
            let Some(item_text) = s.item_selector.clone() else {
                return Err(Error::settings(
                    "item_selector: format = \"list\" needs the CSS selector of the article links, e.g. \"ul.list li a\"",
                ));
            };
            let item = selector("item_selector", &item_text)?;
            let date = s
                .date_selector
                .as_deref()
                .map(|d| selector("date_selector", d))
                .transpose()?;
            if let Some(next) = &s.next_pages {
                if !next.contains("{n}") {
                    return Err(Error::settings(format!(
                        "next_pages: {next:?} has no {{n}} (the page number), e.g. \"index_{{n}}.html\""
                    )));
                }
                if url.join(&next.replace("{n}", "1")).is_err() {
                    return Err(Error::settings(format!(
                        "next_pages: {next:?} is not a URL relative to {url}"
                    )));
                }
            }
            Some(ListSpec {
                item_text,
                item,
                date,
                next_pages: s.next_pages.clone(),
            })
        } else {
            for (name, set) in [
                ("item_selector", s.item_selector.is_some()),
                ("date_selector", s.date_selector.is_some()),
                ("next_pages", s.next_pages.is_some()),
            ] {
                if set {
                    return Err(Error::settings(format!(
                        "{name}: only used with format = \"list\" (format is {:?})",
                        format!("{:?}", s.format).to_lowercase()
                    )));
                }
            }
            None
        };
        Ok(Feed {
            url,
            format: s.format,
            indicator: s.indicator,
            url_date,
            include,
            list,
            max_pages,
            freshness: s.freshness_indicator,
        })
    }

    fn emits(&self) -> Vec<String> {
        let mut ids = vec![self.indicator.clone()];
        ids.extend(self.freshness.clone());
        ids
    }

    fn collect(&mut self, req: &CollectRequest, host: &Host) -> Result<CollectResponse, Error> {
        let tz: Tz = req.timezone.parse().map_err(|_| {
            Error::settings(format!(
                "timezone: {:?} is not an IANA time zone name",
                req.timezone
            ))
        })?;
        let mut out = CollectResponse::default();
        let articles = match (self.format, &self.list) {
            (Format::List, Some(list)) => self.read_list(list, req, host, tz, &mut out)?,
            _ => self.read_xml(host, tz, &mut out)?,
        };
        self.count(articles, req, host, tz, &mut out);
        Ok(out)
    }
}

impl Feed {
    /// The day an article counts on: the URL's date when the pattern finds
    /// one, else the date the page gave.
    fn day_of(&self, a: &Article, tz: Tz) -> Option<NaiveDate> {
        self.url_date
            .as_ref()
            .and_then(|r| dates::date_from_url(r, &a.url))
            .or_else(|| a.when.map(|w| w.day_in(tz)))
    }

    /// Turns the articles read into observations of the window's days.
    fn count(
        &self,
        articles: Vec<Article>,
        req: &CollectRequest,
        host: &Host,
        tz: Tz,
        out: &mut CollectResponse,
    ) {
        let mut seen = HashSet::new();
        let (mut excluded, mut outside) = (0usize, 0usize);
        let mut undated: Vec<String> = Vec::new();
        let mut days: Vec<NaiveDate> = Vec::new();
        for a in articles {
            if self.include.as_ref().is_some_and(|i| !i.admits(&a.url)) {
                excluded += 1;
                continue;
            }
            if !seen.insert(a.url.clone()) {
                continue;
            }
            let day = self.day_of(&a, tz);
            days.extend(day);
            match day {
                Some(day) if req.window.contains(day) => out
                    .observations
                    .push(Observation::new(&self.indicator, day, 1.0).entity(a.url)),
                Some(_) => outside += 1,
                None => undated.push(a.url),
            }
        }
        if let Some(id) = &self.freshness {
            self.days_since_update(id, days, req, out);
        }
        if let Some(first) = undated.first() {
            out.warn(format!(
                "{}: {} articles have no date (no url_date_pattern match, no pubDate/updated/lastmod or date text); not counted, e.g. {first}",
                self.url,
                undated.len()
            ));
        }
        host.debug(&format!(
            "{}: {} articles in the window, {outside} outside it, {excluded} not matching include",
            self.url,
            out.observations.len()
        ));
    }

    /// `freshness_indicator` for each day of the window: the days from the
    /// newest article published on or before it. A day before every article
    /// read has no value (unknown, not 0).
    fn days_since_update(
        &self,
        id: &str,
        mut days: Vec<NaiveDate>,
        req: &CollectRequest,
        out: &mut CollectResponse,
    ) {
        if req.indicator_kind(id).is_some_and(|k| k != Kind::Level) {
            out.warn(format!(
                "freshness_indicator {id:?} is not declared kind = \"level\": its days would add up over a period"
            ));
        }
        days.sort_unstable();
        let mut unknown: Vec<NaiveDate> = Vec::new();
        for day in req.window.days() {
            match days.partition_point(|d| *d <= day).checked_sub(1) {
                Some(i) => out.observations.push(Observation::new(
                    id,
                    day,
                    (day - days[i]).num_days() as f64,
                )),
                None => unknown.push(day),
            }
        }
        if let (Some(first), Some(last)) = (unknown.first(), unknown.last()) {
            let since = match days.first() {
                Some(oldest) => format!("the oldest article read is of {oldest}"),
                None => "no dated article was read".to_owned(),
            };
            out.warn(format!(
                "{}: {id} unknown for {first} to {last} ({} days): {since}",
                self.url,
                unknown.len()
            ));
        }
    }

    /// GETs one page. `Ok(None)` is a 404 where one ends the paging. Decoding
    /// problems (an unknown charset, invalid bytes) become warnings of the run.
    fn fetch(
        &self,
        host: &Host,
        url: &Url,
        may_404: bool,
        out: &mut CollectResponse,
    ) -> Result<Option<String>, Error> {
        if host.cancelled() {
            return Err(Error::upstream(format!(
                "GET {url}: cancelled before the request"
            )));
        }
        let resp = host
            .http(&HttpRequest::get(url.as_str()))
            .map_err(|e| Error::new(e.kind, format!("GET {url}: {}", e.message)))?;
        if may_404 && resp.status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&resp.status) {
            let message = format!("GET {url}: HTTP {}", resp.status);
            return Err(match resp.status {
                401 | 403 => Error::auth(message),
                429 => Error::rate_limited(message),
                _ => Error::upstream(message),
            });
        }
        for w in &resp.warnings {
            out.warn(format!("{url}: {w}"));
        }
        Ok(Some(resp.body))
    }

    /// Reads a feed, or a sitemap and the sitemaps a sitemap index names.
    fn read_xml(
        &self,
        host: &Host,
        tz: Tz,
        out: &mut CollectResponse,
    ) -> Result<Vec<Article>, Error> {
        let body = self.fetch(host, &self.url, false, out)?.unwrap_or_default();
        let is_sitemap = match self.format {
            Format::Sitemap => true,
            Format::Auto => looks_like_sitemap(&body),
            _ => false,
        };
        if !is_sitemap {
            let items = parse::feed(&body, &self.url, tz).map_err(|e| {
                Error::upstream(format!(
                    "{}: not a readable RSS or Atom feed: {e}",
                    self.url
                ))
            })?;
            let expected = match self.format {
                Format::Rss => Some("rss"),
                Format::Atom => Some("atom"),
                _ => None,
            };
            if let Some(expected) = expected.filter(|e| *e != items.kind) {
                out.warn(format!(
                    "{}: format = {expected:?} but the body is {}; read it as {} (set format = \"auto\" to silence this)",
                    self.url, items.kind, items.kind
                ));
            }
            if items.without_link > 0 {
                out.warn(format!(
                    "{}: {} entries have no link; not counted",
                    self.url, items.without_link
                ));
            }
            return Ok(items.articles);
        }

        let mut articles = Vec::new();
        let mut queue = vec![(self.url.clone(), Some(body))];
        let mut read = 0u32;
        while let Some((url, body)) = queue.pop() {
            if read == self.max_pages {
                out.warn(format!(
                    "{}: the sitemap index names more sitemaps than max_pages = {}; {} not read (raise max_pages)",
                    self.url,
                    self.max_pages,
                    queue.len() + 1
                ));
                break;
            }
            let body = match body {
                Some(b) => b,
                None => self.fetch(host, &url, false, out)?.unwrap_or_default(),
            };
            read += 1;
            let map = parse::sitemap(&body, &url, tz)
                .map_err(|e| Error::upstream(format!("{url}: not a readable sitemap: {e}")))?;
            for (loc, lastmod) in &map.bad_dates {
                out.warn(format!(
                    "{url}: <lastmod>{lastmod}</lastmod> of {loc} is not a W3C date (YYYY-MM-DD or ISO 8601)"
                ));
            }
            articles.extend(map.articles);
            // Read in document order: the queue is a stack.
            queue.extend(
                map.sitemaps
                    .into_iter()
                    .rev()
                    .filter_map(|s| Url::parse(&s).ok().map(|u| (u, None))),
            );
        }
        Ok(articles)
    }

    /// Reads a column's list pages: `url`, then `next_pages` for n = 1, 2, ...
    fn read_list(
        &self,
        list: &ListSpec,
        req: &CollectRequest,
        host: &Host,
        tz: Tz,
        out: &mut CollectResponse,
    ) -> Result<Vec<Article>, Error> {
        let body = self.fetch(host, &self.url, false, out)?.unwrap_or_default();
        let first = parse::list_page(&body, &self.url, &list.item, list.date.as_ref(), tz);
        if first.articles.is_empty() {
            return Err(Error::settings(if first.without_link > 0 {
                format!(
                    "item_selector {:?} matched {} elements on {} but none is or holds a link (<a href>)",
                    list.item_text, first.without_link, self.url
                )
            } else {
                format!(
                    "item_selector {:?} matched nothing on {}; check the selector against the page's HTML",
                    list.item_text, self.url
                )
            }));
        }
        let mut without_link = first.without_link;
        let mut articles = first.articles;
        let mut last_page_start = 0;
        let Some(next) = &list.next_pages else {
            return Ok(articles);
        };
        let mut pages = 1u32;
        let mut n = 1u32;
        loop {
            let page = &articles[last_page_start..];
            let all_older = page
                .iter()
                .all(|a| self.day_of(a, tz).is_some_and(|d| d < req.window.from));
            if all_older {
                break;
            }
            if pages == self.max_pages {
                out.warn(format!(
                    "{}: stopped after max_pages = {} list pages; older articles of the window may be on later pages (raise max_pages)",
                    self.url, self.max_pages
                ));
                break;
            }
            let url = self
                .url
                .join(&next.replace("{n}", &n.to_string()))
                .map_err(|e| Error::settings(format!("next_pages: {next:?} with n = {n}: {e}")))?;
            let Some(body) = self.fetch(host, &url, true, out)? else {
                break;
            };
            let page = parse::list_page(&body, &url, &list.item, list.date.as_ref(), tz);
            pages += 1;
            n += 1;
            without_link += page.without_link;
            if page.articles.is_empty() {
                break;
            }
            last_page_start = articles.len();
            articles.extend(page.articles);
        }
        if without_link > 0 {
            out.warn(format!(
                "{}: {without_link} elements matched item_selector {:?} without a link (<a href>); not counted",
                self.url, list.item_text
            ));
        }
        host.debug(&format!("{}: read {pages} list pages", self.url));
        Ok(articles)
    }
}

/// A body whose root element is a sitemap's, for `format = "auto"`: the first
/// tag after the XML declaration, comments and processing instructions.
fn looks_like_sitemap(body: &str) -> bool {
    let mut rest = body;
    while let Some(i) = rest.find('<') {
        rest = &rest[i..];
        if rest.starts_with("<?") || rest.starts_with("<!") {
            rest = &rest[1..];
            continue;
        }
        return rest.starts_with("<urlset") || rest.starts_with("<sitemapindex");
    }
    false
}

#[cfg(test)]
mod tests {
    use super::looks_like_sitemap;

    #[test]
    fn auto_tells_a_sitemap_by_its_root() {
        assert!(looks_like_sitemap(
            "<?xml version=\"1.0\"?>\n<!-- generated -->\n<urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">"
        ));
        assert!(looks_like_sitemap("<sitemapindex>"));
        assert!(!looks_like_sitemap(
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><description><![CDATA[<urlset>]]></description>"
        ));
        assert!(!looks_like_sitemap("not xml"));
    }
}

export_plugin!(Feed);
