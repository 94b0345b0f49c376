//! Targets: the minimum that applies to a unit for an indicator over an
//! asked period, and how the unit stands against it.
//!
//! The effective minimum of a period is found in two steps:
//!
//! 1. **Derivation**, always: a target set for another period length counts
//!    by share of days. Every target period (of the target's `period` kind)
//!    that overlaps the asked period contributes `min × overlap / its days`,
//!    so a yearly 7,000 seen in 2026-Q3 is `7000 × 92 / 365`, a monthly 8
//!    seen in a quarter is `8 × 3`, and a target seen for its own period is
//!    its `min` unchanged.
//! 2. **Pro-rating**, unless `prorate = false`: inside a running period the
//!    derived minimum is scaled by `elapsed / days`, where `elapsed` counts
//!    the days from the period's start to `min(today, end)`, inclusive. A
//!    period that has not begun has no target yet.
//!
//! An indicator that accumulates over the year (`accumulates = "year"`, such
//! as 本年积分) holds at a period's end the total since 1 January, not what
//! the period added, so a share of the period's days would compare a year's
//! worth of points with a quarter's worth of target. Its (yearly) target is
//! instead the yearly minimum pro-rated from 1 January to the period's last
//! day: `min × days(1 January ..= end) / days of that year`, with `end` the
//! period's end, or today inside a running period unless `prorate = false`
//! (7,000 a year at 2026-09-30: `7000 × 273 / 365 = 5235.6`). The year is
//! the one `end` falls in, as the value then counts from its 1 January.
//!
//! Per-unit targets compare the unit's rolled-up value with the minimum
//! (`completion = value / min`). Per-entity targets compare each entity's
//! value ([`Store::entity_values`]) with the minimum: at a unit, `total` is
//! the number of (unit, entity) pairs seen in its subtree in the period, so an
//! entity present under two units counts under each, and `met` those whose
//! value reaches the minimum. Observations without an entity are not an
//! entity and are not counted.
//!
//! Which target applies: the first `[[targets]]` entry for the indicator
//! whose `units` list the unit itself (or that has no `units`). A listed unit
//! does not pass its target down to its descendants.

use std::collections::HashMap;

use chrono::NaiveDate;

use tally_config::{Accumulates, Config, Per, TargetConfig, TargetPeriod};
use tally_domain::{Period, PeriodKind, RolledUp, UnitTree};
use tally_store::{Store, StoreError};

use super::TargetStatus;

fn period_kind(p: TargetPeriod) -> PeriodKind {
    match p {
        TargetPeriod::Day => PeriodKind::Day,
        TargetPeriod::Week => PeriodKind::Week,
        TargetPeriod::Month => PeriodKind::Month,
        TargetPeriod::Quarter => PeriodKind::Quarter,
        TargetPeriod::Year => PeriodKind::Year,
    }
}

/// The target's minimum over `period` as seen on `today`: derived by share
/// of days, then pro-rated by elapsed days when the target says so; for an
/// indicator that `accumulates`, the yearly minimum pro-rated from 1 January
/// to the period's end (or to today). `None` when pro-rating leaves nothing
/// (the period has not begun).
pub fn effective_min(
    target: &TargetConfig,
    accumulates: Option<Accumulates>,
    period: &Period,
    today: NaiveDate,
) -> Option<f64> {
    if let Some(Accumulates::Year) = accumulates {
        return year_to_date_min(target, period, today);
    }
    let kind = period_kind(target.period);
    let mut derived = 0.0;
    let mut p = Period::containing(kind, period.start);
    loop {
        let overlap_start = p.start.max(period.start);
        let overlap_end = p.end.min(period.end);
        let overlap = (overlap_end - overlap_start).num_days() + 1;
        if overlap > 0 {
            derived += target.min * overlap as f64 / p.days() as f64;
        }
        match p.end.succ_opt() {
            Some(next) if next <= period.end => p = Period::containing(kind, next),
            _ => break,
        }
    }
    if !target.prorate {
        return Some(derived);
    }
    let elapsed = period.to_date(today).days();
    if elapsed <= 0 {
        return None;
    }
    Some(derived * elapsed as f64 / period.days() as f64)
}

/// `min × days(1 January ..= last) / days of last's year`, where `last` is
/// the period's end, or today inside a running period when pro-rated. The
/// configuration only lets yearly targets onto accumulating indicators.
fn year_to_date_min(target: &TargetConfig, period: &Period, today: NaiveDate) -> Option<f64> {
    let last = if target.prorate {
        let to_date = period.to_date(today);
        if to_date.days() <= 0 {
            return None;
        }
        to_date.end
    } else {
        period.end
    };
    let year = Period::containing(PeriodKind::Year, last);
    let elapsed = (last - year.start).num_days() + 1;
    Some(target.min * elapsed as f64 / year.days() as f64)
}

/// The target that applies to `unit` for `indicator`, if any.
pub fn applicable<'a>(config: &'a Config, indicator: &str, unit: &str) -> Option<&'a TargetConfig> {
    config.targets.iter().find(|t| {
        t.indicator == indicator
            && t.units
                .as_ref()
                .is_none_or(|units| units.iter().any(|u| u == unit))
    })
}

/// Target statuses dense by (unit, indicator) of `config.indicators`, for
/// every unit of the tree. `min_period` is the period the minimum is for (and
/// is pro-rated within, as seen on `today`); `values` the rolled-up values and
/// `[data_start, data_end]` the days entity values are read over.
pub fn statuses(
    config: &Config,
    tree: &UnitTree,
    store: &dyn Store,
    min_period: &Period,
    today: NaiveDate,
    values: &RolledUp,
    (data_start, data_end): (NaiveDate, NaiveDate),
) -> Result<Vec<Option<TargetStatus>>, StoreError> {
    let n = config.indicators.len();
    let mut out: Vec<Option<TargetStatus>> = vec![None; tree.len() * n];
    if config.targets.is_empty() {
        return Ok(out);
    }
    let mut per_entity: Vec<(String, tally_domain::Kind)> = Vec::new();
    for &u in tree.preorder() {
        let unit = &tree.unit(u).id;
        for (i, ind) in config.indicators.iter().enumerate() {
            let Some(target) = applicable(config, &ind.id, unit) else {
                continue;
            };
            let Some(min) = effective_min(target, ind.accumulates, min_period, today) else {
                continue;
            };
            out[u * n + i] = Some(match target.per {
                Per::Unit => TargetStatus {
                    per: Per::Unit,
                    min,
                    completion: values.get(u, i).map(|v| v / min),
                    met: None,
                    total: None,
                    ratio: None,
                },
                Per::Entity => {
                    if !per_entity.iter().any(|(id, _)| id == &ind.id) {
                        per_entity.push((ind.id.clone(), ind.kind));
                    }
                    TargetStatus {
                        per: Per::Entity,
                        min,
                        completion: None,
                        met: Some(0),
                        total: Some(0),
                        ratio: None,
                    }
                }
            });
        }
    }
    if per_entity.is_empty() {
        return Ok(out);
    }

    let position: HashMap<&str, usize> = config
        .indicators
        .iter()
        .enumerate()
        .map(|(i, ind)| (ind.id.as_str(), i))
        .collect();
    for ev in store.entity_values(data_start, data_end, &per_entity)? {
        if ev.entity.is_empty() {
            continue;
        }
        let (Some(unit), Some(&i)) = (tree.index(&ev.unit), position.get(ev.indicator.as_str()))
        else {
            continue;
        };
        // The pair counts at its own unit and at every ancestor that has a
        // per-entity target, against that ancestor's minimum.
        let mut at = Some(unit);
        while let Some(a) = at {
            if let Some(status) = out[a * n + i].as_mut().filter(|s| s.per == Per::Entity) {
                *status.total.get_or_insert(0) += 1;
                if ev.value >= status.min {
                    *status.met.get_or_insert(0) += 1;
                }
            }
            at = tree.parent(a);
        }
    }
    for status in out.iter_mut().flatten() {
        if let (Some(met), Some(total)) = (status.met, status.total)
            && total > 0
        {
            status.ratio = Some(met as f64 / total as f64);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(period: TargetPeriod, min: f64, prorate: bool) -> TargetConfig {
        TargetConfig {
            indicator: "x".into(),
            per: Per::Unit,
            period,
            min,
            prorate,
            units: None,
        }
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn p(s: &str) -> Period {
        Period::parse(s).unwrap()
    }

    #[test]
    fn derivation_is_by_share_of_days() {
        let after = d("2027-06-01");
        let year = target(TargetPeriod::Year, 7000.0, true);
        // 2026-Q3 has 92 days, 2026 has 365.
        assert_eq!(
            effective_min(&year, None, &p("2026-Q3"), after),
            Some(7000.0 * 92.0 / 365.0)
        );
        assert_eq!(effective_min(&year, None, &p("2026"), after), Some(7000.0));
        // A monthly 8 over a quarter is 8 per month.
        let month = target(TargetPeriod::Month, 8.0, false);
        assert_eq!(
            effective_min(&month, None, &p("2026-Q3"), after),
            Some(24.0)
        );
        assert_eq!(effective_min(&month, None, &p("2026"), after), Some(96.0));
        // Half of July (16 of 31 days) and all of August.
        let got = effective_min(&month, None, &p("2026-07-16..2026-08-31"), after).unwrap();
        assert!((got - (8.0 * 16.0 / 31.0 + 8.0)).abs() < 1e-9, "{got}");
        // A range across a year end takes each year's share.
        let got = effective_min(&year, None, &p("2026-12-01..2027-01-31"), after).unwrap();
        assert!((got - 7000.0 * 62.0 / 365.0).abs() < 1e-9, "{got}");
    }

    #[test]
    fn prorating_counts_elapsed_days_inclusive() {
        let quarter = target(TargetPeriod::Quarter, 12.0, true);
        // 2026-08-15 is day 46 of 2026-Q3 (31 + 15).
        assert_eq!(
            effective_min(&quarter, None, &p("2026-Q3"), d("2026-08-15")),
            Some(12.0 * 46.0 / 92.0)
        );
        // The first day already counts; the period after its end is whole.
        assert_eq!(
            effective_min(&quarter, None, &p("2026-Q3"), d("2026-07-01")),
            Some(12.0 / 92.0)
        );
        assert_eq!(
            effective_min(&quarter, None, &p("2026-Q3"), d("2026-11-01")),
            Some(12.0)
        );
        // Before it begins there is no target yet, unless not pro-rated.
        assert_eq!(
            effective_min(&quarter, None, &p("2026-Q3"), d("2026-06-30")),
            None
        );
        let fixed = target(TargetPeriod::Quarter, 12.0, false);
        assert_eq!(
            effective_min(&fixed, None, &p("2026-Q3"), d("2026-06-30")),
            Some(12.0)
        );
        // Derived, then pro-rated: a yearly 7000 in Q3 on 08-15.
        let year = target(TargetPeriod::Year, 7000.0, true);
        assert_eq!(
            effective_min(&year, None, &p("2026-Q3"), d("2026-08-15")),
            Some(7000.0 * 92.0 / 365.0 * 46.0 / 92.0)
        );
    }

    #[test]
    fn an_accumulating_indicator_takes_the_yearly_minimum_to_the_periods_end() {
        let year = target(TargetPeriod::Year, 7000.0, true);
        let ytd = Some(Accumulates::Year);
        let after = d("2027-06-01");
        // 2026-09-30 is day 273 of 365: 7000 × 273 / 365 = 5235.6, not the
        // quarter's share 7000 × 92 / 365 = 1764.4.
        let q3 = effective_min(&year, ytd, &p("2026-Q3"), after).unwrap();
        assert!((q3 - 5235.616438356164).abs() < 1e-9, "{q3}");
        assert!(close(q3, 7000.0 * 273.0 / 365.0));
        // Q1 ends on day 90; the whole year asks the whole 7000; a month, its end.
        assert!(close(
            effective_min(&year, ytd, &p("2026-Q1"), after).unwrap(),
            7000.0 * 90.0 / 365.0
        ));
        assert_eq!(effective_min(&year, ytd, &p("2026"), after), Some(7000.0));
        assert!(close(
            effective_min(&year, ytd, &p("2026-02"), after).unwrap(),
            7000.0 * 59.0 / 365.0
        ));
        // A leap year counts 366 days: 2028-03-31 is day 91.
        assert!(close(
            effective_min(&year, ytd, &p("2028-Q1"), d("2029-01-01")).unwrap(),
            7000.0 * 91.0 / 366.0
        ));
        // A range across a year end counts from its last day's 1 January.
        assert!(close(
            effective_min(&year, ytd, &p("2026-12-01..2027-01-31"), after).unwrap(),
            7000.0 * 31.0 / 365.0
        ));
    }

    #[test]
    fn an_accumulating_indicator_in_a_running_period_is_pro_rated_to_date() {
        let year = target(TargetPeriod::Year, 7000.0, true);
        let ytd = Some(Accumulates::Year);
        // 2026-08-15 is day 227 (212 + 15): the value then counts to that day.
        assert!(close(
            effective_min(&year, ytd, &p("2026-Q3"), d("2026-08-15")).unwrap(),
            7000.0 * 227.0 / 365.0
        ));
        // The first day of the year asks one day's share; nothing before.
        assert!(close(
            effective_min(&year, ytd, &p("2026-Q1"), d("2026-01-01")).unwrap(),
            7000.0 / 365.0
        ));
        assert_eq!(
            effective_min(&year, ytd, &p("2026-Q3"), d("2026-06-30")),
            None
        );
        // Without pro-rating the running period asks for its end already.
        let fixed = target(TargetPeriod::Year, 7000.0, false);
        assert!(close(
            effective_min(&fixed, ytd, &p("2026-Q3"), d("2026-08-15")).unwrap(),
            7000.0 * 273.0 / 365.0
        ));
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }
}
