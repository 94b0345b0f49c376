//! Whether a scrape accepts the gzip copy of `/metrics`: the request's
//! `Accept-Encoding`, read as RFC 9110 section 12.5.3 says.

use axum::http::{HeaderMap, header};

/// True when `Accept-Encoding` accepts `gzip`: named (or as `x-gzip`,
/// RFC 9110 section 8.4.1.3) with a weight above 0, or covered by `*` with a weight
/// above 0 and not named. Names are case-insensitive; `q=0` (or `0.0`,
/// `0.000`) refuses. No header, or an empty one, means identity: a scraper
/// that cannot decompress gets plain text.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        // A header that is not visible ASCII is ignored rather than guessed at.
        let Ok(value) = value.to_str() else {
            continue;
        };
        for member in value.split(',') {
            let mut parts = member.split(';');
            let coding = parts.next().unwrap_or("").trim();
            if coding.is_empty() {
                continue;
            }
            let weight = parts
                .filter_map(|p| p.split_once('='))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1000), |(_, q)| qvalue(q.trim()));
            // A malformed weight makes the member meaningless: skipped.
            let Some(weight) = weight else {
                continue;
            };
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                gzip = Some(gzip.map_or(weight, |w: u16| w.max(weight)));
            } else if coding == "*" {
                any = Some(weight);
            }
        }
    }
    gzip.or(any).is_some_and(|w| w > 0)
}

/// A `qvalue` in thousandths: `0`, `0.5`, `1`, `1.000`; `None` for
/// anything else (RFC 9110 section 12.4.2: at most three decimals, at most 1).
fn qvalue(text: &str) -> Option<u16> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = match int {
        "0" => format!("{frac:0<3}").parse::<u16>().ok()?,
        "1" if frac.bytes().all(|b| b == b'0') => 1000,
        _ => return None,
    };
    Some(thousandths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accepts(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        accepts_gzip(&headers)
    }

    #[test]
    fn prometheus_and_curl_ask_for_gzip() {
        // What Prometheus sends, and `curl --compressed`.
        assert!(accepts(&["gzip"]));
        assert!(accepts(&["deflate, gzip, br, zstd"]));
        assert!(accepts(&["GZip;Q=0.5"]));
        assert!(accepts(&["x-gzip"]));
    }

    #[test]
    fn no_header_or_identity_means_plain_text() {
        assert!(!accepts(&[]));
        assert!(!accepts(&[""]));
        assert!(!accepts(&["identity"]));
        assert!(!accepts(&["br, zstd"]));
    }

    #[test]
    fn a_weight_of_zero_refuses() {
        assert!(!accepts(&["gzip;q=0"]));
        assert!(!accepts(&["gzip; q=0.000"]));
        assert!(!accepts(&["*;q=0"]));
        // Named with 0, the wildcard does not bring it back.
        assert!(!accepts(&["gzip;q=0, *"]));
        assert!(accepts(&["gzip;q=0.001"]));
    }

    #[test]
    fn the_wildcard_covers_what_is_not_named() {
        assert!(accepts(&["*"]));
        assert!(accepts(&["br;q=1, *;q=0.1"]));
        // Named with a weight above 0, the wildcard's 0 does not take it away.
        assert!(accepts(&["gzip;q=0.5, *;q=0"]));
    }

    #[test]
    fn headers_and_members_combine() {
        assert!(accepts(&["br", "gzip"]));
        assert!(accepts(&[" , gzip ,"]));
    }

    #[test]
    fn malformed_weights_are_skipped() {
        assert!(!accepts(&["gzip;q=2"]));
        assert!(!accepts(&["gzip;q=0.1234"]));
        assert!(!accepts(&["gzip;q=abc"]));
        assert!(!accepts(&["gzip;q=1.5"]));
        assert_eq!(qvalue("0.5"), Some(500));
        assert_eq!(qvalue("1.000"), Some(1000));
        assert_eq!(qvalue("0"), Some(0));
        assert_eq!(qvalue(".5"), None);
    }
}
