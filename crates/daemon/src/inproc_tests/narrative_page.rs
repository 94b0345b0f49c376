//! The 情况报告 page through the router: the draft of the default unit and
//! quarter with its download links, the same draft from the API as DOCX,
//! and a bad query refused with a page. A real browser drives it in
//! `tests/pages_narrative.rs`.

use axum::http::header;

use super::pages::{html, page};
use super::plugin::{Answer, Script};
use super::*;

#[tokio::test(start_paused = true)]
async fn the_report_page_shows_the_draft_and_links_its_downloads() {
    let _script = Script::new(
        "narrative-steady",
        &[Answer::Value(3.0)],
        Answer::Value(1.0),
    );
    let setup = Setup::new(&source("steady", "0 3 * * *", "", "narrative-steady"));
    let time = Timeline::new();
    let d = setup.start().await;
    time.at(5.0).await;

    // The first root and the quarter of the daemon's clock (t0 is 2026-11-27).
    let (status, headers, body) = page(&d, "/report").await;
    html(status, &headers, &body, StatusCode::OK);
    assert!(
        body.contains("<h1>某县2026年第四季度新媒体及学习工作情况报告</h1>"),
        "{body}"
    );
    assert!(
        body.contains(r#"<a href="/report" aria-current="page">情况报告</a>"#),
        "{body}"
    );
    // The indicator `x` is none the default template names: the sections
    // say so, and the table at the end still has its figure, marked: the
    // quarter runs, so its source has not covered every day of it.
    assert!(
        body.contains("<p>（本节的指标未在 tally 中配置，请手工填写。）</p>"),
        "{body}"
    );
    assert!(
        body.contains("<th scope=\"row\">计数(次)</th><td>3次（不完整：有数据来源缺数）</td>"),
        "{body}"
    );
    assert!(
        body.contains("<p>（注：2026-Q4的数据尚不完整，统计期尚未结束"),
        "{body}"
    );
    assert!(
        body.contains(r#"href="/api/v1/summary?period=2026-Q4&#38;unit=county&#38;format=docx""#),
        "{body}"
    );
    assert!(
        body.contains(
            r#"href="/api/v1/summary?period=2026-Q4&#38;unit=county&#38;format=narrative-md""#
        ),
        "{body}"
    );
    assert!(
        body.contains(r#"href="/report?unit=county&#38;period=2026-Q3""#),
        "{body}"
    );

    let response = d
        .router()
        .oneshot(
            Request::get("/api/v1/summary?period=2026-Q4&unit=county&format=docx")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    );
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert!(bytes.starts_with(b"PK"), "a zip package");

    for (uri, says) in [
        ("/report?unit=nowhere", "没有这个单位：“nowhere”"),
        ("/report?period=2026-13", "2026-13"),
        ("/report?format=docx", "未知参数 format"),
    ] {
        let (status, headers, body) = page(&d, uri).await;
        html(status, &headers, &body, StatusCode::BAD_REQUEST);
        assert!(body.contains(says), "{uri}: {body}");
    }
}
