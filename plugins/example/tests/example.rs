//! The example plugin run through the SDK's test kit, as the author guide shows.

use chrono::NaiveDate;
use serde_json::json;
use tally_example::Example;
use tally_plugin::testkit::{Harness, TestHost};
use tally_plugin::{CollectRequest, ErrorKind, Window};

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
}

#[test]
fn emits_per_day_for_each_day_of_the_window() {
    let settings = json!({"indicator": "meetings", "per_day": 2.0});
    let mut plugin = Harness::<Example>::create(settings, TestHost::new()).unwrap();
    assert_eq!(plugin.emits(), ["meetings"]);

    let out = plugin
        .collect(&CollectRequest::new("demo", Window::new(day(25), day(27))))
        .unwrap();
    let got: Vec<_> = out.observations.iter().map(|o| (o.day, o.value)).collect();
    assert_eq!(got, [(day(25), 2.0), (day(26), 2.0), (day(27), 2.0)]);
    assert!(
        out.observations
            .iter()
            .all(|o| o.unit.is_none() && o.indicator == "meetings")
    );
}

#[test]
fn refuses_bad_settings_naming_the_field() {
    let err = Harness::<Example>::create(
        json!({"indicator": "Meetings", "per_day": 1}),
        TestHost::new(),
    )
    .err()
    .unwrap();
    assert_eq!(err.kind, ErrorKind::Settings);
    assert!(err.message.starts_with("indicator:"), "{}", err.message);

    let err = Harness::<Example>::create(
        json!({"indicator": "m", "per_day": 1, "typo": 1}),
        TestHost::new(),
    )
    .err()
    .unwrap();
    assert!(err.message.contains("typo"), "{}", err.message);
}

/// The author guide quotes this plugin's source; the quote must not drift.
#[test]
fn the_author_guide_quotes_this_source_verbatim() {
    let guide = include_str!("../../README.md");
    let source = include_str!("../src/lib.rs");
    assert!(
        guide.contains(&format!("```rust\n{source}```")),
        "plugins/README.md must quote plugins/example/src/lib.rs verbatim"
    );
}
