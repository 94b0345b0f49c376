//! 报表下载 and the 本期 page's period forms and tree, through the router:
//! the files of the reports directory and nothing else, the table of any
//! period in the reports' own XLSX and CSV, and the links that expand and
//! collapse the unit tree.

use std::io::Cursor;

use axum::http::{HeaderMap, header};
use calamine::{Data, Reader, Xlsx, open_workbook_from_rs};

use super::plugin::{Answer, Script};
use super::*;
use crate::pages::CONTENT_SECURITY_POLICY;

async fn get(d: &InProcessDaemon, uri: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
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
    (status, headers, bytes.to_vec())
}

async fn page(d: &InProcessDaemon, uri: &str, wanted: StatusCode) -> String {
    let (status, headers, bytes) = get(d, uri).await;
    let body = String::from_utf8(bytes).unwrap();
    assert_eq!(status, wanted, "{uri}: {body}");
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(
        headers[header::CONTENT_SECURITY_POLICY],
        CONTENT_SECURITY_POLICY
    );
    assert!(!body.contains("<script"), "no page has script: {body}");
    body
}

/// A county with two bureaus, the first with a unit of its own.
fn tree_setup(script: &str) -> Setup {
    let setup = Setup::new("");
    let text = config_text(
        setup.dir.path(),
        Some(TOKEN),
        &source("steady", "0 3 * * *", "", script),
    )
    .replacen(
        "name = \"某县\"\n",
        "name = \"某县\"\n\n[[units]]\nid = \"county/a\"\nname = \"县甲\"\n\n\
         [[units]]\nid = \"county/a/x\"\nname = \"甲一\"\n\n\
         [[units]]\nid = \"county/b\"\nname = \"县乙\"\n",
        1,
    );
    setup.write_text(&text);
    setup
}

#[tokio::test(start_paused = true)]
async fn the_report_files_are_listed_and_served_and_nothing_else() {
    let _script = Script::new("dl-files", &[Answer::Value(1.0)], Answer::Value(1.0));
    let setup = Setup::new(&source("steady", "0 3 * * *", "", "dl-files"));
    let d = setup.start().await;
    let reports = setup.dir.path().join("data/reports");
    std::fs::create_dir_all(&reports).unwrap();
    std::fs::write(reports.join("2026-Q3.csv"), "单位,计数\n某县,7\n").unwrap();
    std::fs::write(reports.join("2026-Q3.r2.csv"), "单位,计数\n某县,8\n").unwrap();
    // Not reports: a temporary file, another file, a link out of the
    // directory under a report's name, a directory under one.
    std::fs::write(reports.join(".2026-Q2.csv.1.1.tmp"), "half").unwrap();
    std::fs::write(reports.join("notes.txt"), "private").unwrap();
    std::os::unix::fs::symlink(setup.path(), reports.join("2026-Q1.csv")).unwrap();
    std::fs::create_dir(reports.join("2025-Q4.csv")).unwrap();

    let body = page(&d, "/downloads", StatusCode::OK).await;
    assert!(body.contains("报表下载"), "{body}");
    assert!(
        body.contains(r#"<a href="/downloads/file/2026-Q3.r2.csv" download>2026-Q3.r2.csv</a>"#),
        "{body}"
    );
    assert!(
        body.contains(r#"<a href="/downloads/file/2026-Q3.csv" download>2026-Q3.csv</a> <small>（已有新版）</small>"#),
        "an older revision says so: {body}"
    );
    assert!(body.contains("<td>CSV 表格</td><td>23 B</td>"), "{body}");
    for hidden in ["notes.txt", ".tmp", "2026-Q1.csv", "2025-Q4.csv"] {
        assert!(!body.contains(hidden), "{hidden}: {body}");
    }
    // Newest revision first.
    assert!(body.find("2026-Q3.r2.csv").unwrap() < body.find("file/2026-Q3.csv\"").unwrap());

    let (status, headers, bytes) = get(&d, "/downloads/file/2026-Q3.r2.csv").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(
        headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"2026-Q3.r2.csv\""
    );
    assert_eq!(bytes, "单位,计数\n某县,8\n".as_bytes());

    for uri in [
        "/downloads/file/notes.txt",
        "/downloads/file/.2026-Q2.csv.1.1.tmp",
        "/downloads/file/2026-Q1.csv",
        "/downloads/file/2025-Q4.csv",
        "/downloads/file/..%2Ftally.toml",
        "/downloads/file/..%2F..%2Fdata%2Freports%2F2026-Q3.csv",
        "/downloads/file/%2Fetc%2Fpasswd",
        "/downloads/file/2027-Q1.xlsx",
    ] {
        let body = page(&d, uri, StatusCode::NOT_FOUND).await;
        assert!(body.contains("没有这个报表文件"), "{uri}: {body}");
        assert!(
            !body.contains("private") && !body.contains("[daemon]"),
            "{body}"
        );
    }
    // A path below the route is not a file name at all.
    let (status, _, _) = get(&d, "/downloads/file/a/2026-Q3.csv").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(start_paused = true)]
async fn any_period_downloads_as_the_reports_render_it() {
    let _script = Script::new("dl-table", &[Answer::Value(3.0)], Answer::Value(1.0));
    let setup = tree_setup("dl-table");
    let time = Timeline::new();
    let d = setup.start().await;
    time.at(5.0).await;

    let (status, headers, bytes) = get(&d, "/downloads/table?period=2026-11&format=xlsx").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    assert_eq!(
        headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"tally-2026-11.xlsx\""
    );
    let mut wb: Xlsx<_> = open_workbook_from_rs(Cursor::new(bytes)).unwrap();
    assert_eq!(wb.sheet_names(), ["统计表", "计数", "数据来源"]);
    let t = wb.worksheet_range("统计表").unwrap();
    let found = t
        .rows()
        .find(|r| r.first() == Some(&Data::String("某县".to_owned())))
        .expect("the county's row");
    assert_eq!(found[1], Data::Float(3.0), "{found:?}");

    // A subtree, over a range given by the form's date fields, as CSV: the
    // name in UTF-8 per RFC 6266.
    let (status, headers, bytes) = get(
        &d,
        "/downloads/table?from=2026-11-01&to=2026-11-30&unit=county%2Fa&format=csv",
    )
    .await;
    let csv = String::from_utf8(bytes).unwrap();
    assert_eq!(status, StatusCode::OK, "{csv}");
    assert_eq!(headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(
        headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"tally-2026-11-01..2026-11-30-__.csv\"; \
         filename*=UTF-8''tally-2026-11-01..2026-11-30-%E5%8E%BF%E7%94%B2.csv"
    );
    assert!(csv.contains("县甲"), "{csv}");
    assert!(!csv.contains("县乙"), "only the subtree: {csv}");

    for (uri, says) in [
        ("/downloads/table?period=2026-11", "缺少参数 format"),
        ("/downloads/table?period=2026-11&format=pdf", "xlsx 或 csv"),
        ("/downloads/table?period=2026-13&format=csv", "2026-13"),
        ("/downloads/table?from=2026-11-01&format=csv", "区间需要"),
        (
            "/downloads/table?period=2026&from=2026-11-01&to=2026-11-02&format=csv",
            "只能给一种",
        ),
        (
            "/downloads/table?period=2026-11&unit=nowhere&format=csv",
            "nowhere",
        ),
        (
            "/downloads/table?period=2026-11&format=csv&x=1",
            "未知参数 x",
        ),
    ] {
        let body = page(&d, uri, StatusCode::BAD_REQUEST).await;
        assert!(body.contains(says), "{uri}: {body}");
    }

    // The page's form offers the period shown and every unit.
    let body = page(&d, "/downloads?period=2026-11", StatusCode::OK).await;
    assert!(
        body.contains(r#"<input type="hidden" name="period" value="2026-11">"#),
        "{body}"
    );
    assert!(
        body.contains(r#"<option value="county/a/x">　　甲一</option>"#),
        "{body}"
    );
    assert!(
        body.contains(r#"<button type="submit" name="format" value="csv">"#),
        "{body}"
    );
    assert!(body.contains("还没有报表文件"), "{body}");
}

#[tokio::test(start_paused = true)]
async fn the_period_forms_ask_for_a_quarter_month_year_or_range() {
    let _script = Script::new("dl-periods", &[Answer::Value(3.0)], Answer::Value(1.0));
    let setup = Setup::new(&source("steady", "0 3 * * *", "", "dl-periods"));
    let d = setup.start().await;

    let body = page(&d, "/", StatusCode::OK).await;
    // Quarters up to the one the clock is in (2026-Q4), that one chosen.
    assert!(
        body.contains(r#"<option value="2026-Q4" selected>2026-Q4</option>"#),
        "{body}"
    );
    assert!(
        body.contains(r#"<option value="2024-Q1">2024-Q1</option>"#),
        "{body}"
    );
    assert!(
        body.contains(r#"<input type="month" name="period" value="2026-10""#),
        "{body}"
    );
    assert!(
        body.contains(r#"<input type="number" name="period" value="2026""#),
        "{body}"
    );
    assert!(
        body.contains(r#"<input type="date" name="from" value="2026-10-01""#),
        "{body}"
    );
    assert!(
        body.contains(r#"<input type="date" name="to" value="2026-12-31""#),
        "{body}"
    );
    // This table downloads as it is.
    assert!(
        body.contains(r#"<a href="/downloads/table?period=2026-Q4&#38;format=xlsx">XLSX</a>"#),
        "{body}"
    );

    let body = page(&d, "/?from=2026-11-02&to=2026-11-20", StatusCode::OK).await;
    assert!(body.contains("2026-11-02..2026-11-20 统计表"), "{body}");
    let body = page(&d, "/?period=2025", StatusCode::OK).await;
    assert!(body.contains("2025 统计表"), "{body}");
    // A quarter long past is offered too, chosen.
    let body = page(&d, "/?period=2019-Q2", StatusCode::OK).await;
    assert!(
        body.contains(r#"<option value="2019-Q2" selected>"#),
        "{body}"
    );

    let body = page(
        &d,
        "/?from=2026-11-20&to=2026-11-02",
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(body.contains("2026-11-20..2026-11-02"), "{body}");
    let body = page(&d, "/?to=2026-11-02", StatusCode::BAD_REQUEST).await;
    assert!(body.contains("区间需要"), "{body}");
}

/// The ids of the rows of the 本期 table, in order.
fn rows(body: &str) -> Vec<&str> {
    body.split(r#"data-unit=""#)
        .skip(1)
        .map(|r| &r[..r.find('"').unwrap()])
        .collect()
}

/// The link of the toggle of `unit`'s row, unescaped.
fn toggle(body: &str, unit: &str) -> String {
    let row = &body[body.find(&format!(r#"data-unit="{unit}""#)).unwrap()..];
    let start =
        row.find(r#"<a class="toggle" href=""#).unwrap() + r#"<a class="toggle" href=""#.len();
    row[start..start + row[start..].find('"').unwrap()].replace("&#38;", "&")
}

#[tokio::test(start_paused = true)]
async fn links_expand_and_collapse_the_unit_tree() {
    let _script = Script::new("dl-tree", &[Answer::Value(3.0)], Answer::Value(1.0));
    let setup = tree_setup("dl-tree");
    let d = setup.start().await;

    // At first the top unit is open, the units below it closed.
    let body = page(&d, "/?period=2026-Q4", StatusCode::OK).await;
    assert_eq!(rows(&body), ["county", "county/a", "county/b"]);
    assert!(body.contains(r#"aria-expanded="true">▾</a>"#), "{body}");
    let open_a = toggle(&body, "county/a");
    assert_eq!(
        open_a,
        "/?period=2026-Q4&open=county%2Ccounty%2Fa#unit-county/a"
    );

    let body = page(&d, open_a.split('#').next().unwrap(), StatusCode::OK).await;
    assert_eq!(
        rows(&body),
        ["county", "county/a", "county/a/x", "county/b"]
    );
    // The period forms and the next period keep the tree as it is.
    assert!(
        body.contains(r#"<input type="hidden" name="open" value="county,county/a">"#),
        "{body}"
    );
    assert!(
        body.contains(r#"href="/?period=2027-Q1&#38;open=county%2Ccounty%2Fa""#),
        "{body}"
    );
    // Closing the county hides all below it.
    let close = toggle(&body, "county");
    assert_eq!(close, "/?period=2026-Q4&open=county%2Fa#unit-county");
    let body = page(&d, close.split('#').next().unwrap(), StatusCode::OK).await;
    assert_eq!(rows(&body), ["county"]);

    let body = page(&d, "/?period=2026-Q4&open=*", StatusCode::OK).await;
    assert_eq!(
        rows(&body),
        ["county", "county/a", "county/a/x", "county/b"]
    );
    let body = page(&d, "/?period=2026-Q4&open=", StatusCode::OK).await;
    assert_eq!(rows(&body), ["county"]);
    // A subtree's table opens its top unit.
    let body = page(&d, "/?period=2026-Q4&unit=county%2Fa", StatusCode::OK).await;
    assert_eq!(rows(&body), ["county/a", "county/a/x"]);
}
