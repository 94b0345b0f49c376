//! docs/configuration.md lists every key the daemon accepts, and only those.
//!
//! The keys are not kept in a second list here: each section is parsed with an
//! unknown key, and serde's answer ("unknown field `x`, expected one of `a`,
//! `b`, ...") names every field it knows. A key added to the parser without a
//! line in the reference, or a line left behind for a removed key, fails.

use std::collections::BTreeSet;
use std::path::Path;

use super::Config;

const REFERENCE: &str = include_str!("../../../docs/configuration.md");

/// The fields serde expects where `text` puts the unknown key `zz_unknown`.
fn accepted_keys(text: &str) -> BTreeSet<String> {
    let env = |_: &str| None;
    let message = match Config::parse(text, Path::new("t.toml"), &env) {
        Ok(_) => panic!("an unknown key was accepted in:\n{text}"),
        Err(err) => err.to_string(),
    };
    let list = message
        .split_once("expected one of ")
        .or_else(|| message.split_once("expected "))
        .unwrap_or_else(|| panic!("no list of expected keys in {message:?}"))
        .1;
    // serde writes two fields as "`a` or `b`", more as "`a`, `b`, `c`".
    list.split(", ")
        .flat_map(|key| key.split(" or "))
        .map(|key| key.trim().trim_matches('`').to_owned())
        .filter(|key| !key.is_empty())
        .collect()
}

/// The keys in the first column of the tables under the heading `## {heading}`.
fn documented_keys(heading: &str) -> BTreeSet<String> {
    let marker = format!("\n## {heading}\n");
    let start = REFERENCE
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/configuration.md has no heading `## {heading}`"))
        + marker.len();
    let section = &REFERENCE[start..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(key, _)| key.to_owned())
        .collect()
}

const UNIT: &str = "[[units]]\nid = \"county\"\nname = \"某县\"\n";

#[test]
fn the_reference_lists_every_key_and_only_those() {
    let cases: [(&str, String); 9] = [
        ("The file", "zz_unknown = 1\n".to_owned()),
        ("[daemon]", "[daemon]\nzz_unknown = 1\n".to_owned()),
        ("[[units]]", format!("{UNIT}zz_unknown = 1\n")),
        (
            "[[indicators]]",
            "[[indicators]]\nid = \"a\"\nname = \"A\"\nkind = \"count\"\nunit = \"篇\"\nzz_unknown = 1\n"
                .to_owned(),
        ),
        (
            "[[targets]]",
            "[[targets]]\nindicator = \"a\"\nper = \"unit\"\nperiod = \"year\"\nmin = 1\nzz_unknown = 1\n"
                .to_owned(),
        ),
        (
            "[[sources]]",
            format!(
                "{UNIT}[[sources]]\nid = \"s\"\nplugin = \"p\"\nunit = \"county\"\nschedule = \"0 2 * * *\"\nzz_unknown = 1\n"
            ),
        ),
        ("[reports]", "[reports]\nzz_unknown = 1\n".to_owned()),
        (
            "[store]",
            "[store]\nurl = \"postgresql://tally@db/tally\"\nzz_unknown = 1\n".to_owned(),
        ),
        ("[metrics]", "[metrics]\nzz_unknown = 1\n".to_owned()),
    ];
    let mut wrong = Vec::new();
    for (heading, text) in cases {
        let accepted = accepted_keys(&text);
        let documented = documented_keys(heading);
        for key in accepted.difference(&documented) {
            wrong.push(format!("{heading}: `{key}` is accepted but not documented"));
        }
        for key in documented.difference(&accepted) {
            wrong.push(format!("{heading}: `{key}` is documented but not accepted"));
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/configuration.md and the parser disagree:\n{}",
        wrong.join("\n")
    );
}
