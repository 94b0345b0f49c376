//! Dates as portals write them: RFC 822 `pubDate`s, W3C/ISO `lastmod` and
//! `updated`, bare local times (`2026-10-15 09:30`), Chinese list dates
//! (`2026年10月15日`), and dates embedded in article URLs.

use std::sync::LazyLock;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use regex::Regex;

/// A date in free text: `2026-10-15`, `2026/10/15`, `2026.10.15`, `2026年10月15日`.
static DATE_IN_TEXT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})").expect("valid regex")
});

/// When an article was published: an instant, or a day with no time of day
/// (which is that day in any time zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Instant(DateTime<Utc>),
    Day(NaiveDate),
}

impl When {
    /// The calendar day in `tz`: `Wed, 30 Sep 2026 16:30:00 GMT` is 2026-10-01 in Asia/Shanghai.
    pub fn day_in(self, tz: Tz) -> NaiveDate {
        match self {
            When::Instant(t) => t.with_timezone(&tz).date_naive(),
            When::Day(d) => d,
        }
    }
}

/// Parses a timestamp or date. Times without an offset are local to `tz`.
pub fn parse_when(text: &str, tz: Tz) -> Option<When> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(When::Instant(t.to_utc()));
    }
    // W3C Datetime allows minutes without seconds: 2026-10-15T09:30+08:00.
    for f in ["%Y-%m-%dT%H:%M%:z", "%Y-%m-%dT%H:%M%#z"] {
        if let Ok(t) = DateTime::parse_from_str(text, f) {
            return Some(When::Instant(t.to_utc()));
        }
    }
    if let Some(t) = text
        .strip_suffix('Z')
        .and_then(|t| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M").ok())
    {
        return Some(When::Instant(t.and_utc()));
    }
    if let Ok(t) = DateTime::parse_from_rfc2822(text) {
        return Some(When::Instant(t.to_utc()));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y/%m/%d %H:%M:%S",
        "%Y/%m/%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, f) {
            return local(t, tz).map(When::Instant);
        }
    }
    date_in_text(text).map(When::Day)
}

/// The first date found anywhere in `text` (`[2026-10-15]`, `发布时间：2026年10月15日`).
pub fn date_in_text(text: &str) -> Option<NaiveDate> {
    let c = DATE_IN_TEXT.captures(text)?;
    let n = |i: usize| c.get(i).and_then(|m| m.as_str().parse::<u32>().ok());
    NaiveDate::from_ymd_opt(n(1)? as i32, n(2)?, n(3)?)
}

/// A local time in `tz` as an instant; in a DST gap, the earliest valid reading.
fn local(t: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    tz.from_local_datetime(&t)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// A `When` as an instant, for feed-rs, which stores dates as UTC instants: a
/// bare day becomes its local midnight, so that it reads back as the same day.
pub fn as_instant(when: When, tz: Tz) -> Option<DateTime<Utc>> {
    match when {
        When::Instant(t) => Some(t),
        When::Day(d) => local(d.and_time(NaiveTime::MIN), tz),
    }
}

/// The date a `url_date_pattern` captured: one group of 8 digits (`20261015`),
/// or three groups (year, month, day).
pub fn date_from_url(pattern: &Regex, url: &str) -> Option<NaiveDate> {
    let c = pattern.captures(url)?;
    match c.len() {
        2 => NaiveDate::parse_from_str(c.get(1)?.as_str(), "%Y%m%d").ok(),
        4 => {
            let n = |i: usize| c.get(i).and_then(|m| m.as_str().parse::<u32>().ok());
            NaiveDate::from_ymd_opt(n(1)? as i32, n(2)?, n(3)?)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SH: Tz = chrono_tz::Asia::Shanghai;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn check(text: &str, expected: Option<NaiveDate>) {
        assert_eq!(
            parse_when(text, SH).map(|w| w.day_in(SH)),
            expected,
            "{text}"
        );
    }

    #[test]
    fn days_in_shanghai() {
        check("Wed, 30 Sep 2026 16:30:00 GMT", Some(day(2026, 10, 1)));
        check("Wed, 30 Sep 2026 15:59:59 GMT", Some(day(2026, 9, 30)));
        check("Thu, 15 Oct 2026 09:30:00 +0800", Some(day(2026, 10, 15)));
        check("2026-09-30T23:30:00+08:00", Some(day(2026, 9, 30)));
        check("2026-09-30T16:30:00Z", Some(day(2026, 10, 1)));
        check("2026-09-30T16:30Z", Some(day(2026, 10, 1)));
        check("2026-09-30T16:30+00:00", Some(day(2026, 10, 1)));
        check("2026-10-15", Some(day(2026, 10, 15)));
        check("2026-10-15 23:50:00", Some(day(2026, 10, 15)));
        check(" [2026/10/05] ", Some(day(2026, 10, 5)));
        check("发布时间：2026年10月5日", Some(day(2026, 10, 5)));
        check("2026-13-45", None);
        check("昨天", None);
        check("", None);
    }

    #[test]
    fn a_bare_day_is_that_day_in_any_zone() {
        let w = parse_when("2026-10-15", SH).unwrap();
        assert_eq!(w.day_in(chrono_tz::America::Los_Angeles), day(2026, 10, 15));
        let t = as_instant(w, SH).unwrap();
        assert_eq!(t.with_timezone(&SH).date_naive(), day(2026, 10, 15));
    }

    #[test]
    fn url_dates() {
        let trs = Regex::new(r"t(\d{8})_\d+\.html").unwrap();
        assert_eq!(
            date_from_url(&trs, "http://www.x.gov.cn/xxgk/202610/t20261015_12345.html"),
            Some(day(2026, 10, 15))
        );
        assert_eq!(date_from_url(&trs, "http://x/t20261345_1.html"), None);
        assert_eq!(date_from_url(&trs, "http://x/post_508890.html"), None);
        let hanweb = Regex::new(r"art/(\d{4})/(\d{1,2})/(\d{1,2})/").unwrap();
        assert_eq!(
            date_from_url(&hanweb, "http://x/art/2026/10/5/art_1234_567890.html"),
            Some(day(2026, 10, 5))
        );
    }
}
