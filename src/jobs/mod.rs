//! The background jobs: every piece of periodic upkeep the server does,
//! each a [`Job`] with a name, one step and its outcome as named counts,
//! registered once in [`REGISTERED`]. The sweeper (`crate::sweeper`) runs
//! them in that order on every pass, under its lock, and reports what each
//! did; it knows no job by name, so a new job is one file here and one line
//! in the list (its counts reach the metrics log, the pass outcome and
//! `molecule sweep --once` without further edits).
//!
//! One file per feature, all in this folder rather than beside each
//! feature's routes: the features' own code sits in `http/` and `store/`,
//! and background work is its own layer (it uses the stores, the blob
//! store, the bus and the metrics, never a request). Each file keeps its
//! feature's "count, log, publish after commit" in one helper, as
//! `crate::ledger` does for the delegation ledger.
//!
//! Every job works in bounded batches ([`BATCH`] rows, or for the upload
//! sweep `--sweep-batch`, by default the engine's own size; one short
//! transaction each). The order
//! matters: rows are deleted before their blobs, and the orphan reaper
//! runs last, so a crash in between leaves at worst an orphan blob that a
//! later pass reaps, never a row pointing at a missing blob.

mod a2a_push;
mod activity;
mod approvals;
mod blobs;
mod delegations;
mod kv;
mod memory;
mod pace;
mod push;
mod schedules;
mod tokens;
mod traces;
mod uploads;
mod workspaces;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::blob::BlobStore;
use crate::domain::Period;
use crate::events::Bus;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

pub(crate) use approvals::announce as announce_approval;
pub use approvals::expire_due as expire_approvals;
pub(crate) use schedules::announce as announce_fire;
pub use schedules::{
    liveness, Liveness, Scheduler, FIRES_PER_BATCH, FIRES_PER_TICK, STALL_FLOOR, STALL_PERIODS,
};
pub use tokens::TokenUses;

/// Rows per batch: one short transaction each.
pub const BATCH: i64 = 500;

/// Every job, in the order a pass runs them: rows before blobs (the
/// orphan reaper last, see the module docs).
pub static REGISTERED: &[&dyn Job] = &[
    &uploads::SweepUploads,
    &activity::SweepActivity,
    &traces::PruneSpans,
    &kv::SweepKv,
    &memory::BackfillEmbeddings,
    &delegations::SweepDelegations,
    &schedules::FireSchedules,
    &push::ForwardPush,
    &a2a_push::SendA2aPush,
    &approvals::ExpireApprovals,
    &tokens::StampTokenUses,
    &workspaces::ResetPhantomBusy,
    &workspaces::PurgeRemoved,
    &blobs::ReapOrphans,
];

/// One piece of periodic upkeep.
#[async_trait]
pub trait Job: Send + Sync {
    /// Its name in the pass outcome (`snake_case`, unique).
    fn name(&self) -> &'static str;
    /// The names of the counts its step reports, in the order shown.
    fn counts(&self) -> &'static [&'static str];
    /// Does the job's work as of `now`, in bounded batches, and says what
    /// it did (a [`Counts`] over exactly [`Job::counts`]).
    async fn step(&self, cx: &JobContext, now: DateTime<Utc>) -> Result<Counts, JobError>;
}

/// What the jobs work with: the stores, the bus, the metrics and the
/// settings.
#[derive(Clone)]
pub struct JobContext {
    /// The metadata store.
    pub store: Arc<dyn Store>,
    /// The blob store.
    pub blobs: Arc<dyn BlobStore>,
    /// The server's metrics.
    pub metrics: Metrics,
    /// Where moves are announced, after their commit.
    pub bus: Bus,
    /// The retention settings.
    pub config: SweepConfig,
    /// Back-fills memory vectors, when configured.
    pub embedder: Option<crate::memory::Embedder>,
    /// Hands delegations and fires to push workspaces, when the server
    /// runs (a bare sweep, `sweep --once`, forwards nothing).
    pub forwarder: Option<crate::push::Forwarder>,
    /// The last-used stamps the requests noted, written by a job.
    pub token_uses: TokenUses,
    /// Records the changes jobs make on their own (approval expiry and
    /// escalation) in the audit trail. A server has it; a bare sweep pass
    /// (`sweep --once`) loads no key, so it leaves those changes to the
    /// server's loop rather than make them unrecorded.
    pub auditor: Option<crate::audit::Auditor>,
}

/// Retention settings of the sweep, each a [`Period`] checked at start-up
/// (no fallback here can turn into "sweep everything").
#[derive(Debug, Clone, Copy)]
pub struct SweepConfig {
    /// Acked rows older than this go.
    pub ack_retention: Period,
    /// Activity rows, finished delegations and removed workspaces older
    /// than this go.
    pub activity_retention: Period,
    /// A delegation in flight silent this long is stuck.
    pub delegation_stuck_after: Period,
    /// Unreferenced blobs older than this go.
    pub orphan_grace: Period,
    /// Time between passes.
    pub interval: Duration,
    /// A busy workspace silent this long has its `active_tasks` reset.
    pub offline_after: Period,
    /// Rows per upload sweep batch; `None`: the engine's own size.
    pub upload_batch: Option<i64>,
    /// Blob delete requests the upload sweep keeps in flight at most (it
    /// paces itself below that while the blob store is slow; see `pace`).
    pub deletes_in_flight: usize,
}

/// The most rows `--sweep-batch` takes.
pub const MAX_UPLOAD_BATCH: u32 = 50_000;

/// The most requests `--sweep-deletes-in-flight` takes.
pub const MAX_DELETES_IN_FLIGHT: usize = 64;

/// Why a job (and so its pass) failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The database failed.
    #[error("sweep failed in the database")]
    Store(#[from] StoreError),
    /// Listing the blob store failed.
    #[error("sweep failed to list the blob store")]
    Blob(#[from] crate::blob::BlobError),
}

/// What one job did: a count per name, in the job's declared order.
/// Serializes as a JSON object (`{"acked": 2, "expired": 0, …}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts(Vec<(&'static str, u64)>);

impl Counts {
    /// All of `names` at zero.
    pub fn zero(names: &'static [&'static str]) -> Self {
        Self(names.iter().map(|n| (*n, 0)).collect())
    }

    /// Adds `n` to the count `name`.
    ///
    /// # Panics
    ///
    /// When `name` is not one of the declared names (a bug in the job).
    pub fn add(&mut self, name: &str, n: u64) {
        let slot = self
            .0
            .iter_mut()
            .find(|(k, _)| *k == name)
            .unwrap_or_else(|| panic!("BUG: the count {name:?} is not declared by its job"));
        slot.1 += n;
    }

    /// The count `name`, if declared.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    /// Each name and its count, in the declared order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0.iter().copied()
    }

    /// True when every count is zero.
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|(_, v)| *v == 0)
    }

    /// The names, in order (to check a step against its declaration).
    fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|(k, _)| *k)
    }

    /// True when these are exactly `names`, in order.
    pub(crate) fn declares(&self, names: &[&str]) -> bool {
        self.names().eq(names.iter().copied())
    }
}

impl Serialize for Counts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Runs `f` (one batch, returning how many rows it handled) until a batch
/// comes back short, and returns the total.
pub(crate) async fn in_batches<F, Fut>(mut f: F) -> Result<u64, JobError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, JobError>>,
{
    let mut total = 0;
    loop {
        let n = f().await?;
        total += n;
        if (n as i64) < BATCH {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_unique_and_counts_declared() {
        let mut names: Vec<_> = REGISTERED.iter().map(|j| j.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), REGISTERED.len(), "a job name is used twice");
        for job in REGISTERED {
            assert!(!job.counts().is_empty(), "{} reports nothing", job.name());
        }
    }

    #[test]
    fn the_orphan_reaper_runs_after_every_row_job() {
        assert_eq!(REGISTERED.last().map(|j| j.name()), Some("orphan_blobs"));
    }

    #[test]
    fn counts_serialize_as_an_object_in_declared_order() {
        let mut c = Counts::zero(&["b", "a"]);
        c.add("a", 2);
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"b":0,"a":2}"#);
        assert_eq!(c.get("a"), Some(2));
        assert_eq!(c.get("c"), None);
        assert!(!c.is_zero());
        assert!(c.declares(&["b", "a"]));
    }

    #[test]
    #[should_panic(expected = "not declared")]
    fn an_undeclared_count_is_a_bug() {
        Counts::zero(&["a"]).add("b", 1);
    }
}
