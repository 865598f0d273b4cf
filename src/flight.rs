//! One result that many wait for (single-flight), the one kind used for
//! page fetches, downloads, syntheses and renders: whoever starts the work
//! completes the flight once; everyone else registers a callback, watches
//! it with a parked request's waker, blocks for it (`wait`, off the request
//! workers only), or reads the result. A flight may also carry progress
//! (`P`: a download's growing file): every update and the completion count
//! as a change, which `on_change` callbacks and `wait_for` see. Callbacks
//! and wakers run outside the lock.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Called once the result is in.
pub type OnDone = Box<dyn FnOnce() + Send>;

/// A parked request waiting on a flight (`http::Waker`): woken when the
/// result is in, and asked whether its client still waits.
pub trait Watcher: Send {
    fn wake(&self);
    fn is_waiting(&self) -> bool;
}

pub struct Flight<T, P = ()> {
    state: Mutex<State<T, P>>,
    /// Notified at every change.
    changed: Condvar,
    begun: Instant,
}

struct State<T, P> {
    result: Option<T>,
    progress: P,
    /// Counts changes (updates and the completion).
    version: u64,
    waiters: Vec<OnDone>,
    watchers: Vec<Box<dyn Watcher>>,
    /// Called once at the next change.
    on_change: Vec<OnDone>,
}

impl<T: Clone, P: Default> Default for Flight<T, P> {
    fn default() -> Self {
        Flight::new()
    }
}

impl<T: Clone, P: Default> Flight<T, P> {
    pub fn new() -> Flight<T, P> {
        Flight {
            state: Mutex::new(State {
                result: None,
                progress: P::default(),
                version: 0,
                waiters: Vec::new(),
                watchers: Vec::new(),
                on_change: Vec::new(),
            }),
            changed: Condvar::new(),
            begun: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T, P>> {
        // One assignment per update: a poisoned lock is consistent.
        crate::lock(&self.state)
    }

    /// Sets the result (the first one wins) and calls every waiter.
    pub fn complete(&self, result: T) {
        let (waiters, watchers, changes) = {
            let mut st = self.lock();
            if st.result.is_none() {
                st.result = Some(result);
            }
            st.version += 1;
            (
                std::mem::take(&mut st.waiters),
                std::mem::take(&mut st.watchers),
                std::mem::take(&mut st.on_change),
            )
        };
        self.changed.notify_all();
        // Outside the lock: a waiter may look at this flight again.
        for w in waiters.into_iter().chain(changes) {
            w();
        }
        for w in watchers {
            w.wake();
        }
    }

    /// Changes the progress (before the result is in) and tells everyone
    /// waiting for a change.
    pub fn update(&self, f: impl FnOnce(&mut P)) {
        let changes = {
            let mut st = self.lock();
            f(&mut st.progress);
            st.version += 1;
            std::mem::take(&mut st.on_change)
        };
        self.changed.notify_all();
        for w in changes {
            w();
        }
    }

    /// Reads the result and the progress together.
    pub fn with<R>(&self, f: impl FnOnce(Option<&T>, &P) -> R) -> R {
        let st = self.lock();
        f(st.result.as_ref(), &st.progress)
    }

    /// The change counter, to pass to `on_change`.
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// Calls `f` at the next change after `seen` (at once if there was one).
    pub fn on_change(&self, seen: u64, f: OnDone) {
        let mut st = self.lock();
        if st.version != seen {
            drop(st);
            f();
        } else {
            st.on_change.push(f);
        }
    }

    /// Blocks until `pick` finds what it waits for in the result, the
    /// progress and the change counter (`Some`), or `limit` passed
    /// (`None`). Never on a request worker.
    pub fn wait_for<R>(
        &self,
        limit: Duration,
        mut pick: impl FnMut(Option<&T>, &P, u64) -> Option<R>,
    ) -> Option<R> {
        let deadline = Instant::now() + limit;
        let mut st = self.lock();
        loop {
            if let Some(r) = pick(st.result.as_ref(), &st.progress, st.version) {
                return Some(r);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The result, if it is in.
    pub fn result(&self) -> Option<T> {
        self.lock().result.clone()
    }

    /// Calls `f` once the result is in (at once if it is).
    pub fn on_done(&self, f: OnDone) {
        let mut st = self.lock();
        if st.result.is_some() {
            drop(st);
            f();
        } else {
            st.waiters.push(f);
        }
    }

    /// Wakes `w` once the result is in (at once if it is); while it waits,
    /// it keeps the flight `wanted`.
    pub fn watch(&self, w: Box<dyn Watcher>) {
        let mut st = self.lock();
        if st.result.is_some() {
            drop(st);
            w.wake();
        } else {
            st.watchers.push(w);
        }
    }

    /// Whether anyone still waits for the result: a callback, a watcher
    /// whose client has not hung up, or a flight younger than `grace`
    /// (its first request subscribes right after it begins).
    pub fn wanted(&self, grace: Duration) -> bool {
        let st = self.lock();
        self.begun.elapsed() < grace
            || !st.waiters.is_empty()
            || st.watchers.iter().any(|w| w.is_waiting())
    }

    /// Blocks up to `limit` for the result; `None` on timeout. Never on a
    /// request worker.
    pub fn wait(&self, limit: Duration) -> Option<T> {
        self.wait_for(limit, |result, _, _| result.cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn waiters_run_once_whether_before_or_after_the_result() {
        let f = Flight::<u32>::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        f.on_done(Box::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        }));
        assert_eq!(f.result(), None);
        f.complete(7);
        f.complete(8);
        assert_eq!(f.result(), Some(7), "the first result wins");
        let c = Arc::clone(&calls);
        f.on_done(Box::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        }));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    struct Probe {
        waiting: Arc<AtomicBool>,
        woken: Arc<AtomicUsize>,
    }

    impl Watcher for Probe {
        fn wake(&self) {
            self.woken.fetch_add(1, Ordering::SeqCst);
        }
        fn is_waiting(&self) -> bool {
            self.waiting.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn watchers_keep_a_flight_wanted_until_their_client_leaves() {
        let f = Flight::<u32>::new();
        assert!(f.wanted(Duration::from_secs(60)), "within its grace");
        assert!(!f.wanted(Duration::ZERO), "nobody watches");
        let (waiting, woken) = (
            Arc::new(AtomicBool::new(true)),
            Arc::new(AtomicUsize::new(0)),
        );
        f.watch(Box::new(Probe {
            waiting: Arc::clone(&waiting),
            woken: Arc::clone(&woken),
        }));
        assert!(f.wanted(Duration::ZERO));
        waiting.store(false, Ordering::SeqCst);
        assert!(!f.wanted(Duration::ZERO), "the client hung up");
        f.complete(1);
        assert_eq!(woken.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn wait_returns_the_result_or_times_out() {
        let f = Arc::new(Flight::<u32>::new());
        assert_eq!(f.wait(Duration::from_millis(10)), None);
        let g = Arc::clone(&f);
        let t = std::thread::spawn(move || g.wait(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(20));
        f.complete(3);
        assert_eq!(t.join().unwrap(), Some(3));
    }
}
