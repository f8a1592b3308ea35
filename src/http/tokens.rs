//! Tokens as a resource: a workspace's tokens (`/workspaces/:id/tokens`:
//! several live at once, named, each revoked on its own; `rotate` still
//! revokes them all and mints one) and the operator tokens
//! (`/org/tokens`, admin only: a role, an optional team subtree, an
//! optional expiry). A secret is shown once, in the answer that mints
//! it; lists show its prefix. Revoking publishes on the bus, so requests
//! held open with the token (long polls, event streams) end with 401 at
//! once on every replica.

use crate::audit::Entry;
use crate::domain::audit::Actor;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{live_workspace, Operator, ScopedPath, SelfOrOperator};
use super::extract::{Query, WorkspacePath};
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::{self, AuthToken, Role, TokenId, WorkspaceId};
use crate::events::Event;
use crate::store::{MintOutcome, NewToken, OperatorTokenInfo, TokenInfo};

/// Live tokens a workspace may hold at once (Molecule's figure).
pub(super) const MAX_LIVE_TOKENS: i64 = 50;

/// Operator tokens one client may mint per hour (Molecule's figure).
pub(super) const MINTS_PER_HOUR: usize = 10;

/// The longest expiry a token may be minted with: ten years.
const MAX_EXPIRES_IN_S: i64 = 10 * 365 * 24 * 3600;

/// A page of a list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct Page {
    /// At most this many (1 to 500, default 100).
    pub limit: Option<i64>,
    /// Skip this many (default 0).
    pub offset: Option<i64>,
}

impl Page {
    fn checked(&self) -> Result<(i64, i64)> {
        let limit = self.limit.unwrap_or(100);
        let offset = self.offset.unwrap_or(0);
        if !(1..=500).contains(&limit) {
            return Err(Error::BadRequest(
                "`limit` must be between 1 and 500".into(),
            ));
        }
        if offset < 0 {
            return Err(Error::BadRequest("`offset` must not be negative".into()));
        }
        Ok((limit, offset))
    }
}

/// A token as lists show it: never the secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct TokenView {
    /// Its id (what DELETE names).
    #[schema(value_type = String, format = Uuid)]
    pub id: TokenId,
    /// Its label, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `mol_` and the first 8 characters of the secret.
    pub prefix: String,
    /// When it was minted.
    pub created_at: DateTime<Utc>,
    /// When it last authenticated a request (written in batches: up to a
    /// sweep interval late); null until then.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it stops working, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Operator tokens only: `admin`, `operator` or `viewer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Operator tokens only: the team subtree it is limited to.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub team_root: Option<WorkspaceId>,
}

impl From<TokenInfo> for TokenView {
    fn from(t: TokenInfo) -> Self {
        Self {
            id: t.id,
            name: t.name,
            prefix: t.prefix,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            expires_at: t.expires_at,
            role: None,
            team_root: None,
        }
    }
}

impl From<OperatorTokenInfo> for TokenView {
    fn from(t: OperatorTokenInfo) -> Self {
        Self {
            role: Some(t.role.as_str().to_owned()),
            team_root: t.team_root,
            ..t.token.into()
        }
    }
}

/// A page of tokens and how many live ones there are.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct TokenList {
    /// Newest first.
    pub tokens: Vec<TokenView>,
    /// Every live token, not only this page.
    pub count: i64,
}

/// `POST /workspaces/:id/tokens` and `POST /org/tokens` body.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
pub(crate) struct NewTokenRequest {
    /// A label, 1 to 100 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Seconds until it stops working (1 to ten years); never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<i64>,
    /// Operator tokens only (required there): `admin`, `operator` or
    /// `viewer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Operator tokens only: limit it to this workspace and its
    /// descendants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_root: Option<String>,
}

/// A minted token: the secret, shown this once.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct MintedToken {
    /// The secret. It is not stored and cannot be shown again.
    pub auth_token: String,
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: TokenId,
    /// `mol_` and the first 8 characters of the secret.
    pub prefix: String,
    /// Workspace tokens only: the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub workspace_id: Option<WorkspaceId>,
    /// Operator tokens only: its role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// `DELETE` answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct RevokedToken {
    /// Always `revoked`.
    pub status: String,
}

/// `/workspaces/{id}/tokens/{tid}`.
#[derive(Debug, Clone, Copy)]
pub(super) struct WorkspaceTokenPath(pub WorkspaceId, pub TokenId);

impl FromRequestParts<AppState> for WorkspaceTokenPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let Path((ws, id)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::BadRequest(e.body_text()))?;
        Ok(WorkspaceTokenPath(
            ws.parse().map_err(bad)?,
            id.parse().map_err(bad)?,
        ))
    }
}

impl ScopedPath for WorkspaceTokenPath {
    fn workspace_id(&self) -> WorkspaceId {
        self.0
    }
}

/// `/org/tokens/{tid}`.
#[derive(Debug, Clone, Copy)]
pub(super) struct OrgTokenPath(pub TokenId);

impl FromRequestParts<AppState> for OrgTokenPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::BadRequest(e.body_text()))?;
        Ok(OrgTokenPath(raw.parse().map_err(bad)?))
    }
}

fn bad(e: impl ToString) -> Error {
    Error::BadRequest(e.to_string())
}

fn token_not_found() -> Error {
    Error::NotFound("token not found (or already revoked or expired)".into())
}

/// The name and expiry of a mint request, checked (422 otherwise).
fn checked_new(body: &NewTokenRequest, token: &AuthToken) -> Result<NewToken> {
    if let Some(name) = &body.name {
        if name.trim().is_empty() || name.chars().count() > 100 {
            return Err(Error::Unprocessable(
                "`name` must be 1 to 100 characters".into(),
            ));
        }
    }
    let expires_at = match body.expires_in_s {
        None => None,
        Some(s) if (1..=MAX_EXPIRES_IN_S).contains(&s) => {
            Some(domain::now() + chrono::Duration::seconds(s))
        }
        Some(_) => {
            return Err(Error::Unprocessable(format!(
                "`expires_in_s` must be between 1 and {MAX_EXPIRES_IN_S}"
            )))
        }
    };
    Ok(NewToken {
        key: token.key(),
        name: body.name.as_ref().map(|n| n.trim().to_owned()),
        expires_at,
    })
}

/// The live tokens of a workspace, newest first; never a secret.
#[utoipa::path(get, path = "/workspaces/{id}/tokens", tag = "tokens",
    params(("id" = String, Path, description = "workspace id"), Page),
    responses((status = 200, body = TokenList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn list_workspace_tokens(
    State(state): State<AppState>,
    SelfOrOperator(WorkspacePath(id), _): SelfOrOperator,
    Query(page): Query<Page>,
) -> Result<Json<TokenList>> {
    let (limit, offset) = page.checked()?;
    live_workspace(&state, id).await?;
    let (rows, count) = state
        .store
        .list_tokens(id, limit, offset, domain::now())
        .await?;
    Ok(Json(TokenList {
        tokens: rows.into_iter().map(TokenView::from).collect(),
        count,
    }))
}

/// Mints one more token for the workspace (at most 50 live: 429 beyond).
#[utoipa::path(post, path = "/workspaces/{id}/tokens", tag = "tokens",
    params(("id" = String, Path, description = "workspace id")),
    request_body = NewTokenRequest,
    responses((status = 201, body = MintedToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub(super) async fn create_workspace_token(
    State(state): State<AppState>,
    SelfOrOperator(WorkspacePath(id), who): SelfOrOperator,
    Json(body): Json<NewTokenRequest>,
) -> Result<(StatusCode, Json<MintedToken>)> {
    if body.role.is_some() || body.team_root.is_some() {
        return Err(Error::Unprocessable(
            "`role` and `team_root` are for operator tokens (POST /org/tokens)".into(),
        ));
    }
    let token = AuthToken::generate();
    let new = checked_new(&body, &token)?;
    let prefix = new.key.prefix.as_str().to_owned();
    match state
        .store
        .mint_token(id, new, MAX_LIVE_TOKENS, domain::now())
        .await?
    {
        MintOutcome::Minted(token_id) => {
            tracing::info!(workspace_id = %id, token_id = %token_id, "workspace token minted");
            let entry = Entry::new(super::audit::actor(who), "token.minted")
                .workspace(id)
                .target(format!("token:{token_id}"));
            super::audit::record(&state, entry).await;
            Ok((
                StatusCode::CREATED,
                Json(MintedToken {
                    auth_token: token.expose().to_owned(),
                    id: token_id,
                    prefix,
                    workspace_id: Some(id),
                    role: None,
                }),
            ))
        }
        MintOutcome::NoWorkspace => Err(Error::workspace_not_found()),
        MintOutcome::AtCap => Err(Error::TooMany {
            message: format!(
                "this workspace already has {MAX_LIVE_TOKENS} live tokens: revoke one first"
            ),
            retry_after_s: None,
        }),
    }
}

/// Revokes one token of the workspace: it stops working at once, also
/// for requests already held open with it (on every replica).
#[utoipa::path(delete, path = "/workspaces/{id}/tokens/{tid}", tag = "tokens",
    params(("id" = String, Path, description = "workspace id"), ("tid" = String, Path, description = "token id")),
    responses((status = 200, body = RevokedToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn revoke_workspace_token(
    State(state): State<AppState>,
    SelfOrOperator(WorkspaceTokenPath(id, token_id), who): SelfOrOperator<WorkspaceTokenPath>,
) -> Result<Json<RevokedToken>> {
    live_workspace(&state, id).await?;
    if !state
        .store
        .revoke_token(id, token_id, domain::now())
        .await?
    {
        return Err(token_not_found());
    }
    state.bus.publish(Event::Revoked { workspace_id: id }).await;
    tracing::info!(workspace_id = %id, token_id = %token_id, "workspace token revoked");
    let entry = Entry::new(super::audit::actor(who), "token.revoked")
        .workspace(id)
        .target(format!("token:{token_id}"));
    super::audit::record(&state, entry).await;
    Ok(Json(RevokedToken {
        status: "revoked".into(),
    }))
}

/// The live operator tokens, newest first; never a secret.
#[utoipa::path(get, path = "/org/tokens", tag = "tokens",
    params(Page),
    responses((status = 200, body = TokenList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(super) async fn list_operator_tokens(
    State(state): State<AppState>,
    _: Operator,
    Query(page): Query<Page>,
) -> Result<Json<TokenList>> {
    let (limit, offset) = page.checked()?;
    let (rows, count) = state
        .store
        .list_operator_tokens(limit, offset, domain::now())
        .await?;
    Ok(Json(TokenList {
        tokens: rows.into_iter().map(TokenView::from).collect(),
        count,
    }))
}

/// Mints an operator token with a role (10 per hour per client: 429 with
/// `Retry-After` beyond).
#[utoipa::path(post, path = "/org/tokens", tag = "tokens",
    request_body = NewTokenRequest,
    responses((status = 201, body = MintedToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub(super) async fn create_operator_token(
    State(state): State<AppState>,
    _: Operator,
    headers: HeaderMap,
    Json(body): Json<NewTokenRequest>,
) -> Result<(StatusCode, Json<MintedToken>)> {
    let role = match body.role.as_deref() {
        Some(raw) => Role::parse(raw).ok_or_else(|| {
            Error::Unprocessable("`role` must be admin, operator or viewer".into())
        })?,
        None => {
            return Err(Error::Unprocessable(
                "`role` is required: admin, operator or viewer".into(),
            ))
        }
    };
    let team_root = body
        .team_root
        .as_deref()
        .map(|raw| {
            raw.parse::<WorkspaceId>()
                .map_err(|e| Error::Unprocessable(format!("`team_root`: {e}")))
        })
        .transpose()?;
    let token = AuthToken::generate();
    let new = checked_new(&body, &token)?;
    // Counted only once the request is otherwise valid: a typo does not
    // use up the hour's allowance.
    state.mints.admit(&headers)?;
    let Some(row) = state
        .store
        .mint_operator_token(new, role, team_root, domain::now())
        .await?
    else {
        return Err(Error::NotFound(
            "`team_root` names no live workspace".into(),
        ));
    };
    tracing::info!(token_id = %row.token.id, role = %role, "operator token minted");
    let entry = Entry::new(Actor::Operator, "token.minted")
        .target(format!("token:{}", row.token.id))
        .details(serde_json::json!({"role": role.as_str(), "team_root": team_root}));
    super::audit::record(&state, entry).await;
    Ok((
        StatusCode::CREATED,
        Json(MintedToken {
            auth_token: token.expose().to_owned(),
            id: row.token.id,
            prefix: row.token.prefix,
            workspace_id: None,
            role: Some(role.as_str().to_owned()),
        }),
    ))
}

/// Revokes an operator token: it stops working at once, also for
/// requests already held open with it (on every replica).
#[utoipa::path(delete, path = "/org/tokens/{tid}", tag = "tokens",
    params(("tid" = String, Path, description = "token id")),
    responses((status = 200, body = RevokedToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn revoke_operator_token(
    State(state): State<AppState>,
    Operator(OrgTokenPath(id), _): Operator<OrgTokenPath>,
) -> Result<Json<RevokedToken>> {
    if !state.store.revoke_operator_token(id, domain::now()).await? {
        return Err(token_not_found());
    }
    state.bus.publish(Event::OperatorRevoked).await;
    tracing::info!(token_id = %id, "operator token revoked");
    let entry = Entry::new(Actor::Operator, "token.revoked").target(format!("token:{id}"));
    super::audit::record(&state, entry).await;
    Ok(Json(RevokedToken {
        status: "revoked".into(),
    }))
}

/// The operator-token mint limit: [`MINTS_PER_HOUR`] per client (the
/// credential that asks), counted in this process.
#[derive(Debug, Clone, Default)]
pub struct MintLimiter(Arc<Mutex<HashMap<[u8; 32], VecDeque<Instant>>>>);

const HOUR: Duration = Duration::from_secs(3600);

impl MintLimiter {
    /// Counts a mint by the client of `headers`, or the 429 that says
    /// when the oldest mint of the hour leaves the window.
    fn admit(&self, headers: &HeaderMap) -> Result<()> {
        let client: [u8; 32] = Sha256::digest(
            headers
                .get(AUTHORIZATION)
                .map(|v| v.as_bytes())
                .unwrap_or_default(),
        )
        .into();
        let now = Instant::now();
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let recent = all.entry(client).or_default();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= HOUR)
        {
            recent.pop_front();
        }
        if recent.len() >= MINTS_PER_HOUR {
            let oldest = *recent.front().expect("BUG: a full window has a front");
            let wait = HOUR.saturating_sub(now.duration_since(oldest));
            return Err(Error::TooMany {
                message: format!(
                    "at most {MINTS_PER_HOUR} operator tokens per hour per client; try again later"
                ),
                retry_after_s: Some(wait.as_secs().max(1)),
            });
        }
        recent.push_back(now);
        Ok(())
    }
}

/// The token routes.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_workspace_tokens, create_workspace_token))
        .routes(routes!(revoke_workspace_token))
        .routes(routes!(list_operator_tokens, create_operator_token))
        .routes(routes!(revoke_operator_token))
}
