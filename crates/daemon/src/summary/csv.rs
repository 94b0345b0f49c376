//! The wide CSV: one row per unit, one column per indicator headed by its
//! display name, UTF-8 with a BOM so that Excel reads Chinese.
//!
//! Cells hold bare numbers so that a spreadsheet can sum them; what a mark
//! would say in Markdown goes to the last column, 备注: 未报送, or
//! 数据不完整 with its reason (来源缺数: a source behind the value missed
//! days; 下级单位未报送: a unit below did not report).

use super::{Summary, format_number, ratio_heading};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Decimals kept for fractional values; counts and levels are whole numbers
/// in practice, this only hides float noise like `0.30000000000000004`.
const DECIMALS: usize = 6;

/// Decimals of a target's minimum (derived and pro-rated minimums are fractions).
const MIN_DECIMALS: usize = 2;

/// Decimals of completion and share-on-target ratios (`0.8083` is 80.83%).
const RATIO_DECIMALS: usize = 4;

/// Columns: 单位代码, 单位, one per indicator (`微信公众号发文数(篇)`), one
/// `上期` column per indicator, then for each indicator with a target in the
/// table `目标…` (the effective minimum) and `目标完成率…` (per-unit targets:
/// value / minimum) or `达标率…` (per-entity: share of entities on target),
/// and 备注. Rows in the summary's order. An empty cell is no data or no target.
pub fn to_csv(summary: &Summary) -> Vec<u8> {
    let targeted = summary.target_columns();
    let mut header = vec!["单位代码".to_owned(), "单位".to_owned()];
    header.extend(summary.indicators.iter().map(|i| i.header()));
    header.extend(
        summary
            .indicators
            .iter()
            .map(|i| format!("上期{}", i.header())),
    );
    for (ind, per) in summary.indicators.iter().zip(&targeted) {
        if let Some(per) = per {
            header.push(format!("目标{}", ind.header()));
            header.push(format!("{}{}", ratio_heading(*per), ind.name));
        }
    }
    header.push("备注".to_owned());

    let mut rows = vec![header];
    for unit in &summary.units {
        let cells = &unit.values.0;
        let mut row = vec![text_cell(&unit.id), text_cell(&unit.name)];
        let number = |v: Option<f64>| v.map(|v| format_number(v, DECIMALS)).unwrap_or_default();
        row.extend(cells.iter().map(|(_, c)| number(c.value)));
        row.extend(cells.iter().map(|(_, c)| number(c.previous)));
        for ((_, c), per) in cells.iter().zip(&targeted) {
            if per.is_some() {
                let t = c.target.as_ref();
                row.push(
                    t.map(|t| format_number(t.min, MIN_DECIMALS))
                        .unwrap_or_default(),
                );
                row.push(
                    t.and_then(|t| t.ratio_or_completion())
                        .map(|r| format_number(r, RATIO_DECIMALS))
                        .unwrap_or_default(),
                );
            }
        }
        let notes: Vec<String> = summary
            .indicators
            .iter()
            .zip(cells)
            .filter_map(|(ind, (_, c))| Some(format!("{}: {}", ind.name, c.mark()?)))
            .collect();
        row.push(text_cell(&notes.join("; ")));
        rows.push(row);
    }
    rows[0] = rows[0].iter().map(|h| text_cell(h)).collect();

    let mut out = BOM.to_vec();
    let mut writer = csv::Writer::from_writer(&mut out);
    for row in rows {
        // Writing to memory cannot fail: the only errors are I/O ones.
        let _ = writer.write_record(&row);
    }
    let _ = writer.flush();
    drop(writer);
    out
}

/// A text cell a spreadsheet shows as text: prefixed with `'` when its first
/// character would start a formula.
pub(crate) fn text_cell(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}
