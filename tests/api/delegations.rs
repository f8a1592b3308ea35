//! Delegation between workspaces: exactly-once creation (also when
//! identical requests race), the callee's inbox row, the status machine
//! with its same-status preview replay, who may report, the result row in
//! the caller's inbox, the sweeper with a chosen clock, the listings and
//! the operator's views — each with the rows it leaves behind.

use chrono::{DateTime, Duration as Span, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{metric_value, spawn_app, spawn_app_with, Engine, Options, TestApp, Ws};
use crate::on_both_engines;

impl TestApp {
    /// `POST /workspaces/:to/delegate` as workspace `from` (SDK style).
    async fn delegate(&self, from: &Ws, to: &str, body: Value) -> (StatusCode, Value) {
        Self::json(
            self.client
                .post(self.url(&format!("/workspaces/{to}/delegate")))
                .bearer_auth(&from.token)
                .header("X-Workspace-ID", &from.id)
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Delegates a task and returns the new delegation's id.
    async fn delegate_ok(&self, from: &Ws, to: &Ws, task: &str) -> String {
        let (status, body) = self
            .delegate(
                from,
                &to.id,
                json!({"task": task, "idempotency_key": uuid::Uuid::new_v4().to_string()}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["delegation_id"].as_str().unwrap().to_owned()
    }

    /// The callee's status report.
    async fn report(&self, callee: &Ws, did: &str, body: Value) -> (StatusCode, Value) {
        self.post(
            &format!("/workspaces/{}/delegations/{did}/status", callee.id),
            &callee.token,
            &body,
        )
        .await
    }

    async fn report_ok(&self, callee: &Ws, did: &str, body: Value) -> Value {
        let (status, row) = self.report(callee, did, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body} → {row}");
        row
    }

    /// Every ledger row, newest first, as the operator sees it.
    async fn ledger(&self) -> Vec<Value> {
        let (status, rows) = self
            .get("/admin/delegations?limit=500", &self.admin_token)
            .await;
        assert_eq!(status, StatusCode::OK, "{rows}");
        rows.as_array().unwrap().clone()
    }

    async fn delegation(&self, did: &str) -> Value {
        self.ledger()
            .await
            .into_iter()
            .find(|r| r["id"] == did)
            .unwrap_or_else(|| panic!("no ledger row {did}"))
    }

    /// The inbox rows of `ws` with this `method`.
    async fn inbox_rows(&self, ws: &Ws, method: &str) -> Vec<Value> {
        let (status, rows) = self.activity(ws, "type=a2a_receive&limit=500").await;
        assert_eq!(status, StatusCode::OK, "{rows}");
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["method"] == method)
            .cloned()
            .collect()
    }
}

fn ts(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

async fn a_delegation_is_queued_once_and_a_repeat_delivers_nothing(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let task = "summarize the report\nand list the open questions";
    let body = json!({"task": task, "idempotency_key": "k-1", "deadline_s": 3600});
    let (status, created) = app.delegate(&a, &b.id, body.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let did = created["delegation_id"].as_str().unwrap().to_owned();
    assert_eq!(
        created,
        json!({"delegation_id": did, "status": "queued", "deduplicated": false})
    );

    let row = app.delegation(&did).await;
    assert_eq!(row["caller_id"], a.id.as_str());
    assert_eq!(row["callee_id"], b.id.as_str());
    assert_eq!(row["task"], task);
    assert_eq!(row["task_preview"], task);
    assert_eq!(row["idempotency_key"], "k-1");
    assert_eq!(row["status"], "queued");
    assert_eq!(row["result_preview"], Value::Null);
    assert_eq!(row["completed_at"], Value::Null);
    assert_eq!(
        ts(&row["deadline_at"]) - ts(&row["created_at"]),
        Span::seconds(3600)
    );

    let inbox = app.inbox_rows(&b, "delegate").await;
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert_eq!(inbox[0]["activity_type"], "a2a_receive");
    assert_eq!(inbox[0]["source_id"], a.id.as_str());
    assert_eq!(inbox[0]["summary"], "summarize the report");
    // The task's trace context (a new trace: the request sent none), as
    // the ledger row keeps it.
    assert_eq!(inbox[0]["data"]["traceparent"], row["traceparent"]);
    assert_eq!(row["traceparent"].as_str().map(str::len), Some(55), "{row}");
    assert_eq!(
        inbox[0]["data"],
        json!({"delegation_id": did, "task": task, "deadline": row["deadline_at"],
            "traceparent": row["traceparent"]})
    );

    // The same key again: the same delegation, nothing delivered.
    let (status, again) = app.delegate(&a, &b.id, body).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        again,
        json!({"delegation_id": did, "status": "queued", "deduplicated": true})
    );
    assert_eq!(app.ledger().await.len(), 1);
    assert_eq!(app.inbox_rows(&b, "delegate").await.len(), 1);
    // A long task keeps its first 200 characters as the preview.
    let long = "x".repeat(250);
    let did2 = app.delegate_ok(&a, &b, &long).await;
    assert_eq!(app.delegation(&did2).await["task_preview"], "x".repeat(200));
    // The same key to another workspace is a conflict, not a silent reuse.
    let c = app.create_poll_workspace("c").await;
    let (status, body) = app
        .delegate(&a, &c.id, json!({"task": "t", "idempotency_key": "k-1"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(app.inbox_rows(&c, "delegate").await.is_empty());
    // Without a key the server derives one from target, task and minute.
    let (s1, first) = app.delegate(&a, &c.id, json!({"task": "same"})).await;
    let (s2, second) = app.delegate(&a, &c.id, json!({"task": "same"})).await;
    assert_eq!(s1, StatusCode::ACCEPTED, "{first}");
    // Two calls straddling a minute boundary are two delegations; within
    // one minute, one.
    if s2 == StatusCode::OK {
        assert_eq!(second["delegation_id"], first["delegation_id"]);
        assert_eq!(app.inbox_rows(&c, "delegate").await.len(), 1);
    }
}
on_both_engines!(a_delegation_is_queued_once_and_a_repeat_delivers_nothing);

async fn identical_requests_racing_write_one_row_and_one_inbox_row(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let body = json!({"task": "race me", "idempotency_key": "same-key"});
    let answers =
        futures::future::join_all((0..12).map(|_| app.delegate(&a, &b.id, body.clone()))).await;
    let created: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .collect();
    let repeats: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    assert_eq!(repeats.len(), 11, "{answers:?}");
    let did = &created[0].1["delegation_id"];
    for (_, body) in &repeats {
        assert_eq!(&body["delegation_id"], did);
        assert_eq!(body["deduplicated"], true);
    }
    assert_eq!(app.ledger().await.len(), 1);
    let inbox = app.inbox_rows(&b, "delegate").await;
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert_eq!(&inbox[0]["data"]["delegation_id"], did);

    // Tighter still: the store call itself from many tasks at once (the
    // HTTP layer's token and workspace reads spread requests apart).
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = app.store.clone();
            let new = molecule::store::NewDelegation {
                id: molecule::domain::DelegationId::new(),
                caller: molecule::domain::Caller::Workspace(a.wid()),
                callee_id: b.wid(),
                task: "race the store".into(),
                idempotency_key: "store-key".into(),
                deadline_at: None,
                trace: molecule::domain::Hop::open(None),
            };
            let inbox = molecule::store::NewActivity {
                activity_type: "a2a_receive".into(),
                method: Some("delegate".into()),
                ..Default::default()
            };
            tokio::spawn(async move {
                store
                    .create_delegation(&new, &inbox, molecule::domain::now())
                    .await
            })
        })
        .collect();
    let mut created = 0;
    for t in futures::future::join_all(tasks).await {
        match t.unwrap().expect("no racing insert may fail") {
            molecule::store::Delegated::Created { .. } => created += 1,
            molecule::store::Delegated::Existing(d) => assert_eq!(d.idempotency_key, "store-key"),
            molecule::store::Delegated::CalleeGone => panic!("the callee is live"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(app.ledger().await.len(), 2);
    assert_eq!(app.inbox_rows(&b, "delegate").await.len(), 2);
}
on_both_engines!(identical_requests_racing_write_one_row_and_one_inbox_row);

async fn the_status_machine_moves_forward_only(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let did = app.delegate_ok(&a, &b, "t1").await;
    for status in ["dispatched", "in_progress"] {
        let row = app.report_ok(&b, &did, json!({"status": status})).await;
        assert_eq!(row["status"], status);
        assert_eq!(row["last_heartbeat_at"], row["updated_at"]);
    }
    // Backwards: 409 with the current status, nothing changed.
    let before = app.delegation(&did).await;
    for back in ["queued", "dispatched"] {
        let (status, body) = app.report(&b, &did, json!({"status": back})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{back}: {body}");
        assert_eq!(
            body,
            json!({"error": format!("the delegation is already in_progress; it cannot move to {back}"),
                "current_status": "in_progress"})
        );
    }
    assert_eq!(app.delegation(&did).await, before);
    let row = app
        .report_ok(
            &b,
            &did,
            json!({"status": "completed", "result_preview": "42"}),
        )
        .await;
    assert_eq!(row["status"], "completed");
    assert_eq!(row["result_preview"], "42");
    assert_eq!(row["completed_at"], row["updated_at"]);
    for after in ["failed", "in_progress", "queued"] {
        let (status, body) = app.report(&b, &did, json!({"status": after})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{after}: {body}");
        assert_eq!(body["current_status"], "completed");
    }
    // Skipping ahead is still forward; failed keeps its error.
    let d2 = app.delegate_ok(&a, &b, "t2").await;
    let row = app
        .report_ok(
            &b,
            &d2,
            json!({"status": "failed", "error_detail": "exit status 3"}),
        )
        .await;
    assert_eq!(
        (&row["status"], &row["error_detail"]),
        (&json!("failed"), &json!("exit status 3"))
    );
    // The sweeper's status and unknown names are refused as bad input.
    let d3 = app.delegate_ok(&a, &b, "t3").await;
    for (bad, msg) in [
        ("stuck", "`stuck` is set by the sweeper; report in_progress, completed or failed"),
        ("done", "`done` is not a delegation status: use queued, dispatched, in_progress, completed, failed or stuck"),
    ] {
        let (status, body) = app.report(&b, &d3, json!({"status": bad})).await;
        assert_eq!(
            (status, body),
            (StatusCode::BAD_REQUEST, json!({"error": msg})),
            "{bad}"
        );
    }
    assert_eq!(app.delegation(&d3).await["status"], "queued");
    // A heartbeat on a finished delegation: 409, so the agent stops.
    let (status, body) = app
        .post(
            &format!("/workspaces/{}/delegations/{did}/heartbeat", b.id),
            &b.token,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["current_status"], "completed");
}
on_both_engines!(the_status_machine_moves_forward_only);

async fn a_same_status_repeat_still_applies_the_preview(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let did = app.delegate_ok(&a, &b, "answer me").await;
    app.report_ok(&b, &did, json!({"status": "dispatched"}))
        .await;
    // Molecule's order: "completed" without the preview, then "completed"
    // with it. The second must land.
    let row = app
        .report_ok(
            &b,
            &did,
            json!({"status": "completed", "result_preview": ""}),
        )
        .await;
    assert_eq!(row["result_preview"], Value::Null);
    let completed_at = row["completed_at"].clone();
    let row = app
        .report_ok(
            &b,
            &did,
            json!({"status": "completed", "result_preview": "the answer"}),
        )
        .await;
    assert_eq!(row["status"], "completed");
    assert_eq!(row["result_preview"], "the answer");
    assert_eq!(
        row["completed_at"], completed_at,
        "a repeat is not a new completion"
    );
    // An empty repeat afterwards keeps it.
    let row = app
        .report_ok(&b, &did, json!({"status": "completed"}))
        .await;
    assert_eq!(row["result_preview"], "the answer");
    assert_eq!(app.delegation(&did).await["result_preview"], "the answer");
    // The same holds for the error of a failure.
    let d2 = app.delegate_ok(&a, &b, "fail me").await;
    app.report_ok(&b, &d2, json!({"status": "failed"})).await;
    let row = app
        .report_ok(&b, &d2, json!({"status": "failed", "error_detail": "boom"}))
        .await;
    assert_eq!(row["error_detail"], "boom");
    // One result row per delegation, however often the end is repeated.
    assert_eq!(app.inbox_rows(&a, "delegation_result").await.len(), 2);
}
on_both_engines!(a_same_status_repeat_still_applies_the_preview);

async fn only_the_callee_may_report_or_heartbeat(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let c = app.create_poll_workspace("c").await;
    let did = app.delegate_ok(&a, &b, "t").await;
    let other = app.delegate_ok(&a, &c, "for c").await;
    let not_found = json!({"error": "delegation not found"});
    let body = json!({"status": "completed", "result_preview": "forged"});
    let cases = [
        (
            "the caller, on the callee's path",
            b.id.clone(),
            did.clone(),
            a.token.clone(),
        ),
        (
            "the caller, on its own path",
            a.id.clone(),
            did.clone(),
            a.token.clone(),
        ),
        (
            "the operator",
            b.id.clone(),
            did.clone(),
            app.admin_token.clone(),
        ),
        (
            "a third workspace, on the callee's path",
            b.id.clone(),
            did.clone(),
            c.token.clone(),
        ),
        (
            "a third workspace, on its own path",
            c.id.clone(),
            did.clone(),
            c.token.clone(),
        ),
        (
            "the callee, on another's delegation",
            b.id.clone(),
            other.clone(),
            b.token.clone(),
        ),
        (
            "the callee, an unknown id",
            b.id.clone(),
            uuid::Uuid::new_v4().to_string(),
            b.token.clone(),
        ),
    ];
    for (who, ws, id, token) in &cases {
        for route in ["status", "heartbeat"] {
            let (status, answer) = app
                .post(
                    &format!("/workspaces/{ws}/delegations/{id}/{route}"),
                    token,
                    &body,
                )
                .await;
            assert_eq!(
                (status, &answer),
                (StatusCode::NOT_FOUND, &not_found),
                "{who} {route}"
            );
        }
    }
    let (status, _) = app
        .post(
            &format!("/workspaces/{}/delegations/{did}/status", b.id),
            "nope",
            &body,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .post(
            &format!("/workspaces/{}/delegations/not-an-id/status", b.id),
            &b.token,
            &body,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for id in [&did, &other] {
        let row = app.delegation(id).await;
        assert_eq!(row["status"], "queued");
        assert_eq!(row["last_heartbeat_at"], Value::Null);
    }
    assert!(app.inbox_rows(&a, "delegation_result").await.is_empty());
    // The callee's heartbeat works and only stamps.
    let (status, row) = app
        .post(
            &format!("/workspaces/{}/delegations/{did}/heartbeat", b.id),
            &b.token,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{row}");
    assert_eq!(row["status"], "queued");
    assert!(row["last_heartbeat_at"].is_string());
}
on_both_engines!(only_the_callee_may_report_or_heartbeat);

async fn the_result_reaches_the_caller_inbox_and_wakes_its_long_poll(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let did = app.delegate_ok(&a, &b, "compute").await;
    app.report_ok(&b, &did, json!({"status": "in_progress"}))
        .await;
    let poll = {
        let url = app.url(&format!(
            "/workspaces/{}/activity?type=a2a_receive&wait=20",
            a.id
        ));
        let client = app.client.clone();
        let token = a.token.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let rows: Value = client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (rows, started.elapsed())
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    app.report_ok(
        &b,
        &did,
        json!({"status": "completed", "result_preview": "the result"}),
    )
    .await;
    let (rows, waited) = poll.await.unwrap();
    assert!(waited < std::time::Duration::from_secs(10), "{waited:?}");
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    let row = &rows[0];
    assert_eq!(row["method"], "delegation_result");
    assert_eq!(row["source_id"], b.id.as_str());
    assert_eq!(row["status"], "completed");
    assert_eq!(
        row["data"],
        json!({"delegation_id": did, "status": "completed", "result_preview": "the result", "error_detail": null})
    );
    // A failure carries its error.
    let d2 = app.delegate_ok(&a, &b, "compute more").await;
    app.report_ok(
        &b,
        &d2,
        json!({"status": "failed", "error_detail": "exit status 2"}),
    )
    .await;
    let results = app.inbox_rows(&a, "delegation_result").await;
    assert_eq!(results.len(), 2);
    assert_eq!(
        results[1]["data"],
        json!({"delegation_id": d2, "status": "failed", "result_preview": null, "error_detail": "exit status 2"})
    );
    // The callee's inbox holds only the two tasks.
    assert_eq!(app.inbox_rows(&b, "delegate").await.len(), 2);
    assert!(app.inbox_rows(&b, "delegation_result").await.is_empty());
}
on_both_engines!(the_result_reaches_the_caller_inbox_and_wakes_its_long_poll);

async fn the_operator_delegates_as_operator_and_gets_no_result_row(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let b = app.create_poll_workspace("b").await;
    let (status, created) = app
        .post(
            &format!("/workspaces/{}/delegate", b.id),
            &app.admin_token,
            &json!({"task": "from the operator", "idempotency_key": "op-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let did = created["delegation_id"].as_str().unwrap();
    assert_eq!(app.delegation(did).await["caller_id"], "operator");
    let inbox = app.inbox_rows(&b, "delegate").await;
    assert_eq!(inbox[0]["source_id"], "operator");
    app.report_ok(
        &b,
        did,
        json!({"status": "completed", "result_preview": "ok"}),
    )
    .await;
    // No workspace inbox anywhere got a result row: the operator reads
    // the ledger.
    assert!(app.inbox_rows(&b, "delegation_result").await.is_empty());
    assert_eq!(app.delegation(did).await["result_preview"], "ok");
}
on_both_engines!(the_operator_delegates_as_operator_and_gets_no_result_row);

async fn bad_requests_change_nothing(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let cases = [
        (
            json!({"task": "  "}),
            StatusCode::BAD_REQUEST,
            "`task` must not be empty",
        ),
        (
            json!({"task": "t", "deadline_s": 0}),
            StatusCode::BAD_REQUEST,
            "`deadline_s` must be between 1 and 604800 seconds",
        ),
        (
            json!({"task": "t", "deadline_s": 604801}),
            StatusCode::BAD_REQUEST,
            "`deadline_s` must be between 1 and 604800 seconds",
        ),
        (
            json!({"task": "t", "idempotency_key": ""}),
            StatusCode::BAD_REQUEST,
            "`idempotency_key` must be 1 to 200 characters",
        ),
        (
            json!({"task": "t", "idempotency_key": "k".repeat(201)}),
            StatusCode::BAD_REQUEST,
            "`idempotency_key` must be 1 to 200 characters",
        ),
        (
            json!({"task": "x".repeat(64 * 1024 + 1)}),
            StatusCode::BAD_REQUEST,
            "`task` must be at most 65536 bytes",
        ),
    ];
    for (body, status, error) in cases {
        let (got, answer) = app.delegate(&a, &b.id, body.clone()).await;
        assert_eq!(
            (got, answer),
            (status, json!({"error": error})),
            "{}",
            &body.to_string()[..40.min(body.to_string().len())]
        );
    }
    let (status, body) = app.delegate(&a, &a.id, json!({"task": "t"})).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": "a workspace cannot delegate to itself"})
        )
    );
    let (status, body) = app
        .delegate(&a, &uuid::Uuid::new_v4().to_string(), json!({"task": "t"}))
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "workspace not found"})
        )
    );
    // Claiming to be another workspace: 401, as for a bad token.
    let (status, _) = delegate_claiming(&app, &a.token, &b.id, &b.id).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = delegate_claiming(&app, "wrong", &a.id, &b.id).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .post(
            "/workspaces/not-a-uuid/delegate",
            &a.token,
            &json!({"task": "t"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(app.ledger().await.is_empty());
    assert!(app.inbox_rows(&a, "delegate").await.is_empty());
    assert!(app.inbox_rows(&b, "delegate").await.is_empty());
}
on_both_engines!(bad_requests_change_nothing);

async fn delegate_claiming(
    app: &TestApp,
    token: &str,
    claimed: &str,
    to: &str,
) -> (StatusCode, Value) {
    TestApp::json(
        app.client
            .post(app.url(&format!("/workspaces/{to}/delegate")))
            .bearer_auth(token)
            .header("X-Workspace-ID", claimed)
            .json(&json!({"task": "t"}))
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn the_sweeper_fails_overdue_marks_silent_stuck_and_leaves_healthy_alone(engine: Engine) {
    let Some(app) = spawn_app_with(
        Options::new(engine)
            .tweak(|c| c.delegation_stuck_after = std::time::Duration::from_secs(600)),
    )
    .await
    else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let before = app.metrics_text().await;
    let t0 = molecule::domain::now();
    // Overdue: a 60 s deadline, never picked up.
    let (status, body) = app
        .delegate(
            &a,
            &b.id,
            json!({"task": "overdue", "idempotency_key": "o", "deadline_s": 60}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let overdue = body["delegation_id"].as_str().unwrap().to_owned();
    // Silent: dispatched now, then nothing.
    let silent = app.delegate_ok(&a, &b, "silent").await;
    let silent_row = app
        .report_ok(&b, &silent, json!({"status": "dispatched"}))
        .await;
    // Healthy: in progress, its last heartbeat a minute before the sweep.
    let healthy = app.delegate_ok(&a, &b, "healthy").await;
    app.report_ok(&b, &healthy, json!({"status": "in_progress"}))
        .await;
    let sweep_at = t0 + Span::minutes(11);
    let beat = app
        .store
        .heartbeat_delegation(
            b.wid(),
            healthy.parse().unwrap(),
            sweep_at - Span::minutes(1),
        )
        .await
        .unwrap();
    assert!(matches!(beat, molecule::store::BeatOutcome::Beat(_)));
    let healthy_before = app.delegation(&healthy).await;

    let out = app.sweeper.sweep_once(sweep_at).await.unwrap();
    assert_eq!(
        (
            out.count("delegations", "failed"),
            out.count("delegations", "stuck"),
            out.count("delegations", "purged")
        ),
        (1, 1, 0)
    );

    let row = app.delegation(&overdue).await;
    assert_eq!(row["status"], "failed");
    assert_eq!(row["error_detail"], "deadline exceeded");
    assert_eq!(ts(&row["completed_at"]), sweep_at);
    let results = app.inbox_rows(&a, "delegation_result").await;
    assert_eq!(results.len(), 1);
    assert_eq!(
        results[0]["data"],
        json!({"delegation_id": overdue, "status": "failed", "result_preview": null, "error_detail": "deadline exceeded"})
    );
    let row = app.delegation(&silent).await;
    let silent_for = (sweep_at - ts(&silent_row["last_heartbeat_at"])).num_seconds();
    assert_eq!(row["status"], "stuck");
    assert_eq!(
        row["error_detail"],
        format!("no heartbeat for {silent_for}s")
    );
    assert_eq!(row["completed_at"], Value::Null);
    assert_eq!(
        app.delegation(&healthy).await,
        healthy_before,
        "healthy rows untouched"
    );
    // A second pass at the same time finds nothing more to do.
    let out = app.sweeper.sweep_once(sweep_at).await.unwrap();
    assert_eq!(
        (
            out.count("delegations", "failed"),
            out.count("delegations", "stuck")
        ),
        (0, 0)
    );

    // The silent callee comes back and finishes: stuck → completed.
    let row = app
        .report_ok(
            &b,
            &silent,
            json!({"status": "completed", "result_preview": "late but done"}),
        )
        .await;
    assert_eq!(row["status"], "completed");
    assert_eq!(app.inbox_rows(&a, "delegation_result").await.len(), 2);

    let after = app.metrics_text().await;
    let delta = |series: &str| metric_value(&after, series) - metric_value(&before, series);
    assert_eq!(delta("molecule_delegations_total{status=\"queued\"}"), 3.0);
    assert_eq!(delta("molecule_delegations_total{status=\"failed\"}"), 1.0);
    assert_eq!(delta("molecule_delegations_total{status=\"stuck\"}"), 1.0);
    assert_eq!(
        delta("molecule_delegations_total{status=\"completed\"}"),
        1.0
    );
    assert_eq!(delta("molecule_delegation_duration_seconds_count"), 2.0);

    // Past the activity retention the finished rows are purged; the one
    // still in flight stays (and, silent for days, is now stuck).
    let out = app.sweeper.sweep_once(t0 + Span::days(8)).await.unwrap();
    assert_eq!(out.count("delegations", "purged"), 2);
    let left = app.ledger().await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["id"], healthy.as_str());
    assert_eq!(left[0]["status"], "stuck");
}
on_both_engines!(the_sweeper_fails_overdue_marks_silent_stuck_and_leaves_healthy_alone);

async fn workspaces_list_their_own_delegations_by_role(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let c = app.create_poll_workspace("c").await;
    let a_to_b = app.delegate_ok(&a, &b, "a to b").await;
    let b_to_a = app.delegate_ok(&b, &a, "b to a").await;
    let c_to_a = app.delegate_ok(&c, &a, "c to a").await;
    app.report_ok(&a, &c_to_a, json!({"status": "dispatched"}))
        .await;
    let ids = |rows: &Value| -> Vec<String> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = |q: &'static str| {
        let app = &app;
        let a = &a;
        async move {
            app.get(&format!("/workspaces/{}/delegations{q}", a.id), &a.token)
                .await
        }
    };
    let (status, rows) = list("").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ids(&rows),
        vec![c_to_a.clone(), b_to_a.clone(), a_to_b.clone()],
        "newest first"
    );
    assert_eq!(ids(&list("?role=caller").await.1), vec![a_to_b.clone()]);
    assert_eq!(
        ids(&list("?role=callee").await.1),
        vec![c_to_a.clone(), b_to_a.clone()]
    );
    assert_eq!(
        ids(&list("?role=callee&status=dispatched").await.1),
        vec![c_to_a.clone()]
    );
    assert_eq!(ids(&list("?limit=1").await.1), vec![c_to_a.clone()]);
    for bad in ["?role=boss", "?status=done", "?limit=0", "?limit=501"] {
        assert_eq!(list(bad).await.0, StatusCode::BAD_REQUEST, "{bad}");
    }
    // Another workspace's token on a's listing: 401, like every a route.
    let (status, _) = app
        .get(&format!("/workspaces/{}/delegations", a.id), &b.token)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // One delegation: either party, through its own path; no one else.
    for (ws, ok) in [(&a, true), (&b, true), (&c, false)] {
        let (status, row) = app
            .get(
                &format!("/workspaces/{}/delegations/{a_to_b}", ws.id),
                &ws.token,
            )
            .await;
        if ok {
            assert_eq!(status, StatusCode::OK, "{row}");
            assert_eq!(row["task"], "a to b");
        } else {
            assert_eq!(
                (status, row),
                (
                    StatusCode::NOT_FOUND,
                    json!({"error": "delegation not found"})
                )
            );
        }
    }
    let (status, _) = app
        .get(
            &format!("/workspaces/{}/delegations/{a_to_b}", b.id),
            &app.admin_token,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}
on_both_engines!(workspaces_list_their_own_delegations_by_role);

async fn the_operator_views_need_the_admin_token_and_add_up(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    for path in ["/admin/delegations", "/admin/delegations/stats"] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        let (status, body) = app.get(path, &a.token).await;
        assert_eq!(
            (status, body),
            (
                StatusCode::FORBIDDEN,
                json!({"error": "this route is for the operator; a workspace token may not use it"})
            ),
            "{path}"
        );
    }
    let (status, stats) = app.get("/admin/delegations/stats", &app.admin_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        stats,
        json!({"counts": {"queued": 0, "dispatched": 0, "in_progress": 0, "completed": 0, "failed": 0, "stuck": 0},
            "oldest_in_flight_age_s": null, "completed_24h": 0, "p50_completion_s": null, "p95_completion_s": null})
    );
    let d1 = app.delegate_ok(&a, &b, "one").await;
    let d2 = app.delegate_ok(&a, &b, "two").await;
    let d3 = app.delegate_ok(&a, &b, "three").await;
    let d4 = app.delegate_ok(&b, &a, "four").await;
    let done = app
        .report_ok(
            &b,
            &d1,
            json!({"status": "completed", "result_preview": "1"}),
        )
        .await;
    app.report_ok(&b, &d2, json!({"status": "failed", "error_detail": "no"}))
        .await;
    app.report_ok(&b, &d3, json!({"status": "in_progress"}))
        .await;

    let ids: Vec<Value> = app.ledger().await.iter().map(|r| r["id"].clone()).collect();
    assert_eq!(
        ids,
        vec![json!(d4), json!(d3), json!(d2), json!(d1)],
        "newest first"
    );
    let (_, rows) = app
        .get("/admin/delegations?status=failed", &app.admin_token)
        .await;
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["id"], d2.as_str());
    assert_eq!(rows[0]["error_detail"], "no");
    let (_, rows) = app
        .get("/admin/delegations?limit=2", &app.admin_token)
        .await;
    assert_eq!(rows.as_array().unwrap().len(), 2);
    let (status, _) = app
        .get("/admin/delegations?status=nope", &app.admin_token)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, stats) = app.get("/admin/delegations/stats", &app.admin_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        stats["counts"],
        json!({"queued": 1, "dispatched": 0, "in_progress": 1, "completed": 1, "failed": 1, "stuck": 0})
    );
    let age = stats["oldest_in_flight_age_s"].as_i64().unwrap();
    assert!((0..60).contains(&age), "{stats}");
    assert_eq!(stats["completed_24h"], 1);
    let took = (ts(&done["completed_at"]) - ts(&done["created_at"]))
        .num_microseconds()
        .unwrap() as f64
        / 1e6;
    assert_eq!(stats["p50_completion_s"].as_f64().unwrap(), took);
    assert_eq!(stats["p95_completion_s"].as_f64().unwrap(), took);
}
on_both_engines!(the_operator_views_need_the_admin_token_and_add_up);

/// A listing pages by its `before` cursor without gaps or repeats, and a
/// workspace's own figures count exactly its rows (either side), so a
/// page can say "3 of 5".
async fn listings_page_by_cursor_and_a_workspace_has_its_own_totals(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let c = app.create_poll_workspace("c").await;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(app.delegate_ok(&a, &b, &format!("task {i}")).await);
    }
    // Not a's: counted neither in a's listing nor in its figures.
    let other = app.delegate_ok(&b, &c, "elsewhere").await;
    app.report_ok(
        &b,
        &made[0],
        json!({"status": "completed", "result_preview": "ok"}),
    )
    .await;
    let ids = |page: &Value| -> Vec<String> {
        page.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();
    let path = format!("/workspaces/{}/delegations", a.id);
    let (status, first) = app.get(&format!("{path}?limit=2"), &a.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&first), newest_first[..2]);
    let (_, second) = app
        .get(
            &format!("{path}?limit=2&before={}", newest_first[1]),
            &a.token,
        )
        .await;
    assert_eq!(ids(&second), newest_first[2..4]);
    let (_, last) = app
        .get(
            &format!("{path}?limit=2&before={}", newest_first[3]),
            &a.token,
        )
        .await;
    assert_eq!(ids(&last), newest_first[4..]);
    // The operator's listing pages the same way over every row.
    let (_, all) = app
        .get(
            &format!("/admin/delegations?limit=1&before={other}"),
            &app.admin_token,
        )
        .await;
    assert_eq!(ids(&all), newest_first[..1]);
    // A cursor naming nothing of this listing is refused, not ignored.
    for bad in [other.as_str(), "not-an-id"] {
        let (status, body) = app.get(&format!("{path}?before={bad}"), &a.token).await;
        assert_eq!(
            (status, body),
            (
                StatusCode::BAD_REQUEST,
                json!({"error": format!("`before` names no delegation of this listing: `{bad}`")})
            )
        );
    }
    let (status, stats) = app.get(&format!("{path}/stats"), &a.token).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(
        stats["counts"],
        json!({"queued": 4, "dispatched": 0, "in_progress": 0, "completed": 1, "failed": 0, "stuck": 0})
    );
    assert_eq!(stats["completed_24h"], 1);
    let (_, c_stats) = app
        .get(&format!("/workspaces/{}/delegations/stats", c.id), &c.token)
        .await;
    assert_eq!(c_stats["counts"]["queued"], 1, "{c_stats}");
    assert_eq!(c_stats["completed_24h"], 0);
    // Another workspace's figures are not a's to read (its token binds
    // to a, as on every workspace route).
    let (status, _) = app
        .get(&format!("/workspaces/{}/delegations/stats", c.id), &a.token)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
on_both_engines!(listings_page_by_cursor_and_a_workspace_has_its_own_totals);

// Multi-threaded: the CLI runs as a blocking child process while the
// server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_delegates_and_lists_the_ledger() {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let cli = |args: Vec<String>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_molecule"))
            .args(&args)
            .args([
                "--server",
                &app.address,
                "--admin-token",
                &app.admin_token,
                "--json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let created = cli(vec![
        "delegate".into(),
        a.id.clone(),
        b.id.clone(),
        "review the draft".into(),
        "--key".into(),
        "cli-1".into(),
        "--deadline".into(),
        "10m".into(),
    ]);
    assert_eq!(created["status"], "queued");
    assert_eq!(created["deduplicated"], false);
    let did = created["delegation_id"].as_str().unwrap();
    let again = cli(vec![
        "delegate".into(),
        a.id.clone(),
        b.id.clone(),
        "review the draft".into(),
        "--key".into(),
        "cli-1".into(),
    ]);
    assert_eq!(again["deduplicated"], true);
    let op = cli(vec![
        "delegate".into(),
        "operator".into(),
        b.id.clone(),
        "from me".into(),
    ]);
    let rows = cli(vec![
        "delegations".into(),
        "--status".into(),
        "queued".into(),
    ]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], op["delegation_id"]);
    assert_eq!(rows[0]["caller_id"], "operator");
    assert_eq!(rows[1]["id"], did);
    assert_eq!(rows[1]["caller_id"], a.id.as_str());
    assert_eq!(
        ts(&rows[1]["deadline_at"]) - ts(&rows[1]["created_at"]),
        Span::minutes(10)
    );
    let stats = cli(vec!["delegations".into(), "--stats".into()]);
    assert_eq!(stats["counts"]["queued"], 2);
    assert_eq!(app.inbox_rows(&b, "delegate").await.len(), 2);
}

/// A `text/event-stream` response read event by event.
pub(crate) struct EventStream {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl EventStream {
    /// Opens `path` with `token`; the server has subscribed once this returns.
    pub(crate) async fn open(app: &TestApp, path: &str, token: &str) -> Self {
        let resp = app
            .client
            .get(app.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Self {
            body: Box::pin(resp.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event (`event:` name, `data:` as JSON), within 20 s.
    pub(crate) async fn next(&mut self) -> (String, Value) {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let kind = block.lines().find_map(|l| l.strip_prefix("event: "));
                let data = block.lines().find_map(|l| l.strip_prefix("data: "));
                if let (Some(kind), Some(data)) = (kind, data) {
                    return (kind.to_owned(), serde_json::from_str(data).unwrap());
                }
                continue; // a keep-alive comment
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .expect("an event within 20 s")
                .expect("the stream is still open")
                .unwrap();
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// The `delegation` event of a move, exactly.
fn moved(did: &str, caller: &Ws, callee: &Ws, from: Value, row: &Value) -> (String, Value) {
    (
        "delegation".to_owned(),
        json!({"delegation_id": did, "caller_id": caller.id, "callee_id": callee.id,
               "from": from, "status": row["status"], "updated_at": row["updated_at"]}),
    )
}

/// The fleet's stream names every new activity row of every workspace, in
/// order, so the canvas reads only the workspace that changed instead of
/// polling each (issue 30, defect 9); it is the operator's.
async fn the_fleet_stream_names_every_new_row_of_every_workspace(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let mut fleet = EventStream::open(&app, "/admin/activity/events", &app.admin_token).await;
    for (ws, text) in [(&a, "one"), (&b, "two"), (&a, "three")] {
        let (status, body) = app.send_text(&ws.id, text).await;
        assert!(status.is_success(), "{status} {body}");
    }
    let newest = |ws: &str| {
        let app = &app;
        let path = format!("/workspaces/{ws}/activity?limit=10");
        async move {
            let (_, rows) = app.get(&path, &app.admin_token).await;
            rows.as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_i64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    let (a_rows, b_rows) = (newest(&a.id).await, newest(&b.id).await);
    assert_eq!(
        (a_rows.len(), b_rows.len()),
        (2, 1),
        "{a_rows:?} {b_rows:?}"
    );
    let expected = vec![
        (
            "activity".to_owned(),
            json!({"workspace_id": a.id, "id": a_rows[0]}),
        ),
        (
            "activity".to_owned(),
            json!({"workspace_id": b.id, "id": b_rows[0]}),
        ),
        (
            "activity".to_owned(),
            json!({"workspace_id": a.id, "id": a_rows[1]}),
        ),
    ];
    let mut seen = Vec::new();
    for _ in 0..expected.len() {
        seen.push(fleet.next().await);
    }
    assert_eq!(seen, expected);

    let resp = app
        .client
        .get(app.url("/admin/activity/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = app.get("/admin/activity/events", &a.token).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::FORBIDDEN,
            json!({"error": "this route is for the operator; a workspace token may not use it"})
        )
    );
}
on_both_engines!(the_fleet_stream_names_every_new_row_of_every_workspace);

async fn the_event_streams_carry_every_delegation_move(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let c = app.create_poll_workspace("c").await;
    let admin = app.admin_token.clone();
    let mut a_events =
        EventStream::open(&app, &format!("/workspaces/{}/events", a.id), &admin).await;
    let mut b_events =
        EventStream::open(&app, &format!("/workspaces/{}/events", b.id), &admin).await;
    let mut c_events =
        EventStream::open(&app, &format!("/workspaces/{}/events", c.id), &admin).await;
    let mut all = EventStream::open(&app, "/admin/delegations/events", &admin).await;

    let did = app.delegate_ok(&a, &b, "summarize the notes").await;
    let queued = app.delegation(&did).await;
    let dispatched = app
        .report_ok(&b, &did, json!({"status": "dispatched"}))
        .await;
    let working = app
        .report_ok(&b, &did, json!({"status": "in_progress"}))
        .await;
    // A heartbeat moves `last_heartbeat_at` (and `updated_at`), not the status.
    let (status, beat) = app
        .post(
            &format!("/workspaces/{}/delegations/{did}/heartbeat", b.id),
            &b.token,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{beat}");
    // A repeat that brings a preview is streamed too (the row changed).
    let repeat = app
        .report_ok(
            &b,
            &did,
            json!({"status": "in_progress", "result_preview": "half way"}),
        )
        .await;
    let done = app
        .report_ok(
            &b,
            &did,
            json!({"status": "completed", "result_preview": "all done"}),
        )
        .await;
    let moves = vec![
        moved(&did, &a, &b, Value::Null, &queued),
        moved(&did, &a, &b, json!("queued"), &dispatched),
        moved(&did, &a, &b, json!("dispatched"), &working),
        moved(&did, &a, &b, json!("in_progress"), &beat),
        moved(&did, &a, &b, json!("in_progress"), &repeat),
        moved(&did, &a, &b, json!("in_progress"), &done),
    ];
    assert_eq!(queued["status"], "queued");
    assert_eq!(done["status"], "completed");

    // The callee: its inbox row, then every move.
    let (kind, row) = b_events.next().await;
    assert_eq!(
        (kind.as_str(), &row["method"]),
        ("activity", &json!("delegate"))
    );
    for expected in &moves {
        assert_eq!(&b_events.next().await, expected);
    }
    // The caller: every move, the result row just before the last one.
    for expected in &moves[..5] {
        assert_eq!(&a_events.next().await, expected);
    }
    let (kind, row) = a_events.next().await;
    assert_eq!(
        (kind.as_str(), &row["method"]),
        ("activity", &json!("delegation_result"))
    );
    assert_eq!(&a_events.next().await, &moves[5]);
    // The operator's global stream: every move of every delegation.
    for expected in &moves {
        assert_eq!(&all.next().await, expected);
    }
    // A bystander's stream carries none of it: the first thing it sees is
    // its own next row.
    let (status, _) = app.send_text(&c.id, "hello c").await;
    assert!(status.is_success(), "{status}");
    let (kind, row) = c_events.next().await;
    assert_eq!(
        (kind.as_str(), &row["method"]),
        ("activity", &json!("message/send"))
    );

    // The sweeper's moves are streamed as well.
    let late = app.delegate_ok(&a, &b, "one more").await;
    let dispatched = app
        .report_ok(&b, &late, json!({"status": "dispatched"}))
        .await;
    let out = app
        .sweeper
        .sweep_once(chrono::Utc::now() + Span::hours(1))
        .await
        .unwrap();
    assert_eq!(out.count("delegations", "stuck"), 1);
    let stuck = app.delegation(&late).await;
    assert_eq!(stuck["status"], "stuck");
    assert_eq!(
        vec![all.next().await, all.next().await, all.next().await],
        vec![
            moved(
                &late,
                &a,
                &b,
                Value::Null,
                &json!({"status": "queued", "updated_at": stuck["created_at"]})
            ),
            moved(&late, &a, &b, json!("queued"), &dispatched),
            moved(&late, &a, &b, json!("dispatched"), &stuck),
        ]
    );

    // The global stream is the operator's.
    let resp = app
        .client
        .get(app.url("/admin/delegations/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = app.get("/admin/delegations/events", &a.token).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::FORBIDDEN,
            json!({"error": "this route is for the operator; a workspace token may not use it"})
        )
    );
}
on_both_engines!(the_event_streams_carry_every_delegation_move);

impl TestApp {
    /// A poll workspace under `parent` (a root without one).
    async fn member(&self, name: &str, parent: Option<&Ws>) -> Ws {
        let mut body = json!({"name": name, "delivery_mode": "poll"});
        if let Some(p) = parent {
            body["parent_id"] = json!(p.id);
        }
        let (status, body) = self.create_workspace(body).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        Ws {
            id: body["id"].as_str().unwrap().to_owned(),
            token: body["auth_token"].as_str().unwrap().to_owned(),
        }
    }
}

async fn delegating_out_of_reach_is_refused_and_writes_nothing(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    // root_a ── mid ── leaf
    //       └── mid2 ── leaf2
    // root_b
    let root_a = app.member("root-a", None).await;
    let root_b = app.member("root-b", None).await;
    let mid = app.member("mid", Some(&root_a)).await;
    let mid2 = app.member("mid2", Some(&root_a)).await;
    let leaf = app.member("leaf", Some(&mid)).await;
    let leaf2 = app.member("leaf2", Some(&mid2)).await;
    let rule = "a workspace may only reach its siblings (workspaces with the same parent; root workspaces are siblings of each other) and its ancestors and descendants up to 32 levels away";
    let refused: Vec<(&str, &Ws, &Ws)> = vec![
        ("cousin → cousin", &leaf, &leaf2),
        ("uncle → nephew", &mid2, &leaf),
        ("nephew → uncle", &leaf, &mid2),
        ("child → another root", &mid, &root_b),
    ];
    for (case, from, to) in refused {
        let (status, body) = app
            .delegate(
                from,
                &to.id,
                json!({"task": case, "idempotency_key": format!("key {case}")}),
            )
            .await;
        assert_eq!(
            (status, body),
            (
                StatusCode::FORBIDDEN,
                json!({"error": format!("workspace {} is out of reach: {rule}", to.id)})
            ),
            "{case}"
        );
    }
    // Nothing written: no ledger row, no inbox row anywhere.
    assert_eq!(app.ledger().await, Vec::<Value>::new());
    for ws in [&root_a, &root_b, &mid, &mid2, &leaf, &leaf2] {
        let (status, rows) = app.activity(ws, "limit=500").await;
        assert_eq!((status, rows), (StatusCode::OK, json!([])), "{}", ws.id);
    }
    // The same keys still work within reach (a refusal consumed nothing).
    let (status, body) = app
        .delegate(
            &leaf,
            &mid.id,
            json!({"task": "up to the parent", "idempotency_key": "key cousin → cousin"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["deduplicated"], false);
    assert_eq!(app.ledger().await.len(), 1);
    assert_eq!(app.inbox_rows(&mid, "delegate").await.len(), 1);
}
on_both_engines!(delegating_out_of_reach_is_refused_and_writes_nothing);

impl TestApp {
    /// `DELETE /workspaces/:id` as the operator; the status.
    async fn remove(&self, ws: &Ws, cascade: bool) -> StatusCode {
        self.client
            .delete(self.url(&format!("/workspaces/{}?cascade={cascade}", ws.id)))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .unwrap()
            .status()
    }
}

async fn removing_a_callee_fails_its_delegations_in_flight_and_refuses_new_ones(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let queued = app.delegate_ok(&a, &b, "queued").await;
    let working = app.delegate_ok(&a, &b, "working").await;
    app.report_ok(
        &b,
        &working,
        json!({"status": "in_progress", "result_preview": "half"}),
    )
    .await;
    let done = app.delegate_ok(&a, &b, "done").await;
    app.report_ok(&b, &done, json!({"status": "completed"}))
        .await;
    let done_before = app.delegation(&done).await;
    let (status, by_operator) = app
        .post(
            &format!("/workspaces/{}/delegate", b.id),
            &app.admin_token,
            &json!({"task": "from the operator"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{by_operator}");
    let by_operator = by_operator["delegation_id"].as_str().unwrap().to_owned();
    // A parent and its child, removed by a cascade from the parent.
    let (status, p) = app
        .create_workspace(json!({"name": "p", "delivery_mode": "poll"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    let p = Ws {
        id: p["id"].as_str().unwrap().to_owned(),
        token: p["auth_token"].as_str().unwrap().to_owned(),
    };
    let (status, c) = app
        .create_workspace(json!({"name": "c", "delivery_mode": "poll", "parent_id": p.id}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let c = Ws {
        id: c["id"].as_str().unwrap().to_owned(),
        token: c["auth_token"].as_str().unwrap().to_owned(),
    };
    let to_child = app.delegate_ok(&p, &c, "to the child").await;
    let before = app.metrics_text().await;

    assert_eq!(app.remove(&b, false).await, StatusCode::NO_CONTENT);
    assert_eq!(app.remove(&p, true).await, StatusCode::NO_CONTENT);

    for (did, preview) in [
        (&queued, None),
        (&working, Some("half")),
        (&by_operator, None),
        (&to_child, None),
    ] {
        let row = app.delegation(did).await;
        assert_eq!(row["status"], "failed", "{row}");
        assert_eq!(row["error_detail"], "callee removed", "{row}");
        assert_eq!(row["result_preview"], json!(preview), "{row}");
        assert!(row["completed_at"].is_string(), "{row}");
    }
    assert_eq!(
        app.delegation(&done).await,
        done_before,
        "finished rows untouched"
    );
    let results = app.inbox_rows(&a, "delegation_result").await;
    let mut data: Vec<Value> = results.iter().map(|r| r["data"].clone()).collect();
    data.retain(|d| d["status"] == "failed");
    data.sort_by_key(|d| d["delegation_id"].as_str().unwrap().to_owned());
    let mut want = vec![
        json!({"delegation_id": queued, "status": "failed", "result_preview": null, "error_detail": "callee removed"}),
        json!({"delegation_id": working, "status": "failed", "result_preview": "half", "error_detail": "callee removed"}),
    ];
    want.sort_by_key(|d| d["delegation_id"].as_str().unwrap().to_owned());
    assert_eq!(data, want, "one result row per workspace caller");
    let (_, stats) = app.get("/admin/delegations/stats", &app.admin_token).await;
    assert_eq!(stats["oldest_in_flight_age_s"], Value::Null, "{stats}");
    assert_eq!(
        stats["counts"],
        json!({"queued": 0, "dispatched": 0, "in_progress": 0, "completed": 1, "failed": 4, "stuck": 0})
    );
    let after = app.metrics_text().await;
    let delta = |series: &str| metric_value(&after, series) - metric_value(&before, series);
    assert_eq!(delta("molecule_delegations_total{status=\"failed\"}"), 4.0);

    // Delegating to a removed workspace: the 404 of every other path, by
    // the operator as by a workspace, and nothing written.
    let gone = json!({"error": "workspace not found"});
    let (status, body) = app
        .post(
            &format!("/workspaces/{}/delegate", b.id),
            &app.admin_token,
            &json!({"task": "too late"}),
        )
        .await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, gone.clone()));
    let (status, body) = app.delegate(&a, &b.id, json!({"task": "too late"})).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, gone.clone()));
    assert_eq!(app.ledger().await.len(), 5);

    // The store refuses too (a removal racing the request's own check).
    let new = molecule::store::NewDelegation {
        id: molecule::domain::DelegationId::new(),
        caller: molecule::domain::Caller::Operator,
        callee_id: b.wid(),
        task: "raced".into(),
        idempotency_key: "raced".into(),
        deadline_at: None,
        trace: molecule::domain::Hop::open(None),
    };
    let inbox = molecule::store::NewActivity {
        activity_type: "a2a_receive".into(),
        method: Some("delegate".into()),
        ..Default::default()
    };
    let out = app
        .store
        .create_delegation(&new, &inbox, molecule::domain::now())
        .await
        .unwrap();
    assert_eq!(out, molecule::store::Delegated::CalleeGone);
    assert_eq!(app.ledger().await.len(), 5);
}
on_both_engines!(removing_a_callee_fails_its_delegations_in_flight_and_refuses_new_ones);
