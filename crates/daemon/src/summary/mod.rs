//! The statistics table of a period (`GET /api/v1/summary`, the README's
//! "Summary" section): own values from the store, rolled up the unit tree,
//! next to the previous period, with the marks that say where the numbers
//! are not the whole story (units that did not report, sources with gaps). The same [`Summary`] is rendered as
//! JSON (serde), CSV ([`to_csv`]) and Markdown ([`to_markdown`]), and the
//! roll-up behind it also feeds the `tally_indicator_value` gauge
//! ([`refresh_metrics`]).
//!
//! Cost: one [`Store::own_values_indexed`] call per period (current and
//! previous; the store answers whole months from memory) and one
//! [`Store::coverage`] call per relevant source; everything else is done in
//! memory over dense `(unit, indicator)` vectors, never per unit against the
//! store.

mod csv;
mod explain;
mod markdown;
pub mod targets;
mod xlsx;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use thiserror::Error;

use tally_config::{Config, Coverage, IndicatorConfig, Per};
use tally_domain::{Kind, OwnData, Period, PeriodKind, RolledUp, UnitTree, local_day, roll_up};
use tally_store::{Store, StoreError};

pub use self::csv::to_csv;
pub use self::explain::{
    DEFAULT_PAGE, ExplainError, ExplainRequest, ExplainedObservation, Explanation, MAX_PAGE,
    explain, explain_page,
};
pub use self::markdown::to_markdown;
pub use self::xlsx::{ReportError, to_xlsx};

/// What a summary is asked for (the query of `GET /api/v1/summary`).
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRequest {
    pub period: Period,
    /// A unit id; `None` for all roots.
    pub unit: Option<String>,
    /// Levels below the unit(s) asked for: `Some(0)` is the unit alone,
    /// `None` the whole subtree.
    pub depth: Option<usize>,
}

impl SummaryRequest {
    /// The whole tree for `period`.
    pub fn new(period: Period) -> SummaryRequest {
        SummaryRequest {
            period,
            unit: None,
            depth: None,
        }
    }
}

#[derive(Debug, Error)]
pub enum SummaryError {
    /// A client mistake: the HTTP layer answers 400.
    #[error("unknown unit \"{0}\": see /api/v1/units")]
    UnknownUnit(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The statistics table of a period, in the JSON shape the README describes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub period: PeriodInfo,
    /// RFC 3339 in the configured time zone, with its offset.
    pub generated_at: String,
    pub indicators: Vec<IndicatorInfo>,
    /// Parents before children (tree preorder).
    pub units: Vec<UnitRow>,
    pub sources: Vec<SourceInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodInfo {
    pub label: String,
    pub start: NaiveDate,
    pub end: NaiveDate,
    pub timezone: String,
    /// `ended && sources_complete`: the figures will not change unless a
    /// late correction is collected. Says nothing of units: see
    /// `units_complete`.
    pub complete: bool,
    /// The period's last day is before today in the configured time zone.
    pub ended: bool,
    /// Every source behind the table collected every day of the period up
    /// to today, with no failed run (each source's `complete`).
    pub sources_complete: bool,
    /// No 未报送 in the subtrees asked for (shown or below `depth`): every
    /// unit a source expects reported each indicator that source emits.
    pub units_complete: bool,
}

impl Summary {
    /// For each indicator, in order: `Some(per)` of the first unit that has a
    /// target for it, `None` when no unit of the table has one. Decides which
    /// target columns CSV and Markdown show, and how they are headed.
    pub fn target_columns(&self) -> Vec<Option<Per>> {
        (0..self.indicators.len())
            .map(|i| {
                self.units
                    .iter()
                    .find_map(|u| u.values.0.get(i)?.1.target.as_ref().map(|t| t.per))
            })
            .collect()
    }
}

impl TargetStatus {
    /// The one figure of how the unit stands: completion for per-unit
    /// targets, the share of entities on target for per-entity ones.
    pub fn ratio_or_completion(&self) -> Option<f64> {
        match self.per {
            Per::Unit => self.completion,
            Per::Entity => self.ratio,
        }
    }
}

/// `目标完成率` of a per-unit target, `达标率` (share of entities on target) of
/// a per-entity one: the heading of the ratio column.
fn ratio_heading(per: Per) -> &'static str {
    match per {
        Per::Unit => "目标完成率",
        Per::Entity => "达标率",
    }
}

/// One entry of the indicator catalogue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndicatorInfo {
    pub id: String,
    pub name: String,
    pub kind: Kind,
    /// The display unit: 篇, 次, 分, 人.
    pub unit: String,
}

impl IndicatorInfo {
    /// `微信公众号发文数(篇)`: the header of the indicator's column.
    pub fn header(&self) -> String {
        if self.unit.is_empty() {
            self.name.clone()
        } else {
            format!("{}({})", self.name, self.unit)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitRow {
    pub id: String,
    pub name: String,
    pub parent: Option<String>,
    /// Absolute: 0 for a root.
    pub depth: usize,
    /// The unit's own staff, as configured: not counting the units below.
    pub headcount: Option<u32>,
    /// The headcounts of the unit and of every unit below it that has one
    /// (above 0), added up: what `per_capita` divides by. Absent when none
    /// has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtree_headcount: Option<u32>,
    pub values: Values,
}

/// A unit's values, one per indicator of [`Summary::indicators`] and in the
/// same order; serialized as a JSON object keyed by indicator id. The ids
/// are shared by every row of a table (a thousand units × twenty indicators
/// would otherwise be twenty thousand strings to copy and free).
#[derive(Debug, Clone, PartialEq)]
pub struct Values(pub Vec<(Arc<str>, IndicatorValue)>);

impl Values {
    pub fn get(&self, indicator: &str) -> Option<&IndicatorValue> {
        self.0
            .iter()
            .find(|(id, _)| **id == *indicator)
            .map(|(_, v)| v)
    }
}

impl Serialize for Values {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (id, v) in &self.0 {
            map.serialize_entry(&**id, v)?;
        }
        map.end()
    }
}

/// One cell of the table.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IndicatorValue {
    /// The unit's subtree; `None` (JSON `null`) when nothing in it reported.
    #[serde(serialize_with = "number")]
    pub value: Option<f64>,
    /// The same over the previous period of the same length.
    #[serde(serialize_with = "number")]
    pub previous: Option<f64>,
    /// Only for indicators with `per_capita = true`: the value of the units
    /// of the subtree that have a headcount, divided by the sum of their
    /// headcounts ([`UnitRow::subtree_headcount`]); units without one are
    /// left out of both. Absent when no such unit has a value. Full precision.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "number")]
    pub per_capita: Option<f64>,
    /// `value - previous`, when both are known. For an indicator that
    /// accumulates over the year it is the growth since the previous
    /// period's end, and when that end is in an earlier year (the count
    /// restarted on 1 January) it is `value` itself.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "number")]
    pub change: Option<f64>,
    /// `change / previous`, when `previous` is known and not 0 and the
    /// ratio is a finite number; absent for
    /// an accumulating indicator whose previous period ended in an earlier year.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "number")]
    pub change_ratio: Option<f64>,
    /// Among the unit's siblings (the roots among the roots), by value: 1 is
    /// the highest, ties share a rank (1, 1, 3), units without a value have
    /// none. Counted over every sibling, shown or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
    /// How the unit stands against the target that applies to it (see
    /// [`targets`]); absent when none does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetStatus>,
    /// Some source behind this value did not cover the whole period, or a
    /// unit below is missing: the value may be too low.
    #[serde(skip_serializing_if = "is_false")]
    pub incomplete: bool,
    /// Why `incomplete`; absent when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete_because: Option<Because>,
    /// 未报送: a source should cover this unit, yet nothing in its subtree reported.
    #[serde(skip_serializing_if = "is_false")]
    pub missing: bool,
}

impl IndicatorValue {
    /// What the notes column (备注) says of the cell: `未报送`, or
    /// `数据不完整（…）` with its reason; `None` for a clean cell.
    pub fn mark(&self) -> Option<&'static str> {
        if self.missing {
            Some("未报送")
        } else if self.incomplete {
            Some(self.incomplete_because.map_or("数据不完整", Because::mark))
        } else {
            None
        }
    }
}

/// What makes a value incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Because {
    /// A source behind the unit or a unit below it missed days or failed.
    Sources,
    /// A unit below did not report (未报送).
    Units,
    /// Both.
    SourcesAndUnits,
}

impl Because {
    fn of(sources: bool, units: bool) -> Option<Because> {
        match (sources, units) {
            (true, true) => Some(Because::SourcesAndUnits),
            (true, false) => Some(Because::Sources),
            (false, true) => Some(Because::Units),
            (false, false) => None,
        }
    }

    /// `数据不完整（来源缺数）`: the mark with its reason, for notes columns.
    pub fn mark(self) -> &'static str {
        match self {
            Because::Sources => "数据不完整（来源缺数）",
            Because::Units => "数据不完整（下级单位未报送）",
            Because::SourcesAndUnits => "数据不完整（来源缺数，下级单位未报送）",
        }
    }
}

/// How a unit stands against a target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetStatus {
    pub per: Per,
    /// The effective minimum for the period asked: derived by share of days
    /// from the target's own period, then pro-rated by elapsed days inside a
    /// running period (see [`targets`]). Full precision.
    #[serde(serialize_with = "number_f64")]
    pub min: f64,
    /// Per-unit targets: `value / min`; absent when the unit has no value.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "number")]
    pub completion: Option<f64>,
    /// Per-entity targets: the entities (of the unit's subtree, seen in the
    /// period) whose value reached `min`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub met: Option<u64>,
    /// Per-entity targets: the entities of the unit's subtree seen in the period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Per-entity targets: `met / total`; absent when `total` is 0.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "number")]
    pub ratio: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceInfo {
    pub id: String,
    /// No gap and no failed run over the period up to today.
    pub complete: bool,
    pub failed_runs: u64,
    /// RFC 3339 in the configured time zone.
    pub last_success: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Whole numbers as JSON integers (`321`, not `321.0`), as spreadsheet
/// imports expect.
fn number<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match *v {
        Some(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => s.serialize_i64(v as i64),
        Some(v) => s.serialize_f64(v),
        None => s.serialize_none(),
    }
}

fn number_f64<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    number(&Some(*v), s)
}

fn rfc3339(at: DateTime<Utc>, tz: Tz) -> String {
    at.with_timezone(&tz)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// Own values over `[start, end]` from the store (one call), rolled up the
/// tree. Indicator `i` of the result is `indicators[i]`; values stored for
/// units or indicators no longer configured are ignored.
pub fn rolled_up(
    store: &dyn Store,
    tree: &UnitTree,
    indicators: &[IndicatorConfig],
    start: NaiveDate,
    end: NaiveDate,
) -> Result<RolledUp, StoreError> {
    let own = own_values(store, tree, indicators, start, end)?;
    Ok(roll_up(tree, &kinds(indicators), own))
}

fn kinds(indicators: &[IndicatorConfig]) -> Vec<Kind> {
    indicators.iter().map(|i| i.kind).collect()
}

fn own_values(
    store: &dyn Store,
    tree: &UnitTree,
    indicators: &[IndicatorConfig],
    start: NaiveDate,
    end: NaiveDate,
) -> Result<Vec<(usize, usize, OwnData)>, StoreError> {
    let wanted: Vec<(String, Kind)> = indicators.iter().map(|i| (i.id.clone(), i.kind)).collect();
    store.own_values_indexed(start, end, &wanted, &|unit| tree.index(unit))
}

/// Has a headcount that per capita can divide by.
fn counted_staff(headcount: Option<u32>) -> Option<u32> {
    headcount.filter(|&h| h > 0)
}

/// Per unit: the headcounts of its subtree added up (units with one only),
/// `None` where no unit of the subtree has one.
fn subtree_headcounts(tree: &UnitTree) -> Vec<Option<u32>> {
    let mut sums: Vec<Option<u32>> = (0..tree.len())
        .map(|u| counted_staff(tree.unit(u).headcount))
        .collect();
    for &u in tree.preorder().iter().rev() {
        if let (Some(p), Some(h)) = (tree.parent(u), sums[u]) {
            sums[p] = Some(sums[p].unwrap_or(0).saturating_add(h));
        }
    }
    sums
}

/// Builds the table for `req`. `emits` maps a source id to the indicator
/// ids its plugin emits (as the loaded plugins declare them); a source not
/// in it is taken to emit nothing, so it marks nothing missing or incomplete.
/// `now` decides what "today" is in the configured time zone.
pub fn build(
    config: &Config,
    tree: &UnitTree,
    store: &dyn Store,
    emits: &HashMap<String, Vec<String>>,
    req: &SummaryRequest,
    now: DateTime<Utc>,
) -> Result<Summary, SummaryError> {
    let tz = config.daemon.timezone;
    let today = local_day(now, tz);
    let period = &req.period;

    let roots: Vec<usize> = match &req.unit {
        Some(id) => vec![
            tree.index(id)
                .ok_or_else(|| SummaryError::UnknownUnit(id.clone()))?,
        ],
        None => tree.roots().to_vec(),
    };

    let indicators = &config.indicators;
    let n = indicators.len();
    let own = own_values(store, tree, indicators, period.start, period.end)?;
    // Per capita divides by the headcounts of the units that have one, so
    // its numerator leaves out the values of the units that have none.
    let staffed = if indicators.iter().any(|i| i.per_capita)
        && tree
            .units()
            .iter()
            .any(|u| counted_staff(u.headcount).is_none())
    {
        let own = own
            .iter()
            .filter(|(u, _, _)| counted_staff(tree.unit(*u).headcount).is_some())
            .cloned();
        Some(roll_up(tree, &kinds(indicators), own))
    } else {
        None
    };
    let current = roll_up(tree, &kinds(indicators), own);
    let staffed = staffed.as_ref().unwrap_or(&current);
    let headcounts = subtree_headcounts(tree);
    let prev_period = period.previous();
    let previous = rolled_up(store, tree, indicators, prev_period.start, prev_period.end)?;
    // The count of an indicator accumulating over the year restarted on
    // 1 January after the previous period ended.
    let new_year = prev_period.end.year() < period.end.year();

    // The sources behind the table: enabled ones whose units overlap the
    // subtrees asked for (a source above the unit asked for covers it too).
    // A period in the future is only checked up to today.
    let checked = period.to_date(today);
    let indicator_pos: HashMap<&str, usize> = indicators
        .iter()
        .enumerate()
        .map(|(i, ind)| (ind.id.as_str(), i))
        .collect();
    let mut sources = Vec::new();
    // Dense by (unit, indicator): covered by a source emitting it; covered by
    // such a source that is incomplete.
    let mut covered = vec![false; tree.len() * n];
    let mut source_gap = vec![false; tree.len() * n];
    let mut relevant = Vec::new();
    for source in config.sources.iter().filter(|s| s.enabled) {
        let units: Vec<usize> = source.units.iter().filter_map(|u| tree.index(u)).collect();
        if units.iter().any(|&u| {
            roots
                .iter()
                .any(|&r| tree.is_ancestor_or_self(r, u) || tree.is_ancestor_or_self(u, r))
        }) {
            relevant.push((source, units));
        }
    }
    let infos: Vec<SourceInfo> = if checked.days() > 0 {
        let ids: Vec<&str> = relevant.iter().map(|(s, _)| s.id.as_str()).collect();
        store
            .coverages(&ids, checked.start, checked.end)?
            .into_iter()
            .zip(&relevant)
            .map(|(cov, (source, _))| SourceInfo {
                id: source.id.clone(),
                complete: cov.is_complete(),
                failed_runs: cov.failed_runs,
                last_success: cov.last_success.map(|t| rfc3339(t, tz)),
            })
            .collect()
    } else {
        // Nothing of the period has happened yet, so nothing is missing.
        relevant
            .iter()
            .map(|(source, _)| {
                let status = store.source_status(&source.id)?;
                Ok(SourceInfo {
                    id: source.id.clone(),
                    complete: true,
                    failed_runs: 0,
                    last_success: status.last_success.map(|l| rfc3339(l.finished_at, tz)),
                })
            })
            .collect::<Result<_, StoreError>>()?
    };
    for ((source, units), info) in relevant.iter().zip(infos) {
        let emitted: Vec<usize> = emits
            .get(&source.id)
            .into_iter()
            .flatten()
            .filter_map(|i| indicator_pos.get(i.as_str()).copied())
            .collect();
        for &root in units {
            let expected = if source.coverage == Coverage::Subtrees {
                tree.subtree(root, None)
            } else {
                vec![root]
            };
            for u in expected {
                for &i in &emitted {
                    covered[u * n + i] = true;
                    source_gap[u * n + i] |= !info.complete;
                }
            }
        }
        sources.push(info);
    }

    // Missing: covered, yet nothing in the subtree reported. Incomplete: a
    // source behind the unit or below it has a gap, or a unit below is
    // missing. Children come before parents in the reversed preorder, so
    // each unit's flag is final before it is folded into its parent.
    let started = checked.days() > 0;
    let missing: Vec<bool> = (0..tree.len() * n)
        .map(|slot| started && covered[slot] && current.get(slot / n, slot % n).is_none())
        .collect();
    // The two reasons are kept apart, so that the table can say which.
    let mut gap_below = source_gap;
    let mut missing_below = vec![false; tree.len() * n];
    for &u in tree.preorder().iter().rev() {
        if let Some(p) = tree.parent(u) {
            for i in 0..n {
                gap_below[p * n + i] |= gap_below[u * n + i];
                missing_below[p * n + i] |= missing_below[u * n + i] || missing[u * n + i];
            }
        }
    }
    let units_complete = !roots
        .iter()
        .flat_map(|&r| tree.subtree(r, None))
        .any(|u| missing[u * n..(u + 1) * n].iter().any(|&m| m));

    let statuses = targets::statuses(
        config,
        tree,
        store,
        period,
        today,
        &current,
        (period.start, period.end),
    )?;
    let ranks = ranks(tree, &current, n);

    let ids: Vec<Arc<str>> = indicators
        .iter()
        .map(|i| Arc::from(i.id.as_str()))
        .collect();
    let mut units = Vec::new();
    for &root in &roots {
        for u in tree.subtree(root, req.depth) {
            let unit = tree.unit(u);
            let values = (0..n)
                .map(|i| {
                    let value = current.get(u, i);
                    let previous = previous.get(u, i);
                    let restarted = new_year && indicators[i].accumulates.is_some();
                    let change = if restarted {
                        value
                    } else {
                        value.zip(previous).map(|(v, p)| v - p)
                    };
                    let per_capita = if indicators[i].per_capita {
                        staffed
                            .get(u, i)
                            .zip(headcounts[u])
                            .map(|(v, h)| v / f64::from(h))
                    } else {
                        None
                    };
                    let because = Because::of(gap_below[u * n + i], missing_below[u * n + i]);
                    let cell = IndicatorValue {
                        value,
                        previous,
                        per_capita,
                        change,
                        change_ratio: change
                            .zip(previous)
                            .filter(|&(_, p)| p != 0.0 && !restarted)
                            .map(|(c, p)| c / p)
                            // Over a tiny previous value the ratio can
                            // overflow, and says nothing anyway.
                            .filter(|r| r.is_finite()),
                        rank: ranks[u * n + i],
                        target: statuses[u * n + i].clone(),
                        incomplete: because.is_some(),
                        incomplete_because: because,
                        missing: missing[u * n + i],
                    };
                    (ids[i].clone(), cell)
                })
                .collect();
            units.push(UnitRow {
                id: unit.id.clone(),
                name: unit.name.clone(),
                parent: unit.parent().map(|p| tree.unit(p).id.clone()),
                depth: unit.depth(),
                headcount: unit.headcount,
                subtree_headcount: headcounts[u],
                values: Values(values),
            });
        }
    }

    let ended = period.is_over(today);
    let sources_complete = sources.iter().all(|s| s.complete);
    Ok(Summary {
        period: PeriodInfo {
            label: period.label().to_owned(),
            start: period.start,
            end: period.end,
            timezone: tz.name().to_owned(),
            complete: ended && sources_complete,
            ended,
            sources_complete,
            units_complete,
        },
        generated_at: rfc3339(now, tz),
        indicators: indicators
            .iter()
            .map(|i| IndicatorInfo {
                id: i.id.clone(),
                name: i.name.clone(),
                kind: i.kind,
                unit: i.unit.clone(),
            })
            .collect(),
        units,
        sources,
    })
}

/// Dense by (unit, indicator): the unit's rank among its siblings (the
/// roots among the roots) by value, highest first; ties share the best rank
/// (competition ranking: 1, 1, 3); no value, no rank.
fn ranks(tree: &UnitTree, values: &RolledUp, n: usize) -> Vec<Option<u32>> {
    let mut out = vec![None; tree.len() * n];
    let groups =
        std::iter::once(tree.roots()).chain(tree.preorder().iter().map(|&u| tree.children(u)));
    for siblings in groups {
        for i in 0..n {
            for &u in siblings {
                let Some(v) = values.get(u, i) else { continue };
                let above = siblings
                    .iter()
                    .filter(|&&s| values.get(s, i).is_some_and(|w| w > v))
                    .count();
                out[u * n + i] = Some(u32::try_from(above + 1).unwrap_or(u32::MAX));
            }
        }
    }
    out
}

/// The `window` label values of `tally_indicator_value`, with their periods.
const WINDOWS: [(&str, PeriodKind); 4] = [
    ("day", PeriodKind::Day),
    ("month", PeriodKind::Month),
    ("quarter", PeriodKind::Quarter),
    ("year", PeriodKind::Year),
];

/// The roll-ups and target standings behind the indicator families, per
/// window: what [`crate::metrics::refresh_indicators`] reads from the store.
pub struct MetricWindows {
    /// Per window (`day`, `month`, `quarter`, `year`): its label, the values
    /// to date, and each (unit, indicator) cell's target standing.
    pub windows: Vec<(&'static str, RolledUp, Vec<Option<TargetStatus>>)>,
}

/// Reads the store for [`crate::metrics::refresh_indicators`]: the four windows to date.
pub fn metric_windows(
    config: &Config,
    tree: &UnitTree,
    store: &dyn Store,
    today: NaiveDate,
) -> Result<MetricWindows, StoreError> {
    let mut windows = Vec::with_capacity(WINDOWS.len());
    for (label, kind) in WINDOWS {
        let period = Period::containing(kind, today);
        let p = period.to_date(today);
        let values = rolled_up(store, tree, &config.indicators, p.start, p.end)?;
        let statuses = targets::statuses(
            config,
            tree,
            store,
            &period,
            today,
            &values,
            (p.start, p.end),
        )?;
        windows.push((label, values, statuses));
    }
    Ok(MetricWindows { windows })
}

/// A number for people: whole numbers without `.0`, others rounded to at
/// most `decimals` places without trailing zeros.
pub(crate) fn format_number(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s.as_str()
    };
    // Rounding may leave "-0" for a tiny negative value.
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}
