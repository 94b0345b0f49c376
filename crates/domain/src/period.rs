//! Reporting periods: a day, an ISO week, a month, a quarter, a year or an
//! inclusive range of days, as the README ("Command line") spells them.
//!
//! Periods are calendar dates with no time of day: the mapping from an instant
//! to a day happens once, in [`local_day`], in the configured time zone, so that
//! a post published at 23:30 in Shanghai on the last day of a quarter counts in
//! that quarter even though it is 15:30 UTC.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc, Weekday};
use chrono_tz::Tz;
use thiserror::Error;

/// The longest range accepted, about ten years: enough for any report, and a
/// bound on what a single request can make the store scan.
pub const MAX_RANGE_DAYS: i64 = 3660;

/// Appended to every parse error, so that whoever typed the period learns what works.
const FORMS: &str = "accepted forms: 2026-11-27 (day), 2026-W48 (ISO week), 2026-11 (month), \
                     2026-Q4 (quarter), 2026 (year), 2026-10-01..2026-11-15 (inclusive range)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeriodKind {
    Day,
    Week,
    Month,
    Quarter,
    Year,
    Range,
}

impl PeriodKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PeriodKind::Day => "day",
            PeriodKind::Week => "week",
            PeriodKind::Month => "month",
            PeriodKind::Quarter => "quarter",
            PeriodKind::Year => "year",
            PeriodKind::Range => "range",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PeriodError {
    #[error("unknown period \"{input}\": not a period; {FORMS}")]
    Malformed { input: String },
    #[error("unknown period \"{input}\": months are 01..12; {FORMS}")]
    Month { input: String },
    #[error("unknown period \"{input}\": quarters are Q1..Q4; {FORMS}")]
    Quarter { input: String },
    #[error("unknown period \"{input}\": ISO year {year} has weeks W01..W{last:02}; {FORMS}")]
    Week { input: String, year: i32, last: u32 },
    #[error("unknown period \"{input}\": {day} is not a calendar day; {FORMS}")]
    Day { input: String, day: String },
    #[error("unknown period \"{input}\": the range ends before it starts; {FORMS}")]
    Reversed { input: String },
    #[error(
        "unknown period \"{input}\": the range spans {days} days, at most {MAX_RANGE_DAYS} are allowed; {FORMS}"
    )]
    TooLong { input: String, days: i64 },
}

/// A period of whole days, `start..=end`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Period {
    pub kind: PeriodKind,
    pub start: NaiveDate,
    /// Inclusive.
    pub end: NaiveDate,
    label: String,
}

impl Period {
    /// Parses one of the forms the README lists; surrounding whitespace is ignored
    /// and `w`/`q` may be lower case, the label is always canonical.
    pub fn parse(s: &str) -> Result<Period, PeriodError> {
        let input = s.trim();
        if let Some((a, b)) = input.split_once("..") {
            return parse_range(input, a, b);
        }
        let malformed = || PeriodError::Malformed {
            input: input.to_string(),
        };
        let parts: Vec<&str> = input.split('-').collect();
        let year = digits(parts[0], 4).ok_or_else(malformed)? as i32;
        match parts[1..] {
            [] => Ok(Period::year(year)),
            [p] => {
                if let Some(q) = p.strip_prefix(['Q', 'q']) {
                    match digits(q, 1) {
                        Some(q @ 1..=4) => Ok(Period::quarter(year, q)),
                        Some(_) => Err(PeriodError::Quarter {
                            input: input.to_string(),
                        }),
                        None => Err(malformed()),
                    }
                } else if let Some(w) = p.strip_prefix(['W', 'w']) {
                    let week = digits(w, 2).ok_or_else(malformed)?;
                    Period::week(year, week).ok_or_else(|| PeriodError::Week {
                        input: input.to_string(),
                        year,
                        last: iso_weeks_in(year),
                    })
                } else {
                    match digits(p, 2) {
                        Some(m @ 1..=12) => Ok(Period::month(year, m)),
                        Some(_) => Err(PeriodError::Month {
                            input: input.to_string(),
                        }),
                        None => Err(malformed()),
                    }
                }
            }
            [_, _] => {
                let day = parse_day(input, input)?;
                Ok(Period::day(day))
            }
            _ => Err(malformed()),
        }
    }

    /// The canonical label, e.g. `2026-Q4`, `2026-W48`, `2026-10-01..2026-11-15`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The period of `kind` that contains `day`. A `Range` has no natural
    /// boundaries, so for it the answer is the one-day range of `day`.
    pub fn containing(kind: PeriodKind, day: NaiveDate) -> Period {
        match kind {
            PeriodKind::Day => Period::day(day),
            PeriodKind::Week => {
                let w = day.iso_week();
                // from_isoywd_opt only fails for a week that does not exist, and
                // the week `day` is in exists by construction.
                Period::week(w.year(), w.week()).unwrap_or_else(|| Period::range(day, day))
            }
            PeriodKind::Month => Period::month(day.year(), day.month()),
            PeriodKind::Quarter => Period::quarter(day.year(), day.month0() / 3 + 1),
            PeriodKind::Year => Period::year(day.year()),
            PeriodKind::Range => Period::range(day, day),
        }
    }

    /// The period of the same length just before this one: the previous
    /// day, week, month, quarter or year; for a range, as many days ending the
    /// day before `start`.
    pub fn previous(&self) -> Period {
        let before = day_before(self.start);
        match self.kind {
            PeriodKind::Range => {
                let start = self
                    .start
                    .checked_sub_days(Days::new(self.days().max(0) as u64))
                    .unwrap_or(NaiveDate::MIN);
                Period::range(start, before)
            }
            kind => Period::containing(kind, before),
        }
    }

    /// Number of days, `end - start + 1`; 0 for a period clipped before it began.
    pub fn days(&self) -> i64 {
        (self.end - self.start).num_days() + 1
    }

    pub fn contains(&self, d: NaiveDate) -> bool {
        self.start <= d && d <= self.end
    }

    /// Whether the period lies wholly before `today`, so its numbers are final
    /// (apart from late corrections).
    pub fn is_over(&self, today: NaiveDate) -> bool {
        self.end < today
    }

    /// The part of the period up to and including `today`, keeping the label:
    /// "2026-Q4 to date". Before the period begins this is empty (`days() == 0`).
    pub fn to_date(&self, today: NaiveDate) -> Period {
        let end = self.end.min(today).max(day_before(self.start));
        Period {
            end,
            ..self.clone()
        }
    }

    fn day(d: NaiveDate) -> Period {
        Period {
            kind: PeriodKind::Day,
            start: d,
            end: d,
            label: d.format("%Y-%m-%d").to_string(),
        }
    }

    fn week(iso_year: i32, week: u32) -> Option<Period> {
        let start = NaiveDate::from_isoywd_opt(iso_year, week, Weekday::Mon)?;
        let end = NaiveDate::from_isoywd_opt(iso_year, week, Weekday::Sun)?;
        Some(Period {
            kind: PeriodKind::Week,
            start,
            end,
            label: format!("{iso_year:04}-W{week:02}"),
        })
    }

    fn month(year: i32, month: u32) -> Period {
        let (start, end) = month_bounds(year, month);
        Period {
            kind: PeriodKind::Month,
            start,
            end,
            label: format!("{year:04}-{month:02}"),
        }
    }

    fn quarter(year: i32, q: u32) -> Period {
        let (start, _) = month_bounds(year, q * 3 - 2);
        let (_, end) = month_bounds(year, q * 3);
        Period {
            kind: PeriodKind::Quarter,
            start,
            end,
            label: format!("{year:04}-Q{q}"),
        }
    }

    fn year(year: i32) -> Period {
        let (start, _) = month_bounds(year, 1);
        let (_, end) = month_bounds(year, 12);
        Period {
            kind: PeriodKind::Year,
            start,
            end,
            label: format!("{year:04}"),
        }
    }

    fn range(start: NaiveDate, end: NaiveDate) -> Period {
        Period {
            kind: PeriodKind::Range,
            start,
            end,
            label: format!("{}..{}", start.format("%Y-%m-%d"), end.format("%Y-%m-%d")),
        }
    }
}

impl FromStr for Period {
    type Err = PeriodError;
    fn from_str(s: &str) -> Result<Period, PeriodError> {
        Period::parse(s)
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

/// The calendar day of `at` in the configured time zone.
pub fn local_day(at: DateTime<Utc>, tz: Tz) -> NaiveDate {
    at.with_timezone(&tz).date_naive()
}

fn parse_range(input: &str, a: &str, b: &str) -> Result<Period, PeriodError> {
    let start = parse_day(input, a.trim())?;
    let end = parse_day(input, b.trim())?;
    if end < start {
        return Err(PeriodError::Reversed {
            input: input.to_string(),
        });
    }
    let p = Period::range(start, end);
    if p.days() > MAX_RANGE_DAYS {
        return Err(PeriodError::TooLong {
            input: input.to_string(),
            days: p.days(),
        });
    }
    Ok(p)
}

/// A strict `YYYY-MM-DD`; `input` is the whole period text, for the message.
fn parse_day(input: &str, s: &str) -> Result<NaiveDate, PeriodError> {
    let malformed = || PeriodError::Malformed {
        input: input.to_string(),
    };
    let mut it = s.split('-');
    let (Some(y), Some(m), Some(d), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(malformed());
    };
    let (Some(y), Some(m), Some(d)) = (digits(y, 4), digits(m, 2), digits(d, 2)) else {
        return Err(malformed());
    };
    NaiveDate::from_ymd_opt(y as i32, m, d).ok_or_else(|| PeriodError::Day {
        input: input.to_string(),
        day: s.to_string(),
    })
}

/// Exactly `len` ASCII digits, so that "2026-1" or "+2026" are not silently accepted.
fn digits(s: &str, len: usize) -> Option<u32> {
    if s.len() == len && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

fn month_bounds(year: i32, month: u32) -> (NaiveDate, NaiveDate) {
    // Callers pass month in 1..=12 and a year from four digits or from a valid
    // NaiveDate, so both constructions are total; MIN only guards the far edge
    // of chrono's range.
    let start = NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(NaiveDate::MIN);
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    };
    let end = next.map(day_before).unwrap_or(NaiveDate::MAX);
    (start, end)
}

fn iso_weeks_in(iso_year: i32) -> u32 {
    if NaiveDate::from_isoywd_opt(iso_year, 53, Weekday::Mon).is_some() {
        53
    } else {
        52
    }
}

fn day_before(d: NaiveDate) -> NaiveDate {
    d.pred_opt().unwrap_or(NaiveDate::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    /// Parses `input` and checks kind, bounds and canonical label.
    fn check(input: &str, kind: PeriodKind, start: &str, end: &str, label: &str) {
        let p = Period::parse(input).unwrap();
        assert_eq!(
            (p.kind, p.start, p.end, p.label()),
            (kind, d(start), d(end), label),
            "{input}"
        );
    }

    #[test]
    fn parses_every_form() {
        use PeriodKind::*;
        check("2026-11-27", Day, "2026-11-27", "2026-11-27", "2026-11-27");
        check("2026-W48", Week, "2026-11-23", "2026-11-29", "2026-W48");
        check(" 2026-w48 ", Week, "2026-11-23", "2026-11-29", "2026-W48");
        check("2026-11", Month, "2026-11-01", "2026-11-30", "2026-11");
        check("2026-02", Month, "2026-02-01", "2026-02-28", "2026-02");
        check("2024-02", Month, "2024-02-01", "2024-02-29", "2024-02");
        check("2026-Q4", Quarter, "2026-10-01", "2026-12-31", "2026-Q4");
        check("2026-q1", Quarter, "2026-01-01", "2026-03-31", "2026-Q1");
        check("2026", Year, "2026-01-01", "2026-12-31", "2026");
        check(
            "2026-10-01..2026-11-15",
            Range,
            "2026-10-01",
            "2026-11-15",
            "2026-10-01..2026-11-15",
        );
        check(
            "2026-10-01..2026-10-01",
            Range,
            "2026-10-01",
            "2026-10-01",
            "2026-10-01..2026-10-01",
        );
    }

    #[test]
    fn iso_week_edges() {
        use PeriodKind::Week;
        // 2021-01-01 is a Friday, so week 1 starts on the following Monday.
        check("2021-W01", Week, "2021-01-04", "2021-01-10", "2021-W01");
        // 2026-01-01 is a Thursday: 2026 has 53 ISO weeks, the last reaching into 2027.
        check("2026-W53", Week, "2026-12-28", "2027-01-03", "2026-W53");
        // 2025-12-29 (a Monday) already belongs to ISO week 1 of 2026.
        check("2026-W01", Week, "2025-12-29", "2026-01-04", "2026-W01");
        // 2027-01-01 is a Friday: 2027 has only 52 weeks.
        assert_eq!(
            Period::parse("2027-W53"),
            Err(PeriodError::Week {
                input: "2027-W53".into(),
                year: 2027,
                last: 52
            })
        );
        let c = Period::containing(PeriodKind::Week, d("2027-01-02"));
        assert_eq!(c.label(), "2026-W53");
        let c = Period::containing(PeriodKind::Week, d("2021-01-03"));
        assert_eq!((c.label(), c.start), ("2020-W53", d("2020-12-28")));
    }

    #[test]
    fn rejects_with_a_reason() {
        let err = |s: &str| Period::parse(s).unwrap_err().to_string();
        assert!(err("2026-Q5").starts_with("unknown period \"2026-Q5\": quarters are Q1..Q4;"));
        assert!(err("2026-13").contains("months are 01..12"));
        assert!(err("2026-W00").contains("has weeks W01..W53"));
        assert!(err("2026-02-30").contains("2026-02-30 is not a calendar day"));
        assert!(err("2026-11-15..2026-10-01").contains("ends before it starts"));
        assert!(err("2000-01-01..2010-12-31").contains("spans 4018 days"));
        for bad in [
            "",
            "26",
            "2026-1",
            "2026-11-5",
            "2026-Q",
            "+2026",
            "2026-W4",
            "二〇二六",
            "2026-11-27..",
            "2026--11",
        ] {
            let e = err(bad);
            assert!(e.contains("not a period"), "{bad}: {e}");
            assert!(e.contains("2026-W48 (ISO week)"), "{bad}: {e}");
        }
        // The longest range accepted is exactly MAX_RANGE_DAYS.
        let p = Period::parse("2020-01-01..2030-01-07").unwrap();
        assert_eq!(p.days(), 3660);
        assert!(Period::parse("2020-01-01..2030-01-08").is_err());
        assert_eq!("2026-Q3".parse::<Period>().unwrap().to_string(), "2026-Q3");
    }

    #[test]
    fn previous_has_the_same_length() {
        let prev = |s: &str| Period::parse(s).unwrap().previous().label().to_string();
        assert_eq!(prev("2026-Q1"), "2025-Q4");
        assert_eq!(prev("2026-Q3"), "2026-Q2");
        assert_eq!(prev("2026-03"), "2026-02");
        assert_eq!(prev("2026-01"), "2025-12");
        assert_eq!(prev("2026-03-01"), "2026-02-28");
        assert_eq!(prev("2026-W01"), "2025-W52");
        assert_eq!(prev("2027-W01"), "2026-W53");
        assert_eq!(prev("2026"), "2025");
        // 46 days ending the day before 2026-10-01.
        assert_eq!(prev("2026-10-01..2026-11-15"), "2026-08-16..2026-09-30");
        let p = Period::parse("2026-10-01..2026-11-15").unwrap();
        assert_eq!(p.previous().days(), p.days());
    }

    #[test]
    fn containing_days_and_membership() {
        let q = Period::containing(PeriodKind::Quarter, d("2026-09-30"));
        assert_eq!((q.label(), q.days()), ("2026-Q3", 92));
        assert!(q.contains(d("2026-07-01")) && q.contains(d("2026-09-30")));
        assert!(!q.contains(d("2026-10-01")) && !q.contains(d("2026-06-30")));
        assert_eq!(
            Period::containing(PeriodKind::Month, d("2026-02-14")).days(),
            28
        );
        assert_eq!(
            Period::containing(PeriodKind::Year, d("2024-06-01")).days(),
            366
        );
        assert_eq!(
            Period::containing(PeriodKind::Day, d("2026-06-01")).days(),
            1
        );
        let r = Period::containing(PeriodKind::Range, d("2026-06-01"));
        assert_eq!(r.label(), "2026-06-01..2026-06-01");
    }

    #[test]
    fn to_date_and_is_over() {
        let q = Period::parse("2026-Q4").unwrap();
        let td = q.to_date(d("2026-11-15"));
        assert_eq!(
            (td.label(), td.start, td.end, td.days()),
            ("2026-Q4", d("2026-10-01"), d("2026-11-15"), 46)
        );
        assert_eq!(q.to_date(d("2027-03-01")), q);
        assert_eq!(q.to_date(d("2026-09-01")).days(), 0);
        assert!(!q.is_over(d("2026-12-31")));
        assert!(q.is_over(d("2027-01-01")));
    }

    #[test]
    fn local_day_uses_the_time_zone() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let tz = chrono_tz::Asia::Shanghai;
        let late = local_day(at("2026-09-30T15:30:00Z"), tz);
        assert_eq!(late, d("2026-09-30"));
        assert_eq!(
            Period::containing(PeriodKind::Quarter, late).label(),
            "2026-Q3"
        );
        let next = local_day(at("2026-09-30T16:30:00Z"), tz);
        assert_eq!(next, d("2026-10-01"));
        assert_eq!(
            Period::containing(PeriodKind::Quarter, next).label(),
            "2026-Q4"
        );
        assert_eq!(
            local_day(at("2026-09-30T16:30:00Z"), chrono_tz::UTC),
            d("2026-09-30")
        );
    }
}
