//! Logging in to the pages, and who may change something from them.
//!
//! Reading needs nothing (the read API needs nothing either). Changing
//! something (run a source, collect a period again, upload a form) needs a
//! session: `POST /login` with `daemon.api_token` sets the cookie
//! [`COOKIE`], an opaque random 256-bit id. Sessions live in this process's
//! memory only: a restart of the daemon logs everyone out. A session ends
//! [`LIFETIME`] after the login however busy it was (an absolute limit: a
//! forgotten browser on a shared office computer does not stay logged in),
//! at `POST /logout`, or when the table is full and it is the oldest
//! ([`MAX_SESSIONS`]).
//!
//! Cross-site requests: the cookie is `SameSite=Strict`, and on top of it
//! every unsafe request must come from a page of this very origin (its
//! `Origin`, else its `Referer`, names the `Host` it was sent to; a request
//! with neither is refused), and every form that changes something carries
//! the session's own random token (`csrf`), checked by
//! [`Writer::check_csrf`]. A handler takes a [`Writer`] to be reached only
//! by someone logged in, and a [`Viewer`] to show buttons only to them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use askama::Template;
use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Router};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use tally_config::Secret;

use super::{ErrorPage, PagesState};
use crate::http::constant_time_eq;

/// The session cookie's name.
pub const COOKIE: &str = "tally_session";

/// How long a session lasts after its login, whatever happens in between.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// At most this many sessions at once; a login beyond drops the oldest.
/// Logins need the token, so only someone who has it can fill the table.
pub const MAX_SESSIONS: usize = 1024;

/// Why random bytes could not be had (the operating system refused them).
#[derive(Debug, thiserror::Error)]
#[error("no random bytes from the operating system: {0}")]
pub struct RandomError(String);

/// 256 random bits from the operating system, URL-safe base64.
fn random_token() -> Result<String, RandomError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| RandomError(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

struct Session {
    csrf: String,
    created: DateTime<Utc>,
    /// The token it logged in with: a session ends when the operator
    /// changes or removes `daemon.api_token` (and reloads).
    token: Secret,
}

/// The table of open sessions, shared by every router the daemon builds.
#[derive(Default)]
pub struct Sessions {
    table: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new() -> Sessions {
        Sessions::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens a session for someone who gave `token`; its id and csrf token.
    fn open(&self, token: &Secret, now: DateTime<Utc>) -> Result<(String, String), RandomError> {
        let id = random_token()?;
        let csrf = random_token()?;
        let mut table = self.lock();
        table.retain(|_, s| !expired(s, now));
        while table.len() >= MAX_SESSIONS {
            let Some(oldest) = table
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            table.remove(&oldest);
        }
        table.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                created: now,
                token: token.clone(),
            },
        );
        Ok((id, csrf))
    }

    /// The csrf token of a live session opened with `token`; forgets the
    /// session if it expired or its token is no longer the configured one.
    fn csrf(&self, id: &str, token: &Secret, now: DateTime<Utc>) -> Option<String> {
        let mut table = self.lock();
        let session = table.get(id)?;
        if expired(session, now)
            || !constant_time_eq(session.token.expose().as_bytes(), token.expose().as_bytes())
        {
            table.remove(id);
            return None;
        }
        Some(session.csrf.clone())
    }

    fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    /// How many sessions are open (expired ones included until next login).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn expired(session: &Session, now: DateTime<Utc>) -> bool {
    (now - session.created)
        .to_std()
        .is_ok_and(|age| age >= LIFETIME)
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// Whether the request's `Origin` (else `Referer`) is this very origin: its
/// host and port are the `Host` the request was sent to.
fn same_origin(headers: &HeaderMap) -> Result<(), Refusal> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Refusal::CrossSite("请求没有 Host。".to_owned()))?;
    let (origin, what) = match headers.get(header::ORIGIN) {
        Some(v) => (v, "Origin"),
        None => match headers.get(header::REFERER) {
            Some(v) => (v, "Referer"),
            None => {
                return Err(Refusal::CrossSite(
                    "请求既没有 Origin 也没有 Referer，无法确认它来自本站页面。".to_owned(),
                ));
            }
        },
    };
    let origin = origin.to_str().unwrap_or("");
    let uri: axum::http::Uri = origin
        .parse()
        .map_err(|_| Refusal::CrossSite(format!("{what} 无法识别。")))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(Refusal::CrossSite(format!(
            "{what} 不是本站地址（“{origin}”）。"
        )));
    };
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => {
            return Err(Refusal::CrossSite(format!(
                "{what} 不是本站地址（“{origin}”）。"
            )));
        }
    };
    let host: axum::http::uri::Authority = host
        .parse()
        .map_err(|_| Refusal::CrossSite("请求的 Host 无法识别。".to_owned()))?;
    let same = authority.host().eq_ignore_ascii_case(host.host())
        && authority.port_u16().unwrap_or(default_port) == host.port_u16().unwrap_or(default_port);
    if same {
        Ok(())
    } else {
        Err(Refusal::CrossSite(format!(
            "请求来自其他网站（{what}：“{}”），不是本站页面。",
            authority
        )))
    }
}

/// The path and query a refused `GET` asked for, to come back to after
/// logging in.
fn path_and_query(parts: &Parts) -> String {
    parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned())
}

/// `next` if it is a path of this site, else `/`: a login must not send
/// the browser to another site (`//evil.example` is one).
pub fn local_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && !n.chars().any(|c| c.is_control() || c == '\\') =>
        {
            n
        }
        _ => "/",
    }
}

/// Why a request that would change something is refused. A page says why
/// in Chinese; a `GET` without a session goes to the login page instead.
#[derive(Debug)]
pub enum Refusal {
    /// No session (or an expired one) on a `GET`: log in, then come back.
    Login { next: String },
    /// No session (or an expired one) on a form post.
    NoSession,
    /// `daemon.api_token` is not set: nobody can log in.
    Disabled,
    /// The request does not come from a page of this site.
    CrossSite(String),
    /// The form's `csrf` is not the session's.
    Csrf,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let message = match self {
            Refusal::Login { next } => {
                return Redirect::to(&format!("/login?next={}", super::encode(&next)))
                    .into_response();
            }
            Refusal::NoSession => {
                "没有登录，或登录已过期（登录 8 小时后失效，tallyd 重启后也需重新登录）。请先登录再操作。".to_owned()
            }
            Refusal::Disabled => DISABLED.to_owned(),
            Refusal::CrossSite(why) => format!("已拒绝：{why}请从本站页面重新操作。"),
            Refusal::Csrf => {
                "已拒绝：表单校验码不符（页面可能已过期，或请求来自其他网站）。请刷新页面后重新操作。"
                    .to_owned()
            }
        };
        let page = ErrorPage {
            title: "操作被拒绝",
            message: &message,
            nav: "",
            viewer: Viewer::default(),
        };
        match page.render() {
            Ok(html) => (StatusCode::FORBIDDEN, Html(html)).into_response(),
            Err(_) => (StatusCode::FORBIDDEN, message).into_response(),
        }
    }
}

const DISABLED: &str = "从页面操作（立即采集、重新采集、上传报表）未启用：配置文件没有设置 \
     daemon.api_token。请运维在配置的 [daemon] 中设置 api_token（例如 api_token = \
     \"${env:TALLY_API_TOKEN}\"）并重新加载配置，然后用该令牌登录。";

/// Someone logged in, on a request that may change something: a valid
/// session cookie and, for an unsafe method, a request from a page of this
/// site. Take it as a handler argument; a form handler then checks the
/// form's `csrf` with [`Writer::check_csrf`].
///
/// ```
/// use std::collections::HashMap;
/// use axum::Form;
/// use axum::response::Redirect;
/// use tally_daemon::pages::session::{Refusal, Writer};
///
/// async fn run(
///     writer: Writer,
///     Form(form): Form<HashMap<String, String>>,
/// ) -> Result<Redirect, Refusal> {
///     writer.check_csrf(form.get("csrf").map_or("", String::as_str))?;
///     Ok(Redirect::to("/sources?done=run"))
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Writer {
    /// The session's token, for the hidden `csrf` field of every form.
    pub csrf: String,
}

impl Writer {
    /// Whether `given` (the form's `csrf` field) is this session's token.
    pub fn check_csrf(&self, given: &str) -> Result<(), Refusal> {
        if constant_time_eq(given.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(Refusal::Csrf)
        }
    }
}

/// The session's csrf token, if the request carries a live session.
fn session_csrf(parts: &Parts, pages: &PagesState) -> Result<Option<String>, Refusal> {
    let engine = (pages.engine)();
    let Some(token) = engine.config.daemon.api_token.as_ref() else {
        return Err(Refusal::Disabled);
    };
    Ok(cookie(&parts.headers, COOKIE)
        .and_then(|id| pages.sessions.csrf(id, token, engine.clock.now())))
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

impl<S> FromRequestParts<S> for Writer
where
    PagesState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Writer, Refusal> {
        let pages = PagesState::from_ref(state);
        let safe = is_safe(&parts.method);
        match session_csrf(parts, &pages)? {
            None if safe => Err(Refusal::Login {
                next: path_and_query(parts),
            }),
            None => Err(Refusal::NoSession),
            Some(csrf) => {
                if !safe {
                    same_origin(&parts.headers)?;
                }
                Ok(Writer { csrf })
            }
        }
    }
}

/// Who is looking at a page: `csrf` is the session's token for someone
/// logged in, so that a template shows buttons (and their forms' hidden
/// `csrf` field) only to them. Never refuses.
///
/// ```text
/// {% if let Some(csrf) = viewer.csrf %}<input type="hidden" name="csrf" value="{{ csrf }}">{% endif %}
/// ```
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    pub csrf: Option<String>,
}

impl<S> FromRequestParts<S> for Viewer
where
    PagesState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Viewer, Self::Rejection> {
        let pages = PagesState::from_ref(state);
        Ok(Viewer {
            csrf: session_csrf(parts, &pages).ok().flatten(),
        })
    }
}

// ---------------------------------------------------------------- routes

/// `GET /login`, `POST /login`, `POST /logout`.
pub fn routes() -> Router<PagesState> {
    Router::new()
        .route("/login", axum::routing::get(login_form).post(login))
        .route("/logout", axum::routing::post(logout))
}

#[derive(Template)]
#[template(path = "pages/login.html")]
struct LoginPage {
    title: &'static str,
    nav: &'static str,
    viewer: Viewer,
    /// Where to go after logging in (a local path).
    next: String,
    /// Why the page is shown again (a wrong token), or empty.
    error: &'static str,
    /// `daemon.api_token` is not set: the page says how to enable writing.
    disabled: &'static str,
}

fn login_page(viewer: Viewer, next: &str, error: &'static str, disabled: bool) -> LoginPage {
    LoginPage {
        title: "登录",
        nav: "login",
        viewer,
        next: next.to_owned(),
        error,
        disabled: if disabled { DISABLED } else { "" },
    }
}

fn render(status: StatusCode, page: LoginPage) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => super::internal(e).into_response(),
    }
}

async fn login_form(
    State(pages): State<PagesState>,
    viewer: Viewer,
    axum::extract::Query(params): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    let disabled = (pages.engine)().config.daemon.api_token.is_none();
    let next = local_next(params.get("next").map(String::as_str));
    render(StatusCode::OK, login_page(viewer, next, "", disabled))
}

async fn login(
    State(pages): State<PagesState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let engine = (pages.engine)();
    let next = local_next(form.get("next").map(String::as_str)).to_owned();
    let Some(token) = engine.config.daemon.api_token.as_ref() else {
        return render(
            StatusCode::FORBIDDEN,
            login_page(Viewer::default(), &next, "", true),
        );
    };
    // Login CSRF: a foreign page must not log the browser in either.
    if let Err(refusal) = same_origin(&headers) {
        return refusal.into_response();
    }
    let given = form.get("token").map(|t| t.trim()).unwrap_or("");
    if !constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
        tracing::warn!("page login refused: wrong api token");
        return render(
            StatusCode::UNAUTHORIZED,
            login_page(Viewer::default(), &next, "令牌不正确。", false),
        );
    }
    let (id, _csrf) = match pages.sessions.open(token, engine.clock.now()) {
        Ok(opened) => opened,
        Err(e) => return super::internal(e).into_response(),
    };
    tracing::info!("page login");
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        LIFETIME.as_secs()
    );
    let mut response = Redirect::to(&next).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(
    State(pages): State<PagesState>,
    writer: Result<Writer, Refusal>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    match writer {
        Ok(writer) => {
            if let Err(refusal) = writer.check_csrf(form.get("csrf").map_or("", String::as_str)) {
                return refusal.into_response();
            }
            if let Some(id) = cookie(&headers, COOKIE) {
                pages.sessions.close(id);
            }
        }
        // Nobody to log out; a cross-site post is refused all the same.
        Err(Refusal::NoSession | Refusal::Disabled) => {}
        Err(refusal) => return refusal.into_response(),
    }
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("tally_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(local_next(Some("/sources?x=1")), "/sources?x=1");
        for foreign in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil.example",
            "sources",
            "",
        ] {
            assert_eq!(local_next(Some(foreign)), "/", "{foreign}");
        }
        assert_eq!(local_next(None), "/");
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[
            (header::COOKIE, "a=1; tally_session=abc"),
            (header::COOKIE, "b=2"),
        ]);
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(
            cookie(&headers(&[(header::COOKIE, "x_tally_session=1")]), COOKIE),
            None
        );
    }

    #[test]
    fn an_origin_must_name_the_host_the_request_went_to() {
        let ok = |pairs: &[(header::HeaderName, &str)]| same_origin(&headers(pairs)).is_ok();
        assert!(ok(&[
            (header::HOST, "127.0.0.1:9470"),
            (header::ORIGIN, "http://127.0.0.1:9470")
        ]));
        assert!(ok(&[
            (header::HOST, "Tally.Example.gov.cn"),
            (header::ORIGIN, "https://tally.example.gov.cn")
        ]));
        assert!(ok(&[
            (header::HOST, "127.0.0.1:9470"),
            (header::REFERER, "http://127.0.0.1:9470/sources")
        ]));
        assert!(!ok(&[
            (header::HOST, "127.0.0.1:9470"),
            (header::ORIGIN, "http://127.0.0.1:9471")
        ]));
        assert!(!ok(&[
            (header::HOST, "127.0.0.1:9470"),
            (header::ORIGIN, "http://evil.example:9470")
        ]));
        assert!(!ok(&[
            (header::HOST, "127.0.0.1:9470"),
            (header::ORIGIN, "null")
        ]));
        // Origin wins over a Referer that would pass.
        assert!(!ok(&[
            (header::HOST, "127.0.0.1:9470"),
            (header::ORIGIN, "http://evil.example"),
            (header::REFERER, "http://127.0.0.1:9470/")
        ]));
        assert!(!ok(&[(header::HOST, "127.0.0.1:9470")]));
    }

    #[test]
    fn sessions_expire_and_the_oldest_goes_when_full() {
        let token = Secret::new("a-token-long-enough");
        let other = Secret::new("another-token-long-enough");
        let sessions = Sessions::new();
        let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let (id, csrf) = sessions.open(&token, t0).unwrap();
        assert_eq!(id.len(), 43, "256 bits in base64");
        assert_ne!(id, csrf);
        let later = |secs: i64| t0 + chrono::Duration::seconds(secs);
        assert_eq!(sessions.csrf(&id, &token, later(3600)), Some(csrf));
        assert_eq!(
            sessions.csrf(&id, &other, later(3600)),
            None,
            "token changed"
        );
        let (id, _) = sessions.open(&token, t0).unwrap();
        assert!(sessions.csrf(&id, &token, later(8 * 3600 - 1)).is_some());
        assert!(sessions.csrf(&id, &token, later(8 * 3600)).is_none());

        let first = sessions.open(&token, later(1)).unwrap().0;
        for i in 0..MAX_SESSIONS {
            sessions.open(&token, later(2 + i as i64)).unwrap();
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(sessions.csrf(&first, &token, later(10_000)).is_none());
    }
}
