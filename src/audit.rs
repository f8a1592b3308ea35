//! The audit trail's front door: [`Auditor::record`] appends one row (who
//! did what to what) for any feature that changes something, and
//! [`Auditor::verify`] walks the whole chain, as `molecule audit verify`
//! and the listing routes' `chain_valid` do.
//!
//! The HMAC key is derived from the secrets key with HKDF-SHA256 under a
//! label of its own (see [`crate::secrets::SecretsKey::audit_key`]): it
//! lives where that key lives (`--secrets-key` or `<data-dir>/secrets-key`,
//! 0600), needs no second file to back up, and is never the same bytes as
//! the key that seals secrets.
//!
//! Most rows are written after the change they record has committed, in
//! their own transaction: a failed append is logged, never undoes the
//! change (the change's own tables stay the truth; the trail is its
//! tamper-evident account). Where the change is one store transaction
//! that can take the row along cheaply (approval requests, decisions and
//! expiries: [`Auditor::within`]), the row is appended inside it, so the
//! two commit together or not at all. Elsewhere that would mean holding
//! the chain's head lock, which serialises every audited change of the
//! fleet, across a change's whole transaction (an org import, an
//! instruction's inbox fan-out), and threading the key through each
//! store area; an append after the commit costs one short transaction.

use serde_json::Value;

use crate::domain::audit::{Actor, AuditKey, Broken, Checker};
use crate::domain::WorkspaceId;
use crate::secrets::SecretsKey;
use crate::store::{AuditIn, AuditRecord, NewAuditEvent, Store, StoreResult};

/// How many rows one page of the chain check reads.
const VERIFY_PAGE: i64 = 1000;

/// One thing to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    actor: Actor,
    action: String,
    workspace_id: Option<WorkspaceId>,
    target: Option<String>,
    details: Value,
}

impl Entry {
    /// `actor` did `action` (e.g. `secret.set`); no workspace, target or
    /// details yet.
    pub fn new(actor: Actor, action: impl Into<String>) -> Self {
        Self {
            actor,
            action: action.into(),
            workspace_id: None,
            target: None,
            details: Value::Object(Default::default()),
        }
    }

    /// The workspace the row concerns (its `GET /workspaces/:id/audit`).
    pub fn workspace(mut self, id: WorkspaceId) -> Self {
        self.workspace_id = Some(id);
        self
    }

    /// What was acted on, e.g. `secret:API_KEY`.
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// Details: names and ids, never secret values.
    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// The row as the store appends it.
    pub(crate) fn into_new(self) -> NewAuditEvent {
        NewAuditEvent {
            actor: self.actor.to_string(),
            action: self.action,
            workspace_id: self.workspace_id,
            target: self.target,
            details: self.details.to_string(),
        }
    }
}

/// The outcome of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainReport {
    /// Rows that checked out before the first broken one (all of them when
    /// intact).
    pub checked: u64,
    /// The first broken row, `None` when the chain is intact.
    pub first_broken: Option<Broken>,
}

impl ChainReport {
    /// True when every row checks and the chain reaches the head.
    pub fn valid(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// The rows read past the head the walk started from: appends that
/// committed meanwhile, or rows inserted behind the server's back. The head
/// is read again AFTER the rows were: every append that committed before
/// that read moved the head past its row, so a row still past the head was
/// not appended by a server.
async fn beyond_head(store: &dyn Store, rows: &[AuditRecord]) -> StoreResult<Option<Broken>> {
    let (head_seq, _) = store.audit_head().await?;
    Ok(rows.iter().find(|r| r.seq > head_seq).map(|r| Broken {
        seq: r.seq,
        reason: format!("row past the head ({head_seq}): not appended by the server"),
    }))
}

/// Seals and checks audit rows under the chain's key.
#[derive(Debug, Clone)]
pub struct Auditor {
    key: AuditKey,
}

impl Auditor {
    /// The auditor of the server whose secrets key is `key`.
    pub fn new(key: &SecretsKey) -> Self {
        Self {
            key: key.audit_key(),
        }
    }

    /// The row `row` makes of a change's outcome, for the store to append
    /// in the change's own transaction.
    pub(crate) fn within<'a, T: ?Sized>(
        &'a self,
        row: &'a (dyn Fn(&T) -> NewAuditEvent + Send + Sync),
    ) -> AuditIn<'a, T> {
        AuditIn {
            key: &self.key,
            row,
        }
    }

    /// Appends one row; returns it.
    pub async fn append(&self, store: &dyn Store, entry: Entry) -> StoreResult<AuditRecord> {
        store
            .append_audit(&self.key, &entry.into_new(), crate::domain::now())
            .await
    }

    /// Appends one row after the change it records has committed; a
    /// failure is logged, not returned (the change stands either way).
    pub async fn record(&self, store: &dyn Store, entry: Entry) {
        let action = entry.action.clone();
        if let Err(e) = self.append(store, entry).await {
            tracing::error!(
                action,
                error.cause_chain = ?anyhow::Error::from(e),
                "failed to append an audit row"
            );
        }
    }

    /// Walks the whole chain, oldest first, and names the first row that
    /// does not check (edited, deleted, or sealed under another key).
    pub async fn verify(&self, store: &dyn Store) -> StoreResult<ChainReport> {
        // The head first: rows appended while we walk are past it, so a
        // busy server does not look like one whose newest rows were deleted.
        let (head_seq, head_hash) = store.audit_head().await?;
        let mut checker = Checker::new(&self.key);
        let broken = 'walk: loop {
            let page = store
                .audit_chain_page(checker.last_seq(), VERIFY_PAGE)
                .await?;
            let done = (page.len() as i64) < VERIFY_PAGE;
            for (i, row) in page.iter().enumerate() {
                if row.seq > head_seq {
                    if let Err(b) = checker.finish(head_seq, &head_hash) {
                        break 'walk Some(b);
                    }
                    break 'walk beyond_head(store, &page[i..]).await?;
                }
                if let Err(b) = checker.check(&row.stored()) {
                    break 'walk Some(b);
                }
            }
            if done {
                break checker.finish(head_seq, &head_hash).err();
            }
        };
        Ok(ChainReport {
            checked: checker.checked(),
            first_broken: broken,
        })
    }
}
