//! Whole months of `monthly` kept in memory by the reader, and the
//! `monthly_versions` bump every writer of `monthly` makes.
//!
//! Invariant: a cached month is used only while its version, read in the
//! fold's own snapshot, is the one it was read at; every write of `monthly`
//! bumps the versions of its months in the same transaction
//! ([`bump_month_versions`]).

use std::collections::{BTreeSet, HashMap};

use rusqlite::Connection;

use super::StoreError;

/// Rows of `monthly` the month cache keeps at most: 24 bytes each, so 24 MiB,
/// two years of 1,000 units × 20 indicators (a year summary and the year
/// before it). Beyond it, least recently used months are read again.
pub(super) const MONTH_CACHE_ROWS: usize = 1 << 20;

/// Whole months of `monthly` as last read, so that a summary over months it
/// already read folds memory instead of scanning SQLite again (the past
/// rarely changes; re-collection does change it).
///
/// Each month carries the `monthly_versions` version it was read at, and a
/// fold uses it only when the version read inside the fold's own snapshot is
/// the same. Every write of `monthly` bumps the versions of its months in the
/// same transaction, so a cached month is exactly what the snapshot would
/// read, whichever process wrote: there is no window in which stale rows are
/// served, nor cached and fresh months from two states of the database mixed.
pub(super) struct MonthCache {
    pub(super) months: HashMap<i64, CachedMonth>,
    /// Rows held over all months, at most `capacity`.
    pub(super) rows: usize,
    pub(super) capacity: usize,
    /// Bumped once per fold, to find the least recently used month.
    pub(super) clock: u64,
}

pub(super) struct CachedMonth {
    version: i64,
    used: u64,
    /// By key id, as `monthly` returns them.
    pub(super) rows: Vec<MonthRow>,
}

/// One `monthly` row in 24 bytes.
#[derive(Clone, Copy)]
pub(super) struct MonthRow {
    pub(super) key: u32,
    pub(super) last_day: i32,
    pub(super) sum: f64,
    pub(super) last_value: f64,
}

impl MonthCache {
    pub(super) fn new(capacity: usize) -> MonthCache {
        MonthCache {
            months: HashMap::new(),
            rows: 0,
            capacity,
            clock: 0,
        }
    }

    /// The rows of `month` if they were read at `version`.
    pub(super) fn get(&mut self, month: i64, version: i64) -> Option<&[MonthRow]> {
        let clock = self.clock;
        let cached = self
            .months
            .get_mut(&month)
            .filter(|c| c.version == version)?;
        cached.used = clock;
        Some(&cached.rows)
    }

    /// Keeps `rows` as `month` at `version`, replacing an older copy. Makes
    /// room by dropping the least recently used months, never one the
    /// current fold used; a month that still does not fit is not kept.
    pub(super) fn put(&mut self, month: i64, version: i64, rows: Vec<MonthRow>) {
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
                version,
                used: self.clock,
                rows,
            },
        );
    }
}

/// Records, inside the writer's transaction, that the `monthly` rows of
/// `months` changed, so that readers stop using their cached copies (see
/// [`MonthCache`]). Every write of `monthly` calls it before committing.
pub(super) fn bump_month_versions(
    tx: &Connection,
    months: impl IntoIterator<Item = i64>,
) -> Result<(), StoreError> {
    let e = |source| StoreError::Sqlite {
        doing: "recording which months changed",
        source,
    };
    let months: BTreeSet<i64> = months.into_iter().collect();
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO monthly_versions (month, version) VALUES (?1, 1) \
             ON CONFLICT (month) DO UPDATE SET version = version + 1",
        )
        .map_err(e)?;
    for month in months {
        stmt.execute([month]).map_err(e)?;
    }
    Ok(())
}
