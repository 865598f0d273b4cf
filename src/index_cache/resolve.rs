//! Asking every index for one key, per the index strategy: `merge` asks all
//! of them at once (an erroring extra index is skipped when another has the
//! project), `first-index` asks them in order and stops at the first that
//! has it (an index that errors never lets a later one win).
//!
//! A `Resolution` never blocks: `IndexCache::poll_resolution` answers or
//! says "not yet", and `Resolution::on_ready` registers a callback for the
//! moment it may be answerable (the server parks the request meanwhile).
//! `IndexCache::resolve` is the blocking form (tests only).

use std::sync::Arc;
use std::time::Instant;

use super::{Doc, Freshness, IndexCache, Key, OnReady, Outcome, Pending, Snapshot};
use crate::origin::{IndexId, OriginError};
use crate::pypi::Strategy;

/// The answer of the indexes for one key.
pub enum Resolved {
    /// Snapshots of the indexes that have it, in index order.
    Found(Vec<(IndexId, Arc<Snapshot>, Freshness)>),
    NotFound,
    Failed(Arc<OriginError>),
}

/// A lookup across the indexes in progress. Kept small: the warm page
/// path builds one per request.
pub struct Resolution {
    /// First-index only: the key, to ask the next index.
    sequential: Option<Key>,
    force: bool,
    /// Use any copy at hand without waiting (file requests).
    no_wait: bool,
    /// The indexes asked, in order (the confusion guard may leave some out).
    order: Vec<IndexId>,
    /// Lookups started, in index order; those before `cursor` are settled.
    pending: Vec<(IndexId, Pending)>,
    cursor: usize,
    /// Settled answers, in index order.
    settled: Vec<(IndexId, Outcome)>,
    /// First-index: the next index to ask.
    next: usize,
    /// The request's deadline: no lookup waits past it.
    limit: Instant,
}

impl Resolution {
    /// When the lookups waited for must be answered at the latest.
    pub fn deadline(&self) -> Instant {
        self.pending[self.cursor..]
            .iter()
            .map(|(_, p)| p.deadline())
            .min()
            .unwrap_or_else(Instant::now)
    }

    /// Calls `f` (possibly several times) when a lookup waited for settles.
    pub fn on_ready(&self, f: impl Fn() + Clone + Send + 'static) {
        for (_, p) in &self.pending[self.cursor..] {
            let f = f.clone();
            let once: OnReady = Box::new(f);
            p.on_ready(once);
        }
    }
}

fn found_in(outcome: &Outcome) -> Result<Option<(Arc<Snapshot>, Freshness)>, Arc<OriginError>> {
    match outcome {
        Ok((snap, _)) if matches!(*snap.doc, Doc::Missing) => Ok(None),
        Ok((snap, fresh)) => Ok(Some((Arc::clone(snap), *fresh))),
        Err(e) => Err(Arc::clone(e)),
    }
}

impl IndexCache {
    /// Starts asking the indexes for `key`. `force`: the client asked for a
    /// refresh. `no_wait`: any copy at hand will do.
    pub fn start_resolution(
        self: &Arc<Self>,
        key: &Key,
        strategy: Strategy,
        force: bool,
        no_wait: bool,
    ) -> Resolution {
        let order = self.indexes_for(key);
        let sequential = strategy == Strategy::FirstIndex && matches!(key, Key::Project(_));
        let mut r = Resolution {
            sequential: sequential.then(|| key.clone()),
            force,
            no_wait,
            pending: Vec::with_capacity(order.len()),
            cursor: 0,
            settled: Vec::with_capacity(order.len()),
            next: 0,
            order,
            limit: self.request_deadline(),
        };
        if sequential {
            self.begin_next(&mut r, key);
        } else {
            // Start every fetch before waiting for any.
            for i in 0..r.order.len() {
                let id = r.order[i];
                r.pending
                    .push((id, self.begin_with(id, key, force, true, None, r.limit)));
            }
            r.next = r.order.len();
        }
        r
    }

    /// The indexes that may answer for `key`: for a project claimed by an
    /// index's `only` list, those claiming indexes alone (a private name is
    /// never taken from another index, whatever the strategy); else every
    /// index whose `only` and `never` lists allow it.
    pub fn indexes_for(&self, key: &Key) -> Vec<IndexId> {
        let all = self.indexes();
        let Key::Project(name) = key else {
            return all.iter().map(|i| i.id).collect();
        };
        let claimed: Vec<IndexId> = all
            .iter()
            .filter(|i| i.claims(name))
            .map(|i| i.id)
            .collect();
        if !claimed.is_empty() {
            return claimed;
        }
        all.iter()
            .filter(|i| i.may_serve(name))
            .map(|i| i.id)
            .collect()
    }

    /// When the dependency-confusion guard keeps indexes from answering
    /// for `name` (an `only` claim, or a `never` list): why, for the audit.
    pub fn guard_note(&self, name: &crate::pypi::ProjectName) -> Option<String> {
        let all = self.indexes();
        let kept = self.indexes_for(&Key::Project(name.clone()));
        if kept.len() == all.len() {
            return None;
        }
        let claimed: Vec<String> = all
            .iter()
            .filter(|i| i.claims(name))
            .map(|i| crate::redact::SafeUrl::new(&i.url).to_string())
            .collect();
        Some(if claimed.is_empty() {
            format!(
                "{} of {} indexes never serve this name",
                all.len() - kept.len(),
                all.len()
            )
        } else {
            format!(
                "claimed by {} (only): {} other index(es) not asked",
                claimed.join(", "),
                all.len() - kept.len()
            )
        })
    }

    fn begin_next(self: &Arc<Self>, r: &mut Resolution, key: &Key) {
        if let Some(id) = r.order.get(r.next).copied() {
            r.pending
                .push((id, self.begin_with(id, key, r.force, true, None, r.limit)));
            r.next += 1;
        }
    }

    /// The answer, or `None` while a lookup still waits for its refresh.
    pub fn poll_resolution(self: &Arc<Self>, r: &mut Resolution) -> Option<Resolved> {
        loop {
            // Settle what can be settled, in order.
            while let Some((id, p)) = r.pending.get(r.cursor) {
                if p.load.is_some() {
                    // The saved copy first; then the lookup begins again.
                    let next = self.reload(p, r.force)?;
                    r.pending[r.cursor].1 = next;
                    continue;
                }
                let outcome = match p.current().filter(|_| r.no_wait) {
                    Some(snap) => Ok((snap, Freshness::Hit)),
                    None => self.poll(p)?,
                };
                r.settled.push((*id, outcome));
                r.cursor += 1;
            }
            let Some(key) = r.sequential.clone() else {
                return Some(merge_answers(&r.settled));
            };
            // First-index: the last settled answer decides or moves on.
            match r.settled.last().map(|(id, o)| (*id, found_in(o))) {
                Some((id, Ok(Some((snap, fresh))))) => {
                    return Some(Resolved::Found(vec![(id, snap, fresh)]))
                }
                Some((_, Err(e))) => return Some(Resolved::Failed(e)),
                Some((_, Ok(None))) | None => {
                    if r.next >= r.order.len() {
                        return Some(Resolved::NotFound);
                    }
                    self.begin_next(r, &key);
                }
            }
        }
    }

    /// Asks the indexes for `key`, waiting as needed (blocking form, for
    /// tests: request paths park instead).
    #[cfg(test)]
    pub fn resolve(
        self: &Arc<Self>,
        key: &Key,
        strategy: Strategy,
        force: bool,
        no_wait: bool,
    ) -> Resolved {
        let mut r = self.start_resolution(key, strategy, force, no_wait);
        loop {
            if let Some(done) = self.poll_resolution(&mut r) {
                return done;
            }
            let (tx, rx) = crossbeam_channel::bounded::<()>(1);
            r.on_ready(move || {
                let _ = tx.try_send(());
            });
            let left = r.deadline().saturating_duration_since(Instant::now());
            let _ = rx.recv_timeout(left);
        }
    }
}

/// Merge: every index that has it, else the first failure, else not found.
fn merge_answers(settled: &[(IndexId, Outcome)]) -> Resolved {
    let mut found = Vec::new();
    let mut failure: Option<Arc<OriginError>> = None;
    for (id, outcome) in settled {
        match found_in(outcome) {
            Ok(Some((snap, fresh))) => found.push((*id, snap, fresh)),
            Ok(None) => {}
            Err(e) => {
                if *id != IndexId::ROOT {
                    log::info!("skipping index {id} for this request: {e}");
                }
                failure.get_or_insert(e);
            }
        }
    }
    match (found.is_empty(), failure) {
        (false, _) => Resolved::Found(found),
        (true, Some(e)) => Resolved::Failed(e),
        (true, None) => Resolved::NotFound,
    }
}
