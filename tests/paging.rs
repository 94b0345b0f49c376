//! `/api/v1/observations` a page at a time (issue 15): a figure behind
//! thousands of observations never answers them in one body, and `report
//! --explain` still lists them all.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::*;

const DAYS: usize = 2500;
const PERIOD: &str = "2019-01-01..2025-12-31";

#[test]
fn observations_answer_pages_that_join_up_to_the_whole_figure() {
    let t = TestDir::new(&[bundled_plugin("tally_csv_form")]);
    let dir = t.dir.as_path();
    let plugins = &t.plugins;
    let forms = dir.join("forms");
    std::fs::create_dir_all(&forms).unwrap();
    // One row a day: 2500 observations behind one figure of the range.
    let first = chrono::NaiveDate::from_ymd_opt(2019, 1, 1).unwrap();
    let mut form = String::from("单位,日期,会议次数\n");
    for n in 0..DAYS {
        let day = first + chrono::Days::new(n as u64);
        form.push_str(&format!("county,{day},1\n"));
    }
    std::fs::write(forms.join("all.csv"), form).unwrap();
    let cfg = TestConfig::new(dir, plugins)
        .daemon(r#"timezone = "UTC""#)
        .county()
        .meetings()
        .toml(&format!(
            r#"
[[sources]]
id = "forms"
plugin = "csv_form"
units = ["county"]
schedule = "0 0 3 1 1 *"
backfill_from = "2019-01-01"
[sources.settings]
dir = {forms}
indicators = ["meetings"]
"#,
            forms = toml_path(&forms),
        ));
    let port = cfg.port();
    let config = cfg.write();
    let cfg = config.to_str().unwrap();
    let out = run_tallyd(&[
        "collect",
        "--config",
        cfg,
        "--source",
        "forms",
        "--from",
        "2019-01-01",
        "--to",
        "2025-12-31",
    ]);
    assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
    let d = TestDaemon::start(&config, port);

    let base = format!("/api/v1/observations?period={PERIOD}&unit=county&indicator=meetings");
    // The default page, then pages of 1000 asked for explicitly.
    let mut page = d.get_json(&base);
    let mut days: Vec<String> = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let rows = page["observations"].as_array().expect("observations");
        sizes.push(rows.len());
        days.extend(rows.iter().map(|o| o["day"].as_str().unwrap().to_owned()));
        let Some(next) = page["next"].as_str() else {
            assert_eq!(page["next"], Value::Null);
            break;
        };
        page = d.get_json(&format!("{base}&limit=1000&after={next}"));
    }
    assert_eq!(sizes, [1000, 1000, 500]);
    assert_eq!(days.len(), DAYS);
    assert_eq!(
        days.iter().collect::<BTreeSet<_>>().len(),
        DAYS,
        "a day came twice"
    );
    let mut sorted = days.clone();
    sorted.sort();
    assert_eq!(days, sorted, "pages keep the order");

    // A page as large as allowed holds everything here; one larger is refused.
    let all = d.get_json(&format!("{base}&limit=10000"));
    assert_eq!(all["observations"].as_array().unwrap().len(), DAYS);
    assert_eq!(all["next"], Value::Null);
    for bad in ["limit=10001", "limit=0", "limit=-1", "after=not-a-cursor"] {
        let (status, body) = d.get(&format!("{base}&{bad}"));
        assert_eq!(status, 400, "{bad}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert!(error["error"].is_string(), "{bad}: {body}");
    }

    // The command line pages through the whole figure.
    let out = run_tallyd(&[
        "report",
        "--config",
        cfg,
        "--period",
        PERIOD,
        "--unit",
        "county",
        "--explain",
        "meetings",
        "--format",
        "json",
    ]);
    assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
    let explained: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(explained["observations"].as_array().unwrap().len(), DAYS);
    assert_eq!(explained["next"], Value::Null);
}
