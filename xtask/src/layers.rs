//! The crate graph of ARCHITECTURE.md, checked: every workspace crate may
//! depend only on the crates below it in [`LAYERS`]. Run by `cargo xtask lint`,
//! so that a dependency on a higher layer (a store that reaches for the daemon,
//! a plugin that links the host) fails CI instead of becoming a cycle later.
//!
//! Read from the members' `Cargo.toml` files (std only, like the rest of
//! xtask): a dependency is a line `tally-NAME...` or `tallyd...` inside a
//! `[dependencies]`, `[build-dependencies]` or `[dev-dependencies]` table
//! (target-specific ones included).

use std::path::Path;

/// Each workspace crate and the workspace crates it may depend on. A crate
/// missing here is an error: a new crate takes its place in the graph first.
pub const LAYERS: &[(&str, &[&str])] = &[
    // The plugin author's SDK: the ABI and the JSON protocol, nothing of the daemon.
    ("tally-plugin", &[]),
    ("tally-domain", &[]),
    ("tally-config", &["tally-domain", "tally-plugin"]),
    ("tally-store", &["tally-domain"]),
    (
        "tally-host",
        &["tally-domain", "tally-config", "tally-plugin"],
    ),
    (
        "tally-daemon",
        &[
            "tally-domain",
            "tally-config",
            "tally-store",
            "tally-host",
            "tally-plugin",
        ],
    ),
    (
        "tallyd",
        &[
            "tally-domain",
            "tally-config",
            "tally-store",
            "tally-host",
            "tally-daemon",
            "tally-plugin",
        ],
    ),
    (
        "tally-demo",
        &[
            "tally-domain",
            "tally-config",
            "tally-store",
            "tally-host",
            "tally-daemon",
            "tally-simulators",
        ],
    ),
    // Plugins see the SDK and the spreadsheet helpers, never the daemon.
    ("tally-tables", &["tally-plugin"]),
    ("tally-plugin-http-json", &["tally-plugin", "tally-tables"]),
    ("tally-plugin-csv-form", &["tally-plugin", "tally-tables"]),
    ("tally-plugin-example", &["tally-plugin"]),
    ("tally-plugin-wechat", &["tally-plugin"]),
    ("tally-plugin-weibo", &["tally-plugin"]),
    ("tally-plugin-xuexi", &["tally-plugin", "tally-tables"]),
    ("tally-plugin-feed", &["tally-plugin", "tally-tables"]),
    ("tally-plugin-exec", &["tally-plugin"]),
    // The platforms' stand-ins: outside the product's graph.
    ("tally-simulators", &[]),
    ("xtask", &[]),
];

/// Crates any test may use: they stand in for the outside world.
const TEST_SUPPORT: &[&str] = &["tally-simulators"];

/// Crates a crate's tests and benches may use beyond its layer: the upload
/// page's in-process tests check forms with the real `csv_form` plugin linked
/// in, and the hot-path benches time a whole poll of the real `http_json`.
const TEST_ONLY: &[(&str, &[&str])] = &[(
    "tally-daemon",
    &["tally-plugin-csv-form", "tally-plugin-http-json"],
)];

/// One manifest's name and its dependencies on workspace crates, each with
/// whether it is a dev-dependency.
#[derive(Debug, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub deps: Vec<(String, bool)>,
}

/// Reads the `[package] name` and the workspace dependencies of a `Cargo.toml`.
pub fn parse_manifest(text: &str) -> Option<Manifest> {
    let mut name = None;
    let mut deps = Vec::new();
    let mut table = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            table = line.trim_matches(|c| c == '[' || c == ']').to_owned();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let key = line
            .split(|c: char| c == '=' || c == '.' || c.is_whitespace())
            .next()
            .unwrap_or_default()
            .trim_matches('"');
        if table == "package" && key == "name" {
            name = line
                .split_once('=')
                .map(|(_, v)| v.trim().trim_matches('"').to_owned());
        }
        let dev = table == "dev-dependencies" || table.ends_with(".dev-dependencies");
        let normal = table == "dependencies"
            || table == "build-dependencies"
            || table.ends_with(".dependencies")
            || table.ends_with(".build-dependencies");
        if (dev || normal) && (key.starts_with("tally-") || key == "tallyd") {
            deps.push((key.to_owned(), dev));
        }
    }
    Some(Manifest { name: name?, deps })
}

/// Every dependency that breaks [`LAYERS`], as a sentence naming both crates.
pub fn violations(manifests: &[Manifest]) -> Vec<String> {
    let mut found = Vec::new();
    for m in manifests {
        let Some((_, allowed)) = LAYERS.iter().find(|(name, _)| *name == m.name) else {
            found.push(format!(
                "crate {} has no place in the layers: add it to LAYERS in xtask/src/layers.rs and to ARCHITECTURE.md",
                m.name
            ));
            continue;
        };
        for (dep, dev) in &m.deps {
            let test_only = TEST_ONLY
                .iter()
                .any(|(name, deps)| *name == m.name && deps.contains(&dep.as_str()));
            let ok = allowed.contains(&dep.as_str())
                || (*dev && (TEST_SUPPORT.contains(&dep.as_str()) || test_only));
            if !ok {
                let what = if *dev { "dev-dependency" } else { "dependency" };
                found.push(format!(
                    "{} has a {what} on {dep}, which is not below it (it may use: {})",
                    m.name,
                    if allowed.is_empty() {
                        "no workspace crate".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                ));
            }
        }
    }
    found
}

/// The workspace members of the root `Cargo.toml`, read and checked.
pub fn check(root: &Path) -> Result<(), String> {
    let read =
        |path: &Path| std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()));
    let workspace = read(&root.join("Cargo.toml"))?;
    let members = members(&workspace);
    if members.is_empty() {
        return Err("Cargo.toml: no workspace members found".to_owned());
    }
    let mut manifests = Vec::new();
    for member in members {
        let path = root.join(&member).join("Cargo.toml");
        let text = read(&path)?;
        manifests.push(
            parse_manifest(&text)
                .ok_or_else(|| format!("{}: no [package] name", path.display()))?,
        );
    }
    let found = violations(&manifests);
    if found.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the crate graph breaks its layers:\n  {}",
            found.join("\n  ")
        ))
    }
}

/// The strings of `members = [...]` in the workspace manifest.
fn members(workspace: &str) -> Vec<String> {
    let Some(start) = workspace.find("members = [") else {
        return Vec::new();
    };
    let rest = &workspace[start + "members = [".len()..];
    let end = rest.find(']').unwrap_or(rest.len());
    rest[..end]
        .lines()
        .map(|l| {
            l.split('#')
                .next()
                .unwrap_or_default()
                .trim()
                .trim_end_matches(',')
        })
        .filter(|l| l.starts_with('"'))
        .map(|l| l.trim_matches('"').to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(name: &str, deps: &[(&str, bool)]) -> Manifest {
        Manifest {
            name: name.to_owned(),
            deps: deps
                .iter()
                .map(|(d, dev)| ((*d).to_owned(), *dev))
                .collect(),
        }
    }

    #[test]
    fn dependencies_and_their_kind_are_read_from_a_manifest() {
        let text = r#"
[package]
name = "tally-store"

[dependencies]
tally-domain.workspace = true
serde.workspace = true

[target.'cfg(unix)'.dependencies]
tally-host = { path = "../host" }

[dev-dependencies]
tally-simulators.workspace = true
"#;
        assert_eq!(
            parse_manifest(text),
            Some(manifest(
                "tally-store",
                &[
                    ("tally-domain", false),
                    ("tally-host", false),
                    ("tally-simulators", true)
                ]
            ))
        );
    }

    #[test]
    fn a_test_only_dependency_is_allowed_for_tests_only() {
        let dev = manifest("tally-daemon", &[("tally-plugin-csv-form", true)]);
        assert!(violations(&[dev]).is_empty());
        let normal = manifest("tally-daemon", &[("tally-plugin-csv-form", false)]);
        assert_eq!(violations(&[normal]).len(), 1);
        let elsewhere = manifest("tally-store", &[("tally-plugin-csv-form", true)]);
        assert_eq!(violations(&[elsewhere]).len(), 1);
    }

    #[test]
    fn an_upward_dependency_is_refused_and_named() {
        let found = violations(&[
            manifest(
                "tally-store",
                &[("tally-domain", false), ("tally-daemon", false)],
            ),
            manifest(
                "tally-plugin-weibo",
                &[("tally-plugin", false), ("tally-simulators", true)],
            ),
            manifest("tally-host", &[("tally-store", true)]),
            manifest("tally-new", &[]),
        ]);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(
            found[0].starts_with("tally-store has a dependency on tally-daemon"),
            "{}",
            found[0]
        );
        assert!(
            found[1].starts_with("tally-host has a dev-dependency on tally-store"),
            "{}",
            found[1]
        );
        assert!(
            found[2].starts_with("crate tally-new has no place"),
            "{}",
            found[2]
        );
    }

    #[test]
    fn the_workspace_keeps_its_layers() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        check(&root).unwrap();
    }
}
