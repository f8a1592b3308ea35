//! Sanitized file names: the same rule the workspace side applies, so a
//! `platform-pending:` URI and the file finally written on the agent's disk
//! carry the same name whichever path handled the upload.

use std::fmt;

use serde::Serialize;

/// Longest sanitized name, in characters.
pub(super) const MAX_LEN: usize = 100;
/// Longest extension (with its dot) kept when a long name is cut.
pub(super) const MAX_EXT_LEN: usize = 16;

/// A file name that is safe to use as the last component of a path on any
/// platform: only `[A-Za-z0-9._-]`, at most 100 characters, never empty,
/// `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Filename(String);

impl Filename {
    /// Applies the sanitization rule of the API contract:
    /// take the base name (after the last `/` or `\`), spaces become `_`,
    /// every character outside `[A-Za-z0-9._-]` becomes `_`, the result is
    /// cut to 100 characters keeping an extension of at most 16, and `""`,
    /// `"."`, `".."` become `"file"`.
    pub fn sanitize(raw: &str) -> Self {
        let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
        let cleaned: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
            return Self("file".to_owned());
        }
        if cleaned.len() <= MAX_LEN {
            return Self(cleaned);
        }
        // Only ASCII is left, so byte offsets are character offsets.
        let (stem, ext) = split_extension(&cleaned);
        let ext = if ext.len() <= MAX_EXT_LEN { ext } else { "" };
        let keep = MAX_LEN - ext.len();
        let stem = if ext.is_empty() { &cleaned[..] } else { stem };
        Self(format!("{}{}", &stem[..keep.min(stem.len())], ext))
    }

    /// The sanitized name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Splits `name` into stem and extension (with its dot) the way Python's
/// `os.path.splitext` does: leading dots belong to the stem, so `.bashrc`
/// has no extension.
fn split_extension(name: &str) -> (&str, &str) {
    let first_non_dot = name.find(|c| c != '.').unwrap_or(name.len());
    match name[first_non_dot..].rfind('.') {
        Some(pos) => name.split_at(first_non_dot + pos),
        None => (name, ""),
    }
}

impl fmt::Display for Filename {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Filename {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitization_table() {
        let long_stem = "a".repeat(150);
        let long_ext = format!("{}.{}", "b".repeat(120), "x".repeat(20));
        let cases: Vec<(String, String)> = vec![
            ("report.pdf".into(), "report.pdf".into()),
            ("my report.pdf".into(), "my_report.pdf".into()),
            ("../../etc/passwd".into(), "passwd".into()),
            (
                "..\\..\\windows\\system32\\cmd.exe".into(),
                "cmd.exe".into(),
            ),
            ("/absolute/path/to/file.txt".into(), "file.txt".into()),
            ("dir/".into(), "file".into()),
            ("".into(), "file".into()),
            (".".into(), "file".into()),
            ("..".into(), "file".into()),
            ("...".into(), "...".into()),
            (".bashrc".into(), ".bashrc".into()),
            ("naïve café.txt".into(), "na_ve_caf_.txt".into()),
            ("日本語.md".into(), "___.md".into()),
            ("emoji😀.png".into(), "emoji_.png".into()),
            ("a\r\nb.txt".into(), "a__b.txt".into()),
            ("nul\0byte.bin".into(), "nul_byte.bin".into()),
            ("semi;colon&amp.sh".into(), "semi_colon_amp.sh".into()),
            ("quote\"s'.txt".into(), "quote_s_.txt".into()),
            ("tab\tname.csv".into(), "tab_name.csv".into()),
            (
                "UPPER-lower_1.2.3.tar.gz".into(),
                "UPPER-lower_1.2.3.tar.gz".into(),
            ),
            ("$(rm -rf ~).txt".into(), "__rm_-rf___.txt".into()),
            (
                format!("{long_stem}.pdf"),
                format!("{}.pdf", "a".repeat(96)),
            ),
            (long_stem.clone(), "a".repeat(100)),
            (long_ext.clone(), long_ext[..100].to_owned()),
            (
                "C:\\Users\\me\\Desktop\\notes.txt".into(),
                "notes.txt".into(),
            ),
        ];
        for (raw, want) in &cases {
            let got = Filename::sanitize(raw);
            assert_eq!(got.as_str(), want, "sanitize({raw:?})");
            assert!(got.as_str().len() <= MAX_LEN, "length of sanitize({raw:?})");
        }
        assert!(cases.len() >= 20);
    }

    #[test]
    fn sanitizing_twice_changes_nothing() {
        for raw in ["a b/c d.txt", "..", "x\u{7f}y", &"z".repeat(300)] {
            let once = Filename::sanitize(raw);
            assert_eq!(Filename::sanitize(once.as_str()), once, "case {raw:?}");
        }
    }
}

/// Property tests: whatever a client sends, the name is safe and stable.
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_name_sanitizes_to_a_safe_stable_one(raw in any::<String>()) {
            let name = Filename::sanitize(&raw);
            let s = name.as_str();
            prop_assert!(!s.is_empty() && s.len() <= MAX_LEN, "{:?}", s);
            prop_assert!(s != "." && s != "..");
            prop_assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')), "{:?}", s);
            prop_assert_eq!(Filename::sanitize(s), name.clone());
        }

        #[test]
        fn long_names_keep_a_short_extension(stem in "[a-z]{101,300}", ext in "[a-z]{1,15}") {
            let name = Filename::sanitize(&format!("{stem}.{ext}"));
            prop_assert_eq!(name.as_str().len(), MAX_LEN);
            let dotted = format!(".{}", ext);
            prop_assert!(name.as_str().ends_with(&dotted));
        }
    }
}
