//! 报表下载 and the 本期 page in a real browser (headless Chromium through
//! chromedriver, helpers of `pages.rs`): the clerk downloads a report file
//! and the quarter's table as XLSX and as CSV with the browser itself
//! (Chromium's download directory set in its preferences, so the file name
//! comes from the answer's Content-Disposition as a clerk gets it), and the
//! files are read back; the tree collapses and expands by links; a 未报送
//! cell shows its reason when opened; and every page fits a 1366×768 laptop
//! and a 390×844 phone without scrolling sideways, with a screenshot of each
//! at both sizes.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use calamine::{Data, Reader, Xlsx, open_workbook_from_rs};
use fantoccini::{Client, Locator};
use serde_json::json;
use tally_domain::period::{Period, PeriodKind, local_day};

use crate::pages::{Driver, browser_tools, browser_with_prefs, screenshot, wait_for};
use crate::support::*;

/// Waits for the browser to finish downloading `name` into `dir` and
/// returns its bytes. Not a timed assertion: a bound on waiting.
fn downloaded(dir: &Path, name: &str) -> Vec<u8> {
    let path = dir.join(name);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let partial = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().ends_with(".crdownload"))
            })
            .unwrap_or(false);
        if path.is_file() && !partial {
            return std::fs::read(&path).unwrap();
        }
        let present: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "{name} was not downloaded into {}; there: {present:?}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first figure of a unit's row in 「统计表」, the sheets checked.
fn xlsx_value(bytes: &[u8], unit: &str) -> Data {
    let mut wb: Xlsx<_> = open_workbook_from_rs(Cursor::new(bytes.to_vec())).expect("an xlsx");
    assert_eq!(wb.sheet_names(), ["统计表", "会议次数", "数据来源"]);
    let table = wb.worksheet_range("统计表").unwrap();
    let row = table
        .rows()
        .find(|r| r.first() == Some(&Data::String(unit.to_owned())))
        .unwrap_or_else(|| panic!("no row of {unit} in 统计表"));
    row[1].clone()
}

/// The rows of the 本期 table shown.
async fn row_count(client: &Client) -> usize {
    client
        .find_all(Locator::Css("table.summary tbody tr"))
        .await
        .unwrap()
        .len()
}

/// The page's width against the window's: the page never scrolls sideways.
async fn fits(client: &Client, what: &str) -> (u64, u64) {
    let widths = client
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            Vec::new(),
        )
        .await
        .unwrap();
    let scroll = widths[0].as_u64().unwrap();
    let inner = widths[1].as_u64().unwrap();
    assert!(
        scroll <= inner,
        "{what}: the page is {scroll} px wide in a window of {inner} px"
    );
    (scroll, inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clerk_downloads_the_tables_and_reads_every_page_on_a_laptop_and_a_phone() {
    let Some((chromium, chromedriver)) = browser_tools() else {
        return;
    };

    // A county with three bureaus, two of which report on the first day of
    // the quarter the daemon is in; the third reports nothing (未报送).
    // The report of the quarter before is written at start.
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
    let cfg = TestConfig::new(dir, &plugins)
        .county()
        .unit("county/a", "县甲")
        .unit("county/b", "县乙")
        .unit("county/c", "县丙")
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

[reports]
write_on_start = true
"#,
            from = quarter.start,
            forms = toml_path(&dir.join("forms")),
        ));
    let reports_dir = cfg.data().join("reports");
    let daemon = cfg.start();
    daemon.wait_for("the form collected", 60, |d| {
        !d.source("forms")["last_success"].is_null()
    });
    let report_name = format!("{}.xlsx", quarter.previous().label());
    daemon.wait_for("the report written at start", 60, |d| {
        d.get_json("/api/v1/reports")["reports"]
            .as_array()
            .is_some_and(|r| r.iter().any(|f| f["name"] == report_name.as_str()))
    });

    let downloads: PathBuf = dir.join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let driver = Driver::start(&chromedriver, &dir.join("chromedriver.log"));
    let client = browser_with_prefs(
        &driver,
        &chromium,
        &dir.join("profile"),
        json!({
            "download.default_directory": downloads,
            "download.prompt_for_download": false,
            "safebrowsing.enabled": false,
        }),
    )
    .await;

    // 报表下载, through the navigation.
    client.goto(&format!("{}/", daemon.base)).await.unwrap();
    client
        .find(Locator::LinkText("报表下载"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .for_url(&url::Url::parse(&format!("{}/downloads", daemon.base)).unwrap())
        .await
        .unwrap();

    // The report file, as the daemon wrote it.
    let link = client
        .find(Locator::Css(&format!(r#"tr[data-file="{report_name}"] a"#)))
        .await
        .unwrap();
    assert_eq!(link.text().await.unwrap(), report_name);
    link.click().await.unwrap();
    let got = downloaded(&downloads, &report_name);
    assert_eq!(got, std::fs::read(reports_dir.join(&report_name)).unwrap());
    xlsx_value(&got, "某县");

    // The current quarter's table (the form's default), all units, as XLSX.
    let form = client.find(Locator::Css("form.download")).await.unwrap();
    form.find(Locator::Css(r#"button[value="xlsx"]"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let xlsx = downloaded(&downloads, &format!("tally-{}.xlsx", quarter.label()));
    assert_eq!(xlsx_value(&xlsx, "某县"), Data::Float(6.0));
    assert_eq!(xlsx_value(&xlsx, "县甲"), Data::Float(2.0));

    // One bureau's table as CSV: its name in the file name (RFC 6266).
    let form = client.find(Locator::Css("form.download")).await.unwrap();
    form.find(Locator::Css(r#"select[name="unit"]"#))
        .await
        .unwrap()
        .select_by_value("county/b")
        .await
        .unwrap();
    form.find(Locator::Css(r#"button[value="csv"]"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let csv = downloaded(&downloads, &format!("tally-{}-县乙.csv", quarter.label()));
    let csv = String::from_utf8(csv).unwrap();
    let row = csv
        .lines()
        .find(|l| l.starts_with("county/b,"))
        .unwrap_or_else(|| panic!("no row of 县乙: {csv}"));
    assert!(row.starts_with("county/b,县乙,4,"), "{row}");
    assert!(!csv.contains("县甲"), "only the bureau's subtree: {csv}");

    // 本期: the county's subtree collapses and expands by links.
    client.goto(&format!("{}/", daemon.base)).await.unwrap();
    assert_eq!(row_count(&client).await, 4);
    client
        .find(Locator::Css(r#"tr[data-unit="county"] a.toggle"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .for_element(Locator::Css(
            r#"tr[data-unit="county"] a.toggle[aria-expanded="false"]"#,
        ))
        .await
        .unwrap();
    assert_eq!(row_count(&client).await, 1);
    client
        .find(Locator::Css(r#"tr[data-unit="county"] a.toggle"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&client, r#"tr[data-unit="county/c"]"#).await;
    assert_eq!(row_count(&client).await, 4);

    // 县丙 reported nothing: the cell says so, and why when opened.
    let mark = client
        .find(Locator::Css(r#"tr[data-unit="county/c"] details.mark"#))
        .await
        .unwrap();
    let summary = mark.find(Locator::Css("summary")).await.unwrap();
    assert_eq!(summary.text().await.unwrap(), "未报送");
    assert_eq!(mark.attr("open").await.unwrap(), None);
    summary.click().await.unwrap();
    assert!(
        mark.text()
            .await
            .unwrap()
            .contains("应当报送的数据来源没有收到"),
        "the reason shows when opened"
    );

    // A month, by the period form.
    let month = client
        .find(Locator::Css(r#"input[type="month"]"#))
        .await
        .unwrap();
    assert_eq!(
        month.prop("value").await.unwrap().as_deref(),
        Some(quarter.start.format("%Y-%m").to_string().as_str())
    );
    month
        .find(Locator::XPath("ancestor::form//button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The page keeps the tree as it was (`open`), so the URL is not all.
    let month_label = quarter.start.format("%Y-%m").to_string();
    client
        .wait()
        .for_element(Locator::XPath(&format!(
            "//h1[text()='{month_label} 统计表']"
        )))
        .await
        .unwrap();
    let url = client.current_url().await.unwrap();
    assert!(
        url.query_pairs()
            .any(|(k, v)| k == "period" && v == month_label.as_str()),
        "{url}"
    );

    // Every page on a laptop and on a phone.
    let pages = [
        ("current", "/?open=*".to_owned()),
        (
            "figure",
            format!(
                "/figure?period={}&unit=county%2Fa&indicator=meetings",
                quarter.label()
            ),
        ),
        ("sources", "/sources".to_owned()),
        ("downloads", "/downloads".to_owned()),
    ];
    for (width, height, size) in [(1366, 768, "laptop"), (390, 844, "phone")] {
        client.set_window_size(width, height).await.unwrap();
        for (name, path) in &pages {
            client
                .goto(&format!("{}{path}", daemon.base))
                .await
                .unwrap();
            client.find(Locator::Css("h1")).await.unwrap();
            let (_, inner) = fits(&client, &format!("{name} on a {size}")).await;
            if size == "phone" {
                assert!(inner <= 400, "a phone's window, not {inner} px");
            }
            screenshot(&client, &format!("{name}-{size}")).await;
        }
    }

    client.close().await.unwrap();
}
