//! Raw observations as stored, for the API's listing: paged by a cursor.
//!
//! Invariant: a page reads nothing past its last row but the keys of the unit
//! it ends in, so paging through a large listing costs what it returns.

use chrono::NaiveDate;
use rusqlite::params;

use super::{ObservationCursor, SqliteStore, StoreError, StoredObservation};
use super::{day_num, lock, num_day};
use tally_domain::Observation;

impl SqliteStore {
    /// [`Store::observations_page`]: for each unit from the cursor's on, its
    /// keys in (source, entity) order from the cursor's key on, and each
    /// key's days through the primary key, stopping at `limit`; nothing is
    /// read past the page but the keys of the unit it ends in.
    pub(super) fn observations_page_seek(
        &self,
        units: &[&str],
        indicator: &str,
        start: NaiveDate,
        end: NaiveDate,
        after: Option<&ObservationCursor>,
        limit: usize,
    ) -> Result<Vec<StoredObservation>, StoreError> {
        let e = |source| StoreError::Sqlite {
            doing: "reading a page of observations",
            source,
        };
        let first = match after {
            None => 0,
            Some(cursor) => match units.iter().position(|u| *u == cursor.unit) {
                Some(position) => position,
                None => return Ok(Vec::new()),
            },
        };
        let mut out = Vec::with_capacity(limit.min(4096));
        if limit == 0 {
            return Ok(out);
        }
        let mut r = lock(&self.reader);
        let tx = r.conn.transaction().map_err(e)?;
        {
            let mut keys = tx
                .prepare_cached(
                    "SELECT id, source, entity FROM keys \
                     WHERE indicator = ?1 AND unit = ?2 AND (source, entity) >= (?3, ?4) \
                     ORDER BY source, entity",
                )
                .map_err(e)?;
            let mut days = tx
                .prepare_cached(
                    "SELECT day, value, run FROM observations \
                     WHERE key = ?1 AND day BETWEEN ?2 AND ?3 ORDER BY day LIMIT ?4",
                )
                .map_err(e)?;
            'units: for unit in &units[first..] {
                let resume = after.filter(|c| c.unit == *unit);
                let (from_source, from_entity) =
                    resume.map_or(("", ""), |c| (c.source.as_str(), c.entity.as_str()));
                let mut key_rows = keys
                    .query(params![indicator, unit, from_source, from_entity])
                    .map_err(e)?;
                while let Some(key) = key_rows.next().map_err(e)? {
                    let id: i64 = key.get(0).map_err(e)?;
                    let source: String = key.get(1).map_err(e)?;
                    let entity: String = key.get(2).map_err(e)?;
                    let mut from = day_num(start);
                    if let Some(c) = resume.filter(|c| c.source == source && c.entity == entity) {
                        from = from.max(day_num(c.day) + 1);
                    }
                    let room = (limit - out.len()) as i64;
                    let mut rows = days
                        .query(params![id, from, day_num(end), room])
                        .map_err(e)?;
                    while let Some(row) = rows.next().map_err(e)? {
                        out.push(StoredObservation {
                            observation: Observation {
                                source: source.clone(),
                                unit: unit.to_string(),
                                indicator: indicator.to_string(),
                                entity: entity.clone(),
                                day: num_day(row.get(0).map_err(e)?)?,
                                value: row.get(1).map_err(e)?,
                            },
                            run_id: row.get(2).map_err(e)?,
                        });
                    }
                    if out.len() >= limit {
                        break 'units;
                    }
                }
            }
        }
        tx.commit().map_err(e)?;
        Ok(out)
    }
}

impl SqliteStore {
    pub(super) fn read_observations(
        &self,
        units: &[&str],
        indicator: &str,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<Vec<StoredObservation>, StoreError> {
        let e = |source| StoreError::Sqlite {
            doing: "reading observations",
            source,
        };
        let mut r = lock(&self.reader);
        let tx = r.conn.transaction().map_err(e)?;
        let mut out = Vec::new();
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT k.source, k.entity, o.day, o.value, o.run \
                     FROM keys k JOIN observations o ON o.key = k.id \
                     WHERE k.indicator = ?1 AND k.unit = ?2 AND o.day BETWEEN ?3 AND ?4 \
                     ORDER BY k.source, k.entity, o.day",
                )
                .map_err(e)?;
            for unit in units {
                let mut rows = stmt
                    .query(params![indicator, unit, day_num(start), day_num(end)])
                    .map_err(e)?;
                while let Some(row) = rows.next().map_err(e)? {
                    out.push(StoredObservation {
                        observation: Observation {
                            source: row.get(0).map_err(e)?,
                            unit: unit.to_string(),
                            indicator: indicator.to_string(),
                            entity: row.get(1).map_err(e)?,
                            day: num_day(row.get(2).map_err(e)?)?,
                            value: row.get(3).map_err(e)?,
                        },
                        run_id: row.get(4).map_err(e)?,
                    });
                }
            }
        }
        tx.commit().map_err(e)?;
        Ok(out)
    }
}
