//! Plugins: the operator publishes `.tar.gz` archives by name (checked
//! while they stream into the blob store, see `crate::plugin_archive`); a
//! workspace downloads them and records what it installed.

use std::io;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{
    known_workspace, KnownWorkspace, Operator, ScopedPath, SelfOrOperator, WorkspaceItself,
};
use super::extract::WorkspacePath;
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::audit::Entry;
use crate::domain::audit::Actor;
use crate::domain::{self, PluginName, WorkspaceId};
use crate::plugin_archive::{check_archive, ArchiveError, ChannelReader};
use crate::store::{Plugin, PluginInstall};

/// A published plugin as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct PluginView {
    /// Its name.
    pub name: String,
    /// Size of the tarball in bytes.
    pub size: i64,
    /// Hex SHA-256 of the tarball (also the download's ETag).
    pub sha256: String,
    /// First published.
    pub created_at: DateTime<Utc>,
    /// Last published.
    pub updated_at: DateTime<Utc>,
}

impl From<Plugin> for PluginView {
    fn from(p: Plugin) -> Self {
        Self {
            name: p.name.as_str().to_owned(),
            size: p.size,
            sha256: p.sha256,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// An install a workspace recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct PluginInstallView {
    /// The plugin's name.
    pub name: String,
    /// Where it came from, as the agent said.
    pub source: String,
    /// Last install.
    pub installed_at: DateTime<Utc>,
}

impl From<PluginInstall> for PluginInstallView {
    fn from(p: PluginInstall) -> Self {
        Self {
            name: p.name.as_str().to_owned(),
            source: p.source,
            installed_at: p.installed_at,
        }
    }
}

fn parse_name(raw: &str) -> Result<PluginName> {
    PluginName::parse(raw).map_err(|e| Error::BadRequest(e.to_string()))
}

fn plugin_not_found(name: &PluginName) -> Error {
    Error::NotFound(format!("no plugin named {name}"))
}

fn too_large(limit: u64) -> Error {
    Error::PayloadTooLarge(format!(
        "the plugin archive is over the {} limit",
        bytesize::ByteSize::b(limit).display().iec()
    ))
}

/// Publishes (or replaces) a plugin: the body is a `.tar.gz`, checked
/// while it streams in. A refused archive leaves nothing behind.
#[utoipa::path(put, path = "/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "[a-z0-9][a-z0-9._-]{0,99}")),
    request_body(content = Vec<u8>, content_type = "application/gzip", description = "the plugin as a .tar.gz"),
    responses((status = 200, body = PluginView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub(super) async fn publish_plugin(
    State(state): State<AppState>,
    _: Operator,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PluginView>> {
    let name = parse_name(&name)?;
    let limit = state.config.max_plugin_size;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let key = format!("plugins/{name}/{}", uuid::Uuid::new_v4());
    let (size, sha256) = stream_checked(&state, &key, body, limit).await?;
    let now = domain::now();
    let replaced = match state
        .store
        .put_plugin(&name, &key, size as i64, &sha256, now)
        .await
    {
        Ok(replaced) => replaced,
        Err(e) => {
            let _ = state.blobs.delete(&key).await;
            return Err(e.into());
        }
    };
    if let Some(old) = replaced {
        // The row no longer names it; if this fails the orphan reaper
        // retries later.
        if let Err(e) = state.blobs.delete(&old).await {
            tracing::warn!(key = %old, error = %e, "failed to delete a replaced plugin's blob");
        }
    }
    tracing::info!(plugin = %name, size, sha256 = %sha256, "plugin published");
    let entry = Entry::new(Actor::Operator, "plugin.published")
        .target(format!("plugin:{name}"))
        .details(serde_json::json!({"name": name.as_str(), "size": size, "sha256": sha256}));
    super::audit::record(&state, entry).await;
    let plugin = state
        .store
        .get_plugin(&name)
        .await?
        .ok_or_else(|| plugin_not_found(&name))?;
    Ok(Json(plugin.into()))
}

/// Streams `body` into the blob store under `key` while hashing it,
/// counting it against `limit` and feeding the archive checker. Returns the
/// size and hex SHA-256; on any refusal nothing is left under `key`.
async fn stream_checked(
    state: &AppState,
    key: &str,
    body: Body,
    limit: u64,
) -> Result<(u64, String)> {
    let (check_tx, check_rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let checker = tokio::task::spawn_blocking(move || check_archive(ChannelReader::new(check_rx)));
    let (blob_tx, blob_rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    let writer = {
        let blobs = state.blobs.clone();
        let key = key.to_owned();
        tokio::spawn(async move {
            let stream = futures::stream::unfold(blob_rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            blobs.put(&key, Box::pin(stream)).await
        })
    };
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut failure = None;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                failure = Some(Error::BadRequest(format!(
                    "the request body could not be read: {e}"
                )));
                break;
            }
        };
        size += chunk.len() as u64;
        if size > limit {
            failure = Some(too_large(limit));
            break;
        }
        hasher.update(&chunk);
        // A closed checker has found its verdict (a refusal): stop reading.
        if check_tx.send(chunk.clone()).await.is_err() {
            break;
        }
        if blob_tx.send(Ok(chunk)).await.is_err() {
            break;
        }
    }
    drop(check_tx);
    let verdict = checker.await;
    let refusal = match (failure, verdict) {
        (Some(e), _) => Some(e),
        (None, Ok(Ok(_entries))) => None,
        (None, Ok(Err(e @ ArchiveError::Entry { .. })))
        | (None, Ok(Err(e @ ArchiveError::Malformed(_))))
        | (None, Ok(Err(e @ ArchiveError::Empty))) => Some(Error::Unprocessable(e.to_string())),
        (None, Err(join)) => Some(Error::Internal(
            anyhow::Error::new(join).context("the archive checker failed"),
        )),
    };
    if let Some(refusal) = refusal {
        // Fail the blob write so the store discards what it has, then make
        // sure nothing is left even if the write had already finished.
        let _ = blob_tx
            .send(Err(io::Error::other("plugin archive refused")))
            .await;
        drop(blob_tx);
        let _ = writer.await;
        if let Err(e) = state.blobs.delete(key).await {
            tracing::warn!(key, error = %e, "failed to delete a refused plugin's blob");
        }
        return Err(refusal);
    }
    drop(blob_tx);
    match writer.await {
        Ok(Ok(_)) => Ok((size, hex::encode(hasher.finalize()))),
        Ok(Err(e)) => Err(e.into()),
        Err(join) => Err(Error::Internal(
            anyhow::Error::new(join).context("the plugin blob writer failed"),
        )),
    }
}

/// Lists published plugins.
#[utoipa::path(get, path = "/plugins", tag = "plugins",
    responses((status = 200, body = [PluginView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_plugins(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<Vec<PluginView>>> {
    let plugins = state.store.list_plugins().await?;
    Ok(Json(plugins.into_iter().map(PluginView::from).collect()))
}

/// Deletes a published plugin and its tarball.
#[utoipa::path(delete, path = "/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "the plugin's name")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_plugin(
    State(state): State<AppState>,
    _: Operator,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    let name = parse_name(&name)?;
    let key = state
        .store
        .delete_plugin(&name)
        .await?
        .ok_or_else(|| plugin_not_found(&name))?;
    if let Err(e) = state.blobs.delete(&key).await {
        tracing::warn!(key = %key, error = %e, "failed to delete a plugin's blob; the orphan reaper retries");
    }
    tracing::info!(plugin = %name, "plugin deleted");
    let entry = Entry::new(Actor::Operator, "plugin.deleted")
        .target(format!("plugin:{name}"))
        .details(serde_json::json!({"name": name.as_str()}));
    super::audit::record(&state, entry).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of the download.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct DownloadParams {
    /// Where the agent wants it from; this server serves only its own
    /// registry, so the value is accepted and not used.
    pub source: Option<String>,
}

/// Path of `/workspaces/{id}/plugins/{name}/download`: the workspace id
/// parsed (400) before the access rule, the name checked after it.
#[derive(Debug)]
pub(super) struct DownloadPath(pub WorkspaceId, pub String);

impl FromRequestParts<AppState> for DownloadPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let Path((id, name)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::BadRequest(e.body_text()))?;
        let id = id
            .parse()
            .map_err(|e: domain::IdError| Error::BadRequest(e.to_string()))?;
        Ok(DownloadPath(id, name))
    }
}

impl ScopedPath for DownloadPath {
    fn workspace_id(&self) -> WorkspaceId {
        self.0
    }
}

/// The workspace downloads a published plugin (streamed, `ETag` = its
/// SHA-256; `If-None-Match` answers 304).
#[utoipa::path(get, path = "/workspaces/{id}/plugins/{name}/download", tag = "plugins",
    params(("id" = String, Path, description = "workspace id"), ("name" = String, Path, description = "the plugin's name"), DownloadParams),
    responses((status = 200, description = "the .tar.gz", content_type = "application/gzip"), (status = 304),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn download_plugin(
    State(state): State<AppState>,
    SelfOrOperator(DownloadPath(id, name), _): SelfOrOperator<DownloadPath>,
    Query(params): Query<DownloadParams>,
    headers: HeaderMap,
) -> Result<Response> {
    let name = parse_name(&name)?;
    known_workspace(&state, id).await?;
    let plugin = state
        .store
        .get_plugin(&name)
        .await?
        .ok_or_else(|| plugin_not_found(&name))?;
    let etag = format!("\"{}\"", plugin.sha256);
    let etag_value = HeaderValue::from_str(&etag).expect("BUG: hex is a valid header value");
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response.headers_mut().insert(header::ETAG, etag_value);
        return Ok(response);
    }
    let stream = state.blobs.get(&plugin.blob_key, None).await?;
    tracing::info!(workspace_id = %id, plugin = %name, source = ?params.source, "plugin downloaded");
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/gzip"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(plugin.size));
    h.insert(header::ETAG, etag_value);
    if let Ok(v) =
        HeaderValue::from_str(&format!("attachment; filename=\"{}.tar.gz\"", plugin.name))
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// `POST /workspaces/:id/plugins` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct NewPluginInstall {
    /// The plugin's name; may be left out when `source` is `local://NAME`
    /// (what Molecule's SDK sends).
    pub name: Option<String>,
    /// Where it came from (1–2048 characters).
    pub source: String,
}

/// The workspace records that it installed a plugin.
#[utoipa::path(post, path = "/workspaces/{id}/plugins", tag = "plugins",
    params(("id" = String, Path, description = "workspace id")),
    request_body = NewPluginInstall,
    responses((status = 201, body = PluginInstallView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn record_plugin_install(
    State(state): State<AppState>,
    WorkspaceItself(WorkspacePath(id), _): WorkspaceItself,
    Json(body): Json<NewPluginInstall>,
) -> Result<(StatusCode, Json<PluginInstallView>)> {
    let source = body.source.trim();
    if source.is_empty() || source.len() > 2048 {
        return Err(Error::BadRequest(
            "`source` must be 1 to 2048 characters".into(),
        ));
    }
    let name = match body.name.as_deref() {
        Some(name) => parse_name(name)?,
        None => match source.strip_prefix("local://") {
            Some(name) => parse_name(name)?,
            None => {
                return Err(Error::BadRequest(
                    "`name` is required unless `source` is local://NAME".into(),
                ))
            }
        },
    };
    let install = state
        .store
        .record_plugin_install(id, &name, source, domain::now())
        .await?
        .ok_or_else(Error::workspace_not_found)?;
    tracing::info!(workspace_id = %id, plugin = %name, "plugin install recorded");
    Ok((StatusCode::CREATED, Json(install.into())))
}

/// What a workspace has installed (the operator and the workspace).
#[utoipa::path(get, path = "/workspaces/{id}/plugins", tag = "plugins",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = [PluginInstallView]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn list_plugin_installs(
    State(state): State<AppState>,
    KnownWorkspace {
        rule: SelfOrOperator(WorkspacePath(id), _),
        ..
    }: KnownWorkspace,
) -> Result<Json<Vec<PluginInstallView>>> {
    let installs = state.store.list_plugin_installs(id).await?;
    Ok(Json(
        installs.into_iter().map(PluginInstallView::from).collect(),
    ))
}

/// The routes of this resource, with their OpenAPI operations.
/// A plugin archive is checked and capped while it streams in.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(
            OpenApiRouter::new()
                .routes(routes!(publish_plugin, delete_plugin))
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .routes(routes!(list_plugins))
        .routes(routes!(download_plugin))
        .routes(routes!(record_plugin_install, list_plugin_installs))
}
