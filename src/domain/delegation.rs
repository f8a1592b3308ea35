//! The delegation status machine: the one place that decides which status
//! reports move a ledger row, which are harmless repeats, and which are
//! refused.
//!
//! Forward only: `queued → dispatched → in_progress → completed | failed`
//! (skipping ahead is still forward). `stuck` is set by the sweeper on a
//! dispatched or in-progress row whose callee went silent; the callee may
//! come back from it to `in_progress`, `completed` or `failed`. Reporting
//! the status a row already has is a no-op for the status, but a non-empty
//! `result_preview` / `error_detail` it carries is still applied: Molecule
//! once lost result previews exactly there, when "completed, no preview"
//! landed before "completed, with preview" and the second was swallowed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{ScheduleId, WorkspaceId};

/// Characters of a task kept in `task_preview`.
pub const TASK_PREVIEW_CHARS: usize = 200;
/// Characters of a result or error kept in the ledger.
pub const PREVIEW_CHARS: usize = 4096;

/// Where a delegation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DelegationStatus {
    /// In the ledger and the callee's inbox, not yet handed to its agent.
    Queued,
    /// Handed to the callee's agent.
    Dispatched,
    /// The agent is working on it.
    InProgress,
    /// Done; `result_preview` holds the start of the answer.
    Completed,
    /// Given up; `error_detail` says why.
    Failed,
    /// The callee went silent (set by the sweeper); it may still finish.
    Stuck,
}

/// Not a status name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a delegation status: use queued, dispatched, in_progress, completed, failed or stuck")]
pub struct StatusError(pub String);

impl DelegationStatus {
    /// Every status, in the order of the machine.
    pub const ALL: [DelegationStatus; 6] = [
        Self::Queued,
        Self::Dispatched,
        Self::InProgress,
        Self::Completed,
        Self::Failed,
        Self::Stuck,
    ];

    /// The name stored and sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Dispatched => "dispatched",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Stuck => "stuck",
        }
    }

    /// Completed or failed: nothing moves it any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }

    /// Where a forward move may go from here. `stuck` sits beside
    /// `dispatched`/`in_progress`, not on the line, so it has no rank.
    fn rank(self) -> Option<u8> {
        match self {
            Self::Queued => Some(0),
            Self::Dispatched => Some(1),
            Self::InProgress => Some(2),
            Self::Completed | Self::Failed => Some(3),
            Self::Stuck => None,
        }
    }

    /// Decides a move from `self` to `to`.
    pub fn transition(self, to: DelegationStatus) -> Result<Transition, Refused> {
        use DelegationStatus::*;
        let refused = Err(Refused {
            current: self,
            requested: to,
        });
        if self == to {
            return Ok(Transition::Repeat);
        }
        match (self, to) {
            (Stuck, InProgress | Completed | Failed) => Ok(Transition::Advance),
            (Stuck, _) => refused,
            (Dispatched | InProgress, Stuck) => Ok(Transition::Advance),
            (_, Stuck) => refused,
            (from, to) => match (from.rank(), to.rank()) {
                (Some(a), Some(b)) if b > a && !from.is_terminal() => Ok(Transition::Advance),
                _ => refused,
            },
        }
    }
}

impl fmt::Display for DelegationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DelegationStatus {
    type Err = StatusError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| StatusError(raw.chars().take(64).collect()))
    }
}

/// Who delegated: a workspace, the operator (stored as `operator`), or a
/// schedule's fire (stored as `schedule:<id>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    /// The holder of the admin token.
    Operator,
    /// A workspace, through its own token.
    Workspace(WorkspaceId),
    /// A schedule of the callee, firing.
    Schedule(ScheduleId),
}

/// The prefix of a schedule caller's stored form.
const SCHEDULE_PREFIX: &str = "schedule:";

impl Caller {
    /// The workspace, when the caller is one (only it gets result rows).
    pub fn workspace(self) -> Option<WorkspaceId> {
        match self {
            Caller::Operator | Caller::Schedule(_) => None,
            Caller::Workspace(id) => Some(id),
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Operator => f.write_str("operator"),
            Caller::Workspace(id) => fmt::Display::fmt(id, f),
            Caller::Schedule(id) => write!(f, "{SCHEDULE_PREFIX}{id}"),
        }
    }
}

impl FromStr for Caller {
    type Err = super::IdError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if raw == "operator" {
            Ok(Caller::Operator)
        } else if let Some(id) = raw.strip_prefix(SCHEDULE_PREFIX) {
            id.parse().map(Caller::Schedule)
        } else {
            raw.parse().map(Caller::Workspace)
        }
    }
}

/// An allowed move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The status changes.
    Advance,
    /// The status stays; only non-empty previews are applied.
    Repeat,
}

/// A backwards (or sideways) move, refused with the status the row has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the delegation is already {current}; it cannot move to {requested}")]
pub struct Refused {
    /// The status the row has.
    pub current: DelegationStatus,
    /// The status asked for.
    pub requested: DelegationStatus,
}

/// What a report carries besides the status: the new value of a text field
/// when the report brings a non-empty one, else the stored one.
pub fn merge_text(stored: Option<&str>, reported: Option<&str>) -> Option<String> {
    match reported.map(str::trim).filter(|r| !r.is_empty()) {
        Some(_) => reported.map(|r| truncate_chars(r, PREVIEW_CHARS)),
        None => stored.map(str::to_owned),
    }
}

/// The first `max` characters of `text` (never splits a character).
pub fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => text[..cut].to_owned(),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::DelegationStatus::*;
    use super::*;

    #[test]
    fn every_caller_keeps_its_stored_form() {
        let ws = WorkspaceId::new();
        let sched = ScheduleId::new();
        let cases = [
            (Caller::Operator, "operator".to_owned()),
            (Caller::Workspace(ws), ws.to_string()),
            (Caller::Schedule(sched), format!("schedule:{sched}")),
        ];
        for (caller, stored) in cases {
            assert_eq!(caller.to_string(), stored);
            assert_eq!(stored.parse::<Caller>(), Ok(caller), "{stored}");
        }
        assert!("schedule:nope".parse::<Caller>().is_err());
        assert_eq!(Caller::Schedule(sched).workspace(), None);
    }

    #[test]
    fn forward_moves_advance_and_backward_ones_are_refused() {
        let cases = [
            (Queued, Dispatched, true),
            (Queued, InProgress, true),
            (Queued, Completed, true),
            (Queued, Failed, true),
            (Dispatched, InProgress, true),
            (Dispatched, Completed, true),
            (InProgress, Completed, true),
            (InProgress, Failed, true),
            (Dispatched, Stuck, true),
            (InProgress, Stuck, true),
            (Stuck, InProgress, true),
            (Stuck, Completed, true),
            (Stuck, Failed, true),
            (Dispatched, Queued, false),
            (InProgress, Dispatched, false),
            (Completed, InProgress, false),
            (Completed, Failed, false),
            (Failed, Completed, false),
            (Queued, Stuck, false),
            (Completed, Stuck, false),
            (Stuck, Queued, false),
            (Stuck, Dispatched, false),
        ];
        for (from, to, ok) in cases {
            let got = from.transition(to);
            if ok {
                assert_eq!(got, Ok(Transition::Advance), "{from} → {to}");
            } else {
                assert_eq!(
                    got,
                    Err(Refused {
                        current: from,
                        requested: to
                    }),
                    "{from} → {to}"
                );
            }
        }
    }

    #[test]
    fn the_same_status_is_a_repeat_for_every_status() {
        for s in DelegationStatus::ALL {
            assert_eq!(s.transition(s), Ok(Transition::Repeat), "{s}");
        }
    }

    #[test]
    fn a_repeat_still_applies_a_non_empty_preview() {
        // "completed, no preview" then "completed, with preview": the
        // second report's text must land.
        assert_eq!(merge_text(None, Some("")), None);
        assert_eq!(
            merge_text(None, Some("the answer")),
            Some("the answer".into())
        );
        assert_eq!(
            merge_text(Some("the answer"), Some("  ")),
            Some("the answer".into()),
            "an empty report keeps what is stored"
        );
        assert_eq!(merge_text(Some("old"), None), Some("old".into()));
        assert_eq!(merge_text(Some("old"), Some("new")), Some("new".into()));
    }

    #[test]
    fn previews_are_cut_at_characters() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("abc", 10), "abc");
        let long = "é".repeat(PREVIEW_CHARS + 5);
        assert_eq!(
            merge_text(None, Some(&long)).unwrap().chars().count(),
            PREVIEW_CHARS
        );
    }

    #[test]
    fn names_round_trip() {
        for s in DelegationStatus::ALL {
            assert_eq!(s.as_str().parse::<DelegationStatus>(), Ok(s));
        }
        assert!("done".parse::<DelegationStatus>().is_err());
    }
}
