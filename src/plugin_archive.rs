//! Checking a published plugin (a `.tar.gz`) while it streams in.
//!
//! The agent unpacks a plugin into a directory of its own, so an archive
//! must not be able to write anywhere else: no absolute paths, no `..`, no
//! symbolic link pointing outside the archive, no hard link to a path
//! outside it, and no device files or FIFOs. [`check_archive`] reads the
//! decompressed stream entry by entry (a blocking reader fed from the
//! request body through [`ChannelReader`]), so the verdict is ready when
//! the last byte has arrived and a refused archive is never stored.

use std::io::{self, Read};
use std::path::{Component, Path};

use bytes::{Buf, Bytes};
use tar::EntryType;

/// Why an archive is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ArchiveError {
    /// One entry breaks a rule; the sentence names it.
    #[error("archive entry `{entry}` is refused: {reason}")]
    Entry {
        /// The entry's path as written in the archive.
        entry: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// Not a gzip-compressed tar archive at all.
    #[error("the body is not a gzip-compressed tar archive ({0})")]
    Malformed(String),
    /// A well-formed archive without a single entry.
    #[error("the archive is empty")]
    Empty,
}

fn refuse(entry: &str, reason: &'static str) -> ArchiveError {
    ArchiveError::Entry {
        entry: entry.chars().take(200).collect(),
        reason,
    }
}

/// How deep below the archive root a relative path ends, or `None` if it
/// climbs above the root, is absolute, or names a drive.
fn depth_after(start: usize, path: &Path) -> Option<usize> {
    let mut depth = start;
    for component in path.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => depth = depth.checked_sub(1)?,
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(depth)
}

/// Checks one entry's own path: relative, no `..` at all.
fn check_path(name: &str, path: &Path) -> Result<(), ArchiveError> {
    for component in path.components() {
        match component {
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse(name, "absolute paths are not allowed"))
            }
            Component::ParentDir => {
                return Err(refuse(name, "`..` path components are not allowed"))
            }
            Component::Normal(_) | Component::CurDir => {}
        }
    }
    Ok(())
}

/// Reads a whole `.tar.gz` from `reader` and checks every entry; on
/// success reads `reader` to its end (so a feeding channel never blocks)
/// and returns the number of entries.
pub(crate) fn check_archive<R: Read>(reader: R) -> Result<u64, ArchiveError> {
    let malformed = |e: io::Error| ArchiveError::Malformed(e.to_string());
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let mut count = 0u64;
    for entry in archive.entries().map_err(malformed)? {
        let entry = entry.map_err(malformed)?;
        let raw = entry.path_bytes();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let path = entry.path().map_err(malformed)?;
        check_path(&name, &path)?;
        match entry.header().entry_type() {
            EntryType::Regular | EntryType::Continuous | EntryType::Directory => {}
            // pax global headers carry metadata only.
            EntryType::XGlobalHeader => {}
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(malformed)?
                    .ok_or_else(|| refuse(&name, "a symbolic link without a target"))?;
                // Resolved from the link's own directory, the target must
                // stay inside the archive root.
                let parent_depth = path
                    .components()
                    .filter(|c| matches!(c, Component::Normal(_)))
                    .count()
                    .saturating_sub(1);
                if depth_after(parent_depth, &target).is_none() {
                    return Err(refuse(
                        &name,
                        "a symbolic link pointing outside the archive",
                    ));
                }
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(malformed)?
                    .ok_or_else(|| refuse(&name, "a hard link without a target"))?;
                // Hard link targets are archive paths: same rule as names.
                if depth_after(0, &target).is_none()
                    || target.components().any(|c| c == Component::ParentDir)
                {
                    return Err(refuse(&name, "a hard link pointing outside the archive"));
                }
            }
            EntryType::Char | EntryType::Block => {
                return Err(refuse(&name, "device files are not allowed"))
            }
            EntryType::Fifo => return Err(refuse(&name, "FIFOs are not allowed")),
            _ => return Err(refuse(&name, "unsupported entry type")),
        }
        count += 1;
    }
    if count == 0 {
        return Err(ArchiveError::Empty);
    }
    let mut rest = archive.into_inner().into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(malformed)?;
    Ok(count)
}

/// A blocking [`Read`] over chunks sent from async code: the archive
/// checker runs on a blocking thread while the request body streams in.
pub(crate) struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    /// Reads what is sent on `rx` until every sender is dropped.
    pub(crate) fn new(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_depth_stays_inside_the_root() {
        assert_eq!(depth_after(1, Path::new("../x")), Some(1));
        assert_eq!(depth_after(0, Path::new("../x")), None);
        assert_eq!(depth_after(0, Path::new("/etc/passwd")), None);
        assert_eq!(depth_after(2, Path::new("../../a/b")), Some(2));
        assert_eq!(depth_after(2, Path::new("../../../a")), None);
    }
}
