//! The poller: one thread that parks idle connections — kept alive between
//! requests, freshly accepted, or with a request head only partly arrived —
//! so that they hold no worker.
//!
//! Every parked socket is armed in an epoll set with `EPOLLONESHOT`: when the
//! next bytes arrive the kernel reports it once and disarms it, the poller
//! takes the connection out of the parked map and sends it to the workers.
//! While a worker owns a connection it is disarmed, so a busy connection
//! never wakes the poller. Parking again re-arms it (`EPOLL_CTL_MOD`).
//!
//! Every parked connection has a deadline (the keep-alive timeout, or the
//! head deadline for a partial request); about once a second the poller
//! closes those past it. Lock rule: `parked` is held only to insert or
//! remove entries, never across a send to the workers or a socket close.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::Timespec;

use super::conn::Conn;
use super::worker::{Ready, Work};
use super::Shared;

/// How long the poller sleeps with nothing to do.
const IDLE_TICK: Duration = Duration::from_millis(250);
/// How long it sleeps at most while requests wait on a deadline.
const WAITING_TICK: Duration = Duration::from_millis(20);

struct Parked {
    conn: Conn,
    deadline: Instant,
}

pub(crate) struct Poller {
    epoll: OwnedFd,
    parked: Mutex<HashMap<u64, Parked>>,
    next_token: AtomicU64,
}

const INTEREST: EventFlags = EventFlags::IN
    .union(EventFlags::RDHUP)
    .union(EventFlags::ONESHOT);

impl Poller {
    pub fn new() -> std::io::Result<Poller> {
        Ok(Poller {
            epoll: epoll::create(epoll::CreateFlags::CLOEXEC)?,
            parked: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Parked>> {
        // A panic while the map was held cannot leave it inconsistent (it
        // only inserts and removes), so a poisoned lock is used as is.
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks `conn` until its next bytes arrive or `deadline` passes.
    pub fn park(&self, mut conn: Conn, deadline: Instant) {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let first = !conn.registered;
        conn.registered = true;
        // The entry goes in before the socket is armed, so that an immediate
        // event finds it; epoll_ctl is a short syscall, not I/O.
        let mut parked = self.lock();
        let entry = parked.entry(token).or_insert(Parked { conn, deadline });
        let data = EventData::new_u64(token);
        let armed = if first {
            epoll::add(&self.epoll, &entry.conn.stream, data, INTEREST)
        } else {
            epoll::modify(&self.epoll, &entry.conn.stream, data, INTEREST)
        };
        if let Err(e) = armed {
            log::warn!("cannot arm connection for polling: {e}");
            let gone = parked.remove(&token);
            drop(parked);
            drop(gone);
        }
    }

    /// How many connections are parked.
    pub fn parked(&self) -> usize {
        self.lock().len()
    }

    /// The poller thread: hands ready connections to the workers, closes
    /// expired ones, and resumes parked requests past their deadline, until
    /// the server stops (then it closes every parked one).
    pub fn run(&self, shared: &Arc<Shared>) {
        let (ready, stop) = (&shared.ready_tx, &shared.stop);
        let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
        let mut next_sweep = Instant::now();
        let mut next_deadline: Option<Instant> = None;
        let mut handoff = Vec::new();
        loop {
            events.clear();
            // Requests waiting on a deadline shorten the sleep (a new one
            // may arrive while asleep: at most WAITING_TICK late).
            let sleep = match next_deadline {
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .min(WAITING_TICK),
                None => IDLE_TICK,
            };
            let tick = Timespec {
                tv_sec: 0,
                tv_nsec: i64::from(sleep.subsec_nanos()),
            };
            match epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                Some(&tick),
            ) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    log::error!("epoll_wait failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            if stop.load(Ordering::Acquire) {
                let all: Vec<Parked> = self.lock().drain().map(|(_, p)| p).collect();
                drop(all);
                shared.waiting.clear();
                return;
            }
            next_deadline = shared.waiting.expire(shared, Instant::now());
            {
                let mut parked = self.lock();
                for ev in &events {
                    let (flags, data) = (ev.flags, ev.data);
                    if let Some(p) = parked.remove(&data.u64()) {
                        let dead = flags.intersects(EventFlags::ERR | EventFlags::HUP)
                            && !flags.contains(EventFlags::IN);
                        handoff.push((p.conn, dead));
                    }
                }
            }
            let now = Instant::now();
            for (conn, dead) in handoff.drain(..) {
                if dead {
                    drop(conn);
                } else if let Err(e) = ready.send(Work::Conn(Ready { conn, queued: now })) {
                    drop(e.into_inner());
                }
            }
            if now >= next_sweep {
                next_sweep = now + Duration::from_secs(1);
                let expired: Vec<Parked> = {
                    let mut parked = self.lock();
                    let keys: Vec<u64> = parked
                        .iter()
                        .filter(|(_, p)| p.deadline <= now)
                        .map(|(k, _)| *k)
                        .collect();
                    keys.iter().filter_map(|k| parked.remove(k)).collect()
                };
                for p in expired {
                    p.conn.close();
                }
            }
        }
    }
}
