//! Streamed request bodies (`Response::receive`): large uploads are read
//! without a waiting worker, refused ones close the connection, and a
//! client that stops sending is dropped with its sink.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use roxpi::http::{BodySink, Limits, Request, Response, Server, ServerConfig};
use sha2::{Digest, Sha256};

use crate::util::{within, Client};

const LIMIT: Duration = Duration::from_secs(60);

/// Counts and hashes what it gets; `dropped` counts sinks dropped (after
/// `finish` or not).
struct Hashing {
    len: u64,
    sha: Sha256,
    dropped: Arc<AtomicUsize>,
}

impl Drop for Hashing {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl BodySink for Hashing {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Response> {
        self.len += bytes.len() as u64;
        self.sha.update(bytes);
        if self.len > 50 << 20 {
            return Err(Response::text(413, "over 50 MiB\n"));
        }
        Ok(())
    }

    fn finish(self: Box<Self>, _request: &Request) -> Response {
        let digest = hex::encode(self.sha.clone().finalize());
        Response::new(200).body(format!("{} {digest}", self.len))
    }
}

struct Fixture {
    server: Option<Server>,
    addr: SocketAddr,
    dropped: Arc<AtomicUsize>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_secs(1));
        }
    }
}

fn start(workers: usize, body_timeout: Duration) -> Fixture {
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = Arc::clone(&dropped);
    let handler = move |req: &Request| match (req.path(), req.streamed_len()) {
        ("/upload", Some(_)) if req.header("authorization") == Some("yes") => {
            Response::receive(Box::new(Hashing {
                len: 0,
                sha: Sha256::new(),
                dropped: Arc::clone(&d),
            }))
        }
        ("/upload", Some(_)) => Response::text(401, "no token\n"),
        ("/upload", None) => Response::new(200).body(format!("small {}", req.body().len())),
        _ => Response::new(200).body("ok"),
    };
    let config = ServerConfig {
        workers,
        body_timeout,
        limits: Limits {
            stream_bodies: true,
            ..Limits::default()
        },
        ..ServerConfig::default()
    };
    let server = Server::start("127.0.0.1:0".parse().unwrap(), config, handler).unwrap();
    Fixture {
        addr: server.local_addr(),
        server: Some(server),
        dropped,
    }
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 253) as u8).collect()
}

fn head(len: usize, extra: &str) -> String {
    format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n{extra}\r\n")
}

#[test]
fn a_large_body_streams_to_the_sink_and_the_connection_stays_open() {
    within(LIMIT, || {
        let f = start(2, Duration::from_secs(10));
        let data = body(20 << 20);
        let mut c = Client::new(f.addr);
        c.send(head(data.len(), "Authorization: yes\r\n").as_bytes());
        // In pieces with pauses: the sink sees every byte in order.
        for (i, piece) in data.chunks(1 << 20).enumerate() {
            c.send(piece);
            if i % 5 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let r = c.read_reply(false).unwrap();
        assert_eq!(r.status, 200);
        let want = format!("{} {}", data.len(), hex::encode(Sha256::digest(&data)));
        assert_eq!(String::from_utf8_lossy(&r.body), want);
        assert_ne!(r.header("connection"), Some("close"));
        // The same connection carries the next request.
        let small = c.get("/other");
        assert_eq!(small.body, b"ok");
        assert_eq!(f.dropped.load(Ordering::SeqCst), 1, "the sink is dropped");
    });
}

#[test]
fn a_small_body_comes_with_the_request_as_before() {
    within(LIMIT, || {
        let f = start(2, Duration::from_secs(10));
        let mut c = Client::new(f.addr);
        c.send(head(1000, "").as_bytes());
        c.send(&body(1000));
        let r = c.read_reply(false).unwrap();
        assert_eq!(r.body, b"small 1000");
    });
}

#[test]
fn a_refused_body_is_not_read_and_the_connection_closes() {
    within(LIMIT, || {
        let f = start(2, Duration::from_secs(10));
        let mut c = Client::new(f.addr);
        c.send(head(10 << 20, "Expect: 100-continue\r\n").as_bytes());
        let r = c.read_reply(false).unwrap();
        assert_eq!(r.status, 401, "the refusal, not 100 Continue");
        assert_eq!(r.header("connection"), Some("close"));
        assert_eq!(f.dropped.load(Ordering::SeqCst), 0, "no sink was made");
    });
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    within(LIMIT, || {
        let f = start(2, Duration::from_secs(10));
        let data = body(200_000);
        let mut c = Client::new(f.addr);
        c.send(head(data.len(), "Authorization: yes\r\nExpect: 100-continue\r\n").as_bytes());
        let interim = c.read_reply(true).unwrap();
        assert_eq!(interim.status, 100);
        c.send(&data);
        let r = c.read_reply(false).unwrap();
        assert_eq!(r.status, 200);
        assert!(String::from_utf8_lossy(&r.body).starts_with("200000 "));
    });
}

#[test]
fn a_sink_refusal_mid_body_answers_and_closes() {
    within(LIMIT, || {
        let f = start(2, Duration::from_secs(10));
        let len = 60 << 20;
        let mut c = Client::new(f.addr);
        c.send(head(len, "Authorization: yes\r\n").as_bytes());
        let chunk = vec![b'x'; 1 << 20];
        // The server stops reading at 50 MiB; writes may fail after that.
        for _ in 0..60 {
            if c.reader.get_mut().write_all(&chunk).is_err() {
                break;
            }
        }
        let r = c.read_reply(false).unwrap();
        assert_eq!(r.status, 413);
        assert_eq!(r.header("connection"), Some("close"));
    });
}

#[test]
fn an_upload_that_stalls_holds_no_worker_and_is_dropped_at_the_body_timeout() {
    within(LIMIT, || {
        // One worker: if the stalled upload held it, nothing else would
        // be answered.
        let f = start(1, Duration::from_secs(1));
        let mut stalled = Client::new(f.addr);
        stalled.send(head(1 << 20, "Authorization: yes\r\n").as_bytes());
        stalled.send(&body(1000));
        for _ in 0..20 {
            let started = Instant::now();
            let mut c = Client::new(f.addr);
            assert_eq!(c.get("/ok").body, b"ok");
            assert!(started.elapsed() < Duration::from_secs(1));
        }
        // Past the body timeout the connection is closed and the sink
        // dropped, never finished.
        let started = Instant::now();
        let mut rest = Vec::new();
        let n = std::io::Read::read_to_end(&mut stalled.reader, &mut rest);
        assert!(matches!(n, Ok(0)) || n.is_err(), "closed without an answer");
        assert!(started.elapsed() < Duration::from_secs(5));
        crate::util::wait_until(Duration::from_secs(3), "the sink dropped", || {
            f.dropped.load(Ordering::SeqCst) == 1
        });
    });
}

#[test]
fn a_client_that_leaves_mid_body_drops_the_sink() {
    within(LIMIT, || {
        let f = start(2, Duration::from_secs(30));
        let mut c = Client::new(f.addr);
        c.send(head(1 << 20, "Authorization: yes\r\n").as_bytes());
        c.send(&body(100_000));
        drop(c);
        crate::util::wait_until(Duration::from_secs(5), "the sink dropped", || {
            f.dropped.load(Ordering::SeqCst) == 1
        });
    });
}
