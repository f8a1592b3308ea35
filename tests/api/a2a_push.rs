//! A2A push notifications: configs set, read, listed and deleted in both
//! versions' names; every move of the task POSTed to a real local receiver
//! with the config's authentication and token; a failing receiver retried
//! with backoff by the `a2a_push` job and delivered once, or given up and
//! recorded; an owed notification kept across a restart; an internal
//! address refused when the config is set.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::Duration as Span;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::helpers::{eventually, spawn_app, spawn_app_with, Engine, Options, TestApp, Ws};
use crate::on_both_engines;

/// One request the receiver took.
#[derive(Debug)]
struct Hit {
    authorization: Option<String>,
    token: Option<String>,
    body: Value,
    /// What the receiver answered.
    status: u16,
}

/// A webhook on 127.0.0.1 answering 500 to its first `fails` requests and
/// 200 after, reporting every request on a channel.
struct Receiver {
    url: String,
    hits: mpsc::UnboundedReceiver<Hit>,
}

impl Receiver {
    async fn start(fails: usize) -> Self {
        use axum::http::HeaderMap;
        let (tx, hits) = mpsc::unbounded_channel();
        let left = Arc::new(AtomicUsize::new(fails));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
                    let (tx, left) = (tx.clone(), left.clone());
                    async move {
                        let failing = left
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        let status = if failing { 500 } else { 200 };
                        let header =
                            |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
                        let _ = tx.send(Hit {
                            authorization: header("authorization"),
                            token: header("x-a2a-notification-token"),
                            body,
                            status,
                        });
                        axum::http::StatusCode::from_u16(status).unwrap()
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url: format!("http://{addr}/hook"),
            hits,
        }
    }

    /// The next request (waits up to 20 s).
    async fn next(&mut self) -> Hit {
        tokio::time::timeout(std::time::Duration::from_secs(20), self.hits.recv())
            .await
            .expect("a notification within 20 s")
            .unwrap()
    }

    /// No request is waiting.
    fn idle(&mut self) -> bool {
        self.hits.try_recv().is_err()
    }
}

async fn ws_under(app: &TestApp, name: &str, parent: Option<&Ws>) -> Ws {
    app.create_poll_workspace_under(name, parent).await
}

/// One JSON-RPC call; the whole answer.
async fn rpc(app: &TestApp, to: &Ws, token: &str, method: &str, params: Value) -> Value {
    let resp = app
        .client
        .post(app.url(&format!("/workspaces/{}/a2a", to.id)))
        .bearer_auth(token)
        .header(
            "A2A-Version",
            if method.contains('/') { "0.3" } else { "1.0" },
        )
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .unwrap();
    let (status, body) = TestApp::json(resp).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// A task sent by `from` to `to`, not waited for; its id.
async fn send_task(app: &TestApp, to: &Ws, from: &Ws) -> String {
    let answer = rpc(
        app,
        to,
        &from.token,
        "SendMessage",
        json!({"message": {"messageId": uuid::Uuid::new_v4().to_string(), "role": "ROLE_USER",
            "parts": [{"text": "2+2"}]}, "configuration": {"returnImmediately": true}}),
    )
    .await;
    answer["result"]["task"]["id"].as_str().unwrap().to_owned()
}

/// The agent reports a move of task `tid`.
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

fn bearer_config(tid: &str, id: &str, url: &str) -> Value {
    json!({"taskId": tid, "id": id, "url": url, "token": "tok-1",
        "authentication": {"scheme": "Bearer", "credentials": "s3cret"}})
}

async fn outbox(app: &TestApp, tid: &str) -> Vec<molecule::store::OwedNotice> {
    app.store.push_notices(tid.parse().unwrap()).await.unwrap()
}

/// The `a2a_push` counts of one sweep pass as of `at`.
async fn sweep(app: &TestApp, at: chrono::DateTime<chrono::Utc>) -> [u64; 4] {
    let out = app.sweeper.sweep_once(at).await.unwrap();
    ["delivered", "retried", "gave_up", "purged"].map(|c| out.count("a2a_push", c))
}

/// Waits until the one owed row of `tid` has been tried `attempts` times.
async fn tried(app: &TestApp, tid: &str, attempts: i32) {
    eventually("the try to be recorded", || async {
        let rows = outbox(app, tid).await;
        rows.len() == 1 && rows[0].attempts == attempts && rows[0].last_error.is_some()
    })
    .await;
}

/// Configs in 1.0 and 0.3; each move the client can see notified once,
/// with the authentication, the token and the task as it was then.
async fn configs_are_managed_and_every_move_is_notified_with_its_authentication(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let mut hook = Receiver::start(0).await;
    let mut old = Receiver::start(0).await;
    let boss = ws_under(&app, "boss", None).await;
    let kid = ws_under(&app, "kid", Some(&boss)).await;
    let sib = ws_under(&app, "sib", Some(&boss)).await;
    let (_, card) = app
        .get(&format!("/workspaces/{}/agent-card", kid.id), &boss.token)
        .await;
    assert_eq!(card["capabilities"]["pushNotifications"], true);
    let tid = send_task(&app, &kid, &boss).await;

    let set = rpc(
        &app,
        &kid,
        &boss.token,
        "CreateTaskPushNotificationConfig",
        bearer_config(&tid, "hook-1", &hook.url),
    )
    .await;
    // The credentials are never read back.
    let shown = json!({"taskId": tid, "id": "hook-1", "url": hook.url, "token": "tok-1",
        "authentication": {"scheme": "Bearer"}});
    assert_eq!(set["result"], shown);
    let v03 = rpc(
        &app,
        &kid,
        &boss.token,
        "tasks/pushNotificationConfig/set",
        json!({"taskId": tid, "pushNotificationConfig": {"id": "old", "url": old.url,
            "authentication": {"schemes": ["Bearer"], "credentials": "older"}}}),
    )
    .await;
    assert_eq!(
        v03["result"],
        json!({"taskId": tid, "pushNotificationConfig": {"id": "old", "url": old.url,
            "authentication": {"schemes": ["Bearer"]}}})
    );
    let got = rpc(
        &app,
        &kid,
        &boss.token,
        "GetTaskPushNotificationConfig",
        json!({"taskId": tid, "id": "hook-1"}),
    )
    .await;
    assert_eq!(got["result"], shown);
    // The callee sees the task's configs too; a workspace that may reach
    // the agent but did not send the task is told it does not exist.
    let listed = rpc(
        &app,
        &kid,
        &kid.token,
        "ListTaskPushNotificationConfigs",
        json!({"taskId": tid}),
    )
    .await;
    assert_eq!(listed["result"]["configs"][0], shown);
    assert_eq!(listed["result"]["configs"].as_array().unwrap().len(), 2);
    assert_eq!(listed["result"]["nextPageToken"], "");
    let hidden = rpc(
        &app,
        &kid,
        &sib.token,
        "GetTaskPushNotificationConfig",
        json!({"taskId": tid, "id": "hook-1"}),
    )
    .await;
    assert_eq!(hidden["error"]["code"], -32001, "{hidden}");

    // Dispatched and in progress are one A2A state: one notification.
    report(&app, &kid, &tid, json!({"status": "in_progress"})).await;
    let hit = hook.next().await;
    assert_eq!(hit.authorization.as_deref(), Some("Bearer s3cret"));
    assert_eq!(hit.token.as_deref(), Some("tok-1"));
    assert_eq!(hit.body["task"]["id"], tid);
    assert_eq!(hit.body["task"]["status"]["state"], "TASK_STATE_WORKING");
    assert!(hit.body["task"].get("artifacts").is_none(), "{}", hit.body);
    let hit = old.next().await;
    assert_eq!(hit.authorization.as_deref(), Some("Bearer older"));
    assert_eq!(hit.token, None);
    assert_eq!(hit.body["kind"], "task");
    assert_eq!(hit.body["status"]["state"], "working");

    report(
        &app,
        &kid,
        &tid,
        json!({"status": "completed", "result_preview": "4"}),
    )
    .await;
    let hit = hook.next().await;
    assert_eq!(hit.status, 200);
    assert_eq!(hit.body["task"]["status"]["state"], "TASK_STATE_COMPLETED");
    assert_eq!(
        hit.body["task"]["artifacts"],
        json!([{"artifactId": format!("{tid}-result"), "name": "result", "parts": [{"text": "4"}]}])
    );
    assert_eq!(old.next().await.body["status"]["state"], "completed");
    eventually("the outbox to empty", || async {
        outbox(&app, &tid).await.is_empty()
    })
    .await;
    // Nothing more is owed: a sweep sends nothing, and nobody was called
    // twice.
    assert_eq!(
        sweep(&app, molecule::domain::now() + Span::hours(2)).await,
        [0; 4]
    );
    assert!(hook.idle() && old.idle());

    // Deleted: gone from the list; a second delete is an error.
    let deleted = rpc(
        &app,
        &kid,
        &boss.token,
        "DeleteTaskPushNotificationConfig",
        json!({"taskId": tid, "id": "hook-1"}),
    )
    .await;
    assert_eq!(deleted["result"], json!({}));
    let deleted = rpc(
        &app,
        &kid,
        &boss.token,
        "tasks/pushNotificationConfig/delete",
        json!({"id": tid, "pushNotificationConfigId": "old"}),
    )
    .await;
    assert_eq!(deleted["result"], Value::Null);
    assert!(deleted.get("error").is_none(), "{deleted}");
    let listed = rpc(
        &app,
        &kid,
        &boss.token,
        "tasks/pushNotificationConfig/list",
        json!({"id": tid}),
    )
    .await;
    assert_eq!(listed["result"], json!([]));
    let again = rpc(
        &app,
        &kid,
        &boss.token,
        "DeleteTaskPushNotificationConfig",
        json!({"taskId": tid, "id": "hook-1"}),
    )
    .await;
    assert_eq!(again["error"]["code"], -32602, "{again}");
}
on_both_engines!(configs_are_managed_and_every_move_is_notified_with_its_authentication);

/// A receiver failing twice: tried right after the move, retried by the
/// job once each backoff has passed (not before), delivered exactly once.
async fn a_failing_receiver_is_retried_with_backoff_and_delivered_once(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let mut hook = Receiver::start(2).await;
    let boss = ws_under(&app, "boss", None).await;
    let kid = ws_under(&app, "kid", Some(&boss)).await;
    let tid = send_task(&app, &kid, &boss).await;
    rpc(
        &app,
        &kid,
        &boss.token,
        "CreateTaskPushNotificationConfig",
        bearer_config(&tid, "h", &hook.url),
    )
    .await;
    report(
        &app,
        &kid,
        &tid,
        json!({"status": "failed", "error_detail": "no"}),
    )
    .await;
    assert_eq!(hook.next().await.status, 500);
    tried(&app, &tid, 1).await;
    let row = &outbox(&app, &tid).await[0];
    assert_eq!(
        row.last_error.as_deref(),
        Some("the receiver answered 500 Internal Server Error")
    );
    let now = molecule::domain::now();
    // Within the first backoff (5 s): not due.
    assert_eq!(sweep(&app, now).await, [0, 0, 0, 0]);
    assert!(hook.idle());
    assert_eq!(sweep(&app, now + Span::seconds(6)).await, [0, 1, 0, 0]);
    assert_eq!(hook.next().await.status, 500);
    // The second backoff (10 s) counts from the second try.
    assert_eq!(sweep(&app, now + Span::seconds(12)).await, [0, 0, 0, 0]);
    assert_eq!(sweep(&app, now + Span::seconds(17)).await, [1, 0, 0, 0]);
    let hit = hook.next().await;
    assert_eq!(hit.status, 200);
    assert_eq!(hit.authorization.as_deref(), Some("Bearer s3cret"));
    assert_eq!(hit.body["task"]["status"]["state"], "TASK_STATE_FAILED");
    assert_eq!(
        hit.body["task"]["status"]["message"]["parts"],
        json!([{"text": "no"}])
    );
    assert!(outbox(&app, &tid).await.is_empty());
    assert_eq!(sweep(&app, now + Span::hours(3)).await, [0, 0, 0, 0]);
    assert!(hook.idle(), "delivered once");
}
on_both_engines!(a_failing_receiver_is_retried_with_backoff_and_delivered_once);

/// A receiver that never takes it: given up after ten tries, kept with
/// its last error as the record, purged after the activity retention.
async fn a_notification_is_given_up_after_ten_tries_and_recorded(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let mut hook = Receiver::start(usize::MAX).await;
    let boss = ws_under(&app, "boss", None).await;
    let kid = ws_under(&app, "kid", Some(&boss)).await;
    let tid = send_task(&app, &kid, &boss).await;
    rpc(
        &app,
        &kid,
        &boss.token,
        "CreateTaskPushNotificationConfig",
        bearer_config(&tid, "h", &hook.url),
    )
    .await;
    report(&app, &kid, &tid, json!({"status": "in_progress"})).await;
    hook.next().await;
    tried(&app, &tid, 1).await;
    let now = molecule::domain::now();
    // Tries 2…9 are retried, the 10th gives up (each an hour apart: past
    // any backoff).
    for attempt in 2..=10 {
        let want = if attempt < 10 {
            [0, 1, 0, 0]
        } else {
            [0, 0, 1, 0]
        };
        assert_eq!(
            sweep(&app, now + Span::hours(attempt)).await,
            want,
            "try {attempt}"
        );
        assert_eq!(hook.next().await.status, 500);
    }
    let rows = outbox(&app, &tid).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].attempts, 10);
    assert!(rows[0].gave_up_at.is_some());
    assert_eq!(
        rows[0].last_error.as_deref(),
        Some("the receiver answered 500 Internal Server Error")
    );
    // Given up: never tried again.
    assert_eq!(sweep(&app, now + Span::hours(20)).await, [0, 0, 0, 0]);
    assert!(hook.idle());
    // Purged once the activity retention has passed.
    let retention = Span::from_std(app.config.activity_retention).unwrap();
    assert_eq!(
        sweep(&app, now + Span::hours(10) + retention + Span::hours(1)).await,
        [0, 0, 0, 1]
    );
    assert!(outbox(&app, &tid).await.is_empty());
}
on_both_engines!(a_notification_is_given_up_after_ten_tries_and_recorded);

/// An owed notification is a row: a restarted server sends it.
async fn an_owed_notification_survives_a_restart(engine: Engine) {
    let Some(mut app) = spawn_app(engine).await else {
        return;
    };
    let mut hook = Receiver::start(1).await;
    let boss = ws_under(&app, "boss", None).await;
    let kid = ws_under(&app, "kid", Some(&boss)).await;
    let tid = send_task(&app, &kid, &boss).await;
    rpc(
        &app,
        &kid,
        &boss.token,
        "CreateTaskPushNotificationConfig",
        bearer_config(&tid, "h", &hook.url),
    )
    .await;
    report(
        &app,
        &kid,
        &tid,
        json!({"status": "completed", "result_preview": "4"}),
    )
    .await;
    assert_eq!(hook.next().await.status, 500);
    tried(&app, &tid, 1).await;

    crate::a2a_stream::restart(&mut app).await;
    assert_eq!(
        outbox(&app, &tid).await.len(),
        1,
        "the row outlived the server"
    );
    let at = molecule::domain::now() + Span::minutes(1);
    assert_eq!(sweep(&app, at).await, [1, 0, 0, 0]);
    let hit = hook.next().await;
    assert_eq!(
        (hit.status, hit.authorization.as_deref()),
        (200, Some("Bearer s3cret"))
    );
    assert_eq!(hit.body["task"]["status"]["state"], "TASK_STATE_COMPLETED");
    assert!(outbox(&app, &tid).await.is_empty());
}
on_both_engines!(an_owed_notification_survives_a_restart);

/// A webhook at an internal address is refused when it is set (as a push
/// workspace's URL is), and nothing is stored.
async fn an_internal_address_is_refused_at_create(engine: Engine) {
    let options = Options::new(engine).tweak(|c| c.allow_private_urls = false);
    let Some(app) = spawn_app_with(options).await else {
        return;
    };
    let boss = ws_under(&app, "boss", None).await;
    let kid = ws_under(&app, "kid", Some(&boss)).await;
    let tid = send_task(&app, &kid, &boss).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest",
    ] {
        let answer = rpc(
            &app,
            &kid,
            &boss.token,
            "CreateTaskPushNotificationConfig",
            bearer_config(&tid, "h", url),
        )
        .await;
        assert_eq!(answer["error"]["code"], -32602, "{url}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(
                "`url` is refused: the URL points at a loopback, link-local or private address"
            ),
            "{url}: {message}"
        );
    }
    let listed = rpc(
        &app,
        &kid,
        &boss.token,
        "ListTaskPushNotificationConfigs",
        json!({"taskId": tid}),
    )
    .await;
    assert_eq!(listed["result"]["configs"], json!([]));
}
on_both_engines!(an_internal_address_is_refused_at_create);

/// A config sent with the message (`configuration.taskPushNotificationConfig`,
/// 0.3 `pushNotificationConfig`) is set with the task, in its transaction:
/// the first move is notified; a refused URL makes no task at all.
async fn a_config_sent_with_the_message_is_set_with_the_task(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let mut hook = Receiver::start(0).await;
    let boss = ws_under(&app, "boss", None).await;
    let kid = ws_under(&app, "kid", Some(&boss)).await;
    let sent = rpc(
        &app,
        &kid,
        &boss.token,
        "SendMessage",
        json!({"message": {"messageId": "m-1", "role": "ROLE_USER", "parts": [{"text": "2+2"}]},
            "configuration": {"returnImmediately": true, "taskPushNotificationConfig": {
                "url": hook.url, "authentication": {"scheme": "Bearer", "credentials": "inline"}}}}),
    )
    .await;
    let tid = sent["result"]["task"]["id"].as_str().unwrap().to_owned();
    let listed = rpc(
        &app,
        &kid,
        &boss.token,
        "ListTaskPushNotificationConfigs",
        json!({"taskId": tid}),
    )
    .await;
    let configs = listed["result"]["configs"].as_array().unwrap();
    assert_eq!(configs.len(), 1, "{listed}");
    assert_eq!(
        (&configs[0]["taskId"], &configs[0]["url"]),
        (&json!(tid), &json!(hook.url))
    );
    report(&app, &kid, &tid, json!({"status": "in_progress"})).await;
    let hit = hook.next().await;
    assert_eq!(hit.authorization.as_deref(), Some("Bearer inline"));
    assert_eq!(hit.body["task"]["status"]["state"], "TASK_STATE_WORKING");

    let sent = rpc(
        &app,
        &kid,
        &boss.token,
        "message/send",
        json!({"message": {"kind": "message", "messageId": "m-2", "role": "user",
            "parts": [{"kind": "text", "text": "3+3"}]},
            "configuration": {"blocking": false, "pushNotificationConfig": {"url": hook.url,
                "authentication": {"schemes": ["Bearer"], "credentials": "old"}}}}),
    )
    .await;
    let tid = sent["result"]["id"].as_str().unwrap().to_owned();
    report(&app, &kid, &tid, json!({"status": "in_progress"})).await;
    let hit = hook.next().await;
    assert_eq!(hit.authorization.as_deref(), Some("Bearer old"));
    assert_eq!(
        (&hit.body["kind"], &hit.body["status"]["state"]),
        (&json!("task"), &json!("working"))
    );

    let before = app.get("/admin/delegations", &app.admin_token).await.1;
    let refused = rpc(
        &app,
        &kid,
        &boss.token,
        "SendMessage",
        json!({"message": {"messageId": "m-3", "role": "ROLE_USER", "parts": [{"text": "x"}]},
            "configuration": {"taskPushNotificationConfig": {"url": "ftp://hooks.example.com"}}}),
    )
    .await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    assert_eq!(
        app.get("/admin/delegations", &app.admin_token).await.1,
        before,
        "a refused config made a task"
    );
}
on_both_engines!(a_config_sent_with_the_message_is_set_with_the_task);
