//! The upstream as the caches see it: the `Origin` trait (fetch a page,
//! open a file body), the configured `Index`es, and `OriginError`, which
//! keeps a timeout apart from a refused connection, a bad status and a
//! garbled page. `Upstream` (ureq) implements it for real; unit tests use
//! `fake::FakeOrigin`, in-process and without sockets.

pub mod breaker;
#[cfg(test)]
pub mod fake;
pub mod http;

use std::fmt;
use std::io::Read;
use std::time::Duration;

use base64::Engine;
use url::Url;

use crate::pypi::{Format, ProjectList, ProjectName, ProjectPage};
use crate::redact::SafeUrl;

/// An index's position in the configuration: 0 is the root
/// (`ROXPI_INDEX_URL`), then the extras in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IndexId(pub usize);

impl IndexId {
    pub const ROOT: IndexId = IndexId(0);

    pub fn get(self) -> usize {
        self.0
    }
}

impl fmt::Display for IndexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One upstream index.
#[derive(Clone, Debug)]
pub struct IndexConfig {
    /// The URL, ending in `/`, with any credentials.
    pub url: Url,
    pub ttl: Duration,
    /// Dependency-confusion guard: this index serves only these projects,
    /// and they are taken from no other index (empty: any project).
    pub only: Vec<crate::policy::ProjectGlob>,
    /// This index never serves these projects.
    pub never: Vec<crate::policy::ProjectGlob>,
}

impl IndexConfig {
    pub fn new(url: Url, ttl: Duration) -> IndexConfig {
        IndexConfig {
            url,
            ttl,
            only: Vec::new(),
            never: Vec::new(),
        }
    }
}

/// One configured upstream index.
#[derive(Clone, Debug)]
pub struct Index {
    pub id: IndexId,
    /// The index URL without credentials.
    pub url: Url,
    /// `Authorization` value, sent only to `url`'s origin.
    auth: Option<String>,
    pub ttl: Duration,
    /// Dependency-confusion guard: the only projects this index serves,
    /// which no other index may serve (empty: any).
    pub only: Vec<crate::policy::ProjectGlob>,
    /// Projects this index never serves.
    pub never: Vec<crate::policy::ProjectGlob>,
}

impl Index {
    pub fn new(id: IndexId, config: &IndexConfig) -> Index {
        let mut url = config.url.clone();
        let auth = if !url.username().is_empty() || url.password().is_some() {
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            let user = dec(url.username());
            let pass = dec(url.password().unwrap_or(""));
            let _ = url.set_username("");
            let _ = url.set_password(None);
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            Some(format!("Basic {token}"))
        } else {
            None
        };
        Index {
            id,
            url,
            auth,
            ttl: config.ttl,
            only: config.only.clone(),
            never: config.never.clone(),
        }
    }

    /// Whether this index claims `name` (its `only` list names it).
    pub fn claims(&self, name: &crate::pypi::ProjectName) -> bool {
        self.only.iter().any(|g| g.matches(name))
    }

    /// Whether this index may serve `name` at all.
    pub fn may_serve(&self, name: &crate::pypi::ProjectName) -> bool {
        (self.only.is_empty() || self.claims(name)) && !self.never.iter().any(|g| g.matches(name))
    }

    /// Whether the index URL carried credentials (then clients are never
    /// redirected to it: they could not follow).
    pub fn has_credentials(&self) -> bool {
        self.auth.is_some()
    }

    /// The URL for display.
    pub fn display(&self) -> SafeUrl {
        SafeUrl::new(&self.url)
    }

    /// The project page URL `<index>/<name>/`.
    pub fn project_url(&self, name: &ProjectName) -> Url {
        // A normalised name is a single safe path segment.
        self.url
            .join(&format!("{name}/"))
            .unwrap_or_else(|_| self.url.clone())
    }

    /// The `Authorization` value for `url`: only on the index's own origin.
    pub fn auth_for(&self, url: &Url) -> Option<&str> {
        (url.origin() == self.url.origin())
            .then_some(self.auth.as_deref())
            .flatten()
    }
}

/// The lower-level reason behind an `OriginError`, as text from the HTTP
/// stack with any URL credentials removed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Cause(String);

impl Cause {
    pub fn new(text: impl AsRef<str>) -> Cause {
        Cause(crate::redact::strip_urls(text.as_ref()))
    }
}

/// Why an upstream request failed. Every URL in it is a `SafeUrl`.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("upstream {url} timed out")]
    Timeout { url: SafeUrl },
    #[error("cannot connect to upstream {url}: {source}")]
    Connect {
        url: SafeUrl,
        #[source]
        source: Cause,
    },
    #[error("upstream {url} answered {status}")]
    Status { url: SafeUrl, status: u16 },
    #[error("upstream {url} sent an unusable page: {source}")]
    Garbage {
        url: SafeUrl,
        #[source]
        source: Cause,
    },
    /// A file body that broke off or did not match its announced length.
    #[error("upstream {url} file body failed: {source}")]
    Body {
        url: SafeUrl,
        #[source]
        source: Cause,
    },
    #[error("offline mode: {url} is not contacted")]
    Offline { url: SafeUrl },
    /// The host resolves only to addresses the policy refuses.
    #[error("upstream {url} is outside the upstream address policy (ROXPI_UPSTREAM_ALLOW)")]
    Forbidden { url: SafeUrl },
    /// roxpi's own bound on concurrent upstream requests is reached.
    #[error("too many upstream requests at once; {url} not contacted")]
    Busy { url: SafeUrl },
    /// The circuit breaker of this origin is open: not contacted.
    #[error("upstream {url} is down since {since}: not contacted (circuit breaker open; one probe every {retry} s)")]
    Down {
        url: SafeUrl,
        since: String,
        retry: u64,
    },
    /// The process is out of file descriptors for a connection.
    #[error("no file descriptor free for a connection to upstream {url} (raise the nofile limit)")]
    Descriptors { url: SafeUrl },
}

impl OriginError {
    pub fn timeout(url: &Url) -> OriginError {
        OriginError::Timeout { url: url.into() }
    }

    pub fn connect(url: &Url, cause: impl AsRef<str>) -> OriginError {
        OriginError::Connect {
            url: url.into(),
            source: Cause::new(cause),
        }
    }

    pub fn status(url: &Url, status: u16) -> OriginError {
        OriginError::Status {
            url: url.into(),
            status,
        }
    }

    pub fn garbage(url: &Url, cause: impl AsRef<str>) -> OriginError {
        OriginError::Garbage {
            url: url.into(),
            source: Cause::new(cause),
        }
    }

    pub fn body(url: &Url, cause: impl AsRef<str>) -> OriginError {
        OriginError::Body {
            url: url.into(),
            source: Cause::new(cause),
        }
    }

    pub fn forbidden(url: &Url) -> OriginError {
        OriginError::Forbidden { url: url.into() }
    }

    pub fn busy(url: &Url) -> OriginError {
        OriginError::Busy { url: url.into() }
    }

    pub fn descriptors(url: &Url) -> OriginError {
        OriginError::Descriptors { url: url.into() }
    }

    pub fn offline(url: &Url) -> OriginError {
        OriginError::Offline { url: url.into() }
    }

    /// The origin's breaker is open (since then; a probe every `retry` s).
    pub fn down(url: &Url, since: std::time::SystemTime, retry: Duration) -> OriginError {
        OriginError::Down {
            url: url.into(),
            since: httpdate::fmt_http_date(since),
            retry: retry.as_secs().max(1),
        }
    }

    /// Whether the origin itself could not be reached (connect failure or
    /// timeout): what the circuit breaker counts.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            OriginError::Connect { .. } | OriginError::Timeout { .. }
        )
    }
}

/// The answer for a project page.
#[derive(Debug)]
pub enum PageFetch {
    /// The parsed page and the raw answer it came from (for persistence).
    Found(ProjectPage, Box<RawPage>),
    NotFound,
    /// `304`: the copy whose validators were sent is still current.
    NotModified,
}

/// What identifies one version of an upstream page: its `ETag` and
/// `Last-Modified` (sent back as `If-None-Match` / `If-Modified-Since`), and
/// PyPI's `X-PyPI-Last-Serial` (a page with a lower serial is older).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub serial: Option<u64>,
}

impl Validators {
    /// Whether a conditional request can be made with these.
    pub fn can_revalidate(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }

    /// Whether a page with these validators is older than one with `known`
    /// (both carry a serial and it went down).
    pub fn older_than(&self, known: &Validators) -> bool {
        matches!((self.serial, known.serial), (Some(new), Some(old)) if new < old)
    }
}

/// An upstream page as received (decoded), enough to parse it again.
#[derive(Debug, Clone)]
pub struct RawPage {
    pub format: Format,
    pub url: Url,
    pub body: bytes::Bytes,
    pub validators: Validators,
}

/// A response whose body is streamed.
pub struct Streamed {
    pub status: u16,
    pub content_length: Option<u64>,
    pub content_range: Option<String>,
    pub final_url: Url,
    pub body: Box<dyn Read + Send>,
}

/// The upstream indexes, as the index cache and the downloads use them.
pub trait Origin: Send + Sync {
    /// Fetches and parses `<index>/<name>/`.
    /// Fetches and parses a project page; `known`: the validators of the
    /// copy at hand, for a conditional request (`PageFetch::NotModified`).
    fn fetch_project(
        &self,
        index: &Index,
        name: &ProjectName,
        known: &Validators,
    ) -> Result<PageFetch, OriginError>;
    /// Fetches and parses the index's project list (`None` if 404).
    fn fetch_list(&self, index: &Index) -> Result<Option<ProjectList>, OriginError>;
    /// Opens a file for streaming, byte for byte, optionally a range of it.
    fn open_file(
        &self,
        index: &Index,
        url: &Url,
        range: Option<&str>,
    ) -> Result<Streamed, OriginError>;
    /// Connections refused by the upstream address policy so far.
    fn refused_addresses(&self) -> u64 {
        0
    }
    /// The `[[route]]` indexes now in force (at start and on SIGHUP): their
    /// origins are trusted like the default route's.
    fn trust_route_indexes(&self, _urls: &[Url]) {}
    /// Origins whose circuit breaker is open or probing.
    fn breakers(&self) -> Vec<breaker::HostState> {
        Vec::new()
    }
    /// Which upstream hosts are down (breaker open), if any: never blocks
    /// (the accept thread's `/ready` asks).
    fn upstream_down(&self) -> Option<String> {
        None
    }
    /// Breaker changes (open → closed and back) so far.
    fn breaker_transitions(&self) -> u64 {
        0
    }
    /// Each upstream origin's average time to response headers.
    fn upstream_latencies(&self) -> Vec<(String, std::time::Duration)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(url: &str) -> Index {
        Index::new(
            IndexId::ROOT,
            &IndexConfig::new(Url::parse(url).unwrap(), Duration::from_secs(1)),
        )
    }

    #[test]
    fn credentials_are_split_from_the_url() {
        let i = index("https://us%40er:p%3Ass@host.example/simple/");
        assert_eq!(i.url.as_str(), "https://host.example/simple/");
        assert!(i.has_credentials());
        let expected = base64::engine::general_purpose::STANDARD.encode("us@er:p:ss");
        assert_eq!(
            i.auth_for(&Url::parse("https://host.example/x").unwrap()),
            Some(format!("Basic {expected}").as_str())
        );
        // Other origins (host, scheme or port) never get them.
        for other in [
            "https://cdn.example/x",
            "http://host.example/x",
            "https://host.example:444/x",
        ] {
            assert_eq!(i.auth_for(&Url::parse(other).unwrap()), None, "{other}");
        }
        assert!(!i.display().to_string().contains("p%3Ass"));
    }

    #[test]
    fn project_urls() {
        let i = index("https://h.example/simple/");
        let n = ProjectName::parse("Foo.Bar").unwrap();
        assert_eq!(
            i.project_url(&n).as_str(),
            "https://h.example/simple/foo-bar/"
        );
    }

    #[test]
    fn error_texts_lose_credentials() {
        let u = Url::parse("https://u:secret@h.example/simple/").unwrap();
        let e = OriginError::connect(&u, "failed to reach https://u:secret@h.example/ now");
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(!OriginError::timeout(&u).to_string().contains("secret"));
    }
}
