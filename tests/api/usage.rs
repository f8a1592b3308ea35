//! Usage and budgets on both engines: usage from every source (`POST
//! /usage`, a delegation's status report, a push agent's forwarded answer,
//! the heartbeat's `monthly_spend`) summed per day and model and shown by
//! every read and in Prometheus; a team's budget covering its subtree, its
//! 80 % warning raised once, and at 100 % a 402 on every path that starts
//! work (A2A send, delegation with its failed ledger row, MCP delegation,
//! schedule fire recorded on the schedule), lifted by the operator.

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Engine, TestApp, Ws};
use crate::on_both_engines;

impl TestApp {
    async fn report_usage(&self, ws: &Ws, usage: Value) -> (StatusCode, Value) {
        self.post(&format!("/workspaces/{}/usage", ws.id), &ws.token, &usage)
            .await
    }

    async fn patch_budget(&self, ws: &Ws, token: &str, body: Value) -> (StatusCode, Value) {
        let resp = self
            .client
            .patch(self.url(&format!("/workspaces/{}/budget", ws.id)))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        Self::json(resp).await
    }

    async fn budget_of(&self, ws: &Ws) -> Value {
        let (status, b) = self
            .get(&format!("/workspaces/{}/budget", ws.id), &ws.token)
            .await;
        assert_eq!(status, StatusCode::OK, "{b}");
        b
    }

    async fn rows_of(&self, ws: &Ws, query: &str) -> Vec<Value> {
        let (status, rows) = self.activity(ws, query).await;
        assert_eq!(status, StatusCode::OK, "{rows}");
        rows.as_array().unwrap().clone()
    }
}

/// A push agent whose every answer carries `usage`.
async fn spawn_agent_with_usage(usage: Value) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let usage = usage.clone();
            async move {
                axum::Json(json!({"jsonrpc": "2.0", "id": body["id"], "result": {
                    "kind": "message", "role": "agent", "messageId": "m1",
                    "parts": [{"kind": "text", "text": "done"}], "usage": usage}}))
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://127.0.0.1:{port}/")
}

fn today() -> String {
    Utc::now().format("%Y-%m-%d").to_string()
}

async fn usage_from_every_source_is_summed_by_day_and_model(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let team = app.create_poll_workspace_under("team", None).await;
    let a = app.create_poll_workspace_under("a", Some(&team)).await;
    let admin = app.admin_token.clone();

    // POST /usage, priced by the table (gpt-4o: $2.50 / $10 per million).
    let (status, body) = app
        .report_usage(
            &a,
            json!({"input_tokens": 1000, "output_tokens": 500, "model": "gpt-4o"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body,
        json!({"day": today(), "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 500, "cost_usd": 0.0075})
    );
    // The agent's own cost wins; an unknown model is `other` in metrics.
    let (status, body) = app
        .report_usage(&a, json!({"prompt_tokens": 10, "completion_tokens": 5, "model": "llama-x", "cost_usd": 0.5}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["cost_usd"], 0.5);
    // Bad reports: 400 with the field named, nothing recorded.
    for (bad, needle) in [
        (json!({"input_tokens": -1}), "`input_tokens`"),
        (json!({"input_tokens": 1, "cost_usd": "free"}), "`cost_usd`"),
        (json!({"model": ""}), "`model`"),
        (json!([1]), "`usage` must be an object"),
    ] {
        let (status, body) = app.report_usage(&a, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} → {body}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{bad} → {body}"
        );
    }

    // A delegation's completed report carries usage; a retried report does not count twice.
    let (status, d) = app
        .post(
            &format!("/workspaces/{}/delegate", a.id),
            &admin,
            &json!({"task": "t"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{d}");
    let report = json!({"status": "completed", "result_preview": "ok",
        "usage": {"input_tokens": 2000, "output_tokens": 0, "model": "gpt-4o"}});
    let path = format!(
        "/workspaces/{}/delegations/{}/status",
        a.id,
        d["delegation_id"].as_str().unwrap()
    );
    for _ in 0..2 {
        let (status, body) = app.post(&path, &a.token, &report).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = app
        .post(
            &path,
            &a.token,
            &json!({"status": "completed", "usage": {"input_tokens": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // A push agent's forwarded answer.
    let url = spawn_agent_with_usage(
        json!({"input_tokens": 7, "output_tokens": 3, "model": "anthropic/claude-sonnet-4-5", "cost_usd": 0.01}),
    )
    .await;
    let p = app.create_push_workspace("pushy", &url).await;
    let (status, body) = app
        .post(&format!("/workspaces/{}/a2a", p.id), &admin,
            &json!({"method": "message/send", "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": "hi"}]}}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Reads.
    let (status, m) = app
        .get(&format!("/workspaces/{}/metrics", a.id), &a.token)
        .await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(
        m,
        json!({"workspace_id": a.id, "date": today(), "input_tokens": 3010, "output_tokens": 505,
            "total_calls": 3, "cost_usd": 0.5125})
    );
    let (status, u) = app
        .get(
            &format!("/workspaces/{}/usage?group_by=model", a.id),
            &admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{u}");
    assert_eq!(
        u["rows"],
        json!([
            {"key": "gpt-4o", "input_tokens": 3000, "output_tokens": 500, "calls": 2, "cost_usd": 0.0125},
            {"key": "llama-x", "input_tokens": 10, "output_tokens": 5, "calls": 1, "cost_usd": 0.5},
        ])
    );
    let (_, u) = app
        .get(&format!("/workspaces/{}/usage", p.id), &p.token)
        .await;
    assert_eq!(u["group_by"], "day");
    assert_eq!(
        u["rows"],
        json!([{"key": today(), "input_tokens": 7, "output_tokens": 3, "calls": 1, "cost_usd": 0.01}])
    );
    let (status, f) = app.get("/admin/usage?group_by=team", &admin).await;
    assert_eq!(status, StatusCode::OK, "{f}");
    let mut teams: Vec<(String, i64)> = f["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_owned(),
                r["input_tokens"].as_i64().unwrap(),
            )
        })
        .collect();
    teams.sort();
    let mut want = vec![(team.id.clone(), 3010), (p.id.clone(), 7)];
    want.sort();
    assert_eq!(teams, want, "{f}");
    let (_, f) = app.get("/admin/usage?group_by=day", &admin).await;
    assert_eq!(f["rows"][0]["input_tokens"], 3017, "{f}");

    // A team's own usage panel: its subtree's, by model and by day; its
    // own usage alone is none.
    let (status, u) = app
        .get(
            &format!("/workspaces/{}/usage?group_by=model&scope=subtree", team.id),
            &team.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{u}");
    assert_eq!(
        u["rows"],
        app.get(
            &format!("/workspaces/{}/usage?group_by=model", a.id),
            &admin
        )
        .await
        .1["rows"]
    );
    let (_, u) = app
        .get(
            &format!("/workspaces/{}/usage?scope=subtree", team.id),
            &admin,
        )
        .await;
    assert_eq!(
        u["rows"],
        json!([{"key": today(), "input_tokens": 3010, "output_tokens": 505, "calls": 3, "cost_usd": 0.5125}])
    );
    let (_, u) = app
        .get(
            &format!("/workspaces/{}/usage?scope=workspace", team.id),
            &admin,
        )
        .await;
    assert_eq!(u["rows"], json!([]));

    // Errors of the reads.
    for q in [
        "group_by=week",
        "from=2026-13-01",
        "from=2026-02-01&to=2026-01-01",
        "from=2020-01-01&to=2026-01-01",
        "scope=team",
    ] {
        let (status, body) = app
            .get(&format!("/workspaces/{}/usage?{q}", a.id), &admin)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q} → {body}");
    }
    let (status, _) = app.get("/admin/usage", &a.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app.get("/admin/usage?scope=subtree", &admin).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // The heartbeat's monthly_spend counts when above the recorded sum.
    let (status, body) = app
        .post(
            "/registry/heartbeat",
            &a.token,
            &json!({"workspace_id": a.id, "monthly_spend": 1234}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post(
            "/registry/heartbeat",
            &a.token,
            &json!({"workspace_id": a.id, "monthly_spend": -1}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        app.budget_of(&a).await,
        json!({"budget_limit": null, "monthly_spend": 1234, "budget_remaining": null, "budget_exceeded": false})
    );
    // The team's spend is its subtree's: a's 1234 cents, its own nothing.
    assert_eq!(app.budget_of(&team).await["monthly_spend"], 1234);

    // Prometheus, with bounded model labels.
    let text = app.metrics_text().await;
    let series = |s: &str| crate::helpers::metric_value(&text, s);
    assert_eq!(
        series(&format!(
            "molecule_tokens_total{{direction=\"input\",model=\"gpt-4o\",workspace=\"{}\"}}",
            a.id
        )),
        3000.0
    );
    assert_eq!(
        series(&format!(
            "molecule_tokens_total{{direction=\"output\",model=\"other\",workspace=\"{}\"}}",
            a.id
        )),
        5.0
    );
    assert_eq!(
        series(&format!("molecule_tokens_total{{direction=\"input\",model=\"claude-sonnet-4\",workspace=\"{}\"}}", p.id)),
        7.0
    );
    let cost = series(&format!(
        "molecule_cost_usd_total{{workspace=\"{}\"}}",
        a.id
    ));
    assert!((cost - 0.5125).abs() < 1e-9, "{cost}");
}
on_both_engines!(usage_from_every_source_is_summed_by_day_and_model);

async fn a_spent_team_budget_refuses_every_path_with_402(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let team = app.create_poll_workspace_under("team", None).await;
    let c = app.create_poll_workspace_under("c", Some(&team)).await;
    let s = app.create_poll_workspace_under("s", Some(&team)).await;
    let admin = app.admin_token.clone();

    // Only the operator sets a ceiling; bad values change nothing.
    let (status, _) = app
        .patch_budget(&team, &c.token, json!({"budget_limit": null}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "an operator route");
    let (status, _) = app
        .patch_budget(&c, &c.token, json!({"budget_limit": null}))
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an agent cannot lift its own ceiling"
    );
    for bad in [
        json!({}),
        json!({"budget_limit": -5}),
        json!({"budget_limit": 1.5}),
        json!({"budget_limit": "100"}),
    ] {
        let (status, body) = app.patch_budget(&team, &admin, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} → {body}");
    }
    assert_eq!(app.budget_of(&team).await["budget_limit"], Value::Null);
    let (status, body) = app
        .patch_budget(&team, &admin, json!({"budget_limit": 100}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"budget_limit": 100, "monthly_spend": 0, "budget_remaining": 100, "budget_exceeded": false})
    );

    // 85 cents by the child: the team's 80 % warning, once.
    app.report_usage(&c, json!({"model": "x", "cost_usd": 0.85}))
        .await;
    let w = app.rows_of(&team, "type=budget_warning").await;
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(
        w[0]["summary"],
        "85 % of the monthly budget is spent: 85 of 100 cents"
    );
    assert_eq!(w[0]["data"]["budget_limit"], 100);
    app.report_usage(&c, json!({"model": "x", "cost_usd": 0.05}))
        .await;
    assert_eq!(
        app.rows_of(&team, "type=budget_warning").await.len(),
        1,
        "raised once a month"
    );
    assert_eq!(
        app.rows_of(&c, "type=budget_warning").await.len(),
        0,
        "on the budget's owner"
    );
    // Under the ceiling, work goes on.
    assert_eq!(app.budget_of(&c).await["budget_exceeded"], false);

    // 100 cents: spent.
    app.report_usage(&c, json!({"model": "x", "cost_usd": 0.1}))
        .await;
    assert_eq!(
        app.budget_of(&team).await,
        json!({"budget_limit": 100, "monthly_spend": 100, "budget_remaining": 0, "budget_exceeded": true})
    );
    assert_eq!(app.budget_of(&c).await["budget_exceeded"], true);
    let sentence = format!(
        "budget exceeded: workspace {} has spent 100 of 100 cents of its team's (set on {}) monthly budget",
        c.id, team.id
    );
    let inbox_before = app.rows_of(&c, "type=a2a_receive").await.len();

    // A2A send (Molecule's bare form and A2A 0.3): 402, nothing queued.
    for body in [
        json!({"message": {"role": "user", "parts": [{"kind": "text", "text": "hi"}]}}),
        json!({"jsonrpc": "2.0", "id": 1, "method": "message/send",
            "params": {"message": {"role": "user", "messageId": "m", "parts": [{"kind": "text", "text": "hi"}]}}}),
    ] {
        let (status, answer) = app
            .post(&format!("/workspaces/{}/a2a", c.id), &admin, &body)
            .await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body} → {answer}");
        assert_eq!(answer, json!({"error": sentence}));
    }
    // A delegation: 402, and a failed ledger row.
    let (status, answer) = app
        .post(
            &format!("/workspaces/{}/delegate", c.id),
            &admin,
            &json!({"task": "more work"}),
        )
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{answer}");
    assert_eq!(answer, json!({"error": sentence}));
    let (_, ledger) = app
        .get(&format!("/workspaces/{}/delegations", c.id), &admin)
        .await;
    let ledger = ledger.as_array().unwrap();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0]["status"], "failed");
    assert_eq!(ledger[0]["error_detail"], "budget exceeded");
    // An MCP delegation from a sibling: the tool's error, another failed row.
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "delegate_task_async", "arguments": {"workspace_id": c.id, "task": "via mcp"}}});
    let resp = app
        .client
        .post(app.url(&format!("/workspaces/{}/mcp", s.id)))
        .bearer_auth(&s.token)
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2024-11-05")
        .json(&call)
        .send()
        .await
        .unwrap();
    let (status, body) = TestApp::json(resp).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["isError"], true, "{body}");
    assert_eq!(body["result"]["content"][0]["text"], sentence, "{body}");
    let (_, ledger) = app
        .get(
            &format!("/workspaces/{}/delegations?status=failed", c.id),
            &admin,
        )
        .await;
    assert_eq!(ledger.as_array().unwrap().len(), 2, "{ledger}");
    // A schedule fire: held back and recorded on the schedule.
    let (status, sched) = app
        .post(
            &format!("/workspaces/{}/schedules", c.id),
            &c.token,
            &json!({"name": "nightly", "cron_expr": "0 3 * * *", "prompt": "report"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sched}");
    let due: DateTime<Utc> = sched["next_run_at"].as_str().unwrap().parse().unwrap();
    let counts = app.sweeper.scheduler().tick(due).await.unwrap();
    assert_eq!(
        (counts.get("delivered"), counts.get("skipped")),
        (Some(0), Some(1))
    );
    let sid = sched["id"].as_str().unwrap();
    let (_, list) = app
        .get(&format!("/workspaces/{}/schedules", c.id), &c.token)
        .await;
    let s1 = &list[0];
    assert_eq!(s1["id"], sid);
    assert_eq!(s1["last_status"], "skipped", "{s1}");
    assert_eq!(s1["last_error"], sentence, "{s1}");
    let (_, h) = app
        .get(
            &format!("/workspaces/{}/schedules/{sid}/history", c.id),
            &c.token,
        )
        .await;
    assert_eq!(h[0]["status"], "skipped", "{h}");
    assert_eq!(h[0]["detail"], sentence, "{h}");
    // Nothing reached the inbox by any path.
    assert_eq!(
        app.rows_of(&c, "type=a2a_receive").await.len(),
        inbox_before
    );
    // Reads still answer.
    let (status, _) = app
        .get(&format!("/workspaces/{}/usage", c.id), &c.token)
        .await;
    assert_eq!(status, StatusCode::OK);

    // The operator lifts the ceiling: work flows again.
    let (status, body) = app
        .patch_budget(&team, &admin, json!({"budget_limit": null}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["budget_exceeded"], false);
    let (status, answer) = app
        .post(
            &format!("/workspaces/{}/delegate", c.id),
            &admin,
            &json!({"task": "again"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
}
on_both_engines!(a_spent_team_budget_refuses_every_path_with_402);
