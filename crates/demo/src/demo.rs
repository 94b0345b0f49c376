//! `tally-demo`: the whole pipeline offline. It serves a small JSON API on
//! loopback (a portal CMS and an official account), writes the forms units
//! would fill in, and runs the real daemon with the real plugin libraries
//! built beside `tallyd` on `config/demo.toml`.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::Query;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{Datelike, NaiveDate};
use serde_json::{Value, json};

use tally_config::Config;
use tally_daemon::daemon::{self, Daemon, StartError};
use tally_daemon::engine::Trigger;
use tally_daemon::reports::ReportWriter;
use tally_domain::clock::{Clock, FixedClock, SystemClock};
use tally_domain::period::{Period, PeriodKind, local_day};
use tally_store::DataDirLock;

/// The bundled demo configuration.
pub const DEMO_CONFIG: &str = include_str!("../../../config/demo.toml");

/// The addresses written in `config/demo.toml`, replaced by the real ones.
const CONFIGURED_API: &str = "127.0.0.1:9471";
const CONFIGURED_WEIBO: &str = "127.0.0.1:9472";
const CONFIGURED_WECHAT: &str = "127.0.0.1:9473";

/// The demo accounts of the simulated platforms, and their secrets, which the
/// demo hands to the configuration as `${env:...}` values would be.
const WECHAT_APPID: &str = "wx3d0c0ffee0000001";
const WECHAT_SECRET: &str = "demo-wechat-appsecret-0001";
const WEIBO_UID: u64 = 6_000_000_001;
const WEIBO_TOKEN: &str = "demo-weibo-access-token-0001";

/// The exec plugin's demo script, written into the data directory.
const DEMO_SCRIPT: &str = include_str!("../../../config/demo-scripts/meetings.sh");

/// The token of the write endpoints that the bundled demo configuration
/// publishes: acceptable on loopback only.
const PUBLISHED_TOKEN: &str = "demo-token";

pub async fn run(
    listen: SocketAddr,
    data_dir: Option<PathBuf>,
    token: Option<String>,
) -> anyhow::Result<ExitCode> {
    // The published token on every interface would let anyone who can reach
    // the machine run sources: refuse before anything is written.
    if !listen.ip().is_loopback() && token.is_none() {
        anyhow::bail!(
            "--listen {listen} is not a loopback address: give the demo a token of its own \
             (--token or TALLY_DEMO_TOKEN) instead of the published \"{PUBLISHED_TOKEN}\""
        );
    }
    if token
        .as_ref()
        .is_some_and(|t| t.chars().count() < tally_config::Redactor::MIN_LEN)
    {
        anyhow::bail!(
            "--token is shorter than {} characters: too short to be a secret",
            tally_config::Redactor::MIN_LEN
        );
    }
    let data_dir = match data_dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("tally-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating demo data directory {}", data_dir.display()))?;
    // Before anything is written there: a second demo on the same
    // --data-dir stops here rather than rewriting the first one's forms.
    let lock = DataDirLock::acquire(&data_dir).map_err(StartError::from)?;
    let plugin_dir = daemon::exe_dir().context("cannot find the directory of tally-demo")?;

    let api = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the demo API on 127.0.0.1")?;
    let api_addr = api.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(api, api_router()).await;
    });

    let wechat =
        tally_simulators::wechat::WechatSim::start(vec![tally_simulators::wechat::Account::new(
            WECHAT_APPID,
            WECHAT_SECRET,
        )])
        .await;
    let weibo =
        tally_simulators::weibo::WeiboSim::start(vec![tally_simulators::weibo::Account::new(
            WEIBO_UID,
            WEIBO_TOKEN,
        )])
        .await
        .context("starting the Weibo simulator on 127.0.0.1")?;
    let sims = Simulators {
        api: api_addr.to_string(),
        wechat: host_port(&wechat.base_url()),
        weibo: host_port(&weibo.base_url()),
    };

    let mut config = demo_config(listen, &data_dir, &plugin_dir, &sims)?;
    let shown_token = match token {
        Some(token) => {
            config.daemon.api_token = Some(tally_config::Secret::new(token));
            "$TALLY_DEMO_TOKEN"
        }
        None => PUBLISHED_TOKEN,
    };
    // The previous quarter's report, written once the backfill at start is in.
    config.reports.write_on_start = true;
    let reports = ReportWriter::from_config(&config);
    let today = local_day(SystemClock.now(), config.daemon.timezone);
    let written = write_forms(&data_dir.join("forms"), &config, today)?;
    write_xuexi_sheets(&data_dir.join("xuexi"), today)?;
    write_script(&data_dir.join("scripts"))?;

    replay_daily_weibo_runs(&config, &weibo, today).await?;
    let daemon = Daemon::start_locked(config, lock).await?;
    let base = format!("http://{}", daemon.addr);
    let quarter = Period::containing(PeriodKind::Quarter, today);
    println!("tally demo is running (Ctrl-C to stop)");
    println!("  data directory:  {}", data_dir.display());
    println!("  plugins from:    {}", plugin_dir.display());
    println!("  demo JSON API:   http://{api_addr}/cms/api/stats");
    println!("  WeChat API sim:  {}", wechat.base_url());
    println!("  Weibo API sim:   {}", weibo.base_url());
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
        "  run a source:    curl -X POST -H 'Authorization: Bearer {shown_token}' {base}/api/v1/sources/portal-cms/run"
    );
    println!(
        "  report files:    {} ({}, listed at {base}/api/v1/reports)",
        reports.dir.display(),
        quarter.previous().label()
    );
    announce_report(reports, quarter.previous().label().to_owned());
    daemon.serve(daemon::shutdown_signal()).await;
    // The simulators serve until the daemon has stopped.
    drop((wechat, weibo));
    Ok(ExitCode::SUCCESS)
}

/// Where the demo's simulated platforms listen, as `host:port`.
pub struct Simulators {
    pub api: String,
    pub wechat: String,
    pub weibo: String,
}

fn host_port(base_url: &str) -> String {
    base_url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
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

/// The Weibo API lists only an account's five newest posts, so the `weibo`
/// plugin counts a day's posts from the runs around it, as a daemon that has
/// been collecting every morning has them. The demo starts with an empty
/// store: it first runs its Weibo sources once a day at 06:30 from its
/// backfill start to yesterday, with the engine's clock and the simulator's set to
/// that moment, so the past quarter is counted as a running deployment counts
/// it. Then the simulator follows the real clock again.
async fn replay_daily_weibo_runs(
    config: &Config,
    weibo: &tally_simulators::weibo::WeiboSim,
    today: NaiveDate,
) -> anyhow::Result<()> {
    let weibo_sources = || {
        config
            .sources
            .iter()
            .filter(|s| s.plugin == "weibo" && s.enabled)
    };
    let Some(from) = weibo_sources().filter_map(|s| s.backfill_from).min() else {
        return Ok(());
    };
    let ids: Vec<String> = weibo_sources().map(|s| s.id.clone()).collect();
    let tz = config.daemon.timezone;
    let at = |day: NaiveDate| {
        day.and_hms_opt(6, 30, 0)
            .and_then(|t| t.and_local_timezone(tz).earliest())
            .map(|t| t.to_utc())
            .context("06:30 does not exist in the demo's time zone")
    };
    let clock = Arc::new(FixedClock::new(at(from)?));
    // The whole configuration: an engine checks that every declared indicator
    // has a source. Only the Weibo sources run.
    let engine = daemon::build_engine(config.clone(), clock.clone())?;
    let mut day = from;
    while day < today {
        let moment = at(day)?;
        clock.set(moment);
        weibo.set_now(moment);
        for id in &ids {
            engine
                .run(id, Trigger::Schedule, None)
                .await
                .with_context(|| format!("replaying the daily run of {id} on {day}"))?;
        }
        day = day.succ_opt().context("the calendar ended")?;
    }
    engine.close();
    weibo.follow_real_clock();
    Ok(())
}

/// The bundled configuration, pointed at this run's directories and API, and
/// backfilling from the start of the previous quarter so that both quarters
/// have data.
pub fn demo_config(
    listen: SocketAddr,
    data_dir: &Path,
    plugin_dir: &Path,
    sims: &Simulators,
) -> anyhow::Result<Config> {
    let text = DEMO_CONFIG
        .replace(CONFIGURED_API, &sims.api)
        .replace(CONFIGURED_WEIBO, &sims.weibo)
        .replace(CONFIGURED_WECHAT, &sims.wechat);
    let env = |name: &str| match name {
        "DEMO_WECHAT_SECRET" => Some(WECHAT_SECRET.to_owned()),
        "DEMO_WEIBO_TOKEN" => Some(WEIBO_TOKEN.to_owned()),
        _ => None,
    };
    let mut config = Config::parse(&text, Path::new("config/demo.toml"), &env)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
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
        match source.plugin.as_str() {
            "csv_form" => source
                .settings
                .set("dir", Value::String(forms.display().to_string())),
            "xuexi" => source.settings.set(
                "dir",
                Value::String(data_dir.join("xuexi").display().to_string()),
            ),
            "exec" => {
                let script = data_dir.join("scripts").join("meetings.sh");
                source
                    .settings
                    .set("command", Value::String(script.display().to_string()));
            }
            _ => {}
        }
    }
    Ok(config)
}

/// A number that looks like activity, the same on every run for a unit and day.
fn activity(seed: &str, day: NaiveDate, spread: u64) -> u64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    h.write(format!("{seed}{day}").as_bytes());
    let h = h.finish();
    // Fewer posts at weekends, as in real offices.
    let weekend = matches!(day.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun);
    let v = h % spread;
    if weekend { v / 3 } else { v }
}

fn api_router() -> Router {
    Router::new()
        .route("/cms/api/stats", get(cms_stats))
        .route("/account/followers", get(followers))
        .route("/natres/rss.xml", get(natres_rss))
        .route("/edu/xwzx/{page}", get(edu_list_page))
}

/// The portal's articles of a column, newest first: (day, URL path). Some
/// articles of the education bureau's column are reposted in the natural
/// resources bureau's (the same URL), so a distinct count at the county
/// counts them once.
fn column_articles(column: &str, today: NaiveDate) -> Vec<(NaiveDate, String)> {
    let mut out = Vec::new();
    let mut day = today;
    for _ in 0..200 {
        for n in 0..activity(column, day, 3) {
            let stamp = day.format("%Y%m%d");
            let month = day.format("%Y%m");
            out.push((
                day,
                format!("/{column}/{month}/t{stamp}_{}{n}.html", day.ordinal()),
            ));
        }
        // Every seventh day an article of the education bureau appears in
        // both columns, under the same URL.
        if day.ordinal().is_multiple_of(7) {
            let stamp = day.format("%Y%m%d");
            let month = day.format("%Y%m");
            out.push((
                day,
                format!("/edu/{month}/t{stamp}_{}9.html", day.ordinal()),
            ));
        }
        day = day.pred_opt().unwrap_or(day);
    }
    out
}

fn today_local() -> NaiveDate {
    local_day(SystemClock.now(), chrono_tz::Asia::Shanghai)
}

/// An RSS 2.0 feed of the natural resources bureau's news column.
async fn natres_rss(headers: axum::http::HeaderMap) -> impl axum::response::IntoResponse {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let mut items = String::new();
    for (day, path) in column_articles("natres", today_local()) {
        let pub_date = day.format("%a, %d %b %Y 09:30:00 +0800");
        items.push_str(&format!(
            "<item><title>自然资源局工作动态</title><link>http://{host}{path}</link><pubDate>{pub_date}</pubDate></item>\n"
        ));
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/rss+xml; charset=utf-8",
        )],
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"><channel><title>某县自然资源局 工作动态</title><link>http://{host}/natres/</link><description>工作动态</description>\n{items}</channel></rss>\n"
        ),
    )
}

/// A TRS-style list page (`index.html`, `index_1.html`, ...) of the
/// education bureau's news column, 20 articles a page; past the last page, 404.
/// In GB2312, declared only by the page's `<meta http-equiv>` as on many
/// county sites, with the dates written `2026年11月27日`.
async fn edu_list_page(
    axum::extract::Path(page): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let n: usize = match page.as_str() {
        "index.html" => 0,
        other => match other
            .strip_prefix("index_")
            .and_then(|p| p.strip_suffix(".html"))
            .and_then(|p| p.parse().ok())
        {
            Some(n) => n,
            None => return axum::http::StatusCode::NOT_FOUND.into_response(),
        },
    };
    let articles = column_articles("edu", today_local());
    let chunk: Vec<_> = articles.iter().skip(n * 20).take(20).collect();
    if chunk.is_empty() {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    }
    let mut items = String::new();
    for (day, path) in chunk {
        let date = day.format("%Y年%m月%d日");
        items.push_str(&format!(
            "<li><a href=\"../..{path}\" target=\"_blank\">教育系统新闻</a><span class=\"date\">{date}</span></li>\n"
        ));
    }
    let page = format!(
        "<!DOCTYPE html><html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=gb2312\"><title>新闻中心</title></head><body><ul class=\"list\">\n{items}</ul></body></html>\n"
    );
    let (bytes, _, _) = encoding_rs::GBK.encode(&page);
    (
        // No charset here: the <meta> declares it.
        [(axum::http::header::CONTENT_TYPE, "text/html")],
        bytes.into_owned(),
    )
        .into_response()
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

/// The demo's learning-group members, by organisation as the Xuexi platform
/// names it (unit names, or aliases of the units), in every unit, with the points they earn a day on
/// average. A 7000-point year is 19.2 a day: some members keep ahead of
/// the pro-rated target, some fall behind, whatever the day.
const XUEXI_MEMBERS: &[(&str, &[(&str, u32)])] = &[
    (
        "某县自然资源局党支部",
        &[("张伟", 24), ("王芳", 17), ("李强", 21), ("刘洋", 13)],
    ),
    ("县委宣传部", &[("陈静", 26), ("杨帆", 20), ("赵敏", 16)]),
    ("卫生健康局", &[("黄磊", 22), ("周婷", 15), ("吴昊", 19)]),
    (
        "城关镇",
        &[("徐明", 23), ("孙丽", 12), ("马超", 21), ("朱琳", 18)],
    ),
    ("某县教育局", &[("郭勇", 25), ("何静", 14)]),
    ("某县第一中学", &[("林峰", 22), ("罗娟", 20), ("高翔", 11)]),
    ("中心小学", &[("郑爽", 27), ("梁宇", 16)]),
    ("自然资源局办公室", &[("宋佳", 20), ("韩冰", 15)]),
    ("测绘股", &[("冯涛", 23), ("曹颖", 17)]),
    ("东村", &[("彭亮", 18), ("董梅", 21)]),
    ("新河镇", &[("袁刚", 24), ("邓洁", 13)]),
    ("西村", &[("许峰", 19), ("傅敏", 22)]),
    ("新河镇中学", &[("沈阳", 25), ("曾琪", 14)]),
];

/// A member's points of the year up to `day` (本年积分), about `rate` a day.
fn points_to_date(name: &str, rate: u32, day: NaiveDate) -> u64 {
    let days = u64::from(day.ordinal());
    // A few points either way, so that the figures do not look computed.
    let wobble = activity(name, day, 9);
    (u64::from(rate) * days + wobble).saturating_sub(4)
}

/// The administrator's two exports, dated by their title rows as the admin
/// console writes them (no date column): a GBK CSV as of the previous
/// quarter's last day, so that the previous quarter's report has 学习强国
/// figures, and an XLSX as of today for the current quarter, with a column
/// of members' last study days, which is not the export's date.
fn write_xuexi_sheets(dir: &Path, today: NaiveDate) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let last_quarter_end = Period::containing(PeriodKind::Quarter, today)
        .previous()
        .end;
    let mut csv =
        format!("某县学习强国积分统计（截至{last_quarter_end}）,,,\n序号,姓名,所属组织,本年积分\n");
    let mut n = 0;
    for (org, members) in XUEXI_MEMBERS {
        for (name, rate) in *members {
            n += 1;
            let points = points_to_date(name, *rate, last_quarter_end);
            csv.push_str(&format!("{n},{name},{org},{points}\n"));
        }
    }
    let (gbk, _, _) = encoding_rs::GBK.encode(&csv);
    std::fs::write(dir.join("county-points-last-quarter.csv"), &gbk)
        .with_context(|| format!("writing {}", dir.display()))?;

    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    let xlsx = |e: rust_xlsxwriter::XlsxError| anyhow::anyhow!("writing the demo XLSX: {e}");
    let title = format!(
        "学习积分统计（统计时间：{}年1月1日至{}年{}月{}日）",
        today.year(),
        today.year(),
        today.month(),
        today.day()
    );
    sheet.write(0, 0, title).map_err(xlsx)?;
    let headers = ["序号", "学员姓名", "学习组织", "本年积分", "最近学习日期"];
    for (col, header) in headers.iter().enumerate() {
        sheet.write(1, col as u16, *header).map_err(xlsx)?;
    }
    let mut row = 2;
    for (org, members) in XUEXI_MEMBERS {
        for (name, rate) in *members {
            let last_study = today - chrono::Days::new(activity(name, today, 4));
            sheet.write(row, 0, f64::from(row - 1)).map_err(xlsx)?;
            sheet.write(row, 1, *name).map_err(xlsx)?;
            sheet.write(row, 2, *org).map_err(xlsx)?;
            sheet
                .write(row, 3, points_to_date(name, *rate, today) as f64)
                .map_err(xlsx)?;
            sheet.write(row, 4, last_study.to_string()).map_err(xlsx)?;
            row += 1;
        }
    }
    book.save(dir.join("county-points.xlsx")).map_err(xlsx)?;
    Ok(())
}

/// The exec plugin's demo script, executable.
fn write_script(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("meetings.sh");
    std::fs::write(&path, DEMO_SCRIPT).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use calamine::{Reader, Xlsx};

    /// (met, total) of the members' 本年积分 against 7000 a year pro-rated to `day`.
    fn met(points: &[f64], day: NaiveDate) -> (usize, usize) {
        let year_days = if day.leap_year() { 366.0 } else { 365.0 };
        let threshold = 7000.0 * f64::from(day.ordinal()) / year_days;
        (
            points.iter().filter(|p| **p >= threshold).count(),
            points.len(),
        )
    }

    #[test]
    fn xuexi_sheets_are_dated_by_their_titles_and_some_members_meet_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let today = NaiveDate::from_ymd_opt(2026, 11, 15).unwrap();
        write_xuexi_sheets(dir.path(), today).unwrap();

        let bytes = std::fs::read(dir.path().join("county-points-last-quarter.csv")).unwrap();
        let (text, _, bad) = encoding_rs::GBK.decode(&bytes);
        assert!(!bad);
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("某县学习强国积分统计（截至2026-09-30）,,,")
        );
        assert_eq!(lines.next(), Some("序号,姓名,所属组织,本年积分"));
        let last_quarter: Vec<f64> = lines
            .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
            .collect();
        let (m, n) = met(&last_quarter, NaiveDate::from_ymd_opt(2026, 9, 30).unwrap());
        let members: usize = XUEXI_MEMBERS.iter().map(|(_, m)| m.len()).sum();
        assert_eq!(n, members);
        assert!(m > 0 && m < n, "{m}/{n} meet the target");

        let mut book: Xlsx<_> =
            calamine::open_workbook(dir.path().join("county-points.xlsx")).unwrap();
        let range = book.worksheet_range_at(0).unwrap().unwrap();
        let rows: Vec<Vec<String>> = range
            .rows()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect();
        assert_eq!(
            rows[0][0],
            "学习积分统计（统计时间：2026年1月1日至2026年11月15日）"
        );
        assert_eq!(rows[1][3], "本年积分");
        let now: Vec<f64> = rows[2..].iter().map(|r| r[3].parse().unwrap()).collect();
        assert_eq!(now.len(), members);
        let (m, n) = met(&now, today);
        assert!(m > 0 && m < n, "{m}/{n} meet the target");
        // Year to date: every member has more points now than at the quarter's end.
        assert!(now.iter().zip(&last_quarter).all(|(a, b)| a > b));
    }
}
