//! What an operator token may do, declared once for every route in
//! [`DECLARED`]: the route's method and path (as the OpenAPI document
//! spells it) and the [`Need`] it has. An operator token's role must
//! cover the need, and a token confined to a team subtree reaches only
//! the routes about one workspace inside it. The admin token of the
//! configuration, and operator tokens of role admin, pass everything.
//!
//! The check runs where the token is resolved (`auth`), before any path,
//! query or body is parsed, so a denied request changes nothing and
//! learns nothing beyond its 403. A route missing from the table is
//! denied to every role but admin, and the permission-matrix test (which
//! walks every route of the OpenAPI document) fails until it is declared.

use axum::extract::MatchedPath;
use axum::http::request::Parts;
use axum::http::Method;

use super::denied::Reason;
use super::{AppState, Error, Result};
use crate::domain::{Role, WorkspaceId};
use crate::store::OperatorGrant;

/// What a route needs of an operator token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: the route takes no token.
    Public,
    /// Reads (lists, activity, ledger, usage): every role.
    Read,
    /// Changes: operator and admin.
    Write,
    /// Tokens and global secrets: admin only.
    Admin,
}

impl Need {
    /// Whether `role` covers this need.
    pub fn allows(self, role: Role) -> bool {
        match self {
            Need::Public | Need::Read => true,
            Need::Write => role >= Role::Operator,
            Need::Admin => role == Role::Admin,
        }
    }
}

use Need::{Admin, Public, Read, Write};

/// Every route, its method and what it needs.
pub static DECLARED: &[(&str, &str, Need)] = &[
    ("GET", "/health", Public),
    ("GET", "/ready", Public),
    ("GET", "/.well-known/agent-card.json", Public),
    ("GET", "/metrics", Read),
    ("GET", "/admin/config", Read),
    ("GET", "/admin/audit", Read),
    ("GET", "/events", Read),
    ("GET", "/events/{id}", Read),
    ("GET", "/workspaces/{id}/audit", Read),
    ("POST", "/workspaces/{id}/audit", Write),
    ("GET", "/admin/usage", Read),
    ("POST", "/workspaces/{id}/usage", Write),
    ("GET", "/workspaces/{id}/usage", Read),
    ("GET", "/workspaces/{id}/metrics", Read),
    ("GET", "/traces/{trace_id}", Read),
    ("POST", "/workspaces/{id}/traces", Write),
    ("GET", "/workspaces/{id}/traces", Read),
    ("GET", "/workspaces/{id}/transcript", Read),
    ("GET", "/workspaces/{id}/budget", Read),
    ("PATCH", "/workspaces/{id}/budget", Write),
    ("GET", "/admin/activity/events", Read),
    ("GET", "/admin/delegations", Read),
    ("GET", "/admin/delegations/edges", Read),
    ("GET", "/admin/delegations/events", Read),
    ("GET", "/admin/delegations/stats", Read),
    ("GET", "/admin/memories", Read),
    ("DELETE", "/admin/memories/{mid}", Write),
    ("GET", "/admin/pending-uploads/stats", Read),
    // Read state is the caller's own (the reader is its token): reading
    // is all a viewer does, so every role keeps its own.
    ("GET", "/admin/read-state", Read),
    ("POST", "/admin/read-state/mark-all", Read),
    ("GET", "/admin/schedules/health", Read),
    ("GET", "/admin/secrets", Admin),
    ("DELETE", "/admin/secrets/{key}", Admin),
    ("PUT", "/admin/secrets/{key}", Admin),
    ("GET", "/agents", Read),
    ("GET", "/approvals/events", Read),
    ("GET", "/approvals/pending", Read),
    ("GET", "/instructions", Read),
    ("POST", "/instructions", Write),
    ("DELETE", "/instructions/{id}", Write),
    ("PUT", "/instructions/{id}", Write),
    ("POST", "/org/import", Write),
    ("GET", "/org/tokens", Admin),
    ("POST", "/org/tokens", Admin),
    ("DELETE", "/org/tokens/{tid}", Admin),
    ("GET", "/plugins", Read),
    ("DELETE", "/plugins/{name}", Write),
    ("PUT", "/plugins/{name}", Write),
    ("GET", "/registry/discover/{target}", Read),
    ("POST", "/registry/heartbeat", Write),
    ("POST", "/registry/register", Write),
    ("POST", "/registry/update-card", Write),
    ("GET", "/registry/{id}/peers", Read),
    ("GET", "/schedules/preview", Read),
    ("GET", "/search", Read),
    ("GET", "/workspaces", Read),
    ("POST", "/workspaces", Write),
    ("DELETE", "/workspaces/{id}", Write),
    ("GET", "/workspaces/{id}", Read),
    ("PATCH", "/workspaces/{id}", Write),
    (
        "GET",
        "/workspaces/{id}/.well-known/agent-card.json",
        Public,
    ),
    ("POST", "/workspaces/{id}/a2a", Write),
    ("GET", "/workspaces/{id}/activity", Read),
    ("POST", "/workspaces/{id}/activity", Write),
    ("GET", "/workspaces/{id}/agent-card", Read),
    ("GET", "/workspaces/{id}/approvals", Read),
    ("POST", "/workspaces/{id}/approvals", Write),
    ("GET", "/workspaces/{id}/approvals/{aid}", Read),
    ("POST", "/workspaces/{id}/approvals/{aid}/decide", Write),
    ("POST", "/workspaces/{id}/chat/uploads", Write),
    ("POST", "/workspaces/{id}/delegate", Write),
    ("GET", "/workspaces/{id}/delegations", Read),
    ("GET", "/workspaces/{id}/delegations/stats", Read),
    ("GET", "/workspaces/{id}/delegations/{did}", Read),
    ("POST", "/workspaces/{id}/delegations/{did}/cancel", Write),
    (
        "POST",
        "/workspaces/{id}/delegations/{did}/heartbeat",
        Write,
    ),
    ("POST", "/workspaces/{id}/delegations/{did}/retry", Write),
    ("POST", "/workspaces/{id}/delegations/{did}/status", Write),
    ("GET", "/workspaces/{id}/events", Read),
    ("GET", "/workspaces/{id}/external/connection", Read),
    ("POST", "/workspaces/{id}/external/rotate", Admin),
    ("GET", "/workspaces/{id}/instructions/resolve", Read),
    ("POST", "/workspaces/{id}/mcp", Write),
    ("POST", "/workspaces/{id}/mcp/messages", Write),
    ("GET", "/workspaces/{id}/mcp/stream", Write),
    ("GET", "/workspaces/{id}/memories", Read),
    ("POST", "/workspaces/{id}/memories", Write),
    ("DELETE", "/workspaces/{id}/memories/{mid}", Write),
    ("GET", "/workspaces/{id}/memory", Read),
    ("POST", "/workspaces/{id}/memory", Write),
    ("DELETE", "/workspaces/{id}/memory/{key}", Write),
    ("GET", "/workspaces/{id}/memory/{key}", Read),
    ("POST", "/workspaces/{id}/notify", Write),
    ("POST", "/workspaces/{id}/notify/uploads", Write),
    ("POST", "/workspaces/{id}/pause", Write),
    ("GET", "/workspaces/{id}/pending-uploads", Read),
    ("POST", "/workspaces/{id}/pending-uploads/{fid}/ack", Write),
    (
        "GET",
        "/workspaces/{id}/pending-uploads/{fid}/content",
        Read,
    ),
    ("GET", "/workspaces/{id}/plugins", Read),
    ("POST", "/workspaces/{id}/plugins", Write),
    ("GET", "/workspaces/{id}/plugins/{name}/download", Read),
    ("POST", "/workspaces/{id}/restart", Write),
    ("POST", "/workspaces/{id}/resume", Write),
    ("GET", "/workspaces/{id}/schedules", Read),
    ("POST", "/workspaces/{id}/schedules", Write),
    ("GET", "/workspaces/{id}/schedules/health", Read),
    ("DELETE", "/workspaces/{id}/schedules/{sid}", Write),
    ("PATCH", "/workspaces/{id}/schedules/{sid}", Write),
    ("GET", "/workspaces/{id}/schedules/{sid}/history", Read),
    ("POST", "/workspaces/{id}/schedules/{sid}/run", Write),
    ("GET", "/workspaces/{id}/secrets", Read),
    // Secret values: never to an operator token (the route is the
    // workspace's own anyway).
    ("GET", "/workspaces/{id}/secrets/values", Admin),
    ("DELETE", "/workspaces/{id}/secrets/{key}", Write),
    ("PUT", "/workspaces/{id}/secrets/{key}", Write),
    ("PUT", "/workspaces/{id}/read-state", Read),
    ("GET", "/workspaces/{id}/state", Read),
    ("GET", "/workspaces/{id}/tokens", Admin),
    ("POST", "/workspaces/{id}/tokens", Admin),
    ("DELETE", "/workspaces/{id}/tokens/{tid}", Admin),
];

/// Routes about no one workspace that a token confined to a team may
/// still use: each answers it with what lies inside its subtree only (the
/// handler's [`super::access::Reach`] narrows the read).
pub static NARROWED: &[(&str, &str)] = &[("GET", "/search")];

/// What the route `method path` needs; `None` when it is not declared.
pub fn need(method: &Method, path: &str) -> Option<Need> {
    DECLARED
        .iter()
        .find(|(m, p, _)| *m == method.as_str() && *p == path)
        .map(|(_, _, need)| *need)
}

/// The workspace a route is about, for a subtree-limited token: the
/// `{id}` of `/workspaces/{id}/…` and `/registry/{id}/…` (other routes'
/// `{id}` is not a workspace).
fn workspace_of(path: &str, parts: &Parts) -> Option<Result<WorkspaceId>> {
    if !(path.starts_with("/workspaces/{id}") || path.starts_with("/registry/{id}")) {
        return None;
    }
    // The routes are merged, not nested: the URI is the whole path.
    let id = parts.uri.path().split('/').nth(2).unwrap_or_default();
    Some(
        id.parse::<WorkspaceId>()
            .map_err(|e| Error::BadRequest(format!("workspace id: {e}"))),
    )
}

/// Whether `id` is `root` or one of its descendants (removed ones
/// included: their history stays readable to the subtree's operator).
async fn within(state: &AppState, root: WorkspaceId, id: WorkspaceId) -> Result<bool> {
    let mut at = Some(id);
    // Team trees are shallow; the bound guards a corrupt cycle.
    for _ in 0..256 {
        match at {
            Some(ws) if ws == root => return Ok(true),
            Some(ws) => {
                at = state
                    .store
                    .get_workspace(ws)
                    .await?
                    .and_then(|w| w.parent_id)
            }
            None => return Ok(false),
        }
    }
    Ok(false)
}

/// Why the operator token `grant` may not use the route of `parts`
/// (`None`: it may), with the 403 that says so.
pub(super) async fn refusal(
    state: &AppState,
    parts: &Parts,
    grant: &OperatorGrant,
) -> Result<Option<(Reason, Error)>> {
    let path = parts
        .extensions
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let need = need(&parts.method, &path);
    if need == Some(Public) {
        // A public route that reads a token when one is sent (the agent
        // card) shows anyone what it shows the anonymous.
        return Ok(None);
    }
    let role = grant.role;
    let allowed = match need {
        Some(need) => need.allows(role),
        None => role == Role::Admin,
    };
    if !allowed {
        return Ok(Some((
            Reason::Role,
            Error::Denied(format!(
                "this operator token's role ({role}) may not use {} {path}",
                parts.method
            )),
        )));
    }
    if let Some(root) = grant.team_root {
        let inside = match workspace_of(&path, parts) {
            Some(id) => within(state, root, id?).await?,
            None => NARROWED
                .iter()
                .any(|(m, p)| *m == parts.method.as_str() && *p == path),
        };
        if !inside {
            return Ok(Some((
                Reason::Subtree,
                Error::Denied(format!(
                    "this operator token is limited to the team under workspace {root}; \
                     {} {path} reaches outside it",
                    parts.method
                )),
            )));
        }
    }
    Ok(None)
}
