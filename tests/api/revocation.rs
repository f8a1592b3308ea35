//! Revoking a token ends every response held open with it, at once and on
//! every replica: an operator token's event streams (the fleet-wide
//! delegation and approval feeds, a workspace's feed) and a workspace
//! token's legacy MCP session. Streams of the other tokens stay open.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{eventually, spawn_app, Engine};
use crate::on_both_engines;

/// An open Server-Sent Events response and what was read of it.
pub(crate) struct Held {
    what: String,
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buffer: String,
}

/// How long a stream may take to end once its token is revoked: the
/// revocation travels as one bus event (a `NOTIFY` between replicas).
const PROMPTLY: Duration = Duration::from_secs(10);

impl Held {
    /// Opens `url` with `token`; the answer must be a 200 event stream.
    pub(crate) async fn open(client: &reqwest::Client, url: String, token: &str) -> Held {
        let resp = client.get(&url).bearer_auth(token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{url}");
        assert_eq!(resp.headers()["content-type"], "text/event-stream", "{url}");
        Held {
            what: url,
            body: Box::pin(resp.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The data of the next `event: name` block, within [`PROMPTLY`].
    pub(crate) async fn next(&mut self, name: &str) -> String {
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        let line = format!("event: {name}");
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if block.lines().any(|l| l == line) {
                    return block
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .unwrap_or_default()
                        .to_owned();
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .unwrap_or_else(|_| panic!("no `{line}` on {} in time", self.what))
                .unwrap_or_else(|| panic!("{} ended before `{line}`", self.what))
                .unwrap();
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads the stream to its end, which must come within [`PROMPTLY`]
    /// (keep-alive comments and events may come before it).
    pub(crate) async fn ends(mut self) {
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        loop {
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => panic!("{} is still open after the revocation", self.what),
                Ok(None) => return,
                // A body cut while in flight also ends it.
                Ok(Some(Err(_))) => return,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// The `initialize` request of a raw MCP client.
fn initialize(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2024-11-05", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}}})
}

/// Posts `message` to a legacy MCP session's path; the status.
pub(crate) async fn post_mcp(
    client: &reqwest::Client,
    url: String,
    token: &str,
    message: &Value,
) -> StatusCode {
    client
        .post(url)
        .bearer_auth(token)
        .json(message)
        .send()
        .await
        .unwrap()
        .status()
}

/// A viewer's three event streams (the delegation and approval feeds and
/// a workspace's feed) and a second workspace token's legacy MCP session
/// all end once their token is revoked; the admin's streams and the first
/// workspace token's session stay open and go on carrying events; the
/// revoked session's message path is gone (404).
async fn revoking_a_token_ends_the_streams_held_with_it(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("watched").await;
    let (status, viewer) = app
        .post("/org/tokens", &app.admin_token, &json!({"role": "viewer"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{viewer}");
    let tokens = format!("/workspaces/{}/tokens", ws.id);
    let (status, second) = app.post(&tokens, &app.admin_token, &json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let feeds = [
        "/admin/delegations/events".to_owned(),
        "/approvals/events".to_owned(),
        format!("/workspaces/{}/events", ws.id),
    ];
    let open_all = |token: String| {
        let app = &app;
        let feeds = feeds.clone();
        async move {
            let mut held = Vec::new();
            for feed in feeds {
                held.push(Held::open(&app.client, app.url(&feed), &token).await);
            }
            held
        }
    };
    let by_viewer = open_all(viewer["auth_token"].as_str().unwrap().to_owned()).await;
    let mut by_admin = open_all(app.admin_token.clone()).await;
    let mcp = app.url(&format!("/workspaces/{}/mcp/stream", ws.id));
    let second_token = second["auth_token"].as_str().unwrap().to_owned();
    let mut by_second = Held::open(&app.client, mcp.clone(), &second_token).await;
    let second_path = by_second.next("endpoint").await;
    let mut by_first = Held::open(&app.client, mcp, &ws.token).await;
    let first_path = by_first.next("endpoint").await;

    let (status, _) = app
        .delete_as(
            &format!("/org/tokens/{}", viewer["id"].as_str().unwrap()),
            &app.admin_token,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for held in by_viewer {
        held.ends().await;
    }
    let (status, _) = app
        .delete_as(
            &format!("{tokens}/{}", second["id"].as_str().unwrap()),
            &app.admin_token,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    by_second.ends().await;
    // Its session is gone with its stream, for any token of the workspace.
    let url = app.url(&second_path);
    eventually("the revoked session's path answers 404", || {
        let (client, url, token) = (app.client.clone(), url.clone(), ws.token.clone());
        async move { post_mcp(&client, url, &token, &initialize(1)).await == StatusCode::NOT_FOUND }
    })
    .await;

    // What the other tokens hold carries on.
    let status = post_mcp(&app.client, app.url(&first_path), &ws.token, &initialize(7)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let answer: Value = serde_json::from_str(&by_first.next("message").await).unwrap();
    assert_eq!(answer["id"], 7, "{answer}");
    let (status, asked) = app
        .post(
            &format!("/workspaces/{}/approvals", ws.id),
            &ws.token,
            &json!({"action": "deploy"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{asked}");
    let moved: Value = serde_json::from_str(&by_admin[1].next("approval").await).unwrap();
    assert_eq!(moved["approval_id"], asked["approval_id"], "{moved}");
    let moved: Value = serde_json::from_str(&by_admin[2].next("approval").await).unwrap();
    assert_eq!(moved["approval_id"], asked["approval_id"], "{moved}");
}
on_both_engines!(revoking_a_token_ends_the_streams_held_with_it);
