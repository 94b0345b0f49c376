//! Tests of the store through its trait: reads, coverage, the month cache and
//! the run index checked against the same numbers computed from raw rows.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};

use super::month_cache::bump_month_versions;
use super::run_index::{RUN_COLUMNS, parse_uncovered, run_row, stored_run};
use super::schema::MIGRATIONS;
use super::*;

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    (dir, store)
}

fn run(source: &str, result: RunResult, from: &str, to: &str, finished: &str) -> RunRecord {
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

fn obs(unit: &str, indicator: &str, entity: &str, day: &str, value: f64) -> Observation {
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
    store: &SqliteStore,
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

fn one(store: &SqliteStore, start: &str, end: &str, ind: &str, kind: Kind) -> Option<f64> {
    let all = numbers(store, start, end, &[(ind, kind)]);
    assert!(all.len() <= 1, "{all:?}");
    all.into_values().next()
}

#[test]
fn the_first_day_is_the_earliest_observation_of_any_source() {
    let (_dir, store) = open();
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

#[test]
fn recollecting_a_window_replaces_never_adds() {
    let (_dir, store) = open();
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
        one(&store, "2026-11-01", "2026-11-30", "posts", Kind::Count),
        Some(9.0)
    );
    assert_eq!(
        one(&store, "2026-11-02", "2026-11-03", "posts", Kind::Count),
        Some(7.0)
    );
    // A late correction of one day replaces that day only.
    let fix = vec![obs("county/a", "posts", "", "2026-11-02", 5.0)];
    let r3 = store
        .record_run(&ok_run("2026-11-02", "2026-11-02"), &fix, None)
        .unwrap();
    assert_eq!(
        one(&store, "2026-11-01", "2026-11-30", "posts", Kind::Count),
        Some(11.0)
    );
    assert_eq!(
        one(&store, "2026-11-02", "2026-11-10", "posts", Kind::Count),
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

#[test]
fn level_takes_the_last_observed_day_per_source_and_entity() {
    let (_dir, store) = open();
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
        one(&store, "2026-11-01", "2026-11-30", "points", Kind::Level),
        Some(150.0 + 7.0)
    );
    assert_eq!(
        one(&store, "2026-10-01", "2026-12-31", "points", Kind::Level),
        Some(150.0 + 50.0 + 7.0)
    );
    // Cut mid-month: alice's last day within the range is 11-10.
    assert_eq!(
        one(&store, "2026-10-15", "2026-11-15", "points", Kind::Level),
        Some(130.0 + 50.0 + 7.0)
    );
    assert_eq!(
        one(&store, "2026-11-02", "2026-11-04", "points", Kind::Level),
        None
    );
    // The same rows read as a count sum every day.
    assert_eq!(
        one(&store, "2026-11-01", "2026-11-30", "points", Kind::Count),
        Some(387.0)
    );
}

#[test]
fn entity_values_fold_each_entity_like_its_kind() {
    let (_dir, store) = open();
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

#[test]
fn distinct_counts_entities_with_a_non_zero_sum() {
    let (_dir, store) = open();
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

#[test]
fn any_cut_of_the_calendar_equals_the_raw_computation() {
    let (_dir, store) = open();
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
            numbers(&store, s, e, &[("n", Kind::Count)]),
            count,
            "count {s}..{e}"
        );
        assert_eq!(
            numbers(&store, s, e, &[("n", Kind::Level)]),
            level,
            "level {s}..{e}"
        );
    }
}

#[test]
fn a_failed_run_leaves_earlier_numbers_and_state_intact() {
    let (_dir, store) = open();
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
        one(&store, "2026-11-01", "2026-11-30", "posts", Kind::Count),
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

#[test]
fn state_is_replaced_only_when_given() {
    let (_dir, store) = open();
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

#[test]
fn the_resume_point_agrees_with_the_full_status() {
    let (_dir, store) = open();
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

#[test]
fn coverage_merges_overlapping_windows() {
    let (_dir, store) = open();
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

fn gaps_of(store: &SqliteStore, from: &str, to: &str) -> Vec<(NaiveDate, NaiveDate)> {
    store.coverage("src", d(from), d(to)).unwrap().gaps
}

#[test]
fn a_run_with_gaps_leaves_exactly_those_days_uncovered_until_a_later_run_covers_them() {
    let (_dir, store) = open();
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
    assert_eq!(gaps_of(&store, "2026-11-01", "2026-11-11"), left);
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
    assert_eq!(gaps_of(&store, "2026-11-01", "2026-11-11"), now);
    assert_eq!(store.resume_point("src").unwrap().uncovered, now);

    // A backfill of the whole stretch covers everything again.
    store
        .record_run(&ok_run("2026-11-01", "2026-11-11"), &[], None)
        .unwrap();
    assert_eq!(gaps_of(&store, "2026-11-01", "2026-11-11"), []);
    assert_eq!(store.resume_point("src").unwrap().uncovered, []);
    // Reopened, the index is rebuilt from the rows the same way.
    let reopened = SqliteStore::open(store.path().parent().unwrap()).unwrap();
    assert_eq!(gaps_of(&reopened, "2026-11-01", "2026-11-11"), []);
}

#[test]
fn uncovered_days_must_be_sorted_ranges_inside_a_successful_runs_window() {
    let (_dir, store) = open();
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

/// The SQL text of every statement the connections given to
/// [`count_statements`] run.
static STATEMENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn count_statements(event: rusqlite::trace::TraceEvent<'_>) {
    if let rusqlite::trace::TraceEvent::Stmt(stmt, _) = event {
        // The text as prepared, without the values bound to it.
        lock(&STATEMENTS).push(stmt.sql().into_owned());
    }
}

fn statements_of(f: impl FnOnce()) -> Vec<String> {
    lock(&STATEMENTS).clear();
    f();
    std::mem::take(&mut *lock(&STATEMENTS))
}

#[test]
fn uncovered_days_cost_no_statement_of_their_own() {
    let (_dir, store) = open();
    let stmt = rusqlite::trace::TraceEventCodes::SQLITE_TRACE_STMT;
    lock(&store.writer)
        .conn
        .trace_v2(stmt, Some(count_statements));
    lock(&store.reader)
        .conn
        .trace_v2(stmt, Some(count_statements));
    let data = |day| vec![obs("u", "posts", "", day, 1.0)];
    // Warm the statement caches and the key ids.
    store
        .record_run(
            &ok_run("2026-11-01", "2026-11-02"),
            &data("2026-11-01"),
            None,
        )
        .unwrap();
    store
        .coverage("src", d("2026-11-01"), d("2026-11-30"))
        .unwrap();

    let plain = statements_of(|| {
        store
            .record_run(
                &ok_run("2026-11-02", "2026-11-04"),
                &data("2026-11-02"),
                None,
            )
            .unwrap();
    });
    let gappy = statements_of(|| {
        store
            .record_run(
                &gappy_run("2026-11-03", "2026-11-05", &[("2026-11-04", "2026-11-05")]),
                &data("2026-11-03"),
                None,
            )
            .unwrap();
    });
    assert!(!plain.is_empty());
    assert_eq!(plain, gappy);
    // Reading coverage and the resume point folds both with the same
    // statements as a run without gaps.
    let read = || {
        store
            .coverage("src", d("2026-11-01"), d("2026-11-30"))
            .unwrap();
        store.resume_point("src").unwrap();
    };
    let after_gappy = statements_of(read);
    store
        .record_run(&ok_run("2026-11-04", "2026-11-05"), &[], None)
        .unwrap();
    let after_plain = statements_of(read);
    assert_eq!(after_plain, after_gappy);
    assert_eq!(gaps_of(&store, "2026-11-01", "2026-11-05"), []);
}

#[test]
fn an_invalid_observation_stores_nothing() {
    let (_dir, store) = open();
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
        one(&store, "2026-11-01", "2026-11-30", "posts", Kind::Count),
        None
    );
}

#[test]
fn reopening_keeps_data_and_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        store
            .record_run(
                &ok_run("2026-11-01", "2026-11-01"),
                &[obs("u", "posts", "", "2026-11-01", 3.0)],
                None,
            )
            .unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(
        one(&store, "2026-11-01", "2026-11-30", "posts", Kind::Count),
        Some(3.0)
    );
    let conn = Connection::open(store.path()).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, MIGRATIONS.len() as i64);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(store);

    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(dir.path()).err().unwrap();
    assert!(
        err.to_string().ends_with(&format!(
            "has schema version 99, this tallyd knows versions up to {}: run a newer tallyd or point data_dir elsewhere",
            MIGRATIONS.len()
        )),
        "{err}"
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

fn q4(store: &SqliteStore) -> BTreeMap<(String, String), f64> {
    numbers(store, "2026-10-01", "2026-12-31", Q4)
}

fn expect(posts: f64, points: f64) -> BTreeMap<(String, String), f64> {
    BTreeMap::from([
        (("u".to_owned(), "points".to_owned()), points),
        (("u".to_owned(), "posts".to_owned()), posts),
    ])
}

#[test]
fn a_recollected_past_day_is_read_again_not_served_from_the_month_cache() {
    let (_dir, store) = open();
    store
        .record_run(&ok_run("2026-10-01", "2026-12-31"), &q4_data(), None)
        .unwrap();
    assert_eq!(q4(&store), expect(7.0, 150.0));
    assert!(
        lock(&store.reader).months.rows > 0,
        "the months were cached"
    );
    // November again: a corrected count, a later level, and a new key.
    let again = vec![
        obs("u", "posts", "", "2026-11-10", 5.0),
        obs("u", "points", "alice", "2026-11-25", 170.0),
        obs("u", "points", "bob", "2026-11-02", 30.0),
    ];
    store
        .record_run(&ok_run("2026-11-01", "2026-11-30"), &again, None)
        .unwrap();
    assert_eq!(q4(&store), expect(10.0, 200.0));
    // The months untouched by the run still come from the cache, and
    // the partial month at an edge mixes both.
    assert_eq!(
        numbers(&store, "2026-10-01", "2026-11-24", Q4),
        expect(6.0, 180.0)
    );
    // Entity values fold the same months.
    let alice: Vec<f64> = store
        .entity_values(
            d("2026-10-01"),
            d("2026-12-31"),
            &inds(&[("points", Kind::Level)]),
        )
        .unwrap()
        .into_iter()
        .filter(|v| v.entity == "alice")
        .map(|v| v.value)
        .collect();
    assert_eq!(alice, [170.0]);
}

#[test]
fn a_write_by_another_process_is_seen_by_a_reader_that_cached_the_month() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = SqliteStore::open(dir.path()).unwrap();
    daemon
        .record_run(&ok_run("2026-10-01", "2026-12-31"), &q4_data(), None)
        .unwrap();
    assert_eq!(q4(&daemon), expect(7.0, 150.0));
    // `tallyd collect` in another process: its own connections and cache.
    let collect = SqliteStore::open(dir.path()).unwrap();
    collect
        .record_run(
            &ok_run("2026-12-01", "2026-12-31"),
            &[obs("u", "posts", "", "2026-12-20", 40.0)],
            None,
        )
        .unwrap();
    assert_eq!(q4(&daemon), expect(43.0, 150.0));
}

#[test]
fn the_month_version_alone_decides_whether_a_cached_month_is_used() {
    let (_dir, store) = open();
    store
        .record_run(&ok_run("2026-10-01", "2026-12-31"), &q4_data(), None)
        .unwrap();
    assert_eq!(q4(&store), expect(7.0, 150.0));
    // Change `monthly` behind the store's back without a new version:
    // the cache answers, which shows it is used...
    let conn = Connection::open(store.path()).unwrap();
    let november = month_num(d("2026-11-01"));
    conn.execute(
        "UPDATE monthly SET sum = sum + 100 WHERE month = ?1",
        [november],
    )
    .unwrap();
    assert_eq!(q4(&store), expect(7.0, 150.0));
    // ...and once the version moves, the month is read again.
    bump_month_versions(&conn, [november, november]).unwrap();
    assert_eq!(q4(&store), expect(107.0, 150.0));
    let version: i64 = conn
        .query_row(
            "SELECT version FROM monthly_versions WHERE month = ?1",
            [november],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, 2, "one run, then one bump of the month");
}

#[test]
fn reopening_reads_the_same_numbers_and_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        store
            .record_run(&ok_run("2026-10-01", "2026-12-31"), &q4_data(), None)
            .unwrap();
        assert_eq!(q4(&store), expect(7.0, 150.0));
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(q4(&store), expect(7.0, 150.0));
    store
        .record_run(
            &ok_run("2026-10-05", "2026-10-05"),
            &[obs("u", "posts", "", "2026-10-05", 0.0)],
            None,
        )
        .unwrap();
    assert_eq!(q4(&store), expect(6.0, 150.0));
}

#[test]
fn a_database_of_schema_1_is_migrated_and_keeps_its_numbers_exact() {
    let dir = tempfile::tempdir().unwrap();
    {
        // What a tallyd of schema 1 left: one November observation.
        let mut conn = Connection::open(dir.path().join("tally.db")).unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute_batch(MIGRATIONS[0]).unwrap();
        tx.pragma_update(None, "user_version", 1).unwrap();
        let day = day_num(d("2026-11-10"));
        tx.execute_batch(&format!(
            "INSERT INTO runs VALUES (1, 'src', 'schedule', 0, 0, 'success', NULL, {day}, {day}, 1, '[]', NULL);
             INSERT INTO keys VALUES (1, 'src', 'u', 'posts', '');
             INSERT INTO observations VALUES (1, {day}, 2.0, 1);
             INSERT INTO monthly VALUES ({}, 1, 2.0, {day}, 2.0);",
            month_num(d("2026-11-10"))
        ))
        .unwrap();
        tx.commit().unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    let version: i64 = lock(&store.writer)
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, MIGRATIONS.len() as i64);
    let posts = |store: &SqliteStore| one(store, "2026-10-01", "2026-12-31", "posts", Kind::Count);
    assert_eq!(posts(&store), Some(2.0));
    store
        .record_run(
            &ok_run("2026-11-10", "2026-11-11"),
            &[
                obs("u", "posts", "", "2026-11-10", 3.0),
                obs("u", "posts", "", "2026-11-11", 1.0),
            ],
            None,
        )
        .unwrap();
    assert_eq!(posts(&store), Some(4.0));
    // A run stored before runs could name uncovered days covered its window.
    let cov = store
        .coverage("src", d("2026-11-10"), d("2026-11-11"))
        .unwrap();
    assert!(cov.is_complete(), "{cov:?}");
    assert_eq!(store.runs(&[1]).unwrap()[0].run.uncovered, []);
    assert_eq!(store.resume_point("src").unwrap().uncovered, []);
}

#[test]
fn a_month_cache_smaller_than_a_fold_gives_the_same_numbers() {
    let (_dir, store) = open();
    let mut o = Vec::new();
    for (n, day) in d("2026-01-01").iter_days().take(365).enumerate() {
        o.push(obs("u", "posts", "", &day.to_string(), (n % 5) as f64));
        o.push(obs("v", "posts", "", &day.to_string(), 1.0));
    }
    store
        .record_run(&ok_run("2026-01-01", "2026-12-31"), &o, None)
        .unwrap();
    let year =
        |store: &SqliteStore| numbers(store, "2026-01-01", "2026-12-31", &[("posts", Kind::Count)]);
    let whole = year(&store);
    let sum_u: f64 = (0..365).map(|n| (n % 5) as f64).sum();
    assert_eq!(
        whole,
        BTreeMap::from([
            (("u".to_owned(), "posts".to_owned()), sum_u),
            (("v".to_owned(), "posts".to_owned()), 365.0),
        ])
    );
    // Room for three months of two keys: most months are read each time.
    let (_dir2, small) = open();
    small
        .record_run(&ok_run("2026-01-01", "2026-12-31"), &o, None)
        .unwrap();
    lock(&small.reader).months.capacity = 6;
    for _ in 0..3 {
        assert_eq!(year(&small), whole);
        let reader = lock(&small.reader);
        assert!(
            reader.months.rows <= 6,
            "{} rows cached",
            reader.months.rows
        );
        assert_eq!(
            reader.months.rows,
            reader
                .months
                .months
                .values()
                .map(|m| m.rows.len())
                .sum::<usize>()
        );
    }
    // The quarter just read stays; the least recently used goes first.
    assert_eq!(
        numbers(
            &small,
            "2026-04-01",
            "2026-06-30",
            &[("posts", Kind::Count)]
        )[&("v".to_owned(), "posts".to_owned())],
        91.0
    );
    let reader = lock(&small.reader);
    let mut cached: Vec<i64> = reader.months.months.keys().copied().collect();
    cached.sort();
    let m = |s: &str| month_num(d(s));
    assert_eq!(cached, [m("2026-04-01"), m("2026-05-01"), m("2026-06-01")]);
}

#[test]
fn interleaved_recollections_and_reads_equal_the_raw_computation() {
    let (_dir, store) = open();
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
                numbers(&store, s, e, &[("n", Kind::Count)]),
                count,
                "count {s}..{e}"
            );
            assert_eq!(
                numbers(&store, s, e, &[("n", Kind::Level)]),
                last,
                "level {s}..{e}"
            );
        }
    }
}

/// Per day, whether the latest successful run asking for it covered it,
/// from every run's row.
fn days_by_sql(conn: &Connection, source: &str) -> BTreeMap<i64, bool> {
    let mut stmt = conn
        .prepare(
            "SELECT id, window_from, window_to, uncovered FROM runs \
             WHERE source = ?1 AND result = 'success' ORDER BY id",
        )
        .unwrap();
    let runs: Vec<(i64, i64, i64, Option<String>)> = stmt
        .query_map(params![source], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut covered: BTreeMap<i64, bool> = BTreeMap::new();
    for (id, from, to, gaps) in runs {
        let gaps = gaps
            .map(|g| parse_uncovered(id, &g).unwrap())
            .unwrap_or_default();
        for day in from..=to {
            let out = gaps.iter().any(|&(a, b)| a <= day && day <= b);
            covered.insert(day, !out);
        }
    }
    covered
}

/// Days as merged inclusive ranges.
fn day_ranges_of(days: impl Iterator<Item = i64>) -> Vec<(i64, i64)> {
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    for day in days {
        match ranges.last_mut() {
            Some((_, b)) if *b + 1 == day => *b = day,
            _ => ranges.push((day, day)),
        }
    }
    ranges
}

/// Coverage computed day by day from every run's row.
fn coverage_by_sql(
    conn: &Connection,
    source: &str,
    s: i64,
    e: i64,
) -> (Vec<(i64, i64)>, i64, Option<i64>) {
    let covered = days_by_sql(conn, source);
    let gaps = day_ranges_of((s..=e).filter(|day| covered.get(day) != Some(&true)));
    let failed = conn
        .query_row(
            "SELECT COUNT(*) FROM runs WHERE source = ?1 AND result != 'success' \
             AND window_to >= ?2 AND window_from <= ?3",
            params![source, s, e],
            |r| r.get(0),
        )
        .unwrap();
    let last = conn
        .query_row(
            "SELECT MAX(finished_at) FROM runs WHERE source = ?1 AND result = 'success'",
            [source],
            |r| r.get(0),
        )
        .unwrap();
    (gaps, failed, last)
}

/// A source's status as the first store read it, in SQL over every run.
fn status_by_sql(conn: &Connection, source: &str) -> SourceStatus {
    let last_run = conn
        .query_row(
            &format!("SELECT {RUN_COLUMNS} FROM runs WHERE source = ?1 ORDER BY id DESC LIMIT 1"),
            [source],
            run_row,
        )
        .optional()
        .unwrap()
        .map(|r| stored_run(r).unwrap());
    let last_success = conn
        .query_row(
            "SELECT id, finished_at, window_to FROM runs WHERE source = ?1 AND result = 'success' \
             ORDER BY finished_at DESC, id DESC LIMIT 1",
            [source],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            },
        )
        .optional()
        .unwrap()
        .map(|(run_id, finished, to)| LastSuccess {
            run_id,
            finished_at: from_millis(finished).unwrap(),
            window_to: num_day(to).unwrap(),
        });
    let state = conn
        .query_row(
            "SELECT state FROM source_state WHERE source = ?1",
            [source],
            |r| r.get::<_, String>(0),
        )
        .optional()
        .unwrap()
        .map(|s| serde_json::from_str(&s).unwrap());
    let mut runs = RunCounts::default();
    let mut stmt = conn
        .prepare("SELECT result, COUNT(*) FROM runs WHERE source = ?1 GROUP BY result")
        .unwrap();
    let rows = stmt
        .query_map([source], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .unwrap();
    for row in rows {
        let (result, n) = row.unwrap();
        let n = n as u64;
        match RunResult::parse(&result).unwrap() {
            RunResult::Success => runs.success = n,
            RunResult::Error => runs.error = n,
            RunResult::Timeout => runs.timeout = n,
            RunResult::Panic => runs.panic = n,
            RunResult::Crash => runs.crash = n,
        }
    }
    SourceStatus {
        last_run,
        last_success,
        state,
        runs,
    }
}

#[test]
fn coverage_and_status_from_the_run_index_equal_the_sql_over_every_run() {
    let (_dir, store) = open();
    let conn = Connection::open(store.path()).unwrap();
    let mut seed = fastrand::Rng::with_seed(3);
    let base = day_num(d("2026-10-01"));
    let results = [
        RunResult::Success,
        RunResult::Success,
        RunResult::Success,
        RunResult::Error,
        RunResult::Timeout,
        RunResult::Panic,
        RunResult::Crash,
    ];
    for round in 0..40 {
        let source = ["src", "other"][round % 2];
        let from = base + (lcg(&mut seed) % 80) as i64;
        let to = from + (lcg(&mut seed) % 6) as i64;
        let result = results[(lcg(&mut seed) % 7) as usize];
        // Few distinct finishing times: ties, and backfills finishing late.
        let finished = format!("2026-12-{:02}T00:00:00Z", 1 + lcg(&mut seed) % 5);
        let mut r = run(source, result, "2026-10-01", "2026-10-01", &finished);
        (r.window_from, r.window_to) = (num_day(from).unwrap(), num_day(to).unwrap());
        // Every other successful run leaves a stretch of its window uncovered.
        if result == RunResult::Success && lcg(&mut seed).is_multiple_of(2) {
            let a = from + (lcg(&mut seed) % (to - from + 1) as u64) as i64;
            let b = a + (lcg(&mut seed) % (to - a + 1) as u64) as i64;
            r.uncovered = vec![(num_day(a).unwrap(), num_day(b).unwrap())];
        }
        let state = serde_json::json!({ "round": round });
        let state = (result == RunResult::Success).then_some(&state);
        store.record_run(&r, &[], state).unwrap();
        for _ in 0..3 {
            let s = base + (lcg(&mut seed) % 90) as i64 - 5;
            let e = s + (lcg(&mut seed) % 40) as i64 - 2;
            for source in ["src", "other", "nobody"] {
                assert_eq!(
                    store.source_status(source).unwrap(),
                    status_by_sql(&conn, source),
                    "{source} after {round} runs"
                );
                let named = days_by_sql(&conn, source)
                    .into_iter()
                    .filter(|(_, covered)| !covered)
                    .map(|(day, _)| day);
                let named: Vec<(NaiveDate, NaiveDate)> = day_ranges_of(named)
                    .into_iter()
                    .map(|(a, b)| (num_day(a).unwrap(), num_day(b).unwrap()))
                    .collect();
                assert_eq!(
                    store.resume_point(source).unwrap().uncovered,
                    named,
                    "{source} after {round} runs"
                );
                let (gaps, failed, last) = coverage_by_sql(&conn, source, s, e);
                let got = store
                    .coverage(source, num_day(s).unwrap(), num_day(e).unwrap())
                    .unwrap();
                let want_gaps: Vec<(NaiveDate, NaiveDate)> = gaps
                    .iter()
                    .map(|&(a, b)| (num_day(a).unwrap(), num_day(b).unwrap()))
                    .collect();
                let uncovered: i64 = gaps.iter().map(|(a, b)| b - a + 1).sum();
                assert_eq!(
                    got,
                    Coverage {
                        start: num_day(s).unwrap(),
                        end: num_day(e).unwrap(),
                        covered_days: (e - s + 1).max(0) - uncovered,
                        gaps: want_gaps,
                        failed_runs: failed as u64,
                        last_success: last.map(|ms| from_millis(ms).unwrap()),
                    },
                    "{source} {s}..{e} after {round} runs"
                );
            }
        }
    }
    // Several at once, in the order asked.
    let both = store
        .coverages(&["other", "src"], d("2026-10-01"), d("2026-12-31"))
        .unwrap();
    assert_eq!(
        both[0],
        store
            .coverage("other", d("2026-10-01"), d("2026-12-31"))
            .unwrap()
    );
    assert_eq!(
        both[1],
        store
            .coverage("src", d("2026-10-01"), d("2026-12-31"))
            .unwrap()
    );
}

#[test]
fn day_and_month_numbers() {
    assert_eq!(day_num(d("1970-01-01")), 0);
    assert_eq!(day_num(d("1970-01-02")), 1);
    assert_eq!(num_day(day_num(d("2026-11-27"))).unwrap(), d("2026-11-27"));
    assert_eq!(month_num(d("2026-01-15")), 2026 * 12);
    let (first, last) = month_days(month_num(d("2024-02-10"))).unwrap();
    assert_eq!(
        (num_day(first).unwrap(), num_day(last).unwrap()),
        (d("2024-02-01"), d("2024-02-29"))
    );
}

#[test]
fn pages_of_observations_join_up_to_the_whole_list_in_its_order() {
    let (_dir, store) = open();
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
                default_page(&store, &units, "posts", start, end, after.as_ref(), limit).unwrap();
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
    store: &SqliteStore,
    units: &[&str],
    indicator: &str,
    start: NaiveDate,
    end: NaiveDate,
    after: Option<&ObservationCursor>,
    limit: usize,
) -> Result<Vec<StoredObservation>, StoreError> {
    struct Plain(SqliteStore);
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
    let dir = store.path().parent().unwrap();
    Plain(SqliteStore::open(dir)?).observations_page(units, indicator, start, end, after, limit)
}

#[test]
fn writes_of_another_connection_are_noticed_once_and_own_writes_never() {
    let (dir, store) = open();
    // A second store on the same file stands in for `tallyd collect`.
    let other = SqliteStore::open(dir.path()).unwrap();
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
