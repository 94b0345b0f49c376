use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::*;

fn value(v: f64) -> String {
    let mut out = String::new();
    push_value(&mut out, v);
    out
}

#[test]
fn values_are_written_as_prometheus_reads_them() {
    let cases = [
        (7.0, "7"),
        (0.0, "0"),
        (-0.0, "0"),
        (-3.0, "-3"),
        (0.5, "0.5"),
        (1234567.25, "1234567.25"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1_700_000_000.0, "1700000000"),
        (9_007_199_254_740_991.0, "9007199254740991"),
        (9_007_199_254_740_992.0, "9007199254740992"),
        (1.5e16, "1.5e16"),
        (1e300, "1e300"),
        (0.0001, "0.0001"),
        (1e-7, "1e-7"),
        (-2.5e-9, "-2.5e-9"),
        (f64::NAN, "NaN"),
        (f64::INFINITY, "+Inf"),
        (f64::NEG_INFINITY, "-Inf"),
    ];
    for (v, text) in cases {
        assert_eq!(value(v), text, "{v:?}");
        if v.is_finite() {
            assert_eq!(text.parse::<f64>().unwrap(), v, "{text} reads back");
        }
    }
    for n in [0, 9, 10, 4_294_967_296, u64::MAX] {
        let mut out = String::new();
        push_u64(&mut out, n);
        assert_eq!(out, n.to_string());
    }
}

#[test]
fn label_values_escape_backslash_quote_and_line_feed_only() {
    assert_eq!(escaped("county/natres"), "county/natres");
    assert_eq!(escaped(r#"a\b"c"#), r#"a\\b\"c"#);
    assert_eq!(escaped("two\nlines"), r"two\nlines");
    assert_eq!(escaped("某县\t自然资源局"), "某县\t自然资源局");

    let mut text = IndicatorText::new();
    text.unit_info([("county/a", "Bureau \"A\"\nC:\\", "county")]);
    assert_eq!(
        text.out,
        "# HELP tally_unit_info A unit of the organisation tree.\n\
         # TYPE tally_unit_info gauge\n\
         tally_unit_info{name=\"Bureau \\\"A\\\"\\nC:\\\\\",parent=\"county\",unit=\"county/a\"} 1\n"
    );
}

/// One source through its life: registered, then a success of 0.02 s with
/// 3 observations and an error of 0.7 s.
fn one_source() -> Metrics {
    let metrics = Metrics::new();
    metrics.register_source("posts", "http_json");
    metrics.set_schedule_interval("posts", 10.0);
    metrics.run_finished(
        "posts",
        "http_json",
        RunResult::Success,
        None,
        0.02,
        3,
        1.7e9,
    );
    metrics.run_finished(
        "posts",
        "http_json",
        RunResult::Error,
        Some(ErrorKind::Upstream),
        0.7,
        0,
        1.7e9 + 10.0,
    );
    metrics.run_skipped("posts");
    metrics
}

/// `[metrics]` with every optional per-source series.
fn detailed() -> tally_config::MetricsConfig {
    tally_config::MetricsConfig {
        source_duration_histogram: true,
        source_error_kinds: true,
        ..Default::default()
    }
}

/// The per-source families of `text`.
fn source_part(text: &str) -> &str {
    let start = text.find("# HELP tally_source_up").unwrap();
    let end = text
        .find("# HELP tally_http_requests_total")
        .unwrap_or(text.len());
    &text[start..end]
}

#[test]
fn per_source_families_by_default_keep_to_the_budget() {
    let text = one_source().encode();
    let expected = r#"# HELP tally_source_up 1 if the source's last run succeeded.
# TYPE tally_source_up gauge
tally_source_up{plugin="http_json",source="posts"} 0
# HELP tally_source_runs_total Collection runs by result; runs with result error also by the kind of error.
# TYPE tally_source_runs_total counter
tally_source_runs_total{plugin="http_json",result="success",source="posts"} 1
tally_source_runs_total{plugin="http_json",result="error",source="posts"} 1
tally_source_runs_total{plugin="http_json",result="timeout",source="posts"} 0
tally_source_runs_total{plugin="http_json",result="panic",source="posts"} 0
tally_source_runs_total{plugin="http_json",result="crash",source="posts"} 0
# HELP tally_source_last_success_timestamp_seconds Unix time of the source's last successful run.
# TYPE tally_source_last_success_timestamp_seconds gauge
tally_source_last_success_timestamp_seconds{source="posts"} 1700000000
# HELP tally_source_run_duration_seconds Duration of collection runs.
# TYPE tally_source_run_duration_seconds summary
tally_source_run_duration_seconds_sum{source="posts"} 0.72
tally_source_run_duration_seconds_count{source="posts"} 2
# HELP tally_observations_written_total Observations written to the store.
# TYPE tally_observations_written_total counter
tally_observations_written_total{source="posts"} 3
# HELP tally_source_skipped_runs_total Scheduled runs skipped because the previous run of the source was still going.
# TYPE tally_source_skipped_runs_total counter
tally_source_skipped_runs_total{source="posts"} 1
# HELP tally_source_backoff_skips_total Scheduled runs skipped because the source is backing off after consecutive failed runs.
# TYPE tally_source_backoff_skips_total counter
tally_source_backoff_skips_total{source="posts"} 0
# HELP tally_source_missed_runs_total Times a source was caught up because its schedule should have fired but did not (daemon down, clock jump, suspend).
# TYPE tally_source_missed_runs_total counter
tally_source_missed_runs_total{source="posts"} 0
# HELP tally_source_schedule_interval_seconds The longest gap between two scheduled runs of the source: a source whose last success is older than twice this is stale.
# TYPE tally_source_schedule_interval_seconds gauge
tally_source_schedule_interval_seconds{source="posts"} 10
"#;
    assert_eq!(source_part(&text), expected);
    // The README's budget: at most 15 series per source with the defaults,
    // so 10,000 sources stay under 150,000.
    let series = expected.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(series, 14);
    assert!(series <= SOURCE_SERIES_BUDGET);
}

#[test]
fn per_source_families_are_written_in_full() {
    let metrics = one_source();
    metrics.configure(&detailed());
    let text = metrics.encode();
    let start = text.find("# HELP tally_source_up").unwrap();
    let end = text
        .find("# HELP tally_http_requests_total")
        .unwrap_or(text.len());
    let expected = r#"# HELP tally_source_up 1 if the source's last run succeeded.
# TYPE tally_source_up gauge
tally_source_up{plugin="http_json",source="posts"} 0
# HELP tally_source_runs_total Collection runs by result; runs with result error also by the kind of error.
# TYPE tally_source_runs_total counter
tally_source_runs_total{plugin="http_json",result="success",source="posts"} 1
tally_source_runs_total{kind="settings",plugin="http_json",result="error",source="posts"} 0
tally_source_runs_total{kind="auth",plugin="http_json",result="error",source="posts"} 0
tally_source_runs_total{kind="upstream",plugin="http_json",result="error",source="posts"} 1
tally_source_runs_total{kind="rate_limited",plugin="http_json",result="error",source="posts"} 0
tally_source_runs_total{kind="data",plugin="http_json",result="error",source="posts"} 0
tally_source_runs_total{kind="internal",plugin="http_json",result="error",source="posts"} 0
tally_source_runs_total{kind="unknown",plugin="http_json",result="error",source="posts"} 0
tally_source_runs_total{kind="protocol",plugin="http_json",result="error",source="posts"} 0
tally_source_runs_total{plugin="http_json",result="timeout",source="posts"} 0
tally_source_runs_total{plugin="http_json",result="panic",source="posts"} 0
tally_source_runs_total{plugin="http_json",result="crash",source="posts"} 0
# HELP tally_source_last_success_timestamp_seconds Unix time of the source's last successful run.
# TYPE tally_source_last_success_timestamp_seconds gauge
tally_source_last_success_timestamp_seconds{source="posts"} 1700000000
# HELP tally_source_run_duration_seconds Duration of collection runs.
# TYPE tally_source_run_duration_seconds histogram
tally_source_run_duration_seconds_bucket{source="posts",le="0.01"} 0
tally_source_run_duration_seconds_bucket{source="posts",le="0.05"} 1
tally_source_run_duration_seconds_bucket{source="posts",le="0.1"} 1
tally_source_run_duration_seconds_bucket{source="posts",le="0.5"} 1
tally_source_run_duration_seconds_bucket{source="posts",le="1"} 2
tally_source_run_duration_seconds_bucket{source="posts",le="5"} 2
tally_source_run_duration_seconds_bucket{source="posts",le="10"} 2
tally_source_run_duration_seconds_bucket{source="posts",le="30"} 2
tally_source_run_duration_seconds_bucket{source="posts",le="60"} 2
tally_source_run_duration_seconds_bucket{source="posts",le="300"} 2
tally_source_run_duration_seconds_bucket{source="posts",le="+Inf"} 2
tally_source_run_duration_seconds_sum{source="posts"} 0.72
tally_source_run_duration_seconds_count{source="posts"} 2
# HELP tally_observations_written_total Observations written to the store.
# TYPE tally_observations_written_total counter
tally_observations_written_total{source="posts"} 3
# HELP tally_source_skipped_runs_total Scheduled runs skipped because the previous run of the source was still going.
# TYPE tally_source_skipped_runs_total counter
tally_source_skipped_runs_total{source="posts"} 1
# HELP tally_source_backoff_skips_total Scheduled runs skipped because the source is backing off after consecutive failed runs.
# TYPE tally_source_backoff_skips_total counter
tally_source_backoff_skips_total{source="posts"} 0
# HELP tally_source_missed_runs_total Times a source was caught up because its schedule should have fired but did not (daemon down, clock jump, suspend).
# TYPE tally_source_missed_runs_total counter
tally_source_missed_runs_total{source="posts"} 0
# HELP tally_source_schedule_interval_seconds The longest gap between two scheduled runs of the source: a source whose last success is older than twice this is stale.
# TYPE tally_source_schedule_interval_seconds gauge
tally_source_schedule_interval_seconds{source="posts"} 10
"#;
    assert_eq!(&text[start..end], expected);
    // Back to the defaults: every source's lines are written again.
    metrics.configure(&Default::default());
    assert!(!metrics.encode().contains("_bucket"));
}

#[test]
fn a_slow_run_counts_only_in_the_inf_bucket() {
    let metrics = Metrics::new();
    metrics.configure(&detailed());
    metrics.register_source("s", "p");
    metrics.run_finished("s", "p", RunResult::Timeout, None, 400.0, 0, 0.0);
    let text = metrics.encode();
    assert!(text.contains("tally_source_run_duration_seconds_bucket{source=\"s\",le=\"300\"} 0\n"));
    assert!(
        text.contains("tally_source_run_duration_seconds_bucket{source=\"s\",le=\"+Inf\"} 1\n")
    );
    // A source that never succeeded has no last success, and up says 0.
    assert!(!text.contains("tally_source_last_success_timestamp_seconds{"));
    assert!(text.contains("tally_source_up{plugin=\"p\",source=\"s\"} 0\n"));
}

#[test]
fn a_source_before_its_first_run_shows_zeros_but_no_up() {
    let metrics = Metrics::new();
    metrics.register_source("s", "p");
    let text = metrics.encode();
    assert!(!text.contains("tally_source_up"), "{text}");
    // Every result from the start, errors in one series by default.
    for result in RunResult::ALL {
        let series = format!(
            "tally_source_runs_total{{plugin=\"p\",result=\"{}\",source=\"s\"}} 0\n",
            result.as_str()
        );
        assert!(text.contains(&series), "{series}");
    }
    metrics.configure(&detailed());
    let text = metrics.encode();
    for result in RunResult::ALL {
        if result == RunResult::Error {
            continue;
        }
        let series = format!(
            "tally_source_runs_total{{plugin=\"p\",result=\"{}\",source=\"s\"}} 0\n",
            result.as_str()
        );
        assert!(text.contains(&series), "{series}");
    }
    // Errors by kind, every kind from the start: a bounded set.
    for kind in ERROR_KINDS {
        let series = format!(
            "tally_source_runs_total{{kind=\"{kind}\",plugin=\"p\",result=\"error\",source=\"s\"}} 0\n"
        );
        assert!(text.contains(&series), "{series}");
    }
    assert!(text.contains("tally_observations_written_total{source=\"s\"} 0\n"));
}

#[test]
fn forget_source_removes_every_series_of_the_source_and_only_those() {
    let metrics = one_source();
    metrics.register_source("other", "csv_form");
    metrics.run_finished("other", "csv_form", RunResult::Success, None, 0.1, 1, 5.0);
    metrics.forget_source("posts", "http_json");
    let text = metrics.encode();
    assert!(!text.contains("\"posts\""), "{text}");
    assert!(text.contains("tally_source_up{plugin=\"csv_form\",source=\"other\"} 1\n"));
    // A run of the removed source still finishing does not bring it back.
    metrics.run_finished("posts", "http_json", RunResult::Success, None, 0.1, 1, 5.0);
    metrics.run_missed("posts");
    metrics.set_last_success("posts", 5.0);
    assert!(!metrics.encode().contains("\"posts\""));
    check_format(&metrics.encode());
}

#[test]
fn counters_continue_when_a_source_is_registered_again() {
    let metrics = one_source();
    // A reload: the new engine registers the same source with the same plugin.
    metrics.register_source("posts", "http_json");
    metrics.run_finished(
        "posts",
        "http_json",
        RunResult::Success,
        None,
        0.02,
        4,
        1.8e9,
    );
    let text = metrics.encode();
    for line in [
        "tally_source_runs_total{plugin=\"http_json\",result=\"success\",source=\"posts\"} 2\n",
        "tally_source_runs_total{plugin=\"http_json\",result=\"error\",source=\"posts\"} 1\n",
        "tally_observations_written_total{source=\"posts\"} 7\n",
        "tally_source_skipped_runs_total{source=\"posts\"} 1\n",
        "tally_source_run_duration_seconds_count{source=\"posts\"} 3\n",
        "tally_source_last_success_timestamp_seconds{source=\"posts\"} 1800000000\n",
    ] {
        assert!(text.contains(line), "{line}in:\n{text}");
    }
    // Another plugin makes other `runs_total` and `up` series: they start at 0.
    metrics.register_source("posts", "feed");
    let text = metrics.encode();
    assert!(!text.contains("plugin=\"http_json\""), "{text}");
    assert!(text.contains(
        "tally_source_runs_total{plugin=\"feed\",result=\"success\",source=\"posts\"} 0\n"
    ));
    assert!(text.contains("tally_observations_written_total{source=\"posts\"} 7\n"));
}

#[test]
fn scrapes_see_the_body_of_the_last_rebuild_only() {
    let metrics = Metrics::new();
    metrics.register_source("s", "p");
    assert!(metrics.refresh(false, || panic!("nothing was written")));
    let before = metrics.exposition();
    assert!(before.starts_with(b"# HELP tally_build_info"));
    // Nothing changed: no rebuild.
    assert!(!metrics.refresh(false, || panic!("nothing was written")));

    metrics.run_finished("s", "p", RunResult::Success, None, 0.1, 0, 1.0);
    assert_eq!(metrics.exposition(), before, "not rebuilt yet");
    assert!(metrics.refresh(false, || panic!("no observations were written")));
    let after = metrics.exposition();
    assert_ne!(after, before);
    assert!(
        String::from_utf8_lossy(&after).contains("tally_source_up{plugin=\"p\",source=\"s\"} 1\n")
    );

    // Written observations: the indicator families are computed again.
    metrics.values_changed();
    let mut computed = false;
    assert!(metrics.refresh(false, || {
        let mut text = IndicatorText::new();
        text.indicator_value([("county", "posts", "day", 3.0)]);
        metrics.set_indicator_families(text);
        computed = true;
    }));
    assert!(computed);
    let body = String::from_utf8_lossy(&metrics.exposition()).into_owned();
    assert!(
        body.contains(
            "tally_indicator_value{indicator=\"posts\",unit=\"county\",window=\"day\"} 3\n"
        )
    );
    // Setting them was part of that rebuild, not a change still to show.
    assert!(!metrics.refresh(false, || panic!("already computed")));
    // `force` (start, reload) computes and rebuilds anyway.
    let mut forced = false;
    assert!(metrics.refresh(true, || forced = true));
    assert!(forced);
}

#[test]
fn plugin_info_is_exported_once_per_library() {
    let metrics = Metrics::new();
    for _ in 0..2 {
        metrics.plugin_loaded("http_json", "0.1.0", &1.to_string());
    }
    let text = metrics.encode();
    assert_eq!(
        text.matches("tally_plugin_info{abi=\"1\",plugin=\"http_json\",version=\"0.1.0\"} 1\n")
            .count(),
        1,
        "{text}"
    );
}

/// A body with every family, odd label values included.
fn full_body(config: &tally_config::MetricsConfig) -> String {
    let metrics = one_source();
    metrics.configure(config);
    metrics.register_source("quote\"d", "exec");
    metrics.run_finished("quote\"d", "exec", RunResult::Panic, None, 3.0, 0, 0.0);
    metrics.plugin_loaded("http_json", "0.1.0", "1");
    let mut text = IndicatorText::new();
    text.unit_info([
        ("county", "某县", ""),
        ("county/a", "A \"bureau\"\\\nsecond line", "county"),
    ]);
    text.indicator_info([("posts", "发文数", "count")]);
    text.indicator_value([
        ("county", "posts", "day", 3.0),
        ("county", "posts", "year", 1.5e17),
        ("county/a", "posts", "day", 0.25),
    ]);
    text.target_ratio([
        ("county/a", "posts", "year", f64::INFINITY),
        ("county", "posts", "year", f64::NAN),
    ]);
    metrics.set_indicator_families(text);
    metrics.encode()
}

#[test]
fn the_body_is_well_formed_and_passes_promtool() {
    let plain = full_body(&Default::default());
    check_format(&plain);
    promtool_check(&plain);
    let body = full_body(&detailed());
    check_format(&body);
    for family in [
        "tally_build_info",
        "tally_plugin_info",
        "tally_unit_info",
        "tally_indicator_info",
        "tally_indicator_value",
        "tally_target_ratio",
        "tally_source_up",
        "tally_source_runs_total",
        "tally_source_last_success_timestamp_seconds",
        "tally_source_run_duration_seconds",
        "tally_observations_written_total",
        "tally_source_skipped_runs_total",
        "tally_source_backoff_skips_total",
        "tally_source_missed_runs_total",
        "tally_source_schedule_interval_seconds",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "no {family}:\n{body}"
        );
    }
    promtool_check(&body);
}

/// `promtool check metrics` on `body`. CI installs promtool
/// (tests/collection.rs insists); elsewhere the structural check stands alone.
pub(super) fn promtool_check(body: &str) {
    let Some(promtool) = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
    else {
        return;
    };
    use std::io::Write;
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_format_check_catches_what_it_should() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 1\n";
    check_format(ok);
    for bad in [
        // A family split in two.
        "# HELP a A.\n# TYPE a gauge\na{x=\"1\"} 1\n# HELP b B.\n# TYPE b gauge\nb 1\na{x=\"2\"} 1\n",
        // A sample before its TYPE.
        "a 1\n# HELP a A.\n# TYPE a gauge\n",
        // An unescaped quote.
        "# HELP a A.\n# TYPE a gauge\na{x=\"\"\"} 1\n",
        // The same series twice.
        "# HELP a A.\n# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n",
        // Not a number.
        "# HELP a A.\n# TYPE a gauge\na 1.2.3\n",
    ] {
        let caught = std::panic::catch_unwind(|| check_format(bad)).is_err();
        assert!(caught, "not caught:\n{bad}");
    }
}

/// What Prometheus' text parser insists on, checked without it: every
/// sample after its family's `# TYPE`, each family in one block, label
/// values properly quoted and escaped, values that parse, no series twice.
fn check_format(body: &str) {
    assert!(body.ends_with('\n'), "the body ends with a line feed");
    let mut types: HashMap<&str, &str> = HashMap::new();
    let mut closed: HashSet<&str> = HashSet::new();
    let mut current: Option<&str> = None;
    let mut seen: HashSet<String> = HashSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (what, name) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(matches!(what, "HELP" | "TYPE"), "{line}");
            if current != Some(name) {
                assert!(!closed.contains(name), "{name} comes back: {line}");
                if let Some(previous) = current {
                    closed.insert(previous);
                }
                current = Some(name);
            }
            if what == "TYPE" {
                let kind = parts.next().unwrap();
                assert!(
                    matches!(kind, "gauge" | "counter" | "histogram" | "summary"),
                    "{line}"
                );
                types.insert(name, kind);
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let family = current.unwrap_or_else(|| panic!("sample before any TYPE: {line}"));
        let kind = types
            .get(family)
            .copied()
            .unwrap_or_else(|| panic!("no TYPE for {line}"));
        let allowed = if kind == "histogram" {
            ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name == format!("{family}{s}"))
        } else if kind == "summary" {
            // Without quantiles: only `_sum` and `_count`.
            ["_sum", "_count"]
                .iter()
                .any(|s| name == format!("{family}{s}"))
        } else {
            name == family
        };
        assert!(allowed, "{name} inside family {family}: {line}");
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                let eq = rest.find("=\"").unwrap_or_else(|| panic!("label: {line}"));
                let label = &rest[..eq];
                assert!(
                    !label.is_empty()
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "label name {label:?}: {line}"
                );
                let mut chars = rest[eq + 2..].char_indices();
                let mut value = String::new();
                let end = loop {
                    let (i, c) = chars.next().unwrap_or_else(|| panic!("open quote: {line}"));
                    match c {
                        '"' => break eq + 2 + i,
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            other => panic!("escape {other:?}: {line}"),
                        },
                        c => value.push(c),
                    }
                };
                labels.push((label.to_owned(), value));
                rest = &rest[end + 1..];
                if let Some(r) = rest.strip_prefix(',') {
                    rest = r;
                } else if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                } else {
                    panic!("after a label value: {line}");
                }
            }
        }
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        assert!(
            matches!(value, "NaN" | "+Inf" | "-Inf") || value.parse::<f64>().is_ok(),
            "value {value:?}: {line}"
        );
        let key = format!("{name}{labels:?}");
        assert!(seen.insert(key), "series twice: {line}");
    }
}

/// `body` gzip-decoded.
fn gunzip(body: &[u8]) -> String {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(body)
        .read_to_string(&mut text)
        .unwrap();
    text
}

#[test]
fn the_gzip_copy_is_the_body_compressed_and_never_an_older_one() {
    let metrics = one_source();
    metrics.rebuild();
    // No scraper asked for gzip yet: nothing is compressed.
    assert!(metrics.exposition_gzip_ready().is_none());
    let gzip = metrics.exposition_gzip();
    let plain = metrics.exposition();
    assert!(gzip.len() < plain.len());
    assert_eq!(gunzip(&gzip).as_bytes(), &plain[..]);
    // Made once per body: the next scrape shares it.
    assert_eq!(metrics.exposition_gzip_ready(), Some(gzip.clone()));
    // A rebuild does not compress: its body waits for the next gzip scrape,
    // and the copy of the older body is never served for it.
    metrics.run_finished(
        "posts",
        "http_json",
        RunResult::Success,
        None,
        0.1,
        5,
        1.8e9,
    );
    metrics.rebuild();
    let newer = metrics.exposition();
    assert_ne!(newer, plain);
    assert!(metrics.exposition_gzip_ready().is_none());
    let ready = metrics.exposition_gzip();
    assert_eq!(gunzip(&ready).as_bytes(), &newer[..]);
    promtool_check(&gunzip(&ready));
    // Scrapes that ask at once compress it once and share the copy.
    metrics.set_last_success("posts", 1.9e9);
    metrics.rebuild();
    let copies: Vec<Bytes> = std::thread::scope(|s| {
        let asks: Vec<_> = (0..4)
            .map(|_| s.spawn(|| metrics.exposition_gzip()))
            .collect();
        asks.into_iter().map(|a| a.join().unwrap()).collect()
    });
    assert!(copies.iter().all(|c| c.as_ptr() == copies[0].as_ptr()));
    assert_eq!(gunzip(&copies[0]).as_bytes(), &metrics.exposition()[..]);
}

#[test]
fn ten_thousand_sources_stay_within_the_series_budget() {
    let metrics = Metrics::new();
    for n in 0..10_000 {
        let id = format!("src-{n:05}");
        metrics.register_source(&id, "http_json");
        metrics.set_schedule_interval(&id, 10.0);
        metrics.run_finished(&id, "http_json", RunResult::Success, None, 0.004, 1, 1.7e9);
    }
    let count = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("tally_source_") || l.starts_with("tally_observations_"))
            .count()
    };
    let series = count(&metrics.encode());
    assert_eq!(series, 140_000);
    assert!(series <= 10_000 * SOURCE_SERIES_BUDGET);
    metrics.configure(&detailed());
    assert_eq!(count(&metrics.encode()), 10_000 * 32);
}

#[test]
fn a_rebuild_shares_the_lines_of_unchanged_sources_and_makes_the_text_once() {
    let metrics = one_source();
    metrics.register_source("quiet", "exec");
    let mut text = IndicatorText::new();
    text.unit_info([("county", "County", "")]);
    metrics.set_indicator_families(text);
    metrics.rebuild();
    let before = metrics.body();
    assert!(metrics.exposition_ready().is_none(), "made before a scrape");
    let plain = metrics.exposition();
    assert_eq!(plain.len(), before.len);
    assert_eq!(metrics.exposition_ready().unwrap().as_ptr(), plain.as_ptr());

    metrics.run_skipped("posts");
    metrics.rebuild();
    let after = metrics.body();
    // Id order: "posts", then "quiet".
    assert!(!Arc::ptr_eq(&before.sources[0], &after.sources[0]));
    assert!(Arc::ptr_eq(&before.sources[1], &after.sources[1]));
    assert!(Arc::ptr_eq(&before.indicators, &after.indicators));
    // The new body's text is its own, and says what changed.
    assert!(metrics.exposition_ready().is_none());
    let newer = String::from_utf8(metrics.exposition().to_vec()).unwrap();
    assert!(newer.contains("tally_source_skipped_runs_total{source=\"posts\"} 2\n"));
    assert!(newer.contains("tally_unit_info{name=\"County\",parent=\"\",unit=\"county\"} 1\n"));
    assert_eq!(newer.len(), after.len);
    promtool_check(&newer);
}
