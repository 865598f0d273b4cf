//! roxpi: a PyPI caching proxy.
//!
//! Modules, arrows pointing one way (`app` → the rest):
//! - [`http`]: the HTTP/1.1 server (threads, limits, framing); knows nothing
//!   of PyPI.
//! - [`config`]: every setting once — flag, environment variable, default.
//! - [`logging`]: flexi_logger set-up (asynchronous writer).
//! - [`app`]: the routes, turning a request into a response.

pub mod app;
pub mod config;
pub mod files;
pub mod http;
pub mod index_cache;
pub mod logging;
pub mod persist;
pub mod pypi;
pub mod storage;
pub mod upstream;
