//! 数据来源's actions for someone logged in: 立即采集 (run a source now, as
//! `POST /api/v1/sources/{id}/run` does) and 重新采集某期 (collect a past
//! period's days again, as `tallyd collect --from --to` does, in windows of
//! at most a month).
//!
//! A post starts the work and answers at once with 303 back to 数据来源,
//! whose `?done=` says what was started; the page shows the source as 正在采集
//! and refreshes itself until nothing runs, so the clerk sees the new last
//! success (or the error) without waiting on a form post for minutes. The
//! runs are the scheduler's, like any other: a shutdown lets them finish.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::response::Redirect;
use axum::routing::post;
use axum::{Form, Router};

use super::session::{Refusal, Writer};
use super::{PageError, PagesState, encode};
use crate::engine::{Engine, RunError, backfill_windows};
use tally_domain::period::Period;

/// `POST /sources/{id}/run`, `POST /sources/{id}/recollect`.
pub fn routes() -> Router<PagesState> {
    Router::new()
        .route("/sources/{id}/run", post(run))
        .route("/sources/{id}/recollect", post(recollect))
}

/// Refused as a page: no session, another site, a wrong csrf token.
enum Failed {
    Refused(Refusal),
    Page(PageError),
}

impl axum::response::IntoResponse for Failed {
    fn into_response(self) -> axum::response::Response {
        match self {
            Failed::Refused(r) => r.into_response(),
            Failed::Page(p) => p.into_response(),
        }
    }
}

impl From<Refusal> for Failed {
    fn from(r: Refusal) -> Failed {
        Failed::Refused(r)
    }
}

impl From<PageError> for Failed {
    fn from(p: PageError) -> Failed {
        Failed::Page(p)
    }
}

/// The source of the path, which must be one the daemon runs.
fn known(engine: &Engine, id: &str) -> Result<(), PageError> {
    match engine.source(id) {
        Some(_) => Ok(()),
        None => Err(PageError::BadRequest(format!(
            "没有这个数据来源：“{id}”（或它已停用）"
        ))),
    }
}

fn back(done: &str, source: &str, period: Option<&str>) -> Redirect {
    let period = period
        .map(|p| format!("&period={}", encode(p)))
        .unwrap_or_default();
    Redirect::to(&format!(
        "/sources?done={done}&source={}{period}#source-{}",
        encode(source),
        encode(source)
    ))
}

async fn run(
    State(pages): State<PagesState>,
    writer: Writer,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Redirect, Failed> {
    writer.check_csrf(form.get("csrf").map_or("", String::as_str))?;
    let engine = (pages.engine)();
    known(&engine, &id)?;
    if engine.source(&id).is_some_and(|s| s.is_running()) {
        return Ok(back("busy", &id, None));
    }
    let scheduler = (pages.scheduler)();
    let source = id.clone();
    tokio::spawn(async move {
        match scheduler.run_now(&source).await {
            // The engine logged the run and its result.
            Ok(_) => {}
            Err(RunError::AlreadyRunning(_)) => {
                tracing::info!(source = %source, "run asked from the pages: the source is already running")
            }
            Err(e) => {
                tracing::warn!(source = %source, error = %tally_domain::ErrorChain(&e), "run asked from the pages could not start")
            }
        }
    });
    tracing::info!(source = %id, "run asked from the pages");
    Ok(back("run", &id, None))
}

/// `2026Q3` as the clerks write it, and everything [`Period::parse`] reads
/// (`2026-Q3`, `2026-07`, `2026`, `2026-07-01..2026-07-15`).
pub fn parse_period(text: &str) -> Result<Period, PageError> {
    let text = text.trim();
    let normal = match text.split_once(['Q', 'q']) {
        Some((year, q)) if year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{year}-Q{q}")
        }
        _ => text.to_owned(),
    };
    Period::parse(&normal).map_err(|e| {
        PageError::BadRequest(format!(
            "无法识别的统计期间 “{text}”：{e}（可写 2026Q3、2026-07、2026）"
        ))
    })
}

async fn recollect(
    State(pages): State<PagesState>,
    writer: Writer,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Redirect, Failed> {
    writer.check_csrf(form.get("csrf").map_or("", String::as_str))?;
    let engine = (pages.engine)();
    known(&engine, &id)?;
    let period = parse_period(form.get("period").map_or("", String::as_str))?;
    let today = engine.today();
    let windows = backfill_windows(period.start, period.end, today);
    if windows.is_empty() {
        return Err(PageError::BadRequest(format!(
            "{} 从 {} 开始，尚未开始（今天是 {today}），没有可采集的日期。",
            period.label(),
            period.start
        ))
        .into());
    }
    if engine.source(&id).is_some_and(|s| s.is_running()) {
        return Ok(back("busy", &id, None));
    }
    let scheduler = (pages.scheduler)();
    let source = id.clone();
    let label = period.label().to_owned();
    tracing::info!(source = %id, period = %label, windows = windows.len(), "collecting a period again, asked from the pages");
    tokio::spawn(async move {
        for window in windows {
            match scheduler.collect(&source, window).await {
                // A failed window is logged by the engine and shown on the
                // page; the next ones still run, as `tallyd collect` does.
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(source = %source, period = %label, from = %window.from, to = %window.to, error = %tally_domain::ErrorChain(&e), "collecting a period again stopped");
                    break;
                }
            }
        }
    });
    Ok(back("recollect", &id, Some(period.label())))
}

/// What `?done=` on 数据来源 says: only for a source the daemon runs and a
/// period that parses, so that a link from elsewhere cannot make the page
/// say anything else.
pub fn flash(engine: &Engine, params: &HashMap<String, String>) -> String {
    let Some(source) = params.get("source").filter(|s| engine.source(s).is_some()) else {
        return String::new();
    };
    match params.get("done").map(String::as_str) {
        Some("run") => {
            format!("已开始采集 {source}。采集结束后，“上次成功”或“最近一次错误”会更新。")
        }
        Some("recollect") => match params.get("period").map(|p| Period::parse(p)) {
            Some(Ok(period)) => format!(
                "已开始重新采集 {source} 在 {}（{} 至 {}）的数据，按月分段进行。采集结束后，统计表中该期的数字会更新。",
                period.label(),
                period.start,
                period.end
            ),
            _ => String::new(),
        },
        Some("busy") => format!("{source} 正在采集，请等这次采集结束后再试。"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_is_read_as_the_clerks_write_it() {
        for (text, label) in [
            ("2026Q3", "2026-Q3"),
            ("2026q3", "2026-Q3"),
            (" 2026-Q3 ", "2026-Q3"),
            ("2026-07", "2026-07"),
            ("2026", "2026"),
        ] {
            assert_eq!(parse_period(text).unwrap().label(), label, "{text}");
        }
        for text in ["2026Q5", "Q3", "26Q3", "", "2026-13"] {
            assert!(parse_period(text).is_err(), "{text}");
        }
    }
}
