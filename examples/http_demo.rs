//! A demonstration of roxpi's HTTP server module on its own, with a few
//! routes that exercise its body kinds. The integration tests drive it as a
//! separate process (SIGTERM, memory, descriptor limits).
//!
//! Routes: `/health`; `/bytes/<n>` (n bytes of shared memory); `/slow/<k>/<ms>`
//! (a chunked stream of k chunks, one every ms milliseconds); `/panic`.

use std::io::Read;
use std::time::Duration;

use roxpi::http::{Body, Request, Response, Server, ServerConfig, Stream};

/// Yields `chunks` pieces of 1 KiB, sleeping before each.
struct Slow {
    chunks: u32,
    delay: Duration,
}

impl Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.chunks == 0 {
            return Ok(0);
        }
        std::thread::sleep(self.delay);
        self.chunks -= 1;
        let n = buf.len().min(1024);
        buf[..n].fill(b'x');
        Ok(n)
    }
}

fn handle(req: &Request) -> Response {
    let parts: Vec<&str> = req.path().trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["health"] => Response::new(200)
            .header("Content-Type", "application/json")
            .body("{\"status\":\"success\",\"data\":null}"),
        ["bytes", n] => match n.parse::<usize>() {
            Ok(n) if n <= 64 << 20 => Response::new(200).body(vec![b'b'; n]),
            _ => Response::text(400, "bad length\n"),
        },
        ["slow", k, ms] => match (k.parse(), ms.parse()) {
            (Ok(chunks), Ok(ms)) => Response::new(200).body(Body::Stream(Stream {
                len: None,
                reader: Box::new(Slow {
                    chunks,
                    delay: Duration::from_millis(ms),
                }),
            })),
            _ => Response::text(400, "bad numbers\n"),
        },
        ["panic"] => panic!("the /panic route panics on purpose"),
        _ => Response::text(404, "not found\n"),
    }
}

fn main() -> std::io::Result<()> {
    let _log = roxpi::logging::start("info", false).ok();
    let bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let addr = bind.parse().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{bind}: {e}"))
    })?;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    let server = Server::start(addr, ServerConfig::default(), handle)?;
    println!("listening on http://{}", server.local_addr());
    signals.forever().next();
    let finished = server.shutdown(Duration::from_secs(30));
    std::process::exit(if finished { 0 } else { 1 });
}
