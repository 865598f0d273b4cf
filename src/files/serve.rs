//! The responses of the file path: a stored file with its conditional and
//! range answers, a fresh download, a relayed upstream answer, a redirect
//! to the upstream. Content types by extension (never a Content-Encoding).

use std::sync::atomic::Ordering;

use url::Url;

use super::error::{FileError, Mismatch};
use super::{FileStats, Source};
use crate::http::conditional::{etag_matches, if_range_allows, parse_range, RangeRequest};
use crate::http::{Body, FileRange, Method, Request, Response, Stream};
use crate::origin::{OriginError, Streamed};
use crate::storage::verify::VerifiedRead;
use crate::storage::{Stored, StoredBody};

/// Content-Type of a distribution file (never a Content-Encoding).
pub fn file_content_type(name: &str, binary: bool) -> &'static str {
    let lower = name.to_ascii_lowercase();
    if binary || lower.ends_with(".whl") || lower.ends_with(".metadata") {
        "application/octet-stream"
    } else if lower.ends_with(".zip") {
        "application/zip"
    } else if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
        "application/x-tar+gzip"
    } else {
        "application/octet-stream"
    }
}

/// A 302 to the upstream file (a stalled upstream; proxpi's behaviour).
pub fn redirect(url: &Url) -> Response {
    Response::text(302, "the upstream is slow; fetch the file there\n")
        .header("Location", url.as_str().to_owned())
        .header("Cache-Control", "no-store")
        .log_tag("REDIRECT")
}

/// The head of a file answered from a download (tag: MISS or COALESCED).
pub fn fresh(content_type: &'static str, tag: &'static str) -> Response {
    Response::new(200)
        .header("Content-Type", content_type)
        .header("X-Cache", tag)
        .log_tag(tag)
}

/// What a request for a committed file gets, before its body.
pub enum Planned {
    /// A complete answer (304, 416).
    Answer(Response),
    /// `len` bytes from `offset` under `head` (200 or 206).
    Part {
        head: Response,
        offset: u64,
        len: u64,
    },
}

/// Conditional requests and single ranges against a committed file.
pub fn plan(req: &Request, f: &Stored, content_type: &'static str, stats: &FileStats) -> Planned {
    let etag = format!("\"{}\"", f.sha256);
    let last_modified = httpdate::fmt_http_date(f.modified);
    // Each path builds the head once and moves the validators into it.
    let headers = |status: u16, etag: String, last_modified: String| {
        Response::new(status)
            .header("Content-Type", content_type)
            .header("ETag", etag)
            .header("Last-Modified", last_modified)
            .header("Cache-Control", "public, max-age=31536000, immutable")
            .header("Accept-Ranges", "bytes")
            .header("X-Cache", "HIT")
            .log_tag("HIT")
    };
    if etag_matches(req.header("if-none-match"), &etag) {
        return Planned::Answer(headers(304, etag, last_modified));
    }
    let range = if if_range_allows(req.header("if-range"), &etag, &last_modified) {
        parse_range(req.header("range"), f.len)
    } else {
        RangeRequest::Full
    };
    let (status, offset, len, content_range) = match range {
        RangeRequest::Full => (200, 0, f.len, None),
        RangeRequest::Partial(r) => (206, r.start, r.len(), Some(r.content_range(f.len))),
        RangeRequest::Unsatisfiable => {
            return Planned::Answer(
                headers(416, etag, last_modified)
                    .header("Content-Range", format!("bytes */{}", f.len)),
            );
        }
    };
    if *req.method() == Method::Get {
        stats
            .bytes_served_from_cache
            .fetch_add(len, Ordering::Relaxed);
    }
    let mut head = headers(status, etag, last_modified);
    if let Some(cr) = content_range {
        head = head.header("Content-Range", cr);
    }
    Planned::Part { head, offset, len }
}

/// A committed local file: conditional requests, single ranges, sendfile.
/// (A remote one is opened off the worker: `Files::serve_remote`.)
pub fn stored(req: &Request, f: Stored, content_type: &'static str, stats: &FileStats) -> Response {
    let (r, offset, len) = match plan(req, &f, content_type, stats) {
        Planned::Answer(r) => return r,
        Planned::Part { head, offset, len } => (head, offset, len),
    };
    match f.body {
        StoredBody::Local(file) => r.body(FileRange { file, offset, len }),
        StoredBody::Memory(bytes) => {
            // `len` ≤ the stored length, which is these bytes' length.
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
            match bytes.get(start..end) {
                Some(_) => r.body(bytes.slice(start..end)),
                None => Response::text(500, "stored file shorter than recorded\n").log_tag("ERROR"),
            }
        }
        StoredBody::Remote(_) => {
            Response::text(500, "a remote file must be opened off the worker\n").log_tag("ERROR")
        }
    }
}

/// An upstream answer relayed as it is (stream-through, forwarded ranges).
pub fn relayed(
    req: &Request,
    streamed: Streamed,
    source: &Source,
    content_type: &'static str,
) -> Result<Response, FileError> {
    let mut r = match streamed.status {
        200 => Response::new(200),
        206 | 416 => {
            let mut r = Response::new(streamed.status);
            if let Some(cr) = &streamed.content_range {
                r = r.header("Content-Range", cr.clone());
            }
            r
        }
        s => return Err(OriginError::status(&streamed.final_url, s).into()),
    };
    r = r
        .header("Content-Type", content_type)
        .header("X-Cache", "MISS")
        .log_tag("MISS");
    let len = streamed.content_length;
    if *req.method() == Method::Head || streamed.status == 416 {
        return Ok(r.body(Body::Stream(Stream {
            len: if streamed.status == 416 { Some(0) } else { len },
            reader: Box::new(std::io::empty()),
        })));
    }
    if streamed.status == 206 {
        // A part cannot be checked against the whole file's hash.
        return Ok(r.body(Body::Stream(Stream {
            len,
            reader: streamed.body,
        })));
    }
    // A whole file: checked against the index before its last bytes leave.
    let expected = match (len, source.size) {
        (Some(got), Some(want)) if got != want => return Err(Mismatch::Length { got, want }.into()),
        (got, want) => got.or(want),
    };
    Ok(r.body(Body::Stream(Stream {
        len: expected,
        reader: Box::new(VerifiedRead::new(streamed.body, expected, &source.hashes)),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_types() {
        let cases = [
            ("a-1.0-py3-none-any.whl", false, "application/octet-stream"),
            ("a-1.0.tar.gz", false, "application/x-tar+gzip"),
            ("a-1.0.zip", false, "application/zip"),
            ("a-1.0.whl.metadata", false, "application/octet-stream"),
            ("a-1.0.tar.gz", true, "application/octet-stream"),
            ("a-1.0.tar.bz2", false, "application/octet-stream"),
        ];
        for (f, binary, want) in cases {
            assert_eq!(file_content_type(f, binary), want, "{f}");
        }
    }
}
