//! The upstream client: one shared ureq agent (built without its `gzip`
//! feature, so file bytes are never decoded behind our back), connect and
//! per-read timeouts, many idle connections per host, custom CA or disabled
//! verification. Redirects are followed here, so that credentials embedded
//! in an index URL go only to that index's own origin, and so that relative
//! links resolve against the final URL. Every URL that reaches a log line or
//! an error message is redacted.

use std::io::Read;
use std::time::Duration;

use base64::Engine;
use url::Url;

use crate::config::{redact, IndexConfig, Settings};
use crate::pypi::{
    parse_project_list, parse_project_page, Format, ProjectList, ProjectName, ProjectPage,
};

/// What roxpi asks an index for: JSON first (PEP 700 fields exist only there).
pub const PAGE_ACCEPT: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01";

/// Largest decoded index page accepted (PyPI's full project list is ~30 MB).
const MAX_PAGE: u64 = 256 << 20;
const MAX_REDIRECTS: usize = 10;

/// One configured upstream index.
#[derive(Clone, Debug)]
pub struct Index {
    /// Position in the configuration (0 = root).
    pub id: usize,
    /// The index URL without credentials.
    pub url: Url,
    /// `Authorization` value, sent only to `url`'s origin.
    auth: Option<String>,
    pub ttl: Duration,
}

impl Index {
    pub fn new(id: usize, config: &IndexConfig) -> Index {
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
        }
    }

    /// Whether the index URL carried credentials.
    pub fn has_credentials(&self) -> bool {
        self.auth.is_some()
    }

    /// The URL for display (it no longer holds credentials).
    pub fn display(&self) -> String {
        redact(&self.url)
    }

    /// The project page URL `<index>/<name>/`.
    pub fn project_url(&self, name: &ProjectName) -> Url {
        // A normalised name is a single safe path segment.
        self.url
            .join(&format!("{name}/"))
            .unwrap_or_else(|_| self.url.clone())
    }

    fn auth_for(&self, url: &Url) -> Option<&str> {
        (url.origin() == self.url.origin())
            .then_some(self.auth.as_deref())
            .flatten()
    }
}

/// Why an upstream request failed. Messages carry redacted URLs only.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {0} timed out")]
    Timeout(String),
    #[error("cannot connect to upstream {0}: {1}")]
    Connect(String, String),
    #[error("upstream {0} answered {1}")]
    Status(String, u16),
    #[error("upstream {0} sent an unusable page: {1}")]
    Parse(String, String),
    #[error("upstream {0}: {1}")]
    Other(String, String),
    #[error("offline mode: {0} is not contacted")]
    Offline(String),
}

impl UpstreamError {
    /// Whether the failure was a timeout (504) rather than a bad answer (502).
    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::Timeout(_))
    }
}

/// The answer for a project page.
#[derive(Debug)]
pub enum PageFetch {
    /// The parsed page and the raw answer it came from (for persistence).
    Found(ProjectPage, Box<RawPage>),
    NotFound,
}

/// An upstream page as received (decoded), enough to parse it again.
#[derive(Debug, Clone)]
pub struct RawPage {
    pub format: Format,
    pub url: Url,
    pub body: Vec<u8>,
}

/// A response whose body is streamed.
pub struct Streamed {
    pub status: u16,
    pub content_length: Option<u64>,
    pub content_range: Option<String>,
    pub final_url: Url,
    pub body: Box<dyn Read + Send>,
}

pub struct Upstream {
    agent: ureq::Agent,
    offline: bool,
}

fn to_error(url: &Url, e: ureq::Error) -> UpstreamError {
    let shown = redact(url);
    match e {
        ureq::Error::Timeout(_) => UpstreamError::Timeout(shown),
        ureq::Error::HostNotFound => UpstreamError::Connect(shown, "host not found".into()),
        ureq::Error::ConnectionFailed => UpstreamError::Connect(shown, "connection failed".into()),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            UpstreamError::Timeout(shown)
        }
        ureq::Error::Io(io) => UpstreamError::Connect(shown, io.kind().to_string()),
        other => UpstreamError::Other(shown, strip_urls(&other.to_string())),
    }
}

/// Error texts from the HTTP stack may quote URLs; keep only their host.
fn strip_urls(s: &str) -> String {
    s.split_whitespace()
        .map(
            |w| match Url::parse(w.trim_matches(|c| c == '"' || c == '\'')) {
                Ok(u) if u.has_host() => redact(&u),
                _ if w.contains('@') => "***".to_owned(),
                _ => w.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join(" ")
}

impl Upstream {
    pub fn new(settings: &Settings) -> anyhow::Result<Upstream> {
        use ureq::tls::{Certificate, RootCerts, TlsConfig};
        let roots = match &settings.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("cannot read ROXPI_CA_FILE {}: {e}", path.display())
                })?;
                let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                if certs.is_empty() {
                    anyhow::bail!("ROXPI_CA_FILE {} holds no PEM certificate", path.display());
                }
                RootCerts::Specific(std::sync::Arc::new(certs))
            }
            None if system_store_present() => RootCerts::PlatformVerifier,
            None => RootCerts::WebPki,
        };
        let tls = TlsConfig::builder()
            .root_certs(roots)
            .disable_verification(settings.disable_tls_verification)
            .build();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(settings.connect_timeout))
            .timeout_per_read(Some(settings.read_timeout))
            .timeout_recv_response(Some(settings.read_timeout))
            .max_idle_connections(256)
            .max_idle_connections_per_host(64)
            .user_agent(concat!("roxpi/", env!("CARGO_PKG_VERSION")))
            .accept_encoding("")
            .tls_config(tls)
            .build();
        Ok(Upstream {
            agent: config.into(),
            offline: settings.offline,
        })
    }

    /// A GET that follows redirects itself (credentials only to `index`'s
    /// origin).
    fn get(
        &self,
        index: &Index,
        url: &Url,
        headers: &[(&str, &str)],
    ) -> Result<(Url, ureq::http::Response<ureq::Body>), UpstreamError> {
        if self.offline {
            return Err(UpstreamError::Offline(redact(url)));
        }
        let mut current = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.agent.get(current.as_str());
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(auth) = index.auth_for(&current) {
                req = req.header("Authorization", auth);
            }
            let resp = req.call().map_err(|e| to_error(&current, e))?;
            let status = resp.status().as_u16();
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                let next = resp
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| current.join(l).ok())
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        UpstreamError::Other(
                            redact(&current),
                            format!("redirect {status} without a usable Location"),
                        )
                    })?;
                log::debug!(
                    "upstream {} redirects to {}",
                    redact(&current),
                    redact(&next)
                );
                current = next;
                continue;
            }
            return Ok((current, resp));
        }
        Err(UpstreamError::Other(
            redact(url),
            "too many redirects".into(),
        ))
    }

    /// Fetches and parses `<index>/<name>/`.
    pub fn fetch_project(
        &self,
        index: &Index,
        name: &ProjectName,
    ) -> Result<PageFetch, UpstreamError> {
        let url = index.project_url(name);
        let started = std::time::Instant::now();
        let (final_url, resp) = self.get(
            index,
            &url,
            &[
                ("Accept", PAGE_ACCEPT),
                ("Accept-Encoding", "gzip, deflate"),
            ],
        )?;
        let status = resp.status().as_u16();
        log::debug!(
            "upstream GET {} -> {status} in {:?}",
            redact(&final_url),
            started.elapsed()
        );
        match status {
            200 => {}
            404 | 410 => return Ok(PageFetch::NotFound),
            s => return Err(UpstreamError::Status(redact(&final_url), s)),
        }
        let (format, body) = read_page(&final_url, resp)?;
        let page = parse_project_page(&body, format, &final_url)
            .map_err(|e| UpstreamError::Parse(redact(&final_url), e.to_string()))?;
        Ok(PageFetch::Found(
            page,
            Box::new(RawPage {
                format,
                url: final_url,
                body,
            }),
        ))
    }

    /// Fetches and parses the index's project list (`None` if 404).
    pub fn fetch_list(&self, index: &Index) -> Result<Option<ProjectList>, UpstreamError> {
        let (final_url, resp) = self.get(
            index,
            &index.url,
            &[
                ("Accept", PAGE_ACCEPT),
                ("Accept-Encoding", "gzip, deflate"),
            ],
        )?;
        match resp.status().as_u16() {
            200 => {}
            404 | 410 => return Ok(None),
            s => return Err(UpstreamError::Status(redact(&final_url), s)),
        }
        let (format, body) = read_page(&final_url, resp)?;
        parse_project_list(&body, format)
            .map(Some)
            .map_err(|e| UpstreamError::Parse(redact(&final_url), e.to_string()))
    }

    /// Opens a file for streaming, byte for byte (no decoding), optionally a
    /// range of it.
    pub fn open_file(
        &self,
        index: &Index,
        url: &Url,
        range: Option<&str>,
    ) -> Result<Streamed, UpstreamError> {
        let mut headers = vec![("Accept-Encoding", "identity")];
        if let Some(r) = range {
            headers.push(("Range", r));
        }
        let (final_url, resp) = self.get(index, url, &headers)?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_length = header("content-length").and_then(|v| v.trim().parse().ok());
        let content_range = header("content-range");
        let body = Box::new(resp.into_body().into_reader());
        Ok(Streamed {
            status,
            content_length,
            content_range,
            final_url,
            body,
        })
    }
}

/// Reads an index page body, decoding gzip/deflate, bounded in size.
fn read_page(
    url: &Url,
    resp: ureq::http::Response<ureq::Body>,
) -> Result<(Format, Vec<u8>), UpstreamError> {
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let format = Format::from_content_type(header("content-type").as_deref());
    let encoding = header("content-encoding").map(|e| e.trim().to_ascii_lowercase());
    let raw = resp.into_body().into_reader();
    let mut reader: Box<dyn Read> = match encoding.as_deref() {
        None | Some("") | Some("identity") => Box::new(raw),
        Some("gzip") | Some("x-gzip") => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        Some("deflate") => Box::new(flate2::read::ZlibDecoder::new(raw)),
        Some(other) => {
            return Err(UpstreamError::Parse(
                redact(url),
                format!("unsupported Content-Encoding {other}"),
            ));
        }
    };
    let mut body = Vec::new();
    let n = (&mut reader)
        .take(MAX_PAGE + 1)
        .read_to_end(&mut body)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                UpstreamError::Timeout(redact(url))
            }
            _ => UpstreamError::Parse(redact(url), format!("reading the page failed: {e}")),
        })?;
    if n as u64 > MAX_PAGE {
        return Err(UpstreamError::Parse(
            redact(url),
            format!("page larger than {MAX_PAGE} bytes"),
        ));
    }
    Ok((format, body))
}

/// Whether the machine has a system CA bundle the platform verifier can use.
fn system_store_present() -> bool {
    std::env::var_os("SSL_CERT_FILE").is_some()
        || [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
            "/etc/ssl/cert.pem",
            "/etc/ssl/ca-bundle.pem",
        ]
        .iter()
        .any(|p| std::path::Path::new(p).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(url: &str) -> Index {
        Index::new(
            0,
            &IndexConfig {
                url: Url::parse(url).unwrap(),
                ttl: Duration::from_secs(1),
            },
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
        assert!(!i.display().contains("p%3Ass"));
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
        let s = strip_urls("failed to reach https://u:secret@h.example/simple/ now");
        assert!(!s.contains("secret"), "{s}");
        assert!(!strip_urls("x u:secret@h y").contains("secret"));
    }
}
