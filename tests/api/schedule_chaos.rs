//! Chaos for schedules: `molecule serve` (the real binary, SQLite) is
//! killed with SIGKILL again and again while a backlog of due instants is
//! being caught up, and restarted each time. At the end every due instant
//! inside the catch-up window has exactly one fire row, one ledger row and
//! one inbox row: none lost, none doubled.
//!
//! Cron has minute granularity, so the backlog is made rather than waited
//! for: the schedules (`* * * * *`, `allow_all`, one hour of catch-up) are
//! created, the server is stopped, and their `next_run_at` is moved 40
//! minutes back in the database; each schedule then owes 40+ fires.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::json;
use sqlx::{Row, SqlitePool};
use tokio::process::{Child, Command};

use crate::helpers::{free_port, wait_until_ready};

const ADMIN: &str = "chaos-admin-token-7b3e9d";
const WORKSPACES: usize = 40;
const BACKLOG_MINUTES: i64 = 40;
const MAX_KILLS: usize = 12;
const BUDGET: Duration = Duration::from_secs(60);

async fn start(dir: &Path, port: u16) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_molecule"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--admin-token",
            ADMIN,
            "--schedule-tick",
            "50ms",
            "--data-dir",
        ])
        .arg(dir)
        .env_remove("DATABASE_URL")
        // Suites hammer one server from one address.
        .env("MOLECULE_RATE_LIMIT", "off")
        .env_remove("MOLECULE_BLOB_STORE")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start molecule serve");
    wait_until_ready(&format!("http://127.0.0.1:{port}"), &mut child).await;
    child
}

async fn pool(dir: &Path) -> SqlitePool {
    SqlitePool::connect(&format!("sqlite://{}", dir.join("molecule.db").display()))
        .await
        .unwrap()
}

/// (fire rows, schedules still owing an instant due by now).
async fn progress(dir: &Path) -> (i64, i64) {
    let db = pool(dir).await;
    let now = Utc::now().timestamp_micros();
    let fires: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schedule_fires")
        .fetch_one(&db)
        .await
        .unwrap();
    let owing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schedules WHERE next_run_at <= ?1")
        .bind(now)
        .fetch_one(&db)
        .await
        .unwrap();
    db.close().await;
    (fires, owing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_catch_up_loses_and_doubles_no_fire() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut server = start(dir.path(), port).await;
    for i in 0..WORKSPACES {
        let ws: serde_json::Value = client
            .post(format!("{base}/workspaces"))
            .bearer_auth(ADMIN)
            .json(&json!({"name": format!("w{i}"), "delivery_mode": "poll"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let resp = client
            .post(format!(
                "{base}/workspaces/{}/schedules",
                ws["id"].as_str().unwrap()
            ))
            .bearer_auth(ADMIN)
            .json(
                &json!({"name": "tick", "cron_expr": "* * * * *", "prompt": "tick",
                          "overlap": "allow_all", "catch_up": 3600}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    }
    server.kill().await.unwrap();
    let first: DateTime<Utc> = Utc::now().duration_trunc(TimeDelta::minutes(1)).unwrap()
        - TimeDelta::minutes(BACKLOG_MINUTES);
    let db = pool(dir.path()).await;
    sqlx::query("UPDATE schedules SET next_run_at = ?1")
        .bind(first.timestamp_micros())
        .execute(&db)
        .await
        .unwrap();
    db.close().await;

    // Kill at pseudo-random moments (a fixed LCG: the same run each time)
    // until the backlog is gone; count the kills that cut a catch-up.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let (mut kills, mut cut) = (0, 0);
    loop {
        let (_, owing) = progress(dir.path()).await;
        if owing == 0 || kills == MAX_KILLS || started.elapsed() > BUDGET / 2 {
            break;
        }
        let mut s = start(dir.path(), port).await;
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        // The chaos itself: how long this life lasts, 50–450 ms.
        tokio::time::sleep(Duration::from_millis(50 + (seed >> 33) % 400)).await;
        s.kill().await.unwrap();
        kills += 1;
        let (fires, owing) = progress(dir.path()).await;
        if owing > 0 && fires > 0 {
            cut += 1;
        }
    }
    // A last life catches up whatever is left.
    let mut s = start(dir.path(), port).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while progress(dir.path()).await.1 > 0 {
        assert!(Instant::now() < deadline, "the backlog was not caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.kill().await.unwrap();

    let db = pool(dir.path()).await;
    let rows = sqlx::query(
        "SELECT s.id, s.next_run_at, f.due_at, f.status, \
           (SELECT COUNT(*) FROM delegations d WHERE d.id = f.delegation_id) AS ledger, \
           (SELECT COUNT(*) FROM activity_logs a WHERE a.workspace_id = s.workspace_id \
              AND a.method = 'delegate' \
              AND instr(COALESCE(a.request_body, '') || COALESCE(a.data, ''), f.delegation_id) > 0) AS inbox \
         FROM schedules s JOIN schedule_fires f ON f.schedule_id = s.id \
         ORDER BY s.id, f.due_at",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let inbox_total: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM activity_logs WHERE method = 'delegate'")
            .fetch_one(&db)
            .await
            .unwrap();
    let ledger_total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM delegations")
        .fetch_one(&db)
        .await
        .unwrap();
    db.close().await;

    // Per schedule: its fires are exactly the minutes from `first` up to
    // its next run, each delivered once with one ledger and inbox row.
    let mut per_schedule: std::collections::BTreeMap<String, (i64, Vec<i64>)> = Default::default();
    for r in &rows {
        assert_eq!(r.get::<String, _>("status"), "delivered");
        assert_eq!(
            r.get::<i64, _>("ledger"),
            1,
            "a fire without its one ledger row"
        );
        assert_eq!(
            r.get::<i64, _>("inbox"),
            1,
            "a fire without its one inbox row"
        );
        let e = per_schedule
            .entry(r.get("id"))
            .or_insert_with(|| (r.get("next_run_at"), Vec::new()));
        e.1.push(r.get("due_at"));
    }
    assert_eq!(per_schedule.len(), WORKSPACES, "a schedule never fired");
    let minute = 60_000_000i64;
    for (id, (next, dues)) in &per_schedule {
        let expected: Vec<i64> = (first.timestamp_micros()..*next)
            .step_by(minute as usize)
            .collect();
        assert_eq!(dues, &expected, "schedule {id}: lost or doubled instants");
    }
    let fires = rows.len() as i64;
    assert_eq!(
        (inbox_total, ledger_total),
        (fires, fires),
        "rows without a fire"
    );
    println!(
        "schedule chaos: {kills} SIGKILLs ({cut} mid-catch-up), {} schedules, {fires} due instants, \
         {fires} fire rows, {ledger_total} ledger rows, {inbox_total} inbox rows, 0 lost, 0 doubled, {:.1}s",
        per_schedule.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        cut >= 1,
        "no kill landed during the catch-up; the test proved nothing"
    );
    assert!(fires >= (WORKSPACES as i64) * BACKLOG_MINUTES);
}
