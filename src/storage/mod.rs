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
pub mod s3;

use std::fs::File;
use std::io;
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
        let digest = Sha256::digest(format!("url:{u}").as_bytes());
        CacheKey(hex::encode(digest).into())
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

/// What the home page shows.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    pub files: usize,
    pub used: u64,
    pub reserved: u64,
    pub cap: u64,
    pub evictions: u64,
}

pub trait Storage: Send + Sync {
    /// A committed file, refreshed as most recently used.
    fn lookup(&self, key: &CacheKey) -> Lookup;
    /// A new temp file with `len` bytes reserved (or staged, not kept, when
    /// larger than the cap).
    fn create(&self, key: &CacheKey, len: u64) -> io::Result<TempFile>;
    /// Publishes a complete, verified temp file under its key.
    fn commit(&self, temp: TempFile, sha256: &str) -> io::Result<Stored>;
    fn usage(&self) -> Usage;
}

/// The local side for the settings: the LRU in `dir` capped at `cap` bytes
/// (`local`, and L1 of `tiered`), a staging-only dir (`s3`: the bucket
/// holds the files), or none at all (`local` with cap 0: files are
/// streamed through, verified).
pub fn open(
    dir: &Path,
    cap: u64,
    mode: crate::config::StorageMode,
) -> Result<Option<Arc<dyn Storage>>, local::OpenError> {
    use crate::config::StorageMode;
    match mode {
        StorageMode::S3 => Ok(Some(Arc::new(local::LocalStorage::staging_only(dir)?))),
        StorageMode::Local if cap == 0 => {
            log::info!("file cache disabled (ROXPI_CACHE_SIZE=0): files are streamed through");
            Ok(None)
        }
        StorageMode::Local | StorageMode::Tiered => {
            Ok(Some(Arc::new(local::LocalStorage::open(dir, cap)?)))
        }
    }
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
