//! The `Store` contract: one suite, run against SQLite and PostgreSQL.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Duration as Span;
use molecule::domain::{now, AuthToken, DeliveryMode, FileId, HeartbeatReport, Tier, WorkspaceId};
use molecule::store::*;
use serde_json::json;

use crate::helpers::{fresh_postgres_url, revoke_tokens_directly, Engine};
use crate::on_both_engines;

async fn open(engine: Engine) -> Option<(Arc<dyn Store>, tempfile::TempDir)> {
    open_with_url(engine).await.map(|(s, d, _)| (s, d))
}

async fn open_with_url(engine: Engine) -> Option<(Arc<dyn Store>, tempfile::TempDir, String)> {
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

fn new_ws(name: &str, mode: DeliveryMode) -> NewWorkspace {
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

async fn workspaces_and_tokens(engine: Engine) {
    let Some((store, _dir)) = open(engine).await else {
        return;
    };
    let t = now();
    let id = WorkspaceId::new();
    let first = AuthToken::generate();
    let w = store
        .create_workspace(id, &new_ws("a", DeliveryMode::Poll), first.hash(), t)
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
        store.workspace_for_token(first.hash()).await.unwrap(),
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
    assert!(store.rotate_token(id, second.hash(), t).await.unwrap());
    assert_eq!(store.workspace_for_token(first.hash()).await.unwrap(), None);
    assert_eq!(
        store.workspace_for_token(second.hash()).await.unwrap(),
        Some(id)
    );
    assert!(!store
        .rotate_token(WorkspaceId::new(), AuthToken::generate().hash(), t)
        .await
        .unwrap());
    // Registration with a mint is refused while a live token exists.
    let reg = store
        .register_workspace(
            id,
            &UpdateWorkspace::default(),
            Some(AuthToken::generate().hash()),
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
        Removal::Removed(vec![(id, None)])
    );
    assert_eq!(
        store.remove_workspace(id, false, t).await.unwrap(),
        Removal::NotFound
    );
    assert_eq!(
        store.workspace_for_token(second.hash()).await.unwrap(),
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
            AuthToken::generate().hash(),
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
                    .register_workspace(id, &UpdateWorkspace::default(), Some(token.hash()), now())
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
        store.workspace_for_token(minted[0].hash()).await.unwrap(),
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
        .stage_uploads(ws, &[good.clone(), clash], now())
        .await
        .is_err());
    assert!(store
        .list_pending_uploads(ws, now())
        .await
        .unwrap()
        .is_empty());
    let ActivityPage::Rows(rows) = store
        .list_activity(
            ws,
            &ActivityQuery {
                since_id: 0,
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
    assert!(rows.is_empty(), "no activity either");
    let mut too_big = upload(ws, "c.txt", Span::hours(24));
    too_big.0.size = 26_214_401;
    assert!(
        store.stage_uploads(ws, &[too_big], now()).await.is_err(),
        "the 25 MiB CHECK"
    );
    let activities = store
        .stage_uploads(ws, std::slice::from_ref(&good), now())
        .await
        .unwrap();
    assert_eq!(activities.len(), 1);
    assert_eq!(activities[0].row, good.1);
}
on_both_engines!(staging_is_one_transaction);

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
        .stage_uploads(ws, &[live.clone(), short.clone()], t)
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
            AuthToken::generate().hash(),
            now(),
        )
        .await
        .unwrap();
    let t = now();
    let rows: Vec<_> = (0..5)
        .map(|i| upload(ws, &format!("{i}.txt"), Span::hours(24)))
        .collect();
    store.stage_uploads(ws, &rows, t).await.unwrap();
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
    let ActivityPage::Rows(left) = store
        .list_activity(
            ws,
            &ActivityQuery {
                since_id: 0,
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
