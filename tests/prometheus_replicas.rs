//! Issue 13, acceptance 3: the shipped dashboard and rules give the same
//! answers whether Prometheus scrapes three replicas on one database or one
//! replica on another.
//!
//! Two real Prometheus servers, each loading `config/prometheus/tally-rules.yml`:
//! one scrapes three `tallyd run` replicas sharing a PostgreSQL database, the
//! other one replica alone on a second database with the same configuration.
//! Both databases start with the same history (one success 20 days ago per
//! source); the sources are `exec` scripts printing fixed numbers, one of
//! them always failing; their schedule fires at the same few instants on both
//! sides and then not for a year, so that every counter and gauge settles.
//! Then every expression of `config/grafana/tally.json` and every rule
//! (recording and alerting) is evaluated on both servers at one instant, and
//! the answers compared: the same label sets once `instance` and `job` are
//! set aside, the same values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde_json::Value;
use tally_store::{PostgresStore, RunRecord, RunResult, Store};

use crate::observability::{Guard, as_promql, dashboard_exprs, query_at, repo, wait_for, which};
use crate::support::*;

/// Sources `s0..` succeed, for units `county/s0..`; source `x` (unit
/// `county/x`) always fails.
const GOOD: usize = 3;
/// How many times the schedule fires, and how many seconds apart.
const TICKS: u32 = 6;
const EVERY: u32 = 3;
/// How often the Prometheus servers scrape: often, so that the
/// extrapolation of `increase()` stays far below one run (see `compare`).
const SCRAPE_MS: u64 = 200;

/// The source ids.
fn sources() -> Vec<String> {
    (0..GOOD)
        .map(|i| format!("s{i}"))
        .chain(["x".to_owned()])
        .collect()
}

/// Prints the indicators from the environment for the window's last day, or
/// fails when `FAIL` is 1 (an upstream error, as a real outage gives).
fn script(dir: &Path) -> PathBuf {
    let path = dir.join("count.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\nset -eu\n\
         if [ \"$FAIL\" = 1 ]; then echo 'error: the portal does not answer' >&2; exit 1; fi\n\
         for pair in \"meetings $MEETINGS\" \"portal_days_since_update $DAYS\" \"wechat_likes $LIKES\" \"weibo_likes $LIKES\"; do\n\
           set -- $pair\n\
           printf '{\"indicator\": \"%s\", \"day\": \"%s\", \"value\": %s}\\n' \"$1\" \"$TALLY_TO\" \"$2\"\n\
         done\n",
    )
    .unwrap();
    set_mode(&path, 0o755);
    path
}

/// A cron schedule (seconds first, UTC) firing [`TICKS`] times, [`EVERY`]
/// seconds apart, from `first` on, all within its minute, and then only a
/// year later.
fn schedule(first: DateTime<Utc>) -> String {
    let seconds: Vec<String> = (0..TICKS)
        .map(|k| (first.second() + k * EVERY).to_string())
        .collect();
    format!(
        "{} {} {} {} {} *",
        seconds.join(","),
        first.minute(),
        first.hour(),
        first.day(),
        first.month()
    )
}

/// The first tick: at least `lead` from now, with every tick in one minute.
fn first_tick(lead: Duration) -> DateTime<Utc> {
    let at = Utc::now() + chrono::Duration::from_std(lead).unwrap();
    let at = at.with_nanosecond(0).unwrap();
    if at.second() + (TICKS - 1) * EVERY <= 58 {
        return at;
    }
    let next_minute = at + chrono::Duration::seconds(i64::from(60 - at.second()));
    next_minute.with_second(1).unwrap()
}

/// One daemon's configuration: the same for all four but for the listen
/// address, the data directory and the database.
fn config(
    dir: &Path,
    plugins: &Path,
    script: &Path,
    name: &str,
    url: &str,
    schedule: &str,
) -> (PathBuf, u16) {
    let port = free_port();
    let mut c = TestConfig::new(dir, plugins)
        .with_port(port)
        .data_dir(&dir.join(format!("data-{name}")))
        .daemon("timezone = \"UTC\"")
        .county()
        .meetings()
        .indicator("portal_days_since_update", "栏目未更新天数", "level", "天")
        .indicator("wechat_likes", "微信点赞", "count", "次")
        .indicator("weibo_likes", "微博点赞", "count", "次")
        .unit("county/x", "单位X")
        .toml(
            "[[targets]]\nindicator = \"meetings\"\nper = \"unit\"\nperiod = \"quarter\"\nmin = 10\nprorate = false\n",
        );
    for (i, id) in sources().iter().enumerate() {
        let good = i < GOOD;
        if good {
            c = c.unit(&format!("county/{id}"), &format!("单位{i}"));
        }
        // The breaker and retries are off: both are kept per replica (a
        // replica counts the failures it saw), so with them the failing
        // source would run a different number of times on three replicas
        // than on one.
        c = c.toml(&format!(
            r#"
[[sources]]
id = "{id}"
plugin = "exec"
unit = "county/{id}"
schedule = "{schedule}"
lookback_days = 0
retries = 0
breaker_after = 0
[sources.settings]
command = {script}
indicators = ["meetings", "portal_days_since_update", "wechat_likes", "weibo_likes"]
[sources.settings.env]
FAIL = "{fail}"
MEETINGS = "{meetings}"
DAYS = "{days}"
LIKES = "{likes}"
"#,
            script = toml_path(script),
            fail = u8::from(!good),
            meetings = i + 1,
            // s0's portal column is stale (TallyPortalColumnStale).
            days = if i == 0 { 20 } else { 2 + i },
            likes = 10 * (i + 1),
        ));
    }
    c = c.toml(&format!("[store]\nurl = \"{url}\"\nlease = \"3s\"\n"));
    (c.write_as(&format!("{name}.toml")), port)
}

/// The same history on both databases: each source succeeded once, 20 days
/// ago (so that no source runs at registration, and `x` has a last success
/// old enough for TallySourceNotSucceeding).
fn seed(url: &str, long_ago: DateTime<Utc>) {
    let store = PostgresStore::open(url).unwrap();
    for id in sources() {
        let run = RunRecord {
            source: id,
            trigger: "schedule".into(),
            started_at: long_ago - chrono::Duration::seconds(1),
            finished_at: long_ago,
            result: RunResult::Success,
            error: None,
            window_from: long_ago.date_naive(),
            window_to: long_ago.date_naive(),
            warnings: vec![],
            http_requests: None,
            uncovered: vec![],
            error_kind: None,
            retry_after: None,
        };
        store.record_run(&run, &[], None).unwrap();
    }
}

/// A Prometheus scraping `ports` as job `tally`, with the rules as shipped.
fn prometheus(bin: &Path, dir: &Path, name: &str, ports: &[u16]) -> (Guard, String) {
    let port = free_port();
    let rules = repo().join("config/prometheus/tally-rules.yml");
    let targets: Vec<String> = ports.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    let config = dir.join(format!("{name}.yml"));
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: {SCRAPE_MS}ms\n  scrape_timeout: {SCRAPE_MS}ms\n  evaluation_interval: 1s\n\
             rule_files:\n  - '{}'\n\
             scrape_configs:\n  - job_name: tally\n    static_configs:\n      - targets: [{}]\n",
            rules.display(),
            targets.join(", ")
        ),
    )
    .unwrap();
    let guard = Guard::spawn(
        Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join(format!("{name}-tsdb")).display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}")),
        dir.join(format!("{name}.log")),
    );
    (guard, format!("http://127.0.0.1:{port}"))
}

/// An answer as (labels without `instance` and `job`, value), sorted: what
/// must be equal over one replica and three. Duplicates stay, so an
/// expression that answers once per replica does not pass.
fn normalized(result: &[Value]) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = result
        .iter()
        .map(|s| {
            let labels: BTreeMap<&str, &str> = s["metric"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| *k != "instance" && *k != "job")
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
                .collect();
            let value: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
            (format!("{labels:?}"), value)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    out
}

/// How two answers of one expression are compared.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Compare {
    /// Equal values.
    Exact,
    /// `increase()` / `rate()` of counters: Prometheus extrapolates each
    /// series to the end of the range, by less than 1.1 scrape intervals
    /// over at least 20 s of samples starting at 0 (every counter is
    /// exported at 0 before the first tick): under 1% of a count of at most
    /// 24 observations, far below one. Each value must lie within 0.25 of a whole
    /// number of runs (observations), and the whole numbers must be equal.
    Counts,
    /// An age (`time() - ...timestamp...`): the same tick is claimed up to a
    /// claim round (1 s) later on one database than on the other, and run
    /// times are kept to the second, so the ages may differ by 2 s.
    Age,
}

fn how(promql: &str) -> Compare {
    if promql.contains("increase(") || promql.contains("rate(") {
        Compare::Counts
    } else if promql.contains("time() -") {
        Compare::Age
    } else {
        Compare::Exact
    }
}

/// Compares the answers of both servers; an error names the expression.
fn compare(place: &str, promql: &str, three: &[Value], one: &[Value]) -> Result<(), String> {
    let (a, b) = (normalized(three), normalized(one));
    let labels = |v: &[(String, f64)]| v.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>();
    if labels(&a) != labels(&b) {
        return Err(format!(
            "{place}: other series over three replicas than over one\n{promql}\nthree: {a:?}\none:   {b:?}"
        ));
    }
    let kind = how(promql);
    for ((l, x), (_, y)) in a.iter().zip(&b) {
        let ok = match kind {
            Compare::Exact => x == y,
            Compare::Counts => {
                let whole = |v: f64| ((v - v.round()).abs() <= 0.25).then(|| v.round());
                whole(*x).is_some() && whole(*x) == whole(*y)
            }
            Compare::Age => (x - y).abs() <= 2.0,
        };
        if !ok {
            return Err(format!(
                "{place} ({kind:?}): {l} is {x} over three replicas, {y} over one\n{promql}"
            ));
        }
    }
    Ok(())
}

/// The `/metrics` lines of the indicator families, sorted.
fn indicator_lines(d: &TestDaemon) -> Vec<String> {
    let (_, body) = d.get("/metrics");
    let mut lines: Vec<String> = body
        .lines()
        .filter(|l| {
            [
                "tally_indicator_value{",
                "tally_target_ratio{",
                "tally_unit_info{",
                "tally_indicator_info{",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[test]
fn dashboard_and_rules_answer_the_same_over_three_replicas_as_over_one() {
    let (Some(prometheus_bin), Some(_)) = (which("prometheus"), which("promtool")) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus is missing in CI: .ci/run must install Debian's prometheus package"
        );
        eprintln!("prometheus not installed: skipping (CI installs it)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_exec")]);
    let script = script(dir);
    let (shared_url, alone_url) = (
        tally_store::pg_test_cluster::database_url(),
        tally_store::pg_test_cluster::database_url(),
    );
    assert_ne!(shared_url, alone_url);
    let long_ago = (Utc::now() - chrono::Duration::days(20))
        .with_nanosecond(0)
        .unwrap();
    seed(&shared_url, long_ago);
    seed(&alone_url, long_ago);

    // Time for four daemons and two Prometheus servers to start, and for
    // Prometheus to scrape every counter at 0 before the first tick.
    let first = first_tick(Duration::from_secs(25));
    let last = first + chrono::Duration::seconds(i64::from((TICKS - 1) * EVERY));
    let schedule = schedule(first);
    let mut daemons: Vec<TestDaemon> = Vec::new();
    let mut ports = Vec::new();
    for n in 0..4 {
        let (name, url) = if n < 3 {
            (format!("r{n}"), &shared_url)
        } else {
            ("alone".to_owned(), &alone_url)
        };
        let (config, port) = config(dir, &plugins, &script, &name, url, &schedule);
        daemons.push(TestDaemon::start(&config, port));
        ports.push(port);
    }
    let (mut prom3, at3) = prometheus(&prometheus_bin, dir, "prom-three", &ports[..3]);
    let (mut prom1, at1) = prometheus(&prometheus_bin, dir, "prom-one", &ports[3..]);
    {
        let mut procs = [
            ("prometheus (three)", &mut prom3),
            ("prometheus (one)", &mut prom1),
        ];
        for (prom, n) in [(&at3, 3), (&at1, 1)] {
            wait_for(
                &format!("{prom} to scrape {n} replica(s)"),
                60,
                &mut procs,
                || {
                    let up = query_at(prom, "tally_source_runs_total", now()).ok()?;
                    // Every replica, every source, every result (errors
                    // not split by kind, the default): still at 0.
                    (up.len() == n * sources().len() * tally_store::RunResult::ALL.len()
                        && up.iter().all(|s| s["value"][1] == "0"))
                    .then_some(())
                },
            );
        }
    }
    assert!(
        Utc::now() < first,
        "the daemons and Prometheus took too long to start: the first tick ({first}) passed"
    );

    // Every tick ran once on each database: the seeded run plus TICKS.
    for url in [&shared_url, &alone_url] {
        let mut db = postgres::Client::connect(url, postgres::NoTls).unwrap();
        let deadline = last + chrono::Duration::seconds(30);
        loop {
            let runs: Vec<(String, i64)> = db
                .query(
                    "SELECT source, COUNT(*) FROM runs GROUP BY source ORDER BY source",
                    &[],
                )
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            if runs.iter().all(|(_, n)| *n == 1 + i64::from(TICKS)) && runs.len() == sources().len()
            {
                break;
            }
            let logs: Vec<String> = daemons.iter().map(TestDaemon::log).collect();
            assert!(
                Utc::now() < deadline,
                "not every tick ran once: {runs:?}\n{}",
                logs.join("\n---\n")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let ticks: i64 = db
            .query_one("SELECT COUNT(*) FROM source_run", &[])
            .unwrap()
            .get(0);
        assert_eq!(ticks, i64::from(TICKS) * sources().len() as i64, "{url}");
    }

    // Every replica serves the same indicator families, read from its store.
    let expected = indicator_lines(&daemons[3]);
    assert!(
        expected
            .iter()
            .any(|l| l.starts_with("tally_target_ratio{")),
        "{expected:#?}"
    );
    for d in &daemons[..3] {
        d.wait_for(
            "the replica's indicator families to equal the lone one's",
            30,
            |d| indicator_lines(d) == expected,
        );
    }
    // ... and the same source states, whichever replica ran the source.
    for d in &daemons {
        d.wait_for("x down and s0 up on every replica", 30, |d| {
            d.sample("tally_source_up", &[("source", "x")]) == Some(0.0)
                && d.sample("tally_source_up", &[("source", "s0")]) == Some(1.0)
        });
    }

    // Both servers have scraped the settled values: a few scrapes after the
    // replicas showed them, and until each has the last run counted (its
    // scrapes lag on a loaded machine; a count past it fails below).
    std::thread::sleep(Duration::from_millis(5 * SCRAPE_MS));
    let want = format!("{}", TICKS as usize * sources().len());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline
        && ![&at3, &at1].iter().all(|prom| {
            query_at(prom, "sum(tally_source_runs_total)", now()).is_ok_and(|runs| {
                runs.first().and_then(|r| r["value"][1].as_str()) == Some(want.as_str())
            })
        })
    {
        std::thread::sleep(Duration::from_millis(SCRAPE_MS));
    }
    std::thread::sleep(Duration::from_millis(2 * SCRAPE_MS));
    let at = now();
    for (prom, n) in [(&at3, 3), (&at1, 1)] {
        let runs = query_at(prom, "sum(tally_source_runs_total)", at).unwrap();
        assert_eq!(
            runs[0]["value"][1].as_str(),
            Some(format!("{}", TICKS as usize * sources().len()).as_str()),
            "{prom}: every run counted once over {n} replica(s)"
        );
    }

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("config/grafana/tally.json")).unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<(String, String)> = dashboard_exprs(&dashboard)
        .into_iter()
        .map(|(place, expr)| (format!("dashboard {place}"), as_promql(&expr)))
        .collect();
    let (_, body) = get(&format!("{at1}/api/v1/rules")).unwrap();
    let rules: Value = serde_json::from_str(&body).unwrap();
    let rules: Vec<Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(rules.len(), 8, "{rules:#?}");
    for rule in &rules {
        exprs.push((
            format!("rule {}", rule["name"].as_str().unwrap()),
            rule["query"].as_str().unwrap().to_owned(),
        ));
    }

    let mut failures = Vec::new();
    let mut compared = 0;
    for (place, promql) in &exprs {
        // The duration histogram measures how long each run took: no two
        // runs take the same time, on one database or another.
        if promql.contains("tally_source_run_duration_seconds") {
            println!("not compared (run durations differ between any two runs): {place}");
            continue;
        }
        let three = query_at(&at3, promql, at).unwrap_or_else(|e| {
            panic!("{place} does not evaluate over three replicas: {e}\n{promql}")
        });
        let one = query_at(&at1, promql, at).unwrap_or_else(|e| {
            panic!("{place} does not evaluate over one replica: {e}\n{promql}")
        });
        if let Err(e) = compare(place, promql, &three, &one) {
            failures.push(e);
            continue;
        }
        compared += 1;
        if !one.is_empty() {
            continue;
        }
        // Empty on both sides proves nothing: only where the test knows why.
        match place.as_str() {
            // Every replica is up, so no scrape fails: the alert is per
            // instance on purpose (it names the replica), and `up` is 1 for
            // each.
            "rule TallyScrapeFailing" => {
                for (prom, n) in [(&at3, 3), (&at1, 1)] {
                    let up = query_at(prom, "up{job=\"tally\"} == 1", at).unwrap();
                    assert_eq!(up.len(), n, "{prom}: {up:?}");
                }
            }
            // Outside the last two weeks of a quarter the alert is quiet;
            // its condition on the targets has data, and the same on both.
            "rule TallyUnitBelowTarget" => {
                // Prometheus answers the rule as it formats it: `... and on () ...`.
                let (below, _) = promql
                    .split_once(" and ")
                    .expect("TallyUnitBelowTarget is `ratio < 1 and on() (final two weeks)`");
                let final_weeks = query_at(&at1, "tally:quarter_final_two_weeks", at).unwrap();
                assert_eq!(
                    final_weeks[0]["value"][1], "0",
                    "{place} is empty in the final weeks"
                );
                let three = query_at(&at3, below, at).unwrap();
                let one = query_at(&at1, below, at).unwrap();
                assert!(
                    !one.is_empty(),
                    "{place}: no unit below its target: {below}"
                );
                if let Err(e) = compare(place, below, &three, &one) {
                    failures.push(e);
                }
            }
            _ => failures.push(format!(
                "{place} is empty over one replica and three\n{promql}"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(compared >= 20, "only {compared} expressions compared");
    println!("{compared} expressions answered the same over three replicas and over one");
}

fn now() -> f64 {
    Utc::now().timestamp_millis() as f64 / 1000.0
}
