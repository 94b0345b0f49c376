//! `cargo xtask bench`: ingest, summary and exposition figures of the `tally-daemon`
//! library on this machine, printed as one Markdown table (issue 7).
//!
//! A benchmark, not a test: it asserts nothing and runs only when asked.
//! It measures with `std::time::Instant`, which clippy.toml bans in the
//! daemon (there, time must follow tokio's paused clock in tests); here real
//! elapsed time is the whole point.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
use rusqlite::{Connection, params};
use tally_config::Config;
use tally_daemon::engine::Engine;
use tally_daemon::http::{AppState, Live, LiveHandle, router};
use tally_daemon::metrics::Metrics;
use tally_daemon::summary::{self, SummaryRequest};
use tally_domain::clock::FixedClock;
use tally_domain::{Observation, Period, UnitTree};
use tally_host::{PluginRegistry, SourceRunner};
use tally_store::{RunRecord, RunResult, RunToRecord, SqliteStore, Store};

// Beside this file rather than in src/bin/, where cargo would take each for
// a binary of its own.
#[path = "tally-bench/postgres.rs"]
mod postgres;
#[path = "tally-bench/province.rs"]
mod province;
#[path = "tally-bench/replicas.rs"]
mod replicas;

const USAGE: &str =
    "usage: tally-bench [--days N] [--reps N] [--max-generate-secs N] [--skip PART]...
                   [--replica-sources N] [--replica-secs N]
                   [--province-units N] [--province-only]

  --days N               days of data behind the summaries (default 730)
  --reps N               repetitions of each timed summary and encode (default 50)
  --max-generate-secs N  if generating the data would take longer, use one year (default 180)
  --skip PART            leave out `sqlite` (store, summaries, exposition), `postgres`
                         (the same on PostgreSQL) or `replicas` (three tallyd on one
                         PostgreSQL database beside one SQLite daemon)
  --replica-sources N    sources of the replicas part (default 3000)
  --replica-secs N       its measurement window per deployment (default 60)
  --province-units N     units of the province tree of /metrics (default 20000, at least 166)
  --province-only        only the province figures";

/// The shape of the data: one root, 10, 100, then leaves up to `UNITS`.
const UNITS: usize = 1_000;
const INDICATORS: usize = 20;
/// Days per `record_run` batch: 1,000 units × 20 indicators × 30 days.
const BATCH_DAYS: u64 = 30;
/// Batches timed for the ingest figures (and the raw SQLite comparison).
const INGEST_BATCHES: u64 = 3;

struct Args {
    days: u64,
    reps: usize,
    max_generate_secs: f64,
    province_units: usize,
    province_only: bool,
    skip: Vec<String>,
    replica_sources: usize,
    replica_secs: u64,
}

impl Args {
    fn runs(&self, part: &str) -> bool {
        !self.skip.iter().any(|s| s == part)
    }
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        days: 730,
        reps: 50,
        max_generate_secs: 180.0,
        province_units: province::UNITS,
        province_only: false,
        skip: Vec::new(),
        replica_sources: 3_000,
        replica_secs: 60,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = |it: &mut dyn Iterator<Item = String>| {
            it.next()
                .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))
        };
        match flag.as_str() {
            "--days" => args.days = value(&mut it)?.parse().context("--days")?,
            "--reps" => args.reps = value(&mut it)?.parse().context("--reps")?,
            "--max-generate-secs" => {
                args.max_generate_secs = value(&mut it)?.parse().context("--max-generate-secs")?
            }
            "--province-units" => {
                args.province_units = value(&mut it)?.parse().context("--province-units")?
            }
            "--province-only" => args.province_only = true,
            "--skip" => match value(&mut it)?.as_str() {
                part @ ("sqlite" | "postgres" | "replicas") => args.skip.push(part.to_owned()),
                other => {
                    bail!("--skip takes sqlite, postgres or replicas, not {other:?}\n\n{USAGE}")
                }
            },
            "--replica-sources" => {
                args.replica_sources = value(&mut it)?.parse().context("--replica-sources")?
            }
            "--replica-secs" => {
                args.replica_secs = value(&mut it)?.parse().context("--replica-secs")?
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    if args.province_units < 166 {
        bail!("--province-units must be at least 166 (a province, its cities and counties)");
    }
    if args.days < BATCH_DAYS * INGEST_BATCHES || args.reps == 0 {
        bail!(
            "--days must be at least {} and --reps at least 1",
            BATCH_DAYS * INGEST_BATCHES
        );
    }
    Ok(args)
}

/// Unit ids of a depth-4 tree: `r`, `r/a0`..`r/a9`, `r/aX/bY` (100), then
/// leaves `r/aX/bY/cN` spread evenly under the 100 units of depth 2.
fn unit_ids() -> Vec<String> {
    let mut ids = vec!["r".to_owned()];
    ids.extend((0..10).map(|a| format!("r/a{a}")));
    ids.extend((0..100).map(|g| format!("r/a{}/b{}", g / 10, g % 10)));
    ids.extend((0..UNITS - ids.len()).map(|n| format!("r/a{}/b{}/c{n}", (n % 100) / 10, n % 10)));
    ids
}

/// Half count, half level indicators; one source covering the whole tree.
fn config_text(units: &[String], data_dir: &Path) -> String {
    let mut t = format!(
        "[daemon]\ntimezone = \"Asia/Shanghai\"\ndata_dir = {:?}\n\n",
        data_dir.display().to_string()
    );
    for id in units {
        t.push_str(&format!("[[units]]\nid = \"{id}\"\nname = \"{id}\"\n"));
    }
    for i in 0..INDICATORS {
        let kind = if i % 2 == 0 { "count" } else { "level" };
        t.push_str(&format!(
            "[[indicators]]\nid = \"i{i}\"\nname = \"I{i}\"\nkind = \"{kind}\"\nunit = \"次\"\n"
        ));
    }
    t.push_str(
        "[[sources]]\nid = \"bench\"\nplugin = \"bench\"\nunits = [\"r\"]\nschedule = \"0 3 * * *\"\n",
    );
    t
}

/// Every unit × indicator × day of `[from, to]`, in key order; counts are
/// small daily numbers, levels grow slowly.
fn batch(units: &[String], from: NaiveDate, to: NaiveDate) -> Vec<Observation> {
    let days: Vec<NaiveDate> = from.iter_days().take_while(|d| *d <= to).collect();
    let mut out = Vec::with_capacity(units.len() * INDICATORS * days.len());
    for (u, unit) in units.iter().enumerate() {
        for i in 0..INDICATORS {
            let indicator = format!("i{i}");
            for day in &days {
                let n = day_num(*day) as usize;
                let value = if i % 2 == 0 {
                    ((u + i + n) % 7) as f64
                } else {
                    (1_000 + n + u) as f64
                };
                out.push(Observation {
                    source: "bench".to_owned(),
                    unit: unit.clone(),
                    indicator: indicator.clone(),
                    entity: String::new(),
                    day: *day,
                    value,
                });
            }
        }
    }
    out
}

fn day_num(d: NaiveDate) -> i64 {
    (d - NaiveDate::default()).num_days()
}

fn run_record(from: NaiveDate, to: NaiveDate, at: DateTime<Utc>) -> RunRecord {
    RunRecord {
        source: "bench".to_owned(),
        trigger: "backfill".to_owned(),
        started_at: at,
        finished_at: at,
        result: RunResult::Success,
        error: None,
        window_from: from,
        window_to: to,
        warnings: Vec::new(),
        http_requests: None,
        uncovered: Vec::new(),
        error_kind: None,
        retry_after: None,
    }
}

/// The physical limit: the same rows upserted into a minimal table, one
/// transaction per batch, with the store's durability settings.
struct Raw {
    conn: Connection,
    unit_index: HashMap<String, i64>,
}

impl Raw {
    fn open(path: &Path, units: &[String]) -> Result<Raw> {
        let conn = Connection::open(path)?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE obs (key INTEGER, day INTEGER, value REAL, PRIMARY KEY (key, day)) WITHOUT ROWID",
        )?;
        let unit_index = units
            .iter()
            .enumerate()
            .map(|(n, u)| (u.clone(), n as i64))
            .collect();
        Ok(Raw { conn, unit_index })
    }

    fn upsert(&mut self, rows: &[Observation]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO obs (key, day, value) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (key, day) DO UPDATE SET value = excluded.value",
            )?;
            for o in rows {
                let ind: i64 = o.indicator[1..].parse()?;
                let key = self.unit_index[&o.unit] * INDICATORS as i64 + ind;
                stmt.execute(params![key, day_num(o.day), o.value])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Context for the ratio, not the comparator: the same rows as plain
    /// inserts, `RAW_CHUNK` to a statement (valid only because every row is
    /// new), which is how the store writes rows it has read as absent. The
    /// store's gain over one statement a row shows against this row.
    fn insert_many(&mut self, rows: &[Observation]) -> Result<()> {
        const RAW_CHUNK: usize = 128;
        let values = vec!["(?, ?, ?)"; RAW_CHUNK].join(", ");
        let tx = self.conn.transaction()?;
        {
            let mut many = tx.prepare_cached(&format!(
                "INSERT OR FAIL INTO obs (key, day, value) VALUES {values}"
            ))?;
            let mut one =
                tx.prepare_cached("INSERT OR FAIL INTO obs (key, day, value) VALUES (?1, ?2, ?3)")?;
            let unit_index = &self.unit_index;
            let key = |o: &Observation| -> Result<i64> {
                let ind: i64 = o.indicator[1..].parse()?;
                Ok(unit_index[&o.unit] * INDICATORS as i64 + ind)
            };
            for chunk in rows.chunks(RAW_CHUNK) {
                if chunk.len() < RAW_CHUNK {
                    for o in chunk {
                        one.execute(params![key(o)?, day_num(o.day), o.value])?;
                    }
                    continue;
                }
                for (k, o) in chunk.iter().enumerate() {
                    many.raw_bind_parameter(3 * k + 1, key(o)?)?;
                    many.raw_bind_parameter(3 * k + 2, day_num(o.day))?;
                    many.raw_bind_parameter(3 * k + 3, o.value)?;
                }
                many.raw_execute()?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// Sources of the group-commit figures, each a small run of `SMALL_RUN` observations.
const SMALL_RUNS: usize = 1_000;
const SMALL_RUN: usize = 3;

/// Runs per second for `SMALL_RUNS` small runs (one per source, as a daemon
/// polling every source records them), one transaction each and then
/// several per commit through `record_runs`: (runs per commit, runs/s).
fn group_commit(dir: &Path, today: NaiveDate, now: DateTime<Utc>) -> Result<Vec<(usize, f64)>> {
    let store = SqliteStore::open(&dir.join("small-runs"))?;
    let runs = |day: NaiveDate| -> Vec<RunToRecord> {
        (0..SMALL_RUNS)
            .map(|s| {
                let source = format!("s{s}");
                let observations = (0..SMALL_RUN)
                    .map(|i| Observation {
                        source: source.clone(),
                        unit: format!("r/a{}", s % 10),
                        indicator: format!("i{i}"),
                        entity: String::new(),
                        day,
                        value: (s + i) as f64,
                    })
                    .collect();
                let mut run = run_record(day, day, now);
                run.source = source;
                run.trigger = "schedule".to_owned();
                RunToRecord {
                    run,
                    observations,
                    state: Some(serde_json::json!({ "etag": s })),
                }
            })
            .collect()
    };
    // Keys exist after the first poll, and the WAL file has grown to its
    // size after the second (growing it makes the first commits that do
    // far slower, whatever their size); every measured poll stores a new day.
    for r in store.record_runs(&runs(today - Days::new(11))) {
        r?;
    }
    for r in runs(today - Days::new(10)) {
        store.record_run(&r.run, &r.observations, r.state.as_ref())?;
    }
    let mut out = Vec::new();
    for (n, per_commit) in [1, 10, 100, SMALL_RUNS].into_iter().enumerate() {
        let poll = runs(today - Days::new(9 - n as u64));
        let (r, ms) = time_ms(|| -> Result<()> {
            for group in poll.chunks(per_commit) {
                if per_commit == 1 {
                    let g = &group[0];
                    store.record_run(&g.run, &g.observations, g.state.as_ref())?;
                } else {
                    for r in store.record_runs(group) {
                        r?;
                    }
                }
            }
            Ok(())
        });
        r?;
        out.push((per_commit, SMALL_RUNS as f64 / (ms / 1e3)));
    }
    Ok(out)
}

/// p50 and p99 of the durations in milliseconds (nearest rank).
fn percentiles(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let rank = |p: f64| ms[((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    (rank(0.50), rank(0.99))
}

fn time_ms<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_secs_f64() * 1e3)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let dir = scratch_dir()?;
    let result = run_parts(&args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_parts(args: &Args, dir: &Path) -> Result<()> {
    if args.province_only {
        return print_province(args, dir);
    }
    if args.runs("sqlite") {
        run(args, dir)?;
    }
    if args.runs("postgres") {
        let units = unit_ids();
        let config = Config::parse(
            &config_text(&units, &dir.join("pg-data")),
            Path::new("bench.toml"),
            &|_| None,
        )?;
        let tree: UnitTree = config.unit_tree()?;
        let today = NaiveDate::from_ymd_opt(2025, 6, 30).context("date")?;
        let now = Utc
            .with_ymd_and_hms(2025, 6, 30, 4, 0, 0)
            .single()
            .context("time")?;
        let rows = postgres::section(args, &config, &tree, &units, today, now)?;
        print_section(
            "PostgreSQL (throwaway cluster of this process, fsync on)",
            &rows,
        );
    }
    if args.runs("replicas") {
        let rows = replicas::section(args, dir)?;
        print_section(
            &format!(
                "Replicas: {} `http_json` sources every 10 s, three `tallyd run` on one PostgreSQL database, then one SQLite daemon",
                args.replica_sources
            ),
            &rows,
        );
    }
    Ok(())
}

fn print_section(title: &str, rows: &[(String, String)]) {
    println!();
    println!("#### {title}");
    println!();
    println!("| benchmark | figure |");
    println!("|---|---|");
    for (what, figure) in rows {
        println!("| {what} | {figure} |");
    }
}

fn scratch_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("tally-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn run(args: &Args, dir: &Path) -> Result<()> {
    let units = unit_ids();
    let config = Config::parse(
        &config_text(&units, &dir.join("data")),
        Path::new("bench.toml"),
        &|_| None,
    )?;
    let tree: UnitTree = config.unit_tree()?;
    let store = SqliteStore::open(&dir.join("store"))?;
    let mut raw = Raw::open(&dir.join("raw.db"), &units)?;
    let mut raw_many = Raw::open(&dir.join("raw-many.db"), &units)?;
    // A fixed "now", so that the periods asked for are the same on every run:
    // noon in Shanghai on the last day of the data.
    let today = NaiveDate::from_ymd_opt(2025, 6, 30).context("date")?;
    let now = Utc
        .with_ymd_and_hms(2025, 6, 30, 4, 0, 0)
        .single()
        .context("time")?;

    // Batches run backwards from today, so that a data set cut short for
    // time still ends today.
    let window = |b: u64, days: u64| {
        let to = today - Days::new(b * BATCH_DAYS);
        let first = (b * BATCH_DAYS + BATCH_DAYS).min(days) - 1;
        (today - Days::new(first), to)
    };
    let (mut ingest_ms, mut raw_ms, mut raw_many_ms, mut ingested) = (0.0, 0.0, 0.0, 0usize);
    for b in 0..INGEST_BATCHES {
        let (from, to) = window(b, args.days);
        let rows = batch(&units, from, to);
        let (r, ms) = time_ms(|| store.record_run(&run_record(from, to, now), &rows, None));
        r?;
        ingest_ms += ms;
        let (r, ms) = time_ms(|| raw.upsert(&rows));
        r?;
        raw_ms += ms;
        let (r, ms) = time_ms(|| raw_many.insert_many(&rows));
        r?;
        raw_many_ms += ms;
        ingested += rows.len();
        eprintln!("tally-bench: ingest batch {b}: {} rows", rows.len());
    }
    let ingest_rate = ingested as f64 / (ingest_ms / 1e3);
    let raw_rate = ingested as f64 / (raw_ms / 1e3);
    let raw_many_rate = ingested as f64 / (raw_many_ms / 1e3);
    let small_runs = group_commit(dir, today, now)?;

    // The rest of the data set behind the summaries.
    let mut days = args.days;
    let estimate = (UNITS * INDICATORS) as f64 * days as f64 / ingest_rate;
    let mut scaled = None;
    if estimate > args.max_generate_secs && days > 365 {
        scaled = Some(format!(
            "generating {days} days would take ~{estimate:.0} s (> {:.0} s): scaled down to 365 days",
            args.max_generate_secs
        ));
        days = 365;
    }
    let batches = days.div_ceil(BATCH_DAYS);
    let (r, generate_ms) = time_ms(|| -> Result<()> {
        for b in INGEST_BATCHES..batches {
            let (from, to) = window(b, days);
            store.record_run(&run_record(from, to, now), &batch(&units, from, to), None)?;
            eprintln!("tally-bench: data batch {b} of {batches}");
        }
        Ok(())
    });
    r?;
    let observations = UNITS * INDICATORS * days as usize;

    let emits: HashMap<String, Vec<String>> = HashMap::from([(
        "bench".to_owned(),
        config.indicators.iter().map(|i| i.id.clone()).collect(),
    )]);
    let mut summary_rows = Vec::new();
    for label in ["2025-Q1", "2024"] {
        let req = SummaryRequest::new(Period::parse(label)?);
        let build = || summary::build(&config, &tree, &store, &emits, &req, now);
        let rows = build()?.units.len();
        let mut ms = Vec::with_capacity(args.reps);
        for _ in 0..args.reps {
            let (r, t) = time_ms(build);
            r?;
            ms.push(t);
        }
        let (p50, p99) = percentiles(ms);
        summary_rows.push((label, rows, p50, p99));
    }
    // The store caches whole months: the first summary after opening reads
    // them all, and one after a run reads again the month the run changed.
    let quarter = SummaryRequest::new(Period::parse("2025-Q1")?);
    let reopened = SqliteStore::open(&dir.join("store"))?;
    let (r, cold_ms) = time_ms(|| summary::build(&config, &tree, &reopened, &emits, &quarter, now));
    r?;
    drop(reopened);
    let day = NaiveDate::from_ymd_opt(2025, 2, 15).context("date")?;
    // The root unit's values of that day, the same as stored: numbers stay put.
    let again = batch(&units[..1], day, day);
    let mut ms = Vec::with_capacity(args.reps);
    for _ in 0..args.reps {
        store.record_run(&run_record(day, day, now), &again, None)?;
        let (r, t) = time_ms(|| summary::build(&config, &tree, &store, &emits, &quarter, now));
        r?;
        ms.push(t);
    }
    let (after_write50, after_write99) = percentiles(ms);

    let exposition_rows = exposition(args, &config, &tree, store, today, now)?;

    // The wall clock only dates the report.
    let date = DateTime::<Utc>::from(std::time::SystemTime::now()).format("%Y-%m-%d");
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("tally-bench, {date}, {nproc} × {}", cpu_model());
    println!(
        "data: {UNITS} units (depth 4), {INDICATORS} indicators (half count, half level), \
         {days} days = {observations} observations; generated in {:.1} s",
        (ingest_ms + generate_ms) / 1e3
    );
    if let Some(note) = &scaled {
        println!("NOTE: {note}");
    }
    println!();
    println!("| benchmark | figure |");
    println!("|---|---|");
    println!(
        "| ingest: `record_run`, {INGEST_BATCHES} batches of {} rows | {:.0} obs/s |",
        ingested as u64 / INGEST_BATCHES,
        ingest_rate
    );
    println!(
        "| raw SQLite upsert, same rows (WAL, synchronous=FULL, 1 tx/batch) | {:.0} obs/s |",
        raw_rate
    );
    println!("| ingest / raw | {:.0}% |", 100.0 * ingest_rate / raw_rate);
    println!(
        "| context: raw SQLite plain INSERT, 128 rows a statement (rows known new, as the store writes them) | {raw_many_rate:.0} obs/s (ingest {:.0}% of it) |",
        100.0 * ingest_rate / raw_many_rate
    );
    for (per_commit, rate) in &small_runs {
        let how = match per_commit {
            1 => "one transaction each".to_owned(),
            n => format!("`record_runs`, {n} per commit"),
        };
        println!(
            "| {SMALL_RUNS} small runs ({SMALL_RUN} obs, 1 source each): {how} | {rate:.0} runs/s |"
        );
    }
    for (label, rows, p50, p99) in &summary_rows {
        println!(
            "| summary `{label}` ({rows} units × {INDICATORS} indicators), {} runs: p50 / p99 | {p50:.1} / {p99:.1} ms |",
            args.reps
        );
    }
    println!(
        "| summary `2025-Q1`, first after opening the store (no month cached) | {cold_ms:.1} ms |"
    );
    println!(
        "| summary `2025-Q1` right after a run re-collecting one of its days, {} runs: p50 / p99 | {after_write50:.1} / {after_write99:.1} ms |",
        args.reps
    );
    for (what, figure) in &exposition_rows {
        println!("| {what} | {figure} |");
    }
    print_province(args, dir)
}

/// The province rows (issue 16), with the same fixed "now" as the rest.
fn print_province(args: &Args, dir: &Path) -> Result<()> {
    let today = NaiveDate::from_ymd_opt(2025, 6, 30).context("date")?;
    let now = Utc
        .with_ymd_and_hms(2025, 6, 30, 4, 0, 0)
        .single()
        .context("time")?;
    if args.province_only {
        println!("| benchmark | figure |");
        println!("|---|---|");
    }
    for (what, figure) in province::province(args.province_units, dir, args.reps, today, now)? {
        println!("| {what} | {figure} |");
    }
    Ok(())
}

/// Sources of the live exposition figure: 10,000 `http_json` sources run
/// every 10 s finish 1,000 runs a second.
const LIVE_SOURCES: usize = 10_000;
const LIVE_RUNS_PER_SEC: usize = 1_000;
const LIVE_SECS: u64 = 10;
/// Time between two scrapes of the live figure (a scraper every 50 ms).
const LIVE_SCRAPE_GAP_MS: u64 = 50;

/// The exposition section: `/metrics` for every unit × indicator × window of
/// the data set (what a rebuild costs, and a scrape over real HTTP from the
/// daemon's own router), then the same daemon with 10,000 sources finishing
/// 1,000 runs a second while it is scraped.
fn exposition(
    args: &Args,
    config: &Config,
    tree: &UnitTree,
    store: SqliteStore,
    today: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Vec<(String, String)>> {
    let mut rows = Vec::new();
    let reps = args.reps;

    // A rebuild after observations were written: the store's roll-ups of
    // four windows, then the text of the indicator families, then the body.
    let mut read_ms = Vec::with_capacity(reps);
    let mut windows = None;
    for _ in 0..reps {
        let (w, t) = time_ms(|| summary::metric_windows(config, tree, &store, today));
        read_ms.push(t);
        windows = Some(w?);
    }
    let windows = windows.context("no repetitions")?;
    let mut text_ms = Vec::with_capacity(reps);
    let mut text = None;
    for _ in 0..reps {
        let (x, t) = time_ms(|| tally_daemon::metrics::indicator_text(config, tree, &windows));
        text_ms.push(t);
        text = Some(x);
    }
    let metrics = Arc::new(Metrics::new());
    metrics.set_indicator_families(text.context("no repetitions")?);
    let mut body_ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        let (_, t) = time_ms(|| metrics.rebuild());
        body_ms.push(t);
    }
    let body = metrics.exposition();
    let series = count_series(&body, "tally_indicator_value{");
    let total = count_series(&body, "");
    let (r50, r99) = percentiles(read_ms);
    let (t50, t99) = percentiles(text_ms);
    let (b50, b99) = percentiles(body_ms);
    rows.push((
        format!(
            "exposition: roll-ups of 4 windows from the store (`summary::metric_windows`), {reps} runs: p50 / p99"
        ),
        format!("{r50:.1} / {r99:.1} ms"),
    ));
    rows.push((
        format!(
            "exposition: text of {series} `tally_indicator_value` series and the other indicator families (`metrics::indicator_text`), {reps} runs: p50 / p99"
        ),
        format!("{t50:.1} / {t99:.1} ms"),
    ));
    rows.push((
        format!(
            "exposition: body from the cached indicator text ({total} series), {reps} runs: p50 / p99"
        ),
        format!("{b50:.1} / {b99:.1} ms"),
    ));
    rows.push((
        "exposition: body size".to_owned(),
        format!("{} bytes", body.len()),
    ));

    let engine = bench_engine(config, tree, store, now, metrics.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (addr, _scheduler, live) = serve(&runtime, engine.clone())?;
    let mut conn = TcpStream::connect(addr)?;
    let scrapes = reps.max(100);
    let mut ms = Vec::with_capacity(scrapes);
    let mut bytes = 0;
    for _ in 0..scrapes {
        let (r, t) = time_ms(|| scrape(&mut conn));
        bytes = r?;
        ms.push(t);
    }
    let (p50, p99) = percentiles(ms);
    rows.push((
        format!(
            "`GET /metrics` over HTTP on 127.0.0.1 ({total} series, {bytes} bytes), {scrapes} scrapes: p50 / p99"
        ),
        format!("{p50:.1} / {p99:.1} ms"),
    ));

    // The live daemon: 10,000 sources, each with a run behind it.
    for n in 0..LIVE_SOURCES {
        let id = format!("src-{n:05}");
        metrics.register_source(&id, "http_json");
        metrics.set_schedule_interval(&id, 10.0);
        metrics.run_finished(&id, "http_json", RunResult::Success, None, 0.004, 1, 1.7e9);
    }
    let mut body_ms = Vec::with_capacity(reps);
    let mut full_ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        body_ms.push(time_ms(|| metrics.rebuild()).1);
        full_ms.push(time_ms(|| engine.refresh_metrics_blocking(true)).1);
    }
    let live_body = metrics.exposition();
    let live_series = count_series(&live_body, "");
    let (b50, b99) = percentiles(body_ms);
    let (f50, f99) = percentiles(full_ms);
    rows.push((
        format!(
            "exposition with {LIVE_SOURCES} sources ({live_series} series, {} bytes): body from the cached indicator text, {reps} runs: p50 / p99",
            live_body.len()
        ),
        format!("{b50:.1} / {b99:.1} ms"),
    ));
    rows.push((
        format!(
            "exposition with {LIVE_SOURCES} sources: full rebuild (roll-ups from the store, text, body), {reps} runs: p50 / p99"
        ),
        format!("{f50:.1} / {f99:.1} ms"),
    ));

    // Runs finish at 1,000 a second, each writing observations, while the
    // daemon's own background task keeps the body fresh and a scraper asks
    // every 50 ms.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let refresher = runtime.spawn(tally_daemon::daemon::keep_metrics_fresh(live, stop_rx));
    let running = Arc::new(AtomicBool::new(true));
    let load = {
        let metrics = metrics.clone();
        let running = running.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut done = 0usize;
            while running.load(Ordering::Relaxed) {
                let due = (start.elapsed().as_secs_f64() * LIVE_RUNS_PER_SEC as f64) as usize;
                while done < due {
                    let id = format!("src-{:05}", done % LIVE_SOURCES);
                    metrics.run_finished(
                        &id,
                        "http_json",
                        RunResult::Success,
                        None,
                        0.004,
                        1,
                        1.7e9,
                    );
                    metrics.values_changed();
                    done += 1;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            done as f64 / start.elapsed().as_secs_f64()
        })
    };
    let mut ms = Vec::new();
    let (mut last, mut bodies) = (Vec::new(), 0);
    let started = Instant::now();
    while started.elapsed().as_secs() < LIVE_SECS {
        let (r, t) = time_ms(|| scrape_body(&mut conn));
        let body = r?;
        if body != last {
            bodies += 1;
            last = body;
        }
        ms.push(t);
        std::thread::sleep(std::time::Duration::from_millis(LIVE_SCRAPE_GAP_MS));
    }
    running.store(false, Ordering::Relaxed);
    let rate = load
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))?;
    let _ = stop_tx.send(true);
    runtime.block_on(refresher)?;
    let answered = ms.len();
    let max = ms.iter().copied().fold(0.0, f64::max);
    let (p50, p99) = percentiles(ms);
    rows.push((
        format!(
            "live: {LIVE_SOURCES} sources, {rate:.0} runs/s writing observations, scraped every {LIVE_SCRAPE_GAP_MS} ms for {LIVE_SECS} s: scrapes answered, p50 / p99 / max"
        ),
        format!("{answered} of {answered}, {p50:.1} / {p99:.1} / {max:.1} ms"),
    ));
    rows.push((
        "live: bodies the scrapes saw change (rebuilds, at most one a second)".to_owned(),
        bodies.to_string(),
    ));
    Ok(rows)
}

/// Samples in a body whose line starts with `prefix` (every sample for `""`).
fn count_series(body: &[u8], prefix: &str) -> usize {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty() && !l.starts_with(b"#") && l.starts_with(prefix.as_bytes()))
        .count()
}

/// An engine over the bench's store without plugin sources: what the HTTP
/// API serves from.
fn bench_engine(
    config: &Config,
    tree: &UnitTree,
    store: SqliteStore,
    now: DateTime<Utc>,
    metrics: Arc<Metrics>,
) -> Result<Arc<Engine>> {
    Ok(Arc::new(Engine::new(
        Arc::new(config.clone()),
        Arc::new(tree.clone()),
        Arc::new(PluginRegistry::default()),
        Vec::<(usize, Arc<SourceRunner>)>::new(),
        Arc::new(store),
        Arc::new(FixedClock::new(now)),
        metrics,
    )))
}

/// The daemon's router on a free port of 127.0.0.1. The scheduler's command
/// channel is returned to keep it open; nothing reads it.
/// The handle is what the background rebuild of `/metrics` reads.
#[allow(clippy::type_complexity)]
fn serve(
    runtime: &tokio::runtime::Runtime,
    engine: Arc<Engine>,
) -> Result<(
    SocketAddr,
    tokio::sync::mpsc::Receiver<tally_daemon::scheduler::Command>,
    LiveHandle,
)> {
    let (handle, commands) = tally_daemon::scheduler::channel();
    let live = LiveHandle::new(Live {
        engine,
        scheduler: handle,
        scheduler_running: Arc::new(AtomicBool::new(true)),
    });
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let app = router(AppState::new(live.clone(), None));
    runtime.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, commands, live))
}

/// One `GET /metrics` on a kept-alive connection, read to the body's last
/// byte, as a scraper does; returns the body's length.
fn scrape(conn: &mut TcpStream) -> Result<usize> {
    scrape_body(conn).map(|b| b.len())
}

/// [`scrape`], returning the body.
fn scrape_body(conn: &mut TcpStream) -> Result<Vec<u8>> {
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut reader = BufReader::new(&mut *conn);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    if !status.starts_with("HTTP/1.1 200") {
        bail!("GET /metrics answered {}", status.trim());
    }
    let mut length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = Some(value.trim().parse::<usize>()?);
        }
    }
    let length = length.context("GET /metrics answered without Content-Length")?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    if !reader.buffer().is_empty() {
        bail!("GET /metrics answered more than Content-Length");
    }
    Ok(body)
}
