//! 上传报表 through the router, with the real `csv_form` plugin linked in:
//! the check of a file by row and column (each kind of problem a clerk
//! makes), a file with problems left out of the source's directory, a clean
//! one kept, collected at once and shown in the table.

use std::path::Path;
use std::sync::Arc;

use axum::http::header;
use tally_host::{PluginLibrary, PluginRegistry};
use tally_plugin::abi::StaticDescriptor;

use super::pages_actions::{HOST, ORIGIN, csrf_of, login, respond};
use super::*;
use crate::pages::upload::{ProblemRow, problems};

static CSV_FORM: StaticDescriptor = StaticDescriptor::new::<tally_csv_form::CsvForm>("1.0.0", true);

/// A county with two bureaus (one known by an alias too), two indicators
/// and a form source reading `<dir>/forms`.
fn config(dir: &Path) -> String {
    format!(
        r#"
[daemon]
listen = "127.0.0.1:9"
timezone = "UTC"
data_dir = "{data}"
plugin_dirs = []
api_token = "{TOKEN}"

[[units]]
id = "county"
name = "某县"

[[units]]
id = "county/natres"
name = "自然资源局"
aliases = ["某县自然资源局"]

[[units]]
id = "county/edu"
name = "教育局"

[[indicators]]
id = "meetings"
name = "会议次数"
kind = "count"
unit = "次"

[[indicators]]
id = "trainings"
name = "培训次数"
kind = "count"
unit = "次"

[[sources]]
id = "forms"
plugin = "csv_form"
units = ["county"]
schedule = "0 0 3 * * *"
lookback_days = 400
[sources.settings]
dir = "{forms}"
indicators = ["meetings", "trainings"]
"#,
        data = dir.join("data").display(),
        forms = dir.join("forms").display(),
    )
}

struct Forms {
    dir: tempfile::TempDir,
    daemon: InProcessDaemon,
    /// The `Cookie` of a session logged in with the API token.
    cookie: String,
}

/// How a post reaches the daemon.
struct From<'a> {
    cookie: Option<&'a str>,
    origin: &'a str,
    /// The form's `csrf` part; `None`: the session's.
    csrf: Option<&'a str>,
}

impl Forms {
    async fn start() -> Forms {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("forms")).unwrap();
        let path = dir.path().join("tally.toml");
        std::fs::write(&path, config(dir.path())).unwrap();
        let config = Config::load(&path).unwrap();
        let registry =
            PluginRegistry::from_libraries(vec![PluginLibrary::linked(&CSV_FORM).unwrap()]);
        let daemon = Daemon::builder(config)
            .clock(Arc::new(TokioClock::new(t0())))
            .plugins(registry)
            .in_process()
            .await
            .unwrap();
        // A source that never ran runs at start (with its directory still
        // empty): let that run end, so that the runs a test sees are its own.
        for _ in 0..1000 {
            if !source_json(&daemon, "forms").await["last_run"].is_null() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let cookie = login(&daemon).await;
        Forms {
            dir,
            daemon,
            cookie,
        }
    }

    /// A browser's post from the upload page of a logged-in clerk.
    fn page(&self) -> From<'_> {
        From {
            cookie: Some(&self.cookie),
            origin: ORIGIN,
            csrf: None,
        }
    }

    fn forms(&self) -> std::path::PathBuf {
        self.dir.path().join("forms")
    }

    fn stored(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.forms())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The problems the check finds in `bytes` uploaded as `name`.
    async fn check(&self, name: &str, bytes: &[u8]) -> Vec<ProblemRow> {
        let staging = tempfile::tempdir().unwrap();
        let staged = staging.path().join(name);
        std::fs::write(&staged, bytes).unwrap();
        let checked = self
            .daemon
            .engine()
            .check_staged("forms", staging.path())
            .await
            .unwrap();
        let engine = self.daemon.engine();
        problems(&checked, &staged, |s| engine.config.secrets().redact(s))
    }

    /// `POST /upload/forms` with `parts` (name, file name, bytes) from a
    /// logged-in clerk's page.
    async fn post(&self, parts: &[(&str, Option<&str>, &[u8])]) -> (StatusCode, String, String) {
        self.post_from(self.page(), parts).await
    }

    /// `POST /upload/forms` with `parts` and the form's `csrf`.
    async fn post_from(
        &self,
        from: From<'_>,
        parts: &[(&str, Option<&str>, &[u8])],
    ) -> (StatusCode, String, String) {
        let csrf = match from.csrf {
            Some(csrf) => csrf.to_owned(),
            None => csrf_of(&self.get("/upload").await.1),
        };
        let boundary = "----tally-upload-test";
        let mut body = Vec::new();
        let csrf_part = [("csrf", None, csrf.as_bytes())];
        for (name, file, bytes) in parts.iter().chain(csrf_part.iter()) {
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            match file {
                Some(file) => body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\n\
                         Content-Type: application/octet-stream\r\n\r\n"
                    )
                    .as_bytes(),
                ),
                None => body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let mut request = Request::post("/upload/forms")
            .header(header::HOST, HOST)
            .header(header::ORIGIN, from.origin)
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            );
        if let Some(cookie) = from.cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let (status, headers, body) =
            respond(&self.daemon, request.body(Body::from(body)).unwrap()).await;
        let location = headers
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, location, body)
    }

    /// A page as the logged-in clerk sees it.
    async fn get(&self, uri: &str) -> (StatusCode, String) {
        let request = Request::get(uri)
            .header(header::HOST, HOST)
            .header(header::COOKIE, &self.cookie)
            .body(Body::empty())
            .unwrap();
        let (status, _, body) = respond(&self.daemon, request).await;
        (status, body)
    }
}

/// Each problem as (row, column, the problem's first words).
fn table(problems: &[ProblemRow]) -> Vec<(String, String, String)> {
    problems
        .iter()
        .map(|p| (p.row.clone(), p.column.clone(), p.problem.clone()))
        .collect()
}

fn gbk(text: &str) -> Vec<u8> {
    let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
    assert!(!unmappable);
    bytes.into_owned()
}

#[tokio::test]
async fn the_check_names_every_problem_by_row_and_column() {
    let f = Forms::start().await;

    // A GBK CSV with a title row, no date column and no date anywhere.
    let undated = gbk("某县各单位活动统计表\n单位,会议次数\n自然资源局,3\n");
    let found = table(&f.check("活动统计.csv", &undated).await);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!((found[0].0.as_str(), found[0].1.as_str()), ("", ""));
    assert!(found[0].2.starts_with("没有日期列"), "{found:?}");
    assert!(
        found[1].2.starts_with("文件中没有任何可用的数据"),
        "{found:?}"
    );

    // The same GBK form dated by its title row, the bureau by its alias: clean.
    let dated = gbk("某县各单位活动统计表（2026年10月）\n单位,会议次数\n某县自然资源局,3\n");
    assert!(f.check("活动统计.csv", &dated).await.is_empty());

    // An unknown unit, `三` and `12x`, a bad month: each at its row and column.
    let mistakes = "单位,月份,会议次数,培训次数\n\
                    某县水利局,2026-10,1,1\n\
                    教育局,2026-10,三,12x\n\
                    自然资源局,2026-13,2,1\n\
                    教育局,2026-10,4,1\n";
    let found = table(&f.check("台账.csv", mistakes.as_bytes()).await);
    let at: Vec<(&str, &str)> = found
        .iter()
        .map(|(r, c, _)| (r.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        at,
        [
            ("2", "单位"),
            ("3", "会议次数"),
            ("3", "培训次数"),
            ("4", "月份")
        ],
        "{found:?}"
    );
    assert!(found[0].2.contains("未知单位 “某县水利局”"), "{found:?}");
    assert!(found[1].2.contains("不是数字：“三”"), "{found:?}");
    assert!(found[2].2.contains("不是数字：“12x”"), "{found:?}");
    assert!(found[3].2.contains("日期无法识别：“2026-13”"), "{found:?}");

    // An XLSX with a mistake, named with its sheet.
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet().set_name("十月").unwrap();
    for (col, text) in ["单位", "日期", "会议次数"].iter().enumerate() {
        sheet.write_string(0, col as u16, *text).unwrap();
    }
    sheet.write_string(1, 0, "教育局").unwrap();
    sheet.write_string(1, 1, "2026-10-12").unwrap();
    sheet.write_string(1, 2, "两").unwrap();
    sheet.write_string(2, 0, "教育局").unwrap();
    sheet.write_string(2, 1, "2026-10-13").unwrap();
    sheet.write_number(2, 2, 2.0).unwrap();
    let xlsx = book.save_to_buffer().unwrap();
    let found = f.check("十月.xlsx", &xlsx).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (
            found[0].sheet.as_str(),
            found[0].row.as_str(),
            found[0].column.as_str()
        ),
        ("十月", "2", "会议次数")
    );
    assert!(found[0].problem.contains("“两”"), "{found:?}");

    // Neither UTF-8 nor GBK, and a file of no table at all.
    let found = table(&f.check("乱码.csv", &[0xff, 0xfe, 0x00, 0x81, 0x20]).await);
    assert!(found[0].2.starts_with("文件编码无法识别"), "{found:?}");
    let found = table(&f.check("空.csv", "说明\n本表无内容\n".as_bytes()).await);
    assert!(found[0].2.starts_with("找不到表头行"), "{found:?}");

    // Nothing of the checks stayed behind in the source's directory.
    assert!(f.stored().is_empty());
    f.daemon.stop().await;
}

#[tokio::test]
async fn an_upload_with_problems_is_not_stored_and_a_clean_one_is_collected() {
    let f = Forms::start().await;

    let (status, body) = f.get("/upload").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#"action="/upload/forms""#), "{body}");
    assert!(body.contains(r#"enctype="multipart/form-data""#), "{body}");

    let before = source_json(&f.daemon, "forms").await;
    let wrong = "单位,月份,会议次数\n某县水利局,2026-10,1\n教育局,2026-10,三\n";
    let (status, _, body) = f
        .post(&[("file", Some("台账_10月.csv"), wrong.as_bytes())])
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // Two mistakes, and so not a single value.
    assert!(body.contains("文件有 3 处问题，未保存"), "{body}");
    assert!(body.contains("文件中没有任何可用的数据"), "{body}");
    assert!(
        body.contains(r#"<td class="row">2</td><td class="column">单位</td>"#),
        "{body}"
    );
    assert!(
        body.contains(r#"<td class="row">3</td><td class="column">会议次数</td>"#),
        "{body}"
    );
    assert!(f.stored().is_empty(), "a file with problems is not kept");
    let after = source_json(&f.daemon, "forms").await;
    assert_eq!(before["last_run"], after["last_run"], "no run");

    // Corrected: kept under its name, collected, and the table shows it.
    let right = "单位,月份,会议次数\n某县自然资源局,2026-10,5\n教育局,2026-10,3\n";
    let (status, location, body) = f
        .post(&[("file", Some("台账_10月.csv"), right.as_bytes())])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(
        location,
        "/?period=2026-Q4&uploaded=%E5%8F%B0%E8%B4%A6_10%E6%9C%88.csv"
    );
    assert_eq!(f.stored(), ["台账_10月.csv"]);
    assert_eq!(
        std::fs::read(f.forms().join("台账_10月.csv")).unwrap(),
        right.as_bytes()
    );
    let (status, body) = f.get(&location).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("已接收报表 “台账_10月.csv”"), "{body}");
    assert!(
        body.contains(
            r#"<a href="/figure?period=2026-Q4&#38;unit=county&#38;indicator=meetings">8</a>"#
        ),
        "{body}"
    );

    // Another file of that name is refused unless replacing is asked for.
    let fixed = "单位,月份,会议次数\n某县自然资源局,2026-10,6\n教育局,2026-10,3\n";
    let (status, _, body) = f
        .post(&[("file", Some("台账_10月.csv"), fixed.as_bytes())])
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("替换同名文件"), "{body}");
    assert_eq!(
        std::fs::read(f.forms().join("台账_10月.csv")).unwrap(),
        right.as_bytes()
    );
    let (status, _, body) = f
        .post(&[
            ("file", Some("台账_10月.csv"), fixed.as_bytes()),
            ("replace", None, b"on"),
        ])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(f.stored(), ["台账_10月.csv"]);
    let (_, body) = f.get("/?period=2026-Q4").await;
    assert!(
        body.contains(
            r#"<a href="/figure?period=2026-Q4&#38;unit=county&#38;indicator=meetings">9</a>"#
        ),
        "{body}"
    );

    // Names and kinds the page does not take.
    for (name, says) in [
        ("报表.txt", "只接受 .csv、.xlsx、.xls 文件"),
        (".hidden.csv", "不能以 “.” 或 “~$” 开头"),
    ] {
        let (status, _, body) = f.post(&[("file", Some(name), right.as_bytes())]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert!(body.contains(says), "{name}: {body}");
    }
    assert_eq!(f.stored(), ["台账_10月.csv"]);
    f.daemon.stop().await;
}

#[tokio::test]
async fn only_a_logged_in_clerk_on_this_site_may_upload() {
    let f = Forms::start().await;
    let right = "单位,月份,会议次数\n某县自然资源局,2026-10,5\n".as_bytes();
    let file = [("file", Some("台账.csv"), right)];

    // Without a session the page offers no form, only the way to log in.
    let request = Request::get("/upload")
        .header(header::HOST, HOST)
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = respond(&f.daemon, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#"href="/login?next=/upload""#), "{body}");
    assert!(!body.contains("<form class=\"upload\""), "{body}");

    let csrf = csrf_of(&f.get("/upload").await.1);
    for (from, says) in [
        (
            From {
                cookie: None,
                origin: ORIGIN,
                csrf: Some(&csrf),
            },
            "没有登录",
        ),
        (
            From {
                cookie: Some(&f.cookie),
                origin: "http://evil.example",
                csrf: Some(&csrf),
            },
            "已拒绝",
        ),
        (
            From {
                cookie: Some(&f.cookie),
                origin: ORIGIN,
                csrf: Some("not-the-token"),
            },
            "表单校验码不符",
        ),
    ] {
        let (status, _, body) = f.post_from(from, &file).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains(says), "{says}: {body}");
    }
    assert!(f.stored().is_empty(), "nothing kept without a session");

    let (status, _, body) = f.post(&file).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(f.stored(), ["台账.csv"]);
    f.daemon.stop().await;
}
