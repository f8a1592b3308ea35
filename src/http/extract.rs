//! Path and query extractors that answer malformed input with our 400.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::{Error, Result};
use crate::domain::{ApprovalId, DelegationId, FileId, ScheduleId, WorkspaceId};

/// `/workspaces/{id}/…`
#[derive(Debug, Clone, Copy)]
pub(super) struct WorkspacePath(pub WorkspaceId);

/// `/workspaces/{id}/pending-uploads/{fid}/…`
#[derive(Debug, Clone, Copy)]
pub(super) struct FilePath(pub WorkspaceId, pub FileId);

/// `/workspaces/{id}/delegations/{did}/…`
#[derive(Debug, Clone, Copy)]
pub(super) struct DelegationPath(pub WorkspaceId, pub DelegationId);

/// `/workspaces/{id}/schedules/{sid}/…`
#[derive(Debug, Clone, Copy)]
pub(super) struct SchedulePath(pub WorkspaceId, pub ScheduleId);

/// `/workspaces/{id}/approvals/{aid}/…`
#[derive(Debug, Clone, Copy)]
pub(super) struct ApprovalPath(pub WorkspaceId, pub ApprovalId);

fn bad_id(e: impl std::fmt::Display) -> Error {
    Error::BadRequest(e.to_string())
}

impl<S: Send + Sync> FromRequestParts<S> for WorkspacePath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::BadRequest(e.body_text()))?;
        Ok(WorkspacePath(raw.parse().map_err(bad_id)?))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for FilePath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let Path((ws, file)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::BadRequest(e.body_text()))?;
        Ok(FilePath(
            ws.parse().map_err(bad_id)?,
            file.parse().map_err(bad_id)?,
        ))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for DelegationPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let Path((ws, id)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::BadRequest(e.body_text()))?;
        Ok(DelegationPath(
            ws.parse().map_err(bad_id)?,
            id.parse().map_err(bad_id)?,
        ))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SchedulePath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let Path((ws, id)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::BadRequest(e.body_text()))?;
        Ok(SchedulePath(
            ws.parse().map_err(bad_id)?,
            id.parse().map_err(bad_id)?,
        ))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ApprovalPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let Path((ws, id)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::BadRequest(e.body_text()))?;
        Ok(ApprovalPath(
            ws.parse().map_err(bad_id)?,
            id.parse().map_err(bad_id)?,
        ))
    }
}

/// `axum::extract::Query`, with rejections answered as our 400, and a NUL
/// character in any parameter refused by name (the same rule as JSON
/// bodies: PostgreSQL cannot compare text with NUL in it).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let raw = parts.uri.query().unwrap_or("");
        if let Some((name, _)) = url::form_urlencoded::parse(raw.as_bytes())
            .find(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return Err(Error::BadRequest(format!(
                "the query parameter `{}` must not contain NUL characters (%00)",
                name.replace('\0', "%00")
            )));
        }
        let axum::extract::Query(v) = axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::BadRequest(e.body_text()))?;
        Ok(Query(v))
    }
}
