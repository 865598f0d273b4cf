//! Saved pages (`saved_pages`) come back off the request path. The first lookup
//! of a project after a restart finds no copy in memory: it starts a load on
//! the fetch threads (one per entry; concurrent lookups join it) and waits
//! for it like for a fetch — parked, no worker held. The loaded copy is
//! handed to the waiters themselves (the cache may not keep it), and each
//! lookup goes on with it: served at once when it is fresh, else used as
//! the copy to revalidate and to fall back on.
//!
//! A page too large to keep in memory (`Hollow`) is loaded like this on
//! every use; within its TTL it keeps the generation it was fetched with,
//! so its rendered variants (which may be kept) and ETags stay valid.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::store::{estimate, shard_of, SlotKey};
use super::{Doc, Entry, Flight, Hollow, IndexCache, Job, Key, Pending, Snapshot};
use crate::origin::{IndexId, OriginError};

/// How long a lookup waits for its saved copy; past it, the lookup goes on
/// without (the fetch threads are all busy).
const LOAD_WAIT: Duration = Duration::from_secs(10);

/// Under the shard lock: the load to wait for, and whether this lookup must
/// start it; `None` when there is nothing to load.
pub(super) fn claim_load(entry: &mut Entry) -> Option<(Arc<Flight>, bool)> {
    if let Some(loading) = &entry.loading {
        return Some((Arc::clone(loading), false));
    }
    let wanted = entry.copy().is_none() && (entry.hollow.is_some() || !entry.disk_checked);
    entry.disk_checked = true;
    if !wanted {
        return None;
    }
    let flight = Arc::new(Flight::new());
    entry.loading = Some(Arc::clone(&flight));
    Some((flight, true))
}

impl IndexCache {
    /// A lookup waiting for the saved copy of `key`; starts the load on the
    /// fetch threads if `start` (inline if their queue is full).
    pub(super) fn await_load(
        self: &Arc<Self>,
        id: IndexId,
        key: &Key,
        flight: Arc<Flight>,
        start: bool,
        limit: Instant,
    ) -> Pending {
        if start {
            let job = Job::Load {
                index: id.get(),
                key: key.clone(),
                flight: Arc::clone(&flight),
            };
            if let Err(Job::Load { index, key, flight }) = self.submit(job) {
                self.load_saved(index, key, &flight);
            }
        }
        Pending {
            index: id,
            snap: None,
            flight: Some(flight),
            resting: false,
            deadline: (Instant::now() + LOAD_WAIT).min(limit),
            load: Some((key.clone(), limit)),
        }
    }

    /// The lookup that follows a load once it is done (or overdue); `None`
    /// while it runs, or if `pending` waits for no load. It goes on with
    /// the loaded copy, whether or not the cache kept it: a load always
    /// moves a lookup forward.
    pub(super) fn reload(self: &Arc<Self>, pending: &Pending, force: bool) -> Option<Pending> {
        let (key, limit) = pending.load.as_ref()?;
        let loaded = match pending.flight.as_ref().map(|f| f.result()) {
            Some(Some(r)) => r.ok(),
            None => None,
            Some(None) if Instant::now() >= pending.deadline => {
                log::warn!(
                    "saved page of {key:?} not loaded within {LOAD_WAIT:?}; going on without"
                );
                None
            }
            Some(None) => return None,
        };
        Some(self.begin_with(pending.index, key, force, false, loaded, *limit))
    }

    // Long: one load and its freshness rules, under one reading of the entry.
    /// The fetch thread's load: reads the saved page, installs it as the
    /// copy at hand (unless a fetch got there first, or it is too large to
    /// keep) and completes `flight` with it.
    pub(super) fn load_saved(&self, index: usize, key: Key, flight: &Arc<Flight>) {
        let slot_key = SlotKey::Doc(index, key.clone());
        let shard_i = shard_of(&slot_key);
        let hollow = {
            let shard = self.lock(shard_i);
            match shard.map.peek(&slot_key) {
                Some(super::store::Slot::Doc(e)) => e.hollow.clone(),
                _ => None,
            }
        };
        if hollow.as_ref().is_some_and(|h| !self.fits(h.bytes)) {
            // Too large to keep: one more copy in memory. Wait while
            // others are in use (bounded). (A page evicted to make room
            // fits, and loads at once.)
            self.large.wait_turn();
        }
        let snap = match (&self.saved, &key) {
            (Some(store), Key::Project(name)) => {
                catch_unwind(AssertUnwindSafe(|| store.load(&self.indexes[index], name)))
                    .ok()
                    .flatten()
                    .map(|saved| {
                        let now = self.clock.now();
                        let doc = Doc::Page(saved.page);
                        let bytes = estimate(&doc);
                        // The copy a too-large page was fetched as: as
                        // fresh as that fetch, same generation.
                        let same = hollow.filter(|h| h.validators == saved.validators);
                        // A copy saved before this process started, or
                        // before an invalidation, is expired from the
                        // start: refreshed on first use. One saved since
                        // (a page evicted from memory) and a fleet's copy
                        // (from the bucket) are as fresh as their age
                        // says: the disk is the index cache's second tier.
                        let uptime = self.born.elapsed();
                        let ours = saved.age <= uptime
                            && (uptime - saved.age).as_millis() as u64
                                > self.invalidated_ms.load(Ordering::Relaxed);
                        let (fetched, ttl, generation) = match same {
                            Some(h) => (h.fetched, h.ttl, h.generation),
                            None => (
                                now.checked_sub(saved.age).unwrap_or(now),
                                if saved.shared || ours {
                                    self.indexes[index].ttl
                                } else {
                                    Duration::ZERO
                                },
                                self.next_generation.fetch_add(1, Ordering::Relaxed),
                            ),
                        };
                        log::debug!(
                            "saved page of {key:?} loaded: age {:?}, {}",
                            saved.age,
                            if ttl.is_zero() {
                                "expired"
                            } else {
                                "fresh within its TTL"
                            }
                        );
                        Arc::new(Snapshot {
                            doc: Arc::new(doc),
                            validators: saved.validators,
                            fetched,
                            ttl,
                            generation,
                            bytes,
                            index: Arc::default(),
                            large: (!self.fits(bytes)).then(|| self.large.hold()),
                        })
                    })
            }
            _ => None,
        };
        {
            let mut shard = self.lock(shard_i);
            self.update(&mut shard, &slot_key, |e| {
                if e.loading.as_ref().is_some_and(|l| Arc::ptr_eq(l, flight)) {
                    e.loading = None;
                }
                if let (None, Some(s)) = (&e.snap, &snap) {
                    if self.fits(s.bytes) {
                        e.snap = Some(Arc::clone(s));
                        e.hollow = None;
                    } else {
                        // Too large to keep: what stays is when it was
                        // fetched, and the copy while it is in use.
                        let h = e.hollow.get_or_insert_with(|| Hollow {
                            fetched: s.fetched,
                            ttl: s.ttl,
                            generation: s.generation,
                            validators: s.validators.clone(),
                            live: std::sync::Weak::new(),
                            bytes: s.bytes,
                        });
                        if h.generation == s.generation {
                            h.live = Arc::downgrade(s);
                        }
                    }
                }
            });
            self.evict(&mut shard, Some(&slot_key));
        }
        self.trim(Some(&slot_key));
        flight
            .complete(snap.ok_or_else(|| Arc::new(OriginError::offline(&self.indexes[index].url))));
    }
}
