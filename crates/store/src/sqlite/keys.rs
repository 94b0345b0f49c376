//! Key ids in memory: the writer's map from (source, unit, indicator,
//! entity) to id, and the reader's interned cache of every key.
//!
//! Invariant: keys are only ever added, never deleted nor renumbered, so a
//! committed id stays right for the life of the database; the writer forgets
//! the ids a transaction inserted when it does not commit, and the reader
//! catches up by reading ids above the highest one it holds.

use std::collections::{HashMap, HashSet};

use rusqlite::{OptionalExtension, Transaction, params};

use super::StoreError;
use tally_domain::Observation;

/// Key ids the writer has seen, so that a run finds its keys in memory
/// instead of querying `keys` once per key. Keys are never deleted nor
/// renumbered, so a committed id stays right for the life of the database;
/// ids inserted by a transaction that then fails are forgotten with it.
#[derive(Default)]
pub(super) struct WriterKeys {
    /// By source, then by [`key_text`] of unit, indicator and entity. A
    /// source is loaded whole the first time it writes, so that a key this
    /// map lacks is new (or added since by another process).
    ids: HashMap<String, HashMap<String, i64>>,
    /// Keys inserted by the transaction in progress.
    pub(super) added: Vec<(String, String)>,
    /// Reused for [`key_text`].
    text: String,
}

impl WriterKeys {
    /// The id of a key, inserting it when it is new; `new` gets the ids
    /// inserted now, whose rows therefore need no reading.
    pub(super) fn id(
        &mut self,
        tx: &Transaction<'_>,
        source: &str,
        o: &Observation,
        new: &mut HashSet<i64>,
    ) -> Result<i64, StoreError> {
        let e = |source| StoreError::Sqlite {
            doing: "recording a run's keys",
            source,
        };
        let WriterKeys { ids, added, text } = self;
        key_text(text, &o.unit, &o.indicator, &o.entity);
        let known = match ids.get_mut(source) {
            Some(known) => known,
            None => {
                let mut known = HashMap::new();
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT id, unit, indicator, entity FROM keys WHERE source = ?1",
                    )
                    .map_err(e)?;
                let mut rows = stmt.query([source]).map_err(e)?;
                let mut buf = String::new();
                while let Some(r) = rows.next().map_err(e)? {
                    let part = |i| r.get_ref(i).and_then(|v| Ok(v.as_str()?));
                    key_text(
                        &mut buf,
                        part(1).map_err(e)?,
                        part(2).map_err(e)?,
                        part(3).map_err(e)?,
                    );
                    known.insert(buf.clone(), r.get(0).map_err(e)?);
                }
                ids.entry(source.to_owned()).or_insert(known)
            }
        };
        if let Some(&id) = known.get(text.as_str()) {
            return Ok(id);
        }
        let args = params![source, o.unit, o.indicator, o.entity];
        let inserted = tx
            .prepare_cached(
                "INSERT INTO keys (source, unit, indicator, entity) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT DO NOTHING RETURNING id",
            )
            .map_err(e)?
            .query_row(args, |r| r.get(0))
            .optional()
            .map_err(e)?;
        let id = match inserted {
            Some(id) => {
                added.push((source.to_owned(), text.clone()));
                new.insert(id);
                id
            }
            // Another process (`tallyd collect` beside the daemon) added it
            // since the source was loaded.
            None => tx
                .prepare_cached(
                    "SELECT id FROM keys WHERE source = ?1 AND unit = ?2 AND indicator = ?3 AND entity = ?4",
                )
                .map_err(e)?
                .query_row(args, |r| r.get(0))
                .map_err(e)?,
        };
        known.insert(text.clone(), id);
        Ok(id)
    }

    /// Drops the ids inserted by a transaction that did not commit.
    pub(super) fn forget_added(&mut self) {
        for (source, text) in self.added.drain(..) {
            if let Some(m) = self.ids.get_mut(&source) {
                m.remove(&text);
            }
        }
    }
}

/// Unit, indicator and entity as one map key, each part prefixed with its
/// length so that no two keys give the same text.
fn key_text(buf: &mut String, unit: &str, indicator: &str, entity: &str) {
    use std::fmt::Write;
    buf.clear();
    for part in [unit, indicator, entity] {
        let _ = write!(buf, "{}:", part.len());
        buf.push_str(part);
    }
}

/// Every key the reader has seen, with its unit, indicator and (unit,
/// indicator) group interned, so that folding tens of thousands of keys into
/// per-unit values is indexing rather than hashing strings. Keys are only
/// ever added, so the cache is brought up to date by reading ids above the
/// highest one known.
#[derive(Default)]
pub(super) struct KeyCache {
    /// Indexed by key id: the key's group and entity.
    pub(super) keys: Vec<Option<(usize, String)>>,
    /// Unit (an index into `units`) and indicator (into `indicators`) of
    /// each group.
    pub(super) groups: Vec<(usize, usize)>,
    group_of: HashMap<(usize, usize), usize>,
    pub(super) units: Vec<String>,
    unit_of: HashMap<String, usize>,
    pub(super) indicators: Vec<String>,
    indicator_of: HashMap<String, usize>,
}

/// The index of `s` in `list`, added if new.
fn intern(list: &mut Vec<String>, index: &mut HashMap<String, usize>, s: String) -> usize {
    if let Some(&i) = index.get(&s) {
        return i;
    }
    list.push(s.clone());
    index.insert(s, list.len() - 1);
    list.len() - 1
}

impl KeyCache {
    pub(super) fn add(&mut self, id: usize, unit: String, indicator: String, entity: String) {
        let unit = intern(&mut self.units, &mut self.unit_of, unit);
        let ind = intern(&mut self.indicators, &mut self.indicator_of, indicator);
        let group = *self.group_of.entry((unit, ind)).or_insert_with(|| {
            self.groups.push((unit, ind));
            self.groups.len() - 1
        });
        if self.keys.len() <= id {
            self.keys.resize_with(id + 1, || None);
        }
        self.keys[id] = Some((group, entity));
    }
}
