//! Two guards at the edge of the HTTP API.
//!
//! - [`served_host`]: a request whose `Host` is not one the daemon serves is
//!   refused (421, JSON). A web page the operator opens elsewhere can point a
//!   name it controls at the daemon's address (DNS rebinding) and read the
//!   API and the pages from the operator's browser; the browser still sends
//!   the page's name as `Host`, which is how it is told apart. Served: the
//!   names of `daemon.hosts`; on a loopback listen, loopback names and
//!   addresses too; beyond loopback, any IP address (rebinding cannot make a
//!   browser send one), and any name at all when `daemon.hosts` is empty.
//! - [`JsonParseErrors`]: hyper answers a request it cannot parse (a request
//!   line or URI too long: 414; a head too large or with too many headers:
//!   431; a malformed one: 400) by itself, before any handler runs, with an
//!   empty body. The listener wrapper gives those answers the JSON
//!   `{"error": "..."}` body every other error has.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Json;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Whether `host` (a `Host` header's value: a name or address, maybe with a
/// port) names this machine's loopback: `localhost`, a name under
/// `.localhost` (which resolvers must answer with loopback, RFC 6761),
/// 127.0.0.0/8 or `[::1]`.
pub fn is_loopback_host(host: &str) -> bool {
    let Ok(authority) = host.parse::<axum::http::uri::Authority>() else {
        return false;
    };
    let name = authority.host();
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Whether `host` (a `Host` header's value) matches an entry of
/// `daemon.hosts`: the same name, and the same port if the entry has one.
fn listed(authority: &axum::http::uri::Authority, hosts: &[String]) -> bool {
    let name = authority.host().trim_end_matches('.').to_ascii_lowercase();
    hosts.iter().any(|entry| {
        let Ok(entry) = entry.parse::<axum::http::uri::Authority>() else {
            return false;
        };
        entry.host().eq_ignore_ascii_case(&name)
            && entry
                .port_u16()
                .is_none_or(|port| authority.port_u16() == Some(port))
    })
}

/// Whether a request for `host` is served by a daemon listening on loopback
/// (`loopback_listen`) or beyond it, with `daemon.hosts` = `hosts`.
pub fn serves(loopback_listen: bool, hosts: &[String], host: &str) -> bool {
    let Ok(authority) = host.parse::<axum::http::uri::Authority>() else {
        return false;
    };
    if listed(&authority, hosts) {
        return true;
    }
    if loopback_listen {
        return is_loopback_host(host);
    }
    let bare = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    hosts.is_empty() || bare.parse::<IpAddr>().is_ok()
}

/// The middleware of [`serves`], with the listen address and `daemon.hosts`
/// of the configuration of the moment. A request without `Host` (HTTP/1.0
/// from a script) is served: browsers always send one.
pub async fn served_host(
    loopback_listen: bool,
    hosts: Vec<String>,
    req: Request,
    next: Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned())
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
    if let Some(host) = host
        && !serves(loopback_listen, &hosts, &host)
    {
        let listed = hosts.join(", ");
        let message = if loopback_listen {
            format!(
                "this daemon listens on loopback and answers only requests for localhost, \
                 127.0.0.1 or [::1]{}{listed} (the Host header names another machine: a DNS \
                 rebinding attempt, a name missing from daemon.hosts, or a proxy that should \
                 set Host)",
                if listed.is_empty() { "" } else { ", " }
            )
        } else {
            format!(
                "this daemon answers only requests for {listed} or an IP address (the Host \
                 header names another machine: a DNS rebinding attempt, a name missing from \
                 daemon.hosts, or a proxy that should set Host)"
            )
        };
        return (
            StatusCode::MISDIRECTED_REQUEST,
            Json(json!({ "error": message })),
        )
            .into_response();
    }
    next.run(req).await
}

/// A listener whose connections carry [`JsonParseErrorsIo`].
pub struct JsonParseErrors<L>(pub L);

impl<L: axum::serve::Listener> axum::serve::Listener for JsonParseErrors<L> {
    type Io = JsonParseErrorsIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.0.accept().await;
        (
            JsonParseErrorsIo {
                inner: io,
                pending: None,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection that rewrites hyper's own bodiless error answers (400, 414,
/// 431) into JSON ones. Hyper writes such an answer as one buffer (this type
/// does not offer vectored writes) and closes the connection after it, so
/// the rewrite only has to recognise a write that is a whole head with
/// `content-length: 0` and one of those statuses; the handlers' own errors
/// always carry a JSON body and are never touched.
pub struct JsonParseErrorsIo<S> {
    inner: S,
    /// The rewritten answer being written: its bytes, how many are written,
    /// and the length of hyper's buffer to report once they all are.
    pending: Option<(Vec<u8>, usize, usize)>,
}

fn rewrite(buf: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(buf).ok()?;
    let head = text.strip_suffix("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let message = match parts.next()? {
        "400" => "malformed request: the request line or a header cannot be parsed",
        "414" => "request URI too long",
        "431" => "request head too large: too many headers, or too long ones",
        _ => return None,
    };
    let rest: Vec<&str> = lines.collect();
    if !rest
        .iter()
        .any(|l| l.eq_ignore_ascii_case("content-length: 0"))
    {
        return None;
    }
    let body = json!({ "error": message }).to_string();
    let mut out = String::with_capacity(head.len() + body.len() + 64);
    out.push_str(status_line);
    out.push_str("\r\n");
    for line in rest {
        if line.eq_ignore_ascii_case("content-length: 0") {
            out.push_str("content-type: application/json\r\n");
            out.push_str(&format!("content-length: {}\r\n", body.len()));
        } else {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonParseErrorsIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonParseErrorsIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none() {
            match rewrite(buf) {
                Some(answer) => this.pending = Some((answer, 0, buf.len())),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        while let Some((answer, written, reported)) = &mut this.pending {
            if *written == answer.len() {
                let reported = *reported;
                this.pending = None;
                return Poll::Ready(Ok(reported));
            }
            match Pin::new(&mut this.inner).poll_write(cx, &answer[*written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(0))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_names_and_addresses_of_this_machine() {
        for host in [
            "localhost",
            "localhost:9470",
            "LOCALHOST.",
            "tally.localhost:9470",
            "127.0.0.1",
            "127.0.0.1:9470",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:9470",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9470",
            "localhost.evil.example",
            "10.0.0.1:9470",
            "[::2]:9470",
            "0.0.0.0:9470",
            "",
            "a b",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn a_daemon_serves_its_listed_names_and_loopback_ones_on_loopback() {
        let hosts = [
            "tally.example.gov.cn".to_owned(),
            "reports.example.gov.cn:9470".to_owned(),
        ];
        for (loopback, host, served) in [
            (true, "localhost:9470", true),
            (true, "tally.example.gov.cn", true),
            (true, "TALLY.example.gov.cn.:8080", true),
            (true, "reports.example.gov.cn:9470", true),
            (true, "reports.example.gov.cn:9471", false),
            (true, "reports.example.gov.cn", false),
            (true, "evil.example", false),
            (true, "10.0.0.5:9470", false),
            (false, "tally.example.gov.cn:9470", true),
            (false, "evil.example:9470", false),
            (false, "localhost:9470", false),
            (false, "10.0.0.5:9470", true),
            (false, "[fe80::1]:9470", true),
            (false, "", false),
        ] {
            assert_eq!(serves(loopback, &hosts, host), served, "{loopback} {host}");
        }
        // Beyond loopback without a list: any name (the default).
        assert!(serves(false, &[], "whatever.example"));
        assert!(!serves(true, &[], "whatever.example"));
    }

    #[test]
    fn only_hypers_bodiless_parse_errors_are_rewritten() {
        let head =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(rewrite(head).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("too large"));
        // A handler's JSON error, another status, a partial head: left alone.
        assert!(rewrite(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n").is_none());
        assert!(rewrite(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(rewrite(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n").is_none());
    }
}
