//! The application: turns a request into a response. Data flows one way:
//! request → `route` → `pages` | `files` → the index cache | `files::Files`
//! → storage | origin. This module wires them together and dispatches;
//! `status` builds the home page and `/metrics` from one snapshot, and
//! `error` is the one mapping from a failure to a status.

mod error;
mod files;
mod pages;
mod route;
mod status;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use error::{classify, Failure};
pub use route::{route, Prefix, Route};

use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::files::{Files, FilesConfig};
use crate::http::{Method, Request, Response};
use crate::index_cache::{IndexCache, Key};
use crate::origin::{Index, IndexId, Origin};
use crate::persist::PageStore;

const SUCCESS: &str = "{\"status\":\"success\",\"data\":null}";
/// Threads opening upstream bodies for ranges and stream-through.
const OPEN_THREADS: usize = 16;

pub struct App {
    requests: AtomicU64,
    settings: Settings,
    pages: Arc<IndexCache>,
    files: Files,
    /// The HTTP server's counters, shown on `/` and `/metrics`.
    server: Arc<crate::http::Stats>,
}

impl App {
    /// Wires the app to `origin` (the real `Upstream`, or a fake in tests);
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
        let files = Files::open(
            files_config(&settings),
            &settings.cache_dir,
            settings.cache_size,
            Arc::clone(&origin),
            Arc::clone(&clock),
        )?;
        App::assemble(settings, files, origin, server, clock)
    }

    /// The app around a ready `Files` (tests give it their own storage).
    pub(crate) fn assemble(
        settings: Settings,
        files: Files,
        origin: Arc<dyn Origin>,
        server: Arc<crate::http::Stats>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<App> {
        let indexes: Vec<Index> = settings
            .indexes
            .iter()
            .enumerate()
            .map(|(i, c)| Index::new(IndexId(i), c))
            .collect();
        // Pages are saved next to the files they list (the dir is locked).
        let saved = if settings.cache_size == 0 {
            None
        } else {
            match PageStore::open(&settings.cache_dir.join("pages")) {
                Ok(p) => Some(p),
                Err(e) => {
                    log::warn!("pages will not survive a restart: {e}");
                    None
                }
            }
        };
        let pages = IndexCache::new(
            origin,
            clock,
            indexes,
            settings.stale_after,
            settings.offline,
            settings.index_cache_size,
            saved,
        )
        .start()?;
        Ok(App {
            requests: AtomicU64::new(0),
            settings,
            pages,
            files,
            server,
        })
    }

    pub fn handle(&self, req: &Request) -> Response {
        self.requests.fetch_add(1, Ordering::Relaxed);
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
            Route::Home => status::home(self),
            Route::Health => json_success(),
            Route::Metrics => status::metrics(self),
            Route::Redirect(location) => {
                Response::text(301, format!("moved to {location}\n")).header("Location", location)
            }
            Route::InvalidateList => {
                self.pages.invalidate(&Key::List);
                json_success()
            }
            Route::InvalidateProject(name) => {
                self.pages.invalidate(&Key::Project(name));
                json_success()
            }
            Route::List => self.page(req, Key::List),
            Route::Project(name) => self.page(req, Key::Project(name)),
            Route::File(name, file) => self.file(req, name, file),
            Route::NotFound => Response::text(404, "not found\n"),
            Route::BadRequest(reason) => Response::text(400, format!("{reason}\n")),
        }
    }
}

/// How files are served, from the settings.
pub(crate) fn files_config(settings: &Settings) -> FilesConfig {
    FilesConfig {
        download_timeout: settings.download_timeout,
        offline: settings.offline,
        binary_file_mime_type: settings.binary_file_mime_type,
        download_threads: crate::files::download::DOWNLOAD_THREADS,
        open_threads: OPEN_THREADS,
    }
}

fn json_success() -> Response {
    Response::new(200)
        .header("Content-Type", "application/json")
        .header("Cache-Control", "no-store")
        .body(SUCCESS)
}
