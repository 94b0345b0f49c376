//! The 情况报告 page in a real browser: headless Chromium through
//! chromedriver against a real `tallyd` that collected a form. The clerk
//! opens 情况报告 from the navigation, reads the draft of the county's
//! quarter, picks a bureau with the form, and takes the DOCX link, whose
//! document holds the same paragraphs. A screenshot lands in
//! `<target>/tmp/pages/narrative.png`.

use fantoccini::Locator;
use tally_domain::period::{Period, PeriodKind, local_day};

use crate::narrative::docx_text;
use crate::pages::{Driver, browser, browser_tools, screenshot, wait_for};
use crate::reports::get_bytes;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clerk_reads_the_draft_and_downloads_it_as_docx() {
    let Some((chromium, chromedriver)) = browser_tools() else {
        return;
    };

    // Meetings on the first day of the quarter the daemon is in now (the
    // page's default period): 2 at 县甲, 4 at 县乙.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_csv_form")]);
    let today = local_day(chrono::Utc::now(), chrono_tz::Asia::Shanghai);
    let quarter = Period::containing(PeriodKind::Quarter, today);
    std::fs::create_dir_all(dir.join("forms")).unwrap();
    std::fs::write(
        dir.join("forms/meetings.csv"),
        format!(
            "\u{feff}单位,日期,会议次数\n县甲,{day},2\ncounty/b,{day},4\n",
            day = quarter.start
        ),
    )
    .unwrap();
    let daemon = TestConfig::new(dir, &plugins)
        .county()
        .unit("county/a", "县甲")
        .unit("county/b", "县乙")
        .meetings()
        .toml(&format!(
            r#"
[[sources]]
id = "forms"
plugin = "csv_form"
units = ["county"]
schedule = "0 3 * * *"
backfill_from = "{from}"
[sources.settings]
dir = {forms}
indicators = ["meetings"]
"#,
            from = quarter.start,
            forms = toml_path(&dir.join("forms")),
        ))
        .start();
    daemon.wait_for("the form collected", 60, |d| {
        !d.source("forms")["last_success"].is_null()
    });

    let driver = Driver::start(&chromedriver, &dir.join("chromedriver.log"));
    let client = browser(&driver, &chromium, &dir.join("profile")).await;
    client.goto(&format!("{}/", daemon.base)).await.unwrap();
    client
        .find(Locator::LinkText("情况报告"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let title = wait_for(&client, "article.narrative h1").await;
    let year = quarter.start.format("%Y").to_string();
    assert!(
        title
            .text()
            .await
            .unwrap()
            .starts_with(&format!("某县{year}年第")),
        "the county's report of this quarter"
    );
    let paragraphs = client
        .find_all(Locator::Css("article.narrative p"))
        .await
        .unwrap();
    let mut text = String::new();
    for p in &paragraphs {
        text.push_str(&p.text().await.unwrap());
        text.push('\n');
    }
    assert!(text.contains("召开会议6次；"), "{text}");
    screenshot(&client, "narrative").await;

    // 县乙 alone, picked with the form.
    client
        .find(Locator::Css("select#unit"))
        .await
        .unwrap()
        .select_by_value("county/b")
        .await
        .unwrap();
    client
        .find(Locator::Css("form.narrative-pick button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .for_url(
            &url::Url::parse(&format!(
                "{}/report?unit=county%2Fb&period={}",
                daemon.base,
                quarter.label()
            ))
            .unwrap(),
        )
        .await
        .unwrap();
    let title = client
        .find(Locator::Css("article.narrative h1"))
        .await
        .unwrap();
    assert!(title.text().await.unwrap().starts_with("县乙"));
    let cells = client
        .find_all(Locator::Css("table.figures td"))
        .await
        .unwrap();
    assert_eq!(cells[0].text().await.unwrap(), "4次");

    // The download link gives the same draft as a Word document.
    let href = client
        .find(Locator::Css("a#download-docx"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .expect("a link");
    let (status, head, docx) = get_bytes(&format!("{}{href}", daemon.base));
    assert_eq!(status, 200, "{head}");
    let doc = docx_text(&docx);
    assert!(doc.contains("召开会议4次；"), "{doc}");
    assert!(doc.contains("附表：本期主要数据\n"), "{doc}");
    client.close().await.unwrap();
}
