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
///
/// A secret rarely leaves in the form it was configured in: an upstream echoes the
/// URL it was sent (percent-encoded), a plugin quotes a value with `{:?}` or puts it
/// in JSON (`\"`, `\\`, `\u0022`), a client sends it as HTTP Basic credentials
/// (base64 of `user:secret`), a message is cut after so many characters and keeps
/// the secret's start. So a secret is matched character by character, each
/// character in any of its written forms:
///
/// - itself (a space also as `+`, as in form encoding);
/// - percent-encoded, upper or lower hex, also encoded twice (`%2B`, `%2b`, `%252B`);
/// - backslash-escaped as JSON and Rust's `Debug` write it, once or nested (`\"`,
///   `\\\"`, `\/`, `\n`, `\u0022`, `\u{22}`, `\x22`);
/// - as an HTML character reference (`&amp;`, `&quot;`, `&#34;`, `&#x22;`).
///
/// A run that spells the whole secret, or its first [`Redactor::prefix_len`]
/// characters (a snippet cut inside the secret), becomes `***`. Separately, a
/// base64 run holding the secret's bytes at any alignment (so `user:secret` in a
/// `Basic` header, whatever the user) becomes `***` whole.
///
/// Secrets shorter than [`Redactor::MIN_LEN`] are refused when the configuration is
/// loaded (see `Resolver`); given one anyway, the redactor still replaces it.
///
/// ```
/// use tally_config::Redactor;
/// let r = Redactor::new(["S3cr3t+/="]);
/// assert_eq!(r.redact("GET /x?k=S3cr3t%2B%2F%3D failed"), "GET /x?k=*** failed");
/// assert_eq!(r.redact(r#"{"k":"S3cr3t+\/="}"#), r#"{"k":"***"}"#);
/// ```
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    secrets: Vec<Pattern>,
}

#[derive(Clone)]
struct Pattern {
    chars: Vec<char>,
    /// Matched characters from which a run of the secret's start is replaced.
    prefix: usize,
    /// Base64 text only the secret's bytes determine, one per alignment of the
    /// secret in the encoded bytes and per alphabet, cut to the length that
    /// betrays `prefix` characters.
    base64: Vec<String>,
}

impl Redactor {
    /// Secrets shorter than this are refused when a configuration is loaded: a
    /// value of three characters is guessed at once, and cannot be told apart
    /// from ordinary text to be replaced in it.
    pub const MIN_LEN: usize = 4;

    pub fn new<I, S>(secrets: I) -> Redactor
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .map(Into::into)
            .filter(|s| !s.is_empty())
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor {
            secrets: secrets.iter().map(|s| Pattern::new(s)).collect(),
        }
    }

    /// How many of a secret's first characters, found together, are replaced
    /// although the rest is missing: half the secret, but at least
    /// [`Redactor::MIN_LEN`] and at most 6 (a secret of `MIN_LEN` characters or
    /// fewer only whole). Six characters of a random token tell little; half of a
    /// short one tells much; fewer than four would replace ordinary words.
    pub fn prefix_len(secret_chars: usize) -> usize {
        secret_chars
            .div_ceil(2)
            .clamp(Self::MIN_LEN, 6)
            .min(secret_chars)
    }

    pub fn redact(&self, text: &str) -> String {
        if self.secrets.is_empty() {
            return text.to_owned();
        }
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let (mut at, mut copied) = (0, 0);
        let mut ends = Vec::new();
        while at < bytes.len() {
            let end = self
                .secrets
                .iter()
                .filter_map(|p| p.match_at(bytes, at, &mut ends))
                .max();
            match end {
                Some(end) => {
                    out.push_str(&text[copied..at]);
                    out.push_str("***");
                    (at, copied) = (end, end);
                }
                None => at += text[at..].chars().next().map_or(1, char::len_utf8),
            }
        }
        out.push_str(&text[copied..]);
        for p in &self.secrets {
            for needle in &p.base64 {
                out = replace_base64_runs(&out, needle);
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }
}

impl Pattern {
    fn new(secret: &str) -> Pattern {
        use base64::Engine as _;
        let chars: Vec<char> = secret.chars().collect();
        let prefix = Redactor::prefix_len(chars.len());
        let bytes = secret.as_bytes();
        // Base64 characters that carry `prefix` characters' worth of bits.
        let wanted = (prefix * 4).div_ceil(3).max(4);
        let mut base64 = Vec::new();
        for engine in [
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            for lead in 0..3 {
                let mut input = vec![0u8; lead];
                input.extend_from_slice(bytes);
                let encoded = engine.encode(&input);
                // Characters whose six bits all come from the secret.
                let first = (8 * lead).div_ceil(6);
                let last = 8 * input.len() / 6;
                if last > first {
                    let core = &encoded[first..last];
                    let needle = &core[..core.len().min(wanted)];
                    if !base64.iter().any(|n| n == needle) {
                        base64.push(needle.to_owned());
                    }
                }
            }
        }
        Pattern {
            chars,
            prefix,
            base64,
        }
    }

    /// Where a run that spells this secret (or enough of its start) and begins
    /// at `at` ends; `ends` is scratch space.
    fn match_at(&self, text: &[u8], at: usize, ends: &mut Vec<usize>) -> Option<usize> {
        // Every form of a character starts with its own first byte, `%`, `\`,
        // `&` or (a space) `+`: most positions are passed over here.
        let first = self.chars.first().map_or(0, |&c| {
            let mut buf = [0u8; 4];
            c.encode_utf8(&mut buf).as_bytes()[0]
        });
        let b = text[at];
        if b != first && !matches!(b, b'%' | b'\\' | b'&' | b'+') {
            return None;
        }
        let mut frontier = vec![at];
        let mut matched = 0;
        for &c in &self.chars {
            ends.clear();
            for &p in &frontier {
                forms_of(text, p, c, ends);
            }
            if ends.is_empty() {
                break;
            }
            ends.sort_unstable();
            ends.dedup();
            std::mem::swap(&mut frontier, ends);
            matched += 1;
        }
        let enough = matched == self.chars.len() || matched >= self.prefix;
        (matched > 0 && enough).then(|| frontier.iter().copied().max().unwrap_or(at))
    }
}

/// Pushes to `ends` where each written form of `c` that starts at `at` ends.
fn forms_of(text: &[u8], at: usize, c: char, ends: &mut Vec<usize>) {
    let rest = &text[at..];
    let mut buf = [0u8; 4];
    let raw = c.encode_utf8(&mut buf).as_bytes();
    if rest.starts_with(raw) {
        ends.push(at + raw.len());
    }
    if c == ' ' && rest.first() == Some(&b'+') {
        ends.push(at + 1);
    }
    for twice in [false, true] {
        if let Some(n) = percent_encoded(rest, raw, twice) {
            ends.push(at + n);
        }
    }
    let slashes = rest.iter().take_while(|&&b| b == b'\\').count();
    for n in 1..=slashes {
        if let Some(len) = escaped(&rest[n..], c, raw) {
            ends.push(at + n + len);
        }
    }
    if let Some(n) = html_reference(rest, c) {
        ends.push(at + n);
    }
}

fn hex_value(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// `%2B` or `%2b` for each byte of `raw` (`%252B` when `twice`): the length, if
/// that is what starts `text`.
fn percent_encoded(text: &[u8], raw: &[u8], twice: bool) -> Option<usize> {
    let lead: &[u8] = if twice { b"%25" } else { b"%" };
    let mut i = 0;
    for &b in raw {
        if !text[i..].starts_with(lead) {
            return None;
        }
        i += lead.len();
        if hex_value(text.get(i..i + 2)?)? != u32::from(b) {
            return None;
        }
        i += 2;
    }
    Some(i)
}

/// The length of the escape body after one or more backslashes, if it writes `c`.
fn escaped(text: &[u8], c: char, raw: &[u8]) -> Option<usize> {
    if text.starts_with(raw) {
        // `\"`, `\\`, `\/`, `\'`: the character itself, escaped.
        return Some(raw.len());
    }
    let named = match c {
        '\n' => Some(b'n'),
        '\r' => Some(b'r'),
        '\t' => Some(b't'),
        '\0' => Some(b'0'),
        '\u{8}' => Some(b'b'),
        '\u{c}' => Some(b'f'),
        _ => None,
    };
    if named.is_some() && text.first() == named.as_ref() {
        return Some(1);
    }
    match text.first()? {
        b'u' if text.get(1) == Some(&b'{') => {
            let close = text.iter().take(10).position(|&b| b == b'}')?;
            (hex_value(&text[2..close])? == u32::from(c)).then_some(close + 1)
        }
        b'u' => {
            let mut units = [0u16; 2];
            let units = c.encode_utf16(&mut units);
            if hex_value(text.get(1..5)?)? != u32::from(units[0]) {
                return None;
            }
            if units.len() == 1 {
                return Some(5);
            }
            // A surrogate pair: `\uD83D\uDE00`, the second escaped like the first.
            let rest = &text[5..];
            let slashes = rest.iter().take_while(|&&b| b == b'\\').count();
            (slashes > 0
                && rest.get(slashes) == Some(&b'u')
                && hex_value(rest.get(slashes + 1..slashes + 5)?)? == u32::from(units[1]))
            .then_some(5 + slashes + 5)
        }
        b'x' => (hex_value(text.get(1..3)?)? == u32::from(c)).then_some(3),
        _ => None,
    }
}

/// `&amp;`, `&quot;`, `&#34;`, `&#x22;`: the length, if that writes `c` at the start of `text`.
fn html_reference(text: &[u8], c: char) -> Option<usize> {
    if text.first() != Some(&b'&') {
        return None;
    }
    let end = text.iter().take(12).position(|&b| b == b';')?;
    let name = &text[1..end];
    let value = match name {
        b"amp" => u32::from('&'),
        b"lt" => u32::from('<'),
        b"gt" => u32::from('>'),
        b"quot" => u32::from('"'),
        b"apos" => u32::from('\''),
        [b'#', b'x' | b'X', hex @ ..] => hex_value(hex)?,
        [b'#', dec @ ..] if !dec.is_empty() && dec.iter().all(u8::is_ascii_digit) => {
            std::str::from_utf8(dec).ok()?.parse().ok()?
        }
        _ => return None,
    };
    (value == u32::from(c)).then_some(end + 1)
}

/// Replaces every base64 run (either alphabet, padding included) that contains
/// `needle` by `***`: the user beside the secret in `user:secret` goes too.
fn replace_base64_runs(text: &str, needle: &str) -> String {
    let is_b64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_');
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = text[from..].find(needle).map(|i| i + from) {
        let start = bytes[..found]
            .iter()
            .rposition(|&b| !is_b64(b))
            .map_or(0, |i| i + 1)
            .max(copied);
        let end = bytes[found..]
            .iter()
            .position(|&b| !is_b64(b))
            .map_or(bytes.len(), |i| found + i);
        out.push_str(&text[copied..start]);
        out.push_str("***");
        copied = end;
        from = end;
    }
    out.push_str(&text[copied..]);
    out
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
            // A value this short is guessed at once and cannot be told apart from
            // ordinary text to be redacted; an empty one leaks nothing.
            let value = value.and_then(|value| {
                let n = value.chars().count();
                if (1..Redactor::MIN_LEN).contains(&n) {
                    let what = match kind {
                        "env" => format!("environment variable {name:?}"),
                        _ => format!("secret file {name:?}"),
                    };
                    Err(format!(
                        "{what} holds {n} character{}: a secret needs at least {} \
                         (a shorter one is guessed at once and cannot be redacted)",
                        if n == 1 { "" } else { "s" },
                        Redactor::MIN_LEN
                    ))
                } else {
                    Ok(value)
                }
            });
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
    fn redacts_longest_first() {
        let r = Redactor::new(["abcd", "s3cret", "s3cret-and-more", ""]);
        assert_eq!(
            r.redact("token s3cret-and-more then s3cret, abcd"),
            "token *** then ***, ***"
        );
        assert_eq!(format!("{r:?}"), "Redactor(3 secrets)");
    }

    /// The percent-encoding of `text`, every byte but unreserved ones, in `upper`
    /// or lower hex, a space as `+` when `form`.
    fn percent(text: &str, upper: bool, form: bool) -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    char::from(b).to_string()
                }
                b' ' if form => "+".to_owned(),
                _ if upper => format!("%{b:02X}"),
                _ => format!("%{b:02x}"),
            })
            .collect()
    }

    #[test]
    fn every_written_form_of_a_secret_is_redacted() {
        use base64::Engine as _;
        let secret = "Zq\"9\\+/=%&Kx w+Y/==é";
        let r = Redactor::new([secret]);
        let json = serde_json::to_string(secret).unwrap();
        let json = &json[1..json.len() - 1];
        let debug = format!("{secret:?}");
        let debug = &debug[1..debug.len() - 1];
        let json_of_debug = serde_json::to_string(debug).unwrap();
        let mut forms = vec![
            secret.to_owned(),
            json.to_owned(),
            json.replace('/', "\\/"),
            debug.to_owned(),
            json_of_debug[1..json_of_debug.len() - 1].to_owned(),
            percent(secret, true, false),
            percent(secret, false, false),
            percent(secret, true, true),
            percent(secret, true, false).replace('%', "%25"),
            secret
                .chars()
                .map(|c| format!("\\u{:04x}", u32::from(c)))
                .collect(),
            secret
                .chars()
                .map(|c| format!("\\u{{{:x}}}", u32::from(c)))
                .collect(),
            secret
                .replace('&', "&amp;")
                .replace('"', "&quot;")
                .replace('=', "&#61;")
                .replace('/', "&#x2F;"),
        ];
        for user in ["u", "us", "use", "user"] {
            let credentials = format!("{user}:{secret}");
            forms.push(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(&credentials)
            ));
            forms.push(base64::engine::general_purpose::URL_SAFE.encode(&credentials));
        }
        for form in &forms {
            let redacted = r.redact(&format!("before [{form}] after"));
            assert!(
                redacted == "before [***] after" || redacted == "before [Basic ***] after",
                "{form} became {redacted}"
            );
        }
        // A snippet cut inside the secret keeps its start.
        for cut in 6..secret.chars().count() {
            let head: String = secret.chars().take(cut).collect();
            let snippet = format!("line 3: {:?}... skipped", format!("{{\"k\":\"{head}"));
            let redacted = r.redact(&snippet);
            assert!(redacted.contains("***"), "{snippet} became {redacted}");
            assert!(!redacted.contains("Zq"), "{snippet} became {redacted}");
        }
    }

    #[test]
    fn a_prefix_counts_from_half_the_secret_between_four_and_six_characters() {
        assert_eq!(Redactor::prefix_len(4), 4);
        assert_eq!(Redactor::prefix_len(5), 4);
        assert_eq!(Redactor::prefix_len(10), 5);
        assert_eq!(Redactor::prefix_len(40), 6);
        let r = Redactor::new(["S3cr3t-token-value"]);
        assert_eq!(
            r.redact("S3cr3 is fine, S3cr3t-t... is not"),
            "S3cr3 is fine, ***... is not"
        );
        // Text around a secret, and other backslashes, stay as they were.
        assert_eq!(
            r.redact(r#"a\"b "S3cr3t-token-value" c\\d"#),
            r#"a\"b "***" c\\d"#
        );
        let short = Redactor::new(["wxyz"]);
        assert_eq!(short.redact("wxy wxyz w%78yz"), "wxy *** ***");
    }

    #[test]
    fn secrets_shorter_than_four_characters_are_refused() {
        let env = |name: &str| match name {
            "SHORT" => Some("abc".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let mut r = Resolver {
            env: &env,
            base_dir: Path::new("."),
            resolved: Vec::new(),
            defer_missing: false,
            unresolved: Vec::new(),
        };
        let err = r.resolve("${env:SHORT}").unwrap_err();
        assert!(
            err.contains("\"SHORT\" holds 3 characters: a secret needs at least 4"),
            "{err}"
        );
        assert!(!err.contains("abc"), "{err}");
        assert_eq!(r.resolve("x${env:EMPTY}").unwrap(), "x");
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
