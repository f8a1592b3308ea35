//! The MCP bridge: any MCP client (Claude Code, Codex, opencode, the
//! official SDKs) uses a workspace's platform tools with the workspace's
//! own token, no Molecule SDK needed.
//!
//! - `POST /workspaces/:id/mcp` is the Streamable HTTP transport, served by
//!   the official Rust SDK `rmcp` mounted as a tower service behind this
//!   route's access rule. It speaks the current revision (2026-07-28, the
//!   stateless per-request envelope) and every `initialize`-era revision
//!   down to 2024-11-05, negotiated in `initialize`. It runs stateless (no
//!   `Mcp-Session-Id`): any replica answers any request.
//! - `GET /workspaces/:id/mcp/stream` is the older HTTP+SSE transport
//!   (2024-11-05): an `endpoint` event names the message path, `POST
//!   /workspaces/:id/mcp/messages?sessionId=…`, whose answers come back on
//!   the stream ([`legacy`]).
//!
//! Why `rmcp` rather than a hand-written JSON-RPC layer: its
//! `StreamableHttpService` is a plain `tower::Service` that mounts in axum
//! 0.8, it negotiates every revision from 2024-11-05 to 2026-07-28 (and
//! tracks the spec as it moves), and it hands each request's
//! `http::request::Parts` to the tool handler, which is how a tool learns
//! the workspace the route's extractor checked. It no longer ships the
//! HTTP+SSE server transport, so [`legacy`] feeds an `rmcp` server over a
//! channel pair instead: one protocol implementation behind both routes.
//!
//! The bearer is the workspace's own token bound to `:id`
//! ([`WorkspaceItself`]): another workspace's token is 401, the operator's
//! 403. Every request counts against the token's rate limit
//! (`--mcp-rate-limit`, a token bucket per token hash of
//! [`crate::rate::Limiter`], on top of the server-wide `--rate-limit`);
//! over it the answer is HTTP 429 with
//! `Retry-After` and a JSON-RPC error, counted in
//! `molecule_mcp_rate_limited_total`.

mod approvals;
mod legacy;
mod tasks;
mod tools;

use std::sync::{Arc, OnceLock};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{json, Value};
use tower::ServiceExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{LiveWorkspace, WorkspaceItself};
use super::{AppState, ErrorBody, Result};
use crate::domain::{AuthToken, TokenHash};
use crate::rate::{retry_after_secs, Limiter};
use tools::{Bound, MoleculeMcp};

/// JSON-RPC code of a call refused by the rate limit (implementation-
/// defined server error range).
pub(crate) const RATE_LIMITED: i64 = -32029;

/// What the MCP routes share: the SDK service, the limiter and the legacy
/// SSE sessions of this process.
#[derive(Clone)]
struct Mcp {
    service: StreamableHttpService<MoleculeMcp, NeverSessionManager>,
    /// Built on the first call, from the configured rate (the routes are
    /// assembled before the configuration is at hand).
    limiter: Arc<OnceLock<Limiter<TokenHash>>>,
    sessions: legacy::Sessions,
}

impl Mcp {
    fn new() -> Self {
        // Every request is authenticated by its bearer token, so the SDK's
        // Host allow-list (a DNS-rebinding guard for unauthenticated local
        // servers) would only refuse a public deployment's own hostname.
        let mut config = StreamableHttpServerConfig::default().disable_allowed_hosts();
        config.legacy_session_mode = false;
        config.json_response = true;
        Mcp {
            service: StreamableHttpService::new(
                || Ok(MoleculeMcp::default()),
                Arc::new(NeverSessionManager::default()),
                config,
            ),
            limiter: Arc::default(),
            sessions: legacy::Sessions::default(),
        }
    }

    /// Counts one call of the request's token; the 429 when over the limit.
    fn admit(&self, state: &AppState, token: &AuthToken, body: &[u8]) -> Option<Response> {
        let rate = state.config.mcp_rate_limit?;
        let wait = self
            .limiter
            .get_or_init(|| Limiter::new(rate))
            .check(&token.hash())
            .err()?;
        state.metrics.mcp_rate_limited.inc();
        let retry_after = retry_after_secs(wait);
        let id = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("id").cloned())
            .unwrap_or(Value::Null);
        let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": RATE_LIMITED,
            "message": format!("rate limit exceeded: {rate} for this token; retry after {retry_after} s"),
            "data": {"retry_after_s": retry_after}}});
        let mut resp = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        Some(resp)
    }
}

/// The request's bearer token (the access rule already resolved it).
fn token_of(req: &axum::http::HeaderMap) -> Option<AuthToken> {
    let raw = req.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (_, token) = raw.split_once(' ')?;
    Some(AuthToken::from_plaintext(token.trim()))
}

/// Reads the JSON-RPC body (bounded like every JSON body).
async fn read_body(body: Body) -> Result<Bytes> {
    axum::body::to_bytes(body, super::error::JSON_BODY_LIMIT)
        .await
        .map_err(|_| {
            super::Error::PayloadTooLarge(format!(
                "an MCP message must be at most {} bytes",
                super::error::JSON_BODY_LIMIT
            ))
        })
}

/// One MCP message, or a batch, over Streamable HTTP: JSON-RPC in, JSON
/// (or an SSE stream the SDK chooses) out.
#[utoipa::path(post, path = "/workspaces/{id}/mcp", tag = "mcp",
    params(("id" = String, Path, description = "the workspace; the bearer must be its own token")),
    request_body(content = Object, description = "a JSON-RPC 2.0 MCP message", content_type = "application/json"),
    responses((status = 200, description = "the JSON-RPC answer (application/json or text/event-stream)"),
        (status = 202, description = "a notification or response was accepted"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, description = "over the rate limit; JSON-RPC error with Retry-After")))]
async fn post_mcp(
    State(state): State<AppState>,
    Extension(mcp): Extension<Mcp>,
    ws: LiveWorkspace<WorkspaceItself>,
    req: Request,
) -> Result<Response> {
    let (mut parts, body) = req.into_parts();
    let bytes = read_body(body).await?;
    if let Some(token) = token_of(&parts.headers) {
        if let Some(refused) = mcp.admit(&state, &token, &bytes) {
            return Ok(refused);
        }
    }
    parts.extensions.insert(Bound {
        state,
        workspace: ws.row.id,
        checked_live: true,
    });
    let req = axum::http::Request::from_parts(parts, Body::from(bytes));
    let resp = match mcp.service.oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    Ok(resp.map(Body::new))
}

/// The routes of the MCP bridge.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_mcp))
        .routes(routes!(legacy::open_stream))
        .routes(routes!(legacy::post_message))
        .layer(Extension(Mcp::new()))
}
