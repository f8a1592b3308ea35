//! Teams and lifecycle: the parent tree, soft delete, pause/resume/restart,
//! the state route, heartbeat fields, tiers and default models, the
//! phantom-busy sweep and org import (idempotent, dry run, concurrent).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Engine, Options, TestApp, Ws};
use crate::on_both_engines;

impl TestApp {
    async fn create_json(&self, body: Value) -> (Ws, Value) {
        let (status, created) = self.create_workspace(body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let ws = Ws {
            id: created["id"].as_str().unwrap().to_owned(),
            token: created["auth_token"].as_str().unwrap().to_owned(),
        };
        (ws, created)
    }

    async fn child(&self, name: &str, parent: Option<&Ws>) -> Ws {
        let mut body = json!({"name": name, "delivery_mode": "poll"});
        if let Some(p) = parent {
            body["parent_id"] = json!(p.id);
        }
        self.create_json(body).await.0
    }

    async fn patch(&self, id: &str, body: Value) -> (StatusCode, Value) {
        Self::json(
            self.client
                .patch(self.url(&format!("/workspaces/{id}")))
                .bearer_auth(&self.admin_token)
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        Self::json(
            self.client
                .delete(self.url(path))
                .bearer_auth(&self.admin_token)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn import(&self, query: &str, content_type: &str, body: &str) -> (StatusCode, Value) {
        Self::json(
            self.client
                .post(self.url(&format!("/org/import{query}")))
                .bearer_auth(&self.admin_token)
                .header("content-type", content_type)
                .body(body.to_owned())
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn lifecycle(&self, id: &str, verb: &str, token: &str) -> (StatusCode, Value) {
        self.post(&format!("/workspaces/{id}/{verb}"), token, &json!({}))
            .await
    }

    /// Live rows in the store (not through the API).
    async fn live_rows(&self) -> Vec<molecule::store::Workspace> {
        self.store.list_workspaces().await.unwrap()
    }
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn tree_fields_parent_children_filter_and_defaults(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (lead, created) = app
        .create_json(json!({"name": "lead", "delivery_mode": "poll"}))
        .await;
    assert_eq!(
        (
            &created["parent_id"],
            &created["children"],
            &created["tier"],
            &created["runtime"],
            &created["model"],
            &created["status"],
            &created["collapsed"],
            &created["active_tasks"],
        ),
        (
            &Value::Null,
            &json!([]),
            &json!(3),
            &json!("external"),
            &json!(molecule::domain::DEFAULT_UNIVERSAL_MODEL),
            &json!("offline"),
            &json!(false),
            &json!(0)
        )
    );
    let (coder, created) = app
        .create_json(
            json!({"name": "coder", "delivery_mode": "poll", "parent_id": lead.id,
            "tier": 2, "runtime": "claude-code"}),
        )
        .await;
    assert_eq!(
        (&created["parent_id"], &created["tier"], &created["model"]),
        (&json!(lead.id), &json!(2), &json!("sonnet"))
    );
    let writer = app.child("writer", Some(&lead)).await;
    let (status, body) = app
        .get(&format!("/workspaces/{}", lead.id), &lead.token)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["children"], json!([coder.id, writer.id]));
    let (_, body) = app
        .get(
            &format!("/workspaces?parent_id={}", lead.id),
            &app.admin_token,
        )
        .await;
    assert_eq!(ids(&body), vec![coder.id.clone(), writer.id.clone()]);
    let (_, body) = app.get("/workspaces?parent_id=", &app.admin_token).await;
    assert_eq!(ids(&body), vec![lead.id.clone()]);
    assert_eq!(body[0]["children"], json!([coder.id, writer.id]));
    let (status, body) = app
        .get("/workspaces?parent_id=nope", &app.admin_token)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Errors leave nothing behind.
    let unknown = uuid::Uuid::new_v4();
    let cases = [
        (
            json!({"name": "x", "delivery_mode": "poll", "tier": 5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": "`tier` must be 1, 2, 3 or 4, not 5"}),
        ),
        (
            json!({"name": "x", "delivery_mode": "poll", "tier": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": "`tier` must be 1, 2, 3 or 4, not 0"}),
        ),
        (
            json!({"name": "x", "delivery_mode": "poll", "parent_id": unknown}),
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": format!("parent workspace {unknown} does not exist (or was removed)")}),
        ),
        (
            json!({"name": "x", "delivery_mode": "poll", "parent_id": "nope"}),
            StatusCode::BAD_REQUEST,
            json!({"error": "`parent_id`: `nope` is not a valid id: ids are UUIDs such as 6f1c2a4e-0b7d-4c55-9a47-3b8f0e9d2c11"}),
        ),
        (
            json!({"name": "x", "delivery_mode": "poll", "runtime": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": "`runtime` must be 1 to 100 printable characters"}),
        ),
    ];
    for (body, want_status, want_body) in cases {
        let (status, answer) = app.create_workspace(body.clone()).await;
        assert_eq!((status, answer), (want_status, want_body), "{body}");
    }
    assert_eq!(app.live_rows().await.len(), 3);
}
on_both_engines!(tree_fields_parent_children_filter_and_defaults);

async fn default_tier_and_model_follow_the_configuration(engine: Engine) {
    let Some(app) = spawn_app_with(Options::new(engine).tweak(|c| {
        c.default_tier = molecule::domain::Tier::new(1).unwrap();
        c.default_model = "universal-x".into();
    }))
    .await
    else {
        return;
    };
    let (_, plain) = app
        .create_json(json!({"name": "a", "delivery_mode": "poll", "runtime": "codex"}))
        .await;
    assert_eq!(
        (&plain["tier"], &plain["model"], &plain["runtime"]),
        (&json!(1), &json!("universal-x"), &json!("codex"))
    );
    let (_, claude) = app
        .create_json(json!({"name": "b", "delivery_mode": "poll", "runtime": "claude-code", "model": "opus"}))
        .await;
    assert_eq!(claude["model"], "opus");
    // Org import takes its defaults from the same rule.
    let (status, report) = app
        .import(
            "",
            "application/yaml",
            "workspaces:\n  - name: t\n    runtime: claude-code\n  - name: u\n",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let rows = app.live_rows().await;
    let t = rows.iter().find(|w| w.name == "t").unwrap();
    let u = rows.iter().find(|w| w.name == "u").unwrap();
    assert_eq!(
        (
            t.tier.get(),
            t.model.as_deref(),
            u.tier.get(),
            u.model.as_deref()
        ),
        (1, Some("sonnet"), 1, Some("universal-x"))
    );
}
on_both_engines!(default_tier_and_model_follow_the_configuration);

async fn patch_reparents_folds_and_refuses_cycles(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.child("a", None).await;
    let b = app.child("b", Some(&a)).await;
    let c = app.child("c", Some(&b)).await;
    let (status, body) = app.patch(&a.id, json!({"parent_id": c.id})).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": format!("a workspace cannot be its own ancestor: {} → {} → {} → {}", a.id, c.id, b.id, a.id)})
        )
    );
    let (status, body) = app.patch(&a.id, json!({"parent_id": a.id})).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": format!("a workspace cannot be its own ancestor: {} → {}", a.id, a.id)})
        )
    );
    let unknown = uuid::Uuid::new_v4();
    let (status, _) = app.patch(&a.id, json!({"parent_id": unknown})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app.patch(&a.id, json!({"tier": 7})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Nothing changed.
    let rows = app.live_rows().await;
    let row_a = rows.iter().find(|w| w.id.to_string() == a.id).unwrap();
    assert_eq!((row_a.parent_id, row_a.tier.get()), (None, 3));

    let (status, body) = app
        .patch(
            &c.id,
            json!({"parent_id": a.id, "collapsed": true, "tier": 4, "runtime": "claude-code", "model": "opus"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (
            &body["parent_id"],
            &body["collapsed"],
            &body["tier"],
            &body["runtime"],
            &body["model"]
        ),
        (
            &json!(a.id),
            &json!(true),
            &json!(4),
            &json!("claude-code"),
            &json!("opus")
        )
    );
    let (_, body) = app
        .get(&format!("/workspaces/{}", a.id), &app.admin_token)
        .await;
    assert_eq!(body["children"], json!([b.id, c.id]));
    let (status, body) = app.patch(&c.id, json!({"parent_id": null})).await;
    assert_eq!((status, &body["parent_id"]), (StatusCode::OK, &Value::Null));
}
on_both_engines!(patch_reparents_folds_and_refuses_cycles);

async fn delete_with_live_children_is_409_unless_cascade(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let lead = app.child("lead", None).await;
    let a = app.child("a", Some(&lead)).await;
    let a1 = app.child("a1", Some(&a)).await;
    let b = app.child("b", Some(&lead)).await;
    let (status, body) = app.delete(&format!("/workspaces/{}", lead.id)).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::CONFLICT,
            json!({"error": format!("workspace {} has 2 live child workspaces; delete them first or pass ?cascade=true to remove the whole subtree", lead.id)})
        )
    );
    assert_eq!(app.live_rows().await.len(), 4, "nothing removed");
    // A removed child no longer blocks its parent.
    let (status, _) = app.delete(&format!("/workspaces/{}", b.id)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app
        .delete(&format!("/workspaces/{}?cascade=true", lead.id))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(app.live_rows().await.is_empty());
    for ws in [&lead, &a, &a1, &b] {
        let row = app.store.get_workspace(ws.wid()).await.unwrap().unwrap();
        assert!(row.removed_at.is_some(), "{} kept, marked removed", ws.id);
        let (status, _) = app.get(&format!("/workspaces/{}", ws.id), &ws.token).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "token of {} revoked",
            ws.id
        );
    }
    let (status, body) = app.get("/workspaces", &app.admin_token).await;
    assert_eq!((status, body), (StatusCode::OK, json!([])));
    // A removed workspace has no live token, but may not bootstrap one.
    let (status, body) = TestApp::json(
        app.client
            .post(app.url("/registry/register"))
            .json(&json!({"id": a.id, "delivery_mode": "poll"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "workspace not found"})
        )
    );
    let (status, _) = app.delete(&format!("/workspaces/{}", lead.id)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .delete(&format!("/workspaces/{}?cascade=maybe", lead.id))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
on_both_engines!(delete_with_live_children_is_409_unless_cascade);

async fn state_answers_exactly_as_specified(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.child("w", None).await;
    let other = app.child("other", None).await;
    let path = format!("/workspaces/{}/state", ws.id);
    let live = |status: &str, paused: bool| json!({"workspace_id": ws.id, "status": status, "paused": paused, "deleted": false});
    assert_eq!(
        app.get(&path, &ws.token).await,
        (StatusCode::OK, live("offline", false))
    );
    let (status, _) = app
        .post(
            "/registry/heartbeat",
            &ws.token,
            &json!({"workspace_id": ws.id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.get(&path, &app.admin_token).await,
        (StatusCode::OK, live("online", false))
    );
    let (status, _) = app.lifecycle(&ws.id, "pause", &app.admin_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.get(&path, &ws.token).await,
        (StatusCode::OK, live("paused", true))
    );
    let (status, _) = app.lifecycle(&ws.id, "resume", &app.admin_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.get(&path, &ws.token).await,
        (StatusCode::OK, live("online", false))
    );
    // Another workspace's token: the same 401 as an unknown token.
    assert_eq!(
        app.get(&path, &other.token).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.get(&path, "nope").await.0, StatusCode::UNAUTHORIZED);

    let (status, _) = app.delete(&format!("/workspaces/{}", ws.id)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for token in [&app.admin_token, &ws.token] {
        assert_eq!(
            app.get(&path, token).await,
            (StatusCode::NOT_FOUND, json!({"deleted": true}))
        );
    }
    // The revoked token works nowhere else.
    assert_eq!(
        app.get(&format!("/workspaces/{}", ws.id), &ws.token)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get(&path, &other.token).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Forgotten after the retention: an ordinary 404.
    let later = molecule::domain::now() + chrono::Duration::days(8);
    let out = app.sweeper.sweep_once(later).await.unwrap();
    assert_eq!(out.count("removed_workspaces", "purged"), 1);
    assert_eq!(
        app.get(&path, &app.admin_token).await,
        (
            StatusCode::NOT_FOUND,
            json!({"error": "workspace not found"})
        )
    );
    assert_eq!(app.get(&path, &ws.token).await.0, StatusCode::UNAUTHORIZED);
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(
        app.get(&format!("/workspaces/{unknown}/state"), &app.admin_token)
            .await,
        (
            StatusCode::NOT_FOUND,
            json!({"error": "workspace not found"})
        )
    );
}
on_both_engines!(state_answers_exactly_as_specified);

async fn pause_keeps_staging_and_restart_reaches_the_agent(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let lead = app.child("lead", None).await;
    let ws = app.child("w", Some(&lead)).await;
    let (status, body) = app
        .post(
            "/registry/heartbeat",
            &ws.token,
            &json!({"workspace_id": ws.id, "active_tasks": 3, "current_task": "triage"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.lifecycle(&ws.id, "pause", &app.admin_token).await;
    assert_eq!(
        (status, &body["status"], &body["paused"]),
        (StatusCode::OK, &json!("paused"), &json!(true))
    );
    // Paused: messages are still staged, nothing refused.
    let (status, body) = app.send_text(&ws.id, "while paused").await;
    assert_eq!(
        (status, &body["queued"]),
        (StatusCode::ACCEPTED, &json!(true))
    );
    let (status, body) = app.lifecycle(&ws.id, "resume", &app.admin_token).await;
    assert_eq!(
        (status, &body["status"], &body["paused"]),
        (StatusCode::OK, &json!("online"), &json!(false))
    );
    let (status, body) = app.lifecycle(&ws.id, "restart", &app.admin_token).await;
    assert_eq!(
        (status, &body["active_tasks"], &body["current_task"]),
        (StatusCode::ACCEPTED, &json!(0), &json!("triage"))
    );
    let (status, rows) = app.activity(&ws, "type=restart_requested").await;
    assert_eq!(status, StatusCode::OK);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (&rows[0]["activity_type"], &rows[0]["data"]),
        (&json!("restart_requested"), &json!({"action": "restart"}))
    );
    let (status, inbox) = app.activity(&ws, "type=a2a_receive").await;
    assert_eq!(
        (status, inbox.as_array().unwrap().len()),
        (StatusCode::OK, 1)
    );

    // Errors.
    for verb in ["pause", "resume", "restart"] {
        assert_eq!(
            app.lifecycle(&ws.id, verb, &ws.token).await.0,
            StatusCode::FORBIDDEN,
            "{verb} by the workspace"
        );
        let unknown = uuid::Uuid::new_v4().to_string();
        assert_eq!(
            app.lifecycle(&unknown, verb, &app.admin_token).await,
            (
                StatusCode::NOT_FOUND,
                json!({"error": "workspace not found"})
            ),
            "{verb} of an unknown workspace"
        );
        assert_eq!(
            app.lifecycle("nope", verb, &app.admin_token).await.0,
            StatusCode::BAD_REQUEST
        );
    }
    let (status, _) = app.delete(&format!("/workspaces/{}", ws.id)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for verb in ["pause", "resume", "restart"] {
        assert_eq!(
            app.lifecycle(&ws.id, verb, &app.admin_token).await.0,
            StatusCode::NOT_FOUND,
            "{verb} of a removed workspace"
        );
    }
    // Messages to a removed workspace are refused; its history is not.
    assert_eq!(app.send_text(&ws.id, "late").await.0, StatusCode::NOT_FOUND);
    let (status, history) = app
        .get(&format!("/workspaces/{}/activity", ws.id), &app.admin_token)
        .await;
    assert_eq!(
        (status, history.as_array().unwrap().len()),
        (StatusCode::OK, 2)
    );
}
on_both_engines!(pause_keeps_staging_and_restart_reaches_the_agent);

async fn heartbeat_fields_are_validated_stored_and_shown(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.child("w", None).await;
    let full = json!({"workspace_id": ws.id, "current_task": "writing", "active_tasks": 2,
        "error_rate": 0.25, "sample_error": "timeout", "uptime_seconds": 120});
    let (status, _) = app.post("/registry/heartbeat", &ws.token, &full).await;
    assert_eq!(status, StatusCode::OK);
    let bad = [
        (
            json!({"active_tasks": -1}),
            "`active_tasks` must be between 0 and 10000",
        ),
        (
            json!({"error_rate": 1.5}),
            "`error_rate` must be between 0.0 and 1.0",
        ),
        (
            json!({"uptime_seconds": -3}),
            "`uptime_seconds` must not be negative",
        ),
        (
            json!({"current_task": "x".repeat(1001)}),
            "`current_task` must be at most 1000 characters",
        ),
    ];
    for (mut body, msg) in bad {
        body["workspace_id"] = json!(ws.id);
        let answer = app.post("/registry/heartbeat", &ws.token, &body).await;
        assert_eq!(
            answer,
            (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": msg})),
            "{msg}"
        );
    }
    let (_, w) = app.get(&format!("/workspaces/{}", ws.id), &ws.token).await;
    assert_eq!(
        (
            &w["current_task"],
            &w["active_tasks"],
            &w["error_rate"],
            &w["sample_error"],
            &w["uptime_seconds"],
            &w["status"]
        ),
        (
            &json!("writing"),
            &json!(2),
            &json!(0.25),
            &json!("timeout"),
            &json!(120),
            &json!("online")
        ),
        "the refused heartbeats changed nothing"
    );
    let (status, _) = app
        .post(
            "/registry/heartbeat",
            &ws.token,
            &json!({"workspace_id": ws.id, "error_rate": 1.0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, w) = app.get(&format!("/workspaces/{}", ws.id), &ws.token).await;
    assert_eq!(
        (&w["status"], &w["current_task"]),
        (&json!("failed"), &json!("writing"))
    );
}
on_both_engines!(heartbeat_fields_are_validated_stored_and_shown);

async fn phantom_busy_is_reset_by_the_sweeper_and_counted(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    assert!(app
        .metrics_text()
        .await
        .contains("molecule_phantom_busy_resets_total 0"));
    let busy = app.child("busy", None).await;
    let idle = app.child("idle", None).await;
    for (ws, n) in [(&busy, 4), (&idle, 0)] {
        let (status, _) = app
            .post(
                "/registry/heartbeat",
                &ws.token,
                &json!({"workspace_id": ws.id, "active_tasks": n}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let now = molecule::domain::now();
    // Within the window: nothing reset.
    let out = app
        .sweeper
        .sweep_once(now + chrono::Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(out.count("phantom_busy", "reset"), 0);
    let row = app.store.get_workspace(busy.wid()).await.unwrap().unwrap();
    assert_eq!(row.report.active_tasks, Some(4));
    // Silent past --offline-after (90 s): reset once, counted once.
    let out = app
        .sweeper
        .sweep_once(now + chrono::Duration::seconds(91))
        .await
        .unwrap();
    assert_eq!(out.count("phantom_busy", "reset"), 1);
    let row = app.store.get_workspace(busy.wid()).await.unwrap().unwrap();
    assert_eq!(row.report.active_tasks, Some(0));
    let out = app
        .sweeper
        .sweep_once(now + chrono::Duration::seconds(120))
        .await
        .unwrap();
    assert_eq!(out.count("phantom_busy", "reset"), 0);
    assert_eq!(app.metric("molecule_phantom_busy_resets_total").await, 1.0);
}
on_both_engines!(phantom_busy_is_reset_by_the_sweeper_and_counted);

async fn delete_ends_an_open_long_poll_with_401(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.child("w", None).await;
    let poll = {
        let client = app.client.clone();
        let url = app.url(&format!("/workspaces/{}/activity?wait=30", ws.id));
        let token = ws.token.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let resp = client.get(url).bearer_auth(token).send().await.unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            (status, body, started.elapsed())
        })
    };
    // Let the poll park.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _) = app.delete(&format!("/workspaces/{}", ws.id)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body, took) = poll.await.unwrap();
    assert_eq!(
        (status, body),
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "missing or invalid bearer token"})
        )
    );
    assert!(
        took < Duration::from_secs(10),
        "ended at once, took {took:?}"
    );
}
on_both_engines!(delete_ends_an_open_long_poll_with_401);

const TEAM_YAML: &str = "\
name: research
defaults:
  tier: 2
  runtime: claude-code
workspaces:
  - name: lead
    children:
      - name: analyst
        children:
          - name: scraper
            runtime: external
          - name: summarizer
      - name: writer
        tier: 4
        children:
          - name: editor
  - name: ops
";

async fn import_twice_leaves_exactly_one_tree(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (status, first) = app.import("", "application/yaml", TEAM_YAML).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(
        (
            &first["created"],
            &first["skipped"],
            &first["summary"],
            &first["dry_run"]
        ),
        (
            &json!(7),
            &json!(0),
            &json!("0 of 7 already existed, 7 created"),
            &json!(false)
        )
    );
    let entries = first["workspaces"].as_array().unwrap();
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "lead",
            "analyst",
            "scraper",
            "summarizer",
            "writer",
            "editor",
            "ops"
        ]
    );
    assert_eq!(
        (&entries[1]["parent_id"], &entries[0]["parent_id"]),
        (&entries[0]["id"], &Value::Null)
    );
    assert_eq!(
        (
            &entries[2]["runtime"],
            &entries[4]["tier"],
            &entries[5]["tier"]
        ),
        (&json!("external"), &json!(4), &json!(2))
    );
    // Every created workspace's token is returned once and works.
    for e in entries {
        assert_eq!(e["created"], true);
        assert!(e.get("skipped").is_none());
        let token = e["auth_token"].as_str().unwrap();
        let (status, _) = app
            .get(&format!("/workspaces/{}", e["id"].as_str().unwrap()), token)
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let rows_after_first = app.live_rows().await;
    assert_eq!(rows_after_first.len(), 7);

    let (status, second) = app.import("", "application/yaml", TEAM_YAML).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(
        (&second["created"], &second["skipped"], &second["summary"]),
        (
            &json!(0),
            &json!(7),
            &json!("7 of 7 already existed, 0 created")
        )
    );
    for (a, b) in entries.iter().zip(second["workspaces"].as_array().unwrap()) {
        assert_eq!(
            (
                &b["id"],
                &b["parent_id"],
                &b["skipped"],
                b.get("auth_token")
            ),
            (&a["id"], &a["parent_id"], &json!(true), None)
        );
    }
    let rows = app.live_rows().await;
    assert_eq!(rows, rows_after_first, "the second import wrote nothing");
    // The same template as JSON is the same tree.
    let as_json: Value = serde_norway::from_str(TEAM_YAML).unwrap();
    let (status, third) = app
        .import("", "application/json", &as_json.to_string())
        .await;
    assert_eq!((status, &third["created"]), (StatusCode::OK, &json!(0)));
    assert_eq!(app.live_rows().await.len(), 7);
}
on_both_engines!(import_twice_leaves_exactly_one_tree);

async fn import_backfills_a_partial_tree(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let lead = app.child("lead", None).await;
    let analyst = app.child("analyst", Some(&lead)).await;
    // Same name, other parent: not a match.
    let stray = app.child("editor", None).await;
    let (status, report) = app.import("", "application/yaml", TEAM_YAML).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["summary"], "2 of 7 already existed, 5 created");
    let e = report["workspaces"].as_array().unwrap();
    assert_eq!(
        (&e[0]["id"], &e[0]["skipped"], &e[1]["id"], &e[1]["skipped"]),
        (
            &json!(lead.id),
            &json!(true),
            &json!(analyst.id),
            &json!(true)
        )
    );
    assert_eq!(
        (&e[2]["parent_id"], &e[2]["created"]),
        (&json!(analyst.id), &json!(true))
    );
    assert_ne!(e[5]["id"], json!(stray.id));
    assert_eq!(app.live_rows().await.len(), 8);
    // A removed node does not count: importing again recreates it.
    let (status, _) = app
        .delete(&format!("/workspaces/{}?cascade=true", analyst.id))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, report) = app.import("", "application/yaml", TEAM_YAML).await;
    assert_eq!(report["summary"], "4 of 7 already existed, 3 created");
    assert_eq!(app.live_rows().await.len(), 8);
}
on_both_engines!(import_backfills_a_partial_tree);

async fn dry_run_answers_the_same_and_writes_nothing(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let lead = app.child("lead", None).await;
    let (status, report) = app
        .import("?dry_run=true", "application/yaml", TEAM_YAML)
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (&report["dry_run"], &report["summary"]),
        (
            &json!(true),
            &json!("1 of 7 already existed, 6 would be created")
        )
    );
    let e = report["workspaces"].as_array().unwrap();
    assert_eq!(
        (&e[0]["id"], &e[0]["skipped"]),
        (&json!(lead.id), &json!(true))
    );
    assert_eq!(
        (&e[1]["id"], &e[1]["parent_id"], &e[1]["created"]),
        (&Value::Null, &json!(lead.id), &json!(true))
    );
    assert_eq!(
        (&e[2]["id"], &e[2]["parent_id"]),
        (&Value::Null, &Value::Null)
    );
    assert!(e.iter().all(|n| n.get("auth_token").is_none()));
    // Where each node goes, even under a parent that does not exist yet:
    // the canvas draws its preview from this.
    let depths: Vec<&Value> = e.iter().map(|n| &n["depth"]).collect();
    assert_eq!(
        depths,
        [0, 1, 2, 2, 1, 2, 0]
            .map(|d| json!(d))
            .iter()
            .collect::<Vec<_>>()
    );
    assert_eq!(app.live_rows().await.len(), 1);
}
on_both_engines!(dry_run_answers_the_same_and_writes_nothing);

async fn concurrent_imports_still_make_one_tree(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (a, b) = tokio::join!(
        app.import("", "application/yaml", TEAM_YAML),
        app.import("", "application/yaml", TEAM_YAML)
    );
    assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK));
    let created = a.1["created"].as_u64().unwrap() + b.1["created"].as_u64().unwrap();
    assert_eq!(created, 7, "{} / {}", a.1["summary"], b.1["summary"]);
    assert_eq!(app.live_rows().await.len(), 7);
    for w in app.live_rows().await {
        let twins = app
            .live_rows()
            .await
            .iter()
            .filter(|o| o.name == w.name && o.parent_id == w.parent_id)
            .count();
        assert_eq!(twins, 1, "{}", w.name);
    }
}
on_both_engines!(concurrent_imports_still_make_one_tree);

async fn bad_templates_are_refused_and_leave_nothing(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (status, body) = app
        .import(
            "",
            "application/yaml",
            "workspaces:\n  - name: lead\n    children:\n      - nmae: a\n",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.starts_with("malformed template: workspaces[0].children[0]: unknown field `nmae`")
            && msg.contains("line 4"),
        "{msg}"
    );
    let (status, body) = app
        .import("", "application/json", "{\"workspaces\": [{\"name\": 1}]}")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("line 1") && msg.contains("string"), "{msg}");
    let wide = json!({"workspaces": (0..1001).map(|i| json!({"name": format!("n{i}")})).collect::<Vec<_>>()});
    let (status, body) = app.import("", "application/json", &wide.to_string()).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "the template has 1001 workspaces; at most 1000 may be imported at once"})
        )
    );
    let mut deep = json!({"name": "leaf"});
    for i in 0..16 {
        deep = json!({"name": format!("n{i}"), "children": [deep]});
    }
    let (status, body) = app
        .import(
            "",
            "application/json",
            &json!({"workspaces": [deep]}).to_string(),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": "the template nests 17 levels deep; at most 16 are allowed"})
        )
    );
    let (status, body) = app
        .import(
            "",
            "application/yaml",
            "workspaces:\n  - name: a\n    delivery_mode: push\n",
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": "workspaces[0].url: workspace `a` is push-mode and needs a `url` to forward to"})
        )
    );
    let ws = app.child("w", None).await;
    let (status, _) = TestApp::json(
        app.client
            .post(app.url("/org/import"))
            .bearer_auth(&ws.token)
            .header("content-type", "application/yaml")
            .body(TEAM_YAML)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.live_rows().await.len(),
        1,
        "only the workspace made here"
    );
}
on_both_engines!(bad_templates_are_refused_and_leave_nothing);

/// Runs the operator CLI (the real binary) against `app`; returns stdout.
async fn cli(app: &TestApp, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_molecule"))
        .args(args)
        .args(["--server", &app.address, "--admin-token", &app.admin_token])
        .output()
        .await
        .expect("run the molecule CLI");
    assert!(
        out.status.success(),
        "molecule {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn cli_imports_a_template_and_draws_the_tree() {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    let file = app.data_dir.path().join("team.yaml");
    std::fs::write(&file, TEAM_YAML).unwrap();
    let file = file.to_str().unwrap();
    let dry = cli(&app, &["org", "import", file, "--dry-run"]).await;
    assert!(
        dry.contains("0 of 7 already existed, 7 would be created")
            && dry.contains("dry run: nothing was written"),
        "{dry}"
    );
    // The NAME column (the last, after fixed-width columns) draws the
    // tree: two spaces per level.
    let name_at = "ACTION    ".len() + 2 * (36 + 2) + (4 + 2) + (12 + 2);
    let names: Vec<&str> = dry
        .lines()
        .filter(|l| l.starts_with("create "))
        .map(|l| &l[name_at..])
        .collect();
    assert_eq!(
        names,
        [
            "lead",
            "  analyst",
            "    scraper",
            "    summarizer",
            "  writer",
            "    editor",
            "ops"
        ],
        "{dry}"
    );
    assert!(app.live_rows().await.is_empty());
    let done = cli(&app, &["org", "import", file]).await;
    assert!(done.contains("0 of 7 already existed, 7 created"), "{done}");
    assert!(
        done.contains("tokens of the created workspaces (shown this once):"),
        "{done}"
    );
    assert_eq!(app.live_rows().await.len(), 7);
    let again = cli(&app, &["org", "import", file]).await;
    assert!(
        again.contains("7 of 7 already existed, 0 created"),
        "{again}"
    );

    let rows = app.live_rows().await;
    let lead = rows.iter().find(|w| w.name == "lead").unwrap();
    let child = cli(
        &app,
        &[
            "workspace",
            "create",
            "--name",
            "intern",
            "--mode",
            "poll",
            "--parent",
            &lead.id.to_string(),
            "--tier",
            "1",
            "--runtime",
            "claude-code",
        ],
    )
    .await;
    assert!(
        child.contains("tier 1, runtime claude-code, model sonnet")
            && child.contains(&format!("parent: {}", lead.id)),
        "{child}"
    );
    let tree = cli(&app, &["workspace", "list"]).await;
    let names: Vec<String> = tree
        .lines()
        .skip(1)
        .map(|l| l.chars().skip(59).collect::<String>())
        .collect();
    assert_eq!(
        names,
        [
            "lead",
            "├─ analyst",
            "│  ├─ scraper",
            "│  └─ summarizer",
            "├─ writer",
            "│  └─ editor",
            "└─ intern",
            "ops"
        ],
        "{tree}"
    );
    let intern = app
        .live_rows()
        .await
        .into_iter()
        .find(|w| w.name == "intern")
        .unwrap()
        .id
        .to_string();
    let paused = cli(&app, &["workspace", "pause", &intern]).await;
    assert!(paused.contains("paused; status paused"), "{paused}");
    let resumed = cli(&app, &["workspace", "resume", &intern]).await;
    assert!(resumed.contains("resumed; status offline"), "{resumed}");
    let restarted = cli(&app, &["workspace", "restart", &intern]).await;
    assert!(restarted.contains("asked to restart"), "{restarted}");
    cli(
        &app,
        &["workspace", "delete", &lead.id.to_string(), "--cascade"],
    )
    .await;
    assert_eq!(app.live_rows().await.len(), 1, "only `ops` is left");
}

async fn deep_templates_and_nul_names_get_the_create_routes_answers(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let deep_rule = "the template nests more than 16 levels deep; at most 16 are allowed";
    for levels in [200usize, 10_000] {
        let mut json = String::from("{\"workspaces\":[");
        // YAML twice: block layout (kept under the body limit) and flow.
        let mut block = String::from("workspaces:\n");
        let mut flow = String::from("workspaces: [");
        for i in 0..levels {
            json.push_str(&format!("{{\"name\":\"n{i}\",\"children\":["));
            flow.push_str(&format!("\n{{name: n{i}, children: ["));
            if i < 200 {
                let pad = " ".repeat(2 * i);
                block.push_str(&format!("{pad}- name: n{i}\n{pad}  children:\n"));
            }
        }
        json.push_str(&"]}".repeat(levels));
        json.push_str("]}");
        flow.push_str(&"]}".repeat(levels));
        flow.push(']');
        for (content_type, body) in [
            ("application/json", &json),
            ("application/yaml", &block),
            ("application/yaml", &flow),
        ] {
            assert_eq!(
                app.import("", content_type, body).await,
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"error": deep_rule})
                ),
                "{levels} levels, {content_type}"
            );
        }
    }
    // A NUL in a name: what `POST /workspaces` answers, and nothing made.
    let (status, body) = app
        .create_workspace(json!({"name": "a\0b", "delivery_mode": "poll"}))
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "`name` must not contain NUL characters (\\u0000)"})
        )
    );
    let cases = [
        (
            "application/json",
            "{\"workspaces\":[{\"name\":\"lead\",\"children\":[{\"name\":\"a\\u0000b\"}]}]}",
            "`workspaces[0].children[0].name` must not contain NUL characters (\\u0000)",
        ),
        (
            "application/yaml",
            "workspaces:\n  - name: \"a\\0b\"\n",
            "`workspaces[0].name` must not contain NUL characters (\\u0000)",
        ),
        (
            "application/yaml",
            "workspaces:\n  - name: lead\n    runtime: \"x\\0\"\n",
            "`workspaces[0].runtime` must not contain NUL characters (\\u0000)",
        ),
        (
            "application/yaml",
            "workspaces:\n  - name: lead\n    delivery_mode: push\n    url: \"http://example.com/\\0\"\n",
            "`workspaces[0].url` must not contain NUL characters (\\u0000)",
        ),
        (
            "application/yaml",
            "workspaces:\n  - name: lead\n  - name: \"  \"\n",
            "workspaces[1].name: `name` must be 1 to 200 characters",
        ),
    ];
    for (content_type, template, error) in cases {
        for query in ["", "?dry_run=true"] {
            assert_eq!(
                app.import(query, content_type, template).await,
                (StatusCode::BAD_REQUEST, json!({"error": error})),
                "{template:?}{query}"
            );
        }
    }
    assert_eq!(app.live_rows().await.len(), 0, "nothing was created");
}
on_both_engines!(deep_templates_and_nul_names_get_the_create_routes_answers);
