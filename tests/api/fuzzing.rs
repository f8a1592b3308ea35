//! Property tests over the JSON bodies of the newer routes (schedules,
//! approvals, A2A `message/send`, MCP `tools/call`, usage and traces
//! ingest, tokens, org import), on both engines, with a bounded number of
//! cases per run: whatever the body, never a 5xx; a refused body changes
//! nothing that the route's reads show; a valid body round-trips. And the
//! cargo-fuzz targets' entry points (`molecule::fuzzing`) over their
//! committed seeds, so the hooks the fuzzer drives keep working.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Engine, Options, TestApp, Ws};
use crate::on_both_engines;

/// Cases per route and engine: enough to walk every mutation kind many
/// times, few enough for the suite's time budget.
const CASES: u32 = 40;

/// Draws `n` values of `strategy` (no shrinking: the server's state moves
/// on between cases, so a failing case is reported whole instead).
fn draw<S: Strategy>(strategy: S, n: u32) -> Vec<S::Value> {
    let mut runner = TestRunner::new(ProptestConfig::with_cases(n));
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).expect("a value").current())
        .collect()
}

/// Strings a hostile client would try: empty, blank, NUL, control
/// characters, very long, non-ASCII, and look-alikes of valid values.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("   ".to_owned()),
        Just("a\0b".to_owned()),
        Just("\u{0}".to_owned()),
        Just("x".repeat(70_000)),
        Just("0 9 * * *".to_owned()),
        Just("* * * * * * *".to_owned()),
        Just("Europe/Nowhere".to_owned()),
        Just("viewer".to_owned()),
        Just("../../etc".to_owned()),
        Just("2026-13-40T25:61:00Z".to_owned()),
        "\\PC{0,40}",
        ".{0,12}",
    ]
}

/// Any JSON value, biased toward the shapes handlers destructure.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            Just(-1i64),
            Just(0),
            Just(1),
            Just(i64::MAX),
            Just(i64::MIN)
        ]
        .prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        nasty_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// How a valid body is spoiled.
#[derive(Debug, Clone)]
enum Mutation {
    /// Sent as it is.
    Keep,
    /// One field (by index) dropped.
    Drop(usize),
    /// One field (by index), or one field nested in it, replaced.
    Replace(usize, Value),
    /// A field the route does not know added.
    Unknown(String, Value),
    /// Another JSON value entirely.
    Whole(Value),
    /// The text cut after this many bytes (no longer JSON).
    Truncate(usize),
    /// Not JSON at all.
    Bytes(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => Just(Mutation::Keep),
        2 => any::<usize>().prop_map(Mutation::Drop),
        6 => (any::<usize>(), any_json()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        1 => ("[a-z_]{1,12}", any_json()).prop_map(|(k, v)| Mutation::Unknown(k, v)),
        2 => any_json().prop_map(Mutation::Whole),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Mutation::Bytes),
    ]
}

/// Replaces the field at `i` (in key order, also one level down).
fn replace_at(body: &mut Value, i: usize, with: Value) {
    let Some(map) = body.as_object_mut() else {
        *body = with;
        return;
    };
    let keys: Vec<String> = map.keys().cloned().collect();
    if keys.is_empty() {
        return;
    }
    let key = &keys[i % keys.len()];
    let slot = map.get_mut(key).expect("a key just listed");
    match slot {
        Value::Object(inner) if !inner.is_empty() && i % 2 == 1 => {
            let inner_keys: Vec<String> = inner.keys().cloned().collect();
            let k = &inner_keys[(i / 2) % inner_keys.len()];
            inner.insert(k.clone(), with);
        }
        _ => *slot = with,
    }
}

fn apply(mut body: Value, m: &Mutation) -> Vec<u8> {
    match m {
        Mutation::Keep => {}
        Mutation::Drop(i) => {
            if let Some(map) = body.as_object_mut() {
                if let Some(k) = map.keys().nth(i % map.len().max(1)).cloned() {
                    map.remove(&k);
                }
            }
        }
        Mutation::Replace(i, v) => replace_at(&mut body, *i, v.clone()),
        Mutation::Unknown(k, v) => {
            if let Some(map) = body.as_object_mut() {
                map.insert(format!("x_{k}"), v.clone());
            }
        }
        Mutation::Whole(v) => body = v.clone(),
        Mutation::Truncate(at) => {
            let text = body.to_string().into_bytes();
            return text[..at % text.len().max(1)].to_vec();
        }
        Mutation::Bytes(b) => return b.clone(),
    }
    body.to_string().into_bytes()
}

/// One route under test: where, as whom, a valid body, and the reads
/// that show what it stores.
struct Route {
    path: String,
    token: String,
    valid: Value,
    reads: Vec<String>,
    extra_headers: &'static [(&'static str, &'static str)],
}

fn routes(app: &TestApp, ws: &Ws) -> Vec<Route> {
    let id = &ws.id;
    let activity = format!("/workspaces/{id}/activity?limit=500");
    let ws_route = |path: &str, valid: Value, reads: &[&str]| Route {
        path: format!("/workspaces/{id}/{path}"),
        token: ws.token.clone(),
        valid,
        reads: std::iter::once(activity.clone())
            .chain(reads.iter().map(|r| format!("/workspaces/{id}/{r}")))
            .collect(),
        extra_headers: &[],
    };
    let admin = |path: String, valid: Value, reads: Vec<String>| Route {
        path,
        token: app.admin_token.clone(),
        valid,
        reads,
        extra_headers: &[],
    };
    vec![
        ws_route(
            "schedules",
            json!({"name": "morning", "cron_expr": "0 9 * * *", "prompt": "plan the day",
                   "timezone": "Europe/Berlin"}),
            &["schedules"],
        ),
        ws_route(
            "approvals",
            json!({"action": "deploy", "reason": "release", "context": {"commit": "abc"},
                   "task_id": "t-9", "expires_in_s": 3600}),
            &["approvals"],
        ),
        admin(
            format!("/workspaces/{id}/a2a"),
            json!({"jsonrpc": "2.0", "id": 1, "method": "message/send",
                   "params": {"message": {"role": "user", "messageId": "m1",
                   "parts": [{"kind": "text", "text": "hi"}]}}}),
            vec![activity.clone()],
        ),
        Route {
            extra_headers: &[
                ("accept", "application/json, text/event-stream"),
                ("mcp-protocol-version", "2024-11-05"),
            ],
            ..ws_route(
                "mcp",
                json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                       "params": {"name": "commit_memory",
                                  "arguments": {"content": "the build uses nextest"}}}),
                &["memories"],
            )
        },
        ws_route(
            "usage",
            json!({"input_tokens": 10, "output_tokens": 5, "model": "gpt-4o"}),
            &["usage"],
        ),
        ws_route(
            "traces",
            json!({"spans": [{"name": "x", "kind": "llm", "start": "2026-01-01T00:00:00Z",
                   "end": "2026-01-01T00:00:01Z"}]}),
            &["traces"],
        ),
        admin(
            "/org/tokens".to_owned(),
            json!({"role": "viewer", "name": "dashboards", "expires_in_s": 3600}),
            vec!["/org/tokens".to_owned()],
        ),
        admin(
            format!("/workspaces/{id}/tokens"),
            json!({"name": "ci", "expires_in_s": 3600}),
            vec![format!("/workspaces/{id}/tokens")],
        ),
        admin(
            "/org/import".to_owned(),
            json!({"name": "acme", "defaults": {"tier": 2},
                   "workspaces": [{"name": "lead", "children": [{"name": "coder",
                   "schedules": [{"name": "m", "cron_expr": "0 9 * * *", "prompt": "p"}]}]}]}),
            vec!["/workspaces".to_owned()],
        ),
    ]
}

impl TestApp {
    async fn post_raw(&self, route: &Route, body: Vec<u8>) -> (StatusCode, Value) {
        let mut req = self
            .client
            .post(self.url(&route.path))
            .bearer_auth(&route.token)
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in route.extra_headers {
            req = req.header(*k, *v);
        }
        Self::json(req.send().await.unwrap()).await
    }

    /// What the route's reads show (as the operator: no token's
    /// last-used stamp moves).
    async fn snapshot(&self, route: &Route) -> Vec<Value> {
        let mut out = Vec::new();
        for read in &route.reads {
            let (status, body) = self.get(read, &self.admin_token).await;
            assert_eq!(status, StatusCode::OK, "{read}: {body}");
            out.push(body);
        }
        out
    }
}

/// A refusal: a 4xx, or a JSON-RPC error (A2A and MCP answer some of
/// theirs with 200, as their protocols say).
fn refused(status: StatusCode, body: &Value) -> bool {
    status.is_client_error() || body.get("error").is_some_and(|e| !e.is_null())
}

on_both_engines!(mutated_bodies_never_answer_5xx_and_a_refusal_changes_nothing);
async fn mutated_bodies_never_answer_5xx_and_a_refusal_changes_nothing(engine: Engine) {
    let options = Options::new(engine).tweak(|c| c.mcp_rate_limit = None);
    let Some(app) = spawn_app_with(options).await else {
        return;
    };
    let ws = app.create_poll_workspace("target").await;
    let mutations = draw(mutation(), CASES);
    let mut outcomes = BTreeMap::<String, (u32, u32)>::new();
    for route in routes(&app, &ws) {
        for m in &mutations {
            let body = apply(route.valid.clone(), m);
            let before = app.snapshot(&route).await;
            let (status, answer) = app.post_raw(&route, body.clone()).await;
            let case = format!(
                "{} {:?} → {status} {answer}",
                route.path,
                String::from_utf8_lossy(&body)
            );
            assert!(
                status.is_success() || status.is_client_error(),
                "never a 5xx: {case}"
            );
            let tally = outcomes.entry(route.path.clone()).or_default();
            if refused(status, &answer) {
                tally.1 += 1;
                if status.is_client_error() && !route.path.ends_with("/mcp") {
                    assert!(
                        answer["error"].as_str().is_some_and(|e| !e.is_empty()),
                        "a refusal names its cause: {case}"
                    );
                }
                assert_eq!(app.snapshot(&route).await, before, "nothing stored: {case}");
            } else {
                tally.0 += 1;
            }
        }
    }
    // Every route saw both outcomes, so the property was exercised both
    // ways (`Keep` is a valid body; most spoiled ones are refused).
    for (path, (ok, no)) in &outcomes {
        assert!(*no > 0, "{path}: no body was refused ({ok} accepted)");
    }
}

/// Names a route stores as given (trimmed ones are tested elsewhere).
fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9äöü日本_.-]{1,30}"
}

/// A free text with at least one visible character.
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9äö日][ -~äö日\n]{0,60}"
}

on_both_engines!(valid_bodies_round_trip_through_their_reads);
async fn valid_bodies_round_trip_through_their_reads(engine: Engine) {
    let Some(app) = spawn_app_with(Options::new(engine)).await else {
        return;
    };
    let ws = app.create_poll_workspace("target").await;
    let crons = prop::sample::select(vec!["0 9 * * *", "*/5 * * * *", "30 2 1 * *", "0 0 * * 1"]);
    let cases = draw((name(), crons, text(), text(), name()), CASES / 2);
    for (i, (name, cron, prompt, message, label)) in cases.into_iter().enumerate() {
        // A schedule: what was sent is what is listed.
        let name = format!("{name}-{i}");
        let body = json!({"name": name, "cron_expr": cron, "prompt": prompt});
        let path = format!("/workspaces/{}/schedules", ws.id);
        let (status, created) = app.post(&path, &ws.token, &body).await;
        assert_eq!(status, StatusCode::CREATED, "{body} → {created}");
        let (_, listed) = app.get(&path, &app.admin_token).await;
        let row = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == created["id"])
            .unwrap_or_else(|| panic!("{body}: not listed in {listed}"));
        for key in ["name", "cron_expr", "prompt"] {
            assert_eq!(row[key], body[key], "{key} of {body}");
        }

        // An approval: the action and reason read back unchanged.
        let body = json!({"action": prompt, "reason": message});
        let path = format!("/workspaces/{}/approvals", ws.id);
        let (status, created) = app.post(&path, &ws.token, &body).await;
        assert_eq!(status, StatusCode::CREATED, "{body} → {created}");
        let aid = created["approval_id"].as_str().unwrap();
        let (status, read) = app.get(&format!("{path}/{aid}"), &ws.token).await;
        assert_eq!(status, StatusCode::OK, "{read}");
        assert_eq!(
            (&read["action"], &read["reason"]),
            (&json!(prompt.trim()), &body["reason"]),
            "{body}"
        );

        // A message: the text arrives in the inbox row.
        let body = json!({"method": "message/send", "params": {"message": {"role": "user",
            "parts": [{"kind": "text", "text": message}]}}});
        let (status, queued) = app
            .post(
                &format!("/workspaces/{}/a2a", ws.id),
                &app.admin_token,
                &body,
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body} → {queued}");
        let (_, rows) = app
            .activity(
                &ws,
                &format!("since_id={}", queued["activity_id"].as_i64().unwrap() - 1),
            )
            .await;
        assert_eq!(rows[0]["data"]["text"], json!(message), "{rows}");

        // A token: listed under its label, the secret never (within the
        // mint limit of 10 an hour).
        if i >= 8 {
            continue;
        }
        let body = json!({"name": label, "role": "viewer"});
        let (status, minted) = app.post("/org/tokens", &app.admin_token, &body).await;
        assert_eq!(status, StatusCode::CREATED, "{body} → {minted}");
        let (_, org) = app.get("/org/tokens", &app.admin_token).await;
        let row = org["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == minted["id"])
            .unwrap_or_else(|| panic!("{body}: not listed in {org}"));
        assert_eq!(
            (&row["name"], &row["role"]),
            (&json!(label), &json!("viewer"))
        );
        assert!(!row
            .to_string()
            .contains(minted["auth_token"].as_str().unwrap()));
    }
}

/// A template tree: each node's name and its children.
#[derive(Debug, Clone)]
struct Tree(String, Vec<Tree>);

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = name().prop_map(|n| Tree(n, Vec::new()));
    leaf.prop_recursive(4, 20, 3, |inner| {
        (name(), prop::collection::vec(inner, 0..3)).prop_map(|(n, c)| Tree(n, c))
    })
}

fn tree_json(t: &Tree) -> Value {
    json!({"name": t.0, "children": t.1.iter().map(tree_json).collect::<Vec<_>>()})
}

/// The same tree in block-style YAML.
fn tree_yaml(t: &Tree, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    out.push_str(&format!("{pad}- name: \"{}\"\n", t.0));
    if !t.1.is_empty() {
        out.push_str(&format!("{pad}  children:\n"));
        for c in &t.1 {
            tree_yaml(c, indent + 4, out);
        }
    }
}

/// (parent name or "", name) of every node, sorted.
fn edges(t: &Tree, parent: &str, out: &mut Vec<(String, String)>) {
    out.push((parent.to_owned(), t.0.clone()));
    for c in &t.1 {
        edges(c, &t.0, out);
    }
}

on_both_engines!(a_generated_template_imports_as_the_tree_it_describes_in_yaml_and_json);
async fn a_generated_template_imports_as_the_tree_it_describes_in_yaml_and_json(engine: Engine) {
    let Some(app) = spawn_app_with(Options::new(engine)).await else {
        return;
    };
    for (i, t) in draw(tree(), 8).into_iter().enumerate() {
        // A unique root, so every import is a tree of its own.
        let t = Tree(format!("root-{i}"), t.1);
        let (body, content_type) = if i % 2 == 0 {
            (
                json!({"workspaces": [tree_json(&t)]}).to_string(),
                "application/json",
            )
        } else {
            let mut y = "workspaces:\n".to_owned();
            tree_yaml(&t, 2, &mut y);
            (y, "application/yaml")
        };
        let resp = app
            .client
            .post(app.url("/org/import"))
            .bearer_auth(&app.admin_token)
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let (status, report) = TestApp::json(resp).await;
        assert_eq!(status, StatusCode::OK, "{body} → {report}");
        let (_, all) = app.get("/workspaces", &app.admin_token).await;
        let all = all.as_array().unwrap();
        let name_of = |id: &Value| {
            all.iter()
                .find(|w| &w["id"] == id)
                .map_or(String::new(), |w| w["name"].as_str().unwrap().to_owned())
        };
        let imported: Vec<&Value> = report["workspaces"].as_array().unwrap().iter().collect();
        let mut got: Vec<(String, String)> = imported
            .iter()
            .map(|w| {
                let listed = all.iter().find(|l| l["id"] == w["id"]).expect("listed");
                (
                    name_of(&listed["parent_id"]),
                    listed["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let mut want = Vec::new();
        edges(&t, "", &mut want);
        // Sibling names may repeat in a generated tree: the import skips
        // a (parent, name) it already made, so compare distinct edges.
        got.sort();
        got.dedup();
        want.sort();
        want.dedup();
        assert_eq!(got, want, "{body}");
    }
}

/// The cargo-fuzz entry points answer every committed seed (and so still
/// build and run): the same code the fuzzer drives, without the fuzzer.
#[test]
fn every_fuzz_target_answers_its_committed_seeds() {
    let seeds = |target: &str| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        assert!(!files.is_empty(), "{target} has seeds");
        files.sort();
        files
    };
    for seed in seeds("multipart") {
        molecule::fuzzing::multipart(&seed);
    }
    for seed in seeds("template") {
        molecule::fuzzing::template(&seed);
    }
    for seed in seeds("plugin_archive") {
        molecule::fuzzing::plugin_archive(&seed);
    }
    let server = molecule::fuzzing::Server::start();
    for seed in seeds("json_bodies") {
        server.send(&seed);
    }
}
