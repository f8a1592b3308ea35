//! Chat uploads: the streamed multipart upload, the staged files a
//! workspace downloads (resumable) and acks, and the operator's figures.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use reqwest::{header, Method, Response, StatusCode};

use super::{
    Client, ClientError, PendingUploadView, Result, UploadStatsView, UploadedFiles, REQUEST_TIMEOUT,
};
use crate::domain::{FileId, WorkspaceId};

/// A download in progress: the answer's headers, then its body as a stream.
pub(crate) struct Download {
    /// The offset of the first byte of `body` in the file (0 for a 200).
    pub start: u64,
    response: Response,
    base: String,
}

impl Download {
    /// The body, chunk by chunk; a broken connection is a `Transport` error.
    pub(crate) fn into_stream(self) -> impl Stream<Item = Result<Bytes>> {
        let base = self.base;
        self.response
            .bytes_stream()
            .map_err(move |source| ClientError::Transport {
                url: base.clone(),
                source,
            })
    }
}

/// Called while an upload streams: `(index of the file, bytes of it sent so far)`.
pub(crate) type ProgressFn = Arc<dyn Fn(usize, u64) + Send + Sync>;

impl Client {
    /// `GET /workspaces/:id/pending-uploads`.
    pub(crate) async fn list_pending_uploads(
        &self,
        id: WorkspaceId,
    ) -> Result<Vec<PendingUploadView>> {
        self.json(
            self.request(Method::GET, &format!("workspaces/{id}/pending-uploads"))
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `GET /workspaces/:id/pending-uploads/:fid/content`, from byte
    /// `start` on when given (`Range: bytes=start-`). The server may answer
    /// the whole file anyway: check [`Download::start`].
    pub(crate) async fn download(
        &self,
        id: WorkspaceId,
        file_id: FileId,
        start: Option<u64>,
    ) -> Result<Download> {
        let mut req = self.request(
            Method::GET,
            &format!("workspaces/{id}/pending-uploads/{file_id}/content"),
        );
        if let Some(start) = start.filter(|s| *s > 0) {
            req = req.header(header::RANGE, format!("bytes={start}-"));
        }
        let response = self.send(req).await?;
        let start = if response.status() == StatusCode::PARTIAL_CONTENT {
            // `bytes S-E/T`
            let range = response
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range);
            match range {
                Some(s) => s,
                None => {
                    return Err(ClientError::Decode(
                        "a 206 answer without a valid Content-Range".into(),
                    ))
                }
            }
        } else {
            0
        };
        Ok(Download {
            start,
            response,
            base: self.base_str(),
        })
    }

    /// `POST /workspaces/:id/pending-uploads/:fid/ack`.
    pub(crate) async fn ack(&self, id: WorkspaceId, file_id: FileId) -> Result<()> {
        self.send(
            self.request(
                Method::POST,
                &format!("workspaces/{id}/pending-uploads/{file_id}/ack"),
            )
            .timeout(REQUEST_TIMEOUT),
        )
        .await
        .map(drop)
    }

    /// `POST /workspaces/:id/chat/uploads`: streams every file from disk in
    /// one multipart request, calling `progress` as bytes go out.
    pub(crate) async fn upload_files(
        &self,
        id: &str,
        paths: &[PathBuf],
        progress: ProgressFn,
    ) -> Result<UploadedFiles> {
        self.upload_to(&format!("workspaces/{id}/chat/uploads"), paths, progress)
            .await
    }

    /// `POST /workspaces/:id/notify/uploads` with the workspace's token:
    /// files the agent sends the user, named next by a `/notify`.
    pub(crate) async fn upload_files_to_user(
        &self,
        id: WorkspaceId,
        paths: &[PathBuf],
    ) -> Result<UploadedFiles> {
        let quiet: ProgressFn = Arc::new(|_, _| {});
        self.upload_to(&format!("workspaces/{id}/notify/uploads"), paths, quiet)
            .await
    }

    /// Streams every file from disk in one multipart request to `route`.
    async fn upload_to(
        &self,
        route: &str,
        paths: &[PathBuf],
        progress: ProgressFn,
    ) -> Result<UploadedFiles> {
        let mut form = reqwest::multipart::Form::new();
        for (index, path) in paths.iter().enumerate() {
            let io = |source| ClientError::Io {
                path: path.clone(),
                source,
            };
            let file = tokio::fs::File::open(path).await.map_err(io)?;
            let len = file.metadata().await.map_err(io)?.len();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into());
            let progress = progress.clone();
            let mut sent = 0u64;
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024).inspect_ok(
                move |chunk| {
                    sent += chunk.len() as u64;
                    progress(index, sent);
                },
            );
            let part = reqwest::multipart::Part::stream_with_length(
                reqwest::Body::wrap_stream(stream),
                len,
            )
            .file_name(name)
            .mime_str(guess_mimetype(path))
            .map_err(|e| ClientError::Decode(e.to_string()))?;
            form = form.part("files", part);
        }
        // No overall timeout: a large upload on a slow link takes what it
        // takes; a stalled one fails on the read timeout.
        self.json(self.request(Method::POST, route).multipart(form))
            .await
    }

    /// `GET /admin/pending-uploads/stats`.
    pub(crate) async fn stats(&self) -> Result<UploadStatsView> {
        self.json(
            self.request(Method::GET, "admin/pending-uploads/stats")
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }
}

/// The start `S` of a well-formed `bytes S-E/T` (`T` may be `*`).
fn parse_content_range(raw: &str) -> Option<u64> {
    let rest = raw.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let start = start.trim().parse().ok()?;
    if total.trim() != "*" {
        total.trim().parse::<u64>().ok()?;
    }
    Some(start)
}

/// A Content-Type for a file part, from its extension. The server
/// sanitizes whatever it gets; this only spares the agent a useless
/// `application/octet-stream` for common files.
pub(crate) fn guess_mimetype(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "py" => "text/x-python",
        "rs" => "text/x-rust",
        "yaml" | "yml" => "application/yaml",
        "toml" => "application/toml",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_parsed() {
        assert_eq!(parse_content_range("bytes 100-199/200"), Some(100));
        assert_eq!(parse_content_range("bytes 0-0/*"), Some(0));
        assert_eq!(parse_content_range("bytes 0-0/x"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }
}
