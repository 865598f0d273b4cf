//! One download in progress: its state behind a mutex and a condvar, and
//! `GrowingReader`, which lets every requester stream the file while it
//! lands on disk.
//!
//! - The downloader advances the byte counter only after a write returned,
//!   then notifies. Readers `pread` up to that counter minus the last byte:
//!   the final byte leaves only once length and hash are verified, so a
//!   client never receives a complete-looking wrong file.
//! - Readers wait with `wait_timeout`, never forever; a failed download cuts
//!   every reader — except after a local write error (disk full), when a
//!   reader continues from the upstream with a range request and verifies
//!   the whole file itself.
//!
//! Lock rule: the state lock is never held across I/O (the `pread` happens
//! after it is released).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::error::FileError;
use super::Source;
use crate::http::StreamReady;
use crate::origin::Origin;
use crate::storage::verify::Verifier;

const CHUNK: usize = 256 * 1024;

pub(super) enum Phase {
    /// Waiting for the upstream's response headers.
    Starting,
    Streaming {
        file: Arc<File>,
        total: u64,
    },
    Done {
        file: Arc<File>,
        total: u64,
    },
    Failed(FileError),
}

pub(super) struct State {
    pub(super) phase: Phase,
    /// Bytes written to the file (and returned by `write`).
    pub(super) written: u64,
    /// The file is being read from the bucket (verified before anyone
    /// gets a byte): waiters keep waiting instead of being redirected.
    pub(super) reading_bucket: bool,
    /// The verified sha256, once done.
    pub(super) sha256: Option<Arc<str>>,
    /// The file came from the bucket (not the upstream).
    pub(super) from_bucket: bool,
    /// Counts changes, so a watcher can tell whether it missed one.
    version: u64,
    /// Called once at the next change (parked requests' wakers).
    watchers: Vec<Box<dyn FnOnce() + Send>>,
}

/// One download in progress.
pub struct InFlight {
    state: Mutex<State>,
    cv: Condvar,
}

impl InFlight {
    pub(super) fn new() -> InFlight {
        InFlight {
            state: Mutex::new(State {
                phase: Phase::Starting,
                written: 0,
                reading_bucket: false,
                sha256: None,
                from_bucket: false,
                version: 0,
                watchers: Vec::new(),
            }),
            cv: Condvar::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data updated in one assignment; poisoning cannot tear it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn set(&self, f: impl FnOnce(&mut State)) {
        let watchers = {
            let mut st = self.lock();
            f(&mut st);
            st.version += 1;
            std::mem::take(&mut st.watchers)
        };
        self.cv.notify_all();
        for w in watchers {
            w();
        }
    }

    /// Whether the download failed.
    pub fn is_failed(&self) -> bool {
        matches!(self.lock().phase, Phase::Failed(_))
    }

    /// Whether the file is being read from the bucket.
    pub fn reading_bucket(&self) -> bool {
        self.lock().reading_bucket
    }

    /// Whether the file came from the bucket.
    pub fn from_bucket(&self) -> bool {
        self.lock().from_bucket
    }

    /// The verified sha256 of a completed download.
    pub fn sha256(&self) -> Option<Arc<str>> {
        self.lock().sha256.clone()
    }

    /// The change counter, to pass to `on_change`.
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// Calls `f` at the next change after `seen` (at once if there was one).
    pub fn on_change(&self, seen: u64, f: Box<dyn FnOnce() + Send>) {
        let mut st = self.lock();
        if st.version != seen {
            drop(st);
            f();
        } else {
            st.watchers.push(f);
        }
    }

    /// Waits until `ready` picks an answer from the state (`Some`), the
    /// download failed (`Err`), or `limit` passed (`Ok(None)`).
    fn wait_for<T>(
        &self,
        limit: Duration,
        ready: impl Fn(&Phase) -> Option<T>,
    ) -> Result<Option<T>, FileError> {
        let deadline = Instant::now() + limit;
        let mut st = self.lock();
        loop {
            if let Phase::Failed(f) = &st.phase {
                return Err(f.clone());
            }
            if let Some(t) = ready(&st.phase) {
                return Ok(Some(t));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            st = self
                .cv
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits until the upstream answered (`Ok(Some)`: a reader of the
    /// growing file and its length), failed (`Err`), or `limit` passed.
    pub fn wait_started(
        self: &Arc<Self>,
        limit: Duration,
    ) -> Result<Option<GrowingReader>, FileError> {
        self.wait_for(limit, |phase| match phase {
            Phase::Streaming { file, total } | Phase::Done { file, total } => Some(GrowingReader {
                inflight: Arc::clone(self),
                file: Arc::clone(file),
                total: *total,
                pos: 0,
                fallback: None,
                relay: None,
                nonblocking: None,
            }),
            Phase::Starting | Phase::Failed(_) => None,
        })
    }

    /// Waits until the download is complete and verified (`Ok(Some)`: the
    /// file and its length), failed (`Err`), or `limit` passed (`Ok(None)`).
    pub fn wait_done(&self, limit: Duration) -> Result<Option<(Arc<File>, u64)>, FileError> {
        self.wait_for(limit, |phase| match phase {
            Phase::Done { file, total } => Some((Arc::clone(file), *total)),
            _ => None,
        })
    }
}

/// Reads a file while it is being downloaded; the last byte only after
/// verification; an error (cut) if the download fails — except after a
/// local write error (disk full), when it continues from the upstream with
/// a range request and verifies the whole file itself.
pub struct GrowingReader {
    inflight: Arc<InFlight>,
    file: Arc<File>,
    total: u64,
    pos: u64,
    fallback: Option<(Arc<dyn Origin>, Source)>,
    relay: Option<Relay>,
    /// Set when sent as a `Body::Ready`: reads never wait for the download.
    nonblocking: Option<Arc<Readiness>>,
}

/// When a non-blocking `GrowingReader` may read again: the download's next
/// change after the version it last saw without bytes to read.
pub struct Readiness {
    inflight: Arc<InFlight>,
    seen: AtomicU64,
    /// The reader relays from the upstream now (disk trouble): its reads
    /// block, so a transfer thread sends the rest.
    blocking: AtomicBool,
}

impl StreamReady for Readiness {
    fn subscribe(&self, wake: Box<dyn FnOnce() + Send>) {
        self.inflight
            .on_change(self.seen.load(Ordering::Acquire), wake);
    }

    fn needs_thread(&self) -> bool {
        self.blocking.load(Ordering::Acquire)
    }
}

/// The rest of a file straight from the upstream, hashed with the prefix.
struct Relay {
    body: Box<dyn Read + Send>,
    verifier: Option<Verifier>,
}

impl GrowingReader {
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Makes reads return `WouldBlock` instead of waiting for the download;
    /// the `Readiness` says when to read again (a `Body::Ready` stream).
    pub fn nonblocking(mut self) -> (GrowingReader, Arc<Readiness>) {
        let ready = Arc::new(Readiness {
            inflight: Arc::clone(&self.inflight),
            seen: AtomicU64::new(self.inflight.version()),
            blocking: AtomicBool::new(false),
        });
        self.nonblocking = Some(Arc::clone(&ready));
        (self, ready)
    }

    /// Whether a read may wait (a blocking reader, or one that switched to
    /// relaying from the upstream).
    fn may_block(&self) -> bool {
        self.nonblocking
            .as_ref()
            .is_none_or(|r| r.blocking.load(Ordering::Acquire))
    }

    /// Lets the reader finish from the upstream if the cache write fails.
    pub fn with_fallback(mut self, origin: Arc<dyn Origin>, source: Source) -> GrowingReader {
        self.fallback = Some((origin, source));
        self
    }

    /// Switches to relaying from the upstream at `pos` (disk trouble).
    fn start_relay(&mut self) -> io::Result<()> {
        let Some((origin, source)) = &self.fallback else {
            return Err(io::Error::other("cache write failed"));
        };
        let mut verifier = Verifier::new(&source.hashes);
        let mut buf = vec![0u8; CHUNK];
        let mut at = 0;
        while at < self.pos {
            let want = usize::try_from(self.pos - at)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = self.file.read_at(&mut buf[..want], at)?;
            if n == 0 {
                return Err(io::Error::other("cache file shorter than what was sent"));
            }
            verifier.update(&buf[..n]);
            at += n as u64;
        }
        let range = format!("bytes={}-", self.pos);
        let streamed = origin
            .open_file(
                &source.index,
                &source.url,
                (self.pos > 0).then_some(range.as_str()),
            )
            .map_err(|e| io::Error::other(e.to_string()))?;
        let expected_start = format!("bytes {}-", self.pos);
        let ok = match streamed.status {
            200 => self.pos == 0,
            206 => streamed
                .content_range
                .as_deref()
                .is_some_and(|c| c.starts_with(&expected_start)),
            _ => false,
        };
        if !ok {
            return Err(io::Error::other(format!(
                "cannot resume from the upstream at byte {} (status {})",
                self.pos, streamed.status
            )));
        }
        log::info!(
            "continuing a download from the upstream at byte {} after a cache write error",
            self.pos
        );
        self.relay = Some(Relay {
            body: streamed.body,
            verifier: Some(verifier),
        });
        Ok(())
    }

    fn read_relay(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(relay) = self.relay.as_mut() else {
            return Err(io::Error::other("no relay"));
        };
        if self.pos >= self.total {
            return Ok(0);
        }
        let want = usize::try_from(self.total - self.pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = relay.body.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "upstream ended early",
            ));
        }
        if let Some(v) = relay.verifier.as_mut() {
            v.update(&buf[..n]);
        }
        if self.pos + n as u64 == self.total {
            // The final bytes leave only after the whole file is verified.
            if let Some(v) = relay.verifier.take() {
                v.finish().map_err(io::Error::other)?;
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Read for GrowingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.relay.is_some() {
            return self.read_relay(buf);
        }
        let available = {
            let mut st = self.inflight.lock();
            loop {
                let allowed = match &st.phase {
                    Phase::Done { .. } => self.total,
                    Phase::Streaming { .. } | Phase::Starting => {
                        st.written.min(self.total.saturating_sub(1))
                    }
                    Phase::Failed(FileError::Local(_)) if self.fallback.is_some() => {
                        if let Some(r) = self.nonblocking.as_ref().filter(|_| !self.may_block()) {
                            // The relay blocks: hand over to a thread first.
                            r.blocking.store(true, Ordering::Release);
                            return Err(io::ErrorKind::WouldBlock.into());
                        }
                        drop(st);
                        self.start_relay()?;
                        return self.read_relay(buf);
                    }
                    Phase::Failed(f) => return Err(io::Error::other(f.to_string())),
                };
                if self.pos < allowed {
                    break allowed;
                }
                if matches!(st.phase, Phase::Done { .. }) {
                    return Ok(0);
                }
                if let Some(r) = self.nonblocking.as_ref().filter(|_| !self.may_block()) {
                    // Nothing yet: the worker waits for the next change.
                    r.seen.store(st.version, Ordering::Release);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                st = self
                    .inflight
                    .cv
                    .wait_timeout(st, Duration::from_secs(1))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        };
        let want = usize::try_from(available - self.pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "cache file shorter than written",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}
