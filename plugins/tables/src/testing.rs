//! Property-test strategies for the plugins that read tables (`csv_form`,
//! `xuexi`): sheets shaped like real exports, with cells drawn mostly from a
//! pool of telling values and sometimes any text. Behind the `testing`
//! feature, which those plugins enable in their dev-dependencies only.
//!
//! ```
//! use proptest::strategy::{Strategy, ValueTree};
//! use proptest::test_runner::TestRunner;
//! use tally_tables::testing::structured_csv;
//!
//! // In a test: `proptest! { #[test] fn f(text in structured_csv(...)) { ... } }`.
//! let mut runner = TestRunner::deterministic();
//! let sheet = structured_csv("某县统计表", &["单位", "日期"], &["county", "3"]);
//! let text = sheet.new_tree(&mut runner).unwrap().current();
//! // Always valid CSV, however ragged.
//! let mut reader = csv::ReaderBuilder::new()
//!     .has_headers(false)
//!     .flexible(true)
//!     .from_reader(text.as_bytes());
//! assert!(reader.records().all(|r| r.is_ok()));
//! ```

use proptest::prelude::*;

/// Text from `pool` four times in five, any `String` otherwise.
pub fn pooled(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(pool).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// CSV text as a unit exports it: maybe the title row `title`, a header of
/// up to 6 cells from `headers`, up to 11 rows of up to 7 cells from `cells`
/// (rows of any length: exports are ragged).
pub fn structured_csv(
    title: &'static str,
    headers: &'static [&'static str],
    cells: &'static [&'static str],
) -> impl Strategy<Value = String> {
    (
        prop::bool::ANY,
        prop::collection::vec(pooled(headers), 0..7),
        prop::collection::vec(prop::collection::vec(pooled(cells), 0..8), 0..12),
    )
        .prop_map(move |(with_title, header, rows)| {
            let mut w = csv::WriterBuilder::new()
                .flexible(true)
                .from_writer(Vec::new());
            if with_title {
                w.write_record([title]).unwrap();
            }
            w.write_record(&header).unwrap();
            for r in &rows {
                w.write_record(r).unwrap();
            }
            String::from_utf8(w.into_inner().unwrap()).unwrap()
        })
}
