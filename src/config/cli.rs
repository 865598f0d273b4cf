//! The command line: every setting's flag, `ROXPI_*` variable, default
//! and help text, as clap declares them (validated into `Settings`).

use clap::Parser;

/// The one precedence rule, printed under `--help`.
pub const PRECEDENCE: &str =
    "Precedence: a flag wins over its variable, a variable over the ROXPI_CONFIG file; \
ROXPI_* wins over PROXPI_*, which wins over GROXPI_*. Empty variables count as unset.";

/// roxpi — a PyPI caching proxy (a drop-in for proxpi).
///
/// Every option is also read from the environment variable shown; proxpi's
/// `PROXPI_*` and groxpi's `GROXPI_*` names are accepted as aliases (the
/// `ROXPI_*` name wins). Empty variables count as unset.
#[derive(Parser, Debug, Clone)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// Listen address; port 0 picks a free port (the real address is printed).
    #[arg(long, env = "ROXPI_BIND", default_value = "0.0.0.0:5000")]
    pub bind: String,

    /// Root upstream index (credentials may be embedded:
    /// https://user:pass@host/simple/). Default: the `[[index]]` entries of
    /// ROXPI_CONFIG if any, else PyPI's simple index.
    #[arg(
        long,
        env = "ROXPI_INDEX_URL",
        default_value = "",
        hide_default_value = true
    )]
    pub index_url: String,

    /// The configuration file (TOML): policy, indexes with their guards,
    /// routes. Flags and variables override it; SIGHUP reloads its policy.
    #[arg(
        long,
        env = "ROXPI_CONFIG",
        default_value = "",
        hide_default_value = true
    )]
    pub config: String,

    /// Release cooldown: files younger than this (7d, 12h; 0 = off) are held
    /// back (overrides `min-release-age` of ROXPI_CONFIG).
    #[arg(
        long,
        env = "ROXPI_MIN_RELEASE_AGE",
        default_value = "",
        hide_default_value = true
    )]
    pub min_release_age: String,

    /// `hide` (young files are not listed, but served when asked) or `deny`
    /// (also refused with 403) (overrides ROXPI_CONFIG).
    #[arg(
        long,
        env = "ROXPI_COOLDOWN_MODE",
        default_value = "",
        hide_default_value = true
    )]
    pub cooldown_mode: String,

    /// Files without an upload time under a cooldown: `allow`, `first-seen`
    /// or `deny` (overrides ROXPI_CONFIG).
    #[arg(
        long,
        env = "ROXPI_UNTIMED",
        default_value = "",
        hide_default_value = true
    )]
    pub untimed: String,

    /// When set, the invalidation DELETEs need `Authorization: Bearer <token>`
    /// (401 otherwise). Unset: open, as in proxpi.
    #[arg(
        long,
        env = "ROXPI_ADMIN_TOKEN",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub admin_token: String,

    /// Root index TTL in seconds; 0 = revalidate on every request.
    #[arg(long, env = "ROXPI_INDEX_TTL", default_value = "1800")]
    pub index_ttl: String,

    /// Comma-separated extra indexes.
    #[arg(
        long,
        env = "ROXPI_EXTRA_INDEX_URLS",
        default_value = "",
        hide_default_value = true
    )]
    pub extra_index_urls: String,

    /// Comma-separated TTLs (seconds) of the extra indexes; 180 each if unset.
    #[arg(
        long,
        env = "ROXPI_EXTRA_INDEX_TTLS",
        default_value = "",
        hide_default_value = true
    )]
    pub extra_index_ttls: String,

    /// `merge` (union of files, root first) or `first-index` (the first index
    /// that has the project wins; an erroring index never lets a later one win).
    #[arg(long, env = "ROXPI_INDEX_STRATEGY", default_value = "merge")]
    pub index_strategy: String,

    /// Seconds an expired page's refresh may take before the stale copy is served.
    #[arg(long, env = "ROXPI_STALE_AFTER", default_value = "3")]
    pub stale_after: String,

    /// Seconds after a page's TTL during which the expired copy is answered
    /// at once while it is refreshed in the background (0 = off).
    #[arg(long, env = "ROXPI_STALE_WHILE_REVALIDATE", default_value = "300")]
    pub stale_while_revalidate: String,

    /// Connect failures or timeouts in a row (each within 30 s of the first)
    /// after which an upstream host's circuit breaker opens: misses then
    /// answer at once (stale copy, or 502 "upstream down since …") without
    /// a connect attempt (0 = never).
    #[arg(long, env = "ROXPI_BREAKER_FAILURES", default_value = "5")]
    pub breaker_failures: String,

    /// Seconds between the probes of an open circuit breaker: one request
    /// goes through, and an answer closes the breaker.
    #[arg(long, env = "ROXPI_BREAKER_PROBE", default_value = "5")]
    pub breaker_probe: String,

    /// Which client requests force a page refresh (at most once per 10 s per
    /// page): `no-cache` (`Cache-Control: no-cache` or `Pragma: no-cache`),
    /// `off` (never), or `any` (also `max-age=0`, which pip 24–26.0 sends on
    /// every page request).
    #[arg(long, env = "ROXPI_CLIENT_REFRESH", default_value = "no-cache")]
    pub client_refresh: String,

    /// Make PEP 658 `.metadata` for wheels the upstream lists without it
    /// (read from the cached wheel, or by range requests), and advertise it.
    #[arg(long, env = "ROXPI_SYNTHESIZE_METADATA", default_value = "on")]
    pub synthesize_metadata: String,

    /// Bound on the in-memory index cache (bytes; 64M, 1G… accepted).
    #[arg(long, env = "ROXPI_INDEX_CACHE_SIZE", default_value = "64M")]
    pub index_cache_size: String,

    /// Upstream connect timeout in seconds.
    #[arg(long, env = "ROXPI_CONNECT_TIMEOUT", default_value = "3.1")]
    pub connect_timeout: String,

    /// Upstream timeout per read in seconds (never a whole-body limit).
    #[arg(long, env = "ROXPI_READ_TIMEOUT", default_value = "20")]
    pub read_timeout: String,

    /// proxpi's redirect: seconds an uncached file request waits for the
    /// upstream's response headers before a 302 to the upstream URL (0 =
    /// always redirect). Unset (the default): never redirect; the request
    /// waits parked and is streamed from the download.
    #[arg(
        long,
        env = "ROXPI_DOWNLOAD_TIMEOUT",
        default_value = "",
        hide_default_value = true
    )]
    pub download_timeout: String,

    /// Seconds a request waits for an upstream answer (a page with no copy
    /// at hand, a download's first bytes, metadata made from a wheel) before
    /// it is answered 504.
    #[arg(long, env = "ROXPI_REQUEST_DEADLINE", default_value = "120")]
    pub request_deadline: String,

    /// File cache cap in bytes (5G, 500M… accepted); 0 = no file cache, stream through.
    #[arg(long, env = "ROXPI_CACHE_SIZE", default_value = "5G")]
    pub cache_size: String,

    /// File cache directory (default $XDG_CACHE_HOME/roxpi, else $HOME/.cache/roxpi).
    #[arg(
        long,
        env = "ROXPI_CACHE_DIR",
        default_value = "",
        hide_default_value = true
    )]
    pub cache_dir: String,

    /// Disable TLS certificate verification for upstream indexes (1/true/yes/on).
    #[arg(
        long,
        env = "ROXPI_DISABLE_INDEX_SSL_VERIFICATION",
        default_value = "off"
    )]
    pub disable_index_ssl_verification: String,

    /// PEM bundle of CA certificates for upstream TLS (default: the system
    /// store if present, else built-in roots).
    #[arg(
        long,
        env = "ROXPI_CA_FILE",
        default_value = "",
        hide_default_value = true
    )]
    pub ca_file: String,

    /// Serve every file as application/octet-stream (1/true/yes/on).
    #[arg(long, env = "ROXPI_BINARY_FILE_MIME_TYPE", default_value = "off", num_args = 0..=1, default_missing_value = "on")]
    pub binary_file_mime_type: String,

    /// Never contact an upstream; serve only what is cached (1/true/yes/on).
    #[arg(long, env = "ROXPI_OFFLINE", default_value = "off", num_args = 0..=1, default_missing_value = "on")]
    pub offline: String,

    /// Where files are kept: `local` (the disk LRU in ROXPI_CACHE_DIR), `s3`
    /// (a bucket; the cache dir holds only staging files and saved pages) or
    /// `tiered` (the local LRU as L1 in front of the bucket as L2).
    #[arg(long, env = "ROXPI_STORAGE", default_value = "local")]
    pub storage: String,

    /// S3 bucket (for ROXPI_STORAGE=s3 or tiered). Credentials come from
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN.
    #[arg(
        long,
        env = "ROXPI_S3_BUCKET",
        default_value = "",
        hide_default_value = true
    )]
    pub s3_bucket: String,

    /// Key prefix in the bucket (`roxpi` and `roxpi/` are the same).
    #[arg(long, env = "ROXPI_S3_PREFIX", default_value = "roxpi/")]
    pub s3_prefix: String,

    /// S3 endpoint URL for S3-compatible stores (default: AWS,
    /// https://s3.<region>.amazonaws.com).
    #[arg(
        long,
        env = "ROXPI_S3_ENDPOINT",
        default_value = "",
        hide_default_value = true
    )]
    pub s3_endpoint: String,

    /// S3 region (signing scope).
    #[arg(long, env = "ROXPI_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,

    /// Path-style bucket URLs (http://host/bucket/key) instead of
    /// virtual-hosted ones (http://bucket.host/key); most S3-compatible
    /// stores need it (1/true/yes/on).
    #[arg(long, env = "ROXPI_S3_PATH_STYLE", default_value = "off", num_args = 0..=1, default_missing_value = "on")]
    pub s3_path_style: String,

    /// Address classes upstream connections may reach besides public ones
    /// (the configured origins are always reachable): comma-separated
    /// loopback, private, link-local, shared, unspecified, special — or
    /// `any`.
    #[arg(
        long,
        env = "ROXPI_UPSTREAM_ALLOW",
        default_value = "",
        hide_default_value = true
    )]
    pub upstream_allow: String,

    /// An HTTP(S) proxy for every upstream connection (`http://host:port`,
    /// credentials allowed). Targets are resolved and checked against the
    /// address policy before the CONNECT. HTTP_PROXY and friends are
    /// ignored.
    #[arg(
        long,
        env = "ROXPI_UPSTREAM_PROXY",
        default_value = "",
        hide_default_value = true
    )]
    pub upstream_proxy: String,

    /// Request worker threads, or `auto` (one per CPU, at least 2). Workers
    /// never wait on the network, so more than the CPUs only add wake-ups.
    #[arg(long, env = "ROXPI_WORKERS", default_value = "auto")]
    pub workers: String,

    /// Log level or flexi_logger spec (`info`, `debug`, `info,roxpi::access=warn`);
    /// proxpi's WARNING/CRITICAL/numbers are translated.
    #[arg(long = "log", env = "ROXPI_LOG", default_value = "info")]
    pub log: String,

    /// Log line format: `text` or `json`.
    #[arg(long, env = "ROXPI_LOG_FORMAT", default_value = "text")]
    pub log_format: String,

    /// Lock files to prefetch at startup, in the background (comma-separated
    /// globs, e.g. `/locks/*.lock`): as `roxpi prefetch`, with `/ready`
    /// reporting the progress.
    #[arg(
        long = "prefetch",
        env = "ROXPI_PREFETCH",
        default_value = "",
        hide_default_value = true
    )]
    pub prefetch_locks: String,

    /// Platform tags for ROXPI_PREFETCH (comma-separated, e.g.
    /// `manylinux_2_28_aarch64,manylinux_2_36_x86_64`); unset: every file.
    #[arg(
        long,
        env = "ROXPI_PREFETCH_PLATFORMS",
        default_value = "",
        hide_default_value = true
    )]
    pub prefetch_platforms: String,

    /// Python versions for ROXPI_PREFETCH (comma-separated, e.g. `3.12`).
    #[arg(
        long,
        env = "ROXPI_PREFETCH_PYTHONS",
        default_value = "",
        hide_default_value = true
    )]
    pub prefetch_pythons: String,

    /// PEM certificate chain (leaf first): serve HTTPS on the listen
    /// address, or on ROXPI_TLS_BIND. Reloaded with the key on SIGHUP.
    #[arg(
        long,
        env = "ROXPI_TLS_CERT",
        default_value = "",
        hide_default_value = true
    )]
    pub tls_cert: String,

    /// PEM private key of ROXPI_TLS_CERT (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "ROXPI_TLS_KEY",
        default_value = "",
        hide_default_value = true
    )]
    pub tls_key: String,

    /// A second listen address for HTTPS, next to plain HTTP on ROXPI_BIND
    /// (unset: ROXPI_BIND itself speaks HTTPS when a certificate is given).
    #[arg(
        long,
        env = "ROXPI_TLS_BIND",
        default_value = "",
        hide_default_value = true
    )]
    pub tls_bind: String,

    /// The upload token of the hosted index `local` (created when this is
    /// set): `twine upload` and `uv publish` send it as the password of
    /// `__token__`. `[[hosted]]` in ROXPI_CONFIG names more indexes.
    #[arg(
        long,
        env = "ROXPI_UPLOAD_TOKEN",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub upload_token: String,

    /// Reading the default route (`/index/`, `/simple/`, `/`) needs this
    /// token, as Basic credentials (`http://user:TOKEN@host/index/`) or a
    /// Bearer token; 401 otherwise. `/health`, `/ready` and `/metrics` stay
    /// open. Routes and hosted indexes take `read-token` in ROXPI_CONFIG.
    #[arg(
        long,
        env = "ROXPI_READ_TOKEN",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub read_token: String,

    /// `/metrics` needs this token (Prometheus: `authorization` with a
    /// bearer token, or `basic_auth`); unset: open. `/health` and `/ready`
    /// always stay open for orchestrators.
    #[arg(
        long,
        env = "ROXPI_METRICS_TOKEN",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub metrics_token: String,

    /// The largest file an upload may carry.
    #[arg(long, env = "ROXPI_UPLOAD_MAX", default_value = "1G")]
    pub upload_max: String,

    /// Where hosted files live (default: `hosted/` in the cache dir; never
    /// evicted, not counted in ROXPI_CACHE_SIZE).
    #[arg(
        long,
        env = "ROXPI_HOSTED_DIR",
        default_value = "",
        hide_default_value = true
    )]
    pub hosted_dir: String,

    /// Most bytes all hosted files may take (unset: no quota); an upload
    /// past it is refused.
    #[arg(
        long,
        env = "ROXPI_HOSTED_MAX",
        default_value = "",
        hide_default_value = true
    )]
    pub hosted_max: String,

    /// Seconds between two looks at the bucket for hosted files other nodes
    /// uploaded (`ROXPI_STORAGE=s3` or `tiered`).
    #[arg(long, env = "ROXPI_HOSTED_SYNC", default_value = "30")]
    pub hosted_sync: String,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands; without one, roxpi serves.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Fill a running roxpi's cache with the files that lock files name
    /// (requirements.txt, pylock.toml, uv.lock, poetry.lock).
    Prefetch(crate::prefetch::Args),
}
