// Size: one concept (PEP 658 metadata made here: its pool, range reads, storage and recheck).
//! PEP 658 metadata synthesis: `<wheel>.metadata` for wheels the upstream
//! lists without it (pypiserver, devpi, Nexus, many mirrors), made once and
//! cached for every client.
//!
//! A synthesis runs on its own small pool (it waits on the network; a
//! request worker never does) and is single-flight per wheel: concurrent
//! requests park on it. In order of preference the METADATA comes from
//! 1. the wheel in the file cache (its zip central directory, then the one
//!    entry);
//! 2. range requests to the upstream (the tail, then exactly what the
//!    central directory points at, streamed; see `wheel` for the bounds);
//! 3. when the upstream ignores `Range`, the normal coalesced download of
//!    the whole wheel into the cache, then (1).
//!
//! The result is stored in the file cache under a key derived from the
//! wheel's (counted in the cap like any file), and its sha256 is advertised
//! on the pages from then on. A wheel whose METADATA cannot be read (not a
//! zip, no dist-info) is remembered as broken: `.metadata` answers 404 and
//! the pages stop advertising it, so a client never loops on it.
//!
//! Trust: metadata from range reads is trusted as far as the page is (the
//! wheel's hash cannot be checked on a part of it); when the whole wheel is
//! downloaded and verified later, its METADATA is compared again and a
//! mismatch replaces the stored one (`recheck`).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use lru::LruCache;
use sha2::{Digest, Sha256};
use url::Url;

use super::download::{Downloads, Fetch};
use super::error::FileError;
use super::Source;
use crate::origin::{Index, Origin, OriginError};
use crate::pypi::{CoreMetadata, FileEntry, Hashes};
use crate::storage::{CacheKey, Lookup, Storage, Stored, StoredBody};
use crate::wheel::{read_metadata, InMemory, OnDisk, ReadAt, WheelError};

/// Threads making metadata, and syntheses that may wait for one. While
/// every thread works on a synthesis nobody waits for any more (its reads
/// cannot be interrupted), up to `THREADS` more start for new work, and
/// end when idle.
const THREADS: usize = 4;
const MAX_THREADS: usize = 2 * THREADS;
const QUEUE: usize = 64;
/// Wheels whose metadata state is remembered (hash or broken).
const REMEMBERED: usize = 100_000;
/// How long a synthesis may wait for a whole-wheel download.
const DOWNLOAD_WAIT: Duration = Duration::from_secs(300);

/// What is known about a wheel's synthesized metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Known {
    /// Stored; its sha256.
    Made(String),
    /// The wheel has no readable METADATA.
    Broken,
}

/// How a synthesis ended.
#[derive(Clone)]
pub enum Made {
    Stored(Stored),
    /// The wheel has no readable METADATA (404).
    Broken(String),
    /// The upstream or the disk failed (mapped like any file failure).
    Failed(Arc<FileError>),
}

/// How long a new synthesis counts as wanted before its first request has
/// subscribed (it parks right after `begin`).
const GRACE: Duration = Duration::from_secs(1);

/// One synthesis in progress, shared by every request for it.
pub type Flight = crate::flight::Flight<Made>;

/// A wheel to make metadata for.
struct Job {
    wheel: CacheKey,
    source: Source,
    filename: String,
    flight: Arc<Flight>,
}

/// Counters for `/metrics`.
#[derive(Default, Debug)]
pub struct SynthStats {
    /// Metadata files made (from a cached wheel or range reads).
    pub made: AtomicU64,
    /// Made by range requests to the upstream, and the bytes they read.
    pub by_ranges: AtomicU64,
    pub range_bytes: AtomicU64,
    /// Made after downloading the whole wheel (the upstream ignored Range).
    pub by_download: AtomicU64,
    /// Wheels without readable METADATA.
    pub broken: AtomicU64,
    /// Range-read metadata replaced after the whole wheel was verified.
    pub replaced: AtomicU64,
    /// Syntheses dropped because no request waited for them any more.
    pub abandoned: AtomicU64,
}

pub struct Synthesizer {
    storage: Arc<dyn Storage>,
    origin: Arc<dyn Origin>,
    downloads: Arc<Downloads>,
    known: Mutex<LruCache<CacheKey, Known>>,
    /// Changes whenever an advertisement changes (pages are re-rendered).
    generation: AtomicU64,
    flights: Mutex<HashMap<CacheKey, Arc<Flight>>>,
    pool: Arc<Pool>,
    pub stats: SynthStats,
}

/// The synthesis threads' queue. Threads hold the pool, not the
/// synthesizer: when it goes, `closed` ends them.
#[derive(Default)]
struct Pool {
    state: Mutex<PoolState>,
    ready: Condvar,
}

#[derive(Default)]
struct PoolState {
    jobs: VecDeque<Job>,
    /// The syntheses the threads work on now.
    running: Vec<Arc<Flight>>,
    threads: usize,
    idle: usize,
    closed: bool,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        crate::lock(&self.state)
    }

    /// The next job, or `None` when this thread should end (the pool is
    /// closed, or it is an extra thread with nothing to do).
    fn next(&self) -> Option<Job> {
        let mut st = self.lock();
        loop {
            if st.closed {
                return None;
            }
            if let Some(job) = st.jobs.pop_front() {
                st.running.push(Arc::clone(&job.flight));
                return Some(job);
            }
            if st.threads > THREADS {
                st.threads -= 1;
                return None;
            }
            st.idle += 1;
            st = self.ready.wait(st).unwrap_or_else(|p| p.into_inner());
            st.idle -= 1;
        }
    }

    fn done(&self, flight: &Arc<Flight>) {
        self.lock().running.retain(|f| !Arc::ptr_eq(f, flight));
    }
}

impl Drop for Synthesizer {
    fn drop(&mut self) {
        self.pool.lock().closed = true;
        self.pool.ready.notify_all();
    }
}

/// The key the metadata of the wheel stored under `wheel` is kept under.
pub fn metadata_key(wheel: &CacheKey) -> CacheKey {
    let digest = Sha256::digest(format!("metadata:{}", wheel.as_str()).as_bytes());
    CacheKey::parse(&hex::encode(digest)).unwrap_or_else(|| wheel.clone())
}

/// Whether `entry` is a wheel the upstream lists without metadata.
pub fn wants_synthesis(entry: &FileEntry) -> bool {
    matches!(entry.core_metadata, CoreMetadata::Absent)
        && entry
            .filename
            .as_str()
            .to_ascii_lowercase()
            .ends_with(".whl")
}

impl Synthesizer {
    pub fn start(
        storage: Arc<dyn Storage>,
        origin: Arc<dyn Origin>,
        downloads: Arc<Downloads>,
    ) -> io::Result<Arc<Synthesizer>> {
        let synth = Arc::new(Synthesizer {
            storage,
            origin,
            downloads,
            known: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(REMEMBERED).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            generation: AtomicU64::new(0),
            flights: Mutex::new(HashMap::new()),
            pool: Arc::new(Pool::default()),
            stats: SynthStats::default(),
        });
        for _ in 0..THREADS {
            synth.pool.lock().threads += 1;
            synth.spawn_thread()?;
        }
        Ok(synth)
    }

    fn spawn_thread(self: &Arc<Self>) -> io::Result<()> {
        let (weak, pool) = (Arc::downgrade(self), Arc::clone(&self.pool));
        let n = self.pool.lock().threads;
        let spawned = std::thread::Builder::new()
            .name(format!("roxpi-metadata-{n}"))
            .spawn(move || {
                while let Some(job) = pool.next() {
                    let Some(s) = weak.upgrade() else { return };
                    let flight = Arc::clone(&job.flight);
                    let made = if flight.wanted(GRACE) {
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.run(&job)))
                            .unwrap_or_else(|_| {
                                Made::Failed(Arc::new(local(io::Error::other(
                                    "internal error while making metadata",
                                ))))
                            })
                    } else {
                        s.stats.abandoned.fetch_add(1, Ordering::Relaxed);
                        Made::Failed(Arc::new(FileError::Busy))
                    };
                    s.finish(job, made);
                    pool.done(&flight);
                }
            });
        if let Err(e) = spawned {
            self.pool.lock().threads -= 1;
            return Err(e);
        }
        Ok(())
    }

    fn known(&self) -> MutexGuard<'_, LruCache<CacheKey, Known>> {
        crate::lock(&self.known)
    }

    fn remember(&self, wheel: &CacheKey, k: Known) {
        if self.known().put(wheel.clone(), k.clone()).as_ref() != Some(&k) {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Changes whenever what the pages advertise changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// What to advertise for a wheel listed without metadata: `None` if it
    /// is broken, else its metadata's hashes (empty = `true`) once known.
    pub fn advertise(&self, entry: &FileEntry) -> Option<Hashes> {
        let wheel = wheel_key(entry);
        match self.known().peek(&wheel) {
            Some(Known::Broken) => None,
            Some(Known::Made(sha)) => Some(Hashes::from([("sha256".to_owned(), sha.clone())])),
            None => Some(Hashes::new()),
        }
    }

    /// Whether `.metadata` of this wheel is known to be unavailable.
    pub fn is_broken(&self, entry: &FileEntry) -> bool {
        self.known().peek(&wheel_key(entry)) == Some(&Known::Broken)
    }

    /// The stored metadata of `entry`'s wheel, if made already.
    pub fn stored(&self, entry: &FileEntry) -> Option<Stored> {
        let wheel = wheel_key(entry);
        match self.storage.lookup(&metadata_key(&wheel)) {
            Lookup::Hit(f) => {
                self.remember(&wheel, Known::Made(f.sha256.to_string()));
                Some(f)
            }
            Lookup::Miss => None,
        }
    }

    /// The synthesis for `entry`'s wheel: the one in progress, or a new
    /// one. `Err(Busy)` when the queue is full.
    pub fn begin(
        self: &Arc<Self>,
        source: Source,
        entry: &FileEntry,
    ) -> Result<Arc<Flight>, FileError> {
        let wheel = wheel_key(entry);
        let mut flights = crate::lock(&self.flights);
        if let Some(f) = flights.get(&wheel) {
            return Ok(Arc::clone(f));
        }
        let flight = Arc::new(Flight::default());
        let job = Job {
            wheel: wheel.clone(),
            source,
            filename: entry.filename.as_str().to_owned(),
            flight: Arc::clone(&flight),
        };
        let (dropped, spawn) = {
            let mut pool = self.pool.lock();
            // A full queue first sheds what nobody waits for any more.
            let dropped: Vec<Job> = if pool.jobs.len() >= QUEUE {
                let (keep, dropped): (Vec<Job>, Vec<Job>) = std::mem::take(&mut pool.jobs)
                    .into_iter()
                    .partition(|j| j.flight.wanted(GRACE));
                pool.jobs = keep.into();
                dropped
            } else {
                Vec::new()
            };
            let accepted = pool.jobs.len() < QUEUE;
            if accepted {
                pool.jobs.push_back(job);
            }
            // Every thread stuck on abandoned work: one more, bounded.
            let spawn = accepted
                && pool.idle == 0
                && pool.threads < MAX_THREADS
                && pool.running.iter().all(|f| !f.wanted(GRACE));
            if spawn {
                pool.threads += 1;
            }
            (dropped, accepted.then_some(spawn))
        };
        for j in &dropped {
            flights.remove(&j.wheel);
        }
        let Some(spawn) = spawn else {
            drop(flights);
            self.shed(dropped);
            return Err(FileError::Busy);
        };
        flights.insert(wheel, Arc::clone(&flight));
        drop(flights);
        self.pool.ready.notify_one();
        self.shed(dropped);
        if spawn {
            if let Err(e) = self.spawn_thread() {
                log::warn!("cannot start another metadata thread: {e}");
            }
        }
        Ok(flight)
    }

    /// Ends queued syntheses nobody waits for.
    fn shed(&self, dropped: Vec<Job>) {
        for job in dropped {
            self.stats.abandoned.fetch_add(1, Ordering::Relaxed);
            job.flight.complete(Made::Failed(Arc::new(FileError::Busy)));
        }
    }

    fn finish(&self, job: Job, made: Made) {
        crate::lock(&self.flights).remove(&job.wheel);
        job.flight.complete(made);
    }

    /// A synthesis thread's work.
    fn run(&self, job: &Job) -> Made {
        let extracted = self.extract(job);
        let bytes = match extracted {
            Ok(b) => b,
            Err(Failure::Broken(why)) => {
                self.stats.broken.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "{}: no metadata can be made ({why}); .metadata answers 404",
                    job.filename
                );
                self.remember(&job.wheel, Known::Broken);
                return Made::Broken(why);
            }
            Err(Failure::Failed(e)) => return Made::Failed(Arc::new(e)),
        };
        match self.store(&job.wheel, &bytes) {
            Ok(stored) => {
                self.stats.made.fetch_add(1, Ordering::Relaxed);
                Made::Stored(stored)
            }
            Err(e) => Made::Failed(Arc::new(local(e))),
        }
    }

    /// The METADATA bytes: from the cached wheel, by ranges, or after a
    /// whole download.
    fn extract(&self, job: &Job) -> Result<Vec<u8>, Failure> {
        if let Lookup::Hit(wheel) = self.storage.lookup(&job.wheel) {
            return from_stored(&wheel, &job.filename);
        }
        let by_ranges =
            RangeReader::new(&*self.origin, &job.source, &job.flight).and_then(|mut reader| {
                let got = read_metadata(&mut reader, &job.filename);
                self.stats
                    .range_bytes
                    .fetch_add(reader.fetched, Ordering::Relaxed);
                got.map_err(|e| range_failure(e, &job.source.url))
            });
        match by_ranges {
            Ok(bytes) => {
                self.stats.by_ranges.fetch_add(1, Ordering::Relaxed);
                return Ok(bytes);
            }
            Err(f) if is_range_ignored(&f) => log::info!(
                "{}: the upstream ignores Range; downloading the wheel for its metadata",
                job.filename
            ),
            Err(f) => return Err(f),
        }
        // The upstream ignores Range: the whole wheel, coalesced and
        // verified like any download.
        match self.downloads.fetch(&job.wheel, &job.source) {
            Fetch::Hit(_) => {}
            Fetch::Download { inflight, .. } => {
                inflight
                    .wait_done(DOWNLOAD_WAIT)
                    .map_err(Failure::Failed)?
                    .ok_or_else(|| Failure::Failed(OriginError::timeout(&job.source.url).into()))?;
            }
            Fetch::StreamThrough => {
                return Err(Failure::Failed(local(io::Error::other(
                    "the wheel cannot be cached now",
                ))))
            }
        }
        self.stats.by_download.fetch_add(1, Ordering::Relaxed);
        match self.storage.lookup(&job.wheel) {
            Lookup::Hit(wheel) => from_stored(&wheel, &job.filename),
            Lookup::Miss => Err(Failure::Failed(local(io::Error::other(
                "the downloaded wheel was not kept",
            )))),
        }
    }

    /// Stores `bytes` as the metadata of `wheel` and remembers its hash.
    fn store(&self, wheel: &CacheKey, bytes: &[u8]) -> io::Result<Stored> {
        let key = metadata_key(wheel);
        let sha = hex::encode(Sha256::digest(bytes));
        let item = crate::storage::Item::File {
            key,
            filename: "METADATA".into(),
        };
        let temp = self.storage.create(&item, bytes.len() as u64)?;
        if !temp.is_kept() {
            return Err(io::Error::other("no room to keep the metadata"));
        }
        (&*temp.file).write_all(bytes)?;
        let stored = self.storage.commit(temp, &sha)?;
        self.remember(wheel, Known::Made(sha));
        Ok(stored)
    }

    /// After the whole wheel was downloaded and verified: its METADATA is
    /// compared with stored metadata that came from range reads, and
    /// replaces it if it differs.
    pub fn recheck(&self, wheel: &CacheKey, filename: &str) {
        let Lookup::Hit(made) = self.storage.lookup(&metadata_key(wheel)) else {
            return;
        };
        let Lookup::Hit(whole) = self.storage.lookup(wheel) else {
            return;
        };
        let Ok(bytes) = from_stored(&whole, filename) else {
            return;
        };
        let sha = hex::encode(Sha256::digest(&bytes));
        if *made.sha256 != *sha {
            match self.store(wheel, &bytes) {
                Ok(_) => {
                    self.stats.replaced.fetch_add(1, Ordering::Relaxed);
                    log::warn!(
                        "{filename}: metadata read by ranges differs from the verified wheel's; replaced"
                    );
                }
                Err(e) => log::warn!("{filename}: cannot replace its differing metadata: {e}"),
            }
        }
    }
}

/// The cache key of a listed file (as the download path derives it).
pub fn wheel_key(entry: &FileEntry) -> CacheKey {
    CacheKey::derive(entry.hashes.get("sha256").map(String::as_str), &entry.url)
}

fn local(e: io::Error) -> FileError {
    FileError::Local(Arc::new(e))
}

enum Failure {
    Broken(String),
    Failed(FileError),
}

/// Why metadata by range reads failed. Every read error there is the
/// upstream's (the reader is remote): a `502`, never a local `503`.
fn range_failure(e: WheelError, url: &Url) -> Failure {
    match e {
        WheelError::Io(io) if io.kind() == io::ErrorKind::Unsupported => range_ignored(),
        WheelError::Io(io) => {
            let text = io.to_string();
            match io.into_inner().map(|e| e.downcast::<OriginError>()) {
                Some(Ok(origin)) => Failure::Failed((*origin).into()),
                _ => Failure::Failed(OriginError::body(url, text).into()),
            }
        }
        other => other.into(),
    }
}

fn range_ignored() -> Failure {
    Failure::Failed(local(io::Error::new(
        io::ErrorKind::Unsupported,
        "range ignored",
    )))
}

fn is_range_ignored(f: &Failure) -> bool {
    matches!(f, Failure::Failed(FileError::Local(e)) if e.kind() == io::ErrorKind::Unsupported)
}

impl From<WheelError> for Failure {
    fn from(e: WheelError) -> Failure {
        if e.is_permanent() {
            Failure::Broken(e.to_string())
        } else {
            Failure::Failed(local(io::Error::other(e.to_string())))
        }
    }
}

impl From<OriginError> for Failure {
    fn from(e: OriginError) -> Failure {
        Failure::Failed(e.into())
    }
}

fn from_stored(stored: &Stored, filename: &str) -> Result<Vec<u8>, Failure> {
    let result = match &stored.body {
        StoredBody::Local(file) => OnDisk::new(file)
            .map_err(WheelError::Io)
            .and_then(|mut disk| read_metadata(&mut disk, filename)),
        StoredBody::Memory(bytes) => read_metadata(&mut InMemory(bytes), filename),
        StoredBody::Remote(_) => {
            return Err(Failure::Failed(local(io::Error::other(
                "metadata from a remote stored wheel is not supported",
            ))))
        }
    };
    result.map_err(Failure::from)
}

/// An upstream file read by ranges: the tail first (it tells the length,
/// and usually holds the central directory and the METADATA entry), then
/// exactly the ranges the reader asks for, streamed. Only the tail is
/// kept. A `200` to a range request (Range ignored) is an `Unsupported`
/// error; every other failure carries its `OriginError`.
struct RangeReader<'a> {
    origin: &'a dyn Origin,
    /// No further range is asked for once nobody waits for the result.
    flight: &'a Flight,
    index: &'a Index,
    url: &'a Url,
    len: u64,
    tail_start: u64,
    tail: Vec<u8>,
    /// Body bytes asked for.
    fetched: u64,
}

impl<'a> RangeReader<'a> {
    fn new(
        origin: &'a dyn Origin,
        source: &'a Source,
        flight: &'a Flight,
    ) -> Result<RangeReader<'a>, Failure> {
        let mut r = RangeReader {
            origin,
            flight,
            index: &source.index,
            url: &source.url,
            len: 0,
            tail_start: 0,
            tail: Vec::new(),
            fetched: 0,
        };
        let tail = crate::wheel::TAIL;
        let (start, body, total) = r
            .get(&format!("bytes=-{tail}"), tail)
            .map_err(|e| match e {
                Ranged::Ignored => range_ignored(),
                Ranged::Failed(e) => e.into(),
            })?;
        let mut bytes = Vec::with_capacity(usize::try_from(tail).unwrap_or(0));
        body.take(tail + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::from(OriginError::body(r.url, e.to_string())))?;
        if start.checked_add(bytes.len() as u64) != Some(total) {
            return Err(OriginError::body(r.url, "short range body").into());
        }
        (r.len, r.tail_start, r.tail) = (total, start, bytes);
        Ok(r)
    }

    /// One ranged GET of at most `most` bytes: (first byte, body, total
    /// length).
    fn get(&mut self, range: &str, most: u64) -> Result<(u64, Box<dyn Read + Send>, u64), Ranged> {
        let streamed = self
            .origin
            .open_file(self.index, self.url, Some(range))
            .map_err(Ranged::Failed)?;
        match streamed.status {
            206 => {}
            // The whole file: this upstream ignores Range.
            200 => return Err(Ranged::Ignored),
            st => return Err(Ranged::Failed(OriginError::status(self.url, st))),
        }
        let (start, end, total) = streamed
            .content_range
            .as_deref()
            .and_then(parse_content_range)
            .ok_or_else(|| {
                Ranged::Failed(OriginError::garbage(
                    self.url,
                    "206 without a usable Content-Range",
                ))
            })?;
        if end - start + 1 > most {
            // A hostile or broken upstream must not make us read or
            // allocate what it claims.
            return Err(Ranged::Failed(OriginError::garbage(
                self.url,
                "range answer larger than asked",
            )));
        }
        self.fetched += end - start + 1;
        Ok((start, streamed.body, total))
    }
}

impl ReadAt for RangeReader<'_> {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, offset: u64, len: u64) -> io::Result<Box<dyn Read + '_>> {
        let held = offset.checked_sub(self.tail_start).and_then(|from| {
            let from = usize::try_from(from).ok()?;
            let to = from.checked_add(usize::try_from(len).ok()?)?;
            (to <= self.tail.len()).then_some(from..to)
        });
        if let Some(range) = held {
            return Ok(Box::new(&self.tail[range]));
        }
        if !self.flight.wanted(GRACE) {
            return Err(io::Error::other("nobody waits for this metadata any more"));
        }
        let last = offset
            .checked_add(len)
            .and_then(|e| e.checked_sub(1))
            .filter(|l| *l < self.len)
            .ok_or_else(|| io::Error::other("a read past the end of the wheel"))?;
        let url = self.url;
        let (start, body, total) =
            self.get(&format!("bytes={offset}-{last}"), len)
                .map_err(|e| match e {
                    Ranged::Ignored => io::Error::new(io::ErrorKind::Unsupported, "range ignored"),
                    Ranged::Failed(e) => io::Error::other(e),
                })?;
        if start != offset || total != self.len {
            return Err(io::Error::other(OriginError::garbage(
                url,
                "range answered from the wrong offset",
            )));
        }
        Ok(Box::new(body.take(len)))
    }
}

/// Why a range request gave no range.
enum Ranged {
    /// A `200`: the upstream ignores `Range`.
    Ignored,
    Failed(OriginError),
}

/// `bytes START-END/TOTAL` → (start, end, total).
fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (start, end, total) = (a.parse().ok()?, b.parse().ok()?, total.parse().ok()?);
    (start <= end && end < total).then_some((start, end, total))
}

#[cfg(test)]
mod tests;
