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
pub const MAX_PART_HEADER: usize = 16 * 1024;
/// What the framing (boundaries, part headers) may add to the files.
pub const FRAMING_ALLOWANCE: u64 = 64 * 1024;
/// How long a refused body is drained before the connection is dropped.
pub const DRAIN_TIME: Duration = Duration::from_secs(30);

/// Why the framing of a body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The whole body is over the request limit plus the allowance.
    TooLarge,
    /// A part's header block is over [`MAX_PART_HEADER`].
    HeaderTooLarge,
    /// More than [`MAX_PART_HEADER`] bytes before the first boundary.
    PreambleTooLarge,
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
pub struct Scanner {
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
    pub fn new(boundary: &str, limit: u64) -> Self {
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
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), Framing> {
        self.total += chunk.len() as u64;
        if self.total > self.limit {
            return Err(Framing::TooLarge);
        }
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(chunk);
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.stage {
                Stage::Preamble(seen) => match find(rest, &self.dash_boundary) {
                    Some(i) => {
                        check(seen + i, Framing::PreambleTooLarge)?;
                        pos += i + self.dash_boundary.len();
                        self.stage = Stage::AfterDelimiter;
                    }
                    None => {
                        let keep = rest.len().min(self.dash_boundary.len() - 1);
                        let seen = seen + rest.len() - keep;
                        check(seen, Framing::PreambleTooLarge)?;
                        self.stage = Stage::Preamble(seen);
                        self.carry = rest[rest.len() - keep..].to_vec();
                        return Ok(());
                    }
                },
                Stage::AfterDelimiter => {
                    if rest.len() < 2 {
                        self.carry = rest.to_vec();
                        return Ok(());
                    }
                    if rest.starts_with(b"--") {
                        self.stage = Stage::Epilogue;
                    } else {
                        self.stage = Stage::Headers(0);
                    }
                }
                Stage::Headers(seen) => match find(rest, b"\r\n\r\n") {
                    Some(i) => {
                        check(seen + i + 4, Framing::HeaderTooLarge)?;
                        pos += i + 4;
                        self.stage = Stage::Content;
                    }
                    None => {
                        let keep = rest.len().min(3);
                        let seen = seen + rest.len() - keep;
                        check(seen, Framing::HeaderTooLarge)?;
                        self.stage = Stage::Headers(seen);
                        self.carry = rest[rest.len() - keep..].to_vec();
                        return Ok(());
                    }
                },
                Stage::Content => match find(rest, &self.delimiter) {
                    Some(i) => {
                        pos += i + self.delimiter.len();
                        self.stage = Stage::AfterDelimiter;
                    }
                    None => {
                        let keep = rest.len().min(self.delimiter.len() - 1);
                        self.carry = rest[rest.len() - keep..].to_vec();
                        return Ok(());
                    }
                },
                Stage::Epilogue => return Ok(()),
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

/// The verdict of a [`FramingGuard`], readable after the parser failed.
#[derive(Debug, Clone, Default)]
pub struct Verdict(Arc<Mutex<Option<Framing>>>);

impl Verdict {
    /// Why the body was refused, if it was.
    pub fn get(&self) -> Option<Framing> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, framing: Framing) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(framing);
    }
}

/// A body stream checked by a [`Scanner`].
pub struct FramingGuard<S> {
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
    pub fn new(inner: S, scanner: Scanner, drain_budget: u64) -> (Self, Verdict) {
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
                let refused = || Some(Err(std::io::Error::other("the multipart framing was refused")));
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
                        this.draining = Some((
                            this.drain_budget,
                            Box::pin(tokio::time::sleep(DRAIN_TIME)),
                        ));
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
            ("Content-Disposition: form-data; name=\"files\"; filename=\"a\"", "x\r\n--Bnot"),
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

    #[test]
    fn a_long_header_a_long_preamble_and_a_long_body_are_refused() {
        let long = "x".repeat(MAX_PART_HEADER + 1);
        let mut s = Scanner::new("B", 1 << 30);
        assert_eq!(
            s.feed(format!("--B\r\nX-Long: {long}").as_bytes()),
            Err(Framing::HeaderTooLarge)
        );
        let mut s = Scanner::new("B", 1 << 30);
        assert_eq!(s.feed(long.as_bytes()), Err(Framing::PreambleTooLarge));
        let mut s = Scanner::new("B", 10);
        assert_eq!(s.feed(b"--B\r\n\r\n\r\n01234"), Err(Framing::TooLarge));
    }
}
