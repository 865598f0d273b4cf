//! The memory bound for upstream pages. A page is read (decoded) into
//! memory and parsed; without a bound, a gzip bomb or a 200 MB page costs
//! gigabytes, and many at once cost many times that.
//!
//! - Every page may use `small` bytes (1 MiB) without asking: the common
//!   case, bounded by the fetch threads.
//! - A page that grows past that must hold one of a few big-page slots
//!   until it is parsed; waiting for one is bounded (30 s, then the fetch is
//!   refused as busy). A slot holder never waits again, so big pages cannot
//!   deadlock each other.
//! - No page may exceed `max_page` decoded bytes; past it the fetch fails
//!   with a clear error (a 502).
//!
//! Both numbers derive from `ROXPI_INDEX_CACHE_SIZE` (`for_cache`): a page
//! may be a quarter of the cache, and the slots together half of it.
//!
//! A big page's bytes live in an anonymous memory mapping (`PageBuf`), not
//! on the heap: unmapped when the page is done, they go back to the system
//! at once. On the heap, every fetch thread's allocator arena kept the
//! buffers of the biggest page it had read, and RSS ratcheted up with each
//! attack (measured: 18 → 310 MiB over five rounds of 16 hostile pages).

use std::io;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use memmap2::MmapMut;

/// Pages up to this size need no slot.
pub const SMALL_PAGE: u64 = 1 << 20;
/// The largest page whatever the cache size.
pub const LARGEST_PAGE: u64 = 256 << 20;

#[derive(Debug)]
pub struct PageBudget {
    pub max_page: u64,
    slots: usize,
    taken: Mutex<usize>,
    freed: Condvar,
    wait: Duration,
}

/// A big-page slot; given back when dropped.
#[derive(Debug)]
pub struct BigSlot<'a> {
    budget: &'a PageBudget,
}

impl Drop for BigSlot<'_> {
    fn drop(&mut self) {
        let mut taken = self.budget.lock();
        *taken = taken.saturating_sub(1);
        drop(taken);
        self.budget.freed.notify_one();
    }
}

impl PageBudget {
    pub fn new(max_page: u64, slots: usize, wait: Duration) -> PageBudget {
        PageBudget {
            max_page: max_page.max(SMALL_PAGE),
            slots: slots.max(1),
            taken: Mutex::new(0),
            freed: Condvar::new(),
            wait,
        }
    }

    /// The budget for an index cache of `cache_bytes`.
    pub fn for_cache(cache_bytes: u64) -> PageBudget {
        let max_page = (cache_bytes / 4).clamp(SMALL_PAGE, LARGEST_PAGE);
        let slots = usize::try_from((cache_bytes / 2) / max_page).unwrap_or(1);
        PageBudget::new(max_page, slots, Duration::from_secs(30))
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        // A counter: a poisoned lock is consistent.
        self.taken.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A big-page slot, waiting at most the budget's wait; `None` if none
    /// freed up in time.
    pub fn big_slot(&self) -> Option<BigSlot<'_>> {
        let deadline = Instant::now() + self.wait;
        let mut taken = self.lock();
        while *taken >= self.slots {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            taken = self
                .freed
                .wait_timeout(taken, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *taken += 1;
        Some(BigSlot { budget: self })
    }
}

/// A page being read: on the heap while small, in an anonymous mapping of
/// `max` bytes once it grows past `SMALL_PAGE`.
pub enum PageBuf {
    Heap(Vec<u8>),
    Mapped { map: MmapMut, len: usize },
}

impl Default for PageBuf {
    fn default() -> Self {
        PageBuf::Heap(Vec::new())
    }
}

impl PageBuf {
    pub fn len(&self) -> usize {
        match self {
            PageBuf::Heap(v) => v.len(),
            PageBuf::Mapped { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `data`; the caller keeps the total within `max` bytes.
    pub fn extend(&mut self, data: &[u8], max: u64) -> io::Result<()> {
        let new_len = self.len() + data.len();
        if let PageBuf::Heap(v) = self {
            if new_len as u64 <= SMALL_PAGE {
                v.extend_from_slice(data);
                return Ok(());
            }
            let mut map = MmapMut::map_anon(usize::try_from(max).unwrap_or(usize::MAX))?;
            map[..v.len()].copy_from_slice(v);
            *self = PageBuf::Mapped { map, len: v.len() };
        }
        if let PageBuf::Mapped { map, len } = self {
            if new_len > map.len() {
                return Err(io::Error::other("page buffer full"));
            }
            map[*len..new_len].copy_from_slice(data);
            *len = new_len;
        }
        Ok(())
    }

    /// The bytes, shared; a mapping is unmapped when the last copy goes.
    pub fn into_bytes(self) -> Bytes {
        match self {
            PageBuf::Heap(v) => Bytes::from(v),
            PageBuf::Mapped { map, len } => Bytes::from_owner(map).slice(..len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_derive_from_the_cache() {
        let b = PageBudget::for_cache(64 << 20);
        assert_eq!(b.max_page, 16 << 20);
        assert_eq!(b.slots, 2);
        let tiny = PageBudget::for_cache(0);
        assert_eq!((tiny.max_page, tiny.slots), (SMALL_PAGE, 1));
        let huge = PageBudget::for_cache(1 << 40);
        assert_eq!(huge.max_page, LARGEST_PAGE);
    }

    #[test]
    fn slots_are_bounded_and_given_back() {
        let b = PageBudget::new(SMALL_PAGE, 2, Duration::from_millis(10));
        let one = b.big_slot().expect("first");
        let two = b.big_slot().expect("second");
        assert!(b.big_slot().is_none(), "only two");
        drop(one);
        let three = b.big_slot().expect("a freed slot is reused");
        drop((two, three));
        assert_eq!(*b.lock(), 0);
    }

    #[test]
    fn page_buffers_move_to_a_mapping_past_the_small_size() {
        let mut b = PageBuf::default();
        let chunk = vec![7u8; 300 * 1024];
        for _ in 0..3 {
            b.extend(&chunk, 4 << 20).unwrap();
        }
        assert!(matches!(b, PageBuf::Heap(_)), "900 KiB stays on the heap");
        b.extend(&chunk, 4 << 20).unwrap();
        assert!(matches!(b, PageBuf::Mapped { .. }), "1.2 MiB is mapped");
        assert_eq!(b.len(), 1200 * 1024);
        let bytes = b.into_bytes();
        assert_eq!(bytes.len(), 1200 * 1024);
        assert!(bytes.iter().all(|&x| x == 7));
    }
}
