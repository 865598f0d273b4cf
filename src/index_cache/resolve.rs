//! Asking every index for one key, per the index strategy: `merge` asks all
//! of them at once (an erroring extra index is skipped when another has the
//! project), `first-index` asks them in order and stops at the first that
//! has it (an index that errors never lets a later one win).

use std::sync::Arc;

use super::{Doc, Freshness, IndexCache, Key, Pending, Snapshot};
use crate::origin::{IndexId, OriginError};
use crate::pypi::Strategy;

/// The answer of the indexes for one key.
pub enum Resolved {
    /// Snapshots of the indexes that have it, in index order.
    Found(Vec<(IndexId, Arc<Snapshot>, Freshness)>),
    NotFound,
    Failed(Arc<OriginError>),
}

type Answer = Result<Option<(Arc<Snapshot>, Freshness)>, Arc<OriginError>>;

impl IndexCache {
    /// Asks the indexes for `key`. `force`: the client asked for a refresh.
    /// `no_wait` uses any copy at hand without waiting for a refresh (file
    /// requests: a cache hit never waits on a page).
    pub fn resolve(
        self: &Arc<Self>,
        key: &Key,
        strategy: Strategy,
        force: bool,
        no_wait: bool,
    ) -> Resolved {
        let ids: Vec<IndexId> = self.indexes().iter().map(|i| i.id).collect();
        let answer = |pending: Pending| -> Answer {
            let outcome = match pending.current().filter(|_| no_wait) {
                Some(snap) => Ok((snap, Freshness::Hit)),
                None => self.wait(pending),
            };
            match outcome {
                Ok((snap, _)) if matches!(snap.doc, Doc::Missing) => Ok(None),
                Ok(found) => Ok(Some(found)),
                Err(e) => Err(e),
            }
        };
        if strategy == Strategy::FirstIndex && matches!(key, Key::Project(_)) {
            for id in ids {
                match answer(self.begin(id, key, force)) {
                    Ok(Some((snap, fresh))) => return Resolved::Found(vec![(id, snap, fresh)]),
                    Ok(None) => continue,
                    Err(e) => return Resolved::Failed(e),
                }
            }
            return Resolved::NotFound;
        }
        // Start every fetch before waiting for any.
        let pendings: Vec<(IndexId, Pending)> = ids
            .into_iter()
            .map(|id| (id, self.begin(id, key, force)))
            .collect();
        let mut found = Vec::new();
        let mut failure: Option<Arc<OriginError>> = None;
        for (id, pending) in pendings {
            match answer(pending) {
                Ok(Some((snap, fresh))) => found.push((id, snap, fresh)),
                Ok(None) => {}
                Err(e) => {
                    if id != IndexId::ROOT {
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
}
