//! Files both ways and the lifecycle, end to end with the real binary
//! (issue 30): a message that carries files reaches `--exec` and
//! `--forward` agents with the on-disk paths of its files, a file dropped
//! alone is announced as `file_arrived`, and a message naming a file that
//! is not staged for its workspace is refused with nothing stored. Every
//! scenario runs on SQLite and, when it is up, on PostgreSQL.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::connect_e2e::{bounded, eventually, file_id, Connect, Server, ADMIN_TOKEN};
use crate::helpers::free_port;

/// A server on SQLite, or on a fresh PostgreSQL database (`None` when
/// PostgreSQL is not set up here).
pub(crate) async fn server(dir: &Path, postgres: bool) -> Option<Server> {
    let mut extra = Vec::new();
    if postgres {
        extra = vec![
            "--database-url".to_owned(),
            crate::helpers::fresh_postgres_url().await?,
        ];
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    Some(Server::start_with(dir, free_port(), &extra).await)
}

/// Uploads `files` as the operator (`?attach=true` when `attach`); the
/// answer's `files`.
pub(crate) async fn upload(
    server: &Server,
    ws: &str,
    files: &[(&str, &[u8])],
    attach: bool,
) -> Vec<Value> {
    let mut form = reqwest::multipart::Form::new();
    for (name, bytes) in files {
        form = form.part(
            "files",
            reqwest::multipart::Part::bytes(bytes.to_vec())
                .file_name(name.to_string())
                .mime_str("text/plain")
                .unwrap(),
        );
    }
    let query = if attach { "?attach=true" } else { "" };
    let r = reqwest::Client::new()
        .post(format!(
            "{}/workspaces/{ws}/chat/uploads{query}",
            server.url()
        ))
        .bearer_auth(ADMIN_TOKEN)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    answer["files"].as_array().unwrap().clone()
}

/// Sends the operator's message with `text` and a `file` part per upload.
pub(crate) async fn send_with_files(
    server: &Server,
    ws: &str,
    text: &str,
    files: &[Value],
) -> reqwest::Response {
    let mut parts = vec![json!({"kind": "text", "text": text})];
    parts.extend(files.iter().map(|f| {
        json!({"kind": "file", "file": {"uri": f["uri"], "name": f["name"], "mimeType": f["mimeType"]}})
    }));
    reqwest::Client::new()
        .post(format!("{}/workspaces/{ws}/a2a", server.url()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"message": {"role": "user", "parts": parts}}))
        .send()
        .await
        .unwrap()
}

/// The JSON lines an `--exec` agent appended to `events.jsonl`.
fn events(agent: &Path) -> Vec<Value> {
    std::fs::read_to_string(agent.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The bytes behind a `workspace:<path>` URI.
fn bytes_at(uri: &Value) -> Vec<u8> {
    let path = uri
        .as_str()
        .and_then(|u| u.strip_prefix("workspace:"))
        .unwrap_or_else(|| panic!("not a workspace: URI: {uri}"));
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const ONE: &[u8] = b"first attachment\n";
const TWO: &[u8] = b"second attachment, a little longer\n";
const ALONE: &[u8] = b"dropped on its own\n";

async fn a_message_with_two_files_reaches_an_exec_agent_with_their_paths(postgres: bool) {
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let Some(server) = server(&tmp.path().join("server"), postgres).await else {
            return;
        };
        let (ws, token) = server.create_poll_workspace().await;
        let agent = tmp.path().join("agent");
        let _connect = Connect::start(
            &server,
            &ws,
            &token,
            &agent,
            &["--exec", "cat >> events.jsonl"],
        )
        .await;

        let files = upload(&server, &ws, &[("one.txt", ONE), ("two.txt", TWO)], true).await;
        let r = send_with_files(&server, &ws, "two files for you", &files).await;
        assert_eq!(r.status(), 202);
        let seen = eventually("the message event", || async {
            let e = events(&agent);
            (!e.is_empty()).then_some(e)
        })
        .await;
        let message = &seen[0];
        assert_eq!(message["type"], "message", "{message}");
        assert_eq!(message["text"], "two files for you");
        let attachments = message["attachments"].as_array().unwrap();
        assert_eq!(attachments.len(), 2, "{message}");
        for (i, (a, (name, bytes))) in attachments
            .iter()
            .zip([("one.txt", ONE), ("two.txt", TWO)])
            .enumerate()
        {
            let fid = file_id(&ws, files[i]["uri"].as_str().unwrap());
            let path = a["path"].as_str().unwrap();
            assert!(
                path.ends_with(&format!("/.molecule/chat-uploads/{fid}-{name}")),
                "{path}"
            );
            assert_eq!(std::fs::read(path).unwrap(), bytes, "{name}");
            assert_eq!(a["uri"], format!("workspace:{path}"));
            assert_eq!(a["name"], name);
            assert_eq!(a["size"], bytes.len());
            assert_eq!(
                message["parts"][i + 1]["file"]["uri"],
                a["uri"],
                "{message}"
            );
        }

        // A file dropped alone: one `file_arrived` event, after the message.
        let alone = upload(&server, &ws, &[("alone.txt", ALONE)], false).await;
        let seen = eventually("the file_arrived event", || async {
            let e = events(&agent);
            (e.len() >= 2).then_some(e)
        })
        .await;
        let arrived = &seen[1];
        assert_eq!(arrived["type"], "file_arrived", "{arrived}");
        assert_eq!(
            arrived["file_id"],
            file_id(&ws, alone[0]["uri"].as_str().unwrap())
        );
        assert_eq!(arrived["filename"], "alone.txt");
        assert_eq!(bytes_at(&arrived["uri"]), ALONE);
        assert_eq!(
            std::fs::read(arrived["path"].as_str().unwrap()).unwrap(),
            ALONE
        );
        assert_eq!(arrived["parts"][0]["file"]["uri"], arrived["uri"]);
        // Every file acked; the attached ones were never announced alone.
        eventually("every file acked", || async {
            let p = server
                .get(&format!("/workspaces/{ws}/pending-uploads"))
                .await;
            (p == json!([])).then_some(())
        })
        .await;
        assert_eq!(events(&agent).len(), 2, "{:?}", events(&agent));
    })
    .await;
}

#[tokio::test]
async fn a_message_with_two_files_reaches_an_exec_agent_with_their_paths_sqlite() {
    a_message_with_two_files_reaches_an_exec_agent_with_their_paths(false).await;
}

#[tokio::test]
async fn a_message_with_two_files_reaches_an_exec_agent_with_their_paths_postgres() {
    a_message_with_two_files_reaches_an_exec_agent_with_their_paths(true).await;
}

/// A local push-mode agent that records every JSON-RPC request and
/// answers with no text (so no reply is sent back).
async fn recording_agent() -> (String, Arc<Mutex<Vec<Value>>>) {
    let received = Arc::new(Mutex::new(Vec::<Value>::new()));
    let seen = received.clone();
    let agent = axum::Router::new().route(
        "/",
        axum::routing::post(move |axum::Json(rpc): axum::Json<Value>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(rpc.clone());
                axum::Json(json!({"jsonrpc": "2.0", "id": rpc["id"], "result": {
                    "kind": "message", "role": "agent", "messageId": "m-1", "parts": []}}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, agent).await });
    (url, received)
}

async fn a_message_with_two_files_reaches_a_forward_agent_as_file_parts(postgres: bool) {
    bounded(async {
        let (url, received) = recording_agent().await;
        let tmp = TempDir::new().unwrap();
        let Some(server) = server(&tmp.path().join("server"), postgres).await else {
            return;
        };
        let (ws, token) = server.create_poll_workspace().await;
        let _connect = Connect::start(
            &server,
            &ws,
            &token,
            &tmp.path().join("agent"),
            &["--forward", &url],
        )
        .await;

        let files = upload(&server, &ws, &[("one.txt", ONE), ("two.txt", TWO)], true).await;
        assert_eq!(
            send_with_files(&server, &ws, "for the forward agent", &files)
                .await
                .status(),
            202
        );
        let rpc = eventually("the message at the local agent", || async {
            received.lock().unwrap().first().cloned()
        })
        .await;
        assert_eq!(rpc["method"], "message/send");
        let parts = rpc["params"]["message"]["parts"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(parts.len(), 3, "{rpc}");
        assert_eq!(
            parts[0],
            json!({"kind": "text", "text": "for the forward agent"})
        );
        for (part, (name, bytes)) in parts[1..].iter().zip([("one.txt", ONE), ("two.txt", TWO)]) {
            assert_eq!(part["kind"], "file", "{part}");
            assert_eq!(part["file"]["name"], name);
            assert_eq!(bytes_at(&part["file"]["uri"]), bytes, "{name}");
        }

        upload(&server, &ws, &[("alone.txt", ALONE)], false).await;
        let rpc = eventually("the lone file at the local agent", || async {
            received.lock().unwrap().get(1).cloned()
        })
        .await;
        let parts = rpc["params"]["message"]["parts"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(parts.len(), 1, "{rpc}");
        assert_eq!(parts[0]["kind"], "file");
        assert_eq!(parts[0]["file"]["name"], "alone.txt");
        assert_eq!(bytes_at(&parts[0]["file"]["uri"]), ALONE);
        eventually("every file acked", || async {
            let p = server
                .get(&format!("/workspaces/{ws}/pending-uploads"))
                .await;
            (p == json!([])).then_some(())
        })
        .await;
        assert_eq!(
            received.lock().unwrap().len(),
            2,
            "nothing else was forwarded"
        );
    })
    .await;
}

#[tokio::test]
async fn a_message_with_two_files_reaches_a_forward_agent_as_file_parts_sqlite() {
    a_message_with_two_files_reaches_a_forward_agent_as_file_parts(false).await;
}

#[tokio::test]
async fn a_message_with_two_files_reaches_a_forward_agent_as_file_parts_postgres() {
    a_message_with_two_files_reaches_a_forward_agent_as_file_parts(true).await;
}

async fn a_message_naming_a_file_not_staged_for_its_workspace_is_refused(postgres: bool) {
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let Some(server) = server(&tmp.path().join("server"), postgres).await else {
            return;
        };
        let (a, _) = server.create_poll_workspace().await;
        let (b, _) = server.create_poll_workspace().await;
        let of_b = upload(&server, &b, &[("b.txt", ONE)], true).await;
        let before = server.get(&format!("/workspaces/{a}/activity")).await;
        let unknown = json!({"uri": format!("platform-pending:{a}/{}", uuid::Uuid::new_v4()),
            "name": "x.txt", "mimeType": "text/plain"});
        let malformed = json!({"uri": format!("platform-pending:{a}/not-an-id"), "name": "x", "mimeType": "text/plain"});
        for (case, file) in [("another workspace's file", &of_b[0]), ("an unknown id", &unknown), ("a malformed id", &malformed)] {
            let r = send_with_files(&server, &a, "see attached", std::slice::from_ref(file)).await;
            assert_eq!(r.status(), 422, "{case}");
            let body: Value = r.json().await.unwrap();
            let error = body["error"].as_str().unwrap();
            assert!(error.contains("is not a file staged for this workspace"), "{case}: {error}");
        }
        assert_eq!(server.get(&format!("/workspaces/{a}/activity")).await, before, "nothing stored");
        // B's file is still B's, untouched.
        let pending = server.get(&format!("/workspaces/{b}/pending-uploads")).await;
        assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
        assert_eq!(pending[0]["fetched_at"], Value::Null);
    })
    .await;
}

#[tokio::test]
async fn a_message_naming_a_file_not_staged_for_its_workspace_is_refused_sqlite() {
    a_message_naming_a_file_not_staged_for_its_workspace_is_refused(false).await;
}

#[tokio::test]
async fn a_message_naming_a_file_not_staged_for_its_workspace_is_refused_postgres() {
    a_message_naming_a_file_not_staged_for_its_workspace_is_refused(true).await;
}

/// POSTs an operator lifecycle verb (`pause`, `resume`, `restart`).
async fn lifecycle(server: &Server, ws: &str, verb: &str) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{}/workspaces/{ws}/{verb}", server.url()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{verb}: {}", r.status());
    r.json().await.unwrap()
}

/// The text of each `message` event an `--exec` agent received, in order.
fn texts(agent: &Path) -> Vec<String> {
    events(agent)
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| e["text"].as_str().unwrap().to_owned())
        .collect()
}

async fn pause_holds_messages_queued_and_resume_delivers_them_in_order(postgres: bool) {
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let Some(server) = server(&tmp.path().join("server"), postgres).await else {
            return;
        };
        let (ws, token) = server.create_poll_workspace().await;
        let agent = tmp.path().join("agent");
        let connect = Connect::start(
            &server,
            &ws,
            &token,
            &agent,
            &["--exec", "cat >> events.jsonl"],
        )
        .await;
        server.cli(&["send", &ws, "before the pause"]).await;
        eventually("the first message", || async {
            (texts(&agent).len() == 1).then_some(())
        })
        .await;

        lifecycle(&server, &ws, "pause").await;
        for text in ["one", "two", "three"] {
            let queued = server.cli(&["send", &ws, text]).await;
            assert_eq!(queued["queued"], true, "{queued}");
        }
        // connect's long poll was woken by each row and answered nothing.
        // A poll that returned rows would have handed them over within this
        // window (the first message took milliseconds).
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert_eq!(
            texts(&agent),
            ["before the pause"],
            "a paused workspace's agent got messages"
        );
        let rows = server
            .get(&format!("/workspaces/{ws}/activity?type=a2a_receive"))
            .await;
        let held: Vec<&Value> = rows.as_array().unwrap().iter().skip(1).collect();
        assert_eq!(held.len(), 3);
        assert!(held.iter().all(|r| r["status"] == "queued"), "{rows}");
        let picked = server.get(&format!("/workspaces/{ws}")).await;
        assert_eq!(picked["status"], "paused", "{picked}");

        lifecycle(&server, &ws, "resume").await;
        eventually("the held messages, in order", || async {
            (texts(&agent).len() == 4).then_some(())
        })
        .await;
        assert_eq!(texts(&agent), ["before the pause", "one", "two", "three"]);
        assert!(!connect.logs().contains("ERROR"), "{}", connect.logs());
    })
    .await;
}

#[tokio::test]
async fn pause_holds_messages_queued_and_resume_delivers_them_in_order_sqlite() {
    pause_holds_messages_queued_and_resume_delivers_them_in_order(false).await;
}

#[tokio::test]
async fn pause_holds_messages_queued_and_resume_delivers_them_in_order_postgres() {
    pause_holds_messages_queued_and_resume_delivers_them_in_order(true).await;
}

async fn restart_stops_the_exec_in_flight_runs_it_again_and_reports_back(postgres: bool) {
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let Some(server) = server(&tmp.path().join("server"), postgres).await else {
            return;
        };
        let (ws, token) = server.create_poll_workspace().await;
        let agent = tmp.path().join("agent");
        // The first run hangs (a stuck agent); the run after the restart answers.
        let exec = "cat >> events.jsonl; if [ -e started ]; then echo answered after the restart; else touch started; exec sleep 120; fi";
        let connect = Connect::start(&server, &ws, &token, &agent, &["--exec", exec]).await;
        server.cli(&["send", &ws, "take your time"]).await;
        eventually("the stuck run", || async { agent.join("started").exists().then_some(()) }).await;

        lifecycle(&server, &ws, "restart").await;
        let restart_id = server.get(&format!("/workspaces/{ws}/activity?type=restart_requested")).await[0]["id"].clone();
        let done = eventually("a restart_done row", || async {
            let rows = server.get(&format!("/workspaces/{ws}/activity?type=restart_done")).await;
            rows.as_array().unwrap().first().cloned()
        })
        .await;
        assert_eq!(done["status"], "done", "{done}");
        assert_eq!(done["request_body"]["restart_activity_id"], restart_id, "{done}");
        let reply = eventually("the answer of the run after the restart", || async {
            let rows = server.get(&format!("/workspaces/{ws}/activity?type=agent_message")).await;
            rows.as_array().unwrap().first().cloned()
        })
        .await;
        assert_eq!(reply["data"]["text"], "answered after the restart");
        assert_eq!(texts(&agent), ["take your time", "take your time"], "handed over again once");
        connect.wait_for_log("the operator asked for a restart").await;
    })
    .await;
}

#[tokio::test]
async fn restart_stops_the_exec_in_flight_runs_it_again_and_reports_back_sqlite() {
    restart_stops_the_exec_in_flight_runs_it_again_and_reports_back(false).await;
}

#[tokio::test]
async fn restart_stops_the_exec_in_flight_runs_it_again_and_reports_back_postgres() {
    restart_stops_the_exec_in_flight_runs_it_again_and_reports_back(true).await;
}
