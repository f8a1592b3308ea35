//! The sweeper with a chosen clock, its metrics, the stats endpoint, the
//! activity retention's 410, orphan reaping, and concurrent sweepers.

use chrono::Duration as Span;
use reqwest::StatusCode;

use crate::helpers::{file, metric_value, spawn_app, spawn_app_with, Engine, Options, TestApp, Ws};
use crate::on_both_engines;

async fn stage(app: &TestApp, ws: &Ws, name: &str) -> String {
    app.stage(ws, file(name, "text/plain", format!("content of {name}")))
        .await
}

/// The uploads job's `(acked, expired, errors)` in a pass.
fn uploads(out: &molecule::sweeper::SweepOutcome) -> (u64, u64, u64) {
    (
        out.count("uploads", "acked"),
        out.count("uploads", "expired"),
        out.count("uploads", "errors"),
    )
}

async fn stage_three_ack_two_let_one_expire_and_sweep(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let before = app.metrics_text().await;
    let ids = [
        stage(&app, &ws, "a.txt").await,
        stage(&app, &ws, "b.txt").await,
        stage(&app, &ws, "c.txt").await,
    ];
    assert_eq!(
        app.content(&ws.id, &ids[0], &ws.token).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.content(&ws.id, &ids[2], &ws.token).await.status(),
        StatusCode::OK
    );
    assert_eq!(app.ack(&ws.id, &ids[0], &ws.token).await.0, StatusCode::OK);
    assert_eq!(app.ack(&ws.id, &ids[1], &ws.token).await.0, StatusCode::OK);
    let (status, stats) = app
        .get("/admin/pending-uploads/stats", &app.admin_token)
        .await;
    assert_eq!(status, StatusCode::OK);
    let bytes_c = "content of c.txt".len();
    assert_eq!(stats["pending"], 1);
    assert_eq!(stats["fetched_not_acked"], 1);
    assert_eq!(stats["acked"], 2);
    assert_eq!(stats["expired"], 0);
    assert_eq!(stats["bytes_pending"], bytes_c);
    assert!(stats["oldest_pending_age_s"].as_i64().unwrap() < 60);
    let (status, _) = app.get("/admin/pending-uploads/stats", &ws.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let now = molecule::domain::now();
    // Within the ack retention: nothing goes.
    let out = app
        .sweeper
        .sweep_once(now + Span::minutes(30))
        .await
        .unwrap();
    assert_eq!(uploads(&out), (0, 0, 0));
    assert_eq!(app.blob_keys().await.len(), 3);
    // Past it: the two acked rows and their blobs go; c is still pending.
    let out = app.sweeper.sweep_once(now + Span::hours(2)).await.unwrap();
    assert_eq!(uploads(&out), (2, 0, 0));
    let keys = app.blob_keys().await;
    assert_eq!(keys, vec![format!("uploads/{}/{}", ws.id, ids[2])]);
    // Past c's deadline: it goes as expired.
    let out = app.sweeper.sweep_once(now + Span::hours(25)).await.unwrap();
    assert_eq!(uploads(&out), (0, 1, 0));
    assert!(app.blob_keys().await.is_empty());
    let stats = app.store.upload_stats(now + Span::hours(25)).await.unwrap();
    assert_eq!(stats, molecule::store::UploadStats::default());

    let after = app.metrics_text().await;
    let delta = |series: &str| metric_value(&after, series) - metric_value(&before, series);
    assert_eq!(delta("molecule_pending_uploads_staged_total"), 3.0);
    assert_eq!(
        delta("molecule_pending_uploads_staged_bytes_total"),
        (3 * bytes_c) as f64
    );
    assert_eq!(delta("molecule_pending_uploads_fetched_total"), 2.0);
    assert_eq!(delta("molecule_pending_uploads_acked_total"), 2.0);
    assert_eq!(
        delta("molecule_pending_uploads_swept_total{outcome=\"acked\"}"),
        2.0
    );
    assert_eq!(
        delta("molecule_pending_uploads_swept_total{outcome=\"expired\"}"),
        1.0
    );
    assert_eq!(
        delta("molecule_pending_uploads_swept_total{outcome=\"error\"}"),
        0.0
    );
    assert_eq!(
        delta("molecule_pending_uploads_delivery_seconds_count"),
        2.0
    );
    assert_eq!(
        delta("molecule_http_requests_total{method=\"POST\",path=\"/workspaces/:id/pending-uploads/:fid/ack\",status=\"200\"}"),
        2.0
    );
    assert!(
        !after.contains(&ws.id),
        "raw ids never appear in metric labels"
    );
}
on_both_engines!(stage_three_ack_two_let_one_expire_and_sweep);

async fn orphan_blobs_are_reaped_after_the_grace_period(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let live = stage(&app, &ws, "live.txt").await;
    // A crash between writing a blob and committing its row leaves this.
    let body = futures::stream::iter(vec![Ok(bytes::Bytes::from_static(b"orphan"))]);
    app.blobs
        .put("uploads/orphan/left-behind", Box::pin(body))
        .await
        .unwrap();
    let now = molecule::domain::now();
    let out = app.sweeper.sweep_once(now).await.unwrap();
    assert_eq!(
        out.count("orphan_blobs", "reaped"),
        0,
        "inside the grace period an upload may still be in flight"
    );
    let out = app.sweeper.sweep_once(now + Span::hours(2)).await.unwrap();
    assert_eq!(out.count("orphan_blobs", "reaped"), 1);
    assert_eq!(
        app.blob_keys().await,
        vec![format!("uploads/{}/{live}", ws.id)],
        "a referenced blob stays"
    );
}
on_both_engines!(orphan_blobs_are_reaped_after_the_grace_period);

async fn a_cursor_before_the_retained_window_gets_410(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let (_, first) = app.send_text(&ws.id, "old 1").await;
    let (_, second) = app.send_text(&ws.id, "old 2").await;
    let first = first["activity_id"].as_i64().unwrap();
    let second = second["activity_id"].as_i64().unwrap();
    let out = app
        .sweeper
        .sweep_once(molecule::domain::now() + Span::days(8))
        .await
        .unwrap();
    assert_eq!(out.count("activity", "removed"), 2);
    let (_, third) = app.send_text(&ws.id, "new").await;
    let (status, body) = app.activity(&ws, &format!("since_id={first}")).await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains(&format!("restart from since_id={second}")),
        "{body}"
    );
    assert_eq!(body["restart_since_id"], second);
    // From the swept mark, or from the start, nothing is missed.
    for query in [format!("since_id={second}"), String::new()] {
        let (status, rows) = app.activity(&ws, &query).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(rows.as_array().unwrap().len(), 1, "{query}");
        assert_eq!(rows[0]["id"], third["activity_id"]);
    }
}
on_both_engines!(a_cursor_before_the_retained_window_gets_410);

async fn concurrent_sweepers_never_double_delete(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    for i in 0..60 {
        stage(&app, &ws, &format!("f{i}.txt")).await;
    }
    let later = molecule::domain::now() + Span::hours(25);
    // Claiming directly: disjoint batches.
    let (a, b) = tokio::join!(
        app.store.sweep_uploads(later, later, 20),
        app.store.sweep_uploads(later, later, 20)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut ids: Vec<_> = a.iter().chain(&b).map(|r| r.file_id).collect();
    assert_eq!(ids.len(), 40);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "no row handed to both sweepers");
    for row in a.iter().chain(&b) {
        app.blobs.delete(&row.blob_key).await.unwrap();
    }
    // Whole passes at once: together they remove the rest exactly once.
    let (x, y) = tokio::join!(app.sweeper.sweep_once(later), app.sweeper.sweep_once(later));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(
        x.count("uploads", "expired") + y.count("uploads", "expired"),
        20,
        "{x:?} {y:?}"
    );
    assert_eq!(
        x.count("uploads", "errors") + y.count("uploads", "errors"),
        0
    );
    assert!(app.blob_keys().await.is_empty());
    assert_eq!(app.store.upload_stats(later).await.unwrap().expired, 0);
}
on_both_engines!(concurrent_sweepers_never_double_delete);

/// Inserts `n` rows of `ws` expired a day ago, straight in the database,
/// named `uploads/<ws>/bulk-<i>` (i from 1); no blob is written.
async fn insert_expired_rows(app: &TestApp, ws: &str, n: i64) {
    let url = &app.config.database_url;
    let created = molecule::domain::now() - Span::days(2);
    let expires = created + Span::days(1);
    if url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query(
            "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < ?2) \
             INSERT INTO pending_uploads (file_id, workspace_id, blob_key, size_bytes, sha256, \
                                          filename, mimetype, created_at, expires_at) \
             SELECT lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || \
                          substr(hex(randomblob(2)), 2) || '-a' || substr(hex(randomblob(2)), 2) || \
                          '-' || hex(randomblob(6))), \
                    ?1, 'uploads/' || ?1 || '/bulk-' || i, 1, printf('%064d', 0), 'f.bin', \
                    'application/octet-stream', ?3, ?4 FROM g",
        )
        .bind(ws)
        .bind(n)
        .bind(created.timestamp_micros())
        .bind(expires.timestamp_micros())
        .execute(&pool)
        .await
        .unwrap();
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query(
            "INSERT INTO pending_uploads (file_id, workspace_id, blob_key, size_bytes, sha256, \
                                          filename, mimetype, created_at, expires_at) \
             SELECT gen_random_uuid(), $1::uuid, 'uploads/' || $1 || '/bulk-' || g, 1, \
                    repeat('0', 64), 'f.bin', 'application/octet-stream', $3, $4 \
             FROM generate_series(1, $2) g",
        )
        .bind(ws)
        .bind(n)
        .bind(created)
        .bind(expires)
        .execute(&pool)
        .await
        .unwrap();
    }
}

/// More batches than the pipeline holds at once (the engine's batch size
/// twice over, and some): every row goes exactly once, every blob of a
/// swept row goes, a blob no row names is left to the reaper, and the
/// counts and metrics add up across the batches finished in their tasks.
async fn a_sweep_of_many_batches_takes_every_row_and_blob_once(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let n = 2 * app.store.upload_sweep_batch() + 7;
    sweep_many_batches(&app, n).await;
}
on_both_engines!(a_sweep_of_many_batches_takes_every_row_and_blob_once);

/// The same with `--sweep-batch 7` and one delete in flight: 23 rows in
/// four batches, each blob request paced one at a time.
async fn the_batch_and_delete_settings_sweep_every_row_and_blob_once(engine: Engine) {
    let options = Options::new(engine).tweak(|c| {
        c.sweep_batch = Some(7);
        c.sweep_deletes_in_flight = 1;
    });
    let Some(app) = spawn_app_with(options).await else {
        return;
    };
    sweep_many_batches(&app, 23).await;
}
on_both_engines!(the_batch_and_delete_settings_sweep_every_row_and_blob_once);

/// One acked and `n` expired rows, a pending file, blobs for some of the
/// rows and one no row names: a pass takes every swept row and its blob
/// once, leaves the pending one, and the counts and metrics add up.
async fn sweep_many_batches(app: &TestApp, n: i64) {
    let ws = app.create_poll_workspace("w").await;
    let acked = stage(app, &ws, "acked.txt").await;
    assert_eq!(app.ack(&ws.id, &acked, &ws.token).await.0, StatusCode::OK);
    let pending = stage(app, &ws, "pending.txt").await;
    insert_expired_rows(app, &ws.id, n).await;
    // Blobs for some bulk rows (in the first, a middle and the last batch)
    // and one no row names.
    let bulk = |i: i64| format!("uploads/{}/bulk-{i}", ws.id);
    let loose = format!("uploads/{}/loose", ws.id);
    for key in [bulk(1), bulk(n / 2), bulk(n), loose] {
        let body =
            futures::StreamExt::boxed(futures::stream::iter([Ok(bytes::Bytes::from_static(b"x"))]));
        app.blobs.put(&key, body).await.unwrap();
    }
    let before = app.metrics_text().await;

    let later = molecule::domain::now() + Span::hours(2);
    let out = app.sweeper.sweep_once(later).await.unwrap();
    assert_eq!(uploads(&out), (1, n as u64, 0), "{out}");
    // The loose blob is no upload's: the uploads job leaves it, and the
    // orphan reaper (past its grace two hours on) takes it.
    assert_eq!(out.count("orphan_blobs", "reaped"), 1, "{out}");
    assert_eq!(
        app.blob_keys().await,
        vec![format!("uploads/{}/{pending}", ws.id)]
    );
    let stats = app.store.upload_stats(later).await.unwrap();
    assert_eq!((stats.pending, stats.acked, stats.expired), (1, 0, 0));
    let after = app.metrics_text().await;
    let delta = |series: &str| metric_value(&after, series) - metric_value(&before, series);
    let swept = |outcome: &str| {
        delta(&format!(
            "molecule_pending_uploads_swept_total{{outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(
        (swept("acked"), swept("expired"), swept("error")),
        (1.0, n as f64, 0.0)
    );
    // Nothing left for a second pass.
    let again = app.sweeper.sweep_once(later).await.unwrap();
    assert_eq!(uploads(&again), (0, 0, 0));
}

#[tokio::test]
async fn metrics_need_the_operator_or_their_own_listener() {
    let app = crate::helpers::spawn_app_with(
        crate::helpers::Options::new(Engine::Sqlite)
            .tweak(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())),
    )
    .await
    .unwrap();
    let ws = app.create_poll_workspace("w").await;
    let (status, _) = app.get("/metrics", &ws.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let text = app.metrics_text().await;
    for name in [
        "molecule_pending_uploads_staged_total",
        "molecule_pending_uploads_staged_bytes_total",
        "molecule_pending_uploads_fetched_total",
        "molecule_pending_uploads_acked_total",
        "molecule_pending_uploads_swept_total",
        "molecule_pending_uploads_delivery_seconds",
        "molecule_http_requests_total",
        "molecule_http_request_duration_seconds",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
    }
    assert_eq!(
        metric_value(
            &text,
            "molecule_http_requests_total{method=\"POST\",path=\"/workspaces\",status=\"201\"}"
        ),
        1.0
    );
    let own = format!("http://127.0.0.1:{}/metrics", app.metrics_port.unwrap());
    let resp = app.client.get(own).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("# TYPE molecule_pending_uploads_acked_total counter"));
}

/// A migrated SQLite store in `dir`, outside any server.
async fn bare_store(dir: &std::path::Path) -> std::sync::Arc<dyn molecule::store::Store> {
    let url = format!("sqlite://{}", dir.join("s.db").display());
    let store = molecule::store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// Runs `Sweeper::run` every 20 ms over these stores until passes with
/// `result` have been counted three times, checks the loop is still alive,
/// then stops it and checks it ends.
async fn assert_the_loop_survives(
    store: std::sync::Arc<dyn molecule::store::Store>,
    blobs: std::sync::Arc<dyn molecule::blob::BlobStore>,
    result: &str,
) {
    use molecule::sweeper::{SweepConfig, Sweeper};
    let metrics = molecule::metrics::Metrics::new();
    let hour =
        molecule::domain::Period::new("an hour", std::time::Duration::from_secs(3600)).unwrap();
    let config = SweepConfig {
        ack_retention: hour,
        activity_retention: hour,
        delegation_stuck_after: hour,
        orphan_grace: hour,
        interval: std::time::Duration::from_millis(20),
        offline_after: molecule::domain::Period::new("90 s", std::time::Duration::from_secs(90))
            .unwrap(),
        upload_batch: None,
        deletes_in_flight: 2,
    };
    let sweeper = Sweeper::new(
        store,
        blobs,
        metrics.clone(),
        molecule::events::Bus::local(),
        config,
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(sweeper.run(stop.clone()));
    let series = format!("molecule_sweep_runs_total{{result=\"{result}\"}}");
    crate::helpers::eventually(
        &format!("three {result} passes, the loop still alive"),
        || async { metric_value(&metrics.render(), &series) >= 3.0 },
    )
    .await;
    assert!(!running.is_finished());
    stop.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), running)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_failing_pass_is_counted_and_retried_on_the_next_tick() {
    let dir = tempfile::tempdir().unwrap();
    let store = bare_store(dir.path()).await;
    let blobs = molecule::blob::open(
        &format!("file://{}", dir.path().join("blobs").display()),
        store.clone(),
        &dir.path().join("spool"),
    )
    .await
    .unwrap();
    // A database that has gone away: every pass fails.
    store.close().await;
    assert_the_loop_survives(store, blobs, "error").await;
}

/// A server with one file acked a moment ago (with a zero retention, a
/// sweep pass removes it).
async fn app_with_an_acked_file() -> TestApp {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    let ws = app.create_poll_workspace("w").await;
    let fid = stage(&app, &ws, "a.txt").await;
    assert_eq!(app.ack(&ws.id, &fid, &ws.token).await.0, StatusCode::OK);
    app
}

/// Runs `molecule sweep --once --json --ack-retention 0s` with `args`
/// added; asserts it succeeded and returns its JSON report.
fn sweep_command<S: AsRef<std::ffi::OsStr>>(
    args: impl IntoIterator<Item = S>,
) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_molecule"))
        .args(["sweep", "--once", "--json", "--ack-retention", "0s"])
        .args(["--admin-token", "unused-here"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn the_sweep_command_runs_one_pass_and_reports_it() {
    let app = app_with_an_acked_file().await;
    let data_dir = app.data_dir.path().as_os_str();
    let report = sweep_command([std::ffi::OsStr::new("--data-dir"), data_dir]);
    assert_eq!(
        report,
        serde_json::json!({"jobs": {
            "uploads": {"acked": 1, "expired": 0, "errors": 0},
            "activity": {"removed": 0},
            "traces": {"removed": 0},
            "kv": {"expired": 0},
            "memory_embeddings": {"backfilled": 0},
            "delegations": {"failed": 0, "stuck": 0, "purged": 0},
            "schedules": {"delivered": 0, "skipped": 0, "missed": 0},
            "forward_push": {"forwarded": 0},
            "a2a_push": {"delivered": 0, "retried": 0, "gave_up": 0, "purged": 0},
            "approvals": {"approved": 0, "denied": 0, "escalated": 0},
            "token_uses": {"stamped": 0},
            "phantom_busy": {"reset": 0},
            "removed_workspaces": {"purged": 0},
            "orphan_blobs": {"reaped": 0},
        }, "skipped": false})
    );
    assert!(app.blob_keys().await.is_empty());
    assert_eq!(
        app.store
            .upload_stats(molecule::domain::now())
            .await
            .unwrap()
            .acked,
        0
    );
}

/// A pass run with a data dir of its own, against the server's database
/// and blob store (as a cron job on another host would): it does not need
/// the server's secrets key, and leaves no key of its own behind.
#[tokio::test]
async fn the_sweep_command_needs_no_secrets_key() {
    let app = app_with_an_acked_file().await;
    let elsewhere = tempfile::tempdir().unwrap();
    let data = app.data_dir.path();
    let report = sweep_command([
        "--data-dir".to_owned(),
        elsewhere.path().display().to_string(),
        "--database-url".to_owned(),
        format!("sqlite://{}", data.join("molecule.db").display()),
        "--blob-store".to_owned(),
        format!("file://{}", data.join("blobs").display()),
    ]);
    assert_eq!(report["jobs"]["uploads"]["acked"], 1);
    assert!(app.blob_keys().await.is_empty());
    assert!(
        !elsewhere.path().join("secrets-key").exists(),
        "no key of its own"
    );
}

/// A sweep size out of range is refused with the flag named before
/// anything is opened: no pass runs, the acked row and its blob stay, and
/// a server with it does not start.
#[tokio::test]
async fn bad_sweep_sizes_are_refused_before_anything_is_swept() {
    let app = app_with_an_acked_file().await;
    let data_dir = app.data_dir.path().display().to_string();
    let refused = [
        (
            "--sweep-batch",
            "0",
            "--sweep-batch must be between 1 and 50000 rows, not 0",
        ),
        (
            "--sweep-batch",
            "50001",
            "--sweep-batch must be between 1 and 50000 rows, not 50001",
        ),
        (
            "--sweep-deletes-in-flight",
            "0",
            "--sweep-deletes-in-flight must be between 1 and 64, not 0",
        ),
        (
            "--sweep-deletes-in-flight",
            "65",
            "--sweep-deletes-in-flight must be between 1 and 64, not 65",
        ),
    ];
    for (flag, value, message) in refused {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_molecule"))
            .args(["sweep", "--once", "--json", "--ack-retention", "0s"])
            .args(["--admin-token", "unused-here", "--data-dir", &data_dir])
            .args([flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag} {value}: {stderr}");
        assert!(out.stdout.is_empty(), "{flag} {value}");
        assert!(stderr.contains(message), "{flag} {value}: {stderr}");
    }
    let stats = app
        .store
        .upload_stats(molecule::domain::now())
        .await
        .unwrap();
    assert_eq!((stats.acked, app.blob_keys().await.len()), (1, 1));

    let dir = tempfile::tempdir().unwrap();
    let token = molecule::domain::AuthToken::generate();
    let mut config = molecule::config::Config::with_defaults(dir.path(), token);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.sweep_deletes_in_flight = 0;
    let err = match molecule::app::Application::build(config).await {
        Ok(_) => panic!("a server with no deletes in flight started"),
        Err(e) => format!("{e:#}"),
    };
    assert_eq!(
        err,
        "--sweep-deletes-in-flight must be between 1 and 64, not 0"
    );
    assert!(!dir.path().join("molecule.db").exists(), "nothing opened");
}

/// A blob store whose listing panics: a bug cannot be produced on demand,
/// so this stand-in is the one fault the suite simulates.
struct PanickingList(molecule::blob::FsBlobStore);

#[async_trait::async_trait]
impl molecule::blob::BlobStore for PanickingList {
    fn kind(&self) -> &'static str {
        "panicking"
    }
    async fn put(
        &self,
        key: &str,
        body: molecule::blob::ByteStream<'_>,
    ) -> Result<u64, molecule::blob::BlobError> {
        self.0.put(key, body).await
    }
    async fn get(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<molecule::blob::ByteStream<'static>, molecule::blob::BlobError> {
        self.0.get(key, range).await
    }
    async fn delete(&self, key: &str) -> Result<(), molecule::blob::BlobError> {
        self.0.delete(key).await
    }
    async fn list(&self) -> Result<Vec<molecule::blob::BlobEntry>, molecule::blob::BlobError> {
        panic!("a bug in the middle of a sweep pass")
    }
    async fn ping(&self) -> Result<(), molecule::blob::BlobError> {
        self.0.ping().await
    }
}

#[tokio::test]
async fn a_panicking_pass_does_not_end_the_sweeper() {
    let dir = tempfile::tempdir().unwrap();
    let store = bare_store(dir.path()).await;
    let blobs = std::sync::Arc::new(PanickingList(
        molecule::blob::FsBlobStore::open(dir.path().join("blobs"))
            .await
            .unwrap(),
    ));
    assert_the_loop_survives(store, blobs, "panic").await;
}
