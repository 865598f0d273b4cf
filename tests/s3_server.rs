//! A real S3-protocol server for the tests: s3s-fs 0.14.1 (it checks every
//! signature), started on loopback with its own store, and a fault proxy in
//! front of it that records every request and can be down, cut a request
//! body (an upload part) or cut a response (a GET) after some bytes.
//!
//! s3s-fs is found through `ROXPI_S3S_FS`, then `PATH`, then
//! `~/.cargo/bin`. Without it the S3 tests skip with a printed reason, and
//! fail when `ROXPI_CI` is set (`.ci/run` installs it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "roxpi-test-key";
pub const SECRET_KEY: &str = "roxpi-test-secret";
pub const BUCKET: &str = "roxpi-test";
pub const INSTALL: &str = "cargo install s3s-fs --version 0.14.1 --features binary --locked";

fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ROXPI_S3S_FS").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("s3s-fs"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let cargo_bin = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/s3s-fs"));
    on_path.into_iter().chain(cargo_bin).find(|p| p.is_file())
}

/// s3s-fs on loopback, killed when dropped.
pub struct S3Server {
    child: Child,
    pub addr: SocketAddr,
    /// The store: `<root>/<bucket>/<key>` holds each object's bytes.
    pub root: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3Server {
    /// The server with the test bucket, or `None` (skipped, with the
    /// reason printed) when s3s-fs is not installed outside CI.
    pub fn start() -> Option<S3Server> {
        let Some(bin) = find_binary() else {
            if std::env::var_os("ROXPI_CI").is_some() {
                panic!("s3s-fs is required in CI (ROXPI_CI is set) but was not found: {INSTALL}");
            }
            eprintln!("skipped: s3s-fs is not installed ({INSTALL})");
            return None;
        };
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        for _ in 0..5 {
            // s3s-fs takes a port number: a free one is picked by binding
            // port 0 first.
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(root.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(addr).is_ok() {
                    return Some(S3Server { child, addr, root });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("s3s-fs did not start");
    }

    /// Where the object `key` of the test bucket lives in the store.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(key)
    }

    /// Puts an object with a signed PUT, as another writer of the bucket
    /// would.
    pub fn put_object(&self, key: &str, bytes: &[u8]) {
        use rusty_s3::S3Action;
        let endpoint = url::Url::parse(&format!("http://{}", self.addr)).unwrap();
        let bucket =
            rusty_s3::Bucket::new(endpoint, rusty_s3::UrlStyle::Path, BUCKET, "us-east-1").unwrap();
        let creds = rusty_s3::Credentials::new(ACCESS_KEY, SECRET_KEY);
        let url = bucket
            .put_object(Some(&creds), key)
            .sign(Duration::from_secs(600));
        let resp = ureq::put(url.as_str()).send(bytes).expect("the PUT");
        assert_eq!(resp.status().as_u16(), 200);
    }

    /// Multipart uploads in progress (parts and upload records). s3s-fs
    /// 0.14.1 does not implement ListMultipartUploads, so its store is
    /// read: every upload keeps `.upload_id-<id>…` files at its top until
    /// it is completed or aborted.
    pub fn open_uploads(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.root.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".upload_id-"))
            })
            .collect()
    }
}

/// What the proxy does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    Pass,
    /// Every connection is closed at once (S3 down).
    Down,
    /// A request whose path contains `path` and whose query contains
    /// `query`: its body is cut after `after` bytes.
    CutRequest {
        path: String,
        query: String,
        after: usize,
    },
    /// A GET whose path contains `matching`: the answer is cut after
    /// `after` bytes.
    CutResponse {
        matching: String,
        after: usize,
    },
    /// A request with `method` whose path contains `matching` is held for
    /// `by` before it is passed on (a slow S3).
    Delay {
        method: String,
        matching: String,
        by: Duration,
    },
}

/// One request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query (the query holds the signature).
    pub target: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
}

#[derive(Clone)]
pub struct S3Proxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<(Fault, Vec<Seen>)>>,
}

impl S3Proxy {
    /// A proxy on 127.0.0.1:0 to `server`.
    pub fn start(server: SocketAddr) -> S3Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = S3Proxy {
            addr: listener.local_addr().unwrap(),
            state: Arc::new(Mutex::new((Fault::Pass, Vec::new()))),
        };
        let p = proxy.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let p = p.clone();
                std::thread::spawn(move || p.serve(conn, server));
            }
        });
        proxy
    }

    pub fn set_fault(&self, f: Fault) {
        self.state.lock().unwrap().0 = f;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().1.clone()
    }

    /// Requests with `method` whose path (before the query) contains `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| {
                s.method == method && s.target.split('?').next().unwrap_or("").contains(part)
            })
            .count()
    }

    /// The endpoint to give roxpi.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&self, client: TcpStream, server: SocketAddr) {
        let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
        let mut reader = BufReader::new(client.try_clone().unwrap());
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let end = line == b"\r\n";
            head.push(line);
            if end {
                break;
            }
        }
        let first = String::from_utf8_lossy(&head[0]).into_owned();
        let mut parts = first.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let target = parts.next().unwrap_or("").to_owned();
        let range = head[1..].iter().find_map(|l| {
            let text = String::from_utf8_lossy(l);
            let (name, value) = text.split_once(':')?;
            name.eq_ignore_ascii_case("range")
                .then(|| value.trim().to_owned())
        });
        let fault = {
            let mut st = self.state.lock().unwrap();
            st.1.push(Seen {
                method: method.clone(),
                target: target.clone(),
                range,
            });
            st.0.clone()
        };
        if fault == Fault::Down {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        if let Fault::Delay {
            method: m,
            matching,
            by,
        } = &fault
        {
            if *m == method
                && target
                    .split('?')
                    .next()
                    .unwrap_or("")
                    .contains(matching.as_str())
            {
                std::thread::sleep(*by);
            }
        }
        let Ok(mut upstream) = TcpStream::connect(server) else {
            return;
        };
        let mut body_len = 0usize;
        let mut out = Vec::new();
        out.extend_from_slice(&head[0]);
        for line in &head[1..head.len() - 1] {
            let text = String::from_utf8_lossy(line).to_ascii_lowercase();
            if text.starts_with("connection:") {
                continue;
            }
            if let Some(v) = text.strip_prefix("content-length:") {
                body_len = v.trim().parse().unwrap_or(0);
            }
            out.extend_from_slice(line);
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        if upstream.write_all(&out).is_err() {
            return;
        }
        let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
        let cut_request = match &fault {
            Fault::CutRequest {
                path: p,
                query: q,
                after,
            } if path.contains(p.as_str()) && query.contains(q.as_str()) => Some(*after),
            _ => None,
        };
        let mut left = body_len;
        let mut sent = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = left.min(buf.len());
            let n = match reader.read(&mut buf[..want]) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if cut_request.is_some_and(|a| sent + n > a) {
                let _ = upstream.shutdown(Shutdown::Both);
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            if upstream.write_all(&buf[..n]).is_err() {
                return;
            }
            sent += n;
            left -= n;
        }
        let cut_response = match &fault {
            Fault::CutResponse { matching, after }
                if method == "GET" && path.contains(matching.as_str()) =>
            {
                Some(*after)
            }
            _ => None,
        };
        let mut client_w = client;
        let mut relayed = 0usize;
        loop {
            let n = match upstream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(after) = cut_response {
                if relayed + n > after {
                    let _ = client_w.write_all(&buf[..after - relayed]);
                    break;
                }
            }
            if client_w.write_all(&buf[..n]).is_err() {
                break;
            }
            relayed += n;
        }
        let _ = client_w.shutdown(Shutdown::Both);
    }
}

/// roxpi's environment for the bucket behind `proxy`.
pub fn bucket_env(proxy: &S3Proxy, storage: &'static str) -> Vec<(&'static str, String)> {
    vec![
        ("ROXPI_STORAGE", storage.to_owned()),
        ("ROXPI_S3_BUCKET", BUCKET.to_owned()),
        ("ROXPI_S3_ENDPOINT", proxy.url()),
        ("ROXPI_S3_PATH_STYLE", "on".to_owned()),
        // Without the slash: the keys are the same.
        ("ROXPI_S3_PREFIX", "roxpi".to_owned()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
    ]
}

/// The object key of a file with this sha256 (SPEC §4 layout).
pub fn file_key(sha256: &str, filename: &str) -> String {
    format!("roxpi/{}/{sha256}/{filename}", &sha256[..2])
}

/// Whether `path` holds exactly `bytes`.
pub fn holds(path: &Path, bytes: &[u8]) -> bool {
    std::fs::read(path).is_ok_and(|b| b == bytes)
}
