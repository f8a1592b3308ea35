//! The vocabulary of molecule: identifiers, delivery modes, sanitized file
//! names and mimetypes, tokens and limits, secret and plugin names, the
//! communication rule between workspaces ([`team`]), the lifecycle of a
//! workspace (status, tier, runtime, model), org templates, the
//! delegation status machine, the inbox protocol ([`inbox`]) and schedules
//! ([`schedule`]).
//!
//! Everything here is pure: no I/O, no axum, no sqlx. A value of one of these
//! types is valid by construction ("parse, don't validate"), so the layers
//! above never re-check what a type already guarantees.

pub mod approval;
pub mod audit;
mod delegation;
mod filename;
mod ids;
pub mod inbox;
pub mod instruction;
mod lifecycle;
mod mcp;
pub mod memory;
mod mimetype;
mod mode;
mod names;
mod period;
pub mod schedule;
pub mod search;
pub mod team;
mod template;
mod token;
pub mod trace;
mod url;
pub mod usage;

pub use delegation::{
    merge_text, truncate_chars, Caller, DelegationStatus, Refused, StatusError, Transition,
    PREVIEW_CHARS, TASK_PREVIEW_CHARS,
};
pub use filename::Filename;
pub use ids::{
    ApprovalId, DelegationId, FileId, FireId, IdError, InstructionId, MemoryId, ScheduleId,
    TokenId, WorkspaceId,
};
pub use inbox::{InboxItem, InboxRow};
pub use lifecycle::{
    default_model, resolve_model, resolve_runtime, HeartbeatError, HeartbeatReport, Liveness,
    NameError, Tier, TierError, WorkspaceStatus, CLAUDE_CODE, DEFAULT_RUNTIME,
    DEFAULT_UNIVERSAL_MODEL,
};
pub use mcp::{mcp_client_config, mcp_setup_text, mcp_url, MCP_TOKEN_ENV};
pub use mimetype::Mimetype;
pub use mode::{DeliveryMode, ModeError};
pub use names::{
    PluginName, PluginNameError, SecretName, SecretNameError, WorkspaceName, WorkspaceNameError,
};
pub use period::{Period, PeriodError, MAX_PERIOD_SECS};
pub use template::{
    nesting_bound, FlatNode, OrgTemplate, TemplateDefaults, TemplateError, TemplateFormat,
    TemplateNode, TemplateSchedule, MAX_NESTING, MAX_TEMPLATE_DEPTH, MAX_TEMPLATE_NODES,
};
pub use token::{AuthToken, Role, TokenHash, TokenKey, TokenPrefix};
pub use trace::{Hop, TraceParent};
pub use url::{is_internal_ip, CallbackUrl, UrlError};

use chrono::{DateTime, SubsecRound, Utc};

/// The current time, truncated to microseconds: the precision both SQL
/// engines keep, so a timestamp written and read back compares equal.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Size limits for chat uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Largest accepted file, in bytes.
    pub max_file_size: u64,
    /// Largest accepted sum of file sizes in one request, in bytes.
    pub max_request_size: u64,
}

/// The URI under which a staged file is announced to a poll-mode workspace.
pub fn pending_uri(workspace_id: WorkspaceId, file_id: FileId) -> String {
    format!("platform-pending:{workspace_id}/{file_id}")
}

/// Splits a `platform-pending:<workspace_id>/<file_id>` URI into its ids.
pub fn parse_pending_uri(uri: &str) -> Option<(WorkspaceId, FileId)> {
    let rest = uri.strip_prefix("platform-pending:")?;
    let (ws, file) = rest.split_once('/')?;
    Some((ws.parse().ok()?, file.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_uri_round_trips() {
        let ws = WorkspaceId::new();
        let file = FileId::new();
        let uri = pending_uri(ws, file);
        assert_eq!(parse_pending_uri(&uri), Some((ws, file)));
        assert_eq!(parse_pending_uri("workspace:/tmp/x"), None);
        assert_eq!(parse_pending_uri("platform-pending:nope/nope"), None);
    }
}
