//! `tallyd new-plugin NAME`: writes a plugin crate from the templates in
//! `templates/`, embedded in the binary so that an installed `tallyd` needs
//! no checkout to generate one.

use std::path::{Path, PathBuf};

const CARGO_TOML: &str = include_str!("templates/Cargo.toml.txt");
const LIB_RS: &str = include_str!("templates/lib.rs.txt");
const TEST_RS: &str = include_str!("templates/test.rs.txt");
const README: &str = include_str!("templates/README.md.txt");

/// The SDK's major version: a crate generated away from a checkout depends
/// on the published SDK of the ABI this `tallyd` loads.
const SDK_VERSION_REQ: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum NewPluginError {
    #[error(
        "plugin name {0:?}: use lower-case letters, digits, '_' or '-', starting with a letter, at most 64 characters"
    )]
    BadName(String),
    #[error("{0}: already exists; choose another name or --dir")]
    Exists(PathBuf),
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the SDK comes from in the generated `Cargo.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sdk {
    /// `tally-plugin = { path = ... }`: a checkout's `plugins/sdk`.
    Path(PathBuf),
    /// `tally-plugin = "1"` from the registry.
    Registry,
}

impl Sdk {
    /// The SDK of the checkout this `tallyd` was built from, if it is still
    /// there; otherwise the published one.
    pub fn default_for_this_build() -> Sdk {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/sdk");
        match sdk.join("Cargo.toml").is_file() {
            true => Sdk::Path(sdk.canonicalize().unwrap_or(sdk)),
            false => Sdk::Registry,
        }
    }

    fn dependency(&self, features: &str) -> String {
        match self {
            Sdk::Path(path) => format!(
                "tally-plugin = {{ path = {}{features} }}",
                toml_string(&path.display().to_string())
            ),
            Sdk::Registry => {
                format!("tally-plugin = {{ version = \"{SDK_VERSION_REQ}\"{features} }}")
            }
        }
    }
}

/// A TOML basic string (paths may hold quotes or backslashes).
fn toml_string(text: &str) -> String {
    let mut out = String::from('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Crate-name rules, narrowed to what is also a valid plugin name once
/// `-` becomes `_` (`[a-z0-9_]`, as `plugin = "..."` expects).
pub fn check_name(name: &str) -> Result<(), NewPluginError> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    match ok {
        true => Ok(()),
        false => Err(NewPluginError::BadName(name.to_owned())),
    }
}

/// Writes the crate `name` at `dir` (which must not exist) and returns the
/// files written.
pub fn generate(name: &str, dir: &Path, sdk: &Sdk) -> Result<Vec<PathBuf>, NewPluginError> {
    check_name(name)?;
    if dir.exists() {
        return Err(NewPluginError::Exists(dir.to_path_buf()));
    }
    let lib_name = name.replace('-', "_");
    let fill = |template: &str| {
        template
            .replace("{{sdk_dependency}}", &sdk.dependency(""))
            .replace(
                "{{sdk_dev_dependency}}",
                &sdk.dependency(", features = [\"testkit\"]"),
            )
            .replace("{{lib_name}}", &lib_name)
            .replace("{{name}}", name)
    };
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("src/lib.rs", fill(LIB_RS)),
        (&format!("tests/{lib_name}.rs") as &str, fill(TEST_RS)),
        ("README.md", fill(README)),
        (".gitignore", "/target\n".to_owned()),
    ];
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = dir.join(rel);
        let io = |source| NewPluginError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(path.parent().expect("a file under dir")).map_err(io)?;
        std::fs::write(&path, text).map_err(io)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_crate_and_plugin_rules() {
        for good in ["toutiao", "gov-stats", "a_1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "1abc", "Toutiao", "a b", "a/b", "é", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn writes_the_crate_and_refuses_an_existing_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("gov-stats");
        let files = generate("gov-stats", &dir, &Sdk::Registry).unwrap();
        assert_eq!(files.len(), 5);
        let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("name = \"gov_stats\""), "{cargo}");
        assert!(
            cargo.contains("tally-plugin = { version = \"1\" }"),
            "{cargo}"
        );
        assert!(cargo.contains("\n[workspace]\n"), "{cargo}");
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("const NAME: &'static str = \"gov_stats\";"));
        assert!(!lib.contains("{{"), "a placeholder is left:\n{lib}");
        assert!(dir.join("tests/gov_stats.rs").is_file());

        let err = generate("gov-stats", &dir, &Sdk::Registry).unwrap_err();
        assert!(matches!(err, NewPluginError::Exists(_)), "{err}");
    }

    #[test]
    fn a_path_sdk_is_quoted_for_toml() {
        let sdk = Sdk::Path(PathBuf::from("/x/\"q\"/sdk"));
        assert_eq!(
            sdk.dependency(""),
            r#"tally-plugin = { path = "/x/\"q\"/sdk" }"#
        );
    }
}
