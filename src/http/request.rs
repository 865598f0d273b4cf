//! Request heads: parsing a buffered request with httparse under the server's
//! limits, and the keep-alive decision. Pure functions, no I/O: the worker
//! feeds bytes in and gets a `Request`, "need more bytes", or a status to
//! answer with.

use std::fmt;
use std::net::SocketAddr;

/// Most header fields a request may carry (431 beyond).
pub const MAX_HEADERS: usize = 64;

/// Size limits applied while parsing a request.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Whole request head, request line included (431 beyond).
    pub max_head: usize,
    /// Request target (414 beyond).
    pub max_target: usize,
    /// A request body the server reads and hands over with the request.
    /// Beyond it: 413, or, with `stream_bodies`, the handler sees the head
    /// first and may take the body as a stream (`Response::receive`).
    pub max_body: usize,
    /// Hand heads with larger bodies to the handler (`Parsed::Streamed`).
    pub stream_bodies: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 16 * 1024,
            max_target: 8 * 1024,
            max_body: 64 * 1024,
            stream_bodies: false,
        }
    }
}

impl Limits {
    /// The most bytes a connection ever needs buffered for one request.
    pub fn max_buffered(&self) -> usize {
        self.max_head + self.max_body
    }
}

/// The request method. Unknown methods are kept by name so that a handler
/// can answer 405 with `Allow`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Other(Box<str>),
}

impl Method {
    fn parse(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            other => Method::Other(other.into()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// One parsed request. Header names are stored lower-case.
#[derive(Clone, Debug)]
pub struct Request {
    method: Method,
    target: String,
    version: Version,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    peer: Option<SocketAddr>,
    /// Received over TLS.
    tls: bool,
    /// A body over `Limits::max_body`, not read with the head: its length,
    /// and whether a `BodySink` has received all of it.
    streamed: Option<Streamed>,
}

/// The body of a request too large to buffer (`Parsed::Streamed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Streamed {
    len: u64,
    received: bool,
}

impl Request {
    /// Builds a request without a socket (handler unit tests).
    pub fn new(method: &str, target: &str) -> Request {
        Request {
            method: Method::parse(method),
            target: target.to_owned(),
            version: Version::Http11,
            headers: Vec::new(),
            body: Vec::new(),
            peer: None,
            tls: false,
            streamed: None,
        }
    }

    /// Adds a header (builder style, for tests and adapters).
    pub fn with_header(mut self, name: &str, value: &str) -> Request {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        self
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The raw request target (`/path?query`), not decoded.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The path part of the target, not decoded.
    pub fn path(&self) -> &str {
        match self.target.find('?') {
            Some(i) => &self.target[..i],
            None => &self.target,
        }
    }

    /// The query string without the `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.find('?').map(|i| &self.target[i + 1..])
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// The first value of a header (case-insensitive name), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Every value of a header, in order (repeated fields stay separate).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The request body (at most `Limits::max_body`; usually empty).
    /// Empty for a streamed body: see `streamed_len`.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The length of a body too large to come with the head: the handler
    /// takes it with `Response::receive`, or the connection closes after
    /// its answer.
    pub fn streamed_len(&self) -> Option<u64> {
        self.streamed.map(|s| s.len)
    }

    /// Marks a request as carrying a body of `len` bytes still unread
    /// (the server, and handler tests).
    pub fn set_streamed(&mut self, len: u64) {
        self.streamed = Some(Streamed {
            len,
            received: false,
        });
    }

    pub(crate) fn body_received(&mut self) {
        if let Some(s) = &mut self.streamed {
            s.received = true;
        }
    }

    /// A streamed body was not (all) read: the connection cannot carry
    /// another request.
    pub(crate) fn body_unread(&self) -> bool {
        self.streamed.is_some_and(|s| !s.received)
    }

    /// Whether the client asked for `100 Continue` before its body.
    pub(crate) fn expects_continue(&self) -> bool {
        self.header_values("expect")
            .any(|v| v.trim().eq_ignore_ascii_case("100-continue"))
    }

    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Whether the request came over TLS (`https://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Marks the request as received over TLS (the server, and tests).
    pub fn set_tls(&mut self, tls: bool) {
        self.tls = tls;
    }

    pub(crate) fn set_peer(&mut self, peer: SocketAddr) {
        self.peer = Some(peer);
    }

    /// Whether the client lets the connection stay open after this request
    /// (HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with
    /// `Connection: keep-alive`).
    pub fn wants_keep_alive(&self) -> bool {
        keep_alive(self.version, self.header_values("connection"))
    }
}

/// The keep-alive rule of RFC 9112 §9.3, on the `Connection` field values.
pub fn keep_alive<'a>(version: Version, connection: impl Iterator<Item = &'a str>) -> bool {
    let mut close = false;
    let mut keep = false;
    for token in connection.flat_map(|v| v.split(',')) {
        let token = token.trim();
        if token.eq_ignore_ascii_case("close") {
            close = true;
        } else if token.eq_ignore_ascii_case("keep-alive") {
            keep = true;
        }
    }
    match version {
        _ if close => false,
        Version::Http11 => true,
        Version::Http10 => keep,
    }
}

/// The outcome of parsing the bytes buffered so far.
#[derive(Debug)]
pub enum Parsed {
    /// A whole request (head and body); `consumed` bytes belong to it.
    Complete { request: Request, consumed: usize },
    /// More bytes are needed.
    Partial,
    /// The head asks `Expect: 100-continue` and its body has not arrived:
    /// answer `100 Continue` (once), then read on.
    ExpectsContinue,
    /// A head whose body is over `max_body` (with `stream_bodies`): the
    /// handler decides whether to take the body; `consumed` is the head.
    Streamed { request: Request, consumed: usize },
}

/// A request the server must refuse: the status to answer with and why.
/// The connection is closed after the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadError {
    pub status: u16,
    pub reason: String,
}

impl HeadError {
    fn new(status: u16, reason: impl Into<String>) -> HeadError {
        HeadError {
            status,
            reason: reason.into(),
        }
    }
}

// Long: one pass over the head, each rule of RFC 9112 in order; split, the order would be lost.
/// Parses one request from the start of `buf`.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Parsed, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return partial_limits(buf, limits).map(|()| Parsed::Partial);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::new(
                431,
                format!("more than {MAX_HEADERS} header fields"),
            ))
        }
        Err(e) => {
            return Err(HeadError::new(400, format!("malformed request head: {e}")));
        }
    };
    if head_len > limits.max_head {
        return Err(too_large_head(limits));
    }
    let raw_target = req.path.unwrap_or("/");
    if raw_target.len() > limits.max_target {
        return Err(too_long_target(limits));
    }
    if req.method == Some("CONNECT") {
        return Err(HeadError::new(
            501,
            "CONNECT is not supported: roxpi is an index server, not a forward proxy",
        ));
    }
    let target = origin_form(raw_target).ok_or_else(|| {
        HeadError::new(
            400,
            "a request target must be a path or an absolute http(s) URL",
        )
    })?;
    let version = match req.version {
        Some(0) => Version::Http10,
        _ => Version::Http11,
    };
    let mut content_length: Option<u64> = None;
    let mut hosts = 0;
    let mut expects_continue = false;
    let mut header_list = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
        }
        if h.name.eq_ignore_ascii_case("expect") {
            // RFC 9110 §10.1.1: 100-continue is the only expectation.
            if !h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                return Err(HeadError::new(
                    417,
                    "the only expectation served is 100-continue",
                ));
            }
            expects_continue = true;
        }
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HeadError::new(
                501,
                "request bodies with Transfer-Encoding are not supported",
            ));
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| HeadError::new(400, "invalid Content-Length"))?;
            if content_length.is_some_and(|old| old != n) {
                return Err(HeadError::new(400, "conflicting Content-Length fields"));
            }
            content_length = Some(n);
        }
        header_list.push((h.name.to_ascii_lowercase(), h.value.to_vec()));
    }
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1, at most one in 1.0.
    if hosts > 1 || (hosts == 0 && version == Version::Http11) {
        return Err(HeadError::new(
            400,
            "an HTTP/1.1 request needs exactly one Host header",
        ));
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > limits.max_body as u64 && limits.stream_bodies {
        let mut request = Request {
            method: Method::parse(req.method.unwrap_or("GET")),
            target: target.into_owned(),
            version,
            headers: header_list,
            body: Vec::new(),
            peer: None,
            tls: false,
            streamed: None,
        };
        request.set_streamed(body_len);
        return Ok(Parsed::Streamed {
            request,
            consumed: head_len,
        });
    }
    if body_len > limits.max_body as u64 {
        return Err(HeadError::new(
            413,
            format!("request body over {} bytes", limits.max_body),
        ));
    }
    // Fits in usize: bounded by max_body just above.
    let end = head_len + body_len as usize;
    if buf.len() < end {
        if expects_continue && buf.len() == head_len {
            return Ok(Parsed::ExpectsContinue);
        }
        return Ok(Parsed::Partial);
    }
    let request = Request {
        method: Method::parse(req.method.unwrap_or("GET")),
        target: target.into_owned(),
        version,
        headers: header_list,
        body: buf[head_len..end].to_vec(),
        peer: None,
        tls: false,
        streamed: None,
    };
    Ok(Parsed::Complete {
        request,
        consumed: end,
    })
}

/// Limits that can already be decided on an incomplete head.
fn partial_limits(buf: &[u8], limits: &Limits) -> Result<(), HeadError> {
    let line_end = buf.iter().position(|&b| b == b'\n');
    let request_line = line_end.unwrap_or(buf.len());
    // "GET " + target + " HTTP/1.1": a request line much longer than the
    // target limit means the target is too long.
    if request_line > limits.max_target + 32 {
        return Err(too_long_target(limits));
    }
    if buf.len() > limits.max_head {
        return Err(too_large_head(limits));
    }
    Ok(())
}

fn too_large_head(limits: &Limits) -> HeadError {
    HeadError::new(431, format!("request head over {} bytes", limits.max_head))
}

/// The origin-form (`/path?query`) of a request target: itself, or the
/// path of an absolute-form target (`http://host/path`, RFC 9112 §3.2.2:
/// a server must accept it), or `*` (OPTIONS). `None` for anything else.
fn origin_form(target: &str) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    if target.starts_with('/') || target == "*" {
        return Some(Cow::Borrowed(target));
    }
    let scheme_end = target.find("://")?;
    if !matches!(
        target[..scheme_end].to_ascii_lowercase().as_str(),
        "http" | "https"
    ) {
        return None;
    }
    let rest = &target[scheme_end + 3..];
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => Some(Cow::Borrowed(&rest[i..])),
        // `http://host?q` and `http://host`: the path is `/`.
        Some(i) => Some(Cow::Owned(format!("/{}", &rest[i..]))),
        None => Some(Cow::Borrowed("/")),
    }
}

fn too_long_target(limits: &Limits) -> HeadError {
    HeadError::new(
        414,
        format!("request target over {} bytes", limits.max_target),
    )
}

#[cfg(test)]
mod tests;
