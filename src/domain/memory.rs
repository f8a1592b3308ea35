//! The vocabulary of agent memory: scopes, validated content, namespaces
//! and keys, the search terms a query is reduced to, vectors as stored, and
//! the rank fusion of hybrid recall.
//!
//! Pure: the store turns [`SearchTerms`] into each engine's full-text query
//! and the HTTP layer turns the errors into 400/413.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::WorkspaceId;

/// Largest memory content, in bytes.
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;
/// Largest serialized key/value value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// The `k` of reciprocal rank fusion: the usual 60, which keeps one list's
/// top hit from drowning the other list.
pub const RRF_K: f64 = 60.0;
/// At most this many terms of a query reach the full-text index.
pub const MAX_TERMS: usize = 32;

/// Who may read a memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Scope {
    /// Only the workspace that committed it.
    #[serde(rename = "LOCAL")]
    Local,
    /// The owner, its parent, its children and its siblings.
    #[serde(rename = "TEAM")]
    Team,
    /// Every workspace; written only by a root workspace or the operator.
    #[serde(rename = "GLOBAL")]
    Global,
}

impl Scope {
    /// The stored and wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Local => "LOCAL",
            Scope::Team => "TEAM",
            Scope::Global => "GLOBAL",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a memory or key/value input is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    /// Not one of the three scopes.
    #[error("`{0}` is not a scope: use LOCAL, TEAM or GLOBAL")]
    BadScope(String),
    /// Empty or blank content.
    #[error("content must not be empty")]
    EmptyContent,
    /// Over [`MAX_CONTENT_BYTES`].
    #[error("content is {0} bytes; the limit is 65536 (64 KiB)")]
    ContentTooLarge(usize),
    /// Content with a NUL character (PostgreSQL text cannot hold one).
    #[error("content must not contain NUL characters")]
    Nul,
    /// A namespace outside 1–100 characters or with control characters.
    #[error("namespace must be 1 to 100 characters without control characters")]
    BadNamespace,
    /// A key outside 1–256 characters or with control characters.
    #[error("key must be 1 to 256 characters without control characters")]
    BadKey,
    /// A value over [`MAX_VALUE_BYTES`] once serialized.
    #[error("value is {0} bytes as JSON; the limit is 65536 (64 KiB)")]
    ValueTooLarge(usize),
}

impl FromStr for Scope {
    type Err = MemoryError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "LOCAL" => Ok(Scope::Local),
            "TEAM" => Ok(Scope::Team),
            "GLOBAL" => Ok(Scope::Global),
            other => Err(MemoryError::BadScope(other.chars().take(40).collect())),
        }
    }
}

/// Memory text: not blank, at most 64 KiB, no NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content(String);

impl Content {
    /// Checks `raw`.
    pub fn parse(raw: String) -> Result<Self, MemoryError> {
        if raw.len() > MAX_CONTENT_BYTES {
            return Err(MemoryError::ContentTooLarge(raw.len()));
        }
        if raw.trim().is_empty() {
            return Err(MemoryError::EmptyContent);
        }
        if raw.contains('\0') {
            return Err(MemoryError::Nul);
        }
        Ok(Self(raw))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn label(raw: &str, max: usize) -> bool {
    let n = raw.chars().count();
    (1..=max).contains(&n) && !raw.chars().any(char::is_control)
}

/// A namespace: 1–100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace(String);

impl Namespace {
    /// The namespace of a commit that names none.
    pub fn general() -> Self {
        Self("general".into())
    }

    /// Checks `raw`.
    pub fn parse(raw: &str) -> Result<Self, MemoryError> {
        if label(raw, 100) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(MemoryError::BadNamespace)
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A key of the key/value memory: 1–256 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key(String);

impl Key {
    /// Checks `raw`.
    pub fn parse(raw: &str) -> Result<Self, MemoryError> {
        if label(raw, 256) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(MemoryError::BadKey)
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a key/value value's serialized size.
pub fn check_value(value: &serde_json::Value) -> Result<(), MemoryError> {
    let len = serde_json::to_vec(value).map(|v| v.len()).unwrap_or(0);
    if len > MAX_VALUE_BYTES {
        return Err(MemoryError::ValueTooLarge(len));
    }
    Ok(())
}

/// A query reduced to plain words: runs of letters and digits, lowercased,
/// deduplicated, at most [`MAX_TERMS`]. User text never reaches a full-text
/// engine as query syntax — punctuation, quotes, `NEAR`, `*`, `:` and the
/// like are separators here — so no query can be a syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchTerms(Vec<String>);

impl SearchTerms {
    /// Splits `query` into terms.
    pub fn parse(query: &str) -> Self {
        let mut terms: Vec<String> = Vec::new();
        for word in query.split(|c: char| !c.is_alphanumeric()) {
            if word.is_empty() {
                continue;
            }
            let word = word.to_lowercase();
            if !terms.contains(&word) {
                terms.push(word);
            }
            if terms.len() == MAX_TERMS {
                break;
            }
        }
        Self(terms)
    }

    /// No word at all (a query of punctuation only).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The terms.
    pub fn terms(&self) -> &[String] {
        &self.0
    }

    /// An FTS5 `MATCH` expression: each term a quoted string (a phrase of
    /// one token), any of them matching.
    pub fn fts5_query(&self) -> String {
        self.0
            .iter()
            .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" OR ")
    }

    /// A `websearch_to_tsquery` input: each term quoted, any of them
    /// matching. That function never raises a syntax error.
    pub fn websearch_query(&self) -> String {
        self.fts5_query()
    }

    /// A query every term must match, read alike by FTS5 `MATCH` and
    /// `websearch_to_tsquery`: quoted terms side by side.
    pub fn all_of_query(&self) -> String {
        self.0
            .iter()
            .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A vector as stored: little-endian float32s.
pub fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The float32s of a stored vector; `None` when the length is not a
/// multiple of four.
pub fn decode_vector(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// A stored vector decoded and scaled to unit length, so that cosine
/// similarity is a plain dot product ([`dot`]); `None` when the bytes are
/// not float32s or the vector is zero (it has no direction to compare).
pub fn unit_vector(bytes: &[u8]) -> Option<Vec<f32>> {
    let mut v = decode_vector(bytes)?;
    // The norm in f64: a long vector of small floats keeps its precision.
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if v.is_empty() || norm == 0.0 || !norm.is_finite() {
        return None;
    }
    for x in &mut v {
        *x = (f64::from(*x) / norm) as f32;
    }
    Some(v)
}

/// The dot product of two vectors of the same length (the cosine of two
/// [`unit_vector`]s); `None` when the lengths differ — vectors of
/// different dimensions are never compared. Eight running sums, so the
/// compiler vectorises the loop.
pub fn dot(a: &[f32], b: &[f32]) -> Option<f32> {
    if a.len() != b.len() {
        return None;
    }
    let mut sums = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            sums[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    Some(sums.iter().sum::<f32>() + tail)
}

/// A unit vector kept in one signed byte a component: `scale` times each
/// byte restores it to within half a step (`scale / 2`), a quarter of the
/// memory of float32s. Recall keeps its cached vectors this way.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quantized {
    /// What one step of a byte is worth.
    pub scale: f32,
    /// The components, each `round(x / scale)` in -127..=127.
    pub bytes: Box<[i8]>,
}

impl Quantized {
    /// `v` with its largest component mapped to ±127.
    pub fn new(v: &[f32]) -> Self {
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        if max == 0.0 || !max.is_finite() {
            return Self {
                scale: 0.0,
                bytes: vec![0; v.len()].into(),
            };
        }
        let scale = max / 127.0;
        let bytes = v
            .iter()
            .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
            .collect();
        Self { scale, bytes }
    }

    /// How many components it has.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether it has none (a stored vector that cannot be compared).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The dot product with `query` (float32s, e.g. a [`unit_vector`]):
    /// the cosine when both are unit length, to within about
    /// `scale / 2 * sum(|query|)`; `None` when the lengths differ. Eight
    /// running sums, so the compiler vectorises the loop.
    pub fn dot(&self, query: &[f32]) -> Option<f32> {
        if self.bytes.len() != query.len() {
            return None;
        }
        let mut sums = [0f32; 8];
        let (cq, cb) = (query.chunks_exact(8), self.bytes.chunks_exact(8));
        let (rq, rb) = (cq.remainder(), cb.remainder());
        for (x, y) in cq.zip(cb) {
            for i in 0..8 {
                sums[i] += x[i] * f32::from(y[i]);
            }
        }
        let tail: f32 = rq.iter().zip(rb).map(|(x, y)| x * f32::from(*y)).sum();
        Some((sums.iter().sum::<f32>() + tail) * self.scale)
    }
}

/// Reciprocal rank fusion of ranked lists (best first): each item scores
/// the sum over the lists of `1 / (k + rank)`, rank starting at 1. Best
/// first; ties keep the order of first appearance.
pub fn reciprocal_rank_fusion<T: Clone + Eq + std::hash::Hash>(lists: &[Vec<T>]) -> Vec<(T, f64)> {
    let mut scores: HashMap<T, (f64, usize)> = HashMap::new();
    let mut order = 0;
    for list in lists {
        for (i, item) in list.iter().enumerate() {
            let entry = scores.entry(item.clone()).or_insert_with(|| {
                order += 1;
                (0.0, order)
            });
            entry.0 += 1.0 / (RRF_K + (i + 1) as f64);
        }
    }
    let mut fused: Vec<(T, f64, usize)> = scores.into_iter().map(|(t, (s, o))| (t, s, o)).collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
    fused.into_iter().map(|(t, s, _)| (t, s)).collect()
}

/// Whose memories a workspace may read, by scope. LOCAL: its own; GLOBAL:
/// everyone's; TEAM: the owners in `team`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reader {
    /// The operator: every memory (of `owner` only, when given).
    Operator {
        /// Only memories this workspace committed.
        owner: Option<WorkspaceId>,
    },
    /// A workspace.
    Workspace {
        /// The reader.
        id: WorkspaceId,
        /// The workspaces whose TEAM memories it may read (itself included).
        team: Vec<WorkspaceId>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_strip_syntax_and_keep_every_script() {
        let cases: &[(&str, &[&str])] = &[
            ("deploy the API", &["deploy", "the", "api"]),
            (
                "\"unbalanced AND (NEAR* foo:bar -x ^y",
                &["unbalanced", "and", "near", "foo", "bar", "x", "y"],
            ),
            ("Café crème brûlée", &["café", "crème", "brûlée"]),
            ("東京 の 天気", &["東京", "の", "天気"]),
            ("!!! ??? ...", &[]),
            ("a a A", &["a"]),
        ];
        for (query, want) in cases {
            let terms = SearchTerms::parse(query);
            assert_eq!(terms.terms(), *want, "query {query:?}");
        }
        assert_eq!(
            SearchTerms::parse("near OR x").fts5_query(),
            "\"near\" OR \"or\" OR \"x\""
        );
    }

    #[test]
    fn content_limits() {
        assert_eq!(Content::parse("  ".into()), Err(MemoryError::EmptyContent));
        assert_eq!(
            Content::parse("x".repeat(MAX_CONTENT_BYTES + 1)),
            Err(MemoryError::ContentTooLarge(MAX_CONTENT_BYTES + 1))
        );
        assert!(Content::parse("x".repeat(MAX_CONTENT_BYTES)).is_ok());
        assert_eq!(Content::parse("a\0b".into()), Err(MemoryError::Nul));
    }

    #[test]
    fn vectors_round_trip_and_compare() {
        let v = [1.0f32, -2.5, 0.0, 3.25];
        assert_eq!(decode_vector(&encode_vector(&v)).unwrap(), v);
        let a = encode_vector(&[1.0, 0.0]);
        let b = encode_vector(&[0.0, 1.0]);
        let (ua, ub) = (unit_vector(&a).unwrap(), unit_vector(&b).unwrap());
        assert_eq!(dot(&ua, &ua), Some(1.0));
        assert_eq!(dot(&ua, &ub), Some(0.0));
        assert_eq!(
            dot(&ua, &unit_vector(&encode_vector(&[1.0])).unwrap()),
            None
        );
        assert_eq!(unit_vector(&encode_vector(&[0.0, 0.0])), None);
        assert_eq!(unit_vector(&[1, 2, 3]), None);
        // Scaled to unit length, any dimension (the 8-wide loop and its tail).
        let long: Vec<f32> = (0..19).map(|i| i as f32 - 4.0).collect();
        let u = unit_vector(&encode_vector(&long)).unwrap();
        assert!((dot(&u, &u).unwrap() - 1.0).abs() < 1e-6);
        let neg: Vec<f32> = long.iter().map(|x| -x).collect();
        let n = unit_vector(&encode_vector(&neg)).unwrap();
        assert!((dot(&u, &n).unwrap() + 1.0).abs() < 1e-6);
    }

    #[test]
    fn quantized_vectors_keep_the_cosine() {
        let a = unit_vector(&encode_vector(&[
            3.0, -4.0, 0.5, 0.0, 1.0, 2.0, -2.0, 0.25, 7.0,
        ]))
        .unwrap();
        let b = unit_vector(&encode_vector(&[
            1.0, 1.0, -0.5, 2.0, 0.0, -1.0, 3.0, 0.5, 2.0,
        ]))
        .unwrap();
        let q = Quantized::new(&a);
        assert_eq!(q.len(), 9);
        // The largest component is ±127 steps; the rest within half a step.
        assert_eq!(q.bytes.iter().map(|x| x.unsigned_abs()).max(), Some(127));
        for (x, y) in a.iter().zip(q.bytes.iter()) {
            assert!((x - f32::from(*y) * q.scale).abs() <= q.scale / 2.0 + 1e-7);
        }
        let exact = dot(&a, &b).unwrap();
        let bound = q.scale / 2.0 * b.iter().map(|x| x.abs()).sum::<f32>();
        assert!((q.dot(&b).unwrap() - exact).abs() <= bound + 1e-6);
        assert!((q.dot(&a).unwrap() - 1.0).abs() < 0.01);
        // Other dimensions are never compared; a zero vector scores zero.
        assert_eq!(q.dot(&b[..8]), None);
        assert_eq!(Quantized::new(&[0.0; 4]).dot(&[1.0; 4]), Some(0.0));
        assert!(Quantized::default().is_empty());
    }

    #[test]
    fn fusion_rewards_agreement() {
        let fused = reciprocal_rank_fusion(&[vec!["a", "b", "c"], vec!["b", "c", "a"]]);
        let order: Vec<&str> = fused.iter().map(|(t, _)| *t).collect();
        assert_eq!(order, ["b", "a", "c"]);
        assert!((fused[0].1 - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-12);
    }
}
