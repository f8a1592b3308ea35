//! Files in hand: each staged file, named by an inbox row or by the
//! server's list of unacked files, is delivered ([`super::download`]) by a
//! task of its own, tried again with backoff while it cannot be written,
//! and settled once: a JSON line for the agent (default mode), its state for
//! the messages that name it, and the cursor.

use std::collections::hash_map::Entry;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::download::{self, Outcome};
use super::{Ctx, Dispatch, FileState};
use crate::client::ClientError;
use crate::domain::inbox::ChatUpload;

/// First delay before a file that could not be written is tried again; it
/// doubles up to [`FILE_RETRY_CAP`].
const FILE_RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest delay between two tries of a file that could not be written.
const FILE_RETRY_CAP: Duration = Duration::from_secs(300);
/// How long to wait before reading the list of unacked files again when
/// reading it failed.
const UNACKED_RETRY: Duration = Duration::from_secs(10);

/// Reads the server's list of unacked files and starts a delivery for each
/// one this run does not have in hand. `None` when done, or when to read it
/// again after a failure.
pub(super) async fn resume_unacked(ctx: &Arc<Ctx>, dispatch: &mut Dispatch) -> Option<Instant> {
    match ctx.client.list_pending_uploads(ctx.workspace).await {
        Ok(files) => {
            let mut resumed = 0;
            for file in files {
                let upload = ChatUpload::staged(
                    ctx.workspace,
                    file.file_id,
                    file.filename,
                    file.mimetype,
                    u64::try_from(file.size).unwrap_or(0),
                    file.sha256,
                );
                resumed += usize::from(start_delivery(ctx, dispatch, upload, None).await);
            }
            if resumed > 0 {
                tracing::info!(
                    files = resumed,
                    "trying again the files the server still holds unacked"
                );
            }
            None
        }
        Err(ClientError::Unauthorized(_)) => {
            ctx.unauthorized();
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "listing the unacked files failed; trying again later");
            Some(Instant::now() + UNACKED_RETRY)
        }
    }
}

/// Starts the delivery of a file unless this run already has it in hand
/// (both a row and the list of unacked files can name it); `false` if so.
/// Either way the row, if any, is then the delivery's business: the server
/// keeps the file until it is acked, so the cursor may pass the row.
pub(super) async fn start_delivery(
    ctx: &Arc<Ctx>,
    dispatch: &mut Dispatch,
    upload: ChatUpload,
    activity_id: Option<i64>,
) -> bool {
    let tx = {
        let mut files = ctx.files.lock().unwrap_or_else(|e| e.into_inner());
        match files.entry(upload.file_id) {
            Entry::Occupied(_) => None,
            Entry::Vacant(slot) => {
                let (tx, rx) = watch::channel(FileState::Pending);
                slot.insert(rx);
                Some(tx)
            }
        }
    };
    let Some(tx) = tx else {
        if let Some(id) = activity_id {
            ctx.finish(id).await;
        }
        return false;
    };
    let (ctx, permits, emit) = (ctx.clone(), dispatch.permits.clone(), dispatch.emit_files);
    dispatch.downloads.spawn(async move {
        let delivery = Delivery {
            ctx: &ctx,
            upload: &upload,
            activity_id,
            emit,
            state: &tx,
        };
        delivery.run(&permits).await;
    });
    true
}

/// One file in hand, from its first try until it is settled.
struct Delivery<'a> {
    ctx: &'a Ctx,
    upload: &'a ChatUpload,
    activity_id: Option<i64>,
    emit: bool,
    state: &'a watch::Sender<FileState>,
}

impl Delivery<'_> {
    /// Tries until the file is acked, the server forgets it, or a stop; a
    /// local failure (disk full, a failed write or rename) is tried again
    /// with backoff. The first failure is reported and frees the cursor: the
    /// server keeps the file, and the next run's list of unacked files
    /// picks it up if this run stops first.
    async fn run(&self, permits: &Semaphore) {
        let mut backoff = Backoff::with_limits(FILE_RETRY_BASE, FILE_RETRY_CAP);
        let mut failures = 0u32;
        loop {
            let outcome = match permits.acquire().await {
                Ok(_permit) if !self.ctx.stop.is_cancelled() => {
                    tracing::info!(file_id = %self.upload.file_id, filename = %self.upload.filename,
                        size = self.upload.size, attempt = failures + 1, "downloading");
                    download::deliver(self.ctx, self.upload).await
                }
                _ => Outcome::Abandoned,
            };
            let Outcome::Failed(error) = outcome else {
                return self.settle(outcome).await;
            };
            failures += 1;
            tracing::error!(file_id = %self.upload.file_id, filename = %self.upload.filename, error,
                failures, "the file could not be written; trying again with backoff");
            if failures == 1 {
                self.settle(Outcome::Failed(error)).await;
            }
            if !backoff.wait(&self.ctx.stop).await {
                return;
            }
        }
    }

    /// Records how a try ended: a JSON line for the agent (default mode),
    /// the file's state for waiting messages, and the cursor.
    async fn settle(&self, outcome: Outcome) {
        let (state, event, done) = match outcome {
            Outcome::Delivered(path) => {
                let e = self.file_line(&path, true);
                (FileState::Ready(path), Some(e), true)
            }
            Outcome::OnDisk(path) => {
                // Settled for the agent; the row is left for the next run to
                // ack unless the server has forgotten it.
                let e = self.file_line(&path, false);
                (
                    FileState::Ready(path),
                    Some(e),
                    !self.ctx.stop.is_cancelled(),
                )
            }
            Outcome::Missing(error) => {
                tracing::warn!(file_id = %self.upload.file_id, filename = %self.upload.filename, error,
                    "the server no longer has this file (expired or acked elsewhere); skipping it");
                let e = self.line("file_missing", json!({"error": error}));
                (FileState::Gone, Some(e), true)
            }
            Outcome::Failed(error) => {
                let e = self.line("file_failed", json!({"error": error, "retrying": true}));
                (FileState::Retrying, Some(e), true)
            }
            Outcome::Abandoned => (FileState::Abandoned, None, false),
        };
        // The line goes out before a waiting message is released, so the
        // agent reads the file before the message that names it.
        if let (true, Some(event)) = (self.emit, event) {
            self.ctx.out.emit(&event).await;
        }
        let _ = self.state.send(state);
        if let (true, Some(id)) = (done, self.activity_id) {
            self.ctx.finish(id).await;
        }
    }

    fn file_line(&self, path: &Path, acked: bool) -> Value {
        self.line(
            "file",
            json!({"path": path, "uri": format!("workspace:{}", path.display()), "acked": acked}),
        )
    }

    /// A JSON line of `kind` about this file, with `extra` fields.
    fn line(&self, kind: &str, extra: Value) -> Value {
        let u = self.upload;
        let mut line = json!({
            "type": kind, "activity_id": self.activity_id, "file_id": u.file_id,
            "filename": u.filename, "mimetype": u.mimetype, "size": u.size,
            "sha256": u.sha256, "pending_uri": u.uri,
        });
        if let (Some(line), Value::Object(extra)) = (line.as_object_mut(), extra) {
            line.extend(extra);
        }
        line
    }
}
