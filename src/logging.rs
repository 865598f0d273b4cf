//! Logging through flexi_logger with its asynchronous writer: workers hand
//! formatted lines to a channel instead of taking a lock on stderr for every
//! access-log line.

use flexi_logger::{DeferredNow, FlexiLoggerError, Logger, LoggerHandle, WriteMode};
use log::Record;

/// Starts logging to stderr with `spec` (a level or a flexi_logger spec).
/// Keep the handle alive until exit: dropping it flushes the queue.
pub fn start(spec: &str, json: bool) -> Result<LoggerHandle, FlexiLoggerError> {
    Logger::try_with_str(spec)?
        .log_to_stderr()
        .format(if json { json_format } else { text_format })
        .write_mode(WriteMode::Async)
        .start()
}

fn text_format(
    w: &mut dyn std::io::Write,
    now: &mut DeferredNow,
    record: &Record<'_>,
) -> std::io::Result<()> {
    if record.target() == "roxpi::access" {
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
