//! The poll-mode hand-off: a workspace lists its staged files, downloads
//! each (streamed, with `Range`), and acks it. A file that is absent,
//! acked, expired or another workspace's is the same 404 for everyone.

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{SelfOrOperator, WorkspaceItself};
use super::auth::Principal;
use super::extract::{FilePath, Query, WorkspacePath};
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::{self, FileId};
use crate::events::{Event, UploadState};
use crate::store::{AckOutcome, PendingUpload};

/// A staged file as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct PendingUploadView {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub file_id: FileId,
    /// Sanitized name.
    pub filename: String,
    /// Sanitized mimetype.
    pub mimetype: String,
    /// Size in bytes.
    pub size: i64,
    /// Hex SHA-256.
    pub sha256: String,
    /// Staged at.
    pub created_at: DateTime<Utc>,
    /// Last download by the workspace, if any.
    pub fetched_at: Option<DateTime<Utc>>,
    /// Delivery, if acked (only listed with `include=all`).
    #[serde(default)]
    pub acked_at: Option<DateTime<Utc>>,
    /// Deadline.
    pub expires_at: DateTime<Utc>,
    /// `staged`, `fetched`, and with `include=all` also `acked` or `expired`.
    pub state: UploadState,
}

impl PendingUploadView {
    /// Renders a row as of `now`.
    pub(crate) fn new(p: PendingUpload, now: DateTime<Utc>) -> Self {
        let state = if p.acked_at.is_some() {
            UploadState::Acked
        } else if p.expires_at <= now {
            UploadState::Expired
        } else if p.fetched_at.is_some() {
            UploadState::Fetched
        } else {
            UploadState::Staged
        };
        Self {
            file_id: p.file_id,
            filename: p.filename,
            mimetype: p.mimetype,
            size: p.size,
            sha256: p.sha256,
            created_at: p.created_at,
            fetched_at: p.fetched_at,
            acked_at: p.acked_at,
            expires_at: p.expires_at,
            state,
        }
    }
}

/// `{acked: true}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Acked {
    /// Always true.
    pub acked: bool,
}

/// Most rows answered with `include=all`.
pub(super) const MAX_ALL_UPLOADS: i64 = 1000;

/// Query of the list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct ListParams {
    /// `all`: also the acked and expired files the sweep has not removed
    /// yet (the canvas uses it to show where every file stands).
    pub include: Option<String>,
}

/// Unacked, unexpired files of the workspace, oldest first.
#[utoipa::path(get, path = "/workspaces/{id}/pending-uploads", tag = "uploads",
    params(("id" = String, Path, description = "workspace id"), ListParams),
    responses((status = 200, body = [PendingUploadView]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn list_pending_uploads(
    State(state): State<AppState>,
    SelfOrOperator(WorkspacePath(id), _): SelfOrOperator,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<PendingUploadView>>> {
    let now = domain::now();
    let rows = match params.include.as_deref() {
        None => state.store.list_pending_uploads(id, now).await?,
        Some("all") => state.store.list_all_uploads(id, MAX_ALL_UPLOADS).await?,
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "`include` may only be \"all\", not {other:?}"
            )))
        }
    };
    Ok(Json(
        rows.into_iter()
            .map(|r| PendingUploadView::new(r, now))
            .collect(),
    ))
}

fn content_disposition(filename: &str) -> HeaderValue {
    // Sanitized names are plain ASCII without quotes, but encode the
    // RFC 8187 form as well for clients that prefer it.
    let encoded = utf8_percent_encode(filename, NON_ALPHANUMERIC);
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{filename}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or(HeaderValue::from_static("attachment"))
}

enum Wanted {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

fn wanted_range(headers: &HeaderMap, size: u64) -> Wanted {
    let Some(raw) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Wanted::Whole;
    };
    // A Range we cannot parse is ignored (RFC 9110 §14.2); several ranges
    // are answered with the whole file, which is allowed and simpler.
    let Ok(parsed) = http_range_header::parse_range_header(raw) else {
        return Wanted::Whole;
    };
    match parsed.validate(size) {
        Ok(ranges) if ranges.len() == 1 => Wanted::Part(*ranges[0].start(), *ranges[0].end()),
        Ok(_) => Wanted::Whole,
        Err(_) => Wanted::Unsatisfiable,
    }
}

/// Streams a staged file's bytes and stamps `fetched_at`.
#[utoipa::path(get, path = "/workspaces/{id}/pending-uploads/{fid}/content", tag = "uploads",
    params(("id" = String, Path, description = "workspace id"), ("fid" = String, Path, description = "file id"),
           ("Range" = Option<String>, Header, description = "one byte range, e.g. bytes=1000-")),
    responses((status = 200, description = "the bytes", content_type = "application/octet-stream"),
        (status = 206, description = "the requested range"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 416, body = ErrorBody)))]
pub(super) async fn get_pending_upload_content(
    State(state): State<AppState>,
    SelfOrOperator(FilePath(id, file_id), principal): SelfOrOperator<FilePath>,
    headers: HeaderMap,
) -> Result<Response> {
    // Only the workspace's own download counts as "fetched": an operator
    // looking at a staged file must not hide a workspace that never came.
    let by_workspace = matches!(principal, Principal::Workspace(_));
    let now = domain::now();
    let row = if by_workspace {
        state
            .store
            .mark_pending_upload_fetched(id, file_id, now)
            .await?
    } else {
        state.store.get_pending_upload(id, file_id, now).await?
    }
    .ok_or_else(Error::file_not_found)?;
    let size = row.size as u64;
    let (status, range) = match wanted_range(&headers, size) {
        Wanted::Whole => (StatusCode::OK, None),
        Wanted::Part(start, end) => (StatusCode::PARTIAL_CONTENT, Some((start, end))),
        Wanted::Unsatisfiable => return Ok(range_not_satisfiable(size)),
    };
    let stream = state
        .blobs
        .get(&row.blob_key, range.map(|(s, e)| s..e + 1))
        .await?;
    note_read(&state, &row, by_workspace, range).await;
    Ok(content_response(
        &row,
        Body::from_stream(stream),
        status,
        range,
    ))
}

/// The 416 of a range outside the file, with the size it must fit.
fn range_not_satisfiable(size: u64) -> Response {
    let mut response = (
        StatusCode::RANGE_NOT_SATISFIABLE,
        axum::Json(ErrorBody::new(format!(
            "the range is outside the file's {size} bytes"
        ))),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
        response.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    response
}

/// Counts, logs and (for the workspace's own download) announces a read.
async fn note_read(
    state: &AppState,
    row: &crate::store::PendingUpload,
    by_workspace: bool,
    range: Option<(u64, u64)>,
) {
    let (id, file_id) = (row.workspace_id, row.file_id);
    if by_workspace {
        state.metrics.fetched.inc();
        tracing::info!(
            workspace_id = %id, file_id = %file_id, size = row.size, filename = %row.filename,
            range = ?range, "upload fetched"
        );
        let event = Event::Upload {
            workspace_id: id,
            file_id,
            state: UploadState::Fetched,
        };
        state.bus.publish(event).await;
    } else {
        tracing::info!(
            workspace_id = %id, file_id = %file_id, size = row.size, filename = %row.filename,
            range = ?range, "upload read by the operator"
        );
    }
}

/// The download response: the bytes with their type, length, range,
/// name, checksum and no-cache headers.
fn content_response(
    row: &crate::store::PendingUpload,
    body: Body,
    status: StatusCode,
    range: Option<(u64, u64)>,
) -> Response {
    let size = row.size as u64;
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&row.mimetype)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    let length = range.map_or(size, |(s, e)| e - s + 1);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Some((s, e)) = range {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {s}-{e}/{size}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    h.insert(
        header::CONTENT_DISPOSITION,
        content_disposition(&row.filename),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", row.sha256)) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    response
}

/// Acknowledges delivery; the content is gone afterwards. Idempotent.
#[utoipa::path(post, path = "/workspaces/{id}/pending-uploads/{fid}/ack", tag = "uploads",
    params(("id" = String, Path, description = "workspace id"), ("fid" = String, Path, description = "file id")),
    responses((status = 200, body = Acked), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn ack_pending_upload(
    State(state): State<AppState>,
    WorkspaceItself(FilePath(id, file_id), _): WorkspaceItself<FilePath>,
) -> Result<Json<Acked>> {
    let now = domain::now();
    match state.store.ack_pending_upload(id, file_id, now).await? {
        AckOutcome::Acked(row) => {
            let delivery = (now - row.created_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
            state.metrics.acked.inc();
            state.metrics.delivery_seconds.observe(delivery.max(0.0));
            tracing::info!(
                workspace_id = %id, file_id = %file_id, size = row.size, filename = %row.filename,
                delivery_seconds = delivery, "upload acked"
            );
            state
                .bus
                .publish(Event::Upload {
                    workspace_id: id,
                    file_id,
                    state: UploadState::Acked,
                })
                .await;
            Ok(Json(Acked { acked: true }))
        }
        AckOutcome::AlreadyAcked => Ok(Json(Acked { acked: true })),
        AckOutcome::NotFound => Err(Error::file_not_found()),
    }
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_pending_uploads))
        .routes(routes!(get_pending_upload_content))
        .routes(routes!(ack_pending_upload))
}

/// Property tests of the Range parser as the download route uses it.
#[cfg(test)]
mod props {
    use axum::http::{header, HeaderMap, HeaderValue};
    use proptest::prelude::*;

    use super::{wanted_range, Wanted};

    fn with_range(raw: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(raw) {
            headers.insert(header::RANGE, value);
        }
        headers
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any header: a part is always inside the file.
        #[test]
        fn any_range_header_yields_a_slice_inside_the_file(raw in "[ -~]{0,40}", size in 0u64..1_000_000) {
            if let Wanted::Part(start, end) = wanted_range(&with_range(&raw), size) {
                prop_assert!(start <= end && end < size, "{raw:?} size {size}: {start}-{end}");
            }
        }

        /// Generated ranges: exactly the bytes asked for.
        #[test]
        fn a_valid_range_is_answered_exactly(size in 1u64..1_000_000, a in any::<u64>(), b in any::<u64>()) {
            let (start, end) = {
                let (x, y) = (a % size, b % size);
                (x.min(y), x.max(y))
            };
            let closed = wanted_range(&with_range(&format!("bytes={start}-{end}")), size);
            prop_assert!(matches!(closed, Wanted::Part(s, e) if s == start && e == end));
            let open = wanted_range(&with_range(&format!("bytes={start}-")), size);
            prop_assert!(matches!(open, Wanted::Part(s, e) if s == start && e == size - 1));
            let suffix = wanted_range(&with_range(&format!("bytes=-{}", end - start + 1)), size);
            prop_assert!(matches!(suffix, Wanted::Part(s, e) if s == size - (end - start + 1) && e == size - 1));
        }

        /// Past the end: 416, never a slice.
        #[test]
        fn a_range_past_the_end_is_unsatisfiable(size in 0u64..1_000_000, extra in 0u64..1000) {
            let wanted = wanted_range(&with_range(&format!("bytes={}-", size + extra)), size);
            prop_assert!(matches!(wanted, Wanted::Unsatisfiable));
        }
    }
}
