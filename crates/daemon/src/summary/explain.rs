//! Traceability: the stored observations behind one figure of the table
//! (`GET /api/v1/observations`, `tallyd report --explain`), with the source
//! and the run that wrote each.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;

use chrono::NaiveDate;
use serde::Serialize;
use thiserror::Error;

use super::{format_number, rfc3339};
use tally_config::Config;
use tally_domain::{Kind, Period, UnitTree};
use tally_store::{ObservationCursor, Store, StoreError};

/// The page size of `/api/v1/observations` when none is asked.
pub const DEFAULT_PAGE: usize = 1000;

/// The largest page `/api/v1/observations` answers.
pub const MAX_PAGE: usize = 10_000;

/// Which figure to explain: one indicator of one unit over one period.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainRequest {
    pub period: Period,
    pub unit: String,
    pub indicator: String,
}

#[derive(Debug, Error)]
pub enum ExplainError {
    /// A client mistake: the HTTP layer answers 400.
    #[error("unknown unit \"{0}\": see /api/v1/units")]
    UnknownUnit(String),
    /// A client mistake: the HTTP layer answers 400.
    #[error("unknown indicator \"{0}\": see /api/v1/indicators")]
    UnknownIndicator(String),
    /// A client mistake: the HTTP layer answers 400.
    #[error(
        "the cursor after={0:?} is not one this API gave out for this unit: use the `next` of the previous page, or leave it out to start again"
    )]
    BadCursor(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ExplainError {
    /// Whether the caller asked for something that does not exist.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, ExplainError::Store(_))
    }
}

/// The observations behind a figure: the unit's whole subtree (the figure is
/// rolled up), every stored day of the period, ordered by unit (preorder),
/// source, entity and day. For a `level` indicator the figure uses only each
/// (source, unit, entity)'s last day; the earlier days are listed too.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub period: ExplainPeriod,
    pub unit: String,
    pub indicator: String,
    pub kind: Kind,
    pub observations: Vec<ExplainedObservation>,
    /// The cursor of the next page (pass it as `after=`), `None` on the last.
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainPeriod {
    pub label: String,
    pub start: NaiveDate,
    pub end: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainedObservation {
    pub source: String,
    pub unit: String,
    pub entity: String,
    pub day: NaiveDate,
    pub value: f64,
    pub run: ExplainedRun,
}

/// The run that wrote an observation last.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainedRun {
    pub id: i64,
    /// `schedule`, `manual`, `start` or `backfill`; `None` if the run record
    /// is gone.
    pub trigger: Option<String>,
    /// RFC 3339 in the configured time zone.
    pub started_at: Option<String>,
}

/// Every observation behind a figure, read a page at a time (`report
/// --explain`); `next` is `None`.
pub fn explain(
    config: &Config,
    tree: &UnitTree,
    store: &dyn Store,
    req: &ExplainRequest,
) -> Result<Explanation, ExplainError> {
    let mut whole = explain_page(config, tree, store, req, None, MAX_PAGE)?;
    while let Some(after) = whole.next.take() {
        let page = explain_page(config, tree, store, req, Some(&after), MAX_PAGE)?;
        whole.observations.extend(page.observations);
        whole.next = page.next;
    }
    Ok(whole)
}

/// One page of [`explain`]: at most `limit` observations after the cursor
/// `after` (a `next` of an earlier page), with the cursor of the next page.
pub fn explain_page(
    config: &Config,
    tree: &UnitTree,
    store: &dyn Store,
    req: &ExplainRequest,
    after: Option<&str>,
    limit: usize,
) -> Result<Explanation, ExplainError> {
    let root = tree
        .index(&req.unit)
        .ok_or_else(|| ExplainError::UnknownUnit(req.unit.clone()))?;
    let indicator = config
        .indicators
        .iter()
        .find(|i| i.id == req.indicator)
        .ok_or_else(|| ExplainError::UnknownIndicator(req.indicator.clone()))?;
    let units: Vec<&str> = tree
        .subtree(root, None)
        .into_iter()
        .map(|u| tree.unit(u).id.as_str())
        .collect();
    let cursor = match after {
        None => None,
        Some(text) => Some(
            decode_cursor(text)
                .filter(|c| units.contains(&c.unit.as_str()))
                .ok_or_else(|| ExplainError::BadCursor(text.to_owned()))?,
        ),
    };
    // One more than the page tells whether another page follows.
    let mut stored = store.observations_page(
        &units,
        &indicator.id,
        req.period.start,
        req.period.end,
        cursor.as_ref(),
        limit.saturating_add(1),
    )?;
    let next = if stored.len() > limit {
        stored.truncate(limit);
        stored
            .last()
            .map(|o| encode_cursor(&ObservationCursor::of(&o.observation)))
    } else {
        None
    };
    let run_ids: Vec<i64> = stored
        .iter()
        .map(|o| o.run_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let runs: HashMap<i64, _> = store
        .runs(&run_ids)?
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    let tz = config.daemon.timezone;
    let observations = stored
        .into_iter()
        .map(|o| {
            let run = runs.get(&o.run_id);
            ExplainedObservation {
                source: o.observation.source,
                unit: o.observation.unit,
                entity: o.observation.entity,
                day: o.observation.day,
                value: o.observation.value,
                run: ExplainedRun {
                    id: o.run_id,
                    trigger: run.map(|r| r.run.trigger.clone()),
                    started_at: run.map(|r| rfc3339(r.run.started_at, tz)),
                },
            }
        })
        .collect();
    Ok(Explanation {
        period: ExplainPeriod {
            label: req.period.label().to_owned(),
            start: req.period.start,
            end: req.period.end,
        },
        unit: req.unit.clone(),
        indicator: indicator.id.clone(),
        kind: indicator.kind,
        observations,
        next,
    })
}

/// Opaque to clients: URL-safe base64 of the JSON of the position.
fn encode_cursor(cursor: &ObservationCursor) -> String {
    use base64::Engine;
    // Serializing plain strings and a date cannot fail.
    let json = serde_json::to_vec(cursor).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_cursor(text: &str) -> Option<ObservationCursor> {
    use base64::Engine;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()?;
    serde_json::from_slice(&json).ok()
}

impl Explanation {
    /// A plain-text table for the terminal, one observation a line.
    pub fn to_table(&self) -> String {
        let mut rows = vec![[
            "SOURCE".to_owned(),
            "UNIT".to_owned(),
            "ENTITY".to_owned(),
            "DAY".to_owned(),
            "VALUE".to_owned(),
            "RUN".to_owned(),
            "TRIGGER".to_owned(),
            "STARTED".to_owned(),
        ]];
        for o in &self.observations {
            rows.push([
                printable(&o.source),
                printable(&o.unit),
                if o.entity.is_empty() {
                    "-".to_owned()
                } else {
                    printable(&o.entity)
                },
                o.day.to_string(),
                format_number(o.value, 6),
                o.run.id.to_string(),
                o.run.trigger.clone().unwrap_or_else(|| "-".to_owned()),
                o.run.started_at.clone().unwrap_or_else(|| "-".to_owned()),
            ]);
        }
        let mut widths = [0usize; 8];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = format!(
            "{} {} {} ({}), {} observations\n",
            printable(&self.indicator),
            printable(&self.unit),
            self.period.label,
            self.kind.as_str(),
            self.observations.len()
        );
        for row in &rows {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                // VALUE and RUN are numbers: right-aligned.
                let pad = w - cell.chars().count();
                if i == 4 || i == 5 {
                    let _ = write!(line, "{}{cell}", " ".repeat(pad));
                } else {
                    let _ = write!(line, "{cell}{}", " ".repeat(pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A cell for the terminal: entities come from platforms and forms, and a
/// newline, tab or escape sequence in one would break the table's lines or
/// colour the terminal, so control characters are written as escapes (`\n`,
/// `\u{1b}`).
fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .flat_map(|c| {
            let shown: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            shown
        })
        .collect()
}
