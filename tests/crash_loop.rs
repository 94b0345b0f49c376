//! The kill -9 loop: the daemon is killed with SIGKILL at pseudo-random
//! moments during collection, 50 times, and restarted each time; after a last,
//! clean run its store must equal the store of an uninterrupted run of the
//! same configuration: the same value for every unit, indicator and day, no
//! day lost, none doubled, and no run recorded without its result.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate, Utc};
use serde_json::Value;

use crate::support::*;

/// How many times the daemon is killed.
const KILLS: usize = 50;
/// Days of the backfill, and of every later run's window (the lookback).
const DAYS: u64 = 60;

/// A source on the `faulty` fixture that sleeps 150 ms per run and then
/// writes 1.0 for each of the window's 60 days, every second: a kill lands
/// before, during or after a run's commit.
fn config(dir: &Path, plugins: &Path, from: NaiveDate) -> (PathBuf, u16) {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = TestConfig::new(dir, plugins)
        .daemon("timezone = \"UTC\"\napi_token = \"test-token\"")
        .county()
        .indicator("x", "计数", "count", "次")
        .toml(&format!(
            r#"
[[sources]]
id = "slow"
plugin = "faulty"
unit = "county"
schedule = "* * * * * *"
backfill_from = "{from}"
lookback_days = {lookback}
timeout = "60s"
[sources.settings]
mode = "sleep"
sleep_ms = 150
indicator = "x"
value = 1.0
"#,
            lookback = DAYS - 1,
        ));
    (cfg.write(), cfg.port())
}

fn running(d: &TestDaemon) -> bool {
    d.get("/api/v1/sources").1.contains("\"running\":true")
}

/// Waits for one more successful run than `before`, then answers what the
/// API says of the backfilled range: the summary value and every observation.
fn settle_and_read(d: &TestDaemon, before: u64, period: &str) -> (Value, Vec<Value>) {
    d.wait_for("a clean successful run", 30, |d| {
        d.runs("slow", "success") > before
    });
    let summary = d.get_json(&format!("/api/v1/summary?period={period}"));
    let county = value(&summary, "county", "x");
    let explained = d.get_json(&format!(
        "/api/v1/observations?unit=county&indicator=x&period={period}"
    ));
    // Which run wrote a value differs between the two stores; the values may not.
    let observations = explained["observations"]
        .as_array()
        .expect("observations")
        .iter()
        .map(|o| {
            serde_json::json!({
                "source": o["source"], "unit": o["unit"], "entity": o["entity"],
                "day": o["day"], "value": o["value"],
            })
        })
        .collect();
    (county, observations)
}

/// The store read directly, up to `last` (a run after midnight may add a day).
struct Store {
    observations: Vec<(String, String, String, i64, f64)>,
    monthly: Vec<(i64, String, String, f64, i64, f64)>,
}

fn read_store(data: &Path, last: NaiveDate) -> Store {
    let db = rusqlite::Connection::open(data.join("tally.db")).unwrap();
    let last = (last - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days();

    // Every run recorded has its result, its end and its window; every stored
    // value belongs to a successful run whose window covers its day, and no
    // run wrote more values than it reported.
    let bad_runs: i64 = db
        .query_row(
            "SELECT count(*) FROM runs WHERE result IS NULL OR finished_at < started_at \
             OR window_to < window_from",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(bad_runs, 0, "half-written run rows in {}", data.display());
    let orphans: i64 = db
        .query_row(
            "SELECT count(*) FROM observations o LEFT JOIN runs r ON r.id = o.run \
             WHERE r.id IS NULL OR r.result != 'success' OR o.day < r.window_from \
             OR o.day > r.window_to",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0, "values without their run in {}", data.display());
    let overfull: i64 = db
        .query_row(
            "SELECT count(*) FROM runs r WHERE (SELECT count(*) FROM observations o \
             WHERE o.run = r.id) > r.observations",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(overfull, 0, "runs with more values than they reported");
    let not_success: i64 = db
        .query_row(
            "SELECT count(*) FROM runs WHERE result != 'success'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(not_success, 0, "a kill left a failed run behind");

    let mut stmt = db
        .prepare(
            "SELECT k.unit, k.indicator, k.entity, o.day, o.value FROM observations o \
             JOIN keys k ON k.id = o.key WHERE o.day <= ?1 ORDER BY 1, 2, 3, 4",
        )
        .unwrap();
    let observations = stmt
        .query_map([last], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // The monthly roll-up is written with the observations: it must agree.
    let mut stmt = db
        .prepare(
            "SELECT m.month, k.unit, k.indicator, m.sum, m.last_day, m.last_value \
             FROM monthly m JOIN keys k ON k.id = m.key ORDER BY 1, 2, 3",
        )
        .unwrap();
    let monthly = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    Store {
        observations,
        monthly,
    }
}

#[test]
fn fifty_kill_9s_during_collection_leave_the_store_of_an_uninterrupted_run() {
    let started = Instant::now();
    let t = TestDir::new(&[fixture_plugin("tally_fixture_faulty")]);
    let today = Utc::now().date_naive();
    let from = today.checked_sub_days(Days::new(DAYS - 1)).unwrap();
    let period = format!("{from}..{today}");

    // The reference: the same configuration, never interrupted.
    let (calm, calm_port) = config(&t.dir.join("calm"), &t.plugins, from);
    let mut d = TestDaemon::start(&calm, calm_port);
    let (calm_total, calm_observations) = settle_and_read(&d, 1, &period);
    d.terminate();
    drop(d);

    // Killed at pseudo-random moments from its start: while it loads, while
    // the plugin sleeps, while a run commits, between runs.
    let (killed, killed_port) = config(&t.dir.join("killed"), &t.plugins, from);
    // Seeded, so that a failure replays.
    let mut rng = fastrand::Rng::with_seed(0x7a11_d0c5_eed5_1234);
    let mut mid_run = 0;
    for _ in 0..KILLS {
        let mut d = TestDaemon::start(&killed, killed_port);
        if rng.u64(..3) == 0 {
            // Anywhere: loading, between runs, in a run.
            std::thread::sleep(Duration::from_millis(rng.u64(..600)));
        } else {
            // Inside a run: during the plugin's 150 ms, its commit, or just after.
            // Polled tightly: `wait_for`'s 100 ms steps would miss most of it.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !running(&d) {
                assert!(Instant::now() < deadline, "no run began:\n{}", d.log());
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(rng.u64(..200)));
        }
        // Asked just before the kill: whether it (about) interrupts a run.
        if running(&d) {
            mid_run += 1;
        }
        d.kill9();
    }
    // Not a timing assertion: the loop is pointless if no kill hits a run,
    // and with 150 ms runs every second most of them do.
    assert!(mid_run > 0, "no kill landed during a run");
    let mut d = TestDaemon::start(&killed, killed_port);
    let before = d.runs("slow", "success");
    let (total, observations) = settle_and_read(&d, before, &period);
    d.terminate();
    drop(d);

    // Hand-computed: 60 days of 1.0 each.
    assert_eq!(calm_total.as_f64(), Some(DAYS as f64), "{calm_total}");
    assert_eq!(total, calm_total, "the summary changed after {KILLS} kills");
    assert_eq!(observations.len(), DAYS as usize, "{observations:?}");
    assert_eq!(observations, calm_observations);

    let last = Utc::now().date_naive().min(today);
    let calm_store = read_store(&t.dir.join("calm/data"), last);
    let store = read_store(&t.dir.join("killed/data"), last);
    assert_eq!(store.observations.len(), DAYS as usize);
    for (unit, indicator, entity, _, value) in &store.observations {
        assert_eq!(
            (unit.as_str(), indicator.as_str(), entity.as_str(), *value),
            ("county", "x", "", 1.0)
        );
    }
    assert_eq!(store.observations, calm_store.observations);
    // A run after midnight (UTC) would add a day to one store's month only.
    if Utc::now().date_naive() == today {
        assert_eq!(store.monthly, calm_store.monthly);
    }
    eprintln!(
        "crash loop: {KILLS} kills, {mid_run} during a run, {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
