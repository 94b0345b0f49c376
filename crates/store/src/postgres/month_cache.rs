//! Whole-month sums of `observation_months` kept in this process, exact
//! across every process writing the database.
//!
//! Invariant: the cache holds, for each month it keeps, exactly the rows of
//! `observation_months` as of `store_version = seen`. Every write transaction
//! stamps the month rows it sums again with the `store_version` it commits
//! (see `writer::refresh_months`), and versions commit in order (the
//! `store_version` row is locked from the stamp to the commit), so a snapshot
//! that reads `store_version = V` sees every row stamped in `(seen, V]` and
//! none stamped later: reading those rows in that snapshot brings the cache
//! to `V`, whichever process wrote them. Month rows are never deleted (a
//! key's observations are replaced, never removed), so there is no deletion
//! to follow.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::NaiveDate;
use postgres::Transaction;

use super::{StoreError, day_num, pg};
use crate::month_lru::MonthLru;
pub(super) use crate::month_lru::MonthRow;

/// Month rows the cache keeps at most (24 bytes each, so ~24 MiB): two
/// years of 1,000 units × 20 indicators. Beyond it, least recently used
/// months are read again from the server. Distinct keys are kept once each
/// besides (ids of their four texts, each text once), until the cache is
/// reset.
pub(super) const MONTH_CACHE_ROWS: usize = 1 << 20;

/// Texts numbered in the order first seen.
#[derive(Clone, Default)]
pub(super) struct Names {
    pub(super) texts: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Names {
    fn get(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    fn intern(&mut self, text: &str) -> u32 {
        if let Some(id) = self.get(text) {
            return id;
        }
        let id = u32::try_from(self.texts.len()).expect("fewer than 2^32 texts");
        self.texts.push(text.to_owned());
        self.ids.insert(text.to_owned(), id);
        id
    }

    /// Each text's place in byte order (the order of `COLLATE "C"`).
    fn ranks(&self) -> Vec<u32> {
        let mut by_text: Vec<u32> = (0..self.texts.len() as u32).collect();
        by_text.sort_unstable_by(|a, b| self.texts[*a as usize].cmp(&self.texts[*b as usize]));
        let mut ranks = vec![0; by_text.len()];
        for (rank, id) in by_text.into_iter().enumerate() {
            ranks[id as usize] = rank as u32;
        }
        ranks
    }
}

/// Interned keys (indicator, unit, source, entity): a key is four text
/// ids, and rows refer to keys by their index in `keys`. Units and
/// indicators are numbered apart so that a read maps each to the caller's
/// index once, not once per row.
#[derive(Clone, Default)]
pub(super) struct KeyTable {
    pub(super) indicators: Names,
    pub(super) units: Names,
    /// Sources and entities.
    pub(super) names: Names,
    /// `[indicator, unit, source, entity]`.
    pub(super) keys: Vec<[u32; 4]>,
    ids: HashMap<[u32; 4], u32>,
    /// Every key id in key order (each text by bytes), once [`sort`](Self::sort)
    /// has run since the last key was added: a key's parts fold in this
    /// order, as the server's `GROUP BY` over the sorted parts does.
    pub(super) order: Vec<u32>,
}

impl KeyTable {
    fn get(&self, [i, u, s, e]: [&str; 4]) -> Option<u32> {
        let key = [
            self.indicators.get(i)?,
            self.units.get(u)?,
            self.names.get(s)?,
            self.names.get(e)?,
        ];
        self.ids.get(&key).copied()
    }

    fn intern(&mut self, [i, u, s, e]: [&str; 4]) -> u32 {
        let key = [
            self.indicators.intern(i),
            self.units.intern(u),
            self.names.intern(s),
            self.names.intern(e),
        ];
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = u32::try_from(self.keys.len()).expect("fewer than 2^32 keys");
        self.keys.push(key);
        self.ids.insert(key, id);
        id
    }

    fn sorted(&self) -> bool {
        self.order.len() == self.keys.len()
    }

    /// Puts every key into `order`; ranks the texts once, so keys compare
    /// as four integers.
    fn sort(&mut self) {
        let (ri, ru, rn) = (
            self.indicators.ranks(),
            self.units.ranks(),
            self.names.ranks(),
        );
        let keys = &self.keys;
        let mut order: Vec<u32> = (0..keys.len() as u32).collect();
        order.sort_unstable_by_key(|&k| {
            let [i, u, s, e] = keys[k as usize];
            (
                ri[i as usize],
                ru[u as usize],
                rn[s as usize],
                rn[e as usize],
            )
        });
        self.order = order;
    }

    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }
}

/// A month's rows sorted by key id, shared with the reads folding it.
type Month = Arc<Vec<MonthRow>>;

pub(super) struct MonthCache {
    /// The `store_version` the kept months are exact at; `None` before the
    /// first read.
    seen: Option<i64>,
    /// Shared with reads in progress; copied only when a key is added
    /// while one of them still holds it.
    keys: Arc<KeyTable>,
    months: MonthLru<NaiveDate, Month>,
}

const ROW_COLUMNS: &str =
    "month, indicator, unit, source, entity, total, last_day, last_value FROM observation_months";

impl MonthCache {
    pub(super) fn new(capacity: usize) -> MonthCache {
        MonthCache {
            seen: None,
            keys: Arc::default(),
            months: MonthLru::new(capacity),
        }
    }

    /// Rows kept over all months.
    #[cfg(test)]
    pub(super) fn rows(&self) -> usize {
        self.months.rows
    }

    /// The key id of `texts` (indicator, unit, source, entity), added if new.
    pub(super) fn intern(&mut self, texts: [&str; 4]) -> u32 {
        match self.keys.get(texts) {
            Some(id) => id,
            None => Arc::make_mut(&mut self.keys).intern(texts),
        }
    }

    /// The keys as they are now, with every key in `order`.
    pub(super) fn keys(&mut self) -> Arc<KeyTable> {
        if !self.keys.sorted() {
            Arc::make_mut(&mut self.keys).sort();
        }
        Arc::clone(&self.keys)
    }

    fn reset(&mut self) {
        *self = MonthCache::new(self.months.capacity);
    }

    /// Brings the cache to the state of `tx`'s snapshot, whose
    /// `store_version` is `now`, and returns the months `[from, to]` in
    /// month order (those it could not keep included), shared with the
    /// cache so that the fold runs without its lock.
    pub(super) fn take(
        &mut self,
        tx: &mut Transaction<'_>,
        now: i64,
        (from, to): (NaiveDate, NaiveDate),
    ) -> Result<Vec<Month>, StoreError> {
        let doing = "reading month sums";
        match self.seen {
            // Versions only grow: a smaller one is another database (or one
            // restored), where nothing kept means anything.
            Some(seen) if now < seen => self.reset(),
            Some(seen) if now > seen && !self.months.months.is_empty() => {
                let loaded: Vec<NaiveDate> = self.months.months.keys().copied().collect();
                let mut changed: BTreeMap<NaiveDate, Vec<MonthRow>> = BTreeMap::new();
                for r in tx
                    .query(
                        &format!("SELECT {ROW_COLUMNS} WHERE version > $1 AND month = ANY($2)"),
                        &[&seen, &loaded],
                    )
                    .map_err(pg(doing))?
                {
                    let (month, row) = self.row(&r)?;
                    changed.entry(month).or_default().push(row);
                }
                for (month, rows) in changed {
                    self.months.update(month, |kept| {
                        // Copied only if a read still folds the old rows.
                        let kept = Arc::make_mut(kept);
                        for row in rows {
                            match kept.binary_search_by_key(&row.key, |r| r.key) {
                                Ok(at) => kept[at] = row,
                                Err(at) => kept.insert(at, row),
                            }
                        }
                    });
                }
            }
            _ => {}
        }
        self.seen = Some(now);
        self.months.start_read();
        let missing: Vec<NaiveDate> = month_range(from, to)
            .filter(|m| self.months.get_if(*m, |_| true).is_none())
            .collect();
        let mut fetched: BTreeMap<NaiveDate, Vec<MonthRow>> =
            missing.iter().map(|&m| (m, Vec::new())).collect();
        if !missing.is_empty() {
            for r in tx
                .query(
                    &format!("SELECT {ROW_COLUMNS} WHERE month = ANY($1)"),
                    &[&missing],
                )
                .map_err(pg(doing))?
            {
                let (month, row) = self.row(&r)?;
                fetched.entry(month).or_default().push(row);
            }
        }
        let mut months = Vec::new();
        for month in month_range(from, to) {
            let rows = match fetched.remove(&month) {
                Some(mut rows) => {
                    rows.sort_unstable_by_key(|r| r.key);
                    let rows = Arc::new(rows);
                    self.months.put(month, Arc::clone(&rows));
                    rows
                }
                None => Arc::clone(self.months.get_if(month, |_| true).expect("kept above")),
            };
            months.push(rows);
        }
        Ok(months)
    }

    fn row(&mut self, r: &postgres::Row) -> Result<(NaiveDate, MonthRow), StoreError> {
        let e = pg("reading month sums");
        let texts = [
            r.try_get(1).map_err(&e)?,
            r.try_get(2).map_err(&e)?,
            r.try_get(3).map_err(&e)?,
            r.try_get(4).map_err(&e)?,
        ];
        let last_day: NaiveDate = r.try_get(6).map_err(&e)?;
        Ok((
            r.try_get(0).map_err(&e)?,
            MonthRow {
                key: self.intern(texts),
                last_day: day_i32(last_day)?,
                sum: r.try_get(5).map_err(&e)?,
                last_value: r.try_get(7).map_err(&e)?,
            },
        ))
    }
}

/// `day_num` of a day the month rows can hold.
pub(super) fn day_i32(day: NaiveDate) -> Result<i32, StoreError> {
    i32::try_from(day_num(day)).map_err(|_| StoreError::Corrupt {
        what: "observation day",
        detail: day.to_string(),
    })
}

/// First days of the months `[from, to]` (both first days).
fn month_range(from: NaiveDate, to: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    std::iter::successors(Some(from), |m| m.checked_add_months(chrono::Months::new(1)))
        .take_while(move |m| *m <= to)
}
