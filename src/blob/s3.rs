//! Blobs in S3-compatible object storage (AWS S3, MinIO, R2, Garage…),
//! through the `object_store` crate.
//!
//! An upload is first spooled to a local file as it arrives, then sent to
//! the bucket: one PUT up to [`PART_SIZE`], a multipart upload above it. The
//! bytes held in memory for sending come out of one server-wide budget
//! ([`SEND_BUDGET`]), so memory does not grow with the number of uploads in
//! flight (object storage needs whole parts of at least 5 MiB in memory;
//! without the budget 32 concurrent uploads held hundreds of MiB). Spooling
//! first also means a slow client never holds budget or an open multipart
//! upload. A failed upload is aborted, so no partial object survives.

use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use super::{BlobEntry, BlobError, BlobStore, ByteStream};

const MIB: usize = 1024 * 1024;
/// Size of one multipart part (the S3 minimum); files up to this size are
/// a single PUT.
pub(super) const PART_SIZE: usize = 5 * MIB;
/// Size of the pieces a part is read in.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes, server-wide, that may be held in memory on their way to the
/// bucket: three parts at once.
pub(super) const SEND_BUDGET: usize = 3 * PART_SIZE;

/// Blobs in an S3 bucket, under an optional prefix.
pub struct S3BlobStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    spool: PathBuf,
    /// One permit per MiB of [`SEND_BUDGET`].
    budget: Arc<Semaphore>,
}

impl S3BlobStore {
    /// Configures a bucket from the standard `AWS_*` environment variables
    /// (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`…); uploads are spooled in
    /// `spool` first.
    pub fn from_env(bucket: &str, prefix: &str, spool: &FsPath) -> Result<Self, BlobError> {
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_virtual_hosted_style_request(false)
            .build()?;
        Self::new(Arc::new(store), prefix, spool)
    }

    /// Wraps any object store (used by tests and embedders). Leftovers of
    /// an earlier process in `spool` are removed.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        spool: &FsPath,
    ) -> Result<Self, BlobError> {
        if spool.exists() {
            std::fs::remove_dir_all(spool)?;
        }
        crate::private_fs::create_dir_all(spool)?;
        Ok(Self {
            store,
            prefix: prefix.trim_matches('/').to_owned(),
            spool: spool.to_path_buf(),
            budget: Arc::new(Semaphore::new(SEND_BUDGET / MIB)),
        })
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

    /// Reads `len` bytes at `offset` of the spool file, holding the budget
    /// for them until the returned permit is dropped. A plain blocking read
    /// into the part's own buffer: tokio's file type would keep a second,
    /// idle buffer per upload.
    async fn read_part(
        &self,
        spooled: &FsPath,
        offset: u64,
        len: usize,
    ) -> Result<(PutPayload, tokio::sync::OwnedSemaphorePermit), BlobError> {
        let permits = len.div_ceil(MIB).max(1) as u32;
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(permits)
            .await
            .expect("BUG: the send budget is never closed");
        let path = spooled.to_path_buf();
        let chunks = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<bytes::Bytes>> {
            use std::io::{Read, Seek, SeekFrom};
            let mut file = std::fs::File::open(path)?;
            file.seek(SeekFrom::Start(offset))?;
            // Small uniform chunks rather than one 5 MiB block: the
            // allocator reuses them from part to part instead of growing
            // its heap (a 5 MiB block per part left RSS far above use).
            let mut chunks = Vec::with_capacity(len.div_ceil(READ_CHUNK));
            let mut left = len;
            while left > 0 {
                let mut chunk = vec![0u8; left.min(READ_CHUNK)];
                file.read_exact(&mut chunk)?;
                left -= chunk.len();
                chunks.push(bytes::Bytes::from(chunk));
            }
            Ok(chunks)
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok((PutPayload::from_iter(chunks), permit))
    }

    /// Sends a spooled file of `size` bytes to `path`.
    async fn send(&self, path: &Path, spooled: &FsPath, size: u64) -> Result<(), BlobError> {
        if size as usize <= PART_SIZE {
            let (payload, _permit) = self.read_part(spooled, 0, size as usize).await?;
            self.store.put(path, payload).await?;
            return Ok(());
        }
        let mut upload = self.store.put_multipart(path).await?;
        let sent: Result<(), BlobError> = async {
            let mut offset = 0u64;
            while offset < size {
                let len = (size - offset).min(PART_SIZE as u64) as usize;
                let (payload, _permit) = self.read_part(spooled, offset, len).await?;
                upload.put_part(payload).await?;
                offset += len as u64;
            }
            upload.complete().await?;
            Ok(())
        }
        .await;
        if sent.is_err() {
            if let Err(abort) = upload.abort().await {
                tracing::warn!(error = %abort, path = %path, "failed to abort a multipart upload");
            }
        }
        sent
    }
}

/// A spool file that deletes itself.
struct Spooled(PathBuf);

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn put(&self, key: &str, mut body: ByteStream<'_>) -> Result<u64, BlobError> {
        let spooled = Spooled(self.spool.join(uuid::Uuid::new_v4().to_string()));
        let mut file = crate::private_fs::new_file_options()
            .open(&spooled.0)
            .await?;
        // As in the filesystem store: keep tokio's per-file write buffer
        // small, it is per upload.
        file.set_max_buf_size(super::fs::WRITE_BUF);
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(BlobError::Body)?;
            size += chunk.len() as u64;
            file.write_all(&chunk).await?;
        }
        // Nothing durable is needed here: the object store holds the copy
        // that counts, whole, before `put` returns.
        file.flush().await?;
        drop(file);
        self.send(&self.path_of(key), &spooled.0, size).await?;
        Ok(size)
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
