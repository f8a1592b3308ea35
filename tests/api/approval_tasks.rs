//! An A2A task whose agent waits on an approval is `input-required`: the
//! link is the approval request's `task_id`, which names the task (the
//! delegation id) and is made by the task's own agent. GetTask, ListTasks'
//! filter, a blocking send and a task's stream all show it, and the task
//! returns to working once the request is decided — on both engines, and
//! through the official Python client (`a2a-sdk`) over 1.0 and 0.3.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::a2a_stream::A2aStream;
use crate::helpers::{spawn_app, Engine, TestApp, Ws};
use crate::on_both_engines;

/// One JSON-RPC call with `A2A-Version: version`; the `result`, asserted.
async fn call(
    app: &TestApp,
    to: &Ws,
    token: &str,
    version: &str,
    method: &str,
    params: Value,
) -> Value {
    let resp = app
        .client
        .post(app.url(&format!("/workspaces/{}/a2a", to.id)))
        .bearer_auth(token)
        .header("A2A-Version", version)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .unwrap();
    let (status, body) = TestApp::json(resp).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("error").is_none(), "{method}: {body}");
    body["result"].clone()
}

fn message(text: &str) -> Value {
    json!({"messageId": uuid::Uuid::new_v4().to_string(), "role": "ROLE_USER", "parts": [{"text": text}]})
}

/// `from` sends `to` a task without waiting; its id.
async fn send_task(app: &TestApp, from: &Ws, to: &Ws, text: &str) -> String {
    let sent = call(
        app,
        to,
        &from.token,
        "1.0",
        "SendMessage",
        json!({"message": message(text), "configuration": {"returnImmediately": true}}),
    )
    .await;
    sent["task"]["id"].as_str().unwrap().to_owned()
}

/// The task's state as `who` reads it with GetTask (1.0).
async fn state_of(app: &TestApp, agent: &Ws, who: &Ws, tid: &str) -> Value {
    let task = call(app, agent, &who.token, "1.0", "GetTask", json!({"id": tid})).await;
    task["status"].clone()
}

/// `ws` asks for approval; the request's id.
async fn ask(app: &TestApp, ws: &Ws, action: &str, task_id: &str) -> String {
    let (status, body) = app
        .post(
            &format!("/workspaces/{}/approvals", ws.id),
            &ws.token,
            &json!({"action": action, "task_id": task_id}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["approval_id"].as_str().unwrap().to_owned()
}

async fn report(app: &TestApp, agent: &Ws, tid: &str, status: &str) {
    let (code, body) = app
        .post(
            &format!("/workspaces/{}/delegations/{tid}/status", agent.id),
            &agent.token,
            &json!({"status": status, "result_preview": "done"}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
}

async fn decide(app: &TestApp, requester: &Ws, aid: &str, decision: &str) {
    let (status, body) = app
        .post(
            &format!("/workspaces/{}/approvals/{aid}/decide", requester.id),
            &app.admin_token,
            &json!({"decision": decision}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The ids ListTasks (as the agent) gives for `state`.
async fn listed(app: &TestApp, agent: &Ws, state: &str) -> Vec<String> {
    let page = call(
        app,
        agent,
        &agent.token,
        "1.0",
        "ListTasks",
        json!({"status": state}),
    )
    .await;
    page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn get_reads_input_required_until_the_decision(engine: Engine) {
    let Some(mut app) = spawn_app(engine).await else {
        return;
    };
    let boss = app.create_poll_workspace_under("boss", None).await;
    let kid = app.create_poll_workspace_under("kid", Some(&boss)).await;
    let tid = send_task(&app, &boss, &kid, "deploy the site").await;
    let other = send_task(&app, &boss, &kid, "write the notes").await;
    report(&app, &kid, &tid, "in_progress").await;
    report(&app, &kid, &other, "in_progress").await;
    assert_eq!(
        state_of(&app, &kid, &boss, &tid).await["state"],
        "TASK_STATE_WORKING"
    );

    // Only the task's own agent's request names it: the boss asking with
    // the same id, or the agent asking for another id, changes nothing.
    ask(&app, &boss, "unrelated", &tid).await;
    ask(&app, &kid, "something else", "not-a-task").await;
    assert_eq!(
        state_of(&app, &kid, &boss, &tid).await["state"],
        "TASK_STATE_WORKING"
    );

    let aid = ask(&app, &kid, "push to production", &tid).await;
    let status = state_of(&app, &kid, &boss, &tid).await;
    assert_eq!(status["state"], "TASK_STATE_INPUT_REQUIRED", "{status}");
    assert_eq!(status["message"]["role"], "ROLE_AGENT");
    assert_eq!(
        status["message"]["parts"],
        json!([{"text": "waiting for approval: push to production"}])
    );
    // 0.3 names it `input-required`.
    let old = call(
        &app,
        &kid,
        &boss.token,
        "0.3",
        "tasks/get",
        json!({"id": tid}),
    )
    .await;
    assert_eq!(old["status"]["state"], "input-required", "{old}");
    // ListTasks filters by it, and a working filter leaves it out.
    assert_eq!(
        listed(&app, &kid, "TASK_STATE_INPUT_REQUIRED").await,
        [tid.as_str()]
    );
    assert_eq!(
        listed(&app, &kid, "TASK_STATE_WORKING").await,
        [other.as_str()]
    );

    // Decided (denied, say): working again; the agent decides what next.
    decide(&app, &kid, &aid, "denied").await;
    let status = state_of(&app, &kid, &boss, &tid).await;
    assert_eq!(status["state"], "TASK_STATE_WORKING", "{status}");
    assert!(status.get("message").is_none(), "{status}");
    assert!(listed(&app, &kid, "TASK_STATE_INPUT_REQUIRED")
        .await
        .is_empty());

    // A task that is over stays over, whatever its agent asks later.
    report(&app, &kid, &tid, "completed").await;
    ask(&app, &kid, "one more thing", &tid).await;
    assert_eq!(
        state_of(&app, &kid, &boss, &tid).await["state"],
        "TASK_STATE_COMPLETED"
    );
    app.stop().await;
}
on_both_engines!(get_reads_input_required_until_the_decision);

/// A blocking send stops waiting when the task needs input (A2A's
/// "interrupted"), long before its 30 s; the stream of a task shows the
/// state come and go.
async fn a_blocking_send_and_a_stream_see_input_required(engine: Engine) {
    let Some(mut app) = spawn_app(engine).await else {
        return;
    };
    let boss = app.create_poll_workspace_under("boss", None).await;
    let kid = app.create_poll_workspace_under("kid", Some(&boss)).await;
    let started = Instant::now();
    let sending = {
        let url = app.url(&format!("/workspaces/{}/a2a", kid.id));
        let (client, token) = (app.client.clone(), boss.token.clone());
        tokio::spawn(async move {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
                "params": {"message": message("rotate the keys")}});
            let resp = client
                .post(url)
                .bearer_auth(token)
                .header("A2A-Version", "1.0")
                .json(&body)
                .send()
                .await
                .unwrap();
            resp.json::<Value>().await.unwrap()
        })
    };
    // The agent's side: the task arrives (a long poll), it asks.
    let (_, rows) = app.activity(&kid, "type=a2a_receive&wait=20").await;
    let tid = rows[0]["request_body"]["delegation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let aid = ask(&app, &kid, "rotate production keys", &tid).await;
    let answer = sending.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the blocking send waited {:?}",
        started.elapsed()
    );
    assert_eq!(answer["result"]["task"]["id"], tid, "{answer}");
    assert_eq!(
        answer["result"]["task"]["status"]["state"], "TASK_STATE_INPUT_REQUIRED",
        "{answer}"
    );

    // Its stream: the task (input-required), then working on the
    // decision, then completed.
    let mut stream = A2aStream::open(
        &app,
        &kid,
        &boss.token,
        "SubscribeToTask",
        json!({"id": tid}),
    )
    .await;
    let first = stream.next().await.unwrap();
    assert_eq!(
        first["task"]["status"]["state"], "TASK_STATE_INPUT_REQUIRED",
        "{first}"
    );
    decide(&app, &kid, &aid, "approved").await;
    let moved = stream.next().await.unwrap();
    assert_eq!(
        moved["statusUpdate"]["status"]["state"], "TASK_STATE_SUBMITTED",
        "{moved}"
    );
    report(&app, &kid, &tid, "completed").await;
    let mut last = Value::Null;
    while let Some(ev) = stream.next().await {
        last = ev;
    }
    assert_eq!(
        last["statusUpdate"]["status"]["state"], "TASK_STATE_COMPLETED",
        "{last}"
    );
    app.stop().await;
}
on_both_engines!(a_blocking_send_and_a_stream_see_input_required);

/// The official Python client (`a2a-sdk`, unmodified) over `version`'s
/// interface: its blocking send returns the task input-required with the
/// reason, and GetTask reads it submitted again after the decision.
async fn python_client_sees_input_required(engine: Engine, version: &str) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    let Some(python) = crate::clients::python() else {
        return;
    };
    let Some(mut app) = spawn_app(engine).await else {
        return;
    };
    let boss = app.create_poll_workspace_under("boss", None).await;
    let kid = app.create_poll_workspace_under("kid", Some(&boss)).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/a2a_input_required.py"
    );
    let mut client = tokio::process::Command::new(python)
        .arg(script)
        .args([&app.address, &kid.id, &boss.token, version])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(client.stdout.take().unwrap()).lines();
    // The agent's side: the task arrives (a long poll), it asks.
    let (_, rows) = app.activity(&kid, "type=a2a_receive&wait=30").await;
    let tid = rows[0]["request_body"]["delegation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let aid = ask(&app, &kid, "rotate production keys", &tid).await;
    let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the client's send returned in time")
        .unwrap()
        .expect("a line from the client");
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["task_id"], tid);
    decide(&app, &kid, &aid, "approved").await;
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"decided\n").await.unwrap();
    drop(stdin);
    let last = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the client finished in time")
        .unwrap()
        .expect("the client's report");
    let seen: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(
        seen,
        json!({"task_id": tid, "sent_state": "TASK_STATE_INPUT_REQUIRED",
            "sent_status_text": ["waiting for approval: rotate production keys"],
            "after_state": "TASK_STATE_SUBMITTED"})
    );
    assert!(client.wait().await.unwrap().success());
    app.stop().await;
}

async fn python_client_v1(engine: Engine) {
    python_client_sees_input_required(engine, "1.0").await;
}
on_both_engines!(python_client_v1);

async fn python_client_v03(engine: Engine) {
    python_client_sees_input_required(engine, "0.3").await;
}
on_both_engines!(python_client_v03);
