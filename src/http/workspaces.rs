//! Workspaces: create, list, show, change, delete, and the connection
//! block (with token rotation) an operator pastes on the agent's machine.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::auth::Principal;
use super::extract::WorkspacePath;
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::{self, AuthToken, CallbackUrl, DeliveryMode, WorkspaceId};
use crate::events::Event;
use crate::store::{self, Workspace};

/// A workspace is shown online while its last heartbeat is this recent.
pub const ONLINE_WINDOW_SECS: i64 = 90;

/// Whether a workspace's agent is connected, judged by its last heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceStatus {
    /// A heartbeat within the last 90 s.
    Online,
    /// Registered once, silent since.
    Offline,
    /// Never registered.
    NeverConnected,
}

impl std::fmt::Display for WorkspaceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WorkspaceStatus::Online => "online",
            WorkspaceStatus::Offline => "offline",
            WorkspaceStatus::NeverConnected => "never_connected",
        })
    }
}

/// A workspace as the API shows it (never with a token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkspaceView {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: WorkspaceId,
    /// Display name.
    pub name: String,
    /// `push` or `poll`.
    pub delivery_mode: DeliveryMode,
    /// Callback URL of a push workspace.
    pub url: Option<String>,
    /// `online` (heartbeat within 90 s), `offline`, or `never_connected`.
    pub status: WorkspaceStatus,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Last registration or heartbeat.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// The agent card sent at registration.
    #[schema(value_type = Option<Object>)]
    pub agent_card: Option<Value>,
}

impl WorkspaceView {
    /// Renders a stored workspace as of `now`.
    pub fn new(w: Workspace, now: DateTime<Utc>) -> Self {
        let status = match w.last_heartbeat_at {
            None => WorkspaceStatus::NeverConnected,
            Some(t) if (now - t).num_seconds() <= ONLINE_WINDOW_SECS => WorkspaceStatus::Online,
            Some(_) => WorkspaceStatus::Offline,
        };
        Self {
            id: w.id,
            name: w.name,
            delivery_mode: w.delivery_mode,
            url: w.url,
            status,
            created_at: w.created_at,
            updated_at: w.updated_at,
            last_heartbeat_at: w.last_heartbeat_at,
            agent_card: w.agent_card,
        }
    }
}

/// What the agent's machine needs to connect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Connection {
    /// This server's URL as workspaces reach it.
    pub platform_url: String,
    /// The workspace id.
    #[schema(value_type = String, format = Uuid)]
    pub workspace_id: WorkspaceId,
    /// The token, only right after create or rotate; `""` otherwise.
    pub auth_token: String,
    /// The exact command to paste on the agent's machine.
    pub connect_command: String,
}

impl Connection {
    /// Builds the block; `token` is `None` when it is not to be shown.
    pub fn new(platform_url: &str, id: WorkspaceId, token: Option<&AuthToken>) -> Self {
        let shown = token.map_or("<token>", |t| t.expose());
        Self {
            platform_url: platform_url.to_owned(),
            workspace_id: id,
            auth_token: token.map(|t| t.expose().to_owned()).unwrap_or_default(),
            connect_command: format!(
                "molecule connect --server {platform_url} --workspace {id} --token {shown} --dir ."
            ),
        }
    }
}

/// `POST /workspaces` body.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewWorkspace {
    /// Display name (1–200 characters).
    pub name: String,
    /// `push` or `poll`.
    pub delivery_mode: DeliveryMode,
    /// Callback URL; required in push mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// `POST /workspaces` answer: the workspace, its token (shown once) and its
/// connection block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedWorkspace {
    /// The workspace.
    #[serde(flatten)]
    pub workspace: WorkspaceView,
    /// The token, shown this once.
    pub auth_token: String,
    /// How to connect the agent.
    pub connection: Connection,
}

fn double_option<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `PATCH /workspaces/:id` body; absent fields are left alone, `"url": null`
/// clears the URL.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct UpdateWorkspace {
    /// New name.
    pub name: Option<String>,
    /// New mode.
    pub delivery_mode: Option<DeliveryMode>,
    /// New URL, or null to clear it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub url: Option<Option<String>>,
}

/// `{connection}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConnectionEnvelope {
    /// The connection block.
    pub connection: Connection,
}

/// `{auth_token, connection}` after a rotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RotatedToken {
    /// The new token, shown this once.
    pub auth_token: String,
    /// The connection block with the new token.
    pub connection: Connection,
}

pub(super) fn check_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Error::BadRequest(
            "`name` must be 1 to 200 characters".into(),
        ));
    }
    Ok(name.to_owned())
}

pub(super) fn check_url(state: &AppState, raw: &str) -> Result<String> {
    CallbackUrl::parse(raw, state.config.allow_private_urls)
        .map(|u| u.as_str().to_owned())
        .map_err(|e| Error::Unprocessable(e.to_string()))
}

pub(super) fn push_without_url() -> Error {
    Error::Unprocessable("a push-mode workspace needs a `url` to forward to".into())
}

/// Creates a workspace and mints its first token.
#[utoipa::path(post, path = "/workspaces", tag = "workspaces",
    request_body = NewWorkspace,
    responses(
        (status = 201, body = CreatedWorkspace),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody),
    ))]
pub async fn create_workspace(
    State(state): State<AppState>,
    principal: Principal,
    Json(new): Json<NewWorkspace>,
) -> Result<(StatusCode, Json<CreatedWorkspace>)> {
    principal.require_operator()?;
    let name = check_name(&new.name)?;
    let url = new
        .url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
        .map(|u| check_url(&state, u))
        .transpose()?;
    if new.delivery_mode == DeliveryMode::Push && url.is_none() {
        return Err(push_without_url());
    }
    let id = WorkspaceId::new();
    let token = AuthToken::generate();
    let now = domain::now();
    let stored = state
        .store
        .create_workspace(
            id,
            &store::NewWorkspace {
                name,
                delivery_mode: new.delivery_mode,
                url,
            },
            token.hash(),
            now,
        )
        .await?;
    tracing::info!(workspace_id = %id, delivery_mode = %new.delivery_mode, "workspace created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedWorkspace {
            workspace: WorkspaceView::new(stored, now),
            auth_token: token.expose().to_owned(),
            connection: Connection::new(&state.public_url, id, Some(&token)),
        }),
    ))
}

/// Lists every workspace, oldest first.
#[utoipa::path(get, path = "/workspaces", tag = "workspaces",
    responses((status = 200, body = [WorkspaceView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_workspaces(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<WorkspaceView>>> {
    principal.require_operator()?;
    let now = domain::now();
    let all = state.store.list_workspaces().await?;
    Ok(Json(
        all.into_iter()
            .map(|w| WorkspaceView::new(w, now))
            .collect(),
    ))
}

/// Shows one workspace (to the operator or the workspace itself).
#[utoipa::path(get, path = "/workspaces/{id}", tag = "workspaces",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = WorkspaceView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_workspace(
    State(state): State<AppState>,
    principal: Principal,
    WorkspacePath(id): WorkspacePath,
) -> Result<Json<WorkspaceView>> {
    principal.require_access(id)?;
    let w = state
        .store
        .get_workspace(id)
        .await?
        .ok_or_else(Error::workspace_not_found)?;
    Ok(Json(WorkspaceView::new(w, domain::now())))
}

/// Changes a workspace's name, mode or URL.
#[utoipa::path(patch, path = "/workspaces/{id}", tag = "workspaces",
    params(("id" = String, Path, description = "workspace id")),
    request_body = UpdateWorkspace,
    responses((status = 200, body = WorkspaceView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_workspace(
    State(state): State<AppState>,
    principal: Principal,
    WorkspacePath(id): WorkspacePath,
    Json(update): Json<UpdateWorkspace>,
) -> Result<Json<WorkspaceView>> {
    principal.require_operator()?;
    let current = state
        .store
        .get_workspace(id)
        .await?
        .ok_or_else(Error::workspace_not_found)?;
    let name = update.name.as_deref().map(check_name).transpose()?;
    let url = match update.url {
        None => None,
        Some(None) => Some(None),
        Some(Some(raw)) if raw.trim().is_empty() => Some(None),
        Some(Some(raw)) => Some(Some(check_url(&state, &raw)?)),
    };
    let mode = update.delivery_mode.unwrap_or(current.delivery_mode);
    let resulting_url = match &url {
        Some(u) => u.clone(),
        None => current.url.clone(),
    };
    if mode == DeliveryMode::Push && resulting_url.is_none() {
        return Err(push_without_url());
    }
    let now = domain::now();
    let changes = store::UpdateWorkspace {
        name,
        delivery_mode: update.delivery_mode,
        url,
        agent_card: None,
    };
    let updated = state
        .store
        .update_workspace(id, &changes, now)
        .await?
        .ok_or_else(Error::workspace_not_found)?;
    tracing::info!(workspace_id = %id, "workspace updated");
    Ok(Json(WorkspaceView::new(updated, now)))
}

/// Deletes a workspace and revokes its tokens. Its staged files are kept
/// until they expire (evidence of receipt).
#[utoipa::path(delete, path = "/workspaces/{id}", tag = "workspaces",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_workspace(
    State(state): State<AppState>,
    principal: Principal,
    WorkspacePath(id): WorkspacePath,
) -> Result<StatusCode> {
    principal.require_operator()?;
    if !state.store.delete_workspace(id).await? {
        return Err(Error::workspace_not_found());
    }
    // Its tokens went with it: end the requests still holding them.
    state.bus.publish(Event::Revoked { workspace_id: id }).await;
    tracing::info!(workspace_id = %id, "workspace deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes every token of the workspace and mints a new one.
#[utoipa::path(post, path = "/workspaces/{id}/external/rotate", tag = "workspaces",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = RotatedToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn rotate_workspace_token(
    State(state): State<AppState>,
    principal: Principal,
    WorkspacePath(id): WorkspacePath,
) -> Result<Json<RotatedToken>> {
    principal.require_operator()?;
    let token = AuthToken::generate();
    if !state
        .store
        .rotate_token(id, token.hash(), domain::now())
        .await?
    {
        return Err(Error::workspace_not_found());
    }
    // Long polls and streams parked with an old token end with 401 now,
    // not after their next row.
    state.bus.publish(Event::Revoked { workspace_id: id }).await;
    tracing::info!(workspace_id = %id, "workspace token rotated; earlier tokens revoked");
    Ok(Json(RotatedToken {
        auth_token: token.expose().to_owned(),
        connection: Connection::new(&state.public_url, id, Some(&token)),
    }))
}

/// The connection block, without the token.
#[utoipa::path(get, path = "/workspaces/{id}/external/connection", tag = "workspaces",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = ConnectionEnvelope), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_workspace_connection(
    State(state): State<AppState>,
    principal: Principal,
    WorkspacePath(id): WorkspacePath,
) -> Result<Json<ConnectionEnvelope>> {
    principal.require_operator()?;
    state
        .store
        .get_workspace(id)
        .await?
        .ok_or_else(Error::workspace_not_found)?;
    Ok(Json(ConnectionEnvelope {
        connection: Connection::new(&state.public_url, id, None),
    }))
}
