//! `POST /workspaces/:id/chat/uploads`: files from the operator to a
//! workspace.
//!
//! Push mode forwards the multipart body as it arrives. Poll mode streams
//! every part into the blob store while hashing and measuring it (memory
//! does not grow with file size, limits bite at the first byte over), then
//! ONE transaction records every file and its inbox row. Any failure on
//! the way deletes every blob already written: nothing is half-staged.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{LiveWorkspace, Operator, WorkspaceItself};
use super::extract::{Query, WorkspacePath};
use super::multipart::{
    Framing, FramingGuard, Scanner, Verdict, DRAIN_TIME, FRAMING_ALLOWANCE, MAX_PART_HEADER,
};
use super::{AppState, Error, ErrorBody, Result};
use crate::blob::{upload_key, BlobError, BlobStore};
use crate::domain::inbox::{size_str, ChatUpload, ForwardedUpload, InboxItem};
use crate::domain::{
    self, pending_uri, DeliveryMode, FileId, Filename, Mimetype, UploadLimits, WorkspaceId,
};
use crate::events::{Event, UploadState};
use crate::store::{NewActivity, NewPendingUpload};

type Multipart<'a> = multer::Multipart<'a>;

/// Most files accepted in one request.
pub(super) const MAX_FILES_PER_REQUEST: usize = 100;

/// One uploaded file, as answered.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct UploadedFile {
    /// `platform-pending:<workspace_id>/<file_id>` in poll mode.
    pub uri: String,
    /// The sanitized file name.
    pub name: String,
    /// The sanitized mimetype.
    #[serde(rename = "mimeType")]
    pub mime_type: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
}

/// `{files: [...]}`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct UploadedFiles {
    /// Every file of the request, in request order.
    pub files: Vec<UploadedFile>,
}

/// Blobs written by a request that has not committed yet. Dropping the
/// guard armed (the handler errored or the client went away and the future
/// was dropped) deletes them in the background; error paths also call
/// [`StagedBlobs::discard`] to delete them before answering.
struct StagedBlobs {
    blobs: Arc<dyn BlobStore>,
    keys: Vec<String>,
}

impl StagedBlobs {
    async fn discard(&mut self) {
        for key in std::mem::take(&mut self.keys) {
            if let Err(e) = self.blobs.delete(&key).await {
                tracing::warn!(error = %e, key, "failed to delete the blob of a failed upload; the reaper will");
            }
        }
    }

    fn commit(&mut self) {
        self.keys.clear();
    }
}

impl Drop for StagedBlobs {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.keys);
        let blobs = self.blobs.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                for key in keys {
                    let _ = blobs.delete(&key).await;
                }
            });
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Over {
    File,
    Request,
}

/// A file written to the blob store, not yet recorded.
struct Staged {
    file_id: FileId,
    received_at: chrono::DateTime<chrono::Utc>,
    key: String,
    filename: Filename,
    mimetype: Mimetype,
    size: u64,
    sha256: String,
}

/// Why an upload is refused. Each is one metric label, one log line and
/// one answer, all written once in [`refuse`].
enum Rejection {
    /// The body does not parse or ends early (the sentence says where).
    Malformed(String),
    /// The framing scanner refused the body.
    Framing(Framing),
    /// More than [`MAX_FILES_PER_REQUEST`] files.
    TooManyFiles,
    /// A file with no bytes.
    EmptyFile(Filename),
    /// A file over the per-file limit.
    FileTooLarge(Filename),
    /// The files together over the per-request limit, at this file.
    RequestTooLarge(Filename),
    /// No part named `files`.
    NoFiles,
    /// The blob store or database failed.
    Storage(Error),
}

impl Rejection {
    /// The `reason` label of `molecule_pending_uploads_rejected_total`.
    fn reason(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "malformed",
            Rejection::Framing(Framing::Body) | Rejection::RequestTooLarge(_) => {
                "request_too_large"
            }
            Rejection::Framing(Framing::PartHeader | Framing::Preamble) => "header_too_large",
            Rejection::TooManyFiles => "too_many_files",
            Rejection::EmptyFile(_) => "empty_file",
            Rejection::FileTooLarge(_) => "file_too_large",
            Rejection::NoFiles => "no_files",
            Rejection::Storage(_) => "storage",
        }
    }

    /// The file it concerns, if one.
    fn filename(&self) -> Option<&str> {
        match self {
            Rejection::EmptyFile(f)
            | Rejection::FileTooLarge(f)
            | Rejection::RequestTooLarge(f) => Some(f.as_str()),
            _ => None,
        }
    }

    /// Whether the client is likely still sending: then what is left of the
    /// body is read and discarded before answering (the framing guard
    /// drains by itself).
    fn drains(&self) -> bool {
        matches!(
            self,
            Rejection::FileTooLarge(_) | Rejection::RequestTooLarge(_)
        )
    }

    fn into_error(self, limits: UploadLimits) -> Error {
        match self {
            Rejection::Malformed(sentence) => Error::BadRequest(sentence),
            Rejection::Framing(Framing::Body) => request_too_large(limits.max_request_size),
            Rejection::Framing(Framing::PartHeader) => Error::BadRequest(format!(
                "a part's headers are larger than the {} limit",
                size_str(MAX_PART_HEADER as u64)
            )),
            Rejection::Framing(Framing::Preamble) => Error::BadRequest(format!(
                "the multipart body has more than {} before its first boundary",
                size_str(MAX_PART_HEADER as u64)
            )),
            Rejection::TooManyFiles => {
                Error::BadRequest(format!("at most {MAX_FILES_PER_REQUEST} files per request"))
            }
            Rejection::EmptyFile(f) => Error::BadRequest(format!("file \"{f}\" is empty")),
            Rejection::FileTooLarge(f) => Error::PayloadTooLarge(format!(
                "file \"{f}\" is larger than the {} limit per file",
                size_str(limits.max_file_size)
            )),
            Rejection::RequestTooLarge(f) => Error::PayloadTooLarge(format!(
                "the request is larger than the {} limit per request (at file \"{f}\")",
                size_str(limits.max_request_size)
            )),
            Rejection::NoFiles => {
                Error::BadRequest("no file: send one or more parts named `files`".into())
            }
            Rejection::Storage(e) => e,
        }
    }
}

/// Counts a refusal, logs it and builds its answer (the one place that
/// does).
fn reject(state: &AppState, workspace_id: WorkspaceId, rejection: Rejection) -> Error {
    let reason = rejection.reason();
    let filename = rejection.filename().map(str::to_owned);
    let err = rejection.into_error(state.config.limits);
    state.metrics.rejected.with_label_values(&[reason]).inc();
    tracing::info!(workspace_id = %workspace_id, filename, reason, error = %err, "upload rejected");
    err
}

/// Reads and discards what is left of a refused request, so the client gets
/// to read our answer instead of a reset connection. Bounded in bytes and
/// time; past either bound the connection is simply closed.
async fn drain(multipart: &mut Multipart<'static>, budget: u64) {
    let drained = async {
        let mut left = budget;
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(chunk)) = field.chunk().await {
                left = left.saturating_sub(chunk.len() as u64);
                if left == 0 {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drained).await;
}

/// The 413 of a request over the per-request limit.
fn request_too_large(limit: u64) -> Error {
    Error::PayloadTooLarge(format!(
        "the request is larger than the {} limit per request",
        size_str(limit)
    ))
}

/// Query of `POST /workspaces/:id/chat/uploads`.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
pub(super) struct UploadParams {
    /// `true`: the files are attachments of a message the client sends
    /// next (naming them by URI in its `file` parts); the agent gets them
    /// with that message rather than each announced alone.
    #[serde(default)]
    pub attach: bool,
}

/// Uploads files to a workspace: forwarded in push mode, staged for the
/// workspace to download in poll mode. All or nothing.
#[utoipa::path(post, path = "/workspaces/{id}/chat/uploads", tag = "uploads",
    params(("id" = String, Path, description = "workspace id"), UploadParams),
    request_body(content_type = "multipart/form-data", description = "one or more parts named `files`"),
    responses((status = 200, body = UploadedFiles), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn upload_chat_files(
    State(state): State<AppState>,
    LiveWorkspace {
        row: workspace,
        rule: Operator(WorkspacePath(id), _),
    }: LiveWorkspace<Operator<WorkspacePath>>,
    Query(params): Query<UploadParams>,
    req: Request,
) -> Result<Response> {
    require_multipart(&state, &req)?;
    match (workspace.delivery_mode, workspace.url) {
        (DeliveryMode::Push, Some(url)) => forward_upload(&state, id, &url, req).await,
        (DeliveryMode::Push, None) => Err(super::workspaces::push_without_url()),
        (DeliveryMode::Poll, _) => {
            // Staged in a task of its own: if the client goes away and this
            // handler is dropped, the task still sees the body fail and
            // removes what it wrote, before anything else can observe it.
            let task_state = state.clone();
            let to = Destination::Agent {
                attach: params.attach,
            };
            let staged = tokio::spawn(async move { stage_upload(&task_state, id, req, to).await })
                .await
                .map_err(|e| Error::Internal(anyhow::anyhow!("the upload task failed: {e}")))??;
            Ok(axum::Json(staged).into_response())
        }
    }
}

/// A multipart body, or 400 (counted as `not_multipart`).
fn require_multipart(state: &AppState, req: &Request) -> Result<()> {
    let is_multipart = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    if is_multipart {
        return Ok(());
    }
    state
        .metrics
        .rejected
        .with_label_values(&["not_multipart"])
        .inc();
    Err(Error::BadRequest(
        "expected a multipart/form-data body with one or more parts named `files`".into(),
    ))
}

/// Files from the agent to the user: the workspace's own token stages them
/// on the server (push and poll workspaces alike) for the operator to
/// download; `/notify` then names their URIs in its `attachments`. They
/// are never in the workspace's own list of files to fetch, and expire
/// with `--upload-ttl`. All or nothing, with the chat upload's limits.
#[utoipa::path(post, path = "/workspaces/{id}/notify/uploads", tag = "uploads",
    params(("id" = String, Path, description = "workspace id")),
    request_body(content_type = "multipart/form-data", description = "one or more parts named `files`"),
    responses((status = 200, body = UploadedFiles), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn upload_files_to_user(
    State(state): State<AppState>,
    LiveWorkspace {
        rule: WorkspaceItself(WorkspacePath(id), _),
        ..
    }: LiveWorkspace<WorkspaceItself>,
    req: Request,
) -> Result<Response> {
    require_multipart(&state, &req)?;
    let task_state = state.clone();
    let staged =
        tokio::spawn(async move { stage_upload(&task_state, id, req, Destination::User).await })
            .await
            .map_err(|e| Error::Internal(anyhow::anyhow!("the upload task failed: {e}")))??;
    Ok(axum::Json(staged).into_response())
}

/// Whom staged files are for.
#[derive(Debug, Clone, Copy)]
enum Destination {
    /// The agent fetches them (`attach`: they go with the next message).
    Agent { attach: bool },
    /// The user downloads them (the agent uploaded them to its chat).
    User,
}

/// Hands the body on one network read at a time. The multipart parser
/// drains everything a body stream has ready each time it is polled; on a
/// fast link that is the whole socket buffer (megabytes) per upload. A
/// pause after each chunk makes it take one chunk and hand it on, so
/// memory per upload stays at one read whatever the link and concurrency.
struct OneReadAtATime<S> {
    inner: S,
    just_yielded: bool,
}

impl<S: futures::Stream + Unpin> futures::Stream for OneReadAtATime<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.just_yielded {
            self.just_yielded = false;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        let next = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        if matches!(next, std::task::Poll::Ready(Some(_))) {
            self.just_yielded = true;
        }
        next
    }
}

/// Poll mode: read every file into the blob store, then record them all
/// in one transaction, then announce them. Any refusal on the way deletes
/// what was written (see [`refuse`]).
async fn stage_upload(
    state: &AppState,
    id: WorkspaceId,
    req: Request,
    to: Destination,
) -> Result<UploadedFiles> {
    let mut blobs = StagedBlobs {
        blobs: state.blobs.clone(),
        keys: Vec::new(),
    };
    let (mut multipart, verdict) = match open_multipart(state, req) {
        Ok(opened) => opened,
        Err(rejection) => return Err(reject(state, id, rejection)),
    };
    let staged = match read_files(state, id, &mut multipart, &verdict, &mut blobs).await {
        Ok(staged) => staged,
        Err(rejection) => {
            return Err(refuse(state, id, &mut blobs, &mut multipart, rejection).await)
        }
    };
    // This runs in a task of its own (see `upload_chat_files`): it is never
    // dropped between the commit and `blobs.commit()`, and the store's
    // group commit, which needs its callers to run to completion, holds.
    let activities = match record(state, id, &staged, to).await {
        Ok(activities) => activities,
        Err(e) => {
            let rejection = Rejection::Storage(e);
            return Err(refuse(state, id, &mut blobs, &mut multipart, rejection).await);
        }
    };
    blobs.commit();
    announce(state, id, &staged, &activities).await;
    Ok(UploadedFiles {
        files: staged
            .into_iter()
            .map(|f| UploadedFile {
                uri: pending_uri(id, f.file_id),
                name: f.filename.to_string(),
                mime_type: f.mimetype.to_string(),
                size: f.size,
                sha256: f.sha256,
            })
            .collect(),
    })
}

/// Deletes what the request wrote, drains what the client may still be
/// sending, then counts, logs and answers the refusal.
async fn refuse(
    state: &AppState,
    id: WorkspaceId,
    blobs: &mut StagedBlobs,
    multipart: &mut Multipart<'static>,
    rejection: Rejection,
) -> Error {
    blobs.discard().await;
    if rejection.drains() {
        drain(
            multipart,
            state.config.limits.max_request_size.saturating_mul(2),
        )
        .await;
    }
    reject(state, id, rejection)
}

/// The multipart parser over the body, paced and guarded.
fn open_multipart(
    state: &AppState,
    req: Request,
) -> std::result::Result<(Multipart<'static>, Verdict), Rejection> {
    let limits = state.config.limits;
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| Rejection::Malformed(format!("invalid multipart body: {e}")))?;
    let paced = OneReadAtATime {
        inner: req.into_body().into_data_stream(),
        just_yielded: false,
    };
    let scanner = Scanner::new(&boundary, limits.max_request_size + FRAMING_ALLOWANCE);
    let (guarded, verdict) =
        FramingGuard::new(paced, scanner, limits.max_request_size.saturating_mul(2));
    Ok((Multipart::new(guarded, boundary), verdict))
}

/// What a parser error means: the framing guard's verdict if it tripped,
/// else a malformed body.
fn parse_failure(verdict: &Verdict, sentence: impl FnOnce() -> String) -> Rejection {
    match verdict.get() {
        Some(framing) => Rejection::Framing(framing),
        None => Rejection::Malformed(sentence()),
    }
}

/// Streams every part named `files` into the blob store (other parts are
/// read and ignored; the framing guard counts them against the limit).
async fn read_files(
    state: &AppState,
    id: WorkspaceId,
    multipart: &mut Multipart<'static>,
    verdict: &Verdict,
    blobs: &mut StagedBlobs,
) -> std::result::Result<Vec<Staged>, Rejection> {
    let cut_short = |e: multer::Error| {
        parse_failure(verdict, || {
            format!("the multipart body is malformed or was cut short: {e}")
        })
    };
    let mut staged: Vec<Staged> = Vec::new();
    let mut file_bytes = 0u64;
    while let Some(mut field) = multipart.next_field().await.map_err(cut_short)? {
        if field.name() != Some("files") {
            while field.chunk().await.map_err(cut_short)?.is_some() {}
            continue;
        }
        if staged.len() >= MAX_FILES_PER_REQUEST {
            return Err(Rejection::TooManyFiles);
        }
        let mut file = store_file(state, id, field, file_bytes, verdict, blobs).await?;
        file_bytes += file.size;
        // Strictly increasing, so the list shows a batch in request order.
        if let Some(prev) = staged.last() {
            file.received_at = file
                .received_at
                .max(prev.received_at + chrono::Duration::microseconds(1));
        }
        staged.push(file);
    }
    if staged.is_empty() {
        return Err(Rejection::NoFiles);
    }
    Ok(staged)
}

/// Streams one part into a new blob while hashing and measuring it; the
/// limits bite at the first byte over.
async fn store_file(
    state: &AppState,
    id: WorkspaceId,
    field: multer::Field<'static>,
    earlier_files: u64,
    verdict: &Verdict,
    blobs: &mut StagedBlobs,
) -> std::result::Result<Staged, Rejection> {
    let limits = state.config.limits;
    let filename = Filename::sanitize(field.file_name().unwrap_or(""));
    let mimetype = Mimetype::parse(field.content_type().map(|m| m.as_ref()));
    let file_id = FileId::new();
    let key = upload_key(id, file_id);
    blobs.keys.push(key.clone());

    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut over: Option<Over> = None;
    let put = {
        let body = field
            .map(|chunk| {
                let chunk = chunk.map_err(io::Error::other)?;
                size += chunk.len() as u64;
                if size > limits.max_file_size {
                    over = Some(Over::File);
                    return Err(io::Error::other("file over its limit"));
                }
                if earlier_files + size > limits.max_request_size {
                    over = Some(Over::Request);
                    return Err(io::Error::other("request over its limit"));
                }
                hasher.update(&chunk);
                Ok(chunk)
            })
            .boxed();
        state.blobs.put(&key, body).await
    };
    match (put, over) {
        (Ok(_), _) if size == 0 => Err(Rejection::EmptyFile(filename)),
        (Ok(_), _) => Ok(Staged {
            file_id,
            received_at: domain::now(),
            key,
            filename,
            mimetype,
            size,
            sha256: hex::encode(hasher.finalize()),
        }),
        (Err(BlobError::Body(_)), Some(Over::File)) => Err(Rejection::FileTooLarge(filename)),
        (Err(BlobError::Body(_)), Some(Over::Request)) => Err(Rejection::RequestTooLarge(filename)),
        (Err(BlobError::Body(e)), None) => Err(parse_failure(verdict, || {
            format!(
                "the multipart body is malformed or was cut short while reading file \"{filename}\": {e}"
            )
        })),
        (Err(e), _) => Err(Rejection::Storage(e.into())),
    }
}

/// Records every file and its inbox row in one transaction (files for the
/// user get no inbox row: the answer is empty).
async fn record(
    state: &AppState,
    id: WorkspaceId,
    staged: &[Staged],
    to: Destination,
) -> Result<Vec<crate::store::Activity>> {
    let now = staged.last().map_or_else(domain::now, |f| f.received_at);
    let expires_at = state.upload_ttl.after(now);
    let new_upload = |f: &Staged| NewPendingUpload {
        file_id: f.file_id,
        blob_key: f.key.clone(),
        size: f.size as i64,
        sha256: f.sha256.clone(),
        filename: f.filename.to_string(),
        mimetype: f.mimetype.to_string(),
        created_at: f.received_at,
        expires_at,
    };
    let attach = match to {
        Destination::Agent { attach } => attach,
        Destination::User => {
            let files: Vec<NewPendingUpload> = staged.iter().map(&new_upload).collect();
            state.store.stage_files_to_user(id, &files).await?;
            return Ok(Vec::new());
        }
    };
    let rows: Vec<(NewPendingUpload, NewActivity)> = staged
        .iter()
        .map(|f| {
            let upload = new_upload(f);
            let announced = ChatUpload {
                attached: attach,
                ..ChatUpload::staged(
                    id,
                    f.file_id,
                    f.filename.to_string(),
                    f.mimetype.to_string(),
                    f.size,
                    f.sha256.clone(),
                )
            };
            let activity = InboxItem::ChatUpload(announced).row();
            (upload, activity)
        })
        .collect();
    Ok(state.store.stage_uploads(id, rows, now).await?)
}

/// Counts, logs and wakes the waiters of files just recorded.
async fn announce(
    state: &AppState,
    id: WorkspaceId,
    staged: &[Staged],
    activities: &[crate::store::Activity],
) {
    let mut events = Vec::with_capacity(2 * staged.len());
    for (f, activity) in staged.iter().zip(activities) {
        state.metrics.staged.inc();
        state.metrics.staged_bytes.inc_by(f.size);
        tracing::info!(
            workspace_id = %id, file_id = %f.file_id, size = f.size, filename = %f.filename,
            mimetype = %f.mimetype, sha256 = %f.sha256, activity_id = activity.id, "upload staged"
        );
        events.push(Event::Activity {
            workspace_id: id,
            id: activity.id,
        });
        events.push(Event::Upload {
            workspace_id: id,
            file_id: f.file_id,
            state: UploadState::Staged,
        });
    }
    state.bus.publish_many(events).await;
}

async fn forward_upload(
    state: &AppState,
    id: WorkspaceId,
    url: &str,
    req: Request,
) -> Result<Response> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("multipart/form-data"));
    // The multipart framing adds a little to the files themselves.
    let cap = state.config.limits.max_request_size + FRAMING_ALLOWANCE;
    let over = Arc::new(AtomicBool::new(false));
    let seen_over = over.clone();
    let mut sent = 0u64;
    let body = Body::into_data_stream(req.into_body())
        .map_err(io::Error::other)
        .and_then(move |chunk| {
            sent += chunk.len() as u64;
            let verdict = if sent > cap {
                seen_over.store(true, Ordering::SeqCst);
                Err(io::Error::other("request over its limit"))
            } else {
                Ok(chunk)
            };
            futures::future::ready(verdict)
        });
    let target = format!("{url}/internal/chat/uploads/ingest");
    let answer = state
        .http
        .post(&target)
        .header(CONTENT_TYPE, content_type)
        .body(reqwest::Body::wrap_stream(body))
        .timeout(state.config.forward_timeout)
        .send()
        .await;
    if over.load(Ordering::SeqCst) {
        state
            .metrics
            .rejected
            .with_label_values(&["request_too_large"])
            .inc();
        tracing::info!(workspace_id = %id, reason = "request_too_large", "upload rejected");
        return Err(request_too_large(state.config.limits.max_request_size));
    }
    let answer = answer.map_err(|e| {
        let e = e.without_url();
        tracing::warn!(workspace_id = %id, error = %e, "forwarding an upload to a push workspace failed");
        Error::BadGateway(format!("could not reach the workspace: {e}"))
    })?;
    let status = answer.status();
    if status.is_server_error() {
        tracing::warn!(workspace_id = %id, %status, "push workspace failed an upload");
        return Err(Error::BadGateway(format!(
            "the workspace answered {status}"
        )));
    }
    let body: Value = answer.json().await.map_err(|e| {
        Error::BadGateway(format!(
            "the workspace's answer is not JSON: {}",
            e.without_url()
        ))
    })?;
    tracing::info!(workspace_id = %id, %status, "upload forwarded to push workspace");
    if status.is_success() {
        record_forwarded(state, id, &body).await?;
    }
    let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    Ok((status, axum::Json(body)).into_response())
}

/// After a push workspace took an upload: one activity row per file it
/// names (`a2a_receive` / `chat_upload_forward`, status `delivered`), so
/// that history shows the files as it shows staged ones, and a stamp of
/// contact, since the workspace just answered.
async fn record_forwarded(state: &AppState, id: WorkspaceId, answer: &Value) -> Result<()> {
    let files = answer["files"].as_array().map_or(&[][..], Vec::as_slice);
    for f in files {
        let taken = ForwardedUpload {
            to: id,
            filename: f["name"].as_str().unwrap_or("file").to_owned(),
            mimetype: f["mimeType"].clone(),
            size: f["size"].as_u64(),
            sha256: f["sha256"].clone(),
            uri: f["uri"].clone(),
        };
        let row = InboxItem::ForwardedUpload(taken).row();
        super::activity::record(state, id, &row).await?;
    }
    state
        .store
        .heartbeat(id, &domain::HeartbeatReport::default(), domain::now())
        .await?;
    Ok(())
}

/// The routes of this resource, with their OpenAPI operations.
/// Uploads enforce their own limits while streaming; the default body limit (which protects the JSON routes) must not cut them.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().merge(
        OpenApiRouter::new()
            .routes(routes!(upload_chat_files))
            .routes(routes!(upload_files_to_user))
            .layer(axum::extract::DefaultBodyLimit::disable()),
    )
}
