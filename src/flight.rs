//! One result that many wait for (single-flight): whoever starts the work
//! completes the flight once; everyone else registers a callback (a parked
//! request's waker) or reads the result. Callbacks run outside the lock.

use std::sync::{Mutex, MutexGuard};

/// Called once the result is in.
pub type OnDone = Box<dyn FnOnce() + Send>;

pub struct Flight<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    result: Option<T>,
    waiters: Vec<OnDone>,
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
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // One assignment per update: a poisoned lock is consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the result (the first one wins) and calls every waiter.
    pub fn complete(&self, result: T) {
        let waiters = {
            let mut st = self.lock();
            if st.result.is_none() {
                st.result = Some(result);
            }
            std::mem::take(&mut st.waiters)
        };
        for w in waiters {
            w();
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
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
}
