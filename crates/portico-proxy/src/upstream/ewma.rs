//! Peak-EWMA of an endpoint's response latency: what the `ewma` load-balancing policy
//! compares (fed by `UpstreamState::report`, decaying with a 10 s time constant).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Decay time constant of the latency average.
pub const DECAY_US: f64 = 10_000_000.0;

/// Peak-EWMA of an endpoint's latency, in microseconds (lock-free; racing updates may lose
/// a sample, which an average tolerates).
#[derive(Debug, Default)]
pub struct Ewma {
    /// f64 bits; 0.0 = no sample yet.
    value: AtomicU64,
    /// `clock::now_us()` of the last sample.
    stamp: AtomicU64,
}

impl Ewma {
    /// Records one latency sample at time `now_us`. A sample above the average replaces it
    /// (peak); below, it is blended in with weight `1 - e^(-Δt/τ)`.
    pub fn observe(&self, sample: Duration, now_us: u64) {
        let sample = sample.as_micros() as f64;
        let prev = f64::from_bits(self.value.load(Ordering::Relaxed));
        let stamp = self.stamp.load(Ordering::Relaxed);
        let next = if prev == 0.0 || sample >= prev {
            sample
        } else {
            let dt = now_us.saturating_sub(stamp) as f64;
            let w = (-dt / DECAY_US).exp();
            prev * w + sample * (1.0 - w)
        };
        self.value.store(next.max(1.0).to_bits(), Ordering::Relaxed);
        self.stamp.store(now_us, Ordering::Relaxed);
    }

    /// The average as of `now_us`, decayed toward zero since the last sample (so an endpoint
    /// that stopped being chosen is eventually tried again).
    pub fn get(&self, now_us: u64) -> f64 {
        let v = f64::from_bits(self.value.load(Ordering::Relaxed));
        if v == 0.0 {
            return 0.0;
        }
        let dt = now_us.saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
        v * (-dt / DECAY_US).exp()
    }
}
