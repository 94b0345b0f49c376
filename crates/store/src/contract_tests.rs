//! The store contract, one suite for every backend: each test below runs
//! once on a fresh SQLite store and once on a fresh PostgreSQL database
//! (`on_sqlite::NAME`, `on_postgres::NAME`), through `&dyn Store` only.
//! Tests of one backend's internals (statement counts, the month cache, the
//! file, the schema's tables) stay beside that backend.

use std::collections::BTreeMap;
use std::ops::Deref;

use chrono::{DateTime, NaiveDate, Utc};

use super::*;
use tally_domain::{Kind, Observation};

/// A fresh store of one backend, and how to open another handle on the same
/// data (a restart, or a second process such as `tallyd collect`).
pub(crate) struct Backend {
    store: Box<dyn Store>,
    reopen: Box<dyn Fn() -> Box<dyn Store>>,
    /// The SQLite store's directory, removed with the backend.
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        Backend {
            store: Box::new(SqliteStore::open(&path).unwrap()),
            reopen: Box::new(move || Box::new(SqliteStore::open(&path).unwrap())),
            _dir: Some(dir),
        }
    }

    fn postgres() -> Backend {
        let url = crate::pg_test_cluster::database();
        Backend {
            store: Box::new(PostgresStore::open(&url).unwrap()),
            reopen: Box::new(move || Box::new(PostgresStore::open(&url).unwrap())),
            _dir: None,
        }
    }

    fn reopen(&self) -> Box<dyn Store> {
        (self.reopen)()
    }
}

impl Deref for Backend {
    type Target = dyn Store;
    fn deref(&self) -> &(dyn Store + 'static) {
        &*self.store
    }
}

/// One `#[test]` per backend for each contract test.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $( #[test] fn $name() { super::$name(&super::Backend::sqlite()) } )*
        }
        mod on_postgres {
            $( #[test] fn $name() { super::$name(&super::Backend::postgres()) } )*
        }
    };
}

contract! {
    the_first_day_is_the_earliest_observation_of_any_source,
    recollecting_a_window_replaces_never_adds,
    level_takes_the_last_observed_day_per_source_and_entity,
    entity_values_fold_each_entity_like_its_kind,
    distinct_counts_entities_with_a_non_zero_sum,
    any_cut_of_the_calendar_equals_the_raw_computation,
    a_failed_run_leaves_earlier_numbers_and_state_intact,
    state_is_replaced_only_when_given,
    the_resume_point_agrees_with_the_full_status,
    coverage_merges_overlapping_windows,
    a_run_with_gaps_leaves_exactly_those_days_uncovered_until_a_later_run_covers_them,
    uncovered_days_must_be_sorted_ranges_inside_a_successful_runs_window,
    an_invalid_observation_stores_nothing,
    reopening_reads_the_same_numbers_and_later_writes,
    interleaved_recollections_and_reads_equal_the_raw_computation,
    pages_of_observations_join_up_to_the_whole_list_in_its_order,
    writes_of_another_connection_are_noticed_once_and_own_writes_never,
    runs_recorded_together_answer_like_runs_recorded_alone,
    the_latest_runs_are_each_sources_newest_run_and_last_success,
    the_latest_error_is_looked_for_among_the_latest_runs_only,
    statuses_read_together_equal_each_read_alone,
}

pub(crate) fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

pub(crate) fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

pub(crate) fn run(
    source: &str,
    result: RunResult,
    from: &str,
    to: &str,
    finished: &str,
) -> RunRecord {
    RunRecord {
        source: source.into(),
        trigger: "schedule".into(),
        started_at: at(finished) - chrono::Duration::seconds(5),
        finished_at: at(finished),
        result,
        error: (result != RunResult::Success).then(|| "upstream answered 503".into()),
        window_from: d(from),
        window_to: d(to),
        warnings: vec![],
        http_requests: Some(3),
        uncovered: Vec::new(),
        error_kind: (result == RunResult::Error).then(|| "rate_limited".into()),
        retry_after: (result == RunResult::Error)
            .then(|| at(finished) + chrono::Duration::hours(14)),
    }
}

fn ok_run(from: &str, to: &str) -> RunRecord {
    run("src", RunResult::Success, from, to, "2026-12-01T02:30:00Z")
}

pub(crate) fn obs(unit: &str, indicator: &str, entity: &str, day: &str, value: f64) -> Observation {
    Observation {
        source: "src".into(),
        unit: unit.into(),
        indicator: indicator.into(),
        entity: entity.into(),
        day: d(day),
        value,
    }
}

fn inds(list: &[(&str, Kind)]) -> Vec<(String, Kind)> {
    list.iter().map(|(i, k)| (i.to_string(), *k)).collect()
}

/// (unit, indicator) -> value, for numbers only.
fn numbers(
    store: &dyn Store,
    start: &str,
    end: &str,
    list: &[(&str, Kind)],
) -> BTreeMap<(String, String), f64> {
    store
        .own_values(d(start), d(end), &inds(list))
        .unwrap()
        .into_iter()
        .map(|v| match v.data {
            OwnData::Number(n) => ((v.unit, v.indicator), n),
            OwnData::Entities(e) => ((v.unit, v.indicator), e.len() as f64),
        })
        .collect()
}

fn one(store: &dyn Store, start: &str, end: &str, ind: &str, kind: Kind) -> Option<f64> {
    let all = numbers(store, start, end, &[(ind, kind)]);
    assert!(all.len() <= 1, "{all:?}");
    all.into_values().next()
}

fn the_first_day_is_the_earliest_observation_of_any_source(store: &Backend) {
    assert_eq!(store.first_day().unwrap(), None);
    // A run without observations does not count.
    store
        .record_run(&ok_run("2026-01-01", "2026-01-31"), &[], None)
        .unwrap();
    assert_eq!(store.first_day().unwrap(), None);
    let later = vec![obs("county/a", "posts", "", "2026-08-03", 1.0)];
    store
        .record_run(&ok_run("2026-08-01", "2026-08-31"), &later, None)
        .unwrap();
    let earlier = vec![obs("county/b", "posts", "", "2026-05-20", 1.0)];
    store
        .record_run(&ok_run("2026-05-01", "2026-05-31"), &earlier, None)
        .unwrap();
    assert_eq!(store.first_day().unwrap(), Some(d("2026-05-20")));
}

fn recollecting_a_window_replaces_never_adds(store: &Backend) {
    let first = vec![
        obs("county/a", "posts", "", "2026-11-01", 2.0),
        obs("county/a", "posts", "", "2026-11-02", 3.0),
        obs("county/a", "posts", "", "2026-11-03", 4.0),
    ];
    let r1 = store
        .record_run(&ok_run("2026-11-01", "2026-11-03"), &first, None)
        .unwrap();
    let again = store
        .record_run(&ok_run("2026-11-01", "2026-11-03"), &first, None)
        .unwrap();
    // The month is whole, so this reads the aggregate; the range reads raw rows.
    assert_eq!(
        one(&**store, "2026-11-01", "2026-11-30", "posts", Kind::Count),
        Some(9.0)
    );
    assert_eq!(
        one(&**store, "2026-11-02", "2026-11-03", "posts", Kind::Count),
        Some(7.0)
    );
    // A late correction of one day replaces that day only.
    let fix = vec![obs("county/a", "posts", "", "2026-11-02", 5.0)];
    let r3 = store
        .record_run(&ok_run("2026-11-02", "2026-11-02"), &fix, None)
        .unwrap();
    assert_eq!(
        one(&**store, "2026-11-01", "2026-11-30", "posts", Kind::Count),
        Some(11.0)
    );
    assert_eq!(
        one(&**store, "2026-11-02", "2026-11-10", "posts", Kind::Count),
        Some(9.0)
    );
    assert!(r1 < again && again < r3);

    let trace = store
        .observations(&["county/a"], "posts", d("2026-11-01"), d("2026-11-30"))
        .unwrap();
    let got: Vec<(NaiveDate, f64, i64)> = trace
        .iter()
        .map(|o| (o.observation.day, o.observation.value, o.run_id))
        .collect();
    assert_eq!(
        got,
        [
            (d("2026-11-01"), 2.0, again),
            (d("2026-11-02"), 5.0, r3),
            (d("2026-11-03"), 4.0, again)
        ]
    );
    assert_eq!(trace[0].observation.source, "src");

    let by_id = store.runs(&[r3, 12345, r1]).unwrap();
    assert_eq!(
        by_id.iter().map(|r| r.id).collect::<Vec<_>>(),
        [r3, r1],
        "in the order asked, unknown ids left out"
    );
    assert_eq!(by_id[0].run, ok_run("2026-11-02", "2026-11-02"));

    let runs = store.recent_runs("src", 2).unwrap();
    assert_eq!(
        runs.iter()
            .map(|r| (r.id, r.observations_written))
            .collect::<Vec<_>>(),
        [(r3, 1), (again, 3)]
    );
    assert_eq!(runs[0].run, ok_run("2026-11-02", "2026-11-02"));
}

fn level_takes_the_last_observed_day_per_source_and_entity(store: &Backend) {
    let mut o = vec![
        // Deliberately out of day order.
        obs("u", "points", "alice", "2026-11-01", 100.0),
        obs("u", "points", "alice", "2026-11-20", 150.0),
        obs("u", "points", "alice", "2026-11-10", 130.0),
        obs("u", "points", "bob", "2026-10-30", 50.0),
    ];
    store
        .record_run(&ok_run("2026-10-01", "2026-11-30"), &o, None)
        .unwrap();
    // Another source reporting the same member adds: levels sum over (source, entity).
    o = vec![Observation {
        source: "other".into(),
        ..obs("u", "points", "alice", "2026-11-05", 7.0)
    }];
    store
        .record_run(
            &run(
                "other",
                RunResult::Success,
                "2026-11-05",
                "2026-11-05",
                "2026-12-01T00:00:00Z",
            ),
            &o,
            None,
        )
        .unwrap();

    assert_eq!(
        one(&**store, "2026-11-01", "2026-11-30", "points", Kind::Level),
        Some(150.0 + 7.0)
    );
    assert_eq!(
        one(&**store, "2026-10-01", "2026-12-31", "points", Kind::Level),
        Some(150.0 + 50.0 + 7.0)
    );
    // Cut mid-month: alice's last day within the range is 11-10.
    assert_eq!(
        one(&**store, "2026-10-15", "2026-11-15", "points", Kind::Level),
        Some(130.0 + 50.0 + 7.0)
    );
    assert_eq!(
        one(&**store, "2026-11-02", "2026-11-04", "points", Kind::Level),
        None
    );
    // The same rows read as a count sum every day.
    assert_eq!(
        one(&**store, "2026-11-01", "2026-11-30", "points", Kind::Count),
        Some(387.0)
    );
}

fn entity_values_fold_each_entity_like_its_kind(store: &Backend) {
    let mut other = obs("county/a", "points", "alice", "2026-10-20", 50.0);
    other.source = "other".into();
    let mut other_run = ok_run("2026-10-01", "2026-10-31");
    other_run.source = "other".into();
    store.record_run(&other_run, &[other], None).unwrap();
    let o = vec![
        // Levels: alice's last day per source (09-30 edge day and a whole
        // month, 10-31), summed over the two sources.
        obs("county/a", "points", "alice", "2026-09-30", 100.0),
        obs("county/a", "points", "alice", "2026-10-31", 300.0),
        obs("county/a", "points", "alice", "2026-11-01", 999.0),
        obs("county/a", "points", "bob", "2026-10-02", 70.0),
        // The same entity under another unit is another value.
        obs("county/b", "points", "alice", "2026-10-05", 20.0),
        // Counts sum over days.
        obs("county/a", "posts", "", "2026-09-30", 1.0),
        obs("county/a", "posts", "", "2026-10-01", 2.0),
        obs("county/a", "posts", "", "2026-10-31", 4.0),
    ];
    store
        .record_run(&ok_run("2026-09-01", "2026-11-30"), &o, None)
        .unwrap();
    let got: BTreeMap<(String, String, String), f64> = store
        .entity_values(
            d("2026-09-30"),
            d("2026-10-31"),
            &inds(&[("points", Kind::Level), ("posts", Kind::Count)]),
        )
        .unwrap()
        .into_iter()
        .map(|v| ((v.unit, v.indicator, v.entity), v.value))
        .collect();
    let key = |u: &str, i: &str, e: &str| (u.to_owned(), i.to_owned(), e.to_owned());
    assert_eq!(
        got,
        BTreeMap::from([
            (key("county/a", "points", "alice"), 350.0),
            (key("county/a", "points", "bob"), 70.0),
            (key("county/a", "posts", ""), 7.0),
            (key("county/b", "points", "alice"), 20.0),
        ])
    );
    // Only the indicators asked for.
    let only = store
        .entity_values(
            d("2026-09-30"),
            d("2026-10-31"),
            &inds(&[("posts", Kind::Count)]),
        )
        .unwrap();
    assert_eq!(only.len(), 1);
}

fn distinct_counts_entities_with_a_non_zero_sum(store: &Backend) {
    let o = vec![
        obs("u", "articles", "p1", "2026-11-01", 1.0),
        obs("u", "articles", "p1", "2026-11-02", 1.0),
        obs("u", "articles", "p2", "2026-11-03", 0.0),
        obs("u", "articles", "p3", "2026-12-03", 1.0),
        obs("v", "articles", "p9", "2026-11-03", 0.0),
    ];
    store
        .record_run(&ok_run("2026-11-01", "2026-12-31"), &o, None)
        .unwrap();
    let got = store
        .own_values(
            d("2026-11-01"),
            d("2026-11-30"),
            &inds(&[("articles", Kind::Distinct)]),
        )
        .unwrap();
    let set = |e: &[&str]| OwnData::Entities(e.iter().map(|s| s.to_string()).collect());
    assert_eq!(
        got,
        [
            OwnValue {
                unit: "u".into(),
                indicator: "articles".into(),
                data: set(&["p1"])
            },
            OwnValue {
                unit: "v".into(),
                indicator: "articles".into(),
                data: set(&[])
            },
        ]
    );
    // Indicators not asked for are left out.
    assert!(
        store
            .own_values(
                d("2026-11-01"),
                d("2026-11-30"),
                &inds(&[("posts", Kind::Count)])
            )
            .unwrap()
            .is_empty()
    );
}

/// The seeded PRNG of the code base, as `lcg(&mut seed)` draws used it.
fn lcg(rng: &mut fastrand::Rng) -> u64 {
    rng.u64(..1 << 31)
}

fn any_cut_of_the_calendar_equals_the_raw_computation(store: &Backend) {
    let mut truth: BTreeMap<(String, String, NaiveDate), f64> = BTreeMap::new();
    let mut seed = fastrand::Rng::with_seed(7);
    let first = d("2026-10-20");
    // Three passes over overlapping windows, like scheduled runs with lookback.
    for pass in 0..3 {
        let mut batch = Vec::new();
        for day_off in (pass * 20)..(pass * 20 + 60) {
            let day = first + chrono::Days::new(day_off);
            for unit in ["a", "b"] {
                for entity in ["", "x"] {
                    if lcg(&mut seed).is_multiple_of(3) {
                        continue; // leave holes
                    }
                    let value = (lcg(&mut seed) % 10) as f64;
                    truth.insert((unit.to_string(), entity.to_string(), day), value);
                    batch.push(obs(unit, "n", entity, &day.to_string(), value));
                }
            }
        }
        store
            .record_run(&ok_run("2026-10-20", "2027-02-01"), &batch, None)
            .unwrap();
    }
    let cuts = [
        ("2026-10-01", "2027-03-31"),
        ("2026-11-01", "2026-12-31"),
        ("2026-11-15", "2027-01-10"),
        ("2026-11-01", "2026-11-30"),
        ("2026-11-30", "2026-12-01"),
        ("2026-12-31", "2027-01-01"),
        ("2026-11-07", "2026-11-21"),
        ("2026-12-01", "2027-01-31"),
        ("2026-12-05", "2026-12-05"),
    ];
    for (s, e) in cuts {
        let (s_d, e_d) = (d(s), d(e));
        let mut count: BTreeMap<(String, String), f64> = BTreeMap::new();
        let mut last: BTreeMap<(String, String), (NaiveDate, f64)> = BTreeMap::new();
        for ((unit, entity, day), v) in &truth {
            if s_d <= *day && *day <= e_d {
                *count.entry((unit.clone(), "n".into())).or_default() += v;
                last.insert((unit.clone(), entity.clone()), (*day, *v)); // BTreeMap walks days in order
            }
        }
        let mut level: BTreeMap<(String, String), f64> = BTreeMap::new();
        for ((unit, _), (_, v)) in last {
            *level.entry((unit, "n".into())).or_default() += v;
        }
        assert_eq!(
            numbers(&**store, s, e, &[("n", Kind::Count)]),
            count,
            "count {s}..{e}"
        );
        assert_eq!(
            numbers(&**store, s, e, &[("n", Kind::Level)]),
            level,
            "level {s}..{e}"
        );
    }
}

fn a_failed_run_leaves_earlier_numbers_and_state_intact(store: &Backend) {
    let o = vec![obs("u", "posts", "", "2026-11-01", 4.0)];
    let state = serde_json::json!({"cursor": "abc"});
    let good = store
        .record_run(&ok_run("2026-11-01", "2026-11-01"), &o, Some(&state))
        .unwrap();
    let failed = run(
        "src",
        RunResult::Error,
        "2026-11-01",
        "2026-11-02",
        "2026-12-02T02:30:00Z",
    );
    let bad = store.record_run(&failed, &[], None).unwrap();

    assert_eq!(
        one(&**store, "2026-11-01", "2026-11-30", "posts", Kind::Count),
        Some(4.0)
    );
    let status = store.source_status("src").unwrap();
    assert_eq!(
        status.last_run.as_ref().map(|r| (r.id, r.run.result)),
        Some((bad, RunResult::Error))
    );
    // The run record keeps the kind and the retry-after.
    assert_eq!(status.last_run.as_ref().map(|r| &r.run), Some(&failed));
    assert_eq!(
        status.last_run.map(|r| r.run.error),
        Some(Some("upstream answered 503".into()))
    );
    assert_eq!(
        status.last_success,
        Some(LastSuccess {
            run_id: good,
            finished_at: at("2026-12-01T02:30:00Z"),
            window_to: d("2026-11-01")
        })
    );
    assert_eq!(status.state, Some(state));
    assert_eq!(
        status.runs,
        RunCounts {
            success: 1,
            error: 1,
            timeout: 0,
            panic: 0,
            crash: 0,
        }
    );

    let cov = store
        .coverage("src", d("2026-11-01"), d("2026-11-03"))
        .unwrap();
    assert_eq!(
        cov,
        Coverage {
            start: d("2026-11-01"),
            end: d("2026-11-03"),
            covered_days: 1,
            gaps: vec![(d("2026-11-02"), d("2026-11-03"))],
            failed_runs: 1,
            last_success: Some(at("2026-12-01T02:30:00Z")),
        }
    );
    assert!(!cov.is_complete());
    assert_eq!(
        store.source_status("nobody").unwrap(),
        SourceStatus::default()
    );
}

fn state_is_replaced_only_when_given(store: &Backend) {
    let s1 = serde_json::json!({"page": 1});
    let s2 = serde_json::json!({"page": 2});
    store
        .record_run(&ok_run("2026-11-01", "2026-11-01"), &[], Some(&s1))
        .unwrap();
    store
        .record_run(&ok_run("2026-11-02", "2026-11-02"), &[], None)
        .unwrap();
    assert_eq!(store.source_status("src").unwrap().state, Some(s1));
    store
        .record_run(&ok_run("2026-11-03", "2026-11-03"), &[], Some(&s2))
        .unwrap();
    assert_eq!(store.source_status("src").unwrap().state, Some(s2));
}

fn the_resume_point_agrees_with_the_full_status(store: &Backend) {
    assert_eq!(store.resume_point("src").unwrap(), ResumePoint::default());
    let state = serde_json::json!({"cursor": "abc"});
    let scheduled = run(
        "src",
        RunResult::Success,
        "2026-11-20",
        "2026-11-21",
        "2026-11-21T02:00:00Z",
    );
    store.record_run(&scheduled, &[], Some(&state)).unwrap();
    // A backfill of older days that finishes later is the last success.
    let backfill = run(
        "src",
        RunResult::Success,
        "2026-10-01",
        "2026-10-31",
        "2026-11-21T03:00:00Z",
    );
    store.record_run(&backfill, &[], None).unwrap();
    let failed = run(
        "src",
        RunResult::Error,
        "2026-11-21",
        "2026-11-22",
        "2026-11-22T02:00:00Z",
    );
    store.record_run(&failed, &[], None).unwrap();

    let point = store.resume_point("src").unwrap();
    let status = store.source_status("src").unwrap();
    assert_eq!(point.last_run_started, Some(failed.started_at));
    assert_eq!(
        point.last_run_started,
        status.last_run.map(|r| r.run.started_at)
    );
    assert_eq!(
        point.last_success.as_ref().map(|s| s.window_to),
        Some(d("2026-10-31"))
    );
    assert_eq!(point.last_success, status.last_success);
    assert_eq!(point.state, Some(state));
    assert_eq!(point.state, status.state);
    assert_eq!(store.resume_point("other").unwrap(), ResumePoint::default());
}

fn coverage_merges_overlapping_windows(store: &Backend) {
    for (from, to) in [
        ("2026-10-25", "2026-11-03"),
        ("2026-11-02", "2026-11-05"),
        ("2026-11-10", "2026-11-12"),
        ("2026-11-28", "2026-12-03"),
    ] {
        store.record_run(&ok_run(from, to), &[], None).unwrap();
    }
    // A failure outside the range does not count against it.
    store
        .record_run(
            &run(
                "src",
                RunResult::Timeout,
                "2026-12-05",
                "2026-12-06",
                "2026-12-07T00:00:00Z",
            ),
            &[],
            None,
        )
        .unwrap();
    let cov = store
        .coverage("src", d("2026-11-01"), d("2026-11-30"))
        .unwrap();
    // Covered: 11-01..11-05 (5), 11-10..11-12 (3), 11-28..11-30 (3).
    assert_eq!(cov.covered_days, 11);
    assert_eq!(
        cov.gaps,
        [
            (d("2026-11-06"), d("2026-11-09")),
            (d("2026-11-13"), d("2026-11-27"))
        ]
    );
    assert_eq!(cov.failed_runs, 0);
    let cov = store
        .coverage("src", d("2026-11-01"), d("2026-11-04"))
        .unwrap();
    assert!(cov.is_complete() && cov.covered_days == 4);
}

fn gappy_run(from: &str, to: &str, gaps: &[(&str, &str)]) -> RunRecord {
    RunRecord {
        uncovered: gaps.iter().map(|(a, b)| (d(a), d(b))).collect(),
        ..ok_run(from, to)
    }
}

fn gaps_of(store: &dyn Store, from: &str, to: &str) -> Vec<(NaiveDate, NaiveDate)> {
    store.coverage("src", d(from), d(to)).unwrap().gaps
}

fn a_run_with_gaps_leaves_exactly_those_days_uncovered_until_a_later_run_covers_them(
    store: &Backend,
) {
    let gaps = [("2026-11-03", "2026-11-03"), ("2026-11-09", "2026-11-10")];
    store
        .record_run(&gappy_run("2026-11-01", "2026-11-10", &gaps), &[], None)
        .unwrap();
    let want = vec![
        (d("2026-11-03"), d("2026-11-03")),
        (d("2026-11-09"), d("2026-11-10")),
    ];
    let cov = store
        .coverage("src", d("2026-11-01"), d("2026-11-10"))
        .unwrap();
    assert_eq!((cov.gaps.clone(), cov.covered_days), (want.clone(), 7));
    assert!(!cov.is_complete());
    assert!(
        store
            .coverage("src", d("2026-11-04"), d("2026-11-08"))
            .unwrap()
            .is_complete()
    );
    // The run says so, and where the next run has to reach back to.
    let status = store.source_status("src").unwrap();
    assert_eq!(status.last_run.unwrap().run.uncovered, want);
    assert_eq!(store.resume_point("src").unwrap().uncovered, want);

    // A failed run over them changes nothing.
    store
        .record_run(
            &run(
                "src",
                RunResult::Error,
                "2026-11-09",
                "2026-11-11",
                "2026-12-02T00:00:00Z",
            ),
            &[],
            None,
        )
        .unwrap();
    assert_eq!(store.resume_point("src").unwrap().uncovered, want);

    // A later run covering 11-09..11-11 closes that gap, leaves 11-03.
    store
        .record_run(&ok_run("2026-11-09", "2026-11-11"), &[], None)
        .unwrap();
    let left = vec![(d("2026-11-03"), d("2026-11-03"))];
    assert_eq!(gaps_of(&**store, "2026-11-01", "2026-11-11"), left);
    assert_eq!(store.resume_point("src").unwrap().uncovered, left);
    assert_eq!(
        store
            .source_status("src")
            .unwrap()
            .last_run
            .unwrap()
            .run
            .uncovered,
        []
    );

    // The latest successful run asking for a day decides: one that names
    // a covered day uncovered (the platform says it is not final after
    // all) uncovers it, and its other days stay covered.
    store
        .record_run(
            &gappy_run("2026-11-05", "2026-11-06", &[("2026-11-06", "2026-11-06")]),
            &[],
            None,
        )
        .unwrap();
    let now = vec![
        (d("2026-11-03"), d("2026-11-03")),
        (d("2026-11-06"), d("2026-11-06")),
    ];
    assert_eq!(gaps_of(&**store, "2026-11-01", "2026-11-11"), now);
    assert_eq!(store.resume_point("src").unwrap().uncovered, now);

    // A backfill of the whole stretch covers everything again.
    store
        .record_run(&ok_run("2026-11-01", "2026-11-11"), &[], None)
        .unwrap();
    assert_eq!(gaps_of(&**store, "2026-11-01", "2026-11-11"), []);
    assert_eq!(store.resume_point("src").unwrap().uncovered, []);
    // Reopened, the index is rebuilt from the rows the same way.
    let reopened = store.reopen();
    assert_eq!(gaps_of(&*reopened, "2026-11-01", "2026-11-11"), []);
}

fn uncovered_days_must_be_sorted_ranges_inside_a_successful_runs_window(store: &Backend) {
    for (record, what) in [
        (
            gappy_run("2026-11-01", "2026-11-10", &[("2026-10-31", "2026-11-01")]),
            "before the window",
        ),
        (
            gappy_run("2026-11-01", "2026-11-10", &[("2026-11-10", "2026-11-11")]),
            "after the window",
        ),
        (
            gappy_run("2026-11-01", "2026-11-10", &[("2026-11-05", "2026-11-04")]),
            "reversed",
        ),
        (
            gappy_run(
                "2026-11-01",
                "2026-11-10",
                &[("2026-11-05", "2026-11-06"), ("2026-11-02", "2026-11-03")],
            ),
            "unsorted",
        ),
        (
            RunRecord {
                result: RunResult::Error,
                ..gappy_run("2026-11-01", "2026-11-10", &[("2026-11-02", "2026-11-02")])
            },
            "failed run",
        ),
    ] {
        let err = store.record_run(&record, &[], None).unwrap_err();
        assert!(
            err.to_string()
                .contains("must be sorted, disjoint ranges inside its window"),
            "{what}: {err}"
        );
    }
    assert!(store.source_status("src").unwrap().last_run.is_none());
}

fn an_invalid_observation_stores_nothing(store: &Backend) {
    // Two values of 1e308 would sum to infinity in a roll-up.
    for bad in [f64::NAN, f64::INFINITY, 1e308, -1.5e15] {
        let o = vec![
            obs("u", "posts", "", "2026-11-01", 1.0),
            obs("u", "posts", "", "2026-11-02", bad),
        ];
        let err = store
            .record_run(&ok_run("2026-11-01", "2026-11-02"), &o, None)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("run of source \"src\" cannot be stored: observation"),
            "{err}"
        );
    }
    assert!(store.recent_runs("src", 10).unwrap().is_empty());
    assert_eq!(
        one(&**store, "2026-11-01", "2026-11-30", "posts", Kind::Count),
        None
    );
}

/// Q4 2026 of `u`: posts (count) on three days, points (level) of alice.
fn q4_data() -> Vec<Observation> {
    vec![
        obs("u", "posts", "", "2026-10-05", 1.0),
        obs("u", "posts", "", "2026-11-10", 2.0),
        obs("u", "posts", "", "2026-12-20", 4.0),
        obs("u", "points", "alice", "2026-11-10", 100.0),
        obs("u", "points", "alice", "2026-11-20", 150.0),
    ]
}

const Q4: &[(&str, Kind)] = &[("posts", Kind::Count), ("points", Kind::Level)];

fn q4(store: &dyn Store) -> BTreeMap<(String, String), f64> {
    numbers(store, "2026-10-01", "2026-12-31", Q4)
}

fn expect(posts: f64, points: f64) -> BTreeMap<(String, String), f64> {
    BTreeMap::from([
        (("u".to_owned(), "points".to_owned()), points),
        (("u".to_owned(), "posts".to_owned()), posts),
    ])
}

fn reopening_reads_the_same_numbers_and_later_writes(backend: &Backend) {
    {
        let store = backend.reopen();
        store
            .record_run(&ok_run("2026-10-01", "2026-12-31"), &q4_data(), None)
            .unwrap();
        assert_eq!(q4(&*store), expect(7.0, 150.0));
    }
    let store = backend.reopen();
    assert_eq!(q4(&*store), expect(7.0, 150.0));
    store
        .record_run(
            &ok_run("2026-10-05", "2026-10-05"),
            &[obs("u", "posts", "", "2026-10-05", 0.0)],
            None,
        )
        .unwrap();
    assert_eq!(q4(&*store), expect(6.0, 150.0));
}

fn interleaved_recollections_and_reads_equal_the_raw_computation(store: &Backend) {
    let mut truth: BTreeMap<(String, NaiveDate), f64> = BTreeMap::new();
    let mut seed = fastrand::Rng::with_seed(11);
    let first = d("2026-09-01");
    let cuts = [
        ("2026-09-01", "2026-12-31"),
        ("2026-10-01", "2026-12-31"),
        ("2026-10-01", "2026-10-31"),
        ("2026-09-15", "2026-11-30"),
        ("2026-11-01", "2026-12-10"),
    ];
    for _pass in 0..12 {
        // A run re-collects a random window of up to 40 days.
        let from = first + chrono::Days::new(lcg(&mut seed) % 110);
        let to = from + chrono::Days::new(lcg(&mut seed) % 40);
        let mut batch = Vec::new();
        for day in from.iter_days().take_while(|d| *d <= to) {
            for unit in ["a", "b"] {
                if lcg(&mut seed).is_multiple_of(4) {
                    continue;
                }
                let value = (lcg(&mut seed) % 10) as f64;
                truth.insert((unit.to_owned(), day), value);
                batch.push(obs(unit, "n", "", &day.to_string(), value));
            }
        }
        store
            .record_run(&ok_run(&from.to_string(), &to.to_string()), &batch, None)
            .unwrap();
        for (s, e) in cuts {
            let (s_d, e_d) = (d(s), d(e));
            let mut count: BTreeMap<(String, String), f64> = BTreeMap::new();
            let mut last: BTreeMap<(String, String), f64> = BTreeMap::new();
            for ((unit, day), v) in &truth {
                if s_d <= *day && *day <= e_d {
                    *count.entry((unit.clone(), "n".into())).or_default() += v;
                    last.insert((unit.clone(), "n".into()), *v);
                }
            }
            assert_eq!(
                numbers(&**store, s, e, &[("n", Kind::Count)]),
                count,
                "count {s}..{e}"
            );
            assert_eq!(
                numbers(&**store, s, e, &[("n", Kind::Level)]),
                last,
                "level {s}..{e}"
            );
        }
    }
}

fn pages_of_observations_join_up_to_the_whole_list_in_its_order(store: &Backend) {
    let mut all = Vec::new();
    // Two units, two sources, entities and days interleaved, plus rows
    // that the figure does not cover (another indicator, unit, month).
    for (source, unit) in [("b", "county/a"), ("a", "county/a"), ("a", "county")] {
        let mut observations = Vec::new();
        for entity in ["", "x", "y"] {
            for day in ["2026-03-01", "2026-03-02", "2026-03-31"] {
                let mut o = obs(unit, "posts", entity, day, 1.0);
                o.source = source.into();
                observations.push(o);
            }
        }
        let mut other = obs(unit, "likes", "x", "2026-03-02", 5.0);
        other.source = source.into();
        observations.push(other);
        let mut april = obs(unit, "posts", "x", "2026-04-01", 5.0);
        april.source = source.into();
        observations.push(april);
        let mut run = ok_run("2026-03-01", "2026-04-30");
        run.source = source.into();
        store.record_run(&run, &observations, None).unwrap();
    }
    let mut elsewhere = obs("county/b", "posts", "", "2026-03-05", 1.0);
    elsewhere.source = "a".into();
    let mut run = ok_run("2026-03-01", "2026-03-31");
    run.source = "a".into();
    store.record_run(&run, &[elsewhere], None).unwrap();

    let units = ["county", "county/a"];
    let (start, end) = (d("2026-03-01"), d("2026-03-31"));
    all.extend(store.observations(&units, "posts", start, end).unwrap());
    assert_eq!(all.len(), 27);
    for limit in [1, 2, 4, 9, 26, 27, 100] {
        let mut joined = Vec::new();
        let mut after: Option<ObservationCursor> = None;
        loop {
            let page = store
                .observations_page(&units, "posts", start, end, after.as_ref(), limit)
                .unwrap();
            assert!(page.len() <= limit);
            // The default of the trait (filtering the whole list) agrees.
            let fallback =
                default_page(store, &units, "posts", start, end, after.as_ref(), limit).unwrap();
            assert_eq!(page, fallback, "limit {limit} after {after:?}");
            let Some(last) = page.last() else { break };
            after = Some(ObservationCursor::of(&last.observation));
            joined.extend(page);
        }
        assert_eq!(joined, all, "limit {limit}");
    }
    // A cursor for a unit outside the list gives nothing.
    let stray = ObservationCursor {
        unit: "county/b".into(),
        source: "a".into(),
        entity: String::new(),
        day: d("2026-03-05"),
    };
    assert!(
        store
            .observations_page(&units, "posts", start, end, Some(&stray), 10)
            .unwrap()
            .is_empty()
    );
}

/// The trait's default `observations_page`, on a store that only
/// forwards `observations`.
fn default_page(
    store: &Backend,
    units: &[&str],
    indicator: &str,
    start: NaiveDate,
    end: NaiveDate,
    after: Option<&ObservationCursor>,
    limit: usize,
) -> Result<Vec<StoredObservation>, StoreError> {
    struct Plain(Box<dyn Store>);
    impl Store for Plain {
        fn record_run(
            &self,
            _: &RunRecord,
            _: &[Observation],
            _: Option<&serde_json::Value>,
        ) -> Result<i64, StoreError> {
            unreachable!()
        }
        fn source_status(&self, _: &str) -> Result<SourceStatus, StoreError> {
            unreachable!()
        }
        fn resume_point(&self, _: &str) -> Result<ResumePoint, StoreError> {
            unreachable!()
        }
        fn recent_runs(&self, _: &str, _: usize) -> Result<Vec<StoredRun>, StoreError> {
            unreachable!()
        }
        fn runs(&self, _: &[i64]) -> Result<Vec<StoredRun>, StoreError> {
            unreachable!()
        }
        fn own_values(
            &self,
            _: NaiveDate,
            _: NaiveDate,
            _: &[(String, Kind)],
        ) -> Result<Vec<OwnValue>, StoreError> {
            unreachable!()
        }
        fn entity_values(
            &self,
            _: NaiveDate,
            _: NaiveDate,
            _: &[(String, Kind)],
        ) -> Result<Vec<EntityValue>, StoreError> {
            unreachable!()
        }
        fn coverage(&self, _: &str, _: NaiveDate, _: NaiveDate) -> Result<Coverage, StoreError> {
            unreachable!()
        }
        fn observations(
            &self,
            units: &[&str],
            indicator: &str,
            start: NaiveDate,
            end: NaiveDate,
        ) -> Result<Vec<StoredObservation>, StoreError> {
            self.0.observations(units, indicator, start, end)
        }
        fn first_day(&self) -> Result<Option<NaiveDate>, StoreError> {
            unreachable!()
        }
        fn check_writable(&self) -> Result<(), StoreError> {
            unreachable!()
        }
    }
    Plain(store.reopen()).observations_page(units, indicator, start, end, after, limit)
}

fn writes_of_another_connection_are_noticed_once_and_own_writes_never(store: &Backend) {
    // A second store on the same database stands in for `tallyd collect`.
    let other = store.reopen();
    assert!(!store.written_elsewhere().unwrap());
    store
        .record_run(&ok_run("2026-01-01", "2026-01-31"), &[], None)
        .unwrap();
    assert!(!store.written_elsewhere().unwrap(), "its own write");
    other
        .record_run(&ok_run("2026-02-01", "2026-02-28"), &[], None)
        .unwrap();
    assert!(store.written_elsewhere().unwrap());
    assert!(!store.written_elsewhere().unwrap(), "told once");
    assert!(other.written_elsewhere().unwrap(), "the first store wrote");
}

fn to_record(source: &str, trigger: &str, o: Vec<Observation>) -> RunToRecord {
    let first = o.iter().map(|o| o.day).min().unwrap_or(d("2026-11-01"));
    let last = o.iter().map(|o| o.day).max().unwrap_or(first);
    let mut run = run(
        source,
        RunResult::Success,
        "2026-11-01",
        "2026-11-01",
        "2026-12-01T02:30:00Z",
    );
    run.trigger = trigger.into();
    run.window_from = first;
    run.window_to = last;
    run.error = None;
    RunToRecord {
        run,
        observations: o,
        state: None,
    }
}

fn runs_recorded_together_answer_like_runs_recorded_alone(store: &Backend) {
    let state = serde_json::json!({"cursor": 7});
    let mut one = obs("a", "n", "", "2026-11-01", 1.0);
    one.source = "s1".into();
    let mut with_state = to_record("s1", "schedule", vec![one]);
    with_state.state = Some(state.clone());
    let empty = to_record("s2", "manual", vec![]);
    let answers = store.record_runs(&[with_state, empty]);
    let ids: Vec<i64> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(ids.len(), 2);
    let s1 = store.source_status("s1").unwrap();
    assert_eq!(
        s1.last_run.map(|r| (r.id, r.observations_written)),
        Some((ids[0], 1))
    );
    assert_eq!(s1.state, Some(state));
    let s2 = store.source_status("s2").unwrap();
    assert_eq!(
        s2.last_run.map(|r| (r.id, r.run.trigger)),
        Some((ids[1], "manual".into()))
    );
    assert!(store.record_runs(&[]).is_empty());
}

fn the_latest_runs_are_each_sources_newest_run_and_last_success(store: &Backend) {
    let record = |source: &str, result, finished: &str| {
        store
            .record_run(
                &run(source, result, "2026-11-01", "2026-11-01", finished),
                &[],
                None,
            )
            .unwrap()
    };
    // "a" succeeded, then failed twice; "b" only failed; "c" failed, then
    // succeeded; "none" never ran.
    record("a", RunResult::Success, "2026-12-01T01:00:00Z");
    record("b", RunResult::Timeout, "2026-12-01T01:30:00Z");
    record("a", RunResult::Error, "2026-12-01T02:00:00Z");
    record("c", RunResult::Error, "2026-12-01T02:10:00Z");
    record("a", RunResult::Crash, "2026-12-01T03:00:00Z");
    record("c", RunResult::Success, "2026-12-01T03:10:00Z");
    let latest = store.latest_runs(&["c", "none", "a", "b"]).unwrap();
    let want = |source: &str, result, finished: &str, success: Option<&str>| LatestRun {
        source: source.into(),
        result,
        finished_at: at(finished),
        last_success: success.map(at),
    };
    assert_eq!(
        latest,
        [
            want(
                "c",
                RunResult::Success,
                "2026-12-01T03:10:00Z",
                Some("2026-12-01T03:10:00Z")
            ),
            want(
                "a",
                RunResult::Crash,
                "2026-12-01T03:00:00Z",
                Some("2026-12-01T01:00:00Z")
            ),
            want("b", RunResult::Timeout, "2026-12-01T01:30:00Z", None),
        ]
    );
    // What another handle (another replica) reads is the same.
    assert_eq!(
        store
            .reopen()
            .latest_runs(&["c", "none", "a", "b"])
            .unwrap(),
        latest
    );
    assert!(store.latest_runs(&[]).unwrap().is_empty());
}

fn the_latest_error_is_looked_for_among_the_latest_runs_only(store: &Backend) {
    assert_eq!(store.latest_error("src", 50).unwrap(), None);
    let failed = |result, day: &str| run("src", result, day, day, &format!("{day}T02:30:00Z"));
    let ok = |day: &str| failed(RunResult::Success, day);
    store.record_run(&ok("2026-11-01"), &[], None).unwrap();
    store
        .record_run(&failed(RunResult::Error, "2026-11-02"), &[], None)
        .unwrap();
    let timeout = store
        .record_run(&failed(RunResult::Timeout, "2026-11-03"), &[], None)
        .unwrap();
    store.record_run(&ok("2026-11-04"), &[], None).unwrap();
    store.record_run(&ok("2026-11-05"), &[], None).unwrap();
    // Another source's error is not this one's.
    let mut other = failed(RunResult::Error, "2026-11-06");
    other.source = "other".into();
    store.record_run(&other, &[], None).unwrap();

    let latest = store.latest_error("src", 50).unwrap().expect("an error");
    assert_eq!(latest.id, timeout);
    assert_eq!(latest.run, failed(RunResult::Timeout, "2026-11-03"));
    assert_eq!(
        store.latest_error("src", 3).unwrap().map(|r| r.id),
        Some(timeout)
    );
    // Beyond the reach: the two latest runs succeeded.
    assert_eq!(store.latest_error("src", 2).unwrap(), None);
    assert_eq!(
        store.latest_error("other", 1).unwrap().map(|r| r.run),
        Some(other)
    );
}

fn statuses_read_together_equal_each_read_alone(store: &Backend) {
    assert_eq!(store.source_statuses(&[], 50).unwrap(), vec![]);
    let runs = [
        ("a", RunResult::Success, "2026-11-01"),
        ("a", RunResult::Error, "2026-11-02"),
        ("a", RunResult::Success, "2026-11-03"),
        ("b", RunResult::Timeout, "2026-11-01"),
        ("c", RunResult::Success, "2026-11-01"),
    ];
    for (source, result, day) in runs {
        let r = run(source, result, day, day, &format!("{day}T02:30:00Z"));
        let state = serde_json::json!({ "at": day });
        store.record_run(&r, &[], Some(&state)).unwrap();
    }
    // Unknown and repeated sources too, in the order asked.
    let asked = ["c", "nobody", "a", "b", "a"];
    for reach in [1, 2, 50] {
        let together = store.source_statuses(&asked, reach).unwrap();
        let alone: Vec<_> = asked
            .iter()
            .map(|s| {
                (
                    store.source_status(s).unwrap(),
                    store.latest_error(s, reach).unwrap(),
                )
            })
            .collect();
        assert_eq!(together, alone, "reach {reach}");
    }
    let together = store.source_statuses(&asked, 50).unwrap();
    assert_eq!(together[2].0.runs.success, 2);
    assert_eq!(together[2].0.runs.error, 1);
    assert_eq!(
        together[2].1.as_ref().map(|r| r.run.result),
        Some(RunResult::Error)
    );
    assert_eq!(together[1], (SourceStatus::default(), None));
}
