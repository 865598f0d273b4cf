//! The roxpi binary: parse the configuration, start logging, run the server
//! until SIGTERM or SIGINT, then shut down gracefully. SIGHUP reloads the
//! policies and routes of ROXPI_CONFIG (a broken file keeps those in force).

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use roxpi::config::{Cli, Command, Settings};
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

// Long: startup in order: settings, logging, listener, startup server, app, serve, shutdown.
fn run() -> anyhow::Result<()> {
    roxpi::config::apply_env_aliases();
    let cli = Cli::parse_args();
    if let Some(Command::Prefetch(args)) = &cli.command {
        return roxpi::prefetch::main(args).map_err(anyhow::Error::msg);
    }
    let config = Settings::from_cli(&cli)?;
    let _log = roxpi::logging::start(&config.log_spec, config.log_json)
        .with_context(|| format!("invalid ROXPI_LOG / --log value {:?}", cli.log))?;
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("cannot install signal handlers")?;
    // A file-size limit must turn writes into EFBIG errors (counted, files
    // streamed through), not kill the process.
    signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    )
    .context("cannot install the SIGXFSZ handler")?;
    // Listen first: `/health` answers while the cache dir is opened and
    // the bucket checked; `/ready` says 503 until then, and other requests
    // wait parked (`startup`).
    let startup = roxpi::startup::Startup::new();
    let probe = {
        let s = std::sync::Arc::clone(&startup);
        let p: roxpi::http::Probe = std::sync::Arc::new(move |path: &str| s.probe(path));
        p
    };
    let observe = {
        let s = std::sync::Arc::clone(&startup);
        let o: roxpi::http::Observer =
            std::sync::Arc::new(move |f: &roxpi::http::Finished<'_>| s.observe(f));
        o
    };
    let tls = match &config.tls {
        None => None,
        Some(t) => Some(roxpi::http::TlsListen {
            certs: roxpi::http::tls::TlsCerts::load(&t.cert, &t.key).map_err(anyhow::Error::msg)?,
            bind: t.bind,
        }),
    };
    let certs = tls.as_ref().map(|t| std::sync::Arc::clone(&t.certs));
    let server_config = ServerConfig {
        tls,
        workers: config.workers.max(1),
        probe: Some(probe),
        observe: Some(observe),
        // Every wait ends by the request deadline; this guard a little
        // after it.
        park_limit: config.request_deadline + Duration::from_secs(5),
        // Uploads to hosted indexes stream their bodies.
        limits: roxpi::http::Limits {
            stream_bodies: config.hosting.is_some(),
            ..Default::default()
        },
        ..ServerConfig::default()
    };
    let stats = std::sync::Arc::clone(&server_config.stats);
    let handler = std::sync::Arc::clone(&startup);
    let server = Server::start(config.bind, server_config, move |req| handler.handle(req))
        .with_context(|| format!("cannot listen on {} (ROXPI_BIND / --bind)", config.bind))?;
    let mut out = std::io::stdout().lock();
    // The plain address last: scripts read the line's last `http://`.
    match server.tls_addr() {
        None => writeln!(out, "roxpi listening on http://{}", server.local_addr())?,
        Some(t) if t == server.local_addr() => writeln!(out, "roxpi listening on https://{t}")?,
        Some(t) => writeln!(
            out,
            "roxpi listening on https://{t} and http://{}",
            server.local_addr()
        )?,
    }
    out.flush()?;
    drop(out);
    let app = match roxpi::wire(config.clone(), stats) {
        Ok(app) => app,
        Err(e) => {
            server.shutdown(Duration::from_millis(100));
            return Err(e);
        }
    };
    if let Some(p) = &config.prefetch {
        let progress = std::sync::Arc::new(roxpi::prefetch::Progress::default());
        app.set_prefetch(std::sync::Arc::clone(&progress));
        let tls_only = server.tls_addr() == Some(server.local_addr());
        roxpi::prefetch::in_background(p.clone(), server.local_addr(), tls_only, progress);
    }
    startup.ready(app);
    log::info!(
        "serving on http://{} with {} workers, up to {} connections",
        server.local_addr(),
        config.workers,
        server.max_connections()
    );
    for line in config.startup_lines() {
        log::info!("{line}");
    }
    for (i, index) in config.indexes.iter().enumerate() {
        log::info!(
            "index {i}: {} (ttl {}s)",
            roxpi::redact::SafeUrl::new(&index.url),
            index.ttl.as_secs()
        );
    }
    for sig in signals.forever() {
        if sig == SIGHUP {
            if let Some(c) = &certs {
                match c.reload() {
                    Ok(()) => log::info!(
                        "SIGHUP: TLS certificate and key reloaded; new connections use them"
                    ),
                    Err(e) => log::error!("SIGHUP: keeping the TLS certificate in force: {e}"),
                }
            }
            // Reload the policies and routes; a broken file keeps those
            // in force.
            match (&config.config_file, startup.app()) {
                // An empty file is a half-written or truncated one far
                // more often than a wish to drop every rule.
                (Some(path), Some(_)) if std::fs::read_to_string(path).is_ok_and(|t| t.trim().is_empty()) => {
                    log::warn!(
                        "SIGHUP: {} is empty; keeping the policies and routes in force (a file holding only a comment clears them)",
                        path.display()
                    )
                }
                (Some(path), Some(app)) => match Settings::from_cli(&cli)
                    .map_err(anyhow::Error::from)
                    .and_then(|new| {
                        app.reload(&new)?;
                        Ok(new.policy.is_empty() && new.routes.is_empty())
                    }) {
                    Ok(false) => log::info!(
                        "SIGHUP: policies and routes reloaded from {}",
                        path.display()
                    ),
                    Ok(true) => log::warn!(
                        "SIGHUP: {} holds no rule and no route: no deny, yank or cooldown is in force now",
                        path.display()
                    ),
                    Err(e) => log::error!("SIGHUP: keeping the policies and routes in force: {e}"),
                },
                _ => log::info!("SIGHUP: no ROXPI_CONFIG to reload"),
            }
            continue;
        }
        log::info!("signal {sig}: finishing in-flight responses, then exiting");
        break;
    }
    if !server.shutdown(SHUTDOWN_GRACE) {
        log::warn!("exiting with responses still in flight");
    }
    Ok(())
}
