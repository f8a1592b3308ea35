//! The hand-off: ranges, idempotent acks, expiry by the clock, and the
//! single 404 an attacker sees for every file that is not theirs to read.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    eventually, file, random_bytes, spawn_app, spawn_app_with, Engine, Options, TestApp, Ws,
};
use crate::on_both_engines;

async fn stage_one(app: &TestApp, ws: &Ws, bytes: Vec<u8>) -> String {
    app.stage(ws, file("f.bin", "application/octet-stream", bytes))
        .await
}

async fn range_requests_answer_206_with_the_slice(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let bytes = random_bytes(100_000, 11);
    let fid = stage_one(&app, &ws, bytes.clone()).await;
    let url = app.url(&format!(
        "/workspaces/{}/pending-uploads/{fid}/content",
        ws.id
    ));
    let cases = [
        ("bytes=10-19", 10usize, 20usize),
        ("bytes=99990-", 99_990, 100_000),
        ("bytes=-5", 99_995, 100_000),
        ("bytes=0-999999", 0, 100_000),
    ];
    for (range, start, end) in cases {
        let resp = app
            .client
            .get(&url)
            .bearer_auth(&ws.token)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "case {range}");
        assert_eq!(
            resp.headers()["content-range"].to_str().unwrap(),
            format!("bytes {start}-{}/100000", end - 1),
            "case {range}"
        );
        assert_eq!(
            resp.headers()["content-length"].to_str().unwrap(),
            (end - start).to_string(),
            "case {range}"
        );
        assert_eq!(
            &resp.bytes().await.unwrap()[..],
            &bytes[start..end],
            "case {range}"
        );
    }
    let resp = app
        .client
        .get(&url)
        .bearer_auth(&ws.token)
        .header("range", "bytes=200000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(resp.headers()["content-range"], "bytes */100000");
    // An unparseable Range is ignored: the whole file.
    let resp = app
        .client
        .get(&url)
        .bearer_auth(&ws.token)
        .header("range", "pages=1-2")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().len(), 100_000);
}
on_both_engines!(range_requests_answer_206_with_the_slice);

async fn ack_is_idempotent_and_final(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let fid = stage_one(&app, &ws, b"abc".to_vec()).await;
    assert_eq!(
        app.ack(&ws.id, &fid, &ws.token).await,
        (StatusCode::OK, json!({"acked": true}))
    );
    let first = app
        .store
        .upload_stats(molecule::domain::now())
        .await
        .unwrap();
    assert_eq!((first.pending, first.acked), (0, 1));
    assert_eq!(
        app.ack(&ws.id, &fid, &ws.token).await,
        (StatusCode::OK, json!({"acked": true}))
    );
    assert_eq!(
        app.metric("molecule_pending_uploads_acked_total").await,
        1.0,
        "a retry is not a second delivery"
    );
    assert_eq!(
        app.metric("molecule_pending_uploads_delivery_seconds_count")
            .await,
        1.0
    );
    // The operator may read but not ack on the workspace's behalf.
    let (status, _) = app.ack(&ws.id, &fid, &app.admin_token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
on_both_engines!(ack_is_idempotent_and_final);

async fn an_attacker_sees_the_same_404_for_every_file_not_theirs(engine: Engine) {
    let Some(app) =
        spawn_app_with(Options::new(engine).tweak(|c| c.upload_ttl = Duration::from_millis(1500)))
            .await
    else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let b_secret = b"b's secret bytes".to_vec();
    let b_file = stage_one(&app, &b, b_secret.clone()).await;
    let a_acked = stage_one(&app, &a, b"acked".to_vec()).await;
    assert_eq!(app.ack(&a.id, &a_acked, &a.token).await.0, StatusCode::OK);
    let a_expiring = stage_one(&app, &a, b"expiring".to_vec()).await;
    let not_found =
        json!({"error": "file not found: it does not exist, was already delivered, or expired"});
    let random = uuid::Uuid::new_v4().to_string();
    let probe = |case: &'static str, fid: String, try_ack: bool| {
        let (app, a, not_found) = (&app, &a, not_found.clone());
        async move {
            for token in [&a.token, &app.admin_token] {
                let resp = app.content(&a.id, &fid, token).await;
                assert_eq!(
                    TestApp::json(resp).await,
                    (StatusCode::NOT_FOUND, not_found.clone()),
                    "content: {case}"
                );
            }
            if try_ack {
                assert_eq!(
                    app.ack(&a.id, &fid, &a.token).await,
                    (StatusCode::NOT_FOUND, not_found),
                    "ack: {case}"
                );
            }
        }
    };
    // While B's file is live: under A's path it does not exist for A.
    probe("B's live file under A's path", b_file.clone(), true).await;
    probe("an acked file", a_acked.clone(), false).await;
    probe("a random id", random, true).await;
    eventually("the files are past their deadline", || async {
        app.list_pending(&a).await.is_empty()
    })
    .await;
    // Expiry is the clock's, not the sweeper's: the rows are still there.
    let stats = app
        .store
        .upload_stats(molecule::domain::now())
        .await
        .unwrap();
    assert_eq!((stats.expired, stats.acked), (2, 1), "{stats:?}");
    probe("an expired file", a_expiring, true).await;
    // A's token on B's path is refused before any lookup.
    let resp = app.content(&b.id, &b_file, &a.token).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.ack(&b.id, &b_file, &a.token).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = app
        .get(&format!("/workspaces/{}/pending-uploads", b.id), &a.token)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Malformed ids.
    let resp = app.content(&a.id, "../../etc/passwd", &a.token).await;
    assert_eq!(
        resp.status(),
        StatusCode::NOT_FOUND,
        "an extra path segment matches no route"
    );
    let resp = app.content(&a.id, "not-a-uuid", &a.token).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // B's file was never read by anyone: its fetched_at is unset.
    let rows = app
        .store
        .list_pending_uploads(
            b.wid(),
            molecule::domain::now() - chrono::Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].fetched_at, None);
    assert_eq!(rows[0].size as usize, b_secret.len());
}
on_both_engines!(an_attacker_sees_the_same_404_for_every_file_not_theirs);

async fn the_operator_can_read_without_counting_as_a_fetch_and_list_every_state(engine: Engine) {
    let Some(app) =
        spawn_app_with(Options::new(engine).tweak(|c| c.upload_ttl = Duration::from_millis(1500)))
            .await
    else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let acked = stage_one(&app, &ws, b"one".to_vec()).await;
    let expiring = stage_one(&app, &ws, b"two".to_vec()).await;
    // The operator reads a staged file: bytes, but no fetched_at, metric or event.
    let resp = app.content(&ws.id, &acked, &app.admin_token).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(&resp.bytes().await.unwrap()[..], b"one");
    let listed = app.list_pending(&ws).await;
    assert!(
        listed
            .iter()
            .all(|e| e["fetched_at"].is_null() && e["state"] == "staged"),
        "{listed:?}"
    );
    assert_eq!(
        app.metric("molecule_pending_uploads_fetched_total").await,
        0.0
    );
    // The workspace's own read does count.
    assert_eq!(
        app.content(&ws.id, &acked, &ws.token).await.status(),
        StatusCode::OK
    );
    let listed = app.list_pending(&ws).await;
    assert_eq!(listed[0]["state"], "fetched");
    assert_eq!(
        app.metric("molecule_pending_uploads_fetched_total").await,
        1.0
    );
    assert_eq!(app.ack(&ws.id, &acked, &ws.token).await.0, StatusCode::OK);
    eventually("the second file expires", || async {
        app.list_pending(&ws).await.is_empty()
    })
    .await;
    let (status, all) = app
        .get(
            &format!("/workspaces/{}/pending-uploads?include=all", ws.id),
            &app.admin_token,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let states: Vec<(&str, &str)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["file_id"].as_str().unwrap(), e["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        vec![(acked.as_str(), "acked"), (expiring.as_str(), "expired")]
    );
    assert!(all[0]["acked_at"].is_string());
    let (status, body) = app
        .get(
            &format!("/workspaces/{}/pending-uploads?include=some", ws.id),
            &app.admin_token,
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "`include` may only be \"all\", not \"some\""})
        )
    );
}
on_both_engines!(the_operator_can_read_without_counting_as_a_fetch_and_list_every_state);
