//! Entry points for the fuzz targets in `fuzz/` (a crate of its own,
//! outside this build) and for the test that replays their seed corpus.
//!
//! Each entry takes the fuzzer's raw bytes and panics only on a real
//! defect: a panic inside the code under test, or an oracle that fails
//! (the multipart scanner giving another verdict for the same body cut
//! differently; the template parser reaching its own recursion limit; a
//! route answering 5xx to a body). The hooks live in the library, always
//! compiled, so the normal build and the seed test keep them working; they
//! are hidden from the documentation because nothing else should call them.

use std::io::Write;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::Application;
use crate::config::Config;
use crate::domain::{
    nesting_bound, AuthToken, OrgTemplate, TemplateError, TemplateFormat, MAX_NESTING,
    MAX_TEMPLATE_DEPTH, MAX_TEMPLATE_NODES,
};

/// The multipart framing scanner: the same verdict whole or cut, and the
/// guarded parser answers any body.
pub fn multipart(data: &[u8]) {
    crate::http::scan_both_ways(data);
}

/// The template parser in both formats: never a panic, never its own
/// recursion limit (the scan in front of it answers deep texts), and an
/// accepted template within every limit.
pub fn template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for format in [TemplateFormat::Json, TemplateFormat::Yaml] {
        match OrgTemplate::parse(text, format) {
            Err(TemplateError::NestedTooDeep) => assert!(
                nesting_bound(text, format) > MAX_NESTING,
                "{format:?}: the parser, not the scan, met the depth"
            ),
            Err(TemplateError::Malformed(m)) => assert!(
                !m.contains("recursion limit"),
                "{format:?}: the parser hit its recursion limit: {m}"
            ),
            Err(_) => {}
            Ok(t) => {
                let nodes = t.flatten();
                assert!(nodes.len() <= MAX_TEMPLATE_NODES, "{format:?}: node count");
                for (flat, path) in nodes {
                    assert!(flat.depth <= MAX_TEMPLATE_DEPTH, "{format:?}: {path} depth");
                    assert!(!flat.node.name.contains('\0'), "{format:?}: {path} NUL");
                }
            }
        }
    }
}

/// The plugin archive checker, over the bytes as they are and over the
/// bytes gzip-compressed (so they reach the tar reader).
pub fn plugin_archive(data: &[u8]) {
    let _ = crate::plugin_archive::check_archive(data);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("BUG: writing to a Vec");
    let gz = gz.finish().expect("BUG: writing to a Vec");
    let _ = crate::plugin_archive::check_archive(&gz[..]);
}

/// The JSON routes a fuzzed body is sent to: method, path (`{id}` is the
/// fixture workspace), and whether the operator (else the workspace)
/// calls it.
const ROUTES: [(&str, &str, bool); 10] = [
    ("POST", "/workspaces/{id}/schedules", false),
    ("POST", "/workspaces/{id}/approvals", false),
    ("POST", "/workspaces/{id}/a2a", true),
    ("POST", "/workspaces/{id}/mcp", false),
    ("POST", "/workspaces/{id}/usage", false),
    ("POST", "/workspaces/{id}/traces", false),
    ("POST", "/org/tokens", true),
    ("POST", "/workspaces/{id}/tokens", true),
    ("POST", "/org/import?dry_run=true", true),
    ("POST", "/org/import", true),
];

/// A running server (SQLite, in a temporary folder) with one poll-mode
/// workspace, for sending fuzzed JSON bodies to its routes.
pub struct Server {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
    admin: String,
    workspace: String,
    token: String,
    shutdown: CancellationToken,
    dir: std::path::PathBuf,
}

impl Server {
    /// Starts the server; rate limits and the scheduler are off so that
    /// every body reaches its handler.
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = std::env::temp_dir().join(format!("molecule-fuzz-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let admin = AuthToken::generate();
        let mut config = Config::with_defaults(&dir, admin.clone());
        config.listen = "127.0.0.1:0".parse().expect("BUG: a socket address");
        config.schedule_tick = Duration::ZERO;
        config.sweep_interval = Duration::from_secs(24 * 3600);
        config.rate_limit = None;
        config.mcp_rate_limit = None;
        let shutdown = CancellationToken::new();
        let (base, client) = runtime.block_on(async {
            let app = Application::build(config).await.expect("the app starts");
            let base = format!("http://127.0.0.1:{}", app.port());
            tokio::spawn(app.run_until_stopped(shutdown.clone()));
            (base, reqwest::Client::new())
        });
        let created: serde_json::Value = runtime.block_on(async {
            let resp = client
                .post(format!("{base}/workspaces"))
                .bearer_auth(admin.expose())
                .json(&serde_json::json!({"name": "fuzz", "delivery_mode": "poll"}))
                .send()
                .await
                .expect("create the workspace");
            resp.json().await.expect("its JSON")
        });
        let field = |k: &str| created[k].as_str().expect("a created workspace").to_owned();
        Self {
            workspace: field("id"),
            token: field("auth_token"),
            runtime,
            client,
            base,
            admin: admin.expose().to_owned(),
            shutdown,
            dir,
        }
    }

    /// Sends `data[1..]` as the body of the route `data[0]` picks, and
    /// panics if the answer is a 5xx (a handler's panic is one).
    pub fn send(&self, data: &[u8]) {
        let Some((&pick, body)) = data.split_first() else {
            return;
        };
        let (method, path, operator) = ROUTES[usize::from(pick) % ROUTES.len()];
        let path = path.replace("{id}", &self.workspace);
        let token = if operator { &self.admin } else { &self.token };
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("BUG: a method");
        let request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2024-11-05")
            .body(body.to_vec());
        let (status, answer) = self.runtime.block_on(async {
            let resp = request.send().await.expect("the server answers");
            let status = resp.status();
            (status, resp.text().await.unwrap_or_default())
        });
        assert!(
            !status.is_server_error(),
            "{path} answered {status} to {:?}: {answer}",
            String::from_utf8_lossy(body)
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
