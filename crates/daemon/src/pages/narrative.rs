//! 情况报告: the draft of a unit's quarterly report in prose, as a page
//! (`GET /report?unit=&period=`), with the same draft to download as DOCX
//! and Markdown from `/api/v1/summary` (`format=docx`, `format=narrative-md`).
//! A unit and a period are picked with a plain form: no script.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Html;

use super::session::Viewer;
use super::{EngineSource, PageError, encode, internal, next_period, period_param, reject_unknown};
use crate::narrative::{Block, FigureRow, Narrative, TABLE_HEADINGS, TABLE_TITLE};
use crate::summary::SummaryRequest;

struct UnitOption {
    id: String,
    /// The name, indented by depth with full-width spaces.
    label: String,
    selected: bool,
}

/// A block of the draft, for the template: `h1`, `h2` or `p`.
struct BlockView {
    tag: &'static str,
    text: String,
}

#[derive(Template)]
#[template(path = "pages/narrative.html")]
struct NarrativePage {
    title: String,
    nav: &'static str,
    viewer: Viewer,
    period: String,
    units: Vec<UnitOption>,
    previous_href: String,
    next_href: String,
    docx_href: String,
    md_href: String,
    blocks: Vec<BlockView>,
    table_title: &'static str,
    headings: [&'static str; 5],
    figures: Vec<FigureRow>,
}

fn page_href(period: &str, unit: &str) -> String {
    format!("/report?unit={}&period={}", encode(unit), encode(period))
}

fn download_href(period: &str, unit: &str, format: &str) -> String {
    format!(
        "/api/v1/summary?period={}&unit={}&format={format}",
        encode(period),
        encode(unit)
    )
}

pub(super) async fn report(
    State(engine): State<EngineSource>,
    viewer: Viewer,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Html<String>, PageError> {
    reject_unknown(&params, &["period", "unit"])?;
    let engine = engine();
    let period = period_param(&engine, params.get("period"))?;
    let tree = &engine.tree;
    // Without a unit: the first root, the county in the usual tree.
    let unit = match params.get("unit").filter(|u| !u.is_empty()) {
        Some(unit) if tree.get(unit).is_none() => {
            return Err(PageError::BadRequest(format!("没有这个单位：“{unit}”")));
        }
        Some(unit) => unit.clone(),
        None => match tree.roots().first() {
            Some(&root) => tree.unit(root).id.clone(),
            None => return Err(PageError::BadRequest("没有配置任何单位。".to_owned())),
        },
    };
    let request = SummaryRequest {
        unit: Some(unit.clone()),
        ..SummaryRequest::new(period.clone())
    };
    let narrative = Narrative::from_config(&engine.config);
    let blocking = engine.clone();
    let summary = tokio::task::spawn_blocking(move || blocking.summary(&request))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    let draft = narrative.draft(&summary).map_err(internal)?;
    let report = draft.reports.into_iter().next();
    let label = period.label();
    let top = tree
        .preorder()
        .first()
        .map(|&u| tree.unit(u).depth())
        .unwrap_or(0);
    let units = tree
        .preorder()
        .iter()
        .map(|&u| {
            let u = tree.unit(u);
            UnitOption {
                id: u.id.clone(),
                label: format!("{}{}", "\u{3000}".repeat(u.depth() - top), u.name),
                selected: u.id == unit,
            }
        })
        .collect();
    let (blocks, figures) = match report {
        Some(report) => (
            report
                .blocks
                .into_iter()
                .map(|b| match b {
                    Block::Title(text) => BlockView { tag: "h1", text },
                    Block::Heading(text) => BlockView { tag: "h2", text },
                    Block::Paragraph(text) => BlockView { tag: "p", text },
                })
                .collect(),
            report.figures,
        ),
        None => (Vec::new(), Vec::new()),
    };
    NarrativePage {
        title: format!("情况报告 {label}"),
        nav: "report",
        viewer,
        period: label.to_owned(),
        units,
        previous_href: page_href(period.previous().label(), &unit),
        next_href: next_period(&period)
            .map(|p| page_href(p.label(), &unit))
            .unwrap_or_default(),
        docx_href: download_href(label, &unit, "docx"),
        md_href: download_href(label, &unit, "narrative-md"),
        blocks,
        table_title: TABLE_TITLE,
        headings: TABLE_HEADINGS,
        figures,
    }
    .render()
    .map(Html)
    .map_err(internal)
}
