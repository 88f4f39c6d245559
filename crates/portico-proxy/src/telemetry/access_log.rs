//! The access log: one JSON object per request (docs/reference.md §5), written by a dedicated thread.
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
    pub upstream_addr: Option<std::net::SocketAddr>,
    pub attempts: u32,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: f64,
    pub upstream_duration_ms: Option<f64>,
    pub request_id: &'a str,
    pub client: &'a str,
    /// The verified mTLS client certificate, as sent upstream in `x-forwarded-client-cert`
    /// (`Hash=…;Subject="…";URI=…;DNS=…`); `null` without one (plain HTTP, TLS without mTLS).
    pub client_cert: Option<&'a str>,
    /// Why Portico rejected the request, when it did so before routing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

impl Entry<'_> {
    /// Appends the entry as one JSON line (with its newline).
    ///
    /// Written by hand rather than with serde_json: the line is made on the request's worker
    /// for every request, and serde's formatting machinery plus the timestamp's `format!`
    /// cost about as much as the proxying itself (callgrind: +12k instructions per request).
    /// The output is the same JSON object; a unit test checks it against serde_json.
    pub fn render(&self, out: &mut String) {
        out.push_str("{\"ts\":");
        json_str(out, self.ts);
        out.push_str(",\"method\":");
        json_str(out, self.method);
        out.push_str(",\"authority\":");
        json_str(out, self.authority);
        out.push_str(",\"path\":");
        json_str(out, self.path);
        out.push_str(",\"protocol\":");
        json_str(out, self.protocol);
        out.push_str(",\"status\":");
        out.push_str(itoa::Buffer::new().format(self.status));
        out.push_str(",\"flags\":");
        json_str(out, self.flags);
        out.push_str(",\"route\":");
        json_opt(out, self.route);
        out.push_str(",\"upstream\":");
        json_opt(out, self.upstream);
        out.push_str(",\"upstream_addr\":");
        match self.upstream_addr {
            None => out.push_str("null"),
            Some(a) => {
                out.push('"');
                push_addr(out, a);
                out.push('"');
            }
        }
        out.push_str(",\"attempts\":");
        out.push_str(itoa::Buffer::new().format(self.attempts));
        out.push_str(",\"bytes_received\":");
        out.push_str(itoa::Buffer::new().format(self.bytes_received));
        out.push_str(",\"bytes_sent\":");
        out.push_str(itoa::Buffer::new().format(self.bytes_sent));
        out.push_str(",\"duration_ms\":");
        push_millis(out, self.duration_ms);
        out.push_str(",\"upstream_duration_ms\":");
        match self.upstream_duration_ms {
            None => out.push_str("null"),
            Some(ms) => push_millis(out, ms),
        }
        out.push_str(",\"request_id\":");
        json_str(out, self.request_id);
        out.push_str(",\"client\":");
        json_str(out, self.client);
        out.push_str(",\"client_cert\":");
        json_opt(out, self.client_cert);
        if let Some(e) = self.error {
            out.push_str(",\"error\":");
            json_str(out, e);
        }
        out.push_str("}\n");
    }
}

/// A JSON string literal (RFC 8259 escaping).
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn json_opt(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.push_str("null"),
    }
}

/// Milliseconds with microsecond precision (`12.345`), as the log has always given them.
fn push_millis(out: &mut String, ms: f64) {
    let us = if ms.is_finite() && ms > 0.0 {
        (ms * 1000.0).round() as u64
    } else {
        0
    };
    out.push_str(itoa::Buffer::new().format(us / 1000));
    let frac = us % 1000;
    if frac != 0 {
        out.push('.');
        let digits = [
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ];
        let mut n = 3;
        while n > 1 && digits[n - 1] == b'0' {
            n -= 1;
        }
        for d in &digits[..n] {
            out.push(*d as char);
        }
    } else {
        out.push_str(".0");
    }
}

/// `ip:port` (IPv6 in brackets) without the formatting machinery for IPv4.
fn push_addr(out: &mut String, a: std::net::SocketAddr) {
    match a {
        std::net::SocketAddr::V4(v4) => {
            for (i, o) in v4.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(itoa::Buffer::new().format(*o));
            }
        }
        std::net::SocketAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "[{}]", v6.ip());
        }
    }
    out.push(':');
    out.push_str(itoa::Buffer::new().format(a.port()));
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
        let mut line = String::with_capacity(512);
        entry.render(&mut line);
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
    // Digits by hand: `format!` with padding is a measurable share of a log line's cost.
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year.clamp(0, 9999) as u64);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, h);
    put(14, 2, m);
    put(17, 2, s);
    put(20, 3, millis as u64);
    String::from_utf8_lossy(&b).into_owned()
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

    fn sample<'a>(
        path: &'a str,
        client_cert: Option<&'a str>,
        error: Option<&'a str>,
    ) -> Entry<'a> {
        Entry {
            ts: "2026-11-26T22:30:00.123Z",
            method: "GET",
            authority: "api.example.com:8080",
            path,
            protocol: "HTTP/1.1",
            status: 503,
            flags: "UF,URX",
            route: Some("api"),
            upstream: None,
            upstream_addr: Some("10.1.2.3:8080".parse().expect("addr")),
            attempts: 3,
            bytes_received: 12_345_678_901,
            bytes_sent: 0,
            duration_ms: 12.3456,
            upstream_duration_ms: Some(7.0),
            request_id: "0a1b",
            client: "::1",
            client_cert,
            error,
        }
    }

    #[test]
    fn hand_written_json_matches_serde() {
        for (path, client_cert, error) in [
            ("/plain?q=1", None, None),
            (
                "/quote\"back\\slash\u{1}ctl\ttab\nnl/é",
                Some("Hash=0a1b;Subject=\"CN=client \\\"one\\\"\";URI=spiffe://t/c;DNS=c.test"),
                Some("bad \"thing\""),
            ),
        ] {
            let e = sample(path, client_cert, error);
            let mut line = String::new();
            e.render(&mut line);
            assert!(
                line.ends_with("}\n") && line.matches('\n').count() == 1,
                "{line}"
            );
            let mine: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
            let mut theirs = serde_json::to_value(&e).expect("serde");
            // serde renders the address through Display; the log has always had it as a string.
            theirs["upstream_addr"] = serde_json::json!("10.1.2.3:8080");
            theirs["duration_ms"] = serde_json::json!(12.346);
            assert_eq!(mine, theirs, "{line}");
        }
        let mut v6 = String::new();
        push_addr(&mut v6, "[::1]:443".parse().expect("addr"));
        assert_eq!(v6, "[::1]:443");
        let mut ms = String::new();
        push_millis(&mut ms, 0.0004);
        assert_eq!(ms, "0.0");
    }
}
