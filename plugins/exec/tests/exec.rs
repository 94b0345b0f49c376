//! The `exec` plugin running small `#!/bin/sh` scripts: observations, the
//! environment, malformed lines, failures, timeouts and the resume state.
//!
//! The scripts run as `/bin/sh script`, not as executables: a test thread
//! writing an executable while another forks may make `exec` fail with "text
//! file busy". The integration test runs a script directly.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde_json::{Value, json};
use tally_exec::Exec;
use tally_plugin::testkit::{Harness, TestHost};
use tally_plugin::{CollectRequest, CollectResponse, Error, ErrorKind, Level, UnitRef, Window};

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn request(state: Option<Value>) -> CollectRequest {
    let mut req = CollectRequest::new(
        "natres-meetings",
        Window::new(date(2026, 11, 25), date(2026, 11, 27)),
    );
    req.units = vec![
        UnitRef {
            id: "county/natres".into(),
            name: "自然资源局".into(),
            aliases: vec!["某县自然资源局".into()],
        },
        UnitRef {
            id: "county/natres/survey".into(),
            name: "测绘队".into(),
            aliases: vec![],
        },
    ];
    req.default_unit = Some("county/natres".into());
    req.state = state;
    req
}

fn script(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("collect.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    path
}

/// Settings running `sh script args...`, with more settings merged in.
fn settings(script: &Path, args: &[&str], extra: Value) -> Value {
    let mut all: Vec<Value> = vec![json!(script)];
    all.extend(args.iter().map(|a| json!(a)));
    let mut s = json!({"command": "/bin/sh", "args": all, "indicators": ["meetings", "trainings"]});
    if let (Some(s), Some(e)) = (s.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    s
}

fn run(settings: Value, req: &CollectRequest) -> (Result<CollectResponse, Error>, TestHost) {
    let mut p = Harness::<Exec>::create(settings, TestHost::new()).unwrap();
    let out = p.collect(req);
    (out, p.host().clone())
}

use tally_plugin::testkit::observation_lines as lines;

#[test]
fn prints_observations_for_the_window_from_arguments_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let body = r#"
echo "collecting $TALLY_SOURCE $TALLY_FROM..$TALLY_TO in $TALLY_TIMEZONE for $TALLY_UNIT" >&2
echo "Warning: the OA export of 测绘队 is late" >&2
printf '{"indicator": "meetings", "day": "%s", "value": 3}\n' "$TALLY_TO"
printf '{"unit": "某县自然资源局", "indicator": "trainings", "entity": "%s", "day": "%s", "value": 1.5}\n' "$GREETING" "$1"
echo ''
printf '{"unit": "county/natres/survey", "indicator": "meetings", "day": "%s", "value": 2}\n' "$2"
printf '{"indicator": "meetings", "entity": "%s", "day": "2026-11-26", "value": 1}\n' "$(basename "$(pwd)")"
"#;
    let path = script(dir.path(), body);
    let workdir = dir.path().join("会议");
    std::fs::create_dir(&workdir).unwrap();
    let s = settings(
        &path,
        &["{from}", "{to}"],
        json!({"env": {"GREETING": "张三"}, "workdir": workdir, "timeout": "20s"}),
    );
    let (out, host) = run(s, &request(None));
    let out = out.unwrap();
    assert_eq!(out.warnings, Vec::<String>::new());
    assert_eq!(
        lines(&out),
        [
            "- meetings - 2026-11-27 3",
            "county/natres trainings 张三 2026-11-25 1.5",
            "county/natres/survey meetings - 2026-11-27 2",
            "- meetings 会议 2026-11-26 1",
        ]
    );
    assert_eq!(out.state, None);
    let logs = host.logs();
    assert!(
        logs.contains(&(
            Level::Info,
            "collecting natres-meetings 2026-11-25..2026-11-27 in Asia/Shanghai for county/natres"
                .into()
        )),
        "{logs:?}"
    );
    assert!(
        logs.contains(&(
            Level::Warn,
            "Warning: the OA export of 测绘队 is late".into()
        )),
        "{logs:?}"
    );
}

#[test]
fn malformed_lines_are_warnings_and_the_others_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let body = r#"
echo '{"indicator": "meetings", "day": "2026-11-25", "value": 1}'
echo 'meetings 2026-11-25 2'
echo '{"indicator": "meetings", "day": "2026-11-25"}'
echo '{"indicator": "posts", "day": "2026-11-25", "value": 4}'
echo '{"unit": "教育局", "indicator": "meetings", "day": "2026-11-25", "value": 5}'
echo '{"indicator": "meetings", "day": "2026-10-31", "value": 6}'
echo '{"indicator": "meetings", "day": "2026-11-31", "value": 7}'
echo '{"indicator": "meetings", "day": "2026-11-26", "value": "8"}'
echo '{"indicator": "trainings", "day": "2026-11-27", "value": 9, "entity": "李四"}'
"#;
    let (out, _) = run(
        settings(&script(dir.path(), body), &[], json!({})),
        &request(None),
    );
    let out = out.unwrap();
    assert_eq!(
        lines(&out),
        ["- meetings - 2026-11-25 1", "- trainings 李四 2026-11-27 9"]
    );
    let w = &out.warnings;
    assert_eq!(w.len(), 7, "{w:#?}");
    assert!(w[0].starts_with("stdout line 2: not JSON (expected value at line 1 column 1): `meetings 2026-11-25 2`; line skipped"), "{}", w[0]);
    assert!(
        w[1].starts_with("stdout line 3: not an observation (missing field `value`"),
        "{}",
        w[1]
    );
    assert_eq!(
        w[2],
        "stdout line 4: indicator `posts` is not in the indicators setting (meetings, trainings): \
         `{\"indicator\": \"posts\", \"day\": \"2026-11-25\", \"value\": 4}`; line skipped"
    );
    assert!(
        w[3].starts_with(
            "stdout line 5: unit `教育局` is not a unit id, name or alias of this source: "
        ),
        "{}",
        w[3]
    );
    assert!(
        w[4].starts_with(
            "stdout line 6: day 2026-10-31 is outside the window 2026-11-25..2026-11-27: "
        ),
        "{}",
        w[4]
    );
    assert!(
        w[5].starts_with("stdout line 7: not an observation (input is out of range"),
        "{}",
        w[5]
    );
    assert!(
        w[6].starts_with(
            "stdout line 8: not an observation (invalid type: string \"8\", expected f64"
        ),
        "{}",
        w[6]
    );
}

#[test]
fn a_non_zero_exit_fails_the_run_with_the_last_stderr_lines() {
    let dir = tempfile::tempdir().unwrap();
    let body = r#"
echo '{"indicator": "meetings", "day": "2026-11-25", "value": 1}'
for i in 1 2 3 4 5 6; do echo "step $i" >&2; done
echo "error: OA answered 503" >&2
exit 3
"#;
    let (out, host) = run(
        settings(&script(dir.path(), body), &[], json!({})),
        &request(None),
    );
    let e = out.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Upstream);
    assert_eq!(
        e.message,
        "/bin/sh: exited with code 3; last stderr lines: step 3 | step 4 | step 5 | step 6 | error: OA answered 503"
    );
    assert!(
        host.logs()
            .contains(&(Level::Warn, "error: OA answered 503".into()))
    );

    let e = run(
        json!({"command": dir.path().join("missing.sh"), "indicators": ["meetings"]}),
        &request(None),
    )
    .0
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Settings);
    assert!(
        e.message.starts_with("command: cannot run "),
        "{}",
        e.message
    );
}

/// A process that is gone, or dead and waiting to be reaped by whoever adopted it.
fn is_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
            state == Some("Z") || state == Some("X")
        }
    }
}

#[test]
fn a_timeout_kills_the_program_and_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let body = r#"
echo '{"indicator": "meetings", "day": "2026-11-25", "value": 1}'
echo "waiting for the OA" >&2
sleep 120 &
echo $! > "$1"
wait
"#;
    let s = settings(
        &script(dir.path(), body),
        &[pidfile.to_str().unwrap()],
        json!({"timeout": "300ms"}),
    );
    let (out, _) = run(s, &request(None));
    let e = out.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Upstream);
    assert_eq!(
        e.message,
        "/bin/sh: timed out after 300ms; killed it and the processes it started; last stderr lines: waiting for the OA"
    );
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let pid = pid.trim();
    assert!(!pid.is_empty());
    // SIGKILL is delivered before `kill` returns; the wait is only for the
    // kernel to finish tearing the process down.
    let mut gone = false;
    for _ in 0..200 {
        if is_gone(pid) {
            gone = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(gone, "the grandchild {pid} still runs");
}

#[test]
fn background_processes_do_not_outlive_a_successful_run() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("leftover.pid");
    let body = r#"
sleep 120 &
echo $! > "$1"
echo '{"indicator": "meetings", "day": "2026-11-25", "value": 1}'
"#;
    let s = settings(
        &script(dir.path(), body),
        &[pidfile.to_str().unwrap()],
        json!({}),
    );
    let (out, _) = run(s, &request(None));
    assert_eq!(lines(&out.unwrap()), ["- meetings - 2026-11-25 1"]);
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let gone = (0..200).any(|_| {
        let g = is_gone(pid.trim());
        if !g {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        g
    });
    assert!(gone, "the background process {} still runs", pid.trim());
}

#[test]
fn the_state_goes_round() {
    let dir = tempfile::tempdir().unwrap();
    let body = r#"
printf '{"state": {"before": %s}}\n' "$TALLY_STATE"
echo '{"indicator": "meetings", "day": "2026-11-27", "value": 1}'
printf '{"state": {"previous": %s, "last_day": "%s"}}\n' "$TALLY_STATE" "$TALLY_TO"
"#;
    let path = script(dir.path(), body);
    let first = run(settings(&path, &[], json!({})), &request(None))
        .0
        .unwrap();
    assert_eq!(
        first.state,
        Some(json!({"previous": null, "last_day": "2026-11-27"}))
    );
    assert_eq!(first.observations.len(), 1);
    let second = run(
        settings(&path, &[], json!({})),
        &request(first.state.clone()),
    )
    .0
    .unwrap();
    assert_eq!(
        second.state,
        Some(
            json!({"previous": {"previous": null, "last_day": "2026-11-27"}, "last_day": "2026-11-27"})
        )
    );
}

#[test]
fn settings_are_checked() {
    let err = |s: Value| Harness::<Exec>::create(s, TestHost::new()).err().unwrap();
    let e = err(json!({"command": "/bin/true"}));
    assert_eq!(e.kind, ErrorKind::Settings);
    assert_eq!(e.message, "missing field `indicators`");
    let e = err(json!({"command": "/bin/true", "indicators": []}));
    assert_eq!(
        e.message,
        "indicators: must list the indicator ids the program prints"
    );
    let e = err(json!({"command": "/bin/true", "indicators": ["Meetings"]}));
    assert_eq!(
        e.message,
        "indicators[0]: \"Meetings\" is not an indicator id ([a-z][a-z0-9_]*)"
    );
    let e = err(json!({"command": "/bin/true", "indicators": ["meetings"], "timeout": "30"}));
    assert_eq!(
        e.message,
        "timeout: `30` is not a duration such as `500ms`, `30s`, `5m` or `1h30m`"
    );
    let e = err(json!({"command": "", "indicators": ["meetings"]}));
    assert_eq!(e.message, "command: must name the program to run");
    let e = err(json!({"command": "/bin/true", "indicators": ["meetings"], "cmd": "x"}));
    assert!(e.message.contains("unknown field `cmd`"), "{}", e.message);

    let ok = Harness::<Exec>::create(
        json!({"command": "true", "indicators": ["meetings", "trainings"]}),
        TestHost::new(),
    )
    .unwrap();
    assert_eq!(ok.emits(), ["meetings", "trainings"]);
}
