//! `cargo xtask bench`: every figure of issue 7 in one run, on this machine,
//! printed as one Markdown report (and kept in `target/bench/report.md`).
//!
//! 1. Library figures: `tally-bench` (ingest vs raw SQLite, summaries,
//!    exposition), run as a release binary.
//! 2. Start: process start to the first `/metrics` answer, 1,000 sources.
//! 3. Collection: the peer harness of `../shared/bench/peer` (`run.sh`) runs
//!    collectd, the Python exporter and tallyd one after the other on the same
//!    fake JSON sources and measures all three the same way; tallyd is its
//!    `custom` peer, polling with the bundled `http_json` plugin and storing
//!    every observation. The report lays the three side by side with ratios.
//!
//! Benchmarks, not tests: nothing here fails on a slow figure.
// Elapsed wall time is what a benchmark measures; clippy.toml bans the clock
// for the daemon, where time must follow the tests' clocks.
#![allow(clippy::disallowed_methods)]

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Failure, Result, Workspace, run};

pub const USAGE: &str = "\
usage: cargo xtask bench [--quick] [--n LIST] [--duration SECS] [--skip PART]... [-- TALLY_BENCH_ARGS]

  --n LIST         source counts for the collection runs (default 100,1000,10000)
  --duration SECS  measurement window of each collection run (default 60)
  --quick          --n 100,1000 --duration 30, and tally-bench --days 120 --reps 10
                   --replica-secs 30
  --skip PART      leave out `library` (tally-bench), `criterion` (the hot-path
                   benches), `start` or `collection`; or, of tally-bench, `postgres`
                   (its PostgreSQL figures) or `replicas` (three tallyd on one
                   PostgreSQL database beside one SQLite daemon, 3,000 sources)
  --peers DIR      the peer harness (default ../shared/bench/peer beside the checkout,
                   or $TALLY_PEER_BENCH)";

/// The fake sources' first port; run.sh uses 18080 and 9103..9105.
const START_SRC_PORT: u16 = 18090;
const START_PORT: u16 = 9106;
const COLLECT_PORT: u16 = 9105;
const RUN_SH_SRC_PORT: u16 = 18080;
const START_SOURCES: usize = 1_000;
const START_REPS: usize = 9;
const INTERVAL_SECS: u32 = 10;
/// tallyd runs with the environment `config/tally.service` gives it, as deployed.
const SERVICE_ENV: &[(&str, &str)] = &[
    ("MALLOC_ARENA_MAX", "1"),
    ("MALLOC_MMAP_THRESHOLD_", "4194304"),
    ("MALLOC_TRIM_THRESHOLD_", "4194304"),
];

struct Args {
    ns: Vec<usize>,
    duration: u32,
    library: bool,
    criterion: bool,
    start: bool,
    collection: bool,
    peers: Option<PathBuf>,
    library_args: Vec<OsString>,
    /// `--skip postgres` / `--skip replicas`, passed on to tally-bench.
    library_skips: Vec<OsString>,
}

fn fail(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        code: 1,
    }
}

fn parse(extra: &[OsString]) -> Result<Args> {
    let mut args = Args {
        ns: vec![100, 1_000, 10_000],
        duration: 60,
        library: true,
        criterion: true,
        start: true,
        collection: true,
        peers: None,
        library_args: Vec::new(),
        library_skips: Vec::new(),
    };
    let mut quick = false;
    let mut it = extra.iter();
    while let Some(flag) = it.next() {
        let flag = flag.to_string_lossy();
        let mut value = || {
            it.next()
                .map(|v| v.to_string_lossy().into_owned())
                .ok_or_else(|| fail(format!("{flag} needs a value\n\n{USAGE}")))
        };
        match flag.as_ref() {
            "--" => {
                args.library_args = it.by_ref().cloned().collect();
                break;
            }
            "--quick" => quick = true,
            "--n" => {
                args.ns = value()?
                    .split(',')
                    .map(|n| n.trim().parse::<usize>().ok().filter(|&n| n > 0))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        fail(format!(
                            "--n takes positive numbers like 100,1000\n\n{USAGE}"
                        ))
                    })?;
            }
            "--duration" => {
                args.duration = value()?
                    .parse()
                    .ok()
                    .filter(|&d| d > 0)
                    .ok_or_else(|| fail(format!("--duration takes seconds > 0\n\n{USAGE}")))?;
            }
            "--skip" => match value()?.as_str() {
                "library" => args.library = false,
                "criterion" => args.criterion = false,
                "start" => args.start = false,
                "collection" => args.collection = false,
                part @ ("postgres" | "replicas") => args
                    .library_skips
                    .extend(["--skip", part].map(OsString::from)),
                other => {
                    return Err(fail(format!(
                        "--skip takes library, criterion, start, collection, postgres or replicas, not {other:?}\n\n{USAGE}"
                    )));
                }
            },
            "--peers" => args.peers = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(fail(format!("unknown argument {other:?}\n\n{USAGE}"))),
        }
    }
    if quick {
        if !extra.iter().any(|a| a == "--n") {
            args.ns = vec![100, 1_000];
        }
        if !extra.iter().any(|a| a == "--duration") {
            args.duration = 30;
        }
        if args.library_args.is_empty() {
            args.library_args = ["--days", "120", "--reps", "10", "--replica-secs", "30"]
                .map(OsString::from)
                .to_vec();
        }
    }
    Ok(args)
}

pub fn bench(ws: &Workspace, extra: &[OsString]) -> Result {
    let args = parse(extra)?;
    run("build", ws.cargo(["build", "--release", "--workspace"]))?;
    let release = ws.target.join("release");
    let out = ws.target.join("bench");
    std::fs::create_dir_all(&out)
        .map_err(|e| fail(format!("cannot create {}: {e}", out.display())))?;
    let mut report = format!("## Benchmarks — {}, {}\n\n", today(), machine());

    if args.library {
        let mut cmd = Command::new(release.join("tally-bench"));
        cmd.args(&args.library_args)
            .args(&args.library_skips)
            .current_dir(&ws.root);
        eprintln!("xtask: {}", crate::shown(&cmd));
        let output = cmd
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| fail(format!("cannot start tally-bench: {e}")))?;
        if !output.status.success() {
            return Err(fail(format!("tally-bench failed ({})", output.status)));
        }
        report.push_str("### Store, summaries, exposition (`tally-bench`)\n\n");
        report.push_str(&String::from_utf8_lossy(&output.stdout));
        report.push('\n');
    }

    if args.criterion {
        let mut cmd = ws.cargo(["bench", "-p", "tally-daemon", "--bench", "hot_paths"]);
        eprintln!("xtask: {}", crate::shown(&cmd));
        let output = cmd
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| fail(format!("cannot start cargo bench: {e}")))?;
        if !output.status.success() {
            return Err(fail(format!("cargo bench failed ({})", output.status)));
        }
        report.push_str(&criterion_section(&String::from_utf8_lossy(&output.stdout)));
    }

    let peers = peer_dir(ws, args.peers.as_deref());
    if args.start {
        report.push_str(&start_section(&release, &out, peers.as_deref())?);
    }
    if args.collection {
        match &peers {
            Some(dir) => report.push_str(&collection_section(&release, &out, dir, &args)?),
            None => report.push_str(
                "### Collection\n\nleft out: the peer harness (`../shared/bench/peer/run.sh`) is not here; \
                 give it with --peers DIR or $TALLY_PEER_BENCH.\n\n",
            ),
        }
    }

    let path = out.join("report.md");
    std::fs::write(&path, &report)
        .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
    println!("{report}");
    eprintln!("xtask: the report is in {}", path.display());
    Ok(())
}

/// Criterion's estimate per bench (the middle of `time: [low estimate high]`).
fn criterion_section(out: &str) -> String {
    let mut t = String::from(
        "### Hot paths (`cargo bench -p tally-daemon --bench hot_paths`, criterion)\n\n\
         | bench | time |\n|---|---:|\n",
    );
    let mut name = "";
    for line in out.lines() {
        match line.split_once("time:") {
            Some((before, times)) => {
                let before = before.trim();
                let bench = if before.is_empty() { name } else { before };
                let figures: Vec<&str> = times
                    .trim()
                    .trim_matches(['[', ']'])
                    .split_whitespace()
                    .collect();
                if let [_, _, mid, unit, ..] = figures.as_slice() {
                    let _ = writeln!(t, "| {bench} | {mid} {unit} |");
                }
            }
            None if !line.trim().is_empty() => name = line.trim(),
            None => {}
        }
    }
    t.push('\n');
    t
}

/// The peer harness: --peers, $TALLY_PEER_BENCH, or `shared/bench/peer` beside the checkout.
fn peer_dir(ws: &Workspace, given: Option<&Path>) -> Option<PathBuf> {
    let dir = given
        .map(Path::to_path_buf)
        .or_else(|| crate::env_os("TALLY_PEER_BENCH").map(PathBuf::from))
        .or_else(|| ws.root.parent().map(|p| p.join("shared/bench/peer")))?;
    dir.join("run.sh").is_file().then_some(dir)
}

fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cpus} vCPU ({model}), {mem_gib:.0} GiB")
}

/// A tallyd configuration with `n` http_json sources `src<i>`, each its own
/// root unit `src<i>`, polling `http://127.0.0.1:<port>/src/<i>.json` every
/// 10 s for the three values the peers pick.
pub fn peer_config(n: usize, src_port: u16, listen: u16, dir: &Path, plugins: &Path) -> String {
    let mut t = String::with_capacity(n * 420);
    let _ = write!(
        t,
        "[daemon]\nlisten = \"127.0.0.1:{listen}\"\ntimezone = \"Asia/Shanghai\"\n\
         data_dir = {:?}\nplugin_dirs = [{:?}]\n\n",
        dir.join("data").display().to_string(),
        plugins.display().to_string(),
    );
    for (id, name) in [
        ("reads", "int_page_read_count"),
        ("shares", "share_count"),
        ("favs", "add_to_fav_count"),
    ] {
        let _ = write!(
            t,
            "[[indicators]]\nid = \"{id}\"\nname = \"{name}\"\nkind = \"count\"\nunit = \"次\"\n\n"
        );
    }
    for i in 0..n {
        let _ = write!(t, "[[units]]\nid = \"src{i}\"\nname = \"source {i}\"\n\n");
    }
    for i in 0..n {
        let _ = write!(
            t,
            "[[sources]]\nid = \"src{i}\"\nplugin = \"http_json\"\nunit = \"src{i}\"\n\
             schedule = \"*/{INTERVAL_SECS} * * * * *\"\n\
             [sources.settings]\nurl = \"http://127.0.0.1:{src_port}/src/{i}.json\"\n\
             values = [\n  {{ indicator = \"reads\", path = \"$.list[0].int_page_read_count\" }},\n  \
             {{ indicator = \"shares\", path = \"$.list[0].share_count\" }},\n  \
             {{ indicator = \"favs\", path = \"$.list[0].add_to_fav_count\" }},\n]\n\n"
        );
    }
    t
}

/// A directory holding only the http_json plugin, as the loader wants it:
/// not writable by group or others.
fn plugin_dir(release: &Path, out: &Path) -> Result<PathBuf> {
    let dir = out.join("plugins");
    let lib = format!(
        "{}tally_http_json{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let io = |e: std::io::Error| fail(format!("cannot prepare {}: {e}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(io)?;
    std::fs::copy(release.join(&lib), dir.join(&lib)).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        std::fs::set_permissions(dir.join(&lib), std::fs::Permissions::from_mode(0o755))
            .map_err(io)?;
    }
    Ok(dir)
}

/// `out/name`, emptied, with the http_json plugin directory in it.
fn section_dir(release: &Path, out: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    let dir = out.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    let plugins = plugin_dir(release, &dir)?;
    Ok((dir, plugins))
}

/// Kills its process (and reaps it) however the section ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One `GET path`; the status code once the whole body has arrived.
fn get(port: u16, path: &str) -> Option<(u16, usize)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let status = std::str::from_utf8(buf.get(9..12)?).ok()?.parse().ok()?;
    Some((status, buf.len()))
}

fn start_section(release: &Path, out: &Path, peers: Option<&Path>) -> Result<String> {
    let (dir, plugins) = section_dir(release, out, "start")?;
    // With the peers' fake source the sources' first runs really fetch while
    // the daemon starts; without it they fail fast on a closed port.
    let _source = match peers {
        Some(p) => {
            let child = Command::new("python3")
                .arg(p.join("fake_source.py"))
                .args([
                    "--n",
                    &START_SOURCES.to_string(),
                    "--port",
                    &START_SRC_PORT.to_string(),
                ])
                .args(["--max-seconds", "300"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| fail(format!("cannot start fake_source.py: {e}")))?;
            let child = Reaped(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            while get(START_SRC_PORT, "/healthz").is_none() {
                if Instant::now() > deadline {
                    return Err(fail("fake_source.py did not answer within 10 s"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Some(child)
        }
        None => None,
    };
    let config = dir.join("tally.toml");
    std::fs::write(
        &config,
        peer_config(START_SOURCES, START_SRC_PORT, START_PORT, &dir, &plugins),
    )
    .map_err(|e| fail(format!("cannot write {}: {e}", config.display())))?;
    let mut ms = Vec::with_capacity(START_REPS);
    for rep in 0..START_REPS {
        // A fresh store each time: the first start of a new deployment,
        // which also creates the database and registers every source.
        let _ = std::fs::remove_dir_all(dir.join("data"));
        let log = std::fs::File::create(dir.join(format!("tallyd-{rep}.log")))
            .map_err(|e| fail(format!("cannot create a log in {}: {e}", dir.display())))?;
        let t0 = Instant::now();
        let child = Command::new(release.join("tallyd"))
            .envs(SERVICE_ENV.iter().copied())
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| fail(format!("cannot start tallyd: {e}")))?;
        let mut child = Reaped(child);
        let answered = loop {
            if let Some((200, _)) = get(START_PORT, "/metrics") {
                break Some(t0.elapsed());
            }
            if t0.elapsed() > Duration::from_secs(20) || child.0.try_wait().ok().flatten().is_some()
            {
                break None;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        drop(child);
        match answered {
            Some(d) => ms.push(d.as_secs_f64() * 1000.0),
            None => {
                return Err(fail(format!(
                    "tallyd did not answer /metrics within 20 s; see {}",
                    dir.join(format!("tallyd-{rep}.log")).display()
                )));
            }
        }
    }
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    let max = ms[ms.len() - 1];
    Ok(format!(
        "### Start\n\n| benchmark | figure |\n|---|---|\n\
         | process start → first `/metrics` answer, {START_SOURCES} sources, fresh store ({START_REPS} starts) | \
         median {median:.0} ms, max {max:.0} ms (target < 300 ms) |\n\n"
    ))
}

/// One peer's line of run.sh's summary.
#[derive(Debug, Clone)]
struct PeerRow {
    peer: String,
    n: usize,
    dur: f64,
    cpu_s: f64,
    rss_med: f64,
    rss_peak: f64,
    threads: String,
    fds: String,
    series: String,
    fetch_rate: f64,
    expected_rate: f64,
    scrapes: String,
    p50: Option<f64>,
    p99: Option<f64>,
    bytes: String,
    promtool: String,
}

impl PeerRow {
    fn parse(line: &str) -> Option<PeerRow> {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 20 || f[0] == "peer" {
            return None;
        }
        let (rate, expected) = f[12].split_once('(')?;
        let num = |s: &str| s.parse::<f64>().ok();
        Some(PeerRow {
            peer: f[0].to_owned(),
            n: f[1].parse().ok()?,
            dur: num(f[3])?,
            cpu_s: num(f[4])?,
            rss_med: num(f[6])?,
            rss_peak: num(f[7])?,
            threads: f[8].to_owned(),
            fds: f[9].to_owned(),
            series: f[10].to_owned(),
            fetch_rate: num(rate)?,
            expected_rate: num(expected.trim_end_matches(')'))?,
            scrapes: f[13].to_owned(),
            p50: num(f[14]),
            p99: num(f[15]),
            bytes: f[16].to_owned(),
            promtool: f[19..].join(" "),
        })
    }

    fn cpu_per_fetch_ms(&self) -> Option<f64> {
        let fetches = self.fetch_rate * self.dur;
        (fetches > 0.0).then(|| 1000.0 * self.cpu_s / fetches)
    }
}

fn collection_section(release: &Path, out: &Path, peers: &Path, args: &Args) -> Result<String> {
    let (dir, plugins) = section_dir(release, out, "collection")?;
    let setup = peers.join("setup.sh");
    if setup.is_file() {
        let mut cmd = Command::new("bash");
        cmd.arg(&setup).env("BENCH_OUT", out.join("peer"));
        run("peer setup", cmd)?;
    }
    let mut rows: Vec<PeerRow> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for &n in &args.ns {
        let run_dir = dir.join(format!("N{n}"));
        std::fs::create_dir_all(&run_dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", run_dir.display())))?;
        let config = run_dir.join("tally.toml");
        std::fs::write(
            &config,
            peer_config(n, RUN_SH_SRC_PORT, COLLECT_PORT, &run_dir, &plugins),
        )
        .map_err(|e| fail(format!("cannot write {}: {e}", config.display())))?;
        let tallyd = release.join("tallyd");
        let mut cmd = Command::new("bash");
        cmd.arg(peers.join("run.sh"))
            .args([
                n.to_string(),
                INTERVAL_SECS.to_string(),
                args.duration.to_string(),
            ])
            .env("BENCH_OUT", out.join("peer"))
            .env("PEERS", "collectd python custom")
            // Scraped as Prometheus scrapes (issue 16): asking for gzip and
            // decompressing, every peer alike.
            .env("SCRAPE_GZIP", "1")
            .env("CUSTOM_PORT", COLLECT_PORT.to_string())
            .env(
                "CUSTOM_CMD",
                format!(
                    "env {} {} run --config {}",
                    SERVICE_ENV
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    tallyd.display(),
                    config.display()
                ),
            )
            .stderr(Stdio::inherit());
        eprintln!("xtask: {}", crate::shown(&cmd));
        let output = cmd
            .output()
            .map_err(|e| fail(format!("cannot start run.sh: {e}")))?;
        let text = String::from_utf8_lossy(&output.stdout);
        for line in text.lines() {
            match PeerRow::parse(line) {
                Some(mut row) => {
                    if row.peer == "custom" {
                        row.peer = "tallyd".to_owned();
                    }
                    rows.push(row);
                }
                None if line.contains("failed") => failed.push(line.trim().to_owned()),
                None => {}
            }
        }
        if !output.status.success() {
            failed.push(format!("run.sh N={n} ended with {}", output.status));
        }
    }
    Ok(collection_table(&rows, &failed, args.duration))
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.decimals$}"))
}

fn collection_table(rows: &[PeerRow], failed: &[String], duration: u32) -> String {
    let mut t = format!(
        "### Collection: N JSON sources every {INTERVAL_SECS} s, {duration} s window (`../shared/bench/peer/run.sh`)\n\n\
         tallyd polls with the `http_json` plugin and stores every observation durably \
         (SQLite, WAL, synchronous=FULL); collectd and the Python exporter store nothing. \
         Every peer is scraped as Prometheus scrapes, asking for gzip (`SCRAPE_GZIP=1`); \
         the body column is the bytes on the wire (compressed where the peer compresses).\n\n\
         | N | peer | CPU s | CPU per fetch | RSS median / peak | fetches/s (expected) | threads | fds | series | scrapes | scrape p50 / p99 | body | promtool |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    );
    for r in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {:.2} | {} ms | {:.1} / {:.1} MiB | {:.1} ({:.1}) | {} | {} | {} | {} | {} / {} ms | {} | {} |",
            r.n,
            r.peer,
            r.cpu_s,
            fmt_opt(r.cpu_per_fetch_ms(), 3),
            r.rss_med,
            r.rss_peak,
            r.fetch_rate,
            r.expected_rate,
            r.threads,
            r.fds,
            r.series,
            r.scrapes,
            fmt_opt(r.p50, 2),
            fmt_opt(r.p99, 2),
            r.bytes,
            r.promtool,
        );
    }
    let mut ratios = String::new();
    for tally in rows.iter().filter(|r| r.peer == "tallyd") {
        for peer in rows.iter().filter(|r| r.n == tally.n && r.peer != "tallyd") {
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
                _ => "—".to_owned(),
            };
            let _ = writeln!(
                ratios,
                "| {} | tallyd / {} | {} | {} | {} |",
                tally.n,
                peer.peer,
                ratio(tally.cpu_per_fetch_ms(), peer.cpu_per_fetch_ms()),
                ratio(Some(tally.rss_med), Some(peer.rss_med)),
                ratio(tally.p50, peer.p50),
            );
        }
    }
    if !ratios.is_empty() {
        t.push_str(
            "\n| N | ratio | CPU per fetch | RSS median | scrape p50 |\n|---:|---|---:|---:|---:|\n",
        );
        t.push_str(&ratios);
    }
    for f in failed {
        let _ = writeln!(t, "\n{f}");
    }
    t.push('\n');
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_run_sh_summary_line() {
        let line = "collectd    100  10   60    0.10    0.2     14.7     14.7    8   207    300    300     9.9(10.0)  50/50     0.78     1.32    30871       0.6        24 lint(rc=3)";
        let r = PeerRow::parse(line).unwrap();
        assert_eq!((r.peer.as_str(), r.n), ("collectd", 100));
        assert_eq!(
            (r.cpu_s, r.rss_med, r.fetch_rate, r.expected_rate),
            (0.10, 14.7, 9.9, 10.0)
        );
        assert_eq!((r.p50, r.p99), (Some(0.78), Some(1.32)));
        assert_eq!(r.promtool, "lint(rc=3)");
        // 0.10 s over 9.9/s × 60 s = 594 fetches.
        assert!((r.cpu_per_fetch_ms().unwrap() - 0.1683).abs() < 1e-3);
        let none = "collectd   1000  10   60    1.03    1.7     50.5     50.5    8  2006      -      -  105.4(100.0)   0/50        -        -        -       0.2         - n/a(no-scrape)";
        let r = PeerRow::parse(none).unwrap();
        assert_eq!((r.p50, r.scrapes.as_str()), (None, "0/50"));
        assert!(PeerRow::parse("peer N S dur cpu_s").is_none());
    }

    #[test]
    fn tallyd_is_measured_with_the_environment_of_its_service_unit() {
        let unit = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/tally.service"),
        )
        .unwrap();
        for (k, v) in SERVICE_ENV {
            assert!(
                unit.contains(&format!("\nEnvironment={k}={v}\n")),
                "{k}={v}"
            );
        }
    }

    #[test]
    fn reads_criterion_estimates() {
        let out = "store/record_runs: 100 polls, one commit\n                        time:   [2.7790 ms 2.8225 ms 2.8724 ms]\n\
                   metrics/run_finished    time:   [78.218 ns 78.353 ns 78.500 ns]\n";
        let t = criterion_section(out);
        assert!(
            t.contains("| store/record_runs: 100 polls, one commit | 2.8225 ms |"),
            "{t}"
        );
        assert!(t.contains("| metrics/run_finished | 78.353 ns |"), "{t}");
    }

    #[test]
    fn the_peer_config_names_each_source_as_the_harness_counts_it() {
        let t = peer_config(2, 18080, 9105, Path::new("/d"), Path::new("/p"));
        assert!(t.contains("id = \"src1\"\nplugin = \"http_json\"\nunit = \"src1\""));
        assert!(t.contains("url = \"http://127.0.0.1:18080/src/1.json\""));
        assert!(t.contains("listen = \"127.0.0.1:9105\""));
        assert_eq!(t.matches("[[sources]]").count(), 2);
    }
}
