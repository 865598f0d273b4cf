//! The real index's shapes: the twelve real PyPI project pages in
//! `tests/fixtures/pypi-pages/` (19 KB to 6.9 MB, up to 15,057 files),
//! served by a fake upstream as JSON and as HTML, read by several clients
//! in every variant through a small index cache. Every answer is complete,
//! none is refused or hangs, memory stays within the stated bound, and the
//! process is idle afterwards. Also: requests for files of pages that hang
//! park and get their 504 by the deadline while warm pages and `/` answer.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use roxpi::http::{Response, Server, ServerConfig};

use crate::util::{request, start_roxpi, within, ChildServer, Reply};

const LIMIT: Duration = Duration::from_secs(300);

/// One fixture page: its name, the upstream's JSON, and the file count.
pub struct RealPage {
    pub name: String,
    pub json: Bytes,
    pub files: usize,
}

/// The fixture pages, decoded, smallest first.
pub fn real_pages() -> Vec<RealPage> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pypi-pages");
    let mut pages: Vec<RealPage> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/pypi-pages")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path
                .file_name()?
                .to_str()?
                .strip_suffix(".json.gz")?
                .to_owned();
            let mut json = Vec::new();
            flate2::read::GzDecoder::new(std::fs::File::open(&path).ok()?)
                .read_to_end(&mut json)
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&json).ok()?;
            let files = v["files"].as_array()?.len();
            Some(RealPage {
                name,
                json: Bytes::from(json),
                files,
            })
        })
        .collect();
    pages.sort_by_key(|p| p.json.len());
    assert_eq!(pages.len(), 12, "the twelve fixture pages");
    pages
}

/// A fake upstream for the fixture pages: `/simple/<name>/`, every other
/// page (by size) as HTML rendered from its JSON; projects named `hang-*`
/// never answer. Counts the requests per path.
pub struct RealUpstream {
    pub server: Server,
    pub hits: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl RealUpstream {
    pub fn start(pages: &[RealPage]) -> RealUpstream {
        let base = url::Url::parse("https://pypi.example/simple/x/").unwrap();
        let mut bodies: BTreeMap<String, (&'static str, Bytes)> = BTreeMap::new();
        for (i, p) in pages.iter().enumerate() {
            let body = if i % 2 == 0 {
                ("application/vnd.pypi.simple.v1+json", p.json.clone())
            } else {
                let parsed =
                    roxpi::pypi::parse_project_page(&p.json, roxpi::pypi::Format::Json, &base)
                        .unwrap();
                let name = roxpi::pypi::ProjectName::from_upstream(&p.name).unwrap();
                let html =
                    roxpi::pypi::render_project(&name, &parsed, roxpi::pypi::PageFormat::Html);
                ("text/html", Bytes::from(html))
            };
            bodies.insert(format!("/simple/{}/", p.name), body);
        }
        let hits = Arc::new(Mutex::new(BTreeMap::new()));
        let seen = Arc::clone(&hits);
        let server = Server::start(
            "127.0.0.1:0".parse().unwrap(),
            ServerConfig::default(),
            move |req| {
                *seen
                    .lock()
                    .unwrap()
                    .entry(req.path().to_owned())
                    .or_insert(0) += 1;
                if req.path().contains("/hang-") {
                    return Response::later(roxpi::http::Later {
                        deadline: Instant::now() + Duration::from_secs(120),
                        subscribe: Box::new(|_| {}),
                        resume: Box::new(|_| Response::text(504, "hung\n")),
                    });
                }
                match bodies.get(req.path()) {
                    Some((ct, body)) => Response::new(200)
                        .header("Content-Type", *ct)
                        .body(body.clone()),
                    None => Response::text(404, "no such project\n"),
                }
            },
        )
        .unwrap();
        RealUpstream { server, hits }
    }

    pub fn index(&self) -> String {
        format!("http://{}/simple/", self.server.local_addr())
    }
}

/// The three variants clients ask for: (name, Accept, Accept-Encoding).
const VARIANTS: [(&str, &str, &str); 3] = [
    ("json gzip", "application/vnd.pypi.simple.v1+json", "gzip"),
    (
        "json identity",
        "application/vnd.pypi.simple.v1+json",
        "identity",
    ),
    ("html gzip", "text/html", "gzip"),
];

/// Checks that `r` is the complete page of `p` in the variant asked.
fn check_page(r: &Reply, p: &RealPage, variant: &str) {
    assert_eq!(r.status, 200, "{} {variant}: {}", p.name, r.text());
    let body = r.decoded();
    if variant.contains("json") {
        let v: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{} {variant}: not JSON: {e}", p.name));
        assert_eq!(
            v["files"].as_array().map(Vec::len),
            Some(p.files),
            "{}",
            p.name
        );
    } else {
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.trim_end().ends_with("</html>"),
            "{} {variant}: incomplete HTML ({} bytes, {:?} encoded): …{}",
            p.name,
            body.len(),
            r.header("content-encoding"),
            &text[text.len().saturating_sub(200)..]
        );
        assert_eq!(text.matches("<a ").count(), p.files, "{} {variant}", p.name);
    }
}

fn start(
    upstream: &RealUpstream,
    index_cache: &str,
    extra: &[(&str, &str)],
) -> (ChildServer, tempfile::TempDir, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let index = upstream.index();
    let mut env = vec![
        ("ROXPI_INDEX_URL", index.as_str()),
        ("ROXPI_CACHE_DIR", cache.path().to_str().unwrap()),
        ("ROXPI_INDEX_CACHE_SIZE", index_cache),
    ];
    env.extend_from_slice(extra);
    let (server, home) = start_roxpi(&env);
    (server, cache, home)
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name's closing parenthesis: fields 3.. of stat(5).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// 4 clients read every page in every variant, 4 rounds; returns the
/// slowest answer.
fn read_in_turn(addr: SocketAddr, pages: &Arc<Vec<RealPage>>) -> Duration {
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let pages = Arc::clone(pages);
            std::thread::spawn(move || {
                let mut slowest = Duration::ZERO;
                for round in 0..4 {
                    for k in 0..pages.len() {
                        // Each client starts at a different page.
                        let p = &pages[(k + c * 3) % pages.len()];
                        for (variant, accept, encoding) in VARIANTS {
                            let t = Instant::now();
                            let r = request(
                                addr,
                                "GET",
                                &format!("/index/{}/", p.name),
                                &[("Accept", accept), ("Accept-Encoding", encoding)],
                            );
                            slowest = slowest.max(t.elapsed());
                            check_page(&r, p, &format!("{variant} round {round}"));
                        }
                    }
                }
                slowest
            })
        })
        .collect();
    clients
        .into_iter()
        .map(|c| c.join().unwrap())
        .max()
        .unwrap()
}

/// Acceptance of part 11: 4 clients, 4 rounds, every page in every variant;
/// all complete 200s, the slowest under 3 s; peak RSS within the index
/// cache bound plus 96 MiB; idle afterwards.
fn real_pages_through(index_cache: &str, bound_mib: u64) {
    let pages = Arc::new(real_pages());
    let upstream = RealUpstream::start(&pages);
    let (roxpi, _cache, _home) = start(&upstream, index_cache, &[]);
    let addr = roxpi.addr;
    let slowest = read_in_turn(addr, &pages);
    let peak_kib = roxpi.status_kib("VmHWM:");
    let evictions = crate::util::metric(addr, "roxpi_index_evictions_total");
    let held = crate::util::metric(addr, "roxpi_index_cache_bytes");
    let fetches: usize = upstream.hits.lock().unwrap().values().sum();
    eprintln!(
        "{index_cache} index cache, 12 real pages × 3 variants × 4 rounds × 4 clients: slowest \
         {slowest:?}, peak RSS {} MiB (RSS now {} MiB, cache holds {} MiB), {evictions} \
         evictions, {fetches} upstream fetches",
        peak_kib / 1024,
        roxpi.status_kib("VmRSS:") / 1024,
        held >> 20
    );
    assert!(
        slowest < Duration::from_secs(3),
        "slowest answer {slowest:?}"
    );
    // Within the TTL each page is fetched once: what does not stay in
    // memory comes back from its saved copy, not from the upstream.
    assert_eq!(fetches, pages.len(), "upstream page fetches");
    assert!(
        peak_kib <= (bound_mib + 96) * 1024,
        "peak RSS {peak_kib} KiB over the {bound_mib} MiB bound + 96 MiB"
    );
    // Idle afterwards: no fetch, eviction or render keeps running.
    let before = cpu_ticks(roxpi.pid());
    let evictions_before = crate::util::metric(addr, "roxpi_index_evictions_total");
    std::thread::sleep(Duration::from_secs(5));
    let used = cpu_ticks(roxpi.pid()) - before;
    assert!(used < 25, "{used} ticks of CPU in 5 idle seconds");
    assert_eq!(
        crate::util::metric(addr, "roxpi_index_evictions_total"),
        evictions_before,
        "nothing is evicted while idle"
    );
}

#[test]
fn real_pages_through_a_16m_index_cache_all_answered_within_memory_then_idle() {
    within(LIMIT, || real_pages_through("16M", 16));
}

#[test]
fn real_pages_through_the_default_64m_index_cache_all_answered_within_memory_then_idle() {
    within(LIMIT, || real_pages_through("64M", 64));
}

#[test]
fn the_largest_pages_are_served_with_8m_and_16m_index_caches() {
    within(LIMIT, || {
        let pages = real_pages();
        let upstream = RealUpstream::start(&pages);
        let big: Vec<&RealPage> = pages
            .iter()
            .filter(|p| p.name == "pydantic-core" || p.name == "grpcio")
            .collect();
        assert_eq!(big.len(), 2);
        for size in ["8M", "16M"] {
            let (roxpi, _cache, _home) = start(&upstream, size, &[]);
            for round in 0..2 {
                for p in &big {
                    for (variant, accept, encoding) in VARIANTS {
                        let r = request(
                            roxpi.addr,
                            "GET",
                            &format!("/index/{}/", p.name),
                            &[("Accept", accept), ("Accept-Encoding", encoding)],
                        );
                        check_page(&r, p, &format!("{size} {variant} round {round}"));
                    }
                }
            }
            let not_kept = crate::util::metric(roxpi.addr, "roxpi_index_not_kept_total");
            eprintln!("{size}: pydantic-core and grpcio served; {not_kept} items not kept");
        }
    });
}

#[test]
fn file_requests_for_hung_pages_park_and_get_504_while_warm_pages_answer() {
    within(LIMIT, || {
        let pages = real_pages();
        let upstream = RealUpstream::start(&pages);
        let (roxpi, _cache, _home) = start(
            &upstream,
            "16M",
            &[("ROXPI_WORKERS", "2"), ("ROXPI_REQUEST_DEADLINE", "4")],
        );
        let addr = roxpi.addr;
        let warm = "/index/six/";
        assert_eq!(request(addr, "GET", warm, &[]).status, 200);
        // 8 direct file requests whose pages hang upstream.
        let sent = Instant::now();
        let mut hung: Vec<TcpStream> = (0..8)
            .map(|i| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                write!(
                    s,
                    "GET /index/hang-{i}/hang_{i}-1.0-py3-none-any.whl HTTP/1.1\r\nHost: t\r\n\r\n"
                )
                .unwrap();
                s
            })
            .collect();
        crate::util::wait_until(Duration::from_secs(3), "8 parked requests", || {
            crate::util::metric(addr, "roxpi_http_waiting_requests") >= 8
        });
        for i in 0..10 {
            for path in [warm, "/"] {
                let t = Instant::now();
                let r = request(addr, "GET", path, &[]);
                assert_eq!(r.status, 200, "{path} #{i}");
                assert!(
                    t.elapsed() < Duration::from_secs(1),
                    "{path} took {:?}",
                    t.elapsed()
                );
            }
        }
        for (i, s) in hung.iter_mut().enumerate() {
            let mut head = [0u8; 12];
            s.read_exact(&mut head).unwrap();
            let took = sent.elapsed();
            assert_eq!(&head, b"HTTP/1.1 504", "file request {i}");
            assert!(
                took < Duration::from_secs(6),
                "file request {i} answered after {took:?}, deadline 4 s"
            );
        }
    });
}
