//! A2A streaming: `SendStreamingMessage` and `SubscribeToTask` stream the
//! task, then an artifact and a status update per move of its ledger row,
//! and end with the task. A stream cut by a server restart is recovered by
//! resubscribing (or by `GetTask` once the task is over) with no final
//! state lost.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::helpers::{spawn_app, Engine, TestApp, Ws};
use molecule::app::Application;

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// One A2A event stream being read.
pub(crate) struct A2aStream {
    body: Body,
    buffer: String,
}

impl A2aStream {
    /// Sends `method` to `to` and expects a stream back.
    pub(crate) async fn open(
        app: &TestApp,
        to: &Ws,
        token: &str,
        method: &str,
        params: Value,
    ) -> Self {
        let resp = app
            .client
            .post(app.url(&format!("/workspaces/{}/a2a", to.id)))
            .bearer_auth(token)
            .json(&json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Self {
            body: Box::pin(resp.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event's `result` (each one a JSON-RPC response to request
    /// 7), or `None` once the stream ended; within 20 s.
    pub(crate) async fn next(&mut self) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
                    continue; // a keep-alive comment
                };
                let body: Value = serde_json::from_str(data).unwrap();
                assert_eq!((&body["jsonrpc"], &body["id"]), (&json!("2.0"), &json!(7)));
                return Some(body["result"].clone());
            }
            match tokio::time::timeout_at(deadline, self.body.next())
                .await
                .expect("an event or the end within 20 s")
            {
                Some(Ok(chunk)) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Some(Err(_)) | None => return None,
            }
        }
    }
}

async fn ws_under(app: &TestApp, name: &str, parent: Option<&Ws>) -> Ws {
    let mut body = json!({"name": name, "delivery_mode": "poll"});
    if let Some(p) = parent {
        body["parent_id"] = json!(p.id);
    }
    let (status, body) = app.create_workspace(body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    Ws {
        id: body["id"].as_str().unwrap().to_owned(),
        token: body["auth_token"].as_str().unwrap().to_owned(),
    }
}

/// The agent reports a move of task `tid` (as `molecule connect` does).
async fn report(app: &TestApp, kid: &Ws, tid: &str, body: Value) {
    let (status, answer) = app
        .post(
            &format!("/workspaces/{}/delegations/{tid}/status", kid.id),
            &kid.token,
            &body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

/// Stops the server and starts a new one on the same database: every
/// open stream is cut.
pub(crate) async fn restart(app: &mut TestApp) {
    app.stop().await;
    let started = Application::build(app.config.clone()).await.unwrap();
    app.address = format!("http://127.0.0.1:{}", started.port());
    app.store = started.state().store.clone();
    app.sweeper = started.sweeper();
    app.shutdown = CancellationToken::new();
    app.server = Some(tokio::spawn(
        started.run_until_stopped(app.shutdown.clone()),
    ));
}

fn message(text: &str) -> Value {
    json!({"message": {"messageId": uuid::Uuid::new_v4().to_string(), "role": "ROLE_USER",
        "parts": [{"text": text}]}})
}

fn status_update(tid: &str, ctx: &Value, state: &str, got: &Value) -> Value {
    let mut want = json!({"statusUpdate": {"taskId": tid, "contextId": ctx,
        "status": {"state": state}}});
    // The timestamp is the row's; compared as present.
    want["statusUpdate"]["status"]["timestamp"] =
        got["statusUpdate"]["status"]["timestamp"].clone();
    assert!(
        want["statusUpdate"]["status"]["timestamp"].is_string(),
        "{got}"
    );
    want
}

/// 1.0: the task, its moves, the cut, and the final state after it.
async fn a_stream_survives_a_restart(engine: Engine) {
    let Some(mut app) = spawn_app(engine).await else {
        return;
    };
    let boss = ws_under(&app, "boss", None).await;
    let kid = ws_under(&app, "kid", Some(&boss)).await;
    let (_, card) = app
        .get(&format!("/workspaces/{}/agent-card", kid.id), &boss.token)
        .await;
    assert_eq!(card["capabilities"]["streaming"], true);

    let mut stream = A2aStream::open(
        &app,
        &kid,
        &boss.token,
        "SendStreamingMessage",
        message("2+2"),
    )
    .await;
    let first = stream.next().await.unwrap();
    let tid = first["task"]["id"].as_str().unwrap().to_owned();
    let ctx = first["task"]["contextId"].clone();
    assert_eq!(first["task"]["status"]["state"], "TASK_STATE_SUBMITTED");
    report(&app, &kid, &tid, json!({"status": "in_progress"})).await;
    let working = stream.next().await.unwrap();
    assert_eq!(
        working,
        status_update(&tid, &ctx, "TASK_STATE_WORKING", &working)
    );

    // Cut: the stream ends with the server.
    restart(&mut app).await;
    assert_eq!(stream.next().await, None);

    // Resubscribed: the task as it is, then its moves to the end.
    let mut again = A2aStream::open(
        &app,
        &kid,
        &boss.token,
        "SubscribeToTask",
        json!({"id": tid}),
    )
    .await;
    let first = again.next().await.unwrap();
    assert_eq!(first["task"]["status"]["state"], "TASK_STATE_WORKING");
    report(
        &app,
        &kid,
        &tid,
        json!({"status": "completed", "result_preview": "4"}),
    )
    .await;
    assert_eq!(
        again.next().await.unwrap(),
        json!({"artifactUpdate": {"taskId": tid, "contextId": ctx, "append": false, "lastChunk": true,
            "artifact": {"artifactId": format!("{tid}-result"), "name": "result", "parts": [{"text": "4"}]}}})
    );
    let done = again.next().await.unwrap();
    assert_eq!(
        done,
        status_update(&tid, &ctx, "TASK_STATE_COMPLETED", &done)
    );
    assert_eq!(again.next().await, None, "the stream ends with the task");

    // A task that ended while no stream was open: resubscribing is refused
    // (nothing more will move), and GetTask reads the final state.
    let mut third = A2aStream::open(
        &app,
        &kid,
        &boss.token,
        "SendStreamingMessage",
        message("3+3"),
    )
    .await;
    let t2 = third.next().await.unwrap()["task"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    restart(&mut app).await;
    assert_eq!(third.next().await, None);
    report(
        &app,
        &kid,
        &t2,
        json!({"status": "completed", "result_preview": "6"}),
    )
    .await;
    let (_, refused) = rpc(
        &app,
        &kid,
        &boss.token,
        "SubscribeToTask",
        json!({"id": t2}),
    )
    .await;
    assert_eq!(refused["error"]["code"], -32004, "{refused}");
    let (_, got) = rpc(&app, &kid, &boss.token, "GetTask", json!({"id": t2})).await;
    assert_eq!(got["result"]["status"]["state"], "TASK_STATE_COMPLETED");
    assert_eq!(
        got["result"]["artifacts"][0]["parts"],
        json!([{"text": "6"}])
    );
}
crate::on_both_engines!(a_stream_survives_a_restart);

async fn rpc(
    app: &TestApp,
    to: &Ws,
    token: &str,
    method: &str,
    params: Value,
) -> (StatusCode, Value) {
    let resp = app
        .client
        .post(app.url(&format!("/workspaces/{}/a2a", to.id)))
        .bearer_auth(token)
        .header("A2A-Version", "1.0")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .unwrap();
    TestApp::json(resp).await
}

/// 0.3 names and shapes (`message/stream`, `tasks/resubscribe`): `kind`ed
/// events, the last status update `final`; a cancel ends the stream as
/// `canceled`; only the task's caller and callee may subscribe.
async fn v03_streams_end_final(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let boss = ws_under(&app, "boss", None).await;
    let kid = ws_under(&app, "kid", Some(&boss)).await;
    let other = ws_under(&app, "other", Some(&boss)).await;
    let msg = json!({"message": {"kind": "message", "messageId": "m-1", "role": "user",
        "parts": [{"kind": "text", "text": "wait"}]}});
    let mut stream = A2aStream::open(&app, &kid, &boss.token, "message/stream", msg).await;
    let first = stream.next().await.unwrap();
    assert_eq!(
        (&first["kind"], &first["status"]["state"]),
        (&json!("task"), &json!("submitted"))
    );
    let tid = first["id"].as_str().unwrap().to_owned();
    // The callee may follow its own task; a sibling may not see it.
    let mut callee_view = A2aStream::open(
        &app,
        &kid,
        &kid.token,
        "tasks/resubscribe",
        json!({"id": tid}),
    )
    .await;
    assert_eq!(
        callee_view.next().await.unwrap()["status"]["state"],
        "submitted"
    );
    let (_, hidden) = rpc(
        &app,
        &kid,
        &other.token,
        "SubscribeToTask",
        json!({"id": tid}),
    )
    .await;
    assert_eq!(hidden["error"]["code"], -32001);

    let (_, canceled) = rpc(&app, &kid, &boss.token, "CancelTask", json!({"id": tid})).await;
    assert_eq!(canceled["result"]["status"]["state"], "TASK_STATE_CANCELED");
    for s in [&mut stream, &mut callee_view] {
        let last = s.next().await.unwrap();
        assert_eq!(
            (
                &last["kind"],
                &last["taskId"],
                &last["status"]["state"],
                &last["final"]
            ),
            (
                &json!("status-update"),
                &json!(tid),
                &json!("canceled"),
                &json!(true)
            )
        );
        assert_eq!(s.next().await, None);
    }
}
crate::on_both_engines!(v03_streams_end_final);

/// A task's stream ends as soon as the token that opened it is revoked;
/// the same task's stream opened with another token of the caller goes on
/// carrying its moves.
async fn a_stream_ends_when_its_token_is_revoked(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let boss = ws_under(&app, "boss", None).await;
    let kid = ws_under(&app, "kid", Some(&boss)).await;
    let tokens = format!("/workspaces/{}/tokens", boss.id);
    let (status, second) = app.post(&tokens, &boss.token, &json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let mut by_second = A2aStream::open(
        &app,
        &kid,
        second["auth_token"].as_str().unwrap(),
        "SendStreamingMessage",
        message("2+2"),
    )
    .await;
    let first = by_second.next().await.unwrap();
    let tid = first["task"]["id"].as_str().unwrap().to_owned();
    let mut by_first = A2aStream::open(
        &app,
        &kid,
        &boss.token,
        "SubscribeToTask",
        json!({"id": tid}),
    )
    .await;
    by_first.next().await.unwrap();

    let resp = app
        .client
        .delete(app.url(&format!("{tokens}/{}", second["id"].as_str().unwrap())))
        .bearer_auth(&boss.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(by_second.next().await, None);

    report(&app, &kid, &tid, json!({"status": "in_progress"})).await;
    let working = by_first.next().await.unwrap();
    assert_eq!(
        working["statusUpdate"]["status"]["state"],
        "TASK_STATE_WORKING"
    );
}
crate::on_both_engines!(a_stream_ends_when_its_token_is_revoked);
