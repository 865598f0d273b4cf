//! The steps of `Settings::from_cli`, one setting or group each: the
//! configuration file, the default route's indexes, the `[[route]]`s,
//! storage, the upstream policy and the small ones. Each error names its
//! one setting and the value.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::{
    err, file, guarded, parse_index_url, parse_seconds, parse_size, s3_settings, seconds,
    split_list, Cli, ClientRefresh, ConfigError, IndexConfig, RouteConfig, StorageMode, PYPI,
    SECONDS_RANGE,
};
use crate::pypi::Strategy;
use crate::redact::SafeUrl;

/// The file `ROXPI_CONFIG` names (or none), and its path for messages.
pub(super) fn read_file(
    cli: &Cli,
) -> Result<(Option<PathBuf>, file::FileConfig, String), ConfigError> {
    let config_file = Some(cli.config.trim())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let file = match &config_file {
        Some(p) => file::FileConfig::read(p).map_err(|e| ConfigError {
            setting: "ROXPI_CONFIG",
            value: p.display().to_string(),
            expected: format!("a valid roxpi.toml: {}", e.message),
        })?,
        None => file::FileConfig::default(),
    };
    let file_path = config_file
        .as_ref()
        .map_or_else(|| "-".to_owned(), |p| p.display().to_string());
    Ok((config_file, file, file_path))
}

/// Project globs of an `[[index]]` key.
fn glob_list(
    globs: &[String],
    setting: &'static str,
    file_path: &str,
) -> Result<Vec<crate::policy::ProjectGlob>, ConfigError> {
    globs
        .iter()
        .map(|g| crate::policy::ProjectGlob::parse(g).map_err(|e| err(setting, file_path, e)))
        .collect()
}

// Long: one precedence: flags, variables, aliases, then the file.
/// The default route's indexes: the file's `[[index]]` list, or
/// `ROXPI_INDEX_URL` (PyPI when unset) — never both — then the extras.
pub(super) fn default_indexes(
    cli: &Cli,
    file: &file::FileConfig,
    file_path: &str,
    root_ttl: Duration,
) -> Result<Vec<IndexConfig>, ConfigError> {
    let mut indexes = Vec::new();
    let file_indexes = match &file.index {
        Some(list) if list.is_empty() => {
            return Err(err(
                "ROXPI_CONFIG index",
                file_path,
                "at least one [[index]] (or no index key at all)",
            ))
        }
        Some(list) if !cli.index_url.trim().is_empty() => {
            return Err(ConfigError {
                setting: "ROXPI_INDEX_URL",
                value: SafeUrl::text(cli.index_url.trim()).to_string(),
                expected: format!(
                    "no index URL while the [[index]] list in ROXPI_CONFIG ({file_path}, {} entries) names the indexes; keep one of the two (PROXPI_INDEX_URL and --index-url set it too)",
                    list.len()
                ),
            })
        }
        Some(list) => list.as_slice(),
        None => &[],
    };
    if !file_indexes.is_empty() {
        // The file's [[index]] entries, root first.
        for (i, entry) in file_indexes.iter().enumerate() {
            let url = parse_index_url(&entry.url)
                .map_err(|e| err("ROXPI_CONFIG [[index]] url", &SafeUrl::text(&entry.url), e))?;
            let default_ttl = if i == 0 {
                root_ttl
            } else {
                Duration::from_secs(180)
            };
            let ttl = match entry.ttl {
                Some(t) => seconds(t).ok_or_else(|| {
                    err(
                        "ROXPI_CONFIG [[index]] ttl",
                        &format!("{t:?}"),
                        SECONDS_RANGE,
                    )
                })?,
                None => default_ttl,
            };
            indexes.push(IndexConfig {
                url,
                ttl,
                only: glob_list(&entry.only, "ROXPI_CONFIG [[index]] only", file_path)?,
                never: glob_list(&entry.never, "ROXPI_CONFIG [[index]] never", file_path)?,
            });
        }
    } else {
        let root = match cli.index_url.trim() {
            "" => PYPI,
            u => u,
        };
        indexes.push(IndexConfig::new(
            parse_index_url(root).map_err(|e| err("ROXPI_INDEX_URL", &SafeUrl::text(root), e))?,
            root_ttl,
        ));
    }
    let extra_urls: Vec<&str> = split_list(&cli.extra_index_urls);
    let extra_ttls: Vec<&str> = split_list(&cli.extra_index_ttls);
    if !extra_ttls.is_empty() && extra_ttls.len() != extra_urls.len() {
        return Err(err(
            "ROXPI_EXTRA_INDEX_TTLS",
            &cli.extra_index_ttls,
            format!("one TTL per extra index URL ({} URLs)", extra_urls.len()),
        ));
    }
    for (i, u) in extra_urls.iter().enumerate() {
        let url =
            parse_index_url(u).map_err(|e| err("ROXPI_EXTRA_INDEX_URLS", &SafeUrl::text(u), e))?;
        let ttl = match extra_ttls.get(i) {
            Some(t) => {
                parse_seconds(t).ok_or_else(|| err("ROXPI_EXTRA_INDEX_TTLS", t, SECONDS_RANGE))?
            }
            None => Duration::from_secs(180),
        };
        indexes.push(IndexConfig::new(url, ttl));
    }
    Ok(indexes)
}

/// The `[[route]]`s of the file, each with the site's guards (`site`: the
/// default route's indexes) and the site's rules under its own cooldown.
pub(super) fn routes(
    file: &file::FileConfig,
    file_path: &str,
    site: &[IndexConfig],
    overrides: &file::PolicyOverrides,
    root_ttl: Duration,
) -> Result<Vec<RouteConfig>, ConfigError> {
    let mut routes: Vec<RouteConfig> = Vec::new();
    for r in &file.route {
        let route = route(r, file, file_path, site, overrides, root_ttl)?;
        if routes.iter().any(|x| x.prefix == route.prefix) {
            return Err(err(
                "ROXPI_CONFIG [[route]] prefix",
                &r.prefix,
                "a prefix used once",
            ));
        }
        routes.push(route);
    }
    Ok(routes)
}

/// One `[[route]]`.
fn route(
    r: &file::RouteEntry,
    file: &file::FileConfig,
    file_path: &str,
    site: &[IndexConfig],
    overrides: &file::PolicyOverrides,
    root_ttl: Duration,
) -> Result<RouteConfig, ConfigError> {
    let prefix = format!("/{}/", r.prefix.trim().trim_matches('/'));
    let reserved = [
        "/",
        "/index/",
        "/simple/",
        "/cache/",
        "/health/",
        "/ready/",
        "/metrics/",
    ];
    if prefix == "//" || reserved.contains(&prefix.as_str()) || prefix.contains("//") {
        return Err(err(
            "ROXPI_CONFIG [[route]] prefix",
            &r.prefix,
            "a path of its own, e.g. /pytorch-cu121/simple/ (not /, /index/, /simple/, /cache/…)",
        ));
    }
    if r.indexes.is_empty() {
        return Err(err(
            "ROXPI_CONFIG [[route]] indexes",
            &r.prefix,
            "at least one index URL",
        ));
    }
    let ttl = match r.ttl {
        Some(t) => seconds(t).ok_or_else(|| {
            err(
                "ROXPI_CONFIG [[route]] ttl",
                &format!("{t:?}"),
                SECONDS_RANGE,
            )
        })?,
        None => root_ttl,
    };
    let indexes = r
        .indexes
        .iter()
        .map(|u| {
            parse_index_url(u)
                .map(|url| guarded(IndexConfig::new(url, ttl), site))
                .map_err(|e| err("ROXPI_CONFIG [[route]] indexes", &SafeUrl::text(u), e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let strategy = match r.strategy.as_deref() {
        None => Strategy::Merge,
        Some(s) => super::parse_strategy(s)
            .ok_or_else(|| err("ROXPI_CONFIG [[route]] strategy", s, super::STRATEGIES))?,
    };
    let policy = match &r.policy {
        Some(fields) => Some(std::sync::Arc::new(
            file::build_policy(&file.policy().under_route(fields), overrides, file_path).map_err(
                |e| ConfigError {
                    setting: "ROXPI_CONFIG [[route]] policy",
                    value: format!("{} ({})", e.path, r.prefix),
                    expected: e.message,
                },
            )?,
        )),
        None => None,
    };
    Ok(RouteConfig {
        prefix,
        indexes,
        strategy,
        policy,
        read_token: token_of(r.read_token.as_deref()),
        hosted: r.hosted.clone(),
    })
}

pub(super) fn workers(cli: &Cli) -> Result<usize, ConfigError> {
    let workers = match cli.workers.trim() {
        "auto" => Some(crate::http::default_workers()),
        w => w.parse::<usize>().ok(),
    };
    workers.filter(|w| (1..=4096).contains(w)).ok_or_else(|| {
        err(
            "ROXPI_WORKERS",
            &cli.workers,
            "auto, or a number of threads from 1 to 4096",
        )
    })
}

pub(super) fn log_json(cli: &Cli) -> Result<bool, ConfigError> {
    Ok(match cli.log_format.trim().to_ascii_lowercase().as_str() {
        "text" | "console" => false,
        "json" => true,
        _ => return Err(err("ROXPI_LOG_FORMAT", &cli.log_format, "text or json")),
    })
}

pub(super) fn ca_file(cli: &Cli) -> Result<Option<PathBuf>, ConfigError> {
    let ca_file = Some(cli.ca_file.trim())
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    if let Some(p) = &ca_file {
        if !p.is_file() {
            return Err(err(
                "ROXPI_CA_FILE",
                &p.display().to_string(),
                "a readable PEM file",
            ));
        }
    }
    Ok(ca_file)
}

/// `ROXPI_UPSTREAM_ALLOW`: the extra classes, and whether `any`.
pub(super) fn upstream_allow(
    cli: &Cli,
) -> Result<(Vec<crate::address_policy::AddrClass>, bool), ConfigError> {
    let allow = split_list(&cli.upstream_allow);
    let upstream_allow_any = allow.iter().any(|a| a.eq_ignore_ascii_case("any"));
    let upstream_allow = allow
        .iter()
        .filter(|a| !a.eq_ignore_ascii_case("any"))
        .map(|a| {
            crate::address_policy::AddrClass::parse(a).ok_or_else(|| {
                err(
                    "ROXPI_UPSTREAM_ALLOW",
                    a,
                    "any, or a list of loopback, private, link-local, shared, unspecified, special",
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((upstream_allow, upstream_allow_any))
}

pub(super) fn upstream_proxy(cli: &Cli) -> Result<Option<Url>, ConfigError> {
    Some(cli.upstream_proxy.trim())
        .filter(|p| !p.is_empty())
        .map(|p| {
            let bad = |why: &str| err("ROXPI_UPSTREAM_PROXY", &SafeUrl::text(p), why);
            let url = Url::parse(p).map_err(|_| bad("a URL like http://proxy:3128"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(bad("an http:// or https:// URL with a host"));
            }
            if url.path() != "/" || url.query().is_some() {
                return Err(bad("a proxy URL without a path"));
            }
            Ok(url)
        })
        .transpose()
}

/// The storage mode, the bucket for `s3` and `tiered`, and the file cache
/// cap (which `tiered` needs above 0).
pub(super) fn storage(
    cli: &Cli,
) -> Result<(StorageMode, Option<crate::storage::s3::S3Settings>, u64), ConfigError> {
    let storage = match cli.storage.trim().to_ascii_lowercase().as_str() {
        "local" => StorageMode::Local,
        "s3" => StorageMode::S3,
        "tiered" => StorageMode::Tiered,
        _ => return Err(err("ROXPI_STORAGE", &cli.storage, "local, s3 or tiered")),
    };
    let s3 = match storage {
        StorageMode::Local => None,
        StorageMode::S3 | StorageMode::Tiered => Some(s3_settings(cli, |n| std::env::var(n).ok())?),
    };
    let cache_size = parse_size(&cli.cache_size).ok_or_else(|| {
        err(
            "ROXPI_CACHE_SIZE",
            &cli.cache_size,
            "bytes, e.g. 5G or 500M; 0 disables the file cache",
        )
    })?;
    if storage == StorageMode::Tiered && cache_size == 0 {
        return Err(err(
            "ROXPI_CACHE_SIZE",
            &cli.cache_size,
            "the L1 cap of ROXPI_STORAGE=tiered, above 0 (ROXPI_STORAGE=s3 keeps no local copy)",
        ));
    }
    Ok((storage, s3, cache_size))
}

pub(super) fn client_refresh(cli: &Cli) -> Result<ClientRefresh, ConfigError> {
    Ok(
        match cli.client_refresh.trim().to_ascii_lowercase().as_str() {
            "no-cache" => ClientRefresh::NoCache,
            "off" => ClientRefresh::Off,
            "any" => ClientRefresh::Any,
            _ => {
                return Err(err(
                    "ROXPI_CLIENT_REFRESH",
                    &cli.client_refresh,
                    "no-cache, off or any",
                ))
            }
        },
    )
}

/// `ROXPI_BREAKER_FAILURES` (0: never opens) and `ROXPI_BREAKER_PROBE`.
pub(super) fn breaker(cli: &Cli) -> Result<crate::origin::breaker::BreakerParams, ConfigError> {
    let failures: u32 = cli.breaker_failures.trim().parse().map_err(|_| {
        err(
            "ROXPI_BREAKER_FAILURES",
            &cli.breaker_failures,
            "a count, 0 = never",
        )
    })?;
    let probe = super::parse_seconds(&cli.breaker_probe)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            err(
                "ROXPI_BREAKER_PROBE",
                &cli.breaker_probe,
                "seconds, more than 0",
            )
        })?;
    Ok(crate::origin::breaker::BreakerParams {
        failures: if failures == 0 { u32::MAX } else { failures },
        probe_every: probe,
        ..Default::default()
    })
}

/// ROXPI_PREFETCH and its targets: the globs must match lock files now.
pub(super) fn prefetch(cli: &Cli) -> Result<Option<super::Prefetch>, ConfigError> {
    if cli.prefetch_locks.trim().is_empty() {
        return Ok(None);
    }
    let locks = crate::prefetch::expand(&cli.prefetch_locks)
        .map_err(|e| err("ROXPI_PREFETCH", &cli.prefetch_locks, &e))?;
    let list = |v: &str| -> Vec<String> {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let targets =
        crate::prefetch::targets(&list(&cli.prefetch_platforms), &list(&cli.prefetch_pythons))
            .map_err(|e| err("ROXPI_PREFETCH_PYTHONS", &cli.prefetch_pythons, &e))?;
    Ok(Some(super::Prefetch { locks, targets }))
}

/// ROXPI_TLS_CERT and ROXPI_TLS_KEY (both or neither), and ROXPI_TLS_BIND.
pub(super) fn tls(cli: &Cli) -> Result<Option<super::Tls>, ConfigError> {
    let (cert, key, bind) = (cli.tls_cert.trim(), cli.tls_key.trim(), cli.tls_bind.trim());
    match (cert.is_empty(), key.is_empty()) {
        (true, true) if bind.is_empty() => return Ok(None),
        (true, true) => {
            return Err(err(
                "ROXPI_TLS_BIND",
                bind,
                "ROXPI_TLS_CERT and ROXPI_TLS_KEY as well",
            ))
        }
        (false, true) => return Err(err("ROXPI_TLS_KEY", "", "the key of ROXPI_TLS_CERT (PEM)")),
        (true, false) => {
            return Err(err(
                "ROXPI_TLS_CERT",
                "",
                "the certificate of ROXPI_TLS_KEY (PEM)",
            ))
        }
        (false, false) => {}
    }
    for (setting, path) in [("ROXPI_TLS_CERT", cert), ("ROXPI_TLS_KEY", key)] {
        if !std::path::Path::new(path).is_file() {
            return Err(err(setting, path, "a readable PEM file"));
        }
    }
    let bind = match bind {
        "" => None,
        b => Some(
            b.parse()
                .map_err(|_| err("ROXPI_TLS_BIND", b, "HOST:PORT, e.g. 0.0.0.0:5443"))?,
        ),
    };
    Ok(Some(super::Tls {
        cert: cert.into(),
        key: key.into(),
        bind,
    }))
}

/// The hosted indexes: `[[hosted]]` in the file, and `local` when
/// ROXPI_UPLOAD_TOKEN is set and the file names none.
pub(super) fn hosting(
    cli: &Cli,
    file: &super::file::FileConfig,
    file_path: &str,
    cache_dir: &std::path::Path,
    publish_wait: std::time::Duration,
) -> Result<Option<crate::hosted::HostingConfig>, ConfigError> {
    use crate::hosted::{HostedIndex, HostingConfig, Token};
    let token = Some(cli.upload_token.trim())
        .filter(|t| !t.is_empty())
        .map(|t| Token(t.to_owned()));
    let mut indexes = Vec::new();
    for h in &file.hosted {
        if !crate::hosted::store::valid_index(&h.name) {
            return Err(err(
                "ROXPI_CONFIG",
                file_path,
                format!(
                    "[[hosted]] name {:?}: lower-case letters, digits, - and _",
                    h.name
                ),
            ));
        }
        if indexes.iter().any(|i: &HostedIndex| i.name == h.name) {
            return Err(err(
                "ROXPI_CONFIG",
                file_path,
                format!("[[hosted]] name {:?} is given twice", h.name),
            ));
        }
        let mut allow_upstream = Vec::new();
        for g in &h.allow_upstream {
            allow_upstream.push(crate::policy::ProjectGlob::parse(g).map_err(|e| {
                err(
                    "ROXPI_CONFIG",
                    file_path,
                    format!("[[hosted]] {}: allow-upstream {g:?}: {e}", h.name),
                )
            })?);
        }
        indexes.push(HostedIndex {
            name: h.name.clone(),
            upload_token: h
                .upload_token
                .as_deref()
                .map(|t| Token(t.trim().to_owned()))
                .or_else(|| token.clone()),
            allow_upstream,
            read_token: token_of(h.read_token.as_deref()),
        });
    }
    if indexes.is_empty() {
        let Some(token) = token else {
            return Ok(None);
        };
        indexes.push(HostedIndex {
            name: "local".to_owned(),
            upload_token: Some(token),
            allow_upstream: Vec::new(),
            read_token: None,
        });
    }
    let upload_max = super::parse_size(&cli.upload_max)
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            err(
                "ROXPI_UPLOAD_MAX",
                &cli.upload_max,
                "bytes, e.g. 1G or 200M",
            )
        })?;
    let dir = match cli.hosted_dir.trim() {
        "" => cache_dir.join("hosted"),
        d => std::path::PathBuf::from(d),
    };
    let sync_every = super::parse_seconds(&cli.hosted_sync)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| err("ROXPI_HOSTED_SYNC", &cli.hosted_sync, "seconds, at least 1"))?;
    let max_bytes = match cli.hosted_max.trim() {
        "" => None,
        v => Some(
            super::parse_size(v)
                .filter(|n| *n > 0)
                .ok_or_else(|| err("ROXPI_HOSTED_MAX", v, "bytes, e.g. 20G"))?,
        ),
    };
    Ok(Some(HostingConfig {
        dir,
        upload_max,
        max_bytes,
        indexes,
        publish_wait,
        sync_every,
    }))
}

/// A token setting: `None` when unset or blank.
pub(super) fn token_of(v: Option<&str>) -> Option<crate::access::Token> {
    v.map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| crate::access::Token(t.to_owned()))
}

/// Every hosted index a `[[route]]` lists must exist.
pub(super) fn check_route_hosting(
    routes: &[super::RouteConfig],
    hosting: Option<&crate::hosted::HostingConfig>,
    file_path: &str,
) -> Result<(), ConfigError> {
    for r in routes {
        for name in &r.hosted {
            let known = hosting.is_some_and(|h| h.indexes.iter().any(|i| i.name == *name));
            if !known {
                return Err(err(
                    "ROXPI_CONFIG",
                    file_path,
                    format!(
                        "[[route]] {} lists hosted index {name:?}, which no [[hosted]] (or ROXPI_UPLOAD_TOKEN for local) defines",
                        r.prefix
                    ),
                ));
            }
        }
    }
    Ok(())
}
