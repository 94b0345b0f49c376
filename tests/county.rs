//! A real county's quarter, from the files and the API a county really has,
//! collected with bundled plugins only and checked against figures computed
//! by hand.
//!
//! ```text
//! county 某县 (alias 中共某县县委办公室)
//! ├── xcb 县委宣传部            platform account
//! ├── edu 县教育局              platform account
//! │   ├── school1 第一中学      platform account
//! │   └── school2 第二中学
//! ├── natres 自然资源局
//! │   └── survey 测绘队
//! ├── town1 城关镇              platform account
//! ├── town2 河西镇
//! ├── health 卫健局             platform account
//! └── culture 文旅局            platform account
//! ```
//!
//! - **Forms** (`csv_form`): two GBK files filled by hand, one row per unit and
//!   month, units written by name or alias; one has a title row above its header.
//! - **学习强国** (`xuexi`): the points sheets an administrator exports: GBK,
//!   no date column, `本年积分` year to date. June's and September's main
//!   sheets are dated only by their title rows (`学习积分统计（截至2026-09-30）`);
//!   September's sheet of the education system only by its file name. The
//!   plugin's `xuexi_points` is mapped to the configuration's
//!   `xuexi_points_year` (declared `accumulates = "year"`), `xuexi_members` is
//!   dropped. The yearly target of 7000 points per member is compared at
//!   2026-09-30 with 7000 × 273/365 = 5235.6: 17 of 60 members reach it.
//! - **A provincial new-media platform** (`http_json`): a JSON API per unit and
//!   day, served on 127.0.0.1; only six units have an account, and the source
//!   lists exactly those (`coverage = "listed"`), so the other five are neither
//!   未报送 nor incomplete.

use std::io::{Read, Write};
use std::path::Path;

use chrono::{Datelike, NaiveDate};
use serde_json::Value;

use crate::support::*;

/// The members as the console exports them: name, organisation as written,
/// 本年积分 at 2026-06-30, 本年积分 at 2026-09-30. 王伟 (5236) is just above
/// 5235.6 and 张涛磊 (5235) just below.
const MEMBERS: &str = "\
王伟,中共某县县委办公室,3108,5236
李磊静,某县,3977,5917
张涛磊,中共某县县委办公室,3422,5235
刘桂,某县,2758,4466
陈辉娟,中共某县县委办公室,429,1997
杨敏超,县委宣传部,3897,5596
黄勇,中共某县县委宣传部,4318,5685
赵秀英,县委宣传部,4421,6797
吴玉兰,中共某县县委宣传部,3723,5537
周志,县委宣传部,1603,3878
徐强志,中共某县县委宣传部,466,2679
孙娟娜,县教育局,3550,5453
马刚,某县教育局党组,0,1800
朱梅军,县教育局,1787,3576
胡娜艳,某县教育局党组,1065,3512
郭洋,县教育局,737,2086
何超秀,某县第一中学,4844,6285
高华刚,第一中学,3423,5671
林国,某县第一中学,2001,4057
罗丽红,第一中学,2001,3538
郑杰建,某县第一中学,142,2042
梁平,第一中学,2605,4116
谢红敏,某县第一中学,106,2307
宋芳强,第二中学,4151,6214
唐军,某县第二中学党支部,3103,4383
许明杰,第二中学,1801,4369
韩英明,某县第二中学党支部,2829,4187
冯建,第二中学,0,2053
邓静桂,某县第二中学党支部,1790,4163
曹艳玉,自然资源局,5082,6924
彭霞,某县自然资源局党支部,3607,5503
曾兰国,自然资源局,788,2705
肖伟芳,某县自然资源局党支部,0,1990
田磊,自然资源局,1863,4080
董涛磊,自然资源局测绘队,0,2345
袁桂勇,测绘队,852,2986
潘辉,自然资源局测绘队,2176,3516
于敏超,测绘队,999,2390
蒋勇平,城关镇党委,4030,5782
蔡秀,城关镇,4393,6563
余玉兰,城关镇党委,1534,4094
杜志辉,城关镇,3260,4593
叶强,城关镇党委,1216,2540
程娟娜,城关镇,388,2222
苏刚丽,河西镇党委,3544,6069
魏梅,河西镇,942,3325
吕娜艳,河西镇党委,0,2199
丁洋涛,河西镇,1931,4043
任超,河西镇党委,2934,4716
沈华刚,卫健局,3567,5557
姚国华,某县卫生健康局,1542,4111
卢丽,卫健局,134,2044
姜杰建,某县卫生健康局,3089,4335
崔平伟,卫健局,498,2643
钟红,某县卫生健康局,1906,3833
谭芳强,文旅局,5507,7051
陆军洋,某县文化和旅游局,2532,4983
汪明,文旅局,1647,3086
范英明,某县文化和旅游局,1496,3707
金建霞,文旅局,2878,4198
";

/// The organisations of the education system, exported in a sheet of their own.
const EDU_ORGS: [&str; 6] = [
    "县教育局",
    "某县教育局党组",
    "第一中学",
    "某县第一中学",
    "第二中学",
    "某县第二中学党支部",
];

/// The platform's accounts: the organisation name it uses, and posts per day.
const ACCOUNTS: [(&str, u32); 6] = [
    ("中共某县县委宣传部", 3),
    ("县教育局", 1),
    ("某县第一中学", 2),
    ("城关镇", 1),
    ("某县卫生健康局", 2),
    ("文旅局", 2),
];

const PLATFORM_TOKEN: &str = "Zm9vYmFy+/=county";

/// The provincial platform: `GET /api/daily?start=YYYY-MM-DD&end=YYYY-MM-DD`
/// with a bearer token answers one row per account and day, reads being
/// `posts × 100 + day of month`. Like such platforms it refuses a missing or
/// wrong token (401), a bad date (400) and a span over 31 days (400), and
/// serves no day after yesterday.
fn serve_platform() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = vec![0u8; 16384];
            let n = conn.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let (status, body) = platform_answer(&head);
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    format!("http://{addr}")
}

fn platform_answer(head: &str) -> (&'static str, String) {
    let error = |status, message: &str| (status, format!(r#"{{"code":1,"msg":"{message}"}}"#));
    let authorised = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("authorization:")
            && l[14..].trim() == format!("Bearer {PLATFORM_TOKEN}")
    });
    if !authorised {
        return error("401 Unauthorized", "invalid token");
    }
    let target = head.split_whitespace().nth(1).unwrap_or("");
    let Some(("/api/daily", query)) = target.split_once('?') else {
        return error("404 Not Found", "no such endpoint");
    };
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
    };
    let (Some(start), Some(end)) = (param("start"), param("end")) else {
        return error("400 Bad Request", "start and end must be YYYY-MM-DD");
    };
    if end < start || (end - start).num_days() >= 31 {
        return error("400 Bad Request", "the span may not exceed 31 days");
    }
    let yesterday = chrono::Utc::now().date_naive().pred_opt().unwrap();
    let mut rows = Vec::new();
    let mut day = start;
    while day <= end.min(yesterday) {
        for (org, posts) in ACCOUNTS {
            let reads = posts * 100 + day.day();
            rows.push(format!(
                r#"{{"date":"{day}","org":"{org}","posts":{posts},"reads":{reads}}}"#
            ));
        }
        day = day.succ_opt().unwrap();
    }
    (
        "200 OK",
        format!(r#"{{"code":0,"data":[{}]}}"#, rows.join(",")),
    )
}

fn gbk(text: &str) -> Vec<u8> {
    let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
    assert!(!unmappable, "the test's text is GBK");
    bytes.into_owned()
}

/// A points sheet as the console exports it: a title row (or none), then
/// 序号, 姓名, 所属组织, 本年积分, 本月积分; the members whose organisation
/// `pick` accepts, with their points of column `col` (2: June, 3: September).
fn points_sheet(title: Option<&str>, pick: impl Fn(&str) -> bool, col: usize) -> Vec<u8> {
    let mut text = String::new();
    if let Some(title) = title {
        text.push_str(&format!("{title},,,,\n"));
    }
    text.push_str("序号,姓名,所属组织,本年积分,本月积分\n");
    let mut n = 0;
    for line in MEMBERS.lines() {
        let f: Vec<&str> = line.split(',').collect();
        if pick(f[1]) {
            n += 1;
            text.push_str(&format!(
                "{n},{},{},{},{}\n",
                f[0],
                f[1],
                f[col],
                n * 7 % 300
            ));
        }
    }
    gbk(&text)
}

/// docs/first-quarter.md: the tutorial whose files and commands these are.
const TUTORIAL: &str = include_str!("../docs/first-quarter.md");

/// A fenced block of the tutorial and the `<!-- ... -->` note right above it.
struct Block {
    note: Option<String>,
    lang: String,
    text: String,
}

fn blocks() -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = TUTORIAL.lines();
    let mut previous: Option<&str> = None;
    while let Some(line) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            let mut text = String::new();
            for inner in lines.by_ref() {
                if inner.starts_with("```") {
                    break;
                }
                text.push_str(inner);
                text.push('\n');
            }
            let note = previous
                .and_then(|p| p.strip_prefix("<!-- "))
                .and_then(|p| p.strip_suffix(" -->"))
                .map(str::to_owned);
            blocks.push(Block {
                note,
                lang: lang.to_owned(),
                text,
            });
            previous = None;
        } else {
            previous = Some(line);
        }
    }
    blocks
}

/// The blocks noted `{kind}: PATH` or `{kind}: PATH (GBK)`: path, GBK or not, text.
fn noted(kind: &str) -> Vec<(String, bool, String)> {
    blocks()
        .into_iter()
        .filter_map(|b| {
            let rest = b.note?.strip_prefix(&format!("{kind}: "))?.to_owned();
            let (path, gbk) = match rest.strip_suffix(" (GBK)") {
                Some(path) => (path.to_owned(), true),
                None => (rest, false),
            };
            Some((path, gbk, b.text))
        })
        .collect()
}

pub struct County {
    pub _tmp: tempfile::TempDir,
    pub dir: std::path::PathBuf,
    pub config: std::path::PathBuf,
}

/// The tutorial's directory: its files as the tutorial shows them (the
/// configuration pointed at this test's plugins and platform), and the points
/// sheets, of which the tutorial shows the first lines.
pub fn county() -> County {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let plugins = plugin_dir_with(
        &dir.join("plugins"),
        &[
            bundled_plugin("tally_csv_form"),
            bundled_plugin("tally_xuexi"),
            bundled_plugin("tally_http_json"),
        ],
    );
    let platform = serve_platform();
    for (path, is_gbk, text) in noted("file") {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text = if path.ends_with("tally.toml") {
            let replaced = text
                .replace("\"target/release\"", &toml_path(&plugins))
                .replace("http://127.0.0.1:8800", &platform)
                .replace("127.0.0.1:9470", &format!("127.0.0.1:{}", free_port()));
            assert_ne!(replaced, text, "the tutorial's configuration changed shape");
            replaced
        } else {
            text
        };
        std::fs::write(
            &path,
            if is_gbk {
                gbk(&text)
            } else {
                text.into_bytes()
            },
        )
        .unwrap();
    }

    let xuexi = dir.join("xuexi");
    std::fs::create_dir_all(&xuexi).unwrap();
    let is_edu = |org: &str| EDU_ORGS.contains(&org);
    std::fs::write(
        xuexi.join("学习积分-6月.csv"),
        points_sheet(Some("学习积分统计（截至2026-06-30）"), |_| true, 2),
    )
    .unwrap();
    std::fs::write(
        xuexi.join("学习积分-9月.csv"),
        points_sheet(Some("学习积分统计（截至2026-09-30）"), |o| !is_edu(o), 3),
    )
    .unwrap();
    std::fs::write(
        xuexi.join("教育系统积分_20260930.csv"),
        points_sheet(None, is_edu, 3),
    )
    .unwrap();
    for (path, _, text) in noted("head") {
        let bytes = std::fs::read(dir.join(&path)).unwrap();
        let (decoded, _, _) = encoding_rs::GBK.decode(&bytes);
        assert!(
            decoded.starts_with(&text),
            "the tutorial shows {path} beginning with\n{text}\nbut it begins with\n{}",
            decoded.lines().take(4).collect::<Vec<_>>().join("\n")
        );
    }
    let config = dir.join("tally.toml");
    County {
        _tmp: tmp,
        dir,
        config,
    }
}

/// Runs tallyd in `dir` with the platform's token.
fn run_in(dir: &Path, args: &[&str], envs: &[(String, String)]) -> std::process::Output {
    std::process::Command::new(tallyd())
        .args(args)
        .current_dir(dir)
        .env_remove("TALLY_CONFIG")
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("tallyd runs")
}

fn tally(county: &County, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["--config", county.config.to_str().unwrap()]);
    let token = [("PLATFORM_TOKEN".to_owned(), PLATFORM_TOKEN.to_owned())];
    let out = run_in(&county.dir, &all, &token);
    assert_eq!(
        exit_code(&out),
        0,
        "tallyd {all:?} failed\nstdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        !stdout(&out).contains(PLATFORM_TOKEN) && !stderr(&out).contains(PLATFORM_TOKEN),
        "the platform token was printed"
    );
    stdout(&out) + &stderr(&out)
}

/// The figures by hand, per unit (its whole subtree): meetings, commentary,
/// newmedia posts, newmedia reads (`None`: no account in the subtree),
/// 本年积分 at 06-30 and 09-30, members on target at 09-30, members.
#[allow(clippy::type_complexity)]
const EXPECTED: [(&str, u64, u64, Option<(u64, u64)>, u64, u64, u64, u64); 11] = [
    // posts: 3+1+2+1+2+2 = 11 a day, × 92 days; reads: 1100 × 92 + 6 × 1457
    (
        "county",
        124,
        56,
        Some((1012, 109_942)),
        132_392,
        246_968,
        17,
        60,
    ),
    (
        "county/xcb",
        13,
        8,
        Some((276, 29_057)),
        18_428,
        30_172,
        4,
        6,
    ),
    (
        "county/edu",
        38,
        10,
        Some((276, 30_514)),
        35_935,
        69_812,
        4,
        18,
    ),
    (
        "county/edu/school1",
        14,
        7,
        Some((184, 19_857)),
        15_122,
        28_016,
        2,
        7,
    ),
    ("county/edu/school2", 16, 1, None, 13_674, 25_369, 1, 6),
    ("county/natres", 18, 11, None, 15_367, 32_439, 2, 9),
    ("county/natres/survey", 10, 10, None, 4_027, 11_237, 0, 4),
    (
        "county/town1",
        12,
        2,
        Some((92, 10_657)),
        14_821,
        25_794,
        2,
        6,
    ),
    ("county/town2", 9, 8, None, 9_351, 20_352, 1, 5),
    (
        "county/health",
        9,
        3,
        Some((184, 19_857)),
        10_736,
        22_523,
        1,
        6,
    ),
    (
        "county/culture",
        12,
        3,
        Some((184, 19_857)),
        14_060,
        23_025,
        1,
        5,
    ),
];

#[test]
fn a_countys_quarter_comes_out_as_counted_by_hand() {
    let county = county();
    let config = &county;
    tally(config, &["check"]);
    tally(
        config,
        &[
            "collect",
            "--source",
            "forms",
            "--from",
            "2026-07-01",
            "--to",
            "2026-09-30",
        ],
    );
    let log = tally(
        config,
        &[
            "collect",
            "--source",
            "xuexi",
            "--from",
            "2026-04-01",
            "--to",
            "2026-09-30",
        ],
    );
    assert!(
        !log.contains("import day"),
        "every points sheet says its date, none may fall back on the import day:\n{log}"
    );
    tally(
        config,
        &[
            "collect",
            "--source",
            "platform",
            "--from",
            "2026-07-01",
            "--to",
            "2026-09-30",
        ],
    );

    let report = tally(
        config,
        &["report", "--period", "2026-Q3", "--format", "json"],
    );
    let summary: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(summary["period"]["complete"], true, "{summary:#}");
    for source in summary["sources"].as_array().unwrap() {
        assert_eq!(source["complete"], true, "{source}");
    }
    let threshold = 7000.0 * 273.0 / 365.0;
    for (unit, meetings, commentary, platform, june, september, met, total) in EXPECTED {
        let values = &unit_row(&summary, unit)["values"];
        let at = |indicator: &str| &values[indicator];
        assert_eq!(at("meetings")["value"], meetings, "{unit} meetings");
        assert_eq!(at("commentary")["value"], commentary, "{unit} commentary");
        match platform {
            Some((posts, reads)) => {
                assert_eq!(at("newmedia_posts")["value"], posts, "{unit} posts");
                assert_eq!(at("newmedia_reads")["value"], reads, "{unit} reads");
            }
            None => {
                assert_eq!(at("newmedia_posts")["value"], Value::Null, "{unit} posts");
                assert_eq!(at("newmedia_reads")["value"], Value::Null, "{unit} reads");
            }
        }
        let points = at("xuexi_points_year");
        assert_eq!(points["value"], september, "{unit} 本年积分 at 09-30");
        assert_eq!(points["previous"], june, "{unit} 本年积分 at 06-30");
        assert_eq!(points["change"], september - june, "{unit} growth in Q3");
        let target = &points["target"];
        let min = target["min"].as_f64().unwrap();
        assert!((min - threshold).abs() < 1e-6, "{unit}: threshold {min}");
        assert_eq!(target["met"], met, "{unit} met");
        assert_eq!(target["total"], total, "{unit} members");
        for (indicator, cell) in values.as_object().unwrap() {
            assert!(
                cell.get("missing").is_none() && cell.get("incomplete").is_none(),
                "{unit} {indicator} carries a mark it should not: {cell}"
            );
        }
    }
}

/// Every command of docs/first-quarter.md, in order, in the tutorial's
/// directory: `export` lines set the environment, `tallyd` lines run the
/// binary under test and must succeed, and a block noted `output` below a
/// command lists lines its output must contain.
#[test]
fn the_first_quarter_tutorial_runs_as_written() {
    let county = county();
    let mut envs: Vec<(String, String)> = Vec::new();
    let mut last_output: Option<String> = None;
    let mut commands = 0;
    for block in blocks() {
        if block.note.as_deref() == Some("output") {
            let output = last_output
                .as_deref()
                .expect("an output block follows a command");
            for line in block.text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                assert!(
                    output.lines().any(|l| l.trim() == line),
                    "the tutorial shows {line:?}, the command printed:\n{output}"
                );
            }
            continue;
        }
        if block.lang != "sh" {
            continue;
        }
        for line in block.text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(assignment) = line.strip_prefix("export ") {
                let (name, value) = assignment.split_once('=').unwrap();
                envs.push((name.to_owned(), value.to_owned()));
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(words[0], "tallyd", "the tutorial runs only tallyd: {line}");
            let out = run_in(&county.dir, &words[1..], &envs);
            assert_eq!(
                exit_code(&out),
                0,
                "{line}\nstdout:\n{}\nstderr:\n{}",
                stdout(&out),
                stderr(&out)
            );
            last_output = Some(stdout(&out) + &stderr(&out));
            commands += 1;
        }
    }
    assert!(
        commands >= 7,
        "only {commands} commands found in the tutorial"
    );
    // The XLSX the last command wrote is a workbook with the table first.
    use calamine::Reader;
    let mut book: calamine::Xlsx<_> = calamine::open_workbook(county.dir.join("2026-Q3.xlsx"))
        .expect("the tutorial's XLSX opens");
    let table = book
        .worksheet_range_at(0)
        .expect("a first sheet")
        .expect("the table reads");
    let cells: Vec<String> = table.cells().map(|(_, _, c)| c.to_string()).collect();
    assert!(cells.iter().any(|c| c == "测绘队"), "{cells:?}");
}
