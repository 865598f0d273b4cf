//! Request bodies too large to buffer (uploads), received without a
//! waiting worker.
//!
//! With `Limits::stream_bodies`, a head whose `Content-Length` is over
//! `max_body` goes to the handler before its body (`Parsed::Streamed`). The
//! handler refuses (any answer: the connection closes after it, its body
//! unread) or takes the body with `Response::receive(sink)`. The worker
//! then feeds the sink what the socket has, without blocking; when the
//! socket is empty the connection waits in the poller (no worker) until
//! more bytes arrive or `ServerConfig::body_timeout` passes without any.
//! A worker feeds one connection at most `TURN_BYTES` before it parks it
//! again, so one fast upload cannot keep a worker from everyone else.
//! When the last byte is in, `finish` gives the answer (which may be a
//! `Later`: a commit that waits on the network parks like any request).
//! A client that goes away mid-body drops the sink, which cleans up.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::conn::{Conn, ReadOutcome};
use super::request::Request;
use super::response::Response;
use super::Shared;

/// Where a streamed request body goes, chunk by chunk.
pub trait BodySink: Send {
    /// The next bytes of the body, in order. An `Err` is the answer: the
    /// rest of the body is not read and the connection closes after it.
    fn write(&mut self, bytes: &[u8]) -> Result<(), Response>;
    /// The whole body arrived (exactly its `Content-Length`): the answer.
    fn finish(self: Box<Self>, request: &Request) -> Response;
}

/// Most body bytes one worker turn reads for a connection.
const TURN_BYTES: u64 = 4 << 20;
/// Bytes asked of the socket per read.
const READ_BYTES: usize = 64 * 1024;

/// A body being received: parked with its connection between turns.
pub(crate) struct Receiving {
    request: Request,
    sink: Box<dyn BodySink>,
    remaining: u64,
    started: Instant,
}

/// The handler took the streamed body of `request`: sends `100 Continue`
/// when the client waits for it, then receives.
pub(crate) fn start(
    shared: &Arc<Shared>,
    mut conn: Conn,
    request: Request,
    sink: Box<dyn BodySink>,
    started: Instant,
) -> Option<Conn> {
    if request.expects_continue() && conn.buf.is_empty() {
        conn.send_short(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let remaining = request.streamed_len().unwrap_or(0);
    let rx = Receiving {
        request,
        sink,
        remaining,
        started,
    };
    receive(shared, conn, rx)
}

/// Feeds the sink what the connection has; parks the connection when the
/// socket is empty or the turn is used up; answers once the body is in.
pub(crate) fn receive(shared: &Arc<Shared>, mut conn: Conn, mut rx: Receiving) -> Option<Conn> {
    let mut turn = 0u64;
    loop {
        if !conn.buf.is_empty() && rx.remaining > 0 {
            let n = usize::try_from(rx.remaining).map_or(conn.buf.len(), |r| r.min(conn.buf.len()));
            let sink = &mut rx.sink;
            let buf = &conn.buf[..n];
            let wrote = catch_unwind(AssertUnwindSafe(|| sink.write(buf)));
            conn.consume(n);
            rx.remaining -= n as u64;
            turn += n as u64;
            match wrote {
                Ok(Ok(())) => {}
                Ok(Err(refusal)) => {
                    return super::worker::finish(
                        shared, conn, rx.request, refusal, false, rx.started,
                    )
                }
                Err(_) => return panicked(shared, conn, rx),
            }
        }
        if rx.remaining == 0 {
            let Receiving {
                mut request,
                sink,
                started,
                ..
            } = rx;
            request.body_received();
            let answer = catch_unwind(AssertUnwindSafe(|| sink.finish(&request)));
            let (response, panicked) = match answer {
                Ok(r) => (r, false),
                Err(_) => {
                    shared.stats.handler_panics.fetch_add(1, Ordering::Relaxed);
                    log::error!("a request body's sink panicked in finish; answered 500");
                    (Response::text(500, "internal server error\n"), true)
                }
            };
            return super::worker::finish(shared, conn, request, response, panicked, started);
        }
        if turn >= TURN_BYTES {
            park(shared, conn, rx);
            return None;
        }
        let max = conn.buf.len() + READ_BYTES;
        match conn.fill(max) {
            Ok(ReadOutcome::Data | ReadOutcome::Full) => {}
            Ok(ReadOutcome::WouldBlock) => {
                park(shared, conn, rx);
                return None;
            }
            Ok(ReadOutcome::Eof) | Err(_) => {
                log::info!(
                    target: "roxpi::access",
                    "{} \"{} {}\" - 0 {:.1}ms client left with {} body bytes unsent",
                    conn.peer,
                    rx.request.method(),
                    rx.request.target(),
                    rx.started.elapsed().as_secs_f64() * 1000.0,
                    rx.remaining
                );
                return None;
            }
        }
    }
}

/// Waits in the poller for the next bytes, at most `body_timeout`.
fn park(shared: &Arc<Shared>, mut conn: Conn, rx: Receiving) {
    conn.receiving = Some(Box::new(rx));
    let deadline = Instant::now() + shared.config.body_timeout;
    shared.poller.park(conn, deadline);
}

fn panicked(shared: &Arc<Shared>, conn: Conn, rx: Receiving) -> Option<Conn> {
    shared.stats.handler_panics.fetch_add(1, Ordering::Relaxed);
    log::error!(
        "a request body's sink panicked on {} {}; answered 500",
        rx.request.method(),
        rx.request.target()
    );
    super::worker::finish(
        shared,
        conn,
        rx.request,
        Response::text(500, "internal server error\n"),
        true,
        rx.started,
    )
}
