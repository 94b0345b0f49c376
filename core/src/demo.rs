//! `tallyd demo`: the whole pipeline offline. It serves a small JSON API on
//! loopback (a portal CMS and an official account), writes the forms units
//! would fill in, and runs the real daemon with the real plugin libraries
//! built beside `tallyd` on `config/demo.toml`.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use axum::extract::Query;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{Datelike, NaiveDate};
use serde_json::{Value, json};

use crate::cli::UserError;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::daemon::{self, Daemon};
use crate::domain::period::{Period, PeriodKind, local_day};
use crate::reports::ReportWriter;

/// The bundled demo configuration.
pub const DEMO_CONFIG: &str = include_str!("../../config/demo.toml");

/// The address written in `config/demo.toml`, replaced by the real one.
const CONFIGURED_API: &str = "127.0.0.1:9471";

pub async fn run(listen: SocketAddr, data_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let data_dir = match data_dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("tally-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating demo data directory {}", data_dir.display()))?;
    let plugin_dir = daemon::exe_dir().context("cannot find the directory of tallyd")?;

    let api = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the demo API on 127.0.0.1")?;
    let api_addr = api.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(api, api_router()).await;
    });

    let mut config = demo_config(listen, &data_dir, &plugin_dir, api_addr)?;
    // The previous quarter's report, written once the backfill at start is in.
    config.reports.write_on_start = true;
    let reports = ReportWriter::from_config(&config);
    let today = local_day(SystemClock.now(), config.daemon.timezone);
    let written = write_forms(&data_dir.join("forms"), &config, today)?;

    let daemon = Daemon::start(config).await?;
    let base = format!("http://{}", daemon.addr);
    let quarter = Period::containing(PeriodKind::Quarter, today);
    println!("tally demo is running (Ctrl-C to stop)");
    println!("  data directory:  {}", data_dir.display());
    println!("  plugins from:    {}", plugin_dir.display());
    println!("  demo JSON API:   http://{api_addr}/cms/api/stats");
    println!(
        "  forms written:   {written} files in {}",
        data_dir.join("forms").display()
    );
    println!();
    println!("  metrics:         {base}/metrics");
    println!(
        "  this quarter:    {base}/api/v1/summary?period={}",
        quarter.label()
    );
    println!(
        "  last quarter:    {base}/api/v1/summary?period={}",
        quarter.previous().label()
    );
    println!(
        "  as CSV:          {base}/api/v1/summary?period={}&format=csv",
        quarter.label()
    );
    println!("  sources:         {base}/api/v1/sources");
    println!("  units:           {base}/api/v1/units");
    println!(
        "  run a source:    curl -X POST -H 'Authorization: Bearer demo-token' {base}/api/v1/sources/portal-cms/run"
    );
    println!(
        "  report files:    {} ({}, listed at {base}/api/v1/reports)",
        reports.dir.display(),
        quarter.previous().label()
    );
    announce_report(reports, quarter.previous().label().to_owned());
    daemon.serve(daemon::shutdown_signal()).await;
    Ok(ExitCode::SUCCESS)
}

/// Prints the paths of the report of `label` once the daemon has written
/// it in every format (after the collections at start), so that a person
/// trying the demo can open it. Files there before the demo started (a
/// reused --data-dir) are not announced again.
fn announce_report(writer: ReportWriter, label: String) {
    let before: Vec<String> = writer
        .list()
        .unwrap_or_default()
        .into_iter()
        .map(|f| f.name)
        .collect();
    tokio::spawn(async move {
        // The demo's backfill takes seconds; give up quietly after ten minutes.
        for _ in 0..1200 {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let Ok(files) = writer.list() else { continue };
            let new: Vec<String> = files
                .into_iter()
                .filter(|f| f.period == label && !before.contains(&f.name))
                .map(|f| writer.dir.join(f.name).display().to_string())
                .collect();
            if new.len() >= writer.formats.len() {
                println!("  report {label}:  {}", new.join(", "));
                return;
            }
        }
    });
}

/// The bundled configuration, pointed at this run's directories and API, and
/// backfilling from the start of the previous quarter so that both quarters
/// have data.
pub fn demo_config(
    listen: SocketAddr,
    data_dir: &Path,
    plugin_dir: &Path,
    api_addr: SocketAddr,
) -> anyhow::Result<Config> {
    let text = DEMO_CONFIG.replace(CONFIGURED_API, &api_addr.to_string());
    let mut config = Config::parse(&text, Path::new("config/demo.toml"), &|_| None)
        .map_err(|e| UserError(e.to_string()))?;
    config.daemon.listen = listen;
    config.daemon.data_dir = data_dir.to_path_buf();
    config.daemon.plugin_dirs = vec![plugin_dir.to_path_buf()];
    let today = local_day(SystemClock.now(), config.daemon.timezone);
    let start = Period::containing(PeriodKind::Quarter, today)
        .previous()
        .start;
    let forms = data_dir.join("forms");
    for source in &mut config.sources {
        source.backfill_from = Some(start);
        if source.plugin == "csv_form" {
            source.settings["dir"] = Value::String(forms.display().to_string());
        }
    }
    Ok(config)
}

/// A number that looks like activity, the same on every run for a unit and day.
fn activity(seed: &str, day: NaiveDate, spread: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes().chain(day.to_string().bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Fewer posts at weekends, as in real offices.
    let weekend = matches!(day.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun);
    let v = h % spread;
    if weekend { v / 3 } else { v }
}

fn api_router() -> Router {
    Router::new()
        .route("/cms/api/stats", get(cms_stats))
        .route("/account/followers", get(followers))
}

/// The departments as the CMS names them: partly display names, partly the
/// long official names configured as aliases.
const CMS_DEPARTMENTS: &[&str] = &[
    "县委宣传部",
    "某县自然资源局",
    "自然资源局办公室",
    "测绘股",
    "某县教育局",
    "某县第一中学",
    "中心小学",
    "卫生健康局",
    "城关镇",
    "东村",
    "新河镇",
    "新河镇中学",
];

async fn cms_stats(Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    let parse = |k: &str| q.get(k).and_then(|v| v.parse::<NaiveDate>().ok());
    let (Some(start), Some(end)) = (parse("start"), parse("end")) else {
        return Json(json!({"code": 400, "msg": "start and end (YYYY-MM-DD) are required"}));
    };
    let mut rows = Vec::new();
    for day in start.iter_days().take_while(|d| *d <= end).take(800) {
        for dept in CMS_DEPARTMENTS {
            let n = activity(dept, day, 4);
            if n > 0 {
                rows.push(json!({"date": day.to_string(), "dept": dept, "articles": n}));
            }
        }
    }
    Json(json!({"code": 0, "msg": "ok", "data": {"total": rows.len(), "rows": rows}}))
}

async fn followers(Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    let day = q
        .get("day")
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y%m%d").ok());
    let Some(day) = day else {
        return Json(
            json!({"errcode": 40097, "errmsg": "invalid args: day (YYYYMMDD) is required"}),
        );
    };
    // A slowly growing audience, counted from an arbitrary launch day.
    let launched = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap_or(day);
    let days = (day - launched).num_days().max(0) as u64;
    let cumulate = 8_000 + days * 7 + activity("followers", day, 20);
    Json(json!({"data": {"ref_date": day.to_string(), "cumulate_user": cumulate}}))
}

/// Writes the monthly forms of the previous and the current quarter: most
/// units in a UTF-8 CSV, the education bureau's schools in a GBK CSV as
/// exported by an old office suite.
fn write_forms(dir: &Path, config: &Config, today: NaiveDate) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let quarter = Period::containing(PeriodKind::Quarter, today);
    let mut months = Vec::new();
    let mut month = Period::containing(PeriodKind::Month, quarter.previous().start);
    while month.start <= today {
        months.push(month.clone());
        month = Period::containing(PeriodKind::Month, month.end.succ_opt().unwrap_or(month.end));
        if months.len() > 12 {
            break;
        }
    }
    let header = "单位,月份,会议次数(次),培训次数(次),网评文章数(篇)\n";
    let mut utf8 = String::from('\u{feff}');
    utf8.push_str(header);
    let mut gbk = String::from(header);
    for unit in &config.units {
        for m in &months {
            let meetings = 1 + activity(&format!("{}-meet", unit.id), m.start, 4);
            let trainings = activity(&format!("{}-train", unit.id), m.start, 3);
            let pieces = activity(&format!("{}-pieces", unit.id), m.start, 6);
            let line = format!(
                "{},{}年{}月,{meetings},{trainings},{pieces}\n",
                unit.name,
                m.start.year(),
                m.start.month()
            );
            if unit.id.starts_with("county/edu") {
                gbk.push_str(&line);
            } else {
                utf8.push_str(&line);
            }
        }
    }
    std::fs::write(dir.join("units-monthly.csv"), utf8.as_bytes())
        .with_context(|| format!("writing forms in {}", dir.display()))?;
    let (encoded, _, _) = encoding_rs::GBK.encode(&gbk);
    std::fs::write(dir.join("edu-monthly-gbk.csv"), &encoded)
        .with_context(|| format!("writing forms in {}", dir.display()))?;
    Ok(2)
}
