//! `csv_form`: counts that units fill in a form (meetings, trainings,
//! commentary pieces, incidents handled), read from CSV, XLSX and XLS files in a
//! directory.
//!
//! ```toml
//! [sources.settings]
//! dir = "/srv/tally/forms"
//! pattern = "*.csv"                        # default: every *.csv, *.xlsx and *.xls
//! encoding = "auto"                        # "auto" (UTF-8, else GBK), "utf-8" or "gbk"
//! indicators = ["meetings", "trainings"]   # what `tallyd check` expects this source to emit
//! ```
//!
//! # Settings
//!
//! - `dir` (required): the directory of forms. Files are opened read-only and
//!   never modified; a missing or unreadable directory fails the run.
//! - `pattern`: a file name pattern with `*` and `?` (`natres-*.csv`); by
//!   default every `*.csv`, `*.xlsx` and `*.xls`. Hidden files and Excel's `~$` lock
//!   files are ignored.
//! - `encoding` of CSV files: `auto` (the default: UTF-8 with or without BOM
//!   when the bytes are valid UTF-8, else GBK), `utf-8` or `gbk`. XLSX files
//!   carry their own encoding.
//! - `indicators`: the indicator ids this source emits. The plugin cannot know
//!   a form's columns before reading it, so this list is what
//!   [`Plugin::emits`] reports; when set, a column that names another
//!   indicator is skipped with a warning. Without it the source declares
//!   nothing and takes every column that names an indicator.
//!
//! # The form
//!
//! Each CSV file, and each sheet of a workbook, holds one table. Title rows may
//! come first: the header is the first row with a unit column. Then one row
//! per unit and day or period:
//!
//! - the unit column (`unit`, `单位`, `单位名称`): a unit id, display name or
//!   alias; rows whose unit is empty or `合计`/`总计`/`小计` are skipped;
//! - the date column (`day`, `date`, `日期`, `period`, `期间`, `月份`): a day
//!   (`2026-10-15`, `2026/10/15`, `20261015`, `2026年10月15日`, a spreadsheet
//!   date), a month (`2026-10`, `2026/10`, `2026年10月`) or a quarter
//!   (`2026-Q3`, `2026Q3`, `2026年第三季度`, `2026年第3季度`). A period's
//!   value is recorded on its **first day**. A form of one period may have
//!   no date column: see below;
//! - an optional entity column (`entity`, `人员`, `姓名`);
//! - every other column is an indicator, named by id or display name; a unit
//!   suffix is tolerated (`会议次数(次)`, `会议次数（次）`). Columns `序号` and
//!   `备注` (row number, remarks) and columns without a header are ignored; any
//!   other unknown column is one warning per file.
//!
//! Empty cells are skipped, not zero. A malformed cell (unknown unit, bad
//! date, bad number such as `三` or `12x`) is a warning naming the file, the
//! row number as a spreadsheet shows it and the column header
//! ([`tally_plugin::Place`]), every malformed cell of a row, not only the
//! first; the row is skipped, the other rows are kept. Rows with the same unit, indicator, entity and day (in one or several
//! files) add up; for a `level` indicator the last one read wins (files are
//! read in name order).
//!
//! # A form without a date column
//!
//! A form for one month or one day often says its period only in its title
//! or its file name. Without a date column, every row of the table is dated
//! by, in this order:
//!
//! 1. the title rows above the header: a day (`统计时间：2026-09-30`,
//!    `截至2026年9月30日`, `2026.09.30`, `2026/9/30`), a range, which stands
//!    for its end (`2026-07-01至2026-07-31`, `2026年7月1日-2026年7月31日`), a
//!    month (`2026年9月`) or a quarter (`2026年第三季度`), a month or a
//!    quarter recorded on its first day as above;
//! 2. else the file name (`台账_2026-09.csv`, `forms-20260930.xlsx`,
//!    `2026年9月30日.csv`).
//!
//! A bare year (`2026年度`) or a number within a longer one (a phone number)
//! is no date. A table that says no date is skipped with a warning: forms are
//! read again on every run, so dating one on the day of the run would count
//! it again each day. A table dated outside the request's window is not
//! read (an info line in the log names it and its date). A form with a date
//! column keeps using it, whatever its title says.
//!
//! # Windows
//!
//! Only rows whose day falls inside the request's window are emitted. A form
//! is filled in once a month or a quarter and its period starts on the
//! period's first day, which is usually long before the run: the daemon asks
//! forms sources for long windows (configure a generous `lookback_days`), and
//! re-reading is harmless because a re-collected day replaces its old values.

use std::collections::HashMap;
use std::path::PathBuf;

use chrono::NaiveDate;
use serde::Deserialize;
use tally_plugin::schemars::{self, JsonSchema};
use tally_plugin::{
    CollectRequest, CollectResponse, Description, Error, Host, Kind, Observation, Place, Plugin,
    check_indicator_id, export_plugin, strip_unit_suffix,
};

pub use tally_tables::Encoding;
use tally_tables::{Said, Table, drop_files, number, read_tables, sheet_date};

/// `[sources.settings]` of a `csv_form` source.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The directory of forms; files are opened read-only.
    #[schemars(extend("examples" = ["/srv/tally/forms/natres"]))]
    pub dir: PathBuf,
    /// A file name pattern with `*` and `?` (`natres-*.csv`); default every `*.csv`, `*.xlsx` and `*.xls`.
    #[serde(default)]
    pub pattern: Option<String>,
    /// How CSV files are decoded; XLSX files carry their own encoding.
    #[serde(default)]
    pub encoding: Encoding,
    /// The indicator ids this source emits; when set, a column naming another is skipped with a warning.
    #[serde(default)]
    pub indicators: Option<Vec<String>>,
}

/// A configured `csv_form` source.
pub struct CsvForm {
    dir: PathBuf,
    pattern: Option<String>,
    encoding: Encoding,
    indicators: Option<Vec<String>>,
}

const UNIT_HEADERS: &[&str] = &["unit", "单位", "单位名称"];
const DATE_HEADERS: &[&str] = &["day", "date", "日期", "period", "期间", "月份"];
const ENTITY_HEADERS: &[&str] = &["entity", "人员", "姓名"];
const IGNORED_HEADERS: &[&str] = &["序号", "备注"];
const TOTAL_ROWS: &[&str] = &["合计", "总计", "小计"];

impl Plugin for CsvForm {
    const NAME: &'static str = "csv_form";
    type Settings = Settings;

    fn describe() -> Description {
        Description::new("counts that units fill in CSV/XLSX forms").settings_schema::<Settings>()
    }

    fn new(s: Settings, host: &Host) -> Result<Self, Error> {
        if s.dir.as_os_str().is_empty() {
            return Err(Error::settings("dir: must name the directory of forms"));
        }
        if let Some(p) = &s.pattern
            && (p.is_empty() || p.contains('/') || p.contains('\\'))
        {
            return Err(Error::settings(format!(
                "pattern: {p:?} must be a file name pattern such as \"*.csv\" (no directories)"
            )));
        }
        if let Some(ids) = &s.indicators {
            for (i, id) in ids.iter().enumerate() {
                check_indicator_id(&format!("indicators[{i}]"), id)?;
            }
        }
        // A share that is not mounted yet should not stop the daemon: say so
        // now, and fail the runs until it appears.
        if !s.dir.is_dir() {
            host.warn(&format!(
                "dir: {} is not a directory (yet); runs fail until it is",
                s.dir.display()
            ));
        }
        Ok(CsvForm {
            dir: s.dir,
            pattern: s.pattern,
            encoding: s.encoding,
            indicators: s.indicators,
        })
    }

    fn emits(&self) -> Vec<String> {
        self.indicators.clone().unwrap_or_default()
    }

    fn collect(&mut self, req: &CollectRequest, host: &Host) -> Result<CollectResponse, Error> {
        let files = drop_files(&self.dir, self.pattern.as_deref()).map_err(|e| {
            Error::data(format!(
                "dir: cannot read the forms directory {}: {e}",
                self.dir.display()
            ))
        })?;

        let mut out = Output::new(req);
        for (name, path) in &files {
            if host.cancelled() {
                return Err(Error::data(format!(
                    "{}: cancelled while reading forms",
                    self.dir.display()
                )));
            }
            // `fs::read` opens the file read-only: forms are never modified.
            let read = std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| read_tables(&path.display().to_string(), &bytes, self.encoding));
            match read {
                Ok(tables) => {
                    let with_header = tables
                        .iter()
                        .filter(|t| self.read_table(req, name, t, &mut out))
                        .count();
                    if with_header == 0 {
                        out.response.warn(format!(
                            "{}: no header row with a unit column ({}); file skipped",
                            path.display(),
                            UNIT_HEADERS.join("/"),
                        ));
                    }
                }
                Err(why) => out
                    .response
                    .warn(format!("{}: {why}; file skipped", path.display())),
            }
        }
        for note in &out.notes {
            host.info(note);
        }
        host.debug(&format!(
            "read {} form files in {}",
            files.len(),
            self.dir.display()
        ));
        Ok(out.response)
    }
}

/// What each column of a table holds.
enum Column {
    Unit,
    Date,
    Entity,
    Indicator(String),
    Ignored,
}

impl CsvForm {
    /// Reads one table of the file `file_name` into `out`; false when it has
    /// no header row.
    fn read_table(
        &self,
        req: &CollectRequest,
        file_name: &str,
        table: &Table,
        out: &mut Output,
    ) -> bool {
        let Some(h) = table.rows.iter().position(|(_, cells)| {
            cells
                .iter()
                .any(|c| UNIT_HEADERS.contains(&normalize(c).as_str()))
        }) else {
            return false;
        };
        let headers = &table.rows[h].1;
        let has_date = headers
            .iter()
            .any(|c| DATE_HEADERS.contains(&normalize(c).as_str()));
        // A form of one period without a date column: the period its title
        // rows or file name say, on its first day as a date column's would be.
        let form_day = if has_date {
            None
        } else {
            let Some(dated) = sheet_date(&table.rows[..h], file_name) else {
                out.response.warn(format!(
                    "{}: no date column ({}) and neither its title rows nor its file name say the \
                     form's day or period (2026年9月, 截至2026-09-30, ..._2026-09.csv); table skipped",
                    table.place,
                    DATE_HEADERS.join("/")
                ));
                return true;
            };
            let day = match dated.said {
                Said::Day(d) => d,
                period => period.first_day(),
            };
            if !req.window.contains(day) {
                out.notes.push(format!(
                    "{}: dated {day} by {} ({}), outside the window {}..{}; not read",
                    table.place, dated.origin, dated.said, req.window.from, req.window.to
                ));
                return true;
            }
            Some(day)
        };
        let mut columns = Vec::new();
        let mut unknown = Vec::new();
        let mut undeclared = Vec::new();
        for header in headers {
            let name = normalize(header);
            let column = if name.is_empty() || IGNORED_HEADERS.contains(&name.as_str()) {
                Column::Ignored
            } else if UNIT_HEADERS.contains(&name.as_str()) {
                Column::Unit
            } else if DATE_HEADERS.contains(&name.as_str()) {
                Column::Date
            } else if ENTITY_HEADERS.contains(&name.as_str()) {
                Column::Entity
            } else {
                match self.resolve_indicator(req, header) {
                    Some(id) => match &self.indicators {
                        Some(list) if !list.contains(&id) => {
                            undeclared.push(format!("{:?} ({id})", header.trim()));
                            Column::Ignored
                        }
                        _ => Column::Indicator(id),
                    },
                    None => {
                        unknown.push(format!("{:?}", header.trim()));
                        Column::Ignored
                    }
                }
            };
            columns.push(column);
        }
        if !unknown.is_empty() {
            out.response.warn(format!(
                "{}: unknown columns {} (not an indicator id or name); ignored",
                Place::row(&table.place, table.rows[h].0),
                unknown.join(", ")
            ));
        }
        if !undeclared.is_empty() {
            out.response.warn(format!(
                "{}: columns {} are not in the source's indicators setting; ignored",
                Place::row(&table.place, table.rows[h].0),
                undeclared.join(", ")
            ));
        }
        let header_of = |i: usize| headers.get(i).map_or("", |s| s.trim());

        for (line, cells) in &table.rows[h + 1..] {
            let at = |i: usize| Place::cell(&table.place, *line, header_of(i));
            let cell = |i: usize| cells.get(i).map_or("", |s| s.trim());
            let mut unit = None;
            let mut day = None;
            let mut entity = String::new();
            for (i, column) in columns.iter().enumerate() {
                match column {
                    Column::Unit => unit = Some(i),
                    Column::Date => day = Some(i),
                    Column::Entity => entity = cell(i).to_owned(),
                    _ => {}
                }
            }
            let Some(u) = unit else {
                continue;
            };
            let unit_text = cell(u);
            if unit_text.is_empty() || TOTAL_ROWS.contains(&unit_text) {
                continue;
            }
            // Every problem of the row is reported, not only the first: a
            // clerk correcting a form fixes them all in one go.
            let resolved = req.resolve_unit(unit_text);
            if resolved.is_none() {
                out.response.warn(format!(
                    "{}: unknown unit {unit_text:?} (not a unit id, name or alias of this source); row skipped",
                    at(u)
                ));
            }
            let day = match (form_day, day) {
                (Some(form_day), _) => Some(form_day),
                (None, None) => continue,
                (None, Some(d)) => {
                    let parsed = parse_period(cell(d));
                    if parsed.is_none() {
                        let why = if cell(d).is_empty() {
                            "no date".to_owned()
                        } else {
                            format!(
                                "bad date {:?} (a day 2026-10-15, a month 2026-10 or a quarter 2026-Q3)",
                                cell(d)
                            )
                        };
                        out.response.warn(format!("{}: {why}; row skipped", at(d)));
                    }
                    parsed
                }
            };
            if day.is_some_and(|day| !req.window.contains(day)) {
                continue;
            }
            let keep = match (resolved, day) {
                (Some(unit), Some(day)) => Some((unit, day)),
                _ => None,
            };
            for (i, column) in columns.iter().enumerate() {
                let Column::Indicator(id) = column else {
                    continue;
                };
                let text = cell(i);
                if text.is_empty() {
                    continue;
                }
                match (number(text), keep) {
                    (Some(value), Some((unit, day))) => {
                        let o = Observation::new(id, day, value).unit(unit).entity(&entity);
                        if !out.add(o) {
                            out.response.warn(format!(
                                "{}: {text:?} makes the total of this unit and day too large to \
                                 represent; value skipped",
                                at(i)
                            ));
                        }
                    }
                    (Some(_), None) => {}
                    (None, _) => out
                        .response
                        .warn(format!("{}: bad number {text:?}; value skipped", at(i))),
                }
            }
        }
        true
    }

    /// A header's indicator: by id or display name, with or without a unit
    /// suffix in brackets; ids of the `indicators` setting count as known.
    fn resolve_indicator(&self, req: &CollectRequest, header: &str) -> Option<String> {
        let full = header.trim().trim_start_matches('\u{feff}');
        let bare = strip_unit_suffix(full);
        for text in [full, bare] {
            if let Some(id) = req.resolve_indicator(text) {
                return Some(id.to_owned());
            }
            if let Some(list) = &self.indicators
                && list.iter().any(|i| i == text)
            {
                return Some(text.to_owned());
            }
        }
        None
    }
}

/// A header for matching: no BOM, no blanks, ASCII lower case, no unit suffix.
fn normalize(header: &str) -> String {
    let h = header.trim().trim_start_matches('\u{feff}').trim();
    strip_unit_suffix(h).to_lowercase()
}

/// The first day of the day, month or quarter a cell names.
pub fn parse_period(text: &str) -> Option<NaiveDate> {
    let t = text.trim();
    for f in ["%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%Y.%m.%d", "%Y年%m月%d日"] {
        if let Ok(d) = NaiveDate::parse_from_str(t, f) {
            return Some(d);
        }
    }
    // A date and time from a spreadsheet export: keep the date.
    if let Some((date, _time)) = t.split_once([' ', 'T'])
        && let Ok(d) = NaiveDate::parse_from_str(date, "%Y-%m-%d")
    {
        return Some(d);
    }
    let month = |y: &str, m: &str| -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, 1)
    };
    // 2026-10, 2026/10, 2026年10月
    if let Some((y, m)) = t.split_once(['-', '/']).filter(|(y, _)| y.len() == 4)
        && m.chars().all(|c| c.is_ascii_digit())
        && !m.is_empty()
        && m.len() <= 2
    {
        return month(y, m);
    }
    if let Some((y, rest)) = t.split_once('年') {
        if let Some(m) = rest.strip_suffix('月')
            && m.chars().all(|c| c.is_ascii_digit())
        {
            return month(y, m);
        }
        // 2026年第三季度, 2026年第3季度, 2026年三季度
        let q = rest.trim_start_matches('第').strip_suffix("季度")?;
        return quarter(y, q);
    }
    // 2026-Q3, 2026Q3, 2026 Q3
    let upper = t.to_uppercase();
    let (y, q) = upper.split_once('Q')?;
    quarter(y.trim_end_matches(['-', ' ']), q)
}

fn quarter(year: &str, q: &str) -> Option<NaiveDate> {
    let n = match q.trim() {
        "1" | "一" => 1,
        "2" | "二" => 2,
        "3" | "三" => 3,
        "4" | "四" => 4,
        _ => return None,
    };
    let year: i32 = year
        .trim()
        .parse()
        .ok()
        .filter(|_| year.trim().len() == 4)?;
    NaiveDate::from_ymd_opt(year, 3 * n - 2, 1)
}

/// The observations of a run, combined by key in first-seen order.
struct Output {
    /// For the log: forms dated outside the window.
    notes: Vec<String>,
    levels: Vec<String>,
    index: HashMap<(String, String, String, NaiveDate), usize>,
    response: CollectResponse,
}

impl Output {
    fn new(req: &CollectRequest) -> Output {
        Output {
            notes: Vec::new(),
            levels: req
                .indicators
                .iter()
                .filter(|i| i.kind == Kind::Level)
                .map(|i| i.id.clone())
                .collect(),
            index: HashMap::new(),
            response: CollectResponse::default(),
        }
    }

    /// Same key as an earlier row: summed, or replaced for a `level` indicator.
    /// False (and nothing changed) when the sum of two finite numbers such as
    /// `1e308` overflows: an infinite value cannot cross the boundary as JSON
    /// and would fail the whole run.
    fn add(&mut self, o: Observation) -> bool {
        let key = (
            o.unit.clone().unwrap_or_default(),
            o.indicator.clone(),
            o.entity.clone(),
            o.day,
        );
        match self.index.get(&key) {
            Some(&i) => {
                let old = &mut self.response.observations[i];
                if self.levels.contains(&o.indicator) {
                    old.value = o.value;
                } else if (old.value + o.value).is_finite() {
                    old.value += o.value;
                } else {
                    return false;
                }
            }
            None => {
                self.index.insert(key, self.response.observations.len());
                self.response.observations.push(o);
            }
        }
        true
    }
}

export_plugin!(CsvForm);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_on_their_first_day() {
        let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d);
        for (text, want) in [
            ("2026-10-15", d(2026, 10, 15)),
            ("2026/10/15", d(2026, 10, 15)),
            ("20261015", d(2026, 10, 15)),
            ("2026年10月15日", d(2026, 10, 15)),
            ("2026-10-15 00:00:00", d(2026, 10, 15)),
            ("2026-10", d(2026, 10, 1)),
            ("2026/9", d(2026, 9, 1)),
            ("2026年10月", d(2026, 10, 1)),
            ("2026-Q3", d(2026, 7, 1)),
            ("2026q4", d(2026, 10, 1)),
            ("2026年第三季度", d(2026, 7, 1)),
            ("2026年第1季度", d(2026, 1, 1)),
            ("2026年二季度", d(2026, 4, 1)),
            ("2026-13", None),
            ("2026-Q5", None),
            ("上月", None),
            ("", None),
        ] {
            assert_eq!(parse_period(text), want, "{text}");
        }
    }

    #[test]
    fn globs_and_headers() {
        assert_eq!(normalize("\u{feff}单位名称 "), "单位名称");
        assert_eq!(strip_unit_suffix("会议次数（次）"), "会议次数");
        assert_eq!(strip_unit_suffix("会议次数(次)"), "会议次数");
        assert_eq!(number("1,234"), Some(1234.0));
        assert_eq!(number("三"), None);
        assert_eq!(number("12x"), None);
    }
}
