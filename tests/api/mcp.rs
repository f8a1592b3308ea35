//! The MCP bridge (`/workspaces/:id/mcp`), driven by the official Python
//! `mcp` client (tests/clients/mcp_session.py) over both transports and both
//! connect policies, plus raw JSON-RPC where a case is about the wire
//! itself (the token-binding rule, a 2024-11-05 handshake, an unknown
//! method, the rate limit's 429). The delegation round trip has a real
//! `molecule connect --exec` agent as the callee.

use std::process::Stdio;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::clients;
use crate::helpers::{spawn_app, spawn_app_with, Engine, Options, TestApp, Ws};
use crate::on_both_engines;
use molecule::rate::Rate;

/// The ten tools, in the order the server lists them.
const TOOLS: [&str; 10] = [
    "list_peers",
    "get_workspace_info",
    "delegate_task",
    "delegate_task_async",
    "check_task_status",
    "send_message_to_user",
    "commit_memory",
    "recall_memory",
    "request_approval",
    "check_approval",
];

pub(crate) fn mcp_url(app: &TestApp, ws: &Ws) -> String {
    app.url(&format!("/workspaces/{}/mcp", ws.id))
}

/// Runs one plan through the Python client; its JSON report.
async fn run_client(plan: Value) -> Option<Value> {
    run_script("mcp_session.py", plan).await
}

/// Runs one plan through a client script of tests/clients; its JSON report.
pub(crate) async fn run_script(name: &str, plan: Value) -> Option<Value> {
    let python = clients::python()?;
    let script = format!("{}/tests/clients/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the MCP client");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(plan.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("the MCP client ran past 90 s")
        .unwrap();
    assert!(
        out.status.success(),
        "the MCP client failed on {plan}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("the client's JSON report"))
}

/// One tool result's text parsed as JSON, asserting it is not an error.
pub(crate) fn ok_json(result: &Value, what: &str) -> Value {
    assert_eq!(result["is_error"], false, "{what}: {result}");
    serde_json::from_str(result["text"].as_str().unwrap()).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// One raw JSON-RPC POST to `/workspaces/:path_ws/mcp`.
async fn rpc(
    app: &TestApp,
    path_ws: &str,
    token: &str,
    body: Value,
) -> (StatusCode, HeaderMap, Value) {
    let resp = app
        .client
        .post(app.url(&format!("/workspaces/{path_ws}/mcp")))
        .bearer_auth(token)
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2024-11-05")
        .json(&body)
        .send()
        .await
        .unwrap();
    let headers = resp.headers().clone();
    let (status, value) = TestApp::json(resp).await;
    (status, headers, value)
}

/// Workspace A (a root), B (another root, its sibling) and C (A's child).
async fn team(app: &TestApp) -> (Ws, Ws, Ws) {
    let a = app.create_poll_workspace("alpha").await;
    let b = app.create_poll_workspace("beta").await;
    let (status, body) = app
        .create_workspace(json!({"name": "gamma", "delivery_mode": "poll", "parent_id": a.id}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let c = Ws {
        id: body["id"].as_str().unwrap().to_owned(),
        token: body["auth_token"].as_str().unwrap().to_owned(),
    };
    (a, b, c)
}

on_both_engines!(every_tool_answers_through_the_official_client);
async fn every_tool_answers_through_the_official_client(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (a, b, c) = team(&app).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let calls = json!([
        {"tool": "list_peers", "args": {}},
        {"tool": "get_workspace_info", "args": {}},
        {"tool": "commit_memory", "args": {"content": "the deploy key lives in vault", "scope": "TEAM"}},
        {"tool": "recall_memory", "args": {"query": "deploy key"}},
        {"tool": "send_message_to_user", "args": {"message": "hello from MCP"}},
        {"tool": "delegate_task_async", "args": {"workspace_id": b.id, "task": "index the wiki"}},
        {"tool": "delegate_task_async", "args": {"workspace_id": b.id, "task": "index the wiki"}},
        {"tool": "check_task_status", "args": {"task_id": unknown}},
        {"tool": "delegate_task", "args": {"workspace_id": a.id, "task": "talk to myself"}},
        {"tool": "no_such_tool", "args": {}},
        {"tool": "list_peers", "args": {"verbose": true}},
        {"tool": "delegate_task", "args": {"workspace_id": b.id}},
        {"tool": "commit_memory", "args": {"content": 42}},
    ]);
    let plan = json!({"url": mcp_url(&app, &a), "token": a.token, "mode": "auto", "calls": calls});
    let Some(report) = run_client(plan).await else {
        return;
    };

    assert_eq!(report["protocol_version"], "2026-07-28", "{report}");
    assert_eq!(report["server_name"], "molecule");
    let names: Vec<&str> = report["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, TOOLS);
    let delegate = &report["tools"][2]["input_schema"];
    assert_eq!(delegate["required"], json!(["workspace_id", "task"]));

    let r = report["results"].as_array().unwrap();
    let peers = ok_json(&r[0], "list_peers");
    let mut peer_ids: Vec<&str> = peers
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    peer_ids.sort();
    let mut want = vec![b.id.as_str(), c.id.as_str()];
    want.sort();
    assert_eq!(peer_ids, want, "A reaches its sibling B and its child C");

    let info = ok_json(&r[1], "get_workspace_info");
    assert_eq!(
        (info["id"].as_str(), info["name"].as_str()),
        (Some(a.id.as_str()), Some("alpha"))
    );
    assert_eq!(info["parent_id"], Value::Null);

    let committed = ok_json(&r[2], "commit_memory");
    assert_eq!(committed["scope"], "TEAM");
    let recalled = ok_json(&r[3], "recall_memory");
    assert_eq!(
        recalled[0]["content"], "the deploy key lives in vault",
        "{recalled}"
    );

    let sent = ok_json(&r[4], "send_message_to_user");
    let (_, rows) = app
        .get(
            &format!("/workspaces/{}/activity?type=agent_message", a.id),
            &app.admin_token,
        )
        .await;
    let row = &rows.as_array().unwrap()[0];
    assert_eq!(row["id"], sent["activity_id"]);
    assert_eq!(row["data"]["text"], "hello from MCP", "{row}");

    let first = ok_json(&r[5], "delegate_task_async");
    let again = ok_json(&r[6], "delegate_task_async again");
    assert_eq!(first["status"], "queued");
    assert_eq!(
        (
            first["deduplicated"].as_bool(),
            again["deduplicated"].as_bool()
        ),
        (Some(false), Some(true))
    );
    assert_eq!(first["task_id"], again["task_id"], "idempotent per call");
    let (_, ledger) = app
        .get(
            &format!("/workspaces/{}/delegations?role=callee", b.id),
            &b.token,
        )
        .await;
    assert_eq!(ledger.as_array().unwrap().len(), 1, "{ledger}");

    assert_eq!(r[7]["is_error"], true, "an unknown task: {}", r[7]);
    assert_eq!(r[7]["text"], format!("no task {unknown} of this workspace"));
    assert_eq!(r[8]["is_error"], true);
    assert_eq!(r[8]["text"], "a workspace cannot delegate to itself");
    assert_eq!(r[9]["error"]["code"], -32602, "unknown tool: {}", r[9]);
    assert_eq!(r[9]["error"]["message"], "Unknown tool: no_such_tool");
    for (i, what) in [
        (10, "an unknown argument"),
        (11, "a missing task"),
        (12, "a mistyped content"),
    ] {
        assert_eq!(r[i]["error"]["code"], -32602, "{what}: {}", r[i]);
    }

    // The same tools from C: its task status of A's delegation is not its
    // business, and GLOBAL memory is for roots only.
    let did = first["task_id"].as_str().unwrap();
    let plan = json!({"url": mcp_url(&app, &c), "token": c.token, "mode": "legacy", "ping": true,
    "calls": [
        {"tool": "check_task_status", "args": {"task_id": did}},
        {"tool": "commit_memory", "args": {"content": "everyone should know", "scope": "GLOBAL"}},
    ]});
    let report = run_client(plan).await.unwrap();
    assert_eq!(
        report["protocol_version"], "2025-11-25",
        "the initialize handshake: {report}"
    );
    assert_eq!(report["ping"], true);
    let r = report["results"].as_array().unwrap();
    assert_eq!(r[0]["text"], format!("no task {did} of this workspace"));
    assert_eq!(r[1]["is_error"], true);
    assert_eq!(
        r[1]["text"],
        "only a root workspace or the operator may write GLOBAL memories"
    );
    let (_, global) = app
        .get(
            &format!("/workspaces/{}/memories?scope=GLOBAL", c.id),
            &c.token,
        )
        .await;
    assert_eq!(global, json!([]), "nothing written");

    // B, through the legacy HTTP+SSE transport, sees the task as callee.
    let plan = json!({"url": app.url(&format!("/workspaces/{}/mcp/stream", b.id)), "token": b.token,
        "transport": "sse", "mode": "legacy",
        "calls": [{"tool": "check_task_status", "args": {"task_id": did}}]});
    let report = run_client(plan).await.unwrap();
    assert_eq!(
        report["tools"].as_array().unwrap().len(),
        TOOLS.len(),
        "{report}"
    );
    let status = ok_json(&report["results"][0], "check_task_status over SSE");
    assert_eq!(status["status"], "queued");
    assert_eq!(status["workspace_id"], b.id.as_str());
    assert_eq!(status["heartbeat_age_s"], Value::Null);

    let text = app.metrics_text().await;
    assert!(
        text.contains(
            "molecule_mcp_tool_calls_total{outcome=\"ok\",tool=\"delegate_task_async\"} 2"
        ),
        "{text}"
    );
}

on_both_engines!(the_token_binds_to_its_own_workspace_and_the_wire_errors_have_their_codes);
async fn the_token_binds_to_its_own_workspace_and_the_wire_errors_have_their_codes(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("alpha").await;
    let b = app.create_poll_workspace("beta").await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2024-11-05", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}}});

    for (who, token, want) in [
        (
            "another workspace's token",
            b.token.as_str(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "the operator",
            app.admin_token.as_str(),
            StatusCode::FORBIDDEN,
        ),
        ("an unknown token", "nope", StatusCode::UNAUTHORIZED),
    ] {
        let (status, _, body) = rpc(&app, &a.id, token, init.clone()).await;
        assert_eq!(status, want, "{who}: {body}");
        assert!(
            body["error"].is_string(),
            "{who}: the API's error shape: {body}"
        );
    }
    let stream = app
        .client
        .get(app.url(&format!("/workspaces/{}/mcp/stream", a.id)))
        .bearer_auth(&b.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        stream.status(),
        StatusCode::UNAUTHORIZED,
        "the SSE transport too"
    );

    let (status, _, body) = rpc(&app, &a.id, &a.token, init).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["result"]["protocolVersion"], "2024-11-05",
        "negotiated: {body}"
    );
    assert_eq!(body["result"]["serverInfo"]["name"], "molecule");

    let (status, _, body) = rpc(
        &app,
        &a.id,
        &a.token,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/frobnicate"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["error"]["code"], -32601, "unknown method: {body}");
    assert_eq!(body["id"], 2);
}

on_both_engines!(a_token_over_its_rate_gets_429_with_retry_after_and_is_counted);
async fn a_token_over_its_rate_gets_429_with_retry_after_and_is_counted(engine: Engine) {
    let options = Options::new(engine).tweak(|c| {
        c.mcp_rate_limit = Some(Rate::new(3, Duration::from_secs(3600)));
        c.mcp_send_message_to_user = false;
    });
    let Some(app) = spawn_app_with(options).await else {
        return;
    };
    let a = app.create_poll_workspace("alpha").await;
    let b = app.create_poll_workspace("beta").await;
    let list = |id: i64| json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"});

    let (status, _, body) = rpc(&app, &a.id, &a.token, list(1)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: Vec<&str> = body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.contains(&"send_message_to_user"),
        "hidden by the flag: {names:?}"
    );
    assert_eq!(names.len(), 9);
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "send_message_to_user", "arguments": {"message": "hi"}}});
    let (_, _, body) = rpc(&app, &a.id, &a.token, call).await;
    assert_eq!(body["error"]["code"], -32602, "{body}");
    let (_, rows) = app
        .get(
            &format!("/workspaces/{}/activity?type=agent_message", a.id),
            &a.token,
        )
        .await;
    assert_eq!(rows, json!([]), "nothing sent");

    let (status, _, _) = rpc(&app, &a.id, &a.token, list(3)).await;
    assert_eq!(status, StatusCode::OK, "the third call is within the limit");
    let (status, headers, body) = rpc(&app, &a.id, &a.token, list(4)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    // A token bucket of 3 refills one call every 3600 s / 3.
    assert!((1190..=1200).contains(&retry), "Retry-After {retry}");
    assert_eq!(body["id"], 4);
    assert_eq!(body["error"]["code"], -32029, "{body}");
    assert_eq!(body["error"]["data"]["retry_after_s"], retry);
    assert_eq!(app.metric("molecule_mcp_rate_limited_total").await, 1.0);

    let (status, _, _) = rpc(&app, &b.id, &b.token, list(1)).await;
    assert_eq!(status, StatusCode::OK, "another token has its own window");
}

on_both_engines!(delegate_task_returns_the_answer_of_a_real_connect_agent);
async fn delegate_task_returns_the_answer_of_a_real_connect_agent(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    if clients::python().is_none() {
        return;
    }
    let a = app.create_poll_workspace("alpha").await;
    let b = app.create_poll_workspace("beta").await;
    let dir = tempfile::tempdir().unwrap();
    let exec = r#"cat > task.json; echo "B did: $(grep -o 'summarize[a-z ]*' task.json)""#;
    let _callee = Command::new(env!("CARGO_BIN_EXE_molecule"))
        .args([
            "connect",
            "--server",
            &app.address,
            "--workspace",
            &b.id,
            "--dir",
        ])
        .arg(dir.path())
        .args(["--exec", exec])
        .env("MOLECULE_TOKEN", &b.token)
        .env_remove("MOLECULE_SERVER")
        .env_remove("MOLECULE_WORKSPACE_ID")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start molecule connect");

    let plan = json!({"url": mcp_url(&app, &a), "token": a.token, "list": false, "calls": [
        {"tool": "delegate_task", "args": {"workspace_id": b.id, "task": "summarize the notes"}}]});
    let report = run_client(plan).await.unwrap();
    let answer = ok_json(&report["results"][0], "delegate_task");
    assert_eq!(answer["status"], "completed", "{answer}");
    assert_eq!(answer["result"], "B did: summarize the notes");
    assert_eq!(answer["still_running"], Value::Null);
    let did = answer["task_id"].as_str().unwrap();
    let (_, row) = app
        .get(&format!("/workspaces/{}/delegations/{did}", a.id), &a.token)
        .await;
    assert_eq!(row["status"], "completed", "{row}");
    assert_eq!(row["caller_id"], a.id.as_str());
}

/// `tools/call` of `tool` by `ws` over raw JSON-RPC: the result's text,
/// parsed, asserting the call succeeded.
async fn call_tool(app: &TestApp, ws: &Ws, tool: &str, args: Value) -> Value {
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": tool, "arguments": args}});
    let (status, _, body) = rpc(app, &ws.id, &ws.token, call).await;
    assert_eq!(status, StatusCode::OK, "{tool}: {body}");
    assert_eq!(body["result"]["isError"], false, "{tool}: {body}");
    serde_json::from_str(body["result"]["content"][0]["text"].as_str().unwrap()).unwrap()
}

/// What `ws` sees through `list_peers` (names) and `recall_memory` in
/// TEAM scope (contents, sorted), each asked twice: the second answer
/// comes through the server's reach cache.
async fn seen_by(app: &TestApp, ws: &Ws) -> (Vec<String>, Vec<String>) {
    let mut answers = Vec::new();
    for _ in 0..2 {
        let peers = call_tool(app, ws, "list_peers", json!({})).await;
        let names = peers.as_array().unwrap().iter();
        let names: Vec<String> = names
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        let recalled = call_tool(
            app,
            ws,
            "recall_memory",
            json!({"query": "deploy", "scope": "TEAM"}),
        )
        .await;
        let mut facts: Vec<String> = recalled
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect();
        facts.sort();
        answers.push((names, facts));
    }
    assert_eq!(answers[0], answers[1], "asked twice");
    answers.pop().unwrap()
}

on_both_engines!(list_peers_and_team_recall_see_each_tree_change_at_once);
async fn list_peers_and_team_recall_see_each_tree_change_at_once(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (a, b, c) = team(&app).await;
    let d = app.create_poll_workspace("delta").await;
    for (ws, name) in [(&a, "alpha"), (&b, "beta"), (&c, "gamma"), (&d, "delta")] {
        let body = json!({"content": format!("{name} deploy fact"), "scope": "TEAM"});
        let (status, body) = app
            .post(&format!("/workspaces/{}/memories", ws.id), &ws.token, &body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let facts = |names: &[&str]| -> Vec<String> {
        let mut f: Vec<String> = names.iter().map(|n| format!("{n} deploy fact")).collect();
        f.sort();
        f
    };
    let strings = |names: &[&str]| -> Vec<String> { names.iter().map(|n| n.to_string()).collect() };
    assert_eq!(
        seen_by(&app, &a).await,
        (
            strings(&["beta", "gamma", "delta"]),
            facts(&["alpha", "beta", "gamma", "delta"])
        )
    );
    assert_eq!(
        seen_by(&app, &c).await,
        (strings(&["alpha"]), facts(&["alpha", "gamma"]))
    );

    // A move: gamma from alpha to beta.
    let (status, body) = app
        .send_json(
            reqwest::Method::PATCH,
            &format!("/workspaces/{}", c.id),
            &app.admin_token,
            Some(&json!({"parent_id": b.id})),
        )
        .await;
    assert_eq!(
        (status, &body["parent_id"]),
        (StatusCode::OK, &json!(b.id)),
        "{body}"
    );
    assert_eq!(
        seen_by(&app, &a).await,
        (
            strings(&["beta", "delta"]),
            facts(&["alpha", "beta", "delta"])
        )
    );
    assert_eq!(
        seen_by(&app, &c).await,
        (strings(&["beta"]), facts(&["beta", "gamma"]))
    );

    // A new sibling of gamma, under beta.
    let e = app.create_poll_workspace_under("epsilon", Some(&b)).await;
    let body = json!({"content": "epsilon deploy fact", "scope": "TEAM"});
    let (status, _) = app
        .post(&format!("/workspaces/{}/memories", e.id), &e.token, &body)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        seen_by(&app, &c).await,
        (
            strings(&["beta", "epsilon"]),
            facts(&["beta", "epsilon", "gamma"])
        )
    );

    // A removal: beta with its team.
    let (status, body) = app
        .send_json(
            reqwest::Method::DELETE,
            &format!("/workspaces/{}?cascade=true", b.id),
            &app.admin_token,
            None,
        )
        .await;
    assert!(status.is_success(), "{status}: {body}");
    assert_eq!(
        seen_by(&app, &a).await,
        (strings(&["delta"]), facts(&["alpha", "delta"]))
    );
    assert_eq!(
        seen_by(&app, &d).await,
        (strings(&["alpha"]), facts(&["alpha", "delta"]))
    );
    // The removed ones are refused, as before.
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "list_peers", "arguments": {}}});
    let (status, _, _) = rpc(&app, &c.id, &c.token, call).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
