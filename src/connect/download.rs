//! Delivery of one staged file to the agent's disk: stream the content to
//! `<dir>/.molecule/chat-uploads/.<file_id>.part`, resume with
//! `Range: bytes=N-` when the connection drops, verify size and SHA-256,
//! fsync, rename atomically to `<file_id>-<filename>`, and only then ack.
//! A file already on disk with the right hash is acked again without a
//! download (the previous run died between rename and ack).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::backoff::Backoff;
use super::Ctx;
use crate::client::{ClientError, Download};
use crate::domain::inbox::ChatUpload;
use crate::domain::{FileId, Filename};

/// How the delivery of one file ended.
#[derive(Debug, Clone)]
pub(super) enum Outcome {
    /// On disk at this path and acknowledged.
    Delivered(PathBuf),
    /// On disk, but the ack did not reach the server (stopping, or the
    /// server no longer knows the file); the next run acks it.
    OnDisk(PathBuf),
    /// The server has no such file (expired, acked elsewhere): given up.
    Missing(String),
    /// It could not be written here (disk full, a failed write or
    /// rename), or the bytes never matched the announced hash: worth
    /// another try later.
    Failed(String),
    /// Stopped before the file was complete; the next run resumes it.
    Abandoned,
}

/// Checksum mismatches tolerated before a file is given up.
const MAX_MISMATCHES: u32 = 3;
/// Other non-transient errors (400, 416…) tolerated before giving up.
const MAX_ERRORS: u32 = 5;

/// The local name of a file: `<file_id>-<sanitized filename>`.
pub(super) fn local_name(file_id: &FileId, filename: &str) -> String {
    format!("{file_id}-{}", Filename::sanitize(filename).as_str())
}

/// Delivers one file; never panics, never returns before the file is
/// settled one way or another.
pub(super) async fn deliver(ctx: &Ctx, row: &ChatUpload) -> Outcome {
    let file_id = row.file_id;
    let final_path = ctx.uploads_dir.join(local_name(&file_id, &row.filename));
    let part_path = ctx.uploads_dir.join(format!(".{file_id}.part"));
    let fid = file_id;

    if on_disk_already(fid, row, &final_path).await {
        return ack(ctx, fid, final_path).await;
    }
    if let Err(outcome) = download_verified(ctx, fid, row, &part_path).await {
        return outcome;
    }
    if let Err(e) = commit(&part_path, &final_path).await {
        return Outcome::Failed(format!("{e:#}"));
    }
    tracing::info!(file_id = %fid, size = row.size, path = %final_path.display(), "file written");
    ack(ctx, fid, final_path).await
}

/// Whether an earlier run already wrote this file and died before the ack;
/// a file in its place that does not match is removed.
async fn on_disk_already(fid: FileId, row: &ChatUpload, final_path: &Path) -> bool {
    if tokio::fs::metadata(final_path).await.is_err() {
        return false;
    }
    match hash_file(final_path, None).await {
        Ok((len, hash)) if len == row.size && hash == row.sha256 => {
            tracing::info!(file_id = %fid, path = %final_path.display(), "file already on disk; acking again");
            true
        }
        _ => {
            tracing::warn!(file_id = %fid, path = %final_path.display(), "a file on disk does not match; downloading again");
            let _ = tokio::fs::remove_file(final_path).await;
            false
        }
    }
}

/// Brings `part` to the complete file with the announced size and hash,
/// resuming after dropped connections and downloading again after bad
/// bytes; the outcome when it cannot.
async fn download_verified(
    ctx: &Ctx,
    fid: FileId,
    row: &ChatUpload,
    part: &Path,
) -> Result<(), Outcome> {
    let mut backoff = Backoff::new();
    let mut mismatches = 0;
    let mut errors = 0;
    loop {
        if ctx.stop.is_cancelled() && !tokio::fs::try_exists(part).await.unwrap_or(false) {
            // Not started yet: leave it to the next run.
            return Err(Outcome::Abandoned);
        }
        match fetch_into(ctx, fid, row, part).await {
            Ok(()) => {}
            Err(Fetch::Missing(m)) => {
                let _ = tokio::fs::remove_file(part).await;
                return Err(Outcome::Missing(m));
            }
            Err(Fetch::Fatal) => return Err(Outcome::Abandoned),
            Err(Fetch::Transient(e)) => {
                tracing::warn!(file_id = %fid, error = %e, "download interrupted; will resume");
                if !backoff.wait(&ctx.stop).await {
                    return Err(Outcome::Abandoned);
                }
                continue;
            }
            Err(Fetch::Other(e)) => {
                errors += 1;
                tracing::warn!(file_id = %fid, error = %e, attempt = errors, "download failed");
                let _ = tokio::fs::remove_file(part).await;
                if errors >= MAX_ERRORS {
                    return Err(Outcome::Failed(e));
                }
                if !backoff.wait(&ctx.stop).await {
                    return Err(Outcome::Abandoned);
                }
                continue;
            }
        }
        // Complete: verify the whole file.
        let (len, hash) = hash_file(part, None)
            .await
            .map_err(|e| Outcome::Failed(format!("{e:#}")))?;
        if len == row.size && hash == row.sha256 {
            return Ok(());
        }
        mismatches += 1;
        tracing::warn!(file_id = %fid, expected_size = row.size, size = len, expected_sha256 = %row.sha256,
            sha256 = %hash, "downloaded bytes do not match; discarding them");
        let _ = tokio::fs::remove_file(part).await;
        if mismatches >= MAX_MISMATCHES {
            return Err(Outcome::Failed(format!(
                "the bytes never matched sha256 {} after {mismatches} downloads",
                row.sha256
            )));
        }
    }
}

enum Fetch {
    Missing(String),
    Fatal,
    Transient(String),
    Other(String),
}

/// One download attempt: brings `part` up to the full size, resuming from
/// its current length.
async fn fetch_into(ctx: &Ctx, fid: FileId, row: &ChatUpload, part: &Path) -> Result<(), Fetch> {
    let have = match tokio::fs::metadata(part).await {
        Ok(m) if m.len() <= row.size => m.len(),
        _ => 0,
    };
    if have == row.size && have > 0 {
        return Ok(());
    }
    let download = request_from(ctx, fid, have).await?;
    let resumed = download.start > 0;
    if resumed {
        tracing::info!(file_id = %fid, from = have, "resuming download");
    }
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(!resumed)
        .append(resumed)
        .open(part)
        .await
        .map_err(|e| io_error("open", part, e))?;
    let (received, failure) = copy_body(ctx, download, file, part).await?;
    let total = if resumed { have + received } else { received };
    match failure {
        Some(e) => Err(Fetch::Transient(format!(
            "connection dropped after {total} of {} bytes: {e}",
            row.size
        ))),
        None if total < row.size => Err(Fetch::Transient(format!(
            "connection closed after {total} of {} bytes",
            row.size
        ))),
        None => Ok(()),
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Fetch {
    Fetch::Other(format!("failed to {what} {}: {e}", path.display()))
}

/// Asks for the file from byte `have` on; each refusal as the retry loop
/// reacts to it.
async fn request_from(ctx: &Ctx, fid: FileId, have: u64) -> Result<Download, Fetch> {
    let download = match ctx.client.download(ctx.workspace, fid, Some(have)).await {
        Ok(d) => d,
        Err(ClientError::NotFound(m)) => return Err(Fetch::Missing(m)),
        Err(ClientError::Unauthorized(_)) => {
            ctx.unauthorized();
            return Err(Fetch::Fatal);
        }
        Err(ClientError::Status { status, .. })
            if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE =>
        {
            // Our partial file is longer than the server's: start over.
            return Err(Fetch::Other(
                "the server refused to resume (416); starting over".into(),
            ));
        }
        Err(e) if e.is_transient() => return Err(Fetch::Transient(e.to_string())),
        Err(e) => return Err(Fetch::Other(e.to_string())),
    };
    if download.start != have && download.start != 0 {
        return Err(Fetch::Other(format!(
            "asked for bytes from {have}, got bytes from {}",
            download.start
        )));
    }
    Ok(download)
}

/// Appends the body to `file` at the `--limit-rate` pace; the bytes
/// written, and why the body ended early if it did. What arrived is kept,
/// for the resume.
async fn copy_body(
    ctx: &Ctx,
    download: Download,
    mut file: tokio::fs::File,
    part: &Path,
) -> Result<(u64, Option<String>), Fetch> {
    let mut received = 0u64;
    let started = Instant::now();
    let mut stream = std::pin::pin!(download.into_stream());
    let mut failure = None;
    while let Some(chunk) = stream.next().await {
        let bytes = match chunk {
            Ok(bytes) => bytes,
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        };
        file.write_all(&bytes)
            .await
            .map_err(|e| io_error("write", part, e))?;
        received += bytes.len() as u64;
        if let Some(rate) = ctx.limit_rate {
            let due = Duration::from_secs_f64(received as f64 / rate as f64);
            if let Some(ahead) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(ahead).await;
            }
        }
    }
    file.flush().await.map_err(|e| io_error("write", part, e))?;
    Ok((received, failure))
}

/// fsyncs the complete file, renames it into place, fsyncs the folder.
async fn commit(part: &Path, final_path: &Path) -> anyhow::Result<()> {
    let (part, final_path) = (part.to_owned(), final_path.to_owned());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        std::fs::File::open(&part)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("failed to fsync {}", part.display()))?;
        std::fs::rename(&part, &final_path).with_context(|| {
            format!(
                "failed to rename {} to {}",
                part.display(),
                final_path.display()
            )
        })?;
        if let Some(dir) = final_path.parent() {
            // Makes the rename itself durable; not possible everywhere.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })
    .await
    .context("BUG: the commit task panicked")?
}

/// Acks with retries while the server is unreachable.
async fn ack(ctx: &Ctx, fid: FileId, path: PathBuf) -> Outcome {
    let mut backoff = Backoff::new();
    loop {
        match ctx.client.ack(ctx.workspace, fid).await {
            Ok(()) => {
                tracing::info!(file_id = %fid, "file acked");
                return Outcome::Delivered(path);
            }
            Err(ClientError::NotFound(m)) => {
                tracing::warn!(file_id = %fid, error = %m, "the server no longer knows this file (expired or acked elsewhere); keeping it");
                return Outcome::OnDisk(path);
            }
            Err(ClientError::Unauthorized(_)) => {
                ctx.unauthorized();
                return Outcome::OnDisk(path);
            }
            Err(e) => {
                tracing::warn!(file_id = %fid, error = %e, "ack failed; retrying");
                if !backoff.wait(&ctx.stop).await {
                    return Outcome::OnDisk(path);
                }
            }
        }
    }
}

/// Length and hex SHA-256 of a file (of its first `limit` bytes if given).
pub(super) async fn hash_file(path: &Path, limit: Option<u64>) -> anyhow::Result<(u64, String)> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, String)> {
        use std::io::Read;
        let file = std::fs::File::open(&path)
            .with_context(|| format!("failed to open {}", path.display()))?;
        let mut reader =
            std::io::BufReader::with_capacity(256 * 1024, file.take(limit.unwrap_or(u64::MAX)));
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut len = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .with_context(|| format!("failed to read {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        Ok((len, hex::encode(hasher.finalize())))
    })
    .await
    .context("BUG: the hashing task panicked")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_names_cannot_leave_the_folder() {
        let id: FileId = "0b8f5a8e-3f36-4f55-9d0c-2a4cf9a3c9d1".parse().unwrap();
        for raw in [
            "../../etc/passwd",
            "..",
            "/abs/x",
            "a\\..\\b",
            "",
            "\u{0}evil",
        ] {
            let name = local_name(&id, raw);
            assert!(
                !name.contains('/') && !name.contains('\\') && name.starts_with(&id.to_string()),
                "{raw:?} → {name}"
            );
            assert!(name.len() > 37, "{raw:?} → {name}");
        }
        assert_eq!(local_name(&id, "../../etc/passwd"), format!("{id}-passwd"));
    }
}
