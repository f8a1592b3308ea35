//! Secrets: the operator sets and deletes them (per workspace, or global
//! for every workspace) and lists their keys; only the workspace itself
//! reads values, merged (its own over the global ones). Values are sealed
//! before they reach the store (see `crate::secrets`) and never logged,
//! listed or shown back.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{KnownWorkspace, Operator, WorkspaceItself};
use super::extract::WorkspacePath;
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::{self, SecretName, WorkspaceId};
use crate::store::{SecretMeta, SecretScope};

/// Largest accepted secret value, in bytes.
pub(super) const MAX_SECRET_VALUE: usize = 64 * 1024;

/// `PUT …/secrets/:KEY` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct NewSecret {
    /// The value (at most 64 KiB). Stored encrypted, never shown back.
    pub value: String,
}

/// A secret as listed: its key and when it was last set, never its value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct SecretView {
    /// The key.
    pub key: String,
    /// Last set.
    pub updated_at: DateTime<Utc>,
}

impl From<SecretMeta> for SecretView {
    fn from(m: SecretMeta) -> Self {
        Self {
            key: m.name.as_str().to_owned(),
            updated_at: m.updated_at,
        }
    }
}

fn parse_key(raw: &str) -> Result<SecretName> {
    SecretName::parse(raw).map_err(|e| Error::BadRequest(e.to_string()))
}

fn parse_workspace(raw: &str) -> Result<WorkspaceId> {
    raw.parse()
        .map_err(|e: domain::IdError| Error::BadRequest(e.to_string()))
}

async fn put_secret(
    state: &AppState,
    scope: SecretScope,
    key: &str,
    body: NewSecret,
) -> Result<Json<SecretView>> {
    let name = parse_key(key)?;
    if body.value.len() > MAX_SECRET_VALUE {
        return Err(Error::PayloadTooLarge(format!(
            "the value of secret {name} is {} bytes; the limit is {MAX_SECRET_VALUE} bytes (64 KiB)",
            body.value.len()
        )));
    }
    let sealed = state.sealer.seal(scope, name.as_str(), &body.value);
    let now = domain::now();
    if !state.store.put_secret(scope, &name, &sealed, now).await? {
        return Err(Error::workspace_not_found());
    }
    // The key only: a value never reaches a log or the audit trail.
    tracing::info!(secret = %name, scope = ?scope, "secret set");
    super::audit::record(state, secret_entry("secret.set", scope, &name)).await;
    Ok(Json(SecretView {
        key: name.as_str().to_owned(),
        updated_at: now,
    }))
}

/// The audit row of a secret's change: its scope and name, never its value
/// (the operator made it).
fn secret_entry(action: &str, scope: SecretScope, name: &SecretName) -> crate::audit::Entry {
    let entry = crate::audit::Entry::new(crate::domain::audit::Actor::Operator, action)
        .target(format!("secret:{name}"));
    match scope {
        SecretScope::Global => {
            entry.details(serde_json::json!({"scope": "global", "name": name.as_str()}))
        }
        SecretScope::Workspace(id) => entry
            .workspace(id)
            .details(serde_json::json!({"scope": "workspace", "name": name.as_str()})),
    }
}

async fn delete_secret(state: &AppState, scope: SecretScope, key: &str) -> Result<StatusCode> {
    let name = parse_key(key)?;
    if !state.store.delete_secret(scope, &name).await? {
        return Err(Error::NotFound(format!("no secret named {name}")));
    }
    tracing::info!(secret = %name, scope = ?scope, "secret deleted");
    super::audit::record(state, secret_entry("secret.deleted", scope, &name)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets a workspace's secret.
#[utoipa::path(put, path = "/workspaces/{id}/secrets/{key}", tag = "secrets",
    params(("id" = String, Path, description = "workspace id"), ("key" = String, Path, description = "[A-Z_][A-Z0-9_]{0,127}")),
    request_body = NewSecret,
    responses((status = 200, body = SecretView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub(super) async fn set_workspace_secret(
    State(state): State<AppState>,
    _: Operator,
    Path((id, key)): Path<(String, String)>,
    Json(body): Json<NewSecret>,
) -> Result<Json<SecretView>> {
    let id = parse_workspace(&id)?;
    put_secret(&state, SecretScope::Workspace(id), &key, body).await
}

/// Deletes a workspace's secret.
#[utoipa::path(delete, path = "/workspaces/{id}/secrets/{key}", tag = "secrets",
    params(("id" = String, Path, description = "workspace id"), ("key" = String, Path, description = "the secret's key")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_workspace_secret(
    State(state): State<AppState>,
    _: Operator,
    Path((id, key)): Path<(String, String)>,
) -> Result<StatusCode> {
    let id = parse_workspace(&id)?;
    delete_secret(&state, SecretScope::Workspace(id), &key).await
}

/// Lists a workspace's own secret keys (never values).
#[utoipa::path(get, path = "/workspaces/{id}/secrets", tag = "secrets",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = [SecretView]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn list_workspace_secrets(
    State(state): State<AppState>,
    KnownWorkspace {
        rule: Operator(WorkspacePath(id), _),
        ..
    }: KnownWorkspace<Operator<WorkspacePath>>,
) -> Result<Json<Vec<SecretView>>> {
    let keys = state.store.list_secrets(SecretScope::Workspace(id)).await?;
    Ok(Json(keys.into_iter().map(SecretView::from).collect()))
}

/// The response header naming the secrets that could not be decrypted
/// (comma-separated, sorted); absent when every value opened.
pub(crate) const UNDECRYPTABLE_HEADER: &str = "x-molecule-undecryptable-secrets";

/// The workspace reads its secrets: global ones merged under its own (its
/// own win), as `{"KEY": "value"}`. A value that does not open (a tampered
/// or moved row) leaves its key out of the map and names it in the
/// `X-Molecule-Undecryptable-Secrets` header, so the others are still
/// served; it is logged (name and scope, never a value) and counted in
/// `molecule_secret_open_failures_total`. A workspace's own value that
/// does not open is not replaced by the global one: the operator set it
/// to override that.
#[utoipa::path(get, path = "/workspaces/{id}/secrets/values", tag = "secrets",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = BTreeMap<String, String>,
            headers(("X-Molecule-Undecryptable-Secrets" = String, description = "keys whose stored value could not be decrypted, comma-separated; absent when every value opened"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_secret_values(
    State(state): State<AppState>,
    KnownWorkspace {
        rule: WorkspaceItself(WorkspacePath(id), _),
        ..
    }: KnownWorkspace<WorkspaceItself>,
) -> Result<(HeaderMap, Json<BTreeMap<String, String>>)> {
    let sealed = state.store.sealed_secrets(id).await?;
    let mut merged: BTreeMap<String, Option<String>> = BTreeMap::new();
    // Globals first, so the workspace's own value of a key replaces them.
    let (globals, own): (Vec<_>, Vec<_>) = sealed
        .into_iter()
        .partition(|s| s.scope == SecretScope::Global);
    for secret in globals.into_iter().chain(own) {
        let name = secret.name.as_str();
        let opened = state.sealer.open(secret.scope, name, &secret.sealed);
        if opened.is_err() {
            let scope = match secret.scope {
                SecretScope::Global => "global",
                SecretScope::Workspace(_) => "workspace",
            };
            state
                .metrics
                .secret_open_failures
                .with_label_values(&[scope])
                .inc();
            tracing::error!(
                workspace_id = %id, secret = name, scope,
                "a stored secret could not be decrypted (tampered or moved row); left out of the answer"
            );
        }
        merged.insert(name.to_owned(), opened.ok());
    }
    let mut headers = HeaderMap::new();
    let failed: Vec<&str> = merged
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k.as_str())
        .collect();
    if !failed.is_empty() {
        // Secret keys are A-Z, 0-9 and _: always a valid header value.
        let value = HeaderValue::from_str(&failed.join(","))
            .map_err(|e| Error::Internal(anyhow::Error::new(e)))?;
        headers.insert(UNDECRYPTABLE_HEADER, value);
    }
    let values = merged
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    Ok((headers, Json(values)))
}

/// Sets a global secret (inherited by every workspace).
#[utoipa::path(put, path = "/admin/secrets/{key}", tag = "secrets",
    params(("key" = String, Path, description = "[A-Z_][A-Z0-9_]{0,127}")),
    request_body = NewSecret,
    responses((status = 200, body = SecretView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub(super) async fn set_global_secret(
    State(state): State<AppState>,
    _: Operator,
    Path(key): Path<String>,
    Json(body): Json<NewSecret>,
) -> Result<Json<SecretView>> {
    put_secret(&state, SecretScope::Global, &key, body).await
}

/// Deletes a global secret.
#[utoipa::path(delete, path = "/admin/secrets/{key}", tag = "secrets",
    params(("key" = String, Path, description = "the secret's key")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_global_secret(
    State(state): State<AppState>,
    _: Operator,
    Path(key): Path<String>,
) -> Result<StatusCode> {
    delete_secret(&state, SecretScope::Global, &key).await
}

/// Lists the global secret keys (never values).
#[utoipa::path(get, path = "/admin/secrets", tag = "secrets",
    responses((status = 200, body = [SecretView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_global_secrets(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<Vec<SecretView>>> {
    let keys = state.store.list_secrets(SecretScope::Global).await?;
    Ok(Json(keys.into_iter().map(SecretView::from).collect()))
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(set_workspace_secret, delete_workspace_secret))
        .routes(routes!(list_workspace_secrets))
        .routes(routes!(get_secret_values))
        .routes(routes!(set_global_secret, delete_global_secret))
        .routes(routes!(list_global_secrets))
}
