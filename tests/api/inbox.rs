//! Messages and the inbox: message/send in both modes, notify, reported
//! activity, the long poll, the no-skip cursor, and the SSE stream.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{file, spawn_app, Engine, TestApp};
use crate::on_both_engines;

async fn message_send_to_a_poll_workspace_is_queued(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    // Molecule's canvas form: no JSON-RPC wrapper, no messageId.
    let (status, body) = app.send_text(&ws.id, "hello there\nsecond line").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["queued"], true);
    let activity_id = body["activity_id"].as_i64().unwrap();
    let (status, rows) = app.activity(&ws, "type=a2a_receive").await;
    assert_eq!(status, StatusCode::OK);
    let row = &rows[0];
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(row["id"], activity_id);
    assert_eq!(row["workspace_id"], ws.id.as_str());
    assert_eq!(row["method"], "message/send");
    assert_eq!(row["summary"], "hello there");
    assert_eq!(row["status"], "queued");
    let rpc = &row["request_body"];
    assert_eq!(rpc["jsonrpc"], "2.0");
    assert!(rpc["id"].is_string());
    let message_id = rpc["params"]["message"]["messageId"].as_str().unwrap();
    // The message's trace context: a new trace (the request sent none).
    let traceparent = row["data"]["traceparent"].as_str().unwrap();
    assert!(
        molecule::domain::TraceParent::parse(traceparent).is_some(),
        "{traceparent}"
    );
    assert_eq!(
        row["data"],
        json!({"source": "canvas_user", "source_id": null, "text": "hello there\nsecond line",
            "parts": [{"kind": "text", "text": "hello there\nsecond line"}], "message_id": message_id,
            "traceparent": traceparent})
    );
    // A full JSON-RPC request keeps its ids. (A `platform-pending:` URI
    // must name a file staged for the workspace: see connect_files.rs.)
    let (status, _) = app
        .post(
            &format!("/workspaces/{}/a2a", ws.id),
            &app.admin_token,
            &json!({"jsonrpc": "2.0", "id": 7, "method": "message/send", "params": {"message": {"role": "user", "messageId": "m-1",
                "parts": [{"kind": "file", "file": {"uri": "https://example.com/a.txt", "name": "a.txt", "mimeType": "text/plain"}}]}}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, rows) = app.activity(&ws, &format!("since_id={activity_id}")).await;
    assert_eq!(rows[0]["request_body"]["id"], 7);
    assert_eq!(rows[0]["data"]["message_id"], "m-1");
    // Refusals write nothing.
    let bad = [
        json!({"method": "tasks/send", "params": {}}),
        json!({"params": {"message": {"parts": []}}}),
        json!({"params": {"message": {"parts": [{"kind": "text"}]}}}),
        json!({"params": {"message": {"parts": [{"kind": "video"}]}}}),
        json!([1, 2]),
    ];
    for body in bad {
        let (status, answer) = app
            .post(
                &format!("/workspaces/{}/a2a", ws.id),
                &app.admin_token,
                &body,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "case {body}: {answer}");
    }
    let (_, rows) = app.activity(&ws, "").await;
    assert_eq!(rows.as_array().unwrap().len(), 2);
}
on_both_engines!(message_send_to_a_poll_workspace_is_queued);

/// The workspace's own poll marks its messages picked up (the canvas's
/// "picked up"); the operator reading the inbox, a poll filtered to other
/// rows or to one source, and an empty answer do not; the mark never moves back.
async fn the_agents_own_poll_marks_its_messages_picked_up(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    async fn picked_up_through(app: &TestApp, id: &str) -> Value {
        let (status, view) = app
            .get(&format!("/workspaces/{id}"), &app.admin_token)
            .await;
        assert_eq!(status, StatusCode::OK);
        view["inbox_picked_up_through"].clone()
    }
    let mark = |app| picked_up_through(app, &ws.id);
    assert_eq!(mark(&app).await, Value::Null);
    let (_, first) = app.send_text(&ws.id, "one").await;
    let (_, second) = app.send_text(&ws.id, "two").await;
    let (first, second) = (
        first["activity_id"].as_i64().unwrap(),
        second["activity_id"].as_i64().unwrap(),
    );
    // Reads that prove nothing about the agent's copy.
    let (status, rows) = app
        .get(
            &format!("/workspaces/{}/activity?since_id=0", ws.id),
            &app.admin_token,
        )
        .await;
    assert_eq!(
        (status, rows.as_array().unwrap().len()),
        (StatusCode::OK, 2)
    );
    let (_, rows) = app.activity(&ws, "type=agent_log").await;
    assert_eq!(rows, json!([]));
    let (_, rows) = app
        .activity(
            &ws,
            "type=a2a_receive&peer_id=00000000-0000-4000-8000-000000000001",
        )
        .await;
    assert_eq!(rows, json!([]));
    assert_eq!(mark(&app).await, Value::Null);
    // The agent's poll, one row at a time: the mark follows it.
    let (_, rows) = app.activity(&ws, "since_id=0&limit=1").await;
    assert_eq!(rows[0]["id"], first);
    assert_eq!(mark(&app).await, json!(first));
    let (_, rows) = app
        .activity(&ws, &format!("type=a2a_receive&since_id={first}"))
        .await;
    assert_eq!(rows[0]["id"], second);
    assert_eq!(mark(&app).await, json!(second));
    // A late re-read from the start never moves it back.
    let (_, rows) = app.activity(&ws, "since_id=0&limit=1").await;
    assert_eq!(rows[0]["id"], first);
    assert_eq!(mark(&app).await, json!(second));
    assert_eq!(
        app.store
            .get_workspace(ws.wid())
            .await
            .unwrap()
            .unwrap()
            .inbox_picked_up_through,
        Some(second)
    );
}
on_both_engines!(the_agents_own_poll_marks_its_messages_picked_up);

async fn message_send_to_a_push_workspace_returns_its_answer(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let agent = crate::uploads::spawn_push_agent().await;
    let ws = app.create_push_workspace("p", &format!("{agent}/")).await;
    let (status, body) = app.send_text(&ws.id, "ping").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["parts"][0]["text"], "echo: ping");
    let (_, rows) = app
        .get(&format!("/workspaces/{}/activity", ws.id), &app.admin_token)
        .await;
    assert_eq!(rows[0]["status"], "forwarded");
    assert_eq!(rows[0]["response_body"], body);
    // The workspace answered: that is contact, shown as online.
    let (_, shown) = app
        .get(&format!("/workspaces/{}", ws.id), &app.admin_token)
        .await;
    assert_eq!(shown["status"], "online", "{shown}");
    assert!(shown["last_heartbeat_at"].is_string(), "{shown}");
    let dead = app
        .create_push_workspace("dead", "http://127.0.0.1:9")
        .await;
    let (status, body) = app.send_text(&dead.id, "ping").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let (_, rows) = app
        .get(
            &format!("/workspaces/{}/activity", dead.id),
            &app.admin_token,
        )
        .await;
    assert_eq!(rows, json!([]));
    let (_, shown) = app
        .get(&format!("/workspaces/{}", dead.id), &app.admin_token)
        .await;
    assert_eq!(
        (&shown["status"], &shown["last_heartbeat_at"]),
        (&json!("offline"), &Value::Null),
        "{shown}"
    );
}
on_both_engines!(message_send_to_a_push_workspace_returns_its_answer);

async fn notify_and_reported_activity_are_the_workspaces_own(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let other = app.create_poll_workspace("o").await;
    let (status, body) = app
        .post(
            &format!("/workspaces/{}/notify", ws.id),
            &ws.token,
            &json!({"message": "done!", "attachments": [{"uri": "workspace:/tmp/a", "name": "a"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["activity_id"].as_i64().unwrap();
    let (status, _) = app
        .post(
            &format!("/workspaces/{}/notify", ws.id),
            &app.admin_token,
            &json!({"message": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .post(
            &format!("/workspaces/{}/notify", ws.id),
            &other.token,
            &json!({"message": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .post(
            &format!("/workspaces/{}/notify", ws.id),
            &ws.token,
            &json!({"message": "x", "attachments": [{}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = app
        .post(
            &format!("/workspaces/{}/activity", ws.id),
            &ws.token,
            &json!({"activity_type": "task_update", "summary": "working", "status": "ok"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let reported = body["id"].as_i64().unwrap();
    assert!(reported > id);
    let (status, _) = app
        .post(
            &format!("/workspaces/{}/activity", ws.id),
            &ws.token,
            &json!({"activity_type": ""}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, rows) = app.activity(&ws, "").await;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["activity_type"], "agent_message");
    assert_eq!(
        rows[0]["data"],
        json!({"source": "agent", "text": "done!", "attachments": [{"uri": "workspace:/tmp/a", "name": "a"}]})
    );
    assert_eq!(
        (
            rows[1]["activity_type"].as_str(),
            rows[1]["summary"].as_str()
        ),
        (Some("task_update"), Some("working"))
    );
    let (_, only) = app.activity(&ws, "type=agent_message").await;
    assert_eq!(only.as_array().unwrap().len(), 1);
}
on_both_engines!(notify_and_reported_activity_are_the_workspaces_own);

#[tokio::test]
async fn activity_parameters_are_checked() {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    let ws = app.create_poll_workspace("w").await;
    for (query, needle) in [
        ("limit=0", "`limit` must be between 1 and 500"),
        ("limit=501", "`limit` must be between 1 and 500"),
        ("wait=61", "`wait` must be between 0 and 60 seconds"),
        ("since_id=-1", "`since_id` must not be negative"),
        ("since_id=abc", "since_id"),
    ] {
        let (status, body) = app.activity(&ws, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "case {query}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "case {query}: {body}"
        );
    }
    for i in 0..5 {
        app.send_text(&ws.id, &format!("m{i}")).await;
    }
    let (_, rows) = app.activity(&ws, "limit=2").await;
    let texts: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["data"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["m0", "m1"]);
    let last = rows[1]["id"].as_i64().unwrap();
    let (_, rows) = app
        .activity(&ws, &format!("since_id={last}&limit=500"))
        .await;
    let texts: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["data"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["m2", "m3", "m4"]);
    // An empty wait answers [] when it runs out.
    let started = Instant::now();
    let (status, rows) = app
        .activity(&ws, &format!("since_id={}&wait=1", last + 100))
        .await;
    assert_eq!((status, rows), (StatusCode::OK, json!([])));
    assert!(started.elapsed() >= Duration::from_millis(900));
}

/// History read backwards, as the canvas opens a long chat: the newest
/// page first, then each older page by the first id seen, every row once,
/// oldest first within a page; filters still apply; bad values are 400s.
async fn history_reads_backwards_a_page_at_a_time(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let other = app.create_poll_workspace("other").await;
    for i in 0..7 {
        app.send_text(&ws.id, &format!("m{i}")).await;
        if i == 3 {
            app.send_text(&other.id, "elsewhere").await;
        }
    }
    let texts = |rows: &Value| -> Vec<String> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["data"]["text"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, newest) = app
        .activity(&ws, &format!("before_id={}&limit=3", i64::MAX))
        .await;
    assert_eq!(status, StatusCode::OK, "{newest}");
    assert_eq!(texts(&newest), ["m4", "m5", "m6"]);
    let mut before = newest[0]["id"].as_i64().unwrap();
    let (_, page) = app
        .activity(&ws, &format!("before_id={before}&limit=3"))
        .await;
    assert_eq!(texts(&page), ["m1", "m2", "m3"]);
    before = page[0]["id"].as_i64().unwrap();
    let (_, page) = app
        .activity(&ws, &format!("before_id={before}&limit=3"))
        .await;
    assert_eq!(texts(&page), ["m0"]);
    let first = page[0]["id"].as_i64().unwrap();
    let (_, page) = app.activity(&ws, &format!("before_id={first}")).await;
    assert_eq!(page, json!([]));
    // The type filter holds going backwards too.
    let (_, none) = app
        .activity(&ws, &format!("before_id={}&type=agent_message", i64::MAX))
        .await;
    assert_eq!(none, json!([]));
    // A cursor that names a row of another workspace's history (inside
    // this one's range of ids) names nothing of this listing.
    let (_, theirs) = app.activity(&other, "limit=1").await;
    let foreign = theirs[0]["id"].as_i64().unwrap();
    assert!(
        foreign > first,
        "the foreign row sits between this one's rows"
    );
    let foreign_query = format!("before_id={foreign}");
    for (query, needle) in [
        ("before_id=0", "`before_id` must be at least 1"),
        ("before_id=5&wait=1", "cannot be combined with `wait`"),
        (
            foreign_query.as_str(),
            "names no row of this workspace's activity",
        ),
    ] {
        let (status, body) = app.activity(&ws, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "case {query}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "case {query}: {body}"
        );
    }
}
on_both_engines!(history_reads_backwards_a_page_at_a_time);

async fn a_long_poll_wakes_when_a_row_arrives(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let poll = {
        let (client, url, token) = (
            app.client.clone(),
            app.url(&format!(
                "/workspaces/{}/activity?type=a2a_receive&wait=30",
                ws.id
            )),
            ws.token.clone(),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let resp = client.get(url).bearer_auth(token).send().await.unwrap();
            (TestApp::json(resp).await, started.elapsed())
        })
    };
    // Rows of another type or another workspace do not answer it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.post(
        &format!("/workspaces/{}/activity", ws.id),
        &ws.token,
        &json!({"activity_type": "other"}),
    )
    .await;
    let other = app.create_poll_workspace("o").await;
    app.send_text(&other.id, "not for you").await;
    assert!(!poll.is_finished(), "woken by an unrelated row");
    let (status, _) = app
        .upload(&ws.id, vec![file("x.txt", "text/plain", "x")])
        .await;
    assert_eq!(status, StatusCode::OK);
    let ((status, rows), elapsed) = poll.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["method"], "chat_upload_receive");
    // Far from the 30 s wait: it was woken, not timed out.
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}
on_both_engines!(a_long_poll_wakes_when_a_row_arrives);

async fn a_cursor_never_skips_a_row_under_concurrent_writers(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    const WRITERS: usize = 8;
    const EACH: usize = 40;
    let poller = {
        let (client, base, token) = (
            app.client.clone(),
            app.url(&format!("/workspaces/{}/activity", ws.id)),
            ws.token.clone(),
        );
        tokio::spawn(async move {
            let mut since = 0i64;
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while seen.len() < WRITERS * EACH && Instant::now() < deadline {
                let resp = client
                    .get(format!("{base}?since_id={since}&limit=7&wait=5"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                let rows: Vec<Value> = resp.json().await.unwrap();
                for row in rows {
                    let id = row["id"].as_i64().unwrap();
                    assert!(id > since, "ids go forward");
                    since = id;
                    seen.push(row["data"]["text"].as_str().unwrap().to_owned());
                }
            }
            seen
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (client, url, token) = (
            app.client.clone(),
            app.url(&format!("/workspaces/{}/a2a", ws.id)),
            app.admin_token.clone(),
        );
        writers.push(tokio::spawn(async move {
            for i in 0..EACH {
                let body = json!({"params": {"message": {"parts": [{"kind": "text", "text": format!("{w}-{i}")}]}}});
                let resp = client.post(&url).bearer_auth(&token).json(&body).send().await.unwrap();
                assert_eq!(resp.status(), StatusCode::ACCEPTED);
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let seen = poller.await.unwrap();
    assert_eq!(seen.len(), WRITERS * EACH, "every row seen exactly once");
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), WRITERS * EACH, "no row twice");
    // Each writer's rows arrive in the order it wrote them.
    for w in 0..WRITERS {
        let mine: Vec<usize> = seen
            .iter()
            .filter_map(|t| {
                t.split_once('-')
                    .filter(|(a, _)| *a == w.to_string())
                    .map(|(_, i)| i.parse().unwrap())
            })
            .collect();
        assert_eq!(mine, (0..EACH).collect::<Vec<_>>(), "writer {w}");
    }
}
on_both_engines!(a_cursor_never_skips_a_row_under_concurrent_writers);

async fn the_event_stream_carries_rows_and_upload_states(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let resp = app
        .client
        .get(app.url(&format!("/workspaces/{}/events", ws.id)))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.bytes_stream();
    let (status, body) = app
        .upload(&ws.id, vec![file("a.txt", "text/plain", "hello")])
        .await;
    assert_eq!(status, StatusCode::OK);
    let fid = crate::helpers::file_id_of(&body, 0);
    assert_eq!(
        app.content(&ws.id, &fid, &ws.token).await.status(),
        StatusCode::OK
    );
    assert_eq!(app.ack(&ws.id, &fid, &ws.token).await.0, StatusCode::OK);
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !text.contains("\"state\":\"acked\"") {
        let chunk = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let events: Vec<(String, Value)> = text
        .split("\n\n")
        .filter_map(|block| {
            let kind = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((kind.to_owned(), serde_json::from_str(data).unwrap()))
        })
        .collect();
    let kinds: Vec<String> = events
        .iter()
        .map(|(k, v)| {
            if k == "upload" {
                format!("upload:{}", v["state"].as_str().unwrap())
            } else {
                format!("{k}:{}", v["method"].as_str().unwrap())
            }
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "activity:chat_upload_receive",
            "upload:staged",
            "upload:fetched",
            "upload:acked"
        ]
    );
    assert_eq!(events[1].1["file_id"], fid.as_str());
    let (status, _) = app
        .get(&format!("/workspaces/{}/events", ws.id), &ws.token)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
on_both_engines!(the_event_stream_carries_rows_and_upload_states);

#[tokio::test]
async fn shutdown_ends_long_polls_at_once_and_stops_cleanly() {
    let mut app = spawn_app(Engine::Sqlite).await.unwrap();
    let ws = app.create_poll_workspace("w").await;
    let poll = {
        let (client, url, token) = (
            app.client.clone(),
            app.url(&format!("/workspaces/{}/activity?wait=60", ws.id)),
            ws.token.clone(),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let resp = client.get(url).bearer_auth(token).send().await.unwrap();
            (TestApp::json(resp).await, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished());
    app.stop().await;
    let ((status, rows), elapsed) = poll.await.unwrap();
    assert_eq!((status, rows), (StatusCode::OK, json!([])));
    assert!(
        elapsed < Duration::from_secs(30),
        "the poll ended with the server, not its 60 s wait: {elapsed:?}"
    );
    assert!(
        app.client.get(app.url("/health")).send().await.is_err(),
        "the listener is closed"
    );
}
