//! Probes answered by the accept thread itself. A liveness or readiness
//! request whose whole head has already arrived when its connection is
//! accepted (what a prober's fresh connection usually looks like under
//! load) is answered at once: never behind busy workers or queued work,
//! and never shed at the connection cap. The answer comes from the
//! server's `Probe` function, which must not block (atomics, no lock held
//! over I/O). Any other connection goes on to the workers untouched: its
//! bytes were only peeked.

use std::sync::Arc;

use rustix::net::{RecvFlags, SendFlags};

use super::conn::Conn;
use super::request::{parse_request, Limits, Method, Parsed};
use super::response::reason;

/// A probe's answer: a status and a one-line JSON body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeAnswer {
    pub status: u16,
    pub body: String,
}

/// Answers a probe path (`/health`, `/ready`…), or `None` for any other
/// path. Called on the accept thread: it must not block.
pub type Probe = Arc<dyn Fn(&str) -> Option<ProbeAnswer> + Send + Sync>;

/// A complete `GET` or `HEAD` request head in `bytes`: whether it is a
/// HEAD, and its path (without the query). Pure. The head is judged by the
/// workers' own parser (`parse_request`), so a request they refuse (no
/// `Host`, two of them…) is never answered here: it goes to a worker.
pub fn probe_target(bytes: &[u8]) -> Option<(bool, String)> {
    let Ok(Parsed::Complete { request, .. }) = parse_request(bytes, &Limits::default()) else {
        return None;
    };
    let head = match request.method() {
        Method::Get => false,
        Method::Head => true,
        _ => return None,
    };
    Some((head, request.path().to_owned()))
}

/// The path of a `GET` or `HEAD` request line at the start of `bytes`
/// (without the query), read without allocating. Pure.
fn probe_line_path(bytes: &[u8]) -> Option<&str> {
    let line = bytes.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if !matches!(parts.next()?, "GET" | "HEAD") {
        return None;
    }
    let target = parts.next()?;
    Some(target.split('?').next().unwrap_or(target))
}

/// The bytes of an answer (closing the connection).
pub fn answer_bytes(a: &ProbeAnswer, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        a.status,
        reason(a.status),
        a.body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(a.body.as_bytes());
    }
    out
}

/// Answers `conn` on this thread if it holds a whole probe request;
/// returns the answer's status, or `None` (nothing was consumed).
pub(crate) fn try_answer(conn: &Conn, probe: &Probe) -> Option<u16> {
    let mut buf = [0u8; 2048];
    let n = match rustix::net::recv(
        &conn.stream,
        &mut buf,
        RecvFlags::PEEK | RecvFlags::DONTWAIT,
    ) {
        Ok((n, _)) if n > 0 => n,
        _ => return None,
    };
    // The request line first, without allocating: most connections are
    // not probes, and their heads are parsed once, by a worker.
    let answer = probe(probe_line_path(&buf[..n])?)?;
    let (head_only, _) = probe_target(&buf[..n])?;
    // Consume the request (closing with unread bytes would reset the
    // connection before the client reads the answer).
    let _ = rustix::net::recv(&conn.stream, &mut buf[..n], RecvFlags::DONTWAIT);
    let bytes = answer_bytes(&answer, head_only);
    // A fresh socket's send buffer takes a few hundred bytes at once.
    let _ = rustix::net::send(
        &conn.stream,
        &bytes,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    );
    Some(answer.status)
}

/// Whether `conn` has bytes to read within `limit` (a short wait on the
/// accept thread, only for connections beyond the cap).
pub(crate) fn wait_readable(conn: &Conn, limit: std::time::Duration) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        &conn.stream,
        rustix::event::PollFlags::IN,
    )];
    let t = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: i64::try_from(limit.as_nanos())
            .unwrap_or(0)
            .min(999_999_999),
    };
    matches!(rustix::event::poll(&mut fds, Some(&t)), Ok(n) if n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Case<'a> = (&'a [u8], Option<(bool, &'a str)>);

    #[test]
    fn probe_targets() {
        let cases: &[Case] = &[
            (
                b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
                Some((false, "/health")),
            ),
            (
                b"HEAD /ready?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n",
                Some((true, "/ready")),
            ),
            (b"GET /health HTTP/1.0\r\n\r\n", Some((false, "/health"))),
            // What a worker answers 400 is never answered here.
            (b"GET /health HTTP/1.1\r\n\r\n", None),
            (b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", None),
            (
                b"GET /health HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                None,
            ),
            // Not complete yet: left to the workers.
            (b"GET /health HTTP/1.1\r\nHost: x\r\n", None),
            (b"POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n", None),
            (b"garbage\r\n\r\n", None),
            (b"", None),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                probe_target(bytes).as_ref().map(|(h, p)| (*h, p.as_str())),
                *want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn request_lines_give_their_path_without_a_parse() {
        let cases: [(&[u8], Option<&str>); 6] = [
            (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", Some("/health")),
            (b"HEAD /ready?x=1 HTTP/1.1\r\n", Some("/ready")),
            (b"POST /health HTTP/1.1\r\n", None),
            (b"GET", None),
            (b"\xff\xfe", None),
            (b"", None),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                probe_line_path(bytes),
                want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn answers_are_complete_responses() {
        let a = ProbeAnswer {
            status: 503,
            body: "{\"ready\":false}".into(),
        };
        let text = String::from_utf8(answer_bytes(&a, false)).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(head.contains("Connection: close"));
        let head_only = String::from_utf8(answer_bytes(&a, true)).unwrap();
        assert!(head_only.ends_with("\r\n\r\n"));
        assert!(head_only.contains("Content-Length: 15"));
    }
}
