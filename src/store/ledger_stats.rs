//! Figures over the delegation ledger: counts by status, the oldest row
//! in flight and completion times, of the whole fleet or of one workspace
//! (`/admin/delegations/stats`, `/workspaces/:id/delegations/stats`), and
//! its edges — who asks whom, how often, how many fail — for the
//! topology view (`/admin/delegations/edges`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::delegations::IN_FLIGHT;
use super::sql::{SqlStore, Ts};
use super::*;

/// Figures over the ledger, for `/admin/delegations/stats`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DelegationStats {
    /// Rows per status (statuses with none are absent).
    pub counts: Vec<(DelegationStatus, i64)>,
    /// Creation time of the oldest row not yet completed or failed.
    pub oldest_in_flight_at: Option<DateTime<Utc>>,
    /// Created → completed, in seconds, of the rows completed since the
    /// window start, ascending.
    pub completion_seconds: Vec<f64>,
}

/// The delegations of one caller to one callee, summed.
#[derive(Debug, Clone, PartialEq)]
pub struct DelegationEdge {
    /// The caller as stored: a workspace id, `operator` or `schedule:<id>`.
    pub caller: String,
    /// The callee.
    pub callee_id: WorkspaceId,
    /// Rows kept in the ledger.
    pub total: i64,
    /// Of which failed.
    pub failed: i64,
    /// Of which not yet completed or failed.
    pub in_flight: i64,
    /// Creation of the newest.
    pub last_at: DateTime<Utc>,
}

/// Figures over the ledger. Part of [`Store`].
#[async_trait]
pub trait LedgerStatsStore: Send + Sync {
    /// Counts per status, the oldest in-flight row, and completion times
    /// of the rows completed since `since`.
    async fn delegation_stats(
        &self,
        since: DateTime<Utc>,
        party: Option<WorkspaceId>,
    ) -> StoreResult<DelegationStats>;

    /// Every (caller, callee) pair of the ledger with its counts, the
    /// busiest first (at most `limit` pairs).
    async fn delegation_edges(&self, limit: i64) -> StoreResult<Vec<DelegationEdge>>;
}

engines! {
    #[async_trait]
    impl LedgerStatsStore for SqlStore<DB> {
        async fn delegation_stats(
            &self,
            since: DateTime<Utc>,
            party: Option<WorkspaceId>,
        ) -> StoreResult<DelegationStats> {
            // One workspace's rows, either side, when `party` is given: the
            // predicate over its two bind numbers.
            let of = |a: usize, b: usize| match party {
                Some(_) => format!(" AND (caller_id = ${a} OR callee_id = ${b})"),
                None => String::new(),
            };
            let counts_sql = format!(
                "SELECT status, count(*) FROM delegations WHERE 1 = 1{} \
                 GROUP BY status ORDER BY status",
                of(1, 2)
            );
            let oldest_sql = format!(
                "SELECT min(created_at) FROM delegations WHERE status IN {IN_FLIGHT}{}",
                of(1, 2)
            );
            // Bounded: the figures of a day of a very busy ledger are
            // well described by its latest 100 000 completions.
            let spans_sql = format!(
                "SELECT created_at, completed_at FROM delegations \
                 WHERE status = 'completed' AND completed_at >= $1{} \
                 ORDER BY completed_at DESC LIMIT 100000",
                of(2, 3)
            );
            let mut counts = sqlx::query_as::<_, (String, i64)>(&counts_sql);
            let mut oldest = sqlx::query_scalar::<_, Option<Ts>>(&oldest_sql);
            let mut spans = sqlx::query_as::<_, (Ts, Ts)>(&spans_sql).bind(Ts(since));
            if let Some(ws) = party {
                counts = counts.bind(ws.to_string()).bind(ws);
                oldest = oldest.bind(ws.to_string()).bind(ws);
                spans = spans.bind(ws.to_string()).bind(ws);
            }
            let counts = counts.fetch_all(&self.pool).await?;
            let oldest = oldest.fetch_one(&self.pool).await?;
            let spans = spans.fetch_all(&self.pool).await?;
            let mut completion_seconds: Vec<f64> = spans
                .into_iter()
                .map(|(c, d)| (d.0 - c.0).num_microseconds().unwrap_or(0) as f64 / 1e6)
                .collect();
            completion_seconds.sort_by(f64::total_cmp);
            Ok(DelegationStats {
                counts: counts
                    .into_iter()
                    .map(|(s, n)| {
                        s.parse::<DelegationStatus>()
                            .map(|s| (s, n))
                            .map_err(|e| StoreError::Corrupt(e.to_string()))
                    })
                    .collect::<StoreResult<_>>()?,
                oldest_in_flight_at: oldest.map(|t| t.0),
                completion_seconds,
            })
        }

        async fn delegation_edges(&self, limit: i64) -> StoreResult<Vec<DelegationEdge>> {
            // Grouped in the database: a ledger of a million rows answers
            // with one row per pair that ever talked.
            let sql = format!(
                "SELECT caller_id, callee_id, count(*), \
                   sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), \
                   sum(CASE WHEN status IN {IN_FLIGHT} THEN 1 ELSE 0 END), \
                   max(created_at) \
                 FROM delegations GROUP BY caller_id, callee_id \
                 ORDER BY count(*) DESC, caller_id, callee_id LIMIT $1"
            );
            let rows: Vec<(String, WorkspaceId, i64, i64, i64, Ts)> =
                sqlx::query_as(&sql).bind(limit).fetch_all(&self.pool).await?;
            Ok(rows
                .into_iter()
                .map(|(caller, callee_id, total, failed, in_flight, last)| DelegationEdge {
                    caller,
                    callee_id,
                    total,
                    failed,
                    in_flight,
                    last_at: last.0,
                })
                .collect())
        }
    }
}
