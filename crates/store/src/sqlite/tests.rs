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

/// The seeded PRNG of the code base, as `lcg(&mut seed)` draws used it.
fn lcg(rng: &mut fastrand::Rng) -> u64 {
    rng.u64(..1 << 31)
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
        lock(&store.reader).months.lru.rows > 0,
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
    lock(&small.reader).months.lru.capacity = 6;
    for _ in 0..3 {
        assert_eq!(year(&small), whole);
        let reader = lock(&small.reader);
        assert!(
            reader.months.lru.rows <= 6,
            "{} rows cached",
            reader.months.lru.rows
        );
        assert_eq!(
            reader.months.lru.rows,
            reader
                .months
                .lru
                .months
                .values()
                .map(|m| m.value.rows.len())
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
    let mut cached: Vec<i64> = reader.months.lru.months.keys().copied().collect();
    cached.sort();
    let m = |s: &str| month_num(d(s));
    assert_eq!(cached, [m("2026-04-01"), m("2026-05-01"), m("2026-06-01")]);
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
