//! The clerks' pages through the router: status, content type, the
//! security headers on every answer (errors included), and what each page
//! says of the daemon's own data. A real browser drives them in the
//! integration tests (`tests/integration/pages.rs`).

use axum::http::{HeaderMap, header};

use super::plugin::{Answer, Script};
use super::*;
use crate::pages::CONTENT_SECURITY_POLICY;

pub(super) async fn page(d: &InProcessDaemon, uri: &str) -> (StatusCode, HeaderMap, String) {
    let response = d
        .router()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

/// An HTML page with the headers every page answer carries.
pub(super) fn html(status: StatusCode, headers: &HeaderMap, body: &str, wanted: StatusCode) {
    assert_eq!(status, wanted, "{body}");
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(
        headers[header::CONTENT_SECURITY_POLICY],
        CONTENT_SECURITY_POLICY
    );
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
    assert!(!body.contains("<script"), "no page has script: {body}");
}

#[tokio::test(start_paused = true)]
async fn pages_show_the_current_quarter_a_figure_and_the_sources() {
    let _script = Script::new("pages-steady", &[Answer::Value(3.0)], Answer::Value(1.0));
    let setup = Setup::new(&source("steady", "0 3 * * *", "", "pages-steady"));
    let time = Timeline::new();
    let d = setup.start().await;
    time.at(5.0).await;

    // `/` is the quarter the daemon's clock is in (t0 is 2026-11-27).
    let (status, headers, body) = page(&d, "/").await;
    html(status, &headers, &body, StatusCode::OK);
    assert!(body.contains("2026-Q4 统计表"), "{body}");
    assert!(body.contains("某县"), "{body}");
    assert!(body.contains("计数(次)"), "{body}");
    // Every number links to the observations behind it.
    assert!(
        body.contains(r#"<a href="/figure?period=2026-Q4&#38;unit=county&#38;indicator=x">3</a>"#),
        "{body}"
    );
    assert!(body.contains("本期尚未结束"), "{body}");

    let (status, headers, body) = page(&d, "/?period=2026-11").await;
    html(status, &headers, &body, StatusCode::OK);
    assert!(body.contains("2026-11 统计表"), "{body}");
    assert!(body.contains(r#"href="/?period=2026-10""#), "{body}");
    assert!(body.contains(r#"href="/?period=2026-12""#), "{body}");

    let (status, headers, body) = page(&d, "/figure?period=2026-Q4&unit=county&indicator=x").await;
    html(status, &headers, &body, StatusCode::OK);
    assert!(body.contains("某县 · 计数"), "{body}");
    assert!(body.contains("<td>steady</td>"), "{body}");
    assert!(body.contains(r#"<td class="value">3</td>"#), "{body}");
    assert!(!body.contains("下一页"), "one page only: {body}");

    let (status, headers, body) = page(&d, "/sources").await;
    html(status, &headers, &body, StatusCode::OK);
    assert!(body.contains(r#"<tr id="source-steady">"#), "{body}");
    assert!(body.contains(r#"<td class="state ok">正常</td>"#), "{body}");
    assert!(body.contains("2026-11-28 03:00"), "next run: {body}");

    let response = d
        .router()
        .oneshot(
            Request::get("/assets/pages.css")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/css; charset=utf-8"
    );
}

#[tokio::test(start_paused = true)]
async fn a_page_refuses_a_bad_query_with_a_page() {
    let _script = Script::new("pages-refuse", &[], Answer::Value(1.0));
    let setup = Setup::new(&source("steady", "0 3 * * *", "", "pages-refuse"));
    let d = setup.start().await;
    for (uri, says) in [
        ("/?period=2026-13", "2026-13"),
        ("/?colour=red", "未知参数 colour"),
        ("/figure?period=2026-Q4&indicator=x", "缺少参数 unit"),
        ("/figure?period=2026-Q4&unit=county", "缺少参数 indicator"),
        ("/figure?period=2026-Q4&unit=nowhere&indicator=x", "nowhere"),
        (
            "/figure?period=2026-Q4&unit=county&indicator=x&after=%21",
            "after",
        ),
        ("/sources?x=1", "未知参数 x"),
    ] {
        let (status, headers, body) = page(&d, uri).await;
        html(status, &headers, &body, StatusCode::BAD_REQUEST);
        assert!(body.contains(says), "{uri}: {body}");
    }
    // A POST to a page is the API's JSON refusal, with the page headers.
    let (status, body) = call(&d, "POST", "/", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
}

#[tokio::test(start_paused = true)]
async fn a_unit_nothing_reported_for_is_marked_with_the_reason() {
    let _script = Script::new("pages-broken", &[], Answer::Settings);
    let setup = Setup::new(&source("broken", "0 3 * * *", "", "pages-broken"));
    let time = Timeline::new();
    let d = setup.start().await;
    time.at(5.0).await;

    let (status, headers, body) = page(&d, "/").await;
    html(status, &headers, &body, StatusCode::OK);
    assert!(
        body.contains(r#"<td class="value missing">"#),
        "the cell is marked: {body}"
    );
    assert!(
        body.contains("<summary>未报送</summary>应当报送的数据来源没有收到"),
        "{body}"
    );
    assert!(body.contains("有单位未报送"), "{body}");

    let (status, headers, body) = page(&d, "/sources").await;
    html(status, &headers, &body, StatusCode::OK);
    assert!(
        body.contains(r#"<td class="state failed">上次采集失败</td>"#),
        "{body}"
    );
    assert!(body.contains("配置有误，请运维检查该来源的设置"), "{body}");
    assert!(body.contains("从未成功"), "{body}");
}

/// The value of `href="..."` in `body` after `marker`, unescaped.
fn href_after(body: &str, marker: &str) -> String {
    let from = body
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker}: {body}"));
    let start = body[..from].rfind("href=\"").unwrap() + "href=\"".len();
    let end = start + body[start..].find('"').unwrap();
    body[start..end].replace("&#38;", "&")
}

#[tokio::test(start_paused = true)]
async fn a_figure_pages_through_its_observations_with_the_cursor() {
    let _script = Script::new("pages-paged", &[Answer::Value(3.0)], Answer::Value(1.0));
    let setup = Setup::new(&source("steady", "0 3 * * *", "", "pages-paged"));
    let time = Timeline::new();
    let d = setup.start().await;
    // The run at start (2026-11-27) and the scheduled one of 2026-11-28 03:00.
    time.at(20.0 * 3600.0).await;

    let (status, headers, body) =
        page(&d, "/figure?period=2026-11&unit=county&indicator=x&limit=1").await;
    html(status, &headers, &body, StatusCode::OK);
    assert!(body.contains("<td>2026-11-27</td>"), "{body}");
    assert!(!body.contains("<td>2026-11-28</td>"), "{body}");
    let next = href_after(&body, ">下一页</a>");
    assert!(
        next.starts_with("/figure?period=2026-11&unit=county&indicator=x&limit=1&after="),
        "{next}"
    );

    let (status, headers, body) = page(&d, &next).await;
    html(status, &headers, &body, StatusCode::OK);
    assert!(body.contains("<td>2026-11-28</td>"), "{body}");
    assert!(body.contains(r#"<td class="value">1</td>"#), "{body}");
    assert!(!body.contains("<td>2026-11-27</td>"), "{body}");
    assert!(!body.contains("下一页"), "the last page: {body}");

    let (status, headers, body) =
        page(&d, "/figure?period=2026-11&unit=county&indicator=x&limit=0").await;
    html(status, &headers, &body, StatusCode::BAD_REQUEST);
    assert!(body.contains("limit"), "{body}");
}

#[tokio::test(start_paused = true)]
async fn per_capita_and_target_columns_appear_where_they_apply() {
    let _script = Script::new("pages-target", &[Answer::Value(4.0)], Answer::Value(1.0));
    let setup = Setup::new("");
    let text = config_text(
        setup.dir.path(),
        Some(TOKEN),
        &source("steady", "0 3 * * *", "", "pages-target"),
    )
    .replacen("name = \"某县\"\n", "name = \"某县\"\nheadcount = 4\n", 1)
    .replacen("unit = \"次\"\n", "unit = \"次\"\nper_capita = true\n", 1)
        + "\n[[targets]]\nindicator = \"x\"\nper = \"unit\"\nperiod = \"month\"\nmin = 8\n";
    setup.write_text(&text);
    let time = Timeline::new();
    let d = setup.start().await;
    time.at(5.0).await;

    let (status, headers, body) = page(&d, "/?period=2026-11").await;
    html(status, &headers, &body, StatusCode::OK);
    for heading in [
        "<th scope=\"col\">人均</th>",
        "<th scope=\"col\">目标</th>",
        "<th scope=\"col\">完成率</th>",
    ] {
        assert!(body.contains(heading), "{heading}: {body}");
    }
    // 4 for a staff of 4; the monthly 8 pro-rated to 27 of November's 30
    // days is 7.2, of which 4 is 55.6%.
    let row = &body[body.find(r#"<tr id="unit-county""#).unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    let cells: Vec<&str> = row
        .split("<td>")
        .skip(1)
        .map(|c| c.split("</td>").next().unwrap())
        .collect();
    assert_eq!(cells, ["", "", "1", "7.2", "55.6%"], "{row}");
}

#[tokio::test(start_paused = true)]
async fn pages_refuse_a_foreign_host_on_loopback() {
    let _script = Script::new("pages-host", &[], Answer::Value(1.0));
    let setup = Setup::new(&source("steady", "0 3 * * *", "", "pages-host"));
    let d = setup.start().await;
    for uri in ["/", "/sources", "/assets/pages.css"] {
        let request = Request::get(uri)
            .header(header::HOST, "attacker.example")
            .body(Body::empty())
            .unwrap();
        let (status, _) = send(&d, request).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{uri}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_unit_name_opens_the_table_of_its_subtree() {
    let _script = Script::new("pages-focus", &[Answer::Value(1.0)], Answer::Value(1.0));
    let setup = Setup::new("");
    let text = config_text(
        setup.dir.path(),
        Some(TOKEN),
        &source("steady", "0 3 * * *", "", "pages-focus"),
    )
    .replacen(
        "name = \"某县\"\n",
        "name = \"某县\"\n\n[[units]]\nid = \"county/a\"\nname = \"县甲\"\n",
        1,
    );
    setup.write_text(&text);
    let d = setup.start().await;

    // The whole tree: the county, which has a unit below it, links to its
    // subtree; the bureau, which has none, does not.
    let (status, headers, body) = page(&d, "/?period=2026-Q4").await;
    html(status, &headers, &body, StatusCode::OK);
    assert!(
        body.contains(
            r#"<a href="/?period=2026-Q4&#38;unit=county" title="只看本单位及下级单位">某县</a>"#
        ),
        "{body}"
    );
    assert!(
        body.contains(r#"<th scope="row" class="unit d1">县甲</th>"#),
        "{body}"
    );
    assert!(!body.contains("单位层级"), "{body}");

    // The bureau's table: the path back up, its row only, the unit kept by
    // the period form and the previous and next links.
    let (status, headers, body) = page(&d, "/?period=2026-Q4&unit=county%2Fa").await;
    html(status, &headers, &body, StatusCode::OK);
    assert!(
        body.contains(
            r#"<a href="/?period=2026-Q4">全部单位</a> › <a href="/?period=2026-Q4&#38;unit=county">某县</a> › <span>县甲</span>"#
        ),
        "{body}"
    );
    assert!(!body.contains(r#"data-unit="county""#), "{body}");
    assert!(body.contains(r#"data-unit="county/a""#), "{body}");
    assert!(
        body.contains(r#"<input type="hidden" name="unit" value="county/a">"#),
        "{body}"
    );
    assert!(
        body.contains(r#"href="/?period=2026-Q3&#38;unit=county%2Fa""#),
        "{body}"
    );

    let (status, headers, body) = page(&d, "/?unit=nowhere").await;
    html(status, &headers, &body, StatusCode::BAD_REQUEST);
    assert!(body.contains("没有这个单位：“nowhere”"), "{body}");
}
