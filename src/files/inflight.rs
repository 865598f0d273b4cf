//! One download in progress: a `Flight` whose progress is the growing
//! file, and `GrowingReader`, which lets every requester stream the file
//! while it lands on disk.
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
use std::sync::Arc;
use std::time::Duration;

use super::error::FileError;
use super::Source;
use crate::flight::Flight;
use crate::http::StreamReady;
use crate::origin::Origin;
use crate::storage::verify::Verifier;

const CHUNK: usize = 256 * 1024;

/// A finished download: the verified file.
#[derive(Clone)]
pub(super) struct Done {
    pub(super) file: Arc<File>,
    pub(super) total: u64,
    pub(super) sha256: Arc<str>,
}

/// A download on its way.
#[derive(Default)]
pub(super) struct Progress {
    /// The file being written and its length, once the upstream answered.
    pub(super) file: Option<(Arc<File>, u64)>,
    /// Bytes written to the file (and returned by `write`).
    pub(super) written: u64,
    /// The file is being read from the bucket (verified before anyone
    /// gets a byte): waiters keep waiting instead of being redirected.
    pub(super) reading_bucket: bool,
    /// The file came from the bucket (not the upstream).
    pub(super) from_bucket: bool,
}

/// One download in progress: the one single-flight type, with the growing
/// file as its progress.
pub struct InFlight {
    flight: Flight<Result<Done, FileError>, Progress>,
}

impl InFlight {
    pub(super) fn new() -> InFlight {
        InFlight {
            flight: Flight::new(),
        }
    }

    /// Changes the progress; wakes every reader.
    pub(super) fn update(&self, f: impl FnOnce(&mut Progress)) {
        self.flight.update(f);
    }

    /// The download's end (the first one wins); wakes every reader.
    pub(super) fn finish(&self, result: Result<Done, FileError>) {
        self.flight.complete(result);
    }

    /// Whether the download failed.
    pub fn is_failed(&self) -> bool {
        self.flight.with(|r, _| matches!(r, Some(Err(_))))
    }

    /// Whether the file is being read from the bucket.
    pub fn reading_bucket(&self) -> bool {
        self.flight.with(|_, p| p.reading_bucket)
    }

    /// Whether the file came from the bucket.
    pub fn from_bucket(&self) -> bool {
        self.flight.with(|_, p| p.from_bucket)
    }

    /// The verified sha256 of a completed download.
    pub fn sha256(&self) -> Option<Arc<str>> {
        self.flight.with(|r, _| {
            r.and_then(|r| r.as_ref().ok())
                .map(|d| Arc::clone(&d.sha256))
        })
    }

    /// The change counter, to pass to `on_change`.
    pub fn version(&self) -> u64 {
        self.flight.version()
    }

    /// Calls `f` at the next change after `seen` (at once if there was one).
    pub fn on_change(&self, seen: u64, f: Box<dyn FnOnce() + Send>) {
        self.flight.on_change(seen, f);
    }

    /// Waits until the upstream answered (`Ok(Some)`: a reader of the
    /// growing file and its length), failed (`Err`), or `limit` passed.
    pub fn wait_started(
        self: &Arc<Self>,
        limit: Duration,
    ) -> Result<Option<GrowingReader>, FileError> {
        let started = self.flight.wait_for(limit, |r, p, _| match r {
            Some(Err(e)) => Some(Err(e.clone())),
            Some(Ok(d)) => Some(Ok((Arc::clone(&d.file), d.total))),
            None => p.file.clone().map(Ok),
        });
        let Some(started) = started else {
            return Ok(None);
        };
        let (file, total) = started?;
        Ok(Some(GrowingReader {
            inflight: Arc::clone(self),
            file,
            total,
            pos: 0,
            fallback: None,
            relay: None,
            nonblocking: None,
        }))
    }

    /// Waits until the download is complete and verified (`Ok(Some)`: the
    /// file and its length), failed (`Err`), or `limit` passed (`Ok(None)`).
    pub fn wait_done(&self, limit: Duration) -> Result<Option<(Arc<File>, u64)>, FileError> {
        let done = self.flight.wait_for(limit, |r, _, _| r.cloned());
        match done {
            None => Ok(None),
            Some(Ok(d)) => Ok(Some((d.file, d.total))),
            Some(Err(e)) => Err(e),
        }
    }
}

/// What a read of a growing file does next.
enum Step {
    /// Bytes up to here may be read.
    Read(u64),
    End,
    Fail(FileError),
    /// Nothing to read yet (non-blocking): the change counter seen.
    WouldBlock(u64),
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
        let nonblocking = self.nonblocking.is_some() && !self.may_block();
        let (pos, total) = (self.pos, self.total);
        let step = loop {
            // Blocking readers wake at least every second (bounded waits).
            let step =
                self.inflight
                    .flight
                    .wait_for(Duration::from_secs(1), |r, p, version| match r {
                        Some(Ok(_)) if pos < total => Some(Step::Read(total)),
                        Some(Ok(_)) => Some(Step::End),
                        Some(Err(f)) => Some(Step::Fail(f.clone())),
                        None => {
                            let allowed = p.written.min(total.saturating_sub(1));
                            if pos < allowed {
                                Some(Step::Read(allowed))
                            } else {
                                nonblocking.then_some(Step::WouldBlock(version))
                            }
                        }
                    });
            if let Some(step) = step {
                break step;
            }
        };
        let available = match step {
            Step::Read(allowed) => allowed,
            Step::End => return Ok(0),
            Step::Fail(FileError::Local(_)) if self.fallback.is_some() => {
                if let Some(r) = self.nonblocking.as_ref().filter(|_| nonblocking) {
                    // The relay blocks: hand over to a thread first.
                    r.blocking.store(true, Ordering::Release);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                self.start_relay()?;
                return self.read_relay(buf);
            }
            Step::Fail(f) => return Err(io::Error::other(f.to_string())),
            Step::WouldBlock(version) => {
                // Nothing yet: the worker waits for the next change.
                if let Some(r) = &self.nonblocking {
                    r.seen.store(version, Ordering::Release);
                }
                return Err(io::ErrorKind::WouldBlock.into());
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
