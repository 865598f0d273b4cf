//! Conditional and range requests (RFC 9110 §13, §14) as pure functions:
//! single byte ranges, `If-Range`, `If-None-Match`, and the complete 304.
//! Multiple ranges and malformed `Range` headers are ignored (the whole
//! file is sent), which the RFC allows.

use super::Response;

/// An inclusive byte range within a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// `bytes a-b/total`.
    pub fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{total}", self.start, self.end)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    Full,
    Partial(ByteRange),
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Interprets a `Range` header against a file of `len` bytes.
pub fn parse_range(header: Option<&str>, len: u64) -> RangeRequest {
    let Some(spec) = header.map(str::trim).and_then(|h| h.strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.trim().is_empty(), b.trim().is_empty()) {
        // -n: the last n bytes.
        (true, false) => match num(b) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if len == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Partial(ByteRange {
                start: len.saturating_sub(n),
                end: len - 1,
            }),
            None => RangeRequest::Full,
        },
        // a-: from a to the end.
        (false, true) => match num(a) {
            Some(start) if start >= len => RangeRequest::Unsatisfiable,
            Some(start) => RangeRequest::Partial(ByteRange {
                start,
                end: len - 1,
            }),
            None => RangeRequest::Full,
        },
        (false, false) => match (num(a), num(b)) {
            (Some(start), Some(end)) if start > end => RangeRequest::Full,
            (Some(start), Some(_)) if start >= len => RangeRequest::Unsatisfiable,
            (Some(start), Some(end)) => RangeRequest::Partial(ByteRange {
                start,
                end: end.min(len - 1),
            }),
            _ => RangeRequest::Full,
        },
        (true, true) => RangeRequest::Full,
    }
}

/// Whether a `Range` may be honoured given `If-Range` (strong ETag match or
/// the exact Last-Modified date).
pub fn if_range_allows(if_range: Option<&str>, etag: &str, last_modified: &str) -> bool {
    match if_range.map(str::trim) {
        None => true,
        Some(v) if v.starts_with('"') => v == etag,
        Some(v) if v.starts_with("W/") => false,
        Some(v) => v == last_modified,
    }
}

/// `If-None-Match` against a strong ETag (weak comparison, as RFC 9110
/// requires for this header).
pub fn etag_matches(header: Option<&str>, etag: &str) -> bool {
    let Some(h) = header else { return false };
    let bare = etag.trim_start_matches("W/");
    h.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == bare)
}

/// A 304 with every header of the 200 it stands for, and no body.
pub fn not_modified(full: Response) -> Response {
    full.headers().fold(Response::new(304), |r, (k, v)| {
        r.header(k.to_owned(), v.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    fn p(start: u64, end: u64) -> RangeRequest {
        Partial(ByteRange { start, end })
    }

    #[test]
    fn range_table() {
        let cases: &[(Option<&str>, u64, RangeRequest)] = &[
            (None, 100, Full),
            (Some("bytes=0-9"), 100, p(0, 9)),
            (Some("bytes=10-"), 100, p(10, 99)),
            (Some("bytes=-10"), 100, p(90, 99)),
            (Some("bytes=-10000"), 100, p(0, 99)),
            (Some("bytes=90-200"), 100, p(90, 99)),
            (Some("bytes=99-99"), 100, p(99, 99)),
            (Some("bytes=100-"), 100, Unsatisfiable),
            (Some("bytes=100-200"), 100, Unsatisfiable),
            (Some("bytes=-0"), 100, Unsatisfiable),
            (Some("bytes=0-"), 0, Unsatisfiable),
            (Some("bytes=-5"), 0, Unsatisfiable),
            (Some("bytes=5-1"), 100, Full),
            (Some("bytes=0-1,5-6"), 100, Full),
            (Some("bytes=abc"), 100, Full),
            (Some("bytes=-"), 100, Full),
            (Some("bytes=1-x"), 100, Full),
            (Some("bytes=+1-2"), 100, Full),
            (Some("items=0-1"), 100, Full),
            (Some("bytes=99999999999999999999999-"), 100, Full),
            (Some("bytes=0-99999999999999999999999"), 100, Full),
            (Some(" bytes= 1 - 2 "), 100, p(1, 2)),
        ];
        for (h, len, want) in cases {
            assert_eq!(parse_range(*h, *len), *want, "{h:?} of {len}");
        }
        assert_eq!(
            ByteRange { start: 90, end: 99 }.content_range(100),
            "bytes 90-99/100"
        );
        assert_eq!(ByteRange { start: 90, end: 99 }.len(), 10);
    }

    #[test]
    fn if_range_table() {
        let etag = "\"abc\"";
        let lm = "Wed, 01 Jan 2025 00:00:00 GMT";
        assert!(if_range_allows(None, etag, lm));
        assert!(if_range_allows(Some("\"abc\""), etag, lm));
        assert!(!if_range_allows(Some("\"abd\""), etag, lm));
        assert!(!if_range_allows(Some("W/\"abc\""), etag, lm));
        assert!(if_range_allows(Some(lm), etag, lm));
        assert!(!if_range_allows(
            Some("Thu, 02 Jan 2025 00:00:00 GMT"),
            etag,
            lm
        ));
    }

    #[test]
    fn etags() {
        assert!(etag_matches(Some("\"abc\""), "\"abc\""));
        assert!(etag_matches(Some("\"x\", \"abc\""), "\"abc\""));
        assert!(etag_matches(Some("W/\"abc\""), "\"abc\""));
        assert!(etag_matches(Some("*"), "\"abc\""));
        assert!(!etag_matches(Some("\"abd\""), "\"abc\""));
        assert!(!etag_matches(None, "\"abc\""));
    }

    #[test]
    fn not_modified_keeps_every_header_and_drops_the_body() {
        let full = Response::new(200)
            .header("ETag", "\"e\"")
            .header("Cache-Control", "max-age=60")
            .header("Vary", "Accept")
            .body("hello");
        let r = not_modified(full);
        assert_eq!(r.status(), 304);
        assert_eq!(r.get_header("etag"), Some("\"e\""));
        assert_eq!(r.get_header("cache-control"), Some("max-age=60"));
        assert_eq!(r.get_header("vary"), Some("Accept"));
        assert!(matches!(r.body_ref(), super::super::Body::Empty));
    }
}
