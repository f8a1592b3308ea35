//! Names the operator chooses for stored things: workspace names, secret
//! keys and plugin names. Secret keys and plugin names end up in URLs,
//! environment variables or file paths on the agent's machine, so each is a
//! narrow alphabet; a workspace name is free text with one rule. Each is
//! checked once, here, for every path that stores one.

use std::fmt;

/// A workspace's display name: 1 to 200 characters once trimmed, and no
/// NUL (PostgreSQL cannot store it). The one rule for every path that names
/// a workspace: create, rename, org import.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkspaceName(String);

/// Why a string is not a workspace name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkspaceNameError {
    /// Empty once trimmed, or over 200 characters.
    #[error("`name` must be 1 to 200 characters")]
    Length,
    /// Holds a NUL character.
    #[error("`name` must not contain NUL characters (\\u0000)")]
    Nul,
}

impl WorkspaceName {
    /// Parses a workspace name (surrounding whitespace is dropped).
    pub fn parse(raw: &str) -> Result<Self, WorkspaceNameError> {
        let name = raw.trim();
        if name.contains('\0') {
            return Err(WorkspaceNameError::Nul);
        }
        if name.is_empty() || name.chars().count() > 200 {
            return Err(WorkspaceNameError::Length);
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name, to store.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for WorkspaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The key of a secret: `[A-Z_][A-Z0-9_]{0,127}`, the shape of an
/// environment variable name (agents export secrets as variables).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretName(String);

/// Why a string is not a secret key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid secret key: use 1 to 128 characters of A-Z, 0-9 and _, not starting with a digit")]
pub struct SecretNameError(pub String);

impl SecretName {
    /// Parses a secret key.
    pub fn parse(raw: &str) -> Result<Self, SecretNameError> {
        let bytes = raw.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 128
            && (bytes[0].is_ascii_uppercase() || bytes[0] == b'_')
            && bytes
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_');
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(SecretNameError(raw.chars().take(140).collect()))
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A plugin's name: `[a-z0-9][a-z0-9._-]{0,99}`. It names the directory the
/// agent unpacks the plugin into, so no separators, no leading dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginName(String);

/// Why a string is not a plugin name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid plugin name: use 1 to 100 characters of a-z, 0-9, `.`, `_` and `-`, starting with a letter or digit")]
pub struct PluginNameError(pub String);

impl PluginName {
    /// Parses a plugin name.
    pub fn parse(raw: &str) -> Result<Self, PluginNameError> {
        let bytes = raw.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 100
            && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
            && bytes.iter().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(PluginNameError(raw.chars().take(120).collect()))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PluginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_names() {
        assert_eq!(WorkspaceName::parse("  lead ").unwrap().as_str(), "lead");
        assert!(WorkspaceName::parse(&"é".repeat(200)).is_ok());
        for (bad, err) in [
            ("", WorkspaceNameError::Length),
            ("   ", WorkspaceNameError::Length),
            (&"a".repeat(201), WorkspaceNameError::Length),
            ("a\0b", WorkspaceNameError::Nul),
            ("\0", WorkspaceNameError::Nul),
        ] {
            assert_eq!(WorkspaceName::parse(bad), Err(err), "{bad:?}");
        }
    }

    #[test]
    fn secret_names() {
        for ok in ["A", "_", "OPENAI_API_KEY", "X1", &"A".repeat(128)] {
            assert!(SecretName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1A", "a", "A-B", "A B", "É", &"A".repeat(129)] {
            assert!(SecretName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plugin_names() {
        for ok in ["a", "my-plugin", "p.v2_x", "0day", &"a".repeat(100)] {
            assert!(PluginName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "A",
            "a/b",
            "..",
            "a b",
            &"a".repeat(101),
        ] {
            assert!(PluginName::parse(bad).is_err(), "{bad}");
        }
    }
}
