// Size: one concept (a connection's socket I/O, plain and TLS: the non-blocking read and the write state machine that both share).
//! One client connection and the socket I/O on it: non-blocking reads into
//! the request buffer, and `Outgoing`, the state of a response being written
//! (head, then shared bytes, a file range by `sendfile`, or a stream). An
//! `Outgoing` can be pumped without blocking by a request worker and, when
//! the client is slow or the body is long, finished by a transfer thread.
//!
//! Sockets are always non-blocking; a blocking pump waits with `poll` and a
//! per-write inactivity timeout, never a whole-body timeout.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::SendFlags;

use super::response::{chunk_header, FileRange, Framing, Stream, StreamReady, LAST_CHUNK};

/// An accepted client connection.
pub(crate) struct Conn {
    pub stream: TcpStream,
    /// The TLS session of a connection to the TLS listener.
    pub tls: Option<Box<rustls::ServerConnection>>,
    pub peer: SocketAddr,
    /// Bytes read but not yet consumed by a request (partial or pipelined).
    pub buf: Vec<u8>,
    /// When the first byte of the current, incomplete request arrived.
    pub head_started: Option<Instant>,
    /// Requests answered on this connection.
    pub served: u64,
    /// Whether the socket is registered with the poller's epoll set.
    pub registered: bool,
    /// The poller's key for this connection, the same for its whole life
    /// (one atomic increment per connection, none per request).
    pub token: u64,
    /// `100 Continue` was sent for the request at the head of `buf`.
    pub continued: bool,
    /// A request body being received (`body::receive`).
    pub receiving: Option<Box<super::body::Receiving>>,
    _open: OpenGuard,
}

/// Connection tokens; 0 is the poller's work channel.
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// Counts open connections; the count drops when the connection does.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) enum ReadOutcome {
    Data,
    Eof,
    WouldBlock,
    /// The buffer already holds the most a request may need.
    Full,
}

impl Conn {
    /// Wraps an accepted socket; `open` was already incremented for it.
    pub fn new(
        stream: TcpStream,
        tls: Option<rustls::ServerConnection>,
        peer: SocketAddr,
        open: Arc<AtomicUsize>,
    ) -> Conn {
        Conn {
            stream,
            tls: tls.map(Box::new),
            peer,
            buf: Vec::new(),
            head_started: None,
            served: 0,
            registered: false,
            token: NEXT_TOKEN.fetch_add(1, Ordering::Relaxed),
            continued: false,
            receiving: None,
            _open: OpenGuard(open),
        }
    }

    /// The socket, and the TLS session if any, for writing a response.
    pub fn io(&mut self) -> Io<'_> {
        Io {
            sock: &self.stream,
            tls: self.tls.as_deref_mut(),
        }
    }

    /// A short answer written without blocking, if it fits (`100
    /// Continue`); through TLS when the connection has it.
    pub fn send_short(&mut self, bytes: &[u8]) {
        match self.tls.as_deref_mut() {
            None => {
                let _ = send(&self.stream, bytes, SendFlags::empty());
            }
            Some(tls) => {
                let _ = tls.writer().write_all(bytes);
                let _ = super::tls::flush(tls, &self.stream);
            }
        }
    }

    /// One non-blocking read, appending to `buf` up to `max` bytes in all.
    pub fn fill(&mut self, max: usize) -> io::Result<ReadOutcome> {
        if self.buf.len() >= max {
            return Ok(ReadOutcome::Full);
        }
        if let Some(tls) = self.tls.as_deref_mut() {
            return fill_tls(tls, &self.stream, &mut self.buf, max);
        }
        let want = (max - self.buf.len()).min(16 * 1024);
        self.buf.reserve(want);
        loop {
            let spare = rustix::buffer::spare_capacity(&mut self.buf);
            match rustix::net::recv(&self.stream, spare, rustix::net::RecvFlags::DONTWAIT) {
                Ok((0, _)) => return Ok(ReadOutcome::Eof),
                Ok(_) => return Ok(ReadOutcome::Data),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => return Ok(ReadOutcome::WouldBlock),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Drops consumed bytes; frees the buffer when nothing is left so that
    /// an idle connection holds no memory.
    pub fn consume(&mut self, n: usize) {
        self.continued = false;
        if n >= self.buf.len() {
            self.buf = Vec::new();
        } else {
            self.buf.drain(..n);
        }
    }

    /// Ends the connection politely: no more writes, read away what the
    /// client already sent (closing with unread bytes sends a reset that can
    /// destroy the response in flight), then close.
    pub fn close(mut self) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.send_close_notify();
            let _ = super::tls::flush(tls, &self.stream);
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        drain(&self.stream);
    }

    /// Cuts the connection with a reset: the client cannot mistake what it
    /// got for a complete body.
    pub fn abort(self) {
        let _ = rustix::net::sockopt::set_socket_linger(&self.stream, Some(Duration::ZERO));
    }
}

/// `Conn::fill` on a TLS connection: the records the socket has, then all
/// the plaintext they hold (none may stay inside rustls: the poller wakes
/// only for the socket). The handshake's answers are written on the way.
fn fill_tls(
    tls: &mut rustls::ServerConnection,
    sock: &TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<ReadOutcome> {
    let mut s = sock;
    let mut eof = false;
    if tls.is_handshaking() && !tls.wants_write() {
        match first_bytes(sock) {
            // Nothing yet, or the start of a word: wait. Reading now would
            // let rustls take a plain request that arrives meanwhile and
            // answer it with an alert.
            FirstBytes::Wait => return Ok(ReadOutcome::WouldBlock),
            FirstBytes::PlainHttp => {
                // Plain HTTP on the TLS port: say so, as nginx does, instead
                // of a handshake failure the client shows as an empty reply.
                // The request is read away first: closing with unread bytes
                // sends a reset that can destroy the answer.
                drain(sock);
                let _ = send(sock, PLAIN_ON_TLS, SendFlags::empty());
                let _ = sock.shutdown(Shutdown::Write);
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "plain HTTP on the TLS port",
                ));
            }
            FirstBytes::Other => {}
        }
    }
    loop {
        match tls.read_tls(&mut s) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(_) if tls.wants_read() => {}
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    if let Err(e) = tls.process_new_packets() {
        // The alert goes out before the close.
        let _ = super::tls::flush(tls, sock);
        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
    }
    match super::tls::flush(tls, sock) {
        Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
        _ => {}
    }
    let before = buf.len();
    while buf.len() < max {
        let start = buf.len();
        buf.resize(start + (max - start).min(16 * 1024), 0);
        let got = tls.reader().read(&mut buf[start..]);
        match got {
            Ok(n) => {
                buf.truncate(start + n);
                if n == 0 {
                    eof = true;
                    break;
                }
            }
            Err(e) => {
                buf.truncate(start);
                if e.kind() == io::ErrorKind::WouldBlock {
                    break;
                }
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    eof = true;
                    break;
                }
                return Err(e);
            }
        }
    }
    Ok(if buf.len() > before {
        ReadOutcome::Data
    } else if eof {
        ReadOutcome::Eof
    } else if buf.len() >= max {
        ReadOutcome::Full
    } else {
        ReadOutcome::WouldBlock
    })
}

/// The answer to a plain HTTP request on the TLS port.
const PLAIN_ON_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 56\r\nConnection: close\r\n\r\nThis port speaks HTTPS: use https:// in the index URL.\r\n";

/// What the bytes waiting on a TLS connection in its handshake are.
#[derive(Debug, PartialEq, Eq)]
enum FirstBytes {
    /// None yet, or too few to tell a plain request line from a record.
    Wait,
    /// A plain HTTP request line (`GET /…`): a method word of capitals.
    PlainHttp,
    /// Anything else: a TLS record (its first byte is below 0x20), the
    /// end of the connection, or an error, for rustls to see.
    Other,
}

/// Peeks at the bytes waiting on `sock` without taking them.
fn first_bytes(sock: &TcpStream) -> FirstBytes {
    let mut head = [0u8; 8];
    match rustix::net::recv(
        sock,
        &mut head,
        rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
    ) {
        Ok((0, _)) => FirstBytes::Other,
        Ok((n, _)) => classify_first_bytes(&head[..n.min(head.len())]),
        Err(rustix::io::Errno::AGAIN) => FirstBytes::Wait,
        Err(_) => FirstBytes::Other,
    }
}

/// `first_bytes` on the peeked bytes (at least one).
fn classify_first_bytes(head: &[u8]) -> FirstBytes {
    let word = head.iter().position(|b| *b == b' ').unwrap_or(head.len());
    if !head[..word].iter().all(u8::is_ascii_uppercase) {
        return FirstBytes::Other;
    }
    if word == head.len() {
        // Capitals without the space yet: a word still arriving, or one
        // longer than any method.
        return if word < 8 {
            FirstBytes::Wait
        } else {
            FirstBytes::Other
        };
    }
    if word >= 3 {
        FirstBytes::PlainHttp
    } else {
        FirstBytes::Other
    }
}

/// Where a response is written: the socket, through the TLS session if
/// the connection has one.
pub(crate) struct Io<'a> {
    pub sock: &'a TcpStream,
    tls: Option<&'a mut rustls::ServerConnection>,
}

impl Io<'_> {
    /// Like `writev`. Through TLS: plaintext is taken only once the
    /// previous records have left, so a slow client holds at most one
    /// batch in rustls and gets `WouldBlock` like a full socket.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return write_vectored(self.sock, bufs);
        };
        super::tls::flush(tls, self.sock)?;
        let n = tls.writer().write_vectored(bufs)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match super::tls::flush(tls, self.sock) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    /// The head before a file: `MSG_MORE` on a plain socket.
    fn send_more(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.tls {
            None => send(self.sock, buf, SendFlags::MORE),
            Some(_) => self.write_vectored(&[IoSlice::new(buf)]),
        }
    }

    /// A file range: `sendfile` on a plain socket; through TLS, a read
    /// into a record-sized buffer, encrypted and written.
    fn sendfile(&mut self, file: &std::fs::File, pos: &mut u64, count: usize) -> io::Result<usize> {
        if self.tls.is_none() {
            return sendfile(self.sock, file, pos, count);
        }
        use std::os::unix::fs::FileExt;
        let mut chunk = [0u8; 16 * 1024];
        let want = count.min(chunk.len());
        let got = file.read_at(&mut chunk[..want], *pos)?;
        if got == 0 {
            return Ok(0);
        }
        let n = self.write_vectored(&[IoSlice::new(&chunk[..got])])?;
        *pos += n as u64;
        Ok(n)
    }

    /// Whether everything handed over has left (TLS records included).
    fn flush(&mut self) -> io::Result<()> {
        match self.tls.as_deref_mut() {
            None => Ok(()),
            Some(tls) => super::tls::flush(tls, self.sock),
        }
    }
}

/// Reads and discards whatever is already buffered (at most 64 KiB).
pub(crate) fn drain(stream: &TcpStream) {
    let mut scratch = [0u8; 4096];
    for _ in 0..16 {
        match rustix::net::recv(stream, &mut scratch, rustix::net::RecvFlags::DONTWAIT) {
            Ok((n, _)) if n > 0 => continue,
            _ => break,
        }
    }
}

/// Waits until `fd` is ready for `flags`, or fails with `TimedOut`.
pub(crate) fn wait_ready(fd: impl AsFd, flags: PollFlags, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "socket write timed out",
            ));
        }
        let mut fds = [PollFd::new(&fd, flags)];
        let ts = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: 3600,
            tv_nsec: 0,
        });
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) => continue,
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// How a pump may wait for the socket.
#[derive(Clone, Copy)]
pub(crate) enum Mode {
    /// Return `WouldBlock` as soon as the socket is full (request workers).
    NonBlocking,
    /// Wait for the socket, failing after this long without progress.
    Blocking(Duration),
}

pub(crate) enum Pump {
    Done,
    WouldBlock,
    /// A `Body::Ready` stream has no bytes yet (see `Outgoing::ready`).
    Starved,
    /// Stopped after its byte budget; more to write.
    Yield,
}

/// A response being written.
pub(crate) struct Outgoing {
    head: Vec<u8>,
    head_pos: usize,
    body: BodyState,
    /// Body bytes (payload, not framing) handed to the socket so far.
    pub body_sent: u64,
}

enum BodyState {
    Done,
    Bytes {
        bytes: Bytes,
        pos: usize,
    },
    File {
        range: FileRange,
        pos: u64,
    },
    Stream {
        stream: Stream,
        /// Set for a stream whose reads never block (`Body::Ready`).
        ready: Option<Arc<dyn StreamReady>>,
        chunked: bool,
        /// Framed bytes read from the stream but not yet written.
        pending: Vec<u8>,
        pending_pos: usize,
        /// Payload bytes the stream may still deliver (known length).
        remaining: Option<u64>,
        finished: bool,
    },
}

/// Largest piece read from a stream at once.
const STREAM_CHUNK: usize = 64 * 1024;

impl Outgoing {
    /// `body` is `None` for HEAD requests and bodiless statuses.
    pub fn new(head: Vec<u8>, body: Option<super::response::Body>, framing: Framing) -> Outgoing {
        use super::response::Body;
        let body = match body {
            None | Some(Body::Empty) => BodyState::Done,
            Some(Body::Bytes(bytes)) if bytes.is_empty() => BodyState::Done,
            Some(Body::Bytes(bytes)) => BodyState::Bytes { bytes, pos: 0 },
            Some(Body::File(range)) if range.len == 0 => BodyState::Done,
            Some(Body::File(range)) => BodyState::File {
                pos: range.offset,
                range,
            },
            Some(Body::Stream(stream)) => BodyState::Stream {
                remaining: stream.len,
                stream,
                ready: None,
                chunked: framing == Framing::Chunked,
                pending: Vec::new(),
                pending_pos: 0,
                finished: false,
            },
            Some(Body::Ready(r)) => BodyState::Stream {
                remaining: r.stream.len,
                stream: r.stream,
                ready: Some(r.ready),
                chunked: framing == Framing::Chunked,
                pending: Vec::new(),
                pending_pos: 0,
                finished: false,
            },
        };
        Outgoing {
            head,
            head_pos: 0,
            body,
            body_sent: 0,
        }
    }

    /// Whether no byte of the response has been written yet (a failure
    /// can still be answered with a proper status).
    pub fn nothing_sent(&self) -> bool {
        self.head_pos == 0
    }

    /// Whether this response must go to a transfer thread: a stream, whose
    /// reads may block. Files and bytes are written without blocking, the
    /// poller waiting for writability in between.
    pub fn needs_thread(&self) -> bool {
        match &self.body {
            BodyState::Stream { ready: None, .. } => true,
            BodyState::Stream { ready: Some(r), .. } => r.needs_thread(),
            _ => false,
        }
    }

    /// The readiness of a `Body::Ready` stream being sent.
    pub fn ready(&self) -> Option<Arc<dyn StreamReady>> {
        match &self.body {
            BodyState::Stream { ready, .. } => ready.clone(),
            _ => None,
        }
    }

    /// Writes as much as the mode allows.
    pub fn pump(&mut self, io: &mut Io<'_>, mode: Mode) -> io::Result<Pump> {
        self.pump_up_to(io, mode, u64::MAX)
    }

    /// Writes as much as the mode allows, but returns `Yield` after about
    /// `budget` body bytes, so that one fast client cannot hold a worker
    /// for a whole large file.
    pub fn pump_up_to(&mut self, io: &mut Io<'_>, mode: Mode, budget: u64) -> io::Result<Pump> {
        let start = self.body_sent;
        loop {
            if self.body_sent - start >= budget {
                return Ok(Pump::Yield);
            }
            match self.step(io) {
                Ok(Step::Done) => return Ok(Pump::Done),
                Ok(Step::Progress) => {}
                Ok(Step::Starved) => match mode {
                    Mode::NonBlocking => return Ok(Pump::Starved),
                    Mode::Blocking(timeout) => self.wait_for_bytes(timeout)?,
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => match mode {
                    Mode::NonBlocking => return Ok(Pump::WouldBlock),
                    Mode::Blocking(timeout) => wait_ready(io.sock, PollFlags::OUT, timeout)?,
                },
                Err(e) => return Err(e),
            }
        }
    }

    /// On a transfer thread: waits until a `Body::Ready` stream may have
    /// bytes again (or `timeout` passes without any).
    fn wait_for_bytes(&self, timeout: Duration) -> io::Result<()> {
        let Some(ready) = self.ready() else {
            return Ok(());
        };
        let (tx, rx) = crossbeam_channel::bounded::<()>(1);
        ready.subscribe(Box::new(move || {
            let _ = tx.try_send(());
        }));
        rx.recv_timeout(timeout)
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "body stream stalled"))
    }

    // Long: the connection state machine: one arm per state.
    /// One write (or one stream read). `WouldBlock` means the socket is full.
    fn step(&mut self, io: &mut Io<'_>) -> io::Result<Step> {
        let head_left = &self.head[self.head_pos..];
        match &mut self.body {
            BodyState::Done => {
                if head_left.is_empty() {
                    io.flush()?;
                    return Ok(Step::Done);
                }
                let n = io.write_vectored(&[IoSlice::new(head_left)])?;
                self.head_pos += n;
            }
            BodyState::Bytes { bytes, pos } => {
                // Head and body in one write.
                let n =
                    io.write_vectored(&[IoSlice::new(head_left), IoSlice::new(&bytes[*pos..])])?;
                let from_head = n.min(head_left.len());
                self.head_pos += from_head;
                *pos += n - from_head;
                self.body_sent += (n - from_head) as u64;
                if *pos == bytes.len() && self.head_pos == self.head.len() {
                    self.body = BodyState::Done;
                }
            }
            BodyState::File { range, pos } => {
                if !head_left.is_empty() {
                    // MSG_MORE: the head leaves in the same segment as the
                    // first file bytes.
                    let n = io.send_more(head_left)?;
                    self.head_pos += n;
                    return Ok(Step::Progress);
                }
                let end = range.offset + range.len;
                let count = usize::try_from(end - *pos)
                    .unwrap_or(usize::MAX)
                    .min(1 << 30);
                let n = io.sendfile(&range.file, pos, count)?;
                if n == 0 {
                    // The file is shorter than promised: cut, never pad.
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file ended before its announced length",
                    ));
                }
                self.body_sent += n as u64;
                if *pos >= end {
                    self.body = BodyState::Done;
                }
            }
            BodyState::Stream {
                stream,
                ready,
                chunked,
                pending,
                pending_pos,
                remaining,
                finished,
            } => {
                if *pending_pos == pending.len() {
                    if *finished {
                        if head_left.is_empty() {
                            self.body = BodyState::Done;
                            return Ok(Step::Progress);
                        }
                    } else {
                        let Some(payload) = fill_from_stream(
                            stream,
                            ready.is_some(),
                            *chunked,
                            pending,
                            remaining,
                        )?
                        else {
                            // `pending` is empty now: nothing left to write.
                            *pending_pos = 0;
                            return Ok(Step::Starved);
                        };
                        *pending_pos = 0;
                        self.body_sent += payload as u64;
                        if payload == 0 {
                            *finished = true;
                        }
                        return Ok(Step::Progress);
                    }
                }
                // The head goes out with the first piece of the body.
                let n = io.write_vectored(&[
                    IoSlice::new(head_left),
                    IoSlice::new(&pending[*pending_pos..]),
                ])?;
                let from_head = n.min(head_left.len());
                self.head_pos += from_head;
                *pending_pos += n - from_head;
            }
        }
        Ok(Step::Progress)
    }
}

enum Step {
    Done,
    Progress,
    /// A `Body::Ready` stream has nothing to read yet.
    Starved,
}

/// Reads the next piece of a stream into `pending` with its chunk framing.
/// Returns the payload size; 0 means the stream ended well (the last chunk
/// is queued when chunked); `None`: a non-blocking stream (`ready`) has
/// nothing yet.
fn fill_from_stream(
    stream: &mut Stream,
    ready: bool,
    chunked: bool,
    pending: &mut Vec<u8>,
    remaining: &mut Option<u64>,
) -> io::Result<Option<usize>> {
    pending.clear();
    let mut data = vec![0u8; STREAM_CHUNK];
    let n = loop {
        match stream.reader.read(&mut data) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if ready && e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            // A stream's WouldBlock is not the socket's: never retry it as one.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::other(format!("body stream failed: {e}")))
            }
            Err(e) => return Err(e),
        }
    };
    data.truncate(n);
    if let Some(left) = remaining {
        if n as u64 > *left {
            return Err(io::Error::other(
                "body stream longer than its announced length",
            ));
        }
        *left -= n as u64;
        if n == 0 && *left > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "body stream ended before its announced length",
            ));
        }
    }
    if chunked {
        if n > 0 {
            pending.extend_from_slice(chunk_header(n).as_bytes());
            pending.extend_from_slice(&data);
            pending.extend_from_slice(b"\r\n");
        } else {
            pending.extend_from_slice(LAST_CHUNK);
        }
    } else {
        *pending = data;
    }
    Ok(Some(n))
}

fn write_vectored(sock: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let mut s = sock;
    let n = s.write_vectored(bufs)?;
    if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
        return Err(io::ErrorKind::WriteZero.into());
    }
    Ok(n)
}

fn send(sock: &TcpStream, buf: &[u8], flags: SendFlags) -> io::Result<usize> {
    Ok(rustix::net::send(
        sock,
        buf,
        flags | SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
    )?)
}

fn sendfile(
    sock: &TcpStream,
    file: &std::fs::File,
    pos: &mut u64,
    count: usize,
) -> io::Result<usize> {
    Ok(rustix::fs::sendfile(sock, file, Some(pos), count)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_first_bytes_tells_a_request_line_from_a_record() {
        let cases: &[(&[u8], FirstBytes)] = &[
            (b"GET /hea", FirstBytes::PlainHttp),
            (b"HEAD /ab", FirstBytes::PlainHttp),
            (b"OPTIONS ", FirstBytes::PlainHttp),
            (b"PUT /", FirstBytes::PlainHttp),
            // A TLS handshake record, an alert, application data.
            (b"\x16\x03\x01\x02\x00\x01\x00\x01", FirstBytes::Other),
            (b"\x15\x03\x03\x00\x02", FirstBytes::Other),
            (b"\x17", FirstBytes::Other),
            // A request line still arriving: wait for the rest.
            (b"G", FirstBytes::Wait),
            (b"GE", FirstBytes::Wait),
            (b"GET", FirstBytes::Wait),
            (b"OPTIONS", FirstBytes::Wait),
            // Capitals past any method, a short word, lower case.
            (b"ABCDEFGH", FirstBytes::Other),
            (b"GE /", FirstBytes::Other),
            (b" GET", FirstBytes::Other),
            (b"get /", FirstBytes::Other),
        ];
        for (head, want) in cases {
            assert_eq!(
                &classify_first_bytes(head),
                want,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }
}
