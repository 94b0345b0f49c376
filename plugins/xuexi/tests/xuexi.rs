//! The `xuexi` plugin on points sheets as administrators export them: GBK CSV
//! with a title row, XLSX with other header names, lifetime points only,
//! phone columns, unknown organisations, files seen before.

use std::path::Path;

use chrono::{NaiveDate, TimeZone, Utc};
use serde_json::json;
use tally_plugin::testkit::{Harness, TestHost};
use tally_plugin::{CollectRequest, CollectResponse, ErrorKind, UnitRef, Window};
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

/// Observations as `unit indicator entity day value` lines.
fn lines(out: &CollectResponse) -> Vec<String> {
    out.observations
        .iter()
        .map(|o| {
            format!(
                "{} {} {} {} {}",
                o.unit.as_deref().unwrap_or("-"),
                o.indicator,
                if o.entity.is_empty() { "-" } else { &o.entity },
                o.day,
                o.value
            )
        })
        .collect()
}

fn gbk(text: &str) -> Vec<u8> {
    let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
    assert!(!unmappable);
    bytes.into_owned()
}

/// An Excel export: a title row, an empty row, then the header and the rows.
fn write_xlsx(path: &Path, header: &[&str], rows: &[(&str, &str, f64)]) {
    use rust_xlsxwriter::Workbook;
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("积分统计").unwrap();
    sheet
        .write_string(0, 0, "某县学习强国积分统计（2026年11月）")
        .unwrap();
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

const GBK_SHEET: &str = "某县学习强国积分统计（2026年11月）,,\r\n\
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
            "county/natres xuexi_points 张伟 2026-11-27 6021",
            "county/natres xuexi_points 李娜 2026-11-27 5480",
            "county/edu xuexi_points 王强 2026-11-27 7315",
            "county/edu xuexi_members - 2026-11-27 1",
            "county/natres xuexi_members - 2026-11-27 2",
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
        .filter(|(_, m)| m.contains("imported for 2026-11-27; skipped"))
        .count();
    assert_eq!(skipped, 2, "{:?}", p.host().logs());
}

#[test]
fn lifetime_points_count_from_the_first_import_of_the_year() {
    let dir = tempfile::tempdir().unwrap();
    let header = ["序号", "学员姓名", "学习组织", "总积分"];
    write_xlsx(
        &dir.path().join("积分2026-11.xlsx"),
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
    assert!(w.contains("积分2026-11.xlsx: 2 members"), "{w}");
    assert!(
        w.contains(
            "2 members have lifetime points (总积分) only and no baseline for 2026 yet: 张伟, 王强"
        ),
        "{w}"
    );

    // A week later: the next export, with a new member.
    write_xlsx(
        &dir.path().join("积分2026-12.xlsx"),
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
    std::fs::write(dir.path().join("a-2026-11.csv"), november_sheet).unwrap();
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
    std::fs::write(dir.path().join("b-2026-12.csv"), december_sheet).unwrap();
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
    std::fs::write(dir.path().join("积分.csv"), sheet).unwrap();
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
    let place = dir.path().join("积分.csv").display().to_string();
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
                "{b}: 1 rows dated outside the window 2026-11-01..2026-11-27; the file is read again \
                 on each run until a window covers them"
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
            "说明.csv: no header row with a member column (姓名/学员姓名/成员) and a points column \
             (本年积分/年度积分/年积分 or 总积分/累计积分/学习积分); file skipped"
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
