use std::collections::HashMap;
use std::path::Path;

use chrono::{Datelike, TimeZone, Timelike, Utc, Weekday};

use super::*;

const WECHAT_SECRET: &str = "wx-secret-value";
const API_TOKEN: &str = "api-token-value";

fn fake_env(name: &str) -> Option<String> {
    match name {
        "NATRES_WECHAT_SECRET" => Some(WECHAT_SECRET.to_owned()),
        "TALLY_API_TOKEN" => Some(API_TOKEN.to_owned()),
        "EDU_WEIBO_TOKEN" => Some("weibo-token-value".to_owned()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("t.toml"), &fake_env)
}

/// Parses `text` and asserts the error contains `expected` (which starts with
/// `t.toml:LINE:COL: key:` so that every case pins the location too).
#[track_caller]
fn check_err(text: &str, expected: &str) -> String {
    let err = match parse(text) {
        Ok(config) => panic!("expected an error containing {expected:?}, got {config:#?}"),
        Err(err) => err.to_string(),
    };
    assert!(
        err.contains(expected),
        "expected {expected:?} in the error:\n{err}"
    );
    err
}

/// A unit and a source to hang schedule and settings cases on: the source starts at line 4.
const UNIT: &str = "[[units]]\nid = \"county\"\nname = \"某县\"\n";

fn with_source(source_body: &str) -> String {
    format!("{UNIT}[[sources]]\nid = \"s\"\nplugin = \"p\"\nunit = \"county\"\n{source_body}")
}

#[test]
fn unknown_keys() {
    check_err("foo = 1\n", "t.toml:1:1: foo: unknown field `foo`");
    check_err(
        "[daemon]\nlisten = \"127.0.0.1:9470\"\nbogus = 1\n",
        "t.toml:3:1: daemon.bogus: unknown field `bogus`",
    );
    check_err(
        "[[units]]\nid = \"county\"\nname = \"某县\"\nhead = 3\n",
        "t.toml:4:1: units[0].head: unknown field `head`",
    );
    check_err(
        &with_source("schedule = \"0 2 * * *\"\nretry = 3\n"),
        "t.toml:9:1: sources[0].retry: unknown field `retry`",
    );
}

#[test]
fn unknown_keys_inside_settings_are_the_plugins_business() {
    let config = parse(&with_source(
        "schedule = \"0 2 * * *\"\n[sources.settings]\nanything = { nested = [1, 2.5, true] }\nwhen = 2026-01-01\n",
    ))
    .unwrap();
    assert_eq!(
        config.sources[0].settings,
        serde_json::json!({"anything": {"nested": [1, 2.5, true]}, "when": "2026-01-01"})
    );
}

#[test]
fn syntax_and_type_errors() {
    check_err("a = [\n", "t.toml:1:6");
    check_err(
        "[[units]]\nid = \"county\"\nname = \"某县\"\nheadcount = \"x\"\n",
        "t.toml:4:13: units[0].headcount: invalid type: string \"x\", expected u32",
    );
    check_err(
        "[[units]]\nid = \"county\"\n",
        "t.toml:1:1: units[0]: missing field `name`",
    );
    check_err(
        "[[indicators]]\nid = \"x\"\nname = \"某\"\nkind = \"sum\"\nunit = \"篇\"\n",
        "t.toml:4:8: indicators[0].kind: unknown variant `sum`",
    );
}

#[test]
fn units() {
    check_err(
        "[[units]]\nid = \"County\"\nname = \"某县\"\n",
        "t.toml:2:6: units[0].id: invalid unit id \"County\"",
    );
    check_err(
        "[[units]]\nid = \"county//x\"\nname = \"某县\"\n",
        "t.toml:2:6: units[0].id: invalid unit id \"county//x\"",
    );
    check_err(
        &format!("{UNIT}[[units]]\nid = \"county/x/y\"\nname = \"科\"\n"),
        "t.toml:5:6: units[1].id: unknown parent unit \"county/x\"",
    );
    // Ids are paths, so the only way to get the tree wrong is a missing parent:
    // `a/b` cannot be its own ancestor, and nothing can name `a/b` as the parent of `a`.
    check_err(
        "[[units]]\nid = \"a/b\"\nname = \"乙\"\n",
        "t.toml:2:6: units[0].id: unknown parent unit \"a\" of unit \"a/b\"",
    );
    check_err(
        &format!("{UNIT}[[units]]\nid = \"county\"\nname = \"某县2\"\n"),
        "t.toml:5:6: units[1].id: duplicate unit id \"county\", first defined at units[0].id (line 2)",
    );
}

#[test]
fn aliases_lead_to_one_unit() {
    let two = |first_aliases: &str, second_aliases: &str| {
        format!(
            "[[units]]\nid = \"county\"\nname = \"某县\"\naliases = {first_aliases}\n\
             [[units]]\nid = \"county/natres\"\nname = \"自然资源局\"\naliases = {second_aliases}\n"
        )
    };
    check_err(
        &two("[\"县委\"]", "[\"县委\"]"),
        "t.toml:8:12: units[1].aliases[0]: alias \"县委\" of unit \"county/natres\" is already used by unit \"county\" at units[0].aliases[0] (line 4)",
    );
    check_err(
        &two("[]", "[\"局\", \"某县\"]"),
        "t.toml:8:17: units[1].aliases[1]: alias \"某县\" of unit \"county/natres\" is already used by unit \"county\" at units[0].name (line 3)",
    );
    // Two units may share a display name, and a unit may list its own name.
    let config = parse(&format!(
        "{UNIT}aliases = [\"某县\"]\n[[units]]\nid = \"county/a\"\nname = \"办公室\"\n\
         [[units]]\nid = \"county/b\"\nname = \"办公室\"\n"
    ))
    .unwrap();
    assert_eq!(config.units[2].parent(), Some("county"));
}

#[test]
fn indicators_and_targets() {
    let indicator =
        "[[indicators]]\nid = \"wechat_posts\"\nname = \"发文\"\nkind = \"count\"\nunit = \"篇\"\n";
    check_err(
        &format!("{indicator}{}", indicator.replace("wechat_posts", "Wechat")),
        "t.toml:7:6: indicators[1].id: invalid indicator id \"Wechat\"",
    );
    check_err(
        &format!("{indicator}{indicator}"),
        "t.toml:7:6: indicators[1].id: duplicate indicator id \"wechat_posts\", first defined at indicators[0].id (line 2)",
    );
    check_err(
        &format!(
            "{UNIT}{indicator}[[targets]]\nindicator = \"xuexi_points\"\nper = \"entity\"\nperiod = \"year\"\nmin = 7000\n"
        ),
        "t.toml:10:13: targets[0].indicator: unknown indicator \"xuexi_points\"",
    );
    check_err(
        &format!(
            "{UNIT}{indicator}[[targets]]\nindicator = \"wechat_posts\"\nper = \"unit\"\nperiod = \"month\"\nmin = 0\nunits = [\"county\", \"nowhere\"]\n"
        ),
        "t.toml:13:7: targets[0].min: must be a number greater than 0, found 0",
    );
    check_err(
        &format!(
            "{UNIT}{indicator}[[targets]]\nindicator = \"wechat_posts\"\nper = \"unit\"\nperiod = \"month\"\nmin = 4\nunits = [\"county\", \"nowhere\"]\n"
        ),
        "t.toml:14:20: targets[0].units[1]: unknown unit \"nowhere\"",
    );
    check_err(
        &format!(
            "{UNIT}{indicator}[[targets]]\nindicator = \"wechat_posts\"\nper = \"team\"\nperiod = \"month\"\nmin = 4\n"
        ),
        "t.toml:11:7: targets[0].per: unknown variant `team`",
    );
}

#[test]
fn year_to_date_and_per_capita_indicators() {
    let points = "[[indicators]]\nid = \"points\"\nname = \"本年积分\"\nkind = \"level\"\nunit = \"分\"\naccumulates = \"year\"\nper_capita = true\n";
    let config = parse(points).unwrap();
    assert_eq!(config.indicators[0].accumulates, Some(Accumulates::Year));
    assert!(config.indicators[0].per_capita);
    // Both default to off.
    let plain =
        parse("[[indicators]]\nid = \"p\"\nname = \"发文\"\nkind = \"count\"\nunit = \"篇\"\n")
            .unwrap();
    assert_eq!(
        (
            plain.indicators[0].accumulates,
            plain.indicators[0].per_capita
        ),
        (None, false)
    );
    // Only a level accumulates; a count adds its days already.
    check_err(
        &points.replace("\"level\"", "\"count\""),
        "t.toml:6:15: indicators[0].accumulates: only a \"level\" indicator can accumulate, and \"points\" is kind \"count\"",
    );
    check_err(
        &points.replace("\"year\"", "\"month\""),
        "t.toml:6:15: indicators[0].accumulates: unknown variant `month`, expected `year`",
    );
    // Its target is yearly, compared with the yearly minimum to date.
    let target = |period: &str| {
        format!(
            "{points}[[targets]]\nindicator = \"points\"\nper = \"entity\"\nperiod = \"{period}\"\nmin = 7000\n"
        )
    };
    assert_eq!(parse(&target("year")).unwrap().targets.len(), 1);
    check_err(
        &target("quarter"),
        "t.toml:11:10: targets[0].period: indicator \"points\" accumulates over the year, so its target must be yearly (period = \"year\"), found \"quarter\"",
    );
}

#[test]
fn indicator_value_ranges() {
    let ind = |kind: &str, extra: &str| {
        format!(
            "[[indicators]]\nid = \"p\"\nname = \"发文\"\nkind = \"{kind}\"\nunit = \"篇\"\n{extra}"
        )
    };
    let range = |text: &str| {
        let c = parse(text).unwrap();
        (c.indicators[0].min, c.indicators[0].max)
    };
    // Counts and distinct entities are never negative; a level may be; none
    // goes past the bound that keeps every roll-up finite.
    assert_eq!(range(&ind("count", "")), (0.0, 1e15));
    assert_eq!(range(&ind("distinct", "")), (0.0, 1e15));
    assert_eq!(range(&ind("level", "")), (-1e15, 1e15));
    assert_eq!(range(&ind("count", "min = -5\nmax = 100\n")), (-5.0, 100.0));
    assert_eq!(range(&ind("level", "max = 1e15\n")), (-1e15, 1e15));
    check_err(
        &ind("count", "max = 1e308\n"),
        "t.toml:6:7: indicators[0].max: must be a number from -1e15 to 1e15, found 1e308",
    );
    check_err(
        &ind("level", "min = -inf\n"),
        "t.toml:6:7: indicators[0].min: must be a number from -1e15 to 1e15, found -inf",
    );
    check_err(
        &ind("count", "max = -1\n"),
        "t.toml:6:7: indicators[0].max: -1 is below the indicator's min 0",
    );
}

#[test]
fn source_units_and_ids() {
    check_err(
        &with_source("schedule = \"0 2 * * *\"\n")
            .replace("unit = \"county\"", "unit = \"county/x\""),
        "t.toml:7:8: sources[0].unit: unknown unit \"county/x\"",
    );
    check_err(
        &with_source("schedule = \"0 2 * * *\"\n")
            .replace("unit = \"county\"", "units = [\"county\", \"x\"]"),
        "t.toml:7:20: sources[0].units[1]: unknown unit \"x\"",
    );
    check_err(
        &with_source("schedule = \"0 2 * * *\"\nunits = [\"county\"]\n"),
        "t.toml:9:9: sources[0].units: set either `unit` or `units`, not both",
    );
    check_err(
        &with_source("schedule = \"0 2 * * *\"\n").replace("unit = \"county\"\n", ""),
        "t.toml:4:1: sources[0]: source \"s\" needs `unit = \"ID\"` or `units = [\"ID\", ...]`",
    );
    check_err(
        &with_source("schedule = \"0 2 * * *\"\n").replace("id = \"s\"", "id = \"-s\""),
        "t.toml:5:6: sources[0].id: invalid source id \"-s\"",
    );
    let config = parse(
        &with_source("schedule = \"0 2 * * *\"\n")
            .replace("unit = \"county\"", "units = [\"county\"]"),
    )
    .unwrap();
    assert_eq!(config.sources[0].units, ["county"]);
}

#[test]
fn bad_schedules() {
    for (schedule, expected) in [
        ("61 * * * *", ""),
        (
            "* * * *",
            "expected 5 fields (min hour dom mon dow) or 6 fields",
        ),
        (
            "0 0 1 * 1",
            "both day-of-month (1) and day-of-week (1) are restricted",
        ),
        (
            "0 9 * * 1-8",
            "day-of-week 8 in \"1-8\" is out of range 0-7",
        ),
        (
            "0 9 * * MON-5",
            "day-of-week \"MON\" in \"MON-5\" is not understood",
        ),
    ] {
        check_err(
            &with_source(&format!("schedule = \"{schedule}\"\n")),
            &format!(
                "t.toml:8:12: sources[0].schedule: invalid cron expression \"{schedule}\": {expected}"
            ),
        );
    }
}

fn source_with_schedule(schedule: &str) -> SourceConfig {
    parse(&with_source(&format!("schedule = \"{schedule}\"\n")))
        .unwrap()
        .sources
        .remove(0)
}

/// 2026-11-27 is a Friday.
fn friday_noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 4, 0, 0).unwrap()
}

#[test]
fn five_field_schedule_uses_crontab_day_numbers() {
    let runs =
        source_with_schedule("30 2 * * 1").next_runs(friday_noon(), Config::DEFAULT_TIMEZONE, 5);
    assert_eq!(runs.len(), 5);
    for run in &runs {
        assert_eq!(run.weekday(), Weekday::Mon, "{run}");
        assert_eq!((run.hour(), run.minute(), run.second()), (2, 30, 0));
    }
    assert_eq!(runs[0].to_rfc3339(), "2026-11-30T02:30:00+08:00");

    let weekdays =
        source_with_schedule("0 9 * * 1-5").next_runs(friday_noon(), Config::DEFAULT_TIMEZONE, 30);
    assert_eq!(weekdays.len(), 30);
    assert!(
        weekdays
            .iter()
            .all(|r| !matches!(r.weekday(), Weekday::Sat | Weekday::Sun))
    );
    assert_eq!(weekdays[0].weekday(), Weekday::Mon);

    for sunday in ["0 0 * * 0", "0 0 * * 7", "0 0 * * SUN"] {
        let runs =
            source_with_schedule(sunday).next_runs(friday_noon(), Config::DEFAULT_TIMEZONE, 3);
        assert!(runs.iter().all(|r| r.weekday() == Weekday::Sun), "{sunday}");
    }
    let weekend =
        source_with_schedule("0 0 * * 0,6").next_runs(friday_noon(), Config::DEFAULT_TIMEZONE, 4);
    let days: Vec<Weekday> = weekend.iter().map(|r| r.weekday()).collect();
    assert_eq!(
        days,
        [Weekday::Sat, Weekday::Sun, Weekday::Sat, Weekday::Sun]
    );
    let names = source_with_schedule("0 9 * * MON-FRI").next_runs(
        friday_noon(),
        Config::DEFAULT_TIMEZONE,
        10,
    );
    assert!(
        names
            .iter()
            .all(|r| !matches!(r.weekday(), Weekday::Sat | Weekday::Sun))
    );
}

#[test]
fn six_field_schedule_has_seconds_first() {
    let source = source_with_schedule("15 30 2 * * 1");
    assert_eq!(source.schedule_text, "15 30 2 * * 1");
    let runs = source.next_runs(friday_noon(), Config::DEFAULT_TIMEZONE, 2);
    assert_eq!(runs[0].to_rfc3339(), "2026-11-30T02:30:15+08:00");
    assert_eq!(runs[1].to_rfc3339(), "2026-12-07T02:30:15+08:00");
}

#[test]
fn schedule_is_read_in_the_configured_time_zone() {
    let source = source_with_schedule("0 2 * * *");
    let utc = source.next_runs(friday_noon(), chrono_tz::UTC, 1);
    let shanghai = source.next_runs(friday_noon(), chrono_tz::Asia::Shanghai, 1);
    assert_eq!(utc[0].to_rfc3339(), "2026-11-28T02:00:00+00:00");
    assert_eq!(shanghai[0].to_rfc3339(), "2026-11-28T02:00:00+08:00");
}

#[test]
fn durations() {
    for (text, ms) in [
        ("60s", 60_000),
        ("5m", 300_000),
        ("1h30m", 5_400_000),
        ("500ms", 500),
        ("1d", 86_400_000),
        // humantime's spaces, long names and fractions.
        ("1h 30m", 5_400_000),
        ("2 hours", 7_200_000),
        ("1.5s", 1_500),
    ] {
        assert_eq!(
            parse_duration(text),
            Ok(Duration::from_millis(ms)),
            "{text}"
        );
    }
    for text in ["", "5", "5x", "m", "-1s", "0s", "0ms"] {
        assert!(parse_duration(text).is_err(), "{text}");
    }
    check_err(
        &with_source("schedule = \"0 2 * * *\"\ntimeout = \"5x\"\n"),
        "t.toml:9:11: sources[0].timeout: invalid duration \"5x\": expected numbers with units",
    );
    let source = parse(&with_source(
        "schedule = \"0 2 * * *\"\ntimeout = \"1h30m\"\n",
    ))
    .unwrap()
    .sources
    .remove(0);
    assert_eq!(source.timeout, Duration::from_secs(5400));
}

#[test]
fn backfill_from() {
    for value in ["2026-01-01", "\"2026-01-01\""] {
        let source = parse(&with_source(&format!(
            "schedule = \"0 2 * * *\"\nbackfill_from = {value}\n"
        )))
        .unwrap()
        .sources
        .remove(0);
        assert_eq!(source.backfill_from, NaiveDate::from_ymd_opt(2026, 1, 1));
    }
    check_err(
        &with_source("schedule = \"0 2 * * *\"\nbackfill_from = \"2026-13-01\"\n"),
        "t.toml:9:17: sources[0].backfill_from: invalid date \"2026-13-01\"",
    );
    check_err(
        &with_source("schedule = \"0 2 * * *\"\nbackfill_from = 2026-01-01T00:00:00\n"),
        "t.toml:9:17: sources[0].backfill_from: expected a date YYYY-MM-DD, found datetime",
    );
}

#[test]
fn daemon_defaults_and_errors() {
    let config = parse("").unwrap();
    assert_eq!(config.daemon.listen.to_string(), "127.0.0.1:9470");
    assert_eq!(config.daemon.timezone, chrono_tz::Asia::Shanghai);
    assert_eq!(config.daemon.data_dir, Path::new("data"));
    // `parse` knows no executable: the packaged layout's directory.
    assert_eq!(
        config.daemon.plugin_dirs,
        [Path::new("/usr/lib/tally/plugins")]
    );
    assert_eq!(config.daemon.max_concurrent_runs, 4);
    assert!(config.daemon.api_token.is_none());

    check_err(
        "[daemon]\ntimezone = \"Mars/Olympus\"\n",
        "t.toml:2:12: daemon.timezone: unknown time zone \"Mars/Olympus\"",
    );
    check_err(
        "[daemon]\nlisten = \"localhost\"\n",
        "t.toml:2:10: daemon.listen: invalid address \"localhost\"",
    );
    check_err(
        "[daemon]\nlisten = \"0.0.0.0:9470\"\n",
        "t.toml:2:10: daemon.listen: listening on 0.0.0.0:9470 requires daemon.api_token",
    );
    check_err(
        "[daemon]\nmax_concurrent_runs = 0\n",
        "t.toml:2:23: daemon.max_concurrent_runs: must be at least 1",
    );
    let config =
        parse("[daemon]\nlisten = \"0.0.0.0:9470\"\napi_token = \"${env:TALLY_API_TOKEN}\"\ndata_dir = \"/var/lib/tally\"\n")
            .unwrap();
    assert_eq!(
        config.daemon.api_token.as_ref().map(Secret::expose),
        Some(API_TOKEN)
    );
    assert_eq!(config.daemon.data_dir, Path::new("/var/lib/tally"));
}

#[test]
fn missing_secrets_name_the_variable_never_a_value() {
    let err = check_err(
        &with_source(
            "schedule = \"0 2 * * *\"\n[sources.settings]\nappid = \"${env:NATRES_WECHAT_SECRET}\"\nsecret = \"${env:MISSING_SECRET}\"\n",
        ),
        "t.toml:11:10: sources[0].settings.secret: environment variable \"MISSING_SECRET\" is not set",
    );
    assert!(!err.contains(WECHAT_SECRET), "{err}");
    let err = check_err(
        "[daemon]\napi_token = \"${env:NO_TOKEN}\"\n[[units]]\nid = \"x\"\nname = \"${env:TALLY_API_TOKEN}\"\nheadcount = -1\n",
        "t.toml:6:13: units[0].headcount: invalid value",
    );
    assert!(!err.contains(API_TOKEN), "{err}");
    check_err(
        "[daemon]\napi_token = \"${env:NO_TOKEN}\"\n",
        "t.toml:2:13: daemon.api_token: environment variable \"NO_TOKEN\" is not set",
    );
    check_err(
        &with_source(
            "schedule = \"0 2 * * *\"\n[sources.settings]\nlist = [{ key = \"${file:nope.txt}\" }]\n",
        ),
        "t.toml:10:17: sources[0].settings.list[0].key: cannot read secret file \"nope.txt\"",
    );
}

#[test]
fn file_secrets_resolve_against_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token.txt"), "file-secret-value\n").unwrap();
    let text = with_source(
        "schedule = \"0 2 * * *\"\n[sources.settings]\nheader = \"Bearer ${file:token.txt}\"\n",
    );
    let path = dir.path().join("tally.toml");
    std::fs::write(&path, &text).unwrap();
    let config = Config::parse(&text, &path, &fake_env).unwrap();
    assert_eq!(
        config.sources[0].settings.value()["header"],
        "Bearer file-secret-value"
    );
    assert_eq!(config.secrets().redact("got file-secret-value"), "got ***");
    // `load` reads the same file.
    let loaded = Config::load(&path).unwrap();
    assert_eq!(loaded.sources[0].settings, config.sources[0].settings);
}

#[test]
fn load_reports_a_missing_file() {
    let err = Config::load(Path::new("/nonexistent/tally.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    assert_eq!(
        err.to_string(),
        "cannot read configuration file /nonexistent/tally.toml"
    );
}

#[test]
fn secrets_are_redacted_and_not_debug_printed() {
    let config = parse(&format!(
        "[daemon]\napi_token = \"${{env:TALLY_API_TOKEN}}\"\n{}",
        with_source(
            "schedule = \"0 2 * * *\"\n[sources.settings]\nappid = \"wx0123456789abcdef\"\nsecret = \"${env:NATRES_WECHAT_SECRET}\"\n"
        )
    ))
    .unwrap();
    assert_eq!(config.sources[0].settings.value()["secret"], WECHAT_SECRET);
    let redactor = config.secrets();
    assert_eq!(redactor.len(), 2);
    assert_eq!(
        redactor.redact(&format!(
            "plugin said: bad secret {WECHAT_SECRET}, token {API_TOKEN}"
        )),
        "plugin said: bad secret ***, token ***"
    );
    let debug = format!("{config:?} {:?} {:#?}", config.sources[0], config.daemon);
    for secret in [WECHAT_SECRET, API_TOKEN, "wx0123456789abcdef"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(debug.contains("Secret(***)"));
    assert!(
        debug.contains("settings_keys: [\"appid\", \"secret\"]"),
        "{debug}"
    );
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let err = parse(&format!(
        "[daemon]\ntimezone = \"Nowhere\"\n{UNIT}[[units]]\nid = \"x/y\"\nname = \"乙\"\n\
         [[sources]]\nid = \"s\"\nplugin = \"p\"\nunit = \"nope\"\nschedule = \"bad\"\n"
    ))
    .unwrap_err();
    let problems: Vec<String> = err.problems().iter().map(Problem::to_string).collect();
    assert_eq!(
        problems,
        [
            "t.toml:2:12: daemon.timezone: unknown time zone \"Nowhere\" (expected an IANA name such as \"Asia/Shanghai\")",
            "t.toml:7:6: units[1].id: unknown parent unit \"x\" of unit \"x/y\"",
            "t.toml:12:8: sources[0].unit: unknown unit \"nope\"",
            "t.toml:13:12: sources[0].schedule: invalid cron expression \"bad\": expected 5 fields (min hour dom mon dow) or 6 fields (sec min hour dom mon dow), found 1",
        ]
    );
    assert_eq!(err.to_string(), problems.join("\n"));
}

#[test]
fn check_emits_both_ways() {
    let config = parse(&format!(
        "{UNIT}[[indicators]]\nid = \"wechat_posts\"\nname = \"发文\"\nkind = \"count\"\nunit = \"篇\"\n\
         [[indicators]]\nid = \"weibo_posts\"\nname = \"微博\"\nkind = \"count\"\nunit = \"篇\"\n\
         [[sources]]\nid = \"wechat\"\nplugin = \"wechat\"\nunit = \"county\"\nschedule = \"0 2 * * *\"\n\
         [[sources]]\nid = \"weibo\"\nplugin = \"weibo\"\nunit = \"county\"\nschedule = \"0 2 * * *\"\nenabled = false\n"
    ))
    .unwrap();
    let emits = |pairs: &[(&str, &[&str])]| -> HashMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(s, i)| (s.to_string(), i.iter().map(|i| i.to_string()).collect()))
            .collect()
    };
    let all = emits(&[("wechat", &["wechat_posts", "weibo_posts"])]);
    config.check_emits(&all).unwrap();

    let err = config
        .check_emits(&emits(&[
            ("wechat", &["wechat_posts", "wechat_reads"]),
            ("weibo", &["weibo_posts"]),
        ]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "t.toml:10:6: indicators[1].id: no source emits indicator \"weibo_posts\" (only disabled sources do: weibo)\n\
         t.toml:16:10: sources[0].plugin: plugin \"wechat\" of source \"wechat\" emits indicator \"wechat_reads\", which neither its describe() nor [[indicators]] declares (declare it, or map it in [sources.indicators] to a declared id or to false)"
    );
    let err = config.check_emits(&emits(&[])).unwrap_err();
    assert_eq!(err.problems().len(), 2);
    assert!(
        err.to_string().starts_with(
            "t.toml:5:6: indicators[0].id: no source emits indicator \"wechat_posts\"\n"
        )
    );
}

#[test]
fn locations_for_the_daemon() {
    let config = parse(&with_source(
        "schedule = \"0 2 * * *\"\n[sources.settings]\nmapping = [\n  { path = \"$.a\" },\n  { path = \"$.b\", \"名.x\" = 1 },\n]\n",
    ))
    .unwrap();
    assert_eq!(
        config.source_location(0).to_string(),
        "t.toml:4:1: sources[0]"
    );
    assert_eq!(
        config.settings_location(0, "/mapping/1/path").to_string(),
        "t.toml:12:12: sources[0].settings.mapping[1].path"
    );
    assert_eq!(
        config.settings_location(0, "/mapping/1/名.x").to_string(),
        "t.toml:12:27: sources[0].settings.mapping[1].\"名.x\""
    );
    // A key the file does not have is placed at its nearest ancestor.
    assert_eq!(
        config
            .settings_location(0, "/mapping/0/missing")
            .to_string(),
        "t.toml:11:3: sources[0].settings.mapping[0].missing"
    );
    assert_eq!(
        config.settings_location(0, "").to_string(),
        "t.toml:9:1: sources[0].settings"
    );
    assert_eq!(
        config.location("units[0].name").to_string(),
        "t.toml:3:8: units[0].name"
    );
}

/// The README's configuration example, completed.
const PRODUCT_EXAMPLE: &str = r#"[daemon]
listen    = "127.0.0.1:9470"
timezone  = "Asia/Shanghai"
data_dir  = "data"
plugin_dirs = ["target/release"]
api_token = "${env:TALLY_API_TOKEN}"

[[units]]
id = "county"
name = "某县"
headcount = 120
[[units]]
id = "county/natres"
name = "自然资源局"
headcount = 22
aliases = ["某县自然资源局党支部"]

[[indicators]]
id = "wechat_posts"
name = "微信公众号发文数"
kind = "count"
unit = "篇"
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

[[sources]]
id = "natres-wechat"
plugin = "wechat"
unit = "county/natres"
schedule = "30 2 * * *"
lookback_days = 3
timeout = "60s"
[sources.settings]
appid = "wx0123456789abcdef"
secret = "${env:NATRES_WECHAT_SECRET}"
"#;

#[test]
fn product_example_parses() {
    let config = parse(PRODUCT_EXAMPLE).unwrap();
    assert_eq!(config.units.len(), 2);
    assert_eq!(config.units[1].name, "自然资源局");
    assert_eq!(config.units[1].aliases, ["某县自然资源局党支部"]);
    assert_eq!(config.indicators[1].kind, Kind::Level);
    assert_eq!(
        config.targets[0],
        TargetConfig {
            indicator: "xuexi_points".into(),
            per: Per::Entity,
            period: TargetPeriod::Year,
            min: 7000.0,
            prorate: true,
            units: None,
        }
    );
    let source = &config.sources[0];
    assert_eq!(source.units, ["county/natres"]);
    assert_eq!(source.timeout, Duration::from_secs(60));
    assert_eq!(source.lookback_days, 3);
    assert!(source.enabled);
    assert_eq!(source.backfill_from, None);
    assert_eq!(
        source.settings,
        serde_json::json!({"appid": "wx0123456789abcdef", "secret": WECHAT_SECRET})
    );
    insta::assert_snapshot!(format!("{config:#?}"));
}

#[test]
fn annotated_example_parses() {
    let text = include_str!("../../../config/example.toml");
    let config = Config::parse(text, Path::new("config/example.toml"), &fake_env)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(config.units.iter().any(|u| u.name == "自然资源局"));
    assert!(config.sources.iter().any(|s| s.plugin == "wechat"));
    assert!(!config.secrets().is_empty());
    let emits: HashMap<String, Vec<String>> = [
        ("natres-wechat", &["wechat_posts", "wechat_readers"][..]),
        ("edu-weibo", &["weibo_posts"]),
        ("xuexi", &["xuexi_points", "xuexi_members"]),
        ("commentary", &["commentary_articles"]),
    ]
    .into_iter()
    .map(|(s, i)| (s.to_owned(), i.iter().map(|i| i.to_string()).collect()))
    .collect();
    config.check_emits(&emits).unwrap_or_else(|e| panic!("{e}"));
    let monday =
        config
            .source("commentary")
            .unwrap()
            .next_runs(friday_noon(), config.daemon.timezone, 1);
    assert_eq!(monday[0].to_rfc3339(), "2026-11-30T08:00:00+08:00");
}

#[test]
fn retries_backoff_and_breaker_have_defaults() {
    let source = source_with_schedule("0 2 * * *");
    assert_eq!(source.retries, 2);
    assert_eq!(source.retry_backoff, Duration::from_secs(5));
    assert_eq!(source.breaker_after, 3);
    let config = parse(&with_source("schedule = \"0 2 * * *\"\n")).unwrap();
    assert_eq!(config.daemon.http_per_host_concurrency, 4);
    assert_eq!(config.daemon.http_per_host_rate, None);
}

#[test]
fn retries_backoff_and_breaker_are_read() {
    let config = parse(&format!(
        "[daemon]\nhttp_per_host_concurrency = 2\nhttp_per_host_rate = 0.5\n{}",
        with_source(
            "schedule = \"0 2 * * *\"\nretries = 0\nretry_backoff = \"250ms\"\nbreaker_after = 0\n"
        )
    ))
    .unwrap();
    let source = &config.sources[0];
    assert_eq!(source.retries, 0);
    assert_eq!(source.retry_backoff, Duration::from_millis(250));
    assert_eq!(source.breaker_after, 0);
    assert_eq!(config.daemon.http_per_host_concurrency, 2);
    assert_eq!(config.daemon.http_per_host_rate, Some(0.5));
}

#[test]
fn bad_retry_backoff_and_http_limits_are_placed() {
    check_err(
        &with_source("schedule = \"0 2 * * *\"\nretry_backoff = \"soon\"\n"),
        "t.toml:9:17: sources[0].retry_backoff: invalid duration \"soon\"",
    );
    check_err(
        &format!(
            "[daemon]\nhttp_per_host_concurrency = 0\n{}",
            with_source("schedule = \"0 2 * * *\"\n")
        ),
        "t.toml:2:29: daemon.http_per_host_concurrency: must be at least 1",
    );
    check_err(
        &format!(
            "[daemon]\nhttp_per_host_rate = -1.0\n{}",
            with_source("schedule = \"0 2 * * *\"\n")
        ),
        "t.toml:2:22: daemon.http_per_host_rate: must be a number of requests per second above 0",
    );
}

/// Two units under a county, and a source on them (starting at line 10)
/// whose body is `body`.
fn county_source(body: &str) -> String {
    format!(
        "[[units]]\nid = \"county\"\nname = \"某县\"\n[[units]]\nid = \"county/a\"\nname = \"县甲\"\n\
         [[units]]\nid = \"county/b\"\nname = \"县乙\"\n\
         [[sources]]\nid = \"s\"\nplugin = \"p\"\nschedule = \"0 2 * * *\"\n{body}"
    )
}

#[test]
fn coverage_defaults_by_the_key_and_can_be_written() {
    let coverage = |body: &str| {
        let source = parse(&county_source(body)).unwrap().sources.remove(0);
        (source.units, source.coverage)
    };
    assert_eq!(
        coverage("units = [\"county\"]\n"),
        (vec!["county".to_owned()], Coverage::Subtrees)
    );
    assert_eq!(
        coverage("unit = \"county\"\n"),
        (vec!["county".to_owned()], Coverage::Listed)
    );
    assert_eq!(
        coverage("units = [\"county/a\", \"county/b\"]\ncoverage = \"listed\"\n"),
        (
            vec!["county/a".to_owned(), "county/b".to_owned()],
            Coverage::Listed
        )
    );
    assert_eq!(
        coverage("unit = \"county\"\ncoverage = \"subtrees\"\n"),
        (vec!["county".to_owned()], Coverage::Subtrees)
    );
    check_err(
        &county_source("units = [\"county\"]\ncoverage = \"some\"\n"),
        "t.toml:15:12: sources[0].coverage: unknown variant `some`, expected `subtrees` or `listed`",
    );
    check_err(
        &county_source("units = [\"county/a\", \"county/a\"]\n"),
        "t.toml:14:22: sources[0].units[1]: unit \"county/a\" is listed twice",
    );
}

const XUEXI_INDICATORS: &str = "[[indicators]]\nid = \"xuexi_points_year\"\nname = \"本年积分\"\nkind = \"level\"\nunit = \"分\"\n";

#[test]
fn the_indicator_mapping_is_read_and_its_right_side_checked() {
    let text = format!(
        "{}{XUEXI_INDICATORS}",
        county_source(
            "unit = \"county\"\n[sources.indicators]\nxuexi_points = \"xuexi_points_year\"\nxuexi_members = false\n"
        )
    );
    let source = parse(&text).unwrap().sources.remove(0);
    assert_eq!(
        source.indicators,
        BTreeMap::from([
            ("xuexi_members".to_owned(), None),
            (
                "xuexi_points".to_owned(),
                Some("xuexi_points_year".to_owned())
            ),
        ])
    );
    assert_eq!(
        source.map_indicator("xuexi_points"),
        Some("xuexi_points_year")
    );
    assert_eq!(source.map_indicator("xuexi_members"), None);
    assert_eq!(source.map_indicator("other"), Some("other"));
    let emitted = [
        "xuexi_points".to_owned(),
        "xuexi_members".to_owned(),
        "x".to_owned(),
    ];
    assert_eq!(source.mapped_emits(&emitted), ["xuexi_points_year", "x"]);

    check_err(
        &format!(
            "{}{XUEXI_INDICATORS}",
            county_source("unit = \"county\"\n[sources.indicators]\nxuexi_points = \"points\"\n")
        ),
        "t.toml:16:16: sources[0].indicators.xuexi_points: unknown indicator \"points\": map \"xuexi_points\" to an id declared in [[indicators]] (xuexi_points_year), or to false to drop it",
    );
    check_err(
        &county_source("unit = \"county\"\n[sources.indicators]\nxuexi_points = true\n"),
        "t.toml:16:16: sources[0].indicators.xuexi_points: expected the id of a declared indicator (a string) or false to drop \"xuexi_points\", found true",
    );
    check_err(
        &county_source("unit = \"county\"\n[sources.indicators]\nxuexi_points = 3\n"),
        "found integer",
    );
}

#[test]
fn check_emits_checks_the_left_side_of_the_mapping_and_uses_mapped_ids() {
    let config = parse(&format!(
        "{}{XUEXI_INDICATORS}",
        county_source(
            "unit = \"county\"\n[sources.indicators]\nxuexi_points = \"xuexi_points_year\"\nxuexi_members = false\n"
        )
    ))
    .unwrap();
    let emits = |ids: &[&str]| -> HashMap<String, Vec<String>> {
        HashMap::from([("s".to_owned(), ids.iter().map(|i| i.to_string()).collect())])
    };
    // Mapped: `xuexi_points_year` is emitted (through the mapping), the
    // dropped `xuexi_members` need not be declared.
    config
        .check_emits(&emits(&["xuexi_points", "xuexi_members"]))
        .unwrap_or_else(|e| panic!("{e}"));
    // The left side must be an indicator the plugin emits; the message
    // names what it emits.
    let err = config
        .check_emits(&emits(&["xuexi_points"]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "t.toml:17:17: sources[0].indicators.xuexi_members: plugin \"p\" of source \"s\" does not emit indicator \"xuexi_members\"; it emits xuexi_points"
    );
    // An unmapped emitted id must be declared, as without a mapping.
    let err = config
        .check_emits(&emits(&["xuexi_points", "xuexi_members", "xuexi_days"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sources[0].plugin: plugin \"p\" of source \"s\" emits indicator \"xuexi_days\", which neither its describe() nor [[indicators]] declares (declare it, or map it"),
        "{err}"
    );
    // A declared indicator that only a mapping could fill: nobody stores it.
    let err = config
        .check_emits(&emits(&["other"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("indicators[0].id: no source emits indicator \"xuexi_points_year\""),
        "{err}"
    );

    // Two emitted ids onto one stored id would mix two figures.
    let config = parse(&format!(
        "{}{XUEXI_INDICATORS}",
        county_source("unit = \"county\"\n[sources.indicators]\npoints = \"xuexi_points_year\"\n")
    ))
    .unwrap();
    let err = config
        .check_emits(&emits(&["points", "xuexi_points_year"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sources[0].indicators.points: indicator \"xuexi_points_year\" would receive both \"points\" and \"xuexi_points_year\""),
        "{err}"
    );
}

/// A source with every key set, one per line, so that each can be changed
/// alone: `(key, value as written, another value)`.
const EVERY_SOURCE_KEY: &[(&str, &str, &str)] = &[
    ("plugin", "\"p\"", "\"q\""),
    ("units", "[\"county\"]", "[\"county/a\"]"),
    ("coverage", "\"subtrees\"", "\"listed\""),
    ("schedule", "\"0 2 * * *\"", "\"0 3 * * *\""),
    ("lookback_days", "3", "4"),
    ("timeout", "\"60s\"", "\"61s\""),
    ("backfill_from", "\"2026-07-01\"", "\"2026-07-02\""),
    ("enabled", "true", "false"),
    ("isolation", "\"none\"", "\"process\""),
    ("memory_limit_mb", "2048", "1024"),
    ("retries", "2", "3"),
    ("retry_backoff", "\"5s\"", "\"6s\""),
    ("breaker_after", "3", "4"),
];

fn every_key_source(changed: Option<&str>, tail: &str) -> SourceConfig {
    let mut text = format!(
        "{UNIT}[[units]]\nid = \"county/a\"\nname = \"县甲\"\n{XUEXI_INDICATORS}[[sources]]\nid = \"s\"\n"
    );
    for (key, value, other) in EVERY_SOURCE_KEY {
        let value = if changed == Some(*key) { other } else { value };
        text.push_str(&format!("{key} = {value}\n"));
    }
    text.push_str(tail);
    parse(&text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .sources
        .remove(0)
}

#[test]
fn a_change_of_any_source_field_is_a_change_and_only_some_need_a_new_instance() {
    const TAIL: &str = "[sources.indicators]\npoints = \"xuexi_points_year\"\n\
                        [sources.settings]\nappid = \"wx1\"\n";
    let base = every_key_source(None, TAIL);
    assert!(base == every_key_source(None, TAIL));
    assert!(base.same_instance(&every_key_source(None, TAIL)));
    // What the plugin instance is created with, or the daemon derives from
    // it once; every other field is read per run.
    let instance_keys = [
        "plugin",
        "units",
        "coverage",
        "isolation",
        "memory_limit_mb",
    ];
    for (key, _, _) in EVERY_SOURCE_KEY {
        let changed = every_key_source(Some(key), TAIL);
        assert!(base != changed, "a change of {key} is a change");
        assert_eq!(
            base.same_instance(&changed),
            !instance_keys.contains(key),
            "{key}"
        );
    }
    for tail in [
        // The mapping: another target, dropped, gone.
        "[sources.indicators]\npoints = false\n[sources.settings]\nappid = \"wx1\"\n",
        "[sources.settings]\nappid = \"wx1\"\n",
        // The settings.
        "[sources.indicators]\npoints = \"xuexi_points_year\"\n[sources.settings]\nappid = \"wx2\"\n",
    ] {
        let changed = every_key_source(None, tail);
        assert!(base != changed, "{tail}");
        assert!(!base.same_instance(&changed), "{tail}");
    }

    // `units = [X]` and `unit = X` are not the same source: one expects X's
    // subtree to report, the other X alone.
    let subtree = parse(&county_source("units = [\"county\"]\n")).unwrap();
    let alone = parse(&county_source("unit = \"county\"\n")).unwrap();
    assert!(subtree.sources[0] != alone.sources[0]);
    assert!(!subtree.sources[0].same_instance(&alone.sources[0]));
    // Written differently, configured the same: unchanged.
    let listed = parse(&county_source(
        "units = [\"county\"]\ncoverage = \"listed\"\n",
    ))
    .unwrap();
    assert!(listed.sources[0] == alone.sources[0]);
}

#[test]
fn unset_secrets_are_deferred_for_check_and_named_each_at_its_key() {
    let text = "[daemon]\nlisten = \"0.0.0.0:9470\"\napi_token = \"${env:UNSET_TOKEN}\"\n\
                [[units]]\nid = \"county\"\nname = \"某县\"\n\
                [[sources]]\nid = \"s\"\nplugin = \"p\"\nunit = \"county\"\nschedule = \"0 2 * * *\"\n\
                [sources.settings]\nappid = \"wx1\"\nsecret = \"${env:UNSET_SECRET}\"\n\
                header = \"Bearer ${env:NATRES_WECHAT_SECRET}${file:no-such-file}\"\n";
    // `run` and reload refuse such a file, as before.
    let err = parse(text).unwrap_err().to_string();
    assert!(err.contains("\"UNSET_TOKEN\" is not set"), "{err}");
    assert!(!err.contains(WECHAT_SECRET), "{err}");

    let (config, unresolved) =
        Config::parse_deferring_secrets(text, Path::new("t.toml"), &fake_env).unwrap();
    let shown: Vec<String> = unresolved.iter().map(Problem::to_string).collect();
    assert_eq!(shown.len(), 3, "{shown:#?}");
    assert_eq!(
        shown[0],
        "t.toml:3:13: daemon.api_token: environment variable \"UNSET_TOKEN\" is not set"
    );
    assert_eq!(
        shown[1],
        "t.toml:14:10: sources[0].settings.secret: environment variable \"UNSET_SECRET\" is not set"
    );
    assert!(
        shown[2].starts_with("t.toml:15:10: sources[0].settings.header: cannot read secret file"),
        "{}",
        shown[2]
    );
    assert!(shown.iter().all(|s| !s.contains(WECHAT_SECRET)));
    // The plugin sees the reference where the value would be; what did
    // resolve is still a secret to redact.
    assert_eq!(
        config.sources[0].settings.value()["secret"],
        serde_json::json!("${env:UNSET_SECRET}")
    );
    assert_eq!(
        config.secrets().redact(&format!("x {WECHAT_SECRET} y")),
        "x *** y"
    );
    // The listen address needs a token: the unresolved one counts as set,
    // so that it is not reported a second time.
    assert!(config.daemon.api_token.is_some());

    // Any other problem fails as before, listing the unresolved ones too.
    let broken = text.replace("\"0 2 * * *\"", "\"bad\"");
    let err = Config::parse_deferring_secrets(&broken, Path::new("t.toml"), &fake_env).unwrap_err();
    assert_eq!(err.problems().len(), 4, "{err}");
}

#[test]
fn plugin_dirs_alone_are_read_without_secrets_or_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(
        &path,
        "[daemon]\nplugin_dirs = [\"a\", \"b\"]\napi_token = \"${env:UNSET_TOKEN}\"\n\
         [[sources]]\nid = \"s\"\nplugin = \"p\"\nschedule = \"bad\"\nunit = \"nowhere\"\n",
    )
    .unwrap();
    assert_eq!(
        Config::load_plugin_dirs(&path).unwrap(),
        [PathBuf::from("a"), PathBuf::from("b")]
    );
    // Unset: `lib/tally/plugins` beside the directory of the running
    // executable (this test's, in `target/debug/deps`).
    std::fs::write(&path, "[[units]]\nid = \"county\"\nname = \"County\"\n").unwrap();
    let exe = std::env::current_exe().unwrap();
    let beside = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("lib/tally/plugins");
    assert_eq!(
        Config::load_plugin_dirs(&path).unwrap(),
        std::slice::from_ref(&beside)
    );
    assert_eq!(Config::load(&path).unwrap().daemon.plugin_dirs, [beside]);
    std::fs::write(&path, "[daemon]\nplugin_dirs = \"a\"\n").unwrap();
    let err = Config::load_plugin_dirs(&path).unwrap_err().to_string();
    assert!(err.contains("t.toml:2:15: daemon.plugin_dirs"), "{err}");
    std::fs::write(&path, "[daemon\n").unwrap();
    assert!(Config::load_plugin_dirs(&path).is_err());
}

#[test]
fn indicators_a_plugin_declares_are_adopted_unless_configured_or_mapped() {
    use tally_plugin::{IndicatorDecl, Kind as PluginKind};
    let mut config = parse(&format!(
        "{UNIT}[[indicators]]\nid = \"weibo_posts\"\nname = \"微博发博数（本县）\"\nkind = \"count\"\nunit = \"篇\"\n\
         [[sources]]\nid = \"weibo\"\nplugin = \"weibo\"\nunit = \"county\"\nschedule = \"0 2 * * *\"\n\
         [sources.indicators]\nweibo_likes = false\n\
         [[sources]]\nid = \"off\"\nplugin = \"other\"\nunit = \"county\"\nschedule = \"0 2 * * *\"\nenabled = false\n"
    ))
    .unwrap();
    let emits = HashMap::from([
        (
            "weibo".to_owned(),
            [
                "weibo_posts",
                "weibo_followers",
                "weibo_likes",
                "weibo_custom",
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        ("off".to_owned(), vec!["other_n".to_owned()]),
    ]);
    let described = HashMap::from([
        (
            "weibo".to_owned(),
            vec![
                IndicatorDecl::new("weibo_posts", "微博发博数", PluginKind::Count, "条"),
                IndicatorDecl::new("weibo_followers", "微博粉丝数", PluginKind::Level, "人"),
                IndicatorDecl::new("weibo_likes", "微博点赞数", PluginKind::Count, "次"),
            ],
        ),
        (
            "other".to_owned(),
            vec![IndicatorDecl::new("other_n", "数", PluginKind::Count, "个")],
        ),
    ]);
    let added = config.adopt_plugin_indicators(&emits, &described);
    // Configured (weibo_posts keeps the file's name and unit), mapped
    // (weibo_likes is dropped), undescribed (weibo_custom) and disabled
    // (other_n) ones are not adopted.
    assert_eq!(added, ["weibo_followers"]);
    let posts = config.indicator("weibo_posts").unwrap();
    assert_eq!(
        (posts.name.as_str(), posts.unit.as_str()),
        ("微博发博数（本县）", "篇")
    );
    assert_eq!(posts.declared_by, None);
    let followers = config.indicator("weibo_followers").unwrap();
    assert_eq!(followers.kind, Kind::Level);
    assert_eq!(followers.declared_by.as_deref(), Some("weibo"));
    assert_eq!(
        followers.toml_snippet(),
        "[[indicators]]\nid = \"weibo_followers\"\nname = \"微博粉丝数\"\nkind = \"level\"\nunit = \"人\"\n"
    );
    // The snippet is a valid declaration.
    parse(&format!("{UNIT}{}", followers.toml_snippet())).unwrap();
    // The undescribed id still has to be declared.
    let err = config.check_emits(&emits).unwrap_err().to_string();
    assert!(
        err.contains("emits indicator \"weibo_custom\", which neither its describe() nor [[indicators]] declares"),
        "{err}"
    );
    assert!(!err.contains("weibo_followers"), "{err}");
}

#[test]
fn daemon_hosts_are_names_or_addresses_with_an_optional_port() {
    assert!(
        parse("").unwrap().daemon.hosts.is_empty(),
        "none by default"
    );
    let config = parse(
        "[daemon]\nhosts = [\"Tally.Example.gov.cn\", \"tally.example.gov.cn:9470\", \"10.0.0.5\", \"[::1]:9470\", \"tally.\"]\n",
    )
    .unwrap();
    assert_eq!(
        config.daemon.hosts,
        [
            "tally.example.gov.cn",
            "tally.example.gov.cn:9470",
            "10.0.0.5",
            "[::1]:9470",
            "tally"
        ]
    );
    check_err(
        "[daemon]\nhosts = [\"tally.example.gov.cn\", \"https://tally.example.gov.cn/\"]\n",
        "t.toml:2:34: daemon.hosts[1]: \"https://tally.example.gov.cn/\" is a URL, not a host",
    );
    for (entry, why) in [
        ("tally.example.gov.cn:0", "has an invalid port"),
        ("tally.example.gov.cn:99999", "has an invalid port"),
        ("*.example.gov.cn", "is not a host name"),
        ("", "is not a host name"),
        ("a b", "is not a host name"),
        ("::1", "is not a host name"),
    ] {
        let err = check_err(&format!("[daemon]\nhosts = [\"{entry}\"]\n"), why);
        assert!(err.contains("daemon.hosts[0]"), "{err}");
    }
    check_err(
        "[daemon]\nhosts = \"tally.example.gov.cn\"\n",
        "daemon.hosts: invalid type: string",
    );
}

#[test]
fn the_store_lease_defaults_to_30s_and_is_at_least_3s() {
    let store = |more: &str| format!("[store]\nurl = \"postgresql://tally@db/tally\"\n{more}");
    let config = parse(&store("")).unwrap();
    assert_eq!(config.store.unwrap().lease, Duration::from_secs(30));
    let config = parse(&store("lease = \"1m30s\"\n")).unwrap();
    assert_eq!(config.store.unwrap().lease, Duration::from_secs(90));
    let err = check_err(&store("lease = \"2s\"\n"), "store.lease");
    assert!(err.contains("too short: at least 3s"), "{err}");
    let err = check_err(&store("lease = \"soon\"\n"), "store.lease");
    assert!(err.contains("invalid duration"), "{err}");
}
