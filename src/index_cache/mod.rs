// Size: one concept (the sharded map of pages, its flights and byte accounting); its parts live in large/resolve/saved/store.
//! The in-memory index cache: parsed pages per (index, project) and the
//! project list per index, each with its own TTL, plus the rendered and
//! compressed variants served to clients. One mutex-sharded LRU bounded in
//! bytes (`ROXPI_INDEX_CACHE_SIZE`) holds both.
//!
//! - Single-flight: concurrent misses for one (index, key) share one
//!   upstream request (a `Flight` with a condvar); the fetch runs on a pool
//!   of fetch threads, so it finishes (and refreshes the cache) even when
//!   every waiter has given up.
//! - Stale: an expired entry whose refresh has not answered within
//!   `stale_after`, or whose refresh failed, is served as it was; after a
//!   failure the entry rests 5 s before the next upstream attempt.
//! - Serve while revalidating: within `Staleness::while_revalidate` after
//!   a page's TTL, the expired copy is answered at once while one
//!   background refresh runs (PyPI's own `stale-while-revalidate`).
//! - Conditional refresh: a page's upstream `ETag` / `Last-Modified` are
//!   sent back; a `304` renews the TTL with the same doc and generation (no
//!   body, no parse, no render; client ETags stay). A page whose
//!   `X-PyPI-Last-Serial` is lower than the copy's is not taken.
//! - Negative cache: "not found" is kept for at most 60 s.
//! - Forced revalidation (client `no-cache`) at most once per 10 s per entry.
//! - Saved pages (`saved_pages`) are loaded by the fetch threads on first use
//!   after a restart, never by the caller (`saved`).
//!
//! Lock rules: a shard lock is held only for map operations — never across
//! an upstream request, a render, or a thread spawn. A flight's mutex is
//! taken only after the shard lock is released.

use std::hash::Hash;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use lru::LruCache;

use crate::clock::Clock;
use crate::origin::{Index, IndexId, Origin, OriginError, PageFetch, Validators};
use crate::pypi::{ProjectName, ProjectPage};

mod large;
mod resolve;
mod saved;
mod saved_pages;
mod store;
pub use resolve::{Resolution, Resolved};
pub use saved_pages::SavedPages;

/// What a parsed page holds in memory (for tools and benches).
pub fn page_bytes(page: &ProjectPage) -> u64 {
    page.heap_bytes()
}
use store::{estimate, shard_of, Shard, SlotKey};

const SHARDS: usize = 16;
/// Threads fetching pages from upstreams. Misses beyond that many distinct
/// pages at once queue (single-flight still joins them), so a flood of
/// distinct names cannot start a thread each.
const FETCH_THREADS: usize = 32;
/// Distinct page fetches that may wait for a fetch thread; beyond, a miss
/// is refused at once (503) instead of queueing without bound.
const FETCH_QUEUE: usize = 256;
/// The smallest index cache bound (whatever `ROXPI_INDEX_CACHE_SIZE` says).
const MIN_CAP: u64 = 1 << 20;
const NEGATIVE_TTL: Duration = Duration::from_secs(60);
const FORCE_INTERVAL: Duration = Duration::from_secs(10);
const FAILURE_REST: Duration = Duration::from_secs(5);
/// A cache item (a page, a rendered variant) larger than this share of the
/// bound is not kept: it is answered to the requests that wait for it and
/// dropped (a page's saved copy on disk serves the next request).
const MAX_SHARE: u64 = 4;
/// The index cache cannot make progress when fetches are queued and none
/// finished for this long (`/ready` says so).
const STALL: Duration = Duration::from_secs(10);

/// What is cached per index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    List,
    Project(ProjectName),
}

/// A cached upstream answer.
#[derive(Debug)]
pub enum Doc {
    Page(ProjectPage),
    /// Normalised, sorted, de-duplicated names.
    List(Vec<ProjectName>),
    /// The index does not have it (404).
    Missing,
}

/// One upstream answer and when it was fetched (or last confirmed by a
/// `304`: then the doc and generation are the previous snapshot's, so the
/// rendered views and the ETags clients hold stay valid).
#[derive(Debug)]
pub struct Snapshot {
    pub doc: Arc<Doc>,
    /// The upstream's validators for this version.
    pub validators: Validators,
    pub fetched: Instant,
    pub ttl: Duration,
    /// Unique across the cache: identifies this answer in rendered views.
    pub generation: u64,
    bytes: u64,
    /// The page's files by name, built on first use; shared with the
    /// snapshots a `304` renews (same doc).
    index: Arc<FileIndex>,
    /// Counts this copy while alive if it is too large to keep (`large`).
    large: Option<Arc<large::Held>>,
}

/// A page's files by name: (hash of the filename, position), sorted. A file
/// hit then costs a binary search, not a scan of every file on the page
/// (numpy lists about 2,000).
#[derive(Debug, Default)]
struct FileIndex(std::sync::OnceLock<Vec<(u64, u32)>>);

fn name_hash(name: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(name.as_bytes());
    h.finish()
}

impl Snapshot {
    /// The entry for `filename` on this page (`None` for a list or a 404).
    pub fn file(&self, filename: &str) -> Option<&crate::pypi::FileEntry> {
        let Doc::Page(page) = &*self.doc else {
            return None;
        };
        let index = self.index.0.get_or_init(|| {
            let mut v: Vec<(u64, u32)> = page
                .files
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    (
                        name_hash(f.filename.as_str()),
                        u32::try_from(i).unwrap_or(u32::MAX),
                    )
                })
                .collect();
            v.sort_unstable();
            v
        });
        let h = name_hash(filename);
        let from = index.partition_point(|(k, _)| *k < h);
        index[from..]
            .iter()
            .take_while(|(k, _)| *k == h)
            .filter_map(|(_, i)| page.files.get(*i as usize))
            .find(|f| f.filename.as_str() == filename)
    }

    pub fn is_fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.fetched) < self.ttl
    }

    pub fn remaining(&self, now: Instant) -> Duration {
        self.ttl
            .saturating_sub(now.saturating_duration_since(self.fetched))
    }

    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.fetched)
    }
}

/// A rendered (and possibly compressed) page.
#[derive(Debug)]
pub struct Rendered {
    /// Generations of the snapshots it was built from.
    pub sig: Vec<u64>,
    pub body: Bytes,
    pub etag: String,
    /// The policy changes this page at that time (a held-back file
    /// matures): rendered again then.
    pub valid_until: Option<std::time::SystemTime>,
}

type FlightResult = Result<Arc<Snapshot>, Arc<OriginError>>;

/// Called when a flight completes (a parked request's waker).
pub type OnReady = crate::flight::OnDone;

type Flight = crate::flight::Flight<FlightResult>;

/// What is left of a page too large to keep in memory: when it was
/// fetched, so that its saved copy on disk answers within its TTL (with the
/// same generation, so rendered variants and ETags stay valid).
#[derive(Clone)]
struct Hollow {
    fetched: Instant,
    ttl: Duration,
    generation: u64,
    validators: Validators,
    /// The copy last loaded or fetched, while a request still holds it:
    /// the next lookup shares it instead of loading another.
    live: std::sync::Weak<Snapshot>,
    /// What the page takes in memory: a reload of a page too large to keep
    /// waits its turn (`large`); one of an evicted page never does.
    bytes: u64,
}

impl Hollow {
    /// What stays of a page snapshot (`None` for a list or a 404).
    fn of(snap: &Snapshot) -> Option<Hollow> {
        matches!(*snap.doc, Doc::Page(_)).then(|| Hollow {
            fetched: snap.fetched,
            ttl: snap.ttl,
            generation: snap.generation,
            validators: snap.validators.clone(),
            live: std::sync::Weak::new(),
            bytes: snap.bytes,
        })
    }
}

impl IndexCache {
    /// What an evicted entry leaves behind: a hollow if its page has a
    /// saved copy (never for a saved copy not yet refreshed: TTL zero).
    fn hollow_of(&self, entry: &Entry) -> Option<Hollow> {
        let snap = entry.snap.as_ref()?;
        if self.saved.is_none() || snap.ttl.is_zero() {
            return None;
        }
        Hollow::of(snap).map(|h| Hollow {
            live: Arc::downgrade(snap),
            ..h
        })
    }
}

impl Entry {
    /// The copy at hand: kept, or a too-large page's copy still in use.
    fn copy(&self) -> Option<Arc<Snapshot>> {
        self.snap
            .clone()
            .or_else(|| self.hollow.as_ref().and_then(|h| h.live.upgrade()))
    }
}

#[derive(Default)]
struct Entry {
    snap: Option<Arc<Snapshot>>,
    /// The page is too large to keep; its saved copy is loaded per use.
    hollow: Option<Hollow>,
    flight: Option<Arc<Flight>>,
    last_forced: Option<Instant>,
    rest_until: Option<Instant>,
    /// The saved copy on disk was looked for already.
    disk_checked: bool,
    /// The saved copy is being loaded (by a fetch thread).
    loading: Option<Arc<Flight>>,
}

/// Counters for the home page and metrics.
#[derive(Default, Debug)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stale: AtomicU64,
    pub coalesced: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub evictions: AtomicU64,
    /// Misses refused because every fetch thread and queue slot was taken.
    pub busy: AtomicU64,
    /// Refreshes answered `304 Not Modified` (no body, no re-parse).
    pub revalidated: AtomicU64,
    /// Pages not taken because their `X-PyPI-Last-Serial` went down.
    pub older_serial: AtomicU64,
    /// Expired pages answered at once while refreshed in the background.
    pub revalidating: AtomicU64,
    /// Upstream page fetches: how long each took.
    pub fetch_seconds: crate::histogram::Histogram,
    /// Pages answered but not kept: larger than a quarter of the bound.
    pub not_kept: AtomicU64,
}

/// How expired copies are served.
#[derive(Clone, Copy, Debug)]
pub struct Staleness {
    /// How long a request waits for a refresh before the stale copy is
    /// served (`ROXPI_STALE_AFTER`).
    pub after: Duration,
    /// Within this long after the TTL, the expired copy is served at once
    /// while it is refreshed in the background
    /// (`ROXPI_STALE_WHILE_REVALIDATE`).
    pub while_revalidate: Duration,
    /// The longest a request waits with no copy to fall back on
    /// (`ROXPI_REQUEST_DEADLINE`; then 504).
    pub deadline: Duration,
}

pub struct IndexCache {
    shards: Box<[Mutex<Shard>]>,
    origin: Arc<dyn Origin>,
    clock: Arc<dyn Clock>,
    indexes: Arc<[Index]>,
    staleness: Staleness,
    offline: bool,
    saved: Option<SavedPages>,
    /// Bytes held across all shards, and the bound on them.
    total: AtomicU64,
    cap: u64,
    next_generation: AtomicU64,
    jobs: Sender<Job>,
    queue: Receiver<Job>,
    /// Jobs sent and not yet taken by a fetch thread, and when a fetch
    /// thread last finished one (ms since `born`): `stalled`.
    queued: AtomicU64,
    last_done_ms: AtomicU64,
    born: Instant,
    /// When the last invalidation was (ms since `born`, 0: none).
    invalidated_ms: AtomicU64,
    /// Copies of too-large pages alive (`large`).
    large: Arc<large::LargeCopies>,
    pub stats: CacheStats,
}

/// What a fetch brought.
enum Fetched<'a> {
    New(Doc, Validators),
    /// The copy at hand is still current (`304`, or the upstream's was
    /// older).
    Same(&'a Snapshot),
}

/// Work for the fetch threads.
enum Job {
    /// One page fetch; `prev` is the copy at hand (for a conditional
    /// request).
    Fetch {
        index: usize,
        key: Key,
        prev: Option<Arc<Snapshot>>,
        flight: Arc<Flight>,
    },
    /// Loading a saved page from disk (`saved`).
    Load {
        index: usize,
        key: Key,
        flight: Arc<Flight>,
    },
}

/// A lookup in progress: the current copy and, if a refresh is running,
/// the flight to wait for.
/// What `plan` decided: the copy to answer with, the flight to wait for
/// (if any), and the refresh to start (if any).
struct Plan {
    snap: Option<Arc<Snapshot>>,
    wait: Option<Arc<Flight>>,
    resting: bool,
    deadline: Instant,
    start: Option<(Arc<Flight>, Option<Arc<Snapshot>>)>,
}

pub struct Pending {
    index: IndexId,
    snap: Option<Arc<Snapshot>>,
    flight: Option<Arc<Flight>>,
    /// Resting after a failure: serve the copy without waiting.
    resting: bool,
    /// The latest moment to answer (real time): `stale_after` after the
    /// lookup with a copy at hand, the request deadline without; never
    /// later than the deadline of the request it serves.
    deadline: Instant,
    /// Waits for the saved copy to load (`flight` is the load); then the
    /// lookup begins again (`IndexCache::reload`).
    load: Option<(Key, Instant)>,
}

impl Pending {
    /// The copy at hand, fresh or not, without waiting.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.snap.clone()
    }

    /// When this lookup must be answered at the latest.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Calls `f` when the refresh this lookup waits for completes (at once
    /// if there is none or it is done).
    pub fn on_ready(&self, f: OnReady) {
        match &self.flight {
            Some(flight) => flight.on_done(f),
            None => f(),
        }
    }
}

/// How an answer relates to the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Cached and within its TTL.
    Hit,
    /// Fetched for this request (or a coalesced one).
    Miss,
    /// Expired, and the refresh failed or is late.
    Stale,
}

pub type Outcome = Result<(Arc<Snapshot>, Freshness), Arc<OriginError>>;

/// When an answer was fetched, as the caching headers need it.
#[derive(Clone, Copy, Debug)]
pub struct Times {
    /// Left of its TTL.
    pub remaining: Duration,
    pub age: Duration,
    pub freshness: Freshness,
}

/// A fresh entry seen without taking its answer (`IndexCache::peek`).
#[derive(Clone, Copy, Debug)]
pub enum Peek {
    /// The index has it: this generation, fresh.
    Found { generation: u64, times: Times },
    /// The index does not have it (a fresh 404).
    Missing,
}

impl IndexCache {
    pub fn new(
        origin: Arc<dyn Origin>,
        clock: Arc<dyn Clock>,
        indexes: Vec<Index>,
        staleness: Staleness,
        offline: bool,
        max_bytes: u64,
        saved: Option<SavedPages>,
    ) -> IndexCache {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    map: LruCache::unbounded(),
                    bytes: 0,
                })
            })
            .collect();
        let (jobs, queue) = crossbeam_channel::bounded(FETCH_QUEUE);
        IndexCache {
            shards,
            origin,
            clock,
            indexes: indexes.into(),
            staleness,
            offline,
            saved,
            total: AtomicU64::new(0),
            cap: max_bytes.max(MIN_CAP),
            next_generation: AtomicU64::new(1),
            jobs,
            queue,
            queued: AtomicU64::new(0),
            last_done_ms: AtomicU64::new(0),
            born: Instant::now(),
            invalidated_ms: AtomicU64::new(0),
            large: Arc::default(),
            stats: CacheStats::default(),
        }
    }

    /// Starts the fetch threads; they end when the cache is dropped.
    pub fn start(self) -> std::io::Result<Arc<IndexCache>> {
        let cache = Arc::new(self);
        for i in 0..FETCH_THREADS {
            let (weak, rx) = (Arc::downgrade(&cache), cache.queue.clone());
            std::thread::Builder::new()
                .name(format!("roxpi-fetch-{i}"))
                .stack_size(1 << 20)
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        let Some(cache) = weak.upgrade() else { return };
                        cache.queued.fetch_sub(1, Ordering::Relaxed);
                        match job {
                            Job::Fetch {
                                index,
                                key,
                                prev,
                                flight,
                            } => cache.fetch(index, key, prev, &flight),
                            Job::Load { index, key, flight } => {
                                cache.load_saved(index, key, &flight)
                            }
                        }
                        cache
                            .last_done_ms
                            .store(cache.born.elapsed().as_millis() as u64, Ordering::Relaxed);
                    }
                })?;
        }
        Ok(cache)
    }

    pub fn indexes(&self) -> &[Index] {
        &self.indexes
    }

    /// Queues a job for the fetch threads; gives it back if the queue is
    /// full.
    fn submit(&self, job: Job) -> Result<(), Job> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.jobs.try_send(job).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            e.into_inner()
        })
    }

    /// Why the cache cannot make progress, if it cannot: page fetches are
    /// queued and no fetch thread finished one for `STALL` (every thread
    /// waits on a hung upstream). Atomics only (the `/ready` probe).
    pub fn stalled(&self) -> Option<String> {
        let queued = self.queued.load(Ordering::Relaxed);
        let idle_ms = (self.born.elapsed().as_millis() as u64)
            .saturating_sub(self.last_done_ms.load(Ordering::Relaxed));
        (queued > 0 && idle_ms >= STALL.as_millis() as u64).then(|| {
            format!(
                "{queued} page fetches queued and none finished for {} s",
                idle_ms / 1000
            )
        })
    }

    /// A fresh entry's generation and times, without its answer (a page
    /// too large to keep is not loaded); `None` if there is no fresh entry
    /// (missing, expired, resting after a failure). Counts as a use.
    pub fn peek(&self, id: IndexId, key: &Key) -> Option<Peek> {
        let now = self.clock.now();
        let slot_key = SlotKey::Doc(id.get(), key.clone());
        let mut shard = self.lock(shard_of(&slot_key));
        let Some(store::Slot::Doc(e)) = shard.map.get(&slot_key) else {
            return None;
        };
        if e.rest_until.is_some_and(|t| now < t) {
            return None;
        }
        let (generation, fetched, ttl, missing) = match (&e.snap, &e.hollow) {
            (Some(s), _) => (
                s.generation,
                s.fetched,
                s.ttl,
                matches!(*s.doc, Doc::Missing),
            ),
            (None, Some(h)) => (h.generation, h.fetched, h.ttl, false),
            (None, None) => return None,
        };
        let age = now.saturating_duration_since(fetched);
        if age >= ttl {
            return None;
        }
        Some(if missing {
            Peek::Missing
        } else {
            Peek::Found {
                generation,
                times: Times {
                    remaining: ttl - age,
                    age,
                    freshness: Freshness::Hit,
                },
            }
        })
    }

    /// Counts page lookups answered by `peek` and a kept variant.
    pub fn count_hits(&self, n: usize) {
        self.stats.hits.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The deadline of a request that starts now (`ROXPI_REQUEST_DEADLINE`).
    pub fn request_deadline(&self) -> Instant {
        Instant::now() + self.staleness.deadline
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        // Shard state is a map plus a byte count updated together; a panic
        // cannot happen between those updates, so poisoning is ignored.
        crate::lock(&self.shards[i])
    }

    /// Starts a lookup: returns at once, starting an upstream fetch when the
    /// entry is missing, expired, or `force`d (at most once per 10 s).
    pub fn begin(self: &Arc<Self>, id: IndexId, key: &Key, force: bool) -> Pending {
        self.begin_with(id, key, force, true, None, self.request_deadline())
    }

    /// `begin`, for a request answered by `limit` at the latest. `load`:
    /// wait for the saved copy first if there is one to look for (`saved`).
    /// `fallback`: a copy to use when the entry has none (a saved copy just
    /// loaded, which the cache may not keep).
    pub(super) fn begin_with(
        self: &Arc<Self>,
        id: IndexId,
        key: &Key,
        force: bool,
        load: bool,
        fallback: Option<Arc<Snapshot>>,
        limit: Instant,
    ) -> Pending {
        let index = id.get();
        let now = self.clock.now();
        let slot_key = SlotKey::Doc(index, key.clone());
        let shard_i = shard_of(&slot_key);
        let may_load = load && self.saved.is_some() && matches!(key, Key::Project(_));
        let plan = {
            let mut shard = self.lock(shard_i);
            if may_load {
                if let Some((flight, start)) = self.update(&mut shard, &slot_key, saved::claim_load)
                {
                    drop(shard);
                    return self.await_load(id, key, flight, start, limit);
                }
            }
            self.update(&mut shard, &slot_key, |entry| {
                self.plan(entry, key, entry.copy().or(fallback), force, now)
            })
        };
        let Plan {
            snap,
            wait,
            resting,
            deadline,
            start,
        } = plan;
        let pending = Pending {
            index: id,
            snap,
            flight: wait,
            resting,
            deadline: deadline.min(limit),
            load: None,
        };
        if let Some((flight, prev)) = start {
            let job = Job::Fetch {
                index,
                key: key.clone(),
                prev,
                flight: Arc::clone(&flight),
            };
            // A full queue is answered at once, never by waiting.
            if self.submit(job).is_err() {
                self.stats.busy.fetch_add(1, Ordering::Relaxed);
                let err = Arc::new(OriginError::busy(&self.indexes[index].url));
                self.finish(index, key.clone(), &flight, Err(err));
            }
        }
        pending
    }

    /// What a lookup does with its entry, decided under the shard lock:
    /// answer with the copy (fresh, resting, offline), answer with it and
    /// refresh behind, join the refresh in flight, or start one.
    fn plan(
        &self,
        entry: &mut Entry,
        key: &Key,
        snap: Option<Arc<Snapshot>>,
        force: bool,
        now: Instant,
    ) -> Plan {
        let answer = |snap, resting| Plan {
            snap,
            wait: None,
            resting,
            deadline: Instant::now(),
            start: None,
        };
        let forced = force
            && entry
                .last_forced
                .is_none_or(|t| now.saturating_duration_since(t) >= FORCE_INTERVAL);
        if forced {
            entry.last_forced = Some(now);
        }
        let expired = snap.as_ref().is_none_or(|s| !s.is_fresh(now));
        let resting = entry.rest_until.is_some_and(|t| now < t) && snap.is_some();
        // Recently expired: answer with the copy, refresh behind. A saved
        // copy loaded from disk (TTL zero: refreshed on first use) and a
        // deleted one never qualify.
        let revalidate_behind = expired
            && !forced
            && !self.offline
            && snap.as_ref().is_some_and(|s| {
                !s.ttl.is_zero()
                    && s.age(now) < s.ttl.saturating_add(self.staleness.while_revalidate)
            });
        if revalidate_behind && !resting {
            if entry.flight.is_some() {
                return answer(snap, false);
            }
            let f = Arc::new(Flight::new());
            entry.flight = Some(Arc::clone(&f));
            self.stats.revalidating.fetch_add(1, Ordering::Relaxed);
            let prev = snap.clone();
            return Plan {
                start: Some((f, prev)),
                ..answer(snap, false)
            };
        }
        if self.offline || !(expired || forced) || (resting && !forced) {
            return answer(snap, resting);
        }
        let deadline = self.wait_deadline(snap.is_some());
        if let Some(f) = &entry.flight {
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
            return Plan {
                wait: Some(Arc::clone(f)),
                deadline,
                ..answer(snap, false)
            };
        }
        log::debug!(
            "fetching {key:?}: copy {}, forced {forced}, hollow {}, disk checked {}, loading {}",
            match &snap {
                None => "none".to_owned(),
                Some(s) => format!("age {:?} ttl {:?}", s.age(now), s.ttl),
            },
            entry.hollow.is_some(),
            entry.disk_checked,
            entry.loading.is_some(),
        );
        let f = Arc::new(Flight::new());
        entry.flight = Some(Arc::clone(&f));
        let prev = snap.clone();
        Plan {
            wait: Some(Arc::clone(&f)),
            deadline,
            start: Some((f, prev)),
            ..answer(snap, false)
        }
    }

    /// The latest moment to answer a lookup that waits for a refresh.
    fn wait_deadline(&self, has_copy: bool) -> Instant {
        Instant::now()
            + if has_copy {
                self.staleness.after
            } else {
                self.staleness.deadline
            }
    }

    /// A lookup's answer if it is settled: no refresh to wait for, the
    /// refresh done, or the deadline passed (then the stale copy, or a
    /// timeout). `None`: not yet — wait with `Pending::on_ready`.
    pub fn poll(&self, pending: &Pending) -> Option<Outcome> {
        if pending.load.is_some() {
            // Settled by beginning again once loaded (`reload`).
            return None;
        }
        let url = &self.indexes[pending.index.get()].url;
        let now = self.clock.now();
        let Some(flight) = &pending.flight else {
            return Some(match &pending.snap {
                Some(s) if s.is_fresh(now) && !pending.resting => {
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    Ok((Arc::clone(s), Freshness::Hit))
                }
                Some(s) => {
                    self.stats.stale.fetch_add(1, Ordering::Relaxed);
                    Ok((Arc::clone(s), Freshness::Stale))
                }
                None => Err(Arc::new(OriginError::offline(url))),
            });
        };
        let result = flight.result();
        if result.is_none() && Instant::now() < pending.deadline {
            return None;
        }
        Some(match (result, &pending.snap) {
            (Some(Ok(fresh)), _) => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                Ok((fresh, Freshness::Miss))
            }
            (Some(Err(_)) | None, Some(old)) => {
                self.stats.stale.fetch_add(1, Ordering::Relaxed);
                Ok((Arc::clone(old), Freshness::Stale))
            }
            (Some(Err(e)), None) => Err(e),
            (None, None) => Err(Arc::new(OriginError::timeout(url))),
        })
    }

    /// Waits for a lookup's answer (blocking; tests and tools).
    pub fn wait(self: &Arc<Self>, mut pending: Pending) -> Outcome {
        while pending.load.is_some() {
            if let Some(flight) = &pending.flight {
                let left = pending.deadline.saturating_duration_since(Instant::now());
                flight.wait(left);
            }
            if let Some(next) = self.reload(&pending, false) {
                pending = next;
            }
        }
        if let Some(flight) = &pending.flight {
            let left = pending.deadline.saturating_duration_since(Instant::now());
            flight.wait(left);
        }
        loop {
            if let Some(outcome) = self.poll(&pending) {
                return outcome;
            }
            // Only reachable at the very deadline: poll again.
            std::thread::yield_now();
        }
    }

    /// The fetch thread: one upstream request, then the cache update.
    fn fetch(&self, index: usize, key: Key, prev: Option<Arc<Snapshot>>, flight: &Arc<Flight>) {
        let idx = &self.indexes[index];
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| {
            self.fetch_doc(idx, &key, prev.as_deref())
        }))
        .unwrap_or_else(|_| {
            Err(OriginError::garbage(
                &idx.url,
                "internal error while fetching",
            ))
        });
        self.stats.fetch_seconds.observe(started.elapsed());
        let result = match result {
            Ok(Fetched::New(doc, validators)) => {
                let ttl = match doc {
                    Doc::Missing => idx.ttl.min(NEGATIVE_TTL),
                    _ => idx.ttl,
                };
                let bytes = estimate(&doc);
                Ok(Arc::new(Snapshot {
                    doc: Arc::new(doc),
                    validators,
                    fetched: self.clock.now(),
                    ttl,
                    generation: self.next_generation.fetch_add(1, Ordering::Relaxed),
                    bytes,
                    index: Arc::default(),
                    large: (!self.fits(bytes)).then(|| self.large.hold()),
                }))
            }
            Ok(Fetched::Same(old)) => Ok(Arc::new(Snapshot {
                doc: Arc::clone(&old.doc),
                validators: old.validators.clone(),
                fetched: self.clock.now(),
                ttl: idx.ttl,
                generation: old.generation,
                bytes: old.bytes,
                index: Arc::clone(&old.index),
                large: old.large.clone(),
            })),
            Err(e) => {
                self.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
                log::warn!("{e}");
                Err(Arc::new(e))
            }
        };
        self.finish(index, key, flight, result);
    }

    fn fetch_doc<'a>(
        &self,
        idx: &Index,
        key: &Key,
        prev: Option<&'a Snapshot>,
    ) -> Result<Fetched<'a>, OriginError> {
        // Only a page we hold can be revalidated.
        let known = match prev {
            Some(p) if matches!(*p.doc, Doc::Page(_)) => p.validators.clone(),
            _ => Validators::default(),
        };
        match key {
            Key::Project(name) => Ok(match self.origin.fetch_project(idx, name, &known)? {
                PageFetch::NotModified => match prev {
                    Some(p) => {
                        self.stats.revalidated.fetch_add(1, Ordering::Relaxed);
                        self.touch_saved(idx, name);
                        Fetched::Same(p)
                    }
                    None => {
                        return Err(OriginError::garbage(
                            &idx.url,
                            "304 Not Modified for a page not asked conditionally",
                        ))
                    }
                },
                PageFetch::Found(_, raw) if raw.validators.older_than(&known) => {
                    self.stats.older_serial.fetch_add(1, Ordering::Relaxed);
                    log::warn!(
                        "{name}: the upstream answered an older page (serial {:?} < {:?}); keeping ours",
                        raw.validators.serial,
                        known.serial
                    );
                    match prev {
                        Some(p) => Fetched::Same(p),
                        None => return Err(OriginError::garbage(&idx.url, "older page")),
                    }
                }
                PageFetch::Found(page, raw) => {
                    if let Some(store) = &self.saved {
                        if let Err(e) = store.save(idx, name, &raw) {
                            log::warn!("cannot save the page of {name}: {e}");
                        }
                    }
                    Fetched::New(Doc::Page(page), raw.validators)
                }
                PageFetch::NotFound => {
                    if let Some(store) = &self.saved {
                        store.remove(idx, name);
                    }
                    Fetched::New(Doc::Missing, Validators::default())
                }
            }),
            Key::List => Ok(Fetched::New(
                match self.origin.fetch_list(idx)? {
                    Some(list) => Doc::List(crate::pypi::name::sorted_unique(
                        list.names
                            .iter()
                            .filter_map(|n| ProjectName::from_upstream(n)),
                    )),
                    None => Doc::Missing,
                },
                Validators::default(),
            )),
        }
    }

    /// A `304` confirmed the saved copy too: it stays recently used.
    fn touch_saved(&self, idx: &Index, name: &ProjectName) {
        if let Some(store) = &self.saved {
            store.touch(idx, name);
        }
    }

    /// Whether an item of `bytes` may be kept (at most a quarter of the
    /// bound: one page can never push everything else out).
    pub(super) fn fits(&self, bytes: u64) -> bool {
        bytes <= self.cap / MAX_SHARE
    }

    /// Stores a fetch result and wakes the waiters. The waiters get the
    /// result itself, so a page is answered even when it is not kept (too
    /// large) or is evicted at once; and making room never evicts the
    /// entry being stored.
    fn finish(&self, index: usize, key: Key, flight: &Arc<Flight>, result: FlightResult) {
        let slot_key = SlotKey::Doc(index, key);
        let shard_i = shard_of(&slot_key);
        let saved = self.saved.is_some();
        let mut dropped = None;
        {
            let mut shard = self.lock(shard_i);
            self.update(&mut shard, &slot_key, |entry| {
                if entry
                    .flight
                    .as_ref()
                    .is_some_and(|f| Arc::ptr_eq(f, flight))
                {
                    entry.flight = None;
                }
                match &result {
                    Ok(snap) if self.fits(snap.bytes) => {
                        entry.snap = Some(Arc::clone(snap));
                        entry.hollow = None;
                        entry.rest_until = None;
                    }
                    Ok(snap) => {
                        // Too large to keep: answered, then dropped. Its
                        // saved copy answers the next requests within the
                        // TTL (or it is fetched again).
                        dropped = Some(snap.bytes);
                        entry.snap = None;
                        entry.hollow = saved.then(|| Hollow::of(snap)).flatten().map(|h| Hollow {
                            live: Arc::downgrade(snap),
                            ..h
                        });
                        entry.rest_until = None;
                    }
                    Err(_) => entry.rest_until = Some(self.clock.now() + FAILURE_REST),
                }
            });
            self.evict(&mut shard, Some(&slot_key));
        }
        self.trim(Some(&slot_key));
        if let Some(bytes) = dropped {
            self.stats.not_kept.fetch_add(1, Ordering::Relaxed);
            log::info!(
                "{slot_key:?}: the page takes {bytes} bytes in memory, more than a quarter of \
                 the index cache ({} bytes): answered and not kept (raise \
                 ROXPI_INDEX_CACHE_SIZE to keep it)",
                self.cap
            );
        }
        flight.complete(result);
    }
}

#[cfg(test)]
mod tests;
