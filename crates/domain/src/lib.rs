//! The domain: units, indicators, periods, roll-ups and targets.
//!
//! Architecture invariant: nothing in here does I/O or knows of tokio, HTTP,
//! SQLite or plugins. Everything is plain data in, plain data out, so that the
//! arithmetic the quarterly table rests on can be tested exhaustively.

#![forbid(unsafe_code)]

pub mod chain;
pub mod clock;
pub mod period;
#[cfg(test)]
mod period_fuzz;
pub mod rollup;
pub mod units;

pub use chain::ErrorChain;
pub use period::{Period, PeriodError, PeriodKind, local_day};
pub use rollup::{OwnData, RolledUp, roll_up};
pub use units::{TreeError, Unit, UnitDef, UnitTree};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// The largest magnitude an observed value may have. A roll-up adds at most
/// one value per stored observation, so sums of values within it stay finite
/// (reaching `f64::MAX` would take 10^293 of them), while one value of 1e308
/// would turn a county's total into infinity; below 2^53 whole numbers are
/// also exact. Values beyond it are refused when a run's answer is accepted.
pub const MAX_VALUE: f64 = 1e15;

/// A value as messages show it: `3`, `-2.5`, but `1e308` and `inf` rather
/// than hundreds of digits.
pub fn show_value(v: f64) -> String {
    if v.is_finite() && v.abs() < MAX_VALUE {
        v.to_string()
    } else {
        format!("{v:e}")
    }
}

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

    /// The smallest value an indicator of this kind takes when its
    /// configuration sets no `min`: a count or a distinct entity's value
    /// counts something, so it is never negative; a level may be.
    pub fn default_min(self) -> f64 {
        match self {
            Kind::Count | Kind::Distinct => 0.0,
            Kind::Level => -MAX_VALUE,
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
