//! What stands between an upload's raw body and the multipart parser.
//!
//! The parser (multer) buffers a part's header block, and whatever comes
//! before the first boundary, until it finds where they end: one 100 MiB
//! header line grew memory by 100 MiB. And the request limit used to count
//! file bytes only, so megabytes of empty parts passed it. [`Scanner`]
//! follows the framing as bytes arrive, with a few bytes of memory: it
//! counts every byte of the body against the request limit (plus a small
//! allowance for the framing itself, the same as push-mode forwarding
//! allows) and caps each part's header block and the preamble.
//! [`FramingGuard`] runs it over the body stream; when it trips, the guard
//! reads and discards what is left (bounded) so the client can read the
//! answer, then fails the stream with the verdict kept for the handler.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

/// Largest header block of one part, and largest preamble.
pub(super) const MAX_PART_HEADER: usize = 16 * 1024;
/// What the framing (boundaries, part headers) may add to the files.
pub(super) const FRAMING_ALLOWANCE: u64 = 64 * 1024;
/// How long a refused body is drained before the connection is dropped.
pub(super) const DRAIN_TIME: Duration = Duration::from_secs(30);

/// What of a body was over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// The whole body is over the request limit plus the allowance.
    Body,
    /// A part's header block is over [`MAX_PART_HEADER`].
    PartHeader,
    /// More than [`MAX_PART_HEADER`] bytes before the first boundary.
    Preamble,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before the first `--boundary`; counts bytes.
    Preamble(usize),
    /// Right after a delimiter: `--` ends the body, anything else starts
    /// a part's header block.
    AfterDelimiter,
    /// In a header block; counts bytes up to its blank line.
    Headers(usize),
    /// In a part's content, looking for `\r\n--boundary`.
    Content,
    /// After the closing delimiter.
    Epilogue,
}

/// Follows multipart framing over a body fed in arbitrary chunks.
#[derive(Debug, Clone)]
pub(super) struct Scanner {
    /// `--boundary`: the first delimiter may open the body directly.
    dash_boundary: Vec<u8>,
    /// `\r\n--boundary`: every later delimiter.
    delimiter: Vec<u8>,
    limit: u64,
    total: u64,
    stage: Stage,
    /// The unscanned tail of the previous chunk (shorter than a pattern).
    carry: Vec<u8>,
}

impl Scanner {
    /// A scanner for `boundary`, allowing `limit` bytes of body in all.
    pub(super) fn new(boundary: &str, limit: u64) -> Self {
        let dash_boundary = format!("--{boundary}").into_bytes();
        let delimiter = format!("\r\n--{boundary}").into_bytes();
        Self {
            dash_boundary,
            delimiter,
            limit,
            total: 0,
            stage: Stage::Preamble(0),
            carry: Vec::new(),
        }
    }

    /// Feeds the next chunk of the body.
    ///
    /// The chunk is scanned where it lies: only the carried tail of the
    /// previous chunk and the first few bytes of this one (enough for any
    /// pattern that straddles them) are joined in a small buffer, so the
    /// body's bytes are not copied.
    pub(super) fn feed(&mut self, chunk: &[u8]) -> Result<(), Framing> {
        self.total += chunk.len() as u64;
        if self.total > self.limit {
            return Err(Framing::Body);
        }
        let carried = std::mem::take(&mut self.carry);
        let rest = if carried.is_empty() {
            chunk
        } else {
            let mut joined = carried;
            let from_carry = joined.len();
            joined.extend_from_slice(&chunk[..chunk.len().min(self.delimiter.len())]);
            let unscanned = self.scan(&joined)?;
            if unscanned < from_carry {
                // Still inside the carry (a chunk shorter than a pattern):
                // join it with the whole chunk (a few bytes) and go on.
                let mut joined = joined[unscanned..from_carry].to_vec();
                joined.extend_from_slice(chunk);
                let unscanned = self.scan(&joined)?;
                self.carry = joined[unscanned..].to_vec();
                return Ok(());
            }
            // What is left to scan lies in the chunk: go on there, in place.
            &chunk[unscanned - from_carry..]
        };
        let unscanned = self.scan(rest)?;
        self.carry = rest[unscanned..].to_vec();
        Ok(())
    }

    /// Runs the framing over `buf` from the current stage and returns where
    /// the unscanned tail starts: the bytes from there on (fewer than a
    /// pattern) were neither matched nor counted, and must be scanned again
    /// with what follows them.
    fn scan(&mut self, buf: &[u8]) -> Result<usize, Framing> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.stage {
                Stage::Preamble(seen) => match find(rest, &self.dash_boundary) {
                    Some(i) => {
                        check(seen + i, Framing::Preamble)?;
                        pos += i + self.dash_boundary.len();
                        self.stage = Stage::AfterDelimiter;
                    }
                    None => {
                        let keep = rest.len().min(self.dash_boundary.len() - 1);
                        let seen = seen + rest.len() - keep;
                        check(seen, Framing::Preamble)?;
                        self.stage = Stage::Preamble(seen);
                        return Ok(buf.len() - keep);
                    }
                },
                Stage::AfterDelimiter => {
                    if rest.len() < 2 {
                        return Ok(pos);
                    }
                    if rest.starts_with(b"--") {
                        self.stage = Stage::Epilogue;
                    } else {
                        self.stage = Stage::Headers(0);
                    }
                }
                Stage::Headers(seen) => match find(rest, b"\r\n\r\n") {
                    Some(i) => {
                        check(seen + i + 4, Framing::PartHeader)?;
                        pos += i + 4;
                        self.stage = Stage::Content;
                    }
                    None => {
                        let keep = rest.len().min(3);
                        let seen = seen + rest.len() - keep;
                        check(seen, Framing::PartHeader)?;
                        self.stage = Stage::Headers(seen);
                        return Ok(buf.len() - keep);
                    }
                },
                Stage::Content => match find(rest, &self.delimiter) {
                    Some(i) => {
                        pos += i + self.delimiter.len();
                        self.stage = Stage::AfterDelimiter;
                    }
                    None => {
                        let keep = rest.len().min(self.delimiter.len() - 1);
                        return Ok(buf.len() - keep);
                    }
                },
                Stage::Epilogue => return Ok(buf.len()),
            }
        }
    }
}

fn check(seen: usize, over: Framing) -> Result<(), Framing> {
    if seen > MAX_PART_HEADER {
        Err(over)
    } else {
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// Fuzzing oracle: feeds `data` to a [`Scanner`] whole and cut into
/// chunks (sizes taken from its first bytes), panicking if the two
/// verdicts or end states differ; then runs the guarded parser over it,
/// which must answer without a panic. The first byte picks the boundary.
#[doc(hidden)]
pub(crate) fn scan_both_ways(data: &[u8]) {
    const BOUNDARIES: [&str; 4] = ["B", "x7Qb0undary", "-", "a\r\n"];
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let boundary = BOUNDARIES[usize::from(pick) % BOUNDARIES.len()];
    let (sizes, body) = rest.split_at(rest.len().min(3));
    let mut whole = Scanner::new(boundary, u64::MAX);
    let whole_verdict = whole.feed(body);
    let mut cut = Scanner::new(boundary, u64::MAX);
    let mut cut_verdict = Ok(());
    let mut at = 0;
    let mut sizes = sizes.iter().map(|s| usize::from(*s % 23) + 1).cycle();
    while at < body.len() && cut_verdict.is_ok() {
        let len = sizes.next().unwrap_or(1).min(body.len() - at);
        cut_verdict = cut.feed(&body[at..at + len]);
        at += len;
    }
    assert_eq!(whole_verdict, cut_verdict, "verdict, whole vs cut");
    if whole_verdict.is_ok() {
        assert_eq!(whole.stage, cut.stage, "end stage, whole vs cut");
    }
    // The limit counts every byte, whatever the framing.
    let mut limited = Scanner::new(boundary, body.len().saturating_sub(1) as u64);
    if !body.is_empty() {
        assert_eq!(limited.feed(body), Err(Framing::Body), "one byte over");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("BUG: a current-thread runtime");
    runtime.block_on(async {
        let chunk = Ok::<_, std::io::Error>(Bytes::copy_from_slice(body));
        let stream = futures::stream::iter([chunk]);
        let (guard, _) = FramingGuard::new(stream, Scanner::new(boundary, 1 << 20), 0);
        let mut multipart = multer::Multipart::new(guard, boundary);
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(_)) = field.chunk().await {}
        }
    });
}

/// The verdict of a [`FramingGuard`], readable after the parser failed.
#[derive(Debug, Clone, Default)]
pub(super) struct Verdict(Arc<Mutex<Option<Framing>>>);

impl Verdict {
    /// Why the body was refused, if it was.
    pub(super) fn get(&self) -> Option<Framing> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, framing: Framing) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(framing);
    }
}

/// A body stream checked by a [`Scanner`].
pub(super) struct FramingGuard<S> {
    inner: S,
    scanner: Scanner,
    verdict: Verdict,
    /// Set once tripped: discard up to this many more bytes, until then.
    draining: Option<(u64, Pin<Box<tokio::time::Sleep>>)>,
    drain_budget: u64,
}

impl<S> FramingGuard<S> {
    /// Guards `inner`; after a refusal, up to `drain_budget` bytes are read
    /// and discarded (for at most [`DRAIN_TIME`]).
    pub(super) fn new(inner: S, scanner: Scanner, drain_budget: u64) -> (Self, Verdict) {
        let verdict = Verdict::default();
        let guard = Self {
            inner,
            scanner,
            verdict: verdict.clone(),
            draining: None,
            drain_budget,
        };
        (guard, verdict)
    }
}

impl<S, E> Stream for FramingGuard<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some((left, deadline)) = &mut this.draining {
                let refused = || {
                    Some(Err(std::io::Error::other(
                        "the multipart framing was refused",
                    )))
                };
                if deadline.as_mut().poll(cx).is_ready() || *left == 0 {
                    return Poll::Ready(refused());
                }
                match Pin::new(&mut this.inner).poll_next(cx) {
                    Poll::Ready(Some(Ok(chunk))) => {
                        *left = left.saturating_sub(chunk.len() as u64);
                        continue;
                    }
                    Poll::Ready(_) => return Poll::Ready(refused()),
                    Poll::Pending => return Poll::Pending,
                }
            }
            return match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => match this.scanner.feed(&chunk) {
                    Ok(()) => Poll::Ready(Some(Ok(chunk))),
                    Err(framing) => {
                        this.verdict.set(framing);
                        this.draining =
                            Some((this.drain_budget, Box::pin(tokio::time::sleep(DRAIN_TIME))));
                        continue;
                    }
                },
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (headers, content) in parts {
            out.extend_from_slice(format!("--B\r\n{headers}\r\n\r\n{content}\r\n").as_bytes());
        }
        out.extend_from_slice(b"--B--\r\n");
        out
    }

    #[test]
    fn ordinary_bodies_pass_whole_or_in_single_bytes() {
        let b = body(&[
            (
                "Content-Disposition: form-data; name=\"files\"; filename=\"a\"",
                "x\r\n--Bnot",
            ),
            ("Content-Disposition: form-data; name=\"files\"", ""),
        ]);
        let mut whole = Scanner::new("B", 1 << 20);
        assert_eq!(whole.feed(&b), Ok(()));
        assert_eq!(whole.stage, Stage::Epilogue);
        let mut bytewise = Scanner::new("B", 1 << 20);
        for byte in &b {
            assert_eq!(bytewise.feed(std::slice::from_ref(byte)), Ok(()));
        }
        assert_eq!(bytewise.stage, Stage::Epilogue);
    }

    /// Feeds `b` cut at `cuts` (sorted) and returns the verdict and stage.
    fn feed_cut(b: &[u8], cuts: &[usize], limit: u64) -> (Result<(), Framing>, Stage) {
        let mut s = Scanner::new("B", limit);
        let mut from = 0;
        for &cut in cuts.iter().chain(std::iter::once(&b.len())) {
            if let Err(e) = s.feed(&b[from..cut]) {
                return (Err(e), s.stage);
            }
            from = cut;
        }
        (Ok(()), s.stage)
    }

    /// The chunk is scanned in place, with only the carry joined to its
    /// head: every way of cutting a body in two or three pieces (and so
    /// every carry/head combination) ends exactly as the whole body does.
    #[test]
    fn every_two_and_three_piece_cut_ends_as_the_whole_body() {
        let b = body(&[
            (
                "Content-Disposition: form-data; name=\"files\"; filename=\"a\"",
                "x\r\n--Bnot\r\n\r\n--B-",
            ),
            ("Content-Disposition: form-data; name=\"files\"", "\r\n"),
        ]);
        let mut b = [b"pre\r\n".as_slice(), &b].concat();
        b.extend_from_slice(b"epilogue");
        assert_eq!(feed_cut(&b, &[], 1 << 20), (Ok(()), Stage::Epilogue));
        for i in 0..=b.len() {
            for j in i..=b.len() {
                assert_eq!(
                    feed_cut(&b, &[i, j], 1 << 20),
                    (Ok(()), Stage::Epilogue),
                    "cuts {i}, {j}"
                );
            }
        }
        // A header block at the cap passes and one byte more is refused,
        // wherever the body is cut.
        let at_cap = |extra: usize| {
            let name = "X-Pad: ";
            // The block counted: "\r\n", the header line, "\r\n\r\n".
            let pad = "p".repeat(MAX_PART_HEADER - name.len() - 6 + extra);
            [
                b"--B\r\n".as_slice(),
                name.as_bytes(),
                pad.as_bytes(),
                b"\r\n\r\nbody\r\n--B--\r\n",
            ]
            .concat()
        };
        let (fits, over) = (at_cap(0), at_cap(1));
        let cuts = (0..over.len()).filter(|c| c % 97 == 0 || c.abs_diff(MAX_PART_HEADER) < 40);
        for cut in cuts {
            assert_eq!(
                feed_cut(&fits, &[cut.min(fits.len())], 1 << 20),
                (Ok(()), Stage::Epilogue),
                "cut {cut}"
            );
            assert_eq!(
                feed_cut(&over, &[cut], 1 << 20).0,
                Err(Framing::PartHeader),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn a_long_header_a_long_preamble_and_a_long_body_are_refused() {
        let long = "x".repeat(MAX_PART_HEADER + 10);
        let mut s = Scanner::new("B", 1 << 30);
        assert_eq!(
            s.feed(format!("--B\r\nX-Long: {long}").as_bytes()),
            Err(Framing::PartHeader)
        );
        let mut s = Scanner::new("B", 1 << 30);
        assert_eq!(s.feed(long.as_bytes()), Err(Framing::Preamble));
        let mut s = Scanner::new("B", 10);
        assert_eq!(s.feed(b"--B\r\n\r\n\r\n01234"), Err(Framing::Body));
    }
}

/// Property tests of the multipart reader: the guard in front of multer,
/// fed bodies split at arbitrary points.
#[cfg(test)]
mod props {
    use futures::StreamExt;
    use proptest::prelude::*;

    use super::*;

    const BOUNDARY: &str = "x7Qb0undary";

    /// (field name, file name, content) of each part.
    type Parts = Vec<(bool, String, Vec<u8>)>;

    fn body(parts: &Parts, pad: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for (is_file, name, content) in parts {
            let field = if *is_file { "files" } else { "x" };
            out.extend_from_slice(
                format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\nX-Pad: {}\r\n\r\n",
                    "p".repeat(pad)
                )
                .as_bytes(),
            );
            out.extend_from_slice(content);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        out
    }

    fn chunks(body: &[u8], cuts: &[usize]) -> Vec<Result<Bytes, std::io::Error>> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        points.push(0);
        points.push(body.len());
        points.sort_unstable();
        points.dedup();
        points
            .windows(2)
            .map(|w| Ok(Bytes::copy_from_slice(&body[w[0]..w[1]])))
            .collect()
    }

    /// Runs the guarded reader over `chunks`: the parts read, or the
    /// verdict (or `None` for a parser error without one).
    fn read(
        chunks: Vec<Result<Bytes, std::io::Error>>,
        limit: u64,
    ) -> Result<Parts, Option<Framing>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let stream = futures::stream::iter(chunks);
            let (guard, verdict) = FramingGuard::new(stream, Scanner::new(BOUNDARY, limit), 0);
            let mut multipart = multer::Multipart::new(guard, BOUNDARY);
            let mut parts = Vec::new();
            loop {
                match multipart.next_field().await {
                    Ok(Some(field)) => {
                        let is_file = field.name() == Some("files");
                        let name = field.file_name().unwrap_or("").to_owned();
                        let mut content = Vec::new();
                        let mut field = field;
                        loop {
                            match field.chunk().await {
                                Ok(Some(c)) => content.extend_from_slice(&c),
                                Ok(None) => break,
                                Err(_) => return Err(verdict.get()),
                            }
                        }
                        parts.push((is_file, name, content));
                    }
                    Ok(None) => return Ok(parts),
                    Err(_) => return Err(verdict.get()),
                }
            }
        })
    }

    fn parts_strategy() -> impl Strategy<Value = Parts> {
        prop::collection::vec(
            (
                any::<bool>(),
                "[a-z0-9._-]{1,12}",
                prop::collection::vec(any::<u8>(), 0..600),
            ),
            1..5,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever the split, every part comes back byte for byte and the
        /// guard stays silent.
        #[test]
        fn any_split_reads_every_part_unchanged(
            parts in parts_strategy(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let b = body(&parts, 10);
            prop_assert_eq!(read(chunks(&b, &cuts), 1 << 20), Ok(parts));
        }

        /// A header block over the cap is refused by the guard, whatever
        /// the split, before the parser sees the whole of it.
        #[test]
        fn an_oversized_header_is_refused_at_any_split(
            parts in parts_strategy(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let b = body(&parts, MAX_PART_HEADER + 1);
            prop_assert_eq!(read(chunks(&b, &cuts), 1 << 30), Err(Some(Framing::PartHeader)));
        }

        /// Every byte counts: a body one byte over the limit is refused,
        /// one at the limit is not (by the guard).
        #[test]
        fn the_limit_counts_every_byte(
            parts in parts_strategy(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let b = body(&parts, 0);
            let len = b.len() as u64;
            prop_assert_eq!(read(chunks(&b, &cuts), len), Ok(parts));
            prop_assert_eq!(read(chunks(&b, &cuts), len - 1), Err(Some(Framing::Body)));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The fuzz target's oracle over arbitrary bytes and over real
        /// bodies with bytes overwritten: cut anywhere, the scanner gives
        /// the whole body's verdict and ends in its stage, and the guarded
        /// parser answers without a panic.
        #[test]
        fn any_bytes_cut_anywhere_get_the_verdict_of_the_whole(
            head in prop::collection::vec(any::<u8>(), 4),
            parts in parts_strategy(),
            noise in prop::collection::vec(any::<u8>(), 0..300),
            flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        ) {
            // Boundary pick 1 is this module's BOUNDARY.
            let mut b = body(&parts, 3);
            for (at, byte) in flips {
                let i = at % b.len();
                b[i] = byte;
            }
            scan_both_ways(&[&[1u8], &head[1..], &b[..]].concat());
            scan_both_ways(&[&head[..], &noise[..]].concat());
        }
    }

    #[test]
    fn the_guard_stream_ends_after_a_refusal() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(Bytes::from_static(b"0123456789")),
                Ok(Bytes::from_static(b"abc")),
            ];
            let (mut guard, verdict) =
                FramingGuard::new(futures::stream::iter(chunks), Scanner::new("B", 4), 100);
            assert!(guard.next().await.unwrap().is_err());
            assert_eq!(verdict.get(), Some(Framing::Body));
        });
    }
}
