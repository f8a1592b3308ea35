//! Checking a published plugin (a `.tar.gz`) while it streams in.
//!
//! The agent unpacks a plugin into a directory of its own, so an archive
//! must not be able to write anywhere else: no absolute paths, no `..`, no
//! symbolic link pointing outside the archive, no hard link to a path
//! outside it, and no device files or FIFOs. [`check_archive`] reads the
//! decompressed stream entry by entry (a blocking reader fed from the
//! request body through [`ChannelReader`]), so the verdict is ready when
//! the last byte has arrived and a refused archive is never stored.
//!
//! Links are checked against each other by [`LinkRules`], because each
//! link can look inside on its own while a chain of them leads out
//! (`d/l -> ..`, `d/l2 -> l/..`: through `d/l` the second is the parent of
//! the root). The rule is that a symbolic link is a leaf: nothing in the
//! archive goes through it or replaces it, and no link's target names or
//! passes through another link. That rule is chosen over resolving paths
//! the way an extractor would because it is easy to prove: then every path
//! the extractor resolves (an entry's path, a link's target, a hard link's
//! target) walks only real directories the archive made, where `..` means
//! exactly what it means lexically, so the lexical check "never above the
//! root" is the whole truth, whatever order the entries come in and
//! whatever the extractor does with links it meets. Paths are compared
//! case-folded, so a case-insensitive file system on the agent's machine
//! cannot join two names the check told apart.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
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

/// Most paths [`LinkRules`] remembers (every entry's ancestors, every step
/// of a link's walk): bounds the memory an archive of tiny headers with
/// deep paths can take; a real plugin is far below it.
const MAX_REMEMBERED_PATHS: usize = 1_000_000;

const THROUGH_LINK: &str = "a path through a symbolic link in the archive";
const REPLACES_LINK: &str = "an entry in place of a symbolic link in the archive";
const LINK_OVER_PATH: &str =
    "a symbolic link in place of a path the archive already uses or links to";
const LINK_TO_LINK: &str = "a symbolic link pointing to or through another link";
const HARD_TO_LINK: &str = "a hard link to or through a symbolic link";
const SYMLINK_OUT: &str = "a symbolic link pointing outside the archive";
const HARDLINK_OUT: &str = "a hard link pointing outside the archive";

/// A path below the archive root as a stack of hashes, one per prefix:
/// `prefix(i)` stands for the first `i` components, case-folded.
/// Comparing hashes can only join two different paths (a collision), which
/// refuses an archive, never lets one through.
#[derive(Clone, Default)]
struct Walk(Vec<(u64, DefaultHasher)>);

impl Walk {
    fn push(&mut self, component: &std::ffi::OsStr) {
        let mut hasher = self.0.last().map(|(_, h)| h.clone()).unwrap_or_default();
        component.to_string_lossy().to_lowercase().hash(&mut hasher);
        self.0.push((hasher.finish(), hasher));
    }

    fn pop(&mut self) -> bool {
        self.0.pop().is_some()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// The key of the whole path (`None` for the root).
    fn key(&self) -> Option<u64> {
        self.0.last().map(|(k, _)| *k)
    }

    /// Keys of the proper ancestors below the root, outermost first.
    fn ancestors(&self) -> impl Iterator<Item = u64> + '_ {
        let n = self.0.len().saturating_sub(1);
        self.0[..n].iter().map(|(k, _)| *k)
    }

    /// The path of an archive entry (already checked: relative, no `..`).
    fn of(path: &Path) -> Self {
        let mut walk = Walk::default();
        for component in path.components() {
            if let Component::Normal(c) = component {
                walk.push(c);
            }
        }
        walk
    }
}

/// What the archive's entries claimed so far, for the rule that a symbolic
/// link is a leaf (see the module docs). Order does not matter: a path used
/// first and made a link later is refused as surely as the other way round.
#[derive(Default)]
pub(crate) struct LinkRules {
    /// Every symbolic link's path.
    links: HashSet<u64>,
    /// Every other path something names or goes through: each entry's
    /// ancestors and own path, each step of a link's target, each hard
    /// link's target and its ancestors.
    used: HashSet<u64>,
}

impl LinkRules {
    fn remember(&mut self, name: &str, key: u64) -> Result<(), ArchiveError> {
        if self.used.len() + self.links.len() >= MAX_REMEMBERED_PATHS {
            return Err(refuse(name, "the archive holds too many paths to check"));
        }
        self.used.insert(key);
        Ok(())
    }

    /// Checks one entry of `kind` at `path` (already through
    /// [`check_path`]); `target` is a link's target.
    pub(crate) fn check(
        &mut self,
        name: &str,
        path: &Path,
        kind: EntryType,
        target: Option<&Path>,
    ) -> Result<(), ArchiveError> {
        let walk = Walk::of(path);
        for ancestor in walk.ancestors() {
            if self.links.contains(&ancestor) {
                return Err(refuse(name, THROUGH_LINK));
            }
            self.remember(name, ancestor)?;
        }
        match (kind, target) {
            (EntryType::Symlink, Some(target)) => self.check_symlink(name, &walk, target),
            (EntryType::Link, Some(target)) => {
                self.check_own(name, &walk)?;
                self.check_hard_link(name, target)
            }
            _ => self.check_own(name, &walk),
        }
    }

    /// A file, directory or hard link must not replace a link.
    fn check_own(&mut self, name: &str, walk: &Walk) -> Result<(), ArchiveError> {
        if let Some(own) = walk.key() {
            if self.links.contains(&own) {
                return Err(refuse(name, REPLACES_LINK));
            }
            self.remember(name, own)?;
        }
        Ok(())
    }

    fn check_symlink(
        &mut self,
        name: &str,
        walk: &Walk,
        target: &Path,
    ) -> Result<(), ArchiveError> {
        let Some(own) = walk.key() else {
            return Err(refuse(name, LINK_OVER_PATH));
        };
        if self.links.contains(&own) || self.used.contains(&own) {
            return Err(refuse(name, LINK_OVER_PATH));
        }
        // In the set before the walk, so a link through itself is refused.
        self.links.insert(own);
        // Resolved from the link's own directory, each step must stay
        // inside the root and be no link.
        let mut at = walk.clone();
        at.pop();
        for component in target.components() {
            match component {
                Component::Normal(c) => {
                    at.push(c);
                    let key = at.key().expect("BUG: a pushed walk has a key");
                    if self.links.contains(&key) {
                        return Err(refuse(name, LINK_TO_LINK));
                    }
                    self.remember(name, key)?;
                }
                Component::CurDir => {}
                Component::ParentDir => {
                    if !at.pop() {
                        return Err(refuse(name, SYMLINK_OUT));
                    }
                }
                Component::RootDir | Component::Prefix(_) => return Err(refuse(name, SYMLINK_OUT)),
            }
        }
        Ok(())
    }

    fn check_hard_link(&mut self, name: &str, target: &Path) -> Result<(), ArchiveError> {
        // Hard link targets are archive paths: same rule as names.
        if depth_after(0, target).is_none()
            || target.components().any(|c| c == Component::ParentDir)
        {
            return Err(refuse(name, HARDLINK_OUT));
        }
        let walk = Walk::of(target);
        if walk.len() == 0 {
            return Err(refuse(name, HARDLINK_OUT));
        }
        for key in walk.0.iter().map(|(k, _)| *k) {
            if self.links.contains(&key) {
                return Err(refuse(name, HARD_TO_LINK));
            }
            self.remember(name, key)?;
        }
        Ok(())
    }
}

/// Reads a whole `.tar.gz` from `reader` and checks every entry; on
/// success reads `reader` to its end (so a feeding channel never blocks)
/// and returns the number of entries.
pub(crate) fn check_archive<R: Read>(reader: R) -> Result<u64, ArchiveError> {
    let malformed = |e: io::Error| ArchiveError::Malformed(e.to_string());
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let mut rules = LinkRules::default();
    let mut count = 0u64;
    for entry in archive.entries().map_err(malformed)? {
        let entry = entry.map_err(malformed)?;
        let raw = entry.path_bytes();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let path = entry.path().map_err(malformed)?;
        check_path(&name, &path)?;
        let kind = entry.header().entry_type();
        let target = match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::Directory => None,
            // pax global headers carry metadata only.
            EntryType::XGlobalHeader => {
                count += 1;
                continue;
            }
            EntryType::Symlink => Some(
                entry
                    .link_name()
                    .map_err(malformed)?
                    .ok_or_else(|| refuse(&name, "a symbolic link without a target"))?,
            ),
            EntryType::Link => Some(
                entry
                    .link_name()
                    .map_err(malformed)?
                    .ok_or_else(|| refuse(&name, "a hard link without a target"))?,
            ),
            EntryType::Char | EntryType::Block => {
                return Err(refuse(&name, "device files are not allowed"))
            }
            EntryType::Fifo => return Err(refuse(&name, "FIFOs are not allowed")),
            _ => return Err(refuse(&name, "unsupported entry type")),
        };
        rules.check(&name, &path, kind, target.as_deref())?;
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
    use proptest::prelude::*;
    use std::collections::{HashMap, VecDeque};
    use std::io::Write;

    #[test]
    fn link_depth_stays_inside_the_root() {
        assert_eq!(depth_after(1, Path::new("../x")), Some(1));
        assert_eq!(depth_after(0, Path::new("../x")), None);
        assert_eq!(depth_after(0, Path::new("/etc/passwd")), None);
        assert_eq!(depth_after(2, Path::new("../../a/b")), Some(2));
        assert_eq!(depth_after(2, Path::new("../../../a")), None);
    }

    /// One entry: kind (`f` file, `d` dir, `s` symlink, `h` hard link),
    /// path, link target.
    type Spec = (char, String, String);

    /// A `.tar.gz` of `entries`, written byte for byte (the tar crate's
    /// builder would refuse the hostile ones).
    fn tgz(entries: &[Spec]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for (kind, name, link) in entries {
            let mut header = tar::Header::new_gnu();
            let gnu = header.as_gnu_mut().expect("gnu header");
            let n = name.len().min(99);
            gnu.name[..n].copy_from_slice(&name.as_bytes()[..n]);
            let l = link.len().min(99);
            gnu.linkname[..l].copy_from_slice(&link.as_bytes()[..l]);
            header.set_entry_type(match kind {
                'd' => EntryType::Directory,
                's' => EntryType::Symlink,
                'h' => EntryType::Link,
                _ => EntryType::Regular,
            });
            header.set_mode(0o644);
            header.set_size(0);
            header.set_cksum();
            builder.append(&header, &[][..]).expect("append");
        }
        let mut gz = builder.into_inner().expect("tar");
        gz.flush().expect("flush");
        gz.finish().expect("gzip")
    }

    fn verdict(entries: &[(char, &str, &str)]) -> Result<u64, ArchiveError> {
        let specs: Vec<Spec> = entries
            .iter()
            .map(|(k, n, l)| (*k, n.to_string(), l.to_string()))
            .collect();
        check_archive(&tgz(&specs)[..])
    }

    fn refused(entry: &str, reason: &'static str) -> Result<u64, ArchiveError> {
        Err(refuse(entry, reason))
    }

    #[test]
    fn link_chains_and_their_relatives_are_refused() {
        type Case<'a> = (
            &'a str,
            &'a [(char, &'a str, &'a str)],
            Result<u64, ArchiveError>,
        );
        let cases: &[Case] = &[
            (
                "the reported chain",
                &[
                    ('s', "d/l", ".."),
                    ('s', "d/l2", "l/.."),
                    ('f', "d/l2/pwned.txt", ""),
                ],
                refused("d/l2", LINK_TO_LINK),
            ),
            (
                "the chain, links in the other order",
                &[
                    ('s', "d/l2", "l/.."),
                    ('s', "d/l", ".."),
                    ('f', "d/l2/pwned.txt", ""),
                ],
                refused("d/l", LINK_OVER_PATH),
            ),
            (
                "`..` through a link to a deeper directory",
                &[
                    ('d', "a/b/c/", ""),
                    ('s', "a/s", "b/c"),
                    ('s', "x", "a/s/../../.."),
                ],
                refused("x", LINK_TO_LINK),
            ),
            (
                "a file written through a link",
                &[('s', "d/up", ".."), ('f', "d/up/x", "")],
                refused("d/up/x", THROUGH_LINK),
            ),
            (
                "a hard link to a link (GNU tar copies the link, target text and all)",
                &[('s', "a/b/s", "../x"), ('h', "h", "a/b/s")],
                refused("h", HARD_TO_LINK),
            ),
            (
                "a hard link through a link",
                &[('s', "a/up", ".."), ('h', "h", "a/up/f")],
                refused("h", HARD_TO_LINK),
            ),
            (
                "an absolute target",
                &[('s', "a/abs", "/etc")],
                refused("a/abs", SYMLINK_OUT),
            ),
            (
                "a file in place of a link (opened, it writes where the link points)",
                &[('s', "x", "f"), ('f', "x", "")],
                refused("x", REPLACES_LINK),
            ),
            (
                "a link in place of a directory already written into",
                &[('f', "a/d/x", ""), ('s', "a/d", "..")],
                refused("a/d", LINK_OVER_PATH),
            ),
            (
                "a link to itself",
                &[('s', "a/l", "../a/l/..")],
                refused("a/l", LINK_TO_LINK),
            ),
            (
                "names that differ only in case",
                &[('s', "d/L", ".."), ('s', "d/l2", "l/../../x")],
                refused("d/l2", LINK_TO_LINK),
            ),
            (
                "links that stay inside and lead nowhere else",
                &[
                    ('d', "./", ""),
                    ('f', "./run.sh", ""),
                    ('s', "./latest", "run.sh"),
                    ('s', "./docs/readme", "../run.sh"),
                    ('s', "./lib/x/up", "../.."),
                    ('h', "./copy.sh", "./run.sh"),
                ],
                Ok(6),
            ),
        ];
        for (case, entries, want) in cases {
            assert_eq!(&verdict(entries), want, "{case}");
        }
    }

    /// An extractor's file system in miniature: what each (folded) path
    /// holds, so the properties below can resolve paths the way the
    /// kernel does and see whether one ever climbs above the root.
    #[derive(Clone, Debug, PartialEq)]
    enum Node {
        Dir,
        File,
        Link(String),
    }

    struct Fs {
        nodes: HashMap<Vec<String>, Node>,
        fold: bool,
    }

    /// Resolving climbed above the root.
    struct Escaped;

    impl Fs {
        fn key(&self, c: &str) -> String {
            if self.fold {
                c.to_lowercase()
            } else {
                c.to_owned()
            }
        }

        /// Resolves `path` from `start`, following links (the last one
        /// too when `follow_last`); `Ok(None)` for a loop.
        fn resolve(
            &self,
            start: Vec<String>,
            path: &str,
            follow_last: bool,
        ) -> Result<Option<Vec<String>>, Escaped> {
            let mut at = start;
            if path.starts_with('/') {
                return Err(Escaped);
            }
            let mut queue: VecDeque<String> = path.split('/').map(str::to_owned).collect();
            let mut hops = 0;
            while let Some(c) = queue.pop_front() {
                match c.as_str() {
                    "" | "." => {}
                    ".." => {
                        if at.pop().is_none() {
                            return Err(Escaped);
                        }
                    }
                    _ => {
                        let mut next = at.clone();
                        next.push(self.key(&c));
                        let last = queue.iter().all(|c| c.is_empty() || c == ".");
                        match self.nodes.get(&next) {
                            Some(Node::Link(t)) if follow_last || !last => {
                                hops += 1;
                                if hops > 40 {
                                    return Ok(None);
                                }
                                if t.starts_with('/') {
                                    return Err(Escaped);
                                }
                                for part in t.split('/').rev() {
                                    queue.push_front(part.to_owned());
                                }
                            }
                            _ => at = next,
                        }
                    }
                }
            }
            Ok(Some(at))
        }

        /// Extracts the entries in order, then resolves every link left.
        fn extract(entries: &[Spec], fold: bool) -> Result<(), Escaped> {
            let mut fs = Fs {
                nodes: HashMap::new(),
                fold,
            };
            for (kind, name, link) in entries {
                let trimmed = name.trim_end_matches('/');
                let (parent, last) = match trimmed.rsplit_once('/') {
                    Some((p, l)) => (p, l),
                    None => ("", trimmed),
                };
                let Some(mut at) = fs.resolve(Vec::new(), parent, true)? else {
                    continue;
                };
                if matches!(last, "" | "." | "..") {
                    continue;
                }
                at.push(fs.key(last));
                let node = match kind {
                    'd' => Node::Dir,
                    's' => Node::Link(link.clone()),
                    'h' => {
                        // Python follows the source, GNU tar links it as is.
                        let followed = fs.resolve(Vec::new(), link, true)?;
                        let Some(source) = fs.resolve(Vec::new(), link, false)? else {
                            continue;
                        };
                        match (fs.nodes.get(&source), followed) {
                            (Some(n), _) => n.clone(),
                            (None, _) => continue,
                        }
                    }
                    _ => {
                        // Opening a file for writing follows a link there.
                        let name_at = fs.resolve(Vec::new(), trimmed, true)?;
                        if let Some(real) = name_at {
                            at = real;
                        }
                        Node::File
                    }
                };
                fs.nodes.insert(at, node);
            }
            for (path, node) in &fs.nodes {
                if let Node::Link(t) = node {
                    let parent = path[..path.len() - 1].to_vec();
                    fs.resolve(parent, t, true)?;
                }
            }
            Ok(())
        }
    }

    fn component() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "A", "l", "..", ".", ""]).prop_map(str::to_owned)
    }

    fn path() -> impl Strategy<Value = String> {
        (any::<bool>(), prop::collection::vec(component(), 1..5))
            .prop_map(|(abs, parts)| format!("{}{}", if abs { "/" } else { "" }, parts.join("/")))
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (
            prop::sample::select(vec!['f', 'd', 's', 's', 'h']),
            path(),
            path(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whatever the archive, the checker answers (no panic), and an
        /// archive it accepts extracts with nothing above the root, on a
        /// case-sensitive file system and on a case-insensitive one.
        #[test]
        fn an_accepted_archive_never_reaches_above_the_root(
            entries in prop::collection::vec(spec(), 1..8)
        ) {
            if check_archive(&tgz(&entries)[..]).is_ok() {
                for fold in [false, true] {
                    prop_assert!(Fs::extract(&entries, fold).is_ok(), "fold {fold}: {entries:?}");
                }
            }
        }

        /// Arbitrary bytes, gzip or not, are answered without a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), gz in any::<bool>()) {
            let body = if gz {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&bytes).expect("write");
                e.finish().expect("gzip")
            } else {
                bytes
            };
            let _ = check_archive(&body[..]);
        }

        /// An archive of plain files and folders with ordinary names is
        /// accepted, every entry counted (good input passes).
        #[test]
        fn plain_files_and_folders_are_accepted_and_counted(
            entries in prop::collection::vec(
                (prop::sample::select(vec!['f', 'd']), "[a-zA-Z0-9_-]{1,8}(/[a-zA-Z0-9_.-]{1,8}){0,3}"),
                1..12,
            )
        ) {
            let specs: Vec<Spec> = entries
                .into_iter()
                .filter(|(_, p)| !p.split('/').any(|c| c == "." || c == ".."))
                .map(|(k, p)| (k, p, String::new()))
                .collect();
            prop_assume!(!specs.is_empty());
            prop_assert_eq!(check_archive(&tgz(&specs)[..]), Ok(specs.len() as u64));
        }

        /// A real archive (links included) with bytes of its tar stream
        /// overwritten before compression: the header checksums and
        /// fields break in every way, and the checker still answers
        /// without a panic.
        #[test]
        fn a_corrupted_tar_stream_is_answered(
            entries in prop::collection::vec(spec(), 1..6),
            flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..16),
        ) {
            let archive = tgz(&entries);
            let mut raw = flate2::read::GzDecoder::new(&archive[..]);
            let mut tar_bytes = Vec::new();
            std::io::Read::read_to_end(&mut raw, &mut tar_bytes).expect("our own gzip");
            for (at, byte) in flips {
                let i = at % tar_bytes.len();
                tar_bytes[i] = byte;
            }
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&tar_bytes).expect("write");
            let _ = check_archive(&e.finish().expect("gzip")[..]);
        }
    }
}
