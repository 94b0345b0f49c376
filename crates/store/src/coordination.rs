//! How several `tallyd run` replicas on one database share the sources:
//! each (source, scheduled tick) is claimed once through the database, a
//! claimed run holds a lease its replica renews, and a run whose lease ran
//! out is taken over by another replica as a re-run. Singleton work
//! (quarterly reports) goes to the holder of a named lease.
//!
//! Every time compared is the database's `now()`, never a replica's clock,
//! so replicas whose clocks disagree still agree on what is due and what
//! expired. Only the PostgreSQL store coordinates; the SQLite store serves
//! one daemon (its data directory is locked), which schedules on its own.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::StoreError;

/// A due schedule row being claimed ([`Coordination::claim_share`]): the
/// source, its due tick and the database's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due<'a> {
    pub source: &'a str,
    pub tick: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// Which ticks of a due source to claim now, oldest first, starting with
/// the due tick, each due by then; and the tick the schedule moves to
/// (`None`: never again). Ticks left out are not claimed: they collapse
/// into the runs claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub ticks: Vec<DateTime<Utc>>,
    pub next: Option<DateTime<Utc>>,
}

impl Planned {
    /// The due tick alone, the schedule moving to `next`.
    pub fn one(tick: DateTime<Utc>, next: Option<DateTime<Utc>>) -> Planned {
        Planned {
            ticks: vec![tick],
            next,
        }
    }
}

/// Plans the claim of a due source ([`Planned`]). Computed by the caller
/// from the ticks, never from a replica's clock, so replicas agree on it.
pub type PlanTicks<'a> = &'a (dyn Fn(&Due<'_>) -> Planned + Sync);

/// A source as a replica registers it ([`Coordination::register`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub source: String,
    /// Of the source's resolved configuration: only replicas with the same
    /// one claim the source.
    pub fingerprint: String,
    /// The tick a new source (or one whose fingerprint changed) is due at.
    pub first_tick: Option<DateTime<Utc>>,
}

/// A tick this replica claimed, or a run it took over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The `source_run` row: what [`Coordination::renew`] and
    /// [`Coordination::finish`] name.
    pub run: i64,
    pub source: String,
    pub tick: DateTime<Utc>,
    /// Taken over from a replica whose lease ran out.
    pub rerun: bool,
    /// The database's clock when claimed.
    pub claimed_at: DateTime<Utc>,
}

/// Which due ticks a replica claims ([`Coordination::claim_share`]): those
/// of its own share of the sources, and any tick left due for `after` (its
/// replica missed its round: stalled, dead, or at its bound of runs). The
/// share of a source is a hash of its id modulo `live`, so replicas that
/// agree on `live` and hold distinct ranks split the sources between them
/// without talking to each other; replicas that briefly disagree (one just
/// started or died) only leave some ticks to `after`. Claims stay exclusive
/// whatever the shares say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// This replica's place among the live ones, `0..live`.
    pub rank: usize,
    pub live: usize,
    pub after: Duration,
    /// Ticks of the share falling due within this long are claimed too:
    /// the replica starts each at its tick rather than at the claim round
    /// after it ([`Share::ahead`]).
    pub ahead: Duration,
}

impl Share {
    /// Every due tick: one replica alone.
    pub const ALL: Share = Share {
        rank: 0,
        live: 1,
        after: Duration::ZERO,
        ahead: Duration::ZERO,
    };

    /// The share of `owner` among `live` (sorted, as
    /// [`Coordination::heartbeat`] answers); [`Share::ALL`] when `owner`
    /// is not among them (its heartbeat was not recorded).
    pub fn of(owner: &str, live: &[String], after: Duration) -> Share {
        match live.iter().position(|o| o == owner) {
            Some(rank) => Share {
                rank,
                live: live.len(),
                after,
                ahead: Duration::ZERO,
            },
            None => Share::ALL,
        }
    }

    /// This share, with the ticks of its own sources that fall due within
    /// `ahead` claimed too (never another's: those wait `after` past due).
    pub fn ahead(self, ahead: Duration) -> Share {
        Share { ahead, ..self }
    }
}

/// A source the database schedules with another configuration than this
/// replica's, or that this replica does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    pub source: String,
    pub fingerprint: String,
    /// This replica's fingerprint of the source; `None`: it does not have it.
    pub mine: Option<String>,
}

/// What the database says about a source's schedule and its latest claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleStatus {
    pub next_tick: Option<DateTime<Utc>>,
    pub fingerprint: String,
    /// The latest claimed tick: who holds or held it, whether it was a re-run.
    pub last_tick: Option<DateTime<Utc>>,
    pub last_owner: Option<String>,
    pub last_rerun: bool,
    pub last_finished: bool,
}

/// Claims of ticks and leases, through the database (see the module docs).
/// Blocking: call from blocking threads.
///
/// ```no_run
/// use std::collections::HashMap;
/// use std::time::Duration;
/// use tally_store::{Coordination, PostgresStore};
///
/// let store = PostgresStore::open("postgresql://tally@db/tally").unwrap();
/// let mine: HashMap<String, String> = [("s".into(), "f1".into())].into();
/// let every_second = |due: &tally_store::Due<'_>| {
///     tally_store::Planned::one(due.tick, Some(due.tick + chrono::Duration::seconds(1)))
/// };
/// for claim in store.claim_due("replica-1", &mine, 100, Duration::from_secs(30), &every_second).unwrap() {
///     // ... run claim.source, renewing while it runs ...
///     store.finish(claim.run, "replica-1").unwrap();
/// }
/// ```
pub trait Coordination: Send + Sync + 'static {
    /// The database's clock.
    fn now(&self) -> Result<DateTime<Utc>, StoreError>;

    /// Registers sources: a new one is due at its `first_tick`; one
    /// registered with another fingerprint takes this one and is due at its
    /// `first_tick` (the latest configuration to register wins, so replicas
    /// upgraded one at a time take a changed source over); one with the same
    /// fingerprint keeps its next tick. Returns the sources whose row was
    /// written (new or changed).
    fn register(&self, schedules: &[Schedule]) -> Result<Vec<String>, StoreError>;

    /// Claims up to `limit` due ticks (`next_tick <= now()`) of the sources
    /// of `fingerprints` whose registered fingerprint is the one given, and
    /// with no unfinished run: takes each schedule row with `FOR UPDATE SKIP
    /// LOCKED`, inserts a run unique on (source, tick) for each tick `plan`
    /// gives, leased to `owner` for `lease`, and moves the schedule to the
    /// planned next tick (or to the first planned tick past `limit`), in
    /// one transaction. Two replicas never both get a tick.
    fn claim_due(
        &self,
        owner: &str,
        fingerprints: &HashMap<String, String>,
        limit: usize,
        lease: Duration,
        plan: PlanTicks<'_>,
    ) -> Result<Vec<Claim>, StoreError> {
        self.claim_share(owner, fingerprints, limit, lease, plan, Share::ALL)
    }

    /// [`Coordination::claim_due`], of the due ticks in `share` only.
    fn claim_share(
        &self,
        owner: &str,
        fingerprints: &HashMap<String, String>,
        limit: usize,
        lease: Duration,
        plan: PlanTicks<'_>,
        share: Share,
    ) -> Result<Vec<Claim>, StoreError>;

    /// Records that replica `owner` is alive for `ttl` (a row `replica:OWNER`
    /// of the lease table) and returns the owners of every live replica,
    /// sorted, this one included: what [`Share::of`] divides the sources by.
    fn heartbeat(&self, owner: &str, ttl: Duration) -> Result<Vec<String>, StoreError>;

    /// Extends a run's lease by `lease` from now; false when `owner` no
    /// longer holds it (another replica took it over) or it finished.
    fn renew(&self, run: i64, owner: &str, lease: Duration) -> Result<bool, StoreError>;

    /// [`Coordination::renew`] of several runs in one statement; returns
    /// those `owner` no longer holds or that finished.
    fn renew_all(
        &self,
        runs: &[i64],
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<i64>, StoreError> {
        not_held(runs, |run| self.renew(run, owner, lease))
    }

    /// Marks a run finished; false when `owner` no longer holds it.
    fn finish(&self, run: i64, owner: &str) -> Result<bool, StoreError>;

    /// Marks `runs` finished at once (one statement, one commit); returns
    /// those `owner` no longer held (another replica took them over).
    fn finish_all(&self, runs: &[i64], owner: &str) -> Result<Vec<i64>, StoreError> {
        not_held(runs, |run| self.finish(run, owner))
    }

    /// Takes over up to `limit` unfinished runs whose lease ran out, of the
    /// sources of `fingerprints` registered with the fingerprint given (each
    /// row with `FOR UPDATE SKIP LOCKED`): owner `owner`, leased for
    /// `lease`, marked as re-runs; except `owner`'s own runs in `holding`,
    /// which it still has queued or running (late under load, not dead).
    fn reclaim_expired(
        &self,
        owner: &str,
        fingerprints: &HashMap<String, String>,
        limit: usize,
        lease: Duration,
        holding: &[i64],
    ) -> Result<Vec<Claim>, StoreError>;

    /// Takes the lease `name` for `ttl` if it is free or expired, or
    /// renews it if `owner` holds it with term `held`. Returns the term held
    /// now, `None` when another holds it. Renewal matches owner and term,
    /// so a replica that lost the lease never renews another's.
    fn acquire_or_renew(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
        held: Option<i64>,
    ) -> Result<Option<i64>, StoreError>;

    /// Gives the lease up (at shutdown), so that another replica takes it
    /// at once rather than after it expires.
    fn release(&self, name: &str, owner: &str, term: i64) -> Result<(), StoreError>;

    /// The registered sources this replica will not claim: unknown to it,
    /// or registered with another fingerprint.
    fn foreign(&self, fingerprints: &HashMap<String, String>) -> Result<Vec<Foreign>, StoreError>;

    /// The schedule and latest claim of each of `sources` the database has.
    fn schedule_status(
        &self,
        sources: &[&str],
    ) -> Result<HashMap<String, ScheduleStatus>, StoreError>;
}

/// The runs of `runs` for which `held` (a renewal or a finish, one run at a
/// time) says the owner no longer held them.
fn not_held(
    runs: &[i64],
    mut held: impl FnMut(i64) -> Result<bool, StoreError>,
) -> Result<Vec<i64>, StoreError> {
    let mut lost = Vec::new();
    for &run in runs {
        if !held(run)? {
            lost.push(run);
        }
    }
    Ok(lost)
}
