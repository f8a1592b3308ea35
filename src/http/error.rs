//! The one error type of the HTTP layer, its status mapping, and the JSON
//! extractor whose rejections use the same `{"error": …}` shape.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::blob::BlobError;
use crate::store::StoreError;

/// Result of a handler.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way a request can fail. Each variant carries the sentence the
/// client sees; server-side causes are logged, never shown.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no token, or not one that may act here.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// 403: a workspace token on an operator route.
    #[error("this route is for the operator; a workspace token may not use it")]
    Forbidden,
    /// 403 with its own sentence: a rule (the communication rule, a memory
    /// scope), not the operator-only route.
    #[error("{0}")]
    Denied(String),
    /// 402: a budget that applies to the workspace is spent.
    #[error("{0}")]
    PaymentRequired(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409 with the resource's current status named beside the sentence.
    #[error("{message}")]
    StatusConflict {
        /// The sentence.
        message: String,
        /// A delegation's status when a report would move it backwards.
        current_status: Option<String>,
    },
    /// 409: the request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// 409: an optimistic-concurrency check failed.
    #[error("{message}")]
    VersionConflict {
        /// The sentence.
        message: String,
        /// The current version a retry must name.
        version: i64,
    },
    /// 410: the poll cursor points at rows the retention sweep removed.
    #[error("{message}")]
    Gone {
        /// The sentence.
        message: String,
        /// Where the poller must restart from.
        restart_since_id: i64,
    },
    /// 413: a file or the request is over its limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed but not acceptable.
    #[error("{0}")]
    Unprocessable(String),
    /// 429: over a rate limit or a cap; `retry_after_s`, when known, is
    /// sent as `Retry-After`.
    #[error("{message}")]
    TooMany {
        /// The sentence.
        message: String,
        /// Seconds until a retry may succeed, when that is known.
        retry_after_s: Option<u64>,
    },
    /// 502: the workspace did not answer properly.
    #[error("{0}")]
    BadGateway(String),
    /// 503 with its own sentence: what the request needs is not there
    /// (a push workspace without a URL to read from).
    #[error("{0}")]
    NotAvailable(String),
    /// 503: the database or blob store is unavailable.
    #[error("storage is unavailable; try again shortly")]
    Unavailable(#[source] anyhow::Error),
    /// 500: a bug or an unexpected failure.
    #[error("internal server error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    /// The status this error answers with.
    pub(crate) fn status_code(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::Forbidden | Error::Denied(_) => StatusCode::FORBIDDEN,
            Error::PaymentRequired(_) => StatusCode::PAYMENT_REQUIRED,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::StatusConflict { .. } | Error::Conflict(_) | Error::VersionConflict { .. } => {
                StatusCode::CONFLICT
            }
            Error::Gone { .. } => StatusCode::GONE,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Error::Unavailable(_) | Error::NotAvailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The 404 of an unknown workspace.
    pub(crate) fn workspace_not_found() -> Self {
        Error::NotFound("workspace not found".into())
    }

    /// The 404 of a delegation the caller may not see (absent, or not one
    /// it may act on: the same answer, so it learns nothing).
    pub(crate) fn delegation_not_found() -> Self {
        Error::NotFound("delegation not found".into())
    }

    /// The single 404 for every file a caller may not have: absent, acked,
    /// expired or another workspace's all look the same.
    pub(crate) fn file_not_found() -> Self {
        Error::NotFound(
            "file not found: it does not exist, was already delivered, or expired".into(),
        )
    }
}

/// The JSON body of every error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// A sentence saying what went wrong.
    pub error: String,
    /// On 410 only: the `since_id` a poller must restart from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_since_id: Option<i64>,
    /// On a key/value write's 409 only: the current version a retry must name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// On a delegation's 409 only: the status it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_status: Option<String>,
}

impl ErrorBody {
    /// A body with just the sentence.
    pub(crate) fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            restart_since_id: None,
            version: None,
            current_status: None,
        }
    }
}

fn cause_chain(err: &anyhow::Error) -> String {
    err.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match &self {
            Error::Unavailable(cause) | Error::Internal(cause) => {
                // Logged once, here, with the whole chain; the client only
                // gets the generic sentence.
                tracing::error!(error.cause_chain = %cause_chain(cause), status = %self.status_code().as_u16(), "request failed");
            }
            _ => {}
        }
        let restart_since_id = match &self {
            Error::Gone {
                restart_since_id, ..
            } => Some(*restart_since_id),
            _ => None,
        };
        let version = match &self {
            Error::VersionConflict { version, .. } => Some(*version),
            _ => None,
        };
        let current_status = match &self {
            Error::StatusConflict { current_status, .. } => current_status.clone(),
            _ => None,
        };
        let body = ErrorBody {
            error: self.to_string(),
            restart_since_id,
            version,
            current_status,
        };
        let retry_after = match &self {
            Error::TooMany {
                retry_after_s: Some(s),
                ..
            } => Some(s.to_string()),
            _ => None,
        };
        let mut resp = (self.status_code(), axum::Json(body)).into_response();
        if let Some(secs) = retry_after.and_then(|s| s.parse().ok()) {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs);
        }
        resp
    }
}

/// What an extractor that cannot fail (such as the `()` path of
/// [`super::access::Operator`]) rejects with.
impl From<std::convert::Infallible> for Error {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownParent(parent) => Error::Unprocessable(format!(
                "parent workspace {parent} does not exist (or was removed)"
            )),
            StoreError::Cycle(chain) => Error::Unprocessable(format!(
                "a workspace cannot be its own ancestor: {}",
                chain
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" → ")
            )),
            // Unreachable, disk full, I/O failure: the write was not
            // committed, and a retry may succeed — a 503, never a 500 or a
            // success.
            e if e.is_unavailable() => Error::Unavailable(anyhow::Error::new(e)),
            e => Error::Internal(anyhow::Error::new(e)),
        }
    }
}

impl From<BlobError> for Error {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound => {
                Error::Internal(anyhow::Error::new(e).context("a staged file's blob is missing"))
            }
            other => Error::Unavailable(anyhow::Error::new(other)),
        }
    }
}

/// Largest JSON request body. Bodies are buffered whole before parsing,
/// so this bounds the memory one request can take.
pub(super) const JSON_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// `axum::Json`, with rejections answered as `{"error": …}`: 415 without a
/// JSON content type, 413 over [`JSON_BODY_LIMIT`], 400 for a body that
/// does not parse or carries a NUL character anywhere.
///
/// NUL is refused here, once, for every JSON body: PostgreSQL cannot store
/// it in text, and refusing it before any handler runs means nothing is
/// forwarded or written for a request that cannot be answered with success.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !has_json_content_type(req.headers()) {
            return Err(Error::UnsupportedMediaType(
                "expected a JSON body with `Content-Type: application/json`".into(),
            ));
        }
        let bytes = match Bytes::from_request(req, state).await {
            Ok(bytes) => bytes,
            Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
                return Err(Error::PayloadTooLarge(format!(
                    "the JSON body is larger than the {} limit",
                    bytesize::ByteSize(JSON_BODY_LIMIT as u64).display().iec()
                )))
            }
            Err(rejection) => {
                return Err(Error::BadRequest(format!(
                    "could not read the request body: {}",
                    rejection.body_text()
                )))
            }
        };
        if let Some(field) = nul_field(&bytes) {
            return Err(Error::BadRequest(format!(
                "`{field}` must not contain NUL characters (\\u0000)"
            )));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(Error::BadRequest(format!(
                "invalid JSON body: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// `application/json` or any `application/*+json`, parameters ignored.
fn has_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// Where a JSON body carries a NUL character, as a path (`params.message.
/// parts[0].text`), or `None`. A raw NUL byte is not valid JSON, so only
/// the `\u0000` escape needs looking for; the full walk runs only when
/// that escape appears at all.
pub(crate) fn nul_field(body: &[u8]) -> Option<String> {
    let escaped = body.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000"));
    if !escaped {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    let mut path = String::new();
    find_nul(&value, &mut path).then(|| {
        if path.is_empty() {
            "body".to_owned()
        } else {
            path
        }
    })
}

fn find_nul(value: &Value, path: &mut String) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let found = find_nul(item, path);
            if !found {
                path.truncate(len);
            }
            found
        }),
        Value::Object(map) => map.iter().any(|(key, item)| {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            if key.contains('\0') {
                path.push_str(&key.replace('\0', "\\u0000"));
                return true;
            }
            path.push_str(key);
            let found = find_nul(item, path);
            if !found {
                path.truncate(len);
            }
            found
        }),
        _ => false,
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::nul_field;

    #[test]
    fn nul_is_found_with_its_path() {
        assert_eq!(
            nul_field(br#"{"name":"a\u0000b"}"#).as_deref(),
            Some("name")
        );
        assert_eq!(
            nul_field(br#"{"params":{"message":{"parts":[{"kind":"text","text":"x\u0000"}]}}}"#)
                .as_deref(),
            Some("params.message.parts[0].text")
        );
        assert_eq!(
            nul_field(br#"{"a":{"k\u0000":1}}"#).as_deref(),
            Some("a.k\\u0000")
        );
        assert_eq!(nul_field(br#""\u0000""#).as_deref(), Some("body"));
        // An escaped backslash followed by `u0000` is text, not NUL.
        assert_eq!(nul_field(br#"{"name":"a\\u0000b"}"#), None);
        assert_eq!(nul_field(br#"{"name":"plain"}"#), None);
    }
}
