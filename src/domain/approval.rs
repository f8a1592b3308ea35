//! Approvals: an agent asks before it acts, and a human (the operator) or
//! its parent workspace says yes or no, exactly once. These are the pure
//! types of that exchange — the status machine, the decision, what expiry
//! does and who decided — and the limits of a request; the store keeps the
//! rows (`store/approvals.rs`), the routes and the expiry job move them.
//!
//! The status machine is `pending → approved | denied`, nothing else: a
//! decision is final, and escalation (on expiry, to the next ancestor, then
//! to the operator) keeps the request `pending` with a new decider.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::WorkspaceId;

/// Longest `action`, in characters.
pub const MAX_ACTION_CHARS: usize = 200;
/// Longest `reason`, in bytes.
pub const MAX_REASON_BYTES: usize = 8 * 1024;
/// Longest `note` of a decision, in bytes.
pub const MAX_NOTE_BYTES: usize = 8 * 1024;
/// Largest `context`, serialized, in bytes.
pub const MAX_CONTEXT_BYTES: usize = 64 * 1024;
/// Longest `task_id`, in characters.
pub const MAX_TASK_ID_CHARS: usize = 200;
/// How long a request waits for its decider by default (Molecule's 10
/// minutes).
pub const DEFAULT_EXPIRES_IN_S: i64 = 600;
/// The longest wait a request may ask for: a week.
pub const MAX_EXPIRES_IN_S: i64 = 7 * 24 * 3600;

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for its decider.
    Pending,
    /// Decided yes (by a decider or by `on_expiry: approve`).
    Approved,
    /// Decided no (by a decider or by `on_expiry: deny`).
    Denied,
}

/// A decider's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Go ahead.
    Approved,
    /// Do not.
    Denied,
}

/// What happens when nobody decided in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExpiry {
    /// Denied, `decided_by: "expired"` (the default, as Molecule does).
    #[default]
    Deny,
    /// Approved, `decided_by: "expired"`.
    Approve,
    /// Handed to the next ancestor of the current decider with a fresh
    /// window; past the root, to the operator, who then holds it until
    /// they decide.
    Escalate,
}

/// Who decided a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecidedBy {
    /// The operator (`operator`).
    Operator,
    /// An ancestor workspace (its id).
    Workspace(WorkspaceId),
    /// Nobody in time: the request's `on_expiry` (`expired`).
    Expired,
}

/// A string that is not one of a closed set of words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` must be one of {}, not `{got}`", .allowed.join(", "))]
pub struct WordError {
    /// The field.
    pub field: &'static str,
    /// The words it takes.
    pub allowed: &'static [&'static str],
    /// What it got.
    pub got: String,
}

macro_rules! words {
    ($ty:ident, $field:literal, $($variant:ident = $word:literal),+) => {
        impl $ty {
            /// The wire word.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $word),+ }
            }
        }

        impl FromStr for $ty {
            type Err = WordError;
            fn from_str(raw: &str) -> Result<Self, WordError> {
                match raw {
                    $($word => Ok(Self::$variant),)+
                    _ => Err(WordError {
                        field: $field,
                        allowed: &[$($word),+],
                        got: raw.chars().take(64).collect(),
                    }),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

words!(
    ApprovalStatus,
    "status",
    Pending = "pending",
    Approved = "approved",
    Denied = "denied"
);
words!(
    Decision,
    "decision",
    Approved = "approved",
    Denied = "denied"
);
words!(
    OnExpiry,
    "on_expiry",
    Deny = "deny",
    Approve = "approve",
    Escalate = "escalate"
);

impl Decision {
    /// The status a request ends in.
    pub fn status(self) -> ApprovalStatus {
        match self {
            Self::Approved => ApprovalStatus::Approved,
            Self::Denied => ApprovalStatus::Denied,
        }
    }
}

impl ApprovalStatus {
    /// The decision a final status records; `None` while pending.
    pub fn decision(self) -> Option<Decision> {
        match self {
            Self::Pending => None,
            Self::Approved => Some(Decision::Approved),
            Self::Denied => Some(Decision::Denied),
        }
    }
}

impl OnExpiry {
    /// The decision expiry makes; `None` for `escalate`, which decides
    /// nothing.
    pub fn decision(self) -> Option<Decision> {
        match self {
            Self::Deny => Some(Decision::Denied),
            Self::Approve => Some(Decision::Approved),
            Self::Escalate => None,
        }
    }
}

impl fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Operator => f.write_str("operator"),
            Self::Workspace(id) => fmt::Display::fmt(id, f),
            Self::Expired => f.write_str("expired"),
        }
    }
}

impl FromStr for DecidedBy {
    type Err = super::IdError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "operator" => Ok(Self::Operator),
            "expired" => Ok(Self::Expired),
            id => id.parse().map(Self::Workspace),
        }
    }
}

impl Serialize for DecidedBy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DecidedBy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_unknown_words_are_named() {
        for d in [Decision::Approved, Decision::Denied] {
            assert_eq!(d.as_str().parse::<Decision>(), Ok(d));
        }
        let err = "maybe".parse::<Decision>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "`decision` must be one of approved, denied, not `maybe`"
        );
        assert_eq!("escalate".parse::<OnExpiry>(), Ok(OnExpiry::Escalate));
        assert_eq!(OnExpiry::Escalate.decision(), None);
        assert_eq!(OnExpiry::Deny.decision(), Some(Decision::Denied));
    }

    #[test]
    fn decided_by_is_operator_expired_or_a_workspace_id() {
        let ws = WorkspaceId::new();
        for who in [
            DecidedBy::Operator,
            DecidedBy::Expired,
            DecidedBy::Workspace(ws),
        ] {
            assert_eq!(who.to_string().parse::<DecidedBy>(), Ok(who));
        }
        assert_eq!(DecidedBy::Expired.to_string(), "expired");
        assert!("someone".parse::<DecidedBy>().is_err());
    }
}
