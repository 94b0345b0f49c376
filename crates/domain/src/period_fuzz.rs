//! Property-based fuzzing of the period parser: `?period=` comes from anyone
//! who can reach the API, so `Period::parse` must answer every text, and every
//! period it accepts must be well formed.
//!
//! 256 cases per property unless `PROPTEST_CASES` says otherwise.

use chrono::{Days, NaiveDate};
use proptest::prelude::*;

use super::period::{MAX_RANGE_DAYS, Period, PeriodKind};

/// What every parsed period satisfies.
fn check_period(p: &Period) -> Result<(), TestCaseError> {
    prop_assert!(p.start <= p.end, "{p:?}: start after end");
    prop_assert!(
        p.days() >= 1 && p.days() <= MAX_RANGE_DAYS.max(366),
        "{p:?}"
    );
    // The label is canonical: it parses back to the same period.
    let again = Period::parse(p.label());
    prop_assert_eq!(
        again.as_ref(),
        Ok(p),
        "label {:?} does not round-trip",
        p.label()
    );
    prop_assert_eq!(p.to_string(), p.label());
    // The previous period ends the day before this one starts.
    let prev = p.previous();
    prop_assert!(prev.start <= prev.end, "previous {prev:?} of {p:?}");
    prop_assert_eq!(prev.end.checked_add_days(Days::new(1)), Some(p.start));
    if p.kind == PeriodKind::Range {
        prop_assert_eq!(prev.days(), p.days());
    } else {
        prop_assert_eq!(prev.kind, p.kind);
        // A calendar period is the period of its kind containing its first day.
        prop_assert_eq!(&Period::containing(p.kind, p.start), p);
        prop_assert_eq!(&Period::containing(p.kind, p.end), p);
    }
    Ok(())
}

fn check(text: &str) -> Result<(), TestCaseError> {
    match Period::parse(text) {
        Ok(p) => check_period(&p)?,
        Err(e) => {
            // The message quotes the (trimmed) input and says what works.
            let shown = e.to_string();
            prop_assert!(shown.starts_with("unknown period"), "{}", shown);
            prop_assert!(shown.contains("accepted forms"), "{}", shown);
        }
    }
    Ok(())
}

/// Texts shaped like periods, mostly valid: digits of the right widths with
/// out-of-range values, odd cases and blanks.
fn period_like() -> impl Strategy<Value = String> {
    let year = prop_oneof![0u32..=9999, 1990u32..=2100];
    let two = 0u32..=99;
    let day =
        (year.clone(), 0u32..=13, 0u32..=32).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"));
    prop_oneof![
        day.clone(),
        (year.clone(), 0u32..=13).prop_map(|(y, m)| format!("{y:04}-{m:02}")),
        (year.clone(), 0u32..=9, prop::bool::ANY)
            .prop_map(|(y, q, lower)| format!("{y:04}-{}{q}", if lower { 'q' } else { 'Q' })),
        (year.clone(), two, prop::bool::ANY)
            .prop_map(|(y, w, lower)| format!("{y:04}-{}{w:02}", if lower { 'w' } else { 'W' })),
        year.clone().prop_map(|y| format!("{y:04}")),
        (day.clone(), day, " {0,2}").prop_map(|(a, b, pad)| format!("{a}{pad}..{pad}{b}")),
        // A valid day and a short range after it.
        (0i64..3_000_000, 0u64..4000).prop_map(|(n, len)| {
            let start =
                NaiveDate::from_ymd_opt(0, 1, 1).unwrap() + chrono::Duration::days(n % 3_652_000);
            let end = start.checked_add_days(Days::new(len)).unwrap_or(start);
            format!("{}..{}", start.format("%Y-%m-%d"), end.format("%Y-%m-%d"))
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check(&text)?;
    }

    #[test]
    fn period_alphabet_never_panics(text in "[0-9qQwW. -]{0,24}") {
        check(&text)?;
    }

    #[test]
    fn period_like_text_parses_to_well_formed_periods(text in period_like(), pad in "[ \t]{0,2}") {
        check(&format!("{pad}{text}{pad}"))?;
    }
}
