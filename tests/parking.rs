//! Nothing waits in a worker: requests whose upstream hangs are parked, so
//! `/health` and cache hits answer at once even with 4 workers and 64 such
//! requests in flight.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::fake_index::{FakeFile, FakeIndex, FakeProject, Mode};
use crate::util::{get, metric, roxpi_on, within, Recorder};

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn hanging_upstream_requests_hold_no_worker() {
    within(LIMIT, || {
        let fake = FakeIndex::start(BTreeMap::new());
        fake.set_mode(Mode::Json);
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        fake.add_project(
            "root",
            "warm",
            FakeProject {
                files: vec![FakeFile::new("warm-1.0-py3-none-any.whl", big.clone())],
                versions: vec![],
                ..Default::default()
            },
        );
        // Files whose downloads hang (their URLs hold `hang-`).
        let hanging: Vec<FakeFile> = (0..32)
            .map(|i| FakeFile::new(&format!("hang-{i}-1.0-py3-none-any.whl"), vec![1u8; 1000]))
            .collect();
        fake.add_project(
            "root",
            "slowfiles",
            FakeProject {
                files: hanging,
                versions: vec![],
                ..Default::default()
            },
        );
        let (roxpi, _cache, _home) = roxpi_on(
            &fake,
            &[
                ("ROXPI_WORKERS", "4"),
                // Waiting file requests stay in flight instead of redirecting.
                ("ROXPI_DOWNLOAD_TIMEOUT", "60"),
                ("ROXPI_READ_TIMEOUT", "60"),
            ],
        );
        let addr = roxpi.addr;
        let warm_file = "/index/warm/warm-1.0-py3-none-any.whl";
        assert_eq!(get(addr, "/index/warm/").status, 200);
        assert_eq!(get(addr, warm_file).body, big);
        assert_eq!(get(addr, "/index/slowfiles/").status, 200);

        // 64 requests whose upstream hangs: 32 pages, 32 files.
        let mut hung: Vec<TcpStream> = (0..64)
            .map(|i| {
                let path = if i < 32 {
                    format!("/index/hang-{i}/")
                } else {
                    format!("/index/slowfiles/hang-{}-1.0-py3-none-any.whl", i - 32)
                };
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                    .unwrap();
                s
            })
            .collect();
        // Until all 64 are parked (no worker holds any of them).
        let started = Instant::now();
        while metric(addr, "roxpi_http_waiting_requests") < 64 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "64 never parked"
            );
            std::thread::yield_now();
        }

        let mut worst = Duration::ZERO;
        for round in 0..20 {
            for path in ["/health", "/index/warm/", warm_file] {
                let t = Instant::now();
                let r = get(addr, path);
                let took = t.elapsed();
                assert_eq!(r.status, 200, "{path} round {round}");
                if path == warm_file {
                    assert_eq!(r.body.len(), big.len());
                }
                assert!(took < Duration::from_secs(1), "{path} took {took:?}");
                worst = worst.max(took);
            }
        }
        eprintln!("with 4 workers and 64 hung upstream requests: slowest of 60 probes {worst:?}");
        assert!(
            metric(addr, "roxpi_http_waiting_requests") >= 64,
            "still parked"
        );
        hung.clear();
    });
}

/// Every spelling of a second loopback origin (the index is on
/// `127.0.0.1:X`; the target is port Y): as a link, and as a `Location`.
fn other_origin_spellings(x: u16, y: u16) -> Vec<String> {
    vec![
        format!("http://127.0.0.1:{y}/"),
        format!("http://[::1]:{y}/"),
        format!("http://2130706433:{y}/"),
        format!("http://0x7f000001:{y}/"),
        format!("http://0177.0.0.1:{y}/"),
        format!("http://127.1:{y}/"),
        format!("http://[::ffff:127.0.0.1]:{y}/"),
        format!("http://[::7f00:1]:{y}/"),
        format!("http://[64:ff9b::7f00:1]:{y}/"),
        format!("http://localhost:{y}/"),
        format!("http://user:pass@127.0.0.1:{y}/"),
        format!("http://127.0.0.1:{x}@127.0.0.1:{y}/"),
        format!("//127.0.0.1:{y}/"),
    ]
}

#[test]
fn links_and_redirects_to_another_origin_are_refused_in_every_spelling() {
    within(LIMIT, || {
        let other = Recorder::start(None);
        let fake = FakeIndex::start(BTreeMap::new());
        fake.set_mode(Mode::Json);
        let spellings = other_origin_spellings(fake.addr.port(), other.addr.port());
        let mut files = Vec::new();
        for (i, to) in spellings.iter().enumerate() {
            let name = format!("evil-{i}.0-py3-none-any.whl");
            let mut direct = FakeFile::new(&name, vec![1u8; 100]);
            direct.url = Some(format!("{to}{name}"));
            files.push(direct);
            let name = format!("evil-{i}.1-py3-none-any.whl");
            let mut hop = FakeFile::new(&name, vec![2u8; 100]);
            let go = fake.add_redirect(&format!("{to}{name}"));
            hop.url = Some(format!("http://{}{go}", fake.addr));
            files.push(hop);
        }
        let names: Vec<String> = files.iter().map(|f| f.filename.clone()).collect();
        fake.add_project(
            "root",
            "evil",
            FakeProject {
                files,
                ..Default::default()
            },
        );
        let (roxpi, _cache, _home) = roxpi_on(&fake, &[]);
        let addr = roxpi.addr;
        // The index's own origin is trusted, on loopback.
        assert_eq!(get(addr, "/index/evil/").status, 200);
        for file in &names {
            let r = get(addr, &format!("/index/evil/{file}"));
            assert_eq!(r.status, 502, "{file}: {}", r.text());
            assert!(r.text().contains("address policy"), "{file}: {}", r.text());
        }
        // Project pages that redirect there.
        for (i, to) in spellings.iter().enumerate() {
            let r = get(addr, &format!("/index/go-{i}/"));
            assert_eq!(r.status, 502, "{to}: {}", r.text());
            assert!(r.text().contains("address policy"), "{}", r.text());
        }
        assert_eq!(other.lines(), Vec::<String>::new(), "no connection");
        assert!(
            metric(addr, "roxpi_upstream_refused_addresses_total") >= 3 * spellings.len() as u64
        );
        // The files on the index's own origin still work.
        let mut good = FakeFile::new("good-1.0-py3-none-any.whl", vec![3u8; 100]);
        good.url = Some(format!(
            "http://{}{}",
            fake.addr,
            fake.add_redirect("/files/root/good/good-1.0-py3-none-any.whl")
        ));
        fake.add_project(
            "root",
            "good",
            FakeProject {
                files: vec![good],
                ..Default::default()
            },
        );
        let r = get(addr, "/index/good/good-1.0-py3-none-any.whl");
        assert_eq!(r.status, 200, "{}", r.text());
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
fn a_thousand_clients_that_never_read_hold_no_thread() {
    within(LIMIT, || {
        let fake = FakeIndex::start(BTreeMap::new());
        fake.set_mode(Mode::Json);
        let huge: Vec<u8> = (0..16u32 << 20).map(|i| (i % 249) as u8).collect();
        let one: Vec<u8> = (0..1u32 << 20).map(|i| (i % 241) as u8).collect();
        fake.add_project(
            "root",
            "files",
            FakeProject {
                files: vec![
                    FakeFile::new("huge-1.0-py3-none-any.whl", huge.clone()),
                    FakeFile::new("one-1.0-py3-none-any.whl", one.clone()),
                ],
                versions: vec![],
                status: None,
            },
        );
        let (roxpi, _cache, _home) = roxpi_on(&fake, &[]);
        let addr = roxpi.addr;
        let huge_path = "/index/files/huge-1.0-py3-none-any.whl";
        let one_path = "/index/files/one-1.0-py3-none-any.whl";
        assert_eq!(get(addr, huge_path).body.len(), huge.len());
        assert_eq!(get(addr, one_path).body, one);
        let idle_threads = roxpi.threads();

        let mut stalled = Vec::new();
        for _ in 0..1000 {
            let mut s = TcpStream::connect(addr).unwrap();
            // A small receive window: the kernel holds little per client.
            let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&s, 4096);
            s.write_all(format!("GET {huge_path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                .unwrap();
            stalled.push(s);
        }
        let mut worst = Duration::ZERO;
        let mut peak_threads = 0;
        for _ in 0..10 {
            let t = Instant::now();
            let r = get(addr, one_path);
            let took = t.elapsed();
            assert_eq!(r.body, one);
            assert!(
                took < Duration::from_secs(1),
                "a warm 1 MB file took {took:?}"
            );
            worst = worst.max(took);
            peak_threads = peak_threads.max(roxpi.threads());
        }
        eprintln!(
            "1000 stalled readers of a 16 MB file: warm 1 MB file in at most {worst:?}; threads {idle_threads} idle, {peak_threads} at most"
        );
        assert!(peak_threads <= thread_bound(), "{peak_threads} threads");
        drop(stalled);
    });
}

#[test]
fn a_client_hanging_up_while_parked_frees_its_connection_at_once() {
    within(LIMIT, || {
        let fake = FakeIndex::start(BTreeMap::new());
        fake.set_mode(Mode::Json);
        let (roxpi, _cache, _home) = roxpi_on(&fake, &[]);
        let addr = roxpi.addr;
        let fds = || {
            std::fs::read_dir(format!("/proc/{}/fd", roxpi.pid()))
                .unwrap()
                .count()
        };
        assert_eq!(get(addr, "/health").status, 200);
        let before = fds();
        let hung: Vec<TcpStream> = (0..16)
            .map(|i| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(format!("GET /index/hang-{i}/ HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                    .unwrap();
                s
            })
            .collect();
        crate::util::wait_until(Duration::from_secs(30), "16 parked requests", || {
            metric(addr, "roxpi_http_waiting_requests") >= 16
        });
        assert_eq!(metric(addr, "roxpi_http_abandoned_total"), 0);
        // The clients give up (the upstream still hangs: only the hang-up
        // can end their wait before the 120 s deadline).
        drop(hung);
        let started = Instant::now();
        crate::util::wait_until(Duration::from_secs(10), "16 hang-ups noticed", || {
            metric(addr, "roxpi_http_abandoned_total") >= 16
        });
        assert_eq!(metric(addr, "roxpi_http_waiting_requests"), 0);
        // Their sockets are closed (the upstream fetches still hold theirs:
        // 16, plus a few transient ones; held client sockets would add 16).
        assert!(
            fds() <= before + 20,
            "{} descriptors, {before} before",
            fds()
        );
        eprintln!(
            "16 parked clients hung up: all dropped after {:?}",
            started.elapsed()
        );
        // The server still serves.
        assert_eq!(get(addr, "/health").status, 200);
    });
}

#[test]
fn clients_following_a_slow_download_hold_no_thread() {
    within(LIMIT, || {
        let fake = FakeIndex::start(BTreeMap::new());
        fake.set_mode(Mode::Json);
        let big: Vec<u8> = (0..2u32 << 20).map(|i| (i % 239) as u8).collect();
        fake.add_project(
            "root",
            "slow",
            FakeProject {
                files: vec![FakeFile::new("slow-1.0-py3-none-any.whl", big.clone())],
                versions: vec![],
                ..Default::default()
            },
        );
        // About 1.6 s for the whole file.
        fake.set_file_mode(crate::fake_index::FileMode::Throttle {
            chunk: 64 * 1024,
            every: Duration::from_millis(50),
        });
        let (roxpi, _cache, _home) = roxpi_on(&fake, &[]);
        let addr = roxpi.addr;
        assert_eq!(get(addr, "/index/slow/").status, 200);
        let idle = roxpi.threads();
        // 200 clients follow the one download as it grows.
        let clients: Vec<_> = (0..200)
            .map(|_| {
                std::thread::spawn(move || get(addr, "/index/slow/slow-1.0-py3-none-any.whl").body)
            })
            .collect();
        let mut peak = 0;
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(80));
            peak = peak.max(roxpi.threads());
        }
        for c in clients {
            assert_eq!(c.join().unwrap(), big);
        }
        eprintln!("200 clients following a slow download: threads {idle} idle, {peak} at most");
        // A thread per follower would add 200.
        assert!(peak < idle + 50, "{peak} threads ({idle} idle)");
    });
}

/// Every kind of parked wait ends by its deadline (`ROXPI_REQUEST_DEADLINE`)
/// with a 504, whatever it waits on: a page fetch, a file download (small
/// and large), metadata made from a wheel by range reads, and an open on
/// the open pool (a range of an uncached file).
#[test]
fn every_kind_of_parked_wait_is_answered_by_its_deadline() {
    within(LIMIT, || {
        let fake = FakeIndex::start(BTreeMap::new());
        fake.set_mode(Mode::Json);
        let files = vec![
            FakeFile::new("hang-1.0-py3-none-any.whl", vec![1u8; 1000]),
            FakeFile::new("hang-2.0.tar.gz", vec![2u8; 1 << 20]),
            FakeFile::new("hang-3.0-py3-none-any.whl", vec![3u8; 1 << 20]),
            FakeFile::new("hang-4.0.tar.gz", vec![4u8; 1 << 20]),
        ];
        // The page answers; the files' URLs (`hang-…`) never do.
        fake.add_project(
            "root",
            "slowfiles",
            FakeProject {
                files,
                versions: vec![],
                ..Default::default()
            },
        );
        let deadline = Duration::from_secs(2);
        let (roxpi, _cache, _home) = roxpi_on(
            &fake,
            &[
                ("ROXPI_REQUEST_DEADLINE", "2"),
                ("ROXPI_READ_TIMEOUT", "60"),
                ("ROXPI_WORKERS", "2"),
            ],
        );
        let addr = roxpi.addr;
        assert_eq!(crate::util::get(addr, "/index/slowfiles/").status, 200);
        let waits: [(&str, &str, Option<&str>); 6] = [
            ("page", "/index/hang-page/", None),
            (
                "file (small)",
                "/index/slowfiles/hang-1.0-py3-none-any.whl",
                None,
            ),
            ("file (large)", "/index/slowfiles/hang-2.0.tar.gz", None),
            (
                "metadata",
                "/index/slowfiles/hang-3.0-py3-none-any.whl.metadata",
                None,
            ),
            (
                "pool open",
                "/index/slowfiles/hang-4.0.tar.gz",
                Some("bytes=0-99"),
            ),
            (
                "file of a page not fetched yet",
                "/index/hang-other/hang-5.0.tar.gz",
                None,
            ),
        ];
        for (kind, path, range) in waits {
            let headers: Vec<(&str, &str)> = range.map(|r| ("Range", r)).into_iter().collect();
            let t = Instant::now();
            let r = crate::util::request(addr, "GET", path, &headers);
            let took = t.elapsed();
            eprintln!("{kind}: {} after {took:?}", r.status);
            assert_eq!(r.status, 504, "{kind}: {}", r.text());
            assert!(
                took >= deadline - Duration::from_millis(100) && took < deadline * 2,
                "{kind}: answered after {took:?}, deadline {deadline:?}"
            );
        }
        assert_eq!(metric(addr, "roxpi_http_waiting_requests"), 0);
    });
}

/// `/ready` turns 503 with the reason while the index cache cannot make
/// progress: every fetch thread waits on a hung upstream and fetches are
/// queued behind them, none finishing for 10 s. `/health` stays 200.
#[test]
fn ready_says_when_the_index_cache_cannot_make_progress() {
    within(LIMIT, || {
        let fake = FakeIndex::start(BTreeMap::new());
        let (roxpi, _cache, _home) = roxpi_on(
            &fake,
            &[
                ("ROXPI_REQUEST_DEADLINE", "40"),
                ("ROXPI_READ_TIMEOUT", "60"),
            ],
        );
        let addr = roxpi.addr;
        crate::util::wait_until(Duration::from_secs(10), "ready", || {
            get(addr, "/ready").status == 200
        });
        // 40 distinct hung pages: 32 fetch threads taken, 8 queued.
        let _hung: Vec<TcpStream> = (0..40)
            .map(|i| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(format!("GET /index/hang-{i}/ HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                    .unwrap();
                s
            })
            .collect();
        let started = Instant::now();
        let mut ready = get(addr, "/ready");
        crate::util::wait_until(Duration::from_secs(20), "/ready to turn 503", || {
            ready = get(addr, "/ready");
            ready.status == 503
        });
        let took = started.elapsed();
        let body = String::from_utf8_lossy(&ready.body);
        assert!(body.contains("page fetches queued"), "{body}");
        assert!(took >= Duration::from_secs(9), "not before 10 s: {took:?}");
        assert_eq!(get(addr, "/health").status, 200);
    });
}

/// Proxy variables in the environment are ignored: through a proxy,
/// upstream connections would skip the address policy. A listener posing
/// as the proxy gets no connection, and pages come from the index itself.
#[test]
fn proxy_variables_in_the_environment_are_ignored() {
    within(LIMIT, || {
        let proxy = Recorder::start(None);
        let other = Recorder::start(None);
        let url = proxy.url();
        let fake = FakeIndex::start(crate::fake_index::proxpi_data());
        fake.set_mode(Mode::Json);
        let mut elsewhere = FakeFile::new("evil-1.0-py3-none-any.whl", vec![1u8; 100]);
        elsewhere.url = Some(format!("{}/evil-1.0-py3-none-any.whl", other.url()));
        fake.add_project(
            "root",
            "evil",
            FakeProject {
                files: vec![elsewhere],
                ..Default::default()
            },
        );
        let vars = [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ];
        let env: Vec<(&str, &str)> = vars.iter().map(|v| (*v, url.as_str())).collect();
        let (roxpi, _cache, _home) = roxpi_on(&fake, &env);
        let r = get(roxpi.addr, "/index/numpy/");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            fake.count("/root/numpy/"),
            1,
            "fetched from the index itself"
        );
        let r = get(roxpi.addr, "/index/evil/evil-1.0-py3-none-any.whl");
        assert_eq!(r.status, 502, "{}", r.text());
        assert!(r.text().contains("address policy"), "{}", r.text());
        assert_eq!(
            proxy.lines(),
            Vec::<String>::new(),
            "nothing went through the proxy"
        );
        assert_eq!(
            other.lines(),
            Vec::<String>::new(),
            "nor to the other origin"
        );
    });
}

#[test]
fn through_the_configured_proxy_refused_targets_are_never_connected() {
    within(LIMIT, || {
        let fake = FakeIndex::start(BTreeMap::new());
        fake.set_mode(Mode::Json);
        let proxy = Recorder::start(Some(fake.addr));
        let other = Recorder::start(None);
        let targets = [
            "http://10.1.2.3/".to_owned(),
            "http://169.254.169.254/latest/".to_owned(),
            "http://[fd00::1]/".to_owned(),
            format!("{}/", other.url()),
        ];
        let mut files: Vec<FakeFile> = targets
            .iter()
            .enumerate()
            .map(|(i, to)| {
                let name = format!("evil-{i}.0-py3-none-any.whl");
                let mut f = FakeFile::new(&name, vec![1u8; 100]);
                f.url = Some(format!("{to}{name}"));
                f
            })
            .collect();
        files.push(FakeFile::new("evil-9.0-py3-none-any.whl", vec![9u8; 100]));
        fake.add_project(
            "root",
            "evil",
            FakeProject {
                files,
                ..Default::default()
            },
        );
        let (roxpi, _cache, _home) =
            roxpi_on(&fake, &[("ROXPI_UPSTREAM_PROXY", proxy.url().as_str())]);
        let addr = roxpi.addr;
        let page = get(addr, "/index/evil/");
        assert_eq!(page.status, 200, "{} {:?}", page.text(), proxy.lines());
        for (i, to) in targets.iter().enumerate() {
            let r = get(addr, &format!("/index/evil/evil-{i}.0-py3-none-any.whl"));
            assert_eq!(r.status, 502, "{to}: {}", r.text());
            assert!(r.text().contains("address policy"), "{}", r.text());
        }
        let r = get(addr, "/index/evil/evil-9.0-py3-none-any.whl");
        assert_eq!(r.status, 200, "{}", r.text());
        let lines = proxy.lines();
        assert!(!lines.is_empty(), "the index went through the proxy");
        let want = format!("CONNECT {} HTTP/1.1", fake.addr);
        for line in &lines {
            assert_eq!(line, &want, "only the index was CONNECTed: {lines:?}");
        }
        assert_eq!(other.lines(), Vec::<String>::new());
    });
}

#[test]
fn hung_downloads_under_256_descriptors_leave_page_misses_working() {
    within(LIMIT, || {
        let fake = FakeIndex::start(BTreeMap::new());
        fake.set_mode(Mode::Json);
        // The fake never answers a path with a part starting `hang-`.
        let hung: Vec<FakeFile> = (0..64)
            .map(|i| FakeFile::new(&format!("hang-{i}.0-py3-none-any.whl"), vec![i as u8; 100]))
            .collect();
        fake.add_project(
            "root",
            "hang",
            FakeProject {
                files: hung,
                ..Default::default()
            },
        );
        for i in 0..150 {
            fake.add_project(
                "root",
                &format!("p{i}"),
                FakeProject {
                    files: vec![FakeFile::new(&format!("p{i}-1.0.tar.gz"), vec![2u8; 10])],
                    ..Default::default()
                },
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let mut roxpi = crate::util::ChildServer::start(crate::util::roxpi_under_ulimit(
            "-n 256",
            &fake,
            dir.path(),
        ));
        let stderr = roxpi.capture_stderr();
        let addr = roxpi.addr;
        assert_eq!(get(addr, "/index/hang/").status, 200);
        // 64 downloads that hang, abandoned by their clients after 1 s.
        let abandoned: Vec<_> = (0..64)
            .map(|i| {
                std::thread::spawn(move || {
                    let mut s = TcpStream::connect(addr).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                    let req = format!(
                        "GET /index/hang/hang-{i}.0-py3-none-any.whl HTTP/1.1\r\nHost: x\r\n\r\n"
                    );
                    s.write_all(req.as_bytes()).unwrap();
                    let _ = std::io::Read::read(&mut s, &mut [0u8; 64]);
                })
            })
            .collect();
        for a in abandoned {
            a.join().unwrap();
        }
        let fds = std::fs::read_dir(format!("/proc/{}/fd", roxpi.pid())).map_or(0, |d| d.count());
        eprintln!("roxpi holds {fds} descriptors after 64 hung downloads");
        // Then 150 page misses at once (150 client connections, below
        // the connection cap of 176), each taking the upstream 200 ms.
        fake.set_fault(crate::fake_index::Fault::Hang(Duration::from_millis(200)));
        let askers: Vec<_> = (0..150)
            .map(|i| {
                std::thread::spawn(move || {
                    let r = get(addr, &format!("/index/p{i}/"));
                    (r.status, r.text())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let fds = std::fs::read_dir(format!("/proc/{}/fd", roxpi.pid())).map_or(0, |d| d.count());
        eprintln!("roxpi holds {fds} descriptors under 150 page misses");
        for a in askers {
            let (status, text) = a.join().unwrap();
            assert!(!text.contains("uncategorized"), "{text}");
            assert_eq!(status, 200, "{text}");
        }
        assert_eq!(metric(addr, "roxpi_http_accept_errors_total"), 0);
        drop(roxpi);
        let log = stderr
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
        assert!(!log.contains("uncategorized"), "{log}");
        assert!(
            !log.to_ascii_lowercase().contains("too many open files"),
            "{log}"
        );
    });
}
