//! PEP 658 metadata synthesis against the fake upstream, which lists real
//! wheels (built here) without `core-metadata`.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::fake_index::{hex, FakeFile, FakeIndex, FakeProject, Mode};
use crate::installers::build_wheel_padded;
use crate::util::{get, request, within, ChildServer, Reply};

const LIMIT: Duration = Duration::from_secs(120);
const WHEEL: &str = "big_demo-1.0-py3-none-any.whl";
const JSON: (&str, &str) = ("Accept", "application/vnd.pypi.simple.v1+json");

struct Rig {
    fake: FakeIndex,
    roxpi: ChildServer,
    _home: tempfile::TempDir,
    _cache: tempfile::TempDir,
    wheel: Bytes,
    metadata: Bytes,
}

/// A 2 MB wheel and an sdist, listed without metadata.
fn rig(env: &[(&str, &str)]) -> Rig {
    let (wheel, metadata) = build_wheel_padded("big-demo", "1.0", &["idna>=2"], 2 << 20);
    let fake = FakeIndex::start(BTreeMap::new());
    fake.set_mode(Mode::Json);
    fake.add_project(
        "root",
        "big-demo",
        FakeProject {
            files: vec![
                FakeFile::new(WHEEL, wheel.clone()),
                FakeFile::new(
                    "big-demo-1.0.tar.gz",
                    Bytes::from_static(b"not really an sdist"),
                ),
            ],
            versions: vec!["1.0".into()],
            status: None,
        },
    );
    let (roxpi, cache, home) = crate::util::roxpi_on(&fake, env);
    Rig {
        fake,
        roxpi,
        _home: home,
        _cache: cache,
        wheel,
        metadata,
    }
}

fn page_json(r: &Rig) -> serde_json::Value {
    let reply = request(r.roxpi.addr, "GET", "/index/big-demo/", &[JSON]);
    assert_eq!(reply.status, 200);
    reply.json()
}

fn file_json<'a>(page: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    page["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["filename"] == name)
        .unwrap()
}

fn get_metadata(r: &Rig) -> Reply {
    get(r.roxpi.addr, &format!("/index/big-demo/{WHEEL}.metadata"))
}

fn metric(r: &Rig, name: &str) -> u64 {
    crate::util::metric(r.roxpi.addr, name)
}

#[test]
fn metadata_is_made_by_range_reads_and_then_advertised_with_its_hash() {
    within(LIMIT, || {
        let r = rig(&[]);
        let page = page_json(&r);
        assert_eq!(file_json(&page, WHEEL)["core-metadata"], true);
        let sdist = file_json(&page, "big-demo-1.0.tar.gz");
        assert!(
            sdist.get("core-metadata").is_none(),
            "never for sdists: {sdist}"
        );
        let html = get(r.roxpi.addr, "/index/big-demo/");
        let text = String::from_utf8_lossy(&html.body);
        assert!(text.contains("data-core-metadata=\"true\""), "{text}");
        assert!(text.contains("data-dist-info-metadata=\"true\""), "{text}");

        let got = get_metadata(&r);
        assert_eq!(got.status, 200);
        assert_eq!(got.body, r.metadata, "the wheel's own METADATA");
        // Made on the spot, not a cache hit: the access log, X-Cache and
        // /metrics say so.
        assert_eq!(got.header("x-cache"), Some("SYNTH"));
        let synth = r#"roxpi_request_duration_seconds_count{route="metadata",cache="synth"}"#;
        let hit = r#"roxpi_request_duration_seconds_count{route="metadata",cache="hit"}"#;
        // The server records a response once its last byte is sent: a
        // moment after the client has it.
        let counts = |want: (u64, u64)| {
            let t = std::time::Instant::now();
            loop {
                let got = (metric(&r, synth), metric(&r, hit));
                if got == want || t.elapsed() > Duration::from_secs(2) {
                    return got;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        assert_eq!(counts((1, 0)), (1, 0));
        let read = r.fake.file_bytes();
        eprintln!(
            "metadata of a {} byte wheel by ranges: {read} bytes read upstream",
            r.wheel.len()
        );
        assert!(
            read > 0 && read < r.wheel.len() as u64 / 10,
            "{read} bytes read"
        );
        assert_eq!(metric(&r, "roxpi_metadata_by_ranges_total"), 1);

        // Known now: advertised with its sha256; served again from the cache.
        let sha = hex(&Sha256::digest(&r.metadata));
        let page = page_json(&r);
        assert_eq!(
            file_json(&page, WHEEL)["core-metadata"],
            serde_json::json!({"sha256": sha})
        );
        let again = get_metadata(&r);
        assert_eq!(again.body, r.metadata);
        assert_eq!(again.header("x-cache"), Some("HIT"));
        assert_eq!(counts((1, 1)), (1, 1));
        assert_eq!(
            r.fake.file_bytes(),
            read,
            "no upstream read the second time"
        );
        // The sdist has none.
        let none = get(r.roxpi.addr, "/index/big-demo/big-demo-1.0.tar.gz.metadata");
        assert_eq!(none.status, 404);
    });
}

#[test]
fn metadata_comes_from_the_cached_wheel_without_the_upstream() {
    within(LIMIT, || {
        let r = rig(&[]);
        let wheel = get(r.roxpi.addr, &format!("/index/big-demo/{WHEEL}"));
        assert_eq!(wheel.body, r.wheel);
        let before = r.fake.file_bytes();
        let got = get_metadata(&r);
        assert_eq!(
            (got.status, got.body.as_slice()),
            (200, r.metadata.as_ref())
        );
        assert_eq!(r.fake.file_bytes(), before, "read from the cached wheel");
        assert_eq!(metric(&r, "roxpi_metadata_by_ranges_total"), 0);
    });
}

#[test]
fn an_upstream_that_ignores_range_goes_through_the_download() {
    within(LIMIT, || {
        let r = rig(&[]);
        r.fake.set_ignore_ranges(true);
        let got = get_metadata(&r);
        assert_eq!(
            (got.status, got.body.as_slice()),
            (200, r.metadata.as_ref())
        );
        assert_eq!(metric(&r, "roxpi_metadata_by_download_total"), 1);
        // The wheel is cached now.
        let before = r.fake.file_bytes();
        let wheel = get(r.roxpi.addr, &format!("/index/big-demo/{WHEEL}"));
        assert_eq!(wheel.body, r.wheel);
        assert_eq!(wheel.header("x-cache"), Some("HIT"));
        assert_eq!(r.fake.file_bytes(), before);
    });
}

#[test]
fn a_wheel_without_readable_metadata_is_a_404_and_no_longer_advertised() {
    within(LIMIT, || {
        let r = rig(&[]);
        r.fake.add_project(
            "root",
            "broken",
            FakeProject {
                files: vec![
                    FakeFile::new(
                        "broken-1.0-py3-none-any.whl",
                        Bytes::from_static(b"PK\x03\x04 not a zip"),
                    ),
                    FakeFile::new(
                        "broken-2.0-py3-none-any.whl",
                        build_wheel_padded("other", "1.0", &[], 0).0.slice(..),
                    ),
                    FakeFile::new("broken-3.0-py3-none-any.whl", zip_without_dist_info()),
                ],
                versions: vec![],
                status: None,
            },
        );
        let page = |r: &Rig| request(r.roxpi.addr, "GET", "/index/broken/", &[JSON]).json();
        assert_eq!(
            file_json(&page(&r), "broken-1.0-py3-none-any.whl")["core-metadata"],
            true
        );
        for (file, status) in [
            ("broken-1.0-py3-none-any.whl", 404),
            ("broken-3.0-py3-none-any.whl", 404),
            // A zip whose only dist-info is another project's: pip and
            // uv refuse it, so no metadata is made for it.
            ("broken-2.0-py3-none-any.whl", 404),
        ] {
            let got = get(r.roxpi.addr, &format!("/index/broken/{file}.metadata"));
            assert_eq!(
                got.status,
                status,
                "{file}: {}",
                String::from_utf8_lossy(&got.body)
            );
        }
        let after = page(&r);
        let broken = file_json(&after, "broken-1.0-py3-none-any.whl");
        assert!(broken.get("core-metadata").is_none(), "withdrawn: {broken}");
        // Asked again: 404 at once, no new attempt.
        let requests = r.fake.requests().len();
        assert_eq!(
            get(
                r.roxpi.addr,
                "/index/broken/broken-1.0-py3-none-any.whl.metadata"
            )
            .status,
            404
        );
        assert_eq!(r.fake.requests().len(), requests);
        let no_dist_info = file_json(&after, "broken-3.0-py3-none-any.whl");
        assert!(
            no_dist_info.get("core-metadata").is_none(),
            "withdrawn: {no_dist_info}"
        );
        let other = file_json(&after, "broken-2.0-py3-none-any.whl");
        assert!(other.get("core-metadata").is_none(), "withdrawn: {other}");
        assert_eq!(metric(&r, "roxpi_metadata_broken_total"), 3);
    });
}

/// A valid zip with a module and no `.dist-info`.
fn zip_without_dist_info() -> Bytes {
    use std::io::Write;
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    z.start_file(
        "broken/__init__.py",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    z.write_all(b"X = 1\n").unwrap();
    Bytes::from(z.finish().unwrap().into_inner())
}

#[test]
fn a_herd_of_32_makes_one_upstream_sequence() {
    within(LIMIT, || {
        let r = rig(&[]);
        page_json(&r);
        let addr = r.roxpi.addr;
        let clients: Vec<_> = (0..32)
            .map(|_| {
                std::thread::spawn(move || get(addr, &format!("/index/big-demo/{WHEEL}.metadata")))
            })
            .collect();
        for c in clients {
            let got = c.join().unwrap();
            assert_eq!(
                (got.status, got.body.as_slice()),
                (200, r.metadata.as_ref())
            );
        }
        let file_requests = r
            .fake
            .requests()
            .iter()
            .filter(|q| q.path.starts_with("/files/"))
            .count();
        assert_eq!(metric(&r, "roxpi_metadata_made_total"), 1);
        assert!(
            file_requests <= 3,
            "{file_requests} upstream file requests for 32 clients"
        );
    });
}

#[test]
fn metadata_read_by_ranges_is_replaced_when_the_verified_wheel_differs() {
    within(LIMIT, || {
        let r = rig(&[]);
        page_json(&r);
        // A stale copy answers the range reads (the page, cached, still
        // lists the right wheel's hash).
        let (stale, stale_meta) = build_wheel_padded("big-demo", "1.0", &["idna>=1"], 2 << 20);
        let swap = |bytes: Bytes| {
            r.fake.add_project(
                "root",
                "big-demo",
                FakeProject {
                    files: vec![FakeFile::new(WHEEL, bytes)],
                    versions: vec!["1.0".into()],
                    ..Default::default()
                },
            )
        };
        swap(stale);
        assert_eq!(get_metadata(&r).body, stale_meta);
        swap(r.wheel.clone());
        // The whole wheel, verified against the page's hash.
        assert_eq!(
            get(r.roxpi.addr, &format!("/index/big-demo/{WHEEL}")).body,
            r.wheel
        );
        crate::util::wait_until(Duration::from_secs(10), "the re-check", || {
            metric(&r, "roxpi_metadata_replaced_total") >= 1
        });
        assert_eq!(get_metadata(&r).body, r.metadata);
    });
}

#[test]
fn synthesis_off_advertises_nothing() {
    within(LIMIT, || {
        let r = rig(&[("ROXPI_SYNTHESIZE_METADATA", "off")]);
        let page = page_json(&r);
        assert!(file_json(&page, WHEEL).get("core-metadata").is_none());
        assert_eq!(get_metadata(&r).status, 404);
    });
}

/// A zip whose central directory is `cd` (one local header before it),
/// ended by a zip64 end record claiming `entries` and `record_size`, its
/// locator, and a classic end record that defers to them.
fn zip64_claiming(entries: u64, record_size: u64, cd: &[u8]) -> Bytes {
    let mut out = b"PK\x03\x04".to_vec();
    out.resize(30, 0);
    let cd_at = out.len() as u64;
    out.extend_from_slice(cd);
    let record_at = out.len() as u64;
    out.extend(b"PK\x06\x06");
    out.extend(record_size.to_le_bytes());
    out.extend([45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    for v in [entries, entries, cd.len() as u64, cd_at] {
        out.extend(v.to_le_bytes());
    }
    out.extend(b"PK\x06\x07");
    out.extend([0; 4]);
    out.extend(record_at.to_le_bytes());
    out.extend([1, 0, 0, 0]);
    out.extend(b"PK\x05\x06");
    out.extend([0, 0, 0, 0]);
    out.extend([0xff; 12]);
    out.extend([0, 0]);
    Bytes::from(out)
}

/// `count` central-directory entries, each a 9-byte name at offset 0.
fn central_directory(count: usize) -> Vec<u8> {
    let mut cd = Vec::with_capacity(count * 55);
    for i in 0..count {
        let start = cd.len();
        cd.extend(b"PK\x01\x02");
        cd.resize(start + 46, 0);
        cd[start + 28] = 9;
        cd.extend(format!("f/{i:07}").as_bytes());
    }
    cd
}

#[test]
fn lying_and_huge_central_directories_are_refused_within_bounded_memory() {
    within(LIMIT, || {
        let fake = FakeIndex::start(BTreeMap::new());
        fake.set_mode(Mode::Json);
        let one = central_directory(1);
        let million = Bytes::from(central_directory(1_000_000));
        let wheels = [
            // The zip64 end record claims a size of about 2^56 bytes.
            (
                "zw-1.0-py3-none-any.whl",
                zip64_claiming(1, (1 << 56) - 84, &one),
            ),
            // ... or 7.8e14 entries.
            (
                "zw-2.0-py3-none-any.whl",
                zip64_claiming(780_000_000_000_000, 44, &one),
            ),
            // An honest directory of a million entries (55 MB), twice.
            (
                "zw-3.0-py3-none-any.whl",
                zip64_claiming(1_000_000, 44, &million),
            ),
            ("zw-4.0-py3-none-any.whl", {
                // Other bytes (not the same cache key as the one before).
                let mut other = zip64_claiming(1_000_000, 44, &million).to_vec();
                other[10] = 1;
                Bytes::from(other)
            }),
        ];
        let files = wheels
            .iter()
            .map(|(name, bytes)| FakeFile::new(name, bytes.clone()))
            .collect();
        fake.add_project(
            "root",
            "zw",
            FakeProject {
                files,
                versions: vec![],
                status: None,
            },
        );
        let (roxpi, _cache, _home) = crate::util::roxpi_on(&fake, &[]);
        assert_eq!(get(roxpi.addr, "/index/zw/").status, 200);
        let idle = roxpi.rss_kib();
        let addr = roxpi.addr;
        let askers: Vec<_> = wheels
            .iter()
            .map(|(name, _)| {
                let path = format!("/index/zw/{name}.metadata");
                std::thread::spawn(move || {
                    let t = std::time::Instant::now();
                    let got = get(addr, &path);
                    (path, got.status, t.elapsed())
                })
            })
            .collect();
        for asker in askers {
            let (path, status, took) = asker.join().unwrap();
            assert_eq!(status, 404, "{path}");
            assert!(took < Duration::from_secs(5), "{path} took {took:?}");
        }
        assert_eq!(get(addr, "/health").status, 200, "the process lives");
        let peak = roxpi.status_kib("VmHWM:");
        eprintln!("4 hostile wheels at once: peak RSS {peak} KiB, {idle} KiB idle before");
        assert!(
            peak < idle + 64 * 1024,
            "peak RSS {peak} KiB against {idle} KiB idle"
        );
        // Nothing past the tail was fetched: every claim was refused first.
        let ranges = fake
            .requests()
            .iter()
            .filter(|r| r.path.contains("/zw-"))
            .count();
        assert_eq!(ranges, 4, "{:?}", fake.requests());
        assert_eq!(crate::util::metric(addr, "roxpi_metadata_broken_total"), 4);
    });
}

#[test]
fn abandoned_syntheses_stop_and_leave_room_for_new_ones() {
    within(LIMIT, || {
        let r = rig(&[]);
        // The fake never answers a path with a part starting `hang-`.
        let hung: Vec<FakeFile> = (0..150)
            .map(|i| {
                let mut body = vec![0u8; 200];
                body[..8].copy_from_slice(&(i as u64).to_le_bytes());
                FakeFile::new(&format!("hang-{i}.0-py3-none-any.whl"), body)
            })
            .collect();
        r.fake.add_project(
            "root",
            "hang",
            FakeProject {
                files: hung,
                versions: vec![],
                status: None,
            },
        );
        let addr = r.roxpi.addr;
        assert_eq!(get(addr, "/index/hang/").status, 200);
        let clients: Vec<_> = (0..150)
            .map(|i| {
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                    let req = format!(
                        "GET /index/hang/hang-{i}.0-py3-none-any.whl.metadata HTTP/1.1\r\nHost: x\r\n\r\n"
                    );
                    s.write_all(req.as_bytes()).unwrap();
                    let _ = s.read(&mut [0u8; 64]);
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        let hung_gets = |fake: &FakeIndex| {
            fake.requests()
                .iter()
                .filter(|q| q.path.starts_with("/files/root/hang/"))
                .count()
        };
        // Past the grace a new synthesis has before its request subscribes.
        std::thread::sleep(Duration::from_millis(1500));
        let settled = hung_gets(&r.fake);
        let t = std::time::Instant::now();
        let got = get_metadata(&r);
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.body, r.metadata);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_secs(2));
        let later = hung_gets(&r.fake);
        eprintln!(
            "range GETs for abandoned wheels: {settled} when the clients left, {later} 2 s later"
        );
        assert_eq!(later, settled, "abandoned work went on asking the upstream");
        assert!(settled <= 8, "{settled} hung range GETs");
        assert!(metric(&r, "roxpi_metadata_abandoned_total") >= 64);
    });
}
