//! Reading the spreadsheets units and administrators drop in a directory:
//! the files of a drop directory, and a file's bytes as rows of text cells,
//! whatever its format (CSV in UTF-8 with or without BOM or GBK, XLSX, and
//! the older Excel 97-2003 XLS that some offices still save).
//!
//! It also finds the day a sheet stands for in what the sheet says (its
//! title rows, its file name): see [`sheet_date`].
//!
//! Shared by the `csv_form` and `xuexi` plugins. It works on bytes already in
//! memory: `xuexi` hashes a file's content before parsing it, and reading the
//! file once means the hash and the parsed rows are of the same bytes.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use calamine::{Data, Reader, Xls, Xlsx};

mod dates;
#[cfg(feature = "testing")]
pub mod testing;
pub use dates::{Dated, Origin, Said, date_in_file_name, date_in_text, date_in_title, sheet_date};

/// How CSV bytes are decoded.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
pub enum Encoding {
    /// UTF-8 (with or without BOM) when the bytes are valid UTF-8, else GBK.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "gbk")]
    Gbk,
}

/// One table of a file: a CSV file, or one sheet of a workbook.
pub struct Table {
    /// For messages: the file, plus the sheet of a workbook.
    pub place: String,
    /// Rows with their number as a spreadsheet shows it (1-based).
    pub rows: Vec<(usize, Vec<String>)>,
}

/// Parses a file's bytes; `name` says which format (by extension) and names
/// the tables. The error says why, without the name (the caller adds it).
pub fn read_tables(name: &str, bytes: &[u8], encoding: Encoding) -> Result<Vec<Table>, String> {
    let lower = name.to_lowercase();
    if lower.ends_with(".xlsx") {
        guarded(|| {
            let book = Xlsx::new(Cursor::new(bytes)).map_err(|e| e.to_string())?;
            read_workbook(name, book)
        })
    } else if lower.ends_with(".xls") {
        guarded(|| {
            let book = Xls::new(Cursor::new(bytes)).map_err(|e| e.to_string())?;
            read_workbook(name, book)
        })
    } else {
        let text = decode(bytes, encoding)?;
        Ok(vec![Table {
            place: name.to_owned(),
            rows: read_csv(&text)?,
        }])
    }
}

fn decode(bytes: &[u8], encoding: Encoding) -> Result<String, String> {
    let utf8 = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match encoding {
        Encoding::Utf8 | Encoding::Auto => match std::str::from_utf8(utf8) {
            Ok(s) => return Ok(s.to_owned()),
            Err(e) if encoding == Encoding::Utf8 => {
                return Err(format!(
                    "not valid UTF-8 (byte {}); set encoding = \"gbk\" or \"auto\"",
                    e.valid_up_to()
                ));
            }
            Err(_) => {}
        },
        Encoding::Gbk => {}
    }
    let (text, had_errors) = encoding_rs::GBK.decode_without_bom_handling(bytes);
    if had_errors {
        return Err("neither valid UTF-8 nor GBK".to_owned());
    }
    Ok(text.into_owned())
}

fn read_csv(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| e.to_string())?;
        // The line where the record starts: what an editor or Excel shows.
        let line = record
            .position()
            .map_or(rows.len() + 1, |p| p.line() as usize);
        rows.push((line, record.iter().map(str::to_owned).collect()));
    }
    Ok(rows)
}

/// Runs the XLSX reader, turning a panic into an error. calamine 0.30 indexes
/// the shared strings table unchecked (`strings[idx]` in
/// `xlsx/cells_reader.rs`), so a corrupt or crafted workbook whose cell names
/// a string index past the table panics: that must skip the file with a
/// warning, not fail the whole run.
fn guarded(read: impl FnOnce() -> Result<Vec<Table>, String>) -> Result<Vec<Table>, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|_| {
        Err("not a readable workbook (the XLSX reader failed on its content)".to_owned())
    })
}

fn read_workbook<R, B>(name: &str, mut workbook: B) -> Result<Vec<Table>, String>
where
    R: std::io::Read + std::io::Seek,
    B: Reader<R>,
    B::Error: std::fmt::Display,
{
    let mut tables = Vec::new();
    for sheet in workbook.sheet_names() {
        let range = workbook
            .worksheet_range(&sheet)
            .map_err(|e| format!("sheet {sheet:?}: {e}"))?;
        // calamine leaves out leading empty rows; `start` says where the range begins.
        let first = range.start().map_or(0, |(row, _)| row as usize);
        let rows = range
            .rows()
            .enumerate()
            .map(|(i, cells)| (first + i + 1, cells.iter().map(cell_text).collect()))
            .collect();
        tables.push(Table {
            place: format!("{name} [{sheet}]"),
            rows,
        });
    }
    Ok(tables)
}

/// A cell as the text a clerk would see; dates as `YYYY-MM-DD`.
fn cell_text(cell: &Data) -> String {
    match cell {
        Data::Empty => String::new(),
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) => f.to_string(),
        Data::Bool(b) => b.to_string(),
        Data::DateTime(dt) => dt
            .as_datetime()
            .map_or_else(|| dt.as_f64().to_string(), |d| d.date().to_string()),
        Data::Error(e) => format!("#{e:?}"),
    }
}

/// The files of a drop directory that `pattern` selects (default: every
/// `*.csv`, `*.xlsx` and `*.xls`), as (file name, path), in name order. Hidden files
/// and the `~$` lock files Excel leaves beside an open workbook are skipped.
pub fn drop_files(dir: &Path, pattern: Option<&str>) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if wanted(pattern, &name) && entry.path().is_file() {
            files.push((name, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

fn wanted(pattern: Option<&str>, name: &str) -> bool {
    if name.starts_with('.') || name.starts_with("~$") {
        return false;
    }
    match pattern {
        Some(p) => glob(p, name),
        None => {
            let lower = name.to_lowercase();
            lower.ends_with(".csv") || lower.ends_with(".xlsx") || lower.ends_with(".xls")
        }
    }
}

/// `*` any run of characters, `?` one character; case-insensitive.
pub fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let n: Vec<char> = name.to_lowercase().chars().collect();
    go(&p, &n)
}

/// A number as a sheet writes it: `12`, `1,234`, `1，234`, `3.5`; not `三`
/// or `12x`, and never infinite.
pub fn number(text: &str) -> Option<f64> {
    let cleaned: String = text
        .chars()
        .filter(|c| !matches!(c, ',' | '，' | ' '))
        .collect();
    cleaned.parse::<f64>().ok().filter(|n| n.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_numbers_and_drop_files() {
        assert!(glob("natres-*.csv", "NATRES-2026-10.CSV"));
        assert!(!glob("natres-*.csv", "edu-2026-10.csv"));
        assert!(glob("form-??.xlsx", "form-10.xlsx"));
        assert!(glob("积分*.xlsx", "积分2026-11.XLSX"));
        assert_eq!(number("1,234"), Some(1234.0));
        assert_eq!(number("三"), None);
        assert_eq!(number("12x"), None);
        assert_eq!(number("1e999"), None);

        let dir = std::env::temp_dir().join(format!("tally-tables-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in [
            "b.csv",
            "a.XLSX",
            "c.xls",
            ".hidden.csv",
            "~$a.xlsx",
            "notes.txt",
        ] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        let names: Vec<String> = drop_files(&dir, None)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["a.XLSX", "b.csv", "c.xls"]);
        let names: Vec<String> = drop_files(&dir, Some("*.txt"))
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["notes.txt"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
