//! The persisted poll cursor of `molecule connect`.
//!
//! Rows are handled concurrently (downloads) and out of order, but the
//! cursor written to `<dir>/.molecule/cursor` only moves past a row once
//! that row and every earlier one are handled, so a restart never skips a
//! row. Rows handled ahead of the cursor are listed next to it (`done`), so
//! a restart does not repeat them either. The file is replaced atomically
//! (write, fsync, rename) after every change.

use std::collections::{BTreeSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

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
pub struct Progress {
    path: PathBuf,
    /// Every row up to and including this id is handled.
    cursor: i64,
    /// Rows after the cursor, in id order, with whether each is handled.
    rows: VecDeque<(i64, bool)>,
    /// Rows after the cursor handled by an earlier run, not seen yet in this one.
    done_earlier: BTreeSet<i64>,
}

impl Progress {
    /// Loads the cursor file at `path` (a missing file means "from the
    /// start"). A bare integer is accepted too, for hand edits.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let saved = match std::fs::read_to_string(path) {
            Ok(raw) => match raw.trim().parse::<i64>() {
                Ok(since_id) => Saved {
                    since_id,
                    done: Vec::new(),
                },
                Err(_) => serde_json::from_str(&raw).with_context(|| {
                    format!(
                        "{} is not a cursor file; delete it to start over",
                        path.display()
                    )
                })?,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
        };
        let cursor = saved.since_id.max(0);
        Ok(Self {
            path: path.to_owned(),
            cursor,
            rows: VecDeque::new(),
            done_earlier: saved.done.into_iter().filter(|id| *id > cursor).collect(),
        })
    }

    /// Every row up to this id is handled: poll with `since_id` = this.
    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// Records that row `id` was seen; `true` when it is to be handled,
    /// `false` when an earlier run already handled it.
    pub fn begin(&mut self, id: i64) -> anyhow::Result<bool> {
        if id <= self.cursor || self.rows.iter().any(|(r, _)| *r == id) {
            return Ok(false);
        }
        let earlier = self.done_earlier.remove(&id);
        self.rows.push_back((id, earlier));
        if earlier {
            self.advance()?;
        }
        Ok(!earlier)
    }

    /// Records that row `id` is handled, and persists the cursor.
    pub fn finish(&mut self, id: i64) -> anyhow::Result<()> {
        if let Some(row) = self.rows.iter_mut().find(|(r, _)| *r == id) {
            row.1 = true;
        }
        self.advance()
    }

    /// The server dropped rows before `to` (410): start over from there.
    pub fn reset(&mut self, to: i64) -> anyhow::Result<()> {
        self.cursor = to.max(0);
        self.rows.retain(|(id, _)| *id > to);
        self.done_earlier.retain(|id| *id > to);
        self.advance()
    }

    fn advance(&mut self) -> anyhow::Result<()> {
        while let Some((id, true)) = self.rows.front().copied() {
            self.cursor = id;
            self.rows.pop_front();
        }
        let cursor = self.cursor;
        self.done_earlier.retain(|id| *id > cursor);
        self.save()
    }

    /// Writes the file atomically.
    pub fn save(&self) -> anyhow::Result<()> {
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
        })?;
        write_atomically(&self.path, body.as_bytes())
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or
/// the new content, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
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
    use super::*;

    #[test]
    fn cursor_waits_for_every_earlier_row_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        let mut p = Progress::load(&path).unwrap();
        assert_eq!(p.cursor(), 0);
        for id in [3, 5, 9] {
            assert!(p.begin(id).unwrap());
        }
        p.finish(5).unwrap();
        assert_eq!(p.cursor(), 0, "row 3 is still in flight");
        p.finish(3).unwrap();
        assert_eq!(p.cursor(), 5);

        // Restart with 9 unhandled: it comes again.
        let mut p = Progress::load(&path).unwrap();
        assert_eq!(p.cursor(), 5);
        assert!(!p.begin(5).unwrap());
        assert!(p.begin(9).unwrap());
        assert!(p.begin(12).unwrap());
        p.finish(12).unwrap();
        assert_eq!(p.cursor(), 5);

        // Restart: 9 is handled again, 12 is not repeated.
        let mut p = Progress::load(&path).unwrap();
        assert!(p.begin(9).unwrap());
        assert!(!p.begin(12).unwrap(), "12 was handled by the earlier run");
        p.finish(9).unwrap();
        assert_eq!(p.cursor(), 12);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            r#"{"since_id":12,"done":[]}"#
        );
    }

    #[test]
    fn reset_jumps_forward_and_a_bare_integer_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        std::fs::write(&path, "7\n").unwrap();
        let mut p = Progress::load(&path).unwrap();
        assert_eq!(p.cursor(), 7);
        assert!(p.begin(8).unwrap());
        p.reset(100).unwrap();
        assert_eq!(p.cursor(), 100);
        assert!(!p.begin(50).unwrap());
    }
}
