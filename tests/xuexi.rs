//! The `xuexi` plugin in the real daemon: a points sheet dropped into a
//! directory ends up in the year's summary, summed per unit, on the day the
//! sheet says.

use serde_json::Value;

use crate::support::*;

/// As Excel saves it for a county administrator: GBK, a title row, an export date.
const SHEET: &str = "某县学习强国积分统计（2026年11月）,,,\r\n\
姓名,所属组织,本年积分,导出日期\r\n\
张伟,某县自然资源局党支部,6021,2026-11-20\r\n\
李娜,某县自然资源局党支部,5480,2026-11-20\r\n\
王强,教育局,7315,2026-11-20\r\n\
赵敏,某县民政局党支部,4100,2026-11-20\r\n";

/// The county with two offices (one known by its party branch's name), the
/// two xuexi indicators, and a `xuexi` source over `drop` with `more` keys.
fn xuexi_config(t: &TestDir, drop: &std::path::Path, more: &str) -> TestConfig {
    t.config()
        .county()
        .unit_with(
            "county/natres",
            "自然资源局",
            r#"aliases = ["某县自然资源局党支部"]"#,
        )
        .unit("county/edu", "教育局")
        .indicator("xuexi_points", "学习强国积分", "level", "分")
        .indicator("xuexi_members", "学习强国学员数", "level", "人")
        .toml(&format!(
            r#"
[[sources]]
id = "xuexi"
plugin = "xuexi"
units = ["county"]
schedule = "0 0 3 * * *"
{more}
[sources.settings]
dir = {drop}
"#,
            drop = toml_path(drop),
        ))
}

#[test]
fn an_imported_sheet_sums_per_unit_in_the_year() {
    let t = TestDir::new(&[bundled_plugin("tally_xuexi")]);
    let drop = t.dir.join("xuexi");
    std::fs::create_dir_all(&drop).unwrap();
    let (gbk, _, _) = encoding_rs::GBK.encode(SHEET);
    std::fs::write(drop.join("积分2026-11.csv"), &gbk).unwrap();
    let d = xuexi_config(
        &t,
        &drop,
        "backfill_from = \"2026-11-01\"\nlookback_days = 400",
    )
    .start();
    d.wait_for("the start-up run of the xuexi source", 60, |d| {
        d.runs("xuexi", "success") >= 1
    });

    let year = d.get_json("/api/v1/summary?period=2026");
    assert_eq!(value(&year, "county/natres", "xuexi_points"), 11501.0);
    assert_eq!(value(&year, "county/edu", "xuexi_points"), 7315.0);
    assert_eq!(value(&year, "county", "xuexi_points"), 18816.0);
    assert_eq!(value(&year, "county/natres", "xuexi_members"), 2.0);
    assert_eq!(value(&year, "county", "xuexi_members"), 3.0);
    // 赵敏's organisation has no unit: named in the log, not silently dropped.
    d.wait_for("the unknown organisation in the log", 10, |d| {
        d.log().contains("某县民政局党支部") && d.log().contains("1 members skipped")
    });
}

/// The administrator's end-of-June export: GBK, dated only by its title row.
const JUNE: &str = "某县学习强国积分统计（截至2026-06-30）,,\r\n\
姓名,所属组织,本年积分\r\n\
张伟,某县自然资源局党支部,3100\r\n\
李娜,某县自然资源局党支部,2890\r\n\
王强,教育局,2450\r\n";

/// The end-of-September export: an XLSX dated only by its file name (its
/// title says a year, which is no date), with a last-study-day column that
/// is not the export's date.
fn write_september(path: &std::path::Path) {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    sheet.write(0, 0, "某县2026年度学习强国积分").unwrap();
    for (c, h) in ["学员姓名", "所属组织", "本年积分", "最近学习日期"]
        .iter()
        .enumerate()
    {
        sheet.write(1, c as u16, *h).unwrap();
    }
    for (r, (name, org, points)) in [
        ("张伟", "某县自然资源局党支部", 5600.0),
        ("李娜", "某县自然资源局党支部", 5120.0),
        ("王强", "教育局", 4980.0),
    ]
    .iter()
    .enumerate()
    {
        let r = r as u32 + 2;
        sheet.write(r, 0, *name).unwrap();
        sheet.write(r, 1, *org).unwrap();
        sheet.write(r, 2, *points).unwrap();
        sheet.write(r, 3, "2026-08-14").unwrap();
    }
    book.save(path).unwrap();
}

#[test]
fn a_backfill_of_the_third_quarter_stores_each_sheet_on_the_day_it_says() {
    let t = TestDir::new(&[bundled_plugin("tally_xuexi")]);
    let drop = t.dir.join("xuexi");
    std::fs::create_dir_all(&drop).unwrap();
    let (gbk, _, _) = encoding_rs::GBK.encode(JUNE);
    std::fs::write(drop.join("积分-二季度.csv"), &gbk).unwrap();
    write_september(&drop.join("学习积分_20260930.xlsx"));
    let config = xuexi_config(&t, &drop, "").without_listen().write();
    let collect = |from: &str, to: &str| collect(&config, "xuexi", from, to);
    let report = |period: &str| report_json(&config, period);

    // The backfill of Q3: September's sheet lands on 2026-09-30; June's is
    // outside every chunk, and the warnings say which date it has.
    let log = collect("2026-07-01", "2026-09-30");
    assert!(
        log.contains("积分-二季度.csv: 3 rows dated 2026-06-30 by its title row 1 outside the window 2026-07-01..2026-07-31"),
        "{log}"
    );
    let q3 = report("2026-Q3");
    assert_eq!(value(&q3, "county/natres", "xuexi_points"), 10720.0);
    assert_eq!(value(&q3, "county/edu", "xuexi_points"), 4980.0);
    assert_eq!(value(&q3, "county", "xuexi_points"), 15700.0);
    assert_eq!(value(&q3, "county", "xuexi_members"), 3.0);
    // On 2026-09-30 itself, and nowhere else.
    let day = report("2026-09-30");
    assert_eq!(value(&day, "county", "xuexi_points"), 15700.0);
    assert_eq!(
        value(&report("2026-09-29"), "county", "xuexi_points"),
        Value::Null
    );
    let out = run_tallyd(&[
        "report",
        "--config",
        config.to_str().unwrap(),
        "--period",
        "2026-Q3",
        "--unit",
        "county",
        "--explain",
        "xuexi_points",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let explained: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let days: Vec<&str> = explained["observations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["day"].as_str().unwrap())
        .collect();
    assert_eq!(days, ["2026-09-30"; 3], "{explained:#}");

    // The backfill of Q2 places June's sheet on 2026-06-30.
    let log = collect("2026-04-01", "2026-06-30");
    assert!(
        log.contains("xuexi 2026-06-02..2026-06-30: success, 5 observations\n"),
        "{log}"
    );
    let q2 = report("2026-Q2");
    assert_eq!(value(&q2, "county/natres", "xuexi_points"), 5990.0);
    assert_eq!(value(&q2, "county", "xuexi_points"), 8440.0);
    assert_eq!(
        value(&report("2026-06-30"), "county", "xuexi_points"),
        8440.0
    );
    // Q3 is unchanged, and the months after it hold none of it.
    assert_eq!(value(&report("2026-Q3"), "county", "xuexi_points"), 15700.0);
    let after = report("2026-10-01..2026-11-30");
    assert_eq!(value(&after, "county", "xuexi_points"), Value::Null);
}
