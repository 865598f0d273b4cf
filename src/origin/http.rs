// Size: one concept (the HTTP origin: agent, address policy, trust, redirects, page and file fetches).
//! The HTTP origin, the real `Origin`: one shared ureq agent (built
//! without its `gzip` feature, so file bytes are never decoded behind our
//! back), connect and per-read timeouts, many idle connections per host,
//! custom CA or disabled verification. Redirects are followed here, so that
//! credentials embedded in an index URL go only to that index's own origin,
//! and so that relative links resolve against the final URL. Every URL that
//! reaches a log line or an error is a `SafeUrl`.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use url::Url;

use super::breaker::Admit;
use crate::address_policy::AddressPolicy;
use crate::socket_budget::{Permit, SocketBudget};
use bytes::Bytes;

use crate::origin::{Index, Origin, OriginError, PageFetch, RawPage, Streamed, Validators};
use crate::page_budget::{BigSlot, PageBudget, PageBuf, SMALL_PAGE};
use crate::pypi::{parse_project_list, parse_project_page, Format, ProjectList, ProjectName};
use crate::redact::SafeUrl;

/// What the HTTP origin needs from the settings (built by `config`).
#[derive(Clone, Debug, Default)]
pub struct HttpParams {
    /// PEM roots instead of the system's (`ROXPI_CA_FILE`).
    pub ca_file: Option<std::path::PathBuf>,
    /// `ROXPI_UPSTREAM_PROXY`.
    pub proxy: Option<Url>,
    pub disable_tls_verification: bool,
    pub connect_timeout: std::time::Duration,
    pub read_timeout: std::time::Duration,
    /// The default route's indexes (trusted by origin).
    pub indexes: Vec<Url>,
    /// The `[[route]]`s' indexes (trusted by origin; replaced on SIGHUP).
    pub route_indexes: Vec<Url>,
    /// The bucket's endpoint and name (trusted by origin).
    pub bucket: Option<(Url, String)>,
    /// Address classes upstream connections may reach; `None`: any.
    pub allow: Option<Vec<crate::address_policy::AddrClass>>,
    pub offline: bool,
    /// When an origin's circuit breaker opens, and how often it probes.
    pub breaker: super::breaker::BreakerParams,
}

/// What roxpi asks an index for: JSON first (PEP 700 fields exist only there).
pub const PAGE_ACCEPT: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01";

const MAX_REDIRECTS: usize = 10;

fn to_error(url: &Url, e: ureq::Error) -> OriginError {
    match e {
        ureq::Error::Timeout(_) => OriginError::timeout(url),
        ureq::Error::HostNotFound => OriginError::connect(url, "host not found"),
        ureq::Error::ConnectionFailed => OriginError::connect(url, "connection failed"),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            OriginError::timeout(url)
        }
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
            OriginError::forbidden(url)
        }
        ureq::Error::Io(io) if matches!(io.raw_os_error(), Some(e) if e == rustix::io::Errno::MFILE.raw_os_error() || e == rustix::io::Errno::NFILE.raw_os_error()) => {
            OriginError::descriptors(url)
        }
        ureq::Error::Io(io) => OriginError::connect(url, io.kind().to_string()),
        other => OriginError::garbage(url, other.to_string()),
    }
}

pub struct HttpOrigin {
    agent: ureq::Agent,
    offline: bool,
    /// The memory bound for pages being read and parsed.
    pages: PageBudget,
    /// Connections refused by the address policy.
    refused: Arc<AtomicU64>,
    trusted: Arc<Trusted>,
    policy: AddressPolicy,
    /// `ROXPI_UPSTREAM_PROXY` is set: targets are checked before each
    /// request.
    proxied: bool,
    /// Open upstream connections for pages and for files, each bounded
    /// (`socket_budget`); waiting for a permit is bounded by the connect
    /// timeout.
    page_sockets: Arc<SocketBudget>,
    file_sockets: Arc<SocketBudget>,
    socket_wait: std::time::Duration,
    /// One circuit breaker per upstream origin.
    breakers: super::breaker::Breakers,
}

/// An origin as the policy compares it: lower-case host (IPv6 without
/// brackets) and port, the scheme's default when none is written.
pub type TrustedOrigin = (String, u16);

/// The origin of `url`, if it has a host.
pub fn origin_of(url: &Url) -> Option<TrustedOrigin> {
    let host = url
        .host_str()?
        .trim_matches(['[', ']'])
        .to_ascii_lowercase();
    Some((host, url.port_or_known_default()?))
}

/// The configured origins trusted whatever they resolve to: those fixed at
/// start (the default route's indexes, the bucket, the proxy) and those of
/// the `[[route]]`s in force (replaced on SIGHUP).
#[derive(Default)]
struct Trusted {
    fixed: BTreeSet<TrustedOrigin>,
    routes: std::sync::RwLock<BTreeSet<TrustedOrigin>>,
}

impl Trusted {
    fn contains(&self, o: &TrustedOrigin) -> bool {
        self.fixed.contains(o) || crate::read(&self.routes).contains(o)
    }
}

/// Resolves names, then keeps only the addresses the policy allows: a
/// configured origin (scheme, host and port) is trusted whatever it
/// resolves to; any other name or address — another port on the same
/// host included — must resolve to allowed addresses. (Through a proxy,
/// only the proxy's own name comes here; `HttpOrigin::check_proxied`
/// checks each target before the CONNECT.)
struct PolicyResolver {
    inner: DefaultResolver,
    policy: AddressPolicy,
    trusted: Arc<Trusted>,
    refused: Arc<AtomicU64>,
}

impl std::fmt::Debug for PolicyResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyResolver")
            .field("policy", &self.policy)
            .finish()
    }
}

impl Resolver for PolicyResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let all = self.inner.resolve(uri, config, timeout)?;
        let host = uri
            .host()
            .unwrap_or("")
            .trim_matches(['[', ']'])
            .to_ascii_lowercase();
        let port = uri
            .port_u16()
            .or_else(|| match uri.scheme_str() {
                Some("https") => Some(443),
                Some("http") => Some(80),
                _ => None,
            })
            .unwrap_or(0);
        let origin = (host, port);
        if self.trusted.contains(&origin) {
            return Ok(all);
        }
        let mut kept = self.empty();
        for a in &all {
            if self.policy.allows(a.ip()) {
                kept.push(*a);
            }
        }
        if kept.is_empty() {
            self.refused.fetch_add(1, Ordering::Relaxed);
            let addrs: Vec<String> = all.iter().map(|a| a.ip().to_string()).collect();
            log::warn!(
                "refused to connect to {}:{} ({}): not a configured origin, and outside the upstream address policy ({}; ROXPI_UPSTREAM_ALLOW)",
                origin.0,
                origin.1,
                addrs.join(", "),
                self.policy.describe()
            );
            return Err(ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "address outside the upstream address policy",
            )));
        }
        Ok(kept)
    }
}

impl HttpOrigin {
    // Long: builds the one agent: roots, proxy, timeouts, trust and address policy, in order.
    pub fn new(settings: &HttpParams) -> anyhow::Result<HttpOrigin> {
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
        let proxy = settings.proxy.as_ref().map(proxy_of).transpose()?;
        let sockets = crate::socket_budget::upstream_sockets(crate::http::raise_nofile_limit());
        let tls = TlsConfig::builder()
            .root_certs(roots)
            .disable_verification(settings.disable_tls_verification)
            .build();
        let config = ureq::Agent::config_builder()
            // HTTP_PROXY, HTTPS_PROXY and ALL_PROXY from the environment
            // are ignored (a proxy resolving targets itself would skip the
            // address policy); ROXPI_UPSTREAM_PROXY is used, with every
            // target resolved and checked here before the CONNECT.
            .proxy(proxy)
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(settings.connect_timeout))
            .timeout_per_read(Some(settings.read_timeout))
            .timeout_recv_response(Some(settings.read_timeout))
            // Idle connections hold descriptors too: a quarter of the
            // upstream budget.
            .max_idle_connections((sockets / 4).max(2))
            .max_idle_connections_per_host((sockets / 4).max(2))
            .user_agent(concat!("roxpi/", env!("CARGO_PKG_VERSION")))
            .accept_encoding("")
            .tls_config(tls)
            .build();
        let refused = Arc::new(AtomicU64::new(0));
        let mut fixed = BTreeSet::new();
        // The default route's indexes, the proxy and the bucket are
        // trusted by origin; the [[route]]s' indexes below (and on SIGHUP).
        let proxy = settings.proxy.as_ref();
        for url in settings.indexes.iter().chain(proxy) {
            fixed.extend(origin_of(url));
        }
        if let Some((endpoint, bucket)) = &settings.bucket {
            if let Some((host, port)) = origin_of(endpoint) {
                // Virtual-hosted style puts the bucket in front.
                fixed.insert((format!("{}.{host}", bucket.to_ascii_lowercase()), port));
                fixed.insert((host, port));
            }
        }
        let trusted = Arc::new(Trusted {
            fixed,
            routes: Default::default(),
        });
        let policy = match &settings.allow {
            None => AddressPolicy::any(),
            Some(classes) => AddressPolicy::new(classes.iter().copied()),
        };
        if !settings.offline {
            log::info!(
                "upstream connections may reach the configured origins and {}{}",
                policy.describe(),
                match proxy {
                    Some(p) => format!(", through the proxy {}", SafeUrl::new(p)),
                    None => String::new(),
                }
            );
        }
        let resolver = PolicyResolver {
            inner: DefaultResolver::default(),
            policy: policy.clone(),
            trusted: Arc::clone(&trusted),
            refused: Arc::clone(&refused),
        };
        let agent = ureq::Agent::with_parts(config, DefaultConnector::default(), resolver);
        let pages = PageBudget::standard();
        let upstream = HttpOrigin {
            agent,
            offline: settings.offline,
            pages,
            refused,
            trusted,
            policy,
            proxied: settings.proxy.is_some(),
            page_sockets: SocketBudget::new((sockets / 2).max(2)),
            file_sockets: SocketBudget::new((sockets - sockets / 2).max(2)),
            socket_wait: settings.connect_timeout,
            breakers: super::breaker::Breakers::new(settings.breaker),
        };
        log::debug!(
            "upstream connections: {} for pages, {} for files, {} idle",
            upstream.page_sockets.cap(),
            upstream.file_sockets.cap(),
            (sockets / 4).max(2)
        );
        upstream.trust_route_indexes(&settings.route_indexes);
        Ok(upstream)
    }

    /// Through a proxy, which resolves names itself: `url`'s host is
    /// resolved here and every address it has must be allowed, unless it
    /// is a configured origin, before the proxy is asked to CONNECT to it.
    /// (A name that answers differently to the proxy a moment later is
    /// the proxy's to refuse.)
    fn check_proxied(&self, url: &Url) -> Result<(), OriginError> {
        let origin = origin_of(url).ok_or_else(|| OriginError::garbage(url, "no host"))?;
        if self.trusted.contains(&origin) {
            return Ok(());
        }
        let addrs: Vec<std::net::SocketAddr> =
            std::net::ToSocketAddrs::to_socket_addrs(&(origin.0.as_str(), origin.1))
                .map_err(|e| OriginError::connect(url, format!("cannot resolve: {}", e.kind())))?
                .collect();
        if !addrs.is_empty() && addrs.iter().all(|a| self.policy.allows(a.ip())) {
            return Ok(());
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
        log::warn!(
            "refused to ask the proxy for {}:{} ({}): not a configured origin, and outside the upstream address policy ({}; ROXPI_UPSTREAM_ALLOW)",
            origin.0,
            origin.1,
            shown.join(", "),
            self.policy.describe()
        );
        Err(OriginError::forbidden(url))
    }

    /// The shared agent (the S3 client sends through it too: same TLS
    /// settings, address policy and timeouts).
    pub fn agent(&self) -> ureq::Agent {
        self.agent.clone()
    }

    /// A GET that follows redirects itself (credentials only to `index`'s
    /// origin).
    fn get(
        &self,
        index: &Index,
        url: &Url,
        headers: &[(&str, &str)],
        sockets: &Arc<SocketBudget>,
    ) -> Result<(Url, ureq::http::Response<ureq::Body>, Permit), OriginError> {
        if self.offline {
            return Err(OriginError::offline(url));
        }
        let permit = sockets
            .acquire(self.socket_wait)
            .ok_or_else(|| OriginError::busy(url))?;
        let mut current = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            if self.proxied {
                self.check_proxied(&current)?;
            }
            let mut req = self.agent.get(current.as_str());
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(auth) = index.auth_for(&current) {
                req = req.header("Authorization", auth);
            }
            let host = origin_of(&current);
            if let Some(h) = &host {
                if let Admit::Refuse { since } = self.breakers.admit(h, Instant::now()) {
                    return Err(OriginError::down(
                        &current,
                        since,
                        self.breakers.params().probe_every,
                    ));
                }
            }
            let asked = Instant::now();
            let called = req.call().map_err(|e| to_error(&current, e));
            if let Some(h) = &host {
                let reached = called.as_ref().err().is_none_or(|e| !e.is_unreachable());
                self.breakers.record(h, reached, Instant::now());
                if called.is_ok() {
                    self.breakers.timed(h, asked.elapsed());
                }
            }
            let resp = called?;
            let status = resp.status().as_u16();
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                let next = resp
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| current.join(l).ok())
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        OriginError::garbage(
                            &current,
                            format!("redirect {status} without a usable Location"),
                        )
                    })?;
                log::debug!(
                    "upstream {} redirects to {}",
                    SafeUrl::new(&current),
                    SafeUrl::new(&next)
                );
                current = next;
                continue;
            }
            return Ok((current, resp, permit));
        }
        Err(OriginError::garbage(url, "too many redirects"))
    }
}

/// The ureq proxy for `ROXPI_UPSTREAM_PROXY` (CONNECT).
fn proxy_of(url: &Url) -> anyhow::Result<ureq::Proxy> {
    let protocol = match url.scheme() {
        "http" => ureq::ProxyProtocol::Http,
        "https" => ureq::ProxyProtocol::Https,
        other => anyhow::bail!("ROXPI_UPSTREAM_PROXY: unsupported proxy scheme {other:?}"),
    };
    let (host, port) = origin_of(url)
        .ok_or_else(|| anyhow::anyhow!("ROXPI_UPSTREAM_PROXY: no host in {}", SafeUrl::new(url)))?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    // The target's name goes to the proxy (ureq 3.5.2 writes a resolved
    // target as `ip:port:port`); `HttpOrigin::get` resolves and checks it
    // first.
    let mut b = ureq::Proxy::builder(protocol).host(&host).port(port);
    if !url.username().is_empty() {
        b = b.username(&decode(url.username()));
    }
    if let Some(p) = url.password() {
        b = b.password(&decode(p));
    }
    b.build()
        .map_err(|e| anyhow::anyhow!("ROXPI_UPSTREAM_PROXY {}: {e}", SafeUrl::new(url)))
}

impl Origin for HttpOrigin {
    fn refused_addresses(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn breakers(&self) -> Vec<super::breaker::HostState> {
        self.breakers.states()
    }

    fn upstream_down(&self) -> Option<String> {
        self.breakers.down_now()
    }

    fn upstream_latencies(&self) -> Vec<(String, std::time::Duration)> {
        self.breakers.latencies()
    }

    fn breaker_transitions(&self) -> u64 {
        self.breakers
            .transitions
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn trust_route_indexes(&self, urls: &[Url]) {
        let origins = urls.iter().filter_map(origin_of).collect();
        *crate::write(&self.trusted.routes) = origins;
    }

    fn fetch_project(
        &self,
        index: &Index,
        name: &ProjectName,
        known: &Validators,
    ) -> Result<PageFetch, OriginError> {
        let url = index.project_url(name);
        let started = std::time::Instant::now();
        let mut headers = vec![
            ("Accept", PAGE_ACCEPT),
            ("Accept-Encoding", "gzip, deflate"),
        ];
        if let Some(etag) = &known.etag {
            headers.push(("If-None-Match", etag.as_str()));
        }
        if let Some(lm) = &known.last_modified {
            headers.push(("If-Modified-Since", lm.as_str()));
        }
        let (final_url, resp, _permit) = self.get(index, &url, &headers, &self.page_sockets)?;
        let status = resp.status().as_u16();
        log::debug!(
            "upstream GET {} -> {status} in {:?}",
            SafeUrl::new(&final_url),
            started.elapsed()
        );
        match status {
            200 => {}
            304 if known.can_revalidate() => return Ok(PageFetch::NotModified),
            404 | 410 => return Ok(PageFetch::NotFound),
            s => return Err(OriginError::status(&final_url, s)),
        }
        let validators = validators_of(resp.headers());
        let (format, body, _slot) = read_page(&final_url, resp, &self.pages)?;
        let page = parse_page(&body, format, &final_url)
            .map_err(|e| OriginError::garbage(&final_url, e.to_string()))?;
        Ok(PageFetch::Found(
            page,
            Box::new(RawPage {
                format,
                url: final_url,
                body,
                validators,
            }),
        ))
    }

    fn fetch_list(&self, index: &Index) -> Result<Option<ProjectList>, OriginError> {
        let (final_url, resp, _permit) = self.get(
            index,
            &index.url,
            &[
                ("Accept", PAGE_ACCEPT),
                ("Accept-Encoding", "gzip, deflate"),
            ],
            &self.page_sockets,
        )?;
        match resp.status().as_u16() {
            200 => {}
            404 | 410 => return Ok(None),
            s => return Err(OriginError::status(&final_url, s)),
        }
        let (format, body, _slot) = read_page(&final_url, resp, &self.pages)?;
        let list = body.clone();
        crate::page_budget::on_parse_thread(move || parse_project_list(&list, format))
            .map(Some)
            .map_err(|e| OriginError::garbage(&final_url, e.to_string()))
    }

    fn open_file(
        &self,
        index: &Index,
        url: &Url,
        range: Option<&str>,
    ) -> Result<Streamed, OriginError> {
        let mut headers = vec![("Accept-Encoding", "identity")];
        if let Some(r) = range {
            headers.push(("Range", r));
        }
        let (final_url, resp, permit) = self.get(index, url, &headers, &self.file_sockets)?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_length = header("content-length").and_then(|v| v.trim().parse().ok());
        let content_range = header("content-range");
        // The body holds the connection, and so its permit.
        let body = Box::new(Held {
            body: resp.into_body().into_reader(),
            _permit: permit,
        });
        Ok(Streamed {
            status,
            content_length,
            content_range,
            final_url,
            body,
        })
    }
}

/// A file body with the socket permit of its connection.
struct Held<R> {
    body: R,
    _permit: Permit,
}

impl<R: Read> Read for Held<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.body.read(buf)
    }
}

/// Reads an index page body, decoding gzip/deflate, within the page
/// budget: past `SMALL_PAGE` it holds a big-page slot (returned, to keep
/// until the page is parsed), past `max_page` it is refused.
fn read_page<'b>(
    url: &Url,
    resp: ureq::http::Response<ureq::Body>,
    budget: &'b PageBudget,
) -> Result<(Format, Bytes, Option<BigSlot<'b>>), OriginError> {
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
            return Err(OriginError::garbage(
                url,
                format!("unsupported Content-Encoding {other}"),
            ));
        }
    };
    let mut body = PageBuf::default();
    let mut slot = None;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                return Err(OriginError::timeout(url))
            }
            Err(e) => {
                return Err(OriginError::garbage(
                    url,
                    format!("reading the page failed: {e}"),
                ))
            }
        };
        let len = (body.len() + n) as u64;
        if len > budget.max_page {
            log::warn!(
                "page {} is larger than {} bytes decoded: refused",
                SafeUrl::new(url),
                budget.max_page
            );
            return Err(OriginError::garbage(
                url,
                format!("page larger than {} bytes decoded", budget.max_page),
            ));
        }
        if len > SMALL_PAGE && slot.is_none() {
            slot = Some(budget.big_slot().ok_or_else(|| OriginError::busy(url))?);
        }
        body.extend(&chunk[..n], budget.max_page)
            .map_err(|e| OriginError::garbage(url, format!("cannot hold the page: {e}")))?;
    }
    Ok((format, body.into_bytes(), slot))
}

/// Parses a project page on the parse thread (`page_budget::on_parse_thread`).
pub fn parse_page(
    body: &Bytes,
    format: Format,
    url: &Url,
) -> Result<crate::pypi::ProjectPage, crate::pypi::ParseError> {
    let (body, url) = (body.clone(), url.clone());
    crate::page_budget::on_parse_thread(move || parse_project_page(&body, format, &url))
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

/// A page response's validators (values that are not plain text are
/// ignored: they could not be sent back anyway).
fn validators_of(headers: &ureq::http::HeaderMap) -> Validators {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    Validators {
        etag: text("etag"),
        last_modified: text("last-modified"),
        serial: text("x-pypi-last-serial").and_then(|v| v.parse().ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_are_named() {
        let url = Url::parse("http://files.invalid/x.whl").unwrap();
        let io = |e: std::io::Error| to_error(&url, ureq::Error::Io(e));
        let cases = [
            (
                io(std::io::Error::from_raw_os_error(24)),
                "no file descriptor free",
            ),
            (
                io(std::io::Error::from_raw_os_error(23)),
                "no file descriptor free",
            ),
            (
                io(std::io::ErrorKind::PermissionDenied.into()),
                "address policy",
            ),
            (io(std::io::ErrorKind::TimedOut.into()), "timed out"),
            (to_error(&url, ureq::Error::HostNotFound), "host not found"),
        ];
        for (e, want) in cases {
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn origins_compare_host_and_port() {
        let o = |u: &str| origin_of(&Url::parse(u).unwrap());
        assert_eq!(
            o("http://127.0.0.1:3141/simple/"),
            Some(("127.0.0.1".into(), 3141))
        );
        assert_eq!(
            o("https://PyPI.org/simple/"),
            Some(("pypi.org".into(), 443))
        );
        assert_eq!(o("http://[::1]/"), Some(("::1".into(), 80)));
        assert_eq!(o("http://2130706433:80/"), o("http://127.0.0.1/"));
        assert_ne!(o("http://127.0.0.1:22/"), o("http://127.0.0.1:3141/"));
    }
}
