//! Secrets at rest: values are sealed with XChaCha20-Poly1305 under one
//! server key before they reach the database, and opened only to answer
//! the workspace's own `GET /workspaces/:id/secrets/values`.
//!
//! The key comes from `--secrets-key` (64 hex characters) or is generated
//! once into `<data-dir>/secrets-key` (mode 0600). Each value is sealed
//! with a fresh random 24-byte nonce (stored in front of the ciphertext) and
//! with its scope and name as additional data, so a sealed value copied to
//! another row does not open. A canary sealed under the key is stored on
//! first start; [`Sealer::verify`] opens it at every start, so a wrong key
//! is a clear start-up error instead of garbage later.

use std::fmt;
use std::path::Path;

use anyhow::Context;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::store::{SecretScope, Store};

const NONCE_LEN: usize = 24;
const CANARY_AAD: &[u8] = b"molecule/secrets-key-check";
const CANARY: &[u8] = b"molecule secrets key check, version 1";

/// The 32-byte server key. Its `Debug` never shows it.
#[derive(Clone)]
pub struct SecretsKey([u8; 32]);

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretsKey(***)")
    }
}

/// Why a key string is refused.
#[derive(Debug, thiserror::Error)]
#[error("the secrets key must be 64 hexadecimal characters (32 bytes), e.g. from `openssl rand -hex 32`")]
pub struct KeyFormatError;

impl SecretsKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// Parses 64 hex characters.
    pub fn parse(raw: &str) -> Result<Self, KeyFormatError> {
        let bytes = hex::decode(raw.trim()).map_err(|_| KeyFormatError)?;
        Ok(Self(bytes.try_into().map_err(|_| KeyFormatError)?))
    }

    /// The audit chain's HMAC key: HKDF-SHA256 of this key under the label
    /// `molecule/audit-chain/v1`, so the chain needs no key file of its own
    /// and never shares bytes with the sealing key.
    pub fn audit_key(&self) -> crate::domain::audit::AuditKey {
        let mut out = [0u8; 32];
        hkdf::Hkdf::<sha2::Sha256>::new(None, &self.0)
            .expand(b"molecule/audit-chain/v1", &mut out)
            .expect("BUG: 32 bytes is a valid HKDF-SHA256 output length");
        crate::domain::audit::AuditKey::from_bytes(out)
    }

    /// The key as hex, for writing the key file.
    fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Reads `<data_dir>/secrets-key`, generating it (mode 0600) on first use.
/// A key file that other users may read or write is refused, as ssh
/// refuses such a private key: the key opens every stored secret, and a
/// loose mode means it may already have been copied.
pub fn load_or_create_key(data_dir: &Path) -> anyhow::Result<SecretsKey> {
    let path = data_dir.join("secrets-key");
    match std::fs::File::open(&path) {
        Ok(file) => return read_key_file(&path, file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("failed to create {}", data_dir.display()))?;
    let key = SecretsKey::generate();
    crate::private_fs::create_private_file(&path, format!("{}\n", key.to_hex()).as_bytes())
        .with_context(|| format!("failed to create {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated the secrets key");
    Ok(key)
}

/// Reads an open key file after checking its mode (on the open handle, so
/// the file checked is the file read).
fn read_key_file(path: &Path, mut file: std::fs::File) -> anyhow::Result<SecretsKey> {
    use std::io::Read;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file
            .metadata()
            .with_context(|| format!("failed to read {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "the secrets key file {} is accessible by other users (mode {:o}); \
                 it must be private: run `chmod 600 {}` and start again",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
    let mut raw = String::new();
    file.read_to_string(&mut raw)
        .with_context(|| format!("failed to read {}", path.display()))?;
    SecretsKey::parse(&raw).with_context(|| format!("in {}", path.display()))
}

/// Reads `<data_dir>/secrets-key` without creating it: for tools that
/// check what a server wrote (`molecule audit verify`).
pub fn load_existing_key(data_dir: &Path) -> anyhow::Result<SecretsKey> {
    let path = data_dir.join("secrets-key");
    let file = std::fs::File::open(&path).with_context(|| {
        format!(
            "failed to read {} (give the key with --secrets-key / MOLECULE_SECRETS_KEY)",
            path.display()
        )
    })?;
    read_key_file(&path, file)
}

/// A sealed value did not open: wrong key, or a tampered or moved row.
#[derive(Debug, thiserror::Error)]
#[error("a stored secret could not be decrypted (wrong key or tampered row)")]
pub struct OpenError;

/// Seals and opens secret values under the server key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(***)")
    }
}

/// The additional data of a secret: its scope and name.
fn secret_aad(scope: SecretScope, name: &str) -> Vec<u8> {
    match scope {
        SecretScope::Global => format!("molecule/secret/global/{name}").into_bytes(),
        SecretScope::Workspace(id) => format!("molecule/secret/workspace/{id}/{name}").into_bytes(),
    }
}

impl Sealer {
    /// A sealer under `key`.
    pub fn new(key: &SecretsKey) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new((&key.0).into()),
        }
    }

    fn seal_with(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("BUG: XChaCha20-Poly1305 encryption of an in-memory value cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    fn open_with(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| OpenError)
    }

    /// Seals a secret's value, bound to its scope and name.
    pub fn seal(&self, scope: SecretScope, name: &str, value: &str) -> Vec<u8> {
        self.seal_with(&secret_aad(scope, name), value.as_bytes())
    }

    /// Opens a secret's value sealed by [`Sealer::seal`].
    pub fn open(&self, scope: SecretScope, name: &str, sealed: &[u8]) -> Result<String, OpenError> {
        let plain = self.open_with(&secret_aad(scope, name), sealed)?;
        String::from_utf8(plain).map_err(|_| OpenError)
    }

    /// Checks the key against the database: stores a sealed canary on
    /// first start, and fails with a clear error if the stored canary does
    /// not open under this key.
    pub async fn verify(&self, store: &dyn Store) -> anyhow::Result<()> {
        let candidate = self.seal_with(CANARY_AAD, CANARY);
        let stored = store
            .secrets_key_check(&candidate, crate::domain::now())
            .await
            .context("failed to read the secrets key check")?;
        match self.open_with(CANARY_AAD, &stored) {
            Ok(plain) if plain == CANARY => Ok(()),
            _ => anyhow::bail!(
                "the secrets key does not match the key this database's secrets were encrypted with; \
                 start with the original key (--secrets-key / MOLECULE_SECRETS_KEY, or <data-dir>/secrets-key)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::WorkspaceId;

    #[test]
    fn a_sealed_value_opens_only_under_its_key_scope_and_name() {
        let sealer = Sealer::new(&SecretsKey::generate());
        let ws = WorkspaceId::new();
        let sealed = sealer.seal(SecretScope::Workspace(ws), "API_KEY", "s3cr3t");
        assert!(!sealed.windows(6).any(|w| w == b"s3cr3t"));
        assert_eq!(
            sealer
                .open(SecretScope::Workspace(ws), "API_KEY", &sealed)
                .unwrap(),
            "s3cr3t"
        );
        assert!(sealer
            .open(SecretScope::Global, "API_KEY", &sealed)
            .is_err());
        assert!(sealer
            .open(
                SecretScope::Workspace(WorkspaceId::new()),
                "API_KEY",
                &sealed
            )
            .is_err());
        assert!(sealer
            .open(SecretScope::Workspace(ws), "OTHER", &sealed)
            .is_err());
        let other = Sealer::new(&SecretsKey::generate());
        assert!(other
            .open(SecretScope::Workspace(ws), "API_KEY", &sealed)
            .is_err());
    }

    #[test]
    fn keys_parse_from_hex_only() {
        assert!(SecretsKey::parse(&"ab".repeat(32)).is_ok());
        assert!(SecretsKey::parse(&"ab".repeat(31)).is_err());
        assert!(SecretsKey::parse(&"zz".repeat(32)).is_err());
        assert_eq!(
            format!("{:?}", SecretsKey::parse(&"ab".repeat(32)).unwrap()),
            "SecretsKey(***)"
        );
    }
}
