//! Platform instructions: rules the operator writes once and every agent
//! they apply to reads at start — fleet-wide (`global`), for a team (the
//! subtree under its lead workspace) or for one workspace. These are the
//! pure parts: the scope word, the limits, and how a workspace's resolved
//! text is laid out; the rows live in `store/instructions.rs`.
//!
//! Resolution order (what `GET /workspaces/:id/instructions/resolve`
//! answers): global rules first, then the teams' from the root down to the
//! workspace itself, then the workspace's own; within each group the higher
//! `priority` first (ties: the older first). Disabled rules are left out.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest `title`, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Largest `content`, in bytes (8 KiB).
pub const MAX_CONTENT_BYTES: usize = 8 * 1024;

/// Whom an instruction applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstructionScope {
    /// Every workspace.
    Global,
    /// The subtree under `scope_target` (the team's lead), lead included.
    Team,
    /// `scope_target` alone.
    Workspace,
}

impl InstructionScope {
    /// The wire and column word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Team => "team",
            Self::Workspace => "workspace",
        }
    }

    /// Whether the scope names a workspace in `scope_target`.
    pub fn needs_target(self) -> bool {
        !matches!(self, Self::Global)
    }
}

impl fmt::Display for InstructionScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`scope` must be global, team or workspace, not `{0}`")]
pub struct ScopeError(pub String);

impl FromStr for InstructionScope {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "global" => Ok(Self::Global),
            "team" => Ok(Self::Team),
            "workspace" => Ok(Self::Workspace),
            other => Err(ScopeError(other.to_owned())),
        }
    }
}

/// One Markdown text of `(title, content)` pairs already in resolution
/// order: each rule a `## title` section, sections separated by a blank
/// line; no rules, an empty text.
pub fn render<'a>(rules: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let sections: Vec<String> = rules
        .into_iter()
        .map(|(title, content)| format!("## {}\n\n{}\n", title, content.trim_end()))
        .collect();
    sections.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_keeps_the_order_it_is_given() {
        let text = render([("First", "one\n\n"), ("Second", "two")]);
        assert_eq!(text, "## First\n\none\n\n## Second\n\ntwo\n");
        assert_eq!(render([]), "");
    }

    #[test]
    fn scopes_round_trip_and_strangers_are_refused() {
        for s in [
            InstructionScope::Global,
            InstructionScope::Team,
            InstructionScope::Workspace,
        ] {
            assert_eq!(s.as_str().parse::<InstructionScope>(), Ok(s));
        }
        assert_eq!(
            "Global".parse::<InstructionScope>(),
            Err(ScopeError("Global".into()))
        );
    }
}
