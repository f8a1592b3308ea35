//! A2A: every workspace an A2A agent. Its Agent Card (at the well-known
//! path under its A2A base URL and at `/workspaces/:id/agent-card`), the
//! server's card, the catalog of the cards a caller may reach (`/agents`),
//! `POST /registry/update-card`, and the JSON-RPC methods of
//! `POST /workspaces/:id/a2a` (which `messages` hands over to [`rpc`] when
//! a request speaks A2A rather than Molecule's bare `message/send`).
//!
//! A task sent to a poll (or paused) workspace is a delegation: one ledger
//! row, the callee's `delegate` inbox row and its `a2a_tasks` row, written
//! together; task id = delegation id. The agent answers it as any
//! delegation (`molecule connect` reports the outcome), which completes the
//! task with the answer as its `result` artifact.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::{self, error::RecvError};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{live_workspace, AsPeer, Calling, NamesWorkspace, SelfOrOperatorBody};
use super::auth::{node_of, require_reach, Session};
use super::extract::WorkspacePath;
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::a2a::jsonrpc::{self, Method, RpcError};
use crate::a2a::tasks::{self, TaskState};
use crate::a2a::{card, Dialect};
use crate::domain::inbox::{self, Delegate, InboxItem, InboxRow};
use crate::domain::{self, Caller, DelegationId, DeliveryMode, WorkspaceId};
use crate::events::Event;
use crate::store::{
    A2aTask, A2aTaskFilter, Canceled, Delegated, NewDelegation, UpdateWorkspace, Workspace,
};

/// How long a blocking `SendMessage` waits for the task to end before
/// answering with the task as it is.
pub(super) const BLOCKING_WAIT: Duration = Duration::from_secs(30);
/// Largest `pageSize` of `ListTasks` (and its default).
const MAX_PAGE: i64 = 100;
/// The `method` of the inbox row telling an agent its task was canceled.
pub(crate) const TASK_CANCELED: &str = "task_canceled";

/// The A2A endpoint of a workspace.
fn endpoint(state: &AppState, id: WorkspaceId) -> String {
    format!(
        "{}/workspaces/{id}/a2a",
        state.public_url.trim_end_matches('/')
    )
}

/// A live workspace the caller may reach (the communication rule); a
/// caller whose own row is gone is answered like a revoked token.
async fn reachable(state: &AppState, caller: Caller, id: WorkspaceId) -> Result<Workspace> {
    let target = live_workspace(state, id).await?;
    if let Caller::Workspace(own) = caller {
        let me = match live_workspace(state, own).await {
            Ok(me) => me,
            Err(Error::NotFound(_)) => return Err(Error::Unauthorized),
            Err(e) => return Err(e),
        };
        let from = domain::team::Caller::Workspace(node_of(state, &me).await?);
        require_reach(&from, &node_of(state, &target).await?)?;
    }
    Ok(target)
}

/// The Agent Card of a workspace, where A2A clients look for it (under the
/// workspace's A2A base URL). Any token whose holder may reach the
/// workspace.
#[utoipa::path(get, path = "/workspaces/{id}/.well-known/agent-card.json", tag = "a2a",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, description = "the A2A Agent Card", body = Object), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn well_known_card(
    State(state): State<AppState>,
    calling: Calling<AsPeer, WorkspacePath>,
) -> Result<Json<Value>> {
    workspace_card(&state, calling).await
}

/// The Agent Card of a workspace (the same document as the well-known one).
#[utoipa::path(get, path = "/workspaces/{id}/agent-card", tag = "a2a",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, description = "the A2A Agent Card", body = Object), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_card(
    State(state): State<AppState>,
    calling: Calling<AsPeer, WorkspacePath>,
) -> Result<Json<Value>> {
    workspace_card(&state, calling).await
}

async fn workspace_card(
    state: &AppState,
    calling: Calling<AsPeer, WorkspacePath>,
) -> Result<Json<Value>> {
    let WorkspacePath(id) = calling.path;
    let w = reachable(state, calling.caller, id).await?;
    Ok(Json(card::workspace_card(&w, &endpoint(state, id))))
}

/// The server's own card (no token needed): it names the catalog.
#[utoipa::path(get, path = "/.well-known/agent-card.json", tag = "a2a", security(()),
    responses((status = 200, description = "the server's A2A Agent Card", body = Object)))]
pub(super) async fn server_card(State(state): State<AppState>) -> Json<Value> {
    Json(card::server_card(state.public_url.trim_end_matches('/')))
}

/// The catalog: the cards of every live workspace the caller may reach
/// (all of them for the operator), by name.
#[utoipa::path(get, path = "/agents", tag = "a2a",
    responses((status = 200, description = "`{agents: [card]}`", body = Object), (status = 401, body = ErrorBody)))]
pub(super) async fn catalog(
    State(state): State<AppState>,
    Calling { caller, .. }: Calling<AsPeer>,
) -> Result<Json<Value>> {
    let all = state.store.list_workspaces().await?;
    let tree = domain::team::Tree::new(all.iter().map(|w| (w.id, w.parent_id)));
    let from = match caller {
        Caller::Workspace(own) => match live_workspace(&state, own).await {
            Ok(me) => domain::team::Caller::Workspace(tree.node(me.id)),
            Err(Error::NotFound(_)) => return Err(Error::Unauthorized),
            Err(e) => return Err(e),
        },
        _ => domain::team::Caller::Operator,
    };
    let mut agents: Vec<Value> = all
        .iter()
        .filter(|w| domain::team::may_reach(&from, &tree.node(w.id)))
        .map(|w| card::workspace_card(w, &endpoint(&state, w.id)))
        .collect();
    // By the name shown, then the endpoint: a stable order.
    agents.sort_by(|a, b| {
        let key = |c: &Value| {
            (
                c["name"].to_string(),
                c["supportedInterfaces"][0]["url"].to_string(),
            )
        };
        key(a).cmp(&key(b))
    });
    Ok(Json(json!({ "agents": agents })))
}

/// `POST /registry/update-card` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct UpdateCard {
    /// The workspace id.
    pub workspace_id: String,
    /// The agent's card (a JSON object): its name, description, version
    /// and skills show in the served card.
    #[schema(value_type = Object)]
    pub agent_card: Value,
}

impl NamesWorkspace for UpdateCard {
    fn workspace_id(&self) -> Result<WorkspaceId> {
        self.workspace_id
            .parse()
            .map_err(|e: domain::IdError| Error::BadRequest(format!("workspace_id: {e}")))
    }
}

/// An agent replaces the card it registered; answers the card as served.
#[utoipa::path(post, path = "/registry/update-card", tag = "a2a",
    request_body = UpdateCard,
    responses((status = 200, description = "the served Agent Card", body = Object), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn update_card(
    State(state): State<AppState>,
    SelfOrOperatorBody(body, id, _): SelfOrOperatorBody<UpdateCard>,
) -> Result<Json<Value>> {
    if !body.agent_card.is_object() {
        return Err(Error::BadRequest(
            "`agent_card` must be a JSON object".into(),
        ));
    }
    live_workspace(&state, id).await?;
    let update = UpdateWorkspace {
        agent_card: Some(body.agent_card),
        ..Default::default()
    };
    let w = state
        .store
        .update_workspace(id, &update, domain::now())
        .await?
        .ok_or_else(Error::workspace_not_found)?;
    Ok(Json(card::workspace_card(&w, &endpoint(&state, id))))
}

/// True when a request to `/a2a` speaks A2A: it carries `A2A-Version`, or
/// names an A2A method other than 0.3's `message/send` (which without the
/// header stays Molecule's canvas/SDK form, answered `{queued}` as before).
pub(super) fn is_a2a(headers: &HeaderMap, body: &Value) -> bool {
    headers.contains_key("a2a-version")
        || body
            .get("method")
            .and_then(Value::as_str)
            .and_then(Method::parse)
            .is_some_and(|(m, d)| !(m == Method::SendMessage && d == Dialect::V03))
}

/// Answers one A2A JSON-RPC request to workspace `id` from `caller`
/// (already known to reach it). Always 200 with a JSON-RPC envelope, but
/// for a push workspace's own answer.
pub(super) async fn rpc(
    state: &AppState,
    caller: Caller,
    session: Session,
    id: WorkspaceId,
    headers: &HeaderMap,
    body: Value,
) -> Result<Response> {
    let rpc_id = body.get("id").cloned().unwrap_or(Value::Null);
    let version = headers.get("a2a-version").and_then(|v| v.to_str().ok());
    let outcome = match jsonrpc::check_version(version).and_then(|()| request(&body)) {
        Ok((method, dialect, params)) => {
            let call = Call {
                state,
                caller,
                session,
                id,
                dialect,
                trace: super::traces::incoming(headers),
            };
            match call.run(method, &body, params).await? {
                Answer::Result(r) => Ok(r),
                Answer::Error(e) => Err(e),
                Answer::Raw(r) => return Ok(r),
            }
        }
        Err(e) => Err(e),
    };
    Ok(axum::Json(jsonrpc::envelope(&rpc_id, outcome)).into_response())
}

/// The method, dialect and params of a JSON-RPC 2.0 request.
fn request(body: &Value) -> std::result::Result<(Method, Dialect, Value), RpcError> {
    if body.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(RpcError::invalid_request(
            "not a JSON-RPC 2.0 request (`jsonrpc` must be \"2.0\")",
        ));
    }
    let Some(name) = body.get("method").and_then(Value::as_str) else {
        return Err(RpcError::invalid_request("`method` must be a string"));
    };
    let (method, dialect) = Method::parse(name)
        .ok_or_else(|| RpcError::method_not_found(format!("no A2A method {name:?}")))?;
    let params = match body.get("params") {
        None | Some(Value::Null) => json!({}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => return Err(RpcError::invalid_params("`params` must be an object")),
    };
    Ok((method, dialect, params))
}

/// What a method answers.
enum Answer {
    /// A JSON-RPC result.
    Result(Value),
    /// A JSON-RPC error.
    Error(RpcError),
    /// A response of its own: a push workspace's answer passed through,
    /// or a task's event stream.
    Raw(Response),
}

impl From<std::result::Result<Value, RpcError>> for Answer {
    fn from(r: std::result::Result<Value, RpcError>) -> Self {
        match r {
            Ok(v) => Answer::Result(v),
            Err(e) => Answer::Error(e),
        }
    }
}

/// One request being answered.
pub(super) struct Call<'a> {
    pub(super) state: &'a AppState,
    pub(super) caller: Caller,
    /// The caller's token: a stream answered ends when it is revoked.
    pub(super) session: Session,
    pub(super) id: WorkspaceId,
    pub(super) dialect: Dialect,
    /// The caller's `traceparent`, for the task's span.
    pub(super) trace: Option<domain::TraceParent>,
}

impl Call<'_> {
    async fn run(&self, method: Method, body: &Value, params: Value) -> Result<Answer> {
        match method {
            Method::SendMessage => self.send(body, &params, false).await,
            Method::SendStreamingMessage => self.send(body, &params, true).await,
            Method::SubscribeToTask => self.subscribe(body, &params).await,
            Method::GetTask => Ok(self.get(&params).await?.into()),
            Method::ListTasks => Ok(self.list(&params).await?.into()),
            Method::CancelTask => Ok(self.cancel(&params).await?.into()),
            Method::GetExtendedAgentCard => {
                let w = live_workspace(self.state, self.id).await?;
                Ok(Answer::Result(card::workspace_card(
                    &w,
                    &endpoint(self.state, self.id),
                )))
            }
            Method::PushConfig(op) => Ok(self.push_config(op, &params).await?.into()),
        }
    }

    /// The task `params.id` names, if the caller may see it (its caller
    /// or its callee): else TaskNotFound, whether or not it exists.
    pub(super) async fn task(
        &self,
        params: &Value,
        key: &str,
    ) -> Result<std::result::Result<A2aTask, RpcError>> {
        let Some(raw) = params.get(key).and_then(Value::as_str) else {
            return Ok(Err(RpcError::invalid_params(format!(
                "`params.{key}` must be a task id"
            ))));
        };
        let Ok(tid) = raw.parse::<DelegationId>() else {
            return Ok(Err(RpcError::task_not_found()));
        };
        match self.state.store.get_a2a_task(self.id, tid).await? {
            Some(t) if self.may_see(&t) => Ok(Ok(t)),
            _ => Ok(Err(RpcError::task_not_found())),
        }
    }

    fn may_see(&self, t: &A2aTask) -> bool {
        t.delegation.caller == self.caller
            || self.caller == Caller::Workspace(t.delegation.callee_id)
    }

    async fn get(&self, params: &Value) -> Result<std::result::Result<Value, RpcError>> {
        Ok(self
            .task(params, "id")
            .await?
            .map(|t| tasks::task_json(&t, self.dialect)))
    }

    /// `SubscribeToTask`: the stream of a task that is not over (one that
    /// is over has nothing more to stream: `GetTask` reads it).
    async fn subscribe(&self, body: &Value, params: &Value) -> Result<Answer> {
        // Subscribed before the task is read, so no move is missed.
        let events = self.state.bus.subscribe();
        let task = match self.task(params, "id").await? {
            Ok(t) => t,
            Err(e) => return Ok(Answer::Error(e)),
        };
        let state = TaskState::of(&task);
        if state.is_terminal() {
            return Ok(Answer::Error(RpcError::unsupported(format!(
                "the task is over ({}): GetTask reads its final state",
                state.name(self.dialect)
            ))));
        }
        let rpc_id = body.get("id").cloned().unwrap_or(Value::Null);
        Ok(Answer::Raw(super::a2a_stream::respond(
            self.state,
            self.session,
            rpc_id,
            self.dialect,
            task,
            events,
        )))
    }

    /// `SendMessage` (or, `stream`ing, `SendStreamingMessage`).
    async fn send(&self, body: &Value, params: &Value, stream: bool) -> Result<Answer> {
        let msg = match tasks::incoming(params) {
            Ok(m) => m,
            Err(e) => return Ok(Answer::Error(e)),
        };
        let workspace = live_workspace(self.state, self.id).await?;
        if let (DeliveryMode::Push, Some(url), None) = (
            workspace.delivery_mode,
            workspace.url.as_deref(),
            workspace.paused_at,
        ) {
            if stream {
                return Ok(Answer::Error(RpcError::unsupported(
                    "streaming from an agent that answers over push is not supported: use SendMessage",
                )));
            }
            return Ok(Answer::Raw(
                forward(self.state, self.id, url, body, self.trace).await?,
            ));
        }
        if let Some(tid) = &msg.task_id {
            let known = self.task(&json!({ "id": tid }), "id").await?;
            return Ok(Answer::Error(match known {
                Ok(_) => RpcError::unsupported(
                    "a follow-up message to a task is not supported: send a new message",
                ),
                Err(e) => e,
            }));
        }
        if self.caller == Caller::Workspace(self.id) {
            return Ok(Answer::Error(RpcError::invalid_params(
                "a workspace cannot send a task to itself",
            )));
        }
        if msg.text.len() > super::delegations::MAX_TASK_BYTES {
            return Ok(Answer::Error(RpcError::invalid_params(format!(
                "the message is over {} bytes",
                super::delegations::MAX_TASK_BYTES
            ))));
        }
        let push = match crate::a2a::push::inline_config(
            params,
            self.dialect,
            self.state.config.allow_private_urls,
        ) {
            Ok(p) => p,
            Err(e) => return Ok(Answer::Error(e)),
        };
        let immediate = returns_immediately(params);
        // Subscribed before the task exists, so no move is missed.
        let mut events = self.state.bus.subscribe();
        let task = match self.create(&msg, push.as_ref()).await? {
            Ok(t) => t,
            Err(e) => return Ok(Answer::Error(e)),
        };
        if stream {
            let rpc_id = body.get("id").cloned().unwrap_or(Value::Null);
            return Ok(Answer::Raw(super::a2a_stream::respond(
                self.state,
                self.session,
                rpc_id,
                self.dialect,
                task,
                events,
            )));
        }
        let tid = task.delegation.id;
        if !immediate && !TaskState::of(&task).is_interrupted() {
            tokio::select! {
                _ = self.interrupted(&mut events, tid) => {}
                _ = tokio::time::sleep(BLOCKING_WAIT) => {}
                _ = self.state.shutdown.cancelled() => {}
            }
        }
        let task = self
            .state
            .store
            .get_a2a_task(self.id, tid)
            .await?
            .unwrap_or(task);
        let json = tasks::task_json(&task, self.dialect);
        Ok(Answer::Result(match self.dialect {
            Dialect::V1 => json!({ "task": json }),
            Dialect::V03 => json,
        }))
    }

    /// Returns once task `tid` ends, or is interrupted: its agent asked
    /// for an approval naming it (A2A's blocking send waits for either).
    async fn interrupted(&self, events: &mut broadcast::Receiver<Event>, tid: DelegationId) {
        loop {
            match events.recv().await {
                Ok(Event::Delegation(m)) if m.delegation_id == tid && m.status.is_terminal() => {
                    return
                }
                Ok(Event::Approval(m)) if m.workspace_id == self.id => {
                    if let Ok(Some(t)) = self.state.store.get_a2a_task(self.id, tid).await {
                        if TaskState::of(&t).is_interrupted() {
                            return;
                        }
                    }
                }
                Err(RecvError::Closed) => return,
                _ => {}
            }
        }
    }

    /// The task a message makes: a new one, or the one a repeat of its
    /// messageId by the same caller made.
    async fn create(
        &self,
        msg: &tasks::Incoming,
        push: Option<&crate::store::PushConfig>,
    ) -> Result<std::result::Result<A2aTask, RpcError>> {
        let new = NewDelegation {
            id: DelegationId::new(),
            caller: self.caller,
            callee_id: self.id,
            task: msg.text.clone(),
            idempotency_key: format!("a2a:{}", msg.message_id),
            deadline_at: None,
            trace: domain::Hop::open(self.trace),
        };
        let context = msg.context_id.clone().unwrap_or_else(|| new.id.to_string());
        let row = InboxItem::Delegate(Delegate {
            delegation_id: new.id,
            caller: self.caller,
            callee: self.id,
            task: new.task.clone(),
            deadline: None,
            idempotency_key: new.idempotency_key.clone(),
            traceparent: Some(new.trace.context),
        })
        .row();
        let now = domain::now();
        let created = self
            .state
            .store
            .create_a2a_task(&new, &row, &context, &msg.message_id, push, now)
            .await?;
        let tid = match created {
            Delegated::Created { delegation, inbox } => {
                crate::ledger::announce_created(
                    &self.state.bus,
                    &self.state.metrics,
                    &delegation,
                    &inbox,
                )
                .await;
                let actor = super::delegations::actor_of(self.caller);
                super::delegations::audit_created(self.state, actor, &delegation).await;
                delegation.id
            }
            Delegated::Existing(d) => d.id,
            Delegated::CalleeGone => return Err(Error::workspace_not_found()),
        };
        match self.state.store.get_a2a_task(self.id, tid).await? {
            Some(t) => Ok(Ok(t)),
            // The messageId was used before, for another agent or outside A2A.
            None => Ok(Err(RpcError::invalid_params(
                "this messageId was already used for another task: send a new messageId",
            ))),
        }
    }

    async fn list(&self, params: &Value) -> Result<std::result::Result<Value, RpcError>> {
        let filter = match self.list_filter(params) {
            Ok(f) => f,
            Err(e) => return Ok(Err(e)),
        };
        let page = filter.limit - 1;
        let (mut found, total) = self.state.store.list_a2a_tasks(&filter).await?;
        let more = found.len() as i64 > page;
        found.truncate(page as usize);
        let next = match (more, found.last()) {
            (true, Some(last)) => last.delegation.id.to_string(),
            _ => String::new(),
        };
        let list: Vec<Value> = found
            .iter()
            .map(|t| tasks::task_json(t, self.dialect))
            .collect();
        Ok(Ok(
            json!({"tasks": list, "nextPageToken": next, "pageSize": page, "totalSize": total}),
        ))
    }

    /// ListTasks' params as a store filter (its limit one over the page,
    /// to learn whether another page follows).
    fn list_filter(&self, params: &Value) -> std::result::Result<A2aTaskFilter, RpcError> {
        let page = match params.get("pageSize") {
            None | Some(Value::Null) => MAX_PAGE,
            Some(v) => match v.as_i64() {
                Some(0) => MAX_PAGE,
                Some(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => {
                    return Err(RpcError::invalid_params(format!(
                        "`pageSize` must be 1 to {MAX_PAGE}"
                    )))
                }
            },
        };
        let (statuses, canceled, awaiting_approval) =
            match params.get("status").and_then(Value::as_str) {
                None | Some("") | Some("TASK_STATE_UNSPECIFIED") => (Vec::new(), None, None),
                Some(name) => TaskState::parse(name)
                    .ok_or_else(|| {
                        RpcError::invalid_params(format!("no task is ever in state {name:?} here"))
                    })?
                    .ledger(),
            };
        let after = match params.get("pageToken").and_then(Value::as_str) {
            None | Some("") => None,
            Some(t) => Some(t.parse().map_err(|_| {
                RpcError::invalid_params("`pageToken` is not one this server gave")
            })?),
        };
        Ok(A2aTaskFilter {
            callee: self.id,
            // The agent itself sees every task sent to it; anyone else its own.
            caller: (self.caller != Caller::Workspace(self.id)).then_some(self.caller),
            context_id: params
                .get("contextId")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
            statuses,
            canceled,
            awaiting_approval,
            after,
            limit: page + 1,
        })
    }

    async fn cancel(&self, params: &Value) -> Result<std::result::Result<Value, RpcError>> {
        let task = match self.task(params, "id").await? {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let d = &task.delegation;
        let notice = InboxItem::Other(InboxRow {
            activity_type: inbox::INBOX_TYPE.into(),
            method: Some(TASK_CANCELED.into()),
            source_id: self.caller.workspace().map(|w| w.to_string()),
            target_id: Some(self.id.to_string()),
            summary: Some(format!("task canceled: {}", tasks::summary(&d.task))),
            request_body: None,
            response_body: None,
            status: None,
            error_detail: None,
            data: Some(json!({"task_id": d.id.to_string(), "delegation_id": d.id.to_string()})),
        })
        .row();
        let state = self.state;
        match state
            .store
            .cancel_a2a_task(self.id, d.id, &notice, domain::now())
            .await?
        {
            Canceled::Applied { moved, notice } => {
                crate::ledger::announce_move(&state.bus, &state.metrics, &moved).await;
                state
                    .bus
                    .publish(Event::Activity {
                        workspace_id: notice.workspace_id,
                        id: notice.id,
                    })
                    .await;
            }
            Canceled::Over(t) => {
                return Ok(Err(RpcError::task_not_cancelable(
                    TaskState::of(&t).name(self.dialect),
                )))
            }
            Canceled::NotFound => return Ok(Err(RpcError::task_not_found())),
        }
        self.get(params).await
    }
}

/// True when a send asks not to wait for the task to end
/// (`returnImmediately`, or 0.3's `blocking: false`).
fn returns_immediately(params: &Value) -> bool {
    let config = params.get("configuration");
    config
        .and_then(|c| c.get("returnImmediately"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
        || config
            .and_then(|c| c.get("blocking"))
            .and_then(Value::as_bool)
            == Some(false)
}

/// Hands an A2A request to a push workspace and passes its answer back;
/// the server does not keep the task (the agent does).
async fn forward(
    state: &AppState,
    id: WorkspaceId,
    url: &str,
    body: &Value,
    trace: Option<domain::TraceParent>,
) -> Result<Response> {
    // The caller's context carried on (the agent keeps this task, so the
    // server opens no span of its own here).
    let trace = trace.unwrap_or_else(domain::TraceParent::start);
    let answer = state
        .http
        .post(url)
        .header(domain::trace::TRACEPARENT, trace.header())
        .timeout(state.config.forward_timeout)
        .json(body)
        .send()
        .await;
    let answer = match answer {
        Ok(r) if r.status().is_success() => r.json::<Value>().await.map_err(|e| e.to_string()),
        Ok(r) => Err(format!("the workspace answered {}", r.status())),
        Err(e) => Err(e.without_url().to_string()),
    };
    match answer {
        Ok(answer) => {
            super::usage::account_answer(state, id, &answer).await;
            Ok(axum::Json(answer).into_response())
        }
        Err(cause) => {
            tracing::warn!(workspace_id = %id, error = %cause, "forwarding an A2A request to a push workspace failed");
            Err(Error::BadGateway(format!(
                "could not deliver the message to the workspace: {cause}"
            )))
        }
    }
}

/// The routes of this resource, with their OpenAPI operations (the
/// JSON-RPC endpoint itself is `messages`' `/workspaces/:id/a2a`).
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(well_known_card))
        .routes(routes!(get_card))
        .routes(routes!(server_card))
        .routes(routes!(catalog))
        .routes(routes!(update_card))
}
