//! Opening an upstream body with a deadline, on a bounded pool: a request
//! waits for the upstream's response headers at most its deadline (then it
//! is redirected, or gets a 504), and the open goes on in the pool, never on
//! a thread of its own. A full queue is answered at once (`Busy`).

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use url::Url;

use crate::origin::{Index, Origin, OriginError, Streamed};

/// Opens waiting for a thread beyond the running ones.
const QUEUE: usize = 256;

type Reply = Result<Streamed, OriginError>;

struct Job {
    index: Index,
    url: Url,
    range: Option<String>,
    reply: Sender<Reply>,
}

pub struct Opener {
    jobs: Sender<Job>,
}

/// The outcome of `open`.
pub enum Opened {
    Ready(Reply),
    /// The deadline passed first (the open goes on and is dropped).
    Late,
    /// The pool and its queue are full.
    Busy,
}

impl Opener {
    pub fn start(origin: Arc<dyn Origin>, threads: usize) -> std::io::Result<Opener> {
        let (jobs, rx): (Sender<Job>, Receiver<Job>) = crossbeam_channel::bounded(QUEUE);
        for i in 0..threads.max(1) {
            let (rx, origin) = (rx.clone(), Arc::clone(&origin));
            std::thread::Builder::new()
                .name(format!("roxpi-open-{i}"))
                .stack_size(512 * 1024)
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        let r = origin.open_file(&job.index, &job.url, job.range.as_deref());
                        // The requester may have given up: that is fine.
                        let _ = job.reply.send(r);
                    }
                })?;
        }
        Ok(Opener { jobs })
    }

    pub fn open(&self, index: &Index, url: &Url, range: Option<String>, wait: Duration) -> Opened {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let job = Job {
            index: index.clone(),
            url: url.clone(),
            range,
            reply,
        };
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
