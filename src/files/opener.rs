//! Upstream work a request waits for with a deadline (opening a body for a
//! range or a stream-through, fetching a small file whole), on a bounded
//! pool: the request waits at most its deadline (then it is redirected, or
//! gets a 504) and the work goes on in the pool, never on a thread of its
//! own. A full queue is answered at once (`Busy`).

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// Jobs waiting for a thread beyond the running ones.
const QUEUE: usize = 256;

type Job = Box<dyn FnOnce() + Send>;

pub struct Opener {
    jobs: Sender<Job>,
}

/// The outcome of `run`.
pub enum Opened<T> {
    Ready(T),
    /// The deadline passed first (the job goes on; its result is dropped).
    Late,
    /// The pool and its queue are full.
    Busy,
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

    /// Runs `f` on the pool and waits for its result at most `wait`.
    pub fn run<T: Send + 'static>(
        &self,
        wait: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Opened<T> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let job: Job = Box::new(move || {
            // The requester may have given up: that is fine.
            let _ = reply.send(f());
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => return Opened::Busy,
        }
        match answer.recv_timeout(wait.max(Duration::from_millis(1))) {
            Ok(r) => Opened::Ready(r),
            Err(_) => Opened::Late,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_and_busy_answer_at_once() {
        let o = Opener::start(1).unwrap();
        assert!(matches!(
            o.run(Duration::from_secs(5), || 7),
            Opened::Ready(7)
        ));
        let (release, held) = crossbeam_channel::bounded::<()>(0);
        // Occupy the one thread, then fill the queue.
        let held2 = held.clone();
        assert!(matches!(
            o.run(Duration::from_millis(1), move || held2.recv().is_ok()),
            Opened::Late
        ));
        let mut busy = false;
        for _ in 0..QUEUE + 1 {
            let h = held.clone();
            if let Opened::Busy = o.run(Duration::from_millis(1), move || h.recv().is_ok()) {
                busy = true;
                break;
            }
        }
        assert!(busy, "a full queue answers Busy");
        drop(release);
    }
}
