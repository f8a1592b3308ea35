//! `spawn_app()` and `TestApp`: a real server on 127.0.0.1:0 with a fresh
//! database (SQLite in a temp dir, or a fresh PostgreSQL database when
//! `MOLECULE_TEST_DATABASE_URL` is set), and one helper per endpoint.

use std::sync::Arc;

use molecule::app::Application;
use molecule::blob::BlobStore;
use molecule::config::Config;
use molecule::domain::{AuthToken, WorkspaceId};
use molecule::store::Store;
use molecule::sweeper::Sweeper;
use reqwest::multipart::{Form, Part};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// The metadata engines the suites run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// True when CI promised every engine; a missing one is then a failure.
pub fn require_all_engines() -> bool {
    std::env::var("MOLECULE_REQUIRE_ALL_ENGINES").is_ok_and(|v| v == "1")
}

/// A fresh, empty PostgreSQL database, or `None` (test skipped) when no
/// server was provided outside CI.
pub async fn fresh_postgres_url() -> Option<String> {
    let Ok(admin) = std::env::var("MOLECULE_TEST_DATABASE_URL") else {
        assert!(
            !require_all_engines(),
            "MOLECULE_TEST_DATABASE_URL is not set but every engine is required"
        );
        eprintln!("skipping: MOLECULE_TEST_DATABASE_URL is not set");
        return None;
    };
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to the test PostgreSQL");
    drop_stale_test_databases(&mut conn).await;
    let name = format!(
        "molecule_test_{}_{}",
        chrono::Utc::now().timestamp(),
        uuid::Uuid::new_v4().simple()
    );
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let mut url = url::Url::parse(&admin).expect("valid test URL");
    url.set_path(&format!("/{name}"));
    Some(url.to_string())
}

/// A test database older than this belongs to a test that has ended.
const STALE_TEST_DATABASE_S: i64 = 3600;

/// Drops the test databases of ended tests. Each test process creates its
/// own database and cannot drop it on the way out (a failed assertion
/// unwinds past any async clean-up), so each new test drops those whose
/// name says they were made over an hour ago; on a long-lived machine
/// they would otherwise fill the disk. Best effort: another test may be
/// dropping the same one.
async fn drop_stale_test_databases(conn: &mut sqlx::PgConnection) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'molecule\\_test\\_%'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    for name in names {
        let made = name
            .strip_prefix("molecule_test_")
            .and_then(|rest| rest.split_once('_'))
            .and_then(|(secs, _)| secs.parse::<i64>().ok());
        if made.is_some_and(|t| now - t > STALE_TEST_DATABASE_S) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut *conn)
                .await;
        }
    }
}

/// Runs the test body once per engine (a module with `sqlite` and
/// `postgres` tests).
#[macro_export]
macro_rules! on_both_engines {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Engine::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::helpers::Engine::Postgres).await
            }
        }
    };
}

/// A running server and a client for it.
pub struct TestApp {
    pub address: String,
    pub admin_token: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
    pub sweeper: Sweeper,
    pub data_dir: TempDir,
    pub shutdown: CancellationToken,
    pub server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub config: Config,
    pub metrics_port: Option<u16>,
}

/// Options for [`spawn_app_with`].
pub struct Options {
    pub engine: Engine,
    pub tweak: Box<dyn FnOnce(&mut Config) + Send>,
}

impl Options {
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            tweak: Box::new(|_| {}),
        }
    }
    pub fn tweak(mut self, f: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.tweak = Box::new(f);
        self
    }
}

/// Starts the app on the default settings; `None` when the engine is not
/// available outside CI.
pub async fn spawn_app(engine: Engine) -> Option<TestApp> {
    spawn_app_with(Options::new(engine)).await
}

/// Starts the app with `tweak` applied to its configuration.
pub async fn spawn_app_with(options: Options) -> Option<TestApp> {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let admin = AuthToken::generate();
    let mut config = Config::with_defaults(data_dir.path(), admin.clone());
    config.listen = "127.0.0.1:0".parse().unwrap();
    // Tests drive the sweeper themselves.
    config.sweep_interval = std::time::Duration::from_secs(24 * 3600);
    // And the scheduler (`sweeper.scheduler().tick(now)`).
    config.schedule_tick = std::time::Duration::ZERO;
    config.allow_private_urls = true;
    // Suites hammer one server from one address; the edge's own tests
    // turn the limit back on.
    config.rate_limit = None;
    if options.engine == Engine::Postgres {
        config.database_url = fresh_postgres_url().await?;
    }
    (options.tweak)(&mut config);
    let app = Application::build(config.clone()).await.expect("build app");
    let port = app.port();
    let metrics_port = app.metrics_port();
    let store = app.state().store.clone();
    let blobs = app.state().blobs.clone();
    let sweeper = app.sweeper();
    let shutdown = CancellationToken::new();
    let metrics = app.state().metrics.clone();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    // The server sweeps once at start-up; let that pass finish so a test
    // driving the sweeper itself never finds the sweep lock taken.
    eventually("the start-up sweep", || {
        let text = metrics.render();
        async move { metric_value(&text, "molecule_sweep_runs_total{result=\"ok\"}") >= 1.0 }
    })
    .await;
    Some(TestApp {
        address: format!("http://127.0.0.1:{port}"),
        admin_token: admin.expose().to_owned(),
        client: reqwest::Client::builder().build().unwrap(),
        store,
        blobs,
        sweeper,
        data_dir,
        shutdown,
        server: Some(server),
        config,
        metrics_port,
    })
}

/// A created workspace with its token.
#[derive(Debug, Clone)]
pub struct Ws {
    pub id: String,
    pub token: String,
}

impl Ws {
    pub fn wid(&self) -> WorkspaceId {
        self.id.parse().unwrap()
    }
}

/// A file to upload.
pub struct UploadFile {
    pub name: String,
    pub mime: Option<String>,
    pub bytes: Vec<u8>,
}

pub fn file(name: &str, mime: &str, bytes: impl Into<Vec<u8>>) -> UploadFile {
    UploadFile {
        name: name.into(),
        mime: Some(mime.into()),
        bytes: bytes.into(),
    }
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = vec![0u8; len];
    rng.fill_bytes(&mut out);
    out
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn json(resp: Response) -> (StatusCode, Value) {
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        Self::json(
            self.client
                .get(self.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> (StatusCode, Value) {
        Self::json(
            self.client
                .post(self.url(path))
                .bearer_auth(token)
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn create_workspace(&self, body: Value) -> (StatusCode, Value) {
        self.post("/workspaces", &self.admin_token, &body).await
    }

    pub async fn create_poll_workspace(&self, name: &str) -> Ws {
        self.create_poll_workspace_under(name, None).await
    }

    /// A poll workspace, under `parent` when given (asserted 201).
    pub async fn create_poll_workspace_under(&self, name: &str, parent: Option<&Ws>) -> Ws {
        let mut body = json!({"name": name, "delivery_mode": "poll"});
        if let Some(p) = parent {
            body["parent_id"] = json!(p.id);
        }
        let (status, created) = self.create_workspace(body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        Ws {
            id: created["id"].as_str().unwrap().to_owned(),
            token: created["auth_token"].as_str().unwrap().to_owned(),
        }
    }

    /// Any method, with an optional JSON body.
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        Self::json(req.send().await.unwrap()).await
    }

    pub async fn create_push_workspace(&self, name: &str, url: &str) -> Ws {
        let (status, body) = self
            .create_workspace(json!({"name": name, "delivery_mode": "push", "url": url}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        Ws {
            id: body["id"].as_str().unwrap().to_owned(),
            token: body["auth_token"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn upload(&self, ws: &str, files: Vec<UploadFile>) -> (StatusCode, Value) {
        let mut form = Form::new();
        for f in files {
            let mut part = Part::bytes(f.bytes).file_name(f.name);
            if let Some(m) = f.mime {
                part = part.mime_str(&m).unwrap();
            }
            form = form.part("files", part);
        }
        Self::json(
            self.client
                .post(self.url(&format!("/workspaces/{ws}/chat/uploads")))
                .bearer_auth(&self.admin_token)
                .multipart(form)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn list_pending(&self, ws: &Ws) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/workspaces/{}/pending-uploads", ws.id), &ws.token)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body.as_array().unwrap().clone()
    }

    pub async fn content(&self, ws: &str, fid: &str, token: &str) -> Response {
        self.client
            .get(self.url(&format!("/workspaces/{ws}/pending-uploads/{fid}/content")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn ack(&self, ws: &str, fid: &str, token: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/workspaces/{ws}/pending-uploads/{fid}/ack"),
            token,
            &json!({}),
        )
        .await
    }

    pub async fn activity(&self, ws: &Ws, query: &str) -> (StatusCode, Value) {
        self.get(
            &format!("/workspaces/{}/activity?{query}", ws.id),
            &ws.token,
        )
        .await
    }

    pub async fn send_text(&self, ws: &str, text: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/workspaces/{ws}/a2a"),
            &self.admin_token,
            &json!({"method": "message/send", "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": text}]}}}),
        )
        .await
    }

    /// Every blob key in the store, without the temp-dir leftovers check.
    pub async fn blob_keys(&self) -> Vec<String> {
        self.blobs
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.key)
            .collect()
    }

    /// The Prometheus text of the server.
    pub async fn metrics_text(&self) -> String {
        let resp = self
            .client
            .get(self.url("/metrics"))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.text().await.unwrap()
    }

    /// The value of one sample line (`name{labels}`) in /metrics, 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics_text().await, series)
    }

    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

/// Reads one series from Prometheus text.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

/// Waits (up to 20 s) for `check` to hold, polling every 20 ms.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A free port on 127.0.0.1 for a server process (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (up to 30 s) until the `molecule serve` child at `base` answers
/// `/ready` with 200; panics at once if the child exits first.
pub async fn wait_until_ready(base: &str, child: &mut tokio::process::Child) {
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let ready = client
            .get(format!("{base}/ready"))
            .timeout(std::time::Duration::from_secs(2))
            .send()
            .await;
        if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("molecule serve at {base} exited early: {status}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "molecule serve at {base} did not become ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Revokes every token of a workspace straight in the database: no route
/// leaves a workspace without a live token, which the bootstrap cases need.
pub async fn revoke_tokens_directly(database_url: &str, workspace_id: &str) {
    if database_url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(database_url).await.unwrap();
        sqlx::query("UPDATE workspace_auth_tokens SET revoked_at = 1 WHERE workspace_id = ?1")
            .bind(workspace_id)
            .execute(&pool)
            .await
            .unwrap();
    } else {
        let pool = sqlx::PgPool::connect(database_url).await.unwrap();
        sqlx::query(
            "UPDATE workspace_auth_tokens SET revoked_at = now() WHERE workspace_id = $1::uuid",
        )
        .bind(workspace_id)
        .execute(&pool)
        .await
        .unwrap();
    }
}

/// The file id in the `uri` of file `index` of an upload answer.
pub fn file_id_of(answer: &Value, index: usize) -> String {
    let uri = answer["files"][index]["uri"]
        .as_str()
        .expect("an upload answer");
    uri.rsplit('/').next().unwrap().to_owned()
}

impl TestApp {
    /// Uploads one file, asserts it was staged, and returns its file id.
    pub async fn stage(&self, ws: &Ws, file: UploadFile) -> String {
        let (status, body) = self.upload(&ws.id, vec![file]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        file_id_of(&body, 0)
    }

    /// POSTs a hand-made multipart body (boundary `boundary`) as the operator.
    pub async fn upload_raw(
        &self,
        ws: &str,
        boundary: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Result<Response> {
        self.client
            .post(self.url(&format!("/workspaces/{ws}/chat/uploads")))
            .bearer_auth(&self.admin_token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
    }
}
