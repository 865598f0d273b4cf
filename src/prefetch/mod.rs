//! `roxpi prefetch`: fill a running roxpi's cache with the files that lock
//! files name, through roxpi itself, so that every byte is verified and
//! stored the normal way. For each project it reads the page (PEP 691
//! JSON), picks the files (named by the lock, matched by `--hash`, or the
//! pinned version's, narrowed to the `--platform`/`--python` targets), then
//! asks roxpi for each: a HEAD that says `X-Cache: HIT` counts as already
//! cached, anything else is fetched with a GET and its sha256 checked.
//! Runs in parallel (`--jobs`) and resumes: a second run fetches nothing.
//! `ROXPI_PREFETCH` runs the same in the server's background at startup.

pub mod locks;
pub mod report;
pub mod tags;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use url::Url;

use crate::pypi::ProjectName;
pub use locks::{Format, Lock, Pick, Wanted};
pub use report::Report;
pub use tags::Target;

/// How long a redirected file (roxpi's `ROXPI_DOWNLOAD_TIMEOUT`) may take
/// to land in the cache.
const REDIRECT_WAIT: Duration = Duration::from_secs(600);

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

/// Reads lock files (`format`, or detected by name).
pub fn read_locks(
    paths: &[PathBuf],
    format: Option<Format>,
) -> Result<Vec<(PathBuf, Lock)>, String> {
    paths
        .iter()
        .map(|path| {
            let format = format.or_else(|| locks::detect(path)).ok_or_else(|| {
                format!(
                    "{}: unknown lock format (name it uv.lock, poetry.lock, pylock.toml or *.txt, or give --format)",
                    path.display()
                )
            })?;
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let lock = locks::parse(format, &text).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((path.clone(), lock))
        })
        .collect()
}

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

/// One file to ask roxpi for.
#[derive(Clone, Debug)]
struct FileJob {
    filename: String,
    url: Url,
    sha256: Option<String>,
    size: Option<u64>,
}

/// A page's file, as PEP 691 JSON lists it.
#[derive(serde::Deserialize)]
struct PageFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
    size: Option<u64>,
    #[serde(default)]
    yanked: serde_json::Value,
    #[serde(rename = "requires-python")]
    requires_python: Option<String>,
}

/// Whether a file's `requires-python` admits the target's Python (its
/// newest patch release); unset or unreadable: yes.
fn runs_on(requires_python: Option<&str>, target: &Target) -> bool {
    let (Some(spec), Some((major, minor))) = (requires_python, target.python) else {
        return true;
    };
    match pep440_rs::VersionSpecifiers::from_str(spec) {
        Ok(spec) => spec.contains(&pep440_rs::Version::new([
            u64::from(major),
            u64::from(minor),
            99,
        ])),
        Err(_) => true,
    }
}

#[derive(serde::Deserialize)]
struct Page {
    files: Vec<PageFile>,
}

/// The HTTP client for roxpi: no proxy from the environment (roxpi is
/// near), no redirects followed (a redirect goes to the upstream), long
/// reads (a large file on a slow upstream).
pub fn agent() -> ureq::Agent {
    agent_with(false)
}

/// `agent`, trusting the system's roots (and `SSL_CERT_FILE`) for an
/// `https://` roxpi; `to_itself`: the server's own background prefetch
/// over loopback, which needs no certificate check.
fn agent_with(to_itself: bool) -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .disable_verification(to_itself)
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .proxy(None)
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_per_read(Some(Duration::from_secs(300)))
        .user_agent(concat!("roxpi-prefetch/", env!("CARGO_PKG_VERSION")))
        .accept_encoding("")
        .build()
        .new_agent()
}

/// Runs the prefetch of `locks`; what happened is in `progress` (and was
/// told to `report` as it happened).
pub fn run(
    agent: &ureq::Agent,
    locks: &[Lock],
    opts: &Options,
    progress: &Progress,
    report: &dyn Report,
) {
    let mut by_project: BTreeMap<ProjectName, Vec<Pick>> = BTreeMap::new();
    for w in locks.iter().flat_map(|l| &l.wanted) {
        by_project
            .entry(w.project.clone())
            .or_default()
            .push(w.pick.clone());
    }
    let projects: Vec<(ProjectName, Vec<Pick>)> = by_project.into_iter().collect();
    let planned = Mutex::new(Vec::new());
    parallel(opts.jobs, &projects, |(project, picks)| match plan_project(
        agent,
        &opts.url,
        project,
        picks,
        &opts.targets,
    ) {
        Ok((jobs, missing)) => {
            for (what, reason) in missing {
                progress.failed.fetch_add(1, Ordering::Relaxed);
                progress.fail(&what, reason, report);
            }
            crate::lock(&planned).extend(jobs);
        }
        Err(reason) => {
            progress.failed.fetch_add(1, Ordering::Relaxed);
            progress.fail(project.as_str(), reason, report);
        }
    });
    let mut jobs = planned.into_inner().unwrap_or_else(|e| e.into_inner());
    jobs.sort_by(|a, b| a.url.as_str().cmp(b.url.as_str()));
    jobs.dedup_by(|a, b| a.url == b.url);
    progress.files_total.store(
        jobs.len() + progress.failed.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    progress
        .bytes_total
        .store(jobs.iter().filter_map(|j| j.size).sum(), Ordering::Relaxed);
    progress
        .state
        .store(State::Fetching as u8, Ordering::Release);
    parallel(opts.jobs, &jobs, |job| {
        match fetch_file(agent, job, progress) {
            Ok(Fetched::Cached) => {
                progress.cached.fetch_add(1, Ordering::Relaxed);
                report.cached(&job.filename);
            }
            Ok(Fetched::Downloaded(bytes)) => {
                progress.fetched.fetch_add(1, Ordering::Relaxed);
                progress.bytes_fetched.fetch_add(bytes, Ordering::Relaxed);
                report.fetched(&job.filename, bytes);
            }
            Err(reason) => {
                progress.failed.fetch_add(1, Ordering::Relaxed);
                progress.fail(&job.filename, reason, report);
            }
        }
    });
    progress.state.store(State::Done as u8, Ordering::Release);
}

/// Runs `f` on every item with `jobs` threads.
fn parallel<T: Sync>(jobs: usize, items: &[T], f: impl Fn(&T) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                    f(item);
                }
            });
        }
    });
}

/// A reason from a response that is not 200: the status and the first
/// line of roxpi's text.
fn refusal(mut resp: ureq::http::Response<ureq::Body>) -> String {
    let status = resp.status();
    let mut text = String::new();
    let _ = resp
        .body_mut()
        .as_reader()
        .take(300)
        .read_to_string(&mut text);
    let line = text.lines().next().unwrap_or("").trim();
    format!(
        "HTTP {}{}{line}",
        status.as_u16(),
        if line.is_empty() { "" } else { ": " }
    )
}

type Missing = Vec<(String, String)>;

/// Reads `project`'s page from roxpi and picks its files.
fn plan_project(
    agent: &ureq::Agent,
    base: &Url,
    project: &ProjectName,
    picks: &[Pick],
    targets: &[Target],
) -> Result<(Vec<FileJob>, Missing), String> {
    let page_url = base
        .join(&format!("{}/", project.as_str()))
        .map_err(|e| format!("page URL: {e}"))?;
    let mut resp = agent
        .get(page_url.as_str())
        .header("Accept", "application/vnd.pypi.simple.v1+json")
        .call()
        .map_err(|e| format!("page {page_url}: {e}"))?;
    if resp.status() != 200 {
        return Err(format!("page {page_url}: {}", refusal(resp)));
    }
    let body = resp
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_vec()
        .map_err(|e| format!("page {page_url}: {e}"))?;
    let page: Page = serde_json::from_slice(&body)
        .map_err(|e| format!("page {page_url}: not PEP 691 JSON: {e}"))?;
    let (chosen, missing) = pick_files(project, &page.files, picks, targets);
    let jobs = chosen
        .into_iter()
        .map(|f| {
            Ok(FileJob {
                filename: f.filename.clone(),
                url: page_url
                    .join(&f.url)
                    .map_err(|e| format!("{}: URL {:?}: {e}", f.filename, f.url))?,
                sha256: f.hashes.get("sha256").map(|h| h.to_ascii_lowercase()),
                size: f.size,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((jobs, missing))
}

/// The files of a page that `picks` want for `targets` (pure), and the
/// wanted ones the page lacks, each with its reason.
fn pick_files<'p>(
    project: &ProjectName,
    files: &'p [PageFile],
    picks: &[Pick],
    targets: &[Target],
) -> (Vec<&'p PageFile>, Missing) {
    let mut missing = Vec::new();
    let mut chosen: Vec<&PageFile> = Vec::new();
    for pick in picks {
        let candidates: Vec<&PageFile> = match pick {
            Pick::Files(named) => named
                .iter()
                .filter_map(|n| {
                    let found = files.iter().find(|f| f.filename == n.filename);
                    let sha = found.and_then(|f| f.hashes.get("sha256"));
                    match (found, &n.sha256, sha) {
                        (None, _, _) => missing.push((
                            n.filename.clone(),
                            format!("not on the index's page for {}", project.as_str()),
                        )),
                        (Some(_), Some(want), Some(have)) if !want.eq_ignore_ascii_case(have) => {
                            missing.push((
                                n.filename.clone(),
                                format!("the lock's sha256 {want} differs from the index's {have}"),
                            ))
                        }
                        (Some(f), _, _) => return Some(f),
                    }
                    None
                })
                .collect(),
            Pick::Hashes(hashes) => {
                let found: Vec<&PageFile> = files
                    .iter()
                    .filter(|f| {
                        f.hashes
                            .get("sha256")
                            .is_some_and(|h| hashes.iter().any(|w| w.eq_ignore_ascii_case(h)))
                    })
                    .collect();
                if found.is_empty() {
                    missing.push((
                        project.as_str().to_owned(),
                        "no file on the index has one of the locked hashes".into(),
                    ));
                }
                found
            }
            Pick::Versions(spec) => {
                let of = |f: &PageFile| crate::pypi::filename::version_of(project, &f.filename);
                let yanked = |f: &PageFile| {
                    !matches!(
                        f.yanked,
                        serde_json::Value::Null | serde_json::Value::Bool(false)
                    )
                };
                let newest = files
                    .iter()
                    .filter(|f| !yanked(f))
                    .filter_map(of)
                    .filter(|v| spec.contains(v))
                    .max()
                    .or_else(|| {
                        files
                            .iter()
                            .filter_map(of)
                            .filter(|v| spec.contains(v))
                            .max()
                    });
                match newest {
                    Some(v) => files
                        .iter()
                        .filter(|f| of(f).as_ref() == Some(&v))
                        .collect(),
                    None => {
                        missing.push((
                            project.as_str().to_owned(),
                            format!("no version on the index matches {spec}"),
                        ));
                        Vec::new()
                    }
                }
            }
        };
        let keep: BTreeSet<&str> = if targets.is_empty() {
            candidates.iter().map(|f| f.filename.as_str()).collect()
        } else {
            targets
                .iter()
                .flat_map(|t| {
                    // A file whose Requires-Python excludes the target's
                    // (a lock's version split by Python) is not for it.
                    let names: Vec<&str> = candidates
                        .iter()
                        .filter(|f| runs_on(f.requires_python.as_deref(), t))
                        .map(|f| f.filename.as_str())
                        .collect();
                    tags::choose(&names, t)
                })
                .collect()
        };
        chosen.extend(
            candidates
                .into_iter()
                .filter(|f| keep.contains(f.filename.as_str())),
        );
    }
    (chosen, missing)
}

enum Fetched {
    Cached,
    Downloaded(u64),
}

/// Asks roxpi for one file: cached already (HEAD says `X-Cache: HIT`), or
/// fetched now (GET, sha256 checked).
fn fetch_file(agent: &ureq::Agent, job: &FileJob, progress: &Progress) -> Result<Fetched, String> {
    if is_cached(agent, &job.url)? {
        progress
            .bytes_done
            .fetch_add(job.size.unwrap_or(0), Ordering::Relaxed);
        return Ok(Fetched::Cached);
    }
    let mut resp = agent
        .get(job.url.as_str())
        .call()
        .map_err(|e| e.to_string())?;
    if resp.status().is_redirection() {
        // roxpi sent the client to the upstream (ROXPI_DOWNLOAD_TIMEOUT)
        // and keeps downloading: wait until the cache has it.
        let until = Instant::now() + REDIRECT_WAIT;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(500));
            if is_cached(agent, &job.url)? {
                let size = job.size.unwrap_or(0);
                progress.bytes_done.fetch_add(size, Ordering::Relaxed);
                return Ok(Fetched::Downloaded(size));
            }
        }
        return Err("redirected to the upstream, and not cached within 10 min".into());
    }
    if resp.status() != 200 {
        return Err(refusal(resp));
    }
    let mut reader = resp.body_mut().as_reader();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| format!("after {total} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
        progress.bytes_done.fetch_add(n as u64, Ordering::Relaxed);
    }
    let got = hex::encode(hasher.finalize());
    match &job.sha256 {
        Some(want) if *want != got => Err(format!("sha256 {got} differs from the index's {want}")),
        _ => Ok(Fetched::Downloaded(total)),
    }
}

fn is_cached(agent: &ureq::Agent, url: &Url) -> Result<bool, String> {
    let resp = agent.head(url.as_str()).call().map_err(|e| e.to_string())?;
    Ok(resp.status() == 200
        && resp
            .headers()
            .get("x-cache")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"HIT")))
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
            run(&agent_with(tls), &locks, &opts, &progress, &report::Log);
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
