//! Files from the agent to the user (issue 30, missing 1), end to end with
//! the real binary: an `--exec` agent writes `attach: <path>` lines, connect
//! uploads those files to the workspace's own chat
//! (`POST /workspaces/:id/notify/uploads`) and the reply's `/notify` names
//! them; the operator downloads the bytes. Refusals leave nothing behind.
//! Every scenario runs on SQLite and, when it is up, on PostgreSQL.

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::connect_e2e::{bounded, eventually, file_id, Connect, Server, ADMIN_TOKEN};
use crate::connect_files::{send_with_files, server, upload};

const REPORT: &[u8] = b"the report, line one\nline two\n";

/// Uploads one file for the user with `token`; the status and the body.
async fn upload_to_user(
    server: &Server,
    ws: &str,
    token: &str,
    name: &str,
    bytes: &[u8],
) -> (u16, Value) {
    let form = reqwest::multipart::Form::new().part(
        "files",
        reqwest::multipart::Part::bytes(bytes.to_vec())
            .file_name(name.to_owned())
            .mime_str("text/plain")
            .unwrap(),
    );
    let r = reqwest::Client::new()
        .post(format!("{}/workspaces/{ws}/notify/uploads", server.url()))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// `/notify` with `token`; the status and the body.
async fn notify(server: &Server, ws: &str, token: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/workspaces/{ws}/notify", server.url()))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The operator's download of a staged file: status and bytes.
async fn download(server: &Server, ws: &str, fid: &str) -> (u16, Vec<u8>) {
    let r = reqwest::Client::new()
        .get(format!(
            "{}/workspaces/{ws}/pending-uploads/{fid}/content",
            server.url()
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

async fn an_exec_agent_attaches_files_by_writing_their_paths(postgres: bool) {
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let Some(server) = server(&tmp.path().join("server"), postgres).await else {
            return;
        };
        let (ws, token) = server.create_poll_workspace().await;
        let agent = tmp.path().join("agent");
        std::fs::create_dir_all(agent.join("out")).unwrap();
        std::fs::write(agent.join("out/report.txt"), REPORT).unwrap();
        let _connect = Connect::start(
            &server,
            &ws,
            &token,
            &agent,
            &["--exec", "sh -c 'cat >/dev/null; echo Here is the report.; echo attach: out/report.txt; echo attach: out/missing.txt'"],
        )
        .await;

        let r = send_with_files(&server, &ws, "write the report", &[]).await;
        assert_eq!(r.status(), 202);
        let rows = eventually("the agent's reply", || async {
            let rows = server.get(&format!("/workspaces/{ws}/activity?type=agent_message")).await;
            (rows.as_array().unwrap().len() == 1).then_some(rows)
        })
        .await;
        let data = &rows[0]["data"];
        // The attach line naming a file left the text; the one naming no file stayed.
        assert_eq!(data["text"], "Here is the report.\nattach: out/missing.txt", "{data}");
        let attachments = data["attachments"].as_array().unwrap();
        assert_eq!(attachments.len(), 1, "{data}");
        let uri = attachments[0]["uri"].as_str().unwrap();
        let fid = file_id(&ws, uri);
        assert_eq!(
            attachments[0],
            json!({"uri": uri, "name": "report.txt", "mimeType": "text/plain", "size": REPORT.len()})
        );
        // The operator downloads the bytes; the agent's own list of files
        // to fetch does not hold them, so connect never takes them back.
        assert_eq!(download(&server, &ws, &fid).await, (200, REPORT.to_vec()));
        assert_eq!(server.get(&format!("/workspaces/{ws}/pending-uploads")).await, json!([]));
        let all = server.get(&format!("/workspaces/{ws}/pending-uploads?include=all")).await;
        assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
        assert_eq!(all[0]["file_id"], fid.as_str());
        assert_eq!(all[0]["acked_at"], Value::Null);
    })
    .await;
}

#[tokio::test]
async fn an_exec_agent_attaches_files_by_writing_their_paths_sqlite() {
    an_exec_agent_attaches_files_by_writing_their_paths(false).await;
}

#[tokio::test]
async fn an_exec_agent_attaches_files_by_writing_their_paths_postgres() {
    an_exec_agent_attaches_files_by_writing_their_paths(true).await;
}

async fn files_to_the_user_are_the_workspaces_own(postgres: bool) {
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let Some(server) = server(&tmp.path().join("server"), postgres).await else {
            return;
        };
        let (a, token_a) = server.create_poll_workspace().await;
        let (b, token_b) = server.create_poll_workspace().await;
        let (status, sent) = upload_to_user(&server, &a, &token_a, "a.txt", REPORT).await;
        assert_eq!(status, 200, "{sent}");
        let of_a = sent["files"][0].clone();
        assert_eq!(of_a["name"], "a.txt");
        assert_eq!(of_a["size"], REPORT.len());

        // Only the workspace itself uploads to its chat: the operator is
        // 403, another workspace's token 401 (as on every route of a
        // workspace), a body that is not multipart is 400.
        let (status, _) = upload_to_user(&server, &a, ADMIN_TOKEN, "x.txt", b"x").await;
        assert_eq!(status, 403);
        let (status, _) = upload_to_user(&server, &a, &token_b, "x.txt", b"x").await;
        assert_eq!(status, 401);
        let r = reqwest::Client::new()
            .post(format!("{}/workspaces/{a}/notify/uploads", server.url()))
            .bearer_auth(&token_a)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let all = server.get(&format!("/workspaces/{a}/pending-uploads?include=all")).await;
        assert_eq!(all.as_array().unwrap().len(), 1, "only a.txt is stored: {all}");

        // /notify may name only files this workspace uploaded for the user:
        // not another workspace's, not a file staged for the agent.
        let (status, sent) = upload_to_user(&server, &b, &token_b, "b.txt", b"b").await;
        assert_eq!(status, 200, "{sent}");
        let of_b = sent["files"][0].clone();
        let for_agent = upload(&server, &a, &[("in.txt", b"in")], true).await;
        let before = server.get(&format!("/workspaces/{a}/activity")).await;
        for (case, file) in [("another workspace's file", &of_b), ("a file staged for the agent", &for_agent[0])] {
            let body = json!({"message": "see attached", "attachments": [{"uri": file["uri"], "name": "n"}]});
            let (status, answer) = notify(&server, &a, &token_a, &body).await;
            assert_eq!(status, 422, "{case}: {answer}");
            let error = answer["error"].as_str().unwrap();
            assert!(error.contains("is not a file this workspace uploaded for the user"), "{case}: {error}");
        }
        // Nor may the user's message name the agent's file.
        let r = send_with_files(&server, &a, "yours", std::slice::from_ref(&of_a)).await;
        assert_eq!(r.status(), 422);
        assert_eq!(server.get(&format!("/workspaces/{a}/activity")).await, before, "nothing stored");

        // Named right, the server's record wins over what the agent says.
        let body = json!({"message": "here", "attachments": [{"uri": of_a["uri"], "name": "other.bin", "size": 1}]});
        let (status, answer) = notify(&server, &a, &token_a, &body).await;
        assert_eq!(status, 200, "{answer}");
        let rows = server.get(&format!("/workspaces/{a}/activity?type=agent_message")).await;
        assert_eq!(
            rows[0]["data"]["attachments"],
            json!([{"uri": of_a["uri"], "name": "a.txt", "mimeType": "text/plain", "size": REPORT.len()}])
        );
    })
    .await;
}

#[tokio::test]
async fn files_to_the_user_are_the_workspaces_own_sqlite() {
    files_to_the_user_are_the_workspaces_own(false).await;
}

#[tokio::test]
async fn files_to_the_user_are_the_workspaces_own_postgres() {
    files_to_the_user_are_the_workspaces_own(true).await;
}
