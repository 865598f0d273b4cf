//! Serving while the app starts. roxpi listens first, then opens its
//! storage (scanning a large cache dir on an SD card takes a while) and
//! checks its bucket. Meanwhile `/health` answers 200 (alive), `/ready`
//! answers 503 with the reason, and every other request waits parked (no
//! thread held) until the app is there, then is served — or gets a 503
//! after `WAIT`.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::app::App;
use crate::http::{Later, ProbeAnswer, Request, Response, Waker};

/// How long a request waits for the app to start.
const WAIT: Duration = Duration::from_secs(60);

/// The app, once it has started, and the requests waiting for it.
#[derive(Default)]
pub struct Startup {
    app: OnceLock<Arc<App>>,
    waiting: Mutex<Vec<Waker>>,
}

impl Startup {
    pub fn new() -> Arc<Startup> {
        Arc::new(Startup::default())
    }

    /// The app has started: serve everything, wake the waiting requests.
    pub fn ready(&self, app: Arc<App>) {
        let _ = self.app.set(app);
        let waiting = std::mem::take(&mut *crate::lock(&self.waiting));
        for w in waiting {
            w.wake();
        }
    }

    /// The request handler.
    pub fn handle(self: &Arc<Self>, req: &Request) -> Response {
        if let Some(app) = self.app.get() {
            return app.handle(req);
        }
        if let Some(a) = starting_probe(req.path()) {
            return crate::app::probe_response(&a);
        }
        let me = Arc::clone(self);
        let watched = Arc::clone(self);
        Response::later(Later {
            deadline: Instant::now() + WAIT,
            subscribe: Box::new(move |waker: Waker| {
                let mut waiting = crate::lock(&watched.waiting);
                if watched.app.get().is_some() {
                    drop(waiting);
                    waker.wake();
                } else {
                    waiting.push(waker);
                }
            }),
            resume: Box::new(move |req: &Request| match me.app.get() {
                Some(app) => app.handle(req),
                None => Response::text(503, "roxpi is starting (opening its cache); retry soon\n")
                    .header("Retry-After", "5"),
            }),
        })
    }

    /// The app, once it has started.
    pub fn app(&self) -> Option<&Arc<App>> {
        self.app.get()
    }

    /// The server's observer: to the app once it is there.
    pub fn observe(&self, f: &crate::http::Finished<'_>) {
        if let Some(app) = self.app.get() {
            app.observe(f);
        }
    }

    /// The accept thread's probe (never blocks).
    pub fn probe(&self, path: &str) -> Option<ProbeAnswer> {
        match self.app.get() {
            Some(app) => app.probe(path),
            None => starting_probe(path),
        }
    }
}

/// Probes before the app has started: alive, not ready.
fn starting_probe(path: &str) -> Option<ProbeAnswer> {
    match path {
        "/health" => Some(crate::app::health()),
        "/ready" => Some(crate::app::not_ready("starting: opening the cache dir")),
        _ => None,
    }
}
