//! Targets, rank, change and traceability through the real daemon: a
//! `csv_form` source fills a three-level tree, and the summary, `/metrics`,
//! `/api/v1/observations` and `tallyd report --explain` are checked against
//! numbers computed by hand.
//!
//! ```text
//! county
//! ├── county/a        posts 4 (07-10)        alice 1200 (09-30)
//! │   └── county/a/x  posts 3 (08-01)        bob 900 (09-15), alice 2000 (09-20)
//! └── county/b        posts 7 (09-01)        carol 1500 (08-20)
//! ```
//!
//! All in 2025-Q3, which is over whatever day the test runs (the daemon reads
//! the real clock), plus county/a posts 2 in 2025-Q2 for `previous`, and rows
//! dated today for the metrics of the current windows.
//!
//! A second county (`ytd_setup`) has 学习强国 points that accumulate over the
//! year (本年积分), with the yearly 7,000 a member of the README's example.

use chrono::NaiveDate;
use serde_json::Value;

use crate::support::*;

/// Today in the daemon's time zone (Asia/Shanghai, the default).
fn today() -> NaiveDate {
    chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive()
}

struct Setup {
    _dir: TestDir,
    config: TestConfig,
}

fn setup() -> Setup {
    let t = TestDir::new(&[bundled_plugin("tally_csv_form")]);
    let forms = t.dir.join("forms");
    std::fs::create_dir_all(&forms).unwrap();
    let today = today();
    std::fs::write(
        forms.join("2025.csv"),
        format!(
            "单位,日期,姓名,发文数,学习积分\n\
             county/a,2025-06-15,,2,\n\
             county/a,2025-07-10,,4,\n\
             county/a/x,2025-08-01,,3,\n\
             county/b,2025-09-01,,7,\n\
             county/a,2025-09-30,alice,,1200\n\
             county/a/x,2025-09-15,bob,,900\n\
             county/a/x,2025-09-20,alice,,2000\n\
             county/b,2025-08-20,carol,,1500\n\
             county/a/x,{today},,3,\n\
             county/a,{today},alice,,5000\n\
             county/a/x,{today},bob,,100\n"
        ),
    )
    .unwrap();
    let config = t
        .config()
        .unit_with("county", "某县", "headcount = 10")
        .unit("county/a", "县甲")
        .unit("county/a/x", "甲下属")
        .unit("county/b", "县乙")
        .indicator("posts", "发文数", "count", "篇")
        .indicator("points", "学习积分", "level", "分")
        .toml(&format!(
            r#"
[[targets]]
indicator = "posts"
per = "unit"
period = "quarter"
min = 6
prorate = false
units = ["county/a", "county/b"]

[[targets]]
indicator = "points"
per = "entity"
period = "year"
min = 4000
prorate = false

[[sources]]
id = "forms"
plugin = "csv_form"
unit = "county"
schedule = "0 0 0 1 1 *"
backfill_from = "2025-04-01"
[sources.settings]
dir = {forms}
indicators = ["posts", "points"]
"#,
            forms = toml_path(&forms),
        ));
    Setup { _dir: t, config }
}

fn close(v: &Value, expected: f64) -> bool {
    v.as_f64().is_some_and(|v| (v - expected).abs() < 1e-9)
}

fn started(d: &TestDaemon) {
    d.wait_for("the start-up run and the metrics after it", 30, |d| {
        d.sample(
            "tally_target_ratio",
            &[
                ("unit", "county"),
                ("indicator", "points"),
                ("window", "year"),
            ],
        )
        .is_some()
    });
    assert_eq!(d.runs("forms", "success"), 1, "{}", d.log());
}

#[test]
fn summary_gives_targets_rank_and_change() {
    let s = setup();
    let d = s.config.start();
    started(&d);
    let q3 = d.get_json("/api/v1/summary?period=2025-Q3");

    // Per unit, 6 posts a quarter: county/a 4 + 3, county/b 7; not the
    // county nor county/a/x, which the target does not list.
    let a = cell(&q3, "county/a", "posts");
    assert_eq!(a["value"], 7.0);
    assert_eq!(a["target"]["per"], "unit");
    assert_eq!(a["target"]["min"], 6);
    assert!(close(&a["target"]["completion"], 7.0 / 6.0), "{a}");
    assert!(a["target"].get("met").is_none(), "{a}");
    assert!(close(
        &cell(&q3, "county/b", "posts")["target"]["completion"],
        7.0 / 6.0
    ));
    assert_eq!(cell(&q3, "county", "posts").get("target"), None);
    assert_eq!(cell(&q3, "county/a/x", "posts").get("target"), None);

    // Per entity, 4000 a year, seen in a quarter: 4000 × 92/365 = 1008.22.
    // alice appears under county/a (1200) and county/a/x (2000) and counts
    // under each; bob 900 is below; carol 1500.
    let min = 4000.0 * 92.0 / 365.0;
    for (unit, met, total) in [
        ("county", 3, 4),
        ("county/a", 2, 3),
        ("county/a/x", 1, 2),
        ("county/b", 1, 1),
    ] {
        let t = &cell(&q3, unit, "points")["target"];
        assert_eq!(t["per"], "entity", "{unit}: {t}");
        assert!(close(&t["min"], min), "{unit}: {t}");
        assert_eq!(
            (t["met"].as_u64(), t["total"].as_u64()),
            (Some(met), Some(total)),
            "{unit}"
        );
        assert!(close(&t["ratio"], met as f64 / total as f64), "{unit}: {t}");
    }

    // Rank among siblings: county/a and county/b tie at 7 posts; by points
    // county/a (1200 + 900 + 2000 = 4100) is above county/b (1500).
    assert_eq!(cell(&q3, "county/a", "posts")["rank"], 1);
    assert_eq!(cell(&q3, "county/b", "posts")["rank"], 1);
    assert_eq!(cell(&q3, "county/a", "points")["rank"], 1);
    assert_eq!(cell(&q3, "county/b", "points")["rank"], 2);
    // Change against 2025-Q2 (county/a posted 2); county/b had nothing then.
    assert_eq!(a["previous"], 2);
    assert_eq!(a["change"], 5);
    assert_eq!(a["change_ratio"], 2.5);
    assert_eq!(cell(&q3, "county/b", "posts").get("change"), None);
    // No indicator here asks for per capita, though the county has a headcount.
    assert_eq!(cell(&q3, "county", "posts").get("per_capita"), None);
    assert_eq!(cell(&q3, "county", "points").get("per_capita"), None);

    // The CSV has the target columns, with clean numbers.
    let (status, csv) = d.get("/api/v1/summary?period=2025-Q3&format=csv");
    assert_eq!(status, 200);
    let mut lines = csv.trim_start_matches('\u{feff}').lines();
    let header = lines.next().unwrap();
    assert!(
        header.contains("目标发文数(篇),目标完成率发文数,目标学习积分(分),达标率学习积分"),
        "{header}"
    );
    let county_a = lines.find(|l| l.starts_with("county/a,")).unwrap();
    assert!(county_a.contains(",6,1.1667,1008.22,0.6667,"), "{county_a}");
}

#[test]
fn metrics_give_target_ratios_of_the_current_windows() {
    let s = setup();
    let d = s.config.start();
    started(&d);
    let ratio = |unit: &str, indicator: &str, window: &str| {
        d.sample(
            "tally_target_ratio",
            &[("unit", unit), ("indicator", indicator), ("window", window)],
        )
    };
    // Today: county/a/x posted 3 (county/a's value), alice has 5000 points
    // under county/a and bob 100 under county/a/x. Not pro-rated: the
    // quarter asks 6 posts, the year 4 × 6 = 24 and 4000 points an entity.
    assert_eq!(ratio("county/a", "posts", "quarter"), Some(0.5));
    assert_eq!(ratio("county/a", "posts", "year"), Some(0.125));
    assert_eq!(
        ratio("county/b", "posts", "year"),
        None,
        "no value this year"
    );
    assert_eq!(
        ratio("county", "posts", "year"),
        None,
        "no target for the county"
    );
    assert_eq!(ratio("county", "points", "year"), Some(0.5));
    assert_eq!(ratio("county/a", "points", "year"), Some(0.5));
    assert_eq!(ratio("county/a/x", "points", "year"), Some(0.0));
    assert_eq!(
        ratio("county/b", "points", "year"),
        None,
        "no entity this year"
    );
}

#[test]
fn observations_trace_a_figure_to_its_source_and_run() {
    let s = setup();
    let mut d = s.config.start();
    started(&d);
    let e = d.get_json("/api/v1/observations?unit=county/a&indicator=points&period=2025-Q3");
    assert_eq!(e["unit"], "county/a");
    assert_eq!(e["indicator"], "points");
    assert_eq!(e["kind"], "level");
    assert_eq!(e["period"]["label"], "2025-Q3");
    let rows: Vec<(String, String, String, f64)> = e["observations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            assert_eq!(o["source"], "forms", "{o}");
            assert_eq!(o["run"]["trigger"], "start", "{o}");
            assert!(o["run"]["id"].as_i64().is_some(), "{o}");
            assert!(
                o["run"]["started_at"].as_str().unwrap().ends_with("+08:00"),
                "{o}"
            );
            (
                o["unit"].as_str().unwrap().to_owned(),
                o["entity"].as_str().unwrap().to_owned(),
                o["day"].as_str().unwrap().to_owned(),
                o["value"].as_f64().unwrap(),
            )
        })
        .collect();
    let row = |u: &str, e: &str, day: &str, v: f64| (u.to_owned(), e.to_owned(), day.to_owned(), v);
    // The subtree of county/a, parents first, then by entity and day.
    assert_eq!(
        rows,
        [
            row("county/a", "alice", "2025-09-30", 1200.0),
            row("county/a/x", "alice", "2025-09-20", 2000.0),
            row("county/a/x", "bob", "2025-09-15", 900.0),
        ]
    );

    for (query, says) in [
        ("unit=county/a&indicator=points", "missing parameter period"),
        (
            "unit=county/a&period=2025-Q3",
            "missing parameter indicator",
        ),
        ("indicator=points&period=2025-Q3", "missing parameter unit"),
        (
            "unit=county/a&indicator=points&period=2025-Q5",
            "quarters are Q1..Q4",
        ),
        (
            "unit=county/zz&indicator=points&period=2025-Q3",
            "unknown unit \"county/zz\"",
        ),
        (
            "unit=county/a&indicator=nope&period=2025-Q3",
            "unknown indicator \"nope\"",
        ),
        (
            "unit=county/a&indicator=points&period=2025-Q3&depth=1",
            "unknown parameter depth",
        ),
    ] {
        let (status, body) = d.get(&format!("/api/v1/observations?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["error"].as_str().unwrap().contains(says),
            "{query}: {body}"
        );
    }
    d.terminate();

    // The same from the command line, as a table and as JSON.
    let path = s.config.write();
    let config = path.to_str().unwrap();
    let args = [
        "report",
        "--config",
        config,
        "--period",
        "2025-Q3",
        "--unit",
        "county/a",
        "--explain",
        "points",
    ];
    let out = run_tallyd(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.starts_with("points county/a 2025-Q3 (level), 3 observations\n"),
        "{table}"
    );
    let bob = table.lines().find(|l| l.contains("bob")).unwrap();
    let cells: Vec<&str> = bob.split_whitespace().collect();
    assert_eq!(
        [cells[0], cells[1], cells[2], cells[3], cells[4], cells[6]],
        ["forms", "county/a/x", "bob", "2025-09-15", "900", "start"],
        "{table}"
    );

    let mut json_args = args.to_vec();
    json_args.extend(["--format", "json"]);
    let out = run_tallyd(&json_args);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["observations"].as_array().unwrap().len(), 3);

    // --explain needs --unit; an unknown indicator is a user error.
    let out = run_tallyd(&[
        "report",
        "--config",
        config,
        "--period",
        "2025-Q3",
        "--explain",
        "points",
    ]);
    assert_eq!(exit_code(&out), 1, "{}", stderr(&out));
    let out = run_tallyd(&[
        "report",
        "--config",
        config,
        "--period",
        "2025-Q3",
        "--unit",
        "county/a",
        "--explain",
        "nope",
    ]);
    assert_eq!(exit_code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown indicator \"nope\""),
        "{}",
        stderr(&out)
    );
}

/// Points sheets as of 2025-06-30 and 2025-09-30 (本年积分: the total since
/// 1 January), one member row each, through `csv_form`; and today's, for the
/// metrics. 7000 a member a year; at 2025-09-30 that is 7000 × 273/365 =
/// 5235.6: m1 (5300) and m3 (5236) reach it, m2 (5200) and m4 (5235) not.
///
/// ```text
/// county
/// ├── county/a        m1: 3000 → 5300       today 7000
/// │   └── county/a/x  m2: 3500 → 5200       today 1
/// │                   m4: 4000 → 5235
/// └── county/b        m3: 2000 → 5236
/// ```
fn ytd_setup() -> Setup {
    let t = TestDir::new(&[bundled_plugin("tally_csv_form")]);
    let forms = t.dir.join("forms");
    std::fs::create_dir_all(&forms).unwrap();
    let today = today();
    std::fs::write(
        forms.join("points.csv"),
        format!(
            "单位,日期,姓名,学习积分\n\
             county/a,2025-06-30,m1,3000\n\
             county/a/x,2025-06-30,m2,3500\n\
             county/a/x,2025-06-30,m4,4000\n\
             county/b,2025-06-30,m3,2000\n\
             county/a,2025-09-30,m1,5300\n\
             county/a/x,2025-09-30,m2,5200\n\
             county/a/x,2025-09-30,m4,5235\n\
             county/b,2025-09-30,m3,5236\n\
             county/a,{today},m1,7000\n\
             county/a/x,{today},m2,1\n"
        ),
    )
    .unwrap();
    let config = t
        .config()
        .county()
        .unit("county/a", "县甲")
        .unit("county/a/x", "甲下属")
        .unit("county/b", "县乙")
        .indicator_with(
            "points",
            "学习积分",
            "level",
            "分",
            r#"accumulates = "year""#,
        )
        .toml(&format!(
            r#"
[[targets]]
indicator = "points"
per = "entity"
period = "year"
min = 7000

[[sources]]
id = "sheets"
plugin = "csv_form"
units = ["county"]
schedule = "0 0 0 1 1 *"
backfill_from = "2025-01-01"
[sources.settings]
dir = {forms}
indicators = ["points"]
"#,
            forms = toml_path(&forms),
        ));
    Setup { _dir: t, config }
}

#[test]
fn a_year_to_date_target_is_met_against_the_yearly_minimum_at_the_periods_end() {
    let s = ytd_setup();
    let mut d = s.config.start();
    d.wait_for("the start-up run and the metrics after it", 30, |d| {
        d.sample(
            "tally_target_ratio",
            &[
                ("unit", "county"),
                ("indicator", "points"),
                ("window", "year"),
            ],
        )
        .is_some()
    });
    assert_eq!(d.runs("sheets", "success"), 1, "{}", d.log());

    let q3 = d.get_json("/api/v1/summary?period=2025-Q3");
    let min = 7000.0 * 273.0 / 365.0;
    for (unit, met, total) in [
        ("county", 2, 4),
        ("county/a", 1, 3),
        ("county/a/x", 0, 2),
        ("county/b", 1, 1),
    ] {
        let t = &cell(&q3, unit, "points")["target"];
        assert!(close(&t["min"], min), "{unit}: {t}");
        assert_eq!(
            (t["met"].as_u64(), t["total"].as_u64()),
            (Some(met), Some(total)),
            "{unit}"
        );
    }
    // Growth over Q2, within the year: county/a 15735 against 10500.
    let a = cell(&q3, "county/a", "points");
    assert_eq!(
        (&a["value"], &a["previous"]),
        (&15735.into(), &10500.into())
    );
    assert_eq!(a["change"], 5235);
    assert!(close(&a["change_ratio"], 5235.0 / 10500.0), "{a}");
    // The year 2025 follows 2024, which ended in an earlier year: the count
    // restarted on 1 January, so the growth is the value itself, no ratio.
    let y = d.get_json("/api/v1/summary?period=2025");
    let county = cell(&y, "county", "points");
    assert_eq!(
        (&county["value"], &county["change"]),
        (&20971.into(), &20971.into())
    );
    assert_eq!(county.get("change_ratio"), None, "{county}");
    // Q2 follows Q1 of the same year, which had no sheet: no change.
    let q2 = d.get_json("/api/v1/summary?period=2025-Q2");
    assert_eq!(cell(&q2, "county", "points").get("change"), None);
    // Every source collected every day and every unit reported.
    let p = &q3["period"];
    assert_eq!(
        (&p["complete"], &p["sources_complete"], &p["units_complete"]),
        (&Value::Bool(true), &Value::Bool(true), &Value::Bool(true))
    );

    // Today the year to date asks 7000 × (day of the year) / (days of the
    // year): m1's 7000 reaches it whatever the day, m2's 1 never does. The
    // day, month and quarter to date end today too.
    for window in ["day", "month", "quarter", "year"] {
        let ratio = |unit: &str| {
            d.sample(
                "tally_target_ratio",
                &[("unit", unit), ("indicator", "points"), ("window", window)],
            )
        };
        assert_eq!(ratio("county"), Some(0.5), "{window}");
        assert_eq!(ratio("county/a"), Some(0.5), "{window}");
        assert_eq!(ratio("county/a/x"), Some(0.0), "{window}");
        assert_eq!(ratio("county/b"), None, "{window}: no sheet this year");
    }

    let (status, csv) = d.get("/api/v1/summary?period=2025-Q3&format=csv");
    assert_eq!(status, 200);
    let row = csv.lines().find(|l| l.starts_with("county,")).unwrap();
    assert_eq!(row, "county,某县,20971,12500,5235.62,0.5,");
    let (status, md) = d.get("/api/v1/summary?period=2025-Q3&format=md");
    assert_eq!(status, 200);
    assert!(
        md.contains("| 某县 | 20971 | 12500 | 5235.6 | 2/4（50%） |"),
        "{md}"
    );
    d.terminate();

    // The XLSX a clerk hands on, from the command line.
    let path = s.config.write();
    let out = path.with_file_name("2025-Q3.xlsx");
    let o = run_tallyd(&[
        "report",
        "--config",
        path.to_str().unwrap(),
        "--period",
        "2025-Q3",
        "--format",
        "xlsx",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    use calamine::{Data, Reader};
    let mut wb: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(std::fs::read(&out).unwrap()))
            .unwrap();
    let t = wb.worksheet_range("统计表").unwrap();
    let at = |r: u32, c: u32| t.get_value((r, c)).cloned().unwrap_or(Data::Empty);
    let text = |r: u32| match at(r, 0) {
        Data::String(s) => s,
        other => panic!("row {r}: {other:?}"),
    };
    assert!(
        text(1).starts_with("数据来源完整：1 个数据源在本期每一天都已采集，没有失败"),
        "{}",
        text(1)
    );
    assert_eq!(
        text(2),
        "报送单位完整：数据源覆盖的单位在本期都有数据，没有未报送"
    );
    // 本期, 上期, 每人目标, 达标人数, 人数, 达标率 for the county.
    assert_eq!(at(5, 0), Data::String("某县".into()));
    assert_eq!(
        (at(5, 1), at(5, 2)),
        (Data::Float(20971.0), Data::Float(12500.0))
    );
    assert!(matches!(at(5, 3), Data::Float(v) if (v - min).abs() < 1e-9));
    assert_eq!(
        (at(5, 4), at(5, 5), at(5, 6)),
        (Data::Float(2.0), Data::Float(4.0), Data::Float(0.5))
    );
}
