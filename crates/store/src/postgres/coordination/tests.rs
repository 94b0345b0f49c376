//! Claims and leases on a real PostgreSQL (the test cluster): what holds
//! when replicas race, die or lose a lease.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::*;
use crate::coordination::Planned;

fn store() -> PostgresStore {
    PostgresStore::open(&crate::pg_test_cluster::database()).unwrap()
}

fn mine(sources: &[&str], fingerprint: &str) -> HashMap<String, String> {
    sources
        .iter()
        .map(|s| ((*s).to_owned(), fingerprint.to_owned()))
        .collect()
}

fn schedules(sources: &[&str], fingerprint: &str, first: DateTime<Utc>) -> Vec<Schedule> {
    sources
        .iter()
        .map(|s| Schedule {
            source: (*s).to_owned(),
            fingerprint: fingerprint.to_owned(),
            first_tick: Some(first),
        })
        .collect()
}

/// Lets the database's clock pass a lease given as zero: the next
/// transaction's `now()` is then past it. Not a timed assertion.
fn let_leases_expire() {
    std::thread::sleep(Duration::from_millis(20));
}

const LEASE: Duration = Duration::from_secs(60);

/// A tick every millisecond, never collapsed: every claim finds due ticks,
/// so the racing owners contend for the same rows all along.
fn every_ms(due: &Due<'_>) -> Planned {
    Planned::one(due.tick, Some(due.tick + chrono::Duration::milliseconds(1)))
}

/// A tick a day: every claim finds one due tick a source.
fn next_day(due: &Due<'_>) -> Planned {
    Planned::one(due.tick, Some(due.tick + chrono::Duration::days(1)))
}

/// Source `s`, due now, claimed by `owner` with a lease that runs out at
/// once; with the fingerprints that claim it.
fn claimed_without_a_lease(store: &PostgresStore, owner: &str) -> (HashMap<String, String>, Claim) {
    let first = store.now().unwrap();
    store.register(&schedules(&["s"], "f", first)).unwrap();
    let fingerprints = mine(&["s"], "f");
    let c = store
        .claim_due(owner, &fingerprints, 10, Duration::ZERO, &next_day)
        .unwrap()
        .remove(0);
    (fingerprints, c)
}

#[test]
fn two_owners_racing_for_the_same_due_rows_never_both_get_a_tick() {
    let store = store();
    let names: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
    let sources: Vec<&str> = names.iter().map(String::as_str).collect();
    let first = store.now().unwrap() - chrono::Duration::seconds(10);
    store.register(&schedules(&sources, "f", first)).unwrap();
    let fingerprints = mine(&sources, "f");
    let claims: Vec<(String, Claim)> = std::thread::scope(|s| {
        let racers: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|owner| {
                let (store, fingerprints) = (&store, &fingerprints);
                s.spawn(move || {
                    let mut got = Vec::new();
                    for _ in 0..60 {
                        for c in store
                            .claim_due(owner, fingerprints, 7, LEASE, &every_ms)
                            .unwrap()
                        {
                            assert!(store.finish(c.run, owner).unwrap());
                            got.push((owner.to_owned(), c));
                        }
                    }
                    got
                })
            })
            .collect();
        racers.into_iter().flat_map(|r| r.join().unwrap()).collect()
    });
    let owners: BTreeSet<&str> = claims.iter().map(|(o, _)| o.as_str()).collect();
    assert!(
        owners.len() > 1,
        "only {owners:?} claimed: no race happened"
    );
    let mut seen = BTreeSet::new();
    for (owner, c) in &claims {
        assert!(!c.rerun);
        assert!(
            seen.insert((c.source.clone(), c.tick)),
            "{owner} claimed {} at {} again",
            c.source,
            c.tick
        );
    }
    // Each source's ticks follow each other from the first: the schedule
    // moved one tick per claim, none skipped, none twice.
    for source in &sources {
        let ticks: Vec<DateTime<Utc>> = seen
            .iter()
            .filter(|(s, _)| s == source)
            .map(|(_, t)| *t)
            .collect();
        let expected: Vec<DateTime<Utc>> = (0..ticks.len() as i64)
            .map(|n| first + chrono::Duration::milliseconds(n))
            .collect();
        assert_eq!(ticks, expected, "{source}");
    }
    let mut admin = store.conn("test").unwrap();
    let rows: i64 = admin
        .query_one("SELECT COUNT(*) FROM source_run", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows as usize, claims.len());
}

#[test]
fn a_source_with_a_run_going_is_not_claimed_until_it_finishes() {
    let store = store();
    let first = store.now().unwrap() - chrono::Duration::seconds(10);
    store.register(&schedules(&["s"], "f", first)).unwrap();
    let fingerprints = mine(&["s"], "f");
    let claimed = store
        .claim_due("a", &fingerprints, 10, LEASE, &every_ms)
        .unwrap();
    assert_eq!(claimed.len(), 1);
    // The next tick is due, but the first run still goes.
    assert!(
        store
            .claim_due("b", &fingerprints, 10, LEASE, &every_ms)
            .unwrap()
            .is_empty()
    );
    assert!(store.finish(claimed[0].run, "a").unwrap());
    let next = store
        .claim_due("b", &fingerprints, 10, LEASE, &every_ms)
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].tick, first + chrono::Duration::milliseconds(1));
}

#[test]
fn an_expired_lease_is_reclaimed_once_as_a_rerun() {
    let store = store();
    let first = store.now().unwrap() - chrono::Duration::seconds(1);
    store.register(&schedules(&["s", "t"], "f", first)).unwrap();
    let fingerprints = mine(&["s", "t"], "f");
    // "dead" claims both with a lease that runs out at once, and renews
    // neither: it was killed.
    let dead = store
        .claim_due("dead", &fingerprints, 10, Duration::ZERO, &next_day)
        .unwrap();
    assert_eq!(dead.len(), 2);
    let_leases_expire();
    // Not by its own owner while it still holds them (late, not dead).
    let held: Vec<i64> = dead.iter().map(|c| c.run).collect();
    assert!(
        store
            .reclaim_expired("dead", &fingerprints, 10, LEASE, &held)
            .unwrap()
            .is_empty()
    );
    let taken: Vec<(String, Claim)> = std::thread::scope(|s| {
        let racers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|owner| {
                let (store, fingerprints) = (&store, &fingerprints);
                s.spawn(move || {
                    let got = store
                        .reclaim_expired(owner, fingerprints, 10, LEASE, &[])
                        .unwrap();
                    got.into_iter()
                        .map(|c| (owner.to_owned(), c))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        racers.into_iter().flat_map(|r| r.join().unwrap()).collect()
    });
    let mut runs: Vec<i64> = taken.iter().map(|(_, c)| c.run).collect();
    runs.sort();
    let mut expected: Vec<i64> = dead.iter().map(|c| c.run).collect();
    expected.sort();
    assert_eq!(runs, expected, "each run taken over once: {taken:?}");
    for (owner, c) in &taken {
        assert!(c.rerun);
        let before = dead.iter().find(|d| d.run == c.run).unwrap();
        assert_eq!((&c.source, c.tick), (&before.source, before.tick));
        // The dead replica, back, can neither renew nor finish it.
        assert!(!store.renew(c.run, "dead", LEASE).unwrap());
        assert!(!store.finish(c.run, "dead").unwrap());
        assert!(store.renew(c.run, owner, LEASE).unwrap());
        assert!(store.finish(c.run, owner).unwrap());
    }
    let_leases_expire();
    assert!(
        store
            .reclaim_expired("c", &fingerprints, 10, LEASE, &[])
            .unwrap()
            .is_empty(),
        "a finished run is never taken over"
    );
}

/// Plans up to three due ticks a millisecond apart.
fn three_due(due: &Due<'_>) -> Planned {
    let ms = chrono::Duration::milliseconds;
    let ticks: Vec<DateTime<Utc>> = (0..)
        .map(|n| due.tick + ms(n))
        .take_while(|t| *t <= due.now)
        .take(3)
        .collect();
    let next = *ticks.last().unwrap() + ms(1);
    Planned {
        ticks,
        next: Some(next),
    }
}

#[test]
fn a_claim_takes_every_planned_tick_up_to_its_limit_and_renews_them_together() {
    let store = store();
    let first = store.now().unwrap() - chrono::Duration::seconds(1);
    store.register(&schedules(&["s"], "f", first)).unwrap();
    let fingerprints = mine(&["s"], "f");
    let ms = chrono::Duration::milliseconds;

    // Three ticks planned, two taken: the schedule stays at the third.
    let two = store
        .claim_due("a", &fingerprints, 2, LEASE, &three_due)
        .unwrap();
    let ticks: Vec<DateTime<Utc>> = two.iter().map(|c| c.tick).collect();
    assert_eq!(ticks, [first, first + ms(1)]);
    assert!(
        store
            .claim_due("b", &fingerprints, 10, LEASE, &three_due)
            .unwrap()
            .is_empty(),
        "not claimed while its runs go"
    );
    for c in &two {
        assert!(store.finish(c.run, "a").unwrap());
    }
    let next = store
        .claim_due("b", &fingerprints, 10, LEASE, &three_due)
        .unwrap();
    let ticks: Vec<DateTime<Utc>> = next.iter().map(|c| c.tick).collect();
    assert_eq!(ticks, [first + ms(2), first + ms(3), first + ms(4)]);

    // The three renewed in one statement, by their owner only.
    let runs: Vec<i64> = next.iter().map(|c| c.run).collect();
    assert_eq!(store.renew_all(&runs, "a", LEASE).unwrap(), runs);
    assert!(store.finish(runs[0], "b").unwrap());
    assert_eq!(
        store.renew_all(&runs, "b", LEASE).unwrap(),
        [runs[0]],
        "finished"
    );
}

#[test]
fn an_owner_takes_its_own_expired_run_over_only_once_it_no_longer_holds_it() {
    let store = store();
    let (fingerprints, c) = claimed_without_a_lease(&store, "a");
    let_leases_expire();
    // Still queued or running there: late under load, its own to run.
    let held = store
        .reclaim_expired("a", &fingerprints, 10, LEASE, &[c.run])
        .unwrap();
    assert!(held.is_empty());
    // Given up (its commit failed): run again, by itself if alone.
    let again = store
        .reclaim_expired("a", &fingerprints, 10, LEASE, &[])
        .unwrap();
    assert_eq!(again.len(), 1);
    assert!(again[0].rerun);
    assert_eq!(again[0].run, c.run);
}

#[test]
fn a_run_is_renewed_only_by_its_owner_and_a_renewed_one_is_not_reclaimed() {
    let store = store();
    let (fingerprints, c) = claimed_without_a_lease(&store, "a");
    assert!(!store.renew(c.run, "b", LEASE).unwrap());
    assert!(store.renew(c.run, "a", LEASE).unwrap());
    let_leases_expire();
    assert!(
        store
            .reclaim_expired("b", &fingerprints, 10, LEASE, &[])
            .unwrap()
            .is_empty()
    );
    assert!(!store.finish(c.run, "b").unwrap());
    assert!(store.finish(c.run, "a").unwrap());
    assert!(!store.renew(c.run, "a", LEASE).unwrap(), "finished");
}

#[test]
fn a_lease_held_is_not_acquired_by_another_until_it_expires() {
    let store = store();
    let a = store
        .acquire_or_renew("reports", "a", LEASE, None)
        .unwrap()
        .expect("a free lease");
    assert_eq!(
        store.acquire_or_renew("reports", "b", LEASE, None).unwrap(),
        None
    );
    assert_eq!(
        store
            .acquire_or_renew("reports", "a", LEASE, Some(a))
            .unwrap(),
        Some(a)
    );
    // Another name is another lease.
    assert!(
        store
            .acquire_or_renew("other", "b", LEASE, None)
            .unwrap()
            .is_some()
    );
    // A renews for no time at all: the lease expires, and b takes it.
    assert_eq!(
        store
            .acquire_or_renew("reports", "a", Duration::ZERO, Some(a))
            .unwrap(),
        Some(a)
    );
    let_leases_expire();
    let b = store
        .acquire_or_renew("reports", "b", LEASE, None)
        .unwrap()
        .expect("an expired lease");
    assert!(b > a, "a new term: {b} after {a}");
    // a, who lost it, cannot renew it by name (Oban #1488), nor give b's up.
    assert_eq!(
        store
            .acquire_or_renew("reports", "a", LEASE, Some(a))
            .unwrap(),
        None
    );
    store.release("reports", "a", a).unwrap();
    assert_eq!(
        store.acquire_or_renew("reports", "c", LEASE, None).unwrap(),
        None
    );
    // b gives it up at shutdown: c takes it at once.
    store.release("reports", "b", b).unwrap();
    assert!(
        store
            .acquire_or_renew("reports", "c", LEASE, None)
            .unwrap()
            .is_some()
    );
}

#[test]
fn only_replicas_with_the_registered_fingerprint_claim_a_source() {
    let store = store();
    let now = store.now().unwrap();
    let past = now - chrono::Duration::seconds(5);
    assert_eq!(
        store
            .register(&schedules(&["s", "t"], "old", past))
            .unwrap()
            .len(),
        2
    );
    // The same fingerprint again keeps the next tick.
    assert!(
        store
            .register(&schedules(&["s"], "old", now + chrono::Duration::days(9)))
            .unwrap()
            .is_empty()
    );
    let status = store.schedule_status(&["s", "t", "u"]).unwrap();
    assert_eq!(status["s"].next_tick, Some(past));
    assert!(!status.contains_key("u"));
    // A replica with another configuration of s registers it: it wins.
    assert_eq!(
        store.register(&schedules(&["s"], "new", past)).unwrap(),
        vec!["s".to_owned()]
    );
    let old = HashMap::from([
        ("s".to_owned(), "old".to_owned()),
        ("t".to_owned(), "old".to_owned()),
    ]);
    let claimed: Vec<String> = store
        .claim_due("old-replica", &old, 10, LEASE, &next_day)
        .unwrap()
        .into_iter()
        .map(|c| c.source)
        .collect();
    assert_eq!(claimed, ["t"]);
    let foreign = store.foreign(&old).unwrap();
    assert_eq!(
        foreign,
        [Foreign {
            source: "s".into(),
            fingerprint: "new".into(),
            mine: Some("old".into())
        }]
    );
    let only_t = mine(&["t"], "old");
    assert_eq!(store.foreign(&only_t).unwrap()[0].mine, None);
    let claimed = store
        .claim_due("new-replica", &mine(&["s"], "new"), 10, LEASE, &next_day)
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let status = store.schedule_status(&["s"]).unwrap();
    assert_eq!(status["s"].last_owner.as_deref(), Some("new-replica"));
    assert_eq!(status["s"].last_tick, Some(past));
    assert_eq!(
        status["s"].next_tick,
        Some(past + chrono::Duration::days(1))
    );
    assert!(!status["s"].last_finished);
}

#[test]
fn live_replicas_split_due_ticks_by_share_and_take_overdue_ones_of_any_share() {
    let store = store();
    let names: Vec<String> = (0..60).map(|i| format!("s{i}")).collect();
    let sources: Vec<&str> = names.iter().map(String::as_str).collect();
    let fingerprints = mine(&sources, "f");
    // Two replicas beat; a third's heartbeat ran out.
    store.heartbeat("gone", Duration::ZERO).unwrap();
    let_leases_expire();
    assert_eq!(store.heartbeat("b", LEASE).unwrap(), ["b"]);
    let live = store.heartbeat("a", LEASE).unwrap();
    assert_eq!(live, ["a", "b"]);

    // Due just now: each takes its own share only, and the two shares
    // make up every source.
    let now = store.now().unwrap();
    store.register(&schedules(&sources, "f", now)).unwrap();
    let after = Duration::from_secs(3600);
    let (share_a, share_b) = (Share::of("a", &live, after), Share::of("b", &live, after));
    assert_eq!((share_a.rank, share_b.rank, share_a.live), (0, 1, 2));
    let got_a = store
        .claim_share("a", &fingerprints, 100, LEASE, &next_day, share_a)
        .unwrap();
    // Again: a's share is claimed, b's is not a's to take yet.
    assert!(
        store
            .claim_share("a", &fingerprints, 100, LEASE, &next_day, share_a)
            .unwrap()
            .is_empty()
    );
    let got_b = store
        .claim_share("b", &fingerprints, 100, LEASE, &next_day, share_b)
        .unwrap();
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "{got_a:?} {got_b:?}"
    );
    let mut all: Vec<String> = got_a
        .iter()
        .chain(&got_b)
        .map(|c| c.source.clone())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), sources.len(), "each source claimed once");
    assert_eq!(got_a.len() + got_b.len(), sources.len());

    for c in &got_a {
        assert!(store.finish(c.run, "a").unwrap());
    }
    for c in &got_b {
        assert!(store.finish(c.run, "b").unwrap());
    }

    // b's share, left due longer than `after`, goes to a.
    let old = store.now().unwrap() - chrono::Duration::hours(2);
    let other = mine(&sources, "g");
    store.register(&schedules(&sources, "g", old)).unwrap();
    let took = store
        .claim_share("a", &other, 100, LEASE, &next_day, share_a)
        .unwrap();
    assert_eq!(took.len(), sources.len(), "overdue ticks of any share");
}

#[test]
fn a_share_claimed_ahead_takes_its_own_ticks_due_soon_and_never_anothers() {
    let store = store();
    let names: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
    let sources: Vec<&str> = names.iter().map(String::as_str).collect();
    let fingerprints = mine(&sources, "f");
    store.heartbeat("a", LEASE).unwrap();
    let live = store.heartbeat("b", LEASE).unwrap();
    // Due in a minute: not due yet, but within an hour's `ahead`.
    let soon = store.now().unwrap() + chrono::Duration::minutes(1);
    store.register(&schedules(&sources, "f", soon)).unwrap();
    let after = Duration::ZERO;
    let share_a = Share::of("a", &live, after);
    assert!(
        store
            .claim_share("a", &fingerprints, 100, LEASE, &next_day, share_a)
            .unwrap()
            .is_empty(),
        "not due, not claimed ahead"
    );
    let ahead = share_a.ahead(Duration::from_secs(3600));
    let got = store
        .claim_share("a", &fingerprints, 100, LEASE, &next_day, ahead)
        .unwrap();
    // Only a's share: b's ticks are not overdue, whatever `after` says.
    let share_b = store
        .claim_share(
            "b",
            &fingerprints,
            100,
            LEASE,
            &next_day,
            Share::of("b", &live, after).ahead(Duration::from_secs(3600)),
        )
        .unwrap();
    assert!(!got.is_empty() && !share_b.is_empty());
    assert_eq!(got.len() + share_b.len(), sources.len());
    for c in &got {
        assert_eq!(c.tick, soon, "claimed at its own tick");
        assert!(c.claimed_at < c.tick);
    }

    // Finished together: those still held are marked, one another replica
    // took over is answered back.
    let runs: Vec<i64> = got.iter().map(|c| c.run).collect();
    let lost = store.finish_all(&[runs[0]], "b").unwrap();
    assert_eq!(lost, [runs[0]], "b never held a's run");
    assert!(store.finish_all(&runs, "a").unwrap().is_empty());
    assert_eq!(store.finish_all(&runs, "a").unwrap(), runs, "finished once");
}
