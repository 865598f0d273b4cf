//! Project pages and the project list: negotiation (PEP 691 format and
//! content coding), the answer of the indexes (`IndexCache::resolve`), the
//! merged page rendered and compressed once per cache generation, and the
//! caching headers (`ETag`, `Cache-Control`, `X-Cache`, `Age`, 304).

use std::io::Write;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::error::{self, Failure};
use super::{renders, App, IndexGroup};
use crate::config::ClientRefresh;
use crate::http::conditional::{etag_matches, not_modified};
use crate::http::{Later, Request, Response, Waker};
use crate::index_cache::{Doc, Freshness, Key, Peek, Rendered, Resolved, Snapshot, Times};
use crate::origin::IndexId;
use crate::page_budget::PageBuf;
use crate::policy::{Policy, Verdict};
use crate::pypi::{
    negotiate_coding, negotiate_format, render_list, write_project, Coding, CoreMetadata,
    PageFormat, PageView, ProjectName, ProjectPage, Yanked,
};

/// The most a client may cache an index page (PyPI's value).
const MAX_PAGE_AGE: u64 = 600;

impl App {
    /// A project page or the project list.
    pub(super) fn page(self: &Arc<Self>, req: &Request, up: Arc<IndexGroup>, key: Key) -> Response {
        let format_param = query_param(req.query(), "format");
        let Some(format) = negotiate_format(format_param.as_deref(), req.header("accept")) else {
            return Response::text(406, "no acceptable representation: this index serves text/html, application/vnd.pypi.simple.v1+html and application/vnd.pypi.simple.v1+json\n")
                .header("Vary", "Accept, Accept-Encoding");
        };
        let Some(coding) = negotiate_coding(req.header("accept-encoding")) else {
            return Response::text(406, "no acceptable content coding (identity refused)\n")
                .header("Vary", "Accept, Accept-Encoding");
        };
        if let Key::Project(name) = &key {
            if let Some(refused) = self.denied_project(&up, name) {
                return refused;
            }
            if let Some(refused) = self.hosted_read_refused(req, &up, name) {
                return refused;
            }
            if let Some(hosted) = self.claimed_page(req, &up, name) {
                return hosted;
            }
        }
        let force = wants_refresh(req, self.settings.client_refresh);
        if !force {
            if let Some(r) = self.warm_view(req, &up, &key, format, coding) {
                return r;
            }
        }
        let resolution = up
            .index_cache
            .start_resolution(&key, up.strategy, force, false);
        let page_up = Arc::clone(&up);
        self.after_resolution(req, up, resolution, move |app, req, resolved| {
            app.render_page(req, &page_up, key, format, coding, resolved)
        })
    }

    /// The page from the indexes' answer: rendered and compressed once per
    /// generation (a big page on the render pool, the request parked), with
    /// its caching headers.
    fn render_page(
        self: &Arc<Self>,
        req: &Request,
        up: &Arc<IndexGroup>,
        key: Key,
        format: PageFormat,
        coding: Coding,
        resolved: Resolved,
    ) -> Response {
        let found = match resolved {
            Resolved::Found(found) => found,
            Resolved::NotFound => {
                return Response::text(404, "not found in any index\n")
                    .header("Cache-Control", "max-age=60")
                    .log_tag("MISS")
            }
            Resolved::Failed(e) => return error::respond(&Failure::Page(&e)),
        };
        let wall = SystemTime::now();
        let policy_version = self.policy_version();
        // What synthesis advertises, and the policy, change the rendered
        // page too.
        let sig: Vec<u64> = found
            .iter()
            .map(|(_, s, _)| s.generation)
            .chain([
                self.files.metadata_generation(),
                policy_version,
                self.hosted_generation(up),
            ])
            .collect();
        let cached = up
            .index_cache
            .view(&key, format, coding, &sig)
            .filter(|v| v.valid_until.is_none_or(|t| wall < t));
        if let Some(view) = cached {
            return page_response(req, &view, &times_of(&found), format, coding);
        }
        let inline = files_in(&found) <= renders::INLINE_FILES && !matches!(key, Key::List);
        if inline {
            let view = self.build_view(up, &key, format, coding, &found, sig);
            return page_response(req, &view, &times_of(&found), format, coding);
        }
        // Big: rendered on the pool while the request waits parked.
        let job = {
            let (app, up, key, found, sig) = (
                Arc::clone(self),
                Arc::clone(up),
                key.clone(),
                found.clone(),
                sig.clone(),
            );
            move || app.build_view(&up, &key, format, coding, &found, sig)
        };
        let flight = self
            .renders
            .render((up.prefix.clone(), key, format, coding, sig), job);
        let watched = Arc::clone(&flight);
        let deadline = up.index_cache.request_deadline();
        let answer = move |req: &Request| match flight.result() {
            Some(Some(view)) => page_response(req, &view, &times_of(&found), format, coding),
            Some(None) => Response::text(500, "the page could not be rendered\n"),
            None => Response::text(503, "the page is still being rendered; retry shortly\n")
                .header("Retry-After", "1"),
        };
        if watched.result().is_some() {
            return answer(req);
        }
        Response::later(Later {
            deadline,
            subscribe: Box::new(move |waker: Waker| {
                watched.on_done(Box::new(move || waker.wake()));
            }),
            resume: Box::new(answer),
        })
    }

    /// The warm path: every index's answer is fresh and the variant asked
    /// for is kept, so the page is answered from it without taking the
    /// parsed pages (a page too large to keep in memory is not loaded from
    /// disk for it). `None`: go the whole way.
    fn warm_view(
        &self,
        req: &Request,
        up: &IndexGroup,
        key: &Key,
        format: PageFormat,
        coding: Coding,
    ) -> Option<Response> {
        let mut found = Vec::new();
        for id in up.index_cache.indexes_for(key) {
            match up.index_cache.peek(id, key)? {
                Peek::Missing => {}
                Peek::Found { generation, times } => {
                    found.push((generation, times));
                    if up.strategy == crate::pypi::Strategy::FirstIndex {
                        break;
                    }
                }
            }
        }
        if found.is_empty() {
            return None;
        }
        let policy_version = self.policy_version();
        let sig: Vec<u64> = found
            .iter()
            .map(|(g, _)| *g)
            .chain([
                self.files.metadata_generation(),
                policy_version,
                self.hosted_generation(up),
            ])
            .collect();
        let wall = SystemTime::now();
        let view = up
            .index_cache
            .view(key, format, coding, &sig)
            .filter(|v| v.valid_until.is_none_or(|t| wall < t))?;
        up.index_cache.count_hits(found.len());
        let times: Vec<Times> = found.into_iter().map(|(_, t)| t).collect();
        Some(page_response(req, &view, &times, format, coding))
    }

    // Long: one merge of the indexes' files with the policy, in order.
    /// Renders (merge, policy, advertised metadata), compresses and keeps
    /// one variant of a page.
    fn build_view(
        &self,
        up: &IndexGroup,
        key: &Key,
        format: PageFormat,
        coding: Coding,
        found: &[Found],
        sig: Vec<u64>,
    ) -> Arc<Rendered> {
        let wall = SystemTime::now();
        let (policy, policy_version) = self.policy_for(up);
        let mut valid_until = None;
        let files = files_in(found);
        // Buffered: the serialisers write a token at a time, and each write
        // into a compressor costs it a pass over its 32 KiB output buffer
        // (measured: 27 % of a soak's CPU in memset before this buffer).
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, Encoder::new(coding, files));
        let written = match key {
            Key::Project(name) => {
                // Hosted files of a project the upstream may also serve
                // (`allow-upstream`) come first.
                let hosted = self.hosted_page(up, name);
                let pages: Vec<&ProjectPage> = hosted
                    .iter()
                    .chain(found.iter().filter_map(|(_, s, _)| match &*s.doc {
                        Doc::Page(p) => Some(p),
                        _ => None,
                    }))
                    .collect();
                let strategy = if hosted.is_some() {
                    crate::pypi::Strategy::Merge
                } else {
                    up.strategy
                };
                let mut merged = crate::pypi::merge(pages, strategy);
                // A page version for the audit: its pages and the policy,
                // not what synthesis advertises (that changes the bytes,
                // not a decision) nor the format or coding.
                let page_id = {
                    use std::hash::{Hash, Hasher};
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    let generations: Vec<u64> =
                        found.iter().map(|(_, s, _)| s.generation).collect();
                    (
                        up.prefix.as_deref(),
                        name.as_str(),
                        generations,
                        policy_version,
                    )
                        .hash(&mut h);
                    h.finish()
                };
                let audit = self.audit.first_render(page_id);
                if audit {
                    if let Some(note) = up.index_cache.guard_note(name) {
                        self.audit
                            .record("confusion", "withheld", name, None, &note);
                    }
                }
                valid_until = self.apply_policy(name, &mut merged, &policy, wall, audit);
                for listed in &mut merged.files {
                    if let Some(hashes) = self.files.advertise_metadata(listed.entry) {
                        listed.core_metadata = Some(CoreMetadata::Available(hashes));
                    }
                }
                write_project(name, &merged, format, &mut out)
            }
            Key::List => {
                let names = crate::pypi::name::sorted_unique(
                    found
                        .iter()
                        .flat_map(|(_, s, _)| match &*s.doc {
                            Doc::List(l) => l.clone(),
                            _ => Vec::new(),
                        })
                        .chain(self.hosted_projects(up)),
                );
                out.write_all(&render_list(&names, format))
            }
        };
        // Writing into memory fails only on a template bug or a page past
        // twice `MAX_PAGE` rendered: logged, and served as far as it got.
        let body = written
            .and_then(|()| out.into_inner().map_err(|e| e.into_error()))
            .and_then(Encoder::finish)
            .unwrap_or_else(|e| {
                log::error!("rendering {key:?} failed: {e}");
                Bytes::new()
            });
        let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&body))[..32]);
        let v = Arc::new(Rendered {
            sig,
            body,
            etag,
            valid_until,
        });
        up.index_cache
            .store_view(key, format, coding, Arc::clone(&v));
        v
    }
}

/// One index's answer for a page.
type Found = (IndexId, Arc<Snapshot>, Freshness);

/// Files on the indexes' pages (the size of the page to render).
fn files_in(found: &[Found]) -> usize {
    found
        .iter()
        .map(|(_, s, _)| match &*s.doc {
            Doc::Page(p) => p.files.len(),
            _ => 0,
        })
        .sum()
}

/// The times of the indexes' answers a page was built from.
fn times_of(found: &[Found]) -> Vec<Times> {
    let now = Instant::now();
    found
        .iter()
        .map(|(_, s, f)| Times {
            remaining: s.remaining(now),
            age: s.age(now),
            freshness: *f,
        })
        .collect()
}

/// A rendered page with its caching headers (or a 304).
pub(super) fn page_response(
    req: &Request,
    view: &Rendered,
    found: &[Times],
    format: PageFormat,
    coding: Coding,
) -> Response {
    let wall = SystemTime::now();
    let stale = found.iter().any(|t| t.freshness == Freshness::Stale);
    let missed = found.iter().any(|t| t.freshness == Freshness::Miss);
    // A page the policy changes with time alone (a held-back file
    // matures) is cached by clients no longer than until then.
    let matures = view.valid_until.map_or(u64::MAX, |t| {
        t.duration_since(wall).unwrap_or_default().as_secs()
    });
    let max_age = if stale {
        0
    } else {
        found
            .iter()
            .map(|t| t.remaining.as_secs())
            .min()
            .unwrap_or(0)
            .min(MAX_PAGE_AGE)
            .min(matures)
    };
    let tag = if stale {
        "STALE"
    } else if missed {
        "MISS"
    } else {
        "HIT"
    };
    let mut r = Response::new(200)
        .header("Content-Type", format.content_type())
        .header("Vary", "Accept, Accept-Encoding")
        .header("ETag", view.etag.clone())
        .header("Cache-Control", format!("max-age={max_age}"))
        .header("X-Cache", tag)
        .log_tag(tag);
    if stale {
        let age = found.iter().map(|t| t.age.as_secs()).max().unwrap_or(0);
        r = r.header("Age", age.to_string());
    }
    if let Some(enc) = coding.header_value() {
        r = r.header("Content-Encoding", enc);
    }
    if etag_matches(req.header("if-none-match"), &view.etag) {
        return not_modified(r);
    }
    r.body(view.body.clone())
}

impl App {
    /// A 403 for a project the policy denies whole (audited).
    pub(super) fn denied_project(&self, up: &IndexGroup, name: &ProjectName) -> Option<Response> {
        let reason = self.policy_for(up).0.project_denied(name)?;
        self.audit.record("deny", "refused", name, None, &reason);
        Some(
            Response::text(403, format!("{name}: {reason}\n"))
                .header("Cache-Control", "no-store")
                .log_tag("POLICY"),
        )
    }

    /// The policy over a merged project page: a quarantined project (PEP
    /// 792) lists no file; files in their cooldown and denied files leave
    /// the listing; yanks are marked (PEP 592). Every change is audited.
    /// Returns when the page next changes by time alone.
    fn apply_policy(
        &self,
        name: &ProjectName,
        page: &mut PageView<'_>,
        policy: &Policy,
        now: SystemTime,
        audit: bool,
    ) -> Option<SystemTime> {
        let record = |rule, action, file: Option<&str>, reason: &str| {
            if audit {
                self.audit.record(rule, action, name, file, reason);
            }
        };
        let quarantined = page
            .project_status
            .is_some_and(crate::pypi::model::ProjectStatus::is_quarantined);
        if quarantined {
            if !page.files.is_empty() {
                record(
                    "quarantine",
                    "withheld",
                    None,
                    "the upstream quarantined this project (PEP 792)",
                );
            }
            page.files.clear();
            return None;
        }
        if policy.is_empty() {
            return None;
        }
        let mut next: Option<SystemTime> = None;
        page.files.retain_mut(
            // Hosted files (merged under allow-upstream) are one's own
            // builds: judged as if their cooldown had passed.
            |listed| match self.verdict(policy, name, listed.entry, hosted_now(listed.entry, now)) {
                Verdict::Serve => true,
                Verdict::Yank(reason) => {
                    if matches!(listed.yanked(), Yanked::No) {
                        let file = listed.entry.filename.as_str();
                        record("yank", "yanked", Some(file), &reason);
                        listed.yanked = Some(Yanked::Reason(reason));
                    }
                    true
                }
                Verdict::Young { until, .. } => {
                    if let Some(t) = until {
                        next = Some(next.map_or(t, |n| n.min(t)));
                    }
                    let reason = match until {
                        Some(t) => format!("release cooldown until {}", crate::policy::rfc3339(t)),
                        None => "no upload time (untimed = deny)".to_owned(),
                    };
                    let file = listed.entry.filename.as_str();
                    record("cooldown", "hidden", Some(file), &reason);
                    false
                }
                Verdict::Deny(reason) => {
                    let file = listed.entry.filename.as_str();
                    record("deny", "removed", Some(file), &reason);
                    false
                }
            },
        );
        next
    }
}

/// The time a file is judged at: `now`, or for a hosted file the latest
/// time there is (the release cooldown never holds one's own builds back).
fn hosted_now(entry: &crate::pypi::FileEntry, now: SystemTime) -> SystemTime {
    if entry.url.scheme() == crate::hosted::URL_SCHEME {
        crate::policy::latest()
    } else {
        now
    }
}

/// Whether the client's request forces a page refresh under `policy`.
/// `max-age=0` counts only under `any`: pip 24.0–26.0 send it on every page
/// request, so honouring it would make every pip run depend on the
/// upstream (proxpi and nginx ignore it too).
fn wants_refresh(req: &Request, policy: ClientRefresh) -> bool {
    if policy == ClientRefresh::Off {
        return false;
    }
    req.header_values("cache-control")
        .chain(req.header_values("pragma"))
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .any(|d| d == "no-cache" || (policy == ClientRefresh::Any && d == "max-age=0"))
}

pub(super) fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| {
            // A literal `+` stays a plus: media types hold no spaces.
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Pages of up to this many files (about a megabyte rendered) are
/// compressed at level 6, larger ones at level 1. Measured on the fixture
/// pages (`examples/gzip_levels.rs`): boto3's JSON (4,318 files, 1 MiB)
/// 260 KiB in 27 ms at 6, 279 KiB in 4.5 ms at 1; pydantic-core's (15,057
/// files, 4.6 MiB) 918 KiB in 82 ms at 6, 1006 KiB in 16 ms at 1. Past a
/// megabyte, level 6 costs five times the CPU for 7–10 % fewer bytes;
/// below it, both take a few milliseconds.
const GZIP_BEST_UP_TO_FILES: usize = 3000;

/// Where a page is rendered to: memory, or a compressor writing to memory
/// (the uncompressed page never exists whole). Deterministic: gzip mtime 0,
/// no file name.
enum Encoder {
    Identity(PageBuf),
    Gzip(flate2::write::GzEncoder<PageBuf>),
    Deflate(flate2::write::ZlibEncoder<PageBuf>),
}

impl Encoder {
    fn new(coding: Coding, files: usize) -> Encoder {
        let level = flate2::Compression::new(if files <= GZIP_BEST_UP_TO_FILES { 6 } else { 1 });
        // A big page's bytes go to an anonymous mapping (`PageBuf`), given
        // back to the system when the page goes.
        let out = PageBuf::default();
        match coding {
            Coding::Identity => Encoder::Identity(out),
            Coding::Gzip => Encoder::Gzip(flate2::GzBuilder::new().mtime(0).write(out, level)),
            Coding::Deflate => Encoder::Deflate(flate2::write::ZlibEncoder::new(out, level)),
        }
    }

    fn finish(self) -> std::io::Result<Bytes> {
        match self {
            Encoder::Identity(v) => v,
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Deflate(e) => e.finish()?,
        }
        .into_compact_bytes()
    }
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Encoder::Identity(v) => v.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Deflate(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A small page rendered outside the index cache (a hosted project's),
/// compressed as `coding` asks, with its ETag.
pub(super) fn rendered(body: Vec<u8>, coding: Coding) -> Rendered {
    let body = Bytes::from(compress(body, coding));
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&body))[..32]);
    Rendered {
        sig: Vec::new(),
        body,
        etag,
        valid_until: None,
    }
}

/// A body compressed as `coding` asks (small pages).
fn compress(body: Vec<u8>, coding: Coding) -> Vec<u8> {
    let mut e = Encoder::new(coding, 0);
    let _ = e.write_all(&body);
    e.finish().map(|b| b.to_vec()).unwrap_or_default()
}

#[cfg(test)]
mod tests;
