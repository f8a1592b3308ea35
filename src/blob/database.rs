//! Blobs inline in the database (`--blob-store database`): the simplest
//! deployment, one service to back up.
//!
//! A blob is a run of rows of at most [`BLOB_CHUNK_SIZE`] bytes, written as
//! the upload streams in and read back one chunk at a time, so neither
//! direction holds a whole file in memory.

use std::io;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{BlobEntry, BlobError, BlobStore, ByteStream};
use crate::store::{Store, BLOB_CHUNK_SIZE};

/// Blobs kept in the metadata database.
pub struct DatabaseBlobStore {
    store: Arc<dyn Store>,
}

impl DatabaseBlobStore {
    /// Keeps blobs in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    async fn write_all(&self, key: &str, body: &mut ByteStream<'_>) -> Result<u64, BlobError> {
        let now = crate::domain::now();
        let mut buf = BytesMut::with_capacity(BLOB_CHUNK_SIZE);
        let mut seq = 0i32;
        let mut total = 0u64;
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(BlobError::Body)?;
            total += chunk.len() as u64;
            while !chunk.is_empty() {
                let take = (BLOB_CHUNK_SIZE - buf.len()).min(chunk.len());
                buf.extend_from_slice(&chunk.split_to(take));
                if buf.len() == BLOB_CHUNK_SIZE {
                    self.store.put_blob_chunk(key, seq, &buf, now).await?;
                    buf.clear();
                    seq += 1;
                }
            }
        }
        if !buf.is_empty() || seq == 0 {
            self.store.put_blob_chunk(key, seq, &buf, now).await?;
        }
        Ok(total)
    }
}

#[async_trait]
impl BlobStore for DatabaseBlobStore {
    fn kind(&self) -> &'static str {
        "database"
    }

    async fn put(&self, key: &str, mut body: ByteStream<'_>) -> Result<u64, BlobError> {
        match self.write_all(key, &mut body).await {
            Ok(n) => Ok(n),
            Err(e) => {
                if let Err(cleanup) = self.store.delete_blob(key).await {
                    tracing::warn!(error = %cleanup, key, "failed to delete a partly written blob");
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
        let chunk = BLOB_CHUNK_SIZE as u64;
        let (start, end) = match range {
            Some(r) => (r.start, Some(r.end)),
            None => (0, None),
        };
        let first_seq = (start / chunk) as i32;
        // Fail with NotFound up front rather than mid-stream.
        let Some(first) = self.store.get_blob_chunk(key, first_seq).await? else {
            return Err(BlobError::NotFound);
        };
        let store = self.store.clone();
        let key = key.to_owned();
        struct Cursor {
            seq: i32,
            pending: Option<Vec<u8>>,
            pos: u64,
        }
        let init = Cursor {
            seq: first_seq,
            pending: Some(first),
            pos: first_seq as u64 * chunk,
        };
        let stream = futures::stream::try_unfold(init, move |mut cur| {
            let store = store.clone();
            let key = key.clone();
            async move {
                loop {
                    if end.is_some_and(|e| cur.pos >= e) {
                        return Ok(None);
                    }
                    let data = match cur.pending.take() {
                        Some(d) => d,
                        None => match store
                            .get_blob_chunk(&key, cur.seq)
                            .await
                            .map_err(io::Error::other)?
                        {
                            Some(d) => d,
                            None => return Ok(None),
                        },
                    };
                    let chunk_start = cur.pos;
                    let chunk_end = chunk_start + data.len() as u64;
                    cur.seq += 1;
                    cur.pos = chunk_end;
                    let from = start.saturating_sub(chunk_start).min(data.len() as u64) as usize;
                    let to =
                        end.map_or(data.len() as u64, |e| e.min(chunk_end) - chunk_start) as usize;
                    if from < to {
                        return Ok(Some((Bytes::from(data).slice(from..to), cur)));
                    }
                    if data.is_empty() {
                        return Ok(None);
                    }
                }
            }
        });
        Ok(stream.boxed())
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        self.store.delete_blob(key).await?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<BlobEntry>, BlobError> {
        Ok(self
            .store
            .list_blobs()
            .await?
            .into_iter()
            .map(|(key, modified)| BlobEntry { key, modified })
            .collect())
    }

    async fn ping(&self) -> Result<(), BlobError> {
        self.store.ping().await?;
        Ok(())
    }
}
