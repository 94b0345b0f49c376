//! The Grafana dashboard and the Prometheus rules of `config/`, against a real
//! Prometheus scraping a real `tally-demo`: every PromQL expression of
//! `config/grafana/tally.json` and `config/prometheus/tally-rules.yml`
//! evaluates, the dashboard's return data, and the rule files pass promtool
//! (including the unit tests of `tally-rules.test.yml`).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Datelike, TimeZone};
use serde_json::Value;
use tally_config::Config;

use crate::support::*;

/// Metrics the demo may not export: `tally_target_ratio` only exists for
/// units and indicators with targets, and `config/demo.toml` may configure
/// none. An expression reading one of these may come back empty, but only
/// while tallyd's own `/metrics` has no sample of it.
const MAY_BE_ABSENT: &[&str] = &["tally_target_ratio"];

/// The alerts that must stay quiet while every demo source succeeds.
const QUIET_ALERTS: &[&str] = &[
    "TallySourceDown",
    "TallySourceNotSucceeding",
    "TallyPortalColumnStale",
    "TallyScrapeFailing",
];

pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("crates/tallyd/ is inside the repository")
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// A child process killed when the test ends, however it ends; its output
/// goes to a file that failure messages quote.
pub(crate) struct Guard {
    child: Child,
    log: PathBuf,
}

impl Guard {
    pub(crate) fn spawn(cmd: &mut Command, log: PathBuf) -> Guard {
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        Guard { child, log }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails with the log if the process has exited.
    fn assert_running(&mut self, what: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{what} exited with {status}:\n{}", self.log());
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 200 ms until it gives a value, failing after `secs`
/// with `what` and the logs of `procs`.
pub(crate) fn wait_for<T>(
    what: &str,
    secs: u64,
    procs: &mut [(&str, &mut Guard)],
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        for (name, p) in procs.iter_mut() {
            p.assert_running(name);
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = procs
                .iter()
                .map(|(name, p)| format!("--- {name} ---\n{}", p.log()))
                .collect();
            panic!("timed out waiting for {what}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `application/x-www-form-urlencoded` for one value.
pub(crate) fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Runs an instant query: `Ok(result vector)` on success, `Err(answer)` when
/// Prometheus reports an error.
fn query(prom: &str, expr: &str) -> Result<Vec<Value>, String> {
    query_form(prom, &format!("query={}", form_encode(expr)))
}

/// [`query`] at `time` (unix seconds) instead of Prometheus's now.
pub(crate) fn query_at(prom: &str, expr: &str, time: f64) -> Result<Vec<Value>, String> {
    query_form(prom, &format!("query={}&time={time:.3}", form_encode(expr)))
}

fn query_form(prom: &str, form: &str) -> Result<Vec<Value>, String> {
    let (status, body) = request(
        "POST",
        &format!("{prom}/api/v1/query"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form,
    )
    .map_err(|e| format!("POST /api/v1/query: {e}"))?;
    let answer: Value =
        serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}: {body}"))?;
    if answer["status"] != "success" {
        return Err(format!("HTTP {status}: {answer}"));
    }
    Ok(answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// Runs promtool with arguments in `config/prometheus`, failing with its output.
pub(crate) fn promtool(promtool: &Path, args: &[&str]) {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(repo().join("config/prometheus"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every PromQL expression of a dashboard: its panels' targets (rows may nest
/// panels) and its query variables, as (where, expression) pairs.
pub(crate) fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel {title:?} has a target without expr"));
                let ref_id = target["refId"].as_str().unwrap_or("?");
                out.push((format!("panel {title:?} {ref_id}"), expr.to_owned()));
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] == "query" {
            let q = var["query"]["query"]
                .as_str()
                .or(var["query"].as_str())
                .unwrap_or_else(|| panic!("variable {} has no query", var["name"]));
            out.push((format!("variable {}", var["name"]), q.to_owned()));
        }
    }
    out
}

/// A dashboard expression as Grafana would send it: variables replaced by
/// what "All" and a one-hour range give, and `label_values(metric, label)`
/// (a Grafana function, not PromQL) by the query that lists the same values
/// once each, however many replicas export them.
pub(crate) fn as_promql(expr: &str) -> String {
    let expr = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("$unit", ".*")
        .replace("$indicator", ".*");
    // Any `$` left must be a regex group of label_replace ("$1"), not a
    // variable the substitution above missed.
    for (i, _) in expr.match_indices('$') {
        assert!(
            expr[i + 1..].starts_with(|c: char| c.is_ascii_digit()),
            "unknown dashboard variable in {expr}"
        );
    }
    match expr
        .trim()
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        Some(args) => {
            let (metric, label) = args.split_once(',').expect("label_values(metric, label)");
            format!("group by ({}) ({})", label.trim(), metric.trim())
        }
        None => expr,
    }
}

/// The longest gap between two firings of each source's schedule, over five
/// weeks from a Monday (or 5000 firings), in the configuration's time zone.
fn schedule_gaps(config_file: &str) -> BTreeMap<String, f64> {
    let path = repo().join(config_file);
    let text = std::fs::read_to_string(&path).unwrap();
    // Secrets only need to resolve to something (of a secret's least length,
    // 4 characters): schedules do not use them.
    let config = Config::parse(&text, &path, &|_| Some("xxxx".to_owned()))
        .unwrap_or_else(|e| panic!("{config_file}: {e}"));
    let tz = config.daemon.timezone;
    let start = tz.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap();
    assert_eq!(start.weekday(), chrono::Weekday::Mon);
    let end = start + chrono::Duration::days(35);
    config
        .sources
        .iter()
        .map(|source| {
            let firings: Vec<_> = source
                .schedule
                .after(&start)
                .take(5000)
                .take_while(|t| *t < end)
                .collect();
            let gap = firings
                .windows(2)
                .map(|w| (w[1] - w[0]).num_seconds())
                .max()
                .unwrap_or_else(|| panic!("{}: fewer than two runs in 5 weeks", source.id));
            (source.id.clone(), gap as f64)
        })
        .collect()
}

#[test]
fn dashboard_and_rules_against_prometheus() {
    let (Some(prometheus), Some(promtool_bin)) = (which("prometheus"), which("promtool")) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus and promtool are missing in CI: .ci/run must install Debian's prometheus package"
        );
        eprintln!(
            "prometheus or promtool not installed: skipping the dashboard and rules test (CI installs them)"
        );
        return;
    };
    bundled_plugin("tally_http_json");
    bundled_plugin("tally_csv_form");

    // The files as shipped, offline first.
    promtool(&promtool_bin, &["check", "rules", "tally-rules.yml"]);
    promtool(&promtool_bin, &["check", "config", "prometheus.yml"]);
    promtool(&promtool_bin, &["test", "rules", "tally-rules.test.yml"]);

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("config/grafana/tally.json")).unwrap(),
    )
    .expect("config/grafana/tally.json is JSON");
    assert_eq!(dashboard["uid"], "tally");
    assert_eq!(dashboard["title"], "tally 统计");
    let variables: BTreeMap<&str, &Value> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    for (name, query) in [
        ("unit", "label_values(tally_unit_info, unit)"),
        ("indicator", "label_values(tally_indicator_info, indicator)"),
    ] {
        let var = variables
            .get(name)
            .unwrap_or_else(|| panic!("no variable {name}"));
        assert_eq!(var["query"]["query"], query, "variable {name}");
        assert_eq!(var["multi"], true, "variable {name}");
        assert_eq!(var["includeAll"], true, "variable {name}");
        // "All" must be a regex matching every value, not a list Grafana
        // builds from the values it saw when the page loaded.
        assert_eq!(var["allValue"], ".*", "variable {name}");
    }

    let tmp = tempfile::tempdir().unwrap();

    // tally-demo: its own JSON API and forms, the real plugins.
    let tally_port = free_port();
    let tally = format!("http://127.0.0.1:{tally_port}");
    let mut demo = Guard::spawn(
        Command::new(tally_demo())
            .args(["--listen", &format!("127.0.0.1:{tally_port}")])
            .arg("--data-dir")
            .arg(tmp.path().join("demo"))
            .env_remove("TALLY_CONFIG")
            .env("RUST_LOG", "info"),
        tmp.path().join("demo.log"),
    );
    wait_for(
        "the demo's summary to show values",
        180,
        &mut [("tally-demo", &mut demo)],
        || {
            let now = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Shanghai);
            let period = format!("{}-Q{}", now.year(), (now.month() - 1) / 3 + 1);
            let (status, body) = get(&format!("{tally}/api/v1/summary?period={period}")).ok()?;
            let summary: Value = serde_json::from_str(&body).ok()?;
            // The forms give every unit at least one meeting a month.
            let county = summary["units"]
                .as_array()?
                .iter()
                .find(|u| u["id"] == "county")?;
            (status == 200 && county["values"]["meetings"]["value"].as_f64()? > 0.0).then_some(())
        },
    );
    let demo_sources = schedule_gaps("config/demo.toml");
    wait_for(
        "every demo source to finish a run",
        120,
        &mut [("tally-demo", &mut demo)],
        || {
            let (_, body) = get(&format!("{tally}/metrics")).ok()?;
            let samples = parse_metrics(&body);
            demo_sources
                .keys()
                .all(|s| find_sample(&samples, "tally_source_up", &[("source", s)]).is_some())
                .then_some(())
        },
    );

    // Prometheus scraping it every second, with the rules as shipped.
    let prom_port = free_port();
    let prom = format!("http://127.0.0.1:{prom_port}");
    let rules = repo().join("config/prometheus/tally-rules.yml");
    let prom_config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - '{}'\n\
             scrape_configs:\n  - job_name: tally\n    static_configs:\n      - targets: ['127.0.0.1:{tally_port}']\n",
            rules.display()
        ),
    )
    .unwrap();
    let mut server = Guard::spawn(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}")),
        tmp.path().join("prometheus.log"),
    );
    let mut procs = [("tally-demo", &mut demo), ("prometheus", &mut server)];
    wait_for("Prometheus to scrape tallyd", 120, &mut procs, || {
        let up = query(&prom, "up{job=\"tally\"}").ok()?;
        (up.len() == 1 && up[0]["value"][1] == "1").then_some(())
    });

    // Every dashboard expression evaluates and, but for MAY_BE_ABSENT, has data.
    let (_, exposition) = get(&format!("{tally}/metrics")).unwrap();
    let exported: Vec<String> = parse_metrics(&exposition)
        .into_iter()
        .map(|s| s.name)
        .collect();
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 10, "too few expressions found: {exprs:?}");
    for (place, expr) in &exprs {
        let promql = as_promql(expr);
        let may_be_empty = MAY_BE_ABSENT
            .iter()
            .any(|m| promql.contains(m) && !exported.iter().any(|e| e == m));
        let result = wait_for(
            &format!("data for the dashboard's {place}: {promql}"),
            60,
            &mut procs,
            || match query(&prom, &promql) {
                Err(e) => panic!("the dashboard's {place} does not evaluate: {e}\n{promql}"),
                Ok(r) if r.is_empty() && !may_be_empty => None,
                Ok(r) => Some(r),
            },
        );
        // The joins give units their names.
        if promql.contains("group_left(name)") && !result.is_empty() {
            let county = result
                .iter()
                .find(|s| s["metric"]["unit"] == "county")
                .unwrap_or_else(|| panic!("{place}: no sample for unit county: {result:?}"));
            assert_eq!(county["metric"]["name"], "某县", "{place}");
        }
    }

    // The rules: all loaded, evaluated without error, recording rules with data.
    let loaded = wait_for("every rule to be evaluated", 60, &mut procs, || {
        let (_, body) = get(&format!("{prom}/api/v1/rules")).ok()?;
        let answer: Value = serde_json::from_str(&body).ok()?;
        let rules: Vec<Value> = answer["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        (!rules.is_empty() && rules.iter().all(|r| r["health"] != "unknown")).then_some(rules)
    });
    let names: Vec<&str> = loaded.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "tally:source_schedule_interval_seconds",
            "tally:quarter_final_two_weeks",
            "tally:portal_days_since_update:own",
            "TallySourceDown",
            "TallySourceNotSucceeding",
            "TallyUnitBelowTarget",
            "TallyPortalColumnStale",
            "TallyScrapeFailing",
        ]
    );
    for rule in &loaded {
        let name = rule["name"].as_str().unwrap();
        assert_eq!(rule["health"], "ok", "rule {name}: {rule}");
        let expr = rule["query"].as_str().unwrap();
        let result = query(&prom, expr)
            .unwrap_or_else(|e| panic!("rule {name} does not evaluate: {e}\n{expr}"));
        if rule["type"] == "recording" {
            assert!(!result.is_empty(), "recording rule {name} has no data");
        } else if QUIET_ALERTS.contains(&name) {
            assert!(
                result.is_empty(),
                "alert {name} fires while every demo source succeeds: {result:?}"
            );
        }
    }

    // tallyd exports each source's longest gap between runs, computed from
    // the schedules of config/demo.toml, and the rules record it.
    let expected = demo_sources;
    let recorded: BTreeMap<String, f64> = query(&prom, "tally:source_schedule_interval_seconds")
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["metric"]["source"].as_str().unwrap().to_owned(),
                s["value"][1].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        recorded, expected,
        "tally_source_schedule_interval_seconds is out of step with the schedules of config/demo.toml"
    );
    let unlisted = query(
        &prom,
        "tally_source_up unless on(source) tally:source_schedule_interval_seconds",
    )
    .unwrap();
    assert!(
        unlisted.is_empty(),
        "sources without a schedule interval: {unlisted:?}"
    );
}
