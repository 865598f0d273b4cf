//! Uploads to retry: a new download whose PUT failed while its local (L1)
//! copy is kept. One thread retries them with growing pauses, reading the
//! file back from the local side; a file evicted meanwhile is given up
//! (the next node that misses it fetches it from the upstream again).
//! The queue is bounded; what does not fit is logged and counted.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::FileStats;
use crate::storage::s3::Bucket;
use crate::storage::{CacheKey, Lookup, Storage, StoredBody};

const MAX_PENDING: usize = 4096;
const MAX_ATTEMPTS: u32 = 8;
const FIRST_PAUSE: Duration = Duration::from_secs(5);
const MAX_PAUSE: Duration = Duration::from_secs(600);

struct Retry {
    key: CacheKey,
    object: String,
    attempts: u32,
    at: Instant,
}

pub(super) struct Retries {
    queue: Mutex<VecDeque<Retry>>,
    cv: Condvar,
}

fn pause(attempts: u32) -> Duration {
    FIRST_PAUSE
        .saturating_mul(1 << attempts.min(16))
        .min(MAX_PAUSE)
}

impl Retries {
    pub(super) fn new() -> Arc<Retries> {
        Arc::new(Retries {
            queue: Mutex::new(VecDeque::new()),
            cv: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Retry>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(super) fn push(&self, key: CacheKey, object: String) {
        let mut q = self.lock();
        if q.len() >= MAX_PENDING {
            log::error!("upload retry queue full ({MAX_PENDING}): {object} stays local only");
            return;
        }
        q.push_back(Retry {
            key,
            object,
            attempts: 0,
            at: Instant::now() + pause(0),
        });
        self.cv.notify_one();
    }

    /// The retry thread (it ends when `retries` is the last reference).
    pub(super) fn start(
        retries: &Arc<Retries>,
        storage: Arc<dyn Storage>,
        bucket: Arc<Bucket>,
        stats: Arc<FileStats>,
    ) -> std::io::Result<()> {
        let weak = Arc::downgrade(retries);
        std::thread::Builder::new()
            .name("roxpi-upload-retry".into())
            .spawn(move || loop {
                let Some(retries) = weak.upgrade() else {
                    return;
                };
                let Some(job) = retries.next_due() else {
                    continue;
                };
                drop(retries);
                let Some(retries) = weak.upgrade() else {
                    return;
                };
                retry(&retries, &*storage, &bucket, &stats, job);
            })?;
        Ok(())
    }

    /// The next retry that is due (waits up to a second for one).
    fn next_due(&self) -> Option<Retry> {
        let mut q = self.lock();
        let now = Instant::now();
        let due = q.iter().position(|r| r.at <= now);
        match due {
            Some(i) => q.remove(i),
            None => {
                let wait = q
                    .iter()
                    .map(|r| r.at.saturating_duration_since(now))
                    .min()
                    .unwrap_or(Duration::from_secs(1))
                    .min(Duration::from_secs(1));
                let _ = self.cv.wait_timeout(q, wait);
                None
            }
        }
    }
}

fn retry(
    retries: &Retries,
    storage: &dyn Storage,
    bucket: &Bucket,
    stats: &FileStats,
    mut job: Retry,
) {
    let Lookup::Hit(stored) = storage.lookup(&job.key) else {
        stats.upload_failures.fetch_add(1, Ordering::Relaxed);
        log::warn!(
            "{} was evicted before its upload could be retried: not in the bucket",
            job.object
        );
        return;
    };
    let put = match &stored.body {
        StoredBody::Local(f) => bucket.put_file(&job.object, f, stored.len),
        StoredBody::Memory(b) => bucket.put_bytes(&job.object, b).map(|()| None),
        StoredBody::Remote(_) => return,
    };
    match put {
        Ok(_) => {
            stats.uploads.fetch_add(1, Ordering::Relaxed);
            log::info!(
                "upload of {} succeeded on retry {}",
                job.object,
                job.attempts + 1
            );
        }
        Err(e) if job.attempts + 1 >= MAX_ATTEMPTS => {
            stats.upload_failures.fetch_add(1, Ordering::Relaxed);
            log::error!(
                "upload of {} failed {MAX_ATTEMPTS} times ({e}): kept locally only",
                job.object
            );
        }
        Err(e) => {
            job.attempts += 1;
            job.at = Instant::now() + pause(job.attempts);
            log::warn!(
                "upload of {} failed again ({e}): next try in {:?}",
                job.object,
                pause(job.attempts)
            );
            retries.lock().push_back(job);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_and_stay_bounded() {
        assert_eq!(pause(0), FIRST_PAUSE);
        assert!(pause(1) > pause(0));
        assert_eq!(pause(30), MAX_PAUSE);
    }
}
