//! 上传报表: a clerk uploads a filled form (CSV in UTF-8 or GBK, XLSX) for a
//! source that reads files from a directory. The file is checked first by
//! the source's own plugin, alone in a temporary directory, and every
//! problem the plugin reports is shown by row and column; a file with any
//! problem, or without a single value, is not kept. A clean file is moved
//! atomically into the directory the source reads, the source is collected
//! at once for the days the file covers, and the clerk lands on the table of
//! that period.

use std::io::Write;
use std::path::{Path, PathBuf};

use askama::Template;
use axum::extract::{DefaultBodyLimit, Multipart, Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::post;
use axum::{Router, middleware};
use chrono::NaiveDate;
use tally_plugin::{Placed, Window};

use super::session::{Viewer, Writer};
use super::{EngineSource, PageError, PagesState, encode, internal};
use crate::engine::{Collected, Engine, RunError, Trigger};
use tally_domain::period::{Period, PeriodKind};

/// The largest upload: a county's quarterly workbook is a few hundred KB;
/// this leaves room for pictures a clerk pasted in, and no more.
pub const MAX_UPLOAD_BYTES: usize = 10 * 1024 * 1024;

/// The file name extensions taken, in lower case.
const EXTENSIONS: &[&str] = &["csv", "xlsx", "xls"];

/// `POST /upload/{source}`, with its own body limit: the API's 64 KiB
/// ([`crate::http::MAX_BODY_BYTES`]) is far too small for a workbook, so
/// the daemon merges this router outside that limit.
pub fn router<S: Clone + Send + Sync + 'static>(state: PagesState) -> Router<S> {
    Router::new()
        .route("/upload/{source}", post(upload))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
        .layer(middleware::map_response(super::security_headers))
        .with_state(state)
}

/// A source the page offers a form for.
pub(crate) struct FormSource {
    id: String,
    plugin: String,
}

/// One problem of a file, as the page lists it.
#[derive(Debug)]
pub(crate) struct ProblemRow {
    /// The sheet of a workbook; empty for a CSV file.
    pub sheet: String,
    /// The row as a spreadsheet numbers it; empty for the whole file.
    pub row: String,
    /// The column's header; empty for a whole row or file.
    pub column: String,
    /// What is wrong, for a clerk.
    pub problem: String,
    /// The plugin's own words, when the problem says them otherwise.
    pub detail: String,
}

/// What came of an upload that stays on this page.
pub(crate) struct Outcome {
    source: String,
    file: String,
    headline: String,
    problems: Vec<ProblemRow>,
}

#[derive(Template)]
#[template(path = "pages/upload.html")]
struct UploadPage {
    title: &'static str,
    nav: &'static str,
    /// Forms are offered to someone logged in, with the session's `csrf`.
    viewer: Viewer,
    sources: Vec<FormSource>,
    max_mb: usize,
    outcome: Option<Outcome>,
}

fn form_sources(engine: &Engine) -> Vec<FormSource> {
    engine
        .sources()
        .iter()
        .filter(|s| s.drop_dir().is_some())
        .map(|s| FormSource {
            id: s.id().to_owned(),
            plugin: s.plugin().to_owned(),
        })
        .collect()
}

fn upload_page(
    engine: &Engine,
    viewer: Viewer,
    outcome: Option<Outcome>,
) -> Result<String, PageError> {
    UploadPage {
        title: "上传报表",
        nav: "upload",
        viewer,
        sources: form_sources(engine),
        max_mb: MAX_UPLOAD_BYTES / (1024 * 1024),
        outcome,
    }
    .render()
    .map_err(internal)
}

/// `GET /upload`: a form per form source.
pub(crate) async fn page(
    State(engine): State<EngineSource>,
    viewer: Viewer,
) -> Result<Html<String>, PageError> {
    upload_page(&engine(), viewer, None).map(Html)
}

/// The page again, with what came of an upload, answered with `status`.
fn answer(engine: &Engine, viewer: Viewer, status: StatusCode, outcome: Outcome) -> Response {
    match upload_page(engine, viewer, Some(outcome)) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The name a file is kept under: its last path component (browsers on
/// Windows used to send the whole path), with nothing that could name
/// another directory, a hidden file or Excel's lock file, and one of
/// [`EXTENSIONS`].
pub(crate) fn clean_file_name(raw: &str) -> Result<String, String> {
    let name = raw.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    if name.is_empty() {
        return Err("没有选择文件。".to_owned());
    }
    if name.starts_with('.') || name.starts_with("~$") {
        return Err(format!(
            "文件名 “{name}” 不可用：不能以 “.” 或 “~$” 开头（这是隐藏文件或 Excel 的临时文件）。"
        ));
    }
    if name.len() > 200
        || name
            .chars()
            .any(|c| c.is_control() || matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*'))
    {
        return Err(format!(
            "文件名 “{name}” 不可用：太长，或含有 < > : \" | ? * 等字符。请改名后上传。"
        ));
    }
    let extension = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_lowercase())
        .unwrap_or_default();
    if !EXTENSIONS.contains(&extension.as_str()) {
        return Err(format!(
            "只接受 .csv、.xlsx、.xls 文件，收到的是 “{name}”。"
        ));
    }
    Ok(name.to_owned())
}

/// The text of the first Debug-quoted value in `text` (`unknown unit "某局"`).
fn quoted(text: &str) -> String {
    let Some(start) = text.find('"') else {
        return String::new();
    };
    let mut out = String::new();
    let mut chars = text[start + 1..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return out,
            '\\' => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// What a plugin's warning means to a clerk, in Chinese; `None` for a
/// message the page does not know, shown as the plugin wrote it.
fn plain(message: &str) -> Option<String> {
    let m = message;
    let text = if m.starts_with("unknown unit ") {
        format!("未知单位 “{}”：不是本来源的单位编号、名称或别名", quoted(m))
    } else if m.starts_with("bad date ") {
        format!(
            "日期无法识别：“{}”（应为日 2026-10-15、月 2026-10 或季度 2026-Q3）",
            quoted(m)
        )
    } else if m.starts_with("no date;") {
        "缺少日期".to_owned()
    } else if m.starts_with("bad number ") {
        format!(
            "不是数字：“{}”（请填写阿拉伯数字，如 12 或 1,234）",
            quoted(m)
        )
    } else if m.contains("too large to represent") {
        format!("数值过大：“{}”", quoted(m))
    } else if m.starts_with("no header row") {
        "找不到表头行：需要有一行含“单位”（或“单位名称”、unit）列的表头".to_owned()
    } else if m.starts_with("no date column") {
        "没有日期列，标题行和文件名中也没有写明日期或期间（如“2026年9月”、“截至2026-09-30”、文件名 …_2026-09.csv）"
            .to_owned()
    } else if let Some(rest) = m.strip_prefix("unknown columns ") {
        let columns = rest.split(" (").next().unwrap_or(rest);
        format!("未知的列 {columns}：不是指标编号或名称（“序号”“备注”列可以保留）")
    } else if m.contains("are not in the source's indicators setting") {
        "这些列不是本来源报送的指标".to_owned()
    } else if m.contains("UTF-8") {
        "文件编码无法识别：CSV 文件应为 UTF-8 或 GBK 编码（Excel 另存为 CSV 即可）".to_owned()
    } else if m.contains("workbook") || m.contains("Xlsx") || m.contains("zip") {
        "无法读取该工作簿：文件可能已损坏，或不是 Excel 格式".to_owned()
    } else {
        return None;
    };
    Some(text)
}

/// Every problem of a checked file: the run's error, each warning (placed
/// by row and column when it names the file, [`Placed`]), and a file that
/// gave no value at all. `redact` is what the engine passed the messages
/// through: the file's path is looked for as it reads after it (a secret
/// may share a piece with a temporary directory's name).
pub(crate) fn problems(
    checked: &Collected,
    staged: &Path,
    redact: impl Fn(&str) -> String,
) -> Vec<ProblemRow> {
    let file = redact(&staged.display().to_string());
    let mut out = Vec::new();
    if let Some(error) = &checked.error {
        let (problem, detail) = match error.split_once(&file) {
            // The plugin named the file: what follows is the problem.
            Some((_, rest)) => {
                let rest = rest.trim_start_matches([':', ' ']);
                (
                    plain(rest).unwrap_or_else(|| rest.to_owned()),
                    String::new(),
                )
            }
            None => ("无法检查该文件".to_owned(), error.clone()),
        };
        out.push(ProblemRow {
            sheet: String::new(),
            row: String::new(),
            column: String::new(),
            problem,
            detail,
        });
    }
    for warning in &checked.warnings {
        let (placed, message) = match Placed::parse(warning, &file) {
            Some(p) => {
                let message = p.message.clone();
                (Some(p), message)
            }
            None => (None, warning.clone()),
        };
        let (problem, detail) = match plain(&message) {
            Some(text) => (text, message),
            None => (message, String::new()),
        };
        out.push(ProblemRow {
            sheet: placed
                .as_ref()
                .and_then(|p| p.sheet.clone())
                .unwrap_or_default(),
            row: placed
                .as_ref()
                .and_then(|p| p.row)
                .map(|r| r.to_string())
                .unwrap_or_default(),
            column: placed
                .as_ref()
                .and_then(|p| p.column.clone())
                .unwrap_or_default(),
            problem,
            detail,
        });
    }
    if checked.observations.is_empty() && checked.error.is_none() {
        out.push(ProblemRow {
            sheet: String::new(),
            row: String::new(),
            column: String::new(),
            problem: "文件中没有任何可用的数据：请检查表头、单位和日期，以及文件名是否符合该来源的文件名规则"
                .to_owned(),
            detail: String::new(),
        });
    }
    out
}

/// How a file joined the source's directory.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    New,
    /// A file of that name and the same content was there already.
    Same,
    /// A file of that name and other content was replaced, as asked.
    Replaced,
}

/// Why a file did not join the directory.
#[derive(Debug)]
pub(crate) enum StoreError {
    /// A different file of that name is there, and replacing was not asked.
    Exists,
    Io(std::io::Error),
}

/// Puts `bytes` in `dir` as `name`, atomically: written to a hidden
/// temporary file in `dir` (which the plugins skip, as every hidden file)
/// and renamed into place, so a run never reads half a file. A different
/// file of that name is never overwritten unless `replace`.
pub(crate) fn store(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    replace: bool,
) -> Result<Stored, StoreError> {
    let target = dir.join(name);
    let existing = match std::fs::read(&target) {
        Ok(old) => Some(old),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(StoreError::Io(e)),
    };
    if existing.as_deref() == Some(bytes) {
        return Ok(Stored::Same);
    }
    if existing.is_some() && !replace {
        return Err(StoreError::Exists);
    }
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(StoreError::Io)?;
    temp.write_all(bytes).map_err(StoreError::Io)?;
    temp.as_file().sync_all().map_err(StoreError::Io)?;
    if existing.is_some() {
        temp.persist(&target).map_err(|e| StoreError::Io(e.error))?;
        return Ok(Stored::Replaced);
    }
    match temp.persist_noclobber(&target) {
        Ok(_) => Ok(Stored::New),
        // Another upload of that name won the race.
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Err(StoreError::Exists),
        Err(e) => Err(StoreError::Io(e.error)),
    }
}

/// The period the table shows after an upload: the quarter of the file's
/// first day when the file stays in it, else the range of its days.
pub(crate) fn covered_period(first: NaiveDate, last: NaiveDate) -> Period {
    let quarter = Period::containing(PeriodKind::Quarter, first);
    if last <= quarter.end {
        return quarter;
    }
    Period::parse(&format!("{first}..{last}")).unwrap_or(quarter)
}

/// The parts of the upload form.
struct Form {
    file_name: String,
    bytes: Vec<u8>,
    replace: bool,
    /// The session's token, from the page's hidden field.
    csrf: String,
}

async fn read_form(mut multipart: Multipart) -> Result<Form, (StatusCode, String)> {
    let too_big = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("文件太大：最大 {} MB。", MAX_UPLOAD_BYTES / (1024 * 1024)),
        )
    };
    let refused = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_big()
        } else {
            (e.status(), format!("上传的表单无法读取：{}", e.body_text()))
        }
    };
    let mut file = None;
    let mut replace = false;
    let mut csrf = String::new();
    while let Some(field) = multipart.next_field().await.map_err(refused)? {
        match field.name().unwrap_or_default() {
            "file" => {
                let name = field.file_name().unwrap_or_default().to_owned();
                let bytes = field.bytes().await.map_err(refused)?;
                file = Some((name, bytes.to_vec()));
            }
            "replace" => {
                replace = field.text().await.map_err(refused)? == "on";
            }
            "csrf" => {
                csrf = field.text().await.map_err(refused)?;
            }
            other => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    format!("上传的表单有未知的部分 “{other}”。"),
                ));
            }
        }
    }
    let Some((file_name, bytes)) = file else {
        return Err((StatusCode::BAD_REQUEST, "没有选择文件。".to_owned()));
    };
    Ok(Form {
        file_name,
        bytes,
        replace,
        csrf,
    })
}

/// `POST /upload/{source}`: check, keep, collect, show.
async fn upload(
    State(engine): State<EngineSource>,
    writer: Writer,
    UrlPath(source_id): UrlPath<String>,
    multipart: Multipart,
) -> Response {
    let engine = engine();
    let viewer = Viewer {
        csrf: Some(writer.csrf.clone()),
    };
    let refuse = |status: StatusCode, file: &str, headline: String| {
        answer(
            &engine,
            viewer.clone(),
            status,
            Outcome {
                source: source_id.clone(),
                file: file.to_owned(),
                headline,
                problems: Vec::new(),
            },
        )
    };
    let Some(source) = engine.source(&source_id).cloned() else {
        return refuse(
            StatusCode::NOT_FOUND,
            "",
            format!("没有数据来源 “{source_id}”。"),
        );
    };
    let Some(dir) = source.drop_dir() else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "",
            format!("数据来源 “{source_id}” 不读取上传的文件。"),
        );
    };
    let form = match read_form(multipart).await {
        Ok(form) => form,
        Err((status, why)) => return refuse(status, "", why),
    };
    if let Err(refusal) = writer.check_csrf(&form.csrf) {
        return refusal.into_response();
    }
    let name = match clean_file_name(&form.file_name) {
        Ok(name) => name,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, &form.file_name, why),
    };

    // 1. The check: the file alone in a directory of its own.
    let checked = match check(&engine, &source_id, &name, &form.bytes).await {
        Ok(checked) => checked,
        Err(e) => return PageError::Internal(e).into_response(),
    };
    let (checked, staged) = checked;
    let problems = problems(&checked, &staged, |s| engine.config.secrets().redact(s));
    if !problems.is_empty() {
        return answer(
            &engine,
            viewer.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            Outcome {
                source: source_id.clone(),
                file: name,
                headline: format!(
                    "文件有 {} 处问题，未保存。请改正后重新上传。",
                    problems.len()
                ),
                problems,
            },
        );
    }

    // 2. Keep it where the source reads.
    let bytes = form.bytes;
    let (kept_dir, kept_name, replace) = (dir.clone(), name.clone(), form.replace);
    let stored =
        tokio::task::spawn_blocking(move || store(&kept_dir, &kept_name, &bytes, replace)).await;
    let stored = match stored {
        Ok(Ok(stored)) => stored,
        Ok(Err(StoreError::Exists)) => {
            return refuse(
                StatusCode::CONFLICT,
                &name,
                format!(
                    "检查通过，但该来源的目录中已有同名而内容不同的文件 “{name}”，未保存。\
                     如果是同一份报表的更正，请勾选“替换同名文件”后重新上传；\
                     如果是另一份报表，请改名后上传。"
                ),
            );
        }
        Ok(Err(StoreError::Io(e))) => {
            tracing::error!(source = %source_id, dir = %dir.display(), error = %e, "upload not stored");
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                &name,
                "检查通过，但文件无法保存到该来源的目录，详见 tallyd 日志。".to_owned(),
            );
        }
        Err(e) => return internal(e).into_response(),
    };
    tracing::info!(source = %source_id, file = %name, stored = ?stored, "form uploaded");

    // 3. Collect the days the file covers, at once.
    let first = checked.observations.iter().map(|o| o.day).min();
    let last = checked.observations.iter().map(|o| o.day).max();
    let (Some(first), Some(last)) = (first, last) else {
        return internal(std::io::Error::other("a checked file without observations"))
            .into_response();
    };
    let report = match run_when_free(&engine, &source_id, Window::new(first, last)).await {
        Ok(report) => report,
        Err(e) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                &name,
                format!("文件已保存，但未能立即采集（{e}），稍后的定时采集会读取它。"),
            );
        }
    };
    if let Some(error) = report.error {
        return refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            &name,
            format!("文件已保存，但采集失败：{error}"),
        );
    }
    let period = covered_period(first, last);
    let location = format!(
        "/?period={}&uploaded={}",
        encode(period.label()),
        encode(&name)
    );
    (
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            HeaderValue::from_str(&location).unwrap_or(HeaderValue::from_static("/")),
        )],
    )
        .into_response()
}

/// Runs the source's plugin on a temporary directory holding only the file;
/// the directory goes when the check is over.
async fn check(
    engine: &std::sync::Arc<Engine>,
    source_id: &str,
    name: &str,
    bytes: &[u8],
) -> Result<(Collected, PathBuf), String> {
    let staging = tempfile::Builder::new()
        .prefix("tally-upload-")
        .tempdir()
        .map_err(|e| format!("cannot make a staging directory: {e}"))?;
    let staged = staging.path().join(name);
    std::fs::write(&staged, bytes)
        .map_err(|e| format!("cannot write {}: {e}", staged.display()))?;
    let checked = engine
        .check_staged(source_id, staging.path())
        .await
        .map_err(|e| e.to_string())?;
    Ok((checked, staged))
}

/// A manual run of the file's days; a run already going is waited for (it
/// may have started before the file was there), up to the source's timeout.
async fn run_when_free(
    engine: &std::sync::Arc<Engine>,
    source_id: &str,
    window: Window,
) -> Result<crate::engine::RunReport, RunError> {
    let patience = engine
        .source(source_id)
        .map_or(std::time::Duration::ZERO, |s| s.config.timeout);
    let started = tokio::time::Instant::now();
    loop {
        match engine.run(source_id, Trigger::Manual, Some(window)).await {
            Err(RunError::AlreadyRunning(_)) if started.elapsed() < patience => {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_cleaned_or_refused() {
        assert_eq!(
            clean_file_name("台账_2026-09.csv").unwrap(),
            "台账_2026-09.csv"
        );
        assert_eq!(
            clean_file_name(r"C:\Users\clerk\Desktop\报表.XLSX").unwrap(),
            "报表.XLSX"
        );
        assert_eq!(clean_file_name("../../etc/x.xls").unwrap(), "x.xls");
        for bad in [
            "",
            "dir/",
            ".hidden.csv",
            "~$报表.xlsx",
            "报表.txt",
            "报表",
            "a|b.csv",
            "a\nb.csv",
        ] {
            assert!(clean_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn storing_never_overwrites_a_different_file_unasked() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(store(d, "a.csv", b"one", false).unwrap(), Stored::New);
        assert_eq!(store(d, "a.csv", b"one", false).unwrap(), Stored::Same);
        assert!(matches!(
            store(d, "a.csv", b"two", false),
            Err(StoreError::Exists)
        ));
        assert_eq!(std::fs::read(d.join("a.csv")).unwrap(), b"one");
        assert_eq!(store(d, "a.csv", b"two", true).unwrap(), Stored::Replaced);
        assert_eq!(std::fs::read(d.join("a.csv")).unwrap(), b"two");
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.csv"]);
    }

    #[test]
    fn the_period_shown_is_the_files_quarter_or_its_range() {
        let d = |m, day| NaiveDate::from_ymd_opt(2026, m, day).unwrap();
        assert_eq!(covered_period(d(9, 1), d(9, 1)).label(), "2026-Q3");
        assert_eq!(covered_period(d(7, 1), d(9, 30)).label(), "2026-Q3");
        assert_eq!(
            covered_period(d(9, 1), d(10, 1)).label(),
            "2026-09-01..2026-10-01"
        );
    }

    #[test]
    fn plugin_messages_read_in_chinese_with_their_values() {
        assert_eq!(
            plain("bad number \"三\"; value skipped").unwrap(),
            "不是数字：“三”（请填写阿拉伯数字，如 12 或 1,234）"
        );
        assert!(
            plain("unknown unit \"某县水利局\" (not a unit id, name or alias of this source); row skipped")
                .unwrap()
                .contains("某县水利局")
        );
        assert!(plain("something new").is_none());
    }
}
