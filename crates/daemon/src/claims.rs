//! The scheduler of a replica. Several `tallyd run` replicas on one
//! PostgreSQL database share the sources: a replica does not fire cron
//! ticks itself, it claims due ticks from the database every second
//! ([`tally_store::Coordination`]), so
//! each (source, tick) is claimed by one replica. A claimed run goes
//! through the same engine path as a scheduled one of a lone daemon
//! (window, retries, breaker) while its lease is renewed every third of
//! `[store] lease`; a replica that dies stops renewing, and once the lease
//! runs out another replica runs the tick again as a re-run. Idempotent
//! upserts make a run twice harmless; the lease makes it rare.
//!
//! Singleton work, the quarterly reports and their catch-up, is done by
//! the holder of the `reports` lease only. A run asked for through the API
//! runs on the replica asked, unclaimed.
//!
//! A replica claims only the sources the database has registered with its
//! own configuration fingerprint ([`crate::engine::Fingerprints`]); the
//! latest replica to register a changed source wins it, so replicas
//! upgraded one at a time take changed sources over as they start.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::engine::{Engine, Replica, RunError, Trigger, humanize};
use crate::metrics::lock;
use crate::reports;
use crate::scheduler::{self, Command};
use tally_domain::ErrorChain;
use tally_store::{Claim, Due, Planned, Schedule, Share};

/// The lease of the quarterly reports and their catch-up.
pub const REPORTS_LEASE: &str = "reports";

/// How often a replica looks for due ticks and expired runs.
pub const CLAIM_EVERY: Duration = Duration::from_secs(1);

/// How long a replica's heartbeat (renewed at every claim round) counts it
/// live: a few missed rounds, whatever `[store] lease` is, so that the
/// shares of a dead replica's sources are dealt out again within seconds.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// How often a replica looks for sources it does not claim, to log them.
const FOREIGN_EVERY: Duration = Duration::from_secs(60);

/// The most ticks a replica holds claimed and not finished, whatever its
/// pace: what its death may leave to be run again after the lease.
pub const MOST_CLAIMED: usize = 2_000;

/// How often a claimed tick whose source is still running its previous run
/// looks again.
const WAIT_FOR_PREVIOUS_RUN: Duration = Duration::from_millis(50);

/// How many ticks a replica holds claimed and unfinished: twice what it
/// finished in the last claim round ([`CLAIM_EVERY`]) when that bound
/// held it back, at least two per `max_concurrent_runs` slot, at most
/// [`MOST_CLAIMED`]. Measured by runs finished, not by how long one run
/// takes: a run's own time includes waiting for its commit, which it does
/// not hold a slot for, so a pace from it under-counts what the slots run.
/// During a burst (a schedule that fires for every source at the same
/// second) the bound doubles each round until it covers the replica's
/// share, as a lone daemon queues them all; a replica whose runs take
/// seconds finishes few, so it claims few and leaves the rest to the
/// others. A round the bound did not hold back leaves it as it was: a
/// replica idle between two bursts starts the next one at the last pace.
struct Pace {
    slots: usize,
    /// The bound for this round.
    most: AtomicUsize,
    /// Runs finished since the round began.
    finished: AtomicUsize,
    /// Whether a claim of this round took all the bound let it.
    held_back: AtomicBool,
}

impl Pace {
    /// Before any round is measured: a few hundred, runs of a local HTTP
    /// poll taking about 10 ms a slot.
    const FIRST_GUESS_PER_SLOT: usize = 100;

    fn new(slots: usize) -> Pace {
        let slots = slots.max(1);
        let pace = Pace {
            slots,
            most: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            held_back: AtomicBool::new(false),
        };
        pace.most.store(
            pace.bounded(slots * Self::FIRST_GUESS_PER_SLOT),
            Ordering::Relaxed,
        );
        pace
    }

    fn bounded(&self, most: usize) -> usize {
        most.clamp(2 * self.slots, MOST_CLAIMED.max(2 * self.slots))
    }

    /// Counts a finished run.
    fn finished(&self) {
        self.finished.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes that a claim took all the bound let it: more may be due.
    fn held_back(&self) {
        self.held_back.store(true, Ordering::Relaxed);
    }

    /// Ends a claim round: sets the bound of the next one from the runs
    /// finished in this one, if the bound held the replica back. It falls
    /// by half at most a round: a round spent waiting for the ticks it
    /// claimed ahead finishes nothing, and says nothing of the pace.
    fn next_round(&self) {
        let finished = self.finished.swap(0, Ordering::Relaxed);
        if self.held_back.swap(false, Ordering::Relaxed) {
            let most = finished.saturating_mul(2).max(self.most() / 2);
            self.most.store(self.bounded(most), Ordering::Relaxed);
        }
    }

    /// Claimed runs the replica may hold unfinished.
    fn most(&self) -> usize {
        self.most.load(Ordering::Relaxed)
    }
}

/// The replica's scheduler, in place of [`scheduler::run`]'s cron loop:
/// runs until `shutdown`, then lets running collections finish.
pub async fn run(
    engine: Arc<Engine>,
    replica: Arc<Replica>,
    mut commands: mpsc::Receiver<Command>,
    shutdown: impl Future<Output = ()>,
) {
    let prints = engine.fingerprints();
    let owner = replica.owner.clone();
    engine.metrics.set_replica(&prints.config);
    tracing::info!(
        replica = %owner,
        fingerprint = %prints.config,
        sources = engine.sources().len(),
        lease = %humanize(replica.lease),
        "scheduling as a replica: ticks are claimed through the database"
    );
    let mut running: JoinSet<()> = JoinSet::new();
    // Claimed runs not finished yet: a replica claims no more than it can
    // start soon, and leaves the rest to the others.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let pace = Arc::new(Pace::new(engine.config.daemon.max_concurrent_runs));
    let finisher = Finisher::start(&replica);
    let claimed = Claimed {
        in_flight: in_flight.clone(),
        pace: pace.clone(),
        finisher: finisher.queue.clone(),
        holding: Arc::default(),
    };
    let mut registered = false;
    let mut logged: HashSet<(String, String)> = HashSet::new();
    let mut duty = ReportsDuty::new(&engine);
    let mut live = 0;
    // The last claim round filled every free slot: more ticks may be due
    // than it could take, so the replica claims again as soon as half its
    // slots are free instead of waiting for the next round (a bound of a
    // few runs a round would otherwise cap a replica at that many a second).
    let mut more_due = false;

    let mut claim_tick = tokio::time::interval(CLAIM_EVERY);
    claim_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lease_tick = tokio::time::interval(replica.renew_every());
    lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut foreign_tick = tokio::time::interval(FOREIGN_EVERY);
    foreign_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(cmd) = commands.recv() => match cmd {
                // Asked of this replica: run here, not claimed.
                Command::RunNow { source, reply } => {
                    scheduler::spawn_run(&mut running, &engine, source, Trigger::Manual, None, Some(reply));
                }
                Command::Collect { source, window, reply } => {
                    scheduler::spawn_run(&mut running, &engine, source, Trigger::Backfill, Some(window), Some(reply));
                }
            },
            Some(_) = running.join_next(), if !running.is_empty() => {
                let most = pace.most();
                let free = most.saturating_sub(in_flight.load(Ordering::Acquire));
                if more_due && registered && free * 2 >= most {
                    more_due = claim_into(&mut running, &engine, &replica, free, &mut live, &claimed).await;
                }
            }
            _ = lease_tick.tick() => duty.renew(&engine, &replica, &mut running).await,
            _ = foreign_tick.tick(), if registered => log_foreign(&engine, &replica, &mut logged).await,
            _ = claim_tick.tick() => {
                if !registered {
                    registered = register(&engine, &replica).await;
                    if registered {
                        log_foreign(&engine, &replica, &mut logged).await;
                    }
                }
                pace.next_round();
                if registered {
                    let free = pace.most().saturating_sub(in_flight.load(Ordering::Acquire));
                    more_due = claim_into(&mut running, &engine, &replica, free, &mut live, &claimed).await;
                }
                duty.check(&engine, &mut running);
            }
        }
    }

    engine.close();
    duty.release(&replica).await;
    stop_beating(&replica).await;
    if !running.is_empty() {
        tracing::info!(
            runs = running.len(),
            "waiting for running collections to finish"
        );
        let longest = engine
            .sources()
            .iter()
            .map(|s| s.config.timeout)
            .max()
            .unwrap_or_default();
        let drained = tokio::time::timeout(longest + Duration::from_secs(5), async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "collections still running at shutdown were abandoned: their leases run out and other replicas run them again"
            );
        }
    }
    // Runs abandoned above hold the finisher's queue: dropped (aborted)
    // here, so that the finisher ends once it marked what was queued.
    drop(running);
    drop(claimed);
    finisher.stop().await;
}

/// What every claimed run shares: the count of claimed runs not finished,
/// the replica's pace, and the queue of runs to mark finished.
struct Claimed {
    in_flight: Arc<AtomicUsize>,
    pace: Arc<Pace>,
    finisher: mpsc::UnboundedSender<ToFinish>,
    /// The claimed runs this replica has queued or running: never taken
    /// over by itself when their lease runs out (late, not dead), unlike a
    /// run it gave up (its commit failed).
    holding: Arc<std::sync::Mutex<HashSet<i64>>>,
}

/// A claimed run to mark finished, and where to say whether this replica
/// still held it.
struct ToFinish {
    run: i64,
    held: oneshot::Sender<Result<bool, String>>,
}

/// Marks claimed runs finished in batches: the runs that end while one
/// batch is being marked share the next statement and commit, as runs
/// share the store writer's commits, instead of a round trip and a commit
/// each.
struct Finisher {
    queue: mpsc::UnboundedSender<ToFinish>,
    task: tokio::task::JoinHandle<()>,
}

impl Finisher {
    fn start(replica: &Arc<Replica>) -> Finisher {
        let (queue, mut pending) = mpsc::unbounded_channel::<ToFinish>();
        let replica = replica.clone();
        let task = tokio::spawn(async move {
            while let Some(first) = pending.recv().await {
                let mut batch = vec![first];
                while let Ok(next) = pending.try_recv() {
                    batch.push(next);
                }
                let runs: Vec<i64> = batch.iter().map(|f| f.run).collect();
                let r = replica.clone();
                let done =
                    tokio::task::spawn_blocking(move || r.coordination.finish_all(&runs, &r.owner))
                        .await;
                let answer: Result<HashSet<i64>, String> = match done {
                    Ok(Ok(lost)) => Ok(lost.into_iter().collect()),
                    Ok(Err(e)) => Err(ErrorChain(&e).to_string()),
                    Err(e) => Err(e.to_string()),
                };
                for f in batch {
                    let _ = f.held.send(
                        answer
                            .as_ref()
                            .map(|lost| !lost.contains(&f.run))
                            .map_err(Clone::clone),
                    );
                }
            }
        });
        Finisher { queue, task }
    }

    /// Once every sender is dropped: marks what is queued and ends.
    async fn stop(self) {
        drop(self.queue);
        let _ = self.task.await;
    }
}

/// Registers every source with its fingerprint. A source new to the
/// database, or registered by another configuration, is due at once if it
/// never succeeded or its schedule fired since its last run (as a lone
/// daemon runs it at start), else at its next scheduled time. Returns
/// whether it worked (else it is tried again a second later).
async fn register(engine: &Arc<Engine>, replica: &Arc<Replica>) -> bool {
    let (engine, coordination) = (engine.clone(), replica.coordination.clone());
    let done = tokio::task::spawn_blocking(move || {
        let now = coordination.now()?;
        let prints = engine.fingerprints();
        let tz = engine.config.daemon.timezone;
        let schedules: Vec<Schedule> = engine
            .sources()
            .iter()
            .map(|source| {
                let point = engine.store.resume_point(source.id()).ok();
                let never = point.as_ref().is_none_or(|p| p.last_success.is_none());
                let missed = point
                    .as_ref()
                    .and_then(|p| p.last_run_started)
                    .and_then(|started| scheduler::missed_fire(&source.config, tz, started, now))
                    .is_some();
                Schedule {
                    source: source.id().to_owned(),
                    fingerprint: prints.sources[source.id()].clone(),
                    first_tick: if never || missed {
                        Some(now)
                    } else {
                        engine.next_fire(source, now)
                    },
                }
            })
            .collect();
        coordination.register(&schedules)
    })
    .await;
    match done {
        Ok(Ok(changed)) => {
            if !changed.is_empty() {
                tracing::info!(
                    sources = %changed.join(","),
                    "sources registered with this replica's configuration"
                );
            }
            true
        }
        Ok(Err(e)) => {
            tracing::error!(error = %ErrorChain(&e), "cannot register the sources' schedules; trying again");
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot register the sources' schedules; trying again");
            false
        }
    }
}

/// Logs, once each, the sources the database schedules that this replica
/// does not claim, and counts them in `/metrics`.
async fn log_foreign(
    engine: &Arc<Engine>,
    replica: &Arc<Replica>,
    logged: &mut HashSet<(String, String)>,
) {
    let prints = engine.fingerprints();
    let coordination = replica.coordination.clone();
    let found = tokio::task::spawn_blocking(move || coordination.foreign(&prints.sources)).await;
    let foreign = match found {
        Ok(Ok(foreign)) => foreign,
        Ok(Err(e)) => {
            tracing::warn!(error = %ErrorChain(&e), "cannot list the sources this replica does not claim");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the sources this replica does not claim");
            return;
        }
    };
    engine.metrics.set_replica_not_claimed(foreign.len());
    for f in foreign {
        if !logged.insert((f.source.clone(), f.fingerprint.clone())) {
            continue;
        }
        match f.mine {
            None => tracing::warn!(
                source = %f.source,
                fingerprint = %f.fingerprint,
                "source unknown to this replica: another replica's configuration has it, this one does not claim it"
            ),
            Some(mine) => tracing::warn!(
                source = %f.source,
                fingerprint = %f.fingerprint,
                mine = %mine,
                "source configured otherwise by another replica, which registered it last: this replica does not claim it until restarted or reloaded with the same configuration"
            ),
        }
    }
}

/// Claims up to `free` ticks and starts their runs; true when the round
/// took all it could (or had no free slot), so that more may be due.
async fn claim_into(
    running: &mut JoinSet<()>,
    engine: &Arc<Engine>,
    replica: &Arc<Replica>,
    free: usize,
    live: &mut usize,
    claimed: &Claimed,
) -> bool {
    let holding: Vec<i64> = lock(&claimed.holding).iter().copied().collect();
    let claims = claim(engine, replica, free, live, holding).await;
    let full = claims.len() >= free;
    if full {
        claimed.pace.held_back();
    }
    for group in by_source(claims) {
        spawn_claims(running, engine, replica, group, claimed);
    }
    full
}

/// Claims grouped by source, each group in tick order: a source's ticks
/// caught up together run one after the other.
fn by_source(claims: Vec<Claim>) -> Vec<Vec<Claim>> {
    let mut groups: Vec<Vec<Claim>> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for claim in claims {
        match at.get(&claim.source) {
            Some(&i) => groups[i].push(claim),
            None => {
                at.insert(claim.source.clone(), groups.len());
                groups.push(vec![claim]);
            }
        }
    }
    for group in &mut groups {
        group.sort_by_key(|c| c.tick);
    }
    groups
}

/// How far back, in leases, a claim catches up a source's due ticks one by
/// one ([`plan_ticks`]). A dead replica holds a source at most a lease after
/// its last renewal (a third of a lease before its death at most), then a
/// claim round takes the tick over and re-runs it: the ticks held back meanwhile
/// fall within three leases with room to spare.
const CATCH_UP_LEASES: u32 = 3;

/// Which ticks of a due source to claim: the due tick, and each later one
/// already due, unless it fell due more than [`CATCH_UP_LEASES`] leases
/// before now (missed: it collapses into the due tick's run; their count is
/// returned). So the ticks a dead replica's lease held back run once the
/// tick it held was run again, a tick that fell due while the source's
/// previous run was still going runs after it, and so do the ticks of a
/// short database outage; a longer outage (every replica or the database
/// down) costs one late run, as a lone daemon's suspend does, not a run per
/// tick, and a source whose runs outlast its ticks queues no more than that.
fn plan_ticks(
    due: &Due<'_>,
    lease: Duration,
    next_fire: impl Fn(DateTime<Utc>) -> Option<DateTime<Utc>>,
) -> (Planned, usize) {
    let horizon =
        chrono::Duration::from_std(lease * CATCH_UP_LEASES).unwrap_or(chrono::Duration::MAX);
    let oldest = due.now - horizon;
    let mut planned = Planned::one(due.tick, None);
    let mut missed = 0;
    let mut next = next_fire(due.tick);
    while let Some(tick) = next.filter(|t| *t <= due.now) {
        if tick < oldest {
            missed += 1;
        } else {
            planned.ticks.push(tick);
        }
        next = next_fire(tick);
    }
    planned.next = next;
    (planned, missed)
}

/// Counts and logs the ticks [`plan_ticks`] left out of a claim: one
/// catch-up in `tally_source_missed_runs_total`, as a lone daemon counts its
/// catch-up after a suspend.
fn count_missed(engine: &Engine, source: &str, due: DateTime<Utc>, missed: usize) {
    engine.metrics.run_missed(source);
    let tz = engine.config.daemon.timezone;
    tracing::warn!(
        source,
        due = %due.with_timezone(&tz).to_rfc3339(),
        ticks = missed,
        "ticks due over three leases before their claim (every replica or the database down, or runs outlasting the schedule) run as one"
    );
}

/// Records the replica's heartbeat, takes over runs whose lease ran out,
/// then claims due ticks of its share ([`Share`]): at most `free` in all.
/// `live` is the number of live replicas the last round saw.
async fn claim(
    engine: &Arc<Engine>,
    replica: &Arc<Replica>,
    free: usize,
    live: &mut usize,
    holding: Vec<i64>,
) -> Vec<Claim> {
    let (engine, replica) = (engine.clone(), replica.clone());
    let done = tokio::task::spawn_blocking(move || {
        let prints = engine.fingerprints();
        let coordination = &replica.coordination;
        // Beating even when at its bound: a busy replica keeps its share.
        let beating = coordination.heartbeat(&replica.owner, HEARTBEAT)?;
        // A tick of another's share is anyone's once it has waited a whole
        // claim round: its replica stalled, died or is at its bound.
        // Its own ticks falling due before the next round are claimed now
        // and started at their tick, not up to a round late.
        let share = Share::of(&replica.owner, &beating, CLAIM_EVERY).ahead(CLAIM_EVERY);
        if free == 0 {
            return Ok((Vec::new(), beating.len()));
        }
        let mut claims = coordination.reclaim_expired(
            &replica.owner,
            &prints.sources,
            free,
            replica.lease,
            &holding,
        )?;
        let left = free - claims.len().min(free);
        if left > 0 {
            // From the ticks, never from a clock: every replica plans the
            // same ticks.
            let missed = std::sync::Mutex::new(Vec::new());
            let plan = |due: &Due<'_>| {
                let Some(source) = engine.source(due.source) else {
                    return Planned::one(due.tick, None);
                };
                let (planned, n) = plan_ticks(due, replica.lease, |t| engine.next_fire(source, t));
                if n > 0 {
                    lock(&missed).push((due.source.to_owned(), due.tick, n));
                }
                planned
            };
            claims.extend(coordination.claim_share(
                &replica.owner,
                &prints.sources,
                left,
                replica.lease,
                &plan,
                share,
            )?);
            let missed = missed
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Only where the due tick was claimed: a row the claim's limit
            // left where it was is planned (and counted) again next round.
            for (source, due, n) in missed {
                if claims.iter().any(|c| c.source == source && c.tick == due) {
                    count_missed(&engine, &source, due, n);
                }
            }
        }
        Ok::<_, tally_store::StoreError>((claims, beating.len()))
    })
    .await;
    match done {
        Ok(Ok((claims, now_live))) => {
            if now_live != *live {
                tracing::info!(
                    replicas = now_live,
                    "live replicas changed: the sources are shared out again"
                );
                *live = now_live;
            }
            claims
        }
        Ok(Err(e)) => {
            tracing::error!(error = %ErrorChain(&e), "cannot claim due ticks from the database");
            Vec::new()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot claim due ticks from the database");
            Vec::new()
        }
    }
}

fn spawn_claims(
    running: &mut JoinSet<()>,
    engine: &Arc<Engine>,
    replica: &Arc<Replica>,
    claims: Vec<Claim>,
    claimed: &Claimed,
) {
    let Some(first) = claims.first() else {
        return;
    };
    let span = tracing::info_span!(
        "claim",
        replica = %replica.owner,
        tick = %first.tick.with_timezone(&engine.config.daemon.timezone).to_rfc3339(),
    );
    let (engine, replica) = (engine.clone(), replica.clone());
    let (in_flight, pace, finisher) = (
        claimed.in_flight.clone(),
        claimed.pace.clone(),
        claimed.finisher.clone(),
    );
    in_flight.fetch_add(claims.len(), Ordering::AcqRel);
    lock(&claimed.holding).extend(claims.iter().map(|c| c.run));
    let holding = claimed.holding.clone();
    // Claimed ahead of its tick: started at the tick, by the database's
    // clock (the claim's `claimed_at`), measured on this one from now.
    let wait = (first.tick - first.claimed_at)
        .to_std()
        .unwrap_or_default()
        .min(CLAIM_EVERY * 2);
    running.spawn(
        async move {
            // One cadence for the whole group: the ticks queued behind a
            // run keep their leases however long the runs before them take.
            let mut renew = tokio::time::interval(replica.renew_every());
            renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick of an interval is at once: the claim itself leased it.
            renew.tick().await;
            // Queued claims another replica took over meanwhile (their
            // leases ran out under load): that replica runs them.
            let mut lost = HashSet::new();
            if !wait.is_zero() {
                let mut queue = Queue {
                    claims: &claims[1..],
                    lost: &mut lost,
                };
                let pause = tokio::time::sleep(wait);
                renewing(&replica, &claims[0], &mut queue, &mut renew, pause).await;
            }
            for (i, claim) in claims.iter().enumerate() {
                if !lost.contains(&claim.run) {
                    let mut queue = Queue {
                        claims: &claims[i + 1..],
                        lost: &mut lost,
                    };
                    run_claim(&engine, &replica, claim, &mut queue, &mut renew, &finisher).await;
                    pace.finished();
                }
                lock(&holding).remove(&claim.run);
                in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        }
        .instrument(span),
    );
}

/// Runs one claimed tick as the lone daemon's scheduler runs a tick, with
/// its lease (and those of the source's ticks in `queue` behind it) renewed
/// meanwhile, and marks it finished.
async fn run_claim(
    engine: &Arc<Engine>,
    replica: &Arc<Replica>,
    claim: &Claim,
    queue: &mut Queue<'_>,
    renew: &mut tokio::time::Interval,
    finisher: &mpsc::UnboundedSender<ToFinish>,
) {
    let finish = |claim| finish(finisher, claim);
    let Some(source) = engine.source(&claim.source).cloned() else {
        finish(claim).await;
        return;
    };
    let id = source.id();
    let now = engine.clock.now();
    if !claim.rerun && engine.backing_off(&source, now) {
        engine.metrics.backoff_skipped(id);
        tracing::info!(
            source = %id,
            failures = source.breaker().consecutive_failures,
            "scheduled run skipped: the source is backing off after failed runs"
        );
        finish(claim).await;
        return;
    }
    if claim.rerun {
        tracing::warn!(
            source = %id,
            "running a tick again: the replica that claimed it stopped renewing its lease (it died or lost the database)"
        );
    }
    let trigger = if claim.rerun {
        Trigger::Rerun
    } else {
        Trigger::Schedule
    };
    // The source may be running here for another reason (a run or a
    // backfill asked for through the API). Nobody else will run a claimed
    // tick, so it waits for that run, up to the source's next tick; a source
    // still busy then (a plugin that hangs) has the tick skipped, as a lone
    // daemon skips it. A tick caught up late waits at least a claim round.
    let wait_until = engine
        .next_fire(&source, claim.tick)
        .map(|next| next.max(engine.clock.now() + CLAIM_EVERY));
    let result = loop {
        let result = renewing(replica, claim, queue, renew, engine.run(id, trigger, None)).await;
        let Err(RunError::AlreadyRunning(_)) = result else {
            break result;
        };
        if wait_until.is_none_or(|until| engine.clock.now() >= until) {
            break result;
        }
        let pause = tokio::time::sleep(WAIT_FOR_PREVIOUS_RUN);
        renewing(replica, claim, queue, renew, pause).await;
    };
    match result {
        Ok(report) if report.run_id.is_none() => {
            // Not stored (the database was lost meanwhile): the run is left
            // unfinished and no longer renewed, so that once its lease runs
            // out a replica runs the tick again.
            tracing::warn!(
                source = %id,
                "the run could not be stored: its tick is run again once its lease runs out"
            );
            return;
        }
        Ok(_) => {}
        Err(RunError::Store(e)) => {
            tracing::warn!(
                source = %id,
                error = %ErrorChain(&e),
                "the run could not read the store: its tick is run again once its lease runs out"
            );
            return;
        }
        Err(RunError::ShuttingDown(_)) => {
            // Not started: another replica takes the tick at once.
            renew_run(replica, claim, Duration::ZERO).await;
            return;
        }
        Err(RunError::AlreadyRunning(_)) => {
            engine.metrics.run_skipped(id);
            tracing::warn!(source = %id, "scheduled run skipped: the previous run is still going");
        }
        Err(e) => tracing::error!(source = %id, error = %ErrorChain(&e), "run could not start"),
    }
    finish(claim).await;
}

/// Awaits `work` while renewing the leases of the claim and of those
/// queued behind it at every tick of `renew`.
async fn renewing<T>(
    replica: &Arc<Replica>,
    claim: &Claim,
    queue: &mut Queue<'_>,
    renew: &mut tokio::time::Interval,
    work: impl Future<Output = T>,
) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = renew.tick() => renew_queued(replica, claim, queue).await,
        }
    }
}

/// Ends the replica's heartbeat at shutdown: the others take its share at
/// once instead of after [`HEARTBEAT`].
async fn stop_beating(replica: &Arc<Replica>) {
    let r = replica.clone();
    let done = tokio::task::spawn_blocking(move || {
        r.coordination
            .release(&format!("replica:{}", r.owner), &r.owner, 1)
    })
    .await;
    if let Ok(Err(e)) = done {
        tracing::warn!(error = %ErrorChain(&e), "cannot end this replica's heartbeat: the others take its share when it runs out");
    }
}

async fn renew_run(replica: &Arc<Replica>, claim: &Claim, lease: Duration) {
    let (r, run) = (replica.clone(), claim.run);
    let renewed =
        tokio::task::spawn_blocking(move || r.coordination.renew(run, &r.owner, lease)).await;
    match renewed {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => tracing::warn!(
            source = %claim.source,
            "lost the lease of a running run: another replica took the tick over and runs it again (stored idempotently)"
        ),
        Ok(Err(e)) => {
            tracing::warn!(source = %claim.source, error = %ErrorChain(&e), "cannot renew a run's lease")
        }
        Err(e) => tracing::warn!(source = %claim.source, error = %e, "cannot renew a run's lease"),
    }
}

/// The claims of a source queued behind the one running, and those of them
/// another replica took over.
struct Queue<'a> {
    claims: &'a [Claim],
    lost: &'a mut HashSet<i64>,
}

/// Renews the leases of a running claim and of its source's claims queued
/// behind it, in one statement; notes the queued ones lost.
async fn renew_queued(replica: &Arc<Replica>, claim: &Claim, queue: &mut Queue<'_>) {
    if queue.claims.is_empty() {
        return renew_run(replica, claim, replica.lease).await;
    }
    let r = replica.clone();
    let runs: Vec<i64> = std::iter::once(claim)
        .chain(queue.claims)
        .map(|c| c.run)
        .filter(|run| !queue.lost.contains(run))
        .collect();
    let renewed =
        tokio::task::spawn_blocking(move || r.coordination.renew_all(&runs, &r.owner, r.lease))
            .await;
    match renewed {
        Ok(Ok(lost)) if lost.is_empty() => {}
        Ok(Ok(lost)) => {
            tracing::warn!(
                source = %claim.source,
                runs = lost.len(),
                "lost the lease of runs of the source: another replica took their ticks over and runs them again (stored idempotently)"
            );
            queue.lost.extend(lost);
        }
        Ok(Err(e)) => {
            tracing::warn!(source = %claim.source, error = %ErrorChain(&e), "cannot renew the leases of runs")
        }
        Err(e) => {
            tracing::warn!(source = %claim.source, error = %e, "cannot renew the leases of runs")
        }
    }
}

/// Marks a claimed run finished, through the replica's [`Finisher`].
async fn finish(finisher: &mpsc::UnboundedSender<ToFinish>, claim: &Claim) {
    let (held, answer) = oneshot::channel();
    if finisher
        .send(ToFinish {
            run: claim.run,
            held,
        })
        .is_err()
    {
        tracing::warn!(source = %claim.source, "cannot mark a run finished: the replica is stopping");
        return;
    }
    match answer.await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => tracing::warn!(
            source = %claim.source,
            "the run's lease had run out and another replica took the tick over: it ran twice (stored idempotently)"
        ),
        Ok(Err(error)) => tracing::warn!(
            source = %claim.source,
            %error,
            "cannot mark a run finished: its lease runs out and another replica runs it again"
        ),
        Err(_) => {
            tracing::warn!(source = %claim.source, "cannot mark a run finished: the replica is stopping")
        }
    }
}

/// The quarterly reports, on the holder of the `reports` lease.
struct ReportsDuty {
    /// The term of the lease while this replica holds it.
    term: Option<i64>,
    /// Whether the lease was ever held: the start report is written only
    /// by a replica that holds the lease as it starts.
    ever: bool,
    /// When the report schedule was last checked ([`reports::due`]).
    checked: DateTime<Utc>,
}

impl ReportsDuty {
    fn new(engine: &Engine) -> ReportsDuty {
        ReportsDuty {
            term: None,
            ever: false,
            checked: engine.clock.now(),
        }
    }

    /// Takes or renews the lease; on taking it, catches the reports up
    /// (the previous holder may have died before a report was due).
    async fn renew(
        &mut self,
        engine: &Arc<Engine>,
        replica: &Arc<Replica>,
        running: &mut JoinSet<()>,
    ) {
        let (r, held) = (replica.clone(), self.term);
        let got = tokio::task::spawn_blocking(move || {
            r.coordination
                .acquire_or_renew(REPORTS_LEASE, &r.owner, r.lease, held)
        })
        .await;
        let term = match got {
            Ok(Ok(term)) => term,
            Ok(Err(e)) => {
                tracing::warn!(error = %ErrorChain(&e), "cannot renew the reports lease: leaving the reports to another replica");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the reports lease: leaving the reports to another replica");
                None
            }
        };
        let gained = term.is_some() && term != self.term;
        if self.term.is_some() && term.is_none() {
            tracing::info!(replica = %replica.owner, "this replica no longer writes the quarterly reports");
        }
        engine.metrics.set_reports_lease(term.is_some());
        let first = !self.ever;
        self.term = term;
        if !gained {
            return;
        }
        self.ever = true;
        tracing::info!(replica = %replica.owner, "this replica writes the quarterly reports (it holds the reports lease)");
        self.checked = engine.clock.now();
        let config = &engine.config.reports;
        let tz = engine.config.daemon.timezone;
        let period = reports::report_period(engine.clock.now(), tz);
        let start = first && config.write_on_start;
        if config.enabled {
            scheduler::spawn_catch_up(running, engine, start.then(|| period.clone()));
        }
        if start {
            scheduler::spawn_report(running, engine, period);
        }
    }

    /// Writes the report if its schedule fired since the last check, while
    /// holding the lease.
    fn check(&mut self, engine: &Arc<Engine>, running: &mut JoinSet<()>) {
        let now = engine.clock.now();
        let config = &engine.config.reports;
        if self.term.is_some() && config.enabled {
            let tz = engine.config.daemon.timezone;
            if let Some(fired) = reports::due(&config.schedule, tz, self.checked, now) {
                scheduler::spawn_report(running, engine, reports::report_period(fired, tz));
            }
        }
        self.checked = now;
    }

    /// Gives the lease up at shutdown: another replica takes it at once.
    async fn release(&mut self, replica: &Arc<Replica>) {
        let Some(term) = self.term.take() else {
            return;
        };
        let r = replica.clone();
        let done = tokio::task::spawn_blocking(move || {
            r.coordination.release(REPORTS_LEASE, &r.owner, term)
        })
        .await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %ErrorChain(&e), "cannot give the reports lease up: another replica takes it when it expires");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(pace: &Pace, finished: usize, held_back: bool) -> usize {
        for _ in 0..finished {
            pace.finished();
        }
        if held_back {
            pace.held_back();
        }
        pace.next_round();
        pace.most()
    }

    #[test]
    fn a_burst_doubles_the_bound_up_to_the_most_claimed() {
        let pace = Pace::new(4);
        assert_eq!(pace.most(), 400);
        // Each round finishes all it claimed and was held back by the bound.
        assert_eq!(round(&pace, 400, true), 800);
        assert_eq!(round(&pace, 800, true), 1_600);
        assert_eq!(round(&pace, 1_600, true), MOST_CLAIMED);
    }

    #[test]
    fn slow_runs_shrink_the_bound_by_half_a_round_down_to_two_per_slot() {
        let pace = Pace::new(4);
        assert_eq!(round(&pace, 1, true), 200);
        assert_eq!(round(&pace, 1, true), 100);
        for _ in 0..10 {
            round(&pace, 1, true);
        }
        assert_eq!(pace.most(), 8);
        // A round the bound did not hold back says nothing of the pace.
        assert_eq!(round(&pace, 0, false), 8);
        assert_eq!(round(&pace, 500, false), 8);
        assert_eq!(round(&pace, 500, true), 1_000);
    }

    #[test]
    fn rounds_count_their_own_runs_only() {
        let pace = Pace::new(1);
        round(&pace, 300, false);
        // The 300 of the round before are not counted again.
        assert_eq!(round(&pace, 10, true), 50);
    }

    /// Second `n` of a day, for ticks every second.
    fn at(n: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000 + n, 0).unwrap()
    }

    fn every_second(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        Some(t + chrono::Duration::seconds(1))
    }

    fn plan(due: i64, now: i64) -> (Vec<i64>, i64, usize) {
        let due = Due {
            source: "s",
            tick: at(due),
            now: at(now),
        };
        let (planned, missed) = plan_ticks(&due, Duration::from_secs(3), every_second);
        let secs = |t: DateTime<Utc>| t.timestamp() - at(0).timestamp();
        (
            planned.ticks.into_iter().map(secs).collect(),
            secs(planned.next.unwrap()),
            missed,
        )
    }

    #[test]
    fn a_tick_on_time_is_claimed_alone() {
        assert_eq!(plan(10, 10), (vec![10], 11, 0));
        // Claimed ahead of its tick.
        assert_eq!(plan(11, 10), (vec![11], 12, 0));
    }

    #[test]
    fn every_tick_due_within_three_leases_is_claimed_older_ones_collapse() {
        // Held back four seconds (by a dead replica's lease, the source's
        // previous run, or a database outage): each tick runs.
        assert_eq!(plan(11, 15), (vec![11, 12, 13, 14, 15], 16, 0));
        // Nobody claimed for a minute: the ticks due more than three leases
        // (9 s) ago collapse into the due one.
        assert_eq!(
            plan(11, 71),
            (vec![11, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71], 72, 50)
        );
    }
}
