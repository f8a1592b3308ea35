//! `POST /workspaces/:id/chat/uploads`: staging in poll mode, forwarding in
//! push mode, and every refusal leaving no row, no activity and no blob.

use axum::extract::Multipart;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    file, random_bytes, sha256_hex, spawn_app, spawn_app_with, Engine, Options, TestApp, Ws,
};
use crate::on_both_engines;

const MIB: usize = 1024 * 1024;

/// Asserts the staging layer holds nothing at all for `ws`.
async fn assert_nothing_staged(app: &TestApp, ws: &Ws, case: &str) {
    let now = molecule::domain::now();
    assert!(
        app.store
            .list_pending_uploads(ws.wid(), now)
            .await
            .unwrap()
            .is_empty(),
        "rows left: {case}"
    );
    let (status, rows) = app.activity(ws, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows, json!([]), "activity left: {case}");
    let keys = app.blob_keys().await;
    assert!(keys.is_empty(), "blobs left ({case}): {keys:?}");
}

async fn a_multi_file_upload_is_staged_byte_for_byte(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let big = random_bytes(3 * MIB + 17, 1);
    let files = vec![
        file(
            "notes.txt",
            "text/plain; charset=utf-8",
            "hello, workspace\n",
        ),
        file("../../etc/my report.pdf", "Application/PDF", big.clone()),
        crate::helpers::UploadFile {
            name: "data.bin".into(),
            mime: None,
            bytes: vec![0u8, 1, 2, 255],
        },
    ];
    let (status, body) = app.upload(&ws.id, files).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answered = body["files"].as_array().unwrap();
    let expected = [
        ("notes.txt", "text/plain", b"hello, workspace\n".to_vec()),
        ("my_report.pdf", "application/pdf", big),
        ("data.bin", "application/octet-stream", vec![0u8, 1, 2, 255]),
    ];
    assert_eq!(answered.len(), 3);
    let mut file_ids = Vec::new();
    for (got, (name, mime, bytes)) in answered.iter().zip(&expected) {
        let uri = got["uri"].as_str().unwrap();
        let fid = uri
            .strip_prefix(&format!("platform-pending:{}/", ws.id))
            .expect("pending URI")
            .to_owned();
        assert_eq!(
            got,
            &json!({"uri": uri, "name": name, "mimeType": mime, "size": bytes.len(), "sha256": sha256_hex(bytes)})
        );
        file_ids.push(fid);
    }
    // The inbox: one a2a_receive row per file, with the discriminator.
    let (status, rows) = app.activity(&ws, "type=a2a_receive").await;
    assert_eq!(status, StatusCode::OK);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for ((row, fid), (name, mime, bytes)) in rows.iter().zip(&file_ids).zip(&expected) {
        assert_eq!(row["method"], "chat_upload_receive");
        let want = json!({"file_id": fid, "filename": name, "mimetype": mime, "size": bytes.len(),
            "sha256": sha256_hex(bytes), "uri": format!("platform-pending:{}/{fid}", ws.id)});
        assert_eq!(row["request_body"], want);
        assert_eq!(row["data"], want);
    }
    // The list, oldest first, then each file's bytes.
    let listed = app.list_pending(&ws).await;
    assert_eq!(listed.len(), 3);
    for ((entry, fid), (name, mime, bytes)) in listed.iter().zip(&file_ids).zip(&expected) {
        assert_eq!(entry["file_id"], fid.as_str());
        assert_eq!(entry["filename"], *name);
        assert_eq!(entry["fetched_at"], Value::Null);
        let resp = app.content(&ws.id, fid, &ws.token).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers().clone();
        assert_eq!(h["content-type"], *mime);
        assert_eq!(h["content-length"], bytes.len().to_string().as_str());
        assert_eq!(
            h["content-disposition"].to_str().unwrap(),
            format!(
                "attachment; filename=\"{name}\"; filename*=UTF-8''{}",
                percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
            )
        );
        assert_eq!(
            h["etag"].to_str().unwrap(),
            format!("\"{}\"", sha256_hex(bytes))
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["accept-ranges"], "bytes");
        assert_eq!(&resp.bytes().await.unwrap()[..], &bytes[..]);
    }
    assert!(app
        .list_pending(&ws)
        .await
        .iter()
        .all(|e| e["fetched_at"].is_string()));
    for fid in &file_ids {
        assert_eq!(
            app.ack(&ws.id, fid, &ws.token).await,
            (StatusCode::OK, json!({"acked": true}))
        );
        let resp = app.content(&ws.id, fid, &ws.token).await;
        assert_eq!(TestApp::json(resp).await.0, StatusCode::NOT_FOUND);
    }
    assert!(app.list_pending(&ws).await.is_empty());
    // Acked rows and blobs stay until the sweep.
    assert_eq!(app.blob_keys().await.len(), 3);
}
on_both_engines!(a_multi_file_upload_is_staged_byte_for_byte);

async fn a_file_over_the_limit_is_413_and_leaves_nothing(engine: Engine) {
    let Some(app) = spawn_app_with(Options::new(engine).tweak(|c| {
        c.limits.max_file_size = MIB as u64;
        c.limits.max_request_size = 3 * MIB as u64;
    }))
    .await
    else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    // The first file is fine and already in the blob store when the second
    // one trips the limit: all or nothing means it goes too.
    let (status, body) = app
        .upload(
            &ws.id,
            vec![
                file("ok.txt", "text/plain", "fine"),
                file("big.bin", "application/zip", random_bytes(MIB + 1, 2)),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        body,
        json!({"error": "file \"big.bin\" is larger than the 1.0 MiB limit per file"})
    );
    assert_nothing_staged(&app, &ws, "file over limit").await;
    // Exactly at the limit is fine.
    let (status, body) = app
        .upload(
            &ws.id,
            vec![file("edge.bin", "application/zip", random_bytes(MIB, 3))],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["files"][0]["size"], MIB);
    // The request limit counts every file.
    let (status, body) = app
        .upload(
            &ws.id,
            vec![
                file("a.bin", "application/zip", random_bytes(MIB, 4)),
                file("b.bin", "application/zip", random_bytes(MIB, 5)),
                file("c.bin", "application/zip", random_bytes(MIB, 6)),
                file("d.bin", "application/zip", random_bytes(10, 7)),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        body,
        json!({"error": "the request is larger than the 3.0 MiB limit per request (at file \"d.bin\")"})
    );
    assert_eq!(
        app.list_pending(&ws).await.len(),
        1,
        "only the earlier good upload remains"
    );
    assert_eq!(app.blob_keys().await.len(), 1);
    let metrics = app.metrics_text().await;
    assert_eq!(
        crate::helpers::metric_value(
            &metrics,
            "molecule_pending_uploads_rejected_total{reason=\"file_too_large\"}"
        ),
        1.0
    );
    assert_eq!(
        crate::helpers::metric_value(
            &metrics,
            "molecule_pending_uploads_rejected_total{reason=\"request_too_large\"}"
        ),
        1.0
    );
}
on_both_engines!(a_file_over_the_limit_is_413_and_leaves_nothing);

async fn malformed_uploads_are_400_and_leave_nothing(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let url = app.url(&format!("/workspaces/{}/chat/uploads", ws.id));
    // Not multipart.
    let resp = app
        .client
        .post(&url)
        .bearer_auth(&app.admin_token)
        .json(&json!({"files": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        TestApp::json(resp).await,
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "expected a multipart/form-data body with one or more parts named `files`"})
        )
    );
    // Multipart without a `files` part.
    let form = reqwest::multipart::Form::new().text("comment", "no files here");
    let resp = app
        .client
        .post(&url)
        .bearer_auth(&app.admin_token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        TestApp::json(resp).await,
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "no file: send one or more parts named `files`"})
        )
    );
    // An empty file, after a good one.
    let (status, body) = app
        .upload(
            &ws.id,
            vec![
                file("a.txt", "text/plain", "x"),
                file("empty.txt", "text/plain", ""),
            ],
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "file \"empty.txt\" is empty"})
        )
    );
    // A body cut short: the closing boundary never comes.
    let raw = "--XyZ\r\nContent-Disposition: form-data; name=\"files\"; filename=\"cut.txt\"\r\nContent-Type: text/plain\r\n\r\nsome bytes and then nothing";
    let resp = app.upload_raw(&ws.id, "XyZ", raw).await.unwrap();
    let (status, body) = TestApp::json(resp).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("the multipart body is malformed or was cut short"),
        "{body}"
    );
    // Missing boundary.
    let resp = app
        .client
        .post(&url)
        .bearer_auth(&app.admin_token)
        .header("content-type", "multipart/form-data")
        .body("x")
        .send()
        .await
        .unwrap();
    let (status, body) = TestApp::json(resp).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_nothing_staged(&app, &ws, "malformed").await;
    // Unknown and malformed workspace, workspace token.
    let (status, _) = app
        .upload(
            &uuid::Uuid::new_v4().to_string(),
            vec![file("a", "text/plain", "x")],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.upload("nope", vec![file("a", "text/plain", "x")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let form = reqwest::multipart::Form::new().part(
        "files",
        reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("a"),
    );
    let resp = app
        .client
        .post(&url)
        .bearer_auth(&ws.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_nothing_staged(&app, &ws, "refused callers").await;
}
on_both_engines!(malformed_uploads_are_400_and_leave_nothing);

async fn a_client_that_disconnects_mid_upload_leaves_nothing(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    // A body that sends a part of a file, then fails: the connection dies.
    let head = "--B\r\nContent-Disposition: form-data; name=\"files\"; filename=\"ok.txt\"\r\n\r\nfirst file\r\n--B\r\nContent-Disposition: form-data; name=\"files\"; filename=\"half.bin\"\r\n\r\n";
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(head.as_bytes().to_vec()),
        Ok(random_bytes(512 * 1024, 9)),
        Err(std::io::Error::other("client went away")),
    ];
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let sent = app.upload_raw(&ws.id, "B", body).await;
    assert!(sent.is_err(), "the request must fail on the client side");
    // The server notices, removes the first file's blob too, and counts it.
    crate::helpers::eventually("the aborted upload is rejected", || async {
        app.metric("molecule_pending_uploads_rejected_total{reason=\"malformed\"}")
            .await
            == 1.0
    })
    .await;
    assert_nothing_staged(&app, &ws, "client disconnect").await;
}
on_both_engines!(a_client_that_disconnects_mid_upload_leaves_nothing);

#[tokio::test]
async fn a_blob_folder_removed_behind_the_servers_back_is_made_again() {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    let ws = app.create_poll_workspace("w").await;
    let (status, _) = app
        .upload(&ws.id, vec![file("a.txt", "text/plain", "a")])
        .await;
    assert_eq!(status, StatusCode::OK);
    // The server knows this folder is there and durable; take it away.
    let folder = app
        .data_dir
        .path()
        .join("blobs")
        .join("uploads")
        .join(&ws.id);
    std::fs::remove_dir_all(&folder).unwrap();
    let (status, body) = app
        .upload(&ws.id, vec![file("b.txt", "text/plain", "bb")])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let file_id = body["files"][0]["uri"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(std::fs::read(folder.join(&file_id)).unwrap(), b"bb");
    assert_eq!(
        app.blob_keys().await,
        vec![format!("uploads/{}/{file_id}", ws.id)]
    );
}

#[tokio::test]
async fn a_failing_blob_store_is_503_and_leaves_nothing() {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    let ws = app.create_poll_workspace("w").await;
    // A file where the workspace's blob folder belongs: no blob can be
    // created under it.
    let uploads = app.data_dir.path().join("blobs").join("uploads");
    std::fs::create_dir_all(&uploads).unwrap();
    let obstacle = uploads.join(&ws.id);
    std::fs::write(&obstacle, b"").unwrap();
    let (status, body) = app
        .upload(&ws.id, vec![file("a.txt", "text/plain", "x")])
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "storage is unavailable; try again shortly"})
        )
    );
    std::fs::remove_file(&obstacle).unwrap();
    assert_nothing_staged(&app, &ws, "blob store down").await;
}

#[tokio::test]
async fn a_failing_transaction_removes_every_blob_of_the_request() {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    let ws = app.create_poll_workspace("w").await;
    // Make the database refuse the second row of the batch.
    let pool = sqlx::SqlitePool::connect(&app.config.database_url)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_boom BEFORE INSERT ON pending_uploads WHEN NEW.filename = 'boom.txt' \
         BEGIN SELECT RAISE(ABORT, 'refused by test'); END",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (status, body) = app
        .upload(
            &ws.id,
            vec![
                file("a.txt", "text/plain", "x"),
                file("boom.txt", "text/plain", "y"),
            ],
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": "internal server error"})
        )
    );
    assert_nothing_staged(&app, &ws, "transaction failed").await;
}

/// A stand-in push-mode agent: answers the ingest route like a workspace
/// would, echoing what it received.
pub(crate) async fn spawn_push_agent() -> String {
    use axum::routing::post;
    let app = axum::Router::new()
        .route(
            "/internal/chat/uploads/ingest",
            post(|mut multipart: Multipart| async move {
                let mut files = Vec::new();
                while let Some(field) = multipart.next_field().await.unwrap() {
                    let name = field.file_name().unwrap_or("file").to_owned();
                    let bytes = field.bytes().await.unwrap();
                    files.push(json!({"uri": format!("workspace:/agent/uploads/{name}"), "name": name, "size": bytes.len()}));
                }
                axum::Json(json!({"files": files}))
            }),
        )
        .route("/", post(|axum::Json(rpc): axum::Json<Value>| async move {
            axum::Json(json!({"jsonrpc": "2.0", "id": rpc["id"], "result": {"kind": "message", "role": "agent",
                "parts": [{"kind": "text", "text": format!("echo: {}", rpc["params"]["message"]["parts"][0]["text"].as_str().unwrap_or(""))}]}}))
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn push_mode_forwards_the_upload_and_stages_nothing(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let agent = spawn_push_agent().await;
    let ws = app.create_push_workspace("pushy", &agent).await;
    let (status, body) = app
        .upload(
            &ws.id,
            vec![
                file("a.txt", "text/plain", "hello"),
                file("b.txt", "text/plain", "hi"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"files": [
            {"uri": "workspace:/agent/uploads/a.txt", "name": "a.txt", "size": 5},
            {"uri": "workspace:/agent/uploads/b.txt", "name": "b.txt", "size": 2},
        ]})
    );
    // Nothing staged: no pending row, no blob...
    let now = molecule::domain::now();
    let pending = app.store.list_pending_uploads(ws.wid(), now).await.unwrap();
    assert!(pending.is_empty(), "push mode staged {pending:?}");
    assert!(app.blob_keys().await.is_empty(), "push mode wrote blobs");
    // ...but one delivered row per file the workspace took, so that the
    // conversation's history shows them.
    let (status, rows) = app.activity(&ws, "").await;
    assert_eq!(status, StatusCode::OK);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (row, (name, size)) in rows.iter().zip([("a.txt", 5), ("b.txt", 2)]) {
        assert_eq!(row["activity_type"], "a2a_receive");
        assert_eq!(row["method"], "chat_upload_forward");
        assert_eq!(row["status"], "delivered");
        assert_eq!(row["summary"], format!("file {name} ({size} B)"));
        assert_eq!(
            row["data"],
            json!({"filename": name, "mimetype": null, "size": size, "sha256": null,
                   "uri": format!("workspace:/agent/uploads/{name}")})
        );
    }
    // The workspace answered: it counts as contact.
    let (status, shown) = app
        .get(&format!("/workspaces/{}", ws.id), &app.admin_token)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["status"], "online", "{shown}");
    assert!(shown["last_heartbeat_at"].is_string(), "{shown}");
    // An unreachable agent: 502.
    let dead = app
        .create_push_workspace("dead", "http://127.0.0.1:9")
        .await;
    let (status, body) = app
        .upload(&dead.id, vec![file("a.txt", "text/plain", "hello")])
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("could not reach the workspace"),
        "{body}"
    );
    assert_nothing_staged(&app, &dead, "push mode, unreachable").await;
    let (_, shown) = app
        .get(&format!("/workspaces/{}", dead.id), &app.admin_token)
        .await;
    assert_eq!(
        (&shown["status"], &shown["last_heartbeat_at"]),
        (&json!("offline"), &Value::Null),
        "{shown}"
    );
}
on_both_engines!(push_mode_forwards_the_upload_and_stages_nothing);

#[tokio::test]
async fn push_mode_without_url_is_422() {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    let ws = app.create_poll_workspace("w").await;
    // A registration can leave a push workspace without a URL only through
    // the database; set it up directly.
    let pool = sqlx::SqlitePool::connect(&app.config.database_url)
        .await
        .unwrap();
    sqlx::query("UPDATE workspaces SET delivery_mode = 'push', url = NULL WHERE id = ?1")
        .bind(&ws.id)
        .execute(&pool)
        .await
        .unwrap();
    let (status, body) = app
        .upload(&ws.id, vec![file("a.txt", "text/plain", "x")])
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": "a push-mode workspace needs a `url` to forward to"})
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_split_at_any_byte_is_parsed_the_same() {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    let ws = app.create_poll_workspace("w").await;
    let payload = random_bytes(300, 5);
    let mut body = b"--bNd\r\nContent-Disposition: form-data; name=\"files\"; filename=\"s.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    body.extend_from_slice(&payload);
    body.extend_from_slice(b"\r\n--bNd--\r\n");
    for split in 1..body.len() {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            vec![Ok(body[..split].to_vec()), Ok(body[split..].to_vec())];
        let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
        let resp = app.upload_raw(&ws.id, "bNd", body).await.unwrap();
        let (status, answer) = TestApp::json(resp).await;
        assert_eq!(status, StatusCode::OK, "split at byte {split}: {answer}");
        assert_eq!(
            answer["files"][0]["sha256"],
            sha256_hex(&payload),
            "split at byte {split}"
        );
    }
    assert_eq!(app.list_pending(&ws).await.len(), body.len() - 1);
}
