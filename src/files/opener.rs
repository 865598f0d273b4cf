//! Upstream work a request waits for (opening a body for a range or a
//! stream-through, fetching a small file whole), on a bounded pool. The
//! request does not wait in a thread: it gets a `Ticket` and is parked
//! until the work is done (the ticket calls its watchers) or its deadline
//! passes; the work goes on in the pool either way. A full queue is
//! answered at once (`None` from `submit`).

use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};

/// Jobs waiting for a thread beyond the running ones.
const QUEUE: usize = 256;

type Job = Box<dyn FnOnce() + Send>;

pub struct Opener {
    jobs: Sender<Job>,
}

struct Slot<T> {
    result: Option<T>,
    watchers: Vec<Box<dyn FnOnce() + Send>>,
}

/// The result of a job, when it is done. Clones share it.
pub struct Ticket<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

impl<T> Clone for Ticket<T> {
    fn clone(&self) -> Ticket<T> {
        Ticket {
            slot: Arc::clone(&self.slot),
        }
    }
}

impl<T> Ticket<T> {
    /// The result, if the job is done (taken: a second call gets `None`).
    pub fn take(&self) -> Option<T> {
        crate::lock(&self.slot).result.take()
    }

    /// Calls `f` when the job is done (at once if it is).
    pub fn on_done(&self, f: Box<dyn FnOnce() + Send>) {
        let mut slot = crate::lock(&self.slot);
        if slot.result.is_some() {
            drop(slot);
            f();
        } else {
            slot.watchers.push(f);
        }
    }
}

impl Opener {
    pub fn start(threads: usize) -> std::io::Result<Opener> {
        let (jobs, rx): (Sender<Job>, Receiver<Job>) = crossbeam_channel::bounded(QUEUE);
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("roxpi-open-{i}"))
                .stack_size(512 * 1024)
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                })?;
        }
        Ok(Opener { jobs })
    }

    /// Queues `f`; `None` when the pool and its queue are full.
    pub fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<Ticket<T>> {
        let slot = Arc::new(Mutex::new(Slot {
            result: None,
            watchers: Vec::new(),
        }));
        let done = Arc::clone(&slot);
        let job: Job = Box::new(move || {
            let r = f();
            let watchers = {
                let mut s = crate::lock(&done);
                s.result = Some(r);
                std::mem::take(&mut s.watchers)
            };
            for w in watchers {
                w();
            }
        });
        self.jobs.try_send(job).ok()?;
        Some(Ticket { slot })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn results_arrive_and_a_full_queue_says_so_at_once() {
        let o = Opener::start(1).unwrap();
        let t = o.submit(|| 7).unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        t.on_done(Box::new(move || {
            let _ = tx.send(());
        }));
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(t.take(), Some(7));
        assert_eq!(t.take(), None, "taken once");
        // Occupy the one thread, then fill the queue.
        let (release, held) = crossbeam_channel::bounded::<()>(0);
        let mut full = false;
        for _ in 0..QUEUE + 2 {
            let h = held.clone();
            if o.submit(move || h.recv().is_ok()).is_none() {
                full = true;
                break;
            }
        }
        assert!(full, "a full queue answers at once");
        drop(release);
    }
}
