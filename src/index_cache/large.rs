//! Copies of pages too large to keep (`Hollow`: answered, not kept) that
//! requests in flight still hold. Each costs about twice its page's JSON
//! (pydantic-core: 12 MB), and eight clients asking for eight such pages at
//! once held eight of them (measured: 121 MiB peak with a 16 MiB index
//! cache). A load of such a page waits its turn while `LIMIT` copies are
//! alive, for at most `TURN_WAIT` (then it goes ahead: a wait is never
//! unbounded). Copies are counted from creation to the drop of the last
//! snapshot sharing them.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Copies alive at once before loads wait.
const LIMIT: usize = 2;
/// The longest a load waits for its turn.
const TURN_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(super) struct LargeCopies {
    alive: Mutex<usize>,
    freed: Condvar,
}

/// One copy alive; counted down when dropped.
#[derive(Debug)]
pub struct Held {
    copies: Arc<LargeCopies>,
}

impl Drop for Held {
    fn drop(&mut self) {
        *self.copies.lock() -= 1;
        self.copies.freed.notify_one();
    }
}

impl LargeCopies {
    fn lock(&self) -> MutexGuard<'_, usize> {
        // A counter: a poisoned lock is consistent.
        crate::lock(&self.alive)
    }

    /// Copies alive now.
    pub(super) fn alive(&self) -> usize {
        *self.lock()
    }

    /// Counts a new copy.
    pub(super) fn hold(self: &Arc<Self>) -> Arc<Held> {
        *self.lock() += 1;
        Arc::new(Held {
            copies: Arc::clone(self),
        })
    }

    /// Waits (a fetch thread) while `LIMIT` copies are alive, at most
    /// `TURN_WAIT`.
    pub(super) fn wait_turn(&self) {
        let deadline = Instant::now() + TURN_WAIT;
        let mut alive = self.lock();
        while *alive >= LIMIT {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            alive = self
                .freed
                .wait_timeout(alive, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_counted_until_the_last_holder_drops() {
        let c = Arc::new(LargeCopies::default());
        let a = c.hold();
        let shared = Arc::clone(&a);
        let b = c.hold();
        assert_eq!(c.alive(), 2);
        drop(a);
        assert_eq!(c.alive(), 2, "still shared");
        drop(shared);
        assert_eq!(c.alive(), 1);
        let t = Instant::now();
        c.wait_turn();
        assert!(t.elapsed() < Duration::from_millis(100), "a turn is free");
        let d = c.hold();
        let waiter = {
            let c = Arc::clone(&c);
            std::thread::spawn(move || {
                let t = Instant::now();
                c.wait_turn();
                t.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        drop(b);
        let waited = waiter.join().unwrap();
        assert!(
            waited >= Duration::from_millis(150) && waited < TURN_WAIT,
            "waited {waited:?} for a copy to go"
        );
        drop(d);
        assert_eq!(c.alive(), 0);
    }
}
