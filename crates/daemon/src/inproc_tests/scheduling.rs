//! Retries, the breaker and missed-run catch-up on the paused clock.

use chrono::Duration as Span;

use super::plugin::{Answer, Script};
use super::*;
use crate::engine::{jitter_seed, retry_delay};

/// Once a year: no scheduled run within a test, only the start-up run.
const YEARLY: &str = "0 0 3 1 1 *";

#[tokio::test(start_paused = true)]
async fn a_transient_failure_is_retried_after_doubling_jittered_waits_a_permanent_one_is_not() {
    let flaky = Script::new(
        "retry-flaky",
        &[Answer::Upstream, Answer::Upstream, Answer::Upstream],
        Answer::Value(1.0),
    );
    let wrong = Script::new("retry-wrong", &[], Answer::Settings);
    let setup = Setup::new(
        &[
            source(
                "flaky",
                YEARLY,
                "retries = 3\nretry_backoff = \"10s\"",
                "retry-flaky",
            ),
            source(
                "wrong",
                YEARLY,
                "retries = 3\nretry_backoff = \"10s\"",
                "retry-wrong",
            ),
        ]
        .concat(),
    );
    let time = Timeline::new();
    let d = setup.start().await;
    time.at(120.0).await;

    // Four attempts in one run: each retry after `retry_backoff` doubled per
    // retry, times the source's own jitter (to the timer's millisecond).
    let calls = flaky.calls();
    assert_eq!(calls.len(), 4, "{:?}", offsets(&calls));
    assert_eq!(calls[0], t0());
    for retry in 1..=3u32 {
        let gap = (calls[retry as usize] - calls[retry as usize - 1])
            .to_std()
            .unwrap();
        let wanted = retry_delay(Duration::from_secs(10), retry, jitter_seed("flaky"));
        assert!(
            gap >= wanted && gap < wanted + Duration::from_millis(2),
            "retry {retry}: waited {gap:?}, not {wanted:?}"
        );
        // The jitter stays within ±20% of the doubled base.
        let base = 10.0 * f64::from(1u32 << (retry - 1));
        assert!((0.8 * base..1.2 * base).contains(&gap.as_secs_f64()));
    }
    let flaky = source_json(&d, "flaky").await;
    assert_eq!(flaky["runs"]["success"], 1, "{flaky:#}");
    assert_eq!(flaky["runs"]["error"], 0, "{flaky:#}");
    let warning = flaky["last_run"]["warnings"][0].as_str().unwrap();
    assert!(
        warning.starts_with("succeeded on attempt 4 of 4 (earlier: attempt 1: call 1: platform down; attempt 2: call 2"),
        "{warning}"
    );
    assert_eq!(flaky["consecutive_failures"], 0);

    // A settings error fails the same way every time: one attempt.
    assert_eq!(wrong.calls(), [t0()]);
    let wrong = source_json(&d, "wrong").await;
    assert_eq!(
        wrong["last_run"]["error"], "call 1: account closed",
        "{wrong:#}"
    );
    assert_eq!(wrong["last_run"]["warnings"], serde_json::json!([]));
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn retries_stop_before_the_next_scheduled_run() {
    let script = Script::new("retry-minutely", &[], Answer::Upstream);
    // Every minute; the second retry would start at 25 s + about 50 s,
    // after the next run at 60 s.
    let setup = Setup::new(&source(
        "minutely",
        "0 * * * * *",
        "retries = 5\nretry_backoff = \"25s\"",
        "retry-minutely",
    ));
    let time = Timeline::new();
    let d = setup.start().await;
    time.at(59.0).await;
    let calls = script.calls();
    assert_eq!(calls.len(), 2, "{:?}", offsets(&calls));
    let minutely = source_json(&d, "minutely").await;
    let warning = minutely["last_run"]["warnings"][0].as_str().unwrap();
    assert!(warning.starts_with("failed on attempt 2 of 6"), "{warning}");
    assert_eq!(minutely["runs"]["error"], 1);
    // The next run is the scheduled one, at 60 s.
    time.at(61.0).await;
    assert_eq!(offsets(&script.calls())[2], 60.0);
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_after_failed_runs_doubles_its_backoff_and_closes_on_success() {
    let script = Script::new(
        "breaker-down",
        &[Answer::Upstream, Answer::Upstream, Answer::Upstream],
        Answer::Value(2.0),
    );
    let setup = Setup::new(&source(
        "down",
        "*/10 * * * * *",
        "retries = 0\nbreaker_after = 2",
        "breaker-down",
    ));
    let time = Timeline::new();
    let d = setup.start().await;

    // Failed at start (0 s) and at 10 s: open for twice the interval.
    time.at(15.0).await;
    let down = source_json(&d, "down").await;
    assert_eq!(down["consecutive_failures"], 2, "{down:#}");
    assert_eq!(
        down["backoff_until"], "2026-11-27T08:00:30+00:00",
        "{down:#}"
    );
    assert_eq!(down["next_run"], "2026-11-27T08:00:30+00:00", "{down:#}");
    let breaker = d.engine().source("down").unwrap().breaker();
    assert_eq!(breaker.backoff_until, Some(t0() + Span::seconds(30)));

    // 20 s skipped; 30 s runs, fails, and doubles the backoff to 40 s.
    time.at(35.0).await;
    let down = source_json(&d, "down").await;
    assert_eq!(down["consecutive_failures"], 3, "{down:#}");
    assert_eq!(
        down["backoff_until"], "2026-11-27T08:01:10+00:00",
        "{down:#}"
    );

    // 40, 50 and 60 s skipped; 70 s succeeds and closes the breaker, and the
    // source is back on its schedule.
    time.at(85.0).await;
    assert_eq!(offsets(&script.calls()), [0.0, 10.0, 30.0, 70.0, 80.0]);
    let down = source_json(&d, "down").await;
    assert_eq!(down["consecutive_failures"], 0, "{down:#}");
    assert!(down["backoff_until"].is_null(), "{down:#}");
    assert_eq!(down["runs"]["error"], 3, "{down:#}");
    assert_eq!(down["runs"]["success"], 2, "{down:#}");
    time.at(90.0).await;
    let (_, metrics) = call(&d, "GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("tally_source_backoff_skips_total{source=\"down\"} 4"),
        "{metrics}"
    );
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_run_missed_while_the_daemon_was_down_is_caught_up_once() {
    let daily = Script::new("missed-daily", &[], Answer::Value(1.0));
    let yearly = Script::new("missed-yearly", &[], Answer::Value(1.0));
    let setup = Setup::new(
        &[
            source("daily", "0 3 * * *", "", "missed-daily"),
            source("yearly", YEARLY, "", "missed-yearly"),
        ]
        .concat(),
    );
    // First life: both never succeeded, so both run at start.
    let first = t0() - Span::days(3);
    let time = Timeline::new();
    let d = setup.start_at(first).await;
    time.at(1.0).await;
    assert_eq!(daily.calls(), [first]);
    assert_eq!(yearly.calls(), [first]);
    d.stop().await;

    // Three days later (03:00 passed three times): `daily` runs once at
    // start, counted once; `yearly` did not fire and waits.
    let time = Timeline::new();
    let d = setup.start().await;
    time.at(60.0).await;
    assert_eq!(daily.calls(), [first, t0()]);
    assert_eq!(yearly.calls(), [first]);
    let source = source_json(&d, "daily").await;
    assert_eq!(source["last_run"]["trigger"], "start", "{source:#}");
    let (_, metrics) = call(&d, "GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("tally_source_missed_runs_total{source=\"daily\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tally_source_missed_runs_total{source=\"yearly\"} 0"),
        "{metrics}"
    );
    d.stop().await;
}
