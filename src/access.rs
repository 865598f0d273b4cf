//! Tokens: who may upload, and who may read a protected route or hosted
//! index. Clients present them as HTTP Basic credentials (pip and uv put
//! `user:token@` of an index URL there, and read `.netrc` and keyring;
//! twine and uv publish send `__token__` and the token) or as a Bearer
//! token. Compared in constant time; never shown (`Debug`) or logged.

use base64::Engine;

use crate::http::{Request, Response};

/// A secret token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// Equal, in time that depends only on the lengths.
    pub fn matches(&self, given: &str) -> bool {
        let (a, b) = (given.as_bytes(), self.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// Whether the request carries this token: a Bearer token, or Basic
    /// credentials whose password is it (or whose user is it, with no
    /// password: `http://TOKEN@host/`).
    pub fn presented_in(&self, req: &Request) -> bool {
        presented(req).iter().any(|t| self.matches(t))
    }
}

/// The candidate tokens of a request's `Authorization`.
pub fn presented(req: &Request) -> Vec<String> {
    let Some((scheme, value)) = req
        .header("authorization")
        .and_then(|v| v.trim().split_once(' '))
    else {
        return Vec::new();
    };
    if scheme.eq_ignore_ascii_case("bearer") {
        return vec![value.trim().to_owned()];
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Vec::new();
    }
    let Some(text) = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
    else {
        return Vec::new();
    };
    match text.split_once(':') {
        Some((user, "")) => vec![user.to_owned()],
        Some((_, password)) => vec![password.to_owned()],
        None => vec![text],
    }
}

/// Whether a request has credentials at all.
pub fn has_credentials(req: &Request) -> bool {
    req.header("authorization").is_some()
}

/// 401 for a protected route read without its token: pip and uv then
/// use their keyring, `.netrc` or prompt.
pub fn read_refused() -> Response {
    Response::text(
        401,
        "a read token is needed: http://user:TOKEN@host/… in the index URL, or Authorization: Bearer TOKEN\n",
    )
    .header("WWW-Authenticate", "Basic realm=\"roxpi\"")
    .header("Cache-Control", "no-store")
    .log_tag("AUTH")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(auth: &str) -> Request {
        Request::new("GET", "/index/").with_header("Authorization", auth)
    }

    #[test]
    fn tokens_are_found_in_basic_and_bearer_credentials() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let t = Token("s3cret".into());
        let cases = [
            (format!("Basic {}", b64("__token__:s3cret")), true),
            (format!("basic {}", b64("alice:s3cret")), true),
            (format!("Basic {}", b64("s3cret:")), true),
            (format!("Basic {}", b64("s3cret:other")), false),
            (format!("Basic {}", b64("alice:s3cre")), false),
            ("Bearer s3cret".to_owned(), true),
            ("bearer  s3cret ".to_owned(), true),
            ("Bearer s3cret2".to_owned(), false),
            ("Basic !!!".to_owned(), false),
            ("Digest s3cret".to_owned(), false),
        ];
        for (auth, want) in cases {
            assert_eq!(t.presented_in(&with(&auth)), want, "{auth}");
        }
        assert!(!t.presented_in(&Request::new("GET", "/")));
        assert_eq!(format!("{t:?}"), "Token(…)");
    }
}
