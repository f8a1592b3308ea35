//! The inbox rows of approvals: a decision in the requester's inbox
//! ([`ApprovalDecided`]), and a request in the inbox of the workspace that
//! may decide it ([`ApprovalRequested`]), both `a2a_receive` rows so a
//! long poll wakes at once. Their `data` is the struct itself, field for
//! field.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{unreadable, InboxRow, Unreadable, APPROVAL_DECIDED, APPROVAL_REQUESTED, INBOX_TYPE};
use crate::domain::approval::{DecidedBy, Decision};
use crate::domain::{truncate_chars, ApprovalId, WorkspaceId};

/// The one decision on a workspace's approval request, in its inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalDecided {
    /// The request.
    pub approval_id: ApprovalId,
    /// The requesting workspace (the inbox's owner).
    pub workspace_id: WorkspaceId,
    /// What it asked to do.
    pub action: String,
    /// Its own task id, as it sent it.
    pub task_id: Option<String>,
    /// Yes or no.
    pub decision: Decision,
    /// `operator`, the deciding workspace's id, or `expired`.
    pub decided_by: DecidedBy,
    /// The decider's note.
    pub note: Option<String>,
    /// When.
    pub decided_at: DateTime<Utc>,
}

/// A request the inbox's owner may decide (it is the requester's nearest
/// ancestor, or the request was escalated to it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequested {
    /// The request.
    pub approval_id: ApprovalId,
    /// Who asks.
    pub workspace_id: WorkspaceId,
    /// Who may decide (the inbox's owner).
    pub approver_id: WorkspaceId,
    /// What it asks to do.
    pub action: String,
    /// Why.
    pub reason: Option<String>,
    /// Anything it adds.
    pub context: Option<Value>,
    /// When it expires (and `on_expiry` applies) unless decided.
    pub expires_at: Option<DateTime<Utc>>,
}

fn parse_data<T: serde::de::DeserializeOwned>(
    kind: &'static str,
    row: &InboxRow,
) -> Result<T, Unreadable> {
    let data = row
        .data
        .clone()
        .ok_or_else(|| unreadable(kind, "no `data`"))?;
    serde_json::from_value(data).map_err(|e| unreadable(kind, e))
}

impl ApprovalDecided {
    pub(super) fn row(&self) -> InboxRow {
        InboxRow {
            activity_type: INBOX_TYPE.into(),
            method: Some(APPROVAL_DECIDED.into()),
            source_id: Some(self.decided_by.to_string()),
            target_id: Some(self.workspace_id.to_string()),
            summary: Some(truncate_chars(
                &format!("approval {}: {}", self.decision, self.action),
                120,
            )),
            status: Some(self.decision.as_str().into()),
            data: Some(json!(self)),
            ..InboxRow::default()
        }
    }

    pub(super) fn parse(row: &InboxRow) -> Result<Self, Unreadable> {
        parse_data(APPROVAL_DECIDED, row)
    }
}

impl ApprovalRequested {
    pub(super) fn row(&self) -> InboxRow {
        InboxRow {
            activity_type: INBOX_TYPE.into(),
            method: Some(APPROVAL_REQUESTED.into()),
            source_id: Some(self.workspace_id.to_string()),
            target_id: Some(self.approver_id.to_string()),
            summary: Some(truncate_chars(
                &format!("approval requested: {}", self.action),
                120,
            )),
            status: Some("pending".into()),
            data: Some(json!(self)),
            ..InboxRow::default()
        }
    }

    pub(super) fn parse(row: &InboxRow) -> Result<Self, Unreadable> {
        parse_data(APPROVAL_REQUESTED, row)
    }
}
