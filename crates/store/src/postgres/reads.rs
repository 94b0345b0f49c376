//! The read path: every read is one statement, or runs in one read-only,
//! repeatable-read transaction, so that what it combines comes from one
//! snapshot even while other processes commit. The reads of every run and
//! of the sources page are single statements prepared once per connection
//! (`session.rs`): a transaction's begin and commit would double their round
//! trips.
//!
//! Invariant: no answer is older than the database's state when the call
//! began: the only thing kept between calls, the month cache, is brought
//! to each read's own snapshot before it serves (see `month_cache.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{Datelike, Months, NaiveDate};
use postgres::{IsolationLevel, Transaction};

use super::month_cache::{KeyTable, day_i32};
use super::{
    Coverage, EntityValue, KeyFold, LAST_SUCCESS, LatestRun, ObservationCursor, OwnData, OwnValue,
    PostgresStore, RUN_COLUMN_COUNT, RUN_COLUMNS, ResumePoint, RunResult, SourceRuns, SourceStatus,
    StoreError, StoredObservation, StoredRun, counts, current_version, day_num, fold_runs,
    from_millis, last_success, lock, num_day, off_async, own_from_keys, pg, resume_state,
    stored_run, stored_run_at,
};
use tally_domain::{Kind, Observation};

impl PostgresStore {
    /// Runs `f` in a read-only snapshot.
    fn read<R>(
        &self,
        doing: &'static str,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut conn = self.conn(doing)?;
        let mut tx = conn
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(pg(doing))?;
        let out = f(&mut tx)?;
        tx.commit().map_err(pg(doing))?;
        Ok(out)
    }

    pub(super) fn read_source_status(&self, source: &str) -> Result<SourceStatus, StoreError> {
        let mut one = self.read_source_statuses(&[source], 0)?;
        Ok(one.pop().map(|(status, _)| status).unwrap_or_default())
    }

    /// Every source's status and latest error within `reach` runs, in one
    /// statement (so one snapshot without a transaction's two extra round
    /// trips): the sources page reads them all.
    pub(super) fn read_source_statuses(
        &self,
        sources: &[&str],
        reach: usize,
    ) -> Result<Vec<(SourceStatus, Option<StoredRun>)>, StoreError> {
        let doing = "reading the sources' status";
        let e = pg(doing);
        let reach = i64::try_from(reach).unwrap_or(i64::MAX);
        let rows = self
            .conn(doing)?
            .query_prepared(
                &format!(
                    "SELECT lr.*, le.*, ls.id, ls.finished_at, ls.window_to, st.state, \
                       (SELECT json_object_agg(result, runs)::text FROM run_counts \
                        WHERE source = s.source) \
                     FROM unnest($1::text[]) WITH ORDINALITY AS s (source, n) \
                     LEFT JOIN LATERAL (SELECT {RUN_COLUMNS} FROM runs \
                       WHERE source = s.source COLLATE \"C\" ORDER BY id DESC LIMIT 1) AS lr ON true \
                     LEFT JOIN LATERAL (SELECT * FROM (SELECT {RUN_COLUMNS} FROM runs \
                         WHERE source = s.source COLLATE \"C\" ORDER BY id DESC LIMIT $2) AS recent \
                       WHERE error IS NOT NULL ORDER BY id DESC LIMIT 1) AS le ON true \
                     LEFT JOIN LATERAL ({}) AS ls ON true \
                     LEFT JOIN source_state st ON st.source = s.source COLLATE \"C\" \
                     ORDER BY s.n",
                    LAST_SUCCESS.replace("$1", "s.source COLLATE \"C\"")
                ),
                &[&sources, &reach],
            )
            .map_err(&e)?;
        let run_at = |row: &postgres::Row, at: usize| -> Result<Option<StoredRun>, StoreError> {
            match row.try_get::<_, Option<i64>>(at).map_err(&e)? {
                Some(_) => Ok(Some(stored_run_at(row, at)?)),
                None => Ok(None),
            }
        };
        rows.iter()
            .zip(sources)
            .map(|(row, source)| {
                let at = 2 * RUN_COLUMN_COUNT;
                let status = SourceStatus {
                    last_run: run_at(row, 0)?,
                    last_success: last_success(row, at)?,
                    state: resume_state(row, at + 3, source)?,
                    runs: counts(row.try_get(at + 4).map_err(&e)?, source)?,
                };
                Ok((status, run_at(row, RUN_COLUMN_COUNT)?))
            })
            .collect()
    }

    /// One statement, for the same reason as [`Self::read_source_status`]:
    /// every run reads it.
    pub(super) fn read_resume_point(&self, source: &str) -> Result<ResumePoint, StoreError> {
        let doing = "reading where a source resumes";
        let e = pg(doing);
        // The successful runs from the first that named days uncovered
        // (most sources have none: one row of NULLs), each beside the
        // source's latest start, last success and state.
        let rows = self
            .conn(doing)?
            .query_prepared(
                &format!(
                    "SELECT r.id, r.result, r.window_from, r.window_to, r.finished_at, r.uncovered, \
                       h.* \
                     FROM (SELECT ls.id, ls.finished_at, ls.window_to, \
                             (SELECT state FROM source_state WHERE source = $1), \
                             (SELECT started_at FROM runs WHERE source = $1 \
                              ORDER BY id DESC LIMIT 1) \
                           FROM (SELECT 1) AS one \
                           LEFT JOIN LATERAL ({LAST_SUCCESS}) AS ls ON true) AS h \
                     LEFT JOIN runs r ON r.source = $1 AND r.result = 'success' \
                       AND r.id >= (SELECT MIN(id) FROM runs \
                                    WHERE source = $1 AND uncovered IS NOT NULL) \
                     ORDER BY r.id"
                ),
                &[&source],
            )
            .map_err(&e)?;
        let head = rows.first().ok_or_else(|| StoreError::Corrupt {
            what: "resume point",
            detail: format!("source \"{source}\": the statement answered no row"),
        })?;
        let mut runs = Vec::new();
        for r in &rows {
            if r.try_get::<_, Option<i64>>(0).map_err(&e)?.is_some() {
                runs.push(r);
            }
        }
        let uncovered = fold_runs(runs)?
            .uncovered
            .iter()
            .map(|&(a, b)| Ok((num_day(a)?, num_day(b)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(ResumePoint {
            last_run_started: head
                .try_get::<_, Option<i64>>(10)
                .map_err(&e)?
                .map(from_millis)
                .transpose()?,
            last_success: last_success(head, 6)?,
            state: resume_state(head, 9, source)?,
            uncovered,
        })
    }

    pub(super) fn read_recent_runs(
        &self,
        source: &str,
        limit: usize,
    ) -> Result<Vec<StoredRun>, StoreError> {
        let doing = "listing recent runs";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.conn(doing)?
            .query_prepared(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE source = $1 ORDER BY id DESC LIMIT $2"
                ),
                &[&source, &limit],
            )
            .map_err(pg(doing))?
            .iter()
            .map(stored_run)
            .collect()
    }

    /// Every source's latest run and last success in one statement: two
    /// index probes per source (`runs_by_source`, `runs_successes`), so a
    /// replica refreshing thousands of sources' gauges costs one round trip.
    pub(super) fn read_latest_runs(&self, sources: &[&str]) -> Result<Vec<LatestRun>, StoreError> {
        let doing = "reading the latest run of each source";
        let e = pg(doing);
        let rows = self.read(doing, |tx| {
            tx.query(
                "SELECT s.source, l.result, l.finished_at, \
                        (SELECT finished_at FROM runs \
                          WHERE source = s.source COLLATE \"C\" AND result = 'success' \
                          ORDER BY finished_at DESC, id DESC LIMIT 1) \
                 FROM unnest($1::text[]) WITH ORDINALITY AS s(source, n) \
                 CROSS JOIN LATERAL (SELECT result, finished_at FROM runs \
                   WHERE source = s.source COLLATE \"C\" ORDER BY id DESC LIMIT 1) AS l \
                 ORDER BY s.n",
                &[&sources],
            )
            .map_err(&e)
        })?;
        rows.iter()
            .map(|r| {
                let result: String = r.try_get(1).map_err(&e)?;
                Ok(LatestRun {
                    source: r.try_get(0).map_err(&e)?,
                    result: RunResult::parse(&result).ok_or_else(|| StoreError::Corrupt {
                        what: "run result",
                        detail: result.clone(),
                    })?,
                    finished_at: from_millis(r.try_get(2).map_err(&e)?)?,
                    last_success: r
                        .try_get::<_, Option<i64>>(3)
                        .map_err(&e)?
                        .map(from_millis)
                        .transpose()?,
                })
            })
            .collect()
    }

    pub(super) fn read_runs(&self, ids: &[i64]) -> Result<Vec<StoredRun>, StoreError> {
        let doing = "reading runs";
        let found: HashMap<i64, StoredRun> = self
            .conn(doing)?
            .query(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ANY($1)"),
                &[&ids],
            )
            .map_err(pg(doing))?
            .iter()
            .map(|r| stored_run(r).map(|run| (run.id, run)))
            .collect::<Result<_, _>>()?;
        Ok(ids.iter().filter_map(|id| found.get(id).cloned()).collect())
    }

    pub(super) fn read_coverages(
        &self,
        sources: &[&str],
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<Vec<Coverage>, StoreError> {
        let doing = "computing sources' coverage";
        let (s, e) = (day_num(start), day_num(end));
        let (mut folds, mut last) = self.read(doing, |tx| {
            // Runs outside the period change none of its days: only the
            // overlapping ones are folded, in id order as the SQLite store does.
            let rows = tx
                .query(
                    "SELECT id, result, window_from, window_to, finished_at, uncovered, source \
                     FROM runs WHERE source = ANY($1) AND window_to >= $2 AND window_from <= $3 \
                     ORDER BY source, id",
                    &[&sources, &start, &end],
                )
                .map_err(pg(doing))?;
            let mut by_source: HashMap<String, Vec<postgres::Row>> = HashMap::new();
            for r in rows {
                let source: String = r.try_get(6).map_err(pg(doing))?;
                by_source.entry(source).or_default().push(r);
            }
            let folds = by_source
                .into_iter()
                .map(|(source, rows)| Ok((source, fold_runs(&rows)?)))
                .collect::<Result<HashMap<String, SourceRuns>, StoreError>>()?;
            let last = tx
                .query(
                    "SELECT DISTINCT ON (source) source, finished_at FROM runs \
                     WHERE source = ANY($1) AND result = 'success' \
                     ORDER BY source, finished_at DESC, id DESC",
                    &[&sources],
                )
                .map_err(pg(doing))?
                .into_iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<HashMap<String, i64>, postgres::Error>>()
                .map_err(pg(doing))?;
            Ok((folds, last))
        })?;
        sources
            .iter()
            .map(|source| {
                let folded = folds.remove(*source).unwrap_or_default();
                let (gaps, failed_runs) = folded.coverage(s, e);
                let uncovered: i64 = gaps.iter().map(|(a, b)| b - a + 1).sum();
                Ok(Coverage {
                    start,
                    end,
                    covered_days: (e - s + 1).max(0) - uncovered,
                    gaps: gaps
                        .into_iter()
                        .map(|(a, b)| Ok((num_day(a)?, num_day(b)?)))
                        .collect::<Result<_, StoreError>>()?,
                    failed_runs,
                    last_success: last.remove(*source).map(from_millis).transpose()?,
                })
            })
            .collect()
    }

    /// Every key's fold over `[start, end]`, `None` when the period covers
    /// no whole month (nothing to gain from the cache: the server folds).
    ///
    /// The months the period covers whole come from the month cache (see
    /// `month_cache.rs`), brought to the snapshot's `store_version` first;
    /// the days of the months it cuts from the observations, in the same
    /// snapshot. Each key's parts are added in day order starting from the
    /// first, as the server's `SUM` over the sorted parts does, so the
    /// figures are those of `key_folds_on_server` to the last bit.
    fn fold(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        indicators: &[(String, Kind)],
    ) -> Result<Option<Folded>, StoreError> {
        let (months, head_end, tail_start) = whole_months(start, end);
        if months.0 > months.1 {
            return Ok(None);
        }
        let doing = "reading values";
        let e = pg(doing);
        let ids: Vec<&str> = indicators.iter().map(|(id, _)| id.as_str()).collect();
        let mut conn = self.conn(doing)?;
        // Held until the cache is at this read's snapshot: snapshots are
        // then taken in the order readers bring the cache forward, so none
        // finds it ahead of its own. The fold itself runs without it, on
        // months and keys shared with the cache.
        let mut cache = lock(&self.months);
        let mut tx = conn
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(&e)?;
        let now = current_version(&mut tx)?;
        let mut taken_months = cache.take(&mut tx, now, months)?;
        // (key, day, value) of the cut months' days.
        let mut days: Vec<(u32, i32, f64)> = Vec::new();
        if start <= head_end || tail_start <= end {
            let rows = tx
                .query(
                    "SELECT indicator, unit, source, entity, day, value FROM observations \
                     WHERE indicator = ANY($1) \
                       AND (day BETWEEN $2 AND $3 OR day BETWEEN $4 AND $5)",
                    &[&ids, &start, &head_end, &tail_start, &end],
                )
                .map_err(&e)?;
            for r in rows {
                let texts = [
                    r.try_get(0).map_err(&e)?,
                    r.try_get(1).map_err(&e)?,
                    r.try_get(2).map_err(&e)?,
                    r.try_get(3).map_err(&e)?,
                ];
                let day = day_i32(r.try_get(4).map_err(&e)?)?;
                days.push((cache.intern(texts), day, r.try_get(5).map_err(&e)?));
            }
        }
        let keys = cache.keys();
        drop(cache);
        tx.commit().map_err(&e)?;

        let positions: Vec<Option<usize>> = keys
            .indicators
            .texts
            .iter()
            .map(|id| ids.iter().position(|i| i == id))
            .collect();
        let mut accs = vec![Acc::default(); keys.len()];
        // Per key: the head's days, the whole months, the tail's days, each
        // in day order (a key has one part a day).
        days.sort_unstable_by_key(|&(_, day, _)| day);
        let head_end = day_i32(head_end)?;
        let split = days.partition_point(|&(_, day, _)| day <= head_end);
        for &(key, _, value) in &days[..split] {
            accs[key as usize].add(value, value);
        }
        for month in taken_months.drain(..) {
            for r in month.iter() {
                if positions[keys.keys[r.key as usize][0] as usize].is_some() {
                    accs[r.key as usize].add(r.sum, r.last_value);
                }
            }
        }
        for &(key, _, value) in &days[split..] {
            accs[key as usize].add(value, value);
        }
        Ok(Some(Folded {
            keys,
            accs,
            positions,
        }))
    }

    /// Per key (source, unit, indicator, entity) of the indicators asked
    /// for: `(unit, indicator, entity, sum, value on the last day)` over
    /// `[start, end]`, in key order (see [`fold`](Self::fold)).
    #[cfg(test)]
    pub(super) fn key_folds(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        indicators: &[(String, Kind)],
    ) -> Result<Vec<KeyFold>, StoreError> {
        let Some(f) = self.fold(start, end, indicators)? else {
            return self.key_folds_on_server(start, end, indicators);
        };
        Ok(f.keys
            .order
            .iter()
            .filter(|&&k| f.accs[k as usize].seen)
            .map(|&k| {
                let [i, u, _, e] = f.keys.keys[k as usize];
                let acc = f.accs[k as usize];
                (
                    f.keys.units.texts[u as usize].clone(),
                    f.keys.indicators.texts[i as usize].clone(),
                    f.keys.names.texts[e as usize].clone(),
                    acc.sum,
                    acc.last,
                )
            })
            .collect())
    }

    /// [`key_folds`](Self::key_folds) computed by the server alone.
    pub(super) fn key_folds_on_server(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        indicators: &[(String, Kind)],
    ) -> Result<Vec<KeyFold>, StoreError> {
        let doing = "reading values";
        let ids: Vec<&str> = indicators.iter().map(|(id, _)| id.as_str()).collect();
        // The months the period covers whole come from their sums; only
        // the days of the months it cuts are read one by one. One sort of
        // all parts by key and day, then plain aggregates: a key's sum adds
        // its parts in day order, and its last value is that of the part
        // with the greatest day (days are distinct within a key), where
        // ordered aggregates would sort again within every key.
        let (months, head_end, tail_start) = whole_months(start, end);
        self.read(doing, |tx| {
            // A quarter's parts (60,000 rows for 1,000 units × 20
            // indicators) sort in memory; one process keeps the order
            // each key's parts are summed in, so every read sums alike.
            tx.batch_execute(
                "SET LOCAL work_mem = '32MB'; SET LOCAL max_parallel_workers_per_gather = 0",
            )
            .map_err(pg(doing))?;
            tx.query(
                "WITH parts AS ( \
                     SELECT indicator, unit, source, entity, total, last_day, last_value \
                     FROM observation_months \
                     WHERE indicator = ANY($1) AND month BETWEEN $4 AND $5 \
                     UNION ALL \
                     SELECT indicator, unit, source, entity, value, day, value \
                     FROM observations \
                     WHERE indicator = ANY($1) \
                       AND (day BETWEEN $2 AND $6 OR day BETWEEN $7 AND $3)) \
                 SELECT unit, indicator, entity, SUM(total), \
                        (MAX(ARRAY[(last_day - DATE '2000-01-01')::float8, last_value]))[2] \
                 FROM (SELECT * FROM parts \
                       ORDER BY indicator, unit, source, entity, last_day) sorted \
                 GROUP BY indicator, unit, source, entity",
                &[
                    &ids,
                    &start,
                    &end,
                    &months.0,
                    &months.1,
                    &head_end,
                    &tail_start,
                ],
            )
            .map_err(pg(doing))?
            .into_iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                ))
            })
            .collect::<Result<_, postgres::Error>>()
            .map_err(pg(doing))
        })
    }

    pub(super) fn read_own_values(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        indicators: &[(String, Kind)],
    ) -> Result<Vec<OwnValue>, StoreError> {
        if end < start || indicators.is_empty() {
            return Ok(Vec::new());
        }
        let Some(f) = self.fold(start, end, indicators)? else {
            return Ok(own_from_keys(
                self.key_folds_on_server(start, end, indicators)?
                    .into_iter(),
                indicators,
            ));
        };
        let mut out = Vec::new();
        f.own(indicators, |unit, ind, _, data| {
            out.push(OwnValue {
                unit: f.keys.units.texts[unit as usize].clone(),
                indicator: f.keys.indicators.texts[ind as usize].clone(),
                data,
            });
        });
        Ok(out)
    }

    /// [`Store::own_values_indexed`](super::Store::own_values_indexed):
    /// each interned unit is looked up once, no text is copied but the
    /// entities of `distinct` indicators. Called on the caller's thread.
    pub(super) fn read_own_values_indexed(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        indicators: &[(String, Kind)],
        unit_index: &dyn Fn(&str) -> Option<usize>,
    ) -> Result<Vec<(usize, usize, OwnData)>, StoreError> {
        if end < start || indicators.is_empty() {
            return Ok(Vec::new());
        }
        // Only the reading goes apart (see `off_async`): `unit_index` need
        // not be `Send`.
        let Some(f) = off_async(|| self.fold(start, end, indicators))? else {
            let folds = off_async(|| self.key_folds_on_server(start, end, indicators))?;
            return Ok(own_from_keys(folds.into_iter(), indicators)
                .into_iter()
                .filter_map(|o| {
                    let position = indicators.iter().position(|(i, _)| *i == o.indicator)?;
                    Some((unit_index(&o.unit)?, position, o.data))
                })
                .collect());
        };
        let mut units: Vec<Option<Option<usize>>> = vec![None; f.keys.units.texts.len()];
        let mut out = Vec::new();
        f.own(indicators, |unit, _, position, data| {
            let index = *units[unit as usize]
                .get_or_insert_with(|| unit_index(&f.keys.units.texts[unit as usize]));
            if let Some(index) = index {
                out.push((index, position, data));
            }
        });
        Ok(out)
    }

    pub(super) fn read_entity_values(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        indicators: &[(String, Kind)],
    ) -> Result<Vec<EntityValue>, StoreError> {
        if end < start || indicators.is_empty() {
            return Ok(Vec::new());
        }
        let Some(f) = self.fold(start, end, indicators)? else {
            let kind = |ind: &str| indicators.iter().find(|(i, _)| i == ind).map(|(_, k)| *k);
            let mut values: HashMap<(String, String, String), f64> = HashMap::new();
            for (unit, indicator, entity, sum, last) in
                self.key_folds_on_server(start, end, indicators)?
            {
                let v = match kind(&indicator) {
                    None => continue,
                    Some(Kind::Level) => last,
                    Some(Kind::Count | Kind::Distinct) => sum,
                };
                *values.entry((unit, indicator, entity)).or_insert(0.0) += v;
            }
            return Ok(values
                .into_iter()
                .map(|((unit, indicator, entity), value)| EntityValue {
                    unit,
                    indicator,
                    entity,
                    value,
                })
                .collect());
        };
        // Keys in key order, so each entity's sources add in source order.
        let mut values: HashMap<(u32, u32, u32), f64> = HashMap::new();
        for &k in &f.keys.order {
            let acc = f.accs[k as usize];
            let [i, u, _, e] = f.keys.keys[k as usize];
            let v = match f.positions[i as usize].map(|p| indicators[p].1) {
                _ if !acc.seen => continue,
                None => continue,
                Some(Kind::Level) => acc.last,
                Some(Kind::Count | Kind::Distinct) => acc.sum,
            };
            *values.entry((u, i, e)).or_insert(0.0) += v;
        }
        Ok(values
            .into_iter()
            .map(|((u, i, e), value)| EntityValue {
                unit: f.keys.units.texts[u as usize].clone(),
                indicator: f.keys.indicators.texts[i as usize].clone(),
                entity: f.keys.names.texts[e as usize].clone(),
                value,
            })
            .collect())
    }

    /// Observations of `units` (in that order), each unit's by source,
    /// entity and day, from just after `after`, at most `limit`.
    pub(super) fn read_observations_page(
        &self,
        units: &[&str],
        indicator: &str,
        start: NaiveDate,
        end: NaiveDate,
        after: Option<&ObservationCursor>,
        limit: usize,
    ) -> Result<Vec<StoredObservation>, StoreError> {
        let doing = "reading observations";
        let first = match after {
            None => 0,
            Some(cursor) => match units.iter().position(|u| *u == cursor.unit) {
                Some(position) => position,
                None => return Ok(Vec::new()),
            },
        };
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.read(doing, |tx| {
            let plain = tx
                .prepare(
                    "SELECT source, entity, day, value, run FROM observations \
                     WHERE indicator = $1 AND unit = $2 AND day BETWEEN $3 AND $4 \
                     ORDER BY source, entity, day LIMIT $5",
                )
                .map_err(pg(doing))?;
            let resumed = tx
                .prepare(
                    "SELECT source, entity, day, value, run FROM observations \
                     WHERE indicator = $1 AND unit = $2 AND day BETWEEN $3 AND $4 \
                       AND (source, entity, day) > ($6, $7, $8) \
                     ORDER BY source, entity, day LIMIT $5",
                )
                .map_err(pg(doing))?;
            for unit in &units[first..] {
                let room = i64::try_from(limit - out.len()).unwrap_or(i64::MAX);
                let rows = match after.filter(|c| c.unit == *unit) {
                    Some(c) => tx.query(
                        &resumed,
                        &[
                            &indicator, unit, &start, &end, &room, &c.source, &c.entity, &c.day,
                        ],
                    ),
                    None => tx.query(&plain, &[&indicator, unit, &start, &end, &room]),
                }
                .map_err(pg(doing))?;
                for r in rows {
                    let e = pg(doing);
                    out.push(StoredObservation {
                        observation: Observation {
                            source: r.try_get(0).map_err(&e)?,
                            unit: unit.to_string(),
                            indicator: indicator.to_string(),
                            entity: r.try_get(1).map_err(&e)?,
                            day: r.try_get(2).map_err(&e)?,
                            value: r.try_get(3).map_err(&e)?,
                        },
                        run_id: r.try_get(4).map_err(&e)?,
                    });
                }
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
    }
}

/// One key's parts over a period, added as the server's `SUM` adds them:
/// from the first, in day order; the last part's value is the last day's.
#[derive(Clone, Copy, Default)]
struct Acc {
    seen: bool,
    sum: f64,
    last: f64,
}

impl Acc {
    fn add(&mut self, total: f64, last_value: f64) {
        if self.seen {
            self.sum += total;
        } else {
            self.sum = total;
            self.seen = true;
        }
        self.last = last_value;
    }
}

/// Every key's fold over a period, indexed by key id.
struct Folded {
    keys: Arc<KeyTable>,
    accs: Vec<Acc>,
    /// Per interned indicator: its place among those asked for.
    positions: Vec<Option<usize>>,
}

impl Folded {
    /// Hands `emit` (unit id, indicator id, its place among `indicators`,
    /// own value) of each (unit, indicator) with data. A group's keys are
    /// adjacent in key order and add in it, as `own_from_keys` adds them.
    fn own(&self, indicators: &[(String, Kind)], mut emit: impl FnMut(u32, u32, usize, OwnData)) {
        let (keys, order) = (&self.keys.keys, &self.keys.order);
        let mut at = 0;
        while at < order.len() {
            let [i, u, ..] = keys[order[at] as usize];
            let len = order[at..]
                .iter()
                .position(|&k| keys[k as usize][..2] != [i, u])
                .unwrap_or(order.len() - at);
            let group = &order[at..at + len];
            at += len;
            let Some(position) = self.positions[i as usize] else {
                continue;
            };
            let seen = group
                .iter()
                .map(|&k| (k, self.accs[k as usize]))
                .filter(|(_, acc)| acc.seen);
            let data = match indicators[position].1 {
                kind @ (Kind::Count | Kind::Level) => {
                    let mut number = None;
                    for (_, acc) in seen {
                        let v = if kind == Kind::Level {
                            acc.last
                        } else {
                            acc.sum
                        };
                        number = Some(number.unwrap_or(0.0) + v);
                    }
                    number.map(OwnData::Number)
                }
                Kind::Distinct => {
                    let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
                    for (k, acc) in seen {
                        let entity = keys[k as usize][3];
                        *sums
                            .entry(&self.keys.names.texts[entity as usize])
                            .or_insert(0.0) += acc.sum;
                    }
                    (!sums.is_empty()).then(|| {
                        OwnData::Entities(
                            sums.into_iter()
                                .filter(|&(_, v)| v != 0.0)
                                .map(|(e, _)| e.to_owned())
                                .collect(),
                        )
                    })
                }
            };
            if let Some(data) = data {
                emit(u, i, position, data);
            }
        }
    }
}

/// The months `[start, end]` covers whole (first days of the first and the
/// last; the first after the last when there is none), the last day of the
/// cut month at the start, and the first day of the cut month at the end.
/// Day ranges that are empty (a start after their end) read nothing.
fn whole_months(
    start: NaiveDate,
    end: NaiveDate,
) -> ((NaiveDate, NaiveDate), NaiveDate, NaiveDate) {
    let first_day = |d: NaiveDate| d.with_day(1).expect("every month has a first day");
    let next_month = |d: NaiveDate| {
        first_day(d)
            .checked_add_months(Months::new(1))
            .unwrap_or(NaiveDate::MAX)
    };
    // First whole month: the start's own if it begins there.
    let from = if start.day() == 1 {
        start
    } else {
        next_month(start)
    };
    // Day after the last whole month: the end's month if it ends there.
    let after = if end.succ_opt().is_none_or(|d| d.day() == 1) {
        next_month(end)
    } else {
        first_day(end)
    };
    if from >= after {
        // No whole month (an empty range of them): every day is read from
        // the observations.
        let none = (from, from.pred_opt().unwrap_or(from));
        return (none, end, end.succ_opt().unwrap_or(end));
    }
    let last = after.pred_opt().map_or(from, first_day);
    ((from, last), from.pred_opt().unwrap_or(from), after)
}

#[cfg(test)]
mod whole_month_tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn a_period_splits_into_whole_months_and_the_days_of_the_months_it_cuts() {
        // A quarter: three whole months, no single day.
        let ((a, b), head, tail) = whole_months(d("2025-01-01"), d("2025-03-31"));
        assert_eq!((a, b), (d("2025-01-01"), d("2025-03-01")));
        assert!(head < d("2025-01-01") && tail > d("2025-03-31"));
        // Cut at both ends.
        let ((a, b), head, tail) = whole_months(d("2024-11-15"), d("2025-02-10"));
        assert_eq!((a, b), (d("2024-12-01"), d("2025-01-01")));
        assert_eq!((head, tail), (d("2024-11-30"), d("2025-02-01")));
        // Inside one month: no whole month, every day from the observations.
        let ((a, b), head, tail) = whole_months(d("2026-11-07"), d("2026-11-21"));
        assert!(a > b);
        assert_eq!((head, tail), (d("2026-11-21"), d("2026-11-22")));
        // Across a month's end without a whole month.
        let ((a, b), head, _) = whole_months(d("2026-11-30"), d("2026-12-01"));
        assert!(a > b);
        assert_eq!(head, d("2026-12-01"));
        // One whole month, the end on a leap day.
        let ((a, b), head, tail) = whole_months(d("2024-02-01"), d("2024-02-29"));
        assert_eq!(
            (a, b, tail),
            (d("2024-02-01"), d("2024-02-01"), d("2024-03-01"))
        );
        assert!(head < a);
    }
}
