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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::Timespec;

use super::conn::Conn;
use super::worker::{write_timed_out, Ready, Transfer, Work};
use super::Shared;

/// How long the poller sleeps with nothing to do.
const IDLE_TICK: Duration = Duration::from_millis(250);
/// How long it sleeps at most while requests wait on a deadline.
const WAITING_TICK: Duration = Duration::from_millis(20);

struct Parked {
    what: Waits,
    deadline: Instant,
}

/// What a parked connection waits for.
enum Waits {
    /// Its next request (readable).
    Read(Conn),
    /// Room for the rest of its response (writable).
    Write(Box<Transfer>),
}

impl Waits {
    fn conn(&self) -> &Conn {
        match self {
            Waits::Read(c) => c,
            Waits::Write(t) => &t.conn,
        }
    }
}

pub(crate) struct Poller {
    epoll: OwnedFd,
    parked: Mutex<HashMap<u64, Parked>>,
    next_token: AtomicU64,
    /// Responses parked for writability (they outlive a shutdown request
    /// until done or timed out).
    writes: AtomicUsize,
}

const INTEREST: EventFlags = EventFlags::IN
    .union(EventFlags::RDHUP)
    .union(EventFlags::ONESHOT);
const WRITE_INTEREST: EventFlags = EventFlags::OUT.union(EventFlags::ONESHOT);

impl Poller {
    pub fn new() -> std::io::Result<Poller> {
        Ok(Poller {
            epoll: epoll::create(epoll::CreateFlags::CLOEXEC)?,
            parked: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            writes: AtomicUsize::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Parked>> {
        // A panic while the map was held cannot leave it inconsistent (it
        // only inserts and removes), so a poisoned lock is used as is.
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks `conn` until its next bytes arrive or `deadline` passes.
    pub fn park(&self, mut conn: Conn, deadline: Instant) {
        let first = !conn.registered;
        conn.registered = true;
        self.arm(Waits::Read(conn), deadline, first, INTEREST);
    }

    /// Parks a response until its socket can take more bytes, or closes it
    /// at `deadline` (a client that stopped reading).
    pub fn park_write(&self, mut t: Transfer, deadline: Instant) {
        let first = !t.conn.registered;
        t.conn.registered = true;
        self.writes.fetch_add(1, Ordering::AcqRel);
        self.arm(Waits::Write(Box::new(t)), deadline, first, WRITE_INTEREST);
    }

    /// Responses parked for writability now.
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::Acquire)
    }

    fn arm(&self, what: Waits, deadline: Instant, first: bool, interest: EventFlags) {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        // The entry goes in before the socket is armed, so that an immediate
        // event finds it; epoll_ctl is a short syscall, not I/O.
        let mut parked = self.lock();
        let entry = parked.entry(token).or_insert(Parked { what, deadline });
        let data = EventData::new_u64(token);
        let sock = &entry.what.conn().stream;
        let armed = if first {
            epoll::add(&self.epoll, sock, data, interest)
        } else {
            epoll::modify(&self.epoll, sock, data, interest)
        };
        if let Err(e) = armed {
            log::warn!("cannot arm connection for polling: {e}");
            let gone = parked.remove(&token);
            drop(parked);
            if let Some(p) = gone {
                self.forget(p.what);
            }
        }
    }

    /// Drops a parked entry (its connection closes).
    fn forget(&self, what: Waits) {
        if let Waits::Write(_) = what {
            self.writes.fetch_sub(1, Ordering::AcqRel);
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
                // Idle connections close now; responses being written go on
                // until done or timed out.
                let idle: Vec<Parked> = {
                    let mut parked = self.lock();
                    let keys: Vec<u64> = parked
                        .iter()
                        .filter(|(_, p)| matches!(p.what, Waits::Read(_)))
                        .map(|(k, _)| *k)
                        .collect();
                    keys.iter().filter_map(|k| parked.remove(k)).collect()
                };
                drop(idle);
                shared.waiting.clear();
                if self.writes() == 0 {
                    return;
                }
            }
            next_deadline = shared.waiting.expire(shared, Instant::now());
            {
                let mut parked = self.lock();
                for ev in &events {
                    let (flags, data) = (ev.flags, ev.data);
                    if let Some(p) = parked.remove(&data.u64()) {
                        let dead = flags.intersects(EventFlags::ERR | EventFlags::HUP)
                            && !flags.intersects(EventFlags::IN | EventFlags::OUT);
                        handoff.push((p.what, dead));
                    }
                }
            }
            let now = Instant::now();
            for (what, dead) in handoff.drain(..) {
                if let Waits::Write(_) = what {
                    self.writes.fetch_sub(1, Ordering::AcqRel);
                }
                let work = match what {
                    Waits::Read(_) | Waits::Write(_) if dead => continue,
                    Waits::Read(conn) => Work::Conn(Ready { conn, queued: now }),
                    Waits::Write(t) => Work::Write(t),
                };
                if let Err(e) = ready.send(work) {
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
                    match p.what {
                        Waits::Read(conn) => conn.close(),
                        Waits::Write(t) => {
                            self.writes.fetch_sub(1, Ordering::AcqRel);
                            write_timed_out(shared, *t)
                        }
                    }
                }
            }
        }
    }
}
