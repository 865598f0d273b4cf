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
mod opener;
mod serve;
pub mod verify;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use url::Url;

pub use download::{Downloads, Fetch};
pub use error::{FileError, Mismatch};
pub use serve::file_content_type;

use crate::clock::Clock;
use crate::http::{Body, FileRange, Method, Request, Response, Stream};
use crate::origin::{Index, Origin};
use crate::pypi::{CoreMetadata, FileEntry, Filename, Hashes};
use crate::storage::{CacheKey, Lookup, Storage, Usage};
use opener::{Opened, Opener};

/// Files up to this size are answered only once complete and verified.
pub const SMALL_FILE: u64 = 256 * 1024;
/// How long a request waits for a download's first bytes when it cannot
/// be redirected.
const FIRST_BYTE_WAIT: Duration = Duration::from_secs(120);

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
}

/// How files are served (from the settings).
#[derive(Clone, Debug)]
pub struct FilesConfig {
    /// Wait for upstream response headers before a 302 (0 = always 302).
    pub download_timeout: Duration,
    pub offline: bool,
    pub binary_file_mime_type: bool,
    pub download_threads: usize,
    pub open_threads: usize,
}

/// A file a project page lists, as the app found it.
pub struct Wanted<'a> {
    pub index: &'a Index,
    pub entry: &'a FileEntry,
    /// The request is for `<file>.metadata` (PEP 658).
    pub metadata: bool,
    pub filename: &'a Filename,
}

pub struct Files {
    config: FilesConfig,
    origin: Arc<dyn Origin>,
    /// `None` when the file cache is off: every file is streamed through.
    downloads: Option<Arc<Downloads>>,
    opener: Opener,
    pub stats: Arc<FileStats>,
}

impl Files {
    /// `storage` is `None` when the file cache is off.
    pub fn start(
        config: FilesConfig,
        storage: Option<Arc<dyn Storage>>,
        origin: Arc<dyn Origin>,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Files> {
        let stats = Arc::new(FileStats::default());
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
        Ok(Files {
            config,
            origin,
            downloads,
            opener,
            stats,
        })
    }

    /// `start` with the storage the settings ask for (`storage::open`).
    pub fn open(
        config: FilesConfig,
        cache_dir: &std::path::Path,
        cache_size: u64,
        origin: Arc<dyn Origin>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Files> {
        let storage = crate::storage::open(cache_dir, cache_size)?;
        Ok(Files::start(config, storage, origin, clock)?)
    }

    /// What the file cache holds (all zero when it is off).
    pub fn usage(&self) -> Usage {
        self.downloads
            .as_ref()
            .map(|d| d.storage().usage())
            .unwrap_or_default()
    }

    /// The file (or its `.metadata`): from the cache, from the download in
    /// progress, or streamed through from the upstream.
    pub fn serve(&self, req: &Request, wanted: Wanted<'_>) -> Result<Response, FileError> {
        let Wanted {
            index,
            entry,
            metadata,
            filename,
        } = wanted;
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
                return Ok(serve::stored(req, f, content_type, &self.stats));
            }
            if let Some(size) = size {
                return Ok(Response::new(200)
                    .header("Content-Type", content_type)
                    .body(Body::Stream(Stream {
                        len: Some(size),
                        reader: Box::new(std::io::empty()),
                    })));
            }
            return self.stream_through(req, &source, content_type);
        }
        let can_redirect = self.can_redirect(index);
        let fetched = match &self.downloads {
            Some(d) => d.fetch(&key, &source),
            None => Fetch::StreamThrough,
        };
        match fetched {
            Fetch::Hit(f) => Ok(serve::stored(req, f, content_type, &self.stats)),
            Fetch::StreamThrough => self.stream_through(req, &source, content_type),
            Fetch::Download { inflight, joined } => {
                if req.header("range").is_some() {
                    // The whole file keeps downloading in the background.
                    return self.stream_through(req, &source, content_type);
                }
                if can_redirect && self.config.download_timeout.is_zero() {
                    return Ok(serve::redirect(&source.url));
                }
                let limit = if can_redirect {
                    self.config.download_timeout
                } else {
                    FIRST_BYTE_WAIT
                };
                let tag = if joined { "COALESCED" } else { "MISS" };
                let late = || {
                    if can_redirect {
                        Ok(serve::redirect(&source.url))
                    } else {
                        Err(crate::origin::OriginError::timeout(&source.url).into())
                    }
                };
                if size.is_some_and(|s| s <= SMALL_FILE) {
                    return match inflight.wait_done(limit) {
                        Ok(Some((file, len))) => {
                            Ok(serve::fresh(content_type, tag).body(FileRange {
                                file,
                                offset: 0,
                                len,
                            }))
                        }
                        Ok(None) => late(),
                        Err(FileError::Local(_) | FileError::NoLength) => {
                            self.stream_through(req, &source, content_type)
                        }
                        Err(e) => Err(e),
                    };
                }
                match inflight.wait_started(limit) {
                    Ok(Some(reader)) => {
                        Ok(serve::fresh(content_type, tag).body(Body::Stream(Stream {
                            len: Some(reader.len()),
                            reader: Box::new(
                                reader.with_fallback(Arc::clone(&self.origin), source.clone()),
                            ),
                        })))
                    }
                    Ok(None) => late(),
                    Err(FileError::Local(_) | FileError::NoLength) => {
                        self.stream_through(req, &source, content_type)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Clients may be sent to the upstream only when they could follow.
    fn can_redirect(&self, index: &Index) -> bool {
        !index.has_credentials() && !self.config.offline
    }

    /// Streams a file (or the requested range of it) straight from the
    /// upstream, without caching.
    fn stream_through(
        &self,
        req: &Request,
        source: &Source,
        content_type: &'static str,
    ) -> Result<Response, FileError> {
        let can_redirect = self.can_redirect(&source.index);
        if can_redirect && self.config.download_timeout.is_zero() {
            return Ok(serve::redirect(&source.url));
        }
        let wait = if can_redirect {
            self.config.download_timeout
        } else {
            FIRST_BYTE_WAIT
        };
        let range = req.header("range").map(str::to_owned);
        let small = source.size.is_some_and(|s| s <= SMALL_FILE);
        if small && range.is_none() && *req.method() == Method::Get {
            // Fetched whole and verified on the pool: a clean 502 on a
            // mismatch, and no thread holds the client afterwards.
            let (origin, source2) = (Arc::clone(&self.origin), source.clone());
            let fetched = self
                .opener
                .run(wait, move || fetch_whole(&*origin, &source2));
            return match self.settled(fetched, can_redirect, &source.url) {
                Ok(bytes) => Ok(serve::fresh(content_type, "MISS").body(bytes?)),
                Err(Settle::Answer(r)) => Ok(r),
                Err(Settle::Fail(e)) => Err(e),
            };
        }
        let (origin, source2) = (Arc::clone(&self.origin), source.clone());
        let opened = self.opener.run(wait, move || {
            origin.open_file(&source2.index, &source2.url, range.as_deref())
        });
        let streamed = match self.settled(opened, can_redirect, &source.url) {
            Ok(streamed) => streamed?,
            Err(Settle::Answer(r)) => return Ok(r),
            Err(Settle::Fail(e)) => return Err(e),
        };
        serve::relayed(req, streamed, source, content_type)
    }

    /// The result of pool work, or what to answer when it is late or the
    /// pool is full (`Err(Ok(response))` = answer this instead).
    fn settled<T>(&self, opened: Opened<T>, can_redirect: bool, url: &Url) -> Result<T, Settle> {
        match opened {
            Opened::Ready(r) => Ok(r),
            Opened::Late if can_redirect => Err(Settle::Answer(serve::redirect(url))),
            Opened::Late => Err(Settle::Fail(
                crate::origin::OriginError::timeout(url).into(),
            )),
            Opened::Busy => {
                self.stats.busy.fetch_add(1, Ordering::Relaxed);
                if can_redirect {
                    Err(Settle::Answer(serve::redirect(url)))
                } else {
                    Err(Settle::Fail(FileError::Busy))
                }
            }
        }
    }
}

/// Pool work that did not settle: answer with this instead.
enum Settle {
    Answer(Response),
    Fail(FileError),
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
    verify::VerifiedRead::new(streamed.body.take(limit), expected, &source.hashes)
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
