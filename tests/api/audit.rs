//! The audit trail: security-relevant changes (workspaces, secrets by name
//! only, instructions, approvals, tokens) each become one HMAC-chained row;
//! the listings filter and page exactly and answer `chain_valid`; agents
//! append their own steps as themselves only; concurrent appends never
//! fork the chain; and a row updated, deleted or inserted with SQL directly is named
//! by `chain_valid`/`first_broken` and by `molecule audit verify` — on
//! both engines.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Engine, TestApp};
use crate::on_both_engines;

impl TestApp {
    /// `GET /admin/audit?query`, asserted 200.
    async fn admin_audit(&self, query: &str) -> Value {
        let (status, page) = self
            .get(&format!("/admin/audit?{query}"), &self.admin_token)
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page
    }

    /// Runs one statement straight in the database, behind the server.
    async fn audit_sql(&self, sql: &str) -> u64 {
        let url = &self.config.database_url;
        if url.starts_with("sqlite") {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query(sql)
                .execute(&pool)
                .await
                .unwrap()
                .rows_affected()
        } else {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(sql)
                .execute(&pool)
                .await
                .unwrap()
                .rows_affected()
        }
    }

    /// `molecule audit verify --json` against this server's database and
    /// key: its exit success and its JSON line.
    fn audit_verify_cli(&self) -> (bool, Value) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_molecule"))
            .args(["audit", "verify", "--json", "--data-dir"])
            .arg(self.data_dir.path())
            .args(["--database-url", &self.config.database_url])
            .env_remove("MOLECULE_SECRETS_KEY")
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().next().unwrap_or_else(|| {
            panic!(
                "no output; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.success(), serde_json::from_str(line).unwrap())
    }
}

fn actions(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

fn seqs(page: &Value) -> Vec<i64> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect()
}

async fn changes_are_recorded_by_name_and_listed_per_workspace(engine: Engine) {
    let Some(mut app) = spawn_app(engine).await else {
        return;
    };
    let lead = app.create_poll_workspace_under("lead", None).await;
    let child = app.create_poll_workspace_under("child", Some(&lead)).await;
    let admin = app.admin_token.clone();
    let (status, _) = app
        .send_json(
            Method::PUT,
            &format!("/workspaces/{}/secrets/API_KEY", child.id),
            &admin,
            Some(&json!({"value": "hunter2-very-secret"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .send_json(
            Method::PUT,
            "/admin/secrets/GLOBAL_KEY",
            &admin,
            Some(&json!({"value": "another-secret-value"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, instr) = app
        .post(
            "/instructions",
            &admin,
            &json!({"scope": "workspace", "scope_target": child.id, "title": "Be brief", "content": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{instr}");
    let (status, asked) = app
        .post(
            &format!("/workspaces/{}/approvals", child.id),
            &child.token,
            &json!({"action": "deploy"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{asked}");
    let aid = asked["approval_id"].as_str().unwrap();
    let (status, _) = app
        .post(
            &format!("/workspaces/{}/approvals/{aid}/decide", child.id),
            &lead.token,
            &json!({"decision": "approved"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .send_json(
            Method::DELETE,
            &format!("/workspaces/{}/secrets/API_KEY", child.id),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let all = app.admin_audit("").await;
    assert_eq!(
        actions(&all),
        [
            "secret.deleted",
            "approval.decided",
            "approval.requested",
            "instruction.created",
            "secret.set",
            "secret.set",
            "workspace.created",
            "workspace.created",
        ]
    );
    assert_eq!(seqs(&all), [8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(all["total"], 8);
    assert_eq!(all["chain_valid"], true);
    assert_eq!(all["first_broken"], Value::Null);
    let text = all.to_string();
    assert!(!text.contains("hunter2") && !text.contains("another-secret"));
    let decided = &all["events"][1];
    assert_eq!(decided["actor"], format!("workspace:{}", lead.id));
    assert_eq!(decided["workspace_id"], child.id.as_str());
    assert_eq!(decided["target"], format!("approval:{aid}"));
    assert_eq!(decided["details"]["decision"], "approved");
    let set = &all["events"][5];
    assert_eq!(set["actor"], "operator");
    assert_eq!(set["target"], "secret:API_KEY");
    assert_eq!(
        set["details"],
        json!({"scope": "workspace", "name": "API_KEY"})
    );
    let events = all["events"].as_array().unwrap();
    for pair in events.windows(2) {
        assert_eq!(pair[0]["prev_hash"], pair[1]["hash"], "the chain links");
    }
    assert_eq!(events[7]["prev_hash"], "0".repeat(64));

    // The child's own view: rows about it only, with its token.
    let (status, own) = app
        .get(&format!("/workspaces/{}/audit", child.id), &child.token)
        .await;
    assert_eq!(status, StatusCode::OK, "{own}");
    assert_eq!(seqs(&own), [8, 7, 6, 5, 3, 2]);
    assert_eq!(own["total"], 6);
    assert_eq!(own["chain_valid"], true);
    // Filters and pages.
    let (_, page) = app
        .get(
            &format!("/workspaces/{}/audit?action=secret.set&limit=5", child.id),
            &admin,
        )
        .await;
    assert_eq!((seqs(&page), page["total"].clone()), (vec![3], json!(1)));
    let (_, page) = app
        .get(
            &format!("/workspaces/{}/audit?limit=2&offset=1", child.id),
            &admin,
        )
        .await;
    assert_eq!((seqs(&page), page["total"].clone()), (vec![7, 6], json!(6)));
    let page = app.admin_audit("actor=operator").await;
    assert_eq!(seqs(&page), [8, 5, 4, 3, 2, 1]);
    let page = app
        .admin_audit(&format!(
            "workspace_id={}&action=approval.requested",
            child.id
        ))
        .await;
    assert_eq!(seqs(&page), [6]);
    let to = all["events"][2]["at"].as_str().unwrap();
    let page = app.admin_audit(&format!("from={}", urlencode(to))).await;
    assert!(seqs(&page).starts_with(&[8, 7]) && seqs(&page).contains(&6));
    let page = app.admin_audit(&format!("to={}", urlencode(to))).await;
    assert!(!seqs(&page).contains(&6) && seqs(&page).contains(&1));

    // Access and bad input.
    let (status, _) = app
        .get(&format!("/workspaces/{}/audit", child.id), &lead.token)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app.get("/admin/audit", &child.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for bad in ["limit=0", "limit=1001", "offset=-1", "from=yesterday"] {
        let (status, body) = app.get(&format!("/admin/audit?{bad}"), &admin).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, _) = app
        .get(
            &format!("/workspaces/{}/audit", uuid::Uuid::new_v4()),
            &admin,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The event log reads the same rows, newest first, operator only.
    let (status, log) = app.get("/events?limit=3", &admin).await;
    assert_eq!(status, StatusCode::OK);
    let log_seqs: Vec<i64> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(log_seqs, [8, 7, 6]);
    let (status, log) = app.get(&format!("/events/{}", lead.id), &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(log.as_array().unwrap().len(), 1);
    assert_eq!(log[0]["action"], "workspace.created");
    let (status, _) = app.get("/events", &lead.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.stop().await;
}

on_both_engines!(changes_are_recorded_by_name_and_listed_per_workspace);

fn urlencode(raw: &str) -> String {
    raw.replace('+', "%2B").replace(':', "%3A")
}

async fn agents_record_their_own_steps_as_themselves(engine: Engine) {
    let Some(mut app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace_under("agent", None).await;
    let other = app.create_poll_workspace_under("other", None).await;
    let path = format!("/workspaces/{}/audit", ws.id);
    let body = json!({
        "action": "tool_call",
        "task_id": "t-1",
        "input_hash": "sha256:aa",
        "output_hash": "sha256:bb",
        "details": {"tool": "search", "ms": 12}
    });
    let (status, row) = app.post(&path, &ws.token, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{row}");
    assert_eq!(row["seq"], 3);
    assert_eq!(row["actor"], format!("workspace:{}", ws.id));
    assert_eq!(row["action"], "tool_call");
    assert_eq!(row["target"], "task:t-1");
    assert_eq!(
        row["details"],
        json!({"task_id": "t-1", "input_hash": "sha256:aa", "output_hash": "sha256:bb",
               "details": {"tool": "search", "ms": 12}})
    );

    let refused = [
        (
            json!({"action": "secret.set"}),
            &ws.token,
            StatusCode::BAD_REQUEST,
        ),
        (json!({}), &ws.token, StatusCode::BAD_REQUEST),
        (
            json!({"action": "task_end", "details": [1]}),
            &ws.token,
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"action": "task_end", "details": {"x": "y".repeat(9000)}}),
            &ws.token,
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"action": "task_end", "task_id": "t".repeat(201)}),
            &ws.token,
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"action": "task_end"}),
            &other.token,
            StatusCode::UNAUTHORIZED,
        ),
        (
            json!({"action": "task_end"}),
            &app.admin_token,
            StatusCode::FORBIDDEN,
        ),
    ];
    for (body, token, want) in refused {
        let (status, answer) = app.post(&path, token, &body).await;
        assert_eq!(status, want, "{body} → {answer}");
    }
    let page = app.admin_audit("").await;
    assert_eq!(page["total"], 3, "refused records wrote nothing");
    assert_eq!(page["chain_valid"], true);
    app.stop().await;
}

on_both_engines!(agents_record_their_own_steps_as_themselves);

async fn concurrent_appends_never_fork_the_chain(engine: Engine) {
    let Some(mut app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace_under("busy", None).await;
    let path = format!("/workspaces/{}/audit", ws.id);
    let posts = (0..24).map(|i| {
        let (app, path, token) = (&app, &path, &ws.token);
        async move {
            let (status, row) = app
                .post(
                    path,
                    token,
                    &json!({"action": "llm_call", "task_id": format!("t{i}")}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{row}");
            row["seq"].as_i64().unwrap()
        }
    });
    let mut got = futures::future::join_all(posts).await;
    got.sort();
    assert_eq!(got, (2..=25).collect::<Vec<i64>>());
    let page = app.admin_audit("limit=1000").await;
    assert_eq!(page["total"], 25);
    assert_eq!(page["chain_valid"], true, "{}", page["first_broken"]);
    app.stop().await;
}

on_both_engines!(concurrent_appends_never_fork_the_chain);

async fn rows_edited_or_deleted_in_sql_are_named(engine: Engine) {
    let Some(mut app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace_under("agent", None).await;
    for i in 0..5 {
        let (status, _) = app
            .post(
                &format!("/workspaces/{}/audit", ws.id),
                &ws.token,
                &json!({"action": "task_start", "task_id": format!("t{i}")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    assert_eq!(
        app.audit_verify_cli(),
        (
            true,
            json!({"valid": true, "checked": 6, "first_broken": null})
        )
    );

    // An edited row: its own hash no longer matches.
    let forged = "UPDATE audit_events SET target = 'task:forged' WHERE seq = 3";
    assert_eq!(app.audit_sql(forged).await, 1);
    let page = app.admin_audit("").await;
    assert_eq!(page["chain_valid"], false);
    assert_eq!(page["first_broken"]["seq"], 3, "{}", page["first_broken"]);
    let (ok, report) = app.audit_verify_cli();
    assert!(!ok);
    assert_eq!(report["first_broken"]["seq"], 3, "{report}");
    assert_eq!(report["checked"], 2);
    let restore = "UPDATE audit_events SET target = 'task:t1' WHERE seq = 3";
    assert_eq!(app.audit_sql(restore).await, 1);
    assert!(app.audit_verify_cli().0, "restored, the chain checks again");

    // Edited details: the details hash no longer matches.
    let edit = "UPDATE audit_events SET details = '{\"task_id\":\"tX\"}' WHERE seq = 4";
    assert_eq!(app.audit_sql(edit).await, 1);
    assert_eq!(app.audit_verify_cli().1["first_broken"]["seq"], 4);
    let restore = "UPDATE audit_events SET details = '{\"task_id\":\"t2\"}' WHERE seq = 4";
    assert_eq!(app.audit_sql(restore).await, 1);
    assert!(app.audit_verify_cli().0);

    // A deleted row in the middle: named as the first missing one.
    assert_eq!(
        app.audit_sql("DELETE FROM audit_events WHERE seq = 2")
            .await,
        1
    );
    let (ok, report) = app.audit_verify_cli();
    assert!(!ok);
    assert_eq!(report["first_broken"]["seq"], 2, "{report}");
    let page = app.admin_audit("").await;
    assert_eq!(page["chain_valid"], false);
    assert_eq!(page["first_broken"]["seq"], 2);

    // The newest row deleted (in a fresh app): caught against the head.
    app.stop().await;
    let Some(mut app) = spawn_app(engine).await else {
        return;
    };
    let _ = app.create_poll_workspace_under("a", None).await;
    let _ = app.create_poll_workspace_under("b", None).await;
    // A row inserted past the head: not appended by the server.
    let insert = "INSERT INTO audit_events (seq, at, actor, action, details, details_hash, prev_hash, hash) \
        SELECT 3, at, 'operator', 'forged', '{}', details_hash, hash, hash FROM audit_events WHERE seq = 2";
    assert_eq!(app.audit_sql(insert).await, 1);
    let (ok, report) = app.audit_verify_cli();
    assert!(!ok);
    assert_eq!(report["first_broken"]["seq"], 3, "{report}");
    assert_eq!(app.admin_audit("").await["first_broken"]["seq"], 3);
    assert_eq!(
        app.audit_sql("DELETE FROM audit_events WHERE seq = 3")
            .await,
        1
    );
    assert!(app.audit_verify_cli().0);
    assert_eq!(
        app.audit_sql("DELETE FROM audit_events WHERE seq = 2")
            .await,
        1
    );
    let (ok, report) = app.audit_verify_cli();
    assert!(!ok);
    assert_eq!(report["first_broken"]["seq"], 2, "{report}");
    assert_eq!(report["checked"], 1);
    app.stop().await;
}

on_both_engines!(rows_edited_or_deleted_in_sql_are_named);

async fn schedule_changes_are_recorded_with_who_made_them(engine: Engine) {
    let Some(mut app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace_under("scheduler", None).await;
    let (status, s) = app
        .post(
            &format!("/workspaces/{}/schedules", ws.id),
            &ws.token,
            &json!({"name": "nightly", "cron_expr": "0 3 * * *", "prompt": "secret plan"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    let sid = s["id"].as_str().unwrap();
    let path = format!("/workspaces/{}/schedules/{sid}", ws.id);
    let admin = app.admin_token.clone();
    let (status, body) = app
        .send_json(
            Method::PATCH,
            &path,
            &admin,
            Some(&json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.send_json(Method::DELETE, &path, &ws.token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let page = app.admin_audit("").await;
    let rows: Vec<(String, String, bool)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
                e["details"]["enabled"].as_bool().unwrap_or(true),
            )
        })
        .collect();
    let me = format!("workspace:{}", ws.id);
    assert_eq!(
        rows,
        [
            ("schedule.deleted".to_owned(), me.clone(), false),
            ("schedule.updated".to_owned(), "operator".to_owned(), false),
            ("schedule.created".to_owned(), me, true),
            ("workspace.created".to_owned(), "operator".to_owned(), true),
        ]
    );
    assert_eq!(page["events"][2]["target"], format!("schedule:{sid}"));
    assert!(
        !page.to_string().contains("secret plan"),
        "no prompt in the trail"
    );
    assert_eq!(page["chain_valid"], true);
    app.stop().await;
}

on_both_engines!(schedule_changes_are_recorded_with_who_made_them);

/// Token mint and revoke, of a workspace's and of the operators' tokens,
/// are recorded with the token's id and who did it; never the secret.
async fn token_mint_and_revoke_are_recorded_with_the_token_id(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace_under("keyholder", None).await;
    let (status, minted) = app
        .post(
            &format!("/workspaces/{}/tokens", ws.id),
            &ws.token,
            &json!({"name": "ci"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    let tid = minted["id"].as_str().unwrap().to_owned();
    let admin = app.admin_token.clone();
    let (status, body) = app
        .send_json(
            Method::DELETE,
            &format!("/workspaces/{}/tokens/{tid}", ws.id),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, org) = app
        .post(
            "/org/tokens",
            &admin,
            &json!({"role": "viewer", "name": "dash"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{org}");
    let oid = org["id"].as_str().unwrap().to_owned();
    let (status, body) = app
        .send_json(Method::DELETE, &format!("/org/tokens/{oid}"), &admin, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let page = app.admin_audit("limit=10").await;
    let rows: Vec<(String, String, String, Value)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("token."))
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
                e["workspace_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "token.revoked".into(),
                "operator".into(),
                format!("token:{oid}"),
                Value::Null
            ),
            (
                "token.minted".into(),
                "operator".into(),
                format!("token:{oid}"),
                Value::Null
            ),
            (
                "token.revoked".into(),
                "operator".into(),
                format!("token:{tid}"),
                json!(ws.id)
            ),
            (
                "token.minted".into(),
                format!("workspace:{}", ws.id),
                format!("token:{tid}"),
                json!(ws.id)
            ),
        ]
    );
    assert_eq!(page["chain_valid"], true);
    let text = page.to_string();
    for secret in [&minted["auth_token"], &org["auth_token"]] {
        assert!(
            !text.contains(secret.as_str().unwrap()),
            "a token's secret is in the trail"
        );
    }
}
on_both_engines!(token_mint_and_revoke_are_recorded_with_the_token_id);

/// What the expiry job does on its own is recorded by the `system` actor:
/// a request decided by its `on_expiry` (`approval.expired`) and one
/// handed up the tree (`approval.escalated`, naming the new decider); the
/// chain stays valid, by the listing and by `molecule audit verify`.
async fn approval_expiry_and_escalation_are_recorded_by_the_system(engine: Engine) {
    let Some(mut app) = spawn_app(engine).await else {
        return;
    };
    let root = app.create_poll_workspace_under("root", None).await;
    let lead = app.create_poll_workspace_under("lead", Some(&root)).await;
    let coder = app.create_poll_workspace_under("coder", Some(&lead)).await;
    let mut ids = Vec::new();
    for on_expiry in ["deny", "escalate"] {
        let (status, created) = app
            .post(
                &format!("/workspaces/{}/approvals", coder.id),
                &coder.token,
                &json!({"action": format!("{on_expiry} me"), "expires_in_s": 60, "on_expiry": on_expiry}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        ids.push(created["approval_id"].as_str().unwrap().to_owned());
    }
    let later = chrono::Utc::now() + chrono::Duration::seconds(61);
    let counts = app
        .sweeper
        .scheduler()
        .expire_approvals(later)
        .await
        .unwrap();
    assert_eq!(
        (counts.get("denied"), counts.get("escalated")),
        (Some(1), Some(1))
    );

    let page = app
        .admin_audit(&format!("workspace_id={}&actor=system", coder.id))
        .await;
    let mut rows: Vec<(String, String, Value)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
                e["details"].clone(),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        rows,
        vec![
            (
                "approval.escalated".to_owned(),
                format!("approval:{}", ids[1]),
                json!({"action": "escalate me", "approver_id": root.id, "escalations": 1,
                    "expires_at": rows[0].2["expires_at"]}),
            ),
            (
                "approval.expired".to_owned(),
                format!("approval:{}", ids[0]),
                json!({"action": "deny me", "decision": "denied", "decided_by": "expired",
                    "on_expiry": "deny"}),
            ),
        ]
    );
    assert!(rows[0].2["expires_at"].is_string(), "{}", rows[0].2);
    assert_eq!(page["total"], 2);
    assert_eq!(page["chain_valid"], true);
    let (ok, report) = app.audit_verify_cli();
    assert!(ok, "{report}");
    app.stop().await;
}
on_both_engines!(approval_expiry_and_escalation_are_recorded_by_the_system);

/// A new delegation is one `delegation.created` row on the callee, by
/// who made it (a workspace, the operator, the operator acting as a named
/// workspace, an A2A sender), with caller → callee and its id and never
/// the task's text; a repeat of a key records nothing more.
async fn delegation_creation_is_recorded_without_the_task(engine: Engine) {
    let Some(mut app) = spawn_app(engine).await else {
        return;
    };
    let boss = app.create_poll_workspace_under("boss", None).await;
    let kid = app.create_poll_workspace_under("kid", Some(&boss)).await;
    let delegate = |token: String, named: Option<String>, key: &'static str| {
        let req = app
            .client
            .post(app.url(&format!("/workspaces/{}/delegate", kid.id)))
            .bearer_auth(token)
            .json(&json!({"task": "the secret recipe", "idempotency_key": key}));
        let req = match named {
            Some(n) => req.header("X-Workspace-ID", n),
            None => req,
        };
        async move { TestApp::json(req.send().await.unwrap()).await }
    };
    let mut made = Vec::new();
    for (token, named, key) in [
        (boss.token.clone(), Some(boss.id.clone()), "k1"),
        (app.admin_token.clone(), None, "k2"),
        (app.admin_token.clone(), Some(boss.id.clone()), "k3"),
        // A repeat of the boss's key: the same delegation, no new row.
        (boss.token.clone(), Some(boss.id.clone()), "k1"),
    ] {
        let (status, body) = delegate(token, named, key).await;
        assert!(status.is_success(), "{body}");
        made.push(body["delegation_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(made[0], made[3]);
    // An A2A task is a delegation too.
    let resp = app
        .client
        .post(app.url(&format!("/workspaces/{}/a2a", kid.id)))
        .bearer_auth(&boss.token)
        .header("A2A-Version", "1.0")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
            "message": {"messageId": "m-audit", "role": "ROLE_USER", "parts": [{"text": "the secret recipe"}]},
            "configuration": {"returnImmediately": true}}}))
        .send()
        .await
        .unwrap();
    let (_, sent) = TestApp::json(resp).await;
    let tid = sent["result"]["task"]["id"].as_str().unwrap().to_owned();

    let page = app
        .admin_audit(&format!(
            "workspace_id={}&action=delegation.created",
            kid.id
        ))
        .await;
    let rows: Vec<(String, String, Value)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
                e["details"].clone(),
            )
        })
        .collect();
    let boss_actor = format!("workspace:{}", boss.id);
    let row = |actor: &str, id: &str, caller: &str| {
        (
            actor.to_owned(),
            format!("delegation:{id}"),
            json!({"delegation_id": id, "caller_id": caller, "callee_id": kid.id}),
        )
    };
    assert_eq!(
        rows,
        vec![
            row(&boss_actor, &tid, &boss.id),
            row("operator", &made[2], &boss.id),
            row("operator", &made[1], "operator"),
            row(&boss_actor, &made[0], &boss.id),
        ]
    );
    assert!(
        !page.to_string().contains("secret recipe"),
        "the task's text is in the trail"
    );
    assert_eq!(page["chain_valid"], true);
    app.stop().await;
}
on_both_engines!(delegation_creation_is_recorded_without_the_task);

/// An approval's moves commit with their audit rows or not at all: with
/// the chain's head unreadable (its hash edited in SQL), a request, a
/// decision and an expiry each fail and leave nothing behind — no
/// approval, no decision, no inbox row — and succeed once it is put back,
/// the chain valid.
async fn approval_moves_commit_with_their_audit_rows_or_not_at_all(engine: Engine) {
    let Some(mut app) = spawn_app(engine).await else {
        return;
    };
    let root = app.create_poll_workspace_under("root", None).await;
    let kid = app.create_poll_workspace_under("kid", Some(&root)).await;
    let asks = format!("/workspaces/{}/approvals", kid.id);
    let (status, created) = app
        .post(
            &asks,
            &kid.token,
            &json!({"action": "deploy", "expires_in_s": 60}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let aid = created["approval_id"].as_str().unwrap().to_owned();
    let head = app.admin_audit("limit=1").await["events"][0]["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.audit_sql("UPDATE audit_head SET hash = 'not-hex' WHERE id = 1")
            .await,
        1
    );

    // Each move fails whole.
    let decide = format!("{asks}/{aid}/decide");
    let (status, body) = app
        .post(&decide, &app.admin_token, &json!({"decision": "approved"}))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let (status, body) = app
        .post(&asks, &kid.token, &json!({"action": "another"}))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let later = chrono::Utc::now() + chrono::Duration::seconds(61);
    assert!(app
        .sweeper
        .scheduler()
        .expire_approvals(later)
        .await
        .is_err());
    let (status, listed) = app.get(&asks, &kid.token).await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_str().unwrap(), a["status"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [(aid.as_str(), "pending")]);
    let (_, inbox) = app.activity(&kid, "type=a2a_receive").await;
    assert!(inbox.as_array().unwrap().is_empty(), "{inbox}");

    // The head put back: the decision goes through, with its row.
    app.audit_sql(&format!(
        "UPDATE audit_head SET hash = '{head}' WHERE id = 1"
    ))
    .await;
    let (status, body) = app
        .post(&decide, &app.admin_token, &json!({"decision": "approved"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let page = app.admin_audit(&format!("workspace_id={}", kid.id)).await;
    assert_eq!(
        actions(&page),
        [
            "approval.decided",
            "approval.requested",
            "workspace.created"
        ]
    );
    assert_eq!(page["chain_valid"], true);
    let (ok, report) = app.audit_verify_cli();
    assert!(ok, "{report}");
    app.stop().await;
}
on_both_engines!(approval_moves_commit_with_their_audit_rows_or_not_at_all);
