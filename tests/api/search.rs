//! `GET /search` on both engines: the exact hits of each kind newest
//! first, what each kind of token may see (the operator every workspace,
//! a team token its subtree, a workspace token itself), `%` and `_` taken
//! literally, paging across kinds and ties, and the 400s.

use chrono::Duration as Span;
use molecule::domain::memory::Scope;
use molecule::domain::{now, MemoryId};
use molecule::store::NewMemory;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Engine, TestApp, Ws};
use crate::on_both_engines;

impl TestApp {
    /// `GET /search?…` with `token`.
    async fn search(&self, query: &str, token: &str) -> (StatusCode, Value) {
        self.get(&format!("/search?{query}"), token).await
    }

    /// The agent's message to the operator.
    async fn notify(&self, ws: &Ws, text: &str) {
        let (status, body) = self
            .post(
                &format!("/workspaces/{}/notify", ws.id),
                &ws.token,
                &json!({"message": text}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// A memory committed by `ws` itself; its id.
    async fn remember(&self, ws: &Ws, content: &str) -> String {
        let (status, body) = self
            .post(
                &format!("/workspaces/{}/memories", ws.id),
                &ws.token,
                &json!({"content": content, "scope": "LOCAL"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// A task `from` delegates to `to`; its id.
    async fn hand_over(&self, from: &Ws, to: &Ws, task: &str) -> String {
        let (status, body) = Self::json(
            self.client
                .post(self.url(&format!("/workspaces/{}/delegate", to.id)))
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

    /// The id of the newest activity row of `ws` (the message just sent).
    async fn newest_row(&self, ws: &Ws) -> String {
        let (status, rows) = self
            .get(
                &format!("/workspaces/{}/activity?limit=500", ws.id),
                &self.admin_token,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        rows.as_array().unwrap().last().unwrap()["id"].to_string()
    }
}

/// `(kind, id, workspace_name, snippet)` of each hit, in order.
fn hits(page: &Value) -> Vec<(String, String, String, String)> {
    page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["kind"].as_str().unwrap().to_owned(),
                h["id"].as_str().unwrap().to_owned(),
                h["workspace_name"].as_str().unwrap_or("").to_owned(),
                h["snippet"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn hit(kind: &str, id: &str, ws: &str, snippet: &str) -> (String, String, String, String) {
    (kind.into(), id.into(), ws.into(), snippet.into())
}

/// A team (lead above coder) and a stranger, each with a message, a
/// memory and a delegation about the blue build.
struct World {
    lead: Ws,
    coder: Ws,
    stranger: Ws,
    expected_all: Vec<(String, String, String, String)>,
}

async fn world(app: &TestApp) -> World {
    let lead = app.create_poll_workspace("lead").await;
    let coder = app.create_poll_workspace_under("coder", Some(&lead)).await;
    let stranger = app.create_poll_workspace("stranger").await;
    app.send_text(&coder.id, "please deploy the Blue Build")
        .await;
    let m1 = app.newest_row(&coder).await;
    app.send_text(&stranger.id, "a blue whale").await;
    let mem = app.remember(&coder, "the blue build listens on 8080").await;
    app.remember(&stranger, "blue sky thinking").await;
    let d1 = app.hand_over(&lead, &coder, "ship the blue build").await;
    app.notify(&coder, "Blue build\nshipped").await;
    let m2 = app.newest_row(&coder).await;
    let mem2 = app.remember(&stranger, "build it blue").await;
    app.send_text(&stranger.id, "the blue build of a stranger")
        .await;
    let m3 = app.newest_row(&stranger).await;
    let expected_all = vec![
        hit("message", &m3, "stranger", "the blue build of a stranger"),
        hit("memory", &mem2, "stranger", "build it blue"),
        hit("message", &m2, "coder", "Blue build shipped"),
        hit("delegation", &d1, "coder", "ship the blue build"),
        hit("memory", &mem, "coder", "the blue build listens on 8080"),
        hit("message", &m1, "coder", "please deploy the Blue Build"),
    ];
    World {
        lead,
        coder,
        stranger,
        expected_all,
    }
}

async fn each_kind_is_found_newest_first_with_its_fields(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let w = world(&app).await;
    let (status, page) = app.search("q=blue%20build", &app.admin_token).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(hits(&page), w.expected_all);
    assert_eq!(page["next_cursor"], Value::Null);
    let results = page["results"].as_array().unwrap();
    let times: Vec<&str> = results
        .iter()
        .map(|h| h["created_at"].as_str().unwrap())
        .collect();
    let parsed: Vec<chrono::DateTime<chrono::Utc>> =
        times.iter().map(|t| t.parse().unwrap()).collect();
    assert!(parsed.windows(2).all(|p| p[0] >= p[1]), "{times:?}");
    // The fields of each kind.
    let by_kind =
        |k: &'static str| -> Vec<&Value> { results.iter().filter(|h| h["kind"] == k).collect() };
    for h in by_kind("message") {
        let want = if h["snippet"] == "Blue build shipped" {
            "agent"
        } else {
            "canvas_user"
        };
        assert_eq!(
            (&h["source"], &h["scope"], &h["status"]),
            (&json!(want), &Value::Null, &Value::Null),
            "{h}"
        );
    }
    for h in by_kind("memory") {
        assert_eq!((&h["scope"], &h["status"]), (&json!("LOCAL"), &Value::Null));
    }
    let d = by_kind("delegation")[0];
    assert_eq!(d["workspace_id"], json!(w.coder.id));
    assert_eq!(d["caller_id"], json!(w.lead.id));
    assert_eq!(d["status"], json!("queued"));

    // One kind, and two.
    let (status, page) = app
        .search("q=blue%20build&kinds=delegations", &app.admin_token)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hits(&page), w.expected_all[3..4]);
    let (_, page) = app
        .search(
            "q=blue%20build&kinds=memories,delegations",
            &app.admin_token,
        )
        .await;
    let want: Vec<_> = w
        .expected_all
        .iter()
        .filter(|h| h.0 != "message")
        .cloned()
        .collect();
    assert_eq!(hits(&page), want);
}
on_both_engines!(each_kind_is_found_newest_first_with_its_fields);

async fn a_token_finds_only_what_its_scope_reads(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let w = world(&app).await;
    let team_only: Vec<_> = w
        .expected_all
        .iter()
        .filter(|h| h.2 != "stranger")
        .cloned()
        .collect();
    for role in ["viewer", "operator"] {
        let (status, minted) = app
            .post(
                "/org/tokens",
                &app.admin_token,
                &json!({"role": role, "team_root": w.lead.id}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{minted}");
        let team_token = minted["auth_token"].as_str().unwrap();
        let (status, page) = app.search("q=blue%20build", team_token).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(hits(&page), team_only, "a {role} token of the team");
    }
    // A team token below the lead: the coder's subtree is the coder.
    let (_, minted) = app
        .post(
            "/org/tokens",
            &app.admin_token,
            &json!({"role": "viewer", "team_root": w.coder.id}),
        )
        .await;
    let (_, page) = app
        .search("q=blue", minted["auth_token"].as_str().unwrap())
        .await;
    assert_eq!(hits(&page), team_only);
    // Workspace tokens: their own rows; the lead is the caller of the
    // delegation, the coder its callee.
    let (status, page) = app.search("q=blue%20build", &w.coder.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hits(&page), team_only);
    let (_, page) = app.search("q=blue", &w.lead.token).await;
    assert_eq!(hits(&page), w.expected_all[3..4]);
    let (_, page) = app.search("q=blue", &w.stranger.token).await;
    let mine: Vec<_> = hits(&page).into_iter().map(|h| h.2).collect();
    assert_eq!(mine, ["stranger"; 4], "{page}");
    assert!(hits(&page).iter().all(|h| !h.3.contains("Build shipped")));
}
on_both_engines!(a_token_finds_only_what_its_scope_reads);

async fn percent_and_underscore_match_only_themselves(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let other = app.create_poll_workspace("v").await;
    let mut ids = Vec::new();
    for text in [
        "100% done",
        "1000 done",
        "a_b",
        "axb",
        "back\\slash",
        "backslash",
    ] {
        app.send_text(&ws.id, text).await;
        ids.push(app.newest_row(&ws).await);
    }
    let d = app.hand_over(&ws, &other, "raise to 50%").await;
    app.hand_over(&ws, &other, "raise to 500").await;
    let cases = [
        ("100%25", vec![hit("message", &ids[0], "w", "100% done")]),
        ("a_b", vec![hit("message", &ids[2], "w", "a_b")]),
        ("k%5Cs", vec![hit("message", &ids[4], "w", "back\\slash")]),
        (
            "0%25",
            vec![
                hit("delegation", &d, "v", "raise to 50%"),
                hit("message", &ids[0], "w", "100% done"),
            ],
        ),
        // Only a wildcard: the rows that hold it, and no memory (no word).
        ("_", vec![hit("message", &ids[2], "w", "a_b")]),
    ];
    for (q, want) in cases {
        let (status, page) = app.search(&format!("q={q}"), &app.admin_token).await;
        assert_eq!(status, StatusCode::OK, "{q}: {page}");
        assert_eq!(hits(&page), want, "q={q}");
    }
}
on_both_engines!(percent_and_underscore_match_only_themselves);

async fn pages_cover_every_hit_once_across_kinds_and_ties(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    // Rows of two kinds at one instant, and older ones.
    let t = now() - Span::seconds(10);
    let mut want = Vec::new();
    for (i, at) in [t, t, t, t - Span::seconds(1)].into_iter().enumerate() {
        let row = molecule::domain::InboxRow {
            activity_type: "agent_message".into(),
            method: Some("notify".into()),
            data: Some(json!({"source": "agent", "text": format!("tied note {i}")})),
            ..Default::default()
        };
        let a = app.store.insert_activity(ws.wid(), &row, at).await.unwrap();
        want.push((at, 2, a.id.to_string(), format!("tied note {i}")));
        let m = NewMemory {
            id: MemoryId::new(),
            workspace_id: ws.wid(),
            scope: Scope::Local,
            namespace: "general".into(),
            content: format!("tied fact {i}"),
            embedding: None,
            embedding_model: None,
            created_at: at,
        };
        app.store.insert_memory(&m).await.unwrap();
        want.push((at, 1, m.id.to_string(), format!("tied fact {i}")));
    }
    // Newest first: time, then messages before memories, then id, all
    // descending (row ids compare as numbers).
    want.sort_by(|a, b| {
        let key = |x: &(chrono::DateTime<chrono::Utc>, i32, String, String)| {
            (x.0, x.1, x.2.parse::<i64>().ok(), x.2.clone())
        };
        key(b).cmp(&key(a))
    });
    let want: Vec<(String, String)> = want.into_iter().map(|w| (w.2, w.3)).collect();
    for limit in [1, 3, 8] {
        let mut got = Vec::new();
        let mut cursor = String::new();
        for _ in 0..20 {
            let (status, page) = app
                .search(
                    &format!("q=tied&limit={limit}&cursor={cursor}"),
                    &app.admin_token,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let n = page["results"].as_array().unwrap().len();
            got.extend(hits(&page).into_iter().map(|h| (h.1, h.3)));
            match page["next_cursor"].as_str() {
                Some(c) => {
                    assert_eq!(n, limit, "a page before the last is full");
                    cursor = c.to_owned();
                }
                None => break,
            }
        }
        assert_eq!(got, want, "limit {limit}");
    }
}
on_both_engines!(pages_cover_every_hit_once_across_kinds_and_ties);

async fn bad_input_is_a_400_with_a_sentence(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let too_long = format!("q={}", "x".repeat(201));
    let cases = [
        ("", "`q` is required: the text to search for"),
        ("q=%20%20", "`q` is required: the text to search for"),
        (too_long.as_str(), "`q` is 201 characters long; at most 200 are searched"),
        ("q=x&kinds=messages,files", "`kinds` takes messages, memories and delegations, comma-separated; `files` is none of them"),
        ("q=x&limit=0", "`limit` must be between 1 and 50"),
        ("q=x&limit=51", "`limit` must be between 1 and 50"),
        ("q=x&limit=ten", "`limit` must be between 1 and 50"),
        ("q=x&cursor=nope", "`cursor` is not one a previous page of this search gave"),
        ("q=x&cursor=1.memory.2", "`cursor` is not one a previous page of this search gave"),
    ];
    for (query, error) in cases {
        for token in [&app.admin_token, &ws.token] {
            let (status, body) = app.search(query, token).await;
            assert_eq!(
                (status, body),
                (StatusCode::BAD_REQUEST, json!({"error": error})),
                "{query}"
            );
        }
    }
    let (status, _) = app.search("q=x", "not-a-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A query of 200 characters is searched.
    let (status, page) = app
        .search(&format!("q={}", "é".repeat(200)), &app.admin_token)
        .await;
    assert_eq!(
        (status, page),
        (StatusCode::OK, json!({"results": [], "next_cursor": null}))
    );
}
on_both_engines!(bad_input_is_a_400_with_a_sentence);
