//! Hosted packages: wheels and sdists uploaded to roxpi itself
//! (`twine upload`, `uv publish`), kept as plain files (`store`), listed on
//! the default route's pages beside the proxied indexes, and claimed: a
//! project with hosted files is never taken from an upstream unless the
//! hosted index's `allow-upstream` globs name it (the dependency-confusion
//! guard, on by default).
//!
//! An upload is the legacy form: parsed as it arrives (`upload`), checked
//! (`check`), then committed by fsync and rename (`store`) before the 200.

pub mod check;
mod shared;
pub mod store;
pub mod upload;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use url::Url;

use crate::http::{BodySink, Request, Response};
use crate::policy::ProjectGlob;
use crate::pypi::{CoreMetadata, FileEntry, Filename, Hashes, ProjectName, ProjectPage, Yanked};
use check::{DistKind, Refusal};
use store::{CommitError, Committed, HostedStore, Record};
use upload::{Form, FormParser};

/// The scheme of a hosted file's URL on a page (`hosted:<index>/…`).
pub const URL_SCHEME: &str = "hosted";

/// The longest `Requires-Python` kept (it is on every page of the project).
const MAX_REQUIRES_PYTHON: usize = 1024;

/// The URL path under which a hosted index takes uploads.
pub const PREFIX: &str = "/hosted/";

/// One hosted index (`[[hosted]]`, or `local` from `ROXPI_UPLOAD_TOKEN`).
#[derive(Clone, Debug)]
pub struct HostedIndex {
    pub name: String,
    /// The token `twine`/`uv` send as the password of `__token__`.
    pub upload_token: Option<Token>,
    /// Projects that may also come from the upstream indexes.
    pub allow_upstream: Vec<ProjectGlob>,
    /// Reading its projects needs this token.
    pub read_token: Option<Token>,
}

pub use crate::access::Token;

/// The hosting settings.
#[derive(Clone, Debug)]
pub struct HostingConfig {
    pub dir: PathBuf,
    /// Largest file accepted (`ROXPI_UPLOAD_MAX`).
    pub upload_max: u64,
    /// Most bytes all hosted files may take (`ROXPI_HOSTED_MAX`).
    pub max_bytes: Option<u64>,
    pub indexes: Vec<HostedIndex>,
    /// How long an upload's answer may wait for the bucket (the request
    /// deadline).
    pub publish_wait: std::time::Duration,
    /// How often each node takes what other nodes put in the bucket.
    pub sync_every: std::time::Duration,
}

/// A hosted index as the home page shows it.
#[derive(Debug)]
pub struct IndexSummary {
    pub name: String,
    pub projects: usize,
    pub files: usize,
    pub bytes: u64,
    pub protected: bool,
    pub uploads: bool,
    pub allow_upstream: Vec<String>,
}

/// The hosted indexes each project has files in.
type Hosts = std::collections::BTreeMap<ProjectName, BTreeSet<String>>;

/// Upload counters for `/metrics`.
#[derive(Default)]
pub struct UploadStats {
    /// Hosted files and their bytes (counted at start, then per commit).
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    pub stored: AtomicU64,
    pub already_there: AtomicU64,
    /// Refusals by reason class.
    pub refused: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

/// The hosted indexes and their files.
pub struct Hosted {
    store: HostedStore,
    config: HostingConfig,
    /// Bumped by every commit and yank: pages built with hosted files are
    /// rendered again.
    generation: AtomicU64,
    pub stats: UploadStats,
    /// The bucket, in `s3` and `tiered` storage (`share`).
    sharing: std::sync::OnceLock<shared::Sharing>,
    /// (index, project) of every record in the bucket at its last listing:
    /// claimed even before their files are here.
    remote: Mutex<Hosts>,
    /// (index, project) with a committed file on this node: what is
    /// hosted, known without touching the disk on a request.
    local: std::sync::RwLock<Hosts>,
}

/// Why an upload was not kept, as the client is told.
#[derive(Debug)]
pub enum UploadError {
    Refused(&'static str, Refusal),
    Conflict(String),
    Failed(String),
}

impl UploadError {
    fn response(&self) -> Response {
        match self {
            UploadError::Refused(_, r) => Response::text(400, format!("{r}\n")).reason_phrase(&r.0),
            // twine --skip-existing takes a 409 as "already there".
            UploadError::Conflict(text) => {
                Response::text(409, format!("{text}\n")).reason_phrase(text)
            }
            UploadError::Failed(text) => Response::text(500, format!("{text}\n")),
        }
    }

    fn class(&self) -> &'static str {
        match self {
            UploadError::Refused(class, _) => class,
            UploadError::Conflict(_) => "conflict",
            UploadError::Failed(_) => "failed",
        }
    }
}

fn refused(class: &'static str, reason: impl Into<String>) -> UploadError {
    UploadError::Refused(class, Refusal(reason.into()))
}

impl Hosted {
    /// Opens the store (removing what interrupted uploads left).
    pub fn open(config: HostingConfig) -> std::io::Result<Hosted> {
        let store = HostedStore::open(&config.dir)?;
        let stats = UploadStats::default();
        let mut local = Hosts::new();
        for index in &config.indexes {
            for project in store.projects(&index.name) {
                for r in store.list(&index.name, &project)? {
                    stats.files.fetch_add(1, Ordering::Relaxed);
                    stats.bytes.fetch_add(r.size, Ordering::Relaxed);
                }
                local.entry(project).or_default().insert(index.name.clone());
            }
        }
        Ok(Hosted {
            store,
            config,
            generation: AtomicU64::new(0),
            stats,
            sharing: std::sync::OnceLock::new(),
            remote: Mutex::new(Hosts::new()),
            local: std::sync::RwLock::new(local),
        })
    }

    pub fn config(&self) -> &HostingConfig {
        &self.config
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn index(&self, name: &str) -> Option<&HostedIndex> {
        self.config.indexes.iter().find(|i| i.name == name)
    }

    fn count_refusal(&self, class: &'static str) {
        *crate::lock(&self.stats.refused).entry(class).or_default() += 1;
    }

    /// `POST /hosted/<index>/`: the upload, once its credentials are
    /// checked: a sink for a streamed body, or the answer for a small one.
    pub fn upload(self: &Arc<Self>, req: &Request, index: &str) -> Response {
        let Some(hosted) = self.index(index) else {
            return Response::text(404, format!("no hosted index {index:?}\n"));
        };
        if let Err(r) = check_upload_auth(req, hosted) {
            self.count_refusal("auth");
            return r;
        }
        let refuse = |e: UploadError| {
            self.count_refusal(e.class());
            e.response()
        };
        let boundary = match upload::boundary(req.header("content-type")) {
            Ok(b) => b,
            Err(r) => return refuse(UploadError::Refused("form", r)),
        };
        if let Some(len) = req.streamed_len() {
            // The form's other fields are small: a body this much over the
            // file limit cannot be a fitting upload.
            if len > self.config.upload_max.saturating_add(4 << 20) {
                return refuse(refused(
                    "size",
                    format!(
                        "the upload is over the limit of {} (ROXPI_UPLOAD_MAX)",
                        crate::human::human_bytes(self.config.upload_max)
                    ),
                ));
            }
        }
        let staged = match self.store.stage() {
            Ok(s) => s,
            Err(e) => return refuse(UploadError::Failed(format!("staging failed: {e}"))),
        };
        let mut sink = Box::new(UploadSink {
            hosted: Arc::clone(self),
            index: index.to_owned(),
            staged: staged.0.clone(),
            parser: Some(FormParser::new(boundary, staged, self.config.upload_max)),
        });
        if req.streamed_len().is_some() {
            return Response::receive(sink);
        }
        match sink.write(req.body()) {
            Ok(()) => sink.finish(req),
            Err(r) => r,
        }
    }

    /// Checks a received form and commits its file.
    fn accept(
        &self,
        index: &str,
        form: &Form,
    ) -> Result<(Committed, ProjectName, Record), UploadError> {
        let action = form.field(":action").unwrap_or("");
        if action != "file_upload" {
            return Err(refused(
                "form",
                format!("unsupported :action {action:?}: only file_upload"),
            ));
        }
        let dist = check::parse_filename(&form.filename)
            .map_err(|r| UploadError::Refused("filename", r))?;
        check::check_form(
            &dist,
            form.field("name").unwrap_or(""),
            form.field("version").unwrap_or(""),
        )
        .map_err(|r| UploadError::Refused("form", r))?;
        match form.field("sha256_digest").map(str::trim) {
            Some(d) if !d.is_empty() && !d.eq_ignore_ascii_case(&form.sha256) => {
                return Err(refused(
                    "digest",
                    format!(
                        "sha256_digest {d} does not match the uploaded file ({})",
                        form.sha256
                    ),
                ))
            }
            _ => {}
        }
        if let Some(max) = self.config.max_bytes {
            let used = self.stats.bytes.load(Ordering::Relaxed);
            if used.saturating_add(form.size) > max {
                return Err(refused(
                    "quota",
                    format!(
                        "the hosted files would pass ROXPI_HOSTED_MAX ({} of {} used)",
                        crate::human::human_bytes(used),
                        crate::human::human_bytes(max)
                    ),
                ));
            }
        }
        let metadata = match dist.kind {
            DistKind::Wheel => {
                let file = File::open(&form.staged)
                    .map_err(|e| UploadError::Failed(format!("reading the upload failed: {e}")))?;
                let mut zip = crate::wheel::OnDisk::new(&file)
                    .map_err(|e| UploadError::Failed(format!("reading the upload failed: {e}")))?;
                let m = crate::wheel::read_metadata(&mut zip, &form.filename).map_err(|e| {
                    refused(
                        "metadata",
                        format!("the wheel's METADATA cannot be read: {e}"),
                    )
                })?;
                check::check_metadata(&dist, &m)
                    .map_err(|r| UploadError::Refused("metadata", r))?;
                Some(m)
            }
            DistKind::Sdist => None,
        };
        let requires_python = metadata
            .as_deref()
            .and_then(|m| metadata_header(m, "Requires-Python"))
            .or_else(|| form.field("requires_python").map(str::to_owned))
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        if requires_python
            .as_ref()
            .is_some_and(|r| r.len() > MAX_REQUIRES_PYTHON)
        {
            return Err(refused(
                "metadata",
                format!("Requires-Python is over {MAX_REQUIRES_PYTHON} bytes"),
            ));
        }
        let record = Record {
            filename: form.filename.clone(),
            sha256: form.sha256.clone(),
            size: form.size,
            upload_time: crate::policy::rfc3339(std::time::SystemTime::now()),
            requires_python,
            metadata_sha256: metadata.as_deref().map(|m| {
                use sha2::Digest;
                hex::encode(sha2::Sha256::digest(m))
            }),
            yanked: None,
        };
        let committed = self
            .store
            .commit(
                index,
                &dist.project,
                &form.staged,
                &record,
                metadata.as_deref(),
            )
            .map_err(|e| match e {
                CommitError::Conflict(_) => UploadError::Conflict(e.to_string()),
                other => UploadError::Failed(other.to_string()),
            })?;
        if committed == Committed::Stored {
            self.stats.files.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes.fetch_add(record.size, Ordering::Relaxed);
        }
        self.note_local(index, &dist.project);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok((committed, dist.project, record))
    }

    /// Each hosted index for the home page: name, projects, files, bytes,
    /// whether reading it needs a token, its allow-upstream globs.
    pub fn summary(&self) -> Vec<IndexSummary> {
        self.config
            .indexes
            .iter()
            .map(|i| {
                let projects = self.store.projects(&i.name);
                let records: Vec<Record> = projects
                    .iter()
                    .flat_map(|p| self.store.list(&i.name, p).unwrap_or_default())
                    .collect();
                IndexSummary {
                    name: i.name.clone(),
                    projects: projects.len(),
                    files: records.len(),
                    bytes: records.iter().map(|r| r.size).sum(),
                    protected: i.read_token.is_some(),
                    uploads: i.upload_token.is_some(),
                    allow_upstream: i
                        .allow_upstream
                        .iter()
                        .map(|g| g.as_str().to_owned())
                        .collect(),
                }
            })
            .collect()
    }

    /// Yanks (`Some(reason)`, may be empty) or unyanks a hosted file.
    pub fn set_yanked(
        &self,
        index: &str,
        name: &ProjectName,
        filename: &str,
        yanked: Option<String>,
    ) -> Result<bool, CommitError> {
        if self.index(index).is_none() {
            return Ok(false);
        }
        let done = self.store.set_yanked(index, name, filename, yanked)?;
        if done {
            self.generation.fetch_add(1, Ordering::AcqRel);
            if let Some(record) = self.store.record(index, name, filename) {
                self.republish(index, name, record);
            }
        }
        Ok(done)
    }

    /// The read token guarding `name`: that of a hosted index with files
    /// of it (`None`: open).
    pub fn read_token<'a>(&'a self, name: &ProjectName, among: &'a [String]) -> Option<&'a Token> {
        self.among(among).find_map(|i| {
            let t = i.read_token.as_ref()?;
            self.hosts(&i.name, name).then_some(t)
        })
    }

    /// The hosted indexes named in `among` (a route's list), in config order.
    fn among<'a>(&'a self, among: &'a [String]) -> impl Iterator<Item = &'a HostedIndex> + 'a {
        self.config
            .indexes
            .iter()
            .filter(move |i| among.contains(&i.name))
    }

    /// Every hosted index's name (the default route lists them all).
    pub fn names(&self) -> Vec<String> {
        self.config.indexes.iter().map(|i| i.name.clone()).collect()
    }

    /// Whether this node has files of `name` in `index`.
    fn hosts(&self, index: &str, name: &ProjectName) -> bool {
        crate::read(&self.local)
            .get(name)
            .is_some_and(|indexes| indexes.contains(index))
    }

    /// `name` has (or, `present` false, may no longer have) files in
    /// `index` on this node.
    fn note_local(&self, index: &str, name: &ProjectName) {
        let present = self.store.list(index, name).is_ok_and(|l| !l.is_empty());
        let mut local = crate::write(&self.local);
        if present {
            local
                .entry(name.clone())
                .or_default()
                .insert(index.to_owned());
        } else if let Some(indexes) = local.get_mut(name) {
            indexes.remove(index);
            if indexes.is_empty() {
                local.remove(name);
            }
        }
    }

    /// Whether `name` is hosted and so taken from no upstream.
    pub fn claims(&self, name: &ProjectName, among: &[String]) -> bool {
        let remote = crate::lock(&self.remote);
        self.among(among).any(|i| {
            !i.allow_upstream.iter().any(|g| g.matches(name))
                && (self.hosts(&i.name, name)
                    || remote.get(name).is_some_and(|r| r.contains(&i.name)))
        })
    }

    /// The hosted files of `name` as one index page (`None`: none).
    pub fn page(&self, name: &ProjectName, among: &[String]) -> Option<ProjectPage> {
        let mut files = Vec::new();
        for index in self.among(among) {
            if !self.hosts(&index.name, name) {
                continue;
            }
            let records = match self.store.list(&index.name, name) {
                Ok(r) => r,
                Err(e) => {
                    log::error!("hosted index {}: {name}: {e}", index.name);
                    continue;
                }
            };
            for r in records {
                if let Some(entry) = entry_of(&index.name, name, r) {
                    files.push(entry);
                }
            }
        }
        (!files.is_empty()).then_some(ProjectPage {
            files,
            versions: None,
            project_status: None,
        })
    }

    /// The hosted projects of the indexes without a read token, for the
    /// project list.
    pub fn projects(&self, among: &[String]) -> BTreeSet<ProjectName> {
        self.among(among)
            .filter(|i| i.read_token.is_none())
            .flat_map(|i| {
                crate::read(&self.local)
                    .iter()
                    .filter(|(_, indexes)| indexes.contains(&i.name))
                    .map(|(p, _)| p.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A hosted file (or its `.metadata`): its path and record.
    pub fn file(
        &self,
        name: &ProjectName,
        file: &Filename,
        among: &[String],
    ) -> Option<(PathBuf, Record, bool)> {
        let (filename, metadata) = match file.as_str().strip_suffix(".metadata") {
            Some(f) => (f, true),
            None => (file.as_str(), false),
        };
        self.among(among).find_map(|i| {
            if !self.hosts(&i.name, name) {
                return None;
            }
            // One record read: a file request never lists the project.
            let record = self.store.record(&i.name, name, filename)?;
            let path = self.store.path(&i.name, name, filename)?;
            if metadata {
                record.metadata_sha256.as_ref()?;
                let mut p = path.into_os_string();
                p.push(".metadata");
                return Some((PathBuf::from(p), record, true));
            }
            Some((path, record, false))
        })
    }
}

/// A hosted record as a page entry (its URL names the hosted store; the
/// link clients see is relative, like every file's).
fn entry_of(index: &str, name: &ProjectName, r: Record) -> Option<FileEntry> {
    let filename = Filename::parse(&r.filename)?;
    let url = Url::parse(&format!("{URL_SCHEME}:{index}/{name}/{}", r.filename)).ok()?;
    let mut entry = FileEntry::new(filename, url);
    entry.hashes = Hashes::from([("sha256".to_owned(), r.sha256)]);
    entry.requires_python = r.requires_python;
    entry.size = Some(r.size);
    entry.upload_time = Some(r.upload_time);
    entry.yanked = match r.yanked {
        None => Yanked::No,
        Some(reason) if reason.is_empty() => Yanked::Yes,
        Some(reason) => Yanked::Reason(reason),
    };
    if let Some(m) = r.metadata_sha256 {
        entry.core_metadata = CoreMetadata::Available(Hashes::from([("sha256".to_owned(), m)]));
    }
    Some(entry)
}

/// A header of core metadata (RFC 822 style, before the first blank line).
fn metadata_header(metadata: &[u8], key: &str) -> Option<String> {
    let text = String::from_utf8_lossy(metadata);
    text.lines()
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(key)
                .then(|| v.trim().to_owned())
        })
}

/// 401 without credentials, 403 with wrong ones.
fn check_upload_auth(req: &Request, index: &HostedIndex) -> Result<(), Response> {
    let Some(token) = &index.upload_token else {
        return Err(Response::text(
            403,
            format!(
                "hosted index {:?} takes no uploads (no upload token is set)\n",
                index.name
            ),
        ));
    };
    if token.presented_in(req) {
        return Ok(());
    }
    if !crate::access::has_credentials(req) {
        return Err(Response::text(
            401,
            "an upload token is needed: user __token__, password <ROXPI_UPLOAD_TOKEN>\n",
        )
        .header("WWW-Authenticate", "Basic realm=\"roxpi\""));
    }
    Err(Response::text(403, "invalid upload token\n")
        .reason_phrase("Invalid or non-existent authentication information"))
}

/// An upload being received.
struct UploadSink {
    hosted: Arc<Hosted>,
    index: String,
    staged: PathBuf,
    parser: Option<FormParser>,
}

impl Drop for UploadSink {
    fn drop(&mut self) {
        // Gone once committed (renamed); else nothing may stay in staging.
        let _ = std::fs::remove_file(&self.staged);
    }
}

impl BodySink for UploadSink {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Response> {
        let Some(parser) = &mut self.parser else {
            return Ok(());
        };
        parser.push(bytes).map_err(|r| {
            let class = if r.0.contains("ROXPI_UPLOAD_MAX") {
                "size"
            } else {
                "form"
            };
            self.hosted.count_refusal(class);
            self.parser = None;
            Response::text(400, format!("{r}\n")).reason_phrase(&r.0)
        })
    }

    fn finish(mut self: Box<Self>, _request: &Request) -> Response {
        let Some(parser) = self.parser.take() else {
            return Response::text(400, "the upload was refused\n");
        };
        let result = parser
            .finish()
            .map_err(|r| UploadError::Refused("form", r))
            .and_then(|form| self.hosted.accept(&self.index, &form));
        match result {
            Ok((committed, project, record)) => {
                let counter = match committed {
                    Committed::Stored => &self.hosted.stats.stored,
                    Committed::AlreadyThere => &self.hosted.stats.already_there,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                log::info!(
                    "hosted {}: {project}/{} ({committed:?})",
                    self.index,
                    record.filename
                );
                if committed == Committed::AlreadyThere {
                    return Response::text(200, "OK\n");
                }
                let deadline = std::time::Instant::now() + self.hosted.config.publish_wait;
                self.hosted
                    .published(&self.index, &project, record, deadline)
            }
            Err(e) => {
                self.hosted.count_refusal(e.class());
                log::info!("hosted {}: upload refused: {e:?}", self.index);
                e.response()
            }
        }
    }
}
