//! [`Coordination`] on PostgreSQL: the SQL of claims and leases.
//!
//! Each claim is one transaction: the due schedule rows are locked with
//! `FOR UPDATE SKIP LOCKED` (a replica never waits for another's claim, and
//! never sees a row another is moving), their runs inserted with `ON
//! CONFLICT (source_id, tick_at) DO NOTHING` (should a tick come round
//! again, it is not claimed twice), and the rows moved to their next tick.
//! Every time is the server's `now()`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres::Row;

use super::{PostgresStore, off_async, pg};
use crate::StoreError;
use crate::coordination::{
    Claim, Coordination, Due, Foreign, PlanTicks, Schedule, ScheduleStatus, Share,
};

/// `(ids, fingerprints)` as two arrays, for `unnest`.
fn arrays(fingerprints: &HashMap<String, String>) -> (Vec<&str>, Vec<&str>) {
    fingerprints
        .iter()
        .map(|(s, f)| (s.as_str(), f.as_str()))
        .unzip()
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// A claim from `(id, source_id, tick_at, rerun, claimed_at)`.
fn claim(r: &Row) -> Result<Claim, StoreError> {
    let e = pg("reading a claim");
    Ok(Claim {
        run: r.try_get(0).map_err(&e)?,
        source: r.try_get(1).map_err(&e)?,
        tick: r.try_get(2).map_err(&e)?,
        rerun: r.try_get(3).map_err(&e)?,
        claimed_at: r.try_get(4).map_err(&e)?,
    })
}

/// The runs of `runs` whose id a statement's `RETURNING id` left out: those
/// the owner no longer held.
fn not_returned(runs: &[i64], returned: &[Row]) -> Vec<i64> {
    let returned: std::collections::HashSet<i64> = returned.iter().map(|r| r.get(0)).collect();
    runs.iter()
        .copied()
        .filter(|r| !returned.contains(r))
        .collect()
}

/// The sources of `fingerprints` registered with the same fingerprint, as
/// a relation `mine(source_id)` joined to `source_schedule s`.
const MINE: &str = "unnest($1::text[], $2::text[]) AS mine(source_id, fingerprint) \
     ON s.source_id = mine.source_id COLLATE \"C\" AND s.fingerprint = mine.fingerprint";

impl Coordination for PostgresStore {
    fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        off_async(|| {
            let doing = "reading the database's clock";
            self.conn(doing)?
                .query_one("SELECT now()", &[])
                .and_then(|r| r.try_get(0))
                .map_err(pg(doing))
        })
    }

    fn register(&self, schedules: &[Schedule]) -> Result<Vec<String>, StoreError> {
        off_async(|| {
            let doing = "registering the sources' schedules";
            let ids: Vec<&str> = schedules.iter().map(|s| s.source.as_str()).collect();
            let prints: Vec<&str> = schedules.iter().map(|s| s.fingerprint.as_str()).collect();
            let ticks: Vec<Option<DateTime<Utc>>> =
                schedules.iter().map(|s| s.first_tick).collect();
            // A row with the same fingerprint is left alone: its next tick
            // stands, whichever replica registers again.
            let rows = self
                .conn(doing)?
                .query(
                    "INSERT INTO source_schedule AS s (source_id, fingerprint, next_run_at) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[]) \
                     ON CONFLICT (source_id) DO UPDATE \
                       SET fingerprint = excluded.fingerprint, next_run_at = excluded.next_run_at \
                       WHERE s.fingerprint <> excluded.fingerprint \
                     RETURNING source_id",
                    &[&ids, &prints, &ticks],
                )
                .map_err(pg(doing))?;
            rows.iter()
                .map(|r| r.try_get(0).map_err(pg(doing)))
                .collect()
        })
    }

    fn claim_share(
        &self,
        owner: &str,
        fingerprints: &HashMap<String, String>,
        limit: usize,
        lease: Duration,
        plan: PlanTicks<'_>,
        share: Share,
    ) -> Result<Vec<Claim>, StoreError> {
        off_async(|| {
            let doing = "claiming due ticks";
            let (ids, prints) = arrays(fingerprints);
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let live = i32::try_from(share.live.max(1)).unwrap_or(i32::MAX);
            let rank = i32::try_from(share.rank).unwrap_or(0);
            let mut conn = self.conn(doing)?;
            let mut tx = conn.transaction().map_err(pg(doing))?;
            // A source with a run still going (here or on another replica)
            // waits: its tick is claimed once that run ends, with the ticks
            // due meanwhile as `plan` says.
            let due = tx
                .query(
                    &format!(
                        "SELECT s.source_id, s.next_run_at, now() FROM source_schedule s JOIN {MINE} \
                         WHERE (s.next_run_at <= now() - make_interval(secs => $6) \
                                OR (mod(hashtext(s.source_id) & 2147483647, $4) = $5 \
                                    AND s.next_run_at <= now() + make_interval(secs => $7))) \
                           AND NOT EXISTS (SELECT 1 FROM source_run r \
                                 WHERE r.source_id = s.source_id AND r.finished_at IS NULL) \
                         ORDER BY s.next_run_at LIMIT $3 \
                         FOR UPDATE OF s SKIP LOCKED"
                    ),
                    &[
                        &ids,
                        &prints,
                        &limit,
                        &live,
                        &rank,
                        &seconds(share.after),
                        &seconds(share.ahead),
                    ],
                )
                .map_err(pg(doing))?;
            if due.is_empty() {
                return Ok(Vec::new());
            }
            let (mut sources, mut ticks) = (Vec::new(), Vec::new());
            let mut moved = Vec::with_capacity(due.len());
            let mut nexts: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(due.len());
            let mut room = usize::try_from(limit).unwrap_or(usize::MAX);
            for r in &due {
                let e = pg(doing);
                let source: String = r.try_get(0).map_err(&e)?;
                let tick: DateTime<Utc> = r.try_get(1).map_err(&e)?;
                let now: DateTime<Utc> = r.try_get(2).map_err(&e)?;
                let planned = plan(&Due {
                    source: &source,
                    tick,
                    now,
                });
                // Past the limit, the schedule stays at the first tick not
                // claimed: the next round claims from there.
                let take = planned.ticks.len().min(room);
                room = room.saturating_sub(take);
                for t in &planned.ticks[..take] {
                    sources.push(source.clone());
                    ticks.push(*t);
                }
                nexts.push(planned.ticks.get(take).copied().or(planned.next));
                moved.push(source);
            }
            let claimed = tx
                .query(
                    "INSERT INTO source_run (source_id, tick_at, owner, lease_until) \
                     SELECT u.s, u.t, $3, now() + make_interval(secs => $4) \
                       FROM unnest($1::text[], $2::timestamptz[]) AS u(s, t) \
                     ON CONFLICT (source_id, tick_at) DO NOTHING \
                     RETURNING id, source_id, tick_at, rerun, claimed_at",
                    &[&sources, &ticks, &owner, &seconds(lease)],
                )
                .map_err(pg(doing))?;
            tx.execute(
                "UPDATE source_schedule s SET next_run_at = u.n \
                   FROM unnest($1::text[], $2::timestamptz[]) AS u(s, n) \
                  WHERE s.source_id = u.s COLLATE \"C\"",
                &[&moved, &nexts],
            )
            .map_err(pg(doing))?;
            tx.commit().map_err(pg(doing))?;
            claimed.iter().map(claim).collect()
        })
    }

    fn heartbeat(&self, owner: &str, ttl: Duration) -> Result<Vec<String>, StoreError> {
        off_async(|| {
            let doing = "recording this replica's heartbeat";
            // The statement's snapshot does not see its own insert: the
            // union adds it. Rows of replicas gone for an hour are dropped
            // on the way (each start is a new owner).
            let rows = self
                .conn(doing)?
                .query(
                    "WITH beat AS ( \
                       INSERT INTO lease AS l (name, owner, term, expires_at) \
                       VALUES ('replica:' || $1, $1, 1, now() + make_interval(secs => $2)) \
                       ON CONFLICT (name) DO UPDATE SET expires_at = excluded.expires_at \
                       RETURNING owner), \
                     gone AS ( \
                       DELETE FROM lease WHERE name LIKE 'replica:%' \
                          AND expires_at < now() - interval '1 hour') \
                     SELECT owner FROM lease \
                      WHERE name LIKE 'replica:%' AND expires_at >= now() AND owner <> $1 \
                     UNION SELECT owner FROM beat \
                     ORDER BY 1",
                    &[&owner, &seconds(ttl)],
                )
                .map_err(pg(doing))?;
            rows.iter()
                .map(|r| r.try_get(0).map_err(pg(doing)))
                .collect()
        })
    }

    fn renew(&self, run: i64, owner: &str, lease: Duration) -> Result<bool, StoreError> {
        off_async(|| {
            let doing = "renewing a run's lease";
            Ok(self
                .conn(doing)?
                .execute(
                    "UPDATE source_run SET lease_until = now() + make_interval(secs => $3) \
                     WHERE id = $1 AND owner = $2 AND finished_at IS NULL",
                    &[&run, &owner, &seconds(lease)],
                )
                .map_err(pg(doing))?
                == 1)
        })
    }

    fn renew_all(
        &self,
        runs: &[i64],
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<i64>, StoreError> {
        off_async(|| {
            let doing = "renewing runs' leases";
            let renewed = self
                .conn(doing)?
                .query(
                    "UPDATE source_run SET lease_until = now() + make_interval(secs => $3) \
                     WHERE id = ANY($1) AND owner = $2 AND finished_at IS NULL \
                     RETURNING id",
                    &[&runs, &owner, &seconds(lease)],
                )
                .map_err(pg(doing))?;
            Ok(not_returned(runs, &renewed))
        })
    }

    fn finish(&self, run: i64, owner: &str) -> Result<bool, StoreError> {
        off_async(|| {
            let doing = "finishing a run";
            Ok(self
                .conn(doing)?
                .execute(
                    "UPDATE source_run SET finished_at = now() \
                     WHERE id = $1 AND owner = $2 AND finished_at IS NULL",
                    &[&run, &owner],
                )
                .map_err(pg(doing))?
                == 1)
        })
    }

    fn finish_all(&self, runs: &[i64], owner: &str) -> Result<Vec<i64>, StoreError> {
        off_async(|| {
            let doing = "finishing runs";
            let finished = self
                .conn(doing)?
                .query(
                    "UPDATE source_run SET finished_at = now() \
                     WHERE id = ANY($1) AND owner = $2 AND finished_at IS NULL \
                     RETURNING id",
                    &[&runs, &owner],
                )
                .map_err(pg(doing))?;
            Ok(not_returned(runs, &finished))
        })
    }

    fn reclaim_expired(
        &self,
        owner: &str,
        fingerprints: &HashMap<String, String>,
        limit: usize,
        lease: Duration,
        holding: &[i64],
    ) -> Result<Vec<Claim>, StoreError> {
        off_async(|| {
            let doing = "taking over runs whose lease ran out";
            let (ids, prints) = arrays(fingerprints);
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = self
                .conn(doing)?
                .query(
                    &format!(
                        "WITH expired AS ( \
                           SELECT r.id FROM source_run r \
                             JOIN source_schedule s ON s.source_id = r.source_id \
                             JOIN {MINE} \
                            WHERE r.finished_at IS NULL AND r.lease_until < now() \
                              AND NOT (r.owner = $4 AND r.id = ANY($6)) \
                            ORDER BY r.lease_until LIMIT $3 \
                            FOR UPDATE OF r SKIP LOCKED) \
                         UPDATE source_run r \
                            SET owner = $4, rerun = TRUE, reclaimed_at = now(), \
                                lease_until = now() + make_interval(secs => $5) \
                           FROM expired WHERE r.id = expired.id \
                         RETURNING r.id, r.source_id, r.tick_at, r.rerun, r.reclaimed_at"
                    ),
                    &[&ids, &prints, &limit, &owner, &seconds(lease), &holding],
                )
                .map_err(pg(doing))?;
            rows.iter().map(claim).collect()
        })
    }

    fn acquire_or_renew(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
        held: Option<i64>,
    ) -> Result<Option<i64>, StoreError> {
        off_async(|| {
            let doing = "taking or renewing a lease";
            let mut conn = self.conn(doing)?;
            if let Some(term) = held {
                // Owner and term, and not expired: a replica that lost the
                // lease (and maybe got it back under a new term) never
                // renews by name alone.
                let renewed = conn
                    .execute(
                        "UPDATE lease SET expires_at = now() + make_interval(secs => $4) \
                         WHERE name = $1 AND owner = $2 AND term = $3 AND expires_at >= now()",
                        &[&name, &owner, &term, &seconds(ttl)],
                    )
                    .map_err(pg(doing))?;
                if renewed == 1 {
                    return Ok(Some(term));
                }
            }
            let taken = conn
                .query_opt(
                    "INSERT INTO lease AS l (name, owner, term, expires_at) \
                     VALUES ($1, $2, 1, now() + make_interval(secs => $3)) \
                     ON CONFLICT (name) DO UPDATE \
                       SET owner = excluded.owner, term = l.term + 1, \
                           expires_at = excluded.expires_at \
                       WHERE l.expires_at < now() \
                     RETURNING term",
                    &[&name, &owner, &seconds(ttl)],
                )
                .map_err(pg(doing))?;
            taken.map(|r| r.try_get(0).map_err(pg(doing))).transpose()
        })
    }

    fn release(&self, name: &str, owner: &str, term: i64) -> Result<(), StoreError> {
        off_async(|| {
            let doing = "giving a lease up";
            self.conn(doing)?
                .execute(
                    "UPDATE lease SET expires_at = now() - interval '1 millisecond' \
                     WHERE name = $1 AND owner = $2 AND term = $3",
                    &[&name, &owner, &term],
                )
                .map_err(pg(doing))
                .map(drop)
        })
    }

    fn foreign(&self, fingerprints: &HashMap<String, String>) -> Result<Vec<Foreign>, StoreError> {
        off_async(|| {
            let doing = "listing sources registered with another configuration";
            let (ids, prints) = arrays(fingerprints);
            let rows = self
                .conn(doing)?
                .query(
                    "SELECT s.source_id, s.fingerprint, mine.fingerprint \
                       FROM source_schedule s \
                       LEFT JOIN unnest($1::text[], $2::text[]) AS mine(source_id, fingerprint) \
                         ON s.source_id = mine.source_id COLLATE \"C\" \
                      WHERE mine.fingerprint IS DISTINCT FROM s.fingerprint \
                      ORDER BY s.source_id",
                    &[&ids, &prints],
                )
                .map_err(pg(doing))?;
            rows.iter()
                .map(|r| {
                    let e = pg(doing);
                    Ok(Foreign {
                        source: r.try_get(0).map_err(&e)?,
                        fingerprint: r.try_get(1).map_err(&e)?,
                        mine: r.try_get(2).map_err(&e)?,
                    })
                })
                .collect()
        })
    }

    fn schedule_status(
        &self,
        sources: &[&str],
    ) -> Result<HashMap<String, ScheduleStatus>, StoreError> {
        off_async(|| {
            let doing = "reading the sources' schedules";
            let rows = self
                .conn(doing)?
                .query(
                    "SELECT s.source_id, s.next_run_at, s.fingerprint, \
                            r.tick_at, r.owner, COALESCE(r.rerun, FALSE), r.finished_at IS NOT NULL \
                       FROM source_schedule s \
                       LEFT JOIN LATERAL (SELECT * FROM source_run r \
                             WHERE r.source_id = s.source_id \
                             ORDER BY r.tick_at DESC LIMIT 1) r ON TRUE \
                      WHERE s.source_id = ANY($1)",
                    &[&sources],
                )
                .map_err(pg(doing))?;
            rows.iter()
                .map(|r| {
                    let e = pg(doing);
                    Ok((
                        r.try_get(0).map_err(&e)?,
                        ScheduleStatus {
                            next_tick: r.try_get(1).map_err(&e)?,
                            fingerprint: r.try_get(2).map_err(&e)?,
                            last_tick: r.try_get(3).map_err(&e)?,
                            last_owner: r.try_get(4).map_err(&e)?,
                            last_rerun: r.try_get(5).map_err(&e)?,
                            last_finished: r.try_get(6).map_err(&e)?,
                        },
                    ))
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests;
