use std::io::Read;
use std::sync::Arc;

use chrono::NaiveDate;

use super::*;
use crate::summary::{IndicatorInfo, PeriodInfo, SourceInfo, TargetStatus, Values};
use tally_config::{Per, TargetConfig, TargetPeriod};
use tally_domain::Kind;

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn indicator(id: &str, name: &str, unit: &str) -> IndicatorInfo {
    IndicatorInfo {
        id: id.to_owned(),
        name: name.to_owned(),
        kind: Kind::Count,
        unit: unit.to_owned(),
    }
}

fn value(v: f64) -> IndicatorValue {
    IndicatorValue {
        value: Some(v),
        ..IndicatorValue::default()
    }
}

fn missing() -> IndicatorValue {
    IndicatorValue {
        missing: true,
        ..IndicatorValue::default()
    }
}

fn row(
    id: &str,
    name: &str,
    parent: Option<&str>,
    depth: usize,
    cells: Vec<IndicatorValue>,
) -> UnitRow {
    let ids = [
        "wechat_posts",
        "wechat_readers",
        "meetings",
        "xuexi_points",
        "portal_articles",
    ];
    UnitRow {
        id: id.to_owned(),
        name: name.to_owned(),
        parent: parent.map(str::to_owned),
        depth,
        headcount: None,
        subtree_headcount: None,
        values: Values(ids.iter().map(|i| Arc::from(*i)).zip(cells).collect()),
    }
}

/// 2026-Q3 of a county with two bureaus: every figure reported.
fn county() -> Summary {
    let mut wechat = value(107.0);
    wechat.previous = Some(98.0);
    wechat.change = Some(9.0);
    let mut xuexi = value(636_000.0);
    xuexi.target = Some(TargetStatus {
        per: Per::Entity,
        min: 5235.6,
        completion: None,
        met: Some(97),
        total: Some(120),
        ratio: Some(97.0 / 120.0),
    });
    let mut portal = value(45.0);
    portal.target = Some(TargetStatus {
        per: Per::Unit,
        min: 60.0,
        completion: Some(0.75),
        met: None,
        total: None,
        ratio: None,
    });
    let bureau = |id: &str, name: &str, posts: f64| {
        row(
            id,
            name,
            Some("county"),
            1,
            vec![
                value(posts),
                value(posts * 40.0),
                value(3.0),
                value(300_000.0),
                value(20.0),
            ],
        )
    };
    Summary {
        period: PeriodInfo {
            label: "2026-Q3".to_owned(),
            start: day(2026, 7, 1),
            end: day(2026, 9, 30),
            timezone: "Asia/Shanghai".to_owned(),
            complete: true,
            ended: true,
            sources_complete: true,
            units_complete: true,
        },
        generated_at: "2026-10-08T09:00:00+08:00".to_owned(),
        indicators: vec![
            indicator("wechat_posts", "微信公众号发文篇数", "篇"),
            indicator("wechat_readers", "微信公众号图文阅读人次", "人次"),
            indicator("meetings", "会议次数", "次"),
            indicator("xuexi_points", "学习强国年度积分", "分"),
            indicator("portal_articles", "门户网站上稿数", "篇"),
        ],
        units: vec![
            row(
                "county",
                "某县",
                None,
                0,
                vec![wechat, value(4280.0), value(6.0), xuexi, portal],
            ),
            bureau("county/a", "县甲", 60.0),
            bureau("county/b", "县乙", 47.0),
        ],
        sources: vec![SourceInfo {
            id: "forms".to_owned(),
            complete: true,
            failed_runs: 0,
            last_success: None,
        }],
    }
}

fn narrative() -> Narrative {
    Narrative {
        targets: vec![TargetConfig {
            indicator: "xuexi_points".to_owned(),
            per: Per::Entity,
            period: TargetPeriod::Year,
            min: 7000.0,
            prorate: true,
            units: None,
        }],
        ..Narrative::default()
    }
}

fn text(summary: &Summary) -> String {
    narrative().draft(summary).unwrap().to_markdown()
}

#[test]
fn a_complete_quarter_fills_every_sentence_from_the_summary() {
    let md = text(&county());
    assert!(
        md.starts_with("# 某县2026年第三季度新媒体及学习工作情况报告\n\n2026年第三季度，某县"),
        "{md}"
    );
    assert!(
        md.contains("本季度通过微信公众号发布信息107篇，阅读量4280人次，发布数较上期增加9篇。"),
        "{md}"
    );
    assert!(
        md.contains("先后在融媒、日报、门户网站等主流媒体上稿45篇。"),
        "{md}"
    );
    // 636,000 points over 120 members; the yearly goal and the goal to date.
    assert!(
        md.contains("学员120人，人均积分5300分。对照年度7000分的目标（截至2026年9月30日应达5235.6分），达标97人、未达标23人，达标率80.8%。"),
        "{md}"
    );
    assert!(md.contains("召开会议6次；"), "{md}");
    assert!(
        md.contains("2. 门户网站上稿数：目标60篇，完成45篇，完成率75%，未完成。"),
        "{md}"
    );
    assert!(!md.contains("不完整"), "{md}");
    assert!(!md.contains("未报送"), "{md}");
    // The table of figures ends the report.
    assert!(
        md.contains("| 微信公众号发文篇数(篇) | 107篇 | 98篇 |  |  |"),
        "{md}"
    );
    assert!(
        md.contains("| 学习强国年度积分(分) | 636000分 |  | 5235.6分 | 97/120（80.8%） |"),
        "{md}"
    );
}

#[test]
fn an_incomplete_figure_is_never_a_bare_number() {
    let mut s = county();
    // 县乙 did not report its posts: the county's 60 lacks it.
    s.units[2].values.0[0].1 = missing();
    let county = &mut s.units[0].values.0[0].1;
    county.value = Some(60.0);
    county.incomplete = true;
    county.incomplete_because = Some(Because::Units);
    // And a source missed days of the portal's figures.
    let portal = &mut s.units[0].values.0[4].1;
    portal.incomplete = true;
    portal.incomplete_because = Some(Because::Sources);
    s.period.complete = false;
    s.period.units_complete = false;
    let md = text(&s);
    assert!(
        md.contains("发布信息60篇（不完整：1个下级单位未报送）"),
        "{md}"
    );
    assert!(md.contains("上稿45篇（不完整：有数据来源缺数）。"), "{md}");
    assert!(md.contains("完成率75%（不完整）"), "{md}");
    assert!(!md.contains("发布信息60篇，"), "{md}");
    assert!(md.contains("（注：2026-Q3的数据尚不完整"), "{md}");
}

#[test]
fn a_unit_that_did_not_report_says_so() {
    let mut s = county();
    s.units[2].values.0[0].1 = missing();
    // The report of 县乙 alone.
    s.units.drain(..2);
    s.units[0].depth = 1;
    let md = text(&s);
    assert!(md.starts_with("# 县乙2026年第三季度"), "{md}");
    assert!(md.contains("通过微信公众号发布信息未报送"), "{md}");
    assert!(md.contains("| 微信公众号发文篇数(篇) | 未报送 |"), "{md}");
}

#[test]
fn an_indicator_not_configured_leaves_its_sentence_out() {
    let mut s = county();
    // Without the portal and study figures: only WeChat posts and readers.
    s.indicators.truncate(2);
    for unit in &mut s.units {
        unit.values.0.truncate(2);
    }
    let md = text(&s);
    assert!(!md.contains("政务微博"), "no weibo_posts: {md}");
    assert!(!md.contains("主流媒体上稿"), "{md}");
    assert!(
        md.contains("## 二、学习教育\n\n（本节的指标未在 tally 中配置，请手工填写。）"),
        "{md}"
    );
    assert!(md.contains("本季度没有设定目标的指标。"), "{md}");
    assert!(
        md.contains("（舆情处置情况未在 tally 中统计，请手工填写。）"),
        "{md}"
    );
    assert!(
        md.contains("## 五、下一步打算\n\n下一步，某县将继续"),
        "{md}"
    );
}

#[test]
fn an_operator_template_is_rendered_and_its_runtime_errors_name_the_line() {
    let own = Narrative {
        name: "/etc/tally/report.md.j2".to_owned(),
        source: "# {{ unit.name }}{{ period.name }}报告\n\n{% for x in figures %}\n- {{ x.name }}：{{ x.text }}\n{% endfor %}\n".to_owned(),
        targets: Vec::new(),
    };
    let draft = own.draft(&county()).unwrap();
    let blocks = &draft.reports[0].blocks;
    assert_eq!(blocks[0], Block::Title("某县2026年第三季度报告".to_owned()));
    assert_eq!(
        blocks[1],
        Block::Paragraph("- 微信公众号发文篇数：107篇".to_owned())
    );
    assert_eq!(blocks.len(), 6);

    let broken = Narrative {
        name: "/etc/tally/report.md.j2".to_owned(),
        source: "# 标题\n\n{{ unit.name | no_such_filter }}\n".to_owned(),
        targets: Vec::new(),
    };
    let err = broken.draft(&county()).unwrap_err().to_string();
    assert!(err.contains("/etc/tally/report.md.j2:3: "), "{err}");
    assert!(err.contains("no_such_filter"), "{err}");
}

#[test]
fn paragraphs_join_lines_and_list_items_stand_alone() {
    let b = blocks("# 标题\n\n## 一、信息发布\n第一句。\n第二句。\n\n1. 甲\n2. 乙\nword\nnext\n");
    assert_eq!(
        b,
        [
            Block::Title("标题".to_owned()),
            Block::Heading("一、信息发布".to_owned()),
            Block::Paragraph("第一句。第二句。".to_owned()),
            Block::Paragraph("1. 甲".to_owned()),
            Block::Paragraph("2. 乙word next".to_owned()),
        ]
    );
}

#[test]
fn a_file_name_for_every_client() {
    let d = content_disposition(&county(), tally_config::ReportFormat::Docx);
    assert!(
        d.starts_with(
            "attachment; filename=\"tally-2026-Q3-county.docx\"; filename*=UTF-8''%E6%9F%90"
        ),
        "{d}"
    );
}

/// The text of a DOCX's paragraphs and cells, one paragraph a line.
fn docx_text(bytes: &[u8]) -> String {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut xml = String::new();
    zip.by_name("word/document.xml")
        .unwrap()
        .read_to_string(&mut xml)
        .unwrap();
    let mut out = String::new();
    for para in xml.split("</w:p>") {
        // `<w:t>` and `<w:t xml:space="preserve">`, not `<w:tbl>`, `<w:tc>`...
        for piece in para.split("<w:t").skip(1) {
            let Some(rest) = piece.strip_prefix('>').or_else(|| {
                piece
                    .strip_prefix(' ')
                    .and_then(|p| Some(&p[p.find('>')? + 1..]))
            }) else {
                continue;
            };
            out.push_str(&rest[..rest.find("</w:t>").unwrap_or(rest.len())]);
        }
        out.push('\n');
    }
    out
}

#[test]
fn the_docx_has_the_title_paragraphs_table_and_chinese_fonts() {
    let bytes = narrative().draft(&county()).unwrap().to_docx().unwrap();
    let text = docx_text(&bytes);
    assert!(
        text.contains("某县2026年第三季度新媒体及学习工作情况报告\n"),
        "{text}"
    );
    assert!(text.contains("一、信息发布\n"), "{text}");
    assert!(text.contains("发布信息107篇，阅读量4280人次"), "{text}");
    assert!(text.contains("附表：本期主要数据\n"), "{text}");
    assert!(text.contains("97/120（80.8%）"), "{text}");
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&bytes[..])).unwrap();
    let mut xml = String::new();
    zip.by_name("word/document.xml")
        .unwrap()
        .read_to_string(&mut xml)
        .unwrap();
    assert!(xml.contains("w:eastAsia=\"仿宋\""), "body font");
    assert!(xml.contains("w:eastAsia=\"宋体\""), "title font");
    assert!(xml.contains("<w:tbl>"), "a table");
}

/// The DOCX opens in LibreOffice Writer: it converts to PDF, and its text
/// (converted to plain text) holds the summary's figures of the unit and
/// period.
#[test]
// A test finds the tool it runs on PATH and asks whether it runs in CI.
#[allow(clippy::disallowed_methods)]
fn the_docx_opens_in_libreoffice_with_the_summarys_figures() {
    let Some(soffice) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("soffice"))
            .find(|path| path.is_file())
    }) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "soffice is missing in CI: .ci/run must install Debian's libreoffice-writer-nogui"
        );
        eprintln!("soffice not installed: skipping the LibreOffice conversion (CI installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let docx = dir.path().join("report.docx");
    let mut s = county();
    s.units[2].values.0[0].1 = missing();
    let cell = &mut s.units[0].values.0[0].1;
    cell.value = Some(60.0);
    cell.incomplete = true;
    cell.incomplete_because = Some(Because::Units);
    std::fs::write(&docx, narrative().draft(&s).unwrap().to_docx().unwrap()).unwrap();
    // Its own profile: a second LibreOffice would otherwise wait on the
    // user's, and the tests run in parallel with other processes.
    let profile = format!(
        "-env:UserInstallation=file://{}/profile",
        dir.path().display()
    );
    for target in ["pdf", "txt:Text (encoded):UTF8"] {
        let out = std::process::Command::new(&soffice)
            .arg(&profile)
            .args(["--headless", "--convert-to", target, "--outdir"])
            .arg(dir.path())
            .arg(&docx)
            .output()
            .unwrap();
        let ext = target.split(':').next().unwrap();
        assert!(
            dir.path().join(format!("report.{ext}")).is_file(),
            "no {ext}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pdf = std::fs::read(dir.path().join("report.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF"), "a PDF");
    let txt = std::fs::read_to_string(dir.path().join("report.txt")).unwrap();
    for figure in [
        "某县2026年第三季度新媒体及学习工作情况报告",
        "发布信息60篇（不完整：1个下级单位未报送）",
        "阅读量4280人次",
        "上稿45篇",
        "达标97人、未达标23人，达标率80.8%",
        "召开会议6次",
        "完成率75%",
    ] {
        assert!(
            txt.contains(figure),
            "{figure:?} not in the converted text:\n{txt}"
        );
    }
}
