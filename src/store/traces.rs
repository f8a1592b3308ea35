//! The built-in span store (`trace_spans`): the server's span of every hop
//! (a delegation's, opened with its ledger row and moved with it in the
//! same transaction; a message's), the spans agents report, the reads of
//! the trace view (one trace across workspaces, a workspace's last
//! traces), and the sweep's retention prune.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use sqlx::types::Json;

use super::sql::{SqlStore, Ts};
use super::*;
use crate::domain::trace::{Hop, NewSpan, SpanKind};

/// One stored span.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Its trace (32 hex digits).
    pub trace_id: String,
    /// Its id (16 hex digits).
    pub span_id: String,
    /// The span it hangs under, if any.
    pub parent_span_id: Option<String>,
    /// Whose work it is: a hop's callee, a report's workspace.
    pub workspace_id: WorkspaceId,
    /// Who started a server span's hop.
    pub caller_id: Option<String>,
    /// The delegation of a server span.
    pub delegation_id: Option<DelegationId>,
    /// What it was.
    pub name: String,
    /// Server hop, agent work, tool or model call.
    pub kind: SpanKind,
    /// A server span's status.
    pub status: Option<String>,
    /// Start.
    pub start_at: DateTime<Utc>,
    /// End; `None` while a hop is in flight.
    pub end_at: Option<DateTime<Utc>>,
    /// This node's own input tokens.
    pub input_tokens: i64,
    /// This node's own output tokens.
    pub output_tokens: i64,
    /// This node's own cost, micro-USD.
    pub cost_micros: i64,
    /// The model of a model call (or of the usage a callee reported).
    pub model: Option<String>,
    /// The agent's attributes.
    pub attributes: Value,
    /// A server span's moments: `[{name, at}]`.
    pub events: Value,
}

/// A server span to open for one hop.
#[derive(Debug, Clone)]
pub struct HopSpan<'a> {
    /// The hop's context and parent.
    pub hop: &'a Hop,
    /// The receiving workspace.
    pub workspace_id: WorkspaceId,
    /// Who sent it (`operator`, a workspace id, `schedule:<id>`).
    pub caller: String,
    /// `delegate` or `message`.
    pub name: &'a str,
    /// The delegation, for a delegation's hop.
    pub delegation_id: Option<DelegationId>,
    /// The status it opens in (`queued`, `forwarded`, `failed`).
    pub status: &'a str,
    /// When it ended, if it is over as it is written (a refused
    /// delegation, a message handed over).
    pub ended_at: Option<DateTime<Utc>>,
}

/// One line of a workspace's trace listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSummary {
    /// The trace.
    pub trace_id: String,
    /// Its spans in the store.
    pub spans: i64,
    /// Its earliest start.
    pub started_at: DateTime<Utc>,
    /// Its latest end, if any span ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Tokens over every span.
    pub input_tokens: i64,
    /// Tokens over every span.
    pub output_tokens: i64,
    /// Cost over every span, micro-USD.
    pub cost_micros: i64,
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    trace_id: String,
    spans: i64,
    started_at: Ts,
    ended_at: Option<Ts>,
    input_tokens: i64,
    output_tokens: i64,
    cost_micros: i64,
}

impl From<SummaryRow> for TraceSummary {
    fn from(r: SummaryRow) -> Self {
        Self {
            trace_id: r.trace_id,
            spans: r.spans,
            started_at: r.started_at.0,
            ended_at: r.ended_at.map(|t| t.0),
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cost_micros: r.cost_micros,
        }
    }
}

#[derive(sqlx::FromRow)]
struct SpanRow {
    trace_id: String,
    span_id: String,
    parent_span_id: Option<String>,
    workspace_id: WorkspaceId,
    caller_id: Option<String>,
    delegation_id: Option<DelegationId>,
    name: String,
    kind: String,
    status: Option<String>,
    start_at: Ts,
    end_at: Option<Ts>,
    input_tokens: i64,
    output_tokens: i64,
    cost_micros: i64,
    model: Option<String>,
    attributes: Json<Value>,
    events: Json<Value>,
}

impl TryFrom<SpanRow> for Span {
    type Error = StoreError;
    fn try_from(r: SpanRow) -> StoreResult<Self> {
        Ok(Span {
            kind: SpanKind::parse(&r.kind)
                .ok_or_else(|| StoreError::Corrupt(format!("span kind `{}`", r.kind)))?,
            trace_id: r.trace_id,
            span_id: r.span_id,
            parent_span_id: r.parent_span_id,
            workspace_id: r.workspace_id,
            caller_id: r.caller_id,
            delegation_id: r.delegation_id,
            name: r.name,
            status: r.status,
            start_at: r.start_at.0,
            end_at: r.end_at.map(|t| t.0),
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cost_micros: r.cost_micros,
            model: r.model,
            attributes: r.attributes.0,
            events: r.events.0,
        })
    }
}

/// The span store. Part of [`Store`]; both engines implement it below.
#[async_trait]
pub trait TraceStore: Send + Sync {
    /// Stores spans `workspace_id` reported; a span already stored (same
    /// trace and id: a retried report) is left as it was. Returns how many
    /// were new.
    async fn record_spans(&self, workspace_id: WorkspaceId, spans: &[NewSpan])
        -> StoreResult<u64>;

    /// Inserts a message's inbox row and its hop's server span (which
    /// started at `start`) in ONE transaction: a traced message costs no
    /// extra commit.
    async fn insert_traced_activity(
        &self,
        workspace_id: WorkspaceId,
        row: &NewActivity,
        span: &HopSpan<'_>,
        start: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Activity>;

    /// Adds usage a callee reported on a delegation to the delegation's
    /// span (its tokens, cost and, if it had none, model).
    async fn add_delegation_usage(
        &self,
        delegation_id: DelegationId,
        input_tokens: i64,
        output_tokens: i64,
        cost_micros: i64,
        model: &str,
    ) -> StoreResult<()>;

    /// Every span of a trace, by start.
    async fn trace_spans(&self, trace_id: &str) -> StoreResult<Vec<Span>>;

    /// Whether `workspace` took part in the trace: a span is its work, or a
    /// hop it started.
    async fn took_part(&self, trace_id: &str, workspace: WorkspaceId) -> StoreResult<bool>;

    /// The last `limit` traces `workspace` took part in, newest first
    /// (`None`: every workspace, for the operator).
    async fn recent_traces(
        &self,
        workspace: Option<WorkspaceId>,
        limit: i64,
    ) -> StoreResult<Vec<TraceSummary>>;

    /// Deletes up to `limit` spans that started before `before`.
    async fn prune_spans(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<u64>;

    /// Takes up to `limit` ended spans no exporter has taken yet, oldest
    /// end first, and marks them taken (a replica running the same claim
    /// at once gets none of them). A server span is taken only once it
    /// ended at or before `settled` (the usage a callee reports with its
    /// final status lands on the span right after the move that ended it).
    async fn claim_unexported_spans(
        &self,
        settled: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<Span>>;

    /// Gives back spans an export did not deliver: the next claim takes
    /// them again.
    async fn release_unexported_spans(&self, keys: &[(String, String)]) -> StoreResult<()>;
}

/// One moment of a server span.
fn event(name: &str, at: DateTime<Utc>) -> Value {
    json!({"name": name, "at": at})
}

engines! {
    impl SqlStore<DB> {
        /// Opens the server span of a hop, started at `now`, inside the
        /// caller's transaction (the ledger row's, for a delegation).
        pub(super) async fn open_hop_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            s: &HopSpan<'_>,
            now: DateTime<Utc>,
        ) -> StoreResult<()> {
            let events = vec![event(s.status, s.ended_at.unwrap_or(now))];
            sqlx::query(
                "INSERT INTO trace_spans (trace_id, span_id, parent_span_id, workspace_id, \
                   caller_id, delegation_id, name, kind, status, start_at, end_at, attributes, \
                   events) VALUES ($1, $2, $3, $4, $5, $6, $7, 'server', $8, $9, $10, $11, $12) \
                 ON CONFLICT (trace_id, span_id) DO NOTHING",
            )
            .bind(s.hop.context.trace_id())
            .bind(s.hop.context.span_id())
            .bind(s.hop.parent())
            .bind(s.workspace_id)
            .bind(&s.caller)
            .bind(s.delegation_id)
            .bind(s.name)
            .bind(s.status)
            .bind(Ts(now))
            .bind(s.ended_at.map(Ts))
            .bind(Json(Value::Object(Map::new())))
            .bind(Json(Value::Array(events)))
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        /// Moves a delegation's span with its ledger row, inside the
        /// move's transaction: the new status, one more moment, and the
        /// end when the delegation ended.
        pub(super) async fn move_hop_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            delegation_id: DelegationId,
            status: DelegationStatus,
            now: DateTime<Utc>,
        ) -> StoreResult<()> {
            let events: Option<Json<Value>> =
                sqlx::query_scalar("SELECT events FROM trace_spans WHERE delegation_id = $1")
                    .bind(delegation_id)
                    .fetch_optional(&mut *conn)
                    .await?;
            // A row from before traces has no span: nothing to move.
            let Some(Json(mut events)) = events else {
                return Ok(());
            };
            if let Value::Array(list) = &mut events {
                list.push(event(status.as_str(), now));
            }
            sqlx::query(
                "UPDATE trace_spans SET status = $2, events = $3, \
                   end_at = CASE WHEN $4 THEN $5 ELSE end_at END WHERE delegation_id = $1",
            )
            .bind(delegation_id)
            .bind(status.as_str())
            .bind(Json(events))
            .bind(status.is_terminal())
            .bind(Ts(now))
            .execute(&mut *conn)
            .await?;
            Ok(())
        }
    }

    #[async_trait]
    impl TraceStore for SqlStore<DB> {
        #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id, spans = spans.len()))]
        async fn record_spans(
            &self,
            workspace_id: WorkspaceId,
            spans: &[NewSpan],
        ) -> StoreResult<u64> {
            let mut tx = self.write_tx().await?;
            let mut new = 0;
            for s in spans {
                new += sqlx::query(
                    "INSERT INTO trace_spans (trace_id, span_id, parent_span_id, workspace_id, \
                       name, kind, start_at, end_at, input_tokens, output_tokens, cost_micros, \
                       model, attributes) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                     ON CONFLICT (trace_id, span_id) DO NOTHING",
                )
                .bind(&s.trace_id)
                .bind(&s.span_id)
                .bind(&s.parent_span_id)
                .bind(workspace_id)
                .bind(&s.name)
                .bind(s.kind.as_str())
                .bind(Ts(s.start))
                .bind(Ts(s.end))
                .bind(s.input_tokens)
                .bind(s.output_tokens)
                .bind(s.cost_micros.unwrap_or(0))
                .bind(&s.model)
                .bind(Json(Value::Object(s.attributes.clone())))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
            Ok(new)
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id))]
        async fn insert_traced_activity(
            &self,
            workspace_id: WorkspaceId,
            row: &NewActivity,
            span: &HopSpan<'_>,
            start: DateTime<Utc>,
            now: DateTime<Utc>,
        ) -> StoreResult<Activity> {
            let mut tx = self.write_tx().await?;
            let activity = Self::insert_activity_in(&mut tx, workspace_id, row, now).await?;
            Self::open_hop_in(&mut tx, span, start).await?;
            tx.commit().await?;
            Ok(activity)
        }

        #[tracing::instrument(skip_all, fields(delegation_id = %delegation_id))]
        async fn add_delegation_usage(
            &self,
            delegation_id: DelegationId,
            input_tokens: i64,
            output_tokens: i64,
            cost_micros: i64,
            model: &str,
        ) -> StoreResult<()> {
            let mut tx = self.write_tx().await?;
            sqlx::query(
                "UPDATE trace_spans SET input_tokens = input_tokens + $2, \
                   output_tokens = output_tokens + $3, cost_micros = cost_micros + $4, \
                   model = COALESCE(model, $5) WHERE delegation_id = $1",
            )
            .bind(delegation_id)
            .bind(input_tokens)
            .bind(output_tokens)
            .bind(cost_micros)
            .bind(model)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        }

        #[tracing::instrument(skip_all)]
        async fn trace_spans(&self, trace_id: &str) -> StoreResult<Vec<Span>> {
            let rows: Vec<SpanRow> = sqlx::query_as(
                "SELECT * FROM trace_spans WHERE trace_id = $1 ORDER BY start_at, span_id",
            )
            .bind(trace_id)
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(TryInto::try_into).collect()
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %workspace))]
        async fn took_part(&self, trace_id: &str, workspace: WorkspaceId) -> StoreResult<bool> {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM trace_spans WHERE trace_id = $1 \
                   AND (workspace_id = $2 OR caller_id = $3)",
            )
            .bind(trace_id)
            .bind(workspace)
            .bind(workspace.to_string())
            .fetch_one(&self.pool)
            .await?;
            Ok(n > 0)
        }

        #[tracing::instrument(skip_all)]
        async fn recent_traces(
            &self,
            workspace: Option<WorkspaceId>,
            limit: i64,
        ) -> StoreResult<Vec<TraceSummary>> {
            // The workspace's traces (by its latest span in each), then
            // each trace's figures over all of its spans.
            let mine = match workspace {
                Some(_) => "WHERE workspace_id = $2 OR caller_id = $3",
                None => "WHERE $2 IS NULL AND $3 IS NULL",
            };
            let sql = format!(
                "SELECT trace_id, CAST(COUNT(*) AS BIGINT) AS spans, \
                   MIN(start_at) AS started_at, MAX(end_at) AS ended_at, \
                   CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
                   CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
                   CAST(SUM(cost_micros) AS BIGINT) AS cost_micros \
                 FROM trace_spans WHERE trace_id IN ( \
                   SELECT trace_id FROM trace_spans {mine} \
                   GROUP BY trace_id ORDER BY MAX(start_at) DESC LIMIT $1) \
                 GROUP BY trace_id ORDER BY MIN(start_at) DESC"
            );
            let rows: Vec<SummaryRow> = sqlx::query_as(&sql)
                .bind(limit)
                .bind(workspace)
                .bind(workspace.map(|w| w.to_string()))
                .fetch_all(&self.pool)
                .await?;
            Ok(rows.into_iter().map(Into::into).collect())
        }

        #[tracing::instrument(skip_all)]
        async fn prune_spans(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<u64> {
            let mut tx = self.write_tx().await?;
            let n = sqlx::query(
                "DELETE FROM trace_spans WHERE (trace_id, span_id) IN ( \
                   SELECT trace_id, span_id FROM trace_spans WHERE start_at < $1 \
                   ORDER BY start_at LIMIT $2)",
            )
            .bind(Ts(before))
            .bind(limit)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(n)
        }

        #[tracing::instrument(skip_all)]
        async fn claim_unexported_spans(
            &self,
            settled: DateTime<Utc>,
            limit: i64,
        ) -> StoreResult<Vec<Span>> {
            let mut tx = self.write_tx().await?;
            // `AND NOT exported` again in the outer statement: a replica
            // whose claim waited on ours re-checks the row and skips it.
            let rows: Vec<SpanRow> = sqlx::query_as(
                "UPDATE trace_spans SET exported = TRUE WHERE (trace_id, span_id) IN ( \
                   SELECT trace_id, span_id FROM trace_spans \
                   WHERE NOT exported AND end_at IS NOT NULL \
                     AND (kind <> 'server' OR end_at <= $1) \
                   ORDER BY end_at LIMIT $2) \
                 AND NOT exported RETURNING *",
            )
            .bind(Ts(settled))
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            rows.into_iter().map(TryInto::try_into).collect()
        }

        #[tracing::instrument(skip_all, fields(spans = keys.len()))]
        async fn release_unexported_spans(&self, keys: &[(String, String)]) -> StoreResult<()> {
            let mut tx = self.write_tx().await?;
            for (trace_id, span_id) in keys {
                sqlx::query(
                    "UPDATE trace_spans SET exported = FALSE \
                     WHERE trace_id = $1 AND span_id = $2",
                )
                .bind(trace_id)
                .bind(span_id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        }
    }
}
