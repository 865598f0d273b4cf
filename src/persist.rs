//! The last good copy of every project page, kept on disk in the cache dir
//! (`pages/<index>/<project>`), so that a restarted roxpi with its upstream
//! down — or in `ROXPI_OFFLINE` mode — still serves every page (and so every
//! cached file) it had. Each file holds the upstream's answer as received
//! (decoded), behind a one-line header, and is parsed again on load: the
//! parser stays the single source of truth. Files are replaced by atomic
//! rename; a damaged one is ignored and replaced by the next fetch. The
//! saved pages are bounded in bytes (a quarter of the file cache cap, at
//! least 1 MiB), least recently used out first; a page larger than the
//! bound is not saved.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use url::Url;

use std::sync::Arc;

use crate::origin::{Index, RawPage, Validators};
use crate::pypi::{Format, ProjectName, ProjectPage};
use crate::storage::s3::{self, Bucket};

/// v1: `roxpi-page-v1 <format> <saved secs> <url>`; v2 adds the upstream
/// validators: `roxpi-page-v2 <json>` (`format`, `saved`, `url`, `etag`,
/// `last_modified`, `serial`). Both are read.
const MAGIC_V1: &str = "roxpi-page-v1";
const MAGIC: &str = "roxpi-page-v2";

/// The header of a v2 saved page.
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    format: String,
    saved: u64,
    url: String,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    last_modified: Option<String>,
    #[serde(default)]
    serial: Option<u64>,
    /// `saved` in milliseconds (written since part 11; `saved` alone is
    /// up to a second old).
    #[serde(default)]
    saved_ms: Option<u64>,
}

/// Saved pages not refreshed for this long are deleted at startup: the
/// dir holds what is in use, not every project ever asked for.
const KEEP_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

pub struct PageStore {
    dir: PathBuf,
    /// Bytes of saved pages on disk (exact after every eviction pass).
    bytes: AtomicU64,
    cap: u64,
    /// One eviction pass at a time. Recency lives in the files' mtimes
    /// (touched on load), so memory does not grow with the number of
    /// pages: an in-memory LRU of every saved page grew ~10 KB/s under a
    /// soak of distinct names.
    evicting: Mutex<()>,
    /// The bucket the pages also go to (`s3`, `tiered`): a fresh node
    /// serves every page the fleet saved.
    remote: Option<Remote>,
}

/// Saved pages in the bucket: written by one background thread (a page
/// fetch never waits for S3), read by the fetch threads' loads.
struct Remote {
    bucket: Arc<Bucket>,
    jobs: crossbeam_channel::Sender<RemoteJob>,
}

enum RemoteJob {
    Put(String, Vec<u8>),
    Delete(String),
}

/// Pages waiting for their upload; beyond, a page is not uploaded (the
/// next fetch tries again).
const REMOTE_QUEUE: usize = 256;

/// A page read back from disk (or the bucket), how old it is, and its
/// validators.
pub struct Persisted {
    pub page: ProjectPage,
    pub age: Duration,
    pub validators: Validators,
    /// Read from the bucket: saved by a node of the fleet at `age`, as
    /// good as that node's own copy.
    pub shared: bool,
}

impl PageStore {
    /// `dir` is `<cache dir>/pages`; the saved pages hold at most `cap`
    /// bytes, least recently used out first.
    pub fn open(dir: &Path, cap: u64) -> io::Result<PageStore> {
        fs::create_dir_all(dir)?;
        prune(dir, KEEP_FOR);
        let store = PageStore {
            dir: dir.to_owned(),
            bytes: AtomicU64::new(0),
            cap,
            evicting: Mutex::new(()),
            remote: None,
        };
        store.evict(0);
        Ok(store)
    }

    /// Also keeps the pages in `bucket` (under `<prefix>pages/`).
    pub fn with_bucket(mut self, bucket: Arc<Bucket>) -> io::Result<PageStore> {
        let (jobs, rx) = crossbeam_channel::bounded::<RemoteJob>(REMOTE_QUEUE);
        let b = Arc::clone(&bucket);
        std::thread::Builder::new()
            .name("roxpi-page-upload".into())
            .spawn(move || {
                for job in rx {
                    let (key, done) = match job {
                        RemoteJob::Put(key, bytes) => {
                            let r = b.put_bytes(&key, &bytes);
                            (key, r)
                        }
                        RemoteJob::Delete(key) => {
                            let r = b.delete(&key);
                            (key, r)
                        }
                    };
                    if let Err(e) = done {
                        log::warn!("saved page {key} not updated in the bucket: {e}");
                    }
                }
            })?;
        self.remote = Some(Remote { bucket, jobs });
        Ok(self)
    }

    /// The bucket key of a saved page.
    fn object(&self, bucket: &Bucket, index: &Index, name: &ProjectName) -> String {
        s3::object_for_page(bucket.prefix(), &index_id(index), name.as_str())
    }

    fn send_remote(&self, job: impl FnOnce(&Remote) -> RemoteJob) {
        if let Some(r) = &self.remote {
            if r.jobs.try_send(job(r)).is_err() {
                log::warn!("page upload queue full: a saved page is not updated in the bucket");
            }
        }
    }

    /// Deletes the least recently used pages (oldest mtime) until `extra`
    /// more bytes fit under 80 % of the bound (so passes are rare), and sets
    /// the byte count from what is on disk.
    fn evict(&self, extra: u64) {
        let _one = self.evicting.lock().unwrap_or_else(|p| p.into_inner());
        let mut found = saved_files(&self.dir);
        let mut total: u64 = found.iter().map(|(_, len, _)| len).sum();
        if total + extra > self.cap {
            let target = (self.cap / 10 * 8).saturating_sub(extra);
            found.sort_by_key(|(_, _, mtime)| *mtime);
            for (path, len, _) in found {
                if total <= target {
                    break;
                }
                match fs::remove_file(&path) {
                    Ok(()) => total -= len,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => total -= len,
                    Err(e) => log::warn!("cannot remove saved page {}: {e}", path.display()),
                }
            }
        }
        self.bytes.store(total, Ordering::Relaxed);
    }

    /// Bytes held by saved pages.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// One directory per index URL (without credentials), so a changed
    /// configuration never mixes pages of different indexes.
    fn path(&self, index: &Index, name: &ProjectName) -> PathBuf {
        self.dir.join(index_id(index)).join(name.as_str())
    }

    pub fn save(&self, index: &Index, name: &ProjectName, raw: &RawPage) -> io::Result<()> {
        let path = self.path(index, name);
        let len = raw.body.len() as u64 + 256;
        if len > self.cap {
            // Never kept: larger than the whole bound.
            self.remove(index, name);
            return Err(io::Error::other(format!(
                "page of {} bytes is larger than the saved-page bound of {} bytes",
                raw.body.len(),
                self.cap
            )));
        }
        let old = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if self.bytes().saturating_sub(old) + len > self.cap {
            self.evict(len);
        }
        let dir = path.parent().unwrap_or(&self.dir);
        fs::create_dir_all(dir)?;
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let format = match raw.format {
            Format::Json => "json",
            Format::Html => "html",
        };
        let header = Header {
            format: format.to_owned(),
            saved: since_epoch.as_secs(),
            url: raw.url.to_string(),
            etag: raw.validators.etag.clone(),
            last_modified: raw.validators.last_modified.clone(),
            serial: raw.validators.serial,
            saved_ms: Some(since_epoch.as_millis() as u64),
        };
        let head = format!(
            "{MAGIC} {}\n",
            serde_json::to_string(&header).map_err(io::Error::other)?
        );
        self.send_remote(|r| {
            let mut bytes = Vec::with_capacity(head.len() + raw.body.len());
            bytes.extend_from_slice(head.as_bytes());
            bytes.extend_from_slice(&raw.body);
            RemoteJob::Put(self.object(&r.bucket, index, name), bytes)
        });
        let tmp = dir.join(format!(".{}.{}.tmp", name.as_str(), std::process::id()));
        // Head and body written apart: a big page is never copied.
        let written = fs::File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(head.as_bytes())?;
                f.write_all(&raw.body)
            })
            .and_then(|()| fs::rename(&tmp, &path));
        let len = (head.len() + raw.body.len()) as u64;
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        } else {
            // The replaced copy (if any) is gone, the new one counts.
            let _ = self
                .bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(b.saturating_sub(old) + len)
                });
        }
        written
    }

    pub fn remove(&self, index: &Index, name: &ProjectName) {
        self.send_remote(|r| RemoteJob::Delete(self.object(&r.bucket, index, name)));
        let path = self.path(index, name);
        if let Ok(m) = fs::metadata(&path) {
            if fs::remove_file(&path).is_ok() {
                let _ = self
                    .bytes
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                        Some(b.saturating_sub(m.len()))
                    });
            }
        }
    }

    /// Marks a saved page as recently used (a `304` confirmed it).
    pub fn touch(&self, index: &Index, name: &ProjectName) {
        if let Ok(f) = fs::File::options().write(true).open(self.path(index, name)) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// The saved copy: from the disk, else from the bucket (this blocks on
    /// S3: the fetch threads call it, never a worker).
    pub fn load(&self, index: &Index, name: &ProjectName) -> Option<Persisted> {
        let path = self.path(index, name);
        // A saved page is a page read within `MAX_PAGE` plus its header.
        let max = self.cap.min(crate::page_budget::MAX_PAGE + 64 * 1024);
        let read =
            fs::File::open(&path).and_then(|f| crate::page_budget::PageBuf::read_from(f, max));
        let Ok(data) = read else {
            return self.load_remote(index, name);
        };
        // Recently used: kept longest (recency is the mtime).
        if let Ok(f) = fs::File::options().write(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        let parsed = parse_saved(data.into_bytes());
        if parsed.is_none() {
            log::warn!("ignoring damaged saved page {}", path.display());
        }
        parsed
    }
}

impl PageStore {
    fn load_remote(&self, index: &Index, name: &ProjectName) -> Option<Persisted> {
        let r = self.remote.as_ref()?;
        let key = self.object(&r.bucket, index, name);
        match r.bucket.get_bytes(&key, self.cap) {
            Ok(Some(data)) => {
                let parsed =
                    parse_saved(bytes::Bytes::from(data)).map(|p| Persisted { shared: true, ..p });
                if parsed.is_none() {
                    log::warn!("ignoring damaged saved page {key} in the bucket");
                }
                parsed
            }
            Ok(None) => None,
            Err(e) => {
                log::warn!("cannot read saved page {key} from the bucket: {e}");
                None
            }
        }
    }
}

/// One directory (and bucket prefix) per index URL (without credentials).
fn index_id(index: &Index) -> String {
    let id = hex::encode(Sha256::digest(index.url.as_str().as_bytes()));
    id[..16].to_owned()
}

/// Every saved page file: path, size, modification time.
fn saved_files(dir: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let mut out = Vec::new();
    let Ok(indexes) = fs::read_dir(dir) else {
        return out;
    };
    for index in indexes.flatten() {
        let Ok(pages) = fs::read_dir(index.path()) else {
            continue;
        };
        for page in pages.flatten() {
            if let Ok(m) = page.metadata() {
                if m.is_file() {
                    let t = m.modified().unwrap_or(UNIX_EPOCH);
                    out.push((page.path(), m.len(), t));
                }
            }
        }
    }
    out
}

/// Deletes saved pages (and leftover temp files) older than `keep`. Only
/// the two levels of roxpi's own layout are looked at.
fn prune(dir: &Path, keep: Duration) {
    let now = SystemTime::now();
    let Ok(indexes) = fs::read_dir(dir) else {
        return;
    };
    for index in indexes.flatten() {
        let Ok(pages) = fs::read_dir(index.path()) else {
            continue;
        };
        for page in pages.flatten() {
            let stale = page
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() > keep)
                .unwrap_or(false);
            let temp = page.file_name().to_string_lossy().ends_with(".tmp");
            if stale || temp {
                let _ = fs::remove_file(page.path());
            }
        }
    }
}

/// Parses a saved page (pure).
fn parse_saved(data: bytes::Bytes) -> Option<Persisted> {
    let nl = data.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&data[..nl]).ok()?;
    let (magic, rest) = line.split_once(' ')?;
    let header = match magic {
        MAGIC => serde_json::from_str::<Header>(rest).ok()?,
        MAGIC_V1 => {
            let mut parts = rest.splitn(3, ' ');
            Header {
                format: parts.next()?.to_owned(),
                saved: parts.next()?.parse().ok()?,
                url: parts.next()?.to_owned(),
                etag: None,
                last_modified: None,
                serial: None,
                saved_ms: None,
            }
        }
        _ => return None,
    };
    let format = match header.format.as_str() {
        "json" => Format::Json,
        "html" => Format::Html,
        _ => return None,
    };
    let url = Url::parse(&header.url).ok()?;
    let body = data.slice(nl + 1..);
    let page = crate::upstream::parse_page(&body, format, &url).ok()?;
    // A time from the file is a claim: one past what SystemTime holds (a
    // damaged header) counts as saved at the epoch, long expired...
    let saved = match header.saved_ms {
        Some(ms) => UNIX_EPOCH.checked_add(Duration::from_millis(ms)),
        None => UNIX_EPOCH.checked_add(Duration::from_secs(header.saved)),
    }
    .unwrap_or(UNIX_EPOCH);
    // ... and so does one in the future (a damaged header, a clock set
    // back): never fresh for longer than it should be.
    let now = SystemTime::now();
    let age = now
        .duration_since(saved)
        .or_else(|_| now.duration_since(UNIX_EPOCH))
        .unwrap_or_default();
    Some(Persisted {
        page,
        age,
        validators: Validators {
            etag: header.etag,
            last_modified: header.last_modified,
            serial: header.serial,
        },
        shared: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> Index {
        Index::new(
            crate::origin::IndexId::ROOT,
            &crate::config::IndexConfig::new(
                Url::parse("https://u:p@pypi.example/simple/").unwrap(),
                Duration::from_secs(60),
            ),
        )
    }

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = PageStore::open(dir.path(), 1 << 30).unwrap();
        let name = ProjectName::parse("Demo.Pkg").unwrap();
        let raw = RawPage {
            format: Format::Html,
            url: Url::parse("https://pypi.example/simple/demo-pkg/").unwrap(),
            body: b"<a href='../../f/demo-1.0.tar.gz#sha256=aa'>demo-1.0.tar.gz</a>"
                .to_vec()
                .into(),
            validators: Validators {
                etag: Some("\"a b\"".into()),
                last_modified: Some("Tue, 01 Jan 2030 00:00:00 GMT".into()),
                serial: Some(42),
            },
        };
        store.save(&index(), &name, &raw).unwrap();
        let got = store.load(&index(), &name).expect("saved page");
        assert_eq!(got.page.files.len(), 1);
        assert_eq!(
            got.validators, raw.validators,
            "validators survive a restart"
        );
        assert_eq!(
            got.page.files[0].url.as_str(),
            "https://pypi.example/f/demo-1.0.tar.gz"
        );
        assert!(got.age < Duration::from_secs(5));
        // No credentials on disk.
        let text =
            String::from_utf8_lossy(&fs::read(store.path(&index(), &name)).unwrap()).into_owned();
        assert!(!text.contains("u:p@"));
        for damaged in [
            &b""[..],
            b"garbage",
            b"roxpi-page-v1 xml 1 https://x/\nbody",
            b"roxpi-page-v1 json 1 https://x/\n{broken",
        ] {
            assert!(parse_saved(bytes::Bytes::copy_from_slice(damaged)).is_none());
        }
        store.remove(&index(), &name);
        assert!(store.load(&index(), &name).is_none());
    }

    #[test]
    fn old_pages_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = PageStore::open(dir.path(), 1 << 30).unwrap();
        let raw = RawPage {
            format: Format::Html,
            url: Url::parse("https://pypi.example/simple/a/").unwrap(),
            body: b"<a href='a-1.tar.gz'>a-1.tar.gz</a>".to_vec().into(),
            validators: Default::default(),
        };
        let (old, new) = (
            ProjectName::parse("old").unwrap(),
            ProjectName::parse("new").unwrap(),
        );
        store.save(&index(), &old, &raw).unwrap();
        store.save(&index(), &new, &raw).unwrap();
        let old_path = store.path(&index(), &old);
        let long_ago = SystemTime::now() - Duration::from_secs(40 * 24 * 3600);
        fs::File::options()
            .write(true)
            .open(&old_path)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let store = PageStore::open(dir.path(), 1 << 30).unwrap();
        assert!(store.load(&index(), &old).is_none(), "pruned");
        assert!(store.load(&index(), &new).is_some(), "kept");
    }

    #[test]
    fn the_byte_bound_holds_and_recently_used_pages_stay() {
        let dir = tempfile::tempdir().unwrap();
        let cap = 64 * 1024;
        let store = PageStore::open(dir.path(), cap).unwrap();
        let raw = |n: usize| RawPage {
            format: Format::Json,
            url: Url::parse("https://pypi.example/simple/p/").unwrap(),
            body: format!("{{\"files\":[],\"pad\":\"{}\"}}", "x".repeat(n))
                .into_bytes()
                .into(),
            validators: Validators::default(),
        };
        let name = |i: usize| ProjectName::parse(&format!("p{i}")).unwrap();
        for i in 0..40 {
            store.save(&index(), &name(i), &raw(10_000)).unwrap();
            // p0 is in use all along: it must stay.
            assert!(store.load(&index(), &name(0)).is_some(), "p0 gone at {i}");
            let on_disk: u64 = saved_files(dir.path()).iter().map(|(_, l, _)| l).sum();
            assert!(on_disk <= cap, "{on_disk} bytes on disk after {i}");
            assert_eq!(store.bytes(), on_disk, "the books match the disk");
        }
        assert!(
            store.load(&index(), &name(1)).is_none(),
            "old unused pages go"
        );
        assert!(store.load(&index(), &name(39)).is_some());
        // Larger than the whole bound: not saved, an error to log.
        assert!(store.save(&index(), &name(99), &raw(100_000)).is_err());
        assert!(store.load(&index(), &name(99)).is_none());
        // A restart with a smaller bound trims to it.
        drop(store);
        let store = PageStore::open(dir.path(), 20_000).unwrap();
        let on_disk: u64 = saved_files(dir.path()).iter().map(|(_, l, _)| l).sum();
        assert!(on_disk <= 20_000 && store.bytes() == on_disk, "{on_disk}");
    }

    #[test]
    fn a_saved_time_past_what_system_time_holds_is_long_expired_not_a_panic() {
        for header in [
            r#"{"format":"html","saved":18446744073709551615,"url":"https://pypi.example/simple/demo/"}"#,
            r#"{"format":"html","saved":0,"saved_ms":18446744073709551615,"url":"https://pypi.example/simple/demo/"}"#,
        ] {
            let data = format!("{MAGIC} {header}\n<a href='demo-1.0.tar.gz'>demo-1.0.tar.gz</a>");
            let got = parse_saved(bytes::Bytes::from(data)).expect("parses");
            assert!(
                got.age > Duration::from_secs(50 * 365 * 24 * 3600),
                "{:?}",
                got.age
            );
        }
    }

    #[test]
    fn v1_saved_pages_still_load_without_validators() {
        let data = b"roxpi-page-v1 html 1700000000 https://pypi.example/simple/demo/\n<a href='demo-1.0.tar.gz'>demo-1.0.tar.gz</a>";
        let got = parse_saved(bytes::Bytes::copy_from_slice(data)).expect("v1 parses");
        assert_eq!(got.page.files.len(), 1);
        assert_eq!(got.validators, Validators::default());
        for bad in [
            &b"roxpi-page-v3 {}\n"[..],
            b"roxpi-page-v2 {not json}\n",
            b"roxpi-page-v2 {\"format\":\"xml\",\"saved\":1,\"url\":\"https://a/\"}\n",
        ] {
            assert!(parse_saved(bytes::Bytes::copy_from_slice(bad)).is_none());
        }
    }
}
