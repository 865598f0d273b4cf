//! The hot path against static nginx: warm pages and files, served by the
//! roxpi binary as its users run it (release build, access log on, to a
//! file), against nginx serving the very same bytes as static files, in
//! the same run.
//!
//! - **Bytes:** the page is roxpi's own gzip'd JSON answer for
//!   `/index/pip/` (the real pip page from `tests/fixtures/pypi-pages`:
//!   118 KB, 300 files), captured after warming and given to nginx as
//!   `page` + `page.gz` (`gzip_static on`). The files are an 11 KB and a
//!   16 MB wheel, cached by roxpi from an in-process fake upstream.
//! - **nginx:** 2 workers, `sendfile`, `tcp_nopush`, `tcp_nodelay`,
//!   `keepalive_requests 1000000`, `open_file_cache max=1000 inactive=60s`,
//!   `open_file_cache_valid 60s`; once with `access_log off` and once with
//!   a buffered access log (`buffer=64k flush=1s`), since roxpi's is on.
//! - **Runs:** per point a 1 s warm-up each, then `BENCH_ROUNDS` (3)
//!   rounds of `BENCH_SECONDS` (5) per server in A/B/C, C/B/A order;
//!   medians of req/s and of p99.
//!
//! `cargo bench --bench hot_path` (or `benches/run.sh`). `BENCH_PIN=1`
//! puts the servers on CPU 0 and wrk on CPU 1; `BENCH_ONLY="page 256"`
//! measures only the matching points; `ROXPI_*` settings in the bench's
//! environment reach roxpi. The output ends with a Markdown table, and
//! roxpi's RSS idle and at its peak.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use roxpi::http::{Response, Server, ServerConfig};
use support::{require_tools, start_nginx, wrk, Run};

const ACCEPT_JSON: &str = "Accept: application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";
const ACCEPT_GZIP: &str = "Accept-Encoding: gzip, deflate";
const SMALL: &str = "demo-1.0-py3-none-any.whl";
const LARGE: &str = "demo-2.0-py3-none-any.whl";

fn blob(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

fn pip_page() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pypi-pages/pip.json.gz");
    let gz = std::fs::read(&path).expect("the pip fixture page");
    let mut page = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut page)
        .expect("gunzip the fixture");
    page
}

/// The fake upstream: the pip page, the `demo` page and its two wheels.
fn upstream(files: Vec<(&'static str, Bytes)>) -> Server {
    let pip = Bytes::from(pip_page());
    let demo = Bytes::from(support::demo_page(&files));
    Server::start(
        "127.0.0.1:0".parse().unwrap(),
        ServerConfig::default(),
        move |req| {
            if let Some(answer) = support::file_answer(&files, req.path()) {
                return answer;
            }
            let page = match req.path() {
                "/simple/pip/" => pip.clone(),
                "/simple/demo/" => demo.clone(),
                _ => return Response::new(404),
            };
            Response::new(200)
                .header("Content-Type", "application/vnd.pypi.simple.v1+json")
                .body(page)
        },
    )
    .unwrap()
}

/// The roxpi binary with default settings (access log on, to `log`).
struct Roxpi {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Roxpi {
    fn start(index: &str, cache: &Path, log: &Path) -> Roxpi {
        use std::io::BufRead;
        let bin = env!("CARGO_BIN_EXE_roxpi");
        let mut cmd = if support::pinned() {
            let mut c = Command::new("taskset");
            c.args(["-c", "0", bin]);
            c
        } else {
            Command::new(bin)
        };
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", cache)
            .env("ROXPI_BIND", "127.0.0.1:0")
            .env("ROXPI_INDEX_URL", index)
            .env("ROXPI_CACHE_DIR", cache.join("cache"))
            .env("ROXPI_INDEX_TTL", "3600")
            // The bench's own ROXPI_* settings reach roxpi (ROXPI_LOG=warn
            // measures it without the access log, ROXPI_WORKERS=N …).
            .envs(
                std::env::vars_os()
                    .filter(|(k, _)| k.to_str().is_some_and(|k| k.starts_with("ROXPI_"))),
            )
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("access log file"));
        let mut child = cmd.spawn().expect("start roxpi");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("roxpi prints its address");
        let addr = line
            .trim()
            .rsplit("://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Roxpi { child, addr }
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Roxpi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET through curl: the body bytes (`--compressed` off: as sent).
fn curl(url: &str, headers: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .arg("-sf")
        .args(headers.iter().flat_map(|h| ["-H", h]))
        .arg(url)
        .output()
        .expect("curl");
    assert!(out.status.success() && !out.stdout.is_empty(), "GET {url}");
    out.stdout
}

/// What one table row measures: roxpi's path and nginx's file.
struct Point {
    label: &'static str,
    ours: String,
    theirs: &'static str,
    conns: &'static [u32],
    headers: &'static [&'static str],
}

/// One server at one point: its median run, and the median CPU time it
/// used per request (all its threads or worker processes).
struct Measured {
    run: Run,
    cpu_us: f64,
}

/// One measured point: each server (its URL and process id), in the order
/// given.
fn point(servers: &[(&str, u32)], conns: u32, secs: u32, headers: &[&str]) -> Vec<Measured> {
    for (url, _) in servers {
        wrk(url, conns, 1, headers);
    }
    let mut runs: Vec<Vec<(Run, f64)>> = servers.iter().map(|_| Vec::new()).collect();
    for round in 0..support::rounds() {
        // A/B/C then C/B/A: drift of the machine falls on every side.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..servers.len()).collect()
        } else {
            (0..servers.len()).rev().collect()
        };
        for i in order {
            let (url, pid) = servers[i];
            let before = support::cpu_seconds(pid);
            let run = wrk(url, conns, secs, headers);
            let used = support::cpu_seconds(pid) - before;
            let cpu_us = used * 1e6 / (run.rps * f64::from(secs));
            runs[i].push((run, cpu_us));
        }
    }
    runs.into_iter()
        .map(|r| Measured {
            cpu_us: support::middle(r.iter().map(|(_, c)| *c).collect()),
            run: support::median(r.into_iter().map(|(run, _)| run).collect()),
        })
        .collect()
}

/// `BENCH_ONLY="page 256,wheel 16"`: only the points whose "label conns"
/// contains one of the comma-separated words.
fn wanted(label: &str, conns: u32) -> bool {
    let Ok(only) = std::env::var("BENCH_ONLY") else {
        return true;
    };
    let name = format!("{label} {conns}");
    only.split(',')
        .any(|w| !w.trim().is_empty() && name.contains(w.trim()))
}

fn main() {
    require_tools();
    support::pin_self();
    let secs = support::seconds();
    let files = vec![(SMALL, blob(11 * 1024, 1)), (LARGE, blob(16 << 20, 2))];
    let upstream = upstream(files.clone());
    let dir = tempfile::tempdir().unwrap();
    let index = format!("http://{}/simple/", upstream.local_addr());
    let roxpi = Roxpi::start(&index, dir.path(), &dir.path().join("roxpi.log"));
    let base = format!("http://{}", roxpi.addr);

    // Warm roxpi, and take its answers as nginx's files.
    let page = curl(&format!("{base}/index/pip/"), &[ACCEPT_JSON, ACCEPT_GZIP]);
    assert_eq!(&page[..2], b"\x1f\x8b", "roxpi answered the page gzip'd");
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(page.as_slice())
        .read_to_end(&mut plain)
        .expect("gunzip roxpi's page");
    curl(&format!("{base}/index/demo/"), &[ACCEPT_JSON]);
    for (name, body) in &files {
        let got = curl(&format!("{base}/index/demo/{name}"), &[]);
        assert_eq!(got.len(), body.len(), "{name} cached whole");
    }
    let idle_kib = roxpi.status_kib("VmRSS:");

    let www: Vec<(&str, &[u8])> = vec![
        ("page", plain.as_slice()),
        ("page.gz", page.as_slice()),
        (SMALL, files[0].1.as_ref()),
        (LARGE, files[1].1.as_ref()),
    ];
    let location = "location = /page { default_type application/vnd.pypi.simple.v1+json; gzip_static on; gzip_vary on; }";
    let quiet_dir = tempfile::tempdir().unwrap();
    let (quiet, quiet_addr) = start_nginx(quiet_dir.path(), &www, location);
    let logged_dir = tempfile::tempdir().unwrap();
    let logged_conf = format!(
        "access_log {}/access.log combined buffer=64k flush=1s; {location}",
        logged_dir.path().display()
    );
    let (logged, logged_addr) = start_nginx(logged_dir.path(), &www, &logged_conf);

    println!(
        "hot path: roxpi (binary, access log on) vs static nginx, {secs}s × {} rounds per point",
        support::rounds()
    );
    println!("page: /index/pip/ as JSON, gzip {} bytes", page.len());
    println!();
    println!("| path | conns | roxpi req/s | nginx req/s | ratio | p99 roxpi / nginx | CPU µs/req roxpi / nginx | nginx+log req/s | ratio | p99 nginx+log | CPU µs/req nginx+log |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let points = [
        Point {
            label: "warm page",
            ours: "/index/pip/".into(),
            theirs: "page",
            conns: &[16, 64, 256],
            headers: &[ACCEPT_JSON, ACCEPT_GZIP],
        },
        Point {
            label: "11 KB wheel",
            ours: format!("/index/demo/{SMALL}"),
            theirs: SMALL,
            conns: &[16, 64, 256],
            headers: &[],
        },
        Point {
            label: "16 MB wheel",
            ours: format!("/index/demo/{LARGE}"),
            theirs: LARGE,
            conns: &[16],
            headers: &[],
        },
    ];
    for Point {
        label,
        ours,
        theirs,
        conns,
        headers,
    } in &points
    {
        for &c in conns.iter() {
            if !wanted(label, c) {
                continue;
            }
            let urls = [
                format!("{base}{ours}"),
                format!("http://{quiet_addr}/{theirs}"),
                format!("http://{logged_addr}/{theirs}"),
            ];
            let pids = [roxpi.child.id(), quiet.pid(), logged.pid()];
            let servers: Vec<(&str, u32)> = urls.iter().map(String::as_str).zip(pids).collect();
            let m = point(&servers, c, secs, headers);
            let (r, n, l) = (&m[0].run, &m[1].run, &m[2].run);
            println!(
                "| {label} | {c} | {:.0} | {:.0} | {:.2}× | {:.2} / {:.2} ms | {:.1} / {:.1} | {:.0} | {:.2}× | {:.2} ms | {:.1} |",
                r.rps,
                n.rps,
                r.rps / n.rps,
                r.p99_ms,
                n.p99_ms,
                m[0].cpu_us,
                m[1].cpu_us,
                l.rps,
                r.rps / l.rps,
                l.p99_ms,
                m[2].cpu_us,
            );
        }
    }
    println!();
    println!(
        "roxpi RSS: {:.1} MB idle after warming, {:.1} MB at its peak (VmHWM)",
        idle_kib as f64 / 1024.0,
        roxpi.status_kib("VmHWM:") as f64 / 1024.0
    );
    let log_lines = std::fs::read_to_string(dir.path().join("roxpi.log"))
        .map(|s| s.lines().filter(|l| l.contains(" access ")).count())
        .unwrap_or(0);
    println!("roxpi access log: {log_lines} lines");
    drop((quiet, logged));
    drop(roxpi);
    upstream.shutdown(Duration::from_secs(2));
}
