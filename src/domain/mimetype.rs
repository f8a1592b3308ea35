//! Sanitized mimetypes: what the server will echo back as `Content-Type`
//! when a workspace downloads a staged file, so it must never carry header
//! injection or parameters a browser could misread.

use std::fmt;

use serde::Serialize;

/// The type given to anything that is not a clean `type/subtype`.
pub(super) const OCTET_STREAM: &str = "application/octet-stream";

/// A lowercase `type/subtype` of RFC 9110 token characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Mimetype(String);

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

impl Mimetype {
    /// Parses a part's `Content-Type`: parameters are stripped and the rest
    /// lowercased; anything that is not `type/subtype` of token characters,
    /// or that holds a control byte anywhere, becomes
    /// `application/octet-stream`.
    pub fn parse(raw: Option<&str>) -> Self {
        let Some(raw) = raw else {
            return Self::octet_stream();
        };
        if raw.chars().any(|c| c.is_control()) {
            return Self::octet_stream();
        }
        let essence = raw
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.split_once('/') {
            Some((ty, sub))
                if !ty.is_empty()
                    && !sub.is_empty()
                    && ty.chars().all(is_tchar)
                    && sub.chars().all(is_tchar) =>
            {
                Self(essence)
            }
            _ => Self::octet_stream(),
        }
    }

    /// `application/octet-stream`.
    pub fn octet_stream() -> Self {
        Self(OCTET_STREAM.to_owned())
    }

    /// The mimetype as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Mimetype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitization_table() {
        let cases = [
            (Some("text/plain"), "text/plain"),
            (Some("text/plain; charset=utf-8"), "text/plain"),
            (Some("Image/PNG"), "image/png"),
            (Some("  application/json  "), "application/json"),
            (
                Some("application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            ),
            (Some("text/html\r\nSet-Cookie: a=b"), OCTET_STREAM),
            (Some("text/plain\n"), OCTET_STREAM),
            (Some("text/plain\r"), OCTET_STREAM),
            (Some("text/pl\0ain"), OCTET_STREAM),
            (Some("text"), OCTET_STREAM),
            (Some("/plain"), OCTET_STREAM),
            (Some("text/"), OCTET_STREAM),
            (Some("text/plain/extra"), OCTET_STREAM),
            (Some("text /plain"), OCTET_STREAM),
            (Some("tëxt/plain"), OCTET_STREAM),
            (Some("text/(plain)"), OCTET_STREAM),
            (Some(""), OCTET_STREAM),
            (None, OCTET_STREAM),
            (
                Some("multipart/form-data; boundary=xyz"),
                "multipart/form-data",
            ),
            (
                Some("application/x-www-form-urlencoded;"),
                "application/x-www-form-urlencoded",
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(Mimetype::parse(raw).as_str(), want, "parse({raw:?})");
        }
    }
}

/// Property tests: whatever a client sends, the type is a clean token pair
/// or `application/octet-stream`, and parsing it again changes nothing.
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_content_type_parses_to_a_clean_one(raw in proptest::option::of(any::<String>())) {
            let parsed = Mimetype::parse(raw.as_deref());
            let s = parsed.as_str();
            let (ty, sub) = s.split_once('/').expect("type/subtype");
            prop_assert!(!ty.is_empty() && !sub.is_empty());
            prop_assert!(s.chars().all(|c| c == '/' || is_tchar(c)), "{:?}", s);
            prop_assert_eq!(s.to_ascii_lowercase(), s);
            prop_assert_eq!(Mimetype::parse(Some(s)), parsed.clone());
        }

        #[test]
        fn parameters_and_case_are_dropped(ty in "[a-zA-Z]{1,10}", sub in "[a-zA-Z+.-]{1,10}", param in "[ -~]{0,20}") {
            let parsed = Mimetype::parse(Some(&format!("{ty}/{sub}; {param}")));
            prop_assert_eq!(parsed.as_str(), format!("{ty}/{sub}").to_ascii_lowercase());
        }
    }
}
