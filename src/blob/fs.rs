//! Blobs as files under a root directory: the embedded default.
//!
//! A blob is written to `<root>/.tmp/<random>`, fsynced, and renamed into
//! place, then the directory is fsynced: a crash leaves either the whole
//! file or a leftover in `.tmp/` (which the reaper removes), never a torn
//! blob under its real key.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::{BlobEntry, BlobError, BlobStore, ByteStream};

const TMP_DIR: &str = ".tmp";
/// Largest write handed to the blocking pool at once.
pub(super) const WRITE_BUF: usize = 128 * 1024;

/// Blobs on the local filesystem.
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    /// Uses (creating if needed) `root`.
    pub async fn open(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = root.as_ref().to_path_buf();
        crate::private_fs::create_dir_all_async(&root.join(TMP_DIR)).await?;
        crate::private_fs::restrict(&root, crate::private_fs::DIR_MODE)?;
        Ok(Self { root })
    }

    fn path_of(&self, key: &str) -> io::Result<PathBuf> {
        // Keys are made by the server, but refuse anything that could climb
        // out of the root all the same.
        if key.is_empty()
            || key.starts_with('/')
            || key
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad blob key {key:?}"),
            ));
        }
        Ok(self.root.join(key))
    }
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir).await?.sync_all().await
}

#[async_trait]
impl BlobStore for FsBlobStore {
    fn kind(&self) -> &'static str {
        "file"
    }

    async fn put(&self, key: &str, mut body: ByteStream<'_>) -> Result<u64, BlobError> {
        let dest = self.path_of(key)?;
        let tmp = self
            .root
            .join(TMP_DIR)
            .join(uuid::Uuid::new_v4().to_string());
        let mut file = crate::private_fs::new_file_options().open(&tmp).await?;
        // tokio copies each write into a buffer of up to 2 MiB before
        // handing it to a blocking thread; that buffer is per upload, so
        // keep it small (the writes are no slower).
        file.set_max_buf_size(WRITE_BUF);
        let written: Result<u64, BlobError> = async {
            let mut n = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(BlobError::Body)?;
                file.write_all(&chunk).await?;
                n += chunk.len() as u64;
            }
            file.sync_all().await?;
            Ok(n)
        }
        .await;
        drop(file);
        let n = match written {
            Ok(n) => n,
            Err(e) => {
                let _ = fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        let parent = dest.parent().expect("BUG: a blob path has a parent");
        let placed: io::Result<()> = async {
            crate::private_fs::create_dir_all_async(parent).await?;
            fs::rename(&tmp, &dest).await?;
            sync_dir(parent).await
        }
        .await;
        if let Err(e) = placed {
            let _ = fs::remove_file(&tmp).await;
            return Err(e.into());
        }
        Ok(n)
    }

    async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream<'static>, BlobError> {
        let path = self.path_of(key)?;
        let mut file = match fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(BlobError::NotFound),
            Err(e) => return Err(e.into()),
        };
        match range {
            None => Ok(ReaderStream::with_capacity(file, 64 * 1024).boxed()),
            Some(r) => {
                file.seek(io::SeekFrom::Start(r.start)).await?;
                let limited = file.take(r.end.saturating_sub(r.start));
                Ok(ReaderStream::with_capacity(limited, 64 * 1024).boxed())
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match fs::remove_file(self.path_of(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&self) -> Result<Vec<BlobEntry>, BlobError> {
        let mut out = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let mut entries = match fs::read_dir(&dir).await {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            while let Some(entry) = entries.next_entry().await? {
                // A blob deleted while we walk is simply not listed.
                let meta = match entry.metadata().await {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                };
                if meta.is_dir() {
                    dirs.push(entry.path());
                    continue;
                }
                let rel = entry
                    .path()
                    .strip_prefix(&self.root)
                    .expect("BUG: walked outside the blob root")
                    .to_string_lossy()
                    .replace('\\', "/");
                let modified: DateTime<Utc> = meta.modified()?.into();
                out.push(BlobEntry { key: rel, modified });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn ping(&self) -> Result<(), BlobError> {
        fs::metadata(self.root.join(TMP_DIR)).await?;
        Ok(())
    }
}
