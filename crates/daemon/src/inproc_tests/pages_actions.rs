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

/// A post with the session's cookie, the page's csrf token and `Origin`.
struct LoggedIn {
    cookie: String,
    csrf: String,
}

async fn logged_in(d: &InProcessDaemon) -> LoggedIn {
    let cookie = login(d).await;
    let (status, _, body) = respond(d, get("/sources", Some(&cookie))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    LoggedIn {
        csrf: csrf_of(&body),
        cookie,
    }
}

#[tokio::test(start_paused = true)]
async fn run_now_needs_a_session_this_sites_origin_and_the_csrf_token() {
    let script = Script::new("actions-run", &[], Answer::Value(1.0));
    let setup = Setup::new(&source("steady", "0 3 * * *", "", "actions-run"));
    let time = Timeline::new();
    let d = setup.start().await;
    time.at(5.0).await;
    assert_eq!(script.calls().len(), 1, "the run at start");
    let me = logged_in(&d).await;

    // Not logged in, the page shows no buttons.
    let (_, _, body) = respond(&d, get("/sources", None)).await;
    assert!(!body.contains("/sources/steady/run"), "{body}");
    assert!(!body.contains(r#"name="csrf""#), "{body}");
    let (_, _, body) = respond(&d, get("/sources", Some(&me.cookie))).await;
    assert!(
        body.contains(r#"<form method="post" action="/sources/steady/run">"#),
        "{body}"
    );
    assert!(body.contains(">立即采集</button>"), "{body}");

    let form = format!("csrf={}", me.csrf);
    let referer = |r: &str| {
        let mut request = post("/sources/steady/run", &form, Some(&me.cookie), None);
        request
            .headers_mut()
            .insert(header::REFERER, r.parse().unwrap());
        request
    };
    for (what, request, says) in [
        (
            "no session",
            post("/sources/steady/run", &form, None, Some(ORIGIN)),
            "没有登录",
        ),
        (
            "an expired or unknown session",
            post(
                "/sources/steady/run",
                &form,
                Some("tally_session=forged"),
                Some(ORIGIN),
            ),
            "没有登录",
        ),
        (
            "another site's page",
            post(
                "/sources/steady/run",
                &form,
                Some(&me.cookie),
                Some("http://evil.example"),
            ),
            "其他网站",
        ),
        (
            "another port of this machine",
            post(
                "/sources/steady/run",
                &form,
                Some(&me.cookie),
                Some("http://127.0.0.1:8080"),
            ),
            "其他网站",
        ),
        (
            "neither Origin nor Referer",
            post("/sources/steady/run", &form, Some(&me.cookie), None),
            "既没有 Origin 也没有 Referer",
        ),
        (
            "a foreign Referer",
            referer("http://evil.example/page"),
            "其他网站",
        ),
        (
            "a wrong csrf token",
            post(
                "/sources/steady/run",
                "csrf=guessed",
                Some(&me.cookie),
                Some(ORIGIN),
            ),
            "校验码不符",
        ),
        (
            "no csrf token",
            post("/sources/steady/run", "", Some(&me.cookie), Some(ORIGIN)),
            "校验码不符",
        ),
    ] {
        let (status, headers, body) = respond(&d, request).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/html; charset=utf-8",
            "{what}"
        );
        assert!(body.contains(says), "{what}: {body}");
    }
    time.at(60.0).await;
    assert_eq!(script.calls().len(), 1, "nothing ran");

    // From the page itself (its Referer will do): 303 back, and the run.
    let (status, headers, body) = respond(&d, referer("http://127.0.0.1:9/sources")).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(
        headers[header::LOCATION],
        "/sources?done=run&source=steady#source-steady"
    );
    time.at(65.0).await;
    assert_eq!(script.calls().len(), 2, "run now ran");
    let steady = source_json(&d, "steady").await;
    assert_eq!(steady["last_run"]["trigger"], "manual", "{steady}");
    assert_eq!(steady["last_run"]["result"], "success", "{steady}");

    let (_, _, body) = respond(&d, get("/sources?done=run&source=steady", Some(&me.cookie))).await;
    assert!(
        body.contains(r#"<p class="flash" role="status">已开始采集 steady。"#),
        "{body}"
    );
    // A flash names only a source the daemon runs.
    let (_, _, body) = respond(
        &d,
        get("/sources?done=run&source=%E5%81%87%E6%B6%88%E6%81%AF", None),
    )
    .await;
    assert!(!body.contains("class=\"flash\""), "{body}");

    // An unknown source is a page, not a run.
    let (status, _, body) = respond(
        &d,
        post(
            "/sources/nowhere/run",
            &form,
            Some(&me.cookie),
            Some(ORIGIN),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("没有这个数据来源：“nowhere”"), "{body}");
}

#[tokio::test(start_paused = true)]
async fn a_running_source_shows_as_running_and_is_not_run_twice() {
    let script = Script::new(
        "actions-hold",
        &[Answer::Value(1.0), Answer::Hold],
        Answer::Value(1.0),
    );
    let setup = Setup::new(&source("held", "0 3 * * *", "", "actions-hold"));
    let time = Timeline::new();
    let d = setup.start().await;
    time.at(5.0).await;
    let me = logged_in(&d).await;
    let form = format!("csrf={}", me.csrf);

    let (status, _, body) = respond(
        &d,
        post("/sources/held/run", &form, Some(&me.cookie), Some(ORIGIN)),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let engine = d.engine();
    while !engine.source("held").unwrap().is_running() {
        tokio::task::yield_now().await;
    }
    let (_, _, body) = respond(&d, get("/sources", Some(&me.cookie))).await;
    assert!(
        body.contains(r#"<td class="state running">正在采集</td>"#),
        "{body}"
    );
    assert!(
        body.contains(r#"<meta http-equiv="refresh" content="5">"#),
        "{body}"
    );
    assert!(body.contains(" disabled>立即采集</button>"), "{body}");

    let (status, headers, _) = respond(
        &d,
        post("/sources/held/run", &form, Some(&me.cookie), Some(ORIGIN)),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers[header::LOCATION],
        "/sources?done=busy&source=held#source-held"
    );
    script.release();
    while engine.source("held").unwrap().is_running() {
        tokio::task::yield_now().await;
    }
    assert_eq!(script.calls().len(), 2, "the busy post ran nothing");
    let (_, _, body) = respond(&d, get("/sources", Some(&me.cookie))).await;
    assert!(body.contains(r#"<td class="state ok">正常</td>"#), "{body}");
    assert!(!body.contains("http-equiv=\"refresh\""), "{body}");
}

#[tokio::test(start_paused = true)]
async fn collecting_a_period_again_runs_its_days_in_windows_of_a_month() {
    let script = Script::new("actions-recollect", &[], Answer::Value(1.0));
    let setup = Setup::new(&source("steady", "0 3 * * *", "", "actions-recollect"));
    let time = Timeline::new();
    let d = setup.start().await;
    time.at(5.0).await;
    let me = logged_in(&d).await;
    let recollect = |period: &str| {
        post(
            "/sources/steady/recollect",
            &format!("csrf={}&period={period}", me.csrf),
            Some(&me.cookie),
            Some(ORIGIN),
        )
    };

    for (period, says) in [
        ("2026Q5", "无法识别的统计期间 “2026Q5”"),
        ("", "无法识别的统计期间"),
        ("2027Q1", "尚未开始"),
    ] {
        let (status, _, body) = respond(&d, recollect(period)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{period}: {body}");
        assert!(body.contains(says), "{period}: {body}");
    }
    let (status, _, _) = respond(
        &d,
        post(
            "/sources/steady/recollect",
            "csrf=wrong&period=2026Q3",
            Some(&me.cookie),
            Some(ORIGIN),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    time.at(10.0).await;
    assert_eq!(script.calls().len(), 1, "only the run at start");

    let (status, headers, body) = respond(&d, recollect("2026Q3")).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(
        headers[header::LOCATION],
        "/sources?done=recollect&source=steady&period=2026-Q3#source-steady"
    );
    time.at(60.0).await;
    // July, August, September: one run each, as backfills; the plugin
    // answers 1 on each window's last day.
    assert_eq!(script.calls().len(), 4);
    let steady = source_json(&d, "steady").await;
    assert_eq!(steady["last_run"]["trigger"], "backfill", "{steady}");
    assert_eq!(
        steady["last_run"]["window"],
        serde_json::json!({"from": "2026-09-01", "to": "2026-09-30"})
    );
    let (status, summary) = call(&d, "GET", "/api/v1/summary?period=2026-Q3", None).await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    assert_eq!(
        summary["units"][0]["values"]["x"]["value"], 3.0,
        "{summary}"
    );

    let (_, _, body) = respond(
        &d,
        get(
            "/sources?done=recollect&source=steady&period=2026-Q3",
            Some(&me.cookie),
        ),
    )
    .await;
    assert!(
        body.contains("已开始重新采集 steady 在 2026-Q3（2026-07-01 至 2026-09-30）的数据"),
        "{body}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_host_not_served_is_refused_with_421_also_beyond_loopback() {
    let _script = Script::new("actions-hosts", &[], Answer::Value(1.0));
    let setup = Setup::new("");
    let text = config_text(
        setup.dir.path(),
        Some(TOKEN),
        &source("steady", "0 3 * * *", "", "actions-hosts"),
    )
    .replacen(
        "listen = \"127.0.0.1:9\"\n",
        "listen = \"0.0.0.0:9\"\nhosts = [\"tally.example.gov.cn\"]\n",
        1,
    );
    setup.write_text(&text);
    let d = setup.start().await;
    for (host, served) in [
        ("tally.example.gov.cn:9", true),
        ("TALLY.example.gov.cn", true),
        ("10.0.0.5:9", true),
        ("evil.example:9", false),
        ("localhost:9", false),
    ] {
        for uri in ["/", "/api/v1/units", "/login"] {
            let request = Request::get(uri)
                .header(header::HOST, host)
                .body(Body::empty())
                .unwrap();
            let (status, body) = send(&d, request).await;
            if served {
                assert_eq!(status, StatusCode::OK, "{host} {uri}: {body}");
            } else {
                assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{host} {uri}");
                let error = body["error"].as_str().unwrap();
                assert!(error.contains("tally.example.gov.cn"), "{error}");
                assert!(error.contains("daemon.hosts"), "{error}");
            }
        }
    }

    // On loopback, the listed names join the loopback ones.
    d.stop().await;
    setup.write_text(
        &config_text(
            setup.dir.path(),
            Some(TOKEN),
            &source("steady", "0 3 * * *", "", "actions-hosts"),
        )
        .replacen(
            "listen = \"127.0.0.1:9\"\n",
            "listen = \"127.0.0.1:9\"\nhosts = [\"tally.example.gov.cn:9\"]\n",
            1,
        ),
    );
    let d = setup.start().await;
    for (host, wanted) in [
        ("tally.example.gov.cn:9", StatusCode::OK),
        ("localhost:9", StatusCode::OK),
        ("tally.example.gov.cn:10", StatusCode::MISDIRECTED_REQUEST),
    ] {
        let request = Request::get("/api/v1/units")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&d, request).await.0, wanted, "{host}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_browser_gets_a_404_page_and_the_api_keeps_its_json() {
    let _script = Script::new("actions-404", &[], Answer::Value(1.0));
    let setup = Setup::new(&source("steady", "0 3 * * *", "", "actions-404"));
    let d = setup.start().await;
    let browser = |uri: &str| {
        Request::get(uri)
            .header(header::HOST, HOST)
            .header(
                header::ACCEPT,
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            )
            .body(Body::empty())
            .unwrap()
    };
    let (status, headers, body) = respond(&d, browser("/nowhere")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(
        headers[header::CONTENT_SECURITY_POLICY],
        crate::pages::CONTENT_SECURITY_POLICY
    );
    assert!(body.contains("页面不存在"), "{body}");
    for request in [
        browser("/api/v1/nowhere"),
        get("/nowhere", None),
        Request::post("/nowhere")
            .header(header::ACCEPT, "text/html")
            .body(Body::empty())
            .unwrap(),
    ] {
        let (status, body) = send(&d, request).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("no such endpoint"),
            "{body}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn no_page_shows_the_api_token_or_a_secret_setting() {
    const SECRET: &str = "actions-secret-script-name-4f1c9e";
    let script = Script::new(SECRET, &[], Answer::Value(1.0));
    let setup = Setup::new("");
    std::fs::write(setup.dir.path().join("script.secret"), SECRET).unwrap();
    setup.write(&source(
        "secretive",
        "0 3 * * *",
        "",
        "${file:script.secret}",
    ));
    let time = Timeline::new();
    let d = setup.start().await;
    time.at(5.0).await;
    assert_eq!(
        script.calls().len(),
        1,
        "the secret setting reached the plugin"
    );
    let me = logged_in(&d).await;

    let mut bodies = Vec::new();
    for cookie in [None, Some(me.cookie.as_str())] {
        for uri in [
            "/",
            "/?period=2026-11",
            "/figure?period=2026-Q4&unit=county&indicator=x",
            "/sources",
            "/sources?done=run&source=secretive",
            "/login",
            "/login?next=%2Fsources",
            "/?period=nonsense",
            "/nowhere",
        ] {
            let mut request = get(uri, cookie);
            request
                .headers_mut()
                .insert(header::ACCEPT, "text/html".parse().unwrap());
            bodies.push((uri.to_owned(), respond(&d, request).await.2));
        }
    }
    for (what, request) in [
        (
            "wrong login",
            post("/login", "token=nope", None, Some(ORIGIN)),
        ),
        (
            "refused run",
            post(
                "/sources/secretive/run",
                "csrf=x",
                Some(&me.cookie),
                Some(ORIGIN),
            ),
        ),
        (
            "cross-site run",
            post(
                "/sources/secretive/run",
                "",
                Some(&me.cookie),
                Some("http://evil.example"),
            ),
        ),
    ] {
        bodies.push((what.to_owned(), respond(&d, request).await.2));
    }
    for (what, body) in &bodies {
        assert!(body.starts_with("<!DOCTYPE html>"), "{what}: {body}");
        assert!(!body.contains(TOKEN), "{what} shows the token: {body}");
        assert!(!body.contains(SECRET), "{what} shows a secret: {body}");
    }
}
