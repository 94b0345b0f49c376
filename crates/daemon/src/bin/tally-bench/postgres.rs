//! The PostgreSQL part of `tally-bench` (issue 13): the same rows as the
//! SQLite part, through `PostgresStore`, on a throwaway cluster of this
//! process with PostgreSQL's durable defaults (fsync on, as deployed).
//!
//! - Ingest: `record_run` of the same 30-day batches, beside the raw
//!   batched equivalent of the store's own statement on the same server:
//!   one `INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO UPDATE` a
//!   batch (10,000 rows a statement, as the store sends them) into a table
//!   with the same columns and primary key and nothing else, one
//!   transaction a batch.
//! - Summaries: `summary::build` over the whole data set, warm (after a
//!   first build), and right after another handle (another replica) wrote.

use std::collections::HashMap;

use anyhow::{Context, Result};
use chrono::{DateTime, Days, NaiveDate, Utc};
use tally_config::Config;
use tally_daemon::summary::{self, SummaryRequest};
use tally_domain::{Observation, Period, UnitTree};
use tally_store::{PostgresStore, Store};

use super::{
    Args, BATCH_DAYS, INDICATORS, INGEST_BATCHES, UNITS, batch, percentiles, run_record, time_ms,
};

/// Rows a raw statement sends, as the store's upsert does.
const RAW_CHUNK: usize = 10_000;

/// The raw comparator: the rows alone, nothing the store adds (run row,
/// month sums, store version, secondary index).
fn raw_table(client: &mut postgres::Client) -> Result<()> {
    client.batch_execute(
        "CREATE TABLE raw_observations (
             indicator TEXT COLLATE \"C\" NOT NULL,
             unit      TEXT COLLATE \"C\" NOT NULL,
             source    TEXT COLLATE \"C\" NOT NULL,
             entity    TEXT COLLATE \"C\" NOT NULL,
             day       DATE NOT NULL,
             value     DOUBLE PRECISION NOT NULL,
             run       BIGINT NOT NULL,
             PRIMARY KEY (indicator, unit, source, entity, day)
         )",
    )?;
    Ok(())
}

fn raw_upsert(client: &mut postgres::Client, rows: &[Observation], run: i64) -> Result<()> {
    let mut tx = client.transaction()?;
    let upsert = tx.prepare(
        "INSERT INTO raw_observations (indicator, unit, source, entity, day, value, run) \
         SELECT i, u, $1, e, d, v, $2 \
         FROM unnest($3::text[], $4::text[], $5::text[], $6::date[], $7::float8[]) \
              AS t (i, u, e, d, v) \
         ON CONFLICT (indicator, unit, source, entity, day) \
         DO UPDATE SET value = excluded.value, run = excluded.run",
    )?;
    for chunk in rows.chunks(RAW_CHUNK) {
        let of = |f: fn(&Observation) -> &str| -> Vec<&str> { chunk.iter().map(f).collect() };
        let days: Vec<NaiveDate> = chunk.iter().map(|o| o.day).collect();
        let values: Vec<f64> = chunk.iter().map(|o| o.value).collect();
        tx.execute(
            &upsert,
            &[
                &"bench",
                &run,
                &of(|o| &o.indicator),
                &of(|o| &o.unit),
                &of(|o| &o.entity),
                &days,
                &values,
            ],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// The section's table rows: (benchmark, figure).
pub(crate) fn section(
    args: &Args,
    config: &Config,
    tree: &UnitTree,
    units: &[String],
    today: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Vec<(String, String)>> {
    eprintln!("tally-bench: starting a PostgreSQL cluster (fsync on)");
    let (url, conninfo) = tally_store::pg_test_cluster::durable_database();
    let store = PostgresStore::open(&url)?;
    let mut raw = postgres::Client::connect(&conninfo, postgres::NoTls)?;
    raw_table(&mut raw)?;
    let mut rows_out = Vec::new();

    let window = |b: u64, days: u64| {
        let to = today - Days::new(b * BATCH_DAYS);
        let first = (b * BATCH_DAYS + BATCH_DAYS).min(days) - 1;
        (today - Days::new(first), to)
    };
    // New rows, then the same rows again (a re-collection replaces them):
    // the two cases a run's upsert meets.
    let (mut ingest_ms, mut raw_ms, mut ingested) = (0.0, 0.0, 0usize);
    let (mut again_ms, mut raw_again_ms) = (0.0, 0.0);
    for b in 0..INGEST_BATCHES {
        let (from, to) = window(b, args.days);
        let rows = batch(units, from, to);
        let (r, ms) = time_ms(|| store.record_run(&run_record(from, to, now), &rows, None));
        r?;
        ingest_ms += ms;
        let (r, ms) = time_ms(|| raw_upsert(&mut raw, &rows, b as i64));
        r?;
        raw_ms += ms;
        if b == 0 {
            let (r, ms) = time_ms(|| store.record_run(&run_record(from, to, now), &rows, None));
            r?;
            again_ms = ms;
            let (r, ms) = time_ms(|| raw_upsert(&mut raw, &rows, b as i64));
            r?;
            raw_again_ms = ms;
        }
        ingested += rows.len();
        eprintln!(
            "tally-bench: PostgreSQL ingest batch {b}: {} rows",
            rows.len()
        );
    }
    let per_batch = ingested as u64 / INGEST_BATCHES;
    let ingest_rate = ingested as f64 / (ingest_ms / 1e3);
    let raw_rate = ingested as f64 / (raw_ms / 1e3);
    rows_out.push((
        format!(
            "PostgreSQL ingest: `record_run`, {INGEST_BATCHES} batches of {per_batch} new rows"
        ),
        format!("{ingest_rate:.0} obs/s"),
    ));
    rows_out.push((
        "raw PostgreSQL batched upsert, same rows (`INSERT ... SELECT FROM unnest ... ON CONFLICT DO UPDATE`, 10,000 rows a statement, 1 tx/batch, same columns and primary key)".to_owned(),
        format!("{raw_rate:.0} obs/s"),
    ));
    rows_out.push((
        "PostgreSQL ingest / raw (target ≥ 50%)".to_owned(),
        format!("{:.0}%", 100.0 * ingest_rate / raw_rate),
    ));
    rows_out.push((
        format!(
            "PostgreSQL re-collection of one batch ({per_batch} rows replaced): `record_run` / raw"
        ),
        format!(
            "{:.0} / {:.0} obs/s ({:.0}%)",
            per_batch as f64 / (again_ms / 1e3),
            per_batch as f64 / (raw_again_ms / 1e3),
            100.0 * raw_again_ms / again_ms
        ),
    ));
    raw.batch_execute("DROP TABLE raw_observations")?;

    // The rest of the data set, through the store.
    let mut days = args.days;
    let estimate = (UNITS * INDICATORS) as f64 * days as f64 / ingest_rate;
    let mut scaled = None;
    if estimate > args.max_generate_secs && days > 365 {
        scaled = Some(format!(
            "PostgreSQL: generating {days} days would take ~{estimate:.0} s: scaled down to 365 days"
        ));
        days = 365;
    }
    let batches = days.div_ceil(BATCH_DAYS);
    let (r, generate_ms) = time_ms(|| -> Result<()> {
        for b in INGEST_BATCHES..batches {
            let (from, to) = window(b, days);
            store.record_run(&run_record(from, to, now), &batch(units, from, to), None)?;
            eprintln!("tally-bench: PostgreSQL data batch {b} of {batches}");
        }
        Ok(())
    });
    r?;
    raw.batch_execute("VACUUM ANALYZE")?;
    rows_out.push((
        "PostgreSQL data set".to_owned(),
        format!(
            "{UNITS} units × {INDICATORS} indicators × {days} days = {} observations, generated in {:.1} s{}",
            UNITS * INDICATORS * days as usize,
            (ingest_ms + generate_ms) / 1e3,
            scaled.map(|s| format!(" (NOTE: {s})")).unwrap_or_default()
        ),
    ));

    let emits: HashMap<String, Vec<String>> = HashMap::from([(
        "bench".to_owned(),
        config.indicators.iter().map(|i| i.id.clone()).collect(),
    )]);
    for label in ["2025-Q1", "2024"] {
        let req = SummaryRequest::new(Period::parse(label)?);
        let build = || summary::build(config, tree, &store, &emits, &req, now);
        let (first, first_ms) = time_ms(build);
        let n = first?.units.len();
        let mut ms = Vec::with_capacity(args.reps);
        for _ in 0..args.reps {
            let (r, t) = time_ms(build);
            r?;
            ms.push(t);
        }
        let (p50, p99) = percentiles(ms);
        rows_out.push((
            format!(
                "PostgreSQL summary `{label}` ({n} units × {INDICATORS} indicators), warm, {} runs: p50 / p99 (first: {first_ms:.1} ms){}",
                args.reps,
                if label == "2025-Q1" { " (target p50 < 20 ms)" } else { "" }
            ),
            format!("{p50:.1} / {p99:.1} ms"),
        ));
    }
    // Another replica re-collects a day of the quarter; the next summary
    // here must read it (nothing is cached in the process).
    let other = PostgresStore::open(&url)?;
    let quarter = SummaryRequest::new(Period::parse("2025-Q1")?);
    let day = NaiveDate::from_ymd_opt(2025, 2, 15).context("date")?;
    let again = batch(&units[..1], day, day);
    let mut ms = Vec::with_capacity(args.reps);
    for _ in 0..args.reps {
        other.record_run(&run_record(day, day, now), &again, None)?;
        let (r, t) = time_ms(|| summary::build(config, tree, &store, &emits, &quarter, now));
        r?;
        ms.push(t);
    }
    let (p50, p99) = percentiles(ms);
    rows_out.push((
        format!(
            "PostgreSQL summary `2025-Q1` right after another replica re-collected one of its days, {} runs: p50 / p99",
            args.reps
        ),
        format!("{p50:.1} / {p99:.1} ms"),
    ));
    Ok(rows_out)
}
