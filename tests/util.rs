//! Test helpers: a raw HTTP/1.1 client (so tests control every byte), child
//! processes that are killed on drop, and a time limit for every test.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Runs `f` on its own thread and fails the test if it takes longer than
/// `limit` (a hung test is a failed test, not a stuck CI run).
/// Waits until `cond` holds, checking every 20 ms; panics naming `what`
/// after `limit`. The one way tests wait for something they can observe
/// (a metric, a log line, a port, a file, an answer).
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test exceeded its time limit of {limit:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the test thread ended without a result"),
        },
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Connects with read and write timeouts set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// A client connection that reads responses one after another.
pub struct Client {
    pub reader: BufReader<TcpStream>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            reader: BufReader::new(connect(addr)),
        }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.reader.get_mut().write_all(raw).expect("send");
    }

    pub fn get(&mut self, path: &str) -> Reply {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        self.read_reply(false).expect("a response")
    }

    /// Reads one response; `head_only` for answers to HEAD.
    pub fn read_reply(&mut self, head_only: bool) -> std::io::Result<Reply> {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = self.reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let status = resp.parse(&head).map_err(std::io::Error::other)?;
        assert!(status.is_complete(), "incomplete head {head:?}");
        let status = resp.code.unwrap_or(0);
        let headers: Vec<(String, String)> = resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let mut reply = Reply {
            status,
            headers,
            body: Vec::new(),
        };
        if head_only || status == 304 || status == 204 {
            return Ok(reply);
        }
        if let Some(len) = reply.header("content-length") {
            let len: usize = len.parse().expect("numeric content-length");
            let mut body = vec![0; len];
            self.reader.read_exact(&mut body)?;
            reply.body = body;
        } else if reply
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            reply.body = read_chunked(&mut self.reader)?;
        } else {
            self.reader.read_to_end(&mut reply.body)?;
        }
        Ok(reply)
    }
}

/// Decodes a chunked body; fails on a missing last chunk.
pub fn read_chunked(r: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let size = usize::from_str_radix(line.trim(), 16).map_err(std::io::Error::other)?;
        if size == 0 {
            let mut end = String::new();
            r.read_line(&mut end)?;
            if end != "\r\n" {
                return Err(std::io::Error::other("bad chunked trailer"));
            }
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(std::io::Error::other("bad chunk end"));
        }
    }
}

/// One request on a fresh connection.
pub fn get(addr: SocketAddr, path: &str) -> Reply {
    Client::new(addr).get(path)
}

/// Threads of a process, from `/proc/<pid>/task`.
pub fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A child process killed when the test ends.
pub struct ChildServer {
    pub child: Child,
    pub addr: SocketAddr,
    /// The address that speaks TLS ("https://T" on the first line).
    pub tls_addr: Option<SocketAddr>,
    pub stderr: Option<ChildStderr>,
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChildServer {
    /// Starts `cmd` (stdout piped) and reads the address it prints on its
    /// first line ("… http://ADDR").
    pub fn start(mut cmd: Command) -> ChildServer {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the server printed its address");
        let addr = line
            .trim()
            // "http://A", "https://A", or "https://T and http://A".
            .rsplit("://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        let tls_addr = line
            .split("https://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok());
        let stderr = child.stderr.take();
        ChildServer {
            child,
            addr,
            tls_addr,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the child in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Threads of the process.
    pub fn threads(&self) -> usize {
        threads_of(self.pid())
    }

    /// Streams stderr line by line in the background; `wait_for_line`
    /// waits on it for a log line.
    pub fn stderr_lines(&mut self) -> mpsc::Receiver<String> {
        let (tx, rx) = mpsc::channel();
        if let Some(e) = self.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(e).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        rx
    }

    /// Collects stderr in the background (so the child never blocks on a
    /// full pipe); returns a handle to read it later.
    pub fn capture_stderr(&mut self) -> mpsc::Receiver<String> {
        let (tx, rx) = mpsc::channel();
        if let Some(mut e) = self.stderr.take() {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = e.read_to_string(&mut s);
                let _ = tx.send(s);
            });
        }
        rx
    }
}

/// The roxpi binary built by cargo for these tests.
pub fn roxpi_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_roxpi"))
}

/// An example binary (cargo builds examples for `cargo test`).
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    // target/<profile>/deps/<test> -> target/<profile>/examples/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test` (it builds the examples) or `cargo build --example {name}`",
        path.display()
    );
    path
}

/// One request with extra headers on a fresh connection.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut c = Client::new(addr);
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    c.send(raw.as_bytes());
    c.read_reply(method == "HEAD").expect("a response")
}

impl Reply {
    /// The body with any Content-Encoding undone.
    pub fn decoded(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self.header("content-encoding") {
            Some("gzip") => {
                flate2::read::GzDecoder::new(&self.body[..])
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Some("deflate") => {
                flate2::read::ZlibDecoder::new(&self.body[..])
                    .read_to_end(&mut out)
                    .unwrap();
            }
            _ => out = self.body.clone(),
        }
        out
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.decoded()).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.decoded())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Starts the roxpi binary with only these variables (plus PATH and a
/// private HOME) in its environment.
pub fn start_roxpi(env: &[(&str, &str)]) -> (ChildServer, tempfile::TempDir) {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(roxpi_bin());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("ROXPI_BIND", "127.0.0.1:0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    (ChildServer::start(cmd), home)
}

/// A counter or gauge from roxpi's `/metrics` (0 when absent).
pub fn metric(addr: SocketAddr, name: &str) -> u64 {
    let text = String::from_utf8_lossy(&get(addr, "/metrics").body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// roxpi on `fake`'s root index with a cache dir of its own, plus `env`:
/// (server, cache dir, home dir).
pub fn roxpi_on(
    fake: &crate::fake_index::FakeIndex,
    env: &[(&str, &str)],
) -> (ChildServer, tempfile::TempDir, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let root = fake.url("root");
    let mut all = vec![
        ("ROXPI_INDEX_URL", root.as_str()),
        ("ROXPI_CACHE_DIR", cache.path().to_str().unwrap()),
    ];
    all.extend_from_slice(env);
    let (server, home) = start_roxpi(&all);
    (server, cache, home)
}

/// Deterministic, incompressible-looking bytes.
pub fn blob(len: usize, seed: u64) -> bytes::Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// Bytes of every file under `dir`.
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    walk(dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

pub fn count_files(dir: &std::path::Path) -> usize {
    walk(dir).len()
}

/// Every file under `dir`, recursively.
pub fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Whether `tool args…` runs; in CI (`ROXPI_CI`) a missing tool is a
/// failure, elsewhere the test skips with the reason printed.
pub fn have(tool: &str, args: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var_os("ROXPI_CI").is_some() {
            panic!(
                "{tool} is required in CI (ROXPI_CI is set) but `{tool} {}` failed",
                args.join(" ")
            );
        }
        eprintln!(
            "SKIPPED: `{tool} {}` is not available; install it to run this test",
            args.join(" ")
        );
    }
    ok
}

/// Whether a file a test needs exists (made by `how`); in CI a missing one
/// is a failure, elsewhere the test skips with the reason printed.
pub fn have_file(path: &std::path::Path, how: &str) -> bool {
    if path.exists() {
        return true;
    }
    if std::env::var_os("ROXPI_CI").is_some() {
        panic!(
            "{} is required in CI (ROXPI_CI is set): {how}",
            path.display()
        );
    }
    eprintln!("SKIPPED: {} is missing ({how})", path.display());
    false
}

/// The roxpi binary under a shell `ulimit` (e.g. `-n 64`, `-f 1024`), on
/// `fake`'s root index with `cache` as its cache dir, with only these
/// variables (plus PATH) in its environment.
pub fn roxpi_under_ulimit(
    limit: &str,
    fake: &crate::fake_index::FakeIndex,
    cache: &std::path::Path,
) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit {limit} && exec \"$0\""))
        .arg(roxpi_bin())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", cache)
        .env("ROXPI_BIND", "127.0.0.1:0")
        .env("ROXPI_INDEX_URL", fake.url("root"))
        .env("ROXPI_CACHE_DIR", cache);
    cmd
}

/// A loopback listener that records the first line of every connection
/// made to it. Given a `forward_to` address, it is a CONNECT proxy that
/// tunnels to that one address and refuses every other target with a 403;
/// without, it answers every connection with a 502 and closes it.
pub struct Recorder {
    pub addr: SocketAddr,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Recorder {
    pub fn start(forward_to: Option<SocketAddr>) -> Recorder {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (l, s) = (std::sync::Arc::clone(&lines), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let l = std::sync::Arc::clone(&l);
                std::thread::spawn(move || tunnel(conn, &l, forward_to));
            }
        });
        Recorder { addr, lines, stop }
    }

    /// The first line of each connection so far (`""` when none came).
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn tunnel(conn: TcpStream, lines: &std::sync::Mutex<Vec<String>>, forward_to: Option<SocketAddr>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut first = String::new();
    let _ = reader.read_line(&mut first);
    lines.lock().unwrap().push(first.trim_end().to_owned());
    let mut head = String::new();
    while reader.read_line(&mut head).is_ok_and(|n| n > 2) {
        head.clear();
    }
    let mut out = conn;
    let target = first.split(' ').nth(1).unwrap_or("");
    let upstream = match forward_to {
        Some(to) if first.starts_with("CONNECT ") && target == to.to_string() => {
            TcpStream::connect(to).ok()
        }
        _ => None,
    };
    let Some(upstream) = upstream else {
        let status = if forward_to.is_some() {
            "403 Forbidden"
        } else {
            "502 Bad Gateway"
        };
        let _ = out.write_all(
            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        return;
    };
    let _ = out.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    let _ = out.set_read_timeout(None);
    let (mut up_r, mut up_w) = (upstream.try_clone().unwrap(), upstream);
    let buffered = reader.buffer().to_vec();
    let _ = up_w.write_all(&buffered);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_r, &mut out);
        let _ = out.shutdown(std::net::Shutdown::Both);
    });
    let mut client = reader.into_inner();
    let _ = std::io::copy(&mut client, &mut up_w);
    let _ = up_w.shutdown(std::net::Shutdown::Both);
}

/// Waits up to `limit` for a line containing `needle` from `lines`
/// (`ChildServer::stderr_lines`); panics, naming it, if none comes.
pub fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str, limit: Duration) -> String {
    let until = std::time::Instant::now() + limit;
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!("no log line with {needle:?} within {limit:?}"),
        }
    }
}
