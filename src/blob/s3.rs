//! Blobs in S3-compatible object storage (AWS S3, MinIO, R2, Garage…),
//! through the `object_store` crate.
//!
//! Small files are one PUT. A file that outgrows one part is sent as a
//! multipart upload with a bounded number of parts in flight, so memory
//! stays at a few parts whatever the file size; a failed upload is aborted
//! so no partial object survives.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload, WriteMultipart};

use super::{BlobEntry, BlobError, BlobStore, ByteStream};

/// Size of one multipart part; files up to this size are a single PUT.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded concurrently.
const PARTS_IN_FLIGHT: usize = 2;

/// Blobs in an S3 bucket, under an optional prefix.
pub struct S3BlobStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl S3BlobStore {
    /// Configures a bucket from the standard `AWS_*` environment variables
    /// (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`…).
    pub fn from_env(bucket: &str, prefix: &str) -> Result<Self, BlobError> {
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_virtual_hosted_style_request(false)
            .build()?;
        Ok(Self::new(Arc::new(store), prefix))
    }

    /// Wraps any object store (used by tests and embedders).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        Self {
            store,
            prefix: prefix.trim_matches('/').to_owned(),
        }
    }

    fn path_of(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    fn key_of(&self, path: &Path) -> String {
        let full = path.as_ref();
        if self.prefix.is_empty() {
            full.to_owned()
        } else {
            full.strip_prefix(&format!("{}/", self.prefix))
                .unwrap_or(full)
                .to_owned()
        }
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn put(&self, key: &str, mut body: ByteStream<'_>) -> Result<u64, BlobError> {
        let path = self.path_of(key);
        // Gather the first part; most chat files end before it is full.
        let mut first = BytesMut::new();
        let mut total = 0u64;
        let mut ended = true;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(BlobError::Body)?;
            total += chunk.len() as u64;
            first.extend_from_slice(&chunk);
            if first.len() >= PART_SIZE {
                ended = false;
                break;
            }
        }
        if ended {
            self.store
                .put(&path, PutPayload::from(first.freeze()))
                .await?;
            return Ok(total);
        }
        let upload = self.store.put_multipart(&path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        writer.write(&first);
        drop(first);
        let streamed: Result<(), BlobError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(BlobError::Body)?;
                total += chunk.len() as u64;
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                writer.write(&chunk);
            }
            Ok(())
        }
        .await;
        match streamed {
            Ok(()) => {
                writer.finish().await?;
                Ok(total)
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(error = %abort, key, "failed to abort a multipart upload");
                }
                Err(e)
            }
        }
    }

    async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream<'static>, BlobError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = match self.store.get_opts(&self.path_of(key), options).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Err(BlobError::NotFound),
            Err(e) => return Err(e.into()),
        };
        Ok(result.into_stream().map_err(std::io::Error::other).boxed())
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self.store.delete(&self.path_of(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_many(&self, keys: &[String]) -> usize {
        // Bulk DeleteObjects, up to 1,000 keys a request.
        let paths = futures::stream::iter(keys.iter().map(|k| Ok(self.path_of(k)))).boxed();
        self.store
            .delete_stream(paths)
            .filter(|r| {
                let failed = match r {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => false,
                    Err(e) => {
                        tracing::warn!(error = %e, "failed to delete a blob");
                        true
                    }
                };
                futures::future::ready(failed)
            })
            .count()
            .await
    }

    async fn list(&self) -> Result<Vec<BlobEntry>, BlobError> {
        let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
        let mut out: Vec<BlobEntry> = self
            .store
            .list(prefix.as_ref())
            .map_ok(|meta| BlobEntry {
                key: self.key_of(&meta.location),
                modified: meta.last_modified,
            })
            .try_collect()
            .await?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn ping(&self) -> Result<(), BlobError> {
        let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
        self.store.list_with_delimiter(prefix.as_ref()).await?;
        Ok(())
    }
}
