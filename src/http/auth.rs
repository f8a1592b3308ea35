//! Who is calling: the operator (admin token) or one workspace (one of its
//! live tokens). Tokens are looked up by SHA-256; the admin token is
//! compared in constant time.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{AppState, Error, Result};
use crate::domain::{AuthToken, WorkspaceId};

/// The authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// Holder of the admin token: may do everything.
    Operator,
    /// Holder of a live token of this workspace.
    Workspace(WorkspaceId),
}

impl Principal {
    /// 403 unless the operator.
    pub fn require_operator(&self) -> Result<()> {
        match self {
            Principal::Operator => Ok(()),
            Principal::Workspace(_) => Err(Error::Forbidden),
        }
    }

    /// The operator, or the workspace itself. A token of another workspace
    /// gets the same 401 as an unknown token: it may not even learn that
    /// the path exists.
    pub fn require_access(&self, id: WorkspaceId) -> Result<()> {
        match self {
            Principal::Operator => Ok(()),
            Principal::Workspace(own) if *own == id => Ok(()),
            Principal::Workspace(_) => Err(Error::Unauthorized),
        }
    }

    /// Only the workspace itself (the operator may not act as it).
    pub fn require_workspace(&self, id: WorkspaceId) -> Result<()> {
        match self {
            Principal::Workspace(own) if *own == id => Ok(()),
            Principal::Workspace(_) => Err(Error::Unauthorized),
            Principal::Operator => Err(Error::Forbidden),
        }
    }
}

fn bearer(parts: &Parts) -> Result<Option<AuthToken>> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| Error::Unauthorized)?;
    let (scheme, token) = value.split_once(' ').ok_or(Error::Unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Error::Unauthorized);
    }
    Ok(Some(AuthToken::from_plaintext(token.trim())))
}

impl Principal {
    /// Who holds `token`: the operator, a workspace with a live token, or
    /// nobody (401).
    pub(super) async fn resolve(state: &AppState, token: &AuthToken) -> Result<Principal> {
        if token.matches(&state.config.admin_token) {
            return Ok(Principal::Operator);
        }
        match state.store.workspace_for_token(token.hash()).await? {
            Some(id) => Ok(Principal::Workspace(id)),
            None => Err(Error::Unauthorized),
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let token = bearer(parts)?.ok_or(Error::Unauthorized)?;
        Principal::resolve(state, &token).await
    }
}

/// A caller that may be anonymous (only `/registry/register` allows it):
/// no `Authorization` header is `None`; a header with a bad token is 401.
#[derive(Debug, Clone, Copy)]
pub struct MaybePrincipal(pub Option<Principal>);

impl FromRequestParts<AppState> for MaybePrincipal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        match bearer(parts)? {
            None => Ok(MaybePrincipal(None)),
            Some(token) => Ok(MaybePrincipal(Some(
                Principal::resolve(state, &token).await?,
            ))),
        }
    }
}
