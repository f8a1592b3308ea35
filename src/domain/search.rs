//! Search across workspaces, the pure half: what a query is (its text as
//! a literal `LIKE` pattern and as full-text terms), which kinds it asks
//! for, the cursor that pages the merged newest-first answer, and the
//! snippet shown for a hit. The store runs the queries; the HTTP layer
//! merges the kinds.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};

use super::memory::SearchTerms;

/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// Characters of a snippet before its match.
const SNIPPET_BEFORE: usize = 60;
/// Characters of a snippet in all.
const SNIPPET_CHARS: usize = 200;

/// What a search hit is. The order is the tie-break of the merged answer
/// (at one instant, messages before memories before delegations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SearchKind {
    /// A delegation of the ledger: its task, result or error.
    Delegation,
    /// A memory's content.
    Memory,
    /// A chat message: the operator's, a peer's or the agent's.
    Message,
}

impl SearchKind {
    /// Every kind, in the order the `kinds` parameter lists them.
    pub const ALL: [SearchKind; 3] = [Self::Message, Self::Memory, Self::Delegation];

    /// The `kind` of a hit on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Memory => "memory",
            Self::Delegation => "delegation",
        }
    }

    /// The word of the `kinds` parameter.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Message => "messages",
            Self::Memory => "memories",
            Self::Delegation => "delegations",
        }
    }
}

/// Why a search request is refused (the HTTP layer answers 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// No `q`, or only spaces.
    #[error("`q` is required: the text to search for")]
    EmptyQuery,
    /// `q` is longer than [`MAX_QUERY_CHARS`].
    #[error("`q` is {0} characters long; at most 200 are searched")]
    QueryTooLong(usize),
    /// A word of `kinds` that names no kind.
    #[error(
        "`kinds` takes messages, memories and delegations, comma-separated; `{0}` is none of them"
    )]
    UnknownKind(String),
    /// A cursor this route did not hand out.
    #[error("`cursor` is not one a previous page of this search gave")]
    BadCursor,
}

/// A checked query: trimmed, non-empty, at most [`MAX_QUERY_CHARS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchText(String);

impl SearchText {
    /// Checks `raw`.
    pub fn parse(raw: &str) -> Result<Self, SearchError> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(SearchError::EmptyQuery);
        }
        let n = text.chars().count();
        if n > MAX_QUERY_CHARS {
            return Err(SearchError::QueryTooLong(n));
        }
        Ok(Self(text.to_owned()))
    }

    /// The text as given (trimmed).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A `LIKE … ESCAPE '\'` pattern matching any text that holds the
    /// query, lowercased, as a literal substring: `%`, `_` and `\` of the
    /// query match only themselves.
    pub fn like_pattern(&self) -> String {
        let mut out = String::with_capacity(self.0.len() + 8);
        out.push('%');
        for c in self.0.to_lowercase().chars() {
            if matches!(c, '%' | '_' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('%');
        out
    }

    /// The query's words, for the memories' full-text index (every word
    /// must match); empty when the query has no word.
    pub fn terms(&self) -> SearchTerms {
        SearchTerms::parse(&self.0)
    }
}

/// The kinds a search asks for: a comma-separated subset of `messages`,
/// `memories` and `delegations`; absent or empty is all of them.
pub fn parse_kinds(raw: Option<&str>) -> Result<BTreeSet<SearchKind>, SearchError> {
    let mut kinds = BTreeSet::new();
    for word in raw.unwrap_or("").split(',').map(str::trim) {
        if word.is_empty() {
            continue;
        }
        let kind = SearchKind::ALL
            .into_iter()
            .find(|k| k.plural() == word)
            .ok_or_else(|| SearchError::UnknownKind(super::truncate_chars(word, 40)))?;
        kinds.insert(kind);
    }
    if kinds.is_empty() {
        kinds.extend(SearchKind::ALL);
    }
    Ok(kinds)
}

/// A hit's id: the activity row's id for a message, a UUID otherwise.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum HitId {
    /// An activity row's id.
    Row(i64),
    /// A memory's or a delegation's id (lowercase, hyphenated: its text
    /// order is its byte order, the order both engines sort it in).
    Uuid(uuid::Uuid),
}

impl fmt::Display for HitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Row(n) => write!(f, "{n}"),
            Self::Uuid(u) => write!(f, "{u}"),
        }
    }
}

/// A hit's place in the merged answer, newest first: by time, then kind,
/// then id, each descending. The cursor is the place of a page's last hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The hit's time.
    pub at: DateTime<Utc>,
    /// Its kind.
    pub kind: SearchKind,
    /// Its id.
    pub id: HitId,
}

impl Ord for Place {
    /// Newest first: the greater place is listed earlier.
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.kind, &self.id).cmp(&(other.at, other.kind, &other.id))
    }
}

impl PartialOrd for Place {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Which rows of one kind come after a cursor at the cursor's instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tie<I> {
    /// Every row of that instant (the kind sorts below the cursor's).
    All,
    /// None (the kind sorts above the cursor's).
    Nothing,
    /// Those whose id is below this one (the cursor's own kind).
    Below(I),
}

impl Tie<HitId> {
    /// The tie as a row id, when the cursor is a message's.
    pub fn rows(self) -> Tie<i64> {
        match self {
            Self::Below(HitId::Row(n)) => Tie::Below(n),
            Self::Below(HitId::Uuid(_)) | Self::Nothing => Tie::Nothing,
            Self::All => Tie::All,
        }
    }

    /// The tie as a UUID, when the cursor is a memory's or a delegation's.
    pub fn uuids(self) -> Tie<uuid::Uuid> {
        match self {
            Self::Below(HitId::Uuid(u)) => Tie::Below(u),
            Self::Below(HitId::Row(_)) | Self::Nothing => Tie::Nothing,
            Self::All => Tie::All,
        }
    }
}

impl Place {
    /// The bound a query of `kind` reads below: rows older than the
    /// place, and at its instant those [`Tie`] says.
    pub fn bound_for(&self, kind: SearchKind) -> (DateTime<Utc>, Tie<HitId>) {
        let tie = match kind.cmp(&self.kind) {
            Ordering::Less => Tie::All,
            Ordering::Greater => Tie::Nothing,
            Ordering::Equal => Tie::Below(self.id.clone()),
        };
        (self.at, tie)
    }

    /// The cursor text: `<microseconds>.<kind>.<id>`.
    pub fn cursor(&self) -> String {
        format!(
            "{}.{}.{}",
            self.at.timestamp_micros(),
            self.kind.as_str(),
            self.id
        )
    }

    /// Reads a cursor [`Place::cursor`] wrote.
    pub fn parse_cursor(raw: &str) -> Result<Self, SearchError> {
        let mut parts = raw.splitn(3, '.');
        let (Some(at), Some(kind), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SearchError::BadCursor);
        };
        let at = at
            .parse::<i64>()
            .ok()
            .and_then(DateTime::<Utc>::from_timestamp_micros)
            .ok_or(SearchError::BadCursor)?;
        let kind = SearchKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or(SearchError::BadCursor)?;
        let id = match kind {
            SearchKind::Message => HitId::Row(id.parse().map_err(|_| SearchError::BadCursor)?),
            _ => HitId::Uuid(id.parse().map_err(|_| SearchError::BadCursor)?),
        };
        Ok(Self { at, kind, id })
    }
}

/// The part of `text` around the first place `needles` (lowercase) match,
/// on one line: up to [`SNIPPET_BEFORE`] characters before it and
/// [`SNIPPET_CHARS`] in all, with `…` where it was cut. The start of the
/// text when no needle matches (a full-text hit on a stemmed form).
pub fn snippet(text: &str, needles: &[String]) -> String {
    let chars: Vec<char> = text
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .collect();
    let lower: Vec<char> = chars
        .iter()
        .map(|c| c.to_lowercase().next().unwrap_or(*c))
        .collect();
    let at = needles
        .iter()
        .filter_map(|n| {
            let n: Vec<char> = n.chars().collect();
            (!n.is_empty())
                .then(|| lower.windows(n.len()).position(|w| w == n.as_slice()))
                .flatten()
        })
        .min()
        .unwrap_or(0);
    let start = at.saturating_sub(SNIPPET_BEFORE);
    let end = (start + SNIPPET_CHARS).min(chars.len());
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    out.extend(&chars[start..end]);
    if end < chars.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_checked_and_its_wildcards_are_literal() {
        assert_eq!(SearchText::parse("  "), Err(SearchError::EmptyQuery));
        assert_eq!(
            SearchText::parse(&"x".repeat(201)),
            Err(SearchError::QueryTooLong(201))
        );
        let q = SearchText::parse(&"é".repeat(200)).unwrap();
        assert_eq!(q.as_str().chars().count(), 200);
        let q = SearchText::parse(" 50%_Off\\x ").unwrap();
        assert_eq!(q.like_pattern(), "%50\\%\\_off\\\\x%");
        assert_eq!(q.terms().terms(), ["50", "off", "x"]);
    }

    #[test]
    fn kinds_are_a_subset_and_none_means_all() {
        let all: BTreeSet<_> = SearchKind::ALL.into_iter().collect();
        assert_eq!(parse_kinds(None), Ok(all.clone()));
        assert_eq!(parse_kinds(Some(" , ")), Ok(all));
        assert_eq!(
            parse_kinds(Some("memories, messages,memories")),
            Ok([SearchKind::Memory, SearchKind::Message].into())
        );
        assert_eq!(
            parse_kinds(Some("messages,files")),
            Err(SearchError::UnknownKind("files".into()))
        );
    }

    #[test]
    fn a_cursor_round_trips_and_bounds_each_kind() {
        let at = DateTime::<Utc>::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let u = uuid::Uuid::new_v4();
        let place = Place {
            at,
            kind: SearchKind::Memory,
            id: HitId::Uuid(u),
        };
        assert_eq!(place.cursor(), format!("1700000000123456.memory.{u}"));
        assert_eq!(Place::parse_cursor(&place.cursor()), Ok(place.clone()));
        assert_eq!(place.bound_for(SearchKind::Message).1, Tie::Nothing);
        assert_eq!(place.bound_for(SearchKind::Delegation).1, Tie::All);
        assert_eq!(place.bound_for(SearchKind::Memory).1.uuids(), Tie::Below(u));
        let row = Place::parse_cursor("5.message.42").unwrap();
        assert_eq!(row.id, HitId::Row(42));
        for bad in [
            "",
            "x.message.1",
            "5.file.1",
            "5.message.x",
            "5.memory.7",
            "5",
        ] {
            assert_eq!(
                Place::parse_cursor(bad),
                Err(SearchError::BadCursor),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_snippet_centres_the_first_match_on_one_line() {
        assert_eq!(
            snippet("Deploy\nthe API", &["api".into()]),
            "Deploy the API"
        );
        let long = format!("{}needle{}", "a".repeat(100), "b".repeat(300));
        let s = snippet(&long, &["needle".into()]);
        assert!(s.starts_with('…') && s.ends_with('…'), "{s}");
        assert_eq!(s.chars().count(), SNIPPET_CHARS + 2);
        assert_eq!(
            s.chars()
                .skip(1 + SNIPPET_BEFORE)
                .take(6)
                .collect::<String>(),
            "needle"
        );
        assert_eq!(snippet("short", &["zzz".into()]), "short");
    }
}
