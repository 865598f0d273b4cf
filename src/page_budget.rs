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
//! Neither depends on `ROXPI_INDEX_CACHE_SIZE` (`standard`): the bytes
//! read are transient (a page is parsed, then its buffer goes), and a
//! small index cache must not refuse a real page. PyPI's largest project
//! pages are about 7 MB (pydantic-core, 15,057 files); a page may be
//! `MAX_PAGE`, and two big pages are read at once.
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
/// The largest page accepted (decoded): over four times PyPI's largest.
pub const MAX_PAGE: u64 = 32 << 20;
/// Big pages read at once.
const BIG_SLOTS: usize = 2;

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

    /// The upstream's budget: pages up to `MAX_PAGE`, two big ones at once.
    pub fn standard() -> PageBudget {
        PageBudget::new(MAX_PAGE, BIG_SLOTS, Duration::from_secs(30))
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        // A counter: a poisoned lock is consistent.
        crate::lock(&self.taken)
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

/// Threads parsing pages: one. Parsing is fast (pydantic-core's 6.9 MB
/// page, the largest on PyPI: about 60 ms), and one thread means a second
/// page waits for the first instead of doubling the peak.
const PARSE_THREADS: usize = 1;

/// Work done on the parse thread.
type ParseJob = Box<dyn FnOnce() + Send>;

/// Runs `job` on the parse thread and waits for its result (a panic in
/// `job` is resumed in the caller). Every page parse — fetched, loaded
/// from disk or from the bucket — runs there, so a parsed page's memory is
/// allocated by one thread, not by whichever of the 32 fetch threads read
/// it: glibc keeps each thread's freed memory in that thread's arena.
/// Measured with the 12 real fixture pages, 4 clients, a 16 MiB index
/// cache: parsing on the fetch threads peaked at 342 MiB RSS, on this one
/// thread at 169 MiB (one arena for everything: 95 MiB). Falls back to the
/// calling thread if the thread cannot be started, or is the caller.
pub fn on_parse_thread<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> T {
    static POOL: std::sync::OnceLock<Option<crossbeam_channel::Sender<ParseJob>>> =
        std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded::<ParseJob>();
        for i in 0..PARSE_THREADS {
            let rx = rx.clone();
            let started = std::thread::Builder::new()
                .name(format!("roxpi-parse-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                });
            if let Err(e) = started {
                log::warn!("cannot start the parse thread ({e}): pages are parsed in place");
                return None;
            }
        }
        Some(tx)
    });
    // Called from the parse thread itself: in place (waiting for itself
    // would never end).
    let on_it = std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with("roxpi-parse-"));
    let Some(pool) = pool.as_ref().filter(|_| !on_it) else {
        return job();
    };
    let (done, result) = crossbeam_channel::bounded(1);
    let sent = pool.send(Box::new(move || {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        let _ = done.send(out);
    }));
    let out = match sent {
        Ok(()) => result.recv().ok(),
        Err(_) => None,
    };
    match out {
        Some(Ok(v)) => v,
        Some(Err(panic)) => std::panic::resume_unwind(panic),
        // The thread is gone (it lives as long as the process).
        None => std::panic::resume_unwind(Box::new("parse thread gone")),
    }
}

/// Buffers up to this size stay on the heap.
const HEAP_BUF: usize = 64 * 1024;

/// A page's bytes (read from an upstream or disk, or rendered): on the heap
/// while small, in an anonymous mapping of `max` bytes (touched only as far
/// as written) once past `HEAP_BUF`. Unmapped when the last copy goes,
/// they return to the system at once: on the heap, glibc kept big buffers
/// in the arena of the thread that freed them (measured: RSS ratcheted 18 →
/// 310 MiB over five rounds of 16 hostile pages).
pub enum PageBuf {
    Heap(Vec<u8>),
    Mapped { map: MmapMut, len: usize },
}

impl Default for PageBuf {
    fn default() -> Self {
        PageBuf::Heap(Vec::new())
    }
}

impl io::Write for PageBuf {
    /// Writes past `MAX_PAGE * 2` fail (a rendered page).
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.extend(data, 2 * MAX_PAGE)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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

    /// Appends `data`; past `max` bytes in all it fails.
    pub fn extend(&mut self, data: &[u8], max: u64) -> io::Result<()> {
        let new_len = self.len() + data.len();
        if new_len as u64 > max.max(HEAP_BUF as u64) {
            return Err(io::Error::other("page buffer full"));
        }
        if let PageBuf::Heap(v) = self {
            if new_len <= HEAP_BUF {
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

    /// Reads `r` to its end, at most `max` bytes.
    pub fn read_from(mut r: impl io::Read, max: u64) -> io::Result<PageBuf> {
        let mut buf = PageBuf::default();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match r.read(&mut chunk) {
                Ok(0) => return Ok(buf),
                Ok(n) => buf.extend(&chunk[..n], max)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The bytes, shared, in memory of their own size: a mapping much
    /// larger than its bytes is copied into one that fits (a kept page
    /// must not hold `max` bytes of address space: 32-bit boards have
    /// 3 GiB in all).
    pub fn into_compact_bytes(self) -> io::Result<Bytes> {
        match self {
            PageBuf::Mapped { map, len } if map.len() / 2 > len => {
                let mut fit = MmapMut::map_anon(len.max(1))?;
                fit[..len].copy_from_slice(&map[..len]);
                Ok(Bytes::from_owner(fit).slice(..len))
            }
            other => Ok(other.into_bytes()),
        }
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
    fn sizes_are_floored() {
        let b = PageBudget::standard();
        assert!(b.max_page >= 7 << 20, "PyPI's largest page fits");
        assert_eq!(b.slots, BIG_SLOTS);
        let tiny = PageBudget::new(0, 0, Duration::ZERO);
        assert_eq!((tiny.max_page, tiny.slots), (SMALL_PAGE, 1));
    }

    #[test]
    fn parse_jobs_run_on_the_parse_thread_even_nested() {
        let (name, nested) = on_parse_thread(|| {
            let here = std::thread::current().name().map(str::to_owned);
            let nested = on_parse_thread(|| std::thread::current().name().map(str::to_owned));
            (here, nested)
        });
        assert_eq!(name.as_deref(), Some("roxpi-parse-0"));
        assert_eq!(nested, name, "a nested job runs in place");
        let caught = std::panic::catch_unwind(|| on_parse_thread(|| panic!("boom")));
        assert!(caught.is_err(), "a panic comes back to the caller");
        assert_eq!(on_parse_thread(|| 7), 7, "the thread survives a panic");
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
        let chunk = vec![7u8; 30 * 1024];
        for _ in 0..2 {
            b.extend(&chunk, 4 << 20).unwrap();
        }
        assert!(matches!(b, PageBuf::Heap(_)), "60 KiB stays on the heap");
        b.extend(&chunk, 4 << 20).unwrap();
        assert!(matches!(b, PageBuf::Mapped { .. }), "90 KiB is mapped");
        for _ in 0..37 {
            b.extend(&chunk, 4 << 20).unwrap();
        }
        assert_eq!(b.len(), 1200 * 1024);
        assert!(b.extend(&vec![0; 3 << 20], 4 << 20).is_err(), "past max");
        let bytes = b.into_bytes();
        assert_eq!(bytes.len(), 1200 * 1024);
        assert!(bytes.iter().all(|&x| x == 7));
    }
}
