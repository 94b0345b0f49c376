//! The demo is a binary of its own: `tallyd` carries no simulator and no
//! published token, and the demo does not offer its token to the network.

use std::process::Command;

use crate::support::*;

/// Whether `needle` occurs in the file's bytes. Symbol names of a debug build
/// carry their crate's name (`16tally_simulators` in a mangled path), and string
/// constants are stored as they are written.
fn contains(path: &std::path::Path, needle: &str) -> bool {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[test]
fn tallyd_carries_no_simulator_and_no_demo_token() {
    let demo = tally_demo();
    // The check must be able to fail: the demo binary has both.
    assert!(contains(&demo, "tally_simulators"), "{}", demo.display());
    assert!(contains(&demo, "demo-token"), "{}", demo.display());
    let tallyd = tallyd();
    assert!(
        !contains(&tallyd, "tally_simulators"),
        "{}",
        tallyd.display()
    );
    assert!(!contains(&tallyd, "demo-token"), "{}", tallyd.display());
    assert!(!contains(&tallyd, "WechatSim"), "{}", tallyd.display());
}

#[test]
fn tallyd_has_no_demo_subcommand() {
    let out = run_tallyd(&["demo"]);
    assert_eq!(exit_code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unrecognized subcommand 'demo'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_demo_refuses_a_non_loopback_address_without_a_token_of_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(tally_demo())
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tmp.path().join("demo"))
        .env_remove("TALLY_DEMO_TOKEN")
        .output()
        .unwrap();
    assert_eq!(exit_code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("0.0.0.0:0 is not a loopback address"), "{err}");
    assert!(err.contains("--token"), "{err}");
    // Refused before anything was written.
    assert!(!tmp.path().join("demo").exists());

    // A token too short to be a secret is refused too, and never echoed.
    let out = Command::new(tally_demo())
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tmp.path().join("demo"))
        .env("TALLY_DEMO_TOKEN", "abc")
        .output()
        .unwrap();
    assert_eq!(exit_code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--token is shorter than 4 characters"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("abc"), "{}", stderr(&out));
}
