//! MCP Tasks (the `io.modelcontextprotocol/tasks` extension of the current
//! revision) and the approval tools, driven by the official Python `mcp`
//! client (tests/clients/mcp_tasks.py adds the extension through the
//! package's public extension API; tests/clients/mcp_session.py is the
//! client without it). A task is a ledger row or an approval request, so
//! each plan runs in a fresh client process and finds the task by id.

use std::process::Stdio;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::process::Command;

use crate::a2a_stream::restart;
use crate::clients;
use crate::helpers::{spawn_app, Engine, TestApp, Ws};
use crate::mcp::{mcp_url, ok_json, run_script};
use crate::on_both_engines;

const TASKS: &str = "io.modelcontextprotocol/tasks";

/// Runs `steps` as workspace `ws` with the tasks extension; the results.
async fn steps(app: &TestApp, ws: &Ws, steps: Value) -> Option<Vec<Value>> {
    let plan = json!({"url": mcp_url(app, ws), "token": ws.token, "steps": steps});
    let report = run_script("mcp_tasks.py", plan).await?;
    assert_eq!(report["protocol_version"], "2026-07-28", "{report}");
    assert_eq!(
        report["capabilities"]["extensions"][TASKS],
        json!({}),
        "the server advertises the tasks extension: {report}"
    );
    Some(report["results"].as_array().unwrap().clone())
}

/// A task's inlined tool result, parsed.
fn task_result(task: &Value) -> Value {
    let text = task["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{task}"));
    serde_json::from_str(text).unwrap()
}

/// Starts `molecule connect --exec` for `ws` answering "B did: …" once the
/// file `gate` exists.
fn connect_agent(
    app: &TestApp,
    ws: &Ws,
    dir: &std::path::Path,
    gate: &std::path::Path,
) -> tokio::process::Child {
    let exec = format!(
        r#"cat > task.json; while [ ! -f '{}' ]; do sleep 0.05; done; echo "B did: $(grep -o 'summarize[a-z ]*' task.json)""#,
        gate.display()
    );
    Command::new(env!("CARGO_BIN_EXE_molecule"))
        .args([
            "connect",
            "--server",
            &app.address,
            "--workspace",
            &ws.id,
            "--dir",
        ])
        .arg(dir)
        .args(["--exec", &exec])
        .env("MOLECULE_TOKEN", &ws.token)
        .env_remove("MOLECULE_SERVER")
        .env_remove("MOLECULE_WORKSPACE_ID")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start molecule connect")
}

on_both_engines!(
    a_delegation_task_goes_working_then_completed_with_a_connect_agent_across_a_restart
);
async fn a_delegation_task_goes_working_then_completed_with_a_connect_agent_across_a_restart(
    engine: Engine,
) {
    let Some(mut app) = spawn_app(engine).await else {
        return;
    };
    if clients::python().is_none() {
        return;
    }
    let a = app.create_poll_workspace("alpha").await;
    let b = app.create_poll_workspace("beta").await;
    let created = steps(&app, &a, json!([
        {"op": "call", "tool": "delegate_task", "args": {"workspace_id": b.id, "task": "summarize the notes"}},
        {"op": "get", "task": "$task"}]))
    .await
    .unwrap();
    let handle = &created[0]["task"];
    assert_eq!(handle["resultType"], "task", "{handle}");
    assert_eq!(handle["status"], "working", "{handle}");
    assert_eq!(handle["pollIntervalMs"], 1000);
    let tid = handle["taskId"].as_str().unwrap().to_owned();
    let got = &created[1]["task"];
    assert_eq!(got["taskId"], tid.as_str());
    assert_eq!(got["status"], "working", "{got}");
    assert_eq!(got["statusMessage"], "the delegation is queued");
    assert_eq!(got["result"], Value::Null);

    // The task is the ledger row: it outlives the server process.
    restart(&mut app).await;
    let (status, row) = app
        .get(&format!("/workspaces/{}/delegations/{tid}", a.id), &a.token)
        .await;
    assert_eq!(status, StatusCode::OK, "{row}");
    assert_eq!(row["caller_id"], a.id.as_str());

    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("go");
    let _agent = connect_agent(&app, &b, dir.path(), &gate);
    let done = steps(&app, &a, json!([
        {"op": "until", "task": tid, "statuses": ["working"], "timeout_s": 5},
        {"op": "touch", "path": gate},
        {"op": "until", "task": tid, "statuses": ["completed", "failed", "cancelled"], "timeout_s": 30},
        {"op": "call_resolved", "tool": "delegate_task", "args": {"workspace_id": b.id, "task": "summarize the wiki"}}]))
    .await
    .unwrap();
    assert_eq!(done[0]["task"]["status"], "working", "{:?}", done[0]);
    let finished = &done[2]["task"];
    assert_eq!(finished["status"], "completed", "{finished}");
    assert_eq!(finished["resultType"], "complete");
    let answer = task_result(finished);
    assert_eq!(answer["task_id"], tid.as_str());
    assert_eq!(answer["status"], "completed");
    assert_eq!(answer["result"], "B did: summarize the notes");
    // The client's own resolution of a task handle (the claim polls
    // tasks/get to the end) yields the plain tool result.
    let resolved = ok_json(&done[3], "call_resolved");
    assert_eq!(resolved["status"], "completed", "{resolved}");
    assert_eq!(resolved["result"], "B did: summarize the wiki");

    let (_, row) = app
        .get(&format!("/workspaces/{}/delegations/{tid}", a.id), &a.token)
        .await;
    assert_eq!(row["status"], "completed", "{row}");
}

on_both_engines!(a_canceled_task_reads_cancelled_and_the_callee_is_told);
async fn a_canceled_task_reads_cancelled_and_the_callee_is_told(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    if clients::python().is_none() {
        return;
    }
    let a = app.create_poll_workspace("alpha").await;
    let b = app.create_poll_workspace("beta").await;
    let r = steps(&app, &a, json!([
        {"op": "call", "tool": "delegate_task", "args": {"workspace_id": b.id, "task": "deploy the site"}},
        {"op": "call", "tool": "delegate_task", "args": {"workspace_id": b.id, "task": "resize the disk"}}]))
    .await
    .unwrap();
    let tid = r[0]["task"]["taskId"].as_str().unwrap().to_owned();
    let failing = r[1]["task"]["taskId"].as_str().unwrap().to_owned();
    // The second one the callee takes up and then gives up on.
    for report in [
        json!({"status": "in_progress"}),
        json!({"status": "failed", "error_detail": "disk full"}),
    ] {
        let (status, moved) = app
            .post(
                &format!("/workspaces/{}/delegations/{failing}/status", b.id),
                &b.token,
                &report,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{moved}");
    }

    // The callee asks for approval on this very delegation: to its caller
    // the task is waiting for input.
    let (status, asked) = app
        .post(
            &format!("/workspaces/{}/approvals", b.id),
            &b.token,
            &json!({"action": "deploy to production", "task_id": tid}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{asked}");

    let r = steps(
        &app,
        &a,
        json!([
        {"op": "get", "task": tid},
        {"op": "cancel", "task": tid},
        {"op": "get", "task": tid},
        {"op": "cancel", "task": tid},
        {"op": "get", "task": failing}]),
    )
    .await
    .unwrap();
    let failed = &r[4]["task"];
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["statusMessage"], "disk full");
    assert_eq!(failed["error"]["code"], -32000);
    assert_eq!(
        failed["error"]["message"],
        "the delegation failed: disk full"
    );
    assert_eq!(failed["error"]["data"]["status"], "failed");
    assert_eq!(failed["result"], Value::Null);
    assert_eq!(r[0]["task"]["status"], "input_required", "{:?}", r[0]);
    assert_eq!(r[0]["task"]["inputRequests"], json!({}));
    assert_eq!(
        r[0]["task"]["statusMessage"],
        "the peer waits for an approval decision: deploy to production"
    );
    assert_eq!(r[1], json!({"ok": true}));
    assert_eq!(r[2]["task"]["status"], "cancelled", "{:?}", r[2]);
    assert_eq!(r[2]["task"]["result"], Value::Null);
    assert_eq!(r[3]["error"]["code"], -32602, "{:?}", r[3]);
    assert_eq!(
        r[3]["error"]["message"],
        format!("task {tid} is over already: failed")
    );

    let (_, row) = app
        .get(&format!("/workspaces/{}/delegations/{tid}", a.id), &a.token)
        .await;
    assert_eq!(row["status"], "failed", "{row}");
    assert_eq!(row["error_detail"], "canceled by the caller");
    let (_, inbox) = app.activity(&b, "type=a2a_receive").await;
    let notices: Vec<&Value> = inbox
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["method"] == "task_canceled")
        .collect();
    assert_eq!(notices.len(), 1, "the callee is told once: {inbox}");
    assert_eq!(notices[0]["source_id"], a.id.as_str());
    let (_, audit) = app
        .get(
            &format!("/workspaces/{}/audit?action=delegation.canceled", a.id),
            &a.token,
        )
        .await;
    let events = audit["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "one cancel applied, one refused: {audit}");
    assert_eq!(events[0]["actor"], format!("workspace:{}", a.id));
    assert_eq!(events[0]["target"], format!("delegation:{tid}"));
}

on_both_engines!(unknown_and_foreign_task_ids_are_refused_and_change_nothing);
async fn unknown_and_foreign_task_ids_are_refused_and_change_nothing(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    if clients::python().is_none() {
        return;
    }
    let a = app.create_poll_workspace("alpha").await;
    let b = app.create_poll_workspace("beta").await;
    let c = app.create_poll_workspace("gamma").await;
    // C's own task (a delegation to B) and C's approval request.
    let r = steps(&app, &c, json!([
        {"op": "call", "tool": "delegate_task", "args": {"workspace_id": b.id, "task": "count the rows"}},
        {"op": "call", "tool": "request_approval", "args": {"action": "drop the table"}},
        {"op": "update", "task": "$task", "responses": {"k": {"action": "accept"}}}]))
    .await
    .unwrap();
    let foreign = r[0]["task"]["taskId"].as_str().unwrap().to_owned();
    let foreign_approval = r[1]["task"]["taskId"].as_str().unwrap().to_owned();
    // Its own task takes (and ignores) responses: none are outstanding.
    assert_eq!(r[2], json!({"ok": true}));
    let unknown = uuid::Uuid::new_v4().to_string();

    let r = steps(
        &app,
        &a,
        json!([
        {"op": "get", "task": unknown},
        {"op": "get", "task": "not-a-task"},
        {"op": "get", "task": foreign},
        {"op": "cancel", "task": foreign},
        {"op": "get", "task": foreign_approval},
        {"op": "update", "task": foreign, "responses": {"k": {"action": "accept"}}}]),
    )
    .await
    .unwrap();
    for (i, id) in [
        &unknown,
        "not-a-task",
        &foreign,
        &foreign,
        &foreign_approval,
        &foreign,
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(r[i]["error"]["code"], -32602, "step {i}: {:?}", r[i]);
        assert_eq!(
            r[i]["error"]["message"],
            format!("no task {id:?} of this workspace"),
            "step {i}"
        );
    }
    let (_, row) = app
        .get(
            &format!("/workspaces/{}/delegations/{foreign}", c.id),
            &c.token,
        )
        .await;
    assert_eq!(
        row["status"], "queued",
        "another's cancel changed nothing: {row}"
    );
}

on_both_engines!(the_approval_tools_ask_wait_and_read_the_decision);
async fn the_approval_tools_ask_wait_and_read_the_decision(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    if clients::python().is_none() {
        return;
    }
    let lead = app.create_poll_workspace("lead").await;
    let dev = app.create_poll_workspace_under("dev", Some(&lead)).await;
    let other = app.create_poll_workspace("other").await;
    let plan = |ws: &Ws, calls: Value| json!({"url": mcp_url(&app, ws), "token": ws.token, "list": false, "calls": calls});

    // A client without the tasks extension: plain results.
    let report = run_script("mcp_session.py", plan(&dev, json!([
        {"tool": "request_approval", "args": {"action": "rotate the API key", "reason": "it leaked",
            "context": {"key": "k-1"}, "task_id": "t-9", "expires_in_s": 120, "on_expiry": "escalate"}},
        {"tool": "request_approval", "args": {"action": "  "}},
        {"tool": "request_approval", "args": {"action": "x", "wait_s": 31}},
        {"tool": "request_approval", "args": {"action": "x", "priority": 1}},
        {"tool": "check_approval", "args": {"approval_id": "nope"}}])))
    .await
    .unwrap();
    let r = report["results"].as_array().unwrap();
    let asked = ok_json(&r[0], "request_approval");
    assert_eq!(asked["status"], "pending", "{asked}");
    assert_eq!(asked["action"], "rotate the API key");
    assert_eq!(asked["task_id"], "t-9");
    assert_eq!(asked["approver_id"], lead.id.as_str());
    assert_eq!(asked["decided_by"], Value::Null);
    let aid = asked["approval_id"].as_str().unwrap().to_owned();
    assert_eq!(r[1]["is_error"], true, "{:?}", r[1]);
    assert_eq!(r[1]["text"], "`action` is required: 1 to 200 characters");
    assert_eq!(r[2]["is_error"], true, "{:?}", r[2]);
    assert_eq!(r[2]["text"], "`wait_s` must be between 0 and 30, got 31");
    assert_eq!(r[3]["error"]["code"], -32602, "{:?}", r[3]);
    assert_eq!(r[4]["is_error"], true);
    assert_eq!(r[4]["text"], "`approval_id` must be a UUID, got \"nope\"");
    // Exactly the route's rows: one request (the refused ones wrote
    // nothing), seen by its decider, and its audit row.
    let (_, mine) = app
        .get(&format!("/workspaces/{}/approvals", dev.id), &dev.token)
        .await;
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine[0]["id"], aid.as_str());
    assert_eq!(mine[0]["reason"], "it leaked");
    assert_eq!(mine[0]["context"], json!({"key": "k-1"}));
    assert_eq!(mine[0]["on_expiry"], "escalate");
    let (_, audit) = app
        .get(
            &format!("/workspaces/{}/audit?action=approval.requested", dev.id),
            &dev.token,
        )
        .await;
    assert_eq!(audit["events"].as_array().unwrap().len(), 1, "{audit}");
    assert_eq!(audit["events"][0]["target"], format!("approval:{aid}"));

    // check_approval waits for the decision: the decider decides once the
    // client's discovery request is answered, so the call that follows
    // (almost always) waits on the event rather than finding it decided.
    let posts =
        "molecule_http_requests_total{method=\"POST\",path=\"/workspaces/:id/mcp\",status=\"200\"}";
    let before = app.metric(posts).await;
    let waiter = tokio::spawn(run_script(
        "mcp_session.py",
        plan(
            &dev,
            json!([
        {"tool": "check_approval", "args": {"approval_id": aid, "wait_s": 30}}]),
        ),
    ));
    let started = std::time::Instant::now();
    crate::helpers::eventually("the MCP client's discovery", || async {
        app.metric(posts).await > before
    })
    .await;
    let (status, decided) = app
        .post(
            &format!("/workspaces/{}/approvals/{aid}/decide", dev.id),
            &lead.token,
            &json!({"decision": "approved", "note": "go ahead"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    let report = waiter.await.unwrap().unwrap();
    assert!(
        started.elapsed().as_secs() < 25,
        "woken by the decision, not the bound"
    );
    let seen = ok_json(&report["results"][0], "check_approval");
    assert_eq!(seen["status"], "approved", "{seen}");
    assert_eq!(seen["decided_by"], lead.id.as_str());
    assert_eq!(seen["note"], "go ahead");

    // Another workspace cannot read it.
    let report = run_script(
        "mcp_session.py",
        plan(
            &other,
            json!([
        {"tool": "check_approval", "args": {"approval_id": aid}}]),
        ),
    )
    .await
    .unwrap();
    assert_eq!(report["results"][0]["is_error"], true);
    assert_eq!(
        report["results"][0]["text"],
        format!("no approval request {aid} of this workspace")
    );

    // With the tasks extension, request_approval is a task that needs a
    // person's input until it is decided.
    let r = steps(
        &app,
        &dev,
        json!([
        {"op": "call", "tool": "request_approval", "args": {"action": "restart the database"}},
        {"op": "get", "task": "$task"},
        {"op": "cancel", "task": "$task"}]),
    )
    .await
    .unwrap();
    let tid = r[0]["task"]["taskId"].as_str().unwrap().to_owned();
    assert_eq!(r[0]["task"]["status"], "input_required", "{:?}", r[0]);
    assert_eq!(r[1]["task"]["status"], "input_required");
    assert_eq!(r[1]["task"]["inputRequests"], json!({}));
    assert_eq!(
        r[1]["task"]["statusMessage"],
        format!(
            "waiting for a decision by workspace {} or the operator",
            lead.id
        )
    );
    assert_eq!(r[2]["error"]["code"], -32602);
    assert_eq!(
        r[2]["error"]["message"],
        "an approval request cannot be canceled: it is decided or expires"
    );
    let (status, _) = app
        .post(
            &format!("/workspaces/{}/approvals/{tid}/decide", dev.id),
            &app.admin_token,
            &json!({"decision": "denied", "note": "not during business hours"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let r = steps(&app, &dev, json!([{"op": "get", "task": tid}]))
        .await
        .unwrap();
    let task = &r[0]["task"];
    assert_eq!(task["status"], "completed", "{task}");
    let decision = task_result(task);
    assert_eq!(decision["status"], "denied");
    assert_eq!(decision["decided_by"], "operator");
    assert_eq!(decision["note"], "not during business hours");
}
