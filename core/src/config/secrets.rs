//! Secrets: `${env:NAME}` and `${file:PATH}` references, the `Secret` newtype and the
//! `Redactor` that scrubs resolved values out of text.
//!
//! Invariant: no error message built here contains a resolved value; it names the
//! variable or the file instead.

use std::fmt;
use std::path::Path;

/// A secret string (the API token). `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that needs it (comparing a request's token).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Replaces every secret value of the configuration in a text, so that plugin errors
/// and log lines can be shown without leaking what `${env:...}` or `${file:...}`
/// resolved to.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// Values shorter than this are not replaced: redacting `1` or `abc` would mangle
    /// every message while protecting nothing.
    pub const MIN_LEN: usize = 4;

    pub fn new<I, S>(secrets: I) -> Redactor
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .map(Into::into)
            .filter(|s| s.chars().count() >= Self::MIN_LEN)
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor { secrets }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

/// Resolves the `${env:NAME}` and `${file:PATH}` references of a configuration.
pub(crate) struct Resolver<'a> {
    pub(crate) env: &'a dyn Fn(&str) -> Option<String>,
    /// The configuration file's directory: relative `${file:...}` paths start here.
    pub(crate) base_dir: &'a Path,
    /// Every value a reference resolved to.
    pub(crate) resolved: Vec<String>,
    /// When set, a reference that cannot be resolved (a variable not set, a
    /// file not readable) is left in the text as written and its message
    /// goes to `unresolved`, so that `tallyd check` can go on and name every
    /// one of them.
    pub(crate) defer_missing: bool,
    /// The messages of the references left unresolved since last drained.
    pub(crate) unresolved: Vec<String>,
}

impl Resolver<'_> {
    /// Replaces every reference in `text`. A string without `${env:` or `${file:` is
    /// returned as is; other `${...}` text is left alone, since plugin settings may
    /// legitimately contain templates.
    pub(crate) fn resolve(&mut self, text: &str) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some((start, kind)) = next_reference(rest) {
            out.push_str(&rest[..start]);
            let after = &rest[start + kind.len() + 3..];
            let Some(end) = after.find('}') else {
                return Err(format!(
                    "unterminated ${{{kind}:...}} reference: missing `}}`"
                ));
            };
            let name = &after[..end];
            if name.is_empty() {
                return Err(format!("empty ${{{kind}:}} reference"));
            }
            let value = match kind {
                "env" => (self.env)(name)
                    .ok_or_else(|| format!("environment variable {name:?} is not set")),
                _ => {
                    let path = self.base_dir.join(name);
                    std::fs::read_to_string(&path)
                        .map(|content| content.trim_end_matches(['\n', '\r']).to_owned())
                        .map_err(|e| {
                            format!(
                                "cannot read secret file {:?}: {e}",
                                path.display().to_string()
                            )
                        })
                }
            };
            match value {
                Ok(value) => {
                    out.push_str(&value);
                    self.resolved.push(value);
                }
                Err(message) if self.defer_missing => {
                    self.unresolved.push(message);
                    out.push_str(&rest[start..start + kind.len() + 3 + end + 1]);
                }
                Err(message) => return Err(message),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn next_reference(text: &str) -> Option<(usize, &'static str)> {
    ["env", "file"]
        .into_iter()
        .filter_map(|kind| text.find(&format!("${{{kind}:")).map(|i| (i, kind)))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_longest_first_and_skips_short_values() {
        let r = Redactor::new(["abc", "s3cret", "s3cret-and-more"]);
        assert_eq!(
            r.redact("token s3cret-and-more then s3cret, abc"),
            "token *** then ***, abc"
        );
        assert_eq!(format!("{r:?}"), "Redactor(2 secrets)");
    }

    #[test]
    fn resolves_embedded_references() {
        let env = |name: &str| (name == "TOKEN").then(|| "t0ken".to_owned());
        let mut r = Resolver {
            env: &env,
            base_dir: Path::new("."),
            resolved: Vec::new(),
            defer_missing: false,
            unresolved: Vec::new(),
        };
        assert_eq!(r.resolve("Bearer ${env:TOKEN}!").unwrap(), "Bearer t0ken!");
        assert_eq!(r.resolve("${name} stays").unwrap(), "${name} stays");
        assert_eq!(r.resolved, ["t0ken"]);
        assert!(
            r.resolve("${env:TOKEN")
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(r.resolve("${env:}").unwrap_err().contains("empty"));
        assert!(
            r.resolve("a ${env:UNSET} b")
                .unwrap_err()
                .contains("\"UNSET\" is not set")
        );

        // Deferred: every missing reference is noted and left as written.
        r.defer_missing = true;
        assert_eq!(
            r.resolve("${env:UNSET}:${env:TOKEN}:${file:no/such/file}")
                .unwrap(),
            "${env:UNSET}:t0ken:${file:no/such/file}"
        );
        assert_eq!(r.unresolved.len(), 2, "{:?}", r.unresolved);
        assert!(r.unresolved[0].contains("\"UNSET\" is not set"));
        assert!(r.unresolved[1].contains("cannot read secret file"));
        // Syntax errors are never deferred.
        assert!(r.resolve("${env:").is_err());
    }
}
