//! Workspaces: create, list, show, change, (soft) delete, and the
//! connection block (with token rotation) an operator pastes on the agent's
//! machine. Workspaces form a team tree through `parent_id`; the lifecycle
//! routes (pause, resume, restart, state) live in `lifecycle`.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{live_workspace, LiveWorkspace, Operator};
use super::extract::{Query, WorkspacePath};
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::{self, AuthToken, CallbackUrl, DeliveryMode, Tier, WorkspaceId, WorkspaceName};
use crate::events::Event;
use crate::store::{self, Removal, Workspace};

pub(crate) use crate::domain::WorkspaceStatus;

/// A workspace as the API shows it (never with a token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct WorkspaceView {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: WorkspaceId,
    /// Display name.
    pub name: String,
    /// `push` or `poll`.
    pub delivery_mode: DeliveryMode,
    /// Callback URL of a push workspace.
    pub url: Option<String>,
    /// `online` (heartbeat within `--offline-after`), `offline`, `paused`,
    /// `removed` or `failed`.
    pub status: WorkspaceStatus,
    /// True while the operator has it paused.
    pub paused: bool,
    /// Its parent in the team tree; null for a root.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub parent_id: Option<WorkspaceId>,
    /// Ids of its live children, oldest first.
    #[schema(value_type = Vec<String>)]
    pub children: Vec<WorkspaceId>,
    /// The canvas's fold of its subtree.
    pub collapsed: bool,
    /// Resource tier, 1–4.
    #[schema(value_type = i64, minimum = 1, maximum = 4)]
    pub tier: Tier,
    /// What runs the agent (`external`, `claude-code`, …).
    pub runtime: String,
    /// The model the agent runs.
    pub model: Option<String>,
    /// What the agent works on, per its last heartbeat.
    pub current_task: Option<String>,
    /// Tasks in flight, per its last heartbeat (reset to 0 by a restart and
    /// when the heartbeat stops: phantom busy).
    pub active_tasks: i64,
    /// Share of recent tasks that failed, per its last heartbeat.
    pub error_rate: Option<f64>,
    /// A recent error, per its last heartbeat.
    pub sample_error: Option<String>,
    /// Seconds since the agent started, per its last heartbeat.
    pub uptime_seconds: Option<i64>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Last registration or heartbeat.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// The agent card sent at registration.
    #[schema(value_type = Option<Object>)]
    pub agent_card: Option<Value>,
    /// The highest inbox row id the workspace's own poll has handed to the
    /// agent: a queued message at or below it was picked up. Null until
    /// the agent first polls.
    #[serde(default)]
    pub inbox_picked_up_through: Option<i64>,
}

impl WorkspaceView {
    /// Renders a stored workspace with its children as of `now`.
    pub(crate) fn new(
        w: Workspace,
        children: Vec<WorkspaceId>,
        now: DateTime<Utc>,
        offline_after: Duration,
    ) -> Self {
        let status = w.liveness().status(now, offline_after);
        Self {
            id: w.id,
            name: w.name,
            delivery_mode: w.delivery_mode,
            url: w.url,
            status,
            paused: w.paused_at.is_some(),
            parent_id: w.parent_id,
            children,
            collapsed: w.collapsed,
            tier: w.tier,
            runtime: w.runtime,
            model: w.model,
            current_task: w.report.current_task,
            active_tasks: w.report.active_tasks.unwrap_or(0),
            error_rate: w.report.error_rate,
            sample_error: w.report.sample_error,
            uptime_seconds: w.report.uptime_seconds,
            created_at: w.created_at,
            updated_at: w.updated_at,
            last_heartbeat_at: w.last_heartbeat_at,
            agent_card: w.agent_card,
            inbox_picked_up_through: w.inbox_picked_up_through,
        }
    }

    /// Renders a workspace as of now, reading its children.
    pub(crate) async fn load(state: &AppState, w: Workspace) -> Result<Self> {
        let children = state.store.child_ids(w.id).await?;
        Ok(Self::new(
            w,
            children,
            domain::now(),
            state.config.offline_after,
        ))
    }
}

/// Logs a structured lifecycle event: a JSON line in production whose
/// `event` field is stable (dashboards and alerts match on it).
pub(super) fn log_event(event: &'static str, id: WorkspaceId, parent: Option<WorkspaceId>) {
    let parent = parent.map_or_else(|| "none".to_owned(), |p| p.to_string());
    tracing::info!(event, workspace_id = %id, parent = %parent, "{event}");
}

/// [`log_event`], and the same event as an audit row (the operator did
/// it: every lifecycle route is the operator's).
pub(super) async fn record_event(
    state: &AppState,
    event: &'static str,
    id: WorkspaceId,
    parent: Option<WorkspaceId>,
) {
    log_event(event, id, parent);
    let entry = crate::audit::Entry::new(crate::domain::audit::Actor::Operator, event)
        .workspace(id)
        .target(format!("workspace:{id}"))
        .details(serde_json::json!({ "parent_id": parent }));
    super::audit::record(state, entry).await;
}

/// What the agent's machine needs to connect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Connection {
    /// This server's URL as workspaces reach it.
    pub platform_url: String,
    /// The workspace id.
    #[schema(value_type = String, format = Uuid)]
    pub workspace_id: WorkspaceId,
    /// The token, only right after create or rotate; `""` otherwise.
    pub auth_token: String,
    /// The exact command to paste on the agent's machine (a POSIX shell
    /// line): it writes the token to `~/.molecule/<id>.token` (mode 0600)
    /// and starts `molecule connect --token-file` on it, so the token is
    /// never on a command line; without the token, only the second part.
    pub connect_command: String,
    /// The `mcpServers` block that adds this workspace's MCP endpoint to
    /// Claude Code, opencode or any MCP client; the token is the
    /// environment reference `${MOLECULE_TOKEN}`, never the token itself.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub mcp_config: serde_json::Value,
}

impl Connection {
    /// Builds the block; `token` is `None` when it is not to be shown.
    ///
    /// The command never puts the token on connect's command line (where
    /// `ps` shows it to every user of the machine): with the token, it
    /// first writes it to `~/.molecule/<id>.token` from a subshell with
    /// umask 077 (a folder 0700, a file 0600; `echo` is a shell builtin,
    /// so no process carries it either) and starts connect with
    /// `--token-file`; without it, it only starts connect with that file,
    /// so the block shown again later still works on the machine that ran
    /// the first one.
    pub(crate) fn new(platform_url: &str, id: WorkspaceId, token: Option<&AuthToken>) -> Self {
        let file = format!("~/.molecule/{id}.token");
        let connect = format!(
            "molecule connect --server {platform_url} --workspace {id} --token-file {file} --dir ."
        );
        // The token is `mol_` and hex: nothing in it the shell interprets.
        let connect_command = match token {
            Some(t) => format!(
                "(umask 077 && mkdir -p ~/.molecule && echo {} > {file}) && {connect}",
                t.expose()
            ),
            None => connect,
        };
        Self {
            platform_url: platform_url.to_owned(),
            workspace_id: id,
            auth_token: token.map(|t| t.expose().to_owned()).unwrap_or_default(),
            connect_command,
            mcp_config: crate::domain::mcp_client_config(platform_url, id),
        }
    }
}

/// `POST /workspaces` body.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct NewWorkspace {
    /// Display name (1–200 characters).
    pub name: String,
    /// `push` or `poll`.
    pub delivery_mode: DeliveryMode,
    /// Callback URL; required in push mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Parent in the team tree (a live workspace); omitted for a root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// Tier 1–4; omitted: `--default-tier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<i64>,
    /// Runtime; omitted: `external`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Model; omitted: the default model of the runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// `POST /workspaces` answer: the workspace, its token (shown once) and its
/// connection block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct CreatedWorkspace {
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
pub(super) struct UpdateWorkspace {
    /// New name.
    pub name: Option<String>,
    /// New mode.
    pub delivery_mode: Option<DeliveryMode>,
    /// New URL, or null to clear it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub url: Option<Option<String>>,
    /// New parent, or null to make it a root. It may not be the workspace
    /// itself or one of its descendants (422).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub parent_id: Option<Option<String>>,
    /// Fold or unfold its subtree in the canvas.
    pub collapsed: Option<bool>,
    /// New tier (1–4).
    pub tier: Option<i64>,
    /// New runtime.
    pub runtime: Option<String>,
    /// New model.
    pub model: Option<String>,
}

/// `{connection}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct ConnectionEnvelope {
    /// The connection block.
    pub connection: Connection,
}

/// `{auth_token, connection}` after a rotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct RotatedToken {
    /// The new token, shown this once.
    pub auth_token: String,
    /// The connection block with the new token.
    pub connection: Connection,
}

/// [`WorkspaceName`]'s rule, answered as 400.
pub(super) fn check_name(name: &str) -> Result<String> {
    WorkspaceName::parse(name)
        .map(WorkspaceName::into_string)
        .map_err(|e| Error::BadRequest(e.to_string()))
}

pub(super) fn check_url(state: &AppState, raw: &str) -> Result<String> {
    CallbackUrl::parse(raw, state.config.allow_private_urls)
        .map(|u| u.as_str().to_owned())
        .map_err(|e| Error::Unprocessable(e.to_string()))
}

pub(super) fn push_without_url() -> Error {
    Error::Unprocessable("a push-mode workspace needs a `url` to forward to".into())
}

pub(super) fn check_tier(raw: i64) -> Result<Tier> {
    Tier::new(raw).map_err(|e| Error::Unprocessable(e.to_string()))
}

fn parse_parent(raw: &str) -> Result<WorkspaceId> {
    raw.parse()
        .map_err(|e: domain::IdError| Error::BadRequest(format!("`parent_id`: {e}")))
}

fn unprocessable(e: impl std::fmt::Display) -> Error {
    Error::Unprocessable(e.to_string())
}

/// Creates a workspace and mints its first token.
#[utoipa::path(post, path = "/workspaces", tag = "workspaces",
    request_body = NewWorkspace,
    responses(
        (status = 201, body = CreatedWorkspace),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody),
    ))]
pub(super) async fn create_workspace(
    State(state): State<AppState>,
    _: Operator,
    Json(new): Json<NewWorkspace>,
) -> Result<(StatusCode, Json<CreatedWorkspace>)> {
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
    let parent_id = new.parent_id.as_deref().map(parse_parent).transpose()?;
    let tier = Tier::resolve(
        new.tier.map(check_tier).transpose()?,
        state.config.default_tier,
    );
    let runtime = domain::resolve_runtime(new.runtime.as_deref()).map_err(unprocessable)?;
    let model = domain::resolve_model(new.model.as_deref(), &runtime, &state.config.default_model)
        .map_err(unprocessable)?;
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
                parent_id,
                tier,
                runtime,
                model,
            },
            token.key(),
            now,
        )
        .await?;
    record_event(&state, "workspace.created", id, parent_id).await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWorkspace {
            workspace: WorkspaceView::new(stored, Vec::new(), now, state.config.offline_after),
            auth_token: token.expose().to_owned(),
            connection: Connection::new(&state.public_url, id, Some(&token)),
        }),
    ))
}

/// Query of `GET /workspaces`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct ListParams {
    /// Only the children of this workspace; empty: only the roots.
    pub parent_id: Option<String>,
    /// Page size, 1 to 1000; with it (or `after`) the list comes a page
    /// at a time (default 100). Without either: the whole list.
    pub limit: Option<i64>,
    /// The cursor: the id of the last workspace of the previous page.
    pub after: Option<String>,
}

/// Page size when only `after` is given.
const DEFAULT_PAGE: i64 = 100;
/// Largest page.
const MAX_PAGE: i64 = 1000;

/// Lists the live workspaces, oldest first (removed ones are not listed);
/// `?parent_id=` keeps only the children of one workspace, `?parent_id=`
/// with no value only the roots. With `limit` or `after`, one page of it
/// (one indexed query, whatever the fleet's size); `X-Total-Count` says
/// how many match in all, and a `Link: <…>; rel="next"` header, present
/// while more follow, names the next page.
#[utoipa::path(get, path = "/workspaces", tag = "workspaces",
    params(ListParams),
    responses((status = 200, body = [WorkspaceView], headers(
            ("X-Total-Count" = i64, description = "live workspaces the filter matches, on every page"),
            ("Link" = String, description = "`</workspaces?…&after=ID>; rel=\"next\"` while more follow"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_workspaces(
    State(state): State<AppState>,
    _: Operator,
    Query(params): Query<ListParams>,
) -> Result<(HeaderMap, Json<Vec<WorkspaceView>>)> {
    let filter = match params.parent_id.as_deref().map(str::trim) {
        None => None,
        Some("") => Some(None),
        Some(raw) => Some(Some(parse_parent(raw)?)),
    };
    if params.limit.is_some() || params.after.is_some() {
        return list_page(&state, filter, &params).await;
    }
    let now = domain::now();
    let all = state.store.list_workspaces().await?;
    // Children from the same snapshot, so the tree drawn from one answer
    // is consistent.
    let mut children: HashMap<WorkspaceId, Vec<WorkspaceId>> = HashMap::new();
    for w in &all {
        if let Some(p) = w.parent_id {
            children.entry(p).or_default().push(w.id);
        }
    }
    let listed: Vec<WorkspaceView> = all
        .into_iter()
        .filter(|w| filter.is_none_or(|f| w.parent_id == f))
        .map(|w| {
            let kids = children.remove(&w.id).unwrap_or_default();
            WorkspaceView::new(w, kids, now, state.config.offline_after)
        })
        .collect();
    Ok((total_count(listed.len() as i64), Json(listed)))
}

fn total_count(total: i64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-total-count", HeaderValue::from(total));
    headers
}

/// One page of `GET /workspaces` (see [`list_workspaces`]).
async fn list_page(
    state: &AppState,
    parent: Option<Option<WorkspaceId>>,
    params: &ListParams,
) -> Result<(HeaderMap, Json<Vec<WorkspaceView>>)> {
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::BadRequest(format!(
            "`limit` must be between 1 and {MAX_PAGE}"
        )));
    }
    let after = match params.after.as_deref().map(str::trim) {
        None => None,
        Some(raw) => Some(
            raw.parse::<WorkspaceId>()
                .map_err(|e| Error::BadRequest(format!("`after`: {e}")))?,
        ),
    };
    let query = store::PageQuery {
        parent,
        after,
        limit,
    };
    let Some(page) = state.store.workspace_page(query).await? else {
        return Err(Error::BadRequest(
            "`after` names no workspace: pass the id of the last workspace of the previous page"
                .into(),
        ));
    };
    let mut children: HashMap<WorkspaceId, Vec<WorkspaceId>> = HashMap::new();
    for (p, c) in page.children {
        children.entry(p).or_default().push(c);
    }
    let mut headers = total_count(page.total);
    if let (true, Some(last)) = (page.more, page.workspaces.last()) {
        let parent = match parent {
            None => String::new(),
            Some(None) => "&parent_id=".to_owned(),
            Some(Some(p)) => format!("&parent_id={p}"),
        };
        let link = format!(
            "</workspaces?limit={limit}{parent}&after={}>; rel=\"next\"",
            last.id
        );
        headers.insert(
            axum::http::header::LINK,
            HeaderValue::from_str(&link).expect("BUG: ids and numbers are header-safe"),
        );
    }
    let now = domain::now();
    let listed = page
        .workspaces
        .into_iter()
        .map(|w| {
            let kids = children.remove(&w.id).unwrap_or_default();
            WorkspaceView::new(w, kids, now, state.config.offline_after)
        })
        .collect();
    Ok((headers, Json(listed)))
}

/// Shows one workspace (to the operator or the workspace itself).
#[utoipa::path(get, path = "/workspaces/{id}", tag = "workspaces",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = WorkspaceView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_workspace(
    State(state): State<AppState>,
    LiveWorkspace { row: w, .. }: LiveWorkspace,
) -> Result<Json<WorkspaceView>> {
    Ok(Json(WorkspaceView::load(&state, w).await?))
}

/// Changes a workspace's name, mode, URL, parent, fold, tier, runtime or
/// model.
#[utoipa::path(patch, path = "/workspaces/{id}", tag = "workspaces",
    params(("id" = String, Path, description = "workspace id")),
    request_body = UpdateWorkspace,
    responses((status = 200, body = WorkspaceView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn update_workspace(
    State(state): State<AppState>,
    Operator(WorkspacePath(id), _): Operator<WorkspacePath>,
    Json(update): Json<UpdateWorkspace>,
) -> Result<Json<WorkspaceView>> {
    let current = live_workspace(&state, id).await?;
    let name = update.name.as_deref().map(check_name).transpose()?;
    let parent_id = match update.parent_id.as_ref() {
        None => None,
        Some(None) => Some(None),
        Some(Some(raw)) if raw.trim().is_empty() => Some(None),
        Some(Some(raw)) => Some(Some(parse_parent(raw)?)),
    };
    let tier = update.tier.map(check_tier).transpose()?;
    let runtime = update
        .runtime
        .as_deref()
        .map(|r| domain::resolve_runtime(Some(r)))
        .transpose()
        .map_err(unprocessable)?;
    let model = update
        .model
        .as_deref()
        .map(|m| domain::resolve_model(Some(m), "", ""))
        .transpose()
        .map_err(unprocessable)?;
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
        parent_id,
        collapsed: update.collapsed,
        tier,
        runtime,
        model,
    };
    let updated = state
        .store
        .update_workspace(id, &changes, now)
        .await?
        .ok_or_else(Error::workspace_not_found)?;
    tracing::info!(workspace_id = %id, "workspace updated");
    let entry =
        crate::audit::Entry::new(crate::domain::audit::Actor::Operator, "workspace.updated")
            .workspace(id)
            .target(format!("workspace:{id}"))
            .details(serde_json::json!({
                "name": changes.name,
                "parent_id": changes.parent_id,
                "delivery_mode": changes.delivery_mode.map(|m| m.to_string()),
            }));
    super::audit::record(&state, entry).await;
    Ok(Json(WorkspaceView::load(&state, updated).await?))
}

/// Query of `DELETE /workspaces/:id`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct DeleteParams {
    /// Also remove every live descendant, in the same transaction.
    pub cascade: Option<bool>,
}

/// Soft-deletes a workspace: status `removed`, every token revoked at once
/// (parked long polls end with 401), the row kept for the activity
/// retention so its history and its state answer survive. A workspace
/// with live children is refused (409) unless `?cascade=true`. Its staged
/// files are kept until they expire (evidence of receipt).
#[utoipa::path(delete, path = "/workspaces/{id}", tag = "workspaces",
    params(("id" = String, Path, description = "workspace id"), DeleteParams),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn delete_workspace(
    State(state): State<AppState>,
    Operator(WorkspacePath(id), _): Operator<WorkspacePath>,
    Query(params): Query<DeleteParams>,
) -> Result<StatusCode> {
    let cascade = params.cascade.unwrap_or(false);
    match state
        .store
        .remove_workspace(id, cascade, domain::now())
        .await?
    {
        Removal::NotFound => Err(Error::workspace_not_found()),
        Removal::HasLiveChildren(n) => Err(Error::Conflict(format!(
            "workspace {id} has {n} live child workspace{}; delete them first or pass ?cascade=true to remove the whole subtree",
            if n == 1 { "" } else { "s" }
        ))),
        Removal::Removed {
            workspaces: gone,
            failed,
        } => {
            let events = gone
                .iter()
                .map(|(ws, _)| Event::Revoked { workspace_id: *ws })
                .collect();
            // Their tokens are revoked: end the requests still holding them.
            state.bus.publish_many(events).await;
            for (ws, parent) in gone {
                record_event(&state, "workspace.removed", ws, parent).await;
            }
            for t in &failed {
                crate::ledger::announce_move(&state.bus, &state.metrics, t).await;
            }
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

/// Revokes every token of the workspace and mints a new one.
#[utoipa::path(post, path = "/workspaces/{id}/external/rotate", tag = "workspaces",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = RotatedToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn rotate_workspace_token(
    State(state): State<AppState>,
    Operator(WorkspacePath(id), _): Operator<WorkspacePath>,
) -> Result<Json<RotatedToken>> {
    let token = AuthToken::generate();
    if !state
        .store
        .rotate_token(id, token.key(), domain::now())
        .await?
    {
        return Err(Error::workspace_not_found());
    }
    // Long polls and streams parked with an old token end with 401 now,
    // not after their next row.
    state.bus.publish(Event::Revoked { workspace_id: id }).await;
    tracing::info!(workspace_id = %id, "workspace token rotated; earlier tokens revoked");
    record_event(&state, "token.rotated", id, None).await;
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
pub(super) async fn get_workspace_connection(
    State(state): State<AppState>,
    LiveWorkspace {
        rule: Operator(WorkspacePath(id), _),
        ..
    }: LiveWorkspace<Operator<WorkspacePath>>,
) -> Result<Json<ConnectionEnvelope>> {
    Ok(Json(ConnectionEnvelope {
        connection: Connection::new(&state.public_url, id, None),
    }))
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_workspace, list_workspaces))
        .routes(routes!(get_workspace, update_workspace, delete_workspace))
        .routes(routes!(rotate_workspace_token))
        .routes(routes!(get_workspace_connection))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lifecycle_events_are_json_lines_with_a_stable_event_field() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || writer.clone())
            .finish();
        let (child, parent) = (WorkspaceId::new(), WorkspaceId::new());
        tracing::subscriber::with_default(subscriber, || {
            log_event("workspace.created", child, Some(parent));
            log_event("workspace.removed", parent, None);
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let fields = |v: &Value| {
            (
                v["event"].as_str().unwrap().to_owned(),
                v["workspace_id"].as_str().unwrap().to_owned(),
                v["parent"].as_str().unwrap().to_owned(),
            )
        };
        assert_eq!(
            fields(&lines[0]),
            (
                "workspace.created".to_owned(),
                child.to_string(),
                parent.to_string()
            )
        );
        assert_eq!(
            fields(&lines[1]),
            (
                "workspace.removed".to_owned(),
                parent.to_string(),
                "none".to_owned()
            )
        );
    }
}
