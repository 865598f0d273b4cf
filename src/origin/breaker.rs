//! The upstream circuit breaker, one per origin (host and port).
//!
//! After `failures` connect failures or timeouts in a row, each within
//! `window` of the first, the origin is **open**: requests to it fail at
//! once (`OriginError::Down`) without a connect attempt, so a miss answers
//! with the stale copy or a 502 at once instead of after the connect
//! timeout. Every `probe_every`, ONE request goes through (**half-open**):
//! an answer (any status) closes the breaker, a failure opens it again.
//!
//! Pure bookkeeping: the caller passes the time, so the rules are table
//! tested. Lock rule: the map's lock is held only for the bookkeeping,
//! never across a request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// An origin: host (lower case, no brackets) and port.
pub type Host = (String, u16);

/// When a breaker opens and how often it probes.
#[derive(Clone, Copy, Debug)]
pub struct BreakerParams {
    /// Consecutive connect failures or timeouts that open it.
    pub failures: u32,
    /// ... all within this long of the first.
    pub window: Duration,
    /// How often an open breaker lets one request through.
    pub probe_every: Duration,
}

impl Default for BreakerParams {
    fn default() -> Self {
        BreakerParams {
            failures: 5,
            window: Duration::from_secs(30),
            probe_every: Duration::from_secs(5),
        }
    }
}

/// What a breaker says about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Closed: go ahead.
    Go,
    /// Open, and this request is the probe.
    Probe,
    /// Open: do not connect. The origin has been down since then.
    Refuse { since: SystemTime },
}

/// A breaker's state, for `/metrics`, `/ready` and the home page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostState {
    pub host: String,
    /// 0 closed, 1 open, 2 half-open (a probe in flight).
    pub state: u8,
    /// When it opened (`None` when closed).
    pub down_since: Option<SystemTime>,
}

#[derive(Debug)]
struct Breaker {
    /// Failures in a row, and when the first of them happened.
    failures: u32,
    first_failure: Instant,
    /// Open since then (wall clock, for people) …
    down_since: Option<SystemTime>,
    /// … and the next probe's time.
    probe_at: Instant,
    probing: bool,
}

impl Breaker {
    fn closed(now: Instant) -> Breaker {
        Breaker {
            failures: 0,
            first_failure: now,
            down_since: None,
            probe_at: now,
            probing: false,
        }
    }
}

/// An origin is **slow** when its average time to response headers is
/// above this (PyPI answers in tens of milliseconds).
pub const SLOW: Duration = Duration::from_secs(1);

pub struct Breakers {
    params: BreakerParams,
    map: Mutex<HashMap<Host, Breaker>>,
    /// Per origin: the moving average of the time to response headers
    /// (seconds), over requests that got an answer.
    latency: Mutex<HashMap<Host, f64>>,
    /// Closed → open and open → closed changes.
    pub transitions: AtomicU64,
}

impl Breakers {
    pub fn new(params: BreakerParams) -> Breakers {
        Breakers {
            params,
            map: Mutex::new(HashMap::new()),
            latency: Mutex::new(HashMap::new()),
            transitions: AtomicU64::new(0),
        }
    }

    pub fn params(&self) -> BreakerParams {
        self.params
    }

    /// Whether a request to `host` may connect now.
    pub fn admit(&self, host: &Host, now: Instant) -> Admit {
        let mut map = crate::lock(&self.map);
        let Some(b) = map.get_mut(host) else {
            return Admit::Go;
        };
        let Some(since) = b.down_since else {
            return Admit::Go;
        };
        if !b.probing && now >= b.probe_at {
            b.probing = true;
            return Admit::Probe;
        }
        Admit::Refuse { since }
    }

    /// The outcome of a request that was admitted: `reached` when the
    /// origin answered at all (any status), not when the connect failed
    /// or timed out.
    pub fn record(&self, host: &Host, reached: bool, now: Instant) {
        let mut map = crate::lock(&self.map);
        if reached {
            if let Some(b) = map.remove(host) {
                if let Some(since) = b.down_since {
                    self.transitions.fetch_add(1, Ordering::Relaxed);
                    let down = since.elapsed().unwrap_or_default();
                    log::warn!(
                        "upstream {}:{} answers again after {:.0?} down: breaker closed",
                        host.0,
                        host.1,
                        down
                    );
                }
            }
            return;
        }
        let b = map
            .entry(host.clone())
            .or_insert_with(|| Breaker::closed(now));
        if b.down_since.is_some() {
            // A failed probe (or a request admitted before it opened).
            b.probing = false;
            b.probe_at = now + self.params.probe_every;
            return;
        }
        if b.failures == 0 || now.saturating_duration_since(b.first_failure) > self.params.window {
            b.failures = 1;
            b.first_failure = now;
        } else {
            b.failures += 1;
        }
        if b.failures >= self.params.failures {
            b.down_since = Some(SystemTime::now());
            b.probe_at = now + self.params.probe_every;
            b.probing = false;
            self.transitions.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "upstream {}:{} failed {} times in a row: breaker open, misses answer at once; one probe every {:?}",
                host.0,
                host.1,
                b.failures,
                self.params.probe_every
            );
        }
    }

    /// `host:port down since …` for every open breaker, if any; `None` also
    /// when the lock is busy (never blocks: `/ready` asks on the accept
    /// thread).
    pub fn down_now(&self) -> Option<String> {
        let map = self.map.try_lock().ok()?;
        let mut down: Vec<String> = map
            .iter()
            .filter_map(|((host, port), b)| {
                let since = httpdate::fmt_http_date(b.down_since?);
                Some(format!("upstream {host}:{port} down since {since}"))
            })
            .collect();
        down.sort();
        (!down.is_empty()).then(|| down.join("; "))
    }

    /// An answer from `host` took `took` to its headers: the moving
    /// average takes half of it (the home page shows the state now).
    pub fn timed(&self, host: &Host, took: Duration) {
        let mut map = crate::lock(&self.latency);
        let t = took.as_secs_f64();
        map.entry(host.clone())
            .and_modify(|avg| *avg = (*avg + t) / 2.0)
            .or_insert(t);
    }

    /// Every origin's average time to response headers, sorted by host.
    pub fn latencies(&self) -> Vec<(String, Duration)> {
        let map = crate::lock(&self.latency);
        let mut out: Vec<(String, Duration)> = map
            .iter()
            .map(|((host, port), avg)| {
                (
                    format!("{host}:{port}"),
                    Duration::from_secs_f64(avg.max(0.0)),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// Every origin that failed lately, sorted by host.
    pub fn states(&self) -> Vec<HostState> {
        let map = crate::lock(&self.map);
        let mut out: Vec<HostState> = map
            .iter()
            .map(|((host, port), b)| HostState {
                host: format!("{host}:{port}"),
                state: match (b.down_since, b.probing) {
                    (None, _) => 0,
                    (Some(_), false) => 1,
                    (Some(_), true) => 2,
                },
                down_since: b.down_since,
            })
            .collect();
        out.sort_by(|a, b| a.host.cmp(&b.host));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        ("pypi.example".into(), 443)
    }

    #[test]
    fn a_slow_origin_shows_in_the_moving_average() {
        let b = Breakers::new(BreakerParams::default());
        let ms = Duration::from_millis;
        b.timed(&host(), ms(50));
        assert_eq!(b.latencies(), [("pypi.example:443".to_owned(), ms(50))]);
        for _ in 0..10 {
            b.timed(&host(), ms(3000));
        }
        let avg = b.latencies()[0].1;
        assert!(avg > SLOW && avg < ms(3000), "{avg:?}");
        for _ in 0..12 {
            b.timed(&host(), ms(40));
        }
        assert!(b.latencies()[0].1 < ms(100));
    }

    #[test]
    fn opens_after_failures_in_a_row_within_the_window() {
        let b = Breakers::new(BreakerParams {
            failures: 3,
            window: Duration::from_secs(10),
            probe_every: Duration::from_secs(5),
        });
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Two failures, then an answer: the count starts again.
        b.record(&host(), false, at(0));
        b.record(&host(), false, at(1));
        b.record(&host(), true, at(2));
        b.record(&host(), false, at(3));
        b.record(&host(), false, at(4));
        assert_eq!(b.admit(&host(), at(4)), Admit::Go);
        // Failures further apart than the window do not add up.
        b.record(&host(), false, at(20));
        assert_eq!(b.admit(&host(), at(20)), Admit::Go);
        b.record(&host(), false, at(21));
        b.record(&host(), false, at(22));
        let Admit::Refuse { .. } = b.admit(&host(), at(22)) else {
            panic!("open after 3 in a row");
        };
        assert_eq!(b.states()[0].state, 1);
        assert_eq!(b.transitions.load(Ordering::Relaxed), 1);
        // Another origin is not affected.
        assert_eq!(b.admit(&("other".into(), 443), at(22)), Admit::Go);
    }

    #[test]
    fn an_open_breaker_lets_one_probe_through_per_interval() {
        let b = Breakers::new(BreakerParams {
            failures: 1,
            window: Duration::from_secs(10),
            probe_every: Duration::from_secs(5),
        });
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        b.record(&host(), false, at(0));
        assert!(matches!(b.admit(&host(), at(4)), Admit::Refuse { .. }));
        assert_eq!(b.admit(&host(), at(5)), Admit::Probe);
        // One probe at a time.
        assert!(matches!(b.admit(&host(), at(6)), Admit::Refuse { .. }));
        assert_eq!(b.states()[0].state, 2);
        // The probe fails: open again, next probe 5 s later.
        b.record(&host(), false, at(6));
        assert!(matches!(b.admit(&host(), at(10)), Admit::Refuse { .. }));
        assert_eq!(b.admit(&host(), at(11)), Admit::Probe);
        // It answers: closed.
        b.record(&host(), true, at(11));
        assert_eq!(b.admit(&host(), at(11)), Admit::Go);
        assert!(b.states().is_empty());
        assert_eq!(b.transitions.load(Ordering::Relaxed), 2);
    }
}
