//! The clerks' pages in a real browser: headless Chromium, driven through
//! chromedriver (WebDriver), against a real `tallyd` collecting a real form.
//! The test opens the current quarter at `/`, opens the county's subtree,
//! finds a bureau's row and its figure, clicks it and reads the
//! observations behind it, then the sources. Screenshots of
//! each page land in `<target>/tmp/pages/` for people to look at.
//!
//! CI installs Debian's `chromium` and `chromium-driver` (`.ci/run`);
//! elsewhere the test says it is skipped when they are missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tally_domain::period::{Period, PeriodKind, local_day};

use crate::support::*;

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// Chromium and chromedriver, or `None` (the test then says it is skipped)
/// outside CI when they are not installed; in CI their absence fails.
pub(crate) fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let (Some(chromium), Some(chromedriver)) = (which("chromium"), which("chromedriver")) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium or chromedriver is missing in CI: .ci/run must install Debian's chromium and chromium-driver"
        );
        eprintln!(
            "chromium or chromedriver not installed: skipping the browser test (CI installs them)"
        );
        return None;
    };
    Some((chromium, chromedriver))
}

/// A chromedriver on a free loopback port; killed on drop.
pub(crate) struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    pub(crate) fn start(chromedriver: &Path, log: &Path) -> Driver {
        let port = free_port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        // Not a timed assertion: a bound on waiting for the driver to listen.
        let deadline = Instant::now() + Duration::from_secs(60);
        while get(&format!("{url}/status")).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {url}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn browser(driver: &Driver, chromium: &Path, profile: &Path) -> Client {
    browser_with_prefs(driver, chromium, profile, json!({})).await
}

/// A browser session with Chromium preferences set (`prefs` of
/// `goog:chromeOptions`: where downloads go, for one).
pub(crate) async fn browser_with_prefs(
    driver: &Driver,
    chromium: &Path,
    profile: &Path,
    prefs: serde_json::Value,
) -> Client {
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new",
                // Tests and CI run as root, where Chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1366,768",
                "--lang=zh-CN",
                format!("--user-data-dir={}", profile.display()),
            ],
            "prefs": prefs,
        },
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("no browser session through chromedriver: {e}"))
}

/// The element `css` names, once the page shows it. Unlike fantoccini's
/// `wait().for_element`, a command that fails because a navigation is under
/// way (a form post, or the page's own refresh while a source runs: WebDriver
/// answers "aborted by navigation") is tried again, not returned.
pub(crate) async fn wait_for(client: &Client, css: &str) -> fantoccini::elements::Element {
    // Not a timed assertion: a bound on waiting for the page.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.find(Locator::Css(css)).await {
            Ok(element) => return element,
            Err(err) => {
                assert!(Instant::now() < deadline, "{css} did not appear: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

pub(crate) async fn screenshot(client: &Client, name: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pages");
    std::fs::create_dir_all(&dir).unwrap();
    let png = client.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clerk_opens_the_quarter_and_follows_a_figure_to_its_observations() {
    let Some((chromium, chromedriver)) = browser_tools() else {
        return;
    };

    // A county with two bureaus whose form has rows on the first day of the
    // quarter the daemon is in now (its time zone is the default, Shanghai).
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

    // 本期: the current quarter by default, the county above its bureaus.
    client.goto(&format!("{}/", daemon.base)).await.unwrap();
    let title = client.find(Locator::Css("h1")).await.unwrap();
    assert_eq!(
        title.text().await.unwrap(),
        format!("{} 统计表", quarter.label())
    );
    // The stylesheet loaded under the page's Content-Security-Policy.
    let header = client.find(Locator::Css("header")).await.unwrap();
    assert_eq!(
        header.css_value("background-color").await.unwrap(),
        "rgba(31, 58, 95, 1)"
    );
    let county = client
        .find(Locator::Css(r#"tr[data-unit="county"]"#))
        .await
        .unwrap();
    assert_eq!(
        county
            .find(Locator::Css("th a:not(.toggle)"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "某县"
    );
    assert_eq!(
        county
            .find(Locator::Css("td.value a"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "6"
    );
    // The county's name opens the table of its subtree, with the path back.
    county
        .find(Locator::Css("th a:not(.toggle)"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .for_url(
            &url::Url::parse(&format!(
                "{}/?period={}&unit=county",
                daemon.base,
                quarter.label()
            ))
            .unwrap(),
        )
        .await
        .unwrap();
    let crumbs = client.find(Locator::Css("nav.crumbs")).await.unwrap();
    assert_eq!(crumbs.text().await.unwrap(), "全部单位 › 某县");
    let bureau = client
        .find(Locator::Css(r#"tr[data-unit="county/a"]"#))
        .await
        .unwrap();
    assert_eq!(
        bureau
            .find(Locator::Css("th"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "县甲"
    );
    let figure = bureau.find(Locator::Css("td.value a")).await.unwrap();
    assert_eq!(figure.text().await.unwrap(), "2");
    screenshot(&client, "current").await;

    // The figure's observations, one click away.
    figure.click().await.unwrap();
    client
        .wait()
        .for_url(
            &url::Url::parse(&format!(
                "{}/figure?period={}&unit=county%2Fa&indicator=meetings",
                daemon.base,
                quarter.label()
            ))
            .unwrap(),
        )
        .await
        .unwrap();
    let title = client.find(Locator::Css("h1")).await.unwrap();
    assert_eq!(title.text().await.unwrap(), "县甲 · 会议次数");
    let rows = client
        .find_all(Locator::Css("table.observations tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let mut cells = Vec::new();
    for cell in rows[0].find_all(Locator::Css("td")).await.unwrap() {
        cells.push(cell.text().await.unwrap());
    }
    assert_eq!(cells[0], "forms", "{cells:?}");
    assert_eq!(cells[1], "县甲", "{cells:?}");
    assert_eq!(cells[3], quarter.start.to_string(), "{cells:?}");
    assert_eq!(cells[4], "2", "{cells:?}");
    screenshot(&client, "figure").await;

    // 数据来源, through the navigation.
    client
        .find(Locator::LinkText("数据来源"))
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
    let state = client
        .find(Locator::Css("#source-forms td.state"))
        .await
        .unwrap();
    assert_eq!(state.text().await.unwrap(), "正常");
    screenshot(&client, "sources").await;

    client.close().await.unwrap();
}
