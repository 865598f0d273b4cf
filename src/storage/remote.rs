//! The bucket as a storage (`ROXPI_STORAGE=s3`, and L2 of `tiered`).
//!
//! Files and saved pages land on a near side first (the staging dir in
//! `s3` mode, the L1 cache in `tiered` mode): a bucket object is read into
//! it verified (`verify::copy_verified`, the same check as for the
//! upstream) before any byte is served, and a new download is put into the
//! bucket from it (`share`). What this process verified is remembered, so
//! ranges of a file only the bucket holds are ranged GETs (`ranges`).
//! Failed puts, saved pages and deletes go through one upload queue
//! (`uploads`). Never loses the near copy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use super::s3::{self, Bucket, S3Error};
use super::uploads::{Body, Due, Uploads};
use super::verify::{copy_verified, Copy, Mismatch, Verifier};
use super::{
    commit_or_serve, CacheKey, Item, LoadError, Lookup, RemoteReport, Storage, Stored, StoredBody,
    TempFile, Usage, Want,
};

/// Counters of the bucket as a tier of files (saved pages are not counted:
/// the metrics say "file").
#[derive(Default, Debug)]
pub struct TierStats {
    /// Files read from the bucket (verified).
    pub hits: AtomicU64,
    /// Bucket reads that failed (S3 error): served from the upstream.
    pub fallbacks: AtomicU64,
    /// Bucket objects that did not match their key: never served.
    pub mismatches: AtomicU64,
    /// Files put into the bucket.
    pub uploads: AtomicU64,
    /// Uploads given up.
    pub upload_failures: AtomicU64,
}

/// A bucket object known to hold the file its key names.
struct Verified {
    object: String,
    len: u64,
    etag: String,
    sha256: Arc<str>,
    at: SystemTime,
}

/// Verified objects remembered (a few hundred bytes each).
const VERIFIED: usize = 4096;
/// Tries of a file's first put before its download ends.
const TRIES: u32 = 3;

pub struct S3Storage {
    bucket: Arc<Bucket>,
    near: Arc<dyn Storage>,
    verified: Mutex<lru::LruCache<CacheKey, Arc<Verified>>>,
    uploads: Arc<Uploads>,
    stats: Arc<TierStats>,
    role: &'static str,
}

impl S3Storage {
    /// `s3` mode: `staging` keeps nothing, the bucket holds every file.
    pub fn start(bucket: Arc<Bucket>, staging: Arc<dyn Storage>) -> std::io::Result<S3Storage> {
        S3Storage::with_near(bucket, staging, "bucket (the cache dir stages only)")
    }

    /// The bucket behind `near`, where its objects are read into and put
    /// from.
    pub(super) fn with_near(
        bucket: Arc<Bucket>,
        near: Arc<dyn Storage>,
        role: &'static str,
    ) -> std::io::Result<S3Storage> {
        let stats = Arc::new(TierStats::default());
        let uploads = Uploads::start(Arc::clone(&near), Arc::clone(&bucket), Arc::clone(&stats))?;
        Ok(S3Storage {
            bucket,
            near,
            verified: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(VERIFIED).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            uploads,
            stats,
            role,
        })
    }

    /// The object name of an item.
    fn object(&self, item: &Item) -> String {
        match item {
            Item::File { key, filename } => {
                s3::object_for_file(self.bucket.prefix(), key, filename)
            }
            Item::Page { index, project, .. } => {
                s3::object_for_page(self.bucket.prefix(), index, project)
            }
        }
    }

    fn memo(&self) -> MutexGuard<'_, lru::LruCache<CacheKey, Arc<Verified>>> {
        crate::lock(&self.verified)
    }

    fn remember(&self, key: &CacheKey, object: &str, stored: &Stored, etag: Option<String>) {
        let Some(etag) = etag else { return };
        let v = Verified {
            object: object.to_owned(),
            len: stored.len,
            etag,
            sha256: Arc::clone(&stored.sha256),
            at: SystemTime::now(),
        };
        self.memo().put(key.clone(), Arc::new(v));
    }

    fn near_holds(&self, key: &CacheKey) -> bool {
        matches!(self.near.lookup(key), Lookup::Hit(_))
    }

    /// Counts a file's event (pages are not counted).
    fn count(&self, item: &Item, counter: fn(&TierStats) -> &AtomicU64) {
        if item.is_file() {
            counter(&self.stats).fetch_add(1, Ordering::Relaxed);
        }
    }

    fn tampered(&self, item: &Item, m: Mismatch) -> LoadError {
        self.count(item, |s| &s.mismatches);
        LoadError::Tampered(m)
    }

    fn failed(&self, item: &Item, detail: String) -> LoadError {
        self.count(item, |s| &s.fallbacks);
        LoadError::Remote(detail)
    }

    /// Copies a bucket object into `temp`, verified; returns its sha256.
    fn fill(
        &self,
        item: &Item,
        object: &str,
        obj: s3::Object,
        temp: &TempFile,
        want: &Want,
    ) -> Result<String, LoadError> {
        let mut verifier = Verifier::new(want.hashes);
        let written = match copy_verified(obj.body, temp, &mut verifier, obj.len, |_| {}) {
            Ok(w) => w,
            Err(Copy::Read(e, written)) => {
                self.bucket.stats.errors.fetch_add(1, Ordering::Relaxed);
                let e = S3Error::Unreachable {
                    op: "GetObject",
                    detail: format!("cut after {written} bytes: {e}"),
                };
                return Err(self.failed(item, format!("bucket read of {object} failed ({e})")));
            }
            Err(Copy::TooLong) => return Err(self.tampered(item, Mismatch::TooLong(obj.len))),
            Err(Copy::Write(e)) => return Err(LoadError::Local(e)),
        };
        self.bucket
            .stats
            .bytes_read
            .fetch_add(written, Ordering::Relaxed);
        if written != obj.len {
            return Err(self.failed(
                item,
                format!(
                    "bucket read of {object} ended at {written} of {} bytes",
                    obj.len
                ),
            ));
        }
        verifier.finish().map_err(|m| self.tampered(item, m))
    }
}

/// Puts a stored file's bytes under `object`; returns the new ETag.
pub(super) fn put_stored(
    bucket: &Bucket,
    object: &str,
    stored: &Stored,
) -> Result<Option<String>, S3Error> {
    match &stored.body {
        StoredBody::Local(f) => bucket.put_file(object, f, stored.len),
        StoredBody::Memory(b) => bucket.put_bytes(object, b).map(|()| None),
        StoredBody::Remote(_) => Ok(None),
    }
}

impl Storage for S3Storage {
    fn lookup(&self, key: &CacheKey) -> Lookup {
        self.near.lookup(key)
    }

    fn create(&self, item: &Item, len: u64) -> std::io::Result<TempFile> {
        self.near.create(item, len)
    }

    fn commit(&self, temp: TempFile, sha256: &str) -> std::io::Result<Stored> {
        self.near.commit(temp, sha256)
    }

    fn usage(&self) -> Usage {
        self.near.usage()
    }

    fn remove(&self, item: &Item) {
        self.near.remove(item);
        self.memo().pop(item.key());
        self.uploads
            .push(item.clone(), self.object(item), Body::Delete, Due::Now);
    }

    fn load(
        &self,
        item: &Item,
        want: &Want,
        started: &dyn Fn(),
    ) -> Result<Option<Stored>, LoadError> {
        let object = self.object(item);
        let obj = match self.bucket.get(&object, None) {
            Ok(Some(obj)) => obj,
            Ok(None) => return Ok(None),
            Err(e) => {
                return Err(self.failed(item, format!("bucket read of {object} failed ({e})")))
            }
        };
        if let Some(want) = want.len.filter(|w| *w != obj.len) {
            let got = obj.len;
            return Err(self.tampered(item, Mismatch::Length { got, want }));
        }
        if obj.len > want.max {
            return Err(self.tampered(item, Mismatch::TooLong(want.max)));
        }
        started();
        let temp = self.near.create(item, obj.len).map_err(LoadError::Local)?;
        let etag = obj.etag.clone();
        let sha256 = self.fill(item, &object, obj, &temp, want)?;
        self.count(item, |s| &s.hits);
        let (stored, error) = commit_or_serve(&*self.near, temp, &sha256);
        if let Some(e) = error {
            log::warn!("cannot keep {object} read from the bucket: {e}");
        }
        if item.is_file() {
            self.remember(item.key(), &object, &stored, etag);
        }
        Ok(Some(stored))
    }

    fn share(&self, item: &Item, stored: &Stored) {
        let object = self.object(item);
        if !item.is_file() {
            // Pages go in the background: a page fetch never waits for S3.
            let body = match (&stored.body, self.near_holds(item.key())) {
                (_, true) => Body::Near,
                (StoredBody::Local(f), false) => Body::File(Arc::clone(f), stored.len),
                (StoredBody::Memory(b), false) => Body::Bytes(b.clone()),
                (StoredBody::Remote(_), false) => return,
            };
            self.uploads.push(item.clone(), object, body, Due::Now);
            return;
        }
        for attempt in 1..=TRIES {
            match put_stored(&self.bucket, &object, stored) {
                Ok(etag) => {
                    self.stats.uploads.fetch_add(1, Ordering::Relaxed);
                    self.remember(item.key(), &object, stored, etag);
                    return;
                }
                Err(e) if self.near_holds(item.key()) => {
                    log::warn!(
                        "upload of {object} failed ({e}): retried later from the local copy"
                    );
                    self.uploads
                        .push(item.clone(), object, Body::Near, Due::Later);
                    return;
                }
                Err(e) if attempt == TRIES => {
                    self.stats.upload_failures.fetch_add(1, Ordering::Relaxed);
                    log::error!("upload of {object} failed {TRIES} times ({e}): not in the bucket; the next request fetches it again");
                    return;
                }
                Err(e) => {
                    log::warn!("upload of {object} failed ({e}): trying again");
                    std::thread::sleep(Duration::from_millis(500 << attempt));
                }
            }
        }
    }

    fn ranges(&self, key: &CacheKey) -> Option<Stored> {
        let v = self.memo().get(key).cloned()?;
        if self.near_holds(key) {
            return None;
        }
        Some(Stored {
            len: v.len,
            sha256: Arc::clone(&v.sha256),
            modified: v.at,
            body: StoredBody::Remote(Arc::new(s3::ObjectRanges {
                bucket: Arc::clone(&self.bucket),
                object: v.object.clone(),
                etag: v.etag.clone(),
            })),
        })
    }

    fn forget(&self, key: &CacheKey) {
        // A ranged read failed: the file comes from the upstream instead.
        self.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.memo().pop(key);
    }

    fn remote(&self) -> Option<RemoteReport> {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (t, b) = (&self.stats, &self.bucket.stats);
        Some(RemoteReport {
            describe: self.bucket.describe(),
            role: self.role,
            hits: load(&t.hits),
            fallbacks: load(&t.fallbacks),
            mismatches: load(&t.mismatches),
            uploads: load(&t.uploads),
            upload_failures: load(&t.upload_failures),
            uploads_pending: self.uploads.len() as u64,
            gets: load(&b.gets),
            get_misses: load(&b.get_misses),
            puts: load(&b.puts),
            multipart_uploads: load(&b.multipart_uploads),
            aborted_uploads: load(&b.aborted_uploads),
            errors: load(&b.errors),
            skipped: load(&b.skipped),
            bytes_read: load(&b.bytes_read),
            bytes_written: load(&b.bytes_written),
        })
    }
}
