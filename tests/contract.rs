//! The plugin contract of the author guide, through the real daemon:
//! indicators declared once (in the plugin's `describe()`), and the error
//! contract (the kind everywhere, a retry-after honoured).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{Duration, Utc};
use serde_json::Value;
use tally_simulators::weibo::{Account, WeiboSim, followers_on};

use crate::support::*;

const UID: u64 = 5_678_901_234;
const WEIBO_TOKEN: &str = "2.00WeiboContractTestToken";

#[test]
fn an_indicator_declared_only_by_its_plugin_collects_and_rolls_up() {
    let now = Utc::now();
    let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
    let today = now.with_timezone(&tz).date_naive();
    let sim = WeiboSim::start_blocking(vec![Account::new(UID, WEIBO_TOKEN)]).unwrap();
    sim.set_now(now);
    let t = TestDir::new(&[bundled_plugin("tally_weibo")]);
    let dir = t.dir.as_path();
    let plugins = &t.plugins;
    // `weibo_followers` is declared to rename it; `weibo_total_posts` only
    // by the plugin's describe().
    let cfg = TestConfig::new(dir, plugins)
        .county()
        .unit("county/media", "融媒体中心")
        .indicator("weibo_followers", "融媒体微博粉丝数", "level", "人")
        .toml(&format!(
            r#"
[[sources]]
id = "media-weibo"
plugin = "weibo"
unit = "county/media"
schedule = "0 0 3 * * *"
retries = 0
[sources.settings]
uid = "{UID}"
access_token = "${{env:TALLY_TEST_WEIBO_TOKEN}}"
api_base = "{api}"
indicators = ["weibo_total_posts", "weibo_followers"]
"#,
            api = sim.base_url(),
        ));
    let port = cfg.port();
    let config = cfg.write();
    let env = [("TALLY_TEST_WEIBO_TOKEN", WEIBO_TOKEN)];

    // `check` accepts the file and prints the declaration to add, should
    // the operator want to rename it.
    let out = run_tallyd_env(&["check", "--config", config.to_str().unwrap()], &env);
    assert_eq!(exit_code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "# declared by plugin weibo\n[[indicators]]\nid = \"weibo_total_posts\"\nname = \"微博累计发博数\"\nkind = \"level\"\nunit = \"条\"\n"
        ),
        "{text}"
    );
    assert!(!text.contains("id = \"weibo_followers\""), "{text}");

    let d = TestDaemon::start_with_env(&config, port, &env);
    d.wait_for("the start-up run to succeed", 60, |d| {
        d.source("media-weibo")["last_success"].is_string()
    });
    // Rolled up from the bureau to the county, as a configured one would be.
    let summary = d.get_json(&format!(
        "/api/v1/summary?period={today}..{}",
        today + Duration::days(1)
    ));
    let total = sim.statuses_count(UID) as f64;
    assert_eq!(
        value(&summary, "county/media", "weibo_total_posts"),
        total,
        "{summary:#}"
    );
    assert_eq!(
        value(&summary, "county", "weibo_total_posts"),
        total,
        "{summary:#}"
    );
    assert_eq!(
        value(&summary, "county", "weibo_followers"),
        followers_on(UID, today) as f64
    );
    // The catalogue: the plugin's name and unit, the configured name.
    let indicators = d.get_json("/api/v1/indicators");
    let find = |id: &str| -> Value {
        indicators["indicators"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not in {indicators:#}"))
    };
    let adopted = find("weibo_total_posts");
    assert_eq!(
        (&adopted["name"], &adopted["kind"], &adopted["unit"]),
        (&"微博累计发博数".into(), &"level".into(), &"条".into()),
        "{adopted:#}"
    );
    assert_eq!(adopted["sources"], serde_json::json!(["media-weibo"]));
    assert_eq!(find("weibo_followers")["name"], "融媒体微博粉丝数");
    // And the metrics.
    d.wait_for("the indicator metrics", 30, |d| {
        d.sample(
            "tally_indicator_value",
            &[
                ("unit", "county"),
                ("indicator", "weibo_total_posts"),
                ("window", "day"),
            ],
        ) == Some(total)
    });
    assert_eq!(
        d.sample(
            "tally_indicator_info",
            &[
                ("indicator", "weibo_total_posts"),
                ("name", "微博累计发博数"),
                ("kind", "level")
            ],
        ),
        Some(1.0)
    );
}

/// A platform on 127.0.0.1 that answers every path with 429: `/limited`
/// with `Retry-After: 3600`, `/soon` with `Retry-After: 2`, `/busy`
/// without. It records when each request arrived.
struct RateLimiter {
    url: String,
    hits: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl RateLimiter {
    fn start() -> RateLimiter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let seen = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    continue;
                }
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = first.split(' ').nth(1).unwrap_or("").to_owned();
                seen.lock().unwrap().push((path.clone(), Instant::now()));
                let retry = match path.as_str() {
                    "/limited" => "Retry-After: 3600\r\n",
                    "/soon" => "Retry-After: 2\r\n",
                    _ => "",
                };
                let body = "{\"error\":\"too many requests\"}";
                let _ = write!(
                    stream,
                    "HTTP/1.1 429 Too Many Requests\r\n{retry}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        RateLimiter { url, hits }
    }

    fn hits(&self, path: &str) -> Vec<Instant> {
        let hits = self.hits.lock().unwrap();
        hits.iter()
            .filter(|(p, _)| p == path)
            .map(|(_, t)| *t)
            .collect()
    }
}

const TOKEN: &str = "contract-test-token";

#[test]
fn rate_limited_with_retry_after_waits_for_it_and_the_kind_shows_everywhere() {
    let server = RateLimiter::start();
    let t = TestDir::new(&[bundled_plugin("tally_http_json")]);
    let dir = t.dir.as_path();
    let plugins = &t.plugins;
    let source = |id: &str, schedule: &str| {
        format!(
            "[[sources]]\nid = \"{id}\"\nplugin = \"http_json\"\nunit = \"county\"\nschedule = \"{schedule}\"\n\
             retries = 2\nretry_backoff = \"100ms\"\nbreaker_after = 0\n\
             [sources.settings]\nurl = \"{}/{id}\"\nvalues = [{{indicator = \"x\", path = \"$.a\"}}]\n",
            server.url
        )
    };
    let cfg = TestConfig::new(dir, plugins)
        .daemon(&format!(r#"api_token = "{TOKEN}""#))
        .county()
        .indicator("x", "计数", "count", "次")
        // Errors by kind on /metrics are opt-in (the series budget).
        .toml("[metrics]\nsource_error_kinds = true\n")
        // Every second: the schedule would run it often, if let.
        .toml(&source("limited", "* * * * * *"))
        .toml(&source("soon", "* * * * * *"))
        // Once a year: only the start-up run and its retries.
        .toml(&source("busy", "0 0 3 1 1 *"));
    let port = cfg.port();
    let config = cfg.write();
    let d = TestDaemon::start(&config, port);

    // Without a retry-after, rate_limited is retried within the run.
    d.wait_for("the busy source's start-up run", 30, |d| {
        d.runs("busy", "error") == 1
    });
    assert_eq!(server.hits("/busy").len(), 3);
    // With one, the platform is not asked again before it: neither by a
    // retry nor by the schedule, which skips its runs meanwhile.
    d.wait_for("scheduled runs skipped while waiting", 30, |d| {
        d.sample("tally_source_backoff_skips_total", &[("source", "limited")])
            .is_some_and(|n| n >= 3.0)
    });
    assert_eq!(server.hits("/limited").len(), 1);
    assert_eq!(d.runs("limited", "error"), 1);
    // ... and resumes after it: the second request comes no sooner.
    d.wait_for("the short retry-after to pass", 30, |_| {
        server.hits("/soon").len() >= 2
    });
    let soon = server.hits("/soon");
    let gap = soon[1] - soon[0];
    assert!(gap >= std::time::Duration::from_millis(1900), "{gap:?}");

    // The kind and the retry-after in /api/v1/sources.
    let limited = d.source("limited");
    let last = &limited["last_run"];
    assert_eq!(last["result"], "error", "{limited:#}");
    assert_eq!(last["error_kind"], "rate_limited", "{limited:#}");
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains("HTTP 429: {\"error\":\"too many requests\"}"),
        "{limited:#}"
    );
    let retry_after = last["retry_after"]
        .as_str()
        .unwrap_or_else(|| panic!("{limited:#}"));
    assert_eq!(
        limited["backoff_until"].as_str(),
        Some(retry_after),
        "{limited:#}"
    );
    assert!(
        limited["next_run"].as_str().unwrap() >= retry_after,
        "{limited:#}"
    );
    assert_eq!(limited["last_error"]["error_kind"], "rate_limited");
    assert!(d.source("busy")["last_run"]["retry_after"].is_null());
    // In the metrics, by kind.
    assert_eq!(
        d.sample(
            "tally_source_runs_total",
            &[
                ("source", "limited"),
                ("result", "error"),
                ("kind", "rate_limited")
            ],
        ),
        Some(1.0)
    );
    assert_eq!(
        d.sample(
            "tally_source_runs_total",
            &[
                ("source", "limited"),
                ("result", "error"),
                ("kind", "upstream")
            ],
        ),
        Some(0.0)
    );
    // In the log line of the failure (colours, if any, taken out).
    let log = strip_ansi(&d.log());
    assert!(
        log.lines().any(|l| l.contains("collection failed")
            && l.contains("source=limited")
            && l.contains("kind=rate_limited")
            && l.contains("retry_after=")),
        "{log}"
    );
    // A manual run still runs (the operator decides), and says the same.
    let (status, body) = post(
        &format!("{}/api/v1/sources/limited/run", d.base),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["error_kind"], "rate_limited", "{report:#}");
    assert!(report["retry_after"].is_string(), "{report:#}");
    assert_eq!(server.hits("/limited").len(), 2);

    // And `tallyd collect` prints it, dry or not.
    let out = run_tallyd(&[
        "collect",
        "--config",
        config.to_str().unwrap(),
        "--source",
        "limited",
        "--dry-run",
    ]);
    assert_eq!(exit_code(&out), 1);
    let err = stderr(&out);
    assert!(err.contains("limited: error (rate_limited) "), "{err}");
    assert!(err.contains("; retry after "), "{err}");
}

/// The text without ANSI colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
