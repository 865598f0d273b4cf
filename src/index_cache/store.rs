//! The shards of the index cache: doc entries and rendered views in one
//! byte-bounded LRU per shard, and the operations on them. A shard lock is
//! held only for map operations.

use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use lru::LruCache;

use super::{Doc, Entry, IndexCache, Key, Rendered, SHARDS};
use crate::pypi::model::alloc_cost;
use crate::pypi::{Coding, PageFormat};

/// What a slot costs beyond its payload: the LRU node, the key, the
/// entry, the `Arc`s. Measured under a soak of distinct small pages: about
/// 1.8 KiB of RSS per slot against ~0.5 KiB counted with 128 here, so the
/// bound undercounted threefold.
const SLOT_OVERHEAD: u64 = 1024;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum SlotKey {
    Doc(usize, Key),
    View(Key, PageFormat, Coding),
}

pub(super) enum Slot {
    Doc(Entry),
    View(Arc<Rendered>),
}

impl Slot {
    pub(super) fn bytes(&self) -> u64 {
        match self {
            Slot::Doc(e) => e.snap.as_ref().map_or(0, |s| s.bytes) + SLOT_OVERHEAD,
            Slot::View(v) => view_bytes(v) + SLOT_OVERHEAD,
        }
    }
}

pub(super) struct Shard {
    pub(super) map: LruCache<SlotKey, Slot>,
    pub(super) bytes: u64,
}

pub(super) fn shard_of(key: &SlotKey) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match key {
        SlotKey::Doc(_, k) | SlotKey::View(k, _, _) => k.hash(&mut h),
    }
    (h.finish() as usize) % SHARDS
}

impl IndexCache {
    /// Runs `f` on the doc entry for `key` (created if absent), keeping the
    /// shard's byte count right.
    pub(super) fn update<R>(
        &self,
        shard: &mut Shard,
        key: &SlotKey,
        f: impl FnOnce(&mut Entry) -> R,
    ) -> R {
        // The key is cloned only when the entry is new (the warm path
        // allocates nothing here).
        if shard.map.get_mut(key).is_none() {
            shard.map.put(key.clone(), Slot::Doc(Entry::default()));
            self.resize(shard, 0, Slot::Doc(Entry::default()).bytes());
        }
        let Some(slot) = shard.map.peek_mut(key) else {
            // Just inserted under the same lock.
            return f(&mut Entry::default());
        };
        let old = slot.bytes();
        if let Slot::View(_) = slot {
            // Doc keys only ever hold doc slots; repair rather than panic.
            *slot = Slot::Doc(Entry::default());
        }
        let r = match slot {
            Slot::Doc(entry) => f(entry),
            Slot::View(_) => f(&mut Entry::default()),
        };
        let new = slot.bytes();
        self.resize(shard, old, new);
        r
    }

    /// Keeps the shard's and the cache's byte counts right.
    pub(super) fn resize(&self, shard: &mut Shard, old: u64, new: u64) {
        shard.bytes = shard.bytes.saturating_sub(old) + new;
        if new >= old {
            self.total.fetch_add(new - old, Ordering::Relaxed);
        } else {
            self.total.fetch_sub(old - new, Ordering::Relaxed);
        }
    }

    fn over(&self) -> bool {
        self.total.load(Ordering::Relaxed) > self.cap
    }

    /// Evicts across all shards (one lock at a time) until the cache is
    /// within its bound: a big page in one shard pushes out the least
    /// recently used entries of the others. Never `protect` (the entry
    /// room is made for).
    pub(super) fn trim(&self, protect: Option<&SlotKey>) {
        for i in 0..SHARDS {
            if !self.over() {
                return;
            }
            let mut shard = self.lock(i);
            self.evict(&mut shard, protect);
        }
    }

    /// Evicts this shard's least recently used slots while the cache is
    /// over its bound, skipping `protect` and entries with a fetch or load
    /// in flight (their waiters join them). Each slot is looked at once, so
    /// this ends even when nothing can go.
    ///
    /// A page with a saved copy on disk leaves a `Hollow` behind (when it
    /// was fetched, about a hundred bytes): its next request loads the
    /// saved copy as fresh as it was, instead of fetching it again. The
    /// hollow goes at the next eviction that reaches it.
    pub(super) fn evict(&self, shard: &mut Shard, protect: Option<&SlotKey>) {
        let mut kept = Vec::new();
        while self.over() {
            let Some((k, mut slot)) = shard.map.pop_lru() else {
                break;
            };
            let busy = matches!(&slot, Slot::Doc(e) if e.flight.is_some() || e.loading.is_some());
            if busy || protect == Some(&k) {
                kept.push((k, slot));
                continue;
            }
            let before = slot.bytes();
            self.stats.evictions.fetch_add(1, Ordering::Relaxed);
            if let Slot::Doc(e) = &mut slot {
                if let Some(hollow) = self.hollow_of(e) {
                    e.snap = None;
                    e.hollow = Some(hollow);
                    let after = slot.bytes();
                    self.resize(shard, before, after);
                    shard.map.push(k, slot);
                    continue;
                }
            }
            self.resize(shard, before, 0);
        }
        // Back as the least recently used, in their order.
        for (k, slot) in kept.into_iter().rev() {
            shard.map.push(k.clone(), slot);
            shard.map.demote(&k);
        }
    }

    /// A cached rendered variant built from exactly `sig`'s snapshots.
    pub fn view(
        &self,
        key: &Key,
        format: PageFormat,
        coding: Coding,
        sig: &[u64],
    ) -> Option<Arc<Rendered>> {
        let slot_key = SlotKey::View(key.clone(), format, coding);
        let mut shard = self.lock(shard_of(&slot_key));
        match shard.map.get(&slot_key) {
            Some(Slot::View(v)) if v.sig == sig => Some(Arc::clone(v)),
            _ => None,
        }
    }

    /// Keeps a rendered variant, unless it is larger than a quarter of the
    /// bound (then it is served to the requests that asked and dropped).
    pub fn store_view(&self, key: &Key, format: PageFormat, coding: Coding, view: Arc<Rendered>) {
        let slot_key = SlotKey::View(key.clone(), format, coding);
        if !self.fits(view_bytes(&view)) {
            self.stats.not_kept.fetch_add(1, Ordering::Relaxed);
            return;
        }
        {
            let mut shard = self.lock(shard_of(&slot_key));
            let slot = Slot::View(view);
            let new = slot.bytes();
            let old = shard
                .map
                .put(slot_key.clone(), slot)
                .map_or(0, |s| s.bytes());
            self.resize(&mut shard, old, new);
            self.evict(&mut shard, Some(&slot_key));
        }
        self.trim(Some(&slot_key));
    }

    /// Drops every cached answer (and view) for `key` in every index. Saved
    /// copies written before now are expired when loaded again (they stay
    /// the fallback if the upstream fails).
    pub fn invalidate(&self, key: &Key) {
        self.invalidated_ms.store(
            self.born.elapsed().as_millis() as u64 + 1,
            Ordering::Relaxed,
        );
        let probe = SlotKey::View(key.clone(), PageFormat::Html, Coding::Identity);
        let mut shard = self.lock(shard_of(&probe));
        let doomed: Vec<SlotKey> = shard
            .map
            .iter()
            .filter(|(k, _)| match k {
                SlotKey::Doc(_, k2) | SlotKey::View(k2, _, _) => k2 == key,
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            // A running fetch keeps its entry so that waiters stay joined;
            // only its cached copy goes.
            let old = shard.map.peek(&k).map_or(0, Slot::bytes);
            match shard.map.peek_mut(&k) {
                Some(Slot::Doc(e)) if e.flight.is_some() || e.loading.is_some() => {
                    e.snap = None;
                    e.hollow = None;
                    e.rest_until = None;
                    let new = shard.map.peek(&k).map_or(0, Slot::bytes);
                    self.resize(&mut shard, old, new);
                }
                _ => {
                    if let Some(slot) = shard.map.pop(&k) {
                        self.resize(&mut shard, slot.bytes(), 0);
                    }
                }
            }
        }
    }

    /// Entries and bytes held (for the home page).
    /// Copies of pages too large to keep that requests still hold.
    pub fn large_copies(&self) -> usize {
        self.large.alive()
    }

    pub fn usage(&self) -> (usize, u64) {
        (0..SHARDS).fold((0, 0), |(n, b), i| {
            let s = self.lock(i);
            (n + s.map.len(), b + s.bytes)
        })
    }
}

/// What a rendered variant holds: its body, ETag and signature.
fn view_bytes(v: &Rendered) -> u64 {
    alloc_cost(v.body.len())
        + alloc_cost(v.etag.len())
        + alloc_cost(v.sig.len() * 8)
        + alloc_cost(std::mem::size_of::<Rendered>())
}

/// What a cached answer holds in memory: the parsed document (every
/// string and map, `ProjectPage::heap_bytes`) and the file-name index
/// built on a page's first file request (12 bytes per file, as 16).
pub(super) fn estimate(doc: &Doc) -> u64 {
    match doc {
        Doc::Missing => 0,
        Doc::List(names) => {
            alloc_cost(names.capacity() * std::mem::size_of::<crate::pypi::ProjectName>())
                + names
                    .iter()
                    .map(|n| alloc_cost(n.as_str().len()))
                    .sum::<u64>()
        }
        Doc::Page(p) => p.heap_bytes() + alloc_cost(p.files.len() * 16),
    }
}
