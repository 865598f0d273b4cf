//! Soak: minutes of mixed load against the real roxpi binary, sampling its
//! RSS, threads and open descriptors every second. Run with
//! `cargo bench --bench soak` (SOAK_SECONDS, default 600).
//!
//! Load, all at once: warm pages and warm files (keep-alive loops), misses
//! (a new project name per request, pages that exist and pages that do
//! not), slow readers (a 16 MB file read at 64 KB/s, dropped after 10 s),
//! and a slow upstream (pages and files that answer after 20 s). The
//! upstream is in-process (roxpi's own server module) on loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use roxpi::http::{Later, Response, Server, ServerConfig};
use sha2::Digest;

fn sha(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

fn page(name: &str, files: &[(String, Bytes)]) -> String {
    let entries: Vec<String> = files
        .iter()
        .map(|(f, b)| {
            format!(
                r#"{{"filename":"{f}","url":"/files/{name}/{f}","hashes":{{"sha256":"{}"}},"size":{}}}"#,
                sha(b),
                b.len()
            )
        })
        .collect();
    format!(
        r#"{{"meta":{{"api-version":"1.1"}},"name":"{name}","files":[{}],"versions":[]}}"#,
        entries.join(",")
    )
}

fn upstream() -> Server {
    let small = Bytes::from(vec![7u8; 11 * 1024]);
    let mid = Bytes::from(vec![8u8; 1 << 20]);
    let big = Bytes::from(
        (0..16u32 << 20)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let files = vec![
        ("warm-1.0-py3-none-any.whl".to_owned(), small),
        ("warm-2.0-py3-none-any.whl".to_owned(), mid),
        ("warm-3.0-py3-none-any.whl".to_owned(), big),
    ];
    let warm_page = page("warm", &files);
    Server::start(
        "127.0.0.1:0".parse().unwrap(),
        ServerConfig::default(),
        move |req| {
            let json = "application/vnd.pypi.simple.v1+json";
            let parts: Vec<&str> = req.path().trim_matches('/').split('/').collect();
            let hang = |r: Response| {
                let slot = std::sync::Mutex::new(Some(r));
                Response::later(Later {
                    deadline: Instant::now() + Duration::from_secs(20),
                    subscribe: Box::new(|_| {}),
                    resume: Box::new(move |_| {
                        slot.lock()
                            .ok()
                            .and_then(|mut s| s.take())
                            .unwrap_or_else(|| Response::new(500))
                    }),
                })
            };
            match parts.as_slice() {
                ["simple", "warm"] => Response::new(200)
                    .header("Content-Type", json)
                    .body(warm_page.clone()),
                ["simple", name] if name.starts_with("slow") => hang(
                    Response::new(200)
                        .header("Content-Type", json)
                        .body(page(name, &[])),
                ),
                ["simple", name] if name.starts_with("miss") && name.ends_with('0') => {
                    Response::text(404, "no\n")
                }
                ["simple", name] if name.starts_with("miss") => {
                    let files = vec![(format!("{name}-1.0.tar.gz"), Bytes::from(vec![1u8; 2000]))];
                    Response::new(200)
                        .header("Content-Type", json)
                        .body(page(name, &files))
                }
                ["files", "warm", f] => match files.iter().find(|(n, _)| n == f) {
                    Some((_, b)) => Response::new(200).body(b.clone()),
                    None => Response::text(404, "no\n"),
                },
                ["files", _, _] => Response::new(200).body(Bytes::from(vec![1u8; 2000])),
                _ => Response::text(404, "no\n"),
            }
        },
    )
    .unwrap()
}

fn start_roxpi(index: &str, cache: &std::path::Path) -> (Child, SocketAddr) {
    let bin = env!("CARGO_MANIFEST_DIR").to_owned() + "/target/release/roxpi";
    let mut child = Command::new(bin)
        .env("ROXPI_BIND", "127.0.0.1:0")
        .env("ROXPI_INDEX_URL", index)
        .env("ROXPI_CACHE_DIR", cache)
        .env("ROXPI_LOG", "warn")
        // ~50 new projects a second fill a 64 MiB index cache in about half
        // an hour; a small bound shows the plateau within the run.
        .env(
            "ROXPI_INDEX_CACHE_SIZE",
            std::env::var("SOAK_INDEX_CACHE_SIZE").unwrap_or_else(|_| "8M".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run target/release/roxpi (cargo build --release first)");
    let mut out = child.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while out.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    let text = String::from_utf8_lossy(&line);
    let addr = text
        .rsplit("http://")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (child, addr)
}

/// One GET on a kept-alive connection; the body length.
fn get(
    conn: &mut Option<std::io::BufReader<TcpStream>>,
    addr: SocketAddr,
    path: &str,
) -> Option<usize> {
    if conn.is_none() {
        let s = TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
        *conn = Some(std::io::BufReader::new(s));
    }
    let r = conn.as_mut()?;
    let sent = r
        .get_mut()
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: soak\r\n\r\n").as_bytes());
    let result = sent.ok().and_then(|()| read_response(r));
    if result.is_none() {
        *conn = None;
    }
    result
}

fn read_response(r: &mut std::io::BufReader<TcpStream>) -> Option<usize> {
    use std::io::BufRead;
    let mut len = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some(len)
}

fn proc_count(pid: u32, what: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/{what}"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let secs: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let up = upstream();
    let index = format!("http://{}/simple/", up.local_addr());
    let cache = tempfile::tempdir().unwrap();
    let (mut child, addr) = start_roxpi(&index, cache.path());
    let pid = child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    let load = |paths: Vec<String>, pace: Duration| {
        let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut conn = None;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let p = &paths[(i as usize) % paths.len()];
                let p = p.replace("{i}", &i.to_string());
                match get(&mut conn, addr, &p) {
                    Some(_) => done.fetch_add(1, Ordering::Relaxed),
                    None => failed.fetch_add(1, Ordering::Relaxed),
                };
                i += 1;
                std::thread::sleep(pace);
            }
        })
    };
    let warm = vec![
        "/simple/warm/".to_owned(),
        "/simple/warm/warm-1.0-py3-none-any.whl".to_owned(),
        "/simple/warm/warm-2.0-py3-none-any.whl".to_owned(),
    ];
    for _ in 0..4 {
        workers.push(load(warm.clone(), Duration::ZERO));
    }
    workers.push(load(
        vec![
            "/simple/miss-{i}/".into(),
            "/simple/miss-{i}1/miss-{i}1-1.0.tar.gz".into(),
        ],
        Duration::from_millis(20),
    ));
    workers.push(load(
        vec!["/simple/slow-{i}/".into()],
        Duration::from_millis(200),
    ));
    // Slow readers: 20 at a time, each reading the 16 MB file at 64 KB/s
    // for 10 s, then dropping it.
    for _ in 0..20 {
        let stop = stop.clone();
        workers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = TcpStream::connect(addr) else {
                    continue;
                };
                let _ = s.write_all(
                    b"GET /simple/warm/warm-3.0-py3-none-any.whl HTTP/1.1\r\nHost: soak\r\n\r\n",
                );
                let mut buf = vec![0u8; 64 * 1024];
                for _ in 0..10 {
                    if stop.load(Ordering::Relaxed) || s.read(&mut buf).unwrap_or(0) == 0 {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }));
    }
    println!("soak for {secs}s against roxpi pid {pid}");
    println!(
        "{:>6} {:>9} {:>8} {:>6} {:>10} {:>8}",
        "second", "rss_kib", "threads", "fds", "requests", "failed"
    );
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        let s = (
            started.elapsed().as_secs(),
            rss_kib(pid),
            proc_count(pid, "task"),
            proc_count(pid, "fd"),
            done.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed),
        );
        if s.0 % 30 == 0 {
            println!(
                "{:>6} {:>9} {:>8} {:>6} {:>10} {:>8}",
                s.0, s.1, s.2, s.3, s.4, s.5
            );
        }
        samples.push(s);
    }
    stop.store(true, Ordering::Relaxed);
    println!(
        "\n{} requests answered, {} failed or cut (slow-upstream pages answer after 20 s)",
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    let minute = |m: usize| {
        let w: Vec<_> = samples
            .iter()
            .filter(|s| (s.0 / 60) as usize == m)
            .collect();
        (
            w.iter().map(|s| s.1).min().unwrap_or(0),
            w.iter().map(|s| s.1).max().unwrap_or(0),
            w.iter().map(|s| s.2).max().unwrap_or(0),
            w.iter().map(|s| s.3).max().unwrap_or(0),
        )
    };
    println!("\nper minute: rss min/max KiB, threads max, fds max");
    for m in 0..=(secs as usize / 60) {
        let (lo, hi, t, f) = minute(m);
        if hi > 0 {
            println!("  minute {m:>2}: rss {lo:>7}..{hi:>7}  threads {t:>4}  fds {f:>5}");
        }
    }
    let _ = child.kill();
    for w in workers {
        let _ = w.join();
    }
    up.shutdown(Duration::from_secs(1));
}
