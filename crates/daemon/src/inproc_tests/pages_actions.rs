//! Logging in to the pages and changing something from them, through the
//! router: the session cookie, its expiry, and every refusal of a request
//! that would change something without a session, from another site or
//! without the form's csrf token.

use axum::http::{HeaderMap, header};

use super::plugin::{Answer, Script};
use super::*;

/// The `Host` (the daemon's listen address) and the `Origin` of its pages.
pub(super) const HOST: &str = "127.0.0.1:9";
pub(super) const ORIGIN: &str = "http://127.0.0.1:9";

pub(super) async fn respond(
    d: &InProcessDaemon,
    request: Request<Body>,
) -> (StatusCode, HeaderMap, String) {
    let response = d.router().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut request = Request::get(uri).header(header::HOST, HOST);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request.body(Body::empty()).unwrap()
}

/// A form post as a browser sends it from a page: `Origin` of the page.
fn post(uri: &str, form: &str, cookie: Option<&str>, origin: Option<&str>) -> Request<Body> {
    let mut request = Request::post(uri)
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    request.body(Body::from(form.to_owned())).unwrap()
}

/// Logs in with the right token; the `Cookie` header value to send after.
pub(super) async fn login(d: &InProcessDaemon) -> String {
    let (status, headers, body) = respond(
        d,
        post(
            "/login",
            &format!("token={TOKEN}&next=%2F"),
            None,
            Some(ORIGIN),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let set = headers[header::SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

/// The value of the first hidden `csrf` field of a page.
pub(super) fn csrf_of(body: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let start = body
        .find(marker)
        .unwrap_or_else(|| panic!("no csrf field: {body}"))
        + marker.len();
    body[start..start + body[start..].find('"').unwrap()].to_owned()
}

#[tokio::test(start_paused = true)]
async fn a_login_with_the_token_sets_a_strict_http_only_session_cookie() {
    let _script = Script::new("actions-login", &[], Answer::Value(1.0));
    let setup = Setup::new(&source("steady", "0 3 * * *", "", "actions-login"));
    let d = setup.start().await;

    let (status, headers, body) = respond(&d, get("/login?next=%2Fsources", None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(
        body.contains(r#"<input type="password" id="token" name="token""#),
        "{body}"
    );
    assert!(body.contains(r#"name="next" value="/sources""#), "{body}");
    assert!(
        body.contains(r#"<a href="/login" class="account""#),
        "{body}"
    );

    // A wrong token: the form again, no cookie.
    let (status, headers, body) = respond(
        &d,
        post(
            "/login",
            "token=wrong-token&next=%2Fsources",
            None,
            Some(ORIGIN),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("令牌不正确"), "{body}");
    assert!(headers.get(header::SET_COOKIE).is_none());

    // The right one: 303 to `next`, and a cookie of 256 random bits that
    // script cannot read and other sites cannot send.
    let (status, headers, body) = respond(
        &d,
        post(
            "/login",
            &format!("token={TOKEN}&next=%2Fsources"),
            None,
            Some(ORIGIN),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(headers[header::LOCATION], "/sources");
    let set = headers[header::SET_COOKIE].to_str().unwrap();
    let (pair, flags) = set.split_once("; ").unwrap();
    let id = pair.strip_prefix("tally_session=").unwrap();
    assert_eq!(id.len(), 43, "{set}");
    assert!(!set.contains(TOKEN));
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(flags.split("; ").any(|f| f == flag), "{flag}: {set}");
    }

    // Logged in, the pages show 退出 with the session's csrf token.
    let cookie = pair.to_owned();
    let (status, _, body) = respond(&d, get("/", Some(&cookie))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(">退出</button>"), "{body}");
    assert!(!body.contains(">登录</a>"), "{body}");
    let csrf = csrf_of(&body);
    assert_eq!(csrf.len(), 43);
    assert_ne!(csrf, id);

    // A foreign `next` goes home instead; so does a second login.
    let (status, headers, _) = respond(
        &d,
        post(
            "/login",
            &format!("token={TOKEN}&next=%2F%2Fevil.example%2F"),
            None,
            Some(ORIGIN),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/");

    // A login posted by another site's page is refused.
    let (status, headers, body) = respond(
        &d,
        post(
            "/login",
            &format!("token={TOKEN}"),
            None,
            Some("http://evil.example"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(headers.get(header::SET_COOKIE).is_none());

    // Logging out ends the session: the cookie no longer shows 退出.
    let (status, headers, body) = respond(
        &d,
        post(
            "/logout",
            &format!("csrf={csrf}"),
            Some(&cookie),
            Some(ORIGIN),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert!(
        headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (_, _, body) = respond(&d, get("/", Some(&cookie))).await;
    assert!(body.contains(">登录</a>"), "{body}");
}

#[tokio::test(start_paused = true)]
async fn a_session_ends_eight_hours_after_its_login() {
    let _script = Script::new("actions-expiry", &[], Answer::Value(1.0));
    let setup = Setup::new(&source("steady", "0 3 * * *", "", "actions-expiry"));
    let time = Timeline::new();
    let d = setup.start().await;
    let cookie = login(&d).await;

    time.at(8.0 * 3600.0 - 1.0).await;
    let (_, _, body) = respond(&d, get("/sources", Some(&cookie))).await;
    assert!(body.contains(">退出</button>"), "still logged in: {body}");

    // However busy it was: the limit is absolute.
    time.at(8.0 * 3600.0).await;
    let (_, _, body) = respond(&d, get("/sources", Some(&cookie))).await;
    assert!(body.contains(">登录</a>"), "logged out: {body}");
}

#[tokio::test(start_paused = true)]
async fn without_an_api_token_the_login_page_says_how_to_enable_writing() {
    let _script = Script::new("actions-disabled", &[], Answer::Value(1.0));
    let setup = Setup::new("");
    setup.write_text(&config_text(
        setup.dir.path(),
        None,
        &source("steady", "0 3 * * *", "", "actions-disabled"),
    ));
    let d = setup.start().await;
    let (status, _, body) = respond(&d, get("/login", None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("未启用"), "{body}");
    assert!(body.contains("api_token"), "{body}");
    assert!(!body.contains(r#"type="password""#), "{body}");
    let (status, headers, body) = respond(
        &d,
        post("/login", "token=anything-at-all", None, Some(ORIGIN)),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(headers.get(header::SET_COOKIE).is_none());
}
