//! Warm serving from each storage backend, on the same files: `local` (the
//! disk LRU), `tiered` (L1 hit) and `s3` (every request a bucket read,
//! verified, coalesced), against s3s-fs on loopback. Also the first request
//! of a file on a fresh tiered node (an L1 miss served from the bucket).
//!
//! S3 requests go through the tests' proxy (a fresh connection each; see
//! below why). Needs wrk and s3s-fs 0.14.1 (`cargo install s3s-fs --version 0.14.1
//! --features binary --locked`, or `ROXPI_S3S_FS`).
//! Run: `cargo bench --bench storage_tiers` (BENCH_SECONDS, BENCH_PIN).

mod support;

#[path = "../tests/s3_server.rs"]
#[allow(dead_code)]
mod s3_server;

use std::time::{Duration, Instant};

use bytes::Bytes;
use roxpi::http::{Response, Server, ServerConfig};
use sha2::{Digest, Sha256};
use support::{require_tools, row, wrk};

fn blob(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

fn get(addr: std::net::SocketAddr, path: &str) -> (u16, usize, Duration) {
    use std::io::{Read, Write};
    let start = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let status = std::str::from_utf8(&got[9..12]).unwrap().parse().unwrap();
    let body = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |i| got.len() - i - 4);
    (status, body, start.elapsed())
}

fn main() {
    require_tools();
    support::pin_self();
    let Some(s3) = s3_server::S3Server::start() else {
        eprintln!("storage_tiers needs s3s-fs: {}", s3_server::INSTALL);
        std::process::exit(1);
    };
    let secs = support::seconds();
    let files: Vec<(&str, Bytes)> = vec![
        ("demo-1.0-py3-none-any.whl", blob(11 * 1024, 1)),
        ("demo-2.0-py3-none-any.whl", blob(1 << 20, 2)),
    ];
    let page = support::demo_page(&files);
    let upstream = {
        let files = files.clone();
        Server::start(
            "127.0.0.1:0".parse().unwrap(),
            ServerConfig::default(),
            move |req| {
                if let Some(answer) = support::file_answer(&files, req.path()) {
                    return answer;
                }
                Response::new(200)
                    .header("Content-Type", "application/vnd.pypi.simple.v1+json")
                    .body(page.clone())
            },
        )
        .unwrap()
    };
    let index = format!("http://{}/simple/", upstream.local_addr());
    // Through the test proxy, one connection per S3 request: s3s-fs does
    // not set TCP_NODELAY, so on a kept-alive connection its split writes
    // wait for a delayed ACK (40 ms per request, measured); AWS S3 and
    // MinIO do not have that stall.
    let proxy = s3_server::S3Proxy::start(s3.addr);
    let endpoint = proxy.url();
    // The bucket's credentials come from the environment, as in production.
    std::env::set_var("AWS_ACCESS_KEY_ID", s3_server::ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", s3_server::SECRET_KEY);
    let start = |storage: &str, cache: &std::path::Path| {
        support::start_roxpi(&[
            "--index-url",
            &index,
            "--log",
            "off",
            "--cache-dir",
            &cache.display().to_string(),
            "--download-timeout",
            "30",
            "--storage",
            storage,
            "--s3-bucket",
            s3_server::BUCKET,
            "--s3-endpoint",
            &endpoint,
            "--s3-path-style",
        ])
    };
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let local = start("local", dirs[0].path());
    let tiered = start("tiered", dirs[1].path());
    // Warm: every file through the tiered node (into L1 and the bucket)
    // and the local node.
    for (name, b) in &files {
        for node in [&local, &tiered] {
            let (status, len, _) = get(node.local_addr(), &format!("/simple/demo/{name}"));
            assert_eq!((status, len), (200, b.len()));
        }
    }
    // The uploads finish after the answers: wait until the bucket has them.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (name, b) in &files {
        let key = s3_server::file_key(&hex::encode(Sha256::digest(b)), name);
        while !s3_server::holds(&s3.object_path(&key), b) {
            assert!(Instant::now() < deadline, "{key} never reached the bucket");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let s3_node = start("s3", dirs[2].path());
    let fresh = start("tiered", dirs[3].path());
    let _ = get(fresh.local_addr(), "/simple/demo/");
    let _ = get(s3_node.local_addr(), "/simple/demo/");

    println!("first request on a fresh tiered node (L1 miss, read from the bucket, verified):");
    for (name, b) in &files {
        let (status, len, took) = get(fresh.local_addr(), &format!("/simple/demo/{name}"));
        assert_eq!((status, len), (200, b.len()));
        println!(
            "  {name} ({} bytes): {:.2} ms",
            b.len(),
            took.as_secs_f64() * 1000.0
        );
    }

    println!("\nwarm files, wrk keep-alive, {secs}s per point (ratio: vs local)");
    println!(
        "{:<28} {:>6} {:>12} {:>10} {:>9}",
        "backend", "conns", "req/s", "p99 ms", "vs local"
    );
    for (label, name) in [("11 KB", files[0].0), ("1 MB", files[1].0)] {
        for conns in [1u32, 16] {
            let url = |s: &Server| format!("http://{}/simple/demo/{name}", s.local_addr());
            wrk(&url(&local), conns, 1, &[]);
            let base = wrk(&url(&local), conns, secs, &[]);
            row(&format!("local {label}"), conns, &base, None);
            for (backend, node) in [("tiered", &tiered), ("s3", &s3_node)] {
                wrk(&url(node), conns, 1, &[]);
                let run = wrk(&url(node), conns, secs, &[]);
                row(&format!("{backend} {label}"), conns, &run, Some(&base));
            }
        }
    }
}
