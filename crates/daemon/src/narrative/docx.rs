//! The 情况报告 as a Word document, the file units hand in: the title
//! centred in 宋体, section headings in 黑体, paragraphs in 仿宋 with a
//! first-line indent of two characters, the table of figures at the end.
//! Fonts are named, not embedded: Word and WPS on a Chinese system have
//! them, and LibreOffice elsewhere substitutes its own.

use docx_rs::{
    AlignmentType, BreakType, Docx, LineSpacing, Paragraph, Run, RunFonts, SpecialIndentType,
    Table, TableCell, TableRow, WidthType,
};

use super::{Block, Draft, NarrativeError, TABLE_HEADINGS, TABLE_TITLE};

/// Font sizes in half-points: 二号 (22 pt) for the title, 三号 (16 pt) for
/// headings and text, 五号 (10.5 pt) for the table.
const TITLE_SIZE: usize = 44;
const TEXT_SIZE: usize = 32;
const TABLE_SIZE: usize = 21;

/// Two characters of 三号 text, in twentieths of a point.
const FIRST_LINE_INDENT: i32 = 2 * 16 * 20;

/// 28 pt lines, the usual spacing of an official document, in twentieths of a point.
const LINE: i32 = 560;

fn fonts(east_asia: &str) -> RunFonts {
    // Latin digits and letters in Times New Roman, Chinese in the named font.
    RunFonts::new()
        .east_asia(east_asia)
        .ascii("Times New Roman")
        .hi_ansi("Times New Roman")
}

fn run(text: &str, font: &str, size: usize) -> Run {
    Run::new().add_text(text).fonts(fonts(font)).size(size)
}

fn title(text: &str) -> Paragraph {
    Paragraph::new()
        .add_run(run(text, "宋体", TITLE_SIZE).bold())
        .align(AlignmentType::Center)
        .line_spacing(LineSpacing::new().line(LINE).after(240))
}

fn heading(text: &str) -> Paragraph {
    Paragraph::new()
        .add_run(run(text, "黑体", TEXT_SIZE))
        .indent(
            None,
            Some(SpecialIndentType::FirstLine(FIRST_LINE_INDENT)),
            None,
            None,
        )
        .line_spacing(LineSpacing::new().line(LINE))
}

fn paragraph(text: &str) -> Paragraph {
    Paragraph::new()
        .add_run(run(text, "仿宋", TEXT_SIZE))
        .indent(
            None,
            Some(SpecialIndentType::FirstLine(FIRST_LINE_INDENT)),
            None,
            None,
        )
        .line_spacing(LineSpacing::new().line(LINE))
        .align(AlignmentType::Both)
}

fn cell(text: &str, bold: bool) -> TableCell {
    let mut r = run(text, "宋体", TABLE_SIZE);
    if bold {
        r = r.bold();
    }
    TableCell::new().add_paragraph(Paragraph::new().add_run(r))
}

/// Column widths in twentieths of a point: the indicator's name is the
/// widest; 8,800 fills an A4 page inside Word's default margins.
const WIDTHS: [usize; 5] = [3000, 1900, 1300, 1300, 1300];

fn table(rows: &[super::FigureRow]) -> Table {
    let header = TableRow::new(TABLE_HEADINGS.iter().map(|h| cell(h, true)).collect());
    let body = rows
        .iter()
        .map(|row| TableRow::new(row.cells().iter().map(|c| cell(c, false)).collect()));
    Table::new(std::iter::once(header).chain(body).collect())
        .set_grid(WIDTHS.to_vec())
        .width(WIDTHS.iter().sum(), WidthType::Dxa)
}

pub(super) fn to_docx(draft: &Draft) -> Result<Vec<u8>, NarrativeError> {
    let mut doc = Docx::new()
        .default_fonts(fonts("仿宋"))
        .default_size(TEXT_SIZE);
    for (n, report) in draft.reports.iter().enumerate() {
        if n > 0 {
            // Each unit's report starts on a page of its own.
            doc =
                doc.add_paragraph(Paragraph::new().add_run(Run::new().add_break(BreakType::Page)));
        }
        for block in &report.blocks {
            doc = doc.add_paragraph(match block {
                Block::Title(t) => title(t),
                Block::Heading(h) => heading(h),
                Block::Paragraph(p) => paragraph(p),
            });
        }
        if !report.figures.is_empty() {
            doc = doc
                .add_paragraph(heading(TABLE_TITLE))
                .add_table(table(&report.figures));
        }
    }
    let mut out = std::io::Cursor::new(Vec::new());
    doc.build()
        .pack(&mut out)
        .map_err(|e| NarrativeError::Docx(e.to_string()))?;
    Ok(out.into_inner())
}
