//! The `csv_form` plugin on forms as units fill them in: UTF-8 with BOM, GBK,
//! XLSX with a title row, malformed rows.

use std::path::Path;

use chrono::NaiveDate;
use serde_json::json;
use tally_csv_form::CsvForm;
use tally_plugin::testkit::{Harness, TestHost};
use tally_plugin::{
    CollectRequest, CollectResponse, Error, ErrorKind, IndicatorRef, Kind, UnitRef, Window,
};

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

fn indicator(id: &str, name: &str, unit: &str) -> IndicatorRef {
    IndicatorRef {
        id: id.into(),
        name: name.into(),
        kind: Kind::Count,
        unit: unit.into(),
    }
}

/// A long window, as the daemon asks of forms sources: 2026-07-01..2026-11-27.
fn request() -> CollectRequest {
    let mut req = CollectRequest::new(
        "county-forms",
        Window::new(date(2026, 7, 1), date(2026, 11, 27)),
    );
    req.units = vec![
        unit("county", "某县", &[]),
        unit("county/natres", "自然资源局", &["某县自然资源局"]),
        unit("county/edu", "教育局", &["县教育局"]),
        unit("county/edu/school1", "第一中学", &["某县第一中学"]),
    ];
    req.indicators = vec![
        indicator("meetings", "会议次数", "次"),
        indicator("trainings", "培训次数", "次"),
        indicator("commentary", "网评文章数", "篇"),
        indicator("incidents", "舆情处置数", "起"),
    ];
    req
}

fn run(dir: &Path, extra: serde_json::Value) -> Result<CollectResponse, Error> {
    let mut settings = json!({"dir": dir});
    if let (Some(s), Some(e)) = (settings.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    Harness::<CsvForm>::create(settings, TestHost::new())?.collect(&request())
}

use tally_plugin::testkit::observation_lines as lines;

#[test]
fn utf8_with_bom_title_row_and_unit_suffixes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("natres-2026-10.csv");
    let text = "\u{feff}某县自然资源局2026年10月活动统计表,,,,\n\
                单位,日期,会议次数(次),培训次数（次）,备注\n\
                某县自然资源局,2026-10-09,2,1,党组会\n\
                自然资源局,2026/10/15,1,,\n\
                county/natres,20261030,3,2,\n\
                自然资源局,2026-06-30,5,5,上季度补报\n\
                合计,,6,3,\n";
    std::fs::write(&path, text).unwrap();
    let out = run(dir.path(), json!({})).unwrap();
    assert_eq!(
        lines(&out),
        [
            "county/natres meetings - 2026-10-09 2",
            "county/natres trainings - 2026-10-09 1",
            "county/natres meetings - 2026-10-15 1",
            "county/natres meetings - 2026-10-30 3",
            "county/natres trainings - 2026-10-30 2",
        ]
    );
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    // Read-only: the clerk's file is untouched.
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn gbk_csv_with_months_and_display_names() {
    let dir = tempfile::tempdir().unwrap();
    let text = "单位名称,月份,网评文章数,舆情处置数\r\n\
                教育局,2026年9月,12,1\r\n\
                县教育局,2026年10月,\"1,024\",0\r\n\
                某县第一中学,2026-11,7,\r\n";
    let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
    assert!(!unmappable);
    assert!(
        std::str::from_utf8(&bytes).is_err(),
        "the input really is GBK"
    );
    std::fs::write(dir.path().join("教育局.csv"), &bytes).unwrap();

    for encoding in ["auto", "gbk"] {
        let out = run(dir.path(), json!({"encoding": encoding})).unwrap();
        assert_eq!(
            lines(&out),
            [
                "county/edu commentary - 2026-09-01 12",
                "county/edu incidents - 2026-09-01 1",
                "county/edu commentary - 2026-10-01 1024",
                "county/edu incidents - 2026-10-01 0",
                "county/edu/school1 commentary - 2026-11-01 7",
            ]
        );
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    }

    // Told it is UTF-8, the plugin says which file it cannot read.
    let out = run(dir.path(), json!({"encoding": "utf-8"})).unwrap();
    assert!(out.observations.is_empty());
    assert_eq!(out.warnings.len(), 1);
    assert!(
        out.warnings[0].contains("教育局.csv: not valid UTF-8"),
        "{:?}",
        out.warnings
    );
}

#[test]
fn xlsx_with_title_row_quarters_and_entities() {
    use rust_xlsxwriter::Workbook;

    let dir = tempfile::tempdir().unwrap();
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("学习培训").unwrap();
    sheet
        .write_string(0, 0, "某县2026年第三季度学习培训情况统计表")
        .unwrap();
    let header = ["序号", "单位", "姓名", "期间", "培训次数(次)", "会议次数"];
    for (c, h) in header.iter().enumerate() {
        sheet.write_string(2, c as u16, *h).unwrap();
    }
    let rows: [(&str, &str, &str, f64, &str); 3] = [
        ("某县自然资源局", "张三", "2026年第三季度", 4.0, "2"),
        ("教育局", "李四", "2026-Q3", 2.0, ""),
        ("某县第一中学", "王五", "2026年第四季度", 1.0, "三"),
    ];
    for (i, (u, who, period, trainings, meetings)) in rows.iter().enumerate() {
        let r = 3 + i as u32;
        sheet.write_number(r, 0, (i + 1) as f64).unwrap();
        sheet.write_string(r, 1, *u).unwrap();
        sheet.write_string(r, 2, *who).unwrap();
        sheet.write_string(r, 3, *period).unwrap();
        sheet.write_number(r, 4, *trainings).unwrap();
        sheet.write_string(r, 5, *meetings).unwrap();
    }
    let path = dir.path().join("培训统计.xlsx");
    book.save(&path).unwrap();

    let out = run(dir.path(), json!({})).unwrap();
    assert_eq!(
        lines(&out),
        [
            "county/natres trainings 张三 2026-07-01 4",
            "county/natres meetings 张三 2026-07-01 2",
            "county/edu trainings 李四 2026-07-01 2",
            "county/edu/school1 trainings 王五 2026-10-01 1",
        ]
    );
    assert_eq!(
        out.warnings,
        [format!(
            "{} [学习培训]: row 6: column \"会议次数\": bad number \"三\"; value skipped",
            path.display()
        )]
    );
}

#[test]
fn malformed_rows_are_warnings_naming_file_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("forms.csv");
    std::fs::write(
        &path,
        "unit,day,meetings,trainings,签到人数\n\
         county/natres,2026-10-09,2,1,30\n\
         某县水利局,2026-10-09,1,1,12\n\
         教育局,2026-10-32,1,1,\n\
         教育局,2026-10-12,12x,1,\n\
         教育局,,1,1,\n",
    )
    .unwrap();
    let out = run(dir.path(), json!({})).unwrap();
    assert_eq!(
        lines(&out),
        [
            "county/natres meetings - 2026-10-09 2",
            "county/natres trainings - 2026-10-09 1",
            "county/edu trainings - 2026-10-12 1",
        ]
    );
    let f = path.display();
    assert_eq!(
        out.warnings,
        [
            format!(
                "{f}: row 1: unknown columns \"签到人数\" (not an indicator id or name); ignored"
            ),
            format!(
                "{f}: row 3: column \"unit\": unknown unit \"某县水利局\" (not a unit id, name or alias of this source); row skipped"
            ),
            format!(
                "{f}: row 4: column \"day\": bad date \"2026-10-32\" (a day 2026-10-15, a month 2026-10 or a quarter 2026-Q3); row skipped"
            ),
            format!("{f}: row 5: column \"meetings\": bad number \"12x\"; value skipped"),
            format!("{f}: row 6: column \"day\": no date; row skipped"),
        ]
    );
}

#[test]
fn every_problem_of_a_row_is_a_warning_not_only_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("forms.csv");
    std::fs::write(
        &path,
        "unit,day,meetings,trainings\n\
         某县水利局,2026-13,三,12x\n\
         教育局,2026-10-12,4,1\n",
    )
    .unwrap();
    let out = run(dir.path(), json!({})).unwrap();
    assert_eq!(
        lines(&out),
        [
            "county/edu meetings - 2026-10-12 4",
            "county/edu trainings - 2026-10-12 1",
        ]
    );
    let f = path.display();
    assert_eq!(
        out.warnings,
        [
            format!(
                "{f}: row 2: column \"unit\": unknown unit \"某县水利局\" (not a unit id, name or alias of this source); row skipped"
            ),
            format!(
                "{f}: row 2: column \"day\": bad date \"2026-13\" (a day 2026-10-15, a month 2026-10 or a quarter 2026-Q3); row skipped"
            ),
            format!("{f}: row 2: column \"meetings\": bad number \"三\"; value skipped"),
            format!("{f}: row 2: column \"trainings\": bad number \"12x\"; value skipped"),
        ]
    );
    // Each reads back by row and column in the SDK's one shape.
    let file = path.display().to_string();
    let placed: Vec<(Option<usize>, Option<String>)> = out
        .warnings
        .iter()
        .map(|w| {
            let p = tally_plugin::Placed::parse(w, &file).unwrap();
            (p.row, p.column)
        })
        .collect();
    assert_eq!(
        placed,
        [
            (Some(2), Some("unit".to_owned())),
            (Some(2), Some("day".to_owned())),
            (Some(2), Some("meetings".to_owned())),
            (Some(2), Some("trainings".to_owned())),
        ]
    );
}

#[test]
fn the_indicators_setting_is_what_the_source_emits() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.csv"),
        "单位,日期,会议次数,培训次数\n教育局,2026-10-09,2,1\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a form").unwrap();
    let settings = json!({"dir": dir.path(), "indicators": ["meetings"], "pattern": "*.csv"});
    let mut plugin = Harness::<CsvForm>::create(settings, TestHost::new()).unwrap();
    assert_eq!(plugin.emits(), ["meetings"]);
    let out = plugin.collect(&request()).unwrap();
    assert_eq!(lines(&out), ["county/edu meetings - 2026-10-09 2"]);
    assert_eq!(out.warnings.len(), 1);
    assert!(
        out.warnings[0].ends_with(
            "a.csv: row 1: columns \"培训次数\" (trainings) are not in the source's indicators setting; ignored"
        ),
        "{:?}",
        out.warnings
    );
}

#[test]
fn a_missing_directory_fails_the_run_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("forms-not-mounted");
    let mut plugin = Harness::<CsvForm>::create(json!({"dir": &missing}), TestHost::new()).unwrap();
    assert!(
        plugin.host().logs()[0].1.contains("forms-not-mounted"),
        "create warns early"
    );
    let err = plugin.collect(&request()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Data);
    assert!(
        err.message.starts_with(&format!(
            "dir: cannot read the forms directory {}",
            missing.display()
        )),
        "{}",
        err.message
    );
}

#[test]
fn settings_are_checked() {
    let err = Harness::<CsvForm>::create(
        json!({"dir": "/tmp", "encoding": "latin1"}),
        TestHost::new(),
    )
    .err()
    .unwrap();
    assert_eq!(err.kind, ErrorKind::Settings);
    assert!(
        err.message
            .starts_with("encoding: unknown variant `latin1`"),
        "{}",
        err.message
    );
    let err = Harness::<CsvForm>::create(
        json!({"dir": "/tmp", "indicators": ["会议"]}),
        TestHost::new(),
    )
    .err()
    .unwrap();
    assert!(err.message.starts_with("indicators[0]:"), "{}", err.message);
}

#[test]
fn a_form_of_one_month_is_dated_by_its_title_or_file_name() {
    let dir = tempfile::tempdir().unwrap();
    // GBK, a month in the title, no date column: that month, on its first day.
    let september = "某县2026年9月工作台账（自然资源、教育）,,\r\n\
                     单位名称,会议次数(次),培训次数(次)\r\n某县自然资源局,4,1\r\n县教育局,2,\r\n";
    let (gbk, _, _) = encoding_rs::GBK.encode(september);
    std::fs::write(dir.path().join("台账九月.csv"), &gbk).unwrap();
    // No title: the file name says the period.
    std::fs::write(
        dir.path().join("台账_2026-10.csv"),
        "单位,会议次数\n自然资源局,3\n",
    )
    .unwrap();
    // A range in the title stands for its end.
    std::fs::write(
        dir.path().join("b.csv"),
        "统计时间：2026-07-01至2026-07-31\n单位,培训次数\n教育局,5\n",
    )
    .unwrap();
    let out = run(dir.path(), json!({})).unwrap();
    assert_eq!(out.warnings, Vec::<String>::new());
    assert_eq!(
        lines(&out),
        [
            "county/edu trainings - 2026-07-31 5",
            "county/natres meetings - 2026-10-01 3",
            "county/natres meetings - 2026-09-01 4",
            "county/natres trainings - 2026-09-01 1",
            "county/edu meetings - 2026-09-01 2",
        ]
    );
}

#[test]
fn a_form_that_says_no_date_is_skipped_and_one_outside_the_window_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    // A bare year is no period; the import day would count the form again
    // on every run, so nothing is guessed.
    std::fs::write(
        dir.path().join("台账.csv"),
        "2026年度工作台账\n单位,会议次数\n自然资源局,3\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("台账_20260615.csv"),
        "单位,会议次数\n自然资源局,9\n",
    )
    .unwrap();
    let mut p = Harness::<CsvForm>::create(json!({"dir": dir.path()}), TestHost::new()).unwrap();
    let out = p.collect(&request()).unwrap();
    assert_eq!(lines(&out), Vec::<String>::new());
    let place = dir.path().join("台账.csv").display().to_string();
    assert_eq!(
        out.warnings,
        [format!(
            "{place}: no date column (day/date/日期/period/期间/月份) and neither its title rows nor \
             its file name say the form's day or period (2026年9月, 截至2026-09-30, ..._2026-09.csv); \
             table skipped"
        )]
    );
    let june = dir.path().join("台账_20260615.csv").display().to_string();
    let logged = p.host().logs().iter().any(|(_, m)| {
        m == &format!(
            "{june}: dated 2026-06-15 by its file name (2026-06-15), outside the window \
             2026-07-01..2026-11-27; not read"
        )
    });
    assert!(logged, "{:?}", p.host().logs());
}

#[test]
fn a_month_column_wins_over_the_title() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("台账_2026-11-27.csv"),
        "2026年9月工作台账\n单位,月份,会议次数\n自然资源局,2026年10月,3\n",
    )
    .unwrap();
    let out = run(dir.path(), json!({})).unwrap();
    assert_eq!(out.warnings, Vec::<String>::new());
    assert_eq!(lines(&out), ["county/natres meetings - 2026-10-01 3"]);
}

/// An Excel 97-2003 workbook (`form.xls`, saved by LibreOffice from
/// `单位,日期,会议次数 / 自然资源局,2026-10-09,2 / 教育局,2026-10-12,三`): read
/// like an XLSX, its mistake named by sheet, row and column.
#[test]
fn an_xls_workbook_is_read_and_its_mistakes_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("form.xls");
    std::fs::write(&path, include_bytes!("fixtures/form.xls")).unwrap();
    let out = run(dir.path(), json!({})).unwrap();
    assert_eq!(lines(&out), ["county/natres meetings - 2026-10-09 2"]);
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    let placed = tally_plugin::Placed::parse(&out.warnings[0], &path.display().to_string())
        .unwrap_or_else(|| panic!("{:?}", out.warnings));
    assert!(placed.sheet.is_some(), "{placed:?}");
    assert_eq!(placed.row, Some(3));
    assert_eq!(placed.column.as_deref(), Some("会议次数"));
    assert_eq!(placed.message, "bad number \"三\"; value skipped");
}
