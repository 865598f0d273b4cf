//! The ONE mapping from a failure to an HTTP answer: status, body and
//! `Retry-After`, for the page path and the file path alike. Exhaustive
//! matches, so a new error variant cannot go unmapped.
//!
//! | failure | status | Retry-After |
//! |---|---|---|
//! | upstream timeout | 504 | 30 |
//! | upstream refused / unreachable | 502 | 30 |
//! | upstream 5xx or other bad status | 502 | 30 |
//! | a listed file the upstream does not have (404/410) | 502 | 60 |
//! | garbled page, broken file body | 502 | 30 |
//! | offline and not cached | 502 | — |
//! | upstream down (circuit breaker open) | 502 | the probe interval |
//! | link or redirect to a refused address (private, link-local…) | 502 | — |
//! | hash or length mismatch | 502 | 10 |
//! | local write error with no way around it | 503 | 10 |
//! | every fetch, download or open slot busy | 503 | 5 |
//!
//! Never a 500 for an upstream problem. (A project in no index is not a
//! failure: it is a 404, answered by the page route.)

use crate::files::FileError;
use crate::http::Response;
use crate::origin::OriginError;

/// What went wrong, on which path.
#[derive(Debug, Clone, Copy)]
pub enum Failure<'a> {
    Page(&'a OriginError),
    File(&'a FileError),
}

/// Status and `Retry-After` seconds of an upstream error. `0`: no
/// `Retry-After` — pip (urllib3) sleeps for it before each of its retries,
/// so it is sent only where waiting can help, never for a refusal that
/// will not change (measured: pip 24.0 spent 5 minutes retrying a refused
/// address with `Retry-After: 60`).
fn origin(e: &OriginError) -> (u16, u64) {
    match e {
        OriginError::Timeout { .. } => (504, 30),
        OriginError::Connect { .. } => (502, 30),
        OriginError::Status {
            status: 404 | 410, ..
        } => (502, 60),
        OriginError::Status { .. } => (502, 30),
        OriginError::Garbage { .. } | OriginError::Body { .. } => (502, 30),
        OriginError::Offline { .. } => (502, 0),
        OriginError::Down { retry, .. } => (502, *retry),
        OriginError::Forbidden { .. } => (502, 0),
        OriginError::Busy { .. } | OriginError::Descriptors { .. } => (503, 5),
    }
}

/// Status and `Retry-After` seconds of a failure.
pub fn classify(f: &Failure<'_>) -> (u16, u64) {
    match f {
        Failure::Page(e) => origin(e),
        Failure::File(e) => match e {
            FileError::Origin(e) => origin(e),
            FileError::Verify(_) => (502, 10),
            FileError::Local(_) => (503, 10),
            FileError::NoLength => (502, 30),
            FileError::Busy => (503, 5),
        },
    }
}

fn message(f: &Failure<'_>) -> String {
    match f {
        Failure::File(FileError::Origin(e))
            if matches!(
                **e,
                OriginError::Status {
                    status: 404 | 410,
                    ..
                }
            ) =>
        {
            format!("the file is listed but the upstream does not have it: {e}")
        }
        Failure::Page(e) => e.to_string(),
        Failure::File(e) => e.to_string(),
    }
}

/// The answer for a failure.
pub fn respond(f: &Failure<'_>) -> Response {
    let (status, retry_after) = classify(f);
    let r = Response::text(status, format!("{}\n", message(f)))
        .header("Cache-Control", "no-store")
        .log_tag("ERROR");
    if retry_after == 0 {
        r
    } else {
        r.header("Retry-After", retry_after.to_string())
    }
}

#[cfg(test)]
mod tests;
