//! The poller: one epoll set that parks connections — idle between
//! requests, freshly accepted, with a request head only partly arrived, or
//! waiting for room to write — so that they hold no thread; and the timer
//! thread that closes them at their deadlines.
//!
//! Every parked socket is armed with `EPOLLONESHOT`. The request workers
//! themselves wait in `epoll_wait` on the set (leader/followers): when the
//! next bytes arrive the kernel wakes one idle worker, which takes the
//! connection out of the parked map and serves it. No hand-off thread sits
//! between the socket and the worker, so a request costs one wake-up, not
//! two. While a worker owns a connection it is disarmed; parking again
//! re-arms it (`EPOLL_CTL_MOD`). Work that does not come from a socket (a
//! woken parked request, a fresh connection from the accept thread) goes
//! through a channel whose eventfd is in the same set (edge-triggered; a
//! worker that takes an item re-signals while more are queued, so none is
//! stranded).
//!
//! Every parked connection has a deadline (the keep-alive timeout, or the
//! head deadline for a partial request); about once a second the timer
//! thread closes those past it, and it resumes parked requests at their
//! deadlines. Lock rule: `parked` is held only to insert or remove entries,
//! never across a socket close or a handler.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::Timespec;

use super::conn::Conn;
use super::worker::{write_timed_out, Ready, Transfer, Work};
use super::Shared;

/// How long the timer thread sleeps with nothing to do.
const IDLE_TICK: Duration = Duration::from_millis(250);
/// How long it sleeps at most while requests wait on a deadline.
const WAITING_TICK: Duration = Duration::from_millis(20);
/// The epoll token of the work channel's eventfd (connection tokens start
/// at 1).
const WORK_TOKEN: u64 = 0;
/// Marks the token of a parked request watched for its client hanging up
/// (the waiting table's token in the low bits).
const WAITING_BIT: u64 = 1 << 63;
/// Shards of the parked map.
const SHARDS: usize = 64;

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
    /// Signals queued work (edge-triggered, token `WORK_TOKEN`).
    work: OwnedFd,
    /// Parked connections by token, sharded so that a worker preempted
    /// while holding one lock (it is held across `epoll_ctl`) rarely stalls
    /// another.
    parked: Vec<Mutex<HashMap<u64, Parked>>>,
    /// Responses parked for writability (they outlive a shutdown request
    /// until done or timed out).
    writes: AtomicUsize,
}

const INTEREST: EventFlags = EventFlags::IN
    .union(EventFlags::RDHUP)
    .union(EventFlags::ONESHOT);
const WRITE_INTEREST: EventFlags = EventFlags::OUT.union(EventFlags::ONESHOT);
/// A parked request's socket: only its client hanging up (or an error).
const HANGUP_INTEREST: EventFlags = EventFlags::RDHUP.union(EventFlags::ONESHOT);

impl Poller {
    pub fn new() -> std::io::Result<Poller> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let work = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
        epoll::add(
            &epoll,
            &work,
            EventData::new_u64(WORK_TOKEN),
            EventFlags::IN | EventFlags::ET,
        )?;
        Ok(Poller {
            epoll,
            work,
            parked: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            writes: AtomicUsize::new(0),
        })
    }

    fn lock(&self, token: u64) -> MutexGuard<'_, HashMap<u64, Parked>> {
        let shard = &self.parked[(token % SHARDS as u64) as usize];
        // A panic while the map was held cannot leave it inconsistent (it
        // only inserts and removes), so a poisoned lock is used as is.
        crate::lock(shard)
    }

    /// Takes every parked entry that `pick` selects, shard by shard.
    fn take_all(&self, pick: impl Fn(&Parked) -> bool) -> Vec<Parked> {
        let mut taken = Vec::new();
        for shard in &self.parked {
            let mut parked = crate::lock(shard);
            let keys: Vec<u64> = parked
                .iter()
                .filter(|(_, p)| pick(p))
                .map(|(k, _)| *k)
                .collect();
            taken.extend(keys.iter().filter_map(|k| parked.remove(k)));
        }
        taken
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

    /// Watches the socket of a request parked in the waiting table under
    /// `token`, so that a client hanging up while it waits is noticed
    /// (`Work::HungUp`) instead of holding the descriptor until the
    /// deadline. The socket is not in the parked map meanwhile.
    pub fn watch_hangup(&self, conn: &mut Conn, token: u64) {
        let first = !conn.registered;
        conn.registered = true;
        let data = EventData::new_u64(token | WAITING_BIT);
        let armed = if first {
            epoll::add(&self.epoll, &conn.stream, data, HANGUP_INTEREST)
        } else {
            epoll::modify(&self.epoll, &conn.stream, data, HANGUP_INTEREST)
        };
        if let Err(e) = armed {
            // Not fatal: the request is answered or expires as before.
            log::debug!("cannot watch a parked request's connection: {e}");
        }
    }

    /// Responses parked for writability now.
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::Acquire)
    }

    fn arm(&self, what: Waits, deadline: Instant, first: bool, interest: EventFlags) {
        let token = what.conn().token;
        // The entry goes in before the socket is armed, so that an immediate
        // event finds it; epoll_ctl is a short syscall, not I/O.
        let mut parked = self.lock(token);
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
        self.parked.iter().map(|m| crate::lock(m).len()).sum()
    }

    /// Wakes one worker for an item just put on the work channel.
    pub fn signal(&self) {
        // Every write re-arms the edge; the counter's value is irrelevant.
        let _ = rustix::io::write(&self.work, &1u64.to_ne_bytes());
    }

    /// A request worker's wait: blocks until a parked connection is ready
    /// or work is queued (or `timeout` passes), and returns it. Connections
    /// that hung up while parked are closed here.
    pub fn next(
        &self,
        queue: &Receiver<Work>,
        events: &mut Vec<epoll::Event>,
        timeout: Duration,
    ) -> Option<Work> {
        if events.is_empty() {
            // Access lines are batched while there is work; a worker about
            // to wait writes them once they are due.
            let timeout = crate::logging::flush_due(timeout);
            let tick = Timespec {
                tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(1),
                tv_nsec: i64::from(timeout.subsec_nanos()),
            };
            self.wait(events, Some(&tick));
            // Taken from the end below: keep arrival order.
            events.reverse();
        }
        while let Some(ev) = events.pop() {
            let (flags, token) = (ev.flags, ev.data.u64());
            if token == WORK_TOKEN {
                let mut counter = [0u8; 8];
                let _ = rustix::io::read(&self.work, &mut counter);
                let Ok(work) = queue.try_recv() else { continue };
                if !queue.is_empty() {
                    // More queued: wake another worker for them.
                    self.signal();
                }
                return Some(work);
            }
            if token & WAITING_BIT != 0 {
                return Some(Work::HungUp(token & !WAITING_BIT));
            }
            let Some(p) = self.lock(token).remove(&token) else {
                continue;
            };
            if let Waits::Write(_) = p.what {
                self.writes.fetch_sub(1, Ordering::AcqRel);
            }
            let dead = flags.intersects(EventFlags::ERR | EventFlags::HUP)
                && !flags.intersects(EventFlags::IN | EventFlags::OUT);
            match p.what {
                Waits::Read(_) | Waits::Write(_) if dead => continue,
                Waits::Read(conn) => return Some(Work::Conn(Ready { conn, queued: None })),
                Waits::Write(t) => return Some(Work::Write(t)),
            }
        }
        None
    }

    /// One `epoll_wait` into `events` (empty before).
    fn wait(&self, events: &mut Vec<epoll::Event>, timeout: Option<&Timespec>) {
        match epoll::wait(
            &self.epoll,
            rustix::buffer::spare_capacity(&mut *events),
            timeout,
        ) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                log::error!("epoll_wait failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Gives the ready events a worker has claimed but not started back to
    /// the set, for other workers: its current request took long (a large
    /// page), and they must not wait behind it.
    /// Hang-ups of parked requests stay with this worker (dropping one is
    /// cheap, and their one-shot event cannot be re-armed from here).
    pub fn hand_back(&self, events: &mut Vec<epoll::Event>) {
        for ev in events.iter() {
            let token = ev.data.u64();
            if token == WORK_TOKEN {
                self.signal();
                continue;
            }
            if token & WAITING_BIT != 0 {
                continue;
            }
            let parked = self.lock(token);
            if let Some(p) = parked.get(&token) {
                let interest = match p.what {
                    Waits::Read(_) => INTEREST,
                    Waits::Write(_) => WRITE_INTEREST,
                };
                // Re-arming a ready socket reports it again at once.
                let _ = epoll::modify(&self.epoll, &p.what.conn().stream, ev.data, interest);
            }
        }
        // `retain` keeps the buffer's capacity (epoll_wait's room).
        events.retain(|ev| ev.data.u64() & WAITING_BIT != 0);
    }

    /// The timer thread: closes parked connections past their deadlines
    /// and resumes parked requests at theirs, until the server stops (then
    /// it closes every idle connection and waits for parked writes).
    pub fn run_timers(&self, shared: &Arc<Shared>) {
        let mut next_sweep = Instant::now();
        let mut next_deadline: Option<Instant> = None;
        loop {
            // Requests waiting on a deadline shorten the sleep (a new one
            // may arrive while asleep: at most WAITING_TICK late).
            let sleep = match next_deadline {
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .min(WAITING_TICK),
                None => IDLE_TICK,
            };
            std::thread::sleep(sleep);
            // Lines of writes this thread timed out.
            crate::logging::flush_access();
            if shared.stopping() {
                // Idle connections close now; responses being written go on
                // until done or timed out.
                drop(self.take_all(|p| matches!(p.what, Waits::Read(_))));
                shared.waiting.clear();
                if self.writes() == 0 {
                    return;
                }
            }
            let now = Instant::now();
            next_deadline = shared.waiting.expire(shared, now);
            if now >= next_sweep {
                next_sweep = now + Duration::from_secs(1);
                for p in self.take_all(|p| p.deadline <= now) {
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
