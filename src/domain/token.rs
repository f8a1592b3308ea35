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
    }
}
