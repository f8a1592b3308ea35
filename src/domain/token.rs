//! Bearer tokens: 256 random bits, shown once, stored only as SHA-256.

use std::fmt;

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A plaintext bearer token. Its `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(String);

/// The SHA-256 of a token: the only form a workspace token is stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

/// How many characters of a token its shown prefix keeps: `mol_` and 8
/// hex digits (32 of its 256 bits: identifies it, cannot stand for it).
pub(crate) const PREFIX_LEN: usize = 12;

/// The first characters of a token, stored and listed so its holder can
/// tell which token a row is without the list showing the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPrefix([u8; PREFIX_LEN]);

impl TokenPrefix {
    /// The prefix as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("BUG: a prefix is ASCII")
    }
}

/// What the store keeps of a freshly minted token: its hash and prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenKey {
    /// Looked up by.
    pub hash: TokenHash,
    /// Shown in lists.
    pub prefix: TokenPrefix,
}

/// What an operator token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Reads only: lists, activity, ledger, usage.
    Viewer,
    /// Everything except tokens and global secrets.
    Operator,
    /// Everything, as the first-start admin token.
    Admin,
}

impl Role {
    /// Every role, least first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// Its name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(raw: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == raw)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AuthToken {
    /// Mints a fresh token from 32 bytes of OS randomness.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        // The prefix lets secret scanners recognise a leaked token.
        Self(format!("mol_{}", hex::encode(bytes)))
    }

    /// Wraps a token received from a client or the configuration.
    pub fn from_plaintext(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// The secret itself, for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hash under which the token is stored and looked up.
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }

    /// The hash and prefix the store keeps of a token it mints.
    pub fn key(&self) -> TokenKey {
        let mut prefix = *b"mol_????????";
        // A token of ours is ASCII `mol_` + hex; anything else (an admin
        // token from the configuration) keeps `?` where it is not ASCII.
        for (slot, b) in prefix.iter_mut().zip(self.0.bytes()) {
            if b.is_ascii_graphic() {
                *slot = b;
            }
        }
        TokenKey {
            hash: self.hash(),
            prefix: TokenPrefix(prefix),
        }
    }

    /// Compares two tokens in constant time (for the admin token, which is
    /// compared directly rather than looked up by hash).
    pub fn matches(&self, other: &AuthToken) -> bool {
        // Hash both first so the comparison does not leak the length either.
        self.hash().0.ct_eq(&other.hash().0).into()
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_redacted() {
        let a = AuthToken::generate();
        let b = AuthToken::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 4 + 64);
        assert!(a.matches(&AuthToken::from_plaintext(a.expose())));
        assert!(!a.matches(&b));
        assert_eq!(format!("{a:?}"), "AuthToken(<redacted>)");
        assert_eq!(a.key().prefix.as_str(), &a.expose()[..PREFIX_LEN]);
        assert_eq!(a.key().hash, a.hash());
        // A short token overwrites only the first characters.
        assert_eq!(
            AuthToken::from_plaintext("x").key().prefix.as_str(),
            "xol_????????"
        );
    }
}
