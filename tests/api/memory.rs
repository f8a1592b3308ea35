//! Agent memory: scoped facts with hybrid recall, and the key/value memory.
//! Embeddings come from a small OpenAI-compatible server in this file
//! (bag-of-words hashed into 64 dimensions: deterministic, and similar
//! texts get similar vectors), or from nothing listening (the embedder
//! down).

use std::collections::HashSet;

use molecule::domain::memory::Reader;
use molecule::store::MemoryFilter;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Engine, Options, TestApp, Ws};
use crate::on_both_engines;

const DIMS: usize = 64;

/// The test embedder's vector: each lowercased word hashed (FNV-1a) into
/// one of 64 buckets.
fn bag_of_words(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; DIMS];
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in word.to_lowercase().bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        v[(h % DIMS as u64) as usize] += 1.0;
    }
    v
}

/// Starts the test embedding server; returns its `/v1/embeddings` URL.
pub async fn spawn_embedder_on(listener: tokio::net::TcpListener) -> String {
    use axum::routing::post;
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/v1/embeddings",
        post(|axum::Json(body): axum::Json<Value>| async move {
            let inputs: Vec<String> = match &body["input"] {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) => a
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .collect(),
                _ => vec![],
            };
            let data: Vec<Value> = inputs
                .iter()
                .enumerate()
                .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": bag_of_words(t)}))
                .collect();
            axum::Json(json!({"object": "list", "model": body["model"], "data": data}))
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://127.0.0.1:{port}/v1/embeddings")
}

async fn spawn_embedder() -> String {
    spawn_embedder_on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).await
}

async fn app_with_embeddings(engine: Engine, url: String) -> Option<TestApp> {
    spawn_app_with(Options::new(engine).tweak(move |c| {
        c.embeddings = Some(molecule::config::EmbeddingsConfig {
            url,
            model: "bow-64".into(),
        })
    }))
    .await
}

/// The fixed corpus: (content, the query that must find it first).
const CORPUS: &[(&str, &str)] = &[
    (
        "The staging database is PostgreSQL 16 on host db-staging-2, port 5433.",
        "which port does the staging database use?",
    ),
    (
        "Deploys go out on Tuesdays and Thursdays after the 10:00 stand-up.",
        "when do deploys happen",
    ),
    (
        "The customer Acme prefers invoices in EUR, sent to billing@acme.example.",
        "acme invoices currency",
    ),
    (
        "Rotate the API keys of the payment provider every 90 days.",
        "payment provider keys rotation",
    ),
    (
        "Le café de l'équipe est au troisième étage, près de la salle Érable.",
        "où est le café",
    ),
    ("東京オフィスの会議室は 七階 にあります。", "七階"),
    (
        "Never run the migration script against production without a backup.",
        "migration production backup",
    ),
    (
        "The frontend build uses Vite; run npm run dev for the local server.",
        "frontend local server vite",
    ),
];

async fn commit(app: &TestApp, ws: &str, token: &str, body: Value) -> (StatusCode, Value) {
    app.post(&format!("/workspaces/{ws}/memories"), token, &body)
        .await
}

async fn commit_ok(app: &TestApp, ws: &Ws, content: &str, scope: &str) -> String {
    let (status, body) = commit(
        app,
        &ws.id,
        &ws.token,
        json!({"content": content, "scope": scope}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn recall(app: &TestApp, ws: &Ws, query: &str) -> (StatusCode, Value) {
    let q: String = url::form_urlencoded::byte_serialize(query.as_bytes()).collect();
    app.get(&format!("/workspaces/{}/memories?q={q}", ws.id), &ws.token)
        .await
}

/// Every memory in the store, as the operator sees them.
async fn all_memories(app: &TestApp) -> Vec<molecule::store::Memory> {
    app.store
        .list_memories(
            &MemoryFilter {
                reader: Reader::Operator { owner: None },
                scope: None,
                namespace: None,
            },
            None,
            1000,
        )
        .await
        .unwrap()
}

async fn delete(app: &TestApp, path: &str, token: &str) -> (StatusCode, Value) {
    TestApp::json(
        app.client
            .delete(app.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// Commits the corpus, checks every query finds its memory first, and
/// returns the ids in corpus order.
/// Scores: full-text alone puts the right memory at rank 1 of one list,
/// exactly 1/(60+1); hybrid fuses both lists, so more than that (2/61 when
/// both rank it first).
async fn corpus_recall(app: &TestApp, ws: &Ws, hybrid: bool) -> Vec<String> {
    let mut ids = Vec::new();
    for (content, _) in CORPUS {
        ids.push(commit_ok(app, ws, content, "LOCAL").await);
    }
    for (i, (_, query)) in CORPUS.iter().enumerate() {
        let (status, body) = recall(app, ws, query).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let hits = body.as_array().unwrap();
        assert!(!hits.is_empty(), "query {query:?} found nothing");
        assert_eq!(hits[0]["id"], ids[i], "query {query:?}: {body:#}");
        assert_eq!(hits[0]["content"], CORPUS[i].0);
        let score = hits[0]["score"].as_f64().unwrap();
        if hybrid {
            assert!(
                score > 1.0 / 61.0 + 1e-9 && score <= 2.0 / 61.0 + 1e-12,
                "query {query:?}: score {score} is not fused from both rankings"
            );
        } else {
            assert!(
                (score - 1.0 / 61.0).abs() < 1e-12,
                "query {query:?}: score {score}, want 1/61"
            );
        }
        // Best first.
        let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    }
    ids
}

async fn fixed_corpus_recall_without_embeddings(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("rememberer").await;
    let ids = corpus_recall(&app, &ws, false).await;
    // Without q: every readable memory, newest first, no score.
    let (status, body) = app
        .get(&format!("/workspaces/{}/memories", ws.id), &ws.token)
        .await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    let mut newest_first: Vec<&str> = ids.iter().map(String::as_str).collect();
    newest_first.reverse();
    assert_eq!(listed, newest_first);
    assert!(body[0]["score"].is_null());
    assert_eq!(body[0]["embedded"], false);
    assert_eq!(body[0]["workspace_id"], ws.id);
    assert_eq!(body[0]["namespace"], "general");
    // Rows: exactly the corpus, none with a vector.
    let rows = all_memories(&app).await;
    assert_eq!(rows.len(), CORPUS.len());
    assert!(rows.iter().all(|m| !m.embedded));
}
on_both_engines!(fixed_corpus_recall_without_embeddings);

async fn fixed_corpus_recall_with_embeddings(engine: Engine) {
    let url = spawn_embedder().await;
    let Some(app) = app_with_embeddings(engine, url).await else {
        return;
    };
    let ws = app.create_poll_workspace("rememberer").await;
    corpus_recall(&app, &ws, true).await;
    let rows = all_memories(&app).await;
    assert_eq!(rows.len(), CORPUS.len());
    assert!(
        rows.iter().all(|m| m.embedded),
        "every commit stored a vector"
    );
    assert_eq!(
        app.metric("molecule_memory_embedding_failures_total").await,
        0.0
    );
    // A query with no word in common with any memory's index terms but
    // punctuation only: full-text has nothing, recall answers 200 [].
    let (status, body) = recall(&app, &ws, "?!…").await;
    assert_eq!((status, body), (StatusCode::OK, json!([])));
}
on_both_engines!(fixed_corpus_recall_with_embeddings);

/// The newest-first listing pages by its `before` cursor, without gaps or
/// repeats, and says its total in `X-Total-Count` (what this reader may
/// read, not every row), so a page can say "2 of 5".
async fn listings_page_by_cursor_with_their_total(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("rememberer").await;
    let stranger = app.create_poll_workspace("stranger").await;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(commit_ok(&app, &ws, &format!("note number {i}"), "LOCAL").await);
    }
    // Not readable by ws: neither listed nor counted.
    commit_ok(&app, &stranger, "someone else's note", "LOCAL").await;
    made.reverse();
    let page = |query: String, token: String| {
        let (app, url) = (&app, format!("/workspaces/{}/memories?{query}", ws.id));
        async move {
            let resp = app
                .client
                .get(app.url(&url))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let total = resp
                .headers()
                .get("x-total-count")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: Value = resp.json().await.unwrap();
            (status, total, body)
        }
    };
    let ids = |body: &Value| -> Vec<String> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, total, first) = page("limit=2".into(), ws.token.clone()).await;
    assert_eq!((status, total.as_deref()), (StatusCode::OK, Some("5")));
    assert_eq!(ids(&first), made[..2]);
    let (_, total, second) = page(format!("limit=2&before={}", made[1]), ws.token.clone()).await;
    assert_eq!(total.as_deref(), Some("5"));
    assert_eq!(ids(&second), made[2..4]);
    let (_, _, last) = page(format!("limit=2&before={}", made[3]), ws.token.clone()).await;
    assert_eq!(ids(&last), made[4..]);
    // A ranked recall has no total and no cursor.
    let (status, total, _) = page("q=note".into(), ws.token.clone()).await;
    assert_eq!((status, total), (StatusCode::OK, None));
    let (status, _, body) = page(format!("q=note&before={}", made[0]), ws.token.clone()).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "`before` pages the newest-first listing; it cannot be combined with `q`"})
        )
    );
    let nobody = uuid::Uuid::new_v4();
    let (status, _, body) = page(format!("before={nobody}"), ws.token.clone()).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": format!("`before` names no memory: `{nobody}`")})
        )
    );
    // The operator's listing counts every memory.
    let resp = app
        .client
        .get(app.url("/admin/memories?limit=1"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-total-count"], "6");
}
on_both_engines!(listings_page_by_cursor_with_their_total);

async fn embedder_down_changes_only_the_ranking(engine: Engine) {
    // A port nothing listens on (yet): connection refused.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{addr}/v1/embeddings");
    let Some(app) = app_with_embeddings(engine, url).await else {
        return;
    };
    let ws = app.create_poll_workspace("rememberer").await;
    // Commits still succeed, the recall falls back to full-text rank.
    corpus_recall(&app, &ws, false).await;
    let rows = all_memories(&app).await;
    assert_eq!(rows.len(), CORPUS.len());
    assert!(rows.iter().all(|m| !m.embedded));
    let failures = app.metric("molecule_memory_embedding_failures_total").await;
    // One per commit and one per recall.
    assert_eq!(failures, (2 * CORPUS.len()) as f64);
    // The embedder comes up: the sweeper back-fills every vector.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    spawn_embedder_on(listener).await;
    let out = app
        .sweeper
        .sweep_once(molecule::domain::now())
        .await
        .unwrap();
    assert_eq!(
        out.count("memory_embeddings", "backfilled"),
        CORPUS.len() as u64
    );
    assert!(all_memories(&app).await.iter().all(|m| m.embedded));
    assert_eq!(
        app.metric("molecule_memory_embeddings_backfilled_total")
            .await,
        CORPUS.len() as f64
    );
    // And recall is hybrid again.
    let (status, body) = recall(&app, &ws, CORPUS[0].1).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body[0]["content"], CORPUS[0].0);
    assert!(
        body[0]["score"].as_f64().unwrap() > 1.0 / 61.0 + 1e-9,
        "{body}"
    );
    let out = app
        .sweeper
        .sweep_once(molecule::domain::now())
        .await
        .unwrap();
    assert_eq!(out.count("memory_embeddings", "backfilled"), 0);
}
on_both_engines!(embedder_down_changes_only_the_ranking);

async fn hostile_queries_never_fail(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("rememberer").await;
    let cafe = commit_ok(&app, &ws, "Réunion au café « Chez Zoë » à 9h", "LOCAL").await;
    let tokyo = commit_ok(&app, &ws, "会議は 東京 で行います", "LOCAL").await;
    let quoted = commit_ok(
        &app,
        &ws,
        "the \"quoted\" AND (grouped) NEAR thing*",
        "LOCAL",
    )
    .await;
    let queries = [
        "\"",
        "\"\"",
        "'",
        "(",
        ")",
        "*",
        "^",
        ":",
        "-",
        "+",
        "AND",
        "OR",
        "NOT",
        "NEAR",
        "NEAR(a b)",
        "a AND",
        "OR OR",
        "col:val",
        "\"unbalanced",
        "foo*",
        "-x",
        "a & b | !c",
        "<->",
        "\\",
        "%",
        "_",
        ";",
        "--",
        "/* */",
        "'; DROP TABLE memories; --",
        "🙂",
        "\u{200b}",
        "ǅ",
        "ﬁ",
        "İstanbul",
        "\u{fffd}",
        "   ",
        "…",
    ];
    for q in queries {
        let (status, body) = recall(&app, &ws, q).await;
        assert_eq!(status, StatusCode::OK, "query {q:?}: {body}");
        assert!(body.is_array(), "query {q:?}: {body}");
    }
    for (q, want) in [
        ("café", &cafe),
        ("Zoë?!", &cafe),
        ("«café»", &cafe),
        ("東京", &tokyo),
        ("\"quoted\" AND (grouped)", &quoted),
        ("thing*", &quoted),
        ("NEAR", &quoted),
    ] {
        let (status, body) = recall(&app, &ws, q).await;
        assert_eq!(status, StatusCode::OK, "query {q:?}: {body}");
        assert_eq!(body[0]["id"], *want, "query {q:?}: {body}");
    }
    // The memories are untouched.
    assert_eq!(all_memories(&app).await.len(), 3);
}
on_both_engines!(hostile_queries_never_fail);

async fn bad_commits_change_nothing(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("rememberer").await;
    let big = "x".repeat(64 * 1024 + 1);
    let cases = [
        (
            json!({"content": "", "scope": "LOCAL"}),
            StatusCode::BAD_REQUEST,
            "content must not be empty",
        ),
        (
            json!({"content": "  \n", "scope": "LOCAL"}),
            StatusCode::BAD_REQUEST,
            "content must not be empty",
        ),
        (
            json!({"content": big, "scope": "LOCAL"}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "content is 65537 bytes; the limit is 65536 (64 KiB)",
        ),
        (
            json!({"content": "x", "scope": "local"}),
            StatusCode::BAD_REQUEST,
            "`local` is not a scope: use LOCAL, TEAM or GLOBAL",
        ),
        (
            json!({"content": "x", "scope": "TEAM", "namespace": ""}),
            StatusCode::BAD_REQUEST,
            "namespace must be 1 to 100 characters without control characters",
        ),
        (
            json!({"content": "a\u{0}b", "scope": "LOCAL"}),
            StatusCode::BAD_REQUEST,
            // The JSON extractor's NUL rule answers before the domain's.
            "`content` must not contain NUL characters (\\u0000)",
        ),
    ];
    for (body, status, error) in cases {
        let (got, answer) = commit(&app, &ws.id, &ws.token, body).await;
        assert_eq!((got, answer), (status, json!({"error": error})));
    }
    let (status, body) = commit(&app, &ws.id, &ws.token, json!({"content": "x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Exactly 64 KiB is fine.
    let (status, body) = commit(
        &app,
        &ws.id,
        &ws.token,
        json!({"content": "y".repeat(64 * 1024), "scope": "LOCAL", "namespace": "big"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body.as_object().unwrap().len(), 4, "{body}");
    assert_eq!(
        (&body["scope"], &body["namespace"]),
        (&json!("LOCAL"), &json!("big"))
    );
    assert!(body["created_at"].is_string());
    let rows = all_memories(&app).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id.to_string(), body["id"].as_str().unwrap());
    // Bad recall parameters.
    for query in ["scope=team", "limit=0", "limit=101", "limit=x"] {
        let (status, body) = app
            .get(
                &format!("/workspaces/{}/memories?{query}", ws.id),
                &ws.token,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
}
on_both_engines!(bad_commits_change_nothing);

/// Ids a workspace's recall returns, unfiltered and with a query that
/// matches every memory of the table test.
async fn readable_ids(app: &TestApp, ws: &Ws) -> HashSet<String> {
    let mut seen = HashSet::new();
    for path in [
        format!("/workspaces/{}/memories?limit=100", ws.id),
        format!("/workspaces/{}/memories?limit=100&q=fact", ws.id),
    ] {
        let (status, body) = app.get(&path, &ws.token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let ids: HashSet<String> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        if seen.is_empty() {
            seen = ids;
        } else {
            assert_eq!(
                seen, ids,
                "the query must not widen or narrow the readable set"
            );
        }
    }
    seen
}

async fn scope_rules(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let me = app.create_poll_workspace("me").await;
    let other = app.create_poll_workspace("other").await;
    let mut ids = std::collections::HashMap::new();
    for scope in ["LOCAL", "TEAM", "GLOBAL"] {
        ids.insert(
            scope,
            commit_ok(&app, &me, &format!("a {scope} fact of me"), scope).await,
        );
    }
    let mine: HashSet<String> = ids.values().cloned().collect();
    assert_eq!(readable_ids(&app, &me).await, mine);
    // Another root workspace is my sibling under the communication rule
    // (root workspaces are siblings of each other): TEAM and GLOBAL, never
    // LOCAL. (`scope_table` covers parents, children and cousins.)
    assert_eq!(
        readable_ids(&app, &other).await,
        HashSet::from([ids["TEAM"].clone(), ids["GLOBAL"].clone()])
    );
    // The operator reading as me sees what I see.
    let (status, body) = app
        .get(&format!("/workspaces/{}/memories", me.id), &app.admin_token)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_array().unwrap().len(), 3);
    // The operator's own view: everything, or one owner's.
    let (_, body) = app.get("/admin/memories", &app.admin_token).await;
    assert_eq!(body.as_array().unwrap().len(), 3);
    let (_, body) = app
        .get(
            &format!("/admin/memories?workspace_id={}&q=fact", other.id),
            &app.admin_token,
        )
        .await;
    assert_eq!(body, json!([]));
    let (status, _) = app.get("/admin/memories", &me.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Writes: a workspace writes only its own memories.
    let (status, _) = commit(
        &app,
        &me.id,
        &other.token,
        json!({"content": "x", "scope": "LOCAL"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = commit(
        &app,
        &me.id,
        &app.admin_token,
        json!({"content": "op", "scope": "GLOBAL"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // Deletes: only the owner (or the operator); another workspace's is 404.
    let (status, _) = delete(
        &app,
        &format!("/workspaces/{}/memories/{}", other.id, ids["GLOBAL"]),
        &other.token,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = delete(
        &app,
        &format!("/workspaces/{}/memories/{}", me.id, ids["GLOBAL"]),
        &other.token,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = delete(
        &app,
        &format!("/workspaces/{}/memories/{}", me.id, ids["GLOBAL"]),
        &me.token,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = delete(
        &app,
        &format!("/admin/memories/{}", ids["LOCAL"]),
        &app.admin_token,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = delete(
        &app,
        &format!("/admin/memories/{}", ids["LOCAL"]),
        &app.admin_token,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let left: HashSet<String> = all_memories(&app)
        .await
        .iter()
        .map(|m| m.content.clone())
        .collect();
    assert_eq!(
        left,
        HashSet::from(["a TEAM fact of me".to_owned(), "op".to_owned()])
    );
}
on_both_engines!(scope_rules);

async fn kv(app: &TestApp, ws: &Ws, body: Value) -> (StatusCode, Value) {
    app.post(&format!("/workspaces/{}/memory", ws.id), &ws.token, &body)
        .await
}

async fn kv_versions_conflicts_and_ttl(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("kv").await;
    let (status, body) = kv(&app, &ws, json!({"key": "plan", "value": {"step": 1}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["key"], &body["value"], &body["version"]),
        (&json!("plan"), &json!({"step": 1}), &json!(1))
    );
    assert!(body["expires_at"].is_null());
    let (_, body) = kv(&app, &ws, json!({"key": "plan", "value": [1, "two", null]})).await;
    assert_eq!(body["version"], 2);
    // A stale version: 409 with the current one, nothing changed.
    let (status, body) = kv(
        &app,
        &ws,
        json!({"key": "plan", "value": "stale", "if_version": 1}),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::CONFLICT,
            json!({"error": "`if_version` 1 does not match the key's current version 2", "version": 2})
        )
    );
    let (status, body) = kv(
        &app,
        &ws,
        json!({"key": "plan", "value": "new", "if_version": 0}),
    )
    .await;
    assert_eq!(
        (status, &body["version"]),
        (StatusCode::CONFLICT, &json!(2))
    );
    let (status, body) = app
        .get(&format!("/workspaces/{}/memory/plan", ws.id), &ws.token)
        .await;
    assert_eq!(
        (status, &body["value"], &body["version"]),
        (StatusCode::OK, &json!([1, "two", null]), &json!(2))
    );
    let (status, body) = kv(
        &app,
        &ws,
        json!({"key": "plan", "value": "fresh", "if_version": 2}),
    )
    .await;
    assert_eq!(
        (status, &body["version"]),
        (StatusCode::OK, &json!(3)),
        "{body}"
    );
    // Create-only on an absent key.
    let (status, body) = kv(
        &app,
        &ws,
        json!({"key": "new", "value": true, "if_version": 0}),
    )
    .await;
    assert_eq!((status, &body["version"]), (StatusCode::OK, &json!(1)));
    let (status, body) = kv(
        &app,
        &ws,
        json!({"key": "absent", "value": 1, "if_version": 4}),
    )
    .await;
    assert_eq!(
        (status, &body["version"]),
        (StatusCode::CONFLICT, &json!(0))
    );
    // TTL: gone from reads as soon as it expires, then swept.
    let (status, body) = kv(&app, &ws, json!({"key": "brief", "value": "x", "ttl_s": 1})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["expires_at"].is_string());
    let (_, list) = app
        .get(&format!("/workspaces/{}/memory", ws.id), &ws.token)
        .await;
    let keys: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["brief", "new", "plan"]);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, _) = app
        .get(&format!("/workspaces/{}/memory/brief", ws.id), &ws.token)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = app
        .get(&format!("/workspaces/{}/memory", ws.id), &ws.token)
        .await;
    let keys: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["new", "plan"]);
    let out = app
        .sweeper
        .sweep_once(molecule::domain::now())
        .await
        .unwrap();
    assert_eq!(out.count("kv", "expired"), 1);
    let out = app
        .sweeper
        .sweep_once(molecule::domain::now())
        .await
        .unwrap();
    assert_eq!(out.count("kv", "expired"), 0);
    // Delete; then it is a 404; another workspace's token is refused.
    let other = app.create_poll_workspace("other").await;
    let (status, _) = app
        .get(&format!("/workspaces/{}/memory/plan", ws.id), &other.token)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = delete(
        &app,
        &format!("/workspaces/{}/memory/plan", ws.id),
        &ws.token,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = delete(
        &app,
        &format!("/workspaces/{}/memory/plan", ws.id),
        &ws.token,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let rows = app
        .store
        .kv_list(ws.wid(), molecule::domain::now())
        .await
        .unwrap();
    assert_eq!(
        rows.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        ["new"]
    );
    // Bad input.
    for (body, status) in [
        (json!({"key": "", "value": 1}), StatusCode::BAD_REQUEST),
        (
            json!({"key": "k", "value": 1, "ttl_s": 0}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"key": "k", "value": 1, "if_version": -1}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"key": "k", "value": "v".repeat(64 * 1024)}),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (json!({"value": 1}), StatusCode::BAD_REQUEST),
    ] {
        let (got, answer) = kv(&app, &ws, body.clone()).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer["error"].is_string());
    }
    assert_eq!(
        app.store
            .kv_list(ws.wid(), molecule::domain::now())
            .await
            .unwrap()
            .len(),
        1
    );
}
on_both_engines!(kv_versions_conflicts_and_ttl);

async fn kv_racing_writers(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("kv").await;
    let (_, body) = kv(&app, &ws, json!({"key": "counter", "value": 0})).await;
    assert_eq!(body["version"], 1);
    // 16 writers race to write over version 1; exactly one wins, every
    // other gets 409 naming version 2. On PostgreSQL a transaction of the
    // test holds the row locked until every writer is in flight, so they
    // truly overlap (a check-then-write store lets them all through).
    let holder = if engine == Engine::Postgres {
        let pool = sqlx::PgPool::connect(&app.config.database_url)
            .await
            .unwrap();
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM memory_kv WHERE key = 'counter' FOR UPDATE")
            .execute(&mut *tx)
            .await
            .unwrap();
        Some(tx)
    } else {
        None
    };
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let app = app.clone();
        let ws = ws.clone();
        tasks.push(tokio::spawn(async move {
            kv(
                &app,
                &ws,
                json!({"key": "counter", "value": i, "if_version": 1}),
            )
            .await
        }));
    }
    if let Some(tx) = holder {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(
            tasks.iter().all(|t| !t.is_finished()),
            "the writers wait for the row"
        );
        tx.rollback().await.unwrap();
    }
    let mut won = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            StatusCode::OK => won.push(body),
            StatusCode::CONFLICT => assert_eq!(body["version"], 2, "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    assert_eq!(won[0]["version"], 2);
    let (_, now) = app
        .get(&format!("/workspaces/{}/memory/counter", ws.id), &ws.token)
        .await;
    assert_eq!(
        (&now["version"], &now["value"]),
        (&json!(2), &won[0]["value"])
    );
    // Unconditional racing writers all succeed, each with its own version.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let app = app.clone();
        let ws = ws.clone();
        tasks.push(tokio::spawn(async move {
            kv(&app, &ws, json!({"key": "counter", "value": i})).await
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        versions.push(body["version"].as_i64().unwrap());
    }
    versions.sort();
    assert_eq!(versions, (3..19).collect::<Vec<i64>>());
}
on_both_engines!(kv_racing_writers);

/// Runs the real binary with a clean environment plus `env`; returns
/// (success, stdout, stderr).
async fn cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_molecule"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_with_workspace_credentials_and_operator_token() {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    let ws = app.create_poll_workspace("agent").await;
    let token_file = app.data_dir.path().join("ws-token");
    std::fs::write(&token_file, format!("{}\n", ws.token)).unwrap();
    // The workspace's own credentials, named as `molecule connect` names them.
    let as_ws = [
        ("MOLECULE_SERVER", app.address.as_str()),
        ("MOLECULE_WORKSPACE_ID", ws.id.as_str()),
        ("MOLECULE_TOKEN", ws.token.as_str()),
    ];
    let (ok, out, err) = cli(
        &[
            "memory",
            "commit",
            "The build cache lives on the NVMe disk",
            "--scope",
            "TEAM",
            "--json",
        ],
        &as_ws,
    )
    .await;
    assert!(ok, "{err}");
    let committed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(committed["scope"], "TEAM");
    let mid = committed["id"].as_str().unwrap().to_owned();
    let (ok, out, err) = cli(
        &["memory", "search", "where is the build cache?", "--json"],
        &as_ws,
    )
    .await;
    assert!(ok, "{err}");
    let hits: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(hits[0]["id"], mid.as_str());
    // --token-file instead of the variable.
    let file_auth = [
        ("MOLECULE_SERVER", app.address.as_str()),
        ("MOLECULE_WORKSPACE_ID", ws.id.as_str()),
    ];
    let tf = token_file.to_str().unwrap();
    let (ok, out, err) = cli(
        &["kv", "set", "plan", "{\"step\": 2}", "--token-file", tf],
        &file_auth,
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "plan is now at version 1");
    let (ok, out, err) = cli(
        &[
            "kv",
            "set",
            "plan",
            "three",
            "--if-version",
            "7",
            "--token-file",
            tf,
        ],
        &file_auth,
    )
    .await;
    assert!(!ok);
    assert!(out.is_empty());
    assert!(
        err.contains("does not match the key's current version 1 (409 Conflict)"),
        "{err}"
    );
    let (ok, out, err) = cli(&["kv", "get", "plan", "--token-file", tf], &file_auth).await;
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"step": 2})
    );
    // The operator's token: its own view over every workspace, and writes
    // to any workspace.
    let as_op = [
        ("MOLECULE_SERVER", app.address.as_str()),
        ("MOLECULE_ADMIN_TOKEN", app.admin_token.as_str()),
    ];
    let (ok, out, err) = cli(&["memory", "search", "--json"], &as_op).await;
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()[0]["id"],
        mid.as_str()
    );
    let (ok, _, err) = cli(&["kv", "rm", "plan", "--workspace", &ws.id], &as_op).await;
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&["memory", "rm", &mid], &as_op).await;
    assert!(ok, "{err}");
    assert!(all_memories(&app).await.is_empty());
    assert!(app
        .store
        .kv_list(ws.wid(), molecule::domain::now())
        .await
        .unwrap()
        .is_empty());
    // Another workspace's token is refused with a sentence.
    let other = app.create_poll_workspace("other").await;
    let wrong = [
        ("MOLECULE_SERVER", app.address.as_str()),
        ("MOLECULE_WORKSPACE_ID", ws.id.as_str()),
        ("MOLECULE_TOKEN", other.token.as_str()),
    ];
    let (ok, _, err) = cli(&["kv", "get"], &wrong).await;
    assert!(!ok);
    assert!(err.contains("the token was refused"), "{err}");
}

async fn create_child(app: &TestApp, name: &str, parent: Option<&Ws>) -> Ws {
    let mut body = json!({"name": name, "delivery_mode": "poll"});
    if let Some(p) = parent {
        body["parent_id"] = json!(p.id);
    }
    let (status, body) = app.create_workspace(body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    Ws {
        id: body["id"].as_str().unwrap().to_owned(),
        token: body["auth_token"].as_str().unwrap().to_owned(),
    }
}

/// The scope table: LOCAL/TEAM/GLOBAL memories of `me` × self, parent,
/// child, sibling, cousin, a root of another tree and the operator, for
/// reads (with and without a query) and writes.
///
/// ```text
/// root ── me ── child        other_root
///      └─ sib ── cousin
/// ```
async fn scope_table(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let root = create_child(&app, "root", None).await;
    let me = create_child(&app, "me", Some(&root)).await;
    let child = create_child(&app, "child", Some(&me)).await;
    let sib = create_child(&app, "sib", Some(&root)).await;
    let cousin = create_child(&app, "cousin", Some(&sib)).await;
    let other_root = create_child(&app, "other-root", None).await;
    let local = commit_ok(&app, &me, "a LOCAL fact of me", "LOCAL").await;
    let team = commit_ok(&app, &me, "a TEAM fact of me", "TEAM").await;
    // `me` is not a root: GLOBAL is refused; the operator writes it for me.
    let (status, body) = commit(
        &app,
        &me.id,
        &me.token,
        json!({"content": "x", "scope": "GLOBAL"}),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::FORBIDDEN,
            json!({"error": "only a root workspace or the operator may write GLOBAL memories"})
        )
    );
    let (status, body) = commit(
        &app,
        &me.id,
        &app.admin_token,
        json!({"content": "a GLOBAL fact of me", "scope": "GLOBAL"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let global = body["id"].as_str().unwrap().to_owned();
    let set = |ids: &[&String]| -> HashSet<String> { ids.iter().map(|s| (*s).clone()).collect() };
    let reads = [
        ("self", &me, set(&[&local, &team, &global])),
        ("parent", &root, set(&[&team, &global])),
        ("child", &child, set(&[&team, &global])),
        ("sibling", &sib, set(&[&team, &global])),
        ("cousin", &cousin, set(&[&global])),
        ("another tree's root", &other_root, set(&[&global])),
    ];
    for (who, ws, want) in &reads {
        assert_eq!(&readable_ids(&app, ws).await, want, "reads of {who}");
        // Narrowed by scope, still only what is readable.
        for scope in ["LOCAL", "TEAM", "GLOBAL"] {
            let (status, body) = app
                .get(
                    &format!("/workspaces/{}/memories?scope={scope}&q=fact", ws.id),
                    &ws.token,
                )
                .await;
            assert_eq!(status, StatusCode::OK);
            for m in body.as_array().unwrap() {
                assert_eq!(m["scope"], scope, "{who}");
                assert!(want.contains(m["id"].as_str().unwrap()), "{who} read {m}");
            }
        }
    }
    // The operator: as `me` it reads what `me` reads; its own view, all.
    let (_, body) = app
        .get(
            &format!("/workspaces/{}/memories?q=fact", me.id),
            &app.admin_token,
        )
        .await;
    assert_eq!(body.as_array().unwrap().len(), 3);
    let (_, body) = app
        .get(
            &format!("/admin/memories?workspace_id={}", me.id),
            &app.admin_token,
        )
        .await;
    assert_eq!(body.as_array().unwrap().len(), 3);
    // Writes: each caller on its own workspace, and on `me`'s.
    let writes = [
        ("self", &me, StatusCode::FORBIDDEN),
        ("parent (a root)", &root, StatusCode::CREATED),
        ("child", &child, StatusCode::FORBIDDEN),
        ("sibling", &sib, StatusCode::FORBIDDEN),
        ("cousin", &cousin, StatusCode::FORBIDDEN),
        ("another tree's root", &other_root, StatusCode::CREATED),
    ];
    for (who, ws, global_status) in writes {
        for (scope, want) in [
            ("LOCAL", StatusCode::CREATED),
            ("TEAM", StatusCode::CREATED),
            ("GLOBAL", global_status),
        ] {
            let (status, body) = commit(
                &app,
                &ws.id,
                &ws.token,
                json!({"content": "w", "scope": scope}),
            )
            .await;
            assert_eq!(status, want, "{who} writing {scope}: {body}");
        }
        if ws.id != me.id {
            let (status, _) = commit(
                &app,
                &me.id,
                &ws.token,
                json!({"content": "w", "scope": "LOCAL"}),
            )
            .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{who} writing as me");
        }
    }
    // Rows: the three of `me`, and per caller LOCAL + TEAM (+ GLOBAL for roots).
    assert_eq!(all_memories(&app).await.len(), 3 + 6 * 2 + 2);
}
on_both_engines!(scope_table);

/// Recall keeps decoded vectors in a process-wide cache. A vector cached
/// by one reader's recall is never scored for a reader who may not read
/// it, and a deleted memory is never returned although its vector is
/// still cached.
async fn cached_vectors_keep_the_readable_rule(engine: Engine) {
    let url = spawn_embedder().await;
    let Some(app) = app_with_embeddings(engine, url).await else {
        return;
    };
    let owner = app.create_poll_workspace("owner").await;
    let stranger = app.create_poll_workspace("stranger").await;
    let secret = commit_ok(&app, &owner, "the vault code is 4411 blue", "LOCAL").await;
    let public = commit_ok(&app, &owner, "the vault door is in the basement", "GLOBAL").await;
    // The operator's recall decodes and caches both vectors.
    let (status, body) = app
        .get("/admin/memories?q=vault%20code", &app.admin_token)
        .await;
    assert_eq!(status, StatusCode::OK);
    let ids = |body: &Value| -> Vec<String> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&body), [secret.as_str(), public.as_str()]);
    // The stranger sees only the GLOBAL one, ranked by both halves.
    let (status, body) = recall(&app, &stranger, "vault code").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&body), [public.as_str()]);
    // Deleted: the owner's recall no longer finds it, the row is gone.
    let (status, _) = delete(
        &app,
        &format!("/workspaces/{}/memories/{secret}", owner.id),
        &owner.token,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = recall(&app, &owner, "vault code").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&body), [public.as_str()]);
    let rows = all_memories(&app).await;
    assert_eq!(
        rows.iter().map(|m| m.id.to_string()).collect::<Vec<_>>(),
        [public]
    );
}
on_both_engines!(cached_vectors_keep_the_readable_rule);

/// Both halves of recall stop early (full text: FTS5 hands matches over
/// best first and the statement stops at its limit; vectors: the cached,
/// quantized scan keeps the best). The readable rule stays inside both:
/// 120 memories the reader may not read, each a better match for both
/// halves than the one it may read, never push that one out, however many
/// more of them there are than a half's candidates.
async fn early_stops_keep_the_readable_rule(engine: Engine) {
    let url = spawn_embedder().await;
    let Some(app) = app_with_embeddings(engine, url).await else {
        return;
    };
    let owner = app.create_poll_workspace("owner").await;
    let stranger = app.create_poll_workspace("stranger").await;
    let owner_id: molecule::domain::WorkspaceId = owner.id.parse().unwrap();
    let hidden = 120;
    for i in 0..hidden {
        let content = format!("vault code vault code {i}");
        app.store
            .insert_memory(&molecule::store::NewMemory {
                id: molecule::domain::MemoryId::new(),
                workspace_id: owner_id,
                scope: molecule::domain::memory::Scope::Local,
                namespace: "general".into(),
                embedding: Some(molecule::domain::memory::encode_vector(&bag_of_words(
                    &content,
                ))),
                embedding_model: Some("bow-64".into()),
                content,
                created_at: chrono::Utc::now(),
            })
            .await
            .unwrap();
    }
    let public = commit_ok(
        &app,
        &owner,
        "the vault is in the basement, behind the boiler room and the old archive",
        "GLOBAL",
    )
    .await;
    let (status, body) = recall(&app, &stranger, "vault code").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [public.as_str()]);
    // The owner reads its own: the best matches, the GLOBAL one below.
    let (status, body) = recall(&app, &owner, "vault code").await;
    assert_eq!(status, StatusCode::OK);
    let hits = body.as_array().unwrap();
    assert_eq!(hits.len(), 20, "the default limit");
    assert!(hits.iter().all(|h| h["content"]
        .as_str()
        .unwrap()
        .starts_with("vault code vault code ")));
    // Nothing changed: the 120 and the GLOBAL one.
    let rows = all_memories(&app).await;
    assert_eq!(rows.len(), hidden + 1);
    assert_eq!(
        rows.iter().filter(|m| m.scope.as_str() == "GLOBAL").count(),
        1
    );
}
on_both_engines!(early_stops_keep_the_readable_rule);
