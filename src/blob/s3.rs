//! Blobs in S3-compatible object storage (AWS S3, MinIO, R2, Garage…),
//! through the `object_store` crate.
//!
//! An upload goes to the bucket while it arrives: bytes are gathered into
//! parts of [`PART_SIZE`]; a file that ends within its first part is one
//! PUT, a larger one a multipart upload whose parts are sent as they fill
//! (at most [`PARTS_IN_FLIGHT`] per upload at once) while the next one is
//! being received. Spooling the whole file to disk first, then sending
//! it, made receiving and sending take turns: half the throughput.
//!
//! Memory is bounded server-wide, not per upload (object storage needs
//! whole parts of at least 5 MiB; without a bound 32 concurrent uploads
//! held hundreds of MiB), by two budgets. Parts are filled in memory out
//! of the fill budget ([`FILL_BUDGET`]), taken 64 KiB at a time and never
//! waited for: when it is spent, the upload spills to a local spool file
//! instead. A complete part moves to the send budget ([`SEND_BUDGET`])
//! while it is sent (a spooled part is read back into it), and that is
//! the only place anything waits for memory. Parts being sent always
//! finish, so the wait always ends, and a slow client can only hold fill
//! budget, which nobody waits for (others spill and go on). A failed
//! upload is aborted (after its parts in flight settle), so neither an
//! object nor an open multipart upload survives.

use std::collections::VecDeque;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, MultipartUpload, ObjectStore, PutPayload};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::{BlobEntry, BlobError, BlobStore, ByteStream};

const MIB: usize = 1024 * 1024;
/// Size of one multipart part (the S3 minimum); files up to this size are
/// a single PUT.
pub const PART_SIZE: usize = 5 * MIB;
/// The unit memory is taken and held in: one permit, one buffer.
const CHUNK: usize = 64 * 1024;
/// Bytes, server-wide, that parts being filled from the network may hold
/// in memory: two parts (two uploads at once receive into memory; with
/// three or four, 32 concurrent uploads peaked just over 64 MiB of RSS,
/// the allocator's arenas holding about twice the budget).
pub const FILL_BUDGET: usize = 2 * PART_SIZE;
/// Bytes, server-wide, that parts being sent may hold: two parts (two
/// parts in flight keep a local S3 server busy; more only held memory).
const SEND_BUDGET: usize = 2 * PART_SIZE;
/// Parts of one upload being sent at once.
const PARTS_IN_FLIGHT: usize = 1;

/// Keys in one DeleteObjects request: the most S3 takes.
const KEYS_PER_DELETE: usize = 1_000;

/// DeleteObjects requests one [`BlobStore::delete_many`] call keeps in
/// flight: the sweep runs a few calls at once, and the store also serves
/// uploads meanwhile.
const DELETE_REQUESTS_IN_FLIGHT: usize = 4;

/// Blobs in an S3 bucket, under an optional prefix.
pub struct S3BlobStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    spool: PathBuf,
    /// One permit per [`CHUNK`] of [`FILL_BUDGET`].
    fill: Arc<Semaphore>,
    /// One permit per [`CHUNK`] of [`SEND_BUDGET`].
    send: Arc<Semaphore>,
}

impl S3BlobStore {
    /// Configures a bucket from the standard `AWS_*` environment variables
    /// (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`…); uploads that do not fit
    /// the memory budget are spooled in `spool`.
    ///
    /// Payloads are sent unsigned (`UNSIGNED-PAYLOAD`) unless
    /// `AWS_UNSIGNED_PAYLOAD=false`: signing hashes every byte once more
    /// with SHA-256 on top of the hash the server records for the file,
    /// and the S3 server hashes it again to check; the request itself stays
    /// signed, and HTTPS protects the bytes.
    pub fn from_env(bucket: &str, prefix: &str, spool: &FsPath) -> Result<Self, BlobError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_virtual_hosted_style_request(false);
        if std::env::var_os("AWS_UNSIGNED_PAYLOAD").is_none() {
            builder = builder.with_unsigned_payload(true);
        }
        Self::new(Arc::new(builder.build()?), prefix, spool)
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
            fill: Arc::new(Semaphore::new(FILL_BUDGET / CHUNK)),
            send: Arc::new(Semaphore::new(SEND_BUDGET / CHUNK)),
        })
    }

    /// One DeleteObjects request; returns how many of `paths` it did not
    /// delete. A key counts as deleted only when the answer says so, so a
    /// request that failed as a whole fails all its keys.
    async fn delete_request(&self, paths: Vec<Path>) -> usize {
        let asked = paths.len();
        let paths = futures::stream::iter(paths.into_iter().map(Ok)).boxed();
        let deleted = self
            .store
            .delete_stream(paths)
            .filter(|r| {
                let deleted = match r {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "failed to delete a blob");
                        false
                    }
                };
                futures::future::ready(deleted)
            })
            .count()
            .await;
        asked.saturating_sub(deleted)
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

    /// Reads `len` bytes at `offset` of a spool file, holding send budget
    /// for them until the returned permit is dropped. A plain blocking read
    /// into the part's own buffers: tokio's file type would keep a second,
    /// idle buffer per upload.
    async fn read_spooled(
        &self,
        spooled: &FsPath,
        offset: u64,
        len: usize,
    ) -> Result<(PutPayload, OwnedSemaphorePermit), BlobError> {
        let permits = len.div_ceil(CHUNK).max(1) as u32;
        let permit = self
            .send
            .clone()
            .acquire_many_owned(permits)
            .await
            .expect("BUG: the send budget is never closed");
        let path = spooled.to_path_buf();
        // Small uniform chunks rather than one 5 MiB block: the allocator
        // reuses them from part to part instead of growing its heap (a
        // 5 MiB block per part left RSS far above use). Allocated here, on
        // a runtime thread, not in the blocking thread: each blocking
        // thread has an allocator arena of its own that keeps what is
        // freed into it, and dozens of them held tens of MiB.
        let mut chunks: Vec<Vec<u8>> = (0..len.div_ceil(CHUNK))
            .map(|i| vec![0u8; (len - i * CHUNK).min(CHUNK)])
            .collect();
        let chunks = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<Vec<u8>>> {
            use std::io::{Read, Seek, SeekFrom};
            let mut file = std::fs::File::open(path)?;
            file.seek(SeekFrom::Start(offset))?;
            for chunk in &mut chunks {
                file.read_exact(chunk)?;
            }
            Ok(chunks)
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok((
            PutPayload::from_iter(chunks.into_iter().map(Bytes::from)),
            permit,
        ))
    }
}

/// A spool file that deletes itself.
struct Spooled(PathBuf);

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Where the part being filled lives.
enum Filling {
    /// In memory: full chunks, the chunk being filled, and the fill budget
    /// they hold.
    Memory {
        chunks: Vec<Bytes>,
        current: BytesMut,
        permits: Option<OwnedSemaphorePermit>,
    },
    /// In the spool file, from `start`.
    Spooled { start: u64 },
}

/// The spool file of an upload that spilled, and how much is in it.
struct Spool {
    file: tokio::fs::File,
    written: u64,
    _path: Spooled,
}

/// A multipart upload and its parts in flight. Dropped while still open
/// (the upload's future was dropped), it aborts itself in the background.
struct OpenMultipart {
    upload: Option<Box<dyn MultipartUpload>>,
    in_flight: VecDeque<JoinHandle<object_store::Result<()>>>,
    path: Path,
}

impl OpenMultipart {
    /// Waits for the oldest part in flight.
    async fn settle_one(&mut self) -> Result<(), BlobError> {
        if let Some(part) = self.in_flight.pop_front() {
            part.await.map_err(std::io::Error::other)??;
        }
        Ok(())
    }

    /// Waits for every part, then completes the upload.
    async fn complete(&mut self) -> Result<(), BlobError> {
        while !self.in_flight.is_empty() {
            self.settle_one().await?;
        }
        if let Some(mut upload) = self.upload.take() {
            if let Err(e) = upload.complete().await {
                self.upload = Some(upload);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Lets the parts in flight settle (S3 may keep a part that lands
    /// after an abort), then aborts the upload.
    async fn abort(&mut self) {
        for part in std::mem::take(&mut self.in_flight) {
            let _ = part.await;
        }
        if let Some(mut upload) = self.upload.take() {
            if let Err(e) = upload.abort().await {
                tracing::warn!(error = %e, path = %self.path, "failed to abort a multipart upload");
            }
        }
    }
}

impl Drop for OpenMultipart {
    fn drop(&mut self) {
        if self.upload.is_none() {
            return;
        }
        let mut open = OpenMultipart {
            upload: self.upload.take(),
            in_flight: std::mem::take(&mut self.in_flight),
            path: self.path.clone(),
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { open.abort().await });
        }
    }
}

/// One upload on its way to the bucket.
struct Writer<'a> {
    s3: &'a S3BlobStore,
    path: Path,
    filling: Filling,
    /// Bytes in the part being filled.
    part_len: usize,
    spool: Option<Spool>,
    multipart: Option<OpenMultipart>,
}

impl<'a> Writer<'a> {
    fn new(s3: &'a S3BlobStore, path: Path) -> Self {
        Self {
            s3,
            path,
            filling: Filling::Memory {
                chunks: Vec::new(),
                current: BytesMut::new(),
                permits: None,
            },
            part_len: 0,
            spool: None,
            multipart: None,
        }
    }

    /// Takes the next piece of the body.
    async fn write(&mut self, mut data: Bytes) -> Result<(), BlobError> {
        while !data.is_empty() {
            if self.part_len == PART_SIZE {
                // Sent only now that more follows: a file of exactly one
                // part stays a single PUT.
                self.send_part().await?;
            }
            let piece = data.split_to((PART_SIZE - self.part_len).min(data.len()));
            self.part_len += piece.len();
            self.append(&piece).await?;
        }
        Ok(())
    }

    /// Adds bytes to the part being filled, in memory while the fill
    /// budget lasts, else in the spool file.
    async fn append(&mut self, mut piece: &[u8]) -> Result<(), BlobError> {
        while !piece.is_empty() {
            let Filling::Memory {
                chunks,
                current,
                permits,
            } = &mut self.filling
            else {
                return self.spool_write(piece).await;
            };
            if current.len() == current.capacity() {
                match self.s3.fill.clone().try_acquire_owned() {
                    Ok(permit) => {
                        match permits {
                            Some(held) => held.merge(permit),
                            None => *permits = Some(permit),
                        }
                        let full = std::mem::replace(current, BytesMut::with_capacity(CHUNK));
                        if !full.is_empty() {
                            chunks.push(full.freeze());
                        }
                    }
                    Err(_) => {
                        self.spill().await?;
                        continue;
                    }
                }
            }
            let take = (current.capacity() - current.len()).min(piece.len());
            current.extend_from_slice(&piece[..take]);
            piece = &piece[take..];
        }
        Ok(())
    }

    /// The fill budget is spent: moves the part being filled to the spool
    /// file (and with it every later part of this upload), giving its
    /// memory back.
    async fn spill(&mut self) -> Result<(), BlobError> {
        if self.spool.is_none() {
            let path = Spooled(self.s3.spool.join(uuid::Uuid::new_v4().to_string()));
            let mut file = crate::private_fs::new_file_options().open(&path.0).await?;
            // tokio's per-file write buffer is per upload: keep it small.
            file.set_max_buf_size(super::fs::WRITE_BUF);
            self.spool = Some(Spool {
                file,
                written: 0,
                _path: path,
            });
        }
        let start = self.spool.as_ref().map_or(0, |s| s.written);
        let Filling::Memory {
            chunks, current, ..
        } = std::mem::replace(&mut self.filling, Filling::Spooled { start })
        else {
            return Ok(());
        };
        for chunk in chunks {
            self.spool_write(&chunk).await?;
        }
        self.spool_write(&current).await
    }

    async fn spool_write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        let spool = self
            .spool
            .as_mut()
            .expect("BUG: spooled parts have a spool file");
        spool.file.write_all(bytes).await?;
        spool.written += bytes.len() as u64;
        Ok(())
    }

    /// The part filled so far, ready to send, and the memory it holds;
    /// the next part starts where this one left off.
    async fn take_part(&mut self) -> Result<(PutPayload, Option<OwnedSemaphorePermit>), BlobError> {
        let len = std::mem::take(&mut self.part_len);
        match &mut self.filling {
            Filling::Memory {
                chunks,
                current,
                permits,
            } => {
                let mut parts = std::mem::take(chunks);
                if !current.is_empty() {
                    parts.push(std::mem::take(current).freeze());
                }
                Ok((PutPayload::from_iter(parts), permits.take()))
            }
            Filling::Spooled { start } => {
                let spool = self
                    .spool
                    .as_mut()
                    .expect("BUG: spooled parts have a spool file");
                // Nothing durable is needed: the bucket holds the copy
                // that counts, whole, before `put` returns.
                spool.file.flush().await?;
                let from = *start;
                *start = spool.written;
                let (payload, permit) = self.s3.read_spooled(&spool._path.0, from, len).await?;
                Ok((payload, Some(permit)))
            }
        }
    }

    /// Sends the part filled so far as the next part of the multipart
    /// upload (opening it if this is the first).
    async fn send_part(&mut self) -> Result<(), BlobError> {
        if self.multipart.is_none() {
            let upload = self.s3.store.put_multipart(&self.path).await?;
            self.multipart = Some(OpenMultipart {
                upload: Some(upload),
                in_flight: VecDeque::new(),
                path: self.path.clone(),
            });
        }
        {
            let open = self.multipart.as_mut().expect("BUG: opened above");
            while open.in_flight.len() >= PARTS_IN_FLIGHT {
                open.settle_one().await?;
            }
        }
        let in_memory = matches!(self.filling, Filling::Memory { .. });
        let (payload, mut permit) = self.take_part().await?;
        if in_memory {
            // From now on the part's memory counts against the send budget
            // (waiting for it here holds no send budget, so it cannot wait
            // on itself), and its fill budget goes to the next part.
            let permits = (payload.content_length().div_ceil(CHUNK)).max(1) as u32;
            let sending = self
                .s3
                .send
                .clone()
                .acquire_many_owned(permits)
                .await
                .expect("BUG: the send budget is never closed");
            permit = Some(sending);
        }
        let open = self.multipart.as_mut().expect("BUG: opened above");
        let part = open
            .upload
            .as_mut()
            .expect("BUG: an open multipart upload")
            .put_part(payload);
        open.in_flight.push_back(tokio::spawn(async move {
            let sent = part.await;
            drop(permit);
            sent
        }));
        Ok(())
    }

    /// The body ended: one PUT if it fit in one part, else the last part
    /// and the completion.
    async fn finish(&mut self) -> Result<(), BlobError> {
        if self.multipart.is_none() {
            let (payload, _permit) = self.take_part().await?;
            self.s3.store.put(&self.path, payload).await?;
            return Ok(());
        }
        if self.part_len > 0 {
            self.send_part().await?;
        }
        self.multipart
            .as_mut()
            .expect("BUG: checked above")
            .complete()
            .await
    }

    /// Leaves nothing behind in the bucket.
    async fn abort(&mut self) {
        if let Some(open) = self.multipart.as_mut() {
            open.abort().await;
        }
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn put(&self, key: &str, mut body: ByteStream<'_>) -> Result<u64, BlobError> {
        let mut writer = Writer::new(self, self.path_of(key));
        let written: Result<u64, BlobError> = async {
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(BlobError::Body)?;
                size += chunk.len() as u64;
                writer.write(chunk).await?;
            }
            writer.finish().await?;
            Ok(size)
        }
        .await;
        if written.is_err() {
            writer.abort().await;
        }
        written
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

    /// One DeleteObjects request.
    fn keys_per_delete(&self) -> usize {
        KEYS_PER_DELETE
    }

    async fn delete_many(&self, keys: &[String]) -> usize {
        // Bulk DeleteObjects, up to 1,000 keys a request, a few requests
        // at once.
        let requests: Vec<Vec<Path>> = keys
            .chunks(KEYS_PER_DELETE)
            .map(|chunk| chunk.iter().map(|k| self.path_of(k)).collect())
            .collect();
        futures::stream::iter(requests)
            .map(|paths: Vec<Path>| self.delete_request(paths))
            .buffer_unordered(DELETE_REQUESTS_IN_FLIGHT)
            .fold(0, |failed, n| futures::future::ready(failed + n))
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
