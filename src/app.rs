//! The routes: turns a request into calls on the index cache and the
//! upstream, and into a response. `route` is a pure function of the path;
//! `App::handle` does the rest. Status mapping for upstream trouble lives in
//! `upstream_failure` (one place): timeouts → 504, everything else → 502,
//! both with `Retry-After`; never 500 for an upstream problem.

use std::io::Write;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use askama::Template;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::config::redact;
use crate::config::Settings;
use crate::files::range::{if_range_allows, parse_range, RangeRequest};
use crate::files::{Downloads, Failure, Fetch, Source};
use crate::http::{Body, FileRange, Method, Request, Response, Stream};
use crate::index_cache::{Doc, Freshness, IndexCache, Key, Pending, Rendered, Snapshot};
use crate::persist::PageStore;
use crate::pypi::{
    negotiate_coding, negotiate_format, render_list, render_project, Coding, CoreMetadata,
    FileEntry, Filename, ProjectName, ProjectPage, Strategy,
};
use crate::storage::local::LocalStorage;
use crate::storage::{CacheKey, Lookup, Storage, StoredFile};
use crate::upstream::{Index, Upstream, UpstreamError};

const SUCCESS: &str = "{\"status\":\"success\",\"data\":null}";
const GET_HEAD: &str = "GET, HEAD, OPTIONS";
const DELETE: &str = "DELETE, OPTIONS";
/// The most a client may cache an index page (PyPI's value).
const MAX_PAGE_AGE: u64 = 600;

/// The two prefixes serving the same API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefix {
    Index,
    Simple,
}

impl Prefix {
    fn path(self) -> &'static str {
        match self {
            Prefix::Index => "/index/",
            Prefix::Simple => "/simple/",
        }
    }
}

/// Where a request goes (pure: from the path and query alone).
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Home,
    Health,
    Metrics,
    List,
    Project(ProjectName),
    File(ProjectName, Filename),
    /// 301 to this location (absolute path plus query).
    Redirect(String),
    InvalidateList,
    InvalidateProject(ProjectName),
    NotFound,
    BadRequest(String),
}

impl Route {
    fn allow(&self) -> &'static str {
        match self {
            Route::InvalidateList | Route::InvalidateProject(_) => DELETE,
            _ => GET_HEAD,
        }
    }
}

fn decode_once(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Maps a path to a route.
pub fn route(path: &str, query: Option<&str>) -> Route {
    let with_query = |p: String| match query {
        Some(q) => format!("{p}?{q}"),
        None => p,
    };
    match path {
        "/" => return Route::Home,
        "/health" => return Route::Health,
        "/metrics" => return Route::Metrics,
        "/index" => return Route::Redirect(with_query("/index/".into())),
        "/simple" => return Route::Redirect(with_query("/simple/".into())),
        "/cache/list" => return Route::InvalidateList,
        _ => {}
    }
    if let Some(raw) = path.strip_prefix("/cache/") {
        return match decode_once(raw).map(|n| ProjectName::parse(&n)) {
            Some(Ok(name)) => Route::InvalidateProject(name),
            Some(Err(e)) => Route::BadRequest(e.to_string()),
            None => Route::BadRequest("invalid percent-encoding".into()),
        };
    }
    let (prefix, rest) = if let Some(r) = path.strip_prefix("/index/") {
        (Prefix::Index, r)
    } else if let Some(r) = path.strip_prefix("/simple/") {
        (Prefix::Simple, r)
    } else {
        return Route::NotFound;
    };
    if rest.is_empty() {
        return Route::List;
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let Some(raw_name) = decode_once(segments[0]) else {
        return Route::BadRequest("invalid percent-encoding".into());
    };
    let name = match ProjectName::parse(&raw_name) {
        Ok(n) => n,
        // Not a name: nothing can live there.
        Err(_) => return Route::NotFound,
    };
    let canonical = name.as_str() == segments[0];
    let base = format!("{}{}/", prefix.path(), name);
    match segments.as_slice() {
        [_] => Route::Redirect(with_query(base)),
        [_, ""] if canonical => Route::Project(name),
        [_, ""] => Route::Redirect(with_query(base)),
        [_, file] if !file.is_empty() => {
            if !canonical {
                return Route::Redirect(with_query(format!("{base}{file}")));
            }
            match decode_once(file).as_deref().and_then(Filename::parse) {
                Some(f) => Route::File(name, f),
                None => Route::NotFound,
            }
        }
        _ => Route::NotFound,
    }
}

/// Whether the client asks for revalidation (`no-cache`, `max-age=0`).
fn wants_revalidation(req: &Request) -> bool {
    req.header_values("cache-control")
        .chain(req.header_values("pragma"))
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .any(|d| d == "no-cache" || d == "max-age=0")
}

fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| {
            // A literal `+` stays a plus: media types hold no spaces.
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// The answer of the indexes for one key.
enum Resolved {
    /// Snapshots of the indexes that have it, in index order.
    Found(Vec<(usize, Arc<Snapshot>, Freshness)>),
    NotFound,
    Failed(Arc<UpstreamError>),
}

/// Content-Type of a distribution file (never a Content-Encoding).
pub fn file_content_type(name: &str, binary: bool) -> &'static str {
    let lower = name.to_ascii_lowercase();
    if binary || lower.ends_with(".whl") || lower.ends_with(".metadata") {
        "application/octet-stream"
    } else if lower.ends_with(".zip") {
        "application/zip"
    } else if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
        "application/x-tar+gzip"
    } else {
        "application/octet-stream"
    }
}

pub struct App {
    requests: std::sync::atomic::AtomicU64,
    settings: Settings,
    cache: Arc<IndexCache>,
    upstream: Arc<Upstream>,
    downloads: Arc<Downloads>,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomeHtml<'a> {
    version: &'a str,
    indexes: Vec<(usize, String, u64)>,
    strategy: &'a str,
    offline: bool,
    stats: Vec<(&'static str, String)>,
    file_stats: Vec<(&'static str, String)>,
}

impl App {
    pub fn new(settings: Settings) -> anyhow::Result<App> {
        let upstream = Arc::new(Upstream::new(&settings)?);
        let indexes: Vec<Index> = settings
            .indexes
            .iter()
            .enumerate()
            .map(|(i, c)| Index::new(i, c))
            .collect();
        let storage: Option<Arc<dyn Storage>> = if settings.cache_size == 0 {
            log::info!("file cache disabled (ROXPI_CACHE_SIZE=0): files are streamed through");
            None
        } else {
            Some(Arc::new(LocalStorage::open(
                &settings.cache_dir,
                settings.cache_size,
            )?))
        };
        // Pages are saved next to the files they list (the dir is locked).
        let pages = match &storage {
            Some(_) => match PageStore::open(&settings.cache_dir.join("pages")) {
                Ok(p) => Some(p),
                Err(e) => {
                    log::warn!("pages will not survive a restart: {e}");
                    None
                }
            },
            None => None,
        };
        let cache = IndexCache::new(
            Arc::clone(&upstream),
            indexes,
            settings.stale_after,
            settings.offline,
            settings.index_cache_size,
            pages,
        )
        .start()?;
        let downloads = Downloads::start(storage, Arc::clone(&upstream))?;
        Ok(App {
            requests: std::sync::atomic::AtomicU64::new(0),
            settings,
            cache,
            upstream,
            downloads,
        })
    }

    pub fn handle(&self, req: &Request) -> Response {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let route = route(req.path(), req.query());
        let method = req.method();
        if *method == Method::Options {
            return Response::new(204).header("Allow", route.allow());
        }
        let allowed = match &route {
            Route::InvalidateList | Route::InvalidateProject(_) => *method == Method::Delete,
            Route::NotFound | Route::BadRequest(_) => true,
            _ => matches!(method, Method::Get | Method::Head),
        };
        if !allowed {
            return Response::text(405, format!("{method} is not allowed here\n"))
                .header("Allow", route.allow());
        }
        match route {
            Route::Home => self.home(),
            Route::Health => json_success(),
            Route::Metrics => self.metrics(),
            Route::Redirect(location) => {
                Response::text(301, format!("moved to {location}\n")).header("Location", location)
            }
            Route::InvalidateList => {
                self.cache.invalidate(&Key::List);
                json_success()
            }
            Route::InvalidateProject(name) => {
                self.cache.invalidate(&Key::Project(name));
                json_success()
            }
            Route::List => self.page(req, Key::List),
            Route::Project(name) => self.page(req, Key::Project(name)),
            Route::File(name, file) => self.file(req, name, file),
            Route::NotFound => Response::text(404, "not found\n"),
            Route::BadRequest(reason) => Response::text(400, format!("{reason}\n")),
        }
    }

    fn home(&self) -> Response {
        let (entries, bytes) = self.cache.usage();
        let s = &self.cache.stats;
        let load = |a: &std::sync::atomic::AtomicU64| {
            a.load(std::sync::atomic::Ordering::Relaxed).to_string()
        };
        let page = HomeHtml {
            version: env!("CARGO_PKG_VERSION"),
            indexes: self
                .cache
                .indexes()
                .iter()
                .map(|i| (i.id, i.display(), i.ttl.as_secs()))
                .collect(),
            strategy: match self.settings.strategy {
                Strategy::Merge => "merge",
                Strategy::FirstIndex => "first-index",
            },
            offline: self.settings.offline,
            stats: vec![
                ("entries", entries.to_string()),
                ("bytes", bytes.to_string()),
                ("hits", load(&s.hits)),
                ("misses", load(&s.misses)),
                ("stale serves", load(&s.stale)),
                ("coalesced waiters", load(&s.coalesced)),
                ("upstream errors", load(&s.upstream_errors)),
                ("evictions", load(&s.evictions)),
            ],
            file_stats: {
                let f = &self.downloads.stats;
                let usage = self
                    .downloads
                    .storage()
                    .map(|s| s.usage())
                    .unwrap_or_default();
                vec![
                    (
                        "cache dir",
                        if usage.cap == 0 {
                            "disabled (ROXPI_CACHE_SIZE=0)".to_owned()
                        } else {
                            self.settings.cache_dir.display().to_string()
                        },
                    ),
                    ("files", usage.files.to_string()),
                    ("bytes cached", usage.used.to_string()),
                    ("bytes reserved for downloads", usage.reserved.to_string()),
                    ("cap", usage.cap.to_string()),
                    ("hits", load(&f.hits)),
                    ("misses", load(&f.misses)),
                    ("coalesced waiters", load(&f.coalesced)),
                    ("bytes served from cache", load(&f.bytes_served_from_cache)),
                    ("bytes fetched", load(&f.bytes_fetched)),
                    ("evictions", usage.evictions.to_string()),
                    ("hash/length mismatches", load(&f.verify_failures)),
                    ("write errors", load(&f.write_errors)),
                    ("upstream failures", load(&f.upstream_failures)),
                ]
            },
        };
        match page.render() {
            Ok(html) => Response::new(200)
                .header("Content-Type", "text/html; charset=utf-8")
                .header("Cache-Control", "no-cache")
                .body(html),
            Err(e) => Response::text(500, format!("home page failed to render: {e}\n")),
        }
    }

    /// Prometheus text format: cache and upstream counters.
    fn metrics(&self) -> Response {
        use std::fmt::Write as _;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let c = &self.cache.stats;
        let f = &self.downloads.stats;
        let usage = self
            .downloads
            .storage()
            .map(|s| s.usage())
            .unwrap_or_default();
        let (entries, bytes) = self.cache.usage();
        let rows: [(&str, &str, &str, u64); 24] = [
            ("roxpi_requests_total", "counter", "requests answered", load(&self.requests)),
            ("roxpi_upstream_page_fetches_total", "counter", "upstream page fetches (the count of the next metric)", load(&c.fetches)),
            ("roxpi_upstream_page_fetch_microseconds_total", "counter", "time spent in upstream page fetches (divide by the fetch count for the average latency)", load(&c.fetch_micros)),
            (
                "roxpi_index_hits_total",
                "counter",
                "index pages answered from the cache",
                load(&c.hits),
            ),
            (
                "roxpi_index_misses_total",
                "counter",
                "index pages fetched for a request",
                load(&c.misses),
            ),
            (
                "roxpi_index_stale_total",
                "counter",
                "stale index pages served",
                load(&c.stale),
            ),
            (
                "roxpi_index_coalesced_total",
                "counter",
                "requests that joined a page fetch in flight",
                load(&c.coalesced),
            ),
            (
                "roxpi_upstream_errors_total",
                "counter",
                "failed upstream page fetches",
                load(&c.upstream_errors),
            ),
            (
                "roxpi_index_evictions_total",
                "counter",
                "index cache evictions",
                load(&c.evictions),
            ),
            (
                "roxpi_index_cache_entries",
                "gauge",
                "entries in the index cache",
                entries as u64,
            ),
            (
                "roxpi_index_cache_bytes",
                "gauge",
                "bytes held by the index cache",
                bytes,
            ),
            (
                "roxpi_file_hits_total",
                "counter",
                "files served from the cache",
                load(&f.hits),
            ),
            (
                "roxpi_file_misses_total",
                "counter",
                "file downloads started",
                load(&f.misses),
            ),
            (
                "roxpi_file_coalesced_total",
                "counter",
                "requests that joined a download in flight",
                load(&f.coalesced),
            ),
            (
                "roxpi_file_bytes_served_total",
                "counter",
                "bytes served from cached files",
                load(&f.bytes_served_from_cache),
            ),
            (
                "roxpi_file_bytes_fetched_total",
                "counter",
                "bytes downloaded from upstreams",
                load(&f.bytes_fetched),
            ),
            (
                "roxpi_file_verify_failures_total",
                "counter",
                "downloads refused for a length or hash mismatch",
                load(&f.verify_failures),
            ),
            (
                "roxpi_file_write_errors_total",
                "counter",
                "cache write errors (disk full)",
                load(&f.write_errors),
            ),
            (
                "roxpi_file_upstream_failures_total",
                "counter",
                "failed file downloads",
                load(&f.upstream_failures),
            ),
            (
                "roxpi_file_evictions_total",
                "counter",
                "files evicted from the cache",
                usage.evictions,
            ),
            (
                "roxpi_file_cache_files",
                "gauge",
                "files in the cache",
                usage.files as u64,
            ),
            (
                "roxpi_file_cache_bytes",
                "gauge",
                "bytes of cached files",
                usage.used,
            ),
            (
                "roxpi_file_cache_reserved_bytes",
                "gauge",
                "bytes reserved for downloads in flight",
                usage.reserved,
            ),
            (
                "roxpi_file_cache_cap_bytes",
                "gauge",
                "the file cache cap",
                usage.cap,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        Response::new(200)
            .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            .header("Cache-Control", "no-store")
            .body(out)
    }

    /// Asks the indexes for `key`, per the strategy. `no_wait` uses any
    /// copy at hand without waiting for a refresh (file requests).
    fn resolve(&self, key: &Key, force: bool, no_wait: bool) -> Resolved {
        let n = self.cache.indexes().len();
        let sequential =
            self.settings.strategy == Strategy::FirstIndex && matches!(key, Key::Project(_));
        let mut found = Vec::new();
        let mut failure: Option<Arc<UpstreamError>> = None;
        let outcome_of =
            |pending: Pending| -> Result<Option<(Arc<Snapshot>, Freshness)>, Arc<UpstreamError>> {
                let outcome = match pending.current().filter(|_| no_wait) {
                    Some(snap) => Ok((snap, Freshness::Hit)),
                    None => self.cache.wait(pending),
                };
                match outcome {
                    Ok((snap, _)) if matches!(snap.doc, Doc::Missing) => Ok(None),
                    Ok((snap, fresh)) => Ok(Some((snap, fresh))),
                    Err(e) => Err(e),
                }
            };
        if sequential {
            for i in 0..n {
                let pending = self.cache.begin(i, key, force);
                match outcome_of(pending) {
                    Ok(Some((snap, fresh))) => return Resolved::Found(vec![(i, snap, fresh)]),
                    Ok(None) => continue,
                    // An index that errors never lets a later one win.
                    Err(e) => return Resolved::Failed(e),
                }
            }
            return Resolved::NotFound;
        }
        let pendings: Vec<Pending> = (0..n).map(|i| self.cache.begin(i, key, force)).collect();
        for (i, pending) in pendings.into_iter().enumerate() {
            match outcome_of(pending) {
                Ok(Some((snap, fresh))) => found.push((i, snap, fresh)),
                Ok(None) => {}
                Err(e) => {
                    if i > 0 {
                        log::info!("skipping index {i} for this request: {e}");
                    }
                    failure.get_or_insert(e);
                }
            }
        }
        match (found.is_empty(), failure) {
            (false, _) => Resolved::Found(found),
            (true, Some(e)) => Resolved::Failed(e),
            (true, None) => Resolved::NotFound,
        }
    }

    /// A project page or the project list.
    fn page(&self, req: &Request, key: Key) -> Response {
        let format_param = query_param(req.query(), "format");
        let Some(format) = negotiate_format(format_param.as_deref(), req.header("accept")) else {
            return Response::text(406, "no acceptable representation: this index serves text/html, application/vnd.pypi.simple.v1+html and application/vnd.pypi.simple.v1+json\n")
                .header("Vary", "Accept, Accept-Encoding");
        };
        let Some(coding) = negotiate_coding(req.header("accept-encoding")) else {
            return Response::text(406, "no acceptable content coding (identity refused)\n")
                .header("Vary", "Accept, Accept-Encoding");
        };
        let found = match self.resolve(&key, wants_revalidation(req), false) {
            Resolved::Found(found) => found,
            Resolved::NotFound => {
                return Response::text(404, "not found in any index\n")
                    .header("Cache-Control", "max-age=60")
                    .log_tag("MISS")
            }
            Resolved::Failed(e) => return upstream_failure(&e),
        };
        let now = Instant::now();
        let sig: Vec<u64> = found.iter().map(|(_, s, _)| s.generation).collect();
        let stale = found.iter().any(|(_, _, f)| *f == Freshness::Stale);
        let missed = found.iter().any(|(_, _, f)| *f == Freshness::Miss);
        let view = match self.cache.view(&key, format, coding, &sig) {
            Some(v) => v,
            None => {
                let body = match &key {
                    Key::Project(name) => {
                        let pages: Vec<&ProjectPage> = found
                            .iter()
                            .filter_map(|(_, s, _)| match &s.doc {
                                Doc::Page(p) => Some(p),
                                _ => None,
                            })
                            .collect();
                        let merged = crate::pypi::merge(pages, self.settings.strategy);
                        render_project(name, &merged, format)
                    }
                    Key::List => {
                        let mut names: Vec<ProjectName> = found
                            .iter()
                            .flat_map(|(_, s, _)| match &s.doc {
                                Doc::List(l) => l.clone(),
                                _ => Vec::new(),
                            })
                            .collect();
                        names.sort();
                        names.dedup();
                        render_list(&names, format)
                    }
                };
                let body = compress(body, coding);
                let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&body))[..32]);
                let v = Arc::new(Rendered {
                    sig,
                    body: Bytes::from(body),
                    etag,
                });
                self.cache.store_view(&key, format, coding, Arc::clone(&v));
                v
            }
        };
        let max_age = if stale {
            0
        } else {
            found
                .iter()
                .map(|(_, s, _)| s.remaining(now).as_secs())
                .min()
                .unwrap_or(0)
                .min(MAX_PAGE_AGE)
        };
        let tag = if stale {
            "STALE"
        } else if missed {
            "MISS"
        } else {
            "HIT"
        };
        let mut r = Response::new(200)
            .header("Content-Type", format.content_type())
            .header("Vary", "Accept, Accept-Encoding")
            .header("ETag", view.etag.clone())
            .header("Cache-Control", format!("max-age={max_age}"))
            .header("X-Cache", tag)
            .log_tag(tag);
        if stale {
            let age = found
                .iter()
                .map(|(_, s, _)| s.age(now).as_secs())
                .max()
                .unwrap_or(0);
            r = r.header("Age", age.to_string());
        }
        if let Some(enc) = coding.header_value() {
            r = r.header("Content-Encoding", enc);
        }
        if etag_matches(req.header("if-none-match"), &view.etag) {
            return not_modified(r);
        }
        r.body(view.body.clone())
    }

    /// A distribution file or its `.metadata`: from the file cache, from the
    /// download in progress, or (cache disabled, disk trouble) streamed
    /// through from the upstream.
    fn file(&self, req: &Request, name: ProjectName, file: Filename) -> Response {
        let key = Key::Project(name);
        let found = match self.resolve(&key, false, true) {
            Resolved::Found(found) => found,
            Resolved::NotFound => return Response::text(404, "project not found in any index\n"),
            Resolved::Failed(e) => return upstream_failure(&e),
        };
        let Some((index, entry, metadata)) = self.find_file(&found, &file) else {
            return Response::text(404, format!("{file} is not listed on the project page\n"));
        };
        let index = &self.cache.indexes()[index];
        let mut url = entry.url.clone();
        let (hashes, size) = if metadata {
            let p = format!("{}.metadata", url.path());
            url.set_path(&p);
            match &entry.core_metadata {
                CoreMetadata::Available(h) => (h.clone(), None),
                CoreMetadata::Absent => (Default::default(), None),
            }
        } else {
            (entry.hashes.clone(), entry.size)
        };
        let content_type = file_content_type(file.as_str(), self.settings.binary_file_mime_type);
        let cache_key = CacheKey::derive(hashes.get("sha256").map(String::as_str), &url);
        let source = Source {
            index: index.clone(),
            url,
            hashes,
            size,
        };
        let is_head = *req.method() == Method::Head;
        if is_head {
            // HEAD never starts a download.
            if let Some(Lookup::Hit(f)) = self.downloads.storage().map(|s| s.lookup(&cache_key)) {
                return self.serve_stored(req, f, content_type);
            }
            if let Some(size) = size {
                return Response::new(200)
                    .header("Content-Type", content_type)
                    .body(Body::Stream(Stream {
                        len: Some(size),
                        reader: Box::new(std::io::empty()),
                    }));
            }
            return self.stream_through(req, &source, content_type);
        }
        let can_redirect = !index.has_credentials() && !self.settings.offline;
        match self.downloads.fetch(&cache_key, &source) {
            Fetch::Hit(f) => self.serve_stored(req, f, content_type),
            Fetch::StreamThrough => self.stream_through(req, &source, content_type),
            Fetch::Download { inflight, joined } => {
                if req.header("range").is_some() {
                    // The whole file keeps downloading in the background.
                    return self.stream_through(req, &source, content_type);
                }
                if can_redirect && self.settings.download_timeout.is_zero() {
                    return redirect_to(&source.url);
                }
                let limit = if can_redirect {
                    self.settings.download_timeout
                } else {
                    FIRST_BYTE_WAIT
                };
                let tag = if joined { "COALESCED" } else { "MISS" };
                match inflight.wait_started(limit) {
                    Ok(Some(reader)) => Response::new(200)
                        .header("Content-Type", content_type)
                        .header("X-Cache", tag)
                        .log_tag(tag)
                        .body(Body::Stream(Stream {
                            len: Some(reader.len()),
                            reader: Box::new(
                                reader.with_fallback(Arc::clone(&self.upstream), source.clone()),
                            ),
                        })),
                    Ok(None) if can_redirect => redirect_to(&source.url),
                    Ok(None) => upstream_failure(&UpstreamError::Timeout(index.display())),
                    Err(Failure::Local(_) | Failure::NoLength) => {
                        self.stream_through(req, &source, content_type)
                    }
                    Err(f) => Response::text(502, format!("{f}\n"))
                        .header("Retry-After", "10")
                        .header("Cache-Control", "no-store")
                        .log_tag("ERROR"),
                }
            }
        }
    }

    /// A committed file: conditional requests, single ranges, sendfile.
    fn serve_stored(&self, req: &Request, f: StoredFile, content_type: &'static str) -> Response {
        let etag = format!("\"{}\"", f.sha256);
        let last_modified = httpdate::fmt_http_date(f.modified);
        let headers = |status: u16| {
            Response::new(status)
                .header("Content-Type", content_type)
                .header("ETag", etag.clone())
                .header("Last-Modified", last_modified.clone())
                .header("Cache-Control", "public, max-age=31536000, immutable")
                .header("Accept-Ranges", "bytes")
                .header("X-Cache", "HIT")
                .log_tag("HIT")
        };
        if etag_matches(req.header("if-none-match"), &etag) {
            return headers(304);
        }
        let range = if if_range_allows(req.header("if-range"), &etag, &last_modified) {
            parse_range(req.header("range"), f.len)
        } else {
            RangeRequest::Full
        };
        let (status, offset, len, content_range) = match range {
            RangeRequest::Full => (200, 0, f.len, None),
            RangeRequest::Partial(r) => (206, r.start, r.len(), Some(r.content_range(f.len))),
            RangeRequest::Unsatisfiable => {
                return headers(416).header("Content-Range", format!("bytes */{}", f.len));
            }
        };
        if *req.method() == Method::Get {
            self.downloads.served_from_cache(len);
        }
        let mut r = headers(status);
        if let Some(cr) = content_range {
            r = r.header("Content-Range", cr);
        }
        r.body(FileRange {
            file: f.file,
            offset,
            len,
        })
    }

    /// Streams a file (or the requested range of it) straight from the
    /// upstream, without caching.
    fn stream_through(
        &self,
        req: &Request,
        source: &Source,
        content_type: &'static str,
    ) -> Response {
        let index = &source.index;
        let url = &source.url;
        let can_redirect = !index.has_credentials() && !self.settings.offline;
        if can_redirect && self.settings.download_timeout.is_zero() {
            return redirect_to(url);
        }
        let range = req.header("range").map(str::to_owned);
        let opened = self.open_with_deadline(index, url, range, can_redirect);
        let streamed = match opened {
            Some(Ok(s)) => s,
            Some(Err(e)) => return upstream_failure(&e),
            None => return redirect_to(url),
        };
        let mut r = match streamed.status {
            200 => Response::new(200),
            206 | 416 => {
                let mut r = Response::new(streamed.status);
                if let Some(cr) = &streamed.content_range {
                    r = r.header("Content-Range", cr.clone());
                }
                r
            }
            404 | 410 => {
                return Response::text(
                    502,
                    format!(
                        "{} is listed but the upstream does not have it\n",
                        redact(url)
                    ),
                )
                .header("Retry-After", "60")
            }
            s => return upstream_failure(&UpstreamError::Status(redact(&streamed.final_url), s)),
        };
        r = r
            .header("Content-Type", content_type)
            .header("X-Cache", "MISS")
            .log_tag("MISS");
        let len = streamed.content_length;
        if *req.method() == Method::Head || streamed.status == 416 {
            return r.body(Body::Stream(Stream {
                len: if streamed.status == 416 { Some(0) } else { len },
                reader: Box::new(std::io::empty()),
            }));
        }
        r.body(Body::Stream(Stream {
            len,
            reader: streamed.body,
        }))
    }

    /// Opens the upstream file, waiting for its response headers at most
    /// `download_timeout` when a redirect is possible (`None` = redirect).
    fn open_with_deadline(
        &self,
        index: &Index,
        url: &url::Url,
        range: Option<String>,
        can_redirect: bool,
    ) -> Option<Result<crate::upstream::Streamed, UpstreamError>> {
        if !can_redirect {
            return Some(self.upstream.open_file(index, url, range.as_deref()));
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let upstream = Arc::clone(&self.upstream);
        let (index, url) = (index.clone(), url.clone());
        let spawned = std::thread::Builder::new()
            .name("roxpi-open".into())
            .spawn(move || {
                let _ = tx.send(upstream.open_file(&index, &url, range.as_deref()));
            });
        if spawned.is_err() {
            return None;
        }
        rx.recv_timeout(self.settings.download_timeout.max(Duration::from_millis(1)))
            .ok()
    }

    /// Finds a file (or the distribution of a `.metadata` file) on the
    /// pages, first index first. Metadata is found only where advertised.
    fn find_file<'a>(
        &self,
        found: &'a [(usize, Arc<Snapshot>, Freshness)],
        file: &Filename,
    ) -> Option<(usize, &'a FileEntry, bool)> {
        let pages = found.iter().filter_map(|(i, s, _)| match &s.doc {
            Doc::Page(p) => Some((*i, p)),
            _ => None,
        });
        for (i, page) in pages {
            if let Some(e) = page.files.iter().find(|e| e.filename == *file) {
                return Some((i, e, false));
            }
            if let Some(dist) = file.as_str().strip_suffix(".metadata") {
                if let Some(e) = page.files.iter().find(|e| {
                    e.filename.as_str() == dist
                        && matches!(e.core_metadata, CoreMetadata::Available(_))
                }) {
                    return Some((i, e, true));
                }
            }
        }
        None
    }
}

/// How long a request waits for a download's first bytes when it cannot
/// be redirected.
const FIRST_BYTE_WAIT: Duration = Duration::from_secs(120);

fn redirect_to(url: &url::Url) -> Response {
    Response::text(302, "the upstream is slow; fetch the file there\n")
        .header("Location", url.as_str().to_owned())
        .header("Cache-Control", "no-store")
        .log_tag("REDIRECT")
}

fn json_success() -> Response {
    Response::new(200)
        .header("Content-Type", "application/json")
        .header("Cache-Control", "no-store")
        .body(SUCCESS)
}

/// The one mapping from upstream trouble to a client answer.
fn upstream_failure(e: &UpstreamError) -> Response {
    let status = if e.is_timeout() { 504 } else { 502 };
    Response::text(status, format!("{e}\n"))
        .header("Retry-After", "30")
        .header("Cache-Control", "no-store")
        .log_tag("ERROR")
}

fn compress(body: Vec<u8>, coding: Coding) -> Vec<u8> {
    let level = flate2::Compression::new(6);
    let out = match coding {
        Coding::Identity => return body,
        Coding::Gzip => {
            // mtime 0 and no file name: the same page gives the same bytes.
            let mut enc = flate2::GzBuilder::new().mtime(0).write(Vec::new(), level);
            enc.write_all(&body).and_then(|()| enc.finish())
        }
        Coding::Deflate => {
            let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), level);
            enc.write_all(&body).and_then(|()| enc.finish())
        }
    };
    // Writing into a Vec cannot fail.
    out.unwrap_or_default()
}

/// `If-None-Match` against a strong ETag (weak comparison, as RFC 9110
/// requires for this header).
pub fn etag_matches(header: Option<&str>, etag: &str) -> bool {
    let Some(h) = header else { return false };
    let bare = etag.trim_start_matches("W/");
    h.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == bare)
}

/// A 304 with every header of the 200 it stands for, and no body.
fn not_modified(full: Response) -> Response {
    full.headers().fold(Response::new(304), |r, (k, v)| {
        r.header(k.to_owned(), v.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ProjectName {
        ProjectName::parse(s).unwrap()
    }

    fn file(s: &str) -> Filename {
        Filename::parse(s).unwrap()
    }

    #[test]
    fn routes() {
        let cases: Vec<(&str, Option<&str>, Route)> = vec![
            ("/", None, Route::Home),
            ("/health", None, Route::Health),
            ("/metrics", None, Route::Metrics),
            ("/index/", None, Route::List),
            ("/simple/", None, Route::List),
            (
                "/index",
                Some("format=x"),
                Route::Redirect("/index/?format=x".into()),
            ),
            ("/index/numpy/", None, Route::Project(name("numpy"))),
            ("/simple/numpy/", None, Route::Project(name("numpy"))),
            (
                "/index/numpy",
                None,
                Route::Redirect("/index/numpy/".into()),
            ),
            (
                "/index/NumPy/",
                Some("format=json"),
                Route::Redirect("/index/numpy/?format=json".into()),
            ),
            (
                "/simple/Foo.Bar",
                None,
                Route::Redirect("/simple/foo-bar/".into()),
            ),
            (
                "/index/Foo_Bar/foo_bar-1.0.tar.gz",
                None,
                Route::Redirect("/index/foo-bar/foo_bar-1.0.tar.gz".into()),
            ),
            (
                "/index/numpy/numpy-1.0.whl",
                None,
                Route::File(name("numpy"), file("numpy-1.0.whl")),
            ),
            (
                "/index/torch/torch-2.0%2Bcpu.whl",
                None,
                Route::File(name("torch"), file("torch-2.0+cpu.whl")),
            ),
            (
                "/index/torch/torch-2.0%252Bcpu.whl",
                None,
                Route::File(name("torch"), file("torch-2.0%2Bcpu.whl")),
            ),
            (
                "/index/numpy/numpy-1.0.whl.metadata",
                None,
                Route::File(name("numpy"), file("numpy-1.0.whl.metadata")),
            ),
            ("/index/numpy/..", None, Route::NotFound),
            ("/index/numpy/%2e%2e", None, Route::NotFound),
            ("/index/numpy/a%2Fb", None, Route::NotFound),
            ("/index/numpy/a%5Cb", None, Route::NotFound),
            ("/index/numpy/a%00b", None, Route::NotFound),
            ("/index/numpy/a/b", None, Route::NotFound),
            ("/index/../etc/passwd", None, Route::NotFound),
            (
                "/index/%ff/",
                None,
                Route::BadRequest("invalid percent-encoding".into()),
            ),
            ("/index/-bad-/", None, Route::NotFound),
            ("/cache/list", None, Route::InvalidateList),
            (
                "/cache/Jinja2",
                None,
                Route::InvalidateProject(name("jinja2")),
            ),
            ("/nothing", None, Route::NotFound),
            ("/indexes/", None, Route::NotFound),
        ];
        for (path, query, want) in cases {
            assert_eq!(route(path, query), want, "{path} {query:?}");
        }
        let long = format!("/index/{}/", "a".repeat(300));
        assert_eq!(route(&long, None), Route::NotFound);
        assert!(matches!(route("/cache/a%2Fb", None), Route::BadRequest(_)));
    }

    #[test]
    fn revalidation_requests() {
        let cases = [
            (vec![], false),
            (vec![("Cache-Control", "no-cache")], true),
            (vec![("Cache-Control", "max-age=0")], true),
            (vec![("Cache-Control", "public, max-age=0")], true),
            (vec![("Cache-Control", "max-age=600")], false),
            (vec![("Pragma", "no-cache")], true),
        ];
        for (headers, want) in cases {
            let mut r = Request::new("GET", "/index/x/");
            for (k, v) in &headers {
                r = r.with_header(k, v);
            }
            assert_eq!(wants_revalidation(&r), want, "{headers:?}");
        }
    }

    #[test]
    fn etags() {
        assert!(etag_matches(Some("\"abc\""), "\"abc\""));
        assert!(etag_matches(Some("\"x\", \"abc\""), "\"abc\""));
        assert!(etag_matches(Some("W/\"abc\""), "\"abc\""));
        assert!(etag_matches(Some("*"), "\"abc\""));
        assert!(!etag_matches(Some("\"abd\""), "\"abc\""));
        assert!(!etag_matches(None, "\"abc\""));
    }

    #[test]
    fn file_types() {
        let cases = [
            ("a-1.0-py3-none-any.whl", false, "application/octet-stream"),
            ("a-1.0.tar.gz", false, "application/x-tar+gzip"),
            ("a-1.0.zip", false, "application/zip"),
            ("a-1.0.whl.metadata", false, "application/octet-stream"),
            ("a-1.0.tar.gz", true, "application/octet-stream"),
            ("a-1.0.tar.bz2", false, "application/octet-stream"),
        ];
        for (f, binary, want) in cases {
            assert_eq!(file_content_type(f, binary), want, "{f}");
        }
    }

    #[test]
    fn compression_is_deterministic_and_decodes() {
        use std::io::Read;
        let body = b"<html>hello hello hello</html>".to_vec();
        let a = compress(body.clone(), Coding::Gzip);
        let b = compress(body.clone(), Coding::Gzip);
        assert_eq!(a, b);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&a[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
        let d = compress(body.clone(), Coding::Deflate);
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(&d[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
        assert_eq!(compress(body.clone(), Coding::Identity), body);
    }

    #[test]
    fn query_params() {
        assert_eq!(
            query_param(
                Some("format=application%2Fvnd.pypi.simple.v1%2Bjson"),
                "format"
            )
            .as_deref(),
            Some("application/vnd.pypi.simple.v1+json")
        );
        assert_eq!(
            query_param(Some("a=1&format=text/html"), "format").as_deref(),
            Some("text/html")
        );
        assert_eq!(query_param(Some("a=1"), "format"), None);
        assert_eq!(query_param(None, "format"), None);
    }
}
