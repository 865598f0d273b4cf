// Size: one state machine (a connection's request, response and keep-alive turns) and its pool, with the access line it writes.
//! Request workers and transfer threads.
//!
//! A request worker takes a connection that has bytes to read, reads and
//! parses the request, calls the handler, and writes the answer without
//! blocking. Pipelined requests already buffered are answered in turn; then
//! the connection goes back to the poller. A full socket parks the response
//! in the poller until writable; a `Body::Ready` stream with no bytes yet
//! waits on its readiness; only a `Body::Stream` (reads that may block) is
//! handed to a transfer thread, which finishes it with blocking writes.
//!
//! Workers wait in the poller's epoll set themselves (`Poller::next`):
//! measured on the file-hit path (2 CPUs), a poller thread handing ready
//! connections to workers over a crossbeam channel served 65–73k req/s, a
//! Mutex + Condvar queue 40k, workers in `epoll_wait` 100k: every hand-off
//! was a second wake-up and context switch per request.
//!
//! Transfer threads are started on demand up to a cap and leave after a
//! minute idle. Bookkeeping rule: `idle` counts waiting threads that no job
//! has claimed yet; `submit` claims one (or starts a thread) under the pool
//! lock, so a job never waits behind a thread that is about to exit.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::conn::{Conn, Mode, Outgoing, Pump, ReadOutcome};
use super::later::{Later, Waiting};
use super::request::{parse_request, Method, Parsed, Request, Version};
use super::response::{framing, write_head, Framing, HeadParams, Persistence, Response};
use super::Shared;

/// A connection with bytes to read, and when it started waiting for a
/// worker (`None`: the poller just reported it, so it has not waited).
pub(crate) struct Ready {
    pub conn: Conn,
    pub queued: Option<Instant>,
}

/// What a worker is handed.
pub(crate) enum Work {
    /// A connection with bytes to read.
    Conn(Ready),
    /// A parked request whose answer is ready (or whose deadline passed).
    Resume(Box<Waiting>),
    /// A response waiting for its socket to take more bytes.
    Write(Box<Transfer>),
    /// The client of the parked request with this waiting-table token
    /// hung up.
    HungUp(u64),
}

/// What the access log needs once a response is finished. Borrowed from the
/// request on the worker's fast path; owned when a transfer thread finishes.
struct Access<'a> {
    method: Cow<'a, Method>,
    target: Cow<'a, str>,
    status: u16,
    tag: Option<&'static str>,
    started: Instant,
    observe: Option<super::Observer>,
}

impl Access<'_> {
    fn into_owned(self) -> Access<'static> {
        Access {
            method: Cow::Owned(self.method.into_owned()),
            target: Cow::Owned(self.target.into_owned()),
            status: self.status,
            tag: self.tag,
            started: self.started,
            observe: self.observe,
        }
    }
}

/// A response being finished: by a transfer thread (streams), or by
/// workers whenever the poller finds its socket writable.
pub(crate) struct Transfer {
    pub(crate) conn: Conn,
    out: Outgoing,
    keep_alive: bool,
    access: Access<'static>,
}

/// Ready events one worker takes per `epoll_wait`. Measured on the warm
/// 11 KB file (2 cores, 2 workers): 1 → 71–77k req/s, 4 → 100k, 8 → 97–103k,
/// 16 → 103k (p99 the same at 4, 8 and 16);
/// a turn that makes the worker sleep less is what counts.
const EVENTS_PER_TURN: usize = 8;
/// A request that took longer than this hands the worker's other claimed
/// events back to the set (`Poller::hand_back`).
const SLOW_TURN: Duration = Duration::from_millis(2);
/// A worker that has served for this long without sleeping yields the CPU
/// at the end of its turn. Under load two workers always find a ready
/// connection in the shared set, so they never sleep, and the clients on
/// the same machine (a CI host's installers; wrk in the bench) wait for
/// the scheduler to preempt them: a warm 11 KB file at 16 connections had
/// p99 5–6 ms against static nginx's 0.5–2.5 ms (nginx's workers sleep
/// whenever their own connections are quiet). Measured (2 cores, wrk on the
/// same cores, 4 s runs): never yielding, p99 5.9–6.4 ms at 16 connections
/// and 6.4–6.5 ms at 256; yielding after 300 µs, 0.8–1.2 ms and 3.3–4.8
/// ms, at 88–108k req/s against 80–89k; after 1 ms, 1.7–2.2 ms and
/// 3.9–5.5 ms; after every turn, 0.5–1.1 ms but 20 % fewer requests.
/// With nothing else runnable the yield returns at once.
const YIELD_AFTER: Duration = Duration::from_micros(300);
/// A gap this long between two turns means the worker slept in between.
const SLEPT: Duration = Duration::from_micros(50);

pub(crate) fn worker_loop(shared: &Arc<Shared>, ready: &Receiver<Work>) {
    let mut events = Vec::with_capacity(EVENTS_PER_TURN);
    // Since when this worker has worked without sleeping.
    let mut busy_since: Option<Instant> = None;
    let mut last_end = Instant::now();
    loop {
        let work = shared
            .poller
            .next(ready, &mut events, Duration::from_millis(250));
        let started = Instant::now();
        if started.duration_since(last_end) > SLEPT {
            busy_since = None;
        }
        let idle = work.is_none();
        match work {
            Some(Work::Resume(waiting)) => {
                if catch_unwind(AssertUnwindSafe(|| resume(shared, *waiting))).is_err() {
                    log::error!("request worker recovered from a panic");
                }
            }
            Some(Work::HungUp(token)) => shared.waiting.abandon(shared, token),
            Some(Work::Write(t)) => {
                if catch_unwind(AssertUnwindSafe(|| write_more(shared, *t))).is_err() {
                    log::error!("request worker recovered from a panic");
                }
            }
            Some(Work::Conn(Ready { conn, queued })) => {
                if queued.is_some_and(|q| q.elapsed() > shared.config.queue_timeout) {
                    shared.stats.queue_timeouts.fetch_add(1, Ordering::Relaxed);
                    refuse(conn, 503, "server busy, retry shortly\n");
                    continue;
                }
                // `serve` catches handler panics itself; this guards the
                // worker against a bug anywhere else.
                if catch_unwind(AssertUnwindSafe(|| serve(shared, conn))).is_err() {
                    log::error!("request worker recovered from a panic");
                }
            }
            None => {
                if shared.stopping()
                    && events.is_empty()
                    && ready.is_empty()
                    && shared.poller.writes() == 0
                {
                    return;
                }
            }
        }
        let now = Instant::now();
        if !idle && !events.is_empty() && now.duration_since(started) > SLOW_TURN {
            shared.poller.hand_back(&mut events);
        }
        if !idle && events.is_empty() {
            // The end of a turn: a worker that has not slept for a while
            // lets other runnable threads go first (see `YIELD_AFTER`).
            let since = *busy_since.get_or_insert(started);
            if now.duration_since(since) > YIELD_AFTER {
                std::thread::yield_now();
                busy_since = None;
            }
        }
        last_end = now;
    }
}

/// Answers every complete request buffered on `conn`, then parks it.
fn serve(shared: &Arc<Shared>, mut conn: Conn) {
    let limits = shared.config.limits;
    if let Some(rx) = conn.receiving.take() {
        match super::body::receive(shared, conn, *rx) {
            Some(c) => conn = c,
            None => return,
        }
    }
    loop {
        let parsed = if conn.buf.is_empty() {
            Ok(Parsed::Partial)
        } else {
            parse_request(&conn.buf, &limits)
        };
        match parsed {
            Ok(Parsed::Complete { request, consumed }) => {
                conn.consume(consumed);
                conn.head_started = (!conn.buf.is_empty()).then(Instant::now);
                match respond(shared, conn, request) {
                    Some(c) if c.buf.is_empty() => {
                        let deadline = Instant::now() + shared.config.keep_alive_timeout;
                        shared.poller.park(c, deadline);
                        return;
                    }
                    Some(c) => conn = c,
                    None => return,
                }
            }
            Ok(Parsed::Streamed { request, consumed }) => {
                conn.consume(consumed);
                conn.head_started = None;
                match respond(shared, conn, request) {
                    Some(c) => conn = c,
                    None => return,
                }
                if conn.buf.is_empty() {
                    let deadline = Instant::now() + shared.config.keep_alive_timeout;
                    shared.poller.park(conn, deadline);
                    return;
                }
            }
            Ok(Parsed::ExpectsContinue) if !conn.continued => {
                conn.continued = true;
                // A short non-blocking write to an idle socket; if it does
                // not go out the client sends its body after its own wait.
                conn.send_short(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            Ok(Parsed::Partial | Parsed::ExpectsContinue) => match conn.fill(limits.max_buffered())
            {
                Ok(ReadOutcome::Data) => {
                    conn.head_started.get_or_insert_with(Instant::now);
                }
                Ok(ReadOutcome::WouldBlock) => {
                    let deadline = match conn.head_started {
                        Some(t) => t + shared.config.head_timeout,
                        None if conn.served == 0 => Instant::now() + shared.config.head_timeout,
                        None => Instant::now() + shared.config.keep_alive_timeout,
                    };
                    if conn.head_started.is_some() && Instant::now() >= deadline {
                        shared.stats.head_timeouts.fetch_add(1, Ordering::Relaxed);
                        refuse(conn, 408, "request head not received in time\n");
                    } else {
                        shared.poller.park(conn, deadline);
                    }
                    return;
                }
                // `Full` cannot happen without a parse error first; treat
                // it like the end of the connection.
                Ok(ReadOutcome::Eof) | Ok(ReadOutcome::Full) | Err(_) => return,
            },
            Err(e) => {
                shared.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
                log::info!(
                    target: "roxpi::access",
                    "{} \"-\" {} 0 0.0ms {}",
                    conn.peer,
                    e.status,
                    e.reason
                );
                refuse(conn, e.status, &format!("{}\n", e.reason));
                return;
            }
        }
    }
}

/// A response that failed while being sent: a 502 with the reason if no
/// byte has left yet, else a cut connection (never a complete-looking
/// wrong body).
fn fail(shared: &Shared, conn: Conn, out: &Outgoing, e: &std::io::Error) {
    shared.stats.aborted.fetch_add(1, Ordering::Relaxed);
    if out.nothing_sent() {
        refuse(
            conn,
            502,
            &format!("the response failed before its first byte: {e}\n"),
        );
    } else {
        conn.abort();
    }
}

/// Writes a short error answer and closes the connection.
fn refuse(mut conn: Conn, status: u16, reason: &str) {
    let mut response = Response::text(status, reason.to_owned());
    if status == 503 {
        response = response.header("Retry-After", "1");
    }
    let (mut out, _) = prepare(response, Version::Http11, false, false, 0);
    let _ = out.pump(&mut conn.io(), Mode::NonBlocking);
    conn.close();
}

/// Runs `f` (the handler, or a resume function) for `request`; a panic
/// becomes a 500.
fn run_handler(
    shared: &Shared,
    request: &Request,
    f: impl FnOnce(&Request) -> Response,
) -> (Response, bool) {
    match catch_unwind(AssertUnwindSafe(|| f(request))) {
        Ok(r) => (r, false),
        Err(_) => {
            shared.stats.handler_panics.fetch_add(1, Ordering::Relaxed);
            log::error!(
                "handler panicked on {} {}; answered 500",
                request.method(),
                request.target()
            );
            (Response::text(500, "internal server error\n"), true)
        }
    }
}

/// Runs the handler for one request and writes its response. Returns the
/// connection when it stays open and the response is fully written.
fn respond(shared: &Arc<Shared>, mut conn: Conn, mut request: Request) -> Option<Conn> {
    let started = Instant::now();
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    request.set_peer(conn.peer);
    request.set_tls(conn.tls.is_some());
    let (mut response, panicked) = run_handler(shared, &request, |r| (shared.handler)(r));
    conn.served += 1;
    if request.streamed_len().is_some() {
        if let Some(sink) = response.take_sink() {
            return super::body::start(shared, conn, request, sink, started);
        }
    }
    finish(shared, conn, request, response, panicked, started)
}

/// A parked request is back: its answer is ready (or its deadline passed).
fn resume(shared: &Arc<Shared>, waiting: Waiting) {
    let Waiting {
        conn,
        request,
        resume,
        started,
    } = waiting;
    let (response, panicked) = run_handler(shared, &request, resume);
    if let Some(conn) = finish(shared, conn, request, response, panicked, started) {
        // Pipelined requests behind it, or back to the poller.
        serve(shared, conn);
    }
}

/// Writes `response` (or parks the request if it is a `Later`).
pub(crate) fn finish(
    shared: &Arc<Shared>,
    conn: Conn,
    request: Request,
    mut response: Response,
    panicked: bool,
    started: Instant,
) -> Option<Conn> {
    if let Some(later) = response.take_later() {
        let Later {
            deadline,
            subscribe,
            resume,
        } = later;
        let limit = started + shared.config.park_limit;
        if Instant::now() < limit {
            let waiting = Waiting {
                conn,
                request,
                resume,
                started,
            };
            shared
                .waiting
                .park(shared, waiting, deadline.min(limit), subscribe);
            return None;
        }
        // Parked again and again past every deadline: answered here.
        shared.stats.overdue_now();
        log::warn!(
            "{} {} was not answered within {:?}: 504",
            request.method(),
            request.target(),
            shared.config.park_limit
        );
        response = Response::text(504, "no answer in time; retry shortly\n")
            .header("Retry-After", "5")
            .log_tag("OVERDUE");
    }
    if response.take_sink().is_some() {
        log::error!(
            "{} {}: a body sink for a request without a streamed body; answered 500",
            request.method(),
            request.target()
        );
        response = Response::text(500, "internal server error\n");
    }
    write_response(
        shared,
        conn,
        &request,
        response.checked(),
        panicked,
        started,
    )
}

fn write_response(
    shared: &Arc<Shared>,
    mut conn: Conn,
    request: &Request,
    response: Response,
    panicked: bool,
    started: Instant,
) -> Option<Conn> {
    let keep =
        request.wants_keep_alive() && !panicked && !shared.stopping() && !request.body_unread();
    let is_head = *request.method() == Method::Head;
    let status = response.status();
    let tag = response.take_log_tag();
    let (mut out, keep) = prepare(
        response,
        request.version(),
        is_head,
        keep,
        shared.config.keep_alive_timeout.as_secs(),
    );
    let access = Access {
        method: Cow::Borrowed(request.method()),
        target: Cow::Borrowed(request.target()),
        status,
        tag,
        started,
        observe: shared.config.observe.clone(),
    };
    if out.needs_thread() {
        shared.submit_transfer(Transfer {
            conn,
            out,
            keep_alive: keep,
            access: access.into_owned(),
        });
        return None;
    }
    match out.pump_up_to(&mut conn.io(), Mode::NonBlocking, WRITE_TURN) {
        Ok(Pump::Done) => {
            log_access(&conn, &access, out.body_sent, None);
            if keep {
                Some(conn)
            } else {
                conn.close();
                None
            }
        }
        Ok(Pump::Starved) => {
            starved(
                shared,
                Transfer {
                    conn,
                    out,
                    keep_alive: keep,
                    access: access.into_owned(),
                },
            );
            None
        }
        Ok(Pump::WouldBlock | Pump::Yield) => {
            // The poller waits for the socket; no thread does.
            let t = Transfer {
                conn,
                out,
                keep_alive: keep,
                access: access.into_owned(),
            };
            shared
                .poller
                .park_write(t, Instant::now() + shared.config.write_timeout);
            None
        }
        Err(e) => {
            log_access(&conn, &access, out.body_sent, Some(&e));
            fail(shared, conn, &out, &e);
            None
        }
    }
}

/// A `Body::Ready` stream with no bytes yet: the response waits on the
/// stream's readiness (no thread), then goes back to the workers; or, if
/// the stream will block from now on, to a transfer thread.
fn starved(shared: &Arc<Shared>, t: Transfer) {
    match t.out.ready() {
        Some(ready) if !ready.needs_thread() => {
            let back = Arc::clone(shared);
            ready.subscribe(Box::new(move || back.send_work(Work::Write(Box::new(t)))));
        }
        _ => shared.submit_transfer(t),
    }
}

/// Body bytes one worker turn writes before the connection goes back to
/// the poller (a fast client of a large file must not hold a worker).
const WRITE_TURN: u64 = 4 << 20;

/// A parked response whose socket can take more bytes.
fn write_more(shared: &Arc<Shared>, t: Transfer) {
    let Transfer {
        mut conn,
        mut out,
        keep_alive,
        access,
    } = t;
    match out.pump_up_to(&mut conn.io(), Mode::NonBlocking, WRITE_TURN) {
        Ok(Pump::Done) => {
            log_access(&conn, &access, out.body_sent, None);
            if !keep_alive || shared.stopping() {
                conn.close();
            } else {
                // Pipelined requests behind it, or back to the poller.
                serve(shared, conn);
            }
        }
        Ok(Pump::Starved) => starved(
            shared,
            Transfer {
                conn,
                out,
                keep_alive,
                access,
            },
        ),
        Ok(Pump::WouldBlock | Pump::Yield) => {
            let t = Transfer {
                conn,
                out,
                keep_alive,
                access,
            };
            shared
                .poller
                .park_write(t, Instant::now() + shared.config.write_timeout);
        }
        Err(e) => {
            log_access(&conn, &access, out.body_sent, Some(&e));
            fail(shared, conn, &out, &e);
        }
    }
}

/// A response whose socket stayed full past the write timeout.
pub(crate) fn write_timed_out(shared: &Shared, t: Transfer) {
    let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "client stopped reading");
    log_access(&t.conn, &t.access, t.out.body_sent, Some(&e));
    shared.stats.aborted.fetch_add(1, Ordering::Relaxed);
    t.conn.abort();
}

/// Turns a response into the bytes to send and whether the connection can
/// stay open afterwards.
fn prepare(
    response: Response,
    version: Version,
    is_head: bool,
    keep: bool,
    keep_alive_secs: u64,
) -> (Outgoing, bool) {
    let (status, headers, body) = response.into_parts();
    let framing = framing(status, body.len(), version);
    let keep = keep && framing != Framing::CloseDelimited;
    let persistence = if keep {
        Persistence::KeepAlive {
            timeout_secs: keep_alive_secs,
        }
    } else {
        Persistence::Close
    };
    let mut head = Vec::with_capacity(256);
    with_date(|date| {
        write_head(
            &mut head,
            status,
            &headers,
            &HeadParams {
                version,
                framing,
                persistence,
                date,
            },
        )
    });
    let body = (!is_head && framing != Framing::None).then_some(body);
    (Outgoing::new(head, body, framing), keep)
}

/// Calls `f` with the current `Date` value, formatted once per second per
/// thread.
fn with_date<R>(f: impl FnOnce(&str) -> R) -> R {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs || cached.1.is_empty() {
            *cached = (secs, httpdate::fmt_http_date(now));
        }
        f(&cached.1)
    })
}

fn log_access(conn: &Conn, a: &Access<'_>, bytes: u64, error: Option<&std::io::Error>) {
    let elapsed = a.started.elapsed();
    if let Some(observe) = &a.observe {
        observe(&super::Finished {
            target: &a.target,
            status: a.status,
            tag: a.tag,
            elapsed,
            cut: error.is_some(),
            bytes,
        });
    }
    if !crate::logging::access_enabled() {
        return;
    }
    crate::logging::access_line(|out| {
        access_text(out, conn.peer, a, bytes, elapsed);
        if let Some(e) = error {
            use std::io::Write;
            let _ = write!(out, " cut: {e}");
        }
    });
}

/// `PEER "METHOD TARGET" STATUS BYTES 1.2ms TAG`, written by hand: the
/// `fmt` machinery (SocketAddr, floats) cost 2 % of a warm hit.
fn access_text(
    out: &mut Vec<u8>,
    peer: std::net::SocketAddr,
    a: &Access<'_>,
    bytes: u64,
    elapsed: Duration,
) {
    match peer {
        std::net::SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(*octet));
            }
            out.push(b':');
            push_u64(out, u64::from(v4.port()));
        }
        v6 => {
            use std::io::Write;
            let _ = write!(out, "{v6}");
        }
    }
    out.extend_from_slice(b" \"");
    out.extend_from_slice(a.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(a.target.as_bytes());
    out.extend_from_slice(b"\" ");
    push_u64(out, u64::from(a.status));
    out.push(b' ');
    push_u64(out, bytes);
    out.push(b' ');
    // Tenths of a millisecond, rounded.
    let tenths = (elapsed.as_micros() + 50) / 100;
    push_u64(out, u64::try_from(tenths / 10).unwrap_or(u64::MAX));
    out.push(b'.');
    push_u64(out, (tenths % 10) as u64);
    out.extend_from_slice(b"ms ");
    out.extend_from_slice(a.tag.unwrap_or("-").as_bytes());
}

/// Appends `n` in decimal.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The elastic pool of transfer threads.
pub(crate) struct TransferPool {
    tx: Sender<Transfer>,
    rx: Receiver<Transfer>,
    state: Mutex<PoolState>,
    max: usize,
}

struct PoolState {
    /// Waiting threads not yet claimed by a job.
    idle: usize,
    total: usize,
}

const TRANSFER_IDLE_EXIT: Duration = Duration::from_secs(60);

impl TransferPool {
    pub fn new(max: usize) -> TransferPool {
        let (tx, rx) = crossbeam_channel::unbounded();
        TransferPool {
            tx,
            rx,
            state: Mutex::new(PoolState { idle: 0, total: 0 }),
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // Two counters updated together under the lock; never poisoned in
        // a way that matters, so a poisoned lock is used as is.
        crate::lock(&self.state)
    }

    /// Threads running now (for statistics and tests).
    pub fn threads(&self) -> usize {
        self.lock().total
    }
}

impl Shared {
    fn submit_transfer(self: &Arc<Self>, job: Transfer) {
        let pool = &self.transfers;
        let mut state = pool.lock();
        if state.idle > 0 {
            state.idle -= 1;
        } else if state.total < pool.max {
            let shared = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("roxpi-transfer".into())
                .stack_size(256 * 1024)
                .spawn(move || transfer_loop(&shared));
            match spawned {
                Ok(_) => state.total += 1,
                Err(e) => log::warn!("cannot start a transfer thread: {e}"),
            }
        }
        // Sent under the lock so that `idle` and the queue agree.
        let _ = pool.tx.send(job);
    }
}

fn transfer_loop(shared: &Arc<Shared>) {
    let pool = &shared.transfers;
    loop {
        crate::logging::flush_access();
        match pool.rx.recv_timeout(TRANSFER_IDLE_EXIT) {
            Ok(job) => {
                run_transfer(shared, job);
                pool.lock().idle += 1;
            }
            Err(RecvTimeoutError::Timeout) => {
                let mut state = pool.lock();
                // idle == 0: every waiting thread is claimed by a queued
                // job, possibly this one.
                if state.idle > 0 {
                    state.idle -= 1;
                    state.total -= 1;
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn run_transfer(shared: &Arc<Shared>, job: Transfer) {
    let Transfer {
        mut conn,
        mut out,
        keep_alive,
        access,
    } = job;
    let timeout = shared.config.write_timeout;
    let result = catch_unwind(AssertUnwindSafe(|| {
        out.pump(&mut conn.io(), Mode::Blocking(timeout))
    }));
    let result = match result {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::other("panic while sending the body")),
    };
    match result {
        Ok(_) => {
            log_access(&conn, &access, out.body_sent, None);
            if !keep_alive || shared.stopping() {
                conn.close();
            } else if conn.buf.is_empty() {
                let deadline = Instant::now() + shared.config.keep_alive_timeout;
                shared.poller.park(conn, deadline);
            } else {
                shared.send_work(Work::Conn(Ready {
                    conn,
                    queued: Some(Instant::now()),
                }));
            }
        }
        Err(e) => {
            log_access(&conn, &access, out.body_sent, Some(&e));
            fail(shared, conn, &out, &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0u64, 7, 10, 99, 12_345, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn an_access_line_reads_as_the_formatted_one_did() {
        let access = |tag| Access {
            method: Cow::Owned(Method::Get),
            target: Cow::Borrowed("/index/a/a-1.0.tar.gz?x=1"),
            status: 200,
            tag,
            started: Instant::now(),
            observe: None,
        };
        for (peer, micros, tag, want) in [
            (
                "127.0.0.1:40312",
                1_249,
                Some("HIT"),
                "127.0.0.1:40312 \"GET /index/a/a-1.0.tar.gz?x=1\" 200 11264 1.2ms HIT",
            ),
            (
                "10.0.0.255:1",
                1_250,
                None,
                "10.0.0.255:1 \"GET /index/a/a-1.0.tar.gz?x=1\" 200 11264 1.3ms -",
            ),
            (
                "[::1]:8080",
                12_345_678,
                Some("MISS"),
                "[::1]:8080 \"GET /index/a/a-1.0.tar.gz?x=1\" 200 11264 12345.7ms MISS",
            ),
            (
                "1.2.3.4:5",
                0,
                Some("HIT"),
                "1.2.3.4:5 \"GET /index/a/a-1.0.tar.gz?x=1\" 200 11264 0.0ms HIT",
            ),
        ] {
            let mut out = Vec::new();
            access_text(
                &mut out,
                peer.parse().unwrap(),
                &access(tag),
                11_264,
                Duration::from_micros(micros),
            );
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }
}
