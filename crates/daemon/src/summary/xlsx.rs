//! The summary as an Excel workbook, for the clerks who hand the table on:
//!
//! - 「统计表」: the wide table of the CSV with the marks made visible. A
//!   title row (period, dates, time zone), two status rows that speak of
//!   different things and say so (数据来源: did every source collect every
//!   day; 报送单位: did every expected unit report), a header of
//!   indicator display names (`微信公众号发文数(篇)`) over their sub-columns
//!   (本期, 上期, and where a target applies 目标, 达标/人数, 完成率), one row
//!   per unit in tree order with the name indented by depth. Numbers are
//!   numeric cells so that Excel can sum them; 未报送 is an empty grey cell
//!   with a note, an incomplete value is italic on orange with a note, and
//!   the 备注 column says both in words, as in the CSV.
//! - one sheet per indicator: the units' values, then for every unit with
//!   at least two children shown (and for the top-level units when there
//!   are several) the children's figures and a column chart of them. A
//!   chart never puts a total beside its own parts: units of one level are
//!   compared, by 本期/上期, by completion against a 100% target line where
//!   a target applies (targets scale with units and are pro-rated), or per
//!   capita for `per_capita` indicators.
//! - 「数据来源」: the sources behind the table, complete or not, failed runs,
//!   last success.
//!
//! Every sheet prints on A4 landscape, one page wide and as long as needed,
//! header rows repeated, each comparison starting a page so that no chart
//! is cut across two.

use rust_xlsxwriter::{
    Chart, ChartLegendPosition, ChartType, Color, Format, FormatAlign, FormatBorder, Note,
    Workbook, Worksheet, XlsxError,
};
use thiserror::Error;

use super::{Because, IndicatorInfo, IndicatorValue, Summary, UnitRow};
use tally_config::Per;

/// Rendering a report failed; with in-memory output this is a bug or a
/// limit of the format (too many rows), never an I/O problem.
#[derive(Debug, Error)]
pub enum ReportError {
    #[error("cannot build the xlsx report")]
    Xlsx(#[from] XlsxError),
    #[error(transparent)]
    Narrative(#[from] crate::narrative::NarrativeError),
}

/// The name of the main sheet.
pub const TABLE_SHEET: &str = "统计表";
/// The name of the sheet listing the sources.
pub const SOURCES_SHEET: &str = "数据来源";

/// Rows above the data on 「统计表」: title, the two status rows (sources,
/// units), indicator header, sub-header.
const TABLE_HEADER_ROWS: u32 = 5;

const MISSING_NOTE: &str = "未报送：应有来源覆盖此单位，但本期没有任何数据";

/// The note on an incomplete value: what made it so.
fn incomplete_note(because: Option<Because>) -> &'static str {
    match because {
        Some(Because::Sources) => {
            "数据不完整：此数值背后有数据源在本期缺数或失败（见「数据来源」）；数值可能偏低"
        }
        Some(Because::Units) => "数据不完整：下级单位有未报送（灰色空格）；合计可能偏低",
        Some(Because::SourcesAndUnits) | None => {
            "数据不完整：有数据源在本期缺数或失败，且下级单位有未报送；数值可能偏低"
        }
    }
}

/// The cell formats of the workbook, made once.
struct Formats {
    title: Format,
    subtitle: Format,
    header: Format,
    /// Unit names, one per depth (indent level = depth).
    names: Vec<Format>,
    number: Format,
    incomplete: Format,
    missing: Format,
    ratio: Format,
    ratio_incomplete: Format,
    text: Format,
}

impl Formats {
    fn new(max_depth: usize) -> Formats {
        let cell = Format::new().set_border(FormatBorder::Thin);
        let number = cell.clone().set_num_format("#,##0.##");
        let incomplete_fill = Color::RGB(0xFCE4D6);
        Formats {
            title: Format::new().set_bold().set_font_size(14),
            subtitle: Format::new().set_font_color(Color::RGB(0x595959)),
            header: cell
                .clone()
                .set_bold()
                .set_text_wrap()
                .set_align(FormatAlign::Center)
                .set_align(FormatAlign::VerticalCenter)
                .set_background_color(Color::RGB(0xDDEBF7)),
            names: (0..=max_depth)
                .map(|d| cell.clone().set_indent(d.min(15) as u8))
                .collect(),
            incomplete: number
                .clone()
                .set_italic()
                .set_background_color(incomplete_fill),
            missing: cell.clone().set_background_color(Color::RGB(0xD9D9D9)),
            ratio: cell.clone().set_num_format("0.0%"),
            ratio_incomplete: cell
                .clone()
                .set_num_format("0.0%")
                .set_italic()
                .set_background_color(incomplete_fill),
            number,
            text: cell,
        }
    }

    fn name(&self, depth: usize) -> &Format {
        &self.names[depth.min(self.names.len() - 1)]
    }
}

/// What sub-columns an indicator gets on 「统计表」.
struct Group {
    /// Some unit has a target for it.
    target: bool,
    /// Some unit's target is per entity (staff member): met and total shown.
    per_entity: bool,
    /// Some unit's target is per unit.
    per_unit: bool,
}

impl Group {
    fn of(summary: &Summary, indicator: &str) -> Group {
        let targets: Vec<Per> = summary
            .units
            .iter()
            .filter_map(|u| u.values.get(indicator)?.target.as_ref().map(|t| t.per))
            .collect();
        Group {
            target: !targets.is_empty(),
            per_entity: targets.contains(&Per::Entity),
            per_unit: targets.contains(&Per::Unit),
        }
    }

    fn sub_headers(&self) -> Vec<&'static str> {
        let mut h = vec!["本期", "上期"];
        if self.target {
            h.push(if self.per_entity && !self.per_unit {
                "每人目标"
            } else {
                "目标"
            });
            if self.per_entity {
                h.extend(["达标人数", "人数"]);
            }
            h.push(if self.per_entity && !self.per_unit {
                "达标率"
            } else {
                "完成率"
            });
        }
        h
    }
}

/// Renders the workbook. Deterministic for a given summary except for the
/// creation time Excel files carry, which is fixed to the summary's
/// generation time so that two renderings of one summary are identical.
pub fn to_xlsx(summary: &Summary) -> Result<Vec<u8>, ReportError> {
    let max_depth = summary.units.iter().map(|u| u.depth).max().unwrap_or(0);
    let formats = Formats::new(max_depth);
    let mut workbook = Workbook::new();
    workbook.push_worksheet(table_sheet(summary, &formats)?);
    let mut used = vec![TABLE_SHEET.to_owned(), SOURCES_SHEET.to_owned()];
    for indicator in &summary.indicators {
        let name = sheet_name(&indicator.name, &indicator.id, &used);
        used.push(name.clone());
        workbook.push_worksheet(indicator_sheet(summary, indicator, &name, &formats)?);
    }
    workbook.push_worksheet(sources_sheet(summary, &formats)?);
    Ok(workbook.save_to_buffer()?)
}

fn period_line(summary: &Summary) -> String {
    let p = &summary.period;
    format!(
        "{} 统计表（{} 至 {}，时区 {}）",
        p.label, p.start, p.end, p.timezone
    )
}

/// The first status row: the sources behind the table, and only them.
fn sources_line(summary: &Summary) -> String {
    let p = &summary.period;
    let total = summary.sources.len();
    let gaps = summary.sources.iter().filter(|s| !s.complete).count();
    let running = if p.ended {
        ""
    } else {
        "统计期尚未结束，"
    };
    let status = if total == 0 {
        "数据来源：本表没有数据来源".to_owned()
    } else if gaps == 0 {
        let state = if p.ended {
            "完整"
        } else {
            "截至今天完整"
        };
        format!(
            "数据来源{state}：{running}{total} 个数据源在本期每一天都已采集，没有失败（见「数据来源」）"
        )
    } else {
        format!(
            "数据来源不完整：{running}{total} 个数据源中有 {gaps} 个在本期缺数或失败（见「数据来源」），它们覆盖的数值可能偏低"
        )
    };
    format!("{status}；生成于 {}", summary.generated_at)
}

/// The second status row: the units expected to report, and only them.
fn units_line(summary: &Summary) -> String {
    if summary.period.units_complete {
        return "报送单位完整：数据源覆盖的单位在本期都有数据，没有未报送".to_owned();
    }
    let missing: Vec<&str> = summary
        .units
        .iter()
        .filter(|u| u.values.0.iter().any(|(_, c)| c.missing))
        .map(|u| u.name.as_str())
        .collect();
    if missing.is_empty() {
        // Every missing unit is below the depth shown.
        "报送单位不完整：表中所列单位以下有单位未报送，其上级的合计标为数据不完整".to_owned()
    } else {
        format!(
            "报送单位不完整：{} 有指标未报送（灰色空格），其上级的合计标为数据不完整",
            missing.join("、")
        )
    }
}

fn table_sheet(summary: &Summary, f: &Formats) -> Result<Worksheet, ReportError> {
    let mut ws = Worksheet::new();
    ws.set_name(TABLE_SHEET)?;
    ws.write_string_with_format(0, 0, period_line(summary), &f.title)?;
    ws.write_string_with_format(1, 0, sources_line(summary), &f.subtitle)?;
    ws.write_string_with_format(2, 0, units_line(summary), &f.subtitle)?;

    let (head, sub) = (TABLE_HEADER_ROWS - 2, TABLE_HEADER_ROWS - 1);
    let mut widths = Widths::default();
    ws.merge_range(head, 0, sub, 0, "单位", &f.header)?;
    widths.fit(0, "单位");
    let mut col: u16 = 1;
    let groups: Vec<Group> = summary
        .indicators
        .iter()
        .map(|i| Group::of(summary, &i.id))
        .collect();
    for (indicator, group) in summary.indicators.iter().zip(&groups) {
        let subs = group.sub_headers();
        let sub_row = sub;
        let last = col + subs.len() as u16 - 1;
        let header = indicator.header();
        if last > col {
            ws.merge_range(head, col, head, last, &header, &f.header)?;
        } else {
            ws.write_string_with_format(head, col, &header, &f.header)?;
        }
        // The header spreads over the group's columns.
        let share = display_width(&header).div_ceil(subs.len());
        for (k, sub) in subs.iter().enumerate() {
            let c = col + k as u16;
            ws.write_string_with_format(sub_row, c, *sub, &f.header)?;
            widths.fit_width(c, share.max(display_width(sub)));
            widths.fit_width(c, 8);
        }
        col = last + 1;
    }
    let notes_col = col;
    let code_col = col + 1;
    ws.merge_range(head, notes_col, sub, notes_col, "备注", &f.header)?;
    ws.merge_range(head, code_col, sub, code_col, "单位代码", &f.header)?;
    widths.fit(notes_col, "备注");
    widths.fit(code_col, "单位代码");

    for (r, unit) in summary.units.iter().enumerate() {
        let row = TABLE_HEADER_ROWS + r as u32;
        ws.write_string_with_format(row, 0, &unit.name, f.name(unit.depth))?;
        // An indent level is about three characters wide in Excel.
        widths.fit_width(0, display_width(&unit.name) + 3 * unit.depth);
        let mut col: u16 = 1;
        let mut notes = Vec::new();
        for (indicator, group) in summary.indicators.iter().zip(&groups) {
            let default = IndicatorValue::default();
            let cell = unit.values.get(&indicator.id).unwrap_or(&default);
            value_cell(&mut ws, row, col, cell, f)?;
            number_cell(&mut ws, row, col + 1, cell.previous, &f.number)?;
            if group.target {
                let t = cell.target.as_ref();
                let mut c = col + 2;
                number_cell(&mut ws, row, c, t.map(|t| t.min), &f.number)?;
                c += 1;
                if group.per_entity {
                    let entity = t.filter(|t| t.per == Per::Entity);
                    number_cell(
                        &mut ws,
                        row,
                        c,
                        entity.and_then(|t| t.met).map(|m| m as f64),
                        &f.number,
                    )?;
                    number_cell(
                        &mut ws,
                        row,
                        c + 1,
                        entity.and_then(|t| t.total).map(|n| n as f64),
                        &f.number,
                    )?;
                    c += 2;
                }
                let ratio_format = if cell.incomplete {
                    &f.ratio_incomplete
                } else {
                    &f.ratio
                };
                // Completion for per-unit targets, the share on target for per-entity ones.
                let ratio = t.and_then(|t| t.completion.or(t.ratio));
                number_cell(&mut ws, row, c, ratio, ratio_format)?;
            }
            col += group.sub_headers().len() as u16;
            if let Some(mark) = cell.mark() {
                notes.push(format!("{}: {mark}", indicator.name));
            }
        }
        let notes = notes.join("; ");
        widths.fit(notes_col, &notes);
        ws.write_string_with_format(row, notes_col, &notes, &f.text)?;
        ws.write_string_with_format(row, code_col, &unit.id, &f.text)?;
        widths.fit(code_col, &unit.id);
    }
    let legend_row = TABLE_HEADER_ROWS + summary.units.len() as u32 + 1;
    ws.write_string_with_format(
        legend_row,
        0,
        "说明：灰色空格为未报送；斜体橙底为数据不完整（数值可能偏低，备注栏写明是来源缺数还是下级单位未报送）；指向单元格可看批注。",
        &f.subtitle,
    )?;
    ws.set_row_height(head, 36)?;
    ws.set_freeze_panes(TABLE_HEADER_ROWS, 1)?;
    widths.apply(&mut ws)?;
    print_setup(
        &mut ws,
        summary,
        TABLE_SHEET,
        Some((TABLE_HEADER_ROWS - 2, TABLE_HEADER_ROWS - 1)),
    )?;
    Ok(ws)
}

/// The current value with its marks: a number, or an empty marked cell.
fn value_cell(
    ws: &mut Worksheet,
    row: u32,
    col: u16,
    cell: &IndicatorValue,
    f: &Formats,
) -> Result<(), ReportError> {
    match cell.value {
        _ if cell.missing => {
            ws.write_blank(row, col, &f.missing)?;
            ws.insert_note(row, col, &note(MISSING_NOTE))?;
        }
        Some(v) if cell.incomplete => {
            ws.write_number_with_format(row, col, v, &f.incomplete)?;
            ws.insert_note(row, col, &note(incomplete_note(cell.incomplete_because)))?;
        }
        None if cell.incomplete => {
            ws.write_blank(row, col, &f.incomplete)?;
            ws.insert_note(row, col, &note(incomplete_note(cell.incomplete_because)))?;
        }
        Some(v) => {
            ws.write_number_with_format(row, col, v, &f.number)?;
        }
        None => {
            ws.write_blank(row, col, &f.number)?;
        }
    }
    Ok(())
}

fn number_cell(
    ws: &mut Worksheet,
    row: u32,
    col: u16,
    v: Option<f64>,
    format: &Format,
) -> Result<(), ReportError> {
    match v {
        Some(v) if v.is_finite() => ws.write_number_with_format(row, col, v, format)?,
        _ => ws.write_blank(row, col, format)?,
    };
    Ok(())
}

fn note(text: &str) -> Note {
    Note::new(text).add_author_prefix(false).set_width(260)
}

fn indicator_sheet(
    summary: &Summary,
    indicator: &IndicatorInfo,
    name: &str,
    f: &Formats,
) -> Result<Worksheet, ReportError> {
    let mut ws = Worksheet::new();
    ws.set_name(name)?;
    let header = indicator.header();
    ws.write_string_with_format(0, 0, format!("{header} {}", period_line(summary)), &f.title)?;
    let group = Group::of(summary, &indicator.id);
    let mut heads = vec!["单位", "本期", "上期"];
    if group.target {
        heads.push("目标");
    }
    let mut widths = Widths::default();
    for (c, h) in heads.iter().enumerate() {
        ws.write_string_with_format(1, c as u16, *h, &f.header)?;
        widths.fit_width(c as u16, display_width(h).max(10));
    }
    if group.per_entity {
        ws.insert_note(1, 3, &note("按人计的目标：单位合计目标 = 每人目标 × 人数"))?;
    }
    let first = 2u32;
    for (r, unit) in summary.units.iter().enumerate() {
        let row = first + r as u32;
        ws.write_string_with_format(row, 0, &unit.name, f.name(unit.depth))?;
        widths.fit_width(0, display_width(&unit.name) + 3 * unit.depth);
        let default = IndicatorValue::default();
        let cell = unit.values.get(&indicator.id).unwrap_or(&default);
        value_cell(&mut ws, row, 1, cell, f)?;
        number_cell(&mut ws, row, 2, cell.previous, &f.number)?;
        if group.target {
            let line = cell.target.as_ref().map(|t| match t.per {
                Per::Unit => t.min,
                Per::Entity => t.min * t.total.unwrap_or(0) as f64,
            });
            number_cell(&mut ws, row, 3, line, &f.number)?;
        }
    }
    let table_end = first + summary.units.len() as u32;
    let mut breaks = Vec::new();
    let mut row = table_end + 1;
    let measure = Measure::of(summary, &indicator.id);
    for (parent, children) in sibling_groups(summary) {
        // Each comparison starts a printed page, so that no chart is cut.
        breaks.push(row);
        row = comparison(
            &mut ws,
            summary,
            indicator,
            (name, measure),
            (parent, &children),
            (row, &mut breaks),
            f,
        )?;
    }
    ws.set_freeze_panes(first, 1)?;
    widths.fit_width(1, 12);
    widths.apply(&mut ws)?;
    print_setup(&mut ws, summary, name, Some((1, 1)))?;
    // Excel refuses more than 1023 manual breaks; the rest print unbroken.
    breaks.truncate(1023);
    if !breaks.is_empty() {
        ws.set_page_breaks(&breaks)?;
    }
    Ok(ws)
}

/// What an indicator's charts show for each unit, chosen so that units of
/// different sizes compare fairly.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Measure {
    /// 本期 and 上期.
    Value,
    /// 人均: the indicator has `per_capita = true`.
    PerCapita,
    /// 完成率 (per-unit target) or 达标率 (per-entity target), against a
    /// 目标 line at 100%: a target scaled to the unit, or pro-rated to the
    /// days elapsed, makes the raw totals of units incomparable.
    Completion,
}

impl Measure {
    fn of(summary: &Summary, indicator: &str) -> Measure {
        let cells = || summary.units.iter().filter_map(|u| u.values.get(indicator));
        if cells().any(|c| c.target.is_some()) {
            Measure::Completion
        } else if cells().any(|c| c.per_capita.is_some()) {
            Measure::PerCapita
        } else {
            Measure::Value
        }
    }

    /// The columns of a comparison's data block after 单位.
    fn heads(self, group: &Group) -> Vec<&'static str> {
        match self {
            Measure::Value => vec!["本期", "上期"],
            Measure::PerCapita => vec!["本期人均"],
            Measure::Completion if group.per_entity && !group.per_unit => vec!["达标率", "目标"],
            Measure::Completion => vec!["完成率", "目标"],
        }
    }
}

/// The units compared in one chart: the children of one shown unit (or the
/// top-level units shown, `None`), in table order, when there are at least
/// two. A parent is never among them, so no total stands beside its parts.
fn sibling_groups(summary: &Summary) -> Vec<(Option<&UnitRow>, Vec<&UnitRow>)> {
    let shown = |id: &str| summary.units.iter().find(|u| u.id == id);
    let parent_of = |u: &UnitRow| u.parent.as_deref().and_then(shown);
    let mut groups: Vec<(Option<&UnitRow>, Vec<&UnitRow>)> = Vec::new();
    let top: Vec<&UnitRow> = summary
        .units
        .iter()
        .filter(|u| parent_of(u).is_none())
        .collect();
    groups.push((None, top));
    for parent in &summary.units {
        let children = summary
            .units
            .iter()
            .filter(|u| u.parent.as_deref() == Some(parent.id.as_str()))
            .collect();
        groups.push((Some(parent), children));
    }
    groups.retain(|(_, children)| children.len() >= 2);
    groups
}

/// Rows a chart covers at the default row height (20 px).
const CHART_ROWS: u32 = 18;
/// Sized for A4 landscape at 100%: the whole chart fits one printed page.
const CHART_WIDTH: u32 = 760;
const CHART_HEIGHT: u32 = CHART_ROWS * 20;

/// Writes one comparison from `row`: a heading, the compared units' figures,
/// and their chart below them. Returns the first row after it; adds a page
/// break to `breaks` when the chart needs a page of its own.
fn comparison(
    ws: &mut Worksheet,
    summary: &Summary,
    indicator: &IndicatorInfo,
    (sheet, measure): (&str, Measure),
    (parent, children): (Option<&UnitRow>, &[&UnitRow]),
    (row, breaks): (u32, &mut Vec<u32>),
    f: &Formats,
) -> Result<u32, ReportError> {
    let group = Group::of(summary, &indicator.id);
    let who = match parent {
        Some(p) => format!("{}的下级单位", p.name),
        None => "各单位".to_owned(),
    };
    let what = match measure {
        Measure::Value => "",
        Measure::PerCapita => "（人均）",
        Measure::Completion => "（完成情况）",
    };
    let title = format!("{who}{what}：{}", indicator.header());
    ws.write_string_with_format(row, 0, &title, &f.subtitle)?;
    let heads = measure.heads(&group);
    ws.write_string_with_format(row + 1, 0, "单位", &f.header)?;
    for (c, h) in heads.iter().enumerate() {
        ws.write_string_with_format(row + 1, 1 + c as u16, *h, &f.header)?;
    }
    let first = row + 2;
    let default = IndicatorValue::default();
    for (r, unit) in children.iter().enumerate() {
        let at = first + r as u32;
        let cell = unit.values.get(&indicator.id).unwrap_or(&default);
        ws.write_string_with_format(at, 0, &unit.name, &f.text)?;
        match measure {
            Measure::Value => {
                value_cell(ws, at, 1, cell, f)?;
                number_cell(ws, at, 2, cell.previous, &f.number)?;
            }
            Measure::PerCapita => {
                let format = if cell.incomplete {
                    &f.incomplete
                } else {
                    &f.number
                };
                number_cell(ws, at, 1, cell.per_capita, format)?;
            }
            Measure::Completion => {
                let format = if cell.incomplete {
                    &f.ratio_incomplete
                } else {
                    &f.ratio
                };
                let done = cell.target.as_ref().and_then(|t| t.completion.or(t.ratio));
                number_cell(ws, at, 1, done, format)?;
                // The line is drawn only where the unit has a target.
                let line = cell.target.as_ref().map(|_| 1.0);
                number_cell(ws, at, 2, line, &f.ratio)?;
            }
        }
    }
    let last = first + children.len() as u32 - 1;
    let mut chart = Chart::new(ChartType::Column);
    chart
        .title()
        .set_name(&format!("{title}（{}）", summary.period.label));
    let charted = match measure {
        Measure::Value => 2,
        _ => 1,
    };
    for c in 0..charted {
        let col = 1 + c as u16;
        chart
            .add_series()
            .set_name((sheet, row + 1, col))
            .set_categories((sheet, first, 0, last, 0))
            .set_values((sheet, first, col, last, col));
    }
    if measure == Measure::Completion {
        chart.y_axis().set_num_format("0%");
        let mut target = Chart::new(ChartType::Line);
        target
            .add_series()
            .set_name((sheet, row + 1, 2))
            .set_categories((sheet, first, 0, last, 0))
            .set_values((sheet, first, 2, last, 2));
        chart.combine(&target);
    }
    chart.legend().set_position(ChartLegendPosition::Bottom);
    chart.set_width(CHART_WIDTH).set_height(CHART_HEIGHT);
    let chart_row = last + 2;
    // A long list and its chart would not share a page: the chart gets its own.
    if children.len() as u32 + 3 + CHART_ROWS > PAGE_ROWS {
        breaks.push(chart_row);
    }
    ws.insert_chart(chart_row, 0, &chart)?;
    Ok(chart_row + CHART_ROWS + 2)
}

/// Rows of default height (15 pt) that one A4 landscape page holds at 100%
/// within the margins of [`print_setup`] (595 pt less 2 × 0.7 in), less
/// the repeated header row. A chart is 760 px wide, less than the page's
/// 784 pt, so fitting to the page width never shrinks these sheets.
const PAGE_ROWS: u32 = 32;

/// The page setup every sheet gets: A4 landscape, as wide as one page and as
/// long as it needs, `repeat` (header rows, 0-based inclusive) on every
/// page, the report and the sheet in the page header and the page number in
/// the footer.
fn print_setup(
    ws: &mut Worksheet,
    summary: &Summary,
    sheet: &str,
    repeat: Option<(u32, u32)>,
) -> Result<(), ReportError> {
    // `&` starts a control code in Excel's header and footer strings.
    let escape = |s: &str| s.replace('&', "&&");
    let p = &summary.period;
    ws.set_landscape()
        .set_paper_size(9)
        .set_print_fit_to_pages(1, 0)
        .set_print_center_horizontally(true)
        .set_margins(0.4, 0.4, 0.7, 0.7, 0.3, 0.3)
        .set_header(format!(
            "&L{}&R{}",
            escape(&format!("{} 统计表（{} 至 {}）", p.label, p.start, p.end)),
            escape(sheet)
        ))
        .set_footer("&C第 &P 页，共 &N 页");
    if let Some((first, last)) = repeat {
        ws.set_repeat_rows(first, last)?;
    }
    Ok(())
}

fn sources_sheet(summary: &Summary, f: &Formats) -> Result<Worksheet, ReportError> {
    let mut ws = Worksheet::new();
    ws.set_name(SOURCES_SHEET)?;
    ws.write_string_with_format(0, 0, period_line(summary), &f.title)?;
    ws.write_string_with_format(1, 0, sources_line(summary), &f.subtitle)?;
    let heads = ["来源", "数据完整", "失败次数", "最近成功"];
    let mut widths = Widths::default();
    for (c, h) in heads.iter().enumerate() {
        ws.write_string_with_format(2, c as u16, *h, &f.header)?;
        widths.fit_width(c as u16, display_width(h).max(10));
    }
    for (r, source) in summary.sources.iter().enumerate() {
        let row = 3 + r as u32;
        ws.write_string_with_format(row, 0, &source.id, &f.text)?;
        widths.fit(0, &source.id);
        let (complete, format) = if source.complete {
            ("是", &f.text)
        } else {
            ("否", &f.missing)
        };
        ws.write_string_with_format(row, 1, complete, format)?;
        ws.write_number_with_format(row, 2, source.failed_runs as f64, &f.number)?;
        let last = source.last_success.as_deref().unwrap_or("从未成功");
        ws.write_string_with_format(row, 3, last, &f.text)?;
        widths.fit(3, last);
    }
    if summary.sources.is_empty() {
        ws.write_string_with_format(3, 0, "（本表没有数据来源）", &f.subtitle)?;
    }
    ws.set_freeze_panes(3, 0)?;
    widths.apply(&mut ws)?;
    print_setup(&mut ws, summary, SOURCES_SHEET, Some((2, 2)))?;
    Ok(ws)
}

/// A sheet name Excel accepts: at most 31 characters, none of `[]:*?/\`,
/// no apostrophe at either end, unique among `used` ignoring case.
pub(crate) fn sheet_name(name: &str, fallback: &str, used: &[String]) -> String {
    let clean = |s: &str| -> String {
        let s: String = s
            .chars()
            .filter(|c| !matches!(c, '[' | ']' | ':' | '*' | '?' | '/' | '\\'))
            .collect();
        s.trim().trim_matches('\'').trim().to_owned()
    };
    let mut base = clean(name);
    if base.is_empty() {
        base = clean(fallback);
    }
    if base.is_empty() {
        base = "指标".to_owned();
    }
    let taken = |s: &str| used.iter().any(|u| u.to_lowercase() == s.to_lowercase());
    for n in 1.. {
        let suffix = if n == 1 {
            String::new()
        } else {
            format!("({n})")
        };
        // Excel counts UTF-16 units; Chinese characters are one each.
        let mut candidate = String::new();
        let mut units = 0;
        for c in base.chars() {
            if units + c.len_utf16() + suffix.len() > 31 {
                break;
            }
            units += c.len_utf16();
            candidate.push(c);
        }
        let candidate = format!("{}{suffix}", candidate.trim_end_matches('\''));
        if !taken(&candidate) {
            return candidate;
        }
    }
    unreachable!("some suffix is free")
}

/// Columns wide enough for their longest text, Chinese characters counting
/// double as they do on screen.
#[derive(Default)]
struct Widths(Vec<usize>);

impl Widths {
    fn fit(&mut self, col: u16, text: &str) {
        self.fit_width(col, display_width(text));
    }

    fn fit_width(&mut self, col: u16, width: usize) {
        let col = usize::from(col);
        if self.0.len() <= col {
            self.0.resize(col + 1, 0);
        }
        self.0[col] = self.0[col].max(width);
    }

    fn apply(&self, ws: &mut Worksheet) -> Result<(), ReportError> {
        for (col, &w) in self.0.iter().enumerate() {
            let width = (w + 2).clamp(8, 60);
            ws.set_column_width(col as u16, width as f64)?;
        }
        Ok(())
    }
}

fn display_width(s: &str) -> usize {
    s.chars().map(|c| if c.is_ascii() { 1 } else { 2 }).sum()
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Read};

    use calamine::{Data, Reader, Xlsx, open_workbook_from_rs};
    use chrono::NaiveDate;

    use super::*;
    use crate::summary::{PeriodInfo, SourceInfo, TargetStatus, UnitRow, Values};
    use tally_domain::Kind;

    fn value(value: Option<f64>, previous: Option<f64>) -> IndicatorValue {
        IndicatorValue {
            value,
            previous,
            ..IndicatorValue::default()
        }
    }

    fn unit(id: &str, name: &str, depth: usize, values: Vec<(&str, IndicatorValue)>) -> UnitRow {
        UnitRow {
            id: id.to_owned(),
            name: name.to_owned(),
            parent: id.rsplit_once('/').map(|(p, _)| p.to_owned()),
            depth,
            headcount: None,
            subtree_headcount: None,
            values: Values(values.into_iter().map(|(i, v)| (i.into(), v)).collect()),
        }
    }

    /// Two indicators; xuexi_points has a per-entity target; 教育局 did not
    /// report its posts, so 某县's are incomplete.
    fn sample() -> Summary {
        let target = |met: u64, total: u64, ratio: f64| TargetStatus {
            per: Per::Entity,
            min: 7000.0,
            completion: None,
            met: Some(met),
            total: Some(total),
            ratio: Some(ratio),
        };
        let points = |v: f64, met, total, ratio| IndicatorValue {
            target: Some(target(met, total, ratio)),
            ..value(Some(v), Some(v - 100.0))
        };
        Summary {
            period: PeriodInfo {
                label: "2026-Q3".to_owned(),
                start: NaiveDate::from_ymd_opt(2026, 7, 1).unwrap(),
                end: NaiveDate::from_ymd_opt(2026, 9, 30).unwrap(),
                timezone: "Asia/Shanghai".to_owned(),
                complete: false,
                ended: true,
                sources_complete: false,
                units_complete: false,
            },
            generated_at: "2026-10-01T02:00:00+08:00".to_owned(),
            indicators: vec![
                IndicatorInfo {
                    id: "wechat_posts".to_owned(),
                    name: "微信公众号发文数".to_owned(),
                    kind: Kind::Count,
                    unit: "篇".to_owned(),
                },
                IndicatorInfo {
                    id: "xuexi_points".to_owned(),
                    name: "学习积分".to_owned(),
                    kind: Kind::Level,
                    unit: "分".to_owned(),
                },
            ],
            units: vec![
                unit(
                    "county",
                    "某县",
                    0,
                    vec![
                        (
                            "wechat_posts",
                            IndicatorValue {
                                incomplete: true,
                                incomplete_because: Some(Because::Units),
                                ..value(Some(18.0), Some(12.0))
                            },
                        ),
                        ("xuexi_points", points(8800.0, 1, 3, 1.0 / 3.0)),
                    ],
                ),
                unit(
                    "county/edu",
                    "教育局",
                    1,
                    vec![
                        (
                            "wechat_posts",
                            IndicatorValue {
                                missing: true,
                                incomplete: true,
                                incomplete_because: Some(Because::Sources),
                                ..value(None, Some(6.0))
                            },
                        ),
                        ("xuexi_points", points(3000.0, 0, 1, 0.0)),
                    ],
                ),
                unit(
                    "county/natres",
                    "自然资源局",
                    1,
                    vec![
                        ("wechat_posts", value(Some(18.0), Some(6.0))),
                        ("xuexi_points", points(5800.0, 1, 2, 0.5)),
                    ],
                ),
            ],
            sources: vec![
                SourceInfo {
                    id: "natres-wechat".to_owned(),
                    complete: true,
                    failed_runs: 0,
                    last_success: Some("2026-09-30T02:30:04+08:00".to_owned()),
                },
                SourceInfo {
                    id: "edu-wechat".to_owned(),
                    complete: false,
                    failed_runs: 3,
                    last_success: None,
                },
            ],
        }
    }

    fn read(bytes: &[u8]) -> Xlsx<Cursor<Vec<u8>>> {
        open_workbook_from_rs(Cursor::new(bytes.to_vec())).expect("a valid xlsx")
    }

    fn zip_entry(bytes: &[u8], name: &str) -> Option<String> {
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).expect("an xlsx is a zip");
        let mut file = zip.by_name(name).ok()?;
        let mut text = String::new();
        file.read_to_string(&mut text).ok()?;
        Some(text)
    }

    #[test]
    fn the_table_has_named_headers_numeric_cells_and_marks() {
        let bytes = to_xlsx(&sample()).unwrap();
        let mut wb = read(&bytes);
        assert_eq!(
            wb.sheet_names(),
            ["统计表", "微信公众号发文数", "学习积分", "数据来源"]
        );
        let t = wb.worksheet_range("统计表").unwrap();
        let at = |r: u32, c: u32| t.get_value((r, c)).cloned().unwrap_or(Data::Empty);
        let s = |v: &str| Data::String(v.to_owned());
        assert_eq!(
            at(0, 0),
            s("2026-Q3 统计表（2026-07-01 至 2026-09-30，时区 Asia/Shanghai）")
        );
        // Two status rows, each saying what it speaks of: the sources
        // (edu-wechat has a gap), then the units (教育局 did not report).
        assert_eq!(
            at(1, 0),
            s(
                "数据来源不完整：2 个数据源中有 1 个在本期缺数或失败（见「数据来源」），它们覆盖的数值可能偏低；生成于 2026-10-01T02:00:00+08:00"
            )
        );
        assert_eq!(
            at(2, 0),
            s("报送单位不完整：教育局 有指标未报送（灰色空格），其上级的合计标为数据不完整")
        );
        // Row 3: indicator headers over their groups; row 4: sub-headers.
        assert_eq!(at(3, 0), s("单位"));
        assert_eq!(at(3, 1), s("微信公众号发文数(篇)"));
        assert_eq!(at(3, 3), s("学习积分(分)"));
        let subs: Vec<Data> = (1..=8).map(|c| at(4, c)).collect();
        assert_eq!(
            subs,
            [
                "本期",
                "上期",
                "本期",
                "上期",
                "每人目标",
                "达标人数",
                "人数",
                "达标率"
            ]
            .map(s)
        );
        assert_eq!(at(3, 9), s("备注"));
        assert_eq!(at(3, 10), s("单位代码"));
        // Units in tree order, numbers as numbers.
        assert_eq!(at(5, 0), s("某县"));
        assert_eq!(at(5, 1), Data::Float(18.0));
        assert_eq!(at(5, 2), Data::Float(12.0));
        assert_eq!(at(5, 3), Data::Float(8800.0));
        assert_eq!(at(5, 4), Data::Float(8700.0));
        assert_eq!(at(5, 5), Data::Float(7000.0));
        assert_eq!(at(5, 6), Data::Float(1.0));
        assert_eq!(at(5, 7), Data::Float(3.0));
        assert_eq!(at(5, 8), Data::Float(1.0 / 3.0));
        assert_eq!(
            at(5, 9),
            s("微信公众号发文数: 数据不完整（下级单位未报送）")
        );
        assert_eq!(at(5, 10), s("county"));
        // 未报送: an empty value cell, said in the notes column.
        assert_eq!(at(6, 0), s("教育局"));
        assert_eq!(at(6, 1), Data::Empty);
        assert_eq!(at(6, 2), Data::Float(6.0));
        assert_eq!(at(6, 9), s("微信公众号发文数: 未报送"));
        assert_eq!(at(7, 9), Data::Empty);
        assert_eq!(at(7, 10), s("county/natres"));

        // The marks are cell notes too, and the header is frozen.
        let comments = zip_entry(&bytes, "xl/comments1.xml").expect("notes on 统计表");
        assert!(comments.contains("未报送"), "{comments}");
        assert!(comments.contains("下级单位有未报送"), "{comments}");
        let sheet = zip_entry(&bytes, "xl/worksheets/sheet1.xml").unwrap();
        assert!(
            sheet.contains(r#"topLeftCell="B6""#),
            "frozen at B6: {sheet}"
        );
        // Child units are indented: a format with indent="1" exists.
        let styles = zip_entry(&bytes, "xl/styles.xml").unwrap();
        assert!(styles.contains(r#"indent="1""#), "{styles}");
    }

    /// The case that read 数据完整 over cells marked 数据不完整: every source
    /// collected every day, yet a unit did not report.
    #[test]
    fn the_status_rows_speak_of_sources_and_of_units_separately() {
        let lines = |summary: &Summary| {
            let bytes = to_xlsx(summary).unwrap();
            let mut wb = read(&bytes);
            let t = wb.worksheet_range("统计表").unwrap();
            let src = wb.worksheet_range("数据来源").unwrap();
            let text = |r: &calamine::Range<Data>, row: u32| match r.get_value((row, 0)) {
                Some(Data::String(v)) => v.clone(),
                other => panic!("row {row}: {other:?}"),
            };
            (text(&t, 1), text(&t, 2), text(&src, 1))
        };
        let mut sources_whole = sample();
        sources_whole.sources[1].complete = true;
        sources_whole.period.sources_complete = true;
        sources_whole.period.complete = true;
        let (sources, units, on_sources_sheet) = lines(&sources_whole);
        assert_eq!(
            sources,
            "数据来源完整：2 个数据源在本期每一天都已采集，没有失败（见「数据来源」）；生成于 2026-10-01T02:00:00+08:00"
        );
        assert_eq!(
            units,
            "报送单位不完整：教育局 有指标未报送（灰色空格），其上级的合计标为数据不完整"
        );
        assert_eq!(on_sources_sheet, sources);

        // Nobody missing, nothing missed, but the quarter is still running.
        let mut running = sources_whole.clone();
        running.period.ended = false;
        running.period.complete = false;
        running.period.units_complete = true;
        for unit in &mut running.units {
            for (_, cell) in &mut unit.values.0 {
                (cell.missing, cell.incomplete, cell.incomplete_because) = (false, false, None);
            }
        }
        let (sources, units, _) = lines(&running);
        assert!(
            sources.starts_with(
                "数据来源截至今天完整：统计期尚未结束，2 个数据源在本期每一天都已采集"
            ),
            "{sources}"
        );
        assert_eq!(
            units,
            "报送单位完整：数据源覆盖的单位在本期都有数据，没有未报送"
        );

        // The unit that did not report is below the rows shown.
        let mut shallow = sample();
        shallow.units.truncate(1);
        let (_, units, _) = lines(&shallow);
        assert_eq!(
            units,
            "报送单位不完整：表中所列单位以下有单位未报送，其上级的合计标为数据不完整"
        );
    }

    #[test]
    fn every_indicator_sheet_has_its_values_and_a_chart_with_the_target() {
        let bytes = to_xlsx(&sample()).unwrap();
        let mut wb = read(&bytes);
        let posts = wb.worksheet_range("微信公众号发文数").unwrap();
        assert_eq!(
            posts.get_value((1, 0)),
            Some(&Data::String("单位".to_owned()))
        );
        assert_eq!(posts.get_value((4, 1)), Some(&Data::Float(18.0)));
        let points = wb.worksheet_range("学习积分").unwrap();
        assert_eq!(
            points.get_value((1, 3)),
            Some(&Data::String("目标".to_owned()))
        );
        // Per entity: the unit's line is 7000 per head times its people.
        assert_eq!(points.get_value((2, 3)), Some(&Data::Float(21000.0)));
        assert_eq!(points.get_value((4, 3)), Some(&Data::Float(14000.0)));

        // calamine does not read charts: look into the package.
        for (n, sheet) in [(1, "微信公众号发文数"), (2, "学习积分")] {
            let chart = zip_entry(&bytes, &format!("xl/charts/chart{n}.xml"))
                .unwrap_or_else(|| panic!("chart{n}.xml for {sheet}"));
            assert!(chart.contains("<c:barChart>"), "{chart}");
            assert!(chart.contains(sheet), "chart {n} reads {sheet}: {chart}");
            let rels = zip_entry(&bytes, &format!("xl/drawings/_rels/drawing{n}.xml.rels"))
                .unwrap_or_else(|| panic!("drawing{n} for {sheet}"));
            assert!(rels.contains(&format!("../charts/chart{n}.xml")), "{rels}");
        }
        let posts_chart = zip_entry(&bytes, "xl/charts/chart1.xml").unwrap();
        assert!(!posts_chart.contains("<c:lineChart>"), "no target, no line");
        let points_chart = zip_entry(&bytes, "xl/charts/chart2.xml").unwrap();
        assert!(points_chart.contains("<c:lineChart>"), "{points_chart}");
        assert!(points_chart.contains("目标"), "{points_chart}");
    }

    #[test]
    fn the_sources_sheet_says_what_is_behind_the_table() {
        let bytes = to_xlsx(&sample()).unwrap();
        let mut wb = read(&bytes);
        let src = wb.worksheet_range("数据来源").unwrap();
        let row = |r: u32| -> Vec<Data> {
            (0..4)
                .map(|c| src.get_value((r, c)).cloned().unwrap_or(Data::Empty))
                .collect()
        };
        let s = |v: &str| Data::String(v.to_owned());
        assert_eq!(row(2), ["来源", "数据完整", "失败次数", "最近成功"].map(s));
        assert_eq!(
            row(3),
            [
                s("natres-wechat"),
                s("是"),
                Data::Float(0.0),
                s("2026-09-30T02:30:04+08:00")
            ]
        );
        assert_eq!(
            row(4),
            [s("edu-wechat"), s("否"), Data::Float(3.0), s("从未成功")]
        );
    }

    #[test]
    fn an_empty_summary_still_makes_a_workbook() {
        let mut empty = sample();
        empty.units.clear();
        empty.sources.clear();
        let bytes = to_xlsx(&empty).unwrap();
        let wb = read(&bytes);
        assert_eq!(wb.sheet_names().len(), 4);
        assert!(zip_entry(&bytes, "xl/charts/chart1.xml").is_none());
    }

    #[test]
    fn sheet_names_excel_accepts() {
        let used = vec!["统计表".to_owned(), "数据来源".to_owned()];
        assert_eq!(sheet_name("学习积分", "x", &used), "学习积分");
        assert_eq!(sheet_name("a[b]:c*d?e/f\\g", "x", &used), "abcdefg");
        assert_eq!(sheet_name("'引号'", "x", &used), "引号");
        assert_eq!(sheet_name("统计表", "x", &used), "统计表(2)");
        assert_eq!(sheet_name("DATA", "x", &["data".to_owned()]), "DATA(2)");
        assert_eq!(sheet_name("[]", "posts", &used), "posts");
        let long = "很".repeat(40);
        assert_eq!(sheet_name(&long, "x", &used).chars().count(), 31);
        let taken = vec!["很".repeat(31)];
        assert_eq!(
            sheet_name(&long, "x", &taken),
            format!("{}(2)", "很".repeat(28))
        );
    }

    /// A county and ten departments, the first with two offices below it:
    /// posts (no target), points with a per-unit target, staff per capita.
    fn county() -> Summary {
        let mut s = sample();
        s.indicators.push(IndicatorInfo {
            id: "staff_posts".to_owned(),
            name: "人均发文".to_owned(),
            kind: Kind::Count,
            unit: "篇".to_owned(),
        });
        let cell = |v: f64, min: f64| {
            vec![
                ("wechat_posts", value(Some(v), Some(v - 1.0))),
                (
                    "xuexi_points",
                    IndicatorValue {
                        target: Some(TargetStatus {
                            per: Per::Unit,
                            min,
                            completion: Some(v / min),
                            met: None,
                            total: None,
                            ratio: None,
                        }),
                        ..value(Some(v), None)
                    },
                ),
                (
                    "staff_posts",
                    IndicatorValue {
                        per_capita: Some(v / 10.0),
                        ..value(Some(v), None)
                    },
                ),
            ]
        };
        let mut units = vec![unit("county", "某县", 0, cell(288_089.0, 200_000.0))];
        for d in 1..=10 {
            let id = format!("county/d{d:02}");
            units.push(unit(
                &id,
                &format!("部门{d:02}"),
                1,
                cell(27_000.0 + d as f64, 20_000.0),
            ));
            if d == 1 {
                for o in 1..=2 {
                    let id = format!("{id}/o{o}");
                    units.push(unit(&id, &format!("科室{o}"), 2, cell(13_000.0, 10_000.0)));
                }
            }
        }
        s.units = units;
        s
    }

    /// Each chart of a sheet: its category names and its series names.
    fn charts_of(bytes: &[u8]) -> Vec<(String, Vec<String>, Vec<String>)> {
        let between = |text: &str, open: &str, close: &str| -> Vec<String> {
            text.split(open)
                .skip(1)
                .filter_map(|t| t.split_once(close).map(|(v, _)| v.to_owned()))
                .collect()
        };
        (1..)
            .map_while(|n| zip_entry(bytes, &format!("xl/charts/chart{n}.xml")))
            .map(|chart| {
                let categories = between(&chart, "<c:cat>", "</c:cat>")
                    .first()
                    .map(|cat| between(cat, "<c:v>", "</c:v>"))
                    .unwrap_or_default();
                let series = between(&chart, "<c:tx>", "</c:tx>")
                    .iter()
                    .flat_map(|tx| between(tx, "<c:v>", "</c:v>"))
                    .collect();
                (chart, categories, series)
            })
            .collect()
    }

    #[test]
    fn every_sheet_prints_landscape_one_page_wide_with_its_header_rows() {
        let bytes = to_xlsx(&county()).unwrap();
        for n in 1..=5 {
            let sheet = zip_entry(&bytes, &format!("xl/worksheets/sheet{n}.xml")).unwrap();
            assert!(
                sheet.contains(r#"<sheetPr><pageSetUpPr fitToPage="1"/>"#),
                "sheet{n}: {sheet}"
            );
            // fitToWidth="1" is the schema's default, so it is left out.
            assert!(
                sheet.contains(
                    r#"<pageSetup paperSize="9" fitToHeight="0" orientation="landscape""#
                ),
                "sheet{n}: {}",
                &sheet[sheet.find("<pageSetup").unwrap_or(0)..]
            );
            assert!(!sheet.contains("fitToWidth"), "one page wide: {sheet}");
            assert!(sheet.contains("<oddFooter>&amp;C第 &amp;P 页，共 &amp;N 页</oddFooter>"));
            assert!(
                sheet.contains("<oddHeader>&amp;L2026-Q3 统计表（2026-07-01 至 2026-09-30）&amp;R")
            );
        }
        let workbook = zip_entry(&bytes, "xl/workbook.xml").unwrap();
        for titles in [
            r#"<definedName name="_xlnm.Print_Titles" localSheetId="0">统计表!$4:$5</definedName>"#,
            r#"<definedName name="_xlnm.Print_Titles" localSheetId="1">微信公众号发文数!$2:$2</definedName>"#,
            r#"<definedName name="_xlnm.Print_Titles" localSheetId="4">数据来源!$3:$3</definedName>"#,
        ] {
            assert!(workbook.contains(titles), "{titles} in {workbook}");
        }
    }

    #[test]
    fn a_chart_compares_the_children_of_one_unit_never_a_total_with_its_parts() {
        let bytes = to_xlsx(&county()).unwrap();
        let charts = charts_of(&bytes);
        // Per indicator sheet: the county's ten departments, then the two
        // offices of 部门01; nobody beside their own parent.
        assert_eq!(charts.len(), 6, "two charts on each of three sheets");
        let departments: Vec<String> = (1..=10).map(|d| format!("部门{d:02}")).collect();
        let offices = vec!["科室1".to_owned(), "科室2".to_owned()];
        for (n, (chart, categories, series)) in charts.iter().enumerate() {
            let expected = if n % 2 == 0 { &departments } else { &offices };
            assert_eq!(categories, expected, "chart{}", n + 1);
            assert!(
                !chart.contains("某县<"),
                "no county total in chart{}",
                n + 1
            );
            assert!(chart.contains("<c:barChart>"), "{chart}");
            match n / 2 {
                // No target: this period and the previous, as counts.
                0 => {
                    assert_eq!(series, &["本期", "上期"]);
                    assert!(!chart.contains("<c:lineChart>"));
                }
                // A per-unit target: completion against a 100% line.
                1 => {
                    assert_eq!(series, &["完成率", "目标"]);
                    assert!(chart.contains("<c:lineChart>"), "{chart}");
                    assert!(chart.contains(r#"formatCode="0%""#), "{chart}");
                }
                // per_capita: the units' per-head values.
                _ => {
                    assert_eq!(series, &["本期人均"]);
                    assert!(!chart.contains("<c:lineChart>"));
                }
            }
        }
        // The figures behind the chart are in the sheet, as percentages.
        let mut wb = read(&bytes);
        let points = wb.worksheet_range("学习积分").unwrap();
        let row = (0..200u32)
            .find(|&r| points.get_value((r, 0)) == Some(&Data::String("部门02".to_owned())))
            .and_then(|first| {
                (first + 1..200)
                    .find(|&r| points.get_value((r, 0)) == Some(&Data::String("部门02".to_owned())))
            })
            .expect("部门02 in the table and in the comparison");
        assert_eq!(
            points.get_value((row, 1)),
            Some(&Data::Float(27_002.0 / 20_000.0))
        );
        assert_eq!(points.get_value((row, 2)), Some(&Data::Float(1.0)));
    }

    #[test]
    fn each_comparison_starts_a_printed_page() {
        let bytes = to_xlsx(&county()).unwrap();
        let sheet = zip_entry(&bytes, "xl/worksheets/sheet2.xml").unwrap();
        // The table (title, header, 13 units) ends on row 15; the ten
        // departments and their chart fill the page from row 17 (break
        // after 16), the offices' comparison starts a page after them.
        let breaks = &sheet[sheet.find("<rowBreaks").expect("page breaks")..];
        assert!(
            breaks.starts_with(
                r#"<rowBreaks count="2" manualBreakCount="2"><brk id="16" max="16383" man="1"/><brk id="49" max="16383" man="1"/></rowBreaks>"#
            ),
            "{breaks}"
        );
        let drawing = zip_entry(&bytes, "xl/drawings/drawing1.xml").unwrap();
        // Both charts start in column A, so the page is no wider than one chart.
        assert_eq!(
            drawing.matches("<xdr:col>0</xdr:col>").count(),
            2,
            "{drawing}"
        );
    }

    /// Prints the county's workbook for real: LibreOffice converts it to PDF
    /// and the pages are counted. One page per sheet's table (so nothing
    /// spills to the right) and one per comparison (so no chart is cut).
    #[test]
    // A test finds the tool it runs on PATH and asks whether it runs in CI.
    #[allow(clippy::disallowed_methods)]
    fn the_county_workbook_prints_on_a_page_per_table_and_per_chart() {
        let Some(soffice) = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("soffice"))
                .find(|path| path.is_file())
        }) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "soffice is missing in CI: .ci/run must install Debian's libreoffice-calc-nogui"
            );
            eprintln!("soffice not installed: skipping the printed page count (CI installs it)");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let xlsx = dir.path().join("county.xlsx");
        std::fs::write(&xlsx, to_xlsx(&county()).unwrap()).unwrap();
        // Its own profile: a second LibreOffice would otherwise wait on the
        // user's, and the tests run in parallel with other processes.
        let profile = format!(
            "-env:UserInstallation=file://{}/profile",
            dir.path().display()
        );
        let out = std::process::Command::new(soffice)
            .arg(profile)
            .args(["--headless", "--convert-to", "pdf", "--outdir"])
            .arg(dir.path())
            .arg(&xlsx)
            .output()
            .unwrap();
        let pdf = std::fs::read(dir.path().join("county.pdf")).unwrap_or_else(|e| {
            panic!(
                "no PDF ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let pdf = String::from_utf8_lossy(&pdf);
        let pages = pdf
            .match_indices("/Type/Page")
            .filter(|(at, _)| !pdf[at + "/Type/Page".len()..].starts_with('s'))
            .count();
        // 统计表 1, three indicator sheets × (table, departments, offices), 数据来源 1.
        assert_eq!(pages, 1 + 3 * 3 + 1);
    }

    #[test]
    fn display_width_counts_chinese_double() {
        assert_eq!(display_width("微信公众号发文数(篇)"), 20);
        assert_eq!(display_width("county"), 6);
    }
}
