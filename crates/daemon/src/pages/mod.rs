//! The clerks' pages (issue 18): 本期 (the statistics table of a period),
//! a figure's observations, and 数据来源 (the sources), in Chinese,
//! server-rendered from askama templates (`crates/daemon/templates/pages`)
//! with the stylesheet embedded in the binary.
//!
//! Every page works without script: there is none. Each answer carries a
//! Content-Security-Policy that allows nothing but this origin's stylesheet,
//! so that an injected tag could neither run script nor send a form
//! elsewhere. The pages read what the read API reads (the same `Summary`
//! and the same paged observations) and need no login; changing something
//! from them needs one ([`session`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use askama::Template;
use axum::extract::{FromRef, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Router, middleware};
use chrono::{DateTime, Utc};

use crate::engine::Engine;
use session::Viewer;

mod actions;
pub mod session;
use crate::summary::{self, ExplainRequest, IndicatorValue, Summary, SummaryRequest};
use tally_domain::ErrorChain;
use tally_domain::period::{Period, PeriodKind, local_day};
use tally_domain::units::UnitTree;

mod downloads;

pub mod upload;

/// What every page answer says the browser may load: this origin's
/// stylesheet, nothing else; forms post only here; no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
     img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Observations on one page of a figure: fewer than the API's 1000, so that
/// the page stays quick to load and to scroll on a phone; the cursor pages on.
const FIGURE_PAGE: usize = 200;

const STYLESHEET: &str = include_str!("../../assets/pages.css");

mod narrative;

/// Gives a page the engine of the moment: the daemon swaps its engine on a
/// reload, and a request works with the one it started with.
pub type EngineSource = Arc<dyn Fn() -> Arc<Engine> + Send + Sync>;

/// What the pages' handlers read: the engine of the moment and the
/// sessions, which outlive engines and routers (a reload keeps everyone
/// logged in).
#[derive(Clone)]
pub struct PagesState {
    pub engine: EngineSource,
    /// The scheduler of the moment, which runs what the pages ask for.
    pub scheduler: SchedulerSource,
    pub sessions: Arc<session::Sessions>,
}

/// Gives a page the scheduler of the moment (a reload replaces it).
pub type SchedulerSource = Arc<dyn Fn() -> crate::scheduler::SchedulerHandle + Send + Sync>;

impl FromRef<PagesState> for EngineSource {
    fn from_ref(state: &PagesState) -> EngineSource {
        state.engine.clone()
    }
}

/// The pages, with their own state, to be merged into the daemon's router.
pub fn router<S: Clone + Send + Sync + 'static>(state: PagesState) -> Router<S> {
    Router::new()
        .route("/", get(current))
        .route("/figure", get(figure))
        .route("/sources", get(sources))
        .route("/upload", get(upload::page))
        .route("/downloads", get(downloads::page))
        .route("/downloads/file/{name}", get(downloads::file))
        .route("/downloads/table", get(downloads::table))
        .route("/report", get(narrative::report))
        .route("/assets/pages.css", get(stylesheet))
        .merge(session::routes())
        .merge(actions::routes())
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut response: Response) -> Response {
    set_security_headers(response.headers_mut());
    response
}

fn set_security_headers(headers: &mut axum::http::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// The answer to a browser asking for a path that is no page (the API's
/// paths keep their JSON 404): a page in Chinese with the way back.
pub fn not_found() -> Response {
    let page = ErrorPage {
        title: "页面不存在",
        message: "没有这个页面。地址可能输错了，或页面已经移走。",
        nav: "",
        viewer: Viewer::default(),
    };
    let mut response = match page.render() {
        Ok(html) => (StatusCode::NOT_FOUND, Html(html)).into_response(),
        Err(e) => internal(e).into_response(),
    };
    set_security_headers(response.headers_mut());
    response
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// A page's refusal, as a page: the clerk reads what went wrong in Chinese,
/// with the way back.
#[derive(Debug)]
pub enum PageError {
    BadRequest(String),
    NotFound(String),
    Internal(String),
}

#[derive(Template)]
#[template(path = "pages/error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
    nav: &'a str,
    viewer: Viewer,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, "请求有误", m.as_str()),
            PageError::NotFound(m) => (StatusCode::NOT_FOUND, "找不到", m.as_str()),
            PageError::Internal(m) => {
                tracing::error!(error = %m, "page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "内部错误",
                    "页面生成失败，详见 tallyd 日志。",
                )
            }
        };
        let page = ErrorPage {
            title,
            message,
            nav: "",
            viewer: Viewer::default(),
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, message.to_owned()).into_response(),
        }
    }
}

fn internal(e: impl std::error::Error + 'static) -> PageError {
    PageError::Internal(ErrorChain(&e).to_string())
}

fn reject_unknown(params: &HashMap<String, String>, accepted: &[&str]) -> Result<(), PageError> {
    let mut unknown: Vec<&str> = params
        .keys()
        .map(String::as_str)
        .filter(|k| !accepted.contains(k))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort_unstable();
    Err(PageError::BadRequest(format!(
        "未知参数 {}；可用参数：{}",
        unknown.join(", "),
        accepted.join(", ")
    )))
}

/// The period asked for, or the quarter the daemon's clock is in.
fn period_param(engine: &Engine, text: Option<&String>) -> Result<Period, PageError> {
    match text.map(|t| t.trim()).filter(|t| !t.is_empty()) {
        Some(text) => Period::parse(text)
            .map_err(|e| PageError::BadRequest(format!("无法识别的统计期间 “{text}”：{e}"))),
        None => {
            let today = local_day(engine.clock.now(), engine.config.daemon.timezone);
            Ok(Period::containing(PeriodKind::Quarter, today))
        }
    }
}

fn non_empty(text: Option<&String>) -> Option<&str> {
    text.map(|t| t.trim()).filter(|t| !t.is_empty())
}

/// The period of a page's query: `period` (any label the API accepts), or
/// `from` and `to`, the date fields of the range form, or the quarter the
/// daemon's clock is in.
fn period_query(engine: &Engine, params: &HashMap<String, String>) -> Result<Period, PageError> {
    match (non_empty(params.get("from")), non_empty(params.get("to"))) {
        (None, None) => period_param(engine, params.get("period")),
        (Some(from), Some(to)) => {
            if non_empty(params.get("period")).is_some() {
                return Err(PageError::BadRequest(
                    "统计期间只能给一种：period，或 from 与 to（区间）".to_owned(),
                ));
            }
            let text = format!("{from}..{to}");
            Period::parse(&text)
                .map_err(|e| PageError::BadRequest(format!("无法识别的区间 “{text}”：{e}")))
        }
        _ => Err(PageError::BadRequest(
            "区间需要开始日期 from 和结束日期 to".to_owned(),
        )),
    }
}

/// The quarters the picker offers, newest first.
const PICKER_QUARTERS: usize = 12;

/// The forms that choose a period (quarter, month, year or range), one
/// form each, so that each works without script; they send to `action`
/// and keep the page's other parameters in hidden fields.
struct PeriodPicker {
    action: &'static str,
    /// `(label, selected)`.
    quarters: Vec<(String, bool)>,
    month: String,
    year: String,
    from: String,
    to: String,
    /// Hidden fields carried along: `(name, value)`.
    keep: Vec<(&'static str, String)>,
}

impl PeriodPicker {
    fn new(
        engine: &Engine,
        action: &'static str,
        period: &Period,
        keep: Vec<(&'static str, String)>,
    ) -> PeriodPicker {
        let today = local_day(engine.clock.now(), engine.config.daemon.timezone);
        let mut quarter = Period::containing(PeriodKind::Quarter, today);
        let mut quarters = Vec::with_capacity(PICKER_QUARTERS + 1);
        for _ in 0..PICKER_QUARTERS {
            let before = quarter.previous();
            quarters.push((quarter.label().to_owned(), quarter == *period));
            quarter = before;
        }
        if period.kind == PeriodKind::Quarter && !quarters.iter().any(|q| q.1) {
            quarters.push((period.label().to_owned(), true));
        }
        PeriodPicker {
            action,
            quarters,
            month: period.start.format("%Y-%m").to_string(),
            year: period.start.format("%Y").to_string(),
            from: period.start.to_string(),
            to: period.end.to_string(),
            keep,
        }
    }
}

fn number(v: f64) -> String {
    summary::format_number(v, 2)
}

fn percent(v: f64) -> String {
    format!("{}%", summary::format_number(v * 100.0, 1))
}

/// The link to a figure's observations.
fn figure_href(period: &str, unit: &str, indicator: &str) -> String {
    format!(
        "/figure?period={}&unit={}&indicator={}",
        encode(period),
        encode(unit),
        encode(indicator)
    )
}

/// Query-string encoding of a value: ids and period labels are mostly safe
/// already, but a range's `..` and any id a configuration allows must
/// round-trip.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------- 本期

/// One indicator's group of columns.
struct Column {
    header: String,
    per_capita: bool,
    /// `目标完成率` or `达标率` when some unit has a target for it.
    target: Option<&'static str>,
}

struct Cell {
    value: String,
    href: String,
    previous: String,
    /// The previous period's figure page.
    previous_href: String,
    change: String,
    per_capita: String,
    target: String,
    completion: String,
    /// `未报送` or `数据不完整（…）`.
    mark: Option<&'static str>,
    /// What the mark means, for whoever opens it.
    reason: &'static str,
    class: &'static str,
}

struct Row {
    id: String,
    name: String,
    /// Indentation class: `d0` .. `d8`, deeper ones share `d8`.
    depth_class: String,
    /// The table of this unit and those below it, for a unit that has
    /// units below it and is not the one shown already; empty otherwise.
    focus_href: String,
    /// Shows or hides the units right below this one (the page again with
    /// another `open`); empty for a unit with none.
    toggle_href: String,
    open: bool,
    cells: Vec<Cell>,
}

/// Which units of the 本期 table show the units below them, from the
/// query's `open`: absent, the top units of the table; `*`, all; else unit
/// ids joined by commas (an id never holds one). Links, not script, expand
/// and collapse the tree.
#[derive(Debug, Clone, PartialEq)]
enum Open {
    Top,
    All,
    These(HashSet<String>),
}

impl Open {
    fn parse(text: Option<&str>) -> Open {
        match text.map(str::trim) {
            None => Open::Top,
            Some("*") => Open::All,
            Some(list) => Open::These(
                list.split(',')
                    .map(str::trim)
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
        }
    }

    /// The value of `open` that gives this state back; none for the default.
    fn value(&self) -> Option<String> {
        match self {
            Open::Top => None,
            Open::All => Some("*".to_owned()),
            Open::These(ids) => {
                let mut ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                ids.sort_unstable();
                Some(ids.join(","))
            }
        }
    }

    /// `&open=…` for a link; empty for the default.
    fn query(&self) -> String {
        self.value()
            .map(|v| format!("&open={}", encode(&v)))
            .unwrap_or_default()
    }
}

#[derive(Template)]
#[template(path = "pages/current.html")]
struct CurrentPage {
    title: String,
    nav: &'static str,
    viewer: Viewer,
    period: String,
    start: String,
    end: String,
    timezone: String,
    previous_href: String,
    next_href: String,
    /// From 全部单位 down to the unit shown; empty for all units.
    crumbs: Vec<Crumb>,
    picker: PeriodPicker,
    expand_all_href: String,
    collapse_all_href: String,
    /// This table as XLSX and CSV.
    xlsx_href: String,
    csv_href: String,
    state: String,
    columns: Vec<Column>,
    rows: Vec<Row>,
    generated_at: String,
    /// Says which uploaded file the table now holds (`uploaded=`).
    notice: String,
}

fn reason(value: &IndicatorValue) -> &'static str {
    if value.missing {
        "应当报送的数据来源没有收到该单位（及其下级单位）在本期的任何数据。"
    } else {
        match value.incomplete_because {
            Some(summary::Because::Sources) => {
                "有数据来源没有采集到本期的全部日期，或有采集失败：数值可能偏低。"
            }
            Some(summary::Because::Units) => "有下级单位未报送：数值可能偏低。",
            Some(summary::Because::SourcesAndUnits) => {
                "有数据来源缺数，且有下级单位未报送：数值可能偏低。"
            }
            None => "数值可能偏低。",
        }
    }
}

/// A link of the path from the roots down to the unit shown.
struct Crumb {
    name: String,
    href: String,
}

/// The page's query with `period` and `unit`.
fn table_href(period: &str, unit: Option<&str>) -> String {
    match unit {
        Some(unit) => format!("/?period={}&unit={}", encode(period), encode(unit)),
        None => format!("/?period={}", encode(period)),
    }
}

/// The 本期 page of `summary`, built for `period` and the subtree of
/// `focus`, with the units below those of `open` shown.
fn current_page(
    summary: &Summary,
    period: &Period,
    tree: &UnitTree,
    focus: Option<&str>,
    viewer: Viewer,
    open: &Open,
    picker: PeriodPicker,
) -> CurrentPage {
    let label = summary.period.label.clone();
    let previous_label = period.previous().label().to_owned();
    let has_children = |id: &str| tree.index(id).is_some_and(|i| !tree.children(i).is_empty());
    let top = summary.units.first().map_or(0, |u| u.depth);
    let opened: HashSet<&str> = summary
        .units
        .iter()
        .filter(|u| match open {
            Open::Top => u.depth == top,
            Open::All => true,
            Open::These(ids) => ids.contains(&u.id),
        })
        .map(|u| u.id.as_str())
        .filter(|id| has_children(id))
        .collect();
    let here = table_href(&label, focus);
    let toggle_href = |id: &str| {
        let mut ids: HashSet<String> = opened.iter().map(|&i| i.to_owned()).collect();
        if !ids.remove(id) {
            ids.insert(id.to_owned());
        }
        format!("{here}{}#unit-{id}", Open::These(ids).query())
    };
    // Preorder: a unit is hidden under the first closed unit above it.
    let mut closed_at: Option<usize> = None;
    let visible = summary.units.iter().filter(|u| {
        if closed_at.is_some_and(|d| u.depth > d) {
            return false;
        }
        closed_at = (!opened.contains(u.id.as_str())).then_some(u.depth);
        true
    });
    let targets = summary.target_columns();
    let columns: Vec<Column> = summary
        .indicators
        .iter()
        .enumerate()
        .map(|(i, ind)| Column {
            header: ind.header(),
            per_capita: summary
                .units
                .iter()
                .any(|u| u.values.0.get(i).is_some_and(|v| v.1.per_capita.is_some())),
            target: targets[i].map(|per| match per {
                tally_config::Per::Unit => "完成率",
                tally_config::Per::Entity => "达标率",
            }),
        })
        .collect();
    let rows = visible
        .map(|unit| Row {
            id: unit.id.clone(),
            name: unit.name.clone(),
            depth_class: format!("d{}", unit.depth.min(8)),
            focus_href: tree
                .index(&unit.id)
                .filter(|&idx| !tree.children(idx).is_empty() && focus != Some(unit.id.as_str()))
                .map(|_| table_href(&label, Some(&unit.id)))
                .unwrap_or_default(),
            toggle_href: if has_children(&unit.id) {
                toggle_href(&unit.id)
            } else {
                String::new()
            },
            open: opened.contains(unit.id.as_str()),
            cells: summary
                .indicators
                .iter()
                .enumerate()
                .map(|(i, ind)| {
                    let empty = IndicatorValue::default();
                    let v = unit.values.0.get(i).map_or(&empty, |v| &v.1);
                    let show = |x: Option<f64>| x.map(number).unwrap_or_default();
                    Cell {
                        value: v.value.map_or_else(|| "—".to_owned(), number),
                        href: figure_href(&label, &unit.id, &ind.id),
                        previous: show(v.previous),
                        previous_href: figure_href(&previous_label, &unit.id, &ind.id),
                        change: v
                            .change
                            .map(|c| {
                                let sign = if c > 0.0 { "+" } else { "" };
                                match v.change_ratio {
                                    Some(r) => {
                                        format!("{sign}{}（{sign}{}）", number(c), percent(r))
                                    }
                                    None => format!("{sign}{}", number(c)),
                                }
                            })
                            .unwrap_or_default(),
                        per_capita: show(v.per_capita),
                        target: v.target.as_ref().map(|t| number(t.min)).unwrap_or_default(),
                        completion: v
                            .target
                            .as_ref()
                            .and_then(|t| t.ratio_or_completion())
                            .map(percent)
                            .unwrap_or_default(),
                        mark: v.mark(),
                        reason: reason(v),
                        class: if v.missing {
                            "missing"
                        } else if v.incomplete {
                            "incomplete"
                        } else {
                            ""
                        },
                    }
                })
                .collect(),
        })
        .collect();
    let p = &summary.period;
    let state = if p.complete && p.units_complete {
        "本期已结束，数据完整。".to_owned()
    } else {
        let mut parts = Vec::new();
        if !p.ended {
            parts.push("本期尚未结束，数字仍会增加");
        }
        if !p.sources_complete {
            parts.push("有数据来源缺数或采集失败");
        }
        if !p.units_complete {
            parts.push("有单位未报送");
        }
        format!("{}。", parts.join("；"))
    };
    let previous = period.previous();
    let kept = open.query();
    let download = |format: &str| {
        let unit = focus
            .map(|u| format!("&unit={}", encode(u)))
            .unwrap_or_default();
        format!(
            "/downloads/table?period={}{unit}&format={format}",
            encode(&label)
        )
    };
    CurrentPage {
        title: format!("{label} 统计表"),
        nav: "current",
        viewer,
        start: p.start.to_string(),
        end: p.end.to_string(),
        timezone: p.timezone.clone(),
        previous_href: format!("{}{kept}", table_href(previous.label(), focus)),
        next_href: next_period(period)
            .map(|n| format!("{}{kept}", table_href(n.label(), focus)))
            .unwrap_or_default(),
        picker,
        expand_all_href: format!("{here}{}", Open::All.query()),
        collapse_all_href: format!("{here}{}", Open::These(HashSet::new()).query()),
        xlsx_href: download("xlsx"),
        csv_href: download("csv"),
        crumbs: match focus.and_then(|id| tree.index(id)) {
            None => Vec::new(),
            Some(mut idx) => {
                let mut path = vec![idx];
                while let Some(parent) = tree.parent(idx) {
                    path.push(parent);
                    idx = parent;
                }
                let mut crumbs = vec![Crumb {
                    name: "全部单位".to_owned(),
                    href: table_href(&label, None),
                }];
                crumbs.extend(path.iter().rev().map(|&i| {
                    let u = tree.unit(i);
                    Crumb {
                        name: u.name.clone(),
                        href: table_href(&label, Some(&u.id)),
                    }
                }));
                crumbs
            }
        },
        period: label,
        state,
        columns,
        rows,
        generated_at: summary.generated_at.clone(),
        notice: String::new(),
    }
}

/// The period of the same kind right after `period` (none for a range).
fn next_period(period: &Period) -> Option<Period> {
    if period.kind == PeriodKind::Range {
        return None;
    }
    Some(Period::containing(period.kind, period.end.succ_opt()?))
}

async fn current(
    State(engine): State<EngineSource>,
    viewer: Viewer,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Html<String>, PageError> {
    let engine = engine();
    tokio::task::spawn_blocking(move || current_html_for(&engine, &params, viewer))
        .await
        .map_err(internal)?
        .map(Html)
}

/// What the query of `GET /` asks for.
struct CurrentQuery {
    period: Period,
    focus: Option<String>,
    open: Open,
}

fn current_query(
    engine: &Engine,
    params: &HashMap<String, String>,
) -> Result<CurrentQuery, PageError> {
    reject_unknown(
        params,
        &["period", "from", "to", "unit", "open", "uploaded"],
    )?;
    let period = period_query(engine, params)?;
    let focus = non_empty(params.get("unit")).map(str::to_owned);
    if let Some(unit) = &focus
        && engine.tree.get(unit).is_none()
    {
        return Err(PageError::BadRequest(format!("没有这个单位：“{unit}”")));
    }
    Ok(CurrentQuery {
        period,
        focus,
        open: Open::parse(params.get("open").map(String::as_str)),
    })
}

/// The whole of `GET /` but the HTTP: the query checked, the summary built
/// and the page rendered (blocking: reads the store).
pub fn current_html(
    engine: &Engine,
    params: &HashMap<String, String>,
) -> Result<String, PageError> {
    current_html_for(engine, params, Viewer::default())
}

/// [`current_html`] as `viewer` sees it (logged in or not).
fn current_html_for(
    engine: &Engine,
    params: &HashMap<String, String>,
    viewer: Viewer,
) -> Result<String, PageError> {
    let query = current_query(engine, params)?;
    let request = SummaryRequest {
        unit: query.focus.clone(),
        ..SummaryRequest::new(query.period.clone())
    };
    let built = engine.summary(&request).map_err(internal)?;
    render_current(engine, &built, &query, viewer, params.get("uploaded"))
}

/// The 本期 page of a summary already built for `params` (what
/// [`current_html`] does after the summary; the render benchmark's entry).
pub fn current_html_of(
    engine: &Engine,
    summary: &Summary,
    params: &HashMap<String, String>,
) -> Result<String, PageError> {
    render_current(
        engine,
        summary,
        &current_query(engine, params)?,
        Viewer::default(),
        None,
    )
}

fn render_current(
    engine: &Engine,
    summary: &Summary,
    query: &CurrentQuery,
    viewer: Viewer,
    uploaded: Option<&String>,
) -> Result<String, PageError> {
    let mut keep = Vec::new();
    if let Some(unit) = &query.focus {
        keep.push(("unit", unit.clone()));
    }
    if let Some(open) = query.open.value() {
        keep.push(("open", open));
    }
    let picker = PeriodPicker::new(engine, "/", &query.period, keep);
    let mut page = current_page(
        summary,
        &query.period,
        &engine.tree,
        query.focus.as_deref(),
        viewer,
        &query.open,
        picker,
    );
    if let Some(file) = uploaded.filter(|f| !f.is_empty()) {
        let file: String = file.chars().take(200).collect();
        page.notice = format!("已接收报表 “{file}” 并完成采集，表中是最新的数值。");
    }
    page.render().map_err(internal)
}

// ---------------------------------------------------------------- a figure

struct ObservationRow {
    source: String,
    unit: String,
    entity: String,
    day: String,
    value: String,
    run: String,
    run_started: String,
}

#[derive(Template)]
#[template(path = "pages/figure.html")]
struct FigurePage {
    title: String,
    nav: &'static str,
    viewer: Viewer,
    period: String,
    start: String,
    end: String,
    unit_name: String,
    indicator_name: String,
    back_href: String,
    rows: Vec<ObservationRow>,
    next_href: String,
    first_page: bool,
}

async fn figure(
    State(engine): State<EngineSource>,
    viewer: Viewer,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Html<String>, PageError> {
    reject_unknown(&params, &["period", "unit", "indicator", "limit", "after"])?;
    let engine = engine();
    let required = |name: &str, what: &str| {
        params
            .get(name)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| PageError::BadRequest(format!("缺少参数 {name}（{what}）")))
    };
    let unit = required("unit", "单位")?;
    let indicator = required("indicator", "指标")?;
    let period = period_param(&engine, params.get("period"))?;
    let limit = match params.get("limit") {
        None => FIGURE_PAGE,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=summary::MAX_PAGE).contains(n))
            .ok_or_else(|| {
                PageError::BadRequest(format!(
                    "每页条数 limit 应为 1 到 {} 的整数，收到 “{text}”",
                    summary::MAX_PAGE
                ))
            })?,
    };
    let after = params.get("after").cloned();
    let request = ExplainRequest {
        period: period.clone(),
        unit: unit.clone(),
        indicator: indicator.clone(),
    };
    let first_page = after.is_none();
    let blocking = engine.clone();
    let explained = tokio::task::spawn_blocking(move || {
        summary::explain_page(
            &blocking.config,
            &blocking.tree,
            &*blocking.store,
            &request,
            after.as_deref(),
            limit,
        )
    })
    .await
    .map_err(internal)?
    .map_err(|e| {
        if e.is_user_error() {
            PageError::BadRequest(e.to_string())
        } else {
            internal(e)
        }
    })?;
    let unit_name = engine
        .tree
        .get(&unit)
        .map_or_else(|| unit.clone(), |u| u.name.clone());
    let indicator_name = engine
        .config
        .indicators
        .iter()
        .find(|i| i.id == indicator)
        .map_or_else(|| indicator.clone(), |i| i.name.clone());
    let label = explained.period.label.clone();
    let rows = explained
        .observations
        .iter()
        .map(|o| ObservationRow {
            source: o.source.clone(),
            unit: engine
                .tree
                .get(&o.unit)
                .map_or_else(|| o.unit.clone(), |u| u.name.clone()),
            entity: o.entity.clone(),
            day: o.day.to_string(),
            value: number(o.value),
            run: o.run.id.to_string(),
            run_started: o.run.started_at.clone().unwrap_or_default(),
        })
        .collect();
    FigurePage {
        title: format!("{unit_name} · {indicator_name} · {label}"),
        nav: "",
        viewer,
        start: explained.period.start.to_string(),
        end: explained.period.end.to_string(),
        back_href: format!("/?period={}", encode(&label)),
        next_href: explained
            .next
            .as_deref()
            .map(|next| {
                // The next page keeps a limit asked for.
                let limit = if limit == FIGURE_PAGE {
                    String::new()
                } else {
                    format!("&limit={limit}")
                };
                format!(
                    "{}{limit}&after={}",
                    figure_href(&label, &unit, &indicator),
                    encode(next)
                )
            })
            .unwrap_or_default(),
        period: label,
        unit_name,
        indicator_name,
        rows,
        first_page,
    }
    .render()
    .map(Html)
    .map_err(internal)
}

// ---------------------------------------------------------------- 数据来源

struct SourceRow {
    id: String,
    /// `/sources/<id>`: its actions are `.../run` and `.../recollect`.
    actions_href: String,
    plugin: String,
    state: &'static str,
    class: &'static str,
    last_success: String,
    last_error: String,
    last_error_at: String,
    next_run: String,
    schedule: String,
}

#[derive(Template)]
#[template(path = "pages/sources.html")]
struct SourcesPage {
    title: &'static str,
    nav: &'static str,
    viewer: Viewer,
    rows: Vec<SourceRow>,
    /// What the action just asked for did (`?done=`), or empty.
    flash: String,
    /// Some source is collecting: the page refreshes itself until done.
    running: bool,
}

/// What an error kind means to a clerk, and what to do about it.
fn plain_kind(kind: Option<&str>, result: &str) -> &'static str {
    match (kind, result) {
        (_, "timeout") => "采集超时",
        (_, "panic") | (_, "crash") => "插件出错（程序缺陷），请联系运维",
        (Some("settings"), _) => "配置有误，请运维检查该来源的设置",
        (Some("auth"), _) => "账号或密钥被平台拒绝，请更新凭据",
        (Some("upstream"), _) => "平台暂时出错，稍后会自动重试",
        (Some("rate_limited"), _) => "平台限制了调用次数，稍后会自动重试",
        (Some("data"), _) => "报送的数据或文件无法使用，请检查后重新报送",
        (Some("internal"), _) => "插件出错（程序缺陷），请联系运维",
        (Some("protocol"), _) => "插件与 tallyd 版本不匹配，请联系运维",
        _ => "采集失败",
    }
}

fn sources_page(engine: &Engine, viewer: Viewer, flash: String) -> Result<SourcesPage, PageError> {
    let tz = engine.config.daemon.timezone;
    let now = engine.clock.now();
    let local = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string();
    let states = engine
        .source_states(engine.sources(), now)
        .map_err(internal)?;
    let mut rows = Vec::new();
    for (source, known) in engine.sources().iter().zip(states) {
        let (state, class) = if known.running {
            ("正在采集", "running")
        } else if known.backing_off(now) {
            ("连续失败，暂停重试", "failed")
        } else {
            match &known.last_run {
                None => ("尚未采集", ""),
                Some((_, run, _)) if run.error.is_none() && run.result.as_str() == "success" => {
                    ("正常", "ok")
                }
                Some(_) => ("上次采集失败", "failed"),
            }
        };
        let last_error = known.last_error.as_ref();
        rows.push(SourceRow {
            id: source.id().to_owned(),
            actions_href: format!("/sources/{}", encode(source.id())),
            plugin: source.plugin().to_owned(),
            state,
            class,
            last_success: known
                .status
                .last_success
                .as_ref()
                .map(|s| local(s.finished_at))
                .unwrap_or_else(|| "从未成功".to_owned()),
            last_error: last_error
                .map(|r| {
                    let plain = plain_kind(r.error_kind.as_deref(), r.result.as_str());
                    match &r.error {
                        Some(detail) => format!("{plain}。详情：{detail}"),
                        None => plain.to_owned(),
                    }
                })
                .unwrap_or_default(),
            last_error_at: last_error.map(|r| local(r.finished_at)).unwrap_or_default(),
            next_run: known.next_run.map(local).unwrap_or_else(|| "无".to_owned()),
            schedule: source.config.schedule_text.clone(),
        });
    }
    let running = rows.iter().any(|r| r.class == "running");
    Ok(SourcesPage {
        title: "数据来源",
        nav: "sources",
        viewer,
        rows,
        flash,
        running,
    })
}

async fn sources(
    State(engine): State<EngineSource>,
    viewer: Viewer,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Html<String>, PageError> {
    reject_unknown(&params, &["done", "source", "period"])?;
    let engine = engine();
    let flash = actions::flash(&engine, &params);
    tokio::task::spawn_blocking(move || sources_page(&engine, viewer, flash))
        .await
        .map_err(internal)??
        .render()
        .map(Html)
        .map_err(internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_keeps_safe_bytes_and_escapes_the_rest() {
        assert_eq!(encode("2026-Q4"), "2026-Q4");
        assert_eq!(encode("2026-10-01..2026-11-15"), "2026-10-01..2026-11-15");
        assert_eq!(encode("a&b=c d"), "a%26b%3Dc%20d");
        assert_eq!(encode("县"), "%E5%8E%BF");
    }

    #[test]
    fn next_period_follows_the_kind() {
        let q = Period::parse("2026-Q4").unwrap();
        assert_eq!(next_period(&q).unwrap().label(), "2027-Q1");
        let m = Period::parse("2026-02").unwrap();
        assert_eq!(next_period(&m).unwrap().label(), "2026-03");
        assert!(next_period(&Period::parse("2026-10-01..2026-10-05").unwrap()).is_none());
    }
}
