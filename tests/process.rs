//! The real binaries as child processes: `roxpi` itself (health, `--help`,
//! descriptor limits, huge headers) and the `http_demo` example (SIGTERM
//! during a long response).

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::util::{connect, example_bin, get, roxpi_bin, within, ChildServer, Client};

const LIMIT: Duration = Duration::from_secs(90);

fn roxpi() -> Command {
    let mut cmd = Command::new(roxpi_bin());
    cmd.args(["--bind", "127.0.0.1:0"]);
    cmd.env("ROXPI_LOG", "info");
    // These tests need no file cache (and must not share one).
    cmd.env("ROXPI_CACHE_SIZE", "0");
    cmd
}

#[test]
fn health_is_json_success() {
    within(LIMIT, || {
        let server = ChildServer::start(roxpi());
        let r = get(server.addr, "/health");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body, br#"{"status":"success","data":null}"#);
        assert_eq!(get(server.addr, "/nothing-here").status, 404);
    });
}

#[test]
fn help_lists_the_settings() {
    within(LIMIT, || {
        let out = Command::new(roxpi_bin()).arg("--help").output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        for needle in [
            "--bind",
            "ROXPI_BIND",
            "--workers",
            "ROXPI_WORKERS",
            "ROXPI_LOG",
            // A proxpi user reading --help sees that their names work.
            "PROXPI_INDEX_URL",
            "PROXPI_CACHE_SIZE",
            "GROXPI_LOG_FORMAT",
        ] {
            assert!(text.contains(needle), "--help lacks {needle}:\n{text}");
        }
    });
}

#[test]
fn bad_bind_address_names_the_setting() {
    within(LIMIT, || {
        let out = Command::new(roxpi_bin())
            .env("ROXPI_BIND", "not-an-address")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("bind"), "{text}");
    });
}

/// tiny_http died forever after one EMFILE; roxpi under `ulimit -n 64`
/// survives a burst of 200 connections and serves the next request.
#[test]
fn survives_a_connection_burst_under_ulimit_64() {
    within(LIMIT, || {
        let bin = roxpi_bin();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("ulimit -n 64 && exec \"$0\" --bind 127.0.0.1:0")
            .arg(&bin)
            .env("ROXPI_LOG", "info")
            .env("ROXPI_CACHE_SIZE", "0");
        let mut server = ChildServer::start(cmd);
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
        assert_eq!(nums, ["64", "64"], "{line}");
        let stderr = server.capture_stderr();

        let mut burst = Vec::new();
        for _ in 0..200 {
            if let Ok(s) = TcpStream::connect_timeout(&server.addr, Duration::from_secs(5)) {
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                let _ = (&s).write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
                burst.push(s);
            }
        }
        // Read every answer at once; some are served, the rest refused with
        // 503 at the cap (or left waiting in the backlog).
        let readers: Vec<_> = burst
            .iter()
            .map(|s| {
                let s = s.try_clone().unwrap();
                std::thread::spawn(move || {
                    let mut c = Client {
                        reader: BufReader::new(s),
                    };
                    match c.read_reply(false) {
                        Ok(r) => r.status.to_string(),
                        Err(_) => "no answer".to_owned(),
                    }
                })
            })
            .collect();
        let mut statuses = std::collections::BTreeMap::new();
        for r in readers {
            *statuses.entry(r.join().unwrap()).or_insert(0) += 1;
        }
        assert!(
            statuses.get("200").copied().unwrap_or(0) > 0,
            "{statuses:?}"
        );
        drop(burst);

        let what = format!("an answer after the burst ({statuses:?})");
        crate::util::wait_until(Duration::from_secs(10), &what, || {
            let ok = TcpStream::connect(server.addr).ok().and_then(|s| {
                s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                let mut c = Client {
                    reader: BufReader::new(s),
                };
                c.send(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
                c.read_reply(false).ok()
            });
            matches!(ok, Some(r) if r.status == 200)
        });
        // Still serving a little later, many times.
        for _ in 0..50 {
            assert_eq!(get(server.addr, "/health").status, 200);
        }
        let _ = server.child.kill();
        let log = stderr
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
        assert!(!log.contains("panicked"), "{log}");
    });
}

/// A 4 MB header gets 431 (or a close), and the process does not grow.
#[test]
fn four_megabyte_header_is_refused_with_memory_flat() {
    within(LIMIT, || {
        let server = ChildServer::start(roxpi());
        assert_eq!(get(server.addr, "/health").status, 200);
        let before = server.rss_kib();
        for _ in 0..5 {
            let mut s = connect(server.addr);
            let mut head = b"GET /health HTTP/1.1\r\nHost: t\r\nX-Huge: ".to_vec();
            head.resize(4 << 20, b'a');
            // The server may close before all of it is sent.
            let _ = s.write_all(&head);
            let mut reply = Vec::new();
            let _ = s.read_to_end(&mut reply);
            let text = String::from_utf8_lossy(&reply);
            assert!(
                reply.is_empty() || text.starts_with("HTTP/1.1 431"),
                "{}",
                &text[..text.len().min(200)]
            );
        }
        assert_eq!(get(server.addr, "/health").status, 200);
        let after = server.rss_kib();
        assert!(
            after < before + 2048,
            "RSS grew from {before} KiB to {after} KiB"
        );
    });
}

/// SIGTERM while a 2-second response streams: it finishes, new connections
/// are refused, and the process exits cleanly.
#[test]
fn sigterm_lets_a_long_response_finish() {
    within(LIMIT, || {
        let mut server = ChildServer::start(Command::new(example_bin("http_demo")));
        let mut c = Client::new(server.addr);
        c.send(b"GET /slow/10/200 HTTP/1.1\r\nHost: t\r\n\r\n");
        // Wait for the head and first chunk before the signal.
        let mut first = [0u8; 16];
        c.reader.get_mut().read_exact(&mut first).unwrap();
        assert!(first.starts_with(b"HTTP/1.1 200"));
        let pid = server.pid().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        // New connections are no longer accepted (once the accept thread
        // has seen the signal).
        let refused = || match TcpStream::connect(server.addr) {
            Err(_) => true,
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut c = Client {
                    reader: BufReader::new(s),
                };
                c.send(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
                c.read_reply(false).is_err()
            }
        };
        crate::util::wait_until(Duration::from_secs(5), "new connections refused", refused);
        // The in-flight response completes: read the rest and decode it.
        let mut rest = Vec::new();
        c.reader.read_to_end(&mut rest).unwrap();
        let mut all = first.to_vec();
        all.extend_from_slice(&rest);
        let text = String::from_utf8_lossy(&all);
        let (_, body) = text.split_once("\r\n\r\n").expect("head");
        let decoded =
            crate::util::read_chunked(&mut body.as_bytes()).expect("complete chunked body");
        assert_eq!(decoded.len(), 10 * 1024);
        let status = server.child.wait().unwrap();
        assert!(status.success(), "exit status {status:?}");
    });
}

/// The access log is batched and written by a thread of its own: a log
/// collector that stops reading stderr must not stop the server. Before
/// part 15 lines went through flexi_logger's queue; written by the
/// workers themselves, a full pipe would have blocked every worker.
#[test]
fn a_stderr_nobody_reads_never_stops_serving_and_dropped_lines_are_counted() {
    within(LIMIT, || {
        let mut server = ChildServer::start(roxpi());
        // stderr stays piped and unread: 64 KiB of pipe, then the writer
        // blocks, then its 1 MiB queue fills.
        let path = format!("/nothing-here/{}", "x".repeat(200));
        let mut clients: Vec<Client> = (0..4).map(|_| Client::new(server.addr)).collect();
        let mut slowest = Duration::ZERO;
        for i in 0..12_000 {
            let started = std::time::Instant::now();
            let r = clients[i % 4].get(&path);
            slowest = slowest.max(started.elapsed());
            assert_eq!(r.status, 404);
        }
        assert!(
            slowest < Duration::from_secs(1),
            "slowest answer {slowest:?}"
        );
        // Reading now lets the writer go on; it reports what it dropped.
        let lines = server.stderr_lines();
        let mut access = 0;
        let mut dropped = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        // Until the warning has come and the queue is drained.
        let mut quiet = 0;
        while quiet < 2 && std::time::Instant::now() < deadline {
            let Ok(line) = lines.recv_timeout(Duration::from_secs(1)) else {
                if dropped.is_some() {
                    quiet += 1;
                } else {
                    // One more request makes the writer run.
                    let _ = clients[0].get("/health");
                }
                continue;
            };
            if line.contains(" access ") && line.contains("/nothing-here/") {
                access += 1;
            }
            if let Some(n) = line
                .split("access log: ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
            {
                *dropped.get_or_insert(0) += n;
            }
        }
        let dropped = dropped.expect("a warning counts the dropped lines");
        assert!(access > 1000, "{access} lines written");
        assert!(
            access as u64 + dropped <= 12_100 && access as u64 + dropped >= 5_000,
            "{access} written + {dropped} dropped"
        );
    });
}
