//! The `Store` contract: one suite, run against SQLite and PostgreSQL.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Duration as Span;
use molecule::domain::{now, AuthToken, DeliveryMode, FileId, HeartbeatReport, Tier, WorkspaceId};
use molecule::store::*;
use serde_json::json;

use crate::helpers::{fresh_postgres_url, revoke_tokens_directly, Engine};
use crate::on_both_engines;

pub(crate) async fn open(engine: Engine) -> Option<(Arc<dyn Store>, tempfile::TempDir)> {
    open_with_url(engine).await.map(|(s, d, _)| (s, d))
}

pub(crate) async fn open_with_url(
    engine: Engine,
) -> Option<(Arc<dyn Store>, tempfile::TempDir, String)> {
    let dir = tempfile::tempdir().unwrap();
    let url = match engine {
        Engine::Sqlite => format!("sqlite://{}", dir.path().join("t.db").display()),
        Engine::Postgres => fresh_postgres_url().await?,
    };
    let store = connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    // Migrating twice is a no-op.
    store.migrate().await.unwrap();
    Some((store, dir, url))
}

pub(crate) fn new_ws(name: &str, mode: DeliveryMode) -> NewWorkspace {
    NewWorkspace {
        name: name.into(),
        delivery_mode: mode,
        url: None,
        parent_id: None,
        tier: Tier::DEFAULT,
        runtime: "external".into(),
        model: "m".into(),
    }
}

fn upload(ws: WorkspaceId, name: &str, expires_in: Span) -> (NewPendingUpload, NewActivity) {
    let file_id = FileId::new();
    (
        NewPendingUpload {
            file_id,
            blob_key: format!("uploads/{ws}/{file_id}"),
            size: 10,
            sha256: "ab".repeat(32),
            filename: name.into(),
            mimetype: "text/plain".into(),
            created_at: now(),
            expires_at: now() + expires_in,
        },
        NewActivity {
            activity_type: "a2a_receive".into(),
            method: Some("chat_upload_receive".into()),
            data: Some(json!({"f": name})),
            ..Default::default()
        },
    )
}

/// Every activity row of `ws` from the start (up to `limit`).
async fn activity_rows(store: &Arc<dyn Store>, ws: WorkspaceId, limit: i64) -> Vec<Activity> {
    let query = ActivityQuery {
        since_id: 0,
        limit,
        ..ActivityQuery::default()
    };
    match store.list_activity(ws, &query).await.unwrap() {
        ActivityPage::Rows(rows) => rows,
        other => panic!("expected rows, got {other:?}"),
    }
}

async fn workspaces_and_tokens(engine: Engine) {
    let Some((store, _dir)) = open(engine).await else {
        return;
    };
    let t = now();
    let id = WorkspaceId::new();
    let first = AuthToken::generate();
    let w = store
        .create_workspace(id, &new_ws("a", DeliveryMode::Poll), first.key(), t)
        .await
        .unwrap();
    assert_eq!(
        (
            w.id,
            w.name.as_str(),
            w.delivery_mode,
            w.created_at,
            w.last_heartbeat_at
        ),
        (id, "a", DeliveryMode::Poll, t, None)
    );
    assert_eq!(store.get_workspace(id).await.unwrap(), Some(w.clone()));
    assert_eq!(
        store
            .workspace_for_token(first.hash(), now())
            .await
            .unwrap(),
        Some(id)
    );
    let update = UpdateWorkspace {
        name: Some("b".into()),
        url: Some(Some("https://x.example".into())),
        ..Default::default()
    };
    let w2 = store
        .update_workspace(id, &update, t + Span::seconds(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (w2.name.as_str(), w2.url.as_deref(), w2.created_at),
        ("b", Some("https://x.example"), t)
    );
    let clear = UpdateWorkspace {
        url: Some(None),
        ..Default::default()
    };
    assert_eq!(
        store
            .update_workspace(id, &clear, t)
            .await
            .unwrap()
            .unwrap()
            .url,
        None
    );
    let second = AuthToken::generate();
    assert!(store.rotate_token(id, second.key(), t).await.unwrap());
    assert_eq!(
        store
            .workspace_for_token(first.hash(), now())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .workspace_for_token(second.hash(), now())
            .await
            .unwrap(),
        Some(id)
    );
    assert!(!store
        .rotate_token(WorkspaceId::new(), AuthToken::generate().key(), t)
        .await
        .unwrap());
    // Registration with a mint is refused while a live token exists.
    let reg = store
        .register_workspace(
            id,
            &UpdateWorkspace::default(),
            Some(AuthToken::generate().key()),
            t,
        )
        .await
        .unwrap();
    assert_eq!(reg, Registered::HasLiveToken);
    let reg = store
        .register_workspace(
            id,
            &UpdateWorkspace {
                agent_card: Some(json!({"n": 1})),
                ..Default::default()
            },
            None,
            t,
        )
        .await
        .unwrap();
    let Registered::Done(w3) = reg else {
        panic!("{reg:?}")
    };
    assert_eq!(
        (w3.last_heartbeat_at, w3.agent_card),
        (Some(t), Some(json!({"n": 1})))
    );
    assert_eq!(
        store
            .register_workspace(WorkspaceId::new(), &UpdateWorkspace::default(), None, t)
            .await
            .unwrap(),
        Registered::NotFound
    );
    let report = HeartbeatReport {
        active_tasks: Some(2),
        current_task: Some("t".into()),
        ..HeartbeatReport::default()
    };
    assert!(store
        .heartbeat(id, &report, t + Span::seconds(5))
        .await
        .unwrap());
    assert!(!store
        .heartbeat(WorkspaceId::new(), &report, t)
        .await
        .unwrap());
    let beat = store.get_workspace(id).await.unwrap().unwrap();
    assert_eq!(
        (
            beat.report.active_tasks,
            beat.report.current_task.as_deref()
        ),
        (Some(2), Some("t"))
    );
    assert_eq!(store.list_workspaces().await.unwrap().len(), 1);
    assert_eq!(
        store.remove_workspace(id, false, t).await.unwrap(),
        Removal::Removed {
            workspaces: vec![(id, None)],
            failed: vec![]
        }
    );
    assert_eq!(
        store.remove_workspace(id, false, t).await.unwrap(),
        Removal::NotFound
    );
    assert_eq!(
        store
            .workspace_for_token(second.hash(), now())
            .await
            .unwrap(),
        None,
        "a removed workspace's tokens are revoked"
    );
    assert!(store.list_workspaces().await.unwrap().is_empty());
    // Remembered until the purge, then gone with its tokens.
    assert_eq!(
        store.get_workspace(id).await.unwrap().unwrap().removed_at,
        Some(t)
    );
    assert_eq!(
        store
            .removed_workspace_for_token(second.hash())
            .await
            .unwrap(),
        Some(id)
    );
    // Its memories and keys are kept while it is remembered…
    let memory = molecule::domain::MemoryId::new();
    store
        .insert_memory(&NewMemory {
            id: memory,
            workspace_id: id,
            scope: molecule::domain::memory::Scope::Local,
            namespace: "general".into(),
            content: "a fact".into(),
            embedding: None,
            embedding_model: None,
            created_at: t,
        })
        .await
        .unwrap();
    let write = KvWrite {
        value: json!(1),
        expires_at: None,
        if_version: None,
    };
    assert!(matches!(
        store.kv_set(id, "k", &write, t).await.unwrap(),
        KvWritten::Done(_)
    ));
    assert_eq!(store.purge_removed(t, 10).await.unwrap(), 0);
    assert_eq!(store.get_memories(&[memory]).await.unwrap().len(), 1);
    assert_eq!(
        store.purge_removed(t + Span::seconds(1), 10).await.unwrap(),
        1
    );
    assert_eq!(store.get_workspace(id).await.unwrap(), None);
    // …and purged with it.
    assert_eq!(store.get_memories(&[memory]).await.unwrap(), vec![]);
    assert_eq!(store.kv_list(id, t).await.unwrap(), vec![]);
    assert_eq!(
        store
            .removed_workspace_for_token(second.hash())
            .await
            .unwrap(),
        None
    );
}
on_both_engines!(workspaces_and_tokens);

async fn racing_bootstrap_registrations_mint_exactly_once(engine: Engine) {
    let Some((store, _dir, url)) = open_with_url(engine).await else {
        return;
    };
    let id = WorkspaceId::new();
    store
        .create_workspace(
            id,
            &new_ws("a", DeliveryMode::Poll),
            AuthToken::generate().key(),
            now(),
        )
        .await
        .unwrap();
    revoke_tokens_directly(&url, &id.to_string()).await;
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let token = AuthToken::generate();
            tokio::spawn(async move {
                let outcome = store
                    .register_workspace(id, &UpdateWorkspace::default(), Some(token.key()), now())
                    .await
                    .unwrap();
                (outcome, token)
            })
        })
        .collect();
    let mut minted = Vec::new();
    for a in attempts {
        match a.await.unwrap() {
            (Registered::Done(_), token) => minted.push(token),
            (Registered::HasLiveToken, _) => {}
            (other, _) => panic!("{other:?}"),
        }
    }
    assert_eq!(minted.len(), 1, "exactly one bootstrap wins");
    assert_eq!(
        store
            .workspace_for_token(minted[0].hash(), now())
            .await
            .unwrap(),
        Some(id)
    );
}
on_both_engines!(racing_bootstrap_registrations_mint_exactly_once);

async fn activity_ids_are_ordered_and_filtered(engine: Engine) {
    let Some((store, _dir)) = open(engine).await else {
        return;
    };
    let a = WorkspaceId::new();
    let b = WorkspaceId::new();
    let t = now();
    let mut ids = Vec::new();
    for (ws, ty) in [(a, "x"), (b, "x"), (a, "y"), (a, "x")] {
        let row = NewActivity {
            activity_type: ty.into(),
            summary: Some(ty.into()),
            request_body: Some(json!({"k": [1, 2]})),
            ..Default::default()
        };
        let stored = store.insert_activity(ws, &row, t).await.unwrap();
        assert_eq!(
            (stored.workspace_id, &stored.row, stored.created_at),
            (ws, &row, t)
        );
        ids.push(stored.id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let q = |since_id, ty: Option<&str>, limit| ActivityQuery {
        since_id,
        activity_type: ty.map(str::to_owned),
        limit,
        ..ActivityQuery::default()
    };
    let ActivityPage::Rows(rows) = store.list_activity(a, &q(0, None, 100)).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![ids[0], ids[2], ids[3]]
    );
    let ActivityPage::Rows(rows) = store
        .list_activity(a, &q(ids[0], Some("x"), 100))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), vec![ids[3]]);
    let ActivityPage::Rows(rows) = store.list_activity(a, &q(0, None, 1)).await.unwrap() else {
        panic!()
    };
    assert_eq!(rows.len(), 1);
}
on_both_engines!(activity_ids_are_ordered_and_filtered);

async fn staging_is_one_transaction(engine: Engine) {
    let Some((store, _dir)) = open(engine).await else {
        return;
    };
    let ws = WorkspaceId::new();
    let good = upload(ws, "a.txt", Span::hours(24));
    let mut clash = upload(ws, "b.txt", Span::hours(24));
    clash.0.blob_key = good.0.blob_key.clone();
    // The second row violates the unique blob key: nothing of the batch stays.
    assert!(store
        .stage_uploads(ws, vec![good.clone(), clash], now())
        .await
        .is_err());
    assert!(store
        .list_pending_uploads(ws, now())
        .await
        .unwrap()
        .is_empty());
    assert!(
        activity_rows(&store, ws, 10).await.is_empty(),
        "no activity either"
    );
    let mut too_big = upload(ws, "c.txt", Span::hours(24));
    too_big.0.size = 26_214_401;
    assert!(
        store.stage_uploads(ws, vec![too_big], now()).await.is_err(),
        "the 25 MiB CHECK"
    );
    let activities = store
        .stage_uploads(ws, vec![good.clone()], now())
        .await
        .unwrap();
    assert_eq!(activities.len(), 1);
    assert_eq!(activities[0].row, good.1);
}
on_both_engines!(staging_is_one_transaction);

/// A store's group commits (test hooks).
struct Commits {
    staging: GroupCommit<StageJob>,
    pickups: GroupCommit<PickupJob>,
    memories: GroupCommit<MemoryJob>,
}

/// A store with its group-commit hooks.
async fn open_staging(engine: Engine) -> Option<(Arc<dyn Store>, Commits, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let url = match engine {
        Engine::Sqlite => format!("sqlite://{}", dir.path().join("t.db").display()),
        Engine::Postgres => fresh_postgres_url().await?,
    };
    connect(&url).await.unwrap().migrate().await.unwrap();
    Some(match engine {
        Engine::Sqlite => {
            let s = SqliteStore::connect(&url).await.unwrap();
            let commits = Commits {
                staging: s.staging(),
                pickups: s.pickups(),
                memories: s.memory_commits(),
            };
            (Arc::new(s), commits, dir)
        }
        Engine::Postgres => {
            let s = PostgresStore::connect(&url).await.unwrap();
            let commits = Commits {
                staging: s.staging(),
                pickups: s.pickups(),
                memories: s.memory_commits(),
            };
            (Arc::new(s), commits, dir)
        }
    })
}

type Batch = (WorkspaceId, Vec<(NewPendingUpload, NewActivity)>);

/// Queues every batch while the group commit is held, lets it go, and
/// returns each call's outcome and the transactions it took.
async fn stage_together(
    store: &Arc<dyn Store>,
    staging: &GroupCommit<StageJob>,
    batches: Vec<Batch>,
) -> (Vec<StoreResult<Vec<Activity>>>, u64) {
    let count = batches.len();
    run_while_held(staging, count, || {
        batches
            .into_iter()
            .map(|(ws, files)| {
                let store = store.clone();
                tokio::spawn(async move { store.stage_uploads(ws, files, now()).await })
            })
            .collect()
    })
    .await
}

/// The positions of the calls that failed.
fn failed_at<T, E>(outcomes: &[Result<T, E>]) -> Vec<usize> {
    outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| o.is_err())
        .map(|(i, _)| i)
        .collect()
}

/// Runs the calls `start` spawns while `commits` is held: waits until
/// `queued` of them wait behind it (with none to queue, until every call
/// has finished), lets go, and returns each call's outcome with the
/// transactions the group commit ran meanwhile.
async fn run_while_held<J, T: Send + 'static>(
    commits: &GroupCommit<J>,
    queued: usize,
    start: impl FnOnce() -> Vec<tokio::task::JoinHandle<T>>,
) -> (Vec<T>, u64) {
    let before = commits.transactions();
    let held = commits.hold().await;
    let calls = start();
    for _ in 0..500 {
        let settled = if queued > 0 {
            commits.queued() == queued
        } else {
            calls.iter().all(|c| c.is_finished())
        };
        if settled {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        commits.queued(),
        queued,
        "every call queued behind the held commit"
    );
    drop(held);
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.unwrap());
    }
    (outcomes, commits.transactions() - before)
}

/// Long polls woken together mark their pickups in ONE transaction (a
/// thousand polls woken by a schedule fire must not queue a thousand
/// writes); each mark only ever rises, and a mark for a workspace that
/// does not exist leaves the others standing.
async fn concurrent_pickup_marks_share_one_commit(engine: Engine) {
    let Some((store, Commits { pickups, .. }, _dir)) = open_staging(engine).await else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..4 {
        let id = WorkspaceId::new();
        let token = AuthToken::generate();
        store
            .create_workspace(
                id,
                &new_ws(&format!("p{i}"), DeliveryMode::Poll),
                token.key(),
                now(),
            )
            .await
            .unwrap();
        ids.push(id);
    }
    store.mark_inbox_picked_up(ids[3], 50).await.unwrap();
    // Four live workspaces (the last one lower than its mark) and one
    // that was never created.
    let marks = [
        (ids[0], 7),
        (ids[1], 8),
        (ids[2], 9),
        (ids[3], 10),
        (WorkspaceId::new(), 11),
    ];
    let (outcomes, transactions) = run_while_held(&pickups, marks.len(), || {
        marks
            .iter()
            .map(|&(id, through)| {
                let store = store.clone();
                tokio::spawn(async move { store.mark_inbox_picked_up(id, through).await })
            })
            .collect()
    })
    .await;
    for outcome in outcomes {
        outcome.unwrap();
    }
    assert_eq!(transactions, 1);
    let mut stored = Vec::new();
    for id in &ids {
        let ws = store.get_workspace(*id).await.unwrap().unwrap();
        stored.push(ws.inbox_picked_up_through);
    }
    assert_eq!(stored, vec![Some(7), Some(8), Some(9), Some(50)]);
}
on_both_engines!(concurrent_pickup_marks_share_one_commit);

/// On SQLite (one writer at a time) concurrent memory commits share one
/// transaction (one WAL fsync for all of them); PostgreSQL commits each
/// on its own, side by side. Either way a refused memory (an empty
/// namespace, against the table's CHECK) fails alone and leaves no row,
/// the others are all kept and readable.
async fn concurrent_memory_commits_share_one_commit_and_fail_alone(engine: Engine) {
    use molecule::domain::{memory::Scope, MemoryId};
    let Some((store, Commits { memories, .. }, _dir)) = open_staging(engine).await else {
        return;
    };
    let grouped = engine == Engine::Sqlite;
    let ws = WorkspaceId::new();
    let memory = |i: usize, namespace: &str| NewMemory {
        id: MemoryId::new(),
        workspace_id: ws,
        scope: Scope::Team,
        namespace: namespace.into(),
        content: format!("fact number {i}"),
        embedding: None,
        embedding_model: None,
        created_at: now(),
    };
    // Every commit started while the group commit is held; on SQLite they
    // all queue behind it, on PostgreSQL none waits for it.
    let commit_together = |news: Vec<NewMemory>| {
        let (store, memories) = (store.clone(), memories.clone());
        async move {
            let queued = if grouped { news.len() } else { 0 };
            run_while_held(&memories, queued, || {
                news.iter()
                    .cloned()
                    .map(|m| {
                        let store = store.clone();
                        tokio::spawn(async move { store.insert_memory(&m).await })
                    })
                    .collect()
            })
            .await
        }
    };

    // Five memories: one transaction for all of them on SQLite.
    let good: Vec<NewMemory> = (0..5).map(|i| memory(i, "general")).collect();
    let (outcomes, transactions) = commit_together(good.clone()).await;
    assert_eq!(transactions, if grouped { 1 } else { 5 });
    for (new, outcome) in good.iter().zip(outcomes) {
        let m = outcome.unwrap();
        assert_eq!(
            (m.id, &m.content, m.scope, m.embedded),
            (new.id, &new.content, Scope::Team, false)
        );
    }
    let ids: Vec<MemoryId> = good.iter().map(|m| m.id).collect();
    assert_eq!(store.get_memories(&ids).await.unwrap().len(), 5);

    // Four good ones and a refused one. SQLite: the shared transaction
    // fails and each is retried alone (1 + 5 transactions). Only the
    // refused one fails.
    let mut mixed: Vec<NewMemory> = (5..9).map(|i| memory(i, "general")).collect();
    mixed.insert(2, memory(99, ""));
    let (outcomes, transactions) = commit_together(mixed.clone()).await;
    assert_eq!(transactions, if grouped { 6 } else { 5 });
    assert_eq!(failed_at(&outcomes), vec![2]);
    let kept: BTreeSet<String> = store
        .get_memories(&mixed.iter().map(|m| m.id).collect::<Vec<_>>())
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.content)
        .collect();
    let expected: BTreeSet<String> = (5..9).map(|i| format!("fact number {i}")).collect();
    assert_eq!(kept, expected, "the four good ones, not the refused one");
}
on_both_engines!(concurrent_memory_commits_share_one_commit_and_fail_alone);

async fn staged_files(store: &Arc<dyn Store>, ws: WorkspaceId) -> BTreeSet<String> {
    let rows = store.list_pending_uploads(ws, now()).await.unwrap();
    rows.into_iter().map(|r| r.filename).collect()
}

/// Concurrent `stage_uploads` share one transaction; one refused call in
/// the group fails alone and leaves nothing, the others are all kept.
async fn concurrent_staging_shares_one_commit_and_fails_alone(engine: Engine) {
    let Some((store, Commits { staging, .. }, _dir)) = open_staging(engine).await else {
        return;
    };
    let ws = WorkspaceId::new();
    let two = |i: usize| -> Batch {
        let name = |j: usize| format!("{i}-{j}.txt");
        (
            ws,
            vec![
                upload(ws, &name(0), Span::hours(1)),
                upload(ws, &name(1), Span::hours(1)),
            ],
        )
    };

    // Five calls, two files each: one transaction for all of them.
    let (outcomes, transactions) =
        stage_together(&store, &staging, (0..5).map(two).collect()).await;
    assert_eq!(transactions, 1);
    let mut ids = Vec::new();
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let activities = outcome.unwrap();
        let names: Vec<_> = activities
            .iter()
            .map(|a| a.row.data.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            vec![
                json!({"f": format!("{i}-0.txt")}),
                json!({"f": format!("{i}-1.txt")})
            ]
        );
        // A call's files keep their order within the shared transaction.
        assert!(activities[0].id < activities[1].id);
        ids.extend(activities.iter().map(|a| a.id));
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 10, "ten distinct activity ids");
    let first: BTreeSet<String> = (0..5)
        .flat_map(|i| [format!("{i}-0.txt"), format!("{i}-1.txt")])
        .collect();
    assert_eq!(staged_files(&store, ws).await, first);

    // Four good calls and one whose second file reuses a stored blob key:
    // the shared try fails, then each call runs alone and only that one fails.
    let held_key = store.list_pending_uploads(ws, now()).await.unwrap()[0]
        .blob_key
        .clone();
    let mut batches: Vec<Batch> = (5..9).map(two).collect();
    let mut bad = two(9);
    bad.1[1].0.blob_key = held_key;
    batches.insert(2, bad);
    let (outcomes, transactions) = stage_together(&store, &staging, batches).await;
    assert_eq!(transactions, 1 + 5, "the shared try, then one each");
    assert_eq!(failed_at(&outcomes), vec![2]);
    let mut all = first.clone();
    all.extend((5..9).flat_map(|i| [format!("{i}-0.txt"), format!("{i}-1.txt")]));
    assert_eq!(
        staged_files(&store, ws).await,
        all,
        "nothing of the refused call, all of the others"
    );
    assert_eq!(
        activity_rows(&store, ws, 100).await.len(),
        18,
        "one activity per kept file"
    );

    // Two workspaces at once: SQLite has one writer and groups across
    // workspaces; PostgreSQL groups within a workspace only.
    let other = WorkspaceId::new();
    let batches = vec![
        (ws, vec![upload(ws, "x.txt", Span::hours(1))]),
        (other, vec![upload(other, "y.txt", Span::hours(1))]),
        (ws, vec![upload(ws, "z.txt", Span::hours(1))]),
    ];
    let (outcomes, transactions) = stage_together(&store, &staging, batches).await;
    assert!(outcomes.iter().all(|o| o.is_ok()));
    let expected = match engine {
        Engine::Sqlite => 1,
        Engine::Postgres => 2,
    };
    assert_eq!(transactions, expected);
    assert_eq!(
        staged_files(&store, other).await,
        BTreeSet::from(["y.txt".to_string()])
    );
    assert_eq!(staged_files(&store, ws).await.len(), 20);
}
on_both_engines!(concurrent_staging_shares_one_commit_and_fails_alone);

async fn fetch_and_ack_see_only_live_rows_of_their_workspace(engine: Engine) {
    let Some((store, _dir)) = open(engine).await else {
        return;
    };
    let ws = WorkspaceId::new();
    let other = WorkspaceId::new();
    let t = now();
    let mut live = upload(ws, "live.txt", Span::hours(1));
    let mut short = upload(ws, "short.txt", Span::seconds(10));
    live.0.created_at = t;
    short.0.created_at = t;
    store
        .stage_uploads(ws, vec![live.clone(), short.clone()], t)
        .await
        .unwrap();
    let (live_id, short_id) = (live.0.file_id, short.0.file_id);
    assert_eq!(
        store
            .mark_pending_upload_fetched(other, live_id, t)
            .await
            .unwrap(),
        None,
        "another workspace"
    );
    assert_eq!(
        store.ack_pending_upload(other, live_id, t).await.unwrap(),
        AckOutcome::NotFound
    );
    let later = t + Span::seconds(30);
    assert_eq!(
        store
            .mark_pending_upload_fetched(ws, short_id, later)
            .await
            .unwrap(),
        None,
        "expired by the clock"
    );
    assert_eq!(
        store.ack_pending_upload(ws, short_id, later).await.unwrap(),
        AckOutcome::NotFound
    );
    let fetched = store
        .mark_pending_upload_fetched(ws, live_id, later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (fetched.fetched_at, fetched.acked_at, fetched.size),
        (Some(later), None, 10)
    );
    let AckOutcome::Acked(acked) = store.ack_pending_upload(ws, live_id, later).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(acked.acked_at, Some(later));
    assert_eq!(
        store
            .ack_pending_upload(ws, live_id, later + Span::seconds(1))
            .await
            .unwrap(),
        AckOutcome::AlreadyAcked
    );
    assert_eq!(
        store
            .mark_pending_upload_fetched(ws, live_id, later)
            .await
            .unwrap(),
        None,
        "acked is gone"
    );
    let stats = store.upload_stats(later).await.unwrap();
    assert_eq!(
        stats,
        UploadStats {
            pending: 0,
            fetched_not_acked: 0,
            acked: 1,
            expired: 1,
            bytes_pending: 0,
            oldest_pending_at: None
        }
    );
    let stats = store.upload_stats(t).await.unwrap();
    assert_eq!(
        (stats.pending, stats.bytes_pending, stats.oldest_pending_at),
        (1, 10, Some(t))
    );
}
on_both_engines!(fetch_and_ack_see_only_live_rows_of_their_workspace);

async fn sweeps_take_what_is_due_and_record_the_activity_mark(engine: Engine) {
    let Some((store, _dir)) = open(engine).await else {
        return;
    };
    let ws = WorkspaceId::new();
    store
        .create_workspace(
            ws,
            &new_ws("a", DeliveryMode::Poll),
            AuthToken::generate().key(),
            now(),
        )
        .await
        .unwrap();
    let t = now();
    let rows: Vec<_> = (0..5)
        .map(|i| upload(ws, &format!("{i}.txt"), Span::hours(24)))
        .collect();
    store.stage_uploads(ws, rows.clone(), t).await.unwrap();
    store
        .ack_pending_upload(ws, rows[0].0.file_id, t)
        .await
        .unwrap();
    let swept = store
        .sweep_uploads(t + Span::hours(2), t + Span::hours(1), 100)
        .await
        .unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(
        (swept[0].file_id, swept[0].reason, &swept[0].blob_key),
        (rows[0].0.file_id, SweepReason::Acked, &rows[0].0.blob_key)
    );
    let swept = store
        .sweep_uploads(t + Span::hours(25), t, 3)
        .await
        .unwrap();
    assert_eq!(swept.len(), 3, "bounded batch");
    assert!(swept.iter().all(|s| s.reason == SweepReason::Expired));
    let keys: Vec<String> = rows.iter().map(|r| r.0.blob_key.clone()).collect();
    let referenced: BTreeSet<String> = store
        .referenced_blob_keys(&keys)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(referenced.len(), 1);
    // Activity: 5 upload rows; sweep 3 of them.
    let deleted = store.sweep_activity(t + Span::seconds(1), 3).await.unwrap();
    assert_eq!(deleted, 3);
    let page = store
        .list_activity(
            ws,
            &ActivityQuery {
                since_id: 1,
                activity_type: None,
                limit: 10,
                ..ActivityQuery::default()
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(page, ActivityPage::CursorExpired { .. }),
        "{page:?}"
    );
    let left = activity_rows(&store, ws, 10).await;
    assert_eq!(left.len(), 2);
    let ActivityPage::CursorExpired { swept_through } = store
        .list_activity(
            ws,
            &ActivityQuery {
                since_id: 1,
                activity_type: None,
                limit: 10,
                ..ActivityQuery::default()
            },
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(swept_through, left[0].id - 1);
}
on_both_engines!(sweeps_take_what_is_due_and_record_the_activity_mark);

async fn blob_chunks_round_trip(engine: Engine) {
    let Some((store, _dir)) = open(engine).await else {
        return;
    };
    store.put_blob_chunk("k", 0, b"hello", now()).await.unwrap();
    store.put_blob_chunk("k", 1, b"world", now()).await.unwrap();
    assert_eq!(
        store.get_blob_chunk("k", 1).await.unwrap().as_deref(),
        Some(&b"world"[..])
    );
    assert_eq!(store.get_blob_chunk("k", 2).await.unwrap(), None);
    assert_eq!(
        store
            .list_blobs()
            .await
            .unwrap()
            .iter()
            .map(|b| b.0.as_str())
            .collect::<Vec<_>>(),
        ["k"]
    );
    assert!(store.delete_blob("k").await.unwrap());
    assert!(!store.delete_blob("k").await.unwrap());
    assert!(store.list_blobs().await.unwrap().is_empty());
}
on_both_engines!(blob_chunks_round_trip);

async fn memory_vectors_are_read_by_readable_id_and_never_overwritten(engine: Engine) {
    use molecule::domain::memory::{encode_vector, Reader, Scope};
    use molecule::domain::MemoryId;
    let Some((store, _dir)) = open(engine).await else {
        return;
    };
    let (me, other) = (WorkspaceId::new(), WorkspaceId::new());
    let t = now();
    let insert = |owner: WorkspaceId, scope: Scope, model: Option<&str>, v: Option<Vec<u8>>| {
        let store = store.clone();
        let model = model.map(str::to_owned);
        async move {
            let id = MemoryId::new();
            store
                .insert_memory(&NewMemory {
                    id,
                    workspace_id: owner,
                    scope,
                    namespace: "general".into(),
                    content: "a fact".into(),
                    embedding: v,
                    embedding_model: model,
                    created_at: t,
                })
                .await
                .unwrap();
            id
        }
    };
    let v1 = encode_vector(&[1.0, 2.0]);
    let mine = insert(me, Scope::Local, Some("m"), Some(v1.clone())).await;
    let global = insert(other, Scope::Global, Some("m"), Some(v1.clone())).await;
    let others_local = insert(other, Scope::Local, Some("m"), Some(v1.clone())).await;
    let other_model = insert(me, Scope::Local, Some("n"), Some(v1.clone())).await;
    let unembedded = insert(me, Scope::Local, None, None).await;
    let filter = MemoryFilter {
        reader: Reader::Workspace {
            id: me,
            team: vec![me],
        },
        scope: None,
        namespace: None,
    };
    let ids: BTreeSet<MemoryId> = store
        .memory_vector_ids(&filter, "m")
        .await
        .unwrap()
        .into_iter()
        .collect();
    // Not another's LOCAL one, not another model's, not one without a vector.
    assert_eq!(ids, BTreeSet::from([mine, global]));
    // The vectors by id: absent ids and ids without a vector skipped.
    let mut got = store
        .memory_vectors(&[mine, unembedded, MemoryId::new(), others_local])
        .await
        .unwrap();
    got.sort();
    let mut want = vec![(mine, v1.clone()), (others_local, v1.clone())];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(store.memory_vectors(&[]).await.unwrap(), vec![]);
    // A vector is stored once: a second one is refused, the first kept.
    let v2 = encode_vector(&[3.0, 4.0]);
    assert!(store
        .set_memory_embedding(unembedded, &v2, "m")
        .await
        .unwrap());
    assert!(!store
        .set_memory_embedding(unembedded, &v1, "n")
        .await
        .unwrap());
    assert!(!store
        .set_memory_embedding(other_model, &v2, "m")
        .await
        .unwrap());
    assert!(!store
        .set_memory_embedding(MemoryId::new(), &v2, "m")
        .await
        .unwrap());
    assert_eq!(
        store
            .memory_vectors(&[unembedded, other_model])
            .await
            .unwrap()
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
        std::collections::BTreeMap::from([(unembedded, v2), (other_model, v1)])
    );
    let ids: BTreeSet<MemoryId> = store
        .memory_vector_ids(&filter, "m")
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(ids, BTreeSet::from([mine, global, unembedded]));
}
on_both_engines!(memory_vectors_are_read_by_readable_id_and_never_overwritten);

fn schedule_def(name: &str, next_run_at: chrono::DateTime<chrono::Utc>) -> ScheduleDef {
    ScheduleDef {
        name: name.into(),
        cron_expr: "*/15 * * * *".into(),
        timezone: "UTC".into(),
        prompt: "report".into(),
        enabled: true,
        overlap: molecule::domain::schedule::Overlap::AllowAll,
        catch_up_s: 3600,
        next_run_at,
    }
}

async fn schedules_keep_names_unique_and_fire_each_instant_once(engine: Engine) {
    let Some((store, _dir)) = open(engine).await else {
        return;
    };
    let t = now();
    let ws = WorkspaceId::new();
    store
        .create_workspace(
            ws,
            &new_ws("a", DeliveryMode::Poll),
            AuthToken::generate().key(),
            t,
        )
        .await
        .unwrap();
    // A due instant on the quarter hour, a little in the past.
    let due: chrono::DateTime<chrono::Utc> = "2026-01-01T10:15:00Z".parse().unwrap();
    let Saved::Saved(s) = store
        .create_schedule(ws, &schedule_def("daily", due), t)
        .await
        .unwrap()
    else {
        panic!("not saved");
    };
    assert_eq!(
        (
            s.name.as_str(),
            s.next_run_at,
            s.run_count,
            s.last_status.as_deref()
        ),
        ("daily", due, 0, None)
    );
    assert_eq!(
        store
            .create_schedule(ws, &schedule_def("daily", due), t)
            .await
            .unwrap(),
        Saved::NameTaken
    );
    let Saved::Saved(other) = store
        .create_schedule(ws, &schedule_def("other", due + Span::days(400)), t)
        .await
        .unwrap()
    else {
        panic!("not saved");
    };
    assert_eq!(
        store
            .update_schedule(ws, other.id, &schedule_def("daily", due), t)
            .await
            .unwrap(),
        Saved::NameTaken,
        "a rename onto a taken name"
    );
    assert_eq!(
        store
            .update_schedule(WorkspaceId::new(), other.id, &schedule_def("x", due), t)
            .await
            .unwrap(),
        Saved::NotFound,
        "another workspace's schedule"
    );
    assert_eq!(store.list_schedules(ws).await.unwrap().len(), 2);

    // Due at `due`, fired at due + 1 s: one fire, then nothing.
    let at = due + Span::seconds(1);
    let mut batch = store.fire_due(at, 100).await.unwrap();
    assert_eq!(
        (batch.claimed, batch.fired.len()),
        (1, 1),
        "only `daily` is due"
    );
    let fired = batch.fired.pop().unwrap();
    assert_eq!(
        (
            fired.fire.due_at,
            fired.fire.status.as_str(),
            fired.schedule.run_count
        ),
        (due, "delivered", 1)
    );
    assert_eq!(fired.schedule.next_run_at, due + Span::minutes(15));
    let (delegation, inbox) = fired.delivered.expect("delivered");
    assert_eq!(delegation.caller.to_string(), format!("schedule:{}", s.id));
    assert_eq!(fired.fire.delegation_id, Some(delegation.id));
    assert_eq!(
        (inbox.workspace_id, inbox.row.method.as_deref()),
        (ws, Some("delegate"))
    );
    assert_eq!(store.fire_due(at, 100).await.unwrap(), FireBatch::default());
    let history = store.schedule_history(s.id, 10).await.unwrap();
    assert_eq!(history.len(), 1);

    // Deleting the schedule takes its history; the ledger row stays.
    assert_eq!(
        store.delete_schedule(ws, s.id).await.unwrap().map(|d| d.id),
        Some(s.id)
    );
    assert!(store.delete_schedule(ws, s.id).await.unwrap().is_none());
    assert!(store.schedule_history(s.id, 10).await.unwrap().is_empty());
    assert!(store.get_delegation(delegation.id).await.unwrap().is_some());
}
on_both_engines!(schedules_keep_names_unique_and_fire_each_instant_once);

async fn audit_rows_chain_in_order_and_filter(engine: Engine) {
    use molecule::domain::audit::{details_hash, AuditKey};
    let Some((store, _dir)) = open(engine).await else {
        return;
    };
    let key = AuditKey::from_bytes([3; 32]);
    assert_eq!(store.audit_head().await.unwrap(), (0, "0".repeat(64)));
    let (ws, other) = (WorkspaceId::new(), WorkspaceId::new());
    let t0 = now();
    let mut rows = Vec::new();
    for (i, (actor, about)) in [
        ("operator", Some(ws)),
        ("system", None),
        ("operator", Some(other)),
    ]
    .into_iter()
    .enumerate()
    {
        let new = NewAuditEvent {
            actor: actor.to_owned(),
            action: format!("act.{i}"),
            workspace_id: about,
            target: (i == 0).then(|| "secret:A".to_owned()),
            details: format!("{{\"i\":{i}}}"),
        };
        let at = t0 + Span::seconds(i as i64);
        let row = store.append_audit(&key, &new, at).await.unwrap();
        assert_eq!(
            (row.seq, row.at, row.workspace_id),
            (i as i64 + 1, at, about)
        );
        assert_eq!(row.details, new.details, "stored byte for byte");
        assert_eq!(row.details_hash, details_hash(&new.details));
        rows.push(row);
    }
    assert_eq!(rows[0].prev_hash, "0".repeat(64));
    assert_eq!(rows[1].prev_hash, rows[0].hash);
    assert_eq!(rows[2].prev_hash, rows[1].hash);
    assert_eq!(store.audit_head().await.unwrap(), (3, rows[2].hash.clone()));
    assert_eq!(store.audit_chain_page(0, 10).await.unwrap(), rows);
    assert_eq!(store.audit_chain_page(1, 1).await.unwrap(), rows[1..2]);

    let list = |filter: AuditFilter| {
        let store = store.clone();
        async move {
            let (rows, total) = store.list_audit(&filter).await.unwrap();
            (rows.iter().map(|r| r.seq).collect::<Vec<_>>(), total)
        }
    };
    let all = AuditFilter {
        limit: 10,
        ..AuditFilter::default()
    };
    assert_eq!(list(all.clone()).await, (vec![3, 2, 1], 3));
    let paged = AuditFilter {
        limit: 1,
        offset: 1,
        ..all.clone()
    };
    assert_eq!(list(paged).await, (vec![2], 3));
    let mine = AuditFilter {
        workspace_id: Some(ws),
        ..all.clone()
    };
    assert_eq!(list(mine).await, (vec![1], 1));
    let by = AuditFilter {
        actor: Some("operator".into()),
        ..all.clone()
    };
    assert_eq!(list(by).await, (vec![3, 1], 2));
    let did = AuditFilter {
        action: Some("act.1".into()),
        ..all.clone()
    };
    assert_eq!(list(did).await, (vec![2], 1));
    let window = AuditFilter {
        from: Some(t0 + Span::seconds(1)),
        to: Some(t0 + Span::seconds(2)),
        ..all
    };
    assert_eq!(list(window).await, (vec![2], 1));
}
on_both_engines!(audit_rows_chain_in_order_and_filter);
fn priced(model: &str, input: i64, cost_micros: i64) -> UsageRecord {
    UsageRecord {
        usage: molecule::domain::usage::Usage {
            input_tokens: input,
            output_tokens: 1,
            model: model.into(),
            cost_micros: None,
        },
        cost_micros,
    }
}

async fn usage_sums_by_day_and_budgets_cover_the_subtree(engine: Engine) {
    let Some((store, _dir)) = open(engine).await else {
        return;
    };
    let march: chrono::DateTime<chrono::Utc> = "2026-03-15T12:00:00Z".parse().unwrap();
    let feb: chrono::DateTime<chrono::Utc> = "2026-02-28T23:59:59Z".parse().unwrap();
    let mk = |name: &'static str, parent: Option<WorkspaceId>| {
        let store = store.clone();
        async move {
            let id = WorkspaceId::new();
            let mut new = new_ws(name, DeliveryMode::Poll);
            new.parent_id = parent;
            store
                .create_workspace(id, &new, AuthToken::generate().key(), march)
                .await
                .unwrap();
            id
        }
    };
    let root = mk("root", None).await;
    let mid = mk("mid", Some(root)).await;
    let leaf = mk("leaf", Some(mid)).await;

    // Two reports of one model on one day are one row; February is apart.
    store
        .record_usage(leaf, &priced("m1", 10, 1_000_000), march)
        .await
        .unwrap();
    store
        .record_usage(leaf, &priced("m1", 5, 5_000), march)
        .await
        .unwrap();
    store
        .record_usage(leaf, &priced("m2", 1, 0), march)
        .await
        .unwrap();
    store
        .record_usage(leaf, &priced("m1", 100, 9_000_000), feb)
        .await
        .unwrap();
    let by_model = store
        .workspace_usage(leaf, "2026-03-01", "2026-03-31", UsageGroup::Model)
        .await
        .unwrap();
    let row = |key: &str, input, output, calls, cost| UsageTotals {
        key: key.into(),
        input_tokens: input,
        output_tokens: output,
        calls,
        cost_micros: cost,
    };
    assert_eq!(
        by_model,
        vec![row("m1", 15, 2, 2, 1_005_000), row("m2", 1, 1, 1, 0)]
    );
    let by_day = store
        .workspace_usage(leaf, "2026-02-01", "2026-03-31", UsageGroup::Day)
        .await
        .unwrap();
    assert_eq!(
        by_day,
        vec![
            row("2026-02-28", 100, 1, 1, 9_000_000),
            row("2026-03-15", 16, 3, 3, 1_005_000)
        ]
    );
    let teams = store
        .fleet_usage("2026-03-01", "2026-03-31", FleetGroup::Team)
        .await
        .unwrap();
    assert_eq!(teams, vec![row(&root.to_string(), 16, 3, 3, 1_005_000)]);
    // A subtree's sums: the root's cover the mid's (in February, so this
    // month's spend below stays the leaf's) and the leaf's; the leaf's
    // leave its parent's out.
    store
        .record_usage(mid, &priced("m2", 4, 2_000), feb)
        .await
        .unwrap();
    let sub_model = store
        .subtree_usage(root, "2026-02-01", "2026-03-31", UsageGroup::Model)
        .await
        .unwrap();
    assert_eq!(
        sub_model,
        vec![row("m1", 115, 3, 3, 10_005_000), row("m2", 5, 2, 2, 2_000)]
    );
    let sub_day = store
        .subtree_usage(root, "2026-02-01", "2026-03-31", UsageGroup::Day)
        .await
        .unwrap();
    assert_eq!(
        sub_day,
        vec![
            row("2026-02-28", 104, 2, 2, 9_002_000),
            row("2026-03-15", 16, 3, 3, 1_005_000)
        ]
    );
    let leaf_only = store
        .subtree_usage(leaf, "2026-02-01", "2026-03-31", UsageGroup::Day)
        .await
        .unwrap();
    assert_eq!(leaf_only, by_day);

    // Spend in cents, rounded up; a heartbeat figure of another month is ignored.
    store.report_monthly_spend(mid, 9_999, feb).await.unwrap();
    assert_eq!(
        store.budget(root, march).await.unwrap(),
        Budget {
            limit: None,
            spend: 101
        }
    );
    store.report_monthly_spend(mid, 50, march).await.unwrap();
    assert_eq!(store.budget(mid, march).await.unwrap().spend, 151);
    assert_eq!(store.budget(leaf, march).await.unwrap().spend, 101);

    // A ceiling on the root covers the leaf.
    assert!(store.budget_lines(leaf, march).await.unwrap().is_empty());
    store.set_budget_limit(root, Some(200)).await.unwrap();
    let lines = store.budget_lines(leaf, march).await.unwrap();
    assert_eq!(
        lines,
        vec![BudgetLine {
            owner: root,
            limit: 200,
            spend: 151,
            warned_month: None
        }]
    );
    assert_eq!(store.budget_refusal(leaf, march).await.unwrap(), None);
    store.set_budget_limit(root, Some(151)).await.unwrap();
    let why = store.budget_refusal(leaf, march).await.unwrap().unwrap();
    assert!(why.starts_with("budget exceeded:"), "{why}");
    assert!(store.budget_refusal(root, march).await.unwrap().is_some());

    // The warning is raised once a month; a new ceiling re-arms it.
    assert!(store.mark_budget_warned(root, march).await.unwrap());
    assert!(!store.mark_budget_warned(root, march).await.unwrap());
    store.set_budget_limit(root, None).await.unwrap();
    assert!(store.budget_lines(leaf, march).await.unwrap().is_empty());
    assert_eq!(store.budget_refusal(leaf, march).await.unwrap(), None);
    assert!(store.mark_budget_warned(root, march).await.unwrap());
}
on_both_engines!(usage_sums_by_day_and_budgets_cover_the_subtree);

async fn a_caller_cancels_only_its_own_delegation_in_flight_once(engine: Engine) {
    let Some((store, _dir)) = open(engine).await else {
        return;
    };
    let t = now();
    let [a, b, c] = [WorkspaceId::new(), WorkspaceId::new(), WorkspaceId::new()];
    for (id, name) in [(a, "a"), (b, "b"), (c, "c")] {
        store
            .create_workspace(
                id,
                &new_ws(name, DeliveryMode::Poll),
                AuthToken::generate().key(),
                t,
            )
            .await
            .unwrap();
    }
    let new = NewDelegation {
        id: molecule::domain::DelegationId::new(),
        caller: molecule::domain::Caller::Workspace(a),
        callee_id: b,
        task: "index the wiki".into(),
        idempotency_key: "k".into(),
        deadline_at: None,
        trace: molecule::domain::Hop::open(None),
    };
    let inbox = NewActivity {
        activity_type: "a2a_receive".into(),
        method: Some("delegate".into()),
        ..Default::default()
    };
    store.create_delegation(&new, &inbox, t).await.unwrap();
    let notice = NewActivity {
        activity_type: "a2a_receive".into(),
        method: Some("task_canceled".into()),
        ..Default::default()
    };

    // Another workspace (even the callee) cannot cancel it: nothing written.
    for other in [b, c] {
        let out = store
            .cancel_caller_delegation(other, new.id, &notice, t)
            .await
            .unwrap();
        assert_eq!(out, CallerCanceled::NotFound, "as {other}");
    }
    assert_eq!(activity_rows(&store, b, 10).await.len(), 1);

    let out = store
        .cancel_caller_delegation(a, new.id, &notice, t)
        .await
        .unwrap();
    let CallerCanceled::Applied {
        moved,
        notice: told,
    } = out
    else {
        panic!("applied: {out:?}")
    };
    assert_eq!(moved.from, molecule::domain::DelegationStatus::Queued);
    assert_eq!(
        moved.delegation.status,
        molecule::domain::DelegationStatus::Failed
    );
    assert_eq!(
        moved.delegation.error_detail.as_deref(),
        Some(CANCELED_BY_CALLER)
    );
    assert_eq!(moved.delegation.completed_at, Some(t));
    assert_eq!(told.workspace_id, b);
    assert_eq!(told.row.method.as_deref(), Some("task_canceled"));
    assert!(moved.result_row.is_some(), "the caller's result row");

    // Twice: over already, nothing more written.
    let out = store
        .cancel_caller_delegation(a, new.id, &notice, t)
        .await
        .unwrap();
    assert!(
        matches!(out, CallerCanceled::Over(ref d) if d.id == new.id),
        "{out:?}"
    );
    assert_eq!(activity_rows(&store, b, 10).await.len(), 2);
}
on_both_engines!(a_caller_cancels_only_its_own_delegation_in_flight_once);

async fn ancestor_chains_are_read_parent_first_and_bounded(engine: Engine) {
    let Some((store, _dir)) = open(engine).await else {
        return;
    };
    let t = now();
    let mut chain: Vec<WorkspaceId> = Vec::new();
    for level in 0..35 {
        let id = WorkspaceId::new();
        let mut new = new_ws(&format!("level-{level}"), DeliveryMode::Poll);
        new.parent_id = chain.last().copied();
        store
            .create_workspace(id, &new, AuthToken::generate().key(), t)
            .await
            .unwrap();
        chain.push(id);
    }
    assert_eq!(store.ancestor_chain(chain[0]).await.unwrap(), vec![]);
    let want: Vec<WorkspaceId> = chain[..3].iter().rev().copied().collect();
    assert_eq!(store.ancestor_chain(chain[3]).await.unwrap(), want);
    // 34 levels deep: only the nearest 32 ancestors.
    let want: Vec<WorkspaceId> = chain[2..34].iter().rev().copied().collect();
    assert_eq!(store.ancestor_chain(chain[34]).await.unwrap(), want);
    assert_eq!(
        store.ancestor_chain(WorkspaceId::new()).await.unwrap(),
        vec![]
    );
}
on_both_engines!(ancestor_chains_are_read_parent_first_and_bounded);

/// `known_token` finds a token by its hash whatever its state (live,
/// revoked, expired; a workspace's or an operator's), with its id, name
/// and workspace; a hash no token ever had is `None`.
async fn known_tokens_are_found_in_every_state(engine: Engine) {
    let Some((store, _dir)) = open(engine).await else {
        return;
    };
    let t = now();
    let id = WorkspaceId::new();
    let first = AuthToken::generate();
    store
        .create_workspace(id, &new_ws("keys", DeliveryMode::Poll), first.key(), t)
        .await
        .unwrap();
    let named = AuthToken::generate();
    let expires_at = t + Span::seconds(5);
    let MintOutcome::Minted(named_id) = store
        .mint_token(
            id,
            NewToken {
                key: named.key(),
                name: Some("laptop".into()),
                expires_at: Some(expires_at),
            },
            50,
            t,
        )
        .await
        .unwrap()
    else {
        panic!("minted");
    };
    assert!(store.revoke_token(id, named_id, t).await.unwrap());
    let operator = AuthToken::generate();
    let row = store
        .mint_operator_token(
            NewToken {
                key: operator.key(),
                name: None,
                expires_at: None,
            },
            molecule::domain::Role::Viewer,
            None,
            t,
        )
        .await
        .unwrap()
        .unwrap();

    assert_eq!(
        store.known_token(named.hash()).await.unwrap(),
        Some(KnownToken {
            id: named_id,
            name: Some("laptop".into()),
            workspace_id: Some(id),
            revoked_at: Some(t),
            expires_at: Some(expires_at),
        })
    );
    assert_eq!(
        store.known_token(operator.hash()).await.unwrap(),
        Some(KnownToken {
            id: row.token.id,
            name: None,
            workspace_id: None,
            revoked_at: None,
            expires_at: None,
        })
    );
    let live = store.known_token(first.hash()).await.unwrap().unwrap();
    assert_eq!(
        (live.workspace_id, live.revoked_at),
        (Some(id), None),
        "a live token is known too"
    );
    assert_eq!(
        store
            .known_token(AuthToken::generate().hash())
            .await
            .unwrap(),
        None
    );
}
on_both_engines!(known_tokens_are_found_in_every_state);
