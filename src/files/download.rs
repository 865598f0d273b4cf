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
use crate::storage::{CacheKey, Lookup, Storage, Stored};

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

    fn download(
        &self,
        key: &CacheKey,
        source: &Source,
        inflight: &Arc<InFlight>,
    ) -> Result<(), FileError> {
        let streamed = self.origin.open_file(&source.index, &source.url, None)?;
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
        let mut body = streamed.body;
        let mut verifier = Verifier::new(&source.hashes);
        let mut buf = vec![0u8; CHUNK];
        let mut written: u64 = 0;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(OriginError::timeout(&streamed.final_url).into())
                }
                Err(e) => {
                    return Err(OriginError::body(
                        &streamed.final_url,
                        format!("failed after {written} bytes: {e}"),
                    )
                    .into())
                }
            };
            if written + n as u64 > total {
                return Err(Mismatch::TooLong(total).into());
            }
            let chunk = &buf[..n];
            verifier.update(chunk);
            temp.file
                .write_all_at(chunk, written)
                .map_err(FileError::local)?;
            written += n as u64;
            self.stats
                .bytes_fetched
                .fetch_add(n as u64, Ordering::Relaxed);
            inflight.set(|s| s.written = written);
        }
        if written != total {
            return Err(OriginError::body(
                &streamed.final_url,
                format!("ended at {written} of {total} bytes"),
            )
            .into());
        }
        let sha256 = verifier.finish()?;
        let file = Arc::clone(&temp.file);
        if temp.is_kept() {
            match self.storage.commit(temp, &sha256) {
                Ok(stored) => {
                    if let crate::storage::StoredBody::Local(committed) = stored.body {
                        inflight.set(|s| {
                            s.phase = Phase::Done {
                                file: committed,
                                total,
                            }
                        });
                        return Ok(());
                    }
                }
                Err(e) => {
                    // Complete and verified: serve it, just do not keep it.
                    self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    log::warn!("cannot commit {}: {e}", key.as_str());
                }
            }
        }
        inflight.set(|s| s.phase = Phase::Done { file, total });
        Ok(())
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
            self.inflight.set(|s| {
                s.phase = Phase::Failed(FileError::local(io::Error::other(
                    "download thread panicked",
                )))
            });
        }
    }
}
