//! The remote-agent surface as Molecule's Python SDK (`RemoteAgentClient`)
//! drives it: registration without a bearer, peer A2A calls with
//! `X-Workspace-ID`, and the inbox filters. Every request here carries
//! exactly the headers and body the SDK sends.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{revoke_tokens_directly, spawn_app, Engine, TestApp, Ws};
use crate::on_both_engines;

const WARNING: &str = "this workspace already has a live token, so no new token was issued and nothing was changed; keep using your saved token and send it as `Authorization: Bearer <token>` to update the URL or agent card (the operator can rotate a lost token)";

/// `RemoteAgentClient.register()`: no Authorization header, ever.
async fn sdk_register(app: &TestApp, id: &str, url: &str, card: Value) -> (StatusCode, Value) {
    TestApp::json(
        app.client
            .post(app.url("/registry/register"))
            .json(&json!({"id": id, "url": url, "agent_card": card}))
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// `RemoteAgentClient.call_peer(prefer_direct=False)`: the SDK's JSON-RPC
/// envelope, its bearer, `X-Workspace-ID` and `Content-Type`.
pub async fn sdk_call_peer(
    app: &TestApp,
    caller: &Ws,
    target: &str,
    text: &str,
    named: &[(&str, &str)],
) -> (StatusCode, Value) {
    let body = json!({
        "jsonrpc": "2.0",
        "id": uuid::Uuid::new_v4().to_string(),
        "method": "message/send",
        "params": {"message": {
            "role": "user",
            "messageId": uuid::Uuid::new_v4().to_string(),
            "parts": [{"kind": "text", "text": text}],
        }},
    });
    let mut request = app
        .client
        .post(app.url(&format!("/workspaces/{target}/a2a")))
        .bearer_auth(&caller.token)
        .header("Content-Type", "application/json")
        .body(body.to_string());
    for (name, value) in named {
        request = request.header(*name, *value);
    }
    TestApp::json(request.send().await.unwrap()).await
}

/// Live tokens of a workspace, counted in the database.
async fn live_tokens(app: &TestApp, ws: &str) -> i64 {
    let url = &app.config.database_url;
    if url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM workspace_auth_tokens WHERE workspace_id = ?1 AND revoked_at IS NULL")
            .bind(ws)
            .fetch_one(&pool)
            .await
            .unwrap()
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM workspace_auth_tokens WHERE workspace_id = $1::uuid AND revoked_at IS NULL")
            .bind(ws)
            .fetch_one(&pool)
            .await
            .unwrap()
    }
}

async fn sdk_register_bootstraps_once_then_warns_and_changes_nothing(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("remote").await;
    revoke_tokens_directly(&app.config.database_url, &ws.id).await;
    let card = json!({"name": format!("remote-agent-{}", &ws.id[..8])});

    // First registration: the SDK's placeholder URL means "no inbound URL".
    let (status, body) = sdk_register(&app, &ws.id, "remote://no-inbound", card.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["auth_token"]
        .as_str()
        .expect("a minted token")
        .to_owned();
    assert_eq!(body["url"], Value::Null);
    assert_eq!(body["agent_card"], card);
    assert!(body.get("warning").is_none(), "{body}");
    let after_first = app.store.get_workspace(ws.wid()).await.unwrap().unwrap();
    assert_eq!(after_first.url, None);
    assert_eq!(after_first.agent_card, Some(card.clone()));
    assert!(after_first.last_heartbeat_at.is_some());
    assert_eq!(live_tokens(&app, &ws.id).await, 1);

    // The SDK registers again on every start, still without a bearer: 200,
    // no token, a warning, and nothing changed (not even the heartbeat).
    let (status, body) = sdk_register(
        &app,
        &ws.id,
        "https://hijack.example.com/a2a",
        json!({"name": "hijacked"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("auth_token").is_none(), "{body}");
    assert_eq!(body["warning"], WARNING);
    assert_eq!(body["agent_card"], card);
    assert_eq!(
        app.store.get_workspace(ws.wid()).await.unwrap().unwrap(),
        after_first
    );
    assert_eq!(live_tokens(&app, &ws.id).await, 1);

    // With the workspace's bearer, URL and card are applied.
    let (status, body) = app
        .post(
            "/registry/register",
            &token,
            &json!({"id": ws.id, "url": "https://agent.example.com/a2a", "agent_card": {"name": "v2"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["url"], "https://agent.example.com/a2a");
    assert_eq!(body["agent_card"], json!({"name": "v2"}));
    assert!(body.get("auth_token").is_none() && body.get("warning").is_none());
    // A later no-inbound placeholder leaves the stored URL alone.
    let (status, body) = app
        .post(
            "/registry/register",
            &token,
            &json!({"id": ws.id, "url": "remote://no-inbound"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["url"], "https://agent.example.com/a2a");
    assert_eq!(live_tokens(&app, &ws.id).await, 1);
}
on_both_engines!(sdk_register_bootstraps_once_then_warns_and_changes_nothing);

async fn sdk_peer_call_to_a_poll_workspace_is_queued_with_the_caller_as_source(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let caller = app.create_poll_workspace("caller").await;
    let other = app.create_poll_workspace("other").await;
    let target = app.create_poll_workspace("target").await;

    let (status, body) = sdk_call_peer(
        &app,
        &caller,
        &target.id,
        "hello peer",
        &[("X-Workspace-ID", &caller.id)],
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["queued"], true);
    let first = body["activity_id"].as_i64().unwrap();
    // Our own header, and no header at all (the token says who calls).
    let (status, _) = sdk_call_peer(
        &app,
        &caller,
        &target.id,
        "second",
        &[("X-Source-Workspace-Id", &caller.id)],
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = sdk_call_peer(&app, &caller, &target.id, "third", &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // A named header that disagrees with the token: 401, nothing staged.
    for named in [
        vec![("X-Workspace-ID", other.id.as_str())],
        vec![("X-Source-Workspace-Id", other.id.as_str())],
        vec![("X-Workspace-ID", "not-a-uuid")],
        vec![
            ("X-Workspace-ID", caller.id.as_str()),
            ("X-Source-Workspace-Id", other.id.as_str()),
        ],
    ] {
        let (status, body) = sdk_call_peer(&app, &caller, &target.id, "spoof", &named).await;
        assert_eq!(
            (status, body),
            (
                StatusCode::UNAUTHORIZED,
                json!({"error": "missing or invalid bearer token"})
            ),
            "{named:?}"
        );
    }

    let (status, rows) = app.activity(&target, "type=a2a_receive").await;
    assert_eq!(status, StatusCode::OK);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0]["id"], first);
    for (row, text) in rows.iter().zip(["hello peer", "second", "third"]) {
        assert_eq!(row["source_id"], caller.id);
        assert_eq!(row["target_id"], target.id);
        assert_eq!(row["status"], "queued");
        assert_eq!(row["data"]["source"], "peer_agent");
        assert_eq!(row["data"]["source_id"], caller.id);
        assert_eq!(row["data"]["text"], text);
    }
}
on_both_engines!(sdk_peer_call_to_a_poll_workspace_is_queued_with_the_caller_as_source);

async fn sdk_peer_call_to_a_push_workspace_returns_its_answer(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let agent = crate::uploads::spawn_push_agent().await;
    let caller = app.create_poll_workspace("caller").await;
    let target = app
        .create_push_workspace("pushy", &format!("{agent}/"))
        .await;
    let (status, body) = sdk_call_peer(
        &app,
        &caller,
        &target.id,
        "ping",
        &[("X-Workspace-ID", &caller.id)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["parts"][0]["text"], "echo: ping");
    let (_, rows) = app
        .get(
            &format!("/workspaces/{}/activity", target.id),
            &app.admin_token,
        )
        .await;
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["status"], "forwarded");
    assert_eq!(rows[0]["source_id"], caller.id);
    assert_eq!(rows[0]["response_body"], body);
}
on_both_engines!(sdk_peer_call_to_a_push_workspace_returns_its_answer);

async fn inbox_filters_by_peer_and_time_and_long_polls_respect_them(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let inbox = app.create_poll_workspace("inbox").await;
    for (who, text) in [(&a, "a1"), (&b, "b1"), (&a, "a2"), (&b, "b2")] {
        let (status, _) = sdk_call_peer(&app, who, &inbox.id, text, &[]).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let (status, _) = app.send_text(&inbox.id, "from the canvas").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, all) = app.activity(&inbox, "").await;
    let all = all.as_array().unwrap().clone();
    assert_eq!(all.len(), 5);
    let texts = |rows: &Value| -> Vec<String> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["data"]["text"].as_str().unwrap().to_owned())
            .collect()
    };

    let (status, rows) = app.activity(&inbox, &format!("peer_id={}", a.id)).await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert_eq!(texts(&rows), ["a1", "a2"]);
    // Upper case is the same id.
    let (_, rows) = app
        .activity(&inbox, &format!("peer_id={}", b.id.to_uppercase()))
        .await;
    assert_eq!(texts(&rows), ["b1", "b2"]);

    // Strictly before the third row's instant: the first two (rows of one
    // workspace may share a microsecond, so compare against the stored times).
    let third_at = all[2]["created_at"].as_str().unwrap();
    let expected: Vec<String> = all
        .iter()
        .filter(|r| {
            chrono::DateTime::parse_from_rfc3339(r["created_at"].as_str().unwrap()).unwrap()
                < chrono::DateTime::parse_from_rfc3339(third_at).unwrap()
        })
        .map(|r| r["data"]["text"].as_str().unwrap().to_owned())
        .collect();
    let (status, rows) = app
        .activity(&inbox, &format!("before_ts={}", urlencode(third_at)))
        .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert_eq!(texts(&rows), expected);
    assert!(!expected.contains(&"a2".to_owned()));

    // Combined with type, since_id and limit.
    let far_future = "2999-01-01T00:00:00%2B00:00";
    let (_, rows) = app
        .activity(
            &inbox,
            &format!(
                "type=a2a_receive&peer_id={}&since_id={}&limit=1&before_ts={far_future}",
                a.id, all[0]["id"]
            ),
        )
        .await;
    assert_eq!(texts(&rows), ["a2"]);
    let (_, rows) = app
        .activity(&inbox, &format!("type=agent_message&peer_id={}", a.id))
        .await;
    assert_eq!(rows, json!([]));

    // Malformed values: 400 with a sentence.
    let (status, body) = app.activity(&inbox, "peer_id=bob").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"],
        "`peer_id` must be a workspace id: `bob` is not a valid id: ids are UUIDs such as 6f1c2a4e-0b7d-4c55-9a47-3b8f0e9d2c11"
    );
    let (status, body) = app.activity(&inbox, "before_ts=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("`before_ts` must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z"),
        "{body}"
    );

    // A long poll filtered on a wakes for a's row, not for b's.
    let last = all[4]["id"].as_i64().unwrap();
    let poll = {
        let client = app.client.clone();
        let url = app.url(&format!(
            "/workspaces/{}/activity?peer_id={}&since_id={last}&wait=10",
            inbox.id, a.id
        ));
        let token = inbox.token.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let resp = client.get(url).bearer_auth(token).send().await.unwrap();
            (started.elapsed(), TestApp::json(resp).await)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = sdk_call_peer(&app, &b, &inbox.id, "b3", &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !poll.is_finished(),
        "a row from b answered a poll filtered on a"
    );
    let (status, _) = sdk_call_peer(&app, &a, &inbox.id, "a3", &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (elapsed, (status, rows)) = poll.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(texts(&rows), ["a3"]);
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

    // A long poll filtered before a past instant never matches a new row:
    // it waits out its `wait` and answers [].
    let started = Instant::now();
    let (status, rows) = app
        .activity(
            &inbox,
            &format!("since_id={last}&before_ts=2000-01-01T00:00:00Z&wait=1"),
        )
        .await;
    assert_eq!((status, rows), (StatusCode::OK, json!([])));
    assert!(started.elapsed() >= Duration::from_millis(900));
}
on_both_engines!(inbox_filters_by_peer_and_time_and_long_polls_respect_them);

fn urlencode(raw: &str) -> String {
    percent_encoding::utf8_percent_encode(raw, percent_encoding::NON_ALPHANUMERIC).to_string()
}
