//! A typed HTTP client of `shared/API.md`, used by the operator CLI and by
//! `molecule connect`. It is the only way those faces reach the server: one
//! method per endpoint, one error type that tells apart the answers a caller
//! reacts to differently (401 → stop and ask for a new token, 404 → give up
//! on that item, 410 → reset the cursor, transport → back off and retry).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use reqwest::header;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use url::Url;

use crate::http::MAX_WAIT_SECS;
/// The wire types are the server's own, under the server's names, so the
/// two sides cannot drift apart and a type reads the same on both.
pub(crate) use crate::http::{
    ActivityView, CreatedWorkspace, DelegationCreated, DelegationStatsView, DelegationView,
    ImportReport, NewWorkspace, PendingUploadView, PluginView, RegisteredWorkspace, RotatedToken,
    SecretView, UploadStatsView, UploadedFiles, WorkspaceView,
};

/// Everything that can go wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// 401: the token is missing, unknown, revoked or rotated.
    #[error("the token was refused (401): {0}")]
    Unauthorized(String),
    /// 404: the workspace or file does not exist (or is not ours).
    #[error("not found (404): {0}")]
    NotFound(String),
    /// 410: the activity cursor is older than the retained window.
    #[error("gone (410): {message}")]
    Gone {
        /// The server's sentence.
        message: String,
        /// Where to restart the cursor (the server's `restart_since_id`).
        restart_since_id: i64,
    },
    /// Any other non-2xx answer.
    #[error("the server answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// The `error` field of the body, or the body itself.
        message: String,
    },
    /// The server could not be reached, or the connection broke or timed
    /// out mid-request.
    #[error("could not reach the server at {url}: {source}")]
    Transport {
        /// The server's base URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered 2xx with a body we could not read.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
    /// A local file could not be read (uploads).
    #[error("failed to read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The base URL is not usable.
    #[error("invalid server URL {0:?}: expected http://HOST:PORT or https://…")]
    BadUrl(String),
}

impl ClientError {
    /// True for failures worth retrying later: the server is down, the
    /// connection broke, or it answered 5xx / 429.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }

    /// True when the server could not be connected to at all (as opposed
    /// to a connection that broke mid-way).
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, Self::Transport { source, .. } if source.is_connect())
    }
}

/// Result of a client call.
pub(crate) type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Query of `GET /workspaces/:id/activity`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ActivityQuery {
    /// Only rows of this type.
    pub activity_type: Option<String>,
    /// Only rows after this id.
    pub since_id: Option<i64>,
    /// At most this many rows.
    pub limit: Option<u32>,
    /// Long-poll for this many seconds when nothing matches.
    pub wait: Option<u64>,
}

/// A download in progress: the answer's headers, then its body as a stream.
pub(crate) struct Download {
    /// The offset of the first byte of `body` in the file (0 for a 200).
    pub start: u64,
    response: Response,
    base: String,
}

impl Download {
    /// The body, chunk by chunk; a broken connection is a `Transport` error.
    pub(crate) fn into_stream(self) -> impl Stream<Item = Result<Bytes>> {
        let base = self.base;
        self.response
            .bytes_stream()
            .map_err(move |source| ClientError::Transport {
                url: base.clone(),
                source,
            })
    }
}

/// Called while an upload streams: `(index of the file, bytes of it sent so far)`.
pub(crate) type ProgressFn = Arc<dyn Fn(usize, u64) + Send + Sync>;

/// The HTTP client of one server, with one bearer token.
#[derive(Clone)]
pub(crate) struct Client {
    base: Url,
    token: String,
    http: reqwest::Client,
    /// For long polls only: its read timeout outlasts the longest wait.
    long_poll: reqwest::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// How long a plain request may take; long polls add their `wait`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A stalled body read fails after this long, so a dead connection is
/// noticed and resumed rather than waited on forever.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How much later than its `wait` a long poll's answer may come (a busy
/// server, a slow link).
const LONG_POLL_GRACE: Duration = Duration::from_secs(15);
/// The read timeout of long polls, derived from the longest `wait` the
/// server grants: the server sends nothing while it holds a poll, so a read
/// timeout not longer than the wait cuts every idle poll just before its
/// empty answer (seen as "error sending request" and a reconnect).
const LONG_POLL_READ_TIMEOUT: Duration =
    Duration::from_secs(MAX_WAIT_SECS + LONG_POLL_GRACE.as_secs());
const _: () = assert!(LONG_POLL_READ_TIMEOUT.as_secs() > MAX_WAIT_SECS);

impl Client {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:8080`) that
    /// sends `token` as its bearer token.
    pub(crate) fn new(base: &str, token: impl Into<String>) -> Result<Self> {
        let mut url = Url::parse(base.trim()).map_err(|_| ClientError::BadUrl(base.to_owned()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ClientError::BadUrl(base.to_owned()));
        }
        // Paths are joined below the base, so it must end with a slash.
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        let build = |read_timeout| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .read_timeout(read_timeout)
                .user_agent(concat!("molecule/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|source| ClientError::Transport {
                    url: base.to_owned(),
                    source,
                })
        };
        Ok(Self {
            base: url,
            token: token.into(),
            http: build(READ_TIMEOUT)?,
            long_poll: build(LONG_POLL_READ_TIMEOUT)?,
        })
    }

    /// The server's base URL.
    pub(crate) fn base(&self) -> &Url {
        &self.base
    }

    fn base_str(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request_with(&self.http, method, path)
    }

    fn request_with(&self, http: &reqwest::Client, method: Method, path: &str) -> RequestBuilder {
        // `path` is built from ids we parsed or were given; join cannot
        // fail on a relative path, but fall back to the base rather than panic.
        let url = self
            .base
            .join(path.trim_start_matches('/'))
            .unwrap_or_else(|_| self.base.clone());
        http.request(method, url).bearer_auth(&self.token)
    }

    /// Sends the request and maps every non-2xx status to its error.
    async fn send(&self, req: RequestBuilder) -> Result<Response> {
        let response = req.send().await.map_err(|source| ClientError::Transport {
            url: self.base_str(),
            source,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let parsed = serde_json::from_str::<Value>(&body).ok();
        let restart_since_id = parsed
            .as_ref()
            .and_then(|v| v.get("restart_since_id").and_then(Value::as_i64))
            .unwrap_or(0);
        let message = parsed
            .as_ref()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| {
                let body = body.trim();
                if body.is_empty() {
                    status.canonical_reason().unwrap_or("no message").to_owned()
                } else {
                    body.chars().take(500).collect()
                }
            });
        Err(match status {
            StatusCode::UNAUTHORIZED => ClientError::Unauthorized(message),
            StatusCode::NOT_FOUND => ClientError::NotFound(message),
            StatusCode::GONE => ClientError::Gone {
                message,
                restart_since_id,
            },
            _ => ClientError::Status { status, message },
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, req: RequestBuilder) -> Result<T> {
        let response = self.send(req).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: self.base_str(),
                source,
            })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `POST /workspaces`.
    pub(crate) async fn create_workspace(&self, new: &NewWorkspace) -> Result<CreatedWorkspace> {
        self.json(
            self.request(Method::POST, "workspaces")
                .json(new)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `GET /workspaces`.
    pub(crate) async fn list_workspaces(&self) -> Result<Vec<WorkspaceView>> {
        self.json(
            self.request(Method::GET, "workspaces")
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `GET /workspaces/:id`.
    pub(crate) async fn get_workspace(&self, id: &str) -> Result<WorkspaceView> {
        self.json(
            self.request(Method::GET, &format!("workspaces/{id}"))
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `POST /workspaces/:id/external/rotate`.
    pub(crate) async fn rotate_token(&self, id: &str) -> Result<RotatedToken> {
        self.json(
            self.request(Method::POST, &format!("workspaces/{id}/external/rotate"))
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `POST /workspaces/:id/memories`.
    pub(crate) async fn commit_memory(
        &self,
        id: &str,
        content: &str,
        scope: &str,
        namespace: Option<&str>,
    ) -> Result<crate::http::CommittedMemory> {
        let mut body = json!({"content": content, "scope": scope});
        if let Some(ns) = namespace {
            body["namespace"] = json!(ns);
        }
        self.json(
            self.request(Method::POST, &format!("workspaces/{id}/memories"))
                .json(&body)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `GET /workspaces/:id/memories`, or the operator's `GET
    /// /admin/memories` when `id` is `None`. `query` holds `q`, `scope`,
    /// `namespace`, `limit` pairs.
    pub(crate) async fn recall_memories(
        &self,
        id: Option<&str>,
        query: &[(&str, String)],
    ) -> Result<Vec<crate::http::MemoryView>> {
        let path = match id {
            Some(id) => format!("workspaces/{id}/memories"),
            None => "admin/memories".to_owned(),
        };
        self.json(
            self.request(Method::GET, &path)
                .query(query)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `DELETE /workspaces/:id/memories/:mid`, or the operator's `DELETE
    /// /admin/memories/:mid` when `id` is `None`.
    pub(crate) async fn delete_memory(&self, id: Option<&str>, memory_id: &str) -> Result<()> {
        let memory_id = segment(memory_id);
        let path = match id {
            Some(id) => format!("workspaces/{id}/memories/{memory_id}"),
            None => format!("admin/memories/{memory_id}"),
        };
        self.send(self.request(Method::DELETE, &path).timeout(REQUEST_TIMEOUT))
            .await
            .map(drop)
    }

    /// `GET /workspaces/:id/memory`.
    pub(crate) async fn list_keys(&self, id: &str) -> Result<Vec<crate::http::KvView>> {
        self.json(
            self.request(Method::GET, &format!("workspaces/{id}/memory"))
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `GET /workspaces/:id/memory/:key`.
    pub(crate) async fn get_key(&self, id: &str, key: &str) -> Result<crate::http::KvView> {
        self.json(
            self.request(
                Method::GET,
                &format!("workspaces/{id}/memory/{}", segment(key)),
            )
            .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `POST /workspaces/:id/memory`.
    pub(crate) async fn set_key(
        &self,
        id: &str,
        key: &str,
        value: &Value,
        ttl_s: Option<i64>,
        if_version: Option<i64>,
    ) -> Result<crate::http::KvView> {
        let mut body = json!({"key": key, "value": value});
        if let Some(ttl) = ttl_s {
            body["ttl_s"] = json!(ttl);
        }
        if let Some(v) = if_version {
            body["if_version"] = json!(v);
        }
        self.json(
            self.request(Method::POST, &format!("workspaces/{id}/memory"))
                .json(&body)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `DELETE /workspaces/:id/memory/:key`.
    pub(crate) async fn delete_key(&self, id: &str, key: &str) -> Result<()> {
        self.send(
            self.request(
                Method::DELETE,
                &format!("workspaces/{id}/memory/{}", segment(key)),
            )
            .timeout(REQUEST_TIMEOUT),
        )
        .await
        .map(drop)
    }

    /// `DELETE /workspaces/:id` (`?cascade=true` removes its subtree too).
    pub(crate) async fn delete_workspace(&self, id: &str, cascade: bool) -> Result<()> {
        let path = if cascade {
            format!("workspaces/{id}?cascade=true")
        } else {
            format!("workspaces/{id}")
        };
        self.send(self.request(Method::DELETE, &path).timeout(REQUEST_TIMEOUT))
            .await
            .map(drop)
    }

    /// `POST /workspaces/:id/{pause|resume|restart}`.
    pub(crate) async fn lifecycle(&self, id: &str, verb: &str) -> Result<WorkspaceView> {
        self.json(
            self.request(Method::POST, &format!("workspaces/{id}/{verb}"))
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `POST /org/import`: `template` is YAML or JSON, as `content_type` says.
    pub(crate) async fn import_org(
        &self,
        template: String,
        content_type: &str,
        dry_run: bool,
    ) -> Result<ImportReport> {
        let path = if dry_run {
            "org/import?dry_run=true"
        } else {
            "org/import"
        };
        self.json(
            self.request(Method::POST, path)
                .header(header::CONTENT_TYPE, content_type)
                .body(template)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `POST /registry/register` as the workspace itself, in `delivery_mode`.
    pub(crate) async fn register(
        &self,
        id: &str,
        delivery_mode: &str,
        agent_card: Option<Value>,
    ) -> Result<RegisteredWorkspace> {
        let mut body = json!({"id": id, "delivery_mode": delivery_mode});
        if let Some(card) = agent_card {
            body["agent_card"] = card;
        }
        self.json(
            self.request(Method::POST, "registry/register")
                .json(&body)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `POST /registry/heartbeat`.
    pub(crate) async fn heartbeat(&self, id: &str) -> Result<()> {
        let body = json!({"workspace_id": id});
        self.send(
            self.request(Method::POST, "registry/heartbeat")
                .json(&body)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
        .map(drop)
    }

    /// `POST /workspaces/:id/a2a` with a JSON-RPC `message/send` body;
    /// returns the server's answer (`{queued, activity_id}` for a poll
    /// workspace, the workspace's JSON-RPC answer for a push one).
    pub(crate) async fn send_a2a(&self, id: &str, rpc: &Value) -> Result<Value> {
        self.json(
            self.request(Method::POST, &format!("workspaces/{id}/a2a"))
                .json(rpc)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// Sends one text message as the operator (see [`Client::send_a2a`]).
    pub(crate) async fn send_text(&self, id: &str, text: &str) -> Result<Value> {
        let rpc = json!({
            "jsonrpc": "2.0",
            "id": uuid::Uuid::new_v4().to_string(),
            "method": "message/send",
            "params": {"message": {
                "role": "user",
                "messageId": uuid::Uuid::new_v4().to_string(),
                "parts": [{"kind": "text", "text": text}],
            }},
        });
        self.send_a2a(id, &rpc).await
    }

    /// `POST /workspaces/:id/notify`: the agent's message to the operator.
    pub(crate) async fn notify(
        &self,
        id: &str,
        message: &str,
        attachments: &[Value],
    ) -> Result<Value> {
        let body = json!({"message": message, "attachments": attachments});
        self.json(
            self.request(Method::POST, &format!("workspaces/{id}/notify"))
                .json(&body)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `GET /workspaces/:id/activity`, a long poll when `query.wait` is set.
    pub(crate) async fn list_activity(
        &self,
        id: &str,
        query: &ActivityQuery,
    ) -> Result<Vec<ActivityView>> {
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(t) = &query.activity_type {
            params.push(("type", t.clone()));
        }
        if let Some(s) = query.since_id {
            params.push(("since_id", s.to_string()));
        }
        if let Some(l) = query.limit {
            params.push(("limit", l.to_string()));
        }
        if let Some(w) = query.wait {
            params.push(("wait", w.to_string()));
        }
        let wait = query.wait.unwrap_or(0);
        let http = if wait > 0 {
            &self.long_poll
        } else {
            &self.http
        };
        self.json(
            self.request_with(http, Method::GET, &format!("workspaces/{id}/activity"))
                .query(&params)
                .timeout(REQUEST_TIMEOUT + Duration::from_secs(wait)),
        )
        .await
    }

    /// `GET /workspaces/:id/pending-uploads`.
    pub(crate) async fn list_pending_uploads(&self, id: &str) -> Result<Vec<PendingUploadView>> {
        self.json(
            self.request(Method::GET, &format!("workspaces/{id}/pending-uploads"))
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `GET /workspaces/:id/pending-uploads/:fid/content`, from byte
    /// `start` on when given (`Range: bytes=start-`). The server may answer
    /// the whole file anyway: check [`Download::start`].
    pub(crate) async fn download(
        &self,
        id: &str,
        file_id: &str,
        start: Option<u64>,
    ) -> Result<Download> {
        let mut req = self.request(
            Method::GET,
            &format!("workspaces/{id}/pending-uploads/{file_id}/content"),
        );
        if let Some(start) = start.filter(|s| *s > 0) {
            req = req.header(header::RANGE, format!("bytes={start}-"));
        }
        let response = self.send(req).await?;
        let start = if response.status() == StatusCode::PARTIAL_CONTENT {
            // `bytes S-E/T`
            let range = response
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range);
            match range {
                Some(s) => s,
                None => {
                    return Err(ClientError::Decode(
                        "a 206 answer without a valid Content-Range".into(),
                    ))
                }
            }
        } else {
            0
        };
        Ok(Download {
            start,
            response,
            base: self.base_str(),
        })
    }

    /// `POST /workspaces/:id/pending-uploads/:fid/ack`.
    pub(crate) async fn ack(&self, id: &str, file_id: &str) -> Result<()> {
        self.send(
            self.request(
                Method::POST,
                &format!("workspaces/{id}/pending-uploads/{file_id}/ack"),
            )
            .timeout(REQUEST_TIMEOUT),
        )
        .await
        .map(drop)
    }

    /// `POST /workspaces/:id/chat/uploads`: streams every file from disk in
    /// one multipart request, calling `progress` as bytes go out.
    pub(crate) async fn upload_files(
        &self,
        id: &str,
        paths: &[PathBuf],
        progress: ProgressFn,
    ) -> Result<UploadedFiles> {
        let mut form = reqwest::multipart::Form::new();
        for (index, path) in paths.iter().enumerate() {
            let io = |source| ClientError::Io {
                path: path.clone(),
                source,
            };
            let file = tokio::fs::File::open(path).await.map_err(io)?;
            let len = file.metadata().await.map_err(io)?.len();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into());
            let progress = progress.clone();
            let mut sent = 0u64;
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024).inspect_ok(
                move |chunk| {
                    sent += chunk.len() as u64;
                    progress(index, sent);
                },
            );
            let part = reqwest::multipart::Part::stream_with_length(
                reqwest::Body::wrap_stream(stream),
                len,
            )
            .file_name(name)
            .mime_str(guess_mimetype(path))
            .map_err(|e| ClientError::Decode(e.to_string()))?;
            form = form.part("files", part);
        }
        // No overall timeout: a large upload on a slow link takes what it
        // takes; a stalled one fails on the read timeout.
        self.json(
            self.request(Method::POST, &format!("workspaces/{id}/chat/uploads"))
                .multipart(form),
        )
        .await
    }

    /// `GET /admin/pending-uploads/stats`.
    pub(crate) async fn stats(&self) -> Result<UploadStatsView> {
        self.json(
            self.request(Method::GET, "admin/pending-uploads/stats")
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// The path of a secret scope: `admin/secrets` (global) or
    /// `workspaces/:id/secrets`.
    fn secrets_path(workspace: Option<&str>) -> String {
        match workspace {
            Some(id) => format!("workspaces/{id}/secrets"),
            None => "admin/secrets".to_owned(),
        }
    }

    /// `PUT /workspaces/:id/secrets/:KEY` or `PUT /admin/secrets/:KEY`.
    pub(crate) async fn set_secret(
        &self,
        workspace: Option<&str>,
        key: &str,
        value: &str,
    ) -> Result<SecretView> {
        let path = format!("{}/{key}", Self::secrets_path(workspace));
        self.json(
            self.request(Method::PUT, &path)
                .json(&json!({"value": value}))
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `GET /workspaces/:id/secrets` or `GET /admin/secrets`: keys only.
    pub(crate) async fn list_secrets(&self, workspace: Option<&str>) -> Result<Vec<SecretView>> {
        self.json(
            self.request(Method::GET, &Self::secrets_path(workspace))
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `DELETE /workspaces/:id/secrets/:KEY` or `DELETE /admin/secrets/:KEY`.
    pub(crate) async fn delete_secret(&self, workspace: Option<&str>, key: &str) -> Result<()> {
        let path = format!("{}/{key}", Self::secrets_path(workspace));
        self.send(self.request(Method::DELETE, &path).timeout(REQUEST_TIMEOUT))
            .await
            .map(drop)
    }

    /// `PUT /plugins/:name` with a `.tar.gz` body.
    pub(crate) async fn publish_plugin(&self, name: &str, tarball: Vec<u8>) -> Result<PluginView> {
        self.json(
            self.request(Method::PUT, &format!("plugins/{name}"))
                .header(header::CONTENT_TYPE, "application/gzip")
                .body(tarball)
                .timeout(Duration::from_secs(600)),
        )
        .await
    }

    /// `GET /plugins`.
    pub(crate) async fn list_plugins(&self) -> Result<Vec<PluginView>> {
        self.json(
            self.request(Method::GET, "plugins")
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `POST /workspaces/:to/delegate`, as the workspace `from` names
    /// (`X-Workspace-ID`; `None` or `operator` for the operator itself).
    pub(crate) async fn delegate(
        &self,
        from: Option<&str>,
        to: &str,
        task: &str,
        idempotency_key: Option<&str>,
        deadline_s: Option<i64>,
    ) -> Result<DelegationCreated> {
        let mut req = self
            .request(Method::POST, &format!("workspaces/{to}/delegate"))
            .json(&json!({"task": task, "idempotency_key": idempotency_key, "deadline_s": deadline_s}))
            .timeout(REQUEST_TIMEOUT);
        if let Some(from) = from {
            req = req.header("X-Workspace-ID", from);
        }
        self.json(req).await
    }

    /// `POST /workspaces/:callee/delegations/:did/status`.
    pub(crate) async fn report_delegation(
        &self,
        callee: &str,
        delegation_id: &str,
        status: &str,
        result_preview: Option<&str>,
        error_detail: Option<&str>,
    ) -> Result<DelegationView> {
        self.json(
            self.request(
                Method::POST,
                &format!("workspaces/{callee}/delegations/{delegation_id}/status"),
            )
            .json(&json!({"status": status, "result_preview": result_preview, "error_detail": error_detail}))
            .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `POST /workspaces/:callee/delegations/:did/heartbeat`.
    pub(crate) async fn heartbeat_delegation(
        &self,
        callee: &str,
        delegation_id: &str,
    ) -> Result<DelegationView> {
        self.json(
            self.request(
                Method::POST,
                &format!("workspaces/{callee}/delegations/{delegation_id}/heartbeat"),
            )
            .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `GET /admin/delegations?status=&limit=`.
    pub(crate) async fn list_delegations(
        &self,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DelegationView>> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(s) = status {
            query.push(("status", s.to_owned()));
        }
        self.json(
            self.request(Method::GET, "admin/delegations")
                .query(&query)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `GET /admin/delegations/stats`.
    pub(crate) async fn delegation_stats(&self) -> Result<DelegationStatsView> {
        self.json(
            self.request(Method::GET, "admin/delegations/stats")
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }
}

/// The text parts of a JSON-RPC `message/send` answer (a Message, or a
/// Task with a status message or artifacts), joined by newlines.
pub(crate) fn answer_text(answer: &Value) -> String {
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if map.get("kind").and_then(Value::as_str) == Some("text") {
                    if let Some(t) = map.get("text").and_then(Value::as_str) {
                        out.push(t.to_owned());
                        return;
                    }
                }
                for (k, v) in map {
                    if matches!(
                        k.as_str(),
                        "parts" | "result" | "status" | "message" | "artifacts"
                    ) {
                        collect(v, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    let root = answer.get("result").unwrap_or(answer);
    collect(root, &mut out);
    out.join("\n")
}

/// The start `S` of a well-formed `bytes S-E/T` (`T` may be `*`).
fn parse_content_range(raw: &str) -> Option<u64> {
    let rest = raw.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let start = start.trim().parse().ok()?;
    if total.trim() != "*" {
        total.trim().parse::<u64>().ok()?;
    }
    Some(start)
}

/// A Content-Type for a file part, from its extension. The server
/// sanitizes whatever it gets; this only spares the agent a useless
/// `application/octet-stream` for common files.
pub(crate) fn guess_mimetype(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "py" => "text/x-python",
        "rs" => "text/x-rust",
        "yaml" | "yml" => "application/yaml",
        "toml" => "application/toml",
        _ => "application/octet-stream",
    }
}

/// One path segment, percent-encoded (a key may hold `/`, `?`, spaces…).
fn segment(raw: &str) -> String {
    percent_encoding::utf8_percent_encode(raw, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answer_text_reads_a_message_and_a_task() {
        let msg = json!({"jsonrpc": "2.0", "id": 1, "result": {"kind": "message", "parts": [{"kind": "text", "text": "hi"}]}});
        assert_eq!(answer_text(&msg), "hi");
        let task = json!({"result": {"kind": "task", "status": {"message": {"parts": [{"kind": "text", "text": "done"}]}},
            "artifacts": [{"parts": [{"kind": "text", "text": "out"}]}]}});
        let text = answer_text(&task);
        assert!(text.contains("done") && text.contains("out"), "{text}");
    }

    #[test]
    fn content_range_is_parsed() {
        assert_eq!(parse_content_range("bytes 100-199/200"), Some(100));
        assert_eq!(parse_content_range("bytes 0-0/*"), Some(0));
        assert_eq!(parse_content_range("bytes 0-0/x"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[test]
    fn base_url_gets_a_trailing_slash_and_joins_below_it() {
        let c = Client::new("http://127.0.0.1:9/prefix", "t").unwrap();
        assert_eq!(
            c.request(Method::GET, "health")
                .build()
                .unwrap()
                .url()
                .as_str(),
            "http://127.0.0.1:9/prefix/health"
        );
        assert!(matches!(
            Client::new("ftp://x", "t"),
            Err(ClientError::BadUrl(_))
        ));
        assert!(matches!(
            Client::new("not a url", "t"),
            Err(ClientError::BadUrl(_))
        ));
    }
}
