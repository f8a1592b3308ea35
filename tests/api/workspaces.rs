//! Workspaces, tokens, registration and the operational routes: every
//! route's happy path and error statuses, with the rows left behind.

use molecule::domain::AuthToken;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{revoke_tokens_directly, spawn_app, spawn_app_with, Engine, Options, TestApp};
use crate::on_both_engines;

async fn create_returns_the_workspace_token_and_connection_once(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (status, body) = app
        .create_workspace(json!({"name": "  laptop  ", "delivery_mode": "poll"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap();
    let token = body["auth_token"].as_str().unwrap();
    assert_eq!(body["name"], "laptop");
    assert_eq!(body["delivery_mode"], "poll");
    assert_eq!(body["url"], Value::Null);
    assert_eq!(body["status"], "offline");
    assert_eq!(token.len(), 68);
    assert_eq!(body["connection"]["auth_token"], token);
    assert_eq!(body["connection"]["workspace_id"], id);
    assert_eq!(body["connection"]["platform_url"], app.address);
    assert_eq!(
        body["connection"]["connect_command"],
        format!(
            "(umask 077 && mkdir -p ~/.molecule && echo {token} > ~/.molecule/{id}.token) \
             && molecule connect --server {} --workspace {id} \
             --token-file ~/.molecule/{id}.token --dir .",
            app.address
        )
    );
    // Stored only as a hash: the hash resolves, the plaintext is nowhere.
    let by_hash = app
        .store
        .workspace_for_token(
            AuthToken::from_plaintext(token).hash(),
            molecule::domain::now(),
        )
        .await
        .unwrap();
    assert_eq!(by_hash.map(|w| w.to_string()).as_deref(), Some(id));
    // Listing never shows tokens.
    let (status, list) = app.get("/workspaces", &app.admin_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("auth_token").is_none(), "{list}");
    // The connection block without the token.
    let (status, conn) = app
        .get(
            &format!("/workspaces/{id}/external/connection"),
            &app.admin_token,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(conn["connection"]["auth_token"], "");
    assert_eq!(
        conn["connection"]["connect_command"],
        format!(
            "molecule connect --server {} --workspace {id} --token-file ~/.molecule/{id}.token --dir .",
            app.address
        )
    );
}
on_both_engines!(create_returns_the_workspace_token_and_connection_once);

async fn bad_creates_are_refused_and_leave_no_row(engine: Engine) {
    let Some(app) =
        spawn_app_with(Options::new(engine).tweak(|c| c.allow_private_urls = false)).await
    else {
        return;
    };
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"name": "p", "delivery_mode": "push"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "needs a `url`",
        ),
        (
            json!({"name": "p", "delivery_mode": "push", "url": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "needs a `url`",
        ),
        (
            json!({"name": "p", "delivery_mode": "push", "url": "http://127.0.0.1:9"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "private",
        ),
        (
            json!({"name": "p", "delivery_mode": "push", "url": "http://169.254.169.254/"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "private",
        ),
        (
            json!({"name": "p", "delivery_mode": "push", "url": "file:///etc/passwd"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "http or https",
        ),
        (
            json!({"name": "", "delivery_mode": "poll"}),
            StatusCode::BAD_REQUEST,
            "`name`",
        ),
        (
            json!({"name": "p", "delivery_mode": "carrier-pigeon"}),
            StatusCode::BAD_REQUEST,
            "invalid JSON body",
        ),
        (
            json!({"delivery_mode": "poll"}),
            StatusCode::BAD_REQUEST,
            "missing field `name`",
        ),
    ];
    for (body, want, needle) in cases {
        let (status, answer) = app.create_workspace(body.clone()).await;
        assert_eq!(status, want, "case {body}: {answer}");
        let msg = answer["error"].as_str().unwrap();
        assert!(msg.contains(needle), "case {body}: {msg}");
    }
    let resp = app
        .client
        .post(app.url("/workspaces"))
        .bearer_auth(&app.admin_token)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    let (status, answer) = TestApp::json(resp).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON body"),
        "{answer}"
    );
    let resp = app
        .client
        .post(app.url("/workspaces"))
        .bearer_auth(&app.admin_token)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(app.store.list_workspaces().await.unwrap().is_empty());
}
on_both_engines!(bad_creates_are_refused_and_leave_no_row);

async fn tokens_are_checked_on_every_route(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let unauthorized = json!({"error": "missing or invalid bearer token"});
    // No token, a wrong token, a malformed header.
    let resp = app.client.get(app.url("/workspaces")).send().await.unwrap();
    assert_eq!(
        TestApp::json(resp).await,
        (StatusCode::UNAUTHORIZED, unauthorized.clone())
    );
    assert_eq!(
        app.get("/workspaces", "mol_nope").await,
        (StatusCode::UNAUTHORIZED, unauthorized.clone())
    );
    let resp = app
        .client
        .get(app.url("/workspaces"))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // A workspace token on an operator route: 403.
    let (status, body) = app.get("/workspaces", &a.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = app
        .post(
            &format!("/workspaces/{}/external/rotate", a.id),
            &a.token,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Its own workspace: fine. Another's: the same 401 as an unknown token.
    let (status, body) = app.get(&format!("/workspaces/{}", a.id), &a.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], a.id.as_str());
    assert_eq!(
        app.get(&format!("/workspaces/{}", b.id), &a.token).await,
        (StatusCode::UNAUTHORIZED, unauthorized.clone())
    );
    // Malformed and unknown ids.
    let (status, body) = app.get("/workspaces/not-a-uuid", &app.admin_token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("is not a valid id"),
        "{body}"
    );
    let (status, body) = app
        .get(
            &format!("/workspaces/{}", uuid::Uuid::new_v4()),
            &app.admin_token,
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "workspace not found"})
        )
    );
    // Unknown route: JSON 404.
    let (status, body) = app.get("/nope", &app.admin_token).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"error": "no such route"}))
    );
}
on_both_engines!(tokens_are_checked_on_every_route);

async fn patch_changes_only_what_it_names(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("before").await;
    let path = format!("/workspaces/{}", ws.id);
    let patch = |body: Value| {
        let client = app.client.clone();
        let url = app.url(&path);
        let token = app.admin_token.clone();
        async move {
            TestApp::json(
                client
                    .patch(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let (status, body) = patch(json!({"name": "after"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["name"].as_str(), body["delivery_mode"].as_str()),
        (Some("after"), Some("poll"))
    );
    // Push without a URL: refused, nothing changes.
    let (status, body) = patch(json!({"delivery_mode": "push"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let stored = app.store.get_workspace(ws.wid()).await.unwrap().unwrap();
    assert_eq!(stored.delivery_mode.as_str(), "poll");
    let (status, body) =
        patch(json!({"delivery_mode": "push", "url": "http://127.0.0.1:1/agent/"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["url"], "http://127.0.0.1:1/agent");
    // Clearing the URL of a push workspace is refused; of a poll one, fine.
    let (status, _) = patch(json!({"url": null})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = patch(json!({"delivery_mode": "poll", "url": null})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["url"], Value::Null);
    let stored = app.store.get_workspace(ws.wid()).await.unwrap().unwrap();
    assert_eq!((stored.name.as_str(), stored.url), ("after", None));
    let (status, _) = patch(json!({"name": "x"})).await;
    assert_eq!(status, StatusCode::OK);
    let resp = app
        .client
        .patch(app.url(&format!("/workspaces/{}", uuid::Uuid::new_v4())))
        .bearer_auth(&app.admin_token)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}
on_both_engines!(patch_changes_only_what_it_names);

async fn delete_revokes_tokens_but_keeps_staged_files(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("doomed").await;
    let (status, _) = app
        .upload(
            &ws.id,
            vec![crate::helpers::file("a.txt", "text/plain", "hello")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let resp = app
        .client
        .delete(app.url(&format!("/workspaces/{}", ws.id)))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(resp.text().await.unwrap(), "");
    let (status, _) = app.get(&format!("/workspaces/{}", ws.id), &ws.token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .get(&format!("/workspaces/{}", ws.id), &app.admin_token)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let resp = app
        .client
        .delete(app.url(&format!("/workspaces/{}", ws.id)))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // Evidence of receipt survives until its own TTL.
    let staged = app
        .store
        .list_pending_uploads(ws.wid(), molecule::domain::now())
        .await
        .unwrap();
    assert_eq!(staged.len(), 1);
    assert_eq!(app.blob_keys().await.len(), 1);
}
on_both_engines!(delete_revokes_tokens_but_keeps_staged_files);

async fn rotate_revokes_every_earlier_token_at_once(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let (status, first) = app
        .post(
            &format!("/workspaces/{}/external/rotate", ws.id),
            &app.admin_token,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, second) = app
        .post(
            &format!("/workspaces/{}/external/rotate", ws.id),
            &app.admin_token,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let newest = second["auth_token"].as_str().unwrap();
    assert_eq!(second["connection"]["auth_token"], newest);
    for old in [ws.token.as_str(), first["auth_token"].as_str().unwrap()] {
        let (status, _) = app.get(&format!("/workspaces/{}", ws.id), old).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = app.get(&format!("/workspaces/{}", ws.id), newest).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .post(
            &format!("/workspaces/{}/external/rotate", uuid::Uuid::new_v4()),
            &app.admin_token,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
on_both_engines!(rotate_revokes_every_earlier_token_at_once);

async fn register_bootstraps_only_a_workspace_without_a_live_token(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let anon = |body: Value| {
        let client = app.client.clone();
        let url = app.url("/registry/register");
        async move { TestApp::json(client.post(url).json(&body).send().await.unwrap()).await }
    };
    // It has a live token: anonymous registration changes nothing and
    // mints nothing.
    let (status, body) = anon(json!({"id": ws.id})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("auth_token").is_none() && body["warning"].is_string());
    revoke_tokens_directly(&app.config.database_url, &ws.id).await;
    let (status, body) =
        anon(json!({"id": ws.id, "delivery_mode": "poll", "agent_card": {"name": "bot"}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let minted = body["auth_token"].as_str().unwrap().to_owned();
    assert_eq!(body["status"], "online");
    assert_eq!(body["agent_card"], json!({"name": "bot"}));
    // Exactly once.
    let (status, body) = anon(json!({"id": ws.id})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("auth_token").is_none() && body["warning"].is_string());
    // The minted token works; with it registration answers without a token field.
    let (status, body) = app
        .post("/registry/register", &minted, &json!({"id": ws.id}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("auth_token").is_none());
    let (status, _) = anon(json!({"id": "nope"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = anon(json!({"id": uuid::Uuid::new_v4()})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
on_both_engines!(register_bootstraps_only_a_workspace_without_a_live_token);

async fn register_and_heartbeat_mark_the_workspace_online(engine: Engine) {
    let Some(app) =
        spawn_app_with(Options::new(engine).tweak(|c| c.allow_private_urls = false)).await
    else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let other = app.create_poll_workspace("other").await;
    let (status, body) = app
        .post(
            "/registry/register",
            &ws.token,
            &json!({"id": ws.id, "delivery_mode": "push", "url": "http://10.0.0.5/"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let stored = app.store.get_workspace(ws.wid()).await.unwrap().unwrap();
    assert_eq!(
        (stored.delivery_mode.as_str(), stored.last_heartbeat_at),
        ("poll", None)
    );
    let (status, body) = app
        .post(
            "/registry/register",
            &ws.token,
            &json!({"id": ws.id, "url": "https://agent.example.com/a2a"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["url"], "https://agent.example.com/a2a");
    let (status, body) = app
        .post(
            "/registry/heartbeat",
            &ws.token,
            &json!({"workspace_id": ws.id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok");
    let stored = app.store.get_workspace(ws.wid()).await.unwrap().unwrap();
    assert_eq!(
        stored
            .last_heartbeat_at
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        body["last_heartbeat_at"].as_str().unwrap()
    );
    let (status, _) = app
        .post(
            "/registry/heartbeat",
            &other.token,
            &json!({"workspace_id": ws.id}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .post(
            "/registry/heartbeat",
            &ws.token,
            &json!({"workspace_id": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app
        .post("/registry/register", &other.token, &json!({"id": ws.id}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
on_both_engines!(register_and_heartbeat_mark_the_workspace_online);

#[tokio::test]
async fn health_ready_and_openapi_need_no_token() {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    let (status, body) =
        TestApp::json(app.client.get(app.url("/health")).send().await.unwrap()).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, body) =
        TestApp::json(app.client.get(app.url("/ready")).send().await.unwrap()).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ready"})));
    let (status, doc) = TestApp::json(
        app.client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            "/.well-known/agent-card.json",
            "/admin/activity/events",
            "/admin/audit",
            "/admin/config",
            "/admin/delegations",
            "/admin/delegations/edges",
            "/admin/delegations/events",
            "/admin/delegations/stats",
            "/admin/memories",
            "/admin/memories/{mid}",
            "/admin/pending-uploads/stats",
            "/admin/read-state",
            "/admin/read-state/mark-all",
            "/admin/schedules/health",
            "/admin/secrets",
            "/admin/secrets/{key}",
            "/admin/usage",
            "/agents",
            "/approvals/events",
            "/approvals/pending",
            "/events",
            "/events/{id}",
            "/health",
            "/instructions",
            "/instructions/{id}",
            "/metrics",
            "/org/import",
            "/org/tokens",
            "/org/tokens/{tid}",
            "/plugins",
            "/plugins/{name}",
            "/ready",
            "/registry/discover/{target}",
            "/registry/heartbeat",
            "/registry/register",
            "/registry/update-card",
            "/registry/{id}/peers",
            "/schedules/preview",
            "/search",
            "/traces/{trace_id}",
            "/workspaces",
            "/workspaces/{id}",
            "/workspaces/{id}/.well-known/agent-card.json",
            "/workspaces/{id}/a2a",
            "/workspaces/{id}/activity",
            "/workspaces/{id}/agent-card",
            "/workspaces/{id}/approvals",
            "/workspaces/{id}/approvals/{aid}",
            "/workspaces/{id}/approvals/{aid}/decide",
            "/workspaces/{id}/audit",
            "/workspaces/{id}/budget",
            "/workspaces/{id}/chat/uploads",
            "/workspaces/{id}/delegate",
            "/workspaces/{id}/delegations",
            "/workspaces/{id}/delegations/stats",
            "/workspaces/{id}/delegations/{did}",
            "/workspaces/{id}/delegations/{did}/cancel",
            "/workspaces/{id}/delegations/{did}/heartbeat",
            "/workspaces/{id}/delegations/{did}/retry",
            "/workspaces/{id}/delegations/{did}/status",
            "/workspaces/{id}/events",
            "/workspaces/{id}/external/connection",
            "/workspaces/{id}/external/rotate",
            "/workspaces/{id}/instructions/resolve",
            "/workspaces/{id}/mcp",
            "/workspaces/{id}/mcp/messages",
            "/workspaces/{id}/mcp/stream",
            "/workspaces/{id}/memories",
            "/workspaces/{id}/memories/{mid}",
            "/workspaces/{id}/memory",
            "/workspaces/{id}/memory/{key}",
            "/workspaces/{id}/metrics",
            "/workspaces/{id}/notify",
            "/workspaces/{id}/notify/uploads",
            "/workspaces/{id}/pause",
            "/workspaces/{id}/pending-uploads",
            "/workspaces/{id}/pending-uploads/{fid}/ack",
            "/workspaces/{id}/pending-uploads/{fid}/content",
            "/workspaces/{id}/plugins",
            "/workspaces/{id}/plugins/{name}/download",
            "/workspaces/{id}/read-state",
            "/workspaces/{id}/restart",
            "/workspaces/{id}/resume",
            "/workspaces/{id}/schedules",
            "/workspaces/{id}/schedules/health",
            "/workspaces/{id}/schedules/{sid}",
            "/workspaces/{id}/schedules/{sid}/history",
            "/workspaces/{id}/schedules/{sid}/run",
            "/workspaces/{id}/secrets",
            "/workspaces/{id}/secrets/values",
            "/workspaces/{id}/secrets/{key}",
            "/workspaces/{id}/state",
            "/workspaces/{id}/tokens",
            "/workspaces/{id}/tokens/{tid}",
            "/workspaces/{id}/traces",
            "/workspaces/{id}/transcript",
            "/workspaces/{id}/usage",
        ]
    );
    assert!(doc["paths"]["/workspaces"]["post"]["responses"]["201"].is_object());
}

async fn config_shows_the_upload_limits_the_online_window_and_the_default_tier(engine: Engine) {
    let Some(app) = spawn_app_with(Options::new(engine).tweak(|c| {
        c.limits.max_file_size = 1024 * 1024;
        c.limits.max_request_size = 3 * 1024 * 1024;
        c.offline_after = std::time::Duration::from_secs(60);
        c.default_tier = molecule::domain::Tier::new(2).unwrap();
    }))
    .await
    else {
        return;
    };
    let (status, body) = app.get("/admin/config", &app.admin_token).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({
                "max_file_bytes": 1_048_576,
                "max_request_bytes": 3_145_728,
                "offline_after_seconds": 60,
                "default_tier": 2,
                "role": "admin",
                "team_root": null,
            })
        )
    );
    // Operator only: a workspace token is refused, no token is unknown.
    let ws = app.create_poll_workspace("agent").await;
    let (status, body) = app.get("/admin/config", &ws.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"].is_string(), "{body}");
    let (status, body) = app.get("/admin/config", "not-a-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}
on_both_engines!(config_shows_the_upload_limits_the_online_window_and_the_default_tier);

#[tokio::test]
async fn ready_answers_503_when_the_blob_store_is_gone() {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    std::fs::remove_dir_all(app.data_dir.path().join("blobs")).unwrap();
    let (status, body) =
        TestApp::json(app.client.get(app.url("/ready")).send().await.unwrap()).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "the blob store does not answer"})
        )
    );
}
