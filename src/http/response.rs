//! Responses: what a handler returns (status, validated headers, a body) and
//! the pure framing rules that turn it into bytes on the wire — the status
//! line and head, `Content-Length` versus chunked versus close-delimited, and
//! chunk headers. Writing to a socket lives in `conn`.

use std::borrow::Cow;
use std::fs::File;
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;

use super::request::Version;

/// A response body.
pub enum Body {
    /// No body (`Content-Length: 0` where a body is allowed).
    Empty,
    /// Shared bytes, written together with the head when small.
    Bytes(Bytes),
    /// `len` bytes of a file from `offset`, sent with `sendfile`.
    File(FileRange),
    /// A body produced while it is sent. A read error, an early end of a
    /// known length, or more bytes than announced cut the connection: the
    /// client never sees a complete-looking wrong body. Its reads may
    /// block, so it is sent by a transfer thread.
    Stream(Stream),
    /// A stream whose reads never block: `WouldBlock` means "nothing yet",
    /// and the `StreamReady` says when to try again. Sent by the workers
    /// like a file; while it waits for bytes it holds no thread.
    Ready(Box<ReadyStream>),
}

/// A `Body::Ready` stream and its readiness.
pub struct ReadyStream {
    pub stream: Stream,
    pub ready: std::sync::Arc<dyn StreamReady>,
}

/// The readiness of a `Body::Ready` stream.
pub trait StreamReady: Send + Sync {
    /// Calls `wake` once more bytes may be readable (at once if they
    /// already are, or the stream ended or failed).
    fn subscribe(&self, wake: Box<dyn FnOnce() + Send>);
    /// The stream's reads will block from now on (it switched to a source
    /// that does, e.g. the upstream): send the rest on a transfer thread.
    fn needs_thread(&self) -> bool;
}

/// Part of an open file.
pub struct FileRange {
    pub file: Arc<File>,
    pub offset: u64,
    pub len: u64,
}

/// A streamed body of known or unknown length.
pub struct Stream {
    pub len: Option<u64>,
    pub reader: Box<dyn Read + Send>,
}

impl Body {
    /// The body's length, when it is known before sending.
    pub fn len(&self) -> Option<u64> {
        match self {
            Body::Empty => Some(0),
            Body::Bytes(b) => Some(b.len() as u64),
            Body::File(f) => Some(f.len),
            Body::Stream(s) => s.len,
            Body::Ready(r) => r.stream.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }
}

/// A response header: name and value, borrowed when static.
pub type Header = (Cow<'static, str>, Cow<'static, str>);

/// The pseudo-header carrying a custom reason phrase (not a token: no
/// handler can set it through `header`).
const REASON: &str = ":reason";

/// Header names the server writes itself; a handler's values are ignored.
const RESERVED: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "date",
];

/// What a handler returns.
pub struct Response {
    status: u16,
    headers: Vec<Header>,
    body: Body,
    /// A header that failed validation; the server answers 500 instead.
    invalid: Option<String>,
    /// A short word for the access log (e.g. HIT, MISS).
    log_tag: Option<&'static str>,
    /// The answer is not ready: park the request (see `later`), or read
    /// its body first (see `receive`).
    pending: Option<Box<Pending>>,
}

/// What a response stands for when it is not an answer yet.
pub(crate) enum Pending {
    Later(super::later::Later),
    Receive(Box<dyn super::body::BodySink>),
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::with_capacity(8),
            body: Body::Empty,
            invalid: None,
            log_tag: None,
            pending: None,
        }
    }

    /// A `text/plain` response (error pages).
    pub fn text(status: u16, text: impl Into<String>) -> Response {
        Response::new(status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(Bytes::from(text.into()))
    }

    /// Adds a header. A name that is not an HTTP token or a value holding
    /// CR, LF or NUL is not written: the response becomes a 500 instead, so
    /// a bug can never split a response. Framing headers (Content-Length,
    /// Transfer-Encoding, Connection, Keep-Alive, Date) are the server's and
    /// are ignored here.
    pub fn header(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) -> Response {
        let name = name.into();
        let value = value.into();
        // A `&'static str` is the program's own text: checked in tests and
        // debug builds; what is made at run time is checked always.
        let valid = |text: &Cow<'static, str>, check: fn(&str) -> bool| match text {
            Cow::Borrowed(t) => {
                debug_assert!(check(t), "invalid static header text {t:?}");
                true
            }
            Cow::Owned(t) => check(t),
        };
        if !valid(&name, is_token) || !valid(&value, is_field_value) {
            log::error!("refusing invalid response header {name:?}: {value:?}");
            self.invalid = Some(name.into_owned());
            return self;
        }
        if RESERVED.iter().any(|r| name.eq_ignore_ascii_case(r)) {
            log::debug!("ignoring handler-set framing header {name}");
            return self;
        }
        self.headers.push((name, value));
        self
    }

    /// Replaces the standard reason phrase of the status line (`400 the
    /// digest does not match`): what twine prints for a refused upload, as
    /// PyPI does. Kept to printable ASCII, at most 200 bytes.
    pub fn reason_phrase(mut self, text: &str) -> Response {
        let clean: String = text
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .take(200)
            .collect();
        self.headers
            .push((Cow::Borrowed(REASON), Cow::Owned(clean)));
        self
    }

    /// `header`, replacing any value set before.
    pub fn replace_header(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) -> Response {
        let name = name.into();
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        self.header(name, value)
    }

    pub fn body(mut self, body: impl Into<Body>) -> Response {
        self.body = body.into();
        self
    }

    pub fn log_tag(mut self, tag: &'static str) -> Response {
        self.log_tag = Some(tag);
        self
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// The header fields (not the reason phrase).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .filter(|(n, _)| !n.starts_with(':'))
            .map(|(n, v)| (n.as_ref(), v.as_ref()))
    }

    pub fn get_header(&self, name: &str) -> Option<&str> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn body_ref(&self) -> &Body {
        &self.body
    }

    pub fn into_body(self) -> Body {
        self.body
    }

    /// An answer to come: the connection waits without a thread until the
    /// later's waker is called or its deadline passes.
    pub fn later(later: super::later::Later) -> Response {
        let mut r = Response::new(200);
        r.pending = Some(Box::new(Pending::Later(later)));
        r
    }

    /// Takes a streamed request body (`Request::streamed_len`): the server
    /// reads it without blocking, hands it to `sink` as it arrives, and
    /// answers with what `BodySink::finish` returns.
    pub fn receive(sink: Box<dyn super::body::BodySink>) -> Response {
        let mut r = Response::new(200);
        r.pending = Some(Box::new(Pending::Receive(sink)));
        r
    }

    /// Whether this is an answer to come (`Response::later`).
    pub fn is_later(&self) -> bool {
        matches!(self.pending.as_deref(), Some(Pending::Later(_)))
    }

    pub(crate) fn take_later(&mut self) -> Option<super::later::Later> {
        match self.pending.take().map(|b| *b) {
            Some(Pending::Later(later)) => Some(later),
            other => {
                self.pending = other.map(Box::new);
                None
            }
        }
    }

    pub(crate) fn take_sink(&mut self) -> Option<Box<dyn super::body::BodySink>> {
        match self.pending.take().map(|b| *b) {
            Some(Pending::Receive(sink)) => Some(sink),
            other => {
                self.pending = other.map(Box::new);
                None
            }
        }
    }

    pub(crate) fn take_log_tag(&self) -> Option<&'static str> {
        self.log_tag
    }

    /// The response actually sent: a 500 if a header was invalid.
    pub(crate) fn checked(self) -> Response {
        match &self.invalid {
            Some(name) => Response::text(500, format!("invalid response header {name}\n")),
            None => self,
        }
    }

    pub(crate) fn into_parts(self) -> (u16, Vec<Header>, Body) {
        (self.status, self.headers, self.body)
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Body {
        Body::Bytes(b)
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Body {
        Body::Bytes(Bytes::from_static(s.as_bytes()))
    }
}

impl From<String> for Body {
    fn from(s: String) -> Body {
        Body::Bytes(Bytes::from(s))
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Body {
        Body::Bytes(Bytes::from(v))
    }
}

impl From<FileRange> for Body {
    fn from(f: FileRange) -> Body {
        Body::File(f)
    }
}

impl From<Stream> for Body {
    fn from(s: Stream) -> Body {
        Body::Stream(s)
    }
}

/// RFC 9110 token characters.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A field value roxpi is willing to emit: visible ASCII/UTF-8, spaces and
/// tabs, never CR, LF or NUL (response splitting).
pub fn is_field_value(s: &str) -> bool {
    !s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => match status / 100 {
            1 => "Informational",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            _ => "Server Error",
        },
    }
}

/// How the body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (1xx, 204, 304): no length header either.
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked` (HTTP/1.1, unknown length).
    Chunked,
    /// Unknown length for an HTTP/1.0 client: the end of the body is the end
    /// of the connection.
    CloseDelimited,
}

/// Chooses the framing of a response (pure).
pub fn framing(status: u16, body_len: Option<u64>, version: Version) -> Framing {
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Framing::None;
    }
    match (body_len, version) {
        (Some(n), _) => Framing::Length(n),
        (None, Version::Http11) => Framing::Chunked,
        (None, Version::Http10) => Framing::CloseDelimited,
    }
}

/// What the `Connection` header of a response says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// Keep the connection; the value is the idle timeout announced in
    /// `Keep-Alive: timeout=N`.
    KeepAlive {
        timeout_secs: u64,
    },
    Close,
}

/// Everything the head needs besides the handler's status and headers.
pub struct HeadParams<'a> {
    pub version: Version,
    pub framing: Framing,
    pub persistence: Persistence,
    pub date: &'a str,
}

/// Serialises a response head (pure). Handler headers are already validated.
pub fn write_head(out: &mut Vec<u8>, status: u16, headers: &[Header], params: &HeadParams<'_>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_number(out, u64::from(status));
    out.push(b' ');
    let phrase = headers
        .iter()
        .find(|(n, _)| n.starts_with(':'))
        .map_or(reason(status), |(_, v)| v);
    out.extend_from_slice(phrase.as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(params.date.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name.starts_with(':') {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match params.framing {
        Framing::None | Framing::CloseDelimited => {}
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_number(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    match params.persistence {
        Persistence::Close => out.extend_from_slice(b"Connection: close\r\n"),
        Persistence::KeepAlive { timeout_secs } => {
            if params.version == Version::Http10 {
                out.extend_from_slice(b"Connection: keep-alive\r\n");
            }
            out.extend_from_slice(b"Keep-Alive: timeout=");
            push_number(out, timeout_secs);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a decimal number without an intermediate String (hot path).
fn push_number(out: &mut Vec<u8>, n: u64) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{n}");
}

/// The header of one chunk: the length in hex and CRLF.
pub fn chunk_header(len: usize) -> String {
    format!("{len:x}\r\n")
}

/// The last chunk and the end of the (empty) trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16, headers: &[(&'static str, &str)], params: HeadParams<'_>) -> String {
        let headers: Vec<Header> = headers
            .iter()
            .map(|(n, v)| (Cow::Borrowed(*n), Cow::Owned(v.to_string())))
            .collect();
        let mut out = Vec::new();
        write_head(&mut out, status, &headers, &params);
        String::from_utf8(out).unwrap()
    }

    const DATE: &str = "Wed, 25 Nov 2026 18:00:00 GMT";

    #[test]
    fn head_with_length_and_keep_alive() {
        let got = head(
            200,
            &[("Content-Type", "application/json")],
            HeadParams {
                version: Version::Http11,
                framing: Framing::Length(31),
                persistence: Persistence::KeepAlive { timeout_secs: 120 },
                date: DATE,
            },
        );
        assert_eq!(
            got,
            "HTTP/1.1 200 OK\r\nDate: Wed, 25 Nov 2026 18:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: 31\r\nKeep-Alive: timeout=120\r\n\r\n"
        );
    }

    #[test]
    fn a_custom_reason_phrase_replaces_the_standard_one_and_stays_one_line() {
        let r = Response::text(400, "x").reason_phrase("digest\r\nSet-Cookie: a=1 mismatch");
        let (status, headers, _) = r.into_parts();
        let mut out = Vec::new();
        let params = HeadParams {
            version: Version::Http11,
            framing: Framing::Length(1),
            persistence: Persistence::Close,
            date: DATE,
        };
        write_head(&mut out, status, &headers, &params);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 400 digest??Set-Cookie: a=1 mismatch\r\nDate: "),
            "{text}"
        );
        assert!(!text.contains(":reason"), "{text}");
        assert_eq!(text.matches("\r\n").count(), 6, "{text}");
        let r = Response::text(409, "x").reason_phrase("already");
        assert!(r.headers().all(|(n, _)| !n.starts_with(':')));
    }

    #[test]
    fn head_variants() {
        type Case = (
            u16,
            Version,
            Framing,
            Persistence,
            &'static [&'static str],
            &'static [&'static str],
        );
        let cases: &[Case] = &[
            (
                200,
                Version::Http11,
                Framing::Chunked,
                Persistence::Close,
                &["Transfer-Encoding: chunked\r\n", "Connection: close\r\n"],
                &["Content-Length"],
            ),
            (
                200,
                Version::Http10,
                Framing::Length(0),
                Persistence::KeepAlive { timeout_secs: 60 },
                &[
                    "Connection: keep-alive\r\n",
                    "Keep-Alive: timeout=60\r\n",
                    "Content-Length: 0\r\n",
                ],
                &["Transfer-Encoding"],
            ),
            (
                304,
                Version::Http11,
                Framing::None,
                Persistence::KeepAlive { timeout_secs: 60 },
                &["HTTP/1.1 304 Not Modified\r\n"],
                &["Content-Length", "Transfer-Encoding", "Connection"],
            ),
            (
                200,
                Version::Http10,
                Framing::CloseDelimited,
                Persistence::Close,
                &["Connection: close\r\n"],
                &["Content-Length", "Transfer-Encoding"],
            ),
        ];
        for (status, version, framing, persistence, has, lacks) in cases {
            let got = head(
                *status,
                &[],
                HeadParams {
                    version: *version,
                    framing: *framing,
                    persistence: *persistence,
                    date: DATE,
                },
            );
            assert!(got.ends_with("\r\n\r\n"), "{got}");
            for h in *has {
                assert!(got.contains(h), "{got:?} should contain {h:?}");
            }
            for h in *lacks {
                assert!(!got.contains(h), "{got:?} should not contain {h:?}");
            }
        }
    }

    #[test]
    fn framing_table() {
        use Version::*;
        let cases = [
            (200, Some(5), Http11, Framing::Length(5)),
            (200, Some(0), Http10, Framing::Length(0)),
            (200, None, Http11, Framing::Chunked),
            (200, None, Http10, Framing::CloseDelimited),
            (404, None, Http11, Framing::Chunked),
            (204, Some(0), Http11, Framing::None),
            (304, Some(10), Http11, Framing::None),
            (101, None, Http11, Framing::None),
        ];
        for (status, len, version, want) in cases {
            assert_eq!(
                framing(status, len, version),
                want,
                "{status} {len:?} {version:?}"
            );
        }
    }

    #[test]
    fn chunk_headers() {
        assert_eq!(chunk_header(1), "1\r\n");
        assert_eq!(chunk_header(255), "ff\r\n");
        assert_eq!(chunk_header(65536), "10000\r\n");
        assert_eq!(LAST_CHUNK, b"0\r\n\r\n");
    }

    #[test]
    fn invalid_headers_turn_into_500() {
        let cases = [
            ("X-Ok", "fine value", 200),
            ("X-Bad", "a\r\nSet-Cookie: x", 500),
            ("X-Bad", "a\nb", 500),
            ("X-Bad", "a\0b", 500),
            ("Bad Name", "v", 500),
            ("", "v", 500),
            ("Bad:Name", "v", 500),
        ];
        for (name, value, want) in cases {
            let r = Response::new(200)
                .header(name.to_string(), value.to_string())
                .checked();
            assert_eq!(r.status(), want, "{name:?}: {value:?}");
            if want == 500 {
                assert!(r.headers().all(|(_, v)| !v.contains('\n')));
            }
        }
    }

    #[test]
    fn framing_headers_from_handlers_are_ignored() {
        let r = Response::new(200)
            .header("Content-Length", "5")
            .header("Transfer-Encoding", "chunked")
            .header("connection", "close")
            .header("X-Kept", "1");
        let names: Vec<&str> = r.headers().map(|(n, _)| n).collect();
        assert_eq!(names, ["X-Kept"]);
    }

    #[test]
    fn body_lengths() {
        assert_eq!(Body::Empty.len(), Some(0));
        assert_eq!(Body::from("abc").len(), Some(3));
        let s = Stream {
            len: None,
            reader: Box::new(std::io::empty()),
        };
        assert_eq!(Body::Stream(s).len(), None);
    }
}
