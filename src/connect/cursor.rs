//! The persisted poll cursor of `molecule connect`.
//!
//! Rows are handled concurrently (downloads) and out of order, but the
//! cursor written to `<dir>/.molecule/cursor` only moves past a row once
//! that row and every earlier one are handled, so a restart never skips a
//! row. Rows handled ahead of the cursor are listed next to it (`done`), so
//! a restart does not repeat them either.
//!
//! [`Progress`] is the bookkeeping, in memory and without I/O; [`Cursor`]
//! persists it. The file is replaced atomically (write, fsync, rename) on a
//! blocking thread, never on the async runtime's threads, and never while
//! a lock other async tasks wait on is held: [`Cursor::finish`] returns
//! once a copy that includes its row is durable, and writers queued behind
//! one another share one write when a newer copy already covers them.

use std::collections::{BTreeSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// On-disk form.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    since_id: i64,
    #[serde(default)]
    done: Vec<i64>,
}

/// Which rows are handled, and the cursor that follows from it.
#[derive(Debug)]
pub(super) struct Progress {
    /// Every row up to and including this id is handled.
    cursor: i64,
    /// Rows after the cursor, in id order, with whether each is handled.
    rows: VecDeque<(i64, bool)>,
    /// Rows after the cursor handled by an earlier run, not seen yet in this one.
    done_earlier: BTreeSet<i64>,
    /// Bumped by every change, so a writer knows whether a copy is current.
    version: u64,
}

impl Progress {
    fn from_saved(saved: Saved) -> Self {
        let cursor = saved.since_id.max(0);
        Self {
            cursor,
            rows: VecDeque::new(),
            done_earlier: saved.done.into_iter().filter(|id| *id > cursor).collect(),
            version: 0,
        }
    }

    /// Every row up to this id is handled: poll with `since_id` = this.
    pub(super) fn cursor(&self) -> i64 {
        self.cursor
    }

    /// Records that row `id` was seen; `true` when it is to be handled,
    /// `false` when an earlier run already handled it.
    pub(super) fn begin(&mut self, id: i64) -> bool {
        if id <= self.cursor || self.rows.iter().any(|(r, _)| *r == id) {
            return false;
        }
        let earlier = self.done_earlier.remove(&id);
        self.rows.push_back((id, earlier));
        self.advance();
        !earlier
    }

    /// Records that row `id` is handled.
    pub(super) fn finish(&mut self, id: i64) {
        if let Some(row) = self.rows.iter_mut().find(|(r, _)| *r == id) {
            row.1 = true;
        }
        self.advance();
    }

    /// The server dropped rows before `to` (410): start over from there.
    pub(super) fn reset(&mut self, to: i64) {
        self.cursor = to.max(0);
        self.rows.retain(|(id, _)| *id > to);
        self.done_earlier.retain(|id| *id > to);
        self.advance();
    }

    fn advance(&mut self) {
        while let Some((id, true)) = self.rows.front().copied() {
            self.cursor = id;
            self.rows.pop_front();
        }
        let cursor = self.cursor;
        self.done_earlier.retain(|id| *id > cursor);
        self.version += 1;
    }

    /// The file's content as of now, with the version it reflects.
    fn snapshot(&self) -> (u64, String) {
        let mut done: Vec<i64> = self
            .rows
            .iter()
            .filter(|(_, d)| *d)
            .map(|(id, _)| *id)
            .collect();
        done.extend(self.done_earlier.iter().copied());
        done.sort_unstable();
        let body = serde_json::to_string(&Saved {
            since_id: self.cursor,
            done,
        })
        .expect("BUG: a cursor always serializes");
        (self.version, body)
    }
}

/// The progress of this run, shared by its tasks, and its file.
#[derive(Debug)]
pub(super) struct Cursor {
    path: PathBuf,
    /// Held only for in-memory bookkeeping, never across I/O or an `.await`.
    progress: Mutex<Progress>,
    /// One writer at a time; the version last made durable.
    written: tokio::sync::Mutex<u64>,
}

impl Cursor {
    /// Loads the cursor file at `path` (a missing file means "from the
    /// start"). A bare integer is accepted too, for hand edits.
    pub(super) async fn load(path: PathBuf) -> anyhow::Result<Self> {
        let read = path.clone();
        let saved = tokio::task::spawn_blocking(move || read_saved(&read))
            .await
            .context("BUG: the cursor-reading task panicked")??;
        Ok(Self {
            path,
            progress: Mutex::new(Progress::from_saved(saved)),
            written: tokio::sync::Mutex::new(0),
        })
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every row up to this id is handled.
    pub(super) fn position(&self) -> i64 {
        self.progress().cursor()
    }

    /// Records that row `id` was seen; `false` when an earlier run handled
    /// it. Nothing to persist: the file already says so.
    pub(super) fn begin(&self, id: i64) -> bool {
        self.progress().begin(id)
    }

    /// Records that row `id` is handled; returns once that is durable.
    pub(super) async fn finish(&self, id: i64) -> anyhow::Result<()> {
        let version = {
            let mut progress = self.progress();
            progress.finish(id);
            progress.version
        };
        self.persist(version).await
    }

    /// Starts over from `to` (410); returns once that is durable.
    pub(super) async fn reset(&self, to: i64) -> anyhow::Result<()> {
        let version = {
            let mut progress = self.progress();
            progress.reset(to);
            progress.version
        };
        self.persist(version).await
    }

    /// Writes the current state, whatever was written before.
    pub(super) async fn flush(&self) -> anyhow::Result<()> {
        self.persist(u64::MAX).await
    }

    /// Makes a copy at least as new as `version` durable, unless one is.
    async fn persist(&self, version: u64) -> anyhow::Result<()> {
        let mut written = self.written.lock().await;
        if *written >= version {
            return Ok(());
        }
        let (current, body) = self.progress().snapshot();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, body.as_bytes()))
            .await
            .context("BUG: the cursor-writing task panicked")??;
        *written = current;
        Ok(())
    }
}

fn read_saved(path: &Path) -> anyhow::Result<Saved> {
    match std::fs::read_to_string(path) {
        Ok(raw) => match raw.trim().parse::<i64>() {
            Ok(since_id) => Ok(Saved {
                since_id,
                done: Vec::new(),
            }),
            Err(_) => serde_json::from_str(&raw).with_context(|| {
                format!(
                    "{} is not a cursor file; delete it to start over",
                    path.display()
                )
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::default()),
        Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or
/// the new content, never a mix. Blocking.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)
        .with_context(|| format!("failed to create {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("failed to write {}", tmp.display()))?;
    drop(file);
    std::fs::rename(&tmp, path).with_context(|| format!("failed to replace {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn on_disk(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[tokio::test]
    async fn cursor_waits_for_every_earlier_row_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        let c = Cursor::load(path.clone()).await.unwrap();
        assert_eq!(c.position(), 0);
        for id in [3, 5, 9] {
            assert!(c.begin(id));
        }
        c.finish(5).await.unwrap();
        assert_eq!(c.position(), 0, "row 3 is still in flight");
        assert_eq!(on_disk(&path), r#"{"since_id":0,"done":[5]}"#);
        c.finish(3).await.unwrap();
        assert_eq!(c.position(), 5);
        assert_eq!(on_disk(&path), r#"{"since_id":5,"done":[]}"#);

        // Restart with 9 unhandled: it comes again.
        let c = Cursor::load(path.clone()).await.unwrap();
        assert_eq!(c.position(), 5);
        assert!(!c.begin(5));
        assert!(c.begin(9));
        assert!(c.begin(12));
        c.finish(12).await.unwrap();
        assert_eq!(c.position(), 5);

        // Restart: 9 is handled again, 12 is not repeated.
        let c = Cursor::load(path.clone()).await.unwrap();
        assert!(c.begin(9));
        assert!(!c.begin(12), "12 was handled by the earlier run");
        c.finish(9).await.unwrap();
        assert_eq!(c.position(), 12);
        assert_eq!(on_disk(&path), r#"{"since_id":12,"done":[]}"#);
    }

    #[tokio::test]
    async fn reset_jumps_forward_and_a_bare_integer_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        std::fs::write(&path, "7\n").unwrap();
        let c = Cursor::load(path.clone()).await.unwrap();
        assert_eq!(c.position(), 7);
        assert!(c.begin(8));
        c.reset(100).await.unwrap();
        assert_eq!(c.position(), 100);
        assert!(!c.begin(50));
        assert_eq!(on_disk(&path), r#"{"since_id":100,"done":[]}"#);
    }

    /// Many tasks finishing at once on a runtime with one thread: each
    /// `finish` returns only once its row is on disk, and the file ends
    /// with every row (writes are never reordered into an older copy).
    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_finishes_are_each_durable_and_end_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        let c = Arc::new(Cursor::load(path.clone()).await.unwrap());
        for id in 1..=50 {
            assert!(c.begin(id));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for id in (1..=50).rev() {
            let (c, path) = (c.clone(), path.clone());
            tasks.spawn(async move {
                c.finish(id).await.unwrap();
                let saved: Saved = serde_json::from_str(&on_disk(&path)).unwrap();
                assert!(
                    saved.since_id >= id || saved.done.contains(&id),
                    "row {id} returned before it was durable: {saved:?}"
                );
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        assert_eq!(c.position(), 50);
        assert_eq!(on_disk(&path), r#"{"since_id":50,"done":[]}"#);
    }
}
