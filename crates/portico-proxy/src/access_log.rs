//! The access log: one JSON object per request (CONTRACT §5), written by a dedicated thread.
//!
//! Request handling never blocks on it: lines go through a bounded channel and are dropped
//! (and counted) when it is full.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::SystemTime;

use serde::Serialize;

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    File(PathBuf),
    Off,
}

/// Capacity of the queue between request handling and the writer thread.
const QUEUE: usize = 16 * 1024;
/// How long the writer lets lines gather between batches (the queue holds 16k lines: at
/// this pause, over 3M lines/s before any is dropped).
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

/// Handle for sending lines to the writer thread.
#[derive(Debug)]
pub struct AccessLog {
    tx: Option<SyncSender<Msg>>,
    /// Set by [`AccessLog::reopen`]; the writer reopens before its next write. A flag rather
    /// than a queued message, so a full queue cannot lose a rotation.
    reopen: Arc<AtomicBool>,
    pub dropped: AtomicU64,
    pub written: AtomicU64,
}

enum Msg {
    Line(String),
    /// Wakes an idle writer to look at the reopen flag.
    Wake,
}

/// One access log entry. Borrowed fields avoid copies; serialized once on the request's
/// task (that cost is the log's; turning the log off skips it).
#[derive(Serialize)]
pub struct Entry<'a> {
    pub ts: &'a str,
    pub method: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub protocol: &'a str,
    pub status: u16,
    pub flags: &'a str,
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub upstream_addr: Option<String>,
    pub attempts: u32,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: f64,
    pub upstream_duration_ms: Option<f64>,
    pub request_id: &'a str,
    pub client: &'a str,
    /// Why Portico rejected the request, when it did so before routing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

impl AccessLog {
    pub fn new(target: LogTarget) -> std::io::Result<AccessLog> {
        let out: Box<dyn Write + Send> = match &target {
            LogTarget::Off => {
                return Ok(AccessLog {
                    tx: None,
                    reopen: Arc::default(),
                    dropped: AtomicU64::new(0),
                    written: AtomicU64::new(0),
                });
            }
            LogTarget::Stdout => Box::new(std::io::stdout()),
            LogTarget::File(p) => Box::new(open(p)?),
        };
        let (tx, rx) = sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("portico-access-log".into())
            .spawn(move || writer(rx, out, target, &flag))?;
        Ok(AccessLog {
            tx: Some(tx),
            reopen,
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
        })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn write(&self, entry: &Entry<'_>) {
        let Some(tx) = &self.tx else { return };
        let mut line = match serde_json::to_string(entry) {
            Ok(s) => s,
            Err(_) => return,
        };
        line.push('\n');
        match tx.try_send(Msg::Line(line)) {
            Ok(()) => {
                self.written.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Reopens the log file (after rotation; SIGUSR1).
    pub fn reopen(&self) {
        if let Some(tx) = &self.tx {
            self.reopen.store(true, Ordering::Release);
            // When the queue is full the writer is busy and sees the flag before its next line.
            let _ = tx.try_send(Msg::Wake);
        }
    }
}

fn open(p: &PathBuf) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
}

fn writer(rx: Receiver<Msg>, out: Box<dyn Write + Send>, target: LogTarget, reopen: &AtomicBool) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(msg) = rx.recv() {
        let mut next = Some(msg);
        // Write everything queued, then flush once.
        while let Some(msg) = next {
            if reopen.swap(false, Ordering::AcqRel) {
                let _ = out.flush();
                if let LogTarget::File(p) = &target {
                    match open(p) {
                        Ok(f) => out = std::io::BufWriter::with_capacity(64 * 1024, Box::new(f)),
                        Err(e) => {
                            tracing::error!(error = %e, path = %p.display(), "cannot reopen access log")
                        }
                    }
                }
            }
            if let Msg::Line(l) = msg {
                let _ = out.write_all(l.as_bytes());
            }
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
        // Let lines gather before the next blocking receive: while the writer sleeps,
        // request handling queues lines without waking it (no futex call per request).
        std::thread::sleep(BATCH_PAUSE);
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-26T18:00:00.123Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let millis = d.subsec_millis();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(
            rfc3339_millis(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339_millis(t), "2026-11-18T11:06:40.123Z");
    }
}
