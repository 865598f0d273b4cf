//! How a prefetch tells what it does: a progress bar on a terminal (files,
//! bytes, rate, ETA, redrawn on stderr), plain lines otherwise (one per
//! file, on stdout), log lines in the server; and the closing summary.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{Failure, Progress, State};
use crate::human::human_bytes;

/// Told as each file finishes (from the worker threads).
pub trait Report: Sync {
    fn fetched(&self, file: &str, bytes: u64);
    fn cached(&self, file: &str);
    fn failed(&self, failure: &Failure);
}

/// The bar on a terminal, plain lines otherwise.
pub fn for_terminal(progress: Arc<Progress>) -> Box<dyn Report> {
    if std::io::stderr().is_terminal() {
        Box::new(Bar::start(progress))
    } else {
        Box::new(Lines)
    }
}

/// One line per file on stdout.
pub struct Lines;

impl Report for Lines {
    fn fetched(&self, file: &str, bytes: u64) {
        println!("fetched {file} ({})", human_bytes(bytes));
    }
    fn cached(&self, file: &str) {
        println!("cached  {file}");
    }
    fn failed(&self, f: &Failure) {
        println!("failed  {}: {}", f.what, f.reason);
    }
}

/// Log lines (the server's `ROXPI_PREFETCH`): failures as warnings, the
/// rest at debug.
pub struct Log;

impl Report for Log {
    fn fetched(&self, file: &str, bytes: u64) {
        log::debug!("prefetch: fetched {file} ({})", human_bytes(bytes));
    }
    fn cached(&self, file: &str) {
        log::debug!("prefetch: cached {file}");
    }
    fn failed(&self, f: &Failure) {
        log::warn!("prefetch: failed {}: {}", f.what, f.reason);
    }
}

/// A bar redrawn on stderr ten times a second; failures print above it.
pub struct Bar {
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Bar {
    fn start(progress: Arc<Progress>) -> Bar {
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (progress, stop) = (Arc::clone(&progress), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    draw(&render(&Snapshot::of(&progress), width()));
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Bar {
            progress,
            stop,
            ticker: Some(ticker),
        }
    }
}

fn draw(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{line}");
    let _ = err.flush();
}

/// The terminal's width from `COLUMNS`, else 80.
fn width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|w| (20..=500).contains(w))
        .unwrap_or(80)
}

impl Report for Bar {
    fn fetched(&self, _: &str, _: u64) {}
    fn cached(&self, _: &str) {}
    fn failed(&self, f: &Failure) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "\r\x1b[2Kfailed {}: {}", f.what, f.reason);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        // The last state stays on screen.
        draw(&render(&Snapshot::of(&self.progress), width()));
        let _ = writeln!(std::io::stderr());
    }
}

/// The numbers a bar shows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Snapshot {
    pub state: State,
    pub files_total: usize,
    pub files_done: usize,
    pub bytes_total: u64,
    pub bytes_done: u64,
    pub elapsed: Duration,
}

impl Snapshot {
    pub fn of(p: &Progress) -> Snapshot {
        Snapshot {
            state: p.state(),
            files_total: p.files_total.load(Ordering::Relaxed),
            files_done: p.files_done(),
            bytes_total: p.bytes_total.load(Ordering::Relaxed),
            bytes_done: p.bytes_done.load(Ordering::Relaxed),
            elapsed: p.started.elapsed(),
        }
    }
}

/// The bar's line (pure): `[#####-----] 12/40 files  34.5 MiB / 120.0 MiB
/// 5.2 MiB/s  ETA 17 s`, cut to `width`.
pub fn render(s: &Snapshot, width: usize) -> String {
    if s.state == State::Planning {
        return format!("reading the index pages… {:.0} s", s.elapsed.as_secs_f64());
    }
    let secs = s.elapsed.as_secs_f64().max(0.001);
    let rate = s.bytes_done as f64 / secs;
    let fraction = if s.bytes_total > 0 {
        s.bytes_done as f64 / s.bytes_total as f64
    } else if s.files_total > 0 {
        s.files_done as f64 / s.files_total as f64
    } else {
        1.0
    }
    .clamp(0.0, 1.0);
    let eta = if s.state == State::Done {
        String::from("done")
    } else if rate > 0.0 && s.bytes_total > s.bytes_done {
        // A claimed size may be absurd: no ETA past what a Duration holds.
        let left = Duration::try_from_secs_f64((s.bytes_total - s.bytes_done) as f64 / rate)
            .unwrap_or(Duration::MAX);
        format!("ETA {}", crate::human::human_duration(left))
    } else {
        String::from("ETA …")
    };
    let text = format!(
        " {}/{} files  {} / {}  {}/s  {eta}",
        s.files_done,
        s.files_total,
        human_bytes(s.bytes_done),
        human_bytes(s.bytes_total),
        human_bytes(rate as u64),
    );
    let bar_width = width.saturating_sub(text.chars().count() + 2).clamp(0, 40);
    let filled = (fraction * bar_width as f64).round() as usize;
    let line = format!(
        "[{}{}]{text}",
        "#".repeat(filled),
        "-".repeat(bar_width - filled)
    );
    line.chars().take(width).collect()
}

/// The closing summary: fetched, already cached, failed (with each reason).
pub fn summary(p: &Progress) -> String {
    let mut out = format!(
        "prefetch: {} fetched ({}), {} already cached, {} failed, in {:.1} s",
        p.fetched.load(Ordering::Relaxed),
        human_bytes(p.bytes_fetched.load(Ordering::Relaxed)),
        p.cached.load(Ordering::Relaxed),
        p.failed.load(Ordering::Relaxed),
        p.started.elapsed().as_secs_f64()
    );
    for f in p.failures() {
        out.push_str(&format!("\n  failed {}: {}", f.what, f.reason));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(state: State, files: (usize, usize), bytes: (u64, u64), secs: u64) -> Snapshot {
        Snapshot {
            state,
            files_done: files.0,
            files_total: files.1,
            bytes_done: bytes.0,
            bytes_total: bytes.1,
            elapsed: Duration::from_secs(secs),
        }
    }

    #[test]
    fn bars() {
        let mib = 1 << 20;
        let cases = [
            (
                snap(State::Planning, (0, 0), (0, 0), 2),
                80,
                "reading the index pages… 2 s",
            ),
            (
                snap(State::Fetching, (12, 40), (30 * mib, 120 * mib), 10),
                80,
                "[######-----------------] 12/40",
            ),
            (
                snap(State::Fetching, (12, 40), (30 * mib, 120 * mib), 10),
                80,
                "12/40 files",
            ),
            (
                snap(State::Fetching, (12, 40), (30 * mib, 120 * mib), 10),
                80,
                "3.0 MiB/s",
            ),
            (
                snap(State::Fetching, (12, 40), (30 * mib, 120 * mib), 10),
                80,
                "ETA 30 s",
            ),
            (
                snap(State::Done, (40, 40), (120 * mib, 120 * mib), 40),
                80,
                "done",
            ),
            (
                snap(State::Done, (3, 3), (0, 0), 1),
                80,
                &format!("[{}] 3/3", "#".repeat(40)),
            ),
        ];
        for (s, width, want) in cases {
            let line = render(&s, width);
            assert!(line.contains(want), "{line:?} lacks {want:?}");
            assert!(line.chars().count() <= width, "{line:?}");
        }
        // A size claimed by the index near u64::MAX, received slowly: no panic.
        let huge = render(&snap(State::Fetching, (0, 1), (1, u64::MAX), 1_000_000), 80);
        assert!(huge.contains("ETA"), "{huge}");
        // Narrow terminals: no bar, the line cut to fit.
        let narrow = render(&snap(State::Fetching, (1, 2), (1, 2), 1), 20);
        assert_eq!(narrow.chars().count(), 20, "{narrow:?}");
    }
}
