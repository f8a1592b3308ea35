//! The fleet's store queries on both engines: the communication rule as
//! one recursive query (`FleetStore::reachable_from`) gives exactly what
//! the rule gives over a listing of every workspace, and the workspace
//! list pages with a cursor; plus `GET /workspaces?limit=&after=` over
//! HTTP.

use std::sync::Arc;

use chrono::Duration as Span;
use molecule::domain::team::{self, Caller};
use molecule::domain::{now, AuthToken, DeliveryMode, HeartbeatReport, WorkspaceId};
use molecule::store::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Engine};
use crate::on_both_engines;
use crate::store_contract::{new_ws, open, open_with_url};

/// The answer the rule gave before it was a query: every live workspace
/// of the listing that `x` may reach, in the listing's order (what
/// `/registry/:id/peers` and `memory::team_of` computed per call).
fn by_the_rule(all: &[Workspace], x: WorkspaceId) -> Vec<WorkspaceId> {
    let tree = team::Tree::new(all.iter().map(|w| (w.id, w.parent_id)));
    let from = Caller::Workspace(tree.node(x));
    all.iter()
        .filter(|w| w.is_live() && team::may_reach(&from, &tree.node(w.id)))
        .map(|w| w.id)
        .collect()
}

/// A random forest: for each new workspace, `Some(i)` hangs it under the
/// i-th earlier one (modulo), `None` makes it a root; then the indexes
/// to remove (with their subtrees).
fn forest() -> impl Strategy<Value = (Vec<Option<usize>>, Vec<usize>)> {
    (
        prop::collection::vec(prop::option::weighted(0.8, any::<usize>()), 2..40),
        prop::collection::vec(any::<usize>(), 0..4),
    )
}

async fn build(
    store: &Arc<dyn Store>,
    shape: &[Option<usize>],
    extra_chain: usize,
) -> Vec<WorkspaceId> {
    // One timestamp for all: the list's order falls back on the id.
    let t = now();
    let mut ids: Vec<WorkspaceId> = Vec::new();
    for (i, p) in shape.iter().enumerate() {
        let parent = p.filter(|_| i > 0).map(|p| ids[p % i]);
        let id = WorkspaceId::new();
        let mut new = new_ws(&format!("w{i}"), DeliveryMode::Poll);
        new.parent_id = parent;
        store
            .create_workspace(id, &new, AuthToken::generate().key(), t)
            .await
            .unwrap();
        ids.push(id);
    }
    // A chain deeper than the rule's bound, under the first workspace.
    for level in 0..extra_chain {
        let id = WorkspaceId::new();
        let mut new = new_ws(&format!("deep{level}"), DeliveryMode::Poll);
        new.parent_id = ids.last().copied();
        store
            .create_workspace(id, &new, AuthToken::generate().key(), t + Span::seconds(1))
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

async fn reach_matches_the_rule_for_every_workspace_of_random_forests(engine: Engine) {
    let mut runner = TestRunner::default();
    for round in 0..6 {
        let Some((store, _dir)) = open(engine).await else {
            return;
        };
        let (shape, removals) = forest().new_tree(&mut runner).unwrap().current();
        // Every other round, a chain past the 32-level bound.
        let deep = if round % 2 == 0 {
            team::MAX_LEVELS + 3
        } else {
            0
        };
        let ids = build(&store, &shape, deep).await;
        for r in &removals {
            store
                .remove_workspace(ids[r % ids.len()], true, now())
                .await
                .unwrap();
        }
        // Rows that differ in what a peer listing shows: a push URL and
        // an agent card, a heartbeat with an error rate, a pause.
        for (i, x) in ids.iter().copied().enumerate() {
            match i % 4 {
                1 => {
                    let update = UpdateWorkspace {
                        delivery_mode: Some(DeliveryMode::Push),
                        url: Some(Some(format!("https://agent{i}.example.com/a2a"))),
                        agent_card: Some(json!({"name": format!("w{i}"), "role": "coder"})),
                        ..UpdateWorkspace::default()
                    };
                    let _ = store.register_workspace(x, &update, None, now()).await;
                }
                2 => {
                    let report = HeartbeatReport {
                        error_rate: Some(0.25),
                        ..HeartbeatReport::default()
                    };
                    store.heartbeat(x, &report, now()).await.unwrap();
                }
                3 => {
                    store.set_paused(x, true, now()).await.unwrap();
                }
                _ => {}
            }
        }
        let all = store.list_workspaces().await.unwrap();
        // An id that names no workspace reaches nothing (its callers
        // answer 404, or the caller alone, before they ask).
        assert_eq!(
            store.reachable_from(WorkspaceId::new()).await.unwrap(),
            vec![]
        );
        assert_eq!(
            store.reachable_ids(WorkspaceId::new()).await.unwrap(),
            vec![]
        );
        // Every workspace, removed ones too.
        for x in ids.iter().copied() {
            let reached = store.reachable_from(x).await.unwrap();
            // Each reached row carries the listing's own fields.
            for r in &reached {
                let w = all.iter().find(|w| w.id == r.id).unwrap();
                assert_eq!(
                    (&r.name, r.delivery_mode, &r.url, &r.agent_card, r.tier),
                    (&w.name, w.delivery_mode, &w.url, &w.agent_card, w.tier)
                );
                assert_eq!(r.liveness, w.liveness());
            }
            let got: Vec<WorkspaceId> = reached.into_iter().map(|w| w.id).collect();
            assert_eq!(
                got,
                by_the_rule(&all, x),
                "round {round}: {shape:?} - {removals:?}, {x}"
            );
            assert_eq!(store.reachable_ids(x).await.unwrap(), got, "ids of {x}");
        }
    }
}
on_both_engines!(reach_matches_the_rule_for_every_workspace_of_random_forests);

/// `v` in ascending order: the workspaces `build` makes share one
/// creation time, so the list's order among them is their ids'.
fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// The ids and names `store` answers for `x`, both ways.
async fn reach_of(store: &Arc<dyn Store>, x: WorkspaceId) -> (Vec<WorkspaceId>, Vec<String>) {
    let rows = store.reachable_from(x).await.unwrap();
    let ids: Vec<WorkspaceId> = rows.iter().map(|r| r.id).collect();
    assert_eq!(store.reachable_ids(x).await.unwrap(), ids, "ids of {x}");
    (ids, rows.into_iter().map(|r| r.name).collect())
}

/// The reach cache (`store::reach_cache`) as two replicas see it: store
/// `a` answers (and keeps) the reach of every workspace, store `b` on the
/// same database changes the tree (a move, a new sibling, a removal, a
/// purge) or a listed field; `a`'s very next answers are the rule's over
/// the tree as it is now, with no event between them.
async fn the_reach_cache_follows_each_tree_change_another_store_makes(engine: Engine) {
    let Some((b, _dir, url)) = open_with_url(engine).await else {
        return;
    };
    let a = connect(&url).await.unwrap();
    // Roots r1, r2; c under r1, d under c.
    let ids = build(&b, &[None, None, Some(0), Some(2)], 0).await;
    let (r1, r2, c, d) = (ids[0], ids[1], ids[2], ids[3]);
    let check = |when: &'static str| {
        let (a, b) = (a.clone(), b.clone());
        async move {
            let all = b.list_workspaces().await.unwrap();
            for x in all.iter().map(|w| w.id) {
                // Twice: the second answer comes from the cache.
                for _ in 0..2 {
                    let (got, names) = reach_of(&a, x).await;
                    assert_eq!(got, by_the_rule(&all, x), "{when}: {x}");
                    let want: Vec<&str> = got
                        .iter()
                        .map(|id| all.iter().find(|w| w.id == *id).unwrap().name.as_str())
                        .collect();
                    assert_eq!(names, want, "{when}: names of {x}");
                }
            }
        }
    };
    check("at first").await;
    assert_eq!(sorted(reach_of(&a, r1).await.0), sorted(vec![r1, r2, c, d]));
    // A move: c (with d) under r2.
    let to_r2 = UpdateWorkspace {
        parent_id: Some(Some(r2)),
        ..UpdateWorkspace::default()
    };
    b.update_workspace(c, &to_r2, now()).await.unwrap().unwrap();
    assert_eq!(sorted(reach_of(&a, r1).await.0), sorted(vec![r1, r2]));
    assert_eq!(sorted(reach_of(&a, r2).await.0), sorted(vec![r1, r2, c, d]));
    check("after the move").await;
    // A new sibling of c.
    let e = WorkspaceId::new();
    let mut new = new_ws("e", DeliveryMode::Poll);
    new.parent_id = Some(r2);
    b.create_workspace(e, &new, AuthToken::generate().key(), now())
        .await
        .unwrap();
    assert_eq!(sorted(reach_of(&a, c).await.0), sorted(vec![r2, c, d, e]));
    check("after the new sibling").await;
    // A listed field (no tree change): read afresh all the same.
    let rename = UpdateWorkspace {
        name: Some("renamed".into()),
        ..UpdateWorkspace::default()
    };
    b.update_workspace(d, &rename, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        sorted(reach_of(&a, c).await.1),
        sorted(["w1", "w2", "renamed", "e"].map(String::from).to_vec())
    );
    check("after the rename").await;
    // A removal (c and d with it), then the purge of the removed rows.
    b.remove_workspace(c, true, now()).await.unwrap();
    assert_eq!(sorted(reach_of(&a, e).await.0), sorted(vec![r2, e]));
    assert_eq!(sorted(reach_of(&a, r2).await.0), sorted(vec![r1, r2, e]));
    check("after the removal").await;
    let purged = b
        .purge_removed(now() + Span::seconds(1), 100)
        .await
        .unwrap();
    assert_eq!(purged, 2);
    assert_eq!(sorted(reach_of(&a, c).await.0), sorted(vec![]));
    assert_eq!(sorted(reach_of(&a, r1).await.0), sorted(vec![r1, r2]));
    check("after the purge").await;
}
on_both_engines!(the_reach_cache_follows_each_tree_change_another_store_makes);

async fn the_workspace_list_pages_with_a_cursor(engine: Engine) {
    let Some((store, _dir)) = open(engine).await else {
        return;
    };
    // Two roots with three children each, all created at one instant.
    let ids = build(
        &store,
        &[
            None,
            None,
            Some(0),
            Some(1),
            Some(0),
            Some(1),
            Some(0),
            Some(1),
        ],
        0,
    )
    .await;
    let all: Vec<WorkspaceId> = store
        .list_workspaces()
        .await
        .unwrap()
        .iter()
        .map(|w| w.id)
        .collect();
    let page = |parent, after, limit| {
        let store = store.clone();
        async move {
            store
                .workspace_page(PageQuery {
                    parent,
                    after,
                    limit,
                })
                .await
                .unwrap()
        }
    };
    // Pages of 3 walk the whole list in its order, each with the total.
    let mut walked = Vec::new();
    let mut after = None;
    loop {
        let p = page(None, after, 3).await.expect("a known cursor");
        assert_eq!(p.total, 8);
        walked.extend(p.workspaces.iter().map(|w| w.id));
        assert_eq!(p.more, walked.len() < 8, "more after {}", walked.len());
        for (parent, child) in &p.children {
            assert!(p.workspaces.iter().any(|w| w.id == *parent));
            assert!(ids[2..].contains(child));
        }
        if !p.more {
            break;
        }
        after = walked.last().copied();
    }
    assert_eq!(walked, all);
    // The children of a listed root, oldest first (the list's order).
    let first = page(None, None, 8).await.unwrap();
    let kids_of_0: Vec<WorkspaceId> = first
        .children
        .iter()
        .filter(|(p, _)| *p == ids[0])
        .map(|(_, c)| *c)
        .collect();
    let want: Vec<WorkspaceId> = all
        .iter()
        .copied()
        .filter(|c| [ids[2], ids[4], ids[6]].contains(c))
        .collect();
    assert_eq!(kids_of_0, want);
    // Only roots; only the children of one.
    let roots = page(Some(None), None, 10).await.unwrap();
    assert_eq!(roots.total, 2);
    assert_eq!(roots.workspaces.len(), 2);
    let kids = page(Some(Some(ids[1])), None, 2).await.unwrap();
    assert_eq!((kids.total, kids.workspaces.len(), kids.more), (3, 2, true));
    // A cursor whose workspace was removed since still places the page;
    // one that names no workspace is refused.
    let cut = all[3];
    store.remove_workspace(cut, true, now()).await.unwrap();
    let rest = page(None, Some(cut), 10).await.unwrap();
    let want: Vec<WorkspaceId> = all[4..].iter().copied().filter(|w| *w != cut).collect();
    let live: Vec<WorkspaceId> = store
        .list_workspaces()
        .await
        .unwrap()
        .iter()
        .map(|w| w.id)
        .collect();
    let want: Vec<WorkspaceId> = want.into_iter().filter(|w| live.contains(w)).collect();
    assert_eq!(
        rest.workspaces.iter().map(|w| w.id).collect::<Vec<_>>(),
        want
    );
    assert_eq!(page(None, Some(WorkspaceId::new()), 3).await, None);
}
on_both_engines!(the_workspace_list_pages_with_a_cursor);

async fn get_workspaces_pages_with_limit_and_after_and_counts_the_total(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let root = app.create_poll_workspace("root").await;
    for i in 0..4 {
        app.create_poll_workspace_under(&format!("kid{i}"), Some(&root))
            .await;
    }
    let get = |query: String| {
        let app = &app;
        async move {
            let resp = app
                .client
                .get(app.url(&format!("/workspaces{query}")))
                .bearer_auth(&app.admin_token)
                .send()
                .await
                .unwrap();
            let total = resp
                .headers()
                .get("x-total-count")
                .map(|v| v.to_str().unwrap().to_owned());
            let link = resp
                .headers()
                .get("link")
                .map(|v| v.to_str().unwrap().to_owned());
            let status = resp.status();
            let body: Value = resp.json().await.unwrap();
            (status, total, link, body)
        }
    };
    // Without parameters: the whole array, as before, with the count.
    let (status, total, link, full) = get(String::new()).await;
    assert_eq!(
        (status, total.as_deref(), link),
        (StatusCode::OK, Some("5"), None)
    );
    assert_eq!(full.as_array().unwrap().len(), 5);
    // Pages of two, following the Link header, give the same array.
    let mut walked = Vec::new();
    let mut next = Some("?limit=2".to_owned());
    while let Some(query) = next {
        let (status, total, link, body) = get(query).await;
        assert_eq!(
            (status, total.as_deref()),
            (StatusCode::OK, Some("5")),
            "{body}"
        );
        walked.extend(body.as_array().unwrap().iter().cloned());
        next = link.map(|l| {
            let target = l
                .strip_prefix("</workspaces")
                .and_then(|l| l.strip_suffix(">; rel=\"next\""))
                .unwrap_or_else(|| panic!("a next link: {l}"));
            target.to_owned()
        });
    }
    assert_eq!(Value::Array(walked), full);
    // `after` alone pages by 100; children stay listed on a page.
    let (_, _, _, rest) = get(format!("?after={}", root.id)).await;
    assert_eq!(rest, json!(full.as_array().unwrap()[1..]));
    let (_, total, _, kids) = get(format!("?parent_id={}&limit=1", root.id)).await;
    assert_eq!(
        (total.as_deref(), kids.as_array().unwrap().len()),
        (Some("4"), 1)
    );
    let (_, _, _, first) = get("?limit=1".to_owned()).await;
    assert_eq!(first[0]["children"], full[0]["children"]);
    // Bad parameters: 400 with the rule.
    for (query, want) in [
        ("?limit=0", "`limit` must be between 1 and 1000"),
        ("?limit=1001", "`limit` must be between 1 and 1000"),
        ("?limit=x", ""),
        ("?after=nope", "`after`"),
        (
            &*format!("?after={}", WorkspaceId::new()),
            "`after` names no workspace",
        ),
    ] {
        let (status, _, _, body) = get(query.to_owned()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(want),
            "{query}: {body}"
        );
    }
}
on_both_engines!(get_workspaces_pages_with_limit_and_after_and_counts_the_total);
