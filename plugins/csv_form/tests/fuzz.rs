//! Property-based fuzzing of `csv_form`: whatever a clerk (or a broken
//! export) drops into the forms directory, a run answers, never panics, keeps
//! every number finite and inside the window, and every warning names the file.
//!
//! 256 cases per property unless `PROPTEST_CASES` says otherwise.

use chrono::NaiveDate;
use proptest::prelude::*;
use serde_json::json;
use tally_csv_form::CsvForm;
use tally_plugin::testkit::{Harness, TestHost};
use tally_plugin::{CollectRequest, CollectResponse, IndicatorRef, Kind, UnitRef, Window};

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn request() -> CollectRequest {
    let mut req = CollectRequest::new(
        "fuzz-forms",
        Window::new(date(2026, 7, 1), date(2026, 11, 27)),
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
            aliases: vec!["某县自然资源局".into()],
        },
    ];
    req.indicators = vec![
        IndicatorRef {
            id: "meetings".into(),
            name: "会议次数".into(),
            kind: Kind::Count,
            unit: "次".into(),
        },
        IndicatorRef {
            id: "fans".into(),
            name: "粉丝数".into(),
            kind: Kind::Level,
            unit: "人".into(),
        },
    ];
    req
}

/// Runs the plugin on one file holding `bytes`, and checks the answer.
fn check(name: &str, bytes: &[u8]) -> Result<CollectResponse, TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let req = request();
    let out = Harness::<CsvForm>::create(json!({"dir": dir.path()}), TestHost::new())
        .unwrap()
        .collect(&req);
    let out = match out {
        Ok(out) => out,
        Err(e) => return Err(TestCaseError::fail(format!("the run failed: {e:?}"))),
    };
    let shown = path.display().to_string();
    for w in &out.warnings {
        prop_assert!(w.starts_with(&shown), "a warning without the file: {w}");
    }
    for o in &out.observations {
        prop_assert!(o.value.is_finite(), "{o:?}");
        prop_assert!(req.window.contains(o.day), "{o:?}");
        prop_assert!(o.indicator == "meetings" || o.indicator == "fans", "{o:?}");
    }
    Ok(out)
}

const HEADERS: &[&str] = &[
    "单位",
    "unit",
    "单位名称",
    "日期",
    "day",
    "period",
    "月份",
    "人员",
    "entity",
    "会议次数",
    "会议次数（次）",
    "meetings",
    "粉丝数",
    "fans(人)",
    "序号",
    "备注",
    "",
    "\u{feff}单位",
    "未知列",
    "x",
];

const CELLS: &[&str] = &[
    "county",
    "某县",
    "自然资源局",
    "某县自然资源局",
    "合计",
    "county/edu",
    "2026-10-15",
    "2026/10/15",
    "20261015",
    "2026年10月15日",
    "2026-10-15 08:00:00",
    "2026-10",
    "2026/9",
    "2026年10月",
    "2026-Q3",
    "2026q4",
    "2026年第三季度",
    "2026年二季度",
    "2026-13",
    "2026-Q5",
    "0000-01-01",
    "9999-12",
    "年",
    "季度",
    "Q",
    "1",
    "0",
    "-3",
    "1,234",
    "3.5",
    "1e308",
    "1e308",
    "-1e308",
    "NaN",
    "inf",
    "三",
    "12x",
    " ",
    "",
    "\"",
    "张三",
];

/// A sheet as a unit exports it, from the pools above.
fn structured_csv() -> impl Strategy<Value = String> {
    tally_tables::testing::structured_csv("某县会议统计表", HEADERS, CELLS)
}

/// A small valid workbook, to mutate: deeper into the XLSX reader than random bytes.
fn workbook() -> Vec<u8> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (c, h) in ["单位", "日期", "会议次数"].iter().enumerate() {
        sheet.write_string(0, c as u16, *h).unwrap();
    }
    sheet.write_string(1, 0, "county").unwrap();
    sheet.write_string(1, 1, "2026-10-15").unwrap();
    sheet.write_number(1, 2, 3.0).unwrap();
    book.save_to_buffer().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn arbitrary_bytes_as_a_csv_file(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check("form.csv", &bytes)?;
    }

    #[test]
    fn arbitrary_text_as_a_csv_file(text in any::<String>()) {
        check("form.csv", text.as_bytes())?;
    }

    #[test]
    fn structured_csv_with_arbitrary_cells(text in structured_csv(), bom in prop::bool::ANY) {
        let bytes = if bom { format!("\u{feff}{text}") } else { text };
        check("form.csv", bytes.as_bytes())?;
    }

    #[test]
    fn arbitrary_bytes_as_an_xlsx_file(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check("form.xlsx", &bytes)?;
    }

    #[test]
    fn mutated_workbook(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let mut bytes = workbook();
        for (at, b) in edits {
            let n = bytes.len();
            bytes[at % n] = b;
        }
        check("form.xlsx", &bytes)?;
    }
}

/// Two finite numbers of the same unit, indicator and day add up; their sum
/// must stay finite, or the answer could not cross the boundary as JSON.
#[test]
fn huge_counts_that_overflow_are_not_emitted_as_infinity() {
    let text = "单位,日期,会议次数\ncounty,2026-10-15,1e308\ncounty,2026-10-15,1e308\n";
    let out = check("form.csv", text.as_bytes()).unwrap();
    assert_eq!(out.observations.len(), 1, "{:?}", out.observations);
    assert_eq!(out.observations[0].value, 1e308);
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(
        out.warnings[0].ends_with(
            "form.csv: row 3: column \"会议次数\": \"1e308\" makes the total of this unit and day \
             too large to represent; value skipped"
        ),
        "{:?}",
        out.warnings
    );
}

/// `workbook()` with its cell that names shared string 0 naming string 41
/// instead, past the end of the table: what a corrupt copy can hold.
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

/// calamine panics on such a workbook (it indexes the shared strings
/// unchecked): the file is skipped with a warning, the run goes on.
#[test]
fn a_workbook_naming_a_missing_shared_string_is_skipped_with_a_warning() {
    let out = check("form.xlsx", &workbook_with_a_dangling_shared_string()).unwrap();
    assert!(out.observations.is_empty(), "{:?}", out.observations);
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(
        out.warnings[0].ends_with("form.xlsx: not a readable workbook (the XLSX reader failed on its content); file skipped"),
        "{:?}",
        out.warnings
    );
}
