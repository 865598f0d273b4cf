// Size: one table of every setting and its validation; splitting it would scatter the one precedence rule.
//! Every setting once: its flag, its `ROXPI_*` variable, its default and its
//! help text (the `Cli` declaration), the proxpi/groxpi aliases, and the
//! validation into typed values (`Settings`). Invalid values stop startup
//! with a message naming the setting and the accepted form.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::pypi::Strategy;
use crate::redact::SafeUrl;

mod cli;
pub mod file;
mod sources;

pub use cli::{Cli, Command};

/// PyPI's simple index, the default upstream.
pub const PYPI: &str = "https://pypi.org/simple/";

/// Every `ROXPI_*` variable with its aliases (proxpi's `PROXPI_*`, then
/// groxpi's `GROXPI_*`), in order of precedence: the one table that alias
/// resolution, the empty-means-unset rule and `--help` are derived from.
pub const SETTINGS: &[(&str, &[&str])] = &[
    ("ROXPI_BIND", &[]),
    ("ROXPI_INDEX_URL", &["PROXPI_INDEX_URL", "GROXPI_INDEX_URL"]),
    ("ROXPI_INDEX_TTL", &["PROXPI_INDEX_TTL", "GROXPI_INDEX_TTL"]),
    (
        "ROXPI_EXTRA_INDEX_URLS",
        &["PROXPI_EXTRA_INDEX_URLS", "GROXPI_EXTRA_INDEX_URLS"],
    ),
    (
        "ROXPI_EXTRA_INDEX_TTLS",
        &[
            "PROXPI_EXTRA_INDEX_TTLS",
            "PROXPI_EXTRA_INDEX_TTL",
            "GROXPI_EXTRA_INDEX_TTLS",
        ],
    ),
    ("ROXPI_INDEX_STRATEGY", &[]),
    ("ROXPI_CONFIG", &[]),
    ("ROXPI_MIN_RELEASE_AGE", &[]),
    ("ROXPI_COOLDOWN_MODE", &[]),
    ("ROXPI_UNTIMED", &[]),
    ("ROXPI_ADMIN_TOKEN", &[]),
    ("ROXPI_STALE_AFTER", &[]),
    ("ROXPI_REQUEST_DEADLINE", &[]),
    ("ROXPI_STALE_WHILE_REVALIDATE", &[]),
    ("ROXPI_BREAKER_FAILURES", &[]),
    ("ROXPI_BREAKER_PROBE", &[]),
    ("ROXPI_CLIENT_REFRESH", &[]),
    ("ROXPI_SYNTHESIZE_METADATA", &[]),
    ("ROXPI_INDEX_CACHE_SIZE", &[]),
    (
        "ROXPI_CONNECT_TIMEOUT",
        &["PROXPI_CONNECT_TIMEOUT", "GROXPI_CONNECT_TIMEOUT"],
    ),
    (
        "ROXPI_READ_TIMEOUT",
        &["PROXPI_READ_TIMEOUT", "GROXPI_READ_TIMEOUT"],
    ),
    (
        "ROXPI_DOWNLOAD_TIMEOUT",
        &["PROXPI_DOWNLOAD_TIMEOUT", "GROXPI_DOWNLOAD_TIMEOUT"],
    ),
    (
        "ROXPI_CACHE_SIZE",
        &["PROXPI_CACHE_SIZE", "GROXPI_CACHE_SIZE"],
    ),
    ("ROXPI_CACHE_DIR", &["PROXPI_CACHE_DIR", "GROXPI_CACHE_DIR"]),
    (
        "ROXPI_DISABLE_INDEX_SSL_VERIFICATION",
        &[
            "PROXPI_DISABLE_INDEX_SSL_VERIFICATION",
            "GROXPI_DISABLE_INDEX_SSL_VERIFICATION",
        ],
    ),
    ("ROXPI_CA_FILE", &[]),
    (
        "ROXPI_BINARY_FILE_MIME_TYPE",
        &[
            "PROXPI_BINARY_FILE_MIME_TYPE",
            "GROXPI_BINARY_FILE_MIME_TYPE",
        ],
    ),
    ("ROXPI_OFFLINE", &[]),
    ("ROXPI_UPSTREAM_ALLOW", &[]),
    ("ROXPI_UPSTREAM_PROXY", &[]),
    ("ROXPI_STORAGE", &[]),
    ("ROXPI_S3_BUCKET", &[]),
    ("ROXPI_S3_PREFIX", &[]),
    (
        "ROXPI_S3_ENDPOINT",
        &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
    ),
    ("ROXPI_S3_REGION", &["AWS_REGION", "AWS_DEFAULT_REGION"]),
    ("ROXPI_S3_PATH_STYLE", &[]),
    ("ROXPI_WORKERS", &[]),
    (
        "ROXPI_LOG",
        &["PROXPI_LOGGING_LEVEL", "GROXPI_LOGGING_LEVEL"],
    ),
    ("ROXPI_LOG_FORMAT", &["GROXPI_LOG_FORMAT"]),
    ("ROXPI_TLS_CERT", &[]),
    ("ROXPI_TLS_KEY", &[]),
    ("ROXPI_TLS_BIND", &[]),
    ("ROXPI_PREFETCH", &[]),
    ("ROXPI_PREFETCH_PLATFORMS", &[]),
    ("ROXPI_PREFETCH_PYTHONS", &[]),
    ("ROXPI_UPLOAD_TOKEN", &[]),
    ("ROXPI_UPLOAD_MAX", &[]),
    ("ROXPI_HOSTED_DIR", &[]),
    ("ROXPI_HOSTED_MAX", &[]),
    ("ROXPI_HOSTED_SYNC", &[]),
    ("ROXPI_READ_TOKEN", &[]),
    ("ROXPI_METRICS_TOKEN", &[]),
];

/// Which value each `ROXPI_*` variable should take from the environment
/// (pure): an empty variable is unset; an unset one takes its first
/// non-empty alias. `None` means "remove the variable".
pub fn resolve_aliases(
    get: impl Fn(&str) -> Option<String>,
) -> Vec<(&'static str, Option<String>)> {
    let nonempty = |name: &str| get(name).filter(|v| !v.trim().is_empty());
    SETTINGS
        .iter()
        .map(|(name, aliases)| {
            let value = nonempty(name).or_else(|| aliases.iter().find_map(|a| nonempty(a)));
            (*name, value)
        })
        .collect()
}

/// The alias list for `--help`, from `SETTINGS`.
pub fn alias_help() -> String {
    let mut out = format!(
        "{}\n\nAliases: proxpi's PROXPI_* and groxpi's GROXPI_* variable names are \
         accepted:\n",
        cli::PRECEDENCE
    );
    for (name, aliases) in SETTINGS.iter().filter(|(_, a)| !a.is_empty()) {
        out.push_str(&format!("  {name}: {}\n", aliases.join(", ")));
    }
    out
}

impl Cli {
    /// Parses the command line, with the alias list in `--help`.
    pub fn parse_args() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command().after_help(alias_help()).get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// Applies `resolve_aliases` to the process environment. Call before any
/// thread starts (it edits the environment).
pub fn apply_env_aliases() {
    for (name, value) in resolve_aliases(|n| std::env::var(n).ok()) {
        match value {
            Some(v) => std::env::set_var(name, v),
            None => std::env::remove_var(name),
        }
    }
}

pub use crate::origin::IndexConfig;

/// The strategies, as an error message lists them.
const STRATEGIES: &str = "merge or first-index";

/// `merge` or `first-index` (also `first_index`, groxpi's spelling): one
/// parser for `ROXPI_INDEX_STRATEGY` and `[[route]] strategy`.
fn parse_strategy(s: &str) -> Option<Strategy> {
    match s.trim() {
        "merge" => Some(Strategy::Merge),
        "first-index" | "first_index" => Some(Strategy::FirstIndex),
        _ => None,
    }
}

/// A secret setting: never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// An extra route (`[[route]]` of ROXPI_CONFIG): a path prefix with its
/// own indexes and strategy.
#[derive(Clone, Debug)]
pub struct RouteConfig {
    /// Starts and ends with `/`: `/pytorch-cu121/simple/`.
    pub prefix: String,
    pub indexes: Vec<IndexConfig>,
    pub strategy: Strategy,
    /// The route's own policy; `None`: the site's.
    pub policy: Option<std::sync::Arc<crate::policy::Policy>>,
    /// Reading the route needs this token (`read-token`).
    pub read_token: Option<crate::access::Token>,
    /// Hosted indexes listed on the route (`hosted = ["local"]`).
    pub hosted: Vec<String>,
}

/// Which client requests force a page refresh.
/// Where files are kept (`ROXPI_STORAGE`).
pub use crate::storage::Mode as StorageMode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientRefresh {
    /// `Cache-Control: no-cache` or `Pragma: no-cache`.
    NoCache,
    /// Never: pages refresh by their TTL only.
    Off,
    /// Also `max-age=0` (roxpi before 0.2; pip 24–26.0 send it always).
    Any,
}

/// HTTPS: the PEM files, and the second address if plain HTTP stays on
/// the listen address.
#[derive(Clone, Debug)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub bind: Option<SocketAddr>,
}

/// ROXPI_PREFETCH: the lock files (the globs expanded at startup) and the
/// targets.
#[derive(Clone, Debug)]
pub struct Prefetch {
    pub locks: Vec<PathBuf>,
    pub targets: Vec<crate::prefetch::Target>,
}

/// Validated settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub bind: SocketAddr,
    /// Root first, then the extras.
    pub indexes: Vec<IndexConfig>,
    pub strategy: Strategy,
    pub stale_after: Duration,
    pub stale_while_revalidate: Duration,
    pub client_refresh: ClientRefresh,
    pub synthesize_metadata: bool,
    pub index_cache_size: u64,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// proxpi's redirect of uncached files; `None`: never redirect.
    pub download_timeout: Option<Duration>,
    /// The longest a request waits for an upstream answer before a 504.
    pub request_deadline: Duration,
    pub disable_tls_verification: bool,
    pub ca_file: Option<PathBuf>,
    pub binary_file_mime_type: bool,
    pub offline: bool,
    /// When an upstream host's circuit breaker opens, and how often it probes.
    pub breaker: crate::origin::breaker::BreakerParams,
    /// ROXPI_PREFETCH: lock files to prefetch at startup.
    pub prefetch: Option<Prefetch>,
    /// ROXPI_TLS_CERT / _KEY / _BIND.
    pub tls: Option<Tls>,
    pub cache_size: u64,
    pub cache_dir: PathBuf,
    pub storage: StorageMode,
    /// The bucket, for `s3` and `tiered`.
    pub s3: Option<crate::storage::s3::S3Settings>,
    pub workers: usize,
    /// Extra address classes upstream connections may reach.
    pub upstream_allow: Vec<crate::address_policy::AddrClass>,
    /// `ROXPI_UPSTREAM_ALLOW=any`: no address policy.
    pub upstream_allow_any: bool,
    /// `ROXPI_UPSTREAM_PROXY`.
    pub upstream_proxy: Option<Url>,
    pub log_spec: String,
    pub log_json: bool,
    /// ROXPI_CONFIG, for reloads.
    pub config_file: Option<PathBuf>,
    /// The site's policy (cooldown, yanks, deny lists).
    pub policy: std::sync::Arc<crate::policy::Policy>,
    /// Extra routes, beside `/index/` and `/simple/`.
    pub routes: Vec<RouteConfig>,
    /// Needed by the invalidation DELETEs when set.
    pub admin_token: Option<Secret>,
    /// Hosted indexes (uploads), if any.
    pub hosting: Option<crate::hosted::HostingConfig>,
    /// Reading the default route (`/index/`, `/simple/`, `/`) needs this
    /// token (ROXPI_READ_TOKEN).
    pub read_token: Option<crate::access::Token>,
    /// `/metrics` needs this token (ROXPI_METRICS_TOKEN).
    pub metrics_token: Option<crate::access::Token>,
}

/// A setting with a value it cannot take.
#[derive(Debug, thiserror::Error)]
#[error("invalid {setting} value {value:?}: expected {expected}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub value: String,
    pub expected: String,
}

fn err(setting: &'static str, value: &str, expected: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        value: value.to_owned(),
        expected: expected.into(),
    }
}

impl Settings {
    /// What the startup log says about the settings in force: the mode, the
    /// storage, the config file and its rule counts, TLS.
    pub fn startup_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.offline {
            lines.push("offline mode (ROXPI_OFFLINE): no upstream is contacted; only what is cached is served".to_owned());
        }
        let cap = crate::human::human_bytes(self.cache_size);
        let dir = self.cache_dir.display();
        lines.push(match (self.storage, &self.s3) {
            (StorageMode::Local, _) if self.cache_size == 0 => {
                "storage: none (ROXPI_CACHE_SIZE=0): files are streamed through, nothing is kept"
                    .to_owned()
            }
            (StorageMode::Local, _) => format!("storage: local, {dir}, cap {cap}"),
            (StorageMode::S3, Some(s3)) => format!(
                "storage: s3, bucket {:?} at {} (the cache dir {dir} stages only)",
                s3.bucket, s3.endpoint
            ),
            (StorageMode::Tiered, Some(s3)) => format!(
                "storage: tiered, {dir} (cap {cap}) in front of bucket {:?} at {}",
                s3.bucket, s3.endpoint
            ),
            (mode, None) => format!("storage: {mode:?} without a bucket"),
        });
        if let Some(h) = &self.hosting {
            let names: Vec<String> = h
                .indexes
                .iter()
                .map(|i| format!("{} (uploads to /hosted/{}/)", i.name, i.name))
                .collect();
            lines.push(format!(
                "hosted: {} in {}, uploads up to {}",
                names.join(", "),
                h.dir.display(),
                crate::human::human_bytes(h.upload_max)
            ));
        }
        lines.push(match &self.config_file {
            None => "config file: none (ROXPI_CONFIG unset)".to_owned(),
            Some(path) => {
                let p = &self.policy;
                format!(
                    "config file: {} ({} indexes, {} routes; policy: cooldown {}, {} yank rules, {} deny rules)",
                    path.display(),
                    self.indexes.len(),
                    self.routes.len(),
                    if p.cooldown.min_age.is_zero() && p.cooldown.overrides.is_empty() {
                        "off".to_owned()
                    } else {
                        format!("{:?}", p.cooldown.min_age)
                    },
                    p.yanks.len(),
                    p.deny.len()
                )
            }
        });
        if let Some(p) = &self.prefetch {
            lines.push(format!(
                "prefetch (ROXPI_PREFETCH): {} lock files, {} in the background; /ready reports the progress",
                p.locks.len(),
                if p.targets.is_empty() {
                    "every file".to_owned()
                } else {
                    format!("{} targets", p.targets.len())
                }
            ));
        }
        lines.push(match &self.tls {
            None => {
                "TLS: off (plain HTTP; set ROXPI_TLS_CERT and ROXPI_TLS_KEY for HTTPS)".to_owned()
            }
            Some(t) => format!(
                "TLS: on {} with {} and {} (reloaded on SIGHUP)",
                match t.bind {
                    None => format!("the listen address {}", self.bind),
                    Some(b) => format!("{b}, plain HTTP stays on {}", self.bind),
                },
                t.cert.display(),
                t.key.display()
            ),
        });
        lines
    }

    /// What the HTTP origin takes from the settings.
    pub fn http_params(&self) -> crate::origin::http::HttpParams {
        crate::origin::http::HttpParams {
            ca_file: self.ca_file.clone(),
            proxy: self.upstream_proxy.clone(),
            disable_tls_verification: self.disable_tls_verification,
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            indexes: self.indexes.iter().map(|i| i.url.clone()).collect(),
            route_indexes: self
                .routes
                .iter()
                .flat_map(|r| r.indexes.iter().map(|i| i.url.clone()))
                .collect(),
            bucket: self
                .s3
                .as_ref()
                .map(|s3| (s3.endpoint.clone(), s3.bucket.clone())),
            allow: (!self.upstream_allow_any).then(|| self.upstream_allow.clone()),
            offline: self.offline,
            breaker: self.breaker,
        }
    }

    // Long: the list of settings, each parsed where it is assigned.
    /// The settings from flags and variables (`cli`) and the file they
    /// name (`ROXPI_CONFIG`). Flags and variables win over the file; the
    /// indexes are named in one place only (see `sources::default_indexes`).
    pub fn from_cli(cli: &Cli) -> Result<Settings, ConfigError> {
        let bind = cli.bind.trim().parse().map_err(|_| {
            err(
                "ROXPI_BIND / --bind",
                &cli.bind,
                "HOST:PORT, e.g. 0.0.0.0:5000",
            )
        })?;
        let root_ttl = parse_seconds(&cli.index_ttl)
            .ok_or_else(|| err("ROXPI_INDEX_TTL", &cli.index_ttl, SECONDS_RANGE))?;
        let (config_file, file, file_path) = sources::read_file(cli)?;
        let indexes = sources::default_indexes(cli, &file, &file_path, root_ttl)?;
        let overrides = policy_overrides(cli)?;
        let policy = file::build_policy(&file.policy(), &overrides, &file_path).map_err(|e| {
            ConfigError {
                setting: "ROXPI_CONFIG",
                value: e.path.clone(),
                expected: e.message,
            }
        })?;
        let routes = sources::routes(&file, &file_path, &indexes, &overrides, root_ttl)?;
        let strategy = parse_strategy(&cli.index_strategy)
            .ok_or_else(|| err("ROXPI_INDEX_STRATEGY", &cli.index_strategy, STRATEGIES))?;
        let secs = |name: &'static str, v: &str| {
            parse_seconds(v).ok_or_else(|| err(name, v, SECONDS_RANGE))
        };
        let boolean = |name: &'static str, v: &str| {
            parse_bool(v).ok_or_else(|| err(name, v, "1/true/yes/on or 0/false/no/off"))
        };
        let (upstream_allow, upstream_allow_any) = sources::upstream_allow(cli)?;
        let (storage, s3, cache_size) = sources::storage(cli)?;
        let mut settings = Settings {
            bind,
            indexes,
            strategy,
            stale_after: secs("ROXPI_STALE_AFTER", &cli.stale_after)?,
            stale_while_revalidate: secs(
                "ROXPI_STALE_WHILE_REVALIDATE",
                &cli.stale_while_revalidate,
            )?,
            synthesize_metadata: boolean("ROXPI_SYNTHESIZE_METADATA", &cli.synthesize_metadata)?,
            client_refresh: sources::client_refresh(cli)?,
            index_cache_size: parse_size(&cli.index_cache_size).ok_or_else(|| {
                err(
                    "ROXPI_INDEX_CACHE_SIZE",
                    &cli.index_cache_size,
                    "bytes, e.g. 64M or 1G",
                )
            })?,
            connect_timeout: secs("ROXPI_CONNECT_TIMEOUT", &cli.connect_timeout)?,
            read_timeout: secs("ROXPI_READ_TIMEOUT", &cli.read_timeout)?,
            download_timeout: match cli.download_timeout.trim() {
                "" => None,
                v => Some(secs("ROXPI_DOWNLOAD_TIMEOUT", v)?),
            },
            request_deadline: secs("ROXPI_REQUEST_DEADLINE", &cli.request_deadline)?
                .clamp(Duration::from_millis(100), Duration::from_secs(24 * 3600)),
            disable_tls_verification: boolean(
                "ROXPI_DISABLE_INDEX_SSL_VERIFICATION",
                &cli.disable_index_ssl_verification,
            )?,
            ca_file: sources::ca_file(cli)?,
            binary_file_mime_type: boolean(
                "ROXPI_BINARY_FILE_MIME_TYPE",
                &cli.binary_file_mime_type,
            )?,
            cache_size,
            storage,
            s3,
            cache_dir: cache_dir(&cli.cache_dir, |n| std::env::var_os(n))?,
            offline: boolean("ROXPI_OFFLINE", &cli.offline)?,
            breaker: sources::breaker(cli)?,
            prefetch: sources::prefetch(cli)?,
            tls: sources::tls(cli)?,
            workers: sources::workers(cli)?,
            upstream_allow,
            upstream_allow_any,
            upstream_proxy: sources::upstream_proxy(cli)?,
            log_spec: translate_log_level(&cli.log),
            log_json: sources::log_json(cli)?,
            config_file,
            policy: std::sync::Arc::new(policy),
            routes,
            admin_token: Some(cli.admin_token.trim())
                .filter(|t| !t.is_empty())
                .map(|t| Secret(t.to_owned())),
            hosting: None,
            read_token: sources::token_of(Some(&cli.read_token)),
            metrics_token: sources::token_of(Some(&cli.metrics_token)),
        };
        settings.hosting = sources::hosting(
            cli,
            &file,
            &file_path,
            &settings.cache_dir,
            settings.request_deadline,
        )?;
        sources::check_route_hosting(&settings.routes, settings.hosting.as_ref(), &file_path)?;
        Ok(settings)
    }
}

/// The policy settings given as flags or variables, each checked here so
/// that an error names that one setting and its value.
fn policy_overrides(cli: &Cli) -> Result<file::PolicyOverrides, ConfigError> {
    let given = |v: &str| Some(v.trim()).filter(|v| !v.is_empty()).map(str::to_owned);
    let over = file::PolicyOverrides {
        min_release_age: given(&cli.min_release_age),
        cooldown_mode: given(&cli.cooldown_mode),
        untimed: given(&cli.untimed),
    };
    if let Some(age) = &over.min_release_age {
        crate::policy::parse_age(age).map_err(|e| {
            err(
                "ROXPI_MIN_RELEASE_AGE",
                age,
                format!("a duration like 7d, 12h or 0, at most 100y ({e})"),
            )
        })?;
    }
    if let Some(mode) = over.cooldown_mode.as_deref() {
        if !matches!(mode, "hide" | "deny") {
            return Err(err("ROXPI_COOLDOWN_MODE", mode, "hide or deny"));
        }
    }
    if let Some(untimed) = over.untimed.as_deref() {
        if !matches!(untimed, "allow" | "first-seen" | "deny") {
            return Err(err("ROXPI_UNTIMED", untimed, "allow, first-seen or deny"));
        }
    }
    Ok(over)
}

/// The bucket settings, with credentials from the standard `AWS_*`
/// variables (read through `env`).
pub fn s3_settings(
    cli: &Cli,
    env: impl Fn(&str) -> Option<String>,
) -> Result<crate::storage::s3::S3Settings, ConfigError> {
    let nonempty = |n: &str| env(n).filter(|v| !v.trim().is_empty());
    let bucket = cli.s3_bucket.trim();
    if bucket.is_empty() {
        return Err(err(
            "ROXPI_S3_BUCKET",
            "",
            "a bucket name (ROXPI_STORAGE=s3 and tiered need one)",
        ));
    }
    let region = match cli.s3_region.trim() {
        "" => "us-east-1".to_owned(),
        r => r.to_owned(),
    };
    let endpoint = match cli.s3_endpoint.trim() {
        "" => format!("https://s3.{region}.amazonaws.com"),
        e => e.to_owned(),
    };
    let endpoint = Url::parse(&endpoint)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .filter(|u| u.username().is_empty() && u.password().is_none())
        .ok_or_else(|| {
            err(
                "ROXPI_S3_ENDPOINT",
                &SafeUrl::text(&endpoint),
                "an http(s) URL without credentials, e.g. http://127.0.0.1:9000",
            )
        })?;
    let key_id = nonempty("AWS_ACCESS_KEY_ID").ok_or_else(|| {
        err(
            "AWS_ACCESS_KEY_ID",
            "",
            "the access key id of the bucket's credentials (with AWS_SECRET_ACCESS_KEY)",
        )
    })?;
    let secret = nonempty("AWS_SECRET_ACCESS_KEY").ok_or_else(|| {
        err(
            "AWS_SECRET_ACCESS_KEY",
            "",
            "the secret key of the bucket's credentials (with AWS_ACCESS_KEY_ID)",
        )
    })?;
    Ok(crate::storage::s3::S3Settings {
        bucket: bucket.to_owned(),
        prefix: crate::storage::s3::normalize_prefix(&cli.s3_prefix),
        endpoint,
        region,
        path_style: parse_bool(&cli.s3_path_style).ok_or_else(|| {
            err(
                "ROXPI_S3_PATH_STYLE",
                &cli.s3_path_style,
                "1/true/yes/on or 0/false/no/off",
            )
        })?,
        key_id: key_id.trim().to_owned(),
        secret: secret.trim().to_owned(),
        token: nonempty("AWS_SESSION_TOKEN").map(|t| t.trim().to_owned()),
    })
}

/// The cache directory: the setting, else `$XDG_CACHE_HOME/roxpi`, else
/// `$HOME/.cache/roxpi`.
pub fn cache_dir(
    setting: &str,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<PathBuf, ConfigError> {
    let setting = setting.trim();
    if !setting.is_empty() {
        return Ok(PathBuf::from(setting));
    }
    let nonempty = |n: &str| env(n).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(xdg) = nonempty("XDG_CACHE_HOME") {
        return Ok(xdg.join("roxpi"));
    }
    if let Some(home) = nonempty("HOME") {
        return Ok(home.join(".cache").join("roxpi"));
    }
    Err(err(
        "ROXPI_CACHE_DIR",
        "",
        "a directory (neither XDG_CACHE_HOME nor HOME is set to derive one)",
    ))
}

fn split_list(s: &str) -> Vec<&str> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// An index URL: http(s), made to end in `/`.
pub fn parse_index_url(s: &str) -> Result<Url, String> {
    let mut url = Url::parse(s.trim()).map_err(|e| format!("an http(s) URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("an http(s) URL with a host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("an index URL without query or fragment".into());
    }
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

/// A route's index with the site's `[[index]]` guards: the `only` and
/// `never` of the entry with the same URL, and every name another site
/// index claims (its `only`) added to `never` — a name claimed by a
/// private index is never taken from another index on any route.
fn guarded(mut index: IndexConfig, site: &[IndexConfig]) -> IndexConfig {
    for s in site {
        if s.url == index.url {
            index.only.extend(s.only.iter().cloned());
            index.never.extend(s.never.iter().cloned());
        } else {
            index.never.extend(s.only.iter().cloned());
        }
    }
    index
}

/// What a setting in seconds accepts, for its error message.
const SECONDS_RANGE: &str = "seconds, from 0 to 1000000000 (about 31 years)";

/// Seconds as an integer or decimal (`1800`, `0.9`).
pub fn parse_seconds(s: &str) -> Option<Duration> {
    seconds(s.trim().parse().ok()?)
}

/// A number of seconds within 0..=1e9 (TOML gives floats: `1e300`, NaN
/// and negatives are refused, never passed to `Duration`, which panics).
pub fn seconds(v: f64) -> Option<Duration> {
    (v.is_finite() && (0.0..=1e9).contains(&v)).then(|| Duration::from_secs_f64(v))
}

/// A byte size: `5368709120`, `500M`, `5G`, `64MiB`, `1.5G` (powers of 1024).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return None,
    };
    let num = num.trim();
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult);
    }
    let f: f64 = num.parse().ok()?;
    let bytes = f * mult as f64;
    (f.is_finite() && f >= 0.0 && bytes < 1.8e19).then_some(bytes as u64)
}

/// 1/true/yes/on and 0/false/no/off, case-insensitive.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// proxpi's Python logging levels to a flexi_logger spec; anything else is
/// taken as a spec already. A plain `debug`/`trace` applies to roxpi only:
/// the HTTP and TLS libraries stay at `info` unless a spec names them.
pub fn translate_log_level(s: &str) -> String {
    let t = s.trim();
    let level = match t.to_ascii_uppercase().as_str() {
        "CRITICAL" | "FATAL" | "50" | "40" | "ERROR" => "error",
        "WARNING" | "WARN" | "30" => "warn",
        "INFO" | "20" => "info",
        "DEBUG" | "10" => "debug",
        "NOTSET" | "0" | "TRACE" => "trace",
        _ => return t.to_owned(),
    };
    match level {
        "debug" | "trace" => format!("info,roxpi={level}"),
        _ => level.to_owned(),
    }
}

#[cfg(test)]
mod tests;
