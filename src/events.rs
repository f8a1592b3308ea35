//! The event bus: how a long poll or an SSE stream learns, within
//! milliseconds, that a row it waits for was committed.
//!
//! In one process a `tokio::sync::broadcast` channel is enough. With several
//! replicas on PostgreSQL, events go through `NOTIFY molecule_events` and
//! every replica's listener re-broadcasts them locally, so a long poll held
//! by replica B wakes when replica A commits. Events are hints: a receiver
//! always re-reads the database, so a lost or duplicated event costs at
//! most one extra query (and a listener reconnect wakes everyone).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::domain::{ApprovalId, DelegationId, DelegationStatus, FileId, WorkspaceId};
use crate::store::Notifier;

const CHANNEL: &str = "molecule_events";

/// Where a staged file is in its hand-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UploadState {
    /// In the blob store, announced in the inbox.
    Staged,
    /// Downloaded at least once.
    Fetched,
    /// Delivered; the content is gone.
    Acked,
    /// Past its deadline, removed by the sweep.
    Expired,
}

/// A move of the delegation ledger, as the event streams carry it
/// (`event: delegation`): small enough for a `NOTIFY` payload, so the
/// previews are not in it; a client that shows them re-reads the row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DelegationMove {
    /// The delegation.
    #[schema(value_type = String, format = Uuid)]
    pub delegation_id: DelegationId,
    /// The delegating workspace's id, or `operator`.
    pub caller_id: String,
    /// The workspace asked to do it.
    #[schema(value_type = String, format = Uuid)]
    pub callee_id: WorkspaceId,
    /// The status before: null when the delegation was just created;
    /// equal to `status` for a repeat that applied a preview, or for a
    /// heartbeat (`last_heartbeat_at` moved).
    pub from: Option<DelegationStatus>,
    /// The status now.
    pub status: DelegationStatus,
    /// The row's `updated_at` after the move.
    pub updated_at: DateTime<Utc>,
}

impl DelegationMove {
    /// True when `workspace` is the caller or the callee.
    pub fn concerns(&self, workspace: WorkspaceId) -> bool {
        self.callee_id == workspace || self.caller_id == workspace.to_string()
    }
}

/// A move of an approval request, as the event streams carry it (`event:
/// approval`): created, escalated or decided. Small, like a delegation's;
/// a view that shows the request re-reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApprovalMove {
    /// The request.
    #[schema(value_type = String, format = Uuid)]
    pub approval_id: ApprovalId,
    /// The requesting workspace.
    #[schema(value_type = String, format = Uuid)]
    pub workspace_id: WorkspaceId,
    /// Who may decide it now besides the operator (null: the operator alone).
    #[schema(value_type = Option<String>, format = Uuid)]
    pub approver_id: Option<WorkspaceId>,
    /// `pending`, `approved` or `denied`.
    pub status: String,
    /// `operator`, a workspace id or `expired`, once decided.
    pub decided_by: Option<String>,
}

impl ApprovalMove {
    /// True when `workspace` asked, or may decide.
    pub fn concerns(&self, workspace: WorkspaceId) -> bool {
        self.workspace_id == workspace || self.approver_id == Some(workspace)
    }
}

/// Something a waiter may care about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// An activity row was committed.
    Activity {
        /// Its workspace.
        workspace_id: WorkspaceId,
        /// Its id.
        id: i64,
    },
    /// A staged file changed state.
    Upload {
        /// Its workspace.
        workspace_id: WorkspaceId,
        /// The file.
        file_id: FileId,
        /// The new state.
        state: UploadState,
    },
    /// A delegation was created or moved, a repeat applied a preview, or
    /// its callee heartbeated.
    Delegation(DelegationMove),
    /// An approval request was created, escalated or decided.
    Approval(ApprovalMove),
    /// Tokens of a workspace were revoked (rotation, deletion): requests
    /// held open with one of them must re-check it and end.
    Revoked {
        /// Its workspace.
        workspace_id: WorkspaceId,
    },
    /// An operator token was revoked: every request held open by an
    /// operator re-checks its token (which workspace it watched does not
    /// matter: an operator token may watch any).
    OperatorRevoked,
    /// A reader's read positions moved (`read_positions`): that reader's
    /// other pages re-read their unread counts.
    ReadMoved {
        /// `admin` or `token:<id>` (see `ReadStore`).
        reader: String,
    },
    /// Events may have been missed (a listener reconnected): re-read.
    Resync,
    /// A paused workspace was resumed: its agent's inbox polls, held
    /// while it was paused, read again.
    Resumed {
        /// Its workspace.
        workspace_id: WorkspaceId,
    },
}

/// What wakes a parked long poll of one workspace: counters that only grow,
/// so a waiter compares them with what it saw last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wakeups {
    /// Bumped when a new activity row may have been committed.
    pub rows: u64,
    /// Bumped when a token of the workspace was revoked.
    pub revocations: u64,
}

/// Events a workspace's stream channel holds for a reader that falls
/// behind; past them the reader sees `Lagged` and re-reads.
const WORKSPACE_STREAM_BACKLOG: usize = 64;

/// Delivery inside this process: every event to the fleet-wide
/// subscribers (the operator's feeds, few), the events of one workspace
/// to its own streams (`GET /workspaces/:id/events`: with a thousand
/// canvases open, an event wakes the streams it concerns, not a thousand),
/// and a wake-up to the long polls of the one workspace a new activity row
/// belongs to (many: with a thousand parked polls, a message wakes one
/// task, not a thousand).
struct Local {
    events: broadcast::Sender<Event>,
    streams: Mutex<HashMap<WorkspaceId, broadcast::Sender<Event>>>,
    polls: Mutex<HashMap<WorkspaceId, watch::Sender<Wakeups>>>,
    /// Every revocation this process heard of, any workspace. A request
    /// reads it before its token is checked; if it has moved when the
    /// request is about to wait, a revocation may have raced the check.
    revocations: AtomicU64,
}

impl Local {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            events: broadcast::channel(4096).0,
            streams: Mutex::new(HashMap::new()),
            polls: Mutex::new(HashMap::new()),
            revocations: AtomicU64::new(0),
        })
    }

    fn deliver(&self, event: Event) {
        match &event {
            Event::Activity { workspace_id, .. } | Event::Resumed { workspace_id } => {
                self.wake(workspace_id, |w| w.rows += 1);
            }
            Event::Revoked { workspace_id } => {
                self.revocations.fetch_add(1, Ordering::SeqCst);
                self.wake(workspace_id, |w| w.revocations += 1);
            }
            Event::OperatorRevoked => {
                self.revocations.fetch_add(1, Ordering::SeqCst);
                self.wake_all(|w| w.revocations += 1);
            }
            Event::Resync => {
                // A revocation may be among what was missed.
                self.revocations.fetch_add(1, Ordering::SeqCst);
                self.wake_all(|w| {
                    w.rows += 1;
                    w.revocations += 1;
                });
            }
            Event::Upload { .. }
            | Event::Delegation(_)
            | Event::Approval(_)
            | Event::ReadMoved { .. } => {}
        }
        self.to_streams(&event);
        let _ = self.events.send(event);
    }

    /// Hands `event` to the streams of the workspaces it concerns: its
    /// workspace; a delegation's caller and callee; an approval's
    /// requester and approver; every stream for an operator revocation or
    /// a resync. A read position concerns no workspace stream.
    fn to_streams(&self, event: &Event) {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let mut send = |workspace: &WorkspaceId| {
            if let Some(tx) = streams.get(workspace) {
                if tx.send(event.clone()).is_err() {
                    streams.remove(workspace);
                }
            }
        };
        match event {
            Event::Activity { workspace_id, .. }
            | Event::Upload { workspace_id, .. }
            | Event::Revoked { workspace_id }
            | Event::Resumed { workspace_id } => send(workspace_id),
            Event::Delegation(moved) => {
                send(&moved.callee_id);
                if let Ok(caller) = moved.caller_id.parse::<WorkspaceId>() {
                    if caller != moved.callee_id {
                        send(&caller);
                    }
                }
            }
            Event::Approval(moved) => {
                send(&moved.workspace_id);
                if let Some(approver) = moved.approver_id.filter(|a| *a != moved.workspace_id) {
                    send(&approver);
                }
            }
            Event::OperatorRevoked | Event::Resync => {
                streams.retain(|_, tx| tx.send(event.clone()).is_ok());
            }
            Event::ReadMoved { .. } => {}
        }
    }

    fn wake_all(&self, bump: impl Fn(&mut Wakeups)) {
        let mut polls = self.polls.lock().unwrap_or_else(|e| e.into_inner());
        polls.retain(|_, tx| tx.receiver_count() > 0);
        for tx in polls.values() {
            tx.send_modify(&bump);
        }
    }

    fn wake(&self, workspace_id: &WorkspaceId, bump: impl FnOnce(&mut Wakeups)) {
        let mut polls = self.polls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = polls.get(workspace_id) {
            if tx.receiver_count() == 0 {
                polls.remove(workspace_id);
            } else {
                tx.send_modify(bump);
            }
        }
    }
}

/// Publishes events to this process and, on PostgreSQL, to every replica.
#[derive(Clone)]
pub struct Bus {
    local: Arc<Local>,
    pg: Option<Notifier>,
}

impl Bus {
    /// A bus local to this process.
    pub fn local() -> Self {
        Self {
            local: Local::new(),
            pg: None,
        }
    }

    /// A bus shared by every replica through `notifier`. Call
    /// [`Bus::spawn_listener`].
    pub fn shared(notifier: Notifier) -> Self {
        Self {
            local: Local::new(),
            pg: Some(notifier),
        }
    }

    /// Receives every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.local.events.subscribe()
    }

    /// Receives, from now on, the events that concern `workspace` (see
    /// `Local::to_streams`): what its event stream shows, without waking
    /// on every other workspace's events.
    pub fn subscribe_workspace(&self, workspace: WorkspaceId) -> broadcast::Receiver<Event> {
        let mut streams = self.local.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams
            .entry(workspace)
            .or_insert_with(|| broadcast::channel(WORKSPACE_STREAM_BACKLOG).0)
            .subscribe()
    }

    /// A receiver that changes whenever a new activity row of `workspace`
    /// may have been committed or one of its tokens was revoked (and at
    /// every resync). Take it before reading, then wait on `changed()`.
    pub fn watch_activity(&self, workspace: WorkspaceId) -> watch::Receiver<Wakeups> {
        let mut polls = self.local.polls.lock().unwrap_or_else(|e| e.into_inner());
        polls
            .entry(workspace)
            .or_insert_with(|| watch::channel(Wakeups::default()).0)
            .subscribe()
    }

    /// How many long polls are waiting (or about to wait) on
    /// [`Bus::watch_activity`] in this process. None of them holds a
    /// database connection while it waits.
    pub fn parked_polls(&self) -> usize {
        let polls = self.local.polls.lock().unwrap_or_else(|e| e.into_inner());
        polls.values().map(|tx| tx.receiver_count()).sum()
    }

    /// How many revocations this process has heard of so far. Read it
    /// before checking a token; a later value means "check again".
    pub fn revocations_seen(&self) -> u64 {
        self.local.revocations.load(Ordering::SeqCst)
    }

    /// Announces an event (after the change it describes has committed).
    pub async fn publish(&self, event: Event) {
        self.publish_many(vec![event]).await;
    }

    /// Announces several events at once: on PostgreSQL one statement, so
    /// a sweep of thousands of rows is not thousands of round trips (each
    /// NOTIFY also takes the cluster-wide notify lock at commit).
    pub async fn publish_many(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        if let Some(notifier) = &self.pg {
            let payloads: Vec<String> = events
                .iter()
                .map(|e| serde_json::to_string(e).expect("BUG: events always serialize"))
                .collect();
            let sent = notifier.notify(CHANNEL, &payloads).await;
            match sent {
                // Our own listener hears them and re-broadcasts them here.
                Ok(_) => return,
                Err(e) => tracing::warn!(error = %e, "pg_notify failed; waking local waiters only"),
            }
        }
        for event in events {
            self.local.deliver(event);
        }
    }

    /// On PostgreSQL, listens for every replica's events until `shutdown`.
    pub fn spawn_listener(
        &self,
        shutdown: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let notifier = self.pg.clone()?;
        let local = self.local.clone();
        Some(tokio::spawn(async move {
            loop {
                let listened = async {
                    let mut listener = notifier.listen(CHANNEL).await?;
                    // Anything committed while we were not listening is
                    // found by a re-read.
                    local.deliver(Event::Resync);
                    loop {
                        let payload = listener.recv().await?;
                        match serde_json::from_str::<Event>(&payload) {
                            Ok(event) => {
                                local.deliver(event);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "ignoring a malformed event notification")
                            }
                        }
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), crate::store::StoreError>(())
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    result = listened => {
                        if let Err(e) = result {
                            tracing::warn!(error = %e, "event listener lost its connection; reconnecting");
                        }
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(workspace_id: WorkspaceId) -> Event {
        Event::Activity {
            workspace_id,
            id: 7,
        }
    }

    fn drain(rx: &mut broadcast::Receiver<Event>) -> Vec<Event> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[tokio::test]
    async fn a_workspace_stream_gets_what_concerns_it_and_nothing_else() {
        let bus = Bus::local();
        let (me, other, third) = (WorkspaceId::new(), WorkspaceId::new(), WorkspaceId::new());
        let mut mine = bus.subscribe_workspace(me);
        let mut others = bus.subscribe_workspace(other);
        let mut fleet = bus.subscribe();
        let delegation = |caller_id: String, callee_id| {
            Event::Delegation(DelegationMove {
                delegation_id: DelegationId::new(),
                caller_id,
                callee_id,
                from: None,
                status: DelegationStatus::Queued,
                updated_at: Utc::now(),
            })
        };
        let approval = |workspace_id, approver_id| {
            Event::Approval(ApprovalMove {
                approval_id: ApprovalId::new(),
                workspace_id,
                approver_id,
                status: "pending".into(),
                decided_by: None,
            })
        };
        let every = vec![
            activity(me),
            activity(third),
            Event::Upload {
                workspace_id: me,
                file_id: FileId::new(),
                state: UploadState::Staged,
            },
            delegation(me.to_string(), third),
            delegation("operator".into(), me),
            delegation(third.to_string(), other),
            approval(third, Some(me)),
            approval(me, None),
            approval(third, None),
            Event::Revoked { workspace_id: me },
            Event::Revoked {
                workspace_id: third,
            },
            Event::Resumed { workspace_id: me },
            Event::OperatorRevoked,
            Event::ReadMoved {
                reader: "admin".into(),
            },
            Event::Resync,
        ];
        bus.publish_many(every.clone()).await;
        let want_mine = [0, 2, 3, 4, 6, 7, 9, 11, 12, 14].map(|i| every[i].clone());
        assert_eq!(drain(&mut mine), want_mine);
        let want_others = [5, 12, 14].map(|i| every[i].clone());
        assert_eq!(drain(&mut others), want_others);
        assert_eq!(
            drain(&mut fleet),
            every,
            "the fleet's feed still gets everything"
        );
        // A closed stream's channel is dropped at the next event for it.
        drop(mine);
        bus.publish(activity(me)).await;
        assert_eq!(bus.local.streams.lock().unwrap().len(), 1);
        assert_eq!(drain(&mut others), Vec::<Event>::new());
    }

    #[tokio::test]
    async fn a_stream_that_falls_behind_is_told_so() {
        let bus = Bus::local();
        let me = WorkspaceId::new();
        let mut mine = bus.subscribe_workspace(me);
        let flood: Vec<Event> = (0..WORKSPACE_STREAM_BACKLOG + 1)
            .map(|_| activity(me))
            .collect();
        bus.publish_many(flood).await;
        assert_eq!(
            mine.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(1))
        );
    }
}
