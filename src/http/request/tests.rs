use super::*;

fn parse(s: &str) -> Result<Parsed, HeadError> {
    parse_request(s.as_bytes(), &Limits::default())
}

fn status(s: &str) -> u16 {
    match parse(s) {
        Ok(Parsed::Complete { .. }) => 200,
        Ok(Parsed::Partial) => 0,
        Ok(Parsed::ExpectsContinue) => 100,
        Ok(Parsed::Streamed { .. }) => 1,
        Err(e) => e.status,
    }
}

#[test]
fn a_large_body_is_streamed_only_when_the_server_streams_bodies() {
    let raw = "POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\nabc";
    let streaming = Limits {
        stream_bodies: true,
        ..Limits::default()
    };
    let Ok(Parsed::Streamed { request, consumed }) = parse_request(raw.as_bytes(), &streaming)
    else {
        panic!("streamed");
    };
    assert_eq!(consumed, raw.len() - 3, "the head only");
    assert_eq!(request.streamed_len(), Some(999_999));
    assert!(request.body().is_empty());
    assert!(request.body_unread());
    assert_eq!(status(raw), 413, "without stream_bodies");
    // A small body still comes with the head.
    let small = "POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
    let Ok(Parsed::Complete { request, .. }) = parse_request(small.as_bytes(), &streaming) else {
        panic!("complete");
    };
    assert_eq!(request.body(), b"abc");
    assert_eq!(request.streamed_len(), None);
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
