//! Folding stored values over a period: whole months from `monthly` (through
//! the month cache), the partial months at either edge from raw rows, then
//! per (unit, indicator) as each indicator's kind says.
//!
//! Invariant: one read transaction per fold, so the key refresh, the month
//! versions and both scans see the same snapshot; months are folded in month
//! order, so sums equal a single scan of `monthly` to the last bit.

use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, NaiveDate};
use rusqlite::{Connection, params};

use super::keys::KeyCache;
use super::month_cache::{MonthCache, MonthRow};
use super::{EntityValue, OwnData, OwnValue, Reader, SqliteStore, StoreError};
use super::{day_num, lock, month_days, month_num};
use tally_domain::Kind;

/// The fold of one key's values over the period.
#[derive(Clone, Copy, Default)]
pub(super) struct Acc {
    seen: bool,
    sum: f64,
    last_day: i64,
    last_value: f64,
}

impl Acc {
    pub(super) fn add(&mut self, sum: f64, last_day: i64, last_value: f64) {
        self.sum += sum;
        if !self.seen || last_day > self.last_day {
            self.last_day = last_day;
            self.last_value = last_value;
        }
        self.seen = true;
    }
}

fn key_index(id: i64, accs: &[Acc]) -> Result<usize, StoreError> {
    usize::try_from(id)
        .ok()
        .filter(|&i| i < accs.len())
        .ok_or_else(|| StoreError::Corrupt {
            what: "observation",
            detail: format!("it refers to key {id}, which does not exist"),
        })
}

/// Folds the whole months `first..=last` of `monthly` into `accs`, in month
/// order (as one scan of `monthly` would, so sums are the same to the last
/// bit), taking each month from `cache` when its version in this snapshot is
/// the one it was read at, and reading it (and caching it) otherwise.
fn fold_months(
    tx: &Connection,
    cache: &mut MonthCache,
    first: i64,
    last: i64,
    accs: &mut [Acc],
) -> Result<(), StoreError> {
    let e = |source| StoreError::Sqlite {
        doing: "reading monthly values",
        source,
    };
    cache.start_read();
    let versions: HashMap<i64, i64> = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT month, version FROM monthly_versions WHERE month BETWEEN ?1 AND ?2",
            )
            .map_err(e)?;
        stmt.query_map([first, last], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(e)?
            .collect::<Result<_, _>>()
            .map_err(e)?
    };
    let mut read = tx
        .prepare_cached("SELECT key, sum, last_day, last_value FROM monthly WHERE month = ?1")
        .map_err(e)?;
    for month in first..=last {
        let version = versions.get(&month).copied().unwrap_or(0);
        if let Some(rows) = cache.get(month, version) {
            fold_month_rows(rows, accs)?;
            continue;
        }
        let mut rows = Vec::new();
        let mut q = read.query([month]).map_err(e)?;
        while let Some(r) = q.next().map_err(e)? {
            let (key, last_day): (i64, i64) = (r.get(0).map_err(e)?, r.get(2).map_err(e)?);
            let corrupt = || StoreError::Corrupt {
                what: "monthly value",
                detail: format!("month {month}, key {key}, last day {last_day}"),
            };
            rows.push(MonthRow {
                key: u32::try_from(key).map_err(|_| corrupt())?,
                last_day: i32::try_from(last_day).map_err(|_| corrupt())?,
                sum: r.get(1).map_err(e)?,
                last_value: r.get(3).map_err(e)?,
            });
        }
        fold_month_rows(&rows, accs)?;
        cache.put(month, version, rows);
    }
    Ok(())
}

fn fold_month_rows(rows: &[MonthRow], accs: &mut [Acc]) -> Result<(), StoreError> {
    for r in rows {
        let i = key_index(i64::from(r.key), accs)?;
        accs[i].add(r.sum, i64::from(r.last_day), r.last_value);
    }
    Ok(())
}

impl SqliteStore {
    /// Folds every key's values over `[start, end]` (one read transaction:
    /// whole months from `monthly`, the partial edges from raw rows) and
    /// hands the keys and their folds to `f`, indexed by key id.
    pub(super) fn fold_keys<R>(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        f: impl FnOnce(&KeyCache, &[Acc]) -> R,
    ) -> Result<R, StoreError> {
        let e = |source| StoreError::Sqlite {
            doing: "reading values",
            source,
        };
        let mut guard = lock(&self.reader);
        let Reader {
            conn, keys, months, ..
        } = &mut *guard;
        // One read transaction, so the key refresh and both scans see the
        // same snapshot even while a run commits.
        let tx = conn.transaction().map_err(e)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT id, unit, indicator, entity FROM keys WHERE id >= ?1 ORDER BY id",
                )
                .map_err(e)?;
            let rows = stmt
                .query_map([keys.keys.len() as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(e)?;
            for row in rows {
                let (id, unit, indicator, entity) = row.map_err(e)?;
                let id = usize::try_from(id).map_err(|_| StoreError::Corrupt {
                    what: "key",
                    detail: format!("id {id}"),
                })?;
                keys.add(id, unit, indicator, entity);
            }
        }

        let mut accs = vec![Acc::default(); keys.keys.len()];
        let (s, e_day) = (day_num(start), day_num(end));
        // Whole months come from the aggregate; only the partial months at
        // either edge are read from raw rows.
        let first_full = month_num(start) + i64::from(start.day() != 1);
        let last_full = month_num(end) - i64::from(end.succ_opt().is_some_and(|n| n.day() != 1));
        let mut raw_ranges = Vec::with_capacity(2);
        let full = if first_full <= last_full {
            match (month_days(first_full), month_days(last_full)) {
                (Some((full_from, _)), Some((_, full_to))) => Some((full_from, full_to)),
                _ => None,
            }
        } else {
            None
        };
        match full {
            Some((full_from, full_to)) => {
                fold_months(&tx, months, first_full, last_full, &mut accs)?;
                if s < full_from {
                    raw_ranges.push((s, full_from - 1));
                }
                if full_to < e_day {
                    raw_ranges.push((full_to + 1, e_day));
                }
            }
            None => raw_ranges.push((s, e_day)),
        }
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT key, day, value FROM observations WHERE day BETWEEN ?1 AND ?2",
                )
                .map_err(e)?;
            for (from, to) in raw_ranges {
                let mut rows = stmt.query(params![from, to]).map_err(e)?;
                while let Some(r) = rows.next().map_err(e)? {
                    let i = key_index(r.get(0).map_err(e)?, &accs)?;
                    let value = r.get(2).map_err(e)?;
                    accs[i].add(value, r.get(1).map_err(e)?, value);
                }
            }
        }
        tx.commit().map_err(e)?;

        Ok(f(keys, &accs))
    }
}

/// The kind of each interned indicator, `None` for those not asked for.
fn kinds_of(keys: &KeyCache, indicators: &[(String, Kind)]) -> Vec<Option<Kind>> {
    keys.indicators
        .iter()
        .map(|id| indicators.iter().find(|(i, _)| i == id).map(|(_, k)| *k))
        .collect()
}

/// Hands `emit` the own value of each (unit, indicator) group with data, in
/// group order.
pub(super) fn own_from_folds(
    keys: &KeyCache,
    accs: &[Acc],
    indicators: &[(String, Kind)],
    mut emit: impl FnMut(usize, OwnData),
) {
    let kind_of_indicator = kinds_of(keys, indicators);
    let mut numbers: Vec<Option<f64>> = vec![None; keys.groups.len()];
    let mut entities: BTreeMap<usize, HashMap<&str, f64>> = BTreeMap::new();
    for (acc, key) in accs.iter().zip(keys.keys.iter()) {
        let (true, Some((group, entity))) = (acc.seen, key) else {
            continue;
        };
        let (_, ind) = keys.groups[*group];
        match kind_of_indicator[ind] {
            None => {}
            Some(Kind::Count) => {
                numbers[*group] = Some(numbers[*group].unwrap_or(0.0) + acc.sum);
            }
            Some(Kind::Level) => {
                numbers[*group] = Some(numbers[*group].unwrap_or(0.0) + acc.last_value);
            }
            Some(Kind::Distinct) => {
                *entities
                    .entry(*group)
                    .or_default()
                    .entry(entity.as_str())
                    .or_insert(0.0) += acc.sum;
            }
        }
    }
    // A group's indicator has one kind, so a group is in `numbers` or in
    // `entities`, never both: walk both in group order.
    let mut sets = entities.into_iter().peekable();
    for (group, number) in numbers.into_iter().enumerate() {
        let data = match number {
            Some(n) => OwnData::Number(n),
            None => match sets.next_if(|(g, _)| *g == group) {
                Some((_, m)) => OwnData::Entities(
                    m.into_iter()
                        .filter(|&(_, v)| v != 0.0)
                        .map(|(k, _)| k.to_string())
                        .collect(),
                ),
                None => continue,
            },
        };
        emit(group, data);
    }
}

/// The own values of [`own_from_folds`] named by unit and indicator id.
pub(super) fn named_own_values(
    keys: &KeyCache,
    accs: &[Acc],
    indicators: &[(String, Kind)],
) -> Vec<OwnValue> {
    let mut out = Vec::new();
    own_from_folds(keys, accs, indicators, |group, data| {
        let (unit, ind) = keys.groups[group];
        out.push(OwnValue {
            unit: keys.units[unit].clone(),
            indicator: keys.indicators[ind].clone(),
            data,
        });
    });
    out
}

/// The own values of [`own_from_folds`] by position: `unit_index` gives a
/// unit's, and an indicator's is its place in `indicators`; values of units
/// it does not know are left out.
pub(super) fn indexed_own_values(
    keys: &KeyCache,
    accs: &[Acc],
    indicators: &[(String, Kind)],
    unit_index: &dyn Fn(&str) -> Option<usize>,
) -> Vec<(usize, usize, OwnData)> {
    // Each interned unit and indicator is looked up once, not once
    // per value.
    let units: Vec<Option<usize>> = keys.units.iter().map(|u| unit_index(u)).collect();
    let positions: Vec<Option<usize>> = keys
        .indicators
        .iter()
        .map(|id| indicators.iter().position(|(i, _)| i == id))
        .collect();
    let mut out = Vec::with_capacity(keys.groups.len());
    own_from_folds(keys, accs, indicators, |group, data| {
        let (unit, ind) = keys.groups[group];
        if let (Some(unit), Some(ind)) = (units[unit], positions[ind]) {
            out.push((unit, ind, data));
        }
    });
    out
}

/// Per (unit, indicator, entity): `level` the last value per source, summed
/// over sources; `count` and `distinct` the sum.
pub(super) fn entities_from_folds(
    keys: &KeyCache,
    accs: &[Acc],
    indicators: &[(String, Kind)],
) -> Vec<EntityValue> {
    let kind_of_indicator = kinds_of(keys, indicators);
    let mut values: HashMap<(usize, &str), f64> = HashMap::new();
    for (acc, key) in accs.iter().zip(keys.keys.iter()) {
        let (true, Some((group, entity))) = (acc.seen, key) else {
            continue;
        };
        let (_, ind) = keys.groups[*group];
        let v = match kind_of_indicator[ind] {
            None => continue,
            Some(Kind::Level) => acc.last_value,
            Some(Kind::Count | Kind::Distinct) => acc.sum,
        };
        *values.entry((*group, entity.as_str())).or_insert(0.0) += v;
    }
    values
        .into_iter()
        .map(|((group, entity), value)| {
            let (unit, ind) = keys.groups[group];
            EntityValue {
                unit: keys.units[unit].clone(),
                indicator: keys.indicators[ind].clone(),
                entity: entity.to_owned(),
                value,
            }
        })
        .collect()
}
