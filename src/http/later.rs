//! Answers that are not ready yet, waited for without a thread.
//!
//! A handler that would wait (on an upstream fetch, a download, an open)
//! returns `Response::later(Later)` instead. The server then keeps the
//! connection and the request in its waiting table — no worker, no thread —
//! and lets `subscribe` hand a `Waker` to whatever is being waited on. When
//! that calls `wake`, or when the deadline passes, the request goes back to
//! a worker, which calls `resume` for the answer (which may be another
//! `Later`). A waker outliving its request (woken twice, or after the
//! deadline) does nothing. While it waits, its socket is watched for the
//! client hanging up (`EPOLLRDHUP`): then the request is dropped at once
//! (counted as abandoned) instead of holding its descriptor until the
//! deadline.
//!
//! Lock rule: the waiting table's lock is held only to insert or remove an
//! entry, never while a waker or a resume function runs.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use super::conn::Conn;
use super::request::Request;
use super::response::Response;
use super::Shared;

/// Computes an answer once woken or at the deadline.
pub type Resume = Box<dyn FnOnce(&Request) -> Response + Send>;

/// An answer to come.
pub struct Later {
    /// `resume` is called at the latest then, woken or not.
    pub deadline: Instant,
    /// Called once, right after the request is parked, with its waker.
    pub subscribe: Box<dyn FnOnce(Waker) + Send>,
    pub resume: Resume,
}

/// A handler's answer before failures are mapped to statuses: ready, a
/// typed failure, or parked and resumed into another outcome. Handlers
/// below the app return it, so that the app alone maps failures (its one
/// status table, given to `respond`) and every wait parks the same way.
pub enum Outcome<E> {
    Ready(Response),
    Failed(E),
    Parked(Parked<E>),
}

/// An outcome to come: `Later`, resumed into an `Outcome`.
pub struct Parked<E> {
    pub deadline: Instant,
    pub subscribe: Box<dyn FnOnce(Waker) + Send>,
    pub resume: ResumeOutcome<E>,
}

/// Computes an outcome once woken or at the deadline.
pub type ResumeOutcome<E> = Box<dyn FnOnce(&Request) -> Outcome<E> + Send>;

impl<E: 'static> Outcome<E> {
    /// The response: failures mapped by `map`, a parked outcome parked as
    /// a `Later` whose answer is mapped the same way.
    pub fn respond(self, map: fn(&E) -> Response) -> Response {
        match self {
            Outcome::Ready(r) => r,
            Outcome::Failed(e) => map(&e),
            Outcome::Parked(p) => {
                let resume = p.resume;
                Response::later(Later {
                    deadline: p.deadline,
                    subscribe: p.subscribe,
                    resume: Box::new(move |req: &Request| resume(req).respond(map)),
                })
            }
        }
    }
}

impl<E> From<Response> for Outcome<E> {
    fn from(r: Response) -> Outcome<E> {
        Outcome::Ready(r)
    }
}

/// Wakes one waiting request. Cheap to clone; waking twice is harmless.
#[derive(Clone)]
pub struct Waker(WakeTarget);

#[derive(Clone)]
enum WakeTarget {
    /// A request parked in a server.
    Server { token: u64, shared: Weak<Shared> },
    /// Anything else (`settle`, tests).
    Callback(Arc<dyn Fn() + Send + Sync>),
}

impl Waker {
    pub fn wake(&self) {
        match &self.0 {
            WakeTarget::Server { token, shared } => {
                if let Some(shared) = shared.upgrade() {
                    shared.waiting.resume(&shared, *token);
                }
            }
            WakeTarget::Callback(f) => f(),
        }
    }

    /// Whether the request this waker wakes still waits: `false` once its
    /// client hung up (or it was answered, or the server is gone). Work
    /// that nobody waits for any more can then stop.
    pub fn is_waiting(&self) -> bool {
        match &self.0 {
            WakeTarget::Server { token, shared } => {
                shared.upgrade().is_some_and(|s| s.waiting.contains(*token))
            }
            WakeTarget::Callback(_) => true,
        }
    }

    /// A waker that calls `f`.
    pub fn from_fn(f: impl Fn() + Send + Sync + 'static) -> Waker {
        Waker(WakeTarget::Callback(Arc::new(f)))
    }
}

impl crate::flight::Watcher for Waker {
    fn wake(&self) {
        Waker::wake(self);
    }
    fn is_waiting(&self) -> bool {
        Waker::is_waiting(self)
    }
}

/// Drives a response to its final form on the calling thread, waiting for
/// each `Later` until it is woken or its deadline passes: what the server
/// does without a thread, done with one (tests, tools).
pub fn settle(request: &Request, mut response: Response) -> Response {
    while let Some(later) = response.take_later() {
        let (tx, rx) = crossbeam_channel::bounded::<()>(1);
        (later.subscribe)(Waker::from_fn(move || {
            let _ = tx.try_send(());
        }));
        let left = later.deadline.saturating_duration_since(Instant::now());
        let _ = rx.recv_timeout(left);
        response = (later.resume)(request);
    }
    response
}

/// A request parked until its answer is ready.
pub(crate) struct Waiting {
    pub conn: Conn,
    pub request: Request,
    pub resume: Resume,
    pub started: Instant,
}

#[derive(Default)]
struct Table {
    entries: HashMap<u64, (Waiting, Instant)>,
    deadlines: BTreeSet<(Instant, u64)>,
}

#[derive(Default)]
pub(crate) struct WaitingTable {
    table: Mutex<Table>,
    next: AtomicU64,
}

impl WaitingTable {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // Inserts and removes only: a poisoned lock is consistent.
        crate::lock(&self.table)
    }

    /// Parks `waiting` until `deadline` and subscribes its waker.
    pub fn park(
        &self,
        shared: &Arc<Shared>,
        waiting: Waiting,
        deadline: Instant,
        subscribe: Box<dyn FnOnce(Waker) + Send>,
    ) {
        let token = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        {
            let mut t = self.lock();
            t.deadlines.insert((deadline, token));
            let (w, _) = t.entries.entry(token).or_insert((waiting, deadline));
            // Armed under the table lock, after the entry exists: a hang-up
            // reported at once finds it, and a resume (which takes the
            // entry under this lock) re-arms the socket only after this.
            shared.poller.watch_hangup(&mut w.conn, token);
            shared
                .stats
                .waiting
                .store(t.entries.len() as u64, Ordering::Relaxed);
        }
        subscribe(Waker(WakeTarget::Server {
            token,
            shared: Arc::downgrade(shared),
        }));
    }

    fn contains(&self, token: u64) -> bool {
        self.lock().entries.contains_key(&token)
    }

    fn take(&self, shared: &Shared, token: u64) -> Option<Waiting> {
        let mut t = self.lock();
        let (w, deadline) = t.entries.remove(&token)?;
        t.deadlines.remove(&(deadline, token));
        shared
            .stats
            .waiting
            .store(t.entries.len() as u64, Ordering::Relaxed);
        Some(w)
    }

    /// Sends a woken request back to the workers.
    fn resume(&self, shared: &Arc<Shared>, token: u64) {
        if let Some(w) = self.take(shared, token) {
            shared.send_work(super::worker::Work::Resume(Box::new(w)));
        }
    }

    /// Drops a parked request whose client hung up (its connection closes;
    /// the fetch or download it waited for goes on for the others).
    pub fn abandon(&self, shared: &Shared, token: u64) {
        if let Some(w) = self.take(shared, token) {
            shared.stats.abandoned.fetch_add(1, Ordering::Relaxed);
            log::debug!(
                "{} hung up while {} {} waited",
                w.conn.peer,
                w.request.method(),
                w.request.target()
            );
        }
    }

    /// Resumes every request past its deadline; returns the next deadline.
    pub fn expire(&self, shared: &Arc<Shared>, now: Instant) -> Option<Instant> {
        let due: Vec<u64> = {
            let t = self.lock();
            t.deadlines
                .iter()
                .take_while(|(d, _)| *d <= now)
                .map(|(_, k)| *k)
                .collect()
        };
        for token in due {
            self.resume(shared, token);
        }
        self.lock().deadlines.iter().next().map(|(d, _)| *d)
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Drops every waiting request (shutdown).
    pub fn clear(&self) {
        let all: Vec<(Waiting, Instant)> = {
            let mut t = self.lock();
            t.deadlines.clear();
            t.entries.drain().map(|(_, v)| v).collect()
        };
        drop(all);
    }
}
