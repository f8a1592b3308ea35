//! Platform instructions: resolution order over a three-level tree (global,
//! then the teams root first, then the workspace's own; higher priority
//! first; disabled and other teams' rules left out), validation with exact
//! 400s that write nothing, operator-only writes, the `instructions_changed`
//! inbox rows of exactly the affected workspaces, and a change reaching a
//! real `molecule connect` (its file and its `--exec` variable) — on both
//! engines.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::helpers::{eventually, spawn_app, Engine, TestApp, Ws};
use crate::on_both_engines;

impl TestApp {
    /// The operator writes an instruction; the 201 body.
    async fn instruct(&self, body: Value) -> Value {
        let (status, created) = self.post("/instructions", &self.admin_token, &body).await;
        assert_eq!(status, StatusCode::CREATED, "{body} → {created}");
        created
    }

    async fn resolved(&self, ws: &Ws, token: &str) -> (StatusCode, Value) {
        self.get(
            &format!("/workspaces/{}/instructions/resolve", ws.id),
            token,
        )
        .await
    }

    /// The ids of the instructions named by `instructions_changed` rows in
    /// `ws`'s inbox, oldest first.
    async fn changed_rows(&self, ws: &Ws) -> Vec<(String, String)> {
        let (status, rows) = self.activity(ws, "type=a2a_receive").await;
        assert_eq!(status, StatusCode::OK, "{rows}");
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["method"] == "instructions_changed")
            .map(|r| {
                (
                    r["data"]["instruction_id"].as_str().unwrap().to_owned(),
                    r["data"]["change"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

fn section(title: &str, content: &str) -> String {
    format!("## {title}\n\n{content}\n")
}

async fn resolution_order_is_global_then_teams_root_first_then_own(engine: Engine) {
    let Some(mut app) = spawn_app(engine).await else {
        return;
    };
    let root = app.create_poll_workspace_under("root", None).await;
    let mid = app.create_poll_workspace_under("mid", Some(&root)).await;
    let leaf = app.create_poll_workspace_under("leaf", Some(&mid)).await;
    let other = app.create_poll_workspace_under("other", Some(&root)).await;
    // Written out of order on purpose: resolution must sort, not echo.
    app.instruct(json!({"scope": "workspace", "scope_target": leaf.id, "title": "Leaf own", "content": "leaf rule"})).await;
    app.instruct(json!({"scope": "team", "scope_target": mid.id, "title": "Mid low", "content": "mid 2", "priority": 2})).await;
    app.instruct(json!({"scope": "team", "scope_target": root.id, "title": "Root team", "content": "root rule"})).await;
    app.instruct(json!({"scope": "global", "title": "Global low", "content": "g1", "priority": 1}))
        .await;
    app.instruct(json!({"scope": "team", "scope_target": mid.id, "title": "Mid high", "content": "mid 9", "priority": 9})).await;
    app.instruct(
        json!({"scope": "global", "title": "Global high", "content": "g5", "priority": 5}),
    )
    .await;
    app.instruct(json!({"scope": "global", "title": "Disabled", "content": "never", "priority": 99, "enabled": false})).await;
    app.instruct(json!({"scope": "team", "scope_target": other.id, "title": "Other team", "content": "not ours"})).await;
    app.instruct(json!({"scope": "workspace", "scope_target": mid.id, "title": "Mid own", "content": "mid only"})).await;

    let (status, body) = app.resolved(&leaf, &leaf.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expected = [
        section("Global high", "g5"),
        section("Global low", "g1"),
        section("Root team", "root rule"),
        section("Mid high", "mid 9"),
        section("Mid low", "mid 2"),
        section("Leaf own", "leaf rule"),
    ]
    .join("\n");
    assert_eq!(
        body,
        json!({"workspace_id": leaf.id, "instructions": expected})
    );

    // The team lead gets its own team's rules and its own, not the leaf's.
    let (status, body) = app.resolved(&mid, &app.admin_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expected = [
        section("Global high", "g5"),
        section("Global low", "g1"),
        section("Root team", "root rule"),
        section("Mid high", "mid 9"),
        section("Mid low", "mid 2"),
        section("Mid own", "mid only"),
    ]
    .join("\n");
    assert_eq!(body["instructions"], json!(expected));

    // Access: the workspace itself or the operator; another workspace's
    // token is 401, an unknown workspace 404.
    let (status, _) = app.resolved(&leaf, &mid.token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let ghost = Ws {
        id: "00000000-0000-4000-8000-000000000000".into(),
        token: String::new(),
    };
    let (status, body) = app.resolved(&ghost, &app.admin_token).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "workspace not found"})
        )
    );

    // Change notices: a team rule on `mid` reached mid and leaf only.
    let before = app.changed_rows(&root).await.len();
    let rule = app
        .instruct(json!({"scope": "team", "scope_target": mid.id, "title": "New", "content": "x"}))
        .await;
    let id = rule["id"].as_str().unwrap().to_owned();
    for (ws, gets) in [(&mid, true), (&leaf, true), (&root, false), (&other, false)] {
        let rows = app.changed_rows(ws).await;
        assert_eq!(
            rows.last() == Some(&(id.clone(), "created".to_owned())),
            gets,
            "{ws:?}: {rows:?}"
        );
    }
    assert_eq!(app.changed_rows(&root).await.len(), before);
    // Moving it to `other` tells both the old and the new audience.
    let (status, moved) = app
        .send_json(
            reqwest::Method::PUT,
            &format!("/instructions/{id}"),
            &app.admin_token,
            Some(&json!({"scope": "workspace", "scope_target": other.id})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(
        (&moved["title"], &moved["content"]),
        (&json!("New"), &json!("x"))
    );
    for ws in [&mid, &leaf, &other] {
        let rows = app.changed_rows(ws).await;
        assert_eq!(
            rows.last(),
            Some(&(id.clone(), "updated".to_owned())),
            "{ws:?}"
        );
    }
    assert_eq!(app.changed_rows(&root).await.len(), before);
    app.stop().await;
}

on_both_engines!(resolution_order_is_global_then_teams_root_first_then_own);

async fn writes_are_validated_operator_only_and_404_for_unknown(engine: Engine) {
    let Some(mut app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace_under("solo", None).await;
    let long_title = "t".repeat(201);
    let big = "c".repeat(8 * 1024 + 1);
    let cases = [
        (
            json!({"title": "t", "content": "c"}),
            "`scope` is required: global, team or workspace",
        ),
        (
            json!({"scope": "fleet", "title": "t", "content": "c"}),
            "`scope` must be global, team or workspace, not `fleet`",
        ),
        (
            json!({"scope": "team", "title": "t", "content": "c"}),
            "`scope_target` is required for a team instruction: the team lead's workspace id",
        ),
        (
            json!({"scope": "workspace", "title": "t", "content": "c"}),
            "`scope_target` is required for a workspace instruction: the workspace's workspace id",
        ),
        (
            json!({"scope": "global", "scope_target": ws.id, "title": "t", "content": "c"}),
            "a global instruction takes no `scope_target`",
        ),
        (
            json!({"scope": "team", "scope_target": "nope", "title": "t", "content": "c"}),
            "`scope_target` must be a workspace id: `nope` is not a valid id: ids are UUIDs such as 6f1c2a4e-0b7d-4c55-9a47-3b8f0e9d2c11",
        ),
        (
            json!({"scope": "team", "scope_target": "00000000-0000-4000-8000-000000000000", "title": "t", "content": "c"}),
            "`scope_target` 00000000-0000-4000-8000-000000000000 is not a live workspace",
        ),
        (
            json!({"scope": "global", "title": "  ", "content": "c"}),
            "`title` is required: 1 to 200 characters",
        ),
        (
            json!({"scope": "global", "title": long_title, "content": "c"}),
            "`title` is required: 1 to 200 characters",
        ),
        (
            json!({"scope": "global", "title": "t"}),
            "`content` is required: 1 to 8192 bytes of Markdown",
        ),
        (
            json!({"scope": "global", "title": "t", "content": big}),
            "`content` is required: 1 to 8192 bytes of Markdown",
        ),
    ];
    for (body, error) in &cases {
        let (status, answer) = app.post("/instructions", &app.admin_token, body).await;
        assert_eq!(
            (status, answer),
            (StatusCode::BAD_REQUEST, json!({"error": error})),
            "case {body}"
        );
    }
    let (status, list) = app.get("/instructions", &app.admin_token).await;
    assert_eq!(
        (status, list),
        (StatusCode::OK, json!([])),
        "nothing written"
    );
    assert!(app.changed_rows(&ws).await.is_empty());

    // Operator only: a workspace token is 403 on every route of /instructions.
    let ok = json!({"scope": "global", "title": "t", "content": "c"});
    let (status, _) = app.post("/instructions", &ws.token, &ok).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.get("/instructions", &ws.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let created = app.instruct(ok.clone()).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            &created["scope"],
            &created["scope_target"],
            &created["priority"],
            &created["enabled"]
        ),
        (&json!("global"), &Value::Null, &json!(0), &json!(true))
    );
    let path = format!("/instructions/{id}");
    let (status, _) = app
        .send_json(
            reqwest::Method::PUT,
            &path,
            &ws.token,
            Some(&json!({"priority": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .send_json(reqwest::Method::DELETE, &path, &ws.token, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // PUT keeps what it is not given; a bad PUT changes nothing.
    let (status, updated) = app
        .send_json(
            reqwest::Method::PUT,
            &path,
            &app.admin_token,
            Some(&json!({"priority": 3, "enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(
        (
            &updated["title"],
            &updated["content"],
            &updated["priority"],
            &updated["enabled"]
        ),
        (&json!("t"), &json!("c"), &json!(3), &json!(false))
    );
    let (status, answer) = app
        .send_json(
            reqwest::Method::PUT,
            &path,
            &app.admin_token,
            Some(&json!({"scope": "team"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (_, list) = app.get("/instructions", &app.admin_token).await;
    assert_eq!(list, json!([updated]));

    // Unknown and malformed ids.
    let unknown = "/instructions/00000000-0000-4000-8000-000000000000";
    let (status, answer) = app
        .send_json(
            reqwest::Method::PUT,
            unknown,
            &app.admin_token,
            Some(&json!({"priority": 1})),
        )
        .await;
    assert_eq!(
        (status, answer),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "instruction not found"})
        )
    );
    let (status, answer) = app
        .send_json(reqwest::Method::DELETE, unknown, &app.admin_token, None)
        .await;
    assert_eq!(
        (status, answer),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "instruction not found"})
        )
    );
    let (status, _) = app
        .send_json(
            reqwest::Method::DELETE,
            "/instructions/nope",
            &app.admin_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Delete: 204, gone, then 404; the workspace was told each time.
    let resp = app
        .client
        .delete(app.url(&path))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (_, list) = app.get("/instructions", &app.admin_token).await;
    assert_eq!(list, json!([]));
    let (status, _) = app
        .send_json(reqwest::Method::DELETE, &path, &app.admin_token, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let changes: Vec<String> = app
        .changed_rows(&ws)
        .await
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    assert_eq!(changes, ["created", "updated", "deleted"]);
    app.stop().await;
}

on_both_engines!(writes_are_validated_operator_only_and_404_for_unknown);

async fn a_change_reaches_a_connected_agent(engine: Engine) {
    let Some(mut app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace_under("agent", None).await;
    app.instruct(json!({"scope": "global", "title": "Be brief", "content": "short answers"}))
        .await;
    let dir = TempDir::new().unwrap();
    let mut connect = tokio::process::Command::new(env!("CARGO_BIN_EXE_molecule"))
        .args([
            "connect",
            "--server",
            &app.url(""),
            "--workspace",
            &ws.id,
            "--poll-wait",
            "5",
        ])
        .arg("--dir")
        .arg(dir.path())
        .args(["--exec", "cat \"$MOLECULE_INSTRUCTIONS_FILE\""])
        .env("MOLECULE_TOKEN", &ws.token)
        .env_remove("MOLECULE_SERVER")
        .env_remove("MOLECULE_WORKSPACE_ID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let file = dir.path().join(".molecule").join("instructions.md");
    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    eventually("the instructions file at start", || async {
        read() == section("Be brief", "short answers")
    })
    .await;

    app.instruct(
        json!({"scope": "workspace", "scope_target": ws.id, "title": "Own", "content": "mine"}),
    )
    .await;
    let expected = [section("Be brief", "short answers"), section("Own", "mine")].join("\n");
    eventually("the instructions file after a change", || async {
        read() == expected
    })
    .await;

    // An --exec agent finds the file through its variable.
    let (status, _) = app.send_text(&ws.id, "what are the rules?").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually("the agent's reply", || async {
        let (_, rows) = app.activity(&ws, "type=agent_message").await;
        !rows[0].is_null()
    })
    .await;
    let (_, rows) = app.activity(&ws, "type=agent_message").await;
    assert_eq!(
        rows[0]["request_body"]["message"],
        json!(expected.trim_end())
    );
    connect.start_kill().unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), connect.wait()).await;
    app.stop().await;
}

on_both_engines!(a_change_reaches_a_connected_agent);
