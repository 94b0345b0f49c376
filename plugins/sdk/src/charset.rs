//! Turning an HTTP body into text by the encoding it declares.
//!
//! Government portals still serve GB2312 and GBK pages; read as UTF-8, the
//! `2026年11月27日` of a list page is lost. The daemon (and the test kit)
//! decode every text body here, in the order of precedence browsers and XML
//! parsers use:
//!
//! 1. a byte order mark (UTF-8, UTF-16LE/BE): unambiguous bytes win;
//! 2. the `charset` parameter of the `Content-Type` header;
//! 3. for a body that starts with an XML declaration, its `encoding`
//!    (`<?xml version="1.0" encoding="gb2312"?>`);
//! 4. for markup, a `<meta charset="gbk">` or `<meta http-equiv="Content-Type"
//!    content="text/html; charset=gb2312">` in the first 1024 bytes;
//! 5. else UTF-8; a body that is not valid UTF-8 but is valid GBK is read as
//!    GBK, the fallback browsers use for undeclared pages in a zh-CN locale.
//!
//! Labels are those of the WHATWG Encoding Standard (`encoding_rs`): `gb2312`
//! and `gbk` both mean GBK, `gb18030` its superset. A label that names no
//! encoding is skipped with a warning, never a failure. Invalid bytes become
//! U+FFFD, with a warning.
//!
//! ```
//! use tally_plugin::charset::decode_body;
//! // "2026年11月27日" in GBK, declared by the page only.
//! let mut page = b"<html><head><meta charset=gb2312></head><body><span>2026".to_vec();
//! page.extend_from_slice(&[0xc4, 0xea, b'1', b'1', 0xd4, 0xc2, b'2', b'7', 0xc8, 0xd5]);
//! let d = decode_body(Some("text/html"), &page);
//! assert!(d.text.ends_with("2026年11月27日"));
//! assert_eq!(d.encoding, "GBK");
//! assert!(d.warnings.is_empty());
//! ```

use std::borrow::Cow;

use encoding_rs::{Encoding, GBK, UTF_8};

/// How far into a body the XML declaration and `<meta>` are looked for (the
/// HTML standard's prescan reads 1024 bytes).
const PRESCAN: usize = 1024;

/// A body decoded to text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub text: String,
    /// The encoding's WHATWG name: `UTF-8`, `GBK`, `gb18030`, `windows-1252`, ...
    pub encoding: &'static str,
    /// Where the encoding came from.
    pub declared_by: DeclaredBy,
    /// Problems that did not stop the decoding (an unknown label, invalid bytes).
    pub warnings: Vec<String>,
}

/// Where a body's encoding was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclaredBy {
    ByteOrderMark,
    Header,
    XmlDeclaration,
    Meta,
    /// Nothing declared one: UTF-8, or GBK for bytes that are only valid GBK.
    Default,
}

impl DeclaredBy {
    fn describe(self) -> &'static str {
        match self {
            DeclaredBy::ByteOrderMark => "byte order mark",
            DeclaredBy::Header => "Content-Type header",
            DeclaredBy::XmlDeclaration => "XML declaration",
            DeclaredBy::Meta => "<meta> charset",
            DeclaredBy::Default => "default",
        }
    }
}

/// Decodes a body by the encoding it declares (see the module docs for the
/// order). `content_type` is the `Content-Type` header's value, if any.
///
/// When the body starts with an XML declaration whose `encoding` is not
/// UTF-8, the text's declaration is rewritten to `encoding="UTF-8"`: the text
/// *is* Unicode now, and an XML parser that honours the declaration (feed-rs
/// does) would otherwise decode it a second time, as GBK.
///
/// ```
/// use tally_plugin::charset::{decode_body, DeclaredBy};
/// let d = decode_body(Some("text/plain; charset=utf-8"), b"<meta charset=\"gbk\">ok");
/// assert_eq!((d.encoding, d.declared_by), ("UTF-8", DeclaredBy::Header));
/// let d = decode_body(Some("text/html; charset=no-such"), b"plain");
/// assert_eq!((d.text.as_str(), d.encoding), ("plain", "UTF-8"));
/// assert!(d.warnings[0].contains("no-such"));
/// ```
pub fn decode_body(content_type: Option<&str>, bytes: &[u8]) -> Decoded {
    let mut warnings = Vec::new();
    let (encoding, declared_by) = choose(content_type, bytes, &mut warnings);
    let (text, used, had_errors) = encoding.decode(bytes);
    let declared_by = if used != encoding {
        DeclaredBy::ByteOrderMark
    } else {
        declared_by
    };
    let (text, used, declared_by) = if had_errors && declared_by == DeclaredBy::Default {
        // Undeclared legacy pages: what a zh-CN browser would do.
        match GBK.decode_without_bom_handling_and_without_replacement(bytes) {
            Some(gbk) => {
                warnings.push(
                    "the body declares no charset and is not valid UTF-8; read as GBK (declare the charset in the Content-Type header or a <meta> to be sure)"
                        .to_owned(),
                );
                (gbk, GBK, declared_by)
            }
            None => {
                warnings.push(
                    "the body declares no charset and is not valid UTF-8; invalid bytes replaced by U+FFFD"
                        .to_owned(),
                );
                (text, used, declared_by)
            }
        }
    } else {
        if had_errors {
            warnings.push(format!(
                "the body is not valid {} (declared by the {}); invalid bytes replaced by U+FFFD",
                used.name(),
                declared_by.describe()
            ));
        }
        (text, used, declared_by)
    };
    Decoded {
        text: utf8_xml_declaration(text).into_owned(),
        encoding: used.name(),
        declared_by,
        warnings,
    }
}

/// The encoding to decode with before BOM sniffing (which `Encoding::decode` does).
fn choose(
    content_type: Option<&str>,
    bytes: &[u8],
    warnings: &mut Vec<String>,
) -> (&'static Encoding, DeclaredBy) {
    if let Some(label) = content_type.and_then(header_charset) {
        match Encoding::for_label_no_replacement(label.as_bytes()) {
            Some(e) => return (e, DeclaredBy::Header),
            None => warnings.push(format!(
                "the Content-Type header's charset {label:?} is not a known encoding; ignored"
            )),
        }
    }
    let head = &bytes[..bytes.len().min(PRESCAN)];
    let in_document = xml_declaration_encoding(head)
        .map(|r| (&head[r], DeclaredBy::XmlDeclaration))
        .or_else(|| {
            let json = content_type.is_some_and(|t| t.to_ascii_lowercase().contains("json"));
            let markup = head
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| *b == b'<' || head.starts_with(b"\xef\xbb\xbf<"));
            (markup && !json)
                .then(|| meta_charset(head))
                .flatten()
                .map(|l| (l, DeclaredBy::Meta))
        });
    if let Some((label, by)) = in_document {
        match Encoding::for_label_no_replacement(label) {
            // A declaration read as ASCII cannot be UTF-16 (the HTML standard
            // says to use UTF-8 then).
            Some(e) if e == encoding_rs::UTF_16BE || e == encoding_rs::UTF_16LE => {
                return (UTF_8, by);
            }
            Some(e) => return (e, by),
            None => warnings.push(format!(
                "the {}'s encoding {:?} is not a known encoding; read as UTF-8",
                by.describe(),
                String::from_utf8_lossy(label)
            )),
        }
    }
    (UTF_8, DeclaredBy::Default)
}

/// The `charset` parameter of a `Content-Type` value, without quotes.
///
/// ```
/// use tally_plugin::charset::header_charset;
/// assert_eq!(header_charset("text/html; Charset=\"GB2312\""), Some("GB2312"));
/// assert_eq!(header_charset("application/json"), None);
/// ```
pub fn header_charset(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("charset") {
            return None;
        }
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'').trim();
        (!value.is_empty()).then_some(value)
    })
}

/// The byte range of the `encoding` value in an XML declaration at the start
/// of `head` (after a UTF-8 byte order mark and blanks), if it has one.
fn xml_declaration_encoding(head: &[u8]) -> Option<std::ops::Range<usize>> {
    let start = if head.starts_with(b"\xef\xbb\xbf") {
        3
    } else {
        0
    };
    let start = start
        + head[start..]
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
    let decl = &head[start..];
    if !decl.starts_with(b"<?xml") || !decl.get(5).is_some_and(u8::is_ascii_whitespace) {
        return None;
    }
    let end = find(decl, b"?>")?;
    let (at, value) = attributes(&decl[5..end])
        .into_iter()
        .find(|(name, _, _)| name.eq_ignore_ascii_case(b"encoding"))
        .map(|(_, at, value)| (at, value))?;
    let from = start + 5 + at;
    Some(from..from + value.len())
}

/// Rewrites the `encoding` of a leading XML declaration to `UTF-8`, if it says anything else.
fn utf8_xml_declaration(text: Cow<'_, str>) -> Cow<'_, str> {
    let head = &text.as_bytes()[..text.len().min(PRESCAN)];
    match xml_declaration_encoding(head) {
        Some(r) if !head[r.clone()].eq_ignore_ascii_case(b"utf-8") => {
            // The range lies in the ASCII of the declaration: char boundaries.
            let mut s = text.into_owned();
            s.replace_range(r, "UTF-8");
            Cow::Owned(s)
        }
        _ => text,
    }
}

/// The charset a `<meta>` of the first bytes declares: `<meta charset="...">`,
/// or `<meta http-equiv="Content-Type" content="...; charset=...">`.
fn meta_charset(head: &[u8]) -> Option<&[u8]> {
    let mut i = 0;
    while i < head.len() {
        let rest = &head[i..];
        if rest.starts_with(b"<!--") {
            // A commented-out <meta> declares nothing.
            i += find(rest, b"-->").map_or(head.len(), |e| e + 3);
            continue;
        }
        if rest.len() > 5
            && rest[..5].eq_ignore_ascii_case(b"<meta")
            && (rest[5].is_ascii_whitespace() || rest[5] == b'/')
        {
            // A tag cut off by the prescan's end is not read.
            let end = rest.iter().position(|b| *b == b'>')?;
            let attrs = attributes(&rest[5..end]);
            let get = |n: &[u8]| {
                attrs
                    .iter()
                    .find(|(name, _, _)| name.eq_ignore_ascii_case(n))
                    .map(|(_, _, v)| *v)
            };
            if let Some(charset) = get(b"charset").filter(|c| !c.is_empty()) {
                return Some(charset);
            }
            let content_type =
                get(b"http-equiv").is_some_and(|h| h.eq_ignore_ascii_case(b"content-type"));
            if let (true, Some(content)) = (content_type, get(b"content"))
                && let Some(label) = std::str::from_utf8(content).ok().and_then(header_charset)
            {
                // `label` is a slice of `content`: the same bytes, as bytes.
                let at = label.as_ptr() as usize - content.as_ptr() as usize;
                return Some(&content[at..at + label.len()]);
            }
            i += end + 1;
            continue;
        }
        i += 1;
    }
    None
}

/// The attributes of a tag's inside (`name="v" name='v' name=v name`): name,
/// offset of the value in `inside`, value.
fn attributes(inside: &[u8]) -> Vec<(&[u8], usize, &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    let n = inside.len();
    let is_name = |b: u8| !b.is_ascii_whitespace() && !matches!(b, b'=' | b'/' | b'>' | b'?');
    while i < n {
        while i < n && !is_name(inside[i]) {
            i += 1;
        }
        let name_start = i;
        while i < n && is_name(inside[i]) {
            i += 1;
        }
        if name_start == i {
            break;
        }
        let name = &inside[name_start..i];
        while i < n && inside[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n || inside[i] != b'=' {
            out.push((name, i, &inside[i..i]));
            continue;
        }
        i += 1;
        while i < n && inside[i].is_ascii_whitespace() {
            i += 1;
        }
        let (start, end) = match inside.get(i) {
            Some(q @ (b'"' | b'\'')) => {
                let start = i + 1;
                let end = inside[start..]
                    .iter()
                    .position(|b| b == q)
                    .map_or(n, |e| start + e);
                i = (end + 1).min(n);
                (start, end)
            }
            _ => {
                let start = i;
                while i < n && !inside[i].is_ascii_whitespace() && inside[i] != b'/' {
                    i += 1;
                }
                (start, i)
            }
        };
        out.push((name, start, &inside[start..end]));
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "2026年11月27日" in GBK (GB2312 has these characters too).
    const DATE_GBK: &[u8] = &[
        b'2', b'0', b'2', b'6', 0xc4, 0xea, b'1', b'1', 0xd4, 0xc2, b'2', b'7', 0xc8, 0xd5,
    ];

    fn with_date(prefix: &str, suffix: &str) -> Vec<u8> {
        let mut v = prefix.as_bytes().to_vec();
        v.extend_from_slice(DATE_GBK);
        v.extend_from_slice(suffix.as_bytes());
        v
    }

    #[test]
    fn the_header_wins_over_the_meta() {
        let page = with_date(
            "<html><head><meta charset=\"utf-8\"></head><body>",
            "</body>",
        );
        let d = decode_body(Some("text/html; charset=GB2312"), &page);
        assert_eq!((d.encoding, d.declared_by), ("GBK", DeclaredBy::Header));
        assert!(d.text.contains("2026年11月27日"), "{}", d.text);
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);

        // And the other way round: a UTF-8 header beats a GBK meta.
        let page = "<meta charset=gbk><p>2026年11月27日</p>".as_bytes();
        let d = decode_body(Some("text/html;charset=utf-8"), page);
        assert_eq!((d.encoding, d.declared_by), ("UTF-8", DeclaredBy::Header));
        assert!(d.text.contains("2026年11月27日"));
    }

    #[test]
    fn a_meta_charset_is_found() {
        let page = with_date(
            "<!DOCTYPE html>\n<html>\n<head>\n<title>x</title><meta charset=\"gb2312\" />",
            "",
        );
        let d = decode_body(Some("text/html"), &page);
        assert_eq!((d.encoding, d.declared_by), ("GBK", DeclaredBy::Meta));
        assert!(d.text.ends_with("2026年11月27日"));

        // The http-equiv form of TRS templates, in capitals, without a header.
        let page = with_date(
            "<HTML><HEAD><META HTTP-EQUIV=\"Content-Type\" CONTENT=\"text/html; charset=gb2312\"></HEAD>",
            "",
        );
        let d = decode_body(None, &page);
        assert_eq!((d.encoding, d.declared_by), ("GBK", DeclaredBy::Meta));
        assert!(d.text.ends_with("2026年11月27日"));

        // gb18030 is its own encoding, a superset of GBK.
        let d = decode_body(None, &with_date("<meta charset='GB18030'>", ""));
        assert_eq!(d.encoding, "gb18030");
        assert!(d.text.ends_with("2026年11月27日"));
    }

    #[test]
    fn a_meta_in_a_comment_or_past_1024_bytes_declares_nothing() {
        let page = "<!-- <meta charset=gbk> --><p>2026年11月27日</p>".as_bytes();
        let d = decode_body(None, page);
        assert_eq!((d.encoding, d.declared_by), ("UTF-8", DeclaredBy::Default));
        let late = format!("<html>{}<meta charset=gbk>é", " ".repeat(1100));
        let d = decode_body(None, late.as_bytes());
        assert_eq!(d.encoding, "UTF-8");
        assert!(d.text.ends_with('é'));
        // A meta with another http-equiv declares nothing either.
        let d = decode_body(
            None,
            b"<meta http-equiv=\"refresh\" content=\"5; charset=gbk\">",
        );
        assert_eq!(d.declared_by, DeclaredBy::Default);
    }

    #[test]
    fn an_xml_declaration_is_found_and_rewritten_to_utf_8() {
        let feed = with_date(
            "<?xml version=\"1.0\" encoding=\"gb2312\"?>\n<rss version=\"2.0\"><channel><item><title>",
            "</title></item></channel></rss>",
        );
        let d = decode_body(Some("application/rss+xml"), &feed);
        assert_eq!(
            (d.encoding, d.declared_by),
            ("GBK", DeclaredBy::XmlDeclaration)
        );
        assert!(
            d.text
                .starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss"),
            "{}",
            d.text
        );
        assert!(d.text.contains("<title>2026年11月27日</title>"));

        // Single quotes, blanks around `=`, a leading BOM-less newline.
        let d = decode_body(
            Some("text/xml"),
            &with_date(
                "\n<?xml version='1.0' encoding = 'GBK' standalone='yes'?><a>",
                "</a>",
            ),
        );
        assert_eq!(d.encoding, "GBK");
        assert!(d.text.contains("encoding = 'UTF-8'"), "{}", d.text);
        assert!(d.text.contains("<a>2026年11月27日</a>"));
    }

    #[test]
    fn the_header_wins_over_the_xml_declaration_whose_encoding_is_still_rewritten() {
        let feed = "<?xml version=\"1.0\" encoding=\"gb2312\"?><a>2026年11月27日</a>";
        let d = decode_body(Some("text/xml; charset=utf-8"), feed.as_bytes());
        assert_eq!((d.encoding, d.declared_by), ("UTF-8", DeclaredBy::Header));
        assert_eq!(
            d.text,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a>2026年11月27日</a>"
        );
    }

    #[test]
    fn an_unknown_label_is_a_warning_and_utf_8() {
        let d = decode_body(
            Some("text/html; charset=x-klingon"),
            "<p>2026年11月27日</p>".as_bytes(),
        );
        assert_eq!((d.encoding, d.declared_by), ("UTF-8", DeclaredBy::Default));
        assert_eq!(d.text, "<p>2026年11月27日</p>");
        assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
        assert!(d.warnings[0].contains("x-klingon"), "{:?}", d.warnings);

        let d = decode_body(None, "<meta charset=\"foo\">é".as_bytes());
        assert_eq!(d.encoding, "UTF-8");
        assert!(d.warnings[0].contains("\"foo\""), "{:?}", d.warnings);

        // An unknown header label leaves the document's own declaration in charge.
        let d = decode_body(
            Some("text/html; charset=bogus"),
            &with_date("<meta charset=gbk>", ""),
        );
        assert_eq!((d.encoding, d.declared_by), ("GBK", DeclaredBy::Meta));
        assert_eq!(d.warnings.len(), 1);
        // The WHATWG "replacement" labels would turn a page into U+FFFD: unknown here.
        let d = decode_body(Some("text/html; charset=iso-2022-kr"), b"ok");
        assert_eq!((d.text.as_str(), d.encoding), ("ok", "UTF-8"));
        assert_eq!(d.warnings.len(), 1);
    }

    #[test]
    fn a_byte_order_mark_wins() {
        let mut body = b"\xef\xbb\xbf".to_vec();
        body.extend_from_slice("<p>2026年11月27日</p>".as_bytes());
        let d = decode_body(Some("text/html; charset=gbk"), &body);
        assert_eq!(
            (d.encoding, d.declared_by),
            ("UTF-8", DeclaredBy::ByteOrderMark)
        );
        assert_eq!(d.text, "<p>2026年11月27日</p>");

        let utf16: Vec<u8> = [0xfeff_u16]
            .into_iter()
            .chain("年".encode_utf16())
            .flat_map(u16::to_le_bytes)
            .collect();
        let d = decode_body(None, &utf16);
        assert_eq!((d.text.as_str(), d.encoding), ("年", "UTF-16LE"));
    }

    #[test]
    fn undeclared_bytes_fall_back_to_gbk_or_replacement_with_a_warning() {
        let d = decode_body(Some("text/html"), &with_date("<p>", "</p>"));
        assert_eq!((d.encoding, d.declared_by), ("GBK", DeclaredBy::Default));
        assert_eq!(d.text, "<p>2026年11月27日</p>");
        assert_eq!(d.warnings.len(), 1);
        // 0xff is neither UTF-8 nor GBK.
        let d = decode_body(None, b"a\xffb");
        assert_eq!((d.text.as_str(), d.encoding), ("a\u{fffd}b", "UTF-8"));
        assert!(d.warnings[0].contains("U+FFFD"));
        // Declared, but broken: replaced, and said so.
        let d = decode_body(Some("text/plain; charset=utf-8"), b"a\xffb");
        assert_eq!(d.text, "a\u{fffd}b");
        assert!(
            d.warnings[0].contains("Content-Type header"),
            "{:?}",
            d.warnings
        );
    }

    #[test]
    fn json_is_not_searched_for_markup() {
        // A CMS API whose article HTML mentions a charset stays UTF-8.
        let body = r#"{"html": "<meta charset=gbk>", "t": "年"}"#;
        let d = decode_body(Some("application/json"), body.as_bytes());
        assert_eq!((d.text.as_str(), d.encoding), (body, "UTF-8"));
    }

    #[test]
    fn header_parameters() {
        assert_eq!(header_charset("text/html;charset=gbk"), Some("gbk"));
        assert_eq!(
            header_charset("text/html; boundary=x; CHARSET = 'utf-8' "),
            Some("utf-8")
        );
        assert_eq!(header_charset("text/html; charset="), None);
        assert_eq!(header_charset("charset=gbk"), None);
    }
}
