//! Registration and heartbeats: how a workspace tells the server it is
//! alive, and how a freshly created one obtains its first token.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{live_workspace, NamesWorkspace, SelfOrOperatorBody};
use super::auth::MaybePrincipal;
use super::workspaces::{check_url, push_without_url, WorkspaceView};
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::{self, AuthToken, DeliveryMode, HeartbeatReport, WorkspaceId};
use crate::store::{Registered, UpdateWorkspace};

/// `POST /registry/register` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct Registration {
    /// The workspace id.
    pub id: String,
    /// Callback URL (push mode). A non-http(s) value such as
    /// `remote://no-inbound` means "no inbound URL" and is not stored.
    pub url: Option<String>,
    /// `push` or `poll`.
    pub delivery_mode: Option<DeliveryMode>,
    /// The agent's A2A card.
    #[schema(value_type = Option<Object>)]
    pub agent_card: Option<Value>,
}

/// The workspace, plus its first token when this registration minted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct RegisteredWorkspace {
    /// The workspace.
    #[serde(flatten)]
    pub workspace: WorkspaceView,
    /// Present only on a bootstrap registration: shown this once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    /// Present when the registration changed nothing: says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// `POST /registry/heartbeat` body. Every field but `workspace_id` is
/// optional; one left out keeps its last reported value.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct Heartbeat {
    /// The workspace id.
    pub workspace_id: String,
    /// What the agent works on now (≤ 1,000 characters).
    pub current_task: Option<String>,
    /// Tasks in flight (0–10,000).
    pub active_tasks: Option<i64>,
    /// Share of recent tasks that failed (0.0–1.0); 1.0 shows the
    /// workspace as `failed`.
    pub error_rate: Option<f64>,
    /// One recent error message (≤ 4,000 characters).
    pub sample_error: Option<String>,
    /// Seconds since the agent started (≥ 0).
    pub uptime_seconds: Option<i64>,
    /// What the agent spent this UTC month, in cents (Molecule's field);
    /// held against its budget beside its recorded usage.
    pub monthly_spend: Option<i64>,
}

/// Heartbeat answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct HeartbeatAck {
    /// Always `ok`.
    pub status: &'static str,
    /// The time stamped.
    pub last_heartbeat_at: DateTime<Utc>,
}

fn parse_id(raw: &str) -> Result<WorkspaceId> {
    raw.parse()
        .map_err(|e: domain::IdError| Error::BadRequest(e.to_string()))
}

impl NamesWorkspace for Registration {
    fn workspace_id(&self) -> Result<WorkspaceId> {
        parse_id(&self.id)
    }
}

impl NamesWorkspace for Heartbeat {
    fn workspace_id(&self) -> Result<WorkspaceId> {
        parse_id(&self.workspace_id)
    }
}

/// Registers a workspace (marks it online, records its mode, URL and
/// card). Without a token this is allowed while the workspace has no live
/// token: then one is minted and returned once. Without a token while one
/// is live, nothing changes and the answer carries a `warning` instead of a
/// token (Molecule's SDK then keeps its cached token). A `url` that is not
/// http(s) (the SDK's `remote://no-inbound`) means "no inbound URL".
#[utoipa::path(post, path = "/registry/register", tag = "registry",
    request_body = Registration,
    responses((status = 200, body = RegisteredWorkspace), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn register_workspace(
    State(state): State<AppState>,
    SelfOrOperatorBody(reg, id, MaybePrincipal(principal)): SelfOrOperatorBody<
        Registration,
        MaybePrincipal,
    >,
) -> Result<Json<RegisteredWorkspace>> {
    let url = reg
        .url
        .as_deref()
        .filter(|u| is_inbound_url(u))
        .map(|u| check_url(&state, u))
        .transpose()?;
    let current = live_workspace(&state, id).await?;
    let mode = reg.delivery_mode.unwrap_or(current.delivery_mode);
    if mode == DeliveryMode::Push && url.is_none() && current.url.is_none() {
        return Err(push_without_url());
    }
    let minted = principal.is_none().then(AuthToken::generate);
    let update = UpdateWorkspace {
        name: None,
        delivery_mode: reg.delivery_mode,
        url: url.map(Some),
        agent_card: reg.agent_card,
        ..UpdateWorkspace::default()
    };
    let now = domain::now();
    match state
        .store
        .register_workspace(id, &update, minted.as_ref().map(AuthToken::key), now)
        .await?
    {
        Registered::Done(w) => {
            tracing::info!(workspace_id = %id, delivery_mode = %w.delivery_mode, bootstrap = minted.is_some(), "workspace registered");
            Ok(Json(RegisteredWorkspace {
                workspace: WorkspaceView::load(&state, *w).await?,
                auth_token: minted.map(|t| t.expose().to_owned()),
                warning: None,
            }))
        }
        Registered::NotFound => Err(Error::workspace_not_found()),
        Registered::HasLiveToken => {
            // Never a second token, and nothing applied: only the holder of
            // the live token may change the workspace.
            tracing::info!(workspace_id = %id, "unauthenticated registration of a workspace that has a token: nothing changed");
            Ok(Json(RegisteredWorkspace {
                workspace: WorkspaceView::load(&state, current).await?,
                auth_token: None,
                warning: Some(HAS_TOKEN_WARNING.into()),
            }))
        }
    }
}

/// The `warning` of an unauthenticated registration of a workspace that
/// already has a live token.
pub(super) const HAS_TOKEN_WARNING: &str = "this workspace already has a live token, so no new token was issued and nothing was changed; keep using your saved token and send it as `Authorization: Bearer <token>` to update the URL or agent card (the operator can rotate a lost token)";

/// True for a URL the server could call back: http or https. Anything else
/// (Molecule's SDK sends `remote://no-inbound`) means "no inbound URL".
fn is_inbound_url(raw: &str) -> bool {
    let raw = raw.trim();
    if raw.is_empty() {
        return false;
    }
    match raw.split_once("://") {
        Some((scheme, _)) => {
            scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
        }
        // Not even scheme-shaped: let the URL check explain what is wrong.
        None => true,
    }
}

/// Stamps the workspace's heartbeat and stores what it reports.
#[utoipa::path(post, path = "/registry/heartbeat", tag = "registry",
    request_body = Heartbeat,
    responses((status = 200, body = HeartbeatAck), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn heartbeat_workspace(
    State(state): State<AppState>,
    SelfOrOperatorBody(beat, id, _): SelfOrOperatorBody<Heartbeat>,
) -> Result<Json<HeartbeatAck>> {
    let report = HeartbeatReport::parse(
        beat.current_task,
        beat.active_tasks,
        beat.error_rate,
        beat.sample_error,
        beat.uptime_seconds,
    )
    .map_err(|e| Error::Unprocessable(e.to_string()))?;
    if beat
        .monthly_spend
        .is_some_and(|c| !(0..=1_000_000_000_000).contains(&c))
    {
        return Err(Error::Unprocessable(
            "`monthly_spend` must be whole cents between 0 and 1000000000000".into(),
        ));
    }
    let now = domain::now();
    if !state.store.heartbeat(id, &report, now).await? {
        return Err(Error::workspace_not_found());
    }
    if let Some(cents) = beat.monthly_spend {
        super::usage::report_spend(&state, id, cents).await?;
    }
    Ok(Json(HeartbeatAck {
        status: "ok",
        last_heartbeat_at: now,
    }))
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register_workspace))
        .routes(routes!(heartbeat_workspace))
}
