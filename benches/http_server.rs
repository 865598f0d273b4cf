//! Benchmark of the HTTP server module with a trivial handler against nginx
//! serving the same bytes as a static file, in the same run, with wrk
//! (keep-alive) at 1, 16 and 64 connections, for a few worker counts.
//!
//! Run `benches/run.sh` (installs nginx and wrk with apt) or, with both on
//! PATH, `cargo bench --bench http_server`. Settings: BENCH_SECONDS (5),
//! BENCH_WORKERS ("8,32,64").

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use roxpi::http::{Response, Server, ServerConfig};

/// The body both servers send: 3 KB, the size of a small project page.
const BODY_LEN: usize = 3 * 1024;

struct Run {
    rps: f64,
    p99_ms: f64,
}

fn wrk(url: &str, conns: u32, secs: u32) -> Run {
    let threads = conns.min(2);
    let out = Command::new("wrk")
        .args([
            &format!("-t{threads}"),
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
            url,
        ])
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"));
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| parse_latency(v.trim()))
        .unwrap_or(f64::NAN);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        eprintln!("wrk reported errors for {url}:\n{text}");
    }
    Run { rps, p99_ms: p99 }
}

/// wrk prints latencies as `123.45us`, `1.23ms` or `1.02s`.
fn parse_latency(s: &str) -> f64 {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => f64::NAN,
    }
}

fn start_nginx(dir: &Path, body: &[u8]) -> (Child, SocketAddr) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    fs::create_dir_all(dir.join("www")).unwrap();
    fs::write(dir.join("www/page"), body).unwrap();
    let conf = format!(
        "worker_processes auto;\n\
         daemon off;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
           access_log off;\n\
           sendfile on; tcp_nopush on; tcp_nodelay on;\n\
           keepalive_requests 1000000; keepalive_timeout 120s;\n\
           open_file_cache max=100;\n\
           client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp;\n\
           fastcgi_temp_path {dir}/tmp; uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;\n\
           default_type application/octet-stream;\n\
           server {{ listen 127.0.0.1:{port}; root {dir}/www; }}\n\
         }}\n",
        dir = dir.display()
    );
    fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new("nginx")
        .args([
            "-c",
            &dir.join("nginx.conf").display().to_string(),
            "-e",
            "stderr",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("start nginx");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, addr)
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    if !have("wrk") || !have("nginx") {
        eprintln!("http_server bench: needs wrk and nginx on PATH; run benches/run.sh (installs them with apt)");
        std::process::exit(2);
    }
    let secs: u32 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let worker_counts: Vec<usize> = std::env::var("BENCH_WORKERS")
        .unwrap_or_else(|_| "8,32,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let body = Bytes::from(
        (0..BODY_LEN)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    let dir = tempfile::tempdir().unwrap();
    let (mut nginx, nginx_addr) = start_nginx(dir.path(), &body);
    let nginx_url = format!("http://{nginx_addr}/page");
    let conns = [1u32, 16, 64];

    println!("HTTP server, {BODY_LEN}-byte body, wrk keep-alive, {secs}s per point, same run");
    println!(
        "{:<22} {:>6} {:>12} {:>10} {:>9}",
        "server", "conns", "req/s", "p99 ms", "vs nginx"
    );
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
            wrk(&url, c, 1);
            wrk(&nginx_url, c, 1);
            let ours = wrk(&url, c, secs);
            let theirs = wrk(&nginx_url, c, secs);
            println!(
                "{:<22} {:>6} {:>12.0} {:>10.2} {:>9}",
                format!("roxpi ({workers} workers)"),
                c,
                ours.rps,
                ours.p99_ms,
                format!("{:.2}x", ours.rps / theirs.rps)
            );
            println!(
                "{:<22} {:>6} {:>12.0} {:>10.2} {:>9}",
                "nginx 1 file", c, theirs.rps, theirs.p99_ms, ""
            );
        }
        server.shutdown(Duration::from_secs(2));
    }
    let _ = nginx.kill();
    let _ = nginx.wait();
}
