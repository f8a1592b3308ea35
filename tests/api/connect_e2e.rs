//! End to end, with the real binary in every role: `molecule serve` on a
//! free port with a SQLite data dir, the operator CLI (`workspace create`,
//! `upload`, `send`, `workspace rotate`) and `molecule connect` on the
//! agent's side. Each test waits for conditions with a deadline, never for
//! a fixed time, and the whole test is bounded so a failure cannot hang.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngCore;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::helpers::{free_port, sha256_hex, wait_until_ready};

pub(crate) const ADMIN_TOKEN: &str = "e2e-admin-token-4f1d0c2b9a";
/// How long any one condition may take to come true.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long a whole test may take.
const TEST_BUDGET: Duration = Duration::from_secs(150);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_molecule")
}

/// Runs a test body with an overall budget.
pub(crate) async fn bounded(body: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_BUDGET, body)
        .await
        .expect("the test ran past its budget");
}

/// Polls `check` until it returns `Some`, or panics with `what` at the deadline.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running `molecule serve`.
pub(crate) struct Server {
    child: Child,
    port: u16,
    data_dir: PathBuf,
}

impl Server {
    async fn start(data_dir: &Path, port: u16) -> Self {
        Self::start_with(data_dir, port, &[]).await
    }

    /// Starts `molecule serve` with these extra flags.
    pub(crate) async fn start_with(data_dir: &Path, port: u16, extra: &[&str]) -> Self {
        let child = Command::new(bin())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--admin-token",
                ADMIN_TOKEN,
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .env_remove("DATABASE_URL")
            // Suites hammer one server from one address.
            .env("MOLECULE_RATE_LIMIT", "off")
            .env_remove("MOLECULE_BLOB_STORE")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start molecule serve");
        let mut server = Self {
            child,
            port,
            data_dir: data_dir.to_owned(),
        };
        wait_until_ready(&server.url(), &mut server.child).await;
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the crash case.
    async fn kill(&mut self) {
        self.child.kill().await.expect("kill molecule serve");
    }

    async fn restart(&mut self) {
        let port = self.port;
        let dir = self.data_dir.clone();
        *self = Self::start(&dir, port).await;
    }

    /// The operator CLI against this server, with `--json`; returns its output.
    pub(crate) async fn cli(&self, args: &[&str]) -> Value {
        let out = Command::new(bin())
            .args(args)
            .args([
                "--server",
                &self.url(),
                "--admin-token",
                ADMIN_TOKEN,
                "--json",
            ])
            .output()
            .await
            .expect("run the molecule CLI");
        assert!(
            out.status.success(),
            "molecule {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "molecule {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// A GET of the API as the operator.
    pub(crate) async fn get(&self, path: &str) -> Value {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.url()))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("GET");
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.expect("JSON body")
    }

    pub(crate) async fn create_poll_workspace(&self) -> (String, String) {
        let created = self
            .cli(&[
                "workspace",
                "create",
                "--name",
                "e2e agent",
                "--mode",
                "poll",
            ])
            .await;
        let id = created["id"].as_str().expect("id").to_owned();
        let token = created["auth_token"].as_str().expect("token").to_owned();
        let command = created["connection"]["connect_command"]
            .as_str()
            .expect("connect_command");
        assert!(
            command.contains("&& molecule connect ") && command.contains(&id),
            "{command}"
        );
        (id, token)
    }
}

/// A running `molecule connect`, its stdout read as JSON lines and its
/// stderr (the logs) kept and echoed.
pub(crate) struct Connect {
    child: Child,
    lines: mpsc::UnboundedReceiver<Value>,
    logs: Arc<Mutex<String>>,
    dir: PathBuf,
}

impl Connect {
    pub(crate) async fn start(
        server: &Server,
        workspace: &str,
        token: &str,
        dir: &Path,
        extra: &[&str],
    ) -> Self {
        let mut args = vec!["--token", token];
        args.extend_from_slice(extra);
        Self::launch(server, workspace, dir, &args, &[]).await
    }

    /// Starts `connect` with exactly these extra flags and environment
    /// (the token is not passed unless `args` or `envs` carry it).
    async fn launch(
        server: &Server,
        workspace: &str,
        dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let mut child = connect_command(server, workspace, dir)
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start molecule connect");
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("piped stdout");
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| json!({"type": "NOT JSON", "line": line}));
                let _ = tx.send(value);
            }
        });
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                eprintln!("[connect] {line}");
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
            }
        });
        Self {
            child,
            lines,
            logs,
            dir: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned()),
        }
    }

    /// The next JSON line on stdout, within the deadline.
    pub(crate) async fn next_line(&mut self) -> Value {
        let line = tokio::time::timeout(DEADLINE, self.lines.recv())
            .await
            .expect("timed out waiting for a JSON line from molecule connect")
            .expect("molecule connect closed its stdout");
        assert_ne!(
            line["type"], "NOT JSON",
            "connect printed a non-JSON line: {line}"
        );
        line
    }

    /// Asserts that nothing more is printed for a short while.
    pub(crate) async fn assert_quiet(&mut self) {
        if let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_millis(500), self.lines.recv()).await
        {
            panic!("unexpected line from molecule connect: {line}");
        }
    }

    pub(crate) fn uploads_dir(&self) -> PathBuf {
        self.dir.join(".molecule").join("chat-uploads")
    }

    /// Every entry of the uploads folder, sorted.
    fn uploads_listing(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.uploads_dir())
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    pub(crate) fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Sends SIGTERM and returns the exit status.
    async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("connect is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("connect did not stop on SIGTERM")
            .unwrap()
    }
}

/// `molecule connect` against `server` for `workspace` in `dir`, with the
/// logs at info and no token from the test runner's environment.
fn connect_command(server: &Server, workspace: &str, dir: &Path) -> Command {
    let mut command = Command::new(bin());
    command
        .args([
            "connect",
            "--server",
            &server.url(),
            "--workspace",
            workspace,
            "--dir",
        ])
        .arg(dir)
        .env_remove("MOLECULE_TOKEN")
        .env_remove("MOLECULE_SERVER")
        .env_remove("MOLECULE_WORKSPACE_ID")
        .env("RUST_LOG", "info");
    command
}

/// Writes the test's files; returns (path, bytes) pairs.
fn make_files(dir: &Path, big: usize) -> Vec<(PathBuf, Vec<u8>)> {
    let mut random = vec![0u8; big];
    rand::rng().fill_bytes(&mut random);
    let files = vec![
        (dir.join("hello.txt"), b"hello, agent\n".to_vec()),
        (
            dir.join("report final (v2).md"),
            b"# Report\n\nAll green.\n".to_vec(),
        ),
        (dir.join("big.bin"), random),
    ];
    for (path, bytes) in &files {
        std::fs::write(path, bytes).unwrap();
    }
    files
}

/// The sanitized names the server and connect both apply.
fn expected_name(path: &Path) -> &'static str {
    match path.file_name().unwrap().to_str().unwrap() {
        "hello.txt" => "hello.txt",
        "report final (v2).md" => "report_final__v2_.md",
        "big.bin" => "big.bin",
        other => panic!("unexpected file {other}"),
    }
}

async fn upload(server: &Server, workspace: &str, files: &[(PathBuf, Vec<u8>)]) -> Vec<Value> {
    let mut args = vec!["upload".to_owned(), workspace.to_owned()];
    args.extend(files.iter().map(|(p, _)| p.to_string_lossy().into_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let answer = server.cli(&args).await;
    let uploaded = answer["files"].as_array().expect("files").clone();
    assert_eq!(uploaded.len(), files.len(), "{answer}");
    uploaded
}

/// The file id of a `platform-pending:<ws>/<fid>` URI.
pub(crate) fn file_id(workspace: &str, uri: &str) -> String {
    uri.strip_prefix(&format!("platform-pending:{workspace}/"))
        .unwrap_or_else(|| panic!("not a pending URI: {uri}"))
        .to_owned()
}

/// Asserts that every file is on disk exactly once, byte for byte, that
/// nothing else (no partial download) is in the folder, and that the
/// server has nothing pending any more.
async fn assert_all_delivered(
    server: &Server,
    connect: &Connect,
    workspace: &str,
    files: &[(PathBuf, Vec<u8>)],
    uploaded: &[Value],
) {
    let mut expected_listing = Vec::new();
    for ((path, bytes), answer) in files.iter().zip(uploaded) {
        let fid = file_id(workspace, answer["uri"].as_str().unwrap());
        let name = format!("{fid}-{}", expected_name(path));
        let on_disk = std::fs::read(connect.uploads_dir().join(&name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(on_disk.len(), bytes.len(), "size of {name}");
        assert_eq!(sha256_hex(&on_disk), sha256_hex(bytes), "sha256 of {name}");
        assert!(on_disk == *bytes, "bytes of {name}");
        assert_eq!(
            answer["sha256"],
            sha256_hex(bytes),
            "server's sha256 of {name}"
        );
        expected_listing.push(name);
    }
    expected_listing.sort();
    assert_eq!(
        connect.uploads_listing(),
        expected_listing,
        "exactly the files, once each, no temp files"
    );
    let pending = server
        .get(&format!("/workspaces/{workspace}/pending-uploads"))
        .await;
    assert_eq!(pending, json!([]), "every file acked");
    let stats = server.get("/admin/pending-uploads/stats").await;
    assert_eq!(stats["pending"], 0, "{stats}");
    assert_eq!(stats["acked"], files.len(), "{stats}");
}

/// Collects `file` lines until every uploaded file has one.
async fn file_lines(connect: &mut Connect, workspace: &str, uploaded: &[Value]) -> Vec<Value> {
    let mut lines = Vec::new();
    while lines.len() < uploaded.len() {
        let line = connect.next_line().await;
        assert_eq!(line["type"], "file", "{line}");
        lines.push(line);
    }
    for answer in uploaded {
        let fid = file_id(workspace, answer["uri"].as_str().unwrap());
        let line = lines
            .iter()
            .find(|l| l["file_id"] == fid.as_str())
            .unwrap_or_else(|| panic!("no line for {fid}"));
        assert_eq!(line["acked"], true, "{line}");
        assert_eq!(line["sha256"], answer["sha256"], "{line}");
        let path = line["path"].as_str().unwrap();
        assert!(
            path.starts_with(connect.uploads_dir().to_str().unwrap()),
            "{path}"
        );
        assert_eq!(line["uri"], format!("workspace:{path}"));
    }
    lines
}

#[tokio::test]
async fn uploaded_files_land_on_disk_verified_and_acked() {
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let server = Server::start(&tmp.path().join("server"), free_port()).await;
        let (ws, token) = server.create_poll_workspace().await;
        let mut connect =
            Connect::start(&server, &ws, &token, &tmp.path().join("agent"), &[]).await;

        let files = make_files(tmp.path(), 20 * 1024 * 1024);
        let uploaded = upload(&server, &ws, &files).await;

        file_lines(&mut connect, &ws, &uploaded).await;
        assert_all_delivered(&server, &connect, &ws, &files, &uploaded).await;
        connect.assert_quiet().await;

        // The workspace registered in poll mode and is online.
        let workspace = server.get(&format!("/workspaces/{ws}")).await;
        assert_eq!(workspace["delivery_mode"], "poll");
        assert_eq!(workspace["status"], "online");
        // The cursor is past every upload row.
        let rows = server
            .get(&format!("/workspaces/{ws}/activity?type=a2a_receive"))
            .await;
        let last = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .max()
            .unwrap();
        let cursor: Value = serde_json::from_str(
            &std::fs::read_to_string(connect.dir.join(".molecule/cursor")).unwrap(),
        )
        .unwrap();
        assert_eq!(cursor, json!({"since_id": last, "done": []}));
    })
    .await;
}

#[tokio::test]
async fn messages_arrive_as_json_lines_with_file_uris_rewritten() {
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let server = Server::start(&tmp.path().join("server"), free_port()).await;
        let (ws, token) = server.create_poll_workspace().await;
        let mut connect =
            Connect::start(&server, &ws, &token, &tmp.path().join("agent"), &[]).await;

        let queued = server.cli(&["send", &ws, "hello there"]).await;
        assert_eq!(queued["queued"], true, "{queued}");
        let line = connect.next_line().await;
        assert_eq!(line["type"], "message", "{line}");
        assert_eq!(line["text"], "hello there");
        assert_eq!(line["activity_id"], queued["activity_id"]);
        assert_eq!(line["source"], "canvas_user");
        assert_eq!(
            line["parts"],
            json!([{"kind": "text", "text": "hello there"}])
        );

        // A message naming a staged file reaches the agent with the local path.
        let files = vec![(tmp.path().join("hello.txt"), b"hello, agent\n".to_vec())];
        std::fs::write(&files[0].0, &files[0].1).unwrap();
        let uploaded = upload(&server, &ws, &files).await;
        let uri = uploaded[0]["uri"].as_str().unwrap();
        let rpc = json!({"message": {"role": "user", "parts": [
            {"kind": "text", "text": "see attached"},
            {"kind": "file", "file": {"uri": uri, "name": "hello.txt", "mimeType": "text/plain"}},
        ]}});
        let r = reqwest::Client::new()
            .post(format!("{}/workspaces/{ws}/a2a", server.url()))
            .bearer_auth(ADMIN_TOKEN)
            .json(&rpc)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);

        let file_line = connect.next_line().await;
        assert_eq!(
            file_line["type"], "file",
            "the upload comes first: {file_line}"
        );
        let message = connect.next_line().await;
        assert_eq!(message["type"], "message", "{message}");
        assert_eq!(message["text"], "see attached");
        let local = format!(
            "{}",
            connect
                .uploads_dir()
                .join(format!("{}-hello.txt", file_id(&ws, uri)))
                .display()
        );
        assert_eq!(
            message["parts"][1]["file"]["uri"],
            format!("workspace:{local}"),
            "{message}"
        );
        assert_eq!(std::fs::read(&local).unwrap(), files[0].1);
        connect.assert_quiet().await;
    })
    .await;
}

#[tokio::test]
async fn exec_reply_comes_back_as_an_agent_message() {
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let server = Server::start(&tmp.path().join("server"), free_port()).await;
        let (ws, token) = server.create_poll_workspace().await;
        let agent = tmp.path().join("agent");
        // The command runs in the agent's directory with the message on stdin.
        let exec = "cat > last-message.json; echo '  pong  '";
        let mut connect = Connect::start(&server, &ws, &token, &agent, &["--exec", exec]).await;

        server.cli(&["send", &ws, "ping"]).await;

        let reply = eventually("an agent_message row", || async {
            let rows = server
                .get(&format!("/workspaces/{ws}/activity?type=agent_message"))
                .await;
            rows.as_array().unwrap().first().cloned()
        })
        .await;
        assert_eq!(reply["activity_type"], "agent_message");
        assert_eq!(reply["workspace_id"], ws.as_str());
        assert_eq!(
            reply["request_body"]["message"], "pong",
            "trimmed stdout: {reply}"
        );
        assert_eq!(reply["data"]["text"], "pong");
        let seen: Value = serde_json::from_str(
            &std::fs::read_to_string(agent.join("last-message.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(seen["type"], "message");
        assert_eq!(seen["text"], "ping");
        // With --exec, stdout stays empty.
        connect.assert_quiet().await;
        let rows = server
            .get(&format!("/workspaces/{ws}/activity?type=agent_message"))
            .await;
        assert_eq!(
            rows.as_array().unwrap().len(),
            1,
            "exactly one reply: {rows}"
        );
    })
    .await;
}

#[tokio::test]
async fn server_killed_mid_download_still_delivers_every_file_exactly_once() {
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let mut server = Server::start(&tmp.path().join("server"), free_port()).await;
        let (ws, token) = server.create_poll_workspace().await;
        // Slow the downloads down so the kill lands mid-file.
        let mut connect = Connect::start(
            &server,
            &ws,
            &token,
            &tmp.path().join("agent"),
            &["--limit-rate", "4MiB"],
        )
        .await;
        let files = make_files(tmp.path(), 20 * 1024 * 1024);
        let uploaded = upload(&server, &ws, &files).await;
        let big = file_id(&ws, uploaded[2]["uri"].as_str().unwrap());
        let part = connect.uploads_dir().join(format!(".{big}.part"));

        let partial = eventually("a partial download of the big file", || async {
            let len = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            (len >= 2 * 1024 * 1024).then_some(len)
        })
        .await;
        server.kill().await;
        assert!(
            partial < files[2].1.len() as u64,
            "the kill must land mid-download"
        );
        server.restart().await;

        file_lines(&mut connect, &ws, &uploaded).await;
        assert_all_delivered(&server, &connect, &ws, &files, &uploaded).await;
        assert!(
            connect.logs().contains("resuming download"),
            "the download resumed rather than restarted"
        );
        connect.assert_quiet().await;
    })
    .await;
}

#[tokio::test]
async fn sigterm_persists_the_cursor_and_a_restart_repeats_nothing() {
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let server = Server::start(&tmp.path().join("server"), free_port()).await;
        let (ws, token) = server.create_poll_workspace().await;
        let agent = tmp.path().join("agent");
        let mut connect = Connect::start(&server, &ws, &token, &agent, &[]).await;
        server.cli(&["send", &ws, "first"]).await;
        assert_eq!(connect.next_line().await["text"], "first");
        let status = connect.terminate().await;
        assert!(status.success(), "SIGTERM is a clean stop: {status}");

        // Sent while the agent was away.
        server.cli(&["send", &ws, "second"]).await;
        let mut connect = Connect::start(&server, &ws, &token, &agent, &[]).await;
        let line = connect.next_line().await;
        assert_eq!(
            line["text"], "second",
            "the first message is not repeated: {line}"
        );
        connect.assert_quiet().await;
    })
    .await;
}

#[tokio::test]
async fn a_rotated_token_stops_connect_with_a_clear_message() {
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let server = Server::start(&tmp.path().join("server"), free_port()).await;
        let (ws, token) = server.create_poll_workspace().await;
        let mut connect = Connect::start(
            &server,
            &ws,
            &token,
            &tmp.path().join("agent"),
            &["--poll-wait", "1"],
        )
        .await;
        server.cli(&["send", &ws, "before"]).await;
        assert_eq!(connect.next_line().await["text"], "before");

        let rotated = server.cli(&["workspace", "rotate", &ws]).await;
        assert_ne!(rotated["auth_token"], token.as_str());
        let status = tokio::time::timeout(DEADLINE, connect.child.wait())
            .await
            .expect("connect kept running")
            .unwrap();
        assert!(!status.success(), "a refused token is a failure: {status}");
        let logs = connect.logs();
        assert!(
            logs.contains("molecule workspace rotate"),
            "the message says what to do: {logs}"
        );
    })
    .await;
}

#[tokio::test]
async fn forward_delivers_to_a_local_agent_and_sends_its_answer_back() {
    bounded(async {
        // A local push-mode agent that echoes the text it receives.
        let received = Arc::new(Mutex::new(Vec::<Value>::new()));
        let seen = received.clone();
        let agent = axum::Router::new().route(
            "/",
            axum::routing::post(move |axum::Json(rpc): axum::Json<Value>| {
                let seen = seen.clone();
                async move {
                    let text = rpc["params"]["message"]["parts"][0]["text"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                    seen.lock().unwrap().push(rpc.clone());
                    axum::Json(json!({"jsonrpc": "2.0", "id": rpc["id"], "result": {
                        "kind": "message", "role": "agent", "messageId": "m-1",
                        "parts": [{"kind": "text", "text": format!("echo: {text}")}],
                    }}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent_url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, agent).await });

        let tmp = TempDir::new().unwrap();
        let server = Server::start(&tmp.path().join("server"), free_port()).await;
        let (ws, token) = server.create_poll_workspace().await;
        let mut connect = Connect::start(
            &server,
            &ws,
            &token,
            &tmp.path().join("agent"),
            &["--forward", &agent_url],
        )
        .await;

        server.cli(&["send", &ws, "marco"]).await;
        let reply = eventually("an agent_message row", || async {
            let rows = server
                .get(&format!("/workspaces/{ws}/activity?type=agent_message"))
                .await;
            rows.as_array().unwrap().first().cloned()
        })
        .await;
        assert_eq!(reply["request_body"]["message"], "echo: marco", "{reply}");
        let received = received.lock().unwrap().clone();
        assert_eq!(received.len(), 1, "{received:?}");
        assert_eq!(received[0]["jsonrpc"], "2.0");
        assert_eq!(received[0]["method"], "message/send");
        assert_eq!(
            received[0]["params"]["message"]["parts"],
            json!([{"kind": "text", "text": "marco"}])
        );
        connect.assert_quiet().await;
    })
    .await;
}

/// A write the server answered 2xx during the chaos run.
#[derive(Debug, Clone)]
enum Acknowledged {
    /// A message queued with this activity id and text.
    Message { activity_id: i64, text: String },
    /// A file staged with this id.
    File { file_id: String },
}

/// Sends a steady mix of messages and small uploads until `stop`,
/// recording every one the server answered with a 2xx.
fn steady_load(
    base: String,
    workspace: String,
    seed: u64,
    stop: tokio_util::sync::CancellationToken,
    acknowledged: Arc<Mutex<Vec<Acknowledged>>>,
) -> tokio::task::JoinHandle<()> {
    use rand::{Rng, SeedableRng};
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut n = 0u64;
        while !stop.is_cancelled() {
            n += 1;
            let outcome = if rng.random_bool(0.6) {
                let text = format!("chaos message {seed}-{n}");
                let sent = client
                    .post(format!("{base}/workspaces/{workspace}/a2a"))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&json!({"message": {"parts": [{"kind": "text", "text": text}]}}))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        r.json::<Value>().await.ok().map(|v| Acknowledged::Message {
                            activity_id: v["activity_id"].as_i64().expect("activity_id"),
                            text,
                        })
                    }
                    _ => None,
                }
            } else {
                let mut bytes = vec![0u8; rng.random_range(1..32 * 1024)];
                rng.fill_bytes(&mut bytes);
                let form = reqwest::multipart::Form::new().part(
                    "files",
                    reqwest::multipart::Part::bytes(bytes)
                        .file_name(format!("chaos-{seed}-{n}.bin"))
                        .mime_str("application/octet-stream")
                        .unwrap(),
                );
                let sent = client
                    .post(format!("{base}/workspaces/{workspace}/chat/uploads"))
                    .bearer_auth(ADMIN_TOKEN)
                    .multipart(form)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => r.json::<Value>().await.ok().map(|v| {
                        let uri = v["files"][0]["uri"].as_str().expect("uri");
                        Acknowledged::File {
                            file_id: file_id(&workspace, uri),
                        }
                    }),
                    _ => None,
                }
            };
            match outcome {
                Some(write) => acknowledged.lock().unwrap().push(write),
                // The server is down (killed): try again shortly.
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// Every activity row of `workspace`, following the cursor.
async fn all_activity(server: &Server, workspace: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut since = 0;
    loop {
        let page = server
            .get(&format!(
                "/workspaces/{workspace}/activity?since_id={since}&limit=500"
            ))
            .await;
        let page = page.as_array().expect("rows").clone();
        let Some(last) = page.last() else {
            return rows;
        };
        since = last["id"].as_i64().unwrap();
        rows.extend(page);
    }
}

/// kill -9 at seeded random moments under a steady mix of messages,
/// uploads and (by `molecule connect`) downloads and acks: every write
/// answered 2xx is there after the restarts, and connect hands each one to
/// the agent exactly once.
#[tokio::test]
async fn kill_9_under_load_loses_no_acknowledged_write_and_delivers_each_once() {
    use rand::{Rng, SeedableRng};
    const SEED: u64 = 0x00c4_a05e;
    const KILLS: usize = 8;
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let mut server = Server::start(&tmp.path().join("server"), free_port()).await;
        let (ws, token) = server.create_poll_workspace().await;
        let mut connect =
            Connect::start(&server, &ws, &token, &tmp.path().join("agent"), &[]).await;
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);

        for round in 0..KILLS {
            let stop = tokio_util::sync::CancellationToken::new();
            let load = steady_load(
                server.url(),
                ws.clone(),
                SEED + round as u64,
                stop.clone(),
                acknowledged.clone(),
            );
            // Some writes land before the kill, whatever the timing.
            let before = acknowledged.lock().unwrap().len();
            eventually("writes before the kill", || async {
                (acknowledged.lock().unwrap().len() > before).then_some(())
            })
            .await;
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..1200))).await;
            server.kill().await;
            stop.cancel();
            load.await.unwrap();
            server.restart().await;
        }

        let acknowledged = acknowledged.lock().unwrap().clone();
        let messages: Vec<(i64, String)> = acknowledged
            .iter()
            .filter_map(|w| match w {
                Acknowledged::Message { activity_id, text } => Some((*activity_id, text.clone())),
                Acknowledged::File { .. } => None,
            })
            .collect();
        let files: Vec<String> = acknowledged
            .iter()
            .filter_map(|w| match w {
                Acknowledged::File { file_id } => Some(file_id.clone()),
                Acknowledged::Message { .. } => None,
            })
            .collect();
        assert!(
            !messages.is_empty() && !files.is_empty(),
            "{acknowledged:?}"
        );

        // Present after the restarts.
        let rows = all_activity(&server, &ws).await;
        for (activity_id, text) in &messages {
            let row = rows
                .iter()
                .find(|r| r["id"] == *activity_id)
                .unwrap_or_else(|| panic!("acknowledged message {activity_id} is gone"));
            assert_eq!(row["data"]["text"], text.as_str());
        }
        let every_file = server
            .get(&format!("/workspaces/{ws}/pending-uploads?include=all"))
            .await;
        for fid in &files {
            assert!(
                every_file
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f["file_id"] == fid.as_str()),
                "acknowledged file {fid} is gone"
            );
        }

        // Delivered to the agent, each exactly once. A write committed
        // just before a kill, whose answer never reached the client, is in
        // the database and is delivered too, possibly last: so the wait is
        // for every STORED write (a superset of the acknowledged ones), and
        // only then is silence meaningful (anything more is a duplicate).
        let stored_messages: Vec<i64> = rows
            .iter()
            .filter(|r| {
                r["data"]["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("chaos message "))
            })
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        let stored_files: Vec<String> = every_file
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["file_id"].as_str().unwrap().to_owned())
            .collect();
        let mut seen_messages: Vec<i64> = Vec::new();
        let mut seen_files: Vec<String> = Vec::new();
        while !stored_messages.iter().all(|id| seen_messages.contains(id))
            || !stored_files.iter().all(|f| seen_files.contains(f))
        {
            let line = connect.next_line().await;
            match line["type"].as_str() {
                Some("message") => seen_messages.push(line["activity_id"].as_i64().unwrap()),
                Some("file") => {
                    assert_eq!(line["acked"], true, "{line}");
                    seen_files.push(line["file_id"].as_str().unwrap().to_owned());
                }
                _ => panic!("unexpected line {line}"),
            }
        }
        connect.assert_quiet().await;
        let rows = all_activity(&server, &ws).await;
        for id in &seen_messages {
            assert_eq!(
                seen_messages.iter().filter(|s| *s == id).count(),
                1,
                "message {id} delivered more than once"
            );
            assert!(
                rows.iter().any(|r| r["id"] == *id),
                "delivered {id} is not stored"
            );
        }
        for fid in &seen_files {
            assert_eq!(
                seen_files.iter().filter(|s| *s == fid).count(),
                1,
                "file {fid} delivered more than once"
            );
        }
        let pending = server
            .get(&format!("/workspaces/{ws}/pending-uploads"))
            .await;
        assert_eq!(pending, json!([]), "every file acked");
    })
    .await;
}

impl Connect {
    /// Waits until the logs contain `needle`.
    pub(crate) async fn wait_for_log(&self, needle: &str) {
        eventually(&format!("connect to log {needle:?}"), || async {
            self.logs().contains(needle).then_some(())
        })
        .await;
    }

    /// The command line the OS shows for this process (what `ps` prints).
    fn command_line(&self) -> String {
        let pid = self.child.id().expect("connect is running");
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
            .unwrap_or_else(|e| panic!("no command line for {pid}: {e}"))
    }
}

/// The ids of the server's unacked files of `workspace`, with their state.
async fn pending_files(server: &Server, workspace: &str) -> Vec<(String, String)> {
    let pending = server
        .get(&format!("/workspaces/{workspace}/pending-uploads"))
        .await;
    pending
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["file_id"].as_str().unwrap().to_owned(),
                p["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_local_write_failure_is_retried_until_the_file_lands_and_is_acked_even_across_a_restart()
{
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let server = Server::start(&tmp.path().join("server"), free_port()).await;
        let (ws, token) = server.create_poll_workspace().await;
        let agent = tmp.path().join("agent");

        // Two files staged while the agent is away.
        let files = vec![
            (tmp.path().join("a.txt"), b"first file\n".to_vec()),
            (tmp.path().join("b.txt"), b"second file\n".to_vec()),
        ];
        for (path, bytes) in &files {
            std::fs::write(path, bytes).unwrap();
        }
        let uploaded = upload(&server, &ws, &files).await;
        let ids: Vec<String> = uploaded
            .iter()
            .map(|u| file_id(&ws, u["uri"].as_str().unwrap()))
            .collect();
        // A real local failure, as root too: a folder sits where each file
        // is to be renamed to, so the final rename fails.
        let uploads_dir = agent.join(".molecule").join("chat-uploads");
        let targets: Vec<PathBuf> = ["a.txt", "b.txt"]
            .iter()
            .zip(&ids)
            .map(|(name, id)| uploads_dir.join(format!("{id}-{name}")))
            .collect();
        for target in &targets {
            std::fs::create_dir_all(target.join("in-the-way")).unwrap();
        }

        let mut connect = Connect::start(&server, &ws, &token, &agent, &[]).await;
        let mut failed = Vec::new();
        for _ in 0..2 {
            let line = connect.next_line().await;
            assert_eq!(line["type"], "file_failed", "{line}");
            assert_eq!(line["retrying"], true, "{line}");
            assert!(
                line["error"].as_str().unwrap().contains("Is a directory"),
                "{line}"
            );
            failed.push(line);
        }
        for id in &ids {
            assert!(
                failed.iter().any(|l| l["file_id"] == id.as_str()),
                "{failed:?}"
            );
        }
        let mut pending = pending_files(&server, &ws).await;
        pending.sort();
        let mut expected: Vec<(String, String)> = ids
            .iter()
            .map(|id| (id.clone(), "fetched".into()))
            .collect();
        expected.sort();
        assert_eq!(pending, expected, "neither file is acked");

        // The condition is fixed while connect runs: the file lands on a retry.
        std::fs::remove_dir_all(&targets[0]).unwrap();
        let line = connect.next_line().await;
        assert_eq!(line["type"], "file", "{line}");
        assert_eq!(line["file_id"], ids[0].as_str(), "{line}");
        assert_eq!(line["acked"], true, "{line}");
        assert_eq!(std::fs::read(&targets[0]).unwrap(), files[0].1);
        assert_eq!(
            pending_files(&server, &ws).await,
            vec![(ids[1].clone(), "fetched".to_owned())],
            "only the second file is still unacked"
        );

        // Stopped while the second still fails; fixed while connect is down:
        // the next run retries it although its cursor is past the row.
        let status = connect.terminate().await;
        assert!(status.success(), "{status}");
        std::fs::remove_dir_all(&targets[1]).unwrap();
        let mut connect = Connect::start(&server, &ws, &token, &agent, &[]).await;
        let line = connect.next_line().await;
        assert_eq!(line["type"], "file", "{line}");
        assert_eq!(line["file_id"], ids[1].as_str(), "{line}");
        assert_eq!(line["acked"], true, "{line}");
        assert_all_delivered_files(&server, &connect, &ws, &files, &uploaded).await;
        connect.assert_quiet().await;
    })
    .await;
}

/// Like [`assert_all_delivered`] for files with any names.
async fn assert_all_delivered_files(
    server: &Server,
    connect: &Connect,
    workspace: &str,
    files: &[(PathBuf, Vec<u8>)],
    uploaded: &[Value],
) {
    let mut expected_listing = Vec::new();
    for ((path, bytes), answer) in files.iter().zip(uploaded) {
        let fid = file_id(workspace, answer["uri"].as_str().unwrap());
        let name = format!("{fid}-{}", path.file_name().unwrap().to_str().unwrap());
        let on_disk = std::fs::read(connect.uploads_dir().join(&name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(on_disk == *bytes, "bytes of {name}");
        expected_listing.push(name);
    }
    expected_listing.sort();
    assert_eq!(connect.uploads_listing(), expected_listing);
    assert_eq!(pending_files(server, workspace).await, vec![]);
    let stats = server.get("/admin/pending-uploads/stats").await;
    assert_eq!(stats["pending"], 0, "{stats}");
    assert_eq!(stats["acked"], files.len(), "{stats}");
}

#[tokio::test]
async fn a_second_connect_on_the_same_directory_exits_with_a_clear_error() {
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let server = Server::start(&tmp.path().join("server"), free_port()).await;
        let (ws, token) = server.create_poll_workspace().await;
        let agent = tmp.path().join("agent");
        let mut first = Connect::start(&server, &ws, &token, &agent, &[]).await;
        first.wait_for_log("registered in poll mode").await;

        let second = tokio::time::timeout(
            DEADLINE,
            connect_command(&server, &ws, &agent)
                .args(["--token", &token])
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the second connect kept running")
        .unwrap();
        let stderr = String::from_utf8_lossy(&second.stderr);
        assert_eq!(second.status.code(), Some(1), "{stderr}");
        assert!(second.stdout.is_empty(), "nothing for the agent");
        let lock = std::fs::canonicalize(&agent)
            .unwrap()
            .join(".molecule")
            .join("lock");
        assert!(
            stderr.contains("another `molecule connect` is already running")
                && stderr.contains(&lock.display().to_string()),
            "{stderr}"
        );

        // The first one is unaffected.
        server.cli(&["send", &ws, "still mine"]).await;
        assert_eq!(first.next_line().await["text"], "still mine");
        let status = first.terminate().await;
        assert!(status.success(), "{status}");

        // Once it is gone, the directory is free again.
        let mut again = Connect::start(&server, &ws, &token, &agent, &[]).await;
        server.cli(&["send", &ws, "next"]).await;
        assert_eq!(again.next_line().await["text"], "next");
        again.assert_quiet().await;
    })
    .await;
}

#[tokio::test]
async fn the_token_can_come_from_the_environment_or_a_file_and_stays_off_the_command_line() {
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let server = Server::start(&tmp.path().join("server"), free_port()).await;
        let (ws, token) = server.create_poll_workspace().await;
        let agent = tmp.path().join("agent");

        let help = std::process::Command::new(bin())
            .args(["connect", "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(
            help.contains("--token-file <PATH>") && help.contains("MOLECULE_TOKEN"),
            "{help}"
        );

        // From the environment.
        let mut connect =
            Connect::launch(&server, &ws, &agent, &[], &[("MOLECULE_TOKEN", &token)]).await;
        server.cli(&["send", &ws, "via env"]).await;
        assert_eq!(connect.next_line().await["text"], "via env");
        assert!(!connect.command_line().contains(&token));
        assert!(connect.terminate().await.success());

        // From a file (a trailing newline is fine).
        let token_file = tmp.path().join("token");
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        let mut connect = Connect::launch(
            &server,
            &ws,
            &agent,
            &["--token-file", token_file.to_str().unwrap()],
            &[],
        )
        .await;
        server.cli(&["send", &ws, "via file"]).await;
        assert_eq!(connect.next_line().await["text"], "via file");
        let command_line = connect.command_line();
        assert!(
            !command_line.contains(&token) && command_line.contains("--token-file"),
            "{command_line}"
        );
        assert!(connect.terminate().await.success());

        // No token at all, or an empty file: a clear refusal.
        let none = connect_command(&server, &ws, &agent)
            .output()
            .await
            .unwrap();
        assert_eq!(none.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&none.stderr);
        assert!(
            stderr.contains("--token <TOKEN>") && stderr.contains("--token-file <PATH>"),
            "{stderr}"
        );
        let empty = tmp.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let out = connect_command(&server, &ws, &agent)
            .args(["--token-file", empty.to_str().unwrap()])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{} is empty", empty.display())),
            "{stderr}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_long_poll_held_for_its_full_wait_is_not_a_failure() {
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let server = Server::start(&tmp.path().join("server"), free_port()).await;
        let (ws, token) = server.create_poll_workspace().await;
        let mut connect = Connect::start(
            &server,
            &ws,
            &token,
            &tmp.path().join("agent"),
            &["--poll-wait", "30"],
        )
        .await;
        server.cli(&["send", &ws, "one"]).await;
        assert_eq!(connect.next_line().await["text"], "one");

        // The next poll finds nothing and the server holds it the full 30 s.
        tokio::time::sleep(Duration::from_secs(36)).await;
        let logs = connect.logs();
        assert!(
            !logs.contains("polling the inbox failed"),
            "an idle long poll was reported as a failure: {logs}"
        );
        server.cli(&["send", &ws, "two"]).await;
        let line = tokio::time::timeout(Duration::from_secs(5), connect.next_line())
            .await
            .expect("the next message arrived on the held poll, without a reconnect");
        assert_eq!(line["text"], "two");
        assert!(!connect.logs().contains("polling the inbox failed"));
    })
    .await;
}

/// Two real `connect` processes: A delegates to B (B's agent is an
/// `--exec` command), B's connect marks the delegation dispatched, runs the
/// agent and reports its answer; the result comes back to A's agent as a
/// `delegation_result` line. A failing agent ends the delegation failed
/// with its exit status.
#[tokio::test]
async fn a_delegation_goes_from_a_to_b_and_its_result_back_to_a() {
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let server = Server::start(&tmp.path().join("server"), free_port()).await;
        let (a, a_token) = server.create_poll_workspace().await;
        let (b, b_token) = server.create_poll_workspace().await;
        let exec = r#"cat > task.json; if grep -q please-fail task.json; then exit 3; fi; echo "B did: $(grep -o 'summarize[a-z ]*' task.json)""#;
        let mut connect_a = Connect::start(&server, &a, &a_token, &tmp.path().join("agent-a"), &[]).await;
        let _connect_b = Connect::start(
            &server,
            &b,
            &b_token,
            &tmp.path().join("agent-b"),
            &["--exec", exec],
        )
        .await;

        let created = server
            .cli(&["delegate", &a, &b, "summarize the notes", "--key", "e2e-1"])
            .await;
        let did = created["delegation_id"].as_str().unwrap().to_owned();
        let line = connect_a.next_line().await;
        assert_eq!(line["type"], "delegation_result", "{line}");
        assert_eq!(line["delegation_id"], did.as_str());
        assert_eq!(line["status"], "completed");
        assert_eq!(line["result_preview"], "B did: summarize the notes");
        assert_eq!(line["error_detail"], Value::Null);
        assert_eq!(line["source_id"], b.as_str());
        let row = server.get(&format!("/workspaces/{a}/delegations/{did}")).await;
        assert_eq!(row["status"], "completed");
        assert_eq!(row["result_preview"], "B did: summarize the notes");
        assert!(row["last_heartbeat_at"].is_string());
        let seen: Value = serde_json::from_str(
            &std::fs::read_to_string(tmp.path().join("agent-b").join("task.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(seen["type"], "delegation");
        assert_eq!(seen["delegation_id"], did.as_str());
        assert_eq!(seen["source_id"], a.as_str());

        // The same key again: nothing new reaches B or A.
        let again = server
            .cli(&["delegate", &a, &b, "summarize the notes", "--key", "e2e-1"])
            .await;
        assert_eq!(again["deduplicated"], true);

        let failed = server
            .cli(&["delegate", &a, &b, "please-fail now", "--key", "e2e-2"])
            .await;
        let line = connect_a.next_line().await;
        assert_eq!(line["type"], "delegation_result", "{line}");
        assert_eq!(line["delegation_id"], failed["delegation_id"]);
        assert_eq!(line["status"], "failed");
        assert_eq!(
            line["error_detail"],
            "the --exec command exited with exit status: 3"
        );
        connect_a.assert_quiet().await;
        let b_tasks = server
            .get(&format!("/workspaces/{b}/delegations?role=callee"))
            .await;
        assert_eq!(b_tasks.as_array().unwrap().len(), 2, "{b_tasks}");
    })
    .await;
}

/// Without `--exec` or `--forward`, a delegation is one JSON line on
/// stdout and the ledger says `dispatched`: the agent reports the rest
/// through the API itself.
#[tokio::test]
async fn a_delegation_is_a_json_line_and_dispatched_in_stdout_mode() {
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let server = Server::start(&tmp.path().join("server"), free_port()).await;
        let (b, b_token) = server.create_poll_workspace().await;
        let mut connect =
            Connect::start(&server, &b, &b_token, &tmp.path().join("agent"), &[]).await;
        let created = server
            .cli(&[
                "delegate",
                "operator",
                &b,
                "triage the inbox",
                "--deadline",
                "1h",
            ])
            .await;
        let did = created["delegation_id"].as_str().unwrap().to_owned();
        let line = connect.next_line().await;
        assert_eq!(line["type"], "delegation", "{line}");
        assert_eq!(line["delegation_id"], did.as_str());
        assert_eq!(line["task"], "triage the inbox");
        assert_eq!(line["source_id"], "operator");
        assert!(line["deadline"].is_string());
        let row = eventually("the delegation dispatched", || async {
            let row = server
                .get(&format!("/workspaces/{b}/delegations/{did}"))
                .await;
            (row["status"] == "dispatched").then_some(row)
        })
        .await;
        assert!(row["last_heartbeat_at"].is_string());
        connect.assert_quiet().await;
    })
    .await;
}

/// B's `connect` is killed (SIGKILL) while its agent works on a task from
/// A: with no heartbeat the sweeper marks the delegation `stuck`; when B's
/// connect comes back it replays the unfinished row, runs the task again
/// and reports it `completed`, and the result reaches A's agent.
#[tokio::test]
async fn a_killed_callee_ends_stuck_then_completed_when_it_returns() {
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let server = Server::start_with(
            &tmp.path().join("server"),
            free_port(),
            &["--sweep-interval", "1s", "--delegation-stuck-after", "4s"],
        )
        .await;
        let (a, a_token) = server.create_poll_workspace().await;
        let (b, b_token) = server.create_poll_workspace().await;
        // B's agent works until the test drops a `release` file beside it.
        let exec = r#"cat > task.json; while [ ! -f release ]; do sleep 0.1; done; echo "B finished: $(grep -o 'the long job' task.json)""#;
        let b_dir = tmp.path().join("agent-b");
        let mut connect_a =
            Connect::start(&server, &a, &a_token, &tmp.path().join("agent-a"), &[]).await;
        let mut connect_b =
            Connect::start(&server, &b, &b_token, &b_dir, &["--exec", exec]).await;

        let created = server
            .cli(&["delegate", &a, &b, "the long job", "--key", "e2e-stuck"])
            .await;
        let did = created["delegation_id"].as_str().unwrap().to_owned();
        let row_path = format!("/workspaces/{a}/delegations/{did}");
        eventually("B's agent working on the task", || async {
            let row = server.get(&row_path).await;
            (row["status"] == "in_progress" && b_dir.join("task.json").exists()).then_some(())
        })
        .await;

        connect_b.child.kill().await.expect("kill B's connect");
        let row = eventually("the silent delegation marked stuck", || async {
            let row = server.get(&row_path).await;
            (row["status"] == "stuck").then_some(row)
        })
        .await;
        assert_eq!(row["error_detail"], "no heartbeat for 4s");
        assert_eq!(row["completed_at"], Value::Null);
        connect_a.assert_quiet().await;

        // B comes back; its agent can finish this time.
        std::fs::write(b_dir.join("release"), b"").unwrap();
        let _connect_b = Connect::start(&server, &b, &b_token, &b_dir, &["--exec", exec]).await;
        let line = connect_a.next_line().await;
        assert_eq!(line["type"], "delegation_result", "{line}");
        assert_eq!(line["delegation_id"], did.as_str());
        assert_eq!(line["status"], "completed");
        assert_eq!(line["result_preview"], "B finished: the long job");
        assert_eq!(line["source_id"], b.as_str());
        let row = server.get(&row_path).await;
        assert_eq!(row["status"], "completed");
        assert_eq!(row["result_preview"], "B finished: the long job");
        assert!(row["completed_at"].is_string(), "{row}");
        // Delivered to B once: the second run was connect replaying its
        // unfinished row, not a second inbox row.
        let b_inbox = server
            .get(&format!("/workspaces/{b}/activity?type=a2a_receive"))
            .await;
        let delegate_rows = b_inbox
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["method"] == "delegate")
            .count();
        assert_eq!(delegate_rows, 1, "{b_inbox}");
        connect_a.assert_quiet().await;
    })
    .await;
}

/// Every process whose command line contains `needle`: (pid, command line).
fn processes_with(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A process may exit between the listing and the read.
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        if line.contains(needle) {
            found.push((pid, line));
        }
    }
    found
}

/// Pastes `line` into a POSIX shell (on its stdin, as a terminal would:
/// not as `sh -c LINE`, whose own arguments would carry it) with `home` as
/// HOME, `molecule` on the PATH and `dir` as the working folder; returns
/// the shell and the stdout lines of what it runs.
async fn paste_into_shell(
    line: &str,
    home: &Path,
    dir: &Path,
) -> (Child, mpsc::UnboundedReceiver<Value>) {
    use tokio::io::AsyncWriteExt;
    let bin_dir = Path::new(bin()).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    std::fs::create_dir_all(dir).unwrap();
    let mut shell = Command::new("sh")
        .current_dir(dir)
        .env("HOME", home)
        .env("PATH", path)
        .env_remove("MOLECULE_TOKEN")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start sh");
    let mut stdin = shell.stdin.take().unwrap();
    stdin
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let (tx, lines) = mpsc::unbounded_channel();
    let stdout = shell.stdout.take().unwrap();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            let _ = tx.send(serde_json::from_str(&line).unwrap_or(json!({"line": line})));
        }
    });
    (shell, lines)
}

/// Stops the `molecule connect` of `workspace` (a child of the shell, so
/// the shell's kill-on-drop would not reach it) and waits for the shell.
async fn stop_pasted_connect(workspace: &str, mut shell: Child) {
    for (pid, _) in processes_with("connect --server") {
        let line = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&line).contains(workspace) {
            let killed = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap();
            assert!(killed.success());
        }
    }
    let status = tokio::time::timeout(DEADLINE, shell.wait())
        .await
        .expect("connect did not stop on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn the_handed_out_connect_line_works_as_pasted_and_puts_the_token_on_no_command_line() {
    use std::os::unix::fs::PermissionsExt;
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let server = Server::start(&tmp.path().join("server"), free_port()).await;
        let created = server
            .cli(&["workspace", "create", "--name", "pasted", "--mode", "poll"])
            .await;
        let ws = created["id"].as_str().unwrap().to_owned();
        let token = created["auth_token"].as_str().unwrap().to_owned();
        let line = created["connection"]["connect_command"].as_str().unwrap();
        let file = format!("~/.molecule/{ws}.token");
        assert_eq!(
            line,
            format!(
                "(umask 077 && mkdir -p ~/.molecule && echo {token} > {file}) && molecule connect \
                 --server {} --workspace {ws} --token-file {file} --dir .",
                server.url()
            )
        );
        let home = tmp.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let agent = tmp.path().join("agent");
        let (shell, mut lines) = paste_into_shell(line, &home, &agent).await;

        server.cli(&["send", &ws, "pasted"]).await;
        let got = tokio::time::timeout(DEADLINE, lines.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got["text"], "pasted", "{got}");
        // The token is in a private file, and on no process's command line.
        let saved = home.join(".molecule").join(format!("{ws}.token"));
        assert_eq!(
            std::fs::read_to_string(&saved).unwrap(),
            format!("{token}\n")
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&saved), 0o600);
        assert_eq!(mode(&home.join(".molecule")), 0o700);
        assert_eq!(processes_with(&token), vec![]);
        let running = processes_with(&format!("--workspace {ws}"));
        assert!(
            running.iter().any(|(_, l)| l.contains("--token-file")),
            "{running:?}"
        );
        stop_pasted_connect(&ws, shell).await;

        // The block shown again (no token) starts connect from that file.
        let again = server
            .get(&format!("/workspaces/{ws}/external/connection"))
            .await;
        let line = again["connection"]["connect_command"].as_str().unwrap();
        assert_eq!(
            line,
            format!(
                "molecule connect --server {} --workspace {ws} --token-file {file} --dir .",
                server.url()
            )
        );
        let (shell, mut lines) = paste_into_shell(line, &home, &agent).await;
        server.cli(&["send", &ws, "again"]).await;
        let got = tokio::time::timeout(DEADLINE, lines.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got["text"], "again", "{got}");
        stop_pasted_connect(&ws, shell).await;
    })
    .await;
}

// Traces (issue 28): a three-hop chain under real `molecule connect` agents.

/// The operator hands A a task; A's `--exec` agent delegates to B with the
/// `molecule delegate` CLI, B's to C, C answers. Connect hands each agent
/// its hop's context as `TRACEPARENT`, the CLI carries it on the nested
/// delegation, and each agent then reports a model call under it: one
/// trace, hop A ⊃ hop B ⊃ hop C, each with its model call, tokens summed.
async fn a_three_hop_chain_of_connect_agents_is_one_trace(postgres: bool) {
    bounded(async {
        let tmp = TempDir::new().unwrap();
        let mut extra = Vec::new();
        if postgres {
            let Some(url) = crate::helpers::fresh_postgres_url().await else {
                return;
            };
            extra = vec!["--database-url".to_owned(), url];
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let server = Server::start_with(&tmp.path().join("server"), free_port(), &extra).await;
        let (a, a_token) = server.create_poll_workspace().await;
        let (b, b_token) = server.create_poll_workspace().await;
        let (c, c_token) = server.create_poll_workspace().await;
        let url = server.url();
        let hop = |from: &str, to: &str, task: &str| {
            format!(
                r#"cat > event.json; grep -q '"type":"delegation"' event.json || exit 0; echo "$TRACEPARENT" > traceparent; {} delegate {from} {to} {task} --key {task} --server {url} --admin-token {ADMIN_TOKEN} --json > delegated.json && echo "handed on""#,
                bin()
            )
        };
        let agents = [
            (&a, &a_token, "agent-a", hop(&a, &b, "hop-two")),
            (&b, &b_token, "agent-b", hop(&b, &c, "hop-three")),
            (&c, &c_token, "agent-c", r#"cat > task.json; echo "$TRACEPARENT" > traceparent; echo "C did it""#.to_owned()),
        ];
        let mut connects = Vec::new();
        for (ws, token, dir, exec) in &agents {
            let dir = tmp.path().join(dir);
            connects.push(Connect::start(&server, ws, token, &dir, &["--exec", exec]).await);
        }

        let created = server
            .cli(&["delegate", "operator", &a, "hop-one", "--key", "hop-one"])
            .await;
        let did = created["delegation_id"].as_str().unwrap().to_owned();
        for ws in [&c, &b, &a] {
            eventually(&format!("{ws}'s task completed"), || async {
                let rows = server
                    .get(&format!("/workspaces/{ws}/delegations?role=callee"))
                    .await;
                (rows[0]["status"] == "completed").then_some(())
            })
            .await;
        }
        let row = server.get("/admin/delegations?limit=10").await;
        let first = row
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == did.as_str())
            .cloned()
            .unwrap();
        let trace = first["trace_id"].as_str().unwrap().to_owned();
        // Each agent saw its own hop's context, in the one trace (A and B
        // also got their delegation's result, which they ignore).
        let mut contexts = Vec::new();
        for (ws, token, dir, _) in &agents {
            let p = std::fs::read_to_string(tmp.path().join(dir).join("traceparent")).unwrap();
            let p = p.trim().to_owned();
            assert_eq!(p.split('-').nth(1), Some(trace.as_str()), "{dir}: {p}");
            contexts.push(p.clone());
            let rows = server
                .get(&format!("/workspaces/{ws}/delegations?role=callee"))
                .await;
            assert_eq!(rows[0]["traceparent"], p.as_str(), "{dir}");
            // The agent reports a model call under it.
            let n = 10 * contexts.len() as i64;
            let start = chrono::Utc::now();
            let r = reqwest::Client::new()
                .post(format!("{url}/workspaces/{ws}/traces"))
                .bearer_auth(token)
                .header("traceparent", &p)
                .json(&json!({"spans": [{"name": "model", "kind": "llm",
                    "start": start.to_rfc3339(), "end": (start + chrono::Duration::seconds(1)).to_rfc3339(),
                    "input_tokens": n, "output_tokens": 1, "model": "claude-sonnet-4"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), reqwest::StatusCode::CREATED);
        }
        assert_eq!(
            contexts.iter().collect::<std::collections::HashSet<_>>().len(),
            3
        );

        let t = server.get(&format!("/traces/{trace}")).await;
        assert_eq!(t["span_count"], 6, "{t}");
        assert_eq!(t["total"]["input_tokens"], 60);
        assert_eq!(t["total"]["output_tokens"], 3);
        assert_eq!(t["roots"].as_array().unwrap().len(), 1, "{t}");
        let mut node = &t["roots"][0];
        for (i, (ws, callers)) in [(&a, "operator"), (&b, a.as_str()), (&c, b.as_str())]
            .into_iter()
            .enumerate()
        {
            assert_eq!(node["kind"], "server", "{node}");
            assert_eq!(node["workspace_id"], ws.as_str());
            assert_eq!(node["caller_id"], callers);
            assert_eq!(node["status"], "completed");
            assert_eq!(node["total"]["input_tokens"], [60, 50, 30][i]);
            let kids = node["children"].as_array().unwrap();
            let llm = kids.iter().find(|k| k["kind"] == "llm").unwrap();
            assert_eq!(llm["workspace_id"], ws.as_str());
            assert_eq!(llm["own"]["input_tokens"], 10 * (i as i64 + 1));
            assert_eq!(kids.len(), if i < 2 { 2 } else { 1 }, "{node}");
            if i < 2 {
                node = kids.iter().find(|k| k["kind"] == "server").unwrap();
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_three_hop_chain_of_connect_agents_is_one_trace_sqlite() {
    a_three_hop_chain_of_connect_agents_is_one_trace(false).await;
}

#[tokio::test]
async fn a_three_hop_chain_of_connect_agents_is_one_trace_postgres() {
    a_three_hop_chain_of_connect_agents_is_one_trace(true).await;
}
