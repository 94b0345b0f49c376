//! `exec`: runs any program (a shell script, Python, a compiled tool) for the
//! window and reads the observations it prints, one JSON object a line.
//!
//! ```toml
//! [sources.settings]
//! command = "/srv/tally/scripts/meetings.sh"
//! args = ["--from", "{from}", "--to", "{to}"]
//! env = { OA_URL = "http://oa.example", OA_TOKEN = "${env:OA_TOKEN}" }
//! timeout = "30s"
//! indicators = ["meetings"]
//! workdir = "/srv/tally/scripts"
//! ```
//!
//! # Settings
//!
//! - `command` (required): the program. A path with a `/` (absolute, or
//!   relative to `workdir` when set, else to the daemon's working directory),
//!   or a bare name looked up in `PATH`.
//! - `args`: its arguments; `{from}` and `{to}` are replaced by the window's
//!   first and last day (`2026-11-27`).
//! - `env`: extra environment variables (values may be `${env:...}` secrets:
//!   they are never logged). The program also inherits the daemon's
//!   environment.
//! - `timeout`: how long the program may run, `500ms`, `30s`, `5m` or `1h30m`
//!   (the daemon's duration grammar);
//!   default `30s`. Then it is killed with everything it started.
//! - `indicators` (required): the indicator ids the program prints; a line
//!   with another indicator is skipped with a warning.
//! - `workdir`: the program's working directory; default the daemon's.
//!
//! # The program's side
//!
//! Its environment holds `TALLY_FROM` and `TALLY_TO` (the window's days,
//! both inclusive), `TALLY_SOURCE` (the source id), `TALLY_TIMEZONE` (the
//! IANA zone the days are in), `TALLY_UNIT` (the source's own unit, empty if it
//! has several) and `TALLY_STATE` (the resume state as JSON, `null` at first).
//!
//! It prints one observation per line on stdout:
//!
//! ```json
//! {"unit": "county/natres", "indicator": "meetings", "entity": "", "day": "2026-11-27", "value": 3}
//! ```
//!
//! `unit` (an id, display name or alias) may be left out for the source's own
//! unit, `entity` for none. A line `{"state": ...}` sets the resume state the
//! next run gets in `TALLY_STATE` (the last one printed wins). Blank lines are
//! ignored; a malformed line is a warning naming its number, the other lines
//! are kept. Each stderr line goes to the daemon's log, as a warning when it
//! starts with `warn` or `error`, else as information.
//!
//! A non-zero exit fails the run (an upstream error with the exit code and the
//! last stderr lines). So does printing more than 64 MiB on stdout: the
//! program is stopped there and nothing of its output is stored (a `data`
//! error; split the window with `tallyd collect --from --to`). The program runs in its own process group: on timeout,
//! when the daemon cancels the run, and after it exits, the whole group is
//! killed, so no grandchild outlives the run.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use chrono::NaiveDate;
use serde::Deserialize;
use tally_plugin::schemars::{self, JsonSchema};
use tally_plugin::{
    CollectRequest, CollectResponse, Description, Error, Host, Observation, Plugin,
    check_indicator_id, export_plugin,
};

/// `[sources.settings]` of an `exec` source.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The program: a path with a `/` (relative to `workdir` when set), or a name looked up in `PATH`.
    #[schemars(extend("examples" = ["/srv/tally/scripts/meetings.sh"]))]
    pub command: String,
    /// Its arguments; `{from}` and `{to}` become the window's first and last day.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables (values may be `${env:...}` secrets).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How long the program may run, a duration as the configuration writes them (`500ms`, `30s`, `5m`, `1h30m`; see "Durations" in configuration.md); default `30s`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// The indicator ids the program prints.
    #[schemars(extend("examples" = [["meetings"]]))]
    pub indicators: Vec<String>,
    /// The program's working directory; default the daemon's.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
}

/// A configured `exec` source.
pub struct Exec {
    command: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    timeout: Duration,
    indicators: Vec<String>,
    workdir: Option<PathBuf>,
}

/// More of the program's stdout than this fails the run: the program is
/// stopped as soon as its output passes it (a runaway program would fill
/// the disk), and a run that read only part of the output would store part
/// of the window as if it were all of it.
const MAX_OUTPUT: u64 = 64 << 20;
/// Stderr lines written to the log per run, and quoted in an error.
const MAX_LOG_LINES: usize = 200;
const ERROR_LINES: usize = 5;

impl Plugin for Exec {
    const NAME: &'static str = "exec";
    type Settings = Settings;

    fn describe() -> Description {
        Description::new("runs a program that prints observations as JSON lines")
            .settings_schema::<Settings>()
    }

    fn new(s: Settings, host: &Host) -> Result<Self, Error> {
        if s.command.trim().is_empty() {
            return Err(Error::settings("command: must name the program to run"));
        }
        if s.indicators.is_empty() {
            return Err(Error::settings(
                "indicators: must list the indicator ids the program prints",
            ));
        }
        for (i, id) in s.indicators.iter().enumerate() {
            check_indicator_id(&format!("indicators[{i}]"), id)?;
        }
        let timeout = match &s.timeout {
            None => Duration::from_secs(30),
            Some(t) => parse_duration(t).ok_or_else(|| {
                Error::settings(format!(
                    "timeout: `{t}` is not a duration such as `500ms`, `30s`, `5m` or `1h30m`"
                ))
            })?,
        };
        for name in s.env.keys() {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(Error::settings(format!(
                    "env: {name:?} is not an environment variable name"
                )));
            }
        }
        let mut command = PathBuf::from(&s.command);
        if let Some(dir) = &s.workdir {
            if !dir.is_dir() {
                host.warn(&format!(
                    "workdir: {} is not a directory (yet); runs fail until it is",
                    dir.display()
                ));
            }
            if command.is_relative() && s.command.contains('/') {
                command = dir.join(command);
            }
        }
        // A script on a share that is not mounted yet should not stop the daemon.
        if s.command.contains('/') && !command.is_file() {
            host.warn(&format!(
                "command: {} is not a file (yet); runs fail until it is",
                command.display()
            ));
        }
        Ok(Exec {
            command,
            args: s.args,
            env: s.env,
            timeout,
            indicators: s.indicators,
            workdir: s.workdir,
        })
    }

    fn emits(&self) -> Vec<String> {
        self.indicators.clone()
    }

    fn collect(&mut self, req: &CollectRequest, host: &Host) -> Result<CollectResponse, Error> {
        let program = self.command.display().to_string();
        let temp = |what: &str| {
            tempfile::tempfile().map_err(|e| {
                Error::internal(format!("cannot create a temporary file for {what}: {e}"))
            })
        };
        let (mut stdout, mut stderr) = (temp("stdout")?, temp("stderr")?);
        let redirect = |f: &std::fs::File| {
            f.try_clone()
                .map(Stdio::from)
                .map_err(|e| Error::internal(format!("cannot redirect {program}'s output: {e}")))
        };
        let (from, to) = (req.window.from.to_string(), req.window.to.to_string());
        let state = serde_json::to_string(&req.state)
            .map_err(|e| Error::internal(format!("cannot encode the resume state: {e}")))?;
        let mut cmd = Command::new(&self.command);
        cmd.args(
            self.args
                .iter()
                .map(|a| a.replace("{from}", &from).replace("{to}", &to)),
        )
        .envs(&self.env)
        .env("TALLY_FROM", &from)
        .env("TALLY_TO", &to)
        .env("TALLY_SOURCE", &req.source)
        .env("TALLY_TIMEZONE", &req.timezone)
        .env("TALLY_UNIT", req.default_unit.as_deref().unwrap_or(""))
        .env("TALLY_STATE", state)
        .stdin(Stdio::null())
        .stdout(redirect(&stdout)?)
        .stderr(redirect(&stderr)?);
        // Its own process group, so that killing the group reaches every
        // process it started, and a signal to the daemon's group not it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        if let Some(dir) = &self.workdir {
            cmd.current_dir(dir);
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::settings(format!("command: cannot run {program}: {e}")))?;
        // Our copies of the files' handles went to the child with `cmd`.
        drop(cmd);

        let ended = self.wait(child, &stdout, host);
        let err_lines = read_lines(&mut stderr, MAX_OUTPUT)
            .map_err(|e| Error::internal(format!("cannot read {program}'s stderr: {e}")))?;
        log_stderr(&err_lines, host);
        let last = || last_lines(&err_lines);
        let status = match ended {
            Ended::Exited(status) => status,
            Ended::TimedOut => {
                return Err(Error::upstream(format!(
                    "{program}: timed out after {}; killed it and the processes it started{}",
                    show_duration(self.timeout),
                    last()
                )));
            }
            Ended::TooMuchOutput => {
                return Err(too_much_output(&program));
            }
            Ended::Cancelled => {
                return Err(Error::upstream(format!(
                    "{program}: the daemon cancelled the run; killed it and the processes it started"
                )));
            }
            Ended::Failed(e) => {
                return Err(Error::internal(format!(
                    "{program}: cannot wait for it: {e}"
                )));
            }
        };
        if !status.success() {
            let how = match (
                status.code(),
                std::os::unix::process::ExitStatusExt::signal(&status),
            ) {
                (Some(code), _) => format!("exited with code {code}"),
                (None, Some(signal)) => format!("was killed by signal {signal}"),
                (None, None) => format!("failed ({status})"),
            };
            return Err(Error::upstream(format!("{program}: {how}{}", last())));
        }

        // It may have passed the limit between the last look and its exit.
        if output_len(&stdout) > MAX_OUTPUT {
            return Err(too_much_output(&program));
        }
        let out_lines = read_lines(&mut stdout, MAX_OUTPUT)
            .map_err(|e| Error::internal(format!("cannot read {program}'s stdout: {e}")))?;
        let mut out = CollectResponse::default();
        for (i, line) in out_lines.iter().enumerate() {
            self.read_line(req, i + 1, line, &mut out);
        }
        host.debug(&format!(
            "{program}: {} lines, {} observations",
            out_lines.len(),
            out.observations.len()
        ));
        Ok(out)
    }
}

/// How waiting for the program ended.
enum Ended {
    Exited(ExitStatus),
    TimedOut,
    /// Its stdout passed [`MAX_OUTPUT`].
    TooMuchOutput,
    Cancelled,
    Failed(std::io::Error),
}

/// One observation line, as the program prints it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default)]
    unit: Option<String>,
    indicator: String,
    #[serde(default)]
    entity: String,
    day: NaiveDate,
    value: f64,
}

impl Exec {
    /// Polls the program until it exits, the timeout passes, its output
    /// passes [`MAX_OUTPUT`] or the daemon cancels the run; kills its
    /// process group in every case.
    fn wait(&self, mut child: Child, stdout: &std::fs::File, host: &Host) -> Ended {
        // The timeout is about a real process's real time, and a plugin runs
        // no tokio whose clock could be paused: `Host::now` is fixed in tests
        // and would never let a timeout pass.
        #[allow(clippy::disallowed_methods)]
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(5);
        let ended = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ended::Exited(status),
                Ok(None) => {}
                Err(e) => break Ended::Failed(e),
            }
            if host.cancelled() {
                break Ended::Cancelled;
            }
            if output_len(stdout) > MAX_OUTPUT {
                break Ended::TooMuchOutput;
            }
            if started.elapsed() >= self.timeout {
                break Ended::TimedOut;
            }
            std::thread::sleep(pause.min(self.timeout.saturating_sub(started.elapsed())));
            pause = (pause * 2).min(Duration::from_millis(100));
        };
        // Until it is reaped, the child's pid (the group's id) cannot be
        // reused, so the group is killed before `wait` when it still runs.
        // After a normal exit, the group holds whatever the program left
        // running in the background.
        kill_group(child.id());
        if !matches!(ended, Ended::Exited(_)) {
            if let Err(e) = child.kill() {
                host.debug(&format!("killing {}: {e}", self.command.display()));
            }
            let _ = child.wait();
        }
        ended
    }

    /// Reads one stdout line into `out`: an observation, a state, or a warning.
    fn read_line(&self, req: &CollectRequest, n: usize, line: &str, out: &mut CollectResponse) {
        let text = line.trim();
        if text.is_empty() {
            return;
        }
        let bad = |why: &str| format!("stdout line {n}: {why}: {}; line skipped", snippet(text));
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return out.warn(bad(&format!("not JSON ({e})"))),
        };
        if let Some(obj) = value.as_object()
            && obj.len() == 1
            && let Some(state) = obj.get("state")
        {
            out.state = Some(state.clone());
            return;
        }
        let l: Line = match serde_json::from_value(value) {
            Ok(l) => l,
            Err(e) => {
                let why = format!(
                    "not an observation ({e}; expected unit, indicator, entity, day, value)"
                );
                return out.warn(bad(&why));
            }
        };
        if !self.indicators.contains(&l.indicator) {
            let why = format!(
                "indicator `{}` is not in the indicators setting ({})",
                l.indicator,
                self.indicators.join(", ")
            );
            return out.warn(bad(&why));
        }
        if !req.window.contains(l.day) {
            let why = format!(
                "day {} is outside the window {}..{}",
                l.day, req.window.from, req.window.to
            );
            return out.warn(bad(&why));
        }
        let mut o = Observation::new(&l.indicator, l.day, l.value).entity(l.entity);
        if let Some(unit) = &l.unit {
            match req.resolve_unit(unit) {
                Some(id) => o.unit = Some(id.to_owned()),
                None => {
                    let why =
                        format!("unit `{unit}` is not a unit id, name or alias of this source");
                    return out.warn(bad(&why));
                }
            }
        }
        out.observations.push(o);
    }
}

/// Kills a process group with `kill(1)`: sending a signal to a group needs
/// `killpg`, which std does not offer, and this workspace allows no `unsafe`
/// to call libc; a crate for one call (nix, rustix) would not earn its place.
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// How much the program has written to an output file so far.
fn output_len(file: &std::fs::File) -> u64 {
    file.metadata().map(|m| m.len()).unwrap_or(0)
}

fn too_much_output(program: &str) -> Error {
    Error::data(format!(
        "{program}: printed more than {} MiB on stdout; stopped it and stored nothing of the run (collect a shorter window, e.g. tallyd collect --from --to)",
        MAX_OUTPUT >> 20
    ))
}

/// The lines of an output file (invalid UTF-8 replaced), up to `limit` bytes.
fn read_lines(file: &mut std::fs::File, limit: u64) -> std::io::Result<Vec<String>> {
    file.seek(SeekFrom::Start(0))?;
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .map(str::to_owned)
        .collect())
}

fn log_stderr(lines: &[String], host: &Host) {
    for line in lines.iter().take(MAX_LOG_LINES) {
        let lower = line.trim_start().to_lowercase();
        if lower.starts_with("warn") || lower.starts_with("error") {
            host.warn(line);
        } else {
            host.info(line);
        }
    }
    if lines.len() > MAX_LOG_LINES {
        host.warn(&format!(
            "{} more stderr lines not logged",
            lines.len() - MAX_LOG_LINES
        ));
    }
}

/// `; last stderr lines: a | b` for an error message, or nothing.
fn last_lines(lines: &[String]) -> String {
    let shown: Vec<&str> = lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    if shown.is_empty() {
        return "; no stderr output".to_owned();
    }
    let tail = &shown[shown.len().saturating_sub(ERROR_LINES)..];
    format!("; last stderr lines: {}", tail.join(" | "))
}

/// The start of a line for a message, in backticks. Not `{:?}`: the line may
/// hold a secret, and the daemon's redactor finds a secret written as it is
/// more surely than escaped; only control characters are escaped, so that the
/// message stays on one line.
fn snippet(text: &str) -> String {
    const MAX: usize = 60;
    let shown: String = text
        .chars()
        .take(MAX)
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect();
    if text.chars().count() <= MAX {
        format!("`{shown}`")
    } else {
        format!("`{shown}...`")
    }
}

/// A duration in `humantime`'s grammar, as the daemon's configuration reads
/// its own (`500ms`, `30s`, `5m`, `1h30m`, `1d`); more than zero.
fn parse_duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text.trim())
        .ok()
        .filter(|d| !d.is_zero())
}

fn show_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

export_plugin!(Exec);

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tally_plugin::{HttpRequest, HttpResponse, Level, LocalHost, Window};

    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 5m "), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        // The configuration's forms: several units, days, fractions.
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        for bad in ["0s", "30", "s", "-1s", "5x", ""] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(show_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(show_duration(Duration::from_secs(30)), "30s");
    }

    /// A daemon that has given up on the run from the start.
    struct Cancelled;

    impl LocalHost for Cancelled {
        fn log(&self, _: Level, _: &str) {}
        fn now(&self) -> chrono::DateTime<chrono::Utc> {
            chrono::DateTime::UNIX_EPOCH
        }
        fn cancelled(&self) -> bool {
            true
        }
        fn http(&self, _: &HttpRequest) -> Result<HttpResponse, Error> {
            Err(Error::internal("no http here"))
        }
    }

    #[test]
    fn a_cancelled_run_kills_the_program() {
        let host = Host::local(Arc::new(Cancelled));
        let settings = Settings {
            command: "sleep".into(),
            args: vec!["30".into()],
            env: BTreeMap::new(),
            timeout: Some("1h".into()),
            indicators: vec!["meetings".into()],
            workdir: None,
        };
        let mut exec = Exec::new(settings, &host).unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        let req = CollectRequest::new("s", Window::new(day, day));
        let e = exec.collect(&req, &host).unwrap_err();
        assert_eq!(
            e.message,
            "sleep: the daemon cancelled the run; killed it and the processes it started"
        );
    }
}
