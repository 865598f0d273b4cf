//! One result that many wait for (single-flight), the one kind used for
//! page fetches, syntheses and renders: whoever starts the work completes
//! the flight once; everyone else registers a callback, watches it with a
//! parked request's waker, blocks for it (`wait`, off the request workers
//! only), or reads the result. Callbacks and wakers run outside the lock.

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

pub struct Flight<T> {
    state: Mutex<State<T>>,
    done: Condvar,
    begun: Instant,
}

struct State<T> {
    result: Option<T>,
    waiters: Vec<OnDone>,
    watchers: Vec<Box<dyn Watcher>>,
}

impl<T: Clone> Default for Flight<T> {
    fn default() -> Self {
        Flight::new()
    }
}

impl<T: Clone> Flight<T> {
    pub fn new() -> Flight<T> {
        Flight {
            state: Mutex::new(State {
                result: None,
                waiters: Vec::new(),
                watchers: Vec::new(),
            }),
            done: Condvar::new(),
            begun: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // One assignment per update: a poisoned lock is consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the result (the first one wins) and calls every waiter.
    pub fn complete(&self, result: T) {
        let (waiters, watchers) = {
            let mut st = self.lock();
            if st.result.is_none() {
                st.result = Some(result);
            }
            (
                std::mem::take(&mut st.waiters),
                std::mem::take(&mut st.watchers),
            )
        };
        self.done.notify_all();
        // Outside the lock: a waiter may look at this flight again.
        for w in waiters {
            w();
        }
        for w in watchers {
            w.wake();
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
        let deadline = Instant::now() + limit;
        let mut st = self.lock();
        loop {
            if let Some(r) = st.result.as_ref() {
                return Some(r.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            st = self
                .done
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
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
