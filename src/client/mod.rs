//! A typed HTTP client of `shared/API.md`, used by the operator CLI and by
//! `molecule connect`. It is the only way those faces reach the server: one
//! method per endpoint, one error type that tells apart the answers a caller
//! reacts to differently (401 → stop and ask for a new token, 404 → give up
//! on that item, 410 → reset the cursor, transport → back off and retry).
//!
//! This module holds the client itself and its error; the endpoints are
//! grouped by resource in its submodules, each an `impl Client` block.

mod approvals;
mod delegations;
mod instructions;
mod memory;
mod messages;
mod plugins;
mod schedules;
mod secrets;
mod tokens;
mod uploads;
mod workspaces;

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use url::Url;

pub(crate) use crate::domain::inbox::answer_text;
use crate::http::MAX_WAIT_SECS;
/// The wire types are the server's own, under the server's names, so the
/// two sides cannot drift apart and a type reads the same on both.
pub(crate) use crate::http::{
    ActivityView, ApprovalView, CreatedWorkspace, DelegationCreated, DelegationStatsView,
    DelegationView, FireView, ImportReport, NewWorkspace, PendingUploadView, PluginView,
    RegisteredWorkspace, ResolvedInstructions, RotatedToken, ScheduleDeleted, ScheduleView,
    SecretView, UploadStatsView, UploadedFiles, WorkspaceView,
};
pub(crate) use messages::ActivityQuery;
pub(crate) use tokens::{TokenSpec, Tokens};
pub(crate) use uploads::{Download, ProgressFn};

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
}

/// One path segment, percent-encoded (a key may hold `/`, `?`, spaces…).
fn segment(raw: &str) -> String {
    percent_encoding::utf8_percent_encode(raw, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
