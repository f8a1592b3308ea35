//! Delegations and schedule fires to push workspaces: the server hands the
//! task to the workspace's URL and completes the ledger row with its
//! answer (or fails it with the reason); a row nobody forwarded (the
//! workspace was paused) is forwarded by the sweeper's `forward_push` job,
//! exactly once however often it runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::Duration as Span;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{eventually, spawn_app, Engine, TestApp};
use crate::on_both_engines;

/// A push agent answering `done: <task>`, counting the calls it took and
/// keeping the last request.
async fn counting_agent() -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Value>>) {
    use axum::routing::post;
    let calls = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(std::sync::Mutex::new(Value::Null));
    let (c, l) = (calls.clone(), last.clone());
    let app = axum::Router::new().route(
        "/",
        post(move |axum::Json(rpc): axum::Json<Value>| {
            let (c, l) = (c.clone(), l.clone());
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                let text = rpc["params"]["message"]["parts"][0]["text"].as_str().unwrap_or("").to_owned();
                *l.lock().unwrap() = rpc.clone();
                axum::Json(json!({"jsonrpc": "2.0", "id": rpc["id"], "result": {"kind": "message",
                    "role": "agent", "parts": [{"kind": "text", "text": format!("done: {text}")}]}}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/"), calls, last)
}

async fn delegate(app: &TestApp, ws: &str, task: &str) -> String {
    let (status, body) = app
        .post(
            &format!("/workspaces/{ws}/delegate"),
            &app.admin_token,
            &json!({"task": task}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["delegation_id"].as_str().unwrap().to_owned()
}

/// Waits for the ledger row to end; returns it.
async fn ended(app: &TestApp, ws: &str, did: &str) -> Value {
    let path = format!("/workspaces/{ws}/delegations/{did}");
    eventually("the delegation to end", || async {
        let (_, row) = app.get(&path, &app.admin_token).await;
        matches!(row["status"].as_str(), Some("completed" | "failed"))
    })
    .await;
    app.get(&path, &app.admin_token).await.1
}

async fn a_delegation_and_a_fire_to_a_push_workspace_are_forwarded_and_completed(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (url, calls, last) = counting_agent().await;
    let ws = app.create_push_workspace("pushy", &url).await;
    let did = delegate(&app, &ws.id, "summarize the logs").await;
    let row = ended(&app, &ws.id, &did).await;
    assert_eq!(row["status"], "completed", "{row}");
    assert_eq!(row["result_preview"], "done: summarize the logs");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let sent = last.lock().unwrap().clone();
    assert_eq!(sent["method"], "message/send");
    assert_eq!(
        sent["params"]["message"]["metadata"]["delegation_id"],
        did.as_str()
    );
    assert_eq!(
        sent["params"]["message"]["metadata"]["source_id"],
        "operator"
    );

    // A fire is a delegation: run now, forwarded the same way.
    let (status, made) = app
        .post(
            &format!("/workspaces/{}/schedules", ws.id),
            &app.admin_token,
            &json!({"name": "nightly", "cron_expr": "0 3 * * *", "prompt": "write the report"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let (status, fire) = app
        .post(
            &format!(
                "/workspaces/{}/schedules/{}/run",
                ws.id,
                made["id"].as_str().unwrap()
            ),
            &app.admin_token,
            &json!({}),
        )
        .await;
    assert_eq!(
        (status, &fire["status"]),
        (StatusCode::OK, &json!("delivered")),
        "{fire}"
    );
    let fired = fire["delegation_id"].as_str().unwrap();
    let row = ended(&app, &ws.id, fired).await;
    assert_eq!(row["status"], "completed", "{row}");
    assert_eq!(row["result_preview"], "done: write the report");
    let sent = last.lock().unwrap().clone();
    assert_eq!(
        sent["params"]["message"]["metadata"]["source_id"],
        format!("schedule:{}", made["id"].as_str().unwrap())
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // A timed fire, from the scheduler's tick at its due instant.
    let due: chrono::DateTime<chrono::Utc> = made["next_run_at"].as_str().unwrap().parse().unwrap();
    let counts = app.sweeper.scheduler().tick(due).await.unwrap();
    assert_eq!(counts.get("delivered"), Some(1));
    let (_, history) = app
        .get(
            &format!(
                "/workspaces/{}/schedules/{}/history",
                ws.id,
                made["id"].as_str().unwrap()
            ),
            &app.admin_token,
        )
        .await;
    let timed = history[0]["delegation_id"].as_str().unwrap();
    assert_eq!(
        history[0]["due_at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap(),
        due
    );
    let row = ended(&app, &ws.id, timed).await;
    assert_eq!(row["status"], "completed", "{row}");
    assert_eq!(row["result_preview"], "done: write the report");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}
on_both_engines!(a_delegation_and_a_fire_to_a_push_workspace_are_forwarded_and_completed);

async fn an_unreachable_push_workspace_fails_the_row_with_the_reason(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    // A port with nothing listening.
    let port = crate::helpers::free_port();
    let ws = app
        .create_push_workspace("gone", &format!("http://127.0.0.1:{port}/"))
        .await;
    let did = delegate(&app, &ws.id, "anything").await;
    let row = ended(&app, &ws.id, &did).await;
    assert_eq!(row["status"], "failed", "{row}");
    let detail = row["error_detail"].as_str().unwrap();
    assert!(
        detail.starts_with("could not deliver to the push workspace: "),
        "{detail}"
    );
}
on_both_engines!(an_unreachable_push_workspace_fails_the_row_with_the_reason);

async fn a_row_queued_while_paused_is_forwarded_by_the_sweeper_once(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (url, calls, _) = counting_agent().await;
    let ws = app.create_push_workspace("sleepy", &url).await;
    let (status, _) = app
        .post(
            &format!("/workspaces/{}/pause", ws.id),
            &app.admin_token,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let did = delegate(&app, &ws.id, "later").await;
    let path = format!("/workspaces/{}/delegations/{did}", ws.id);
    let (_, row) = app.get(&path, &app.admin_token).await;
    assert_eq!(
        row["status"], "queued",
        "a paused workspace is not called: {row}"
    );
    let (status, _) = app
        .post(
            &format!("/workspaces/{}/resume", ws.id),
            &app.admin_token,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Younger than the retry delay: the pass leaves it to the route.
    let early = app
        .sweeper
        .sweep_once(molecule::domain::now())
        .await
        .unwrap();
    assert_eq!(early.count("forward_push", "forwarded"), 0);
    // Two passes later on: forwarded by the first, once.
    let later = molecule::domain::now() + Span::seconds(60);
    let first = app.sweeper.sweep_once(later).await.unwrap();
    assert_eq!(first.count("forward_push", "forwarded"), 1);
    let row = ended(&app, &ws.id, &did).await;
    assert_eq!(
        (row["status"].as_str(), row["result_preview"].as_str()),
        (Some("completed"), Some("done: later"))
    );
    let second = app.sweeper.sweep_once(later).await.unwrap();
    assert_eq!(second.count("forward_push", "forwarded"), 0);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
on_both_engines!(a_row_queued_while_paused_is_forwarded_by_the_sweeper_once);
