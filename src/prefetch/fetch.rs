//! The prefetch engine: read each project's page from roxpi, pick its
//! files (`pick`), then ask roxpi for each, in parallel; progress and
//! failures go to `Progress` and the `Report`.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use url::Url;

use super::pick::{pick_files, Missing, PageFile};
use super::{Lock, Options, Pick, Progress, Report, State, Target};
use crate::pypi::ProjectName;

/// How long a redirected file (roxpi's `ROXPI_DOWNLOAD_TIMEOUT`) may take
/// to land in the cache.
const REDIRECT_WAIT: Duration = Duration::from_secs(600);

/// One file to ask roxpi for.
#[derive(Clone, Debug)]
struct FileJob {
    filename: String,
    url: Url,
    sha256: Option<String>,
    size: Option<u64>,
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
pub(super) fn agent_with(to_itself: bool) -> ureq::Agent {
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
    progress.bytes_total.store(
        // Sizes are the index's claims: summed without overflow.
        jobs.iter()
            .filter_map(|j| j.size)
            .fold(0u64, u64::saturating_add),
        Ordering::Relaxed,
    );
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
