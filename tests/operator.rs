//! What an operator sees of tallyd's output: errors naming each cause once,
//! logs without terminal colour codes when they go to a file or a pipe.

use std::net::TcpListener;

use crate::support::*;

/// A daemon with one unit and no plugin directory at all.
fn config(t: &TestDir) -> TestConfig {
    t.config().plugin_dirs(&[]).unit("org", "Organisation")
}

/// A port another process holds: the error names the address and the
/// system's reason, and the reason only once (it used to be printed twice,
/// by the message and again as its cause).
#[test]
fn a_busy_port_is_named_with_its_cause_once() {
    let t = TestDir::new(&[]);
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let config = config(&t).listen(&addr).write();
    let out = run_tallyd(&["run", "--config", config.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(exit_code(&out), 1, "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{err}"));
    assert!(
        line.starts_with(&format!("error: cannot listen on {addr}: ")),
        "{line}"
    );
    // The OS's own text, e.g. "Address already in use (os error 98)".
    let os_text = line.rsplit(": ").next().unwrap();
    assert!(!os_text.is_empty() && !os_text.contains(&addr), "{line}");
    assert_eq!(line.matches(os_text).count(), 1, "{line}");
    #[cfg(target_os = "linux")]
    assert_eq!(line.matches("Address already in use").count(), 1, "{line}");
    drop(holder);
}

/// Logs written to a pipe (a file, journald, a collector) carry no ANSI
/// escape codes: colour is for terminals only.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let t = TestDir::new(&[]);
    let mut daemon = config(&t).start();
    assert!(daemon.terminate().success());
    daemon.wait_for("the last log line", 20, |d| {
        d.log().contains("tallyd stopped")
    });
    let log = daemon.log();
    assert!(log.contains(" INFO "), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in the log:\n{log:?}");
}
