//! The overload manager: process-wide thresholds on resident memory and open downstream
//! connections, and the load it sheds when they are crossed, instead of dying.
//!
//! It owns one state byte ([`Overload::state`]) that the hot path reads with a single relaxed
//! atomic load, the count of open downstream connections (all listeners), and the counters of
//! each action taken. Actions (docs/operations.md "Overload manager"):
//! - **connections** at or over `--overload-max-connections`: every listener stops accepting
//!   (new connections wait in the kernel's backlog) until the count drops below it;
//! - **memory** (RSS) at or over `--overload-max-memory-mb`: new requests get 503 with
//!   `x-portico-overloaded: true` (flag OM) and `connection: close`, and every open connection
//!   is told to finish (HTTP/1: idle keep-alives close, in-flight responses carry
//!   `connection: close`; HTTP/2: GOAWAY). Memory pressure ends when RSS falls below 90% of the
//!   threshold (hysteresis, so the state does not flap).
//!
//! RSS is sampled off the hot path by one monitor thread every 250 ms (`VmRSS` of
//! `/proc/self/status`); the connection count is exact and checked at every accept and close.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// State bit: resident memory is over its threshold.
pub const MEMORY: u8 = 1;
/// State bit: open downstream connections are at their threshold.
pub const CONNECTIONS: u8 = 2;

/// How often the monitor thread samples memory.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// Thresholds; `None` turns a resource's check off (the default for both).
#[derive(Debug, Clone, Default)]
pub struct OverloadConf {
    /// Open downstream connections, all listeners together.
    pub max_connections: Option<u64>,
    /// Resident set size in bytes.
    pub max_memory_bytes: Option<u64>,
    /// Where RSS is read (`VmRSS:` line, in kB); default `/proc/self/status`.
    pub rss_source: Option<PathBuf>,
}

/// Counters of the actions taken (`portico_overload_actions_total{action}`).
#[derive(Debug, Default)]
pub struct Actions {
    /// Times the listeners stopped accepting (connection threshold reached).
    pub stop_accepting: AtomicU64,
    /// Connections closed right after accept because the threshold was already reached
    /// (two workers accepting at once).
    pub reject_connection: AtomicU64,
    /// Requests answered 503 under memory pressure.
    pub reject_request: AtomicU64,
    /// Connections told to close (keep-alive off / GOAWAY) when memory pressure began.
    pub disable_keepalive: AtomicU64,
}

/// The overload manager's shared state.
#[derive(Debug)]
pub struct Overload {
    conf: OverloadConf,
    state: AtomicU8,
    /// Memory pressure on/off, for connections (which close when it begins).
    memory_changes: watch::Sender<bool>,
    /// Connection threshold reached or not, for the accept loops. Separate from
    /// `memory_changes` so that connections are not woken when the connection bit flips.
    connection_changes: watch::Sender<bool>,
    connections: AtomicU64,
    rss: AtomicU64,
    pub actions: Actions,
}

impl Overload {
    pub fn new(conf: OverloadConf) -> Overload {
        Overload {
            conf,
            state: AtomicU8::new(0),
            memory_changes: watch::Sender::new(false),
            connection_changes: watch::Sender::new(false),
            connections: AtomicU64::new(0),
            rss: AtomicU64::new(0),
            actions: Actions::default(),
        }
    }

    pub fn conf(&self) -> &OverloadConf {
        &self.conf
    }

    /// The state bits ([`MEMORY`], [`CONNECTIONS`]): one relaxed load.
    #[inline]
    pub fn state(&self) -> u8 {
        self.state.load(Ordering::Relaxed)
    }

    /// Is memory over its threshold (new requests are shed)?
    #[inline]
    pub fn memory_pressure(&self) -> bool {
        self.state() & MEMORY != 0
    }

    /// Follows memory pressure (for connections; never per request).
    pub fn subscribe_memory(&self) -> watch::Receiver<bool> {
        self.memory_changes.subscribe()
    }

    /// Follows the connection threshold (for the accept loops).
    pub fn subscribe_connections(&self) -> watch::Receiver<bool> {
        self.connection_changes.subscribe()
    }

    /// Open downstream connections, all listeners.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// The last RSS sample in bytes (0 before the first one, or when memory is not watched).
    pub fn rss(&self) -> u64 {
        self.rss.load(Ordering::Relaxed)
    }

    /// Counts a new downstream connection. `None` when the connection threshold was already
    /// reached (the caller closes the connection); the token gives the slot back on drop.
    pub fn open_connection(self: &Arc<Self>) -> Option<ConnToken> {
        let n = self.connections.fetch_add(1, Ordering::SeqCst) + 1;
        let token = ConnToken(self.clone());
        if let Some(max) = self.conf.max_connections {
            if n > max {
                self.actions
                    .reject_connection
                    .fetch_add(1, Ordering::Relaxed);
                return None; // the token's drop gives the count back
            }
            if n >= max {
                self.sync_connections();
            }
        }
        Some(token)
    }

    /// Sets the [`CONNECTIONS`] bit from the current count. Loops until the bit agrees with
    /// a count read after it was written, so racing opens and closes cannot leave it stale.
    pub fn sync_connections(&self) {
        let Some(max) = self.conf.max_connections else {
            return;
        };
        loop {
            let over = self.connections.load(Ordering::SeqCst) >= max;
            self.set(CONNECTIONS, over);
            if (self.connections.load(Ordering::SeqCst) >= max) == over {
                break;
            }
        }
    }

    /// Feeds one RSS sample (bytes): pressure starts at the threshold and ends below 90% of it.
    pub fn sample_memory(&self, rss: u64) {
        self.rss.store(rss, Ordering::Relaxed);
        let Some(max) = self.conf.max_memory_bytes else {
            return;
        };
        if rss >= max {
            self.set(MEMORY, true);
        } else if rss < max / 10 * 9 {
            self.set(MEMORY, false);
        }
    }

    /// Sets or clears one state bit; on a change, counts the action, logs and notifies.
    fn set(&self, bit: u8, on: bool) {
        let prev = if on {
            self.state.fetch_or(bit, Ordering::SeqCst)
        } else {
            self.state.fetch_and(!bit, Ordering::SeqCst)
        };
        if (prev & bit != 0) == on {
            return;
        }
        match (bit, on) {
            (CONNECTIONS, true) => {
                self.actions.stop_accepting.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    connections = self.connections(),
                    "overload: connection threshold reached; listeners stop accepting"
                );
            }
            (CONNECTIONS, false) => {
                tracing::info!(
                    connections = self.connections(),
                    "overload: connections below threshold; accepting again"
                );
            }
            (_, true) => tracing::warn!(
                rss_bytes = self.rss(),
                "overload: memory threshold reached; shedding new requests and closing keep-alives"
            ),
            (_, false) => tracing::info!(
                rss_bytes = self.rss(),
                "overload: memory below 90% of threshold; serving again"
            ),
        }
        if bit == CONNECTIONS {
            self.connection_changes.send_replace(on);
        } else {
            self.memory_changes.send_replace(on);
        }
    }

    /// Starts the monitor thread when a threshold is configured (memory sampling, and a
    /// periodic re-check of the connection bit).
    pub fn spawn_monitor(self: &Arc<Self>) -> std::io::Result<()> {
        if self.conf.max_memory_bytes.is_none() && self.conf.max_connections.is_none() {
            return Ok(());
        }
        let me = self.clone();
        std::thread::Builder::new()
            .name("portico-overload".into())
            .spawn(move || me.monitor())?;
        Ok(())
    }

    fn monitor(&self) {
        let source = self
            .conf
            .rss_source
            .clone()
            .unwrap_or_else(|| PathBuf::from("/proc/self/status"));
        let mut warned = false;
        loop {
            if self.conf.max_memory_bytes.is_some() {
                match std::fs::read_to_string(&source)
                    .ok()
                    .as_deref()
                    .and_then(parse_vm_rss)
                {
                    Some(rss) => {
                        warned = false;
                        self.sample_memory(rss);
                    }
                    None if !warned => {
                        warned = true;
                        tracing::warn!(source = %source.display(), "overload: cannot read VmRSS; memory state unchanged");
                    }
                    None => {}
                }
            }
            self.sync_connections();
            std::thread::sleep(SAMPLE_INTERVAL);
        }
    }
}

/// One open downstream connection, counted until dropped.
#[derive(Debug)]
pub struct ConnToken(Arc<Overload>);

impl Drop for ConnToken {
    fn drop(&mut self) {
        let o = &self.0;
        let n = o.connections.fetch_sub(1, Ordering::SeqCst) - 1;
        if o.conf.max_connections.is_some_and(|max| n < max) && o.state() & CONNECTIONS != 0 {
            o.sync_connections();
        }
    }
}

/// The `VmRSS:` value of a `/proc/PID/status` text, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    let scale = match parts.next() {
        Some("kB") | None => 1024,
        Some("mB") | Some("MB") => 1024 * 1024,
        Some(_) => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(max_connections: Option<u64>, max_memory_bytes: Option<u64>) -> Arc<Overload> {
        Arc::new(Overload::new(OverloadConf {
            max_connections,
            max_memory_bytes,
            rss_source: None,
        }))
    }

    #[test]
    fn parses_vm_rss() {
        let s = "Name:\tportico\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(s), Some(5120 * 1024));
        assert_eq!(parse_vm_rss("VmRSS: x kB"), None);
        assert_eq!(parse_vm_rss("Name: a"), None);
    }

    #[test]
    fn memory_pressure_has_hysteresis() {
        let o = with(None, Some(1000));
        let mut rx = o.subscribe_memory();
        o.sample_memory(999);
        assert!(!o.memory_pressure());
        o.sample_memory(1000);
        assert!(o.memory_pressure());
        assert!(rx.has_changed().unwrap_or(false));
        assert!(*rx.borrow_and_update());
        // Between 90% and 100%: still under pressure.
        o.sample_memory(950);
        assert!(o.memory_pressure());
        o.sample_memory(899);
        assert!(!o.memory_pressure());
        assert!(!*rx.borrow_and_update());
    }

    #[test]
    fn no_thresholds_never_shed() {
        let o = with(None, None);
        o.sample_memory(u64::MAX);
        let tokens: Vec<_> = (0..1000).filter_map(|_| o.open_connection()).collect();
        assert_eq!(tokens.len(), 1000);
        assert_eq!(o.state(), 0);
        drop(tokens);
        assert_eq!(o.connections(), 0);
    }

    #[test]
    fn connection_threshold_stops_and_resumes_accepting() {
        let o = with(Some(2), None);
        let a = o.open_connection();
        assert!(a.is_some());
        assert_eq!(o.state(), 0);
        let b = o.open_connection();
        assert!(b.is_some());
        assert_eq!(o.state(), CONNECTIONS);
        assert_eq!(o.actions.stop_accepting.load(Ordering::Relaxed), 1);
        // A connection accepted anyway (a race between workers) is refused and not counted.
        assert!(o.open_connection().is_none());
        assert_eq!(o.connections(), 2);
        assert_eq!(o.actions.reject_connection.load(Ordering::Relaxed), 1);
        drop(a);
        assert_eq!(o.state(), 0);
        assert_eq!(o.connections(), 1);
        drop(b);
        assert_eq!(o.connections(), 0);
    }

    #[test]
    fn racing_opens_and_closes_leave_a_consistent_state() {
        let o = with(Some(4), None);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let o = o.clone();
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        let t = o.open_connection();
                        drop(t);
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        assert_eq!(o.connections(), 0);
        assert_eq!(o.state(), 0);
    }
}
