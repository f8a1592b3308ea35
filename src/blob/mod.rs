//! The bytes seam: where the content of staged files lives.
//!
//! One [`BlobStore`] trait with three implementations: the local filesystem
//! (the default), S3-compatible object storage through the `object_store`
//! crate, and chunks inline in the database. Every implementation streams
//! in both directions, so memory does not grow with file size, and passes
//! the contract suite in `tests/api/blob_contract.rs`.

mod database;
mod fs;
mod s3;

use std::io;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::store::{Store, StoreError};

pub use database::DatabaseBlobStore;
pub use fs::FsBlobStore;
pub use s3::{S3BlobStore, FILL_BUDGET as S3_FILL_BUDGET, PART_SIZE as S3_PART_SIZE};

/// Deletions a batch runs concurrently.
pub const DELETES_IN_FLIGHT: usize = 16;

/// A stream of bytes in or out of a blob store.
pub type ByteStream<'a> = BoxStream<'a, io::Result<Bytes>>;

/// What can go wrong in a blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No blob under that key.
    #[error("blob not found")]
    NotFound,
    /// The body being written failed (the client went away, a limit was
    /// hit); nothing was stored.
    #[error("the body being stored failed")]
    Body(#[source] io::Error),
    /// The local filesystem failed.
    #[error("blob filesystem error")]
    Io(#[from] io::Error),
    /// The object store failed.
    #[error("object store error")]
    ObjectStore(#[from] object_store::Error),
    /// The database (for blobs kept inline) failed.
    #[error("blob database error")]
    Store(#[from] StoreError),
    /// The blob-store URL is not understood.
    #[error("unsupported blob store `{0}`: use file://PATH, s3://BUCKET[/PREFIX] or database")]
    UnsupportedUrl(String),
}

/// One stored blob, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    /// Its key.
    pub key: String,
    /// When it was last written.
    pub modified: DateTime<Utc>,
}

/// Storage for file bytes, addressed by key (`<workspace_id>/<file_id>`).
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// `file`, `s3` or `database`.
    fn kind(&self) -> &'static str;
    /// Streams `body` into a new blob. On any error (of the body or of the
    /// store) nothing is left under `key`. Returns the number of bytes.
    async fn put(&self, key: &str, body: ByteStream<'_>) -> Result<u64, BlobError>;
    /// Streams a blob, or the byte range `range` of it.
    async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream<'static>, BlobError>;
    /// Deletes a blob; deleting an absent blob succeeds.
    async fn delete(&self, key: &str) -> Result<(), BlobError>;
    /// Keys one [`BlobStore::delete_many`] call should carry to be one
    /// request to the store (the sweep paces its deletes by such calls).
    fn keys_per_delete(&self) -> usize {
        DELETES_IN_FLIGHT * 8
    }
    /// Deletes many blobs (the sweep's batches), several at a time, and
    /// returns how many could not be deleted (each is logged).
    async fn delete_many(&self, keys: &[String]) -> usize {
        futures::stream::iter(keys.iter().cloned())
            .map(|key: String| async move {
                let result = self.delete(&key).await;
                if let Err(e) = &result {
                    tracing::warn!(key = %key, error = %e, "failed to delete a blob");
                }
                result
            })
            .buffer_unordered(DELETES_IN_FLIGHT)
            .filter(|r| futures::future::ready(r.is_err()))
            .count()
            .await
    }
    /// Every blob, including leftovers of interrupted writes.
    async fn list(&self) -> Result<Vec<BlobEntry>, BlobError>;
    /// Answers when the store does.
    async fn ping(&self) -> Result<(), BlobError>;
}

/// The key under which a staged file's bytes live.
pub fn upload_key(
    workspace_id: crate::domain::WorkspaceId,
    file_id: crate::domain::FileId,
) -> String {
    format!("uploads/{workspace_id}/{file_id}")
}

/// Opens the blob store a URL names: `file://PATH`, `s3://BUCKET[/PREFIX]`
/// (credentials and endpoint from the standard `AWS_*` variables) or
/// `database`.
///
/// `spool` is a local folder the S3 store spills uploads to when its
/// memory budget is spent.
pub async fn open(
    url: &str,
    store: Arc<dyn Store>,
    spool: &std::path::Path,
) -> Result<Arc<dyn BlobStore>, BlobError> {
    if let Some(path) = url.strip_prefix("file://") {
        Ok(Arc::new(FsBlobStore::open(path).await?))
    } else if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        Ok(Arc::new(S3BlobStore::from_env(bucket, prefix, spool)?))
    } else if url == "database" {
        Ok(Arc::new(DatabaseBlobStore::new(store)))
    } else {
        Err(BlobError::UnsupportedUrl(url.to_owned()))
    }
}
