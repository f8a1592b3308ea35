//! Traces: the `traceparent` every message, delegation and MCP call may
//! carry ([`incoming`]), the spans agents report (`POST
//! /workspaces/:id/traces`), one trace as a tree across workspaces (`GET
//! /traces/:trace_id`) and a workspace's last traces (`GET
//! /workspaces/:id/traces`).
//!
//! The server writes its own span of every hop: a delegation's (and so a
//! schedule fire's and an A2A task's) with its ledger row, moved with it
//! (queued, dispatched — picked up by a poll agent or forwarded to a push
//! one —, in progress, completed or failed); a message's when it is queued
//! or forwarded. The hop's span is the context its receiver is handed, so
//! what the receiver reports or delegates in turn hangs under it, whichever
//! workspace it runs on.

use std::collections::{HashMap, HashSet};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{known_workspace, live_workspace, SelfOrOperator};
use super::auth::Principal;
use super::extract::{Query, WorkspacePath};
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::trace::{self, TraceParent, TRACEPARENT};
use crate::domain::usage::MICROS_PER_USD;
use crate::store::{Span, TraceSummary};

/// The caller's trace context: the `traceparent` header when it holds a
/// valid one; a malformed one is ignored (the W3C rule: start a new trace
/// rather than refuse the request).
pub(super) fn incoming(headers: &HeaderMap) -> Option<TraceParent> {
    headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
}

/// Most spans one trace read returns (a trace beyond it is cut, latest
/// spans dropped, and says so).
const MAX_TRACE_SPANS: usize = 5000;
/// Deepest nesting shown; deeper spans are cut (and counted), so no report
/// can make a tree too deep to answer.
const MAX_DEPTH: usize = 64;

fn usd(micros: i64) -> f64 {
    micros as f64 / MICROS_PER_USD
}

/// Token and cost sums.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct Totals {
    /// Tokens sent to models.
    pub input_tokens: i64,
    /// Tokens models produced.
    pub output_tokens: i64,
    /// Cost, USD.
    pub cost_usd: f64,
}

impl Totals {
    fn add(&mut self, other: Totals) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_usd += other.cost_usd;
    }
}

/// One span of a trace, with its children.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct SpanNode {
    /// Its id (16 hex digits).
    pub span_id: String,
    /// The span it hangs under.
    pub parent_span_id: Option<String>,
    /// `delegate`, `message`, or the agent's name for it.
    pub name: String,
    /// `server` (the server's hop), `agent`, `tool` or `llm`.
    pub kind: String,
    /// Whose work it is: a hop's receiver, a report's workspace.
    pub workspace_id: String,
    /// Who started a hop (a workspace id, `operator`, `schedule:<id>`).
    pub caller_id: Option<String>,
    /// The ledger row of a delegation's hop.
    pub delegation_id: Option<String>,
    /// A hop's status.
    pub status: Option<String>,
    /// Start.
    pub start: DateTime<Utc>,
    /// End; null while in flight.
    pub end: Option<DateTime<Utc>>,
    /// End − start, milliseconds; null while in flight.
    pub duration_ms: Option<i64>,
    /// This span's own tokens and cost.
    pub own: Totals,
    /// This span's and every descendant's.
    pub total: Totals,
    /// The model of a model call.
    pub model: Option<String>,
    /// The agent's attributes.
    #[schema(value_type = Object)]
    pub attributes: Value,
    /// A hop's moments, oldest first: `[{name, at}]`.
    #[schema(value_type = Vec<Object>)]
    pub events: Value,
    /// Its children, by start.
    #[schema(no_recursion)]
    pub children: Vec<SpanNode>,
}

/// One trace across workspaces.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct TraceView {
    /// The trace (32 hex digits).
    pub trace_id: String,
    /// Its earliest start.
    pub started_at: DateTime<Utc>,
    /// Its latest end, if any span ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Spans in the store.
    pub span_count: usize,
    /// Spans cut for nesting deeper than 64 or for the 5,000-span cap.
    pub truncated: usize,
    /// The workspaces that took part, in order of first appearance.
    pub workspaces: Vec<String>,
    /// Sums over every span.
    pub total: Totals,
    /// The top spans (no parent in the store), by start.
    pub roots: Vec<SpanNode>,
}

/// Builds the tree: spans whose parent is not in the trace are roots, and
/// so is any span a cycle of parent ids would hide (each span appears
/// once).
fn build_tree(spans: Vec<Span>) -> (Vec<SpanNode>, usize) {
    let index: HashMap<&str, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id.as_str(), i))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match s.parent_span_id.as_deref().and_then(|p| index.get(p)) {
            Some(&p) if p != i => children[p].push(i),
            _ => roots.push(i),
        }
    }
    let mut seen = HashSet::new();
    let mut cut = 0;
    let mut out: Vec<SpanNode> = Vec::new();
    let mut pending: Vec<usize> = roots;
    let mut next = 0;
    loop {
        for &r in &pending {
            if seen.contains(&r) {
                continue;
            }
            let node = node(&spans, &children, r, 0, &mut seen, &mut cut);
            out.push(node);
        }
        // A cycle of parents: none of its spans was reached from a root.
        while next < spans.len() && seen.contains(&next) {
            next += 1;
        }
        if next >= spans.len() {
            break;
        }
        pending = vec![next];
    }
    out.sort_by_key(|n| n.start);
    (out, cut)
}

fn node(
    spans: &[Span],
    children: &[Vec<usize>],
    i: usize,
    depth: usize,
    seen: &mut HashSet<usize>,
    cut: &mut usize,
) -> SpanNode {
    seen.insert(i);
    let s = &spans[i];
    let own = Totals {
        input_tokens: s.input_tokens,
        output_tokens: s.output_tokens,
        cost_usd: usd(s.cost_micros),
    };
    let mut total = own;
    let mut kids = Vec::new();
    for &c in &children[i] {
        if seen.contains(&c) {
            continue;
        }
        if depth + 1 >= MAX_DEPTH {
            *cut += mark_subtree(children, c, seen);
            continue;
        }
        let child = node(spans, children, c, depth + 1, seen, cut);
        total.add(child.total);
        kids.push(child);
    }
    SpanNode {
        span_id: s.span_id.clone(),
        parent_span_id: s.parent_span_id.clone(),
        name: s.name.clone(),
        kind: s.kind.as_str().to_owned(),
        workspace_id: s.workspace_id.to_string(),
        caller_id: s.caller_id.clone(),
        delegation_id: s.delegation_id.map(|d| d.to_string()),
        status: s.status.clone(),
        start: s.start_at,
        end: s.end_at,
        duration_ms: s.end_at.map(|e| (e - s.start_at).num_milliseconds()),
        own,
        total,
        model: s.model.clone(),
        attributes: s.attributes.clone(),
        events: s.events.clone(),
        children: kids,
    }
}

/// Marks a cut subtree seen (iteratively); returns its size.
fn mark_subtree(children: &[Vec<usize>], root: usize, seen: &mut HashSet<usize>) -> usize {
    let mut stack = vec![root];
    let mut n = 0;
    while let Some(i) = stack.pop() {
        if seen.insert(i) {
            n += 1;
            stack.extend(children[i].iter().copied());
        }
    }
    n
}

fn trace_not_found() -> Error {
    Error::NotFound("trace not found".into())
}

/// The whole trace across workspaces: who delegated to whom, each hop's
/// moments and duration, tokens and cost per span and summed per subtree.
/// A workspace reads the traces it took part in; the operator all of them.
#[utoipa::path(get, path = "/traces/{trace_id}", tag = "traces",
    params(("trace_id" = String, Path, description = "32 lowercase hex digits")),
    responses((status = 200, body = TraceView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_trace(
    State(state): State<AppState>,
    caller: Principal,
    Path(trace_id): Path<String>,
) -> Result<Json<TraceView>> {
    if !trace::is_trace_id(&trace_id) {
        return Err(Error::BadRequest(
            "a trace id is 32 lowercase hex digits, not all zero".into(),
        ));
    }
    if let Principal::Workspace(w) = caller {
        if !state.store.took_part(&trace_id, w).await? {
            return Err(trace_not_found());
        }
    }
    let mut spans = state.store.trace_spans(&trace_id).await?;
    if spans.is_empty() {
        return Err(trace_not_found());
    }
    let span_count = spans.len();
    let over = span_count.saturating_sub(MAX_TRACE_SPANS);
    spans.truncate(MAX_TRACE_SPANS);
    let started_at = spans.iter().map(|s| s.start_at).min().unwrap_or_default();
    let ended_at = spans.iter().filter_map(|s| s.end_at).max();
    let mut workspaces: Vec<String> = Vec::new();
    for s in &spans {
        for w in [Some(s.workspace_id.to_string()), s.caller_id.clone()]
            .into_iter()
            .flatten()
        {
            if !workspaces.contains(&w) {
                workspaces.push(w);
            }
        }
    }
    let (roots, cut) = build_tree(spans);
    let mut total = Totals::default();
    roots.iter().for_each(|r| total.add(r.total));
    Ok(Json(TraceView {
        trace_id,
        started_at,
        ended_at,
        span_count,
        truncated: over + cut,
        workspaces,
        total,
        roots,
    }))
}

/// What a span report stored.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct SpansRecorded {
    /// Spans new to the store.
    pub recorded: u64,
    /// Spans it had already (a retried report): left as they were.
    pub duplicates: u64,
    /// The traces they belong to.
    pub trace_ids: Vec<String>,
}

/// The agent reports spans: OTLP/JSON (`{resourceSpans: …}`) or
/// `{spans: [{name, kind: tool|llm|agent, start, end, input_tokens?,
/// output_tokens?, model?, cost_usd?, attributes?, trace_id?, span_id?,
/// parent_span_id?}]}`. Without ids, a span belongs to the request's
/// `traceparent` and hangs under its span. A workspace adds to a trace it
/// took part in, or starts a new one (403 for another's trace).
#[utoipa::path(post, path = "/workspaces/{id}/traces", tag = "traces",
    params(("id" = String, Path, description = "workspace id")),
    request_body(content = Object, description = "OTLP/JSON spans, or `{spans: [...]}`"),
    responses((status = 201, body = SpansRecorded), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn report_spans(
    State(state): State<AppState>,
    SelfOrOperator(WorkspacePath(id), caller): SelfOrOperator,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<SpansRecorded>)> {
    let spans = trace::parse_spans(&body, incoming(&headers))
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    live_workspace(&state, id).await?;
    let mut trace_ids: Vec<String> = Vec::new();
    for s in &spans {
        if !trace_ids.contains(&s.trace_id) {
            trace_ids.push(s.trace_id.clone());
        }
    }
    if let Principal::Workspace(w) = caller {
        for t in &trace_ids {
            let foreign = !state.store.trace_spans(t).await?.is_empty()
                && !state.store.took_part(t, w).await?;
            if foreign {
                return Err(Error::Denied(format!(
                    "this workspace took no part in trace {t}: report under the traceparent it was handed"
                )));
            }
        }
    }
    let recorded = state.store.record_spans(id, &spans).await?;
    tracing::info!(workspace_id = %id, recorded, spans = spans.len(), "spans recorded");
    Ok((
        StatusCode::CREATED,
        Json(SpansRecorded {
            recorded,
            duplicates: spans.len() as u64 - recorded,
            trace_ids,
        }),
    ))
}

/// Query of a workspace's trace listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct TraceListParams {
    /// At most this many (1–100, default 20).
    pub limit: Option<i64>,
}

/// One trace in a listing.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct TraceListItem {
    /// The trace.
    pub trace_id: String,
    /// Its spans.
    pub spans: i64,
    /// Its earliest start.
    pub started_at: DateTime<Utc>,
    /// Its latest end.
    pub ended_at: Option<DateTime<Utc>>,
    /// Sums over its spans.
    pub total: Totals,
}

impl From<TraceSummary> for TraceListItem {
    fn from(t: TraceSummary) -> Self {
        Self {
            trace_id: t.trace_id,
            spans: t.spans,
            started_at: t.started_at,
            ended_at: t.ended_at,
            total: Totals {
                input_tokens: t.input_tokens,
                output_tokens: t.output_tokens,
                cost_usd: usd(t.cost_micros),
            },
        }
    }
}

/// The last traces the workspace took part in (as receiver, reporter or
/// caller), newest first (Molecule's route).
#[utoipa::path(get, path = "/workspaces/{id}/traces", tag = "traces",
    params(("id" = String, Path, description = "workspace id"), TraceListParams),
    responses((status = 200, body = [TraceListItem]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn list_workspace_traces(
    State(state): State<AppState>,
    SelfOrOperator(WorkspacePath(id), _): SelfOrOperator,
    Query(params): Query<TraceListParams>,
) -> Result<Json<Vec<TraceListItem>>> {
    let limit = params.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(Error::BadRequest(
            "`limit` must be between 1 and 100".into(),
        ));
    }
    known_workspace(&state, id).await?;
    let traces = state.store.recent_traces(Some(id), limit).await?;
    Ok(Json(traces.into_iter().map(Into::into).collect()))
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_trace))
        .routes(routes!(report_spans, list_workspace_traces))
}
