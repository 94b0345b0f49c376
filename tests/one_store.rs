//! One daemon per store (issue 15): the lock on `data_dir`, `tallyd
//! collect` beside a running daemon, and what a daemon killed while writing
//! a report leaves behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    data: PathBuf,
    forms: PathBuf,
    plugins: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_csv_form")]);
    let forms = dir.join("forms");
    std::fs::create_dir_all(&forms).unwrap();
    Setup {
        data: dir.join("data"),
        _tmp: tmp,
        dir,
        forms,
        plugins,
    }
}

/// A configuration on the setup's data_dir, listening on `port`, with one
/// form source that runs at start and then once a year.
fn config(s: &Setup, name: &str, port: u16) -> PathBuf {
    TestConfig::new(&s.dir, &s.plugins)
        .with_port(port)
        .data_dir(&s.data)
        .daemon(r#"timezone = "UTC""#)
        .county()
        .meetings()
        .toml(&format!(
            r#"
[[sources]]
id = "forms"
plugin = "csv_form"
units = ["county"]
schedule = "0 0 3 1 1 *"
backfill_from = "2020-01-01"
[sources.settings]
dir = {forms}
indicators = ["meetings"]
"#,
            forms = toml_path(&s.forms),
        ))
        .write_as(name)
}

/// Waits for a process that should exit by itself; kills it and fails if it
/// is still running after `secs`.
fn exits_within(child: &mut std::process::Child, secs: u64) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process was still running after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = std::process::Output {
        status: child.wait().unwrap(),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    use std::io::Read;
    if let Some(mut e) = child.stderr.take() {
        e.read_to_end(&mut out.stderr).unwrap();
    }
    out
}

#[test]
fn a_second_daemon_on_the_same_data_dir_exits_1_naming_the_first() {
    let s = setup();
    let port = free_port();
    let first = TestDaemon::start(&config(&s, "first.toml", port), port);
    let pid = first.child.id();
    let second = config(&s, "second.toml", free_port());
    let mut child = Command::new(tallyd())
        .args(["run", "--config"])
        .arg(&second)
        .env_remove("TALLY_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = exits_within(&mut child, 30);
    let err = stderr(&out);
    assert_eq!(exit_code(&out), 1, "{err}");
    assert!(err.contains(&format!("another tallyd (pid {pid}")), "{err}");
    assert!(err.contains(&s.data.display().to_string()), "{err}");
    // The first daemon is untouched and still serving.
    assert_eq!(first.get("/healthz").0, 200);
}

#[test]
fn a_daemon_killed_with_sigkill_leaves_no_lock_behind() {
    let s = setup();
    let port = free_port();
    let cfg = config(&s, "tally.toml", port);
    let mut first = TestDaemon::start(&cfg, port);
    first.kill9();
    let second = TestDaemon::start(&cfg, port);
    assert_eq!(second.get("/healthz").0, 200);
}

#[test]
fn collect_beside_a_running_daemon_shows_in_its_metrics_and_says_so() {
    let s = setup();
    let port = free_port();
    let cfg = config(&s, "tally.toml", port);
    let d = TestDaemon::start(&cfg, port);
    // The run at start found no form: nothing for today yet.
    d.wait_for("the run at start", 30, |d| d.runs("forms", "success") >= 1);
    let year = [
        ("unit", "county"),
        ("indicator", "meetings"),
        ("window", "year"),
    ];
    assert_eq!(d.sample("tally_indicator_value", &year).unwrap_or(0.0), 0.0);

    let today = chrono::Utc::now().date_naive();
    std::fs::write(
        s.forms.join("today.csv"),
        format!("单位,日期,会议次数\ncounty,{today},7\n"),
    )
    .unwrap();
    let day = today.to_string();
    let out = run_tallyd(&[
        "collect",
        "--config",
        cfg.to_str().unwrap(),
        "--source",
        "forms",
        "--from",
        &day,
        "--to",
        &day,
    ]);
    let err = stderr(&out);
    assert_eq!(exit_code(&out), 0, "{err}");
    assert!(err.contains("1 observations"), "{err}");
    assert!(
        err.contains(&format!(
            "tallyd (pid {}) serves this data_dir",
            d.child.id()
        )),
        "{err}"
    );
    // The daemon wrote nothing itself: only noticing the other process's
    // commit brings the value into /metrics.
    d.wait_for("the collected value in /metrics", 30, |d| {
        d.sample("tally_indicator_value", &year) == Some(7.0)
    });
    assert!(
        d.log().contains("the store was written by another process"),
        "{}",
        d.log()
    );
}

#[test]
fn collect_without_a_daemon_says_nothing_about_one() {
    let s = setup();
    let cfg = config(&s, "tally.toml", free_port());
    let out = run_tallyd(&[
        "collect",
        "--config",
        cfg.to_str().unwrap(),
        "--source",
        "forms",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-02",
    ]);
    assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("serves this data_dir"),
        "{}",
        stderr(&out)
    );
}

/// The pid of a process that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn temp_report(dir: &Path, pid: u32) -> PathBuf {
    let path = dir.join(format!(".2026-Q3.xlsx.{pid}.0.tmp"));
    std::fs::write(&path, b"PK\x03\x04 half a workbook").unwrap();
    path
}

#[test]
fn a_report_temp_file_left_by_a_killed_writer_is_removed_at_start() {
    let s = setup();
    let reports = s.data.join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    // Left by a daemon killed while it wrote 2026-Q3.xlsx.
    let stale = temp_report(&reports, dead_pid());
    // One of a writer that still runs (this test) stays.
    let busy = temp_report(&reports, std::process::id());
    let port = free_port();
    let d = TestDaemon::start(&config(&s, "tally.toml", port), port);
    assert!(!stale.exists(), "{} is still there", stale.display());
    assert!(busy.exists());
    assert!(
        d.log()
            .contains("removed a report temporary file left by an interrupted write"),
        "{}",
        d.log()
    );
    let listed = d.get_json("/api/v1/reports");
    assert_eq!(listed["reports"], serde_json::json!([]), "{listed}");
}
