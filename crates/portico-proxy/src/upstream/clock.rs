//! The process-wide monotonic clock that endpoint state is stamped with (ejections, slow
//! start, latency samples). 0 means "never" in that state, so the clock never reads 0.

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Milliseconds on a process-wide monotonic clock; never 0 (0 means "never" in endpoint state).
pub fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Microseconds on the same clock (for latency averages).
pub fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1
}
