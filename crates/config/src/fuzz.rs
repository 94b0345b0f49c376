//! Property-based fuzzing of the configuration parser: whatever an operator
//! (or a broken editor, or a truncated copy) puts in the file, `Config::parse`
//! answers, never panics, and every problem it reports has a place in the file.
//!
//! Case counts are modest so that CI stays short; `PROPTEST_CASES=100000`
//! runs a longer campaign.

use std::path::Path;

use proptest::prelude::*;

use super::*;

const EXAMPLE: &str = include_str!("../../../config/example.toml");

/// The environment of the example: its `${env:...}` references resolve, so a
/// mutated example reaches the semantic checks and not only the secret lookup.
fn fake_env(name: &str) -> Option<String> {
    match name {
        "TALLY_API_TOKEN" | "NATRES_WECHAT_SECRET" | "EDU_WEIBO_TOKEN" => {
            Some("fuzz-secret".to_owned())
        }
        _ => None,
    }
}

/// Parses `text` and checks what any answer must satisfy.
fn check(text: &str) -> Result<(), TestCaseError> {
    // A directory that does not exist: a mutated `${file:...}` reads nothing.
    let path = Path::new("/nonexistent-tally-fuzz/t.toml");
    let lines = text.split('\n').count();
    match Config::parse(text, path, &fake_env) {
        Ok(_) => {}
        Err(err) => {
            let problems = err.problems();
            prop_assert!(!problems.is_empty(), "an error without a problem: {err:?}");
            for p in &problems {
                prop_assert!(
                    p.location.line >= 1 && p.location.line <= lines,
                    "line {} outside 1..={lines}: {p}",
                    p.location.line
                );
                prop_assert!(p.location.column >= 1, "column 0: {p}");
                prop_assert_eq!(&p.location.file, path);
                prop_assert!(!p.message.trim().is_empty(), "an empty message: {}", p);
            }
            // Display works and starts with the place.
            let shown = err.to_string();
            prop_assert!(shown.starts_with(&path.display().to_string()), "{}", shown);
        }
    }
    Ok(())
}

/// One edit of a text: insert, delete or replace one character.
#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, char),
    Delete(usize),
    Replace(usize, char),
}

/// Characters that matter to TOML and to the checks, plus any character.
fn interesting_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => prop::sample::select(vec![
            '"', '\'', '[', ']', '{', '}', '=', ',', '.', '#', '\n', '\\', ' ', '$', ':', '/',
            '0', '9', '-', '*', 'a', 'z', '某', '\t', '\r', '\u{0}', '\u{feff}',
        ]),
        1 => any::<char>(),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), interesting_char()).prop_map(|(i, c)| Edit::Insert(i, c)),
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), interesting_char()).prop_map(|(i, c)| Edit::Replace(i, c)),
    ]
}

/// Applies edits at character positions (taken modulo the length).
fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let n = chars.len();
        match *e {
            Edit::Insert(i, c) => chars.insert(i % (n + 1), c),
            Edit::Delete(i) if n > 0 => {
                chars.remove(i % n);
            }
            Edit::Replace(i, c) if n > 0 => chars[i % n] = c,
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// Lines of a real configuration, shuffled and recombined: deeper than random
/// text, since most of them are valid TOML.
fn spliced_lines() -> impl Strategy<Value = String> {
    let lines: Vec<&'static str> = EXAMPLE.lines().collect();
    prop::collection::vec(prop::sample::select(lines), 0..60).prop_map(|ls| ls.join("\n"))
}

proptest! {
    // 256 cases each unless PROPTEST_CASES says otherwise (proptest reads it);
    // failures are saved under proptest-regressions/ and replayed first.
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn arbitrary_text_never_panics_and_errors_have_a_place(text in any::<String>()) {
        check(&text)?;
    }

    #[test]
    fn toml_like_text_never_panics_and_errors_have_a_place(
        text in "[\\[\\]{}=,.\"'#\\n a-z0-9_:$-]{0,200}"
    ) {
        check(&text)?;
    }

    #[test]
    fn mutated_example_never_panics_and_errors_have_a_place(
        edits in prop::collection::vec(edit(), 1..8)
    ) {
        check(&mutate(EXAMPLE, &edits))?;
    }

    #[test]
    fn spliced_example_lines_never_panic_and_errors_have_a_place(text in spliced_lines()) {
        check(&text)?;
    }
}

#[test]
fn the_unmutated_example_parses() {
    let path = Path::new("/nonexistent-tally-fuzz/t.toml");
    if let Err(e) = Config::parse(EXAMPLE, path, &fake_env) {
        panic!("config/example.toml does not parse: {e}");
    }
}
