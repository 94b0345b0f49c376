//! Whole months of `monthly` kept in memory by the reader, and the
//! `monthly_versions` bump every writer of `monthly` makes.
//!
//! Invariant: a cached month is used only while its version, read in the
//! fold's own snapshot, is the one it was read at; every write of `monthly`
//! bumps the versions of its months in the same transaction
//! ([`bump_month_versions`]).

use std::collections::BTreeSet;

use rusqlite::Connection;

use super::StoreError;
use crate::month_lru::MonthLru;
pub(super) use crate::month_lru::MonthRow;

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
    pub(super) lru: MonthLru<i64, CachedMonth>,
}

pub(super) struct CachedMonth {
    version: i64,
    /// By key id, as `monthly` returns them.
    pub(super) rows: Vec<MonthRow>,
}

impl crate::month_lru::Rows for CachedMonth {
    fn rows(&self) -> usize {
        self.rows.len()
    }
}

impl MonthCache {
    pub(super) fn new(capacity: usize) -> MonthCache {
        MonthCache {
            lru: MonthLru::new(capacity),
        }
    }

    /// Starts a fold: months it uses from now on stay while it puts others.
    pub(super) fn start_read(&mut self) {
        self.lru.start_read();
    }

    /// The rows of `month` if they were read at `version`.
    pub(super) fn get(&mut self, month: i64, version: i64) -> Option<&[MonthRow]> {
        self.lru
            .get_if(month, |c| c.version == version)
            .map(|c| &c.rows[..])
    }

    /// Keeps `rows` as `month` at `version`, replacing an older copy (see
    /// [`MonthLru::put`]).
    pub(super) fn put(&mut self, month: i64, version: i64, rows: Vec<MonthRow>) {
        self.lru.put(month, CachedMonth { version, rows });
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
