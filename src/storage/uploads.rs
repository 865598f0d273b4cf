//! The one upload queue of the bucket: saved pages and their deletes (a
//! page fetch never waits for S3), and files whose first put failed while
//! the near (L1) copy is kept. One thread works it, retrying with growing
//! pauses; a retry reads the bytes back from the near side, so a queued
//! file holds no descriptor, and one evicted meanwhile is given up (the
//! next node that misses it fetches it again). The queue is bounded; what
//! does not fit is logged and counted.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::remote::{put_stored, TierStats};
use super::s3::Bucket;
use super::{Item, Lookup, Storage};

const MAX_PENDING: usize = 4096;
/// Queued jobs that hold an open file (a staged page in `s3` mode).
const MAX_HELD_FILES: usize = 64;
const MAX_ATTEMPTS: u32 = 8;
const FIRST_PAUSE: Duration = Duration::from_secs(5);
const MAX_PAUSE: Duration = Duration::from_secs(600);

/// Where a job's bytes come from.
pub(super) enum Body {
    /// The near side's copy, read back when the job runs.
    Near,
    /// A file the near side does not keep (staged), held open.
    File(Arc<File>, u64),
    Bytes(bytes::Bytes),
    /// Not a put: the object is deleted.
    Delete,
}

/// When a new job runs.
pub(super) enum Due {
    Now,
    /// After the first pause (a put that just failed).
    Later,
}

struct Job {
    item: Item,
    object: String,
    body: Body,
    attempts: u32,
    at: Instant,
}

pub(super) struct Uploads {
    queue: Mutex<VecDeque<Job>>,
    cv: Condvar,
}

fn pause(attempts: u32) -> Duration {
    FIRST_PAUSE
        .saturating_mul(1 << attempts.min(16))
        .min(MAX_PAUSE)
}

impl Uploads {
    /// The queue and its thread (which ends with the queue).
    pub(super) fn start(
        near: Arc<dyn Storage>,
        bucket: Arc<Bucket>,
        stats: Arc<TierStats>,
    ) -> std::io::Result<Arc<Uploads>> {
        let uploads = Arc::new(Uploads {
            queue: Mutex::new(VecDeque::new()),
            cv: Condvar::new(),
        });
        let weak = Arc::downgrade(&uploads);
        std::thread::Builder::new()
            .name("roxpi-upload".into())
            .spawn(move || loop {
                let Some(uploads) = weak.upgrade() else {
                    return;
                };
                if let Some(job) = uploads.next_due() {
                    uploads.run(&*near, &bucket, &stats, job);
                }
            })?;
        Ok(uploads)
    }

    pub(super) fn len(&self) -> usize {
        crate::lock(&self.queue).len()
    }

    pub(super) fn push(&self, item: Item, object: String, body: Body, due: Due) {
        let mut q = crate::lock(&self.queue);
        let held = q
            .iter()
            .filter(|j| matches!(j.body, Body::File(..)))
            .count();
        if q.len() >= MAX_PENDING || (matches!(body, Body::File(..)) && held >= MAX_HELD_FILES) {
            log::error!(
                "upload queue full ({} jobs): {object} is not updated in the bucket",
                q.len()
            );
            return;
        }
        let at = match due {
            Due::Now => Instant::now(),
            Due::Later => Instant::now() + pause(0),
        };
        q.push_back(Job {
            item,
            object,
            body,
            attempts: 0,
            at,
        });
        self.cv.notify_one();
    }

    /// The next job that is due (waits up to a second for one).
    fn next_due(&self) -> Option<Job> {
        let mut q = crate::lock(&self.queue);
        let now = Instant::now();
        match q.iter().position(|r| r.at <= now) {
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

    fn run(&self, near: &dyn Storage, bucket: &Bucket, stats: &TierStats, mut job: Job) {
        let counted = job.item.is_file();
        let done = match &job.body {
            Body::Delete => bucket.delete(&job.object),
            Body::File(f, len) => bucket.put_file(&job.object, f, *len).map(drop),
            Body::Bytes(b) => bucket.put_bytes(&job.object, b),
            Body::Near => match near.lookup(job.item.key()) {
                Lookup::Hit(stored) => put_stored(bucket, &job.object, &stored).map(drop),
                Lookup::Miss => {
                    if counted {
                        stats.upload_failures.fetch_add(1, Ordering::Relaxed);
                    }
                    log::warn!(
                        "{} was evicted before its upload: not in the bucket",
                        job.object
                    );
                    return;
                }
            },
        };
        match done {
            Ok(()) => {
                if counted {
                    stats.uploads.fetch_add(1, Ordering::Relaxed);
                }
                if job.attempts > 0 {
                    log::info!(
                        "upload of {} succeeded on retry {}",
                        job.object,
                        job.attempts
                    );
                }
            }
            Err(e) if job.attempts + 1 >= MAX_ATTEMPTS => {
                if counted {
                    stats.upload_failures.fetch_add(1, Ordering::Relaxed);
                }
                log::error!(
                    "{} not updated in the bucket after {MAX_ATTEMPTS} tries ({e}): kept locally only",
                    job.object
                );
            }
            Err(e) => {
                job.attempts += 1;
                job.at = Instant::now() + pause(job.attempts);
                log::warn!(
                    "{} not updated in the bucket ({e}): next try in {:?}",
                    job.object,
                    pause(job.attempts)
                );
                crate::lock(&self.queue).push_back(job);
            }
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
