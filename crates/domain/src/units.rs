//! The organisation tree: units addressed by path ids (`county/natres/office`).
//!
//! Units get dense indices (their position in the configuration) so that
//! roll-ups and summaries can use plain `Vec`s instead of maps keyed by string.
//! The preorder is computed once here; everything that walks the tree uses it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A unit as configured (`[[units]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitDef {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headcount: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// What is wrong with the unit definitions; `index` is the position of the
/// offending definition in the list given to [`UnitTree::new`], so the config
/// layer can point at the right `[[units]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TreeError {
    #[error(
        "unit id \"{id}\" is invalid: ids are segments of [a-z0-9_-] joined by \"/\", like county/natres"
    )]
    BadId { index: usize, id: String },
    #[error("unit id \"{id}\" is defined twice")]
    Duplicate { index: usize, id: String },
    #[error("unit \"{id}\" has no parent: unit \"{parent}\" is not defined")]
    UnknownParent {
        index: usize,
        id: String,
        parent: String,
    },
    #[error(
        "\"{text}\" names two units, \"{first}\" and \"{second}\": names and aliases must be unique"
    )]
    NameClash {
        index: usize,
        text: String,
        first: String,
        second: String,
    },
}

impl TreeError {
    /// The position of the offending definition.
    pub fn index(&self) -> usize {
        match self {
            TreeError::BadId { index, .. }
            | TreeError::Duplicate { index, .. }
            | TreeError::UnknownParent { index, .. }
            | TreeError::NameClash { index, .. } => *index,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub id: String,
    pub name: String,
    pub headcount: Option<u32>,
    pub aliases: Vec<String>,
    parent: Option<usize>,
    depth: usize,
}

impl Unit {
    pub fn parent(&self) -> Option<usize> {
        self.parent
    }

    /// 0 for a root.
    pub fn depth(&self) -> usize {
        self.depth
    }
}

#[derive(Debug, Clone)]
pub struct UnitTree {
    units: Vec<Unit>,
    children: Vec<Vec<usize>>,
    roots: Vec<usize>,
    preorder: Vec<usize>,
    /// Position of each unit in `preorder`; with `size` this makes a subtree a
    /// contiguous slice of the preorder and ancestry an O(1) comparison.
    position: Vec<usize>,
    /// Number of units in the subtree, the unit included.
    size: Vec<usize>,
    by_id: HashMap<String, usize>,
    /// Trimmed names and aliases; kept apart from ids so that resolve can
    /// prefer an exact id.
    by_name: HashMap<String, usize>,
    by_alias: HashMap<String, usize>,
}

impl UnitTree {
    /// Builds the tree. Definitions may come in any order; indices are their
    /// positions in `defs`.
    pub fn new(defs: Vec<UnitDef>) -> Result<UnitTree, TreeError> {
        let mut by_id = HashMap::with_capacity(defs.len());
        for (index, def) in defs.iter().enumerate() {
            if !valid_id(&def.id) {
                return Err(TreeError::BadId {
                    index,
                    id: def.id.clone(),
                });
            }
            if by_id.insert(def.id.clone(), index).is_some() {
                return Err(TreeError::Duplicate {
                    index,
                    id: def.id.clone(),
                });
            }
        }

        let mut parents = Vec::with_capacity(defs.len());
        for (index, def) in defs.iter().enumerate() {
            let parent = match def.id.rsplit_once('/') {
                None => None,
                Some((parent, _)) => match by_id.get(parent) {
                    Some(&p) => Some(p),
                    None => {
                        return Err(TreeError::UnknownParent {
                            index,
                            id: def.id.clone(),
                            parent: parent.to_string(),
                        });
                    }
                },
            };
            parents.push(parent);
        }

        // Names and aliases are what other systems call a unit; one that
        // points at two units would silently credit the wrong one.
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut by_alias: HashMap<String, usize> = HashMap::new();
        for (index, def) in defs.iter().enumerate() {
            let texts =
                std::iter::once((&def.name, true)).chain(def.aliases.iter().map(|a| (a, false)));
            for (text, is_name) in texts {
                let text = text.trim();
                if text.is_empty() {
                    continue;
                }
                let other = by_name
                    .get(text)
                    .or_else(|| by_alias.get(text))
                    .or_else(|| by_id.get(text))
                    .copied()
                    .filter(|&other| other != index);
                if let Some(other) = other {
                    return Err(TreeError::NameClash {
                        index,
                        text: text.to_string(),
                        first: defs[other].id.clone(),
                        second: def.id.clone(),
                    });
                }
                let map = if is_name { &mut by_name } else { &mut by_alias };
                map.entry(text.to_string()).or_insert(index);
            }
        }

        let mut children = vec![Vec::new(); defs.len()];
        let mut roots = Vec::new();
        for (index, parent) in parents.iter().enumerate() {
            match parent {
                Some(p) => children[*p].push(index),
                None => roots.push(index),
            }
        }

        let mut preorder = Vec::with_capacity(defs.len());
        let mut depth = vec![0; defs.len()];
        let mut stack: Vec<usize> = roots.iter().rev().copied().collect();
        while let Some(idx) = stack.pop() {
            preorder.push(idx);
            for &c in children[idx].iter().rev() {
                depth[c] = depth[idx] + 1;
                stack.push(c);
            }
        }
        let mut position = vec![0; defs.len()];
        for (pos, &idx) in preorder.iter().enumerate() {
            position[idx] = pos;
        }
        let mut size = vec![1; defs.len()];
        for &idx in preorder.iter().rev() {
            if let Some(p) = parents[idx] {
                size[p] += size[idx];
            }
        }

        let units = defs
            .into_iter()
            .zip(parents)
            .zip(depth)
            .map(|((def, parent), depth)| Unit {
                id: def.id,
                name: def.name,
                headcount: def.headcount,
                aliases: def.aliases,
                parent,
                depth,
            })
            .collect();
        Ok(UnitTree {
            units,
            children,
            roots,
            preorder,
            position,
            size,
            by_id,
            by_name,
            by_alias,
        })
    }

    pub fn len(&self) -> usize {
        self.units.len()
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Unit> {
        self.index(id).map(|i| &self.units[i])
    }

    pub fn index(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// Panics on an index that did not come from this tree.
    pub fn unit(&self, idx: usize) -> &Unit {
        &self.units[idx]
    }

    pub fn units(&self) -> &[Unit] {
        &self.units
    }

    pub fn parent(&self, idx: usize) -> Option<usize> {
        self.units[idx].parent
    }

    /// In configuration order.
    pub fn children(&self, idx: usize) -> &[usize] {
        &self.children[idx]
    }

    /// In configuration order.
    pub fn roots(&self) -> &[usize] {
        &self.roots
    }

    pub fn depth(&self, idx: usize) -> usize {
        self.units[idx].depth
    }

    /// Parents before children, siblings in configuration order.
    pub fn preorder(&self) -> &[usize] {
        &self.preorder
    }

    /// `idx` and its descendants in preorder, down to `max_depth` levels below
    /// `idx` (`Some(0)` is the unit alone, `None` the whole subtree).
    pub fn subtree(&self, idx: usize, max_depth: Option<usize>) -> Vec<usize> {
        let pos = self.position[idx];
        let base = self.units[idx].depth;
        self.preorder[pos..pos + self.size[idx]]
            .iter()
            .copied()
            .filter(|&i| max_depth.is_none_or(|m| self.units[i].depth - base <= m))
            .collect()
    }

    pub fn is_ancestor_or_self(&self, anc: usize, idx: usize) -> bool {
        let (a, i) = (self.position[anc], self.position[idx]);
        a <= i && i < a + self.size[anc]
    }

    /// Maps what another system calls a unit to the unit: an exact id, else
    /// a display name, else an alias, all compared after trimming whitespace.
    pub fn resolve(&self, text: &str) -> Option<usize> {
        let text = text.trim();
        self.by_id
            .get(text)
            .or_else(|| self.by_name.get(text))
            .or_else(|| self.by_alias.get(text))
            .copied()
    }
}

fn valid_id(id: &str) -> bool {
    id.split('/').all(|seg| {
        !seg.is_empty()
            && seg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(id: &str, name: &str, aliases: &[&str]) -> UnitDef {
        UnitDef {
            id: id.into(),
            name: name.into(),
            headcount: None,
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Children listed before their parents on purpose.
    fn sample() -> UnitTree {
        UnitTree::new(vec![
            def("county/natres/office", "办公室", &[]), // 0
            def("county/natres", "自然资源局", &["某县自然资源局党支部"]), // 1
            def("county", "某县", &[]),                 // 2
            def("county/edu", "教育局", &[]),           // 3
            def("county/edu/school-1", "一中", &[]),    // 4
            def("county/natres/survey", "测绘队", &[]), // 5
            def("city", "某市", &[]),                   // 6
        ])
        .unwrap()
    }

    fn ids(t: &UnitTree, idxs: &[usize]) -> Vec<String> {
        idxs.iter().map(|&i| t.unit(i).id.clone()).collect()
    }

    #[test]
    fn builds_the_tree_from_any_order() {
        let t = sample();
        assert_eq!(t.len(), 7);
        assert_eq!(ids(&t, t.roots()), ["county", "city"]);
        assert_eq!(
            ids(&t, t.preorder()),
            [
                "county",
                "county/natres",
                "county/natres/office",
                "county/natres/survey",
                "county/edu",
                "county/edu/school-1",
                "city"
            ]
        );
        assert_eq!(t.parent(0), Some(1));
        assert_eq!(t.parent(2), None);
        assert_eq!(
            ids(&t, t.children(1)),
            ["county/natres/office", "county/natres/survey"]
        );
        assert_eq!((t.depth(2), t.depth(1), t.depth(0)), (0, 1, 2));
        assert_eq!(t.index("county/edu"), Some(3));
        assert_eq!(t.get("county/edu").map(|u| u.name.as_str()), Some("教育局"));
        assert_eq!(t.get("county/nope"), None);
    }

    #[test]
    fn subtree_and_ancestry() {
        let t = sample();
        assert_eq!(
            ids(&t, &t.subtree(2, Some(1))),
            ["county", "county/natres", "county/edu"]
        );
        assert_eq!(t.subtree(2, None).len(), 6);
        assert_eq!(ids(&t, &t.subtree(1, Some(0))), ["county/natres"]);
        assert_eq!(ids(&t, &t.subtree(4, None)), ["county/edu/school-1"]);
        assert!(t.is_ancestor_or_self(2, 0));
        assert!(t.is_ancestor_or_self(1, 1));
        assert!(!t.is_ancestor_or_self(0, 1));
        assert!(!t.is_ancestor_or_self(3, 0));
        assert!(!t.is_ancestor_or_self(6, 4));
    }

    #[test]
    fn resolves_ids_names_and_aliases() {
        let t = sample();
        assert_eq!(t.resolve("某县自然资源局党支部"), Some(1));
        assert_eq!(t.resolve("  某县自然资源局党支部\u{3000}"), Some(1));
        assert_eq!(t.resolve("一中"), Some(4));
        assert_eq!(t.resolve("county/edu"), Some(3));
        assert_eq!(t.resolve("某县教育局"), None);
    }

    #[test]
    fn rejects_bad_definitions() {
        let err = |defs: Vec<UnitDef>| UnitTree::new(defs).unwrap_err();
        for bad in [
            "County",
            "county/",
            "/county",
            "county//x",
            "county/自然",
            "a b",
            "",
        ] {
            assert!(
                matches!(
                    err(vec![def(bad, "x", &[])]),
                    TreeError::BadId { index: 0, .. }
                ),
                "{bad}"
            );
        }
        let e = err(vec![def("a", "A", &[]), def("a", "B", &[])]);
        assert_eq!(
            e,
            TreeError::Duplicate {
                index: 1,
                id: "a".into()
            }
        );
        let e = err(vec![def("a", "A", &[]), def("a/b/c", "C", &[])]);
        assert_eq!(e.index(), 1);
        assert_eq!(
            e.to_string(),
            "unit \"a/b/c\" has no parent: unit \"a/b\" is not defined"
        );
        let e = err(vec![def("a", "A", &["甲"]), def("b", "B", &[" 甲 "])]);
        assert_eq!(
            e.to_string(),
            "\"甲\" names two units, \"a\" and \"b\": names and aliases must be unique"
        );
        assert_eq!(e.index(), 1);
        // A name that is another unit's id would make resolve ambiguous too.
        assert!(matches!(
            err(vec![def("a", "A", &[]), def("b", "a", &[])]),
            TreeError::NameClash { index: 1, .. }
        ));
        // A unit may list its own name as an alias.
        assert!(UnitTree::new(vec![def("a", "A", &["A"])]).is_ok());
    }
}
