//! Tests of the write path: what `record_run` and `record_runs` leave in the
//! tables, checked against the tables themselves recomputed from raw rows.

use std::collections::BTreeMap;

use super::*;

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    (dir, store)
}

fn run(source: &str, trigger: &str, from: NaiveDate, to: NaiveDate) -> RunRecord {
    let at: DateTime<Utc> = "2026-12-01T02:30:00Z".parse().unwrap();
    RunRecord {
        source: source.into(),
        trigger: trigger.into(),
        started_at: at,
        finished_at: at,
        result: RunResult::Success,
        error: None,
        window_from: from,
        window_to: to,
        warnings: vec![],
        http_requests: None,
        uncovered: Vec::new(),
        error_kind: None,
        retry_after: None,
    }
}

fn obs(source: &str, unit: &str, entity: &str, day: NaiveDate, value: f64) -> Observation {
    Observation {
        source: source.into(),
        unit: unit.into(),
        indicator: "n".into(),
        entity: entity.into(),
        day,
        value,
    }
}

fn to_record(source: &str, trigger: &str, o: Vec<Observation>) -> RunToRecord {
    let first = o.iter().map(|o| o.day).min().unwrap_or(d("2026-11-01"));
    let last = o.iter().map(|o| o.day).max().unwrap_or(first);
    RunToRecord {
        run: run(source, trigger, first, last),
        observations: o,
        state: None,
    }
}

/// The seeded PRNG of the code base, as `lcg(&mut seed)` draws used it.
fn lcg(rng: &mut fastrand::Rng) -> u64 {
    rng.u64(..1 << 31)
}

type MonthlyRow = (i64, i64, f64, i64, f64);

/// `monthly` as stored, and as SQL computes it from every raw row of each
/// (key, month): they must be the same table.
fn monthly_both_ways(store: &SqliteStore) -> (Vec<MonthlyRow>, Vec<MonthlyRow>) {
    let conn = Connection::open(store.path()).unwrap();
    let rows = |sql: &str| -> Vec<MonthlyRow> {
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    };
    let stored =
        rows("SELECT month, key, sum, last_day, last_value FROM monthly ORDER BY month, key");
    // A single max() makes the bare `value` that of the row with the last day.
    let raw = rows(
        "SELECT CAST(strftime('%Y', day * 86400, 'unixepoch') AS INTEGER) * 12 \
                + CAST(strftime('%m', day * 86400, 'unixepoch') AS INTEGER) - 1 AS month, \
                key, SUM(value), MAX(day), value \
         FROM observations GROUP BY month, key ORDER BY month, key",
    );
    (stored, raw)
}

/// Every stored observation as (source, unit, entity, day) -> (value, run).
fn stored_observations(store: &SqliteStore) -> BTreeMap<(String, String, String, i64), (f64, i64)> {
    let conn = Connection::open(store.path()).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT k.source, k.unit, k.entity, o.day, o.value, o.run \
             FROM observations o JOIN keys k ON k.id = o.key",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?),
            (r.get(4)?, r.get(5)?),
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// What `PRAGMA foreign_key_check` reports, and keys stored twice.
fn broken_references(store: &SqliteStore) -> (usize, i64) {
    let conn = Connection::open(store.path()).unwrap();
    let mut stmt = conn.prepare("PRAGMA foreign_key_check").unwrap();
    let broken = stmt.query_map([], |_| Ok(())).unwrap().count();
    let twice: i64 = conn
        .query_row(
            "SELECT COUNT(*) - COUNT(DISTINCT source || '|' || unit || '|' || indicator || '|' || entity) FROM keys",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (broken, twice)
}

#[test]
fn monthly_always_equals_the_sums_of_its_raw_rows() {
    let (_dir, store) = open();
    let mut truth: BTreeMap<(String, String, String, i64), (f64, i64)> = BTreeMap::new();
    let first = d("2026-09-20");
    let mut seed = fastrand::Rng::with_seed(11);
    for round in 0..12 {
        // Runs of random windows (one stretch, or with holes), keys in
        // random order, some days twice in a run (the later value wins),
        // recorded one by one or several in one commit, twice the same
        // source in one commit too.
        let mut group = Vec::new();
        for _ in 0..=(lcg(&mut seed) % 3) {
            let source = ["s1", "s2"][(lcg(&mut seed) % 2) as usize];
            let start = first + chrono::Days::new(lcg(&mut seed) % 100);
            let days = 1 + lcg(&mut seed) % 70;
            let holes = lcg(&mut seed).is_multiple_of(2);
            let mut o = Vec::new();
            for unit in ["a", "b"] {
                for entity in ["", "x", "y"] {
                    if lcg(&mut seed).is_multiple_of(4) {
                        continue;
                    }
                    for off in 0..days {
                        if holes && lcg(&mut seed).is_multiple_of(3) {
                            continue;
                        }
                        let day = start + chrono::Days::new(off);
                        o.push(obs(
                            source,
                            unit,
                            entity,
                            day,
                            (lcg(&mut seed) % 20) as f64 * 0.5,
                        ));
                        if lcg(&mut seed).is_multiple_of(17) {
                            o.push(obs(
                                source,
                                unit,
                                entity,
                                day,
                                (lcg(&mut seed) % 20) as f64 * 0.25,
                            ));
                        }
                    }
                }
            }
            for i in (1..o.len()).rev() {
                o.swap(i, (lcg(&mut seed) as usize) % (i + 1));
            }
            group.push(to_record(source, &format!("round {round}"), o));
        }
        let ids: Vec<i64> = if round % 2 == 0 {
            store
                .record_runs(&group)
                .into_iter()
                .collect::<Result<_, _>>()
                .unwrap()
        } else {
            group
                .iter()
                .map(|r| store.record_run(&r.run, &r.observations, None).unwrap())
                .collect()
        };
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        for (r, id) in group.iter().zip(&ids) {
            for o in &r.observations {
                truth.insert(
                    (
                        o.source.clone(),
                        o.unit.clone(),
                        o.entity.clone(),
                        day_num(o.day),
                    ),
                    (o.value, *id),
                );
            }
        }
        let (stored, raw) = monthly_both_ways(&store);
        assert_eq!(stored, raw, "round {round}");
    }
    assert_eq!(stored_observations(&store), truth);
    assert_eq!(broken_references(&store), (0, 0));
}

#[test]
fn a_run_that_cannot_be_stored_costs_no_other_run_its_place() {
    let (_dir, store) = open();
    let day = d("2026-11-02");
    let good = |unit: &str| to_record("src", "schedule", vec![obs("src", unit, "", day, 2.0)]);
    let mut invalid = good("c");
    invalid.observations[0].value = f64::INFINITY;
    // A run the database refuses after its run row and its new key are
    // written: the shared transaction fails, and each run is recorded again
    // in a transaction of its own.
    lock(&store.writer)
        .conn
        .execute_batch(
            "CREATE TEMP TRIGGER refuse BEFORE INSERT ON observations WHEN NEW.value = 13 \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        )
        .unwrap();
    let mut poison = good("p");
    poison.observations[0].value = 13.0;
    let batch = vec![good("a"), invalid, poison, good("b")];
    let answers = store.record_runs(&batch);

    assert_eq!(answers.len(), 4);
    let a = *answers[0].as_ref().unwrap();
    let b = *answers[3].as_ref().unwrap();
    assert!(a < b);
    let invalid_err = answers[1].as_ref().unwrap_err().to_string();
    assert!(
        invalid_err.starts_with("run of source \"src\" cannot be stored: observation"),
        "{invalid_err}"
    );
    // The cause is the error's source, shown by its chain.
    let poison_err = tally_domain::ErrorChain(answers[2].as_ref().unwrap_err()).to_string();
    assert!(poison_err.contains("refused by the test"), "{poison_err}");

    let key = |unit: &str| {
        (
            "src".to_owned(),
            unit.to_owned(),
            String::new(),
            day_num(day),
        )
    };
    assert_eq!(
        stored_observations(&store),
        BTreeMap::from([(key("a"), (2.0, a)), (key("b"), (2.0, b))])
    );
    assert_eq!(store.recent_runs("src", 10).unwrap().len(), 2);

    // The key of the refused run was inserted by transactions that rolled
    // back: the writer must not remember an id that was never committed.
    let again = store
        .record_run(&good("p").run, &good("p").observations, None)
        .unwrap();
    assert_eq!(stored_observations(&store)[&key("p")], (2.0, again));
    assert_eq!(broken_references(&store), (0, 0));
    let (stored, raw) = monthly_both_ways(&store);
    assert_eq!(stored, raw);
}

#[test]
fn a_key_another_process_added_is_found_not_added_again() {
    // Two stores on one file, as `tallyd collect` beside the daemon.
    let (dir, daemon) = open();
    let cli = SqliteStore::open(dir.path()).unwrap();
    let day = d("2026-11-02");
    let record = |store: &SqliteStore, unit: &str, value: f64| {
        let r = to_record("src", "manual", vec![obs("src", unit, "", day, value)]);
        store.record_run(&r.run, &r.observations, None).unwrap()
    };
    record(&daemon, "a", 1.0);
    let by_cli = record(&cli, "b", 2.0);
    // The daemon's writer knew the source's keys before "b" existed.
    let by_daemon = record(&daemon, "b", 3.0);
    assert!(by_cli < by_daemon);
    let key = |unit: &str| {
        (
            "src".to_owned(),
            unit.to_owned(),
            String::new(),
            day_num(day),
        )
    };
    assert_eq!(stored_observations(&daemon)[&key("b")], (3.0, by_daemon));
    assert_eq!(broken_references(&daemon), (0, 0));
    let (stored, raw) = monthly_both_ways(&daemon);
    assert_eq!(stored, raw);
}
