//! The delegation ledger: exactly-once creation with the callee's inbox
//! row, forward-only moves with the caller's result row, heartbeats,
//! listings, and the sweeper's deadline/stuck/purge moves.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::engine::Engine;
use super::sql::{SqlStore, Ts};
use super::*;
use crate::domain::inbox::{DelegationResult, InboxItem};
use crate::domain::{self, Transition};

/// A delegation ledger row.
#[derive(Debug, Clone, PartialEq)]
pub struct Delegation {
    /// Its id.
    pub id: DelegationId,
    /// Who delegated.
    pub caller: Caller,
    /// Who is asked to do it.
    pub callee_id: WorkspaceId,
    /// The first characters of the task.
    pub task_preview: String,
    /// The whole task.
    pub task: String,
    /// The caller's key for exactly-once creation.
    pub idempotency_key: String,
    /// Where it is.
    pub status: DelegationStatus,
    /// The start of the callee's answer.
    pub result_preview: Option<String>,
    /// Why it failed or stalled.
    pub error_detail: Option<String>,
    /// Past this, the sweeper fails it.
    pub deadline_at: Option<DateTime<Utc>>,
    /// The callee's last report or heartbeat.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Creation.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it became completed or failed.
    pub completed_at: Option<DateTime<Utc>>,
    /// The trace context its callee is handed (`None` on older rows).
    pub traceparent: Option<domain::TraceParent>,
}

impl Delegation {
    /// The `delegation_result` row a workspace caller receives when the
    /// delegation ends.
    pub fn result_activity(&self) -> NewActivity {
        InboxItem::DelegationResult(DelegationResult {
            delegation_id: self.id,
            caller: self.caller,
            callee: self.callee_id,
            status: self.status,
            task_preview: self.task_preview.clone(),
            result_preview: self.result_preview.clone(),
            error_detail: self.error_detail.clone(),
        })
        .row()
    }
}

/// A delegation to create.
#[derive(Debug, Clone)]
pub struct NewDelegation {
    /// Server-chosen id.
    pub id: DelegationId,
    /// Who delegates.
    pub caller: Caller,
    /// To whom.
    pub callee_id: WorkspaceId,
    /// The task (non-empty).
    pub task: String,
    /// Exactly once per caller and key.
    pub idempotency_key: String,
    /// Optional deadline.
    pub deadline_at: Option<DateTime<Utc>>,
    /// Its span in the caller's trace (or the root of a new one).
    pub trace: domain::Hop,
}

impl NewDelegation {
    /// The server span of its hop, opening in `status` (over when failed).
    fn hop_span(&self, status: &'static str, now: DateTime<Utc>) -> HopSpan<'_> {
        HopSpan {
            hop: &self.trace,
            workspace_id: self.callee_id,
            caller: self.caller.to_string(),
            name: "delegate",
            delegation_id: Some(self.id),
            status,
            ended_at: (status == "failed").then_some(now),
        }
    }
}

/// How a create ended.
// One value per request, moved once and never kept in bulk: boxing the
// row would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Delegated {
    /// A new row, and the callee's inbox row written with it.
    Created {
        /// The ledger row.
        delegation: Delegation,
        /// The callee's inbox row.
        inbox: Activity,
    },
    /// The caller used this key before: that row, nothing written.
    Existing(Delegation),
    /// The callee is not a live workspace (removed, or removed while the
    /// request was on its way): nothing written.
    CalleeGone,
}

/// A callee's status report.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    /// The status reported.
    pub status: DelegationStatus,
    /// The start of the answer, if any.
    pub result_preview: Option<String>,
    /// The error, if any.
    pub error_detail: Option<String>,
}

/// A move the ledger made (or a repeat it absorbed).
#[derive(Debug, Clone, PartialEq)]
pub struct Transitioned {
    /// The row after the move.
    pub delegation: Delegation,
    /// The status before (equal to the new one for a repeat).
    pub from: DelegationStatus,
    /// The caller's `delegation_result` row, written in the same
    /// transaction when the row reached completed or failed.
    pub result_row: Option<Activity>,
}

/// How a status report ended.
// One value per request, moved once and never kept in bulk: boxing the
// row would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ReportOutcome {
    /// Applied (or absorbed as a repeat).
    Applied(Transitioned),
    /// A backwards move.
    Refused(Refused),
    /// No such delegation for this callee.
    NotFound,
}

/// How a heartbeat ended.
// One value per request, moved once and never kept in bulk: boxing the
// row would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum BeatOutcome {
    /// Stamped.
    Beat(Delegation),
    /// The delegation is over; nothing to keep alive.
    Over(DelegationStatus),
    /// No such delegation for this callee.
    NotFound,
}

/// Which side of a delegation a workspace is on, in a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartyRole {
    /// It delegated.
    Caller,
    /// It was asked.
    Callee,
    /// Either.
    Either,
}

/// Which delegations to list (newest first).
#[derive(Debug, Clone)]
pub struct DelegationFilter {
    /// Only those of this workspace, on this side.
    pub party: Option<(WorkspaceId, PartyRole)>,
    /// Only those in this status.
    pub status: Option<DelegationStatus>,
    /// At most this many.
    pub limit: i64,
    /// Only those listed after this one (newest first): the creation time
    /// and id of the last row of the previous page.
    pub before: Option<(DateTime<Utc>, DelegationId)>,
}

/// `delegations` as read (`SELECT *`).
#[derive(sqlx::FromRow)]
pub(super) struct DelegationRow {
    id: DelegationId,
    caller_id: String,
    callee_id: WorkspaceId,
    task_preview: String,
    task: String,
    idempotency_key: String,
    status: String,
    result_preview: Option<String>,
    error_detail: Option<String>,
    deadline_at: Option<Ts>,
    last_heartbeat_at: Option<Ts>,
    created_at: Ts,
    updated_at: Ts,
    completed_at: Option<Ts>,
    traceparent: Option<String>,
}

impl TryFrom<DelegationRow> for Delegation {
    type Error = StoreError;
    fn try_from(r: DelegationRow) -> StoreResult<Self> {
        Ok(Delegation {
            id: r.id,
            caller: r
                .caller_id
                .parse::<Caller>()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            callee_id: r.callee_id,
            task_preview: r.task_preview,
            task: r.task,
            idempotency_key: r.idempotency_key,
            status: r
                .status
                .parse::<DelegationStatus>()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            result_preview: r.result_preview,
            error_detail: r.error_detail,
            deadline_at: r.deadline_at.map(|t| t.0),
            last_heartbeat_at: r.last_heartbeat_at.map(|t| t.0),
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
            completed_at: r.completed_at.map(|t| t.0),
            traceparent: r.traceparent.as_deref().and_then(domain::TraceParent::parse),
        })
    }
}

/// Statuses a delegation is still in flight in, as an SQL list.
pub(super) const IN_FLIGHT: &str = "('queued', 'dispatched', 'in_progress', 'stuck')";

/// The `error_detail` of a delegation failed because its callee was
/// removed.
pub const CALLEE_REMOVED: &str = "callee removed";

/// One move of a ledger row, decided before it is written.
pub(super) struct Move<'a> {
    pub(super) to: DelegationStatus,
    pub(super) result_preview: Option<String>,
    pub(super) error_detail: Option<String>,
    /// A callee report (a sign of life), not the sweeper.
    pub(super) beat: bool,
    pub(super) from: &'a Delegation,
}

/// The delegation ledger. Part of [`Store`]; both engines implement it below.
#[async_trait]
pub trait DelegationStore: Send + Sync {
    /// Inserts the ledger row and the callee's inbox row in ONE
    /// transaction, unless the caller used this idempotency key before:
    /// then the earlier row is returned and nothing is written, even when
    /// identical requests race (the UNIQUE constraint decides).
    async fn create_delegation(
        &self,
        new: &NewDelegation,
        inbox: &NewActivity,
        now: DateTime<Utc>,
    ) -> StoreResult<Delegated>;

    /// Writes a delegation refused before delivery (a spent budget) as
    /// `failed` with `reason`, and nothing in the callee's inbox: the
    /// ledger shows every refusal. `None` when the caller's key already
    /// names a delegation (a repeat, answered as one).
    async fn refuse_delegation(
        &self,
        new: &NewDelegation,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Delegation>>;

    /// Applies a callee's report through the status machine; on reaching
    /// completed or failed, a workspace caller's `delegation_result` row is
    /// written in the same transaction. Stamps `last_heartbeat_at`.
    async fn report_delegation(
        &self,
        callee: WorkspaceId,
        id: DelegationId,
        report: &StatusReport,
        now: DateTime<Utc>,
    ) -> StoreResult<ReportOutcome>;

    /// Stamps `last_heartbeat_at` of a delegation still in flight.
    async fn heartbeat_delegation(
        &self,
        callee: WorkspaceId,
        id: DelegationId,
        now: DateTime<Utc>,
    ) -> StoreResult<BeatOutcome>;

    /// One delegation.
    async fn get_delegation(&self, id: DelegationId) -> StoreResult<Option<Delegation>>;

    /// Delegations, newest first.
    async fn list_delegations(&self, filter: &DelegationFilter) -> StoreResult<Vec<Delegation>>;

    /// The sweeper's pass over up to `limit` rows in flight: past their
    /// deadline at `now` → failed (`deadline exceeded`, with the caller's
    /// result row); dispatched / in progress without a sign of life since
    /// `silent_before` → stuck (`no heartbeat for <N>s`).
    async fn sweep_delegations(
        &self,
        now: DateTime<Utc>,
        silent_before: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<Transitioned>>;

    /// Deletes up to `limit` completed or failed rows that ended before
    /// `before`; returns how many.
    async fn purge_delegations(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<u64>;

    /// Up to `limit` rows still queued since before `before` whose callee
    /// is a live, unpaused push workspace with a URL, oldest first: the
    /// ones nobody forwarded (see `crate::push`).
    async fn queued_push_delegations(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<Delegation>>;
}

engines! {
    impl SqlStore<DB> {
        /// Writes a decided move of a locked ledger row and, when it
        /// ends the delegation of a workspace caller, the caller's
        /// `delegation_result` row, inside the caller's transaction.
        pub(super) async fn apply_move_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            mv: Move<'_>,
            now: DateTime<Utc>,
        ) -> StoreResult<Transitioned> {
            let advance = mv.from.status != mv.to;
            let ends = advance && mv.to.is_terminal();
            let row: DelegationRow = sqlx::query_as(
                "UPDATE delegations SET status = $2, result_preview = $3, error_detail = $4, \
                   updated_at = $5, \
                   last_heartbeat_at = CASE WHEN $6 THEN $5 ELSE last_heartbeat_at END, \
                   completed_at = CASE WHEN $7 THEN $5 ELSE completed_at END \
                 WHERE id = $1 RETURNING *",
            )
            .bind(mv.from.id)
            .bind(mv.to.as_str())
            .bind(&mv.result_preview)
            .bind(&mv.error_detail)
            .bind(Ts(now))
            .bind(mv.beat)
            .bind(ends)
            .fetch_all(&mut *conn)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("UPDATE of a locked row missed it".into()))?;
            let delegation: Delegation = row.try_into()?;
            if advance {
                Self::move_hop_in(&mut *conn, delegation.id, mv.to, now).await?;
            }
            if super::a2a_push::a2a_visible(mv.from.status, mv.to) {
                Self::enqueue_push_in(&mut *conn, delegation.id, mv.to, now).await?;
            }
            let result_row = match (ends, delegation.caller.workspace()) {
                (true, Some(caller)) => Some(
                    Self::insert_activity_in(
                        &mut *conn,
                        caller,
                        &delegation.result_activity(),
                        now,
                    )
                    .await?,
                ),
                _ => None,
            };
            Ok(Transitioned {
                delegation,
                from: mv.from.status,
                result_row,
            })
        }

        /// Inserts a `queued` ledger row inside the caller's transaction,
        /// unless its caller used the key before: then nothing (`None`).
        pub(super) async fn insert_delegation_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            new: &NewDelegation,
            now: DateTime<Utc>,
        ) -> StoreResult<Option<DelegationRow>> {
            // ON CONFLICT DO NOTHING: a racing twin waits for the
            // winner's commit and then inserts nothing; the caller's read
            // (a fresh snapshot) finds the winner's row.
            let row: Option<DelegationRow> = sqlx::query_as(
                "INSERT INTO delegations (id, caller_id, callee_id, task_preview, task, \
                   idempotency_key, status, deadline_at, created_at, updated_at, traceparent) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, $8, $9) \
                 ON CONFLICT (caller_id, idempotency_key) DO NOTHING RETURNING *",
            )
            .bind(new.id)
            .bind(new.caller.to_string())
            .bind(new.callee_id)
            .bind(domain::truncate_chars(&new.task, domain::TASK_PREVIEW_CHARS))
            .bind(&new.task)
            .bind(&new.idempotency_key)
            .bind(new.deadline_at.map(Ts))
            .bind(Ts(now))
            .bind(new.trace.context.header())
            .fetch_all(&mut *conn)
            .await?
            .pop();
            if row.is_some() {
                Self::open_hop_in(&mut *conn, &new.hop_span("queued", now), now).await?;
            }
            Ok(row)
        }

        /// Fails every delegation in flight to `callee` (`callee
        /// removed`, with each workspace caller's result row), inside the
        /// transaction that removes it: no row stays in flight for a
        /// callee that can no longer answer.
        pub(super) async fn fail_callee_delegations_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            callee: WorkspaceId,
            now: DateTime<Utc>,
        ) -> StoreResult<Vec<Transitioned>> {
            let sql = format!(
                "SELECT * FROM delegations WHERE callee_id = $1 AND status IN {IN_FLIGHT} \
                 ORDER BY created_at, id{}",
                DB::ROW_LOCK
            );
            let rows: Vec<DelegationRow> = sqlx::query_as(&sql)
                .bind(callee)
                .fetch_all(&mut *conn)
                .await?;
            let mut failed = Vec::with_capacity(rows.len());
            for row in rows {
                let current: Delegation = row.try_into()?;
                let mv = Move {
                    to: DelegationStatus::Failed,
                    result_preview: current.result_preview.clone(),
                    error_detail: Some(CALLEE_REMOVED.to_owned()),
                    beat: false,
                    from: &current,
                };
                failed.push(Self::apply_move_in(&mut *conn, mv, now).await?);
            }
            Ok(failed)
        }

        /// A callee's delegation, locked until commit.
        pub(super) async fn lock_delegation(
            conn: &mut <DB as sqlx::Database>::Connection,
            callee: WorkspaceId,
            id: DelegationId,
        ) -> StoreResult<Option<Delegation>> {
            let sql = format!(
                "SELECT * FROM delegations WHERE id = $1 AND callee_id = $2{}",
                DB::ROW_LOCK
            );
            let row: Option<DelegationRow> = sqlx::query_as(&sql)
                .bind(id)
                .bind(callee)
                .fetch_optional(conn)
                .await?;
            row.map(TryInto::try_into).transpose()
        }
    }

    #[async_trait]
    impl DelegationStore for SqlStore<DB> {
        #[tracing::instrument(skip_all, fields(delegation_id = %new.id, callee_id = %new.callee_id))]
        async fn create_delegation(
            &self,
            new: &NewDelegation,
            inbox: &NewActivity,
            now: DateTime<Utc>,
        ) -> StoreResult<Delegated> {
            let mut tx = self.write_tx().await?;
            // The callee's row, locked: a removal either committed before
            // (no live row: nothing is written) or waits for this commit
            // and then fails the new row with the others in flight.
            if !Self::lock_workspace(&mut tx, new.callee_id).await? {
                return Ok(Delegated::CalleeGone);
            }
            let caller = new.caller.to_string();
            let inserted = Self::insert_delegation_in(&mut tx, new, now).await?;
            let Some(row) = inserted else {
                let existing: DelegationRow = sqlx::query_as(
                    "SELECT * FROM delegations WHERE caller_id = $1 AND idempotency_key = $2",
                )
                .bind(&caller)
                .bind(&new.idempotency_key)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                return Ok(Delegated::Existing(existing.try_into()?));
            };
            let inbox = Self::insert_activity_in(&mut tx, new.callee_id, inbox, now).await?;
            tx.commit().await?;
            Ok(Delegated::Created {
                delegation: row.try_into()?,
                inbox,
            })
        }

        #[tracing::instrument(skip_all, fields(delegation_id = %new.id, callee_id = %new.callee_id))]
        async fn refuse_delegation(
            &self,
            new: &NewDelegation,
            reason: &str,
            now: DateTime<Utc>,
        ) -> StoreResult<Option<Delegation>> {
            let mut tx = self.write_tx().await?;
            let row: Option<DelegationRow> = sqlx::query_as(
                "INSERT INTO delegations (id, caller_id, callee_id, task_preview, task, \
                   idempotency_key, status, error_detail, deadline_at, created_at, updated_at, \
                   completed_at, traceparent) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'failed', $7, $8, $9, $9, $9, $10) \
                 ON CONFLICT (caller_id, idempotency_key) DO NOTHING RETURNING *",
            )
            .bind(new.id)
            .bind(new.caller.to_string())
            .bind(new.callee_id)
            .bind(domain::truncate_chars(&new.task, domain::TASK_PREVIEW_CHARS))
            .bind(&new.task)
            .bind(&new.idempotency_key)
            .bind(reason)
            .bind(new.deadline_at.map(Ts))
            .bind(Ts(now))
            .bind(new.trace.context.header())
            .fetch_all(&mut *tx)
            .await?
            .pop();
            if row.is_some() {
                Self::open_hop_in(&mut tx, &new.hop_span("failed", now), now).await?;
            }
            tx.commit().await?;
            row.map(TryInto::try_into).transpose()
        }

        #[tracing::instrument(skip_all, fields(delegation_id = %id, callee_id = %callee))]
        async fn report_delegation(
            &self,
            callee: WorkspaceId,
            id: DelegationId,
            report: &StatusReport,
            now: DateTime<Utc>,
        ) -> StoreResult<ReportOutcome> {
            let mut tx = self.write_tx().await?;
            let Some(current) = Self::lock_delegation(&mut tx, callee, id).await? else {
                return Ok(ReportOutcome::NotFound);
            };
            // The machine decides on the locked row, so two racing
            // reports are applied one after the other, never past it.
            if let Err(refused) = current.status.transition(report.status) {
                return Ok(ReportOutcome::Refused(refused));
            }
            let mv = Move {
                to: report.status,
                result_preview: domain::merge_text(
                    current.result_preview.as_deref(),
                    report.result_preview.as_deref(),
                ),
                error_detail: domain::merge_text(
                    current.error_detail.as_deref(),
                    report.error_detail.as_deref(),
                ),
                beat: true,
                from: &current,
            };
            let done = Self::apply_move_in(&mut tx, mv, now).await?;
            tx.commit().await?;
            Ok(ReportOutcome::Applied(done))
        }

        async fn heartbeat_delegation(
            &self,
            callee: WorkspaceId,
            id: DelegationId,
            now: DateTime<Utc>,
        ) -> StoreResult<BeatOutcome> {
            let mut tx = self.write_tx().await?;
            let Some(current) = Self::lock_delegation(&mut tx, callee, id).await? else {
                return Ok(BeatOutcome::NotFound);
            };
            if current.status.is_terminal() {
                return Ok(BeatOutcome::Over(current.status));
            }
            let row: DelegationRow = sqlx::query_as(
                "UPDATE delegations SET last_heartbeat_at = $2 WHERE id = $1 RETURNING *",
            )
            .bind(id)
            .bind(Ts(now))
            .fetch_all(&mut *tx)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("UPDATE of a locked row missed it".into()))?;
            tx.commit().await?;
            Ok(BeatOutcome::Beat(row.try_into()?))
        }

        async fn get_delegation(&self, id: DelegationId) -> StoreResult<Option<Delegation>> {
            let row: Option<DelegationRow> =
                sqlx::query_as("SELECT * FROM delegations WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
            row.map(TryInto::try_into).transpose()
        }

        async fn list_delegations(
            &self,
            filter: &DelegationFilter,
        ) -> StoreResult<Vec<Delegation>> {
            let mut sql = String::from("SELECT * FROM delegations WHERE 1 = 1");
            let mut n = 0;
            let mut next = || {
                n += 1;
                format!("${n}")
            };
            if let Some((_, role)) = filter.party {
                match role {
                    PartyRole::Caller => sql += &format!(" AND caller_id = {}", next()),
                    PartyRole::Callee => sql += &format!(" AND callee_id = {}", next()),
                    PartyRole::Either => {
                        sql += &format!(" AND (caller_id = {} OR callee_id = {})", next(), next())
                    }
                }
            }
            if filter.status.is_some() {
                sql += &format!(" AND status = {}", next());
            }
            if filter.before.is_some() {
                let (at, id) = (next(), next());
                sql += &format!(" AND (created_at < {at} OR (created_at = {at} AND id < {id}))");
            }
            sql += &format!(" ORDER BY created_at DESC, id DESC LIMIT {}", next());
            let mut query = sqlx::query_as::<_, DelegationRow>(&sql);
            if let Some((ws, role)) = filter.party {
                if role != PartyRole::Callee {
                    query = query.bind(ws.to_string());
                }
                if role != PartyRole::Caller {
                    query = query.bind(ws);
                }
            }
            if let Some(status) = filter.status {
                query = query.bind(status.as_str());
            }
            if let Some((at, id)) = filter.before {
                query = query.bind(Ts(at)).bind(id);
            }
            let rows = query.bind(filter.limit).fetch_all(&self.pool).await?;
            rows.into_iter().map(TryInto::try_into).collect()
        }

        async fn queued_push_delegations(
            &self,
            before: DateTime<Utc>,
            limit: i64,
        ) -> StoreResult<Vec<Delegation>> {
            let rows: Vec<DelegationRow> = sqlx::query_as(
                "SELECT d.* FROM delegations d JOIN workspaces w ON w.id = d.callee_id \
                 WHERE d.status = 'queued' AND d.created_at < $1 \
                   AND w.delivery_mode = 'push' AND w.url IS NOT NULL \
                   AND w.removed_at IS NULL AND w.paused_at IS NULL \
                 ORDER BY d.created_at, d.id LIMIT $2",
            )
            .bind(Ts(before))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(TryInto::try_into).collect()
        }

        async fn sweep_delegations(
            &self,
            now: DateTime<Utc>,
            silent_before: DateTime<Utc>,
            limit: i64,
        ) -> StoreResult<Vec<Transitioned>> {
            let mut tx = self.write_tx().await?;
            // Locked: a callee report racing the sweep waits (or makes
            // the row no longer match), so the two never cross.
            let sql = format!(
                "SELECT * FROM delegations WHERE status IN {IN_FLIGHT} AND ( \
                   (deadline_at IS NOT NULL AND deadline_at <= $1) \
                   OR (status IN ('dispatched', 'in_progress') \
                       AND COALESCE(last_heartbeat_at, updated_at) < $2)) \
                 ORDER BY created_at LIMIT $3{}",
                DB::ROW_LOCK
            );
            let rows: Vec<DelegationRow> = sqlx::query_as(&sql)
                .bind(Ts(now))
                .bind(Ts(silent_before))
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
            let mut moved = Vec::with_capacity(rows.len());
            for row in rows {
                let current: Delegation = row.try_into()?;
                let overdue = current.deadline_at.is_some_and(|d| d <= now);
                let (to, error) = if overdue {
                    (DelegationStatus::Failed, "deadline exceeded".to_owned())
                } else {
                    let since = current.last_heartbeat_at.unwrap_or(current.updated_at);
                    let silent = (now - since).num_seconds();
                    (DelegationStatus::Stuck, format!("no heartbeat for {silent}s"))
                };
                if current.status.transition(to) != Ok(Transition::Advance) {
                    continue;
                }
                let mv = Move {
                    to,
                    result_preview: current.result_preview.clone(),
                    error_detail: Some(error),
                    beat: false,
                    from: &current,
                };
                moved.push(Self::apply_move_in(&mut tx, mv, now).await?);
            }
            tx.commit().await?;
            Ok(moved)
        }

        async fn purge_delegations(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<u64> {
            let mut tx = self.write_tx().await?;
            let done = sqlx::query(
                "DELETE FROM delegations WHERE id IN ( \
                   SELECT id FROM delegations \
                   WHERE completed_at IS NOT NULL AND completed_at < $1 \
                   ORDER BY completed_at LIMIT $2)",
            )
            .bind(Ts(before))
            .bind(limit)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(done.rows_affected())
        }
    }
}
