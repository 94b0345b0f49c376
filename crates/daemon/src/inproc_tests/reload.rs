//! Reloading the configuration: a refused file leaves the running daemon as
//! it was; a good one adds, changes and removes sources, and the schedule
//! follows at once.

use super::plugin::{Answer, Script};
use super::*;

/// Every 10 s, so that a removed source would have run again.
const OFTEN: &str = "*/10 * * * * *";

fn scaled(id: &str, script: &str, scale: f64) -> String {
    format!("{}scale = {scale}\n", source(id, OFTEN, "", script))
}

async fn ids(d: &InProcessDaemon) -> Vec<String> {
    sources(d)
        .await
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn reload(d: &InProcessDaemon) -> (StatusCode, Value) {
    call(d, "POST", "/api/v1/reload", Some(TOKEN)).await
}

#[tokio::test(start_paused = true)]
async fn a_refused_reload_keeps_the_running_daemon_a_good_one_changes_only_what_changed() {
    let keep = Script::new("reload-keep", &[], Answer::Value(1.0));
    let edit = Script::new("reload-edit", &[], Answer::Value(1.0));
    let gone = Script::new("reload-gone", &[], Answer::Value(1.0));
    let fresh = Script::new("reload-fresh", &[], Answer::Value(1.0));
    let setup = Setup::new(
        &[
            scaled("keep", "reload-keep", 1.0),
            scaled("edit", "reload-edit", 1.0),
            scaled("gone", "reload-gone", 1.0),
        ]
        .concat(),
    );
    let time = Timeline::new();
    let d = setup.start().await;
    time.at(5.0).await;
    assert_eq!(ids(&d).await, ["keep", "edit", "gone"]);

    // A plugin refuses a setting: 400 naming it, and nothing changes.
    setup.write(
        &[
            scaled("keep", "reload-keep", -1.0),
            scaled("fresh", "reload-fresh", 1.0),
        ]
        .concat(),
    );
    let (status, body) = reload(&d).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("configuration not reloaded, the running one stays")
            && message.contains("scale: must not be negative"),
        "{message}"
    );
    // A file that does not parse, and a change that takes a restart.
    setup.write_text("[daemon\n");
    let (status, body) = reload(&d).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("tally.toml"),
        "{body}"
    );
    let moved = config_text(&setup.dir.path().join("elsewhere"), Some(TOKEN), "");
    setup.write_text(&moved);
    let (status, body) = reload(&d).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("daemon.data_dir changed"),
        "{body}"
    );
    // Reload needs the token.
    let (status, _) = call(&d, "POST", "/api/v1/reload", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&d, "POST", "/api/v1/reload", Some("guess")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The old configuration kept running through the refusals: every source
    // ran at start and on each 10 s tick since.
    time.at(25.0).await;
    assert_eq!(ids(&d).await, ["keep", "edit", "gone"]);
    for script in [&keep, &edit, &gone] {
        assert_eq!(offsets(&script.calls()), [0.0, 10.0, 20.0]);
    }
    assert!(fresh.calls().is_empty());
    let keep_before = source_json(&d, "keep").await;

    // A good file: keep as it was, edit's settings changed, gone removed,
    // fresh added.
    setup.write(
        &[
            scaled("keep", "reload-keep", 1.0),
            scaled("edit", "reload-edit", 2.0),
            scaled("fresh", "reload-fresh", 1.0),
        ]
        .concat(),
    );
    let (status, body) = reload(&d).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        serde_json::json!({
            "added": ["fresh"],
            "removed": ["gone"],
            "changed": ["edit"],
            "unchanged": ["keep"],
        })
    );
    assert_eq!(ids(&d).await, ["keep", "edit", "fresh"]);

    // The new source runs at once (it never succeeded); the others keep
    // their schedule, and the removed one is never called again.
    time.at(45.0).await;
    assert_eq!(offsets(&fresh.calls()), [25.0, 30.0, 40.0]);
    assert_eq!(offsets(&keep.calls()), [0.0, 10.0, 20.0, 30.0, 40.0]);
    assert_eq!(offsets(&edit.calls()), [0.0, 10.0, 20.0, 30.0, 40.0]);
    assert_eq!(offsets(&gone.calls()), [0.0, 10.0, 20.0]);
    let keep_after = source_json(&d, "keep").await;
    assert_eq!(keep_after["runs"]["success"], 5, "{keep_after:#}");
    assert_eq!(keep_before["runs"]["success"], 3, "{keep_before:#}");

    let (status, _) = call(&d, "POST", "/api/v1/sources/gone/run", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, metrics) = call(&d, "GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap();
    assert!(!metrics.contains("source=\"gone\""), "{metrics}");
    assert!(metrics.contains("source=\"fresh\""), "{metrics}");
    let (status, ready) = call(&d, "GET", "/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["scheduled"], 3, "{ready}");
    d.stop().await;
}
