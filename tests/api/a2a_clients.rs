//! A2A end to end with the official clients, unmodified — Python
//! (`a2a-sdk`, over the 1.0 and the 0.3 interface) and JavaScript
//! (`@a2a-js/sdk`): each resolves a poll workspace's card, sends a message
//! that a real `molecule connect --exec` agent answers, gets and lists the
//! task, and cancels a task nobody picked up. The Python client also
//! streams (a send read to its end, a stream left and resubscribed to) and
//! manages push notification configs, receiving the authenticated
//! notification of a move.

use std::process::Stdio;

use serde_json::{json, Value};
use tokio::process::Command;

use crate::clients;
use crate::helpers::{spawn_app, Engine, TestApp, Ws};

async fn child(app: &TestApp, name: &str, parent: Option<&Ws>) -> Ws {
    let mut body = json!({"name": name, "delivery_mode": "poll"});
    if let Some(p) = parent {
        body["parent_id"] = json!(p.id);
    }
    let (_, body) = app.create_workspace(body).await;
    Ws {
        id: body["id"].as_str().unwrap().to_owned(),
        token: body["auth_token"].as_str().unwrap().to_owned(),
    }
}

/// The cast every client test uses: `boss` (whose token the client
/// holds), its child `kid` answered by a real `molecule connect --exec`
/// agent (kept alive by the returned child process), and an `idle` child
/// nobody answers.
struct Cast {
    boss: Ws,
    kid: Ws,
    idle: Ws,
    _agent: tokio::process::Child,
    _dir: tempfile::TempDir,
}

async fn cast(app: &TestApp) -> Cast {
    let boss = child(app, "boss", None).await;
    let kid = child(app, "helper", Some(&boss)).await;
    let idle = child(app, "idle", Some(&boss)).await;
    let dir = tempfile::TempDir::new().unwrap();
    let _agent = Command::new(env!("CARGO_BIN_EXE_molecule"))
        .args([
            "connect",
            "--server",
            &app.address,
            "--workspace",
            &kid.id,
            "--token",
            &kid.token,
        ])
        .arg("--dir")
        .arg(dir.path())
        .args(["--exec", "cat > task.json; echo hello from the agent"])
        .env_remove("MOLECULE_TOKEN")
        .env_remove("MOLECULE_SERVER")
        .env_remove("MOLECULE_WORKSPACE_ID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start molecule connect");
    Cast {
        boss,
        kid,
        idle,
        _agent,
        _dir: dir,
    }
}

/// What the ledger says of task `tid` the client saw completed: one task
/// is one ledger row, with the agent's answer.
async fn ledger_row_is_the_answer(app: &TestApp, cast: &Cast, tid: &str) {
    let (_, row) = app
        .get(
            &format!("/workspaces/{}/delegations/{tid}", cast.kid.id),
            &cast.kid.token,
        )
        .await;
    assert_eq!(
        (row["status"].as_str(), row["result_preview"].as_str()),
        (Some("completed"), Some("hello from the agent"))
    );
}

async fn python_client_round_trip(engine: Engine, version: &str) {
    let Some(python) = clients::python() else {
        return;
    };
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let c = cast(&app).await;
    let (boss, kid, idle) = (&c.boss, &c.kid, &c.idle);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/a2a_tasks.py");
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        Command::new(python)
            .arg(script)
            .args([&app.address, &kid.id, &boss.token, version, &idle.id])
            .output(),
    )
    .await
    .expect("the client finished in time")
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tid = seen["task_id"].as_str().unwrap();
    // The card the agent registered names it.
    let (_, card) = app
        .get(&format!("/workspaces/{}/agent-card", kid.id), &boss.token)
        .await;
    assert_eq!(seen["card_name"], card["name"]);
    assert_eq!(seen["interfaces"], json!([["JSONRPC", version]]));
    assert_eq!(seen["sent_state"], "TASK_STATE_COMPLETED", "{seen}");
    assert_eq!(seen["answer"], json!(["hello from the agent"]));
    assert_eq!(seen["got_state"], "TASK_STATE_COMPLETED");
    if version == "1.0" {
        assert_eq!(seen["listed"], json!([tid]));
    }
    assert_eq!(seen["pending_state"], "TASK_STATE_SUBMITTED");
    assert_eq!(seen["canceled_state"], "TASK_STATE_CANCELED");
    assert_eq!(seen["second_cancel"], "TaskNotCancelableError");
    assert_eq!(seen["unknown_task"], "TaskNotFoundError");
    ledger_row_is_the_answer(&app, &c, tid).await;
}

async fn python_client_v1(engine: Engine) {
    python_client_round_trip(engine, "1.0").await
}
crate::on_both_engines!(python_client_v1);

async fn python_client_v03(engine: Engine) {
    python_client_round_trip(engine, "0.3").await
}
crate::on_both_engines!(python_client_v03);

/// The JavaScript client, over the interface it picks from the card (1.0).
/// It reports its errors as the SDK's own classes: the names asserted.
async fn js_client(engine: Engine) {
    let Some(dir) = clients::js_dir() else {
        return;
    };
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let c = cast(&app).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/js/a2a_tasks.mjs"
    );
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        Command::new("node")
            .current_dir(dir)
            .arg(script)
            .args([&app.address, &c.kid.id, &c.boss.token, &c.idle.id])
            .output(),
    )
    .await
    .expect("the client finished in time")
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tid = seen["task_id"].as_str().unwrap();
    let (_, card) = app
        .get(
            &format!("/workspaces/{}/agent-card", c.kid.id),
            &c.boss.token,
        )
        .await;
    assert_eq!(seen["card_name"], card["name"]);
    assert_eq!(seen["protocol_version"], "1.0");
    assert_eq!(seen["sent_state"], "TASK_STATE_COMPLETED", "{seen}");
    assert_eq!(seen["answer"], json!(["hello from the agent"]));
    assert_eq!(seen["got_state"], "TASK_STATE_COMPLETED");
    assert_eq!(seen["listed"], json!([tid]));
    assert_eq!(seen["pending_state"], "TASK_STATE_SUBMITTED");
    assert_eq!(seen["canceled_state"], "TASK_STATE_CANCELED");
    assert_eq!(seen["second_cancel"], "JsonRpcTaskNotCancelableError");
    assert_eq!(seen["unknown_task"], "JsonRpcTaskNotFoundError");
    // The streamed task: submitted, picked up (a status the stream may
    // pass over when the agent answers at once: each event carries the
    // row as it is when read), answered, over.
    let mut streamed = seen["streamed"].as_array().unwrap().clone();
    streamed.retain(|e| *e != json!(["status", "TASK_STATE_WORKING"]));
    assert_eq!(
        streamed,
        vec![
            json!(["task", "TASK_STATE_SUBMITTED"]),
            json!(["artifact", "hello from the agent"]),
            json!(["status", "TASK_STATE_COMPLETED"])
        ],
        "{seen}"
    );
    ledger_row_is_the_answer(&app, &c, tid).await;
}
crate::on_both_engines!(js_client);

/// Push notification configs with the Python client: set (with Bearer
/// authentication), get, list and delete; the cancel's move reaches the
/// script's own receiver with the credentials and token.
async fn python_client_push(engine: Engine, version: &str) {
    let Some(python) = clients::python() else {
        return;
    };
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let boss = child(&app, "boss", None).await;
    let idle = child(&app, "idle", Some(&boss)).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/a2a_push.py");
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        Command::new(python)
            .arg(script)
            .args([&app.address, &idle.id, &boss.token, version])
            .output(),
    )
    .await
    .expect("the client finished in time")
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (tid, hook) = (&seen["task_id"], &seen["hook_url"]);
    assert_eq!(seen["push_capability"], true);
    assert_eq!(seen["created"], json!(["hook-1", hook, "tok-1", "Bearer"]));
    assert_eq!(seen["got"], json!(["hook-1", hook]));
    assert_eq!(seen["listed"], json!(["hook-1"]));
    assert_eq!(seen["canceled_state"], "TASK_STATE_CANCELED");
    let state = if version == "1.0" {
        "TASK_STATE_CANCELED"
    } else {
        "canceled"
    };
    assert_eq!(
        seen["notification"],
        json!({"authorization": "Bearer s3cret", "token": "tok-1", "task_id": tid, "state": state})
    );
    assert_eq!(seen["after_delete"], json!([]));
}

async fn python_client_push_v1(engine: Engine) {
    python_client_push(engine, "1.0").await
}
crate::on_both_engines!(python_client_push_v1);

async fn python_client_push_v03(engine: Engine) {
    python_client_push(engine, "0.3").await
}
crate::on_both_engines!(python_client_push_v03);

/// Push notification configs with the JavaScript client: create (with
/// Bearer authentication), get, list and delete; the cancel's move reaches
/// the script's own receiver with the credentials and token.
async fn js_client_push(engine: Engine) {
    let Some(dir) = clients::js_dir() else {
        return;
    };
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let boss = child(&app, "boss", None).await;
    let idle = child(&app, "idle", Some(&boss)).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/js/a2a_push.mjs");
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        Command::new("node")
            .current_dir(dir)
            .arg(script)
            .args([&app.address, &idle.id, &boss.token])
            .output(),
    )
    .await
    .expect("the client finished in time")
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (tid, hook) = (&seen["task_id"], &seen["hook_url"]);
    assert_eq!(seen["push_capability"], true);
    assert_eq!(seen["created"], json!(["hook-1", hook, "tok-1", "Bearer"]));
    assert_eq!(seen["got"], json!(["hook-1", hook]));
    assert_eq!(seen["listed"], json!(["hook-1"]));
    assert_eq!(seen["canceled_state"], "TASK_STATE_CANCELED");
    assert_eq!(
        seen["notification"],
        json!({"authorization": "Bearer s3cret", "token": "tok-1", "task_id": tid, "state": "TASK_STATE_CANCELED"})
    );
    assert_eq!(seen["after_delete"], json!([]));
}
crate::on_both_engines!(js_client_push);

/// Streaming with the Python client: a streaming send answered by the
/// real agent, read to its end; a stream left after its first event and
/// resubscribed to, which sees the task canceled and ends.
async fn python_client_streams(engine: Engine, version: &str) {
    let Some(python) = clients::python() else {
        return;
    };
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let c = cast(&app).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/a2a_stream.py");
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        Command::new(python)
            .arg(script)
            .args([&app.address, &c.kid.id, &c.boss.token, version, &c.idle.id])
            .output(),
    )
    .await
    .expect("the client finished in time")
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The task (submitted, or already picked up when the agent was quicker
    // than the first read), picked up (a status the stream may pass over
    // when the agent answers at once), answered, over.
    let mut streamed = seen["streamed"].as_array().unwrap().clone();
    if streamed.first() == Some(&json!(["task", "TASK_STATE_WORKING"])) {
        streamed[0] = json!(["task", "TASK_STATE_SUBMITTED"]);
    }
    streamed.retain(|e| *e != json!(["status", "TASK_STATE_WORKING"]));
    assert_eq!(
        streamed,
        vec![
            json!(["task", "TASK_STATE_SUBMITTED"]),
            json!(["artifact", "hello from the agent"]),
            json!(["status", "TASK_STATE_COMPLETED"])
        ],
        "{seen}"
    );
    ledger_row_is_the_answer(&app, &c, seen["task_id"].as_str().unwrap()).await;
    assert_eq!(seen["first"], json!(["task", "TASK_STATE_SUBMITTED"]));
    assert_eq!(
        seen["resubscribed"],
        json!([
            ["task", "TASK_STATE_SUBMITTED"],
            ["status", "TASK_STATE_CANCELED"]
        ]),
        "{seen}"
    );
    let (_, row) = app
        .get(
            &format!(
                "/workspaces/{}/delegations/{}",
                c.idle.id,
                seen["idle_task_id"].as_str().unwrap()
            ),
            &app.admin_token,
        )
        .await;
    assert_eq!(row["status"], "failed", "{row}");
}

async fn python_client_streams_v1(engine: Engine) {
    python_client_streams(engine, "1.0").await
}
crate::on_both_engines!(python_client_streams_v1);

async fn python_client_streams_v03(engine: Engine) {
    python_client_streams(engine, "0.3").await
}
crate::on_both_engines!(python_client_streams_v03);
