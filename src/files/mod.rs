//! Download coordination: one upstream download per file, streamed to every
//! concurrent requester while it lands on disk, verified before it is
//! committed.
//!
//! - The first request for an uncached file registers an `InFlight` and
//!   queues ONE upstream GET on a bounded pool of 64 download threads; the
//!   download continues when that client disconnects.
//! - The downloader writes each chunk to a temp file, then advances the byte
//!   counter (only after the write returned) and notifies the condvar. Every
//!   requester reads the growing file with `pread` up to that counter, minus
//!   the last byte: the final byte is released only once the length and hash
//!   are verified, so a client never receives a complete-looking wrong file.
//! - On an upstream failure, a length or hash mismatch, or a local write
//!   error, the state becomes `Failed`: every reader's connection is cut,
//!   nothing is committed, and the next request starts again. After a local
//!   write error (disk full) the file is streamed through without caching
//!   for a minute, so a retry succeeds.
//! - A drop guard marks the download failed if its thread unwinds; readers
//!   wait with `wait_timeout`, never forever.
//! - The `InFlight` is removed from the map only after the committed file is
//!   visible in storage, so a request never misses both.
//!
//! Lock order: the `inflight` map lock and an `InFlight`'s state lock are
//! never held together; neither is held across network or disk I/O (the
//! readers' `pread` happens after the state lock is released).

pub mod range;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use sha2::Digest;
use url::Url;

use crate::pypi::Hashes;
use crate::storage::{CacheKey, Lookup, Storage, StoredFile};
use crate::upstream::{Index, Upstream, UpstreamError};

/// Download threads (each holds one upstream connection). uv fetches 50
/// files at once; fewer threads would queue its downloads behind each other
/// and push them past `ROXPI_DOWNLOAD_TIMEOUT` into redirects.
const DOWNLOAD_THREADS: usize = 64;
const CHUNK: usize = 256 * 1024;
const BYPASS_FOR: Duration = Duration::from_secs(60);

/// Why a download failed.
#[derive(Clone, Debug)]
pub enum Failure {
    /// The upstream failed or sent something else than promised.
    Upstream(String),
    /// Length or hash mismatch.
    Verify(String),
    /// Writing the cache failed (disk full, I/O error): stream through.
    Local(String),
    /// The upstream did not announce a length: stream through.
    NoLength,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Upstream(s) => write!(f, "{s}"),
            Failure::Verify(s) => write!(f, "verification failed: {s}"),
            Failure::Local(s) => write!(f, "cache write failed: {s}"),
            Failure::NoLength => write!(f, "the upstream did not send a Content-Length"),
        }
    }
}

enum Phase {
    /// Waiting for the upstream's response headers.
    Starting,
    Streaming {
        file: Arc<File>,
        total: u64,
    },
    Done {
        file: Arc<File>,
        total: u64,
    },
    Failed(Failure),
}

struct State {
    phase: Phase,
    /// Bytes written to the file (and returned by `write`).
    written: u64,
}

/// One download in progress.
pub struct InFlight {
    state: Mutex<State>,
    cv: Condvar,
}

impl InFlight {
    fn new() -> InFlight {
        InFlight {
            state: Mutex::new(State {
                phase: Phase::Starting,
                written: 0,
            }),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data updated in one assignment; poisoning cannot tear it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.cv.notify_all();
    }

    /// Waits until the upstream answered (`Ok(Some)`: a reader of the
    /// growing file and its length), failed (`Err`), or `limit` passed.
    pub fn wait_started(
        self: &Arc<Self>,
        limit: Duration,
    ) -> Result<Option<GrowingReader>, Failure> {
        let deadline = Instant::now() + limit;
        let mut st = self.lock();
        loop {
            match &st.phase {
                Phase::Starting => {}
                Phase::Streaming { file, total } | Phase::Done { file, total } => {
                    return Ok(Some(GrowingReader {
                        inflight: Arc::clone(self),
                        file: Arc::clone(file),
                        total: *total,
                        pos: 0,
                        fallback: None,
                        relay: None,
                    }))
                }
                Phase::Failed(f) => return Err(f.clone()),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            st = self
                .cv
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Reads a file while it is being downloaded; the last byte only after
/// verification; an error (cut) if the download fails — except after a
/// local write error (disk full), when it continues from the upstream with
/// a range request and verifies the whole file itself.
pub struct GrowingReader {
    inflight: Arc<InFlight>,
    file: Arc<File>,
    total: u64,
    pos: u64,
    fallback: Option<(Arc<Upstream>, Source)>,
    relay: Option<Relay>,
}

/// The rest of a file straight from the upstream, hashed with the prefix.
struct Relay {
    body: Box<dyn Read + Send>,
    sha256: sha2::Sha256,
}

impl GrowingReader {
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Lets the reader finish from the upstream if the cache write fails.
    pub fn with_fallback(mut self, upstream: Arc<Upstream>, source: Source) -> GrowingReader {
        self.fallback = Some((upstream, source));
        self
    }

    /// Switches to relaying from the upstream at `pos` (disk trouble).
    fn start_relay(&mut self) -> io::Result<()> {
        let Some((upstream, source)) = &self.fallback else {
            return Err(io::Error::other("cache write failed"));
        };
        let mut sha256 = sha2::Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut at = 0;
        while at < self.pos {
            let want = usize::try_from(self.pos - at)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = self.file.read_at(&mut buf[..want], at)?;
            if n == 0 {
                return Err(io::Error::other("cache file shorter than what was sent"));
            }
            sha256.update(&buf[..n]);
            at += n as u64;
        }
        let range = format!("bytes={}-", self.pos);
        let streamed = upstream
            .open_file(
                &source.index,
                &source.url,
                (self.pos > 0).then_some(range.as_str()),
            )
            .map_err(|e| io::Error::other(e.to_string()))?;
        let expected_start = format!("bytes {}-", self.pos);
        let ok = match streamed.status {
            200 => self.pos == 0,
            206 => streamed
                .content_range
                .as_deref()
                .is_some_and(|c| c.starts_with(&expected_start)),
            _ => false,
        };
        if !ok {
            return Err(io::Error::other(format!(
                "cannot resume from the upstream at byte {} (status {})",
                self.pos, streamed.status
            )));
        }
        log::info!(
            "continuing a download from the upstream at byte {} after a cache write error",
            self.pos
        );
        self.relay = Some(Relay {
            body: streamed.body,
            sha256,
        });
        Ok(())
    }

    fn read_relay(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let expected = self
            .fallback
            .as_ref()
            .and_then(|(_, s)| s.hashes.get("sha256").cloned());
        let Some(relay) = self.relay.as_mut() else {
            return Err(io::Error::other("no relay"));
        };
        if self.pos >= self.total {
            return Ok(0);
        }
        let want = usize::try_from(self.total - self.pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = relay.body.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "upstream ended early",
            ));
        }
        relay.sha256.update(&buf[..n]);
        if self.pos + n as u64 == self.total {
            // The final bytes leave only after the whole file is verified.
            let got = hex::encode(std::mem::take(&mut relay.sha256).finalize());
            if expected.is_some_and(|e| e != got) {
                return Err(io::Error::other("sha256 mismatch"));
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Read for GrowingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.relay.is_some() {
            return self.read_relay(buf);
        }
        let available = {
            let mut st = self.inflight.lock();
            loop {
                let allowed = match &st.phase {
                    Phase::Done { .. } => self.total,
                    Phase::Streaming { .. } | Phase::Starting => {
                        st.written.min(self.total.saturating_sub(1))
                    }
                    Phase::Failed(Failure::Local(_)) if self.fallback.is_some() => {
                        drop(st);
                        self.start_relay()?;
                        return self.read_relay(buf);
                    }
                    Phase::Failed(f) => return Err(io::Error::other(f.to_string())),
                };
                if self.pos < allowed {
                    break allowed;
                }
                if matches!(st.phase, Phase::Done { .. }) {
                    return Ok(0);
                }
                st = self
                    .inflight
                    .cv
                    .wait_timeout(st, Duration::from_secs(1))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        };
        let want = usize::try_from(available - self.pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "cache file shorter than written",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// What a requester gets.
pub enum Fetch {
    Hit(StoredFile),
    /// A download in progress (`joined`: started by another request).
    Download {
        inflight: Arc<InFlight>,
        joined: bool,
    },
    /// No caching for this file now: stream it through.
    StreamThrough,
}

/// What to download.
#[derive(Clone)]
pub struct Source {
    pub index: Index,
    pub url: Url,
    /// Advertised hashes (verification uses sha256, else the strongest sha2).
    pub hashes: Hashes,
    /// Advertised size, if any.
    pub size: Option<u64>,
}

struct Job {
    key: CacheKey,
    source: Source,
    inflight: Arc<InFlight>,
}

/// Counters for the home page.
#[derive(Default, Debug)]
pub struct FileStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub coalesced: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub bytes_served_from_cache: AtomicU64,
    pub verify_failures: AtomicU64,
    pub write_errors: AtomicU64,
    pub upstream_failures: AtomicU64,
}

pub struct Downloads {
    storage: Option<Arc<dyn Storage>>,
    upstream: Arc<Upstream>,
    inflight: Mutex<HashMap<CacheKey, Arc<InFlight>>>,
    bypass: Mutex<HashMap<CacheKey, Instant>>,
    jobs: Sender<Job>,
    pub stats: FileStats,
}

impl Downloads {
    /// `storage` is `None` when the file cache is disabled.
    pub fn start(
        storage: Option<Arc<dyn Storage>>,
        upstream: Arc<Upstream>,
    ) -> io::Result<Arc<Downloads>> {
        let (jobs, rx) = crossbeam_channel::unbounded::<Job>();
        let d = Arc::new(Downloads {
            storage,
            upstream,
            inflight: Mutex::new(HashMap::new()),
            bypass: Mutex::new(HashMap::new()),
            jobs,
            stats: FileStats::default(),
        });
        for i in 0..DOWNLOAD_THREADS {
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

    pub fn storage(&self) -> Option<&Arc<dyn Storage>> {
        self.storage.as_ref()
    }

    fn map(&self) -> MutexGuard<'_, HashMap<CacheKey, Arc<InFlight>>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A cached file, the download in progress, or a new download.
    pub fn fetch(&self, key: &CacheKey, source: &Source) -> Fetch {
        let Some(storage) = &self.storage else {
            return Fetch::StreamThrough;
        };
        if let Lookup::Hit(f) = storage.lookup(key) {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Fetch::Hit(f);
        }
        {
            let mut bypass = self.bypass.lock().unwrap_or_else(|p| p.into_inner());
            bypass.retain(|_, t| t.elapsed() < BYPASS_FOR);
            if bypass.contains_key(key) {
                return Fetch::StreamThrough;
            }
        }
        if let Some(f) = self.map().get(key) {
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
            return Fetch::Download {
                inflight: Arc::clone(f),
                joined: true,
            };
        }
        // The download may have committed between the lookup and now.
        if let Lookup::Hit(f) = storage.lookup(key) {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Fetch::Hit(f);
        }
        let inflight = {
            let mut map = self.map();
            if let Some(f) = map.get(key) {
                self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                return Fetch::Download {
                    inflight: Arc::clone(f),
                    joined: true,
                };
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
        if self.jobs.send(job).is_err() {
            inflight.set(|s| s.phase = Phase::Failed(Failure::Local("no download threads".into())));
            self.map().remove(key);
        }
        Fetch::Download {
            inflight,
            joined: false,
        }
    }

    /// Counts bytes served from committed files.
    pub fn served_from_cache(&self, bytes: u64) {
        self.stats
            .bytes_served_from_cache
            .fetch_add(bytes, Ordering::Relaxed);
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
        match &result {
            Ok(()) => guard.armed = false,
            Err(f) => {
                match f {
                    Failure::Verify(_) => {
                        self.stats.verify_failures.fetch_add(1, Ordering::Relaxed)
                    }
                    Failure::Local(_) => self.stats.write_errors.fetch_add(1, Ordering::Relaxed),
                    _ => self.stats.upstream_failures.fetch_add(1, Ordering::Relaxed),
                };
                if matches!(f, Failure::Local(_) | Failure::NoLength) {
                    self.bypass
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key.clone(), Instant::now());
                }
                log::warn!(
                    "download of {} failed: {f}",
                    crate::config::redact(&source.url)
                );
                inflight.set(|s| s.phase = Phase::Failed(f.clone()));
                guard.armed = false;
            }
        }
        // After the commit (or failure) is visible.
        self.map().remove(&key);
    }

    fn download(
        &self,
        key: &CacheKey,
        source: &Source,
        inflight: &Arc<InFlight>,
    ) -> Result<(), Failure> {
        let storage = self
            .storage
            .as_ref()
            .ok_or_else(|| Failure::Local("file cache disabled".into()))?;
        let streamed = self
            .upstream
            .open_file(&source.index, &source.url, None)
            .map_err(|e: UpstreamError| Failure::Upstream(e.to_string()))?;
        if streamed.status != 200 {
            return Err(Failure::Upstream(format!(
                "upstream {} answered {}",
                crate::config::redact(&streamed.final_url),
                streamed.status
            )));
        }
        let total = match (streamed.content_length, source.size) {
            (Some(a), Some(b)) if a != b => {
                return Err(Failure::Verify(format!(
                    "upstream sends {a} bytes, the index says {b}"
                )))
            }
            (Some(a), _) => a,
            (None, _) => return Err(Failure::NoLength),
        };
        let temp = storage
            .create(key, total)
            .map_err(|e| Failure::Local(e.to_string()))?;
        inflight.set(|s| {
            s.phase = Phase::Streaming {
                file: Arc::clone(&temp.file),
                total,
            }
        });
        let mut body = streamed.body;
        let mut sha256 = sha2::Sha256::new();
        let mut other = Verifier::for_hashes(&source.hashes);
        let mut buf = vec![0u8; CHUNK];
        let mut written: u64 = 0;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Failure::Upstream(format!(
                        "upstream body failed after {written} bytes: {e}"
                    )))
                }
            };
            if written + n as u64 > total {
                return Err(Failure::Verify(format!(
                    "upstream sent more than {total} bytes"
                )));
            }
            let chunk = &buf[..n];
            sha256.update(chunk);
            other.update(chunk);
            temp.file
                .write_all_at(chunk, written)
                .map_err(|e| Failure::Local(e.to_string()))?;
            written += n as u64;
            self.stats
                .bytes_fetched
                .fetch_add(n as u64, Ordering::Relaxed);
            inflight.set(|s| s.written = written);
        }
        if written != total {
            return Err(Failure::Upstream(format!(
                "upstream body ended at {written} of {total} bytes"
            )));
        }
        let sha256 = hex::encode(sha256.finalize());
        if let Some(expected) = source.hashes.get("sha256") {
            if *expected != sha256 {
                return Err(Failure::Verify(format!(
                    "sha256 {sha256} != advertised {expected}"
                )));
            }
        } else {
            other.check()?;
        }
        let file = Arc::clone(&temp.file);
        if temp.is_kept() {
            match storage.commit(temp, &sha256) {
                Ok(stored) => {
                    inflight.set(|s| {
                        s.phase = Phase::Done {
                            file: stored.file,
                            total,
                        }
                    });
                    return Ok(());
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
                s.phase = Phase::Failed(Failure::Local("download thread panicked".into()))
            });
        }
    }
}

/// Checks the strongest advertised sha2 hash other than sha256; for an
/// unknown algorithm only the length is checked.
enum Verifier {
    None,
    Sha512(sha2::Sha512, String),
    Sha384(sha2::Sha384, String),
    Sha224(sha2::Sha224, String),
}

impl Verifier {
    fn for_hashes(h: &Hashes) -> Verifier {
        if let Some(v) = h.get("sha512") {
            Verifier::Sha512(sha2::Sha512::new(), v.clone())
        } else if let Some(v) = h.get("sha384") {
            Verifier::Sha384(sha2::Sha384::new(), v.clone())
        } else if let Some(v) = h.get("sha224") {
            Verifier::Sha224(sha2::Sha224::new(), v.clone())
        } else {
            Verifier::None
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Verifier::None => {}
            Verifier::Sha512(h, _) => h.update(data),
            Verifier::Sha384(h, _) => h.update(data),
            Verifier::Sha224(h, _) => h.update(data),
        }
    }

    fn check(self) -> Result<(), Failure> {
        let (name, got, want) = match self {
            Verifier::None => return Ok(()),
            Verifier::Sha512(h, w) => ("sha512", hex::encode(h.finalize()), w),
            Verifier::Sha384(h, w) => ("sha384", hex::encode(h.finalize()), w),
            Verifier::Sha224(h, w) => ("sha224", hex::encode(h.finalize()), w),
        };
        if got == want {
            Ok(())
        } else {
            Err(Failure::Verify(format!(
                "{name} {got} != advertised {want}"
            )))
        }
    }
}
