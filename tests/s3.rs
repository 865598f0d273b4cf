//! `ROXPI_STORAGE=s3` and `tiered` through the real binary, against s3s-fs
//! (a real S3-protocol server that checks signatures; `s3_server`), with a
//! fault proxy in between that counts S3 requests and breaks them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::fake_index::{
    big_wheel, FakeFile, FakeIndex, Fault as UpstreamFault, FileMode, Unsized,
};
use crate::s3_server::{bucket_env, file_key, holds, Fault, S3Proxy, S3Server, BUCKET};
use crate::util::wait_until;
use crate::util::{
    blob, dir_bytes, metric, request, roxpi_on, walk, within, ChildServer, Client, Reply,
};

const LIMIT: Duration = Duration::from_secs(240);
const WAIT: Duration = Duration::from_secs(60);

fn path(i: usize) -> String {
    format!("/index/big/{}", big_wheel(i))
}

/// A roxpi process on `fake` with the bucket behind `proxy`.
struct Node {
    server: ChildServer,
    cache: tempfile::TempDir,
    _home: tempfile::TempDir,
}

impl Node {
    fn start(
        fake: &FakeIndex,
        proxy: &S3Proxy,
        storage: &'static str,
        extra: &[(&str, &str)],
    ) -> Node {
        let env = bucket_env(proxy, storage);
        let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(extra);
        let (server, cache, home) = roxpi_on(fake, &all);
        Node {
            server,
            cache,
            _home: home,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    fn get(&self, path: &str) -> Reply {
        request(self.addr(), "GET", path, &[])
    }

    fn metric(&self, name: &str) -> u64 {
        metric(self.addr(), name)
    }

    /// Waits until `name` reaches `value`.
    fn wait_metric(&self, name: &str, value: u64) {
        wait_until(WAIT, name, || self.metric(name) >= value);
    }
}

fn expected(fake: &FakeIndex, i: usize) -> FakeFile {
    fake.file("root", "big", &big_wheel(i))
}

/// Asserts a 200 with exactly the file's bytes.
fn assert_serves(node: &Node, fake: &FakeIndex, i: usize) {
    let r = node.get(&path(i));
    assert_eq!(r.status, 200, "{}: {}", big_wheel(i), r.text());
    assert!(
        r.body == expected(fake, i).bytes,
        "{}: the body differs",
        big_wheel(i)
    );
}

fn object(s3: &S3Server, fake: &FakeIndex, i: usize) -> std::path::PathBuf {
    let f = expected(fake, i);
    s3.object_path(&file_key(&f.sha256(), &big_wheel(i)))
}

#[test]
fn s3_mode_serves_byte_exact_files_and_ranges_from_the_bucket() {
    let Some(s3) = S3Server::start() else { return };
    within(LIMIT, move || {
        let proxy = S3Proxy::start(s3.addr);
        let f = FakeIndex::with_wheels(&[300_000, 5_000]);
        let n = Node::start(&f, &proxy, "s3", &[]);
        for i in 0..2 {
            assert_serves(&n, &f, i);
        }
        n.wait_metric("roxpi_file_uploads_total", 2);
        for i in 0..2 {
            assert!(
                holds(&object(&s3, &f, i), &expected(&f, i).bytes),
                "object {i} in the bucket"
            );
        }
        // Again: from the bucket, not the upstream, and said so.
        for i in 0..2 {
            assert_serves(&n, &f, i);
            assert_eq!(f.wheel_gets(i), 1);
            assert_eq!(n.get(&path(i)).header("x-cache"), Some("BUCKET"));
        }
        // Each file was read from the bucket (a request that comes while
        // a read's entry is still in flight joins it instead of reading
        // again).
        let hits = n.metric("roxpi_file_bucket_hits_total");
        assert!((2..=4).contains(&hits), "{hits} bucket reads");
        // Ranges: one ranged GET each, of the object verified whole.
        let bytes = expected(&f, 0).bytes;
        let sha = expected(&f, 0).sha256();
        let gets = proxy.count("GET", &sha);
        let r = request(n.addr(), "GET", &path(0), &[("Range", "bytes=1000-1999")]);
        assert_eq!(r.status, 206);
        assert_eq!(r.header("content-range"), Some("bytes 1000-1999/300000"));
        assert!(r.body == bytes[1000..2000]);
        let r = request(n.addr(), "GET", &path(0), &[("Range", "bytes=-100")]);
        assert_eq!(r.status, 206);
        assert!(r.body == bytes[bytes.len() - 100..]);
        assert_eq!(f.wheel_gets(0), 1, "ranges come from the bucket");
        assert_eq!(
            proxy.count("GET", &sha),
            gets + 2,
            "one ranged GET per range"
        );
        let asked: Vec<Option<String>> = proxy
            .seen()
            .into_iter()
            .filter(|s| s.method == "GET" && s.target.contains(&sha))
            .map(|s| s.range)
            .collect();
        assert_eq!(
            asked[asked.len() - 2..],
            [
                Some("bytes=1000-1999".to_owned()),
                Some("bytes=299900-299999".to_owned())
            ]
        );
        // Replaced by another writer since: its ranges are not served.
        s3.put_object(&file_key(&sha, &big_wheel(0)), &blob(bytes.len(), 5));
        let r = request(n.addr(), "GET", &path(0), &[("Range", "bytes=1000-1999")]);
        assert_eq!(r.status, 206);
        assert!(
            r.body == bytes[1000..2000],
            "a range of the replaced object"
        );
        assert_eq!(f.wheel_gets(0), 2, "the range came from the upstream");
        // The cache dir stages only: no file is kept there.
        assert_eq!(walk(&n.cache.path().join("files")).len(), 0);
        assert_eq!(dir_bytes(&n.cache.path().join("tmp")), 0);
    });
}

#[test]
fn uploads_above_the_threshold_are_multipart_and_a_failed_one_leaves_no_parts() {
    let Some(s3) = S3Server::start() else { return };
    within(LIMIT, move || {
        let proxy = S3Proxy::start(s3.addr);
        let big = (65 << 20) + 123;
        let f = FakeIndex::with_wheels(&[big, big + 1]);
        let n = Node::start(&f, &proxy, "s3", &[]);
        assert_serves(&n, &f, 0);
        n.wait_metric("roxpi_file_uploads_total", 1);
        assert_eq!(n.metric("roxpi_s3_multipart_uploads_total"), 1);
        assert!(holds(&object(&s3, &f, 0), &expected(&f, 0).bytes));
        let sha0 = expected(&f, 0).sha256();
        // 65 MiB in parts of 8 MiB: 9 parts.
        assert_eq!(proxy.count("PUT", &sha0), 9);
        assert!(s3.open_uploads().is_empty());

        // Every upload of the second file is cut in its second part.
        let sha1 = expected(&f, 1).sha256();
        proxy.set_fault(Fault::CutRequest {
            path: sha1.clone(),
            query: "partNumber=2&".into(),
            after: 1 << 20,
        });
        assert_serves(&n, &f, 1);
        n.wait_metric("roxpi_file_upload_failures_total", 1);
        assert_eq!(
            n.metric("roxpi_s3_aborted_uploads_total"),
            3,
            "each of 3 tries aborted"
        );
        assert_eq!(proxy.count("DELETE", &sha1), 3);
        assert!(
            !object(&s3, &f, 1).exists(),
            "no object from a failed upload"
        );
        assert_eq!(
            s3.open_uploads(),
            Vec::<std::path::PathBuf>::new(),
            "parts left behind"
        );
    });
}

#[test]
fn an_upstream_without_content_length_is_stored_in_the_bucket() {
    let Some(s3) = S3Server::start() else { return };
    within(LIMIT, move || {
        for storage in ["s3", "tiered"] {
            let proxy = S3Proxy::start(s3.addr);
            let f = FakeIndex::with_wheels(&[400_000 + storage.len()]);
            f.set_file_mode(FileMode::Unsized(Unsized::Right));
            let n = Node::start(&f, &proxy, storage, &[]);
            assert_serves(&n, &f, 0);
            n.wait_metric("roxpi_file_uploads_total", 1);
            assert!(
                holds(&object(&s3, &f, 0), &expected(&f, 0).bytes),
                "{storage}"
            );
        }
    });
}

#[test]
fn s3_down_before_or_during_a_transfer_falls_back_to_the_upstream() {
    let Some(s3) = S3Server::start() else { return };
    within(LIMIT, move || {
        let proxy = S3Proxy::start(s3.addr);
        let f = FakeIndex::with_wheels(&[300_000, 600_000, 100_000]);
        // Down before roxpi starts: it starts anyway, and serves.
        proxy.set_fault(Fault::Down);
        let n = Node::start(&f, &proxy, "s3", &[]);
        assert_eq!(n.get("/index/big/").status, 200);
        assert_serves(&n, &f, 0);
        assert_serves(&n, &f, 2);
        assert_eq!(n.metric("roxpi_file_bucket_fallbacks_total"), 2);
        // The failed startup check paused bucket reads: none was tried
        // (a blackholed S3 would cost each one the connect timeout).
        assert_eq!(proxy.count("GET", "/"), 0);
        assert!(n.metric("roxpi_s3_skipped_reads_total") >= 2);
        // Back: the next file goes into the bucket.
        proxy.set_fault(Fault::Pass);
        assert_serves(&n, &f, 1);
        wait_until(WAIT, "the object", || {
            holds(&object(&s3, &f, 1), &expected(&f, 1).bytes)
        });
        let fallbacks = n.metric("roxpi_file_bucket_fallbacks_total");
        // Down during a transfer: the bucket's answer is cut after 2000
        // bytes; no client byte was sent yet, so the upstream serves it.
        proxy.set_fault(Fault::CutResponse {
            matching: expected(&f, 1).sha256(),
            after: 2000,
        });
        assert_serves(&n, &f, 1);
        assert_eq!(f.wheel_gets(1), 2);
        assert_eq!(n.metric("roxpi_file_bucket_fallbacks_total"), fallbacks + 1);
        proxy.set_fault(Fault::Pass);
        assert_serves(&n, &f, 1);
    });
}

/// 32 clients at once, each reading the whole file.
fn herd(addr: SocketAddr, path: &str) -> Vec<Vec<u8>> {
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let p = path.to_owned();
            std::thread::spawn(move || {
                let mut c = Client::new(addr);
                c.send(
                    format!("GET {p} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
                );
                let r = c.read_reply(false).expect("a reply");
                assert_eq!(r.status, 200);
                r.body
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn thirty_two_requesters_make_one_upstream_get_in_s3_and_tiered_mode() {
    let Some(s3) = S3Server::start() else { return };
    within(LIMIT, move || {
        for (seed, storage) in ["s3", "tiered"].into_iter().enumerate() {
            let proxy = S3Proxy::start(s3.addr);
            let f = FakeIndex::with_wheels(&[(2 << 20) + seed]);
            f.set_file_mode(FileMode::Throttle {
                chunk: 64 * 1024,
                every: Duration::from_millis(20),
            });
            let n = Node::start(&f, &proxy, storage, &[]);
            assert_eq!(n.get("/index/big/").status, 200);
            for body in herd(n.addr(), &path(0)) {
                assert!(body == expected(&f, 0).bytes, "{storage}: a body differs");
            }
            assert_eq!(f.wheel_gets(0), 1, "{storage}: one upstream GET");
            let sha = expected(&f, 0).sha256();
            assert_eq!(proxy.count("GET", &sha), 1, "{storage}: one bucket lookup");
            n.wait_metric("roxpi_file_uploads_total", 1);
            assert_eq!(proxy.count("PUT", &sha), 1, "{storage}: one upload");
        }
    });
}

#[test]
fn thirty_two_l1_misses_of_a_bucket_held_file_make_one_s3_get() {
    let Some(s3) = S3Server::start() else { return };
    within(LIMIT, move || {
        let proxy = S3Proxy::start(s3.addr);
        let f = FakeIndex::with_wheels(&[3 << 20]);
        let a = Node::start(&f, &proxy, "tiered", &[]);
        assert_serves(&a, &f, 0);
        a.wait_metric("roxpi_file_uploads_total", 1);
        let sha = expected(&f, 0).sha256();
        let gets = proxy.count("GET", &sha);
        // A second node with an empty L1.
        let b = Node::start(&f, &proxy, "tiered", &[]);
        assert_eq!(b.get("/index/big/").status, 200);
        for body in herd(b.addr(), &path(0)) {
            assert!(body == expected(&f, 0).bytes, "a body differs");
        }
        assert_eq!(
            proxy.count("GET", &sha) - gets,
            1,
            "one S3 GET for 32 L1 misses"
        );
        assert_eq!(f.wheel_gets(0), 1, "no upstream GET");
        assert_eq!(b.metric("roxpi_file_bucket_hits_total"), 1);
        // Now in L1: no more S3 GETs.
        assert_serves(&b, &f, 0);
        assert_eq!(proxy.count("GET", &sha) - gets, 1);
    });
}

#[test]
fn the_l1_cap_holds_while_evicted_files_come_back_from_the_bucket() {
    let Some(s3) = S3Server::start() else { return };
    within(LIMIT, move || {
        let proxy = S3Proxy::start(s3.addr);
        let mut sizes = vec![300_000; 10];
        sizes.push(1_500_000);
        let f = FakeIndex::with_wheels(&sizes);
        let cap: u64 = 1 << 20;
        let n = Node::start(&f, &proxy, "tiered", &[("ROXPI_CACHE_SIZE", "1M")]);
        let cache = n.cache.path().to_owned();
        // Sample what the L1 holds on disk (files and temp files) throughout.
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let sampler = {
            let (stop, peak, samples) = (stop.clone(), peak.clone(), samples.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let used = dir_bytes(&cache.join("files")) + dir_bytes(&cache.join("tmp"));
                    peak.fetch_max(used, Ordering::Relaxed);
                    samples.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        let clients: Vec<_> = (0..2)
            .map(|c| {
                let addr = n.addr();
                std::thread::spawn(move || {
                    for i in (c..10).step_by(2) {
                        let r = request(addr, "GET", &path(i), &[]);
                        assert_eq!(r.status, 200);
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        n.wait_metric("roxpi_file_uploads_total", 10);
        // Every file again: those evicted from L1 come from the bucket.
        for i in 0..10 {
            assert_serves(&n, &f, i);
            assert_eq!(
                f.wheel_gets(i),
                1,
                "{} fetched again upstream",
                big_wheel(i)
            );
        }
        stop.store(true, Ordering::Relaxed);
        sampler.join().unwrap();
        assert!(n.metric("roxpi_file_evictions_total") >= 7);
        assert!(n.metric("roxpi_file_bucket_hits_total") >= 7);
        assert!(samples.load(Ordering::Relaxed) >= 50, "too few samples");
        let peak = peak.load(Ordering::Relaxed);
        assert!(peak <= cap, "L1 held {peak} bytes, over its cap of {cap}");
        assert!(peak >= 600_000, "the sampler saw the L1 fill ({peak})");
        assert!(n.metric("roxpi_file_cache_bytes") <= cap);
        // A file larger than the L1 cap: served, put into the bucket, never
        // kept in L1; the next request reads the bucket.
        let big = 10;
        assert_serves(&n, &f, big);
        n.wait_metric("roxpi_file_uploads_total", 11);
        let kept = walk(&n.cache.path().join("files"));
        assert!(kept
            .iter()
            .all(|p| std::fs::metadata(p).unwrap().len() < 1_500_000));
        let hits = n.metric("roxpi_file_bucket_hits_total");
        assert_serves(&n, &f, big);
        assert_eq!(n.metric("roxpi_file_bucket_hits_total"), hits + 1);
        assert_eq!(f.wheel_gets(big), 1);
    });
}

#[test]
fn a_second_node_with_an_empty_disk_serves_the_fleets_pages_and_files() {
    let Some(s3) = S3Server::start() else { return };
    within(LIMIT, move || {
        let proxy = S3Proxy::start(s3.addr);
        let f = FakeIndex::with_wheels(&[200_000, 70_000]);
        let a = Node::start(&f, &proxy, "tiered", &[]);
        let page = a.get("/index/big/");
        assert_eq!(page.status, 200);
        for i in 0..2 {
            assert_serves(&a, &f, i);
        }
        a.wait_metric("roxpi_file_uploads_total", 2);
        let pages = s3.root.path().join(BUCKET).join("roxpi/pages");
        wait_until(WAIT, "the saved page in the bucket", || {
            walk(&pages).iter().any(|p| p.ends_with("big"))
        });
        let before = f.requests().len();
        // A fresh node: every page and file from the bucket.
        let b = Node::start(&f, &proxy, "tiered", &[]);
        let again = b.get("/index/big/");
        assert_eq!(again.status, 200);
        assert_eq!(again.text(), page.text(), "the same page");
        for i in 0..2 {
            assert_serves(&b, &f, i);
        }
        assert_eq!(
            f.requests().len(),
            before,
            "upstream requests from the second node"
        );
        // With the upstream down, a third (s3) node still serves them.
        f.set_fault(UpstreamFault::Status(503));
        let c = Node::start(&f, &proxy, "s3", &[]);
        // (s3 mode makes no metadata, so it advertises none.)
        let advertised = " data-core-metadata=\"true\" data-dist-info-metadata=\"true\"";
        assert_eq!(
            c.get("/index/big/").text(),
            page.text().replace(advertised, "")
        );
        for i in 0..2 {
            assert_serves(&c, &f, i);
        }
        assert_eq!(
            f.requests().len(),
            before,
            "upstream requests from the third node"
        );
    });
}

#[test]
fn a_tampered_object_in_the_bucket_is_never_served() {
    let Some(s3) = S3Server::start() else { return };
    within(LIMIT, move || {
        let proxy = S3Proxy::start(s3.addr);
        let f = FakeIndex::with_wheels(&[300_000]);
        let good = expected(&f, 0).bytes;
        let a = Node::start(&f, &proxy, "s3", &[]);
        assert_serves(&a, &f, 0);
        a.wait_metric("roxpi_file_uploads_total", 1);
        let obj = object(&s3, &f, 0);
        // Same length, other bytes: a bad writer in the fleet.
        let bad = blob(good.len(), 99);
        let key = file_key(&expected(&f, 0).sha256(), &big_wheel(0));
        s3.put_object(&key, &bad);
        assert!(holds(&obj, &bad));
        assert_serves(&a, &f, 0);
        assert_eq!(a.metric("roxpi_file_bucket_mismatches_total"), 1);
        assert_eq!(f.wheel_gets(0), 2, "fetched again from the upstream");
        // The good copy replaced the bad one.
        wait_until(WAIT, "the object replaced", || holds(&obj, &good));

        // Tiered: a mismatch is never kept in L1 either.
        s3.put_object(&key, &bad);
        let b = Node::start(&f, &proxy, "tiered", &[]);
        assert_serves(&b, &f, 0);
        assert_eq!(b.metric("roxpi_file_bucket_mismatches_total"), 1);
        let kept = walk(&b.cache.path().join("files"));
        assert_eq!(kept.len(), 1);
        assert!(holds(&kept[0], &good), "L1 holds the upstream's bytes");
        assert_serves(&b, &f, 0);
    });
}

#[test]
fn wrong_credentials_or_a_missing_bucket_stop_startup_with_a_clear_message() {
    let Some(s3) = S3Server::start() else { return };
    within(LIMIT, move || {
        let proxy = S3Proxy::start(s3.addr);
        let f = FakeIndex::with_wheels(&[1000]);
        for (setting, value, want) in [
            (
                "AWS_SECRET_ACCESS_KEY",
                "not-the-secret",
                "AWS_SECRET_ACCESS_KEY",
            ),
            ("ROXPI_S3_BUCKET", "no-such-bucket", "does not exist"),
        ] {
            let cache = tempfile::tempdir().unwrap();
            let home = tempfile::tempdir().unwrap();
            let mut cmd = std::process::Command::new(crate::util::roxpi_bin());
            cmd.env_clear()
                .env("HOME", home.path())
                .env("ROXPI_BIND", "127.0.0.1:0")
                .env("ROXPI_INDEX_URL", f.url("root"))
                .env("ROXPI_CACHE_DIR", cache.path());
            for (k, v) in bucket_env(&proxy, "tiered") {
                cmd.env(k, v);
            }
            cmd.env(setting, value);
            let out = cmd.output().expect("roxpi ran");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{setting}: roxpi started");
            assert!(stderr.contains(want), "{setting}: {stderr}");
            assert!(
                !stderr.contains("not-the-secret"),
                "the secret in the message"
            );
        }
        // The refusals were real S3 answers.
        assert!(proxy.count("HEAD", BUCKET) >= 1);
        assert!(proxy.count("HEAD", "no-such-bucket") >= 1);
    });
}

#[test]
fn a_failed_upload_keeps_the_l1_copy_and_is_retried() {
    let Some(s3) = S3Server::start() else { return };
    within(LIMIT, move || {
        let proxy = S3Proxy::start(s3.addr);
        let f = FakeIndex::with_wheels(&[300_000]);
        let sha = expected(&f, 0).sha256();
        // Every PUT of the file is cut (GETs carry no body).
        proxy.set_fault(Fault::CutRequest {
            path: sha.clone(),
            query: String::new(),
            after: 1000,
        });
        let n = Node::start(&f, &proxy, "tiered", &[]);
        assert_serves(&n, &f, 0);
        wait_until(WAIT, "a pending upload", || {
            n.metric("roxpi_file_uploads_pending") == 1
        });
        assert_eq!(n.metric("roxpi_file_uploads_total"), 0);
        assert!(!object(&s3, &f, 0).exists());
        // The L1 copy serves meanwhile.
        let hit = n.get(&path(0));
        assert_eq!(hit.header("x-cache"), Some("HIT"));
        assert!(hit.body == expected(&f, 0).bytes);
        // S3 back: the retry puts it.
        proxy.set_fault(Fault::Pass);
        n.wait_metric("roxpi_file_uploads_total", 1);
        assert!(holds(&object(&s3, &f, 0), &expected(&f, 0).bytes));
        assert_eq!(n.metric("roxpi_file_uploads_pending"), 0);
        assert_eq!(n.metric("roxpi_file_upload_failures_total"), 0);
        assert_eq!(f.wheel_gets(0), 1);
    });
}

#[test]
fn requests_during_the_upload_join_the_download_instead_of_missing_the_bucket() {
    let Some(s3) = S3Server::start() else { return };
    within(LIMIT, move || {
        let proxy = S3Proxy::start(s3.addr);
        let f = FakeIndex::with_wheels(&[300_000]);
        let sha = expected(&f, 0).sha256();
        // A slow PUT: the upload takes 2 s after the download is done.
        proxy.set_fault(Fault::Delay {
            method: "PUT".into(),
            matching: sha.clone(),
            by: Duration::from_secs(2),
        });
        let n = Node::start(&f, &proxy, "s3", &[]);
        assert_serves(&n, &f, 0);
        // While the PUT is under way: joined, not a second lookup and
        // download.
        let during = n.get(&path(0));
        assert_eq!(during.status, 200);
        assert!(during.body == expected(&f, 0).bytes);
        assert_eq!(during.header("x-cache"), Some("COALESCED"));
        assert_eq!(
            n.metric("roxpi_file_uploads_total"),
            0,
            "the PUT was still running"
        );
        assert_eq!(f.wheel_gets(0), 1);
        assert_eq!(proxy.count("GET", &sha), 1, "one bucket lookup");
        n.wait_metric("roxpi_file_uploads_total", 1);
        // Done: the next request reads the bucket.
        assert_eq!(n.get(&path(0)).header("x-cache"), Some("BUCKET"));
        assert_eq!(f.wheel_gets(0), 1);
    });
}
