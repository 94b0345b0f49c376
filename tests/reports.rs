//! Report files: the xlsx summary over HTTP and from `tallyd report`, the
//! report the daemon writes at start (`[reports] write_on_start`), and the
//! reports of quarters it missed, listed by `GET /api/v1/reports` and never
//! overwritten. The quarterly schedule itself
//! is tested with a fake clock in `crates/daemon/src/reports/tests.rs`: here a real
//! one would mean waiting for a quarter.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use calamine::{Data, Reader, Xlsx, open_workbook_from_rs};
use chrono::NaiveDate;
use serde_json::Value;

use crate::support::*;

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: PathBuf,
    port: u16,
    /// The quarter a report written now is for.
    last_quarter: tally_domain::period::Period,
}

/// A county with two bureaus and one indicator read from a form: Q3 2026
/// rows, and one row on the first day of the quarter before today's (which
/// may be Q3 2026 too), so that the report written at start has data.
fn setup(reports: &str) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_csv_form")]);
    let last_quarter =
        tally_daemon::reports::report_period(chrono::Utc::now(), chrono_tz::Asia::Shanghai);
    let q3_start = NaiveDate::from_ymd_opt(2026, 7, 1).unwrap();
    let from = last_quarter.start.min(q3_start);
    std::fs::create_dir_all(dir.join("forms")).unwrap();
    std::fs::write(
        dir.join("forms/meetings.csv"),
        format!(
            "\u{feff}单位,日期,会议次数\n\
             县甲,2026-07-15,3\n\
             county/b,2026-08-01,4\n\
             county/a,{},2\n",
            last_quarter.start
        ),
    )
    .unwrap();
    let cfg = TestConfig::new(&dir, &plugins)
        .county()
        .unit("county/a", "县甲")
        .unit("county/b", "县乙")
        .meetings()
        .toml(&format!(
            r#"
[[sources]]
id = "forms"
plugin = "csv_form"
units = ["county"]
schedule = "0 3 * * *"
backfill_from = "{from}"
[sources.settings]
dir = {forms}
indicators = ["meetings"]

{reports}
"#,
            forms = toml_path(&dir.join("forms")),
        ));
    let port = cfg.port();
    let config = cfg.write();
    Setup {
        _tmp: tmp,
        dir,
        config,
        port,
        last_quarter,
    }
}

/// A GET whose body is bytes: (status, lower-case head, body).
pub(crate) fn get_bytes(url: &str) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut conn = std::net::TcpStream::connect(host).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        conn,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    assert!(
        !head.contains("transfer-encoding: chunked"),
        "a sized body expected: {head}"
    );
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}

fn workbook(bytes: &[u8]) -> Xlsx<Cursor<Vec<u8>>> {
    open_workbook_from_rs(Cursor::new(bytes.to_vec())).expect("a valid xlsx")
}

/// The cells of 「统计表」 that matter here: title, header (below the title
/// and the two status rows), and each unit's name and value.
fn table(bytes: &[u8]) -> (String, String, Vec<(String, Data)>) {
    let mut wb = workbook(bytes);
    assert_eq!(wb.sheet_names(), ["统计表", "会议次数", "数据来源"]);
    let t = wb.worksheet_range("统计表").unwrap();
    let text = |r, c| match t.get_value((r, c)) {
        Some(Data::String(s)) => s.clone(),
        other => panic!("({r}, {c}) is not text: {other:?}"),
    };
    let rows = (5..8)
        .map(|r| {
            (
                text(r, 0),
                t.get_value((r, 1)).cloned().unwrap_or(Data::Empty),
            )
        })
        .collect();
    (text(0, 0), text(3, 1), rows)
}

fn q3_rows() -> Vec<(String, Data)> {
    [("某县", 7.0), ("县甲", 3.0), ("县乙", 4.0)]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), Data::Float(v)))
        .collect()
}

/// What the form holds for 2026-Q3 when the last quarter is 2026-Q3 too.
fn expected_q3(s: &Setup) -> Vec<(String, Data)> {
    let mut rows = q3_rows();
    if s.last_quarter.label() == "2026-Q3" {
        rows[0].1 = Data::Float(9.0);
        rows[1].1 = Data::Float(5.0);
    }
    rows
}

#[test]
fn the_summary_as_xlsx_over_http_and_from_the_command_line() {
    // No report files here (not even the missed quarters caught up at start).
    let s = setup("[reports]\nenabled = false\n");
    let mut d = TestDaemon::start(&s.config, s.port);
    d.wait_for("the start-up run of forms", 60, |d| {
        d.runs("forms", "success") >= 1
    });

    let (status, head, body) = get_bytes(&format!(
        "{}/api/v1/summary?period=2026-Q3&format=xlsx",
        d.base
    ));
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains(
            "content-type: application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        ),
        "{head}"
    );
    assert!(
        head.contains("content-disposition: attachment; filename=\"tally-2026-q3.xlsx\""),
        "{head}"
    );
    let (title, header, rows) = table(&body);
    assert!(
        title.starts_with("2026-Q3 统计表（2026-07-01 至 2026-09-30"),
        "{title}"
    );
    assert_eq!(header, "会议次数(次)");
    assert_eq!(rows, expected_q3(&s));

    let (status, bad) = d.get("/api/v1/summary?period=2026-Q3&format=pdf");
    assert_eq!(status, 400);
    assert!(bad.contains("json, csv, md, xlsx"), "{bad}");
    let listing = d.get_json("/api/v1/reports");
    assert_eq!(
        listing["reports"],
        Value::Array(Vec::new()),
        "nothing written yet"
    );
    d.terminate();

    let out = s.dir.join("q3.xlsx");
    let config = s.config.display().to_string();
    let report = |extra: &[&str]| {
        let mut args = vec!["report", "--config", &config, "--period", "2026-Q3"];
        args.extend_from_slice(extra);
        run_tallyd(&args)
    };
    let o = report(&["--format", "xlsx", "--out", out.to_str().unwrap()]);
    assert_eq!(exit_code(&o), 0, "{}", stderr(&o));
    let (_, _, rows) = table(&std::fs::read(&out).unwrap());
    assert_eq!(rows, expected_q3(&s));
    // Without --out, an xlsx goes to stdout only when it is not a terminal
    // (as here, a pipe).
    let o = report(&["--format", "xlsx"]);
    assert_eq!(exit_code(&o), 0, "{}", stderr(&o));
    let (_, _, rows) = table(&o.stdout);
    assert_eq!(rows, expected_q3(&s));
}

fn listing(d: &TestDaemon) -> Vec<Value> {
    d.get_json("/api/v1/reports")["reports"]
        .as_array()
        .expect("a reports array")
        .clone()
}

fn file(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn the_report_written_at_start_is_listed_and_a_second_start_adds_a_revision() {
    let s = setup(
        r#"[reports]
write_on_start = true
formats = ["xlsx", "csv"]
dir = "REPORTS"
"#,
    );
    let reports = s.dir.join("reports");
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, text.replace("\"REPORTS\"", &toml_path(&reports))).unwrap();
    let label = s.last_quarter.label().to_owned();

    let mut d = TestDaemon::start(&s.config, s.port);
    d.wait_for("two report files", 60, |d| listing(d).len() == 2);
    let files = listing(&d);
    d.terminate();
    for (entry, format) in files.iter().zip(["csv", "xlsx"]) {
        let name = format!("{label}.{format}");
        assert_eq!(entry["period"], label.as_str(), "{entry}");
        assert_eq!(entry["format"], format, "{entry}");
        assert_eq!(entry["revision"], 1, "{entry}");
        assert_eq!(entry["name"], name.as_str(), "{entry}");
        assert_eq!(entry["latest"], true, "{entry}");
        assert_eq!(entry["size"], file(&reports, &name).len(), "{entry}");
        let at = entry["written_at"].as_str().unwrap();
        assert!(at.ends_with("+08:00"), "{entry}");
    }
    // The report holds what the collection at start brought in: the row on
    // the quarter's first day, and the Q3 rows when that quarter is Q3.
    let xlsx = file(&reports, &format!("{label}.xlsx"));
    let (title, _, rows) = table(&xlsx);
    assert!(title.starts_with(&format!("{label} 统计表")), "{title}");
    let expected = if label == "2026-Q3" {
        expected_q3(&s)
    } else {
        [
            ("某县", Data::Float(2.0)),
            ("县甲", Data::Float(2.0)),
            ("县乙", Data::Empty),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect()
    };
    assert_eq!(rows, expected);
    let csv = file(&reports, &format!("{label}.csv"));
    assert!(csv.starts_with(b"\xEF\xBB\xBF"), "a BOM for Excel");

    // A second start writes revision 2 beside the first, which stays as it was.
    let d = TestDaemon::start(&s.config, s.port);
    d.wait_for("four report files", 60, |d| listing(d).len() == 4);
    let files = listing(&d);
    let summary: Vec<(String, bool)> = files
        .iter()
        .map(|f| (f["name"].as_str().unwrap().to_owned(), f["latest"] == true))
        .collect();
    assert_eq!(
        summary,
        [
            (format!("{label}.csv"), false),
            (format!("{label}.r2.csv"), true),
            (format!("{label}.xlsx"), false),
            (format!("{label}.r2.xlsx"), true),
        ]
    );
    assert_eq!(file(&reports, &format!("{label}.xlsx")), xlsx);
    let (_, _, again) = table(&file(&reports, &format!("{label}.r2.xlsx")));
    assert_eq!(again, rows);
}

/// The form holds rows in the two quarters before the current one, and no
/// report was ever written (the daemon was not running on the first day of
/// either quarter): a start writes both quarters' reports; a second start
/// finds them and writes nothing. (With a fixed clock, for 2026-Q2 and Q3
/// seen from Q4: `crates/daemon/src/reports/tests.rs`.)
#[test]
fn missed_quarterly_reports_are_written_at_start_once() {
    let s = setup("[reports]\ndir = \"REPORTS\"\n");
    let reports = s.dir.join("reports");
    let earlier = s.last_quarter.previous();
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("\"REPORTS\"", &toml_path(&reports))
        .replace(
            &format!(
                "backfill_from = \"{}\"",
                s.last_quarter
                    .start
                    .min(NaiveDate::from_ymd_opt(2026, 7, 1).unwrap())
            ),
            &format!("backfill_from = \"{}\"", earlier.start),
        );
    std::fs::write(&s.config, text).unwrap();
    let form = std::fs::read_to_string(s.dir.join("forms/meetings.csv")).unwrap();
    std::fs::write(
        s.dir.join("forms/meetings.csv"),
        format!("{form}county/b,{},6\n", earlier.start),
    )
    .unwrap();
    let expected: Vec<String> = [earlier.label(), s.last_quarter.label()]
        .iter()
        .flat_map(|l| [format!("{l}.csv"), format!("{l}.xlsx")])
        .collect();

    let mut d = TestDaemon::start(&s.config, s.port);
    d.wait_for("the missed reports", 60, |d| {
        d.log().contains("reports caught up")
    });
    let names: Vec<String> = listing(&d)
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, expected, "{}", d.log());
    let (title, _, rows) = table(&file(&reports, &format!("{}.xlsx", earlier.label())));
    assert!(
        title.starts_with(&format!("{} 统计表", earlier.label())),
        "{title}"
    );
    assert_eq!(rows[2], ("县乙".to_owned(), Data::Float(6.0)), "{rows:?}");
    let before: Vec<Vec<u8>> = expected.iter().map(|n| file(&reports, n)).collect();
    d.terminate();

    let d = TestDaemon::start(&s.config, s.port);
    d.wait_for("the catch-up at start", 60, |d| {
        d.log().contains("reports caught up")
    });
    assert!(!d.log().contains("missed report written"), "{}", d.log());
    let again: Vec<String> = listing(&d)
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(again, expected);
    let after: Vec<Vec<u8>> = expected.iter().map(|n| file(&reports, n)).collect();
    assert_eq!(before, after, "nothing rewritten");
}
