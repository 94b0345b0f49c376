//! The day an exported sheet stands for, found in what the sheet says: its
//! title rows, else its file name.
//!
//! Exports of admin consoles and office suites seldom carry a date column;
//! they say their date in a title row (`学习积分统计（截至2026-09-30）`) or
//! in the file name (`points-20260930.xlsx`). The day of the import is only
//! the last resort, and it is the caller's to choose and to warn about.
//!
//! Recognised forms, anywhere in a text:
//!
//! - days: `2026-09-30`, `2026/9/30`, `2026.09.30`, `2026年9月30日`,
//!   `20260930` (eight digits standing alone), `20260930153012` (with a time);
//! - ranges, which stand for their end: `2026-07-01至2026-09-30`,
//!   `2026-07-01~2026-09-30`, `2026年7月1日-2026年9月30日`,
//!   `2026年7月1日至9月30日`;
//! - months: `2026年9月`, `2026-09` (a month with no day);
//! - quarters: `2026年第三季度`, `2026年3季度`, `2026-Q3`.
//!
//! Years outside 2000..=2099 and runs of digits that are part of a longer
//! number (a phone number, an id) are never dates; a bare year (`2026年度`)
//! says no day.
//!
//! ```
//! use tally_tables::{Said, date_in_text};
//! let day = chrono::NaiveDate::from_ymd_opt(2026, 9, 30).unwrap();
//! assert_eq!(date_in_text("学习积分统计（截至2026-09-30）"), Some(Said::Day(day)));
//! assert_eq!(date_in_text("2026年度学习积分"), None);
//! ```

use std::fmt;

use chrono::{Datelike, NaiveDate};

/// What a text says about the day a sheet stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Said {
    /// A day, or the end of a range of days.
    Day(NaiveDate),
    /// A month with no day; the date is the month's first day.
    Month(NaiveDate),
    /// A quarter; the date is the quarter's first day.
    Quarter(NaiveDate),
}

impl Said {
    /// The first day of what was said.
    pub fn first_day(self) -> NaiveDate {
        match self {
            Said::Day(d) | Said::Month(d) | Said::Quarter(d) => d,
        }
    }

    /// The last day of what was said.
    pub fn last_day(self) -> NaiveDate {
        let months = match self {
            Said::Day(d) => return d,
            Said::Month(_) => 1,
            Said::Quarter(_) => 3,
        };
        let start = self.first_day();
        start
            .checked_add_months(chrono::Months::new(months))
            .and_then(|d| d.pred_opt())
            .unwrap_or(start)
    }
}

impl fmt::Display for Said {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Said::Day(d) => write!(f, "{d}"),
            Said::Month(d) => write!(f, "{}", d.format("%Y-%m")),
            Said::Quarter(d) => write!(f, "{}-Q{}", d.year(), d.month0() / 3 + 1),
        }
    }
}

/// Where a sheet's date was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A title row above the header, by its row number as a spreadsheet shows it.
    Title(usize),
    /// The file name.
    FileName,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Title(line) => write!(f, "its title row {line}"),
            Origin::FileName => f.write_str("its file name"),
        }
    }
}

/// A sheet's date and where it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dated {
    pub said: Said,
    pub origin: Origin,
}

/// The date a sheet says: from the rows above its header (`title`), else
/// from its file name. `None` when neither says one.
///
/// ```
/// use tally_tables::{Origin, Said, sheet_date};
/// let title = vec![(1, vec!["统计时间：2026-07-01至2026-09-30".to_owned()])];
/// let dated = sheet_date(&title, "points-20261008.xlsx").unwrap();
/// assert_eq!(dated.origin, Origin::Title(1));
/// assert_eq!(dated.said.to_string(), "2026-09-30");
/// let dated = sheet_date(&[], "points-20261008.xlsx").unwrap();
/// assert_eq!((dated.origin, dated.said.to_string()), (Origin::FileName, "2026-10-08".to_owned()));
/// ```
pub fn sheet_date(title: &[(usize, Vec<String>)], file_name: &str) -> Option<Dated> {
    date_in_title(title)
        .map(|(line, said)| Dated {
            said,
            origin: Origin::Title(line),
        })
        .or_else(|| {
            date_in_file_name(file_name).map(|said| Dated {
                said,
                origin: Origin::FileName,
            })
        })
}

/// The date the title rows say, with the row it was found in: a date after
/// `截至`/`统计时间`/... first, else the latest day, else the latest month or
/// quarter.
pub fn date_in_title(rows: &[(usize, Vec<String>)]) -> Option<(usize, Said)> {
    let mut found: Vec<(usize, Mention)> = Vec::new();
    for (line, cells) in rows {
        for cell in cells {
            found.extend(mentions(cell).into_iter().map(|m| (*line, m)));
        }
    }
    let rank = |m: &Mention| (m.marked, matches!(m.said, Said::Day(_)), m.said.last_day());
    // The first of equals: max_by_key would keep the last.
    let mut best: Option<&(usize, Mention)> = None;
    for f in &found {
        if best.is_none_or(|b| rank(&f.1) > rank(&b.1)) {
            best = Some(f);
        }
    }
    best.map(|(line, m)| (*line, m.said))
}

/// The date a file name says (directories and the extension are ignored).
pub fn date_in_file_name(name: &str) -> Option<Said> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let stem = base.rsplit_once('.').map_or(base, |(s, _)| s);
    let found = mentions(stem);
    let rank = |m: &Mention| (matches!(m.said, Said::Day(_)), m.said.last_day());
    found.iter().max_by_key(|m| rank(m)).map(|m| m.said)
}

/// The date a text says, as [`date_in_title`] picks it from one text.
pub fn date_in_text(text: &str) -> Option<Said> {
    date_in_title(&[(1, vec![text.to_owned()])]).map(|(_, s)| s)
}

/// A date found in a text.
#[derive(Debug)]
struct Mention {
    said: Said,
    /// Right after `截至`, `统计时间`, ...: the text says this is its date.
    marked: bool,
}

/// Words that introduce the day a sheet stands for.
const MARKERS: &[&str] = &[
    "截至",
    "截止",
    "截止到",
    "截至到",
    "统计时间",
    "统计日期",
    "数据日期",
    "截止日期",
    "截至日期",
    "统计截止",
];
/// What joins the two ends of a range.
const CONNECTORS: &[char] = &['至', '到', '~', '～', '-', '－', '—', '–', '―', '−'];

fn mentions(text: &str) -> Vec<Mention> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_number = chars[i].is_ascii_digit() && (i == 0 || !chars[i - 1].is_ascii_digit());
        if !starts_number {
            i += 1;
            continue;
        }
        let Some((said, mut end)) = date_at(&chars, i) else {
            // Skip the whole run of digits: its tail is no number of its own.
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            continue;
        };
        let before: String = chars[..i].iter().collect();
        let before = before.trim_end_matches([' ', '：', ':', '（', '(', '【', '[', '　']);
        let marked = MARKERS.iter().any(|m| before.ends_with(m));
        let mut said = said;
        if let Said::Day(from) = said
            && let Some((to, e)) = range_end(&chars, end, from)
        {
            said = Said::Day(to);
            end = e;
        }
        out.push(Mention { said, marked });
        i = end;
    }
    out
}

/// After a range's first day at `i`: a connector and the last day (a full
/// date, or `9月30日` in the first day's year), not before the first.
fn range_end(chars: &[char], mut i: usize, from: NaiveDate) -> Option<(NaiveDate, usize)> {
    let skip_blanks = |mut i: usize| {
        while chars.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        i
    };
    i = skip_blanks(i);
    if !chars.get(i).is_some_and(|c| CONNECTORS.contains(c)) {
        return None;
    }
    i = skip_blanks(i + 1);
    let (to, end) = match date_at(chars, i) {
        Some((Said::Day(d), end)) => (d, end),
        Some(_) => return None,
        None => {
            // 2026年7月1日至9月30日
            let (m, j) = digits(chars, i, 2)?;
            let j = expect(chars, j, '月')?;
            let (d, j) = digits(chars, j, 2)?;
            let j = expect(chars, j, '日').or_else(|| expect(chars, j, '号'))?;
            (NaiveDate::from_ymd_opt(from.year(), m, d)?, j)
        }
    };
    (to >= from).then_some((to, end))
}

/// A date starting at `i` (the first digit of a run) and where it ends.
fn date_at(chars: &[char], i: usize) -> Option<(Said, usize)> {
    let run = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    let text: String = chars[i..i + run].iter().collect();
    let end = i + run;
    match run {
        4 => {}
        8 => return compact_day(&text).map(|d| (Said::Day(d), end)),
        14 => {
            let (day, time) = text.split_at(8);
            chrono::NaiveTime::parse_from_str(time, "%H%M%S").ok()?;
            return compact_day(day).map(|d| (Said::Day(d), end));
        }
        _ => return None,
    }
    let year: i32 = text.parse().ok()?;
    if !(2000..=2099).contains(&year) {
        return None;
    }
    match chars.get(end) {
        Some(&sep @ ('-' | '/' | '.')) => {
            if matches!(chars.get(end + 1), Some('Q' | 'q')) {
                return quarter_at(chars, year, end + 2);
            }
            let (m, j) = digits(chars, end + 1, 2)?;
            if chars.get(j) == Some(&sep)
                && let Some((d, k)) = digits(chars, j + 1, 2)
            {
                return NaiveDate::from_ymd_opt(year, m, d).map(|d| (Said::Day(d), k));
            }
            // 2026.5 is more likely a number than a month.
            if sep == '.' {
                return None;
            }
            NaiveDate::from_ymd_opt(year, m, 1).map(|d| (Said::Month(d), j))
        }
        Some('Q' | 'q') => quarter_at(chars, year, end + 1),
        Some('年') => {
            let j = end + 1;
            if let Some((m, k)) = digits(chars, j, 2)
                && chars.get(k) == Some(&'月')
            {
                let month = NaiveDate::from_ymd_opt(year, m, 1)?;
                if let Some((d, l)) = digits(chars, k + 1, 2) {
                    let l = match chars.get(l) {
                        Some('日' | '号') => l + 1,
                        _ => l,
                    };
                    return NaiveDate::from_ymd_opt(year, m, d).map(|d| (Said::Day(d), l));
                }
                return Some((Said::Month(month), k + 1));
            }
            // 2026年第三季度, 2026年3季度, 2026年三季度
            let j = expect(chars, j, '第').unwrap_or(j);
            let n = match chars.get(j)? {
                '1' | '一' => 1,
                '2' | '二' => 2,
                '3' | '三' => 3,
                '4' | '四' => 4,
                _ => return None,
            };
            let k = expect(chars, j + 1, '季')?;
            let k = expect(chars, k, '度').unwrap_or(k);
            quarter(year, n).map(|q| (q, k))
        }
        _ => None,
    }
}

fn quarter_at(chars: &[char], year: i32, i: usize) -> Option<(Said, usize)> {
    let (n, j) = digits(chars, i, 1)?;
    quarter(year, n).map(|q| (q, j))
}

fn quarter(year: i32, n: u32) -> Option<Said> {
    if !(1..=4).contains(&n) {
        return None;
    }
    NaiveDate::from_ymd_opt(year, 3 * n - 2, 1).map(Said::Quarter)
}

fn compact_day(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y%m%d")
        .ok()
        .filter(|d| (2000..=2099).contains(&d.year()))
}

/// One to `max` digits at `i`, not followed by another digit.
fn digits(chars: &[char], i: usize, max: usize) -> Option<(u32, usize)> {
    let n = chars
        .get(i..)?
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if n == 0 || n > max {
        return None;
    }
    let text: String = chars[i..i + n].iter().collect();
    Some((text.parse().ok()?, i + n))
}

fn expect(chars: &[char], i: usize, c: char) -> Option<usize> {
    (chars.get(i) == Some(&c)).then_some(i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> Said {
        Said::Day(NaiveDate::from_ymd_opt(y, m, d).unwrap())
    }
    fn month(y: i32, m: u32) -> Said {
        Said::Month(NaiveDate::from_ymd_opt(y, m, 1).unwrap())
    }

    #[test]
    fn title_rows_say_days() {
        for text in [
            "学习积分统计（截至2026-09-30）",
            "截至2026年9月30日",
            "统计时间：2026-09-30",
            "2026年9月30日",
            "2026年9月30号",
            "2026.09.30",
            "2026/9/30",
            "2026-9-30 学习积分",
            "20260930",
            "导出20260930153012",
            "某县学习强国积分统计（2026年09月30日）",
        ] {
            assert_eq!(date_in_text(text), Some(day(2026, 9, 30)), "{text}");
        }
    }

    #[test]
    fn ranges_stand_for_their_end() {
        for text in [
            "2026-07-01至2026-09-30",
            "2026-07-01~2026-09-30",
            "2026-07-01 ～ 2026-09-30",
            "2026年7月1日-2026年9月30日",
            "统计时间：2026年7月1日至9月30日",
            "2026/07/01-2026/09/30",
            "统计时间：2026-07-01至2026-09-30（导出时间2026-10-08）",
        ] {
            assert_eq!(date_in_text(text), Some(day(2026, 9, 30)), "{text}");
        }
        // A range that runs backwards is two days, the latest wins.
        assert_eq!(
            date_in_text("2026-09-30至2026-07-01"),
            Some(day(2026, 9, 30))
        );
    }

    #[test]
    fn months_and_quarters() {
        assert_eq!(date_in_text("2026年9月"), Some(month(2026, 9)));
        assert_eq!(
            date_in_text("某县积分统计（2026年11月）"),
            Some(month(2026, 11))
        );
        assert_eq!(date_in_text("2026-09"), Some(month(2026, 9)));
        let q3 = Said::Quarter(NaiveDate::from_ymd_opt(2026, 7, 1).unwrap());
        for text in [
            "2026年第三季度",
            "2026年3季度",
            "2026年三季度",
            "2026-Q3",
            "2026Q3",
        ] {
            assert_eq!(date_in_text(text), Some(q3), "{text}");
        }
        assert_eq!(month(2026, 9).last_day().to_string(), "2026-09-30");
        assert_eq!(q3.last_day().to_string(), "2026-09-30");
        assert_eq!(month(2026, 12).last_day().to_string(), "2026-12-31");
        assert_eq!(q3.to_string(), "2026-Q3");
        assert_eq!(month(2026, 9).to_string(), "2026-09");
        // A day wins over a month said elsewhere.
        assert_eq!(
            date_in_text("2026年9月 学习积分 导出于2026-10-08"),
            Some(day(2026, 10, 8))
        );
    }

    #[test]
    fn not_dates() {
        for text in [
            "2026年度",
            "2026年度学习积分统计",
            "2026年",
            "13812345678",
            "联系电话：13920260930",
            "0571-88812345",
            "手机号 138****5678",
            "1999-09-30",
            "2026-13-01",
            "2026年2月30日",
            "序号",
            "12026-09-30",
            "2026.5",
            "202609",
            "2026年第五季度",
            "",
        ] {
            assert_eq!(date_in_text(text), None, "{text}");
        }
    }

    #[test]
    fn a_marked_date_wins() {
        assert_eq!(
            date_in_text("导出于2026-10-08，数据截至2026-09-30"),
            Some(day(2026, 9, 30))
        );
        let rows = vec![
            (1, vec!["某县2026年度学习积分".to_owned(), String::new()]),
            (
                2,
                vec!["制表：宣传部".to_owned(), "统计日期：2026/9/30".to_owned()],
            ),
        ];
        assert_eq!(date_in_title(&rows), Some((2, day(2026, 9, 30))));
    }

    #[test]
    fn file_names() {
        for name in [
            "xuexi_2026-09-30.csv",
            "points-20260930.xlsx",
            "2026年9月30日.csv",
            "/srv/drop/积分_2026.09.30.XLSX",
            "学习积分_20260930153012.xlsx",
        ] {
            assert_eq!(date_in_file_name(name), Some(day(2026, 9, 30)), "{name}");
        }
        assert_eq!(
            date_in_file_name("积分2026-11 (1).csv"),
            Some(month(2026, 11))
        );
        assert_eq!(date_in_file_name("points.xlsx"), None);
        assert_eq!(date_in_file_name("county-points-gbk.csv"), None);
        assert_eq!(date_in_file_name("2026年度.csv"), None);
    }

    #[test]
    fn title_before_file_name() {
        let title = vec![(1, vec!["学习积分统计（截至2026-06-30）".to_owned()])];
        let d = sheet_date(&title, "x_2026-09-30.csv").unwrap();
        assert_eq!((d.said, d.origin), (day(2026, 6, 30), Origin::Title(1)));
        assert_eq!(d.origin.to_string(), "its title row 1");
        let untitled = vec![(1, vec!["学习积分统计".to_owned()])];
        let d = sheet_date(&untitled, "x_2026-09-30.csv").unwrap();
        assert_eq!((d.said, d.origin), (day(2026, 9, 30), Origin::FileName));
        assert_eq!(sheet_date(&untitled, "x.csv"), None);
    }
}
