//! Traceability: the stored observations behind one figure of the table
//! (`GET /api/v1/observations`, `tallyd report --explain`), with the source
//! and the run that wrote each.

use std::collections::BTreeSet;
use std::fmt::Write;

use chrono::NaiveDate;
use serde::Serialize;
use thiserror::Error;

use super::{format_number, rfc3339};
use crate::config::Config;
use crate::domain::{Kind, Period, UnitTree};
use crate::store::{Store, StoreError};

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

pub fn explain(
    config: &Config,
    tree: &UnitTree,
    store: &dyn Store,
    req: &ExplainRequest,
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
    let stored = store.observations(&units, &indicator.id, req.period.start, req.period.end)?;
    let run_ids: Vec<i64> = stored
        .iter()
        .map(|o| o.run_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let runs = store.runs(&run_ids)?;
    let tz = config.daemon.timezone;
    let observations = stored
        .into_iter()
        .map(|o| {
            let run = runs.iter().find(|r| r.id == o.run_id);
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
    })
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
