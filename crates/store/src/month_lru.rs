//! What both stores' month caches share: a month's sums in 24 bytes a key,
//! and the least-recently-used bookkeeping that bounds how many rows they
//! keep (SQLite's `sqlite/month_cache.rs`, PostgreSQL's
//! `postgres/month_cache.rs`; each decides when a kept month is still exact).

use std::collections::BTreeMap;
use std::sync::Arc;

/// One key's sums over one month.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct MonthRow {
    /// The key's id in the store's own numbering.
    pub(crate) key: u32,
    /// Last observed day of the month, as `sqlite::day_num`.
    pub(crate) last_day: i32,
    pub(crate) sum: f64,
    pub(crate) last_value: f64,
}

/// How many rows a kept value counts for against the capacity.
pub(crate) trait Rows {
    fn rows(&self) -> usize;
}

impl<T> Rows for Vec<T> {
    fn rows(&self) -> usize {
        self.len()
    }
}

impl<T: Rows> Rows for Arc<T> {
    fn rows(&self) -> usize {
        T::rows(self)
    }
}

pub(crate) struct Slot<V> {
    pub(crate) used: u64,
    pub(crate) value: V,
}

/// Months (any ordered key) with their rows, at most `capacity` rows in
/// all; the least recently used go first. A read calls
/// [`start_read`](Self::start_read) first: months it uses from then on are
/// never dropped to make room for others it reads.
pub(crate) struct MonthLru<M, V> {
    pub(crate) months: BTreeMap<M, Slot<V>>,
    /// Rows held over all months, at most `capacity`.
    pub(crate) rows: usize,
    pub(crate) capacity: usize,
    /// Bumped once per read.
    clock: u64,
}

impl<M: Ord + Copy, V: Rows> MonthLru<M, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        MonthLru {
            months: BTreeMap::new(),
            rows: 0,
            capacity,
            clock: 0,
        }
    }

    pub(crate) fn start_read(&mut self) {
        self.clock += 1;
    }

    /// `month`'s value if `fresh` accepts it, marked used by this read.
    pub(crate) fn get_if(&mut self, month: M, fresh: impl FnOnce(&V) -> bool) -> Option<&V> {
        let clock = self.clock;
        let slot = self.months.get_mut(&month).filter(|s| fresh(&s.value))?;
        slot.used = clock;
        Some(&slot.value)
    }

    /// Changes `month`'s value in place (rows counted again), without
    /// marking it used.
    pub(crate) fn update<R>(&mut self, month: M, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let slot = self.months.get_mut(&month)?;
        let before = slot.value.rows();
        let out = f(&mut slot.value);
        self.rows = self.rows - before + slot.value.rows();
        Some(out)
    }

    /// Keeps `value` as `month`, replacing an older copy. Makes room by
    /// dropping the least recently used months, never one the current read
    /// used; a month that still does not fit is not kept.
    pub(crate) fn put(&mut self, month: M, value: V) {
        if let Some(old) = self.months.remove(&month) {
            self.rows -= old.value.rows();
        }
        let rows = value.rows();
        while self.rows + rows > self.capacity {
            let oldest = self
                .months
                .iter()
                .filter(|(_, s)| s.used < self.clock)
                .min_by_key(|(_, s)| s.used)
                .map(|(&m, _)| m);
            let Some(oldest) = oldest else { return };
            if let Some(old) = self.months.remove(&oldest) {
                self.rows -= old.value.rows();
            }
        }
        self.rows += rows;
        self.months.insert(
            month,
            Slot {
                used: self.clock,
                value,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_month_goes_first_and_never_one_the_read_uses() {
        let mut lru: MonthLru<u32, Vec<u8>> = MonthLru::new(4);
        lru.start_read();
        lru.put(1, vec![0; 2]);
        lru.put(2, vec![0; 2]);
        lru.start_read();
        assert!(lru.get_if(1, |_| true).is_some());
        // Month 2 is the least recently used: it makes room for 3.
        lru.put(3, vec![0; 2]);
        assert_eq!(lru.months.keys().copied().collect::<Vec<_>>(), [1, 3]);
        assert_eq!(lru.rows, 4);
        // Both kept months were used by this read: 4 is not kept.
        lru.put(4, vec![0; 1]);
        assert_eq!(lru.months.keys().copied().collect::<Vec<_>>(), [1, 3]);
        // A stale copy is not served, and an update recounts rows.
        assert!(lru.get_if(1, |v| v.len() == 5).is_none());
        lru.update(1, |v| v.pop());
        assert_eq!(lru.rows, 3);
    }
}
