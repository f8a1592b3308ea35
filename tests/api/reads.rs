//! Read state kept by the server (issue 30, defect 10): per reader (the
//! admin token, each operator token), unread counts from it, "mark all
//! read", bad input changing nothing, and the fleet stream telling the
//! reader's other pages.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::delegations::EventStream;
use crate::helpers::{Engine, TestApp, Ws};
use crate::on_both_engines;

impl TestApp {
    async fn put_read(&self, ws: &str, token: &str, body: &Value) -> (StatusCode, Value) {
        Self::json(
            self.client
                .put(self.url(&format!("/workspaces/{ws}/read-state")))
                .bearer_auth(token)
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// The agent says `text` to the operator (an unread message).
    async fn agent_says(&self, ws: &Ws, text: &str) {
        let (status, body) = self
            .post(
                &format!("/workspaces/{}/notify", ws.id),
                &ws.token,
                &json!({ "message": text }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// `(last_read_id, newest_id, unread)` of every workspace for `token`,
    /// in the order of `order`.
    async fn positions(&self, token: &str, order: &[&Ws]) -> Vec<(i64, i64, i64)> {
        let (status, rows) = self.get("/admin/read-state", token).await;
        assert_eq!(status, StatusCode::OK, "{rows}");
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), order.len(), "{rows:?}");
        order
            .iter()
            .map(|ws| {
                let row = rows.iter().find(|r| r["workspace_id"] == ws.id.as_str());
                let row = row.expect("every live workspace has a row");
                (
                    row["last_read_id"].as_i64().unwrap(),
                    row["newest_id"].as_i64().unwrap(),
                    row["unread"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    async fn newest_id(&self, ws: &Ws) -> i64 {
        let (_, rows) = self
            .get(
                &format!("/workspaces/{}/activity?limit=500", ws.id),
                &self.admin_token,
            )
            .await;
        rows.as_array().unwrap().last().unwrap()["id"]
            .as_i64()
            .unwrap()
    }
}

/// Unread counts come from the server's read positions, one set per
/// reader: a viewer token reading a chat marks it read for itself only;
/// a position only moves forward; "mark all read" moves every chat of the
/// caller to its newest row, and only the caller's.
async fn read_state_is_kept_per_reader_on_the_server(engine: Engine) {
    let Some(app) = crate::helpers::spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    app.agent_says(&a, "one").await;
    app.agent_says(&a, "two").await;
    app.agent_says(&b, "three").await;
    // The operator's own message is no unread message.
    let (status, _) = app.send_text(&a.id, "from me").await;
    assert!(status.is_success());
    let (a_new, b_new) = (app.newest_id(&a).await, app.newest_id(&b).await);
    let (status, viewer) = app
        .post("/org/tokens", &app.admin_token, &json!({"role": "viewer"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{viewer}");
    let viewer = viewer["auth_token"].as_str().unwrap().to_owned();
    let order = [&a, &b];
    let fresh = vec![(0, a_new, 2), (0, b_new, 1)];
    assert_eq!(app.positions(&app.admin_token, &order).await, fresh);
    assert_eq!(app.positions(&viewer, &order).await, fresh);

    // The viewer reads a's chat: its own position moves, the admin's not.
    let (status, body) = app
        .put_read(&a.id, &viewer, &json!({"last_read_id": a_new}))
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"workspace_id": a.id, "last_read_id": a_new, "newest_id": a_new, "unread": 0})
        )
    );
    assert_eq!(
        app.positions(&viewer, &order).await,
        vec![(a_new, a_new, 0), (0, b_new, 1)]
    );
    assert_eq!(app.positions(&app.admin_token, &order).await, fresh);

    // Never back: a lower id leaves the position where it is.
    let (status, body) = app
        .put_read(&a.id, &viewer, &json!({"last_read_id": 1}))
        .await;
    assert_eq!(
        (status, body["last_read_id"].clone()),
        (StatusCode::OK, json!(a_new))
    );

    // Bad input: the right status, and no reader's position moved.
    let unknown = uuid::Uuid::new_v4().to_string();
    for (ws, token, body, want, error) in [
        (
            &a.id,
            &viewer,
            json!({"last_read_id": -1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("last_read_id must be 0 or more, not -1".to_owned()),
        ),
        (
            &b.id,
            &viewer,
            json!({"last_read_id": b_new + 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(format!(
                "last_read_id {} is past the workspace's newest activity row ({b_new})",
                b_new + 1
            )),
        ),
        (
            &b.id,
            &viewer,
            json!({"last_read_id": "all"}),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            &b.id,
            &viewer,
            json!({"last_read_id": 1, "reader": "admin"}),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (&b.id, &viewer, json!({}), StatusCode::BAD_REQUEST, None),
        (
            &b.id,
            &b.token,
            json!({"last_read_id": b_new}),
            StatusCode::FORBIDDEN,
            None,
        ),
        (
            &"nope".to_owned(),
            &viewer,
            json!({"last_read_id": 0}),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            &unknown,
            &viewer,
            json!({"last_read_id": 0}),
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            &b.id,
            &"mol_unknown".to_owned(),
            json!({"last_read_id": b_new}),
            StatusCode::UNAUTHORIZED,
            None,
        ),
    ] {
        let (status, answer) = app.put_read(ws, token, &body).await;
        assert_eq!(status, want, "{body} by {token}: {answer}");
        assert!(answer["error"].is_string(), "{body}: {answer}");
        if let Some(error) = error {
            assert_eq!(answer["error"], error.as_str(), "{body}");
        }
    }
    assert_eq!(
        app.positions(&viewer, &order).await,
        vec![(a_new, a_new, 0), (0, b_new, 1)]
    );
    assert_eq!(app.positions(&app.admin_token, &order).await, fresh);
    // A workspace keeps no read state.
    for (method, path) in [
        (reqwest::Method::GET, "/admin/read-state"),
        (reqwest::Method::POST, "/admin/read-state/mark-all"),
    ] {
        let resp = app
            .client
            .request(method, app.url(path))
            .bearer_auth(&a.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(app.positions(&app.admin_token, &order).await, fresh);

    // Mark all read: every chat of the admin, none of the viewer's.
    let (status, rows) = app
        .post("/admin/read-state/mark-all", &app.admin_token, &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert_eq!(rows.as_array().unwrap().len(), 2);
    let all_read = vec![(a_new, a_new, 0), (b_new, b_new, 0)];
    assert_eq!(app.positions(&app.admin_token, &order).await, all_read);
    assert_eq!(
        app.positions(&viewer, &order).await,
        vec![(a_new, a_new, 0), (0, b_new, 1)]
    );

    // What the agent says next is unread again, for both readers.
    app.agent_says(&b, "four").await;
    let b_next = app.newest_id(&b).await;
    assert_eq!(
        app.positions(&app.admin_token, &order).await,
        vec![(a_new, a_new, 0), (b_new, b_next, 1)]
    );
    assert_eq!(
        app.positions(&viewer, &order).await,
        vec![(a_new, a_new, 0), (0, b_next, 2)]
    );
}
on_both_engines!(read_state_is_kept_per_reader_on_the_server);

/// The fleet stream tells a reader's pages when its own positions moved
/// (`event: read`), and not when another reader's did.
async fn the_fleet_stream_announces_only_the_callers_reads(engine: Engine) {
    let Some(app) = crate::helpers::spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    app.agent_says(&a, "hello").await;
    let first = app.newest_id(&a).await;
    let (status, viewer) = app
        .post("/org/tokens", &app.admin_token, &json!({"role": "viewer"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{viewer}");
    let viewer = viewer["auth_token"].as_str().unwrap().to_owned();
    let mut admin_feed = EventStream::open(&app, "/admin/activity/events", &app.admin_token).await;
    let mut viewer_feed = EventStream::open(&app, "/admin/activity/events", &viewer).await;

    // The viewer reads, then the agent speaks, then the admin reads.
    let (status, _) = app
        .put_read(&a.id, &viewer, &json!({"last_read_id": first}))
        .await;
    assert_eq!(status, StatusCode::OK);
    app.agent_says(&a, "again").await;
    let second = app.newest_id(&a).await;
    let (status, _) = app
        .put_read(&a.id, &app.admin_token, &json!({"last_read_id": second}))
        .await;
    assert_eq!(status, StatusCode::OK);

    let activity = (
        "activity".to_owned(),
        json!({"workspace_id": a.id, "id": second}),
    );
    let read = ("read".to_owned(), json!({}));
    // In bus order: the viewer's read never reaches the admin's page.
    assert_eq!(
        vec![admin_feed.next().await, admin_feed.next().await],
        vec![activity.clone(), read.clone()]
    );
    assert_eq!(
        vec![viewer_feed.next().await, viewer_feed.next().await],
        vec![read, activity]
    );
}
on_both_engines!(the_fleet_stream_announces_only_the_callers_reads);
