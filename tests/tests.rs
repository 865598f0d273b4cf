//! Integration tests: the HTTP server in-process with test handlers, and the
//! real binaries as child processes.

mod http_server;
mod process;
mod util;
