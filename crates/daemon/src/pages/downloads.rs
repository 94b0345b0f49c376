//! 报表下载: the report files the daemon wrote (what `GET /api/v1/reports`
//! lists), each downloadable, and any period's table as XLSX or CSV,
//! rendered by the renderers of the reports (`reports::render`). Reading
//! only, as the read API: no login.
//!
//! A file is served only when the listing of the reports directory names
//! it, so a name with a path in it, a dot file, a temporary file or a
//! symbolic link is never opened.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::DateTime;

use super::session::Viewer;
use super::{
    EngineSource, PageError, PeriodPicker, encode, internal, non_empty, period_query,
    reject_unknown,
};
use crate::engine::Engine;
use crate::reports::{self, Format, ReportWriter};
use crate::summary::{SummaryError, SummaryRequest};

struct FileRow {
    name: String,
    href: String,
    period: String,
    format: &'static str,
    size: String,
    written_at: String,
    latest: bool,
}

#[derive(Template)]
#[template(path = "pages/downloads.html")]
struct DownloadsPage {
    title: &'static str,
    nav: &'static str,
    viewer: Viewer,
    period: String,
    start: String,
    end: String,
    picker: PeriodPicker,
    /// `(id, name indented by depth)`, in tree order.
    units: Vec<(String, String)>,
    /// Newest period first.
    files: Vec<FileRow>,
}

/// A size as a clerk reads it: `812 B`, `14.2 KB`, `3.1 MB`.
fn size_text(bytes: u64) -> String {
    const KB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KB {
        format!("{bytes} B")
    } else if b < KB * KB {
        format!("{:.1} KB", b / KB)
    } else {
        format!("{:.1} MB", b / (KB * KB))
    }
}

/// `2026-10-01 10:00` from the listing's RFC 3339 time (already in the
/// configured time zone).
fn time_text(rfc3339: Option<&str>) -> String {
    rfc3339
        .map(|t| match DateTime::parse_from_rfc3339(t) {
            Ok(t) => t.format("%Y-%m-%d %H:%M").to_string(),
            Err(_) => t.to_owned(),
        })
        .unwrap_or_default()
}

fn downloads_page(
    engine: &Engine,
    params: &HashMap<String, String>,
    viewer: Viewer,
) -> Result<DownloadsPage, PageError> {
    reject_unknown(params, &["period", "from", "to"])?;
    let period = period_query(engine, params)?;
    let mut files = ReportWriter::from_config(&engine.config)
        .list()
        .map_err(internal)?;
    files.reverse();
    let tree = &engine.tree;
    let mut units = Vec::with_capacity(tree.len());
    let mut stack: Vec<usize> = tree.roots().iter().rev().copied().collect();
    while let Some(idx) = stack.pop() {
        let unit = tree.unit(idx);
        let indent = "\u{3000}".repeat(tree.depth(idx));
        units.push((unit.id.clone(), format!("{indent}{}", unit.name)));
        stack.extend(tree.children(idx).iter().rev());
    }
    Ok(DownloadsPage {
        title: "报表下载",
        nav: "downloads",
        viewer,
        period: period.label().to_owned(),
        start: period.start.to_string(),
        end: period.end.to_string(),
        picker: PeriodPicker::new(engine, "/downloads", &period, Vec::new()),
        units,
        files: files
            .into_iter()
            .map(|f| FileRow {
                href: format!("/downloads/file/{}", encode(&f.name)),
                period: f.period,
                format: match f.format {
                    Format::Xlsx => "Excel 表格（XLSX）",
                    Format::Csv => "CSV 表格",
                    Format::Md => "Markdown 文本",
                    Format::Json => "JSON 数据",
                    Format::Docx => "情况报告（Word）",
                    Format::NarrativeMd => "情况报告（Markdown）",
                },
                size: size_text(f.size),
                written_at: time_text(f.written_at.as_deref()),
                latest: f.latest,
                name: f.name,
            })
            .collect(),
    })
}

pub(super) async fn page(
    State(engine): State<EngineSource>,
    viewer: Viewer,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Html<String>, PageError> {
    let engine = engine();
    tokio::task::spawn_blocking(move || downloads_page(&engine, &params, viewer))
        .await
        .map_err(internal)??
        .render()
        .map(Html)
        .map_err(internal)
}

/// `Content-Disposition` of an attachment named `name` (RFC 6266): a plain
/// `filename` when the name is printable ASCII without quote or backslash;
/// otherwise an ASCII stand-in (`_` for each other character) for old
/// clients and the exact name as `filename*=UTF-8''…` (RFC 8187).
pub(crate) fn attachment(name: &str) -> HeaderValue {
    let plain = |c: char| (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ';
    let value = if name.chars().all(plain) {
        format!("attachment; filename=\"{name}\"")
    } else {
        let fallback: String = name
            .chars()
            .map(|c| if plain(c) { c } else { '_' })
            .collect();
        // `encode` leaves only ALPHA, DIGIT and `-._~` unescaped: all of
        // them attr-chars of RFC 8187.
        format!(
            "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
            encode(name)
        )
    };
    // Every byte above is visible ASCII or a space.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// `GET /downloads/file/{name}`: a file of the reports directory, by the
/// name its listing gives.
pub(super) async fn file(
    State(engine): State<EngineSource>,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    let writer = ReportWriter::from_config(&engine().config);
    tokio::task::spawn_blocking(move || read_report(&writer, &name))
        .await
        .map_err(internal)?
}

fn read_report(writer: &ReportWriter, name: &str) -> Result<Response, PageError> {
    let not_found = || PageError::NotFound(format!("没有这个报表文件：“{name}”"));
    let listed = writer
        .list()
        .map_err(internal)?
        .into_iter()
        .find(|f| f.name == name)
        .ok_or_else(not_found)?;
    let path = writer.dir.join(&listed.name);
    // Listed a moment ago as a regular file; checked again without
    // following a link in case it was replaced since.
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() => {}
        _ => return Err(not_found()),
    }
    let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => not_found(),
        _ => internal(e),
    })?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(listed.format.content_type()),
            ),
            (header::CONTENT_DISPOSITION, attachment(&listed.name)),
        ],
        bytes,
    )
        .into_response())
}

/// The formats a table downloads in.
fn table_format(text: Option<&str>) -> Result<Format, PageError> {
    match text {
        Some("xlsx") => Ok(Format::Xlsx),
        Some("csv") => Ok(Format::Csv),
        Some(other) => Err(PageError::BadRequest(format!(
            "格式 format 应为 xlsx 或 csv，收到 “{other}”"
        ))),
        None => Err(PageError::BadRequest(
            "缺少参数 format（xlsx 或 csv）".to_owned(),
        )),
    }
}

/// `GET /downloads/table?period=…&format=xlsx|csv[&unit=…]`: the table of
/// a period (or of `from`..`to`) for all units or one subtree, as the
/// reports render it.
pub(super) async fn table(
    State(engine): State<EngineSource>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, PageError> {
    let engine = engine();
    tokio::task::spawn_blocking(move || table_blocking(&engine, &params))
        .await
        .map_err(internal)?
}

fn table_blocking(
    engine: &Engine,
    params: &HashMap<String, String>,
) -> Result<Response, PageError> {
    reject_unknown(params, &["period", "from", "to", "unit", "format"])?;
    let format = table_format(non_empty(params.get("format")))?;
    let period = period_query(engine, params)?;
    let unit = non_empty(params.get("unit")).map(str::to_owned);
    let unit_name = match &unit {
        None => None,
        Some(id) => Some(
            engine
                .tree
                .get(id)
                .ok_or_else(|| PageError::BadRequest(format!("没有这个单位：“{id}”")))?
                .name
                .clone(),
        ),
    };
    let request = SummaryRequest {
        unit,
        ..SummaryRequest::new(period)
    };
    let summary = engine.summary(&request).map_err(|e| match e {
        SummaryError::UnknownUnit { .. } => PageError::BadRequest(e.to_string()),
        other => internal(other),
    })?;
    let narrative = crate::narrative::Narrative::from_config(&engine.config);
    let bytes = reports::render(format, &summary, &narrative).map_err(internal)?;
    let name = match unit_name {
        None => format!("tally-{}.{}", summary.period.label, format.extension()),
        Some(unit) => format!(
            "tally-{}-{unit}.{}",
            summary.period.label,
            format.extension()
        ),
    };
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            ),
            (header::CONTENT_DISPOSITION, attachment(&name)),
        ],
        bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ascii_name_is_a_plain_filename() {
        assert_eq!(
            attachment("2026-Q3.r2.xlsx"),
            "attachment; filename=\"2026-Q3.r2.xlsx\""
        );
    }

    #[test]
    fn a_utf8_name_gets_an_ascii_stand_in_and_its_exact_form() {
        assert_eq!(
            attachment("tally-2026-Q4-县甲.csv"),
            "attachment; filename=\"tally-2026-Q4-__.csv\"; \
             filename*=UTF-8''tally-2026-Q4-%E5%8E%BF%E7%94%B2.csv"
        );
        // A quote cannot end the quoted name early.
        assert_eq!(
            attachment("a\"b.csv"),
            "attachment; filename=\"a_b.csv\"; filename*=UTF-8''a%22b.csv"
        );
    }

    #[test]
    fn sizes_read_as_a_clerk_reads_them() {
        assert_eq!(size_text(812), "812 B");
        assert_eq!(size_text(14_540), "14.2 KB");
        assert_eq!(size_text(3_250_000), "3.1 MB");
    }

    #[test]
    fn a_table_downloads_as_xlsx_or_csv_only() {
        assert_eq!(table_format(Some("xlsx")).unwrap(), Format::Xlsx);
        assert_eq!(table_format(Some("csv")).unwrap(), Format::Csv);
        assert!(matches!(
            table_format(Some("json")),
            Err(PageError::BadRequest(m)) if m.contains("xlsx 或 csv")
        ));
        assert!(matches!(table_format(None), Err(PageError::BadRequest(_))));
    }
}
