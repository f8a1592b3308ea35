//! Typed identifiers. Workspace, file and memory ids are all UUIDs, but they
//! are never interchangeable, so each has its own type.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a string is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid id: ids are UUIDs such as 6f1c2a4e-0b7d-4c55-9a47-3b8f0e9d2c11")]
pub struct IdError(pub String);

fn parse_uuid(raw: &str) -> Result<Uuid, IdError> {
    // Only the canonical hyphenated form is accepted, in either case: the
    // braced, URN and simple forms uuid also parses are not ids of ours.
    if raw.len() != 36 {
        return Err(IdError(raw.chars().take(64).collect()));
    }
    Uuid::parse_str(raw).map_err(|_| IdError(raw.chars().take(64).collect()))
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random (v4) id.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(raw: &str) -> Result<Self, Self::Err> {
                parse_uuid(raw).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Lowercase and hyphenated, as the API promises.
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }
    };
}

typed_id!(
    /// Identifies a workspace.
    WorkspaceId
);
typed_id!(
    /// Identifies one staged file (a `pending_uploads` row).
    FileId
);
typed_id!(
    /// Identifies one scoped memory (a `memories` row).
    MemoryId
);
typed_id!(
    /// Identifies one delegation (a `delegations` ledger row).
    DelegationId
);
typed_id!(
    /// Identifies one schedule (a `schedules` row).
    ScheduleId
);
typed_id!(
    /// Identifies one fire of a schedule (a `schedule_fires` row).
    FireId
);
typed_id!(
    /// Identifies one approval request (an `approvals` row).
    ApprovalId
);
typed_id!(
    /// Identifies one platform instruction (an `instructions` row).
    InstructionId
);
typed_id!(
    /// Identifies one token (a `workspace_auth_tokens` or
    /// `operator_tokens` row): what lists show and revocation names,
    /// never the secret.
    TokenId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyphenated_uuids_parse() {
        let cases = [
            ("6f1c2a4e-0b7d-4c55-9a47-3b8f0e9d2c11", true),
            ("6F1C2A4E-0B7D-4C55-9A47-3B8F0E9D2C11", true),
            ("6f1c2a4e0b7d4c559a473b8f0e9d2c11", false),
            ("{6f1c2a4e-0b7d-4c55-9a47-3b8f0e9d2c11}", false),
            ("not-a-uuid", false),
            ("", false),
            ("6f1c2a4e-0b7d-4c55-9a47-3b8f0e9d2c1g", false),
        ];
        for (raw, ok) in cases {
            assert_eq!(raw.parse::<WorkspaceId>().is_ok(), ok, "case {raw:?}");
        }
    }

    #[test]
    fn display_is_lowercase() {
        let id: FileId = "6F1C2A4E-0B7D-4C55-9A47-3B8F0E9D2C11".parse().unwrap();
        assert_eq!(id.to_string(), "6f1c2a4e-0b7d-4c55-9a47-3b8f0e9d2c11");
    }
}
