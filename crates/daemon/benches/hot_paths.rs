//! Criterion benches of the per-fetch hot paths (issue 7): what one poll of
//! one source costs the daemon besides the plugin call, and what a scrape or
//! a rebuild of `/metrics` costs; and the 本期 page of 1,000 units × 20
//! indicators rendered server-side (issue 18: under 100 ms). `cargo bench -p tally-daemon --bench hot_paths`;
//! the whole-process figures are `cargo xtask bench`.
//!
//! `poll` splits one fetch (issue 16): the whole scheduled run of one
//! `http_json` source through the engine against a local server (resume
//! read, plugin call with its HTTP request, commit, metrics), and the
//! plugin call alone; `store` has the resume read and the commit alone.
//!
//! Benchmarks, not tests: nothing here asserts on time.

use std::collections::HashMap;
use std::hint::black_box;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tally_config::Config;
use tally_daemon::daemon::Daemon;
use tally_daemon::engine::{Engine, Trigger};
use tally_daemon::metrics::Metrics;
use tally_daemon::pages::{current_html, current_html_of};
use tally_daemon::summary::SummaryRequest;
use tally_domain::clock::FixedClock;
use tally_domain::{Observation, Period};
use tally_host::{PluginLibrary, PluginRegistry, SourceRunner};
use tally_plugin::abi::StaticDescriptor;
use tally_plugin::{CollectRequest, IndicatorRef, PROTOCOL_VERSION, UnitRef, Window};
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

/// `r`, `r/a0`..`r/a9`, `r/aX/bY` (100), then leaves up to 1,000: the tree
/// of `tally-bench`.
fn page_units() -> Vec<String> {
    let mut ids = vec!["r".to_owned()];
    ids.extend((0..10).map(|a| format!("r/a{a}")));
    ids.extend((0..100).map(|g| format!("r/a{}/b{}", g / 10, g % 10)));
    ids.extend((0..1_000 - ids.len()).map(|n| format!("r/a{}/b{}/c{n}", (n % 100) / 10, n % 10)));
    ids
}

fn page_config(units: &[String], data_dir: &Path) -> String {
    let mut t = format!(
        "[daemon]\ntimezone = \"Asia/Shanghai\"\ndata_dir = {:?}\n\n",
        data_dir.display().to_string()
    );
    for id in units {
        t.push_str(&format!("[[units]]\nid = \"{id}\"\nname = \"单位 {id}\"\n"));
    }
    for i in 0..20 {
        let kind = if i % 2 == 0 { "count" } else { "level" };
        t.push_str(&format!(
            "[[indicators]]\nid = \"i{i}\"\nname = \"指标{i}\"\nkind = \"{kind}\"\nunit = \"次\"\n"
        ));
    }
    t.push_str(
        "[[sources]]\nid = \"bench\"\nplugin = \"bench\"\nunits = [\"r\"]\nschedule = \"0 3 * * *\"\n",
    );
    t
}

/// Every unit × indicator × day from `from` to `to`.
fn page_rows(units: &[String], from: NaiveDate, to: NaiveDate) -> Vec<Observation> {
    let mut out = Vec::new();
    for (u, unit) in units.iter().enumerate() {
        for i in 0..20 {
            for (n, day) in from.iter_days().take_while(|d| *d <= to).enumerate() {
                out.push(Observation {
                    source: "bench".to_owned(),
                    unit: unit.clone(),
                    indicator: format!("i{i}"),
                    entity: String::new(),
                    day,
                    value: if i % 2 == 0 {
                        ((u + i + n) % 7) as f64
                    } else {
                        (1_000 + n + u) as f64
                    },
                });
            }
        }
    }
    out
}

/// The 本期 page of 2025-Q1 for 1,000 units × 20 indicators, every unit
/// shown (`open=*`): a quarter of daily data, and the last day of the
/// quarter before for the 上期 column. `render` builds the summary once and
/// measures the page alone; `handler` is the whole of `GET /` but the
/// socket: query, summary from the store, page.
fn pages(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let units = page_units();
    let config = Config::parse(
        &page_config(&units, &dir.path().join("data")),
        Path::new("bench.toml"),
        &|_| None,
    )
    .unwrap();
    let tree = config.unit_tree().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let day = |m, d| NaiveDate::from_ymd_opt(2025, m, d).unwrap();
    let last_q4 = NaiveDate::from_ymd_opt(2024, 12, 31).unwrap();
    for (from, to) in [
        (last_q4, last_q4),
        (day(1, 1), day(1, 31)),
        (day(2, 1), day(2, 28)),
        (day(3, 1), day(3, 31)),
    ] {
        let run = RunRecord {
            source: "bench".to_owned(),
            trigger: "backfill".to_owned(),
            started_at: at(0),
            finished_at: at(0),
            result: RunResult::Success,
            error: None,
            window_from: from,
            window_to: to,
            warnings: Vec::new(),
            http_requests: None,
            uncovered: Vec::new(),
            error_kind: None,
            retry_after: None,
        };
        store
            .record_run(&run, &page_rows(&units, from, to), None)
            .unwrap();
    }
    let now = Utc.with_ymd_and_hms(2025, 4, 2, 4, 0, 0).unwrap();
    let engine = Engine::new(
        Arc::new(config),
        Arc::new(tree),
        Arc::new(PluginRegistry::default()),
        Vec::<(usize, Arc<SourceRunner>)>::new(),
        Arc::new(store),
        Arc::new(FixedClock::new(now)),
        Arc::new(Metrics::new()),
    );
    let params: HashMap<String, String> = [("period", "2025-Q1"), ("open", "*")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let summary = engine
        .summary(&SummaryRequest::new(Period::parse("2025-Q1").unwrap()))
        .unwrap();
    let html = current_html_of(&engine, &summary, &params).unwrap();
    eprintln!(
        "pages_current_1000x20: {} rows, {} bytes of HTML",
        html.matches("<tr id=\"unit-").count(),
        html.len()
    );
    let mut g = c.benchmark_group("pages_current_1000x20");
    g.sample_size(20);
    g.bench_function("render (summary built once)", |b| {
        b.iter(|| black_box(current_html_of(&engine, &summary, &params).unwrap()))
    });
    g.bench_function("handler (summary from the store and render)", |b| {
        b.iter(|| black_box(current_html(&engine, &params).unwrap()))
    });
    g.finish();
}

static HTTP_JSON: StaticDescriptor =
    StaticDescriptor::new::<tally_http_json::HttpJson>("1.0.0", true);

/// What the peer benchmark's fake source answers for one source.
const SOURCE_DOC: &str = r#"{"list":[{"ref_date":"2026-11-26","user_source":0,"int_page_read_user":8919,"int_page_read_count":17838,"ori_page_read_user":4459,"ori_page_read_count":8919,"share_user":891,"share_count":1783,"add_to_fav_user":445,"add_to_fav_count":891}]}"#;

/// A local JSON source on 127.0.0.1: one answer per connection, then the
/// connection closes, as the peer benchmark's fake source (HTTP/1.0) does.
fn source_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{SOURCE_DOC}",
                SOURCE_DOC.len()
            );
        }
    });
    port
}

fn poll_config(port: u16, data_dir: &Path) -> String {
    let mut t = format!(
        "[daemon]\nlisten = \"127.0.0.1:0\"\ntimezone = \"Asia/Shanghai\"\ndata_dir = {:?}\n\n",
        data_dir.display().to_string()
    );
    for (id, name) in [
        ("reads", "int_page_read_count"),
        ("shares", "share_count"),
        ("favs", "add_to_fav_count"),
    ] {
        t.push_str(&format!(
            "[[indicators]]\nid = \"{id}\"\nname = \"{name}\"\nkind = \"count\"\nunit = \"次\"\n\n"
        ));
    }
    t.push_str(&format!(
        "[[units]]\nid = \"src0\"\nname = \"source 0\"\n\n\
         [[sources]]\nid = \"src0\"\nplugin = \"http_json\"\nunit = \"src0\"\n\
         schedule = \"0 0 3 * * *\"\n\
         [sources.settings]\nurl = \"http://127.0.0.1:{port}/src/0.json\"\n\
         values = [\n  {{ indicator = \"reads\", path = \"$.list[0].int_page_read_count\" }},\n  \
         {{ indicator = \"shares\", path = \"$.list[0].share_count\" }},\n  \
         {{ indicator = \"favs\", path = \"$.list[0].add_to_fav_count\" }},\n]\n"
    ));
    t
}

/// One fetch of one `http_json` source, as the peer benchmark's tallyd
/// makes it every 10 s: the whole run through the engine (the daemon's
/// runtime, SQLite store and writer, metrics), and the plugin call alone
/// (its HTTP request through the host included).
fn fetch(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let port = source_server();
    let path = dir.path().join("tally.toml");
    std::fs::write(&path, poll_config(port, &dir.path().join("data"))).unwrap();
    let config = Config::load(&path).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let daemon = runtime.block_on(async {
        Daemon::builder(config)
            .plugins(PluginRegistry::from_libraries(vec![
                PluginLibrary::linked(&HTTP_JSON).unwrap(),
            ]))
            .in_process()
            .await
            .unwrap()
    });
    let engine = daemon.engine();
    let first = runtime
        .block_on(engine.run("src0", Trigger::Schedule, None))
        .unwrap();
    assert_eq!(first.result, "success", "{first:?}");
    assert_eq!(first.observations, 3, "{first:?}");
    let mut g = c.benchmark_group("poll");
    g.bench_function("run: one http_json source, resume read to commit", |b| {
        b.iter(|| {
            let report = runtime
                .block_on(engine.run("src0", Trigger::Schedule, None))
                .unwrap();
            black_box(report)
        })
    });
    let source = engine.source("src0").unwrap().clone();
    let today = engine.today();
    let request = CollectRequest {
        protocol: PROTOCOL_VERSION,
        source: "src0".to_owned(),
        window: Window::new(today, today),
        timezone: "Asia/Shanghai".to_owned(),
        units: vec![UnitRef {
            id: "src0".to_owned(),
            name: "source 0".to_owned(),
            aliases: Vec::new(),
        }],
        default_unit: Some("src0".to_owned()),
        indicators: ["reads", "shares", "favs"]
            .into_iter()
            .map(|id| IndicatorRef {
                id: id.to_owned(),
                name: id.to_owned(),
                kind: tally_plugin::Kind::Count,
                unit: "次".to_owned(),
            })
            .collect(),
        state: None,
        today: Some(today),
    };
    // From this (non-runtime) thread, as from a blocking-pool thread.
    g.bench_function("plugin call: http_json and its HTTP request", |b| {
        b.iter(|| black_box(source.instance.collect_blocking(&request).unwrap()))
    });
    g.finish();
    drop(runtime);
}

criterion_group!(benches, fetch, store, exposition, pages);
criterion_main!(benches);
