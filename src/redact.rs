//! URLs that are safe to show. `SafeUrl` drops a URL's user name and
//! password when it is built, so its `Display` (logs, error bodies, pages,
//! `/metrics`) cannot leak credentials: there is nothing left to leak.

use std::fmt;

use url::Url;

/// A URL without credentials, for display. Built from any URL; a URL that
/// carried credentials shows `***@` in their place, so a reader can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafeUrl(Url);

impl SafeUrl {
    pub fn new(url: &Url) -> SafeUrl {
        if url.username().is_empty() && url.password().is_none() {
            return SafeUrl(url.clone());
        }
        let mut u = url.clone();
        let _ = u.set_password(None);
        let _ = u.set_username("***");
        SafeUrl(u)
    }

    /// Redacts a string that may or may not parse as a URL (a bad setting).
    pub fn text(s: &str) -> String {
        match Url::parse(s.trim()) {
            Ok(u) => SafeUrl::new(&u).to_string(),
            Err(_) => match s.rsplit_once('@') {
                Some((_, host)) => format!("***@{host}"),
                None => s.to_owned(),
            },
        }
    }
}

impl From<&Url> for SafeUrl {
    fn from(u: &Url) -> SafeUrl {
        SafeUrl::new(u)
    }
}

impl fmt::Display for SafeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// Error texts from the HTTP stack may quote URLs; keep them without
/// credentials.
pub fn strip_urls(s: &str) -> String {
    s.split_whitespace()
        .map(
            |w| match Url::parse(w.trim_matches(|c| c == '"' || c == '\'')) {
                Ok(u) if u.has_host() => SafeUrl::new(&u).to_string(),
                _ if w.contains('@') => "***".to_owned(),
                _ => w.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_display() {
        let cases = [
            (
                "https://user:secret@h.example/simple/",
                "https://***@h.example/simple/",
            ),
            ("https://user@h.example/x", "https://***@h.example/x"),
            ("https://:secret@h.example/x", "https://***@h.example/x"),
            ("https://h.example/x", "https://h.example/x"),
        ];
        for (raw, want) in cases {
            let u = Url::parse(raw).unwrap();
            assert_eq!(SafeUrl::new(&u).to_string(), want, "{raw}");
            assert!(!format!("{:?}", SafeUrl::new(&u)).contains("secret"));
        }
        assert!(!SafeUrl::text("garbage user:secret@host").contains("secret"));
        assert!(!SafeUrl::text("ftp://u:secret@x/").contains("secret"));
        assert!(!strip_urls("failed to reach https://u:secret@h.example/ now").contains("secret"));
        assert!(!strip_urls("x u:secret@h y").contains("secret"));
    }
}
