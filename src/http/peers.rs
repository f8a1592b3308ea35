//! Peers of a workspace, as Molecule's SDK discovers them: the list of
//! workspaces it may reach (`GET /registry/:id/peers`) and one target's
//! address (`GET /registry/discover/:target`). Both apply the one
//! communication rule of `crate::domain::team`.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{live_workspace, AsPeer, Calling, SelfOrOperator};
use super::auth::require_reach;
use super::extract::WorkspacePath;
use super::workspaces::WorkspaceStatus;
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::team::Caller;
use crate::domain::{self, DeliveryMode, Tier, WorkspaceId};
use crate::store::Workspace;

/// A workspace the caller may reach, as the SDK's `PeerInfo` reads it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct PeerView {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: WorkspaceId,
    /// Display name.
    pub name: String,
    /// Where to call it directly: its URL in push mode, empty in poll mode
    /// (reach it through `POST /workspaces/:id/a2a`).
    pub url: String,
    /// The `role` its agent card declares, or empty.
    pub role: String,
    /// Resource tier, 1 to 4.
    #[schema(value_type = i64)]
    pub tier: Tier,
    /// Its status.
    pub status: WorkspaceStatus,
    /// The agent card it registered, or `{}`.
    #[schema(value_type = Object)]
    pub agent_card: Value,
}

/// One discovered target.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct DiscoveredPeer {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: WorkspaceId,
    /// Its URL in push mode, empty in poll mode.
    pub url: String,
    /// Display name.
    pub name: String,
    /// Its status.
    pub status: WorkspaceStatus,
}

fn direct_url(mode: DeliveryMode, url: Option<&str>) -> String {
    match mode {
        DeliveryMode::Push => url.unwrap_or_default().to_owned(),
        DeliveryMode::Poll => String::new(),
    }
}

fn status(state: &AppState, w: &Workspace) -> WorkspaceStatus {
    w.liveness()
        .status(domain::now(), state.config.offline_after)
}

/// Who is asking, at its place in the tree: a workspace whose own row is
/// gone is answered like a revoked token (401), not with a 404.
pub(super) async fn caller(state: &AppState, calling: domain::Caller) -> Result<Caller> {
    match calling {
        domain::Caller::Operator => Ok(Caller::Operator),
        domain::Caller::Workspace(own) => match live_workspace(state, own).await {
            Ok(me) => Ok(Caller::Workspace(super::auth::node_of(state, &me).await?)),
            Err(Error::NotFound(_)) => Err(Error::Unauthorized),
            Err(e) => Err(e),
        },
        // Only the ledger names a schedule as a caller; no request can.
        domain::Caller::Schedule(_) => Err(Error::Unauthorized),
    }
}

/// Every workspace `:id` may reach: its parent, its children and its
/// siblings (root workspaces are siblings of each other).
#[utoipa::path(get, path = "/registry/{id}/peers", tag = "registry",
    params(("id" = String, Path, description = "workspace id"),
           ("X-Workspace-ID" = Option<String>, Header, description = "the calling workspace; must be :id")),
    responses((status = 200, body = [PeerView]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn list_peers(
    State(state): State<AppState>,
    SelfOrOperator(WorkspacePath(id), _): SelfOrOperator,
    _: Calling<AsPeer>,
) -> Result<Json<Vec<PeerView>>> {
    Ok(Json(peers_of(&state, id, false).await?))
}

/// The peers of workspace `id` (the communication rule), for the route
/// above and the MCP tool `list_peers`; `checked_live`: the caller has
/// just read `id`'s row, live, so it is not read again.
pub(super) async fn peers_of(
    state: &AppState,
    id: WorkspaceId,
    checked_live: bool,
) -> Result<Vec<PeerView>> {
    if !checked_live {
        live_workspace(state, id).await?;
    }
    // One recursive query over its neighbourhood (the rule in SQL, see
    // `store::fleet`), not a listing of every workspace.
    let now = domain::now();
    let peers = state
        .store
        .reachable_from(id)
        .await?
        .into_iter()
        .filter(|w| w.id != id)
        .map(|w| PeerView {
            id: w.id,
            url: direct_url(w.delivery_mode, w.url.as_deref()),
            role: w
                .agent_card
                .as_ref()
                .and_then(|c| c.get("role"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            tier: w.tier,
            status: w.liveness.status(now, state.config.offline_after),
            agent_card: w
                .agent_card
                .unwrap_or_else(|| Value::Object(Default::default())),
            name: w.name,
        })
        .collect();
    Ok(peers)
}

/// Where to reach one workspace, if the caller may.
#[utoipa::path(get, path = "/registry/discover/{target}", tag = "registry",
    params(("target" = String, Path, description = "the workspace to reach"),
           ("X-Workspace-ID" = Option<String>, Header, description = "the calling workspace; must be the token's")),
    responses((status = 200, body = DiscoveredPeer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn discover_peer(
    State(state): State<AppState>,
    Calling {
        caller: calling,
        path: WorkspacePath(target),
        ..
    }: Calling<AsPeer, WorkspacePath>,
) -> Result<Json<DiscoveredPeer>> {
    let from = caller(&state, calling).await?;
    let found = live_workspace(&state, target).await?;
    require_reach(&from, &super::auth::node_of(&state, &found).await?)?;
    Ok(Json(DiscoveredPeer {
        id: found.id,
        url: direct_url(found.delivery_mode, found.url.as_deref()),
        status: status(&state, &found),
        name: found.name,
    }))
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_peers))
        .routes(routes!(discover_peer))
}
