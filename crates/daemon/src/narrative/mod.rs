//! The 情况报告: the quarterly report in prose that units hand in, drafted
//! from the [`Summary`] of a unit and a period through a template the
//! operator can edit (`[reports] narrative_template`, minijinja syntax; the
//! default one is `config/narrative.md.j2`, built into the binary).
//!
//! The template writes a small Markdown: `# ` the title, `## ` a section
//! heading, paragraphs between blank lines (lines of one paragraph are
//! joined), a line starting a list item (`1. `, `- `) a paragraph of its
//! own. That text becomes a [`Draft`] of blocks, rendered as Markdown
//! ([`Draft::to_markdown`]), DOCX ([`Draft::to_docx`]) and the page
//! `GET /report`, each followed by the table of the unit's figures.
//!
//! Every figure comes from the summary, with its mark: a figure that is
//! incomplete or missing is never written as a bare number
//! (`107篇（不完整：2个下级单位未报送）`, `未报送`), and the figures derived
//! from it (change, per capita, completion) say `（不完整）` too.

mod docx;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, NaiveDate};
use minijinja::value::Serde;
use serde::Serialize;
use thiserror::Error;

use crate::summary::{Because, IndicatorValue, Summary, UnitRow, format_number};
use tally_config::{Config, Per, TargetConfig, TargetPeriod};
use tally_domain::period::{Period, PeriodKind};

/// The default template: what the report units hand in looks like.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../../../config/narrative.md.j2");

/// How the default template is named in error messages.
const DEFAULT_NAME: &str = "config/narrative.md.j2 (built in)";

#[derive(Debug, Error)]
pub enum NarrativeError {
    /// The template failed while rendering (a filter given the wrong value,
    /// an attribute of an undefined value): `FILE:LINE: …`.
    #[error("cannot render the 情况报告 template: {0}")]
    Template(String),
    #[error("cannot build the docx report: {0}")]
    Docx(String),
}

/// A template with the targets of the configuration (whose yearly goal, such
/// as 7000 points, the summary does not carry): what drafts a report.
#[derive(Debug, Clone)]
pub struct Narrative {
    name: String,
    source: String,
    targets: Vec<TargetConfig>,
}

impl Default for Narrative {
    /// The default template, without targets.
    fn default() -> Narrative {
        Narrative {
            name: DEFAULT_NAME.to_owned(),
            source: DEFAULT_TEMPLATE.to_owned(),
            targets: Vec::new(),
        }
    }
}

impl Narrative {
    /// The template of `[reports] narrative_template` (checked when the
    /// configuration loaded) or the default one, and the configured targets.
    pub fn from_config(config: &Config) -> Narrative {
        let (name, source) = match &config.reports.narrative_template {
            Some(t) => (t.path.display().to_string(), t.source.clone()),
            None => (DEFAULT_NAME.to_owned(), DEFAULT_TEMPLATE.to_owned()),
        };
        Narrative {
            name,
            source,
            targets: config.targets.clone(),
        }
    }

    /// Drafts the report of each unit at the top of `summary` (the unit
    /// asked for, or every root), one after the other.
    pub fn draft(&self, summary: &Summary) -> Result<Draft, NarrativeError> {
        let mut env = minijinja::Environment::new();
        // Tags alone on their line leave no blank line behind, so that the
        // paragraphs are where the template's text puts them.
        env.set_syntax(tally_config::template_syntax());
        env.add_template(&self.name, &self.source)
            .map_err(|e| NarrativeError::Template(tally_config::template_error(&self.name, &e)))?;
        let template = env
            .get_template(&self.name)
            .map_err(|e| NarrativeError::Template(tally_config::template_error(&self.name, &e)))?;
        let period = PeriodContext::of(summary);
        let top = summary.units.iter().map(|u| u.depth).min().unwrap_or(0);
        let mut reports = Vec::new();
        for (row, unit) in summary.units.iter().enumerate() {
            if unit.depth != top {
                continue;
            }
            let figures = self.figures(summary, row);
            let targets: Vec<&Figure> = figures.iter().filter(|f| f.target.is_some()).collect();
            let by_id: BTreeMap<&str, &Figure> =
                figures.iter().map(|f| (f.id.as_str(), f)).collect();
            let text = template
                .render(minijinja::context! {
                    unit => Serde(UnitContext {
                        id: &unit.id,
                        name: &unit.name,
                        headcount: unit.headcount,
                        staff: unit.subtree_headcount,
                    }),
                    period => Serde(&period),
                    f => Serde(by_id),
                    figures => Serde(&figures),
                    targets => Serde(targets),
                    generated_at => &summary.generated_at,
                })
                .map_err(|e| {
                    NarrativeError::Template(tally_config::template_error(&self.name, &e))
                })?;
            reports.push(UnitReport {
                unit_id: unit.id.clone(),
                unit_name: unit.name.clone(),
                blocks: blocks(&text),
                figures: figures
                    .iter()
                    .filter(|f| {
                        f.value.is_some() || f.missing || f.incomplete || f.target.is_some()
                    })
                    .map(FigureRow::of)
                    .collect(),
            });
        }
        Ok(Draft {
            period: summary.period.label.clone(),
            reports,
        })
    }

    /// Every indicator of `summary` at the unit of row `row`.
    fn figures(&self, summary: &Summary, row: usize) -> Vec<Figure> {
        let unit = &summary.units[row];
        summary
            .indicators
            .iter()
            .zip(&unit.values.0)
            .enumerate()
            .map(|(i, (ind, (_, cell)))| {
                let missing_below = missing_below(summary, row, i);
                let goal = self.goal(&ind.id, &unit.id);
                Figure::of(&ind.id, &ind.name, &ind.unit, cell, missing_below, goal)
            })
            .collect()
    }

    /// The target of `indicator` that applies to `unit`, as configured: the
    /// first entry that lists the unit or lists none (as the summary picks it).
    fn goal(&self, indicator: &str, unit: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| {
            t.indicator == indicator
                && t.units
                    .as_ref()
                    .is_none_or(|units| units.iter().any(|u| u == unit))
        })
    }
}

/// The units below the unit of row `row` (in `summary`, preorder) that are
/// 未报送 for indicator `i` while their parent is not: how many units the
/// total misses. 0 when the summary does not show the units below.
fn missing_below(summary: &Summary, row: usize, i: usize) -> usize {
    let depth = summary.units[row].depth;
    let missing = |u: &UnitRow| u.values.0.get(i).is_some_and(|(_, c)| c.missing);
    let by_id: HashMap<&str, &UnitRow> = summary.units.iter().map(|u| (u.id.as_str(), u)).collect();
    summary.units[row + 1..]
        .iter()
        .take_while(|u| u.depth > depth)
        .filter(|u| {
            missing(u)
                && !u
                    .parent
                    .as_deref()
                    .and_then(|p| by_id.get(p))
                    .is_some_and(|p| missing(p))
        })
        .count()
}

#[derive(Serialize)]
struct UnitContext<'a> {
    id: &'a str,
    name: &'a str,
    headcount: Option<u32>,
    /// The headcounts of the unit's subtree added up.
    staff: Option<u32>,
}

/// `period` in the template.
#[derive(Debug, Serialize)]
struct PeriodContext {
    label: String,
    start: NaiveDate,
    end: NaiveDate,
    /// `2026年第三季度`, `2026年9月`, `2026年`, `2026年第48周`…
    name: String,
    /// `本季度`, `本月`, `本年`, `本周`, `本日`, `本期`.
    this: &'static str,
    /// `2026年9月30日`.
    end_name: String,
    year: i32,
    /// 1 to 4 for a quarter.
    quarter: Option<u32>,
    kind: &'static str,
    ended: bool,
    complete: bool,
    sources_complete: bool,
    units_complete: bool,
}

const CHINESE_DIGITS: [&str; 5] = ["〇", "一", "二", "三", "四"];

fn day_name(d: NaiveDate) -> String {
    format!("{}年{}月{}日", d.year(), d.month(), d.day())
}

impl PeriodContext {
    fn of(summary: &Summary) -> PeriodContext {
        let p = &summary.period;
        let kind = Period::parse(&p.label)
            .map(|period| period.kind)
            .unwrap_or(PeriodKind::Range);
        let quarter = (kind == PeriodKind::Quarter).then(|| p.start.month0() / 3 + 1);
        let (name, this) = match kind {
            PeriodKind::Quarter => (
                format!(
                    "{}年第{}季度",
                    p.start.year(),
                    CHINESE_DIGITS[quarter.unwrap_or(1) as usize]
                ),
                "本季度",
            ),
            PeriodKind::Month => (format!("{}年{}月", p.start.year(), p.start.month()), "本月"),
            PeriodKind::Year => (format!("{}年", p.start.year()), "本年"),
            PeriodKind::Week => (
                format!(
                    "{}年第{}周",
                    p.start.iso_week().year(),
                    p.start.iso_week().week()
                ),
                "本周",
            ),
            PeriodKind::Day => (day_name(p.start), "本日"),
            PeriodKind::Range => (
                format!("{}至{}", day_name(p.start), day_name(p.end)),
                "本期",
            ),
        };
        PeriodContext {
            label: p.label.clone(),
            start: p.start,
            end: p.end,
            name,
            this,
            end_name: day_name(p.end),
            year: p.end.year(),
            quarter,
            kind: kind.as_str(),
            ended: p.ended,
            complete: p.complete,
            sources_complete: p.sources_complete,
            units_complete: p.units_complete,
        }
    }
}

/// One indicator of the unit: `f.ID` and an entry of `figures` in the template.
#[derive(Debug, Clone, Serialize)]
struct Figure {
    id: String,
    name: String,
    /// The display unit: 篇, 条, 分.
    unit: String,
    value: Option<f64>,
    /// `107`, or empty without a value.
    number: String,
    /// `107篇`, `107篇（不完整：…）`, `未报送`, `无数据`: the figure as the
    /// text must show it.
    text: String,
    missing: bool,
    incomplete: bool,
    /// `未报送`, `不完整：…`; absent for a clean figure.
    note: Option<String>,
    previous: Option<f64>,
    previous_text: String,
    change: Option<f64>,
    /// `增加9篇`, `减少3篇`, `持平`; empty when unknown.
    change_text: String,
    /// `增长9.2%`, `下降3.1%`; empty when unknown.
    change_ratio_text: String,
    per_capita: Option<f64>,
    per_capita_text: String,
    target: Option<TargetFigure>,
}

#[derive(Debug, Clone, Serialize)]
struct TargetFigure {
    /// `unit` or `entity`.
    per: &'static str,
    /// The minimum for this period (derived from the goal, pro-rated).
    min: f64,
    min_text: String,
    completion: Option<f64>,
    completion_text: String,
    /// The unit reached its minimum; for a per-entity target, every entity did.
    reached: bool,
    met: Option<u64>,
    total: Option<u64>,
    unmet: Option<u64>,
    ratio: Option<f64>,
    ratio_text: String,
    /// Per-entity targets: the value shared out over the entities seen
    /// (学习强国人均积分).
    average: Option<f64>,
    average_text: String,
    /// The goal as configured (`min = 7000` of a yearly target).
    goal: Option<f64>,
    goal_text: String,
    /// `year`, `quarter`, `month`, `week`, `day`.
    goal_period: Option<&'static str>,
    /// `年度`, `季度`, `月度`, `每周`, `每日`.
    goal_period_name: &'static str,
}

fn percent(r: f64) -> String {
    format!("{}%", format_number(r * 100.0, 1))
}

impl Figure {
    fn of(
        id: &str,
        name: &str,
        unit: &str,
        cell: &IndicatorValue,
        missing_below: usize,
        goal: Option<&TargetConfig>,
    ) -> Figure {
        let with_unit = |v: f64, decimals: usize| format!("{}{unit}", format_number(v, decimals));
        let note = note(cell, missing_below);
        let text = if cell.missing {
            "未报送".to_owned()
        } else {
            let plain = cell
                .value
                .map(|v| with_unit(v, 2))
                .unwrap_or_else(|| "无数据".to_owned());
            match &note {
                Some(note) => format!("{plain}（{note}）"),
                None => plain,
            }
        };
        // A figure computed from an incomplete one is as incomplete.
        let derived = |s: String| {
            if s.is_empty() || !cell.incomplete {
                s
            } else {
                format!("{s}（不完整）")
            }
        };
        let change_text = derived(match cell.change {
            Some(c) if c > 0.0 => format!("增加{}", with_unit(c, 2)),
            Some(c) if c < 0.0 => format!("减少{}", with_unit(-c, 2)),
            Some(_) => "持平".to_owned(),
            None => String::new(),
        });
        let change_ratio_text = derived(match cell.change_ratio {
            Some(r) if r > 0.0 => format!("增长{}", percent(r)),
            Some(r) if r < 0.0 => format!("下降{}", percent(-r)),
            Some(_) => "持平".to_owned(),
            None => String::new(),
        });
        let target = cell.target.as_ref().map(|t| {
            let unmet = t
                .total
                .zip(t.met)
                .map(|(total, met)| total.saturating_sub(met));
            let average = match (t.per, cell.value, t.total) {
                (Per::Entity, Some(v), Some(n)) if n > 0 => Some(v / n as f64),
                _ => None,
            };
            let reached = match t.per {
                Per::Unit => t.completion.is_some_and(|c| c >= 1.0),
                Per::Entity => t.total.is_some_and(|n| n > 0) && unmet == Some(0),
            };
            let when_missing = |s: String| {
                if cell.missing {
                    "未报送".to_owned()
                } else {
                    s
                }
            };
            TargetFigure {
                per: t.per.as_str(),
                min: t.min,
                min_text: with_unit(t.min, 1),
                completion: t.completion,
                completion_text: when_missing(derived(
                    t.completion.map(percent).unwrap_or_default(),
                )),
                reached,
                met: t.met,
                total: t.total,
                unmet,
                ratio: t.ratio,
                ratio_text: when_missing(derived(t.ratio.map(percent).unwrap_or_default())),
                average,
                average_text: when_missing(derived(
                    average.map(|a| with_unit(a, 1)).unwrap_or_default(),
                )),
                goal: goal.map(|g| g.min),
                goal_text: goal.map(|g| with_unit(g.min, 2)).unwrap_or_default(),
                goal_period: goal.map(|g| g.period.as_str()),
                goal_period_name: match goal.map(|g| g.period) {
                    Some(TargetPeriod::Year) => "年度",
                    Some(TargetPeriod::Quarter) => "季度",
                    Some(TargetPeriod::Month) => "月度",
                    Some(TargetPeriod::Week) => "每周",
                    Some(TargetPeriod::Day) => "每日",
                    None => "",
                },
            }
        });
        Figure {
            id: id.to_owned(),
            name: name.to_owned(),
            unit: unit.to_owned(),
            value: cell.value,
            number: cell.value.map(|v| format_number(v, 2)).unwrap_or_default(),
            text,
            missing: cell.missing,
            incomplete: cell.incomplete,
            note,
            previous: cell.previous,
            previous_text: cell.previous.map(|v| with_unit(v, 2)).unwrap_or_default(),
            change: cell.change,
            change_text,
            change_ratio_text,
            per_capita: cell.per_capita,
            per_capita_text: derived(
                cell.per_capita
                    .map(|v| format!("人均{}", with_unit(v, 1)))
                    .unwrap_or_default(),
            ),
            target,
        }
    }
}

/// `未报送`, or `不完整：…` with why; `None` for a clean cell.
fn note(cell: &IndicatorValue, missing_below: usize) -> Option<String> {
    if cell.missing {
        return Some("未报送".to_owned());
    }
    let units = if missing_below > 0 {
        format!("{missing_below}个下级单位未报送")
    } else {
        "有下级单位未报送".to_owned()
    };
    let why = match cell.incomplete_because? {
        Because::Sources => "有数据来源缺数".to_owned(),
        Because::Units => units,
        Because::SourcesAndUnits => format!("有数据来源缺数，{units}"),
    };
    Some(format!("不完整：{why}"))
}

/// The reports of a summary's top units.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// The period label: `2026-Q3`.
    pub period: String,
    pub reports: Vec<UnitReport>,
}

/// One unit's report: the template's text as blocks, and its figures.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitReport {
    pub unit_id: String,
    pub unit_name: String,
    pub blocks: Vec<Block>,
    /// The indicators with a value, a mark or a target, for the table at the end.
    pub figures: Vec<FigureRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    Title(String),
    Heading(String),
    Paragraph(String),
}

/// A row of the table of figures that ends the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FigureRow {
    /// `微信公众号发文篇数(篇)`.
    pub indicator: String,
    /// The figure with its mark, as in the text.
    pub value: String,
    pub previous: String,
    /// The minimum for the period, empty without a target.
    pub target: String,
    /// `85%` (per unit) or `97/120（80.8%）` (per entity).
    pub standing: String,
}

impl FigureRow {
    fn of(f: &Figure) -> FigureRow {
        FigureRow {
            indicator: if f.unit.is_empty() {
                f.name.clone()
            } else {
                format!("{}({})", f.name, f.unit)
            },
            value: f.text.clone(),
            previous: f.previous_text.clone(),
            target: f
                .target
                .as_ref()
                .map(|t| t.min_text.clone())
                .unwrap_or_default(),
            standing: f
                .target
                .as_ref()
                .map(|t| match (t.per, t.met, t.total) {
                    ("entity", Some(met), Some(total)) if !t.ratio_text.is_empty() => {
                        format!("{met}/{total}（{}）", t.ratio_text)
                    }
                    ("entity", Some(met), Some(total)) => format!("{met}/{total}"),
                    _ => t.completion_text.clone(),
                })
                .unwrap_or_default(),
        }
    }
}

/// The headings of the table of figures.
pub const TABLE_HEADINGS: [&str; 5] = ["指标", "本期", "上期", "目标", "完成情况"];

/// The heading above the table of figures.
pub const TABLE_TITLE: &str = "附表：本期主要数据";

impl FigureRow {
    pub fn cells(&self) -> [&str; 5] {
        [
            &self.indicator,
            &self.value,
            &self.previous,
            &self.target,
            &self.standing,
        ]
    }
}

/// A line that starts a list item: `1. `, `2、`, `- `, `* `.
fn is_list_item(line: &str) -> bool {
    if line.starts_with("- ") || line.starts_with("* ") {
        return true;
    }
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && (line[digits..].starts_with(". ") || line[digits..].starts_with('、'))
}

/// The template's text as blocks (see the module's documentation).
fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut paragraph = String::new();
    let flush = |paragraph: &mut String, out: &mut Vec<Block>| {
        if !paragraph.is_empty() {
            out.push(Block::Paragraph(std::mem::take(paragraph)));
        }
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            flush(&mut paragraph, &mut out);
        } else if let Some(title) = line.strip_prefix("# ") {
            flush(&mut paragraph, &mut out);
            out.push(Block::Title(title.trim().to_owned()));
        } else if let Some(heading) = line
            .strip_prefix("## ")
            .or_else(|| line.strip_prefix("### "))
        {
            flush(&mut paragraph, &mut out);
            out.push(Block::Heading(heading.trim().to_owned()));
        } else {
            if is_list_item(line) {
                flush(&mut paragraph, &mut out);
            }
            // Chinese lines join as they are; words of other scripts need a space.
            if paragraph.ends_with(|c: char| c.is_ascii_alphanumeric())
                && line.starts_with(|c: char| c.is_ascii_alphanumeric())
            {
                paragraph.push(' ');
            }
            paragraph.push_str(line);
        }
    }
    flush(&mut paragraph, &mut out);
    out
}

impl Draft {
    /// The draft as Markdown: each report's blocks, then its table of figures.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        for (n, report) in self.reports.iter().enumerate() {
            if n > 0 {
                out.push_str("\n---\n\n");
            }
            for block in &report.blocks {
                match block {
                    Block::Title(t) => out.push_str(&format!("# {t}\n\n")),
                    Block::Heading(h) => out.push_str(&format!("## {h}\n\n")),
                    Block::Paragraph(p) => out.push_str(&format!("{p}\n\n")),
                }
            }
            if !report.figures.is_empty() {
                out.push_str(&format!("## {TABLE_TITLE}\n\n"));
                out.push_str(&format!("| {} |\n", TABLE_HEADINGS.join(" | ")));
                out.push_str("| :--- | ---: | ---: | ---: | ---: |\n");
                for row in &report.figures {
                    let cells: Vec<String> =
                        row.cells().iter().map(|c| c.replace('|', "\\|")).collect();
                    out.push_str(&format!("| {} |\n", cells.join(" | ")));
                }
            }
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
        out
    }

    /// The draft as a Word document (see [`docx`]).
    pub fn to_docx(&self) -> Result<Vec<u8>, NarrativeError> {
        docx::to_docx(self)
    }
}

/// The name a downloaded 情况报告 is saved under: `tally-2026-Q3-county.docx`
/// (ASCII, for every client), and `某县2026-Q3情况报告.docx` for those that
/// read RFC 6266's `filename*`.
pub fn content_disposition(summary: &Summary, format: tally_config::ReportFormat) -> String {
    let top = summary.units.iter().map(|u| u.depth).min().unwrap_or(0);
    let units: Vec<&UnitRow> = summary.units.iter().filter(|u| u.depth == top).collect();
    let label = &summary.period.label;
    let ext = format.extension();
    let ascii: String = std::iter::once(format!("tally-{label}"))
        .chain(units.iter().map(|u| u.id.clone()))
        .collect::<Vec<_>>()
        .join("-")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let names: Vec<&str> = units.iter().map(|u| u.name.as_str()).collect();
    let chinese = format!("{}{label}情况报告.{ext}", names.join("、"));
    let encoded: String = chinese
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{ascii}.{ext}\"; filename*=UTF-8''{encoded}")
}
