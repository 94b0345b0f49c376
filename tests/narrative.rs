//! The 情况报告 on the real binary: `tallyd report --format docx` and
//! `/api/v1/summary?...&format=docx` give the same document (and the same
//! for `narrative-md`), the figures in it are the summary's, and an
//! operator's template that does not parse stops `tallyd check` with its
//! file and line.

use std::io::Read;
use std::path::PathBuf;

use crate::reports::get_bytes;
use crate::support::*;

/// A county with two bureaus whose meetings of 2026-Q3 come from a form;
/// `reports` is appended to the configuration.
fn setup(reports: &str) -> (tempfile::TempDir, PathBuf, u16) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let plugins = plugin_dir_with(&dir.join("plugins"), &[bundled_plugin("tally_csv_form")]);
    std::fs::create_dir_all(dir.join("forms")).unwrap();
    std::fs::write(
        dir.join("forms/meetings.csv"),
        "\u{feff}单位,日期,会议次数\n县甲,2026-07-15,3\ncounty/b,2026-08-01,4\n",
    )
    .unwrap();
    let cfg = TestConfig::new(&dir, &plugins)
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
backfill_from = "2026-07-01"
[sources.settings]
dir = {forms}
indicators = ["meetings"]

{reports}
"#,
            forms = toml_path(&dir.join("forms")),
        ));
    let port = cfg.port();
    let config = cfg.write();
    (tmp, config, port)
}

/// The paragraphs of a DOCX (the text of `word/document.xml`), one a line.
pub(crate) fn docx_text(bytes: &[u8]) -> String {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a docx is a zip");
    let mut xml = String::new();
    zip.by_name("word/document.xml")
        .expect("word/document.xml")
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
fn the_command_line_and_the_api_give_the_same_report() {
    let (_tmp, config, port) = setup("[reports]\nenabled = false\n");
    let mut d = TestDaemon::start(&config, port);
    d.wait_for("the start-up run of forms", 60, |d| {
        d.runs("forms", "success") >= 1
    });
    let (status, head, docx) = get_bytes(&format!(
        "{}/api/v1/summary?period=2026-Q3&unit=county&format=docx",
        d.base
    ));
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains(
            "content-type: application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        ),
        "{head}"
    );
    assert!(
        head.contains("content-disposition: attachment; filename=\"tally-2026-q3-county.docx\""),
        "{head}"
    );
    let (status, head, md) = get_bytes(&format!(
        "{}/api/v1/summary?period=2026-Q3&unit=county&format=narrative-md",
        d.base
    ));
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("content-type: text/markdown; charset=utf-8"),
        "{head}"
    );
    let (status, bad) = d.get("/api/v1/summary?period=2026-Q3&format=doc");
    assert_eq!(status, 400);
    assert!(
        bad.contains("json, csv, md, xlsx, docx, narrative-md"),
        "{bad}"
    );
    d.terminate();

    let text = docx_text(&docx);
    assert!(
        text.contains("某县2026年第三季度新媒体及学习工作情况报告\n"),
        "{text}"
    );
    // The county's 7 meetings of the quarter, 3 + 4 from the form.
    assert!(text.contains("召开会议7次；"), "{text}");
    assert!(text.contains("会议次数(次)\n7次\n"), "the table: {text}");

    let dir = config.parent().unwrap();
    let config = config.display().to_string();
    let report = |format: &str, out: &str| {
        let out = dir.join(out);
        let o = run_tallyd(&[
            "report",
            "--config",
            &config,
            "--period",
            "2026-Q3",
            "--unit",
            "county",
            "--format",
            format,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(exit_code(&o), 0, "{}", stderr(&o));
        std::fs::read(out).unwrap()
    };
    // docx-rs writes no clock into the package, so the two are the same bytes.
    assert_eq!(report("docx", "q3.docx"), docx);
    assert_eq!(report("narrative-md", "q3.md"), md);
    let md = String::from_utf8(md).unwrap();
    assert!(
        md.starts_with("# 某县2026年第三季度新媒体及学习工作情况报告\n"),
        "{md}"
    );
    assert!(md.contains("召开会议7次；"), "{md}");
}

#[test]
fn a_template_that_does_not_parse_stops_check_with_its_file_and_line() {
    let (tmp, config, _) = setup("[reports]\nnarrative_template = \"TEMPLATE\"\n");
    let template = tmp.path().join("report.md.j2");
    std::fs::write(
        &template,
        "# {{ unit.name }}情况报告\n\n{% if f.meetings %}\n召开会议{{ f.meetings.text }}。\n{% endfi %}\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"TEMPLATE\"", &toml_path(&template));
    std::fs::write(&config, text).unwrap();
    let o = run_tallyd(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(exit_code(&o), 1, "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "reports.narrative_template: {}:5: syntax error",
            template.display()
        )),
        "{err}"
    );

    // Fixed, the operator's template writes the report.
    std::fs::write(
        &template,
        "# {{ unit.name }}情况报告\n\n{% if f.meetings %}\n召开会议{{ f.meetings.text }}。\n{% endif %}\n",
    )
    .unwrap();
    let out = tmp.path().join("q3.md");
    let o = run_tallyd(&[
        "report",
        "--config",
        config.to_str().unwrap(),
        "--period",
        "2026-Q3",
        "--format",
        "narrative-md",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(exit_code(&o), 0, "{}", stderr(&o));
    let md = std::fs::read_to_string(out).unwrap();
    assert!(md.starts_with("# 某县情况报告\n\n召开会议"), "{md}");
}
