//! Logging through flexi_logger with its asynchronous writer, and the
//! access log beside it, batched per thread.
//!
//! Access-log lines (one per response) do not go through the logger's
//! channel: a channel send and a wake-up of its writer thread per request
//! cost the hot path about a tenth of its throughput (part 15's profile).
//! Each thread that answers requests appends its lines to a buffer of its
//! own (`access`), and hands the buffer to the access writer thread when
//! it holds 64 KiB, when its oldest line is `FLUSH_AFTER` old (checked at
//! each line and before a worker waits for work: `flush_due`), and when the
//! thread ends. This is nginx's `access_log … buffer=64k flush=…`.
//!
//! The writer thread writes each batch to stderr under stderr's lock (the
//! one flexi_logger's writer takes for each of its lines, so lines never
//! interleave). Its queue holds at most 1 MiB: if stderr is not read (a
//! stuck log collector), batches past it are dropped and counted, and a
//! warning says how many lines were lost, so serving never stops for the
//! log. `Logging`'s drop (at exit) writes what is queued.

use std::cell::RefCell;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use flexi_logger::{DeferredNow, FlexiLoggerError, Logger, LoggerHandle, WriteMode};
use log::Record;

/// The access log's target (`ROXPI_LOG=info,roxpi::access=warn` turns it off).
pub const ACCESS: &str = "roxpi::access";

/// A thread's batch is written once it holds this much.
const BATCH_BYTES: usize = 64 * 1024;
/// ... or once its oldest line is this old.
pub const FLUSH_AFTER: Duration = Duration::from_millis(200);
/// Bytes queued for the writer at most.
const QUEUE_BYTES: usize = 1 << 20;

/// How access lines are written: not at all by `start` (through the
/// `log` macros, for embedders), text, or JSON.
static ACCESS_FORMAT: AtomicU8 = AtomicU8::new(VIA_LOG);
const VIA_LOG: u8 = 0;
const TEXT: u8 = 1;
const JSON: u8 = 2;

/// Keeps logging running; dropping it (at exit) writes what is queued.
pub struct Logging {
    _logger: LoggerHandle,
}

impl Drop for Logging {
    fn drop(&mut self) {
        flush_access();
        if let Some(writer) = WRITER.get() {
            let (done, wait) = crossbeam_channel::bounded(1);
            if writer
                .tx
                .send_timeout(Batch::Sync(done), Duration::from_secs(1))
                .is_ok()
            {
                let _ = wait.recv_timeout(Duration::from_secs(2));
            }
        }
    }
}

/// Starts logging to stderr with `spec` (a level or a flexi_logger spec).
/// Keep the handle alive until exit.
pub fn start(spec: &str, json: bool) -> Result<Logging, FlexiLoggerError> {
    let handle = Logger::try_with_str(spec)?
        .log_to_stderr()
        .format(if json { json_format } else { text_format })
        .write_mode(WriteMode::Async)
        .start()?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let started = std::thread::Builder::new()
        .name("roxpi-access-log".into())
        .stack_size(128 * 1024)
        .spawn(move || write_batches(&rx));
    match started {
        Ok(_) => {
            let _ = WRITER.set(Writer {
                tx,
                queued: AtomicUsize::new(0),
                dropped: AtomicU64::new(0),
            });
            ACCESS_FORMAT.store(if json { JSON } else { TEXT }, Ordering::Release);
        }
        // Access lines then go through the logger, one by one.
        Err(e) => log::warn!("cannot start the access-log writer: {e}"),
    }
    Ok(Logging { _logger: handle })
}

/// The access writer: its queue, the bytes in it, and lines dropped
/// because it was full.
struct Writer {
    tx: Sender<Batch>,
    queued: AtomicUsize,
    dropped: AtomicU64,
}

static WRITER: OnceLock<Writer> = OnceLock::new();

enum Batch {
    Lines(Vec<u8>),
    /// Answered once everything queued before it is written.
    Sync(Sender<()>),
}

fn write_batches(rx: &Receiver<Batch>) {
    for batch in rx {
        match batch {
            Batch::Lines(lines) => {
                let _ = std::io::stderr().lock().write_all(&lines);
                if let Some(w) = WRITER.get() {
                    w.queued.fetch_sub(lines.len(), Ordering::AcqRel);
                }
            }
            Batch::Sync(done) => {
                let _ = done.send(());
            }
        }
        let dropped = WRITER
            .get()
            .map_or(0, |w| w.dropped.swap(0, Ordering::Relaxed));
        if dropped > 0 {
            log::warn!("access log: {dropped} lines dropped: stderr was not read fast enough");
        }
    }
}

/// Hands a batch to the writer without waiting; a full queue drops it.
fn to_writer(lines: &[u8]) {
    let Some(writer) = WRITER.get() else {
        let _ = std::io::stderr().lock().write_all(lines);
        return;
    };
    let queued = writer.queued.fetch_add(lines.len(), Ordering::AcqRel);
    if queued + lines.len() > QUEUE_BYTES {
        writer.queued.fetch_sub(lines.len(), Ordering::AcqRel);
        let n = lines.iter().filter(|&&b| b == b'\n').count();
        writer.dropped.fetch_add(n as u64, Ordering::Relaxed);
    } else if writer.tx.send(Batch::Lines(lines.to_vec())).is_err() {
        writer.queued.fetch_sub(lines.len(), Ordering::AcqRel);
    }
}

fn text_format(
    w: &mut dyn std::io::Write,
    now: &mut DeferredNow,
    record: &Record<'_>,
) -> std::io::Result<()> {
    if record.target() == ACCESS {
        write!(w, "{} access {}", now.format_rfc3339(), record.args())
    } else {
        write!(
            w,
            "{} {:<5} {}",
            now.format_rfc3339(),
            record.level(),
            record.args()
        )
    }
}

/// One JSON object per line: `ts`, `level`, `target`, `msg`.
fn json_format(
    w: &mut dyn std::io::Write,
    now: &mut DeferredNow,
    record: &Record<'_>,
) -> std::io::Result<()> {
    let line = serde_json::json!({
        "ts": now.format_rfc3339(),
        "level": record.level().as_str(),
        "target": record.target(),
        "msg": record.args().to_string(),
    });
    write!(w, "{line}")
}

/// Whether access lines are wanted (the log spec enables `roxpi::access`
/// at info).
pub fn access_enabled() -> bool {
    log::log_enabled!(target: ACCESS, log::Level::Info)
}

/// Logs one access line that `write` appends to a buffer (no `fmt`
/// machinery needed): into this thread's batch once `start` ran, else
/// through the `log` macros.
pub fn access_line(write: impl FnOnce(&mut Vec<u8>)) {
    let format = ACCESS_FORMAT.load(Ordering::Acquire);
    let via_log = |write: &mut dyn FnMut(&mut Vec<u8>)| {
        let mut line = Vec::new();
        write(&mut line);
        log::info!(target: ACCESS, "{}", String::from_utf8_lossy(&line));
    };
    let mut write = Some(write);
    let mut once = |out: &mut Vec<u8>| {
        if let Some(w) = write.take() {
            w(out);
        }
    };
    if format == VIA_LOG {
        via_log(&mut once);
        return;
    }
    BATCH.with(|b| match b.try_borrow_mut() {
        Ok(mut b) => b.push(&mut once, format == JSON),
        // Re-entered from a panic hook or a destructor: not batched.
        Err(_) => via_log(&mut once),
    });
}

/// Writes this thread's batched access lines now (call before the thread
/// waits for work).
pub fn flush_access() {
    BATCH.with(|b| {
        if let Ok(mut b) = b.try_borrow_mut() {
            b.flush();
        }
    });
}

/// Before a worker waits for work: writes this thread's lines if the
/// oldest is `FLUSH_AFTER` old, and returns how long the wait may last
/// (`longest`, or less so that the lines held are written in time).
pub fn flush_due(longest: Duration) -> Duration {
    BATCH.with(|b| {
        let Ok(mut b) = b.try_borrow_mut() else {
            return longest;
        };
        if b.buf.is_empty() {
            return longest;
        }
        let age = Duration::from_millis(now_ms().saturating_sub(b.oldest_ms));
        if age >= FLUSH_AFTER {
            b.flush();
            return longest;
        }
        longest.min(FLUSH_AFTER - age)
    })
}

/// Now, in ms since the epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

thread_local! {
    static BATCH: RefCell<Lines> = RefCell::new(Lines::default());
}

/// A thread's batch of access lines.
struct Lines {
    buf: Vec<u8>,
    /// When the oldest buffered line was logged (ms since the epoch).
    oldest_ms: u64,
    /// The line being formatted (JSON: the `msg` before escaping).
    scratch: Vec<u8>,
    clock: Stamp,
    /// Where a batch goes (the writer; a test's recorder).
    write: fn(&[u8]),
}

impl Default for Lines {
    fn default() -> Self {
        Lines {
            buf: Vec::new(),
            oldest_ms: 0,
            scratch: Vec::new(),
            clock: Stamp::default(),
            write: to_writer,
        }
    }
}

impl Lines {
    fn push(&mut self, write: &mut dyn FnMut(&mut Vec<u8>), json: bool) {
        let now = SystemTime::now();
        let ms = self.clock.update(now);
        if !self.buf.is_empty()
            && ms.saturating_sub(self.oldest_ms) >= FLUSH_AFTER.as_millis() as u64
        {
            self.flush();
        }
        if self.buf.is_empty() {
            self.oldest_ms = ms;
        }
        // The buffer grows with use and is kept: a busy worker's reaches
        // the batch size once; a transfer thread that logs one line now
        // and then holds a few hundred bytes, not 64 KiB.
        let ts = self.clock.text();
        if json {
            self.scratch.clear();
            write(&mut self.scratch);
            let msg = String::from_utf8_lossy(&self.scratch);
            // The same object (and key order) as `json_format`.
            self.buf.extend_from_slice(b"{\"level\":\"INFO\",\"msg\":");
            let _ = serde_json::to_writer(&mut self.buf, &msg);
            self.buf
                .extend_from_slice(b",\"target\":\"roxpi::access\",\"ts\":\"");
            self.buf.extend_from_slice(ts.as_bytes());
            self.buf.extend_from_slice(b"\"}\n");
        } else {
            self.buf.extend_from_slice(ts.as_bytes());
            self.buf.extend_from_slice(b" access ");
            write(&mut self.buf);
            self.buf.push(b'\n');
        }
        if self.buf.len() >= BATCH_BYTES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        (self.write)(&self.buf);
        self.buf.clear();
        if self.buf.capacity() > 4 * BATCH_BYTES {
            self.buf.shrink_to(2 * BATCH_BYTES);
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The access log's timestamp, formatted as flexi_logger formats the
/// other lines (RFC 3339, local time, milliseconds): the text up to the
/// second is made once per second, the milliseconds per line.
#[derive(Default)]
struct Stamp {
    second: u64,
    /// `2026-12-03T07:08:45.958+00:00` of the last line.
    text: String,
}

/// Where the milliseconds sit in `Stamp::text`.
const MILLIS: std::ops::Range<usize> = 20..23;

impl Stamp {
    /// Sets the stamp to `now`; returns `now` in ms since the epoch.
    fn update(&mut self, now: SystemTime) -> u64 {
        let since = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let (second, millis) = (since.as_secs(), since.subsec_millis());
        if second != self.second || self.text.len() < MILLIS.end {
            let local: chrono::DateTime<chrono::Local> = now.into();
            self.text = local.to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
            self.second = second;
        }
        if self.text.is_char_boundary(MILLIS.start) && self.text.is_char_boundary(MILLIS.end) {
            let digits = [
                b'0' + (millis / 100) as u8,
                b'0' + (millis / 10 % 10) as u8,
                b'0' + (millis % 10) as u8,
            ];
            if let Ok(digits) = std::str::from_utf8(&digits) {
                self.text.replace_range(MILLIS, digits);
            }
        }
        second * 1000 + u64::from(millis)
    }

    fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_stamp_matches_chrono_to_the_millisecond_across_seconds() {
        let mut stamp = Stamp::default();
        let base = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_000_000_123);
        for step_ms in [0u64, 1, 876, 877, 999, 1000, 61_000, 3_600_007] {
            let t = base + Duration::from_millis(step_ms);
            let ms = stamp.update(t);
            let want: chrono::DateTime<chrono::Local> = t.into();
            assert_eq!(
                stamp.text(),
                want.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
                "at +{step_ms} ms"
            );
            assert_eq!(ms, 1_796_000_000_123 + step_ms);
        }
    }

    #[test]
    fn a_batch_holds_lines_until_its_size_or_age_and_formats_them_like_the_logger() {
        static WRITTEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        fn record(batch: &[u8]) {
            WRITTEN.fetch_add(batch.len(), Ordering::Relaxed);
        }
        let mut b = Lines::default();
        b.write = record;
        let line = |text: String| move |out: &mut Vec<u8>| out.extend_from_slice(text.as_bytes());
        b.push(
            &mut line("1.2.3.4:5 \"GET /a\" 200 3 0.1ms HIT".into()),
            false,
        );
        let text = String::from_utf8(b.buf.clone()).unwrap();
        assert!(
            text.ends_with(" access 1.2.3.4:5 \"GET /a\" 200 3 0.1ms HIT\n"),
            "{text}"
        );
        assert_eq!(text.matches('\n').count(), 1);
        b.buf.clear();
        b.push(&mut line(format!("p \"GET /\\\" {}", 200)), true);
        let json: serde_json::Value =
            serde_json::from_slice(b.buf.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(json["msg"], "p \"GET /\\\" 200");
        assert_eq!(json["target"], ACCESS);
        assert_eq!(json["level"], "INFO");
        assert_eq!(json["ts"].as_str().unwrap().len(), b.clock.text().len());
        // An old line is written before a new one joins it.
        b.oldest_ms = 0;
        let before = b.buf.len();
        b.push(&mut line("x".into()), false);
        assert!(b.buf.len() < before, "the old batch was written first");
        assert_eq!(WRITTEN.load(Ordering::Relaxed), before);
        // A full batch is written at once.
        b.buf.clear();
        for _ in 0..(BATCH_BYTES / 50 + 2) {
            b.push(&mut line(format!("{:50}", "y")), false);
        }
        assert!(b.buf.len() < BATCH_BYTES, "written when full");
        assert!(WRITTEN.load(Ordering::Relaxed) >= before + BATCH_BYTES);
    }
}
