//! Real-shapes soak: the 12 real PyPI pages of `tests/fixtures/pypi-pages/`
//! plus generated pages of the same shape (renamed copies: thousands of
//! files, long names, many versions), served by an in-process upstream as
//! JSON (even) and HTML (odd), with pages that answer after 5 s (`slow-*`).
//! Clients (SOAK_CLIENTS, default 8) mix page requests in the three variants
//! installers use (JSON gzip, JSON identity, HTML gzip) with direct file
//! requests (a small wheel listed on each page, often before its page is
//! cached). Every second: requests, p99 latency, evictions, RSS, threads,
//! descriptors and CPU of the real roxpi binary.
//!
//! `cargo build --release && cargo bench --bench real_shapes`
//! (SOAK_SECONDS, default 600; SOAK_INDEX_CACHE_SIZE, default 16M;
//! SOAK_GENERATED, default 36 generated pages).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use roxpi::http::{Later, Response, Server, ServerConfig};
use sha2::Digest;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The fixture pages (name, JSON), decoded.
fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pypi-pages");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
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
            Some((name, json))
        })
        .collect();
    out.sort();
    out
}

/// A page as the upstream serves it: the real JSON with one more file (a
/// small wheel the upstream serves itself), as JSON or as HTML.
fn upstream_page(name: &str, json: &[u8], wheel: &Bytes, html: bool) -> (&'static str, Bytes) {
    let mut v: serde_json::Value = serde_json::from_slice(json).expect("fixture JSON");
    v["name"] = serde_json::json!(name);
    let file = format!("soak_{}-1.0-py3-none-any.whl", name.replace('-', "_"));
    if let Some(files) = v["files"].as_array_mut() {
        files.push(serde_json::json!({
            "filename": file,
            "url": format!("/files/{file}"),
            "hashes": {"sha256": hex::encode(sha2::Sha256::digest(wheel))},
            "size": wheel.len(),
            "upload-time": "2026-01-01T00:00:00.000000Z",
        }));
    }
    let body = serde_json::to_vec(&v).unwrap();
    if !html {
        return ("application/vnd.pypi.simple.v1+json", Bytes::from(body));
    }
    let base = url::Url::parse("https://pypi.example/simple/x/").unwrap();
    let page = roxpi::pypi::parse_project_page(&body, roxpi::pypi::Format::Json, &base).unwrap();
    let pname = roxpi::pypi::ProjectName::from_upstream(name).unwrap();
    let html = roxpi::pypi::render_project(&pname, &page, roxpi::pypi::PageFormat::Html);
    ("text/html", Bytes::from(html))
}

struct Site {
    /// Project names (`slow-*` answer after 5 s).
    names: Vec<String>,
    wheel: Bytes,
    /// Page requests the upstream got, and of them for `slow-*` pages.
    fetches: Arc<AtomicU64>,
    slow_fetches: Arc<AtomicU64>,
}

fn upstream(generated: usize) -> (Server, Site) {
    let wheel = Bytes::from(vec![5u8; 11 * 1024]);
    let real = fixtures();
    let mut pages = std::collections::HashMap::new();
    let mut names = Vec::new();
    for (i, (name, json)) in real.iter().enumerate() {
        pages.insert(name.clone(), upstream_page(name, json, &wheel, i % 2 == 1));
        names.push(name.clone());
    }
    // Renamed copies of the real pages, each in turn (the same spread of
    // sizes), and a slow copy every ninth.
    for k in 0..generated {
        let (base, json) = &real[k % real.len()];
        let name = if k % 9 == 8 {
            format!("slow-{base}-{k}")
        } else {
            format!("gen-{base}-{k}")
        };
        pages.insert(name.clone(), upstream_page(&name, json, &wheel, k % 2 == 0));
        names.push(name);
    }
    let served = wheel.clone();
    let fetches = Arc::new(AtomicU64::new(0));
    let slow_fetches = Arc::new(AtomicU64::new(0));
    let (f, sf) = (Arc::clone(&fetches), Arc::clone(&slow_fetches));
    let server = Server::start(
        "127.0.0.1:0".parse().unwrap(),
        ServerConfig::default(),
        move |req| {
            let parts: Vec<&str> = req.path().trim_matches('/').split('/').collect();
            match parts.as_slice() {
                ["files", _] => Response::new(200).body(served.clone()),
                ["simple", name] => match pages.get(*name) {
                    Some((ct, body)) => {
                        f.fetch_add(1, Ordering::Relaxed);
                        if name.starts_with("slow-") {
                            sf.fetch_add(1, Ordering::Relaxed);
                        }
                        let r = Response::new(200)
                            .header("Content-Type", *ct)
                            .body(body.clone());
                        if name.starts_with("slow-") {
                            let slot = Mutex::new(Some(r));
                            Response::later(Later {
                                deadline: Instant::now() + Duration::from_secs(5),
                                subscribe: Box::new(|_| {}),
                                resume: Box::new(move |_| {
                                    slot.lock()
                                        .ok()
                                        .and_then(|mut s| s.take())
                                        .unwrap_or_else(|| Response::new(500))
                                }),
                            })
                        } else {
                            r
                        }
                    }
                    None => Response::text(404, "no\n"),
                },
                _ => Response::text(404, "no\n"),
            }
        },
    )
    .unwrap();
    (
        server,
        Site {
            names,
            wheel,
            fetches,
            slow_fetches,
        },
    )
}

fn start_roxpi(index: &str, cache: &std::path::Path, size: &str) -> (Child, SocketAddr) {
    let bin = env!("CARGO_MANIFEST_DIR").to_owned() + "/target/release/roxpi";
    let mut child = Command::new(bin)
        .env("ROXPI_BIND", "127.0.0.1:0")
        .env("ROXPI_INDEX_URL", index)
        .env("ROXPI_CACHE_DIR", cache)
        .env("ROXPI_INDEX_CACHE_SIZE", size)
        .stdout(Stdio::piped())
        // SOAK_LOG=<file>: roxpi's log there (at ROXPI_LOG, default warn).
        .env(
            "ROXPI_LOG",
            std::env::var("ROXPI_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stderr(match std::env::var("SOAK_LOG") {
            Ok(path) => Stdio::from(std::fs::File::create(path).expect("SOAK_LOG")),
            Err(_) => Stdio::null(),
        })
        .spawn()
        .expect("run target/release/roxpi (cargo build --release first)");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .rsplit("http://")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (child, addr)
}

/// One GET on a kept-alive connection: the status, or `None` if the
/// connection failed.
fn get(
    conn: &mut Option<BufReader<TcpStream>>,
    addr: SocketAddr,
    path: &str,
    headers: &str,
) -> Option<u16> {
    if conn.is_none() {
        let s = TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(150))).ok()?;
        *conn = Some(BufReader::new(s));
    }
    let r = conn.as_mut()?;
    let sent = r
        .get_mut()
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: soak\r\n{headers}\r\n").as_bytes());
    let out = sent.ok().and_then(|()| read_response(r));
    if out.is_none() {
        *conn = None;
    }
    out
}

fn read_response(r: &mut BufReader<TcpStream>) -> Option<u16> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let status = line.split(' ').nth(1)?.parse().ok()?;
    let mut len = 0usize;
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
    std::io::copy(&mut r.by_ref().take(len as u64), &mut std::io::sink()).ok()?;
    Some(status)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn count(pid: u32, what: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/{what}")).map_or(0, |d| d.count())
}

/// CPU ticks (user + system).
fn cpu(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(at) = stat.rfind(')') else { return 0 };
    let f: Vec<&str> = stat[at + 2..].split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn metric(addr: SocketAddr, name: &str) -> u64 {
    let Some(mut s) = TcpStream::connect(addr).ok().map(BufReader::new) else {
        return 0;
    };
    let _ = s
        .get_mut()
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let secs: u64 = env_or("SOAK_SECONDS", 600);
    let clients: usize = env_or("SOAK_CLIENTS", 8);
    let generated: usize = env_or("SOAK_GENERATED", 36);
    let size = std::env::var("SOAK_INDEX_CACHE_SIZE").unwrap_or_else(|_| "16M".into());
    let (up, site) = upstream(generated);
    let index = format!("http://{}/simple/", up.local_addr());
    let cache = tempfile::tempdir().unwrap();
    let (mut child, addr) = start_roxpi(&index, cache.path(), &size);
    let pid = child.id();
    let names = Arc::new(site.names);
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let not_ok = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<u32>::new()));
    let variants = [
        "Accept: application/vnd.pypi.simple.v1+json\r\nAccept-Encoding: gzip\r\n",
        "Accept: application/vnd.pypi.simple.v1+json\r\n",
        "Accept: text/html\r\nAccept-Encoding: gzip\r\n",
    ];
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let (names, stop, failed, not_ok, latencies) = (
                Arc::clone(&names),
                Arc::clone(&stop),
                Arc::clone(&failed),
                Arc::clone(&not_ok),
                Arc::clone(&latencies),
            );
            std::thread::spawn(move || {
                let mut conn = None;
                // A small LCG: deterministic per client, no dependency.
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ c as u64;
                let mut next = move |n: usize| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((x >> 33) as usize) % n
                };
                while !stop.load(Ordering::Relaxed) {
                    let name = &names[next(names.len())];
                    let (path, headers) = if next(4) == 0 {
                        let file = format!("soak_{}-1.0-py3-none-any.whl", name.replace('-', "_"));
                        (format!("/index/{name}/{file}"), "")
                    } else {
                        (format!("/index/{name}/"), variants[next(3)])
                    };
                    let t = Instant::now();
                    match get(&mut conn, addr, &path, headers) {
                        Some(200) => {}
                        Some(_) => {
                            not_ok.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let us = t.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    latencies.lock().unwrap().push(us);
                }
            })
        })
        .collect();
    println!(
        "real shapes: {} pages ({} real, {generated} generated, slow-* answer after 5 s), \
         {clients} clients, ROXPI_INDEX_CACHE_SIZE={size}, {secs} s, roxpi pid {pid}, wheel {} B",
        names.len(),
        names.len() - generated,
        site.wheel.len()
    );
    println!(
        "{:>6} {:>7} {:>9} {:>9} {:>9} {:>8} {:>8} {:>7} {:>5} {:>5}",
        "second",
        "req/s",
        "p99_ms",
        "max_ms",
        "evicted",
        "rss_MiB",
        "hwm_MiB",
        "threads",
        "fds",
        "cpu%"
    );
    let started = Instant::now();
    let (mut last_cpu, mut rows) = (cpu(pid), Vec::new());
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        let mut lat = std::mem::take(&mut *latencies.lock().unwrap());
        lat.sort_unstable();
        let p99 = lat
            .get(lat.len().saturating_sub(1) * 99 / 100)
            .copied()
            .unwrap_or(0);
        let max = lat.last().copied().unwrap_or(0);
        let now_cpu = cpu(pid);
        let row = (
            started.elapsed().as_secs(),
            lat.len(),
            p99 as f64 / 1000.0,
            max as f64 / 1000.0,
            metric(addr, "roxpi_index_evictions_total"),
            status_kib(pid, "VmRSS:") / 1024,
            status_kib(pid, "VmHWM:") / 1024,
            count(pid, "task"),
            count(pid, "fd"),
            now_cpu - last_cpu,
        );
        last_cpu = now_cpu;
        if row.0 % 10 == 0 || row.0 <= 5 {
            println!(
                "{:>6} {:>7} {:>9.1} {:>9.1} {:>9} {:>8} {:>8} {:>7} {:>5} {:>5}",
                row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9
            );
        }
        rows.push(row);
    }
    stop.store(true, Ordering::Relaxed);
    println!(
        "\nper minute: req/s mean, p99 ms max, RSS MiB min..max, threads max, fds max, cpu% mean"
    );
    for m in 0..=(secs / 60) {
        let w: Vec<_> = rows
            .iter()
            .filter(|r| r.0.saturating_sub(1) / 60 == m)
            .collect();
        if w.is_empty() {
            continue;
        }
        let n = w.len() as f64;
        println!(
            "  minute {m:>2}: {:>7.0} req/s  p99 {:>7.1}  rss {:>4}..{:>4}  threads {:>3}  fds {:>4}  cpu {:>4.0}%",
            w.iter().map(|r| r.1 as f64).sum::<f64>() / n,
            w.iter().map(|r| r.2).fold(0.0, f64::max),
            w.iter().map(|r| r.5).min().unwrap_or(0),
            w.iter().map(|r| r.5).max().unwrap_or(0),
            w.iter().map(|r| r.7).max().unwrap_or(0),
            w.iter().map(|r| r.8).max().unwrap_or(0),
            w.iter().map(|r| r.9 as f64).sum::<f64>() / n,
        );
    }
    println!(
        "\nupstream page fetches: {} ({} of slow pages), for {} pages",
        site.fetches.load(Ordering::Relaxed),
        site.slow_fetches.load(Ordering::Relaxed),
        names.len()
    );
    println!(
        "peak RSS {} MiB (bound: index cache {size} + 96 MiB); {} not 200, {} failed connections; evictions {}",
        status_kib(pid, "VmHWM:") / 1024,
        not_ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        metric(addr, "roxpi_index_evictions_total"),
    );
    let _ = child.kill();
    for w in workers {
        let _ = w.join();
    }
    up.shutdown(Duration::from_secs(1));
}
