//! The operator's moves on the ledger from the canvas: cancel a delegation
//! in flight, retry a failed one (once per failed row), and the ledger's
//! edges for the topology view — each with the rows it leaves behind and
//! the refusals that change nothing.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Engine, TestApp, Ws};
use crate::on_both_engines;

/// Delegates `task` from `from` to `to` (SDK style) and returns its id.
async fn delegate(app: &TestApp, from: &Ws, to: &Ws, task: &str) -> String {
    let (status, body) = TestApp::json(
        app.client
            .post(app.url(&format!("/workspaces/{}/delegate", to.id)))
            .bearer_auth(&from.token)
            .header("X-Workspace-ID", &from.id)
            .json(&json!({"task": task, "idempotency_key": uuid::Uuid::new_v4().to_string()}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["delegation_id"].as_str().unwrap().to_owned()
}

/// The ledger row as the operator reads it through `party`.
async fn row(app: &TestApp, party: &Ws, did: &str) -> Value {
    let (status, body) = app
        .get(
            &format!("/workspaces/{}/delegations/{did}", party.id),
            &app.admin_token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Every ledger row, newest first.
async fn ledger(app: &TestApp) -> Vec<Value> {
    let (status, rows) = app
        .get("/admin/delegations?limit=500", &app.admin_token)
        .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    rows.as_array().unwrap().clone()
}

/// `ws`'s inbox rows with this `method`.
async fn inbox(app: &TestApp, ws: &Ws, method: &str) -> Vec<Value> {
    let (status, rows) = app.activity(ws, "type=a2a_receive&limit=500").await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    rows.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == method)
        .cloned()
        .collect()
}

/// The audit rows of `action`, newest first.
async fn audit(app: &TestApp, action: &str) -> Vec<Value> {
    let (status, body) = app
        .get(
            &format!("/admin/audit?action={action}&limit=100"),
            &app.admin_token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"].as_array().unwrap().clone()
}

async fn the_operator_cancels_a_delegation_in_flight_once(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let c = app.create_poll_workspace("c").await;
    let did = delegate(&app, &a, &b, "compute").await;
    let cancel = |party: &Ws, token: &str| {
        let path = format!("/workspaces/{}/delegations/{did}/cancel", party.id);
        let token = token.to_owned();
        let app = &app;
        async move { app.post(&path, &token, &json!({})).await }
    };
    // Refusals first: none of them moves the row.
    let (status, body) = cancel(&a, &a.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a workspace token: {body}");
    let (status, body) = cancel(&c, &app.admin_token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not a party: {body}");
    assert_eq!(row(&app, &b, &did).await["status"], "queued");

    // Through either party.
    let (status, cancelled) = cancel(&a, &app.admin_token).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "failed");
    assert_eq!(cancelled["error_detail"], "cancelled by the operator");
    assert_eq!(row(&app, &b, &did).await, cancelled);
    // The caller hears of it as of any failure.
    let results = inbox(&app, &a, "delegation_result").await;
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["status"], "failed");
    // The callee's late report, and a second cancel, are refused.
    let (status, body) = app
        .post(
            &format!("/workspaces/{}/delegations/{did}/status", b.id),
            &b.token,
            &json!({"status": "completed", "result_preview": "late"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = cancel(&b, &app.admin_token).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["current_status"], "failed", "{body}");
    assert_eq!(row(&app, &b, &did).await, cancelled);
    assert_eq!(inbox(&app, &a, "delegation_result").await.len(), 1);
    let trail = audit(&app, "delegation.cancelled").await;
    assert_eq!(trail.len(), 1, "{trail:?}");
}
on_both_engines!(the_operator_cancels_a_delegation_in_flight_once);

async fn a_failed_delegation_is_retried_once_with_its_task(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let did = delegate(&app, &a, &b, "compute the sum").await;
    let retry = |id: &str, token: &str| {
        let path = format!("/workspaces/{}/delegations/{id}/retry", b.id);
        let token = token.to_owned();
        let app = &app;
        async move { app.post(&path, &token, &json!({})).await }
    };
    // Not failed: refused, nothing new.
    let (status, body) = retry(&did, &app.admin_token).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["current_status"], "queued", "{body}");
    let (status, body) = retry(&did, &b.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(ledger(&app).await.len(), 1);

    let (status, body) = app
        .post(
            &format!("/workspaces/{}/delegations/{did}/status", b.id),
            &b.token,
            &json!({"status": "failed", "error_detail": "boom"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, created) = retry(&did, &app.admin_token).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    assert_eq!(created["deduplicated"], false);
    let new_id = created["delegation_id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, did);
    let fresh = row(&app, &a, &new_id).await;
    assert_eq!(fresh["status"], "queued");
    assert_eq!(fresh["caller_id"], a.id);
    assert_eq!(fresh["callee_id"], b.id);
    assert_eq!(fresh["task"], "compute the sum");
    assert_eq!(fresh["idempotency_key"], format!("retry:{did}"));
    // The callee is handed the task again, once.
    let handed = inbox(&app, &b, "delegate").await;
    assert_eq!(handed.len(), 2, "{handed:?}");
    // A second click: the same retry, nothing delivered.
    let (status, again) = retry(&did, &app.admin_token).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["delegation_id"], new_id.as_str());
    assert_eq!(again["deduplicated"], true);
    assert_eq!(ledger(&app).await.len(), 2);
    assert_eq!(inbox(&app, &b, "delegate").await.len(), 2);
    assert_eq!(row(&app, &b, &did).await["status"], "failed");
    assert_eq!(audit(&app, "delegation.retried").await.len(), 1);
}
on_both_engines!(a_failed_delegation_is_retried_once_with_its_task);

async fn the_edges_count_who_asks_whom_and_what_fails(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let (status, empty) = app.get("/admin/delegations/edges", &app.admin_token).await;
    assert_eq!(status, StatusCode::OK, "{empty}");
    assert_eq!(empty, json!([]));
    let mut ab = Vec::new();
    for i in 0..3 {
        ab.push(delegate(&app, &a, &b, &format!("t{i}")).await);
    }
    let (status, body) = app
        .post(
            &format!("/workspaces/{}/delegations/{}/status", b.id, ab[0]),
            &b.token,
            &json!({"status": "failed", "error_detail": "no"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post(
            &format!("/workspaces/{}/delegations/{}/status", b.id, ab[1]),
            &b.token,
            &json!({"status": "completed", "result_preview": "yes"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let back = delegate(&app, &b, &a, "back").await;
    let (status, edges) = app.get("/admin/delegations/edges", &app.admin_token).await;
    assert_eq!(status, StatusCode::OK, "{edges}");
    let edges = edges.as_array().unwrap();
    assert_eq!(edges.len(), 2, "{edges:?}");
    let pick = |e: &Value| {
        (
            e["caller_id"].as_str().unwrap().to_owned(),
            e["callee_id"].as_str().unwrap().to_owned(),
            e["total"].as_i64().unwrap(),
            e["failed"].as_i64().unwrap(),
            e["in_flight"].as_i64().unwrap(),
        )
    };
    assert_eq!(pick(&edges[0]), (a.id.clone(), b.id.clone(), 3, 1, 1));
    assert_eq!(pick(&edges[1]), (b.id.clone(), a.id.clone(), 1, 0, 1));
    assert_eq!(
        edges[1]["last_at"],
        row(&app, &a, &back).await["created_at"]
    );
    // The busiest first, cut at `limit`.
    let (_, one) = app
        .get("/admin/delegations/edges?limit=1", &app.admin_token)
        .await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(pick(&one[0]), pick(&edges[0]));
    for bad in ["limit=0", "limit=2001", "limit=x"] {
        let (status, body) = app
            .get(&format!("/admin/delegations/edges?{bad}"), &app.admin_token)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "case {bad}: {body}");
    }
    let (status, _) = app.get("/admin/delegations/edges", &a.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
on_both_engines!(the_edges_count_who_asks_whom_and_what_fails);
