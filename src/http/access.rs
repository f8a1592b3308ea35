//! Who may call each route, said by the handler's signature: its first
//! extractor is one of the rules below, so a handler cannot forget its
//! check and a reader sees the rule without reading the body (the
//! `AuthUser` / `MaybeAuthUser` extractors of realworld-axum-sqlx).
//!
//! Each rule resolves the token first (401), then parses the path (400),
//! then applies itself (401 or 403): the order every route answered in
//! when these checks were written out in each body. Loading the
//! workspace row comes after the rule ([`LiveWorkspace`],
//! [`KnownWorkspace`]), so a caller that may not see a workspace cannot
//! learn from a 404 whether it exists.
//!
//! The calling workspace a request names in its headers is read by one
//! rule, [`Calling`], for every route that reads it.

use std::marker::PhantomData;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;

use super::auth::{MaybePrincipal, Principal, Session};
use super::extract::{ApprovalPath, DelegationPath, FilePath, SchedulePath, WorkspacePath};
use super::{AppState, Error, Json, Result};
use crate::domain::{self, Caller, WorkspaceId};
use crate::store::Workspace;

/// 403 unless the operator.
fn require_operator(principal: Principal) -> Result<()> {
    match principal {
        Principal::Operator => Ok(()),
        Principal::Workspace(_) => Err(Error::Forbidden),
    }
}

/// The operator, or the workspace itself. A token of another workspace
/// gets the same 401 as an unknown token: it may not even learn that the
/// path exists.
fn require_access(principal: Principal, id: WorkspaceId) -> Result<()> {
    match principal {
        Principal::Operator => Ok(()),
        Principal::Workspace(own) if own == id => Ok(()),
        Principal::Workspace(_) => Err(Error::Unauthorized),
    }
}

/// Only the workspace itself: the operator may not act as it (403),
/// another workspace gets the 401 of [`require_access`].
fn require_workspace_itself(principal: Principal, id: WorkspaceId) -> Result<()> {
    match principal {
        Principal::Workspace(own) if own == id => Ok(()),
        Principal::Workspace(_) => Err(Error::Unauthorized),
        Principal::Operator => Err(Error::Forbidden),
    }
}

/// How a rule learns who calls: [`Principal`] for ordinary requests,
/// [`Session`] for requests held open that must notice a revocation.
pub(super) trait Credentials: FromRequestParts<AppState, Rejection = Error> + Send {
    /// Who presented the token.
    fn principal(&self) -> Principal;
}

impl Credentials for Principal {
    fn principal(&self) -> Principal {
        *self
    }
}

impl Credentials for Session {
    fn principal(&self) -> Principal {
        self.principal
    }
}

/// A path whose first segment after `/workspaces/` (or `/registry/`) is
/// the workspace a rule is about.
pub(super) trait ScopedPath: FromRequestParts<AppState, Rejection = Error> + Send {
    /// The workspace the path names.
    fn workspace_id(&self) -> WorkspaceId;
}

impl ScopedPath for WorkspacePath {
    fn workspace_id(&self) -> WorkspaceId {
        self.0
    }
}

impl ScopedPath for FilePath {
    fn workspace_id(&self) -> WorkspaceId {
        self.0
    }
}

impl ScopedPath for DelegationPath {
    fn workspace_id(&self) -> WorkspaceId {
        self.0
    }
}

impl ScopedPath for ApprovalPath {
    fn workspace_id(&self) -> WorkspaceId {
        self.0
    }
}

impl ScopedPath for SchedulePath {
    fn workspace_id(&self) -> WorkspaceId {
        self.0
    }
}

/// The token, then the path: a missing token is 401 before a malformed
/// id is 400.
async fn token_then_path<P, W>(parts: &mut Parts, state: &AppState) -> Result<(P, W)>
where
    P: FromRequestParts<AppState> + Send,
    Error: From<P::Rejection>,
    W: Credentials,
{
    let who = W::from_request_parts(parts, state).await?;
    let path = P::from_request_parts(parts, state).await?;
    Ok((path, who))
}

/// The admin token only: 403 for a workspace token, 401 without one.
/// Carries the route's parsed path `P` (none by default) and the
/// credentials `W`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Operator<P = (), W = Principal>(pub P, pub W);

impl<P, W> FromRequestParts<AppState> for Operator<P, W>
where
    P: FromRequestParts<AppState> + Send,
    Error: From<P::Rejection>,
    W: Credentials,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let (path, who) = token_then_path::<P, W>(parts, state).await?;
        require_operator(who.principal())?;
        Ok(Operator(path, who))
    }
}

/// What a caller may search across workspaces: every workspace (the
/// operator), a team's subtree (an operator token confined to that team:
/// `permissions::NARROWED` lets it through), or its own workspace (a
/// workspace token). The read is narrowed to it in the same statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// Every workspace.
    Everything,
    /// This workspace and every one under it.
    Subtree(WorkspaceId),
    /// This workspace only.
    Workspace(WorkspaceId),
}

impl FromRequestParts<AppState> for Reach {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let session = Session::from_request_parts(parts, state).await?;
        Ok(match (session.principal, session.operator_role()) {
            (Principal::Workspace(id), _) => Reach::Workspace(id),
            (Principal::Operator, Some((_, Some(root)))) => Reach::Subtree(root),
            (Principal::Operator, _) => Reach::Everything,
        })
    }
}

/// The operator or the workspace the path names (a token of another
/// workspace is 401, as if unknown).
#[derive(Debug, Clone, Copy)]
pub(super) struct SelfOrOperator<P = WorkspacePath, W = Principal>(pub P, pub W);

impl<P: ScopedPath, W: Credentials> FromRequestParts<AppState> for SelfOrOperator<P, W> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let (path, who) = token_then_path::<P, W>(parts, state).await?;
        require_access(who.principal(), path.workspace_id())?;
        Ok(SelfOrOperator(path, who))
    }
}

/// Only the workspace the path names: what an agent does for itself
/// (acks, reports, reading its secret values). The operator is 403.
#[derive(Debug, Clone, Copy)]
pub(super) struct WorkspaceItself<P = WorkspacePath, W = Principal>(pub P, pub W);

impl<P: ScopedPath, W: Credentials> FromRequestParts<AppState> for WorkspaceItself<P, W> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let (path, who) = token_then_path::<P, W>(parts, state).await?;
        require_workspace_itself(who.principal(), path.workspace_id())?;
        Ok(WorkspaceItself(path, who))
    }
}

/// Only the callee of the delegation in the path, with its own token,
/// reports on it; anyone else (the caller, the operator, a third
/// workspace) is told the delegation does not exist (404).
#[derive(Debug, Clone, Copy)]
pub(super) struct Callee(pub DelegationPath);

impl FromRequestParts<AppState> for Callee {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let (path, who) = token_then_path::<DelegationPath, Principal>(parts, state).await?;
        match who {
            Principal::Workspace(own) if own == path.0 => Ok(Callee(path)),
            _ => Err(Error::delegation_not_found()),
        }
    }
}

/// Who may decide the approval request in the path: the operator, or a
/// workspace other than the requester (whether it is the request's current
/// decider is part of the store's conditional update, so it cannot race an
/// escalation). The requester itself is refused with 403: a workspace never
/// decides its own request.
#[derive(Debug, Clone, Copy)]
pub(super) struct ApprovalDecider(pub ApprovalPath, pub Principal);

impl FromRequestParts<AppState> for ApprovalDecider {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let (path, who) = token_then_path::<ApprovalPath, Principal>(parts, state).await?;
        match who {
            Principal::Workspace(own) if own == path.0 => Err(Error::Denied(
                "a workspace cannot decide its own approval request".into(),
            )),
            _ => Ok(ApprovalDecider(path, who)),
        }
    }
}

/// A rule about the workspace of a path, checked before its row is loaded.
pub(super) trait WorkspaceRule:
    FromRequestParts<AppState, Rejection = Error> + Send
{
    /// The workspace the rule let the caller at.
    fn workspace_id(&self) -> WorkspaceId;
}

impl<P: ScopedPath, W: Credentials> WorkspaceRule for Operator<P, W> {
    fn workspace_id(&self) -> WorkspaceId {
        self.0.workspace_id()
    }
}

impl<P: ScopedPath, W: Credentials> WorkspaceRule for SelfOrOperator<P, W> {
    fn workspace_id(&self) -> WorkspaceId {
        self.0.workspace_id()
    }
}

impl<P: ScopedPath, W: Credentials> WorkspaceRule for WorkspaceItself<P, W> {
    fn workspace_id(&self) -> WorkspaceId {
        self.0.workspace_id()
    }
}

/// A live workspace, or the 404: messages, reports and changes to a
/// removed one are refused.
pub(super) async fn live_workspace(state: &AppState, id: WorkspaceId) -> Result<Workspace> {
    Some(known_workspace(state, id).await?)
        .filter(Workspace::is_live)
        .ok_or_else(Error::workspace_not_found)
}

/// The workspace, removed ones included (their history, memories and
/// secrets stay readable until the sweeper purges them), or the 404.
pub(super) async fn known_workspace(state: &AppState, id: WorkspaceId) -> Result<Workspace> {
    state
        .store
        .get_workspace(id)
        .await?
        .ok_or_else(Error::workspace_not_found)
}

/// The path's workspace row, live, after the rule `A` let the caller at
/// it ([`live_workspace`]'s 404 otherwise). For routes that check
/// nothing else before the row; a route that validates its query or body
/// first calls [`live_workspace`] where it did.
#[derive(Debug, Clone)]
pub(super) struct LiveWorkspace<A = SelfOrOperator> {
    /// The row.
    pub row: Workspace,
    /// The rule that let the caller at it, with the path it parsed.
    pub rule: A,
}

impl<A: WorkspaceRule> FromRequestParts<AppState> for LiveWorkspace<A> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let rule = A::from_request_parts(parts, state).await?;
        let row = live_workspace(state, rule.workspace_id()).await?;
        Ok(LiveWorkspace { row, rule })
    }
}

/// The path's workspace row, removed ones included, after the rule `A`
/// ([`known_workspace`]'s 404 otherwise).
#[derive(Debug, Clone)]
pub(super) struct KnownWorkspace<A = SelfOrOperator> {
    /// The row.
    pub row: Workspace,
    /// The rule that let the caller at it, with the path it parsed.
    pub rule: A,
}

impl<A: WorkspaceRule> FromRequestParts<AppState> for KnownWorkspace<A> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let rule = A::from_request_parts(parts, state).await?;
        let row = known_workspace(state, rule.workspace_id()).await?;
        Ok(KnownWorkspace { row, rule })
    }
}

/// `GET /workspaces/:id/state`: the operator, the workspace itself, or the
/// workspace's own token revoked by its deletion, which may still learn
/// that its workspace is gone (so the SDK exits instead of retrying a
/// 401). The path is parsed before the token, as that route always did.
#[derive(Debug, Clone, Copy)]
pub(super) struct SelfOrOperatorEvenRemoved(pub WorkspaceId);

impl FromRequestParts<AppState> for SelfOrOperatorEvenRemoved {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let WorkspacePath(id) = WorkspacePath::from_request_parts(parts, state).await?;
        // A header that is not a bearer token is the 401 of no token.
        let token = super::auth::bearer(parts)
            .ok()
            .flatten()
            .ok_or(Error::Unauthorized)?;
        match Principal::resolve(state, parts, &token).await {
            Ok((principal, _)) => require_access(principal, id)?,
            Err(Error::Unauthorized) => {
                if state
                    .store
                    .removed_workspace_for_token(token.hash())
                    .await?
                    != Some(id)
                {
                    return Err(Error::Unauthorized);
                }
            }
            Err(e) => return Err(e),
        }
        Ok(SelfOrOperatorEvenRemoved(id))
    }
}

impl WorkspaceRule for SelfOrOperatorEvenRemoved {
    fn workspace_id(&self) -> WorkspaceId {
        self.0
    }
}

/// A JSON body that names the workspace it is about (the `/registry`
/// routes carry the id in the body, not the path).
pub(super) trait NamesWorkspace {
    /// The workspace named, or the 400 of a malformed id.
    fn workspace_id(&self) -> Result<WorkspaceId>;
}

/// Credentials that may be absent: `None` is an anonymous caller.
pub(super) trait MaybeCredentials:
    FromRequestParts<AppState, Rejection = Error> + Send
{
    /// Who presented the token, if anyone did.
    fn principal(&self) -> Option<Principal>;
}

impl MaybeCredentials for Principal {
    fn principal(&self) -> Option<Principal> {
        Some(*self)
    }
}

impl MaybeCredentials for MaybePrincipal {
    fn principal(&self) -> Option<Principal> {
        self.0
    }
}

/// The JSON body `T`, the workspace it names, and the credentials `W`:
/// the operator or that workspace. With `W` = [`MaybePrincipal`] an
/// anonymous caller is let through too (`/registry/register` bootstraps
/// a workspace that has no token yet). Order: token (401), body (400,
/// 413, 415), the named id (400), the rule (401).
pub(super) struct SelfOrOperatorBody<T, W = Principal>(pub T, pub WorkspaceId, pub W);

impl<T, W> FromRequest<AppState> for SelfOrOperatorBody<T, W>
where
    T: DeserializeOwned + NamesWorkspace + Send,
    W: MaybeCredentials,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self> {
        let (mut parts, body) = req.into_parts();
        let who = W::from_request_parts(&mut parts, state).await?;
        let Json(value) = Json::<T>::from_request(Request::from_parts(parts, body), state).await?;
        let id = value.workspace_id()?;
        if let Some(principal) = who.principal() {
            require_access(principal, id)?;
        }
        Ok(SelfOrOperatorBody(value, id, who))
    }
}

/// The headers in which a calling workspace names itself: Molecule's SDK
/// sends `X-Workspace-ID`, molecule's own clients `X-Source-Workspace-Id`.
const CALLER_HEADERS: [&str; 2] = ["X-Workspace-ID", "X-Source-Workspace-Id"];

/// What the caller headers may say when the operator sends them: the one
/// way the routes that read them differ.
pub(super) trait CallerRule: Send {
    /// False: the operator is always itself and its headers are ignored
    /// (`/a2a`, `/registry`: the canvas sends as the operator). True: the
    /// operator may act as a workspace it names (`/delegate`: the CLI
    /// delegates on a workspace's behalf); `operator` or no header is the
    /// operator itself, a malformed id 400, an unknown workspace 404.
    const OPERATOR_ACTS_AS_NAMED: bool;
}

/// The peer routes' rule: the operator is always itself.
#[derive(Debug, Clone, Copy)]
pub(super) struct AsPeer;

impl CallerRule for AsPeer {
    const OPERATOR_ACTS_AS_NAMED: bool = false;
}

/// `/delegate`'s rule: the operator may delegate as a named workspace.
#[derive(Debug, Clone, Copy)]
pub(super) struct OnBehalf;

impl CallerRule for OnBehalf {
    const OPERATOR_ACTS_AS_NAMED: bool = true;
}

/// The calling workspace: for a workspace token the token's own (every
/// caller header present must name it, else 401 as for a bad token);
/// for the operator as the rule `R` says. Any token may call; what it may
/// reach is the route's business (the communication rule). Carries the
/// route's parsed path `P`, parsed after the token and before the headers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Calling<R = AsPeer, P = ()> {
    /// Who calls.
    pub caller: Caller,
    /// Whose token it is (the operator acting as a named workspace is
    /// still the operator: the audit trail's actor).
    pub principal: Principal,
    /// The route's path.
    pub path: P,
    rule: PhantomData<R>,
}

impl<R, P> FromRequestParts<AppState> for Calling<R, P>
where
    R: CallerRule,
    P: FromRequestParts<AppState> + Send,
    Error: From<P::Rejection>,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let (path, principal) = token_then_path::<P, Principal>(parts, state).await?;
        let caller = match principal {
            Principal::Workspace(own) => {
                for (_, named) in named_callers(&parts.headers) {
                    if named.and_then(|v| v.parse::<WorkspaceId>().ok()) != Some(own) {
                        return Err(Error::Unauthorized);
                    }
                }
                Caller::Workspace(own)
            }
            Principal::Operator if R::OPERATOR_ACTS_AS_NAMED => {
                operator_as_named(state, &parts.headers).await?
            }
            Principal::Operator => Caller::Operator,
        };
        Ok(Calling {
            caller,
            principal,
            path,
            rule: PhantomData,
        })
    }
}

/// Every caller header value present, trimmed, with its header's name;
/// `None` for a value that is not text.
fn named_callers(headers: &HeaderMap) -> impl Iterator<Item = (&'static str, Option<&str>)> {
    CALLER_HEADERS.into_iter().flat_map(move |name| {
        headers
            .get_all(name)
            .into_iter()
            .map(move |v| (name, v.to_str().ok().map(str::trim)))
    })
}

/// The caller the operator names; every header present must agree.
async fn operator_as_named(state: &AppState, headers: &HeaderMap) -> Result<Caller> {
    let mut named: Option<Caller> = None;
    for (name, value) in named_callers(headers) {
        let caller = match value.unwrap_or("") {
            "operator" => Caller::Operator,
            raw => Caller::Workspace(
                raw.parse()
                    .map_err(|e: domain::IdError| Error::BadRequest(format!("{name}: {e}")))?,
            ),
        };
        if named.is_some_and(|n| n != caller) {
            return Err(Error::BadRequest(format!(
                "the caller headers ({}) name different callers",
                CALLER_HEADERS.join(", ")
            )));
        }
        named = Some(caller);
    }
    if let Some(Caller::Workspace(id)) = named {
        match known_workspace(state, id).await {
            Ok(_) => {}
            Err(Error::NotFound(_)) => {
                return Err(Error::NotFound(
                    "the calling workspace does not exist".into(),
                ))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(named.unwrap_or(Caller::Operator))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rule against every kind of caller: the statuses the routes
    /// have always answered with.
    #[test]
    fn each_rule_answers_each_caller_as_before() {
        let (own, other) = (WorkspaceId::new(), WorkspaceId::new());
        let status = |r: Result<()>| r.err().map(|e| e.status_code().as_u16());
        let callers = [
            ("operator", Principal::Operator),
            ("itself", Principal::Workspace(own)),
            ("another workspace", Principal::Workspace(other)),
        ];
        let want = [
            (None, None, Some(403)),
            (Some(403), None, None),
            (Some(403), Some(401), Some(401)),
        ];
        // Named, not called, here: the extractors are the only callers.
        let operator: fn(Principal) -> Result<()> = require_operator;
        let access: fn(Principal, WorkspaceId) -> Result<()> = require_access;
        let itself: fn(Principal, WorkspaceId) -> Result<()> = require_workspace_itself;
        for ((who, p), want) in callers.into_iter().zip(want) {
            let got = (
                status(operator(p)),
                status(access(p, own)),
                status(itself(p, own)),
            );
            assert_eq!(got, want, "operator, access and itself rules for {who}");
        }
    }

    #[test]
    fn every_caller_header_value_is_read_trimmed() {
        let mut headers = HeaderMap::new();
        headers.append("x-workspace-id", " a ".parse().unwrap());
        headers.append("x-workspace-id", "b".parse().unwrap());
        headers.append("x-source-workspace-id", "c".parse().unwrap());
        headers.append(
            "x-source-workspace-id",
            axum::http::HeaderValue::from_bytes(b"\xff").unwrap(),
        );
        let named: Vec<_> = named_callers(&headers).collect();
        assert_eq!(
            named,
            [
                ("X-Workspace-ID", Some("a")),
                ("X-Workspace-ID", Some("b")),
                ("X-Source-Workspace-Id", Some("c")),
                ("X-Source-Workspace-Id", None),
            ]
        );
    }
}
