//! The edge: rate limits per token and per client address (429 with
//! `Retry-After`, counted), CORS for named origins only, the security
//! headers on every response (every OpenAPI route, errors, 404s, SSE, the
//! canvas), and HTTPS with a certificate generated here.

use std::time::Duration;

use molecule::rate::Rate;
use molecule::serve::TlsFiles;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{metric_value, spawn_app_with, Engine, Options, TestApp};
use crate::on_both_engines;

/// Three calls at once per key, then one every 20 minutes: a test can spend
/// the burst and see the refusal without ever waiting for a refill. The
/// metrics are read on their own listener, outside the limits.
fn three_per_hour(engine: Engine) -> Options {
    Options::new(engine).tweak(|c| {
        c.rate_limit = Some(Rate::new(3, Duration::from_secs(3600)));
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
}

/// `molecule_rate_limited_total{bucket}`, from the metrics listener.
async fn refusals(app: &TestApp, bucket: &str) -> f64 {
    let port = app.metrics_port.expect("the metrics listener");
    let text = app
        .client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric_value(
        &text,
        &format!("molecule_rate_limited_total{{bucket=\"{bucket}\"}}"),
    )
}

async fn get(app: &TestApp, path: &str, token: Option<&str>) -> (StatusCode, HeaderMap, Value) {
    let mut req = app.client.get(app.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// The 429 of the edge: its status, a `Retry-After` of one refill (1200 s
/// for three an hour) and the JSON error naming `whose` bucket.
fn assert_refused(
    case: &str,
    (status, headers, body): (StatusCode, HeaderMap, Value),
    whose: &str,
) {
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{case}: {body}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (1190..=1200).contains(&retry),
        "{case}: Retry-After {retry}"
    );
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("rate limit exceeded: 3 calls per 3600 s for ") && error.contains(whose),
        "{case}: {body}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff", "{case}");
}

on_both_engines!(a_token_over_its_rate_gets_429_with_retry_after_and_other_tokens_do_not);
async fn a_token_over_its_rate_gets_429_with_retry_after_and_other_tokens_do_not(engine: Engine) {
    let options = three_per_hour(engine);
    let Some(app) = spawn_app_with(options).await else {
        return;
    };
    // The admin token spends two of its three on the workspaces.
    let a = app.create_poll_workspace("alpha").await;
    let b = app.create_poll_workspace("beta").await;
    let path = |id: &str| format!("/workspaces/{id}/activity");

    for call in 1..=3 {
        let (status, _, body) = get(&app, &path(&a.id), Some(&a.token)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "call {call} is in the burst: {body}"
        );
    }
    assert_refused(
        "the fourth call of a",
        get(&app, &path(&a.id), Some(&a.token)).await,
        "this token",
    );
    assert_eq!(refusals(&app, "token").await, 1.0);

    let (status, _, body) = get(&app, &path(&b.id), Some(&b.token)).await;
    assert_eq!(status, StatusCode::OK, "b has its own bucket: {body}");
    let (status, _, body) = get(&app, "/workspaces", Some(&app.admin_token)).await;
    assert_eq!(status, StatusCode::OK, "the admin's third call: {body}");
    assert_refused(
        "the admin's fourth call",
        get(&app, "/workspaces", Some(&app.admin_token)).await,
        "this token",
    );
    assert_eq!(refusals(&app, "token").await, 2.0);
    let (status, _, body) = get(&app, "/health", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the address's bucket is untouched: {body}"
    );
}

on_both_engines!(an_address_over_its_rate_gets_429_and_guessing_tokens_empties_it_too);
async fn an_address_over_its_rate_gets_429_and_guessing_tokens_empties_it_too(engine: Engine) {
    let options = three_per_hour(engine);
    let Some(app) = spawn_app_with(options).await else {
        return;
    };
    // Requests without a token draw on the address.
    for call in 1..=3 {
        let (status, _, body) = get(&app, "/health", None).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "call {call} is in the burst: {body}"
        );
    }
    assert_refused(
        "the fourth tokenless call",
        get(&app, "/health", None).await,
        "this client address",
    );
    assert_eq!(refusals(&app, "address").await, 1.0);
    let (status, _, body) = get(&app, "/workspaces", Some(&app.admin_token)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a valid token has its own bucket: {body}"
    );

    // Each guessed token has a full bucket of its own, but every refusal
    // costs the address, already empty: after the first, the address is
    // refused whatever token it shows.
    let guess = || format!("mol_{}", "0".repeat(64));
    let (status, _, body) = get(&app, "/workspaces", Some(&guess())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_refused(
        "a second guess",
        get(&app, "/workspaces", Some(&format!("{}1", guess()))).await,
        "this client address",
    );
    assert_refused(
        "the admin token from the refused address",
        get(&app, "/workspaces", Some(&app.admin_token)).await,
        "this client address",
    );
    assert_eq!(refusals(&app, "address").await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessed_tokens_are_throttled_by_address_even_when_the_address_had_calls_left() {
    let options = three_per_hour(Engine::Sqlite);
    let app = spawn_app_with(options).await.unwrap();
    for guess in 0..3 {
        let token = format!("mol_{guess:064}");
        let (status, _, body) = get(&app, "/workspaces", Some(&token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "guess {guess}: {body}");
    }
    // The fourth refusal finds the address's bucket empty: refused from
    // then on, a fresh token or none.
    let (status, _, body) = get(&app, "/workspaces", Some(&format!("mol_{:064}", 3))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "guess 3: {body}");
    assert_refused(
        "guess 4",
        get(&app, "/workspaces", Some(&format!("mol_{:064}", 4))).await,
        "this client address",
    );
    assert_refused(
        "no token",
        get(&app, "/health", None).await,
        "this client address",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_never_refuses() {
    // The harness's default: the suites run unthrottled.
    let app = spawn_app_with(Options::new(Engine::Sqlite)).await.unwrap();
    assert_eq!(app.config.rate_limit, None);
    for call in 0..50 {
        let (status, _, _) = get(&app, "/health", None).await;
        assert_eq!(status, StatusCode::OK, "call {call}");
    }
    assert_eq!(
        app.metric("molecule_rate_limited_total{bucket=\"address\"}")
            .await,
        0.0
    );
}

const ALLOWED: &str = "https://ops.example.com";
const DENIED: &str = "https://evil.example.net";

async fn cors_request(
    app: &TestApp,
    method: Method,
    path: &str,
    origin: &str,
) -> reqwest::Response {
    let mut req = app
        .client
        .request(method.clone(), app.url(path))
        .header("origin", origin);
    if method == Method::OPTIONS {
        req = req.header("access-control-request-method", "POST").header(
            "access-control-request-headers",
            "authorization,content-type",
        );
    } else {
        req = req.bearer_auth(&app.admin_token);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_named_origins_only_preflight_too() {
    let options = Options::new(Engine::Sqlite).tweak(|c| {
        c.cors_origins = vec![ALLOWED.to_owned(), "http://localhost:3000".to_owned()];
    });
    let app = spawn_app_with(options).await.unwrap();

    let preflight = cors_request(&app, Method::OPTIONS, "/workspaces", ALLOWED).await;
    assert_eq!(preflight.status(), StatusCode::OK);
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], ALLOWED);
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );
    let headers = h["access-control-allow-headers"].to_str().unwrap();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    assert_eq!(h["x-content-type-options"], "nosniff", "the preflight too");

    let get = cors_request(&app, Method::GET, "/workspaces", ALLOWED).await;
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(get.headers()["access-control-allow-origin"], ALLOWED);
    let exposed = get.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("retry-after"), "{exposed}");

    for method in [Method::OPTIONS, Method::GET] {
        let resp = cors_request(&app, method.clone(), "/workspaces", DENIED).await;
        assert!(
            !resp.headers().contains_key("access-control-allow-origin"),
            "{method} from a denied origin: {:?}",
            resp.headers()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_by_default() {
    let app = spawn_app_with(Options::new(Engine::Sqlite)).await.unwrap();
    assert!(app.config.cors_origins.is_empty());
    for method in [Method::OPTIONS, Method::GET] {
        let resp = cors_request(&app, method.clone(), "/workspaces", ALLOWED).await;
        assert!(
            !resp.headers().contains_key("access-control-allow-origin"),
            "{method}: {:?}",
            resp.headers()
        );
    }
}

/// The security headers every response carries; `canvas` responses keep
/// their own, stricter CSP.
fn assert_security_headers(case: &str, headers: &HeaderMap, canvas: bool, hsts: bool) {
    assert_eq!(headers["x-content-type-options"], "nosniff", "{case}");
    assert_eq!(headers["referrer-policy"], "no-referrer", "{case}");
    assert_eq!(headers["x-frame-options"], "DENY", "{case}");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{case}: {csp}");
    if canvas {
        assert!(
            csp.contains("script-src 'self'"),
            "{case}: the canvas's own CSP: {csp}"
        );
    } else {
        assert_eq!(csp, "default-src 'none'; frame-ancestors 'none'", "{case}");
    }
    match hsts {
        true => assert_eq!(
            headers["strict-transport-security"], "max-age=31536000; includeSubDomains",
            "{case}"
        ),
        false => assert!(!headers.contains_key("strict-transport-security"), "{case}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_response_carries_the_security_headers() {
    let app = spawn_app_with(Options::new(Engine::Sqlite)).await.unwrap();
    let ws = app.create_poll_workspace("alpha").await;
    let admin = Some(app.admin_token.as_str());
    let cases = [
        ("JSON", "/workspaces", admin, StatusCode::OK, false),
        (
            "the OpenAPI document",
            "/openapi.json",
            None,
            StatusCode::OK,
            false,
        ),
        (
            "an error",
            "/workspaces",
            None,
            StatusCode::UNAUTHORIZED,
            false,
        ),
        (
            "a bad request",
            "/workspaces/not-a-uuid",
            admin,
            StatusCode::BAD_REQUEST,
            false,
        ),
        (
            "a 404",
            "/no/such/route",
            None,
            StatusCode::NOT_FOUND,
            false,
        ),
        ("the canvas", "/", None, StatusCode::OK, true),
        (
            "a canvas module",
            "/assets/js/app.js",
            None,
            StatusCode::OK,
            true,
        ),
    ];
    for (case, path, token, status, canvas) in cases {
        let (got, headers, body) = get(&app, path, token).await;
        assert_eq!(got, status, "{case}: {body}");
        assert_security_headers(case, &headers, canvas, false);
    }
    // An event stream: its headers come before any event.
    let stream = app
        .client
        .get(app.url(&format!("/workspaces/{}/events", ws.id)))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    assert_security_headers("SSE", stream.headers(), false, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_openapi_route_answers_with_the_security_headers_and_hsts_by_flag() {
    let app = spawn_app_with(Options::new(Engine::Sqlite).tweak(|c| c.hsts = true))
        .await
        .unwrap();
    let (_, _, doc) = get(&app, "/openapi.json", None).await;
    let paths = doc["paths"].as_object().unwrap();
    let mut seen = 0;
    for (path, item) in paths {
        // Any id: the answer (401, 404, 400…) is beside the point.
        let concrete: String = path
            .split('/')
            .map(|seg| match seg.starts_with('{') {
                true => "00000000-0000-4000-8000-000000000000",
                false => seg,
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in item.as_object().unwrap().keys() {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            let resp = tokio::time::timeout(
                Duration::from_secs(10),
                app.client
                    .request(method.clone(), app.url(&concrete))
                    .send(),
            )
            .await
            .unwrap_or_else(|_| panic!("{method} {path} answered within 10 s"))
            .unwrap();
            let case = format!("{method} {path} ({})", resp.status());
            assert_security_headers(&case, resp.headers(), false, true);
            seen += 1;
        }
    }
    assert!(seen > 50, "walked {seen} routes");
}

/// A self-signed certificate for `localhost` and its key, as PEM files.
fn self_signed(dir: &std::path::Path) -> (TlsFiles, String) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, signing_key.serialize_pem()).unwrap();
    (files, cert.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_with_a_self_signed_certificate_and_refuses_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let (files, cert_pem) = self_signed(dir.path());
    let app = spawn_app_with(Options::new(Engine::Sqlite).tweak(move |c| {
        c.tls = Some(files);
        c.hsts = true;
    }))
    .await
    .unwrap();
    let port: u16 = app.address.rsplit(':').next().unwrap().parse().unwrap();
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let https = format!("https://localhost:{port}");

    let resp = trusting
        .get(format!("{https}/workspaces"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_security_headers("over TLS", resp.headers(), false, true);
    // The connection blocks name the HTTPS URL.
    let (status, body) = TestApp::json(
        trusting
            .post(format!("{https}/workspaces"))
            .bearer_auth(&app.admin_token)
            .json(&serde_json::json!({"name": "alpha", "delivery_mode": "poll"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(
        body.to_string()
            .contains(&format!("https://127.0.0.1:{port}")),
        "the public URL is https: {body}"
    );

    // A client that does not trust the certificate fails the handshake;
    // plain HTTP gets no answer.
    let untrusting = reqwest::Client::builder()
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let err = untrusting
        .get(format!("{https}/health"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let plain = app
        .client
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP to the TLS listener: {plain:?}");
    // And the server still serves after both.
    let resp = trusting
        .get(format!("{https}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_key_that_is_not_pem_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = self_signed(dir.path());
    std::fs::write(&files.key, "not a key").unwrap();
    let mut config = molecule::config::Config::with_defaults(
        dir.path(),
        molecule::domain::AuthToken::generate(),
    );
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.tls = Some(files);
    let err = molecule::app::Application::build(config)
        .await
        .err()
        .expect("a bad key is refused");
    let text = format!("{err:#}");
    assert!(text.starts_with("failed to read --tls-key "), "{text}");
    assert!(
        !dir.path().join("molecule.db").exists(),
        "refused before anything was opened"
    );
}
