//! The replicas part of `tally-bench` (issue 13): three `tallyd run` on one
//! PostgreSQL database (a throwaway cluster of this process, fsync on)
//! share N `http_json` sources polled every 10 s; then one SQLite daemon
//! polls the same sources alone. The sources are a local HTTP server in
//! this process answering the JSON the peer harness's fake sources answer.
//!
//! Measured from what the stores recorded, the same way for both: each
//! scheduled run's start against its tick (ticks fall on multiples of
//! 10 s, so a run's tick is its start rounded down; a run later than 10 s
//! shows as a missed tick), ticks with no run, and CPU time of each daemon
//! process (`/proc/PID/stat`, load-independent) per run it made.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use tally_store::{PostgresStore, SqliteStore, Store};

use super::{Args, percentiles};

const INTERVAL_SECS: i64 = 10;
const REPLICAS: usize = 3;
/// Time after the daemons answer before the window opens: their first
/// ticks, and the start-up runs, are over by then.
const SETTLE_SECS: u64 = 25;

/// Kills its process (and reaps it) however the part ends.
struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// CPU seconds the process has used (user + system).
    fn cpu_secs(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name, which may hold spaces: the 14th
        // and 15th of the line are the 12th and 13th after its `)`.
        let rest = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
        Ok(ticks / clock_ticks())
    }
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One `GET path` on 127.0.0.1: the status and the body.
fn get(port: u16, path: &str) -> Option<(u16, Vec<u8>)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let status = std::str::from_utf8(buf.get(9..12)?).ok()?.parse().ok()?;
    let body = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    Some((status, buf[body..].to_vec()))
}

/// The peers' fake sources: `/src/<i>.json` answers three counters that
/// grow with every request.
fn serve_sources(runtime: &tokio::runtime::Runtime) -> Result<u16> {
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    let served = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let served = served.clone();
        async move {
            let n = served.fetch_add(1, Ordering::Relaxed);
            let i: u64 = uri
                .path()
                .strip_prefix("/src/")
                .and_then(|p| p.strip_suffix(".json"))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            axum::Json(serde_json::json!({
                "list": [{
                    "int_page_read_count": 1_000 + i + n,
                    "share_count": i + n / 7,
                    "add_to_fav_count": i % 13 + n / 11,
                }]
            }))
        }
    });
    runtime.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(port)
}

/// A configuration with `n` sources `src<i>`, each its own unit, polling
/// `/src/<i>.json` every 10 s for three counters.
fn config_text(
    n: usize,
    src_port: u16,
    listen: u16,
    data: &Path,
    plugins: &Path,
    store: Option<&str>,
) -> String {
    let mut t = format!(
        "[daemon]\nlisten = \"127.0.0.1:{listen}\"\ntimezone = \"Asia/Shanghai\"\n\
         data_dir = {:?}\nplugin_dirs = [{:?}]\n\n",
        data.display().to_string(),
        plugins.display().to_string(),
    );
    if let Some(url) = store {
        t.push_str(&format!("[store]\nurl = {url:?}\n\n"));
    }
    for (id, name) in [
        ("reads", "int_page_read_count"),
        ("shares", "share_count"),
        ("favs", "add_to_fav_count"),
    ] {
        t.push_str(&format!(
            "[[indicators]]\nid = \"{id}\"\nname = \"{name}\"\nkind = \"count\"\nunit = \"次\"\n\n"
        ));
    }
    for i in 0..n {
        t.push_str(&format!(
            "[[units]]\nid = \"src{i}\"\nname = \"source {i}\"\n\n"
        ));
    }
    for i in 0..n {
        t.push_str(&format!(
            "[[sources]]\nid = \"src{i}\"\nplugin = \"http_json\"\nunit = \"src{i}\"\n\
             schedule = \"*/{INTERVAL_SECS} * * * * *\"\n\
             [sources.settings]\nurl = \"http://127.0.0.1:{src_port}/src/{i}.json\"\n\
             values = [\n  {{ indicator = \"reads\", path = \"$.list[0].int_page_read_count\" }},\n  \
             {{ indicator = \"shares\", path = \"$.list[0].share_count\" }},\n  \
             {{ indicator = \"favs\", path = \"$.list[0].add_to_fav_count\" }},\n]\n\n"
        ));
    }
    t
}

/// The directory of this binary, where the build put `tallyd` and the
/// bundled plugins too.
fn build_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .context("tally-bench's directory")?
        .to_path_buf())
}

/// A directory holding only the http_json plugin, as the loader wants it:
/// not writable by group or others.
fn plugin_dir(build: &Path, dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let plugins = dir.join("plugins");
    let lib = format!(
        "{}tally_http_json{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    std::fs::create_dir_all(&plugins)?;
    std::fs::copy(build.join(&lib), plugins.join(&lib)).with_context(|| {
        format!(
            "copying {} (build the workspace first)",
            build.join(&lib).display()
        )
    })?;
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(plugins.join(&lib), std::fs::Permissions::from_mode(0o755))?;
    Ok(plugins)
}

fn start(build: &Path, config: &Path, log: &Path, port: u16) -> Result<Daemon> {
    let child = Command::new(build.join("tallyd"))
        // The environment config/tally.service gives it, as deployed.
        .env("MALLOC_ARENA_MAX", "1")
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .with_context(|| format!("starting {}", build.join("tallyd").display()))?;
    let mut d = Daemon { child };
    let t0 = Instant::now();
    while !matches!(get(port, "/metrics"), Some((200, _))) {
        if t0.elapsed() > Duration::from_secs(120) || d.child.try_wait()?.is_some() {
            bail!("tallyd did not answer /metrics; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(d)
}

/// What one deployment did in the window.
struct Window {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    /// CPU seconds of each daemon over the window.
    cpu: Vec<f64>,
}

/// Waits for the first runs, then measures `secs` seconds of the daemons.
fn window(daemons: &[Daemon], secs: u64) -> Result<Window> {
    std::thread::sleep(Duration::from_secs(SETTLE_SECS));
    let before: Vec<f64> = daemons
        .iter()
        .map(Daemon::cpu_secs)
        .collect::<Result<_>>()?;
    let from = Utc::now();
    std::thread::sleep(Duration::from_secs(secs));
    let to = Utc::now();
    let after: Vec<f64> = daemons
        .iter()
        .map(Daemon::cpu_secs)
        .collect::<Result<_>>()?;
    Ok(Window {
        from,
        to,
        cpu: after.iter().zip(&before).map(|(a, b)| a - b).collect(),
    })
}

/// Lateness of scheduled runs' starts in the window and ticks without a run.
struct Timing {
    runs: usize,
    late_ms: Vec<f64>,
    missed: usize,
    expected: usize,
    twice: usize,
}

fn timing(store: &dyn Store, n: usize, w: &Window) -> Result<Timing> {
    let tick_ms = INTERVAL_SECS * 1000;
    let (from, to) = (w.from.timestamp_millis(), w.to.timestamp_millis());
    // Ticks inside the window whose runs the window can hold whole.
    let first = from.div_euclid(tick_ms) * tick_ms + tick_ms;
    let ticks: BTreeSet<i64> = (first..to - tick_ms).step_by(tick_ms as usize).collect();
    let mut t = Timing {
        runs: 0,
        late_ms: Vec::new(),
        missed: 0,
        expected: ticks.len() * n,
        twice: 0,
    };
    for i in 0..n {
        let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
        for r in store.recent_runs(&format!("src{i}"), 200)? {
            let start = r.run.started_at.timestamp_millis();
            if r.run.trigger != "schedule" || !(from..to).contains(&start) {
                continue;
            }
            let tick = start.div_euclid(tick_ms) * tick_ms;
            if ticks.contains(&tick) {
                t.runs += 1;
                t.late_ms.push((start - tick) as f64);
                *seen.entry(tick).or_default() += 1;
            }
        }
        t.missed += ticks.len() - seen.len();
        t.twice += seen.values().filter(|&&c| c > 1).count();
    }
    Ok(t)
}

fn timing_row(what: &str, t: &Timing) -> (String, String) {
    let max = t.late_ms.iter().copied().fold(0.0, f64::max);
    let (p50, p99) = if t.late_ms.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        percentiles(t.late_ms.clone())
    };
    (
        format!(
            "{what}: scheduled runs' start after their tick, p50 / p99 / max; ticks missed (of those expected); ticks run twice"
        ),
        format!(
            "{p50:.0} / {p99:.0} / {max:.0} ms; {} of {}; {}",
            t.missed, t.expected, t.twice
        ),
    )
}

/// Where a claimed run's time goes, p50 / p99 over the window's finished
/// claims: tick to claim, claim to the run's start (spawn, permit, resume
/// read), the run (plugin call), and the run's end to its claim finished
/// (commit, answer, finish), from the database's and the runs' clocks.
fn phases(client: &mut postgres::Client, w: &Window) -> Result<(String, String)> {
    let row = client.query_one(
        "WITH p AS ( \
           SELECT extract(epoch FROM c.claimed_at - c.tick_at) * 1e3 AS claim, \
                  r.started_at - extract(epoch FROM c.claimed_at) * 1e3 AS start, \
                  r.finished_at - r.started_at AS run, \
                  extract(epoch FROM c.finished_at) * 1e3 - r.finished_at AS done \
             FROM source_run c \
             JOIN LATERAL (SELECT started_at, finished_at FROM runs r \
                   WHERE r.source = c.source_id \
                     AND r.started_at >= extract(epoch FROM c.claimed_at) * 1e3 - 50 \
                   ORDER BY r.started_at LIMIT 1) r ON TRUE \
            WHERE c.claimed_at >= $1 AND c.claimed_at < $2 AND c.finished_at IS NOT NULL) \
         SELECT count(*), \
                percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY claim), \
                percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY start), \
                percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY run), \
                percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY done) \
           FROM p",
        &[&w.from, &w.to],
    )?;
    let n: i64 = row.get(0);
    let p = |i: usize| -> String {
        let v: Option<Vec<f64>> = row.get(i);
        match v.as_deref() {
            Some([p50, p99]) => format!("{p50:.0} / {p99:.0}"),
            _ => "—".to_owned(),
        }
    };
    Ok((
        "replicas: a claimed run's phases, p50 / p99 ms: tick → claim, claim → start, run, end → claim finished (claims)".to_owned(),
        format!("{}; {}; {}; {} ({n})", p(1), p(2), p(3), p(4)),
    ))
}

/// The replica's owner id (`host-PID-random`), from its heartbeat row: a
/// loaded machine may take longer than a client's timeout to list 3,000
/// sources in `/api/v1/sources`.
fn owner(d: &Daemon, client: &mut postgres::Client) -> Result<String> {
    let pid = format!("-{}-", d.child.id());
    let t0 = Instant::now();
    loop {
        let rows = client.query("SELECT owner FROM lease WHERE name LIKE 'replica:%'", &[])?;
        if let Some(owner) = rows
            .iter()
            .map(|r| r.get::<_, String>(0))
            .find(|o| o.contains(&pid))
        {
            return Ok(owner);
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("no heartbeat of the replica with pid {}", d.child.id());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub(crate) fn section(args: &Args, dir: &Path) -> Result<Vec<(String, String)>> {
    let n = args.replica_sources;
    let build = build_dir()?;
    let dir = dir.join("replicas");
    std::fs::create_dir_all(&dir)?;
    let plugins = plugin_dir(&build, &dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let src_port = serve_sources(&runtime)?;
    let mut rows = Vec::new();

    eprintln!("tally-bench: starting a PostgreSQL cluster (fsync on) for {REPLICAS} replicas");
    let (url, conninfo) = tally_store::pg_test_cluster::durable_database();
    let mut replicas = Vec::new();
    for r in 0..REPLICAS {
        let port = free_port()?;
        let config = dir.join(format!("r{r}.toml"));
        std::fs::write(
            &config,
            config_text(
                n,
                src_port,
                port,
                &dir.join(format!("data-r{r}")),
                &plugins,
                Some(&url),
            ),
        )?;
        replicas.push(start(
            &build,
            &config,
            &dir.join(format!("r{r}.log")),
            port,
        )?);
        eprintln!("tally-bench: replica r{r} answers");
    }
    let mut client = postgres::Client::connect(&conninfo, postgres::NoTls)?;
    let owners: Vec<String> = replicas
        .iter()
        .map(|d| owner(d, &mut client))
        .collect::<Result<_>>()?;
    let w = window(&replicas, args.replica_secs)?;
    // Runs each replica claimed in the window: its fetches.
    let claimed: BTreeMap<String, i64> = client
        .query(
            "SELECT owner, count(*) FROM source_run \
             WHERE claimed_at >= $1 AND claimed_at < $2 GROUP BY owner",
            &[&w.from, &w.to],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let rerun: i64 = client
        .query_one(
            "SELECT count(*) FROM source_run WHERE tick_at >= $1 AND tick_at < $2 AND rerun",
            &[&w.from, &w.to],
        )?
        .get(0);
    let phases = phases(&mut client, &w)?;
    drop(replicas);
    let store = PostgresStore::open(&url)?;
    let t = timing(&store, n, &w)?;
    drop(store);
    let secs = (w.to - w.from).as_seconds_f64();
    rows.push(timing_row(
        &format!("{REPLICAS} replicas on PostgreSQL, {secs:.0} s"),
        &t,
    ));
    rows.push(phases);
    let mut all_cpu = 0.0;
    let mut all_runs = 0;
    for (r, (owner, cpu)) in owners.iter().zip(&w.cpu).enumerate() {
        let runs = claimed.get(owner).copied().unwrap_or(0);
        all_cpu += cpu;
        all_runs += runs;
        rows.push((
            format!("replica r{r}: runs claimed in the window, CPU, CPU per fetch"),
            format!(
                "{runs}, {cpu:.2} s, {} ms",
                if runs > 0 {
                    format!("{:.3}", 1e3 * cpu / runs as f64)
                } else {
                    "—".to_owned()
                }
            ),
        ));
    }
    rows.push((
        format!("{REPLICAS} replicas together: fetches/s (expected), CPU per fetch, runs re-run after a lease ran out"),
        format!(
            "{:.1} ({:.1}), {:.3} ms, {rerun}",
            all_runs as f64 / secs,
            n as f64 / INTERVAL_SECS as f64,
            if all_runs > 0 { 1e3 * all_cpu / all_runs as f64 } else { f64::NAN }
        ),
    ));

    eprintln!("tally-bench: one SQLite daemon with the same {n} sources");
    let port = free_port()?;
    let config = dir.join("sqlite.toml");
    let data = dir.join("data-sqlite");
    std::fs::write(
        &config,
        config_text(n, src_port, port, &data, &plugins, None),
    )?;
    let alone = start(&build, &config, &dir.join("sqlite.log"), port)?;
    let w = window(std::slice::from_ref(&alone), args.replica_secs)?;
    drop(alone);
    let store = SqliteStore::open(&data)?;
    let t = timing(&store, n, &w)?;
    let secs = (w.to - w.from).as_seconds_f64();
    rows.push(timing_row(&format!("one SQLite daemon, {secs:.0} s"), &t));
    rows.push((
        "one SQLite daemon: runs in the window, CPU, CPU per fetch".to_owned(),
        format!(
            "{}, {:.2} s, {:.3} ms",
            t.runs,
            w.cpu[0],
            if t.runs > 0 {
                1e3 * w.cpu[0] / t.runs as f64
            } else {
                f64::NAN
            }
        ),
    ));
    Ok(rows)
}
