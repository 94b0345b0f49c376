//! Plugins' settings schemas: printed by `tallyd plugins --settings`, checked
//! by `tallyd check` before the plugin runs, and the generated reference page.

use std::path::{Path, PathBuf};

use crate::support::*;

const BUNDLED: [&str; 8] = [
    "csv_form",
    "example",
    "exec",
    "feed",
    "http_json",
    "wechat",
    "weibo",
    "xuexi",
];

/// A configuration whose plugin directory holds every bundled plugin (and
/// no unit, indicator or source).
fn bundled_config() -> (TestDir, PathBuf) {
    let libs: Vec<PathBuf> = BUNDLED
        .iter()
        .map(|name| bundled_plugin(&format!("tally_{name}")))
        .collect();
    let t = TestDir::new(&libs);
    let config = t.config().without_listen().write_as("plugins.toml");
    (t, config)
}

/// Each bundled plugin's schema is printed as JSON Schema, followed by an
/// example that is TOML the same schema accepts.
#[test]
fn settings_prints_each_bundled_plugins_schema_and_a_valid_example() {
    let (_t, config) = bundled_config();
    for name in BUNDLED {
        let out = run_tallyd(&[
            "plugins",
            "--config",
            config.to_str().unwrap(),
            "--settings",
            name,
        ]);
        assert_eq!(exit_code(&out), 0, "{name}: {}", stderr(&out));
        let text = stdout(&out);
        let (schema, example) = text
            .split_once("\n# Example\n")
            .unwrap_or_else(|| panic!("{name}: no example in\n{text}"));
        let schema = schema.split_once('\n').unwrap().1;
        let schema: serde_json::Value = serde_json::from_str(schema).unwrap();
        assert_eq!(schema["type"], "object", "{name}");
        assert_eq!(
            schema["additionalProperties"], false,
            "{name}: deny_unknown_fields"
        );
        assert!(
            schema["properties"]
                .as_object()
                .is_some_and(|p| !p.is_empty())
        );
        let example: toml::Table = toml::from_str(example).unwrap();
        let settings = serde_json::to_value(&example["sources"]["settings"]).unwrap();
        let problems = tally_plugin::schema::validate(&schema, &settings);
        assert!(problems.is_empty(), "{name}: {problems:?}\n{text}");
    }
    let out = run_tallyd(&[
        "plugins",
        "--config",
        config.to_str().unwrap(),
        "--settings",
        "nope",
    ]);
    assert_eq!(exit_code(&out), 1);
    assert!(stderr(&out).contains("unknown plugin \"nope\" (found: csv_form, example, "));
}

/// Every key the schema refuses is reported at its own line, all at once,
/// before the plugin is asked (which would stop at the first).
#[test]
fn a_settings_typo_is_reported_at_file_line_key() {
    let t = TestDir::new(&[bundled_plugin("tally_http_json")]);
    // `[daemon]` holds lines 1 to 3, the unit 5 to 7, the indicator 9 to 13:
    // the source starts at line 15.
    let config = t
        .config()
        .without_listen()
        .county()
        .indicator("followers", "粉丝数", "level", "人")
        .toml(
            r#"
[[sources]]
id = "stats"
plugin = "http_json"
unit = "county"
schedule = "0 0 3 * * *"
[sources.settings]
url = "http://127.0.0.1:9/stats"
per_day = "yes"
[[sources.settings.values]]
indicator = "followers"
pth = "$.followers"
"#,
        )
        .write();
    let out = run_tallyd(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(exit_code(&out), 1, "{}", stdout(&out));
    let err = stderr(&out);
    let file = config.display().to_string();
    assert!(
        err.contains(&format!(
            "{file}:22:11: sources[0].settings.per_day: invalid type: string \"yes\", expected boolean"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:25:7: sources[0].settings.values[0].pth: unknown field `pth`, expected one of `indicator`, `path`"
        )),
        "{err}"
    );
    assert!(
        err.contains("sources[0].settings.values[0]: missing field `path`"),
        "{err}"
    );
}

/// docs/plugins.md is what `tallyd plugins --settings-reference` prints for
/// the bundled plugins; regenerate it with that command when this fails.
#[test]
fn the_settings_reference_page_is_current() {
    let (_t, config) = bundled_config();
    let out = run_tallyd(&[
        "plugins",
        "--config",
        config.to_str().unwrap(),
        "--settings-reference",
    ]);
    assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/plugins.md");
    let current = std::fs::read_to_string(&page).unwrap_or_default();
    assert!(
        current == stdout(&out),
        "docs/plugins.md is out of date: regenerate it with\n  \
         cargo build --workspace && target/debug/tallyd plugins --config config/demo.toml --settings-reference > docs/plugins.md"
    );
}
