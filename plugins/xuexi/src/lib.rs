//! `xuexi`: study points of 学习强国 (Xuexi Qiangguo), imported from the
//! points sheets an administrator exports or compiles.
//!
//! The platform has no organisation API, and the person-level web endpoints
//! need each member's own login: members' credentials are never used. Instead
//! a learning-group administrator drops the points sheet (XLSX or CSV) into a
//! directory, and each run imports the sheets it has not seen yet.
//!
//! ```toml
//! [sources.settings]
//! dir = "/srv/tally/xuexi"
//! pattern = "*.xlsx"     # default: every *.csv, *.xlsx and *.xls
//! encoding = "auto"      # CSV: "auto" (UTF-8, else GBK), "utf-8" or "gbk"
//! points = "year"        # "year" (default) or "total"
//! ```
//!
//! # Settings
//!
//! - `dir` (required): the drop directory. Files are opened read-only and
//!   never modified or moved; a missing directory fails the run.
//! - `pattern`: a file name pattern with `*` and `?`; by default every `*.csv`,
//!   `*.xlsx` and `*.xls`. Hidden files and Excel's `~$` lock files are ignored.
//! - `encoding` of CSV files: `auto` (UTF-8 with or without BOM when valid,
//!   else GBK, as Excel saves it), `utf-8` or `gbk`.
//! - `points`: which column yearly points come from when a sheet has both.
//!   `year` takes the yearly column; `total` derives yearly points from the
//!   lifetime column (for exports whose yearly column means something else).
//!   A sheet with only one of them is read from that one either way.
//!
//! # The sheet
//!
//! No public specification of the admin console's export exists: the
//! columns below are those of the exports seen, matched through aliases.
//! Title rows may come first (`学习积分统计（截至2026-09-30）`): the header
//! is the first row with a member column and a points column. A header
//! matches when it equals an alias, a unit suffix tolerated (`本年积分（分）`):
//!
//! | column | headers | meaning |
//! |---|---|---|
//! | member (required) | 姓名, 学员姓名, 成员 | the member's name |
//! | organisation | 所属组织, 所在组织, 学习组织, 所在支部, 组织, 部门 | mapped to a unit |
//! | yearly points (one of the two points columns required) | 本年积分, 年度积分, 年积分 | points so far this year, as of the sheet's date |
//! | lifetime points | 总积分, 累计积分, 学习积分 | points since the member joined |
//! | phone | 手机号, 手机号码 | only tells apart members of the same name |
//! | as-of date | 日期, 导出日期, 统计日期 | the day the export stands for |
//!
//! Every other column is ignored: 序号, 本月积分, 排名, and in particular a
//! member's last study day (`最近学习日期`, `最后学习时间`, `最近学习时间`),
//! which is **not** the export's date. A file in which no row has a member
//! column and a points column is refused (a warning naming the headers
//! accepted and the first rows seen; cells with digits are elided so that no
//! phone number is shown) and read again on each run until it is replaced.
//!
//! # The sheet's date
//!
//! 本年积分 are the points of the year up to the day the sheet was exported,
//! so every row is dated on that day, found in this order:
//!
//! 1. the row's as-of date column, when the sheet has one;
//! 2. the title rows above the header: `学习积分统计（截至2026-09-30）`,
//!    `统计时间：2026-09-30`, `2026年9月30日`, `2026.09.30`, `2026/9/30`; a
//!    range (`2026-07-01至2026-09-30`, `2026-07-01~2026-09-30`,
//!    `2026年7月1日-2026年9月30日`) stands for its end; a date after 截至,
//!    截止 or 统计时间 wins over other dates of the title;
//! 3. the file name: `积分_2026-09-30.csv`, `points-20260930.xlsx`,
//!    `2026年9月30日.csv`;
//! 4. only when none says a date, the day of the import (`host.now()` in the
//!    daemon's time zone), with a warning naming the file and the day.
//!
//! A title or file name that names a month or a quarter but no day
//! (`（2026年9月）`) dates the sheet on its last day, or on the import day
//! while it runs, with a warning. A bare year (`2026年度`) or a number that
//! is part of a longer one (a phone number) is never read as a date.
//!
//! A sheet dated outside the run's window is not imported yet: the warning
//! names the file, the date and what said it, and the file is read again on
//! each run until a window covers it. So a backfill of 2026-Q3 stores the
//! sheet of 2026-09-30 on that day, and a run in December leaves it alone.
//!
//! - The **organisation** is mapped to a unit through the units' ids, names
//!   and aliases (`aliases = ["某县自然资源局党支部"]`). An organisation that
//!   matches no unit is one warning per file naming it and its member count.
//!   Without an organisation column, every member belongs to the source's own
//!   unit.
//! - The **phone** only tells apart members of the same name: when present,
//!   the entity is `姓名#xxxxxxxx`, eight hex digits of a hash of the cell. The
//!   number itself is never logged, emitted or stored. A hash of a (masked)
//!   phone number is a pseudonym, not a secret: keep exports consistent (always
//!   or never with the phone column) so that a member keeps one key.

//! # Output
//!
//! - `xuexi_points` (level, 分): per member (entity), on the sheet's date, the
//!   member's points of that date's year up to that date (year to date).
//! - `xuexi_members` (level, 人): per unit, on the sheet's date, the members
//!   in the sheet: the real 应学人数 of the export, which the configured
//!   headcount of a unit may not follow month by month.
//!
//! # Yearly points from lifetime points
//!
//! When a row has only lifetime points, yearly points are the lifetime points
//! minus the member's baseline: the lifetime points of the oldest sheet of
//! the year of the sheet's date, kept in the resume state. A member without a baseline (the first
//! import of the year, a new member) gets one from this import and a warning,
//! and nothing is emitted for them until a later import: no number rather
//! than a wrong one. A row with both columns sets an exact baseline (lifetime
//! minus yearly), so a later sheet with only lifetime points is exact at once.
//! A sheet older than a member's baseline (a later sheet came first, as when a
//! run's window held only it) becomes the baseline, and the sheets of the old
//! baseline's day are imported again to yield the points they could not.
//!
//! # Idempotence
//!
//! Imported files are remembered by a hash of their content, so a file left in
//! the directory, or dropped again under another name, is skipped. A file
//! whose rows could not all be used yet (an organisation without a unit, a
//! date outside the run's window) is not remembered: it is read again
//! on each run, which is harmless because a re-collected day replaces its old
//! values, and its warning stays visible until the cause is fixed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use tally_plugin::schemars::{self, JsonSchema};
use tally_plugin::{
    CollectRequest, CollectResponse, Description, Error, Host, IndicatorDecl, Kind, Observation,
    Plugin, export_plugin, strip_unit_suffix,
};

pub use tally_tables::Encoding;
use tally_tables::{Said, Table, drop_files, read_tables, sheet_date};

/// The points of the year per member.
pub const POINTS: &str = "xuexi_points";
/// The members of a unit in an import.
pub const MEMBERS: &str = "xuexi_members";

/// Which column yearly points come from when a sheet has both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Points {
    /// The yearly column (本年积分).
    #[default]
    Year,
    /// Lifetime points (总积分) minus the year's baseline.
    Total,
}

/// `[sources.settings]` of a `xuexi` source.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The drop directory of exported sheets; files are opened read-only.
    #[schemars(extend("examples" = ["/srv/tally/xuexi"]))]
    pub dir: PathBuf,
    /// A file name pattern with `*` and `?`; default every `*.csv`, `*.xlsx` and `*.xls`.
    #[serde(default)]
    pub pattern: Option<String>,
    /// How CSV files are decoded (Excel saves GBK).
    #[serde(default)]
    pub encoding: Encoding,
    /// Which column yearly points come from when a sheet has both.
    #[serde(default)]
    pub points: Points,
}

/// A configured `xuexi` source.
pub struct Xuexi {
    dir: PathBuf,
    pattern: Option<String>,
    encoding: Encoding,
    points: Points,
}

const NAME_HEADERS: &[&str] = &["姓名", "学员姓名", "成员"];
const ORG_HEADERS: &[&str] = &[
    "所属组织",
    "所在组织",
    "学习组织",
    "所在支部",
    "组织",
    "部门",
];
const YEAR_HEADERS: &[&str] = &["本年积分", "年度积分", "年积分"];
const TOTAL_HEADERS: &[&str] = &["总积分", "累计积分", "学习积分"];
const PHONE_HEADERS: &[&str] = &["手机号", "手机号码"];
const DATE_HEADERS: &[&str] = &["日期", "导出日期", "统计日期"];
const TOTAL_ROWS: &[&str] = &["合计", "总计", "小计"];

impl Plugin for Xuexi {
    const NAME: &'static str = "xuexi";
    type Settings = Settings;

    fn describe() -> Description {
        Description::new("学习强国 study points from the sheets an administrator exports")
            .settings_schema::<Settings>()
            .indicator(IndicatorDecl::new(
                POINTS,
                "学习强国年度积分",
                Kind::Level,
                "分",
            ))
            .indicator(IndicatorDecl::new(
                MEMBERS,
                "学习强国学员数",
                Kind::Level,
                "人",
            ))
    }

    fn new(s: Settings, host: &Host) -> Result<Self, Error> {
        if s.dir.as_os_str().is_empty() {
            return Err(Error::settings(
                "dir: must name the directory the points sheets are dropped into",
            ));
        }
        if let Some(p) = &s.pattern
            && (p.is_empty() || p.contains('/') || p.contains('\\'))
        {
            return Err(Error::settings(format!(
                "pattern: {p:?} must be a file name pattern such as \"*.xlsx\" (no directories)"
            )));
        }
        // A share that is not mounted yet should not stop the daemon.
        if !s.dir.is_dir() {
            host.warn(&format!(
                "dir: {} is not a directory (yet); runs fail until it is",
                s.dir.display()
            ));
        }
        Ok(Xuexi {
            dir: s.dir,
            pattern: s.pattern,
            encoding: s.encoding,
            points: s.points,
        })
    }

    fn collect(&mut self, req: &CollectRequest, host: &Host) -> Result<CollectResponse, Error> {
        let tz: chrono_tz::Tz = req.timezone.parse().map_err(|_| {
            Error::internal(format!(
                "the daemon's time zone {:?} is not an IANA name",
                req.timezone
            ))
        })?;
        let today = host.now().with_timezone(&tz).date_naive();
        let mut out = CollectResponse::default();
        let mut state = match req.state.clone().map(serde_json::from_value::<State>) {
            None => State::default(),
            Some(Ok(state)) => state,
            Some(Err(e)) => {
                // Starting afresh costs at most a re-import and missing-baseline
                // warnings, never a wrong number.
                out.warn(format!(
                    "resume state unreadable ({e}); starting with no imported files and no baselines"
                ));
                State::default()
            }
        };

        let mut sheets = Vec::new();
        for (name, path) in self.files()? {
            if host.cancelled() {
                return Err(Error::data(format!(
                    "{}: cancelled while reading points sheets",
                    self.dir.display()
                )));
            }
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    out.warn(format!(
                        "{}: cannot read: {e}; file skipped",
                        path.display()
                    ));
                    continue;
                }
            };
            let hash = format!("{:016x}", fnv64(&bytes));
            if let Some(seen) = state.files.get(&hash) {
                host.debug(&format!(
                    "{name}: same content as {} imported for {}; skipped",
                    seen.name, seen.day
                ));
                continue;
            }
            let place = path.display().to_string();
            match read_tables(&place, &bytes, self.encoding) {
                Ok(tables) => {
                    if let Some(sheet) = parse_sheet(&place, &name, &tables, today, &mut out) {
                        sheets.push((name, hash, sheet));
                    }
                }
                Err(why) => out.warn(format!("{place}: {why}; file skipped")),
            }
        }
        if sheets.is_empty() {
            return Ok(out);
        }
        // The year's first import sets the baselines: import older exports first.
        sheets.sort_by(|a, b| (a.2.first_day, &a.0).cmp(&(b.2.first_day, &b.0)));

        let mut acc = Acc::default();
        for (name, hash, sheet) in &sheets {
            if self.import(req, sheet, &mut state, &mut acc, &mut out) {
                let day = sheet.first_day;
                let imported = Imported {
                    name: name.clone(),
                    day,
                };
                state.files.insert(hash.clone(), imported);
            }
        }
        // Baselines of years gone are of no use; the file hashes stay, so
        // that an old sheet left in the directory is never imported again.
        state.baselines.retain(|year, _| *year >= today.year() - 1);

        out.observations = acc.points;
        for ((unit, day), members) in acc.members {
            let mut o = Observation::new(MEMBERS, day, members.len() as f64);
            o.unit = unit;
            out.observations.push(o);
        }
        host.info(&format!(
            "imported {} points sheets from {}",
            sheets.len(),
            self.dir.display()
        ));
        out.state = Some(
            serde_json::to_value(&state)
                .map_err(|e| Error::internal(format!("cannot encode the resume state: {e}")))?,
        );
        Ok(out)
    }
}

/// What the plugin remembers between runs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Imported files by content hash: their name and first import day, for
    /// an operator reading the state.
    #[serde(default)]
    files: BTreeMap<String, Imported>,
    /// Per year, per member (`unit|entity`): the lifetime points the year's
    /// yearly points count from.
    #[serde(default)]
    baselines: BTreeMap<i32, BTreeMap<String, Baseline>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Imported {
    name: String,
    day: NaiveDate,
}

#[derive(Debug, Serialize, Deserialize)]
struct Baseline {
    points: f64,
    /// The day of the snapshot: only a later import yields yearly points.
    day: NaiveDate,
}

/// The columns of a header row.
#[derive(Default)]
struct Columns {
    name: Option<usize>,
    org: Option<usize>,
    year: Option<usize>,
    total: Option<usize>,
    phone: Option<usize>,
    date: Option<usize>,
}

impl Columns {
    fn of(cells: &[String]) -> Columns {
        let mut c = Columns::default();
        for (i, cell) in cells.iter().enumerate() {
            let h = normalize(cell);
            let h = h.as_str();
            let slot = if NAME_HEADERS.contains(&h) {
                &mut c.name
            } else if ORG_HEADERS.contains(&h) {
                &mut c.org
            } else if YEAR_HEADERS.contains(&h) {
                &mut c.year
            } else if TOTAL_HEADERS.contains(&h) {
                &mut c.total
            } else if PHONE_HEADERS.contains(&h) {
                &mut c.phone
            } else if DATE_HEADERS.contains(&h) {
                &mut c.date
            } else {
                // Monthly points, rank, 序号 and the like: known, not needed.
                continue;
            };
            slot.get_or_insert(i);
        }
        c
    }

    fn is_header(&self) -> bool {
        self.name.is_some() && (self.year.is_some() || self.total.is_some())
    }
}

/// One member row of a sheet.
struct Member {
    place: String,
    line: usize,
    name: String,
    /// `None` when the sheet has no organisation column.
    org: Option<String>,
    phone: Option<String>,
    year: Option<f64>,
    total: Option<f64>,
    day: NaiveDate,
    /// What dated the row, for messages: `its title row 1`, `its 导出日期 column`.
    dated_by: String,
}

/// A parsed file: its member rows, from every sheet with a header.
struct Sheet {
    place: String,
    has_org: bool,
    total_header: String,
    members: Vec<Member>,
    first_day: NaiveDate,
}

/// Reads the member rows of a file's tables; `None` (with a warning) when no
/// table has a header row. `file_name` may say the sheet's date.
fn parse_sheet(
    place: &str,
    file_name: &str,
    tables: &[Table],
    today: NaiveDate,
    out: &mut CollectResponse,
) -> Option<Sheet> {
    let mut sheet = Sheet {
        place: place.to_owned(),
        has_org: true,
        total_header: String::new(),
        members: Vec::new(),
        first_day: today,
    };
    let mut found = false;
    for table in tables {
        let Some(h) = table
            .rows
            .iter()
            .position(|(_, cells)| Columns::of(cells).is_header())
        else {
            continue;
        };
        found = true;
        let (_, headers) = &table.rows[h];
        let cols = Columns::of(headers);
        let header = |i: usize| headers.get(i).map_or("", |s| s.trim());
        // Rows without a date cell stand for the day the sheet says, found
        // (and warned about) once, when a row needs it.
        let mut sheet_day: Option<(NaiveDate, String)> = None;
        sheet.has_org &= cols.org.is_some();
        if let Some(t) = cols.total {
            sheet.total_header = header(t).to_owned();
        }
        for (line, cells) in &table.rows[h + 1..] {
            let cell = |i: Option<usize>| i.and_then(|i| cells.get(i)).map_or("", |s| s.trim());
            let at = |i: usize| format!("{}: row {line}: column {:?}", table.place, header(i));
            let name = cell(cols.name);
            if name.is_empty() || TOTAL_ROWS.contains(&name) {
                continue;
            }
            let mut points = [None, None];
            let mut bad = false;
            for (slot, col) in points.iter_mut().zip([cols.year, cols.total]) {
                let text = cell(col);
                if let (Some(i), false) = (col, text.is_empty()) {
                    *slot = number(text);
                    if slot.is_none() {
                        out.warn(format!(
                            "{}: bad points {text:?} (a whole number of points); row skipped",
                            at(i)
                        ));
                        bad = true;
                    }
                }
            }
            let (day, dated_by) = match (cols.date, cell(cols.date)) {
                (Some(_), "") | (None, _) => sheet_day
                    .get_or_insert_with(|| {
                        as_of(&table.place, &table.rows[..h], file_name, today, out)
                    })
                    .clone(),
                (Some(i), text) => match parse_day(text) {
                    Some(d) => (d, format!("its {} column", header(i))),
                    None => {
                        out.warn(format!(
                            "{}: bad date {text:?} (2026-11-27, 2026/11/27 or 2026年11月27日); row skipped",
                            at(i)
                        ));
                        continue;
                    }
                },
            };
            if bad {
                continue;
            }
            if points == [None, None] {
                out.warn(format!(
                    "{}: row {line}: no points for member {name:?}; row skipped",
                    table.place
                ));
                continue;
            }
            let phone = Some(cell(cols.phone)).filter(|p| !p.is_empty());
            sheet.members.push(Member {
                place: table.place.clone(),
                line: *line,
                name: name.to_owned(),
                org: cols.org.map(|_| cell(cols.org).to_owned()),
                phone: phone.map(str::to_owned),
                year: points[0],
                total: points[1],
                day,
                dated_by,
            });
        }
    }
    if !found {
        out.warn(format!(
            "{place}: unknown layout: no header row with a member column ({}) and a points column \
             ({} or {}); {}; file skipped",
            NAME_HEADERS.join("/"),
            YEAR_HEADERS.join("/"),
            TOTAL_HEADERS.join("/"),
            seen(tables),
        ));
        return None;
    }
    sheet.first_day = sheet.members.iter().map(|m| m.day).min().unwrap_or(today);
    Some(sheet)
}

/// The day a table's rows stand for when they have no date cell, and what
/// said it: the title rows, else the file name, else the import day (with a
/// warning naming the file and the day chosen).
fn as_of(
    place: &str,
    title: &[(usize, Vec<String>)],
    name: &str,
    today: NaiveDate,
    out: &mut CollectResponse,
) -> (NaiveDate, String) {
    let Some(dated) = sheet_date(title, name) else {
        out.warn(format!(
            "{place}: neither a date column ({}), its title rows nor its file name say the sheet's \
             date; dated on the import day {today}",
            DATE_HEADERS.join("/")
        ));
        return (today, "the import day".to_owned());
    };
    match dated.said {
        Said::Day(d) => (d, dated.origin.to_string()),
        // 本年积分 of a month's export are those of its last day, or of today
        // while the month runs.
        said => {
            let day = said.last_day().min(today).max(said.first_day());
            let which = if day == today {
                "the import day"
            } else {
                "its last day"
            };
            out.warn(format!(
                "{place}: {} says {said} but no day; dated on {which} {day}",
                dated.origin
            ));
            (day, format!("{} ({said})", dated.origin))
        }
    }
}

/// The first rows of a file's tables, for a message about a layout not
/// understood. Cells with digits or `*` are elided: a data row may hold a
/// phone number, which is never shown.
fn seen(tables: &[Table]) -> String {
    let mut rows = Vec::new();
    for table in tables {
        for (line, cells) in table.rows.iter().take(3) {
            let cells: Vec<String> = cells
                .iter()
                .map(|c| c.trim())
                .filter(|c| !c.is_empty())
                .map(|c| {
                    if c.chars().any(|ch| ch.is_ascii_digit() || ch == '*') {
                        "…".to_owned()
                    } else {
                        c.chars().take(20).collect()
                    }
                })
                .collect();
            if !cells.is_empty() {
                let at = if tables.len() > 1 {
                    format!("{} row {line}", table.place)
                } else {
                    format!("row {line}")
                };
                rows.push(format!("{at}: {}", cells.join(" | ")));
            }
        }
    }
    if rows.is_empty() {
        "the file has no rows".to_owned()
    } else {
        format!("rows seen: {}", rows.join("; "))
    }
}

/// The observations of a run: points by key in first-seen order (a later
/// row of the same member and day replaces an earlier one), members per unit
/// and day.
#[derive(Default)]
struct Acc {
    points: Vec<Observation>,
    index: HashMap<(Option<String>, String, NaiveDate), usize>,
    members: BTreeMap<(Option<String>, NaiveDate), BTreeSet<String>>,
}

impl Acc {
    fn point(&mut self, o: Observation) {
        let key = (o.unit.clone(), o.entity.clone(), o.day);
        match self.index.get(&key) {
            Some(&i) => self.points[i] = o,
            None => {
                self.index.insert(key, self.points.len());
                self.points.push(o);
            }
        }
    }
}

impl Xuexi {
    /// The files of the drop directory this source reads, in name order.
    fn files(&self) -> Result<Vec<(String, PathBuf)>, Error> {
        drop_files(&self.dir, self.pattern.as_deref()).map_err(|e| {
            Error::data(format!(
                "dir: cannot read the drop directory {}: {e}",
                self.dir.display()
            ))
        })
    }

    /// Turns a sheet's members into observations; true when every row could
    /// be used, so that the file need not be read again.
    fn import(
        &self,
        req: &CollectRequest,
        sheet: &Sheet,
        state: &mut State,
        acc: &mut Acc,
        out: &mut CollectResponse,
    ) -> bool {
        if !sheet.has_org && req.default_unit.is_none() {
            out.warn(format!(
                "{}: no organisation column ({}) and this source has several units; file skipped",
                sheet.place,
                ORG_HEADERS.join("/")
            ));
            return false;
        }
        let mut unknown: BTreeMap<&str, usize> = BTreeMap::new();
        let mut outside: BTreeMap<(NaiveDate, &str), usize> = BTreeMap::new();
        let mut no_baseline: BTreeMap<i32, Vec<&str>> = BTreeMap::new();
        let mut earlier: Vec<(&str, NaiveDate)> = Vec::new();
        for m in &sheet.members {
            let unit = match &m.org {
                None => None,
                Some(org) => match req.resolve_unit(org) {
                    Some(id) => Some(id.to_owned()),
                    None => {
                        *unknown.entry(org.as_str()).or_default() += 1;
                        continue;
                    }
                },
            };
            if !req.window.contains(m.day) {
                *outside.entry((m.day, m.dated_by.as_str())).or_default() += 1;
                continue;
            }
            let entity = match &m.phone {
                // Only a hash: the phone number never leaves the sheet.
                Some(phone) => format!("{}#{:08x}", m.name, fnv64(phone.as_bytes()) as u32),
                None => m.name.clone(),
            };
            acc.members
                .entry((unit.clone(), m.day))
                .or_default()
                .insert(entity.clone());

            let year = m.day.year();
            let unit_key = unit.as_deref().or(req.default_unit.as_deref());
            let key = format!("{}|{entity}", unit_key.unwrap_or_default());
            let baselines = state.baselines.entry(year).or_default();
            if let (Points::Year, Some(y), Some(t)) = (self.points, m.year, m.total) {
                // Lifetime minus yearly is the lifetime at the start of the year.
                let start = NaiveDate::from_ymd_opt(year - 1, 12, 31).unwrap_or(m.day);
                baselines.entry(key.clone()).or_insert(Baseline {
                    points: t - y,
                    day: start,
                });
            }
            let value = match (self.points, m.year, m.total) {
                (Points::Year, Some(y), _) | (Points::Total, Some(y), None) => Some(y),
                (_, _, Some(t)) => match baselines.get(&key) {
                    Some(b) if b.day < m.day && b.points <= t => Some(t - b.points),
                    Some(b) if b.day < m.day => {
                        out.warn(format!(
                            "{}: row {}: lifetime points {t} of {:?} are below the baseline {} of {}; row skipped",
                            m.place, m.line, m.name, b.points, b.day
                        ));
                        None
                    }
                    // An older snapshot than the baseline (a later sheet was
                    // imported first, as a run whose window held only it does):
                    // the year's points count from the oldest snapshot.
                    Some(b) if m.day < b.day && t <= b.points => {
                        let (old, now) = (b.day, m.day);
                        baselines.insert(
                            key.clone(),
                            Baseline {
                                points: t,
                                day: now,
                            },
                        );
                        earlier.push((m.name.as_str(), old));
                        None
                    }
                    Some(_) => {
                        no_baseline.entry(year).or_default().push(&m.name);
                        None
                    }
                    None => {
                        let first = Baseline {
                            points: t,
                            day: m.day,
                        };
                        baselines.insert(key.clone(), first);
                        no_baseline.entry(year).or_default().push(&m.name);
                        None
                    }
                },
                (_, None, None) => None,
            };
            if let Some(v) = value {
                let mut o = Observation::new(POINTS, m.day, v).entity(entity);
                o.unit = unit;
                acc.point(o);
            }
        }
        for (year, names) in &no_baseline {
            let shown: Vec<&str> = names.iter().take(5).copied().collect();
            let more = match names.len() - shown.len() {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            out.warn(format!(
                "{}: {} members have lifetime points ({}) only and no baseline for {year} yet: {}{more}; \
                 this import is their baseline, their yearly points are emitted from the next import on",
                sheet.place,
                names.len(),
                sheet.total_header,
                shown.join(", "),
            ));
        }
        if !earlier.is_empty() {
            let shown: Vec<String> = earlier
                .iter()
                .take(5)
                .map(|(name, day)| format!("{name} (was {day})"))
                .collect();
            let more = match earlier.len() - shown.len() {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            out.warn(format!(
                "{}: {} members have lifetime points only, older than their baseline: {}{more}; this \
                 sheet is their baseline now, and the sheets of that day are imported again (when a \
                 run's window covers them) to count from it",
                sheet.place,
                earlier.len(),
                shown.join(", "),
            ));
            // Forgetting those files makes their next read yield the points
            // their first read could not.
            let days: BTreeSet<NaiveDate> = earlier.iter().map(|(_, d)| *d).collect();
            state.files.retain(|_, f| !days.contains(&f.day));
        }
        for (org, n) in &unknown {
            out.warn(format!(
                "{}: organisation {org:?} matches no unit of this source ({n} members skipped); \
                 add it to a unit's aliases; the file is read again on each run until then",
                sheet.place
            ));
        }
        if !outside.is_empty() {
            let dates: Vec<String> = outside
                .iter()
                .map(|((day, by), n)| format!("{n} rows dated {day} by {by}"))
                .collect();
            out.warn(format!(
                "{}: {} outside the window {}..{}; the file is read again on each run \
                 until a window covers them",
                sheet.place,
                dates.join(", "),
                req.window.from,
                req.window.to
            ));
        }
        unknown.is_empty() && outside.is_empty()
    }
}

/// A header for matching: no BOM, no blanks, no unit suffix (`本年积分（分）`).
fn normalize(header: &str) -> String {
    let h = header.trim().trim_start_matches('\u{feff}').trim();
    strip_unit_suffix(h).to_owned()
}

/// Points as a sheet writes them: `6021`, `6,021`, `6021.0`; not negative,
/// not `三`.
fn number(text: &str) -> Option<f64> {
    tally_tables::number(text).filter(|n| *n >= 0.0)
}

/// An export date: `2026-11-27`, `2026/11/27`, `20261127`, `2026.11.27`,
/// `2026年11月27日`, or a date and time.
fn parse_day(text: &str) -> Option<NaiveDate> {
    let t = text.trim();
    let date = t.split_once([' ', 'T']).map_or(t, |(d, _)| d);
    ["%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%Y.%m.%d", "%Y年%m月%d日"]
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(date, f).ok())
}

/// FNV-1a, 64 bits. It keys files by content and pseudonymises phone cells.
/// A cryptographic hash would buy nothing here: the files are an
/// administrator's own exports (no one crafts collisions), a collision among
/// a few hundred files is about 1 in 10^14, and no unsalted hash of any kind
/// hides a masked phone number from someone who enumerates them.
fn fnv64(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    h.write(bytes);
    h.finish()
}

export_plugin!(Xuexi);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_match_through_aliases() {
        let row = |cells: &[&str]| cells.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let c = Columns::of(&row(&[
            "序号",
            "\u{feff}学员姓名",
            "学习组织",
            "总积分（分）",
            "手机号码",
            "导出日期",
        ]));
        assert_eq!(
            (c.name, c.org, c.year, c.total, c.phone, c.date),
            (Some(1), Some(2), None, Some(3), Some(4), Some(5))
        );
        assert!(c.is_header());
        // A title row is not a header, nor a row without points.
        assert!(!Columns::of(&row(&["某县学习强国积分统计（2026年11月）"])).is_header());
        assert!(!Columns::of(&row(&["姓名", "所属组织", "本月积分"])).is_header());
    }

    #[test]
    fn numbers_days_and_hashes() {
        assert_eq!(number("6,021"), Some(6021.0));
        assert_eq!(number("6021.0"), Some(6021.0));
        assert_eq!(number("-3"), None);
        assert_eq!(number("三"), None);
        let d = NaiveDate::from_ymd_opt(2026, 11, 27);
        for text in [
            "2026-11-27",
            "2026/11/27",
            "20261127",
            "2026年11月27日",
            "2026-11-27 08:00:00",
        ] {
            assert_eq!(parse_day(text), d, "{text}");
        }
        assert_eq!(parse_day("2026-11"), None);
        // The published FNV-1a test vectors.
        assert_eq!(fnv64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv64(b"a"), 0xaf63dc4c8601ec8c);
    }
}
