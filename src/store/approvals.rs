//! Approval requests and their one decision.
//!
//! Every move is ONE transaction that also writes the inbox row it owes:
//! a request (or an escalation) writes an `approval_requested` row in the
//! inbox of the workspace that may now decide it, a decision (or an expiry
//! that decides) writes the `approval_decided` row in the requester's
//! inbox. So a decision the database kept is a decision the agent will
//! read, whatever restarts in between.
//!
//! A move the server audits (every one a route or the expiry job makes)
//! appends its audit row in that same transaction ([`AuditIn`]): the
//! request, the decision or the expiry commits with its row or not at all.
//!
//! Exactly once: a decision is a conditional `UPDATE … WHERE status =
//! 'pending' AND <the caller may decide>`; of racing deciders the database
//! lets one through (PostgreSQL re-checks the `WHERE` on the row the winner
//! committed, SQLite has one writer), and the others read back the decision
//! that won. The expiry job claims due rows with `FOR UPDATE SKIP LOCKED`
//! and decides them through the same conditional `UPDATE`, so a person and
//! the clock cannot both decide.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::engine::Engine;
use super::sql::{SqlStore, Ts};
use super::*;
use crate::domain::approval::{ApprovalStatus, DecidedBy, Decision, OnExpiry};
use crate::domain::inbox::{ApprovalDecided, ApprovalRequested, InboxItem};
use crate::domain::ApprovalId;

/// An approval request as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    /// Its id.
    pub id: ApprovalId,
    /// The requesting workspace.
    pub workspace_id: WorkspaceId,
    /// What it asks to do.
    pub action: String,
    /// Why.
    pub reason: Option<String>,
    /// Anything it adds for the decider.
    pub context: Option<Value>,
    /// Its own task id.
    pub task_id: Option<String>,
    /// `pending`, `approved` or `denied`.
    pub status: ApprovalStatus,
    /// The workspace that may decide now besides the operator; `None`:
    /// the operator alone.
    pub approver_id: Option<WorkspaceId>,
    /// What expiry does.
    pub on_expiry: OnExpiry,
    /// Each decider's window, in seconds.
    pub expires_in_s: i64,
    /// When expiry acts; `None` once decided or while the operator holds
    /// an escalated request.
    pub expires_at: Option<DateTime<Utc>>,
    /// Hand-ups so far.
    pub escalations: i32,
    /// Who decided.
    pub decided_by: Option<DecidedBy>,
    /// The decider's note.
    pub note: Option<String>,
    /// When it was asked.
    pub created_at: DateTime<Utc>,
    /// When it was decided.
    pub decided_at: Option<DateTime<Utc>>,
}

impl Approval {
    /// The decision, once made.
    pub fn decision(&self) -> Option<Decision> {
        self.status.decision()
    }
}

/// A request, checked by the route.
#[derive(Debug, Clone)]
pub struct NewApproval {
    /// 1 to 200 characters.
    pub action: String,
    /// Why.
    pub reason: Option<String>,
    /// Any JSON.
    pub context: Option<Value>,
    /// The agent's task id.
    pub task_id: Option<String>,
    /// Each decider's window, in seconds (> 0).
    pub expires_in_s: i64,
    /// What expiry does.
    pub on_expiry: OnExpiry,
}

/// How a decision ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    /// This call decided it; the requester's inbox row written with it.
    Done(Approval, Box<Activity>),
    /// Someone decided first: the request as they left it.
    Already(Approval),
    /// No such request of that workspace, or not one the caller may decide.
    NotFound,
}

/// What the expiry job did to one due request.
#[derive(Debug, Clone, PartialEq)]
pub enum Expired {
    /// Decided by its `on_expiry` (`decided_by: expired`); the requester's
    /// inbox row.
    Decided(Approval, Activity),
    /// Handed up: to the next ancestor (with its inbox row), or to the
    /// operator (`approver_id` `None`, no row).
    Escalated(Approval, Option<Activity>),
}

/// `approvals` as read, in [`APPROVAL_COLUMNS`].
#[derive(sqlx::FromRow)]
struct ApprovalRow {
    id: ApprovalId,
    workspace_id: WorkspaceId,
    action: String,
    reason: Option<String>,
    context: Option<Json<Value>>,
    task_id: Option<String>,
    status: String,
    approver_id: Option<WorkspaceId>,
    on_expiry: String,
    expires_in_s: i64,
    expires_at: Option<Ts>,
    escalations: i32,
    decided_by: Option<String>,
    note: Option<String>,
    created_at: Ts,
    decided_at: Option<Ts>,
}

impl TryFrom<ApprovalRow> for Approval {
    type Error = StoreError;
    fn try_from(r: ApprovalRow) -> StoreResult<Self> {
        let corrupt = |e: String| StoreError::Corrupt(format!("approval {}: {e}", r.id));
        Ok(Approval {
            status: r.status.parse().map_err(|e: WordErr| corrupt(e.to_string()))?,
            on_expiry: r.on_expiry.parse().map_err(|e: WordErr| corrupt(e.to_string()))?,
            decided_by: r
                .decided_by
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e: crate::domain::IdError| corrupt(e.to_string()))?,
            id: r.id,
            workspace_id: r.workspace_id,
            action: r.action,
            reason: r.reason,
            context: r.context.map(|j| j.0),
            task_id: r.task_id,
            approver_id: r.approver_id,
            expires_in_s: r.expires_in_s,
            expires_at: r.expires_at.map(|t| t.0),
            escalations: r.escalations,
            note: r.note,
            created_at: r.created_at.0,
            decided_at: r.decided_at.map(|t| t.0),
        })
    }
}

type WordErr = crate::domain::approval::WordError;

const APPROVAL_COLUMNS: &str = "id, workspace_id, action, reason, context, task_id, status, \
     approver_id, on_expiry, expires_in_s, expires_at, escalations, decided_by, note, \
     created_at, decided_at";

/// At most this many ancestors are walked looking for a live one (the
/// tree is far shallower; the bound only guards against a corrupt cycle).
const MAX_DEPTH: usize = 64;

/// Approval requests. Part of [`Store`]; both engines implement it below.
#[async_trait]
pub trait ApprovalStore: Send + Sync {
    /// Records a pending request of a live workspace, to be decided by its
    /// nearest live ancestor (or the operator alone, for a root), with the
    /// `approval_requested` row of that ancestor's inbox. `None` when the
    /// workspace is absent or removed.
    async fn create_approval(
        &self,
        workspace_id: WorkspaceId,
        new: &NewApproval,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(Approval, Option<Activity>)>> {
        self.create_approval_audited(workspace_id, new, now, None)
            .await
    }

    /// [`ApprovalStore::create_approval`], with `audit`'s row appended in
    /// the same transaction.
    async fn create_approval_audited(
        &self,
        workspace_id: WorkspaceId,
        new: &NewApproval,
        now: DateTime<Utc>,
        audit: Option<&AuditIn<'_, Approval>>,
    ) -> StoreResult<Option<(Approval, Option<Activity>)>>;

    /// A workspace's requests, newest first, of one status if given.
    async fn list_approvals(
        &self,
        workspace_id: WorkspaceId,
        status: Option<ApprovalStatus>,
    ) -> StoreResult<Vec<Approval>>;

    /// Pending requests a decider may decide, oldest first: the operator
    /// (`None`) every pending request of the fleet, a workspace those whose
    /// `approver_id` it is.
    async fn pending_approvals_for(
        &self,
        decider: Option<WorkspaceId>,
    ) -> StoreResult<Vec<Approval>>;

    /// One request of a workspace.
    async fn get_approval(
        &self,
        workspace_id: WorkspaceId,
        id: ApprovalId,
    ) -> StoreResult<Option<Approval>>;

    /// Decides a pending request, exactly once (see the module docs). `by`
    /// is the operator or a workspace; a workspace may decide only while
    /// it is the request's `approver_id` (anything else is
    /// [`Decided::NotFound`], as for an unknown id).
    async fn decide_approval(
        &self,
        workspace_id: WorkspaceId,
        id: ApprovalId,
        by: DecidedBy,
        decision: Decision,
        note: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<Decided> {
        self.decide_approval_audited(workspace_id, id, by, decision, note, now, None)
            .await
    }

    /// [`ApprovalStore::decide_approval`], with `audit`'s row appended in
    /// the same transaction when this call decides.
    #[allow(clippy::too_many_arguments)]
    async fn decide_approval_audited(
        &self,
        workspace_id: WorkspaceId,
        id: ApprovalId,
        by: DecidedBy,
        decision: Decision,
        note: Option<&str>,
        now: DateTime<Utc>,
        audit: Option<&AuditIn<'_, Approval>>,
    ) -> StoreResult<Decided>;

    /// Applies `on_expiry` to the oldest pending request due at `now`, if
    /// any, with `audit`'s row of what it did; one transaction.
    async fn expire_next_approval(
        &self,
        now: DateTime<Utc>,
        audit: Option<&AuditIn<'_, Expired>>,
    ) -> StoreResult<Option<Expired>>;
}

engines! {
    impl SqlStore<DB> {
        /// The nearest live ancestor of `of`, if any.
        async fn live_ancestor(
            conn: &mut <DB as sqlx::Database>::Connection,
            of: WorkspaceId,
        ) -> StoreResult<Option<WorkspaceId>> {
            let mut at = of;
            for _ in 0..MAX_DEPTH {
                let parent: Option<(Option<WorkspaceId>,)> =
                    sqlx::query_as("SELECT parent_id FROM workspaces WHERE id = $1")
                        .bind(at)
                        .fetch_optional(&mut *conn)
                        .await?;
                let Some(parent) = parent.and_then(|p| p.0) else {
                    return Ok(None);
                };
                let live: Option<(WorkspaceId,)> = sqlx::query_as(
                    "SELECT id FROM workspaces WHERE id = $1 AND removed_at IS NULL",
                )
                .bind(parent)
                .fetch_optional(&mut *conn)
                .await?;
                if live.is_some() {
                    return Ok(Some(parent));
                }
                at = parent;
            }
            Ok(None)
        }

        /// The `approval_requested` row in the decider's inbox, when a
        /// workspace (not the operator alone) may decide `a`.
        async fn announce_request_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            a: &Approval,
            now: DateTime<Utc>,
        ) -> StoreResult<Option<Activity>> {
            let Some(approver_id) = a.approver_id else {
                return Ok(None);
            };
            let item = InboxItem::ApprovalRequested(ApprovalRequested {
                approval_id: a.id,
                workspace_id: a.workspace_id,
                approver_id,
                action: a.action.clone(),
                reason: a.reason.clone(),
                context: a.context.clone(),
                expires_at: a.expires_at,
            });
            let row = Self::insert_activity_in(conn, approver_id, &item.row(), now).await?;
            Ok(Some(row))
        }

        /// Writes the decision `status`/`by` if `id` is still pending (and,
        /// for a workspace, still `approver_id` = `by`), with the
        /// requester's inbox row; `None` when the condition failed.
        async fn decide_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            id: ApprovalId,
            by: DecidedBy,
            decision: Decision,
            note: Option<&str>,
            now: DateTime<Utc>,
        ) -> StoreResult<Option<(Approval, Activity)>> {
            let approver = match by {
                DecidedBy::Workspace(ws) => Some(ws),
                DecidedBy::Operator | DecidedBy::Expired => None,
            };
            let sql = format!(
                "UPDATE approvals SET status = $2, decided_by = $3, note = $4, \
                   decided_at = $5, expires_at = NULL \
                 WHERE id = $1 AND status = 'pending' AND ($6 OR approver_id = $7) \
                 RETURNING {APPROVAL_COLUMNS}"
            );
            let row: Option<ApprovalRow> = sqlx::query_as(&sql)
                .bind(id)
                .bind(decision.status().as_str())
                .bind(by.to_string())
                .bind(note)
                .bind(Ts(now))
                .bind(approver.is_none())
                .bind(approver)
                .fetch_all(&mut *conn)
                .await?
                .pop();
            let Some(row) = row else { return Ok(None) };
            let a = Approval::try_from(row)?;
            let item = InboxItem::ApprovalDecided(ApprovalDecided {
                approval_id: a.id,
                workspace_id: a.workspace_id,
                action: a.action.clone(),
                task_id: a.task_id.clone(),
                decision,
                decided_by: by,
                note: a.note.clone(),
                decided_at: now,
            });
            let inbox = Self::insert_activity_in(conn, a.workspace_id, &item.row(), now).await?;
            Ok(Some((a, inbox)))
        }

        async fn escalate_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            a: &Approval,
            now: DateTime<Utc>,
        ) -> StoreResult<Expired> {
            // Past the current decider; a request the operator alone
            // holds stays with them, with no expiry.
            let next = match a.approver_id {
                Some(current) => Self::live_ancestor(&mut *conn, current).await?,
                None => None,
            };
            let expires_at = next.map(|_| now + Duration::seconds(a.expires_in_s));
            let sql = format!(
                "UPDATE approvals SET approver_id = $2, expires_at = $3, \
                   escalations = escalations + 1 \
                 WHERE id = $1 AND status = 'pending' RETURNING {APPROVAL_COLUMNS}"
            );
            let row: ApprovalRow = sqlx::query_as(&sql)
                .bind(a.id)
                .bind(next)
                .bind(expires_at.map(Ts))
                .fetch_one(&mut *conn)
                .await?;
            let a = Approval::try_from(row)?;
            let inbox = Self::announce_request_in(&mut *conn, &a, now).await?;
            Ok(Expired::Escalated(a, inbox))
        }
    }

    #[async_trait]
    impl ApprovalStore for SqlStore<DB> {
        #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id))]
        async fn create_approval_audited(
            &self,
            workspace_id: WorkspaceId,
            new: &NewApproval,
            now: DateTime<Utc>,
            audit: Option<&AuditIn<'_, Approval>>,
        ) -> StoreResult<Option<(Approval, Option<Activity>)>> {
            let mut tx = self.write_tx().await?;
            let live: Option<(WorkspaceId,)> = sqlx::query_as(&format!(
                "SELECT id FROM workspaces WHERE id = $1 AND removed_at IS NULL{}",
                DB::ROW_LOCK
            ))
            .bind(workspace_id)
            .fetch_optional(&mut *tx)
            .await?;
            if live.is_none() {
                tx.rollback().await?;
                return Ok(None);
            }
            let approver = Self::live_ancestor(&mut tx, workspace_id).await?;
            let sql = format!(
                "INSERT INTO approvals (id, workspace_id, action, reason, context, task_id, \
                   status, approver_id, on_expiry, expires_in_s, expires_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $10, $11) \
                 RETURNING {APPROVAL_COLUMNS}"
            );
            let row: ApprovalRow = sqlx::query_as(&sql)
                .bind(ApprovalId::new())
                .bind(workspace_id)
                .bind(&new.action)
                .bind(&new.reason)
                .bind(new.context.as_ref().map(Json))
                .bind(&new.task_id)
                .bind(approver)
                .bind(new.on_expiry.as_str())
                .bind(new.expires_in_s)
                .bind(Ts(now + Duration::seconds(new.expires_in_s)))
                .bind(Ts(now))
                .fetch_one(&mut *tx)
                .await?;
            let a = Approval::try_from(row)?;
            let inbox = Self::announce_request_in(&mut tx, &a, now).await?;
            if let Some(audit) = audit {
                Self::append_audit_in(&mut tx, audit.key, &(audit.row)(&a), now).await?;
            }
            tx.commit().await?;
            Ok(Some((a, inbox)))
        }

        async fn list_approvals(
            &self,
            workspace_id: WorkspaceId,
            status: Option<ApprovalStatus>,
        ) -> StoreResult<Vec<Approval>> {
            let sql = format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE workspace_id = $1 \
                   AND (CAST($2 AS TEXT) IS NULL OR status = $2) \
                 ORDER BY created_at DESC, id"
            );
            let rows: Vec<ApprovalRow> = sqlx::query_as(&sql)
                .bind(workspace_id)
                .bind(status.map(ApprovalStatus::as_str))
                .fetch_all(&self.pool)
                .await?;
            rows.into_iter().map(Approval::try_from).collect()
        }

        async fn pending_approvals_for(
            &self,
            decider: Option<WorkspaceId>,
        ) -> StoreResult<Vec<Approval>> {
            let sql = format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE status = 'pending' \
                   AND ($1 OR approver_id = $2) ORDER BY created_at, id"
            );
            let rows: Vec<ApprovalRow> = sqlx::query_as(&sql)
                .bind(decider.is_none())
                .bind(decider)
                .fetch_all(&self.pool)
                .await?;
            rows.into_iter().map(Approval::try_from).collect()
        }

        async fn get_approval(
            &self,
            workspace_id: WorkspaceId,
            id: ApprovalId,
        ) -> StoreResult<Option<Approval>> {
            let sql = format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1 AND workspace_id = $2"
            );
            let row: Option<ApprovalRow> = sqlx::query_as(&sql)
                .bind(id)
                .bind(workspace_id)
                .fetch_optional(&self.pool)
                .await?;
            row.map(Approval::try_from).transpose()
        }

        #[tracing::instrument(skip_all, fields(approval_id = %id))]
        async fn decide_approval_audited(
            &self,
            workspace_id: WorkspaceId,
            id: ApprovalId,
            by: DecidedBy,
            decision: Decision,
            note: Option<&str>,
            now: DateTime<Utc>,
            audit: Option<&AuditIn<'_, Approval>>,
        ) -> StoreResult<Decided> {
            let mut tx = self.write_tx().await?;
            let sql = format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1 AND workspace_id = $2"
            );
            let current: Option<ApprovalRow> = sqlx::query_as(&sql)
                .bind(id)
                .bind(workspace_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(current) = current.map(Approval::try_from).transpose()? else {
                tx.rollback().await?;
                return Ok(Decided::NotFound);
            };
            if let Some((a, inbox)) = Self::decide_in(&mut tx, id, by, decision, note, now).await? {
                if let Some(audit) = audit {
                    Self::append_audit_in(&mut tx, audit.key, &(audit.row)(&a), now).await?;
                }
                tx.commit().await?;
                return Ok(Decided::Done(a, Box::new(inbox)));
            }
            // Lost: re-read what the winner committed (the first read may
            // predate it).
            let after: Option<ApprovalRow> = sqlx::query_as(&sql)
                .bind(id)
                .bind(workspace_id)
                .fetch_optional(&mut *tx)
                .await?;
            tx.rollback().await?;
            let after = after.map(Approval::try_from).transpose()?.unwrap_or(current);
            // A workspace that is not (or, once decided, was not last) the
            // decider learns nothing about the request.
            let may_see = match by {
                DecidedBy::Workspace(ws) => after.approver_id == Some(ws),
                DecidedBy::Operator | DecidedBy::Expired => true,
            };
            Ok(match (after.status, may_see) {
                (ApprovalStatus::Approved | ApprovalStatus::Denied, true) => Decided::Already(after),
                _ => Decided::NotFound,
            })
        }

        #[tracing::instrument(skip_all)]
        async fn expire_next_approval(
            &self,
            now: DateTime<Utc>,
            audit: Option<&AuditIn<'_, Expired>>,
        ) -> StoreResult<Option<Expired>> {
            let mut tx = self.write_tx().await?;
            let sql = format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals \
                 WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= $1 \
                 ORDER BY expires_at, id LIMIT 1{}",
                DB::SKIP_LOCKED
            );
            let due: Option<ApprovalRow> = sqlx::query_as(&sql)
                .bind(Ts(now))
                .fetch_optional(&mut *tx)
                .await?;
            let Some(due) = due.map(Approval::try_from).transpose()? else {
                tx.rollback().await?;
                return Ok(None);
            };
            let out = match due.on_expiry.decision() {
                Some(decision) => {
                    let decided =
                        Self::decide_in(&mut tx, due.id, DecidedBy::Expired, decision, None, now)
                            .await?;
                    let (a, inbox) = decided.ok_or_else(|| {
                        StoreError::Corrupt(format!("claimed approval {} was not pending", due.id))
                    })?;
                    Expired::Decided(a, inbox)
                }
                None => Self::escalate_in(&mut tx, &due, now).await?,
            };
            if let Some(audit) = audit {
                Self::append_audit_in(&mut tx, audit.key, &(audit.row)(&out), now).await?;
            }
            tx.commit().await?;
            Ok(Some(out))
        }
    }
}
