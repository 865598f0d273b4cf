//! The index API through the real binary against the fake upstream: an
//! equivalent of proxpi's integration suite (PROXPI.md §4), then caching,
//! coalescing, stale copies, status mapping, strategies and credentials.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::fake_index::{hex, proxpi_data, FakeIndex, Fault, Mode};
use crate::util::{metric, request, start_roxpi, within, ChildServer, Reply};

const LIMIT: Duration = Duration::from_secs(120);
const V1_JSON: &str = "application/vnd.pypi.simple.v1+json";
const LATEST_JSON: &str = "application/vnd.pypi.simple.latest+json";
const V1_HTML: &str = "application/vnd.pypi.simple.v1+html";
const ENC: (&str, &str) = ("Accept-Encoding", "gzip, deflate");

struct Setup {
    fake: FakeIndex,
    roxpi: ChildServer,
    _home: tempfile::TempDir,
}

impl Setup {
    fn addr(&self) -> SocketAddr {
        self.roxpi.addr
    }
}

/// proxpi's harness: root TTL 15 s, one extra with TTL 10 s.
fn setup(extra_env: &[(&str, &str)]) -> Setup {
    let fake = FakeIndex::start(proxpi_data());
    let root = fake.url("root");
    let extra = fake.url("extra");
    let mut env = vec![
        ("ROXPI_INDEX_URL", root.as_str()),
        ("ROXPI_EXTRA_INDEX_URLS", extra.as_str()),
        ("ROXPI_INDEX_TTL", "15"),
        ("ROXPI_EXTRA_INDEX_TTLS", "10"),
    ];
    env.extend_from_slice(extra_env);
    let (roxpi, home) = start_roxpi(&env);
    Setup {
        fake,
        roxpi,
        _home: home,
    }
}

fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(addr, "GET", path, headers)
}

fn invalidate_all(addr: SocketAddr) {
    for p in [
        "/cache/list",
        "/cache/proxpi",
        "/cache/numpy",
        "/cache/scipy",
    ] {
        assert_eq!(request(addr, "DELETE", p, &[]).status, 200);
    }
}

/// An anchor: href, text, attributes.
type Anchor = (String, String, Vec<(String, String)>);

/// Every `<a href>` and its text in an HTML page, with attributes.
fn anchors(html: &str) -> Vec<Anchor> {
    let mut out = Vec::new();
    let mut current: Option<(String, Vec<(String, String)>)> = None;
    let mut text = String::new();
    for token in html5gum::Tokenizer::new(html).flatten() {
        match token {
            html5gum::Token::StartTag(t) if t.name.as_slice() == b"a" => {
                let attrs: Vec<(String, String)> = t
                    .attributes
                    .iter()
                    .map(|(k, v)| {
                        (
                            String::from_utf8_lossy(k).into_owned(),
                            String::from_utf8_lossy(v).into_owned(),
                        )
                    })
                    .collect();
                let href = attrs
                    .iter()
                    .find(|(k, _)| k == "href")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                current = Some((href, attrs));
                text.clear();
            }
            html5gum::Token::String(s) if current.is_some() => {
                text.push_str(&String::from_utf8_lossy(&s))
            }
            html5gum::Token::EndTag(t) if t.name.as_slice() == b"a" => {
                if let Some((href, attrs)) = current.take() {
                    out.push((href, text.clone(), attrs));
                }
            }
            _ => {}
        }
    }
    out
}

fn title(html: &str) -> String {
    let start = html.find("<title>").map(|i| i + 7).unwrap_or(0);
    let end = html[start..]
        .find("</title>")
        .map(|i| start + i)
        .unwrap_or(start);
    html[start..end].to_owned()
}

fn assert_vary(r: &Reply) {
    let vary = r.header("vary").unwrap_or_default().to_ascii_lowercase();
    assert!(
        vary.contains("accept") && vary.contains("accept-encoding"),
        "Vary: {vary}"
    );
}

fn hash_matches(fragment_or_pair: &str, body: &[u8]) {
    let (name, value) = fragment_or_pair.split_once('=').expect("name=value");
    assert_eq!(name, "sha256", "roxpi publishes sha256");
    assert_eq!(
        hex(&Sha256::digest(body)),
        value,
        "hash of the served bytes"
    );
}

/// proxpi `test_list` and `test_list_json`.
#[test]
fn proxpi_suite_project_list() {
    within(LIMIT, || {
        let s = setup(&[]);
        for mode in [Mode::Html, Mode::HtmlWithoutType, Mode::Json] {
            s.fake.set_mode(mode);
            for accept in ["text/html", V1_HTML] {
                invalidate_all(s.addr());
                let r = get(s.addr(), "/index/", &[("Accept", accept), ENC]);
                assert_eq!(r.status, 200, "{mode:?} {accept}");
                assert!(r.header("content-type").unwrap().starts_with("text/html"));
                assert!(matches!(
                    r.header("content-encoding"),
                    Some("gzip" | "deflate")
                ));
                assert_vary(&r);
                let html = r.text();
                assert!(html.starts_with("<!DOCTYPE html>"));
                assert!(!title(&html).is_empty());
                let links = anchors(&html);
                assert!(!links.is_empty());
                for (href, text, _) in &links {
                    assert_eq!(href, &format!("{text}/"));
                }
                let names: BTreeSet<&str> = links.iter().map(|(_, t, _)| t.as_str()).collect();
                assert_eq!(
                    names,
                    BTreeSet::from(["numpy", "proxpi", "scipy"]),
                    "union over both indexes"
                );
            }
            for accept in [V1_JSON, LATEST_JSON] {
                invalidate_all(s.addr());
                let r = get(s.addr(), "/index/", &[("Accept", accept), ENC]);
                assert_eq!(r.status, 200);
                assert!(r.header("content-type").unwrap().starts_with(V1_JSON));
                assert_vary(&r);
                let v = r.json();
                assert_eq!(v["meta"], serde_json::json!({"api-version": "1.0"}));
                assert!(v["projects"]
                    .as_array()
                    .unwrap()
                    .contains(&serde_json::json!({"name": "proxpi"})));
            }
        }
    });
}

/// proxpi `test_package` (HTML pages, 3 projects × 3 Accepts × 4 upstreams).
#[test]
fn proxpi_suite_project_pages_html() {
    within(LIMIT, || {
        // proxpi advertises only the upstream's metadata (these fake
        // wheels are not zips).
        let s = setup(&[("ROXPI_SYNTHESIZE_METADATA", "off")]);
        for mode in Mode::ALL {
            s.fake.set_mode(mode);
            invalidate_all(s.addr());
            for project in ["proxpi", "numpy", "scipy"] {
                for accept in ["text/html", V1_HTML, "*/*"] {
                    let path = format!("/index/{project}/");
                    let r = get(s.addr(), &path, &[("Accept", accept), ENC]);
                    assert_eq!(r.status, 200, "{mode:?} {project} {accept}");
                    assert!(r.header("content-type").unwrap().starts_with("text/html"));
                    assert!(matches!(
                        r.header("content-encoding"),
                        Some("gzip" | "deflate")
                    ));
                    assert_vary(&r);
                    let html = r.text();
                    assert!(html.starts_with("<!DOCTYPE html>"));
                    assert_eq!(title(&html), project);
                    let links = anchors(&html);
                    assert!(!links.is_empty());
                    for (href, text, _) in &links {
                        let bare = href.split('#').next().unwrap();
                        let decoded = percent_encoding::percent_decode_str(bare)
                            .decode_utf8()
                            .unwrap();
                        assert_eq!(decoded, text.as_str());
                    }
                    // The first hashed file downloads and matches its hash.
                    let (href, _, _) = links
                        .iter()
                        .find(|(h, _, _)| h.contains('#'))
                        .expect("a hashed file");
                    let (file, fragment) = href.split_once('#').unwrap();
                    let f = get(s.addr(), &format!("{path}{file}"), &[]);
                    assert_eq!(f.status, 200);
                    hash_matches(fragment, &f.body);
                    for (href, text, attrs) in &links {
                        let attr =
                            |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
                        if let Some(d) = attr("data-dist-info-metadata") {
                            assert_eq!(Some(d), attr("data-core-metadata"));
                        }
                        if let Some(m) = attr("data-core-metadata") {
                            let file = href.split('#').next().unwrap();
                            let meta = get(s.addr(), &format!("{path}{file}.metadata"), &[]);
                            assert_eq!(meta.status, 200, "{file}.metadata");
                            if m.contains('=') {
                                hash_matches(m, &meta.body);
                            }
                        }
                        if text == "proxpi-1.0.0.tar.gz" {
                            assert!(attr("data-requires-python").is_none_or(str::is_empty));
                        }
                        if let Some(rp) = attr("data-requires-python").filter(|v| !v.is_empty()) {
                            assert!(rp.starts_with(">="), "{rp}");
                        }
                        if project == "numpy" {
                            assert_eq!(
                                attr("data-yanked").is_some(),
                                text.contains("win_amd64"),
                                "{text}"
                            );
                        }
                    }
                }
            }
        }
    });
}

/// proxpi `test_package_json` (3 projects × Accept/`?format=` × 2 types ×
/// 3 upstreams).
#[test]
fn proxpi_suite_project_pages_json() {
    within(LIMIT, || {
        // proxpi advertises only the upstream's metadata (these fake
        // wheels are not zips).
        let s = setup(&[("ROXPI_SYNTHESIZE_METADATA", "off")]);
        for mode in [Mode::Html, Mode::Json, Mode::JsonYanked] {
            s.fake.set_mode(mode);
            invalidate_all(s.addr());
            let json_upstream = mode != Mode::Html;
            for project in ["proxpi", "numpy", "scipy"] {
                for media in [V1_JSON, LATEST_JSON] {
                    for by_query in [false, true] {
                        let path = format!("/index/{project}/");
                        let r = if by_query {
                            let q = media.replace('+', "%2B");
                            get(s.addr(), &format!("{path}?format={q}"), &[ENC])
                        } else {
                            get(s.addr(), &path, &[("Accept", media), ENC])
                        };
                        assert_eq!(r.status, 200);
                        assert!(r.header("content-type").unwrap().starts_with(V1_JSON));
                        assert_vary(&r);
                        let v = r.json();
                        let api = if json_upstream { "1.1" } else { "1.0" };
                        assert_eq!(
                            v["meta"],
                            serde_json::json!({"api-version": api}),
                            "{mode:?}"
                        );
                        assert_eq!(v["name"], project);
                        for f in v["files"].as_array().unwrap() {
                            let filename = f["filename"].as_str().unwrap();
                            assert_eq!(
                                f["url"]
                                    .as_str()
                                    .map(|u| percent_encoding::percent_decode_str(u)
                                        .decode_utf8()
                                        .unwrap()
                                        .into_owned())
                                    .as_deref(),
                                Some(filename)
                            );
                            assert!(f["hashes"].is_object());
                            assert!(f.get("dist-info-metadata").is_none());
                            assert!(f.get("data-dist-info-metadata").is_none());
                            if let Some(m) = f
                                .get("core-metadata")
                                .filter(|m| m.as_bool() != Some(false))
                            {
                                let meta = get(
                                    s.addr(),
                                    &format!("{path}{}.metadata", f["url"].as_str().unwrap()),
                                    &[],
                                );
                                assert_eq!(meta.status, 200);
                                if let Some(h) = m["sha256"].as_str() {
                                    hash_matches(&format!("sha256={h}"), &meta.body);
                                }
                            }
                            if filename == "proxpi-1.0.0.tar.gz" {
                                assert!(f
                                    .get("requires-python")
                                    .is_none_or(|r| r.as_str() == Some("")));
                            }
                            if project == "numpy" {
                                let yanked = f
                                    .get("yanked")
                                    .is_some_and(|y| y != &serde_json::json!(false));
                                assert_eq!(yanked, filename.contains("win_amd64"), "{filename}");
                            }
                        }
                        if json_upstream {
                            let versions: BTreeSet<&str> = v["versions"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|x| x.as_str().unwrap())
                                .collect();
                            let want: BTreeSet<&str> = match project {
                                "proxpi" => ["1.0.0", "1.1.0"].into(),
                                "numpy" => ["1.23.0", "1.23.1"].into(),
                                _ => ["1.9.0"].into(),
                            };
                            assert_eq!(versions, want, "{project}");
                        }
                        if mode == Mode::JsonYanked && project == "numpy" {
                            let win = v["files"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .find(|f| f["filename"].as_str().unwrap().contains("win_amd64"))
                                .unwrap();
                            assert_eq!(win["yanked"], "broken on windows");
                        }
                    }
                }
            }
        }
    });
}

/// proxpi tests 5–11, 13, and where roxpi deliberately differs.
#[test]
fn proxpi_suite_misc_and_deliberate_differences() {
    within(LIMIT, || {
        let s = setup(&[]);
        let a = s.addr();
        // 5: unknown Accept.
        assert_eq!(
            get(
                a,
                "/index/proxpi/",
                &[("Accept", "application/vnd.pypi.simple.v42+xml")]
            )
            .status,
            406
        );
        // 6, 7: invalidation bodies.
        for path in ["/cache/list", "/cache/jinja2"] {
            let r = request(a, "DELETE", path, &[]);
            assert_eq!(r.status, 200);
            assert_eq!(
                r.json(),
                serde_json::json!({"status": "success", "data": null})
            );
        }
        // 8: health.
        let r = get(a, "/health", &[]);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.json(),
            serde_json::json!({"status": "success", "data": null})
        );
        // 9–11: not found.
        assert_eq!(get(a, "/index/ultraspampackage/", &[]).status, 404);
        assert_eq!(get(a, "/index/ultraspampackage/spam.whl", &[]).status, 404);
        assert_eq!(get(a, "/index/jinja2/nonexistant.whl", &[]).status, 404);
        assert_eq!(get(a, "/index/numpy/nonexistant.whl", &[]).status, 404);
        // 13: file representation, never a Content-Encoding.
        let r = get(
            a,
            "/index/proxpi/proxpi-1.0.0.tar.gz",
            &[("Accept-Encoding", "gzip, deflate")],
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/x-tar+gzip"));
        assert_eq!(r.header("content-encoding"), None);
        assert_eq!(
            r.body,
            s.fake.file("root", "proxpi", "proxpi-1.0.0.tar.gz").bytes
        );
        // Deliberate difference: proxpi answers 406 without Accept; roxpi
        // treats a missing Accept as */* (PEP 691) and sends HTML.
        let r = get(a, "/index/proxpi/", &[]);
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").unwrap().starts_with("text/html"));
        // Deliberate difference: proxpi answers 500 for a non-normalised
        // name; roxpi redirects (301, relative) to the canonical page.
        let r = get(a, "/index/NumPy/?format=x", &[]);
        assert_eq!(r.status, 301);
        assert_eq!(r.header("location"), Some("/index/numpy/?format=x"));
        let r = get(a, "/simple/numpy", &[]);
        assert_eq!(
            (r.status, r.header("location")),
            (301, Some("/simple/numpy/"))
        );
    });
}

#[test]
fn binary_file_mime_type_setting() {
    within(LIMIT, || {
        let s = setup(&[("PROXPI_BINARY_FILE_MIME_TYPE", "1")]);
        let r = get(
            s.addr(),
            "/index/proxpi/proxpi-1.0.0.tar.gz",
            &[("Accept-Encoding", "gzip")],
        );
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert_eq!(r.header("content-encoding"), None);
    });
}

#[test]
fn thirty_two_concurrent_misses_make_one_upstream_request() {
    within(LIMIT, || {
        let s = setup(&[]);
        s.fake.set_fault(Fault::Hang(Duration::from_millis(400)));
        let addr = s.addr();
        let threads: Vec<_> = (0..32)
            .map(|i| {
                std::thread::spawn(move || {
                    let accept = if i % 2 == 0 { V1_JSON } else { "text/html" };
                    get(addr, "/simple/numpy/", &[("Accept", accept), ENC]).status
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 200);
        }
        assert_eq!(s.fake.count("/root/numpy/"), 1);
        assert_eq!(s.fake.count("/extra/numpy/"), 1);
    });
}

#[test]
fn warm_pages_make_no_upstream_request() {
    within(LIMIT, || {
        let s = setup(&[]);
        let a = s.addr();
        let variants: [&[(&str, &str)]; 4] = [
            &[("Accept", V1_JSON), ENC],
            &[("Accept", "text/html")],
            &[ENC],
            &[("Accept", V1_JSON)],
        ];
        for v in variants {
            assert_eq!(get(a, "/index/numpy/", v).status, 200);
        }
        s.fake.clear_log();
        for _ in 0..5 {
            for v in variants {
                let r = get(a, "/index/numpy/", v);
                assert_eq!(r.status, 200);
                assert_eq!(r.header("x-cache"), Some("HIT"));
            }
        }
        assert!(s.fake.requests().is_empty(), "{:?}", s.fake.requests());
    });
}

#[test]
fn stale_copy_when_upstream_fails_hangs_or_refuses() {
    within(LIMIT, || {
        let mut s = setup(&[
            ("ROXPI_INDEX_TTL", "1"),
            ("ROXPI_EXTRA_INDEX_TTLS", "1"),
            ("ROXPI_STALE_AFTER", "0.5"),
        ]);
        let a = s.addr();
        let fresh = get(a, "/index/numpy/", &[("Accept", V1_JSON)]);
        assert_eq!(fresh.status, 200);
        let expected = fresh.json();
        for fault in [
            Fault::Status(500),
            Fault::Status(503),
            Fault::Hang(Duration::from_secs(5)),
        ] {
            s.fake.set_fault(fault);
            std::thread::sleep(Duration::from_millis(1100));
            let started = std::time::Instant::now();
            let r = get(a, "/index/numpy/", &[("Accept", V1_JSON)]);
            assert_eq!(r.status, 200, "{fault:?}");
            assert_eq!(r.header("x-cache"), Some("STALE"), "{fault:?}");
            assert!(r.header("age").is_some());
            assert_eq!(r.json(), expected);
            // Hangs cost at most about STALE_AFTER, not the upstream's time.
            assert!(
                started.elapsed() < Duration::from_secs(4),
                "{fault:?}: {:?}",
                started.elapsed()
            );
        }
        s.fake.set_fault(Fault::None);
        s.fake.stop();
        std::thread::sleep(Duration::from_millis(1100));
        let r = get(a, "/index/numpy/", &[("Accept", V1_JSON)]);
        assert_eq!((r.status, r.header("x-cache")), (200, Some("STALE")));
        assert_eq!(r.json(), expected);
    });
}

#[test]
fn status_mapping_without_a_copy() {
    within(LIMIT, || {
        let s = setup(&[("ROXPI_READ_TIMEOUT", "1")]);
        let a = s.addr();
        s.fake.set_fault(Fault::Status(500));
        let r = get(a, "/index/numpy/", &[]);
        assert_eq!(r.status, 502);
        assert!(r.header("retry-after").is_some());
        s.fake.set_fault(Fault::Hang(Duration::from_secs(3)));
        let r = get(a, "/index/proxpi/", &[]);
        assert_eq!(r.status, 504, "{}", r.text());
        assert!(r.header("retry-after").is_some());
        s.fake.set_fault(Fault::None);
        // Missing everywhere: 404, and briefly cached.
        assert_eq!(get(a, "/index/nothing-here/", &[]).status, 404);
        assert_eq!(get(a, "/index/nothing-here/", &[]).status, 404);
        assert_eq!(s.fake.count("/root/nothing-here/"), 1);
    });
}

#[test]
fn merge_root_404_plus_extra_error_is_502_never_404() {
    within(LIMIT, || {
        // Only the extra index errors: a separate fake for it.
        let fake = FakeIndex::start(proxpi_data());
        let broken = FakeIndex::start(proxpi_data());
        broken.set_fault(Fault::Status(500));
        let (root, extra) = (fake.url("root"), broken.url("extra"));
        let (roxpi, _home) = start_roxpi(&[
            ("ROXPI_INDEX_URL", &root),
            ("ROXPI_EXTRA_INDEX_URLS", &extra),
        ]);
        // scipy lives only on the (broken) extra: not a 404.
        assert_eq!(get(roxpi.addr, "/index/scipy/", &[]).status, 502);
        // numpy is on root: the erroring extra is skipped.
        let r = get(roxpi.addr, "/index/numpy/", &[("Accept", V1_JSON)]);
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["files"].as_array().unwrap().len(), 3);
    });
}

#[test]
fn merge_and_first_index_strategies() {
    within(LIMIT, || {
        let s = setup(&[]);
        let names = |r: &Reply| -> Vec<String> {
            r.json()["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["filename"].as_str().unwrap().to_owned())
                .collect()
        };
        let merged = get(s.addr(), "/index/numpy/", &[("Accept", V1_JSON)]);
        assert_eq!(names(&merged).len(), 4, "root's 3 and extra's mac wheel");
        drop(s);

        let s = setup(&[("ROXPI_INDEX_STRATEGY", "first-index")]);
        let first = get(s.addr(), "/index/numpy/", &[("Accept", V1_JSON)]);
        assert_eq!(names(&first).len(), 3, "root only");
        assert!(names(&first).iter().all(|n| !n.contains("macosx")));
        // Only on the extra: the extra answers.
        assert_eq!(
            get(s.addr(), "/index/scipy/", &[("Accept", V1_JSON)]).status,
            200
        );
        // Root erroring never lets the extra win.
        s.fake.set_fault(Fault::Status(500));
        assert_eq!(
            get(s.addr(), "/index/scipy/?x", &[]).status,
            200,
            "cached before the fault"
        );
        let _ = request(s.addr(), "DELETE", "/cache/scipy", &[]);
        assert_eq!(get(s.addr(), "/index/scipy/", &[]).status, 502);
    });
}

#[test]
fn conditional_requests_and_cache_headers() {
    within(LIMIT, || {
        let s = setup(&[]);
        let a = s.addr();
        let r = get(a, "/index/numpy/", &[("Accept", V1_JSON), ENC]);
        let etag = r.header("etag").unwrap().to_owned();
        assert!(etag.starts_with('"'));
        let cc = r.header("cache-control").unwrap();
        let max_age: u64 = cc.strip_prefix("max-age=").unwrap().parse().unwrap();
        assert!(max_age <= 10, "min of remaining TTLs (extra: 10 s): {cc}");
        assert!(r.header("date").is_some());
        let nm = get(
            a,
            "/index/numpy/",
            &[("Accept", V1_JSON), ENC, ("If-None-Match", &etag)],
        );
        assert_eq!(nm.status, 304);
        assert!(nm.body.is_empty());
        for h in ["etag", "cache-control", "vary", "content-type"] {
            assert_eq!(nm.header(h), r.header(h), "{h} on the 304");
        }
        // Another variant has another ETag.
        let html = get(a, "/index/numpy/", &[("Accept", "text/html"), ENC]);
        assert_ne!(html.header("etag"), Some(etag.as_str()));
        // Same bytes on a second request (deterministic).
        assert_eq!(
            get(a, "/index/numpy/", &[("Accept", V1_JSON), ENC]).body,
            r.body
        );
        // HEAD: the same headers, no body.
        let head = request(a, "HEAD", "/index/numpy/", &[("Accept", V1_JSON), ENC]);
        assert_eq!(head.header("content-length"), r.header("content-length"));
        assert_eq!(head.header("etag"), r.header("etag"));
        // identity refused and nothing else: 406.
        assert_eq!(
            get(a, "/index/numpy/", &[("Accept-Encoding", "identity;q=0")]).status,
            406
        );
        // OPTIONS and 405.
        let o = request(a, "OPTIONS", "/index/numpy/", &[]);
        assert!(o.header("allow").unwrap().contains("GET"));
        let d = request(a, "DELETE", "/index/numpy/", &[]);
        assert_eq!(d.status, 405);
        assert!(d.header("allow").unwrap().contains("HEAD"));
        let g = get(a, "/cache/list", &[]);
        assert_eq!(
            (g.status, g.header("allow")),
            (405, Some("DELETE, OPTIONS"))
        );
    });
}

#[test]
fn client_no_cache_revalidates_at_most_every_ten_seconds() {
    within(LIMIT, || {
        let s = setup(&[]);
        let a = s.addr();
        assert_eq!(get(a, "/index/numpy/", &[]).status, 200);
        assert_eq!(s.fake.count("/root/numpy/"), 1);
        let r = get(a, "/index/numpy/", &[("Cache-Control", "no-cache")]);
        assert_eq!(r.header("x-cache"), Some("MISS"));
        assert_eq!(s.fake.count("/root/numpy/"), 2);
        for _ in 0..3 {
            get(a, "/index/numpy/", &[("Cache-Control", "max-age=0")]);
        }
        assert_eq!(s.fake.count("/root/numpy/"), 2, "at most once per 10 s");
        // Invalidation refetches.
        request(a, "DELETE", "/cache/NumPy", &[]);
        get(a, "/index/numpy/", &[]);
        assert_eq!(s.fake.count("/root/numpy/"), 3);
    });
}

#[test]
fn garbage_upstream_page_is_a_clear_502() {
    within(LIMIT, || {
        let s = setup(&[]);
        s.fake.set_fault(Fault::Garbage);
        let r = get(s.addr(), "/index/numpy/", &[("Accept", V1_JSON)]);
        assert_eq!(r.status, 502);
        assert!(r.text().contains("unusable page"), "{}", r.text());
        s.fake.set_fault(Fault::None);
        // Bad inputs: never a 500.
        let long = format!("/index/{}/", "a".repeat(5000));
        for path in [
            "/index/../../etc/passwd",
            "/index/numpy/../../../etc/passwd",
            "/index/numpy/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            "/index/numpy/%00",
            "/index/%ff%fe/",
            "/index/numpy/%zz",
            long.as_str(),
            "/simple/a..b/",
            "/cache/%2e%2e",
        ] {
            let method = if path.starts_with("/cache") {
                "DELETE"
            } else {
                "GET"
            };
            let r = request(s.addr(), method, path, &[]);
            assert!(r.status < 500 && r.status >= 300, "{path}: {}", r.status);
        }
    });
}

#[test]
fn credentials_never_leak() {
    within(LIMIT, || {
        let fake = FakeIndex::start(proxpi_data());
        fake.require_auth("alice", "s3cr3t-token");
        let root = format!("http://alice:s3cr3t-token@{}/root/", fake.addr);
        let (mut roxpi, _home) = start_roxpi(&[
            ("ROXPI_INDEX_URL", &root),
            ("ROXPI_LOG", "debug"),
            ("ROXPI_DOWNLOAD_TIMEOUT", "0"),
        ]);
        let log = roxpi.capture_stderr();
        let a = roxpi.addr;
        let mut seen = Vec::new();
        let mut record = |r: Reply| {
            seen.push(format!("{:?}\n{}", r.headers, r.text()));
            r
        };
        assert_eq!(
            record(get(a, "/index/numpy/", &[("Accept", V1_JSON)])).status,
            200
        );
        assert_eq!(record(get(a, "/index/numpy/", &[])).status, 200);
        // Files are streamed (never redirected: the client could not follow).
        let f = record(get(a, "/index/numpy/numpy-1.23.0.tar.gz", &[]));
        assert_eq!(f.status, 200);
        let home = record(get(a, "/", &[]));
        assert_eq!(home.status, 200);
        let page = home.text();
        assert!(
            page.contains(&format!("{}/root/", fake.addr)),
            "the index is shown: {page}"
        );
        assert!(
            page.contains("cache/list") && page.contains("Invalidate"),
            "invalidation buttons"
        );
        record(get(a, "/health", &[]));
        record(get(a, "/index/", &[]));
        record(get(a, "/index/NumPy", &[]));
        fake.set_fault(Fault::Status(500));
        let err = record(get(a, "/index/proxpi/", &[]));
        assert_eq!(err.status, 502);
        // The upstream got the credentials.
        assert!(fake.requests().iter().any(|r| r
            .authorization
            .as_deref()
            .is_some_and(|v| v.starts_with("Basic "))));
        let _ = roxpi.child.kill();
        let log = log.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            log.contains("/root/"),
            "debug log has upstream lines: {log}"
        );
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode("alice:s3cr3t-token");
        for text in seen.iter().chain(std::iter::once(&log)) {
            assert!(!text.contains("s3cr3t"), "secret leaked: {text}");
            assert!(!text.contains(&token), "token leaked: {text}");
            assert!(!text.contains("alice"), "user name leaked: {text}");
        }
    });
}

#[test]
fn proxpi_and_groxpi_variable_names_are_accepted() {
    within(LIMIT, || {
        let fake = FakeIndex::start(proxpi_data());
        let (root, extra) = (fake.url("root"), fake.url("extra"));
        let (roxpi, _home) = start_roxpi(&[
            ("ROXPI_INDEX_URL", ""),
            ("PROXPI_INDEX_URL", &root),
            ("GROXPI_EXTRA_INDEX_URLS", &extra),
            ("PROXPI_EXTRA_INDEX_TTL", "5"),
            ("PROXPI_LOGGING_LEVEL", "WARNING"),
        ]);
        let r = get(roxpi.addr, "/index/scipy/", &[("Accept", V1_JSON)]);
        assert_eq!(r.status, 200, "extra index from GROXPI_EXTRA_INDEX_URLS");
        assert_eq!(fake.count("/root/scipy/"), 1, "root from PROXPI_INDEX_URL");
    });
}

#[test]
fn invalid_settings_stop_startup_naming_the_setting() {
    within(LIMIT, || {
        let cases = [
            ("ROXPI_INDEX_TTL", "soon", "ROXPI_INDEX_TTL"),
            ("PROXPI_INDEX_TTL", "soon", "ROXPI_INDEX_TTL"),
            (
                "ROXPI_DISABLE_INDEX_SSL_VERIFICATION",
                "maybe",
                "ROXPI_DISABLE_INDEX_SSL_VERIFICATION",
            ),
            ("ROXPI_INDEX_URL", "gopher://x/", "ROXPI_INDEX_URL"),
        ];
        for (var, value, named) in cases {
            let out = std::process::Command::new(crate::util::roxpi_bin())
                .env_clear()
                .env("ROXPI_BIND", "127.0.0.1:0")
                .env(var, value)
                .output()
                .unwrap();
            assert!(!out.status.success(), "{var}={value}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(named), "{var}={value}: {err}");
        }
    });
}

#[test]
fn files_stream_through_with_head_and_metadata() {
    within(LIMIT, || {
        let s = setup(&[]);
        s.fake.set_mode(Mode::Json);
        let a = s.addr();
        let wheel = "numpy-1.23.1-cp311-cp311-manylinux_2_28_x86_64.whl";
        let expected = s.fake.file("root", "numpy", wheel);
        // HEAD answers from the index size without a download.
        let head = request(a, "HEAD", &format!("/index/numpy/{wheel}"), &[]);
        assert_eq!(head.status, 200);
        assert_eq!(
            head.header("content-length"),
            Some(expected.bytes.len().to_string().as_str())
        );
        assert_eq!(s.fake.count(&format!("/files/root/numpy/{wheel}")), 0);
        let r = get(a, &format!("/index/numpy/{wheel}"), &[]);
        assert_eq!(r.body, expected.bytes);
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        let m = get(a, &format!("/index/numpy/{wheel}.metadata"), &[]);
        assert_eq!(m.body, expected.metadata.unwrap());
        // Metadata that is not advertised is not served.
        assert_eq!(
            get(a, "/index/numpy/numpy-1.23.0.tar.gz.metadata", &[]).status,
            404
        );
        // A file from the extra index, through /simple/.
        let mac = "numpy-1.23.1-cp311-cp311-macosx_11_0_arm64.whl";
        assert_eq!(
            get(a, &format!("/simple/numpy/{mac}"), &[]).body,
            s.fake.file("extra", "numpy", mac).bytes
        );
    });
}

/// No forced redirect by default: an upstream whose headers take 2 s is
/// waited for (parked) and streamed; with proxpi's
/// `ROXPI_DOWNLOAD_TIMEOUT=0.9` the client is sent there instead.
#[test]
fn a_slow_upstream_file_is_streamed_by_default_and_redirected_only_when_asked() {
    within(LIMIT, || {
        let s = setup(&[]);
        let a = s.addr();
        assert_eq!(get(a, "/index/scipy/", &[]).status, 200);
        s.fake.set_file_delay(Duration::from_secs(2));
        let t = std::time::Instant::now();
        let r = get(a, "/index/scipy/scipy-1.9.0.tar.gz", &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.body,
            s.fake.file("extra", "scipy", "scipy-1.9.0.tar.gz").bytes,
            "the right bytes"
        );
        assert!(t.elapsed() >= Duration::from_secs(2), "it waited for them");
        drop(s);
        let s = setup(&[("ROXPI_DOWNLOAD_TIMEOUT", "0.9")]);
        let a = s.addr();
        assert_eq!(get(a, "/index/scipy/", &[]).status, 200);
        s.fake.set_file_delay(Duration::from_secs(2));
        let r = get(a, "/index/scipy/scipy-1.9.0.tar.gz", &[]);
        assert_eq!(r.status, 302);
        assert!(r
            .header("location")
            .unwrap()
            .ends_with("/files/extra/scipy/scipy-1.9.0.tar.gz"));
    });
}

#[test]
fn stalled_file_upstream_redirects_after_download_timeout() {
    within(LIMIT, || {
        let s = setup(&[("ROXPI_DOWNLOAD_TIMEOUT", "0.3")]);
        let a = s.addr();
        assert_eq!(get(a, "/index/scipy/", &[]).status, 200);
        s.fake.set_file_delay(Duration::from_secs(2));
        let r = get(a, "/index/scipy/scipy-1.9.0.tar.gz", &[]);
        assert_eq!(r.status, 302);
        let location = r.header("location").unwrap();
        assert_eq!(
            location,
            format!(
                "http://{}/files/extra/scipy/scipy-1.9.0.tar.gz",
                s.fake.addr
            )
        );
        drop(s);
        // 0 means always redirect (proxpi's meaning).
        let s = setup(&[("PROXPI_DOWNLOAD_TIMEOUT", "0")]);
        let r = get(s.addr(), "/index/proxpi/proxpi-1.0.0.tar.gz", &[]);
        assert_eq!(r.status, 302);
        assert!(r
            .header("location")
            .unwrap()
            .ends_with("/files/root/proxpi/proxpi-1.0.0.tar.gz"));
    });
}

#[test]
fn max_age_zero_is_not_a_refresh_request_but_no_cache_is() {
    within(LIMIT, || {
        let s = setup(&[]);
        let a = s.addr();
        assert_eq!(get(a, "/index/numpy/", &[]).status, 200);
        assert_eq!(s.fake.count("/root/numpy/"), 1);
        // What pip 24.0–26.0 send on every page request.
        for _ in 0..5 {
            let r = get(a, "/index/numpy/", &[("Cache-Control", "max-age=0")]);
            assert_eq!(r.header("x-cache"), Some("HIT"));
        }
        assert_eq!(s.fake.count("/root/numpy/"), 1, "max-age=0: no upstream");
        let r = get(a, "/index/numpy/", &[("Cache-Control", "no-cache")]);
        assert_eq!(r.header("x-cache"), Some("MISS"));
        assert_eq!(s.fake.count("/root/numpy/"), 2);
        get(a, "/index/numpy/", &[("Pragma", "no-cache")]);
        assert_eq!(s.fake.count("/root/numpy/"), 2, "at most once per 10 s");

        // ROXPI_CLIENT_REFRESH=any: max-age=0 refreshes too; off: nothing.
        for (policy, want) in [("any", 2), ("off", 1)] {
            let s = setup(&[("ROXPI_CLIENT_REFRESH", policy)]);
            get(s.addr(), "/index/numpy/", &[]);
            get(s.addr(), "/index/numpy/", &[("Cache-Control", "max-age=0")]);
            get(s.addr(), "/index/scipy/", &[]);
            get(s.addr(), "/index/scipy/", &[("Cache-Control", "no-cache")]);
            assert_eq!(s.fake.count("/root/numpy/"), want, "{policy}: max-age=0");
            let no_cache = if policy == "off" { 1 } else { 2 };
            assert_eq!(s.fake.count("/root/scipy/"), no_cache, "{policy}: no-cache");
        }
    });
}

#[test]
fn an_upstream_304_renews_a_page_without_a_body_and_keeps_the_client_etag() {
    within(LIMIT, || {
        let s = setup(&[
            ("ROXPI_INDEX_TTL", "1"),
            ("ROXPI_STALE_WHILE_REVALIDATE", "0"),
        ]);
        let a = s.addr();
        let first = get(a, "/index/numpy/", &[]);
        assert_eq!(first.status, 200);
        let bytes = s.fake.page_bytes();
        assert!(bytes > 0);
        std::thread::sleep(Duration::from_millis(1300));
        let second = get(a, "/index/numpy/", &[]);
        assert_eq!(second.status, 200);
        assert_eq!(s.fake.count("/root/numpy/"), 2, "refreshed after the TTL");
        assert_eq!(s.fake.page_bytes(), bytes, "a 304: no body transferred");
        assert_eq!(second.header("etag"), first.header("etag"));
        assert_eq!(second.body, first.body);
        assert_eq!(metric(a, "roxpi_index_revalidated_total"), 1);
        // The client's own revalidation still gets its 304.
        let etag = first.header("etag").unwrap().to_owned();
        let r = get(a, "/index/numpy/", &[("If-None-Match", &etag)]);
        assert_eq!(r.status, 304);
    });
}

#[test]
fn within_the_window_an_expired_page_is_answered_at_once_while_the_upstream_hangs() {
    within(LIMIT, || {
        let s = setup(&[("ROXPI_INDEX_TTL", "1")]);
        let a = s.addr();
        assert_eq!(get(a, "/index/numpy/", &[]).status, 200);
        std::thread::sleep(Duration::from_millis(1300));
        s.fake.set_fault(Fault::Hang(Duration::from_secs(3)));
        let clients: Vec<_> = (0..32)
            .map(|_| {
                std::thread::spawn(move || {
                    let t = std::time::Instant::now();
                    let r = get(a, "/index/numpy/", &[]);
                    (
                        r.status,
                        r.header("x-cache").map(str::to_owned),
                        t.elapsed(),
                    )
                })
            })
            .collect();
        let mut slowest = Duration::ZERO;
        for c in clients {
            let (status, tag, took) = c.join().unwrap();
            assert_eq!((status, tag.as_deref()), (200, Some("STALE")));
            slowest = slowest.max(took);
        }
        eprintln!(
            "32 requests within the revalidation window, upstream hanging: slowest {slowest:?}"
        );
        assert!(slowest < Duration::from_secs(1), "{slowest:?}");
        // The refresh runs in the background: it reaches the upstream a
        // moment after the answers, once.
        crate::util::wait_until(Duration::from_secs(2), "the background refresh", || {
            s.fake.count("/root/numpy/") >= 2
        });
        assert_eq!(s.fake.count("/root/numpy/"), 2, "one background refresh");
        assert_eq!(metric(a, "roxpi_index_revalidating_total"), 1);
    });
}

#[test]
fn validators_survive_a_restart_and_the_first_refresh_is_a_304() {
    within(LIMIT, || {
        let fake = FakeIndex::start(proxpi_data());
        let root = fake.url("root");
        let cache = tempfile::tempdir().unwrap();
        let env = [
            ("ROXPI_INDEX_URL", root.as_str()),
            ("ROXPI_CACHE_DIR", cache.path().to_str().unwrap()),
        ];
        let (first, _home) = start_roxpi(&env);
        let before = get(first.addr, "/index/numpy/", &[]);
        assert_eq!(before.status, 200);
        drop(first);
        let bytes = fake.page_bytes();
        // Restarted: the saved copy comes back with its ETag, and the
        // refresh it needs is answered 304 with no body.
        let (second, _home2) = start_roxpi(&env);
        let after = get(second.addr, "/index/numpy/", &[]);
        assert_eq!(after.status, 200);
        assert_eq!(after.body, before.body);
        assert_eq!(after.header("etag"), before.header("etag"));
        assert_eq!(
            fake.count("/root/numpy/"),
            2,
            "refreshed once after the restart"
        );
        assert_eq!(fake.page_bytes(), bytes, "304: no body");
        assert_eq!(metric(second.addr, "roxpi_index_revalidated_total"), 1);
    });
}

/// The disk is the index cache's second tier: a page evicted from a small
/// index cache comes back from its saved copy, as fresh as it was, without
/// asking the upstream again; after an invalidation the saved copy is only
/// a fallback and the page is fetched again.
#[test]
fn an_evicted_page_comes_back_from_disk_within_its_ttl_and_not_after_an_invalidation() {
    within(LIMIT, || {
        let fake = FakeIndex::start(proxpi_data());
        for i in 0..600 {
            fake.add_project(
                "root",
                &format!("filler-{i}"),
                crate::fake_index::FakeProject::default(),
            );
        }
        let root = fake.url("root");
        let cache = tempfile::tempdir().unwrap();
        let (roxpi, _home) = start_roxpi(&[
            ("ROXPI_INDEX_URL", root.as_str()),
            ("ROXPI_CACHE_DIR", cache.path().to_str().unwrap()),
            ("ROXPI_INDEX_CACHE_SIZE", "1M"),
        ]);
        let a = roxpi.addr;
        let first = get(a, "/index/numpy/", &[]);
        assert_eq!(first.status, 200);
        let evictions = metric(a, "roxpi_index_evictions_total");
        for i in 0..600 {
            assert_eq!(get(a, &format!("/index/filler-{i}/"), &[]).status, 200);
        }
        assert!(
            metric(a, "roxpi_index_evictions_total") > evictions + 300,
            "numpy's page was pushed out"
        );
        let again = get(a, "/index/numpy/", &[]);
        assert_eq!(again.body, first.body);
        assert_eq!(again.header("x-cache"), Some("HIT"));
        assert_eq!(fake.count("/root/numpy/"), 1, "served from its saved copy");
        let r = request(a, "DELETE", "/cache/numpy", &[]);
        assert_eq!(r.status, 200);
        for i in 0..600 {
            get(a, &format!("/index/filler-{i}/"), &[]);
        }
        let after = get(a, "/index/numpy/", &[]);
        assert_eq!(after.status, 200);
        assert_eq!(
            fake.count("/root/numpy/"),
            2,
            "fetched again after the invalidation"
        );
    });
}
