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
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::error::{FileError, Mismatch};
use super::inflight::{Done, InFlight};
use super::{FileStats, Source};
use crate::clock::Clock;
use crate::origin::{Origin, OriginError};
use crate::redact::SafeUrl;
use crate::storage::verify::{copy_verified, Copy, Verifier};
use crate::storage::{
    commit_or_serve, CacheKey, Item, LoadError, Lookup, Storage, Stored, StoredBody, Want,
};

/// Download threads (each holds one upstream connection). uv fetches 50
/// files at once; fewer threads would queue its downloads behind each other
/// and push them past `ROXPI_DOWNLOAD_TIMEOUT` into redirects.
pub const DOWNLOAD_THREADS: usize = 64;
/// Downloads that may wait for a download thread; beyond, the request is
/// redirected to the upstream, or refused (503) when it cannot be.
const DOWNLOAD_QUEUE: usize = 256;
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
    /// Whether the storage has a remote tier (read before the upstream,
    /// written after).
    remote: bool,
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

/// Called with a committed download's key and source.
pub type CommitHook = Box<dyn Fn(&CacheKey, &Source) + Send + Sync>;

impl Downloads {
    pub fn start(
        storage: Arc<dyn Storage>,
        origin: Arc<dyn Origin>,
        clock: Arc<dyn Clock>,
        stats: Arc<FileStats>,
        threads: usize,
    ) -> io::Result<Arc<Downloads>> {
        let (jobs, rx) = crossbeam_channel::bounded::<Job>(DOWNLOAD_QUEUE);
        let d = Arc::new(Downloads {
            remote: storage.remote().is_some(),
            storage,
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
        crate::lock(&self.inflight)
    }

    /// A cached file, the download in progress, or a new download.
    pub fn fetch(&self, key: &CacheKey, source: &Source) -> Fetch {
        if let Lookup::Hit(f) = self.storage.lookup(key) {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Fetch::Hit(f);
        }
        {
            let now = self.clock.now();
            let mut bypass = crate::lock(&self.bypass);
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
            inflight.finish(Err(FileError::Busy));
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
                crate::lock(&self.bypass).insert(source.url.as_str().to_owned(), self.clock.now());
            }
            log::warn!("download of {} failed: {f}", SafeUrl::new(&source.url));
            // Out of the map first: a request that comes once the readers
            // saw the failure starts a new download instead of joining
            // this failed one.
            self.forget(&key, &inflight);
            inflight.finish(Err(f.clone()));
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

    /// Whether a remote tier (the bucket) is behind the local side.
    pub fn has_remote(&self) -> bool {
        self.remote
    }

    /// A file not held locally whose remote object this process verified:
    /// a `Stored` whose ranges are ranged GETs (opened off the worker).
    pub fn remote_ranges(&self, key: &CacheKey) -> Option<Stored> {
        self.storage.ranges(key)
    }

    /// Forgets a verified remote object (it failed a ranged read).
    pub fn forget_remote(&self, key: &CacheKey) {
        self.storage.forget(key);
    }

    /// Downloads in progress (from the upstream or the bucket).
    pub fn in_flight(&self) -> usize {
        self.map().len()
    }

    /// The file from the remote tier if it has it (verified first), else
    /// from the upstream, then into the remote tier. The in-flight entry
    /// stays until that is done, so requests meanwhile join it instead of
    /// missing the bucket.
    fn download(
        &self,
        key: &CacheKey,
        source: &Source,
        inflight: &Arc<InFlight>,
    ) -> Result<(), FileError> {
        let item = Item::file(key.clone(), &source.url);
        if self.remote {
            let want = Want {
                len: source.size,
                hashes: &source.hashes,
                max: u64::MAX,
            };
            let started = || inflight.update(|p| p.reading_bucket = true);
            match self.storage.load(&item, &want, &started) {
                Ok(Some(stored)) => {
                    inflight.update(|p| p.from_bucket = true);
                    self.done(inflight, stored);
                    return Ok(());
                }
                Ok(None) => {}
                Err(LoadError::Remote(e)) => log::warn!(
                    "{e}: fetching {} from the upstream",
                    SafeUrl::new(&source.url)
                ),
                Err(LoadError::Tampered(m)) => log::error!(
                    "the bucket's object for {} is not the file its key names ({m}): not served; fetching it from the upstream to replace it",
                    SafeUrl::new(&source.url)
                ),
                Err(LoadError::Local(e)) => return Err(FileError::local(e)),
            }
        }
        let stored = self.fetch_upstream(&item, source, inflight)?;
        self.storage.share(&item, &stored);
        Ok(())
    }

    /// Commits a complete, verified temp file (when it is to be kept) and
    /// marks the download done. A failed commit still serves the file.
    fn publish(
        &self,
        temp: crate::storage::TempFile,
        sha256: &str,
        inflight: &Arc<InFlight>,
    ) -> Stored {
        let (stored, error) = commit_or_serve(&*self.storage, temp, sha256);
        match error {
            Some(e) => {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                self.stats.write_health.failed(&e);
                log::warn!("cannot commit {sha256}: {e}");
            }
            // The whole file was written (and kept, if it was to be).
            None => self.stats.write_health.succeeded(),
        }
        self.done(inflight, stored.clone());
        stored
    }

    /// Marks the download done: every reader reads `stored` to its end.
    fn done(&self, inflight: &Arc<InFlight>, stored: Stored) {
        let StoredBody::Local(file) = stored.body else {
            // Never: the local side commits to files.
            inflight.finish(Err(FileError::local(io::Error::other(
                "the storage returned no local file",
            ))));
            return;
        };
        inflight.finish(Ok(Done {
            file,
            total: stored.len,
            sha256: stored.sha256,
        }));
    }

    /// Downloads from the upstream into the local side, streamed to every
    /// reader, verified; returns the file and its length.
    fn fetch_upstream(
        &self,
        item: &Item,
        source: &Source,
        inflight: &Arc<InFlight>,
    ) -> Result<Stored, FileError> {
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
        let temp = self.storage.create(item, total).map_err(FileError::local)?;
        inflight.update(|p| p.file = Some((Arc::clone(&temp.file), total)));
        let mut verifier = Verifier::new(&source.hashes);
        let url = &streamed.final_url;
        let mut counted = 0;
        let written = copy_verified(streamed.body, &temp, &mut verifier, total, |written| {
            self.stats
                .bytes_fetched
                .fetch_add(written - counted, Ordering::Relaxed);
            counted = written;
            inflight.update(|p| p.written = written);
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
        Ok(self.publish(temp, &sha256, inflight))
    }
}

/// Marks the download failed if its thread unwinds.
struct FailGuard<'a> {
    inflight: &'a Arc<InFlight>,
    armed: bool,
}

impl Drop for FailGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inflight.finish(Err(FileError::local(io::Error::other(
                "download thread panicked",
            ))));
        }
    }
}
