//! How the server reaches a workspace.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How messages and files reach a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    /// The workspace has a public URL; the server forwards to it synchronously.
    Push,
    /// The workspace is behind NAT; the server stages everything and the
    /// workspace long-polls its inbox.
    Poll,
}

/// Why a string is not a delivery mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a delivery mode: use \"push\" or \"poll\"")]
pub struct ModeError(pub String);

impl DeliveryMode {
    /// The name stored in the database and used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMode::Push => "push",
            DeliveryMode::Poll => "poll",
        }
    }
}

impl FromStr for DeliveryMode {
    type Err = ModeError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "push" => Ok(DeliveryMode::Push),
            "poll" => Ok(DeliveryMode::Poll),
            other => Err(ModeError(other.to_owned())),
        }
    }
}

impl fmt::Display for DeliveryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}
