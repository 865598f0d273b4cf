//! Every setting once: its flag, its `ROXPI_*` variable, its default and its
//! help text. Parsed and validated at startup into typed values.

use std::net::SocketAddr;

use clap::Parser;

/// roxpi — a PyPI caching proxy.
#[derive(Parser, Debug, Clone)]
#[command(version, about, long_about = None)]
pub struct Config {
    /// Listen address; port 0 picks a free port (the real address is printed).
    #[arg(long, env = "ROXPI_BIND", default_value = "0.0.0.0:5000")]
    pub bind: SocketAddr,

    /// Request worker threads (idle connections hold none; long bodies go to
    /// separate transfer threads).
    #[arg(long, env = "ROXPI_WORKERS", default_value_t = crate::http::DEFAULT_WORKERS,
          value_parser = clap::value_parser!(usize))]
    pub workers: usize,

    /// Log level or flexi_logger spec (e.g. `info`, `debug`, `info,roxpi::access=warn`).
    #[arg(long = "log", env = "ROXPI_LOG", default_value = "info")]
    pub log: String,
}
