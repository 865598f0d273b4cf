//! Benchmark of the HTTP server module with a trivial handler against nginx
//! serving the same bytes as a static file, in the same run, with wrk
//! (keep-alive) at 1, 16, 64 and 256 connections, for a few worker counts.
//!
//! Run `benches/run.sh` (installs nginx and wrk with apt) or, with both on
//! PATH, `cargo bench --bench http_server`. Settings: BENCH_SECONDS (5),
//! BENCH_WORKERS (default: the `auto` count, twice it, and 32).

mod support;

use std::time::Duration;

use bytes::Bytes;
use roxpi::http::{Response, Server, ServerConfig};
use support::{header_row, require_tools, row, start_nginx};

/// The body both servers send: 3 KB, the size of a small project page.
const BODY_LEN: usize = 3 * 1024;

fn main() {
    require_tools();
    support::pin_self();
    let secs = support::seconds();
    let auto = roxpi::http::default_workers();
    let worker_counts: Vec<usize> = std::env::var("BENCH_WORKERS")
        .unwrap_or_else(|_| format!("{auto},{},32", 2 * auto))
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let body = Bytes::from(
        (0..BODY_LEN)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    let dir = tempfile::tempdir().unwrap();
    let (nginx, nginx_addr) = start_nginx(dir.path(), &[("page", &body)], "");
    let nginx_url = format!("http://{nginx_addr}/page");
    let conns = [1u32, 16, 64, 256];

    println!("HTTP server, {BODY_LEN}-byte body, wrk keep-alive, {secs}s per point, same run");
    header_row();
    for &workers in &worker_counts {
        let b = body.clone();
        let server = Server::start(
            "127.0.0.1:0".parse().unwrap(),
            ServerConfig {
                workers,
                ..ServerConfig::default()
            },
            move |_req| {
                Response::new(200)
                    .header("Content-Type", "text/html")
                    .body(b.clone())
            },
        )
        .unwrap();
        let url = format!("http://{}/page", server.local_addr());
        for &c in &conns {
            let (ours, theirs) = support::compare(&url, &nginx_url, c, secs, &[]);
            row(
                &format!("roxpi ({workers} workers)"),
                c,
                &ours,
                Some(&theirs),
            );
            row("nginx static file", c, &theirs, None);
        }
        server.shutdown(Duration::from_secs(2));
    }
    drop(nginx);
}
