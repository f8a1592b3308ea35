//! The one error type of the HTTP layer, its status mapping, and the JSON
//! extractor whose rejections use the same `{"error": …}` shape.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::blob::BlobError;
use crate::store::StoreError;

/// Result of a handler.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way a request can fail. Each variant carries the sentence the
/// client sees; server-side causes are logged, never shown.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no token, or not one that may act here.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// 403: a workspace token on an operator route.
    #[error("this route is for the operator; a workspace token may not use it")]
    Forbidden,
    /// 403 with its own sentence: a rule, not the operator-only route.
    #[error("{0}")]
    Denied(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409: an optimistic-concurrency check failed.
    #[error("{message}")]
    Conflict {
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
    /// 502: the workspace did not answer properly.
    #[error("{0}")]
    BadGateway(String),
    /// 503: the database or blob store is unavailable.
    #[error("storage is unavailable; try again shortly")]
    Unavailable(#[source] anyhow::Error),
    /// 500: a bug or an unexpected failure.
    #[error("internal server error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    /// The status this error answers with.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::Forbidden => StatusCode::FORBIDDEN,
            Error::Denied(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::Gone { .. } => StatusCode::GONE,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The 404 of an unknown workspace.
    pub fn workspace_not_found() -> Self {
        Error::NotFound("workspace not found".into())
    }

    /// The single 404 for every file a caller may not have: absent, acked,
    /// expired or another workspace's all look the same.
    pub fn file_not_found() -> Self {
        Error::NotFound(
            "file not found: it does not exist, was already delivered, or expired".into(),
        )
    }
}

/// The JSON body of every error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A sentence saying what went wrong.
    pub error: String,
    /// On 410 only: the `since_id` a poller must restart from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_since_id: Option<i64>,
    /// On 409 only: the current version a retry must name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
}

impl ErrorBody {
    /// A body with just the sentence.
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            restart_since_id: None,
            version: None,
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
            Error::Conflict { version, .. } => Some(*version),
            _ => None,
        };
        let body = ErrorBody {
            error: self.to_string(),
            restart_since_id,
            version,
        };
        (self.status_code(), axum::Json(body)).into_response()
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        // Unreachable, disk full, I/O failure: the write was not committed,
        // and a retry may succeed — a 503, never a 500 or a success.
        if e.is_unavailable() {
            Error::Unavailable(anyhow::Error::new(e))
        } else {
            Error::Internal(anyhow::Error::new(e))
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

/// `axum::Json`, with rejections answered as `{"error": …}` 400s.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(Error::UnsupportedMediaType(
                "expected a JSON body with `Content-Type: application/json`".into(),
            )),
            Err(rejection) => Err(Error::BadRequest(format!(
                "invalid JSON body: {}",
                rejection.body_text()
            ))),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}
