//! Approvals: the routes and their errors, the state machine (decided
//! exactly once, even by twenty racing deciders), escalation up a
//! three-level tree and then to the operator, expiry each way with
//! `decided_by: "expired"` (the expiry job driven with its own clock), and a
//! decision that survives a server restart and reaches a poll agent that
//! was offline — all on both engines.

use chrono::{DateTime, Duration as Span, Utc};
use molecule::app::Application;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::helpers::{spawn_app, Engine, TestApp, Ws};
use crate::on_both_engines;

impl TestApp {
    /// A poll workspace under `parent` (a root without one).
    async fn ws_in_tree(&self, name: &str, parent: Option<&Ws>) -> Ws {
        let mut body = json!({"name": name, "delivery_mode": "poll"});
        if let Some(p) = parent {
            body["parent_id"] = json!(p.id);
        }
        let (status, created) = self.create_workspace(body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        Ws {
            id: created["id"].as_str().unwrap().to_owned(),
            token: created["auth_token"].as_str().unwrap().to_owned(),
        }
    }

    /// `ws` asks for approval; the 201 body.
    async fn ask_approval(&self, ws: &Ws, body: Value) -> Value {
        let (status, created) = self
            .post(
                &format!("/workspaces/{}/approvals", ws.id),
                &ws.token,
                &body,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body} → {created}");
        created
    }

    async fn decide_as(&self, ws: &Ws, aid: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.post(
            &format!("/workspaces/{}/approvals/{aid}/decide", ws.id),
            token,
            &body,
        )
        .await
    }

    async fn get_approval(&self, ws: &Ws, aid: &str) -> Value {
        let (status, a) = self
            .get(&format!("/workspaces/{}/approvals/{aid}", ws.id), &ws.token)
            .await;
        assert_eq!(status, StatusCode::OK, "{a}");
        a
    }

    /// The inbox rows of `ws` with `method`.
    async fn approval_rows(&self, ws: &Ws, method: &str) -> Vec<Value> {
        let (status, rows) = self.activity(ws, "type=a2a_receive").await;
        assert_eq!(status, StatusCode::OK, "{rows}");
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["method"] == method)
            .cloned()
            .collect()
    }

    /// One run of the expiry job at `now`: (approved, denied, escalated).
    async fn expire_at(&self, now: DateTime<Utc>) -> (u64, u64, u64) {
        let c = self
            .sweeper
            .scheduler()
            .expire_approvals(now)
            .await
            .unwrap();
        let get = |n| c.get(n).unwrap();
        (get("approved"), get("denied"), get("escalated"))
    }

    /// Stops the server and starts a new one on the same database and
    /// data directory.
    async fn restart_server(&mut self) {
        self.stop().await;
        let app = Application::build(self.config.clone()).await.unwrap();
        self.address = format!("http://127.0.0.1:{}", app.port());
        self.store = app.state().store.clone();
        self.sweeper = app.sweeper();
        self.shutdown = CancellationToken::new();
        self.server = Some(tokio::spawn(app.run_until_stopped(self.shutdown.clone())));
    }
}

fn expires_at(a: &Value) -> DateTime<Utc> {
    a["expires_at"].as_str().unwrap().parse().unwrap()
}

async fn routes_state_machine_and_errors(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let lead = app.ws_in_tree("lead", None).await;
    let coder = app.ws_in_tree("coder", Some(&lead)).await;
    let stranger = app.ws_in_tree("stranger", None).await;
    let base = format!("/workspaces/{}/approvals", coder.id);

    // Bad requests: 400, nothing stored.
    for (body, why) in [
        (json!({}), "`action` is required"),
        (json!({"action": "  "}), "`action` is required"),
        (json!({"action": "x".repeat(201)}), "`action` is required"),
        (
            json!({"action": "a", "on_expiry": "later"}),
            "`on_expiry` must be one of deny, approve, escalate",
        ),
        (
            json!({"action": "a", "expires_in_s": 0}),
            "`expires_in_s` must be between",
        ),
        (
            json!({"action": "a", "reason": "r".repeat(8193)}),
            "`reason` must be at most",
        ),
    ] {
        let (status, err) = app.post(&base, &coder.token, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert!(
            err["error"].as_str().unwrap().starts_with(why),
            "{body}: {err}"
        );
    }
    // Only the workspace itself asks.
    let body = json!({"action": "deploy"});
    assert_eq!(
        app.post(&base, &app.admin_token, &body).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.post(&base, &lead.token, &body).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (_, rows) = app.get(&base, &coder.token).await;
    assert_eq!(rows, json!([]), "a refused request stored nothing");

    // A request goes to the parent and the operator.
    let created = app
        .ask_approval(
            &coder,
            json!({"action": "deploy to prod", "reason": "release 1.2",
            "context": {"commit": "abc123"}, "task_id": "t-9"}),
        )
        .await;
    let aid = created["approval_id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "pending");
    assert_eq!(created["approver_id"], json!(lead.id));
    let window = expires_at(&created) - Utc::now();
    assert!(
        window > Span::seconds(590) && window <= Span::seconds(600),
        "default 10 min: {window}"
    );
    let a = app.get_approval(&coder, &aid).await;
    assert_eq!(
        (
            &a["action"],
            &a["reason"],
            &a["context"],
            &a["task_id"],
            &a["on_expiry"],
            &a["decided_by"]
        ),
        (
            &json!("deploy to prod"),
            &json!("release 1.2"),
            &json!({"commit": "abc123"}),
            &json!("t-9"),
            &json!("deny"),
            &Value::Null
        )
    );
    let (status, pending) = app.get("/approvals/pending", &app.admin_token).await;
    assert_eq!(
        (status, pending[0]["id"].clone()),
        (StatusCode::OK, json!(aid))
    );
    assert_eq!(
        app.get("/approvals/pending", &lead.token).await.0,
        StatusCode::FORBIDDEN
    );
    let (_, to_decide) = app
        .get(
            &format!("/workspaces/{}/approvals?role=decider", lead.id),
            &lead.token,
        )
        .await;
    assert_eq!(to_decide.as_array().unwrap().len(), 1, "{to_decide}");
    let asked = app.approval_rows(&lead, "approval_requested").await;
    assert_eq!(asked.len(), 1, "the parent's inbox has the request");
    assert_eq!(asked[0]["data"]["approval_id"], json!(aid));
    let (status, err) = app.get(&format!("{base}?status=maybe"), &coder.token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");

    // Who may not decide, and bad decisions: nothing changes.
    let (status, err) = app
        .decide_as(&coder, &aid, &coder.token, json!({"decision": "approved"}))
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "never its own request: {err}"
    );
    assert_eq!(
        err["error"],
        "a workspace cannot decide its own approval request"
    );
    let (status, _) = app
        .decide_as(
            &coder,
            &aid,
            &stranger.token,
            json!({"decision": "approved"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not its decider");
    for body in [
        json!({}),
        json!({"decision": "approve"}),
        json!({"decision": "yes"}),
    ] {
        let (status, err) = app
            .decide_as(&coder, &aid, &app.admin_token, body.clone())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
    }
    let unknown = uuid::Uuid::new_v4();
    let (status, _) = app
        .decide_as(
            &coder,
            &unknown.to_string(),
            &app.admin_token,
            json!({"decision": "denied"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .decide_as(
            &coder,
            "nope",
            &app.admin_token,
            json!({"decision": "denied"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app
        .decide_as(
            &stranger,
            &aid,
            &app.admin_token,
            json!({"decision": "denied"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the request belongs to coder, not stranger"
    );
    assert_eq!(app.get_approval(&coder, &aid).await["status"], "pending");
    assert!(app
        .approval_rows(&coder, "approval_decided")
        .await
        .is_empty());

    // A long poll of the requester, parked before the decision, wakes with it.
    let since = app
        .activity(&coder, "type=a2a_receive")
        .await
        .1
        .as_array()
        .unwrap()
        .len();
    assert_eq!(since, 0);
    let poll = {
        let (client, url, token) = (
            app.client.clone(),
            app.url(&format!(
                "/workspaces/{}/activity?type=a2a_receive&since_id=0&wait=30",
                coder.id
            )),
            coder.token.clone(),
        );
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
    // The parent decides, with a note.
    let (status, decided) = app
        .decide_as(
            &coder,
            &aid,
            &lead.token,
            json!({"decision": "approved", "note": "ship it"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    assert_eq!(
        (
            &decided["status"],
            &decided["decided_by"],
            &decided["note"],
            &decided["expires_at"]
        ),
        (
            &json!("approved"),
            &json!(lead.id),
            &json!("ship it"),
            &Value::Null
        )
    );
    let (rows, waited) = poll.await.unwrap();
    assert!(
        waited < std::time::Duration::from_secs(20),
        "woken by the decision, not the timeout"
    );
    let row = &rows[0];
    assert_eq!(
        (&row["method"], &row["status"]),
        (&json!("approval_decided"), &json!("approved"))
    );
    assert_eq!(
        (
            &row["data"]["approval_id"],
            &row["data"]["decision"],
            &row["data"]["decided_by"],
            &row["data"]["note"],
            &row["data"]["task_id"]
        ),
        (
            &json!(aid),
            &json!("approved"),
            &json!(lead.id),
            &json!("ship it"),
            &json!("t-9")
        )
    );

    // Decided once: later decides are 409 with the decision that won.
    for token in [&app.admin_token, &lead.token] {
        let (status, err) = app
            .decide_as(&coder, &aid, token, json!({"decision": "denied"}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{err}");
        assert_eq!(err["current_status"], "approved");
    }
    assert_eq!(app.approval_rows(&coder, "approval_decided").await.len(), 1);
    let (_, approved) = app
        .get(&format!("{base}?status=approved"), &coder.token)
        .await;
    assert_eq!(approved.as_array().unwrap().len(), 1);
    let (_, pending) = app.get("/approvals/pending", &app.admin_token).await;
    assert_eq!(pending, json!([]));

    // A root's request: the operator alone decides it.
    let solo = app
        .ask_approval(&stranger, json!({"action": "rotate keys"}))
        .await;
    assert_eq!(solo["approver_id"], Value::Null);
    let sid = solo["approval_id"].as_str().unwrap();
    let (status, decided) = app
        .decide_as(
            &stranger,
            sid,
            &app.admin_token,
            json!({"decision": "denied"}),
        )
        .await;
    assert_eq!(
        (status, &decided["decided_by"]),
        (StatusCode::OK, &json!("operator"))
    );
}

on_both_engines!(routes_state_machine_and_errors);

async fn twenty_racing_decides_make_exactly_one_decision(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let lead = app.ws_in_tree("lead", None).await;
    let coder = app.ws_in_tree("coder", Some(&lead)).await;
    let aid = app
        .ask_approval(&coder, json!({"action": "drop table"}))
        .await["approval_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let racers = (0..20).map(|i| {
        let token = if i % 2 == 0 {
            app.admin_token.clone()
        } else {
            lead.token.clone()
        };
        let decision = if i % 3 == 0 { "approved" } else { "denied" };
        let url = app.url(&format!("/workspaces/{}/approvals/{aid}/decide", coder.id));
        let client = app.client.clone();
        tokio::spawn(async move {
            let resp = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"decision": decision}))
                .send()
                .await
                .unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        })
    });
    let answers: Vec<(StatusCode, Value)> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let winners: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    let won = winners[0].1["status"].clone();
    for (status, body) in answers.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_eq!(*status, StatusCode::CONFLICT, "{body}");
        assert_eq!(
            body["current_status"], won,
            "every loser is told the decision that won"
        );
    }
    let stored = app.get_approval(&coder, &aid).await;
    assert_eq!(
        (&stored["status"], &stored["decided_by"]),
        (&won, &winners[0].1["decided_by"])
    );
    let rows = app.approval_rows(&coder, "approval_decided").await;
    assert_eq!(rows.len(), 1, "one decision, one inbox row");
    assert_eq!(rows[0]["status"], won);
}

on_both_engines!(twenty_racing_decides_make_exactly_one_decision);

async fn escalation_climbs_a_three_level_tree_then_reaches_the_operator(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let root = app.ws_in_tree("root", None).await;
    let mid = app.ws_in_tree("mid", Some(&root)).await;
    let leaf = app.ws_in_tree("leaf", Some(&mid)).await;
    let created = app
        .ask_approval(
            &leaf,
            json!({"action": "spend $500", "expires_in_s": 60, "on_expiry": "escalate"}),
        )
        .await;
    let aid = created["approval_id"].as_str().unwrap().to_owned();
    assert_eq!(created["approver_id"], json!(mid.id));
    let first = expires_at(&created);

    assert_eq!(
        app.expire_at(first - Span::seconds(1)).await,
        (0, 0, 0),
        "not due yet"
    );
    assert_eq!(app.expire_at(first).await, (0, 0, 1));
    let a = app.get_approval(&leaf, &aid).await;
    assert_eq!(
        (&a["status"], &a["approver_id"], &a["escalations"]),
        (&json!("pending"), &json!(root.id), &json!(1))
    );
    assert_eq!(
        expires_at(&a),
        first + Span::seconds(60),
        "a fresh window for the next decider"
    );
    assert_eq!(
        app.approval_rows(&root, "approval_requested").await.len(),
        1,
        "the root is told"
    );
    let (status, _) = app
        .decide_as(&leaf, &aid, &mid.token, json!({"decision": "approved"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "mid no longer decides it");
    let (_, for_mid) = app
        .get(
            &format!("/workspaces/{}/approvals?role=decider", mid.id),
            &mid.token,
        )
        .await;
    assert_eq!(for_mid, json!([]));

    // Past the root: the operator alone, who then holds it (no expiry).
    assert_eq!(app.expire_at(first + Span::seconds(60)).await, (0, 0, 1));
    let a = app.get_approval(&leaf, &aid).await;
    assert_eq!(
        (
            &a["status"],
            &a["approver_id"],
            &a["escalations"],
            &a["expires_at"]
        ),
        (&json!("pending"), &Value::Null, &json!(2), &Value::Null)
    );
    assert_eq!(app.expire_at(first + Span::days(30)).await, (0, 0, 0));
    let (status, _) = app
        .decide_as(&leaf, &aid, &root.token, json!({"decision": "approved"}))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the root no longer decides it"
    );
    let (status, decided) = app
        .decide_as(
            &leaf,
            &aid,
            &app.admin_token,
            json!({"decision": "denied", "note": "too much"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    assert_eq!(decided["decided_by"], "operator");
    let rows = app.approval_rows(&leaf, "approval_decided").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["data"]["decision"], "denied");
    assert_eq!(
        app.metric("molecule_approvals_total{event=\"escalated\"}")
            .await,
        2.0
    );
}

on_both_engines!(escalation_climbs_a_three_level_tree_then_reaches_the_operator);

async fn expiry_denies_or_approves_on_time_as_expired(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let lead = app.ws_in_tree("lead", None).await;
    let coder = app.ws_in_tree("coder", Some(&lead)).await;
    let deny = app
        .ask_approval(&coder, json!({"action": "a", "expires_in_s": 30}))
        .await;
    let approve = app
        .ask_approval(
            &coder,
            json!({"action": "b", "expires_in_s": 30, "on_expiry": "approve"}),
        )
        .await;
    let kept = app
        .ask_approval(&coder, json!({"action": "c", "expires_in_s": 3600}))
        .await;
    let due = expires_at(&deny).max(expires_at(&approve));

    assert_eq!(app.expire_at(due).await, (1, 1, 0));
    assert_eq!(app.expire_at(due).await, (0, 0, 0), "each expires once");
    for (created, status) in [
        (&deny, "denied"),
        (&approve, "approved"),
        (&kept, "pending"),
    ] {
        let aid = created["approval_id"].as_str().unwrap();
        let a = app.get_approval(&coder, aid).await;
        assert_eq!(a["status"], status, "{a}");
        let by = if status == "pending" {
            Value::Null
        } else {
            json!("expired")
        };
        assert_eq!(a["decided_by"], by, "{a}");
    }
    let rows = app.approval_rows(&coder, "approval_decided").await;
    let got: Vec<_> = rows
        .iter()
        .map(|r| (r["data"]["action"].clone(), r["data"]["decided_by"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (json!("a"), json!("expired")),
            (json!("b"), json!("expired"))
        ]
    );
    // A person after the clock: told what the clock decided.
    let aid = deny["approval_id"].as_str().unwrap();
    let (status, err) = app
        .decide_as(&coder, aid, &lead.token, json!({"decision": "approved"}))
        .await;
    assert_eq!(
        (status, &err["current_status"]),
        (StatusCode::CONFLICT, &json!("denied"))
    );
}

on_both_engines!(expiry_denies_or_approves_on_time_as_expired);

async fn a_decision_survives_a_restart_and_reaches_an_offline_poll_agent(engine: Engine) {
    let Some(mut app) = spawn_app(engine).await else {
        return;
    };
    let lead = app.ws_in_tree("lead", None).await;
    let coder = app.ws_in_tree("coder", Some(&lead)).await;
    let aid = app
        .ask_approval(&coder, json!({"action": "merge", "task_id": "t1"}))
        .await["approval_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The agent goes offline (it polls no more); the operator decides.
    let (status, _) = app
        .decide_as(
            &coder,
            &aid,
            &app.admin_token,
            json!({"decision": "approved", "note": "ok"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.restart_server().await;
    // Back online, the agent polls from where it was (cursor 0).
    let rows = app.approval_rows(&coder, "approval_decided").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            &rows[0]["data"]["approval_id"],
            &rows[0]["data"]["decision"],
            &rows[0]["data"]["note"],
            &rows[0]["data"]["task_id"]
        ),
        (&json!(aid), &json!("approved"), &json!("ok"), &json!("t1"))
    );
    let a = app.get_approval(&coder, &aid).await;
    assert_eq!(
        (&a["status"], &a["decided_by"]),
        (&json!("approved"), &json!("operator"))
    );
    let (status, err) = app
        .decide_as(&coder, &aid, &lead.token, json!({"decision": "denied"}))
        .await;
    assert_eq!(
        (status, &err["current_status"]),
        (StatusCode::CONFLICT, &json!("approved"))
    );
    app.stop().await;
}

on_both_engines!(a_decision_survives_a_restart_and_reaches_an_offline_poll_agent);
