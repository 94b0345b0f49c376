use chrono::TimeZone;

use super::*;
use tally_store::SqliteStore;

/// The SQLite store, counting the runs of each `record_runs` call.
struct Counting {
    inner: SqliteStore,
    batches: std::sync::Mutex<Vec<usize>>,
}

impl Store for Counting {
    fn record_run(
        &self,
        run: &RunRecord,
        observations: &[Observation],
        state: Option<&serde_json::Value>,
    ) -> Result<i64, StoreError> {
        self.batches.lock().unwrap().push(1);
        self.inner.record_run(run, observations, state)
    }
    fn record_runs(&self, runs: &[RunToRecord]) -> Vec<Result<i64, StoreError>> {
        self.batches.lock().unwrap().push(runs.len());
        self.inner.record_runs(runs)
    }
    fn source_status(&self, source: &str) -> Result<tally_store::SourceStatus, StoreError> {
        self.inner.source_status(source)
    }
    fn resume_point(&self, source: &str) -> Result<tally_store::ResumePoint, StoreError> {
        self.inner.resume_point(source)
    }
    fn recent_runs(
        &self,
        source: &str,
        limit: usize,
    ) -> Result<Vec<tally_store::StoredRun>, StoreError> {
        self.inner.recent_runs(source, limit)
    }
    fn runs(&self, ids: &[i64]) -> Result<Vec<tally_store::StoredRun>, StoreError> {
        self.inner.runs(ids)
    }
    fn own_values(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        indicators: &[(String, Kind)],
    ) -> Result<Vec<tally_store::OwnValue>, StoreError> {
        self.inner.own_values(start, end, indicators)
    }
    fn entity_values(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        indicators: &[(String, Kind)],
    ) -> Result<Vec<tally_store::EntityValue>, StoreError> {
        self.inner.entity_values(start, end, indicators)
    }
    fn coverage(
        &self,
        source: &str,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<tally_store::Coverage, StoreError> {
        self.inner.coverage(source, start, end)
    }
    fn observations(
        &self,
        units: &[&str],
        indicator: &str,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<Vec<tally_store::StoredObservation>, StoreError> {
        self.inner.observations(units, indicator, start, end)
    }
    fn first_day(&self) -> Result<Option<NaiveDate>, StoreError> {
        self.inner.first_day()
    }
    fn check_writable(&self) -> Result<(), StoreError> {
        self.inner.check_writable()
    }
}

fn pending_run(source: &str, days: u32) -> RunToRecord {
    let day = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
    let at = Utc.with_ymd_and_hms(2026, 11, 27, 4, 0, 0).unwrap();
    RunToRecord {
        run: RunRecord {
            source: source.into(),
            trigger: "schedule".into(),
            started_at: at,
            finished_at: at,
            result: RunResult::Success,
            error: None,
            window_from: day(1),
            window_to: day(days),
            warnings: vec![],
            http_requests: None,
            uncovered: Vec::new(),
            error_kind: None,
            retry_after: None,
        },
        observations: (1..=days)
            .map(|d| Observation {
                source: source.into(),
                unit: "county".into(),
                indicator: "posts".into(),
                entity: String::new(),
                day: day(d),
                value: 1.0,
            })
            .collect(),
        state: None,
    }
}

#[tokio::test]
async fn queued_runs_share_commits_of_bounded_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Counting {
        inner: SqliteStore::open(dir.path()).unwrap(),
        batches: Default::default(),
    });
    let (queue, pending) = mpsc::unbounded_channel();
    let mut answers = Vec::new();
    // Four runs of 3 observations queued before the writer looks, then
    // one that the cap of 8 observations leaves for the next commit,
    // and an invalid one that fails alone.
    let mut runs: Vec<RunToRecord> = (0..5).map(|i| pending_run(&format!("s{i}"), 3)).collect();
    runs[4].observations[0].value = f64::NAN;
    for run in runs {
        let (reply, answer) = oneshot::channel();
        queue.send(PendingWrite { run, reply }).unwrap();
        answers.push(answer);
    }
    drop(queue);
    write_runs(store.clone(), pending, 8).await;

    let mut ids = Vec::new();
    for answer in answers {
        ids.push(answer.await.unwrap());
    }
    assert_eq!(*store.batches.lock().unwrap(), [3, 2]);
    let stored: Vec<i64> = ids[..4].iter().map(|r| *r.as_ref().unwrap()).collect();
    assert!(stored.windows(2).all(|w| w[0] < w[1]), "{stored:?}");
    assert!(
        matches!(ids[4], Err(StoreError::Invalid { .. })),
        "{:?}",
        ids[4]
    );
    for (i, id) in stored.iter().enumerate() {
        let last = store
            .source_status(&format!("s{i}"))
            .unwrap()
            .last_run
            .unwrap();
        assert_eq!((last.id, last.observations_written), (*id, 3));
    }
}

#[test]
fn the_resume_window_reaches_back_to_the_earliest_day_left_uncovered() {
    let day = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let record = |from, to, uncovered: Vec<(NaiveDate, NaiveDate)>| {
        let mut run = pending_run("wechat", 1).run;
        (run.window_from, run.window_to, run.uncovered) = (from, to, uncovered);
        store.record_run(&run, &[], None).unwrap();
    };
    // A run at 02:30 on the 20th: the 19th is not final yet.
    record(day(18), day(20), vec![(day(19), day(19))]);
    let point = store.resume_point("wechat").unwrap();
    // lookback_days = 0 would start on the 20th; the 19th is asked again.
    assert_eq!(
        resume_window(day(21), 0, None, &point),
        Window::new(day(19), day(21))
    );
    // A lookback reaching further back wins.
    assert_eq!(
        resume_window(day(21), 3, None, &point),
        Window::new(day(17), day(21))
    );
    // Once a later run covered it, the lookback alone decides.
    record(day(19), day(21), vec![]);
    let point = store.resume_point("wechat").unwrap();
    assert_eq!(point.uncovered, []);
    assert_eq!(
        resume_window(day(21), 0, None, &point),
        Window::new(day(21), day(21))
    );
    // A stretch left uncovered is reached back to, but never more than
    // RESUME_REACH_DAYS before today.
    record(
        NaiveDate::from_ymd_opt(2026, 9, 1).unwrap(),
        day(21),
        vec![(NaiveDate::from_ymd_opt(2026, 9, 1).unwrap(), day(2))],
    );
    let point = store.resume_point("wechat").unwrap();
    let today = day(22);
    let reach = today - chrono::Days::new(RESUME_REACH_DAYS);
    assert_eq!(
        resume_window(today, 0, None, &point),
        Window::new(reach, today)
    );
    // Further on, the range is out of reach: only the lookback counts.
    let later = NaiveDate::from_ymd_opt(2026, 12, 10).unwrap();
    assert_eq!(
        resume_window(later, 1, None, &point),
        Window::new(day(20), later)
    );
    // A source that never succeeded starts at backfill_from.
    let fresh = store.resume_point("nobody").unwrap();
    assert_eq!(
        resume_window(today, 0, Some(day(1)), &fresh),
        Window::new(day(1), today)
    );
}

#[test]
fn uncovered_days_outside_the_window_are_ignored_with_a_warning() {
    let day = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
    let window = Window::new(day(10), day(20));
    let mut warnings = Vec::new();
    let kept = Engine::accept_uncovered(
        window,
        &[
            Window::new(day(15), day(16)),
            Window::new(day(8), day(10)),
            Window::new(day(17), day(17)),
            Window::new(day(19), day(25)),
            Window::new(day(1), day(2)),
            Window::new(day(14), day(12)),
        ],
        &mut warnings,
    );
    // Clipped to the window, sorted, touching ranges merged.
    assert_eq!(
        kept,
        [(day(10), day(10)), (day(15), day(17)), (day(19), day(20))]
    );
    assert_eq!(warnings.len(), 4, "{warnings:#?}");
    assert!(
        warnings[0].contains("2026-11-08..2026-11-10")
            && warnings[0].contains("outside the requested window 2026-11-10..2026-11-20"),
        "{warnings:#?}"
    );
    assert!(
        warnings[3].contains("ends before it starts"),
        "{warnings:#?}"
    );
    // Nothing said, nothing to do.
    assert_eq!(Engine::accept_uncovered(window, &[], &mut warnings), []);
    assert_eq!(
        day_ranges(&kept),
        [
            "2026-11-10",
            "2026-11-15..2026-11-17",
            "2026-11-19..2026-11-20"
        ]
    );
}

#[test]
fn transient_and_permanent_failures() {
    use ErrorKind::*;
    let transient = [
        (RunResult::Timeout, None),
        (RunResult::Crash, None),
        (RunResult::Error, Some(Upstream)),
        (RunResult::Error, Some(RateLimited)),
    ];
    for (result, kind) in transient {
        assert!(is_transient(result, kind), "{result:?} {kind:?}");
    }
    let permanent = [
        (RunResult::Success, None),
        (RunResult::Panic, None),
        // A protocol error: the plugin reported no kind.
        (RunResult::Error, None),
        (RunResult::Error, Some(Settings)),
        (RunResult::Error, Some(Auth)),
        (RunResult::Error, Some(Data)),
        (RunResult::Error, Some(Internal)),
        (RunResult::Error, Some(Unknown)),
    ];
    for (result, kind) in permanent {
        assert!(!is_transient(result, kind), "{result:?} {kind:?}");
    }
}

#[test]
fn retry_delays_double_with_bounded_jitter() {
    let base = Duration::from_secs(5);
    let seed = jitter_seed("portal");
    for retry in 1..=6u32 {
        let nominal = 5.0 * f64::from(1u32 << (retry - 1));
        let d = retry_delay(base, retry, seed).as_secs_f64();
        assert!(
            d >= nominal * 0.8 && d < nominal * 1.2,
            "retry {retry}: {d} s"
        );
        // The same source waits the same on every run.
        assert_eq!(
            retry_delay(base, retry, seed),
            retry_delay(base, retry, seed)
        );
    }
    // Two sources failing together do not retry in step.
    let other = jitter_seed("wechat");
    assert_ne!(seed, other);
    assert_ne!(retry_delay(base, 1, seed), retry_delay(base, 1, other));
    // The jitter spreads: over many seeds, both halves of the band are used.
    let delays: Vec<f64> = (0..200)
        .map(|i| retry_delay(base, 1, jitter_seed(&format!("s{i}"))).as_secs_f64())
        .collect();
    assert!(delays.iter().any(|d| *d < 4.6), "{delays:?}");
    assert!(delays.iter().any(|d| *d > 5.4), "{delays:?}");
    // FNV-1a of the empty string is its offset basis.
    assert_eq!(jitter_seed(""), 0xcbf2_9ce4_8422_2325);
}

#[test]
fn backoff_doubles_up_to_a_day() {
    let hour = Duration::from_secs(3600);
    assert_eq!(backoff_delay(hour, 1), 2 * hour);
    assert_eq!(backoff_delay(hour, 4), 16 * hour);
    assert_eq!(backoff_delay(hour, 5), MAX_BACKOFF);
    assert_eq!(backoff_delay(hour, 1000), MAX_BACKOFF);
    assert_eq!(
        backoff_delay(Duration::from_secs(60), 3),
        Duration::from_secs(480)
    );
}

#[test]
fn the_breaker_opens_after_consecutive_failures_and_closes_on_success() {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 27, 4, 0, 0).unwrap();
    let hour = Duration::from_secs(3600);
    let at = |h: i64| t0 + chrono::Duration::hours(h);
    let mut b = Breaker::default();
    assert_eq!(b.record(false, at(0), hour, 3), None);
    assert_eq!(b.record(false, at(1), hour, 3), None);
    assert_eq!(b.backoff_until, None);
    assert!(!b.holds(at(1)));
    // The third failure opens it: two intervals.
    assert_eq!(b.record(false, at(2), hour, 3), Some(2 * hour));
    assert_eq!(b.backoff_until, Some(at(4)));
    assert!(b.holds(at(3)));
    assert!(!b.holds(at(4)));
    // Each further failure doubles it.
    assert_eq!(b.record(false, at(4), hour, 3), Some(4 * hour));
    assert_eq!(b.backoff_until, Some(at(8)));
    assert_eq!(b.consecutive_failures, 4);
    // A success (a manual run, say) closes it.
    assert_eq!(b.record(true, at(5), hour, 3), None);
    assert_eq!(b, Breaker::default());
    // breaker_after = 0: never opens.
    let mut never = Breaker::default();
    for h in 0..10 {
        assert_eq!(never.record(false, at(h), hour, 0), None);
    }
    assert_eq!(never.consecutive_failures, 10);
    assert!(!never.holds(at(10)));
}

#[test]
fn a_backfill_covers_every_day_once_in_windows_up_to_today() {
    let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
    let today = d(2026, 11, 27);
    // A year: every day from 1 January to today, each once, in order.
    let windows = backfill_windows(d(2026, 1, 1), d(2026, 12, 31), today);
    assert_eq!(windows.first().unwrap().from, d(2026, 1, 1));
    assert_eq!(windows.last().unwrap().to, today);
    for pair in windows.windows(2) {
        assert_eq!(pair[0].to.succ_opt().unwrap(), pair[1].from);
    }
    for w in &windows {
        assert!(w.from <= w.to);
        assert!((w.to - w.from).num_days() < BACKFILL_CHUNK_DAYS as i64);
    }
    // One day; a period that has not begun; a reversed range.
    let one = backfill_windows(today, today, today);
    assert_eq!((one.len(), one[0].from, one[0].to), (1, today, today));
    assert!(backfill_windows(d(2027, 1, 1), d(2027, 3, 31), today).is_empty());
    assert!(backfill_windows(d(2026, 2, 1), d(2026, 1, 1), today).is_empty());
}
