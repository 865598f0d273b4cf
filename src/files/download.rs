//! Download coordination: one upstream download per file, on a bounded
//! pool of download threads, streamed to every concurrent requester while
//! it lands on disk (`inflight`), verified before it is committed
//! (`verify`).
//!
//! - The first request for an uncached file registers an `InFlight` and
//!   queues ONE upstream GET; the download continues when that client
//!   disconnects.
//! - An upstream without `Content-Length` is downloaded against the
//!   index's `size` (and cached once verified); with no size either, the
//!   file is streamed through, verified by `VerifiedRead`.
//! - On an upstream failure, a length or hash mismatch, or a local write
//!   error, the state becomes `Failed`: every reader's connection is cut,
//!   nothing is committed, and the next request starts again. After a local
//!   write error (disk full) or a missing length, that file URL is streamed
//!   through without caching for a minute, so a retry succeeds.
//! - A drop guard marks the download failed if its thread unwinds.
//! - The `InFlight` is removed from the map only after the committed file is
//!   visible in storage, so a request never misses both.
//!
//! Lock order: the `inflight` map lock and an `InFlight`'s state lock are
//! never held together; neither is held across network or disk I/O.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::error::{FileError, Mismatch};
use super::inflight::{InFlight, Phase};
use super::verify::Verifier;
use super::{FileStats, Source};
use crate::clock::Clock;
use crate::origin::{Origin, OriginError};
use crate::redact::SafeUrl;
use crate::storage::s3::{self, Bucket};
use crate::storage::{CacheKey, Lookup, Storage, Stored, StoredBody};

/// Download threads (each holds one upstream connection). uv fetches 50
/// files at once; fewer threads would queue its downloads behind each other
/// and push them past `ROXPI_DOWNLOAD_TIMEOUT` into redirects.
pub const DOWNLOAD_THREADS: usize = 64;
/// Downloads that may wait for a download thread; beyond, the request is
/// redirected to the upstream, or refused (503) when it cannot be.
const DOWNLOAD_QUEUE: usize = 256;
const CHUNK: usize = 256 * 1024;
const BYPASS_FOR: Duration = Duration::from_secs(60);

/// What a requester gets.
pub enum Fetch {
    Hit(Stored),
    /// A download in progress (`joined`: started by another request).
    Download {
        inflight: Arc<InFlight>,
        joined: bool,
    },
    /// No caching for this file now: stream it through.
    StreamThrough,
}

struct Job {
    key: CacheKey,
    source: Source,
    inflight: Arc<InFlight>,
}

pub struct Downloads {
    storage: Arc<dyn Storage>,
    /// The bucket (`s3`, `tiered`): read before the upstream, written after.
    bucket: Option<Arc<Bucket>>,
    /// Uploads to retry (tiered: the L1 copy stays meanwhile).
    retries: Arc<super::upload::Retries>,
    /// Bucket objects this process read whole and verified, or uploaded:
    /// ranges of them are ranged GETs (`bucket_ranges`).
    verified: Mutex<lru::LruCache<CacheKey, Arc<Verified>>>,
    origin: Arc<dyn Origin>,
    clock: Arc<dyn Clock>,
    inflight: Mutex<HashMap<CacheKey, Arc<InFlight>>>,
    /// Upstream file URLs (not hashes: another file may claim the same
    /// hash) streamed through for a while after a local failure.
    bypass: Mutex<HashMap<String, Instant>>,
    jobs: Sender<Job>,
    pub(super) stats: Arc<FileStats>,
    /// Called after a download is committed (set once by `Files`: metadata
    /// synthesis re-checks what it read by ranges).
    on_commit: std::sync::OnceLock<CommitHook>,
}

/// A bucket object known to hold the file its key names.
pub struct Verified {
    object: String,
    len: u64,
    etag: String,
    sha256: Arc<str>,
    at: std::time::SystemTime,
}

/// Verified objects remembered (a few hundred bytes each).
const VERIFIED: usize = 4096;

/// Called with a committed download's key and source.
pub type CommitHook = Box<dyn Fn(&CacheKey, &Source) + Send + Sync>;

impl Downloads {
    pub fn start(
        storage: Arc<dyn Storage>,
        bucket: Option<Arc<Bucket>>,
        origin: Arc<dyn Origin>,
        clock: Arc<dyn Clock>,
        stats: Arc<FileStats>,
        threads: usize,
    ) -> io::Result<Arc<Downloads>> {
        let (jobs, rx) = crossbeam_channel::bounded::<Job>(DOWNLOAD_QUEUE);
        let retries = super::upload::Retries::new();
        if let Some(b) = &bucket {
            super::upload::Retries::start(
                &retries,
                Arc::clone(&storage),
                Arc::clone(b),
                Arc::clone(&stats),
            )?;
        }
        let d = Arc::new(Downloads {
            storage,
            bucket,
            retries,
            verified: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(VERIFIED).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            origin,
            clock,
            inflight: Mutex::new(HashMap::new()),
            bypass: Mutex::new(HashMap::new()),
            jobs,
            stats,
            on_commit: std::sync::OnceLock::new(),
        });
        for i in 0..threads {
            let (weak, rx): (std::sync::Weak<Downloads>, Receiver<Job>) =
                (Arc::downgrade(&d), rx.clone());
            std::thread::Builder::new()
                .name(format!("roxpi-download-{i}"))
                .stack_size(512 * 1024)
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        match weak.upgrade() {
                            Some(d) => d.run(job),
                            None => return,
                        }
                    }
                })?;
        }
        Ok(d)
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    fn map(&self) -> MutexGuard<'_, HashMap<CacheKey, Arc<InFlight>>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A cached file, the download in progress, or a new download.
    pub fn fetch(&self, key: &CacheKey, source: &Source) -> Fetch {
        if let Lookup::Hit(f) = self.storage.lookup(key) {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Fetch::Hit(f);
        }
        {
            let now = self.clock.now();
            let mut bypass = self.bypass.lock().unwrap_or_else(|p| p.into_inner());
            bypass.retain(|_, t| now.saturating_duration_since(*t) < BYPASS_FOR);
            if bypass.contains_key(source.url.as_str()) {
                return Fetch::StreamThrough;
            }
        }
        let joined = |f: &Arc<InFlight>| {
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
            Fetch::Download {
                inflight: Arc::clone(f),
                joined: true,
            }
        };
        if let Some(f) = self.map().get(key).filter(|f| !f.is_failed()) {
            return joined(f);
        }
        // The download may have committed between the lookup and now.
        if let Lookup::Hit(f) = self.storage.lookup(key) {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Fetch::Hit(f);
        }
        let inflight = {
            let mut map = self.map();
            // A failed download left behind (its thread panicked) is
            // replaced, never joined.
            if let Some(f) = map.get(key).filter(|f| !f.is_failed()) {
                return joined(f);
            }
            let f = Arc::new(InFlight::new());
            map.insert(key.clone(), Arc::clone(&f));
            f
        };
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            key: key.clone(),
            source: source.clone(),
            inflight: Arc::clone(&inflight),
        };
        // A full queue is answered at once, never by waiting.
        if self.jobs.try_send(job).is_err() {
            inflight.set(|s| s.phase = Phase::Failed(FileError::Busy));
            self.map().remove(key);
        }
        Fetch::Download {
            inflight,
            joined: false,
        }
    }

    /// The download thread's work for one file.
    fn run(&self, job: Job) {
        let Job {
            key,
            source,
            inflight,
        } = job;
        let mut guard = FailGuard {
            inflight: &inflight,
            armed: true,
        };
        let result = self.download(&key, &source, &inflight);
        if let Err(f) = &result {
            let counter = match f {
                FileError::Verify(_) => &self.stats.verify_failures,
                FileError::Local(_) => &self.stats.write_errors,
                _ => &self.stats.upstream_failures,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if let FileError::Local(e) = f {
                self.stats.write_health.failed(e);
            }
            if matches!(f, FileError::Local(_) | FileError::NoLength) {
                self.bypass
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(source.url.as_str().to_owned(), self.clock.now());
            }
            log::warn!("download of {} failed: {f}", SafeUrl::new(&source.url));
            // Out of the map first: a request that comes once the readers
            // saw the failure starts a new download instead of joining
            // this failed one.
            self.forget(&key, &inflight);
            inflight.set(|s| s.phase = Phase::Failed(f.clone()));
        }
        guard.armed = false;
        // After the commit is visible.
        self.forget(&key, &inflight);
        if result.is_ok() {
            if let Some(hook) = self.on_commit.get() {
                hook(&key, &source);
            }
        }
    }

    /// Sets the hook called after each committed download (once).
    pub fn on_commit(&self, hook: CommitHook) {
        let _ = self.on_commit.set(hook);
    }

    /// Removes `inflight` from the map (if it is still the entry for `key`).
    fn forget(&self, key: &CacheKey, inflight: &Arc<InFlight>) {
        let mut map = self.map();
        if map.get(key).is_some_and(|f| Arc::ptr_eq(f, inflight)) {
            map.remove(key);
        }
    }

    /// Whether a bucket is behind the local side.
    pub fn has_bucket(&self) -> bool {
        self.bucket.is_some()
    }

    pub fn bucket(&self) -> Option<&Arc<Bucket>> {
        self.bucket.as_ref()
    }

    fn remember(
        &self,
        key: &CacheKey,
        object: &str,
        len: u64,
        etag: Option<String>,
        sha256: Arc<str>,
    ) {
        let Some(etag) = etag else { return };
        let v = Verified {
            object: object.to_owned(),
            len,
            etag,
            sha256,
            at: std::time::SystemTime::now(),
        };
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(key.clone(), Arc::new(v));
    }

    /// A file not held locally whose bucket object this process verified:
    /// a `Stored` whose ranges are ranged GETs (opened off the worker).
    pub fn bucket_ranges(&self, key: &CacheKey) -> Option<Stored> {
        let bucket = self.bucket.as_ref()?;
        let v = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()?;
        if let Lookup::Hit(_) = self.storage.lookup(key) {
            return None;
        }
        Some(Stored {
            len: v.len,
            sha256: Arc::clone(&v.sha256),
            modified: v.at,
            body: StoredBody::Remote(Arc::new(s3::ObjectRanges {
                bucket: Arc::clone(bucket),
                object: v.object.clone(),
                etag: v.etag.clone(),
            })),
        })
    }

    /// Forgets a verified object (it failed a ranged read).
    pub fn forget_verified(&self, key: &CacheKey) {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop(key);
    }

    /// Downloads in progress (from the upstream or the bucket).
    pub fn in_flight(&self) -> usize {
        self.map().len()
    }

    /// Uploads waiting for a retry.
    pub fn pending_uploads(&self) -> usize {
        self.retries.len()
    }

    /// The file from the bucket if it has it (verified first), else from
    /// the upstream, then into the bucket. The in-flight entry stays until
    /// the upload is done, so requests meanwhile join it instead of missing
    /// the bucket.
    fn download(
        &self,
        key: &CacheKey,
        source: &Source,
        inflight: &Arc<InFlight>,
    ) -> Result<(), FileError> {
        let Some(bucket) = &self.bucket else {
            return self.fetch_upstream(key, source, inflight).map(|_| ());
        };
        let object = s3::object_for_file(bucket.prefix(), key, &s3::object_filename(&source.url));
        match self.read_bucket(bucket, &object, key, source, inflight) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(BucketRead::S3(e)) => {
                self.stats.bucket_fallbacks.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "bucket read of {object} failed ({e}): fetching {} from the upstream",
                    SafeUrl::new(&source.url)
                );
            }
            Err(BucketRead::Tampered(m)) => {
                self.stats.bucket_mismatches.fetch_add(1, Ordering::Relaxed);
                log::error!(
                    "object {object} in the bucket is not the file its key names ({m}): not served; fetching {} from the upstream to replace it",
                    SafeUrl::new(&source.url)
                );
            }
            Err(BucketRead::Local(e)) => return Err(FileError::local(e)),
        }
        let (file, len) = self.fetch_upstream(key, source, inflight)?;
        if let Some(etag) = self.upload(bucket, &object, key, &file, len) {
            let sha = inflight.sha256().unwrap_or_else(|| "".into());
            self.remember(key, &object, len, Some(etag), sha);
        }
        Ok(())
    }

    /// Reads `object` into the local side, verified before any byte is
    /// served (`Ok(false)`: the bucket does not have it).
    fn read_bucket(
        &self,
        bucket: &Bucket,
        object: &str,
        key: &CacheKey,
        source: &Source,
        inflight: &Arc<InFlight>,
    ) -> Result<bool, BucketRead> {
        let Some(obj) = bucket.get(object, None).map_err(BucketRead::S3)? else {
            return Ok(false);
        };
        if let Some(want) = source.size.filter(|w| *w != obj.len) {
            return Err(BucketRead::Tampered(Mismatch::Length {
                got: obj.len,
                want,
            }));
        }
        inflight.set(|s| s.reading_bucket = true);
        let temp = self
            .storage
            .create(key, obj.len)
            .map_err(BucketRead::Local)?;
        let mut verifier = Verifier::new(&source.hashes);
        let written = match copy_verified(obj.body, &temp, &mut verifier, obj.len, |_| {}) {
            Ok(w) => w,
            Err(Copy::Read(e, written)) => {
                bucket.stats.errors.fetch_add(1, Ordering::Relaxed);
                return Err(BucketRead::S3(s3::S3Error::Unreachable {
                    op: "GetObject",
                    detail: format!("cut after {written} bytes: {e}"),
                }));
            }
            Err(Copy::TooLong) => return Err(BucketRead::Tampered(Mismatch::TooLong(obj.len))),
            Err(Copy::Write(e)) => return Err(BucketRead::Local(e)),
        };
        bucket
            .stats
            .bytes_read
            .fetch_add(written, Ordering::Relaxed);
        if written != obj.len {
            return Err(BucketRead::S3(s3::S3Error::Unreachable {
                op: "GetObject",
                detail: format!("ended at {written} of {} bytes", obj.len),
            }));
        }
        let sha256 = verifier.finish().map_err(BucketRead::Tampered)?;
        self.stats.bucket_hits.fetch_add(1, Ordering::Relaxed);
        let total = obj.len;
        self.remember(key, object, total, obj.etag, sha256.as_str().into());
        inflight.set(|s| s.from_bucket = true);
        self.publish(temp, &sha256, inflight, total, key);
        Ok(true)
    }

    /// Commits a complete, verified temp file (when it is to be kept) and
    /// marks the download done; returns the file to read it from.
    fn publish(
        &self,
        temp: crate::storage::TempFile,
        sha256: &str,
        inflight: &Arc<InFlight>,
        total: u64,
        key: &CacheKey,
    ) -> Arc<std::fs::File> {
        let mut file = Arc::clone(&temp.file);
        let mut wrote = true;
        if temp.is_kept() {
            match self.storage.commit(temp, sha256) {
                Ok(stored) => {
                    if let StoredBody::Local(committed) = stored.body {
                        file = committed;
                    }
                }
                Err(e) => {
                    // Complete and verified: serve it, just do not keep it.
                    self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    self.stats.write_health.failed(&e);
                    wrote = false;
                    log::warn!("cannot commit {}: {e}", key.as_str());
                }
            }
        }
        if wrote {
            // The whole file was written (and kept, if it was to be).
            self.stats.write_health.succeeded();
        }
        let sha: Arc<str> = sha256.into();
        let done = Arc::clone(&file);
        inflight.set(|s| {
            s.phase = Phase::Done { file: done, total };
            s.sha256 = Some(sha);
        });
        file
    }

    /// Puts a new download into the bucket. A failure never loses the
    /// local copy: a kept (L1) file is queued for a retry; a staged one is
    /// retried here a few times, then logged and counted. Returns the new
    /// object's ETag.
    fn upload(
        &self,
        bucket: &Bucket,
        object: &str,
        key: &CacheKey,
        file: &std::fs::File,
        len: u64,
    ) -> Option<String> {
        const TRIES: u32 = 3;
        for attempt in 1..=TRIES {
            match bucket.put_file(object, file, len) {
                Ok(etag) => {
                    self.stats.uploads.fetch_add(1, Ordering::Relaxed);
                    return etag;
                }
                Err(e) => {
                    let kept = matches!(self.storage.lookup(key), Lookup::Hit(_));
                    if kept {
                        log::warn!(
                            "upload of {object} failed ({e}): retried later from the local copy"
                        );
                        self.retries.push(key.clone(), object.to_owned());
                        return None;
                    }
                    if attempt == TRIES {
                        self.stats.upload_failures.fetch_add(1, Ordering::Relaxed);
                        log::error!("upload of {object} failed {TRIES} times ({e}): not in the bucket; the next request fetches it again");
                        return None;
                    }
                    log::warn!("upload of {object} failed ({e}): trying again");
                    std::thread::sleep(Duration::from_millis(500 << attempt));
                }
            }
        }
        None
    }

    /// Downloads from the upstream into the local side, streamed to every
    /// reader, verified; returns the file and its length.
    fn fetch_upstream(
        &self,
        key: &CacheKey,
        source: &Source,
        inflight: &Arc<InFlight>,
    ) -> Result<(Arc<std::fs::File>, u64), FileError> {
        let asked = Instant::now();
        let streamed = self.origin.open_file(&source.index, &source.url, None);
        self.stats.fetch_seconds.observe(asked.elapsed());
        let streamed = streamed?;
        if streamed.status != 200 {
            return Err(OriginError::status(&streamed.final_url, streamed.status).into());
        }
        let total = match (streamed.content_length, source.size) {
            (Some(got), Some(want)) if got != want => {
                return Err(Mismatch::Length { got, want }.into())
            }
            (Some(a), _) => a,
            // Chunked or close-delimited: the index's size is the length,
            // checked like any other (short, long and wrong bodies fail).
            (None, Some(want)) => want,
            (None, None) => return Err(FileError::NoLength),
        };
        let temp = self.storage.create(key, total).map_err(FileError::local)?;
        inflight.set(|s| {
            s.phase = Phase::Streaming {
                file: Arc::clone(&temp.file),
                total,
            }
        });
        let mut verifier = Verifier::new(&source.hashes);
        let url = &streamed.final_url;
        let mut counted = 0;
        let written = copy_verified(streamed.body, &temp, &mut verifier, total, |written| {
            self.stats
                .bytes_fetched
                .fetch_add(written - counted, Ordering::Relaxed);
            counted = written;
            inflight.set(|s| s.written = written);
        })
        .map_err(|e| -> FileError {
            match e {
                Copy::Read(e, _) if e.kind() == io::ErrorKind::TimedOut => {
                    OriginError::timeout(url).into()
                }
                Copy::Read(e, written) => {
                    OriginError::body(url, format!("failed after {written} bytes: {e}")).into()
                }
                Copy::TooLong => Mismatch::TooLong(total).into(),
                Copy::Write(e) => FileError::local(e),
            }
        })?;
        if written != total {
            return Err(
                OriginError::body(url, format!("ended at {written} of {total} bytes")).into(),
            );
        }
        let sha256 = verifier.finish()?;
        Ok((self.publish(temp, &sha256, inflight, total, key), total))
    }
}

/// Why copying a body into a temp file stopped.
enum Copy {
    /// Reading the body failed after this many bytes.
    Read(io::Error, u64),
    /// More bytes than the length.
    TooLong,
    /// Writing the temp file failed.
    Write(io::Error),
}

/// Copies `body` into `temp`, at most `len` bytes, hashing as it goes;
/// calls `progress` with the bytes written after each chunk. Returns the
/// bytes written (the caller checks them against `len`).
fn copy_verified(
    mut body: Box<dyn Read + Send>,
    temp: &crate::storage::TempFile,
    verifier: &mut Verifier,
    len: u64,
    mut progress: impl FnMut(u64),
) -> Result<u64, Copy> {
    let mut buf = vec![0u8; CHUNK];
    let mut written: u64 = 0;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => return Ok(written),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e, written)),
        };
        if written + n as u64 > len {
            return Err(Copy::TooLong);
        }
        verifier.update(&buf[..n]);
        temp.file
            .write_all_at(&buf[..n], written)
            .map_err(Copy::Write)?;
        written += n as u64;
        progress(written);
    }
}

/// Why reading from the bucket failed.
enum BucketRead {
    /// S3 errored or was cut: the upstream serves instead.
    S3(s3::S3Error),
    /// The object is not the file its key names: never served.
    Tampered(Mismatch),
    /// The local side cannot take it.
    Local(io::Error),
}

/// Marks the download failed if its thread unwinds.
struct FailGuard<'a> {
    inflight: &'a Arc<InFlight>,
    armed: bool,
}

impl Drop for FailGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inflight.set(|s| {
                s.phase = Phase::Failed(FileError::local(io::Error::other(
                    "download thread panicked",
                )))
            });
        }
    }
}
