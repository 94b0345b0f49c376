use std::path::Path;

use chrono::{Duration, TimeZone};
use chrono_tz::Asia::Shanghai;

use super::*;
use crate::summary::PeriodInfo;
use tally_domain::clock::{Clock, FixedClock};

fn shanghai(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Shanghai
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

fn config(text: &str) -> Config {
    Config::parse(text, Path::new("tally.toml"), &|_| None).unwrap()
}

/// An empty table for `period`: the writer does not look inside.
fn summary(period: &Period) -> Summary {
    Summary {
        period: PeriodInfo {
            label: period.label().to_owned(),
            start: period.start,
            end: period.end,
            timezone: "Asia/Shanghai".to_owned(),
            complete: true,
            ended: true,
            sources_complete: true,
            units_complete: true,
        },
        generated_at: "2026-10-01T02:00:00+08:00".to_owned(),
        indicators: Vec::new(),
        units: Vec::new(),
        sources: Vec::new(),
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// What the scheduler does on each tick, with a fake clock moved an hour at
/// a time from `from` to `to`; returns the periods written.
fn advance(
    clock: &FixedClock,
    config: &Config,
    writer: &ReportWriter,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<String> {
    let tz = config.daemon.timezone;
    clock.set(from);
    let mut last = clock.now();
    let mut written = Vec::new();
    while clock.now() < to {
        clock.set(clock.now() + Duration::hours(1));
        let now = clock.now();
        if let Some(fired) = due(&config.reports.schedule, tz, last, now) {
            let period = report_period(fired, tz);
            writer.write(&summary(&period)).unwrap();
            written.push(period.label().to_owned());
        }
        last = now;
    }
    written
}

#[test]
fn the_defaults_write_xlsx_and_csv_into_data_dir_reports() {
    let c = config("[daemon]\ndata_dir = \"/srv/tally\"\n");
    assert!(c.reports.enabled);
    assert!(!c.reports.write_on_start);
    assert_eq!(c.reports.schedule_text, "0 10 1 1,4,7,10 *");
    assert_eq!(c.reports.formats, [Format::Xlsx, Format::Csv]);
    assert_eq!(c.reports_dir(), Path::new("/srv/tally/reports"));

    let c = config(
        "[reports]\nformats = [\"md\", \"json\", \"md\"]\ndir = \"out\"\nenabled = false\nwrite_on_start = true\n",
    );
    assert_eq!(c.reports.formats, [Format::Md, Format::Json]);
    assert_eq!(c.reports_dir(), Path::new("out"));
    assert!(!c.reports.enabled && c.reports.write_on_start);
}

#[test]
fn bad_reports_settings_name_the_key() {
    for (text, expected) in [
        (
            "[reports]\nschedule = \"0 2 1\"\n",
            "tally.toml:2:12: reports.schedule: invalid cron expression",
        ),
        (
            "[reports]\nformats = []\n",
            "reports.formats: the list of formats is empty",
        ),
        ("[reports]\nformats = [\"pdf\"]\n", "unknown variant `pdf`"),
        ("[reports]\nevery = \"day\"\n", "unknown field `every`"),
    ] {
        let err = Config::parse(text, Path::new("tally.toml"), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{text}: {err}");
    }
}

#[test]
fn due_is_the_last_fire_in_the_half_open_interval() {
    let c = config("");
    let s = &c.reports.schedule;
    let fire = shanghai(2026, 10, 1, 10, 0);
    assert_eq!(
        due(s, Shanghai, fire - Duration::seconds(1), fire),
        Some(fire)
    );
    // `last` itself is excluded: a check at the fire time does not fire twice.
    assert_eq!(due(s, Shanghai, fire, fire + Duration::hours(1)), None);
    assert_eq!(
        due(
            s,
            Shanghai,
            fire - Duration::hours(2),
            fire - Duration::seconds(1)
        ),
        None
    );
    // A late check (the machine slept) still fires, once, for the latest time.
    let next = shanghai(2027, 1, 1, 10, 0);
    assert_eq!(
        due(
            s,
            Shanghai,
            fire - Duration::days(1),
            next + Duration::days(3)
        ),
        Some(next)
    );
    assert_eq!(next_fire(s, Shanghai, fire), Some(next));
    // The schedule is read in the daemon's zone: 10:00 in Shanghai is 02:00 UTC.
    assert_eq!(fire.to_rfc3339(), "2026-10-01T02:00:00+00:00");
}

#[test]
fn the_report_is_for_the_quarter_that_ended_before_the_tick() {
    let label = |at| report_period(at, Shanghai).label().to_owned();
    assert_eq!(label(shanghai(2026, 10, 1, 2, 0)), "2026-Q3");
    assert_eq!(label(shanghai(2026, 1, 1, 2, 0)), "2025-Q4");
    assert_eq!(label(shanghai(2026, 9, 30, 23, 59)), "2026-Q2");
}

#[test]
fn a_fake_clock_over_the_quarter_boundary_writes_one_report_then_revisions() {
    let tmp = tempfile::tempdir().unwrap();
    let c = config("");
    let writer = ReportWriter::new(tmp.path(), c.reports.formats.clone(), Shanghai);
    let clock = FixedClock::new(shanghai(2026, 9, 29, 0, 0));

    let written = advance(
        &clock,
        &c,
        &writer,
        shanghai(2026, 9, 29, 0, 0),
        shanghai(2026, 10, 3, 0, 0),
    );
    assert_eq!(written, ["2026-Q3"]);
    assert_eq!(names(tmp.path()), ["2026-Q3.csv", "2026-Q3.xlsx"]);
    let first = std::fs::read(tmp.path().join("2026-Q3.csv")).unwrap();

    // The same quarter boundary again (a restored clock, a re-run): a new
    // revision beside the old file, which keeps its bytes.
    std::fs::write(tmp.path().join("2026-Q3.csv"), b"handed on").unwrap();
    let written = advance(
        &clock,
        &c,
        &writer,
        shanghai(2026, 10, 1, 0, 0),
        shanghai(2026, 10, 1, 11, 0),
    );
    assert_eq!(written, ["2026-Q3"]);
    assert_eq!(
        names(tmp.path()),
        [
            "2026-Q3.csv",
            "2026-Q3.r2.csv",
            "2026-Q3.r2.xlsx",
            "2026-Q3.xlsx"
        ]
    );
    assert_eq!(
        std::fs::read(tmp.path().join("2026-Q3.csv")).unwrap(),
        b"handed on"
    );
    assert_eq!(
        std::fs::read(tmp.path().join("2026-Q3.r2.csv")).unwrap(),
        first
    );

    writer
        .write(&summary(&Period::parse("2026-Q3").unwrap()))
        .unwrap();
    assert!(tmp.path().join("2026-Q3.r3.xlsx").exists());
}

#[test]
fn the_listing_marks_the_latest_revision_per_period_and_format() {
    let tmp = tempfile::tempdir().unwrap();
    let writer = ReportWriter::new(tmp.path(), vec![Format::Csv], Shanghai);
    let q2 = Period::parse("2026-Q2").unwrap();
    let q3 = Period::parse("2026-Q3").unwrap();
    writer.write(&summary(&q3)).unwrap();
    writer.write(&summary(&q3)).unwrap();
    writer.write(&summary(&q2)).unwrap();
    ReportWriter::new(tmp.path(), vec![Format::Xlsx], Shanghai)
        .write(&summary(&q3))
        .unwrap();
    // Not reports: ignored.
    std::fs::write(tmp.path().join("notes.txt"), "x").unwrap();
    std::fs::write(tmp.path().join("2026-Q9.csv"), "x").unwrap();
    std::fs::write(tmp.path().join(".2026-Q3.csv.1.0.tmp"), "x").unwrap();

    let listed: Vec<(String, &str, u32, bool)> = writer
        .list()
        .unwrap()
        .into_iter()
        .map(|f| (f.name, f.format.as_str(), f.revision, f.latest))
        .collect();
    assert_eq!(
        listed,
        [
            ("2026-Q2.csv".to_owned(), "csv", 1, true),
            ("2026-Q3.csv".to_owned(), "csv", 1, false),
            ("2026-Q3.r2.csv".to_owned(), "csv", 2, true),
            ("2026-Q3.xlsx".to_owned(), "xlsx", 1, true),
        ]
    );
    let one = &writer.list().unwrap()[0];
    assert_eq!(one.period, "2026-Q2");
    assert_eq!(
        one.size,
        std::fs::metadata(tmp.path().join("2026-Q2.csv"))
            .unwrap()
            .len()
    );
    assert!(
        one.written_at
            .as_deref()
            .is_some_and(|t| t.ends_with("+08:00"))
    );

    let missing = ReportWriter::new(tmp.path().join("none"), vec![Format::Csv], Shanghai);
    assert_eq!(missing.list().unwrap(), []);
}

#[test]
fn file_names_round_trip() {
    for (label, rev, format, name) in [
        ("2026-Q3", 1, Format::Xlsx, "2026-Q3.xlsx"),
        ("2026-Q3", 2, Format::Csv, "2026-Q3.r2.csv"),
        (
            "2026-10-01..2026-11-15",
            12,
            Format::Md,
            "2026-10-01..2026-11-15.r12.md",
        ),
        ("2026", 1, Format::Json, "2026.json"),
        ("2026-Q3", 1, Format::Docx, "2026-Q3.docx"),
        ("2026-Q3", 1, Format::NarrativeMd, "2026-Q3.narrative.md"),
        ("2026-Q3", 3, Format::NarrativeMd, "2026-Q3.r3.narrative.md"),
    ] {
        assert_eq!(file_name(label, rev, format), name);
        assert_eq!(parse_file_name(name), Some((label.to_owned(), rev, format)));
    }
    for not_a_report in [
        "2026-Q3.r1.csv",
        "2026-Q3.r.csv",
        "2026-Q3.pdf",
        "q3.csv",
        "2026-Q3",
        ".narrative.md",
        "2026-Q3.other.md",
    ] {
        assert_eq!(parse_file_name(not_a_report), None, "{not_a_report}");
    }
}

fn labels(periods: &[Period]) -> Vec<&str> {
    periods.iter().map(Period::label).collect()
}

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

#[test]
fn catch_up_covers_the_quarters_the_schedule_fired_for_since_the_first_observation() {
    let c = config("");
    let s = &c.reports.schedule;
    let mid_q4 = shanghai(2026, 11, 15, 9, 0);
    // Observations since May: Q2 and Q3 are over and were due on 1 July
    // and 1 October.
    assert_eq!(
        labels(&catch_up_periods(
            s,
            Shanghai,
            mid_q4,
            Some(day(2026, 5, 20))
        )),
        ["2026-Q2", "2026-Q3"]
    );
    // A first observation on a quarter's last day still brings it in.
    assert_eq!(
        labels(&catch_up_periods(
            s,
            Shanghai,
            mid_q4,
            Some(day(2026, 6, 30))
        )),
        ["2026-Q2", "2026-Q3"]
    );
    // Years of data: the last four quarters only.
    assert_eq!(
        labels(&catch_up_periods(
            s,
            Shanghai,
            mid_q4,
            Some(day(2024, 1, 1))
        )),
        ["2025-Q4", "2026-Q1", "2026-Q2", "2026-Q3"]
    );
    // An empty store, or data of the running quarter only: nothing.
    assert!(catch_up_periods(s, Shanghai, mid_q4, None).is_empty());
    assert!(catch_up_periods(s, Shanghai, mid_q4, Some(day(2026, 10, 2))).is_empty());
    // On 1 October before 10:00 the schedule has not fired for Q3 yet: a
    // start then leaves Q3 to the schedule.
    let first = Some(day(2026, 5, 20));
    assert_eq!(
        labels(&catch_up_periods(
            s,
            Shanghai,
            shanghai(2026, 10, 1, 9, 59),
            first
        )),
        ["2026-Q2"]
    );
    assert_eq!(
        labels(&catch_up_periods(
            s,
            Shanghai,
            shanghai(2026, 10, 1, 10, 0),
            first
        )),
        ["2026-Q2", "2026-Q3"]
    );
}

#[test]
fn missing_formats_are_the_ones_without_any_revision() {
    let tmp = tempfile::tempdir().unwrap();
    let q2 = Period::parse("2026-Q2").unwrap();
    let q3 = Period::parse("2026-Q3").unwrap();
    ReportWriter::new(tmp.path(), vec![Format::Csv], Shanghai)
        .write(&summary(&q2))
        .unwrap();
    std::fs::rename(
        tmp.path().join("2026-Q2.csv"),
        tmp.path().join("2026-Q2.r2.csv"),
    )
    .unwrap();
    let files = ReportWriter::new(tmp.path(), vec![], Shanghai)
        .list()
        .unwrap();
    let both = [Format::Xlsx, Format::Csv];
    assert_eq!(missing_formats(&files, &q2, &both), [Format::Xlsx]);
    assert_eq!(missing_formats(&files, &q3, &both), both);
}

/// An engine over a real store with a fixed clock and no sources: what the
/// scheduler's catch-up at start sees.
fn engine_at(dir: &Path, now: DateTime<Utc>) -> std::sync::Arc<Engine> {
    use std::sync::Arc;
    let text = format!(
        "[daemon]\ndata_dir = {data:?}\nplugin_dirs = []\n\
         [[units]]\nid = \"county\"\nname = \"某县\"\n\
         [[units]]\nid = \"county/a\"\nname = \"县甲\"\n\
         [[indicators]]\nid = \"meetings\"\nname = \"会议次数\"\nkind = \"count\"\nunit = \"次\"\n\
         [reports]\ndir = {reports:?}\n",
        data = dir.join("data").display().to_string(),
        reports = dir.join("reports").display().to_string(),
    );
    let config = config(&text);
    let tree = config.unit_tree().unwrap();
    let store = tally_store::SqliteStore::open(&config.daemon.data_dir).unwrap();
    Arc::new(Engine::new(
        Arc::new(config),
        Arc::new(tree),
        Arc::new(tally_host::PluginRegistry::scan(&[])),
        Vec::<(usize, Arc<tally_host::SourceRunner>)>::new(),
        Arc::new(store),
        Arc::new(FixedClock::new(now)),
        Arc::new(crate::metrics::Metrics::new()),
    ))
}

#[test]
fn a_start_in_q4_writes_the_missing_q2_and_q3_reports_once() {
    use tally_domain::Observation;
    use tally_store::{RunRecord, RunResult};
    let tmp = tempfile::tempdir().unwrap();
    let now = shanghai(2026, 11, 15, 9, 0);
    let engine = engine_at(tmp.path(), now);
    let observation = |d: NaiveDate, value: f64| Observation {
        source: "forms".into(),
        unit: "county/a".into(),
        indicator: "meetings".into(),
        entity: String::new(),
        day: d,
        value,
    };
    engine
        .store
        .record_run(
            &RunRecord {
                source: "forms".into(),
                trigger: "backfill".into(),
                started_at: now,
                finished_at: now,
                result: RunResult::Success,
                error: None,
                window_from: day(2026, 5, 1),
                window_to: day(2026, 9, 30),
                warnings: vec![],
                http_requests: None,
                uncovered: Vec::new(),
                error_kind: None,
                retry_after: None,
            },
            &[
                observation(day(2026, 5, 12), 3.0),
                observation(day(2026, 8, 3), 4.0),
            ],
            None,
        )
        .unwrap();
    let reports = tmp.path().join("reports");

    let written = catch_up(&engine, None).unwrap();
    let periods: Vec<&str> = written.iter().map(|(p, _)| p.label()).collect();
    assert_eq!(periods, ["2026-Q2", "2026-Q3"]);
    assert!(
        written
            .iter()
            .all(|(_, w)| w.as_ref().is_ok_and(|p| p.len() == 2))
    );
    assert_eq!(
        names(&reports),
        ["2026-Q2.csv", "2026-Q2.xlsx", "2026-Q3.csv", "2026-Q3.xlsx"]
    );
    // Each holds its own quarter's figures: 3 meetings in Q2, 4 in Q3.
    let q2 = String::from_utf8(std::fs::read(reports.join("2026-Q2.csv")).unwrap()).unwrap();
    let q3 = String::from_utf8(std::fs::read(reports.join("2026-Q3.csv")).unwrap()).unwrap();
    assert!(q2.contains("县甲,3"), "{q2}");
    assert!(q3.contains("县甲,4"), "{q3}");
    let before: Vec<Vec<u8>> = names(&reports)
        .iter()
        .map(|n| std::fs::read(reports.join(n)).unwrap())
        .collect();

    // A second start (or a reload) finds every file there: nothing new,
    // nothing rewritten.
    assert!(catch_up(&engine, None).unwrap().is_empty());
    assert_eq!(names(&reports).len(), 4);
    let after: Vec<Vec<u8>> = names(&reports)
        .iter()
        .map(|n| std::fs::read(reports.join(n)).unwrap())
        .collect();
    assert_eq!(before, after);

    // A format removed by hand is written again, alone; the quarter that
    // `write_on_start` writes itself is skipped.
    std::fs::remove_file(reports.join("2026-Q2.xlsx")).unwrap();
    std::fs::remove_file(reports.join("2026-Q3.xlsx")).unwrap();
    let q3_period = Period::parse("2026-Q3").unwrap();
    let written = catch_up(&engine, Some(&q3_period)).unwrap();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].0.label(), "2026-Q2");
    assert_eq!(
        names(&reports),
        ["2026-Q2.csv", "2026-Q2.xlsx", "2026-Q3.csv"]
    );
}

/// The pid of a process that has exited (and been reaped).
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn temp_files_of_dead_writers_and_of_this_pid_are_removed_others_stay() {
    let dir = tempfile::tempdir().unwrap();
    let dead = dead_pid();
    let me = std::process::id();
    // pid 1 always runs (init, or a container's first process).
    let live = 1;
    let name = |label: &str, ext: &str, pid: u32| format!(".{label}.{ext}.{pid}.0.tmp");
    let stale = [name("2026-Q3", "xlsx", dead), name("2026-Q3", "csv", me)];
    let kept = [
        name("2026-Q3", "xlsx", live),
        // Not written by ReportWriter: not ours to remove.
        ".2026-Q3.xlsx.tmp".to_owned(),
        format!(".notes.txt.{dead}.0.tmp"),
        "2026-Q3.xlsx".to_owned(),
    ];
    for file in stale.iter().chain(&kept) {
        std::fs::write(dir.path().join(file), b"half a report").unwrap();
    }
    let mut removed = remove_stale_temp_files(dir.path());
    removed.sort();
    let mut expected: Vec<PathBuf> = stale.iter().map(|f| dir.path().join(f)).collect();
    expected.sort();
    assert_eq!(removed, expected);
    for file in &stale {
        assert!(!dir.path().join(file).exists(), "{file} is still there");
    }
    for file in &kept {
        assert!(dir.path().join(file).exists(), "{file} was removed");
    }
    // A directory that does not exist yet has nothing to clean.
    assert!(remove_stale_temp_files(&dir.path().join("nope")).is_empty());
}
