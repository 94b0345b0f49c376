//! `tallyd new-plugin`: the generated crate builds and passes its own tests
//! outside the workspace, and its library collects in the real daemon.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// A daily statistics API on 127.0.0.1 answering `?day=YYYY-MM-DD` with
/// `{"data": {"count": DD * 10}}`, as the generated skeleton expects.
fn stats_api() -> String {
    daily_api("/stats", |dd| {
        format!("{{\"data\": {{\"count\": {}}}}}", dd * 10)
    })
}

/// The target directory the test binary was built in (…/target), so that the
/// generated crate reuses the dependencies already built there.
fn target_dir() -> PathBuf {
    tallyd()
        .parent()
        .and_then(Path::parent)
        .expect("tallyd sits in <target>/debug")
        .to_path_buf()
}

/// `cargo ARGS` in the generated crate, offline (tests never reach the
/// internet), with the workspace's lock file so the versions built are reused.
fn cargo(dir: &Path, args: &[&str]) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("CARGO_INCREMENTAL", "0")
        .env("CARGO_NET_OFFLINE", "true")
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo {args:?} in {}:\n{}\n{}",
        dir.display(),
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn a_generated_plugin_builds_tests_and_collects_as_generated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let crate_dir = dir.join("gov-template-check");
    let out = run_tallyd(&[
        "new-plugin",
        "gov-template-check",
        "--dir",
        crate_dir.to_str().unwrap(),
    ]);
    assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("plugins/sdk"), "{}", stdout(&out));
    // A second run refuses to overwrite the crate.
    let again = run_tallyd(&[
        "new-plugin",
        "gov-template-check",
        "--dir",
        crate_dir.to_str().unwrap(),
    ]);
    assert_eq!(exit_code(&again), 1);
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock");
    std::fs::copy(lock, crate_dir.join("Cargo.lock")).unwrap();
    // Nothing to fill in: the skeleton works against the URL of its settings.
    cargo(&crate_dir, &["test", "--quiet"]);
    // As tidy as the author's own code will be asked to be.
    cargo(&crate_dir, &["fmt", "--check"]);
    cargo(&crate_dir, &["build", "--quiet"]);

    // The library lands beside the bundled plugins; move it to a private
    // plugin directory so no other test or `tally-demo` finds it there.
    let built = target_dir()
        .join("debug")
        .join(lib_file("gov_template_check"));
    let plugins = plugin_dir_with(&dir.join("plugins"), std::slice::from_ref(&built));
    std::fs::remove_file(&built).unwrap();
    for leftover in ["libgov_template_check.rlib", "libgov_template_check.d"] {
        let _ = std::fs::remove_file(target_dir().join("debug").join(leftover));
    }

    let api = stats_api();
    let config = TestConfig::new(dir, &plugins)
        .without_listen()
        .county()
        .indicator("items", "Items", "count", "items")
        .toml(&format!(
            r#"
[[sources]]
id = "county-stats"
plugin = "gov_template_check"
unit = "county"
schedule = "0 0 3 * * *"
[sources.settings]
url = "{api}"
"#
        ))
        .write();
    let log = collect(&config, "county-stats", "2026-11-01", "2026-11-03");
    assert!(log.contains("success, 3 observations"), "{log}");
    let report = report_json(&config, "2026-11-01..2026-11-03");
    // 10 + 20 + 30.
    assert_eq!(
        report["units"][0]["values"]["items"]["value"], 60.0,
        "{report:#}"
    );
}
