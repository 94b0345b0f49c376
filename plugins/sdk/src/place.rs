//! The one shape of a warning about a place in a file:
//! `FILE: row N: column "HEADER": what is wrong`.
//!
//! Plugins that read spreadsheets write their warnings with [`Place`], and
//! the daemon reads them back with [`Placed::parse`]: its upload page shows a
//! clerk each problem of a form by row and column (行 / 列 / 问题), which only
//! works if the shape is the same in every plugin and never drifts.

use std::fmt;

/// Where in a file a warning is: the file (for a workbook `FILE [SHEET]`),
/// the row as a spreadsheet numbers it (1-based), the column by its header.
///
/// ```
/// use tally_plugin::Place;
/// let at = Place::cell("forms/a.csv", 4, "会议次数");
/// assert_eq!(format!("{at}: bad number \"三\""), "forms/a.csv: row 4: column \"会议次数\": bad number \"三\"");
/// assert_eq!(Place::row("forms/a.csv", 2).to_string(), "forms/a.csv: row 2");
/// assert_eq!(Place::file("forms/a.csv").to_string(), "forms/a.csv");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place<'a> {
    pub file: &'a str,
    pub row: Option<usize>,
    pub column: Option<&'a str>,
}

impl<'a> Place<'a> {
    /// The whole file (or sheet).
    pub fn file(file: &'a str) -> Place<'a> {
        Place {
            file,
            row: None,
            column: None,
        }
    }

    /// A row of the file.
    pub fn row(file: &'a str, row: usize) -> Place<'a> {
        Place {
            file,
            row: Some(row),
            column: None,
        }
    }

    /// A cell: a row and the header of its column.
    pub fn cell(file: &'a str, row: usize, column: &'a str) -> Place<'a> {
        Place {
            file,
            row: Some(row),
            column: Some(column),
        }
    }
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file)?;
        if let Some(row) = self.row {
            write!(f, ": row {row}")?;
        }
        if let Some(column) = self.column {
            // Debug quoting: a header holding `": ` still reads back whole.
            write!(f, ": column {column:?}")?;
        }
        Ok(())
    }
}

/// A warning written with [`Place`], read back.
///
/// ```
/// use tally_plugin::{Place, Placed};
/// let text = format!("{}: unknown unit \"某局\"; row skipped", Place::cell("/in/f.xlsx [表1]", 7, "单位"));
/// let placed = Placed::parse(&text, "/in/f.xlsx").unwrap();
/// assert_eq!(placed.sheet.as_deref(), Some("表1"));
/// assert_eq!(placed.row, Some(7));
/// assert_eq!(placed.column.as_deref(), Some("单位"));
/// assert_eq!(placed.message, "unknown unit \"某局\"; row skipped");
/// assert!(Placed::parse("elsewhere: row 1: x", "/in/f.xlsx").is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The sheet of a workbook.
    pub sheet: Option<String>,
    pub row: Option<usize>,
    pub column: Option<String>,
    /// What is wrong, after the place.
    pub message: String,
}

impl Placed {
    /// Reads a warning about `file` (the path the plugin was given, or its
    /// name as the plugin writes it); `None` when the warning does not start
    /// with that file.
    pub fn parse(text: &str, file: &str) -> Option<Placed> {
        let mut rest = text.strip_prefix(file)?;
        let mut sheet = None;
        if let Some(after) = rest.strip_prefix(" [") {
            let end = after.find("]: ").or_else(|| {
                // A sheet-level warning with nothing after the place.
                after.strip_suffix(']').map(str::len)
            })?;
            sheet = Some(after[..end].to_owned());
            rest = &after[end + 1..];
        }
        let mut rest = if rest.is_empty() {
            rest
        } else {
            rest.strip_prefix(": ")?
        };
        let mut row = None;
        if let Some(after) = rest.strip_prefix("row ") {
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0
                && let Ok(n) = after[..digits].parse()
            {
                row = Some(n);
                rest = after[digits..]
                    .strip_prefix(": ")
                    .unwrap_or(&after[digits..]);
            }
        }
        let mut column = None;
        if let Some(after) = rest.strip_prefix("column \"")
            && let Some((header, len)) = unquote(after)
        {
            column = Some(header);
            let after = &after[len..];
            rest = after.strip_prefix(": ").unwrap_or(after);
        }
        Some(Placed {
            sheet,
            row,
            column,
            message: rest.to_owned(),
        })
    }
}

/// The text of a Debug-quoted string whose opening quote is already read,
/// and how many bytes it took up to and including the closing quote.
fn unquote(text: &str) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, i + 1)),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                'u' => {
                    // \u{XXXX}
                    if chars.next()?.1 != '{' {
                        return None;
                    }
                    let mut hex = String::new();
                    loop {
                        match chars.next()?.1 {
                            '}' => break,
                            h => hex.push(h),
                        }
                    }
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_place_reads_back_as_written() {
        for (file, row, column) in [
            ("/tmp/x/a.csv", None, None),
            ("/tmp/x/a.csv", Some(3), None),
            ("/tmp/x/a.csv", Some(12), Some("会议次数(次)")),
            (
                "/tmp/x/a.csv",
                Some(1),
                Some("odd \"header\": \\ \t \u{feff}"),
            ),
            ("/tmp/x/b.xlsx [Sheet 1]", Some(5), Some("单位")),
            ("/tmp/x/b.xlsx [Sheet 1]", None, None),
        ] {
            let place = Place { file, row, column };
            let text = format!("{place}: bad number \"12x\"; value skipped");
            let placed = Placed::parse(&text, file.split(" [").next().unwrap())
                .unwrap_or_else(|| panic!("{text}"));
            assert_eq!(placed.row, row, "{text}");
            assert_eq!(placed.column.as_deref(), column, "{text}");
            assert_eq!(
                placed.message, "bad number \"12x\"; value skipped",
                "{text}"
            );
            assert_eq!(
                placed.sheet.is_some(),
                file.contains(" ["),
                "{text}: {placed:?}"
            );
        }
        // A place and nothing else.
        let placed = Placed::parse("/f.csv", "/f.csv").unwrap();
        assert_eq!(placed.message, "");
        // Another file's warning is not this file's.
        assert!(Placed::parse("/f.csv2: row 1: x", "/f.csv").is_none());
    }
}
