//! Hostile and huge pages cost bounded memory: 16 at once (gzip bombs,
//! a 1,000,000-entry JSON page, a 200 MB HTML page) each get a clear 502,
//! the peak RSS stays under a stated bound, repeating the attack does not
//! ratchet RSS up, and a large page that fits is cached and not refetched.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use roxpi::http::{Response, Server, ServerConfig};

use crate::util::{get, start_roxpi, within};

const LIMIT: Duration = Duration::from_secs(170);
/// Peak RSS allowed with default settings (ROXPI_INDEX_CACHE_SIZE=64M).
const PEAK_BOUND_KIB: u64 = 256 * 1024;

/// A GET that may take long: the 16 pages share two big-page slots, and
/// the whole suite runs at once (this test is about memory, not latency).
fn slow_get(addr: std::net::SocketAddr, path: &str) -> crate::util::Reply {
    let mut c = crate::util::Client::new(addr);
    c.reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    c.get(path)
}

struct Hostile {
    bomb: Bytes,
    json: Bytes,
    html: Bytes,
    fits: Bytes,
}

fn hostile() -> Hostile {
    // 300 MB of zeros, gzipped to about 300 KB.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..300 {
        gz.write_all(&zeros).unwrap();
    }
    let bomb = Bytes::from(gz.finish().unwrap());
    let mut json = String::with_capacity(80 << 20);
    json.push_str("{\"meta\":{\"api-version\":\"1.0\"},\"files\":[");
    for i in 0..1_000_000 {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!(
            "{{\"filename\":\"x-{i}.tar.gz\",\"url\":\"x-{i}.tar.gz\",\"hashes\":{{}}}}"
        ));
    }
    json.push_str("]}");
    let mut html = String::with_capacity(210 << 20);
    html.push_str("<html><body>");
    let mut i = 0u64;
    while html.len() < 200 << 20 {
        html.push_str(&format!("<a href=\"y-{i}.tar.gz\">y-{i}.tar.gz</a>\n"));
        i += 1;
    }
    let fits: Vec<String> = (0..20_000)
        .map(|i| format!("{{\"filename\":\"fits-{i}.tar.gz\",\"url\":\"fits-{i}.tar.gz\",\"hashes\":{{\"sha256\":\"{i:064x}\"}}}}"))
        .collect();
    let fits = format!(
        "{{\"meta\":{{\"api-version\":\"1.0\"}},\"files\":[{}]}}",
        fits.join(",")
    );
    Hostile {
        bomb,
        json: Bytes::from(json),
        html: Bytes::from(html),
        fits: Bytes::from(fits),
    }
}

#[test]
fn hostile_pages_cost_bounded_memory_and_a_large_fitting_page_is_cached() {
    within(LIMIT, || {
        let h = Arc::new(hostile());
        let fits_fetches = Arc::new(AtomicUsize::new(0));
        let upstream = {
            let (h, fits_fetches) = (Arc::clone(&h), Arc::clone(&fits_fetches));
            Server::start(
                "127.0.0.1:0".parse().unwrap(),
                ServerConfig::default(),
                move |req| {
                    let json = "application/vnd.pypi.simple.v1+json";
                    let p = req.path();
                    if p.starts_with("/simple/bomb-") {
                        Response::new(200)
                            .header("Content-Type", json)
                            .header("Content-Encoding", "gzip")
                            .body(h.bomb.clone())
                    } else if p.starts_with("/simple/json-") {
                        Response::new(200)
                            .header("Content-Type", json)
                            .body(h.json.clone())
                    } else if p.starts_with("/simple/html-") {
                        Response::new(200)
                            .header("Content-Type", "text/html")
                            .body(h.html.clone())
                    } else if p == "/simple/fits/" {
                        fits_fetches.fetch_add(1, Ordering::SeqCst);
                        Response::new(200)
                            .header("Content-Type", json)
                            .body(h.fits.clone())
                    } else {
                        Response::text(404, "no\n")
                    }
                },
            )
            .unwrap()
        };
        let index = format!("http://{}/simple/", upstream.local_addr());
        let cache = tempfile::tempdir().unwrap();
        let (roxpi, _home) = start_roxpi(&[
            ("ROXPI_INDEX_URL", index.as_str()),
            ("ROXPI_CACHE_DIR", cache.path().to_str().unwrap()),
        ]);
        let addr = roxpi.addr;
        let mut after_round = Vec::new();
        for round in 0..5 {
            let clients: Vec<_> = (0..16)
                .map(|i| {
                    let kind = ["bomb", "json", "html"][i % 3];
                    let path = format!("/index/{kind}-{round}-{i}/");
                    std::thread::spawn(move || (path.clone(), slow_get(addr, &path)))
                })
                .collect();
            for c in clients {
                let (path, r) = c.join().unwrap();
                let body = String::from_utf8_lossy(&r.body);
                assert_eq!(r.status, 502, "{path}: {body}");
                assert!(body.contains("larger than"), "{path}: {body}");
            }
            after_round.push(roxpi.status_kib("VmRSS:"));
        }
        let peak = roxpi.status_kib("VmHWM:");
        eprintln!(
            "16 hostile pages x 5 rounds: peak RSS {} MiB, RSS after each round {:?} MiB",
            peak / 1024,
            after_round.iter().map(|k| k / 1024).collect::<Vec<_>>()
        );
        assert!(peak > 0 && peak <= PEAK_BOUND_KIB, "peak RSS {peak} KiB");
        // After a warm-up round, repeating the attack leaves RSS flat
        // (measured over 12 rounds: 29, 38, 44, 41, 44, 43, 44, 42, 43 … MiB).
        let (warm, last) = (after_round[1], after_round[4]);
        assert!(
            last <= warm + 16 * 1024,
            "RSS grew from {warm} to {last} KiB"
        );

        // A large page that fits (20,000 files) is cached: one fetch.
        for _ in 0..3 {
            let r = get(addr, "/index/fits/");
            assert_eq!(r.status, 200);
            assert!(String::from_utf8_lossy(&r.body).contains("fits-19999.tar.gz"));
        }
        assert_eq!(fits_fetches.load(Ordering::SeqCst), 1);
        upstream.shutdown(Duration::from_secs(1));
    });
}
