//! `tallyd plugins --check-exec COMMAND...`: runs a program the way the `exec`
//! plugin would, on a sample request, and checks what it does against the
//! exec protocol (plugins/README.md, "Any language: the exec protocol").
//!
//! The check is stricter than the plugin, which skips a bad line with a
//! warning: here every line that the plugin would skip is a problem, named by
//! its number, so that a program is known to conform before it is configured.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use chrono::{Days, NaiveDate};
use serde_json::Value;
use tokio::io::AsyncReadExt;

use crate::cli::UserError;
use tally_domain::clock::{Clock, SystemClock};

/// The version of the exec protocol this check enforces.
pub const EXEC_PROTOCOL: u32 = 1;

/// How long the program may run, as the plugin's default `timeout`.
const TIMEOUT: Duration = Duration::from_secs(30);

/// What the sample request gives the program.
pub struct Sample {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub source: String,
    pub timezone: String,
    pub unit: String,
    pub state: Value,
}

impl Sample {
    /// The three days before today in Asia/Shanghai, for source `exec-check`
    /// of unit `check/unit`, without resume state.
    pub fn new(clock: &dyn Clock) -> Sample {
        let today = clock
            .now()
            .with_timezone(&chrono_tz::Asia::Shanghai)
            .date_naive();
        let to = today.checked_sub_days(Days::new(1)).unwrap_or(today);
        let from = to.checked_sub_days(Days::new(2)).unwrap_or(to);
        Sample {
            from,
            to,
            source: "exec-check".to_owned(),
            timezone: "Asia/Shanghai".to_owned(),
            unit: "check/unit".to_owned(),
            state: Value::Null,
        }
    }
}

/// The outcome of one run of the program.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<String>,
    pub lines: usize,
    pub observations: usize,
    pub state: Option<Value>,
    pub stderr_lines: usize,
}

pub async fn run(command: &[String]) -> anyhow::Result<ExitCode> {
    let sample = Sample::new(&SystemClock);
    let report = check(command, &sample).await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: window {}..{}, {} stdout lines, {} observations, {}, {} stderr lines",
        command.join(" "),
        sample.from,
        sample.to,
        report.lines,
        report.observations,
        if report.state.is_some() {
            "resume state set"
        } else {
            "no resume state"
        },
        report.stderr_lines
    )?;
    for p in &report.problems {
        writeln!(out, "  {p}")?;
    }
    if report.problems.is_empty() {
        writeln!(out, "conforms to exec protocol {EXEC_PROTOCOL}")?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(
            out,
            "{} problems: does not conform to exec protocol {EXEC_PROTOCOL}",
            report.problems.len()
        )?;
        Ok(ExitCode::from(1))
    }
}

/// Runs `command` (program and arguments, `{from}` and `{to}` replaced) with
/// the sample's environment, and checks its exit code and output.
pub async fn check(command: &[String], sample: &Sample) -> anyhow::Result<Report> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| UserError("--check-exec needs a command".to_owned()))?;
    let (from, to) = (sample.from.to_string(), sample.to.to_string());
    let mut child = tokio::process::Command::new(program)
        .args(
            args.iter()
                .map(|a| a.replace("{from}", &from).replace("{to}", &to)),
        )
        .env("TALLY_FROM", &from)
        .env("TALLY_TO", &to)
        .env("TALLY_SOURCE", &sample.source)
        .env("TALLY_TIMEZONE", &sample.timezone)
        .env("TALLY_UNIT", &sample.unit)
        .env("TALLY_STATE", sample.state.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| UserError(format!("cannot run {program}: {e}")))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let (mut out_bytes, mut err_bytes) = (Vec::new(), Vec::new());
    let waited = tokio::time::timeout(TIMEOUT, async {
        let (a, b) = tokio::join!(
            stdout.read_to_end(&mut out_bytes),
            stderr.read_to_end(&mut err_bytes)
        );
        a?;
        b?;
        child.wait().await
    })
    .await;
    let mut report = Report::default();
    match waited {
        Err(_) => report.problems.push(format!(
            "still running after {}s: the plugin would kill it and fail the run",
            TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => report.problems.push(format!("cannot wait for it: {e}")),
        Ok(Ok(status)) if !status.success() => report.problems.push(format!(
            "{status}: a non-zero exit fails the run (nothing it printed is kept)"
        )),
        Ok(Ok(_)) => {}
    }
    let text = String::from_utf8_lossy(&out_bytes);
    report.stderr_lines = String::from_utf8_lossy(&err_bytes).lines().count();
    for (i, line) in text.lines().enumerate() {
        report.lines += 1;
        match check_line(line, sample) {
            Ok(Line::Blank) => {}
            Ok(Line::Observation) => report.observations += 1,
            Ok(Line::State(s)) => report.state = Some(s),
            Err(why) => report
                .problems
                .push(format!("stdout line {}: {why}", i + 1)),
        }
    }
    if String::from_utf8(out_bytes).is_err() {
        report
            .problems
            .push("stdout is not UTF-8 (invalid bytes are replaced)".to_owned());
    }
    Ok(report)
}

enum Line {
    Blank,
    Observation,
    State(Value),
}

const FIELDS: [&str; 5] = ["unit", "indicator", "entity", "day", "value"];

fn check_line(line: &str, sample: &Sample) -> Result<Line, String> {
    let text = line.trim();
    if text.is_empty() {
        return Ok(Line::Blank);
    }
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    let Value::Object(obj) = value else {
        return Err("not a JSON object".to_owned());
    };
    if obj.contains_key("state") {
        if obj.len() != 1 {
            return Err("a state line holds only `state`".to_owned());
        }
        return Ok(Line::State(obj["state"].clone()));
    }
    let mut why = Vec::new();
    for key in obj.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
        why.push(format!(
            "unknown field `{key}` (an observation has unit, indicator, entity, day, value)"
        ));
    }
    match obj.get("indicator") {
        None => why.push("missing field `indicator`".to_owned()),
        Some(Value::String(id)) if tally_plugin::check_indicator_id("indicator", id).is_ok() => {}
        Some(v) => why.push(format!(
            "indicator {v} is not an indicator id ([a-z][a-z0-9_]*)"
        )),
    }
    match obj.get("day") {
        None => why.push("missing field `day`".to_owned()),
        Some(Value::String(d)) => match NaiveDate::parse_from_str(d, "%Y-%m-%d") {
            Ok(day) if day < sample.from || day > sample.to => why.push(format!(
                "day {day} is outside the window {}..{} (TALLY_FROM..TALLY_TO)",
                sample.from, sample.to
            )),
            Ok(_) => {}
            Err(_) => why.push(format!("day {d:?} is not a date YYYY-MM-DD")),
        },
        Some(v) => why.push(format!("day {v} is not a string YYYY-MM-DD")),
    }
    match obj.get("value") {
        None => why.push("missing field `value`".to_owned()),
        Some(Value::Number(_)) => {}
        Some(v) => why.push(format!("value {v} is not a JSON number")),
    }
    for key in ["unit", "entity"] {
        match obj.get(key) {
            None | Some(Value::String(_)) => {}
            Some(Value::Null) if key == "unit" => {}
            Some(v) => why.push(format!("{key} {v} is not a string")),
        }
    }
    if why.is_empty() {
        Ok(Line::Observation)
    } else {
        Err(why.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sample {
        let d = |day| NaiveDate::from_ymd_opt(2026, 11, day).unwrap();
        Sample {
            from: d(25),
            to: d(27),
            source: "s".into(),
            timezone: "Asia/Shanghai".into(),
            unit: String::new(),
            state: Value::Null,
        }
    }

    fn shell(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn a_conforming_program_has_no_problems() {
        let script = r#"echo "{\"indicator\": \"posts\", \"day\": \"$TALLY_TO\", \"value\": 3}"
echo
echo '{"unit": "county/a", "indicator": "posts", "entity": "x", "day": "2026-11-25", "value": 1.5}'
echo '{"state": {"cursor": 9}}'
echo 'progress' >&2"#;
        let report = check(&shell(script), &sample()).await.unwrap();
        assert_eq!(report.problems, Vec::<String>::new());
        assert_eq!(
            (report.lines, report.observations, report.stderr_lines),
            (4, 2, 1)
        );
        assert_eq!(report.state, Some(serde_json::json!({"cursor": 9})));
    }

    #[tokio::test]
    async fn each_problem_is_named_by_its_line() {
        let script = r#"echo 'not json'
echo '{"indicator": "Posts", "day": "2026-12-01", "value": "3", "extra": 1}'
echo '{"state": 1, "day": "2026-11-25"}'
echo '[1]'
exit 3"#;
        let report = check(&shell(script), &sample()).await.unwrap();
        let p = &report.problems;
        assert_eq!(p.len(), 5, "{p:#?}");
        assert!(p[0].starts_with("exit status: 3"), "{}", p[0]);
        assert!(p[1].starts_with("stdout line 1: not JSON"), "{}", p[1]);
        assert_eq!(
            p[2],
            "stdout line 2: unknown field `extra` (an observation has unit, indicator, entity, day, value); \
             indicator \"Posts\" is not an indicator id ([a-z][a-z0-9_]*); \
             day 2026-12-01 is outside the window 2026-11-25..2026-11-27 (TALLY_FROM..TALLY_TO); \
             value \"3\" is not a JSON number"
        );
        assert_eq!(p[3], "stdout line 3: a state line holds only `state`");
        assert_eq!(p[4], "stdout line 4: not a JSON object");
    }

    #[tokio::test]
    async fn arguments_get_the_window() {
        let cmd = vec![
            "sh".into(),
            "-c".into(),
            r#"echo "{\"indicator\": \"a\", \"day\": \"$1\", \"value\": 1}""#.into(),
            "sh".into(),
            "{from}".into(),
        ];
        let report = check(&cmd, &sample()).await.unwrap();
        assert_eq!(report.problems, Vec::<String>::new());
        assert_eq!(report.observations, 1);
    }
}
