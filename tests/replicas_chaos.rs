//! Replicas under chaos (issue 13, acceptance 2): three `tallyd run`
//! replicas on a PostgreSQL cluster of their own share 300 sources due every
//! second for a minute while a random replica is `kill -9`'d and restarted
//! twenty times and PostgreSQL itself is restarted once; a lone SQLite
//! daemon collects the same sources beside them. What holds is read from the
//! database afterwards. And the failover of a killed replica with the
//! default lease, measured.
//!
//! The sources are `http_json` (the bundled plugin, in-process) against one
//! tiny server of the test, so a run costs a loopback request, not a fork.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, NaiveDate, SubsecRound, Utc};
use tally_store::pg_test_cluster::OwnCluster;
use tally_store::{PostgresStore, SqliteStore, Store};

use crate::support::*;

/// The lease of the chaos run: short, so that the runs of killed replicas
/// are run again inside the minute.
const LEASE: Duration = Duration::from_secs(3);

/// What the test's platform answers for source `i` on `day`: the same
/// whichever daemon asks, however often.
fn count(i: usize, day: NaiveDate) -> usize {
    i % 97 + day.day() as usize
}

/// A platform on 127.0.0.1 answering `GET /v/{i}/{YYYY-MM-DD}` with
/// `{"count": N}` after `delay`, a thread per connection. Returns its port.
fn platform(delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer(stream, delay));
        }
    });
    port
}

fn answer(stream: TcpStream, delay: Duration) {
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    let _ = reader.read_line(&mut request_line);
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
        header.clear();
    }
    let asked = request_line
        .split(' ')
        .nth(1)
        .and_then(|path| path.strip_prefix("/v/"))
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(i, day)| Some((i.parse().ok()?, day.parse().ok()?)));
    std::thread::sleep(delay);
    let (status, body) = match asked {
        Some((i, day)) => ("200 OK", format!("{{\"count\": {}}}", count(i, day))),
        None => ("404 Not Found", "{}".to_owned()),
    };
    let _ = write!(
        &stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// `n` units `county/u{i}` with a source each, due every second, collecting
/// today from the platform on `platform`.
fn config(
    dir: &Path,
    plugins: &Path,
    name: &str,
    n: usize,
    platform: u16,
    store: Option<(&str, Option<Duration>)>,
) -> (PathBuf, u16) {
    let port = free_port();
    let today = Utc::now().date_naive();
    let mut c = TestConfig::new(dir, plugins)
        .with_port(port)
        .data_dir(&dir.join(format!("data-{name}")))
        .daemon("timezone = \"UTC\"\nmax_concurrent_runs = 64\nhttp_per_host_concurrency = 64")
        .county()
        .meetings();
    // No breaker: runs that could not be stored while PostgreSQL was down
    // count as failures, and a replica's breaker would then skip claimed
    // ticks on purpose (tested in the scheduling tests), which the counts
    // below would take for lost ones.
    let mut sources = String::new();
    for i in 0..n {
        c = c.unit(&format!("county/u{i}"), &format!("单位{i}"));
        sources.push_str(&format!(
            r#"
[[sources]]
id = "s{i}"
plugin = "http_json"
unit = "county/u{i}"
schedule = "* * * * * *"
backfill_from = "{today}"
lookback_days = 0
retries = 0
breaker_after = 0
[sources.settings]
url = "http://127.0.0.1:{platform}/v/{i}/{{to}}"
values = [{{ indicator = "meetings", path = "$.count" }}]
"#
        ));
    }
    c = c.toml(&sources);
    match store {
        Some((url, Some(lease))) => {
            c = c.toml(&format!(
                "[store]\nurl = \"{url}\"\nlease = \"{}s\"\n",
                lease.as_secs()
            ))
        }
        Some((url, None)) => c = c.toml(&format!("[store]\nurl = \"{url}\"\n")),
        None => {}
    }
    (c.write_as(&format!("{name}.toml")), port)
}

/// The replica's owner id, from the line it logs as it starts scheduling
/// (`/api/v1/sources` has it too, but may be slow to answer on a machine
/// this test keeps busy).
fn owner(d: &TestDaemon) -> String {
    const LINE: &str = "scheduling as a replica";
    d.wait_for("the replica's first line", 60, |d| d.log().contains(LINE));
    let log = d.log();
    let line = log.lines().find(|l| l.contains(LINE)).unwrap();
    line.split_once("replica=")
        .map(|(_, rest)| {
            rest.chars()
                .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
                .collect()
        })
        .unwrap_or_else(|| panic!("no replica= in {line}"))
}

/// What a poller of one daemon saw.
#[derive(Default)]
struct Polled {
    answers: usize,
    /// Answers that were not 200, by status.
    statuses: BTreeMap<u16, usize>,
    /// Requests that got no answer while the daemon was alive.
    failures: Vec<String>,
    slowest: Duration,
}

/// A daemon as the pollers see it: its address while it is alive, and a
/// generation bumped at each kill so that a request cut by the kill is not
/// taken for a failure.
#[derive(Clone)]
struct Slot {
    base: Option<String>,
    generation: u64,
}

/// Polls `/metrics` and `/api/v1/sources` of the daemon of `slot` every
/// ~250 ms until `stop`.
fn poll(slots: Arc<Mutex<Vec<Slot>>>, slot: usize, stop: Arc<AtomicBool>) -> Polled {
    let mut polled = Polled::default();
    while !stop.load(Ordering::Acquire) {
        for path in ["/metrics", "/api/v1/sources"] {
            let Slot { base, generation } = slots.lock().unwrap()[slot].clone();
            let Some(base) = base else { continue };
            let asked = Instant::now();
            let got = get(&format!("{base}{path}"));
            let took = asked.elapsed();
            match got {
                Ok((status, body)) => {
                    polled.answers += 1;
                    polled.slowest = polled.slowest.max(took);
                    if status != 200 {
                        *polled.statuses.entry(status).or_default() += 1;
                        // A refusal must say why, as JSON: never an empty 5xx.
                        if serde_json::from_str::<serde_json::Value>(&body).is_err()
                            && path != "/metrics"
                        {
                            polled
                                .failures
                                .push(format!("{path}: {status} without a JSON error: {body}"));
                        }
                    }
                }
                Err(e) => {
                    if slots.lock().unwrap()[slot].generation == generation {
                        polled
                            .failures
                            .push(format!("{path} at {}: {e}", Utc::now().format("%T%.3f")));
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    polled
}

/// The next tick of an every-second schedule strictly after `t`.
fn next_second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(0) + chrono::Duration::seconds(1)
}

/// Every stored observation of `units` from `from` to `to`, without run ids.
fn observations(store: &dyn Store, units: &[&str], from: NaiveDate, to: NaiveDate) -> Vec<String> {
    store
        .observations(units, "meetings", from, to)
        .unwrap()
        .into_iter()
        .map(|o| format!("{:?}", o.observation))
        .collect()
}

/// A claim of `source_run`, as the checks read it.
#[derive(Debug)]
struct Row {
    tick: DateTime<Utc>,
    owner: String,
    rerun: bool,
    claimed_at: DateTime<Utc>,
    reclaimed_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    lease_until: DateTime<Utc>,
}

/// Whether the rule lets a claim pass over `tick` (docs/operating.md): it
/// fell due more than three leases before the claim. For a failure's
/// message: the test allows none.
fn missed(tick: DateTime<Utc>, claimed_at: DateTime<Utc>) -> bool {
    tick < claimed_at - chrono::Duration::from_std(LEASE * 3).unwrap()
}

/// A source's recorded runs, for a failure's message.
fn db_runs(url: &str, source: &str) -> Vec<String> {
    let mut db = postgres::Client::connect(url, postgres::NoTls).unwrap();
    db.query(
        "SELECT id, trigger, started_at, finished_at, result FROM runs WHERE source = $1 ORDER BY id",
        &[&source],
    )
    .unwrap()
    .iter()
    .map(|r| {
        format!(
            "run {} {} {} {} {}",
            r.get::<_, i64>(0),
            r.get::<_, String>(1),
            r.get::<_, i64>(2),
            r.get::<_, i64>(3),
            r.get::<_, String>(4)
        )
    })
    .collect()
}

#[test]
fn three_replicas_ride_out_kills_and_a_database_restart_claiming_each_tick_once() {
    const SOURCES: usize = 300;
    const KILLS: usize = 20;
    const CHAOS: Duration = Duration::from_secs(60);
    let seed = fastrand::u64(..);
    println!("chaos seed {seed:#x}");
    let mut rng = fastrand::Rng::with_seed(seed);

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A cluster of its own: the process's shared one serves other tests and
    // must not restart under them.
    let pg = OwnCluster::start();
    let url = pg.database_url();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_http_json")]);
    let platform = platform(Duration::ZERO);
    let configs: Vec<(PathBuf, u16)> = (0..3)
        .map(|n| {
            let store = Some((url.as_str(), Some(LEASE)));
            config(dir, &plugins, &format!("r{n}"), SOURCES, platform, store)
        })
        .collect();
    let (alone_config, alone_port) = config(dir, &plugins, "alone", SOURCES, platform, None);

    let mut replicas: Vec<TestDaemon> = configs
        .iter()
        .map(|(config, port)| TestDaemon::start(config, *port))
        .collect();
    let mut alone = TestDaemon::start(&alone_config, alone_port);
    // Which slot (0..3) each owner id was: a restart is a new owner.
    let mut slot_of: BTreeMap<String, usize> = replicas
        .iter()
        .enumerate()
        .map(|(n, d)| (owner(d), n))
        .collect();

    let slots = Arc::new(Mutex::new(
        replicas
            .iter()
            .chain([&alone])
            .map(|d| Slot {
                base: Some(d.base.clone()),
                generation: 0,
            })
            .collect::<Vec<_>>(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let pollers: Vec<_> = (0..4)
        .map(|slot| {
            let (slots, stop) = (slots.clone(), stop.clone());
            std::thread::spawn(move || poll(slots, slot, stop))
        })
        .collect();

    // Twenty kills spread over the minute, PostgreSQL's restart halfway
    // (between two kills, so that no replica starts while it is down).
    let started = Instant::now();
    let every = CHAOS / (KILLS as u32 + 1);
    let mut kills: Vec<(usize, DateTime<Utc>)> = Vec::new();
    let mut outage: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    for k in 1..=KILLS {
        if k == KILLS / 2 + 1 {
            let at = started + every * k as u32 - every / 2;
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            let down = Utc::now();
            pg.stop();
            // Down long enough for ticks of every source to fall due.
            std::thread::sleep(Duration::from_millis(1500));
            pg.start_again();
            outage = Some((down, Utc::now()));
        }
        let at = started + every * k as u32;
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        let victim = rng.usize(0..3);
        {
            let mut slots = slots.lock().unwrap();
            slots[victim].base = None;
            slots[victim].generation += 1;
        }
        assert!(
            replicas[victim].child.try_wait().unwrap().is_none(),
            "replica {victim} exited by itself:\n{}",
            replicas[victim].log()
        );
        replicas[victim].kill9();
        kills.push((victim, Utc::now()));
        let (config, port) = &configs[victim];
        replicas[victim] = TestDaemon::start(config, *port);
        slot_of.insert(owner(&replicas[victim]), victim);
        slots.lock().unwrap()[victim].base = Some(replicas[victim].base.clone());
    }
    std::thread::sleep((started + CHAOS).saturating_duration_since(Instant::now()));
    // The last victim's runs are run again once their lease ran out.
    std::thread::sleep(LEASE + Duration::from_secs(2));
    stop.store(true, Ordering::Release);
    let polled: Vec<Polled> = pollers.into_iter().map(|p| p.join().unwrap()).collect();
    let (down, up) = outage.expect("PostgreSQL was restarted");
    for (n, d) in replicas.iter_mut().enumerate() {
        assert!(
            d.child.try_wait().unwrap().is_none(),
            "replica {n} exited by itself:\n{}",
            d.log()
        );
    }
    let stopping = Utc::now();
    for d in replicas.iter_mut().chain([&mut alone]) {
        assert!(d.terminate().success(), "{}", d.log());
        assert!(!d.log().contains("panicked"), "{}", d.log());
    }

    // No live replica stopped answering.
    for (slot, p) in polled.iter().enumerate() {
        let name = if slot < 3 {
            format!("r{slot}")
        } else {
            "alone".into()
        };
        println!(
            "{name}: {} answers, not 200: {:?}, slowest {} ms",
            p.answers,
            p.statuses,
            p.slowest.as_millis()
        );
        assert!(
            p.failures.is_empty(),
            "{name} stopped serving: {:#?}",
            p.failures
        );
        assert!(p.answers > 0, "{name} was never polled");
    }

    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut claims: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for r in db
        .query(
            "SELECT source_id, tick_at, owner, rerun, claimed_at, reclaimed_at, \
                    finished_at, lease_until \
               FROM source_run ORDER BY source_id, tick_at",
            &[],
        )
        .unwrap()
    {
        claims.entry(r.get(0)).or_default().push(Row {
            tick: r.get(1),
            owner: r.get(2),
            rerun: r.get(3),
            claimed_at: r.get(4),
            reclaimed_at: r.get(5),
            finished_at: r.get(6),
            lease_until: r.get(7),
        });
    }
    assert_eq!(claims.len(), SOURCES, "every source was claimed");
    let next_ticks: BTreeMap<String, DateTime<Utc>> = db
        .query("SELECT source_id, next_run_at FROM source_schedule", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    let lease = chrono::Duration::from_std(LEASE).unwrap();
    let (mut total, mut reruns, mut given_up) = (0usize, 0usize, 0usize);
    let mut rerun_recorded = 0;
    let diagnose = |source: &str, rows: &[Row]| {
        let mut lines = vec![format!("{rows:#?}")];
        let mut runs = db_runs(&url, source);
        lines.append(&mut runs);
        for d in &replicas {
            for l in d.log().lines() {
                let named = l.contains(&format!("source={source} "))
                    || l.ends_with(&format!("source={source}"));
                if named && !l.contains(" INFO ") {
                    lines.push(l.to_owned());
                }
            }
        }
        lines.join("\n")
    };
    let mut due_in_outage = 0usize;
    let mut earliest_given_up: Option<DateTime<Utc>> = None;
    let mut share = [0usize; 3];
    for (source, rows) in &claims {
        let mut ran_late = false;
        // Each tick is claimed once (the schedule moved past it in the
        // claim's own transaction), and none was passed over.
        let schedule_next = next_ticks.get(source).copied();
        for (i, row) in rows.iter().enumerate() {
            total += 1;
            // The tick after this one is the next claimed one (or the
            // schedule's next tick). A claim passes over a tick only when
            // it fell due over three leases before (docs/operating.md: the
            // replicas or the database were down that long, or the runs do
            // not keep up); here, with the replicas keeping up, none may be.
            let until = match rows.get(i + 1) {
                Some(next) => next.tick,
                None => schedule_next.expect("the schedule has a next tick"),
            };
            let passed_over = next_second(row.tick);
            assert!(
                passed_over >= until,
                "{source}: tick {passed_over} was never claimed: {} (claims {:#?})",
                if missed(passed_over, row.claimed_at) {
                    "it fell due over three leases before the claim that passed over it"
                } else {
                    "and the rule does not allow that"
                },
                &rows[i.saturating_sub(2)..(i + 2).min(rows.len())]
            );
            if row.tick >= down && row.tick <= up {
                due_in_outage += 1;
            }
            // Due before PostgreSQL came back, claimed once it was back
            // (nothing is claimed while it is down).
            ran_late |= row.tick <= up && row.claimed_at >= down;
            if row.rerun {
                reruns += 1;
                // Re-run only after its lease ran out: the lease is renewed
                // to `now() + lease`, never shorter than from the claim;
                // unless given up at the final shutdown (a replica stopping
                // gives the ticks it has not started up at once, and the
                // replicas are stopped one after the other).
                let reclaimed = row.reclaimed_at.expect("a re-run says when");
                assert!(
                    reclaimed >= row.claimed_at + lease || reclaimed >= stopping,
                    "{source} at {}: re-run at {reclaimed} before its lease ran out",
                    row.tick
                );
            }
            if row.finished_at.is_none() {
                // Only runs given up at the final shutdown (not started,
                // lease set to then) may be unfinished: nobody holds a run.
                assert!(
                    row.lease_until <= Utc::now() && row.lease_until >= stopping,
                    "{source} at {}: never finished (owner {}, lease until {}), stopping at {stopping}\n{}",
                    row.tick,
                    row.owner,
                    row.lease_until,
                    diagnose(source, rows)
                );
                // And only ticks due in the last three leases before it:
                // every tick due earlier ran.
                assert!(
                    row.tick >= stopping - chrono::Duration::from_std(LEASE * 3).unwrap(),
                    "{source} at {}: given up at the final shutdown ({stopping}), over three leases \
                     after it fell due\n{}",
                    row.tick,
                    diagnose(source, rows)
                );
                earliest_given_up = Some(earliest_given_up.map_or(row.tick, |t| t.min(row.tick)));
                given_up += 1;
            }
            if let Some(slot) = slot_of.get(&row.owner) {
                share[*slot] += 1;
            }
        }
        assert!(ran_late, "{source}: no tick ran after PostgreSQL came back");
        assert!(
            schedule_next > rows.last().map(|r| r.tick),
            "{source}: the schedule's next tick follows the last claim"
        );

        // What the runs recorded: a tick claimed and finished first time
        // ran once as `schedule`; a tick taken over ran as `rerun`, or as
        // `schedule` when its first run was stored after all (the dead
        // replica stored it before it died, or a replica that missed its
        // renewals finished it while the re-run found it still going).
        let runs: BTreeMap<String, i64> = db
            .query(
                "SELECT trigger, COUNT(*) FROM runs WHERE source = $1 GROUP BY trigger",
                &[source],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let first_runs = rows
            .iter()
            .filter(|r| !r.rerun && r.finished_at.is_some())
            .count() as i64;
        let finished = rows.iter().filter(|r| r.finished_at.is_some()).count() as i64;
        let scheduled = runs.get("schedule").copied().unwrap_or(0);
        let rerun_runs = runs.get("rerun").copied().unwrap_or(0);
        assert!(
            scheduled >= first_runs && scheduled <= rows.len() as i64,
            "{source}: {scheduled} scheduled runs recorded for {first_runs} ticks claimed and finished first time ({} claims)\n{}",
            rows.len(),
            diagnose(source, rows)
        );
        assert!(
            scheduled + rerun_runs >= finished,
            "{source}: {scheduled} + {rerun_runs} runs recorded for {finished} ticks finished\n{}",
            diagnose(source, rows)
        );
        rerun_recorded += rerun_runs as usize;
        let failed: i64 = db
            .query_one(
                "SELECT COUNT(*) FROM runs WHERE source = $1 AND result <> 'success'",
                &[source],
            )
            .unwrap()
            .get(0);
        assert_eq!(failed, 0, "{source}: a recorded run failed");
    }
    let victims: Vec<usize> = kills.iter().map(|k| k.0).collect();
    println!(
        "{total} ticks claimed, each once; {reruns} taken over after their lease ran out \
         ({rerun_recorded} re-runs recorded; killed replicas {victims:?}); {given_up} given up at \
         the final shutdown (begun at {}; the earliest due at {})",
        stopping.format("%T%.3f"),
        earliest_given_up.map_or("-".to_owned(), |t| t.format("%T%.3f").to_string())
    );
    println!(
        "PostgreSQL down from {} to {} ({} ms): {due_in_outage} ticks due in the outage claimed once \
         it was back, each run; every other tick claimed and run",
        down.format("%T%.3f"),
        up.format("%T%.3f"),
        (up - down).num_milliseconds()
    );
    println!("claims per replica slot: {share:?}");
    for (slot, n) in share.iter().enumerate() {
        assert!(
            *n * 10 >= total,
            "replica slot {slot} claimed {n} of {total} ticks: the load is not shared"
        );
    }

    let units: Vec<String> = (0..SOURCES).map(|i| format!("county/u{i}")).collect();
    let units: Vec<&str> = units.iter().map(String::as_str).collect();
    let today = Utc::now().date_naive();
    let (from, to) = (today.pred_opt().unwrap(), today.succ_opt().unwrap());
    let on_postgres = observations(&PostgresStore::open(&url).unwrap(), &units, from, to);
    let on_sqlite = observations(
        &SqliteStore::open(&dir.join("data-alone")).unwrap(),
        &units,
        from,
        to,
    );
    assert!(on_postgres.len() >= SOURCES, "{}", on_postgres.len());
    assert_eq!(on_postgres, on_sqlite);
}

#[test]
fn a_killed_replicas_sources_fail_over_with_the_default_lease() {
    const SOURCES: usize = 30;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let url = tally_store::pg_test_cluster::database_url();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_http_json")]);
    // Answers take 1 s: a replica holds runs most of the time.
    let platform = platform(Duration::from_secs(1));
    // No `[store] lease`: the default (30 s).
    let mut replicas: Vec<TestDaemon> = (0..3)
        .map(|n| {
            let store = Some((url.as_str(), None));
            let (config, port) = config(dir, &plugins, &format!("r{n}"), SOURCES, platform, store);
            TestDaemon::start(&config, port)
        })
        .collect();
    let victim = owner(&replicas[0]);
    let survivors: BTreeSet<String> = replicas[1..].iter().map(owner).collect();
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    // Shares settle once every replica has beaten; then wait for the
    // victim to hold runs.
    std::thread::sleep(Duration::from_secs(4));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let held: i64 = db
            .query_one(
                "SELECT COUNT(*) FROM source_run WHERE owner = $1 AND finished_at IS NULL",
                &[&victim],
            )
            .unwrap()
            .get(0);
        if held > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{victim} never held a run");
        std::thread::sleep(Duration::from_millis(50));
    }
    replicas[0].kill9();
    let killed_at: DateTime<Utc> = db.query_one("SELECT now()", &[]).unwrap().get(0);
    let in_flight: Vec<(i64, String)> = db
        .query(
            "SELECT id, source_id FROM source_run WHERE owner = $1 AND finished_at IS NULL",
            &[&victim],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(!in_flight.is_empty(), "its runs finished as it died");
    let ids: Vec<i64> = in_flight.iter().map(|r| r.0).collect();
    let running: BTreeSet<&String> = in_flight.iter().map(|r| &r.1).collect();
    // Its sources: those it claimed lately. Those it was not running at
    // its death are due again at once; the others wait for their re-run.
    let recent: Vec<String> = db
        .query(
            "SELECT DISTINCT source_id FROM source_run \
              WHERE owner = $1 AND claimed_at > $2::timestamptz - interval '6 seconds'",
            &[&victim, &killed_at],
        )
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let idle = recent.iter().filter(|s| !running.contains(s)).count();

    let deadline = Instant::now() + Duration::from_secs(60);
    let (first_new, rerun_at) = loop {
        let first_new: Option<(DateTime<Utc>, String)> = db
            .query_opt(
                "SELECT claimed_at, owner FROM source_run \
                  WHERE source_id = ANY($1) AND claimed_at > $2 \
                  ORDER BY claimed_at LIMIT 1",
                &[&recent, &killed_at],
            )
            .unwrap()
            .map(|r| (r.get(0), r.get(1)));
        let taken: Vec<(Option<DateTime<Utc>>, String, bool)> = db
            .query(
                "SELECT reclaimed_at, owner, rerun FROM source_run WHERE id = ANY($1)",
                &[&ids],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        if let Some(first_new) = first_new
            && taken.iter().all(|t| t.0.is_some())
        {
            for (_, by, rerun) in &taken {
                assert!(*rerun, "taken over as a re-run");
                assert!(survivors.contains(by), "{by} is not a survivor");
            }
            assert!(
                survivors.contains(&first_new.1),
                "{} is not a survivor",
                first_new.1
            );
            let rerun_at = taken.iter().filter_map(|t| t.0).min().unwrap();
            break (first_new.0, rerun_at);
        }
        assert!(
            Instant::now() < deadline,
            "the dead replica's sources were not taken over:\n{}\n{}",
            replicas[1].log(),
            replicas[2].log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "failover with the default lease (30 s): kill -9 to the first new tick of the dead \
         replica's {} sources ({idle} of them between runs) {} ms, to the first re-run of its {} \
         in-flight tick(s) {} ms",
        recent.len(),
        (first_new - killed_at).num_milliseconds(),
        ids.len(),
        (rerun_at - killed_at).num_milliseconds()
    );
    for d in &replicas[1..] {
        assert_eq!(d.get("/healthz").0, 200);
    }
}
