//! Benchmarks of the file side, each against nginx in the same run:
//! - warm small (11 KB) and large (16 MB) files: roxpi's cache (sendfile)
//!   vs nginx (sendfile) serving the same files;
//! - sendfile vs serving the bytes from memory (what a kept mapping does:
//!   one writev from user memory instead of sendfile);
//! - the cold herd: 32 concurrent clients of one uncached file — upstream
//!   GETs, and each client's time to first byte.
//!
//! Run via `benches/run.sh` or `cargo bench --bench file_path`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use roxpi::http::{Body, Response, Server, ServerConfig, Stream};
use support::{header_row, require_tools, row, start_nginx, wrk};

fn blob(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// Time to the first body byte, the whole request, and the body length, on
/// a fresh connection.
fn timed_get(addr: std::net::SocketAddr, path: &str) -> (Duration, Duration, usize) {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = Vec::new();
    let mut first = None;
    loop {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if first.is_none() {
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                if got.len() > i + 4 {
                    first = Some(start.elapsed());
                }
            }
        }
    }
    let body = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |i| got.len() - i - 4);
    (first.unwrap_or_default(), start.elapsed(), body)
}

fn main() {
    require_tools();
    support::pin_self();
    let secs = support::seconds();
    let small = blob(11 * 1024, 1);
    let large = blob(16 << 20, 2);
    let herd = blob(8 << 20, 3);
    let files: Vec<(&str, Bytes)> = vec![
        ("demo-1.0-py3-none-any.whl", small.clone()),
        ("demo-2.0-py3-none-any.whl", large.clone()),
        ("demo-3.0-py3-none-any.whl", herd.clone()),
    ];
    let page = support::demo_page(&files);
    let file_gets = Arc::new(AtomicUsize::new(0));
    let upstream = {
        let files = files.clone();
        let gets = Arc::clone(&file_gets);
        Server::start(
            "127.0.0.1:0".parse().unwrap(),
            ServerConfig::default(),
            move |req| {
                if let Some(name) = req.path().strip_prefix("/files/") {
                    gets.fetch_add(1, Ordering::Relaxed);
                    return match files.iter().find(|(n, _)| *n == name) {
                        // Paced at ~400 MB/s so the herd overlaps the download.
                        Some((_, b)) => Response::new(200).body(Body::Stream(Stream {
                            len: Some(b.len() as u64),
                            reader: Box::new(Paced(std::io::Cursor::new(b.clone()))),
                        })),
                        None => Response::new(404),
                    };
                }
                Response::new(200)
                    .header("Content-Type", "application/vnd.pypi.simple.v1+json")
                    .body(page.clone())
            },
        )
        .unwrap()
    };
    let cache = tempfile::tempdir().unwrap();
    let index = format!("http://{}/simple/", upstream.local_addr());
    let cache_dir = cache.path().display().to_string();
    let roxpi = support::start_roxpi(&[
        "--index-url",
        &index,
        "--log",
        "off",
        "--cache-dir",
        &cache_dir,
        "--download-timeout",
        "30",
    ]);
    let addr = roxpi.local_addr();

    // Cold herd first (nothing cached yet).
    let _ = timed_get(addr, "/simple/demo/");
    let herd_path = "/simple/demo/demo-3.0-py3-none-any.whl";
    let clients: Vec<_> = (0..32)
        .map(|_| std::thread::spawn(move || timed_get(addr, herd_path)))
        .collect();
    let mut results: Vec<(Duration, Duration, usize)> =
        clients.into_iter().map(|c| c.join().unwrap()).collect();
    results.sort();
    let ttfb: Vec<f64> = results.iter().map(|r| r.0.as_secs_f64() * 1000.0).collect();
    let total: Vec<f64> = results.iter().map(|r| r.1.as_secs_f64() * 1000.0).collect();
    println!(
        "cold herd: 32 clients of one uncached 8 MB file: {} upstream GET(s); first byte median {:.1} ms, max {:.1} ms; complete median {:.0} ms, max {:.0} ms; every body {} bytes: {}",
        file_gets.load(Ordering::Relaxed),
        ttfb[16],
        ttfb[31],
        total[16],
        total[31],
        results[0].2,
        results.iter().all(|r| r.2 == results[0].2)
    );

    // Warm: cache both files.
    for name in ["demo-1.0-py3-none-any.whl", "demo-2.0-py3-none-any.whl"] {
        let (_, _, n) = timed_get(addr, &format!("/simple/demo/{name}"));
        assert!(n > 0);
    }
    let nginx_dir = tempfile::tempdir().unwrap();
    let nginx_files: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_ref())).collect();
    let (nginx, nginx_addr) = start_nginx(nginx_dir.path(), &nginx_files, "");
    // The bytes from memory (a kept mapping's writev path), same server.
    let from_memory = {
        let large = large.clone();
        Server::start(
            "127.0.0.1:0".parse().unwrap(),
            ServerConfig::default(),
            move |_| {
                Response::new(200)
                    .header("Content-Type", "application/octet-stream")
                    .body(large.clone())
            },
        )
        .unwrap()
    };

    println!("\nwarm files, wrk keep-alive, {secs}s per point (16 MB rows: MB/s = req/s × 16)");
    header_row();
    for (label, name, conns) in [
        (
            "small 11 KB",
            "demo-1.0-py3-none-any.whl",
            vec![16u32, 64, 256],
        ),
        ("large 16 MB", "demo-2.0-py3-none-any.whl", vec![4u32, 16]),
    ] {
        for c in conns {
            let ours_url = format!("http://{addr}/simple/demo/{name}");
            let nginx_url = format!("http://{nginx_addr}/{name}");
            let (ours, theirs) = support::compare(&ours_url, &nginx_url, c, secs, &[]);
            row(&format!("roxpi {label} sendfile"), c, &ours, Some(&theirs));
            if name.starts_with("demo-2.0") {
                let mem_url = format!("http://{}/x", from_memory.local_addr());
                wrk(&mem_url, c, 1, &[]);
                let mem = wrk(&mem_url, c, secs, &[]);
                row(
                    &format!("roxpi {label} from memory"),
                    c,
                    &mem,
                    Some(&theirs),
                );
            }
            row(&format!("nginx {label}"), c, &theirs, None);
        }
    }
    drop(nginx);
    roxpi.shutdown(Duration::from_secs(2));
    from_memory.shutdown(Duration::from_secs(2));
    upstream.shutdown(Duration::from_secs(2));
}

/// Reads at most 1 MiB per 2.5 ms (~400 MB/s).
struct Paced(std::io::Cursor<Bytes>);

impl Read for Paced {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(Duration::from_micros(2500));
        let n = buf.len().min(1 << 20);
        self.0.read(&mut buf[..n])
    }
}
