//! Roll-ups: from the values stored directly against each unit ("own") to the
//! values of each unit's whole subtree, per indicator (docs/configuration.md, `kind`).
//!
//! One pass over the preorder reversed visits every child before its parent,
//! so each unit's subtree total is final when it is added into its parent:
//! O(units × indicators) for `count` and `level`, and set unions for `distinct`.

use std::collections::BTreeSet;

use super::Kind;
use super::units::UnitTree;

/// What was stored against one unit for one indicator over a period.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnData {
    /// For `count` and `level`.
    Number(f64),
    /// For `distinct`: the entities with a non-zero value. An empty set still
    /// means "data was reported", which is different from no data.
    Entities(BTreeSet<String>),
}

/// Rolled-up values, dense by (unit index, indicator index).
#[derive(Debug, Clone, PartialEq)]
pub struct RolledUp {
    indicators: usize,
    values: Vec<Option<f64>>,
}

impl RolledUp {
    /// The value of the unit's subtree, `None` when nothing in the subtree
    /// reported this indicator (shown as missing, not as 0).
    pub fn get(&self, unit: usize, indicator: usize) -> Option<f64> {
        self.values
            .get(unit * self.indicators + indicator)
            .copied()
            .flatten()
    }
}

/// Rolls `own` values up the tree. `kinds[i]` is the kind of indicator `i`.
/// Several entries for the same (unit, indicator) are combined as the kind
/// says (added, or united for `distinct`). Entries whose indices are out of
/// range, or whose data does not fit the indicator's kind, are caller bugs:
/// they trip a debug assertion and are otherwise ignored.
pub fn roll_up(
    tree: &UnitTree,
    kinds: &[Kind],
    own: impl IntoIterator<Item = (usize, usize, OwnData)>,
) -> RolledUp {
    let n = kinds.len();
    let mut values: Vec<Option<f64>> = vec![None; tree.len() * n];
    // Only distinct indicators need sets; the slot for the others stays None.
    let mut sets: Vec<Option<BTreeSet<String>>> = vec![None; tree.len() * n];

    for (unit, ind, data) in own {
        if unit >= tree.len() || ind >= n {
            debug_assert!(
                false,
                "roll_up: unit {unit} or indicator {ind} out of range"
            );
            continue;
        }
        let slot = unit * n + ind;
        match (kinds[ind], data) {
            (Kind::Count | Kind::Level, OwnData::Number(v)) => {
                values[slot] = Some(values[slot].unwrap_or(0.0) + v);
            }
            (Kind::Distinct, OwnData::Entities(e)) => {
                sets[slot].get_or_insert_with(BTreeSet::new).extend(e);
            }
            (kind, data) => {
                debug_assert!(false, "roll_up: {data:?} does not fit a {kind:?} indicator");
            }
        }
    }

    for &idx in tree.preorder().iter().rev() {
        let parent = tree.parent(idx);
        for (ind, kind) in kinds.iter().enumerate() {
            let slot = idx * n + ind;
            match kind {
                Kind::Count | Kind::Level => {
                    if let (Some(p), Some(v)) = (parent, values[slot]) {
                        let ps = p * n + ind;
                        values[ps] = Some(values[ps].unwrap_or(0.0) + v);
                    }
                }
                Kind::Distinct => {
                    let Some(mut set) = sets[slot].take() else {
                        continue;
                    };
                    values[slot] = Some(set.len() as f64);
                    if let Some(p) = parent {
                        // Merging the smaller set into the larger keeps a deep,
                        // uneven tree from copying the big sets over and over.
                        let ps = p * n + ind;
                        match sets[ps].take() {
                            None => sets[ps] = Some(set),
                            Some(mut into) => {
                                if into.len() < set.len() {
                                    std::mem::swap(&mut into, &mut set);
                                }
                                into.extend(set);
                                sets[ps] = Some(into);
                            }
                        }
                    }
                }
            }
        }
    }
    RolledUp {
        indicators: n,
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::UnitDef;

    fn tree() -> UnitTree {
        let def = |id: &str| UnitDef {
            id: id.into(),
            name: id.into(),
            headcount: None,
            aliases: vec![],
        };
        // 0 county, 1 county/a, 2 county/a/x, 3 county/a/y, 4 county/b, 5 county/c
        UnitTree::new(vec![
            def("county"),
            def("county/a"),
            def("county/a/x"),
            def("county/a/y"),
            def("county/b"),
            def("county/c"),
        ])
        .unwrap()
    }

    fn ents(e: &[&str]) -> OwnData {
        OwnData::Entities(e.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn rolls_count_level_and_distinct_up_three_levels() {
        let t = tree();
        let kinds = [Kind::Count, Kind::Level, Kind::Distinct];
        let own = vec![
            // count: county 1, a 10, x 100, y 1000 (given in two parts), b 0
            (0, 0, OwnData::Number(1.0)),
            (1, 0, OwnData::Number(10.0)),
            (2, 0, OwnData::Number(100.0)),
            (3, 0, OwnData::Number(600.0)),
            (3, 0, OwnData::Number(400.0)),
            (4, 0, OwnData::Number(0.0)),
            // level: x 5, y 7, b 11
            (2, 1, OwnData::Number(5.0)),
            (3, 1, OwnData::Number(7.0)),
            (4, 1, OwnData::Number(11.0)),
            // distinct: article p1 claimed by x and y, p2 by y and b, p3 by b; a reported none
            (2, 2, ents(&["p1"])),
            (3, 2, ents(&["p1", "p2"])),
            (4, 2, ents(&["p2", "p3"])),
            (1, 2, ents(&[])),
        ];
        let r = roll_up(&t, &kinds, own);
        // count
        assert_eq!(r.get(2, 0), Some(100.0));
        assert_eq!(r.get(3, 0), Some(1000.0));
        assert_eq!(r.get(1, 0), Some(1110.0));
        assert_eq!(r.get(4, 0), Some(0.0));
        assert_eq!(r.get(5, 0), None);
        assert_eq!(r.get(0, 0), Some(1111.0));
        // level
        assert_eq!(r.get(1, 1), Some(12.0));
        assert_eq!(r.get(0, 1), Some(23.0));
        assert_eq!(r.get(5, 1), None);
        // distinct: p1 once at a, {p1,p2,p3} at the county
        assert_eq!(r.get(2, 2), Some(1.0));
        assert_eq!(r.get(3, 2), Some(2.0));
        assert_eq!(r.get(1, 2), Some(2.0));
        assert_eq!(r.get(4, 2), Some(2.0));
        assert_eq!(r.get(0, 2), Some(3.0));
        assert_eq!(r.get(5, 2), None);
        // out of range answers None rather than panicking
        assert_eq!(r.get(6, 0), None);
    }

    #[test]
    fn an_empty_report_is_zero_not_missing() {
        let t = tree();
        let r = roll_up(&t, &[Kind::Distinct], vec![(5, 0, ents(&[]))]);
        assert_eq!(r.get(5, 0), Some(0.0));
        assert_eq!(r.get(0, 0), Some(0.0));
        assert_eq!(r.get(1, 0), None);
    }
}
