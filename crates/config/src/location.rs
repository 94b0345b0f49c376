//! Where things are in the configuration file: key paths and their positions.
//!
//! Every key of the parsed document is recorded once, by key path
//! (`sources[2].settings.mapping[0].path`), with the position of its value. Semantic
//! checks then ask for a key path and get `file:line:column`, and toml's own errors,
//! which only carry a byte span, are mapped back to the key they are about. Keeping
//! this side table instead of `toml::Spanned` fields lets the public types stay plain
//! and lets the daemon locate keys the config module never looks at, such as a
//! plugin's settings.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

/// A place in a configuration file: `file:line:column` and the key path found there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, counted in characters (not bytes), as editors do.
    pub column: usize,
    /// The key path, e.g. `sources[2].schedule`; empty when the position is not
    /// inside any key (a syntax error at the top of the file).
    pub key: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        Ok(())
    }
}

/// One key path: where its text is in [`KeyIndex::paths`] and where its value starts.
#[derive(Debug, Clone, Copy)]
struct Entry {
    path_start: u32,
    path_len: u32,
    line: u32,
    column: u32,
}

/// Byte spans of a key and of its value; a `[table]` header is its own key and value.
#[derive(Debug, Clone, Copy)]
struct Spans {
    key: (u32, u32),
    value: (u32, u32),
}

/// The positions of every key path of one document.
///
/// Kept compact because a loaded [`crate::Config`] keeps it for the daemon's
/// messages: at 10,000 sources the document has some 170,000 key paths, and
/// a map of `String` to spans and positions took 27 MB. Here every path is a
/// slice of one string, the entries are sorted by path for lookup, and the
/// byte spans, which only toml's own errors need, are dropped once the file
/// has been read ([`KeyIndex::without_spans`]).
#[derive(Clone, Default)]
pub(crate) struct KeyIndex {
    file: PathBuf,
    /// Every key path, one after the other, in document order.
    paths: String,
    /// Sorted by path, one entry per path.
    entries: Vec<Entry>,
    /// `spans[i]` belongs to `entries[i]`; empty once dropped.
    spans: Vec<Spans>,
}

fn small(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl KeyIndex {
    pub(crate) fn build(file: &Path, text: &str, root: &DeTable<'_>) -> KeyIndex {
        let mut index = KeyIndex {
            file: file.to_owned(),
            ..KeyIndex::default()
        };
        let lines = LineIndex::new(text);
        let mut found = Vec::new();
        index.walk_table(&lines, &mut found, "", root);
        // Stable, so that of two entries for one path (a document with
        // errors) the later one wins, as it would in a map.
        found.sort_by(|a: &(Entry, Spans), b| index.path(&a.0).cmp(index.path(&b.0)));
        let mut kept: Vec<(Entry, Spans)> = Vec::with_capacity(found.len());
        for item in found {
            match kept.last_mut() {
                Some(last) if index.path(&last.0) == index.path(&item.0) => *last = item,
                _ => kept.push(item),
            }
        }
        (index.entries, index.spans) = kept.into_iter().unzip();
        index.paths.shrink_to_fit();
        index
    }

    /// The index without the byte spans, for keeping: [`KeyIndex::at`] still
    /// answers, [`KeyIndex::at_offset`] no longer does.
    pub(crate) fn without_spans(mut self) -> KeyIndex {
        self.spans = Vec::new();
        self
    }

    fn path(&self, entry: &Entry) -> &str {
        let start = entry.path_start as usize;
        &self.paths[start..start + entry.path_len as usize]
    }

    fn walk_table(
        &mut self,
        lines: &LineIndex<'_>,
        found: &mut Vec<(Entry, Spans)>,
        prefix: &str,
        table: &DeTable<'_>,
    ) {
        for (key, value) in table.iter() {
            let path = join_key(prefix, key.get_ref());
            found.push(self.record(lines, &path, key.span(), value.span()));
            self.walk_value(lines, found, &path, value.get_ref());
        }
    }

    fn walk_value(
        &mut self,
        lines: &LineIndex<'_>,
        found: &mut Vec<(Entry, Spans)>,
        path: &str,
        value: &DeValue<'_>,
    ) {
        match value {
            DeValue::Table(table) => self.walk_table(lines, found, path, table),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    found.push(self.record(lines, &item_path, item.span(), item.span()));
                    self.walk_value(lines, found, &item_path, item.get_ref());
                }
            }
            _ => {}
        }
    }

    fn record(
        &mut self,
        lines: &LineIndex<'_>,
        path: &str,
        key: Range<usize>,
        value: Range<usize>,
    ) -> (Entry, Spans) {
        let (line, column) = lines.position(value.start);
        let path_start = small(self.paths.len());
        self.paths.push_str(path);
        (
            Entry {
                path_start,
                path_len: small(path.len()),
                line: small(line),
                column: small(column),
            },
            Spans {
                key: (small(key.start), small(key.end)),
                value: (small(value.start), small(value.end)),
            },
        )
    }

    /// The location of a key path. A key that is not in the file (a missing key, or
    /// one the caller made up below a known one) is placed at its nearest ancestor
    /// that is, keeping the full key path in the message.
    pub(crate) fn at(&self, key: &str) -> Location {
        let mut probe = key;
        loop {
            if let Ok(i) = self.entries.binary_search_by(|e| self.path(e).cmp(probe)) {
                let entry = &self.entries[i];
                return self.location(entry.line as usize, entry.column as usize, key);
            }
            match parent_key(probe) {
                Some(parent) => probe = parent,
                None => return self.location(1, 1, key),
            }
        }
    }

    /// The location of a byte offset, named by the innermost key whose key or value
    /// covers it. Used for toml's own errors, which only carry a span; needs the
    /// spans (not for an index [`KeyIndex::without_spans`]).
    pub(crate) fn at_offset(&self, text: &str, offset: usize) -> Location {
        let offset = small(offset);
        let covers = |&(start, end): &(u32, u32)| start <= offset && offset <= end;
        let best = self
            .entries
            .iter()
            .zip(&self.spans)
            .filter(|(_, s)| covers(&s.key) || covers(&s.value))
            .min_by_key(|(e, s)| {
                let width = |span: &(u32, u32)| {
                    if covers(span) {
                        span.1 - span.0
                    } else {
                        u32::MAX
                    }
                };
                // On a tie (`[[units]]` is the span of both `units` and `units[0]`),
                // the deeper key is the more precise one.
                (
                    width(&s.key).min(width(&s.value)),
                    std::cmp::Reverse(e.path_len),
                )
            });
        let (line, column) = LineIndex::new(text).position(offset as usize);
        let key = best.map(|(e, _)| self.path(e)).unwrap_or_default();
        self.location(line, column, key)
    }

    fn location(&self, line: usize, column: usize, key: &str) -> Location {
        Location {
            file: self.file.clone(),
            line,
            column,
            key: key.to_owned(),
        }
    }
}

/// `prefix.key`, quoting keys that are not bare TOML keys so the path can be read back.
pub(crate) fn join_key(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

/// The key path one level up: `a.b[2]` → `a.b`, `a.b` → `a`, `a` → none.
fn parent_key(key: &str) -> Option<&str> {
    if let Some(stripped) = key.strip_suffix(']') {
        return stripped.rfind('[').map(|i| &key[..i]);
    }
    // A quoted last segment may itself contain dots: find the dot before its opening quote.
    let search_end = match key.strip_suffix('"') {
        Some(open) => open.rfind('"').unwrap_or(0),
        None => key.len(),
    };
    key[..search_end].rfind('.').map(|i| &key[..i])
}

/// Byte offsets to 1-based line and character column.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { text, starts }
    }

    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        (line, self.text[start..offset].chars().count() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_characters() {
        let lines = LineIndex::new("a = 1\nname = \"某县\" # x\n");
        assert_eq!(lines.position(0), (1, 1));
        assert_eq!(lines.position(6), (2, 1));
        // After `name = "某县"`: 7 ASCII bytes, a quote, two 3-byte characters.
        assert_eq!(lines.position(6 + 8 + 6), (2, 11));
        assert_eq!(lines.position(1000), (3, 1));
    }

    #[test]
    fn the_kept_index_locates_as_the_full_one() {
        let text = "[daemon]\nlisten = \"x\"\n\n[[sources]]\nid = \"a\"\n[sources.settings]\n\
                    \"a.b\" = [1, { p = 2 }]\n";
        let (tree, errors) = DeTable::parse_recoverable(text);
        assert!(errors.is_empty());
        let full = KeyIndex::build(Path::new("t.toml"), text, tree.get_ref());
        let kept = full.clone().without_spans();
        for key in [
            "daemon",
            "daemon.listen",
            "sources[0]",
            "sources[0].id",
            r#"sources[0].settings."a.b"[1].p"#,
            r#"sources[0].settings."a.b"[1].q"#,
            "sources[0].settings.missing",
            "nowhere",
        ] {
            assert_eq!(kept.at(key), full.at(key), "{key}");
        }
        assert_eq!(
            kept.at("sources[0].id").to_string(),
            "t.toml:5:6: sources[0].id"
        );
        assert_eq!(
            kept.at(r#"sources[0].settings."a.b"[1].p"#).to_string(),
            r#"t.toml:7:19: sources[0].settings."a.b"[1].p"#
        );
        assert_eq!(kept.at("nowhere").to_string(), "t.toml:1:1: nowhere");
        // The innermost key covering an offset: `id`'s value.
        let offset = text.find("\"a\"").unwrap() + 1;
        assert_eq!(full.at_offset(text, offset).key, "sources[0].id");
    }

    #[test]
    fn parent_keys() {
        assert_eq!(
            parent_key("sources[2].settings.a"),
            Some("sources[2].settings")
        );
        assert_eq!(parent_key("sources[2]"), Some("sources"));
        assert_eq!(parent_key("sources"), None);
        assert_eq!(parent_key(r#"s.settings."a.b""#), Some("s.settings"));
        assert_eq!(join_key("s", "a.b"), r#"s."a.b""#);
        assert_eq!(join_key("s", "名"), r#"s."名""#);
    }
}
