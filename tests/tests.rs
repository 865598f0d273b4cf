//! Integration tests: the HTTP server in-process with test handlers, and the
//! real binaries as child processes.

mod breaker;
mod browser;
mod edge;
mod fake_index;
mod file_cache;
mod hosted;
mod http_server;
mod index_api;
mod installers;
mod memory;
mod metadata;
mod parking;
mod policy;
mod prefetch;
mod process;
mod real_shapes;
mod request_bodies;
mod s3;
mod s3_server;
mod tls;
mod util;
