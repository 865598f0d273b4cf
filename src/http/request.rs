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
    /// A request body the server reads and hands over (413 beyond).
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 16 * 1024,
            max_target: 8 * 1024,
            max_body: 64 * 1024,
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
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
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
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Parsed, HeadError> {
        parse_request(s.as_bytes(), &Limits::default())
    }

    fn status(s: &str) -> u16 {
        match parse(s) {
            Ok(Parsed::Complete { .. }) => 200,
            Ok(Parsed::Partial) => 0,
            Ok(Parsed::ExpectsContinue) => 100,
            Err(e) => e.status,
        }
    }

    #[test]
    fn targets_in_origin_form() {
        let cases = [
            ("/index/six/", Some("/index/six/")),
            ("*", Some("*")),
            ("http://x/index/six/?a=1", Some("/index/six/?a=1")),
            ("https://x:5000", Some("/")),
            ("http://x?a=1", Some("/?a=1")),
            ("HTTP://x/y", Some("/y")),
            ("ftp://x/y", None),
            ("x/y", None),
            ("pypi.org:443", None),
        ];
        for (target, want) in cases {
            assert_eq!(origin_form(target).as_deref(), want, "{target}");
        }
    }

    #[test]
    fn head_outcomes() {
        let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(9000));
        let long_target_partial = format!("GET /{}", "a".repeat(9000));
        let big_head = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "b".repeat(17000));
        let big_partial = format!("GET / HTTP/1.1\r\nx: {}", "b".repeat(17000));
        let many: String = (0..65).map(|i| format!("h{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        let just_enough: String = (0..63).map(|i| format!("h{i}: v\r\n")).collect();
        let just_enough = format!("GET / HTTP/1.1\r\nHost: x\r\n{just_enough}\r\n");
        let cases: &[(&str, u16)] = &[
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200),
            ("GET / HTTP/1.0\r\n\r\n", 200),
            ("GET / HTTP/1.0\r\nHost: x\r\n\r\n", 200),
            // Host: exactly one in HTTP/1.1, at most one in 1.0.
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", 400),
            // Expect: 100-continue, or 417.
            (
                "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
                100,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nab",
                200,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\na",
                0,
            ),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
                200,
            ),
            ("GET / HTTP/1.1\r\nHost: x\r\nExpect: tea\r\n\r\n", 417),
            // Absolute-form targets are accepted (RFC 9112 §3.2.2).
            ("GET http://x/index/six/ HTTP/1.1\r\nHost: x\r\n\r\n", 200),
            ("GET HTTPS://x:5000/ HTTP/1.1\r\nHost: x\r\n\r\n", 200),
            ("GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("GET index/six/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (
                "CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n",
                501,
            ),
            ("GET / HTTP/1.1\r\nHost: x\r\n", 0),
            ("GET / HT", 0),
            ("", 0),
            (
                "DELETE /cache/list HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                200,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab",
                0,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab",
                200,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n",
                413,
            ),
            ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
                200,
            ),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
            ("GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nx: a\rb\r\n\r\n", 400),
            ("\x00\x01garbage\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\n\r\n", 400),
            (&long_target, 414),
            (&long_target_partial, 414),
            (&big_head, 431),
            (&big_partial, 431),
            (&many, 431),
            (&just_enough, 200),
        ];
        for (input, want) in cases {
            let shown: String = input.chars().take(60).collect();
            assert_eq!(status(input), *want, "input {shown:?}");
        }
    }

    #[test]
    fn complete_request_fields() {
        let raw = "GET /simple/a%2Bb/?format=json HTTP/1.1\r\nHost: h\r\nAccept: text/html\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next";
        let Ok(Parsed::Complete { request, consumed }) = parse(raw) else {
            panic!("expected a complete request");
        };
        assert_eq!(&raw[consumed..], "GET /next");
        assert_eq!(request.method(), &Method::Get);
        assert_eq!(request.path(), "/simple/a%2Bb/");
        assert_eq!(request.query(), Some("format=json"));
        assert_eq!(request.header("ACCEPT"), Some("text/html"));
        assert_eq!(
            request.header_values("x-two").collect::<Vec<_>>(),
            ["1", "2"]
        );
        assert_eq!(request.version(), Version::Http11);
        assert!(request.body().is_empty());
    }

    #[test]
    fn small_body_is_kept_and_consumed() {
        let raw = "PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET";
        let Ok(Parsed::Complete { request, consumed }) = parse(raw) else {
            panic!("expected a complete request");
        };
        assert_eq!(request.body(), b"abc");
        assert_eq!(&raw[consumed..], "GET");
    }

    #[test]
    fn unknown_method_is_kept() {
        let Ok(Parsed::Complete { request, .. }) = parse("BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n")
        else {
            panic!("expected a complete request");
        };
        assert_eq!(request.method().as_str(), "BREW");
    }

    #[test]
    fn keep_alive_table() {
        use Version::*;
        let cases: &[(Version, &[&str], bool)] = &[
            (Http11, &[], true),
            (Http11, &["close"], false),
            (Http11, &["Close"], false),
            (Http11, &["keep-alive"], true),
            (Http11, &["foo, close"], false),
            (Http11, &["upgrade", "CLOSE"], false),
            (Http10, &[], false),
            (Http10, &["keep-alive"], true),
            (Http10, &["Keep-Alive"], true),
            (Http10, &["keep-alive, close"], false),
        ];
        for (version, values, want) in cases {
            assert_eq!(
                keep_alive(*version, values.iter().copied()),
                *want,
                "{version:?} {values:?}"
            );
        }
    }
}
