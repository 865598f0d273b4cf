// Size: the wiring of the routes and the one dispatch table; its handlers live in pages, files, status and error.
//! The application: turns a request into a response. Data flows one way:
//! request → `route` → `pages` | `files` → the index cache | `files::Files`
//! → storage | origin. This module wires them together and dispatches;
//! `status` builds the home page and `/metrics` from one snapshot, and
//! `error` is the one mapping from a failure to a status.

mod error;
mod files;
mod hosted;
pub mod latency;
mod pages;
mod recent;
mod renders;
mod route;
mod status;
mod top;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use error::{classify, Failure};
pub use route::{route, Prefix, Route};

use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::files::{Files, FilesConfig};
use crate::http::{Later, Method, ProbeAnswer, Request, Response, Waker};
use crate::index_cache::SavedPages;
use crate::index_cache::{IndexCache, Key, Resolution, Resolved};
use crate::origin::{Index, IndexId, Origin};

const SUCCESS: &str = "{\"status\":\"success\",\"data\":null}";
/// Threads opening upstream bodies for ranges and stream-through.
const OPEN_THREADS: usize = 16;

/// One set of indexes behind a path prefix: the default route or a
/// `[[route]]`. All share the one content-addressed file store.
pub(crate) struct IndexGroup {
    /// `None` for the default (`/index/`, `/simple/`).
    pub prefix: Option<String>,
    pub index_cache: Arc<IndexCache>,
    pub strategy: crate::pypi::Strategy,
    /// The route's own policy; `None`: the site's.
    pub policy: std::sync::RwLock<Option<Arc<crate::policy::Policy>>>,
    /// Its prefix, index URLs, TTLs and strategy: a reload keeps a route
    /// (and its cache) whose shape did not change.
    shape: String,
    /// Reading the route needs this token.
    pub read_token: Option<crate::access::Token>,
    /// The hosted indexes listed on it (the default route: all).
    pub hosted: Vec<String>,
}

/// The shape of a route's configuration (see `IndexGroup::shape`).
fn shape(r: &crate::config::RouteConfig) -> String {
    let indexes: Vec<(String, u128)> = r
        .indexes
        .iter()
        .map(|i| (i.url.to_string(), i.ttl.as_millis()))
        .collect();
    // The read token changes the shape without being kept in it.
    let token = r.read_token.as_ref().map(|t| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(t.0.as_bytes()))
    });
    format!(
        "{}|{indexes:?}|{:?}|{token:?}|{:?}",
        r.prefix, r.strategy, r.hosted
    )
}

/// What building a route needs.
struct RouteKit {
    origin: Arc<dyn Origin>,
    clock: Arc<dyn Clock>,
    staleness: crate::index_cache::Staleness,
    offline: bool,
    index_cache_size: u64,
    /// Where saved pages are kept (the file store).
    store: crate::files::Store,
}

impl RouteKit {
    /// Each of `share` routes' part of the index cache bound.
    fn budget(&self, share: u64) -> u64 {
        if share == 1 {
            self.index_cache_size
        } else {
            (self.index_cache_size / share).max(8 << 20)
        }
    }

    /// Saved pages: a namespace of the file store (none when the file
    /// cache is off).
    fn saved(&self) -> Option<SavedPages> {
        self.store.clone().map(SavedPages::new)
    }

    /// A `[[route]]`: its own index cache and saved pages.
    fn route(&self, r: &crate::config::RouteConfig, share: u64) -> anyhow::Result<IndexGroup> {
        let indexes: Vec<Index> = r
            .indexes
            .iter()
            .enumerate()
            .map(|(i, c)| Index::new(IndexId(i), c))
            .collect();
        let pages = IndexCache::new(
            Arc::clone(&self.origin),
            Arc::clone(&self.clock),
            indexes,
            self.staleness,
            self.offline,
            self.budget(share),
            self.saved(),
        )
        .start()?;
        log::info!("route {}: {} index(es)", r.prefix, r.indexes.len());
        Ok(IndexGroup {
            prefix: Some(r.prefix.clone()),
            index_cache: pages,
            strategy: r.strategy,
            policy: std::sync::RwLock::new(r.policy.clone()),
            shape: shape(r),
            read_token: r.read_token.clone(),
            hosted: r.hosted.clone(),
        })
    }
}

pub struct App {
    requests: AtomicU64,
    settings: Settings,
    /// The default route's index cache (`groups()[0]`).
    default_cache: Arc<IndexCache>,
    files: Arc<Files>,
    /// The HTTP server's counters, shown on `/` and `/metrics`.
    server: Arc<crate::http::Stats>,
    /// For its counters (refused addresses).
    origin: Arc<dyn Origin>,
    /// The default route (`/index/`, `/simple/`) first, then the
    /// `[[route]]`s of ROXPI_CONFIG: each with its own indexes (replaced
    /// on reload).
    upstreams: std::sync::RwLock<Arc<Vec<Arc<IndexGroup>>>>,
    /// What building a route needs (at start and on reload).
    kit: RouteKit,
    /// Request latency by route kind and cache result (`observe`).
    latencies: latency::Latencies,
    /// Samples for the home page's recent hit ratios.
    recent: recent::Recent,
    /// The site's policy (swapped whole on reload) and its version.
    policy: std::sync::RwLock<(Arc<crate::policy::Policy>, u64)>,
    /// Every policy decision that changed an answer.
    pub audit: crate::policy::audit::Audit,
    /// Renders of big pages, off the request workers.
    renders: renders::Renders,
    /// When files without an upload time were first seen.
    first_seen: crate::policy::first_seen::FirstSeen,
    /// When the app started (uptime), and as Unix seconds (`/metrics`).
    pub(crate) started: std::time::Instant,
    pub(crate) started_unix: u64,
    /// Bytes served per project (the home page's top 10).
    top: top::TopProjects,
    /// ROXPI_PREFETCH's progress, once it runs (for `/ready`).
    prefetch: std::sync::OnceLock<Arc<crate::prefetch::Progress>>,
    /// Hosted indexes (uploads), when configured.
    pub(crate) hosted: Option<Arc<crate::hosted::Hosted>>,
    /// Reads refused for want of a read token.
    pub(crate) read_refusals: AtomicU64,
}

impl App {
    /// Wires the app to `origin` (the real `IndexGroup`, or a fake in tests);
    /// `server` is the stats block given to the HTTP server.
    pub fn new(
        settings: Settings,
        origin: Arc<dyn Origin>,
        server: Arc<crate::http::Stats>,
    ) -> anyhow::Result<App> {
        App::with_clock(settings, origin, server, Arc::new(SystemClock))
    }

    pub fn with_clock(
        settings: Settings,
        origin: Arc<dyn Origin>,
        server: Arc<crate::http::Stats>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<App> {
        let store =
            crate::files::store(&settings.cache_dir, settings.cache_size, settings.storage)?;
        App::with_store(settings, origin, server, clock, store)
    }

    /// The app with `store` for its files and saved pages (`crate::wire`
    /// gives it the bucket's for `ROXPI_STORAGE=s3` or `tiered`).
    pub fn with_store(
        settings: Settings,
        origin: Arc<dyn Origin>,
        server: Arc<crate::http::Stats>,
        clock: Arc<dyn Clock>,
        store: crate::files::Store,
    ) -> anyhow::Result<App> {
        let files = Files::start(
            files_config(&settings),
            store.clone(),
            Arc::clone(&origin),
            Arc::clone(&clock),
        )?;
        App::assemble(settings, files, origin, server, clock, store)
    }

    // Long: builds every part of the app in one struct literal, in the order they depend on each other.
    /// The app around a ready `Files` (tests give it their own storage).
    pub(crate) fn assemble(
        settings: Settings,
        files: Files,
        origin: Arc<dyn Origin>,
        server: Arc<crate::http::Stats>,
        clock: Arc<dyn Clock>,
        store: crate::files::Store,
    ) -> anyhow::Result<App> {
        let indexes: Vec<Index> = settings
            .indexes
            .iter()
            .enumerate()
            .map(|(i, c)| Index::new(IndexId(i), c))
            .collect();
        let share = 1 + settings.routes.len() as u64;
        let kit = RouteKit {
            origin: Arc::clone(&origin),
            clock: Arc::clone(&clock),
            staleness: crate::index_cache::Staleness {
                after: settings.stale_after,
                while_revalidate: settings.stale_while_revalidate,
                deadline: settings.request_deadline,
            },
            offline: settings.offline,
            index_cache_size: settings.index_cache_size,
            store,
        };
        let mut upstreams = Vec::new();
        for r in &settings.routes {
            upstreams.push(Arc::new(kit.route(r, share)?));
        }
        let settings_policy = Arc::clone(&settings.policy);
        let hosted = match &settings.hosting {
            None => None,
            Some(h) => Some(Arc::new(crate::hosted::Hosted::open(h.clone()).map_err(
                |e| {
                    anyhow::anyhow!(
                        "cannot open the hosted files in {} (ROXPI_HOSTED_DIR): {e}",
                        h.dir.display()
                    )
                },
            )?)),
        };
        let first_seen = if settings.cache_size == 0 {
            crate::policy::first_seen::FirstSeen::default()
        } else {
            crate::policy::first_seen::FirstSeen::open(&settings.cache_dir.join("first-seen"))
                .unwrap_or_else(|e| {
                    log::warn!("first sightings of untimed files are kept in memory only: {e}");
                    Default::default()
                })
        };
        let pages = IndexCache::new(
            Arc::clone(&origin),
            clock,
            indexes,
            kit.staleness,
            settings.offline,
            kit.budget(share),
            kit.saved(),
        )
        .start()?;
        upstreams.insert(
            0,
            Arc::new(IndexGroup {
                prefix: None,
                index_cache: Arc::clone(&pages),
                strategy: settings.strategy,
                policy: std::sync::RwLock::new(None),
                shape: String::new(),
                read_token: settings.read_token.clone(),
                hosted: settings
                    .hosting
                    .as_ref()
                    .map(|h| h.indexes.iter().map(|i| i.name.clone()).collect())
                    .unwrap_or_default(),
            }),
        );
        Ok(App {
            requests: AtomicU64::new(0),
            settings,
            default_cache: pages,
            files: Arc::new(files),
            server,
            origin,
            latencies: latency::Latencies::default(),
            recent: Default::default(),
            upstreams: std::sync::RwLock::new(Arc::new(upstreams)),
            kit,
            policy: std::sync::RwLock::new((Arc::clone(&settings_policy), 1)),
            audit: Default::default(),
            renders: renders::Renders::start()?,
            first_seen,
            started: std::time::Instant::now(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            prefetch: std::sync::OnceLock::new(),
            top: Default::default(),
            hosted,
            read_refusals: AtomicU64::new(0),
        })
    }

    /// ROXPI_PREFETCH runs: `/ready` reports `progress`.
    pub fn set_prefetch(&self, progress: Arc<crate::prefetch::Progress>) {
        let _ = self.prefetch.set(progress);
    }

    pub fn handle(self: &Arc<Self>, req: &Request) -> Response {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if req.path().starts_with(crate::hosted::PREFIX) {
            return self.hosted_route(req);
        }
        let (up, route) = self.route(req);
        if let Some(token) = &up.read_token {
            let guarded = matches!(
                route,
                Route::Home
                    | Route::List
                    | Route::Project(_)
                    | Route::File(..)
                    | Route::Redirect(_)
            );
            if guarded && !token.presented_in(req) {
                self.read_refusals.fetch_add(1, Ordering::Relaxed);
                return crate::access::read_refused();
            }
        }
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
            Route::Home => status::home(self, req),
            Route::Health | Route::Ready => match self.probe(req.path()) {
                Some(a) => probe_response(&a),
                None => Response::text(404, "not found\n"),
            },
            Route::Metrics => match &self.settings.metrics_token {
                Some(t) if !t.presented_in(req) => {
                    self.read_refusals.fetch_add(1, Ordering::Relaxed);
                    crate::access::read_refused()
                }
                _ => status::metrics(self),
            },
            Route::Redirect(location) => {
                Response::text(301, format!("moved to {location}\n")).header("Location", location)
            }
            Route::InvalidateList | Route::InvalidateProject(_) if !self.authorized(req) => {
                Response::text(
                    401,
                    "an admin token is needed: Authorization: Bearer <ROXPI_ADMIN_TOKEN>\n",
                )
                .header("WWW-Authenticate", "Bearer realm=\"roxpi\"")
            }
            Route::InvalidateList => {
                for u in self.groups().iter() {
                    u.index_cache.invalidate(&Key::List);
                }
                json_success()
            }
            Route::InvalidateProject(name) => {
                let key = Key::Project(name);
                for u in self.groups().iter() {
                    u.index_cache.invalidate(&key);
                }
                json_success()
            }
            Route::List => self.page(req, up, Key::List),
            Route::Project(name) => self.page(req, up, Key::Project(name)),
            Route::File(name, file) => self.file(req, up, name, file),
            Route::NotFound => Response::text(404, "not found\n"),
            Route::BadRequest(reason) => Response::text(400, format!("{reason}\n")),
        }
    }
}

/// How files are served, from the settings.
pub(crate) fn files_config(settings: &Settings) -> FilesConfig {
    FilesConfig {
        download_timeout: settings.download_timeout,
        request_deadline: settings.request_deadline,
        offline: settings.offline,
        binary_file_mime_type: settings.binary_file_mime_type,
        download_threads: crate::files::download::DOWNLOAD_THREADS,
        open_threads: OPEN_THREADS,
        // Synthesis keeps what it makes in the local cache; `s3` has none.
        synthesize_metadata: settings.synthesize_metadata
            && settings.storage != crate::config::StorageMode::S3,
    }
}

/// The file path's failures, through the one mapping.
fn file_error(e: &crate::files::FileError) -> Response {
    error::respond(&Failure::File(e))
}

impl App {
    /// Continues with `then` once the indexes have answered: at once if they
    /// have, else the request is parked (no thread waits) until a refresh
    /// completes or the resolution's deadline passes.
    fn after_resolution<F>(
        self: &Arc<Self>,
        req: &Request,
        up: Arc<IndexGroup>,
        mut res: Resolution,
        then: F,
    ) -> Response
    where
        F: FnOnce(&Arc<App>, &Request, Resolved) -> Response + Send + 'static,
    {
        if let Some(done) = up.index_cache.poll_resolution(&mut res) {
            return then(self, req, done);
        }
        let deadline = res.deadline();
        let slot = Arc::new(Mutex::new(Some(res)));
        let subscribed = Arc::clone(&slot);
        let app = Arc::clone(self);
        Response::later(Later {
            deadline,
            subscribe: Box::new(move |waker: Waker| {
                if let Some(r) = crate::lock(&subscribed).as_ref() {
                    r.on_ready(move || waker.wake());
                }
            }),
            resume: Box::new(move |req: &Request| match crate::lock(&slot).take() {
                Some(res) => app.after_resolution(req, up, res, then),
                None => Response::text(500, "resumed twice\n"),
            }),
        })
    }
}

/// `/health`: alive (answered by the accept thread too; never blocks).
pub fn health() -> ProbeAnswer {
    ProbeAnswer {
        status: 200,
        body: SUCCESS.to_owned(),
    }
}

/// `/ready` while something keeps roxpi from serving well.
pub fn not_ready(reason: &str) -> ProbeAnswer {
    ProbeAnswer {
        status: 503,
        body: serde_json::json!({"ready": false, "reason": reason}).to_string(),
    }
}

/// A probe answer as a response (when a worker answers it).
pub fn probe_response(a: &ProbeAnswer) -> Response {
    Response::new(a.status)
        .header("Content-Type", "application/json")
        .header("Cache-Control", "no-store")
        .body(a.body.clone())
}

impl App {
    /// The route of a request: a `[[route]]` whose prefix it starts with,
    /// else the default one.
    fn route(&self, req: &Request) -> (Arc<IndexGroup>, Route) {
        let path = req.path();
        let upstreams = self.groups();
        for u in &upstreams[1..] {
            let Some(prefix) = &u.prefix else { continue };
            if let Some(rest) = path.strip_prefix(prefix.as_str()) {
                return (Arc::clone(u), route::under(prefix, rest, req.query()));
            }
            if path == prefix.trim_end_matches('/') {
                let to = match req.query() {
                    Some(q) => format!("{prefix}?{q}"),
                    None => prefix.clone(),
                };
                return (Arc::clone(u), Route::Redirect(to));
            }
        }
        (Arc::clone(&upstreams[0]), route(path, req.query()))
    }

    /// The routes, for the home page and `/metrics`: prefix, index URLs
    /// (without credentials), strategy.
    /// Every route: its prefix, its indexes, strategy and index cache.
    #[allow(clippy::type_complexity)]
    pub(super) fn routes(
        &self,
    ) -> Vec<(String, Vec<String>, crate::pypi::Strategy, Arc<IndexCache>)> {
        self.groups()
            .iter()
            .map(|u| {
                (
                    u.prefix
                        .clone()
                        .unwrap_or_else(|| "/index/, /simple/".into()),
                    u.index_cache
                        .indexes()
                        .iter()
                        .map(|i| i.display().to_string())
                        .collect(),
                    u.strategy,
                    Arc::clone(&u.index_cache),
                )
            })
            .collect()
    }

    /// The policy in force and its version (it changes on reload).
    pub fn policy(&self) -> (Arc<crate::policy::Policy>, u64) {
        let p = crate::read(&self.policy);
        (Arc::clone(&p.0), p.1)
    }

    /// The version of the policies (it changes on reload), without
    /// cloning either policy.
    pub(super) fn policy_version(&self) -> u64 {
        crate::read(&self.policy).1
    }

    /// The policy for a route (its own, else the site's) and the version
    /// of the policies (it changes on reload).
    pub(super) fn policy_for(&self, up: &IndexGroup) -> (Arc<crate::policy::Policy>, u64) {
        let (site, version) = self.policy();
        let own = crate::read(&up.policy).clone();
        (own.unwrap_or(site), version)
    }

    /// The routes in force (the default first): one reference count, no
    /// copy, per request.
    fn groups(&self) -> Arc<Vec<Arc<IndexGroup>>> {
        Arc::clone(&crate::read(&self.upstreams))
    }

    /// Puts the policies and routes of `new` in force (SIGHUP): the site's
    /// policy, each route's own, and the `[[route]]`s — a route whose
    /// prefix, indexes, TTLs and strategy did not change keeps its cache;
    /// a new or changed one starts empty; a removed one goes. (Indexes of
    /// the default route, storage and the other settings need a restart.)
    pub fn reload(&self, new: &Settings) -> anyhow::Result<()> {
        let current = self.groups();
        let share = 1 + new.routes.len() as u64;
        let mut next = vec![Arc::clone(&current[0])];
        for r in &new.routes {
            let kept = current[1..].iter().find(|u| u.shape == shape(r));
            match kept {
                Some(u) => {
                    *crate::write(&u.policy) = r.policy.clone();
                    next.push(Arc::clone(u));
                }
                None => next.push(Arc::new(self.kit.route(r, share)?)),
            }
        }
        let route_indexes: Vec<url::Url> = new
            .routes
            .iter()
            .flat_map(|r| r.indexes.iter().map(|i| i.url.clone()))
            .collect();
        self.kit.origin.trust_route_indexes(&route_indexes);
        *crate::write(&self.upstreams) = Arc::new(next);
        let mut p = crate::write(&self.policy);
        *p = (Arc::clone(&new.policy), p.1 + 1);
        Ok(())
    }

    /// Whether an invalidation may proceed: always without
    /// `ROXPI_ADMIN_TOKEN` (proxpi's behaviour), else only with its bearer
    /// token (compared in constant time).
    fn authorized(&self, req: &Request) -> bool {
        let Some(token) = &self.settings.admin_token else {
            return true;
        };
        let Some(given) = req
            .header("authorization")
            .and_then(|v| v.trim_start().split_once(' '))
            // Auth schemes are case-insensitive (RFC 9110 §11.1).
            .and_then(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer").then_some(token))
        else {
            return false;
        };
        let (a, b) = (given.trim().as_bytes(), token.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The policy's decision for a listed file at `now`: its upload time,
    /// or (under `untimed = "first-seen"`) when roxpi first saw it.
    pub(super) fn verdict(
        &self,
        policy: &crate::policy::Policy,
        name: &crate::pypi::ProjectName,
        entry: &crate::pypi::FileEntry,
        now: std::time::SystemTime,
    ) -> crate::policy::Verdict {
        let uploaded = entry
            .upload_time
            .as_deref()
            .and_then(crate::policy::parse_upload_time);
        let first_seen = (uploaded.is_none()
            && policy.cooldown.untimed == crate::policy::Untimed::FirstSeen)
            .then(|| {
                self.first_seen
                    .get_or_record(&crate::files::metadata::wheel_key(entry), now)
            });
        policy.verdict(
            &crate::policy::Facts {
                project: name,
                filename: entry.filename.as_str(),
                uploaded,
                first_seen,
            },
            now,
        )
    }

    /// Every finished response (the server's observer): latency histograms.
    pub fn observe(&self, f: &crate::http::Finished<'_>) {
        self.latencies.observe(f);
        if matches!(f.status, 200 | 206) {
            if let Some(project) = top::project_of(f.target) {
                self.top.add(project, f.bytes);
            }
        }
    }

    /// `/health` and `/ready` (called by the accept thread: atomics and
    /// `try_lock` only, never I/O).
    pub fn probe(&self, path: &str) -> Option<ProbeAnswer> {
        match path {
            "/health" => Some(health()),
            "/ready" => Some(match self.not_ready() {
                Some(reason) => not_ready(&reason),
                // Ready even with the upstream down: the cache still
                // serves. The JSON says so.
                None => {
                    let mut body = serde_json::json!({ "ready": true });
                    if let Some(down) = self.origin.upstream_down() {
                        body["upstream"] = "down".into();
                        body["reason"] = down.into();
                    }
                    if let Some(p) = self.prefetch.get() {
                        body["prefetch"] = p.to_json();
                    }
                    ProbeAnswer {
                        status: 200,
                        body: body.to_string(),
                    }
                }
            }),
            _ => None,
        }
    }
}

impl App {
    /// Why roxpi does not serve well now, if it does not: the cache takes
    /// no writes, requests were answered past their deadline lately, or an
    /// index cache cannot make progress (fetches queued, none finishing).
    fn not_ready(&self) -> Option<String> {
        if let Some(reason) = self.files.stats.write_health.problem() {
            return Some(format!("cache write failed: {reason}"));
        }
        if let Some(n) = self.server.recently_overdue() {
            return Some(format!(
                "{n} requests were not answered by their deadline in the last 30 s"
            ));
        }
        // `try_read`: the probe never blocks (a reload holds the lock for
        // a moment at most).
        let routes = self.upstreams.try_read().ok()?;
        routes
            .iter()
            .find_map(|u| u.index_cache.stalled())
            .map(|r| format!("index cache: {r}"))
    }
}

pub(super) fn json_success() -> Response {
    Response::new(200)
        .header("Content-Type", "application/json")
        .header("Cache-Control", "no-store")
        .body(SUCCESS)
}
