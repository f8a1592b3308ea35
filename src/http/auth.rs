//! Who is calling: the operator (admin token) or one workspace (one of its
//! live tokens). Tokens are looked up by SHA-256; the admin token is
//! compared in constant time.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{AppState, Error, Result};
use crate::domain::{AuthToken, TokenHash, WorkspaceId};

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

async fn resolve(state: &AppState, token: &AuthToken) -> Result<Principal> {
    if token.matches(&state.config.admin_token) {
        return Ok(Principal::Operator);
    }
    match state.store.workspace_for_token(token.hash()).await? {
        Some(id) => Ok(Principal::Workspace(id)),
        None => Err(Error::Unauthorized),
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let token = bearer(parts)?.ok_or(Error::Unauthorized)?;
        resolve(state, &token).await
    }
}

/// The caller with the token it presented, for requests held open (long
/// polls, event streams): they must notice when that token is revoked
/// while they wait, and answer 401 instead of the next row.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    /// Who the token belonged to when the request arrived.
    pub principal: Principal,
    token: TokenHash,
    /// [`crate::events::Bus::revocations_seen`] before the token was checked.
    revocations_seen: u64,
}

impl Session {
    /// True when a revocation may have happened since the token was last
    /// checked (in this process or, through the bus, another replica).
    pub fn may_be_revoked(&self, state: &AppState) -> bool {
        state.bus.revocations_seen() != self.revocations_seen
    }

    /// Checks the token again: 401 once it no longer belongs to the same
    /// workspace. The admin token cannot be revoked while serving.
    pub async fn recheck(&mut self, state: &AppState) -> Result<()> {
        let seen = state.bus.revocations_seen();
        if let Principal::Workspace(id) = self.principal {
            if state.store.workspace_for_token(self.token).await? != Some(id) {
                return Err(Error::Unauthorized);
            }
        }
        self.revocations_seen = seen;
        Ok(())
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        // Read before the check: a revocation committed after it moves
        // the counter, so the waiter re-checks instead of missing it.
        let revocations_seen = state.bus.revocations_seen();
        let token = bearer(parts)?.ok_or(Error::Unauthorized)?;
        let principal = resolve(state, &token).await?;
        Ok(Session {
            principal,
            token: token.hash(),
            revocations_seen,
        })
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
            Some(token) => Ok(MaybePrincipal(Some(resolve(state, &token).await?))),
        }
    }
}
