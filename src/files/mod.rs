// Size: the file route's one decision tree (hit, download, stream-through, ranges, parking); its parts live in download/inflight/serve/opener.
//! Everything about a file request, behind one owner (`Files`): cache-key
//! derivation, HEAD, cache hits (with ranges and conditional requests), the
//! one coalesced and verified download per file (`download`, `inflight`,
//! `verify`), stream-through, and the decision to redirect a client to the
//! upstream. The app hands it a file entry from a project page; it answers
//! with a response or a typed `FileError` (mapped to a status in
//! `app::error`).
//!
//! - Small files (≤ `SMALL_FILE`) are answered once downloaded and
//!   verified, so a mismatch is a clean 502 instead of a cut connection;
//!   larger ones stream while they download, the last byte held back until
//!   verification.
//! - Stream-through (cache off, disk trouble, no length) is verified too:
//!   the last bytes are held back until length and hash match, or the
//!   connection is cut (`verify::VerifiedRead`).
//! - Opening an upstream body with a deadline (ranges, stream-through) runs
//!   on a bounded pool (`opener`), never on a thread per request.

pub mod download;
pub mod error;
pub mod inflight;
pub mod metadata;
mod opener;
mod serve;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use url::Url;

pub use download::{Downloads, Fetch};
pub use error::{FileError, Mismatch};
pub use serve::file_content_type;

use crate::clock::Clock;
use crate::http::{
    Body, FileRange, Method, Outcome, Parked, ReadyStream, Request, Response, Stream, Waker,
};
use crate::origin::{Index, Origin};
use crate::pypi::{CoreMetadata, FileEntry, Filename, Hashes};
use crate::storage::{CacheKey, Lookup, Storage, Usage};

/// Where files (and saved pages) are kept: `None` when the file cache is
/// off. Built by `store` or by the composition root (`crate::wire`, with a
/// bucket).
pub type Store = Option<Arc<dyn Storage>>;

/// The store of `mode` without a bucket (`s3` and `tiered` get theirs in
/// `crate::wire`).
pub fn store(
    cache_dir: &std::path::Path,
    cache_size: u64,
    mode: crate::storage::Mode,
) -> anyhow::Result<Store> {
    crate::storage::open(cache_dir, cache_size, mode, None)
}

/// The remote tier's numbers (`storage::RemoteReport`).
pub use crate::storage::RemoteReport;
use inflight::InFlight;
use opener::{Opener, Ticket};

/// Files up to this size are answered only once complete and verified.
pub const SMALL_FILE: u64 = 256 * 1024;

/// What to download.
#[derive(Clone)]
pub struct Source {
    pub index: Index,
    pub url: Url,
    /// Advertised hashes (verification uses sha256, else the strongest sha2).
    pub hashes: Hashes,
    /// Advertised size, if any.
    pub size: Option<u64>,
}

/// Counters for the home page and `/metrics`.
#[derive(Default, Debug)]
pub struct FileStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub coalesced: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub bytes_served_from_cache: AtomicU64,
    pub verify_failures: AtomicU64,
    pub write_errors: AtomicU64,
    pub upstream_failures: AtomicU64,
    /// Opens refused because the open pool was full.
    pub busy: AtomicU64,
    /// Whether the cache takes writes (`/ready`).
    pub write_health: WriteHealth,
    /// Upstream file downloads: time to the response headers.
    pub fetch_seconds: crate::histogram::Histogram,
}

/// Whether the cache takes writes: not after a cache write failed, until a
/// later one succeeds. Read by the accept thread's `/ready` probe: an
/// atomic, and the reason behind a lock only ever tried.
#[derive(Default, Debug)]
pub struct WriteHealth {
    failed: std::sync::atomic::AtomicBool,
    reason: std::sync::Mutex<String>,
}

impl WriteHealth {
    pub fn failed(&self, e: &dyn std::fmt::Display) {
        if let Ok(mut r) = self.reason.lock() {
            *r = e.to_string();
        }
        self.failed.store(true, Ordering::Release);
    }

    pub fn succeeded(&self) {
        self.failed.store(false, Ordering::Release);
    }

    /// Why the cache does not take writes now, if it does not.
    pub fn problem(&self) -> Option<String> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        Some(
            self.reason
                .try_lock()
                .map(|r| r.clone())
                .unwrap_or_else(|_| "a cache write failed".to_owned()),
        )
    }
}

/// What the file route answers: a response, a typed failure (the app maps
/// it to a status), or a parked wait that resumes into another answer.
pub type Answer = Outcome<FileError>;

/// How files are served (from the settings).
#[derive(Clone, Debug)]
pub struct FilesConfig {
    /// proxpi's redirect: wait this long for the upstream's response
    /// headers, then 302 (0 = always 302). `None`: never redirect.
    pub download_timeout: Option<Duration>,
    /// The longest a request waits for the upstream (then 504).
    pub request_deadline: Duration,
    pub offline: bool,
    pub binary_file_mime_type: bool,
    pub download_threads: usize,
    pub open_threads: usize,
    /// Make `.metadata` for wheels listed without it (needs the file cache).
    pub synthesize_metadata: bool,
}

/// A file a project page lists, as the app found it.
pub struct Wanted<'a> {
    pub index: &'a Index,
    pub entry: &'a FileEntry,
    /// The request is for `<file>.metadata` (PEP 658).
    pub metadata: bool,
    /// ... which the upstream does not have: made here (`metadata`).
    pub synthesized: bool,
    pub filename: &'a Filename,
}

pub struct Files {
    config: FilesConfig,
    origin: Arc<dyn Origin>,
    /// `None` when the file cache is off: every file is streamed through.
    downloads: Option<Arc<Downloads>>,
    opener: Opener,
    /// Metadata synthesis (with the file cache, when enabled).
    synth: Option<Arc<metadata::Synthesizer>>,
    pub stats: Arc<FileStats>,
}

impl Files {
    /// `storage` is `None` when the file cache is off.
    pub fn start(
        config: FilesConfig,
        storage: Store,
        origin: Arc<dyn Origin>,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Files> {
        let stats = Arc::new(FileStats::default());
        let storage_for_synth = storage.clone();
        let downloads = match storage {
            Some(storage) => Some(Downloads::start(
                storage,
                Arc::clone(&origin),
                clock,
                Arc::clone(&stats),
                config.download_threads,
            )?),
            None => None,
        };
        let opener = Opener::start(config.open_threads)?;
        let synth = match (&downloads, &storage_for_synth) {
            (Some(d), Some(storage)) if config.synthesize_metadata => {
                let synth = metadata::Synthesizer::start(
                    Arc::clone(storage),
                    Arc::clone(&origin),
                    Arc::clone(d),
                )?;
                let weak = Arc::downgrade(&synth);
                d.on_commit(Box::new(move |key, source| {
                    let name = source.url.path_segments().and_then(|mut s| s.next_back());
                    if let (Some(synth), Some(name)) = (weak.upgrade(), name) {
                        if name.to_ascii_lowercase().ends_with(".whl") {
                            synth.recheck(key, name);
                        }
                    }
                }));
                Some(synth)
            }
            _ => None,
        };
        Ok(Files {
            config,
            origin,
            downloads,
            opener,
            synth,
            stats,
        })
    }

    /// Whether a remote tier (the bucket) is behind the local side.
    pub fn has_remote(&self) -> bool {
        self.downloads.as_ref().is_some_and(|d| d.has_remote())
    }

    /// The remote tier's numbers (`s3`, `tiered`).
    pub fn remote(&self) -> Option<RemoteReport> {
        self.downloads.as_ref().and_then(|d| d.storage().remote())
    }

    /// Downloads in progress.
    pub fn in_flight(&self) -> usize {
        self.downloads.as_ref().map_or(0, |d| d.in_flight())
    }

    /// What the file cache holds (all zero when it is off).
    pub fn usage(&self) -> Usage {
        self.downloads
            .as_ref()
            .map(|d| d.storage().usage())
            .unwrap_or_default()
    }

    /// The file (or its `.metadata`): from the cache, from the download in
    /// progress, or streamed through from the upstream. Waiting for the
    /// upstream parks the request (`Response::later`): no thread waits.
    pub fn serve(self: &Arc<Self>, req: &Request, wanted: Wanted<'_>) -> Answer {
        let Wanted {
            index,
            entry,
            metadata,
            synthesized,
            filename,
        } = wanted;
        if synthesized {
            return self.serve_synthesized(req, index, entry, filename);
        }
        let mut url = entry.url.clone();
        let (hashes, size) = if metadata {
            let p = format!("{}.metadata", url.path());
            url.set_path(&p);
            match &entry.core_metadata {
                CoreMetadata::Available(h) => (h.clone(), None),
                CoreMetadata::Absent => (Hashes::new(), None),
            }
        } else {
            (entry.hashes.clone(), entry.size)
        };
        let content_type = file_content_type(filename.as_str(), self.config.binary_file_mime_type);
        let key = CacheKey::derive(hashes.get("sha256").map(String::as_str), &url);
        let source = Source {
            index: index.clone(),
            url,
            hashes,
            size,
        };
        if *req.method() == Method::Head {
            // HEAD never starts a download.
            if let Some(Lookup::Hit(f)) = self.downloads.as_ref().map(|d| d.storage().lookup(&key))
            {
                return serve::stored(req, f, content_type, &self.stats).into();
            }
            if let Some(size) = size {
                return Response::new(200)
                    .header("Content-Type", content_type)
                    .body(Body::Stream(Stream {
                        len: Some(size),
                        reader: Box::new(std::io::empty()),
                    }))
                    .into();
            }
            return self.stream_through(req, source, content_type);
        }
        if let Some(d) = self
            .downloads
            .as_ref()
            .filter(|_| req.header("range").is_some())
        {
            // A range of a file only the bucket holds: a ranged GET.
            if let Some(stored) = d.remote_ranges(&key) {
                return self.serve_remote(req, key, stored, source, content_type);
            }
        }
        let fetched = match &self.downloads {
            Some(d) => d.fetch(&key, &source),
            None => Fetch::StreamThrough,
        };
        match fetched {
            Fetch::Hit(f) => serve::stored(req, f, content_type, &self.stats).into(),
            Fetch::StreamThrough => self.stream_through(req, source, content_type),
            Fetch::Download { inflight, joined } => {
                if req.header("range").is_some() && !self.has_remote() {
                    // The whole file keeps downloading in the background.
                    return self.stream_through(req, source, content_type);
                }
                let tag = if joined { "COALESCED" } else { "MISS" };
                match self.wait_for(&source, content_type, tag) {
                    Ok(wait) => self.await_download(req, inflight, source, wait),
                    Err(redirect) => redirect.into(),
                }
            }
        }
    }

    /// What the pages advertise for a wheel listed without metadata
    /// (`None`: nothing; empty hashes: `true`).
    pub fn advertise_metadata(&self, entry: &FileEntry) -> Option<Hashes> {
        let synth = self.synth.as_ref()?;
        metadata::wants_synthesis(entry)
            .then(|| synth.advertise(entry))
            .flatten()
    }

    /// Changes whenever what `advertise_metadata` says changes.
    pub fn metadata_generation(&self) -> u64 {
        self.synth.as_ref().map_or(0, |s| s.generation())
    }

    /// Whether `.metadata` of `entry` is made here (synthesis on, a wheel
    /// listed without it, not known to be broken).
    pub fn synthesizes(&self, entry: &FileEntry) -> bool {
        self.synth
            .as_ref()
            .is_some_and(|s| metadata::wants_synthesis(entry) && !s.is_broken(entry))
    }

    /// Synthesis counters (all zero when off).
    pub fn synth_stats(&self) -> Option<&metadata::SynthStats> {
        self.synth.as_ref().map(|s| &s.stats)
    }

    /// `.metadata` made here: stored already, or made now (the request
    /// parks on the one synthesis for this wheel).
    fn serve_synthesized(
        self: &Arc<Self>,
        req: &Request,
        index: &Index,
        entry: &FileEntry,
        filename: &Filename,
    ) -> Answer {
        let Some(synth) = &self.synth else {
            return Response::text(404, "no metadata for this file\n").into();
        };
        let content_type = file_content_type(filename.as_str(), true);
        if let Some(stored) = synth.stored(entry) {
            return serve::stored(req, stored, content_type, &self.stats).into();
        }
        if synth.is_broken(entry) {
            return broken_metadata().into();
        }
        if self.config.offline {
            return Outcome::Failed(crate::origin::OriginError::offline(&entry.url).into());
        }
        let source = Source {
            index: index.clone(),
            url: entry.url.clone(),
            hashes: entry.hashes.clone(),
            size: entry.size,
        };
        let flight = match synth.begin(source, entry) {
            Ok(f) => f,
            Err(e) => return Outcome::Failed(e),
        };
        let files = Arc::clone(self);
        let watched = Arc::clone(&flight);
        let url = entry.url.clone();
        Outcome::Parked(Parked {
            deadline: Instant::now() + self.config.request_deadline,
            subscribe: Box::new(move |waker: Waker| watched.watch(Box::new(waker))),
            resume: Box::new(move |req: &Request| match flight.result() {
                // Made now, by range reads of the wheel: not a cache hit.
                Some(metadata::Made::Stored(f)) => {
                    serve::stored(req, f, content_type, &files.stats)
                        .replace_header("X-Cache", "SYNTH")
                        .log_tag("SYNTH")
                        .into()
                }
                Some(metadata::Made::Broken(_)) => broken_metadata().into(),
                Some(metadata::Made::Failed(e)) => Outcome::Failed((*e).clone()),
                None => Outcome::Failed(crate::origin::OriginError::timeout(&url).into()),
            }),
        })
    }

    // Long: one match: every state a download can be in, and its answer.
    /// Answers from a download once it has started (or, for a small file,
    /// finished and been verified); parks the request until then.
    fn await_download(
        self: &Arc<Self>,
        req: &Request,
        inflight: Arc<InFlight>,
        source: Source,
        wait: Wait,
    ) -> Answer {
        let seen = inflight.version();
        let small = source.size.is_some_and(|s| s <= SMALL_FILE);
        // With a bucket, a range is answered from the whole verified file
        // (it may come from the bucket, which is read verified first).
        let ranged = req.header("range").is_some() && self.has_remote();
        let state = if small || ranged {
            inflight
                .wait_done(Duration::ZERO)
                .map(|r| r.map(|(file, len)| Started::Whole(file, len)))
        } else {
            inflight
                .wait_started(Duration::ZERO)
                .map(|r| r.map(|g| Started::Growing(Box::new(g))))
        };
        // Whoever started it, a file read from the bucket says so.
        let wait = if inflight.from_bucket() {
            Wait {
                tag: "BUCKET",
                ..wait
            }
        } else {
            wait
        };
        match state {
            Ok(Some(Started::Whole(file, len))) if ranged => {
                let stored = crate::storage::Stored {
                    len,
                    sha256: inflight.sha256().unwrap_or_else(|| "".into()),
                    modified: std::time::SystemTime::now(),
                    body: crate::storage::StoredBody::Local(file),
                };
                serve::stored(req, stored, wait.content_type, &self.stats).into()
            }
            Ok(Some(Started::Whole(file, len))) => serve::fresh(wait.content_type, wait.tag)
                .body(FileRange {
                    file,
                    offset: 0,
                    len,
                })
                .into(),
            Ok(Some(Started::Growing(reader))) => {
                // Sent by the workers as the download grows; no thread
                // waits for its bytes.
                let len = reader.len();
                let (reader, ready) = reader
                    .with_fallback(Arc::clone(&self.origin), source)
                    .nonblocking();
                serve::fresh(wait.content_type, wait.tag)
                    .body(Body::Ready(Box::new(ReadyStream {
                        stream: Stream {
                            len: Some(len),
                            reader: Box::new(reader),
                        },
                        ready,
                    })))
                    .into()
            }
            Ok(None) if Instant::now() >= wait.deadline && !inflight.reading_bucket() => {
                self.late(&wait, &source.url)
            }
            Ok(None) => {
                let mut wait = wait;
                if inflight.reading_bucket() && !wait.extended {
                    // Coming from the bucket (verified before the first
                    // byte): no redirect while it does.
                    wait.extended = true;
                    wait.deadline = Instant::now() + self.config.request_deadline;
                }
                let files = Arc::clone(self);
                let watched = Arc::clone(&inflight);
                Outcome::Parked(Parked {
                    deadline: wait.deadline,
                    subscribe: Box::new(move |waker: Waker| {
                        watched.on_change(seen, Box::new(move || waker.wake()));
                    }),
                    resume: Box::new(move |req: &Request| {
                        files.await_download(req, inflight, source, wait)
                    }),
                })
            }
            Err(FileError::Local(_) | FileError::NoLength) => {
                self.stream_through(req, source, wait.content_type)
            }
            Err(FileError::Busy) if wait.can_redirect => serve::redirect(&source.url).into(),
            Err(e) => Outcome::Failed(e),
        }
    }

    /// A file the bucket holds (verified by this process), read by a
    /// ranged GET opened on the open pool. If S3 fails before the head is
    /// sent, the range is streamed from the upstream instead.
    fn serve_remote(
        self: &Arc<Self>,
        req: &Request,
        key: CacheKey,
        stored: crate::storage::Stored,
        source: Source,
        content_type: &'static str,
    ) -> Answer {
        let (head, offset, len) = match serve::plan(req, &stored, content_type, &self.stats) {
            serve::Planned::Answer(r) => return r.into(),
            serve::Planned::Part { head, offset, len } => (head, offset, len),
        };
        let crate::storage::StoredBody::Remote(ranges) = stored.body else {
            return serve::stored(req, stored, content_type, &self.stats).into();
        };
        let wait = Wait {
            deadline: Instant::now() + self.config.request_deadline,
            extended: true,
            can_redirect: false,
            content_type,
            tag: "HIT",
        };
        let ticket = self.opener.submit(move || ranges.open(offset, len));
        let files = Arc::clone(self);
        self.await_ticket(
            req,
            ticket,
            source,
            wait,
            move |opened, req, source, wait| match opened {
                Ok(reader) => head
                    .body(Body::Stream(Stream {
                        len: Some(len),
                        reader,
                    }))
                    .into(),
                Err(e) => {
                    log::warn!(
                        "ranged bucket read of {} failed ({e}): streaming it from the upstream",
                        crate::redact::SafeUrl::new(&source.url)
                    );
                    if let Some(d) = &files.downloads {
                        d.forget_remote(&key);
                    }
                    files.stream_through(req, source, wait.content_type)
                }
            },
        )
    }

    /// The upstream did not answer in time: send the client there, or 504.
    fn late(&self, wait: &Wait, url: &Url) -> Answer {
        if wait.can_redirect {
            serve::redirect(url).into()
        } else {
            Outcome::Failed(crate::origin::OriginError::timeout(url).into())
        }
    }

    /// How long a request for `source` may wait for the upstream: until a
    /// redirect when `ROXPI_DOWNLOAD_TIMEOUT` is set (`Err` = redirect at
    /// once, proxpi's 0), else until the request deadline (then 504).
    fn wait_for(
        &self,
        source: &Source,
        content_type: &'static str,
        tag: &'static str,
    ) -> Result<Wait, Response> {
        let redirect_after = self
            .config
            .download_timeout
            .filter(|_| self.can_redirect(&source.index));
        if redirect_after.is_some_and(|t| t.is_zero()) {
            return Err(serve::redirect(&source.url));
        }
        let can_redirect = redirect_after.is_some();
        let limit = redirect_after.unwrap_or(self.config.request_deadline);
        Ok(Wait {
            deadline: Instant::now() + limit,
            extended: false,
            can_redirect,
            content_type,
            tag,
        })
    }

    /// Clients may be sent to the upstream only when they could follow.
    fn can_redirect(&self, index: &Index) -> bool {
        !index.has_credentials() && !self.config.offline
    }

    /// Streams a file (or the requested range of it) straight from the
    /// upstream, without caching; small whole files are fetched and
    /// verified first.
    fn stream_through(
        self: &Arc<Self>,
        req: &Request,
        source: Source,
        content_type: &'static str,
    ) -> Answer {
        let wait = match self.wait_for(&source, content_type, "MISS") {
            Ok(wait) => wait,
            Err(redirect) => return redirect.into(),
        };
        let range = req.header("range").map(str::to_owned);
        let small = source.size.is_some_and(|s| s <= SMALL_FILE);
        let origin = Arc::clone(&self.origin);
        if small && range.is_none() && *req.method() == Method::Get {
            // Fetched whole and verified in the pool: a clean 502 on a
            // mismatch, and nothing holds the client afterwards.
            let job = source.clone();
            let ticket = self.opener.submit(move || fetch_whole(&*origin, &job));
            return self.await_ticket(req, ticket, source, wait, |bytes, _req, _source, wait| {
                match bytes {
                    Ok(bytes) => serve::fresh(wait.content_type, wait.tag).body(bytes).into(),
                    Err(e) => Outcome::Failed(e),
                }
            });
        }
        let job = source.clone();
        let ticket = self
            .opener
            .submit(move || origin.open_file(&job.index, &job.url, range.as_deref()));
        self.await_ticket(
            req,
            ticket,
            source,
            wait,
            |opened, req, source, wait| match opened
                .map_err(FileError::from)
                .and_then(|o| serve::relayed(req, o, &source, wait.content_type))
            {
                Ok(r) => r.into(),
                Err(e) => Outcome::Failed(e),
            },
        )
    }

    /// Answers with `finish` once the pool job is done; parks until then.
    fn await_ticket<T, F>(
        self: &Arc<Self>,
        req: &Request,
        ticket: Option<Ticket<T>>,
        source: Source,
        wait: Wait,
        finish: F,
    ) -> Answer
    where
        T: Send + 'static,
        F: FnOnce(T, &Request, Source, &Wait) -> Answer + Send + 'static,
    {
        let Some(ticket) = ticket else {
            self.stats.busy.fetch_add(1, Ordering::Relaxed);
            if wait.can_redirect {
                return serve::redirect(&source.url).into();
            }
            return Outcome::Failed(FileError::Busy);
        };
        if let Some(done) = ticket.take() {
            return finish(done, req, source, &wait);
        }
        if Instant::now() >= wait.deadline {
            return self.late(&wait, &source.url);
        }
        let files = Arc::clone(self);
        let watched = ticket.clone();
        Outcome::Parked(Parked {
            deadline: wait.deadline,
            subscribe: Box::new(move |waker: Waker| {
                watched.on_done(Box::new(move || waker.wake()));
            }),
            resume: Box::new(move |req: &Request| {
                files.await_ticket(req, Some(Ticket::clone(&ticket)), source, wait, finish)
            }),
        })
    }
}

/// What a parked file request needs to finish.
struct Wait {
    deadline: Instant,
    /// The deadline was extended once for a bucket read.
    extended: bool,
    can_redirect: bool,
    content_type: &'static str,
    tag: &'static str,
}

/// A download that can be answered from.
enum Started {
    /// Complete and verified (small files).
    Whole(Arc<std::fs::File>, u64),
    Growing(Box<inflight::GrowingReader>),
}

/// Downloads a small file whole into memory, verified.
fn fetch_whole(origin: &dyn Origin, source: &Source) -> Result<bytes::Bytes, FileError> {
    use std::io::Read;
    let streamed = origin.open_file(&source.index, &source.url, None)?;
    if streamed.status != 200 {
        return Err(
            crate::origin::OriginError::status(&streamed.final_url, streamed.status).into(),
        );
    }
    let expected = match (streamed.content_length, source.size) {
        (Some(got), Some(want)) if got != want => return Err(Mismatch::Length { got, want }.into()),
        (got, want) => got.or(want),
    };
    let mut body = Vec::new();
    let limit = SMALL_FILE + 1;
    crate::storage::verify::VerifiedRead::new(streamed.body.take(limit), expected, &source.hashes)
        .read_to_end(&mut body)
        .map_err(|e| {
            let url = &streamed.final_url;
            if let Some(m) = e.get_ref().and_then(|i| i.downcast_ref::<Mismatch>()) {
                return FileError::Verify(m.clone());
            }
            match e.kind() {
                std::io::ErrorKind::TimedOut => crate::origin::OriginError::timeout(url).into(),
                _ => crate::origin::OriginError::body(url, e.to_string()).into(),
            }
        })?;
    Ok(body.into())
}

#[cfg(test)]
pub(crate) mod tests;

/// `.metadata` of a wheel without readable METADATA.
fn broken_metadata() -> Response {
    Response::text(
        404,
        "no metadata can be read from this wheel (not a zip, or no .dist-info/METADATA)\n",
    )
    .header("Cache-Control", "max-age=600")
}
