// Size: the home page and /metrics are two views of one snapshot of the counters; split, their rows would drift apart.
//! The home page and `/metrics`, both built from one `Snapshot` of every
//! counter: the index cache, the file cache and the HTTP server. Each
//! metric is declared once, with its Prometheus name, type, help text and
//! the label the home page shows.

use crate::human::{human_bytes, human_duration};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use askama::Template;

use super::App;
use crate::http::Response;
use crate::pypi::Strategy;

/// Which table of the home page a metric belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Index,
    File,
    Server,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One value of the snapshot.
#[derive(Clone, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// What the home page calls it.
    pub label: &'static str,
    pub section: Section,
    pub value: u64,
}

/// Every counter and gauge, read once.
pub struct Snapshot {
    pub metrics: Vec<Metric>,
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Snapshot {
    // Long: one table: a row per metric.
    pub fn take(app: &App) -> Snapshot {
        use Kind::{Counter, Gauge};
        use Section::{File, Index, Server};
        // Every route's index cache: the default's and each [[route]]'s.
        let routes = app.groups();
        let sum = |field: fn(&crate::index_cache::CacheStats) -> &AtomicU64| -> u64 {
            routes
                .iter()
                .map(|u| load(field(&u.index_cache.stats)))
                .sum()
        };
        let f = &app.files.stats;
        let s = &app.server;
        let none = crate::files::metadata::SynthStats::default();
        let m8 = app.files.synth_stats().unwrap_or(&none);
        let usage = app.files.usage();
        let (entries, bytes) = routes.iter().fold((0, 0), |(e, b), u| {
            let (ue, ub) = u.index_cache.usage();
            (e + ue, b + ub)
        });
        let fetches: u64 = routes
            .iter()
            .map(|u| u.index_cache.stats.fetch_seconds.count())
            .sum();
        let m = |name, kind, section, label, help, value| Metric {
            name,
            kind,
            help,
            label,
            section,
            value,
        };
        #[rustfmt::skip]
        let metrics = vec![
            m("roxpi_requests_total", Counter, Server, "requests", "requests answered", load(&app.requests)),
            m("roxpi_http_connections_accepted_total", Counter, Server, "connections accepted", "connections accepted", load(&s.accepted)),
            m("roxpi_http_accept_errors_total", Counter, Server, "accept errors", "accept errors (EMFILE and others)", load(&s.accept_errors)),
            m("roxpi_http_shed_total", Counter, Server, "shed at the connection cap", "connections refused with 503 at the connection cap", load(&s.shed)),
            m("roxpi_http_queue_timeouts_total", Counter, Server, "queue timeouts", "ready connections that waited too long for a worker (503)", load(&s.queue_timeouts)),
            m("roxpi_http_bad_requests_total", Counter, Server, "bad requests", "malformed or over-limit requests", load(&s.bad_requests)),
            m("roxpi_http_head_timeouts_total", Counter, Server, "head timeouts", "request heads that did not arrive in time", load(&s.head_timeouts)),
            m("roxpi_http_handler_panics_total", Counter, Server, "handler panics", "handler panics answered with 500", load(&s.handler_panics)),
            m("roxpi_http_waiting_requests", Gauge, Server, "requests parked on the upstream", "requests parked until their upstream answer is ready (no thread held)", load(&s.waiting)),
            m("roxpi_http_abandoned_total", Counter, Server, "parked requests abandoned", "parked requests dropped because their client hung up while waiting", load(&s.abandoned)),
            m("roxpi_http_probes_total", Counter, Server, "probes answered by the accept thread", "/health and /ready probes answered by the accept thread (never behind workers or the connection cap)", load(&s.probes)),
            m("roxpi_http_aborted_total", Counter, Server, "aborted responses", "responses cut mid-body (client gone, write timeout, failed stream)", load(&s.aborted)),
            m("roxpi_upstream_page_fetches_total", Counter, Index, "upstream page fetches", "upstream page fetches", fetches),
            m("roxpi_start_time_seconds", Gauge, Server, "started at (Unix time)", "when this roxpi process started, in seconds since the Unix epoch", app.started_unix),
            m("roxpi_upstream_breaker_transitions_total", Counter, Index, "upstream breaker changes", "upstream circuit breakers opened or closed (an origin failing, or answering again)", app.origin.breaker_transitions()),
            m("roxpi_upstream_refused_addresses_total", Counter, Index, "upstream addresses refused (policy)", "upstream connections refused by the address policy (private, link-local… links and redirects)", app.origin.refused_addresses()),
            m("roxpi_index_fetch_busy_total", Counter, Index, "misses refused (fetch pool full)", "page misses refused at once because every fetch thread and queue slot was taken", sum(|c| &c.busy)),
            m("roxpi_index_hits_total", Counter, Index, "hits", "index pages answered from the cache", sum(|c| &c.hits)),
            m("roxpi_index_misses_total", Counter, Index, "misses", "index pages fetched for a request", sum(|c| &c.misses)),
            m("roxpi_index_stale_total", Counter, Index, "stale serves", "stale index pages served", sum(|c| &c.stale)),
            m("roxpi_index_revalidated_total", Counter, Index, "refreshes answered 304", "page refreshes the upstream answered 304 Not Modified (no body, no re-parse)", sum(|c| &c.revalidated)),
            m("roxpi_index_revalidating_total", Counter, Index, "served while revalidating", "expired pages answered at once while refreshed in the background", sum(|c| &c.revalidating)),
            m("roxpi_index_older_serial_total", Counter, Index, "older pages refused (serial)", "upstream pages not taken because their X-PyPI-Last-Serial was lower than the cached copy's", sum(|c| &c.older_serial)),
            m("roxpi_index_coalesced_total", Counter, Index, "coalesced waiters", "requests that joined a page fetch in flight", sum(|c| &c.coalesced)),
            m("roxpi_upstream_errors_total", Counter, Index, "upstream errors", "failed upstream page fetches", sum(|c| &c.upstream_errors)),
            m("roxpi_index_evictions_total", Counter, Index, "evictions", "index cache evictions", sum(|c| &c.evictions)),
            m("roxpi_index_not_kept_total", Counter, Index, "answered but not kept (too large)", "pages and rendered variants answered but not kept: larger than a quarter of ROXPI_INDEX_CACHE_SIZE", sum(|c| &c.not_kept)),
            m("roxpi_http_overdue_total", Counter, Server, "requests past their deadline (504)", "parked requests still unanswered at the park limit, answered 504", load(&s.overdue)),
            m("roxpi_index_cache_entries", Gauge, Index, "entries", "entries in the index caches of every route", entries as u64),
            m("roxpi_index_cache_bytes", Gauge, Index, "bytes", "bytes held by the index caches of every route", bytes),
            m("roxpi_file_hits_total", Counter, File, "hits", "files served from the cache", load(&f.hits)),
            m("roxpi_file_misses_total", Counter, File, "misses", "file downloads started", load(&f.misses)),
            m("roxpi_file_coalesced_total", Counter, File, "coalesced waiters", "requests that joined a download in flight", load(&f.coalesced)),
            m("roxpi_file_bytes_served_total", Counter, File, "bytes served from cache", "bytes served from cached files", load(&f.bytes_served_from_cache)),
            m("roxpi_file_bytes_fetched_total", Counter, File, "bytes fetched", "bytes downloaded from upstreams", load(&f.bytes_fetched)),
            m("roxpi_metadata_made_total", Counter, File, "metadata made (PEP 658)", "wheel .metadata files made here for wheels listed without them", load(&m8.made)),
            m("roxpi_metadata_by_ranges_total", Counter, File, "metadata made by range reads", "metadata made by range requests to the upstream", load(&m8.by_ranges)),
            m("roxpi_metadata_range_bytes_total", Counter, File, "metadata range bytes read", "bytes read from upstream wheels by range requests for metadata", load(&m8.range_bytes)),
            m("roxpi_metadata_by_download_total", Counter, File, "metadata made after a full download", "metadata made after downloading the whole wheel (the upstream ignored Range)", load(&m8.by_download)),
            m("roxpi_metadata_broken_total", Counter, File, "wheels without readable metadata", "wheels whose METADATA could not be read (404, no longer advertised)", load(&m8.broken)),
            m("roxpi_metadata_abandoned_total", Counter, File, "syntheses abandoned", "syntheses dropped before or during their range reads because no request waited for them any more", load(&m8.abandoned)),
            m("roxpi_metadata_replaced_total", Counter, File, "metadata replaced after verification", "range-read metadata replaced after the whole wheel was verified", load(&m8.replaced)),
            m("roxpi_file_verify_failures_total", Counter, File, "hash/length mismatches", "downloads refused for a length or hash mismatch", load(&f.verify_failures)),
            m("roxpi_file_write_errors_total", Counter, File, "write errors", "cache write errors (disk full)", load(&f.write_errors)),
            m("roxpi_file_upstream_failures_total", Counter, File, "upstream failures", "failed file downloads", load(&f.upstream_failures)),
            m("roxpi_file_open_busy_total", Counter, File, "opens refused (pool full)", "upstream opens refused because the open pool was full", load(&f.busy)),
            m("roxpi_file_downloads_in_flight", Gauge, File, "downloads in progress", "file downloads in progress (each shared by all its requesters)", app.files.in_flight() as u64),
            m("roxpi_file_evictions_total", Counter, File, "evictions", "files evicted from the cache", usage.evictions),
            m("roxpi_file_cache_files", Gauge, File, "files", "files in the cache", (usage.files - usage.pages) as u64),
            m("roxpi_file_cache_bytes", Gauge, File, "bytes cached", "bytes of cached files", usage.used - usage.page_bytes),
            m("roxpi_saved_pages", Gauge, File, "saved pages", "last good copies of project pages kept with the files (within the same cap)", usage.pages as u64),
            m("roxpi_saved_page_bytes", Gauge, File, "bytes of saved pages", "bytes of saved pages (within the file cache cap)", usage.page_bytes),
            m("roxpi_file_cache_reserved_bytes", Gauge, File, "bytes reserved for downloads", "bytes reserved for downloads in flight", usage.reserved),
            m("roxpi_file_cache_cap_bytes", Gauge, File, "cap", "the file cache cap", usage.cap),
        ];
        let mut metrics = metrics;
        if let Some(r) = app.files.remote() {
            #[rustfmt::skip]
            metrics.extend([
                m("roxpi_file_bucket_hits_total", Counter, File, "files read from the bucket", "files read from the bucket (verified before serving)", r.hits),
                m("roxpi_file_bucket_fallbacks_total", Counter, File, "bucket failures served from upstream", "bucket reads that failed (S3 error): the file came from the upstream", r.fallbacks),
                m("roxpi_file_bucket_mismatches_total", Counter, File, "bucket objects not matching their key", "bucket objects whose bytes did not match their key's hash: never served", r.mismatches),
                m("roxpi_file_uploads_total", Counter, File, "files put into the bucket", "new downloads put into the bucket", r.uploads),
                m("roxpi_file_upload_failures_total", Counter, File, "uploads given up", "uploads to the bucket given up after retries", r.upload_failures),
                m("roxpi_file_uploads_pending", Gauge, File, "uploads waiting", "uploads to the bucket waiting in the queue (saved pages, and files whose first put failed: the local copy is kept)", r.uploads_pending),
                m("roxpi_s3_get_requests_total", Counter, File, "S3 GETs", "S3 GetObject requests", r.gets),
                m("roxpi_s3_get_misses_total", Counter, File, "S3 GETs answered 404", "S3 GetObject requests answered 404 (not in the bucket)", r.get_misses),
                m("roxpi_s3_puts_total", Counter, File, "S3 PUTs", "objects put with one PutObject", r.puts),
                m("roxpi_s3_multipart_uploads_total", Counter, File, "S3 multipart uploads", "objects put with a multipart upload", r.multipart_uploads),
                m("roxpi_s3_aborted_uploads_total", Counter, File, "S3 multipart uploads aborted", "failed multipart uploads aborted (no parts left behind)", r.aborted_uploads),
                m("roxpi_s3_errors_total", Counter, File, "S3 errors", "S3 requests that failed or were refused", r.errors),
                m("roxpi_s3_skipped_reads_total", Counter, File, "S3 reads skipped (S3 not answering)", "bucket reads not tried because S3 did not answer within the last 10 s (served from the upstream)", r.skipped),
                m("roxpi_s3_read_bytes_total", Counter, File, "bytes read from S3", "bytes read from the bucket", r.bytes_read),
                m("roxpi_s3_written_bytes_total", Counter, File, "bytes written to S3", "bytes written to the bucket", r.bytes_written),
            ]);
        }
        Snapshot { metrics }
    }

    fn rows(&self, section: Section) -> Vec<(&'static str, String)> {
        self.metrics
            .iter()
            .filter(|m| m.section == section)
            .map(|m| {
                let value = if m.name.contains("bytes") {
                    human_bytes(m.value)
                } else {
                    m.value.to_string()
                };
                (m.label, value)
            })
            .collect()
    }

    /// Page hits and misses, file hits and misses (`recent::Counts`).
    fn hit_counts(&self) -> super::recent::Counts {
        [
            self.value("roxpi_index_hits_total"),
            self.value("roxpi_index_misses_total"),
            self.value("roxpi_file_hits_total"),
            self.value("roxpi_file_misses_total"),
        ]
    }

    /// A metric's value by name (0 when absent).
    fn value(&self, name: &str) -> u64 {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map_or(0, |m| m.value)
    }

    /// Prometheus text format: the counters and gauges, then `histograms`.
    pub fn prometheus(&self, histograms: impl FnOnce(&mut String)) -> String {
        let mut out = String::new();
        for m in &self.metrics {
            let kind = match m.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(
                out,
                "# HELP {0} {1}\n# TYPE {0} {kind}\n{0} {2}",
                m.name, m.help, m.value
            );
        }
        histograms(&mut out);
        out
    }
}

/// Per-route series of the index caches: name, type, help, value.
type RouteSeries = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::index_cache::IndexCache) -> u64,
);

const ROUTE_SERIES: [RouteSeries; 5] = [
    ("roxpi_route_index_large_copies", "gauge", "Copies of pages too large to keep that requests of each route still hold (loads of such pages wait while 2 are alive).", |c| c.large_copies() as u64),
    (
        "roxpi_route_index_cache_bytes",
        "gauge",
        "Bytes held by each route's index cache.",
        |c| c.usage().1,
    ),
    (
        "roxpi_route_index_cache_entries",
        "gauge",
        "Entries in each route's index cache.",
        |c| c.usage().0 as u64,
    ),
    (
        "roxpi_route_index_hits_total",
        "counter",
        "Index pages each route answered from its cache.",
        |c| load(&c.stats.hits),
    ),
    (
        "roxpi_route_index_misses_total",
        "counter",
        "Index pages each route fetched for a request.",
        |c| load(&c.stats.misses),
    ),
];

#[derive(Template)]
#[template(path = "home.html")]
struct HomeHtml<'a> {
    version: &'a str,
    /// What an operator asks first.
    glance: Vec<(&'static str, String)>,
    /// The file cache's use and cap, for the bar.
    fill: Option<(u64, u64)>,
    /// The address clients reached roxpi at (`Host`), and how.
    at: String,
    scheme: &'static str,
    /// The 10 projects with the most bytes served, sizes for people.
    top: Vec<(String, String)>,
    indexes: Vec<(String, String, u64)>,
    strategy: &'a str,
    offline: bool,
    stats: Vec<(&'static str, String)>,
    file_stats: Vec<(&'static str, String)>,
    server_stats: Vec<(&'static str, String)>,
    policy: Vec<(String, String)>,
    audit: Vec<(&'static str, u64)>,
    routes: Vec<(String, String, &'static str, String)>,
    token: bool,
    /// Hosted indexes: name, contents, upload URL path, notes.
    hosted: Vec<(String, String, String, String)>,
}

/// `hits / (hits + misses)` as a percentage, or "—" before any request.
fn ratio(hits: u64, misses: u64) -> String {
    match hits + misses {
        0 => "—".to_owned(),
        all => format!(
            "{:.1} % ({hits} of {all})",
            hits as f64 * 100.0 / all as f64
        ),
    }
}

/// The address clients reached roxpi at: the request's `Host` when it is
/// a plain host[:port], else the listen address.
fn reached_at(req: &crate::http::Request, app: &App) -> String {
    let ok = |h: &str| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
    };
    match req.header("host").filter(|h| ok(h)) {
        Some(h) => h.to_owned(),
        None => app.settings.bind.to_string(),
    }
}

/// The first lines of the home page: what an operator asks first.
fn glance(app: &App, snapshot: &Snapshot) -> Vec<(&'static str, String)> {
    let usage = app.files.usage();
    let counts = snapshot.hit_counts();
    let (recent, covers) = app.recent.window(std::time::Instant::now(), counts);
    let both = |h: usize| {
        let all = ratio(counts[h], counts[h + 1]);
        if covers.is_zero() {
            format!("{all} since start")
        } else {
            format!(
                "{all} since start; {} over the last {}",
                ratio(recent[h], recent[h + 1]),
                human_duration(covers)
            )
        }
    };
    let mut rows = vec![
        ("version", env!("CARGO_PKG_VERSION").to_owned()),
        ("up for", human_duration(app.started.elapsed())),
        ("page hit ratio", both(0)),
        ("file hit ratio", both(2)),
        (
            "served from the cache",
            human_bytes(snapshot.value("roxpi_file_bytes_served_total")),
        ),
    ];
    if usage.cap > 0 {
        rows.push((
            "disk cache",
            format!(
                "{} of {} ({:.0} %; files and saved pages)",
                human_bytes(usage.used),
                human_bytes(usage.cap),
                usage.used as f64 * 100.0 / usage.cap as f64
            ),
        ));
    }
    let down = upstream_rows(app);
    let slow: Vec<String> = app
        .origin
        .upstream_latencies()
        .into_iter()
        .filter(|(_, avg)| *avg > crate::origin::breaker::SLOW)
        .map(|(host, avg)| {
            format!(
                "{host}: slow (answers in {:.1} s on average)",
                avg.as_secs_f64()
            )
        })
        .collect();
    let upstream = if app.settings.offline {
        "offline mode: no upstream is contacted".to_owned()
    } else if !down.is_empty() || !slow.is_empty() {
        down.into_iter()
            .map(|(_, v)| v)
            .chain(slow)
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        "ok".to_owned()
    };
    rows.push(("upstream", upstream));
    rows
}

/// One row per upstream host whose breaker is open or probing.
fn upstream_rows(app: &App) -> Vec<(&'static str, String)> {
    let probe = app.settings.breaker.probe_every.as_secs().max(1);
    app.origin
        .breakers()
        .into_iter()
        .filter_map(|b| {
            let since = httpdate::fmt_http_date(b.down_since?);
            let state = if b.state == 2 { "probing" } else { "open" };
            Some((
                "upstream down",
                format!("{}: down since {since} (breaker {state}: misses answer at once, one probe every {probe} s)", b.host),
            ))
        })
        .collect()
}

pub fn home(app: &App, req: &crate::http::Request) -> Response {
    let snapshot = Snapshot::take(app);
    let glance = glance(app, &snapshot);
    let fill = app.files.usage();
    let fill = (fill.cap > 0).then(|| (fill.used.min(fill.cap), fill.cap));
    let at = reached_at(req, app);
    let mut file_stats = vec![(
        "cache dir",
        if app.settings.cache_size == 0 {
            "disabled (ROXPI_CACHE_SIZE=0)".to_owned()
        } else {
            app.settings.cache_dir.display().to_string()
        },
    )];
    if let Some(r) = app.files.remote() {
        file_stats.push((r.role, r.describe));
    }
    file_stats.extend(snapshot.rows(Section::File));
    let page = HomeHtml {
        version: env!("CARGO_PKG_VERSION"),
        glance,
        fill,
        at,
        scheme: if req.is_tls() { "https" } else { "http" },
        top: app
            .top
            .top(10)
            .into_iter()
            .map(|(p, n)| (p, human_bytes(n)))
            .collect(),
        indexes: app
            .default_cache
            .indexes()
            .iter()
            .map(|i| (i.id.to_string(), i.display().to_string(), i.ttl.as_secs()))
            .collect(),
        strategy: match app.settings.strategy {
            Strategy::Merge => "merge",
            Strategy::FirstIndex => "first-index",
        },
        offline: app.settings.offline,
        stats: upstream_rows(app)
            .into_iter()
            .chain(snapshot.rows(Section::Index))
            .collect(),
        file_stats,
        server_stats: snapshot.rows(Section::Server),
        policy: policy_rows(&app.policy().0),
        routes: app
            .routes()
            .into_iter()
            .map(|(prefix, indexes, strategy, cache)| {
                let strategy = match strategy {
                    Strategy::Merge => "merge",
                    Strategy::FirstIndex => "first-index",
                };
                let (entries, bytes) = cache.usage();
                let stats = &cache.stats;
                let use_ = format!(
                    "{entries} pages, {} ({bytes} bytes); {} hits, {} misses",
                    human_bytes(bytes),
                    load(&stats.hits),
                    load(&stats.misses)
                );
                (prefix, indexes.join(", "), strategy, use_)
            })
            .collect(),
        audit: app.audit.counts(),
        token: app.settings.admin_token.is_some(),
        hosted: hosted_rows(app),
    };
    match page.render() {
        Ok(html) => Response::new(200)
            .header("Content-Type", "text/html; charset=utf-8")
            .header("Cache-Control", "no-cache")
            .body(html),
        Err(e) => Response::text(500, format!("home page failed to render: {e}\n")),
    }
}

/// The hosted indexes' rows of the home page.
fn hosted_rows(app: &App) -> Vec<(String, String, String, String)> {
    let Some(h) = &app.hosted else {
        return Vec::new();
    };
    h.summary()
        .into_iter()
        .map(|s| {
            let mut notes = Vec::new();
            if s.protected {
                notes.push("read token needed".to_owned());
            }
            if !s.uploads {
                notes.push("no upload token: uploads refused".to_owned());
            }
            if s.allow_upstream.is_empty() {
                notes.push("its names are taken from no upstream".to_owned());
            } else {
                notes.push(format!(
                    "upstream also allowed for {}",
                    s.allow_upstream.join(", ")
                ));
            }
            (
                s.name.clone(),
                format!(
                    "{} projects, {} files, {}",
                    s.projects,
                    s.files,
                    human_bytes(s.bytes)
                ),
                format!("{}{}/", crate::hosted::PREFIX, s.name),
                notes.join("; "),
            )
        })
        .collect()
}

pub fn metrics(app: &App) -> Response {
    Response::new(200)
        .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        .header("Cache-Control", "no-store")
        .body({
            let snapshot = Snapshot::take(app);
            // A scrape keeps the home page's recent ratios sampled.
            app.recent
                .window(std::time::Instant::now(), snapshot.hit_counts());
            snapshot
        }
        .prometheus(|out| {
            app.latencies.render(out);
            let name = "roxpi_upstream_fetch_duration_seconds";
            out.push_str(&format!(
                "# HELP {name} Upstream requests: a page fetch whole, a file download to its response headers.\n# TYPE {name} histogram\n"
            ));
            app.default_cache.stats.fetch_seconds.render(name, "kind=\"page\"", out);
            app.files.stats.fetch_seconds.render(name, "kind=\"file\"", out);
            let name = "roxpi_build_info";
            out.push_str(&format!(
                "# HELP {name} The running build: its version and target.\n# TYPE {name} gauge\n{name}{{version=\"{}\",target=\"{}-{}\"}} 1\n",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::ARCH,
                std::env::consts::OS
            ));
            let name = "roxpi_upstream_breaker_state";
            out.push_str(&format!(
                "# HELP {name} Upstream hosts that failed lately: 0 closed (failures counted), 1 open (misses answer at once, no connect), 2 half-open (one probe in flight). A host that answers again is no longer listed.\n# TYPE {name} gauge\n"
            ));
            for b in app.origin.breakers() {
                let label = b.host.replace('\\', "\\\\").replace('"', "\\\"");
                out.push_str(&format!("{name}{{host=\"{label}\"}} {}\n", b.state));
            }
            let name = "roxpi_upstream_response_seconds";
            out.push_str(&format!(
                "# HELP {name} Each upstream host's moving average time to response headers (half per answer); above 1 s the home page calls it slow.\n# TYPE {name} gauge\n"
            ));
            for (host, avg) in app.origin.upstream_latencies() {
                let label = host.replace('\\', "\\\\").replace('"', "\\\"");
                out.push_str(&format!("{name}{{host=\"{label}\"}} {:.6}\n", avg.as_secs_f64()));
            }
            let name = "roxpi_route_indexes";
            out.push_str(&format!(
                "# HELP {name} Routes (the default /index/ and /simple/, and each [[route]] of ROXPI_CONFIG): how many indexes each has.\n# TYPE {name} gauge\n"
            ));
            let routes = app.routes();
            for (prefix, indexes, _, _) in &routes {
                let label = prefix.replace('\\', "\\\\").replace('"', "\\\"");
                out.push_str(&format!("{name}{{route=\"{label}\"}} {}\n", indexes.len()));
            }
            for (name, kind, help, pick) in ROUTE_SERIES {
                out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
                for (prefix, _, _, cache) in &routes {
                    let label = prefix.replace('\\', "\\\\").replace('"', "\\\"");
                    out.push_str(&format!("{name}{{route=\"{label}\"}} {}\n", pick(cache)));
                }
            }
            let name = "roxpi_policy_decisions_total";
            out.push_str(&format!(
                "# HELP {name} Policy decisions that changed an answer (files hidden, yanked, removed or refused), by rule.\n# TYPE {name} counter\n"
            ));
            for (rule, n) in app.audit.counts() {
                out.push_str(&format!("{name}{{rule=\"{rule}\"}} {n}\n"));
            }
            if let Some(h) = &app.hosted {
                hosted_metrics(&h.stats, out);
            }
            let name = "roxpi_read_refusals_total";
            out.push_str(&format!(
                "# HELP {name} Reads of a protected route or hosted index refused for want of its read token (401).\n# TYPE {name} counter\n{name} {}\n",
                app.read_refusals.load(std::sync::atomic::Ordering::Relaxed)
            ));
        }))
}

/// The hosted indexes' series.
fn hosted_metrics(s: &crate::hosted::UploadStats, out: &mut String) {
    use std::sync::atomic::Ordering::Relaxed;
    let name = "roxpi_uploads_total";
    out.push_str(&format!(
        "# HELP {name} Uploads accepted: stored, or already there with the same bytes.\n# TYPE {name} counter\n{name}{{result=\"stored\"}} {}\n{name}{{result=\"already_there\"}} {}\n",
        s.stored.load(Relaxed),
        s.already_there.load(Relaxed)
    ));
    let name = "roxpi_upload_refusals_total";
    out.push_str(&format!(
        "# HELP {name} Uploads refused, by reason (auth, form, filename, digest, metadata, size, conflict, failed).\n# TYPE {name} counter\n"
    ));
    for (reason, n) in crate::lock(&s.refused).iter() {
        out.push_str(&format!("{name}{{reason=\"{reason}\"}} {n}\n"));
    }
    for (name, help, v) in [
        (
            "roxpi_hosted_files",
            "Files in the hosted indexes.",
            &s.files,
        ),
        (
            "roxpi_hosted_bytes",
            "Bytes of the files in the hosted indexes.",
            &s.bytes,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}\n",
            v.load(Relaxed)
        ));
    }
}

/// The policy in force, as the home page shows it.
fn policy_rows(p: &crate::policy::Policy) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let c = &p.cooldown;
    if c.min_age.is_zero() && c.overrides.is_empty() {
        rows.push(("release cooldown".into(), "off".into()));
    } else {
        rows.push((
            "release cooldown".into(),
            format!(
                "{} ({:?}; untimed files: {:?})",
                humantime::format_duration(c.min_age),
                c.mode,
                c.untimed
            )
            .to_lowercase(),
        ));
    }
    for g in &c.exempt {
        rows.push(("cooldown exempt".into(), g.as_str().to_owned()));
    }
    for (g, d) in &c.overrides {
        rows.push((
            format!("cooldown for {}", g.as_str()),
            humantime::format_duration(*d).to_string(),
        ));
    }
    for r in &p.yanks {
        rows.push(("yanked".into(), format_rule(r)));
    }
    for r in &p.deny {
        rows.push(("denied".into(), format_rule(r)));
    }
    rows
}

fn format_rule(r: &crate::policy::Rule) -> String {
    match &r.reason {
        Some(reason) => format!("{} ({reason})", r.describe()),
        None => r.describe(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use clap::Parser;

    use crate::app::App;
    use crate::config::{Cli, Settings};
    use crate::http::{Body, Request};
    use crate::origin::fake::FakeOrigin;

    fn text(r: crate::http::Response) -> String {
        match r.into_body() {
            Body::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
            _ => panic!("a bytes body"),
        }
    }

    #[test]
    fn home_and_metrics_show_the_same_counters_server_ones_included() {
        let dir = tempfile::tempdir().unwrap();
        let cli = Cli::parse_from([
            "roxpi",
            "--index-url",
            "http://index.invalid/simple/",
            "--cache-dir",
            dir.path().to_str().unwrap(),
        ]);
        let server = Arc::new(crate::http::Stats::default());
        let app = Arc::new(
            App::new(
                Settings::from_cli(&cli).unwrap(),
                Arc::new(FakeOrigin::default()),
                Arc::clone(&server),
            )
            .unwrap(),
        );
        server.shed.store(3, Ordering::Relaxed);
        server.queue_timeouts.store(4, Ordering::Relaxed);
        server.handler_panics.store(5, Ordering::Relaxed);
        server.aborted.store(6, Ordering::Relaxed);
        let metrics = text(app.handle(&Request::new("GET", "/metrics")));
        let home =
            text(app.handle(&Request::new("GET", "/").with_header("Host", "cache.lan:5000")));
        // At a glance, and the address the client used.
        for want in [
            "up for",
            "page hit ratio",
            "file hit ratio",
            "<th>upstream</th><td>ok</td>",
            "pip install --index-url http://cache.lan:5000/index/",
            "poetry source add --priority=primary roxpi http://cache.lan:5000/simple/",
        ] {
            assert!(home.contains(want), "{want}:\n{home}");
        }
        // A Host that is not a plain host[:port] is not echoed.
        let odd = text(app.handle(&Request::new("GET", "/").with_header("Host", "a\"><b>x")));
        assert!(odd.contains("http://0.0.0.0:5000/index/"), "{odd}");
        assert!(!odd.contains("<b>x"));
        assert!(metrics.contains("roxpi_build_info{version=\""), "{metrics}");
        assert!(metrics.contains("\nroxpi_start_time_seconds "), "{metrics}");
        for (name, label, v) in [
            ("roxpi_http_shed_total", "shed at the connection cap", 3),
            ("roxpi_http_queue_timeouts_total", "queue timeouts", 4),
            ("roxpi_http_handler_panics_total", "handler panics", 5),
            ("roxpi_http_aborted_total", "aborted responses", 6),
        ] {
            assert!(
                metrics.contains(&format!("\n{name} {v}\n")),
                "{name}:\n{metrics}"
            );
            assert!(home.contains(&format!("{label}</td><td>{v}<")), "{label}");
        }
        // Every metric is on both, under its name and its label.
        let snap = super::Snapshot::take(&app);
        for m in &snap.metrics {
            assert!(
                metrics.contains(&format!("# TYPE {} ", m.name)),
                "{}",
                m.name
            );
            assert!(home.contains(m.label), "{}", m.label);
        }
    }

    #[test]
    fn people_read_sizes_durations_and_ratios() {
        use super::{human_bytes, human_duration, ratio};
        use std::time::Duration;
        let sizes = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (105_555_915, "100.7 MiB"),
            (5 << 30, "5.0 GiB"),
            (u64::MAX, "16.0 EiB"),
        ];
        for (n, want) in sizes {
            assert_eq!(human_bytes(n), want, "{n}");
        }
        for (s, want) in [
            (42, "42 s"),
            (125, "2 min 5 s"),
            (7_500, "2 h 5 min"),
            (277_200, "3 d 5 h"),
        ] {
            assert_eq!(human_duration(Duration::from_secs(s)), want);
        }
        assert_eq!(ratio(0, 0), "—");
        assert_eq!(ratio(3, 1), "75.0 % (3 of 4)");
    }
}
