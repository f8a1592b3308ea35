//! The communication rule on the wire: peer A2A calls, `/registry/:id/peers`
//! and `/registry/discover/:target` over a real workspace tree, sent as
//! Molecule's SDK sends them; and a paused target's messages are staged.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::agent::sdk_call_peer;
use crate::helpers::{spawn_app, Engine, TestApp, Ws};
use crate::on_both_engines;

const RULE: &str = "a workspace may only reach its siblings (workspaces with the same parent; root workspaces are siblings of each other) and its ancestors and descendants up to 32 levels away";

impl TestApp {
    async fn create_child(&self, name: &str, parent: Option<&Ws>, push_url: Option<&str>) -> Ws {
        let mut body = json!({"name": name, "delivery_mode": "poll"});
        if let Some(url) = push_url {
            body["delivery_mode"] = json!("push");
            body["url"] = json!(url);
        }
        if let Some(p) = parent {
            body["parent_id"] = json!(p.id);
        }
        let (status, body) = self.create_workspace(body).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        Ws {
            id: body["id"].as_str().unwrap().to_owned(),
            token: body["auth_token"].as_str().unwrap().to_owned(),
        }
    }

    /// What `RemoteAgentClient.get_peers()` / `discover_peer()` send.
    async fn sdk_get(&self, path: &str, caller: &Ws, named: &str) -> (StatusCode, Value) {
        Self::json(
            self.client
                .get(self.url(path))
                .bearer_auth(&caller.token)
                .header("X-Workspace-ID", named)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn inbox_len(&self, ws: &Ws) -> usize {
        let (_, rows) = self
            .get(
                &format!("/workspaces/{}/activity", ws.id),
                &self.admin_token,
            )
            .await;
        rows.as_array().unwrap().len()
    }
}

fn ids(peers: &Value) -> Vec<String> {
    peers
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn the_communication_rule_governs_peer_calls_peers_and_discovery(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let agent = crate::uploads::spawn_push_agent().await;
    // root_a ── mid ── leaf
    //       └── mid2 ── leaf2
    // root_b (push)
    let root_a = app.create_child("root-a", None, None).await;
    let root_b = app
        .create_child("root-b", None, Some(&format!("{agent}/")))
        .await;
    let mid = app.create_child("mid", Some(&root_a), None).await;
    let mid2 = app.create_child("mid2", Some(&root_a), None).await;
    let leaf = app.create_child("leaf", Some(&mid), None).await;
    let leaf2 = app.create_child("leaf2", Some(&mid2), None).await;

    let cases: Vec<(&str, &Ws, &Ws, StatusCode)> = vec![
        ("child → parent", &mid, &root_a, StatusCode::ACCEPTED),
        ("parent → child", &root_a, &mid, StatusCode::ACCEPTED),
        ("sibling → sibling", &mid, &mid2, StatusCode::ACCEPTED),
        ("root → root (push)", &root_a, &root_b, StatusCode::OK),
        ("cousin → cousin", &leaf, &leaf2, StatusCode::FORBIDDEN),
        (
            "grandchild → grandparent",
            &leaf,
            &root_a,
            StatusCode::ACCEPTED,
        ),
        (
            "grandparent → grandchild",
            &root_a,
            &leaf,
            StatusCode::ACCEPTED,
        ),
        ("nephew → uncle", &leaf, &mid2, StatusCode::FORBIDDEN),
        ("child → another root", &mid, &root_b, StatusCode::FORBIDDEN),
    ];
    for (case, from, to, expected) in cases {
        let before = app.inbox_len(to).await;
        let (status, body) =
            sdk_call_peer(&app, from, &to.id, case, &[("X-Workspace-ID", &from.id)]).await;
        assert_eq!(status, expected, "{case}: {body}");
        if expected == StatusCode::FORBIDDEN {
            assert_eq!(
                body,
                json!({"error": format!("workspace {} is out of reach: {RULE}", to.id)}),
                "{case}"
            );
            assert_eq!(
                app.inbox_len(to).await,
                before,
                "{case}: a refused call left a row"
            );
        } else {
            assert_eq!(app.inbox_len(to).await, before + 1, "{case}");
        }
    }
    // The operator reaches anyone.
    let (status, _) = app.send_text(&leaf2.id, "from the operator").await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // Peers: ancestors, descendants and siblings, never itself, cousins
    // or uncles; poll-mode peers have an empty url.
    let (status, peers) = app
        .sdk_get(&format!("/registry/{}/peers", mid.id), &mid, &mid.id)
        .await;
    assert_eq!(status, StatusCode::OK, "{peers}");
    let mut got = ids(&peers);
    got.sort();
    let mut want = vec![root_a.id.clone(), mid2.id.clone(), leaf.id.clone()];
    want.sort();
    assert_eq!(got, want);
    let parent = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == root_a.id.as_str())
        .unwrap();
    assert_eq!(parent["name"], "root-a");
    assert_eq!(parent["url"], "");
    assert_eq!(parent["role"], "");
    assert_eq!(parent["agent_card"], json!({}));
    assert!(
        parent["tier"].is_i64() && parent["status"].is_string(),
        "{parent}"
    );
    let (_, peers) = app
        .sdk_get(
            &format!("/registry/{}/peers", root_a.id),
            &root_a,
            &root_a.id,
        )
        .await;
    let mut got = ids(&peers);
    got.sort();
    let mut want = vec![
        root_b.id.clone(),
        mid.id.clone(),
        mid2.id.clone(),
        leaf.id.clone(),
        leaf2.id.clone(),
    ];
    want.sort();
    assert_eq!(got, want);
    let push_peer = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == root_b.id.as_str())
        .unwrap();
    assert_eq!(push_peer["url"], agent.trim_end_matches('/'));
    // Another workspace's peers, or a header naming someone else: 401.
    let (status, _) = app
        .sdk_get(&format!("/registry/{}/peers", mid.id), &leaf, &leaf.id)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .sdk_get(&format!("/registry/{}/peers", mid.id), &mid, &leaf.id)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Discover: 200 within reach, 403 outside, 404 unknown.
    let (status, found) = app
        .sdk_get(&format!("/registry/discover/{}", mid.id), &leaf, &leaf.id)
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(
        (
            found["id"].as_str(),
            found["url"].as_str(),
            found["name"].as_str()
        ),
        (Some(mid.id.as_str()), Some(""), Some("mid"))
    );
    assert!(found["status"].is_string());
    let (status, found) = app
        .sdk_get(
            &format!("/registry/discover/{}", root_b.id),
            &root_a,
            &root_a.id,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["url"], agent.trim_end_matches('/'));
    let (status, body) = app
        .sdk_get(&format!("/registry/discover/{}", leaf2.id), &leaf, &leaf.id)
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::FORBIDDEN,
            json!({"error": format!("workspace {} is out of reach: {RULE}", leaf2.id)})
        )
    );
    let (status, body) = app
        .sdk_get(
            &format!("/registry/discover/{}", uuid::Uuid::new_v4()),
            &leaf,
            &leaf.id,
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "workspace not found"})
        )
    );
    let (status, _) = app
        .sdk_get(&format!("/registry/discover/{}", mid.id), &leaf, &mid.id)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
on_both_engines!(the_communication_rule_governs_peer_calls_peers_and_discovery);

/// Ancestors and descendants reach each other up to 32 levels apart, over
/// every surface that asks the rule (a peer call, discovery, the A2A
/// card); 33 levels apart they do not.
async fn ancestors_reach_descendants_up_to_32_levels(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let mut chain = vec![app.create_child("level-0", None, None).await];
    for level in 1..=33 {
        let parent = chain.last().cloned();
        chain.push(
            app.create_child(&format!("level-{level}"), parent.as_ref(), None)
                .await,
        );
    }
    let (root, at_32, at_33) = (&chain[0], &chain[32], &chain[33]);
    let cases: Vec<(&str, &Ws, &Ws, StatusCode)> = vec![
        ("root → 32 levels down", root, at_32, StatusCode::ACCEPTED),
        ("32 levels up → root", at_32, root, StatusCode::ACCEPTED),
        ("1 → 33 (32 apart)", &chain[1], at_33, StatusCode::ACCEPTED),
        ("root → 33 levels down", root, at_33, StatusCode::FORBIDDEN),
        ("33 levels up → root", at_33, root, StatusCode::FORBIDDEN),
    ];
    for (case, from, to, expected) in cases {
        let before = app.inbox_len(to).await;
        let (status, body) =
            sdk_call_peer(&app, from, &to.id, case, &[("X-Workspace-ID", &from.id)]).await;
        assert_eq!(status, expected, "{case}: {body}");
        let (found, _) = app
            .sdk_get(&format!("/registry/discover/{}", to.id), from, &from.id)
            .await;
        let (card, _) = app
            .get(&format!("/workspaces/{}/agent-card", to.id), &from.token)
            .await;
        if expected == StatusCode::FORBIDDEN {
            assert_eq!(
                body,
                json!({"error": format!("workspace {} is out of reach: {RULE}", to.id)}),
                "{case}"
            );
            assert_eq!(app.inbox_len(to).await, before, "{case}");
            assert_eq!(
                (found, card),
                (StatusCode::FORBIDDEN, StatusCode::FORBIDDEN),
                "{case}"
            );
        } else {
            assert_eq!(app.inbox_len(to).await, before + 1, "{case}");
            assert_eq!((found, card), (StatusCode::OK, StatusCode::OK), "{case}");
        }
    }
    // The peer list of the root: its child, and every descendant down to
    // 32 levels (no sibling roots here), never the 33rd.
    let (_, peers) = app
        .sdk_get(&format!("/registry/{}/peers", root.id), root, &root.id)
        .await;
    let mut got = ids(&peers);
    got.sort();
    let mut want: Vec<String> = chain[1..=32].iter().map(|w| w.id.clone()).collect();
    want.sort();
    assert_eq!(got, want);
}
on_both_engines!(ancestors_reach_descendants_up_to_32_levels);

async fn a_paused_target_has_its_peer_messages_staged_never_dropped(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let agent = crate::uploads::spawn_push_agent().await;
    let caller = app.create_child("caller", None, None).await;
    let pushy = app
        .create_child("pushy", None, Some(&format!("{agent}/")))
        .await;
    let polly = app.create_child("polly", None, None).await;
    for ws in [&pushy, &polly] {
        let (status, body) = app
            .post(
                &format!("/workspaces/{}/pause", ws.id),
                &app.admin_token,
                &json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for ws in [&pushy, &polly] {
        let (status, body) = sdk_call_peer(
            &app,
            &caller,
            &ws.id,
            "while you were out",
            &[("X-Workspace-ID", &caller.id)],
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["queued"], true);
        let (_, rows) = app
            .get(&format!("/workspaces/{}/activity", ws.id), &app.admin_token)
            .await;
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["id"], body["activity_id"]);
        assert_eq!(rows[0]["status"], "queued");
        assert_eq!(rows[0]["source_id"], caller.id);
        assert_eq!(
            rows[0]["response_body"],
            Value::Null,
            "a paused push target was called"
        );
    }
}
on_both_engines!(a_paused_target_has_its_peer_messages_staged_never_dropped);
