//! The upstream circuit breaker: an edge box restarted while its uplink is
//! down answers every page it saved at once, without a connect per miss,
//! and closes the breaker once the upstream is back.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fake_index::{FakeFile, FakeIndex, FakeProject};
use crate::util::{get, start_roxpi, wait_until, within};

const LIMIT: Duration = Duration::from_secs(180);
const PROJECTS: usize = 100;
/// Misses that open the breaker (`ROXPI_BREAKER_FAILURES`).
const FAILURES: usize = 3;

/// A dead upstream on `addr`: it accepts and counts connections, then
/// closes them at once (`hold` false: refused) or keeps them without a
/// byte (`hold` true: accepts and never answers).
struct DeadUpstream {
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DeadUpstream {
    fn start(addr: SocketAddr, hold: bool) -> DeadUpstream {
        let listener = TcpListener::bind(addr).expect("the fake's port");
        listener.set_nonblocking(true).unwrap();
        let (accepted, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (a, s) = (Arc::clone(&accepted), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let held: Mutex<Vec<TcpStream>> = Mutex::new(Vec::new());
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        if hold {
                            held.lock().unwrap().push(conn);
                        }
                    }
                    // Polls the non-blocking listener (no event to wait on).
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        DeadUpstream {
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for DeadUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn fake() -> FakeIndex {
    let root: BTreeMap<String, FakeProject> = (0..PROJECTS)
        .map(|i| {
            let name = format!("p{i}");
            let file = FakeFile::new(&format!("{name}-1.0-py3-none-any.whl"), vec![i as u8; 100]);
            (
                name,
                FakeProject {
                    files: vec![file],
                    versions: vec![],
                    status: None,
                },
            )
        })
        .collect();
    FakeIndex::start(BTreeMap::from([("root".to_owned(), root)]))
}

/// The breaker's state for the fake's host on `/metrics` (`None`: closed
/// and not failing).
fn breaker_state(addr: SocketAddr, upstream: SocketAddr) -> Option<u64> {
    let text = get(addr, "/metrics").text();
    let series = format!("roxpi_upstream_breaker_state{{host=\"{upstream}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
}

fn restart_with_the_upstream_down(hold: bool) {
    let mut f = fake();
    let upstream = f.addr;
    let cache = tempfile::tempdir().unwrap();
    let root = f.url("root");
    let env = [
        ("ROXPI_INDEX_URL", root.as_str()),
        ("ROXPI_CACHE_DIR", cache.path().to_str().unwrap()),
        ("ROXPI_STALE_WHILE_REVALIDATE", "0"),
        ("ROXPI_READ_TIMEOUT", "1"),
        ("ROXPI_CONNECT_TIMEOUT", "1"),
        ("ROXPI_BREAKER_FAILURES", "3"),
        ("ROXPI_BREAKER_PROBE", "2"),
    ];
    // Online: every page is fetched once and saved.
    {
        let (roxpi, _home) = start_roxpi(&env);
        for i in 0..PROJECTS {
            assert_eq!(get(roxpi.addr, &format!("/index/p{i}/")).status, 200);
        }
    }
    // The uplink goes, and roxpi restarts: its pages are on disk only.
    f.stop();
    let dead = DeadUpstream::start(upstream, hold);
    let (roxpi, _home) = start_roxpi(&env);
    let addr = roxpi.addr;
    // The first misses try the upstream and get their saved copy.
    for i in 0..FAILURES {
        let r = get(addr, &format!("/index/p{i}/"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-cache"), Some("STALE"));
    }
    wait_until(Duration::from_secs(10), "the breaker to open", || {
        breaker_state(addr, upstream).is_some_and(|s| s >= 1)
    });
    let before = dead.accepted();
    // Every other saved page answers at once, without a connect each.
    let mut times = Vec::new();
    for i in FAILURES..PROJECTS {
        let t = Instant::now();
        let r = get(addr, &format!("/index/p{i}/"));
        times.push(t.elapsed());
        assert_eq!(r.status, 200, "p{i}: {}", r.text());
        assert_eq!(r.header("x-cache"), Some("STALE"), "p{i}");
        assert!(r.text().contains(&format!("p{i}-1.0-py3-none-any.whl")));
    }
    let connects = dead.accepted() - before;
    times.sort();
    let (median, max) = (times[times.len() / 2], times[times.len() - 1]);
    eprintln!(
        "upstream {} : {} misses with the breaker open: median {median:?}, max {max:?}, {connects} connects ({} before it opened)",
        if hold { "accepting, never answering" } else { "refusing" },
        PROJECTS - FAILURES,
        before
    );
    // A connect per miss would take the read timeout (1 s) each.
    assert!(max < Duration::from_millis(500), "slowest {max:?}");
    // Only the probes (one per 2 s) reach the upstream.
    let probes = times.iter().map(Duration::as_secs_f64).sum::<f64>() / 2.0;
    assert!(
        connects <= 2 + probes as usize,
        "{connects} connects during {} misses",
        PROJECTS - FAILURES
    );
    // /ready stays 200 and says the upstream is down.
    let ready = get(addr, "/ready");
    assert_eq!(ready.status, 200);
    assert!(
        ready.text().contains("\"upstream\":\"down\""),
        "{}",
        ready.text()
    );
    assert!(get(addr, "/").text().contains("upstream down"));
    // A miss without a saved copy: 502 at once, with the reason.
    let t = Instant::now();
    let none = get(addr, "/index/unknown-project/");
    assert!(t.elapsed() < Duration::from_millis(500));
    assert_eq!(none.status, 502, "{}", none.text());
    assert!(none.text().contains("down since"), "{}", none.text());
    assert_eq!(none.header("retry-after"), Some("2"));
    // The upstream comes back: the next probe (at most 2 s away) closes
    // the breaker. (Each poll asks for a page not asked for yet: a page
    // that just failed rests for 5 s without a fetch.)
    drop(dead);
    f.resume();
    let back = Instant::now();
    let mut n = 0;
    wait_until(Duration::from_secs(5), "the breaker to close", || {
        n += 1;
        let _ = get(addr, &format!("/index/new-{n}/"));
        breaker_state(addr, upstream).is_none()
    });
    eprintln!(
        "breaker closed {:?} after the upstream came back",
        back.elapsed()
    );
    assert_eq!(
        get(addr, "/index/never-asked/").status,
        404,
        "answered by the upstream"
    );
}

#[test]
fn an_upstream_refusing_connections_opens_the_breaker_and_saved_pages_answer_at_once() {
    within(LIMIT, || restart_with_the_upstream_down(false));
}

#[test]
fn an_upstream_that_accepts_and_never_answers_opens_the_breaker_too() {
    within(LIMIT, || restart_with_the_upstream_down(true));
}

/// An upstream that answers, but slowly, is named on the home page with
/// its average time to response headers, and in `/metrics`.
#[test]
fn a_slow_upstream_is_named_on_the_home_page() {
    within(LIMIT, || {
        let fake = FakeIndex::start(BTreeMap::new());
        fake.add_project(
            "root",
            "slow",
            FakeProject {
                files: (0..3)
                    .map(|i| {
                        FakeFile::new(
                            &format!("slow-1.{i}-py3-none-any.whl"),
                            crate::util::blob(3000, i),
                        )
                    })
                    .collect(),
                versions: vec!["1.0".into()],
                ..Default::default()
            },
        );
        let (roxpi, _cache, _home) = crate::util::roxpi_on(&fake, &[]);
        let home = |addr| String::from_utf8_lossy(&get(addr, "/").body).into_owned();
        assert_eq!(get(roxpi.addr, "/index/slow/").status, 200);
        assert!(
            home(roxpi.addr).contains("<th>upstream</th><td>ok</td>"),
            "{}",
            home(roxpi.addr)
        );

        fake.set_file_delay(Duration::from_millis(1500));
        let addr = roxpi.addr;
        let gets: Vec<_> = (0..3)
            .map(|i| {
                std::thread::spawn(move || {
                    get(addr, &format!("/index/slow/slow-1.{i}-py3-none-any.whl")).status
                })
            })
            .collect();
        for g in gets {
            assert_eq!(g.join().unwrap(), 200);
        }
        let page = home(roxpi.addr);
        let host = fake.url("root");
        let host = host
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        // At least the fake's delay (the third may wait for a fake worker).
        let said = page
            .split(&format!("{host}: slow (answers in "))
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no slow upstream on the home page:\n{page}"));
        assert!(said > 1.0, "{said}");
        let metrics = String::from_utf8_lossy(&get(roxpi.addr, "/metrics").body).into_owned();
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "roxpi_upstream_response_seconds{{host=\"{host}\"}}"
                ))
            })
            .unwrap_or_else(|| panic!("no response time series:\n{metrics}"));
        let avg: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(avg > 1.0, "{line}");
        // The file's bytes count for its project, once its response is
        // finished (the observer runs after the last byte is written,
        // which may be after the client has read it).
        let mut page = page;
        let deadline = Instant::now() + Duration::from_secs(2);
        while !page.contains(">slow</a></td><td>8.8 KiB</td>") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            page = home(roxpi.addr);
        }
        assert!(page.contains("Top projects by bytes served"), "{page}");
        assert!(page.contains(">slow</a></td><td>8.8 KiB</td>"), "{page}");
    });
}
