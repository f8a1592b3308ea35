//! Blobs as files under a root directory: the embedded default.
//!
//! A blob is written straight under its key, its data fsynced, then its
//! folder fsynced, and only then does `put` return; the caller records the
//! key (the upload's row) after that. A crash before then leaves a file
//! that no row names, which the orphan reaper removes: no row ever names a
//! torn blob. (Keys are never reused, so nothing reads a key while it is
//! written.) Writing in place instead of in a temporary folder and renaming
//! saves a rename per blob, and on ext4 the folder fsync then finds the new
//! entry already committed by the data's fsync: server CPU per MiB of
//! 1 MiB uploads 3–16 % lower (BENCHMARKS.md).
//!
//! One blocking task per blob owns the file from its first write to the
//! folder fsync, fed the body's chunks through a short queue: one hand-off
//! per chunk and none back (tokio's file type copied every chunk into a
//! buffer of its own and sent each write, the fsyncs and the folder opening
//! to the blocking pool one by one, waiting each time). Concurrent blobs in
//! one folder share its fsync ([`DirSyncs`]): an fsync that starts after a
//! file is created makes its entry durable, so whoever waits for one while
//! another runs waits for the next and lets it cover everyone who queued
//! meanwhile.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{BlobEntry, BlobError, BlobStore, ByteStream};

/// Largest write buffer of a tokio file (the S3 store's spool files).
pub(super) const WRITE_BUF: usize = 128 * 1024;
/// Chunks queued for a blob's writer. One, measured cheaper than four:
/// server CPU per MiB at 25 MiB files about 14 % lower (BENCHMARKS.md).
/// The likely reason: a chunk is a slice of the parser's buffer, and while
/// a slice is alive that buffer cannot be reused, so later reads land in
/// freshly allocated, cold memory; the writer now hands it back sooner.
/// Memory per upload is one read.
const QUEUED_CHUNKS: usize = 1;

/// Blobs on the local filesystem.
pub struct FsBlobStore {
    root: PathBuf,
    dir_syncs: Arc<DirSyncs>,
}

/// Group commit of folder fsyncs, and the folders known to be durable.
#[derive(Default)]
struct DirSyncs {
    folders: Mutex<HashMap<PathBuf, DirSync>>,
    changed: Condvar,
    /// Folders whose own entry an fsync of their parent has covered (in
    /// this process; the root is made durable at start-up).
    durable: Mutex<HashSet<PathBuf>>,
}

/// The fsync state of one folder. Entries are numbered as they ask for
/// durability; `synced` is the highest number an fsync has covered.
#[derive(Default)]
struct DirSync {
    asked: u64,
    synced: u64,
    running: bool,
    waiting: usize,
}

impl DirSyncs {
    /// Returns once an fsync of `dir` that started after this call (and so
    /// after the caller created its file) has succeeded. Blocking.
    fn sync(&self, dir: &Path) -> io::Result<()> {
        let mut folders = self.folders.lock().unwrap_or_else(|e| e.into_inner());
        let state = folders.entry(dir.to_path_buf()).or_default();
        state.asked += 1;
        state.waiting += 1;
        let mine = state.asked;
        let result = loop {
            let state = folders
                .get_mut(dir)
                .expect("BUG: the entry lives while waited on");
            if state.synced >= mine {
                break Ok(());
            }
            if state.running {
                folders = self
                    .changed
                    .wait(folders)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Lead an fsync covering everyone who asked so far.
            state.running = true;
            let covers = state.asked;
            drop(folders);
            let synced = std::fs::File::open(dir).and_then(|f| f.sync_all());
            folders = self.folders.lock().unwrap_or_else(|e| e.into_inner());
            let state = folders
                .get_mut(dir)
                .expect("BUG: the entry lives while waited on");
            state.running = false;
            if synced.is_ok() {
                state.synced = state.synced.max(covers);
            }
            self.changed.notify_all();
            // On failure the others try again themselves.
            break synced;
        };
        let state = folders
            .get_mut(dir)
            .expect("BUG: the entry lives while waited on");
        state.waiting -= 1;
        if state.waiting == 0 && !state.running {
            folders.remove(dir);
        }
        result
    }

    /// Makes sure `dir` exists and its entry in its parent is durable,
    /// creating it (0700) and any missing folder above it. A folder found
    /// already there but not yet known durable is covered by an fsync of
    /// its parent all the same: whoever created it may still be waiting
    /// for that fsync. Once per folder per process. Blocking.
    fn ensure_folder(&self, dir: &Path) -> io::Result<()> {
        let known = |dir: &Path| {
            let durable = self.durable.lock().unwrap_or_else(|e| e.into_inner());
            durable.contains(dir)
        };
        // Checked on disk too, so that a folder removed behind our back is
        // made again instead of failing every blob until a restart.
        if known(dir) && dir.is_dir() {
            return Ok(());
        }
        let Some(parent) = dir.parent() else {
            return Ok(());
        };
        self.ensure_folder(parent)?;
        match crate::private_fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(e),
        }
        self.sync(parent)?;
        let mut durable = self.durable.lock().unwrap_or_else(|e| e.into_inner());
        durable.insert(dir.to_path_buf());
        Ok(())
    }
}

/// What a blob's writer is sent.
enum Feed {
    Chunk(Bytes),
    /// The body ended: make the blob durable.
    End,
}

impl FsBlobStore {
    /// Uses (creating if needed) `root`.
    pub async fn open(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = root.as_ref().to_path_buf();
        crate::private_fs::create_dir_all_async(&root).await?;
        crate::private_fs::restrict(&root, crate::private_fs::DIR_MODE)?;
        let dir_syncs = DirSyncs::default();
        dir_syncs
            .durable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(root.clone());
        Ok(Self {
            root,
            dir_syncs: Arc::new(dir_syncs),
        })
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

/// Bytes of a blob written between two early writebacks (see
/// [`start_writeback`]).
const WRITEBACK_EVERY: u64 = 2 << 20;

/// Asks the kernel to start writing `range` of `file` to the disk now, not
/// waiting for it: the disk then writes while the rest of the body is still
/// arriving, and the `fdatasync` at the end waits only for the tail instead
/// of the whole file. (On Linux, `POSIX_FADV_DONTNEED` starts the
/// writeback of the range's dirty pages without waiting for it; pages
/// still being written stay cached.) Advice only: durability still comes
/// from the `fdatasync`, so an error here changes nothing and is ignored.
fn start_writeback(file: &std::fs::File, range: Range<u64>) {
    #[cfg(target_os = "linux")]
    {
        let len = std::num::NonZeroU64::new(range.end - range.start);
        let _ = rustix::fs::fadvise(file, range.start, len, rustix::fs::Advice::DontNeed);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, range);
}

/// The blocking side of [`FsBlobStore::put`]: writes what it is fed to
/// `dest`; at the end makes the data and then the folder entry durable. On
/// any failure, or when the feed stops without an end (the body failed),
/// `dest` is removed.
fn write_blob(
    mut feed: tokio::sync::mpsc::Receiver<Feed>,
    dest: &Path,
    dir_syncs: &DirSyncs,
) -> io::Result<bool> {
    let parent = dest.parent().expect("BUG: a blob path has a parent");
    dir_syncs.ensure_folder(parent)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, crate::private_fs::FILE_MODE);
    let mut file = options.open(dest)?;
    let written = (|| -> io::Result<bool> {
        let (mut written, mut handed_to_disk) = (0u64, 0u64);
        loop {
            match feed.blocking_recv() {
                Some(Feed::Chunk(chunk)) => {
                    file.write_all(&chunk)?;
                    written += chunk.len() as u64;
                    if written - handed_to_disk >= WRITEBACK_EVERY {
                        start_writeback(&file, handed_to_disk..written);
                        handed_to_disk = written;
                    }
                }
                Some(Feed::End) => break,
                None => return Ok(false),
            }
        }
        // The data and the size the blob is read back with, then its entry.
        file.sync_data()?;
        dir_syncs.sync(parent)?;
        Ok(true)
    })();
    if !matches!(written, Ok(true)) {
        drop(file);
        let _ = std::fs::remove_file(dest);
    }
    written
}

#[async_trait]
impl BlobStore for FsBlobStore {
    fn kind(&self) -> &'static str {
        "file"
    }

    async fn put(&self, key: &str, mut body: ByteStream<'_>) -> Result<u64, BlobError> {
        let dest = self.path_of(key)?;
        let (feed, fed) = tokio::sync::mpsc::channel(QUEUED_CHUNKS);
        let dir_syncs = self.dir_syncs.clone();
        let writer = tokio::task::spawn_blocking(move || write_blob(fed, &dest, &dir_syncs));
        let mut n = 0u64;
        let mut body_failed = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    n += chunk.len() as u64;
                    if feed.send(Feed::Chunk(chunk)).await.is_err() {
                        // The writer stopped: its error is below.
                        break;
                    }
                }
                Err(e) => {
                    body_failed = Some(e);
                    break;
                }
            }
        }
        if body_failed.is_none() {
            let _ = feed.send(Feed::End).await;
        }
        drop(feed);
        let written = writer.await.map_err(io::Error::other)?;
        match (body_failed, written) {
            (Some(e), _) => Err(BlobError::Body(e)),
            (None, Ok(true)) => Ok(n),
            (None, Ok(false)) => Err(io::Error::other("the blob writer stopped early").into()),
            (None, Err(e)) => Err(e.into()),
        }
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
        fs::metadata(&self.root).await?;
        Ok(())
    }
}
