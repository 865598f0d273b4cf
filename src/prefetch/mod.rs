//! `roxpi prefetch`: fill a running roxpi's cache with the files that lock
//! files name, through roxpi itself, so that every byte is verified and
//! stored the normal way. For each project it reads the page (PEP 691
//! JSON), picks the files (named by the lock, matched by `--hash`, or the
//! pinned version's, narrowed to the `--platform`/`--python` targets), then
//! asks roxpi for each: a HEAD that says `X-Cache: HIT` counts as already
//! cached, anything else is fetched with a GET and its sha256 checked.
//! Runs in parallel (`--jobs`) and resumes: a second run fetches nothing.
//! `ROXPI_PREFETCH` runs the same in the server's background at startup.

mod fetch;
pub mod locks;
mod pick;
pub mod report;
pub mod tags;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use url::Url;

pub use fetch::{agent, run};
pub use locks::{Format, Lock, Pick, Wanted};
pub use report::Report;
pub use tags::Target;

/// What to prefetch from, and for which machines.
#[derive(Clone, Debug)]
pub struct Options {
    /// roxpi's index URL, ending in `/` (`http://127.0.0.1:5000/index/`).
    pub url: Url,
    /// The machines to fetch for; empty: every file.
    pub targets: Vec<Target>,
    pub jobs: usize,
}

/// The index URL from what a user typed: a bare `http://host:port` gets
/// `/index/`, and a trailing `/` is added.
pub fn index_url(raw: &str) -> Result<Url, String> {
    let mut url = Url::parse(raw).map_err(|e| format!("--url {raw:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("--url {raw:?}: expected http:// or https://"));
    }
    if url.path() == "/" {
        url.set_path("/index/");
    } else if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

/// The targets: every platform with every Python version given (either
/// list may be empty: any).
pub fn targets(platforms: &[String], pythons: &[String]) -> Result<Vec<Target>, String> {
    let pythons = pythons
        .iter()
        .map(|p| tags::parse_python(p).map(Some))
        .collect::<Result<Vec<_>, _>>()?;
    if platforms.is_empty() && pythons.is_empty() {
        return Ok(Vec::new());
    }
    let platforms: Vec<Option<String>> = if platforms.is_empty() {
        vec![None]
    } else {
        platforms
            .iter()
            .map(|p| Some(p.trim().to_owned()))
            .collect()
    };
    let pythons = if pythons.is_empty() {
        vec![None]
    } else {
        pythons
    };
    Ok(platforms
        .iter()
        .flat_map(|p| {
            pythons.iter().map(move |v| Target {
                platform: p.clone(),
                python: *v,
            })
        })
        .collect())
}

/// Reads lock files (`format`, or detected by name), and the
/// requirements files they include (`-r`, relative to the including
/// file, each once).
pub fn read_locks(
    paths: &[PathBuf],
    format: Option<Format>,
) -> Result<Vec<(PathBuf, Lock)>, String> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut queue: Vec<(PathBuf, Option<Format>)> =
        paths.iter().rev().map(|p| (p.clone(), format)).collect();
    while let Some((path, format)) = queue.pop() {
        let same = std::fs::canonicalize(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !seen.insert(same) {
            continue;
        }
        if seen.len() > MAX_LOCK_FILES {
            return Err(format!(
                "more than {MAX_LOCK_FILES} lock files (with their -r includes)"
            ));
        }
        let format = format.or_else(|| locks::detect(&path)).ok_or_else(|| {
            format!(
                "{}: unknown lock format (name it uv.lock, poetry.lock, pylock.toml or *.txt, or give --format)",
                path.display()
            )
        })?;
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let lock = locks::parse(format, &text).map_err(|e| format!("{}: {e}", path.display()))?;
        let dir = path.parent().map(PathBuf::from).unwrap_or_default();
        for inc in lock.includes.iter().rev() {
            queue.push((dir.join(inc), Some(Format::Requirements)));
        }
        out.push((path, lock));
    }
    Ok(out)
}

/// Most lock files one run reads, includes counted (a guard against an
/// include loop through ever new paths).
const MAX_LOCK_FILES: usize = 256;

/// The files matching comma-separated glob patterns (`ROXPI_PREFETCH`),
/// sorted; a pattern matching nothing is an error.
pub fn expand(patterns: &str) -> Result<Vec<PathBuf>, String> {
    let mut out = BTreeSet::new();
    for pattern in patterns.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let matches: Vec<PathBuf> = glob::glob(pattern)
            .map_err(|e| format!("ROXPI_PREFETCH pattern {pattern:?}: {e}"))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        if matches.is_empty() {
            return Err(format!(
                "ROXPI_PREFETCH pattern {pattern:?} matches no file"
            ));
        }
        out.extend(matches);
    }
    Ok(out.into_iter().collect())
}

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Planning = 0,
    Fetching = 1,
    Done = 2,
}

/// A run's progress, shared with the progress bar and `/ready` (atomics:
/// read without a lock).
#[derive(Debug)]
pub struct Progress {
    state: AtomicU8,
    pub started: Instant,
    pub files_total: AtomicUsize,
    pub bytes_total: AtomicU64,
    pub fetched: AtomicUsize,
    pub cached: AtomicUsize,
    pub failed: AtomicUsize,
    /// Bytes received by fetches (cached files count their size).
    pub bytes_done: AtomicU64,
    /// Bytes of the files fetched now.
    pub bytes_fetched: AtomicU64,
    failures: Mutex<Vec<Failure>>,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress {
            state: AtomicU8::new(State::Planning as u8),
            started: Instant::now(),
            files_total: AtomicUsize::new(0),
            bytes_total: AtomicU64::new(0),
            fetched: AtomicUsize::new(0),
            cached: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            bytes_done: AtomicU64::new(0),
            bytes_fetched: AtomicU64::new(0),
            failures: Mutex::new(Vec::new()),
        }
    }
}

impl Progress {
    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            0 => State::Planning,
            1 => State::Fetching,
            _ => State::Done,
        }
    }

    /// Files finished (fetched, cached or failed).
    pub fn files_done(&self) -> usize {
        self.fetched.load(Ordering::Relaxed)
            + self.cached.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> Vec<Failure> {
        crate::lock(&self.failures).clone()
    }

    /// For `/ready`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "state": match self.state() {
                State::Planning => "planning",
                State::Fetching => "fetching",
                State::Done => "done",
            },
            "files": self.files_total.load(Ordering::Relaxed),
            "fetched": self.fetched.load(Ordering::Relaxed),
            "cached": self.cached.load(Ordering::Relaxed),
            "failed": self.failed.load(Ordering::Relaxed),
            "bytes": self.bytes_done.load(Ordering::Relaxed),
            "bytes_total": self.bytes_total.load(Ordering::Relaxed),
        })
    }

    fn fail(&self, what: &str, reason: String, report: &dyn Report) {
        let f = Failure {
            what: what.to_owned(),
            reason,
        };
        report.failed(&f);
        crate::lock(&self.failures).push(f);
    }
}

/// A file or project that could not be prefetched, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub what: String,
    pub reason: String,
}

/// The command line's `roxpi prefetch`: read the locks, run, print the
/// summary; an error when anything failed.
pub fn main(args: &Args) -> Result<(), String> {
    let format = args.format.as_deref().map(str::parse).transpose()?;
    let locks = read_locks(&args.locks, format)?;
    let opts = Options {
        url: index_url(&args.url.clone().unwrap_or_else(default_url))?,
        targets: targets(&args.platform, &args.python)?,
        jobs: args.jobs.max(1),
    };
    for (path, lock) in &locks {
        for s in &lock.skipped {
            println!("{}: left out {s}", path.display());
        }
    }
    let locks: Vec<Lock> = locks.into_iter().map(|(_, l)| l).collect();
    let progress = std::sync::Arc::new(Progress::default());
    let report = report::for_terminal(std::sync::Arc::clone(&progress));
    run(&agent(), &locks, &opts, &progress, report.as_ref());
    drop(report);
    println!("{}", report::summary(&progress));
    match progress.failed.load(Ordering::Relaxed) {
        0 => Ok(()),
        n => Err(format!("{n} failed")),
    }
}

/// ROXPI_PREFETCH: the same run in a thread of the server, against its own
/// listener, told in the log.
pub fn in_background(
    settings: crate::config::Prefetch,
    listening: std::net::SocketAddr,
    tls: bool,
    progress: std::sync::Arc<Progress>,
) {
    let mut near = listening;
    if near.ip().is_unspecified() {
        near.set_ip(match near {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let spawned = std::thread::Builder::new()
        .name("roxpi-prefetch".into())
        .spawn(move || {
            let locks = match read_locks(&settings.locks, None) {
                Ok(l) => l,
                Err(e) => {
                    log::error!("prefetch (ROXPI_PREFETCH): {e}");
                    progress.fail("ROXPI_PREFETCH", e, &report::Log);
                    progress.failed.fetch_add(1, Ordering::Relaxed);
                    progress.state.store(State::Done as u8, Ordering::Release);
                    return;
                }
            };
            let opts = Options {
                url: match Url::parse(&format!(
                    "{}://{near}/index/",
                    if tls { "https" } else { "http" }
                )) {
                    Ok(u) => u,
                    Err(e) => return log::error!("prefetch: {e}"),
                },
                targets: settings.targets,
                jobs: 4,
            };
            let locks: Vec<Lock> = locks.into_iter().map(|(_, l)| l).collect();
            log::info!(
                "prefetch: {} projects from {} lock files",
                locks.iter().map(|l| l.wanted.len()).sum::<usize>(),
                locks.len()
            );
            run(
                &fetch::agent_with(tls),
                &locks,
                &opts,
                &progress,
                &report::Log,
            );
            let summary = report::summary(&progress);
            if progress.failed.load(Ordering::Relaxed) > 0 {
                log::warn!("{summary}");
            } else {
                log::info!("{summary}");
            }
        });
    if let Err(e) = spawned {
        log::error!("prefetch: cannot start its thread: {e}");
    }
}

/// roxpi on this machine: the port of `ROXPI_BIND` (else 5000).
fn default_url() -> String {
    let port = std::env::var("ROXPI_BIND")
        .ok()
        .and_then(|b| b.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()))
        .filter(|p| *p != 0)
        .unwrap_or(5000);
    format!("http://127.0.0.1:{port}/index/")
}

/// `roxpi prefetch`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Lock files: requirements.txt (pinned, with or without --hash),
    /// pylock.toml, uv.lock, poetry.lock.
    #[arg(required = true)]
    pub locks: Vec<PathBuf>,

    /// roxpi's index URL (default: http://127.0.0.1:<port of ROXPI_BIND, else 5000>/index/).
    #[arg(long)]
    pub url: Option<String>,

    /// The lock format, if the file name does not say it: requirements,
    /// pylock, uv or poetry.
    #[arg(long)]
    pub format: Option<String>,

    /// Fetch wheels for this platform tag only (repeatable), e.g.
    /// manylinux_2_28_aarch64, musllinux_1_2_x86_64, macosx_14_0_arm64,
    /// win_amd64; an sdist when no wheel fits.
    #[arg(long)]
    pub platform: Vec<String>,

    /// Fetch wheels for this Python version only (repeatable), e.g. 3.12:
    /// the one wheel the installer takes.
    #[arg(long)]
    pub python: Vec<String>,

    /// Files fetched at once.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
}

#[cfg(test)]
mod tests;
