//! Rendering big pages off the request workers. A project page with
//! thousands of files takes tens of milliseconds to render and compress
//! (pydantic-core: 25 ms to JSON, 16 ms to gzip at level 1): done on a
//! worker, every other request behind it waits. Such a render runs on a
//! small pool instead while its requests wait parked; concurrent requests
//! for the same variant share one render (single-flight).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;

use crate::flight::Flight;
use crate::index_cache::{Key, Rendered};
use crate::pypi::{Coding, PageFormat};

/// Pages with more files than this are rendered on the pool.
pub const INLINE_FILES: usize = 400;
/// Render threads (the machines roxpi runs on have 1–4 cores).
const THREADS: usize = 1;
/// Renders that may wait for a thread; beyond, they run inline.
const QUEUE: usize = 64;

/// One variant of one page at one version: (route prefix, page, format,
/// coding, generations).
pub type RenderKey = (Option<String>, Key, PageFormat, Coding, Vec<u64>);

/// A render's outcome: `None` if it failed (a panic, logged).
pub type RenderFlight = Flight<Option<Arc<Rendered>>>;

type Job = Box<dyn FnOnce() + Send>;

pub struct Renders {
    jobs: Sender<Job>,
    inflight: Arc<Mutex<HashMap<RenderKey, Arc<RenderFlight>>>>,
}

impl Renders {
    pub fn start() -> std::io::Result<Renders> {
        let (jobs, queue) = crossbeam_channel::bounded::<Job>(QUEUE);
        for i in 0..THREADS {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("roxpi-render-{i}"))
                .spawn(move || {
                    while let Ok(job) = queue.recv() {
                        job();
                    }
                })?;
        }
        Ok(Renders {
            jobs,
            inflight: Arc::default(),
        })
    }

    /// The flight rendering `key`: joined if one runs, else started with
    /// `render` (on the pool; inline when its queue is full).
    pub fn render(
        &self,
        key: RenderKey,
        render: impl FnOnce() -> Arc<Rendered> + Send + 'static,
    ) -> Arc<RenderFlight> {
        let flight = {
            let mut map = crate::lock(&self.inflight);
            if let Some(f) = map.get(&key) {
                return Arc::clone(f);
            }
            let f = Arc::new(RenderFlight::new());
            map.insert(key.clone(), Arc::clone(&f));
            f
        };
        let (done, inflight) = (Arc::clone(&flight), Arc::clone(&self.inflight));
        let job: Job = Box::new(move || {
            let out = catch_unwind(AssertUnwindSafe(render)).ok();
            if out.is_none() {
                log::error!("rendering {:?} failed (a panic)", key.1);
            }
            // Out of the map first: a request after this one renders again
            // only if the cache did not keep the result.
            crate::lock(&inflight).remove(&key);
            done.complete(out);
        });
        if let Err(e) = self.jobs.try_send(job) {
            (e.into_inner())();
        }
        flight
    }
}
