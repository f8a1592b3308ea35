//! Chaos on PostgreSQL with two replicas (real `molecule serve` processes
//! on one database):
//!
//! - one replica is killed with SIGKILL again and again while clients work
//!   through both (a client whose replica is gone retries on the other),
//!   and while both catch up a backlog of schedule instants: nothing
//!   acknowledged is lost, each due instant fires exactly once;
//! - PostgreSQL itself is restarted (a private, throw-away cluster: the
//!   suite's shared server is not ours to stop): both replicas answer 503
//!   while it is gone, recover without a restart of their own, and lose
//!   nothing acknowledged.
//!
//! Both skip (with a message) when no PostgreSQL is configured.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::helpers::{free_port, fresh_postgres_url, require_all_engines};
use crate::work_chaos::{
    all_activity, answered, approval_client, check_approvals, check_revocations, client, get,
    kill_loop, revoking_client, workspace, A2aLoad, Decision, Life, Revoked, Tally, ADMIN, KILLS,
    WORKERS,
};

/// Schedules catching up a backlog during the kills.
const SCHEDULES: usize = 12;
/// Minutes of backlog each owes.
const BACKLOG_MINUTES: i64 = 20;

/// An acknowledged message: its activity id and text.
type Message = (i64, String);

/// One client: sends messages to `ws` through the first of `bases` that
/// answers (the others when it is gone), recording each answered 202.
async fn message_client(
    bases: Vec<String>,
    ws: String,
    seed: u64,
    stop: CancellationToken,
    acked: Arc<AtomicUsize>,
    messages: Arc<Mutex<Vec<Message>>>,
) {
    let http = client();
    for n in 0.. {
        let text = format!("replica chaos {seed}-{n}");
        let sent = answered(&stop, &bases, |base| {
            http.post(format!("{base}/workspaces/{ws}/a2a"))
                .bearer_auth(ADMIN)
                .json(&json!({"message": {"parts": [{"kind": "text", "text": text}]}}))
        })
        .await;
        let Some((status, body)) = sent else { return };
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let id = body["activity_id"].as_i64().expect("activity_id");
        messages.lock().unwrap().push((id, text));
        acked.fetch_add(1, Ordering::SeqCst);
    }
}

/// Counts the acknowledged `messages` of `ws` that are gone or changed.
async fn check_messages(base: &str, ws: &str, messages: &[Message]) -> Tally {
    let rows: BTreeMap<i64, Value> = all_activity(base, ws)
        .await
        .into_iter()
        .map(|r| (r["id"].as_i64().unwrap(), r))
        .collect();
    let mut tally = Tally {
        acknowledged: messages.len(),
        ..Tally::default()
    };
    for (id, text) in messages {
        match rows.get(id) {
            None => tally.lost += 1,
            Some(row) if row["data"]["text"] != text.as_str() => tally.corrupt += 1,
            Some(_) => {}
        }
    }
    tally
}

/// The work every test here runs on two replicas, half the clients
/// preferring each: approval decisions, messages, A2A tasks with push
/// notifications, token revocations (a poll held on one replica, the
/// token revoked through the other).
struct Load {
    stop: CancellationToken,
    acked: Arc<AtomicUsize>,
    decisions: Arc<Mutex<Vec<Decision>>>,
    messages: Arc<Mutex<Vec<Message>>>,
    revoked: Arc<Mutex<Vec<Revoked>>>,
    a2a: A2aLoad,
    askers: Vec<String>,
    inbox: String,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

/// What [`Load::finish`] found, per kind of work.
struct Found {
    decided: Tally,
    sent: Tally,
    tasks: Tally,
    tasks_summary: String,
    revoked: Tally,
    left_open: usize,
}

impl Found {
    fn print_and_assert(&self, what: &str, started: Instant) {
        self.decided
            .print(&format!("{what}: approval decisions"), started);
        self.sent.print(&format!("{what}: messages"), started);
        self.tasks.print(
            &format!("{what}: A2A tasks and moves ({})", self.tasks_summary),
            started,
        );
        self.revoked.print(
            &format!(
                "{what}: token revocations ({} held polls outlived their token)",
                self.left_open
            ),
            started,
        );
        for t in [&self.decided, &self.sent, &self.revoked] {
            assert!(t.acknowledged > 0, "{t:?}");
            assert_eq!((t.lost, t.duplicated, t.corrupt), (0, 0, 0), "{t:?}");
        }
        // Notifications: at least once (a duplicate is allowed).
        assert!(self.tasks.acknowledged > 0, "{:?}", self.tasks);
        assert_eq!(
            (self.tasks.lost, self.tasks.corrupt),
            (0, 0),
            "{:?}",
            self.tasks
        );
        assert_eq!(self.left_open, 0);
    }
}

impl Load {
    async fn start(a: &str, b: &str) -> Self {
        // The parties, made at once through B.
        let (a2a, inbox, askers, holders) = tokio::join!(
            A2aLoad::new(b),
            workspace(b, "inbox", None),
            futures::future::join_all(
                (0..WORKERS).map(|w| async move { workspace(b, &format!("asker{w}"), None).await })
            ),
            futures::future::join_all(
                (0..2).map(|w| async move { workspace(b, &format!("holder{w}"), None).await })
            ),
        );
        let mut load = Self {
            stop: CancellationToken::new(),
            acked: Arc::default(),
            decisions: Arc::default(),
            messages: Arc::default(),
            revoked: Arc::default(),
            a2a,
            askers: askers.iter().map(|a| a.0.clone()).collect(),
            inbox: inbox.0,
            workers: Vec::new(),
        };
        let mut holders = holders.into_iter();
        for (w, asker) in askers.into_iter().enumerate() {
            let bases = if w % 2 == 0 {
                vec![a.to_owned(), b.to_owned()]
            } else {
                vec![b.to_owned(), a.to_owned()]
            };
            load.workers.push(tokio::spawn(approval_client(
                bases.clone(),
                asker,
                w as u64,
                load.stop.clone(),
                load.acked.clone(),
                load.decisions.clone(),
            )));
            load.workers.push(tokio::spawn(message_client(
                bases.clone(),
                load.inbox.clone(),
                w as u64,
                load.stop.clone(),
                load.acked.clone(),
                load.messages.clone(),
            )));
            // Two of the clients also revoke tokens and send A2A tasks.
            if let Some((holder, _)) = holders.next() {
                load.workers.push(tokio::spawn(revoking_client(
                    bases.clone(),
                    holder,
                    load.stop.clone(),
                    load.acked.clone(),
                    load.revoked.clone(),
                )));
                load.workers.push(load.a2a.spawn(
                    bases,
                    w as u64,
                    load.stop.clone(),
                    load.acked.clone(),
                ));
            }
        }
        load
    }

    /// Waits until `n` more writes were acknowledged (30 s at most).
    async fn more(&self, n: usize) {
        let target = self.acked.load(Ordering::SeqCst) + n;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.acked.load(Ordering::SeqCst) < target {
            assert!(Instant::now() < deadline, "the clients made no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the clients and checks every acknowledged write through
    /// `base`, once no push notification is owed on `db` any more.
    async fn finish(self, base: &str, db: &str) -> Found {
        self.stop.cancel();
        for w in self.workers {
            w.await.unwrap();
        }
        drain_outbox(db).await;
        let decisions = self.decisions.lock().unwrap().clone();
        let messages = self.messages.lock().unwrap().clone();
        let revoked = self.revoked.lock().unwrap().clone();
        // Each kind checked at once with the others.
        let ((tasks, tasks_summary), (revoked, left_open), decided, sent) = tokio::join!(
            self.a2a.check(base),
            check_revocations(base, &revoked),
            check_approvals(base, &self.askers, &decisions),
            check_messages(base, &self.inbox, &messages),
        );
        Found {
            decided,
            sent,
            tasks,
            tasks_summary,
            revoked,
            left_open,
        }
    }
}

/// Waits (20 s at most) until every push notification owed on `db` was
/// sent. One a killed replica was sending stays leased for a minute and is
/// then sent again: the lease is made to have run out, not waited for.
async fn drain_outbox(db: &str) {
    let pg = sqlx::PgPool::connect(db).await.unwrap();
    sqlx::query(
        "UPDATE a2a_push_outbox SET next_at = now() - interval '1 minute' \
         WHERE gave_up_at IS NULL",
    )
    .execute(&pg)
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Sent rows go; given-up ones would stay (and fail this wait).
        let owed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM a2a_push_outbox")
            .fetch_one(&pg)
            .await
            .unwrap();
        if owed == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{owed} notifications still owed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pg.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_replica_loses_nothing_and_fires_each_instant_once() {
    let Some(db) = fresh_postgres_url().await else {
        return;
    };
    let started = Instant::now();
    let mut a = Life::start_on(Some(db.clone())).await;
    let b = Life::start_on(Some(db.clone())).await;
    let (a_base, b_base) = (a.base(), b.base());
    futures::future::join_all((0..SCHEDULES).map(|i| {
        let b_base = &b_base;
        async move {
            let (ws, _) = workspace(b_base, &format!("ticker{i}"), None).await;
            let resp = client()
                .post(format!("{b_base}/workspaces/{ws}/schedules"))
                .bearer_auth(ADMIN)
                .timeout(Duration::from_secs(30))
                .json(
                    &json!({"name": "tick", "cron_expr": "* * * * *", "prompt": "tick",
                              "overlap": "allow_all", "catch_up": 3600}),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::CREATED);
        }
    }))
    .await;
    let pg = sqlx::PgPool::connect(&db).await.unwrap();
    let load = Load::start(&a_base, &b_base).await;
    // Cron has minute granularity: the backlog is made, not waited for.
    // Both replicas start catching it up at once, racing each other.
    let first: DateTime<Utc> = Utc::now().duration_trunc(TimeDelta::minutes(1)).unwrap()
        - TimeDelta::minutes(BACKLOG_MINUTES);
    sqlx::query("UPDATE schedules SET next_run_at = $1")
        .bind(first)
        .execute(&pg)
        .await
        .unwrap();

    // The survivor keeps serving while A dies and comes back.
    let stop_kills = CancellationToken::new();
    kill_loop(&mut a, 0x2e_971c, &load.acked, stop_kills).await;
    // How far the catch-up was when the kills ended (on a loaded machine
    // it is still going; on a fast one it may be done).
    let fired_under_kills: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schedule_fires")
        .fetch_one(&pg)
        .await
        .unwrap();
    let owing = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM schedules WHERE next_run_at <= now()")
            .fetch_one(&pg)
            .await
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(45);
    while owing().await > 0 {
        assert!(Instant::now() < deadline, "the backlog was not caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let found = load.finish(&b_base, &db).await;
    let fires = check_fires(&pg, first).await;
    pg.close().await;
    found.print_and_assert(&format!("two replicas, one killed {KILLS} times"), started);
    fires.print(
        &format!(
            "two replicas, one killed: schedule instants ({fired_under_kills} fired \
             while the kills went on)"
        ),
        started,
    );
    assert_eq!(
        (fires.lost, fires.duplicated, fires.corrupt),
        (0, 0, 0),
        "{fires:?}"
    );
    assert!(fires.acknowledged >= SCHEDULES * BACKLOG_MINUTES as usize);
}

/// Each schedule's fires are exactly the minutes from `first` up to its
/// next run (none lost, none twice), each with one ledger and one inbox row.
async fn check_fires(pg: &sqlx::PgPool, first: DateTime<Utc>) -> Tally {
    let rows = sqlx::query(
        "SELECT s.id::text AS id, s.next_run_at, f.due_at, f.status, \
           (SELECT COUNT(*) FROM delegations d WHERE d.id = f.delegation_id) AS ledger, \
           (SELECT COUNT(*) FROM activity_logs a WHERE a.workspace_id = s.workspace_id \
              AND a.method = 'delegate' \
              AND strpos(COALESCE(a.request_body::text, '') || COALESCE(a.data::text, ''), \
                         f.delegation_id::text) > 0) AS inbox \
         FROM schedules s JOIN schedule_fires f ON f.schedule_id = s.id \
         ORDER BY s.id, f.due_at",
    )
    .fetch_all(pg)
    .await
    .unwrap();
    let mut tally = Tally::default();
    let mut per_schedule: BTreeMap<String, (DateTime<Utc>, Vec<DateTime<Utc>>)> = BTreeMap::new();
    for r in &rows {
        if r.get::<String, _>("status") != "delivered" {
            tally.corrupt += 1;
        }
        for column in ["ledger", "inbox"] {
            match r.get::<i64, _>(column) {
                0 => tally.lost += 1,
                1 => {}
                _ => tally.duplicated += 1,
            }
        }
        per_schedule
            .entry(r.get("id"))
            .or_insert_with(|| (r.get("next_run_at"), Vec::new()))
            .1
            .push(r.get("due_at"));
    }
    tally.lost += SCHEDULES.saturating_sub(per_schedule.len()) * BACKLOG_MINUTES as usize;
    for (next, dues) in per_schedule.values() {
        let mut expected = Vec::new();
        let mut at = first;
        while at < *next {
            expected.push(at);
            at += TimeDelta::minutes(1);
        }
        tally.acknowledged += expected.len();
        tally.lost += expected.iter().filter(|e| !dues.contains(e)).count();
        tally.corrupt += dues.iter().filter(|d| !expected.contains(d)).count();
    }
    // (The A2A tasks of the same run are delegations too, to a workspace
    // without schedules.)
    let totals: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM delegations \
                 WHERE callee_id IN (SELECT workspace_id FROM schedules)), \
                (SELECT COUNT(*) FROM activity_logs WHERE method = 'delegate' \
                 AND workspace_id IN (SELECT workspace_id FROM schedules))",
    )
    .fetch_one(pg)
    .await
    .unwrap();
    let fires = rows.len() as i64;
    // Ledger or inbox rows that belong to no fire: a fire made twice.
    tally.duplicated += (totals.0 - fires).max(0) as usize + (totals.1 - fires).max(0) as usize;
    tally
}

/// A throw-away PostgreSQL cluster in a temp dir on a free port, with the
/// binaries of the suite's server (Debian's layout); stopped on drop.
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// Run the binaries as `postgres` (initdb refuses root).
    as_postgres: bool,
}

impl Cluster {
    /// `None` (and why) when no PostgreSQL binaries are installed.
    fn create() -> Option<Self> {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("pg_ctl").exists())
            .collect();
        found.sort();
        let bin = found.pop()?;
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = nix_is_root();
        if as_postgres {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(
                status.success(),
                "chown to postgres (is there such a user?)"
            );
        }
        let cluster = Self {
            bin,
            dir,
            port: free_port(),
            as_postgres,
        };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &["-D", &data, "-U", "molecule", "--auth=trust", "-E", "UTF8"],
        );
        Some(cluster)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://molecule@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            std::process::Command::new(program)
        };
        let out = cmd.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start(&self) {
        let (data, log) = (self.data(), self.log());
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-w", "-o", &options, "start"],
        );
    }

    /// `immediate`: like a crash (recovery from the WAL at the next start).
    fn stop(&self, mode: &str) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", mode, "-w", "stop"]);
    }

    fn log(&self) -> String {
        self.dir.path().join("server.log").display().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
        let _ = if self.as_postgres {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(program)
                .args(args)
                .output()
        } else {
            std::process::Command::new(program).args(args).output()
        };
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Waits until `path` answers 200 on `base` as the operator; how long.
async fn recovered(base: &str, path: &str) -> Duration {
    let started = Instant::now();
    loop {
        let (status, body) = get(base, path, ADMIN).await;
        if status == StatusCode::OK {
            return started.elapsed();
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{base} never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_postgres_is_answered_503_then_recovered_losing_nothing() {
    // The suite's server being configured says PostgreSQL is in play here.
    if std::env::var("MOLECULE_TEST_DATABASE_URL").is_err() {
        assert!(!require_all_engines(), "every engine is required");
        eprintln!("skipping: MOLECULE_TEST_DATABASE_URL is not set");
        return;
    }
    let Some(cluster) = Cluster::create() else {
        assert!(!require_all_engines(), "no PostgreSQL binaries");
        eprintln!("skipping: no PostgreSQL binaries under /usr/lib/postgresql");
        return;
    };
    let started = Instant::now();
    cluster.start();
    let mut a = Life::start_on(Some(cluster.url())).await;
    let mut b = Life::start_on(Some(cluster.url())).await;
    let (a_base, b_base) = (a.base(), b.base());
    let load = Load::start(&a_base, &b_base).await;
    let mut outages = Vec::new();
    for mode in ["fast", "immediate"] {
        load.more(20).await;
        cluster.stop(mode);
        let down = Instant::now();
        // Gone: both answer 503 at once, to reads and to writes.
        for base in [&a_base, &b_base] {
            let (status, body) = get(base, &format!("/workspaces/{}", load.inbox), ADMIN).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            let (status, _) = get(base, "/ready", "").await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        }
        let took = down.elapsed();
        assert!(took < Duration::from_secs(10), "503s took {took:?}");
        cluster.start();
        // Back: each replica notices by itself.
        let path = format!("/workspaces/{}", load.inbox);
        let a_back = recovered(&a_base, &path).await;
        let b_back = recovered(&b_base, &path).await;
        outages.push(format!("{mode}: back after {a_back:?} / {b_back:?}"));
        assert!(a.running() && b.running(), "a replica restarted or died");
    }
    // Writes go through both again.
    load.more(20).await;
    let inbox = load.inbox.clone();
    let found = load.finish(&b_base, &cluster.url()).await;
    // A long poll on B wakes from a write on A: the cross-replica
    // notifications reconnected too (else it would run to its 20 s).
    let last = all_activity(&b_base, &inbox).await.last().unwrap()["id"]
        .as_i64()
        .unwrap();
    let poll = {
        let url = format!("{b_base}/workspaces/{inbox}/activity?since_id={last}&wait=20");
        tokio::spawn(async move {
            let r = client()
                .get(url)
                .bearer_auth(ADMIN)
                .timeout(Duration::from_secs(25))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()
        })
    };
    let nudged = Instant::now();
    let resp = client()
        .post(format!("{a_base}/workspaces/{inbox}/a2a"))
        .bearer_auth(ADMIN)
        .json(&json!({"message": {"parts": [{"kind": "text", "text": "nudge"}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let woke = poll.await.unwrap();
    let wake = nudged.elapsed();
    assert_eq!(woke[0]["data"]["text"], "nudge", "{woke}");
    assert!(wake < Duration::from_secs(10), "woken after {wake:?}");
    found.print_and_assert("PostgreSQL restarted twice", started);
    println!(
        "PostgreSQL restarts: {}; cross-replica wake after: {wake:?}",
        outages.join("; ")
    );
    assert!(a.running() && b.running(), "a replica restarted or died");
    a.kill().await;
    b.kill().await;
}
