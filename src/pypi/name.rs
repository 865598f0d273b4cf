//! `ProjectName`: a PEP 503-normalised project name, only obtainable by
//! parsing. Every cache key and URL uses it; raw names never travel further
//! than the route that parsed them.

use std::fmt;

/// Longest project name accepted (PyPI's limit is far below this).
pub const MAX_NAME_LEN: usize = 200;

/// A normalised project name: lower-case, runs of `-`, `_`, `.` folded to
/// one `-`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectName(Box<str>);

/// Why a string is not a project name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty project name")]
    Empty,
    #[error("project name longer than {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("project name {0:?} has a character outside A-Z, a-z, 0-9, '-', '_', '.'")]
    BadChar(String),
    #[error("project name {0:?} must start and end with a letter or digit")]
    BadEdge(String),
}

impl ProjectName {
    /// Parses and normalises a name (PEP 508 name syntax, PEP 503
    /// normalisation).
    pub fn parse(raw: &str) -> Result<ProjectName, NameError> {
        if raw.is_empty() {
            return Err(NameError::Empty);
        }
        if raw.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(NameError::BadChar(raw.to_owned()));
        }
        let edge_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
        if !edge_ok(raw.bytes().next()) || !edge_ok(raw.bytes().last()) {
            return Err(NameError::BadEdge(raw.to_owned()));
        }
        let mut out = String::with_capacity(raw.len());
        let mut in_sep = false;
        for c in raw.chars() {
            if matches!(c, '-' | '_' | '.') {
                if !in_sep {
                    out.push('-');
                }
                in_sep = true;
            } else {
                out.push(c.to_ascii_lowercase());
                in_sep = false;
            }
        }
        Ok(ProjectName(out.into()))
    }

    /// Normalises a name found in an upstream project list, which may be
    /// looser than PEP 508; `None` for names roxpi could never route.
    pub fn from_upstream(raw: &str) -> Option<ProjectName> {
        ProjectName::parse(raw.trim()).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Names sorted and without duplicates: the order of every project list
/// roxpi keeps or serves.
pub fn sorted_unique(names: impl IntoIterator<Item = ProjectName>) -> Vec<ProjectName> {
    let mut v: Vec<ProjectName> = names.into_iter().collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_table() {
        let cases = [
            ("numpy", "numpy"),
            ("NumPy", "numpy"),
            ("Jinja2", "jinja2"),
            ("zope.interface", "zope-interface"),
            ("Foo__Bar", "foo-bar"),
            ("foo-_.-bar", "foo-bar"),
            ("a", "a"),
            ("A.B-C_D", "a-b-c-d"),
            ("typing_extensions", "typing-extensions"),
        ];
        for (raw, want) in cases {
            assert_eq!(ProjectName::parse(raw).unwrap().as_str(), want, "{raw}");
        }
    }

    #[test]
    fn rejections() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        let cases: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            (&long, NameError::TooLong),
            ("..", NameError::BadEdge("..".into())),
            ("a/b", NameError::BadChar("a/b".into())),
            ("a\\b", NameError::BadChar("a\\b".into())),
            ("a\0b", NameError::BadChar("a\0b".into())),
            ("a b", NameError::BadChar("a b".into())),
            ("ü", NameError::BadChar("ü".into())),
            ("%2e%2e", NameError::BadChar("%2e%2e".into())),
            ("-a", NameError::BadEdge("-a".into())),
            ("a.", NameError::BadEdge("a.".into())),
            ("_", NameError::BadEdge("_".into())),
        ];
        for (raw, want) in cases {
            assert_eq!(ProjectName::parse(raw).unwrap_err(), *want, "{raw:?}");
        }
        // "..", "." alone are never names, so they can never become paths.
        assert!(ProjectName::parse(".").is_err());
    }
}
