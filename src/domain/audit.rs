//! The audit trail's chain: how one row is sealed to the row before it, and
//! how a chain of rows is checked.
//!
//! Each row carries `hash = HMAC-SHA256(key, prev_hash ‖ row)`, where `row`
//! is its sequence number, time, actor, action, workspace, target and the
//! SHA-256 of its details text, each length-prefixed so no two different
//! rows encode alike. `prev_hash` is the previous row's `hash` (32 zero
//! bytes for the first row). Editing a row breaks its own `hash`; deleting
//! one breaks the next row's `prev_hash` (and leaves a gap in `seq`);
//! deleting the newest rows leaves the chain short of the head the store
//! keeps beside it. Without the key nobody can forge a row that passes.
//!
//! The key is derived from the secrets key (see `crate::secrets`), so it
//! lives where that key lives and needs no file of its own.

use std::fmt;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::WorkspaceId;

/// The actions an agent may record about itself with
/// `POST /workspaces/:id/audit` (Molecule's names).
pub const AGENT_ACTIONS: [&str; 4] = ["task_start", "llm_call", "tool_call", "task_end"];

/// The `prev_hash` of the first row.
pub const GENESIS: [u8; 32] = [0; 32];

/// The HMAC key of the chain. Its `Debug` never shows it.
#[derive(Clone)]
pub struct AuditKey([u8; 32]);

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(***)")
    }
}

impl AuditKey {
    /// A key from 32 bytes of key material.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

/// Who did it: `operator`, `workspace:<id>`, `system` or `token:<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The holder of the admin token.
    Operator,
    /// A workspace with its own token.
    Workspace(WorkspaceId),
    /// The server on its own (a background job: expiry, escalation).
    System,
    /// A token named by its id, not by whom it serves: a refused
    /// (revoked, expired or out-of-scope) token's use.
    Token(super::TokenId),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Operator => f.write_str("operator"),
            Actor::Workspace(id) => write!(f, "workspace:{id}"),
            Actor::System => f.write_str("system"),
            Actor::Token(id) => write!(f, "token:{id}"),
        }
    }
}

/// The content of one row, everything its `hash` covers besides
/// `prev_hash`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sealed<'a> {
    /// Its place in the chain, from 1, without gaps.
    pub seq: i64,
    /// When it was recorded (microseconds, as stored).
    pub at: DateTime<Utc>,
    /// [`Actor`] as text.
    pub actor: &'a str,
    /// What happened, e.g. `secret.set`.
    pub action: &'a str,
    /// The workspace it concerns, if any.
    pub workspace_id: Option<WorkspaceId>,
    /// What it was done to, e.g. `secret:API_KEY`.
    pub target: Option<&'a str>,
    /// SHA-256 of the details text, as stored (hex).
    pub details_hash: &'a str,
}

/// SHA-256 of a row's details text, hex.
pub fn details_hash(details: &str) -> String {
    hex::encode(Sha256::digest(details.as_bytes()))
}

fn put(mac: &mut Hmac<Sha256>, field: &[u8]) {
    mac.update(&(field.len() as u64).to_be_bytes());
    mac.update(field);
}

/// `HMAC(key, prev_hash ‖ row)`, hex.
pub fn seal(key: &AuditKey, prev_hash: &[u8], row: &Sealed<'_>) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&key.0).expect("BUG: HMAC takes a key of any length");
    put(&mut mac, b"molecule/audit/v1");
    put(&mut mac, prev_hash);
    put(&mut mac, &row.seq.to_be_bytes());
    put(&mut mac, &row.at.timestamp_micros().to_be_bytes());
    put(&mut mac, row.actor.as_bytes());
    put(&mut mac, row.action.as_bytes());
    let ws = row.workspace_id.map(|w| w.to_string()).unwrap_or_default();
    put(&mut mac, ws.as_bytes());
    // A missing target and an empty one encode differently.
    match row.target {
        None => put(&mut mac, b"\0none"),
        Some(t) => put(&mut mac, format!("={t}").as_bytes()),
    }
    put(&mut mac, row.details_hash.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Why a chain is not intact: the first row that does not check, and how.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Broken {
    /// The first row that fails (or, for rows missing at the end, the
    /// first missing one).
    pub seq: i64,
    /// What is wrong with it.
    pub reason: String,
}

/// A row as the checker reads it back.
#[derive(Debug, Clone)]
pub struct Stored<'a> {
    /// Everything the hash covers.
    pub sealed: Sealed<'a>,
    /// The details text as stored.
    pub details: &'a str,
    /// As stored (hex).
    pub prev_hash: &'a str,
    /// As stored (hex).
    pub hash: &'a str,
}

/// Walks a chain in `seq` order, one row at a time, remembering only the
/// last row checked.
#[derive(Debug, Clone)]
pub struct Checker {
    key: AuditKey,
    last_seq: i64,
    last_hash: String,
    checked: u64,
}

impl Checker {
    /// A checker at the start of the chain.
    pub fn new(key: &AuditKey) -> Self {
        Self {
            key: key.clone(),
            last_seq: 0,
            last_hash: hex::encode(GENESIS),
            checked: 0,
        }
    }

    /// The `seq` of the last row checked (0 before the first).
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    /// How many rows checked out.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Checks the next row.
    pub fn check(&mut self, row: &Stored<'_>) -> Result<(), Broken> {
        let seq = row.sealed.seq;
        let broken = |reason: &str| Broken {
            seq,
            reason: reason.to_owned(),
        };
        if seq != self.last_seq + 1 {
            // Rows between were deleted; name the first missing one.
            return Err(Broken {
                seq: self.last_seq + 1,
                reason: format!(
                    "row missing: the chain jumps from {} to {seq}",
                    self.last_seq
                ),
            });
        }
        if row.prev_hash != self.last_hash {
            return Err(broken("prev_hash does not match the previous row"));
        }
        if details_hash(row.details) != row.sealed.details_hash {
            return Err(broken("details do not match details_hash"));
        }
        let prev = hex::decode(row.prev_hash).map_err(|_| broken("prev_hash is not hex"))?;
        if seal(&self.key, &prev, &row.sealed) != row.hash {
            return Err(broken(
                "hash does not match the row (edited, or another key)",
            ));
        }
        self.last_seq = seq;
        self.last_hash = row.hash.to_owned();
        self.checked += 1;
        Ok(())
    }

    /// Checks the end: the chain must reach the head the store recorded
    /// with the last append (rows deleted from the end are caught here).
    pub fn finish(&self, head_seq: i64, head_hash: &str) -> Result<(), Broken> {
        if head_seq != self.last_seq {
            return Err(Broken {
                seq: self.last_seq + 1,
                reason: format!(
                    "row missing: the chain ends at {} but the head is {head_seq}",
                    self.last_seq
                ),
            });
        }
        if head_hash != self.last_hash {
            return Err(Broken {
                seq: head_seq,
                reason: "the head does not match the last row".to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64, details: &str, dh: &str) -> Sealed<'static> {
        let _ = details;
        Sealed {
            seq,
            at: DateTime::from_timestamp_micros(1_700_000_000_000_000 + seq).unwrap(),
            actor: "operator",
            action: "secret.set",
            workspace_id: None,
            target: Some("secret:A"),
            details_hash: Box::leak(dh.to_owned().into_boxed_str()),
        }
    }

    #[test]
    fn a_chain_checks_and_each_kind_of_tampering_names_its_row() {
        let key = AuditKey::from_bytes([7; 32]);
        let dh = details_hash("{}");
        let mut prev = hex::encode(GENESIS);
        let mut rows = Vec::new();
        for seq in 1..=3 {
            let sealed = row(seq, "{}", &dh);
            let hash = seal(&key, &hex::decode(&prev).unwrap(), &sealed);
            rows.push((sealed, prev.clone(), hash.clone()));
            prev = hash;
        }
        let check = |rows: &[(Sealed<'static>, String, String)], details: &str| {
            let mut c = Checker::new(&key);
            for (s, p, h) in rows {
                c.check(&Stored {
                    sealed: s.clone(),
                    details,
                    prev_hash: p,
                    hash: h,
                })?;
            }
            c.finish(3, &rows.last().unwrap().2)
        };
        assert_eq!(check(&rows, "{}"), Ok(()));
        assert_eq!(check(&rows, "{\"x\":1}").unwrap_err().seq, 1);

        let mut edited = rows.clone();
        edited[1].0.actor = "workspace:x";
        assert_eq!(check(&edited, "{}").unwrap_err().seq, 2);

        let mut deleted = rows.clone();
        deleted.remove(1);
        assert_eq!(check(&deleted, "{}").unwrap_err().seq, 2);

        let other = AuditKey::from_bytes([8; 32]);
        let mut c = Checker::new(&other);
        let (s, p, h) = &rows[0];
        let first = Stored {
            sealed: s.clone(),
            details: "{}",
            prev_hash: p,
            hash: h,
        };
        assert_eq!(c.check(&first).unwrap_err().seq, 1);

        let mut c = Checker::new(&key);
        c.check(&first).unwrap();
        assert_eq!(c.finish(3, "x").unwrap_err().seq, 2);
    }

    #[test]
    fn a_missing_target_and_an_empty_one_seal_differently() {
        let key = AuditKey::from_bytes([1; 32]);
        let mut a = row(1, "{}", "h");
        let mut b = a.clone();
        a.target = None;
        b.target = Some("");
        assert_ne!(seal(&key, &GENESIS, &a), seal(&key, &GENESIS, &b));
    }
}
