//! 上传报表 in a real browser: headless Chromium, driven through
//! chromedriver, against a real `tallyd` with the real `csv_form` plugin.
//! A clerk logs in through the form, uploads a form with mistakes and reads
//! each one by row and column, uploads it corrected and lands on the table,
//! which now holds the form's values. Screenshots land in
//! `<target>/tmp/pages/upload-*.png`.

use fantoccini::{Client, Locator};
use tally_domain::period::{Period, PeriodKind, local_day};

use crate::pages::{Driver, browser, browser_tools, screenshot, wait_for};
use crate::support::*;

const TOKEN: &str = "upload-browser-token";

/// The text of every cell of every row of the problems table.
async fn problem_rows(client: &Client) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for row in client
        .find_all(Locator::Css("table.problems tbody tr"))
        .await
        .unwrap()
    {
        let mut cells = Vec::new();
        for cell in row.find_all(Locator::Css("td")).await.unwrap() {
            cells.push(cell.text().await.unwrap());
        }
        rows.push(cells);
    }
    rows
}

/// Chooses `file` in the form of source `forms` and submits it.
async fn upload(client: &Client, file: &std::path::Path) {
    let form = client
        .find(Locator::Css("form#upload-forms"))
        .await
        .unwrap();
    form.find(Locator::Css(r#"input[type="file"]"#))
        .await
        .unwrap()
        .send_keys(&file.display().to_string())
        .await
        .unwrap();
    form.find(Locator::Css(r#"button[type="submit"]"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clerk_uploads_a_form_sees_each_mistake_then_the_corrected_values() {
    let Some((chromium, chromedriver)) = browser_tools() else {
        return;
    };

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_csv_form")]);
    let today = local_day(chrono::Utc::now(), chrono_tz::Asia::Shanghai);
    let quarter = Period::containing(PeriodKind::Quarter, today);
    let month = quarter.start.format("%Y-%m").to_string();
    std::fs::create_dir_all(dir.join("forms")).unwrap();
    let daemon = TestConfig::new(dir, &plugins)
        .daemon(&format!("api_token = \"{TOKEN}\""))
        .county()
        .unit_with("county/a", "县甲", "aliases = [\"某县县甲\"]")
        .unit("county/b", "县乙")
        .meetings()
        .toml(&format!(
            r#"
[[sources]]
id = "forms"
plugin = "csv_form"
units = ["county"]
schedule = "0 3 * * *"
lookback_days = 400
[sources.settings]
dir = {forms}
indicators = ["meetings"]
"#,
            forms = toml_path(&dir.join("forms")),
        ))
        .start();

    // The clerk's files, on the clerk's disk.
    let desk = dir.join("desk");
    std::fs::create_dir_all(desk.join("wrong")).unwrap();
    std::fs::create_dir_all(desk.join("right")).unwrap();
    let name = format!("会议台账_{month}.csv");
    let wrong = desk.join("wrong").join(&name);
    std::fs::write(
        &wrong,
        format!("单位,月份,会议次数\n县丙,{month},1\n县甲,{month},三\n县乙,2026-13,2\n"),
    )
    .unwrap();
    let right = desk.join("right").join(&name);
    std::fs::write(
        &right,
        format!("单位,月份,会议次数\n某县县甲,{month},3\n县乙,{month},4\n"),
    )
    .unwrap();

    let driver = Driver::start(&chromedriver, &dir.join("chromedriver.log"));
    let client = browser(&driver, &chromium, &dir.join("profile")).await;

    // Log in through the form, sent back to the upload page.
    client
        .goto(&format!("{}/login?next=/upload", daemon.base))
        .await
        .unwrap();
    client
        .find(Locator::Css("input#token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    client
        .find(Locator::Css("form.login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .for_url(&url::Url::parse(&format!("{}/upload", daemon.base)).unwrap())
        .await
        .unwrap();
    screenshot(&client, "upload-form").await;

    // With mistakes: each named at its row and column, nothing kept.
    upload(&client, &wrong).await;
    wait_for(&client, "table.problems").await;
    let rows = problem_rows(&client).await;
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(
        (rows[0][1].as_str(), rows[0][2].as_str()),
        ("2", "单位"),
        "{rows:?}"
    );
    assert!(rows[0][3].contains("未知单位 “县丙”"), "{rows:?}");
    assert_eq!(
        (rows[1][1].as_str(), rows[1][2].as_str()),
        ("3", "会议次数")
    );
    assert!(rows[1][3].contains("不是数字：“三”"), "{rows:?}");
    assert_eq!((rows[2][1].as_str(), rows[2][2].as_str()), ("4", "月份"));
    assert!(rows[2][3].contains("日期无法识别：“2026-13”"), "{rows:?}");
    // Not a row left to read: the file as a whole has no value.
    assert_eq!((rows[3][1].as_str(), rows[3][2].as_str()), ("", ""));
    assert!(
        rows[3][3].starts_with("文件中没有任何可用的数据"),
        "{rows:?}"
    );
    let headline = client
        .find(Locator::Css("section.upload-outcome p.error"))
        .await
        .unwrap();
    assert_eq!(
        headline.text().await.unwrap(),
        "文件有 4 处问题，未保存。请改正后重新上传。"
    );
    assert!(
        std::fs::read_dir(dir.join("forms"))
            .unwrap()
            .next()
            .is_none()
    );
    screenshot(&client, "upload-problems").await;

    // Corrected: kept, collected, and the quarter's table shows it.
    upload(&client, &right).await;
    wait_for(&client, "p.notice").await;
    let landed = client.current_url().await.unwrap();
    assert_eq!(landed.path(), "/");
    let query: Vec<(String, String)> = landed.query_pairs().into_owned().collect();
    assert_eq!(
        query,
        [
            ("period".to_owned(), quarter.label().to_owned()),
            ("uploaded".to_owned(), name.clone()),
        ]
    );
    assert_eq!(
        std::fs::read(dir.join("forms").join(&name)).unwrap(),
        std::fs::read(&right).unwrap()
    );
    let county = client
        .find(Locator::Css(r#"tr[data-unit="county"] td.value a"#))
        .await
        .unwrap();
    assert_eq!(county.text().await.unwrap(), "7");
    let notice = client.find(Locator::Css("p.notice")).await.unwrap();
    assert!(notice.text().await.unwrap().contains(&name));
    screenshot(&client, "upload-accepted").await;

    client.close().await.unwrap();
}
