//! An in-process fake upstream on 127.0.0.1 serving two indexes (`/root/`
//! and `/extra/`) in HTML, HTML without Content-Type, JSON, or JSON with a
//! yanked reason, plus their files. It records every request and can be told
//! to fail (status, hang, cut) — built on roxpi's own HTTP server module.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use roxpi::http::{Body, Request, Response, Server, ServerConfig, Stream};
use sha2::{Digest, Sha256};

/// How project pages are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Html,
    HtmlWithoutType,
    Json,
    JsonYanked,
}

impl Mode {
    pub const ALL: [Mode; 4] = [
        Mode::Html,
        Mode::HtmlWithoutType,
        Mode::Json,
        Mode::JsonYanked,
    ];
}

/// How file bodies are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileMode {
    Normal,
    /// `chunk` bytes every `every`.
    Throttle {
        chunk: usize,
        every: Duration,
    },
    /// Throttled, then the connection is cut after `after` bytes.
    CutAfter {
        after: usize,
        chunk: usize,
        every: Duration,
    },
    /// The right length, one wrong byte (hash mismatch).
    Corrupt,
    /// No Content-Length (chunked), and a body that is right, has one wrong
    /// byte, is 10 bytes short or 10 bytes long.
    Unsized(Unsized),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsized {
    Right,
    Wrong,
    Short,
    Long,
}

/// A fault injected into page requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    Status(u16),
    Hang(Duration),
    /// 200 with a body that is not a page, labelled as JSON.
    Garbage,
}

#[derive(Clone, Debug)]
pub struct FakeFile {
    pub filename: String,
    pub bytes: Bytes,
    pub requires_python: Option<String>,
    pub yanked: bool,
    /// Core metadata bytes (served at `<file>.metadata`, advertised with hash).
    pub metadata: Option<Bytes>,
    /// Advertise a sha256 hash for the file.
    pub hashed: bool,
    /// PEP 700 `upload-time` (JSON pages only); `None`: not given.
    pub upload_time: Option<String>,
    /// The size the index advertises, when it should lie.
    pub advertised_size: Option<usize>,
    /// An absolute URL for the link instead of the fake's own.
    pub url: Option<String>,
}

impl FakeFile {
    pub fn new(filename: &str, bytes: impl Into<Bytes>) -> FakeFile {
        FakeFile {
            filename: filename.to_owned(),
            bytes: bytes.into(),
            requires_python: None,
            yanked: false,
            metadata: None,
            hashed: true,
            upload_time: Some("2024-01-02T03:04:05.000000Z".into()),
            advertised_size: None,
            url: None,
        }
    }

    pub fn sha256(&self) -> String {
        hex(&Sha256::digest(&self.bytes))
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Clone, Debug, Default)]
pub struct FakeProject {
    pub files: Vec<FakeFile>,
    pub versions: Vec<String>,
    /// PEP 792 project status (`quarantined`…), when given.
    pub status: Option<String>,
}

struct State {
    mode: Mode,
    fault: Fault,
    /// index name ("root"/"extra") → project → files.
    indexes: BTreeMap<String, BTreeMap<String, FakeProject>>,
    log: Vec<Recorded>,
    /// Required `Authorization` value, if any.
    auth: Option<String>,
    /// Gzip pages when the client accepts it.
    gzip_pages: bool,
    /// Delay before answering a file request.
    file_delay: Duration,
    file_mode: FileMode,
    /// When the last file body finished sending.
    body_done: Arc<Mutex<Vec<std::time::Instant>>>,
    /// `X-PyPI-Last-Serial` of project pages.
    serial: u64,
    /// Body bytes of project pages sent (a 304 sends none).
    page_bytes: u64,
    /// Body bytes of files answered (whole or ranges).
    file_bytes: u64,
    /// Answer range requests with the whole file (as some servers do).
    ignore_ranges: bool,
    /// `Location`s that `/go/<i>` redirects to.
    redirects: Vec<String>,
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub accept: Option<String>,
    pub authorization: Option<String>,
}

pub struct FakeIndex {
    server: Option<Server>,
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Drop for FakeIndex {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_millis(200));
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The proxpi test data: root has proxpi and numpy, extra has scipy and
/// numpy; small blobs whose hashes match the pages.
pub fn proxpi_data() -> BTreeMap<String, BTreeMap<String, FakeProject>> {
    let mut root = BTreeMap::new();
    let mut p100 = FakeFile::new(
        "proxpi-1.0.0.tar.gz",
        Bytes::from_static(b"\x1f\x8bproxpi 1.0.0 sdist bytes"),
    );
    p100.hashed = false;
    p100.requires_python = Some(String::new());
    let mut p110 = FakeFile::new(
        "proxpi-1.1.0-py3-none-any.whl",
        Bytes::from_static(b"PK proxpi 1.1.0 wheel bytes"),
    );
    p110.requires_python = Some(">=3.7".into());
    root.insert(
        "proxpi".into(),
        FakeProject {
            files: vec![p100, p110],
            versions: vec!["1.0.0".into(), "1.1.0".into()],
            ..Default::default()
        },
    );
    let sdist = FakeFile::new(
        "numpy-1.23.0.tar.gz",
        Bytes::from_static(b"\x1f\x8bnumpy sdist"),
    );
    let mut linux = FakeFile::new(
        "numpy-1.23.1-cp311-cp311-manylinux_2_28_x86_64.whl",
        Bytes::from_static(b"PK numpy linux wheel"),
    );
    linux.metadata = Some(Bytes::from_static(
        b"Metadata-Version: 2.1\nName: numpy\nVersion: 1.23.1\n",
    ));
    linux.requires_python = Some(">=3.8".into());
    let mut win = FakeFile::new(
        "numpy-1.23.1-cp311-cp311-win_amd64.whl",
        Bytes::from_static(b"PK numpy windows wheel"),
    );
    win.yanked = true;
    root.insert(
        "numpy".into(),
        FakeProject {
            files: vec![sdist, linux, win],
            versions: vec!["1.23.0".into(), "1.23.1".into()],
            ..Default::default()
        },
    );
    let mut extra = BTreeMap::new();
    extra.insert(
        "scipy".into(),
        FakeProject {
            files: vec![
                FakeFile::new(
                    "scipy-1.9.0.tar.gz",
                    Bytes::from_static(b"\x1f\x8bscipy sdist"),
                ),
                FakeFile::new(
                    "scipy-1.9.0-cp311-cp311-manylinux_2_28_x86_64.whl",
                    Bytes::from_static(b"PK scipy wheel"),
                ),
            ],
            versions: vec!["1.9.0".into()],
            status: None,
        },
    );
    extra.insert(
        "numpy".into(),
        FakeProject {
            files: vec![FakeFile::new(
                "numpy-1.23.1-cp311-cp311-macosx_11_0_arm64.whl",
                Bytes::from_static(b"PK numpy mac wheel"),
            )],
            versions: vec!["1.23.1".into()],
            status: None,
        },
    );
    BTreeMap::from([("root".to_owned(), root), ("extra".to_owned(), extra)])
}

impl FakeIndex {
    pub fn start(indexes: BTreeMap<String, BTreeMap<String, FakeProject>>) -> FakeIndex {
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Html,
            fault: Fault::None,
            indexes,
            log: Vec::new(),
            auth: None,
            gzip_pages: true,
            file_delay: Duration::ZERO,
            file_mode: FileMode::Normal,
            body_done: Arc::new(Mutex::new(Vec::new())),
            serial: 1,
            page_bytes: 0,
            file_bytes: 0,
            ignore_ranges: false,
            redirects: Vec::new(),
        }));
        let server = serve("127.0.0.1:0".parse().unwrap(), &state);
        FakeIndex {
            addr: server.local_addr(),
            server: Some(server),
            state,
        }
    }

    /// Serves again on the same address after `stop`.
    pub fn resume(&mut self) {
        if self.server.is_none() {
            self.server = Some(serve(self.addr, &self.state));
        }
    }

    /// Adds a `Location` that `/go/<i>` answers with a 302: its path.
    pub fn add_redirect(&self, location: &str) -> String {
        let mut s = lock(&self.state);
        s.redirects.push(location.to_owned());
        format!("/go/{}", s.redirects.len() - 1)
    }

    /// Sets the `X-PyPI-Last-Serial` project pages carry.
    pub fn set_serial(&self, serial: u64) {
        lock(&self.state).serial = serial;
    }

    /// Body bytes of files answered so far.
    pub fn file_bytes(&self) -> u64 {
        lock(&self.state).file_bytes
    }

    /// From now on, range requests get the whole file (200).
    pub fn set_ignore_ranges(&self, ignore: bool) {
        lock(&self.state).ignore_ranges = ignore;
    }

    /// Body bytes of project pages sent so far.
    pub fn page_bytes(&self) -> u64 {
        lock(&self.state).page_bytes
    }

    pub fn url(&self, index: &str) -> String {
        format!("http://{}/{index}/", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        lock(&self.state).mode = mode;
    }

    pub fn set_fault(&self, fault: Fault) {
        lock(&self.state).fault = fault;
    }

    pub fn set_file_mode(&self, m: FileMode) {
        lock(&self.state).file_mode = m;
    }

    /// When each file body finished sending, in order.
    pub fn bodies_done(&self) -> Vec<std::time::Instant> {
        let done = Arc::clone(&lock(&self.state).body_done);
        let v = done.lock().unwrap().clone();
        v
    }

    pub fn set_file_delay(&self, d: Duration) {
        lock(&self.state).file_delay = d;
    }

    pub fn require_auth(&self, user: &str, pass: &str) {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        lock(&self.state).auth = Some(format!("Basic {token}"));
    }

    pub fn add_project(&self, index: &str, name: &str, project: FakeProject) {
        lock(&self.state)
            .indexes
            .entry(index.to_owned())
            .or_default()
            .insert(name.to_owned(), project);
    }

    pub fn project(&self, index: &str, project: &str) -> FakeProject {
        lock(&self.state).indexes[index][project].clone()
    }

    pub fn file(&self, index: &str, project: &str, filename: &str) -> FakeFile {
        lock(&self.state).indexes[index][project]
            .files
            .iter()
            .find(|f| f.filename == filename)
            .cloned()
            .expect("known file")
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).log.clone()
    }

    /// How many requests had exactly this path.
    pub fn count(&self, path: &str) -> usize {
        lock(&self.state)
            .log
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    pub fn clear_log(&self) {
        lock(&self.state).log.clear();
    }

    /// Stops serving: later connections are refused.
    pub fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_millis(200));
        }
    }
}

fn serve(addr: std::net::SocketAddr, state: &Arc<Mutex<State>>) -> Server {
    let s = Arc::clone(state);
    let config = ServerConfig {
        workers: 8,
        ..ServerConfig::default()
    };
    Server::start(addr, config, move |req| handle(&s, req)).unwrap()
}

fn handle(state: &Arc<Mutex<State>>, req: &Request) -> Response {
    let (mode, fault, auth) = {
        let mut s = lock(state);
        s.log.push(Recorded {
            method: req.method().to_string(),
            path: req.path().to_owned(),
            accept: req.header("accept").map(str::to_owned),
            authorization: req.header("authorization").map(str::to_owned),
        });
        (s.mode, s.fault, s.auth.clone())
    };
    if let Some(expected) = auth {
        if req.header("authorization") != Some(expected.as_str()) {
            return Response::text(401, "unauthorized\n").header("WWW-Authenticate", "Basic");
        }
    }
    let parts: Vec<&str> = req.path().trim_start_matches('/').split('/').collect();
    if parts.iter().any(|p| p.starts_with("hang-")) {
        return hang();
    }
    match parts.as_slice() {
        // /files/<index>/<project>/<filename>[.metadata]
        ["files", index, project, filename] => serve_file(state, req, index, project, filename),
        // A project page that redirects where `/go/<i>` does.
        [_, p, ""] if p.starts_with("go-") => {
            match p[3..]
                .parse::<usize>()
                .ok()
                .and_then(|i| lock(state).redirects.get(i).cloned())
            {
                Some(to) => Response::new(302).header("Location", to),
                None => Response::text(404, "no such redirect\n"),
            }
        }
        // A redirect set by the test.
        ["go", i] => match i
            .parse::<usize>()
            .ok()
            .and_then(|i| lock(state).redirects.get(i).cloned())
        {
            Some(to) => Response::new(302).header("Location", to),
            None => Response::text(404, "no such redirect\n"),
        },
        // Redirect check: /moved/<...> → /root/<...>
        ["moved", rest @ ..] => {
            Response::new(301).header("Location", format!("/root/{}", rest.join("/")))
        }
        [index, ""] => {
            if let Some(r) = inject(fault) {
                return r;
            }
            page_list(state, index, mode)
        }
        [index, project, ""] => {
            if let Some(r) = inject(fault) {
                return r;
            }
            project_page(state, req, index, project, mode)
        }
        _ => Response::text(404, "no such page\n"),
    }
}

/// An upstream that never answers (within a minute): pages and files of
/// projects named `hang-*`. Parked in the fake's server, so any number of
/// them hold no thread there.
fn hang() -> Response {
    Response::later(roxpi::http::Later {
        deadline: std::time::Instant::now() + Duration::from_secs(60),
        subscribe: Box::new(|_waker| {}),
        resume: Box::new(|_req| Response::text(504, "hung for a minute\n")),
    })
}

fn inject(fault: Fault) -> Option<Response> {
    match fault {
        Fault::None => None,
        Fault::Status(s) => Some(Response::text(s, "injected failure\n")),
        Fault::Hang(d) => {
            std::thread::sleep(d);
            None
        }
        Fault::Garbage => Some(
            Response::new(200)
                .header("Content-Type", "application/vnd.pypi.simple.v1+json")
                .body("{\"files\": [truncated"),
        ),
    }
}

fn page_list(state: &Arc<Mutex<State>>, index: &str, mode: Mode) -> Response {
    let s = lock(state);
    let Some(projects) = s.indexes.get(index) else {
        return Response::text(404, "no such index\n");
    };
    match mode {
        Mode::Json | Mode::JsonYanked => {
            let names: Vec<serde_json::Value> = projects
                .keys()
                .map(|n| serde_json::json!({ "name": n }))
                .collect();
            let body = serde_json::json!({"meta": {"api-version": "1.1"}, "projects": names});
            Response::new(200)
                .header("Content-Type", "application/vnd.pypi.simple.v1+json")
                .body(body.to_string())
        }
        _ => {
            let links: String = projects
                .keys()
                .map(|n| format!("<a href=\"{n}/\">{n}</a>\n"))
                .collect();
            let r = Response::new(200)
                .body(format!("<!DOCTYPE html><html><body>{links}</body></html>"));
            if mode == Mode::Html {
                r.header("Content-Type", "text/html")
            } else {
                r
            }
        }
    }
}

fn project_page(
    state: &Arc<Mutex<State>>,
    req: &Request,
    index: &str,
    project: &str,
    mode: Mode,
) -> Response {
    let s = lock(state);
    let Some(p) = s.indexes.get(index).and_then(|i| i.get(project)) else {
        return Response::text(404, "no such project\n");
    };
    let file_path = |f: &FakeFile| match &f.url {
        Some(u) => u.clone(),
        None => format!(
            "../../files/{index}/{project}/{}",
            f.filename.replace('+', "%2B")
        ),
    };
    let body = match mode {
        Mode::Json | Mode::JsonYanked => {
            let files: Vec<serde_json::Value> = p
                .files
                .iter()
                .map(|f| {
                    let mut v = serde_json::json!({
                        "filename": f.filename,
                        "url": file_path(f),
                        "hashes": if f.hashed { serde_json::json!({"sha256": f.sha256()}) } else { serde_json::json!({}) },
                        "size": f.advertised_size.unwrap_or(f.bytes.len()),
                    });
                    if let Some(t) = &f.upload_time {
                        v["upload-time"] = t.clone().into();
                    }
                    if let Some(rp) = &f.requires_python {
                        v["requires-python"] = rp.clone().into();
                    }
                    if f.yanked {
                        v["yanked"] = if mode == Mode::JsonYanked { "broken on windows".into() } else { true.into() };
                    }
                    if let Some(m) = &f.metadata {
                        v["core-metadata"] = serde_json::json!({"sha256": hex(&Sha256::digest(m))});
                        v["data-dist-info-metadata"] = serde_json::json!({"sha256": hex(&Sha256::digest(m))});
                    }
                    v
                })
                .collect();
            let mut page = serde_json::json!({
                "meta": {"api-version": "1.1", "_last-serial": 1},
                "name": project,
                "files": files,
                "versions": p.versions,
            });
            if let Some(status) = &p.status {
                page["meta"]["api-version"] = "1.4".into();
                page["project-status"] = serde_json::json!({"status": status});
            }
            page.to_string()
        }
        Mode::Html | Mode::HtmlWithoutType => {
            let links: String = p
                .files
                .iter()
                .map(|f| {
                    let mut a = format!("<a href=\"{}", file_path(f));
                    if f.hashed {
                        a.push_str(&format!("#sha256={}", f.sha256()));
                    }
                    a.push('"');
                    if let Some(rp) = &f.requires_python {
                        a.push_str(&format!(
                            " data-requires-python=\"{}\"",
                            rp.replace('>', "&gt;").replace('<', "&lt;")
                        ));
                    }
                    if f.yanked {
                        a.push_str(" data-yanked");
                    }
                    if let Some(m) = &f.metadata {
                        a.push_str(&format!(
                            " data-core-metadata=\"sha256={}\"",
                            hex(&Sha256::digest(m))
                        ));
                    }
                    a.push_str(&format!(">{}</a><br>\n", f.filename));
                    a
                })
                .collect();
            let status = p
                .status
                .as_ref()
                .map(|s| format!("<meta name=\"pypi:repository-version\" content=\"1.4\"><meta name=\"pypi:project-status\" content=\"{s}\">"))
                .unwrap_or_default();
            format!("<!DOCTYPE html>\n<html><head>{status}<title>Links for {project}</title></head><body>\n{links}</body></html>\n")
        }
    };
    let content_type = match mode {
        Mode::Json | Mode::JsonYanked => Some("application/vnd.pypi.simple.v1+json"),
        Mode::Html => Some("text/html; charset=utf-8"),
        Mode::HtmlWithoutType => None,
    };
    let gzip = s.gzip_pages
        && req
            .header("accept-encoding")
            .is_some_and(|e| e.contains("gzip"));
    // Validators as PyPI sends them: an ETag of the content and the serial.
    let etag = format!("\"{}\"", &hex(&Sha256::digest(body.as_bytes()))[..16]);
    let serial = s.serial;
    drop(s);
    let mut r = Response::new(200)
        .header("ETag", etag.clone())
        .header("X-PyPI-Last-Serial", serial.to_string());
    if req.header("if-none-match") == Some(etag.as_str()) {
        return Response::new(304)
            .header("ETag", etag)
            .header("X-PyPI-Last-Serial", serial.to_string());
    }
    if let Some(ct) = content_type {
        r = r.header("Content-Type", ct);
    }
    let body = if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(body.as_bytes()).unwrap();
        r = r.header("Content-Encoding", "gzip");
        enc.finish().unwrap()
    } else {
        body.into_bytes()
    };
    lock(state).page_bytes += body.len() as u64;
    r.body(body)
}

fn serve_file(
    state: &Arc<Mutex<State>>,
    req: &Request,
    index: &str,
    project: &str,
    filename: &str,
) -> Response {
    let delay = lock(state).file_delay;
    std::thread::sleep(delay);
    let mut s = lock(state);
    let decoded = percent_encoding::percent_decode_str(filename)
        .decode_utf8_lossy()
        .into_owned();
    let Some(p) = s.indexes.get(index).and_then(|i| i.get(project)) else {
        return Response::text(404, "no such project\n");
    };
    let bytes = if let Some(dist) = decoded.strip_suffix(".metadata") {
        p.files
            .iter()
            .find(|f| f.filename == dist)
            .and_then(|f| f.metadata.clone())
    } else {
        p.files
            .iter()
            .find(|f| f.filename == decoded)
            .map(|f| f.bytes.clone())
    };
    let Some(mut bytes) = bytes else {
        return Response::text(404, "no such file\n");
    };
    let total = bytes.len() as u64;
    let mut r = Response::new(200).header("Content-Type", "application/octet-stream");
    let range = if s.ignore_ranges {
        None
    } else {
        req.header("range")
    };
    match roxpi::http::conditional::parse_range(range, total) {
        roxpi::http::conditional::RangeRequest::Full => {}
        roxpi::http::conditional::RangeRequest::Partial(range) => {
            r = Response::new(206)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", range.content_range(total));
            bytes = bytes.slice(range.start as usize..=range.end as usize);
        }
        roxpi::http::conditional::RangeRequest::Unsatisfiable => {
            return Response::new(416).header("Content-Range", format!("bytes */{total}"));
        }
    }
    s.file_bytes += bytes.len() as u64;
    let mut len = Some(bytes.len() as u64);
    if let FileMode::Unsized(how) = s.file_mode {
        len = None;
        let mut v = bytes.to_vec();
        match how {
            Unsized::Right => {}
            Unsized::Wrong => {
                let last = v.len() - 1;
                v[last] ^= 0xff;
            }
            Unsized::Short => v.truncate(v.len().saturating_sub(10)),
            Unsized::Long => v.extend_from_slice(&[0u8; 10]),
        }
        bytes = Bytes::from(v);
    }
    let reader = Body::Stream(Stream {
        len,
        reader: Box::new(Paced {
            data: bytes,
            pos: 0,
            mode: s.file_mode,
            done: Arc::clone(&s.body_done),
        }),
    });
    r.body(reader)
}

/// A body sent per `FileMode`.
struct Paced {
    data: Bytes,
    pos: usize,
    mode: FileMode,
    done: Arc<Mutex<Vec<std::time::Instant>>>,
}

impl Read for Paced {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.data.len() {
            self.done.lock().unwrap().push(std::time::Instant::now());
            return Ok(0);
        }
        let left = &self.data[self.pos..];
        let n = match self.mode {
            FileMode::Normal | FileMode::Corrupt | FileMode::Unsized(_) => {
                left.len().min(buf.len())
            }
            FileMode::Throttle { chunk, every } => {
                std::thread::sleep(every);
                left.len().min(buf.len()).min(chunk)
            }
            FileMode::CutAfter {
                after,
                chunk,
                every,
            } => {
                if self.pos >= after {
                    return Err(std::io::Error::other("cut by the fake upstream"));
                }
                std::thread::sleep(every);
                left.len().min(buf.len()).min(chunk).min(after - self.pos)
            }
        };
        buf[..n].copy_from_slice(&left[..n]);
        if self.mode == FileMode::Corrupt && self.pos == 0 && n > 0 {
            buf[0] ^= 0xff;
        }
        self.pos += n;
        Ok(n)
    }
}

/// Reads a body fully (tests).
pub fn read_all(mut r: impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    v
}

/// The name of the `i`th wheel of `FakeIndex::with_wheels`.
pub fn big_wheel(i: usize) -> String {
    format!("big-1.{i}-py3-none-any.whl")
}

impl FakeIndex {
    /// A fake with project `big` on the root index holding one wheel per
    /// size (`big_wheel(i)`, seeded bytes), served as JSON pages.
    pub fn with_wheels(sizes: &[usize]) -> FakeIndex {
        let fake = FakeIndex::start(BTreeMap::new());
        let files = sizes
            .iter()
            .enumerate()
            .map(|(i, len)| FakeFile::new(&big_wheel(i), crate::util::blob(*len, i as u64 + 1)))
            .collect();
        fake.add_project(
            "root",
            "big",
            FakeProject {
                files,
                ..Default::default()
            },
        );
        fake.set_mode(Mode::Json);
        fake
    }

    /// Upstream GETs of `big_wheel(i)`.
    pub fn wheel_gets(&self, i: usize) -> usize {
        self.count(&format!("/files/root/big/{}", big_wheel(i)))
    }
}
