//! Where cached files live. A small synchronous `Storage` trait (a miss is
//! a value, not an error) with the local disk backend in `local`. A hit
//! is a `Stored`: a local file (sent with sendfile) or a `RangeSource`, so
//! a remote backend (S3, tiered) fits behind the same trait.
//!
//! Cache keys are derived, never taken from a URL path: the sha256 of the
//! file when the index advertises one (content-addressed, so the same file
//! from two indexes is stored once), else the sha256 of the upstream URL
//! without credentials. A key is always 64 lower-case hex digits.

pub mod local;
pub mod remote;
pub mod s3;
pub mod tiered;
mod uploads;
pub mod verify;

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use url::Url;

/// A derived cache key: 64 lower-case hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(Box<str>);

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl CacheKey {
    /// The key of a file: its advertised sha256, else a hash of its URL.
    pub fn derive(sha256: Option<&str>, url: &Url) -> CacheKey {
        if let Some(h) = sha256
            .map(str::to_ascii_lowercase)
            .filter(|h| is_sha256_hex(h))
        {
            return CacheKey(h.into());
        }
        let mut u = url.clone();
        let _ = u.set_username("");
        let _ = u.set_password(None);
        u.set_fragment(None);
        CacheKey::digest(&format!("url:{u}"))
    }

    /// The key of anything else: the sha256 of a label (`page:…`).
    pub fn digest(label: &str) -> CacheKey {
        CacheKey(hex::encode(Sha256::digest(label.as_bytes())).into())
    }

    /// Parses a key found on disk.
    pub fn parse(s: &str) -> Option<CacheKey> {
        is_sha256_hex(s).then(|| CacheKey(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A committed file: its length, its sha256 (the ETag), when it was
/// stored, and how to read it.
#[derive(Clone)]
pub struct Stored {
    pub len: u64,
    pub sha256: Arc<str>,
    pub modified: SystemTime,
    pub body: StoredBody,
}

/// Where a stored file's bytes come from.
#[derive(Clone)]
pub enum StoredBody {
    /// A local file, open: sent with `sendfile`.
    Local(Arc<File>),
    /// A small hot file's bytes, kept in memory: sent with the head in one
    /// `writev`.
    Memory(bytes::Bytes),
    /// A remote object (S3): read by ranges.
    Remote(Arc<dyn RangeSource>),
}

/// A stored object that can be read by ranges (a remote backend).
pub trait RangeSource: Send + Sync {
    /// `len` bytes from `offset`.
    fn open(&self, offset: u64, len: u64) -> io::Result<Box<dyn io::Read + Send>>;
}

pub enum Lookup {
    Hit(Stored),
    Miss,
}

/// Gives reserved space back when a temp file is dropped uncommitted.
pub trait Space: Send + Sync {
    fn release(&self, bytes: u64);
}

/// A file being written: space is reserved for `len` bytes from the start,
/// so the cap holds at every moment. Dropping it uncommitted deletes it.
pub struct TempFile {
    pub file: Arc<File>,
    pub len: u64,
    pub key: CacheKey,
    /// A saved page (kept under `pages/`), not a file.
    page: bool,
    /// `None` for a staged file (larger than the cap, never kept; its name
    /// is unlinked at creation).
    path: Option<std::path::PathBuf>,
    space: Option<(Arc<dyn Space>, u64)>,
}

impl TempFile {
    /// An anonymous file that is streamed and never kept (no space reserved).
    pub fn staged(file: Arc<File>, key: CacheKey, len: u64) -> TempFile {
        TempFile {
            file,
            len,
            key,
            page: false,
            path: None,
            space: None,
        }
    }

    /// Whether this file will be kept (committed) when complete.
    pub fn is_kept(&self) -> bool {
        self.path.is_some()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(&p);
        }
        if let Some((space, bytes)) = self.space.take() {
            space.release(bytes);
        }
    }
}

/// Commits `temp`; if that fails, the complete and verified bytes are still
/// served, from the temp file (not kept), and the error is returned too.
pub fn commit_or_serve(
    storage: &dyn Storage,
    temp: TempFile,
    sha256: &str,
) -> (Stored, Option<io::Error>) {
    let (file, len) = (Arc::clone(&temp.file), temp.len);
    match storage.commit(temp, sha256) {
        Ok(stored) => (stored, None),
        Err(e) => (
            Stored {
                body: StoredBody::Local(file),
                len,
                sha256: sha256.into(),
                modified: SystemTime::now(),
            },
            Some(e),
        ),
    }
}

/// A section of a file, read with `pread` (the file is shared).
pub struct FilePart<'a> {
    pub file: &'a File,
    pub at: u64,
    pub end: u64,
}

impl Read for FilePart<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.end - self.at)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shorter than its recorded length",
            ));
        }
        self.at += n as u64;
        Ok(n)
    }
}

/// What the home page shows.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    /// Entries: files and saved pages.
    pub files: usize,
    /// Bytes of every entry (the one bound).
    pub used: u64,
    /// Saved pages among the entries, and their bytes.
    pub pages: usize,
    pub page_bytes: u64,
    pub reserved: u64,
    pub cap: u64,
    pub evictions: u64,
}

/// Where files are kept (`ROXPI_STORAGE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The local LRU only.
    Local,
    /// The bucket; the cache dir only stages.
    S3,
    /// The local LRU (L1) in front of the bucket (L2).
    Tiered,
}

/// What an entry is, for the tiers that name objects (the bucket's
/// layout): a package file or a saved page. Both live under their key in
/// the same storage: one LRU, one bound, one upload queue.
#[derive(Clone, Debug)]
pub enum Item {
    File {
        key: CacheKey,
        filename: String,
    },
    Page {
        key: CacheKey,
        index: String,
        project: String,
    },
}

impl Item {
    /// A package file, named in the bucket by the last segment of its URL.
    pub fn file(key: CacheKey, url: &Url) -> Item {
        Item::File {
            key,
            filename: s3::object_filename(url),
        }
    }

    pub fn key(&self) -> &CacheKey {
        match self {
            Item::File { key, .. } | Item::Page { key, .. } => key,
        }
    }

    pub fn is_file(&self) -> bool {
        matches!(self, Item::File { .. })
    }
}

/// What a loaded object must be: its length (if known), the advertised
/// hashes, and a bound for one without a known length.
pub struct Want<'a> {
    pub len: Option<u64>,
    pub hashes: &'a crate::pypi::Hashes,
    pub max: u64,
}

/// Why loading from a slower tier failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The tier failed (S3 error, cut body): the caller goes to the origin.
    #[error("{0}")]
    Remote(String),
    /// The object is not the bytes its key names: never served.
    #[error("{0}")]
    Tampered(verify::Mismatch),
    /// The local side cannot take it.
    #[error("{0}")]
    Local(io::Error),
}

/// A remote tier's numbers, for the home page and `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct RemoteReport {
    /// `bucket … at …`.
    pub describe: String,
    /// What the tier is to the cache dir.
    pub role: &'static str,
    pub hits: u64,
    pub fallbacks: u64,
    pub mismatches: u64,
    pub uploads: u64,
    pub upload_failures: u64,
    pub uploads_pending: u64,
    pub gets: u64,
    pub get_misses: u64,
    pub puts: u64,
    pub multipart_uploads: u64,
    pub aborted_uploads: u64,
    pub errors: u64,
    pub skipped: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// One storage: the local LRU (`local`), the bucket (`s3`), or both
/// (`tiered`). Lookups never wait on the network (a request worker calls
/// them); `load` and `share` may (download and fetch threads only).
pub trait Storage: Send + Sync {
    /// A committed file held locally, refreshed as most recently used.
    fn lookup(&self, key: &CacheKey) -> Lookup;
    /// A new temp file with `len` bytes reserved (or staged, not kept, when
    /// it cannot be kept).
    fn create(&self, item: &Item, len: u64) -> io::Result<TempFile>;
    /// Publishes a complete, verified temp file under its key. A staged
    /// temp file is not kept: its `Stored` reads the temp file itself.
    fn commit(&self, temp: TempFile, sha256: &str) -> io::Result<Stored>;
    fn usage(&self) -> Usage;
    /// Removes the item from every tier.
    fn remove(&self, item: &Item);
    /// The item from a slower tier, verified against `want` before it is
    /// returned (`Ok(None)`: no tier holds it). `started` is called once
    /// an object is found and being read. Blocks on the network.
    fn load(
        &self,
        item: &Item,
        want: &Want,
        started: &dyn Fn(),
    ) -> Result<Option<Stored>, LoadError> {
        let _ = (item, want, started);
        Ok(None)
    }
    /// After a commit: puts `stored` into the slower tiers (a file before
    /// its download ends, a page in the background). Never loses the local
    /// copy.
    fn share(&self, item: &Item, stored: &Stored) {
        let _ = (item, stored);
    }
    /// A file not held locally whose remote object this process verified:
    /// ranges of it are read from there.
    fn ranges(&self, key: &CacheKey) -> Option<Stored> {
        let _ = key;
        None
    }
    /// Forgets what `ranges` knew of `key` (a ranged read failed).
    fn forget(&self, key: &CacheKey) {
        let _ = key;
    }
    /// The remote tier's numbers, if there is one.
    fn remote(&self) -> Option<RemoteReport> {
        None
    }
}

/// The storage the settings ask for: the LRU in `dir` capped at `cap`
/// bytes (`local`), the bucket with `dir` for staging (`s3`), the LRU in
/// front of the bucket (`tiered`), or none at all (`local` with cap 0:
/// files are streamed through, verified, and nothing is kept).
pub fn open(
    dir: &Path,
    cap: u64,
    mode: Mode,
    bucket: Option<Arc<s3::Bucket>>,
) -> anyhow::Result<Option<Arc<dyn Storage>>> {
    let bucket = || {
        bucket.clone().ok_or_else(|| {
            anyhow::anyhow!("ROXPI_STORAGE={mode:?} needs a bucket (ROXPI_S3_BUCKET)")
        })
    };
    Ok(match mode {
        Mode::Local if cap == 0 => {
            log::info!("file cache disabled (ROXPI_CACHE_SIZE=0): files are streamed through");
            None
        }
        Mode::Local => Some(Arc::new(local::LocalStorage::open(dir, cap)?)),
        Mode::S3 => Some(Arc::new(remote::S3Storage::start(
            bucket()?,
            Arc::new(local::LocalStorage::staging_only(dir)?),
        )?)),
        Mode::Tiered => Some(Arc::new(tiered::Tiered::start(
            Arc::new(local::LocalStorage::open(dir, cap)?),
            bucket()?,
        )?)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_derived_never_paths() {
        let url = Url::parse("https://u:secret@files.example/a/../../etc/passwd#sha256=x").unwrap();
        let sha = "A".repeat(64);
        assert_eq!(CacheKey::derive(Some(&sha), &url).as_str(), "a".repeat(64));
        let k = CacheKey::derive(None, &url);
        assert!(is_sha256_hex(k.as_str()));
        // Credentials and fragment do not change the key.
        let plain = Url::parse("https://files.example/etc/passwd").unwrap();
        assert_eq!(k, CacheKey::derive(None, &plain));
        // A malformed advertised hash falls back to the URL.
        assert_eq!(CacheKey::derive(Some("../../x"), &plain), k);
        assert_eq!(CacheKey::derive(Some("abc"), &plain), k);
        for bad in ["", "..", "../x", &"g".repeat(64), &"a".repeat(63)] {
            assert!(CacheKey::parse(bad).is_none(), "{bad}");
        }
    }
}
