//! The `xuexi` plugin in the real daemon: a points sheet dropped into a
//! directory ends up in the year's summary, summed per unit.

use serde_json::Value;

use crate::support::*;

/// As Excel saves it for a county administrator: GBK, a title row, an export date.
const SHEET: &str = "某县学习强国积分统计（2026年11月）,,,\r\n\
姓名,所属组织,本年积分,导出日期\r\n\
张伟,某县自然资源局党支部,6021,2026-11-20\r\n\
李娜,某县自然资源局党支部,5480,2026-11-20\r\n\
王强,教育局,7315,2026-11-20\r\n\
赵敏,某县民政局党支部,4100,2026-11-20\r\n";

fn value(summary: &Value, unit: &str, indicator: &str) -> Value {
    let u = summary["units"]
        .as_array()
        .expect("units array")
        .iter()
        .find(|u| u["id"] == unit)
        .unwrap_or_else(|| panic!("unit {unit} not in summary: {summary:#}"));
    u["values"][indicator]["value"].clone()
}

#[test]
fn an_imported_sheet_sums_per_unit_in_the_year() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_xuexi")]);
    let drop = dir.join("xuexi");
    std::fs::create_dir_all(&drop).unwrap();
    let (gbk, _, _) = encoding_rs::GBK.encode(SHEET);
    std::fs::write(drop.join("积分2026-11.csv"), &gbk).unwrap();
    let port = free_port();
    let config = write_config(
        dir,
        "tally.toml",
        &format!(
            r#"
[daemon]
listen = "127.0.0.1:{port}"
data_dir = {data}
plugin_dirs = [{plugins}]

[[units]]
id = "county"
name = "某县"
[[units]]
id = "county/natres"
name = "自然资源局"
aliases = ["某县自然资源局党支部"]
[[units]]
id = "county/edu"
name = "教育局"

[[indicators]]
id = "xuexi_points"
name = "学习强国积分"
kind = "level"
unit = "分"
[[indicators]]
id = "xuexi_members"
name = "学习强国学员数"
kind = "level"
unit = "人"

[[sources]]
id = "xuexi"
plugin = "xuexi"
units = ["county"]
schedule = "0 0 3 * * *"
backfill_from = "2026-11-01"
lookback_days = 400
[sources.settings]
dir = {drop}
"#,
            data = toml_path(&dir.join("data")),
            plugins = toml_path(&plugins),
            drop = toml_path(&drop),
        ),
    );
    let d = TestDaemon::start(&config, port);
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
