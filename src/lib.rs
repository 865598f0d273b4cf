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
//! - [`storage`]: the `Storage` trait and its backends (local LRU disk,
//!   staging for `ROXPI_CACHE_SIZE=0`).
//! - [`persist`]: the last good copy of each page on disk.
//! - [`policy`]: the site's rules (cooldown, yanks, deny lists), decided
//!   per file; the audit trail.
//! - [`origin`]: the `Origin` trait the caches fetch through, the
//!   configured indexes and the typed upstream error.
//! - [`upstream`]: the real `Origin`: one ureq agent.
//! - [`address_policy`]: which addresses upstream connections may reach.
//! - [`page_budget`]: the memory bound for upstream pages being read.
//! - [`pypi`]: domain types and pure protocol code (names, page model,
//!   parsing, negotiation, rendering).
//! - [`config`]: every setting once — flag, environment variable, aliases,
//!   default, validation.
//! - [`clock`]: time as the caches see it (movable in tests).
//! - [`histogram`]: latency histograms for `/metrics`.
//! - [`startup`]: serving (probes, parked requests) while the app starts.
//! - [`redact`]: URLs that cannot display credentials.
//! - [`wheel`]: a wheel's METADATA out of its zip (metadata synthesis).
//! - [`logging`]: flexi_logger set-up (asynchronous writer).

#![forbid(unsafe_code)]

pub mod address_policy;
pub mod app;
pub mod clock;
pub mod config;
pub mod files;
pub mod flight;
pub mod histogram;
pub mod http;
pub mod index_cache;
pub mod logging;
pub mod origin;
pub mod page_budget;
pub mod persist;
pub mod policy;
pub mod pypi;
pub mod redact;
pub mod socket_budget;
pub mod startup;
pub mod storage;
pub mod upstream;
pub mod wheel;

/// The composition root: the app wired to the real upstream (`Upstream`),
/// with `server` as the HTTP server's stats block (shown on `/metrics`).
pub fn wire(
    settings: config::Settings,
    server: std::sync::Arc<http::Stats>,
) -> anyhow::Result<std::sync::Arc<app::App>> {
    let upstream = std::sync::Arc::new(upstream::Upstream::new(&settings)?);
    let bucket = match &settings.s3 {
        Some(s3) => Some(storage::s3::open_checked(s3.clone(), upstream.agent())?),
        None => None,
    };
    Ok(std::sync::Arc::new(app::App::with_bucket(
        settings,
        upstream,
        server,
        std::sync::Arc::new(clock::SystemClock),
        bucket,
    )?))
}
