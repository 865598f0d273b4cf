//! The last good copy of every project page, so that a restarted roxpi
//! with its upstream down — or in `ROXPI_OFFLINE` mode — still serves every
//! page (and so every cached file) it had. Saved pages are a namespace of
//! the file storage (`Item::Page`): one LRU and one bound with the files,
//! kept under `pages/` of the cache dir, and put into the bucket by the
//! same upload queue (`s3`, `tiered`), so a fresh node of a fleet serves
//! every page the fleet saved. Each holds the upstream's answer as received
//! (decoded), behind a one-line header, and is parsed again on load: the
//! parser stays the single source of truth. A damaged one is ignored and
//! replaced by the next fetch.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use url::Url;

use crate::origin::{Index, RawPage, Validators};
use crate::pypi::{Format, ProjectName, ProjectPage};
use crate::storage::{CacheKey, Item, Lookup, Storage, Stored, StoredBody, Want};

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

/// A page read back from the storage, how old it is, and its validators.
pub struct Persisted {
    pub page: ProjectPage,
    pub age: Duration,
    pub validators: Validators,
    /// Read from the bucket: saved by a node of the fleet at `age`, as
    /// good as that node's own copy.
    pub shared: bool,
}

/// The saved pages: a view of the storage.
pub struct SavedPages {
    storage: Arc<dyn Storage>,
}

/// A saved page is a page read within `MAX_PAGE` plus its header.
const MAX_SAVED: u64 = crate::page_budget::MAX_PAGE + 64 * 1024;

impl SavedPages {
    pub fn new(storage: Arc<dyn Storage>) -> SavedPages {
        SavedPages { storage }
    }

    /// The storage item of a saved page: its key and its bucket name, one
    /// per index URL (without credentials), so a changed configuration
    /// never mixes pages of different indexes.
    fn item(index: &Index, name: &ProjectName) -> Item {
        let id = hex::encode(Sha256::digest(index.url.as_str().as_bytes()));
        Item::Page {
            key: CacheKey::digest(&format!("page:{id}/{}", name.as_str())),
            index: id[..16].to_owned(),
            project: name.as_str().to_owned(),
        }
    }

    pub fn save(&self, index: &Index, name: &ProjectName, raw: &RawPage) -> io::Result<()> {
        let item = SavedPages::item(index, name);
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
        let len = (head.len() + raw.body.len()) as u64;
        let temp = self.storage.create(&item, len)?;
        // Head and body written apart: a big page is never copied.
        use std::os::unix::fs::FileExt;
        temp.file.write_all_at(head.as_bytes(), 0)?;
        temp.file.write_all_at(&raw.body, head.len() as u64)?;
        let mut sha = Sha256::new();
        sha.update(head.as_bytes());
        sha.update(&raw.body);
        let kept = temp.is_kept();
        let stored = self.storage.commit(temp, &hex::encode(sha.finalize()))?;
        self.storage.share(&item, &stored);
        if !kept && self.storage.remote().is_none() {
            return Err(io::Error::other(format!(
                "page of {} bytes does not fit the file cache",
                raw.body.len()
            )));
        }
        Ok(())
    }

    pub fn remove(&self, index: &Index, name: &ProjectName) {
        self.storage.remove(&SavedPages::item(index, name));
    }

    /// Marks a saved page as recently used (a `304` confirmed it).
    pub fn touch(&self, index: &Index, name: &ProjectName) {
        let _ = self.storage.lookup(SavedPages::item(index, name).key());
    }

    /// The saved copy: from the local side, else from the bucket (this
    /// blocks on S3: the fetch threads call it, never a worker).
    pub fn load(&self, index: &Index, name: &ProjectName) -> Option<Persisted> {
        let item = SavedPages::item(index, name);
        if let Lookup::Hit(stored) = self.storage.lookup(item.key()) {
            let parsed = read_stored(&stored).and_then(parse_saved);
            if parsed.is_none() {
                log::warn!("ignoring damaged saved page of {name}");
            }
            return parsed;
        }
        let no_hashes = crate::pypi::Hashes::default();
        let want = Want {
            len: None,
            hashes: &no_hashes,
            max: MAX_SAVED,
        };
        match self.storage.load(&item, &want, &|| {}) {
            Ok(Some(stored)) => {
                let parsed = read_stored(&stored)
                    .and_then(parse_saved)
                    .map(|p| Persisted { shared: true, ..p });
                if parsed.is_none() {
                    log::warn!("ignoring damaged saved page of {name} in the bucket");
                }
                parsed
            }
            Ok(None) => None,
            Err(e) => {
                log::warn!("cannot read the saved page of {name} from the bucket: {e}");
                None
            }
        }
    }
}

/// The bytes of a stored page (at most `MAX_SAVED`).
fn read_stored(stored: &Stored) -> Option<bytes::Bytes> {
    if stored.len > MAX_SAVED {
        return None;
    }
    match &stored.body {
        StoredBody::Memory(b) => Some(b.clone()),
        StoredBody::Local(f) => {
            // Into pages' own memory (mapped when large), not the heap.
            let part = crate::storage::FilePart {
                file: f,
                at: 0,
                end: stored.len,
            };
            let buf = crate::page_budget::PageBuf::read_from(part, MAX_SAVED).ok()?;
            Some(buf.into_bytes())
        }
        StoredBody::Remote(_) => None,
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
    let page = crate::origin::http::parse_page(&body, format, &url).ok()?;
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
    use crate::storage::local::LocalStorage;

    fn index() -> Index {
        Index::new(
            crate::origin::IndexId::ROOT,
            &crate::origin::IndexConfig::new(
                Url::parse("https://u:p@pypi.example/simple/").unwrap(),
                Duration::from_secs(60),
            ),
        )
    }

    fn saved(dir: &std::path::Path, cap: u64) -> (SavedPages, Arc<LocalStorage>) {
        let storage = Arc::new(LocalStorage::open(dir, cap).unwrap());
        (SavedPages::new(storage.clone()), storage)
    }

    /// Every saved page file under `dir/pages`: its bytes.
    fn on_disk(dir: &std::path::Path) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for sub in std::fs::read_dir(dir.join("pages")).unwrap().flatten() {
            for f in std::fs::read_dir(sub.path()).unwrap().flatten() {
                out.push(std::fs::read(f.path()).unwrap());
            }
        }
        out
    }

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = saved(dir.path(), 1 << 30);
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
        // Under pages/, with no credentials.
        let files = on_disk(dir.path());
        assert_eq!(files.len(), 1);
        assert!(!String::from_utf8_lossy(&files[0]).contains("u:p@"));
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
        assert!(on_disk(dir.path()).is_empty(), "removed from the disk");
    }

    #[test]
    fn pages_and_files_share_one_bound_and_recently_used_pages_stay() {
        let dir = tempfile::tempdir().unwrap();
        let cap = 64 * 1024;
        let (store, storage) = saved(dir.path(), cap);
        let raw = |n: usize| RawPage {
            format: Format::Json,
            url: Url::parse("https://pypi.example/simple/p/").unwrap(),
            body: format!("{{\"files\":[],\"pad\":\"{}\"}}", "x".repeat(n))
                .into_bytes()
                .into(),
            validators: Validators::default(),
        };
        let name = |i: usize| ProjectName::parse(&format!("p{i}")).unwrap();
        // A file takes its part of the one bound.
        let file = Item::File {
            key: CacheKey::digest("a file"),
            filename: "a-1.0.tar.gz".into(),
        };
        let temp = storage.create(&file, 20_000).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&*temp.file, &[7u8; 20_000], 0).unwrap();
        storage.commit(temp, &"a".repeat(64)).unwrap();
        for i in 0..40 {
            store.save(&index(), &name(i), &raw(10_000)).unwrap();
            // p0 is in use all along: it must stay.
            assert!(store.load(&index(), &name(0)).is_some(), "p0 gone at {i}");
            let pages: u64 = on_disk(dir.path()).iter().map(|b| b.len() as u64).sum();
            let u = storage.usage();
            assert!(u.used <= cap, "{} bytes kept after {i}", u.used);
            assert!(pages <= u.used, "the books hold the pages");
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
        drop((store, storage));
        let (_, storage) = saved(dir.path(), 20_000);
        let pages: u64 = on_disk(dir.path()).iter().map(|b| b.len() as u64).sum();
        assert!(pages <= 20_000 && storage.usage().used <= 20_000, "{pages}");
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
