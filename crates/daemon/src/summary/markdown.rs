//! The summary as a Markdown document, for a quarterly report that people
//! read: a line on the sources and one on the units expected to report,
//! units indented by depth, marks instead of a notes column (`—` 未报送,
//! `*` a source missed days, `†` a unit below did not report), and the
//! sources behind the numbers at the end.

use std::fmt::Write;

use super::{Because, IndicatorValue, Summary, TargetStatus, format_number, ratio_heading};
use tally_config::Per;

/// Full-width spaces survive Markdown renderers that trim ASCII spaces in
/// table cells, and line up with Chinese names.
const INDENT: &str = "\u{3000}";

pub fn to_markdown(summary: &Summary) -> String {
    let targeted = summary.target_columns();
    let p = &summary.period;
    let mut out = String::new();
    let _ = writeln!(out, "# {} 统计表\n", p.label);
    let _ = writeln!(
        out,
        "统计期间：{} 至 {}（{}）{}。生成于 {}。\n",
        p.start,
        p.end,
        p.timezone,
        if p.ended { "" } else { "，尚未结束" },
        summary.generated_at
    );
    let _ = writeln!(
        out,
        "{}  \n{}\n",
        sources_line(summary),
        units_line(summary)
    );

    let mut header = vec!["单位".to_owned()];
    header.extend(summary.indicators.iter().map(|i| escape(&i.header())));
    header.extend(
        summary
            .indicators
            .iter()
            .map(|i| format!("上期{}", escape(&i.header()))),
    );
    for (ind, per) in summary.indicators.iter().zip(&targeted) {
        if let Some(per) = per {
            header.push(format!("目标{}", escape(&ind.header())));
            header.push(format!("{}{}", ratio_heading(*per), escape(&ind.name)));
        }
    }
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let align: Vec<&str> = std::iter::once(":---")
        .chain(std::iter::repeat_n("---:", header.len() - 1))
        .collect();
    let _ = writeln!(out, "| {} |", align.join(" | "));

    let top = summary.units.iter().map(|u| u.depth).min().unwrap_or(0);
    let (mut any_gap, mut any_below, mut any_missing) = (false, false, false);
    for unit in &summary.units {
        let mut row = vec![format!(
            "{}{}",
            INDENT.repeat(unit.depth - top),
            escape(&unit.name)
        )];
        for (_, cell) in &unit.values.0 {
            if !cell.missing {
                let because = cell.incomplete_because;
                any_gap |= matches!(because, Some(Because::Sources | Because::SourcesAndUnits));
                any_below |= matches!(because, Some(Because::Units | Because::SourcesAndUnits));
            }
            any_missing |= cell.missing;
            row.push(current(cell));
        }
        for (_, cell) in &unit.values.0 {
            row.push(
                cell.previous
                    .map(|v| format_number(v, 2))
                    .unwrap_or_default(),
            );
        }
        for ((_, cell), per) in unit.values.0.iter().zip(&targeted) {
            if per.is_some() {
                let t = cell.target.as_ref();
                row.push(t.map(|t| format_number(t.min, 1)).unwrap_or_default());
                row.push(t.map(standing).unwrap_or_default());
            }
        }
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }

    if any_gap || any_below || any_missing {
        out.push('\n');
        if any_gap {
            let _ = writeln!(
                out,
                "\\* 数据不完整（来源缺数）：此数值背后有数据源未覆盖整个统计期间，数值可能偏低。  "
            );
        }
        if any_below {
            let _ = writeln!(
                out,
                "† 数据不完整（下级单位未报送）：合计中缺少未报送的下级单位，数值可能偏低。  "
            );
        }
        if any_missing {
            let _ = writeln!(
                out,
                "— 未报送：应有数据源覆盖该单位，但本期没有任何数据。  "
            );
        }
        // The trailing double spaces are Markdown line breaks; drop the last.
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    }

    if !summary.sources.is_empty() {
        let _ = writeln!(out, "\n## 数据来源\n");
        for s in &summary.sources {
            let _ = writeln!(
                out,
                "- {}：{}，失败 {} 次，最近成功 {}",
                escape(&s.id),
                if s.complete { "完整" } else { "不完整" },
                s.failed_runs,
                s.last_success.as_deref().unwrap_or("从未")
            );
        }
    }
    out
}

/// The current value with its marks: `—` for missing, `*` for a source
/// gap, `†` for a unit below that did not report, and the per-capita figure
/// in brackets.
fn current(cell: &IndicatorValue) -> String {
    if cell.missing {
        return "—".to_owned();
    }
    // An empty total can still be incomplete (every unit below is missing):
    // keep the mark rather than an empty cell that reads as "nothing to report".
    let mut s = cell.value.map(|v| format_number(v, 2)).unwrap_or_default();
    match cell.incomplete_because {
        Some(Because::Sources) => s.push_str("\\*"),
        Some(Because::Units) => s.push('†'),
        Some(Because::SourcesAndUnits) => s.push_str("\\*†"),
        None => {}
    }
    if let Some(pc) = cell.per_capita {
        let _ = write!(s, "（人均 {}）", format_number(pc, 1));
    }
    s
}

/// `数据来源完整：…`: the sources behind the table, and only them.
fn sources_line(summary: &Summary) -> String {
    let p = &summary.period;
    let total = summary.sources.len();
    let gaps = summary.sources.iter().filter(|s| !s.complete).count();
    if total == 0 {
        "数据来源：本表没有数据来源。".to_owned()
    } else if gaps == 0 && p.ended {
        format!("数据来源完整：{total} 个数据源在本期每一天都已采集，没有失败。")
    } else if gaps == 0 {
        format!("数据来源截至今天完整：统计期尚未结束，{total} 个数据源到今天为止每一天都已采集。")
    } else {
        format!(
            "数据来源不完整：{total} 个数据源中有 {gaps} 个在本期缺数或失败（见文末「数据来源」），标 \\* 的数值可能偏低。"
        )
    }
}

/// `报送单位完整：…`: the units expected to report, and only them.
fn units_line(summary: &Summary) -> String {
    if summary.period.units_complete {
        return "报送单位完整：数据源覆盖的单位在本期都有数据。".to_owned();
    }
    let missing: Vec<String> = summary
        .units
        .iter()
        .filter(|u| u.values.0.iter().any(|(_, c)| c.missing))
        .map(|u| escape(&u.name))
        .collect();
    if missing.is_empty() {
        "报送单位不完整：表中所列单位以下有单位未报送，标 † 的合计可能偏低。".to_owned()
    } else {
        format!(
            "报送单位不完整：{} 有指标未报送（—），其上级的合计标 †。",
            missing.join("、")
        )
    }
}

/// `80.8%` of a per-unit target; `97/120（80.8%）` of a per-entity one.
fn standing(t: &TargetStatus) -> String {
    let percent = |r: f64| format!("{}%", format_number(r * 100.0, 1));
    match t.per {
        Per::Unit => t.completion.map(percent).unwrap_or_default(),
        Per::Entity => {
            let (met, total) = (t.met.unwrap_or(0), t.total.unwrap_or(0));
            match t.ratio {
                Some(r) => format!("{met}/{total}（{}）", percent(r)),
                None => format!("{met}/{total}"),
            }
        }
    }
}

/// Keeps a name from breaking the table.
fn escape(s: &str) -> String {
    s.replace('|', "\\|")
}
