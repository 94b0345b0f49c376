//! Tests of the PostgreSQL store's own concerns: migrations and what its
//! messages say about the database. The contract is in `contract_tests`.

use super::*;

#[test]
fn migrations_are_recorded_once_and_a_newer_schema_is_refused() {
    let url = crate::pg_test_cluster::database();
    // Several processes starting at once migrate once.
    std::thread::scope(|s| {
        let opened: Vec<_> = (0..4)
            .map(|_| s.spawn(|| PostgresStore::open(&url).map(drop)))
            .collect();
        for o in opened {
            o.join().unwrap().unwrap();
        }
    });
    let mut admin = postgres::Client::connect(&url, NoTls).unwrap();
    let versions: Vec<i64> = admin
        .query("SELECT version FROM tally_migrations ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let known = schema::MIGRATIONS.len() as i64;
    assert_eq!(versions, (1..=known).collect::<Vec<_>>());

    admin
        .execute(
            "INSERT INTO tally_migrations (version) VALUES ($1)",
            &[&(known + 1)],
        )
        .unwrap();
    let err = PostgresStore::open(&url).err().expect("a newer schema");
    let text = err.to_string();
    assert!(
        matches!(err, StoreError::TooNewDatabase { found, .. } if found == known + 1),
        "{text}"
    );
    assert!(text.contains("this tallyd knows versions up to"), "{text}");
}

#[test]
fn a_refused_connection_names_the_database_and_never_the_password() {
    let dir = crate::pg_test_cluster::socket_dir();
    let url = format!(
        "postgresql://nobody_here:S3cretPassw0rd@/no_such_db?host={}",
        dir.display()
    );
    let err = PostgresStore::open(&url).err().expect("no such role");
    let text = tally_domain::ErrorChain(&err).to_string();
    assert!(text.contains("\"no_such_db\""), "{text}");
    assert!(text.contains("\"nobody_here\""), "{text}");
    assert!(!text.contains("S3cretPassw0rd"), "{text}");
    assert!(!format!("{err:?}").contains("S3cretPassw0rd"));
}

/// Every month sum of `observation_months` next to the sum of its
/// observations: the rows where they differ (none when the sums are exact).
fn stale_months(client: &mut postgres::Client) -> Vec<String> {
    client
        .query(
            "WITH truth AS ( \
                 SELECT indicator, unit, source, entity, date_trunc('month', day)::date AS month, \
                        SUM(value ORDER BY day) AS total, MAX(day) AS last_day, \
                        (ARRAY_AGG(value ORDER BY day DESC))[1] AS last_value \
                 FROM observations GROUP BY 1, 2, 3, 4, 5) \
             SELECT format('%s %s %s %s %s: %s / %s', t.indicator, t.unit, t.source, t.entity, \
                           COALESCE(t.month, m.month), t.total, m.total) \
             FROM truth t FULL JOIN observation_months m USING (indicator, unit, source, entity, month) \
             WHERE t.total IS DISTINCT FROM m.total OR t.last_day IS DISTINCT FROM m.last_day \
                OR t.last_value IS DISTINCT FROM m.last_value",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn month_sums_stay_exact_while_several_processes_rewrite_the_same_months() {
    use crate::contract_tests::{d, obs, run};
    let url = crate::pg_test_cluster::database();
    // Four writers, each its own store as replicas are, re-collecting the
    // same keys and months with their own values at the same time: a month
    // summed before another writer's commit would be left stale.
    std::thread::scope(|s| {
        for w in 0..4u32 {
            let url = &url;
            s.spawn(move || {
                let store = PostgresStore::open(url).unwrap();
                for round in 0..15u32 {
                    let batch: Vec<_> = (0..40u32)
                        .map(|k| {
                            let day = d("2026-01-20")
                                + chrono::Days::new(u64::from((k * 7 + w + round) % 40));
                            let unit = ["a", "b"][(k % 2) as usize];
                            let value = f64::from(w * 100 + round * 3 + k);
                            obs(unit, "n", "", &day.to_string(), value)
                        })
                        .collect();
                    store
                        .record_run(
                            &run(
                                "src",
                                RunResult::Success,
                                "2026-01-20",
                                "2026-02-28",
                                "2026-03-01T02:30:00Z",
                            ),
                            &batch,
                            None,
                        )
                        .unwrap();
                }
            });
        }
    });
    let mut client = postgres::Client::connect(&url, NoTls).unwrap();
    assert_eq!(stale_months(&mut client), Vec::<String>::new());
    let months: i64 = client
        .query_one("SELECT count(*) FROM observation_months", &[])
        .unwrap()
        .get(0);
    assert_eq!(months, 4, "units a and b, January and February");

    // What another process writes shows in this one's next read.
    let here = PostgresStore::open(&url).unwrap();
    let there = PostgresStore::open(&url).unwrap();
    let n = [("n".to_owned(), Kind::Count)];
    let sum = |store: &PostgresStore| -> f64 {
        store
            .own_values(d("2026-01-01"), d("2026-03-31"), &n)
            .unwrap()
            .iter()
            .map(|v| match v.data {
                OwnData::Number(x) => x,
                OwnData::Entities(_) => unreachable!(),
            })
            .sum()
    };
    let before = sum(&here);
    there
        .record_run(
            &run(
                "src",
                RunResult::Success,
                "2026-02-01",
                "2026-02-01",
                "2026-03-01T02:30:00Z",
            ),
            &[obs("c", "n", "", "2026-02-01", 1000.0)],
            None,
        )
        .unwrap();
    assert_eq!(sum(&here), before + 1000.0);
    assert_eq!(stale_months(&mut client), Vec::<String>::new());
}

#[test]
fn the_month_sums_migration_sums_what_an_older_schema_stored() {
    let url = crate::pg_test_cluster::database();
    drop(PostgresStore::open(&url).unwrap());
    let mut client = postgres::Client::connect(&url, NoTls).unwrap();
    // Back to the schema before the month sums (and the run counts after
    // them), with observations stored.
    client
        .batch_execute(
            "DROP TABLE observation_months; DROP TABLE run_counts; \
             DELETE FROM tally_migrations WHERE version >= 3; \
             ALTER TABLE observations ADD FOREIGN KEY (run) REFERENCES runs (id); \
             INSERT INTO runs (source, trigger, started_at, finished_at, result, window_from, \
                               window_to, observations, warnings) \
             VALUES ('src', 'schedule', 0, 0, 'success', '2026-01-01', '2026-03-31', 3, '[]'); \
             INSERT INTO observations VALUES \
                 ('n', 'a', 'src', '', '2026-01-05', 2, 1), \
                 ('n', 'a', 'src', '', '2026-01-31', 3, 1), \
                 ('n', 'a', 'src', '', '2026-03-01', 7, 1);",
        )
        .unwrap();
    let store = PostgresStore::open(&url).unwrap();
    assert_eq!(stale_months(&mut client), Vec::<String>::new());
    let months: i64 = client
        .query_one("SELECT count(*) FROM observation_months", &[])
        .unwrap()
        .get(0);
    assert_eq!(months, 2);
    let q1 = store
        .own_values(
            NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(2026, 3, 31).unwrap(),
            &[("n".to_owned(), Kind::Count)],
        )
        .unwrap();
    assert!(
        matches!(q1[0].data, OwnData::Number(x) if x == 12.0),
        "{q1:?}"
    );
}

/// `n` per unit over `[from, to]` as `store` reads it.
fn counts_of(store: &PostgresStore, from: &str, to: &str) -> Vec<(String, f64)> {
    let d = |s: &str| s.parse::<NaiveDate>().unwrap();
    let mut out: Vec<(String, f64)> = store
        .own_values(d(from), d(to), &[("n".to_owned(), Kind::Count)])
        .unwrap()
        .into_iter()
        .map(|v| match v.data {
            OwnData::Number(x) => (v.unit, x),
            OwnData::Entities(_) => unreachable!(),
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn a_warm_month_cache_shows_what_another_process_wrote_or_lowered() {
    use crate::contract_tests::{obs, run};
    let url = crate::pg_test_cluster::database();
    let here = PostgresStore::open(&url).unwrap();
    let there = PostgresStore::open(&url).unwrap();
    let record = |store: &PostgresStore, rows: &[Observation]| {
        store
            .record_run(
                &run(
                    "src",
                    RunResult::Success,
                    "2026-01-01",
                    "2026-03-31",
                    "2026-04-01T02:30:00Z",
                ),
                rows,
                None,
            )
            .unwrap();
    };
    record(
        &here,
        &[
            obs("a", "n", "", "2026-01-10", 5.0),
            obs("a", "n", "", "2026-02-10", 7.0),
            obs("b", "n", "", "2026-03-10", 1.0),
        ],
    );
    // Warm: the quarter's three whole months are now in `here`'s cache.
    let q1 = |store: &PostgresStore| counts_of(store, "2026-01-01", "2026-03-31");
    assert_eq!(q1(&here), [("a".to_owned(), 12.0), ("b".to_owned(), 1.0)]);
    assert_eq!(here.months.lock().unwrap().rows(), 3);

    // Another process adds to a cached month, and a key the cache never saw.
    record(
        &there,
        &[
            obs("a", "n", "", "2026-02-11", 100.0),
            obs("c", "n", "", "2026-03-01", 2.0),
        ],
    );
    assert_eq!(
        q1(&here),
        [
            ("a".to_owned(), 112.0),
            ("b".to_owned(), 1.0),
            ("c".to_owned(), 2.0)
        ]
    );
    // It re-collects a day with a lower value: the month's sum goes down.
    record(&there, &[obs("a", "n", "", "2026-02-11", 0.5)]);
    assert_eq!(
        q1(&here),
        [
            ("a".to_owned(), 12.5),
            ("b".to_owned(), 1.0),
            ("c".to_owned(), 2.0)
        ]
    );
    // And `here`'s own write, and a period that cuts months, read alike.
    record(&here, &[obs("b", "n", "", "2026-03-10", 0.25)]);
    assert_eq!(
        counts_of(&here, "2026-01-10", "2026-03-05"),
        [("a".to_owned(), 12.5), ("c".to_owned(), 2.0)]
    );
    assert_eq!(q1(&here)[1], ("b".to_owned(), 0.25));
    assert_eq!(q1(&here), q1(&there));
}

#[test]
fn cached_month_sums_fold_to_the_servers_figures_bit_for_bit() {
    use crate::contract_tests::{obs, run};
    let url = crate::pg_test_cluster::database();
    let store = PostgresStore::open(&url).unwrap();
    // Values whose sums depend on the order they are added in.
    let rows: Vec<Observation> = (0..150u32)
        .map(|i| {
            let day = NaiveDate::from_ymd_opt(2025, 11, 1).unwrap()
                + chrono::Days::new(u64::from(i * 37 % 150));
            let value = 0.1 * f64::from(i) + 1e-7 * f64::from(i * i) + 1e9 * f64::from(i % 3);
            let unit = ["a", "b", "c"][(i % 3) as usize];
            let entity = ["", "x"][(i % 2) as usize];
            obs(unit, "n", entity, &day.to_string(), value)
        })
        .collect();
    store
        .record_run(
            &run(
                "src",
                RunResult::Success,
                "2025-11-01",
                "2026-03-31",
                "2026-04-01T02:30:00Z",
            ),
            &rows,
            None,
        )
        .unwrap();
    let d = |s: &str| s.parse::<NaiveDate>().unwrap();
    let n = [("n".to_owned(), Kind::Count)];
    for (from, to) in [
        ("2025-11-01", "2026-03-31"),
        ("2025-11-17", "2026-02-03"),
        ("2025-12-01", "2026-01-31"),
        ("2026-01-02", "2026-03-31"),
        ("2025-10-01", "2026-04-30"),
    ] {
        let mut server = store.key_folds_on_server(d(from), d(to), &n).unwrap();
        let mut cached = store.key_folds(d(from), d(to), &n).unwrap();
        // The server's order is its own: compare as sets of bit patterns.
        let bits = |v: &mut Vec<KeyFold>| {
            let mut b: Vec<_> = v
                .drain(..)
                .map(|(u, i, e, s, l)| (u, i, e, s.to_bits(), l.to_bits()))
                .collect();
            b.sort();
            b
        };
        assert_eq!(bits(&mut cached), bits(&mut server), "{from}..{to}");
    }
}

#[test]
fn own_and_entity_values_from_cached_folds_equal_the_servers_bit_for_bit_on_every_thread() {
    use crate::contract_tests::{obs, run};
    let url = crate::pg_test_cluster::database();
    let store = PostgresStore::open(&url).unwrap();
    // Three kinds, two sources, entities shared between sources, values
    // whose sums depend on the order they are added in.
    let mut rows = Vec::new();
    for i in 0..240u32 {
        let day = NaiveDate::from_ymd_opt(2025, 11, 1).unwrap()
            + chrono::Days::new(u64::from(i * 37 % 150));
        let value = 0.1 * f64::from(i) + 1e-7 * f64::from(i * i) + 1e9 * f64::from(i % 3);
        let unit = ["b", "a", "c"][(i % 3) as usize];
        let entity = ["", "x", "y"][(i % 3) as usize];
        let indicator = ["n", "lvl", "who"][(i % 4).min(2) as usize];
        let mut o = obs(unit, indicator, entity, &day.to_string(), value);
        o.source = ["src", "other"][(i % 5 == 0) as usize].to_owned();
        rows.push(o);
    }
    for source in ["src", "other"] {
        let mine: Vec<_> = rows
            .iter()
            .filter(|o| o.source == source)
            .cloned()
            .collect();
        let r = run(
            source,
            RunResult::Success,
            "2025-11-01",
            "2026-03-31",
            "2026-04-01T02:30:00Z",
        );
        store.record_run(&r, &mine, None).unwrap();
    }
    let d = |s: &str| s.parse::<NaiveDate>().unwrap();
    let kinds = [
        ("who".to_owned(), Kind::Distinct),
        ("n".to_owned(), Kind::Count),
        ("lvl".to_owned(), Kind::Level),
    ];
    let units = ["a", "b", "c"];
    let unit_index = |u: &str| units.iter().position(|x| *x == u).filter(|&i| i != 2);
    let bits = |data: &OwnData| match data {
        OwnData::Number(x) => format!("{:x}", x.to_bits()),
        OwnData::Entities(e) => format!("{e:?}"),
    };
    for (from, to) in [
        ("2025-11-01", "2026-03-31"),
        ("2025-11-17", "2026-02-03"),
        ("2026-01-02", "2026-03-31"),
    ] {
        let (from, to) = (d(from), d(to));
        let server = store.key_folds_on_server(from, to, &kinds).unwrap();
        let mut want: Vec<(String, String, String)> =
            own_from_keys(server.clone().into_iter(), &kinds)
                .into_iter()
                .map(|o| (o.unit, o.indicator, bits(&o.data)))
                .collect();
        want.sort();
        let mut want_entities: Vec<(String, String, String, u64)> = Vec::new();
        for (unit, indicator, entity, sum, last) in server {
            let v = if indicator == "lvl" { last } else { sum };
            match want_entities
                .iter_mut()
                .find(|w| (&w.0, &w.1, &w.2) == (&unit, &indicator, &entity))
            {
                Some(w) => w.3 = (f64::from_bits(w.3) + v).to_bits(),
                None => want_entities.push((unit, indicator, entity, v.to_bits())),
            }
        }
        want_entities.sort();
        let want_indexed: Vec<(usize, usize, String)> = {
            let mut w: Vec<_> = want
                .iter()
                .filter_map(|(u, i, b)| {
                    let p = kinds.iter().position(|(k, _)| k == i).unwrap();
                    Some((unit_index(u)?, p, b.clone()))
                })
                .collect();
            w.sort();
            w
        };
        assert!(
            want.len() >= 6 && want_indexed.len() < want.len(),
            "{want:?}"
        );
        // Readers at once: each folds alike, outside the cache's lock.
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let mut own: Vec<_> = store
                        .own_values(from, to, &kinds)
                        .unwrap()
                        .into_iter()
                        .map(|o| (o.unit, o.indicator, bits(&o.data)))
                        .collect();
                    own.sort();
                    assert_eq!(own, want, "{from}..{to}");
                    let mut indexed: Vec<_> = store
                        .own_values_indexed(from, to, &kinds, &unit_index)
                        .unwrap()
                        .into_iter()
                        .map(|(u, i, data)| (u, i, bits(&data)))
                        .collect();
                    indexed.sort();
                    assert_eq!(indexed, want_indexed, "{from}..{to}");
                    let mut entities: Vec<_> = store
                        .entity_values(from, to, &kinds)
                        .unwrap()
                        .into_iter()
                        .map(|e| (e.unit, e.indicator, e.entity, e.value.to_bits()))
                        .collect();
                    entities.sort();
                    assert_eq!(entities, want_entities, "{from}..{to}");
                });
            }
        });
    }
}

#[test]
fn a_statement_a_schema_change_invalidated_is_prepared_again() {
    use crate::contract_tests::run;
    let url = crate::pg_test_cluster::database();
    let store = PostgresStore::open(&url).unwrap();
    let state = serde_json::json!({"cursor": "abc"});
    let done = run(
        "src",
        RunResult::Success,
        "2026-12-01",
        "2026-12-01",
        "2026-12-01T02:30:00Z",
    );
    store.record_run(&done, &[], Some(&state)).unwrap();
    // Every pooled connection prepares the resume read.
    std::thread::scope(|s| {
        let reads: Vec<_> = (0..2 * POOL_SIZE)
            .map(|_| s.spawn(|| store.resume_point("src").unwrap()))
            .collect();
        for r in reads {
            assert_eq!(r.join().unwrap().state, Some(state.clone()));
        }
    });
    // What an upgraded replica's migration might do: the prepared
    // statements' result type changes ("cached plan must not change result
    // type").
    let mut admin = postgres::Client::connect(&url, NoTls).unwrap();
    admin
        .batch_execute("ALTER TABLE source_state ALTER COLUMN state TYPE varchar")
        .unwrap();
    // Each connection fails at most once, then prepares again.
    let failed = (0..=POOL_SIZE)
        .map(|_| store.resume_point("src"))
        .take_while(Result::is_err)
        .count();
    assert!(failed <= POOL_SIZE as usize, "{failed} reads failed");
    for _ in 0..4 * POOL_SIZE {
        assert_eq!(
            store.resume_point("src").unwrap().state,
            Some(state.clone())
        );
    }
}

#[test]
fn the_run_counts_migration_counts_what_an_older_schema_stored() {
    use crate::contract_tests::run;
    let url = crate::pg_test_cluster::database();
    let store = PostgresStore::open(&url).unwrap();
    for (source, result) in [
        ("a", RunResult::Success),
        ("a", RunResult::Success),
        ("a", RunResult::Timeout),
        ("b", RunResult::Error),
    ] {
        let r = run(
            source,
            result,
            "2026-12-01",
            "2026-12-01",
            "2026-12-01T02:30:00Z",
        );
        store.record_run(&r, &[], None).unwrap();
    }
    let before = ["a", "b", "c"].map(|s| store.source_status(s).unwrap().runs);
    assert_eq!(
        (before[0].success, before[0].timeout, before[0].error),
        (2, 1, 0)
    );
    assert_eq!((before[1].error, before[2]), (1, RunCounts::default()));
    drop(store);
    // Back to the schema before the counts, with the same runs stored.
    let mut client = postgres::Client::connect(&url, NoTls).unwrap();
    client
        .batch_execute("DROP TABLE run_counts; DELETE FROM tally_migrations WHERE version = 4;")
        .unwrap();
    let store = PostgresStore::open(&url).unwrap();
    assert_eq!(
        ["a", "b", "c"].map(|s| store.source_status(s).unwrap().runs),
        before
    );
}
