//! How many upstream connections may be open at once. Descriptors for
//! upstream sockets come out of the reserve the HTTP server keeps beside
//! its connection cap (`http::connection_cap`), so that the upstream can
//! never push the accept loop into `EMFILE`. Pages and files draw on
//! separate budgets: downloads that hang cannot starve page fetches.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Permits for open upstream connections.
#[derive(Debug)]
pub struct SocketBudget {
    cap: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

/// One upstream connection's permit, released when dropped (with the
/// response body that holds it).
#[derive(Debug)]
pub struct Permit(Arc<SocketBudget>);

impl SocketBudget {
    pub fn new(cap: usize) -> Arc<SocketBudget> {
        Arc::new(SocketBudget {
            cap: cap.max(1),
            used: Mutex::new(0),
            freed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        crate::lock(&self.used)
    }

    /// A permit, waiting at most `wait` for one to be freed.
    pub fn acquire(self: &Arc<Self>, wait: Duration) -> Option<Permit> {
        let until = Instant::now() + wait;
        let mut used = self.lock();
        while *used >= self.cap {
            let left = until.checked_duration_since(Instant::now())?;
            used = self
                .freed
                .wait_timeout(used, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *used += 1;
        Some(Permit(Arc::clone(self)))
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn in_use(&self) -> usize {
        *self.lock()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut used = self.0.lock();
        *used = used.saturating_sub(1);
        drop(used);
        self.0.freed.notify_one();
    }
}

/// How many upstream sockets the reserve of `nofile` descriptors allows
/// (pure): half the reserve (the rest is for temp files, cached files
/// being sent and idle pooled connections), at least 4.
pub fn upstream_sockets(nofile: u64) -> usize {
    usize::try_from(crate::http::fd_reserve(nofile) / 2)
        .unwrap_or(usize::MAX)
        .clamp(4, 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_bounded_and_freed_on_drop() {
        let b = SocketBudget::new(2);
        let one = b.acquire(Duration::ZERO).unwrap();
        let _two = b.acquire(Duration::ZERO).unwrap();
        assert!(b.acquire(Duration::from_millis(20)).is_none());
        let waiter = {
            let b = Arc::clone(&b);
            std::thread::spawn(move || b.acquire(Duration::from_secs(5)).is_some())
        };
        std::thread::sleep(Duration::from_millis(20));
        drop(one);
        assert!(waiter.join().unwrap(), "woken by the freed permit");
        assert_eq!(b.in_use(), 1, "the waiter's permit ended with its thread");
    }

    #[test]
    fn upstream_sockets_fit_in_the_reserve() {
        for nofile in [0u64, 64, 256, 1024, 4096, 1 << 20] {
            let n = upstream_sockets(nofile) as u64;
            let reserve = crate::http::fd_reserve(nofile);
            assert!(n >= 4, "{nofile}");
            assert!(2 * n <= reserve, "{nofile}: {n} of {reserve}");
            let cap = crate::http::connection_cap(nofile) as u64;
            assert!(nofile < 64 || cap + reserve <= nofile, "{nofile}");
        }
        assert_eq!(upstream_sockets(256), 32);
    }
}
