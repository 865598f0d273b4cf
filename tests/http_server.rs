//! The HTTP server module in-process, with a test handler: framing, limits,
//! slow and idle clients, pipelining, panics, load shedding.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use roxpi::http::{Body, FileRange, Request, Response, Server, ServerConfig, Stream};

use crate::util::{connect, get, within, Client};

const BIG: usize = 16 << 20;

/// A stream that yields `ok` bytes, then fails.
struct Failing {
    ok: usize,
}

impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.ok == 0 {
            return Err(std::io::Error::other("upstream went away"));
        }
        let n = buf.len().min(self.ok).min(1000);
        buf[..n].fill(b'f');
        self.ok -= n;
        Ok(n)
    }
}

fn handler(big: Bytes, file: Arc<std::fs::File>, file_len: u64) -> impl Fn(&Request) -> Response {
    move |req: &Request| match req.path() {
        "/ok" => Response::new(200).body("ok"),
        "/method" => Response::new(200).body(format!("{} {}", req.method(), req.body().len())),
        "/big" => Response::new(200).body(big.clone()),
        "/panic" => panic!("test handler panics on purpose"),
        "/file" => Response::new(200).body(FileRange {
            file: Arc::clone(&file),
            offset: 0,
            len: file_len,
        }),
        "/file-tail" => Response::new(200).body(FileRange {
            file: Arc::clone(&file),
            offset: file_len - 10,
            len: 10,
        }),
        "/file-short" => Response::new(200).body(FileRange {
            file: Arc::clone(&file),
            offset: 0,
            len: file_len + 100,
        }),
        "/stream" => Response::new(200).body(Body::Stream(Stream {
            len: None,
            reader: Box::new(std::io::repeat(b's').take(100_000)),
        })),
        "/stream-known" => Response::new(200).body(Body::Stream(Stream {
            len: Some(100_000),
            reader: Box::new(std::io::repeat(b's').take(100_000)),
        })),
        "/stream-short" => Response::new(200).body(Body::Stream(Stream {
            len: Some(100_000),
            reader: Box::new(std::io::repeat(b's').take(50_000)),
        })),
        "/stream-fail" => Response::new(200).body(Body::Stream(Stream {
            len: None,
            reader: Box::new(Failing { ok: 30_000 }),
        })),
        "/stream-fail-first" => Response::new(200).body(Body::Stream(Stream {
            len: Some(5000),
            reader: Box::new(Failing { ok: 0 }),
        })),
        "/split" => Response::new(200).header("X-Evil", "a\r\nSet-Cookie: x=1"),
        _ => Response::text(404, "not found\n"),
    }
}

struct Fixture {
    server: Option<Server>,
    addr: SocketAddr,
    file_bytes: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_secs(1));
        }
    }
}

impl Fixture {
    fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }
}

fn start(config: ServerConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("file.bin");
    let file_bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &file_bytes).unwrap();
    let file = Arc::new(std::fs::File::open(&path).unwrap());
    let big = Bytes::from(vec![b'B'; BIG]);
    let h = handler(big, file, file_bytes.len() as u64);
    let server = Server::start("127.0.0.1:0".parse().unwrap(), config, h).unwrap();
    Fixture {
        addr: server.local_addr(),
        server: Some(server),
        file_bytes,
        _dir: dir,
    }
}

fn small_config(workers: usize) -> ServerConfig {
    ServerConfig {
        workers,
        ..ServerConfig::default()
    }
}

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn health_like_request_gets_length_date_and_keep_alive() {
    within(LIMIT, || {
        let f = start(small_config(2));
        let r = get(f.addr, "/ok");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"ok");
        assert_eq!(r.header("content-length"), Some("2"));
        assert!(r.header("date").is_some_and(|d| d.ends_with("GMT")));
        assert_eq!(r.header("keep-alive"), Some("timeout=120"));
        assert_eq!(r.header("connection"), None);
    });
}

#[test]
fn two_pipelined_requests_in_one_packet_both_get_answers() {
    within(LIMIT, || {
        let f = start(small_config(2));
        let mut c = Client::new(f.addr);
        c.send(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\nGET /method HTTP/1.1\r\nHost: t\r\n\r\n");
        let first = c.read_reply(false).unwrap();
        let second = c.read_reply(false).unwrap();
        assert_eq!((first.status, first.body.as_slice()), (200, &b"ok"[..]));
        assert_eq!(
            (second.status, second.body.as_slice()),
            (200, &b"GET 0"[..])
        );
    });
}

#[test]
fn thousand_requests_on_one_keep_alive_connection() {
    within(LIMIT, || {
        let f = start(small_config(2));
        let mut c = Client::new(f.addr);
        for i in 0..1000 {
            let r = c.get("/ok");
            assert_eq!(r.status, 200, "request {i}");
            assert_eq!(r.body, b"ok");
        }
        assert_eq!(
            f.server()
                .stats()
                .accepted
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    });
}

#[test]
fn delete_with_content_length_zero_and_small_bodies() {
    within(LIMIT, || {
        let f = start(small_config(2));
        let mut c = Client::new(f.addr);
        c.send(b"DELETE /method HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
        let r = c.read_reply(false).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"DELETE 0"[..]));
        // A small body is read (not mistaken for the next request).
        c.send(b"DELETE /method HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nGET /");
        let r = c.read_reply(false).unwrap();
        assert_eq!(r.body, b"DELETE 5");
        let r = c.get("/ok");
        assert_eq!(r.status, 200);
    });
}

#[test]
fn limits_answer_with_4xx_and_close() {
    within(LIMIT, || {
        let f = start(small_config(2));
        let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(9000));
        let many: String = (0..70).map(|i| format!("h{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (long_target.into_bytes(), 414),
            (many.into_bytes(), 431),
            (
                b"POST /ok HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
                501,
            ),
            (
                b"POST /ok HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n".to_vec(),
                413,
            ),
            (b"garbage\r\n\r\n".to_vec(), 400),
        ];
        for (raw, want) in cases {
            let mut c = Client::new(f.addr);
            c.send(&raw);
            let r = c.read_reply(false).unwrap();
            assert_eq!(r.status, want);
            assert_eq!(r.header("connection"), Some("close"));
            let mut rest = Vec::new();
            let _ = c.reader.read_to_end(&mut rest);
            assert!(rest.is_empty(), "connection closed after {want}");
        }
    });
}

#[test]
fn head_gets_headers_without_body() {
    within(LIMIT, || {
        let f = start(small_config(2));
        let mut c = Client::new(f.addr);
        c.send(b"HEAD /big HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.read_reply(true).unwrap();
        assert_eq!(r.header("content-length"), Some(BIG.to_string().as_str()));
        // The next response follows immediately: no body bytes in between.
        let r = c.get("/ok");
        assert_eq!(r.body, b"ok");
    });
}

#[test]
fn http10_and_connection_close_are_honoured() {
    within(LIMIT, || {
        let f = start(small_config(2));
        for raw in [
            &b"GET /ok HTTP/1.0\r\n\r\n"[..],
            &b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"[..],
        ] {
            let mut s = connect(f.addr);
            s.write_all(raw).unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).unwrap();
            let text = String::from_utf8_lossy(&all);
            assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
            assert!(text.contains("Connection: close\r\n"), "{text}");
            assert!(text.ends_with("\r\n\r\nok"), "{text}");
        }
        // HTTP/1.0 with keep-alive stays open.
        let mut c = Client::new(f.addr);
        c.send(b"GET /ok HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.read_reply(false).unwrap();
        assert_eq!(r.header("connection"), Some("keep-alive"));
        c.send(b"GET /ok HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(c.read_reply(false).unwrap().body, b"ok");
        // An unknown-length stream to HTTP/1.0 is close-delimited.
        let mut s = connect(f.addr);
        s.write_all(b"GET /stream HTTP/1.0\r\n\r\n").unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        let text = String::from_utf8_lossy(&all);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(!head.contains("Transfer-Encoding") && !head.contains("Content-Length"));
        assert_eq!(body.len(), 100_000);
    });
}

#[test]
fn bodies_of_every_kind_arrive_intact() {
    within(LIMIT, || {
        let f = start(small_config(2));
        let mut c = Client::new(f.addr);
        let r = c.get("/file");
        assert_eq!(r.body, f.file_bytes, "sendfile body");
        let r = c.get("/file-tail");
        assert_eq!(r.body, &f.file_bytes[f.file_bytes.len() - 10..]);
        let r = c.get("/stream");
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(r.body, vec![b's'; 100_000]);
        let r = c.get("/stream-known");
        assert_eq!(r.header("content-length"), Some("100000"));
        assert_eq!(r.body.len(), 100_000);
        let r = c.get("/big");
        assert_eq!(r.body.len(), BIG);
        assert!(r.body.iter().all(|&b| b == b'B'));
        // Still the same connection.
        assert_eq!(c.get("/ok").body, b"ok");
    });
}

/// A body that cannot be completed must never look complete.
#[test]
fn failing_or_short_bodies_cut_the_connection() {
    within(LIMIT, || {
        let f = start(small_config(2));
        for path in ["/stream-fail", "/stream-short", "/file-short"] {
            let mut c = Client::new(f.addr);
            c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
            let got = c.read_reply(false);
            assert!(
                got.is_err(),
                "{path}: a cut body must be an error, got {got:?}"
            );
        }
        assert_eq!(get(f.addr, "/ok").status, 200);
    });
}

#[test]
fn a_stream_failing_before_its_first_byte_is_a_502_with_a_reason() {
    within(LIMIT, || {
        let f = start(small_config(2));
        let r = get(f.addr, "/stream-fail-first");
        assert_eq!(r.status, 502);
        let body = String::from_utf8_lossy(&r.body);
        assert!(body.contains("upstream went away"), "{body}");
        assert_eq!(get(f.addr, "/ok").status, 200);
    });
}

#[test]
fn host_is_required_once_and_expect_100_continue_is_answered() {
    within(LIMIT, || {
        let f = start(small_config(2));
        for (raw, want) in [
            (&b"GET /ok HTTP/1.1\r\n\r\n"[..], "HTTP/1.1 400 "),
            (
                &b"GET /ok HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"[..],
                "HTTP/1.1 400 ",
            ),
            (
                &b"GET /ok HTTP/1.1\r\nHost: a\r\nExpect: tea\r\n\r\n"[..],
                "HTTP/1.1 417 ",
            ),
            (&b"GET /ok HTTP/1.0\r\n\r\n"[..], "HTTP/1.1 200 "),
        ] {
            let mut s = connect(f.addr);
            s.write_all(raw).unwrap();
            let mut all = Vec::new();
            let _ = s.read_to_end(&mut all);
            let text = String::from_utf8_lossy(&all);
            assert!(
                text.starts_with(want),
                "{:?}: {text}",
                String::from_utf8_lossy(raw)
            );
        }
        // 100 Continue first; the body follows; then the final answer.
        let mut c = Client::new(f.addr);
        c.send(
            b"PUT /method HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        );
        let mut line = String::new();
        std::io::BufRead::read_line(&mut c.reader, &mut line).unwrap();
        assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
        line.clear();
        std::io::BufRead::read_line(&mut c.reader, &mut line).unwrap();
        assert_eq!(line, "\r\n");
        c.send(b"hello");
        let r = c.read_reply(false).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"PUT 5"[..]));
    });
}

#[test]
fn response_splitting_is_refused() {
    within(LIMIT, || {
        let f = start(small_config(2));
        let r = get(f.addr, "/split");
        assert_eq!(r.status, 500);
        assert!(r.header("set-cookie").is_none());
    });
}

#[test]
fn panicking_handler_gives_500_and_the_server_lives_on() {
    within(LIMIT, || {
        let f = start(small_config(1));
        for _ in 0..3 {
            let r = get(f.addr, "/panic");
            assert_eq!(r.status, 500);
            assert_eq!(r.header("connection"), Some("close"));
            // The only worker survived: a fresh connection is served.
            assert_eq!(get(f.addr, "/ok").status, 200);
        }
        let panics = f
            .server()
            .stats()
            .handler_panics
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(panics, 3);
    });
}

/// Clients trickling their heads one byte per 0.5 s are dropped at the head
/// deadline and never hold the (two) workers.
#[test]
fn trickling_clients_are_dropped_and_do_not_block_others() {
    within(LIMIT, || {
        let config = ServerConfig {
            workers: 2,
            head_timeout: Duration::from_secs(3),
            ..ServerConfig::default()
        };
        let f = start(config);
        let addr = f.addr;
        let tricklers: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut s = connect(addr);
                    let started = Instant::now();
                    for b in b"GET /ok HTTP/1.1\r\nHost: trickle\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
                        if s.write_all(&[*b]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    let mut rest = Vec::new();
                    let _ = s.read_to_end(&mut rest);
                    (started.elapsed(), rest)
                })
            })
            .collect();
        // Every trickler is connected and has sent its first bytes.
        let server = f.server();
        crate::util::wait_until(Duration::from_secs(5), "the tricklers accepted", || {
            server
                .stats()
                .accepted
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 4
        });
        for _ in 0..20 {
            let t = Instant::now();
            assert_eq!(get(addr, "/ok").status, 200);
            let took = t.elapsed();
            assert!(
                took < Duration::from_secs(1),
                "a normal client waited {took:?}"
            );
        }
        for t in tricklers {
            let (elapsed, rest) = t.join().unwrap();
            // 50 bytes at 0.5 s would take 25 s: the head deadline cut it.
            assert!(
                elapsed < Duration::from_secs(15),
                "trickler lasted {elapsed:?}"
            );
            let text = String::from_utf8_lossy(&rest);
            assert!(
                rest.is_empty() || text.starts_with("HTTP/1.1 408"),
                "{text}"
            );
        }
    });
}

#[test]
fn three_hundred_idle_connections_do_not_block_a_new_request() {
    within(LIMIT, || {
        let f = start(small_config(2));
        let mut idle = Vec::new();
        for i in 0..300 {
            if i % 2 == 0 {
                // Never sends anything.
                idle.push(Client::new(f.addr));
            } else {
                // Kept alive after one request.
                let mut c = Client::new(f.addr);
                assert_eq!(c.get("/ok").status, 200);
                idle.push(c);
            }
        }
        let t = Instant::now();
        assert_eq!(get(f.addr, "/ok").status, 200);
        let took = t.elapsed();
        assert!(took < Duration::from_secs(1), "new request waited {took:?}");
        // The idle ones are parked, not holding the two workers.
        assert!(
            f.server().parked_connections() >= 290,
            "{}",
            f.server().parked_connections()
        );
        // And a kept-alive one still works.
        assert_eq!(idle[1].get("/ok").status, 200);
    });
}

/// 100 clients that request 16 MiB and read nothing: their bodies sit in
/// transfer threads; small requests are still answered at once.
#[test]
fn slow_downloads_do_not_starve_small_requests() {
    within(LIMIT, || {
        let f = start(small_config(2));
        let mut slow = Vec::new();
        for _ in 0..100 {
            let mut s = connect(f.addr);
            s.write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            slow.push(s);
        }
        let server = f.server();
        crate::util::wait_until(Duration::from_secs(5), "the 100 downloads accepted", || {
            server
                .stats()
                .requests
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 100
        });
        for _ in 0..20 {
            let t = Instant::now();
            assert_eq!(get(f.addr, "/ok").status, 200);
            let took = t.elapsed();
            assert!(
                took < Duration::from_secs(1),
                "small request waited {took:?}"
            );
        }
        // The slow downloads wait in the poller for their clients to read,
        // holding no thread (they used to hold a transfer thread each).
        assert!(
            f.server().parked_writes() >= 50,
            "{}",
            f.server().parked_writes()
        );
        assert_eq!(f.server().transfer_threads(), 0);
        // The slow clients still get their whole body when they read.
        let mut c = crate::util::Client {
            reader: std::io::BufReader::new(slow.pop().unwrap()),
        };
        let r = c.read_reply(false).unwrap();
        assert_eq!(r.body.len(), BIG);
        for s in slow {
            let _ = s.shutdown(Shutdown::Both);
        }
    });
}

#[test]
fn connections_beyond_the_cap_get_503_then_service_resumes() {
    within(LIMIT, || {
        let config = ServerConfig {
            workers: 2,
            max_connections: Some(4),
            ..ServerConfig::default()
        };
        let f = start(config);
        let held: Vec<Client> = (0..4)
            .map(|_| {
                let mut c = Client::new(f.addr);
                assert_eq!(c.get("/ok").status, 200);
                c
            })
            .collect();
        let mut c = Client::new(f.addr);
        c.send(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.read_reply(false).unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("1"));
        drop(held);
        // The slots come back once the server sees the closes.
        crate::util::wait_until(Duration::from_secs(10), "service to resume", || {
            let mut c = Client::new(f.addr);
            c.send(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n");
            matches!(c.read_reply(false), Ok(r) if r.status == 200)
        });
    });
}

#[test]
fn idle_connections_close_after_the_keep_alive_timeout() {
    within(LIMIT, || {
        let config = ServerConfig {
            workers: 2,
            keep_alive_timeout: Duration::from_secs(1),
            ..ServerConfig::default()
        };
        let f = start(config);
        let mut c = Client::new(f.addr);
        assert_eq!(c.get("/ok").header("keep-alive"), Some("timeout=1"));
        let mut rest = Vec::new();
        let t = Instant::now();
        c.reader.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        assert!(t.elapsed() < Duration::from_secs(10));
    });
}

/// A handler that parks a request again and again never holds it past the
/// server's park limit: it is answered 504 (tag OVERDUE) and counted, so
/// `/ready` can say so. Another request is answered meanwhile.
#[test]
fn a_request_parked_again_and_again_is_answered_at_the_park_limit() {
    within(Duration::from_secs(30), || {
        fn forever() -> Response {
            Response::later(roxpi::http::Later {
                deadline: Instant::now() + Duration::from_millis(200),
                subscribe: Box::new(|_| {}),
                resume: Box::new(|_| forever()),
            })
        }
        let stats = Arc::new(roxpi::http::Stats::default());
        let config = ServerConfig {
            workers: 2,
            park_limit: Duration::from_secs(1),
            stats: Arc::clone(&stats),
            ..ServerConfig::default()
        };
        let server = Server::start(
            "127.0.0.1:0".parse().unwrap(),
            config,
            |req: &Request| match req.path() {
                "/forever" => forever(),
                _ => Response::new(200).body("ok"),
            },
        )
        .unwrap();
        let addr = server.local_addr();
        let t = Instant::now();
        let parked = std::thread::spawn(move || get(addr, "/forever"));
        crate::util::wait_until(Duration::from_secs(5), "the request parked", || {
            stats.waiting.load(std::sync::atomic::Ordering::Relaxed) >= 1
        });
        assert_eq!(get(addr, "/ok").status, 200, "others are served");
        let r = parked.join().unwrap();
        let took = t.elapsed();
        assert_eq!(r.status, 504);
        assert!(r.header("retry-after").is_some());
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "answered after {took:?}, park limit 1 s"
        );
        assert_eq!(stats.overdue.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(stats.recently_overdue().is_some());
        server.shutdown(Duration::from_millis(100));
    });
}
