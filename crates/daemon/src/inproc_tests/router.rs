//! Every endpoint of the HTTP API through the router, without a socket:
//! its success answer and each error answer, all errors as JSON
//! `{"error": "..."}`.

use axum::http::header;

use super::plugin::{Answer, Script};
use super::*;

/// The JSON error shape of every refusal, and its message.
fn error(status: StatusCode, body: &Value, wanted: StatusCode) -> String {
    assert_eq!(status, wanted, "{body}");
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("not JSON: {body}"));
    assert_eq!(object.len(), 1, "{body}");
    object["error"].as_str().unwrap().to_owned()
}

/// A daemon with one source that collected 3 on the first day it ran.
async fn started(script: &str, then: Answer) -> (Setup, Arc<Script>, InProcessDaemon) {
    let handle = Script::new(script, &[Answer::Value(3.0)], then);
    let setup = Setup::new(&source("steady", "0 3 * * *", "", script));
    let time = Timeline::new();
    let d = setup.start().await;
    // `/metrics` is rebuilt in the background, at most once a second.
    time.at(5.0).await;
    (setup, handle, d)
}

#[tokio::test(start_paused = true)]
async fn read_endpoints_answer_and_refuse_bad_parameters() {
    let (_setup, _script, d) = started("router-reads", Answer::Value(1.0)).await;

    let (status, body) = call(&d, "GET", "/healthz", None).await;
    assert_eq!((status, body), (StatusCode::OK, Value::from("ok\n")));

    let (status, body) = call(&d, "GET", "/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"ready": true, "sources": 1, "scheduled": 1, "reasons": []})
    );

    let response = d
        .router()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        crate::metrics::CONTENT_TYPE
    );
    let (_, metrics) = call(&d, "GET", "/metrics", None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("tally_source_up{plugin=\"scripted\",source=\"steady\"} 1"),
        "{metrics}"
    );

    // The summary: JSON by default, and each download format.
    let (status, body) = call(&d, "GET", "/api/v1/summary?period=2026-11", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["period"]["label"], "2026-11", "{body}");
    assert_eq!(body["units"][0]["id"], "county", "{body}");
    assert_eq!(body["units"][0]["values"]["x"]["value"], 3, "{body}");
    for (format, content_type) in [
        ("csv", "text/csv; charset=utf-8"),
        ("md", "text/markdown; charset=utf-8"),
        (
            "xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
    ] {
        let uri = format!("/api/v1/summary?period=2026-11&format={format}");
        let response = d
            .router()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{format}");
        assert_eq!(response.headers()[header::CONTENT_TYPE], content_type);
    }
    for (uri, says) in [
        ("/api/v1/summary", "missing parameter period"),
        ("/api/v1/summary?period=2026-13", "2026-13"),
        ("/api/v1/summary?period=2026-11&depth=-1", "depth must be"),
        (
            "/api/v1/summary?period=2026-11&format=pdf",
            "unknown format \"pdf\"",
        ),
        (
            "/api/v1/summary?period=2026-11&colour=red",
            "unknown parameter colour",
        ),
        ("/api/v1/summary?period=2026-11&unit=nowhere", "nowhere"),
    ] {
        let (status, body) = call(&d, "GET", uri, None).await;
        let message = error(status, &body, StatusCode::BAD_REQUEST);
        assert!(message.contains(says), "{uri}: {message}");
    }

    // The observations behind a figure, and their refusals.
    let (status, body) = call(
        &d,
        "GET",
        "/api/v1/observations?period=2026-11&unit=county&indicator=x",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["observations"][0]["source"], "steady", "{body}");
    assert_eq!(body["observations"][0]["value"], 3.0, "{body}");
    assert!(body["next"].is_null(), "{body}");
    for (uri, says) in [
        (
            "/api/v1/observations?unit=county&indicator=x",
            "missing parameter period",
        ),
        (
            "/api/v1/observations?period=2026-11&indicator=x",
            "missing parameter unit",
        ),
        (
            "/api/v1/observations?period=2026-11&unit=county",
            "missing parameter indicator",
        ),
        (
            "/api/v1/observations?period=2026-11&unit=county&indicator=x&limit=0",
            "limit must be",
        ),
        (
            "/api/v1/observations?period=2026-11&unit=county&indicator=x&after=%21",
            "after",
        ),
        (
            "/api/v1/observations?period=2026-11&unit=nowhere&indicator=x",
            "nowhere",
        ),
        (
            "/api/v1/observations?period=2026-11&unit=county&indicator=x&page=2",
            "unknown parameter page",
        ),
    ] {
        let (status, body) = call(&d, "GET", uri, None).await;
        let message = error(status, &body, StatusCode::BAD_REQUEST);
        assert!(message.contains(says), "{uri}: {message}");
    }

    let (status, body) = call(&d, "GET", "/api/v1/units", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["units"][0]["id"], "county", "{body}");
    assert_eq!(body["units"][0]["name"], "某县", "{body}");

    let (status, body) = call(&d, "GET", "/api/v1/indicators", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["indicators"][0]["id"], "x", "{body}");
    assert_eq!(
        body["indicators"][0]["sources"],
        serde_json::json!(["steady"])
    );

    let steady = source_json(&d, "steady").await;
    assert_eq!(steady["last_run"]["result"], "success", "{steady:#}");
    assert_eq!(steady["last_run"]["observations"], 1, "{steady:#}");
    assert_eq!(
        steady["next_run"], "2026-11-28T03:00:00+00:00",
        "{steady:#}"
    );

    let (status, body) = call(&d, "GET", "/api/v1/reports", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, serde_json::json!({"reports": []}));

    // Unknown paths and wrong methods.
    let (status, body) = call(&d, "GET", "/api/v1/nothing", None).await;
    let message = error(status, &body, StatusCode::NOT_FOUND);
    assert!(message.contains("no such endpoint"), "{message}");
    for (method, uri) in [
        ("POST", "/healthz"),
        ("POST", "/api/v1/summary?period=2026-11"),
        ("GET", "/api/v1/reload"),
        ("GET", "/api/v1/sources/steady/run"),
        ("DELETE", "/api/v1/sources"),
    ] {
        let (status, body) = call(&d, method, uri, Some(TOKEN)).await;
        let message = error(status, &body, StatusCode::METHOD_NOT_ALLOWED);
        assert!(
            message.contains("method not allowed"),
            "{method} {uri}: {message}"
        );
    }
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_manual_run_needs_the_token_a_known_source_and_an_idle_one() {
    let (_setup, script, d) = started("router-run", Answer::Hold).await;
    let uri = "/api/v1/sources/steady/run";

    let (status, body) = call(&d, "POST", uri, None).await;
    let message = error(status, &body, StatusCode::UNAUTHORIZED);
    assert!(
        message.contains("missing header Authorization"),
        "{message}"
    );
    let (status, body) = call(&d, "POST", uri, Some("guess")).await;
    assert_eq!(
        error(status, &body, StatusCode::UNAUTHORIZED),
        "wrong api token"
    );
    let (status, body) = call(&d, "POST", "/api/v1/sources/nope/run", Some(TOKEN)).await;
    let message = error(status, &body, StatusCode::NOT_FOUND);
    assert!(message.contains("unknown source \"nope\""), "{message}");

    // A run held by its plugin: a second one is refused with 409.
    let router = d.router();
    let held = tokio::spawn(async move {
        let request = Request::post(uri)
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        router.oneshot(request).await.unwrap().status()
    });
    let engine = d.engine();
    while !engine.source("steady").unwrap().is_running() {
        tokio::task::yield_now().await;
    }
    let (status, body) = call(&d, "POST", uri, Some(TOKEN)).await;
    let message = error(status, &body, StatusCode::CONFLICT);
    assert!(message.contains("already running"), "{message}");
    script.release();
    assert_eq!(held.await.unwrap(), StatusCode::OK);

    // Once it is over, a run answers its report.
    let (status, body) = call(&d, "POST", uri, Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["source"], "steady", "{body}");
    assert_eq!(body["result"], "success", "{body}");
    assert_eq!(body["observations"], 1, "{body}");
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn without_a_token_writes_are_forbidden() {
    Script::new("router-no-token", &[], Answer::Value(1.0));
    let setup = Setup::new("");
    setup.write_text(&config_text(
        setup.dir.path(),
        None,
        &source("steady", "0 3 * * *", "", "router-no-token"),
    ));
    let d = setup.start().await;
    for uri in ["/api/v1/sources/steady/run", "/api/v1/reload"] {
        let (status, body) = call(&d, "POST", uri, Some(TOKEN)).await;
        let message = error(status, &body, StatusCode::FORBIDDEN);
        assert!(message.contains("set daemon.api_token"), "{uri}: {message}");
    }
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_guards_refuse_a_foreign_host_and_a_large_body() {
    let (_setup, _script, d) = started("router-guards", Answer::Value(1.0)).await;

    // On a loopback listen, only loopback names are served (DNS rebinding).
    for (host, wanted) in [
        ("evil.example", StatusCode::MISDIRECTED_REQUEST),
        ("127.0.0.1.evil.example:80", StatusCode::MISDIRECTED_REQUEST),
        ("localhost:9", StatusCode::OK),
        ("127.0.0.1", StatusCode::OK),
        ("[::1]:9", StatusCode::OK),
    ] {
        let request = Request::get("/healthz")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        let (status, body) = send(&d, request).await;
        if wanted == StatusCode::OK {
            assert_eq!(status, wanted, "{host}: {body}");
        } else {
            let message = error(status, &body, wanted);
            assert!(message.contains("listens on loopback"), "{host}: {message}");
        }
    }

    // A body over the limit is refused before any handler reads it.
    let request = Request::post("/api/v1/reload")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header(header::CONTENT_LENGTH, crate::http::MAX_BODY_BYTES + 1)
        .body(Body::from(vec![b'x'; crate::http::MAX_BODY_BYTES + 1]))
        .unwrap();
    let (status, body) = send(&d, request).await;
    let message = error(status, &body, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(message.contains("request body too large"), "{message}");
    d.stop().await;
}
