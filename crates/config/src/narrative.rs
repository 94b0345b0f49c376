//! `[reports] narrative_template`: the operator's own template of the
//! 情况报告, read and parsed when the configuration loads, so that a
//! template that does not parse stops `tallyd check` and a start (naming the
//! template's file and line) instead of the quarterly report months later.

use std::path::{Path, PathBuf};

/// A 情况报告 template that parses (minijinja syntax); the daemon renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarrativeTemplate {
    /// As written in the configuration: a relative path is resolved against
    /// the daemon's current directory, like `data_dir`.
    pub path: PathBuf,
    /// The template's text, as read at load (a reload reads it again).
    pub source: String,
}

impl NarrativeTemplate {
    /// Reads `path` and checks that it parses. The error is the message of a
    /// configuration problem: `FILE:LINE: syntax error: …`.
    pub fn load(path: &Path) -> Result<NarrativeTemplate, String> {
        let source = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the 情况报告 template {}: {e}", path.display()))?;
        check_syntax(&path.display().to_string(), &source)?;
        Ok(NarrativeTemplate {
            path: path.to_owned(),
            source,
        })
    }
}

/// The syntax of 情况报告 templates: Jinja2's, with `trim_blocks` and
/// `lstrip_blocks`, so that a tag alone on its line leaves no line behind.
pub fn syntax() -> minijinja::syntax::SyntaxConfig {
    minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .expect("the default delimiters are valid")
}

/// Parses `source` as the daemon will (same syntax, same name in messages).
pub fn check_syntax(name: &str, source: &str) -> Result<(), String> {
    let mut env = minijinja::Environment::new();
    env.set_syntax(syntax());
    env.template_from_named_str(name, source)
        .map(|_| ())
        .map_err(|e| describe(name, &e))
}

/// `FILE:LINE: syntax error: unexpected end of input` from minijinja's error.
pub fn describe(name: &str, e: &minijinja::Error) -> String {
    let what = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    match e.line() {
        Some(line) => format!("{name}:{line}: {what}"),
        None => format!("{name}: {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_that_does_not_parse_is_named_by_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.md.j2");
        std::fs::write(
            &path,
            "# 标题\n\n{% if f.meetings %}\n会议{{ f.meetings.text }}\n",
        )
        .unwrap();
        let message = NarrativeTemplate::load(&path).unwrap_err();
        assert!(
            message.starts_with(&format!("{}:4: syntax error", path.display())),
            "{message}"
        );
        assert!(message.contains("unexpected end of input"), "{message}");
    }

    #[test]
    fn the_configuration_names_the_key_and_the_template_line() {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("report.md.j2");
        std::fs::write(&template, "# {{ unit.name }\n").unwrap();
        let text = format!(
            "[[units]]\nid = \"county\"\nname = \"某县\"\n\n[reports]\nnarrative_template = {:?}\n",
            template.display().to_string()
        );
        let err = crate::Config::parse(&text, Path::new("t.toml"), &|_| None)
            .expect_err("a broken template is a configuration error")
            .to_string();
        let expected = format!(
            "t.toml:6:22: reports.narrative_template: {}:1: syntax error",
            template.display()
        );
        assert!(err.starts_with(&expected), "{err}");
    }

    #[test]
    fn a_template_that_parses_is_kept_with_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.md.j2");
        std::fs::write(&path, "# {{ unit.name }}\n").unwrap();
        let t = NarrativeTemplate::load(&path).unwrap();
        assert_eq!(t.source, "# {{ unit.name }}\n");
        assert_eq!(t.path, path);
    }

    #[test]
    fn a_missing_template_says_which_file() {
        let message = NarrativeTemplate::load(Path::new("/nonexistent/report.md.j2")).unwrap_err();
        assert!(message.contains("/nonexistent/report.md.j2"), "{message}");
    }
}
