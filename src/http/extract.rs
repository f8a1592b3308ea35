//! Path extractors that parse ids and answer malformed ones with our 400.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use super::{Error, Result};
use crate::domain::{DelegationId, FileId, WorkspaceId};

/// `/workspaces/{id}/…`
#[derive(Debug, Clone, Copy)]
pub struct WorkspacePath(pub WorkspaceId);

/// `/workspaces/{id}/pending-uploads/{fid}/…`
#[derive(Debug, Clone, Copy)]
pub struct FilePath(pub WorkspaceId, pub FileId);

/// `/workspaces/{id}/delegations/{did}/…`
#[derive(Debug, Clone, Copy)]
pub struct DelegationPath(pub WorkspaceId, pub DelegationId);

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
