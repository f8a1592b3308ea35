//! The inbox row that tells a workspace its platform instructions changed
//! ([`InstructionsChanged`]): an `a2a_receive` row, so a long poll wakes
//! at once, and `connect` fetches the resolved text again. It names the
//! instruction and what happened to it, never the text (the text is
//! resolved per workspace, on read).

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{unreadable, InboxRow, Unreadable, INBOX_TYPE, INSTRUCTIONS_CHANGED};
use crate::domain::{InstructionId, WorkspaceId};

/// An instruction that applies to the inbox's owner was created, changed or
/// deleted: its resolved instructions may read differently now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstructionsChanged {
    /// The workspace whose instructions changed (the inbox's owner).
    pub workspace_id: WorkspaceId,
    /// The instruction.
    pub instruction_id: InstructionId,
    /// `created`, `updated` or `deleted`.
    pub change: String,
}

impl InstructionsChanged {
    pub(super) fn row(&self) -> InboxRow {
        InboxRow {
            activity_type: INBOX_TYPE.into(),
            method: Some(INSTRUCTIONS_CHANGED.into()),
            source_id: Some("operator".into()),
            target_id: Some(self.workspace_id.to_string()),
            summary: Some(format!("platform instructions {}", self.change)),
            data: Some(json!(self)),
            ..InboxRow::default()
        }
    }

    pub(super) fn parse(row: &InboxRow) -> Result<Self, Unreadable> {
        let data = row
            .data
            .clone()
            .ok_or_else(|| unreadable(INSTRUCTIONS_CHANGED, "no `data`"))?;
        serde_json::from_value(data).map_err(|e| unreadable(INSTRUCTIONS_CHANGED, e))
    }
}
