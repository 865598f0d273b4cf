// Size: one protocol (S3 requests: signing, GET, PUT, multipart, errors, the startup check).
//! The S3 bucket: request signing with rusty-s3 (sans-IO, presigned URLs),
//! sent with the shared ureq agent. No async runtime.
//!
//! - Reads: a GET is the lookup (404 = miss); a ranged GET when asked.
//! - Writes: one PUT with an explicit `content-length` (S3 refuses chunked
//!   PUTs); from `MULTIPART_THRESHOLD` on, a multipart upload with parts of
//!   max(8 MiB, length / 10 000), so files past 5 GiB work. A failed
//!   multipart upload is aborted, so no parts stay behind.
//! - Keys (`object_for_file`, `object_for_page`): the file layout is
//!   `<prefix><sha256[0..2]>/<sha256>/<filename>` (the URL-derived key when
//!   the index gives no sha256); pages live under `<prefix>pages/`. The
//!   prefix is normalised to end in exactly one `/`.
//!
//! Every call blocks on the network: only download, fetch and upload
//! threads call it, never a request worker.

use std::fs::File;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusty_s3::actions::{CompleteMultipartUploadResponse, CreateMultipartUpload, S3Action};
use rusty_s3::{Credentials, UrlStyle};
use url::Url;

use super::{CacheKey, FilePart};

/// From this length on, uploads are multipart.
pub const MULTIPART_THRESHOLD: u64 = 64 << 20;
/// The smallest part (S3's minimum is 5 MiB).
const MIN_PART: u64 = 8 << 20;
/// S3's limit on parts per upload.
const MAX_PARTS: u64 = 10_000;
/// How long a signed URL is valid (it only has to be valid when sent).
const SIGN_FOR: Duration = Duration::from_secs(3600);

/// Where the bucket is and how to sign for it (from the settings).
#[derive(Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// Normalised: empty, or ending in exactly one `/`.
    pub prefix: String,
    pub endpoint: Url,
    pub region: String,
    pub path_style: bool,
    pub key_id: String,
    pub secret: String,
    pub token: Option<String>,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret or the token.
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint.as_str())
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// `roxpi`, `roxpi/` and `/roxpi//` all give `roxpi/`; empty stays empty.
pub fn normalize_prefix(p: &str) -> String {
    let t = p.trim().trim_matches('/');
    if t.is_empty() {
        String::new()
    } else {
        format!("{t}/")
    }
}

/// A file name as it may appear in an object key: the URL's last path
/// segment, decoded, with anything outside a safe set replaced by `_`.
pub fn object_filename(url: &Url) -> String {
    let raw = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or("");
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    let clean: String = decoded
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' | '+' | '~' | '!' => c,
            _ => '_',
        })
        .collect();
    match clean.trim_matches('.') {
        "" => "file".to_owned(),
        _ => clean,
    }
}

/// The object key of a file: `<prefix><k0k1>/<key>/<filename>`.
pub fn object_for_file(prefix: &str, key: &CacheKey, filename: &str) -> String {
    let k = key.as_str();
    format!("{prefix}{}/{k}/{filename}", &k[..2])
}

/// The object key of a saved page: `<prefix>pages/<index id>/<project>`.
pub fn object_for_page(prefix: &str, index_id: &str, project: &str) -> String {
    format!("{prefix}pages/{index_id}/{project}")
}

/// Part size for a multipart upload of `len` bytes.
pub fn part_size(len: u64) -> u64 {
    MIN_PART.max(len.div_ceil(MAX_PARTS))
}

/// Why an S3 request failed.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// No answer (refused, timed out, reset).
    #[error("S3 unreachable during {op}: {detail}")]
    Unreachable { op: &'static str, detail: String },
    /// An answer other than the expected one.
    #[error("S3 answered {status} to {op}{}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Status {
        op: &'static str,
        status: u16,
        code: Option<String>,
    },
    /// Reading the local file being uploaded failed.
    #[error("cannot read the file to upload: {0}")]
    Local(io::Error),
    #[error("S3 {op}: {detail}")]
    Protocol { op: &'static str, detail: String },
}

impl S3Error {
    /// The bucket cannot be used with these settings (no retry helps).
    pub fn is_refused(&self) -> bool {
        matches!(
            self,
            S3Error::Status {
                status: 301 | 400 | 403 | 404,
                ..
            }
        )
    }
}

/// An object being read.
pub struct Object {
    pub len: u64,
    pub etag: Option<String>,
    pub body: Box<dyn Read + Send>,
}

/// Counters for `/metrics`.
#[derive(Default, Debug)]
pub struct S3Stats {
    pub gets: AtomicU64,
    pub get_misses: AtomicU64,
    pub puts: AtomicU64,
    pub multipart_uploads: AtomicU64,
    pub aborted_uploads: AtomicU64,
    pub errors: AtomicU64,
    /// Reads not tried: S3 did not answer recently.
    pub skipped: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
}

pub struct Bucket {
    agent: ureq::Agent,
    bucket: rusty_s3::Bucket,
    creds: Credentials,
    settings: S3Settings,
    pub stats: S3Stats,
    /// Reads skip S3 until then: it did not answer (a blackholed endpoint
    /// would otherwise add the connect timeout to every miss). Any answer
    /// from S3 ends the pause.
    skip_until: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How long reads skip an S3 that did not answer.
const SKIP_FOR: Duration = Duration::from_secs(10);

/// `<Code>…</Code>` of an S3 error body, for the log line.
fn error_code(body: &str) -> Option<String> {
    let start = body.find("<Code>")? + "<Code>".len();
    let len = body[start..].find("</Code>")?;
    Some(body[start..start + len].chars().take(64).collect())
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl Bucket {
    pub fn new(settings: S3Settings, agent: ureq::Agent) -> Result<Bucket, String> {
        let style = if settings.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = rusty_s3::Bucket::new(
            settings.endpoint.clone(),
            style,
            settings.bucket.clone(),
            settings.region.clone(),
        )
        .map_err(|e| {
            format!(
                "cannot address bucket {:?} at {} (ROXPI_S3_BUCKET, ROXPI_S3_ENDPOINT, ROXPI_S3_PATH_STYLE): {e}",
                settings.bucket, settings.endpoint
            )
        })?;
        let creds = match &settings.token {
            Some(t) => Credentials::new_with_token(&settings.key_id, &settings.secret, t),
            None => Credentials::new(&settings.key_id, &settings.secret),
        };
        Ok(Bucket {
            agent,
            bucket,
            creds,
            settings,
            stats: S3Stats::default(),
            skip_until: std::sync::Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    /// The key prefix (normalised).
    pub fn prefix(&self) -> &str {
        &self.settings.prefix
    }

    /// Where this bucket is, for log lines (no credentials).
    pub fn describe(&self) -> String {
        format!(
            "s3://{}/{} at {}",
            self.settings.bucket, self.settings.prefix, self.settings.endpoint
        )
    }

    fn skip(&self) -> std::sync::MutexGuard<'_, Option<std::time::Instant>> {
        crate::lock(&self.skip_until)
    }

    /// S3 answered (whatever the status): reads use it again.
    fn answered<T>(&self, r: T) -> T {
        *self.skip() = None;
        r
    }

    /// Whether reads skip S3 now (it did not answer recently).
    pub fn skipping(&self) -> bool {
        self.skip()
            .is_some_and(|until| std::time::Instant::now() < until)
    }

    fn failed(&self, op: &'static str, e: ureq::Error) -> S3Error {
        *self.skip() = Some(std::time::Instant::now() + SKIP_FOR);
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        S3Error::Unreachable {
            op,
            detail: e.to_string(),
        }
    }

    /// An unexpected status, with the S3 error code from the body.
    fn status(&self, op: &'static str, resp: ureq::http::Response<ureq::Body>) -> S3Error {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        S3Error::Status {
            op,
            status,
            code: error_code(&body),
        }
    }

    /// Checks that the bucket exists and the credentials are accepted.
    pub fn check(&self) -> Result<(), S3Error> {
        let url = self.bucket.head_bucket(Some(&self.creds)).sign(SIGN_FOR);
        let resp = self
            .agent
            .head(url.as_str())
            .call()
            .map_err(|e| self.failed("HeadBucket", e))?;
        let resp = self.answered(resp);
        match resp.status().as_u16() {
            200 => Ok(()),
            _ => Err(self.status("HeadBucket", resp)),
        }
    }

    /// The object, or `None` when the bucket does not have it. `range` is
    /// an inclusive byte range.
    pub fn get(&self, key: &str, range: Option<(u64, u64)>) -> Result<Option<Object>, S3Error> {
        if self.skipping() {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            return Err(S3Error::Unreachable {
                op: "GetObject",
                detail: format!("not tried: S3 did not answer within the last {SKIP_FOR:?}"),
            });
        }
        self.stats.gets.fetch_add(1, Ordering::Relaxed);
        let url = self
            .bucket
            .get_object(Some(&self.creds), key)
            .sign(SIGN_FOR);
        let mut req = self
            .agent
            .get(url.as_str())
            .header("accept-encoding", "identity");
        if let Some((first, last)) = range {
            req = req.header("range", format!("bytes={first}-{last}"));
        }
        let resp = self.answered(req.call().map_err(|e| self.failed("GetObject", e))?);
        match resp.status().as_u16() {
            200 | 206 => {}
            404 => {
                self.stats.get_misses.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
            _ => return Err(self.status("GetObject", resp)),
        }
        let Some(len) = header(&resp, "content-length").and_then(|v| v.trim().parse().ok()) else {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            return Err(S3Error::Protocol {
                op: "GetObject",
                detail: "no Content-Length".into(),
            });
        };
        let etag = header(&resp, "etag");
        Ok(Some(Object {
            len,
            etag,
            body: Box::new(resp.into_body().into_reader()),
        }))
    }

    /// A small object read whole (at most `limit` bytes), or `None`.
    pub fn get_bytes(&self, key: &str, limit: u64) -> Result<Option<Vec<u8>>, S3Error> {
        let Some(obj) = self.get(key, None)? else {
            return Ok(None);
        };
        if obj.len > limit {
            return Err(S3Error::Protocol {
                op: "GetObject",
                detail: format!("object of {} bytes is larger than {limit}", obj.len),
            });
        }
        let mut buf = Vec::with_capacity(usize::try_from(obj.len).unwrap_or(0));
        obj.body
            .take(obj.len)
            .read_to_end(&mut buf)
            .map_err(|e| S3Error::Unreachable {
                op: "GetObject",
                detail: e.to_string(),
            })?;
        self.stats
            .bytes_read
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(Some(buf))
    }

    /// Stores `len` bytes of `file` under `key`: one PUT, or a multipart
    /// upload from `MULTIPART_THRESHOLD` on. Returns the object's ETag.
    pub fn put_file(&self, key: &str, file: &File, len: u64) -> Result<Option<String>, S3Error> {
        if len >= MULTIPART_THRESHOLD {
            return self.put_multipart(key, file, len);
        }
        let url = self
            .bucket
            .put_object(Some(&self.creds), key)
            .sign(SIGN_FOR);
        let mut body = FilePart {
            file,
            at: 0,
            end: len,
        };
        let etag = self.send_put("PutObject", &url, &mut body, len)?;
        self.stats.puts.fetch_add(1, Ordering::Relaxed);
        Ok(etag)
    }

    /// Stores `bytes` under `key` (one PUT).
    pub fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<(), S3Error> {
        let url = self
            .bucket
            .put_object(Some(&self.creds), key)
            .sign(SIGN_FOR);
        let mut body = bytes;
        self.send_put("PutObject", &url, &mut body, bytes.len() as u64)?;
        self.stats.puts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The keys (and sizes) under `prefix` (the bucket's own prefix is
    /// not added), page by page, at most `max` keys.
    pub fn list(&self, prefix: &str, max: usize) -> Result<Vec<(String, u64)>, S3Error> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = self.bucket.list_objects_v2(Some(&self.creds));
            action.with_prefix(prefix);
            if let Some(t) = &token {
                action.with_continuation_token(t.clone());
            }
            let url = action.sign(SIGN_FOR);
            let resp = self
                .agent
                .get(url.as_str())
                .call()
                .map_err(|e| self.failed("ListObjectsV2", e))?;
            let resp = self.answered(resp);
            if resp.status().as_u16() != 200 {
                return Err(self.status("ListObjectsV2", resp));
            }
            let body = resp
                .into_body()
                .with_config()
                .limit(16 << 20)
                .read_to_string()
                .map_err(|e| S3Error::Unreachable {
                    op: "ListObjectsV2",
                    detail: e.to_string(),
                })?;
            let page = rusty_s3::actions::ListObjectsV2::parse_response(&body).map_err(|e| {
                S3Error::Protocol {
                    op: "ListObjectsV2",
                    detail: e.to_string(),
                }
            })?;
            keys.extend(
                page.contents
                    .into_iter()
                    .map(|c| (c.key, c.size.unwrap_or(0))),
            );
            token = page.next_continuation_token;
            if token.is_none() || keys.len() >= max {
                keys.truncate(max);
                return Ok(keys);
            }
        }
    }

    pub fn delete(&self, key: &str) -> Result<(), S3Error> {
        let url = self
            .bucket
            .delete_object(Some(&self.creds), key)
            .sign(SIGN_FOR);
        let resp = self
            .agent
            .delete(url.as_str())
            .call()
            .map_err(|e| self.failed("DeleteObject", e))?;
        let resp = self.answered(resp);
        match resp.status().as_u16() {
            200 | 204 | 404 => Ok(()),
            _ => Err(self.status("DeleteObject", resp)),
        }
    }

    /// One PUT of `len` bytes from `body` with an explicit length; returns
    /// the ETag.
    fn send_put(
        &self,
        op: &'static str,
        url: &Url,
        body: &mut dyn Read,
        len: u64,
    ) -> Result<Option<String>, S3Error> {
        let resp = self
            .agent
            .put(url.as_str())
            .header("content-length", len.to_string())
            .send(ureq::SendBody::from_reader(body))
            .map_err(|e| match e {
                ureq::Error::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
                    S3Error::Local(io)
                }
                e => self.failed(op, e),
            })?;
        let resp = self.answered(resp);
        match resp.status().as_u16() {
            200 => {
                self.stats.bytes_written.fetch_add(len, Ordering::Relaxed);
                Ok(header(&resp, "etag"))
            }
            _ => Err(self.status(op, resp)),
        }
    }

    /// A multipart upload; aborted on any failure.
    fn put_multipart(&self, key: &str, file: &File, len: u64) -> Result<Option<String>, S3Error> {
        let url = self
            .bucket
            .create_multipart_upload(Some(&self.creds), key)
            .sign(SIGN_FOR);
        let resp = self
            .agent
            .post(url.as_str())
            .send_empty()
            .map_err(|e| self.failed("CreateMultipartUpload", e))?;
        let resp = self.answered(resp);
        if resp.status().as_u16() != 200 {
            return Err(self.status("CreateMultipartUpload", resp));
        }
        let text = resp
            .into_body()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .map_err(|e| self.failed("CreateMultipartUpload", e))?;
        let created =
            CreateMultipartUpload::parse_response(&text).map_err(|e| S3Error::Protocol {
                op: "CreateMultipartUpload",
                detail: e.to_string(),
            })?;
        let upload_id = created.upload_id().to_owned();
        match self.upload_parts(key, &upload_id, file, len) {
            Ok(etag) => {
                self.stats.multipart_uploads.fetch_add(1, Ordering::Relaxed);
                Ok(etag)
            }
            Err(e) => {
                self.abort(key, &upload_id);
                Err(e)
            }
        }
    }

    fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        file: &File,
        len: u64,
    ) -> Result<Option<String>, S3Error> {
        let size = part_size(len);
        let mut etags = Vec::new();
        let mut at = 0;
        let mut number: u16 = 1;
        while at < len {
            let end = (at + size).min(len);
            let url = self
                .bucket
                .upload_part(Some(&self.creds), key, number, upload_id)
                .sign(SIGN_FOR);
            let mut body = FilePart { file, at, end };
            let etag = self
                .send_put("UploadPart", &url, &mut body, end - at)?
                .ok_or_else(|| S3Error::Protocol {
                    op: "UploadPart",
                    detail: "no ETag in the answer".into(),
                })?;
            etags.push(etag);
            at = end;
            number = number.checked_add(1).ok_or_else(|| S3Error::Protocol {
                op: "UploadPart",
                detail: "too many parts".into(),
            })?;
        }
        let action = self.bucket.complete_multipart_upload(
            Some(&self.creds),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGN_FOR);
        let body = action.body();
        let resp = self
            .agent
            .post(url.as_str())
            .send(body.as_bytes())
            .map_err(|e| self.failed("CompleteMultipartUpload", e))?;
        let resp = self.answered(resp);
        if resp.status().as_u16() != 200 {
            return Err(self.status("CompleteMultipartUpload", resp));
        }
        // S3 may answer 200 with an error in the body.
        let text = resp
            .into_body()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        if let Some(code) = text.contains("<Error>").then(|| error_code(&text)) {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            return Err(S3Error::Status {
                op: "CompleteMultipartUpload",
                status: 200,
                code,
            });
        }
        Ok(CompleteMultipartUploadResponse::parse(&text)
            .ok()
            .map(|r| r.etag().to_owned()))
    }

    /// Aborts a multipart upload, so its parts do not stay behind.
    fn abort(&self, key: &str, upload_id: &str) {
        let url = self
            .bucket
            .abort_multipart_upload(Some(&self.creds), key, upload_id)
            .sign(SIGN_FOR);
        match self.agent.delete(url.as_str()).call() {
            Ok(r) if matches!(r.status().as_u16(), 200 | 204 | 404) => {
                self.stats.aborted_uploads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => log::warn!(
                "cannot abort the multipart upload of {key}: S3 answered {} (an AbortIncompleteMultipartUpload lifecycle rule removes its parts)",
                r.status()
            ),
            Err(e) => log::warn!(
                "cannot abort the multipart upload of {key}: {e} (an AbortIncompleteMultipartUpload lifecycle rule removes its parts)"
            ),
        }
    }
}

/// The same object, whatever quotes its ETag came in.
pub fn same_etag(a: &str, b: &str) -> bool {
    let bare = |s: &str| {
        s.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_owned()
    };
    bare(a) == bare(b)
}

/// Ranges of an object this process verified whole: each range is a
/// ranged GET whose answer must carry the verified ETag (the object was
/// not replaced since) and exactly the asked length.
pub struct ObjectRanges {
    pub bucket: std::sync::Arc<Bucket>,
    pub object: String,
    pub etag: String,
}

impl super::RangeSource for ObjectRanges {
    fn open(&self, offset: u64, len: u64) -> io::Result<Box<dyn Read + Send>> {
        if len == 0 {
            return Ok(Box::new(io::empty()));
        }
        let obj = self
            .bucket
            .get(&self.object, Some((offset, offset + len - 1)))
            .map_err(io::Error::other)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no longer in the bucket"))?;
        if !obj
            .etag
            .as_deref()
            .is_some_and(|e| same_etag(e, &self.etag))
        {
            return Err(io::Error::other(format!(
                "{} was replaced in the bucket since it was verified",
                self.object
            )));
        }
        if obj.len != len {
            return Err(io::Error::other(format!(
                "the bucket answered {} bytes for a range of {len}",
                obj.len
            )));
        }
        self.bucket
            .stats
            .bytes_read
            .fetch_add(len, Ordering::Relaxed);
        Ok(Box::new(obj.body.take(len)))
    }
}

/// What a refused bucket check means, naming the settings to fix.
fn refusal(s: &S3Settings, e: &S3Error) -> String {
    let what = match e {
        S3Error::Status { status: 403, .. } => format!(
            "S3 refused the credentials for bucket {:?} (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN)",
            s.bucket
        ),
        S3Error::Status { status: 404, .. } => format!(
            "bucket {:?} does not exist at {} (ROXPI_S3_BUCKET, ROXPI_S3_ENDPOINT)",
            s.bucket, s.endpoint
        ),
        S3Error::Status { status: 301, .. } => format!(
            "bucket {:?} is in another region than {:?} (ROXPI_S3_REGION)",
            s.bucket, s.region
        ),
        _ => format!(
            "S3 rejected the request for bucket {:?} (ROXPI_S3_ENDPOINT, ROXPI_S3_REGION, ROXPI_S3_PATH_STYLE)",
            s.bucket
        ),
    };
    format!("{what}: {e}")
}

/// The bucket, checked: a refusal (403, 404, wrong region) stops startup
/// with a message naming the setting; an unreachable S3 is logged and
/// checked again in the background (files come from the upstream
/// meanwhile) — a refusal found then stops the process the same way.
pub fn open_checked(
    settings: S3Settings,
    agent: ureq::Agent,
) -> anyhow::Result<std::sync::Arc<Bucket>> {
    let bucket = std::sync::Arc::new(Bucket::new(settings, agent).map_err(anyhow::Error::msg)?);
    match bucket.check() {
        Ok(()) => {
            log::info!("bucket {} is ready", bucket.describe());
            return Ok(bucket);
        }
        Err(e) if e.is_refused() => anyhow::bail!(refusal(bucket.settings(), &e)),
        Err(e) => log::warn!(
            "bucket {} not reachable at startup ({e}): checking again every {RECHECK:?}",
            bucket.describe()
        ),
    }
    let weak = std::sync::Arc::downgrade(&bucket);
    std::thread::Builder::new()
        .name("roxpi-s3-check".into())
        .spawn(move || loop {
            std::thread::sleep(RECHECK);
            let Some(again) = weak.upgrade() else {
                return;
            };
            match again.check() {
                Ok(()) => {
                    log::info!("bucket {} is reachable now", again.describe());
                    return;
                }
                Err(e) if e.is_refused() => {
                    log::error!("{}", refusal(again.settings(), &e));
                    eprintln!("roxpi: {}", refusal(again.settings(), &e));
                    std::process::exit(1);
                }
                Err(e) => log::warn!("bucket {} still not reachable: {e}", again.describe()),
            }
        })?;
    Ok(bucket)
}

/// How often an unreachable bucket is checked again after startup.
const RECHECK: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_normalise_to_one_slash() {
        for (given, want) in [
            ("roxpi", "roxpi/"),
            ("roxpi/", "roxpi/"),
            ("/roxpi//", "roxpi/"),
            ("a/b", "a/b/"),
            ("", ""),
            ("/", ""),
        ] {
            assert_eq!(normalize_prefix(given), want, "{given:?}");
        }
    }

    #[test]
    fn object_keys_follow_the_layout() {
        let sha = "ab".repeat(32);
        let key = CacheKey::parse(&sha).unwrap();
        assert_eq!(
            object_for_file("roxpi/", &key, "demo-1.0-py3-none-any.whl"),
            format!("roxpi/ab/{sha}/demo-1.0-py3-none-any.whl")
        );
        assert_eq!(
            object_for_file(&normalize_prefix("roxpi"), &key, "x.tar.gz"),
            object_for_file(&normalize_prefix("roxpi/"), &key, "x.tar.gz")
        );
        assert_eq!(
            object_for_page("p/", "0123456789abcdef", "numpy"),
            "p/pages/0123456789abcdef/numpy"
        );
    }

    #[test]
    fn filenames_are_decoded_and_made_safe() {
        for (url, want) in [
            ("https://f.example/a/demo-1.0.tar.gz", "demo-1.0.tar.gz"),
            (
                "https://f.example/a/torch-2.1%2Bcu121-cp311.whl",
                "torch-2.1+cu121-cp311.whl",
            ),
            ("https://f.example/a/we%20ird%2F..%2Fname", "we_ird_.._name"),
            ("https://f.example/a/", "file"),
            ("https://f.example/a/..", "file"),
            ("https://f.example/a/x.whl.metadata", "x.whl.metadata"),
        ] {
            assert_eq!(object_filename(&Url::parse(url).unwrap()), want, "{url}");
        }
    }

    #[test]
    fn parts_stay_within_the_part_limit() {
        assert_eq!(part_size(65 << 20), 8 << 20);
        assert_eq!(part_size(0), 8 << 20);
        let big: u64 = 200 << 30; // 200 GiB
        let size = part_size(big);
        assert!(size > 8 << 20);
        assert!(big.div_ceil(size) <= MAX_PARTS);
        // 5 TiB, S3's largest object.
        let max: u64 = 5 << 40;
        assert!(max.div_ceil(part_size(max)) <= MAX_PARTS);
    }

    #[test]
    fn etags_compare_without_their_quotes() {
        assert!(same_etag("\"abc\"", "abc"));
        assert!(same_etag("\"abc-9\"", "\"abc-9\""));
        assert!(!same_etag("\"abc\"", "\"abd\""));
    }

    #[test]
    fn error_codes_come_from_the_body() {
        let body = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>x</Message></Error>";
        assert_eq!(error_code(body).as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(error_code("nothing"), None);
    }
}
