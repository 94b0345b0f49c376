//! Logging in and running a source from the pages, in a real browser
//! (headless Chromium through chromedriver) against a real `tallyd`: a
//! clerk whose form could not be read fixes it, logs in through the form,
//! presses 立即采集 on 数据来源, sees the source's state and last success
//! change, and logs out. Screenshots of each step land in
//! `<target>/tmp/pages/actions-*.png`.

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use tally_domain::period::{Period, PeriodKind, local_day};

use crate::pages::{Driver, browser, browser_tools, screenshot, wait_for};
use crate::support::*;

const TOKEN: &str = "pages-actions-token-7d2e";

/// The text of the first element matching `css`, or `None` while the page
/// is loading or refreshing itself.
async fn text_of(client: &Client, css: &str) -> Option<String> {
    let element = client.find(Locator::Css(css)).await.ok()?;
    element.text().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clerk_logs_in_runs_a_source_and_sees_its_state_change() {
    let Some((chromium, chromedriver)) = browser_tools() else {
        return;
    };

    // A form source whose directory is not there yet: its run at start fails.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_csv_form")]);
    let today = local_day(chrono::Utc::now(), chrono_tz::Asia::Shanghai);
    let quarter = Period::containing(PeriodKind::Quarter, today);
    let forms = dir.join("forms");
    let daemon = TestConfig::new(dir, &plugins)
        .daemon(&format!("api_token = \"{TOKEN}\"\n"))
        .county()
        .unit("county/a", "县甲")
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
            forms = toml_path(&forms),
        ))
        .start();
    daemon.wait_for("the first run failed", 60, |d| {
        !d.source("forms")["last_error"].is_null()
    });

    let driver = Driver::start(&chromedriver, &dir.join("chromedriver.log"));
    let client = browser(&driver, &chromium, &dir.join("profile")).await;

    // Not logged in: 数据来源 shows the failure and no buttons.
    client
        .goto(&format!("{}/sources", daemon.base))
        .await
        .unwrap();
    assert_eq!(
        text_of(&client, "#source-forms td.state").await.unwrap(),
        "上次采集失败"
    );
    assert!(client.find(Locator::Css("td.actions")).await.is_err());
    screenshot(&client, "actions-1-failed").await;

    // Log in through the form, which brings the clerk back to 数据来源.
    client
        .find(Locator::Css("main a[href^='/login']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let token = client.find(Locator::Css("input#token")).await.unwrap();
    token.send_keys("wrong-token").await.unwrap();
    client
        .find(Locator::Css("form.login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&client, "p.error").await;
    assert_eq!(text_of(&client, "p.error").await.unwrap(), "令牌不正确。");
    let token = client.find(Locator::Css("input#token")).await.unwrap();
    token.send_keys(TOKEN).await.unwrap();
    screenshot(&client, "actions-2-login").await;
    client
        .find(Locator::Css("form.login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .for_url(&url::Url::parse(&format!("{}/sources", daemon.base)).unwrap())
        .await
        .unwrap();
    assert!(
        client
            .find(Locator::Css("form.account button"))
            .await
            .is_ok()
    );
    assert_eq!(
        text_of(&client, "#source-forms td:nth-of-type(2)")
            .await
            .unwrap(),
        "从未成功"
    );

    // The clerk puts the corrected form in place and presses 立即采集.
    std::fs::create_dir_all(&forms).unwrap();
    std::fs::write(
        forms.join("meetings.csv"),
        format!("单位,日期,会议次数\n县甲,{},5\n", quarter.start),
    )
    .unwrap();
    client
        .find(Locator::Css("#source-forms form[action$='/run'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let flash = wait_for(&client, "p.flash").await;
    assert!(
        flash.text().await.unwrap().starts_with("已开始采集 forms"),
        "{}",
        flash.text().await.unwrap()
    );
    screenshot(&client, "actions-3-run").await;

    // The page shows the new state once the run is over (it refreshes
    // itself while a source runs; the test also reloads it).
    // Not a timed assertion: a bound on waiting for the run.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        client
            .goto(&format!("{}/sources", daemon.base))
            .await
            .unwrap();
        let state = text_of(&client, "#source-forms td.state").await;
        let success = text_of(&client, "#source-forms td:nth-of-type(2)").await;
        if state.as_deref() == Some("正常") && success.as_deref() != Some("从未成功") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not show: state {state:?}, last success {success:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    screenshot(&client, "actions-4-done").await;
    let run = daemon.source("forms");
    assert_eq!(run["last_run"]["trigger"], "manual", "{run}");
    assert_eq!(run["last_run"]["observations"], 1, "{run}");

    // The table has the form's number.
    client.goto(&format!("{}/", daemon.base)).await.unwrap();
    let bureau = client
        .find(Locator::Css(r#"tr[data-unit="county/a"] td.value a"#))
        .await
        .unwrap();
    assert_eq!(bureau.text().await.unwrap(), "5");

    // Logging out takes the buttons away.
    client
        .find(Locator::Css("form.account button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .for_url(&url::Url::parse(&format!("{}/", daemon.base)).unwrap())
        .await
        .unwrap();
    client
        .goto(&format!("{}/sources", daemon.base))
        .await
        .unwrap();
    assert!(client.find(Locator::LinkText("登录")).await.is_ok());
    assert!(client.find(Locator::Css("td.actions")).await.is_err());
    screenshot(&client, "actions-5-logged-out").await;

    client.close().await.unwrap();
}
