//! The domain: units, indicators, periods, roll-ups and targets.
//!
//! Architecture invariant: nothing in here does I/O or knows of tokio, HTTP,
//! SQLite or plugins. Everything is plain data in, plain data out, so that the
//! arithmetic the quarterly table rests on can be tested exhaustively.

pub mod period;
#[cfg(test)]
mod period_fuzz;
pub mod rollup;
pub mod units;

pub use period::{Period, PeriodError, PeriodKind, local_day};
pub use rollup::{OwnData, RolledUp, roll_up};
pub use units::{TreeError, Unit, UnitDef, UnitTree};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// How an indicator combines over time (docs/configuration.md, `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Additive over time: a period's value is the sum of its days.
    Count,
    /// A level at a point in time: a period's value is the last value observed in it.
    Level,
    /// The number of distinct entities with a non-zero value in the period.
    Distinct,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Count => "count",
            Kind::Level => "level",
            Kind::Distinct => "distinct",
        }
    }
}

/// One stored number: the key (source, unit, indicator, entity, day) and its value.
/// Collecting the same key again replaces the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub source: String,
    pub unit: String,
    pub indicator: String,
    /// Empty when the source has no finer key than the unit.
    pub entity: String,
    pub day: NaiveDate,
    pub value: f64,
}
