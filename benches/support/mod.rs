//! Shared by the benches: wrk runs and a throw-away nginx serving files.

#![allow(dead_code)]

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Run {
    pub rps: f64,
    pub p99_ms: f64,
}

/// `BENCH_PIN=1`: servers on CPU 0, wrk on CPU 1 (so that the load
/// generator does not steal the servers' CPU and inflate their tails).
pub fn pinned() -> bool {
    std::env::var("BENCH_PIN").is_ok_and(|v| v == "1")
}

/// A command, run on `cpu` when pinned.
fn on_cpu(program: &str, cpu: u32) -> Command {
    if pinned() {
        let mut c = Command::new("taskset");
        c.args(["-c", &cpu.to_string(), program]);
        c
    } else {
        Command::new(program)
    }
}

/// Pins this process (and every thread it starts later) to CPU 0 when
/// `BENCH_PIN=1`. Call first thing in `main`.
pub fn pin_self() {
    if pinned() {
        let ok = Command::new("taskset")
            .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "taskset (util-linux) is needed for BENCH_PIN=1");
        println!("pinned: servers on CPU 0, wrk (1 thread) on CPU 1");
    }
}

pub fn wrk(url: &str, conns: u32, secs: u32, headers: &[&str]) -> Run {
    let threads = if pinned() { 1 } else { conns.min(2) };
    let out = on_cpu("wrk", 1)
        .args([
            &format!("-t{threads}"),
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
        ])
        .args(headers.iter().flat_map(|h| ["-H", h]))
        .arg(url)
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

/// Rounds per compared point (BENCH_ROUNDS, default 3).
pub fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3)
}

/// Measures two servers at one point: a 1 s warm-up each, then
/// `rounds()` alternating runs of `secs`; each side's median run (by
/// req/s; its p99 is the median p99). Alternating spreads this machine's
/// drift over both sides.
pub fn compare(ours: &str, theirs: &str, conns: u32, secs: u32, headers: &[&str]) -> (Run, Run) {
    wrk(ours, conns, 1, headers);
    wrk(theirs, conns, 1, headers);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds() {
        a.push(wrk(ours, conns, secs, headers));
        b.push(wrk(theirs, conns, secs, headers));
    }
    (median(a), median(b))
}

pub fn median(runs: Vec<Run>) -> Run {
    Run {
        rps: middle(runs.iter().map(|r| r.rps).collect()),
        p99_ms: middle(runs.iter().map(|r| r.p99_ms).collect()),
    }
}

/// The median of a non-empty list (the upper one of an even count).
pub fn middle(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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

/// nginx serving `files` from `dir/www` the way a tuned static server
/// does (part 15's reference): 2 workers, `sendfile`, `tcp_nopush`,
/// `tcp_nodelay`, `access_log off` (`extra_conf`, inside `server`, may set
/// one), `keepalive_requests 1000000`, `open_file_cache max=1000
/// inactive=60s` and `open_file_cache_valid 60s`.
pub fn start_nginx(dir: &Path, files: &[(&str, &[u8])], extra_conf: &str) -> (Nginx, SocketAddr) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    fs::create_dir_all(dir.join("www")).unwrap();
    for (name, body) in files {
        let path = dir.join("www").join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, body).unwrap();
    }
    let conf = format!(
        "worker_processes 2;\n\
         daemon off;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
           access_log off;\n\
           sendfile on; tcp_nopush on; tcp_nodelay on;\n\
           keepalive_requests 1000000; keepalive_timeout 120s;\n\
           open_file_cache max=1000 inactive=60s; open_file_cache_valid 60s;\n\
           client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp;\n\
           fastcgi_temp_path {dir}/tmp; uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;\n\
           default_type application/octet-stream;\n\
           server {{ listen 127.0.0.1:{port}; root {dir}/www; {extra_conf} }}\n\
         }}\n",
        dir = dir.display()
    );
    fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = on_cpu("nginx", 0)
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
    (Nginx(child), addr)
}

/// A running nginx; dropping it stops the master and its workers
/// (`SIGTERM`: a killed master would leave its workers running).
pub struct Nginx(Child);

impl Nginx {
    /// The master's process id (its workers are its children).
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// CPU time, user and system, that process `pid` (all its threads) and its
/// child processes (nginx's workers) have used so far, in seconds. Divided
/// by the requests served, it shows where the CPU goes; on a shared VM it
/// still moves between runs (steal and cache contention count in it).
pub fn cpu_seconds(pid: u32) -> f64 {
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    process_ticks(pid) as f64 / ticks
}

fn process_ticks(pid: u32) -> u64 {
    let own = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_ticks(&s))
        .unwrap_or(0);
    let children: u64 = fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .map(process_ticks)
        .sum();
    own + children
}

/// utime + stime from a `/proc/<pid>/stat` line (fields 14 and 15; the
/// command name in field 2 may hold spaces, so fields count from its ")").
fn stat_ticks(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.0);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let _ = self.0.wait();
    }
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Seconds per measured point (BENCH_SECONDS, default 5).
pub fn seconds() -> u32 {
    std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

/// Exits with a hint when wrk or nginx is missing.
pub fn require_tools() {
    if !have("wrk") || !have("nginx") {
        eprintln!(
            "this bench needs wrk and nginx on PATH; run benches/run.sh (installs them with apt)"
        );
        std::process::exit(2);
    }
}

/// One table row.
pub fn row(label: &str, conns: u32, run: &Run, vs: Option<&Run>) {
    let ratio = vs
        .map(|v| format!("{:.2}x", run.rps / v.rps))
        .unwrap_or_default();
    println!(
        "{label:<28} {conns:>6} {:>12.0} {:>10.2} {ratio:>9}",
        run.rps, run.p99_ms
    );
}

pub fn header_row() {
    println!(
        "{:<28} {:>6} {:>12} {:>10} {:>9}",
        "server", "conns", "req/s", "p99 ms", "vs nginx"
    );
}

/// roxpi in this process with the flags `args` (after the program name),
/// on a free loopback port.
pub fn start_roxpi(args: &[&str]) -> roxpi::http::Server {
    use clap::Parser;
    let argv = std::iter::once("roxpi").chain(args.iter().copied());
    let cli = roxpi::config::Cli::parse_from(argv);
    let settings = roxpi::config::Settings::from_cli(&cli).expect("settings");
    let app = roxpi::wire(settings, Default::default()).expect("app");
    roxpi::http::Server::start(
        "127.0.0.1:0".parse().unwrap(),
        roxpi::http::ServerConfig::default(),
        move |req| app.handle(req),
    )
    .expect("start roxpi")
}

/// A PEP 691 JSON page of project `demo` listing `files` (name, bytes) at
/// `/files/<name>`, with their sha256 and size.
pub fn demo_page(files: &[(&str, bytes::Bytes)]) -> String {
    use sha2::Digest;
    let entries: Vec<String> = files
        .iter()
        .map(|(name, b)| {
            format!(
                r#"{{"filename":"{name}","url":"/files/{name}","hashes":{{"sha256":"{}"}},"size":{}}}"#,
                hex::encode(sha2::Sha256::digest(b)),
                b.len()
            )
        })
        .collect();
    format!(
        r#"{{"meta":{{"api-version":"1.1"}},"name":"demo","files":[{}]}}"#,
        entries.join(",")
    )
}

/// A fake upstream's answer for `/files/<name>` among `files`: the bytes,
/// or 404; `None` for any other path.
pub fn file_answer(files: &[(&str, bytes::Bytes)], path: &str) -> Option<roxpi::http::Response> {
    let name = path.strip_prefix("/files/")?;
    Some(match files.iter().find(|(n, _)| *n == name) {
        Some((_, b)) => roxpi::http::Response::new(200).body(b.clone()),
        None => roxpi::http::Response::new(404),
    })
}
