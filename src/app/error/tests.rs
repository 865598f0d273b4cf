//! The status table, driven through `App::handle` on both the page and the
//! file path, against the in-process fake origin (no sockets).

use std::io::Read;
use std::sync::Arc;

use clap::Parser;
use sha2::Digest;

use crate::app::App;
use crate::clock::SystemClock;
use crate::config::{Cli, Settings};
use crate::http::{settle, Body, Request, Response};
use crate::origin::fake::{Fail, FakeOrigin, FileAnswer, PageAnswer};
use crate::pypi::{FileEntry, Filename, Hashes, ProjectPage};

const FILE_URL: &str = "http://files.invalid/demo-1.0.tar.gz";

fn body_data() -> Vec<u8> {
    (0..5000u32).map(|i| (i % 251) as u8).collect()
}

fn good_page() -> PageAnswer {
    let d = body_data();
    let mut e = FileEntry::new(
        Filename::parse("demo-1.0.tar.gz").unwrap(),
        url::Url::parse(FILE_URL).unwrap(),
    );
    e.hashes = Hashes::from([("sha256".to_owned(), hex::encode(sha2::Sha256::digest(&d)))]);
    e.size = Some(d.len() as u64);
    PageAnswer::Page(ProjectPage {
        files: vec![e],
        ..ProjectPage::default()
    })
}

/// What a client gets: status and Retry-After.
fn outcome(r: Response) -> (u16, Option<u64>) {
    let retry = r.get_header("retry-after").and_then(|v| v.parse().ok());
    (r.status(), retry)
}

fn read_body(r: Response) -> Result<Vec<u8>, String> {
    match r.into_body() {
        Body::Bytes(b) => Ok(b.to_vec()),
        Body::File(f) => {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; f.len as usize];
            f.file
                .read_exact_at(&mut buf, f.offset)
                .map_err(|e| e.to_string())?;
            Ok(buf)
        }
        Body::Stream(mut s) => {
            let mut out = Vec::new();
            s.reader.read_to_end(&mut out).map_err(|e| e.to_string())?;
            Ok(out)
        }
        Body::Ready(r) => {
            let crate::http::ReadyStream {
                stream: mut s,
                ready,
            } = *r;
            // As the server does: read until nothing yet, then wait for
            // the stream's readiness.
            let mut out = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.reader.read(&mut buf) {
                    Ok(0) => return Ok(out),
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        let (tx, rx) = crossbeam_channel::bounded::<()>(1);
                        ready.subscribe(Box::new(move || {
                            let _ = tx.try_send(());
                        }));
                        rx.recv_timeout(std::time::Duration::from_secs(10))
                            .map_err(|_| "stream stalled".to_owned())?;
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        Body::Empty => Ok(Vec::new()),
    }
}

struct Row {
    kind: &'static str,
    /// How the page answers on the page path (the file path gets a good page).
    page: PageAnswer,
    file: FileAnswer,
    full_disk: bool,
    want_page: (u16, Option<u64>),
    want_file: (u16, Option<u64>),
}

fn app(origin: &Arc<FakeOrigin>, dir: &std::path::Path, full_disk: bool) -> Arc<App> {
    let cli = Cli::parse_from([
        "roxpi",
        "--index-url",
        "http://index.invalid/simple/",
        "--cache-dir",
        dir.to_str().unwrap(),
    ]);
    let settings = Settings::from_cli(&cli).unwrap();
    let clock = Arc::new(SystemClock);
    let store = if full_disk {
        crate::files::tests::full_disk()
    } else {
        crate::files::store(&settings.cache_dir, settings.cache_size, settings.storage).unwrap()
    };
    Arc::new(App::with_store(settings, origin.clone(), Default::default(), clock, store).unwrap())
}

/// What a client gets once the answer is ready.
fn get(a: &Arc<App>, path: &str) -> Response {
    let req = Request::new("GET", path);
    settle(&req, a.handle(&req))
}

#[test]
fn every_failure_kind_maps_to_one_status_on_both_paths() {
    let d = body_data();
    let mut wrong = d.clone();
    wrong[4999] ^= 1;
    let ok = FileAnswer::ok(&d);
    let rows = vec![
        Row {
            kind: "upstream timeout",
            page: PageAnswer::Fail(Fail::Timeout),
            file: FileAnswer::Fail(Fail::Timeout),
            full_disk: false,
            want_page: (504, Some(30)),
            want_file: (504, Some(30)),
        },
        Row {
            kind: "connection refused",
            page: PageAnswer::Fail(Fail::Refused),
            file: FileAnswer::Fail(Fail::Refused),
            full_disk: false,
            want_page: (502, Some(30)),
            want_file: (502, Some(30)),
        },
        Row {
            kind: "upstream 5xx",
            page: PageAnswer::Fail(Fail::Status(503)),
            file: FileAnswer::Fail(Fail::Status(500)),
            full_disk: false,
            want_page: (502, Some(30)),
            want_file: (502, Some(30)),
        },
        Row {
            kind: "upstream 404",
            page: PageAnswer::NotFound,
            file: FileAnswer::Fail(Fail::Status(404)),
            full_disk: false,
            want_page: (404, None),
            want_file: (502, Some(60)),
        },
        Row {
            kind: "garbage",
            page: PageAnswer::Fail(Fail::Garbage),
            file: FileAnswer::Body {
                data: d.clone(),
                content_length: Some(d.len() as u64),
                cut_at: Some(100),
            },
            full_disk: false,
            want_page: (502, Some(30)),
            want_file: (502, Some(30)),
        },
        Row {
            kind: "hash mismatch",
            page: good_page(),
            file: FileAnswer::ok(&wrong),
            full_disk: false,
            want_page: (200, None),
            want_file: (502, Some(10)),
        },
        Row {
            kind: "disk full",
            page: good_page(),
            file: ok.clone(),
            full_disk: true,
            want_page: (200, None),
            want_file: (200, None),
        },
        Row {
            kind: "offline miss",
            page: PageAnswer::Fail(Fail::Offline),
            file: FileAnswer::Fail(Fail::Offline),
            full_disk: false,
            // Nothing will change soon: no Retry-After for pip to sleep on.
            want_page: (502, None),
            want_file: (502, None),
        },
    ];
    for row in rows {
        // Page path: nothing cached, the page answers as the row says.
        let dir = tempfile::tempdir().unwrap();
        let origin = Arc::new(FakeOrigin::default());
        origin.set_page("demo", row.page.clone());
        let a = app(&origin, dir.path(), row.full_disk);
        let got = outcome(get(&a, "/simple/demo/"));
        assert_eq!(got, row.want_page, "page path, {}", row.kind);

        // File path: the page is good, the file answers as the row says.
        let dir = tempfile::tempdir().unwrap();
        let origin = Arc::new(FakeOrigin::default());
        origin.set_page("demo", good_page());
        origin.set_file(FILE_URL, row.file.clone());
        let a = app(&origin, dir.path(), row.full_disk);
        let r = get(&a, "/simple/demo/demo-1.0.tar.gz");
        let status = r.status();
        let retry = r.get_header("retry-after").and_then(|v| v.parse().ok());
        assert_eq!((status, retry), row.want_file, "file path, {}", row.kind);
        if status == 200 {
            assert_eq!(read_body(r).unwrap(), d, "file path body, {}", row.kind);
        }
    }
}

#[test]
fn a_full_pool_is_a_503_on_both_paths() {
    use crate::app::{classify, Failure};
    use crate::files::FileError;
    use crate::origin::OriginError;
    let url = url::Url::parse("http://index.invalid/simple/demo/").unwrap();
    let busy = OriginError::busy(&url);
    assert_eq!(classify(&Failure::Page(&busy)), (503, 5));
    assert_eq!(classify(&Failure::File(&FileError::from(busy))), (503, 5));
    assert_eq!(classify(&Failure::File(&FileError::Busy)), (503, 5));
}
