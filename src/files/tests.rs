//! Unit tests of the file path against the in-process fake origin and a
//! manual clock: no sockets. Storage is the real local backend in a temp
//! dir, or a disk that is always full.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use sha2::Digest;
use url::Url;

use super::*;
use crate::clock::ManualClock;
use crate::origin::fake::{Fail, FakeOrigin, FileAnswer};
use crate::origin::IndexConfig;
use crate::origin::{IndexId, OriginError};
use crate::storage::local::LocalStorage;
use crate::storage::{Stored, TempFile};

const URL: &str = "http://files.invalid/demo-1.0.tar.gz";

fn index() -> Index {
    Index::new(
        IndexId::ROOT,
        &IndexConfig::new(
            Url::parse("http://index.invalid/simple/").unwrap(),
            Duration::from_secs(60),
        ),
    )
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 253) as u8).collect()
}

fn sha(d: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(d))
}

fn source(d: &[u8]) -> Source {
    Source {
        index: index(),
        url: Url::parse(URL).unwrap(),
        hashes: Hashes::from([("sha256".to_owned(), sha(d))]),
        size: Some(d.len() as u64),
    }
}

struct Rig {
    downloads: Arc<Downloads>,
    origin: Arc<FakeOrigin>,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::open(dir.path(), 1 << 30).unwrap());
    rig_on(storage, dir)
}

fn rig_on(storage: Arc<dyn Storage>, dir: tempfile::TempDir) -> Rig {
    let origin = Arc::new(FakeOrigin::default());
    let clock = Arc::new(ManualClock::default());
    let downloads = Downloads::start(
        storage,
        origin.clone(),
        clock.clone(),
        Arc::new(FileStats::default()),
        4,
    )
    .unwrap();
    Rig {
        downloads,
        origin,
        clock,
        _dir: dir,
    }
}

fn key(d: &[u8]) -> CacheKey {
    CacheKey::derive(Some(&sha(d)), &Url::parse(URL).unwrap())
}

/// Reads what a requester of a download gets: the bytes, or the error.
fn stream(f: Fetch) -> Result<Vec<u8>, String> {
    let Fetch::Download { inflight, .. } = f else {
        panic!("not a download");
    };
    let mut reader = match inflight.wait_started(Duration::from_secs(10)) {
        Ok(Some(r)) => r,
        Ok(None) => return Err("late".into()),
        Err(e) => return Err(e.to_string()),
    };
    let mut out = Vec::new();
    reader
        .read_to_end(&mut out)
        .map(|_| out)
        .map_err(|e| e.to_string())
}

#[test]
fn concurrent_requests_share_one_verified_download() {
    let r = rig();
    let d = data(600_000);
    r.origin.set_file(URL, FileAnswer::ok(&d));
    r.origin.hold();
    let fetches: Vec<Fetch> = (0..8)
        .map(|_| r.downloads.fetch(&key(&d), &source(&d)))
        .collect();
    let joined = fetches
        .iter()
        .filter(|f| matches!(f, Fetch::Download { joined: true, .. }))
        .count();
    assert_eq!(joined, 7);
    r.origin.release();
    for f in fetches {
        assert_eq!(stream(f).unwrap(), d);
    }
    assert_eq!(r.origin.count("file "), 1);
    assert!(
        matches!(r.downloads.fetch(&key(&d), &source(&d)), Fetch::Hit(s) if s.len == d.len() as u64)
    );
    assert_eq!(r.origin.count("file "), 1, "a hit makes no request");
}

#[test]
fn wrong_bytes_are_cut_and_never_committed() {
    let r = rig();
    let d = data(300_000);
    let mut wrong = d.clone();
    wrong[299_999] ^= 0xff;
    r.origin.set_file(URL, FileAnswer::ok(&wrong));
    let err = stream(r.downloads.fetch(&key(&d), &source(&d))).unwrap_err();
    assert!(err.contains("sha256"), "{err}");
    assert!(matches!(
        r.downloads.storage().lookup(&key(&d)),
        crate::storage::Lookup::Miss
    ));
    // The next request downloads again, and succeeds with good bytes.
    r.origin.set_file(URL, FileAnswer::ok(&d));
    assert_eq!(stream(r.downloads.fetch(&key(&d), &source(&d))).unwrap(), d);
    assert_eq!(r.origin.count("file "), 2);
}

#[test]
fn a_cut_or_wrong_length_body_is_never_committed() {
    let d = data(300_000);
    let answers = [
        FileAnswer::Body {
            data: d.clone(),
            content_length: Some(d.len() as u64),
            cut_at: Some(100_000),
        },
        FileAnswer::Body {
            data: d[..1000].to_vec(),
            content_length: Some(d.len() as u64),
            cut_at: None,
        },
        FileAnswer::ok(&d[..d.len() - 1]),
    ];
    for answer in answers {
        let r = rig();
        r.origin.set_file(URL, answer.clone());
        assert!(
            stream(r.downloads.fetch(&key(&d), &source(&d))).is_err(),
            "{answer:?}"
        );
        assert!(matches!(
            r.downloads.storage().lookup(&key(&d)),
            crate::storage::Lookup::Miss
        ));
    }
}

#[test]
fn a_slow_origin_is_waited_for_within_the_limit_only() {
    let r = rig();
    let d = data(1000);
    r.origin.set_file(URL, FileAnswer::ok(&d));
    r.origin.hold();
    let Fetch::Download { inflight, .. } = r.downloads.fetch(&key(&d), &source(&d)) else {
        panic!("a download")
    };
    assert!(matches!(
        inflight.wait_done(Duration::from_millis(20)),
        Ok(None)
    ));
    r.origin.release();
    let (_, len) = inflight
        .wait_done(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(len, 1000);
}

#[test]
fn an_upstream_timeout_stays_a_timeout() {
    let r = rig();
    let d = data(1000);
    r.origin.set_file(URL, FileAnswer::Fail(Fail::Timeout));
    let Fetch::Download { inflight, .. } = r.downloads.fetch(&key(&d), &source(&d)) else {
        panic!("a download")
    };
    match inflight.wait_done(Duration::from_secs(10)) {
        Err(FileError::Origin(e)) => assert!(matches!(*e, OriginError::Timeout { .. }), "{e}"),
        other => panic!("{:?}", other.map(|o| o.map(|x| x.1))),
    }
}

/// A disk that is always full.
struct FullDisk;

impl Storage for FullDisk {
    fn lookup(&self, _key: &CacheKey) -> crate::storage::Lookup {
        crate::storage::Lookup::Miss
    }
    fn create(&self, _item: &crate::storage::Item, _len: u64) -> std::io::Result<TempFile> {
        Err(std::io::Error::from_raw_os_error(28))
    }
    fn remove(&self, _item: &crate::storage::Item) {}
    fn commit(&self, _temp: TempFile, _sha256: &str) -> std::io::Result<Stored> {
        Err(std::io::Error::from_raw_os_error(28))
    }
    fn usage(&self) -> Usage {
        Usage::default()
    }
}

/// Storage for tests elsewhere (the app's status table): always full.
pub(crate) fn full_disk() -> Option<Arc<dyn Storage>> {
    Some(Arc::new(FullDisk))
}

#[test]
fn disk_full_bypasses_that_url_for_a_while_by_url_not_hash() {
    let r = rig_on(Arc::new(FullDisk), tempfile::tempdir().unwrap());
    let d = data(1000);
    r.origin.set_file(URL, FileAnswer::ok(&d));
    let err = stream(r.downloads.fetch(&key(&d), &source(&d))).unwrap_err();
    assert!(err.contains("cache write failed"), "{err}");
    assert!(matches!(
        r.downloads.fetch(&key(&d), &source(&d)),
        Fetch::StreamThrough
    ));
    // Another file claiming the same hash is not let through unverified.
    let mut other = source(&d);
    other.url = Url::parse("http://files.invalid/other-1.0.tar.gz").unwrap();
    assert!(matches!(
        r.downloads.fetch(&key(&d), &other),
        Fetch::Download { .. }
    ));
    r.clock.advance(Duration::from_secs(61));
    assert!(matches!(
        r.downloads.fetch(&key(&d), &source(&d)),
        Fetch::Download { .. }
    ));
}
