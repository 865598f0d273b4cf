//! `ROXPI_STORAGE=tiered`: the local LRU (L1) in front of the bucket (L2),
//! composed. Hits, new files and the bound are L1's; a miss is read from
//! L2 into L1 (verified), and a new download is put into L2 from L1. A
//! fleet of nodes shares L2; each keeps its own L1.

use std::sync::Arc;

use super::remote::S3Storage;
use super::s3::Bucket;
use super::{
    CacheKey, Item, LoadError, Lookup, RemoteReport, Storage, Stored, TempFile, Usage, Want,
};

pub struct Tiered {
    near: Arc<dyn Storage>,
    /// L2, reading into and putting from `near`.
    far: S3Storage,
}

impl Tiered {
    pub fn start(near: Arc<dyn Storage>, bucket: Arc<Bucket>) -> std::io::Result<Tiered> {
        let far = S3Storage::with_near(
            bucket,
            Arc::clone(&near),
            "bucket (L2, behind the cache dir as L1)",
        )?;
        Ok(Tiered { near, far })
    }
}

impl Storage for Tiered {
    fn lookup(&self, key: &CacheKey) -> Lookup {
        self.near.lookup(key)
    }

    fn create(&self, item: &Item, len: u64) -> std::io::Result<TempFile> {
        self.near.create(item, len)
    }

    fn commit(&self, temp: TempFile, sha256: &str) -> std::io::Result<Stored> {
        self.near.commit(temp, sha256)
    }

    fn usage(&self) -> Usage {
        self.near.usage()
    }

    fn remove(&self, item: &Item) {
        // Both tiers (the far side removes the near copy too).
        self.far.remove(item);
    }

    fn load(
        &self,
        item: &Item,
        want: &Want,
        started: &dyn Fn(),
    ) -> Result<Option<Stored>, LoadError> {
        self.far.load(item, want, started)
    }

    fn share(&self, item: &Item, stored: &Stored) {
        self.far.share(item, stored);
    }

    fn ranges(&self, key: &CacheKey) -> Option<Stored> {
        self.far.ranges(key)
    }

    fn forget(&self, key: &CacheKey) {
        self.far.forget(key);
    }

    fn remote(&self) -> Option<RemoteReport> {
        self.far.remote()
    }
}
