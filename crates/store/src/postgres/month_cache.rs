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

use chrono::NaiveDate;
use postgres::Transaction;

use super::{StoreError, pg};

/// Month rows the cache keeps at most (about 40 bytes each with their map
/// entry, so ~40 MiB): two years of 1,000 units × 20 indicators. Beyond it,
/// least recently used months are read again from the server. Distinct keys
/// are kept once each besides (their four texts), until the cache is reset.
pub(super) const MONTH_CACHE_ROWS: usize = 1 << 20;

/// One key's sums over one month.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct MonthSum {
    pub(super) total: f64,
    pub(super) last_day: NaiveDate,
    pub(super) last_value: f64,
}

/// (indicator, unit, source, entity).
pub(super) type Key = (String, String, String, String);

struct CachedMonth {
    used: u64,
    rows: HashMap<u32, MonthSum>,
}

pub(super) struct MonthCache {
    /// The `store_version` the kept months are exact at; `None` before the
    /// first read.
    seen: Option<i64>,
    /// Interned keys: rows refer to them by index.
    keys: Vec<Key>,
    ids: HashMap<Key, u32>,
    months: BTreeMap<NaiveDate, CachedMonth>,
    /// Rows held over all months, at most `capacity`.
    pub(super) rows: usize,
    capacity: usize,
    /// Bumped once per read, to find the least recently used month.
    clock: u64,
}

const ROW_COLUMNS: &str =
    "month, indicator, unit, source, entity, total, last_day, last_value FROM observation_months";

impl MonthCache {
    pub(super) fn new(capacity: usize) -> MonthCache {
        MonthCache {
            seen: None,
            keys: Vec::new(),
            ids: HashMap::new(),
            months: BTreeMap::new(),
            rows: 0,
            capacity,
            clock: 0,
        }
    }

    pub(super) fn key(&self, id: u32) -> &Key {
        &self.keys[id as usize]
    }

    pub(super) fn key_count(&self) -> usize {
        self.keys.len()
    }

    pub(super) fn intern(&mut self, key: Key) -> u32 {
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = u32::try_from(self.keys.len()).expect("fewer than 2^32 keys");
        self.keys.push(key.clone());
        self.ids.insert(key, id);
        id
    }

    fn reset(&mut self) {
        *self = MonthCache::new(self.capacity);
    }

    /// Brings the cache to the state of `tx`'s snapshot, whose
    /// `store_version` is `now`, makes sure the months `[from, to]` are
    /// there, and returns their rows whose key `wanted` accepts (months the
    /// cache could not keep included), in no particular order.
    pub(super) fn parts(
        &mut self,
        tx: &mut Transaction<'_>,
        now: i64,
        (from, to): (NaiveDate, NaiveDate),
        wanted: impl Fn(&Key) -> bool,
    ) -> Result<Vec<(u32, MonthSum)>, StoreError> {
        let doing = "reading month sums";
        match self.seen {
            // Versions only grow: a smaller one is another database (or one
            // restored), where nothing kept means anything.
            Some(seen) if now < seen => self.reset(),
            Some(seen) if now > seen && !self.months.is_empty() => {
                let loaded: Vec<NaiveDate> = self.months.keys().copied().collect();
                let changed = tx
                    .query(
                        &format!("SELECT {ROW_COLUMNS} WHERE version > $1 AND month = ANY($2)"),
                        &[&seen, &loaded],
                    )
                    .map_err(pg(doing))?;
                for r in changed {
                    let (month, id, sum) = self.row(&r).map_err(pg(doing))?;
                    let cached = self
                        .months
                        .get_mut(&month)
                        .expect("asked for loaded months");
                    if cached.rows.insert(id, sum).is_none() {
                        self.rows += 1;
                    }
                }
            }
            _ => {}
        }
        self.seen = Some(now);
        self.clock += 1;
        let missing: Vec<NaiveDate> = month_range(from, to)
            .filter(|m| !self.months.contains_key(m))
            .collect();
        let mut fetched: BTreeMap<NaiveDate, HashMap<u32, MonthSum>> =
            missing.iter().map(|&m| (m, HashMap::new())).collect();
        if !missing.is_empty() {
            for r in tx
                .query(
                    &format!("SELECT {ROW_COLUMNS} WHERE month = ANY($1)"),
                    &[&missing],
                )
                .map_err(pg(doing))?
            {
                let (month, id, sum) = self.row(&r).map_err(pg(doing))?;
                fetched.entry(month).or_default().insert(id, sum);
            }
        }
        // Whether a key is wanted, decided once per key.
        let mut verdicts: HashMap<u32, bool> = HashMap::new();
        let mut out = Vec::new();
        for month in month_range(from, to) {
            let fresh = fetched.remove(&month);
            let rows = match &fresh {
                Some(rows) => rows,
                None => {
                    let cached = self.months.get_mut(&month).expect("loaded above");
                    cached.used = self.clock;
                    &cached.rows
                }
            };
            for (&id, &sum) in rows {
                let keep = *verdicts
                    .entry(id)
                    .or_insert_with(|| wanted(&self.keys[id as usize]));
                if keep {
                    out.push((id, sum));
                }
            }
            if let Some(rows) = fresh {
                self.put(month, rows);
            }
        }
        Ok(out)
    }

    fn row(&mut self, r: &postgres::Row) -> Result<(NaiveDate, u32, MonthSum), postgres::Error> {
        let key = (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?);
        Ok((
            r.try_get(0)?,
            self.intern(key),
            MonthSum {
                total: r.try_get(5)?,
                last_day: r.try_get(6)?,
                last_value: r.try_get(7)?,
            },
        ))
    }

    /// Keeps `rows` as `month`. Makes room by dropping the least recently
    /// used months, never one the current read used; a month that still
    /// does not fit is not kept.
    fn put(&mut self, month: NaiveDate, rows: HashMap<u32, MonthSum>) {
        if let Some(old) = self.months.remove(&month) {
            self.rows -= old.rows.len();
        }
        while self.rows + rows.len() > self.capacity {
            let oldest = self
                .months
                .iter()
                .filter(|(_, c)| c.used < self.clock)
                .min_by_key(|(_, c)| c.used)
                .map(|(&m, _)| m);
            let Some(oldest) = oldest else { return };
            if let Some(old) = self.months.remove(&oldest) {
                self.rows -= old.rows.len();
            }
        }
        self.rows += rows.len();
        self.months.insert(
            month,
            CachedMonth {
                used: self.clock,
                rows,
            },
        );
    }
}

/// First days of the months `[from, to]` (both first days).
fn month_range(from: NaiveDate, to: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    std::iter::successors(Some(from), |m| m.checked_add_months(chrono::Months::new(1)))
        .take_while(move |m| *m <= to)
}
