//! Several `tallyd run` replicas on one PostgreSQL database (issue 13):
//! each (source, tick) is claimed by one replica and run once, and a
//! replica killed mid-run has its runs run again by another once their
//! leases ran out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use tally_store::{PostgresStore, SqliteStore, Store};

use crate::support::*;

const SOURCES: usize = 6;

/// A script for the `exec` plugin: waits `PAUSE` seconds, then prints
/// `VALUE` meetings for the window's last day (windows here are one day).
fn script(dir: &Path) -> PathBuf {
    let path = dir.join("count.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\nset -eu\nsleep \"${PAUSE:-0}\"\n\
         printf '{\"indicator\": \"meetings\", \"day\": \"%s\", \"value\": %s}\\n' \"$TALLY_TO\" \"$VALUE\"\n",
    )
    .unwrap();
    set_mode(&path, 0o755);
    path
}

/// The plugins and the script the daemons of `dir` share, set up once:
/// copying a library over one a running daemon has loaded would crash it.
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_exec")]);
    (plugins, script(dir))
}

/// Units `county/s0..` and one source each, every second, starting today.
fn config(
    dir: &Path,
    (plugins, script): &(PathBuf, PathBuf),
    name: &str,
    store: Option<&str>,
    pause: u32,
    today: NaiveDate,
) -> (PathBuf, u16) {
    let port = free_port();
    let mut c = TestConfig::new(dir, plugins)
        .with_port(port)
        .data_dir(&dir.join(format!("data-{name}")))
        .daemon("timezone = \"UTC\"\nmax_concurrent_runs = 16")
        .county()
        .meetings();
    for i in 0..SOURCES {
        c = c
            .unit(&format!("county/s{i}"), &format!("单位{i}"))
            .toml(&format!(
                r#"
[[sources]]
id = "s{i}"
plugin = "exec"
unit = "county/s{i}"
schedule = "* * * * * *"
backfill_from = "{today}"
lookback_days = 0
[sources.settings]
command = {script}
indicators = ["meetings"]
[sources.settings.env]
VALUE = "{value}"
PAUSE = "{pause}"
"#,
                script = toml_path(script),
                value = i + 1,
            ));
    }
    if let Some(url) = store {
        c = c.toml(&format!("[store]\nurl = \"{url}\"\nlease = \"3s\"\n"));
    }
    (c.write_as(&format!("{name}.toml")), port)
}

/// The replica's owner id, from `/api/v1/sources`.
fn owner(d: &TestDaemon) -> String {
    let all = d.get_json("/api/v1/sources");
    all["replica"]["owner"]
        .as_str()
        .unwrap_or_else(|| panic!("no replica.owner in {all}"))
        .to_owned()
}

fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

/// Every stored observation of the test's units on `day`, without run ids.
fn observations(store: &dyn Store, day: NaiveDate) -> Vec<String> {
    let units: Vec<String> = (0..SOURCES).map(|i| format!("county/s{i}")).collect();
    let units: Vec<&str> = units.iter().map(String::as_str).collect();
    store
        .observations(&units, "meetings", day, day)
        .unwrap()
        .into_iter()
        .map(|o| format!("{:?}", o.observation))
        .collect()
}

#[test]
fn three_replicas_claim_each_tick_once_and_store_what_one_daemon_stores() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let today = Utc::now().date_naive();
    let url = tally_store::pg_test_cluster::database_url();
    let shared = setup(dir);
    let mut replicas: Vec<TestDaemon> = (0..3)
        .map(|n| {
            let (config, port) = config(dir, &shared, &format!("r{n}"), Some(&url), 0, today);
            TestDaemon::start(&config, port)
        })
        .collect();
    // The same sources on one SQLite daemon, alongside.
    let (alone, port) = config(dir, &shared, "alone", None, 0, today);
    let mut alone = TestDaemon::start(&alone, port);
    let owners: Vec<String> = replicas.iter().map(owner).collect();
    assert_eq!(
        owners.iter().collect::<BTreeSet<_>>().len(),
        3,
        "{owners:?}"
    );
    let fingerprints: BTreeSet<String> = replicas
        .iter()
        .map(|d| d.get_json("/api/v1/sources")["replica"]["fingerprint"].to_string())
        .collect();
    assert_eq!(
        fingerprints.len(),
        1,
        "same configuration, same fingerprint"
    );

    std::thread::sleep(Duration::from_secs(10));
    for d in replicas.iter_mut().chain([&mut alone]) {
        assert!(d.terminate().success());
    }

    let mut db = connect(&url);
    let mut ticks: BTreeMap<String, Vec<DateTime<Utc>>> = BTreeMap::new();
    let mut claimed_by: BTreeSet<String> = BTreeSet::new();
    let mut finished: BTreeMap<String, i64> = BTreeMap::new();
    for r in db
        .query(
            "SELECT source_id, tick_at, owner, rerun, finished_at IS NOT NULL \
             FROM source_run ORDER BY source_id, tick_at",
            &[],
        )
        .unwrap()
    {
        let source: String = r.get(0);
        assert!(!r.get::<_, bool>(3), "no replica died, nothing re-ran");
        claimed_by.insert(r.get(2));
        if r.get::<_, bool>(4) {
            *finished.entry(source.clone()).or_default() += 1;
        }
        ticks.entry(source).or_default().push(r.get(1));
    }
    assert_eq!(ticks.len(), SOURCES, "{ticks:?}");
    // Which replicas claimed is up to the shares and who asks first each
    // second: not asserted here (tests/replicas_chaos.rs does), only counted.
    let mut collapsed = 0;
    for (source, ticks) in &ticks {
        assert!(ticks.len() >= 3, "{source}: {ticks:?}");
        // After the first (the registration's "now"), whole seconds, each
        // later than the one before: no tick claimed twice.
        for pair in ticks[1..].windows(2) {
            assert!(pair[0] < pair[1], "{source}: {ticks:?}");
            assert_eq!(pair[1].timestamp_subsec_micros(), 0, "{source}: {ticks:?}");
            collapsed += (pair[1] - pair[0]).num_seconds() - 1;
        }
        // Every finished claim ran once: as many scheduled runs recorded.
        let runs: i64 = db
            .query_one(
                "SELECT COUNT(*) FROM runs WHERE source = $1 AND trigger = 'schedule'",
                &[source],
            )
            .unwrap()
            .get(0);
        assert_eq!(Some(&runs), finished.get(source), "{source}");
    }
    println!(
        "{} ticks claimed by {} replicas; {collapsed} ticks not claimed (missed: due over three leases before a claim)",
        ticks.values().map(Vec::len).sum::<usize>(),
        claimed_by.len()
    );

    let on_postgres = PostgresStore::open(&url).unwrap();
    let alone = SqliteStore::open(&dir.join("data-alone")).unwrap();
    let stored = observations(&on_postgres, today);
    assert_eq!(stored.len(), SOURCES, "{stored:?}");
    assert_eq!(stored, observations(&alone, today));
}

#[test]
fn a_killed_replicas_runs_are_run_again_by_another_after_its_lease() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let today = Utc::now().date_naive();
    let url = tally_store::pg_test_cluster::database_url();
    let shared = setup(dir);
    // Runs take 2 s: a replica holds runs nearly all the time.
    let mut replicas: Vec<TestDaemon> = (0..3)
        .map(|n| {
            let (config, port) = config(dir, &shared, &format!("r{n}"), Some(&url), 2, today);
            TestDaemon::start(&config, port)
        })
        .collect();
    let victim = owner(&replicas[0]);
    let mut db = connect(&url);
    let holds = |db: &mut postgres::Client| -> i64 {
        db.query_one(
            "SELECT COUNT(*) FROM source_run WHERE owner = $1 AND finished_at IS NULL",
            &[&victim],
        )
        .unwrap()
        .get(0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while holds(&mut db) == 0 {
        assert!(Instant::now() < deadline, "{} never claimed a run", victim);
        std::thread::sleep(Duration::from_millis(50));
    }
    replicas[0].kill9();
    let killed_at: DateTime<Utc> = db.query_one("SELECT now()", &[]).unwrap().get(0);
    // What it held when it died: nobody renews these leases any more.
    let orphans: Vec<(i64, String, DateTime<Utc>)> = db
        .query(
            "SELECT id, source_id, tick_at FROM source_run WHERE owner = $1 AND finished_at IS NULL",
            &[&victim],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(!orphans.is_empty(), "the run finished as the replica died");
    let ids: Vec<i64> = orphans.iter().map(|o| o.0).collect();

    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = db
            .query(
                "SELECT id, owner, rerun, reclaimed_at, finished_at IS NOT NULL \
                 FROM source_run WHERE id = ANY($1)",
                &[&ids],
            )
            .unwrap();
        if rows.iter().all(|r| r.get::<_, bool>(4)) {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "the dead replica's runs were not run again:\n{}\n{}",
            replicas[1].log(),
            replicas[2].log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let survivors = [owner(&replicas[1]), owner(&replicas[2])];
    let mut first_claim: Option<DateTime<Utc>> = None;
    for r in &rows {
        let taker: String = r.get(1);
        assert!(r.get::<_, bool>(2), "marked as a re-run");
        assert!(survivors.contains(&taker), "{taker} is not a survivor");
        let at: DateTime<Utc> = r.get(3);
        first_claim = Some(first_claim.map_or(at, |f: DateTime<Utc>| f.min(at)));
    }
    for (_, source, tick) in &orphans {
        let once: i64 = db
            .query_one(
                "SELECT COUNT(*) FROM source_run WHERE source_id = $1 AND tick_at = $2",
                &[source, tick],
            )
            .unwrap()
            .get(0);
        assert_eq!(once, 1);
        let reruns: i64 = db
            .query_one(
                "SELECT COUNT(*) FROM runs WHERE source = $1 AND trigger = 'rerun'",
                &[source],
            )
            .unwrap()
            .get(0);
        assert!(reruns >= 1, "{source} has no recorded re-run");
    }
    let failover = first_claim.unwrap() - killed_at;
    println!(
        "failover with a 3 s lease: {} ms from kill -9 to the first re-claim of the dead replica's {} run(s)",
        failover.num_milliseconds(),
        orphans.len()
    );
    // The survivors kept serving.
    for d in &replicas[1..] {
        assert_eq!(d.get("/healthz").0, 200);
    }
}
