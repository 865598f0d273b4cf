//! roxpi: a PyPI caching proxy.
//!
//! Data flows one way: request → route → pages | files → index cache |
//! downloads → storage | upstream. The modules, in that order:
//! - [`http`]: the HTTP/1.1 server (threads, limits, framing, conditional
//!   and range requests); knows nothing of PyPI.
//! - [`app`]: the routes, the pages and file routes, home page and
//!   `/metrics`, and the one failure → status mapping.
//! - [`index_cache`]: parsed pages per index with TTLs, single-flight
//!   fetches, stale serving, rendered variants; resolving a name across
//!   the indexes.
//! - [`files`]: everything about a file request: keys, hits, ranges, the
//!   one coalesced and verified download per file, stream-through,
//!   redirects.
//! - [`storage`]: the `Storage` trait and its three storages: the local
//!   LRU disk, the bucket (`s3`) and the two composed (`tiered`). Files
//!   and saved pages (a namespace) live there.
//! - [`policy`]: the site's rules (cooldown, yanks, deny lists), decided
//!   per file; the audit trail.
//! - [`origin`]: the `Origin` trait the caches fetch through, the
//!   configured indexes, the typed upstream error, and the real `Origin`
//!   over HTTP (`origin::http`: one ureq agent).
//! - [`address_policy`]: which addresses upstream connections may reach.
//! - [`page_budget`]: the memory bound for upstream pages being read.
//! - [`pypi`]: domain types and pure protocol code (names, page model,
//!   parsing, negotiation, rendering).
//! - [`config`]: every setting once — flag, environment variable, aliases,
//!   default, validation.
//! - [`clock`]: time as the caches see it (movable in tests).
//! - [`histogram`]: latency histograms for `/metrics`.
//! - [`human`]: sizes and durations for people.
//! - [`startup`]: serving (probes, parked requests) while the app starts.
//! - [`redact`]: URLs that cannot display credentials.
//! - [`wheel`]: a wheel's METADATA out of its zip (metadata synthesis).
//! - [`logging`]: flexi_logger set-up (asynchronous writer).

#![forbid(unsafe_code)]

pub mod access;
pub mod address_policy;
pub mod app;
pub mod clock;
pub mod config;
pub mod files;
pub mod flight;
pub mod histogram;
pub mod hosted;
pub mod http;
pub mod human;
pub mod index_cache;
pub mod logging;
pub mod origin;
pub mod page_budget;
pub mod policy;
pub mod prefetch;
pub mod pypi;
pub mod redact;
pub mod socket_budget;
pub mod startup;
pub mod storage;
pub mod wheel;

/// Locks `m`, recovering it from poison. roxpi's locks guard state that
/// is consistent between statements (no code that can panic runs while it
/// is half-changed), so a holder that panicked leaves nothing half-done:
/// the one rule for every lock, instead of a helper per module.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `lock` for reading an `RwLock`.
pub fn read<T>(m: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

/// `lock` for writing an `RwLock`.
pub fn write<T>(m: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// The composition root: the app wired to the real upstream (`HttpOrigin`)
/// and the storage the settings ask for (with the bucket for `s3` and
/// `tiered`), with `server` as the HTTP server's stats block (shown on
/// `/metrics`).
pub fn wire(
    settings: config::Settings,
    server: std::sync::Arc<http::Stats>,
) -> anyhow::Result<std::sync::Arc<app::App>> {
    let upstream = std::sync::Arc::new(origin::http::HttpOrigin::new(&settings.http_params())?);
    let bucket = match &settings.s3 {
        Some(s3) => Some(storage::s3::open_checked(s3.clone(), upstream.agent())?),
        None => None,
    };
    let shared_bucket = bucket.clone();
    let store = storage::open(
        &settings.cache_dir,
        settings.cache_size,
        settings.storage,
        bucket,
    )?;
    let app = std::sync::Arc::new(app::App::with_store(
        settings,
        upstream,
        server,
        std::sync::Arc::new(clock::SystemClock),
        store,
    )?);
    // Hosted files live in the bucket too, so that a fleet shares them.
    if let (Some(hosted), Some(bucket)) = (&app.hosted, shared_bucket) {
        hosted.share(bucket, hosted.config().sync_every)?;
    }
    Ok(app)
}
