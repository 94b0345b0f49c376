//! The `xuexi` plugin on points sheets as administrators export them: GBK CSV
//! with a title row, XLSX with other header names, lifetime points only,
//! phone columns, unknown organisations, files seen before.

use std::path::Path;

use chrono::{NaiveDate, TimeZone, Utc};
use serde_json::json;
use tally_plugin::testkit::{Harness, TestHost};
use tally_plugin::{CollectRequest, ErrorKind, UnitRef, Window};
use tally_xuexi::Xuexi;

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn unit(id: &str, name: &str, aliases: &[&str]) -> UnitRef {
    UnitRef {
        id: id.into(),
        name: name.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
    }
}

/// A request as the daemon sends it for a county-wide source.
fn request(from: NaiveDate, to: NaiveDate, state: Option<serde_json::Value>) -> CollectRequest {
    let mut req = CollectRequest::new("county-xuexi", Window::new(from, to));
    req.units = vec![
        unit("county", "某县", &[]),
        unit("county/natres", "自然资源局", &["某县自然资源局党支部"]),
        unit("county/edu", "教育局", &["某县教育局党总支"]),
    ];
    req.state = state;
    req
}

/// The default request: November 2026 up to the test clock's day.
fn november(state: Option<serde_json::Value>) -> CollectRequest {
    request(date(2026, 11, 1), date(2026, 11, 27), state)
}

/// A host whose clock reads 10:00 in Shanghai on that day.
fn host_on(day: NaiveDate) -> TestHost {
    let now = Utc.from_utc_datetime(&day.and_hms_opt(2, 0, 0).unwrap());
    TestHost::new().at(now)
}

fn plugin(dir: &Path, host: TestHost) -> Harness<Xuexi> {
    Harness::<Xuexi>::create(json!({"dir": dir}), host).unwrap()
}

use tally_plugin::testkit::observation_lines as lines;

fn gbk(text: &str) -> Vec<u8> {
    let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
    assert!(!unmappable);
    bytes.into_owned()
}

/// An Excel export: a title row (without a date), an empty row, then the
/// header and the rows. Its date is in its file name.
fn write_xlsx(path: &Path, header: &[&str], rows: &[(&str, &str, f64)]) {
    use rust_xlsxwriter::Workbook;
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("积分统计").unwrap();
    sheet.write_string(0, 0, "某县学习强国积分统计").unwrap();
    for (c, h) in header.iter().enumerate() {
        sheet.write_string(2, c as u16, *h).unwrap();
    }
    for (i, (name, org, points)) in rows.iter().enumerate() {
        let r = 3 + i as u32;
        sheet.write_number(r, 0, (i + 1) as f64).unwrap();
        sheet.write_string(r, 1, *name).unwrap();
        sheet.write_string(r, 2, *org).unwrap();
        sheet.write_number(r, 3, *points).unwrap();
    }
    book.save(path).unwrap();
}

/// As the admin console exports it: a title row that says the date, no date column.
const GBK_SHEET: &str = "学习积分统计（截至2026-11-20）,,\r\n\
姓名,所属组织,本年积分\r\n\
张伟,某县自然资源局党支部,6021\r\n\
李娜,某县自然资源局党支部,\"5,480\"\r\n\
王强,某县教育局党总支,7315\r\n\
合计,,18816\r\n";

#[test]
fn gbk_csv_with_a_title_row() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("积分2026-11.csv"), gbk(GBK_SHEET)).unwrap();
    let mut p = plugin(dir.path(), TestHost::new());
    assert_eq!(p.emits(), ["xuexi_points", "xuexi_members"]);
    let out = p.collect(&november(None)).unwrap();
    assert_eq!(out.warnings, Vec::<String>::new());
    assert_eq!(
        lines(&out),
        [
            "county/natres xuexi_points 张伟 2026-11-20 6021",
            "county/natres xuexi_points 李娜 2026-11-20 5480",
            "county/edu xuexi_points 王强 2026-11-20 7315",
            "county/edu xuexi_members - 2026-11-20 1",
            "county/natres xuexi_members - 2026-11-20 2",
        ]
    );
    let files = &out.state.as_ref().unwrap()["files"];
    assert_eq!(files.as_object().unwrap().len(), 1, "{files}");
}

#[test]
fn the_same_file_again_is_skipped_whatever_its_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("积分2026-11.csv"), gbk(GBK_SHEET)).unwrap();
    let first = plugin(dir.path(), TestHost::new())
        .collect(&november(None))
        .unwrap();
    assert_eq!(first.observations.len(), 5);

    // Dropped again under another name, the next day.
    std::fs::write(dir.path().join("积分2026-11 (1).csv"), gbk(GBK_SHEET)).unwrap();
    let mut p = plugin(dir.path(), host_on(date(2026, 11, 28)));
    let req = request(date(2026, 11, 1), date(2026, 11, 28), first.state.clone());
    let again = p.collect(&req).unwrap();
    assert_eq!(lines(&again), Vec::<String>::new());
    assert_eq!(again.warnings, Vec::<String>::new());
    assert_eq!(again.state, None, "nothing new: the state is kept");
    let skipped = p
        .host()
        .logs()
        .iter()
        .filter(|(_, m)| m.contains("imported for 2026-11-20; skipped"))
        .count();
    assert_eq!(skipped, 2, "{:?}", p.host().logs());
}

#[test]
fn lifetime_points_count_from_the_first_import_of_the_year() {
    let dir = tempfile::tempdir().unwrap();
    let header = ["序号", "学员姓名", "学习组织", "总积分"];
    write_xlsx(
        &dir.path().join("积分_2026-11-27.xlsx"),
        &header,
        &[("张伟", "自然资源局", 18342.0), ("王强", "教育局", 20117.0)],
    );
    let first = plugin(dir.path(), TestHost::new())
        .collect(&november(None))
        .unwrap();
    // No baseline yet: members are counted, no points are made up.
    assert_eq!(
        lines(&first),
        [
            "county/edu xuexi_members - 2026-11-27 1",
            "county/natres xuexi_members - 2026-11-27 1",
        ]
    );
    assert_eq!(first.warnings.len(), 1, "{:?}", first.warnings);
    let w = &first.warnings[0];
    assert!(w.contains("积分_2026-11-27.xlsx: 2 members"), "{w}");
    assert!(
        w.contains(
            "2 members have lifetime points (总积分) only and no baseline for 2026 yet: 张伟, 王强"
        ),
        "{w}"
    );

    // A week later: the next export, with a new member.
    write_xlsx(
        &dir.path().join("积分_2026-12-04.xlsx"),
        &header,
        &[
            ("张伟", "自然资源局", 18800.0),
            ("王强", "教育局", 20117.0),
            ("刘洋", "某县教育局党总支", 9876.0),
        ],
    );
    let req = request(date(2026, 12, 1), date(2026, 12, 4), first.state.clone());
    let second = plugin(dir.path(), host_on(date(2026, 12, 4)))
        .collect(&req)
        .unwrap();
    assert_eq!(
        lines(&second),
        [
            "county/natres xuexi_points 张伟 2026-12-04 458",
            "county/edu xuexi_points 王强 2026-12-04 0",
            "county/edu xuexi_members - 2026-12-04 2",
            "county/natres xuexi_members - 2026-12-04 1",
        ]
    );
    assert_eq!(second.warnings.len(), 1, "{:?}", second.warnings);
    assert!(
        second.warnings[0].contains(
            "1 members have lifetime points (总积分) only and no baseline for 2026 yet: 刘洋"
        ),
        "{}",
        second.warnings[0]
    );
    let baselines = &second.state.as_ref().unwrap()["baselines"]["2026"];
    assert_eq!(baselines["county/natres|张伟"]["points"], 18342.0);
    assert_eq!(baselines["county/edu|刘洋"]["points"], 9876.0);
}

#[test]
fn yearly_and_lifetime_columns_give_an_exact_baseline_and_phones_stay_out() {
    let dir = tempfile::tempdir().unwrap();
    // The layout of platforms.md §4.2, UTF-8 with BOM, two members named 张伟.
    let november_sheet = "\u{feff}序号,姓名,手机号,所属组织,本月积分,本年积分,总积分,排名\n\
        1,张伟,138****5678,某县自然资源局党支部,612,6021,18342,3\n\
        2,张伟,139****0021,某县自然资源局党支部,540,5480,12210,7\n";
    std::fs::write(dir.path().join("a-2026-11-27.csv"), november_sheet).unwrap();
    let first = plugin(dir.path(), TestHost::new())
        .collect(&november(None))
        .unwrap();
    assert_eq!(first.warnings, Vec::<String>::new());
    let entities: Vec<&str> = first
        .observations
        .iter()
        .filter(|o| o.indicator == "xuexi_points")
        .map(|o| o.entity.as_str())
        .collect();
    assert_eq!(entities.len(), 2);
    assert_ne!(entities[0], entities[1], "same name, two members");
    for e in &entities {
        assert!(
            e.starts_with("张伟#") && e.len() == "张伟#".len() + 8,
            "{e}"
        );
    }
    let values: Vec<f64> = first.observations.iter().map(|o| o.value).collect();
    assert_eq!(values, [6021.0, 5480.0, 2.0]);

    // December's sheet has lifetime points only: yearly = lifetime - (lifetime - yearly in November).
    let december_sheet = "姓名,手机号码,所属组织,累计积分\n\
        张伟,138****5678,某县自然资源局党支部,18900\n\
        张伟,139****0021,某县自然资源局党支部,12300\n";
    std::fs::write(dir.path().join("b-20261204.csv"), december_sheet).unwrap();
    let req = request(date(2026, 12, 1), date(2026, 12, 4), first.state.clone());
    let mut p = plugin(dir.path(), host_on(date(2026, 12, 4)));
    let second = p.collect(&req).unwrap();
    assert_eq!(second.warnings, Vec::<String>::new());
    let got: Vec<(&str, f64)> = second
        .observations
        .iter()
        .filter(|o| o.indicator == "xuexi_points")
        .map(|o| (o.entity.as_str(), o.value))
        .collect();
    // 18900 - (18342 - 6021) and 12300 - (12210 - 5480).
    assert_eq!(got, [(entities[0], 6579.0), (entities[1], 5570.0)]);

    // No phone number anywhere: observations, warnings, state, log.
    let everything = format!(
        "{} {} {:?}",
        serde_json::to_string(&first).unwrap(),
        serde_json::to_string(&second).unwrap(),
        p.host().logs()
    );
    for digits in ["5678", "0021", "138", "139"] {
        assert!(!everything.contains(digits), "{digits} in {everything}");
    }
}

#[test]
fn an_organisation_without_a_unit_is_reported_with_its_member_count() {
    let dir = tempfile::tempdir().unwrap();
    let sheet = "姓名,所在支部,年度积分(分)\n\
        张伟,某县自然资源局党支部,6021\n\
        赵敏,某县民政局党支部,4100\n\
        孙丽,某县民政局党支部,3900\n\
        周杰,,1200\n";
    std::fs::write(dir.path().join("积分20261127.csv"), sheet).unwrap();
    let out = plugin(dir.path(), TestHost::new())
        .collect(&november(None))
        .unwrap();
    assert_eq!(
        lines(&out),
        [
            "county/natres xuexi_points 张伟 2026-11-27 6021",
            "county/natres xuexi_members - 2026-11-27 1",
        ]
    );
    let place = dir.path().join("积分20261127.csv").display().to_string();
    assert_eq!(
        out.warnings,
        [
            format!(
                "{place}: organisation \"\" matches no unit of this source (1 members skipped); \
                 add it to a unit's aliases; the file is read again on each run until then"
            ),
            format!(
                "{place}: organisation \"某县民政局党支部\" matches no unit of this source (2 members skipped); \
                 add it to a unit's aliases; the file is read again on each run until then"
            ),
        ]
    );
    // Not remembered: once the alias is added, the next run imports the rest.
    let files = &out.state.as_ref().unwrap()["files"];
    assert_eq!(files.as_object().unwrap().len(), 0, "{files}");
    let mut req = november(out.state.clone());
    req.units
        .push(unit("county/civil", "民政局", &["某县民政局党支部"]));
    let again = plugin(dir.path(), TestHost::new()).collect(&req).unwrap();
    assert_eq!(again.warnings.len(), 1, "{:?}", again.warnings);
    assert_eq!(
        lines(&again)[..3],
        [
            "county/natres xuexi_points 张伟 2026-11-27 6021",
            "county/civil xuexi_points 赵敏 2026-11-27 4100",
            "county/civil xuexi_points 孙丽 2026-11-27 3900",
        ]
    );
}

#[test]
fn export_dates_place_the_rows_and_must_be_in_the_window() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.csv"),
        "姓名,所属组织,本年积分,导出日期\n张伟,自然资源局,6021,2026/11/20\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.csv"),
        "姓名,所属组织,本年积分,导出日期\n王强,教育局,5000,2026年10月31日\n王强,教育局,x,2026-11-01\n",
    )
    .unwrap();
    let out = plugin(dir.path(), TestHost::new())
        .collect(&november(None))
        .unwrap();
    assert_eq!(
        lines(&out),
        [
            "county/natres xuexi_points 张伟 2026-11-20 6021",
            "county/natres xuexi_members - 2026-11-20 1",
        ]
    );
    let b = dir.path().join("b.csv").display().to_string();
    assert_eq!(
        out.warnings,
        [
            format!(
                "{b}: row 3: column \"本年积分\": bad points \"x\" (a whole number of points); row skipped"
            ),
            format!(
                "{b}: 1 rows dated 2026-10-31 by its 导出日期 column outside the window \
                 2026-11-01..2026-11-27; the file is read again on each run until a window covers them"
            ),
        ]
    );
    let files = out.state.as_ref().unwrap()["files"].as_object().unwrap();
    let names: Vec<&str> = files
        .values()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.csv"]);
}

#[test]
fn files_without_a_header_and_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("说明.csv"),
        "请按模板填写\n单位,日期,会议次数\n",
    )
    .unwrap();
    let out = plugin(dir.path(), TestHost::new())
        .collect(&november(None))
        .unwrap();
    assert_eq!(out.observations, []);
    assert_eq!(out.warnings.len(), 1);
    assert!(
        out.warnings[0].ends_with(
            "说明.csv: unknown layout: no header row with a member column (姓名/学员姓名/成员) and a \
             points column (本年积分/年度积分/年积分 or 总积分/累计积分/学习积分); rows seen: \
             row 1: 请按模板填写; row 2: 单位 | 日期 | 会议次数; file skipped"
        ),
        "{}",
        out.warnings[0]
    );

    let e = Harness::<Xuexi>::create(
        json!({"dir": dir.path(), "points": "month"}),
        TestHost::new(),
    )
    .err()
    .unwrap();
    assert_eq!(e.kind, ErrorKind::Settings);
    assert!(
        e.message.starts_with("points: unknown variant `month`"),
        "{}",
        e.message
    );
    let e = Harness::<Xuexi>::create(json!({"dir": dir.path(), "folder": "x"}), TestHost::new())
        .err()
        .unwrap();
    assert!(
        e.message.contains("unknown field `folder`"),
        "{}",
        e.message
    );

    let missing = dir.path().join("not-mounted");
    let e = plugin(&missing, TestHost::new())
        .collect(&november(None))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Data);
    assert!(
        e.message.starts_with("dir: cannot read the drop directory"),
        "{}",
        e.message
    );
}

#[test]
fn points_total_derives_even_when_a_yearly_column_exists() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.csv"),
        "姓名,所属组织,本年积分,总积分\n张伟,自然资源局,100,18342\n",
    )
    .unwrap();
    let settings = json!({"dir": dir.path(), "points": "total"});
    let first = Harness::<Xuexi>::create(settings.clone(), TestHost::new())
        .unwrap()
        .collect(&november(None))
        .unwrap();
    assert_eq!(
        lines(&first),
        ["county/natres xuexi_members - 2026-11-27 1"]
    );
    std::fs::write(
        dir.path().join("b.csv"),
        "姓名,所属组织,本年积分,总积分\n张伟,自然资源局,100,18400\n",
    )
    .unwrap();
    let req = request(date(2026, 12, 1), date(2026, 12, 4), first.state.clone());
    let second = Harness::<Xuexi>::create(settings, host_on(date(2026, 12, 4)))
        .unwrap()
        .collect(&req)
        .unwrap();
    assert_eq!(
        lines(&second)[0],
        "county/natres xuexi_points 张伟 2026-12-04 58"
    );
}

/// A quarter's request, as a backfill of that quarter sends it.
fn quarter(from: (u32, u32), to: (u32, u32), state: Option<serde_json::Value>) -> CollectRequest {
    request(date(2026, from.0, from.1), date(2026, to.0, to.1), state)
}

/// The administrator's two exports of the year so far, GBK, dated only by
/// their title rows.
fn june_and_september(dir: &Path) {
    let june = "学习积分统计（截至2026-06-30）,,\r\n姓名,所属组织,本年积分\r\n\
                张伟,某县自然资源局党支部,3100\r\n王强,某县教育局党总支,2450\r\n";
    let september = "学习积分统计（统计时间：2026年7月1日至9月30日）,,\r\n姓名,所属组织,本年积分\r\n\
                     张伟,某县自然资源局党支部,5600\r\n王强,某县教育局党总支,4980\r\n";
    std::fs::write(dir.join("积分-二季度.csv"), gbk(june)).unwrap();
    std::fs::write(dir.join("积分-三季度.csv"), gbk(september)).unwrap();
}

#[test]
fn a_backfill_of_the_third_quarter_stores_september_on_its_day_and_june_waits() {
    let dir = tempfile::tempdir().unwrap();
    june_and_september(dir.path());
    // Imported in December, as the backfill of 2026-Q3 runs then.
    let host = || host_on(date(2026, 12, 6));
    let q3 = plugin(dir.path(), host())
        .collect(&quarter((7, 1), (9, 30), None))
        .unwrap();
    assert_eq!(
        lines(&q3),
        [
            "county/natres xuexi_points 张伟 2026-09-30 5600",
            "county/edu xuexi_points 王强 2026-09-30 4980",
            "county/edu xuexi_members - 2026-09-30 1",
            "county/natres xuexi_members - 2026-09-30 1",
        ]
    );
    let june = dir.path().join("积分-二季度.csv").display().to_string();
    assert_eq!(
        q3.warnings,
        [format!(
            "{june}: 2 rows dated 2026-06-30 by its title row 1 outside the window 2026-07-01..2026-09-30; \
             the file is read again on each run until a window covers them"
        )]
    );

    // The scheduled run of December: neither sheet belongs in Q4.
    let q4 = plugin(dir.path(), host())
        .collect(&quarter((12, 1), (12, 6), q3.state.clone()))
        .unwrap();
    assert_eq!(lines(&q4), Vec::<String>::new());
    assert_eq!(q4.warnings.len(), 1, "{:?}", q4.warnings);
    assert!(
        q4.warnings[0].contains("dated 2026-06-30"),
        "{}",
        q4.warnings[0]
    );

    // The backfill of Q2 places June's sheet on its day.
    let q2 = plugin(dir.path(), host())
        .collect(&quarter((4, 1), (6, 30), q4.state.clone().or(q3.state)))
        .unwrap();
    assert_eq!(q2.warnings, Vec::<String>::new());
    assert_eq!(
        lines(&q2)[..2],
        [
            "county/natres xuexi_points 张伟 2026-06-30 3100",
            "county/edu xuexi_points 王强 2026-06-30 2450",
        ]
    );
}

#[test]
fn an_xlsx_dated_only_by_its_file_name() {
    let dir = tempfile::tempdir().unwrap();
    write_xlsx(
        &dir.path().join("学习积分_20260930153012.xlsx"),
        &["序号", "学员姓名", "学习组织", "本年积分"],
        &[("张伟", "自然资源局", 5600.0), ("王强", "教育局", 4980.0)],
    );
    let mut p = plugin(dir.path(), host_on(date(2026, 10, 8)));
    let out = p.collect(&quarter((7, 1), (10, 8), None)).unwrap();
    assert_eq!(out.warnings, Vec::<String>::new());
    assert_eq!(
        lines(&out)[..2],
        [
            "county/natres xuexi_points 张伟 2026-09-30 5600",
            "county/edu xuexi_points 王强 2026-09-30 4980",
        ]
    );
}

#[test]
fn a_sheet_that_says_no_day_is_dated_as_the_warning_says() {
    let dir = tempfile::tempdir().unwrap();
    // A month in the title, imported after the month: its last day.
    std::fs::write(
        dir.path().join("a.csv"),
        gbk("某县学习强国积分统计（2026年9月）,,\r\n姓名,所属组织,本年积分\r\n张伟,自然资源局,5600\r\n"),
    )
    .unwrap();
    // Nothing says a date (2026年度 is a year, the phone no date): the import day.
    std::fs::write(
        dir.path().join("b.csv"),
        "2026年度学习积分 联系电话13920260930\n姓名,所属组织,本年积分\n王强,教育局,6100\n",
    )
    .unwrap();
    let out = plugin(dir.path(), TestHost::new())
        .collect(&quarter((9, 1), (11, 27), None))
        .unwrap();
    assert_eq!(
        lines(&out)[..2],
        [
            "county/natres xuexi_points 张伟 2026-09-30 5600",
            "county/edu xuexi_points 王强 2026-11-27 6100",
        ]
    );
    let (a, b) = (
        dir.path().join("a.csv").display().to_string(),
        dir.path().join("b.csv").display().to_string(),
    );
    assert_eq!(
        out.warnings,
        [
            format!(
                "{a}: its title row 1 says 2026-09 but no day; dated on its last day 2026-09-30"
            ),
            format!(
                "{b}: neither a date column (日期/导出日期/统计日期), its title rows nor its file name \
                 say the sheet's date; dated on the import day 2026-11-27"
            ),
        ]
    );
}

#[test]
fn a_last_study_day_column_is_not_the_sheets_date() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("积分.csv"),
        "数据截至2026年9月30日\n姓名,所属组织,本年积分,最近学习日期,最后学习时间\n\
         张伟,自然资源局,5600,2026-08-14,2026-08-14 21:03\n",
    )
    .unwrap();
    let out = plugin(dir.path(), TestHost::new())
        .collect(&quarter((7, 1), (11, 27), None))
        .unwrap();
    assert_eq!(out.warnings, Vec::<String>::new());
    assert_eq!(
        lines(&out),
        [
            "county/natres xuexi_points 张伟 2026-09-30 5600",
            "county/natres xuexi_members - 2026-09-30 1",
        ]
    );
}

#[test]
fn an_unknown_layout_names_the_headers_seen_and_no_phone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("export.csv"),
        "学员,手机,得分\n张伟,138****5678,5600\n",
    )
    .unwrap();
    let out = plugin(dir.path(), TestHost::new())
        .collect(&november(None))
        .unwrap();
    assert_eq!(out.observations, []);
    let place = dir.path().join("export.csv").display().to_string();
    assert_eq!(
        out.warnings,
        [format!(
            "{place}: unknown layout: no header row with a member column (姓名/学员姓名/成员) and a \
             points column (本年积分/年度积分/年积分 or 总积分/累计积分/学习积分); rows seen: \
             row 1: 学员 | 手机 | 得分; row 2: 张伟 | … | …; file skipped"
        )]
    );
    assert_eq!(
        out.state, None,
        "nothing remembered: read again once replaced"
    );
}

#[test]
fn an_older_lifetime_sheet_imported_later_becomes_the_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let sheet = |total: u32| format!("姓名,所属组织,总积分\n张伟,自然资源局,{total}\n");
    std::fs::write(dir.path().join("积分_2026-09-30.csv"), sheet(18_000)).unwrap();
    std::fs::write(dir.path().join("积分_2026-06-30.csv"), sheet(16_500)).unwrap();
    let host = || host_on(date(2026, 12, 6));
    // A backfill of Q3 first: September's sheet becomes the baseline.
    let q3 = plugin(dir.path(), host())
        .collect(&quarter((7, 1), (9, 30), None))
        .unwrap();
    assert_eq!(lines(&q3), ["county/natres xuexi_members - 2026-09-30 1"]);
    // Then Q2: June's older sheet is the baseline now, September's is forgotten...
    let q2 = plugin(dir.path(), host())
        .collect(&quarter((4, 1), (6, 30), q3.state.clone()))
        .unwrap();
    assert_eq!(lines(&q2), ["county/natres xuexi_members - 2026-06-30 1"]);
    assert!(
        q2.warnings
            .iter()
            .any(|w| w.contains("older than their baseline: 张伟 (was 2026-09-30)")),
        "{:?}",
        q2.warnings
    );
    // ...and read again by the next run over Q3, counting from June.
    let again = plugin(dir.path(), host())
        .collect(&quarter((7, 1), (9, 30), q2.state.clone()))
        .unwrap();
    assert_eq!(
        lines(&again),
        [
            "county/natres xuexi_points 张伟 2026-09-30 1500",
            "county/natres xuexi_members - 2026-09-30 1",
        ]
    );
}
