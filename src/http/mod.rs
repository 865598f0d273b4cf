// Size: the server's one entry point: its settings, counters, listeners (plain and TLS) and the accept loop that feeds the workers.
//! roxpi's HTTP/1.1 server. It knows nothing about PyPI: it runs a handler
//! `Fn(&Request) -> Response` and owns everything between the socket and
//! that call.
//!
//! # Threads
//! - **accept** (1): polls the listener and accepts in a loop. It never exits
//!   on an accept error: EMFILE, ENFILE, ENOBUFS, ECONNABORTED… are logged
//!   (rate-limited), counted, and followed by a 10–100 ms back-off. Each socket
//!   is made non-blocking with `TCP_NODELAY`. Above the connection cap a
//!   client gets an immediate `503` with `Retry-After`, written without
//!   blocking and followed by `shutdown(Write)` and a short drain.
//! - **poller** (an epoll set, see `poller`): parks idle connections with
//!   `EPOLLONESHOT`; a **timer** thread closes them after the keep-alive
//!   timeout (announced as `Keep-Alive: timeout=N`) or, for a partly
//!   received head, at the head deadline, and resumes parked requests at
//!   their deadlines. Idle connections hold no worker and no buffer.
//! - **request workers** (`workers`, fixed, default one per CPU): wait in
//!   `epoll_wait` on the poller's set themselves, read and parse a request
//!   (httparse), call the handler, write the answer without blocking,
//!   answer buffered pipelined requests, and park the connection again. A
//!   fresh connection that waited longer than `queue_timeout` for a worker
//!   gets a 503: queueing is normal, shedding is for overload.
//! - **transfer threads** (on demand, at most `max_transfers`): finish
//!   `Body::Stream` responses (whose reads may block) with blocking writes
//!   and a per-write inactivity timeout. Files, bytes and `Body::Ready`
//!   streams (a download in progress) are sent by the workers without
//!   blocking: a full socket waits in the poller, a stream with no bytes yet
//!   waits on its readiness.
//!
//! # Limits
//! Request head ≤ 16 KiB and ≤ 64 fields (431), target ≤ 8 KiB (414), the
//! whole head within `head_timeout` of its first byte (408 or close — a
//! trickling client is parked between bytes, so it never holds a worker),
//! request bodies ≤ 64 KiB read and handed over (413 beyond, or, with
//! `Limits::stream_bodies`, streamed to a handler's `BodySink`: see `body`),
//! `Transfer-Encoding` in a request → 501. The connection cap is derived from
//! `RLIMIT_NOFILE` (raised to the hard limit at start), keeping a reserve of
//! descriptors for upstream sockets, temp files and downloads.
//!
//! # Responses
//! `Content-Length` whenever the length is known, chunked for a stream of
//! unknown length (close-delimited for HTTP/1.0), no body for HEAD. Shared
//! bytes go out with the head in one `writev`; file ranges by an explicit
//! `sendfile` loop after the head sent with `MSG_MORE`; a stream that fails
//! or delivers the wrong length cuts the connection with a reset. A panic in
//! the handler becomes a 500 and the worker lives on. Response header values
//! are validated (no CR/LF/NUL). One access-log line per response goes to the
//! access log (`logging::access`: batched per thread, written by its own
//! thread; no per-request lock, channel send or wake-up).
//!
//! # Shutdown
//! `Server::shutdown` stops accepting, closes idle connections, lets
//! in-flight responses finish (with `Connection: close`) within a bounded
//! wait, and returns.

mod body;
pub mod conditional;
mod conn;
mod later;
mod poller;
mod probe;
mod request;
mod response;
pub mod tls;
mod worker;

pub use body::BodySink;
pub use later::{settle, Later, Outcome, Parked, Resume, Waker};
pub use probe::{answer_bytes, probe_target, Probe, ProbeAnswer};
pub use request::{keep_alive, parse_request, HeadError, Limits, Method, Parsed, Request, Version};
pub use response::{Body, FileRange, ReadyStream, Response, Stream, StreamReady};

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{AddressFamily, SendFlags, SocketFlags, SocketType};

use conn::Conn;
use later::WaitingTable;
use poller::Poller;
use worker::{Ready, TransferPool, Work};

/// Server settings. `Default` gives production values.
#[derive(Clone)]
pub struct ServerConfig {
    /// Request worker threads.
    pub workers: usize,
    /// Most threads finishing long or slow responses at once.
    pub max_transfers: usize,
    /// Time for a whole request head to arrive, from its first byte (and
    /// for a new connection's first request).
    pub head_timeout: Duration,
    /// How long an idle kept-alive connection stays open.
    pub keep_alive_timeout: Duration,
    /// A blocked write fails after this long without progress.
    pub write_timeout: Duration,
    /// How long a ready connection may wait for a worker before a 503.
    pub queue_timeout: Duration,
    /// A streamed request body (`Response::receive`) fails after this
    /// long without a byte.
    pub body_timeout: Duration,
    /// Connection cap; `None` derives it from the descriptor limit.
    pub max_connections: Option<usize>,
    pub limits: Limits,
    /// The counters; pass your own to read them elsewhere (`/metrics`).
    pub stats: Arc<Stats>,
    /// Probes (`/health`, `/ready`) the accept thread answers itself when
    /// their request is already there (`probe`).
    pub probe: Option<Probe>,
    /// Called once per finished response (latency histograms).
    pub observe: Option<Observer>,
    /// The longest a request may stay parked, however often its handler
    /// parks it again: past it, it is answered 504 and counted overdue. A
    /// guard over every handler's own deadlines.
    pub park_limit: Duration,
    /// TLS on the listen address, or on a second one.
    pub tls: Option<TlsListen>,
}

/// Where TLS is served.
#[derive(Clone, Debug)]
pub struct TlsListen {
    pub certs: Arc<tls::TlsCerts>,
    /// `None`: the listen address speaks TLS; else this second address
    /// does, and the listen address stays plain HTTP.
    pub bind: Option<SocketAddr>,
}

/// A finished response, as the observer sees it.
pub struct Finished<'a> {
    /// The request target (path and query).
    pub target: &'a str,
    pub status: u16,
    /// The response's `log_tag` (HIT, MISS…).
    pub tag: Option<&'static str>,
    /// From the request head to the last byte sent.
    pub elapsed: Duration,
    /// The body was cut (client gone, failed stream).
    pub cut: bool,
    /// Body bytes sent.
    pub bytes: u64,
}

/// Sees every finished response; must be cheap (atomics).
pub type Observer = Arc<dyn Fn(&Finished<'_>) + Send + Sync>;

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("workers", &self.workers)
            .field("max_transfers", &self.max_transfers)
            .field("head_timeout", &self.head_timeout)
            .field("keep_alive_timeout", &self.keep_alive_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("queue_timeout", &self.queue_timeout)
            .field("max_connections", &self.max_connections)
            .field("probe", &self.probe.is_some())
            .field("observe", &self.observe.is_some())
            .field("park_limit", &self.park_limit)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            workers: default_workers(),
            max_transfers: 512,
            head_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(30),
            queue_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(30),
            max_connections: None,
            limits: Limits::default(),
            stats: Arc::new(Stats::default()),
            probe: None,
            observe: None,
            park_limit: Duration::from_secs(300),
            tls: None,
        }
    }
}

/// Default request workers: one per CPU, at least 2 (`ROXPI_WORKERS=auto`).
/// Chosen by `benches/http_server.rs` and `benches/file_path.rs`: workers
/// wait in epoll themselves and never wait on the network, so more workers
/// than CPUs only add wake-ups (warm 11 KB file, 2 CPUs: 2 workers 100k
/// req/s, 4 → 86k, 8 → 77k, 32 → 70k).
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(2, std::num::NonZeroUsize::get)
        .max(2)
}

/// Counters kept by the server (read them with `Server::stats`).
#[derive(Default, Debug)]
pub struct Stats {
    pub accepted: AtomicU64,
    pub accept_errors: AtomicU64,
    /// Connections refused with 503 at the cap.
    pub shed: AtomicU64,
    /// Ready connections that waited too long for a worker (503).
    pub queue_timeouts: AtomicU64,
    pub requests: AtomicU64,
    pub bad_requests: AtomicU64,
    pub head_timeouts: AtomicU64,
    pub handler_panics: AtomicU64,
    /// Responses cut mid-body (client gone, write timeout, failed stream).
    pub aborted: AtomicU64,
    /// Requests parked now until their answer is ready (a gauge).
    pub waiting: AtomicU64,
    /// Parked requests dropped because their client hung up.
    pub abandoned: AtomicU64,
    /// Probes answered by the accept thread (never behind the workers).
    pub probes: AtomicU64,
    /// Requests still unanswered at the park limit (answered 504), and
    /// when the last one was (ms since the Unix epoch).
    pub overdue: AtomicU64,
    pub last_overdue_ms: AtomicU64,
}

impl Stats {
    /// Counts an overdue request.
    pub fn overdue_now(&self) {
        self.overdue.fetch_add(1, Ordering::Relaxed);
        self.last_overdue_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// The overdue count, if a request was overdue in the last 30 s.
    pub fn recently_overdue(&self) -> Option<u64> {
        let last = self.last_overdue_ms.load(Ordering::Relaxed);
        (last > 0 && unix_ms().saturating_sub(last) < 30_000)
            .then(|| self.overdue.load(Ordering::Relaxed))
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

type Handler = Box<dyn Fn(&Request) -> Response + Send + Sync>;

pub(crate) struct Shared {
    config: ServerConfig,
    handler: Handler,
    poller: Poller,
    ready_tx: Sender<Work>,
    /// Requests parked until their answer is ready.
    waiting: WaitingTable,
    transfers: TransferPool,
    stop: AtomicBool,
    open: Arc<AtomicUsize>,
    stats: Arc<Stats>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Hands work to the request workers.
    fn send_work(&self, work: Work) {
        match self.ready_tx.send(work) {
            Ok(()) => self.poller.signal(),
            Err(e) => drop(e.into_inner()),
        }
    }
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    max_connections: usize,
}

impl Server {
    /// Binds `addr` and starts every thread. Port 0 picks a free port
    /// (see `local_addr`).
    pub fn start<H>(addr: SocketAddr, config: ServerConfig, handler: H) -> io::Result<Server>
    where
        H: Fn(&Request) -> Response + Send + Sync + 'static,
    {
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;
        let mut listeners = Vec::new();
        let mut tls_addr = None;
        match &config.tls {
            None => listeners.push((listener, None)),
            Some(TlsListen { certs, bind: None }) => {
                tls_addr = Some(addr);
                listeners.push((listener, Some(Arc::clone(certs))));
            }
            Some(TlsListen {
                certs,
                bind: Some(second),
            }) => {
                let tls_listener = bind(*second)?;
                tls_addr = Some(tls_listener.local_addr()?);
                listeners.push((listener, None));
                listeners.push((tls_listener, Some(Arc::clone(certs))));
            }
        }
        let nofile = raise_nofile_limit();
        let max_connections = config
            .max_connections
            .unwrap_or_else(|| connection_cap(nofile));
        let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
        let stats = Arc::clone(&config.stats);
        let shared = Arc::new(Shared {
            transfers: TransferPool::new(config.max_transfers),
            poller: Poller::new()?,
            config,
            handler: Box::new(handler),
            ready_tx,
            waiting: WaitingTable::default(),
            stop: AtomicBool::new(false),
            open: Arc::new(AtomicUsize::new(0)),
            stats,
        });
        let mut threads = Vec::new();
        for i in 0..shared.config.workers.max(1) {
            let (s, rx) = (Arc::clone(&shared), ready_rx.clone());
            threads.push(spawn(&format!("roxpi-worker-{i}"), move || {
                worker::worker_loop(&s, &rx)
            })?);
        }
        let s = Arc::clone(&shared);
        threads.push(spawn("roxpi-timers", move || s.poller.run_timers(&s))?);
        let s = Arc::clone(&shared);
        threads.push(spawn("roxpi-accept", move || {
            accept_loop(&s, &listeners, max_connections)
        })?);
        log::debug!(
            "http server on {addr}: {} workers, up to {max_connections} connections (nofile {nofile})",
            shared.config.workers
        );
        Ok(Server {
            addr,
            tls_addr,
            shared,
            threads,
            max_connections,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address that speaks TLS, if any (the listen address, or the
    /// second one).
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The connection cap in force.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Open client connections (parked, queued and being served).
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::Acquire)
    }

    /// Requests parked until their answer is ready (no thread held).
    pub fn waiting_requests(&self) -> usize {
        self.shared.waiting.len()
    }

    /// Responses waiting in the poller for their client to read more.
    pub fn parked_writes(&self) -> usize {
        self.shared.poller.writes()
    }

    /// Idle connections waiting in the poller.
    pub fn parked_connections(&self) -> usize {
        self.shared.poller.parked()
    }

    /// Transfer threads currently alive.
    pub fn transfer_threads(&self) -> usize {
        self.shared.transfers.threads()
    }

    /// Stops accepting, closes idle connections and waits up to `grace` for
    /// in-flight responses. Returns whether everything finished in time.
    pub fn shutdown(self, grace: Duration) -> bool {
        self.shared.stop.store(true, Ordering::Release);
        let deadline = Instant::now() + grace;
        while self.shared.open.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                log::warn!(
                    "shutdown: {} connections still busy after {grace:?}",
                    self.shared.open.load(Ordering::Acquire)
                );
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for t in self.threads {
            let _ = t.join();
        }
        true
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.to_owned()).spawn(f)
}

/// Creates the listening socket with a deep backlog (bursts of CI jobs).
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
    rustix::net::bind(&fd, &addr).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("cannot bind {addr}: {e}"),
        )
    })?;
    rustix::net::listen(&fd, 1024)?;
    Ok(TcpListener::from(fd))
}

/// Raises the soft descriptor limit to the hard one; returns the new soft
/// limit.
pub fn raise_nofile_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum {
        if limit.current.is_some_and(|soft| soft < hard) {
            limit.current = Some(hard);
            if let Err(e) = setrlimit(Resource::Nofile, limit) {
                log::warn!("cannot raise RLIMIT_NOFILE to {hard}: {e}");
            }
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(1 << 20)
}

/// Descriptors never used for client connections: stdio, listener, epoll,
/// log and lock files.
const BASE_FDS: u64 = 16;

/// The connection cap for a descriptor limit: a quarter (16 to 1024) stays
/// in reserve for upstream sockets, temp files and downloads (pure).
pub fn connection_cap(nofile: u64) -> usize {
    let reserve = fd_reserve(nofile);
    let cap = nofile.saturating_sub(reserve + BASE_FDS).max(4);
    usize::try_from(cap.min(1 << 20)).unwrap_or(1 << 20)
}

/// The descriptors kept out of the connection cap (pure): for upstream
/// sockets (`socket_budget`), temp files and downloads.
pub fn fd_reserve(nofile: u64) -> u64 {
    (nofile / 4).clamp(16, 1024)
}

/// A listening socket, and the certificates if it speaks TLS.
type Listener = (TcpListener, Option<Arc<tls::TlsCerts>>);

// Long: one loop: accept, limits, probes, hand-over, errors.
fn accept_loop(shared: &Arc<Shared>, listeners: &[Listener], cap: usize) {
    let tick = Timespec {
        tv_sec: 0,
        tv_nsec: 200_000_000,
    };
    let mut backoff = Duration::from_millis(10);
    let mut last_report: Option<Instant> = None;
    while !shared.stopping() {
        let mut fds: Vec<PollFd<'_>> = listeners
            .iter()
            .map(|(l, _)| PollFd::new(l, PollFlags::IN))
            .collect();
        match rustix::event::poll(&mut fds, Some(&tick)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => {
                log::error!("poll on the listener failed: {e}");
                std::thread::sleep(backoff);
                continue;
            }
        }
        let readable: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        for ((listener, certs), _) in listeners.iter().zip(readable).filter(|(_, r)| *r) {
            loop {
                match rustix::net::acceptfrom_with(
                    listener,
                    SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
                ) {
                    Ok((fd, peer)) => {
                        backoff = Duration::from_millis(10);
                        shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
                        let stream = TcpStream::from(fd);
                        let peer = peer
                            .and_then(|p| SocketAddr::try_from(p).ok())
                            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                        let session = match certs.as_ref().map(|c| c.session()).transpose() {
                            Ok(s) => s,
                            Err(e) => {
                                log::warn!("TLS session for {peer}: {e}");
                                continue;
                            }
                        };
                        let is_tls = session.is_some();
                        let open = shared.open.fetch_add(1, Ordering::AcqRel) + 1;
                        // The guard inside `Conn` gives the slot back on drop.
                        let conn = Conn::new(stream, session, peer, Arc::clone(&shared.open));
                        // A probe whose request is already there is answered
                        // here, even beyond the cap (where its request gets a
                        // moment to arrive before the connection is shed).
                        // (Not through TLS: its bytes are records, read by a worker.)
                        let probe = shared.config.probe.as_ref().filter(|_| !is_tls);
                        let answered = probe.and_then(|p| {
                            probe::try_answer(&conn, p).or_else(|| {
                                (open > cap && probe::wait_readable(&conn, OVER_CAP_WAIT))
                                    .then(|| probe::try_answer(&conn, p))
                                    .flatten()
                            })
                        });
                        if let Some(status) = answered {
                            shared.stats.probes.fetch_add(1, Ordering::Relaxed);
                            log::info!(target: "roxpi::access", "{} \"probe\" {status} 0.0ms PROBE", conn.peer);
                            conn.close();
                            continue;
                        }
                        if open > cap {
                            shared.stats.shed.fetch_add(1, Ordering::Relaxed);
                            if is_tls {
                                // No handshake yet to answer through.
                                conn.close();
                            } else {
                                shed(conn);
                            }
                            continue;
                        }
                        let _ = rustix::net::sockopt::set_tcp_nodelay(&conn.stream, true);
                        shared.send_work(Work::Conn(Ready {
                            conn,
                            queued: Some(Instant::now()),
                        }));
                    }
                    Err(rustix::io::Errno::AGAIN) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => {
                        shared.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                        let now = Instant::now();
                        if last_report.is_none_or(|t| now - t >= Duration::from_secs(10)) {
                            last_report = Some(now);
                            log::warn!(
                                "accept failed: {e} ({} accept errors so far); backing off",
                                shared.stats.accept_errors.load(Ordering::Relaxed)
                            );
                        }
                        if e != rustix::io::Errno::CONNABORTED {
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_millis(100));
                        }
                        break;
                    }
                }
            }
        }
    }
}

/// How long a connection beyond the cap may take to send its request
/// before it is shed (a probe's is answered instead).
const OVER_CAP_WAIT: Duration = Duration::from_millis(2);

/// The answer to a client beyond the connection cap.
const SHED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\nContent-Length: 33\r\nConnection: close\r\n\r\ntoo many connections, retry soon\n";

fn shed(conn: Conn) {
    let _ = rustix::net::send(
        &conn.stream,
        SHED_RESPONSE,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    );
    conn.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shed_response_length_is_right() {
        let text = std::str::from_utf8(SHED_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    #[test]
    fn connection_cap_keeps_a_reserve() {
        let cases: &[(u64, usize)] = &[
            (0, 4),
            (32, 4),
            (64, 32),
            (1024, 752),
            (4096, 3056),
            (65536, 64496),
        ];
        for (nofile, want) in cases {
            assert_eq!(connection_cap(*nofile), *want, "nofile {nofile}");
        }
    }
}
