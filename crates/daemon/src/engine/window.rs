//! The window a run asks for: from where the last success left off, at most
//! [`RESUME_REACH_DAYS`] back.

use super::*;

/// How far back a run's window reaches for days earlier runs left uncovered:
/// a day named uncovered is asked again by every later run until one covers
/// it, as long as it is at most this many days before today. Older ones stay
/// uncovered (and show as gaps) until a backfill (`tallyd collect`) covers them.
pub const RESUME_REACH_DAYS: u64 = 31;

/// The window a run asks for when none was given, `today` in the configured
/// time zone: from the last success's last day minus `lookback_days` (late
/// corrections), or `backfill_from` (else today) for a source that never
/// succeeded, to today. It also starts no later than the first day earlier
/// runs left uncovered and no later run covered, if that day is at most
/// [`RESUME_REACH_DAYS`] before today (or the part of a range within reach),
/// so that a day a plugin could not cover yet (not final, not measured) is
/// asked again whatever `lookback_days` says.
///
/// ```
/// use chrono::NaiveDate;
/// use tally_daemon::engine::resume_window;
/// use tally_store::{LastSuccess, ResumePoint};
/// let d = |day| NaiveDate::from_ymd_opt(2026, 11, day).unwrap();
/// let point = ResumePoint {
///     last_success: Some(LastSuccess {
///         run_id: 7,
///         finished_at: "2026-11-27T18:30:00Z".parse().unwrap(),
///         window_to: d(27),
///     }),
///     uncovered: vec![(d(26), d(26))],
///     ..ResumePoint::default()
/// };
/// let w = resume_window(d(28), 0, None, &point);
/// assert_eq!((w.from, w.to), (d(26), d(28)));
/// ```
pub fn resume_window(
    today: NaiveDate,
    lookback_days: u32,
    backfill_from: Option<NaiveDate>,
    point: &ResumePoint,
) -> Window {
    let mut from = match &point.last_success {
        // A last success ending after today (a clock that ran ahead, a
        // backfill asked past today by an older tallyd) counts as ending
        // today, so the lookback still reaches back.
        Some(last) => {
            let end = last.window_to.min(today);
            end.checked_sub_days(chrono::Days::new(u64::from(lookback_days)))
                .unwrap_or(end)
        }
        None => backfill_from.unwrap_or(today),
    };
    let reach = today
        .checked_sub_days(chrono::Days::new(RESUME_REACH_DAYS))
        .unwrap_or(today);
    if let Some(&(first, _)) = point.uncovered.iter().find(|(_, to)| *to >= reach) {
        from = from.min(first.max(reach));
    }
    Window::new(from.min(today), today)
}

/// Backfills are split into windows of at most this many days, so that
/// progress shows and a failure loses at most one window of work.
pub const BACKFILL_CHUNK_DAYS: u64 = 31;

/// The windows that collect the days `from..=to` again, in order: cut at
/// `today` (days that have not begun have nothing to collect, and a run
/// recorded as covering them would mark them covered before they happen),
/// each at most [`BACKFILL_CHUNK_DAYS`] long. None when `from` is after
/// `to` or after `today`. A period's days are `period.start..=period.end`.
///
/// ```
/// use chrono::NaiveDate;
/// use tally_daemon::engine::backfill_windows;
/// let d = |m, day| NaiveDate::from_ymd_opt(2026, m, day).unwrap();
/// // 2026-Q3, asked on 2026-11-27: three windows of the quarter's days.
/// let w = backfill_windows(d(7, 1), d(9, 30), d(11, 27));
/// let days: Vec<_> = w.iter().map(|w| (w.from, w.to)).collect();
/// assert_eq!(days, [(d(7, 1), d(7, 31)), (d(8, 1), d(8, 31)), (d(9, 1), d(9, 30))]);
/// // 2026-Q4 on the same day: up to today only.
/// assert_eq!(backfill_windows(d(10, 1), d(12, 31), d(11, 27)).last().unwrap().to, d(11, 27));
/// ```
pub fn backfill_windows(from: NaiveDate, to: NaiveDate, today: NaiveDate) -> Vec<Window> {
    let to = to.min(today);
    let mut windows = Vec::new();
    let mut start = from;
    while start <= to {
        let end = start
            .checked_add_days(chrono::Days::new(BACKFILL_CHUNK_DAYS - 1))
            .unwrap_or(to)
            .min(to);
        windows.push(Window::new(start, end));
        match end.succ_opt() {
            Some(next) if end < to => start = next,
            _ => break,
        }
    }
    windows
}

/// Day ranges as text: `2026-11-26` for one day, `2026-11-01..2026-11-03`
/// for more (the summary's period syntax, so a range can be pasted into
/// `?period=`).
pub fn day_ranges(ranges: &[(NaiveDate, NaiveDate)]) -> Vec<String> {
    ranges
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}..{b}")
            }
        })
        .collect()
}
