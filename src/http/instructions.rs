//! Platform instructions, with Molecule's paths: the operator writes rules
//! (`/instructions`, scoped global, to a team or to one workspace) and
//! each agent reads its own resolved text
//! (`/workspaces/:id/instructions/resolve`), one Markdown document in the
//! order `crate::domain::instruction` documents. Every change writes an
//! `instructions_changed` inbox row for each workspace it touches (in the
//! store's transaction), so `molecule connect` fetches the text again.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{LiveWorkspace, Operator};
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::instruction::{self as rules, InstructionScope};
use crate::domain::{self, InstructionId, WorkspaceId};
use crate::events::Event;
use crate::store::{Activity, Instruction, InstructionWrite, NewInstruction};

/// An instruction as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct InstructionView {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: InstructionId,
    /// `global`, `team` or `workspace`.
    pub scope: String,
    /// The team's lead workspace or the workspace; null for global.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub scope_target: Option<WorkspaceId>,
    /// Its heading.
    pub title: String,
    /// Its Markdown.
    pub content: String,
    /// Within its group, higher first.
    pub priority: i32,
    /// Left out of resolution when false.
    pub enabled: bool,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Instruction> for InstructionView {
    fn from(i: Instruction) -> Self {
        Self {
            id: i.id,
            scope: i.scope.as_str().to_owned(),
            scope_target: i.scope_target,
            title: i.title,
            content: i.content,
            priority: i.priority,
            enabled: i.enabled,
            created_at: i.created_at,
            updated_at: i.updated_at,
        }
    }
}

/// `POST /instructions` and `PUT /instructions/:id` body. On `PUT` an
/// absent field keeps its value, except that a given `scope` takes
/// `scope_target` from the body too.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct InstructionRequest {
    /// `global`, `team` or `workspace` (required on POST).
    pub scope: Option<String>,
    /// The team's lead workspace (team) or the workspace (workspace);
    /// absent for global.
    pub scope_target: Option<String>,
    /// 1 to 200 characters (required on POST).
    pub title: Option<String>,
    /// Markdown, 1 byte to 8 KiB (required on POST).
    pub content: Option<String>,
    /// Within its group, higher first (default 0).
    pub priority: Option<i32>,
    /// Default true.
    pub enabled: Option<bool>,
}

/// `GET /workspaces/:id/instructions/resolve` answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct ResolvedInstructions {
    /// The workspace.
    #[schema(value_type = String, format = Uuid)]
    pub workspace_id: WorkspaceId,
    /// One Markdown text: global rules, then the teams' (root first), then
    /// the workspace's own, each by priority (higher first); a `## title`
    /// section per rule. Empty when none apply.
    pub instructions: String,
}

/// `/instructions/{id}`.
#[derive(Debug, Clone, Copy)]
pub(super) struct InstructionPath(InstructionId);

impl FromRequestParts<AppState> for InstructionPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| bad(e.body_text()))?;
        Ok(InstructionPath(raw.parse().map_err(bad)?))
    }
}

fn bad(e: impl ToString) -> Error {
    Error::BadRequest(e.to_string())
}

fn instruction_not_found() -> Error {
    Error::NotFound("instruction not found".into())
}

/// The fields with every rule checked, `base` (on PUT, the current
/// instruction) filling what the body leaves out.
fn checked(body: InstructionRequest, base: Option<&Instruction>) -> Result<NewInstruction> {
    let scope: InstructionScope = match (body.scope.as_deref(), base) {
        (Some(raw), _) => raw.parse().map_err(bad)?,
        (None, Some(b)) => b.scope,
        (None, None) => return Err(bad("`scope` is required: global, team or workspace")),
    };
    let target = match (body.scope_target.as_deref(), body.scope.is_some(), base) {
        (Some(raw), _, _) => Some(
            raw.parse::<WorkspaceId>()
                .map_err(|e| bad(format!("`scope_target` must be a workspace id: {e}")))?,
        ),
        (None, false, Some(b)) => b.scope_target,
        (None, _, _) => None,
    };
    match (scope.needs_target(), target) {
        (true, None) => {
            return Err(bad(format!(
                "`scope_target` is required for a {scope} instruction: the {} workspace id",
                if scope == InstructionScope::Team {
                    "team lead's"
                } else {
                    "workspace's"
                }
            )))
        }
        (false, Some(_)) => return Err(bad("a global instruction takes no `scope_target`")),
        _ => {}
    }
    let title = body
        .title
        .as_deref()
        .map(str::trim)
        .or(base.map(|b| b.title.as_str()))
        .unwrap_or_default();
    if title.is_empty() || title.chars().count() > rules::MAX_TITLE_CHARS {
        return Err(bad(format!(
            "`title` is required: 1 to {} characters",
            rules::MAX_TITLE_CHARS
        )));
    }
    let content = body
        .content
        .or(base.map(|b| b.content.clone()))
        .unwrap_or_default();
    if content.trim().is_empty() || content.len() > rules::MAX_CONTENT_BYTES {
        return Err(bad(format!(
            "`content` is required: 1 to {} bytes of Markdown",
            rules::MAX_CONTENT_BYTES
        )));
    }
    Ok(NewInstruction {
        scope,
        scope_target: target,
        title: title.to_owned(),
        content,
        priority: body.priority.or(base.map(|b| b.priority)).unwrap_or(0),
        enabled: body.enabled.or(base.map(|b| b.enabled)).unwrap_or(true),
    })
}

/// The instruction written, its inbox rows announced (long polls wake),
/// or the write's refusal as an error.
async fn written(
    state: &AppState,
    write: InstructionWrite,
    change: &'static str,
) -> Result<Instruction> {
    let (i, inbox): (Instruction, Vec<Activity>) = match write {
        InstructionWrite::Done(i, inbox) => (i, inbox),
        InstructionWrite::UnknownTarget(w) => {
            return Err(bad(format!("`scope_target` {w} is not a live workspace")))
        }
        InstructionWrite::NotFound => return Err(instruction_not_found()),
    };
    tracing::info!(instruction_id = %i.id, scope = %i.scope, change,
        notified = inbox.len(), "platform instruction changed");
    let events = inbox
        .iter()
        .map(|row| Event::Activity {
            workspace_id: row.workspace_id,
            id: row.id,
        })
        .collect();
    state.bus.publish_many(events).await;
    let mut entry = crate::audit::Entry::new(
        crate::domain::audit::Actor::Operator,
        format!("instruction.{change}"),
    )
    .target(format!("instruction:{}", i.id))
    .details(serde_json::json!({
        "scope": i.scope.as_str(),
        "scope_target": i.scope_target,
        "title": i.title,
        "priority": i.priority,
        "enabled": i.enabled,
    }));
    if let Some(w) = i.scope_target {
        entry = entry.workspace(w);
    }
    super::audit::record(state, entry).await;
    Ok(i)
}

/// Writes a platform instruction; the workspaces it applies to get an
/// `instructions_changed` inbox row.
#[utoipa::path(post, path = "/instructions", tag = "instructions",
    request_body = InstructionRequest,
    responses((status = 201, body = InstructionView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn create_instruction(
    State(state): State<AppState>,
    _: Operator,
    Json(body): Json<InstructionRequest>,
) -> Result<(StatusCode, Json<InstructionView>)> {
    let new = checked(body, None)?;
    let write = state.store.create_instruction(&new, domain::now()).await?;
    let i = written(&state, write, "created").await?;
    Ok((StatusCode::CREATED, Json(i.into())))
}

/// Every platform instruction: global, team, workspace; higher priority
/// first.
#[utoipa::path(get, path = "/instructions", tag = "instructions",
    responses((status = 200, body = Vec<InstructionView>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(super) async fn list_instructions(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<Vec<InstructionView>>> {
    let rows = state.store.list_instructions().await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// Changes an instruction (absent fields keep their value); the workspaces
/// it applied to or applies to now get an `instructions_changed` row.
#[utoipa::path(put, path = "/instructions/{id}", tag = "instructions",
    params(("id" = String, Path, description = "instruction id")),
    request_body = InstructionRequest,
    responses((status = 200, body = InstructionView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn update_instruction(
    State(state): State<AppState>,
    Operator(InstructionPath(id), _): Operator<InstructionPath>,
    Json(body): Json<InstructionRequest>,
) -> Result<Json<InstructionView>> {
    let current = state
        .store
        .get_instruction(id)
        .await?
        .ok_or_else(instruction_not_found)?;
    let new = checked(body, Some(&current))?;
    let write = state
        .store
        .update_instruction(id, &new, domain::now())
        .await?;
    Ok(Json(written(&state, write, "updated").await?.into()))
}

/// Deletes an instruction; the workspaces it applied to get an
/// `instructions_changed` row.
#[utoipa::path(delete, path = "/instructions/{id}", tag = "instructions",
    params(("id" = String, Path, description = "instruction id")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_instruction(
    State(state): State<AppState>,
    Operator(InstructionPath(id), _): Operator<InstructionPath>,
) -> Result<StatusCode> {
    let write = state.store.delete_instruction(id, domain::now()).await?;
    written(&state, write, "deleted").await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The workspace's platform instructions as one Markdown text (the
/// workspace itself or the operator).
#[utoipa::path(get, path = "/workspaces/{id}/instructions/resolve", tag = "instructions",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = ResolvedInstructions), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn resolve_instructions(
    State(state): State<AppState>,
    ws: LiveWorkspace,
) -> Result<Json<ResolvedInstructions>> {
    let rules = state.store.resolve_instructions(ws.row.id).await?;
    let instructions = rules::render(rules.iter().map(|i| (i.title.as_str(), i.content.as_str())));
    Ok(Json(ResolvedInstructions {
        workspace_id: ws.row.id,
        instructions,
    }))
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_instruction, list_instructions))
        .routes(routes!(update_instruction, delete_instruction))
        .routes(routes!(resolve_instructions))
}
