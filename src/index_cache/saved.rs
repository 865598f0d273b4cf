//! Saved pages (`persist`) come back off the request path. The first lookup
//! of a project after a restart finds no copy in memory: it starts a load on
//! the fetch threads (one per entry; concurrent lookups join it) and waits
//! for it like for a fetch — parked, no worker held. Once loaded, the lookup
//! begins again with the saved copy installed as an expired snapshot: served
//! if the upstream cannot be reached (or at once when offline), replaced by
//! the next good fetch.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::store::{estimate, shard_of, SlotKey};
use super::{Doc, Entry, Flight, IndexCache, Job, Key, Pending, Snapshot};
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
    if entry.disk_checked || entry.snap.is_some() {
        entry.disk_checked = true;
        return None;
    }
    entry.disk_checked = true;
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
    ) -> Pending {
        if start {
            let job = Job::Load {
                index: id.get(),
                key: key.clone(),
                flight: Arc::clone(&flight),
            };
            if let Err(e) = self.jobs.try_send(job) {
                if let Job::Load { index, key, flight } = e.into_inner() {
                    self.load_saved(index, key, &flight);
                }
            }
        }
        Pending {
            index: id,
            snap: None,
            flight: Some(flight),
            resting: false,
            deadline: Instant::now() + LOAD_WAIT,
            load: Some(key.clone()),
        }
    }

    /// The lookup that follows a load once it is done (or overdue); `None`
    /// while it runs, or if `pending` waits for no load.
    pub(super) fn reload(self: &Arc<Self>, pending: &Pending, force: bool) -> Option<Pending> {
        let key = pending.load.as_ref()?;
        let done = pending.flight.as_ref().is_none_or(|f| f.result().is_some());
        if done {
            Some(self.begin(pending.index, key, force))
        } else if Instant::now() >= pending.deadline {
            log::warn!("saved page of {key:?} not loaded within {LOAD_WAIT:?}; going on without");
            Some(self.begin_with(pending.index, key, force, false))
        } else {
            None
        }
    }

    /// The fetch thread's load: reads the saved page, installs it as an
    /// expired copy (unless a fetch got there first) and completes `flight`.
    pub(super) fn load_saved(&self, index: usize, key: Key, flight: &Arc<Flight>) {
        let snap = match (&self.pages, &key) {
            (Some(store), Key::Project(name)) => {
                catch_unwind(AssertUnwindSafe(|| store.load(&self.indexes[index], name)))
                    .ok()
                    .flatten()
                    .map(|saved| {
                        let now = self.clock.now();
                        let doc = Doc::Page(saved.page);
                        let bytes = estimate(&doc);
                        Arc::new(Snapshot {
                            doc: Arc::new(doc),
                            validators: saved.validators,
                            fetched: now.checked_sub(saved.age).unwrap_or(now),
                            // A local copy is expired from the start:
                            // refreshed on first use. A fleet's copy (from
                            // the bucket) is as fresh as its age says.
                            ttl: if saved.shared {
                                self.indexes[index].ttl
                            } else {
                                Duration::ZERO
                            },
                            generation: self.next_generation.fetch_add(1, Ordering::Relaxed),
                            bytes,
                            index: Arc::default(),
                        })
                    })
            }
            _ => None,
        };
        let slot_key = SlotKey::Doc(index, key);
        let shard_i = shard_of(&slot_key);
        {
            let mut shard = self.lock(shard_i);
            self.update(&mut shard, &slot_key, |e| {
                if e.loading.as_ref().is_some_and(|l| Arc::ptr_eq(l, flight)) {
                    e.loading = None;
                }
                if let (None, Some(s)) = (&e.snap, &snap) {
                    e.snap = Some(Arc::clone(s));
                }
            });
            self.evict(&mut shard);
        }
        self.trim();
        // Waiters only need to know it is done; they begin again.
        flight
            .complete(snap.ok_or_else(|| Arc::new(OriginError::offline(&self.indexes[index].url))));
    }
}
