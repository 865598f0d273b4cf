//! The roxpi binary: parse the configuration, start logging, run the server
//! until SIGTERM or SIGINT, then shut down gracefully.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM};

use roxpi::config::{Cli, Settings};
use roxpi::http::{Server, ServerConfig};

/// How long in-flight responses may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roxpi: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    roxpi::config::apply_env_aliases();
    let cli = Cli::parse_args();
    let config = Settings::from_cli(&cli)?;
    let _log = roxpi::logging::start(&config.log_spec, config.log_json)
        .with_context(|| format!("invalid ROXPI_LOG / --log value {:?}", cli.log))?;
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .context("cannot install signal handlers")?;
    // A file-size limit must turn writes into EFBIG errors (counted, files
    // streamed through), not kill the process.
    signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    )
    .context("cannot install the SIGXFSZ handler")?;
    let server_config = ServerConfig {
        workers: config.workers.max(1),
        ..ServerConfig::default()
    };
    let app = roxpi::wire(config.clone(), std::sync::Arc::clone(&server_config.stats))?;
    let server = Server::start(config.bind, server_config, move |req| app.handle(req))
        .with_context(|| format!("cannot listen on {} (ROXPI_BIND / --bind)", config.bind))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "roxpi listening on http://{}", server.local_addr())?;
    out.flush()?;
    drop(out);
    log::info!(
        "serving on http://{} with {} workers, up to {} connections",
        server.local_addr(),
        config.workers,
        server.max_connections()
    );
    for (i, index) in config.indexes.iter().enumerate() {
        log::info!(
            "index {i}: {} (ttl {}s)",
            roxpi::redact::SafeUrl::new(&index.url),
            index.ttl.as_secs()
        );
    }
    if let Some(sig) = signals.forever().next() {
        log::info!("signal {sig}: finishing in-flight responses, then exiting");
    }
    if !server.shutdown(SHUTDOWN_GRACE) {
        log::warn!("exiting with responses still in flight");
    }
    Ok(())
}
