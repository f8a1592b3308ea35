//! Chaos over the kinds of work beyond messages and uploads: `molecule
//! serve` (the real binary, SQLite) is killed with SIGKILL at seeded random
//! moments while clients decide approvals, send A2A tasks with push
//! notifications and move them, and revoke tokens; it is restarted each
//! time, and the clients retry what went unanswered, as real ones do. At the
//! end every write the server acknowledged is checked:
//!
//! - an approval decision is recorded exactly once: its status, one
//!   `approval.decided` audit row (and the chain still checks), one
//!   `approval_decided` inbox row;
//! - an A2A task exists with its history and its push config, and every
//!   acknowledged move of it was POSTed to the webhook at least once;
//! - a revoked token is refused after the restarts, and a long poll held
//!   with it ended when the revocation was acknowledged.
//!
//! Each test prints its counts (acknowledged / lost / duplicated / corrupt).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::helpers::{free_port, wait_until_ready};

pub(crate) const ADMIN: &str = "work-chaos-admin-token-51c2";
/// SIGKILLs per test.
pub(crate) const KILLS: usize = 8;
/// Concurrent clients per test.
pub(crate) const WORKERS: usize = 4;
/// Concurrent reads when the acknowledged writes are checked.
pub(crate) const CHECKERS: usize = 4;
/// How long a request of the setup or of the checks may take (the server
/// is up then; a loaded machine may be slow to answer).
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The secrets key replicas of one database share (a test value).
const SECRETS_KEY: &str = "4d6f6c6563756c65206368616f73206b6579206f662074657374732c2032362e";

/// One server data directory on one port, killed and restarted at will;
/// on SQLite, or on the PostgreSQL database `database_url` names.
pub(crate) struct Life {
    dir: tempfile::TempDir,
    port: u16,
    database_url: Option<String>,
    child: Option<Child>,
}

impl Life {
    pub(crate) async fn start() -> Self {
        Self::start_on(None).await
    }

    /// A server on `database_url` (PostgreSQL; every replica of it shares
    /// the secrets key), or on SQLite in its data directory.
    pub(crate) async fn start_on(database_url: Option<String>) -> Self {
        let mut life = Self {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            database_url,
            child: None,
        };
        life.restart().await;
        life
    }

    /// True while the process started last is running (it was not
    /// restarted behind the test's back, nor did it die).
    pub(crate) fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub(crate) fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL: no shutdown of any kind.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    pub(crate) async fn restart(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_molecule"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--admin-token", ADMIN, "--allow-private-urls"])
            .args(["--sweep-interval", "200ms", "--schedule-tick", "50ms"])
            .arg("--data-dir")
            .arg(self.dir())
            .env_remove("DATABASE_URL")
            .env_remove("MOLECULE_BLOB_STORE");
        if let Some(url) = &self.database_url {
            cmd.args(["--database-url", url])
                .env("MOLECULE_SECRETS_KEY", SECRETS_KEY);
        }
        let mut child = cmd
            // Suites hammer one server from one address.
            .env("MOLECULE_RATE_LIMIT", "off")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start molecule serve");
        wait_until_ready(&self.base(), &mut child).await;
        self.child = Some(child);
    }

    /// Runs the database file's pool through `f` (the server may be up:
    /// SQLite in WAL mode lets a reader in).
    async fn db<T, F, Fut>(&self, f: F) -> T
    where
        F: FnOnce(sqlx::SqlitePool) -> Fut,
        Fut: Future<Output = T>,
    {
        let url = format!("sqlite://{}", self.dir().join("molecule.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let out = f(pool.clone()).await;
        pool.close().await;
        out
    }
}

/// A client that gives up on a request after 5 s (a killed server's
/// half-open connections must not hang a worker).
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Sends `req` (given a server's base URL) until a server answers (any
/// status); `None` once `stop` is cancelled. A connection error is a killed
/// server: retry shortly, on the next of `bases` (a replica that is up).
pub(crate) async fn answered(
    stop: &CancellationToken,
    bases: &[String],
    req: impl Fn(&str) -> reqwest::RequestBuilder,
) -> Option<(StatusCode, Value)> {
    for attempt in 0.. {
        if stop.is_cancelled() {
            return None;
        }
        match req(&bases[attempt % bases.len()]).send().await {
            // A restart answers 503 while it comes up; retry like a client.
            Ok(r) if r.status() != StatusCode::SERVICE_UNAVAILABLE => {
                let status = r.status();
                match r.json::<Value>().await {
                    Ok(body) => return Some((status, body)),
                    // Cut mid-answer: not acknowledged.
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    unreachable!()
}

/// Kills the server `KILLS` times at seeded random moments, each time after
/// at least one more write was acknowledged, and restarts it; the clients
/// keep working throughout. Returns with the server up and the clients
/// stopped.
pub(crate) async fn kill_loop(
    life: &mut Life,
    seed: u64,
    acked: &AtomicUsize,
    stop: CancellationToken,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..KILLS {
        let before = acked.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(20);
        while acked.load(Ordering::SeqCst) == before {
            assert!(Instant::now() < deadline, "no write acknowledged in 20 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..700))).await;
        life.kill().await;
        life.restart().await;
    }
    stop.cancel();
}

/// Creates a poll workspace (under `parent`); its id and token.
pub(crate) async fn workspace(base: &str, name: &str, parent: Option<&str>) -> (String, String) {
    let mut body = json!({"name": name, "delivery_mode": "poll"});
    if let Some(p) = parent {
        body["parent_id"] = json!(p);
    }
    let resp = client()
        .post(format!("{base}/workspaces"))
        .bearer_auth(ADMIN)
        .json(&body)
        .timeout(CHECK_TIMEOUT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v: Value = resp.json().await.unwrap();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["auth_token"].as_str().unwrap().to_owned(),
    )
}

/// A read of the checks.
pub(crate) async fn get(base: &str, path: &str, token: &str) -> (StatusCode, Value) {
    let r = client()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .timeout(CHECK_TIMEOUT)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Every activity row of `ws`, following the cursor.
pub(crate) async fn all_activity(base: &str, ws: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut since = 0;
    loop {
        let (status, page) = get(
            base,
            &format!("/workspaces/{ws}/activity?since_id={since}&limit=500"),
            ADMIN,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let page = page.as_array().unwrap().clone();
        let Some(last) = page.last() else {
            return rows;
        };
        since = last["id"].as_i64().unwrap();
        rows.extend(page);
    }
}

/// The counts a chaos test reports.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub acknowledged: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub corrupt: usize,
}

impl Tally {
    pub(crate) fn print(&self, what: &str, started: Instant) {
        println!(
            "{what}: {} acknowledged, {} lost, {} duplicated, {} corrupt, {:.1}s",
            self.acknowledged,
            self.lost,
            self.duplicated,
            self.corrupt,
            started.elapsed().as_secs_f64()
        );
    }
}

/// An acknowledged decision: (requester, approval id, decision).
pub(crate) type Decision = (String, String, String);

/// One client: asks for approvals with its workspace's token and has the
/// operator decide each, retrying a decide that went unanswered (a 409 then
/// says an earlier try committed).
pub(crate) async fn approval_client(
    bases: Vec<String>,
    (ws, token): (String, String),
    seed: u64,
    stop: CancellationToken,
    acked: Arc<AtomicUsize>,
    decisions: Arc<Mutex<Vec<Decision>>>,
) {
    let http = client();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for n in 0.. {
        let asked = answered(&stop, &bases, |base| {
            http.post(format!("{base}/workspaces/{ws}/approvals"))
                .bearer_auth(&token)
                .json(&json!({"action": format!("chaos {seed}-{n}")}))
        })
        .await;
        let Some((status, asked)) = asked else { return };
        assert_eq!(status, StatusCode::CREATED, "{asked}");
        let id = asked["approval_id"].as_str().unwrap().to_owned();
        let decision = if rng.random_bool(0.5) {
            "approved"
        } else {
            "denied"
        };
        let decided = answered(&stop, &bases, |base| {
            http.post(format!("{base}/workspaces/{ws}/approvals/{id}/decide"))
                .bearer_auth(ADMIN)
                .json(&json!({"decision": decision, "note": format!("n{n}")}))
        })
        .await;
        match decided {
            Some((StatusCode::OK, body)) => {
                assert_eq!(body["status"], decision, "{body}");
                decisions
                    .lock()
                    .unwrap()
                    .push((ws.clone(), id, decision.to_owned()));
                acked.fetch_add(1, Ordering::SeqCst);
            }
            // An earlier try committed, its answer lost with the server.
            Some((StatusCode::CONFLICT, _)) | None => {}
            Some((status, body)) => panic!("decide answered {status}: {body}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_and_doubles_no_approval_decision() {
    let started = Instant::now();
    let mut life = Life::start().await;
    let base = life.base();
    let stop = CancellationToken::new();
    let acked = Arc::new(AtomicUsize::new(0));
    let decisions = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    let mut spaces = Vec::new();
    for w in 0..WORKERS {
        let ws = workspace(&base, &format!("asker{w}"), None).await;
        spaces.push(ws.0.clone());
        workers.push(tokio::spawn(approval_client(
            vec![base.clone()],
            ws,
            w as u64,
            stop.clone(),
            acked.clone(),
            decisions.clone(),
        )));
    }
    kill_loop(&mut life, 0xa9_9207, &acked, stop).await;
    for w in workers {
        w.await.unwrap();
    }
    let decisions = decisions.lock().unwrap().clone();
    let tally = check_approvals(&base, &spaces, &decisions).await;
    tally.print(&format!("approval chaos, {KILLS} SIGKILLs"), started);
    assert!(decisions.len() >= KILLS, "{tally:?}");
    assert_eq!((tally.lost, tally.duplicated, tally.corrupt), (0, 0, 0));
}

/// Counts the acknowledged `decisions` of the requests of `spaces` that
/// are lost, recorded twice or wrong; and asserts that every decided
/// request, acknowledged or not, has one audit row and one inbox row.
pub(crate) async fn check_approvals(
    base: &str,
    spaces: &[String],
    decisions: &[Decision],
) -> Tally {
    // The trail: one `approval.decided` row per decided request.
    let mut audit: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for offset in (0..).step_by(1000) {
        let (status, page) = get(
            base,
            &format!("/admin/audit?action=approval.decided&limit=1000&offset={offset}"),
            ADMIN,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["chain_valid"], true, "the audit chain broke: {page}");
        let events = page["events"].as_array().unwrap();
        for e in events {
            let target = e["target"].as_str().unwrap_or_default();
            let id = target.strip_prefix("approval:").unwrap_or(target);
            audit.entry(id.to_owned()).or_default().push(e.clone());
        }
        if events.len() < 1000 {
            break;
        }
    }
    // The inboxes: one `approval_decided` row per decided request.
    let mut inbox: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut stored: BTreeMap<String, String> = BTreeMap::new();
    for ws in spaces {
        for row in all_activity(base, ws).await {
            if row["method"] == "approval_decided" {
                let id = row["data"]["approval_id"].as_str().unwrap().to_owned();
                inbox.entry(id).or_default().push(row);
            }
        }
        let (status, list) = get(base, &format!("/workspaces/{ws}/approvals"), ADMIN).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        for a in list.as_array().unwrap() {
            stored.insert(
                a["id"].as_str().unwrap().to_owned(),
                a["status"].as_str().unwrap().to_owned(),
            );
        }
    }

    let mut tally = Tally {
        acknowledged: decisions.len(),
        ..Tally::default()
    };
    for (_, id, decision) in decisions {
        match stored.get(id) {
            Some(status) if status == decision => {}
            Some(_) => tally.corrupt += 1,
            None => tally.lost += 1,
        }
        for rows in [audit.get(id), inbox.get(id)] {
            match rows.map_or(0, Vec::len) {
                0 => tally.lost += 1,
                1 => {}
                _ => tally.duplicated += 1,
            }
        }
        let row = &audit.get(id).and_then(|r| r.first()).cloned();
        if row
            .as_ref()
            .is_some_and(|r| r["details"]["decision"] != decision.as_str())
        {
            tally.corrupt += 1;
        }
    }
    // Decided without an answer reaching the client: recorded once too.
    for (id, status) in &stored {
        let rows = (
            audit.get(id).map_or(0, Vec::len),
            inbox.get(id).map_or(0, Vec::len),
        );
        let expected = if status == "pending" { (0, 0) } else { (1, 1) };
        assert_eq!(
            rows, expected,
            "approval {id} ({status}): audit and inbox rows"
        );
    }
    tally
}

/// What the webhook was sent: (task id, state) per POST.
type Hits = Arc<Mutex<Vec<(String, String)>>>;

/// A webhook on 127.0.0.1 that answers 200 and records every notification
/// (one without a task id, a state or the config's token is recorded as
/// corrupt).
async fn webhook() -> (String, Hits) {
    let hits: Hits = Arc::default();
    let seen = hits.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                let seen = seen.clone();
                async move {
                    let task = &body["task"];
                    let token = headers.get("x-a2a-notification-token");
                    let hit = (
                        task["id"].as_str().unwrap_or("corrupt").to_owned(),
                        task["status"]["state"]
                            .as_str()
                            .filter(|_| token.is_some_and(|t| t == "chaos"))
                            .unwrap_or("corrupt")
                            .to_owned(),
                    );
                    seen.lock().unwrap().push(hit);
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hits)
}

/// An acknowledged A2A task: id, its message's text, and the states of
/// the moves acknowledged after it (each owes one notification).
#[derive(Debug, Clone)]
struct Task {
    id: String,
    text: String,
    moves: Vec<&'static str>,
}

/// The parties of the A2A test: the caller and the agent (its child).
#[derive(Clone)]
struct Parties {
    boss: (String, String),
    kid: (String, String),
    hook: String,
}

/// One client: sends tasks (`SendMessage`, a push config with it, not
/// waiting) as the boss, then moves each as the agent: in progress, then
/// completed. A repeat of the same messageId is the same task.
async fn a2a_client(
    bases: Vec<String>,
    parties: Parties,
    seed: u64,
    stop: CancellationToken,
    acked: Arc<AtomicUsize>,
    tasks: Arc<Mutex<Vec<Task>>>,
) {
    let http = client();
    let (kid, kid_token) = &parties.kid;
    for n in 0.. {
        let text = format!("chaos task {seed}-{n}");
        let message_id = format!("chaos-{seed}-{n}");
        let sent = answered(&stop, &bases, |base| {
            http.post(format!("{base}/workspaces/{kid}/a2a"))
                .bearer_auth(&parties.boss.1)
                .header("A2A-Version", "1.0")
                .json(&json!({"jsonrpc": "2.0", "id": n, "method": "SendMessage", "params": {
                    "message": {"messageId": message_id, "role": "ROLE_USER", "parts": [{"text": text}]},
                    "configuration": {"returnImmediately": true, "taskPushNotificationConfig": {
                        "id": "hook", "url": parties.hook, "token": "chaos"}}}}))
        })
        .await;
        let Some((status, sent)) = sent else { return };
        assert_eq!(status, StatusCode::OK, "{sent}");
        let id = sent["result"]["task"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{sent}"))
            .to_owned();
        let index = {
            let mut tasks = tasks.lock().unwrap();
            tasks.push(Task {
                id: id.clone(),
                text,
                moves: Vec::new(),
            });
            tasks.len() - 1
        };
        acked.fetch_add(1, Ordering::SeqCst);
        for (status, state) in [
            ("in_progress", "TASK_STATE_WORKING"),
            ("completed", "TASK_STATE_COMPLETED"),
        ] {
            let moved = answered(&stop, &bases, |base| {
                http.post(format!("{base}/workspaces/{kid}/delegations/{id}/status"))
                    .bearer_auth(kid_token)
                    .json(&json!({"status": status, "result_preview": "done"}))
            })
            .await;
            match moved {
                Some((StatusCode::OK, _)) => {
                    tasks.lock().unwrap()[index].moves.push(state);
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                None => return,
                // A retry of a move that committed: refused as a repeat.
                Some((s, body)) if s.is_client_error() => {
                    eprintln!("move {status} of {id} retried: {s} {body}");
                }
                Some((s, body)) => panic!("move answered {s}: {body}"),
            }
        }
    }
}

/// The A2A side of a chaos run: the webhook, the two parties, and what
/// the clients were acknowledged.
pub(crate) struct A2aLoad {
    parties: Parties,
    hits: Hits,
    tasks: Arc<Mutex<Vec<Task>>>,
}

impl A2aLoad {
    /// The webhook and the parties, made through `base`.
    pub(crate) async fn new(base: &str) -> Self {
        let (hook, hits) = webhook().await;
        let boss = workspace(base, "boss", None).await;
        let kid = workspace(base, "kid", Some(&boss.0)).await;
        Self {
            parties: Parties { boss, kid, hook },
            hits,
            tasks: Arc::default(),
        }
    }

    /// One client working through the first of `bases` that answers.
    pub(crate) fn spawn(
        &self,
        bases: Vec<String>,
        seed: u64,
        stop: CancellationToken,
        acked: Arc<AtomicUsize>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(a2a_client(
            bases,
            self.parties.clone(),
            seed,
            stop,
            acked,
            self.tasks.clone(),
        ))
    }

    /// Counts the acknowledged tasks and moves that are lost (a task, its
    /// history, config or state; a move never notified), notified more than
    /// once (allowed: at least once is the promise) or corrupt; once no
    /// notification is owed any more. With a summary of the run.
    pub(crate) async fn check(&self, base: &str) -> (Tally, String) {
        let tasks = self.tasks.lock().unwrap().clone();
        let hits = self.hits.lock().unwrap().clone();
        let mut per_move: BTreeMap<(String, String), usize> = BTreeMap::new();
        for hit in &hits {
            *per_move.entry(hit.clone()).or_default() += 1;
        }
        let mut tally = Tally::default();
        let mut moves = 0;
        let ((kid, _), (_, boss)) = (&self.parties.kid, &self.parties.boss);
        // Each task and its configs, read a few at a time.
        let read: Vec<(Value, Value)> = futures::stream::iter(&tasks)
            .map(|task| async move {
                let (status, got) = rpc(base, kid, boss, "GetTask", json!({"id": task.id})).await;
                assert_eq!(status, StatusCode::OK, "{got}");
                let (status, configs) = rpc(
                    base,
                    kid,
                    boss,
                    "ListTaskPushNotificationConfigs",
                    json!({"taskId": task.id}),
                )
                .await;
                assert_eq!(status, StatusCode::OK, "{configs}");
                (got, configs)
            })
            .buffered(CHECKERS)
            .collect()
            .await;
        for (task, (got, configs)) in tasks.iter().zip(&read) {
            tally.acknowledged += 1;
            let got = &got["result"];
            if got["id"] != task.id.as_str() {
                // The task and every move of it.
                tally.acknowledged += task.moves.len();
                tally.lost += 1 + task.moves.len();
                continue;
            }
            if got["history"][0]["parts"][0]["text"] != task.text.as_str() {
                tally.corrupt += 1;
            }
            // The last acknowledged move is where the task stands (or past it).
            let state = got["status"]["state"].as_str().unwrap_or_default();
            match task.moves.last() {
                Some(&"TASK_STATE_COMPLETED") if state != "TASK_STATE_COMPLETED" => tally.lost += 1,
                Some(_) if state == "TASK_STATE_SUBMITTED" => tally.lost += 1,
                _ => {}
            }
            if configs["result"]["configs"].as_array().map(Vec::len) != Some(1) {
                tally.lost += 1;
            }
            for state in &task.moves {
                moves += 1;
                tally.acknowledged += 1;
                match per_move.get(&(task.id.clone(), (*state).to_owned())) {
                    None => tally.lost += 1,
                    Some(1) => {}
                    // At least once is the promise: counted, not refused.
                    Some(_) => tally.duplicated += 1,
                }
            }
        }
        // A notification without a task id, a state or the token.
        tally.corrupt += hits
            .iter()
            .filter(|(id, state)| state == "corrupt" || id == "corrupt")
            .count();
        let known: BTreeSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        let unknown = hits
            .iter()
            .filter(|(id, _)| !known.contains(id.as_str()))
            .count();
        let summary = format!(
            "{} tasks, {moves} moves, {} notifications, {unknown} of them about tasks \
             whose answer was lost",
            tasks.len(),
            hits.len()
        );
        (tally, summary)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_a2a_task_and_no_push_notification() {
    let started = Instant::now();
    let mut life = Life::start().await;
    let base = life.base();
    let a2a = A2aLoad::new(&base).await;
    let stop = CancellationToken::new();
    let acked = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| a2a.spawn(vec![base.clone()], w as u64, stop.clone(), acked.clone()))
        .collect();
    kill_loop(&mut life, 0x0a2a_7a5c, &acked, stop).await;
    for w in workers {
        w.await.unwrap();
    }

    // A notification a killed server was sending stays leased for a
    // minute and then is sent again; the lease is made to have run out
    // rather than waited for.
    life.kill().await;
    life.db(|db| async move {
        sqlx::query("UPDATE a2a_push_outbox SET next_at = 0 WHERE gave_up_at IS NULL")
            .execute(&db)
            .await
            .unwrap();
    })
    .await;
    life.restart().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Sent rows go; given-up ones would stay (and fail this wait).
        let owed: i64 = life
            .db(|db| async move {
                sqlx::query_scalar("SELECT COUNT(*) FROM a2a_push_outbox")
                    .fetch_one(&db)
                    .await
                    .unwrap()
            })
            .await;
        if owed == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{owed} notifications still owed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (tally, summary) = a2a.check(&base).await;
    tally.print(&format!("a2a chaos, {KILLS} SIGKILLs ({summary})"), started);
    assert!(tally.acknowledged >= KILLS, "{tally:?}");
    assert_eq!((tally.lost, tally.corrupt), (0, 0));
}

/// A JSON-RPC 1.0 call with `token` (a task is seen by its caller and its
/// agent only, not the operator).
async fn rpc(
    base: &str,
    ws: &str,
    token: &str,
    method: &str,
    params: Value,
) -> (StatusCode, Value) {
    let r = client()
        .post(format!("{base}/workspaces/{ws}/a2a"))
        .bearer_auth(token)
        .header("A2A-Version", "1.0")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .timeout(CHECK_TIMEOUT)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// An acknowledged revocation: the workspace, the token's secret, and
/// whether the long poll held with it ended at once (`None`: the server was
/// killed first).
pub(crate) type Revoked = (String, String, Option<bool>);

/// One client: mints a token for its workspace, holds a long poll with
/// it (on the last of `bases`: with two replicas, not the one revoking),
/// revokes it, and checks that the poll ended with 401.
pub(crate) async fn revoking_client(
    bases: Vec<String>,
    ws: String,
    stop: CancellationToken,
    acked: Arc<AtomicUsize>,
    revoked: Arc<Mutex<Vec<Revoked>>>,
) {
    let http = client();
    // The poll is held on the last replica, the rest goes to the first.
    let holder = bases.last().unwrap().clone();
    for n in 0.. {
        let minted = answered(&stop, &bases, |base| {
            http.post(format!("{base}/workspaces/{ws}/tokens"))
                .bearer_auth(ADMIN)
                .json(&json!({"name": format!("t{n}")}))
        })
        .await;
        let Some((status, minted)) = minted else {
            return;
        };
        assert_eq!(status, StatusCode::CREATED, "{minted}");
        let (secret, tid) = (
            minted["auth_token"].as_str().unwrap().to_owned(),
            minted["id"].as_str().unwrap().to_owned(),
        );
        let poll = {
            let (http, url, secret) = (
                reqwest::Client::new(),
                format!("{holder}/workspaces/{ws}/activity?wait=30"),
                secret.clone(),
            );
            tokio::spawn(async move {
                let r = http.get(url).bearer_auth(secret).send().await;
                r.map(|r| r.status()).ok()
            })
        };
        let gone = answered(&stop, &bases, |base| {
            http.delete(format!("{base}/workspaces/{ws}/tokens/{tid}"))
                .bearer_auth(ADMIN)
        })
        .await;
        match gone {
            Some((StatusCode::OK, body)) => {
                assert_eq!(body["status"], "revoked", "{body}");
                // The poll ends at once: 401, or the server died under it.
                let ended = tokio::time::timeout(Duration::from_secs(5), poll).await;
                let ended = match ended {
                    Ok(Ok(Some(StatusCode::UNAUTHORIZED))) => Some(true),
                    // The database went away under it (the PostgreSQL
                    // restart): ended, but not by the revocation.
                    Ok(Ok(Some(StatusCode::SERVICE_UNAVAILABLE))) => None,
                    Ok(Ok(Some(other))) => panic!("the held poll answered {other}"),
                    Ok(_) => None,
                    Err(_) => Some(false),
                };
                revoked.lock().unwrap().push((ws.clone(), secret, ended));
                acked.fetch_add(1, Ordering::SeqCst);
            }
            // A retry of a revocation that committed.
            Some((StatusCode::NOT_FOUND, _)) | None => poll.abort(),
            Some((status, body)) => panic!("revoke answered {status}: {body}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_undoes_no_acknowledged_token_revocation() {
    let started = Instant::now();
    let mut life = Life::start().await;
    let base = life.base();
    let stop = CancellationToken::new();
    let acked = Arc::new(AtomicUsize::new(0));
    let revoked = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (ws, _) = workspace(&base, &format!("holder{w}"), None).await;
        workers.push(tokio::spawn(revoking_client(
            vec![base.clone()],
            ws,
            stop.clone(),
            acked.clone(),
            revoked.clone(),
        )));
    }
    kill_loop(&mut life, 0x7e_40c3, &acked, stop).await;
    for w in workers {
        w.await.unwrap();
    }
    // One more life: nothing that survived in memory can help.
    life.kill().await;
    life.restart().await;

    let revoked = revoked.lock().unwrap().clone();
    let (tally, left_open) = check_revocations(&base, &revoked).await;
    tally.print(
        &format!(
            "revocation chaos, {KILLS} SIGKILLs ({left_open} held polls outlived their token)"
        ),
        started,
    );
    assert!(revoked.len() >= KILLS, "{tally:?}");
    assert_eq!((tally.lost, left_open), (0, 0));
}

/// Counts the acknowledged revocations whose token `base` still takes
/// (lost); and the polls held with a revoked token that did not end when
/// the revocation was answered.
pub(crate) async fn check_revocations(base: &str, revoked: &[Revoked]) -> (Tally, usize) {
    let mut tally = Tally {
        acknowledged: revoked.len(),
        ..Tally::default()
    };
    let left_open = revoked.iter().filter(|r| r.2 == Some(false)).count();
    tally.lost = futures::stream::iter(revoked)
        .map(|(ws, secret, _)| async move {
            get(base, &format!("/workspaces/{ws}/activity"), secret)
                .await
                .0
        })
        .buffer_unordered(CHECKERS)
        .filter(|status| std::future::ready(*status != StatusCode::UNAUTHORIZED))
        .count()
        .await;
    (tally, left_open)
}
