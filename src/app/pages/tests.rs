use super::*;

#[test]
fn refresh_requests_per_policy() {
    use ClientRefresh::{Any, NoCache, Off};
    // (headers, no-cache policy, any, off)
    let cases = [
        (vec![], false, false, false),
        (vec![("Cache-Control", "no-cache")], true, true, false),
        (vec![("Cache-Control", "max-age=0")], false, true, false),
        (
            vec![("Cache-Control", "public, MAX-AGE=0")],
            false,
            true,
            false,
        ),
        (vec![("Cache-Control", "max-age=600")], false, false, false),
        (
            vec![("Cache-Control", "max-age=0, No-Cache")],
            true,
            true,
            false,
        ),
        (vec![("Pragma", "no-cache")], true, true, false),
        (vec![("Cache-Control", "no-store")], false, false, false),
    ];
    for (headers, no_cache, any, off) in cases {
        let mut r = Request::new("GET", "/index/x/");
        for (k, v) in &headers {
            r = r.with_header(k, v);
        }
        assert_eq!(wants_refresh(&r, NoCache), no_cache, "{headers:?} no-cache");
        assert_eq!(wants_refresh(&r, Any), any, "{headers:?} any");
        assert_eq!(wants_refresh(&r, Off), off, "{headers:?} off");
    }
}

#[test]
fn compression_is_deterministic_and_decodes() {
    use std::io::Read;
    let body = b"<html>hello hello hello</html>".to_vec();
    let a = compress(body.clone(), Coding::Gzip);
    let b = compress(body.clone(), Coding::Gzip);
    assert_eq!(a, b);
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&a[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, body);
    let d = compress(body.clone(), Coding::Deflate);
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(&d[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, body);
    assert_eq!(compress(body.clone(), Coding::Identity), body);
}

#[test]
fn query_params() {
    assert_eq!(
        query_param(
            Some("format=application%2Fvnd.pypi.simple.v1%2Bjson"),
            "format"
        )
        .as_deref(),
        Some("application/vnd.pypi.simple.v1+json")
    );
    assert_eq!(
        query_param(Some("a=1&format=text/html"), "format").as_deref(),
        Some("text/html")
    );
    assert_eq!(query_param(Some("a=1"), "format"), None);
    assert_eq!(query_param(None, "format"), None);
}
