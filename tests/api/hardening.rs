//! Hostile and out-of-range input, found by an adversarial run: settings
//! that do not fit, NUL characters, oversized bodies, slow clients,
//! revoked tokens on live streams, file modes, and IPv6 forms of internal
//! addresses.

use std::time::Duration;

use molecule::app::Application;
use molecule::config::Config;
use molecule::domain::AuthToken;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{file, spawn_app, spawn_app_with, Engine, Options};
use crate::on_both_engines;

/// A retention that does not fit a `chrono` duration used to fall back to
/// zero, which the sweep reads as "everything is past retention".
#[tokio::test]
async fn a_retention_or_ttl_that_does_not_fit_is_refused_at_start_up() {
    type Tweak = fn(&mut Config);
    let cases: [(&str, Tweak); 3] = [
        ("--activity-retention", |c| {
            c.activity_retention = humantime::parse_duration("1000000000y").unwrap()
        }),
        ("--ack-retention", |c| {
            c.ack_retention = Duration::from_secs(u64::MAX)
        }),
        ("--upload-ttl", |c| {
            c.upload_ttl = humantime::parse_duration("200y").unwrap()
        }),
    ];
    for (flag, tweak) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::with_defaults(dir.path(), AuthToken::generate());
        config.listen = "127.0.0.1:0".parse().unwrap();
        tweak(&mut config);
        let err = Application::build(config)
            .await
            .err()
            .unwrap_or_else(|| panic!("{flag}: a period that does not fit was accepted"));
        let text = format!("{err:#}");
        assert!(
            text.starts_with(&format!("{flag} is ")) && text.contains("longer than the 100 years"),
            "{flag}: {text}"
        );
        // Refused before anything was created.
        assert!(!dir.path().join("molecule.db").exists(), "{flag}");
    }
}

/// A push-mode agent that counts the messages it is handed.
async fn spawn_counting_agent() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let seen = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |axum::Json(rpc): axum::Json<Value>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { axum::Json(json!({"jsonrpc": "2.0", "id": rpc["id"], "result": {}})) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn nul_error(field: &str) -> Value {
    json!({"error": format!("`{field}` must not contain NUL characters (\\u0000)")})
}

/// PostgreSQL cannot store NUL in text: every such request answered 500,
/// and a push-mode message was forwarded first, so a retry delivered it
/// twice. One rule on both engines: 400 naming the field, before anything
/// is stored or forwarded.
async fn nul_characters_are_refused_by_name_before_anything_happens(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (status, body) = app
        .create_workspace(json!({"name": "a\u{0}b", "delivery_mode": "poll"}))
        .await;
    assert_eq!((status, body), (StatusCode::BAD_REQUEST, nul_error("name")));
    let (_, all) = app.get("/workspaces", &app.admin_token).await;
    assert_eq!(all, json!([]));

    let ws = app.create_poll_workspace("w").await;
    let a2a = format!("/workspaces/{}/a2a", ws.id);
    let cases = [
        (
            json!({"params": {"message": {"parts": [{"kind": "text", "text": "hi\u{0}"}]}}}),
            "params.message.parts[0].text",
        ),
        (
            json!({"params": {"message": {"messageId": "m\u{0}", "parts": [{"kind": "text", "text": "hi"}]}}}),
            "params.message.messageId",
        ),
    ];
    for (message, field) in &cases {
        let (status, body) = app.post(&a2a, &app.admin_token, message).await;
        assert_eq!((status, body), (StatusCode::BAD_REQUEST, nul_error(field)));
    }
    let (status, body) = app
        .post(
            &format!("/workspaces/{}/notify", ws.id),
            &ws.token,
            &json!({"message": "done\u{0}"}),
        )
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::BAD_REQUEST, nul_error("message"))
    );
    let (status, body) = app
        .post(
            &format!("/workspaces/{}/activity", ws.id),
            &ws.token,
            &json!({"activity_type": "x", "request_body": {"k": ["ok", "\u{0}"]}}),
        )
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::BAD_REQUEST, nul_error("request_body.k[1]"))
    );
    let (status, body) = app
        .post(
            "/registry/register",
            &ws.token,
            &json!({"id": ws.id, "agent_card": {"name": "n\u{0}"}}),
        )
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::BAD_REQUEST, nul_error("agent_card.name"))
    );
    let (status, body) = app.activity(&ws, "type=a%00b").await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "the query parameter `type` must not contain NUL characters (%00)"})
        )
    );
    // Nothing was written.
    let (status, rows) = app.activity(&ws, "").await;
    assert_eq!((status, rows), (StatusCode::OK, json!([])));

    // A push workspace is never handed a message that cannot be recorded.
    let (agent, seen) = spawn_counting_agent().await;
    let push = app.create_push_workspace("p", &agent).await;
    let (status, body) = app
        .post(
            &format!("/workspaces/{}/a2a", push.id),
            &app.admin_token,
            &cases[0].0,
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            nul_error("params.message.parts[0].text")
        )
    );
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 0);
    let (status, body) = app.send_text(&push.id, "fine").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
}
on_both_engines!(nul_characters_are_refused_by_name_before_anything_happens);

/// A JSON body over the limit answered 400 "length limit exceeded".
async fn a_json_body_over_the_limit_is_413_naming_the_limit(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let name = "x".repeat(2 * 1024 * 1024 + 1024);
    let (status, body) = app
        .create_workspace(json!({"name": name, "delivery_mode": "poll"}))
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "the JSON body is larger than the 2.0 MiB limit"})
        )
    );
    let (_, all) = app.get("/workspaces", &app.admin_token).await;
    assert_eq!(all, json!([]));
}
on_both_engines!(a_json_body_over_the_limit_is_413_naming_the_limit);

/// Every folder and file under `dir`, with its permission bits.
fn modes_under(dir: &std::path::Path) -> Vec<(String, bool, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::metadata(&path).unwrap();
        let name = path.strip_prefix(dir).unwrap().display().to_string();
        out.push((name, meta.is_dir(), meta.permissions().mode() & 0o777));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

/// The database and blobs were 0644 in 0755 folders, readable by every
/// local user, beside a 0600 admin token.
async fn data_files_are_private_to_the_server(engine: Engine) {
    let Some(app) = spawn_app_with(Options::new(engine).tweak(|c| {
        let data = c.data_dir.join("data");
        if c.database_url.starts_with("sqlite") {
            c.database_url = format!("sqlite://{}", data.join("molecule.db").display());
        }
        c.blob_store = format!("file://{}", data.join("blobs").display());
        c.data_dir = data;
    }))
    .await
    else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    app.stage(&ws, file("a.txt", "text/plain", "hello")).await;
    let (status, _) = app.send_text(&ws.id, "hi").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let modes = modes_under(&app.config.data_dir);
    let names: Vec<&str> = modes.iter().map(|(n, _, _)| n.as_str()).collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("blobs/") && n.len() > 50),
        "{names:?}"
    );
    if engine == Engine::Sqlite {
        for name in ["molecule.db", "molecule.db-wal", "molecule.db-shm"] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
    }
    for (name, is_dir, mode) in &modes {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{name:?} is {mode:o}, want {want:o}");
    }
}
on_both_engines!(data_files_are_private_to_the_server);

/// Starts a long poll of `ws`'s inbox (`wait=30`) with `token`.
fn park_long_poll(
    app: &crate::helpers::TestApp,
    ws: &crate::helpers::Ws,
    token: &str,
) -> tokio::task::JoinHandle<(StatusCode, Value, Duration)> {
    let request = app
        .client
        .get(app.url(&format!("/workspaces/{}/activity?wait=30", ws.id)))
        .bearer_auth(token);
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let resp = request.send().await.unwrap();
        let (status, body) = crate::helpers::TestApp::json(resp).await;
        (status, body, started.elapsed())
    })
}

/// Lets a just-started long poll reach its wait. Only a head start: the
/// outcome asserted is the same if the poll has not parked yet (its token
/// is then refused on arrival).
async fn head_start() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn unauthorized() -> Value {
    json!({"error": "missing or invalid bearer token"})
}

/// A long poll parked with a token that was then rotated still received
/// the next message.
async fn rotation_ends_parked_long_polls_with_401(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let poll = park_long_poll(&app, &ws, &ws.token);
    head_start().await;
    let (status, _) = app
        .post(
            &format!("/workspaces/{}/external/rotate", ws.id),
            &app.admin_token,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.send_text(&ws.id, "for the new token only").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body, took) = poll.await.unwrap();
    assert_eq!((status, body), (StatusCode::UNAUTHORIZED, unauthorized()));
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
}
on_both_engines!(rotation_ends_parked_long_polls_with_401);

/// Deleting a workspace ends its long polls (401 for its own token, 404
/// for the operator's) and its event streams.
async fn deletion_ends_parked_long_polls_and_event_streams(engine: Engine) {
    use futures::StreamExt;
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let own = park_long_poll(&app, &ws, &ws.token);
    let operators = park_long_poll(&app, &ws, &app.admin_token);
    let events = app
        .client
        .get(app.url(&format!("/workspaces/{}/events", ws.id)))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    head_start().await;
    let deleted = app
        .client
        .delete(app.url(&format!("/workspaces/{}", ws.id)))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (status, body, took) = own.await.unwrap();
    assert_eq!((status, body), (StatusCode::UNAUTHORIZED, unauthorized()));
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    let (status, body, took) = operators.await.unwrap();
    assert_eq!(
        (status, body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "workspace not found"})
        )
    );
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    // The stream ends (well before its 15 s keep-alive would show).
    let mut stream = events.bytes_stream();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = stream.next().await {
            chunk.unwrap();
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the event stream of a deleted workspace stayed open"
    );
}
on_both_engines!(deletion_ends_parked_long_polls_and_event_streams);

fn with_connection_limits(engine: Engine, header: Duration, idle: Duration, max: usize) -> Options {
    Options::new(engine).tweak(move |c| {
        c.connections = molecule::serve::ConnLimits {
            header_read_timeout: header,
            idle_timeout: idle,
            max_connections: max,
        }
    })
}

async fn raw_connection(app: &crate::helpers::TestApp) -> tokio::net::TcpStream {
    let addr = app.address.trim_start_matches("http://");
    tokio::net::TcpStream::connect(addr).await.unwrap()
}

/// Reads until the server closes the connection (EOF or reset), failing
/// after `within`. Returns what was read and how long it took.
async fn read_until_closed(
    conn: &mut tokio::net::TcpStream,
    within: Duration,
) -> (String, Duration) {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept the connection open past {within:?}"
    );
    (
        String::from_utf8_lossy(&seen).into_owned(),
        started.elapsed(),
    )
}

/// Connections that never finished their headers were held forever.
#[tokio::test]
async fn a_connection_that_never_finishes_its_head_is_closed_after_the_timeout() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(with_connection_limits(
        Engine::Sqlite,
        Duration::from_millis(800),
        Duration::from_secs(60),
        64,
    ))
    .await
    .unwrap();
    // Silent from the start, and stopping half-way through the head.
    let opened = std::time::Instant::now();
    let mut silent = raw_connection(&app).await;
    let mut partial = raw_connection(&app).await;
    partial
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    for conn in [&mut silent, &mut partial] {
        let (text, _) = read_until_closed(conn, Duration::from_secs(10)).await;
        assert!(!text.contains("200 OK"), "{text}");
        let took = opened.elapsed();
        assert!(took >= Duration::from_millis(500), "closed after {took:?}");
    }
    // A prompt client is served as before.
    let resp = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// An idle keep-alive connection is closed; a long poll, in flight for
/// longer than the idle timeout, is answered.
#[tokio::test]
async fn idle_connections_are_closed_but_long_polls_are_answered() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(with_connection_limits(
        Engine::Sqlite,
        Duration::from_secs(30),
        Duration::from_millis(700),
        64,
    ))
    .await
    .unwrap();
    let ws = crate::helpers::TestApp::create_poll_workspace(&app, "w").await;
    let poll = app
        .client
        .get(app.url(&format!("/workspaces/{}/activity?wait=2", ws.id)))
        .bearer_auth(&ws.token)
        .send();
    let mut idle = raw_connection(&app).await;
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (text, took) = read_until_closed(&mut idle, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(took >= Duration::from_millis(500), "closed after {took:?}");
    let resp = poll.await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!([]));
}

/// At the cap, a new client waits in the backlog and is served as soon as
/// a slot frees.
#[tokio::test]
async fn at_the_connection_cap_a_new_client_is_served_once_a_slot_frees() {
    let app = spawn_app_with(with_connection_limits(
        Engine::Sqlite,
        Duration::from_secs(30),
        Duration::from_secs(30),
        2,
    ))
    .await
    .unwrap();
    let first = raw_connection(&app).await;
    let _second = raw_connection(&app).await;
    let client = reqwest::Client::new();
    let health = tokio::spawn({
        let url = app.url("/health");
        async move { client.get(url).send().await.map(|r| r.status()) }
    });
    // Both slots are held: the request is not served while they are.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!health.is_finished(), "served past the connection cap");
    drop(first);
    let status = tokio::time::timeout(Duration::from_secs(10), health)
        .await
        .expect("served once a slot freed")
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}

/// A part's header block was unbounded (one 100 MiB header line grew the
/// server by 100 MiB), and framing did not count toward the request limit
/// (megabytes of empty parts passed a 2 MiB limit).
async fn multipart_framing_is_capped_and_counted(engine: Engine) {
    let Some(app) =
        spawn_app_with(Options::new(engine).tweak(|c| c.limits.max_request_size = 1024 * 1024))
            .await
    else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let file_part = "--B\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n";

    let long_header = format!(
        "--B\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.txt\"\r\nX-Pad: {}\r\n\r\nhello\r\n--B--\r\n",
        "p".repeat(1024 * 1024)
    );
    let resp = app.upload_raw(&ws.id, "B", long_header).await.unwrap();
    assert_eq!(
        crate::helpers::TestApp::json(resp).await,
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "a part's headers are larger than the 16.0 KiB limit"})
        )
    );

    let empty_part = "--B\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n\r\n";
    let many_empty = format!("{}{file_part}--B--\r\n", empty_part.repeat(60_000));
    assert!(many_empty.len() > 2 * 1024 * 1024);
    let resp = app.upload_raw(&ws.id, "B", many_empty).await.unwrap();
    assert_eq!(
        crate::helpers::TestApp::json(resp).await,
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "the request is larger than the 1.0 MiB limit per request"})
        )
    );

    // Nothing was staged, both were counted; an ordinary upload still works.
    assert!(app.list_pending(&ws).await.is_empty());
    assert!(app.blob_keys().await.is_empty());
    for reason in ["header_too_large", "request_too_large"] {
        let series = format!("molecule_pending_uploads_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(app.metric(&series).await, 1.0, "{reason}");
    }
    let resp = app
        .upload_raw(&ws.id, "B", format!("{file_part}--B--\r\n"))
        .await
        .unwrap();
    let (status, body) = crate::helpers::TestApp::json(resp).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["files"][0]["size"], 5);
}
on_both_engines!(multipart_framing_is_capped_and_counted);

/// The open descriptors of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// With the default cap (4,096) and a limit of 256 descriptors, a flood of
/// idle connections took every descriptor: the requests already in
/// progress failed to open their files and the accept loop spun on
/// EMFILE. The cap now fits the limit, with room for files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_low_descriptor_limit_a_connection_flood_leaves_room_for_real_work() {
    let tmp = tempfile::TempDir::new().unwrap();
    let port = crate::helpers::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log_path = tmp.path().join("serve.log");
    let script = format!(
        "ulimit -n 256; exec {} serve --listen 127.0.0.1:{port} --admin-token admin-t \
         --data-dir {} --header-read-timeout 3s",
        env!("CARGO_BIN_EXE_molecule"),
        tmp.path().join("data").display()
    );
    let mut server = tokio::process::Command::new("sh")
        .args(["-c", &script])
        .env_remove("DATABASE_URL")
        .env_remove("MOLECULE_BLOB_STORE")
        .env_remove("MOLECULE_MAX_CONNECTIONS")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    crate::helpers::wait_until_ready(&base, &mut server).await;
    let pid = server.id().unwrap();

    // The decision, with its numbers, in one event.
    let log = std::fs::read_to_string(&log_path).unwrap();
    let event: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e.get("max_connections").is_some())
        .unwrap_or_else(|| panic!("no connection-cap event in:\n{log}"));
    assert_eq!(event["level"], "WARN", "{event}");
    assert_eq!(event["fd_soft_limit"], 256, "{event}");
    assert_eq!(event["fd_hard_limit"], 256, "{event}");
    assert_eq!(event["max_connections_requested"], 4096, "{event}");
    assert_eq!(event["max_connections"], 64, "{event}");

    // A client with a connection open before the flood.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let created: Value = client
        .post(format!("{base}/workspaces"))
        .bearer_auth("admin-t")
        .json(&json!({"name": "w", "delivery_mode": "poll"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ws = created["id"].as_str().unwrap().to_owned();

    // More idle connections than the process has descriptors.
    let mut flood = Vec::new();
    for _ in 0..300 {
        flood.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    crate::helpers::eventually("the server holds the flood's first connections", || async {
        fd_count(pid) >= 64
    })
    .await;

    // Work that opens files still succeeds on the connection in progress.
    let form = reqwest::multipart::Form::new().part(
        "files",
        reqwest::multipart::Part::bytes(b"still here".to_vec()).file_name("a.txt"),
    );
    let upload = client
        .post(format!("{base}/workspaces/{ws}/chat/uploads"))
        .bearer_auth("admin-t")
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = upload.status();
    assert_eq!(status, StatusCode::OK, "{}", upload.text().await.unwrap());
    let ready = client.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    // A new client is answered once the flood's heads time out.
    let health = reqwest::Client::new()
        .get(format!("{base}/health"))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert!(fd_count(pid) < 256);
    drop(flood);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains("Too many open files"), "{log}");
}
