//! `[metrics]`: how much of the daemon `/metrics` exposes.
//!
//! Two things grow a Prometheus exposition past what one Prometheus takes
//! comfortably: series per source times sources, and units × indicators ×
//! windows of the indicator families. The defaults keep both bounded (see
//! docs/operating.md, "Sizing /metrics"); the summary API and the reports
//! always see the whole table.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use super::{Checker, Config, IndicatorConfig, TargetConfig, UnitConfig};

/// The windows of the indicator families, in the order they are written.
pub const METRIC_WINDOWS: [&str; 4] = ["day", "month", "quarter", "year"];

/// `[metrics]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// `tally_source_run_duration_seconds` as a histogram (ten buckets per
    /// source) instead of only its `_sum` and `_count`.
    pub source_duration_histogram: bool,
    /// `tally_source_runs_total{result="error"}` split by `kind` (eight
    /// series per source) instead of one.
    pub source_error_kinds: bool,
    /// At most this many `tally_indicator_value`, `tally_target_ratio` and
    /// `tally_unit_info` series: deeper levels of the tree are left out
    /// until the rest fits ([`Config::metrics_depth`]).
    pub indicator_series_limit: usize,
    /// Units deeper than this (a root is at depth 0) are left out of the
    /// indicator families; `None`: no bound but the limit.
    pub indicator_max_depth: Option<usize>,
    /// Only these units and their descendants; empty: every unit.
    pub indicator_units: Vec<String>,
    /// Only these indicators; empty: every indicator.
    pub indicators: Vec<String>,
    /// Only these windows, out of [`METRIC_WINDOWS`].
    pub windows: Vec<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            source_duration_histogram: false,
            source_error_kinds: false,
            indicator_series_limit: MetricsConfig::DEFAULT_INDICATOR_SERIES_LIMIT,
            indicator_max_depth: None,
            indicator_units: Vec::new(),
            indicators: Vec::new(),
            windows: METRIC_WINDOWS.map(str::to_owned).to_vec(),
        }
    }
}

impl MetricsConfig {
    /// A province (20,000 units, 30 indicators) fits its top three levels
    /// in it; a county's whole tree fits many times over.
    pub const DEFAULT_INDICATOR_SERIES_LIMIT: usize = 150_000;

    /// Whether the indicator families carry `unit` at all (the depth bound
    /// aside, see [`Config::metrics_depth`]).
    pub fn exposes_subtree(&self, unit: &str) -> bool {
        self.indicator_units.is_empty()
            || self.indicator_units.iter().any(|root| {
                unit == root
                    || unit
                        .strip_prefix(root.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
    }

    /// Whether the indicator families carry `indicator`.
    pub fn exposes_indicator(&self, indicator: &str) -> bool {
        self.indicators.is_empty() || self.indicators.iter().any(|i| i == indicator)
    }

    /// Whether the indicator families carry `window` (`day`, ...).
    pub fn exposes_window(&self, window: &str) -> bool {
        self.windows.iter().any(|w| w == window)
    }
}

/// A unit's depth: ids are paths, a root has no `/`.
fn depth(unit: &str) -> usize {
    unit.matches('/').count()
}

impl Config {
    /// The deepest level of the unit tree the indicator families carry
    /// (a root is at depth 0): `[metrics] indicator_max_depth`, lowered
    /// until the series of the exposed units, indicators and windows fit
    /// `indicator_series_limit`. `None` when every level fits. Computed from
    /// the current catalogue, so indicators adopted from plugins count.
    ///
    /// A unit's series are counted at their most: one `tally_unit_info`,
    /// and per window one `tally_indicator_value` per indicator plus one
    /// `tally_target_ratio` per indicator that has a target.
    pub fn metrics_depth(&self) -> Option<usize> {
        let m = &self.metrics;
        let targeted: HashSet<&str> = self.targets.iter().map(|t| t.indicator.as_str()).collect();
        let (mut indicators, mut ratios) = (0, 0);
        for i in self
            .indicators
            .iter()
            .filter(|i| m.exposes_indicator(&i.id))
        {
            indicators += 1;
            ratios += usize::from(targeted.contains(i.id.as_str()));
        }
        let per_unit = 1 + m.windows.len() * (indicators + ratios);
        let mut per_depth: Vec<usize> = Vec::new();
        for unit in self.units.iter().filter(|u| m.exposes_subtree(&u.id)) {
            let d = depth(&unit.id);
            if m.indicator_max_depth.is_some_and(|max| d > max) {
                continue;
            }
            if per_depth.len() <= d {
                per_depth.resize(d + 1, 0);
            }
            per_depth[d] += 1;
        }
        let mut total = 0usize;
        for (d, units) in per_depth.iter().enumerate() {
            total = total.saturating_add(units.saturating_mul(per_unit));
            if total > m.indicator_series_limit {
                // The roots stay even over the limit: a tree of nothing helps no one.
                return Some(d.saturating_sub(1));
            }
        }
        m.indicator_max_depth
    }
}

/// `[metrics]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    pub source_duration_histogram: Option<bool>,
    pub source_error_kinds: Option<bool>,
    pub indicator_series_limit: Option<usize>,
    pub indicator_max_depth: Option<usize>,
    pub indicator_units: Option<Vec<String>>,
    pub indicators: Option<Vec<String>>,
    pub windows: Option<Vec<String>>,
}

impl Checker<'_> {
    /// Checks `[metrics]` against the unit tree and the catalogue.
    pub(super) fn metrics(
        &mut self,
        raw: Raw,
        units: &[UnitConfig],
        indicators: &[IndicatorConfig],
        targets: &[TargetConfig],
    ) -> MetricsConfig {
        let defaults = MetricsConfig::default();
        let unit_ids: HashSet<&str> = units.iter().map(|u| u.id.as_str()).collect();
        let indicator_ids: HashSet<&str> = indicators.iter().map(|i| i.id.as_str()).collect();
        let indicator_units = self.metrics_list(
            "metrics.indicator_units",
            raw.indicator_units.unwrap_or_default(),
            |id| unit_ids.contains(id),
            "unknown unit",
            "a unit id of [[units]]",
        );
        let chosen_indicators = self.metrics_list(
            "metrics.indicators",
            raw.indicators.unwrap_or_default(),
            |id| indicator_ids.contains(id),
            "unknown indicator",
            "an indicator id of [[indicators]]",
        );
        let windows = match raw.windows {
            None => defaults.windows,
            Some(list) => {
                let windows = self.metrics_list(
                    "metrics.windows",
                    list,
                    |w| METRIC_WINDOWS.contains(&w),
                    "unknown window",
                    "day, month, quarter or year",
                );
                if windows.is_empty() {
                    self.problem(
                        "metrics.windows",
                        "the list of windows is empty; accepted: day, month, quarter, year",
                    );
                }
                // In the order of the body, whatever the order written.
                METRIC_WINDOWS
                    .iter()
                    .filter(|w| windows.iter().any(|x| x == *w))
                    .map(|w| (*w).to_owned())
                    .collect()
            }
        };
        let indicator_series_limit = raw
            .indicator_series_limit
            .unwrap_or(defaults.indicator_series_limit);
        let config = MetricsConfig {
            source_duration_histogram: raw.source_duration_histogram.unwrap_or(false),
            source_error_kinds: raw.source_error_kinds.unwrap_or(false),
            indicator_series_limit,
            indicator_max_depth: raw.indicator_max_depth,
            indicator_units,
            indicators: chosen_indicators,
            windows,
        };
        // The top level alone must fit: a limit that leaves out every unit
        // is a mistake, not a bound.
        if raw.indicator_series_limit.is_some() {
            let targeted: HashSet<&str> = targets.iter().map(|t| t.indicator.as_str()).collect();
            let n = indicators
                .iter()
                .filter(|i| config.exposes_indicator(&i.id))
                .map(|i| 1 + usize::from(targeted.contains(i.id.as_str())))
                .sum::<usize>();
            let mut top: HashMap<usize, usize> = HashMap::new();
            for u in units.iter().filter(|u| config.exposes_subtree(&u.id)) {
                *top.entry(depth(&u.id)).or_default() += 1;
            }
            let shallowest = top.iter().min_by_key(|(d, _)| **d).map_or(0, |(_, n)| *n);
            let needed = shallowest * (1 + config.windows.len() * n);
            if needed > indicator_series_limit {
                self.problem(
                    "metrics.indicator_series_limit",
                    format!(
                        "{indicator_series_limit} series do not hold even the top level of the \
                         exposed units ({shallowest} units, up to {needed} series); raise it, or \
                         narrow indicators or windows"
                    ),
                );
            }
        }
        config
    }

    /// A list of ids, each checked by `known`; duplicates dropped.
    fn metrics_list(
        &mut self,
        key: &str,
        list: Vec<String>,
        known: impl Fn(&str) -> bool,
        what: &str,
        expected: &str,
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (i, id) in list.into_iter().enumerate() {
            if !known(&id) {
                self.problem(
                    &format!("{key}[{i}]"),
                    format!("{what} {id:?} (expected {expected})"),
                );
            } else if !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("t.toml"), &|_| None).map_err(|e| e.to_string())
    }

    /// `levels[d]` units at depth d, each under the first unit of the level
    /// above; `indicators` indicators, the first `targeted` with a target.
    fn tree(levels: &[usize], indicators: usize, targeted: usize, metrics: &str) -> String {
        let mut t = String::new();
        let mut parent = String::new();
        for (d, n) in levels.iter().enumerate() {
            for k in 0..*n {
                let id = if d == 0 {
                    format!("u{k}")
                } else {
                    format!("{parent}/u{k}")
                };
                let _ = writeln!(t, "[[units]]\nid = \"{id}\"\nname = \"{id}\"");
            }
            parent = if d == 0 {
                "u0".to_owned()
            } else {
                format!("{parent}/u0")
            };
        }
        for i in 0..indicators {
            let _ = writeln!(
                t,
                "[[indicators]]\nid = \"i{i}\"\nname = \"I{i}\"\nkind = \"count\"\nunit = \"篇\""
            );
        }
        for i in 0..targeted {
            let _ = writeln!(
                t,
                "[[targets]]\nindicator = \"i{i}\"\nper = \"unit\"\nperiod = \"quarter\"\nmin = 1"
            );
        }
        t.push_str(metrics);
        t
    }

    #[test]
    fn a_county_is_exposed_whole_by_default() {
        // The demo's size: 14 units, 33 indicators, 2 with targets.
        let config = parse(&tree(&[1, 13], 33, 2, "")).unwrap();
        assert_eq!(config.metrics, MetricsConfig::default());
        assert_eq!(config.metrics_depth(), None);
    }

    #[test]
    fn a_province_is_cut_to_the_levels_that_fit_the_default_limit() {
        // docs/operating.md's arithmetic: 1 + 15 + 150 + 19,834 units, 30
        // indicators of which 10 have targets: 4 × (30 + 10) + 1 = 161
        // series a unit at most; the top three levels make 166 × 161 =
        // 26,726, the fourth would bring 3.2 million.
        let config = parse(&tree(&[1, 15, 150, 19_834], 30, 10, "")).unwrap();
        assert_eq!(config.units.len(), 20_000);
        assert_eq!(config.metrics_depth(), Some(2));
        // Two windows and a raised limit take the fourth level in:
        // 20,000 × (2 × 40 + 1) = 1,620,000.
        let config = parse(&tree(
            &[1, 15, 150, 19_834],
            30,
            10,
            "[metrics]\nwindows = [\"quarter\", \"year\"]\nindicator_series_limit = 1620000\n",
        ))
        .unwrap();
        assert_eq!(config.metrics_depth(), None);
    }

    #[test]
    fn an_explicit_depth_bounds_and_the_limit_may_lower_it() {
        let text = tree(&[1, 10, 100], 2, 0, "[metrics]\nindicator_max_depth = 1\n");
        assert_eq!(parse(&text).unwrap().metrics_depth(), Some(1));
        // 9 series a unit: 11 units are 99, 111 units 999.
        let text = tree(
            &[1, 10, 100],
            2,
            0,
            "[metrics]\nindicator_series_limit = 500\n",
        );
        assert_eq!(parse(&text).unwrap().metrics_depth(), Some(1));
        let text = tree(
            &[1, 10, 100],
            2,
            0,
            "[metrics]\nindicator_series_limit = 999\n",
        );
        assert_eq!(parse(&text).unwrap().metrics_depth(), None);
    }

    #[test]
    fn subtrees_indicators_and_windows_select() {
        let config = parse(&tree(
            &[1, 2, 2],
            3,
            0,
            "[metrics]\nindicator_units = [\"u0/u1\"]\nindicators = [\"i2\", \"i0\"]\nwindows = [\"year\", \"day\"]\n",
        ))
        .unwrap();
        let m = &config.metrics;
        assert!(m.exposes_subtree("u0/u1"));
        assert!(m.exposes_subtree("u0/u1/u0"));
        assert!(!m.exposes_subtree("u0"));
        assert!(!m.exposes_subtree("u0/u10"));
        assert!(m.exposes_indicator("i0") && !m.exposes_indicator("i1"));
        // In the body's order, whatever the file's.
        assert_eq!(m.windows, ["day", "year"]);
    }

    #[test]
    fn unknown_names_are_errors_at_their_place() {
        let base = tree(&[1], 1, 0, "");
        let line = base.lines().count() + 2;
        let check = |metrics: &str, expected: &str| {
            let err = parse(&format!("{base}[metrics]\n{metrics}")).unwrap_err();
            assert!(err.contains(expected), "{expected:?} in:\n{err}");
        };
        check(
            "indicator_units = [\"u0\", \"nowhere\"]\n",
            &format!(
                "t.toml:{line}:26: metrics.indicator_units[1]: unknown unit \"nowhere\" (expected a unit id of [[units]])"
            ),
        );
        check(
            "indicators = [\"i9\"]\n",
            &format!("t.toml:{line}:15: metrics.indicators[0]: unknown indicator \"i9\""),
        );
        check(
            "windows = [\"week\"]\n",
            &format!(
                "t.toml:{line}:12: metrics.windows[0]: unknown window \"week\" (expected day, month, quarter or year)"
            ),
        );
        check(
            "windows = []\n",
            &format!("t.toml:{line}:11: metrics.windows: the list of windows is empty"),
        );
        check(
            "indicator_series_limit = 4\n",
            "metrics.indicator_series_limit: 4 series do not hold even the top level",
        );
        check(
            "histogram = true\n",
            "metrics.histogram: unknown field `histogram`",
        );
    }
}
