//! Property-based fuzzing of `xuexi`: whatever an administrator drops into
//! the directory, a run answers, never panics, keeps every number finite,
//! non-negative and inside the window, and every warning names the file.
//!
//! 256 cases per property unless `PROPTEST_CASES` says otherwise.

use chrono::{NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;
use tally_plugin::testkit::{Harness, TestHost};
use tally_plugin::{CollectRequest, CollectResponse, UnitRef, Window};
use tally_xuexi::{MEMBERS, POINTS, Xuexi};

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn request(state: Option<serde_json::Value>) -> CollectRequest {
    let mut req = CollectRequest::new(
        "fuzz-xuexi",
        Window::new(date(2026, 11, 1), date(2026, 11, 27)),
    );
    req.units = vec![
        UnitRef {
            id: "county".into(),
            name: "某县".into(),
            aliases: vec![],
        },
        UnitRef {
            id: "county/natres".into(),
            name: "自然资源局".into(),
            aliases: vec!["某县自然资源局党支部".into()],
        },
    ];
    req.state = state;
    req
}

/// Runs the plugin twice on one file holding `bytes` (the second run with the
/// first's resume state, as the daemon does), and checks both answers.
fn check(name: &str, bytes: &[u8], points: &str) -> Result<CollectResponse, TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 2, 0, 0).unwrap();
    let mut plugin = Harness::<Xuexi>::create(
        json!({"dir": dir.path(), "points": points}),
        TestHost::new().at(now),
    )
    .unwrap();
    let shown = path.display().to_string();
    let mut state = None;
    let mut first = None;
    for _ in 0..2 {
        let req = request(state.take());
        let out = match plugin.collect(&req) {
            Ok(out) => out,
            Err(e) => return Err(TestCaseError::fail(format!("the run failed: {e:?}"))),
        };
        for w in &out.warnings {
            prop_assert!(w.starts_with(&shown), "a warning without the file: {w}");
        }
        for o in &out.observations {
            prop_assert!(o.value.is_finite() && o.value >= 0.0, "{o:?}");
            prop_assert!(req.window.contains(o.day), "{o:?}");
            prop_assert!(o.indicator == POINTS || o.indicator == MEMBERS, "{o:?}");
        }
        state = out.state.clone();
        first.get_or_insert(out);
    }
    Ok(first.unwrap())
}

const HEADERS: &[&str] = &[
    "序号",
    "姓名",
    "学员姓名",
    "所属组织",
    "学习组织",
    "本年积分",
    "年度积分（分）",
    "总积分",
    "累计积分(分)",
    "手机号",
    "日期",
    "导出日期",
    "本月积分",
    "",
    "\u{feff}姓名",
    "x",
];

const CELLS: &[&str] = &[
    "张三",
    "李四",
    "合计",
    "某县",
    "自然资源局",
    "某县自然资源局党支部",
    "某县教育局党总支",
    "county/natres",
    "2026-11-27",
    "2026/11/20",
    "20261101",
    "2026年11月27日",
    "2026-11-27 08:00:00",
    "2026-10-31",
    "2025-12-31",
    "0000-01-01",
    "2026-02-30",
    "6021",
    "6,021",
    "6021.0",
    "0",
    "-3",
    "1e308",
    "1.7976931348623157e308",
    "NaN",
    "inf",
    "三",
    "138****1234",
    "",
    " ",
    "\"",
];

/// A sheet as a unit exports it, from the pools above.
fn structured_csv() -> impl Strategy<Value = String> {
    tally_tables::testing::structured_csv("某县学习强国积分统计（2026年11月）", HEADERS, CELLS)
}

fn points_mode() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["year", "total"])
}

/// A small valid workbook, to mutate.
fn workbook() -> Vec<u8> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (c, h) in ["姓名", "所属组织", "本年积分", "总积分"]
        .iter()
        .enumerate()
    {
        sheet.write_string(0, c as u16, *h).unwrap();
    }
    sheet.write_string(1, 0, "张三").unwrap();
    sheet.write_string(1, 1, "自然资源局").unwrap();
    sheet.write_number(1, 2, 100.0).unwrap();
    sheet.write_number(1, 3, 6021.0).unwrap();
    book.save_to_buffer().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn arbitrary_bytes_as_a_csv_sheet(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check("points.csv", &bytes, "year")?;
    }

    #[test]
    fn structured_csv_with_arbitrary_cells(text in structured_csv(), points in points_mode()) {
        check("points.csv", text.as_bytes(), points)?;
    }

    #[test]
    fn arbitrary_bytes_as_an_xlsx_sheet(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check("points.xlsx", &bytes, "year")?;
    }

    #[test]
    fn mutated_workbook(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let mut bytes = workbook();
        for (at, b) in edits {
            let n = bytes.len();
            bytes[at % n] = b;
        }
        check("points.xlsx", &bytes, "year")?;
    }
}

/// `workbook()` with its first shared-string cell naming string 41, past
/// the end of the table: calamine 0.30 panics on it.
fn workbook_with_a_dangling_shared_string() -> Vec<u8> {
    use std::io::{Cursor, Read, Write};
    let mut zip = zip::ZipArchive::new(Cursor::new(workbook())).unwrap();
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).unwrap();
        let name = entry.name().to_owned();
        let mut text = Vec::new();
        entry.read_to_end(&mut text).unwrap();
        if name == "xl/worksheets/sheet1.xml" {
            let xml = String::from_utf8(text).unwrap();
            assert!(xml.contains("t=\"s\"><v>0</v>"), "{xml}");
            text = xml
                .replacen("t=\"s\"><v>0</v>", "t=\"s\"><v>41</v>", 1)
                .into_bytes();
        }
        out.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        out.write_all(&text).unwrap();
    }
    out.finish().unwrap().into_inner()
}

#[test]
fn a_workbook_naming_a_missing_shared_string_is_skipped_with_a_warning() {
    let out = check(
        "points.xlsx",
        &workbook_with_a_dangling_shared_string(),
        "year",
    )
    .unwrap();
    assert!(out.observations.is_empty(), "{:?}", out.observations);
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(
        out.warnings[0].ends_with(
            "points.xlsx: not a readable workbook (the XLSX reader failed on its content); file skipped"
        ),
        "{:?}",
        out.warnings
    );
}
