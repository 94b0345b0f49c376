//! Collection end to end: schedules, idempotent re-collection, roll-ups,
//! quarter boundaries, the summary's shape, CSV, `/metrics`, and crash safety.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::support::*;

/// A JSON API on 127.0.0.1 answering every request with `body`, for the
/// lifetime of the test process.
pub fn serve_json(body: &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 8192];
            let _ = conn.read(&mut buf);
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    format!("http://{addr}")
}

/// Rows a platform reports with local timestamps: one late on the last
/// evening of Q3, one just after midnight on the first day of Q4.
const POSTS: &str = r#"{"data": {"rows": [
  {"time": "2026-09-30 23:30:00", "unit": "county/a/x", "posts": 4},
  {"time": "2026-10-01 00:10:00", "unit": "县乙", "posts": 2},
  {"time": "2026-08-12 09:00:00", "unit": "county", "posts": 1}
]}}"#;

/// A form over three levels, with a count and a level indicator.
const FORM: &str = "\u{feff}单位,日期,会议次数,粉丝数\n\
county/a/x,2026-09-15,1,90\n\
county/a/x,2026-09-30,2,100\n\
县甲,2026-09-20,3,50\n\
某县,2026-08-01,1,\n\
county/b,2026-10-01,5,70\n";

struct Setup {
    t: TestDir,
    config: PathBuf,
    port: u16,
}

fn setup(schedule: &str) -> Setup {
    let t = TestDir::new(&[
        bundled_plugin("tally_http_json"),
        bundled_plugin("tally_csv_form"),
    ]);
    let forms = t.dir.join("forms");
    std::fs::create_dir_all(&forms).unwrap();
    std::fs::write(forms.join("q3.csv"), FORM).unwrap();
    let api = serve_json(POSTS);
    let cfg = t
        .config()
        .daemon("api_token = \"test-token\"")
        .unit_with("county", "某县", "headcount = 10")
        .unit_with("county/a", "县甲", "headcount = 4")
        .unit("county/a/x", "甲下属")
        .unit("county/b", "县乙")
        .indicator_with("meetings", "会议次数", "count", "次", "per_capita = true")
        .indicator("followers", "粉丝数", "level", "人")
        .indicator("posts", "发文数", "count", "篇")
        .toml(&format!(
            r#"
[[sources]]
id = "forms"
plugin = "csv_form"
units = ["county"]
schedule = "{schedule}"
backfill_from = "2026-07-01"
lookback_days = 400
[sources.settings]
dir = {forms}
indicators = ["meetings", "followers"]

[[sources]]
id = "posts"
plugin = "http_json"
units = ["county"]
schedule = "{schedule}"
backfill_from = "2026-07-01"
lookback_days = 400
[sources.settings]
url = "{api}/posts"
[sources.settings.rows]
path = "$.data.rows[*]"
date = "time"
unit = "unit"
[sources.settings.rows.fields]
posts = "posts"
"#,
            forms = toml_path(&forms),
        ));
    Setup {
        config: cfg.write(),
        port: cfg.port(),
        t,
    }
}

#[test]
fn scheduled_collection_rolls_up_three_levels_across_a_quarter_boundary() {
    let s = setup("* * * * * *");
    let d = TestDaemon::start(&s.config, s.port);
    // The start-up run, then at least one per-second scheduled run of each source.
    d.wait_for("two successful runs of each source", 30, |d| {
        ["forms", "posts"].iter().all(|src| {
            d.metric(&format!(
                "tally_source_runs_total{{plugin=\"{}\",result=\"success\",source=\"{src}\"}}",
                if *src == "forms" {
                    "csv_form"
                } else {
                    "http_json"
                }
            ))
            .unwrap_or(0.0)
                >= 2.0
        })
    });

    let q3 = d.get_json("/api/v1/summary?period=2026-Q3");
    // count: own + descendants; level: the last day's value per source and entity, summed over units.
    assert_eq!(value(&q3, "county/a/x", "meetings"), 3.0);
    assert_eq!(value(&q3, "county/a/x", "followers"), 100.0);
    assert_eq!(value(&q3, "county/a", "meetings"), 6.0);
    assert_eq!(value(&q3, "county/a", "followers"), 150.0);
    assert_eq!(value(&q3, "county", "meetings"), 7.0);
    assert_eq!(value(&q3, "county", "followers"), 150.0);
    assert_eq!(
        value(&q3, "county/b", "meetings"),
        Value::Null,
        "no Q3 data for county/b"
    );
    // 2026-09-30 23:30 Asia/Shanghai belongs to Q3, 2026-10-01 00:10 to Q4.
    assert_eq!(value(&q3, "county", "posts"), 5.0);
    assert_eq!(value(&q3, "county/a", "posts"), 4.0);

    let q4 = d.get_json("/api/v1/summary?period=2026-Q4");
    assert_eq!(value(&q4, "county", "posts"), 2.0);
    assert_eq!(value(&q4, "county/b", "posts"), 2.0);
    assert_eq!(value(&q4, "county", "meetings"), 5.0);
    assert_eq!(value(&q4, "county", "followers"), 70.0);
    // `previous` is the same indicator in the period before.
    assert_eq!(q4["units"][0]["values"]["meetings"]["previous"], 7.0);

    // The shape the README describes.
    let p = &q3["period"];
    assert_eq!(p["label"], "2026-Q3");
    assert_eq!(p["start"], "2026-07-01");
    assert_eq!(p["end"], "2026-09-30");
    assert_eq!(p["timezone"], "Asia/Shanghai");
    for key in ["complete", "ended", "sources_complete", "units_complete"] {
        assert!(p[key].is_boolean(), "period lacks {key}: {p}");
    }
    assert!(q3["generated_at"].as_str().unwrap().ends_with("+08:00"));
    let ind = &q3["indicators"][0];
    for key in ["id", "name", "kind", "unit"] {
        assert!(ind.get(key).is_some(), "indicator lacks {key}: {ind}");
    }
    let ids: Vec<&str> = q3["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["county", "county/a", "county/a/x", "county/b"],
        "parents before children"
    );
    let county = &q3["units"][0];
    assert_eq!(county["parent"], Value::Null);
    assert_eq!(county["depth"], 0);
    assert_eq!(county["headcount"], 10);
    // Per capita (asked for meetings only) over the subtree's headcounts:
    // the county's 10 and county/a's 4; county/a/x has none, so its 3
    // meetings are left out too: (1 + 3) / 14, not 7 / 10.
    assert_eq!(county["subtree_headcount"], 14);
    let per_capita = county["values"]["meetings"]["per_capita"].as_f64().unwrap();
    assert!((per_capita - 4.0 / 14.0).abs() < 1e-12, "{per_capita}");
    assert!(county["values"]["followers"].get("per_capita").is_none());
    assert_eq!(q3["units"][2]["parent"], "county/a");
    assert_eq!(q3["units"][2]["depth"], 2);
    let sources = q3["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2);
    for src in sources {
        for key in ["id", "complete", "failed_runs", "last_success"] {
            assert!(src.get(key).is_some(), "source lacks {key}: {src}");
        }
    }
    // depth and unit select a subtree.
    let sub = d.get_json("/api/v1/summary?period=2026-Q3&unit=county/a&depth=0");
    assert_eq!(sub["units"].as_array().unwrap().len(), 1);
    assert_eq!(value(&sub, "county/a", "meetings"), 6.0);

    // CSV: a BOM so Excel reads Chinese, display names as headers.
    let (status, csv) = d.get("/api/v1/summary?period=2026-Q3&format=csv");
    assert_eq!(status, 200);
    assert!(csv.starts_with('\u{feff}'), "no BOM: {csv:?}");
    let header = csv.lines().next().unwrap();
    assert!(
        header.contains("会议次数") && header.contains("粉丝数"),
        "{header}"
    );
    assert_eq!(csv.lines().count(), 5, "{csv}");
}

#[test]
fn re_collecting_the_same_window_changes_no_number() {
    let s = setup("0 0 3 * * *");
    let data = s.t.dir.join("data");
    let collect = || {
        let out = run_tallyd(&[
            "collect",
            "--config",
            s.config.to_str().unwrap(),
            "--source",
            "forms",
            "--from",
            "2026-07-01",
            "--to",
            "2026-10-31",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("[1/4] forms 2026-07-01..2026-07-31"),
            "{}",
            stderr(&out)
        );
    };
    let report = || {
        let out = run_tallyd(&[
            "report",
            "--config",
            s.config.to_str().unwrap(),
            "--period",
            "2026-Q3",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
        (
            value(&v, "county", "meetings").as_f64(),
            value(&v, "county", "followers").as_f64(),
        )
    };
    collect();
    let first = report();
    assert_eq!(first, (Some(7.0), Some(150.0)));
    collect();
    assert_eq!(
        report(),
        first,
        "a second collection of the same window doubled numbers"
    );
    assert!(data.join("tally.db").exists());
}

#[test]
fn metrics_pass_promtool() {
    let s = setup("0 0 3 * * *");
    let d = TestDaemon::start(&s.config, s.port);
    d.wait_for("the start-up runs", 30, |d| {
        d.metric("tally_source_up{plugin=\"csv_form\",source=\"forms\"}") == Some(1.0)
            && d.metric("tally_source_up{plugin=\"http_json\",source=\"posts\"}") == Some(1.0)
    });
    let (status, body) = d.get("/metrics");
    assert_eq!(status, 200);
    for series in [
        "tally_indicator_value{",
        "tally_unit_info{",
        "tally_indicator_info{",
        "tally_source_up{",
        "tally_source_runs_total{",
        "tally_source_last_success_timestamp_seconds{",
        "tally_source_run_duration_seconds_count{",
        "tally_observations_written_total{",
        "tally_plugin_info{",
        "tally_build_info{",
    ] {
        assert!(body.contains(series), "/metrics lacks {series}:\n{body}");
    }
    // The histogram's buckets are opt-in ([metrics] source_duration_histogram).
    assert!(!body.contains("_bucket{"), "{body}");
    promtool_check_metrics(&body);
}

/// Scraped as Prometheus scrapes, asking for gzip: the body is the plain
/// one compressed, and promtool accepts it decompressed.
#[test]
fn metrics_gzip_decodes_to_the_plain_body() {
    let s = setup("0 0 3 * * *");
    let d = TestDaemon::start(&s.config, s.port);
    d.wait_for("the start-up runs", 30, |d| {
        d.metric("tally_source_up{plugin=\"csv_form\",source=\"forms\"}") == Some(1.0)
            && d.metric("tally_source_up{plugin=\"http_json\",source=\"posts\"}") == Some(1.0)
    });
    let addr = format!("127.0.0.1:{}", s.port);
    // A rebuild may fall between two requests: compared when the plain body
    // before and after the gzip one are the same.
    let decoded = (0..20)
        .find_map(|_| {
            let (_, before) = raw_get(&addr, "metrics", &[]);
            let (headers, gzip) = raw_get(&addr, "metrics", &["Accept-Encoding: gzip"]);
            let (_, after) = raw_get(&addr, "metrics", &[]);
            assert!(
                headers.contains("content-encoding: gzip"),
                "no gzip for a scrape asking for it:\n{headers}"
            );
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gzip[..]), &mut text)
                .expect("a gzip body");
            (before == after).then(|| {
                assert_eq!(
                    String::from_utf8_lossy(&text),
                    String::from_utf8_lossy(&before)
                );
                text
            })
        })
        .expect("the body kept changing between requests");
    // Refused with q=0: plain text.
    let (headers, body) = raw_get(&addr, "metrics", &["Accept-Encoding: gzip;q=0, identity"]);
    assert!(!headers.contains("content-encoding"), "{headers}");
    assert!(body.starts_with(b"# HELP"));
    promtool_check_metrics(&String::from_utf8(decoded).unwrap());
}

/// `GET /path` on a connection of its own with extra header lines: the
/// response's header block (lower case) and its body, read by Content-Length.
fn raw_get(addr: &str, path: &str, headers: &[&str]) -> (String, Vec<u8>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    let mut request = format!("GET /{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    conn.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(conn);
    let mut head = String::new();
    let mut length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim_end().is_empty() {
            break;
        }
        let line = line.to_ascii_lowercase();
        if let Some(v) = line.strip_prefix("content-length:") {
            length = Some(v.trim().parse::<usize>().unwrap());
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let mut body = vec![0; length.expect("a Content-Length")];
    reader.read_exact(&mut body).unwrap();
    (head, body)
}

/// `promtool check metrics` on `body`; skipped where promtool is missing,
/// except in CI.
fn promtool_check_metrics(body: &str) {
    let Some(promtool) = which("promtool") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing in CI: .ci/run must install Debian's prometheus package"
        );
        eprintln!("promtool not installed: skipping `promtool check metrics` (CI installs it)");
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// A daemon whose only source is slow: kill -9 lands during a collection.
fn slow_setup(t: &TestDir, sleep_ms: u64) -> (PathBuf, u16) {
    let cfg = t
        .config()
        .daemon("api_token = \"test-token\"")
        .county()
        .indicator("x", "计数", "count", "次")
        .toml(&format!(
            r#"
[[sources]]
id = "slow"
plugin = "faulty"
unit = "county"
schedule = "0 0 3 * * *"
backfill_from = "2026-01-01"
lookback_days = 0
timeout = "60s"
[sources.settings]
mode = "sleep"
sleep_ms = {sleep_ms}
indicator = "x"
value = 1.0
"#
        ));
    (cfg.write_as(&format!("slow-{sleep_ms}.toml")), cfg.port())
}

fn year_total(d: &TestDaemon) -> Value {
    value(&d.get_json("/api/v1/summary?period=2026"), "county", "x")
}

#[test]
fn kill_9_during_a_collection_loses_and_doubles_nothing() {
    let t = TestDir::new(&[fixture_plugin("tally_fixture_faulty")]);
    // First start: the start-up run (backfill from 2026-01-01) is killed mid-way.
    let (slow, port) = slow_setup(&t, 4000);
    let mut d = TestDaemon::start(&slow, port);
    d.wait_for("the start-up run to begin", 20, |d| {
        d.get_json("/api/v1/sources")["sources"][0]["running"] == true
    });
    d.kill9();
    drop(d);

    // Restart: the source never succeeded, so it runs again at start, to the end.
    let mut d = TestDaemon::start(&slow, port);
    d.wait_for("the start-up run to succeed", 30, |d| {
        d.get_json("/api/v1/sources")["sources"][0]["last_success"].is_string()
    });
    let total = year_total(&d);
    let days_so_far = total.as_f64().expect("a number");
    assert!(days_so_far >= 1.0, "{total}");
    let runs = d.get_json("/api/v1/sources")["sources"][0]["runs"].clone();
    assert_eq!(runs["success"], 1, "the killed run left no record: {runs}");

    // A manual run of the same window, killed mid-way, changes nothing.
    let base = d.base.clone();
    let run = std::thread::spawn(move || {
        post(
            &format!("{base}/api/v1/sources/slow/run"),
            &[("Authorization", "Bearer test-token")],
        )
    });
    d.wait_for("the manual run to begin", 20, |d| {
        d.get_json("/api/v1/sources")["sources"][0]["running"] == true
    });
    d.kill9();
    let _ = run.join();
    drop(d);

    let d = TestDaemon::start(&slow, port);
    assert_eq!(year_total(&d), total, "numbers changed after a kill -9");
    let runs = d.get_json("/api/v1/sources")["sources"][0]["runs"].clone();
    assert_eq!(runs["success"], 1, "{runs}");
}
