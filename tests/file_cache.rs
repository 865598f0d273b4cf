//! The file cache through the real binary: coalesced downloads streamed to
//! every requester, verification, the cap, LRU order, restarts and crashes,
//! ranges and conditional requests, path safety, disk trouble.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fake_index::{big_wheel, FakeFile, FakeIndex, FakeProject, FileMode};
use crate::util::{
    blob, count_files, dir_bytes, request, start_roxpi, within, ChildServer, Client, Reply,
};

const LIMIT: Duration = Duration::from_secs(180);

struct Roxpi {
    server: ChildServer,
    cache: PathBuf,
    _home: tempfile::TempDir,
}

fn start(fake: &FakeIndex, cache: &Path, env: &[(&str, &str)]) -> Roxpi {
    let root = fake.url("root");
    let cache_s = cache.display().to_string();
    let mut all = vec![
        ("ROXPI_INDEX_URL", root.as_str()),
        ("ROXPI_CACHE_DIR", cache_s.as_str()),
    ];
    all.extend_from_slice(env);
    let (server, home) = start_roxpi(&all);
    Roxpi {
        server,
        cache: cache.to_owned(),
        _home: home,
    }
}

impl Roxpi {
    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        request(self.addr(), "GET", path, headers)
    }

    fn file(&self, i: usize) -> Reply {
        self.get(&format!("/index/big/{}", big_wheel(i)), &[])
    }

    /// Bytes under files/ and tmp/ (what counts toward the cap).
    fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.cache.join("files")) + dir_bytes(&self.cache.join("tmp"))
    }

    fn committed_files(&self) -> usize {
        count_files(&self.cache.join("files"))
    }
}

/// 32 clients of one uncached file: one upstream GET, identical correct
/// bodies, and every client's first bytes before the upstream finished.
#[test]
fn thirty_two_clients_one_upstream_get_streamed_to_all() {
    within(LIMIT, || {
        let f = FakeIndex::with_wheels(&[2 << 20]);
        f.set_file_mode(FileMode::Throttle {
            chunk: 64 * 1024,
            every: Duration::from_millis(25),
        });
        let dir = tempfile::tempdir().unwrap();
        let r = start(&f, dir.path(), &[]);
        assert_eq!(r.get("/index/big/", &[]).status, 200);
        let expected = f.file("root", "big", &big_wheel(0)).bytes;
        let addr = r.addr();
        let threads: Vec<_> = (0..32)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut c = Client::new(addr);
                    c.send(
                        format!(
                            "GET /index/big/{} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                            big_wheel(0)
                        )
                        .as_bytes(),
                    );
                    let mut first = [0u8; 1];
                    // The head, then the first body byte.
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        c.reader.read_exact(&mut first).unwrap();
                        head.push(first[0]);
                    }
                    c.reader.read_exact(&mut first).unwrap();
                    let first_at = Instant::now();
                    let mut rest = Vec::new();
                    c.reader.read_to_end(&mut rest).ok();
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let len: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap();
                    let mut body = vec![first[0]];
                    body.extend_from_slice(&rest[..rest.len().min(len - 1)]);
                    (first_at, body)
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(f.wheel_gets(0), 1, "one upstream GET for 32 clients");
        let done = *f.bodies_done().first().expect("the upstream finished");
        for (first_at, body) in &results {
            assert!(body == &expected[..], "a body differs");
            assert!(
                *first_at < done,
                "a client got its first byte only after the upstream finished"
            );
        }
        // Committed: the next one is a hit.
        let hit = r.file(0);
        assert_eq!(hit.header("x-cache"), Some("HIT"));
        assert_eq!(hit.body, expected);
        assert_eq!(f.wheel_gets(0), 1);
        let metrics = r.get("/metrics", &[]).text();
        let value = |name: &str| -> u64 {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
        };
        assert_eq!(value("roxpi_file_misses_total"), 1);
        assert_eq!(value("roxpi_file_coalesced_total"), 31);
        assert_eq!(value("roxpi_file_hits_total"), 1);
        assert_eq!(
            value("roxpi_file_bytes_fetched_total"),
            expected.len() as u64
        );
        assert_eq!(value("roxpi_file_cache_bytes"), expected.len() as u64);
        assert_eq!(value("roxpi_upstream_page_fetches_total"), 1);
        assert_eq!(
            value("roxpi_upstream_fetch_duration_seconds_count{kind=\"page\"}"),
            1
        );
        assert_eq!(
            value("roxpi_upstream_fetch_duration_seconds_count{kind=\"file\"}"),
            1
        );
        assert!(
            value("roxpi_requests_total") >= 34,
            "page + 32 files + hit + metrics"
        );
    });
}

#[test]
fn a_client_that_disconnects_does_not_stop_the_download() {
    within(LIMIT, || {
        let f = FakeIndex::with_wheels(&[1 << 20]);
        f.set_file_mode(FileMode::Throttle {
            chunk: 64 * 1024,
            every: Duration::from_millis(20),
        });
        let dir = tempfile::tempdir().unwrap();
        let r = start(&f, dir.path(), &[]);
        {
            let mut c = Client::new(r.addr());
            c.send(
                format!(
                    "GET /index/big/{} HTTP/1.1\r\nHost: t\r\n\r\n",
                    big_wheel(0)
                )
                .as_bytes(),
            );
            let mut some = [0u8; 1000];
            c.reader.read_exact(&mut some).unwrap();
        } // gone
        let path = format!("/index/big/{}", big_wheel(0));
        crate::util::wait_until(Duration::from_secs(20), "the download finished", || {
            request(r.addr(), "HEAD", &path, &[]).header("x-cache") == Some("HIT")
        });
        let hit = r.file(0);
        assert_eq!(hit.header("x-cache"), Some("HIT"));
        assert_eq!(hit.body, f.file("root", "big", &big_wheel(0)).bytes);
        assert_eq!(f.wheel_gets(0), 1);
    });
}

/// A cut or corrupted upstream body: streaming clients see a cut (never a
/// complete body), nothing is committed, and the next request fetches again.
#[test]
fn cut_or_corrupt_bodies_are_never_committed() {
    within(LIMIT, || {
        for (mode, cap) in [
            (
                FileMode::CutAfter {
                    after: 300_000,
                    chunk: 50_000,
                    every: Duration::from_millis(10),
                },
                "5G",
            ),
            (FileMode::Corrupt, "5G"),
            // The same for a file larger than the cap (staged, not kept).
            (
                FileMode::CutAfter {
                    after: 300_000,
                    chunk: 50_000,
                    every: Duration::from_millis(10),
                },
                "100K",
            ),
            (FileMode::Corrupt, "100K"),
        ] {
            let f = FakeIndex::with_wheels(&[600_000]);
            let dir = tempfile::tempdir().unwrap();
            let r = start(&f, dir.path(), &[("ROXPI_CACHE_SIZE", cap)]);
            assert_eq!(r.get("/index/big/", &[]).status, 200);
            f.set_file_mode(mode);
            let addr = r.addr();
            let clients: Vec<_> = (0..4)
                .map(|_| {
                    std::thread::spawn(move || {
                        let mut c = Client::new(addr);
                        c.send(
                            format!(
                                "GET /index/big/{} HTTP/1.1\r\nHost: t\r\n\r\n",
                                big_wheel(0)
                            )
                            .as_bytes(),
                        );
                        c.read_reply(false)
                    })
                })
                .collect();
            for c in clients {
                let got = c.join().unwrap();
                // A cut, or (when the failure came before the first byte)
                // a 502 that says so: never a complete 200.
                assert!(
                    got.as_ref().map_or(true, |r| r.status == 502),
                    "{mode:?}/{cap}: a client got a complete-looking body"
                );
            }
            assert_eq!(r.committed_files(), 0, "{mode:?}/{cap}: committed");
            assert_eq!(
                count_files(&dir.path().join("tmp")),
                0,
                "{mode:?}/{cap}: temp file left"
            );
            let before = f.wheel_gets(0);
            f.set_file_mode(FileMode::Normal);
            let ok = r.file(0);
            assert_eq!(ok.status, 200);
            assert_eq!(ok.body, f.file("root", "big", &big_wheel(0)).bytes);
            assert_eq!(f.wheel_gets(0), before + 1, "fetched again");
        }
    });
}

#[test]
fn a_file_larger_than_the_cap_is_coalesced_but_not_kept() {
    within(LIMIT, || {
        let f = FakeIndex::with_wheels(&[1 << 20]);
        f.set_file_mode(FileMode::Throttle {
            chunk: 64 * 1024,
            every: Duration::from_millis(20),
        });
        let dir = tempfile::tempdir().unwrap();
        let r = start(&f, dir.path(), &[("ROXPI_CACHE_SIZE", "512K")]);
        assert_eq!(r.get("/index/big/", &[]).status, 200);
        let expected = f.file("root", "big", &big_wheel(0)).bytes;
        let addr = r.addr();
        let clients: Vec<_> = (0..32)
            .map(|_| {
                std::thread::spawn(move || {
                    request(addr, "GET", &format!("/index/big/{}", big_wheel(0)), &[]).body
                })
            })
            .collect();
        for c in clients {
            assert!(c.join().unwrap() == expected);
        }
        assert_eq!(f.wheel_gets(0), 1);
        assert_eq!(r.committed_files(), 0);
        assert_eq!(count_files(&dir.path().join("staging")), 0);
        f.set_file_mode(FileMode::Normal);
        assert_eq!(r.file(0).body, expected);
        assert_eq!(f.wheel_gets(0), 2, "not kept");
    });
}

#[test]
fn the_cap_holds_at_every_moment_and_lru_order_is_kept() {
    within(LIMIT, || {
        let f = FakeIndex::with_wheels(&[300_000; 8]);
        let dir = tempfile::tempdir().unwrap();
        let cap = 1_000_000u64;
        let r = Arc::new(start(
            &f,
            dir.path(),
            &[("ROXPI_CACHE_SIZE", &cap.to_string())],
        ));
        assert_eq!(r.get("/index/big/", &[]).status, 200);
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let sampler = {
            let (r, stop, peak) = (Arc::clone(&r), Arc::clone(&stop), Arc::clone(&peak));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(r.disk_bytes(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        f.set_file_mode(FileMode::Throttle {
            chunk: 50_000,
            every: Duration::from_millis(5),
        });
        // Concurrent downloads of 4 files (more than the cap together).
        let addr = r.addr();
        let ts: Vec<_> = (0..4)
            .map(|i| {
                std::thread::spawn(move || {
                    request(addr, "GET", &format!("/index/big/{}", big_wheel(i)), &[]).status
                })
            })
            .collect();
        for t in ts {
            assert_eq!(t.join().unwrap(), 200);
        }
        f.set_file_mode(FileMode::Normal);
        // LRU: fetch 5, 6, 7 (the cap holds 3); touch 5; fetch 4 again → 6
        // (least recently used, not least recently inserted) goes first.
        for i in [5, 6, 7] {
            assert_eq!(r.file(i).status, 200);
        }
        assert_eq!(r.file(5).header("x-cache"), Some("HIT"));
        assert_eq!(r.file(4).status, 200);
        stop.store(true, Ordering::Relaxed);
        sampler.join().unwrap();
        let peak = peak.load(Ordering::Relaxed);
        assert!(peak <= cap, "disk use peaked at {peak} > cap {cap}");
        assert!(peak > 0);
        let gets_before = (f.wheel_gets(5), f.wheel_gets(6), f.wheel_gets(7));
        assert_eq!(
            r.file(5).header("x-cache"),
            Some("HIT"),
            "recently used 5 kept"
        );
        assert_eq!(r.file(7).header("x-cache"), Some("HIT"));
        assert_eq!(r.file(6).header("x-cache"), Some("MISS"), "6 was evicted");
        assert_eq!(
            (f.wheel_gets(5), f.wheel_gets(7)),
            (gets_before.0, gets_before.2)
        );
    });
}

#[test]
fn restart_serves_cached_files_without_upstream_gets_and_cleans_leftovers() {
    within(LIMIT, || {
        let f = FakeIndex::with_wheels(&[100_000, 100_000]);
        let dir = tempfile::tempdir().unwrap();
        let r = start(&f, dir.path(), &[]);
        assert_eq!(r.file(0).status, 200);
        assert_eq!(r.file(1).status, 200);
        drop(r);
        std::fs::write(dir.path().join("tmp").join("leftover.part"), b"partial").unwrap();
        std::fs::write(dir.path().join("mine.txt"), b"not roxpi's").unwrap();
        let r = start(&f, dir.path(), &[]);
        for i in [0, 1] {
            let hit = r.file(i);
            assert_eq!(hit.header("x-cache"), Some("HIT"));
            assert_eq!(hit.body, f.file("root", "big", &big_wheel(i)).bytes);
            assert_eq!(f.wheel_gets(i), 1, "no upstream GET after the restart");
        }
        assert!(!dir.path().join("tmp").join("leftover.part").exists());
        assert!(dir.path().join("mine.txt").exists());
        // A second process on the same dir refuses to start, naming it.
        let root = f.url("root");
        let out = std::process::Command::new(crate::util::roxpi_bin())
            .env_clear()
            .env("ROXPI_BIND", "127.0.0.1:0")
            .env("ROXPI_INDEX_URL", &root)
            .env("ROXPI_CACHE_DIR", dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("in use by another roxpi"), "{err}");
    });
}

/// SIGKILL mid-download, then restart: the file is served correctly and a
/// partial file is never served.
#[test]
fn sigkill_mid_download_never_leaves_a_partial_file() {
    within(LIMIT, || {
        let f = FakeIndex::with_wheels(&[1 << 20]);
        f.set_file_mode(FileMode::Throttle {
            chunk: 32 * 1024,
            every: Duration::from_millis(20),
        });
        let dir = tempfile::tempdir().unwrap();
        let mut r = start(&f, dir.path(), &[]);
        let mut c = Client::new(r.addr());
        c.send(
            format!(
                "GET /index/big/{} HTTP/1.1\r\nHost: t\r\n\r\n",
                big_wheel(0)
            )
            .as_bytes(),
        );
        let mut some = [0u8; 100_000];
        c.reader.read_exact(&mut some).unwrap();
        r.server.child.kill().unwrap();
        r.server.child.wait().unwrap();
        let mut rest = Vec::new();
        let _ = c.reader.read_to_end(&mut rest);
        assert!(
            rest.len() + 100_000 < (1 << 20),
            "the killed server cannot have completed the body"
        );
        assert_eq!(r.committed_files(), 0, "nothing published mid-download");
        f.set_file_mode(FileMode::Normal);
        let r2 = start(&f, dir.path(), &[]);
        let got = r2.file(0);
        assert_eq!(got.status, 200);
        assert!(
            got.body == f.file("root", "big", &big_wheel(0)).bytes,
            "served bytes differ"
        );
        assert_eq!(count_files(&dir.path().join("tmp")), 0);
        drop(r);
    });
}

#[test]
fn ranges_and_conditional_requests() {
    within(LIMIT, || {
        let f = FakeIndex::with_wheels(&[10_000]);
        let dir = tempfile::tempdir().unwrap();
        let r = start(&f, dir.path(), &[]);
        let path = format!("/index/big/{}", big_wheel(0));
        let data = f.file("root", "big", &big_wheel(0)).bytes;
        // Uncached: HEAD from the index size, no download.
        let head = request(r.addr(), "HEAD", &path, &[]);
        assert_eq!(head.header("content-length"), Some("10000"));
        assert_eq!(f.wheel_gets(0), 0);
        // Uncached suffix range (poetry): forwarded upstream as a range.
        let tail = r.get(&path, &[("Range", "bytes=-100")]);
        assert_eq!(tail.status, 206);
        assert_eq!(tail.header("content-range"), Some("bytes 9900-9999/10000"));
        assert_eq!(tail.body, &data[9900..]);
        // The full download started in the background (HEAD never starts one).
        crate::util::wait_until(
            Duration::from_secs(10),
            "the background download committed",
            || request(r.addr(), "HEAD", &path, &[]).header("x-cache") == Some("HIT"),
        );
        let full = r.get(&path, &[("Accept-Encoding", "gzip")]);
        assert_eq!(full.header("x-cache"), Some("HIT"));
        assert_eq!(full.header("accept-ranges"), Some("bytes"));
        assert_eq!(full.header("content-encoding"), None);
        assert_eq!(
            full.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        assert!(full.header("last-modified").is_some());
        let etag = full.header("etag").unwrap().to_owned();
        assert_eq!(
            etag,
            format!("\"{}\"", f.file("root", "big", &big_wheel(0)).sha256())
        );
        type Case<'a> = (
            Vec<(&'a str, &'a str)>,
            u16,
            Option<&'a str>,
            std::ops::Range<usize>,
        );
        let cases: Vec<Case> = vec![
            (
                vec![("Range", "bytes=0-99")],
                206,
                Some("bytes 0-99/10000"),
                0..100,
            ),
            (
                vec![("Range", "bytes=9000-")],
                206,
                Some("bytes 9000-9999/10000"),
                9000..10000,
            ),
            (
                vec![("Range", "bytes=-10")],
                206,
                Some("bytes 9990-9999/10000"),
                9990..10000,
            ),
            (
                vec![("Range", "bytes=10000-")],
                416,
                Some("bytes */10000"),
                0..0,
            ),
            (
                vec![("Range", "bytes=0-9"), ("If-Range", etag.as_str())],
                206,
                Some("bytes 0-9/10000"),
                0..10,
            ),
            (
                vec![("Range", "bytes=0-9"), ("If-Range", "\"other\"")],
                200,
                None,
                0..10000,
            ),
        ];
        for (headers, status, content_range, slice) in cases {
            let got = r.get(&path, &headers);
            assert_eq!(got.status, status, "{headers:?}");
            assert_eq!(got.header("content-range"), content_range, "{headers:?}");
            assert_eq!(got.body, &data[slice], "{headers:?}");
        }
        let nm = r.get(&path, &[("If-None-Match", &etag)]);
        assert_eq!(nm.status, 304);
        assert_eq!(nm.header("etag"), Some(etag.as_str()));
        let head = request(r.addr(), "HEAD", &path, &[]);
        assert_eq!(
            (head.header("content-length"), head.header("x-cache")),
            (Some("10000"), Some("HIT"))
        );
        assert_eq!(
            f.wheel_gets(0),
            2,
            "one ranged request and one full download"
        );
    });
}

#[test]
fn tar_gz_content_type_never_encoded() {
    within(LIMIT, || {
        let f = FakeIndex::start(BTreeMap::new());
        f.add_project(
            "root",
            "demo",
            FakeProject {
                files: vec![FakeFile::new("demo-1.0.tar.gz", blob(5000, 9))],
                versions: vec![],
                ..Default::default()
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let r = start(&f, dir.path(), &[]);
        for expected_cache in ["MISS", "HIT"] {
            let got = r.get(
                "/index/demo/demo-1.0.tar.gz",
                &[("Accept-Encoding", "gzip, deflate")],
            );
            assert_eq!(got.header("content-type"), Some("application/x-tar+gzip"));
            assert_eq!(got.header("content-encoding"), None);
            assert_eq!(got.header("x-cache"), Some(expected_cache));
        }
    });
}

#[test]
fn path_tricks_never_touch_anything_outside_the_cache() {
    within(LIMIT, || {
        let f = FakeIndex::with_wheels(&[1000]);
        let parent = tempfile::tempdir().unwrap();
        let cache = parent.path().join("cache");
        let r = start(&f, &cache, &[]);
        let long = format!("/index/big/{}", "a".repeat(4000));
        let paths = [
            "/index/big/..",
            "/index/big/%2e%2e",
            "/index/big/..%2f..%2fetc%2fpasswd",
            "/index/big/%2e%2e%2f%2e%2e%2f",
            "/index/big/a%5c..%5c..%5cx",
            "/index/big/x%00.whl",
            "/index/big/not-on-the-page.whl",
            "/index/big/../../etc/passwd",
            long.as_str(),
        ];
        for p in paths {
            let got = r.get(p, &[]);
            assert!((400..500).contains(&got.status), "{p}: {}", got.status);
        }
        let entries: Vec<_> = std::fs::read_dir(parent.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            entries,
            [std::ffi::OsString::from("cache")],
            "only the cache dir"
        );
        let mut ours: Vec<String> = std::fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ours.sort();
        assert_eq!(
            ours,
            [
                "CACHEDIR.TAG",
                "files",
                "pages",
                "roxpi.lock",
                "staging",
                "tmp"
            ]
        );
        assert_eq!(r.committed_files(), 0);
    });
}

#[test]
fn cache_size_zero_streams_through() {
    within(LIMIT, || {
        let f = FakeIndex::with_wheels(&[50_000]);
        let dir = tempfile::tempdir().unwrap();
        let r = start(&f, &dir.path().join("c"), &[("ROXPI_CACHE_SIZE", "0")]);
        for _ in 0..2 {
            let got = r.file(0);
            assert_eq!(got.body, f.file("root", "big", &big_wheel(0)).bytes);
            assert_eq!(got.header("x-cache"), Some("MISS"));
        }
        assert_eq!(f.wheel_gets(0), 2);
        assert!(!dir.path().join("c").exists(), "no cache dir is created");
    });
}

/// Writes fail past 64 KiB (`ulimit -f`): the client still gets the file,
/// the error is counted, nothing half-written is kept.
#[test]
fn disk_full_still_serves_the_client() {
    within(LIMIT, || {
        let f = FakeIndex::with_wheels(&[300_000]);
        let dir = tempfile::tempdir().unwrap();
        let cmd = crate::util::roxpi_under_ulimit("-f 128", &f, dir.path());
        let server = ChildServer::start(cmd);
        let expected = f.file("root", "big", &big_wheel(0)).bytes;
        // The disk fills under the download: the client still gets the
        // whole file (continued from the upstream), and so does the next.
        for _ in 0..2 {
            let got = request(
                server.addr,
                "GET",
                &format!("/index/big/{}", big_wheel(0)),
                &[],
            );
            assert_eq!(got.status, 200);
            assert!(got.body == expected);
        }
        assert_eq!(
            count_files(&dir.path().join("files")),
            0,
            "nothing half-written kept"
        );
        assert_eq!(count_files(&dir.path().join("tmp")), 0);
        let home = request(server.addr, "GET", "/", &[]).text();
        assert!(
            home.contains("write errors</td><td>1") || home.contains("write errors</td><td>2"),
            "{home}"
        );
    });
}

/// An edge box that restarts while its uplink is down: every page and file
/// it had is still served (stale pages, cached files), online or offline.
#[test]
fn restart_with_the_upstream_down_serves_what_it_had() {
    within(LIMIT, || {
        let mut f = FakeIndex::with_wheels(&[20_000]);
        let dir = tempfile::tempdir().unwrap();
        let r = start(&f, dir.path(), &[("ROXPI_STALE_AFTER", "0.5")]);
        let page = r.get(
            "/index/big/",
            &[("Accept", "application/vnd.pypi.simple.v1+json")],
        );
        assert_eq!(page.status, 200);
        let file = r.file(0);
        assert_eq!(file.status, 200);
        drop(r);
        f.stop();
        for env in [vec![], vec![("ROXPI_OFFLINE", "1")]] {
            let r = start(&f, dir.path(), &env);
            let again = r.get(
                "/index/big/",
                &[("Accept", "application/vnd.pypi.simple.v1+json")],
            );
            assert_eq!(again.status, 200, "{env:?}: {}", again.text());
            assert_eq!(again.header("x-cache"), Some("STALE"));
            assert_eq!(again.json()["files"], page.json()["files"]);
            let hit = r.file(0);
            assert_eq!(
                (hit.status, hit.header("x-cache")),
                (200, Some("HIT")),
                "{env:?}"
            );
            assert_eq!(hit.body, file.body);
            // Never seen: no copy, a clear error (not a 404, not a 500).
            let unknown = r.get("/index/never-seen/", &[]);
            assert!(
                matches!(unknown.status, 502 | 504),
                "{env:?}: {}",
                unknown.status
            );
        }
    });
}

/// The index says one length, the upstream sends another: refused before a
/// byte is served, never committed, and tried again next time.
#[test]
fn a_length_that_disagrees_with_the_index_is_refused() {
    within(LIMIT, || {
        let f = FakeIndex::start(BTreeMap::new());
        let mut file = FakeFile::new(&big_wheel(0), blob(10_000, 5));
        file.advertised_size = Some(9_999);
        f.add_project(
            "root",
            "big",
            FakeProject {
                files: vec![file],
                versions: vec![],
                ..Default::default()
            },
        );
        f.set_mode(crate::fake_index::Mode::Json);
        let dir = tempfile::tempdir().unwrap();
        let r = start(&f, dir.path(), &[]);
        for attempt in 1..=2 {
            let got = r.file(0);
            assert_eq!(got.status, 502, "attempt {attempt}: {}", got.text());
            assert!(got.text().contains("9999"), "{}", got.text());
            assert_eq!(f.wheel_gets(0), attempt);
        }
        assert_eq!(r.committed_files(), 0);
        assert_eq!(count_files(&dir.path().join("tmp")), 0);
    });
}

/// The bound stated in the README: 1 accept + 1 timer + the workers (one
/// per CPU) + 32 page fetchers + 64 downloaders + 16 openers + logging and
/// signal threads; transfer threads start only for streamed bodies above
/// 256 KiB, and slow readers of files add none.
fn thread_bound() -> usize {
    128 + roxpi::http::default_workers()
}

#[test]
fn cache_size_zero_500_distinct_misses_keep_the_thread_count_bounded() {
    within(LIMIT, || {
        let f = FakeIndex::with_wheels(&[2000; 500]);
        // A stalled upstream: every open outlives the 0.9 s the client
        // waits before proxpi's redirect (a thread per request would pile
        // up).
        f.set_file_delay(Duration::from_secs(2));
        let dir = tempfile::tempdir().unwrap();
        let r = start(
            &f,
            &dir.path().join("c"),
            &[("ROXPI_CACHE_SIZE", "0"), ("ROXPI_DOWNLOAD_TIMEOUT", "0.9")],
        );
        assert_eq!(r.get("/index/big/", &[]).status, 200);
        let pid = r.server.pid();
        let done = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let sampler = {
            let (done, max) = (done.clone(), max.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    max.fetch_max(crate::util::threads_of(pid) as u64, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        let addr = r.addr();
        let clients: Vec<_> = (0..500)
            .map(|i| {
                std::thread::spawn(move || {
                    let got = request(addr, "GET", &format!("/index/big/{}", big_wheel(i)), &[]);
                    (i, got)
                })
            })
            .collect();
        let (mut ok, mut redirected) = (0, 0);
        for c in clients {
            let (i, got) = c.join().unwrap();
            match got.status {
                200 => {
                    assert_eq!(got.body, f.file("root", "big", &big_wheel(i)).bytes, "{i}");
                    ok += 1;
                }
                // A full open pool sends the client to the upstream; a
                // full worker queue sheds with a 503 (never a hang).
                302 => {
                    assert!(got.header("location").is_some());
                    redirected += 1;
                }
                503 => assert!(got.header("retry-after").is_some()),
                s => panic!("file {i}: {s} {}", String::from_utf8_lossy(&got.body)),
            }
        }
        done.store(true, Ordering::Relaxed);
        sampler.join().unwrap();
        let max = max.load(Ordering::Relaxed) as usize;
        eprintln!(
            "500 distinct misses: {ok} streamed, {redirected} redirected, peak {max} threads"
        );
        assert!(redirected > 0, "the stalled upstream sends clients there");
        assert!(max > 0 && max <= thread_bound(), "peak {max} threads");
    });
}

#[test]
fn saved_pages_stay_within_their_bound_under_many_distinct_big_pages() {
    within(LIMIT, || {
        let f = FakeIndex::start(BTreeMap::new());
        f.set_mode(crate::fake_index::Mode::Json);
        // Eight projects whose pages are ~400 KB each.
        for p in 0..8 {
            let files = (0..2000)
                .map(|i| FakeFile::new(&format!("big{p}-1.{i}-py3-none-any.whl"), vec![0u8; 10]))
                .collect();
            f.add_project(
                "root",
                &format!("big{p}"),
                FakeProject {
                    files,
                    versions: vec![],
                    status: None,
                },
            );
        }
        let dir = tempfile::tempdir().unwrap();
        // Pages get a quarter of the cap, at least 1 MiB.
        let r = start(&f, &dir.path().join("c"), &[("ROXPI_CACHE_SIZE", "1M")]);
        for p in 0..8 {
            let got = r.get(
                &format!("/index/big{p}/"),
                &[("Accept", "application/vnd.pypi.simple.v1+json")],
            );
            assert_eq!(got.status, 200);
            let on_disk = dir_bytes(&dir.path().join("c").join("pages"));
            assert!(
                on_disk <= 1 << 20,
                "{on_disk} bytes of saved pages after {p}"
            );
        }
        assert!(
            dir_bytes(&dir.path().join("c").join("pages")) > 0,
            "pages are saved"
        );
    });
}

/// One attempt at a file: the body if it arrived whole as a 200.
fn whole_200(addr: SocketAddr, path: &str) -> Option<Vec<u8>> {
    let mut c = Client::new(addr);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    match c.read_reply(false) {
        Ok(r) if r.status == 200 => Some(r.body),
        _ => None,
    }
}

#[test]
fn upstream_bodies_without_content_length_are_verified_in_both_modes() {
    use crate::fake_index::Unsized;
    within(LIMIT, || {
        // A small file (answered once verified) and a large one (streamed
        // while it downloads), in cached and stream-through modes.
        let f = FakeIndex::with_wheels(&[5000, 600_000]);
        for cache_size in ["1G", "0"] {
            for how in [
                Unsized::Wrong,
                Unsized::Short,
                Unsized::Long,
                Unsized::Right,
            ] {
                let dir = tempfile::tempdir().unwrap();
                let r = start(
                    &f,
                    &dir.path().join("c"),
                    &[("ROXPI_CACHE_SIZE", cache_size)],
                );
                f.set_file_mode(FileMode::Unsized(how));
                for i in 0..2 {
                    let want = f.file("root", "big", &big_wheel(i)).bytes;
                    let got = whole_200(r.addr(), &format!("/index/big/{}", big_wheel(i)));
                    let what = format!("{how:?}, file {i}, ROXPI_CACHE_SIZE={cache_size}");
                    if how == Unsized::Right {
                        assert_eq!(got.as_deref(), Some(&want[..]), "{what}");
                    } else {
                        assert!(got.is_none(), "{what}: a complete 200 of a bad body");
                    }
                }
                if how == Unsized::Right && cache_size != "0" {
                    // Verified against the index size and hash, then cached.
                    f.set_file_mode(FileMode::Normal);
                    let before = f.wheel_gets(0);
                    assert!(whole_200(r.addr(), &format!("/index/big/{}", big_wheel(0))).is_some());
                    assert_eq!(f.wheel_gets(0), before, "served from the cache");
                }
            }
        }
    });
}
