//! The province figures of `tally-bench` (issue 16): `/metrics` of a
//! 20,000-unit tree with 30 indicators and 10,000 sources, with the default
//! `[metrics]`: how many series and bytes, how long a rebuild takes, and a
//! scrape plain and with gzip.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, NaiveDate, Utc};
use tally_config::Config;
use tally_daemon::metrics::Metrics;
use tally_domain::{Observation, UnitTree};
use tally_store::{RunResult, SqliteStore, Store};

use super::{bench_engine, count_series, percentiles, run_record, serve, time_ms};

/// The province's units by default (`--province-units`): 1 province, 15
/// cities, 150 counties, the rest bureaus under the counties.
pub const UNITS: usize = 20_000;
const INDICATORS: usize = 30;
/// Indicators with a quarterly target per unit: the first ten.
const TARGETED: usize = 10;
const SOURCES: usize = 10_000;

fn unit_ids(n: usize) -> Vec<String> {
    let mut ids = vec!["p".to_owned()];
    ids.extend((0..15).map(|c| format!("p/c{c}")));
    ids.extend((0..150).map(|k| format!("p/c{}/k{}", k / 10, k % 10)));
    let bureaus = n.saturating_sub(ids.len());
    ids.extend((0..bureaus).map(|n| format!("p/c{}/k{}/b{n}", (n % 150) / 10, n % 10)));
    ids
}

fn config_text(units: &[String], data_dir: &Path) -> String {
    let mut t = format!(
        "[daemon]\ntimezone = \"Asia/Shanghai\"\ndata_dir = {:?}\n\n",
        data_dir.display().to_string()
    );
    for id in units {
        t.push_str(&format!("[[units]]\nid = \"{id}\"\nname = \"{id}\"\n"));
    }
    for i in 0..INDICATORS {
        t.push_str(&format!(
            "[[indicators]]\nid = \"i{i}\"\nname = \"I{i}\"\nkind = \"count\"\nunit = \"次\"\n"
        ));
    }
    for i in 0..TARGETED {
        t.push_str(&format!(
            "[[targets]]\nindicator = \"i{i}\"\nper = \"unit\"\nperiod = \"quarter\"\nmin = 10\n"
        ));
    }
    t.push_str(
        "[[sources]]\nid = \"bench\"\nplugin = \"bench\"\nunits = [\"p\"]\nschedule = \"0 3 * * *\"\n",
    );
    t
}

/// The province rows of the report.
pub fn province(
    n_units: usize,
    dir: &Path,
    reps: usize,
    today: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Vec<(String, String)>> {
    let units = unit_ids(n_units);
    let config = Config::parse(
        &config_text(&units, &dir.join("province-data")),
        Path::new("province.toml"),
        &|_| None,
    )?;
    let tree: UnitTree = config.unit_tree()?;
    let store = SqliteStore::open(&dir.join("province-store"))?;
    // One day: every unit and indicator has a value in every window.
    let rows: Vec<Observation> = units
        .iter()
        .enumerate()
        .flat_map(|(u, unit)| {
            (0..INDICATORS).map(move |i| Observation {
                source: "bench".to_owned(),
                unit: unit.clone(),
                indicator: format!("i{i}"),
                entity: String::new(),
                day: today,
                value: ((u + i) % 7) as f64,
            })
        })
        .collect();
    store.record_run(&run_record(today, today, now), &rows, None)?;
    drop(rows);
    eprintln!("tally-bench: province data written");

    let metrics = Arc::new(Metrics::new());
    metrics.configure(&config.metrics);
    for n in 0..SOURCES {
        let id = format!("src-{n:05}");
        metrics.register_source(&id, "http_json");
        metrics.set_schedule_interval(&id, 10.0);
        metrics.run_finished(&id, "http_json", RunResult::Success, None, 0.004, 1, 1.7e9);
    }
    let engine = bench_engine(&config, &tree, store, now, metrics.clone())?;
    let mut build_ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        build_ms.push(time_ms(|| engine.refresh_metrics_blocking(true)).1);
    }
    let body = metrics.exposition();
    let values = count_series(&body, "tally_indicator_value{");
    let ratios = count_series(&body, "tally_target_ratio{");
    let infos = count_series(&body, "tally_unit_info{");
    let total = count_series(&body, "");
    let depth = config
        .metrics_depth()
        .map_or("every level".to_owned(), |d| format!("depths 0 to {d}"));
    let (b50, b99) = percentiles(build_ms);
    let mut out = vec![
        (
            format!(
                "province: {} units, {INDICATORS} indicators ({TARGETED} with targets), {SOURCES} sources, default `[metrics]`: series exposed",
                units.len()
            ),
            format!(
                "{total} ({values} `tally_indicator_value`, {ratios} `tally_target_ratio`, {infos} `tally_unit_info`: {depth}; \
                 unbounded, {} indicator values)",
                units.len() * INDICATORS * 4
            ),
        ),
        (
            "province: body size, plain / gzip".to_owned(),
            format!("{} / {} bytes", body.len(), metrics.exposition_gzip().len()),
        ),
        (
            format!(
                "province: full rebuild (roll-ups of every unit from the store, text, body, gzip copy), {reps} runs: p50 / p99"
            ),
            format!("{b50:.1} / {b99:.1} ms"),
        ),
    ];
    // The gzip level, measured on this body and on the 10,000 sources with
    // every optional series (the body size Prometheus would otherwise get).
    let mut detailed = config.metrics.clone();
    detailed.source_duration_histogram = true;
    detailed.source_error_kinds = true;
    let full = Metrics::new();
    full.configure(&detailed);
    for n in 0..SOURCES {
        let id = format!("src-{n:05}");
        full.register_source(&id, "http_json");
        full.run_finished(&id, "http_json", RunResult::Success, None, 0.004, 1, 1.7e9);
    }
    full.rebuild();
    for (what, text) in [
        ("province body", body.clone()),
        (
            "10,000 sources with histogram and error kinds",
            full.exposition(),
        ),
    ] {
        let mut figures = Vec::new();
        for level in [1, 3, 6, 9] {
            let mut ms = Vec::with_capacity(reps.min(10));
            let mut size = 0;
            for _ in 0..reps.min(10) {
                let (z, t) = time_ms(|| gzip(&text, level));
                size = z.len();
                ms.push(t);
            }
            let (p50, _) = percentiles(ms);
            figures.push(format!("level {level}: {size} bytes in {p50:.1} ms"));
        }
        out.push((
            format!(
                "gzip of the {what} ({} bytes), flate2/zlib-rs, p50",
                text.len()
            ),
            figures.join("; "),
        ));
    }
    drop(full);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (addr, _scheduler, _live) = serve(&runtime, engine)?;
    let mut conn = TcpStream::connect(addr)?;
    let scrapes = reps.max(50);
    for (label, gzip) in [("plain", false), ("gzip", true)] {
        let mut ms = Vec::with_capacity(scrapes);
        let mut bytes = 0;
        for _ in 0..scrapes {
            let (r, t) = time_ms(|| scrape(&mut conn, gzip));
            bytes = r?;
            ms.push(t);
        }
        let (p50, p99) = percentiles(ms);
        out.push((
            format!(
                "province: `GET /metrics` {label} over HTTP on 127.0.0.1 ({bytes} bytes), {scrapes} scrapes: p50 / p99"
            ),
            format!("{p50:.1} / {p99:.1} ms"),
        ));
    }
    Ok(out)
}

fn gzip(text: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    let _ = e.write_all(text);
    e.finish().unwrap_or_default()
}

/// One `GET /metrics` on a kept-alive connection, read to its last byte;
/// with `gzip` asking for it as Prometheus does, and checking it came so.
/// Returns the bytes received.
fn scrape(conn: &mut TcpStream, gzip: bool) -> Result<usize> {
    let accept = if gzip {
        "Accept-Encoding: gzip\r\n"
    } else {
        ""
    };
    conn.write_all(format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n{accept}\r\n").as_bytes())?;
    let mut reader = BufReader::new(&mut *conn);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    if !status.starts_with("HTTP/1.1 200") {
        bail!("GET /metrics answered {}", status.trim());
    }
    let (mut length, mut encoded) = (None, false);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("content-length:") {
            length = Some(v.trim().parse::<usize>()?);
        }
        encoded |= line == "content-encoding: gzip";
    }
    if encoded != gzip {
        bail!("GET /metrics answered gzip {encoded}, asked {gzip}");
    }
    let length = length.context("GET /metrics answered without Content-Length")?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(length)
}
