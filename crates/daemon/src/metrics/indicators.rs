//! The indicator families of `/metrics` (`tally_indicator_value`,
//! `tally_target_ratio`, `tally_unit_info`, `tally_indicator_info`), written
//! from the summary's roll-ups: the summary reads the store, this writes text.

use chrono::NaiveDate;
use tally_config::Config;
use tally_domain::UnitTree;
use tally_store::{Store, StoreError};

use super::{IndicatorText, Metrics};
use crate::summary::{self, MetricWindows};

/// Writes `tally_indicator_value{unit, indicator, window}`: the rolled-up
/// value of the current day, month, quarter and year to date, for every unit
/// and indicator with data; `tally_target_ratio{unit, indicator, window}`
/// where a target applies: per-unit targets give the completion against the
/// pro-rated minimum, per-entity targets the share of entities that reach it
/// (no series while a unit has no value, or no entity); and
/// `tally_unit_info`, `tally_indicator_info` from the tree and the catalogue.
/// The families are replaced whole, so series of removed units or indicators
/// disappear; scrapes see them after the next rebuild of `/metrics`
/// ([`Metrics::refresh`]).
pub fn refresh_indicators(
    metrics: &Metrics,
    config: &Config,
    tree: &UnitTree,
    store: &dyn Store,
    today: NaiveDate,
) -> Result<(), StoreError> {
    let windows = summary::metric_windows(config, tree, store, today)?;
    metrics.set_indicator_families(indicator_text(config, tree, &windows));
    Ok(())
}

/// Writes the indicator families of [`refresh_indicators`] (no I/O), for
/// the units, indicators and windows `[metrics]` exposes
/// ([`Config::metrics_depth`], [`tally_config::MetricsConfig`]).
pub fn indicator_text(config: &Config, tree: &UnitTree, windows: &MetricWindows) -> IndicatorText {
    let bounds = &config.metrics;
    let depth = config.metrics_depth();
    let units: Vec<usize> = tree
        .preorder()
        .iter()
        .copied()
        .filter(|&u| {
            let unit = tree.unit(u);
            depth.is_none_or(|d| unit.depth() <= d) && bounds.exposes_subtree(&unit.id)
        })
        .collect();
    let indicators: Vec<usize> = (0..config.indicators.len())
        .filter(|&i| bounds.exposes_indicator(&config.indicators[i].id))
        .collect();
    let n = config.indicators.len();
    let mut text = IndicatorText::new();
    text.unit_info(units.iter().map(|&u| {
        let unit = tree.unit(u);
        let parent = unit.parent().map_or("", |p| tree.unit(p).id.as_str());
        (unit.id.as_str(), unit.name.as_str(), parent)
    }));
    text.indicator_info(
        indicators
            .iter()
            .map(|&i| &config.indicators[i])
            .map(|i| (i.id.as_str(), i.name.as_str(), i.kind.as_str())),
    );
    // Every exposed (window, unit, indicator) cell, in a stable order.
    let (units, indicators) = (&units, &indicators);
    let cells = || {
        windows
            .windows
            .iter()
            .filter(|(window, _, _)| bounds.exposes_window(window))
            .flat_map(move |window| {
                units
                    .iter()
                    .flat_map(move |&u| indicators.iter().map(move |&i| (window, u, i)))
            })
    };
    let ids = |u: usize, i: usize| (tree.unit(u).id.as_str(), config.indicators[i].id.as_str());
    text.indicator_value(cells().filter_map(|((window, values, _), u, i)| {
        let (unit, indicator) = ids(u, i);
        values.get(u, i).map(|v| (unit, indicator, *window, v))
    }));
    text.target_ratio(cells().filter_map(|((window, _, statuses), u, i)| {
        let (unit, indicator) = ids(u, i);
        statuses[u * n + i]
            .as_ref()
            .and_then(|t| t.completion.or(t.ratio))
            .map(|r| (unit, indicator, *window, r))
    }));
    text
}
