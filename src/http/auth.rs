//! Who is calling: the operator (the admin token, or an operator token
//! whose role and subtree allow the route: `permissions`) or one
//! workspace (one of its live tokens). Tokens are looked up by SHA-256;
//! the admin token is compared in constant time. Each use is noted for the
//! batched last-used stamp. What each caller may do is `access`: the rules
//! handlers declare in their signatures.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{AppState, Error, Result};
use crate::domain::team::{self, Caller, Node};
use crate::domain::{self as d, AuthToken, Role, TokenHash, WorkspaceId};
use crate::store::{OperatorGrant, TokenHolder};

/// The authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Principal {
    /// Holder of the admin token (may do everything) or of an operator
    /// token whose role and subtree allow this route.
    Operator,
    /// Holder of a live token of this workspace.
    Workspace(WorkspaceId),
}

/// The bearer token of the request: `None` without an `Authorization`
/// header, 401 for one that is not a bearer token.
pub(super) fn bearer(parts: &Parts) -> Result<Option<AuthToken>> {
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
    /// nobody (401). An operator token is checked against the route of
    /// `parts` (403 when its role or subtree does not allow it). A known
    /// token refused is written to the audit trail (`denied`).
    pub(super) async fn resolve(
        state: &AppState,
        parts: &mut Parts,
        token: &AuthToken,
    ) -> Result<(Principal, Option<OperatorGrant>)> {
        if token.matches(&state.config.admin_token) {
            return Ok((Principal::Operator, None));
        }
        let mut granted = None;
        let now = d::now();
        let principal = match state.store.token_holder(token.hash(), now).await? {
            Some(TokenHolder::Workspace(id)) => Principal::Workspace(id),
            Some(TokenHolder::Operator(grant)) => {
                if let Some((reason, refused)) =
                    super::permissions::refusal(state, parts, &grant).await?
                {
                    super::denied::record(state, parts, token, Some(reason)).await;
                    return Err(refused);
                }
                granted = Some(grant);
                Principal::Operator
            }
            None => {
                // Revoked or expired, if it is a token we know.
                super::denied::record(state, parts, token, None).await;
                return Err(Error::Unauthorized);
            }
        };
        state.token_uses.record(token.hash(), now);
        Ok((principal, granted))
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = Error;

    /// Resolved once per request (as its [`Session`]): a route whose
    /// rules both need the caller (an access rule and
    /// [`super::access::Calling`], or a stream's [`Session`]) looks the
    /// token up once.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        Ok(Session::from_request_parts(parts, state).await?.principal)
    }
}

/// The caller with the token it presented, for requests held open (long
/// polls, event streams): they must notice when that token is revoked
/// while they wait, and answer 401 instead of the next row.
#[derive(Debug, Clone, Copy)]
pub(super) struct Session {
    /// Who the token belonged to when the request arrived.
    pub principal: Principal,
    token: TokenHash,
    /// [`crate::events::Bus::revocations_seen`] before the token was checked.
    revocations_seen: u64,
    /// The operator's principal came from a revocable operator token (not
    /// the admin token of the configuration).
    revocable_operator: bool,
    /// What that operator token may do (`None`: the admin token, or a
    /// workspace's).
    grant: Option<OperatorGrant>,
}

impl Session {
    /// The operator's role and team subtree (the admin token: `admin`,
    /// everywhere); `None` for a workspace.
    pub(super) fn operator_role(&self) -> Option<(Role, Option<WorkspaceId>)> {
        match (self.principal, self.grant) {
            (Principal::Workspace(_), _) => None,
            (Principal::Operator, None) => Some((Role::Admin, None)),
            (Principal::Operator, Some(g)) => Some((g.role, g.team_root)),
        }
    }

    /// Whose read state this caller keeps (`read_positions.reader`):
    /// `admin` for the admin token, `token:<id>` for an operator token;
    /// `None` for a workspace, which has no chats to read.
    pub(super) fn reader(&self) -> Option<String> {
        match (self.principal, self.grant) {
            (Principal::Workspace(_), _) => None,
            (Principal::Operator, None) => Some("admin".to_owned()),
            (Principal::Operator, Some(g)) => Some(format!("token:{}", g.id)),
        }
    }

    /// True when a revocation may have happened since the token was last
    /// checked (in this process or, through the bus, another replica).
    pub(super) fn may_be_revoked(&self, state: &AppState) -> bool {
        state.bus.revocations_seen() != self.revocations_seen
    }

    /// Checks the token again: 401 once it no longer belongs to the same
    /// workspace, or is no longer a live operator token. The admin token
    /// cannot be revoked while serving.
    pub(super) async fn recheck(&mut self, state: &AppState) -> Result<()> {
        let seen = state.bus.revocations_seen();
        let holder = match self.principal {
            Principal::Operator if !self.revocable_operator => None,
            _ => Some(state.store.token_holder(self.token, d::now()).await?),
        };
        match (self.principal, holder) {
            (_, None) => {}
            (Principal::Workspace(id), Some(Some(TokenHolder::Workspace(now)))) if now == id => {}
            (Principal::Operator, Some(Some(TokenHolder::Operator(_)))) => {}
            _ => return Err(Error::Unauthorized),
        }
        self.revocations_seen = seen;
        Ok(())
    }

    /// Resolves once this session's token no longer holds: revoked in this
    /// process or, through the bus, on another replica. A stream held open
    /// with the token ends with it ([`super::stream::cut_on_revocation`]).
    /// Costs one token lookup per revocation heard of (any token's), none
    /// otherwise; a lookup that fails also ends the session, since it can
    /// no longer be vouched for (the client reconnects and is checked anew).
    pub(super) async fn revoked(mut self, state: AppState) {
        use tokio::sync::broadcast::error::RecvError;
        // Subscribed before the first comparison: a revocation delivered
        // after it is either counted already or still in the channel.
        let mut events = state.bus.subscribe();
        loop {
            if self.may_be_revoked(&state) && self.recheck(&state).await.is_err() {
                return;
            }
            match events.recv().await {
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                // No more revocations can be heard of: nothing ends the
                // session but its stream's own end.
                Err(RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Error;

    /// Resolved once per request; later rules reuse it.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        if let Some(known) = parts.extensions.get::<Session>() {
            return Ok(*known);
        }
        // Read before the check: a revocation committed after it moves
        // the counter, so the waiter re-checks instead of missing it.
        let revocations_seen = state.bus.revocations_seen();
        let token = bearer(parts)?.ok_or(Error::Unauthorized)?;
        let (principal, grant) = Principal::resolve(state, parts, &token).await?;
        let session = Session {
            principal,
            token: token.hash(),
            revocations_seen,
            revocable_operator: !token.matches(&state.config.admin_token),
            grant,
        };
        parts.extensions.insert(session);
        Ok(session)
    }
}

/// A caller that may be anonymous (only `/registry/register` allows it):
/// no `Authorization` header is `None`; a header with a bad token is 401.
#[derive(Debug, Clone, Copy)]
pub(super) struct MaybePrincipal(pub Option<Principal>);

impl FromRequestParts<AppState> for MaybePrincipal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        match bearer(parts)? {
            None => Ok(MaybePrincipal(None)),
            Some(token) => Ok(MaybePrincipal(Some(
                Principal::resolve(state, parts, &token).await?.0,
            ))),
        }
    }
}

/// The place of `w` in the tree with its ancestor chain (one query; none
/// for a root workspace).
pub(super) async fn node_of(state: &AppState, w: &crate::store::Workspace) -> Result<Node> {
    let ancestors = match w.parent_id {
        None => Vec::new(),
        Some(_) => state.store.ancestor_chain(w.id).await?,
    };
    Ok(w.node(ancestors))
}

/// 403 naming the communication rule unless `from` may reach `to`.
pub(super) fn require_reach(from: &Caller, to: &Node) -> Result<()> {
    if team::may_reach(from, to) {
        Ok(())
    } else {
        Err(Error::Denied(format!(
            "workspace {} is out of reach: {}",
            to.id,
            team::RULE
        )))
    }
}
