//! The summary as a Markdown document, for a quarterly report that people
//! read: units indented by depth, marks instead of a notes column, and the
//! sources behind the numbers at the end.

use std::fmt::Write;

use super::{IndicatorValue, Summary, TargetStatus, format_number, ratio_heading};
use crate::config::Per;

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
        if p.complete {
            ""
        } else {
            "，数据尚不完整"
        },
        summary.generated_at
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
    let (mut any_incomplete, mut any_missing) = (false, false);
    for unit in &summary.units {
        let mut row = vec![format!(
            "{}{}",
            INDENT.repeat(unit.depth - top),
            escape(&unit.name)
        )];
        for (_, cell) in &unit.values.0 {
            any_incomplete |= cell.incomplete && !cell.missing;
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

    if any_incomplete || any_missing {
        out.push('\n');
        if any_incomplete {
            let _ = writeln!(
                out,
                "\\* 数据不完整：有数据源未覆盖整个统计期间，或下级单位未报送，数值可能偏低。  "
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

/// The current value with its marks: `—` for missing, `*` for incomplete,
/// and the per-capita figure in brackets.
fn current(cell: &IndicatorValue) -> String {
    if cell.missing {
        return "—".to_owned();
    }
    // An empty total can still be incomplete (every unit below is missing):
    // keep the mark rather than an empty cell that reads as "nothing to report".
    let mut s = cell.value.map(|v| format_number(v, 2)).unwrap_or_default();
    if cell.incomplete {
        s.push_str("\\*");
    }
    if let Some(pc) = cell.per_capita {
        let _ = write!(s, "（人均 {}）", format_number(pc, 1));
    }
    s
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
