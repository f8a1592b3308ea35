//! The ten platform tools of Molecule's MCP server, with Molecule's names
//! and argument names so its docs and prompts keep working, served through
//! the official Rust SDK (`rmcp`) as one [`ServerHandler`]. Every tool is a
//! thin call into the code behind the matching HTTP route (peers, the
//! delegation ledger, memory, `/notify`, approvals), acting as the workspace
//! whose own token the request carried: there is no second copy of any rule.
//! A client that declares the Tasks extension gets `delegate_task` and
//! `request_approval` as tasks ([`super::tasks`]).
//!
//! Errors, by whose problem they are: arguments that do not fit the tool's
//! JSON Schema (missing, mistyped or unknown fields) and unknown tools are
//! JSON-RPC `-32602`; a refusal of a well-formed call (an empty task, a peer
//! out of reach, a GLOBAL memory from a non-root) is a tool result with
//! `isError`, so the model reads the reason and can correct itself; a
//! server fault is `-32603` without its internals.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock,
    ErrorData, Extensions, GetTaskParams, GetTaskResult, Implementation, JsonObject,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations, UpdateTaskParams,
};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::super::auth::Principal;
use super::super::delegations::{delegate, DelegationCreated, NewDelegationRequest};
use super::super::memories::{commit, recall, CommitMemory, RecallParams};
use super::super::messages::{notify, Notify};
use super::super::peers::peers_of;
use super::super::{AppState, Error};
use super::{approvals, tasks};
use crate::domain::{self, Caller, DelegationId, WorkspaceId};
use crate::events::Event;
use crate::store::Delegation;

/// How long `delegate_task` waits for the callee's answer (Molecule's bound).
pub(crate) const SYNC_WAIT: Duration = Duration::from_secs(30);

/// Who a tool call acts as: the server and the workspace that the request's
/// token and path were checked against.
#[derive(Clone)]
pub(crate) struct Bound {
    /// The server.
    pub state: AppState,
    /// The calling workspace (the token's own, equal to the path's `:id`).
    pub workspace: WorkspaceId,
    /// Whether this request read the workspace's row, live, just before the
    /// call (Streamable HTTP: each request's access rule does), so a tool
    /// need not read it again; a legacy SSE session was checked only when
    /// its stream opened.
    pub checked_live: bool,
}

/// The MCP server of one workspace. For Streamable HTTP it is built once
/// and reads [`Bound`] from each request (the route put it in the request's
/// extensions, which the SDK hands over as `http::request::Parts`); for a
/// legacy SSE session it is bound when the stream opens.
#[derive(Clone, Default)]
pub(crate) struct MoleculeMcp {
    bound: Option<Bound>,
}

impl MoleculeMcp {
    /// A server bound to one workspace for a whole session.
    pub(crate) fn bound_to(bound: Bound) -> Self {
        Self { bound: Some(bound) }
    }

    fn bound(&self, ext: &Extensions) -> Result<Bound, ErrorData> {
        if let Some(b) = &self.bound {
            return Ok(b.clone());
        }
        ext.get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Bound>())
            .cloned()
            .ok_or_else(|| {
                tracing::error!("BUG: an MCP request reached the tools without a bound workspace");
                ErrorData::internal_error("the server failed to handle this request", None)
            })
    }
}

impl ServerHandler for MoleculeMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new("molecule", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Molecule workspace tools: list_peers shows who you may reach; delegate_task \
                 hands a task to a peer and waits up to 30 s for its answer (delegate_task_async \
                 returns at once; poll check_task_status with the id); commit_memory and \
                 recall_memory keep facts; send_message_to_user writes to the operator's chat; \
                 request_approval asks a person before a risky action (check_approval reads \
                 the decision).",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let b = self.bound(&context.extensions)?;
        Ok(ListToolsResult::with_all_items(catalog(
            b.state.config.mcp_send_message_to_user,
        )))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let b = self.bound(&context.extensions)?;
        // SEP-414's `_meta.traceparent`, else the HTTP request's header.
        let trace = request
            .meta
            .as_ref()
            .and_then(|m| m.get_traceparent())
            .and_then(crate::domain::TraceParent::parse)
            .or_else(|| {
                let parts = context.extensions.get::<axum::http::request::Parts>()?;
                crate::http::traces::incoming(&parts.headers)
            });
        let args = request.arguments.unwrap_or_default();
        let response = if tasks::wanted(&context) && TASK_TOOLS.contains(&&*request.name) {
            call_as_task(&b, &request.name, args, trace).await?
        } else {
            call(&b, &request.name, args, trace).await?.into()
        };
        let outcome = match &response {
            CallToolResponse::Complete(r) if r.is_error == Some(true) => "error",
            CallToolResponse::Task(_) => "task",
            _ => "ok",
        };
        b.state
            .metrics
            .mcp_tool_calls
            .with_label_values(&[&request.name, outcome])
            .inc();
        Ok(response)
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let b = self.bound(&context.extensions)?;
        tasks::get_task(&b, &request.task_id).await
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let b = self.bound(&context.extensions)?;
        tasks::update_task(&b, &request.task_id).await
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let b = self.bound(&context.extensions)?;
        tasks::cancel_task(&b, &request.task_id).await
    }
}

/// The tools a task-capable client gets as a task: those that wait.
const TASK_TOOLS: [&str; 2] = ["delegate_task", "request_approval"];

/// A [`TASK_TOOLS`] call as a task handle; a refused call (bad arguments
/// aside) is the same `isError` result as without tasks.
async fn call_as_task(
    b: &Bound,
    name: &str,
    raw: JsonObject,
    trace: Option<crate::domain::TraceParent>,
) -> Result<CallToolResponse, ErrorData> {
    let (state, me) = (&b.state, b.workspace);
    let task = if name == "request_approval" {
        let a: approvals::RequestArgs = args(name, raw)?;
        match approvals::create(state, me, a).await {
            Ok((row, _)) => tasks::approval_task(&row)?,
            Err(e) => return answer::<Value>(Err(e)).map(Into::into),
        }
    } else {
        let a: DelegateArgs = args(name, raw)?;
        if a.idempotency_key.is_some() {
            return Err(ErrorData::invalid_params(
                "invalid arguments for tool delegate_task: unknown field `idempotency_key`",
                None,
            ));
        }
        match delegation(state, me, DelegateArgs { trace, ..a }).await {
            Ok(d) => tasks::delegation_state(state, &d).await?,
            Err(e) => return answer::<Value>(Err(e)).map(Into::into),
        }
    };
    Ok(CallToolResponse::Task(tasks::created(task)))
}

/// A tool's name, what it is for and its input schema.
struct ToolSpec {
    name: &'static str,
    description: &'static str,
    schema: fn() -> Value,
    read_only: bool,
}

const TOOLS: [ToolSpec; 10] = [
    ToolSpec {
        name: "list_peers",
        description: "List the workspaces this workspace may reach (its parent, children and \
            siblings), with id, name, role, tier and status (online, offline, paused, …). Use an \
            id from here as `workspace_id` of delegate_task.",
        schema: || json!({"type": "object", "properties": {}, "additionalProperties": false}),
        read_only: true,
    },
    ToolSpec {
        name: "get_workspace_info",
        description: "This workspace itself: id, name, role, tier, runtime, model, parent id \
            (null for a root) and status.",
        schema: || json!({"type": "object", "properties": {}, "additionalProperties": false}),
        read_only: true,
    },
    ToolSpec {
        name: "delegate_task",
        description: "Hand a task to a peer workspace and wait up to 30 seconds for its answer. \
            Returns {task_id, status, result} when the peer finished in time; otherwise \
            {task_id, status, still_running: true}: then poll check_task_status with task_id. \
            The same task to the same peer within one minute is one delegation.",
        schema: delegate_schema,
        read_only: false,
    },
    ToolSpec {
        name: "delegate_task_async",
        description: "Hand a task to a peer workspace and return at once with {task_id, \
            status}; poll check_task_status with task_id for the answer. Idempotent: the same \
            task to the same peer within one minute (or the same idempotency_key) returns the \
            same task_id and delivers nothing new.",
        schema: delegate_async_schema,
        read_only: false,
    },
    ToolSpec {
        name: "check_task_status",
        description: "The state of a delegation this workspace made or received: status \
            (queued, dispatched, in_progress, completed, failed, stuck), result (the start of \
            the answer, when completed), error (when failed), deadline and the age of the \
            callee's last heartbeat in seconds.",
        schema: || {
            json!({"type": "object", "required": ["task_id"], "additionalProperties": false,
                "properties": {"task_id": {"type": "string", "format": "uuid",
                    "description": "the task_id delegate_task or delegate_task_async returned"}}})
        },
        read_only: true,
    },
    ToolSpec {
        name: "send_message_to_user",
        description: "Send a message to the human operator: it appears in this workspace's chat \
            on the Molecule canvas at once. Use it for progress, results and questions meant \
            for the user, not for peers.",
        schema: || {
            json!({"type": "object", "required": ["message"], "additionalProperties": false,
                "properties": {"message": {"type": "string", "minLength": 1,
                    "description": "the text to show the user"}}})
        },
        read_only: false,
    },
    ToolSpec {
        name: "commit_memory",
        description: "Remember a fact. scope LOCAL (default: only this workspace reads it), \
            TEAM (this workspace's team reads it) or GLOBAL (every workspace; only a root \
            workspace may write it). namespace groups memories (default `general`).",
        schema: || {
            json!({"type": "object", "required": ["content"], "additionalProperties": false,
                "properties": {
                    "content": {"type": "string", "minLength": 1, "maxLength": 65536,
                        "description": "the fact, in words a later recall will match"},
                    "scope": {"type": "string", "enum": ["LOCAL", "TEAM", "GLOBAL"],
                        "default": "LOCAL"},
                    "namespace": {"type": "string", "description": "default `general`"}}})
        },
        read_only: false,
    },
    ToolSpec {
        name: "recall_memory",
        description: "Recall memories this workspace may read (its LOCAL ones, its team's TEAM \
            ones, every GLOBAL one), best match first; an empty query lists the newest. Each \
            has id, scope, namespace, content, created_at and score.",
        schema: || {
            json!({"type": "object", "required": ["query"], "additionalProperties": false,
                "properties": {
                    "query": {"type": "string", "description": "words to recall by"},
                    "scope": {"type": "string", "enum": ["LOCAL", "TEAM", "GLOBAL"],
                        "description": "only this scope"}}})
        },
        read_only: true,
    },
    ToolSpec {
        name: "request_approval",
        description: "Ask a person (your parent workspace or the operator) to approve an action \
            before you take it. Returns {approval_id, status: pending|approved|denied, decided_by, \
            note, …}; with wait_s it waits up to that many seconds (at most 30) for the decision. \
            While pending, call check_approval with approval_id. Act only on approved; on denied, \
            read note.",
        schema: approvals::request_schema,
        read_only: false,
    },
    ToolSpec {
        name: "check_approval",
        description: "The state of one of your approval requests: status (pending, approved, \
            denied), decided_by (operator, a workspace id, or expired), note, expires_at. With \
            wait_s it waits up to that many seconds (at most 30) while the request is pending.",
        schema: approvals::check_schema,
        read_only: true,
    },
];

fn delegate_schema() -> Value {
    json!({"type": "object", "required": ["workspace_id", "task"], "additionalProperties": false,
        "properties": {
            "workspace_id": {"type": "string", "format": "uuid",
                "description": "the peer's id, from list_peers"},
            "task": {"type": "string", "minLength": 1, "maxLength": 65536,
                "description": "what the peer should do, self-contained"}}})
}

fn delegate_async_schema() -> Value {
    let mut schema = delegate_schema();
    schema["properties"]["idempotency_key"] = json!({"type": "string", "minLength": 1,
        "maxLength": 200, "description": "optional: one delegation per key"});
    schema
}

/// The tools offered; `send_message_to_user` only when the server allows it.
pub(crate) fn catalog(send_to_user: bool) -> Vec<Tool> {
    TOOLS
        .iter()
        .filter(|t| send_to_user || t.name != "send_message_to_user")
        .map(|t| {
            let Value::Object(schema) = (t.schema)() else {
                unreachable!("BUG: every tool schema is an object")
            };
            Tool::new(t.name, t.description, Arc::new(schema))
                .with_annotations(ToolAnnotations::new().read_only(t.read_only))
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DelegateArgs {
    workspace_id: String,
    task: String,
    #[serde(default)]
    idempotency_key: Option<String>,
    /// The call's trace context (from `_meta` or the request), not an
    /// argument.
    #[serde(skip)]
    trace: Option<crate::domain::TraceParent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusArgs {
    task_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageArgs {
    message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitArgs {
    content: String,
    scope: Option<String>,
    namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecallArgs {
    query: String,
    scope: Option<String>,
}

/// The arguments as `T`, or the `-32602` naming what does not fit.
fn args<T: DeserializeOwned>(tool: &str, raw: JsonObject) -> Result<T, ErrorData> {
    serde_json::from_value(Value::Object(raw)).map_err(|e| {
        ErrorData::invalid_params(format!("invalid arguments for tool {tool}: {e}"), None)
    })
}

/// A well-formed id argument, or the tool error saying it is not one.
fn parse_id<T: std::str::FromStr>(field: &str, raw: &str) -> Result<T, Error> {
    raw.trim()
        .parse()
        .map_err(|_| Error::BadRequest(format!("`{field}` must be a UUID, got {raw:?}")))
}

/// Runs tool `name` for `b`.
async fn call(
    b: &Bound,
    name: &str,
    raw: JsonObject,
    trace: Option<crate::domain::TraceParent>,
) -> Result<CallToolResult, ErrorData> {
    let (state, me) = (&b.state, b.workspace);
    match name {
        "list_peers" => {
            args::<NoArgs>(name, raw)?;
            answer(peers_of(state, me, b.checked_live).await)
        }
        "get_workspace_info" => {
            args::<NoArgs>(name, raw)?;
            answer(workspace_info(state, me).await)
        }
        "delegate_task" | "delegate_task_async" => {
            let a: DelegateArgs = args(name, raw)?;
            if name == "delegate_task" && a.idempotency_key.is_some() {
                return Err(ErrorData::invalid_params(
                    "invalid arguments for tool delegate_task: unknown field `idempotency_key`",
                    None,
                ));
            }
            answer(delegate_tool(state, me, a, name == "delegate_task", trace).await)
        }
        "check_task_status" => {
            let a: StatusArgs = args(name, raw)?;
            answer(task_status(state, me, &a.task_id).await)
        }
        "send_message_to_user" if state.config.mcp_send_message_to_user => {
            let a: MessageArgs = args(name, raw)?;
            let body = Notify {
                message: a.message,
                attachments: Vec::new(),
            };
            answer(message_user(state, me, body).await)
        }
        "commit_memory" => {
            let a: CommitArgs = args(name, raw)?;
            let body = CommitMemory {
                content: a.content,
                scope: a.scope.unwrap_or_else(|| "LOCAL".to_owned()),
                namespace: a.namespace,
            };
            answer(commit(state, me, Principal::Workspace(me), body).await)
        }
        "recall_memory" => {
            let a: RecallArgs = args(name, raw)?;
            let params = RecallParams {
                q: Some(a.query),
                scope: a.scope,
                namespace: None,
                limit: None,
                before: None,
            };
            answer(recall(state, me, params, b.checked_live).await)
        }
        "request_approval" => {
            let a: approvals::RequestArgs = args(name, raw)?;
            answer(approvals::request_tool(state, me, a).await)
        }
        "check_approval" => {
            let a: approvals::CheckArgs = args(name, raw)?;
            answer(approvals::check_tool(state, me, a).await)
        }
        _ => Err(ErrorData::invalid_params(
            format!("Unknown tool: {name}"),
            None,
        )),
    }
}

/// A tool's outcome as MCP content: the value as JSON text; a refusal as
/// an `isError` result with its reason; a server fault as `-32603`.
fn answer<T: Serialize>(outcome: Result<T, Error>) -> Result<CallToolResult, ErrorData> {
    match outcome {
        Ok(value) => {
            let text = serde_json::to_string(&value).map_err(|e| {
                tracing::error!(error = %e, "BUG: a tool result did not serialize");
                ErrorData::internal_error("the server failed to handle this request", None)
            })?;
            Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
        }
        Err(e) if e.status_code().is_server_error() => {
            tracing::error!(error.cause_chain = ?e, "an MCP tool call failed");
            Err(ErrorData::internal_error(e.to_string(), None))
        }
        Err(e) => Ok(CallToolResult::error(vec![ContentBlock::text(
            e.to_string(),
        )])),
    }
}

/// `send_message_to_user`: the `/notify` row.
async fn message_user(state: &AppState, me: WorkspaceId, body: Notify) -> Result<Value, Error> {
    let stored = notify(state, me, body).await?;
    Ok(json!({"status": stored.status, "activity_id": stored.activity_id}))
}

/// `get_workspace_info`.
async fn workspace_info(state: &AppState, me: WorkspaceId) -> Result<Value, Error> {
    let w = super::super::access::live_workspace(state, me).await?;
    let role = w
        .agent_card
        .as_ref()
        .and_then(|c| c.get("role"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let status = w
        .liveness()
        .status(domain::now(), state.config.offline_after);
    Ok(json!({
        "id": w.id, "name": w.name, "role": role, "tier": w.tier, "runtime": w.runtime,
        "model": w.model, "parent_id": w.parent_id, "delivery_mode": w.delivery_mode,
        "status": status,
    }))
}

/// `delegate_task` (waiting up to [`SYNC_WAIT`]) and `delegate_task_async`.
async fn delegate_tool(
    state: &AppState,
    me: WorkspaceId,
    a: DelegateArgs,
    wait: bool,
    trace: Option<crate::domain::TraceParent>,
) -> Result<Value, Error> {
    // Subscribed before the row exists, so no move of it can be missed.
    let events = state.bus.subscribe();
    let a = DelegateArgs { trace, ..a };
    let (_, created) = new_delegation(state, me, a).await?;
    let id = created.delegation_id;
    if !wait {
        return Ok(json!({"task_id": id, "status": created.status,
            "deduplicated": created.deduplicated}));
    }
    let d = settled(state, id, events, SYNC_WAIT).await?;
    let mut out = status_view(&d);
    if !d.status.is_terminal() {
        out["still_running"] = json!(true);
        out["message"] = json!(format!(
            "the peer has not answered within {} s; poll check_task_status with this task_id",
            SYNC_WAIT.as_secs()
        ));
    }
    Ok(out)
}

/// Makes the delegation of a `delegate_task*` call (the `/delegate` route's code).
async fn new_delegation(
    state: &AppState,
    me: WorkspaceId,
    a: DelegateArgs,
) -> Result<(StatusCode, DelegationCreated), Error> {
    let target: WorkspaceId = parse_id("workspace_id", &a.workspace_id)?;
    let body = NewDelegationRequest {
        task: a.task,
        idempotency_key: a.idempotency_key,
        deadline_s: None,
        traceparent: a.trace,
    };
    delegate(state, Caller::Workspace(me), target, body).await
}

/// The ledger row of a new delegation (for its task).
async fn delegation(
    state: &AppState,
    me: WorkspaceId,
    a: DelegateArgs,
) -> Result<Delegation, Error> {
    let (_, created) = new_delegation(state, me, a).await?;
    state
        .store
        .get_delegation(created.delegation_id)
        .await?
        .ok_or_else(|| Error::NotFound("delegation not found".into()))
}

/// The delegation once it completed or failed, or as it stands after
/// `bound` (or at shutdown). Woken by its own moves on the event bus, which
/// spans replicas; a lagging or resynced bus re-reads the row.
async fn settled(
    state: &AppState,
    id: DelegationId,
    mut events: tokio::sync::broadcast::Receiver<Event>,
    bound: Duration,
) -> Result<Delegation, Error> {
    let until = tokio::time::Instant::now() + bound;
    loop {
        let d = state
            .store
            .get_delegation(id)
            .await?
            .ok_or_else(|| Error::NotFound("delegation not found".into()))?;
        if d.status.is_terminal() {
            return Ok(d);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return Ok(d),
            _ = state.shutdown.cancelled() => return Ok(d),
            _ = next_move(&mut events, id) => {}
        }
    }
}

/// Returns at the next event that may have moved delegation `id`.
async fn next_move(events: &mut tokio::sync::broadcast::Receiver<Event>, id: DelegationId) {
    loop {
        match events.recv().await {
            Ok(Event::Delegation(m)) if m.delegation_id == id => return,
            Ok(Event::Resync) | Err(RecvError::Lagged(_)) => return,
            Ok(_) => {}
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

/// `check_task_status`: a delegation this workspace is a party to; any
/// other id is "not found", whether or not it exists.
async fn task_status(state: &AppState, me: WorkspaceId, raw: &str) -> Result<Value, Error> {
    let id: DelegationId = parse_id("task_id", raw)?;
    match state.store.get_delegation(id).await? {
        Some(d) if d.callee_id == me || d.caller == Caller::Workspace(me) => Ok(status_view(&d)),
        _ => Err(Error::NotFound(format!("no task {id} of this workspace"))),
    }
}

/// The ledger row as the tools show it.
pub(super) fn status_view(d: &Delegation) -> Value {
    let heartbeat_age_s = d
        .last_heartbeat_at
        .map(|t| (domain::now() - t).num_seconds().max(0));
    json!({
        "task_id": d.id, "workspace_id": d.callee_id, "status": d.status,
        "result": d.result_preview, "error": d.error_detail, "deadline_at": d.deadline_at,
        "heartbeat_age_s": heartbeat_age_s, "created_at": d.created_at,
        "updated_at": d.updated_at, "completed_at": d.completed_at,
    })
}
