//! Criterion benches of the per-fetch hot paths (issue 7): what one poll of
//! one source costs the daemon besides the plugin call, and what a scrape or
//! a rebuild of `/metrics` costs. `cargo bench -p tally-daemon --bench hot_paths`;
//! the whole-process figures are `cargo xtask bench`.
//!
//! Benchmarks, not tests: nothing here asserts on time.

use std::hint::black_box;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tally_daemon::metrics::Metrics;
use tally_domain::Observation;
use tally_store::{RunRecord, RunResult, RunToRecord, SqliteStore, Store};

const INDICATORS: [&str; 3] = ["reads", "shares", "favs"];

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_795_000_000 + secs, 0).unwrap()
}

/// One poll of source `i`: the three values the peer benchmark picks, for one day.
fn poll(i: usize, n: i64, day: NaiveDate) -> RunToRecord {
    let source = format!("src{i}");
    RunToRecord {
        run: RunRecord {
            source: source.clone(),
            trigger: "schedule".to_owned(),
            started_at: at(n),
            finished_at: at(n),
            result: RunResult::Success,
            error: None,
            window_from: day,
            window_to: day,
            warnings: Vec::new(),
            http_requests: Some(1),
            uncovered: Vec::new(),
            error_kind: None,
            retry_after: None,
        },
        observations: INDICATORS
            .iter()
            .enumerate()
            .map(|(k, ind)| Observation {
                source: source.clone(),
                unit: source.clone(),
                indicator: (*ind).to_owned(),
                entity: String::new(),
                day,
                value: (i * 7 + k + n as usize % 5) as f64,
            })
            .collect(),
        state: None,
    }
}

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let day = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
    // A store that has seen every source once, as a running daemon's has.
    let warm: Vec<RunToRecord> = (0..1_000).map(|i| poll(i, 0, day)).collect();
    for r in store.record_runs(&warm) {
        r.unwrap();
    }
    let mut n = 1;
    let mut g = c.benchmark_group("store");
    g.bench_function("record_run: one poll, its own commit", |b| {
        b.iter(|| {
            n += 1;
            let p = poll(n as usize % 1_000, n, day);
            black_box(store.record_run(&p.run, &p.observations, None).unwrap())
        })
    });
    g.bench_function("record_runs: 100 polls, one commit", |b| {
        b.iter_batched(
            || {
                n += 1;
                (0..100).map(|i| poll(i * 10, n, day)).collect::<Vec<_>>()
            },
            |polls| black_box(store.record_runs(&polls)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("resume_point: before each poll", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % 1_000;
            black_box(store.resume_point(&format!("src{i}")).unwrap())
        })
    });
    g.finish();
}

fn exposition(c: &mut Criterion) {
    let metrics = Metrics::new();
    for i in 0..1_000 {
        metrics.register_source(&format!("src{i}"), "http_json");
    }
    metrics.rebuild();
    let mut g = c.benchmark_group("metrics");
    g.bench_function("run_finished", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % 1_000;
            metrics.run_finished(
                &format!("src{i}"),
                "http_json",
                RunResult::Success,
                None,
                0.004,
                3,
                1.0e9,
            )
        })
    });
    g.bench_function("rebuild: 1,000 sources, 100 changed", |b| {
        b.iter(|| {
            for i in 0..100 {
                metrics.run_finished(
                    &format!("src{}", i * 10),
                    "http_json",
                    RunResult::Success,
                    None,
                    0.004,
                    3,
                    1.0e9,
                );
            }
            metrics.rebuild();
        })
    });
    g.bench_function("scrape: the cached body", |b| {
        b.iter(|| black_box(metrics.exposition()))
    });
    g.finish();
}

criterion_group!(benches, store, exposition);
criterion_main!(benches);
